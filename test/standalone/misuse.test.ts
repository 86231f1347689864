/**
 * Misuse of the API (complements api.test.ts, which covers the basic BUSY, DISPOSED and invalid-value cases):
 * every method of a disposed session or model, concurrent calls on one session, aborting twice / late /
 * early, disposing while generating, option values of the wrong type, a thread count above the machine's,
 * a maxTokens far beyond the context, and 1,000 load/dispose cycles with flat resident memory.
 * Each misuse is a typed error (or a documented no-op), and the runtime keeps working afterwards.
 */
import { execFileSync } from 'child_process';
import * as os from 'os';
import * as path from 'path';
import { AdaInferError, loadModel, Model, Session } from '../../lib';
import { BUNDLED_MODEL } from '../helpers';

/** The os module object itself (the `import * as` namespace is a read-only view), for jest.spyOn. */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const nodeOs: typeof os = require('os');

const GREEDY = { temperature: 0, maxTokens: 8 };
const LONG = { temperature: 0, maxTokens: 200, stopAtEos: false };

/** The rejection of `p` (fails the test if it resolves). */
async function rejection(p: Promise<unknown> | (() => Promise<unknown>)): Promise<AdaInferError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    expect(err).toBeInstanceOf(AdaInferError);
    return err as AdaInferError;
  }
  throw new Error('expected a rejection');
}

