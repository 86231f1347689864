/**
 * Repetition penalties (llama.cpp's penalties sampler: repeat / presence / frequency over the last repeatLastN
 * tokens of prompt and output) and stop strings (matched on the decoded text across token boundaries, not emitted,
 * held back while they may be starting): the logit adjustment against a float64 computation written here, the
 * matcher on random splits, and the API — generate, stream and generateBatch agreeing — on the bundled model.
 */
import fc from 'fast-check';
import { loadModel, Model, OptionError, Session } from '../../lib';
import { Penalties, resolveSampling, Rng, Sampler } from '../../lib/engine/sampling';
import { StopMatcher } from '../../lib/engine/stop';

/** llama.cpp's adjustment, in float64: counts over the last n of history, then repeat, then frequency + presence. */
function referencePenalized(logits: Float32Array, history: number[], n: number, repeat: number, presence: number, frequency: number): Float64Array {
  const window = n < 0 ? history : history.slice(Math.max(0, history.length - n));
  const counts = new Map<number, number>();
  for (const t of window) counts.set(t, (counts.get(t) ?? 0) + 1);
  const out = Float64Array.from(logits);
  for (const [t, c] of counts) {
    const l = out[t];
    out[t] = (l <= 0 ? l * repeat : l / repeat) - (c * frequency + presence);
  }
  return out;
}

describe('penalties: the logit adjustment', () => {
  test('equals the float64 computation (to float32 rounding) over random logits and histories', () => {
    const rng = new Rng(7);
    for (const [lastN, repeat, presence, frequency] of [
      [64, 1.3, 0, 0],
      [8, 1.1, 0.5, 0.25],
      [-1, 0.8, -0.4, 1.5],
      [3, 2, 0, 0.7],
    ]) {
      const vocab = 300;
      const logits = new Float32Array(vocab);
      for (let i = 0; i < vocab; i++) logits[i] = (rng.next() - 0.5) * 20;
      const copy = Float32Array.from(logits);
      const history = Array.from({ length: 150 }, () => Math.floor(rng.next() * 40)); // many repeats
      const p = new Penalties({ repeatPenalty: repeat, lastN: lastN < 0 ? Infinity : lastN, presencePenalty: presence, frequencyPenalty: frequency });
      for (const t of history) p.accept(t);
      const got = p.apply(logits);
      const want = referencePenalized(logits, history, lastN, repeat, presence, frequency);
      let changed = 0;
      for (let i = 0; i < vocab; i++) {
        expect(Math.abs(got[i] - want[i])).toBeLessThanOrEqual(2e-6 * Math.max(1, Math.abs(want[i])));
        if (got[i] !== logits[i]) changed++;
      }
      expect(changed).toBeGreaterThan(0);
      expect(logits).toEqual(copy); // the input is left as it is
    }
  });

  test('the window: the oldest token leaves it, counts follow', () => {
    const p = new Penalties({ repeatPenalty: 2, lastN: 3, presencePenalty: 0, frequencyPenalty: 0 });
    for (const t of [5, 5, 7, 9]) p.accept(t);
    expect([p.count(5), p.count(7), p.count(9)]).toEqual([1, 1, 1]);
    p.accept(9);
    expect([p.count(5), p.count(7), p.count(9)]).toEqual([0, 1, 2]);
    const logits = Float32Array.from([1, 1, 1, 1, 1, 4, 1, -3, 1, 6]);
    const out = p.apply(logits);
    expect(Array.from(out)).toEqual([1, 1, 1, 1, 1, 4, 1, -6, 1, 3]);
  });

  test('a greedy Sampler takes the argmax of the penalized logits; sampling draws from them', () => {
    const logits = Float32Array.from([3, 2.9, 0, -1]);
    const s = new Sampler(resolveSampling({ temperature: 0, repeatPenalty: 1.5, seed: 1 }));
    expect(s.sample(logits)).toBe(0);
    s.accept(0);
    expect(s.sample(logits)).toBe(1); // 3 / 1.5 = 2 < 2.9
    // presence: once a token is in the window it is out of reach of a temperature-1 draw of 50 below the rest
    const t = new Sampler(resolveSampling({ temperature: 1, topK: 0, topP: 1, presencePenalty: 50, seed: 3 }));
    t.accept(1);
    for (let i = 0; i < 50; i++) expect(t.sample(Float32Array.from([0, 5, 0, 0]))).not.toBe(1);
  });

  test('defaults are off (no window kept); bad values are OptionErrors', () => {
    expect(resolveSampling({ seed: 1 }).penalties).toBeUndefined();
    expect(resolveSampling({ seed: 1, repeatPenalty: 1.2, repeatLastN: 0 }).penalties).toBeUndefined();
    expect(resolveSampling({ seed: 1, frequencyPenalty: 0.1 }).penalties).toEqual({ repeatPenalty: 1, lastN: 64, presencePenalty: 0, frequencyPenalty: 0.1 });
    for (const bad of [{ repeatPenalty: 0 }, { repeatPenalty: -1 }, { repeatPenalty: NaN }, { repeatLastN: -2 }, { repeatLastN: 1.5 }, { presencePenalty: Infinity }, { frequencyPenalty: '1' }])
      expect(() => resolveSampling(bad as never)).toThrow(OptionError);
  });
});

