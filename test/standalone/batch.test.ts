/**
 * Batched execution (lib/engine/batch.ts) on the bundled model: every sequence of a batch must come out as it
 * does alone (Sequence on a fresh context, same seed, same policy, same kvFill), whatever the batch size, slot
 * reuse and row compaction; plus the API (Model.generateBatch / classifyBatch) and its options.
 */
import * as fs from 'fs';
import * as path from 'path';
import { loadModel, Session } from '../../lib';
import {
  BatchExit,
  BatchKvFill,
  BatchRun,
  BatchSequenceResult,
  classifyBatch,
  generateBatch,
  OpenBatch,
  runBatchToEnd,
} from '../../lib/engine/batch';
import { ResolvedSampling } from '../../lib/engine/sampling';
import { Sequence, SequenceResult } from '../../lib/engine/sequence';
import { EXIT_FILE_FORMAT, ExitFile, policyFromExitFile, saveExitFile } from '../../lib/exit/exit_file';
import { ExitDecider } from '../../lib/exit/decider';
import { ExitPolicy, neverPolicy, thresholdPolicy } from '../../lib/exit/policy';
import { TransformerContext, TransformerModel } from '../../lib/model/transformer';
import { BUNDLED_MODEL, tmpDir } from '../helpers';

const TEXTS = [
  'Once upon a time',
  'The little dog ran to the park and',
  'Lily wanted a big red ball',
  'Tom and Sam were',
  'One day, a cat',
  'The sun was hot',
  'Mom said',
];

const model = TransformerModel.load(BUNDLED_MODEL);
const PROMPTS = TEXTS.map((t) => model.tokenizer.encode(t));
const NLAYER = model.config.nLayer;
afterAll(() => model.dispose());

const GREEDY: ResolvedSampling = { temperature: 0, topK: 0, topP: 1, seed: 0 };
const SAMPLED: ResolvedSampling = { temperature: 0.8, topK: 40, topP: 0.95, seed: 11 };

/** A hand-made CRF over (gap, layer): state across layers, so each batch slot needs its own instance. */
function crfExitFile(): ExitFile {
  return {
    format: EXIT_FILE_FORMAT,
    model: { fingerprint: model.fingerprint, name: model.config.name, nLayer: NLAYER },
    policy: {
      kind: 'crf',
      schedule: { minLayer: 1, checkEvery: 1 },
      lens: { mode: 'faithful' },
      threshold: 0.6,
      classifier: {
        kind: 'crf',
        features: ['gap', 'layer'],
        mean: [0, 0],
        std: [1, 1],
        emission: [
          [0, 0],
          [5, 2],
        ],
        emissionBias: [0, -3],
        transition: [
          [0, 0],
          [0, 1],
        ],
        start: [0, 0],
      },
    },
    training: { label: 'final', data: 'none', examples: 0, window: 0, target: 0, seed: 0, createdAt: 'test' },
    metrics: {},
  };
}

function fresh(options: { sequences?: number; lensK?: number } = {}): TransformerContext {
  return model.createContext({ contextSize: 80, batchSize: 80, threads: 1, sequences: options.sequences, lensK: options.lensK ?? 16 });
}

/** Each prompt alone through Sequence on a fresh context; prompt i samples with seed + i. */
function oneByOne(sampling: ResolvedSampling, maxTokens: number, policy: () => ExitPolicy | undefined, kvFill: BatchKvFill): SequenceResult[] {
  return PROMPTS.map((prompt, i) => {
    const ctx = fresh();
    const p = policy();
    const run = new Sequence(ctx, kvFill).generate(prompt, {
      maxTokens,
      sampling: { ...sampling, seed: sampling.seed + i },
      exit: p && new ExitDecider(ctx, p),
    });
    let r = run.next();
    while (!r.done) r = run.next();
    ctx.dispose();
    return r.value;
  });
}

