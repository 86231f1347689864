/**
 * Honest calibration (issue 14): fit and calibration split by document, the threshold calibrated against the
 * agreement's lower confidence bound, and a fast lens that keeps where its candidates come from when it classifies.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { calibrateThreshold, calibrateThresholdForDrop, CalibrationExample, confirmedScores, documentsLowerBound, NEVER_STOPS, shapedScores, simulateExit } from '../../lib/exit/calibrate';
import { clopperPearsonLower, clusteredMeanUpper } from '../../lib/exit/bounds';
import { documentPart, loadExamples, splitByDocument } from '../../lib/exit/data';
import { ExitDecider } from '../../lib/exit/decider';
import { EXIT_FILE_FORMAT, ExitFile, loadExitFile, saveExitFile } from '../../lib/exit/exit_file';
import { labelLens, thresholdPolicy, withLabelCandidates } from '../../lib/exit/policy';
import { TransformerModel } from '../../lib/model/transformer';
import { BUNDLED_MODEL } from '../helpers';

describe('split by document', () => {
  const items = Array.from({ length: 500 }, (_, i) => ({ doc: Math.floor(i / 7) % 40, i }));
  test('no document on both sides; every item on one side; seeded', () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const [fit, cal] = splitByDocument(items, 0.8, seed);
      expect(fit.length + cal.length).toBe(items.length);
      const fitDocs = new Set(fit.map((t) => t.doc));
      const calDocs = new Set(cal.map((t) => t.doc));
      for (const d of calDocs) expect(fitDocs.has(d)).toBe(false);
      expect(fitDocs.size).toBe(32);
      expect(calDocs.size).toBe(8);
      expect(splitByDocument(items, 0.8, seed)).toEqual([fit, cal]);
    }
    expect(splitByDocument(items, 0.8, 1)[1]).not.toEqual(splitByDocument(items, 0.8, 2)[1]);
  });
  test('a single document goes first; two documents always leave one for calibration', () => {
    expect(splitByDocument([{ doc: 3 }, { doc: 3 }], 0.5, 1)).toEqual([[{ doc: 3 }, { doc: 3 }], []]);
    const [a, b] = splitByDocument([{ doc: 0 }, { doc: 1 }], 0.99, 1);
    expect(a.length).toBe(1);
    expect(b.length).toBe(1);
  });
  test('document parts are disjoint and cover every document', () => {
    const parts = [0, 1, 2].map((part) => documentPart(items, { part, parts: 3, seed: 9 }));
    expect(parts.reduce((n, p) => n + p.length, 0)).toBe(items.length);
    const seen = parts.map((p) => new Set(p.map((t) => t.doc)));
    for (let a = 0; a < 3; a++) for (let b = a + 1; b < 3; b++) for (const d of seen[a]) expect(seen[b].has(d)).toBe(false);
    expect(() => documentPart(items, { part: 3, parts: 3, seed: 1 })).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
  });
  test('plain text examples carry their document, so the halves of a file share no story', () => {
    const model = TransformerModel.load(BUNDLED_MODEL);
    try {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'adainfer-docs-'));
      const file = path.join(dir, 'stories.txt');
      const stories = ['Tom had a red ball.', 'The cat sat on the mat and slept.', 'Lily ran to the park with her dog.', 'A bird sang.'];
      fs.writeFileSync(file, stories.join('\n<|endoftext|>\n') + '\n');
      const all = loadExamples(file, model.tokenizer, { window: 8, seed: 1 });
      expect(new Set(all.map((e) => e.doc))).toEqual(new Set([0, 1, 2, 3]));
      // Each story's examples are its own tokens: the gold tokens of document d are story d's tokens after the first.
      stories.forEach((s, d) => expect(all.filter((e) => e.doc === d).map((e) => e.gold)).toEqual(model.tokenizer.encode(s).slice(1)));
      const half0 = loadExamples(file, model.tokenizer, { window: 8, seed: 1, documents: { part: 0, parts: 2, seed: 5 } });
      const half1 = loadExamples(file, model.tokenizer, { window: 8, seed: 1, documents: { part: 1, parts: 2, seed: 5 } });
      expect(half0.length + half1.length).toBe(all.length);
      const docs0 = new Set(half0.map((e) => e.doc));
      for (const e of half1) expect(docs0.has(e.doc)).toBe(false);
    } finally {
      model.dispose();
    }
  });
});

describe('calibration against the lower bound', () => {
  // 400 examples of 4 layers; a check's score is higher where it agrees more often.
  const examples: CalibrationExample[] = Array.from({ length: 400 }, (_, e) => ({
    nLayer: 4,
    checks: [0, 1, 2].map((layer) => ({ layer, score: ((e * 37 + layer * 11) % 100) / 100 + layer * 0.2, agrees: (e * 13 + layer) % 17 !== 0 || layer === 2 })),
  }));
  test('the chosen threshold has a lower bound >= target, and is the cheapest such threshold', () => {
    for (const target of [0.9, 0.95, 0.97]) {
      const c = calibrateThreshold(examples, target, 0.95);
      expect(c.threshold).toBeLessThan(Infinity);
      const agreeing = Math.round(c.agreement * examples.length);
      expect(clopperPearsonLower(agreeing, examples.length)).toBeGreaterThanOrEqual(target);
      // The point-estimate calibration is at most as expensive and its bound may fall below target.
      const point = calibrateThreshold(examples, target);
      expect(point.meanLayers).toBeLessThanOrEqual(c.meanLayers);
      // Every cheaper threshold's bound is below target.
      const scores = Array.from(new Set(examples.flatMap((x) => x.checks.map((k) => k.score))));
      for (const t of scores) {
        const s = simulateExit(examples, t);
        if (s.meanLayers < c.meanLayers - 1e-12)
          expect(clopperPearsonLower(Math.round(s.agreement * examples.length), examples.length)).toBeLessThan(target);
      }
    }
  });
  test("the documents' bound: the cheapest threshold whose bound over the examples' documents reaches target", () => {
    // 40 documents of 10 positions; failures cluster in some documents.
    const docs = examples.map((e, i) => ({ ...e, doc: Math.floor(i / 10) }));
    for (const target of [0.9, 0.95]) {
      const c = calibrateThreshold(docs, target, 0.95, 'documents');
      const positions = calibrateThreshold(docs, target, 0.95, 'positions');
      expect(c.meanLayers).toBeGreaterThanOrEqual(positions.meanLayers);
      const outcomeAt = (t: number) =>
        docs.map((e) => {
          const k = e.checks.find((x) => x.score >= t);
          return k ? k.agrees : true;
        });
      if (c.threshold < Infinity) expect(documentsLowerBound(docs, outcomeAt(c.threshold), 0.95)).toBeGreaterThanOrEqual(target);
      // Brute force: every cheaper threshold's documents' bound is below target.
      for (const t of new Set(docs.flatMap((x) => x.checks.map((k) => k.score)))) {
        const s = simulateExit(docs, t);
        if (s.meanLayers < c.meanLayers - 1e-12) expect(documentsLowerBound(docs, outcomeAt(t), 0.95)).toBeLessThan(target);
      }
    }
    expect(() => calibrateThreshold(examples, 0.9, 0.95, 'documents')).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
  });
  test('confirmed scores: one threshold on them is the two-check rule; shaped scores: one level on them is per-layer thresholds', () => {
    const scores = [0.2, 0.9, 0.4, 0.8, 0.85];
    expect(confirmedScores(scores)).toEqual([NEVER_STOPS, 0.2, 0.4, 0.4, 0.8]);
    for (const t of [0.1, 0.3, 0.5, 0.82, 0.9]) {
      const two = scores.findIndex((s, i) => i > 0 && s >= t && scores[i - 1] >= t);
      expect(confirmedScores(scores).findIndex((s) => s >= t)).toBe(two);
    }
    const layers = [1, 2, 3, 4, 5];
    const shape = [0, 0.5, 0.1, Infinity, -0.2, 0.3];
    const shaped = shapedScores(scores, layers, shape);
    expect(shaped[2]).toBe(NEVER_STOPS);
    for (const level of [-0.5, 0, 0.3, 0.6])
      expect(shaped.findIndex((s) => s >= level)).toBe(scores.findIndex((s, i) => s >= shape[layers[i]] + level && shape[layers[i]] !== Infinity));
  });
  test("the accuracy criterion: the cheapest threshold whose documents' upper bound on the drop is <= maxDrop (brute force)", () => {
    // Gold: the full-depth answer is right on 60% of positions; an early exit that disagrees loses it, and is
    // right by luck on some positions full depth gets wrong.
    const gold = examples.map((e, i) => ({
      ...e,
      doc: Math.floor(i / 8),
      fullCorrect: i % 5 < 3,
      checks: e.checks.map((k, j) => ({ ...k, correct: k.agrees ? i % 5 < 3 : (i + j) % 7 === 0 })),
    }));
    const dropAt = (t: number) =>
      gold.map((e) => {
        const k = e.checks.find((x) => x.score >= t);
        return (e.fullCorrect ? 1 : 0) - (k ? (k.correct ? 1 : 0) : e.fullCorrect ? 1 : 0);
      });
    const upperAt = (t: number) => {
      const byDoc = new Map<number, { sum: number; count: number }>();
      dropAt(t).forEach((d, i) => {
        const g = byDoc.get(gold[i].doc) ?? { sum: 0, count: 0 };
        g.sum += d;
        g.count++;
        byDoc.set(gold[i].doc, g);
      });
      return clusteredMeanUpper([...byDoc.values()], 0.95);
    };
    for (const maxDrop of [0.01, 0.03, 0.06]) {
      const c = calibrateThresholdForDrop(gold, maxDrop, 0.95);
      if (c.threshold < Infinity) {
        expect(c.dropUpper).toBeCloseTo(upperAt(c.threshold), 10);
        expect(c.dropUpper).toBeLessThanOrEqual(maxDrop);
        expect(c.drop).toBeCloseTo(dropAt(c.threshold).reduce((a, d) => a + d, 0) / gold.length, 12);
      }
      for (const t of new Set(gold.flatMap((x) => x.checks.map((k) => k.score)))) {
        if (simulateExit(gold, t).meanLayers < c.meanLayers - 1e-12) expect(upperAt(t)).toBeGreaterThan(maxDrop);
      }
    }
    expect(calibrateThresholdForDrop(gold, 0.06, 0.95).threshold).toBeLessThan(Infinity);
    expect(() => calibrateThresholdForDrop(examples.map((e) => ({ ...e, doc: 0 })), 0.01, 0.95)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
  });
  test('too few examples for the bound to reach the target: never exit', () => {
    const few = examples.slice(0, 100); // 0.05^(1/100) = 0.9705 < 0.99
    expect(calibrateThreshold(few, 0.99, 0.95).threshold).toBe(Infinity);
  });
});

describe('fast-lens candidate sources', () => {
  test('labelLens: no source takes the labels, top-k keeps its top-k and reads the labels beside, a fixed set must match', () => {
    expect(labelLens({ mode: 'faithful' }, [5, 6])).toEqual({ mode: 'faithful' });
    expect(labelLens({ mode: 'fast' }, [5, 6])).toEqual({ mode: 'fast', candidates: [5, 6] });
    expect(labelLens({ mode: 'fast', topK: 16 }, [5, 6])).toEqual({ mode: 'fast', topK: 16, answerTokens: [5, 6] });
    expect(labelLens({ mode: 'fast', candidates: [5, 6] }, [5, 6])).toEqual({ mode: 'fast', candidates: [5, 6] });
    expect(() => labelLens({ mode: 'fast', candidates: [5, 6] }, [6, 5])).toThrow(expect.objectContaining({ code: 'EXIT_FILE' }));
    expect(() => withLabelCandidates(thresholdPolicy('p1', 0.5, undefined, { mode: 'fast', candidates: [1, 2, 3] }), [1, 2])).toThrow(
      expect.objectContaining({ code: 'EXIT_FILE' }),
    );
  });

  test('a fast exit file records its source: one of candidates / topK, not both, not neither', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'adainfer-src-'));
    const model = TransformerModel.load(BUNDLED_MODEL);
    try {
      const base: ExitFile = {
        format: EXIT_FILE_FORMAT,
        model: { fingerprint: model.fingerprint, name: model.config.name, nLayer: model.config.nLayer },
        policy: { kind: 'threshold', schedule: { minLayer: 1, checkEvery: 1 }, lens: { mode: 'fast', topK: 16 }, threshold: 0.5, feature: 'p1' },
        training: { label: 'final', data: 'x', examples: 1, window: 1, target: 0.99, seed: 1, createdAt: 'test' },
        metrics: {},
      };
      const file = path.join(dir, 'e.json');
      saveExitFile(file, base);
      expect(loadExitFile(file).policy.lens).toEqual({ mode: 'fast', topK: 16 });
      for (const lens of [{ mode: 'fast' }, { mode: 'fast', topK: 16, candidates: [1, 2] }]) {
        saveExitFile(file, { ...base, policy: { ...base.policy, lens: lens as ExitFile['policy']['lens'] } });
        expect(() => loadExitFile(file)).toThrow(expect.objectContaining({ code: 'EXIT_FILE' }));
      }
    } finally {
      model.dispose();
    }
  });

  test('a top-k lens in classification: the same features as without labels, and the labels’ logits after each read', () => {
    const model = TransformerModel.load(BUNDLED_MODEL);
    const ctx = model.createContext({ contextSize: 32, batchSize: 32, threads: 1 });
    try {
      const prompt = model.tokenizer.encode('Once upon a time there was a little girl who');
      const labels = [model.tokenizer.encode(' yes')[0], model.tokenizer.encode(' no')[0]];
      const readAll = (lens: Parameters<typeof thresholdPolicy>[3]) => {
        const seen: { p1: number; gap: number; entropy: number; top1: number; labels: number[] }[] = [];
        const d = new ExitDecider(ctx, thresholdPolicy('p1', 2, undefined, lens));
        d.begin();
        prompt.forEach((t, i) => (ctx.native.tokens[i] = t));
        ctx.forward(prompt.length, 0, (layer, rows) => {
          d.decide(layer, rows - 1);
          const r = d.lens.reading;
          const logits = ctx.lensLogits();
          seen.push({ p1: r.p1, gap: r.gap, entropy: r.entropy, top1: r.top1, labels: labels.map((t) => logits[t]) });
          return false;
        });
        return seen;
      };
      const topK = readAll({ mode: 'fast', topK: 16 });
      const withLabels = readAll(labelLens({ mode: 'fast', topK: 16 }, labels));
      const faithful = readAll({ mode: 'faithful' });
      expect(withLabels.map(({ labels: _l, ...f }) => f)).toEqual(topK.map(({ labels: _l, ...f }) => f));
      // The labels' logits equal the faithful lens's at the same layer (the head rows are the same dot products).
      withLabels.forEach((w, i) => w.labels.forEach((v, j) => expect(Math.abs(v - faithful[i].labels[j])).toBeLessThan(1e-3 * (1 + Math.abs(v)))));
    } finally {
      ctx.dispose();
      model.dispose();
    }
  });
});