describe('API misuse', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(undefined, { threads: 1 });
  });
  afterAll(async () => {
    await model?.dispose();
  });

  test('a disposed session: every method is DISPOSED, disposing again is a no-op, the model is unaffected', async () => {
    const s = await model.createSession();
    await s.dispose();
    expect((await rejection(s.generate('Once', GREEDY))).code).toBe('DISPOSED');
    expect((await rejection(s.stream('Once', GREEDY).next())).code).toBe('DISPOSED');
    expect((await rejection(s.classify('Once', [' upon', ' there']))).code).toBe('DISPOSED');
    expect(() => s.bench({ promptTokens: 1, genTokens: 1, seed: 1 })).toThrow(expect.objectContaining({ code: 'DISPOSED' }));
    await expect(s.dispose()).resolves.toBeUndefined();
    const other = await model.createSession();
    expect((await other.generate('Once', GREEDY)).tokens).toHaveLength(8);
    await other.dispose();
  });

  test('a disposed model: every method is DISPOSED, its sessions too; disposing them afterwards is a no-op', async () => {
    const m = await loadModel(undefined, { threads: 1 });
    const s = await m.createSession();
    await m.dispose();
    for (const call of [
      () => m.tokenize('x'),
      () => m.detokenize([1]),
      () => m.createSession(),
      () => m.generateBatch(['Once'], GREEDY),
      () => m.classifyBatch(['Once'], [' upon', ' there']),
      () => s.generate('Once', GREEDY),
      () => s.classify('Once', [' upon', ' there']),
    ]) {
      expect((await rejection(call)).code).toBe('DISPOSED');
    }
    // Cleanup in any order must not throw: the model's dispose freed every session.
    await expect(s.dispose()).resolves.toBeUndefined();
    await expect(m.dispose()).resolves.toBeUndefined();
  });

  test('concurrent calls on one session: BUSY for a second generation, a stream or a classification', async () => {
    const s = await model.createSession();
    const first = s.stream('Once upon a time', LONG);
    await first.next(); // the generation is running on the worker
    expect((await rejection(s.generate('Once', GREEDY))).code).toBe('BUSY');
    expect((await rejection(s.stream('Once', GREEDY).next())).code).toBe('BUSY');
    expect((await rejection(s.classify('Once', [' upon', ' there']))).code).toBe('BUSY');
    // another session of the same model is not affected
    const other = await model.createSession();
    expect((await other.generate('Once', GREEDY)).tokens).toHaveLength(8);
    let rest = 1;
    for await (const _ of first) rest++;
    expect(rest).toBe(200);
    expect((await s.generate('Once', GREEDY)).tokens).toHaveLength(8);
    await Promise.all([s.dispose(), other.dispose()]);
  });

  test('abort: twice, after completion, before the start, and a signal reused after it fired', async () => {
    const s = await model.createSession();
    // after completion: no effect on the result, nor on the next generation
    const late = new AbortController();
    const done = await s.generate('Once', { ...GREEDY, signal: late.signal });
    late.abort();
    late.abort();
    expect(done.stopReason).toBe('maxTokens');
    expect((await s.generate('Once', GREEDY)).tokens).toEqual(done.tokens);
    // a fired signal refuses to start, every time
    expect((await rejection(s.generate('Once', { ...GREEDY, signal: late.signal }))).code).toBe('ABORTED');
    expect((await rejection(s.generate('Once', { ...GREEDY, signal: AbortSignal.abort() }))).code).toBe('ABORTED');
    // twice while running: one stop, reported once. The flag is shared memory, usually set before the worker
    // reads the request; on a loaded machine the worker may already have produced a few tokens.
    const twice = new AbortController();
    const running = s.generate('Once upon a time', { ...LONG, signal: twice.signal });
    twice.abort();
    twice.abort('again');
    // One rejection, an AbortError (issue 17: cancellation rejects the same way everywhere).
    expect(await rejection(running)).toMatchObject({ name: 'AbortError', code: 'ABORTED' });
    const after = await s.generate('Once', GREEDY);
    expect(after.tokens).toEqual(done.tokens);
    await s.dispose();
  });

  test('disposing a session while it generates aborts the generation (an AbortError), then frees it', async () => {
    const s = await model.createSession();
    const running = rejection(s.generate('Once upon a time', LONG)); // handled from the start
    await s.dispose(); // no BUSY: the generation is aborted first
    expect(await running).toMatchObject({ name: 'AbortError', code: 'ABORTED' });
    expect((await rejection(s.generate('Once', GREEDY))).code).toBe('DISPOSED');
    // a stream, disposed after its first token: it ends with an AbortError, or finished if it was that fast
    const s2 = await model.createSession();
    const it = s2.stream('Once upon a time', LONG);
    await it.next();
    await s2.dispose();
    let rest = 1;
    try {
      for await (const _ of it) rest++;
    } catch (err) {
      expect(err).toMatchObject({ name: 'AbortError', code: 'ABORTED' });
      expect(rest).toBeLessThan(200);
    }
    expect(rest).toBeLessThanOrEqual(200);
    expect((await rejection(s2.generate('Once', GREEDY))).code).toBe('DISPOSED');
  });

  test('disposing the model while a session generates: the generation rejects with DISPOSED', async () => {
    const m = await loadModel(undefined, { threads: 1 });
    const s = await m.createSession();
    // The worker yields between tokens, so the dispose request is handled before the generation can end.
    const running = rejection(s.generate('Once upon a time', LONG)); // handled from the start
    await m.dispose();
    expect((await running).code).toBe('DISPOSED');
    await expect(s.dispose()).resolves.toBeUndefined();
  });

  test('disposing models while they generate, 40 times over (in a child process): DISPOSED every time, never an abort', () => {
    // Before the worker waited for in-flight generations, a native call throwing while the worker was being
    // terminated aborted the whole process ("terminate called after throwing an instance of 'Napi::Error'").
    const out = execFileSync(process.execPath, [path.join(__dirname, '..', 'fuzz', 'dispose_race.js'), '40'], { encoding: 'utf8', timeout: 180000 });
    const r = JSON.parse(out) as { rounds: number; outcomes: Record<string, number> };
    expect(r.rounds).toBe(40);
    expect(Object.keys(r.outcomes).every((k) => k === 'DISPOSED' || k === 'finished')).toBe(true);
    expect(r.outcomes.DISPOSED).toBeGreaterThan(60);
  });

  describe('option values of the wrong type are OptionErrors naming the option', () => {
    let s: Session;
    beforeAll(async () => {
      s = await model.createSession();
    });
    afterAll(async () => {
      await s.dispose();
    });

    const fn = () => 1;
    test.each<[string, Record<string, unknown>, string]>([
      ['maxTokens as a string', { maxTokens: '5' }, 'maxTokens'],
      ['maxTokens Infinity', { maxTokens: Infinity }, 'maxTokens'],
      ['maxTokens NaN', { maxTokens: NaN }, 'maxTokens'],
      ['maxTokens as an object', { maxTokens: { n: 5 } }, 'maxTokens'],
      ['temperature as a string', { temperature: '0.5' }, 'temperature'],
      ['temperature Infinity', { temperature: Infinity }, 'temperature'],
      ['temperature as an array', { temperature: [0] }, 'temperature'],
      ['topK as a string', { topK: '40' }, 'topK'],
      ['topK 1.5', { topK: 1.5 }, 'topK'],
      ['topP as a string', { topP: '0.9' }, 'topP'],
      ['topP NaN', { topP: NaN }, 'topP'],
      ['seed as a string', { seed: '7' }, 'seed'],
      ['seed 2^32', { seed: 2 ** 32 }, 'seed'],
      ['seed as a bigint', { seed: 7n }, 'seed'],
      ['stopAtEos as a string', { stopAtEos: 'no' }, 'stopAtEos'],
      ['addBos as a number', { addBos: 0 }, 'addBos'],
      ['signal as a plain object', { signal: {} }, 'signal'],
      ['signal as a string', { signal: 'abort' }, 'signal'],
      ['exit as a number', { exit: 5 }, 'exit'],
      ['exit as an empty object', { exit: {} }, 'exit'],
      ['exit threshold of a string', { exit: { kind: 'threshold', feature: 'p1', value: 'high' } }, 'threshold'],
      ['a function among the options', { exit: fn }, 'arguments'],
      ['an unknown option (a typo)', { maxTokenz: 5 }, 'maxTokenz'],
    ])('generate with %s', async (_, options, option) => {
      const err = await rejection(s.generate('Once', { ...GREEDY, ...options } as never));
      expect(err).toMatchObject({ code: 'INVALID_OPTION', option });
    });

    test.each<[string, () => Promise<unknown>, string]>([
      ['generate(options = null)', () => s.generate('Once', null as never), 'options'],
      ['generate(options = "x")', () => s.generate('Once', 'x' as never), 'options'],
      ['generate(prompt = 5)', () => s.generate(5 as never, GREEDY), 'prompt'],
      ['generate(prompt = null)', () => s.generate(null as never, GREEDY), 'prompt'],
      ['generate(prompt = {})', () => s.generate({} as never, GREEDY), 'prompt'],
      ['generate(prompt = [])', () => s.generate([], GREEDY), 'prompt'],
      ['generate(prompt = ["a"])', () => s.generate(['a'] as never, GREEDY), 'prompt'],
      ['generate(prompt = [1.5])', () => s.generate([1.5], GREEDY), 'prompt'],
      ['generate(prompt = [-1])', () => s.generate([-1], GREEDY), 'prompt'],
      ['generate(prompt = [2^53])', () => s.generate([2 ** 53], GREEDY), 'prompt'],
      ['generate(prompt = [fn])', () => s.generate([(() => 1) as never], GREEDY), 'arguments'],
      ['createSession(null)', () => model.createSession(null as never), 'options'],
      ['createSession({ contextSize: "64" })', () => model.createSession({ contextSize: '64' as never }), 'contextSize'],
      ['createSession({ contextSize: 2^21 })', () => model.createSession({ contextSize: 2 ** 21 }), 'contextSize'],
      ['createSession({ batchSize: -1 })', () => model.createSession({ batchSize: -1 }), 'batchSize'],
      ['createSession({ threads: "2" })', () => model.createSession({ threads: '2' as never }), 'threads'],
      ['createSession({ threads: 1025 })', () => model.createSession({ threads: 1025 }), 'threads'],
      ['createSession({ kvFill: 1 })', () => model.createSession({ kvFill: 1 as never }), 'kvFill'],
      ['tokenize(5)', () => model.tokenize(5 as never), 'text'],
      ['tokenize("x", null)', () => model.tokenize('x', null as never), 'options'],
      ['tokenize("x", { addSpecial: "yes" })', () => model.tokenize('x', { addSpecial: 'yes' as never }), 'addSpecial'],
      ['detokenize(null)', () => model.detokenize(null as never), 'tokens'],
      ['detokenize("abc")', () => model.detokenize('abc' as never), 'tokens'],
      ['classify(labels = null)', () => s.classify('Once', null as never), 'labels'],
      ['classify(labels = [1, 2])', () => s.classify('Once', [1, 2] as never), 'labels'],
      ['classify(options = null)', () => s.classify('Once', [' upon', ' there'], null as never), 'options'],
      ['generateBatch(prompts = "x")', () => model.generateBatch('x' as never), 'prompts'],
      ['generateBatch(signal = {})', () => model.generateBatch(['x'], { signal: {} as never }), 'signal'],
      ['loadModel(5)', () => loadModel(5 as never), 'path'],
      ['loadModel(path, null)', () => loadModel(BUNDLED_MODEL, null as never), 'options'],
      ['loadModel(path, { threads: 0.5 })', () => loadModel(BUNDLED_MODEL, { threads: 0.5 }), 'threads'],
      ['loadModel(path, { kernels: 5 })', () => loadModel(BUNDLED_MODEL, { kernels: 5 as never }), 'kernels'],
    ])('%s', async (_, call, option) => {
      expect(await rejection(call)).toMatchObject({ code: 'INVALID_OPTION', option });
    });

    test('after all of them the session and the model still work, and nothing is left pending', async () => {
      expect((await s.generate('Once', GREEDY)).tokens).toHaveLength(8);
      expect(await model.detokenize(await model.tokenize('Once upon', { addSpecial: false }))).toBe('Once upon');
    });
  });

  test('threads above the machine are honoured as llama.cpp honours -t (same tokens), with one warning', async () => {
    const cpus = os.availableParallelism();
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const base = await model.createSession({ threads: 1 });
      const expected = await base.generate('Once upon a time', GREEDY);
      await base.dispose();
      for (const threads of [cpus * 8, 1024]) {
        const s = await model.createSession({ threads });
        const r = await s.generate('Once upon a time', { ...GREEDY, maxTokens: threads === 1024 ? 2 : 8 });
        expect(r.tokens).toEqual(expected.tokens.slice(0, r.tokens.length));
        await s.dispose();
      }
      const ours = warn.mock.calls.filter((c) => (c[1] as { code?: string } | undefined)?.code === 'ADAINFER_THREADS');
      expect(ours).toHaveLength(1);
      expect(String(ours[0][0])).toMatch(new RegExp(`threads ${cpus * 8} is more than the ${cpus} CPUs`));
    } finally {
      warn.mockRestore();
    }
  });

  test('a contextSize whose KV cache would not fit in memory is refused before anything is allocated', async () => {
    // 1M positions of the bundled model need 5 GiB; pretend the machine has 1 GiB.
    const mem = jest.spyOn(nodeOs, 'totalmem').mockReturnValue(2 ** 30);
    try {
      const err = await rejection(model.createSession({ contextSize: 1 << 20 }));
      expect(err).toMatchObject({ code: 'INVALID_OPTION', option: 'contextSize' });
      expect(err.message).toMatch(/GiB of KV cache, more than this machine's 1\.0 GiB/);
    } finally {
      mem.mockRestore();
    }
    const s = await model.createSession({ contextSize: 4096 }); // above the trained 256: allowed, as llama.cpp
    expect(s.contextSize).toBe(4096);
    await s.dispose();
  });

  test('a huge maxTokens stops at the end of the context with stopReason contextFull', async () => {
    for (const contextSize of [48, undefined]) {
      const s = await model.createSession(contextSize ? { contextSize } : {});
      const t0 = performance.now();
      const r = await s.generate('Once upon a time', { temperature: 0, maxTokens: Number.MAX_SAFE_INTEGER, stopAtEos: false });
      expect(r.stopReason).toBe('contextFull');
      expect(r.promptTokens + r.tokens.length).toBe(s.contextSize + 1); // the last token is sampled, not stored
      expect(performance.now() - t0).toBeLessThan(60000);
      await s.dispose();
    }
  });
});

