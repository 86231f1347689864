/**
 * Linear-chain CRF exit classifier over the checked layers of one example (labels 0 = continue, 1 = stop).
 * Unlike the SVM, which judges each layer alone, the CRF carries evidence from earlier layers forward:
 * the transition weights learn, e.g., that "stop" tends to persist once reached.
 *
 * Model (z = standardized features, T = number of checked layers of the example):
 *   log-potential(y_1..y_T) = start[y_1] + Σ_t (emissionBias[y_t] + Σ_j emission[y_t][j]·z_t,j)
 *                             + Σ_{t≥2} transition[y_{t−1}][y_t]
 *   p(y | x) = exp(log-potential(y)) / Z(x).
 * The chain runs over the layers that are checked, in order; train on sequences built with the same
 * checking schedule as inference, or the transition weights mean something else.
 *
 * Training minimizes the regularized conditional negative log-likelihood
 *   J(θ) = (1/N)·Σ_n −log p(y_n | x_n) + (l2/2)·‖θ‖²
 * (averaged per sequence so `l2` does not depend on the data size), with gradients from forward–backward
 * in log space and L-BFGS from θ = 0. J is strictly convex for l2 > 0, so the optimum is unique and the
 * result does not depend on the initialization.
 *
 * Online scoring: at layer t only x_1..x_t are known, so score() returns the filtering marginal
 * P(y_t = 1 | x_1..x_t) — the marginal of the last label of the chain truncated at t — from a forward
 * message updated once per call. (The smoothed marginal given all layers would need layers not yet run.)
 */
import { OptionError } from '../errors';
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
  type SerializedCrf,
  shortVectorError,
} from './classifier';

/** One training example: its checked layers in increasing order. */
export interface CrfSequence {
  /** Raw feature vectors, shape [nChecks][features.length]. */
  x: number[][];
  /** Labels, shape [nChecks]: 1 = stopping at this layer gives the full-depth answer. */
  y: (0 | 1)[];
}

export interface CrfTrainOptions {
  /** The features of each row of x, in order. */
  features: FeatureName[];
  /** L2 penalty on all weights (emission, bias, transition, start), > 0; default 1e-3. See the file comment
   *  for how the objective is scaled. */
  l2?: number;
  /** L-BFGS iteration cap; default 500. */
  maxIterations?: number;
  /** Accepted for symmetry with trainSvm; unused: training is deterministic (θ = 0 start, full-batch
   *  L-BFGS, strictly convex objective). */
  seed?: number;
}

/** Why L-BFGS stopped; see minimizeLbfgs. */
export type CrfStopReason = 'gradient' | 'objective' | 'line-search' | 'max-iterations';

/** L-BFGS stops when the largest |∂J/∂θ_i| is at most this... */
const GRADIENT_TOLERANCE = 1e-6;
/** ...or when an iteration lowers J by at most this fraction of max(1, |J|) (the floating-point floor). */
const RELATIVE_DECREASE_TOLERANCE = 1e-13;
/** Correction pairs L-BFGS keeps. */
const LBFGS_MEMORY = 10;

/**
 * Trains a CRF exit classifier on whole examples (sequences of checked layers).
 * @returns a classifier whose score() is the filtering marginal P(stop at this layer | layers so far)
 */
export function trainCrf(sequences: CrfSequence[], options: CrfTrainOptions): ExitClassifier {
  return fitCrf(sequences, options).classifier;
}

/**
 * @internal trainCrf with the optimizer's report (iterations, why it stopped, final objective), for tests
 * and diagnostics.
 */
