/**
 * Issue 14's evidence table: features × classifier × lens mode, with the paper's preset beside them. Per model:
 * fit on --train, calibrate on one half of --valid's stories, evaluate on the other half (stories never seen by
 * fit or calibration). Every row reports agreement, its 95% lower bound, gold accuracy and its drop against full
 * depth, pruning, the oracles (oracleFraction = pruning / oracleStay), measured and ideal speedup, and the
 * classifier's own cost per check. With --seeds N the halves of --valid are drawn N times (document-part seeds
 * 1..N) and the table gives the minimum held-out agreement over them (the promise of --target) beside the mean.
 *
 *   node dist/bench/exit_table.js [--models a,b] [--limit N] [--seeds N] [--threads T] [--markdown]
 */
import { Command } from 'commander';
import * as path from 'path';
import { FeatureName } from '../lib/exit/classifier';
import { collectTraces } from '../lib/exit/collect';
import { loadExamples } from '../lib/exit/data';
import { evaluatePolicy, EvalReport } from '../lib/exit/evaluate';
import { LensOptions } from '../lib/exit/lens';
import { classifierPolicy, ExitPolicy, thresholdPolicy } from '../lib/exit/policy';
import { ClassifierKind, PAPER_PRESET, trainPolicy } from '../lib/exit/train';
import { TRACE_FEATURES } from './exit_replay';
import { TransformerModel } from '../lib/model/transformer';
import { describeMachine, formatMachine, exitEvidenceModels, repoRoot } from './machine';

interface Config {
  name: string;
  classifier: ClassifierKind;
  features: FeatureName[];
  lens: LensOptions;
  decision: 'calibrated' | 'sign';
  thresholds?: 'single' | 'per-layer';
}

const FEATURE_SETS: Record<string, FeatureName[]> = {
  'p1,gap': ['p1', 'gap'],
  'p1,gap,entropy,layer': ['p1', 'gap', 'entropy', 'layer'],
  '+streak,dp1': ['p1', 'gap', 'entropy', 'layer', 'streak', 'dp1'],
  '+jsd': ['p1', 'gap', 'entropy', 'layer', 'jsd'],
  '+hidden_cos,hidden_norm': ['p1', 'gap', 'entropy', 'layer', 'hidden_cos', 'hidden_norm'],
  '+attn_entropy,attn_self': ['p1', 'gap', 'entropy', 'layer', 'attn_entropy', 'attn_self'],
};

function configs(): Config[] {
  const out: Config[] = [
    { name: 'paper preset', classifier: PAPER_PRESET.classifier, features: PAPER_PRESET.features, lens: PAPER_PRESET.lens, decision: 'sign' },
  ];
  const faithful: LensOptions = { mode: 'faithful' };
  out.push({ name: 'gap', classifier: 'threshold', features: ['gap'], lens: faithful, decision: 'calibrated' });
  // The feature ablation on the linear SVM, in both lens modes; the CRF on every feature.
  for (const lens of [faithful, { mode: 'fast', topK: 16 }] as LensOptions[])
    for (const [fname, features] of Object.entries(FEATURE_SETS)) out.push({ name: fname, classifier: 'svm', features, lens, decision: 'calibrated' });
  out.push({ name: '+streak,dp1', classifier: 'crf', features: FEATURE_SETS['+streak,dp1'], lens: faithful, decision: 'calibrated' });
  out.push({ name: 'p1,gap,entropy,layer', classifier: 'svm', features: FEATURE_SETS['p1,gap,entropy,layer'], lens: faithful, decision: 'calibrated', thresholds: 'per-layer' });
  return out;
}

