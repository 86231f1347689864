/**
 * Unknown options are refused in plain JavaScript (issue 17, defect 6): a misspelt key in any options object of
 * the public API is an OptionError naming it (with the option it is closest to), before anything runs.
 */
import { loadModel, Model, OptionError, Session } from '../../lib';
import { BUNDLED_MODEL } from '../helpers';

describe('unknown options', () => {
  let model: Model;
  let session: Session;
  beforeAll(async () => {
    model = await loadModel(undefined, { threads: 1 });
    session = await model.createSession({ contextSize: 64 });
  });
  afterAll(async () => {
    await session?.dispose();
    await model?.dispose();
  });

  // Every options object of the public API, each with a key it does not have.
  test.each<[string, () => Promise<unknown>, string]>([
    ['loadModel', () => loadModel(BUNDLED_MODEL, { thread: 1 } as never), 'thread'],
    ['createSession', () => model.createSession({ contextsize: 64 } as never), 'contextsize'],
    ['generate', () => session.generate('Once', { maxTokenz: 5 } as never), 'maxTokenz'],
    ['stream', () => session.stream('Once', { temprature: 0 } as never).next(), 'temprature'],
    ['classify', () => session.classify('Once', [' upon', ' there'], { addBOS: false } as never), 'addBOS'],
    ['generateBatch', () => model.generateBatch(['Once'], { batchsize: 2 } as never), 'batchsize'],
    ['classifyBatch', () => model.classifyBatch(['Once'], [' upon', ' there'], { kvFill: 'none' } as never), 'kvFill'],
    ['a generateBatch prompt', () => model.generateBatch([{ prompt: 'Once', maxToken: 3 } as never]), 'maxToken'],
    ['tokenize', () => model.tokenize('Once', { addBos: true } as never), 'addBos'],
    ['a threshold exit spec', () => session.generate('Once', { exit: { kind: 'threshold', feature: 'gap', value: 0.3, minlayer: 2 } as never }), 'minlayer'],
    ['a batch threshold exit spec', () => model.classifyBatch(['Once'], [' a', ' b'], { exit: { kind: 'threshold', feature: 'gap', value: 0.3, every: 2 } as never }), 'every'],
    ['speculative', () => session.generate('Once', { temperature: 0, speculative: { draft: { layer: 2 }, maxDrafts: 3 } as never }), 'maxDrafts'],
    ['createChatSession', () => model.createChatSession({ template: 'chatml', systemPromt: 'x' } as never), 'systemPromt'],
    ['ChatSession.send', async () => (await model.createChatSession({ template: 'chatml', contextSize: 64 })).send('Hi', { stops: ['x'] } as never), 'stops'],
  ])('%s', async (_, call, key) => {
    const err = await call().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(OptionError);
    expect(err).toMatchObject({ code: 'INVALID_OPTION', option: key });
    expect((err as Error).message).toMatch(new RegExp(`invalid option ${key}: is not an option of`));
  });

  test('the message suggests the option a typo is closest to', async () => {
    const err = (await session.generate('Once', { maxTokenz: 5 } as never).catch((e: unknown) => e)) as Error;
    expect(err.message).toContain('did you mean maxTokens?');
  });

  test('every documented option is still accepted, and the session works after the refusals', async () => {
    const r = await session.generate('Once', {
      temperature: 0,
      topK: 0,
      topP: 1,
      seed: 1,
      maxTokens: 2,
      stopAtEos: false,
      addBos: true,
      signal: new AbortController().signal,
      exit: { kind: 'threshold', feature: 'gap', value: 0.3, minLayer: 2, checkEvery: 1, mode: 'faithful' },
    });
    expect(r.tokens).toHaveLength(2);
    const c = await session.classify('Once upon a', [' time', ' day'], { addBos: true, exit: 'never', signal: new AbortController().signal });
    expect(c.probs).toHaveLength(2);
  });
});
