/**
 * Features beyond the lens (issue 14): jsd (divergence between successive lens distributions over the candidate
 * set), hidden_cos / hidden_norm (the residual stream's change, computed natively) and attn_entropy / attn_self
 * (the attention kernels' statistics of the decision row). Each against a float64 computation from the lens logits
 * and the hidden states of the bundled model (the attention statistics' kernels against a double reference:
 * test/native/test_kernels.cpp); exit files with them and with per-layer thresholds round-trip and decide
 * identically; where they cannot be computed, EXIT_FILE.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { calibrateLayerThresholds, calibrateThreshold, CalibrationExample, documentsLowerBound, simulateExit, simulateLayerExit } from '../../lib/exit/calibrate';
import { clopperPearsonLower } from '../../lib/exit/bounds';
import { FEATURE_NAMES, FeatureName } from '../../lib/exit/classifier';
import { Trace } from '../../lib/exit/collect';
import { ExitDecider } from '../../lib/exit/decider';
import { EXIT_FILE_FORMAT, ExitFile, loadExitFile, policyFromExitFile, saveExitFile } from '../../lib/exit/exit_file';
import { jensenShannon, LensOptions, LensReading } from '../../lib/exit/lens';
import { classifierPolicy, observingPolicy } from '../../lib/exit/policy';
import { scoreTrace, trainPolicy } from '../../lib/exit/train';
import { TransformerContext, TransformerModel } from '../../lib/model/transformer';
import { spawnSync } from 'child_process';
import { BUNDLED_MODEL, repoRoot, tmpDir } from '../helpers';

const PROMPTS = ['Once upon a time there was a', 'The dog ran to the', 'Lily and Tom went to the park. They saw a big'];

function softmax64(logits: ArrayLike<number>, ids: readonly number[]): number[] {
  const max = Math.max(...ids.map((i) => logits[i]));
  const e = ids.map((i) => Math.exp(logits[i] - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / sum);
}

function js64(p: number[], q: number[]): number {
  let d = 0;
  for (let i = 0; i < p.length; i++) {
    const m = (p[i] + q[i]) / 2;
    if (p[i] > 0) d += 0.5 * p[i] * Math.log(p[i] / m);
    if (q[i] > 0) d += 0.5 * q[i] * Math.log(q[i] / m);
  }
  return d;
}

/** The top-k token ids of logits, best first, in float64. */
function topK(logits: Float32Array, k: number): number[] {
  return Array.from(logits.keys())
    .sort((a, b) => logits[b] - logits[a] || a - b)
    .slice(0, k);
}