function batched(
  slots: number,
  sampling: ResolvedSampling,
  maxTokens: number,
  exit: BatchExit | undefined,
  kvFill: BatchKvFill,
  compaction = true,
): BatchRun<BatchSequenceResult> {
  const ctx = fresh({ sequences: slots + (compaction ? 0 : 1) });
  try {
    return runBatchToEnd(generateBatch(ctx, PROMPTS.map((tokens) => ({ tokens })), { maxTokens, sampling, exit, kvFill, compaction }));
  } finally {
    ctx.dispose();
  }
}

function expectSame(batch: BatchSequenceResult[], single: SequenceResult[]): void {
  expect(batch.map((r) => r.tokens)).toEqual(single.map((r) => r.tokens));
  expect(batch.map((r) => r.exitLayers)).toEqual(single.map((r) => r.exitLayers));
  expect(batch.map((r) => r.text)).toEqual(single.map((r) => r.text));
  expect(batch.map((r) => r.stopReason)).toEqual(single.map((r) => r.stopReason));
}

const gap = (): ExitPolicy => thresholdPolicy('gap', 0.3);
const gapFast = (): ExitPolicy => thresholdPolicy('gap', 0.3, { minLayer: 2, checkEvery: 1 }, { mode: 'fast' });
const crf = (): ExitPolicy => policyFromExitFile(crfExitFile());

