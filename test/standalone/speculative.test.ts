/**
 * Self-speculative decoding (greedy) on the bundled early-exit model: the output is the full-depth greedy output
 * token for token, whatever the draft layer and length, when drafts are rejected at the first or the last
 * position, when the context fills up in the middle of a draft, and with prefix reuse across calls.
 */
import { Sequence, SequenceGenerateOptions, SequenceResult } from '../../lib/engine/sequence';
import { LlamaContext, LlamaModel } from '../../lib/model/llama';
import { BUNDLED_MODEL } from '../helpers';

const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };

describe('self-speculative decoding', () => {
  const model = LlamaModel.load(BUNDLED_MODEL);
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
  const withContext = <T>(contextSize: number, fn: (ctx: LlamaContext) => T): T => {
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
        const r = run(new Sequence(ctx), p, { stopAtEos: false, speculative: { layer, maxDraft } });
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
    const spec = withContext(small, (ctx) => run(new Sequence(ctx), p, { stopAtEos: false, maxTokens: 100, speculative: { layer: 4, maxDraft: 8 } }));
    expect(spec.tokens).toEqual(ref.tokens);
    expect(spec.stopReason).toBe('contextFull');
    for (const maxTokens of [1, 2, 5, 9]) {
      const r = withContext(128, (ctx) => run(new Sequence(ctx), p, { stopAtEos: false, maxTokens, speculative: { layer: 4, maxDraft: 4 } }));
      expect(r.tokens).toEqual(full[2].tokens.slice(0, maxTokens));
    }
    withContext(128, (ctx) => {
      const seq = new Sequence(ctx);
      const eos = run(seq, p, { maxTokens: 200, speculative: { layer: 4, maxDraft: 4 } });
      const plain = withContext(128, (c2) => run(new Sequence(c2), p, { maxTokens: 200 }));
      expect(eos.tokens).toEqual(plain.tokens);
      expect(eos.stopReason).toBe(plain.stopReason);
      // The next call reuses the cached prompt and accepted tokens: every cached position is exact.
      const again = run(seq, [...p, ...eos.tokens.slice(0, 10)], { stopAtEos: false, maxTokens: 8, speculative: { layer: 4, maxDraft: 4 } });
      expect(again.reusedPromptTokens).toBe(p.length + 9);
      const fresh = withContext(128, (c2) => run(new Sequence(c2), [...p, ...eos.tokens.slice(0, 10)], { stopAtEos: false, maxTokens: 8 }));
      expect(again.tokens).toEqual(fresh.tokens);
    });
  });

  test('options: layer out of range, maxDraft above the batch, with an exit policy or sampling', () => {
    withContext(32, (ctx) => {
      const seq = new Sequence(ctx);
      const bad = (o: Partial<SequenceGenerateOptions>) => () => run(seq, prompts[0], o);
      expect(bad({ speculative: { layer: 0 } })).toThrow(expect.objectContaining({ code: 'INVALID_OPTION', option: 'speculative' }));
      expect(bad({ speculative: { layer: nLayer } })).toThrow(/layer must be an integer in \[1, 9\]/);
      expect(bad({ speculative: { layer: 2, maxDraft: 32 } })).toThrow(/maxDraft/);
      expect(bad({ speculative: { layer: 2 }, sampling: { ...GREEDY, temperature: 0.8 } })).toThrow(/greedy only/);
    });
  });
});