describe('resident memory over load/dispose cycles', () => {
  const LOOP = path.join(__dirname, '..', 'fuzz', 'leak_loop.js');
  const MB = 2 ** 20;
  // V8's young generation is pinned so that its growth (8 -> 16 MB, once) does not look like a leak.
  const run = (mode: string, cycles: number) =>
    JSON.parse(
      execFileSync(process.execPath, ['--expose-gc', '--min-semi-space-size=8', '--max-semi-space-size=8', LOOP, mode, String(cycles)], {
        encoding: 'utf8',
        timeout: 240000,
      }),
    ) as { ms: number; rss: Record<string, number>; heap: Record<string, number> };
  const trend = (r: { rss: Record<string, number> }) =>
    Object.entries(r.rss)
      .map(([k, v]) => `${k}:${(v / MB).toFixed(1)}`)
      .join(' ');

  test('1,000 cycles of TransformerModel.load + context + dispose: RSS at cycle 1000 within 8 MB of cycle 100', () => {
    const r = run('sync', 1000);
    console.log(`TransformerModel load/dispose x1000 in ${(r.ms / 1000).toFixed(1)} s, RSS MB by cycle: ${trend(r)}`);
    expect(Math.abs(r.rss['1000'] - r.rss['100'])).toBeLessThan(8 * MB);
    expect(Math.abs(r.heap['1000'] - r.heap['100'])).toBeLessThan(2 * MB);
  });

  test('300 cycles of loadModel (a worker each) + session + dispose: RSS at cycle 300 within 10 MB of cycle 100', () => {
    const r = run('async', 300);
    console.log(`loadModel/dispose x300 in ${(r.ms / 1000).toFixed(1)} s, RSS MB by cycle: ${trend(r)}`);
    expect(Math.abs(r.rss['300'] - r.rss['100'])).toBeLessThan(10 * MB);
  });
});
