/**
 * Self-speculative decoding inside batches (lib/engine/batch.ts + lib/engine/speculative.ts) on the bundled
 * early-exit model: every speculative request of a batch comes out token for token as the same request run alone
 * through Sequence with the same speculative options (and, greedy, as full-depth greedy) — with several sequences
 * verifying in one step (their drafted rows rejoining side by side), drafts of an exit policy's depth, speculative
 * sampling, requests mixed with plain and early-exit ones, and a context that fills up in the middle of a draft.
 */
import { loadModel } from '../../lib';
import { generateBatch, OpenBatch, runBatchToEnd, BatchSequenceResult } from '../../lib/engine/batch';
import { ResolvedSampling } from '../../lib/engine/sampling';
import { Sequence, SequenceResult, SpeculativeOptions } from '../../lib/engine/sequence';
import { ExitDecider } from '../../lib/exit/decider';
import { EXIT_FILE_FORMAT, policyFromExitFile } from '../../lib/exit/exit_file';
import { thresholdPolicy } from '../../lib/exit/policy';
import { TransformerContext, TransformerModel } from '../../lib/model/transformer';
import { BUNDLED_MODEL } from '../helpers';

const TEXTS = ['Once upon a time', 'The little dog ran to the park and', 'Lily wanted a big red ball', 'Tom and Sam were', 'One day, a cat'];

const model = TransformerModel.load(BUNDLED_MODEL);
const PROMPTS = TEXTS.map((t) => model.tokenizer.encode(t));
const NLAYER = model.config.nLayer;
afterAll(() => model.dispose());

const GREEDY: ResolvedSampling = { temperature: 0, topK: 0, topP: 1, seed: 0 };
const SAMPLED: ResolvedSampling = { temperature: 0.8, topK: 40, topP: 0.95, seed: 5 };
const CONTEXT = 96;

function withContext<T>(o: { sequences?: number; contextSize?: number }, fn: (ctx: TransformerContext) => T): T {
  const contextSize = o.contextSize ?? CONTEXT;
  const ctx = model.createContext({ contextSize, batchSize: Math.max(64, (o.sequences ?? 1) * 9), threads: 1, sequences: o.sequences });
  try {
    return fn(ctx);
  } finally {
    ctx.dispose();
  }
}

/** The same request alone, in a fresh Sequence. */
function alone(prompt: number[], maxTokens: number, sampling: ResolvedSampling, speculative?: SpeculativeOptions, contextSize = CONTEXT): SequenceResult {
  return withContext({ contextSize }, (ctx) => {
    const gen = new Sequence(ctx).generate(prompt, { maxTokens, sampling, stopAtEos: false, speculative });
    let r = gen.next();
    while (!r.done) r = gen.next();
    return r.value;
  });
}

function batch(prompts: number[][], maxTokens: number, sampling: ResolvedSampling, speculative: SpeculativeOptions, sequences: number, contextSize = CONTEXT): BatchSequenceResult[] {
  return withContext({ sequences, contextSize }, (ctx) =>
    runBatchToEnd(generateBatch(ctx, prompts.map((tokens) => ({ tokens })), { maxTokens, sampling, stopAtEos: false, speculative })).results,
  );
}