describe('batched generation equals one-by-one', () => {
  test.each([
    ['greedy', GREEDY],
    ['sampled, seed + i', SAMPLED],
  ] as const)('full depth (%s), batch sizes 1, 3 and 7', (_name, sampling) => {
    const single = oneByOne(sampling, 40, () => undefined, 'propagate');
    for (const slots of [1, 3, 7]) expectSame(batched(slots, sampling, 40, undefined, 'propagate').results, single);
    expect(single.every((r) => r.exitLayers.every((l) => l === NLAYER))).toBe(true);
  });

  test.each([
    ['threshold gap 0.3', gap],
    ['threshold, fast lens', gapFast],
    ['CRF (one instance per slot)', crf],
  ] as const)('with exit, kvFill propagate (%s): same exit layers and tokens, slots reused', (_name, policy) => {
    const single = oneByOne(SAMPLED, 32, policy, 'propagate');
    const layers = single.flatMap((r) => r.exitLayers);
    expect(layers.some((l) => l < NLAYER)).toBe(true); // the policy does exit
    expect(layers.some((l) => l === NLAYER)).toBe(true); // and not always
    const exit: BatchExit = policy().kind === 'crf' ? policy : policy();
    for (const slots of [2, 7]) {
      const run = batched(slots, SAMPLED, 32, exit, 'propagate');
      expectSame(run.results, single);
      expect(run.stats.fillKvRowLayers).toBeGreaterThan(0);
    }
  });

  test('with exit, kvFill none (a fresh slot per prompt): same exit layers and tokens', () => {
    const single = oneByOne(GREEDY, 24, gap, 'none');
    const run = batched(PROMPTS.length, GREEDY, 24, gap(), 'none');
    expectSame(run.results, single);
    expect(run.stats.fillKvRowLayers).toBe(0);
  });

  test("kvFill propagate with exit 'never' equals full depth", () => {
    const full = batched(3, GREEDY, 32, undefined, 'none');
    const never = batched(3, GREEDY, 32, neverPolicy(), 'propagate');
    expect(never.results.map((r) => r.tokens)).toEqual(full.results.map((r) => r.tokens));
    expect(never.stats.fillKvRowLayers).toBe(0);
    expect(never.stats.lensReads).toBe(0);
  });

  test.each(['none', 'propagate'] as const)('compaction on and off give identical results (kvFill %s)', (kvFill) => {
    const on = batched(PROMPTS.length, SAMPLED, 24, gap(), kvFill, true);
    const off = batched(PROMPTS.length, SAMPLED, 24, gap(), kvFill, false);
    expectSame(on.results, off.results as unknown as SequenceResult[]);
    // compaction runs fewer row-layers than keeping exited rows, which runs fewer than full depth at most
    expect(on.stats.rowLayers).toBeLessThan(off.stats.rowLayers);
    expect(off.stats.rowLayers).toBeLessThanOrEqual(off.stats.rowLayersFull);
    expect(on.stats.rowLayersFull).toBe(off.stats.rowLayersFull);
  });

  test('per-prompt maxTokens and seed, maxTokens 0, context full', () => {
    const ctx = model.createContext({ contextSize: 16, batchSize: 24, threads: 1, sequences: 2 });
    const prompts = [
      { tokens: PROMPTS[0], maxTokens: 3 },
      { tokens: PROMPTS[1], maxTokens: 0 },
      { tokens: PROMPTS[2], seed: 99 },
      { tokens: PROMPTS[3] },
    ];
    const run = runBatchToEnd(generateBatch(ctx, prompts, { maxTokens: 100, sampling: SAMPLED }));
    ctx.dispose();
    const r = run.results;
    expect(r[0].tokens).toHaveLength(3);
    expect(r[0].stopReason).toBe('maxTokens');
    expect(r[1].tokens).toEqual([]);
    expect(r[1].stopReason).toBe('maxTokens');
    for (const i of [2, 3]) {
      expect(r[i].stopReason === 'contextFull' || r[i].stopReason === 'eos').toBe(true);
      if (r[i].stopReason === 'contextFull') expect(r[i].tokens).toHaveLength(16 - prompts[i].tokens.length + 1);
    }
    // prompt 2's own seed: as Sequence with seed 99 on a context of the same size
    const one = model.createContext({ contextSize: 16, batchSize: 16, threads: 1 });
    const g = new Sequence(one).generate(PROMPTS[2], { maxTokens: 100, sampling: { ...SAMPLED, seed: 99 } });
    let s = g.next();
    while (!s.done) s = g.next();
    one.dispose();
    expect(r[2].tokens).toEqual(s.value.tokens);
  });

  test('finished prompts are yielded after the step that finished them', () => {
    const ctx = fresh({ sequences: 2 });
    const gen = generateBatch(ctx, PROMPTS.map((tokens, i) => ({ tokens, maxTokens: 1 + i })), { maxTokens: 8, sampling: GREEDY, stopAtEos: false });
    const order: number[] = [];
    let step = gen.next();
    while (!step.done) {
      order.push(...step.value);
      step = gen.next();
    }
    ctx.dispose();
    expect([...order].sort((a, b) => a - b)).toEqual(PROMPTS.map((_, i) => i));
    expect(step.value.results.map((r) => r.tokens.length)).toEqual(PROMPTS.map((_, i) => 1 + i));
  });

  test('options: recompute, a shared CRF policy, too few rows, a prompt too long', () => {
    const ctx = fresh({ sequences: 2 });
    const run = (o: Partial<Parameters<typeof generateBatch>[2]>, prompts = [{ tokens: PROMPTS[0] }]) =>
      runBatchToEnd(generateBatch(ctx, prompts, { maxTokens: 2, sampling: GREEDY, ...o }));
    expect(() => run({ kvFill: 'recompute' as BatchKvFill })).toThrow(/'recompute' is implemented for single sequences only/);
    expect(() => run({ exit: crf() })).toThrow(/CRF policy keeps state/);
    expect(() => run({}, [{ tokens: new Array(81).fill(1) }])).toThrow(expect.objectContaining({ code: 'CONTEXT_OVERFLOW' }));
    expect(() => run({}, [{ tokens: [] }])).toThrow(/prompt 0 has no tokens/);
    ctx.dispose();
    const narrow = model.createContext({ contextSize: 16, batchSize: 4, threads: 1, sequences: 4 });
    expect(() => runBatchToEnd(generateBatch(narrow, [], { maxTokens: 1, sampling: GREEDY }))).toThrow(/more rows than sequences/);
    narrow.dispose();
  });
});

