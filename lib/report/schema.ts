/**
 * results.json of `adainfer eval-tasks`: its types and a structural validator (used before writing, and by
 * the tests). JSON has no Infinity: a threshold that never fires is written as null.
 *
 *   { "format": "adainfer.eval-tasks/1",
 *     "model":    { name, fingerprint, layers, path, vocab, contextLength, tokenizer },
 *     "settings": { shots, seed, exit, mode, limit, trainLimit, minLayer, checkEvery, threads, dataDir, tasks, … },
 *     "tasks":    { "<task>": { n, accuracyFull, accuracyExit, agreement, meanLayers, pruningRatio,
 *                               secondsFull, secondsExit, speedup, exitHistogram, …details } } }
 *
 * Definitions: accuracy* = share of examples whose answer is the gold label (full depth / with the exit
 * policy); agreement = share whose exit answer equals the full-depth answer; meanLayers = mean layers run with
 * the policy; pruningRatio = (layers − meanLayers) / layers; seconds* = wall-clock of all timed runs of the
 * task; speedup = secondsFull / secondsExit; exitHistogram[i] = examples that ran i + 1 layers.
 */

import type { SweepPoint, TaskMeasurement } from '../tasks/evaluate';

export type { SweepPoint };

export const RESULTS_FORMAT = 'adainfer.eval-tasks/1';

export interface ModelInfo {
  name: string;
  fingerprint: string;
  layers: number;
  path: string;
  vocab: number;
  contextLength: number;
  tokenizer: string;
}

export interface Settings {
  shots: number;
  seed: number;
  /** 'never', 'threshold:<feature>:<value>', an exit file's path, or 'train:<classifier>' (--train-exit). */
  exit: string;
  /** Lens mode of the features: 'fast' (over the label tokens) or 'faithful' (whole vocabulary). */
  mode: 'fast' | 'faithful';
  classifier: string | null;
  target: number | null;
  label: string | null;
  limit: number | null;
  trainLimit: number | null;
  minLayer: number;
  checkEvery: number;
  threads: number;
  dataDir: string;
  tasks: string[];
  splitSeed: number;
  createdAt: string;
}

export interface LabelInfo {
  word: string;
  /** Scored token id and its vocabulary string. */
  token: number;
  piece: string;
  /** All the label's tokens after the prompt, as vocabulary strings. */
  pieces: string[];
  multiToken: boolean;
}

export interface TaskExitInfo {
  /** never | threshold | svm | svm-rbf | crf */
  kind: string;
  threshold: number | null;
  /** What the sweep's score is. */
  score: string;
  /** --train-exit: the training's figures. */
  training: null | {
    examples: number;
    fitExamples: number;
    calibrationExamples: number;
    positiveRate: number;
    calibrationAgreement: number;
    calibrationPruningRatio: number;
  };
}

/** A task's measurement (lib/tasks/evaluate.ts) and what the report says about it. */
export interface TaskResult extends TaskMeasurement {
  title: string;
  /** Accuracy of a uniform guess: 1 / labels. */
  chance: number;
  shots: number;
  skipped: number;
  shotsReduced: number;
  tokenizationMismatches: number;
  labelBoundary: 'joined' | 'space-in-prompt';
  sharedPrefix: string[];
  labels: LabelInfo[];
  exit: TaskExitInfo;
  /** null without --sweep. */
  sweep: SweepPoint[] | null;
  /** The sweep's outcome at the policy's threshold (equals the measured agreement/meanLayers). */
  sweepAtThreshold: { agreement: number; accuracy: number; meanLayers: number } | null;
  sources: { demo: string; eval: string };
  notes: string[];
}

export interface Results {
  format: typeof RESULTS_FORMAT;
  model: ModelInfo;
  settings: Settings;
  tasks: Record<string, TaskResult>;
}

type Check = (v: unknown) => string | undefined;

const num: Check = (v) => (typeof v === 'number' && Number.isFinite(v) ? undefined : 'a finite number');
const int: Check = (v) => (Number.isSafeInteger(v) && (v as number) >= 0 ? undefined : 'a non-negative integer');
const share: Check = (v) => (typeof v === 'number' && v >= 0 && v <= 1 ? undefined : 'a number in [0, 1]');
const str: Check = (v) => (typeof v === 'string' ? undefined : 'a string');
const bool: Check = (v) => (typeof v === 'boolean' ? undefined : 'a boolean');
const nullable =
  (c: Check): Check =>
  (v) =>
    v === null ? undefined : c(v) && `null or ${c(v)}`;
const oneOf =
  (...xs: string[]): Check =>
  (v) =>
    xs.includes(v as string) ? undefined : `one of ${xs.join(', ')}`;
const arrayOf =
  (c: Check): Check =>
  (v) => {
    if (!Array.isArray(v)) return 'an array';
    for (let i = 0; i < v.length; i++) {
      const e = c(v[i]);
      if (e) return `an array whose [${i}] is ${e}`;
    }
    return undefined;
  };

