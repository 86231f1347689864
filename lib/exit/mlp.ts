/**
 * A small multilayer perceptron for the hidden-state probe (probe.ts): one hidden layer of tanh units shared by
 * every checked layer, with a per-layer bias on the hidden units and on the output (what a one-hot of the layer
 * among the inputs would give):
 *   a = W1·z + b1[layer],  score = w2·tanh(a) + b2[layer]
 * over standardised inputs z (the standardisation is folded into W1 and b1 when training ends, so the stored
 * weights apply to the raw inputs). Trained by Adam on the mean log-loss + (l2/2)·(‖W1‖² + ‖w2‖²) in float64,
 * minibatches drawn by a seeded shuffle, weights initialised from the seed (Glorot uniform): the same data and seed
 * give the same weights bit for bit. Early stopping on held-out rows (the caller passes a fifth of the FIT
 * documents): the weights of the epoch with the lowest held-out log-loss are kept.
 *
 * Why a short implementation rather than a library: the probe must be float64, deterministic from a seed and
 * dependency-free at run time (it scores in the TypeScript layer loop); npm's maintained options are
 * @tensorflow/tfjs (float32, a native or WebGL backend, non-deterministic reductions) and brain.js (float32,
 * GPU dependencies), and the model here is one matrix-vector product.
 */
import { seededRandom } from './classifier';

export interface MlpOptions {
  /** Hidden units. */
  hidden: number;
  /** L2 penalty on W1 and w2 (standardised inputs; the objective is per row). */
  l2: number;
  seed: number;
  /** Upper bound on epochs; early stopping usually ends sooner. */
  maxEpochs?: number;
  /** Epochs without a better held-out loss before stopping. */
  patience?: number;
  learningRate?: number;
  batchSize?: number;
}

/** Rows: x [n][d] row-major, the check's layer (0-based), the label. */
export interface MlpRows {
  x: Float64Array;
  layer: Int32Array;
  y: Uint8Array;
}

/** The trained network on raw inputs: w1 [hidden][d], b1 [nLayer][hidden], w2 [hidden], b2 [nLayer]. */
export interface MlpWeights {
  w1: Float64Array[];
  b1: Float64Array[];
  w2: Float64Array;
  b2: Float64Array;
}

export interface MlpFit extends MlpWeights {
  /** Epochs run, and the one whose weights were kept (1-based). */
  epochs: number;
  bestEpoch: number;
  heldOutLoss: number;
}

const softplus = (s: number) => (s > 0 ? s + Math.log1p(Math.exp(-s)) : Math.log1p(Math.exp(s)));
const sigmoid = (s: number) => (s >= 0 ? 1 / (1 + Math.exp(-s)) : Math.exp(s) / (1 + Math.exp(s)));

/** The network flattened for scoring: w1 [hidden × d] row-major, b1 [nLayer × hidden], w2 [hidden], b2 [nLayer]. */
export interface FlatMlp {
  d: number;
  hidden: number;
  w1: Float64Array;
  b1: Float64Array;
  w2: Float64Array;
  b2: Float64Array;
}

export function flattenMlp(m: { w1: ArrayLike<number>[]; b1: ArrayLike<number>[]; w2: ArrayLike<number>; b2: ArrayLike<number> }): FlatMlp {
  const hidden = m.w2.length;
  const d = m.w1[0].length;
  const w1 = new Float64Array(hidden * d);
  m.w1.forEach((row, u) => w1.set(row, u * d));
  const b1 = new Float64Array(m.b1.length * hidden);
  m.b1.forEach((row, l) => b1.set(row, l * hidden));
  return { d, hidden, w1, b1, w2: Float64Array.from(m.w2), b2: Float64Array.from(m.b2) };
}

/**
 * w[wo .. wo + d) · x[0 .. d) in four lanes (lane k sums the j ≡ k mod 4 below the multiple of 4 in order, the rest
 * goes into lane 0), then (l0 + l1) + (l2 + l3). The native matvecF64 (lib/bindings/native.ts) sums in this order:
 * the two agree bit for bit, so the probe decides the same whichever computed it.
 */