describe('features beyond the lens, against float64', () => {
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

  test.each([['faithful', { mode: 'faithful' }] as const, ['fast', { mode: 'fast', topK: 16 }] as const])(
    '%s lens: jsd from the lens logits, hidden_cos / hidden_norm from the hidden states, every layer of several prompts',
    (_name, lens: LensOptions) => {
      const nLayer = model.config.nLayer;
      const nEmbd = model.config.nEmbd;
      let moved = 0;
      for (const text of PROMPTS) {
        const tokens = model.tokenizer.encode(text);
        const row = tokens.length - 1;
        const readings: LensReading[] = [];
        let candidates: number[] = [];
        let prevLogits: number[] | undefined;
        let prevHidden: Float32Array | undefined;
        const hidden = new Float32Array(nEmbd);
        const expected: { jsd: number; cos: number; norm: number }[] = [];
        const decider = new ExitDecider(
          ctx,
          observingPolicy(
            { minLayer: 1, checkEvery: 1 },
            lens,
            (_layer, r) => {
              readings.push({ ...r });
              const logits = ctx.lensLogits();
              // Faithful: the first check's top-16 of the whole vocabulary; fast: the lens's own candidates, which are
              // the same top-16 (its first read is of the whole vocabulary).
              if (candidates.length === 0) candidates = lens.mode === 'faithful' ? topK(logits, 16) : Array.from(ctx.native.lensCandidates.subarray(0, 16));
              const cur = candidates.map((i) => logits[i]);
              ctx.native.readHidden(row, 1, hidden);
              let dot = 0;
              let nn = 0;
              let pp = 0;
              let dd = 0;
              if (prevHidden)
                for (let i = 0; i < nEmbd; i++) {
                  dot += hidden[i] * prevHidden[i];
                  nn += hidden[i] * hidden[i];
                  pp += prevHidden[i] * prevHidden[i];
                  dd += (hidden[i] - prevHidden[i]) ** 2;
                }
              expected.push({
                jsd: prevLogits ? js64(softmax64(prevLogits, [...cur.keys()]), softmax64(cur, [...cur.keys()])) : 0,
                cos: prevHidden ? dot / Math.sqrt(nn * pp) : 1,
                norm: prevHidden ? Math.sqrt(dd / pp) : 0,
              });
              prevLogits = cur;
              prevHidden = Float32Array.from(hidden);
            },
            FEATURE_NAMES,
          ),
        );
        tokens.forEach((t, i) => (ctx.native.tokens[i] = t));
        decider.forward(tokens.length, 0);
        expect(readings.length).toBe(nLayer - 1);
        readings.forEach((r, i) => {
          expect(Math.abs(r.jsd! - expected[i].jsd)).toBeLessThan(1e-6 + 1e-4 * expected[i].jsd);
          expect(Math.abs(r.hiddenCos! - expected[i].cos)).toBeLessThan(1e-5);
          expect(Math.abs(r.hiddenNorm! - expected[i].norm)).toBeLessThan(1e-5 * (1 + expected[i].norm));
          if (expected[i].jsd > 1e-4) moved++;
          // attention statistics: a normalised entropy and a weight, both read (not NaN) for the decision row
          expect(r.attnEntropy!).toBeGreaterThanOrEqual(0);
          expect(r.attnEntropy!).toBeLessThanOrEqual(1 + 1e-5);
          expect(r.attnSelf!).toBeGreaterThan(0);
          expect(r.attnSelf!).toBeLessThanOrEqual(1 + 1e-6);
        });
        expect(readings[0].jsd).toBe(0);
        expect(readings[0].hiddenCos).toBe(1);
        expect(readings[0].hiddenNorm).toBe(0);
      }
      expect(moved).toBeGreaterThan(0); // the distributions do move between layers: jsd is exercised
    },
  );

  test('attention statistics of a one-token prompt: all weight on the token itself, entropy 0', () => {
    const seen: LensReading[] = [];
    const decider = new ExitDecider(ctx, observingPolicy({ minLayer: 1, checkEvery: 1 }, { mode: 'faithful' }, (_l, r) => seen.push({ ...r }), ['attn_entropy', 'attn_self']));
    ctx.native.tokens[0] = model.tokenizer.encode('Once')[0];
    decider.forward(1, 0);
    for (const r of seen) {
      expect(r.attnEntropy).toBe(0);
      expect(r.attnSelf).toBeCloseTo(1, 6);
    }
  });

  test('asking for the attention statistics leaves the logits bit-identical', () => {
    const tokens = model.tokenizer.encode(PROMPTS[2]);
    const run = (c: TransformerContext) => {
      tokens.forEach((t, i) => (c.native.tokens[i] = t));
      c.forward(tokens.length, 0);
      return Array.from(c.logits(tokens.length - 1));
    };
    const plain = model.createContext({ contextSize: 64, batchSize: 64, threads: 1 });
    const withStats = model.createContext({ contextSize: 64, batchSize: 64, threads: 1 });
    try {
      withStats.native.setAttentionStatistics(true);
      expect(run(withStats)).toEqual(run(plain));
    } finally {
      plain.dispose();
      withStats.dispose();
    }
  });

  test('a backend without the exit statistics refuses a policy that needs them: EXIT_FILE', () => {
    // The CUDA backend does not compute them; its context says so through computesExitStatistics.
    const native = Object.create(ctx.native, { computesExitStatistics: { value: false }, backend: { value: 'cuda' } });
    const cudaLike = Object.create(ctx, { native: { value: native } }) as TransformerContext;
    for (const features of [['p1', 'hidden_cos'], ['attn_self']] as FeatureName[][])
      expect(() => new ExitDecider(cudaLike, observingPolicy({ minLayer: 1, checkEvery: 1 }, { mode: 'faithful' }, () => undefined, features))).toThrow(
        expect.objectContaining({ code: 'EXIT_FILE', message: expect.stringContaining('cuda backend') }),
      );
    // lens-only features need nothing of the backend
    expect(() => new ExitDecider(cudaLike, observingPolicy({ minLayer: 1, checkEvery: 1 }, { mode: 'faithful' }, () => undefined, ['p1', 'jsd', 'streak']))).not.toThrow();
  });
});

test('jensenShannon: 0 for equal distributions, ln 2 for disjoint ones, symmetric', () => {
  const s = () => new Float64Array(3);
  expect(jensenShannon([1, 2, 3], [1, 2, 3], 3, s(), s())).toBeCloseTo(0, 12);
  expect(jensenShannon([0, 2, 5], [3, 1, 0], 3, s(), s())).toBeCloseTo(jensenShannon([3, 1, 0], [0, 2, 5], 3, s(), s()), 12);
  expect(jensenShannon([0, -1000, -1000], [-1000, 0, -1000], 3, s(), s())).toBeCloseTo(Math.LN2, 9);
});

