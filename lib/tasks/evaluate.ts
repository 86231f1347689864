/**
 * The evaluation loop of one task, in the paper's setting: the whole prompt is run layer by layer over all
 * its positions (one batch: the context's batch size is the longest prompt), the exit policy decides after
 * each checked layer from the lens at the last position, and an exit at layer l skips layers l+1..L for the
 * whole prompt. The answer is the label whose scored token has the highest logit — at full depth, or in the
 * exit layer's lens (Sequence.classify). Full depth and exit run on the same examples in the same run,
 * alternating which goes first (as lib/exit/evaluate.ts), and every run starts from an empty cache.
 *
 * Traces (lens features and the label answer after every checked layer, at full depth) serve two purposes:
 * training the exit classifier on the demo part (--train-exit), and the threshold sweep of the report on the
 * evaluated part (accuracy and agreement for every threshold of the policy's score).
 */
import { Sequence } from '../engine/sequence';
import { simulateExit, thresholdSweep, CalibrationExample } from '../exit/calibrate';
import { FeatureName } from '../exit/classifier';
import { collectTraces, Trace } from '../exit/collect';
import type { ExitProbe } from '../exit/probe';
import { classifierMicrosPerCheck, runAlternating } from '../exit/evaluate';
import { LensOptions } from '../exit/lens';
import { ExitDecider } from '../exit/decider';
import { DEFAULT_SCHEDULE, ExitPolicy, ExitSchedule } from '../exit/policy';
import { exitBounds, ExitBounds, oraclePruning } from '../exit/bounds';
import { scoreTrace } from '../exit/train';
import { TransformerContext } from '../model/transformer';
import { PreparedExample } from './prepare';

/** Index of the largest of `logits[ids[i]]` (lowest index on ties, as Sequence.classify). */
export function labelArgmax(logits: ArrayLike<number>, ids: number[]): number {
  let best = 0;
  for (let i = 1; i < ids.length; i++) if (logits[ids[i]] > logits[ids[best]]) best = i;
  return best;
}

/**
 * Runs each example to full depth and records, after every checked layer, the lens features (of `lens`,
 * whose fast mode should use the label tokens as candidates) and the label the lens would answer there.
 * In the returned traces, token ids stand for labels: `top1` of a check is the scored token of the label
 * that layer answers, `final` the full-depth answer's, `gold` the right one's — so trainPolicy's "top-1
 * equals the answer" is "this layer gives the same label".
 */
export function collectTaskTraces(
  ctx: TransformerContext,
  examples: PreparedExample[],
  labelTokens: number[],
  schedule: ExitSchedule,
  lens: LensOptions,
  onProgress?: (done: number) => void,
  features?: readonly FeatureName[],
): Trace[] {
  const asLabelTokens = examples.map((ex, i) => ({ tokens: ex.tokens, gold: labelTokens[ex.gold], doc: i }));
  return collectTraces(ctx, asLabelTokens, schedule, lens, onProgress, (logits) => labelTokens[labelArgmax(logits, labelTokens)], features);
}

/** What scores a check for the sweep: the policy's classifier, or the feature a threshold compares. */
export interface Scorer {
  features: FeatureName[];
  /** With the 'probe' feature: the classifier's hidden-state probe. */
  probe?: ExitProbe;
  score(x: Float64Array): number;
  begin(): void;
}

export interface SweepPoint {
  /** null = +Infinity (never exit). */
  threshold: number | null;
  agreement: number;
  accuracy: number;
  meanLayers: number;
  pruningRatio: number;
}

/**
 * Agreement with full depth and accuracy against gold for every threshold of the score (thresholdSweep's
 * breakpoints, at most `maxPoints`), plus the outcome at `at` (the policy's own threshold).
 */
export function sweep(traces: Trace[], scorer: Scorer, at: number, maxPoints = 48): { points: SweepPoint[]; atThreshold: { agreement: number; accuracy: number; meanLayers: number } } {
  const nLayer = traces[0].nLayer;
  const scored = traces.map((t) => scoreTrace(t, (x) => scorer.score(x), () => scorer.begin(), scorer.features, scorer.probe));
  const examples: CalibrationExample[] = traces.map((t, e) => ({
    nLayer: t.nLayer,
    checks: t.checks.map((c, k) => ({ layer: c.layer, score: scored[e][k], agrees: c.top1 === t.final })),
  }));
  const accuracyAt = (threshold: number): number => {
    let right = 0;
    traces.forEach((t, e) => {
      let answer = t.final;
      for (let k = 0; k < t.checks.length; k++)
        if (scored[e][k] >= threshold) {
          answer = t.checks[k].top1;
          break;
        }
      if (answer === t.gold) right++;
    });
    return right / traces.length;
  };
  const points = thresholdSweep(examples, maxPoints).map((p) => ({
    threshold: Number.isFinite(p.threshold) ? p.threshold : null,
    agreement: p.agreement,
    accuracy: accuracyAt(p.threshold),
    meanLayers: p.meanLayers,
    pruningRatio: (nLayer - p.meanLayers) / nLayer,
  }));
  const sim = simulateExit(examples, at);
  return { points, atThreshold: { agreement: sim.agreement, accuracy: accuracyAt(at), meanLayers: sim.meanLayers } };
}

