/**
 * Issue 14's counts over seeds, from traces: the promise of --target over 5 draws of the calibration / evaluation
 * halves, the feature and threshold ablation at that target, and the paper's criterion (pruning at a next-token
 * accuracy drop <= --max-drop points against full depth). Per model: fit on --train, calibrate on one half of
 * --valid's stories (document part 0/2, seed s), evaluate on the other half (part 1/2, seed s), s = 1..--seeds.
 *
 * The decisions are replayed on traces recorded at full depth (every feature read after every layer): the exit
 * layer, the answer there and so agreement, accuracy and pruning are exactly those of a live run (the features are
 * the same computations; test/standalone/exit_features.test.ts checks a live run against its trace), and they do
 * not depend on machine load. Wall-clock speedups come from bench/exit_table.ts.
 *
 * The accuracy criterion: the threshold is the cheapest of LAYER_THRESHOLD_CANDIDATES-quantile candidates whose
 * accuracy drop on the calibration half is <= --max-drop (a point estimate, as the paper's criterion), then measured
 * on the evaluation half.
 *
 *   node dist/bench/exit_ablation.js [--models a,b] [--limit N] [--seeds N] [--markdown]
 */
import { Command } from 'commander';
import * as path from 'path';
import { calibrateLayerThresholds, calibrateThreshold, CalibrationExample } from '../lib/exit/calibrate';
import { DEFAULT_CONFIDENCE } from '../lib/exit/bounds';
import { FeatureName } from '../lib/exit/classifier';
import { collectTraces, Trace } from '../lib/exit/collect';
import { loadExamples } from '../lib/exit/data';
import { FeatureExtractor, LensOptions } from '../lib/exit/lens';
import { classifierPolicy, thresholdPolicy } from '../lib/exit/policy';
import { classifierMicrosPerCheck } from '../lib/exit/evaluate';
import { ClassifierKind, scoreTrace, trainPolicy, TrainedPolicy } from '../lib/exit/train';
import { TransformerModel } from '../lib/model/transformer';
import { trainGbt } from './gbt';
import { describeMachine, exitEvidenceModels, formatMachine, repoRoot } from './machine';
import { cachedTraces, exitOutcome, quantileThresholdForDrop, ScoredTrace, TRACE_FEATURES } from './exit_replay';

interface Config {
  name: string;
  /** gbt: gradient-boosted trees (bench/gbt.ts), fitted here and calibrated as trainPolicy calibrates. */
  classifier: ClassifierKind | 'gbt';
  features: FeatureName[];
  lens: LensOptions;
  thresholds: 'single' | 'per-layer';
}

const BASE: FeatureName[] = ['p1', 'gap', 'entropy', 'layer'];
const FEATURE_SETS: [string, FeatureName[]][] = [
  ['p1,gap', ['p1', 'gap']],
  ['p1,gap,entropy,layer (default)', BASE],
  ['+streak,dp1', [...BASE, 'streak', 'dp1']],
  ['+jsd', [...BASE, 'jsd']],
  ['+hidden_cos,hidden_norm', [...BASE, 'hidden_cos', 'hidden_norm']],
  ['+attn_entropy,attn_self', [...BASE, 'attn_entropy', 'attn_self']],
  ['all', [...BASE, 'streak', 'dp1', 'jsd', 'hidden_cos', 'hidden_norm', 'attn_entropy', 'attn_self']],
];

function configs(): Config[] {
  const faithful: LensOptions = { mode: 'faithful' };
  const out: Config[] = [{ name: 'gap', classifier: 'threshold', features: ['gap'], lens: faithful, thresholds: 'single' }];
  for (const [name, features] of FEATURE_SETS) out.push({ name, classifier: 'svm', features, lens: faithful, thresholds: 'single' });
  out.push({ name: 'gap', classifier: 'threshold', features: ['gap'], lens: faithful, thresholds: 'per-layer' });
  for (const [name, features] of [FEATURE_SETS[1], FEATURE_SETS[6]]) out.push({ name, classifier: 'svm', features, lens: faithful, thresholds: 'per-layer' });
  out.push({ name: 'all', classifier: 'crf', features: FEATURE_SETS[6][1], lens: faithful, thresholds: 'single' });
  for (const [name, features] of [FEATURE_SETS[1], FEATURE_SETS[6]]) out.push({ name, classifier: 'gbt', features, lens: faithful, thresholds: 'single' });
  out.push({ name: 'all', classifier: 'gbt', features: FEATURE_SETS[6][1], lens: faithful, thresholds: 'per-layer' });
  const fast: LensOptions = { mode: 'fast', topK: 16 };
  for (const [name, features] of [FEATURE_SETS[1], FEATURE_SETS[6]]) out.push({ name, classifier: 'svm', features, lens: fast, thresholds: 'single' });
  return out;
}