export function dot4(w: Float64Array, wo: number, x: Float64Array, d: number): number {
  let l0 = 0;
  let l1 = 0;
  let l2 = 0;
  let l3 = 0;
  const d4 = d - (d % 4);
  let j = 0;
  for (; j < d4; j += 4) {
    l0 += w[wo + j] * x[j];
    l1 += w[wo + j + 1] * x[j + 1];
    l2 += w[wo + j + 2] * x[j + 2];
    l3 += w[wo + j + 3] * x[j + 3];
  }
  for (; j < d; j++) l0 += w[wo + j] * x[j];
  return l0 + l1 + (l2 + l3);
}

/** out[r] = w[r·d ..] · x for every row (the shape of the native matvecF64). */
export type MatvecF64 = (w: Float64Array, x: Float64Array, out: Float64Array) => void;

/** The TypeScript matvec, in dot4's order. */
export const matvecTs: MatvecF64 = (w, x, out) => {
  for (let r = 0, wo = 0; r < out.length; r++, wo += x.length) out[r] = dot4(w, wo, x, x.length);
};

/**
 * The network's score for one row (raw inputs x, length d) at `layer`. `pre` (hidden values) is scratch for the
 * hidden pre-activations W1·x, computed by `matvec` (the native one at run time: it is the cost of a check) or in
 * TypeScript; either gives the same bits. Allocation-free: it runs between layers.
 */
export function mlpScore(m: FlatMlp, layer: number, x: Float64Array, pre: Float64Array, matvec: MatvecF64 = matvecTs): number {
  const { hidden, w1, b1, w2 } = m;
  matvec(w1, x, pre);
  let s = m.b2[layer];
  const o1 = layer * hidden;
  for (let u = 0; u < hidden; u++) s += w2[u] * Math.tanh(pre[u] + b1[o1 + u]);
  return s;
}

/** Adam's state for one parameter block. */
class Adam {
  readonly m: Float64Array;
  readonly v: Float64Array;
  constructor(size: number) {
    this.m = new Float64Array(size);
    this.v = new Float64Array(size);
  }
  step(p: Float64Array, g: Float64Array, lr: number, t: number): void {
    const [b1, b2, eps] = [0.9, 0.999, 1e-8];
    const c1 = 1 - b1 ** t;
    const c2 = 1 - b2 ** t;
    for (let i = 0; i < p.length; i++) {
      this.m[i] = b1 * this.m[i] + (1 - b1) * g[i];
      this.v[i] = b2 * this.v[i] + (1 - b2) * g[i] * g[i];
      p[i] -= (lr * (this.m[i] / c1)) / (Math.sqrt(this.v[i] / c2) + eps);
    }
  }
}

/**
 * Fits the network on `train` (d inputs per row, layers 0..nLayer-1), stopping early on `heldOut`'s log-loss.
 * Inputs are standardised with `train`'s per-column mean and deviation, folded back into the returned weights.
 */
