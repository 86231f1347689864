/**
 * The hidden-state probe: a learned summary of the decision row's hidden state, the exit feature 'probe'.
 *
 * Its inputs at a check: the residual stream h after the layer, scaled to unit RMS (h / sqrt(mean(h²)): what the
 * final RMSNorm computes before its per-dimension gain, which the probe's weights absorb), followed by the lens
 * statistics p1, gap and entropy of the same check: x = [h / rms(h), p1, gap, entropy]. Its output: the log-odds
 * that stopping at this check gives the full-depth answer (the classifier's label). Two forms (ProbeForm):
 *  - 'linear': per checked layer, a logistic regression, probe = weights[layer] · x + bias[layer] (HiddenStateProbe),
 *    fitted by L2-regularised logistic regression (logistic.ts) whose penalty is chosen on a split of the fit part's
 *    documents; a check costs one dot product of nEmbd + 3;
 *  - 'mlp': one hidden layer of tanh units shared by the layers, with per-layer biases (MlpHiddenStateProbe, mlp.ts),
 *    probe = outputWeights · tanh(hiddenWeights · x + hiddenBias[layer]) + outputBias[layer], trained by Adam with
 *    early stopping on a fifth of the fit part's documents; a check costs a (hidden × (nEmbd + 3)) matrix-vector
 *    product (64 × 131 on the bundled models).
 * Both are fitted on the fit part only (train.ts) and add one read of the row's hidden state (nEmbd floats) per check.
 *
 * The probe travels with the classifier that reads it (withProbe; serialized as the classifier's `probe`), so every
 * place that builds a classifier's features (policy.ts, train.ts, the task sweeps) has it at hand.
 * Measured in bench/exit_probe.ts (docs/exit_evidence.md).
 */
import { AdaInferError } from '../errors';
import { ExitClassifier, jsonError } from './classifier';
import type { Trace } from './collect';
import { splitByDocument } from './data';
import { fitLogistic } from './logistic';
import { fitMlp, FlatMlp, flattenMlp, MatvecF64, matvecTs, MlpRows, mlpScore } from './mlp';
import { native } from '../bindings/native';

/** The lens statistics appended to the hidden state, in order. */
export const PROBE_LENS_INPUTS = ['p1', 'gap', 'entropy'] as const;

/** The linear probe's weights on the raw inputs (standardisation folded in): [nLayer][nEmbd + 3] and [nLayer]. */
export interface SerializedLinearProbe {
  nEmbd: number;
  weights: number[][];
  bias: number[];
}

/**
 * The MLP probe on the raw inputs (standardisation folded in): hiddenWeights [hidden][nEmbd + 3], hiddenBias
 * [nLayer][hidden], outputWeights [hidden], outputBias [nLayer]. Exit files holding one are format adainfer.exit/2.
 */
export interface SerializedMlpProbe {
  kind: 'mlp';
  nEmbd: number;
  hiddenWeights: number[][];
  hiddenBias: number[][];
  outputWeights: number[];
  outputBias: number[];
}

export type SerializedProbe = SerializedLinearProbe | SerializedMlpProbe;

/** What a probe is: a per-layer logistic regression, or a one-hidden-layer network shared by the layers. */
export type ProbeForm = 'linear' | 'mlp';
export const PROBE_FORMS: readonly ProbeForm[] = ['linear', 'mlp'];

/** A fitted probe, either form: its logit at a check, and its serialized form. */
export interface ExitProbe {
  readonly form: ProbeForm;
  readonly nEmbd: number;
  /** Layers the probe has weights for (the model's layer count). */
  readonly nLayer: number;
  /** The probe's logit at a check after layer `layer` (0-based), from the row's hidden state and lens statistics. */
  score(layer: number, hidden: ArrayLike<number>, r: ProbeLensInputs): number;
  toJSON(): SerializedProbe;
}

/** The lens statistics the probe reads beside the hidden state. */
export interface ProbeLensInputs {
  p1: number;
  gap: number;
  entropy: number;
}

/** Writes the probe's inputs of one check into out (nEmbd + 3). */
export function probeInputs(hidden: ArrayLike<number>, r: ProbeLensInputs, nEmbd: number, out: Float64Array): void {
  let ss = 0;
  for (let j = 0; j < nEmbd; j++) ss += hidden[j] * hidden[j];
  const inv = ss > 0 ? 1 / Math.sqrt(ss / nEmbd) : 0;
  for (let j = 0; j < nEmbd; j++) out[j] = hidden[j] * inv;
  out[nEmbd] = r.p1;
  out[nEmbd + 1] = r.gap;
  out[nEmbd + 2] = r.entropy;
}

