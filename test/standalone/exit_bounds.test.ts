import { clopperPearsonLower, exitBounds, logGamma, oraclePruning, regularizedIncompleteBeta } from '../../lib/exit/bounds';

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
