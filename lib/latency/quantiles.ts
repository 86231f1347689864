/**
 * Percentiles of latency samples, one definition for every report (adainfer bench --exit, bench/latency.ts,
 * bench/soak.ts): the nearest-rank method — the q-quantile of n sorted samples is the sample of rank
 * ceil(q·n) (1-based; rank 1 for q = 0). It is always a latency that was observed, never an interpolation
 * between two, which is what a latency percentile should say ("99% of tokens came within this time").
 */

/** The q-quantile (q in [0, 1]) of samples sorted ascending, by nearest rank; NaN when there are none. */
export function nearestRank(sorted: readonly number[], q: number): number {
  if (!(q >= 0 && q <= 1)) throw new RangeError(`quantile must be in [0, 1], got ${q}`);
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** The summary of a latency distribution every report prints (ms). Empty samples give n 0 and null figures. */
export interface Distribution {
  n: number;
  mean: number | null;
  min: number | null;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
}

export function distribution(samples: readonly number[]): Distribution {
  if (samples.length === 0) return { n: 0, mean: null, min: null, p50: null, p90: null, p99: null, max: null };
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    n: sorted.length,
    mean: sorted.reduce((a, b) => a + b, 0) / sorted.length,
    min: sorted[0],
    p50: nearestRank(sorted, 0.5),
    p90: nearestRank(sorted, 0.9),
    p99: nearestRank(sorted, 0.99),
    max: sorted[sorted.length - 1],
  };
}
