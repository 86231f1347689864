/**
 * The hidden-state probe ('probe' feature, lib/exit/probe.ts): the feature a live read computes against a float64
 * computation from the hidden state read independently; training with it and an exit file round trip that decides
 * identically on the bundled model; refused files and options.
 */
import * as fs from 'fs';
import * as path from 'path';
import { seededRandom } from '../../lib/exit/classifier';
import { Trace, collectTraces } from '../../lib/exit/collect';
import { Example } from '../../lib/exit/data';
import { ExitDecider } from '../../lib/exit/decider';
import { EXIT_FILE_FORMAT, EXIT_FILE_FORMAT_MLP_PROBE, ExitFile, exitFileFormat, loadExitFile, policyFromExitFile, saveExitFile } from '../../lib/exit/exit_file';
import { FeatureExtractor, LensReading } from '../../lib/exit/lens';
import { loadClassifier } from '../../lib/exit/load_classifier';
import { classifierPolicy, ExitPolicy, observingPolicy } from '../../lib/exit/policy';
import { HiddenStateProbe, MlpHiddenStateProbe, PROBE_FORMS } from '../../lib/exit/probe';
import { trainPolicy } from '../../lib/exit/train';
import { TransformerContext, TransformerModel } from '../../lib/model/transformer';
import { BUNDLED_MODEL, tmpDir } from '../helpers';

const STORIES = [
  'Once upon a time there was a little girl named Lily. She liked to play in the park with her dog. One day the dog ran after a red ball and Lily ran after the dog.',
  'Tom had a big box of toys. He wanted to share them with his friend Sam. Sam was happy and they played all day in the sun.',
  'The cat sat on the mat. It was a warm day and the cat was sleepy. A bird came to the window and the cat looked at it.',
  'Mia found a shiny stone by the river. She showed it to her mom. Her mom said it was a very special stone and Mia smiled.',
  'Ben and his dad went to the shop. They bought some apples and some bread. On the way home Ben saw a big truck and he waved.',
  'There was a small frog in the pond. The frog wanted to jump very high. He tried and tried, and one day he jumped over a log.',
];

/** Every position of every story as an example (document = story), as loadExamples does for plain text. */
function examplesOf(model: TransformerModel, stories: string[], docs: number[]): Example[] {
  return stories.flatMap((s, i) => {
    const tokens = model.tokenizer.encode(s);
    return tokens.slice(1).map((gold, k) => ({ tokens: tokens.slice(0, k + 1), gold, doc: docs[i] }));
  });
}

function randomProbe(nLayer: number, nEmbd: number, seed: number): HiddenStateProbe {
  const r = seededRandom(seed);
  const weights = Array.from({ length: nLayer }, () => Array.from({ length: nEmbd + 3 }, () => r() * 2 - 1));
  return new HiddenStateProbe(nEmbd, weights, Array.from({ length: nLayer }, () => r() - 0.5));
}

function randomMlpProbe(nLayer: number, nEmbd: number, hidden: number, seed: number): MlpHiddenStateProbe {
  const r = seededRandom(seed);
  const row = (n: number, scale: number) => Array.from({ length: n }, () => (r() * 2 - 1) * scale);
  return new MlpHiddenStateProbe(nEmbd, {
    w1: Array.from({ length: hidden }, () => row(nEmbd + 3, 0.3)),
    b1: Array.from({ length: nLayer }, () => row(hidden, 0.5)),
    w2: row(hidden, 1),
    b2: row(nLayer, 0.5),
  });
}

/** The decision row's hidden state after every layer but the last, read by a plain forward (the independent side). */
function hiddenAfterEachLayer(ctx: TransformerContext, tokens: number[]): Float32Array[] {
  const reference: Float32Array[] = [];
  tokens.forEach((t, i) => (ctx.native.tokens[i] = t));
  ctx.forward(tokens.length, 0, (_layer, rows) => {
    const h = new Float32Array(ctx.model.config.nEmbd);
    ctx.native.readHidden(rows - 1, 1, h);
    reference.push(h);
    return false;
  });
  return reference;
}

