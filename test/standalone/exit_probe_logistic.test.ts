import { choleskySolve, fitLogistic, logisticObjective } from '../../lib/exit/logistic';
import { seededRandom } from '../../lib/exit/classifier';

describe('logistic regression for the hidden-state probe (lib/exit/logistic.ts)', () => {
  test('choleskySolve solves a symmetric positive definite system', () => {
    // A = [[4, 2, 0.6], [2, 5, 1], [0.6, 1, 3]], v = [1, -2, 0.5]: r = A·v.
    const a = [4, 2, 0.6, 2, 5, 1, 0.6, 1, 3];
    const v = [1, -2, 0.5];
    const r = Float64Array.from([0, 1, 2].map((i) => a[i * 3] * v[0] + a[i * 3 + 1] * v[1] + a[i * 3 + 2] * v[2]));
    choleskySolve(Float64Array.from(a), r, 3);
    r.forEach((x, i) => expect(Math.abs(x - v[i])).toBeLessThan(1e-12));
    expect(() => choleskySolve(Float64Array.from([1, 2, 2, 1]), new Float64Array(2), 2)).toThrow(/positive definite/);
  });

  test('the fit is the regularised optimum: its gradient, computed independently in float64, vanishes', () => {
    const rnd = seededRandom(7);
    const [n, d, l2] = [3000, 6, 1e-3];
    const truth = [1.5, -2, 0.5, 0, 3, -1];
    const x = new Float64Array(n * d);
    const y = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      let s = 0.3;
      for (let j = 0; j < d; j++) s += truth[j] * (x[i * d + j] = rnd() * 2 - 1);
      y[i] = rnd() < 1 / (1 + Math.exp(-s)) ? 1 : 0;
    }
    const m = fitLogistic(x, y, n, d, l2);
    expect(m.iterations).toBeLessThan(20);
    const grad = new Array<number>(d + 1).fill(0);
    for (let i = 0; i < n; i++) {
      let s = m.bias;
      for (let j = 0; j < d; j++) s += m.weights[j] * x[i * d + j];
      const e = 1 / (1 + Math.exp(-s)) - y[i];
      for (let j = 0; j < d; j++) grad[j] += (e * x[i * d + j]) / n;
      grad[d] += e / n;
    }
    for (let j = 0; j < d; j++) grad[j] += l2 * m.weights[j];
    for (const g of grad) expect(Math.abs(g)).toBeLessThan(1e-9);
    // The weights recover the generating ones within sampling error (3000 examples).
    truth.forEach((t, j) => expect(Math.abs(m.weights[j] - t)).toBeLessThan(0.35));
    // And any nearby point has a higher objective.
    for (let j = 0; j <= d; j++) {
      const w = Float64Array.from(m.weights);
      let b = m.bias;
      if (j < d) w[j] += 1e-3;
      else b += 1e-3;
      expect(logisticObjective(x, y, n, d, w, b, l2)).toBeGreaterThan(m.objective);
    }
  });

  test('separable data stay finite under the L2 penalty', () => {
    const x = Float64Array.from([-2, -1, 1, 2]);
    const y = Uint8Array.from([0, 0, 1, 1]);
    const m = fitLogistic(x, y, 4, 1, 1e-2);
    expect(Number.isFinite(m.weights[0]) && m.weights[0] > 1).toBe(true);
    expect(Math.abs(m.bias)).toBeLessThan(1e-6);
  });
});
