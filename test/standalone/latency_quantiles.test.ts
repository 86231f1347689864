/**
 * The percentiles of every latency report (lib/latency/quantiles.ts): nearest rank, checked on samples whose
 * percentiles are known by hand (Wikipedia's worked example of the nearest-rank method, and 1..100).
 */
import { distribution, nearestRank } from '../../lib/latency/quantiles';

describe('nearest-rank percentiles', () => {
  test("the worked example: 15, 20, 35, 40, 50", () => {
    const s = [15, 20, 35, 40, 50];
    expect(nearestRank(s, 0.05)).toBe(15);
    expect(nearestRank(s, 0.3)).toBe(20);
    expect(nearestRank(s, 0.4)).toBe(20);
    expect(nearestRank(s, 0.5)).toBe(35);
    expect(nearestRank(s, 1)).toBe(50);
    expect(nearestRank(s, 0)).toBe(15);
  });

  test('1..100: the p-th percentile is p', () => {
    const s = Array.from({ length: 100 }, (_, i) => i + 1);
    for (const p of [1, 10, 50, 90, 99, 100]) expect(nearestRank(s, p / 100)).toBe(p);
  });

  test('a percentile is always an observed value, never interpolated', () => {
    expect(nearestRank([1, 3], 0.5)).toBe(1);
    expect(nearestRank([1, 3], 0.51)).toBe(3);
  });

  test('no samples give NaN; a quantile outside [0, 1] is refused', () => {
    expect(nearestRank([], 0.5)).toBeNaN();
    expect(() => nearestRank([1], 1.5)).toThrow(RangeError);
    expect(() => nearestRank([1], NaN)).toThrow(RangeError);
  });

  test('distribution sorts its samples (any order in) and summarises them', () => {
    const s = Array.from({ length: 200 }, (_, i) => ((i * 37) % 200) + 1); // a permutation of 1..200
    expect(distribution(s)).toEqual({ n: 200, mean: 100.5, min: 1, p50: 100, p90: 180, p99: 198, max: 200 });
    expect(s[1]).toBe(38); // the caller's array is left as it was
    expect(distribution([])).toEqual({ n: 0, mean: null, min: null, p50: null, p90: null, p99: null, max: null });
  });
});
