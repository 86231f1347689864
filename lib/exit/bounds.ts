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
  return betaLowerQuantile(successes, trials, 1 - confidence);
}

/**
 * The Clopper–Pearson lower bound for real-valued x of n (0 <= x <= n): the alpha-quantile of Beta(x, n − x + 1),
 * alpha^(1/n) at x = n, 0 at x = 0. Real values are the effective counts of a clustered sample (below).
 */
function betaLowerQuantile(successes: number, trials: number, alpha: number): number {
  if (successes <= 0) return 0;
  // x = n: the bound has a closed form, alpha^(1/n).
  if (successes >= trials) return Math.pow(alpha, 1 / trials);
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

/**
 * Student's t quantile: the t with P(T <= t) = p for `df` degrees of freedom (p in (0, 1), df > 0), by bisection
 * on P(T > t) = I_{df/(df+t²)}(df/2, 1/2) / 2 for t > 0.
 */
export function studentTQuantile(p: number, df: number): number {
  if (!(p > 0 && p < 1)) throw new OptionError('p', `must be in (0, 1), got ${String(p)}`);
  if (!(df > 0)) throw new OptionError('df', `must be > 0, got ${String(df)}`);
  if (p === 0.5) return 0;
  if (p < 0.5) return -studentTQuantile(1 - p, df);
  const tail = (t: number) => 0.5 * regularizedIncompleteBeta(df / (df + t * t), df / 2, 0.5);
  let lo = 0;
  let hi = 1;
  while (tail(hi) > 1 - p) hi *= 2;
  for (let i = 0; i < 200 && hi - lo > 1e-13 * hi; i++) {
    const mid = (lo + hi) / 2;
    if (tail(mid) > 1 - p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/** Per cluster (document): how many of its examples succeeded (agreed) and how many it has. */
export interface ClusterCounts {
  successes: number;
  trials: number;
}

/**
 * One-sided lower bound on a proportion measured over clustered examples — the positions of a story are not
 * independent, so the plain Clopper–Pearson bound (which counts every position as an independent trial) is too
 * narrow. Korn & Graubard (1998, "Confidence intervals for proportions with small expected number of positive
 * counts estimated from survey data", Survey Methodology 24(2)): the Clopper–Pearson bound at the effective sample
 * size n* = p̂(1 − p̂) / v̂, where v̂ is the between-cluster (ratio-estimator) variance of p̂,
 * v̂ = k/(k − 1) · Σ_g (x_g − p̂ n_g)² / N², capped at N, and shrunk by (z / t_{k−1})² for the k − 1 degrees of
 * freedom the variance is estimated with (z = the normal quantile, t_{N−1}). With one example per cluster it is
 * the plain bound at n* ≈ N; positions that agree or fail together make v̂ larger and n* smaller. With v̂ = 0
 * (every cluster at the same rate, e.g. all agree) n* = N. At least two clusters are needed.
 */
export function clusteredLowerBound(clusters: readonly ClusterCounts[], confidence = DEFAULT_CONFIDENCE): number {
  if (!(confidence > 0 && confidence < 1)) throw new OptionError('confidence', `must be in (0, 1), got ${String(confidence)}`);
  if (clusters.length < 2) throw new OptionError('clusters', `need at least 2 clusters, got ${clusters.length}`);
  let x = 0;
  let n = 0;
  let xx = 0;
  let xn = 0;
  let nn = 0;
  for (const c of clusters) {
    if (!Number.isSafeInteger(c.trials) || c.trials < 1 || !Number.isSafeInteger(c.successes) || c.successes < 0 || c.successes > c.trials)
      throw new OptionError('clusters', `each cluster needs integer 0 <= successes <= trials, trials >= 1; got ${c.successes} of ${c.trials}`);
    x += c.successes;
    n += c.trials;
    xx += c.successes * c.successes;
    xn += c.successes * c.trials;
    nn += c.trials * c.trials;
  }
  return clusteredLowerFromSums({ x, n, xx, xn, nn, k: clusters.length }, confidence);
}

/**
 * clusteredLowerBound from sums over the k clusters — x = Σx_g, n = Σn_g, xx = Σx_g², xn = Σx_g·n_g, nn = Σn_g² —
 * so that a calibration sweep can keep them up to date as examples change outcome.
 */
export function clusteredLowerFromSums(s: { x: number; n: number; xx: number; xn: number; nn: number; k: number }, confidence = DEFAULT_CONFIDENCE): number {
  const p = s.x / s.n;
  const v = ((s.k / (s.k - 1)) * Math.max(0, s.xx - 2 * p * s.xn + p * p * s.nn)) / (s.n * s.n);
  let effective = v > 0 ? Math.min(s.n, (p * (1 - p)) / v) : s.n;
  effective *= degreesOfFreedomFactor(s.n, s.k, confidence);
  return betaLowerQuantile(p * effective, effective, 1 - confidence);
}

/** (t_{N−1} / t_{k−1})² at `confidence`, memoised: a calibration sweep asks for the same N and k many times. */
const dfFactors = new Map<string, number>();
function degreesOfFreedomFactor(n: number, k: number, confidence: number): number {
  const key = `${n}/${k}/${confidence}`;
  let f = dfFactors.get(key);
  if (f === undefined) {
    f = (studentTQuantile(confidence, Math.max(1, n - 1)) / studentTQuantile(confidence, k - 1)) ** 2;
    if (dfFactors.size > 1000) dfFactors.clear();
    dfFactors.set(key, f);
  }
  return f;
}

/**
 * One-sided upper confidence bound on the mean of per-example values grouped in clusters (documents): for the
 * next-token accuracy drop, values in {−1, 0, 1} per position. The ratio mean d̄ = Σsum_g / Σcount_g plus
 * t_{k−1} times its between-cluster standard error √(k/(k − 1) · Σ_g (sum_g − d̄·count_g)² / N²) — the
 * cluster-robust (sandwich) variance, with k − 1 degrees of freedom.
 */
export function clusteredMeanUpper(clusters: readonly { sum: number; count: number }[], confidence = DEFAULT_CONFIDENCE): number {
  if (!(confidence > 0 && confidence < 1)) throw new OptionError('confidence', `must be in (0, 1), got ${String(confidence)}`);
  if (clusters.length < 2) throw new OptionError('clusters', `need at least 2 clusters, got ${clusters.length}`);
  let sum = 0;
  let n = 0;
  for (const c of clusters) {
    if (!Number.isFinite(c.sum) || !Number.isSafeInteger(c.count) || c.count < 1)
      throw new OptionError('clusters', `each cluster needs a finite sum and an integer count >= 1; got ${c.sum}, ${c.count}`);
    sum += c.sum;
    n += c.count;
  }
  const mean = sum / n;
  let squares = 0;
  for (const c of clusters) squares += (c.sum - mean * c.count) ** 2;
  const k = clusters.length;
  return mean + studentTQuantile(confidence, k - 1) * Math.sqrt(((k / (k - 1)) * squares) / (n * n));
}
