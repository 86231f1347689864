/**
 * The exit classifier interface shared by the SVM (svm.ts) and the CRF (crf.ts), their serialized forms,
 * and the helpers both trainers use (feature validation, standardization, JSON validation, a seeded PRNG).
 *
 * AdaInfer applies the final norm + LM head after a decoder layer (logit lens), computes a few cheap
 * statistics of the next-token distribution, and asks a classifier whether stopping here would give the
 * same answer as running every layer. The classifier only produces a score; the threshold that turns the
 * score into a decision is calibrated separately (calibrate.ts) so one trained model serves any
 * accuracy/speed trade-off.
 *
 * Serialized classifiers are checked against CLASSIFIER_SCHEMA (exit_file_schema.ts) by loadClassifier
 * (load_classifier.ts), which imports svm.ts and crf.ts; this module imports neither, so there is no cycle.
 */
import { AdaInferError, OptionError } from '../errors';
import { describeValue } from '../schema/validate';
import type { ExitProbe, SerializedProbe } from './probe';

export { describeValue };

/** Names of the per-layer features, in the order of a feature vector. */
export type FeatureName =
  | 'p1'
  | 'p2'
  | 'gap'
  | 'entropy'
  | 'layer'
  | 'streak'
  | 'dp1'
  | 'jsd'
  | 'hidden_cos'
  | 'hidden_norm'
  | 'attn_entropy'
  | 'attn_self'
  | 'probe';

/**
 * Every known feature, with its meaning (probabilities are of the logit-lens next-token distribution):
 *  - p1: the top probability; p2: the second probability; gap: p1 − p2;
 *  - entropy: −Σ p log p (natural log);
 *  - layer: (l + 1) / nLayer for the 0-based layer index l, so the last layer is 1;
 *  - streak: how many consecutive checks, this one included, have had this check's top-1 (1 at a change);
 *  - dp1: p1 minus the previous check's p1 (0 at a token's first check).
 *  - jsd: the Jensen–Shannon divergence (nats, in [0, ln 2]) between this check's lens distribution and the
 *    previous check's, both renormalised over the token's candidate set — the fast lens's candidates, or in
 *    faithful mode the top-k of the token's first check (0 at a token's first check);
 *  - hidden_cos, hidden_norm: the residual stream's change since the previous check — the cosine between the two
 *    hidden states, and ||h − h_prev|| / ||h_prev|| (1 and 0 at a token's first check); computed natively;
 *  - attn_entropy: the entropy of the decision row's attention in the layer just run, over the positions it
 *    attends, divided by log(positions) and averaged over heads (0 at one position); attn_self: the attention
 *    weight on the row's own position, averaged over heads. The attention kernels keep both beside the softmax,
 *    only when a policy asks for them (LensReader).
 *  - probe: the logit of a hidden-state probe fitted with the classifier (probe.ts) over the decision row's hidden
 *    state scaled to unit RMS and p1, gap, entropy: a small MLP shared by the layers (default) or a per-layer
 *    logistic regression; it travels with the classifier (ExitClassifier.probe, serialized as its `probe`). One read
 *    of nEmbd floats per check, then a (64 × nEmbd + 3) matrix-vector product (MLP) or one dot product (linear).
 * streak, dp1 and jsd use what the earlier checks of the same token already read: no extra head cost. The
 * hidden-state and attention features need a backend that computes them (the CPU's; not CUDA's): a policy that
 * needs them elsewhere is refused (EXIT_FILE).
 * A classifier's `features` list says which of them, in which order, its feature vectors hold.
 */
export const FEATURE_NAMES: readonly FeatureName[] = Object.freeze([
  'p1',
  'p2',
  'gap',
  'entropy',
  'layer',
  'streak',
  'dp1',
  'jsd',
  'hidden_cos',
  'hidden_norm',
  'attn_entropy',
  'attn_self',
  'probe',
]);

/** Features read from the native exit statistics (Context.exitStatistics) rather than from the lens. */
export const HIDDEN_FEATURES: readonly FeatureName[] = Object.freeze(['hidden_cos', 'hidden_norm']);
export const ATTENTION_FEATURES: readonly FeatureName[] = Object.freeze(['attn_entropy', 'attn_self']);
/** Features read from the decision row's hidden state itself (LensReading.hidden). */
export const RESIDUAL_FEATURES: readonly FeatureName[] = Object.freeze(['probe']);

