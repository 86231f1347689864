/**
 * Features beyond the lens (issue 14): streak (consecutive checks with the same top-1) and dp1 (change in p1),
 * against a float64 computation from the lens logits of the bundled model; exit files with them round-trip and
 * decide identically after loading.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Trace } from '../../lib/exit/collect';
import { ExitDecider } from '../../lib/exit/decider';
import { EXIT_FILE_FORMAT, loadExitFile, policyFromExitFile, saveExitFile } from '../../lib/exit/exit_file';
import { FeatureExtractor } from '../../lib/exit/lens';
import { classifierPolicy, observingPolicy } from '../../lib/exit/policy';
import { trainPolicy } from '../../lib/exit/train';
import { TransformerModel } from '../../lib/model/transformer';
import { BUNDLED_MODEL } from '../helpers';

/** p1 and the top-1 of a softmax over logits, in float64. */
function softmaxTop(logits: Float32Array): { p1: number; top1: number } {
  let top1 = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[top1]) top1 = i;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - logits[top1]);
  return { p1: 1 / sum, top1 };
}

describe('features that look back', () => {
  test('streak and dp1 against float64 from the lens logits, over every layer of several prompts', () => {
    const model = TransformerModel.load(BUNDLED_MODEL);
    const ctx = model.createContext({ contextSize: 64, batchSize: 64, threads: 1 });
    try {
      const nLayer = model.config.nLayer;
      let changes = 0;
      for (const text of ['Once upon a time there was a', 'The dog ran to the', 'Lily and Tom went to the park. They saw a big']) {
        const extractor = new FeatureExtractor(['streak', 'dp1', 'p1']);
        const ours: number[][] = [];
        const ref: { p1: number; top1: number }[] = [];
        const decider = new ExitDecider(
          ctx,
          observingPolicy({ minLayer: 1, checkEvery: 1 }, { mode: 'faithful' }, (layer, r) => {
            ours.push(Array.from(extractor.next(r, layer, nLayer)));
            ref.push(softmaxTop(ctx.lensLogits()));
          }),
        );
        extractor.begin();
        const tokens = model.tokenizer.encode(text);
        tokens.forEach((t, i) => (ctx.native.tokens[i] = t));
        decider.forward(tokens.length, 0);
        expect(ours.length).toBe(nLayer - 1);
        let streak = 0;
        ref.forEach((r, i) => {
          streak = i > 0 && r.top1 === ref[i - 1].top1 ? streak + 1 : 1;
          if (streak === 1 && i > 0) changes++;
          expect(ours[i][0]).toBe(streak);
          expect(Math.abs(ours[i][1] - (i === 0 ? 0 : r.p1 - ref[i - 1].p1))).toBeLessThan(1e-5);
          expect(Math.abs(ours[i][2] - r.p1)).toBeLessThan(1e-5);
        });
      }
      expect(changes).toBeGreaterThan(0); // the top-1 does change between layers: streak is exercised
    } finally {
      ctx.dispose();
      model.dispose();
    }
  });

  test('begin() forgets the previous token', () => {
    const x = new FeatureExtractor(['streak', 'dp1']);
    x.begin();
    const r = { top1: 5, p1: 0.5, p2: 0.1, gap: 0.4, entropy: 1 };
    expect(Array.from(x.next(r, 0, 4))).toEqual([1, 0]);
    expect(Array.from(x.next({ ...r, p1: 0.75 }, 1, 4))).toEqual([2, 0.25]);
    x.begin();
    expect(Array.from(x.next(r, 0, 4))).toEqual([1, 0]);
  });

  test.each(['svm', 'crf'] as const)('%s exit file with streak and dp1: round trip, identical decisions', (classifier) => {
    let s = 7;
    const r = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
    const traces: Trace[] = Array.from({ length: 400 }, (_, e) => {
      let top1 = 1;
      return {
        nLayer: 8,
        final: 3,
        doc: e >> 2,
        checks: Array.from({ length: 7 }, (_, layer) => {
          if (r() < 0.3 + layer * 0.1) top1 = 3;
          else if (r() < 0.3) top1 = 1 + Math.floor(r() * 4);
          const p1 = Math.min(0.99, 0.2 + 0.1 * layer * r() + (top1 === 3 ? 0.2 : 0));
          return { layer, top1, p1, p2: (1 - p1) / 2, gap: p1 - (1 - p1) / 2, entropy: 1 - p1 };
        }),
      };
    });
    const features = ['p1', 'gap', 'streak', 'dp1'] as const;
    const t = trainPolicy(traces, { minLayer: 1, checkEvery: 1 }, { mode: 'faithful' }, { classifier, label: 'final', target: 0.9, seed: 3, features: [...features] });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'adainfer-feat-'));
    const file = path.join(dir, 'f.json');
    saveExitFile(file, {
      format: EXIT_FILE_FORMAT,
      model: { fingerprint: 'f', name: 'synthetic', nLayer: 8 },
      policy: { kind: classifier, schedule: t.schedule, lens: t.lens, threshold: t.threshold, classifier: t.classifier!.toJSON(), features: t.features },
      training: { label: 'final', data: 'synthetic', examples: traces.length, window: 1, target: 0.9, seed: 3, createdAt: 'test' },
      metrics: {},
    });
    const loaded = loadExitFile(file);
    expect(loaded.policy.features).toEqual([...features]);
    expect(loaded.policy.classifier!.features).toEqual([...features]);
    const decide = (policy: ReturnType<typeof policyFromExitFile>) =>
      traces.map((tr) => {
        policy.begin();
        const c = tr.checks.find((k) => policy.shouldExit(k.layer, k, tr.nLayer));
        return c ? c.layer : -1;
      });
    const before = decide(classifierPolicy(t.classifier!, t.threshold));
    expect(decide(policyFromExitFile(loaded))).toEqual(before);
    expect(new Set(before).size).toBeGreaterThan(1); // decisions differ between examples: the comparison can fail
  });
});
