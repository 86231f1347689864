/**
 * The programmatic API on the bundled model: generation, streaming, sessions, abort, options, and the
 * event loop staying free while the worker computes.
 */
import { AdaInferError, loadModel, Model } from '../../lib';
import { TransformerModel } from '../../lib/model/transformer';
import { Sequence } from '../../lib/engine/sequence';
import { BUNDLED_MODEL } from '../helpers';

const GREEDY = { temperature: 0, maxTokens: 24 };

describe('API on the bundled model', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(undefined, { threads: 1 });
  });
  afterAll(async () => {
    await model?.dispose();
  });

  test('the default model is the bundled early-exit model', () => {
    expect(model.info.path).toBe(BUNDLED_MODEL);
    expect(model.info.name).toBe('adainfer-tinystories-10L-ee');
    expect(model.info.nLayer).toBe(10);
    expect(model.info.fingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  test('greedy generation equals the in-process layer loop, and streaming equals generate', async () => {
    const session = await model.createSession();
    const result = await session.generate('Once upon a time', GREEDY);
    expect(result.tokens).toHaveLength(24);
    expect(result.promptTokens).toBe(5);
    expect(result.stopReason).toBe('maxTokens');
    expect(result.text.length).toBeGreaterThan(20);
    expect(result.timings.decodeTokensPerSecond).toBeGreaterThan(0);

    const streamed: number[] = [];
    let text = '';
    for await (const e of session.stream('Once upon a time', GREEDY)) {
      streamed.push(e.token);
      text += e.text;
    }
    expect(streamed).toEqual(result.tokens);
    expect(text).toBe(result.text);

    // The same generation synchronously, in this thread, through the low-level classes.
    const direct = TransformerModel.load(BUNDLED_MODEL);
    const ctx = direct.createContext({ contextSize: 256, batchSize: 64, threads: 1 });
    const run = new Sequence(ctx).generate(direct.tokenizer.encode('Once upon a time'), {
      maxTokens: 24,
      sampling: { temperature: 0, topK: 0, topP: 1, seed: 0 },
    });
    let r = run.next();
    while (!r.done) r = run.next();
    expect(r.value.tokens).toEqual(result.tokens);
    ctx.dispose();
    direct.dispose();
    await session.dispose();
  });

  test('seeded sampling is reproducible and differs across seeds', async () => {
    const session = await model.createSession();
    const opts = { maxTokens: 32, temperature: 1, topK: 0, topP: 1 };
    const a = await session.generate('Once upon a time', { ...opts, seed: 7 });
    const b = await session.generate('Once upon a time', { ...opts, seed: 7 });
    const c = await session.generate('Once upon a time', { ...opts, seed: 8 });
    expect(b.tokens).toEqual(a.tokens);
    expect(c.tokens).not.toEqual(a.tokens);
    await session.dispose();
  });

  test('a prompt that extends the cached one reuses its KV cache prefix; a repeated prompt gives the same tokens', async () => {
    const session = await model.createSession();
    const first = await session.generate('Tom and Sue went to the park.', GREEDY);
    const longer = await session.generate(`Tom and Sue went to the park.${first.text} They`, GREEDY);
    expect(first.reusedPromptTokens).toBe(0);
    expect(longer.reusedPromptTokens).toBeGreaterThanOrEqual(first.promptTokens);
    // A prompt found whole in the cache runs its one prompt step again (exactly as the first time).
    const second = await session.generate('Tom and Sue went to the park.', GREEDY);
    expect(second.reusedPromptTokens).toBe(0);
    expect(second.tokens).toEqual(first.tokens);
    await session.dispose();
  });

  test('sessions on one model are independent', async () => {
    const [s1, s2] = await Promise.all([model.createSession(), model.createSession()]);
    const [a, b] = await Promise.all([
      s1.generate('Once upon a time', GREEDY),
      s2.generate('The dog ran', GREEDY),
    ]);
    const a2 = await s2.generate('Once upon a time', GREEDY);
    expect(a2.tokens).toEqual(a.tokens);
    expect(b.tokens).not.toEqual(a.tokens);
    await Promise.all([s1.dispose(), s2.dispose()]);
  });

  test('abort stops a generation and leaves the session usable', async () => {
    const session = await model.createSession();
    const controller = new AbortController();
    let seen = 0;
    const result = await session.generate('Once upon a time', {
      temperature: 0,
      maxTokens: 200,
      stopAtEos: false,
      signal: controller.signal,
    });
    expect(result.tokens.length).toBe(200); // not aborted: sanity of the long run
    const pending = (async () => {
      for await (const _ of session.stream('Once upon a time', { temperature: 0, maxTokens: 200, stopAtEos: false, signal: controller.signal })) {
        if (++seen === 3) controller.abort();
      }
    })();
    // The stream rejects with an AbortError, and no event arrives after the abort.
    await expect(pending).rejects.toMatchObject({ name: 'AbortError', code: 'ABORTED' });
    expect(seen).toBe(3);
    const after = await session.generate('Once upon a time', GREEDY);
    expect(after.tokens).toHaveLength(24);
    await session.dispose();
  });

  test('a second generation on a busy session is a BUSY error', async () => {
    const session = await model.createSession();
    const first = session.generate('Once upon a time', { temperature: 0, maxTokens: 100, stopAtEos: false });
    await expect(session.generate('Once', GREEDY)).rejects.toMatchObject({ code: 'BUSY' });
    await first;
    await session.dispose();
  });

  test('a prompt longer than the context is a CONTEXT_OVERFLOW error', async () => {
    const session = await model.createSession({ contextSize: 16 });
    await expect(session.generate('Once upon a time there was a little dog who liked to run in the big green park', GREEDY)).rejects.toMatchObject({
      code: 'CONTEXT_OVERFLOW',
      name: 'ContextOverflowError',
    });
    // generation that reaches the end of the context stops cleanly
    const r = await session.generate('Once upon a time', { temperature: 0, maxTokens: 100, stopAtEos: false });
    expect(r.stopReason).toBe('contextFull');
    expect(r.promptTokens + r.tokens.length).toBe(16 + 1);
    await session.dispose();
  });

  test('invalid options are typed errors naming the option', async () => {
    const session = await model.createSession();
    const bad: [object, string][] = [
      [{ maxTokens: -1 }, 'maxTokens'],
      [{ maxTokens: 1.5 }, 'maxTokens'],
      [{ temperature: -1 }, 'temperature'],
      [{ temperature: NaN }, 'temperature'],
      [{ topP: 0 }, 'topP'],
      [{ topP: 1.5 }, 'topP'],
      [{ topK: -2 }, 'topK'],
      [{ seed: -1 }, 'seed'],
    ];
    for (const [opts, option] of bad) {
      await expect(session.generate('Once', opts)).rejects.toMatchObject({ code: 'INVALID_OPTION', option });
    }
    await expect(session.generate([1, 99999], GREEDY)).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    await expect(model.createSession({ contextSize: 0 })).rejects.toMatchObject({ code: 'INVALID_OPTION', option: 'contextSize' });
    await expect(model.createSession({ threads: 0 })).rejects.toMatchObject({ code: 'INVALID_OPTION', option: 'threads' });
    await expect(loadModel(BUNDLED_MODEL, { threads: 2.5 })).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    await expect(loadModel(BUNDLED_MODEL, { kernels: 'sse9' as never })).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    await session.dispose();
  });

  test('a disposed session or model is a DISPOSED error', async () => {
    const m = await loadModel(undefined, { threads: 1 });
    const s = await m.createSession();
    await s.dispose();
    await expect(s.generate('Once', GREEDY)).rejects.toMatchObject({ code: 'DISPOSED' });
    await m.dispose();
    await m.dispose(); // idempotent
    await expect(m.createSession()).rejects.toMatchObject({ code: 'DISPOSED' });
    await expect(m.tokenize('x')).rejects.toBeInstanceOf(AdaInferError);
  });
});

describe('the event loop stays free', () => {
  /** Largest delay of a 5 ms interval timer while `work` runs, and how long the work took. */
  async function timerLateness(work: () => Promise<void> | void): Promise<{ maxLateMs: number; workMs: number }> {
    let last = performance.now();
    let maxLateMs = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      maxLateMs = Math.max(maxLateMs, now - last - 5);
      last = now;
    }, 5);
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, 20));
    last = performance.now();
    await work();
    const workMs = performance.now() - t0;
    await new Promise((r) => setTimeout(r, 20));
    clearInterval(timer);
    return { maxLateMs, workMs };
  }

  test('a timer keeps firing on time during a long generation', async () => {
    // Control first: the same work on this thread blocks the timer for as long as a generation takes.
    const direct = TransformerModel.load(BUNDLED_MODEL, { kernels: 'generic' });
    const ctx = direct.createContext({ contextSize: 256, batchSize: 64, threads: 1 });
    const blocked = await timerLateness(() => {
      const run = new Sequence(ctx).generate(direct.tokenizer.encode('Once upon a time'), {
        maxTokens: 200,
        stopAtEos: false,
        sampling: { temperature: 0, topK: 0, topP: 1, seed: 0 },
      });
      while (!run.next().done);
    });
    ctx.dispose();
    direct.dispose();
    expect(blocked.maxLateMs).toBeGreaterThan(Math.min(100, blocked.workMs / 2));

    const model = await loadModel(undefined, { threads: 1, kernels: 'generic' });
    const session = await model.createSession();
    const { maxLateMs, workMs } = await timerLateness(async () => {
      const t0 = performance.now();
      while (performance.now() - t0 < 1500) {
        await session.generate('Once upon a time', { temperature: 0, maxTokens: 200, stopAtEos: false });
      }
    });
    await model.dispose();
    expect(workMs).toBeGreaterThan(1500);
    // On the worker the timer is late by scheduling noise only: 100 ms, or a fifth of what one blocking generation
    // costs when the machine is so loaded that the OS itself delays this thread that long (a generation that
    // blocked this thread again would make the timer late by all of it).
    expect(maxLateMs).toBeLessThan(Math.max(100, blocked.maxLateMs / 5));
  });
});