async function main(): Promise<void> {
  const shared = path.resolve(repoRoot(), '..', 'shared');
  const program = new Command('exit_table')
    .option('--train <file>', 'fit text', path.join(shared, 'datasets', 'tinystories', 'train.txt'))
    .option('--valid <file>', 'calibration and evaluation text (halves by story)', path.join(shared, 'datasets', 'tinystories', 'valid.txt'))
    .option('--models <list>', 'GGUF files, comma-separated', exitEvidenceModels().join(','))
    .option('--limit <n>', 'examples drawn from each of fit, calibration, evaluation', '2000')
    .option('--window <w>', 'prompt tokens per example', '64')
    .option('--target <a>', 'train-exit --target', '0.99')
    .option('--seeds <n>', 'draws of the calibration / evaluation halves', '1')
    .option('--threads <t>', 'threads', '1')
    .option('--configs <regexp>', 'only the configurations whose "lens classifier features" label matches')
    .option('--markdown', 'print the table as Markdown on stdout')
    .parse(process.argv);
  const o = program.opts();
  const limit = Number(o.limit);
  const window = Number(o.window);
  const threads = Number(o.threads);
  const target = Number(o.target);
  const seeds = Number(o.seeds);
  const log = (s: string) => process.stderr.write(s + '\n');
  const machine = formatMachine(describeMachine());
  for (const line of machine) log(line);
  log(`settings: fit ${o.train}, calibrate/evaluate halves of ${o.valid}, ${limit} examples each, window ${window}, target ${target}, seeds ${seeds}, threads ${threads}`);

  const lines: string[] = [
    '| model | lens | classifier | features | agreement (min over seeds) | agreementLower | accuracy drop (points) | pruning | oracleStay | oracleFraction | speedup (ideal) | classifier µs/check |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  const pct = (x: number) => (x * 100).toFixed(2) + '%';
  for (const file of (o.models as string).split(',')) {
    const model = TransformerModel.load(file);
    const name = model.config.name;
    const ctx = model.createContext({ contextSize: window, batchSize: window, threads, lensK: 16 });
    const fitEx = loadExamples(o.train, model.tokenizer, { window, limit, seed: 1 });
    const schedule = { minLayer: 1, checkEvery: 1 };
    // Traces hold every feature this backend computes; each configuration reads its own.
    const features = ctx.native.computesExitStatistics ? TRACE_FEATURES : TRACE_FEATURES.filter((f) => !f.startsWith('hidden') && !f.startsWith('attn'));
    const fitTraces = new Map<string, ReturnType<typeof collectTraces>>();
    const tracesFor = (lens: LensOptions) => {
      const key = JSON.stringify(lens);
      if (!fitTraces.has(key)) fitTraces.set(key, collectTraces(ctx, fitEx, schedule, lens, undefined, undefined, features));
      return fitTraces.get(key)!;
    };
    evaluatePolicy(ctx, fitEx.slice(0, 50), thresholdPolicy('gap', 2)); // warm-up, untimed
    const halves = Array.from({ length: seeds }, (_, k) => ({
      calibration: loadExamples(o.valid, model.tokenizer, { window, limit, seed: 2, documents: { part: 0, parts: 2, seed: k + 1 } }),
      evaluation: loadExamples(o.valid, model.tokenizer, { window, limit, seed: 3, documents: { part: 1, parts: 2, seed: k + 1 } }),
    }));
    const calibrationTraces = new Map<string, ReturnType<typeof collectTraces>>();
    const calibrationFor = (lens: LensOptions, k: number) => {
      const key = `${JSON.stringify(lens)}/${k}`;
      if (!calibrationTraces.has(key)) calibrationTraces.set(key, collectTraces(ctx, halves[k].calibration, schedule, lens, undefined, undefined, features));
      return calibrationTraces.get(key)!;
    };
    for (const c of configs()) {
      if (o.configs && !new RegExp(o.configs as string).test(`${c.lens.mode} ${c.decision === 'sign' ? 'paper' : c.classifier}${c.thresholds === 'per-layer' ? ' per-layer' : ''} ${c.name}`)) continue;
      const reports: EvalReport[] = [];
      for (let s = 1; s <= seeds; s++) {
        const evalEx = halves[s - 1].evaluation;
        const t = trainPolicy(tracesFor(c.lens), schedule, c.lens, {
          classifier: c.classifier,
          label: 'final',
          target,
          seed: s,
          features: c.classifier === 'threshold' ? undefined : c.features,
          feature: c.classifier === 'threshold' ? 'gap' : undefined,
          decision: c.decision,
          calibrationTraces: calibrationFor(c.lens, s - 1),
          thresholds: c.thresholds,
        });
        const threshold = t.layerThresholds ?? t.threshold;
        const policy: ExitPolicy = t.classifier
          ? classifierPolicy(t.classifier, threshold, schedule, c.lens)
          : thresholdPolicy(t.feature ?? 'gap', threshold, schedule, c.lens);
        reports.push(evaluatePolicy(ctx, evalEx, policy));
      }
      const mean = (f: (r: EvalReport) => number) => reports.reduce((a, r) => a + f(r), 0) / reports.length;
      const minAgreement = Math.min(...reports.map((r) => r.agreement));
      const row =
        `| ${name} | ${c.lens.mode} | ${c.decision === 'sign' ? 'svm (own sign)' : c.classifier}${c.thresholds === 'per-layer' ? ' (per-layer thresholds)' : ''} | ${c.name} | ` +
        `${pct(mean((r) => r.agreement))} (${pct(minAgreement)}) | ${pct(mean((r) => r.agreementLower))} | ` +
        `${(mean((r) => r.accuracyDrop ?? 0) * 100).toFixed(2)} | ${pct(mean((r) => r.pruningRatio))} | ${pct(mean((r) => r.oracleStay))} | ` +
        `${pct(mean((r) => r.oracleFraction))} | ${mean((r) => r.speedup).toFixed(3)}× (${mean((r) => r.idealSpeedup).toFixed(3)}×) | ` +
        `${mean((r) => r.classifierMicrosPerCheck).toFixed(2)} |`;
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
