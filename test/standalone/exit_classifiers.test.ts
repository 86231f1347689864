/**
 * Exit classifiers (SVM via libsvm-js, hand-written linear-chain CRF), their serialization, and threshold
 * calibration. Everything is synthetic and seeded; no model files are needed.
 */
import { AdaInferError, OptionError } from '../../lib/errors';
import { calibrateThreshold, CalibrationExample, simulateExit, thresholdSweep } from '../../lib/exit/calibrate';
import {
  ExitClassifier,
  FEATURE_NAMES,
  FeatureName,
  SerializedCrf,
  SerializedLinearSvm,
  SerializedRbfSvm,
  seededRandom,
} from '../../lib/exit/classifier';
import { loadClassifier } from '../../lib/exit/load_classifier';
import { crfObjective, crfParameterCount, CrfSequence, fitCrf, trainCrf } from '../../lib/exit/crf';
import { svmFromLibsvmModel, trainSvm } from '../../lib/exit/svm';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const LibSVM = require('libsvm-js/asm');

/** Standard normal from a uniform source (Box–Muller). */
function gaussian(random: () => number): number {
  const u = 1 - random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

function expectError(fn: () => unknown, code: string, message: RegExp): AdaInferError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(AdaInferError);
  expect((caught as AdaInferError).code).toBe(code);
  expect((caught as AdaInferError).message).toMatch(message);
  return caught as AdaInferError;
}

const F3: FeatureName[] = ['p1', 'gap', 'entropy'];

// --- serialization -------------------------------------------------------------------------------------

describe('loadClassifier', () => {
  const linear: SerializedLinearSvm = {
    kind: 'svm',
    features: ['p1', 'gap'],
    mean: [0.5, 0.2],
    std: [0.2, 0.1],
    weights: [1.5, -0.25],
    bias: 0.125,
  };
  const rbf: SerializedRbfSvm = {
    kind: 'svm-rbf',
    features: ['p1', 'gap'],
    mean: [0.5, 0.2],
    std: [0.2, 0.1],
    gamma: 0.5,
    supportVectors: [
      [0, 1],
      [1, -1],
      [0.5, 0.5],
    ],
    coefficients: [1, -0.75, 0.5],
    bias: -0.1,
  };
  const crf: SerializedCrf = {
    kind: 'crf',
    features: ['p1', 'gap'],
    mean: [0.5, 0.2],
    std: [0.2, 0.1],
    emission: [
      [-1, 0.5],
      [1, -0.5],
    ],
    emissionBias: [0.25, -0.25],
    transition: [
      [1, -1],
      [-2, 2],
    ],
    start: [0.5, -0.5],
  };

  test('FEATURE_NAMES lists every feature once', () => {
    expect([...FEATURE_NAMES]).toEqual(['p1', 'p2', 'gap', 'entropy', 'layer', 'streak', 'dp1', 'jsd', 'hidden_cos', 'hidden_norm', 'attn_entropy', 'attn_self', 'probe']);
  });

  test.each([linear, rbf, crf])('$kind round-trips through JSON text with identical scores', (json) => {
    const original = loadClassifier(json);
    const reloaded = loadClassifier(JSON.parse(JSON.stringify(original.toJSON())));
    expect(reloaded.toJSON()).toEqual(json);
    expect(reloaded.kind).toBe(json.kind);
    expect(reloaded.features).toEqual(json.features);
    const random = seededRandom(11);
    original.begin();
    reloaded.begin();
    for (let i = 0; i < 20; i++) {
      const x = [random(), random()];
      expect(reloaded.score(x)).toBe(original.score(x));
    }
  });

  test('the linear and RBF scores follow the documented formulas', () => {
    const x = [0.7, 0.1];
    const z = [(0.7 - 0.5) / 0.2, (0.1 - 0.2) / 0.1];
    expect(loadClassifier(linear).score(x)).toBeCloseTo(1.5 * z[0] - 0.25 * z[1] + 0.125, 12);
    let expected = rbf.bias;
    rbf.supportVectors.forEach((sv, i) => {
      const d2 = (sv[0] - z[0]) ** 2 + (sv[1] - z[1]) ** 2;
      expected += rbf.coefficients[i] * Math.exp(-rbf.gamma * d2);
    });
    expect(loadClassifier(rbf).score(x)).toBeCloseTo(expected, 12);
  });

  test('score() rejects a feature vector shorter than the feature list; longer ones are fine', () => {
    const c = loadClassifier(linear);
    expect(() => c.score([0.5])).toThrow(OptionError);
    expect(c.score([0.7, 0.1, 123])).toBe(c.score([0.7, 0.1]));
  });

  test('features is frozen', () => {
    const c = loadClassifier(crf);
    expect(() => (c.features as string[]).push('layer')).toThrow(TypeError);
  });

  const bad: [string, unknown, RegExp][] = [
    ['not an object', [1, 2], /classifier must be an object/],
    ['unknown kind', { ...linear, kind: 'tree' }, /classifier\.kind must be/],
    ['unknown feature', { ...linear, features: ['p1', 'logit'] }, /classifier\.features: unknown feature "logit"/],
    ['duplicate feature', { ...linear, features: ['p1', 'p1'] }, /classifier\.features: feature "p1" is listed twice/],
    ['no features', { ...linear, features: [] }, /classifier\.features/],
    ['short mean', { ...linear, mean: [0.5] }, /classifier\.mean must have 2 entries, got 1/],
    ['zero std', { ...linear, std: [0.2, 0] }, /classifier\.std\[1\] must be > 0/],
    ['NaN weight', { ...linear, weights: [1, NaN] }, /classifier\.weights\[1\] must be a finite number, got NaN/],
    ['string bias', { ...linear, bias: '0.1' }, /classifier\.bias must be a finite number, got "0\.1"/],
    ['missing bias', { ...linear, bias: undefined }, /classifier\.bias must be a finite number, got undefined/],
    ['unknown field', { ...linear, extra: 1 }, /classifier\.extra is not a field of a "svm" classifier/],
    ['rbf gamma', { ...rbf, gamma: -1 }, /classifier\.gamma must be > 0/],
    [
      'rbf support vector width',
      { ...rbf, supportVectors: [[0, 1], [1], [0, 0]] },
      /classifier\.supportVectors\[1\] must have 2 entries, got 1/,
    ],
    ['rbf coefficients length', { ...rbf, coefficients: [1, 2] }, /classifier\.coefficients must have 3 entries, got 2/],
    ['crf emission rows', { ...crf, emission: [[1, 2]] }, /classifier\.emission must have 2 rows, got 1/],
    ['crf transition shape', { ...crf, transition: [[1, 2], [3]] }, /classifier\.transition\[1\] must have 2 entries/],
    ['crf start', { ...crf, start: [Infinity, 0] }, /classifier\.start\[0\] must be a finite number, got Infinity/],
    ['crf field of an svm', { ...crf, weights: [1, 2] }, /classifier\.weights is not a field of a "crf" classifier/],
  ];
  test.each(bad)('rejects %s with an error naming the field', (_name, json, message) => {
    const err = expectError(() => loadClassifier(json), 'INVALID_OPTION', message);
    expect(err.message).toMatch(/^exit file: /);
  });
});

