/**
 * Exit files: a trained and calibrated exit policy saved with the identity of the model it was made for.
 * Versioned JSON; loading one made for another model, or a corrupt one, is an EXIT_FILE error.
 */
import * as fs from 'fs';
import { AdaInferError } from '../errors';
import { FeatureName, loadClassifier, SerializedClassifier } from './classifier';
import { LensOptions } from './lens';
import { checkSchedule, classifierPolicy, ExitPolicy, ExitSchedule, thresholdPolicy } from './policy';

export const EXIT_FILE_FORMAT = 'adainfer.exit/1';

export interface ExitFile {
  format: typeof EXIT_FILE_FORMAT;
  model: { fingerprint: string; name: string; nLayer: number };
  policy: {
    kind: 'threshold' | 'svm' | 'svm-rbf' | 'crf';
    schedule: ExitSchedule;
    lens: LensOptions;
    /** Stop when the score reaches this value (+Infinity: the target could not be met, never stop). */
    threshold: number;
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
    target: number;
    seed: number;
    createdAt: string;
  };
  metrics: Record<string, unknown>;
}

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
  let raw: unknown;
  try {
    raw = JSON.parse(text, (_k, v) => (v === 'Infinity' ? Infinity : v === '-Infinity' ? -Infinity : v));
  } catch (e) {
    fail(path, `not valid JSON: ${(e as Error).message}`);
  }
  const f = raw as ExitFile;
  if (!f || typeof f !== 'object') fail(path, 'not an exit file');
  if (f.format !== EXIT_FILE_FORMAT) fail(path, `format is ${JSON.stringify(f.format)}, expected ${EXIT_FILE_FORMAT}`);
  if (!f.model || typeof f.model.fingerprint !== 'string' || !Number.isInteger(f.model.nLayer)) fail(path, 'model identity is missing');
  if (model && (f.model.fingerprint !== model.fingerprint || f.model.nLayer !== model.nLayer)) {
    fail(path, `made for model '${f.model.name}' (${f.model.fingerprint.slice(0, 19)}…), not for '${model.name}' (${model.fingerprint.slice(0, 19)}…)`);
  }
  const p = f.policy;
  if (!p || !['threshold', 'svm', 'svm-rbf', 'crf'].includes(p.kind)) fail(path, `unknown policy kind ${JSON.stringify(p?.kind)}`);
  if (typeof p.threshold !== 'number' || Number.isNaN(p.threshold)) fail(path, 'policy.threshold must be a number');
  if (!p.lens || (p.lens.mode !== 'faithful' && p.lens.mode !== 'fast')) fail(path, 'policy.lens.mode must be faithful or fast');
  try {
    checkSchedule(p.schedule ?? ({} as ExitSchedule));
  } catch (e) {
    fail(path, `policy.schedule: ${(e as Error).message}`);
  }
  try {
    policyFromExitFile(f); // builds the classifier: validates its parameters
  } catch (e) {
    fail(path, `policy: ${(e as Error).message}`);
  }
  return f;
}

export function policyFromExitFile(f: ExitFile): ExitPolicy {
  const p = f.policy;
  if (p.kind === 'threshold') return thresholdPolicy(p.feature ?? 'gap', p.threshold, p.schedule, p.lens);
  return classifierPolicy(loadClassifier(p.classifier), p.threshold, p.schedule, p.lens);
}
