/**
 * SVM exit classifier. Training uses libsvm (the libsvm-js port, C-SVC, linear or RBF kernel); inference
 * does not: the trained libsvm model text is parsed once and its decision function is evaluated in plain
 * TypeScript, so the hot path between layers never enters the emscripten heap.
 *
 * libsvm's decision function is f(z) = Σ_i coef_i·K(sv_i, z) − rho, and f > 0 means the FIRST label of
 * the model's `label` line — which is whichever class appeared first in the training data, not
 * necessarily 1. We re-sign f so that score > 0 always means label 1 (stop).
 */
import { AdaInferError, OptionError } from '../errors';
import {
  checkFeatureRow,
  checkLength,
  checkFeatures,
  checkLabel,
  checkSeed,
  describeValue,
  type ExitClassifier,
  type FeatureName,
  fitStandardization,
  jsonError,
  type SerializedLinearSvm,
  type SerializedRbfSvm,
  seededRandom,
  shortVectorError,
  standardizeRow,
} from './classifier';

/** Default cap on the examples libsvm sees (see SvmTrainOptions.maxTrainingExamples). */
export const DEFAULT_SVM_MAX_TRAINING_EXAMPLES = 4000;

export interface SvmTrainOptions {
  kernel: 'linear' | 'rbf';
  /** C, the soft-margin penalty; default 1. */
  cost?: number;
  /** RBF width in standardized units: K(a, b) = exp(−gamma·‖a − b‖²); default 1 / features.length (libsvm's
   *  own default). Ignored by the linear kernel. */
  gamma?: number;
  /**
   * Per-class multipliers of `cost`. 'balanced' uses n / (2·n_class) on the examples libsvm trains on, so
   * a rare class weighs as much in total as a common one. Default: 1 for both classes.
   */
  classWeight?: 'balanced' | { 0: number; 1: number };
  /** The features of each row of X, in order. */
  features: FeatureName[];
  /**
   * libsvm's SMO solver is superlinear in the number of examples (roughly quadratic, and the RBF model's
   * support vectors — which every score() call visits — grow with it too), so training uses at most this
   * many examples: a stratified (per-class proportional, at least one of each class), seeded random
   * subsample when X is larger. Default DEFAULT_SVM_MAX_TRAINING_EXAMPLES (4000). The standardization is
   * still fitted on all of X.
   */
  maxTrainingExamples?: number;
  /** Seed of the subsampling; default 0. Training is otherwise deterministic. */
  seed?: number;
}

/**
 * Trains an SVM exit classifier.
 * @param X raw feature vectors, shape [n][features.length]
 * @param y labels, shape [n]: 1 = stopping at this layer gives the full-depth answer, 0 = it does not
 * @returns a classifier whose score() is the oriented SVM decision value (> 0: stop)
 */
export function trainSvm(X: number[][], y: (0 | 1)[], options: SvmTrainOptions): ExitClassifier {
  if (typeof options !== 'object' || options === null) throw new OptionError('options', 'must be an object');
  const kernel = options.kernel;
  if (kernel !== 'linear' && kernel !== 'rbf') {
    throw new OptionError('kernel', `must be "linear" or "rbf", got ${describeValue(kernel)}`);
  }
  const features = checkFeatures(options.features);
  const nFeatures = features.length;
  const cost = positiveOption('cost', options.cost, 1);
  const gamma = kernel === 'rbf' ? positiveOption('gamma', options.gamma, 1 / nFeatures) : undefined;
  const maxExamples = options.maxTrainingExamples ?? DEFAULT_SVM_MAX_TRAINING_EXAMPLES;
  if (!Number.isSafeInteger(maxExamples) || maxExamples < 2) {
    throw new OptionError('maxTrainingExamples', `must be an integer >= 2, got ${describeValue(maxExamples)}`);
  }
  const seed = checkSeed(options.seed ?? 0);

  if (!Array.isArray(X) || !Array.isArray(y)) throw new OptionError('X', 'X and y must be arrays');
  if (X.length !== y.length) throw new OptionError('y', `has ${y.length} labels for ${X.length} rows of X`);
  const counts = [0, 0];
  for (let i = 0; i < X.length; i++) {
    checkFeatureRow(X[i], nFeatures, 'X', `X[${i}]`);
    counts[checkLabel(y[i], 'y', `y[${i}]`)]++;
  }
  if (counts[0] === 0 || counts[1] === 0) {
    const only = counts[0] === 0 ? 1 : 0;
    throw new OptionError(
      'y',
      `all ${X.length} training labels are ${only}; an SVM needs examples of both classes (0 = continue, 1 = stop)`,
    );
  }

  const classWeight = resolveClassWeight(options.classWeight);
  const { mean, std } = fitStandardization(X, nFeatures);
  const chosen = X.length > maxExamples ? stratifiedSubsample(y, counts, maxExamples, seed) : undefined;
  const trainZ: number[][] = [];
  const trainY: (0 | 1)[] = [];
  const trainCounts = [0, 0];
  for (let k = 0; k < (chosen ? chosen.length : X.length); k++) {
    const i = chosen ? chosen[k] : k;
    trainZ.push(standardizeRow(X[i], mean, std));
    trainY.push(y[i]);
    trainCounts[y[i]]++;
  }
  const weight =
    classWeight === 'balanced'
      ? { 0: trainY.length / (2 * trainCounts[0]), 1: trainY.length / (2 * trainCounts[1]) }
      : classWeight;

  const modelText = runLibsvm(trainZ, trainY, { kernel, cost, gamma, weight });
  return svmFromLibsvmModel(modelText, { kernel, features, mean, std, gamma });
}

