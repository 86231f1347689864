/**
 * The MLP form of the hidden-state probe (lib/exit/mlp.ts): it learns what a linear probe cannot, its stored
 * weights (standardisation folded in) score raw inputs as an independent float64 computation says, and the same
 * data and seed give the same weights bit for bit; the addon's matrix-vector product (what a check costs at run time)
 * gives TypeScript's bits.
 */
import { seededRandom } from '../../lib/exit/classifier';
import { fitMlp, matvecTs, MlpRows, MlpWeights } from '../../lib/exit/mlp';
import { MlpHiddenStateProbe } from '../../lib/exit/probe';
import { native } from '../../lib/bindings/native';
import { fitLogistic } from '../../lib/exit/logistic';

/** Rows of a two-layer problem no linear function separates: label = (x0 > 0) XOR (x1 > 0), flipped on layer 1. */
function xorRows(n: number, seed: number): MlpRows {
  const rnd = seededRandom(seed);
  const d = 3;
  const x = new Float64Array(n * d);
  const layer = new Int32Array(n);
  const y = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    // Off-centre, scaled inputs: the standardisation has something to fold.
    x[i * d] = 5 + 2 * (rnd() * 2 - 1);
    x[i * d + 1] = -3 + 0.5 * (rnd() * 2 - 1);
    x[i * d + 2] = rnd(); // noise
    layer[i] = i % 2;
    const xor = x[i * d] > 5 !== x[i * d + 1] > -3;
    y[i] = (layer[i] === 0 ? xor : !xor) ? 1 : 0;
  }
  return { x, layer, y };
}

/** The network's score from its stored weights, computed from scratch. */
function reference(m: MlpWeights, layer: number, x: ArrayLike<number>): number {
  let s = m.b2[layer];
  for (let u = 0; u < m.w2.length; u++) {
    let a = m.b1[layer][u];
    for (let j = 0; j < m.w1[u].length; j++) a += m.w1[u][j] * x[j];
    s += m.w2[u] * Math.tanh(a);
  }
  return s;
}

describe('the MLP probe (lib/exit/mlp.ts)', () => {
  const train = xorRows(4000, 1);
  const held = xorRows(1000, 2);
  const options = { hidden: 8, l2: 1e-5, seed: 3, learningRate: 1e-2, maxEpochs: 80, patience: 10 };

  test('learns what a linear probe cannot; its stored weights score raw inputs as an independent computation', () => {
    const m = fitMlp(train, held, 3, 2, options);
    expect(m.bestEpoch).toBeGreaterThan(0);
    let correct = 0;
    let loss = 0;
    for (let i = 0; i < held.y.length; i++) {
      const s = reference(m, held.layer[i], held.x.subarray(i * 3, i * 3 + 3));
      if (s > 0 === (held.y[i] === 1)) correct++;
      loss += Math.log1p(Math.exp(-Math.abs(s))) + Math.max(s, 0) - (held.y[i] ? s : 0);
    }
    // The held-out loss the trainer reports (on standardised inputs, before folding) is the one the folded weights give.
    expect(Math.abs(loss / held.y.length - m.heldOutLoss)).toBeLessThan(1e-9);
    expect(correct / held.y.length).toBeGreaterThan(0.95);
    // A logistic regression on the same inputs (and the layer) stays near chance.
    const d = 4;
    const lx = new Float64Array(train.y.length * d);
    for (let i = 0; i < train.y.length; i++) {
      lx.set(train.x.subarray(i * 3, i * 3 + 3), i * d);
      lx[i * d + 3] = train.layer[i];
    }
    const lin = fitLogistic(lx, train.y, train.y.length, d, 1e-4);
    let linear = 0;
    for (let i = 0; i < held.y.length; i++) {
      let s = lin.bias + lin.weights[3] * held.layer[i];
      for (let j = 0; j < 3; j++) s += lin.weights[j] * held.x[i * 3 + j];
      if (s > 0 === (held.y[i] === 1)) linear++;
    }
    expect(linear / held.y.length).toBeLessThan(0.7);
  });

  test('deterministic: the same data and seed give the same weights bit for bit, another seed others', () => {
    const short = { ...options, maxEpochs: 5 };
    const a = fitMlp(train, held, 3, 2, short);
    const b = fitMlp(train, held, 3, 2, short);
    expect(b).toEqual(a);
    const c = fitMlp(train, held, 3, 2, { ...short, seed: 4 });
    expect(Array.from(c.w2)).not.toEqual(Array.from(a.w2));
  });

  test('rejects an empty training set', () => {
    expect(() => fitMlp({ x: new Float64Array(0), layer: new Int32Array(0), y: new Uint8Array(0) }, held, 3, 2, options)).toThrow(/no rows/);
  });
});

describe("the probe's matrix-vector product: the addon's matvecF64 against TypeScript's dot4 order", () => {
  const rnd = seededRandom(7);
  const values = (n: number) => Float64Array.from({ length: n }, () => (rnd() * 2 - 1) * 10 ** Math.floor(rnd() * 6 - 3));

  test.each([1, 3, 4, 5, 128, 131])('bit for bit at d = %i (the tail past the multiple of 4 included)', (d) => {
    const rows = 9;
    const w = values(rows * d);
    const x = values(d);
    const fromAddon = new Float64Array(rows);
    const fromTs = new Float64Array(rows);
    native().matvecF64(w, x, fromAddon);
    matvecTs(w, x, fromTs);
    for (let r = 0; r < rows; r++) {
      expect(Object.is(fromAddon[r], fromTs[r])).toBe(true);
      // and it is the dot product (to rounding): an independent sum in long order
      let exact = 0;
      for (let j = 0; j < d; j++) exact += w[r * d + j] * x[j];
      expect(fromTs[r]).toBeCloseTo(exact, 6);
    }
  });

  test('an MLP probe scores the same bits through either; lengths that disagree are an INVALID_OPTION error', () => {
    const nEmbd = 13;
    const hidden = 6;
    const m = { w1: Array.from({ length: hidden }, () => values(nEmbd + 3)), b1: [values(hidden), values(hidden)], w2: values(hidden), b2: values(2) };
    const viaAddon = new MlpHiddenStateProbe(nEmbd, m);
    const viaTs = new MlpHiddenStateProbe(nEmbd, m, matvecTs);
    for (let k = 0; k < 20; k++) {
      const h = values(nEmbd);
      const lens = { p1: rnd(), gap: rnd() / 2, entropy: rnd() * 3 };
      for (const layer of [0, 1]) expect(Object.is(viaAddon.score(layer, h, lens), viaTs.score(layer, h, lens))).toBe(true);
    }
    expect(() => native().matvecF64(new Float64Array(10), new Float64Array(3), new Float64Array(3))).toThrow(/w has 10 values, expected out.length \(3\) x x.length \(3\)/);
    expect(() => native().matvecF64(new Float64Array(0), new Float64Array(0), new Float64Array(0))).toThrow(/matvecF64/);
    expect(() => native().matvecF64(new Float32Array(9) as unknown as Float64Array, new Float64Array(3), new Float64Array(3))).toThrow(/Float64Array/);
  });
});