type Shape = Record<string, Check>;

function object(shape: Shape, where: string, v: unknown, errors: string[]): Record<string, unknown> | undefined {
  if (!v || typeof v !== 'object' || Array.isArray(v)) {
    errors.push(`${where} must be an object`);
    return undefined;
  }
  const o = v as Record<string, unknown>;
  for (const [key, check] of Object.entries(shape)) {
    if (!(key in o)) errors.push(`${where}.${key} is missing`);
    else {
      const e = check(o[key]);
      if (e) errors.push(`${where}.${key} must be ${e}`);
    }
  }
  return o;
}

const MODEL: Shape = { name: str, fingerprint: str, layers: int, path: str, vocab: int, contextLength: int, tokenizer: str };
const SETTINGS: Shape = {
  shots: int,
  seed: int,
  exit: str,
  mode: oneOf('fast', 'faithful'),
  classifier: nullable(str),
  target: nullable(share),
  label: nullable(str),
  limit: nullable(int),
  trainLimit: nullable(int),
  minLayer: int,
  checkEvery: int,
  threads: int,
  dataDir: str,
  tasks: arrayOf(str),
  splitSeed: int,
  createdAt: str,
};
const LABEL: Shape = { word: str, token: int, piece: str, pieces: arrayOf(str), multiToken: bool };
const POINT: Shape = { threshold: nullable(num), agreement: share, accuracy: share, meanLayers: num, pruningRatio: num };
const TASK: Shape = {
  title: str,
  n: int,
  accuracyFull: share,
  accuracyExit: share,
  agreement: share,
  meanLayers: num,
  pruningRatio: num,
  secondsFull: num,
  secondsExit: num,
  speedup: num,
  exitHistogram: arrayOf(int),
  chance: share,
  shots: int,
  meanPromptTokens: num,
  tokenWeightedPruningRatio: num,
  skipped: int,
  shotsReduced: int,
  tokenizationMismatches: int,
  labelBoundary: oneOf('joined', 'space-in-prompt'),
  sharedPrefix: arrayOf(str),
  labels: (v) => (Array.isArray(v) && v.length >= 2 ? undefined : 'an array of at least two labels'),
  exit: (v) => (v && typeof v === 'object' ? undefined : 'an object'),
  sweep: (v) => (v === null || Array.isArray(v) ? undefined : 'null or an array'),
  sweepAtThreshold: (v) => (v === null || (typeof v === 'object' && !Array.isArray(v)) ? undefined : 'null or an object'),
  sources: (v) => (v && typeof v === 'object' ? undefined : 'an object'),
  notes: arrayOf(str),
};

/** Every structural problem of a results object (empty when it is valid). */
export function validateResults(v: unknown): string[] {
  const errors: string[] = [];
  const r = object({ format: (x) => (x === RESULTS_FORMAT ? undefined : JSON.stringify(RESULTS_FORMAT)), model: () => undefined, settings: () => undefined, tasks: () => undefined }, 'results', v, errors);
  if (!r) return errors;
  const model = object(MODEL, 'model', r.model, errors);
  object(SETTINGS, 'settings', r.settings, errors);
  const tasks = r.tasks;
  if (!tasks || typeof tasks !== 'object' || Array.isArray(tasks)) {
    errors.push('tasks must be an object');
    return errors;
  }
  const layers = model && Number.isSafeInteger(model.layers) ? (model.layers as number) : undefined;
  for (const [name, t] of Object.entries(tasks as Record<string, unknown>)) {
    const where = `tasks.${name}`;
    const o = object(TASK, where, t, errors);
    if (!o) continue;
    if (Array.isArray(o.labels)) o.labels.forEach((l, i) => object(LABEL, `${where}.labels[${i}]`, l, errors));
    if (Array.isArray(o.sweep)) o.sweep.forEach((p, i) => object(POINT, `${where}.sweep[${i}]`, p, errors));
    object({ kind: oneOf('never', 'threshold', 'svm', 'svm-rbf', 'crf'), threshold: nullable(num), score: str, training: () => undefined }, `${where}.exit`, o.exit, errors);
    const h = o.exitHistogram;
    if (Array.isArray(h) && layers !== undefined) {
      if (h.length !== layers) errors.push(`${where}.exitHistogram has ${h.length} entries, expected one per layer (${layers})`);
      const total = h.reduce((a: number, b: unknown) => a + (typeof b === 'number' ? b : 0), 0);
      if (Number.isSafeInteger(o.n) && total !== o.n) errors.push(`${where}.exitHistogram sums to ${total}, expected n = ${String(o.n)}`);
    }
    if (layers !== undefined && typeof o.meanLayers === 'number' && (o.meanLayers < 0 || o.meanLayers > layers))
      errors.push(`${where}.meanLayers must be in [0, ${layers}]`);
  }
  return errors;
}
