/**
 * The published JSON Schemas (docs/schemas/) of exit files and results.json (issue 13, point 5): current with
 * the constants the runtime validates with, in agreement with the TypeScript types (files written from typed
 * objects validate against the published schema, checked here by an ajv instance of the test's own), and
 * errors that keep their codes and name the offending field.
 */
import Ajv from 'ajv';
import * as fs from 'fs';
import * as path from 'path';
import { SerializedClassifier } from '../../lib/exit/classifier';
import { EXIT_FILE_FORMAT, ExitFile, loadExitFile, saveExitFile } from '../../lib/exit/exit_file';
import { loadClassifier } from '../../lib/exit/load_classifier';
import { PUBLISHED_SCHEMAS, schemaText } from '../../lib/schema/published';
import { validateResults } from '../../lib/report/schema';
import { repoRoot, tmpDir } from '../helpers';
import { syntheticResults } from '../page/tasks_fixture';

const published = (name: string) => JSON.parse(fs.readFileSync(path.join(repoRoot(), 'docs', 'schemas', name), 'utf8'));

/** A validator of the published file, independent of the runtime's own ajv instance. */
function publishedValidator(name: string) {
  return new Ajv({ allErrors: true, discriminator: true, allowUnionTypes: true }).compile(published(name));
}

const classifiers: SerializedClassifier[] = [
  { kind: 'svm', features: ['p1', 'gap'], mean: [0.5, 0.2], std: [0.2, 0.1], weights: [1.5, -0.25], bias: 0.125 },
  {
    kind: 'svm-rbf',
    features: ['p1', 'gap', 'layer'],
    mean: [0.5, 0.2, 0.5],
    std: [0.2, 0.1, 0.3],
    gamma: 0.5,
    supportVectors: [
      [0, 1, 0],
      [1, -1, 0.5],
    ],
    coefficients: [1, -0.75],
    bias: -0.1,
  },
  {
    kind: 'crf',
    features: ['entropy'],
    mean: [1],
    std: [0.5],
    emission: [[-1], [1]],
    emissionBias: [0.25, -0.25],
    transition: [
      [1, -1],
      [-2, 2],
    ],
    start: [0.5, -0.5],
  },
];

function exitFile(policy: ExitFile['policy']): ExitFile {
  return {
    format: EXIT_FILE_FORMAT,
    model: { fingerprint: 'sha256:' + '0'.repeat(64), name: 'm', nLayer: 10 },
    policy,
    training: { label: 'final', data: 'train.txt', examples: 12, window: 32, target: 0.99, seed: 3, createdAt: '2026-01-01T00:00:00Z' },
    metrics: { agreement: 0.99, pruningRatio: 0.3 },
  };
}

const files: [string, ExitFile][] = [
  ['threshold', exitFile({ kind: 'threshold', schedule: { minLayer: 2, checkEvery: 1 }, lens: { mode: 'faithful' }, threshold: 0.8, feature: 'gap' })],
  ['a threshold that never fires', exitFile({ kind: 'threshold', schedule: { minLayer: 1, checkEvery: 2 }, lens: { mode: 'fast', topK: 8 }, threshold: Infinity, feature: 'p1' })],
  ...classifiers.map((c): [string, ExitFile] => [
    c.kind,
    exitFile({ kind: c.kind, schedule: { minLayer: 1, checkEvery: 1 }, lens: { mode: 'fast', candidates: [3, 5] }, threshold: 0.25, classifier: c, features: c.features }),
  ]),
];

describe('published schemas', () => {
  test.each(Object.keys(PUBLISHED_SCHEMAS))('docs/schemas/%s is current (npm run schemas writes it)', (name) => {
    expect(fs.readFileSync(path.join(repoRoot(), 'docs', 'schemas', name), 'utf8')).toBe(schemaText(PUBLISHED_SCHEMAS[name]));
  });
});

describe('exit files: schema and types agree', () => {
  const dir = tmpDir('adainfer-schema-');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const validate = publishedValidator('exit-file.schema.json');

  test.each(files)('%s: written, valid against the published schema, read back equal', (name, file) => {
    const p = path.join(dir, `${name.replace(/ /g, '-')}.json`);
    saveExitFile(p, file);
    const stored = JSON.parse(fs.readFileSync(p, 'utf8'));
    expect(validate(stored) ? [] : validate.errors).toEqual([]);
    expect(loadExitFile(p, file.model)).toEqual(file);
    if (file.policy.classifier) expect(loadClassifier(file.policy.classifier).toJSON()).toEqual(file.policy.classifier);
  });

  const svm = files[2][1];
  test.each<[string, (f: Record<string, any>) => void, RegExp]>([
    ['a schedule below 1', (f) => (f.policy.schedule.minLayer = 0), /policy\.schedule\.minLayer must be >= 1, got 0/],
    ['an unknown lens mode', (f) => (f.policy.lens.mode = 'psychic'), /policy\.lens\.mode must be faithful or fast, got "psychic"/],
    ['a string weight', (f) => (f.policy.classifier.weights[1] = 'x'), /policy\.classifier\.weights\[1\] must be a finite number, got "x"/],
    ['a weight missing', (f) => (f.policy.classifier.weights = [1]), /policy\.classifier\.weights must have 2 entries, got 1/],
    ['an unknown classifier field', (f) => (f.policy.classifier.depth = 3), /policy\.classifier\.depth is not a field of a "svm" classifier/],
    ['an unknown field', (f) => (f.extra = 1), /extra is not a field of the file/],
    ['no training record', (f) => delete f.training, /training is missing/],
    ['a threshold that is text', (f) => (f.policy.threshold = 'high'), /policy\.threshold must be a number, or "Infinity" \/ "-Infinity"/],
    ['a classifier policy without its classifier', (f) => delete f.policy.classifier, /policy\.classifier is missing/],
    ['a classifier of another kind', (f) => (f.policy.kind = 'crf'), /policy\.classifier\.kind is "svm" but policy\.kind is "crf"/],
    ['another format', (f) => (f.format = 'adainfer.exit/3'), /format must be "adainfer\.exit\/1", or "adainfer\.exit\/2" where the classifier holds an MLP probe, got "adainfer\.exit\/3"/],
  ])('%s is an EXIT_FILE error naming the field', (name, edit, message) => {
    const copy = JSON.parse(JSON.stringify(svm));
    edit(copy);
    const p = path.join(dir, `bad-${name.replace(/ /g, '-')}.json`);
    fs.writeFileSync(p, JSON.stringify(copy));
    expect(() => loadExitFile(p)).toThrow(expect.objectContaining({ code: 'EXIT_FILE', message: expect.stringMatching(message) }));
  });
});

describe('results.json: schema and types agree', () => {
  test('a typed results object (after a JSON round trip) is valid against the published schema', () => {
    const validate = publishedValidator('results.schema.json');
    const r = JSON.parse(JSON.stringify(syntheticResults()));
    expect(validate(r) ? [] : validate.errors).toEqual([]);
    expect(validateResults(r)).toEqual([]);
  });

  test('errors name the field', () => {
    const r = JSON.parse(JSON.stringify(syntheticResults(['sst2'])));
    r.tasks.sst2.labels[1].token = -1;
    r.settings.mode = 'slow';
    expect(validateResults(r)).toEqual(['settings.mode must be one of fast, faithful', 'tasks.sst2.labels[1].token must be a non-negative integer']);
  });
});
