/**
 * AdaInfer on real models: lens features against independent references, exits that reproduce full depth,
 * exit files, deterministic training, and the API's exit option.
 */
import * as fs from 'fs';
import * as path from 'path';
import { loadModel } from '../../lib';
import { readGGUF } from '../../lib/gguf';
import { TransformerModel } from '../../lib/model/transformer';
import { Sequence } from '../../lib/engine/sequence';
import { collectTraces } from '../../lib/exit/collect';
import { loadExamples } from '../../lib/exit/data';
import { EXIT_FILE_FORMAT, ExitFile, loadExitFile, policyFromExitFile, saveExitFile } from '../../lib/exit/exit_file';
import { ExitDecider } from '../../lib/exit/decider';
import { ExitPolicy, neverPolicy, thresholdPolicy } from '../../lib/exit/policy';
import { trainPolicy } from '../../lib/exit/train';
import { BUNDLED_MODEL, BUNDLED_PLAIN_MODEL, describeShared, tmpDir } from '../helpers';
import { argmaxOf, headLogits, softmaxAt, weightReader } from '../reference';

/** p1, p2, gap, entropy of softmax(z) in float64: the reference the native lens is held to. */
function softmaxFeatures(z: ArrayLike<number>): { top1: number; p1: number; p2: number; gap: number; entropy: number } {
  let max = -Infinity;
  for (let i = 0; i < z.length; i++) max = Math.max(max, z[i]);
  let sum = 0;
  for (let i = 0; i < z.length; i++) sum += Math.exp(z[i] - max);
  const p = Array.from({ length: z.length }, (_, i) => Math.exp(z[i] - max) / sum);
  const order = p.map((v, i) => i).sort((a, b) => p[b] - p[a] || a - b);
  const entropy = -p.reduce((a, v) => a + (v > 0 ? v * Math.log(v) : 0), 0);
  return { top1: order[0], p1: p[order[0]], p2: p[order[1]], gap: p[order[0]] - p[order[1]], entropy };
}

function generateTokens(ctx: ReturnType<TransformerModel['createContext']>, prompt: number[], n: number, policy?: ExitPolicy) {
  const run = new Sequence(ctx).generate(prompt, {
    maxTokens: n,
    stopAtEos: false,
    sampling: { temperature: 0, topK: 0, topP: 1, seed: 0 },
    exit: policy && new ExitDecider(ctx, policy),
  });
  let r = run.next();
  while (!r.done) r = run.next();
  return r.value;
}

/**
 * Label probabilities of `text` after `layers` layers of the bundled model, independently of classify(): the
 * hidden state of the prompt's last row, then the final norm and head in float64 from the file's weights.
 */
function classifyReference(text: string, labelTokens: number[], layers: number): { probs: number[]; index: number } {
  const model = TransformerModel.load(BUNDLED_MODEL);
  const ctx = model.createContext({ contextSize: 64, batchSize: 64, threads: 1 });
  const { nEmbd, nVocab } = model.config;
  const rmsEps = model.config.rmsEps as number;
  const tokens = model.tokenizer.encode(text);
  tokens.forEach((t, i) => (ctx.native.tokens[i] = t));
  expect(ctx.forward(tokens.length, 0, (layer) => layer + 1 === layers)).toBe(layers);
  const h = new Float32Array(nEmbd);
  ctx.native.readHidden(tokens.length - 1, 1, h);
  ctx.dispose();
  model.dispose();
  const probs = softmaxAt(headLogits(weightReader(BUNDLED_MODEL), h, nEmbd, nVocab, rmsEps, true), labelTokens);
  return { probs, index: argmaxOf(probs) };
}