describe('self-speculative decoding in a batch', () => {
  const full = PROMPTS.map((p) => alone(p, 40, GREEDY));

  test.each([
    [2, 4, 5],
    [3, 1, 2],
    [5, 8, 5],
    [NLAYER - 1, 3, 3],
  ])('draft layer %i, up to %i drafts, %i slots: every row is the full-depth greedy output and the lone speculative run', (layer, maxDraft, slots) => {
    const speculative = { draft: { layer }, maxDraft, adaptive: false };
    const results = batch(PROMPTS, 40, GREEDY, speculative, slots);
    results.forEach((r, i) => {
      expect(r.tokens).toEqual(full[i].tokens);
      expect(r.exitLayers.every((l) => l === NLAYER)).toBe(true);
      const lone = alone(PROMPTS[i], 40, GREEDY, speculative).speculative!;
      // The same rounds: the same drafts, accepted at the same places.
      expect(r.speculative!.drafted).toBe(lone.drafted);
      expect(r.speculative!.accepted).toBe(lone.accepted);
      expect(r.speculative!.verifySteps).toBe(lone.verifySteps);
      expect(r.speculative!.layersPerToken).toBeCloseTo(lone.layersPerToken, 12);
    });
    // Rounds of several sequences shared steps (they were admitted together), so drafts rejoined side by side.
    expect(results.filter((r) => r.speculative!.drafted > 0).length).toBeGreaterThan(1);
  });

  test('drafts whose depth an exit policy decides (several depths pending at once): the full-depth greedy output', () => {
    const speculative = { draft: thresholdPolicy('gap', 0.2, { minLayer: 1, checkEvery: 1 }), maxDraft: 5, adaptive: false };
    const results = batch(PROMPTS, 40, GREEDY, speculative, 5);
    results.forEach((r, i) => {
      expect(r.tokens).toEqual(full[i].tokens);
      expect(r.speculative!.accepted).toBe(alone(PROMPTS[i], 40, GREEDY, speculative).speculative!.accepted);
    });
  });

  test('speculative sampling: each row draws exactly what the same request draws alone (same seed)', () => {
    const speculative = { draft: { layer: 3 }, maxDraft: 4, adaptive: false };
    const results = batch(PROMPTS, 32, SAMPLED, speculative, 5);
    results.forEach((r, i) => {
      const lone = alone(PROMPTS[i], 32, { ...SAMPLED, seed: SAMPLED.seed + i }, speculative);
      expect(r.tokens).toEqual(lone.tokens);
      expect(r.speculative!.accepted).toBe(lone.speculative!.accepted);
    });
  });

  test('the context fills up in the middle of a draft: the full-depth greedy output up to the context', () => {
    const contextSize = PROMPTS[1].length + 13;
    const speculative = { draft: { layer: 2 }, maxDraft: 6, adaptive: false };
    const results = batch([PROMPTS[1], PROMPTS[0]], 64, GREEDY, speculative, 2, contextSize);
    [PROMPTS[1], PROMPTS[0]].forEach((p, i) => {
      const ref = alone(p, 64, GREEDY, undefined, contextSize);
      expect(results[i].stopReason).toBe('contextFull');
      expect(results[i].tokens).toEqual(ref.tokens);
    });
  });

  test('an open batch mixes speculative, early-exit and plain requests; each equals its lone run', () => {
    const exit = thresholdPolicy('gap', 0.3, { minLayer: 2, checkEvery: 1 });
    const speculative = { draft: { layer: 3 }, maxDraft: 4 };
    withContext({ sequences: 4 }, (ctx) => {
      const b = new OpenBatch(ctx);
      const results: BatchSequenceResult[] = [];
      const kinds = ['speculative', 'exit', 'plain', 'speculative', 'exit'] as const;
      PROMPTS.forEach((tokens, i) =>
        b.submit({
          tokens,
          maxTokens: 30,
          sampling: GREEDY,
          stopAtEos: false,
          exit: kinds[i] === 'exit' ? exit : undefined,
          speculative: kinds[i] === 'speculative' ? speculative : undefined,
          onEnd: (r) => (results[r.index] = r),
        }),
      );
      b.close();
      for (const _ of b.run());
      PROMPTS.forEach((p, i) => {
        const ref = withContext({}, (c) => {
          const gen = new Sequence(c).generate(p, { maxTokens: 30, sampling: GREEDY, stopAtEos: false, exit: kinds[i] === 'exit' ? new ExitDecider(c, exit) : undefined });
          let r = gen.next();
          while (!r.done) r = gen.next();
          return r.value;
        });
        expect(results[i].tokens).toEqual(ref.tokens);
        expect(results[i].exitLayers).toEqual(ref.exitLayers);
        expect(results[i].speculative !== undefined).toBe(kinds[i] === 'speculative');
      });
    });
  });

  test('refused: without compaction, with an exit policy, a CRF drafter, more drafts than the batch holds', () => {
    withContext({ sequences: 3 }, (ctx) => {
      const submit = (o: Partial<Parameters<OpenBatch['submit']>[0]>, compaction = true) => () =>
        new OpenBatch(ctx, { compaction }).submit({ tokens: PROMPTS[0], maxTokens: 4, sampling: GREEDY, speculative: { draft: { layer: 2 } }, ...o });
      expect(submit({}, false)).toThrow(/compaction/);
      expect(submit({ exit: thresholdPolicy('gap', 0.3) })).toThrow(/exit policy/);
      const crf = policyFromExitFile({
        format: EXIT_FILE_FORMAT,
        model: { fingerprint: model.fingerprint, name: model.config.name, nLayer: NLAYER },
        policy: {
          kind: 'crf',
          schedule: { minLayer: 1, checkEvery: 1 },
          lens: { mode: 'faithful' },
          threshold: 0.6,
          classifier: { kind: 'crf', features: ['gap'], mean: [0], std: [1], emission: [[0], [5]], emissionBias: [0, -3], transition: [[0, 0], [0, 1]], start: [0, 0] },
        },
        training: { label: 'final', data: 'none', examples: 0, window: 0, target: 0, seed: 0, createdAt: 'test' },
        metrics: {},
      });
      expect(submit({ speculative: { draft: crf } })).toThrow(/CRF/);
      // 64 rows for 3 slots: at most 20 drafts each.
      expect(submit({ speculative: { draft: { layer: 2 }, maxDraft: 21 } })).toThrow(/maxDraft must be an integer in \[1, 20\]/);
      expect(submit({ speculative: { draft: { layer: 2 }, maxDraft: 20 } })).not.toThrow();
    });
  });
});