describe('stop strings: the matcher', () => {
  test('random texts cut at random places: the output is the text before the first stop string, never a stop string, and held back only while it could start one', () => {
    const alphabet = fc.constantFrom('a', 'b', 'c', ' ', 'é', '\n');
    const str = (min: number, max: number) => fc.array(alphabet, { minLength: min, maxLength: max }).map((a) => a.join(''));
    fc.assert(
      fc.property(str(0, 60), fc.array(str(1, 4), { minLength: 1, maxLength: 3 }), fc.array(fc.nat(60), { maxLength: 20 }), (text, stops, cuts) => {
        const points = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b);
        const pieces: string[] = [];
        let last = 0;
        for (const p of points) {
          pieces.push(text.slice(last, p));
          last = p;
        }
        pieces.push(text.slice(last));
        const m = new StopMatcher(stops);
        let out = '';
        let found: string | undefined;
        let received = '';
        for (const piece of pieces) {
          received += piece;
          const r = m.push(piece);
          out += r.text;
          if (r.stop !== undefined) {
            found = r.stop;
            break;
          }
          // Everything received is released or held; what is held could still start a stop string.
          const held = received.slice(out.length);
          expect(out + held).toBe(received);
          if (held.length > 0) expect(stops.some((s) => s.startsWith(held) && s.length > held.length)).toBe(true);
        }
        if (found === undefined) out += m.flush();
        const first = Math.min(...stops.map((s) => (text.indexOf(s) < 0 ? Infinity : text.indexOf(s))));
        expect(out).toBe(first === Infinity ? text : text.slice(0, first));
        if (first !== Infinity) expect(text.slice(first).startsWith(found!)).toBe(true);
        for (const s of stops) expect(out.includes(s)).toBe(false);
      }),
      { numRuns: 500, seed: 11 },
    );
  });
});