/** The inputs' checks shared by both forms: the layer exists, the hidden state has nEmbd values. */
function checkProbeCall(p: ExitProbe, layer: number, hidden: ArrayLike<number>): void {
  if (layer >= p.nLayer) throw new AdaInferError('EXIT_FILE', `the hidden-state probe has ${p.nLayer} layers, asked for layer ${layer}`);
  if (hidden.length !== p.nEmbd) throw new AdaInferError('EXIT_FILE', `the hidden-state probe reads ${p.nEmbd} values, this model's hidden state has ${hidden.length}`);
}

export class HiddenStateProbe implements ExitProbe {
  readonly form = 'linear' as const;
  private readonly w: Float64Array[];
  private readonly b: Float64Array;
  private readonly scratch: Float64Array;

  constructor(
    readonly nEmbd: number,
    weights: ArrayLike<number>[],
    bias: ArrayLike<number>,
  ) {
    this.w = weights.map((row) => Float64Array.from(row));
    this.b = Float64Array.from(bias);
    this.scratch = new Float64Array(nEmbd + PROBE_LENS_INPUTS.length);
  }

  /** Layers the probe has weights for (the model's layer count). */
  get nLayer(): number {
    return this.b.length;
  }

  /** The probe's logit at a check after layer `layer` (0-based), from the row's hidden state and lens statistics. */
  score(layer: number, hidden: ArrayLike<number>, r: ProbeLensInputs): number {
    checkProbeCall(this, layer, hidden);
    const x = this.scratch;
    probeInputs(hidden, r, this.nEmbd, x);
    const w = this.w[layer];
    let s = this.b[layer];
    for (let j = 0; j < x.length; j++) s += w[j] * x[j];
    return s;
  }

  toJSON(): SerializedLinearProbe {
    return { nEmbd: this.nEmbd, weights: this.w.map((row) => Array.from(row)), bias: Array.from(this.b) };
  }

  /** From toJSON()'s form (already checked against PROBE_SCHEMA); the lengths the schema cannot check. `path`: its field. */
  static fromJSON(json: SerializedLinearProbe, path: string): HiddenStateProbe {
    const width = json.nEmbd + PROBE_LENS_INPUTS.length;
    if (json.weights.length !== json.bias.length) throw jsonError(`${path}.weights has ${json.weights.length} rows, ${path}.bias ${json.bias.length}: one per layer`);
    json.weights.forEach((row, i) => {
      if (row.length !== width) throw jsonError(`${path}.weights[${i}] has ${row.length} entries, expected ${width} (nEmbd + p1, gap, entropy)`);
    });
    return new HiddenStateProbe(json.nEmbd, json.weights, json.bias);
  }
}

/**
 * The probe's matrix-vector product: the addon's (a check on the bundled 128-wide models cost ~18 µs in
 * TypeScript, more than a decode layer) when the loaded addon has it (an older CUDA package build may not), else
 * TypeScript's; both sum in mlp.ts dot4's order, so the probe's decisions are the same bits either way.
 */
function probeMatvec(): MatvecF64 {
  const addon = native();
  return typeof addon.matvecF64 === 'function' ? (w, x, out) => addon.matvecF64(w, x, out) : matvecTs;
}

export class MlpHiddenStateProbe implements ExitProbe {
  readonly form = 'mlp' as const;
  private readonly m: FlatMlp;
  private readonly inputs: Float64Array;
  private readonly pre: Float64Array;
  private readonly matvec: MatvecF64;

  /** `matvec`: the matrix-vector product to score with (default: the addon's, else TypeScript's; the same bits). */
  constructor(
    readonly nEmbd: number,
    m: { w1: ArrayLike<number>[]; b1: ArrayLike<number>[]; w2: ArrayLike<number>; b2: ArrayLike<number> },
    matvec: MatvecF64 = probeMatvec(),
  ) {
    this.m = flattenMlp(m);
    this.inputs = new Float64Array(nEmbd + PROBE_LENS_INPUTS.length);
    this.pre = new Float64Array(this.m.hidden);
    this.matvec = matvec;
  }

  get nLayer(): number {
    return this.m.b2.length;
  }

  /** Hidden units. */
  get hidden(): number {
    return this.m.hidden;
  }