export function fitCrf(
  sequences: CrfSequence[],
  options: CrfTrainOptions,
): { classifier: ExitClassifier; iterations: number; reason: CrfStopReason; objective: number } {
  if (typeof options !== 'object' || options === null) throw new OptionError('options', 'must be an object');
  const features = checkFeatures(options.features);
  const nFeatures = features.length;
  const l2 = options.l2 ?? 1e-3;
  if (typeof l2 !== 'number' || !Number.isFinite(l2) || l2 <= 0) {
    throw new OptionError('l2', `must be a finite number > 0 (it keeps the weights finite), got ${describeValue(l2)}`);
  }
  const maxIterations = options.maxIterations ?? 500;
  if (!Number.isSafeInteger(maxIterations) || maxIterations < 1) {
    throw new OptionError('maxIterations', `must be an integer >= 1, got ${describeValue(maxIterations)}`);
  }
  if (options.seed !== undefined) checkSeed(options.seed);

  if (!Array.isArray(sequences) || sequences.length === 0) {
    throw new OptionError('sequences', 'must be a non-empty array of { x, y }');
  }
  const counts = [0, 0];
  const allRows: number[][] = [];
  sequences.forEach((seq, s) => {
    if (typeof seq !== 'object' || seq === null || !Array.isArray(seq.x) || !Array.isArray(seq.y)) {
      throw new OptionError('sequences', `sequences[${s}] must be { x: number[][], y: (0|1)[] }`);
    }
    if (seq.x.length === 0) throw new OptionError('sequences', `sequences[${s}] is empty`);
    if (seq.x.length !== seq.y.length) {
      throw new OptionError('sequences', `sequences[${s}] has ${seq.x.length} rows of x but ${seq.y.length} labels`);
    }
    for (let t = 0; t < seq.x.length; t++) {
      allRows.push(checkFeatureRow(seq.x[t], nFeatures, 'sequences', `sequences[${s}].x[${t}]`));
      counts[checkLabel(seq.y[t], 'sequences', `sequences[${s}].y[${t}]`)]++;
    }
  });
  if (counts[0] === 0 || counts[1] === 0) {
    const only = counts[0] === 0 ? 1 : 0;
    throw new OptionError(
      'sequences',
      `all ${allRows.length} training labels are ${only}; a CRF needs examples of both classes (0 = continue, 1 = stop)`,
    );
  }

  const { mean, std } = fitStandardization(allRows, nFeatures);
  const data = packSequences(sequences, nFeatures, mean, std);
  const work = new ForwardBackwardWork(data.maxLength);
  const result = minimizeLbfgs(
    (theta, grad) => crfObjectiveInto(theta, data, l2, grad, work),
    new Float64Array(crfParameterCount(nFeatures)),
    maxIterations,
  );
  return {
    classifier: crfFromParameters(result.x, features, mean, std),
    iterations: result.iterations,
    reason: result.reason,
    objective: result.value,
  };
}

/**
 * @internal Rebuilds a CRF from its toJSON() form, already checked against CLASSIFIER_SCHEMA
 * (loadClassifier); checks the lengths that depend on the feature count.
 */
export function crfFromJSON(obj: SerializedCrf, path: string): ExitClassifier {
  const n = obj.features.length;
  checkLength(obj.mean, n, `${path}.mean`);
  checkLength(obj.std, n, `${path}.std`);
  obj.emission.forEach((row, i) => checkLength(row, n, `${path}.emission[${i}]`));
  const features = Object.freeze([...obj.features]) as FeatureName[];
  return new CrfClassifier(features, obj.mean, obj.std, obj.emission, obj.emissionBias, obj.transition, obj.start);
}

// --- the classifier -------------------------------------------------------------------------------

class CrfClassifier implements ExitClassifier {
  readonly kind = 'crf' as const;
  readonly features: FeatureName[];
  /** Shape [nFeatures] each. */
  private readonly mean: Float64Array;
  private readonly std: Float64Array;
  /** Emission weights of label 0 and label 1, shape [nFeatures] each. */
  private readonly emission0: Float64Array;
  private readonly emission1: Float64Array;
  private readonly bias0: number;
  private readonly bias1: number;
  /** transition[previous][next], unrolled. */
  private readonly t00: number;
  private readonly t01: number;
  private readonly t10: number;
  private readonly t11: number;
  private readonly start0: number;
  private readonly start1: number;
  /** Normalized log forward message, log P(y_t = label | x_1..x_t), for the last scored layer. */
  private logMessage0 = 0;
  private logMessage1 = 0;
  /** False until the first score() of an example: that one uses the start weights instead of a message. */
  private started = false;