describe('penalties and stop strings through the API (bundled model)', () => {
  let model: Model;
  let session: Session;
  const prompt = 'Once upon a time';
  beforeAll(async () => {
    model = await loadModel(undefined, { threads: 1 });
    session = await model.createSession({ contextSize: 128 });
  });
  afterAll(async () => {
    await session?.dispose();
    await model?.dispose();
  });

  test('a large presence penalty over the whole window makes greedy output avoid every token already seen', async () => {
    const plain = await session.generate(prompt, { temperature: 0, maxTokens: 40, stopAtEos: false });
    expect(new Set(plain.tokens).size).toBeLessThan(plain.tokens.length); // greedy TinyStories text repeats itself
    const promptIds = await model.tokenize(prompt);
    const r = await session.generate(prompt, { temperature: 0, maxTokens: 40, stopAtEos: false, presencePenalty: 100, repeatLastN: -1 });
    expect(new Set(r.tokens).size).toBe(r.tokens.length);
    for (const t of r.tokens) expect(promptIds).not.toContain(t);
    // repeatLastN 0 turns them off: the plain output again.
    const off = await session.generate(prompt, { temperature: 0, maxTokens: 40, stopAtEos: false, presencePenalty: 100, repeatLastN: 0 });
    expect(off.tokens).toEqual(plain.tokens);
    // generateBatch applies them the same way.
    const batch = await model.generateBatch([prompt], { temperature: 0, maxTokens: 40, stopAtEos: false, presencePenalty: 100, repeatLastN: -1 });
    expect(batch.results[0].tokens).toEqual(r.tokens);
  });

  test('a stop string spanning a token boundary: text cut before it, stream and generate agree, batch too', async () => {
    const pieces: { token: number; text: string }[] = [];
    for await (const e of session.stream(prompt, { temperature: 0, maxTokens: 40, stopAtEos: false })) pieces.push(e);
    const full = pieces.map((p) => p.text).join('');
    // A stop string made of the end of one token's text and the start of the next one's.
    const k = pieces.findIndex((p, i) => i > 3 && p.text.length >= 2 && pieces[i + 1]?.text.length >= 2);
    expect(k).toBeGreaterThan(0);
    const stop = pieces[k].text.slice(-2) + pieces[k + 1].text.slice(0, 2);
    const at = full.indexOf(stop);
    // The token that completes the first occurrence.
    let completes = 0;
    for (let len = 0; completes < pieces.length; completes++) if ((len += pieces[completes].text.length) >= at + stop.length) break;

    const opts = { temperature: 0, maxTokens: 40, stopAtEos: false, stop: ['never-in-this-story', stop] };
    const r = await session.generate(prompt, opts);
    expect(r.text).toBe(full.slice(0, at));
    expect(r).toMatchObject({ stopReason: 'stop', stopString: stop });
    expect(r.tokens).toEqual(pieces.slice(0, completes + 1).map((p) => p.token));

    const events: { token: number; text: string }[] = [];
    for await (const e of session.stream(prompt, opts)) events.push(e);
    expect(events.map((e) => e.text).join('')).toBe(r.text);
    expect(events.map((e) => e.token)).toEqual(r.tokens);
    for (const e of events) expect(e.text.includes(stop)).toBe(false);

    const batch = await model.generateBatch([prompt, prompt], opts);
    for (const b of batch.results) expect(b).toMatchObject({ text: r.text, tokens: r.tokens, stopReason: 'stop', stopString: stop });
  });

  test('text held back at the end (a possible start of a stop string) is released when the generation ends', async () => {
    const plain = await session.generate(prompt, { temperature: 0, maxTokens: 20, stopAtEos: false });
    const stop = plain.text.slice(-3) + '\u0007';
    const r = await session.generate(prompt, { temperature: 0, maxTokens: 20, stopAtEos: false, stop: [stop] });
    expect(r).toMatchObject({ text: plain.text, tokens: plain.tokens, stopReason: 'maxTokens' });
    expect(r.stopString).toBeUndefined();
    let streamed = '';
    for await (const e of session.stream(prompt, { temperature: 0, maxTokens: 20, stopAtEos: false, stop: [stop] })) streamed += e.text;
    expect(streamed).toBe(plain.text);
    const batch = await model.generateBatch([prompt], { temperature: 0, maxTokens: 20, stopAtEos: false, stop: [stop] });
    expect(batch.results[0]).toMatchObject({ text: plain.text, stopReason: 'maxTokens' });
  });

  test('bad stop and penalty options are OptionErrors before anything runs', async () => {
    const bad: [object, string][] = [
      [{ stop: 'x' }, 'stop'],
      [{ stop: [''] }, 'stop'],
      [{ stop: [3] }, 'stop'],
      [{ repeatPenalty: 0 }, 'repeatPenalty'],
      [{ repeatLastN: -2 }, 'repeatLastN'],
      [{ presencePenalty: NaN }, 'presencePenalty'],
      [{ temperature: 0, repeatPenalty: 1.2, speculative: { draft: { layer: 2 } } }, 'speculative'],
    ];
    for (const [o, option] of bad) {
      await expect(session.generate(prompt, { maxTokens: 2, ...o } as never)).rejects.toMatchObject({ code: 'INVALID_OPTION', option });
      if (option !== 'speculative') await expect(model.generateBatch([prompt], { maxTokens: 2, ...o } as never)).rejects.toMatchObject({ code: 'INVALID_OPTION', option });
    }
  });
});