// --- SVM -----------------------------------------------------------------------------------------------

/** Labelled random points in [−2, 2]³: a noisy linear boundary, or a noisy ball (RBF-shaped). */
function svmData(n: number, shape: 'linear' | 'ball', seed: number): { X: number[][]; y: (0 | 1)[] } {
  const random = seededRandom(seed);
  const X: number[][] = [];
  const y: (0 | 1)[] = [];
  for (let i = 0; i < n; i++) {
    const x = [4 * random() - 2, 4 * random() - 2, 4 * random() - 2];
    const signal = shape === 'linear' ? x[0] + 0.5 * x[1] - 0.3 : 1.6 - Math.hypot(x[0], x[1], x[2]);
    X.push(x);
    y.push(signal + 0.3 * gaussian(random) > 0 ? 1 : 0);
  }
  return { X, y };
}

/** Moves the first example of class `label` to the front, so libsvm's `label` line starts with it. */
function putFirst(data: { X: number[][]; y: (0 | 1)[] }, label: 0 | 1): void {
  const i = data.y.indexOf(label);
  [data.X[0], data.X[i]] = [data.X[i], data.X[0]];
  [data.y[0], data.y[i]] = [data.y[i], data.y[0]];
}

interface LibsvmTextModel {
  labels: number[];
  supportVectors: number[][];
  coefficients: number[];
}

/** Minimal independent reader of the SV section, for the margin check. */
function readLibsvmText(text: string, nFeatures: number): LibsvmTextModel {
  const lines = text.trim().split('\n');
  const labels = lines.find((l) => l.startsWith('label '))!.split(' ').slice(1).map(Number);
  const start = lines.indexOf('SV') + 1;
  const supportVectors: number[][] = [];
  const coefficients: number[] = [];
  for (const line of lines.slice(start)) {
    const [coef, ...entries] = line.trim().split(' ');
    const sv = new Array<number>(nFeatures).fill(0);
    for (const entry of entries) {
      const [index, value] = entry.split(':');
      sv[Number(index) - 1] = Number(value);
    }
    coefficients.push(Number(coef));
    supportVectors.push(sv);
  }
  return { labels, supportVectors, coefficients };
}

