/**
 * The model worker interleaves its sessions (issue 20, point 5): a long prompt is processed in chunks with a
 * yield between two, so a second session's short request completes while it runs — for generate and for
 * classify. And Session.classify scores each label by the token that follows the prompt's tokens, also where the
 * tokenizer merges the end of the prompt with the label (point 6, the logic of lib/tasks/labels.ts).
 */
import { loadModel, Model } from '../../lib';
import { TransformerModel } from '../../lib/model/transformer';
import { BUNDLED_MODEL } from '../helpers';

const LONG_PROMPT = Array.from({ length: 30 }, (_, i) => `Tom had ${i} red balls and a blue box.`).join(' ');

describe('one model, several sessions', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(undefined, { threads: 1 });
  });
  afterAll(async () => {
    await model?.dispose();
  });

  async function order(long: () => Promise<unknown>, short: () => Promise<unknown>): Promise<string[]> {
    const done: string[] = [];
    const a = long().then(() => done.push('long'));
    const b = short().then(() => done.push('short'));
    await Promise.all([a, b]);
    return done;
  }

  test('a short generate completes while another session prefills a long prompt (in chunks of 8 tokens)', async () => {
    const longSession = await model.createSession({ contextSize: 1024, batchSize: 8 });
    const shortSession = await model.createSession({ contextSize: 64 });
    const promptTokens = (await model.tokenize(LONG_PROMPT)).length;
    expect(promptTokens).toBeGreaterThan(300); // > 37 chunks
    // Both runs reuse the same prefix (BOS), so their chunks are the same.
    await longSession.generate('x', { maxTokens: 0 });
    const alone = await longSession.generate(LONG_PROMPT, { temperature: 0, maxTokens: 1 });
    await longSession.generate('x', { maxTokens: 0 });
    let longResult: unknown;
    const done = await order(
      async () => (longResult = await longSession.generate(LONG_PROMPT, { temperature: 0, maxTokens: 1 })),
      () => shortSession.generate('Once', { temperature: 0, maxTokens: 1 }),
    );
    expect(done).toEqual(['short', 'long']);
    // Interleaving does not change what the long prompt gives.
    expect((longResult as { tokens: number[] }).tokens).toEqual(alone.tokens);
    await Promise.all([longSession.dispose(), shortSession.dispose()]);
  });

  test('a short generate completes while another session classifies a long prompt', async () => {
    const longSession = await model.createSession({ contextSize: 1024, batchSize: 8 });
    const shortSession = await model.createSession({ contextSize: 64 });
    await longSession.generate('x', { maxTokens: 0 });
    const alone = await longSession.classify(LONG_PROMPT + ' Tom had', [' red', ' blue']);
    await longSession.generate('x', { maxTokens: 0 });
    let longResult: unknown;
    const done = await order(
      async () => (longResult = await longSession.classify(LONG_PROMPT + ' Tom had', [' red', ' blue'])),
      () => shortSession.generate('Once', { temperature: 0, maxTokens: 1 }),
    );
    expect(done).toEqual(['short', 'long']);
    expect(longResult).toEqual(alone);
    await Promise.all([longSession.dispose(), shortSession.dispose()]);
  });
});

describe('Session.classify label tokens', () => {
  const direct = TransformerModel.load(BUNDLED_MODEL);
  const t = direct.tokenizer;
  /** The id of a vocabulary piece, looked up in the vocabulary itself (independent of the label code). */
  const pieceId = (piece: string) => {
    for (let id = 0; id < direct.config.nVocab; id++) if (t.tokenText(id) === piece) return id;
    throw new Error(`no piece ${piece}`);
  };
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(undefined, { threads: 1 });
  });
  afterAll(async () => {
    await model?.dispose();
    direct.dispose();
  });

  test('the prompt ends with a space the tokenizer would merge into the label: scored by the label without it', async () => {
    const prompt = 'Once upon a time there was a ';
    // The prompt's own tokens end with a bare space piece; "a girl" would tokenize as …|▁a|▁girl.
    expect(t.tokenText(t.encode(prompt).at(-1)!)).toBe('▁');
    expect(t.encode(prompt + 'girl').slice(-2).map((id) => t.tokenText(id))).toEqual(['▁a', '▁girl']);
    const s = await model.createSession();
    const r = await s.classify(prompt, ['girl', 'boy']);
    // After "…▁a|▁" the model sees the label's own first piece: 'g' and 'b' (not '▁girl', nor 'y' of '▁bo|y').
    expect(r.labelTokens).toEqual([pieceId('g'), pieceId('b')]);
    await s.dispose();
  });

  test('a boundary that does not merge: the label token after the prompt, as before', async () => {
    const s = await model.createSession();
    const r = await s.classify('Once upon a time there was a', [' girl', ' boy']);
    expect(r.labelTokens).toEqual([pieceId('▁girl'), pieceId('▁bo')]);
    await s.dispose();
  });
});