  score(layer: number, hidden: ArrayLike<number>, r: ProbeLensInputs): number {
    checkProbeCall(this, layer, hidden);
    probeInputs(hidden, r, this.nEmbd, this.inputs);
    return mlpScore(this.m, layer, this.inputs, this.pre, this.matvec);
  }

  toJSON(): SerializedMlpProbe {
    const { d, hidden, w1, b1, w2, b2 } = this.m;
    return {
      kind: 'mlp',
      nEmbd: this.nEmbd,
      hiddenWeights: Array.from({ length: hidden }, (_, u) => Array.from(w1.subarray(u * d, (u + 1) * d))),
      hiddenBias: Array.from({ length: b2.length }, (_, l) => Array.from(b1.subarray(l * hidden, (l + 1) * hidden))),
      outputWeights: Array.from(w2),
      outputBias: Array.from(b2),
    };
  }

  /** From toJSON()'s form (already checked against the schema); the lengths the schema cannot check. */
  static fromJSON(json: SerializedMlpProbe, path: string): MlpHiddenStateProbe {
    const width = json.nEmbd + PROBE_LENS_INPUTS.length;
    const hidden = json.outputWeights.length;
    if (json.hiddenWeights.length !== hidden) throw jsonError(`${path}.hiddenWeights has ${json.hiddenWeights.length} rows, ${path}.outputWeights ${hidden}: one per hidden unit`);
    json.hiddenWeights.forEach((row, i) => {
      if (row.length !== width) throw jsonError(`${path}.hiddenWeights[${i}] has ${row.length} entries, expected ${width} (nEmbd + p1, gap, entropy)`);
    });
    if (json.hiddenBias.length !== json.outputBias.length) throw jsonError(`${path}.hiddenBias has ${json.hiddenBias.length} rows, ${path}.outputBias ${json.outputBias.length}: one per layer`);
    json.hiddenBias.forEach((row, i) => {
      if (row.length !== hidden) throw jsonError(`${path}.hiddenBias[${i}] has ${row.length} entries, expected ${hidden} (one per hidden unit)`);
    });
    return new MlpHiddenStateProbe(json.nEmbd, { w1: json.hiddenWeights, b1: json.hiddenBias, w2: json.outputWeights, b2: json.outputBias });
  }
}

/** A serialized probe of either form (checked against the schema), with the lengths the schema cannot check. */
export function probeFromJSON(json: SerializedProbe, path: string): ExitProbe {
  return 'kind' in json ? MlpHiddenStateProbe.fromJSON(json, path) : HiddenStateProbe.fromJSON(json, path);
}

/** `c` with `probe` attached: the same decisions, and toJSON() carries the probe. */
export function withProbe(c: ExitClassifier, probe: ExitProbe): ExitClassifier {
  return {
    kind: c.kind,
    features: c.features,
    signThreshold: c.signThreshold,
    probe,
    begin: () => c.begin(),
    score: (x) => c.score(x),
    toJSON: () => ({ ...c.toJSON(), probe: probe.toJSON() }),
  };
}

/**
 * Per-layer logistic regressions over rows x ([n][d]) at layers `layer` with labels y, each on its layer's rows
 * standardised per column (then folded back into the weights); a layer with one class only gets the constant
 * log-odds of its (smoothed) rate, one without rows zero weights.
 */
export function fitPerLayerLogistic(x: Float64Array, d: number, layer: Int32Array, y: Uint8Array, nLayer: number, l2: number): { weights: Float64Array[]; bias: number[] } {
  const weights = Array.from({ length: nLayer }, () => new Float64Array(d));
  const bias = new Array<number>(nLayer).fill(0);
  for (let l = 0; l < nLayer; l++) {
    const rows: number[] = [];
    for (let i = 0; i < layer.length; i++) if (layer[i] === l) rows.push(i);
    const n = rows.length;
    if (n === 0) continue;
    const z = new Float64Array(n * d);
    const yl = new Uint8Array(n);
    rows.forEach((r, i) => (z.set(x.subarray(r * d, (r + 1) * d), i * d), (yl[i] = y[r])));
    const positives = yl.reduce((a, v) => a + v, 0);
    if (positives === 0 || positives === n) {
      const p = (positives + 0.5) / (n + 1);
      bias[l] = Math.log(p / (1 - p));
      continue;
    }
    const mean = new Float64Array(d);
    const std = new Float64Array(d);
    for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mean[j] += z[i * d + j] / n;
    for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) std[j] += (z[i * d + j] - mean[j]) ** 2 / n;
    for (let j = 0; j < d; j++) std[j] = std[j] > 1e-24 ? Math.sqrt(std[j]) : 1;
    for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) z[i * d + j] = (z[i * d + j] - mean[j]) / std[j];
    const m = fitLogistic(z, yl, n, d, l2);
    let b = m.bias;
    for (let j = 0; j < d; j++) {
      weights[l][j] = m.weights[j] / std[j];
      b -= (m.weights[j] * mean[j]) / std[j];
    }
    bias[l] = b;
  }
  return { weights, bias };
}