describe('SVM', () => {
  describe.each([
    ['linear', 'linear'],
    ['rbf', 'ball'],
  ] as const)('%s kernel: decision values against libsvm-js', (kernel, shape) => {
    test.each([0, 1] as const)('first training label %i: signs agree with libsvm predictions everywhere', (first) => {
      const data = svmData(500, shape, 21 + first);
      putFirst(data, first);
      const gamma = 0.7;
      const svm = new LibSVM({
        type: LibSVM.SVM_TYPES.C_SVC,
        kernel: kernel === 'linear' ? LibSVM.KERNEL_TYPES.LINEAR : LibSVM.KERNEL_TYPES.RBF,
        cost: 1,
        gamma,
        quiet: true,
      });
      svm.train(data.X, data.y);
      const text: string = svm.serializeModel();
      const reloaded = LibSVM.load(text);
      try {
        // The sign convention is what this test is about: libsvm orders labels by first appearance.
        expect(text).toContain(first === 1 ? 'label 1 0' : 'label 0 1');
        const classifier = svmFromLibsvmModel(text, { kernel, features: F3, mean: [0, 0, 0], std: [1, 1, 1], gamma });
        expect(classifier.kind).toBe(kernel === 'linear' ? 'svm' : 'svm-rbf');
        const probe = [...data.X, ...svmData(2000, shape, 99).X];
        const scores = probe.map((x) => classifier.score(x));
        const ours = scores.map((s) => (s > 0 ? 1 : 0));
        expect(ours).toEqual(probe.map((x) => svm.predictOne(x)));
        expect(ours).toEqual(probe.map((x) => reloaded.predictOne(x)));
        // Both classes occur, so the agreement above is not trivial.
        expect(new Set(ours).size).toBe(2);

        // libsvm-js exposes no decision values, so check their scale and offset another way: a free support
        // vector (0 < |coef| < C) sits on the margin, y·f(sv) = 1 up to libsvm's stopping tolerance (1e-3).
        const model = readLibsvmText(text, 3);
        let free = 0;
        model.supportVectors.forEach((sv, i) => {
          const c = model.coefficients[i];
          if (Math.abs(c) >= 1 - 1e-9) return;
          free++;
          const label = c > 0 ? model.labels[0] : model.labels[1];
          expect((label === 1 ? 1 : -1) * classifier.score(sv)).toBeCloseTo(1, 2);
        });
        expect(free).toBeGreaterThan(0);
      } finally {
        svm.free();
        reloaded.free();
      }
    });
  });

  test.each(['linear', 'rbf'] as const)(
    'trainSvm (%s) standardizes, then matches libsvm trained on the standardized data',
    (kernel) => {
      // Features on very different scales, as p1 and entropy are.
      const base = svmData(600, kernel === 'linear' ? 'linear' : 'ball', 5);
      const X = base.X.map((x) => [0.5 + 0.1 * x[0], 10 + 3 * x[1], x[2]]);
      const classifier = trainSvm(X, base.y, { kernel, features: F3, cost: 2, classWeight: { 0: 1, 1: 2 } });
      const json = classifier.toJSON() as SerializedLinearSvm | SerializedRbfSvm;
      for (let j = 0; j < 3; j++) {
        const column = X.map((x) => x[j]);
        const mean = column.reduce((a, b) => a + b, 0) / column.length;
        const std = Math.sqrt(column.reduce((a, b) => a + (b - mean) ** 2, 0) / column.length);
        expect(json.mean[j]).toBeCloseTo(mean, 10);
        expect(json.std[j]).toBeCloseTo(std, 10);
      }
      const standardize = (x: number[]): number[] => x.map((v, j) => (v - json.mean[j]) / json.std[j]);
      const svm = new LibSVM({
        type: LibSVM.SVM_TYPES.C_SVC,
        kernel: kernel === 'linear' ? LibSVM.KERNEL_TYPES.LINEAR : LibSVM.KERNEL_TYPES.RBF,
        cost: 2,
        gamma: 1 / 3,
        weight: { 0: 1, 1: 2 },
        quiet: true,
      });
      try {
        svm.train(X.map(standardize), base.y);
        const probe = [...X, ...svmData(1000, 'linear', 6).X.map((x) => [0.5 + 0.1 * x[0], 10 + 3 * x[1], x[2]])];
        expect(probe.map((x) => (classifier.score(x) > 0 ? 1 : 0))).toEqual(
          probe.map((x) => svm.predictOne(standardize(x))),
        );
      } finally {
        svm.free();
      }
      if (json.kind === 'svm-rbf') expect(json.gamma).toBe(1 / 3);
    },
  );

  test('learns a learnable problem', () => {
    const train = svmData(1000, 'ball', 8);
    const test = svmData(1000, 'ball', 9);
    const classifier = trainSvm(train.X, train.y, { kernel: 'rbf', features: F3 });
    const accuracy = test.X.filter((x, i) => (classifier.score(x) > 0 ? 1 : 0) === test.y[i]).length / test.X.length;
    expect(accuracy).toBeGreaterThan(0.85);
  });

  test("classWeight 'balanced' raises recall of a rare class", () => {
    const random = seededRandom(12);
    const X: number[][] = [];
    const y: (0 | 1)[] = [];
    for (let i = 0; i < 1500; i++) {
      const label = random() < 0.1 ? 1 : 0;
      X.push([label + gaussian(random), gaussian(random), gaussian(random)]);
      y.push(label);
    }
    const recall = (c: ExitClassifier): number =>
      X.filter((x, i) => y[i] === 1 && c.score(x) > 0).length / y.filter((l) => l === 1).length;
    const plain = trainSvm(X, y, { kernel: 'linear', features: F3 });
    const balanced = trainSvm(X, y, { kernel: 'linear', features: F3, classWeight: 'balanced' });
    expect(recall(plain)).toBeLessThan(0.3);
    expect(recall(balanced)).toBeGreaterThan(0.6);
  });

  test('subsamples to maxTrainingExamples, reproducibly for a seed', () => {
    const data = svmData(3000, 'ball', 13);
    const options = { kernel: 'rbf' as const, features: F3, maxTrainingExamples: 300, seed: 4 };
    const a = trainSvm(data.X, data.y, options).toJSON() as SerializedRbfSvm;
    const b = trainSvm(data.X, data.y, options).toJSON() as SerializedRbfSvm;
    const c = trainSvm(data.X, data.y, { ...options, seed: 5 }).toJSON() as SerializedRbfSvm;
    expect(b).toEqual(a);
    expect(c.supportVectors).not.toEqual(a.supportVectors);
    expect(a.supportVectors.length).toBeLessThanOrEqual(300);
    // The standardization still comes from all 3000 rows, so it does not depend on the subsample.
    expect(c.mean).toEqual(a.mean);
  });

  test('rejects degenerate training sets and bad options', () => {
    const data = svmData(50, 'linear', 14);
    const zeros = data.y.map(() => 0 as const);
    expectError(
      () => trainSvm(data.X, zeros, { kernel: 'linear', features: F3 }),
      'INVALID_OPTION',
      /all 50 training labels are 0; an SVM needs examples of both classes/,
    );
    const ok = { kernel: 'linear' as const, features: F3 };
    expectError(() => trainSvm(data.X, data.y, { ...ok, kernel: 'poly' as 'rbf' }), 'INVALID_OPTION', /kernel/);
    expectError(() => trainSvm(data.X, data.y, { ...ok, cost: 0 }), 'INVALID_OPTION', /cost: must be a finite number > 0/);
    expectError(() => trainSvm(data.X, data.y, { ...ok, kernel: 'rbf', gamma: NaN }), 'INVALID_OPTION', /gamma/);
    expectError(
      () => trainSvm(data.X, data.y, { ...ok, classWeight: { 0: 1, 1: -1 } }),
      'INVALID_OPTION',
      /classWeight: weight of class 1/,
    );
    expectError(() => trainSvm(data.X, data.y, { ...ok, maxTrainingExamples: 1 }), 'INVALID_OPTION', /maxTrainingExamples/);
    expectError(() => trainSvm(data.X, data.y, { ...ok, features: ['p1', 'p9' as FeatureName] }), 'INVALID_OPTION', /p9/);
    expectError(() => trainSvm(data.X.slice(1), data.y, ok), 'INVALID_OPTION', /49 rows of X/);
    const short = data.X.map((x, i) => (i === 7 ? x.slice(0, 2) : x));
    expectError(() => trainSvm(short, data.y, ok), 'INVALID_OPTION', /X\[7\] has 2 values, expected 3/);
    const nan = data.X.map((x, i) => (i === 3 ? [x[0], NaN, x[2]] : x));
    expectError(() => trainSvm(nan, data.y, ok), 'INVALID_OPTION', /X\[3\]\[1\] must be a finite number/);
    const badLabel = data.y.map((l, i) => (i === 2 ? (2 as 0) : l));
    expectError(() => trainSvm(data.X, badLabel, ok), 'INVALID_OPTION', /y\[2\] must be 0 or 1/);
  });
});

