/**
 * Exit policies: one interface; an ExitDecider (lib/exit/decider.ts) applies one to a row between two layers.
 *
 *   never      full depth, no checks (no lens cost)
 *   observe    never stops; hands every checked layer's reading to a callback (trace collection)
 *   depth      stops every token after a fixed number of layers (self-speculative drafting)
 *   threshold  stop when one lens feature (p1 or gap) reaches a value — the usual early-exit baseline
 *   svm / crf  stop when a trained classifier's score over the lens features reaches its calibrated threshold
 *
 * Every policy has a schedule: the first exit may come after `minLayer` layers, then every `checkEvery`
 * layers. The last layer is never checked: reaching it is full depth, whose output is the model's own.
 */
import { AdaInferError, OptionError } from '../errors';
import { ExitClassifier, FeatureName } from './classifier';
import { FeatureExtractor, LensOptions, LensReading } from './lens';

export interface ExitSchedule {
  /** Layers that must run before the first check (>= 1). */
  minLayer: number;
  /** Layers between two checks (>= 1). */
  checkEvery: number;
}

export interface ExitPolicy {
  /** 'observe': never stops, hands each checked layer's reading to a callback (trace collection). */
  readonly kind: 'never' | 'observe' | 'depth' | 'threshold' | 'svm' | 'svm-rbf' | 'crf';
  readonly schedule: ExitSchedule;
  readonly lens: LensOptions;
  /**
   * The features its decisions read, when they need more than the lens statistics (lens.ts, extrasFor): its
   * ExitDecider's lens then reads those too. An observing policy lists what its traces must hold.
   */
  readonly features?: readonly FeatureName[];
  /** Starts a new token (classifiers with state across layers reset it). */
  begin(): void;
  /** After layer `layer` (0-based), given its lens reading: stop here? */
  shouldExit(layer: number, reading: LensReading, nLayer: number): boolean;
}

export function checkSchedule(s: ExitSchedule): ExitSchedule {
  if (!Number.isInteger(s.minLayer) || s.minLayer < 1) throw new OptionError('minLayer', `must be an integer >= 1, got ${String(s.minLayer)}`);
  if (!Number.isInteger(s.checkEvery) || s.checkEvery < 1)
    throw new OptionError('checkEvery', `must be an integer >= 1, got ${String(s.checkEvery)}`);
  return s;
}

/** True when the policy looks at the lens after layer `layer` (0-based) of `nLayer`. */
export function isCheckedLayer(s: ExitSchedule, layer: number, nLayer: number): boolean {
  const run = layer + 1;
  return run < nLayer && run >= s.minLayer && (run - s.minLayer) % s.checkEvery === 0;
}

export const DEFAULT_SCHEDULE: ExitSchedule = { minLayer: 1, checkEvery: 1 };

export function neverPolicy(): ExitPolicy {
  return {
    kind: 'never',
    schedule: { minLayer: Number.MAX_SAFE_INTEGER, checkEvery: 1 },
    lens: { mode: 'faithful' },
    begin: () => undefined,
    shouldExit: () => false,
  };
}

/** Never stops: hands the lens reading of every checked layer to `observe` (trace collection, lib/exit/collect.ts). */
export function observingPolicy(
  schedule: ExitSchedule,
  lens: LensOptions,
  observe: (layer: number, reading: LensReading) => void,
  features?: readonly FeatureName[],
): ExitPolicy {
  checkSchedule(schedule);
  return {
    kind: 'observe',
    schedule,
    lens,
    features,
    begin: () => undefined,
    shouldExit: (layer, r) => {
      observe(layer, r);
      return false;
    },
  };
}

/**
 * The lens of a classification over `labelTokens`, keeping where a fast lens's candidates come from (LensOptions):
 * a lens with no source reads the label tokens only; a top-k lens keeps its top-k for the features and reads the
 * labels beside (answerTokens); a fixed set must be these label tokens — a classifier trained on other candidates
 * would see features of another kind, so that is an EXIT_FILE error. Faithful lenses are returned as they are.
 */
