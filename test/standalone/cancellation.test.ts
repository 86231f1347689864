/**
 * Cancellation, one way everywhere (issue 17, defects 1 and 5): every cancelled call rejects with an AbortError
 * (name 'AbortError', an AdaInferError with code 'ABORTED', the signal's reason as its cause) — before it starts,
 * mid-generate, mid-stream, mid-batch and mid-classify; leaving a `for await` loop early stops the generation
 * (the session is free again at once); after abort() no queued token event arrives.
 */
import { AbortError, AdaInferError, loadModel, Model, Session } from '../../lib';

const LONG = { temperature: 0, maxTokens: 400, stopAtEos: false };
const PROMPT = 'Once upon a time';

/** The rejection of `p`; fails the test when it resolves. */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

/** What every cancelled call rejects with. */
function expectAbortError(err: unknown, reason?: unknown): void {
  expect(err).toBeInstanceOf(AbortError);
  expect(err).toBeInstanceOf(AdaInferError);
  expect(err).toBeInstanceOf(Error);
  expect(err).toMatchObject({ name: 'AbortError', code: 'ABORTED' });
  if (reason !== undefined) expect((err as Error).cause).toBe(reason);
}

describe('cancellation', () => {
  let model: Model;
  let session: Session;
  beforeAll(async () => {
    model = await loadModel(undefined, { threads: 1 });
    session = await model.createSession({ contextSize: 512 });
  });
  afterAll(async () => {
    await session?.dispose();
    await model?.dispose();
  });

  test('breaking out of for await stops the generation: the next generate runs at once (no BUSY)', async () => {
    let seen = 0;
    for await (const _ of session.stream(PROMPT, LONG)) {
      if (++seen === 3) break;
    }
    const next = await session.generate(PROMPT, { temperature: 0, maxTokens: 4 });
    expect(next.tokens).toHaveLength(4);
    // Also `return` and a throw in the loop body leave the loop; each time the session is free again.
    const it = session.stream(PROMPT, LONG);
    await it.next();
    await expect(it.return!()).resolves.toEqual({ value: undefined, done: true });
    await expect(session.generate(PROMPT, { temperature: 0, maxTokens: 2 })).resolves.toMatchObject({ stopReason: 'maxTokens' });
    await expect(
      (async () => {
        for await (const _ of session.stream(PROMPT, LONG)) throw new Error('out');
      })(),
    ).rejects.toThrow('out');
    await expect(session.generate(PROMPT, { temperature: 0, maxTokens: 2 })).resolves.toMatchObject({ stopReason: 'maxTokens' });
  });

  test('after abort() no token event arrives, even those already queued; the stream rejects with AbortError', async () => {
    const s = await model.createSession({ contextSize: 2048 });
    const controller = new AbortController();
    const it = s.stream(PROMPT, { ...LONG, maxTokens: 2000, signal: controller.signal });
    await it.next();
    // Let the worker run ahead (2000 tokens take seconds), so that events are queued on this side.
    await new Promise((r) => setTimeout(r, 50));
    controller.abort('enough');
    const err = await rejection(it.next());
    expectAbortError(err, 'enough');
    await expect(it.next()).rejects.toBeInstanceOf(AbortError); // stays ended
    await expect(s.generate(PROMPT, { temperature: 0, maxTokens: 2 })).resolves.toMatchObject({ stopReason: 'maxTokens' });
    await s.dispose();
  });

  test('a pre-aborted call rejects with AbortError: generate, stream, classify, generateBatch, classifyBatch', async () => {
    const reason = new Error('stop');
    const signal = AbortSignal.abort(reason);
    expectAbortError(await rejection(session.generate(PROMPT, { signal })), reason);
    expectAbortError(await rejection(session.stream(PROMPT, { signal }).next()), reason);
    expectAbortError(await rejection(session.classify(PROMPT, [' there', ' was'], { signal })), reason);
    expectAbortError(await rejection(model.generateBatch([PROMPT], { signal })), reason);
    expectAbortError(await rejection(model.classifyBatch([PROMPT], [' there', ' was'], { signal })), reason);
  });

  test('an abort mid-generate rejects with AbortError (not a result with stopReason aborted)', async () => {
    const controller = new AbortController();
    const running = session.generate(PROMPT, { ...LONG, signal: controller.signal });
    setTimeout(() => controller.abort(), 100);
    expectAbortError(await rejection(running));
    await expect(session.generate(PROMPT, { temperature: 0, maxTokens: 2 })).resolves.toMatchObject({ stopReason: 'maxTokens' });
  });

  test('an abort mid-batch rejects with AbortError; no result arrives after it', async () => {
    const controller = new AbortController();
    const after: number[] = [];
    let aborted = false;
    const prompts = Array.from({ length: 12 }, (_, i) => `${PROMPT} ${i}`);
    const running = model.generateBatch(prompts, {
      ...LONG,
      maxTokens: 40,
      batchSize: 2,
      signal: controller.signal,
      onResult: (r) => {
        if (aborted) after.push(r.index);
        aborted = true;
        controller.abort();
      },
    });
    expectAbortError(await rejection(running));
    expect(aborted).toBe(true);
    expect(after).toEqual([]);
  });

  test('an abort mid-classify rejects with AbortError, and the session is usable after', async () => {
    const s = await model.createSession({ contextSize: 512, batchSize: 8 });
    const long = Array.from({ length: 40 }, () => 'The cat sat on the mat.').join(' ');
    const controller = new AbortController();
    const running = s.classify(long, [' yes', ' no'], { signal: controller.signal });
    controller.abort();
    expectAbortError(await rejection(running));
    const again = await s.classify('The cat sat on the', [' mat', ' dog']);
    expect(again.probs).toHaveLength(2);
    await s.dispose();
  });

  test('disposing a session mid-generate: the generation rejects with AbortError', async () => {
    const s = await model.createSession();
    const running = rejection(s.generate(PROMPT, LONG)); // handled from the start
    await s.dispose();
    expectAbortError(await running);
  });
});