// --- CRF -----------------------------------------------------------------------------------------------

/** CRF parameters in readable form; `flat` gives crfObjective's layout. */
interface CrfParams {
  emission: number[][]; // [2][F]
  bias: number[]; // [2]
  transition: number[][]; // [2][2]
  start: number[]; // [2]
}

function flat(p: CrfParams): number[] {
  return [...p.emission[0], ...p.emission[1], ...p.bias, ...p.transition[0], ...p.transition[1], ...p.start];
}

function randomParams(nFeatures: number, random: () => number, scale: number): CrfParams {
  const r = (): number => scale * gaussian(random);
  return {
    emission: [Array.from({ length: nFeatures }, r), Array.from({ length: nFeatures }, r)],
    bias: [r(), r()],
    transition: [
      [r(), r()],
      [r(), r()],
    ],
    start: [r(), r()],
  };
}

function logPotential(p: CrfParams, z: number[][], y: number[]): number {
  let s = p.start[y[0]];
  for (let t = 0; t < z.length; t++) {
    s += p.bias[y[t]] + z[t].reduce((a, v, j) => a + p.emission[y[t]][j] * v, 0);
    if (t > 0) s += p.transition[y[t - 1]][y[t]];
  }
  return s;
}

/** Every labelling of length n, as arrays of 0/1. */
function allLabellings(n: number): number[][] {
  const out: number[][] = [];
  for (let m = 0; m < 1 << n; m++) out.push(Array.from({ length: n }, (_, t) => (m >> t) & 1));
  return out;
}

/** A classifier with the given parameters and identity standardization. */
function crfClassifier(p: CrfParams, features: FeatureName[]): ExitClassifier {
  return loadClassifier({
    kind: 'crf',
    features,
    mean: features.map(() => 0),
    std: features.map(() => 1),
    emission: p.emission,
    emissionBias: p.bias,
    transition: p.transition,
    start: p.start,
  });
}