  constructor(
    features: FeatureName[],
    mean: number[],
    std: number[],
    emission: number[][],
    emissionBias: number[],
    transition: number[][],
    start: number[],
  ) {
    this.features = features;
    this.mean = Float64Array.from(mean);
    this.std = Float64Array.from(std);
    this.emission0 = Float64Array.from(emission[0]);
    this.emission1 = Float64Array.from(emission[1]);
    this.bias0 = emissionBias[0];
    this.bias1 = emissionBias[1];
    this.t00 = transition[0][0];
    this.t01 = transition[0][1];
    this.t10 = transition[1][0];
    this.t11 = transition[1][1];
    this.start0 = start[0];
    this.start1 = start[1];
  }

  begin(): void {
    this.started = false;
  }

  score(x: ArrayLike<number>): number {
    const n = this.mean.length;
    if (x.length < n) throw shortVectorError(x.length, this.features);
    let e0 = this.bias0;
    let e1 = this.bias1;
    for (let j = 0; j < n; j++) {
      const z = (x[j] - this.mean[j]) / this.std[j];
      e0 += this.emission0[j] * z;
      e1 += this.emission1[j] * z;
    }
    let a0: number;
    let a1: number;
    if (this.started) {
      a0 = e0 + logSumExp2(this.logMessage0 + this.t00, this.logMessage1 + this.t10);
      a1 = e1 + logSumExp2(this.logMessage0 + this.t01, this.logMessage1 + this.t11);
    } else {
      a0 = e0 + this.start0;
      a1 = e1 + this.start1;
      this.started = true;
    }
    // Normalizing every step keeps the message bounded however long the chain (no overflow).
    const norm = logSumExp2(a0, a1);
    this.logMessage0 = a0 - norm;
    this.logMessage1 = a1 - norm;
    return Math.exp(this.logMessage1);
  }

  toJSON(): SerializedCrf {
    return {
      kind: 'crf',
      features: [...this.features],
      mean: Array.from(this.mean),
      std: Array.from(this.std),
      emission: [Array.from(this.emission0), Array.from(this.emission1)],
      emissionBias: [this.bias0, this.bias1],
      transition: [
        [this.t00, this.t01],
        [this.t10, this.t11],
      ],
      start: [this.start0, this.start1],
    };
  }
}

/** log(e^a + e^b) without overflow. */
function logSumExp2(a: number, b: number): number {
  return a > b ? a + Math.log1p(Math.exp(b - a)) : b + Math.log1p(Math.exp(a - b));
}

// --- parameters and objective ---------------------------------------------------------------------
//
// The flat parameter vector θ, for F features (length 2F + 8):
//   [0, 2F)        emission weights, label-major: θ[label·F + j]
//   [2F, 2F+2)     emission bias per label
//   [2F+2, 2F+6)   transition, θ[2F+2 + 2·previous + next]
//   [2F+6, 2F+8)   start weight per label
// The parameterization is redundant (shifting both labels' weights equally changes nothing, and the biases
// overlap with start + transition); the L2 term picks the minimum-norm representative, so it is unique.

/** @internal Length of the flat parameter vector for `nFeatures` features. */
export function crfParameterCount(nFeatures: number): number {
  return 2 * nFeatures + 8;
}

function crfFromParameters(theta: Float64Array, features: FeatureName[], mean: number[], std: number[]): CrfClassifier {
  const F = features.length;
  const at = (i: number): number => theta[i];
  return new CrfClassifier(
    features,
    mean,
    std,
    [Array.from(theta.subarray(0, F)), Array.from(theta.subarray(F, 2 * F))],
    [at(2 * F), at(2 * F + 1)],
    [
      [at(2 * F + 2), at(2 * F + 3)],
      [at(2 * F + 4), at(2 * F + 5)],
    ],
    [at(2 * F + 6), at(2 * F + 7)],
  );
}

