/**
 * Gradient-boosted trees for the exit ablation (bench/exit_ablation.ts): does a nonlinear model over the exit
 * features prune more than the linear SVM at the same calibrated agreement? Kept in bench/ because measurement
 * decides whether it enters the runtime (docs/exit_evidence.md).
 *
 * Why a short implementation rather than a library: npm has no maintained gradient-boosting trainer that runs in
 * Node without native or WebAssembly builds (ml-xgboost: a WebAssembly port last published years ago; ml-cart /
 * ml-random-forest: exact-split CART, no boosting). This is the textbook algorithm (Friedman 2001 with XGBoost's
 * second-order leaf values): logistic loss, each round one tree of depth <= `depth` fitted to the gradient g = p − y
 * and hessian h = p(1 − p) of the current margin, splits chosen on `bins` quantile cut points per feature by the gain
 * G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ), leaf value −G/(H+λ) times the learning rate.
 */
import { ExitClassifier, FeatureName, SerializedClassifier } from '../lib/exit/classifier';

export interface GbtOptions {
  rounds?: number;
  depth?: number;
  learningRate?: number;
  bins?: number;
  lambda?: number;
  minLeaf?: number;
}

/** One tree as flat arrays: node i splits on feature[i] (x < cut[i]: left[i], else right[i]); feature[i] = −1: a leaf. */
interface Tree {
  feature: Int32Array;
  cut: Float64Array;
  left: Int32Array;
  right: Int32Array;
  value: Float64Array;
}

export class GradientBoostedTrees implements ExitClassifier {
  readonly kind = 'svm' as const; // scored like any classifier; not serialized (bench only)
  constructor(
    readonly features: FeatureName[],
    private readonly base: number,
    private readonly trees: Tree[],
  ) {}

  begin(): void {}

  score(x: ArrayLike<number>): number {
    let s = this.base;
    for (const t of this.trees) {
      let i = 0;
      while (t.feature[i] >= 0) i = x[t.feature[i]] < t.cut[i] ? t.left[i] : t.right[i];
      s += t.value[i];
    }
    return s;
  }

  toJSON(): SerializedClassifier {
    throw new Error('GradientBoostedTrees is a bench-only classifier: not serialized');
  }
}

export function trainGbt(X: number[][], y: (0 | 1)[], features: FeatureName[], o: GbtOptions = {}): GradientBoostedTrees {
  const rounds = o.rounds ?? 100;
  const depth = o.depth ?? 3;
  const lr = o.learningRate ?? 0.1;
  const nBins = o.bins ?? 32;
  const lambda = o.lambda ?? 1;
  const minLeaf = o.minLeaf ?? 20;
  const n = X.length;
  const d = features.length;
  // Quantile cut points per feature; bin b of feature j holds cuts[j][b−1] <= x < cuts[j][b].
  const cuts: number[][] = [];
  const binned = new Uint8Array(n * d);
  for (let j = 0; j < d; j++) {
    const sorted = Float64Array.from(X, (row) => row[j]).sort();
    const c = new Set<number>();
    for (let b = 1; b < nBins; b++) c.add(sorted[Math.floor((b * n) / nBins)]);
    const list = [...c].sort((a, b) => a - b);
    cuts.push(list);
    for (let i = 0; i < n; i++) {
      let lo = 0;
      let hi = list.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (X[i][j] < list[mid]) hi = mid;
        else lo = mid + 1;
      }
      binned[i * d + j] = lo;
    }
  }
  let positives = 0;
  for (const v of y) positives += v;
  const prior = Math.min(Math.max(positives / n, 1e-6), 1 - 1e-6);
  const base = Math.log(prior / (1 - prior));
  const margin = new Float64Array(n).fill(base);
  const g = new Float64Array(n);
  const h = new Float64Array(n);
  const trees: Tree[] = [];
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < n; i++) {
      const p = 1 / (1 + Math.exp(-margin[i]));
      g[i] = p - y[i];
      h[i] = Math.max(p * (1 - p), 1e-12);
    }
    const feature: number[] = [];
    const cut: number[] = [];
    const left: number[] = [];
    const right: number[] = [];
    const value: number[] = [];
    const grow = (rows: Int32Array, level: number): number => {
      const id = feature.length;
      feature.push(-1), cut.push(0), left.push(-1), right.push(-1), value.push(0);
      let G = 0;
      let H = 0;
      for (const i of rows) (G += g[i]), (H += h[i]);
      value[id] = (-G / (H + lambda)) * lr;
      if (level >= depth || rows.length < 2 * minLeaf) return id;
      let best = { gain: 1e-9, j: -1, bin: 0 };
      const parent = (G * G) / (H + lambda);
      for (let j = 0; j < d; j++) {
        const nb = cuts[j].length + 1;
        const hg = new Float64Array(nb);
        const hh = new Float64Array(nb);
        const hc = new Int32Array(nb);
        for (const i of rows) {
          const b = binned[i * d + j];
          hg[b] += g[i];
          hh[b] += h[i];
          hc[b]++;
        }
        let gl = 0;
        let hl = 0;
        let cl = 0;
        for (let b = 0; b < nb - 1; b++) {
          gl += hg[b];
          hl += hh[b];
          cl += hc[b];
          if (cl < minLeaf || rows.length - cl < minLeaf) continue;
          const gain = (gl * gl) / (hl + lambda) + ((G - gl) * (G - gl)) / (H - hl + lambda) - parent;
          if (gain > best.gain) best = { gain, j, bin: b };
        }
      }
      if (best.j < 0) return id;
      const threshold = cuts[best.j][best.bin]; // bins <= best.bin: x < threshold
      const l: number[] = [];
      const r: number[] = [];
      for (const i of rows) (binned[i * d + best.j] <= best.bin ? l : r).push(i);
      feature[id] = best.j;
      cut[id] = threshold;
      left[id] = grow(Int32Array.from(l), level + 1);
      right[id] = grow(Int32Array.from(r), level + 1);
      return id;
    };
    grow(Int32Array.from({ length: n }, (_, i) => i), 0);
    const tree: Tree = { feature: Int32Array.from(feature), cut: Float64Array.from(cut), left: Int32Array.from(left), right: Int32Array.from(right), value: Float64Array.from(value) };
    trees.push(tree);
    for (let i = 0; i < n; i++) {
      let k = 0;
      while (tree.feature[k] >= 0) k = X[i][tree.feature[k]] < tree.cut[k] ? tree.left[k] : tree.right[k];
      margin[i] += tree.value[k];
    }
  }
  return new GradientBoostedTrees(features, base, trees);
}