/** Samples y ~ p(y | x) exactly: forward filtering, then backward sampling. */
function sampleLabels(p: CrfParams, z: number[][], random: () => number): (0 | 1)[] {
  const emit = (t: number, y: number): number => p.bias[y] + z[t].reduce((a, v, j) => a + p.emission[y][j] * v, 0);
  const alpha: number[][] = [[p.start[0] + emit(0, 0), p.start[1] + emit(0, 1)]];
  for (let t = 1; t < z.length; t++) {
    const prev = alpha[t - 1];
    alpha.push(
      [0, 1].map((y) => emit(t, y) + Math.log(Math.exp(prev[0] + p.transition[0][y]) + Math.exp(prev[1] + p.transition[1][y]))),
    );
  }
  const y = new Array<0 | 1>(z.length);
  const pick = (w0: number, w1: number): 0 | 1 => (random() < 1 / (1 + Math.exp(w0 - w1)) ? 1 : 0);
  y[z.length - 1] = pick(alpha[z.length - 1][0], alpha[z.length - 1][1]);
  for (let t = z.length - 2; t >= 0; t--) {
    const next = y[t + 1];
    y[t] = pick(alpha[t][0] + p.transition[0][next], alpha[t][1] + p.transition[1][next]);
  }
  return y;
}