/** Training sequences in flat typed arrays (standardized once, read every iteration). */
interface PackedSequences {
  nFeatures: number;
  /** Standardized features, row-major, shape [totalPositions × nFeatures]. */
  z: Float64Array;
  /** Shape [totalPositions]. */
  labels: Uint8Array;
  /** Sequence s spans positions [offsets[s], offsets[s+1]); shape [nSequences + 1]. */
  offsets: Int32Array;
  maxLength: number;
}

function packSequences(
  sequences: readonly CrfSequence[],
  nFeatures: number,
  mean: readonly number[],
  std: readonly number[],
): PackedSequences {
  let total = 0;
  let maxLength = 0;
  for (const seq of sequences) {
    total += seq.x.length;
    maxLength = Math.max(maxLength, seq.x.length);
  }
  const z = new Float64Array(total * nFeatures);
  const labels = new Uint8Array(total);
  const offsets = new Int32Array(sequences.length + 1);
  let p = 0;
  sequences.forEach((seq, s) => {
    offsets[s] = p;
    for (let t = 0; t < seq.x.length; t++, p++) {
      for (let j = 0; j < nFeatures; j++) z[p * nFeatures + j] = (seq.x[t][j] - mean[j]) / std[j];
      labels[p] = seq.y[t];
    }
  });
  offsets[sequences.length] = p;
  return { nFeatures, z, labels, offsets, maxLength };
}

/** Scratch for forward–backward, each shape [maxLength × 2] (position-major, then label). */
class ForwardBackwardWork {
  readonly psi: Float64Array;
  readonly alpha: Float64Array;
  readonly beta: Float64Array;
  constructor(maxLength: number) {
    this.psi = new Float64Array(2 * maxLength);
    this.alpha = new Float64Array(2 * maxLength);
    this.beta = new Float64Array(2 * maxLength);
  }
}

/**
 * J(θ) (see the file comment) and its gradient, written into `grad` (same length as θ). Per sequence, in
 * log space: psi_t(y) = emission log-potential, alpha_t(y) = log Σ over prefixes ending in y at t,
 * beta_t(y) = log Σ over suffixes after t given y at t; the gradient of −log p(y|x) is expected minus
 * observed feature counts, with node marginals exp(alpha + beta − logZ) and edge marginals
 * exp(alpha_{t−1}(a) + T[a][b] + psi_t(b) + beta_t(b) − logZ).
 */