export interface ExitClassifier {
  readonly kind: 'svm' | 'svm-rbf' | 'crf';
  /** The features of a vector passed to score(), in order (frozen). */
  readonly features: FeatureName[];
  /** Starts a new example (the CRF keeps a forward message across the layers of one example). */
  begin(): void;
  /**
   * Called for each checked layer in increasing order; returns a score where higher = more confident that
   * stopping here gives the final answer. `x` holds the raw (unstandardized) features, x.length >=
   * features.length (extra entries are ignored). Cheap and allocation-free: it runs between layers.
   */
  score(x: ArrayLike<number>): number;
  /** Plain JSON (numbers round-trip exactly through JSON.stringify / JSON.parse). */
  toJSON(): SerializedClassifier;
  /**
   * SVMs fresh from libsvm: the threshold at which `score(x) >= t` is libsvm's own predict (its sign decision,
   * --preset paper). libsvm predicts its first label when f > 0 and the other when f <= 0, and the score is f
   * re-signed so that positive means stop: t is 0 when the first label is 0 (stop when f <= 0, i.e. score >= 0)
   * and the smallest positive number when it is 1 (stop when f > 0). Undefined for a loaded classifier.
   */
  readonly signThreshold?: number;
  /** With the 'probe' feature: the hidden-state probe that computes it (probe.ts withProbe). */
  readonly probe?: ExitProbe;
}

/**
 * Common to every serialized classifier: the feature order and the standardization learned from the
 * training data. A raw feature x_j is standardized as z_j = (x_j − mean[j]) / std[j]; all weights below
 * apply to z, not to x. Both arrays have shape [features.length].
 */
export interface SerializedStandardization {
  features: FeatureName[];
  mean: number[];
  std: number[];
  /** With the 'probe' feature: its hidden-state probe (probe.ts). */
  probe?: SerializedProbe;
}

/** Linear SVM, collapsed to one weight vector: score = Σ_j weights[j]·z_j + bias (> 0: stop). */
export interface SerializedLinearSvm extends SerializedStandardization {
  kind: 'svm';
  /** Shape [features.length]. */
  weights: number[];
  bias: number;
}

/**
 * RBF-kernel SVM: score = Σ_i coefficients[i]·exp(−gamma·‖supportVectors[i] − z‖²) + bias (> 0: stop).
 * Coefficients are already signed so that label 1 (stop) is the positive side.
 */
export interface SerializedRbfSvm extends SerializedStandardization {
  kind: 'svm-rbf';
  gamma: number;
  /** Shape [nSupportVectors][features.length], in standardized units. */
  supportVectors: number[][];
  /** Shape [nSupportVectors]. */
  coefficients: number[];
  bias: number;
}

/**
 * Linear-chain CRF over the checked layers of one example, labels 0 = continue, 1 = stop. The log-potential
 * of a label sequence y_1..y_T is
 *   start[y_1] + Σ_t (emissionBias[y_t] + Σ_j emission[y_t][j]·z_t,j) + Σ_{t≥2} transition[y_{t−1}][y_t].
 */
export interface SerializedCrf extends SerializedStandardization {
  kind: 'crf';
  /** Shape [2][features.length]: row = label. */
  emission: number[][];
  /** Shape [2]. */
  emissionBias: number[];
  /** Shape [2][2]: [previous label][next label]. */
  transition: number[][];
  /** Shape [2]. */
  start: number[];
}

export type SerializedClassifier = SerializedLinearSvm | SerializedRbfSvm | SerializedCrf;

// ---------------------------------------------------------------------------------------------------
// Helpers shared by svm.ts and crf.ts (exported for them; not part of the public API).

/** @internal Checks a features option: a non-empty list of distinct known names. Returns a frozen copy. */
export function checkFeatures(features: unknown, option = 'features'): FeatureName[] {
  if (!Array.isArray(features) || features.length === 0) {
    throw new OptionError(option, `must be a non-empty array of feature names (${FEATURE_NAMES.join(', ')})`);
  }
  const seen = new Set<string>();
  for (const name of features) {
    if (typeof name !== 'string' || !(FEATURE_NAMES as readonly string[]).includes(name)) {
      throw new OptionError(option, `unknown feature ${describeValue(name)}; known: ${FEATURE_NAMES.join(', ')}`);
    }
    if (seen.has(name)) throw new OptionError(option, `feature "${name}" is listed twice`);
    seen.add(name);
  }
  return Object.freeze([...features]) as FeatureName[];
}

