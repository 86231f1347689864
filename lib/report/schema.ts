/**
 * results.json of `adainfer eval-tasks`: its types and its JSON Schema (RESULTS_SCHEMA, published as
 * docs/schemas/results.schema.json), checked by ajv before writing and by the tests. JSON has no Infinity: a threshold that never fires is written as null.
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
 * task; speedup = secondsFull / secondsExit (null when the exit policy is 'never': nothing to compare);
 * exitHistogram[i] = examples that ran i + 1 layers;
 * agreementLower = 95% one-sided Clopper–Pearson lower bound on agreement; oracleFirst / oracleStay = pruning
 * ratios of the oracles that stop at the first layer answering as full depth / from which it keeps answering so
 * (faithful lens after every layer, same examples); oracleFraction = pruningRatio / oracleStay; idealSpeedup =
 * 1 / (1 − pruningRatio); classifierMicrosPerCheck = the policy's own decision per check, lens read excluded.
 */

import { bool, int, nullable, num, object, share, str, strings } from '../schema/build';
import { compileSchema, schemaErrors, Validator } from '../schema/validate';
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

// --- the schema (docs/schemas/results.schema.json), checked by ajv ------------------------------------

const LABEL = object({ word: str, token: int, piece: str, pieces: strings, multiToken: bool });
const POINT = object({ threshold: nullable(num), agreement: share, accuracy: share, meanLayers: num, pruningRatio: num });
const TASK_EXIT = {
  ...object({
    kind: { enum: ['never', 'threshold', 'svm', 'svm-rbf', 'crf'], description: 'one of never, threshold, svm, svm-rbf, crf' },
    threshold: nullable(num),
    score: str,
    training: {
      type: ['object', 'null'],
      description: 'null or an object',
      properties: {
        examples: int,
        fitExamples: int,
        calibrationExamples: int,
        positiveRate: share,
        calibrationAgreement: share,
        calibrationPruningRatio: num,
      },
    },
  }),
};
const TASK = object({
  title: str,
  n: int,
  accuracyFull: share,
  accuracyExit: share,
  agreement: share,
  meanLayers: num,
  pruningRatio: num,
  secondsFull: num,
  secondsExit: num,
  speedup: nullable(num),
  exitHistogram: { type: 'array', items: int, description: 'an array of non-negative integers' },
  chance: share,
  shots: int,
  meanPromptTokens: num,
  tokenWeightedPruningRatio: num,
  agreementLower: share,
  oracleFirst: num,
  oracleStay: num,
  oracleFraction: num,
  idealSpeedup: num,
  classifierMicrosPerCheck: num,
  skipped: int,
  shotsReduced: int,
  tokenizationMismatches: int,
  labelBoundary: { enum: ['joined', 'space-in-prompt'], description: 'one of joined, space-in-prompt' },
  sharedPrefix: strings,
  labels: { type: 'array', minItems: 2, items: LABEL, description: 'an array of at least two labels' },
  exit: TASK_EXIT,
  sweep: { type: ['array', 'null'], items: POINT, description: 'null or an array' },
  sweepAtThreshold: {
    type: ['object', 'null'],
    description: 'null or an object',
    properties: { agreement: share, accuracy: share, meanLayers: num },
  },
  sources: object({ demo: str, eval: str }),
  notes: strings,
});

/**
 * The JSON Schema of results.json. Fields beyond those listed are allowed (a task's measurement carries
 * details). What a schema cannot say — one histogram entry per layer, histogram sums, meanLayers within the
 * model's layers — validateResults checks after it.
 */
export const RESULTS_SCHEMA = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: 'urn:adainfer:schema:results:1',
  title: 'adainfer eval-tasks results (adainfer.eval-tasks/1)',
  ...object({
    format: { const: RESULTS_FORMAT, description: JSON.stringify(RESULTS_FORMAT) },
    model: object({ name: str, fingerprint: str, layers: int, path: str, vocab: int, contextLength: int, tokenizer: str }),
    settings: object({
      shots: int,
      seed: int,
      exit: str,
      mode: { enum: ['fast', 'faithful'], description: 'one of fast, faithful' },
      classifier: nullable(str),
      target: nullable(share),
      label: nullable(str),
      limit: nullable(int),
      trainLimit: nullable(int),
      minLayer: int,
      checkEvery: int,
      threads: int,
      dataDir: str,
      tasks: strings,
      splitSeed: int,
      createdAt: str,
    }),
    tasks: { type: 'object', description: 'an object', additionalProperties: TASK },
  }),
};

let validator: Validator | undefined;

/**
 * Every problem of a results object (empty when it is valid): the schema's, each naming its field
 * (tasks.sst2.accuracyFull must be a number in [0, 1]), then the cross-field checks.
 */
export function validateResults(v: unknown): string[] {
  validator ??= compileSchema(RESULTS_SCHEMA);
  const errors = schemaErrors(validator, v, { root: 'results', withValue: false, rootOnlyAtTop: true });
  if (!v || typeof v !== 'object' || Array.isArray(v)) return errors;
  const r = v as Record<string, unknown>;
  const model = r.model as Record<string, unknown> | undefined;
  const tasks = r.tasks;
  if (!tasks || typeof tasks !== 'object' || Array.isArray(tasks)) return errors;
  const layers = model && Number.isSafeInteger(model.layers) ? (model.layers as number) : undefined;
  for (const [name, t] of Object.entries(tasks as Record<string, unknown>)) {
    if (!t || typeof t !== 'object') continue;
    const where = `tasks.${name}`;
    const o = t as Record<string, unknown>;
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