describeShared('lens features against independent references', (shared) => {
  const modelPath = path.join(shared, 'models', 'stories260K.gguf');
  const golden = JSON.parse(fs.readFileSync(path.join(shared, 'reference', 'golden', 'stories260K', 'lily_tom.json'), 'utf8'));

  test('after the last layer: equal to a float64 softmax of the llama.cpp golden logits', () => {
    const model = TransformerModel.load(modelPath);
    const ctx = model.createContext({ contextSize: 64, batchSize: 64, threads: 1 });
    golden.tokens.forEach((t: number, i: number) => (ctx.native.tokens[i] = t));
    ctx.forward(golden.tokens.length, 0);
    for (let row = 0; row < golden.tokens.length; row++) {
      ctx.native.logitLens(row, 2);
      const ref = softmaxFeatures(golden.logits[row]);
      const f = ctx.native.lensFeatures;
      expect(ctx.native.lensIds[0]).toBe(ref.top1);
      expect(Math.abs(f[0] - ref.p1)).toBeLessThan(2e-4);
      expect(Math.abs(f[1] - ref.p2)).toBeLessThan(2e-4);
      expect(Math.abs(f[2] - ref.gap)).toBeLessThan(2e-4);
      expect(Math.abs(f[3] - ref.entropy)).toBeLessThan(1e-3);
    }
    ctx.dispose();
    model.dispose();
  });

  test('after every layer: equal to final norm + head computed in TypeScript from the hidden state', () => {
    const model = TransformerModel.load(modelPath);
    const gguf = readGGUF(modelPath);
    const bytes = fs.readFileSync(modelPath);
    const f32 = (name: string) => {
      const t = gguf.tensorsByName.get(name)!;
      expect(t.type).toBe(0); // stories260K is all F32
      return new Float32Array(bytes.buffer.slice(bytes.byteOffset + t.absoluteOffset, bytes.byteOffset + t.absoluteOffset + t.byteSize));
    };
    const norm = f32('output_norm.weight');
    const out = f32('output.weight');
    const { nEmbd: d, nVocab: V } = model.config;
    const rmsEps = model.config.rmsEps as number;
    const ctx = model.createContext({ contextSize: 64, batchSize: 64, threads: 1 });
    const n = golden.tokens.length;
    golden.tokens.forEach((t: number, i: number) => (ctx.native.tokens[i] = t));
    let checked = 0;
    ctx.forward(n, 0, (layer, rows) => {
      const h = new Float32Array(d);
      ctx.native.readHidden(rows - 1, 1, h);
      const ms = h.reduce((a, v) => a + v * v, 0) / d;
      const x = Array.from(h, (v, i) => (v / Math.sqrt(ms + rmsEps)) * norm[i]);
      const z = Array.from({ length: V }, (_, r) => x.reduce((a, v, i) => a + v * out[r * d + i], 0));
      const ref = softmaxFeatures(z);
      ctx.native.logitLens(rows - 1, 1);
      expect(ctx.native.lensIds[0]).toBe(ref.top1);
      expect(ctx.native.lensFeatures[0]).toBeCloseTo(ref.p1, 4);
      expect(ctx.native.lensFeatures[2]).toBeCloseTo(ref.gap, 4);
      expect(ctx.native.lensFeatures[3]).toBeCloseTo(ref.entropy, 3);
      checked++;
      return false;
    });
    expect(checked).toBe(model.config.nLayer - 1);
    ctx.dispose();
    model.dispose();
  });
});

