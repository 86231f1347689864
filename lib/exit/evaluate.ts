/**
 * Evaluation of an exit policy against full depth on the same examples, in the same run: agreement with
 * the full-depth answer, accuracy against gold, layers used, and wall-clock time of both. The two runs of
 * an example alternate in order (full first on even examples, exit first on odd ones) so that machine noise
 * and cache warmth fall on both alike.
 */
import { argmax } from '../engine/sampling';
import { TransformerContext } from '../model/transformer';
import { Example } from './data';
import { LensReading } from './lens';
import { exitBounds, ExitBounds, oraclePruning, OracleTrace } from './bounds';
import { ExitDecider } from './decider';
import { DEFAULT_SCHEDULE, ExitPolicy, observingPolicy } from './policy';

export interface EvalReport extends ExitBounds {
  examples: number;
  layers: number;
  /** Share of examples whose exit answer equals the full-depth answer. */
  agreement: number;
  /** Share of examples whose exit answer equals the gold token (null without gold). */
  accuracy: number | null;
  /** Accuracy of full depth against gold (null without gold). */
  accuracyFull: number | null;
  /** accuracyFull − accuracy: the paper's criterion (null without gold). */
  accuracyDrop: number | null;
  meanLayers: number;
  /** (L - meanLayers) / L */
  pruningRatio: number;
  secondsFull: number;
  secondsExit: number;
  /** secondsFull / secondsExit */
  speedup: number;
  /** histogram[i] = examples that used i + 1 layers. */
  histogram: number[];
  /** The policy's own cost per check, without the lens read (classifierCostPerCheck), in microseconds. */
  classifierMicrosPerCheck: number;
}

/**
 * What the policy itself costs per check, the lens read excluded: its decision replayed over recorded readings
 * (every check of every trace, each trace from begin(), as between layers), in microseconds per check. Repeated
 * until at least 20 ms have been timed, so that the clock's resolution does not dominate.
 */
export function classifierMicrosPerCheck(policy: ExitPolicy, traces: { nLayer: number; checks: ({ layer: number } & LensReading)[] }[]): number {
  let checks = 0;
  for (const t of traces) checks += t.checks.length;
  if (checks === 0) return 0;
  let rounds = 0;
  let sink = 0;
  const t0 = performance.now();
  let elapsed = 0;
  do {
    for (const t of traces) {
      policy.begin();
      for (const c of t.checks) if (policy.shouldExit(c.layer, c, t.nLayer)) sink++;
    }
    rounds++;
    elapsed = performance.now() - t0;
  } while (elapsed < 20);
  return sink >= 0 ? (elapsed * 1000) / (rounds * checks) : 0;
}

/**
 * Runs the full-depth and the exit run of example `i`: full first on even examples, exit first on odd ones,
 * so that machine noise and cache warmth fall on both alike. Returns [full, exit].
 */
export function runAlternating<F, E>(i: number, full: () => F, exit: () => E): [F, E] {
  if (i % 2 === 0) {
    const f = full();
    return [f, exit()];
  }
  const e = exit();
  return [full(), e];
}

/**
 * Evaluates `policy` against full depth on `examples`. Besides the timed runs, each example runs once more,
 * untimed, with the faithful lens read after every layer: the oracles' bounds (lib/exit/bounds.ts) on the same
 * examples.
 */
export function evaluatePolicy(ctx: TransformerContext, examples: Example[], policy: ExitPolicy, onProgress?: (done: number) => void): EvalReport {
  const nLayer = ctx.model.config.nLayer;
  const decider = new ExitDecider(ctx, policy);
  let oracleChecks: ({ layer: number } & LensReading)[] = [];
  const observer = new ExitDecider(
    ctx,
    // The oracles read the faithful lens; the classifier's cost is timed on these readings, so they hold its features.
    observingPolicy(DEFAULT_SCHEDULE, { mode: 'faithful' }, (layer, r) => oracleChecks.push({ layer, ...r }), policy.features),
  );
  // Attention statistics are a context-wide switch that the exit runs turn on (LensReader.begin): off for full depth.
  const statisticsOff = ctx.native.computesExitStatistics ? () => ctx.native.setAttentionStatistics(false) : () => undefined;
  const oracleTraces: (OracleTrace & { checks: ({ layer: number } & LensReading)[] })[] = [];
  const histogram = new Array<number>(nLayer).fill(0);
  let agree = 0;
  let correct = 0;
  let correctFull = 0;
  let withGold = 0;
  let layerSum = 0;
  let msFull = 0;
  let msExit = 0;

  const load = (ex: Example) => ex.tokens.forEach((t, i) => (ctx.native.tokens[i] = t));
  const runFull = (ex: Example): number => {
    load(ex);
    statisticsOff();
    const t0 = performance.now();
    ctx.forward(ex.tokens.length, 0);
    const token = argmax(ctx.logits(ex.tokens.length - 1));
    msFull += performance.now() - t0;
    return token;
  };
  const runExit = (ex: Example): { token: number; layers: number } => {
    load(ex);
    const t0 = performance.now();
    const out = decider.forward(ex.tokens.length, 0);
    const token = out.token >= 0 ? out.token : argmax(ctx.logits(ex.tokens.length - 1));
    msExit += performance.now() - t0;
    return { token, layers: out.layers };
  };

  examples.forEach((ex, i) => {
    const [full, exit] = runAlternating(i, () => runFull(ex), () => runExit(ex));
    if (exit.token === full) agree++;
    if (ex.gold !== undefined) {
      withGold++;
      if (exit.token === ex.gold) correct++;
      if (full === ex.gold) correctFull++;
    }
    layerSum += exit.layers;
    histogram[exit.layers - 1]++;
    oracleChecks = [];
    load(ex);
    observer.forward(ex.tokens.length, 0);
    oracleTraces.push({ nLayer, final: full, checks: oracleChecks });
    onProgress?.(i + 1);
  });

  const n = examples.length;
  const meanLayers = layerSum / n;
  const pruningRatio = (nLayer - meanLayers) / nLayer;
  const accuracy = withGold > 0 ? correct / withGold : null;
  const accuracyFull = withGold > 0 ? correctFull / withGold : null;
  return {
    examples: n,
    layers: nLayer,
    agreement: agree / n,
    accuracy,
    accuracyFull,
    accuracyDrop: accuracy !== null && accuracyFull !== null ? accuracyFull - accuracy : null,
    meanLayers,
    pruningRatio,
    secondsFull: msFull / 1000,
    secondsExit: msExit / 1000,
    speedup: msExit > 0 ? msFull / msExit : 0,
    histogram,
    classifierMicrosPerCheck: classifierMicrosPerCheck(policy, oracleTraces),
    ...exitBounds(agree, n, pruningRatio, oraclePruning(oracleTraces)),
  };
}