describe('open batch: requests join and leave the running batch', () => {
  /** One prompt alone through Sequence on a fresh context. */
  function alone(prompt: number[], maxTokens: number, sampling: ResolvedSampling, policy?: ExitPolicy): SequenceResult {
    const ctx = fresh();
    const run = new Sequence(ctx).generate(prompt, { maxTokens, sampling, exit: policy && new ExitDecider(ctx, policy) });
    let r = run.next();
    while (!r.done) r = run.next();
    ctx.dispose();
    return r.value;
  }

  test('rows admitted mid-run, each with its own sampler, exit and limit, equal the same request alone; a cancelled one frees its slot', () => {
    const ctx = fresh({ sequences: 3 });
    const batch = new OpenBatch(ctx);
    const ends = new Map<number, BatchSequenceResult>();
    const streamed = new Map<number, number[]>();
    let cancelOne = false;
    const requests = [
      { prompt: 0, maxTokens: 30, sampling: GREEDY, exit: undefined as (() => ExitPolicy) | undefined, at: 0 },
      { prompt: 1, maxTokens: 40, sampling: GREEDY, exit: undefined, at: 0, cancel: true },
      { prompt: 2, maxTokens: 25, sampling: SAMPLED, exit: gap, at: 3 },
      { prompt: 3, maxTokens: 20, sampling: GREEDY, exit: crf, at: 5 },
      { prompt: 4, maxTokens: 12, sampling: { ...SAMPLED, seed: 77 }, exit: gapFast, at: 5 },
      { prompt: 5, maxTokens: 18, sampling: GREEDY, exit: undefined, at: 9 },
    ];
    const submit = (r: (typeof requests)[number]) => {
      const index = batch.submit({
        tokens: PROMPTS[r.prompt],
        maxTokens: r.maxTokens,
        sampling: r.sampling,
        exit: r.exit,
        onToken: (e) => streamed.get(index)!.push(e.token),
        onEnd: (result) => ends.set(index, result),
        cancelled: r.cancel ? () => cancelOne : undefined,
      });
      streamed.set(index, []);
      return index;
    };
    const indexOf = new Map<number, number>();
    const run = batch.run();
    let step = 0;
    let idleLooks = 0;
    for (;;) {
      for (const r of requests) if (r.at === step) indexOf.set(r.prompt, submit(r));
      if (step === 6) cancelOne = true; // leaves before step 7, its slot goes to the next request
      const s = run.next();
      if (s.done) break;
      if (batch.active === 0 && batch.waiting === 0 && step > 9) {
        // idle while open (after the step that finished the last request): empty lists until closed
        if (idleLooks > 0) expect(s.value).toEqual([]);
        idleLooks++;
        if (idleLooks === 3) batch.close();
      }
      step++;
    }
    ctx.dispose();
    expect(idleLooks).toBe(3);
    for (const r of requests) {
      const got = ends.get(indexOf.get(r.prompt)!)!;
      const want = alone(PROMPTS[r.prompt], r.maxTokens, r.sampling, r.exit?.());
      expect(streamed.get(indexOf.get(r.prompt)!)).toEqual(got.tokens);
      if (r.cancel) {
        expect(got.stopReason).toBe('aborted');
        expect(got.tokens.length).toBeGreaterThan(0);
        expect(got.tokens.length).toBeLessThan(want.tokens.length);
        expect(want.tokens.slice(0, got.tokens.length)).toEqual(got.tokens);
      } else {
        expect([got.tokens, got.exitLayers, got.text, got.stopReason]).toEqual([want.tokens, want.exitLayers, want.text, want.stopReason]);
      }
    }
    expect(requests.some((r) => r.exit && ends.get(indexOf.get(r.prompt)!)!.exitLayers.some((l) => l < NLAYER))).toBe(true);
  });

  /** Drives an open batch step by step, recording the step in which each request got each token. */
  function stepper(batch: OpenBatch) {
    const run = batch.run();
    let step = 0;
    const tokenSteps = new Map<number, number[]>();
    const ends = new Map<number, BatchSequenceResult>();
    return {
      tokenSteps,
      ends,
      submit(tokens: number[], maxTokens: number): number {
        const index = batch.submit({ tokens, maxTokens, sampling: GREEDY, onToken: () => tokenSteps.get(index)!.push(step), onEnd: (r) => ends.set(index, r) });
        tokenSteps.set(index, []);
        return index;
      },
      /** Runs one step; false once the batch has ended. */
      next(): boolean {
        const done = run.next().done;
        step++;
        return !done;
      },
    };
  }

  test('prefill priority: a prompt admitted while 15 sequences decode gets its first token from the very next step, which runs its prompt rows only; outputs equal each request alone', () => {
    // room for all 15 prompts in one step (each fits one chunk, as alone: they are shorter than 80 tokens)
    const ctx = model.createContext({ contextSize: 80, batchSize: 16 + 256, threads: 1, sequences: 16, lensK: 16 });
    const batch = new OpenBatch(ctx);
    const s = stepper(batch);
    const early = Array.from({ length: 15 }, (_, i) => s.submit(PROMPTS[i % PROMPTS.length], 10));
    for (let k = 0; k < 4; k++) s.next(); // step 0: the 15 prompts; steps 1-3: their decode rows
    const late = s.submit(PROMPTS[3], 10);
    s.next(); // step 4: the late prompt alone
    s.next(); // step 5: every decode row, the late one's included
    expect(s.tokenSteps.get(late)![0]).toBe(4);
    for (const i of early) expect(s.tokenSteps.get(i)!.slice(0, 5)).toEqual([0, 1, 2, 3, 5]);
    expect(s.tokenSteps.get(late)!.slice(0, 2)).toEqual([4, 5]);
    batch.close();
    while (s.next());
    ctx.dispose();
    for (const i of [...early, late]) {
      const want = alone(i === late ? PROMPTS[3] : PROMPTS[i % PROMPTS.length], 10, GREEDY);
      const got = s.ends.get(i)!;
      expect([got.tokens, got.exitLayers, got.text, got.stopReason]).toEqual([want.tokens, want.exitLayers, want.text, want.stopReason]);
    }
  });

  test('prefill priority never stalls decoding two steps in a row: a long prompt\'s chunks alternate with the decode rows; outputs equal each request alone', () => {
    const ctx = fresh({ sequences: 16 }); // promptChunk = batchSize 80 - 16 slots = 64
    const batch = new OpenBatch(ctx);
    const s = stepper(batch);
    const early = [0, 1, 2].map((p) => s.submit(PROMPTS[p], 12));
    s.next();
    s.next();
    const long = PROMPTS.flat().concat(PROMPTS.flat()).slice(0, 70); // two chunks: 64 + 6
    const late = s.submit(long, 6);
    batch.close();
    while (s.next());
    ctx.dispose();
    // steps 2 (first chunk, decode rows sit out) and 3 (last chunk beside the decode rows: the late first token)
    expect(s.tokenSteps.get(late)![0]).toBe(3);
    for (const i of early) {
      const steps = s.tokenSteps.get(i)!;
      expect(steps.slice(0, 4)).toEqual([0, 1, 3, 4]);
      for (let k = 1; k < steps.length; k++) expect(steps[k] - steps[k - 1]).toBeLessThanOrEqual(2);
    }
    for (const i of early) {
      const want = alone(PROMPTS[i], 12, GREEDY);
      const got = s.ends.get(i)!;
      expect([got.tokens, got.exitLayers, got.text, got.stopReason]).toEqual([want.tokens, want.exitLayers, want.text, want.stopReason]);
    }
    // alone with the batch's chunking: a Sequence whose batch size is the batch's prompt chunk
    const narrowCtx = model.createContext({ contextSize: 80, batchSize: 64, threads: 1, lensK: 16 });
    const run = new Sequence(narrowCtx).generate(long, { maxTokens: 6, sampling: GREEDY });
    let r = run.next();
    while (!r.done) r = run.next();
    narrowCtx.dispose();
    expect(s.ends.get(late)!.tokens).toEqual(r.value.tokens);
    expect(s.ends.get(late)!.text).toEqual(r.value.text);
  });

  test('a request cancelled while it waits never takes a slot; a closed batch refuses requests', () => {
    const ctx = fresh({ sequences: 1 });
    const batch = new OpenBatch(ctx);
    const ends: BatchSequenceResult[] = [];
    batch.submit({ tokens: PROMPTS[0], maxTokens: 5, sampling: GREEDY, onEnd: (r) => ends.push(r) });
    batch.submit({ tokens: PROMPTS[1], maxTokens: 5, sampling: GREEDY, onEnd: (r) => ends.push(r), cancelled: () => true });
    batch.close();
    expect(() => batch.submit({ tokens: PROMPTS[2], maxTokens: 5, sampling: GREEDY })).toThrow(expect.objectContaining({ code: 'DISPOSED' }));
    const run = batch.run();
    while (!run.next().done);
    ctx.dispose();
    expect(ends.map((r) => [r.index, r.stopReason, r.tokens.length])).toEqual([
      [0, 'maxTokens', 5],
      [1, 'aborted', 0],
    ]);
    const two = fresh({ sequences: 2 });
    expect(() => new OpenBatch(two, { kvFill: 'recompute' as BatchKvFill })).toThrow(/'recompute'/);
    two.dispose();
  });
});