describe('exits that must reproduce full depth', () => {
  const model = TransformerModel.load(BUNDLED_MODEL);
  const ctx = model.createContext({ contextSize: 256, batchSize: 64, threads: 1 });
  const prompt = model.tokenizer.encode('Once upon a time');
  const full = generateTokens(ctx, prompt, 48);
  afterAll(() => {
    ctx.dispose();
    model.dispose();
  });

  test('never', () => {
    const r = generateTokens(ctx, prompt, 48, neverPolicy());
    expect(r.tokens).toEqual(full.tokens);
    expect(r.exitLayers.every((l) => l === model.config.nLayer)).toBe(true);
  });

  test('a check after every layer that never fires leaves the computation untouched', () => {
    const r = generateTokens(ctx, prompt, 48, thresholdPolicy('p1', Infinity));
    expect(r.tokens).toEqual(full.tokens);
  });

  test('a policy that fires at the last checked layer is consulted there, and the token is that layer\'s', () => {
    // The last layer is never checked (reaching it is full depth), so the last checked layer is L − 1: a
    // policy firing there must see every checked layer of every token and stop each token after L − 1 layers.
    const nLayer = model.config.nLayer;
    const lastChecked = nLayer - 2; // 0-based index of layer L − 1
    const consulted: number[][] = [];
    const policy: ExitPolicy = {
      kind: 'threshold',
      schedule: { minLayer: 1, checkEvery: 1 },
      lens: { mode: 'faithful' },
      begin: () => void consulted.push([]),
      shouldExit: (layer) => {
        consulted[consulted.length - 1].push(layer);
        return layer === lastChecked;
      },
    };
    const n = 8;
    const r = generateTokens(ctx, prompt, n, policy);
    expect(r.exitLayers).toEqual(new Array(n).fill(nLayer - 1));
    expect(consulted).toEqual(new Array(n).fill(Array.from({ length: nLayer - 1 }, (_, l) => l)));
    // The first token is the greedy token of the hidden state after L − 1 layers, from the head itself
    // (not the lens the runner read).
    prompt.forEach((t, i) => (ctx.native.tokens[i] = t));
    expect(ctx.forward(prompt.length, 0, (layer) => layer === lastChecked)).toBe(nLayer - 1);
    expect(r.tokens[0]).toBe(argmaxOf(ctx.logits(prompt.length - 1)));
  });

  test('the lens read after the last layer is exactly the head\'s output', () => {
    prompt.forEach((t, i) => (ctx.native.tokens[i] = t));
    ctx.forward(prompt.length, 0);
    const head = Float32Array.from(ctx.logits(prompt.length - 1));
    ctx.native.logitLens(prompt.length - 1, 1);
    expect(Buffer.from(ctx.lensLogits().buffer).equals(Buffer.from(head.buffer))).toBe(true);
  });

  test('classify: label probabilities are the softmax of a float64 head at the exit layer', async () => {
    // An exit file whose threshold policy always fires at its first check (minLayer 3): classify must report
    // layer 3 and the probabilities of the head applied after 3 layers, which are computed here in float64
    // from the hidden state and the file's weights.
    const dir = tmpDir('adainfer-classify-');
    const file = path.join(dir, 'exit3.json');
    saveExitFile(file, {
      format: EXIT_FILE_FORMAT,
      model: { fingerprint: model.fingerprint, name: model.config.name, nLayer: model.config.nLayer },
      policy: { kind: 'threshold', schedule: { minLayer: 3, checkEvery: 1 }, lens: { mode: 'faithful' }, threshold: -Infinity, feature: 'p1' },
      training: { label: 'final', data: 'none', examples: 0, window: 0, target: 1, seed: 0, createdAt: 'test' },
      metrics: {},
    });
    const text = 'The sun was hot and the sky was';
    const labels = [' blue', ' green', ' big'];
    const m = await loadModel(BUNDLED_MODEL, { threads: 1 });
    const s = await m.createSession();
    const early = await s.classify(text, labels, { exit: file });
    const full = await s.classify(text, labels);
    await m.dispose();
    fs.rmSync(dir, { recursive: true, force: true });

    for (const [r, layers] of [
      [early, 3],
      [full, model.config.nLayer],
    ] as const) {
      expect(r.exitLayer).toBe(layers);
      const ref = classifyReference(text, r.labelTokens, layers);
      ref.probs.forEach((p, i) => expect(Math.abs(r.probs[i] - p)).toBeLessThan(1e-4));
      expect(r.label).toBe(labels[ref.index]);
    }
    // the exit changes the answer's distribution: the two are not the same numbers
    expect(early.probs).not.toEqual(full.probs);
  });

  test('an exit that always fires stops after minLayer and reports it', () => {
    const r = generateTokens(ctx, prompt, 8, thresholdPolicy('p1', -Infinity, { minLayer: 3, checkEvery: 1 }));
    expect(r.exitLayers).toEqual(new Array(8).fill(3));
  });
});

