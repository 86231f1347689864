/**
 * Issue 14's calibration levers, measured on every position of valid.txt: fit on --fit-limit positions of
 * train.txt, calibrate on ALL positions of one half of valid.txt's stories (document part 0/2, seed s), evaluate on
 * ALL positions of the other half (part 1/2), s = 1..--seeds. Per rule: held-out agreement (minimum over seeds),
 * pruning, next-token accuracy drop. The rules differ in
 *   - the bound: 'positions' (Clopper–Pearson over positions, as if independent) or 'documents' (Korn–Graubard's
 *     effective sample size over the stories: bounds.ts clusteredLowerBound);
 *   - the threshold's shape: one threshold; per-layer thresholds chosen jointly on the calibration half (9 free
 *     values); or a per-layer shape chosen on the FIT data with only its level calibrated (1 value);
 *   - the decision: stop at the first check whose score reaches the threshold, or (confirm 2) at the first check
 *     where it reached it at this check and the one before;
 *   - the accuracy criterion: the cheapest threshold whose drop on the calibration half is <= --max-drop (point
 *     estimate), or whose documents' upper bound on the drop is.
 * Decisions are replayed on traces recorded at full depth (bench/exit_ablation.ts explains why they are exact).
 *
 *   node dist/bench/exit_calibration.js [--models a,b] [--fit-limit N] [--seeds N] [--cache DIR] [--markdown]
 */
import { calibrateLayerThresholds, calibrateThreshold, confirmedScores, documentsLowerBound, shapedScores } from '../lib/exit/calibrate';
import { DEFAULT_CONFIDENCE } from '../lib/exit/bounds';

import { collectTraces, Trace } from '../lib/exit/collect';
import { documentPart, loadExamples } from '../lib/exit/data';
import { DEFAULT_FEATURES, scoreTrace, trainPolicy } from '../lib/exit/train';
import { FeatureExtractor } from '../lib/exit/lens';
import { trainSvm } from '../lib/exit/svm';
import { TransformerModel } from '../lib/model/transformer';
import {
  boundedThresholdForDrop,
  cachedTraces,
  calibrationExamples,
  calibrationProtocolCommand,
  DocumentScoredTrace,
  exitOutcome,
  quantileThresholdForDrop,
  TRACE_FEATURES,
} from './exit_replay';
import { describeMachine, formatMachine } from './machine';

type Scored = DocumentScoredTrace;

/**
 * The cheapest threshold whose drop on `s` is <= maxDrop: with `bounded`, its documents' upper bound (exit_replay.ts
 * boundedThresholdForDrop, what train-exit --max-drop runs); otherwise the point estimate, over 400 score
 * quantiles (exit_replay.ts quantileThresholdForDrop).
 */
function thresholdForDrop(s: Scored[], maxDrop: number, bounded: boolean): number {
  return bounded ? boundedThresholdForDrop(s, maxDrop) : quantileThresholdForDrop(s, maxDrop);
}

/** Scores transformed by a per-layer shape and/or confirmation, kept as Scored (same checks). */
function transformed(s: Scored[], shape: number[] | undefined, confirm: boolean): Scored[] {
  return s.map((t) => {
    let scores = t.checks.map((c) => c.score);
    const layers = t.checks.map((c) => c.layer);
    if (shape) scores = shapedScores(scores, layers, shape);
    if (confirm) scores = confirmedScores(scores);
    return { ...t, checks: t.checks.map((c, i) => ({ ...c, score: scores[i] })) };
  });
}

