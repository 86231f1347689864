/**
 * Exit files: a trained and calibrated exit policy saved with the identity of the model it was made for.
 * Versioned JSON, described by EXIT_FILE_SCHEMA (docs/schemas/exit-file.schema.json); loading one made for
 * another model, or one that does not match the schema, is an EXIT_FILE error naming the field.
 */
import * as fs from 'fs';
import { AdaInferError } from '../errors';
import { compileSchema, schemaErrors, Validator } from '../schema/validate';
import { FeatureName, SerializedClassifier } from './classifier';
import { EXIT_FILE_SCHEMA } from './exit_file_schema';
import { LensOptions } from './lens';
import { loadClassifier } from './load_classifier';
import { classifierPolicy, ExitPolicy, ExitSchedule, thresholdPolicy } from './policy';

/** The format of files that need nothing /2 added. */
export const EXIT_FILE_FORMAT = 'adainfer.exit/1';
/** /1 plus the MLP form of the hidden-state probe (probe.ts), which a /1 reader cannot run. */
export const EXIT_FILE_FORMAT_MLP_PROBE = 'adainfer.exit/2';
export type ExitFileFormat = typeof EXIT_FILE_FORMAT | typeof EXIT_FILE_FORMAT_MLP_PROBE;

/** The oldest format that can hold `classifier`: /2 where it carries an MLP probe, /1 otherwise. */
export function exitFileFormat(classifier: SerializedClassifier | undefined): ExitFileFormat {
  return classifier?.probe && 'kind' in classifier.probe ? EXIT_FILE_FORMAT_MLP_PROBE : EXIT_FILE_FORMAT;
}

export interface ExitFile {
  format: ExitFileFormat;
  model: { fingerprint: string; name: string; nLayer: number };
  policy: {
    kind: 'threshold' | 'svm' | 'svm-rbf' | 'crf';
    schedule: ExitSchedule;
    lens: LensOptions;
    /** Stop when the score reaches this value (+Infinity: the target could not be met, never stop). */
    threshold: number;
    /**
     * --thresholds per-layer: one threshold per layer (index = the 0-based layer after which the check runs;
     * +Infinity: never stop there), chosen jointly at calibration; replaces `threshold` (which then holds the
     * single calibrated threshold the search started from).
     */
    layerThresholds?: number[];
    /** threshold policies: the feature compared with the threshold. */
    feature?: 'p1' | 'gap';
    /** classifier policies: the classifier whose score is compared. */
    classifier?: SerializedClassifier;
    features?: FeatureName[];
  };
  training: {
    label: 'final' | 'gold';
    data: string;
    examples: number;
    window: number;
    /** The part of --data's documents used (--doc-part). */
    docPart?: { part: number; parts: number; seed: number };
    /** Calibration data other than --data (--calibration-data), and its part. */
    calibrationData?: string;
    calibrationDocPart?: { part: number; parts: number; seed: number };
    target: number;
    /** --preset paper: the SVM's own sign decides (threshold = its sign threshold), target is not used. */
    preset?: 'paper';
    /** train-exit --max-drop: the accuracy criterion (points) the threshold was calibrated to, instead of target. */
    maxDrop?: number;
    seed: number;
    createdAt: string;
  };
  metrics: Record<string, unknown>;
}

let validator: Validator | undefined;

function fail(path: string, message: string): never {
  throw new AdaInferError('EXIT_FILE', `${path}: ${message}`);
}

/** JSON has no Infinity: a threshold that never fires is written as the string "Infinity". */
export function saveExitFile(path: string, file: ExitFile): void {
  const text = JSON.stringify(file, (_k, v) => (v === Infinity ? 'Infinity' : v === -Infinity ? '-Infinity' : v), 2);
  fs.writeFileSync(path, text + '\n');
}

/** Reads and validates an exit file; when `model` is given, it must be the model the file was made for. */
export function loadExitFile(path: string, model?: { fingerprint: string; name: string; nLayer: number }): ExitFile {
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (e) {
    fail(path, `cannot read: ${(e as Error).message}`);
  }
  // The schema describes the file as stored (Infinity as a string), so it checks the plain parse.
  let stored: unknown;
  try {
    stored = JSON.parse(text);
  } catch (e) {
    fail(path, `not valid JSON: ${(e as Error).message}`);
  }
  validator ??= compileSchema(EXIT_FILE_SCHEMA);
  const problems = schemaErrors(validator, stored, { root: '', withValue: true });
  if (problems.length > 0) fail(path, problems.join('; '));
  const f = JSON.parse(text, (_k, v) => (v === 'Infinity' ? Infinity : v === '-Infinity' ? -Infinity : v)) as ExitFile;
  if (model && (f.model.fingerprint !== model.fingerprint || f.model.nLayer !== model.nLayer)) {
    fail(path, `made for model '${f.model.name}' (${f.model.fingerprint.slice(0, 19)}…), not for '${model.name}' (${model.fingerprint.slice(0, 19)}…)`);
  }
  if (f.policy.kind !== 'threshold' && f.policy.classifier!.kind !== f.policy.kind)
    fail(path, `policy.classifier.kind is "${f.policy.classifier!.kind}" but policy.kind is "${f.policy.kind}"`);
  if (f.policy.layerThresholds && f.policy.layerThresholds.length !== f.model.nLayer)
    fail(path, `policy.layerThresholds has ${f.policy.layerThresholds.length} entries, the model has ${f.model.nLayer} layers`);
  const probe = f.policy.classifier?.probe;
  if (probe && 'kind' in probe && f.format === EXIT_FILE_FORMAT)
    fail(path, `policy.classifier.probe is an MLP probe, which format ${EXIT_FILE_FORMAT} cannot hold (${EXIT_FILE_FORMAT_MLP_PROBE})`);
  const probeLayers = probe && ('kind' in probe ? probe.outputBias.length : probe.bias.length);
  if (probe && probeLayers !== f.model.nLayer) fail(path, `policy.classifier.probe has ${probeLayers} layers, the model has ${f.model.nLayer}`);
  try {
    policyFromExitFile(f); // builds the classifier: the lengths the schema cannot check
  } catch (e) {
    fail(path, `policy: ${(e as Error).message}`);
  }
  return f;
}

export function policyFromExitFile(f: ExitFile): ExitPolicy {
  const p = f.policy;
  const threshold = p.layerThresholds ?? p.threshold;
  if (p.kind === 'threshold') return thresholdPolicy(p.feature ?? 'gap', threshold, p.schedule, p.lens);
  return classifierPolicy(loadClassifier(p.classifier, 'policy.classifier'), threshold, p.schedule, p.lens);
}