/** trainPolicy's calibration with a classifier fitted here (gbt): same examples, same constraint. */
function trainGbtPolicy(fit: Trace[], calibration: Trace[], c: Config, target: number): TrainedPolicy {
  const X: number[][] = [];
  const y: (0 | 1)[] = [];
  const extractor = new FeatureExtractor(c.features);
  for (const t of fit) {
    extractor.begin();
    for (const k of t.checks) {
      X.push(Array.from(extractor.next(k, k.layer, t.nLayer)));
      y.push(k.top1 === t.final ? 1 : 0);
    }
  }
  const classifier = trainGbt(X, y, c.features);
  const examples: CalibrationExample[] = calibration
    .filter((t) => t.checks.length > 0)
    .map((t) => {
      const scores = scoreTrace(t, (x) => classifier.score(x), () => undefined, c.features);
      return { nLayer: t.nLayer, checks: t.checks.map((k, i) => ({ layer: k.layer, score: scores[i], agrees: k.top1 === t.final })) };
    });
  const single = calibrateThreshold(examples, target, DEFAULT_CONFIDENCE);
  const joint = c.thresholds === 'per-layer' ? calibrateLayerThresholds(examples, target, DEFAULT_CONFIDENCE) : undefined;
  return {
    kind: 'svm',
    threshold: single.threshold,
    layerThresholds: joint?.thresholds,
    classifier,
    features: c.features,
    schedule: { minLayer: 1, checkEvery: 1 },
    lens: c.lens,
    metrics: undefined as unknown as TrainedPolicy['metrics'],
  };
}

/** Scores of every check of every trace under a trained policy. */
function scored(t: TrainedPolicy, traces: Trace[]): ScoredTrace[] {
  const c = t.classifier;
  const features = c ? c.features : [t.feature ?? 'gap'];
  return traces.map((tr) => {
    const scores = scoreTrace(tr, (x) => (c ? c.score(x) : x[0]), () => c?.begin(), features as FeatureName[]);
    return { nLayer: tr.nLayer, final: tr.final, gold: tr.gold, checks: tr.checks.map((k, i) => ({ layer: k.layer, score: scores[i], top1: k.top1 })) };
  });
}