export function labelLens(lens: LensOptions, labelTokens: number[]): LensOptions {
  if (lens.mode !== 'fast') return lens;
  if (lens.candidates !== undefined) {
    const same = lens.candidates.length === labelTokens.length && lens.candidates.every((t, i) => t === labelTokens[i]);
    if (!same)
      throw new AdaInferError(
        'EXIT_FILE',
        `the exit policy's fast lens was trained on the candidates [${lens.candidates.join(', ')}], but this classification's label tokens are [${labelTokens.join(', ')}]`,
      );
    return lens;
  }
  if (lens.topK !== undefined) return { mode: 'fast', topK: lens.topK, answerTokens: labelTokens };
  return { mode: 'fast', candidates: labelTokens };
}

/** Classification: the policy with its lens over the label tokens (labelLens); undefined stays undefined. */
export function withLabelCandidates(policy: ExitPolicy | undefined, labelTokens: number[]): ExitPolicy | undefined {
  return policy && policy.lens.mode === 'fast' ? { ...policy, lens: labelLens(policy.lens, labelTokens) } : policy;
}

/** Stops every token after `depth` layers (a fixed draft depth of self-speculative decoding). */
export function fixedDepthPolicy(depth: number, lens: LensOptions = { mode: 'faithful' }): ExitPolicy {
  if (!Number.isInteger(depth) || depth < 1) throw new OptionError('depth', `must be an integer >= 1, got ${String(depth)}`);
  return {
    kind: 'depth',
    schedule: { minLayer: depth, checkEvery: Number.MAX_SAFE_INTEGER },
    lens,
    begin: () => undefined,
    shouldExit: () => true,
  };
}

/**
 * A policy's threshold: one number, or one per layer (index = the 0-based layer after which the check runs;
 * calibrate.ts calibrateLayerThresholds). Returns the per-layer form.
 */
export function layerThresholds(threshold: number | readonly number[], nLayerHint?: number): (layer: number) => number {
  if (typeof threshold === 'number') {
    if (Number.isNaN(threshold)) throw new OptionError('threshold', 'must be a number');
    return () => threshold;
  }
  if (!Array.isArray(threshold) || threshold.length === 0 || threshold.some((t) => typeof t !== 'number' || Number.isNaN(t)))
    throw new OptionError('threshold', 'must be a number or a non-empty array of numbers (one per layer)');
  if (nLayerHint !== undefined && threshold.length !== nLayerHint)
    throw new OptionError('threshold', `has ${threshold.length} per-layer values, the model has ${nLayerHint} layers`);
  const values = Float64Array.from(threshold);
  return (layer) => (layer < values.length ? values[layer] : Infinity);
}

export function thresholdPolicy(
  feature: 'p1' | 'gap',
  value: number | readonly number[],
  schedule = DEFAULT_SCHEDULE,
  lens: LensOptions = { mode: 'faithful' },
): ExitPolicy {
  if (feature !== 'p1' && feature !== 'gap') throw new OptionError('feature', `must be 'p1' or 'gap', got ${String(feature)}`);
  if (typeof value !== 'number' && !Array.isArray(value)) throw new OptionError('threshold', 'must be a number');
  const at = layerThresholds(value);
  checkSchedule(schedule);
  return {
    kind: 'threshold',
    schedule,
    lens,
    begin: () => undefined,
    shouldExit: (layer, r) => r[feature] >= at(layer),
  };
}

export function classifierPolicy(
  classifier: ExitClassifier,
  threshold: number | readonly number[],
  schedule = DEFAULT_SCHEDULE,
  lens: LensOptions = { mode: 'faithful' },
): ExitPolicy {
  const at = layerThresholds(threshold);
  checkSchedule(schedule);
  const features = new FeatureExtractor(classifier.features, classifier.probe);
  return {
    kind: classifier.kind,
    schedule,
    lens,
    features: classifier.features,
    begin: () => {
      classifier.begin();
      features.begin();
    },
    shouldExit: (layer, r, nLayer) => classifier.score(features.next(r, layer, nLayer)) >= at(layer),
  };
}
