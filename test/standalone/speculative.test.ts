/**
 * Self-speculative decoding (greedy) on the bundled early-exit model: the output is the full-depth greedy output
 * token for token, whatever the draft layer and length, when drafts are rejected at the first or the last
 * position, when the context fills up in the middle of a draft, and with prefix reuse across calls; drafts of an
 * exit policy's depth; adaptive drafting; speculative sampling's distribution (chi-square against the exact one).
 */
import { Sequence, SequenceGenerateOptions, SequenceResult } from '../../lib/engine/sequence';
import { Rng, Sampler } from '../../lib/engine/sampling';
import { ExitDecider } from '../../lib/exit/decider';
import { fixedDepthPolicy, thresholdPolicy } from '../../lib/exit/policy';
import { TransformerContext, TransformerModel } from '../../lib/model/transformer';
import { BUNDLED_MODEL } from '../helpers';

const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };

describe('self-speculative decoding', () => {
  const model = TransformerModel.load(BUNDLED_MODEL);
  const nLayer = model.config.nLayer;
  const prompts = ['Once upon a time', 'The little dog was', 'Lily and Tom went to the park. They', 'One day, a big red ball'].map((t) =>
    model.tokenizer.encode(t),
  );
  afterAll(() => model.dispose());

  const run = (seq: Sequence, prompt: number[], o: Partial<SequenceGenerateOptions>): SequenceResult => {
    const gen = seq.generate(prompt, { maxTokens: 48, sampling: GREEDY, ...o });
    let r = gen.next();
    while (!r.done) r = gen.next();
    return r.value;
  };
  const withContext = <T>(contextSize: number, fn: (ctx: TransformerContext) => T): T => {
    const ctx = model.createContext({ contextSize, batchSize: Math.min(64, contextSize), threads: 1 });
    try {
      return fn(ctx);
    } finally {
      ctx.dispose();
    }
  };

  const full = prompts.map((p) => withContext(128, (ctx) => run(new Sequence(ctx), p, { stopAtEos: false })));

  test.each([
    [1, 4],
    [3, 1],
    [3, 4],
    [5, 8],
    [nLayer - 1, 3],
  ])('draft layer %i, up to %i drafts: the full-depth greedy output', (layer, maxDraft) => {
    let drafted = 0;
    let accepted = 0;
    prompts.forEach((p, i) =>
      withContext(128, (ctx) => {
        const r = run(new Sequence(ctx), p, { stopAtEos: false, speculative: { draft: { layer }, maxDraft, adaptive: false } });
        expect(r.tokens).toEqual(full[i].tokens);
        expect(r.exitLayers.every((l) => l === nLayer)).toBe(true);
        const s = r.speculative!;
        expect(s.accepted).toBeLessThanOrEqual(s.drafted);
        expect(s.meanDraftLength).toBeLessThanOrEqual(maxDraft);
        drafted += s.drafted;
        accepted += s.accepted;
      }),
    );
    // Drafts are both accepted and rejected on this model, so both paths ran.
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(drafted);
  });

  test('a context that fills up in the middle of a draft, maxTokens inside a round, EOS, prefix reuse', () => {
    const p = prompts[2];
    // context full: the last rounds draft fewer tokens than maxDraft
    const small = p.length + 13;
    const ref = withContext(small, (ctx) => run(new Sequence(ctx), p, { stopAtEos: false, maxTokens: 100 }));
    expect(ref.stopReason).toBe('contextFull');
    const spec = withContext(small, (ctx) => run(new Sequence(ctx), p, { stopAtEos: false, maxTokens: 100, speculative: { draft: { layer: 4 }, maxDraft: 8, adaptive: false } }));
    expect(spec.tokens).toEqual(ref.tokens);
    expect(spec.stopReason).toBe('contextFull');
    for (const maxTokens of [1, 2, 5, 9]) {
      const r = withContext(128, (ctx) => run(new Sequence(ctx), p, { stopAtEos: false, maxTokens, speculative: { draft: { layer: 4 }, maxDraft: 4, adaptive: false } }));
      expect(r.tokens).toEqual(full[2].tokens.slice(0, maxTokens));
    }
    withContext(128, (ctx) => {
      const seq = new Sequence(ctx);
      const eos = run(seq, p, { maxTokens: 200, speculative: { draft: { layer: 4 }, maxDraft: 4, adaptive: false } });
      const plain = withContext(128, (c2) => run(new Sequence(c2), p, { maxTokens: 200 }));
      expect(eos.tokens).toEqual(plain.tokens);
      expect(eos.stopReason).toBe(plain.stopReason);
      // The next call reuses the cached prompt and accepted tokens: every cached position is exact.
      const again = run(seq, [...p, ...eos.tokens.slice(0, 10)], { stopAtEos: false, maxTokens: 8, speculative: { draft: { layer: 4 }, maxDraft: 4, adaptive: false } });
      expect(again.reusedPromptTokens).toBe(p.length + 9);
      const fresh = withContext(128, (c2) => run(new Sequence(c2), [...p, ...eos.tokens.slice(0, 10)], { stopAtEos: false, maxTokens: 8 }));
      expect(again.tokens).toEqual(fresh.tokens);
    });
  });

  test('drafts whose depth an exit policy decides (some run the whole model), adaptive drafting: the full-depth greedy output', () => {
    const policy = thresholdPolicy('p1', 0.5, { minLayer: 2, checkEvery: 1 });
    let layersPerToken = 0;
    prompts.forEach((p, i) =>
      withContext(128, (ctx) => {
        const seq = new Sequence(ctx);
        const r = run(seq, p, { stopAtEos: false, speculative: { draft: policy, maxDraft: 4, adaptive: false } });
        expect(r.tokens).toEqual(full[i].tokens);
        layersPerToken += r.speculative!.layersPerToken;
        for (const adaptive of [true, { minP1: 0.9, fallbackTokens: 3 }, { minP1: 0, fallbackTokens: 0 }]) {
          const a = run(new Sequence(ctx), p, { stopAtEos: false, speculative: { draft: { layer: 3 }, maxDraft: 6, adaptive } });
          expect(a.tokens).toEqual(full[i].tokens);
          expect(a.speculative!.meanDraftLength).toBeLessThanOrEqual(6);
        }
      }),
    );
    expect(layersPerToken).toBeGreaterThan(0);
    // minP1 1: every round stops after its first draft (no draft is surer than certain).
    withContext(128, (ctx) => {
      const r = run(new Sequence(ctx), prompts[0], { stopAtEos: false, speculative: { draft: { layer: 3 }, maxDraft: 6, adaptive: { minP1: 1, fallbackTokens: 0 } } });
      // (rounds at the end of maxTokens draft fewer)
      expect(r.speculative!.meanDraftLength).toBeLessThanOrEqual(1);
      expect(r.speculative!.meanDraftLength).toBeGreaterThan(0.9);
      expect(r.tokens).toEqual(full[0].tokens);
    });
  });

  /**
   * Speculative sampling keeps the full model's distribution. The second generated token is the first drafted one
   * (the first comes from the prompt's logits): over many seeds, its samples given the most frequent first token
   * must fit the full model's sampling distribution at that position, computed exactly (chi-square goodness of fit
   * at a 0.1% level). The same test rejects the drafter's own distribution, so it can fail.
   */
  test('sampling: the first drafted token has the full model\'s distribution (chi-square over seeds)', () => {
    const sampling = { temperature: 1, topK: 12, topP: 1, seed: 0 };
    const p = prompts[1];
    const runs = 1500;
    const pairs = withContext(64, (ctx) => {
      const seq = new Sequence(ctx);
      return Array.from({ length: runs }, (_, seed) => {
        const r = run(seq, p, { stopAtEos: false, maxTokens: 2, sampling: { ...sampling, seed }, speculative: { draft: { layer: 2 }, maxDraft: 3, adaptive: false } });
        return r.tokens;
      });
    });
    const byFirst = new Map<number, number[]>();
    for (const [t1, t2] of pairs) byFirst.set(t1, [...(byFirst.get(t1) ?? []), t2]);
    const [first, seconds] = [...byFirst.entries()].sort((a, b) => b[1].length - a[1].length)[0];
    expect(seconds.length).toBeGreaterThan(300);
    // The exact distributions at the second position: the full model's, and the draft layer's lens.
    const { target, drafter } = withContext(64, (ctx) => {
      const seq = new Sequence(ctx);
      const fullDepth = run(seq, [...p, first], { stopAtEos: false, maxTokens: 0, sampling });
      expect(fullDepth.tokens).toEqual([]);
      const sampler = new Sampler(sampling);
      const dist = (logits: Float32Array) => {
        const out = new Float64Array(model.config.nVocab);
        sampler.distribution(logits, out);
        return out;
      };
      const tokens = [...p, first];
      ctx.native.tokens.set(tokens);
      const decider = new ExitDecider(ctx, fixedDepthPolicy(2));
      ctx.forward(tokens.length, 0);
      const t = dist(ctx.logits(tokens.length - 1));
      decider.begin();
      ctx.forward(tokens.length, 0, (layer, rows) => decider.decide(layer, rows - 1));
      return { target: t, drafter: dist(ctx.lensLogits()) };
    });
    const counts = new Map<number, number>();
    for (const t of seconds) counts.set(t, (counts.get(t) ?? 0) + 1);
    const n = seconds.length;
    expect(chiSquareRejects(counts, target, n)).toBe(false);
    // Negative control: n draws from the drafter's distribution are told apart from the target's.
    const rng = new Rng(7);
    const drawn = new Map<number, number>();
    for (let i = 0; i < n; i++) {
      let r = rng.next();
      let t = 0;
      while (t < drafter.length - 1 && (r -= drafter[t]) >= 0) t++;
      drawn.set(t, (drawn.get(t) ?? 0) + 1);
    }
    expect(chiSquareRejects(drawn, drafter, n)).toBe(false);
    expect(chiSquareRejects(drawn, target, n)).toBe(true);
  });

  test('Sampler.distribution is what sample() draws from: top-k, top-p, temperature; one-hot when greedy', () => {
    const logits = Float32Array.from({ length: 50 }, (_, i) => Math.sin(i * 1.7) * 3);
    const out = new Float64Array(50);
    const options = { temperature: 0.7, topK: 8, topP: 0.9, seed: 3 };
    new Sampler(options).distribution(logits, out);
    const kept = [...out.keys()].filter((i) => out[i] > 0);
    expect(out.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    expect(kept.length).toBeGreaterThan(1);
    expect(kept.length).toBeLessThanOrEqual(8);
    const sampler = new Sampler(options);
    const counts = new Map<number, number>();
    const n = 20000;
    for (let i = 0; i < n; i++) {
      const t = sampler.sample(logits);
      counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    for (const t of counts.keys()) expect(out[t]).toBeGreaterThan(0);
    expect(chiSquareRejects(counts, out, n)).toBe(false);
    new Sampler({ ...options, temperature: 0 }).distribution(logits, out);
    expect([...out.keys()].filter((i) => out[i] > 0)).toEqual([argmaxOf(logits)]);
  });

  test('options: draft layer out of range, maxDraft above the batch, with an exit policy, a bad adaptive', () => {
    withContext(32, (ctx) => {
      const seq = new Sequence(ctx);
      const bad = (o: Partial<SequenceGenerateOptions>) => () => run(seq, prompts[0], o);
      expect(bad({ speculative: { draft: { layer: 0 } } })).toThrow(expect.objectContaining({ code: 'INVALID_OPTION', option: 'speculative' }));
      expect(bad({ speculative: { draft: { layer: nLayer } } })).toThrow(/layer must be an integer in \[1, 9\]/);
      expect(bad({ speculative: { draft: { layer: 2 }, maxDraft: 32 } })).toThrow(/maxDraft/);
      expect(bad({ speculative: { draft: { layer: 2 }, adaptive: { minP1: 2 } } })).toThrow(/minP1/);
      expect(bad({ speculative: { draft: { layer: 2 } }, exit: new ExitDecider(ctx, fixedDepthPolicy(3)) })).toThrow(/exit policy/);
    });
  });
});

/**
 * Pearson's chi-square goodness of fit of `counts` (n draws) against `dist`, at a 0.1% level: bins of expected
 * count >= 5, the rest pooled into one; the critical value from the Wilson–Hilferty approximation.
 */
function chiSquareRejects(counts: Map<number, number>, dist: Float64Array, n: number): boolean {
  let stat = 0;
  let bins = 0;
  let restExpected = 0;
  let restObserved = 0;
  for (let t = 0; t < dist.length; t++) {
    const e = dist[t] * n;
    const o = counts.get(t) ?? 0;
    if (e >= 5) {
      stat += (o - e) ** 2 / e;
      bins++;
    } else {
      restExpected += e;
      restObserved += o;
    }
  }
  if (restExpected > 0) {
    stat += (restObserved - restExpected) ** 2 / Math.max(restExpected, 1e-9);
    bins++;
  }
  const df = bins - 1;
  const z = 3.09; // the 99.9% quantile of the standard normal
  const critical = df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3;
  return stat > critical;
}

function argmaxOf(v: Float32Array): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}
