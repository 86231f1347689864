/**
 * Serialized classifier (toJSON() form, typically from an exit file) → classifier: checked against
 * CLASSIFIER_SCHEMA (types, finite numbers, fixed shapes, no unknown field), then built by svm.ts / crf.ts,
 * which check the lengths that depend on the feature count. Its own module so that classifier.ts, which
 * svm.ts and crf.ts import, imports neither of them.
 */
import { ExitClassifier, jsonError, SerializedClassifier } from './classifier';
import { crfFromJSON } from './crf';
import { STANDALONE_CLASSIFIER_SCHEMA } from './exit_file_schema';
import { compileSchema, schemaErrors, Validator } from '../schema/validate';
import { probeFromJSON, withProbe } from './probe';
import { svmFromJSON } from './svm';

let validator: Validator | undefined;

/**
 * Rebuilds a classifier from its toJSON() form. Errors are AdaInferError 'INVALID_OPTION' whose message
 * starts with "exit file:" and names the offending field (e.g. classifier.weights[1]); `root` is the field's
 * path in its file.
 */
export function loadClassifier(json: unknown, root = 'classifier'): ExitClassifier {
  validator ??= compileSchema(STANDALONE_CLASSIFIER_SCHEMA);
  const problems = schemaErrors(validator, json, { root, withValue: true });
  if (problems.length > 0) throw jsonError(problems.join('; '));
  const c = json as SerializedClassifier;
  const { probe, ...plain } = c;
  if (c.features.includes('probe') !== (probe !== undefined))
    throw jsonError(`${root}: ${probe ? "has a probe but no 'probe' feature" : "has the 'probe' feature but no probe"}`);
  const classifier = plain.kind === 'crf' ? crfFromJSON(plain, root) : svmFromJSON(plain, root);
  return probe ? withProbe(classifier, probeFromJSON(probe, `${root}.probe`)) : classifier;
}