function crfObjectiveInto(
  theta: Float64Array,
  data: PackedSequences,
  l2: number,
  grad: Float64Array,
  work: ForwardBackwardWork,
): number {
  const F = data.nFeatures;
  const BIAS = 2 * F;
  const TRANS = 2 * F + 2;
  const START = 2 * F + 6;
  const { z, labels, offsets } = data;
  const { psi, alpha, beta } = work;
  const t00 = theta[TRANS];
  const t01 = theta[TRANS + 1];
  const t10 = theta[TRANS + 2];
  const t11 = theta[TRANS + 3];
  grad.fill(0);
  let negLogLikelihood = 0;
  const nSequences = offsets.length - 1;

  for (let s = 0; s < nSequences; s++) {
    const first = offsets[s];
    const length = offsets[s + 1] - first;

    for (let t = 0; t < length; t++) {
      const row = (first + t) * F;
      let e0 = theta[BIAS];
      let e1 = theta[BIAS + 1];
      for (let j = 0; j < F; j++) {
        e0 += theta[j] * z[row + j];
        e1 += theta[F + j] * z[row + j];
      }
      psi[2 * t] = e0;
      psi[2 * t + 1] = e1;
    }

    alpha[0] = theta[START] + psi[0];
    alpha[1] = theta[START + 1] + psi[1];
    for (let t = 1; t < length; t++) {
      const p0 = alpha[2 * t - 2];
      const p1 = alpha[2 * t - 1];
      alpha[2 * t] = psi[2 * t] + logSumExp2(p0 + t00, p1 + t10);
      alpha[2 * t + 1] = psi[2 * t + 1] + logSumExp2(p0 + t01, p1 + t11);
    }
    const logZ = logSumExp2(alpha[2 * length - 2], alpha[2 * length - 1]);

    beta[2 * length - 2] = 0;
    beta[2 * length - 1] = 0;
    for (let t = length - 2; t >= 0; t--) {
      const n0 = psi[2 * t + 2] + beta[2 * t + 2];
      const n1 = psi[2 * t + 3] + beta[2 * t + 3];
      beta[2 * t] = logSumExp2(t00 + n0, t01 + n1);
      beta[2 * t + 1] = logSumExp2(t10 + n0, t11 + n1);
    }

    // Log-potential of the observed labels.
    let gold = theta[START + labels[first]];
    for (let t = 0; t < length; t++) {
      gold += psi[2 * t + labels[first + t]];
      if (t > 0) gold += theta[TRANS + 2 * labels[first + t - 1] + labels[first + t]];
    }
    negLogLikelihood += logZ - gold;

    for (let t = 0; t < length; t++) {
      const row = (first + t) * F;
      const observed = labels[first + t];
      for (let y = 0; y < 2; y++) {
        const marginal = Math.exp(alpha[2 * t + y] + beta[2 * t + y] - logZ);
        const c = marginal - (observed === y ? 1 : 0);
        grad[BIAS + y] += c;
        for (let j = 0; j < F; j++) grad[y * F + j] += c * z[row + j];
        if (t === 0) grad[START + y] += c;
      }
      if (t > 0) {
        const previous = labels[first + t - 1];
        for (let a = 0; a < 2; a++) {
          for (let b = 0; b < 2; b++) {
            const edge = Math.exp(alpha[2 * t - 2 + a] + theta[TRANS + 2 * a + b] + psi[2 * t + b] + beta[2 * t + b] - logZ);
            grad[TRANS + 2 * a + b] += edge - (previous === a && observed === b ? 1 : 0);
          }
        }
      }
    }
  }

  let squaredNorm = 0;
  for (let i = 0; i < theta.length; i++) {
    grad[i] = grad[i] / nSequences + l2 * theta[i];
    squaredNorm += theta[i] * theta[i];
  }
  return negLogLikelihood / nSequences + 0.5 * l2 * squaredNorm;
}

/**
 * @internal J(θ) and ∇J for already-standardized sequences (the objective the trainer minimizes), for the
 * finite-difference gradient test. `params` has length crfParameterCount(nFeatures) in the layout above.
 */
export function crfObjective(
  params: ArrayLike<number>,
  standardizedSequences: CrfSequence[],
  nFeatures: number,
  l2: number,
): { value: number; gradient: number[] } {
  const identityMean = new Array<number>(nFeatures).fill(0);
  const identityStd = new Array<number>(nFeatures).fill(1);
  const data = packSequences(standardizedSequences, nFeatures, identityMean, identityStd);
  const grad = new Float64Array(crfParameterCount(nFeatures));
  const value = crfObjectiveInto(Float64Array.from(params), data, l2, grad, new ForwardBackwardWork(data.maxLength));
  return { value, gradient: Array.from(grad) };
}

// --- L-BFGS ------------------------------------------------------------------------------------------

/**
 * Minimizes a smooth function with L-BFGS (two-loop recursion, LBFGS_MEMORY pairs) and a backtracking
 * Armijo line search. Convergence: stops when max_i |∂f/∂x_i| <= GRADIENT_TOLERANCE ('gradient'), when an
 * accepted step lowers f by at most RELATIVE_DECREASE_TOLERANCE·max(1, |f|) ('objective': the
 * floating-point floor), when no step along the direction decreases f ('line-search', also the floor), or
 * after maxIterations ('max-iterations'). Deterministic: no randomness anywhere.
 * @param evaluate writes ∇f(x) into grad and returns f(x)
 */