describe('the hidden-state probe on the bundled model', () => {
  let model: TransformerModel;
  let ctx: TransformerContext;
  beforeAll(() => {
    model = TransformerModel.load(BUNDLED_MODEL);
    ctx = model.createContext({ contextSize: 64, batchSize: 64, threads: 1 });
  });
  afterAll(() => {
    ctx.dispose();
    model.dispose();
  });

  test('the probe feature of a live read equals a float64 computation from the hidden state read independently', () => {
    const { nLayer, nEmbd } = model.config;
    const probe = randomProbe(nLayer, nEmbd, 11);
    const raw = probe.toJSON();
    for (const text of STORIES.slice(0, 3)) {
      const tokens = model.tokenizer.encode(text).slice(0, 20);
      const n = tokens.length;
      // Independently: the decision row's hidden state after every layer but the last, read by a plain forward.
      const reference = hiddenAfterEachLayer(ctx, tokens);
      expect(reference).toHaveLength(nLayer - 1);
      // Live: a decider whose policy reads 'probe'.
      const extractor = new FeatureExtractor(['probe'], probe);
      const live: { layer: number; hidden: Float32Array; reading: LensReading; probe: number }[] = [];
      const decider = new ExitDecider(
        ctx,
        observingPolicy(
          { minLayer: 1, checkEvery: 1 },
          { mode: 'faithful' },
          (layer, r) => live.push({ layer, hidden: Float32Array.from(r.hidden!), reading: { ...r }, probe: extractor.next(r, layer, nLayer)[0] }),
          ['probe'],
        ),
      );
      tokens.forEach((t, i) => (ctx.native.tokens[i] = t));
      decider.forward(n, 0);
      expect(live).toHaveLength(nLayer - 1);
      live.forEach((c, i) => {
        expect(c.layer).toBe(i);
        expect(Array.from(c.hidden)).toEqual(Array.from(reference[i]));
        const h = reference[i];
        let ss = 0;
        for (let j = 0; j < nEmbd; j++) ss += h[j] * h[j];
        const rms = Math.sqrt(ss / nEmbd);
        const w = raw.weights[c.layer];
        let expected = raw.bias[c.layer];
        for (let j = 0; j < nEmbd; j++) expected += (w[j] * h[j]) / rms;
        expected += w[nEmbd] * c.reading.p1 + w[nEmbd + 1] * c.reading.gap + w[nEmbd + 2] * c.reading.entropy;
        expect(Math.abs(c.probe - expected)).toBeLessThan(1e-9 * (1 + Math.abs(expected)));
      });
    }
  });

  test('train with the probe, save, load: the exit file carries the probe and decides identically', () => {
    const nLayer = model.config.nLayer;
    const schedule = { minLayer: 1, checkEvery: 1 };
    const lens = { mode: 'faithful' as const };
    const features = ['p1', 'gap', 'entropy', 'layer', 'probe'] as const;
    const fit = collectTraces(ctx, examplesOf(model, STORIES.slice(0, 4), [0, 1, 2, 3]), schedule, lens, undefined, undefined, [...features]);
    const calibration = collectTraces(ctx, examplesOf(model, STORIES.slice(4), [4, 5]), schedule, lens, undefined, undefined, [...features]);
    expect(fit[0].checks[0].hidden).toHaveLength(model.config.nEmbd);
    for (const form of PROBE_FORMS)
    for (const variant of [[...features], ['probe']] as const) {
      const t = trainPolicy(fit, schedule, lens, { classifier: 'svm', label: 'final', target: 0.7, seed: 1, features: [...variant], probe: form, calibrationTraces: calibration, bound: 'positions' });
      const c = t.classifier!;
      expect(c.probe).toBeDefined();
      expect(c.probe!.form).toBe(form);
      const json = c.toJSON().probe!;
      expect('kind' in json ? json.outputBias : json.weights).toHaveLength(nLayer);
      const file: ExitFile = {
        format: exitFileFormat(c.toJSON()),
        model: { fingerprint: model.fingerprint, name: model.config.name, nLayer },
        policy: { kind: 'svm', schedule, lens, threshold: t.threshold, classifier: c.toJSON(), features: t.features },
        training: { label: 'final', data: 'test', examples: fit.length, window: 64, target: 0.7, seed: 1, createdAt: 'test' },
        metrics: {},
      };
      const p = path.join(tmpDir('adainfer-probe-'), 'probe.exit.json');
      saveExitFile(p, file);
      const loaded = loadExitFile(p, { fingerprint: model.fingerprint, name: model.config.name, nLayer });
      expect(loaded.format).toBe(form === 'mlp' ? EXIT_FILE_FORMAT_MLP_PROBE : EXIT_FILE_FORMAT);
      expect(loaded.policy.classifier!.probe).toEqual(c.toJSON().probe);
      const decisions = (policy: ExitPolicy) => {
        const decider = new ExitDecider(ctx, policy);
        return examplesOf(model, STORIES.slice(4), [4, 5]).map((ex) => {
          ex.tokens.forEach((tok, i) => (ctx.native.tokens[i] = tok));
          return decider.forward(ex.tokens.length, 0);
        });
      };
      const before = decisions(classifierPolicy(c, t.threshold, schedule, lens));
      expect(decisions(policyFromExitFile(loaded))).toEqual(before);
      // It exits somewhere and not everywhere: the comparison decides something.
      expect(new Set(before.map((o) => o.layers)).size).toBeGreaterThan(1);
    }
  });

  test('refused: a probe of the wrong shape or layer count, a probe without the feature and the reverse, the feature without a probe', () => {
    const nLayer = model.config.nLayer;
    const nEmbd = model.config.nEmbd;
    const probe = randomProbe(nLayer, nEmbd, 3).toJSON();
    const classifier = { kind: 'svm', features: ['p1', 'probe'], mean: [0, 0], std: [1, 1], weights: [1, 1], bias: 0, probe };
    expect(loadClassifier(structuredClone(classifier)).probe).toBeDefined();
    const bad = (change: (c: typeof classifier) => void, message: string) => {
      const c = structuredClone(classifier);
      change(c);
      expect(() => loadClassifier(c)).toThrow(expect.objectContaining({ message: expect.stringContaining(message) }));
    };
    bad((c) => c.probe.weights[2].pop(), 'classifier.probe.weights[2]');
    bad((c) => c.probe.bias.pop(), 'classifier.probe.weights has');
    bad((c) => ((c.features = ['p1', 'gap']), 0), "no 'probe' feature");
    bad((c) => delete (c as { probe?: unknown }).probe, 'but no probe');
    // A probe for another layer count: EXIT_FILE naming it.
    const dir = tmpDir('adainfer-probe-bad-');
    const file = {
      format: EXIT_FILE_FORMAT,
      model: { fingerprint: model.fingerprint, name: model.config.name, nLayer },
      policy: { kind: 'svm', schedule: { minLayer: 1, checkEvery: 1 }, lens: { mode: 'faithful' }, threshold: 0, classifier: { ...classifier, probe: randomProbe(nLayer - 1, nEmbd, 3).toJSON() }, features: ['p1', 'probe'] },
      training: { label: 'final', data: 'test', examples: 1, window: 64, target: 0.9, seed: 1, createdAt: 'test' },
      metrics: {},
    };
    fs.writeFileSync(path.join(dir, 'layers.json'), JSON.stringify(file));
    expect(() => loadExitFile(path.join(dir, 'layers.json'))).toThrow(expect.objectContaining({ code: 'EXIT_FILE', message: expect.stringContaining('probe has 9 layers') }));
    expect(() => new FeatureExtractor(['p1', 'probe'])).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
    const traces: Trace[] = [{ nLayer: 2, final: 1, doc: 0, checks: [{ layer: 0, top1: 1, p1: 0.9, p2: 0.1, gap: 0.8, entropy: 0.3 }] }];
    expect(() =>
      trainPolicy([0, 1, 2, 3].map((doc) => ({ ...traces[0], doc })), { minLayer: 1, checkEvery: 1 }, { mode: 'faithful' }, { classifier: 'threshold', label: 'final', target: 0.9, seed: 1, features: ['probe'] }),
    ).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
    expect(() =>
      trainPolicy([0, 1, 2, 3].map((doc) => ({ ...traces[0], doc })), { minLayer: 1, checkEvery: 1 }, { mode: 'faithful' }, { classifier: 'svm', label: 'final', target: 0.9, seed: 1, features: ['p1', 'probe'] }),
    ).toThrow(expect.objectContaining({ code: 'DATA_FILE' }));
  });
  test('the MLP probe of a live read equals a float64 computation from the hidden state read independently', () => {
    const { nLayer, nEmbd } = model.config;
    const probe = randomMlpProbe(nLayer, nEmbd, 16, 5);
    const raw = probe.toJSON();
    const tokens = model.tokenizer.encode(STORIES[3]).slice(0, 24);
    const n = tokens.length;
    const reference = hiddenAfterEachLayer(ctx, tokens);
    const extractor = new FeatureExtractor(['probe'], probe);
    const live: { layer: number; reading: LensReading; probe: number }[] = [];
    const decider = new ExitDecider(
      ctx,
      observingPolicy({ minLayer: 1, checkEvery: 1 }, { mode: 'faithful' }, (layer, r) => live.push({ layer, reading: { ...r }, probe: extractor.next(r, layer, nLayer)[0] }), ['probe']),
    );
    tokens.forEach((t, i) => (ctx.native.tokens[i] = t));
    decider.forward(n, 0);
    expect(live).toHaveLength(nLayer - 1);
    const scores = new Set<number>();
    live.forEach((c, i) => {
      const h = reference[i];
      let ss = 0;
      for (let j = 0; j < nEmbd; j++) ss += h[j] * h[j];
      const rms = Math.sqrt(ss / nEmbd);
      const x = [...Array.from(h, (v) => v / rms), c.reading.p1, c.reading.gap, c.reading.entropy];
      let expected = raw.outputBias[c.layer];
      raw.hiddenWeights.forEach((w, u) => {
        let a = raw.hiddenBias[c.layer][u];
        w.forEach((wj, j) => (a += wj * x[j]));
        expected += raw.outputWeights[u] * Math.tanh(a);
      });
      expect(Math.abs(c.probe - expected)).toBeLessThan(1e-9 * (1 + Math.abs(expected)));
      scores.add(c.probe);
    });
    expect(scores.size).toBe(nLayer - 1);
  });

  test('training the MLP probe is deterministic with the seed', () => {
    const schedule = { minLayer: 1, checkEvery: 1 };
    const lens = { mode: 'faithful' as const };
    const fit = collectTraces(ctx, examplesOf(model, STORIES.slice(0, 4), [0, 1, 2, 3]), schedule, lens, undefined, undefined, ['probe']);
    const calibration = collectTraces(ctx, examplesOf(model, STORIES.slice(4), [4, 5]), schedule, lens, undefined, undefined, ['probe']);
    const train = (seed: number) =>
      trainPolicy(fit, schedule, lens, { classifier: 'svm', label: 'final', target: 0.7, seed, features: ['probe'], probe: 'mlp', calibrationTraces: calibration, bound: 'positions' });
    const a = train(1);
    expect(train(1).classifier!.toJSON()).toEqual(a.classifier!.toJSON());
    expect(train(2).classifier!.toJSON().probe).not.toEqual(a.classifier!.toJSON().probe);
  });

  test('refused: an MLP probe of the wrong shape, for another layer count, or in a format adainfer.exit/1 file', () => {
    const nLayer = model.config.nLayer;
    const nEmbd = model.config.nEmbd;
    const probe = randomMlpProbe(nLayer, nEmbd, 4, 3).toJSON();
    const classifier = { kind: 'svm', features: ['probe'], mean: [0], std: [1], weights: [1], bias: 0, probe };
    expect(loadClassifier(structuredClone(classifier)).probe!.form).toBe('mlp');
    const bad = (change: (c: typeof classifier) => void, message: string) => {
      const c = structuredClone(classifier);
      change(c);
      expect(() => loadClassifier(c)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION', message: expect.stringContaining(message) }));
    };
    bad((c) => c.probe.hiddenWeights[1].pop(), 'classifier.probe.hiddenWeights[1]');
    bad((c) => c.probe.hiddenWeights.pop(), 'classifier.probe.hiddenWeights has 3 rows');
    bad((c) => c.probe.hiddenBias[2].pop(), 'classifier.probe.hiddenBias[2]');
    bad((c) => c.probe.outputBias.pop(), 'classifier.probe.hiddenBias has');
    bad((c) => ((c.probe as { weights?: unknown }).weights = [[1]]), 'classifier.probe');
    const dir = tmpDir('adainfer-probe-mlp-bad-');
    const file = (format: string, p: unknown) => ({
      format,
      model: { fingerprint: model.fingerprint, name: model.config.name, nLayer },
      policy: { kind: 'svm', schedule: { minLayer: 1, checkEvery: 1 }, lens: { mode: 'faithful' }, threshold: 0, classifier: { ...classifier, probe: p }, features: ['probe'] },
      training: { label: 'final', data: 'test', examples: 1, window: 64, target: 0.9, seed: 1, createdAt: 'test' },
      metrics: {},
    });
    const refused = (name: string, f: unknown, message: string) => {
      fs.writeFileSync(path.join(dir, name), JSON.stringify(f));
      expect(() => loadExitFile(path.join(dir, name))).toThrow(expect.objectContaining({ code: 'EXIT_FILE', message: expect.stringContaining(message) }));
    };
    fs.writeFileSync(path.join(dir, 'good.json'), JSON.stringify(file(EXIT_FILE_FORMAT_MLP_PROBE, probe)));
    expect(loadExitFile(path.join(dir, 'good.json')).format).toBe(EXIT_FILE_FORMAT_MLP_PROBE);
    refused('v1.json', file(EXIT_FILE_FORMAT, probe), 'cannot hold');
    refused('layers.json', file(EXIT_FILE_FORMAT_MLP_PROBE, randomMlpProbe(nLayer - 1, nEmbd, 4, 3).toJSON()), 'probe has 9 layers');
    const narrow = randomMlpProbe(nLayer, nEmbd, 4, 3).toJSON();
    narrow.hiddenWeights[0].pop();
    refused('width.json', file(EXIT_FILE_FORMAT_MLP_PROBE, narrow), 'hiddenWeights[0]');
    refused('format.json', file('adainfer.exit/3', probe), 'format');
  });
});