/**
 * @internal Builds a classifier from libsvm's text model (SVM#serializeModel()) for standardized inputs.
 * Exported so tests can check the parsing and the sign convention against libsvm-js's own predictions.
 * @param spec.mean, spec.std the standardization the model was trained under, shape [features.length]
 * @param spec.gamma the exact gamma passed to libsvm (the text may round it); default: the text's value
 */
export function svmFromLibsvmModel(
  modelText: string,
  spec: { kernel: 'linear' | 'rbf'; features: FeatureName[]; mean: number[]; std: number[]; gamma?: number },
): ExitClassifier {
  const model = parseLibsvmModel(modelText, spec.features.length);
  if (model.kernel !== spec.kernel) throw libsvmError(`kernel_type is ${model.kernel}, expected ${spec.kernel}`);
  // Orient so that score > 0 means label 1 (stop); see the file comment.
  const sign = model.labels[0] === 1 ? 1 : -1;
  const features = checkFeatures(spec.features);
  const nFeatures = features.length;
  if (spec.kernel === 'linear') {
    // Σ_i coef_i·⟨sv_i, z⟩ − rho = ⟨Σ_i coef_i·sv_i, z⟩ − rho: one weight vector.
    const weights = new Array<number>(nFeatures).fill(0);
    for (let i = 0; i < model.coefficients.length; i++) {
      for (let j = 0; j < nFeatures; j++) weights[j] += model.coefficients[i] * model.supportVectors[i][j];
    }
    return Object.assign(
      new LinearSvmClassifier(
        features,
        spec.mean,
        spec.std,
        weights.map((w) => sign * w),
        -sign * model.rho,
      ),
      { signThreshold: sign === 1 ? Number.MIN_VALUE : 0 },
    );
  }
  const gamma = spec.gamma ?? model.gamma;
  if (gamma === undefined) throw libsvmError('the rbf model has no gamma');
  // The text may round gamma; a larger difference means the text is not the model trained with spec.gamma.
  if (model.gamma !== undefined && Math.abs(model.gamma - gamma) > 1e-5 * gamma) {
    throw libsvmError(`gamma is ${model.gamma}, expected ${gamma}`);
  }
  return Object.assign(
    new RbfSvmClassifier(
      features,
      spec.mean,
      spec.std,
      gamma,
      model.supportVectors,
      model.coefficients.map((c) => sign * c),
      -sign * model.rho,
    ),
    { signThreshold: sign === 1 ? Number.MIN_VALUE : 0 },
  );
}

/**
 * @internal Rebuilds an SVM from its toJSON() form, already checked against CLASSIFIER_SCHEMA
 * (loadClassifier); checks the lengths that depend on the feature count.
 */