/** The L2 penalties tried for the linear probe (on standardised inputs, objective averaged per row). */
export const PROBE_L2_GRID = [1e-4, 1e-3, 1e-2, 1e-1];

/** The MLP probe's shape and penalty (mlp.ts; measured in bench/exit_probe.ts, docs/exit_evidence.md). */
export const MLP_PROBE = { hidden: 64, l2: 1e-4 };

/**
 * Fits the probe on `traces` (their checks must carry the hidden state: collected with the 'probe' feature),
 * labelled by whether a check's top-1 is `target(t)`. 'linear': the penalty of PROBE_L2_GRID with the lowest
 * log-loss on a seeded fifth of the traces' documents when fitted on the rest, then refitted on all of them.
 * 'mlp': trained on four fifths of the documents, early-stopped on the seeded fifth (MLP_PROBE).
 */
export function trainHiddenStateProbe(traces: Trace[], target: (t: Trace) => number | undefined, seed: number, form: ProbeForm = 'linear'): ExitProbe {
  const nLayer = traces[0].nLayer;
  const first = traces.find((t) => t.checks.length > 0)?.checks[0];
  if (!first?.hidden) throw new AdaInferError('DATA_FILE', "the 'probe' feature needs traces collected with it (their checks carry the hidden state)");
  const nEmbd = first.hidden.length;
  const d = nEmbd + PROBE_LENS_INPUTS.length;
  const rowsOf = (ts: Trace[]): MlpRows => {
    const n = ts.reduce((a, t) => a + t.checks.length, 0);
    const x = new Float64Array(n * d);
    const layer = new Int32Array(n);
    const y = new Uint8Array(n);
    let k = 0;
    for (const t of ts)
      for (const c of t.checks) {
        if (!c.hidden || c.hidden.length !== nEmbd) throw new AdaInferError('DATA_FILE', "the 'probe' feature needs the hidden state of every check");
        probeInputs(c.hidden, c, nEmbd, x.subarray(k * d, (k + 1) * d));
        layer[k] = c.layer;
        y[k] = c.top1 === target(t) ? 1 : 0;
        k++;
      }
    return { x, layer, y };
  };
  const severalDocuments = new Set(traces.map((t) => t.doc)).size >= 2;
  if (form === 'mlp') {
    if (!severalDocuments) throw new AdaInferError('DATA_FILE', 'the MLP probe stops early on a fifth of the fit documents: it needs at least 2');
    const [inner, held] = splitByDocument(traces, 0.8, seed);
    const m = fitMlp(rowsOf(inner), rowsOf(held), d, nLayer, { ...MLP_PROBE, seed });
    return new MlpHiddenStateProbe(nEmbd, m);
  }
  let l2 = PROBE_L2_GRID[PROBE_L2_GRID.length - 1];
  if (severalDocuments) {
    const [inner, held] = splitByDocument(traces, 0.8, seed);
    const [a, h] = [rowsOf(inner), rowsOf(held)];
    let best = Infinity;
    for (const candidate of PROBE_L2_GRID) {
      const fit = fitPerLayerLogistic(a.x, d, a.layer, a.y, nLayer, candidate);
      let loss = 0;
      for (let i = 0; i < h.y.length; i++) {
        const w = fit.weights[h.layer[i]];
        let s = fit.bias[h.layer[i]];
        for (let j = 0; j < d; j++) s += w[j] * h.x[i * d + j];
        loss += (s > 0 ? s + Math.log1p(Math.exp(-s)) : Math.log1p(Math.exp(s))) - (h.y[i] ? s : 0);
      }
      if (loss < best) [best, l2] = [loss, candidate];
    }
  }
  const all = rowsOf(traces);
  const fit = fitPerLayerLogistic(all.x, d, all.layer, all.y, nLayer, l2);
  return new HiddenStateProbe(nEmbd, fit.weights, fit.bias);
}