function minimizeLbfgs(
  evaluate: (x: Float64Array, grad: Float64Array) => number,
  x0: Float64Array,
  maxIterations: number,
): { x: Float64Array; value: number; iterations: number; reason: CrfStopReason } {
  const n = x0.length;
  let x = Float64Array.from(x0);
  let grad = new Float64Array(n);
  let value = evaluate(x, grad);
  let trialX = new Float64Array(n);
  let trialGrad = new Float64Array(n);
  const direction = new Float64Array(n);
  // Ring buffers of the last LBFGS_MEMORY steps s = x_{k+1} − x_k and gradient changes y = g_{k+1} − g_k.
  const sHistory: Float64Array[] = [];
  const yHistory: Float64Array[] = [];
  const rhoHistory: number[] = [];
  const alphas = new Float64Array(LBFGS_MEMORY);

  for (let iteration = 0; iteration < maxIterations; iteration++) {
    if (maxAbs(grad) <= GRADIENT_TOLERANCE) return { x, value, iterations: iteration, reason: 'gradient' };

    // direction = −H·grad by the two-loop recursion; H0 = (s·y / y·y)·I from the newest pair.
    direction.set(grad);
    for (let k = sHistory.length - 1; k >= 0; k--) {
      alphas[k] = rhoHistory[k] * dot(sHistory[k], direction);
      axpy(-alphas[k], yHistory[k], direction);
    }
    const newest = sHistory.length - 1;
    const h0 = newest >= 0 ? 1 / (rhoHistory[newest] * dot(yHistory[newest], yHistory[newest])) : 1;
    for (let i = 0; i < n; i++) direction[i] *= h0;
    for (let k = 0; k < sHistory.length; k++) {
      const beta = rhoHistory[k] * dot(yHistory[k], direction);
      axpy(alphas[k] - beta, sHistory[k], direction);
    }
    for (let i = 0; i < n; i++) direction[i] = -direction[i];

    let slope = dot(grad, direction);
    if (!(slope < 0)) {
      // Not a descent direction (stale curvature pairs): forget them and use steepest descent.
      sHistory.length = yHistory.length = rhoHistory.length = 0;
      for (let i = 0; i < n; i++) direction[i] = -grad[i];
      slope = -dot(grad, grad);
    }
    // Without curvature information the step length is unknown; a unit-length first step is a safe guess.
    let step = sHistory.length === 0 ? Math.min(1, 1 / Math.sqrt(-slope)) : 1;
    let trialValue = NaN;
    let accepted = false;
    for (let tries = 0; tries < 60; tries++) {
      for (let i = 0; i < n; i++) trialX[i] = x[i] + step * direction[i];
      trialValue = evaluate(trialX, trialGrad);
      if (trialValue <= value + 1e-4 * step * slope) {
        accepted = true;
        break;
      }
      step *= 0.5;
    }
    if (!accepted) return { x, value, iterations: iteration, reason: 'line-search' };

    const s = new Float64Array(n);
    const y = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      s[i] = trialX[i] - x[i];
      y[i] = trialGrad[i] - grad[i];
    }
    const sy = dot(s, y);
    // Keep the pair only with positive curvature, or the implied Hessian would not be positive definite.
    if (sy > 1e-12 * Math.sqrt(dot(s, s) * dot(y, y))) {
      if (sHistory.length === LBFGS_MEMORY) {
        sHistory.shift();
        yHistory.shift();
        rhoHistory.shift();
      }
      sHistory.push(s);
      yHistory.push(y);
      rhoHistory.push(1 / sy);
    }
    const decrease = value - trialValue;
    [x, trialX] = [trialX, x];
    [grad, trialGrad] = [trialGrad, grad];
    value = trialValue;
    if (decrease <= RELATIVE_DECREASE_TOLERANCE * Math.max(1, Math.abs(value))) {
      return { x, value, iterations: iteration + 1, reason: maxAbs(grad) <= GRADIENT_TOLERANCE ? 'gradient' : 'objective' };
    }
  }
  return {
    x,
    value,
    iterations: maxIterations,
    reason: maxAbs(grad) <= GRADIENT_TOLERANCE ? 'gradient' : 'max-iterations',
  };
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** y += a·x */
function axpy(a: number, x: Float64Array, y: Float64Array): void {
  for (let i = 0; i < x.length; i++) y[i] += a * x[i];
}

function maxAbs(a: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}