export function svmFromJSON(obj: SerializedLinearSvm | SerializedRbfSvm, path: string): ExitClassifier {
  const n = obj.features.length;
  checkLength(obj.mean, n, `${path}.mean`);
  checkLength(obj.std, n, `${path}.std`);
  const features = Object.freeze([...obj.features]) as FeatureName[];
  if (obj.kind === 'svm') {
    checkLength(obj.weights, n, `${path}.weights`);
    return new LinearSvmClassifier(features, obj.mean, obj.std, obj.weights, obj.bias);
  }
  obj.supportVectors.forEach((sv, i) => checkLength(sv, n, `${path}.supportVectors[${i}]`));
  checkLength(obj.coefficients, obj.supportVectors.length, `${path}.coefficients`);
  return new RbfSvmClassifier(features, obj.mean, obj.std, obj.gamma, obj.supportVectors, obj.coefficients, obj.bias);
}

// ---------------------------------------------------------------------------------------------------

/** score = Σ_j weights[j]·z_j + bias with z_j = (x_j − mean_j) / std_j. */
class LinearSvmClassifier implements ExitClassifier {
  readonly kind = 'svm' as const;
  readonly features: FeatureName[];
  /** Shape [nFeatures] each. */
  private readonly mean: Float64Array;
  private readonly std: Float64Array;
  private readonly weights: Float64Array;
  private readonly bias: number;

  constructor(features: FeatureName[], mean: number[], std: number[], weights: number[], bias: number) {
    this.features = features;
    this.mean = Float64Array.from(mean);
    this.std = Float64Array.from(std);
    this.weights = Float64Array.from(weights);
    this.bias = bias;
  }

  begin(): void {
    // Stateless across layers.
  }

  score(x: ArrayLike<number>): number {
    const n = this.weights.length;
    if (x.length < n) throw shortVectorError(x.length, this.features);
    let s = this.bias;
    for (let j = 0; j < n; j++) s += this.weights[j] * ((x[j] - this.mean[j]) / this.std[j]);
    return s;
  }

  toJSON(): SerializedLinearSvm {
    return {
      kind: 'svm',
      features: [...this.features],
      mean: Array.from(this.mean),
      std: Array.from(this.std),
      weights: Array.from(this.weights),
      bias: this.bias,
    };
  }
}

/** score = Σ_i coefficients[i]·exp(−gamma·‖sv_i − z‖²) + bias. Cost per call: nSV·(nFeatures + 1 exp). */
class RbfSvmClassifier implements ExitClassifier {
  readonly kind = 'svm-rbf' as const;
  readonly features: FeatureName[];
  /** Shape [nFeatures] each. */
  private readonly mean: Float64Array;
  private readonly std: Float64Array;
  private readonly gamma: number;
  /** Row-major, shape [nSupportVectors × nFeatures]: one flat array keeps the scoring loop cache-friendly. */
  private readonly supportVectors: Float64Array;
  /** Shape [nSupportVectors], signed so that label 1 is positive. */
  private readonly coefficients: Float64Array;
  private readonly bias: number;
  /** Scratch for the standardized input, shape [nFeatures]: score() must not allocate. */
  private readonly z: Float64Array;

  constructor(
    features: FeatureName[],
    mean: number[],
    std: number[],
    gamma: number,
    supportVectors: number[][],
    coefficients: number[],
    bias: number,
  ) {
    const nFeatures = features.length;
    this.features = features;
    this.mean = Float64Array.from(mean);
    this.std = Float64Array.from(std);
    this.gamma = gamma;
    this.supportVectors = new Float64Array(supportVectors.length * nFeatures);
    supportVectors.forEach((sv, i) => this.supportVectors.set(sv, i * nFeatures));
    this.coefficients = Float64Array.from(coefficients);
    this.bias = bias;
    this.z = new Float64Array(nFeatures);
  }

  begin(): void {
    // Stateless across layers.
  }

  score(x: ArrayLike<number>): number {
    const nFeatures = this.z.length;
    if (x.length < nFeatures) throw shortVectorError(x.length, this.features);
    const z = this.z;
    for (let j = 0; j < nFeatures; j++) z[j] = (x[j] - this.mean[j]) / this.std[j];
    const sv = this.supportVectors;
    const coefficients = this.coefficients;
    const negGamma = -this.gamma;
    let s = this.bias;
    for (let i = 0, base = 0; i < coefficients.length; i++, base += nFeatures) {
      let d2 = 0;
      for (let j = 0; j < nFeatures; j++) {
        const d = sv[base + j] - z[j];
        d2 += d * d;
      }
      s += coefficients[i] * Math.exp(negGamma * d2);
    }
    return s;
  }