describe('batched classification equals one-by-one', () => {
  const labels = [model.tokenizer.encode(' yes', { addSpecial: false })[0], model.tokenizer.encode(' no', { addSpecial: false })[0]];

  test.each([
    ['full depth', (): ExitPolicy | undefined => undefined],
    ['threshold', gap],
    ['threshold, fast lens (label candidates)', gapFast],
    ['CRF', crf],
  ] as const)('%s', (_name, policy) => {
    const single = PROMPTS.map((prompt) => {
      const ctx = fresh();
      const p = policy();
      const lensed = p && p.lens.mode === 'fast' ? { ...p, lens: { mode: 'fast' as const, candidates: labels } } : p;
      const r = new Sequence(ctx).classify(prompt, labels, lensed && new ExitDecider(ctx, lensed));
      ctx.dispose();
      return r;
    });
    for (const compaction of [true, false]) {
      const ctx = fresh({ sequences: 3 + (compaction ? 0 : 1) });
      const p = policy();
      const exit: BatchExit | undefined = p?.kind === 'crf' ? (policy as () => ExitPolicy) : p;
      const run = runBatchToEnd(classifyBatch(ctx, PROMPTS.map((tokens) => ({ tokens, labelTokens: labels })), { exit, compaction }));
      ctx.dispose();
      expect(run.results.map((r) => r.label)).toEqual(single.map((r) => r.index));
      expect(run.results.map((r) => r.exitLayer)).toEqual(single.map((r) => r.layers));
      expect(run.results.map((r) => r.probs)).toEqual(single.map((r) => r.probs));
    }
  });
});

