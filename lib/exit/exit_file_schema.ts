/**
 * The JSON Schema of exit files (adainfer.exit/1 and /2: /2 is /1 plus the MLP form of the hidden-state probe, which
 * a /1 reader cannot run, so only files holding one are /2) and of the serialized classifiers inside them, as stored
 * on disk: JSON has no Infinity, so a threshold that never fires is the string "Infinity". Published as
 * docs/schemas/exit-file.schema.json (`npm run schemas` writes it; a test checks it is current). What a schema
 * cannot say — array lengths that must equal the number of features, the file's model being the one loaded —
 * is checked by the code that reads the file (exit_file.ts, svm.ts, crf.ts).
 */
import { FEATURE_NAMES } from './classifier';

const finite = { type: 'number' } as const;
const vector = { type: 'array', items: finite } as const;
const positiveVector = { type: 'array', items: { type: 'number', exclusiveMinimum: 0 } } as const;
const pair = { type: 'array', items: finite, minItems: 2, maxItems: 2 } as const;

/**
 * The hidden-state probe of a classifier with the 'probe' feature (probe.ts), one of two forms. Linear: per layer,
 * weights on the hidden state scaled to unit RMS followed by p1, gap, entropy, and a bias; lengths (nLayer rows of
 * nEmbd + 3) are checked on load. MLP (format adainfer.exit/2): one hidden layer of tanh units shared by the layers,
 * hiddenWeights [hidden][nEmbd + 3], hiddenBias [nLayer][hidden], outputWeights [hidden], outputBias [nLayer];
 * lengths checked on load.
 */
const LINEAR_PROBE_SCHEMA = {
  type: 'object',
  title: 'linear probe',
  required: ['nEmbd', 'weights', 'bias'],
  additionalProperties: false,
  properties: {
    nEmbd: { type: 'integer', minimum: 1 },
    weights: { type: 'array', items: vector, minItems: 1 },
    bias: vector,
  },
} as const;

const MLP_PROBE_SCHEMA = {
  type: 'object',
  title: 'MLP probe',
  required: ['kind', 'nEmbd', 'hiddenWeights', 'hiddenBias', 'outputWeights', 'outputBias'],
  additionalProperties: false,
  properties: {
    kind: { const: 'mlp', description: '"mlp"' },
    nEmbd: { type: 'integer', minimum: 1 },
    hiddenWeights: { type: 'array', items: vector, minItems: 1 },
    hiddenBias: { type: 'array', items: vector, minItems: 1 },
    outputWeights: { type: 'array', items: finite, minItems: 1 },
    outputBias: vector,
  },
} as const;

/** The form is told by `kind` (the MLP's; the linear probe, older, has none), so errors name one form's fields. */
const PROBE_SCHEMA = {
  title: 'probe',
  type: 'object',
  if: { required: ['kind'] },
  then: MLP_PROBE_SCHEMA,
  else: LINEAR_PROBE_SCHEMA,
} as const;

/** features, mean, std (and a probe): common to every classifier. */
const standardization = {
  features: {
    type: 'array',
    minItems: 1,
    uniqueItems: true,
    items: { title: 'feature', enum: [...FEATURE_NAMES] },
  },
  mean: vector,
  std: positiveVector,
  probe: PROBE_SCHEMA,
} as const;

export const CLASSIFIER_SCHEMA = {
  type: 'object',
  title: 'classifier',
  required: ['kind'],
  properties: { kind: { enum: ['svm', 'svm-rbf', 'crf'], description: '"svm", "svm-rbf" or "crf"' } },
  discriminator: { propertyName: 'kind' },
  oneOf: [
    {
      title: 'classifier',
      type: 'object',
      required: ['kind', 'features', 'mean', 'std', 'weights', 'bias'],
      additionalProperties: false,
      properties: { kind: { const: 'svm' }, ...standardization, weights: vector, bias: finite },
    },
    {
      title: 'classifier',
      type: 'object',
      required: ['kind', 'features', 'mean', 'std', 'gamma', 'supportVectors', 'coefficients', 'bias'],
      additionalProperties: false,
      properties: {
        kind: { const: 'svm-rbf' },
        ...standardization,
        gamma: { type: 'number', exclusiveMinimum: 0 },
        supportVectors: { type: 'array', items: vector },
        coefficients: vector,
        bias: finite,
      },
    },
    {
      title: 'classifier',
      type: 'object',
      required: ['kind', 'features', 'mean', 'std', 'emission', 'emissionBias', 'transition', 'start'],
      additionalProperties: false,
      properties: {
        kind: { const: 'crf' },
        ...standardization,
        emission: { type: 'array', items: vector, minItems: 2, maxItems: 2 },
        emissionBias: pair,
        transition: { type: 'array', items: pair, minItems: 2, maxItems: 2 },
        start: pair,
      },
    },
  ],
} as const;