async function main(): Promise<void> {
  const shared = path.resolve(repoRoot(), '..', 'shared');
  const program = new Command('exit_ablation')
    .option('--train <file>', 'fit text', path.join(shared, 'datasets', 'tinystories', 'train.txt'))
    .option('--valid <file>', 'calibration and evaluation text (halves by story)', path.join(shared, 'datasets', 'tinystories', 'valid.txt'))
    .option('--models <list>', 'GGUF files, comma-separated', exitEvidenceModels().slice(0, 2).join(','))
    .option('--limit <n>', 'examples drawn from each of fit, calibration, evaluation', '2000')
    .option('--window <w>', 'prompt tokens per example', '64')
    .option('--target <a>', 'train-exit --target', '0.99')
    .option('--max-drop <points>', 'the accuracy criterion: largest next-token accuracy drop, in points', '1')
    .option('--seeds <n>', 'draws of the calibration / evaluation halves', '5')
    .option('--configs <regexp>', 'only the configurations whose label matches')
    .option('--cache <dir>', 'keep the traces here (JSON), and reuse them')
    .option('--markdown', 'print the table as Markdown on stdout')
    .parse(process.argv);
  const o = program.opts();
  const limit = Number(o.limit);
  const window = Number(o.window);
  const target = Number(o.target);
  const seeds = Number(o.seeds);
  const maxDrop = Number(o.maxDrop) / 100;
  const log = (s: string) => process.stderr.write(s + '\n');
  const machine = formatMachine(describeMachine());
  for (const line of machine) log(line);
  log(`settings: fit ${o.train}, calibrate/evaluate halves of ${o.valid}, ${limit} examples each, window ${window}, target ${target}, seeds ${seeds}`);
  const lines = [
    `| model | lens | classifier | thresholds | features | agreement min (mean) over seeds | pruning mean (min) | accuracy drop (points) | pruning at drop ≤ ${o.maxDrop} pt, threshold from the calibration half (held-out drop) | pruning at drop ≤ ${o.maxDrop} pt on the evaluation half's own curve | classifier µs/check |`,
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  const pct = (x: number) => (x * 100).toFixed(2) + '%';
  const schedule = { minLayer: 1, checkEvery: 1 };
  for (const file of (o.models as string).split(',')) {
    const model = TransformerModel.load(file);
    const name = model.config.name;
    const ctx = model.createContext({ contextSize: window, batchSize: window, threads: 1, lensK: 16 });
    const features = ctx.native.computesExitStatistics ? TRACE_FEATURES : TRACE_FEATURES.filter((f) => !f.startsWith('hidden') && !f.startsWith('attn'));
    const traces = new Map<string, Trace[]>();
    const tracesOf = (key: string, lens: LensOptions, load: () => ReturnType<typeof loadExamples>) => {
      const k = `${key}/${JSON.stringify(lens)}`;
      if (!traces.has(k))
        traces.set(k, cachedTraces(o.cache, `${name}-${limit}-${window}-${k}`, () => collectTraces(ctx, load(), schedule, lens, undefined, undefined, features)));
      return traces.get(k)!;
    };
    const fitOf = (lens: LensOptions) => tracesOf('fit', lens, () => loadExamples(o.train, model.tokenizer, { window, limit, seed: 1 }));
    const halfOf = (lens: LensOptions, part: 0 | 1, s: number) =>
      tracesOf(`${part}/${s}`, lens, () => loadExamples(o.valid, model.tokenizer, { window, limit, seed: 2 + part, documents: { part, parts: 2, seed: s } }));
    for (const c of configs()) {
      const label = `${c.lens.mode} ${c.classifier} ${c.thresholds} ${c.name}`;
      if (o.configs && !new RegExp(o.configs as string).test(label)) continue;
      const rows: { agreement: number; pruning: number; drop: number; accPruning: number; accDrop: number; curvePruning: number; micros: number }[] = [];
      for (let s = 1; s <= seeds; s++) {
        const t0 = performance.now();
        const calibration = halfOf(c.lens, 0, s);
        const evaluation = halfOf(c.lens, 1, s);
        const t = c.classifier === 'gbt' ? trainGbtPolicy(fitOf(c.lens), calibration, c, target) : trainPolicy(fitOf(c.lens), schedule, c.lens, {
          classifier: c.classifier,
          label: 'final',
          target,
          seed: s,
          features: c.classifier === 'threshold' ? undefined : c.features,
          feature: c.classifier === 'threshold' ? 'gap' : undefined,
          calibrationTraces: calibration,
          thresholds: c.thresholds,
        });
        const threshold = t.layerThresholds ?? t.threshold;
        const at = (layer: number) => (typeof threshold === 'number' ? threshold : threshold[layer]);
        const evalScored = scored(t, evaluation);
        const held = exitOutcome(evalScored, at);
        const forDrop = quantileThresholdForDrop(scored(t, calibration), maxDrop);
        const acc = exitOutcome(evalScored, () => forDrop);
        // The paper's way of reading its curves: the evaluation half's own threshold curve at drop <= maxDrop.
        const curveThreshold = quantileThresholdForDrop(evalScored, maxDrop);
        const curve = exitOutcome(evalScored, () => curveThreshold);
        const policy = t.classifier ? classifierPolicy(t.classifier, threshold, schedule, c.lens) : thresholdPolicy('gap', threshold, schedule, c.lens);
        const micros = classifierMicrosPerCheck(policy, evaluation.slice(0, 300));
        rows.push({ agreement: held.agreement, pruning: held.pruning, drop: held.drop, accPruning: acc.pruning, accDrop: acc.drop, curvePruning: curve.pruning, micros });
        log(`${name} ${label} seed ${s}: agreement ${pct(held.agreement)} pruning ${pct(held.pruning)} drop ${(held.drop * 100).toFixed(2)} | at drop<=${o.maxDrop}: pruning ${pct(acc.pruning)} drop ${(acc.drop * 100).toFixed(2)} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
      }
      const mean = (f: (r: (typeof rows)[number]) => number) => rows.reduce((a, r) => a + f(r), 0) / rows.length;
      const min = (f: (r: (typeof rows)[number]) => number) => Math.min(...rows.map(f));
      const row =
        `| ${name} | ${c.lens.mode} | ${c.classifier} | ${c.thresholds} | ${c.name} | ${pct(min((r) => r.agreement))} (${pct(mean((r) => r.agreement))}) | ` +
        `${pct(mean((r) => r.pruning))} (${pct(min((r) => r.pruning))}) | ${(mean((r) => r.drop) * 100).toFixed(2)} | ` +
        `${pct(mean((r) => r.accPruning))} (${(mean((r) => r.accDrop) * 100).toFixed(2)}) | ${pct(mean((r) => r.curvePruning))} | ${mean((r) => r.micros).toFixed(2)} |`;
      lines.push(row);
      log(row);
    }
    ctx.dispose();
    model.dispose();
  }
  if (o.markdown) process.stdout.write([...machine.map((l) => `<!-- ${l} -->`), ...lines].join('\n') + '\n');
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exitCode = 1;
});