/** Synthetic traces where every feature carries some signal about "the top-1 is final". */
function syntheticTraces(): Trace[] {
  let s = 11;
  const r = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  return Array.from({ length: 600 }, (_, e) => {
    let top1 = 1;
    return {
      nLayer: 8,
      final: 3,
      doc: e >> 2,
      checks: Array.from({ length: 7 }, (_, layer) => {
        if (r() < 0.25 + layer * 0.1) top1 = 3;
        else if (r() < 0.3) top1 = 1 + Math.floor(r() * 4);
        const good = top1 === 3 ? 1 : 0;
        const p1 = Math.min(0.99, 0.2 + 0.1 * layer * r() + 0.15 * good);
        return {
          layer,
          top1,
          p1,
          p2: (1 - p1) / 2,
          gap: p1 - (1 - p1) / 2,
          entropy: 1 - p1,
          jsd: 0.2 * r() * (1.5 - good),
          hiddenCos: 0.9 + 0.09 * r() * (0.5 + good),
          hiddenNorm: 0.5 * r() * (1.5 - good),
          attnEntropy: 0.3 + 0.5 * r(),
          attnSelf: 0.05 + 0.3 * r() * (0.5 + good),
        };
      }),
    };
  });
}

describe('exit files with the new features and per-layer thresholds', () => {
  const traces = syntheticTraces();
  const features: FeatureName[] = ['p1', 'gap', 'jsd', 'hidden_cos', 'hidden_norm', 'attn_entropy', 'attn_self'];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'adainfer-native-feat-'));
  const decide = (policy: ReturnType<typeof policyFromExitFile>) =>
    traces.map((tr) => {
      policy.begin();
      const c = tr.checks.find((k) => policy.shouldExit(k.layer, k, tr.nLayer));
      return c ? c.layer : -1;
    });
  const fileOf = (t: ReturnType<typeof trainPolicy>, kind: 'svm' | 'crf'): ExitFile => ({
    format: EXIT_FILE_FORMAT,
    model: { fingerprint: 'f', name: 'synthetic', nLayer: 8 },
    policy: { kind, schedule: t.schedule, lens: t.lens, threshold: t.threshold, layerThresholds: t.layerThresholds, classifier: t.classifier!.toJSON(), features: t.features },
    training: { label: 'final', data: 'synthetic', examples: traces.length, window: 1, target: 0.9, seed: 3, createdAt: 'test' },
    metrics: {},
  });

  test.each([
    ['svm', 'single'],
    ['crf', 'single'],
    ['svm', 'per-layer'],
  ] as const)('%s, %s threshold(s): round trip, identical decisions', (classifier, thresholds) => {
    const t = trainPolicy(traces, { minLayer: 1, checkEvery: 1 }, { mode: 'faithful' }, { classifier, label: 'final', target: 0.9, seed: 3, features, thresholds });
    if (thresholds === 'per-layer') {
      expect(t.layerThresholds).toHaveLength(8);
      expect(t.layerThresholds![7]).toBe(Infinity); // the last layer is never checked
    }
    const file = path.join(dir, `${classifier}-${thresholds}.json`);
    saveExitFile(file, fileOf(t, classifier));
    const loaded = loadExitFile(file);
    expect(loaded.policy.features).toEqual(features);
    expect(loaded.policy.layerThresholds).toEqual(t.layerThresholds);
    const before = decide(classifierPolicy(t.classifier!, t.layerThresholds ?? t.threshold));
    expect(decide(policyFromExitFile(loaded))).toEqual(before);
    expect(new Set(before).size).toBeGreaterThan(1);
  });

  test('refused files: an unknown feature, per-layer thresholds of the wrong length — EXIT_FILE naming the field', () => {
    const t = trainPolicy(traces, { minLayer: 1, checkEvery: 1 }, { mode: 'faithful' }, { classifier: 'svm', label: 'final', target: 0.9, seed: 3, features, thresholds: 'per-layer' });
    const good = fileOf(t, 'svm');
    const write = (name: string, f: unknown) => {
      const p = path.join(dir, name);
      fs.writeFileSync(p, JSON.stringify(f, (_k, v) => (v === Infinity ? 'Infinity' : v)));
      return p;
    };
    const unknown = structuredClone(good);
    (unknown.policy.features as string[])[2] = 'attn_magic';
    expect(() => loadExitFile(write('unknown.json', unknown))).toThrow(expect.objectContaining({ code: 'EXIT_FILE', message: expect.stringContaining('policy.features[2]') }));
    const short = structuredClone(good);
    short.policy.layerThresholds = short.policy.layerThresholds!.slice(0, 5);
    expect(() => loadExitFile(write('short.json', short))).toThrow(expect.objectContaining({ code: 'EXIT_FILE', message: expect.stringContaining('layerThresholds') }));
  });
});

