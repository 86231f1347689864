/**
 * Exit policies: one interface, plugged into the layer loop of lib/model/llama.ts.
 *
 *   never      full depth, no checks (no lens cost)
 *   threshold  stop when one lens feature (p1 or gap) reaches a value — the usual early-exit baseline
 *   svm / crf  stop when a trained classifier's score over the lens features reaches its calibrated threshold
 *
 * Every policy has a schedule: the first exit may come after `minLayer` layers, then every `checkEvery`
 * layers. The last layer is never checked: reaching it is full depth, whose output is the model's own.
 */
import { OptionError } from '../errors';
import { LlamaContext } from '../model/llama';
import { ExitClassifier, FeatureName } from './classifier';
import { featureVector, LensOptions, LensReader, LensReading } from './lens';

export interface ExitSchedule {
  /** Layers that must run before the first check (>= 1). */
  minLayer: number;
  /** Layers between two checks (>= 1). */
  checkEvery: number;
}

export interface ExitPolicy {
  readonly kind: 'never' | 'threshold' | 'svm' | 'svm-rbf' | 'crf';
  readonly schedule: ExitSchedule;
  readonly lens: LensOptions;
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

export function thresholdPolicy(feature: 'p1' | 'gap', value: number, schedule = DEFAULT_SCHEDULE, lens: LensOptions = { mode: 'faithful' }): ExitPolicy {
  if (feature !== 'p1' && feature !== 'gap') throw new OptionError('feature', `must be 'p1' or 'gap', got ${String(feature)}`);
  if (typeof value !== 'number' || Number.isNaN(value)) throw new OptionError('threshold', 'must be a number');
  checkSchedule(schedule);
  return {
    kind: 'threshold',
    schedule,
    lens,
    begin: () => undefined,
    shouldExit: (_layer, r) => r[feature] >= value,
  };
}

export function classifierPolicy(classifier: ExitClassifier, threshold: number, schedule = DEFAULT_SCHEDULE, lens: LensOptions = { mode: 'faithful' }): ExitPolicy {
  checkSchedule(schedule);
  const x = new Float64Array(classifier.features.length);
  const names: FeatureName[] = classifier.features;
  return {
    kind: classifier.kind,
    schedule,
    lens,
    begin: () => classifier.begin(),
    shouldExit: (layer, r, nLayer) => classifier.score(featureVector(r, layer, nLayer, names, x)) >= threshold,
  };
}

/** How one batch went through the layer loop under a policy. */
export interface ExitOutcome {
  /** Layers run (nLayer at full depth). */
  layers: number;
  /** The exit layer's top-1 token (its lens reading), or -1 at full depth. */
  token: number;
}

/**
 * Applies a policy to one decision row of a context: begin() at each new token, then shouldStop(layer, row)
 * after each layer. At an exit, the context's logits buffer holds the exit layer's lens logits (all of them in
 * faithful mode, the candidates' in fast mode) and `exitToken` is the lens's top-1 token.
 */
export class EarlyExitRunner {
  readonly lensReader: LensReader;
  /** The exit layer's top-1 token after shouldStop() returned true; -1 otherwise. */
  exitToken = -1;
  private readonly nLayer: number;

  constructor(
    readonly context: LlamaContext,
    readonly policy: ExitPolicy,
  ) {
    this.lensReader = new LensReader(context, policy.lens);
    this.nLayer = context.model.config.nLayer;
  }

  begin(): void {
    this.policy.begin();
    this.lensReader.begin();
    this.exitToken = -1;
  }

  /** After layer `layer` (0-based): does the policy stop, reading the lens of batch row `row`? */
  shouldStop(layer: number, row: number): boolean {
    if (!isCheckedLayer(this.policy.schedule, layer, this.nLayer)) return false;
    const r = this.lensReader.read(row);
    if (!this.policy.shouldExit(layer, r, this.nLayer)) return false;
    this.exitToken = r.top1;
    return true;
  }

  /** forward() of the context for tokens already in its buffer, deciding at the batch's last row. */
  forward(n: number, pos0: number): ExitOutcome {
    this.begin();
    const layers = this.context.forward(n, pos0, this.policy.kind === 'never' ? undefined : (layer, rows) => this.shouldStop(layer, rows - 1));
    return { layers, token: layers < this.nLayer ? this.exitToken : -1 };
  }
}
