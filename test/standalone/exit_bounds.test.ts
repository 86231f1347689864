import { clopperPearsonLower, clusteredLowerBound, clusteredMeanUpper, exitBounds, logGamma, oraclePruning, regularizedIncompleteBeta, studentTQuantile } from '../../lib/exit/bounds';

describe('Clopper–Pearson lower bound', () => {
  // Known values: scipy.stats.beta.ppf(0.05, x, n − x + 1) (scipy 1.17).
  const known: [number, number, number][] = [
    [10, 10, 0.7411344491069477],
    [95, 100, 0.8977466223567255],
    [983, 1000, 0.9746092512238191],
    [1, 1, 0.05],
    [3950, 4000, 0.9842045588509051],
    [50, 100, 0.41362171463091174],
  ];
  test.each(known)('%i of %i', (x, n, expected) => {
    expect(Math.abs(clopperPearsonLower(x, n) - expected)).toBeLessThan(1e-9);
  });
  test('no successes gives 0; the bound is below the point estimate and rises with n at a fixed rate', () => {
    expect(clopperPearsonLower(0, 5)).toBe(0);
    for (const [x, n] of [[9, 10], [99, 100], [990, 1000]]) expect(clopperPearsonLower(x, n)).toBeLessThan(x / n);
    expect(clopperPearsonLower(99, 100)).toBeLessThan(clopperPearsonLower(990, 1000));
  });
  test('a lower confidence gives a higher bound', () => {
    expect(clopperPearsonLower(95, 100, 0.5)).toBeGreaterThan(clopperPearsonLower(95, 100, 0.95));
  });
  test('bad arguments are typed errors', () => {
    expect(() => clopperPearsonLower(11, 10)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
    expect(() => clopperPearsonLower(1, 0)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
    expect(() => clopperPearsonLower(1.5, 10)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
    expect(() => clopperPearsonLower(5, 10, 1)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
  });
  test('special functions: ln Γ and I_x(a, b) at known values', () => {
    expect(logGamma(1)).toBeCloseTo(0, 12);
    expect(logGamma(5)).toBeCloseTo(Math.log(24), 12);
    expect(logGamma(0.5)).toBeCloseTo(Math.log(Math.sqrt(Math.PI)), 12);
    // I_x(1, b) = 1 − (1 − x)^b; I_x(a, 1) = x^a.
    expect(regularizedIncompleteBeta(0.3, 1, 4)).toBeCloseTo(1 - Math.pow(0.7, 4), 12);
    expect(regularizedIncompleteBeta(0.3, 3, 1)).toBeCloseTo(Math.pow(0.3, 3), 12);
  });
});

describe('bounds over documents (clustered positions)', () => {
  const clusters = (x: number[], n: number[]) => x.map((successes, i) => ({ successes, trials: n[i] }));
  // Known values: Korn & Graubard's effective-sample-size Clopper–Pearson computed with scipy 1.17 —
  // p = Σx/Σn, v = k/(k−1)·Σ(x_g − p·n_g)²/N², n* = min(N, p(1−p)/v)·(t.ppf(.95, N−1)/t.ppf(.95, k−1))²,
  // beta.ppf(0.05, p·n*, n* − p·n* + 1).
  test.each([
    ['10 stories of 100, two with 5 failures', [95, 95, 100, 100, 100, 100, 100, 100, 100, 100], Array(10).fill(100), 0.9670507112896016],
    ['unequal stories', [48, 30, 19, 60, 10, 99], [50, 30, 20, 61, 12, 100], 0.9412893621654359],
    ['one position per story (independent): ~ the plain bound', [...Array(990).fill(1), ...Array(10).fill(0)], Array(1000).fill(1), 0.9830924207820099],
  ])('%s', (_, x, n, expected) => {
    expect(Math.abs(clusteredLowerBound(clusters(x as number[], n as number[])) - (expected as number))).toBeLessThan(1e-9);
  });
  test('failures that come in stories give a lower bound than the same failures spread over stories', () => {
    const together = clusteredLowerBound(clusters([90, ...Array(9).fill(100)], Array(10).fill(100)));
    const spread = clusteredLowerBound(clusters(Array(10).fill(99), Array(10).fill(100)));
    expect(together).toBeLessThan(spread);
    // Never above the plain bound over the 1000 positions.
    expect(spread).toBeLessThanOrEqual(clopperPearsonLower(990, 1000) + 1e-12);
  });
  test("Student's t quantiles (scipy.stats.t.ppf)", () => {
    expect(studentTQuantile(0.95, 10)).toBeCloseTo(1.8124611228116756, 10);
    expect(studentTQuantile(0.95, 49)).toBeCloseTo(1.6765508926168535, 10);
    expect(studentTQuantile(0.975, 3)).toBeCloseTo(3.1824463052837078, 10);
    expect(studentTQuantile(0.05, 10)).toBeCloseTo(-1.8124611228116756, 10);
  });
  test('upper bound on a clustered mean (the accuracy drop): scipy value; above the mean', () => {
    const c = [[2, 40], [-1, 30], [0, 20], [3, 50], [1, 10]].map(([sum, count]) => ({ sum, count }));
    expect(clusteredMeanUpper(c)).toBeCloseTo(0.07570626072747429, 12);
    expect(clusteredMeanUpper(c)).toBeGreaterThan(5 / 150);
  });
  test('bad arguments are typed errors', () => {
    expect(() => clusteredLowerBound(clusters([1], [2]))).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
    expect(() => clusteredLowerBound(clusters([3, 1], [2, 2]))).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
    expect(() => clusteredMeanUpper([{ sum: 1, count: 0 }, { sum: 1, count: 2 }])).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
    expect(() => studentTQuantile(1, 3)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
  });
});

describe('oracle pruning', () => {
  test('first and stay on hand-made traces', () => {
    const nLayer = 4;
    const traces = [
      // answers 7 at layer 0, changes at 1, 7 again from 2: first stops after 1 layer, stay after 3.
      { nLayer, final: 7, checks: [{ layer: 0, top1: 7 }, { layer: 1, top1: 3 }, { layer: 2, top1: 7 }] },
      // never answers 7 before the last layer: both run all 4.
      { nLayer, final: 7, checks: [{ layer: 0, top1: 1 }, { layer: 1, top1: 2 }, { layer: 2, top1: 3 }] },
    ];
    const o = oraclePruning(traces);
    expect(o.oracleFirst).toBeCloseTo((8 - (1 + 4)) / 8, 15);
    expect(o.oracleStay).toBeCloseTo((8 - (3 + 4)) / 8, 15);
    const b = exitBounds(2, 2, 0.0625, o);
    expect(b.oracleFraction).toBeCloseTo(0.0625 / 0.125, 15);
    expect(b.idealSpeedup).toBeCloseTo(1 / (1 - 0.0625), 15);
    expect(b.agreementLower).toBeCloseTo(Math.sqrt(0.05), 12);
  });
});
