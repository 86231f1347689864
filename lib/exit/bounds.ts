/**
 * Confidence bounds and oracle bounds that every exit report carries.
 *
 * agreementLower: the one-sided Clopper–Pearson lower bound on a binomial proportion — the largest p such that
 * seeing `successes` or more of `trials` has probability <= 1 − confidence when the true rate is p. With
 * confidence 0.95 it is the 5% quantile of Beta(successes, trials − successes + 1) (0 when successes = 0): the
 * true agreement is at least this with 95% confidence. It is exact (no normal approximation), so it stays
 * honest near 1, where exit agreements live.
 */
import { OptionError } from '../errors';

/** Default confidence of agreementLower and of calibration (one-sided). */
export const DEFAULT_CONFIDENCE = 0.95;

/** One-sided Clopper–Pearson lower bound on successes / trials at `confidence`. */
export function clopperPearsonLower(successes: number, trials: number, confidence = DEFAULT_CONFIDENCE): number {
  if (!Number.isSafeInteger(trials) || trials < 1) throw new OptionError('trials', `must be an integer >= 1, got ${String(trials)}`);
  if (!Number.isSafeInteger(successes) || successes < 0 || successes > trials)
    throw new OptionError('successes', `must be an integer in [0, ${trials}], got ${String(successes)}`);
  if (!(confidence > 0 && confidence < 1)) throw new OptionError('confidence', `must be in (0, 1), got ${String(confidence)}`);
  if (successes === 0) return 0;
  const alpha = 1 - confidence;
  // x = n: the bound has a closed form, alpha^(1/n).
  if (successes === trials) return Math.pow(alpha, 1 / trials);
  // P(X >= x | p) = I_p(x, n − x + 1), increasing in p: bisect I_p = alpha.
  const a = successes;
  const b = trials - successes + 1;
  let lo = 0;
  let hi = successes / trials;
  for (let i = 0; i < 200 && hi - lo > 1e-15; i++) {
    const mid = (lo + hi) / 2;
    if (regularizedIncompleteBeta(mid, a, b) < alpha) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** ln Γ(x), x > 0 (Lanczos, g = 7, n = 9; relative error ~1e-15). */
export function logGamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905,
    -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  x -= 1;
  let s = c[0];
  for (let i = 1; i < 9; i++) s += c[i] / (x + i);
  const t = x + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(s);
}

/** I_x(a, b), the regularized incomplete beta function (continued fraction, Lentz's method). */
export function regularizedIncompleteBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = Math.exp(logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log1p(-x));
  // The continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise.
  if (x < (a + 1) / (a + b + 2)) return (front * betaContinuedFraction(x, a, b)) / a;
  return 1 - (front * betaContinuedFraction(1 - x, b, a)) / b;
}

function betaContinuedFraction(x: number, a: number, b: number): number {
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 10000; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-16) break;
  }
  return h;
}

/** What an example's lens said at each layer, for the oracles: top-1 per checked layer and the full-depth answer. */
export interface OracleTrace {
  nLayer: number;
  final: number;
  checks: { layer: number; top1: number }[];
}

/**
 * The two oracles' pruning ratios over the same examples: `first` stops at the first layer whose top-1 equals the
 * full-depth answer; `stay` stops where the top-1 equals it and stays equal through the last layer. No policy over
 * these checks can agree on every example and prune more than `first`; `stay` is what a policy that never changes
 * its mind after stopping could reach. Traces must be checked at every layer in faithful mode for these to be the
 * model's bounds (other schedules give the bounds of that schedule).
 */
export function oraclePruning(traces: OracleTrace[]): { oracleFirst: number; oracleStay: number } {
  if (traces.length === 0) return { oracleFirst: 0, oracleStay: 0 };
  let first = 0;
  let stay = 0;
  let full = 0;
  for (const t of traces) {
    const f = t.checks.find((c) => c.top1 === t.final);
    first += f ? f.layer + 1 : t.nLayer;
    let s = t.nLayer;
    for (let i = t.checks.length - 1; i >= 0 && t.checks[i].top1 === t.final; i--) s = t.checks[i].layer + 1;
    stay += s;
    full += t.nLayer;
  }
  return { oracleFirst: (full - first) / full, oracleStay: (full - stay) / full };
}

/** The figures every exit report carries beside agreement and pruning. */
export interface ExitBounds {
  /** 95% one-sided Clopper–Pearson lower bound on the agreement. */
  agreementLower: number;
  oracleFirst: number;
  oracleStay: number;
  /** pruningRatio / oracleStay (0 when the oracle prunes nothing). */
  oracleFraction: number;
  /** 1 / (1 − pruningRatio): the speedup if time were proportional to layers run. */
  idealSpeedup: number;
}

export function exitBounds(agreeing: number, examples: number, pruningRatio: number, oracle: { oracleFirst: number; oracleStay: number }): ExitBounds {
  return {
    agreementLower: clopperPearsonLower(agreeing, examples),
    oracleFirst: oracle.oracleFirst,
    oracleStay: oracle.oracleStay,
    oracleFraction: oracle.oracleStay > 0 ? pruningRatio / oracle.oracleStay : 0,
    idealSpeedup: 1 / (1 - pruningRatio),
  };
}