export function fitMlp(train: MlpRows, heldOut: MlpRows, d: number, nLayer: number, o: MlpOptions): MlpFit {
  const H = o.hidden;
  const maxEpochs = o.maxEpochs ?? 60;
  const patience = o.patience ?? 4;
  const lr = o.learningRate ?? 1e-3;
  const batch = o.batchSize ?? 256;
  const n = train.y.length;
  if (n === 0 || d < 1 || H < 1) throw new Error('fitMlp: no rows, inputs or hidden units');
  // Standardisation from the training rows (a constant column keeps deviation 1).
  const mean = new Float64Array(d);
  const std = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mean[j] += train.x[i * d + j] / n;
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) std[j] += (train.x[i * d + j] - mean[j]) ** 2 / n;
  for (let j = 0; j < d; j++) std[j] = std[j] > 1e-24 ? Math.sqrt(std[j]) : 1;
  const standardised = (r: MlpRows) => {
    const z = new Float64Array(r.x.length);
    for (let i = 0; i < r.y.length; i++) for (let j = 0; j < d; j++) z[i * d + j] = (r.x[i * d + j] - mean[j]) / std[j];
    return z;
  };
  const zTrain = standardised(train);
  const zHeld = standardised(heldOut);

  // Parameters, flat: W1 [H][d], B1 [nLayer][H], W2 [H], B2 [nLayer]. Glorot uniform for the weights, biases 0.
  const rand = seededRandom(o.seed);
  const W1 = new Float64Array(H * d);
  const W2 = new Float64Array(H);
  const limit1 = Math.sqrt(6 / (d + H));
  for (let i = 0; i < W1.length; i++) W1[i] = (rand() * 2 - 1) * limit1;
  const limit2 = Math.sqrt(6 / (H + 1));
  for (let i = 0; i < H; i++) W2[i] = (rand() * 2 - 1) * limit2;
  const B1 = new Float64Array(nLayer * H);
  const B2 = new Float64Array(nLayer);
  const params = [W1, B1, W2, B2];
  const grads = params.map((p) => new Float64Array(p.length));
  const [gW1, gB1, gW2, gB2] = grads;
  const adam = params.map((p) => new Adam(p.length));

  const act = new Float64Array(H);
  const forward = (z: Float64Array, i: number, layer: number): number => {
    let s = B2[layer];
    const o1 = layer * H;
    for (let u = 0; u < H; u++) {
      let v = B1[o1 + u];
      const ow = u * d;
      const oz = i * d;
      for (let j = 0; j < d; j++) v += W1[ow + j] * z[oz + j];
      const h = Math.tanh(v);
      act[u] = h;
      s += W2[u] * h;
    }
    return s;
  };
  const heldLoss = (): number => {
    let loss = 0;
    for (let i = 0; i < heldOut.y.length; i++) {
      const s = forward(zHeld, i, heldOut.layer[i]);
      loss += softplus(s) - (heldOut.y[i] ? s : 0);
    }
    return loss / Math.max(1, heldOut.y.length);
  };

  const order = Int32Array.from({ length: n }, (_, i) => i);
  const best = params.map((p) => Float64Array.from(p));
  let bestLoss = heldLoss();
  let bestEpoch = 0;
  let t = 0;
  let epoch = 0;
  for (epoch = 1; epoch <= maxEpochs; epoch++) {
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      const tmp = order[i];
      order[i] = order[j];
      order[j] = tmp;
    }
    for (let start = 0; start < n; start += batch) {
      const end = Math.min(n, start + batch);
      const m = end - start;
      for (const g of grads) g.fill(0);
      for (let k = start; k < end; k++) {
        const i = order[k];
        const layer = train.layer[i];
        const s = forward(zTrain, i, layer);
        const e = (sigmoid(s) - (train.y[i] ? 1 : 0)) / m;
        gB2[layer] += e;
        const o1 = layer * H;
        const oz = i * d;
        for (let u = 0; u < H; u++) {
          const h = act[u];
          gW2[u] += e * h;
          const da = e * W2[u] * (1 - h * h);
          gB1[o1 + u] += da;
          const ow = u * d;
          for (let j = 0; j < d; j++) gW1[ow + j] += da * zTrain[oz + j];
        }
      }
      for (let i = 0; i < W1.length; i++) gW1[i] += o.l2 * W1[i];
      for (let i = 0; i < H; i++) gW2[i] += o.l2 * W2[i];
      t++;
      params.forEach((p, q) => adam[q].step(p, grads[q], lr, t));
    }
    const loss = heldLoss();
    if (loss < bestLoss) {
      bestLoss = loss;
      bestEpoch = epoch;
      params.forEach((p, q) => best[q].set(p));
    } else if (epoch - bestEpoch >= patience) break;
  }
  const [bW1, bB1, bW2, bB2] = best;
  // Fold the standardisation into the first layer: W1·((x − mean)/std) = (W1/std)·x − W1·(mean/std).
  const w1 = Array.from({ length: H }, (_, u) => {
    const row = new Float64Array(d);
    for (let j = 0; j < d; j++) row[j] = bW1[u * d + j] / std[j];
    return row;
  });
  const shift = Array.from({ length: H }, (_, u) => {
    let v = 0;
    for (let j = 0; j < d; j++) v += (bW1[u * d + j] * mean[j]) / std[j];
    return v;
  });
  const b1 = Array.from({ length: nLayer }, (_, l) => Float64Array.from({ length: H }, (_, u) => bB1[l * H + u] - shift[u]));
  return { w1, b1, w2: Float64Array.from(bW2), b2: Float64Array.from(bB2), epochs: Math.min(epoch, maxEpochs), bestEpoch, heldOutLoss: bestLoss };
}