/**
 * @internal Checks one training feature vector: `nFeatures` finite numbers. `where` names it in errors,
 * e.g. "X[12]".
 */
export function checkFeatureRow(row: unknown, nFeatures: number, option: string, where: string): number[] {
  if (!Array.isArray(row)) throw new OptionError(option, `${where} must be an array of ${nFeatures} numbers`);
  if (row.length !== nFeatures) {
    throw new OptionError(option, `${where} has ${row.length} values, expected ${nFeatures} (one per feature)`);
  }
  for (let j = 0; j < nFeatures; j++) {
    if (typeof row[j] !== 'number' || !Number.isFinite(row[j])) {
      throw new OptionError(option, `${where}[${j}] must be a finite number, got ${describeValue(row[j])}`);
    }
  }
  return row as number[];
}

/** @internal Checks a label: 0 (continue) or 1 (stop). */
export function checkLabel(label: unknown, option: string, where: string): 0 | 1 {
  if (label !== 0 && label !== 1) throw new OptionError(option, `${where} must be 0 or 1, got ${describeValue(label)}`);
  return label;
}

/**
 * @internal Per-feature mean and (population) standard deviation over `rows` (shape [n][nFeatures]).
 * A feature that is constant in the training data gets std 1, so it standardizes to x − mean (0 on the
 * training data) instead of dividing by zero.
 */
export function fitStandardization(
  rows: readonly (readonly number[])[],
  nFeatures: number,
): { mean: number[]; std: number[] } {
  const n = rows.length;
  const mean = new Array<number>(nFeatures).fill(0);
  const std = new Array<number>(nFeatures).fill(0);
  for (const row of rows) for (let j = 0; j < nFeatures; j++) mean[j] += row[j];
  for (let j = 0; j < nFeatures; j++) mean[j] /= n;
  // Two passes (mean first) rather than Σx² − n·mean², which cancels catastrophically for features like
  // p1 that sit near 1 with a tiny spread.
  for (const row of rows) {
    for (let j = 0; j < nFeatures; j++) {
      const d = row[j] - mean[j];
      std[j] += d * d;
    }
  }
  for (let j = 0; j < nFeatures; j++) {
    const s = Math.sqrt(std[j] / n);
    // Relative cut-off: a spread at rounding-noise level is a constant feature.
    std[j] = s > 1e-12 * Math.max(1, Math.abs(mean[j])) ? s : 1;
  }
  return { mean, std };
}

/** @internal Standardizes one row: z_j = (x_j − mean_j) / std_j. Allocates; for training only. */
export function standardizeRow(row: ArrayLike<number>, mean: ArrayLike<number>, std: ArrayLike<number>): number[] {
  const z = new Array<number>(mean.length);
  for (let j = 0; j < mean.length; j++) z[j] = (row[j] - mean[j]) / std[j];
  return z;
}

/** @internal The error score() throws for a too-short feature vector (only built on failure). */
export function shortVectorError(got: number, features: readonly FeatureName[]): OptionError {
  return new OptionError('x', `feature vector has ${got} values, expected ${features.length} (${features.join(', ')})`);
}

/**
 * @internal Seeded PRNG (mulberry32): uniform in [0, 1), 32 bits of state. Used where training must be
 * reproducible (subsampling); not for anything security-related.
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** @internal Checks a seed option: an integer (used modulo 2³²). */
export function checkSeed(seed: unknown): number {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed)) {
    throw new OptionError('seed', `must be an integer, got ${describeValue(seed)}`);
  }
  return seed;
}

// --- JSON validation -------------------------------------------------------------------------------

/** @internal An invalid serialized classifier. */
export function jsonError(message: string): AdaInferError {
  return new AdaInferError('INVALID_OPTION', `exit file: ${message}`);
}

/**
 * @internal Checks what the schema cannot: an array whose length must equal another field's (`n` features,
 * 2 labels, the number of support vectors).
 */
export function checkLength(value: readonly unknown[], n: number, where: string, noun: 'entries' | 'rows' = 'entries'): void {
  if (value.length !== n) throw jsonError(`${where} must have ${n} ${noun}, got ${value.length}`);
}