const count = { type: 'integer', minimum: 0 } as const;
/** A seeded part of a data file's documents (--doc-part i/n:seed). */
const DOC_PART = {
  type: 'object',
  required: ['part', 'parts', 'seed'],
  additionalProperties: false,
  properties: { part: count, parts: { type: 'integer', minimum: 1 }, seed: count },
} as const;

export const EXIT_FILE_SCHEMA = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: 'urn:adainfer:schema:exit-file:2',
  title: 'adainfer exit file (adainfer.exit/1, adainfer.exit/2)',
  type: 'object',
  required: ['format', 'model', 'policy', 'training', 'metrics'],
  additionalProperties: false,
  properties: {
    format: {
      enum: ['adainfer.exit/1', 'adainfer.exit/2'],
      description: '"adainfer.exit/1", or "adainfer.exit/2" where the classifier holds an MLP probe',
    },
    model: {
      type: 'object',
      required: ['fingerprint', 'name', 'nLayer'],
      additionalProperties: false,
      properties: { fingerprint: { type: 'string' }, name: { type: 'string' }, nLayer: { type: 'integer', minimum: 1 } },
    },
    policy: {
      type: 'object',
      required: ['kind', 'schedule', 'lens', 'threshold'],
      additionalProperties: false,
      properties: {
        kind: { enum: ['threshold', 'svm', 'svm-rbf', 'crf'], description: 'one of threshold, svm, svm-rbf, crf' },
        schedule: {
          type: 'object',
          required: ['minLayer', 'checkEvery'],
          additionalProperties: false,
          properties: { minLayer: { type: 'integer', minimum: 1 }, checkEvery: { type: 'integer', minimum: 1 } },
        },
        lens: {
          type: 'object',
          required: ['mode'],
          additionalProperties: false,
          properties: {
            mode: { enum: ['faithful', 'fast'], description: 'faithful or fast' },
            candidates: { type: 'array', items: count },
            topK: { type: 'integer', minimum: 1 },
          },
          // where a fast lens's candidates come from: a fixed set or the first check's top-k, one of the two
          if: { properties: { mode: { const: 'fast' } } },
          then: {
            oneOf: [{ required: ['candidates'] }, { required: ['topK'] }],
            description: 'a fast lens records where its candidates come from: candidates (a fixed set) or topK, not both',
          },
        },
        threshold: {
          description: 'a number, or "Infinity" / "-Infinity"',
          anyOf: [{ type: 'number' }, { enum: ['Infinity', '-Infinity'] }],
        },
        layerThresholds: {
          description:
            'per-layer thresholds (train-exit --thresholds per-layer), one per layer (0-based index = the layer after which the check runs), each a number or "Infinity"; when present they replace threshold',
          type: 'array',
          items: { anyOf: [{ type: 'number' }, { enum: ['Infinity'] }] },
        },
        feature: { enum: ['p1', 'gap'], description: 'p1 or gap' },
        classifier: { $ref: '#/definitions/classifier' },
        features: { type: 'array', items: { enum: [...FEATURE_NAMES] } },
      },
      // a classifier policy carries its classifier
      if: { properties: { kind: { enum: ['svm', 'svm-rbf', 'crf'] } } },
      then: { required: ['classifier'] },
    },
    training: {
      type: 'object',
      required: ['label', 'data', 'examples', 'window', 'target', 'seed', 'createdAt'],
      additionalProperties: false,
      properties: {
        label: { enum: ['final', 'gold'], description: 'final or gold' },
        data: { type: 'string' },
        examples: count,
        window: count,
        docPart: DOC_PART,
        calibrationData: { type: 'string' },
        calibrationDocPart: DOC_PART,
        target: { type: 'number' },
        preset: { enum: ['paper'], description: 'paper' },
        maxDrop: { type: 'number', description: 'train-exit --max-drop: the accuracy drop (points) calibrated to instead of target' },
        seed: { type: 'integer' },
        createdAt: { type: 'string' },
      },
    },
    metrics: { type: 'object' },
  },
  definitions: { classifier: CLASSIFIER_SCHEMA },
} as const;

/** The classifier schema on its own (loadClassifier), with the same definitions. */
export const STANDALONE_CLASSIFIER_SCHEMA = { $id: 'adainfer.classifier', ...CLASSIFIER_SCHEMA } as const;