describe('CRF', () => {
  test('the objective equals brute-force enumeration, and its gradient matches finite differences', () => {
    const random = seededRandom(31);
    const nFeatures = 3;
    const sequences: CrfSequence[] = [];
    for (let s = 0; s < 25; s++) {
      const length = 1 + Math.floor(random() * 6);
      sequences.push({
        x: Array.from({ length }, () => Array.from({ length: nFeatures }, () => gaussian(random))),
        y: Array.from({ length }, () => (random() < 0.5 ? 1 : 0)),
      });
    }
    const params = randomParams(nFeatures, random, 0.8);
    const theta = flat(params);
    expect(theta.length).toBe(crfParameterCount(nFeatures));
    const l2 = 0.05;

    let expected = 0;
    for (const seq of sequences) {
      const logZ = Math.log(
        allLabellings(seq.x.length).reduce((a, y) => a + Math.exp(logPotential(params, seq.x, y)), 0),
      );
      expected += logZ - logPotential(params, seq.x, seq.y);
    }
    expected = expected / sequences.length + 0.5 * l2 * theta.reduce((a, v) => a + v * v, 0);
    const { value, gradient } = crfObjective(theta, sequences, nFeatures, l2);
    expect(value).toBeCloseTo(expected, 10);

    const h = 1e-5;
    for (let i = 0; i < theta.length; i++) {
      const plus = theta.slice();
      const minus = theta.slice();
      plus[i] += h;
      minus[i] -= h;
      const numeric =
        (crfObjective(plus, sequences, nFeatures, l2).value - crfObjective(minus, sequences, nFeatures, l2).value) /
        (2 * h);
      expect(Math.abs(numeric - gradient[i])).toBeLessThan(1e-8);
    }
  });

  test('score() is the filtering marginal P(y_t = 1 | x_1..x_t), and begin() restarts the chain', () => {
    const random = seededRandom(32);
    const params = randomParams(2, random, 1);
    const classifier = crfClassifier(params, ['p1', 'entropy']);
    for (let example = 0; example < 3; example++) {
      const z = Array.from({ length: 8 }, () => [gaussian(random), gaussian(random)]);
      classifier.begin();
      for (let t = 0; t < z.length; t++) {
        const prefix = z.slice(0, t + 1);
        let total = 0;
        let stop = 0;
        for (const y of allLabellings(t + 1)) {
          const w = Math.exp(logPotential(params, prefix, y));
          total += w;
          if (y[t] === 1) stop += w;
        }
        expect(classifier.score(z[t])).toBeCloseTo(stop / total, 12);
      }
    }
  });

  test('the filtering message stays finite for long chains and extreme weights', () => {
    const params: CrfParams = {
      emission: [[-300], [300]],
      bias: [0, 0],
      transition: [
        [50, -50],
        [-50, 50],
      ],
      start: [0, 0],
    };
    const classifier = crfClassifier(params, ['p1']);
    classifier.begin();
    for (let t = 0; t < 1000; t++) {
      const s = classifier.score([t % 2 === 0 ? 3 : -3]);
      expect(s).toBeGreaterThanOrEqual(0);
      expect(s).toBeLessThanOrEqual(1);
    }
  });

  test('training recovers a known model from sequences sampled from it', () => {
    const random = seededRandom(33);
    const features: FeatureName[] = ['gap', 'entropy'];
    // Raw-feature parameters: stop is favoured by a large gap and a low entropy, and is sticky.
    const truth: CrfParams = {
      emission: [
        [-0.5, 0.4],
        [1.0, -0.8],
      ],
      bias: [0.2, -0.6],
      transition: [
        [0.8, -0.7],
        [-1.0, 1.2],
      ],
      start: [0.3, -0.3],
    };
    const makeSequence = (): number[][] =>
      Array.from({ length: 10 }, (_, t) => [0.2 * t + gaussian(random), 1.5 - 0.1 * t + 0.7 * gaussian(random)]);
    const sequences: CrfSequence[] = [];
    for (let s = 0; s < 2000; s++) {
      const x = makeSequence();
      sequences.push({ x, y: sampleLabels(truth, x, random) });
    }
    const fit = fitCrf(sequences, { features, l2: 1e-4 });
    expect(fit.reason).toBe('gradient');

    // The same weights in raw-feature units: w_raw = w / std, bias_raw = bias − Σ w·mean / std.
    const json = fit.classifier.toJSON() as SerializedCrf;
    const rawEmission = json.emission.map((w) => w.map((v, j) => v / json.std[j]));
    const rawBias = json.emission.map(
      (w, y) => json.emissionBias[y] - w.reduce((a, v, j) => a + (v * json.mean[j]) / json.std[j], 0),
    );
    // Only contrasts are identifiable: emission differences between labels; biases folded into start and
    // transition (they count once per position, as start + incoming transition do); transitions up to a
    // constant.
    const contrasts = (emission: number[][], bias: number[], transition: number[][], start: number[]): number[] => {
      const foldedStart = [start[0] + bias[0], start[1] + bias[1]];
      const folded = transition.map((row) => row.map((v, b) => v + bias[b]));
      return [
        ...emission[1].map((v, j) => v - emission[0][j]),
        foldedStart[1] - foldedStart[0],
        folded[0][1] - folded[0][0],
        folded[1][0] - folded[0][0],
        folded[1][1] - folded[0][0],
      ];
    };
    const expected = contrasts(truth.emission, truth.bias, truth.transition, truth.start);
    const recovered = contrasts(rawEmission, rawBias, json.transition, json.start);
    recovered.forEach((v, i) => expect(Math.abs(v - expected[i])).toBeLessThan(0.2));

    // And the online scores agree with the true model's on fresh sequences.
    const trueClassifier = crfClassifier(truth, features);
    let totalDifference = 0;
    let count = 0;
    for (let s = 0; s < 300; s++) {
      const x = makeSequence();
      fit.classifier.begin();
      trueClassifier.begin();
      for (const row of x) {
        totalDifference += Math.abs(fit.classifier.score(row) - trueClassifier.score(row));
        count++;
      }
    }
    expect(totalDifference / count).toBeLessThan(0.02);
  });

  test('training is deterministic', () => {
    const random = seededRandom(34);
    const sequences: CrfSequence[] = Array.from({ length: 100 }, () => {
      const x = Array.from({ length: 6 }, (_, t) => [random(), t / 6]);
      return { x, y: x.map((row) => (row[0] + row[1] > 0.9 ? 1 : 0)) as (0 | 1)[] };
    });
    const a = trainCrf(sequences, { features: ['p1', 'layer'], seed: 1 }).toJSON();
    const b = trainCrf(sequences, { features: ['p1', 'layer'], seed: 2 }).toJSON();
    expect(b).toEqual(a);
  });

  test('rejects degenerate training sets and bad options', () => {
    const ok = { features: ['p1'] as FeatureName[] };
    expectError(
      () => trainCrf([{ x: [[0.1], [0.2]], y: [1, 1] }], ok),
      'INVALID_OPTION',
      /all 2 training labels are 1; a CRF needs examples of both classes/,
    );
    expectError(() => trainCrf([], ok), 'INVALID_OPTION', /sequences: must be a non-empty array/);
    expectError(() => trainCrf([{ x: [], y: [] }], ok), 'INVALID_OPTION', /sequences\[0\] is empty/);
    expectError(() => trainCrf([{ x: [[0.1]], y: [0, 1] }], ok), 'INVALID_OPTION', /1 rows of x but 2 labels/);
    expectError(() => trainCrf([{ x: [[0.1, 2]], y: [0] }], ok), 'INVALID_OPTION', /x\[0\] has 2 values, expected 1/);
    const good: CrfSequence[] = [{ x: [[0.1], [0.9]], y: [0, 1] }];
    expectError(() => trainCrf(good, { ...ok, l2: 0 }), 'INVALID_OPTION', /l2: must be a finite number > 0/);
    expectError(() => trainCrf(good, { ...ok, maxIterations: 0 }), 'INVALID_OPTION', /maxIterations/);
  });
});

// --- calibration ---------------------------------------------------------------------------------------

/**
 * The definition, directly: simulate every distinct score and +Infinity as the threshold, and keep the
 * cheapest one meeting the target (ties: the larger threshold). Returns a function of the target, so the
 * simulations are shared between targets.
 */
function bruteForceCalibrator(
  examples: CalibrationExample[],
): (target: number) => { threshold: number; agreement: number; meanLayers: number } {
  const candidates = [Infinity, ...new Set(examples.flatMap((e) => e.checks.map((c) => c.score)))];
  const outcomes = candidates.map((threshold) => ({ threshold, ...simulateExit(examples, threshold) }));
  return (target) => {
    let best: { threshold: number; agreement: number; meanLayers: number } | undefined;
    for (const { threshold, agreement, meanLayers } of outcomes) {
      if (agreement < target) continue;
      if (!best || meanLayers < best.meanLayers || (meanLayers === best.meanLayers && threshold > best.threshold)) {
        best = { threshold, agreement, meanLayers };
      }
    }
    return best!;
  };
}