describe('per-layer thresholds chosen jointly', () => {
  test('meet the constraint on the calibration examples and prune at least as much as one threshold', () => {
    let s = 5;
    const r = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
    // Layer-dependent score scales: one threshold cannot fit every layer, per-layer thresholds can.
    const examples: CalibrationExample[] = Array.from({ length: 2000 }, () => ({
      nLayer: 6,
      checks: Array.from({ length: 5 }, (_, layer) => {
        const agrees = r() < 0.3 + 0.15 * layer;
        return { layer, score: (agrees ? 1 : 0) * (layer + 1) + r() * (layer + 1) * 1.2, agrees };
      }),
    }));
    for (const confidence of [undefined, 0.95]) {
      const single = calibrateThreshold(examples, 0.97, confidence);
      const joint = calibrateLayerThresholds(examples, 0.97, confidence);
      expect(joint.thresholds).toHaveLength(6);
      const replay = simulateLayerExit(examples, joint.thresholds);
      expect(replay.agreement).toBeCloseTo(joint.agreement, 12);
      expect(replay.meanLayers).toBeCloseTo(joint.meanLayers, 12);
      const agreeing = Math.round(joint.agreement * examples.length);
      if (confidence === undefined) expect(joint.agreement).toBeGreaterThanOrEqual(0.97);
      else expect(clopperPearsonLower(agreeing, examples.length, confidence)).toBeGreaterThanOrEqual(0.97);
      expect(joint.meanLayers).toBeLessThan(single.meanLayers - 0.05); // strictly better here
      expect(simulateExit(examples, single.threshold).meanLayers).toBeCloseTo(single.meanLayers, 12);
    }
  });
});

describe("shaped per-layer thresholds: the shape from the fit part, one level calibrated against the documents' bound", () => {
  test('the thresholds are the fit shape plus one level; the rule meets the bound on the calibration documents', () => {
    const traces = syntheticTraces();
    const fit = traces.filter((t) => t.doc < 100);
    const calibration = traces.filter((t) => t.doc >= 100);
    const features: FeatureName[] = ['p1', 'gap', 'entropy', 'layer'];
    const target = 0.8;
    const t = trainPolicy(fit, { minLayer: 1, checkEvery: 1 }, { mode: 'faithful' }, { classifier: 'svm', label: 'final', target, seed: 2, features, calibrationTraces: calibration, thresholds: 'shaped' });
    const c = t.classifier!;
    const examplesOf = (traces: Trace[]): CalibrationExample[] =>
      traces.map((tr) => {
        const scores = scoreTrace(tr, (x) => c.score(x), () => c.begin(), features);
        return { nLayer: tr.nLayer, doc: tr.doc, checks: tr.checks.map((k, i) => ({ layer: k.layer, score: scores[i], agrees: k.top1 === tr.final })) };
      });
    // The shape: per-layer thresholds meeting the target on the fit part (point estimate).
    const shape = calibrateLayerThresholds(examplesOf(fit), target).thresholds;
    const thresholds = t.layerThresholds!;
    expect(thresholds).toHaveLength(8);
    const finite = shape.map((a, l) => (Number.isFinite(a) ? l : -1)).filter((l) => l >= 0);
    expect(finite.length).toBeGreaterThan(1);
    const level = thresholds[finite[0]] - shape[finite[0]];
    for (let l = 0; l < 8; l++) {
      if (Number.isFinite(shape[l])) expect(thresholds[l] - shape[l]).toBeCloseTo(level, 9);
      else expect(thresholds[l]).toBe(Infinity);
    }
    // Reported figures are the replay of the rule on the calibration examples; its documents' bound reaches target.
    const cal = examplesOf(calibration);
    const replay = simulateLayerExit(cal, thresholds);
    expect(t.metrics.calibration.agreement).toBeCloseTo(replay.agreement, 12);
    expect(t.metrics.calibration.meanLayers).toBeCloseTo(replay.meanLayers, 12);
    expect(t.metrics.calibration.bound).toBe('documents');
    const agrees = cal.map((e) => {
      const stop = e.checks.find((k) => k.score >= thresholds[k.layer]);
      return stop ? stop.agrees : true;
    });
    expect(documentsLowerBound(cal, agrees, 0.95)).toBeGreaterThanOrEqual(target);
    expect(t.metrics.calibration.agreementLowerDocuments).toBeCloseTo(documentsLowerBound(cal, agrees, 0.95), 12);
    expect(replay.meanLayers).toBeLessThan(8); // it exits
  });
  test('the accuracy criterion (maxDrop): the calibrated threshold keeps the upper bound of the drop under maxDrop', () => {
    const traces = syntheticTraces().map((t, i) => ({ ...t, gold: i % 5 < 3 ? t.final : 2 }));
    const fit = traces.filter((t) => t.doc < 100);
    const calibration = traces.filter((t) => t.doc >= 100);
    const t = trainPolicy(fit, { minLayer: 1, checkEvery: 1 }, { mode: 'faithful' }, { classifier: 'svm', label: 'final', target: 0.99, seed: 2, calibrationTraces: calibration, maxDrop: 0.05 });
    const c = t.metrics.calibration;
    expect(c.accuracyDropUpper!).toBeLessThanOrEqual(0.05);
    expect(c.accuracyDrop!).toBeLessThanOrEqual(c.accuracyDropUpper!);
    expect(c.pruningRatio).toBeGreaterThan(0);
    const noGold = calibration.map((tr) => ({ ...tr, gold: undefined }));
    expect(() =>
      trainPolicy(fit, { minLayer: 1, checkEvery: 1 }, { mode: 'faithful' }, { classifier: 'svm', label: 'final', target: 0.99, seed: 2, calibrationTraces: noGold, maxDrop: 0.05 }),
    ).toThrow(expect.objectContaining({ code: 'DATA_FILE' }));
  });
  test("per-layer thresholds searched jointly take the bound over positions only", () => {
    const traces = syntheticTraces();
    expect(() =>
      trainPolicy(traces, { minLayer: 1, checkEvery: 1 }, { mode: 'faithful' }, { classifier: 'svm', label: 'final', target: 0.8, seed: 2, thresholds: 'per-layer', bound: 'documents' }),
    ).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
  });
});