  toJSON(): SerializedRbfSvm {
    const nFeatures = this.z.length;
    const supportVectors: number[][] = [];
    for (let i = 0; i < this.coefficients.length; i++) {
      supportVectors.push(Array.from(this.supportVectors.subarray(i * nFeatures, (i + 1) * nFeatures)));
    }
    return {
      kind: 'svm-rbf',
      features: [...this.features],
      mean: Array.from(this.mean),
      std: Array.from(this.std),
      gamma: this.gamma,
      supportVectors,
      coefficients: Array.from(this.coefficients),
      bias: this.bias,
    };
  }
}

// --- libsvm ------------------------------------------------------------------------------------------

/** The part of libsvm-js (which ships no type declarations) this file uses. */
interface LibsvmInstance {
  train(samples: number[][], labels: number[]): void;
  serializeModel(): string;
  free(): void;
}
interface LibsvmConstructor {
  new (options: Record<string, unknown>): LibsvmInstance;
  SVM_TYPES: { C_SVC: string };
  KERNEL_TYPES: { LINEAR: string; RBF: string };
}

/**
 * Trains C-SVC on standardized rows and returns libsvm's text model. The synchronous asm.js build is
 * required lazily: only training needs it, and the wasm build's asynchronous loading would make trainSvm
 * asynchronous. libsvm-js allocates in the emscripten heap, which is never garbage collected, hence the
 * free() in `finally`.
 */
function runLibsvm(
  Z: number[][],
  y: (0 | 1)[],
  params: { kernel: 'linear' | 'rbf'; cost: number; gamma?: number; weight?: { 0: number; 1: number } },
): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const SVM = require('libsvm-js/asm') as LibsvmConstructor;
  const svm = new SVM({
    type: SVM.SVM_TYPES.C_SVC,
    kernel: params.kernel === 'linear' ? SVM.KERNEL_TYPES.LINEAR : SVM.KERNEL_TYPES.RBF,
    cost: params.cost,
    gamma: params.gamma,
    weight: params.weight,
    quiet: true,
  });
  try {
    svm.train(Z, y);
    return svm.serializeModel();
  } catch (e) {
    throw new AdaInferError('INTERNAL', `libsvm training failed: ${(e as Error).message ?? String(e)}`, { cause: e });
  } finally {
    svm.free();
  }
}

interface ParsedLibsvmModel {
  kernel: string;
  gamma: number | undefined;
  rho: number;
  /** The `label` line: labels[0] is the class with a positive decision value. */
  labels: number[];
  /** Shape [nSV][nFeatures] (libsvm omits zero entries; they are filled in). */
  supportVectors: number[][];
  /** Shape [nSV]. */
  coefficients: number[];
}

/**
 * Parses libsvm's text model for a two-class C-SVC: a header of "key values" lines up to "SV", then one
 * line per support vector, "coef index:value ..." with 1-based feature indices. libsvm-js 0.2.1 prints rho
 * with %g (6 significant digits) and support vector values with %.8g, so decision values computed from the
 * text differ from libsvm's in-memory ones by up to ~1e-6 (mostly a constant offset, which threshold
 * calibration absorbs since it is done on these scores).
 */