export interface TaskMeasurement extends ExitBounds {
  n: number;
  accuracyFull: number;
  accuracyExit: number;
  agreement: number;
  meanLayers: number;
  pruningRatio: number;
  secondsFull: number;
  /** With the policy 'never' the exit run is the full-depth run: secondsExit = secondsFull. */
  secondsExit: number;
  /** secondsFull / secondsExit; null with the policy 'never', which has no exit run to time (a ratio would be timing noise). */
  speedup: number | null;
  exitHistogram: number[];
  meanPromptTokens: number;
  /**
   * Share of layer×token work skipped: Σ tokens·(L − layers) / Σ tokens·L. Layers cost in proportion to the
   * prompt's tokens (attention more), so when the long prompts exit earlier than the short ones the wall
   * clock gains more than pruningRatio, a per-example mean, suggests — and less in the opposite case.
   */
  tokenWeightedPruningRatio: number;
  /** The policy's own cost per check, lens read excluded (lib/exit/evaluate.ts), in microseconds. */
  classifierMicrosPerCheck: number;
}

/**
 * Full depth and the exit policy on every example, alternating which runs first; times cover the whole
 * classify call (prompt through the layer loop, label scoring). One untimed warm-up of each first. Then, untimed,
 * every example once more with the faithful lens after every layer, the answer read over the label tokens: the
 * oracles' bounds on the same examples (lib/exit/bounds.ts).
 */
export function measureTask(
  ctx: TransformerContext,
  examples: PreparedExample[],
  labelTokens: number[],
  policy: ExitPolicy,
  onProgress?: (done: number) => void,
): TaskMeasurement {
  const nLayer = ctx.model.config.nLayer;
  const seq = new Sequence(ctx);
  const decider = new ExitDecider(ctx, policy);
  const exitHistogram = new Array<number>(nLayer).fill(0);
  let msFull = 0;
  let msExit = 0;
  let right = 0;
  let rightExit = 0;
  let agree = 0;
  let layerSum = 0;
  let tokenSum = 0;
  let skippedWork = 0;
  // Attention statistics are a context-wide switch that the exit runs turn on (LensReader.begin): off for full depth.
  const statisticsOff = ctx.native.computesExitStatistics ? () => ctx.native.setAttentionStatistics(false) : () => undefined;
  const runFull = (ex: PreparedExample) => {
    seq.reset();
    statisticsOff();
    const t0 = performance.now();
    const r = seq.classify(ex.tokens, labelTokens);
    msFull += performance.now() - t0;
    return r;
  };
  const runExit = (ex: PreparedExample) => {
    seq.reset();
    const t0 = performance.now();
    const r = seq.classify(ex.tokens, labelTokens, decider);
    msExit += performance.now() - t0;
    return r;
  };
  if (examples.length > 0) {
    seq.reset();
    seq.classify(examples[0].tokens, labelTokens);
    seq.reset();
    seq.classify(examples[0].tokens, labelTokens, decider);
  }
  const neverExits = policy.kind === 'never';
  examples.forEach((ex, i) => {
    let full, exit;
    if (neverExits) full = exit = runFull(ex);
    else [full, exit] = runAlternating(i, () => runFull(ex), () => runExit(ex));
    if (full.index === ex.gold) right++;
    if (exit.index === ex.gold) rightExit++;
    if (exit.index === full.index) agree++;
    layerSum += exit.layers;
    exitHistogram[exit.layers - 1]++;
    tokenSum += ex.tokens.length;
    skippedWork += ex.tokens.length * (nLayer - exit.layers);
    onProgress?.(i + 1);
  });
  const n = examples.length;
  const meanLayers = n > 0 ? layerSum / n : nLayer;
  const pruningRatio = (nLayer - meanLayers) / nLayer;
  // The classifier's cost is timed on these readings, so they hold its features.
  const oracleTraces = collectTaskTraces(ctx, examples, labelTokens, DEFAULT_SCHEDULE, { mode: 'faithful' }, undefined, policy.features);
  const oracle = oraclePruning(oracleTraces);
  const bounds: ExitBounds =
    n > 0 ? exitBounds(agree, n, pruningRatio, oracle) : { agreementLower: 0, oracleFirst: 0, oracleStay: 0, oracleFraction: 0, idealSpeedup: 1 };
  return {
    n,
    accuracyFull: n > 0 ? right / n : 0,
    accuracyExit: n > 0 ? rightExit / n : 0,
    agreement: n > 0 ? agree / n : 1,
    meanLayers,
    pruningRatio,
    secondsFull: msFull / 1000,
    secondsExit: (neverExits ? msFull : msExit) / 1000,
    speedup: neverExits ? null : msExit > 0 ? msFull / msExit : 0,
    exitHistogram,
    meanPromptTokens: n > 0 ? tokenSum / n : 0,
    tokenWeightedPruningRatio: tokenSum > 0 ? skippedWork / (tokenSum * nLayer) : 0,
    classifierMicrosPerCheck: classifierMicrosPerCheck(policy, oracleTraces),
    ...bounds,
  };
}