describe('the API: Model.generateBatch and ContinuousBatch.submit with speculative', () => {
  test('greedy results equal full depth; each result reports its drafts; bad combinations refused before anything runs', async () => {
    const m = await loadModel(BUNDLED_MODEL, { threads: 1 });
    try {
      const o = { maxTokens: 24, temperature: 0, batchSize: 3 };
      const full = await m.generateBatch(TEXTS, o);
      // adaptive off: every sequence drafts (with it on, the batch's sequences share one verdict, and one that
      // finds speculation slower can keep the others plain for all 24 tokens)
      const spec = await m.generateBatch(TEXTS, { ...o, speculative: { draft: { layer: 3 }, maxDraft: 3, adaptive: false } });
      spec.results.forEach((r, i) => {
        expect(r.tokens).toEqual(full.results[i].tokens);
        expect(r.speculative!.drafted).toBeGreaterThan(0);
      });
      const batch = await m.openBatch({ slots: 2, contextSize: 96 });
      try {
        const streams = TEXTS.slice(0, 3).map((t, i) => batch.submit(t, { maxTokens: 24, temperature: 0, ...(i !== 1 && { speculative: { draft: { layer: 2 } } }) }));
        const results = await Promise.all(streams.map((s) => s.result));
        results.forEach((r, i) => {
          expect(r.tokens).toEqual(full.results[i].tokens);
          expect(r.speculative !== undefined).toBe(i !== 1);
        });
        expect(() => batch.submit(TEXTS[0], { speculative: { draft: { layer: 2 } }, exit: 'auto' })).toThrow(/exit policy/);
      } finally {
        await batch.close();
      }
      await expect(m.generateBatch(TEXTS, { ...o, speculative: { draft: { layer: 2 } }, repeatPenalty: 1.1 })).rejects.toThrow(/repetition penalties/);
      await expect(m.generateBatch(TEXTS, { ...o, speculative: { draft: { layer: 99 } } })).rejects.toThrow(/draft.layer/);
      // 3 slots in 515 rows: at most 170 drafts each.
      await expect(m.generateBatch(TEXTS, { ...o, speculative: { draft: { layer: 2 }, maxDraft: 171 } })).rejects.toThrow(/maxDraft must be an integer in \[1, 170\]/);
    } finally {
      await m.dispose();
    }
  });
});