describe('API: Model.openBatch (ContinuousBatch)', () => {
  test('requests submitted while others run equal Session.generate; a signal cancels one; dispose rejects the rest', async () => {
    const m = await loadModel(BUNDLED_MODEL, { threads: 1 });
    try {
      const batch = await m.openBatch({ slots: 2, contextSize: 80 });
      const first = batch.submit(TEXTS[0], { maxTokens: 30, temperature: 0 });
      const streamed: string[] = [];
      for await (const e of first) {
        streamed.push(e.text);
        if (streamed.length === 5) break; // leaving the loop cancels it
      }
      await expect(first.result).rejects.toMatchObject({ name: 'AbortError', code: 'ABORTED' });
      const controller = new AbortController();
      const cancelled = batch.submit(TEXTS[1], { maxTokens: 60, temperature: 0, signal: controller.signal });
      const later = [2, 3, 4].map((i) => batch.submit(TEXTS[i], { maxTokens: 12, temperature: 0.7, seed: 9 + i }));
      controller.abort('enough');
      await expect(cancelled.result).rejects.toMatchObject({ name: 'AbortError', cause: 'enough' });
      const results = await Promise.all(later.map((r) => r.result));
      const s = await m.createSession({ contextSize: 80 });
      for (const [k, i] of [2, 3, 4].entries()) expect(results[k].text).toBe((await s.generate(TEXTS[i], { maxTokens: 12, temperature: 0.7, seed: 9 + i })).text);
      const full = await s.generate(TEXTS[0], { maxTokens: 30, temperature: 0 });
      expect(full.text.startsWith(streamed.join(''))).toBe(true);
      await s.dispose();
      expect(batch.inFlight).toBe(0);
      const pending = batch.submit(TEXTS[5], { maxTokens: 200, temperature: 0, stopAtEos: false });
      await m.dispose();
      await expect(pending.result).rejects.toMatchObject({ code: 'DISPOSED' });
      await expect(batch.submit('x').result).rejects.toMatchObject({ code: 'DISPOSED' });
    } finally {
      await m.dispose();
    }
  });
});