async function main(): Promise<void> {
  const program = calibrationProtocolCommand('exit_calibration', { help: 'keep the traces here (JSON), and reuse them' })
    .parse(process.argv);
  const o = program.opts();
  const window = Number(o.window);
  const target = Number(o.target);
  const seeds = Number(o.seeds);
  const maxDrop = Number(o.maxDrop) / 100;
  const fitLimit = Number(o.fitLimit);
  const log = (s: string) => process.stderr.write(s + '\n');
  const machine = formatMachine(describeMachine());
  for (const line of machine) log(line);
  const pct = (x: number) => (x * 100).toFixed(2) + '%';
  const lines = [
    `| model | rule | calibration positions (stories) | agreement min (mean) over ${seeds} seeds | pruning mean (min) | accuracy drop mean (max), points |`,
    '|---|---|---|---|---|---|',
  ];
  const schedule = { minLayer: 1, checkEvery: 1 };
  const lens = { mode: 'faithful' as const };
  for (const file of (o.models as string).split(',')) {
    const model = TransformerModel.load(file);
    const name = model.config.name;
    const ctx = model.createContext({ contextSize: window, batchSize: window, threads: 1, lensK: 16 });
    const collect = (data: string, limit?: number) => () =>
      collectTraces(ctx, loadExamples(data, model.tokenizer, { window, limit, seed: limit ? 1 : 2 }), schedule, lens, undefined, undefined, TRACE_FEATURES);
    const fit = cachedTraces(o.cache, `${name}-fit`, collect(o.train, fitLimit)).slice(0, fitLimit);
    const valid = cachedTraces(o.cache, `${name}-valid`, collect(o.valid));
    log(`${name}: fit ${fit.length} positions, valid ${valid.length} positions in ${new Set(valid.map((t) => t.doc)).size} stories`);
    type Row = { agreement: number; pruning: number; drop: number; calN: number; calDocs: number };
    const results = new Map<string, Row[]>();
    const add = (rule: string, r: Row) => (results.has(rule) ? results.get(rule)!.push(r) : results.set(rule, [r]));
    for (let s = 1; s <= seeds; s++) {
      const cal = documentPart(valid, { part: 0, parts: 2, seed: s });
      const evaluation = documentPart(valid, { part: 1, parts: 2, seed: s });
      const trained = trainPolicy(fit, schedule, lens, { classifier: 'svm', label: 'final', target, seed: s, features: DEFAULT_FEATURES, calibrationTraces: cal });
      const c = trained.classifier!;
      const score = (traces: Trace[]): Scored[] =>
        traces.map((t) => {
          const sc = scoreTrace(t, (x) => c.score(x), () => c.begin(), DEFAULT_FEATURES);
          return { nLayer: t.nLayer, doc: t.doc, final: t.final, gold: t.gold, checks: t.checks.map((k, i) => ({ layer: k.layer, score: sc[i], top1: k.top1 })) };
        });
      const [fitS, calS, evalS] = [score(fit), score(cal), score(evaluation)];
      const calDocs = new Set(cal.map((t) => t.doc)).size;
      // Shapes learned on the fit data (point estimate of the target there): the calibration half then sets one level.
      const fitShape = calibrateLayerThresholds(calibrationExamples(fitS), target).thresholds;
      const fitShapeConfirm = calibrateLayerThresholds(calibrationExamples(transformed(fitS, undefined, true)), target).thresholds;
      const measure = (rule: string, calT: Scored[], evalT: Scored[], at: (layer: number) => number) => {
        const h = exitOutcome(evalT, at);
        add(rule, { agreement: h.agreement, pruning: h.pruning, drop: h.drop, calN: calT.length, calDocs });
        const calO = exitOutcome(calT, at);
        log(
          `${name} seed ${s} ${rule}: cal agreement ${pct(calO.agreement)} (documents' bound ${pct(documentsLowerBound(calibrationExamples(calT), calO.agrees, DEFAULT_CONFIDENCE))}) ` +
            `pruning ${pct(calO.pruning)} | held out: agreement ${pct(h.agreement)} pruning ${pct(h.pruning)} drop ${(h.drop * 100).toFixed(2)}`,
        );
      };
      for (const unit of ['positions', 'documents'] as const) {
        const single = calibrateThreshold(calibrationExamples(calS), target, DEFAULT_CONFIDENCE, unit).threshold;
        measure(`single, bound over ${unit}`, calS, evalS, () => single);
      }
      const free = calibrateLayerThresholds(calibrationExamples(calS), target, DEFAULT_CONFIDENCE).thresholds;
      measure('per-layer, 9 values calibrated jointly, bound over positions', calS, evalS, (l) => free[l]);
      for (const unit of ['positions', 'documents'] as const) {
        const [calT, evalT] = [transformed(calS, fitShape, false), transformed(evalS, fitShape, false)];
        const level = calibrateThreshold(calibrationExamples(calT), target, DEFAULT_CONFIDENCE, unit).threshold;
        measure(`per-layer shape from fit + calibrated level, bound over ${unit}`, calT, evalT, () => level);
      }
      for (const unit of ['positions', 'documents'] as const) {
        const [calT, evalT] = [transformed(calS, undefined, true), transformed(evalS, undefined, true)];
        const t = calibrateThreshold(calibrationExamples(calT), target, DEFAULT_CONFIDENCE, unit).threshold;
        measure(`confirm 2, single, bound over ${unit}`, calT, evalT, () => t);
      }
      for (const unit of ['positions', 'documents'] as const) {
        const [calT, evalT] = [transformed(calS, fitShapeConfirm, true), transformed(evalS, fitShapeConfirm, true)];
        const level = calibrateThreshold(calibrationExamples(calT), target, DEFAULT_CONFIDENCE, unit).threshold;
        measure(`confirm 2, per-layer shape from fit + level, bound over ${unit}`, calT, evalT, () => level);
      }
      {
        // The classifier trained on what the decision needs — the top-1 equals the final answer here AND at every
        // later check (the "stay" oracle's label) — rather than on "equals it here".
        const X: number[][] = [];
        const y: (0 | 1)[] = [];
        const extractor = new FeatureExtractor(DEFAULT_FEATURES);
        for (const t of fit) {
          extractor.begin();
          let stays = true;
          const labels = t.checks.map(() => 0 as 0 | 1);
          for (let i = t.checks.length - 1; i >= 0; i--) labels[i] = (stays = stays && t.checks[i].top1 === t.final) ? 1 : 0;
          t.checks.forEach((k, i) => (X.push(Array.from(extractor.next(k, k.layer, t.nLayer))), y.push(labels[i])));
        }
        const stay = trainSvm(X, y, { kernel: 'linear', classWeight: 'balanced', features: DEFAULT_FEATURES, seed: s });
        const scoreStay = (traces: Trace[]): Scored[] =>
          traces.map((t) => {
            const sc = scoreTrace(t, (x) => stay.score(x), () => stay.begin(), DEFAULT_FEATURES);
            return { nLayer: t.nLayer, doc: t.doc, final: t.final, gold: t.gold, checks: t.checks.map((k, i) => ({ layer: k.layer, score: sc[i], top1: k.top1 })) };
          });
        const [calT, evalT] = [scoreStay(cal), scoreStay(evaluation)];
        const t = calibrateThreshold(calibrationExamples(calT), target, DEFAULT_CONFIDENCE, 'documents').threshold;
        measure('classifier fitted on "stays final" labels, single, bound over documents', calT, evalT, () => t);
        const td = thresholdForDrop(calT, maxDrop, true);
        measure(`accuracy, "stays final" classifier: drop <= ${o.maxDrop} pt (documents' upper bound)`, calT, evalT, () => td);
      }
      for (const bounded of [false, true]) {
        const t = thresholdForDrop(calS, maxDrop, bounded);
        measure(`accuracy: drop <= ${o.maxDrop} pt on calibration (${bounded ? "documents' upper bound" : 'point estimate'})`, calS, evalS, () => t);
        const tc = thresholdForDrop(transformed(calS, undefined, true), maxDrop, bounded);
        measure(`accuracy, confirm 2: drop <= ${o.maxDrop} pt (${bounded ? "documents' upper bound" : 'point estimate'})`, transformed(calS, undefined, true), transformed(evalS, undefined, true), () => tc);
      }
    }
    for (const [rule, rows] of results) {
      const mean = (f: (r: Row) => number) => rows.reduce((a, r) => a + f(r), 0) / rows.length;
      const row =
        `| ${name} | ${rule} | ${Math.round(mean((r) => r.calN))} (${Math.round(mean((r) => r.calDocs))}) | ${pct(Math.min(...rows.map((r) => r.agreement)))} (${pct(mean((r) => r.agreement))}) | ` +
        `${pct(mean((r) => r.pruning))} (${pct(Math.min(...rows.map((r) => r.pruning)))}) | ${(mean((r) => r.drop) * 100).toFixed(2)} (${(Math.max(...rows.map((r) => r.drop)) * 100).toFixed(2)}) |`;
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