function parseLibsvmModel(text: string, nFeatures: number): ParsedLibsvmModel {
  const lines = text.split('\n');
  const header = new Map<string, string[]>();
  let line = 0;
  for (; line < lines.length; line++) {
    const parts = lines[line].trim().split(/\s+/);
    if (parts[0] === 'SV') break;
    if (parts[0] !== '') header.set(parts[0], parts.slice(1));
  }
  if (line === lines.length) throw libsvmError('no "SV" line');
  const one = (key: string): string => {
    const values = header.get(key);
    if (!values || values.length !== 1) throw libsvmError(`expected one value for "${key}"`);
    return values[0];
  };
  const num = (s: string, what: string): number => {
    const v = Number(s);
    if (s === '' || !Number.isFinite(v)) throw libsvmError(`${what} is not a finite number: "${s}"`);
    return v;
  };
  if (one('svm_type') !== 'c_svc') throw libsvmError(`svm_type is ${one('svm_type')}, expected c_svc`);
  if (one('nr_class') !== '2') throw libsvmError(`nr_class is ${one('nr_class')}, expected 2`);
  const labels = (header.get('label') ?? []).map((s) => num(s, 'label'));
  if (labels.length !== 2 || !labels.includes(0) || !labels.includes(1)) {
    throw libsvmError(`label line is "${(header.get('label') ?? []).join(' ')}", expected 0 and 1`);
  }
  const kernel = one('kernel_type');
  const gamma = header.has('gamma') ? num(one('gamma'), 'gamma') : undefined;
  const rho = num(one('rho'), 'rho');
  const totalSv = num(one('total_sv'), 'total_sv');

  const supportVectors: number[][] = [];
  const coefficients: number[] = [];
  for (line++; line < lines.length; line++) {
    const parts = lines[line].trim().split(/\s+/);
    if (parts[0] === '') continue;
    coefficients.push(num(parts[0], `coefficient of SV ${supportVectors.length}`));
    const sv = new Array<number>(nFeatures).fill(0);
    for (let k = 1; k < parts.length; k++) {
      const colon = parts[k].indexOf(':');
      const index = Number(parts[k].slice(0, colon));
      if (colon <= 0 || !Number.isInteger(index) || index < 1 || index > nFeatures) {
        throw libsvmError(`bad feature entry "${parts[k]}" in SV ${supportVectors.length}`);
      }
      sv[index - 1] = num(parts[k].slice(colon + 1), `SV ${supportVectors.length} value`);
    }
    supportVectors.push(sv);
  }
  if (supportVectors.length !== totalSv) {
    throw libsvmError(`total_sv is ${totalSv} but ${supportVectors.length} SV lines follow`);
  }
  return { kernel, gamma, rho, labels, supportVectors, coefficients };
}

function libsvmError(message: string): AdaInferError {
  return new AdaInferError('INTERNAL', `unexpected libsvm model text: ${message}`);
}

function positiveOption(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new OptionError(name, `must be a finite number > 0, got ${describeValue(value)}`);
  }
  return value;
}

function resolveClassWeight(
  classWeight: SvmTrainOptions['classWeight'],
): 'balanced' | { 0: number; 1: number } | undefined {
  if (classWeight === undefined || classWeight === 'balanced') return classWeight;
  if (typeof classWeight !== 'object' || classWeight === null) {
    throw new OptionError('classWeight', `must be "balanced" or { 0: number, 1: number }, got ${describeValue(classWeight)}`);
  }
  for (const label of [0, 1] as const) {
    const w = classWeight[label];
    if (typeof w !== 'number' || !Number.isFinite(w) || w <= 0) {
      throw new OptionError('classWeight', `weight of class ${label} must be a finite number > 0, got ${describeValue(w)}`);
    }
  }
  return { 0: classWeight[0], 1: classWeight[1] };
}

/**
 * Picks `size` of the example indices, each class in proportion to its count (at least one of each), by a
 * seeded partial Fisher–Yates shuffle per class. Returns them in increasing order, so the subsample keeps
 * the original order and the first label libsvm sees does not depend on the shuffle.
 */
function stratifiedSubsample(y: readonly (0 | 1)[], counts: number[], size: number, seed: number): number[] {
  const random = seededRandom(seed);
  const take1 = Math.min(counts[1], Math.max(1, Math.round((size * counts[1]) / y.length)), size - 1);
  const take = [Math.min(counts[0], size - take1), take1];
  const chosen: number[] = [];
  for (const label of [0, 1] as const) {
    const pool: number[] = [];
    for (let i = 0; i < y.length; i++) if (y[i] === label) pool.push(i);
    for (let k = 0; k < take[label]; k++) {
      const r = k + Math.floor(random() * (pool.length - k));
      const picked = pool[r];
      pool[r] = pool[k];
      pool[k] = picked;
      chosen.push(picked);
    }
  }
  return chosen.sort((a, b) => a - b);
}