describe('the command line: train-exit --features ... --thresholds per-layer, then eval-exit', () => {
  test('the exit file records its features and per-layer thresholds, and eval-exit decides with them', () => {
    const dir = tmpDir('adainfer-native-feat-cli-');
    try {
      const text = path.join(dir, 'stories.txt');
      fs.writeFileSync(
        text,
        [
          'Once upon a time there was a little dog. The dog liked to play in the park with a red ball.',
          'Lily saw a big cat in the garden. She wanted to pet it, but the cat ran away to its mom.',
          'Tom had a toy car. He played with it every day, and his sister played with him.',
          'One day the sun was hot. The birds sang in the tree and the children went to the lake.',
        ]
          .map((s) => `${s}\n<|endoftext|>\n`)
          .join('')
          .repeat(3),
      );
      const exitFile = path.join(dir, 'exit.json');
      const cli = (args: string[]) => spawnSync(process.execPath, [path.join(repoRoot(), 'dist', 'lib', 'cli', 'main.js'), ...args], { encoding: 'utf8', timeout: 120000 });
      const features = 'p1,gap,jsd,hidden_cos,hidden_norm,attn_entropy,attn_self';
      const train = cli(['train-exit', '-m', BUNDLED_MODEL, '--data', text, '--window', '16', '--limit', '300', '--target', '0.8', '--features', features, '--thresholds', 'per-layer', '--threads', '1', '--json', '-o', exitFile]);
      expect(train.stderr).not.toMatch(/error/);
      expect(train.status).toBe(0);
      const file = loadExitFile(exitFile);
      expect(file.policy.features).toEqual(features.split(','));
      expect(file.policy.layerThresholds).toHaveLength(file.model.nLayer);
      const evalExit = cli(['eval-exit', '-m', BUNDLED_MODEL, '--data', text, '--window', '16', '--limit', '40', '--exit', exitFile, '--threads', '1', '--json']);
      expect(evalExit.status).toBe(0);
      const report = JSON.parse(evalExit.stdout);
      expect(report.examples).toBe(40);
      expect(report.classifierMicrosPerCheck).toBeGreaterThan(0);
      const bad = cli(['train-exit', '-m', BUNDLED_MODEL, '--data', text, '--features', 'p1,attn_magic', '-o', path.join(dir, 'x.json')]);
      expect(bad.status).toBe(2);
      expect(bad.stderr).toContain('attn_magic');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