function randomExamples(random: () => number, tiedScores: boolean): CalibrationExample[] {
  const nExamples = 1 + Math.floor(random() * 25);
  return Array.from({ length: nExamples }, () => {
    const nLayer = 1 + Math.floor(random() * 12);
    const checks: CalibrationExample['checks'] = [];
    for (let layer = 0; layer < nLayer; layer++) {
      if (random() < 0.4) continue; // some layers unchecked; some examples with no checks at all
      const raw = random() * 0.6 + (0.4 * layer) / nLayer;
      checks.push({
        layer,
        score: tiedScores ? Math.round(raw * 5) / 5 : raw,
        agrees: random() < 0.3 + (0.7 * layer) / nLayer,
      });
    }
    return { nLayer, checks };
  });
}

describe('calibration', () => {
  const hand: CalibrationExample[] = [
    {
      nLayer: 4,
      checks: [
        { layer: 0, score: 0.2, agrees: false },
        { layer: 1, score: 0.9, agrees: true },
        { layer: 2, score: 0.95, agrees: true },
      ],
    },
    {
      nLayer: 4,
      checks: [
        { layer: 1, score: 0.5, agrees: true },
        { layer: 3, score: 0.7, agrees: true },
      ],
    },
    { nLayer: 4, checks: [] },
  ];

  test('simulateExit on a hand-worked example', () => {
    expect(simulateExit(hand, 0.6)).toEqual({ agreement: 1, meanLayers: 10 / 3, histogram: [0, 1, 0, 2] });
    expect(simulateExit(hand, 0.1)).toEqual({ agreement: 2 / 3, meanLayers: 7 / 3, histogram: [1, 1, 0, 1] });
    expect(simulateExit(hand, Infinity)).toEqual({ agreement: 1, meanLayers: 4, histogram: [0, 0, 0, 3] });
    // A score equal to the threshold exits (>=).
    expect(simulateExit(hand, 0.5).histogram).toEqual([0, 2, 0, 1]);
  });

  test('calibrateThreshold on the hand-worked example', () => {
    // Agreement 1 is lost only when example 0 exits at layer 0 (threshold <= 0.2); the cheapest safe
    // threshold is 0.5 (example 1 exits at layer 1). Below it, 0.2 costs 7/3 layers at agreement 2/3.
    expect(calibrateThreshold(hand, 1)).toEqual({ threshold: 0.5, agreement: 1, meanLayers: 8 / 3 });
    expect(calibrateThreshold(hand, 0)).toEqual({ threshold: 0.2, agreement: 2 / 3, meanLayers: 7 / 3 });
    expect(thresholdSweep(hand)).toEqual([
      { threshold: Infinity, agreement: 1, meanLayers: 4 },
      { threshold: 0.95, agreement: 1, meanLayers: 11 / 3 },
      { threshold: 0.9, agreement: 1, meanLayers: 10 / 3 },
      { threshold: 0.7, agreement: 1, meanLayers: 10 / 3 },
      { threshold: 0.5, agreement: 1, meanLayers: 8 / 3 },
      { threshold: 0.2, agreement: 2 / 3, meanLayers: 7 / 3 },
    ]);
  });

  test('calibrateThreshold equals a brute-force search on random data (with and without tied scores)', () => {
    const random = seededRandom(41);
    // Mismatches are collected and asserted once: a jest expect() per comparison would dominate the run time.
    const mismatches: unknown[] = [];
    const same = (a: object, b: object): boolean => JSON.stringify(a) === JSON.stringify(b);
    for (let trial = 0; trial < 300; trial++) {
      const examples = randomExamples(random, trial % 2 === 0);
      const sweep = thresholdSweep(examples);
      const bruteForce = bruteForceCalibrator(examples);
      // Targets: the edges, random values, and every achievable agreement (where off-by-one bugs live).
      const targets = [0, 1, random(), random(), ...sweep.map((p) => p.agreement)];
      for (const target of targets) {
        const fast = calibrateThreshold(examples, target);
        const slow = bruteForce(target);
        // JSON writes Infinity as null, so compare thresholds directly.
        if (!same(fast, slow) || fast.threshold !== slow.threshold || fast.agreement < target) {
          mismatches.push({ trial, target, fast, slow });
        }
      }
      // Every sweep point is what simulateExit reports at that threshold, thresholds strictly decrease,
      // and cost never increases as the threshold falls.
      sweep.forEach((point, k) => {
        const simulated = simulateExit(examples, point.threshold);
        if (point.agreement !== simulated.agreement || point.meanLayers !== simulated.meanLayers) {
          mismatches.push({ trial, point, simulated });
        }
        if (k > 0 && !(point.threshold < sweep[k - 1].threshold && point.meanLayers <= sweep[k - 1].meanLayers)) {
          mismatches.push({ trial, k, point, previous: sweep[k - 1] });
        }
      });
    }
    expect(mismatches).toEqual([]);
  });

  test('target 1.0 never accepts a disagreement; target 0 exits at every first check', () => {
    const random = seededRandom(42);
    for (let trial = 0; trial < 50; trial++) {
      const examples = randomExamples(random, false);
      expect(calibrateThreshold(examples, 1).agreement).toBe(1);
      const cheapest = calibrateThreshold(examples, 0);
      const firstChecks =
        examples.reduce((a, e) => a + (e.checks.length > 0 ? e.checks[0].layer + 1 : e.nLayer), 0) / examples.length;
      expect(cheapest.meanLayers).toBe(firstChecks);
    }
  });

  test('ties: equal scores in different examples move together', () => {
    const tied: CalibrationExample[] = [
      { nLayer: 3, checks: [{ layer: 0, score: 0.5, agrees: false }, { layer: 2, score: 0.9, agrees: true }] },
      { nLayer: 3, checks: [{ layer: 1, score: 0.5, agrees: true }] },
    ];
    // Threshold 0.5 moves both examples at once (agreement 1/2); there is no threshold that moves only one.
    expect(thresholdSweep(tied)).toEqual([
      { threshold: Infinity, agreement: 1, meanLayers: 3 },
      { threshold: 0.9, agreement: 1, meanLayers: 3 },
      { threshold: 0.5, agreement: 0.5, meanLayers: 1.5 },
    ]);
    expect(calibrateThreshold(tied, 0.5)).toEqual({ threshold: 0.5, agreement: 0.5, meanLayers: 1.5 });
    // At 0.9 example 0 exits at its last layer: no cheaper than full depth, so the larger threshold wins.
    expect(calibrateThreshold(tied, 0.75)).toEqual({ threshold: Infinity, agreement: 1, meanLayers: 3 });
  });

  test('examples without checks never exit', () => {
    const none: CalibrationExample[] = [
      { nLayer: 5, checks: [] },
      { nLayer: 3, checks: [] },
    ];
    expect(calibrateThreshold(none, 0.5)).toEqual({ threshold: Infinity, agreement: 1, meanLayers: 4 });
    expect(thresholdSweep(none)).toEqual([{ threshold: Infinity, agreement: 1, meanLayers: 4 }]);
    expect(simulateExit(none, -Infinity)).toEqual({ agreement: 1, meanLayers: 4, histogram: [0, 0, 1, 0, 1] });
  });

  test('thresholdSweep maxPoints keeps evenly spaced points including both ends', () => {
    const examples = randomExamples(seededRandom(43), false);
    const all = thresholdSweep(examples);
    expect(all.length).toBeGreaterThan(5);
    const few = thresholdSweep(examples, 5);
    expect(few).toHaveLength(5);
    expect(few[0]).toEqual(all[0]);
    expect(few[4]).toEqual(all[all.length - 1]);
    expect(thresholdSweep(examples, all.length + 10)).toEqual(all);
  });

  test('scales to a large calibration set (the sweep is O(N log N))', () => {
    const random = seededRandom(44);
    const examples: CalibrationExample[] = Array.from({ length: 10000 }, () => ({
      nLayer: 32,
      checks: Array.from({ length: 32 }, (_, layer) => ({ layer, score: random() + layer / 32, agrees: random() < 0.9 })),
    }));
    const started = Date.now();
    const result = calibrateThreshold(examples, 0.95);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(result.agreement).toBeGreaterThanOrEqual(0.95);
    expect(simulateExit(examples, result.threshold)).toMatchObject({
      agreement: result.agreement,
      meanLayers: result.meanLayers,
    });
  });

  test('rejects malformed examples and options', () => {
    expectError(() => simulateExit([], 0.5), 'INVALID_OPTION', /examples: must be a non-empty array/);
    const bad = (checks: unknown[], nLayer = 4): CalibrationExample[] => [{ nLayer, checks } as CalibrationExample];
    expectError(
      () => simulateExit(bad([{ layer: 2, score: 0, agrees: true }, { layer: 1, score: 0, agrees: true }]), 0),
      'INVALID_OPTION',
      /examples\[0\]\.checks\[1\]\.layer must be an integer in \(2, 4\)/,
    );
    expectError(() => simulateExit(bad([{ layer: 4, score: 0, agrees: true }]), 0), 'INVALID_OPTION', /layer/);
    expectError(() => simulateExit(bad([{ layer: 0, score: NaN, agrees: true }]), 0), 'INVALID_OPTION', /score must be a finite/);
    expectError(() => simulateExit(bad([{ layer: 0, score: 1, agrees: 1 }]), 0), 'INVALID_OPTION', /agrees must be a boolean/);
    expectError(() => simulateExit(bad([], 0), 0), 'INVALID_OPTION', /nLayer must be a positive integer/);
    expectError(() => simulateExit(hand, NaN), 'INVALID_OPTION', /threshold/);
    expectError(() => calibrateThreshold(hand, 1.5), 'INVALID_OPTION', /target: must be a number in \[0, 1\]/);
    expectError(() => thresholdSweep(hand, 1), 'INVALID_OPTION', /maxPoints/);
  });
});