describeShared('training, exit files and the API', (shared) => {
  const dir = tmpDir('adainfer-exit-');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const data = path.join(shared, 'datasets', 'tinystories', 'train.txt');

  function train(modelPath: string, classifier: 'svm' | 'crf' | 'threshold', seed: number): ExitFile {
    const model = TransformerModel.load(modelPath);
    const examples = loadExamples(data, model.tokenizer, { window: 32, limit: 160, seed });
    const ctx = model.createContext({ contextSize: 32, batchSize: 32, threads: 1 });
    const schedule = { minLayer: 1, checkEvery: 1 };
    const traces = collectTraces(ctx, examples, schedule, { mode: 'faithful' });
    const t = trainPolicy(traces, schedule, { mode: 'faithful' }, { classifier, label: 'final', target: 0.95, seed });
    ctx.dispose();
    model.dispose();
    return {
      format: EXIT_FILE_FORMAT,
      model: { fingerprint: model.fingerprint, name: model.config.name, nLayer: model.config.nLayer },
      policy: { kind: t.kind, schedule, lens: t.lens, threshold: t.threshold, feature: t.feature, classifier: t.classifier?.toJSON(), features: t.features },
      training: { label: 'final', data, examples: examples.length, window: 32, target: 0.95, seed, createdAt: 'test' },
      metrics: t.metrics,
    };
  }

  test.each(['svm', 'crf'] as const)('%s: training is deterministic with a seed, and the file round-trips', (kind) => {
    const a = train(BUNDLED_MODEL, kind, 5);
    const b = train(BUNDLED_MODEL, kind, 5);
    expect(JSON.stringify(b)).toBe(JSON.stringify(a));
    const file = path.join(dir, `${kind}.json`);
    saveExitFile(file, a);
    const loaded = loadExitFile(file, a.model);
    expect(loaded).toEqual(a);
    // the loaded policy decides exactly as the trained one on fresh examples
    const model = TransformerModel.load(BUNDLED_MODEL);
    const ctx = model.createContext({ contextSize: 64, batchSize: 64, threads: 1 });
    const prompt = model.tokenizer.encode('The little dog');
    const first = generateTokens(ctx, prompt, 16, policyFromExitFile(a));
    const second = generateTokens(ctx, prompt, 16, policyFromExitFile(loaded));
    expect(second.exitLayers).toEqual(first.exitLayers);
    expect(second.tokens).toEqual(first.tokens);
    ctx.dispose();
    model.dispose();
  });

  test('an exit file made for another model, or corrupt, is an EXIT_FILE error', () => {
    const a = train(BUNDLED_MODEL, 'threshold', 1);
    const file = path.join(dir, 'threshold.json');
    saveExitFile(file, a);
    const plain = TransformerModel.load(BUNDLED_PLAIN_MODEL);
    expect(() => loadExitFile(file, { fingerprint: plain.fingerprint, name: plain.config.name, nLayer: plain.config.nLayer })).toThrow(
      expect.objectContaining({ code: 'EXIT_FILE', message: expect.stringMatching(/made for model 'adainfer-tinystories-10L-ee'/) }),
    );
    plain.dispose();
    const corrupt: [string, string | ((f: ExitFile) => void)][] = [
      ['not json', '{"format": "adainfer.exit/1", '],
      ['wrong format', (f) => ((f as { format: string }).format = 'other/9')],
      ['unknown kind', (f) => ((f.policy as { kind: string }).kind = 'oracle')],
      ['bad schedule', (f) => (f.policy.schedule.minLayer = 0)],
      ['bad lens', (f) => ((f.policy.lens as { mode: string }).mode = 'psychic')],
      ['no threshold', (f) => ((f.policy as { threshold: unknown }).threshold = 'high')],
    ];
    for (const [what, edit] of corrupt) {
      const p = path.join(dir, `corrupt-${what.replace(/ /g, '-')}.json`);
      if (typeof edit === 'string') fs.writeFileSync(p, edit);
      else {
        const copy = JSON.parse(JSON.stringify(a));
        edit(copy);
        saveExitFile(p, copy);
      }
      expect(() => loadExitFile(p)).toThrow(expect.objectContaining({ code: 'EXIT_FILE' }));
    }
    const svm = train(BUNDLED_MODEL, 'svm', 1);
    (svm.policy.classifier as unknown as { weights: number[] }).weights = [1];
    const p = path.join(dir, 'corrupt-svm.json');
    saveExitFile(p, svm);
    expect(() => loadExitFile(p)).toThrow(expect.objectContaining({ code: 'EXIT_FILE' }));
  });

  test('API: generate and classify take an exit file and report exit layers', async () => {
    const file = path.join(dir, 'api-svm.json');
    saveExitFile(file, train(BUNDLED_MODEL, 'svm', 2));
    const m = await loadModel(undefined, { threads: 1 });
    const s = await m.createSession();
    const r = await s.generate('Once upon a time', { temperature: 0, maxTokens: 20, exit: file });
    expect(r.exitLayers).toHaveLength(r.tokens.length);
    expect(r.exitLayers.every((l) => l >= 1 && l <= 10)).toBe(true);
    const c = await s.classify('The sun was hot and the sky was', [' blue', ' green'], { exit: file });
    expect(c.label === ' blue' || c.label === ' green').toBe(true);
    expect(c.probs.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    expect(c.exitLayer).toBeGreaterThanOrEqual(1);
    const full = await s.classify('The sun was hot and the sky was', [' blue', ' green']);
    expect(full.exitLayer).toBe(10);
    // both answers are the float64 head's at the layer each reports
    for (const r of [c, full]) {
      const ref = classifyReference('The sun was hot and the sky was', r.labelTokens, r.exitLayer);
      ref.probs.forEach((p, i) => expect(Math.abs(r.probs[i] - p)).toBeLessThan(1e-4));
      expect(r.label).toBe([' blue', ' green'][ref.index]);
    }
    await expect(s.generate('x', { exit: path.join(dir, 'missing.json') })).rejects.toMatchObject({ code: 'EXIT_FILE' });
    await m.dispose();
  });
});