describe('API: Model.generateBatch / classifyBatch', () => {
  const dir = tmpDir('adainfer-batch-');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('equal to Session.generate / classify; results in prompt order and through onResult', async () => {
    const file = path.join(dir, 'crf.json');
    saveExitFile(file, crfExitFile());
    const m = await loadModel(undefined, { threads: 1 });
    // A fresh session per prompt: a session reuses its cached prefix, whose rows the attention kernel then
    // groups differently (last-bit rounding), while a batch prefills each prompt whole.
    const alone = async <T>(fn: (s: Session) => Promise<T>): Promise<T> => {
      const s = await m.createSession();
      try {
        return await fn(s);
      } finally {
        await s.dispose();
      }
    };
    try {
      for (const exit of ['never', file, { kind: 'threshold' as const, feature: 'gap' as const, value: 0.3 }]) {
        const seen: number[] = [];
        const batch = await m.generateBatch([...TEXTS, { prompt: TEXTS[0], maxTokens: 4, seed: 5 }], {
          maxTokens: 20,
          temperature: 0.7,
          seed: 3,
          batchSize: 3,
          exit,
          onResult: (r) => seen.push(r.index),
        });
        expect(seen.sort((a, b) => a - b)).toEqual([...TEXTS.keys(), TEXTS.length]);
        for (let i = 0; i < TEXTS.length; i++) {
          const one = await alone((s) => s.generate(TEXTS[i], { maxTokens: 20, temperature: 0.7, seed: 3 + i, exit }));
          expect(batch.results[i].tokens).toEqual(one.tokens);
          expect(batch.results[i].exitLayers).toEqual(one.exitLayers);
        }
        const last = await alone((s) => s.generate(TEXTS[0], { maxTokens: 4, temperature: 0.7, seed: 5, exit }));
        expect(batch.results[TEXTS.length].tokens).toEqual(last.tokens);

        const labels = [' yes', ' no', ' maybe'];
        const c = await m.classifyBatch(TEXTS, labels, { exit, batchSize: 4 });
        for (let i = 0; i < TEXTS.length; i++) {
          const one = await alone((s) => s.classify(TEXTS[i], labels, { exit }));
          expect(c.results[i]).toMatchObject({ promptIndex: i, index: one.index, label: one.label, probs: one.probs, exitLayer: one.exitLayer });
        }
      }
    } finally {
      await m.dispose();
    }
  });

  test('options are checked; an abort rejects with ABORTED', async () => {
    const m = await loadModel(undefined, { threads: 1 });
    try {
      await expect(m.generateBatch(['x'], { kvFill: 'recompute' as BatchKvFill })).rejects.toMatchObject({ code: 'INVALID_OPTION', option: 'kvFill' });
      await expect(m.generateBatch(['x'], { batchSize: 0 })).rejects.toMatchObject({ code: 'INVALID_OPTION' });
      await expect(m.classifyBatch(['x'], ['a'])).rejects.toMatchObject({ code: 'INVALID_OPTION', option: 'labels' });
      await expect(m.generateBatch(['x'], { exit: path.join(dir, 'missing.json') })).rejects.toMatchObject({ code: 'EXIT_FILE' });
      const controller = new AbortController();
      let results = 0;
      const run = m.generateBatch(
        Array.from({ length: 64 }, () => 'Once upon a time'),
        {
          batchSize: 2,
          maxTokens: 64,
          stopAtEos: false,
          signal: controller.signal,
          onResult: () => {
            if (++results === 2) controller.abort();
          },
        },
      );
      await expect(run).rejects.toMatchObject({ code: 'ABORTED' });
      expect(results).toBeLessThan(64);
      // the model is still usable
      const after = await m.generateBatch(['Once upon a time'], { maxTokens: 3, temperature: 0 });
      expect(after.results[0].tokens).toHaveLength(3);
    } finally {
      await m.dispose();
    }
  });
});
