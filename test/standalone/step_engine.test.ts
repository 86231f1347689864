/**
 * The step engine's primitives beyond what Session and batches use today, on the bundled model: rows that stop
 * at a fixed depth and keep their exit hidden states, those rows rejoining a later step at that depth and
 * running the remaining layers (the verification step of self-speculative decoding), and a sequence cut back to
 * an accepted length.
 */
import { ExitDecider } from '../../lib/exit/decider';
import { fixedDepthPolicy, thresholdPolicy } from '../../lib/exit/policy';
import { argmax, Sampler } from '../../lib/engine/sampling';
import { Sequence } from '../../lib/engine/sequence';
import { newRowGroup, NextToken, StepEngine } from '../../lib/engine/step';
import { TransformerModel } from '../../lib/model/transformer';
import { BUNDLED_MODEL } from '../helpers';

const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };

describe('step engine', () => {
  const model = TransformerModel.load(BUNDLED_MODEL);
  const nLayer = model.config.nLayer;
  const prompt = model.tokenizer.encode('Once upon a time, there was a little girl');
  afterAll(() => model.dispose());

  test('drafted rows keep their exit states and rejoin a full-depth step at their depth: logits as a full-depth run', () => {
    const ctx = model.createContext({ contextSize: 64, batchSize: 64, threads: 1 });
    const engine = new StepEngine(ctx, { kvFill: 'recompute', compaction: true, scratchSlot: -1 });
    const g = newRowGroup(0);
    g.pending = [];
    const next = new NextToken(new Sampler(GREEDY));
    g.output = next;
    const P = prompt.length;
    g.tokens = prompt;
    g.count = P;
    engine.run([g]);
    expect(g.layers).toBe(nLayer);

    // Draft k tokens, each row stopping after `depth` layers (its token from the exit layer's lens).
    const depth = 3;
    const k = 4;
    const drafted = [next.token];
    g.decider = new ExitDecider(ctx, fixedDepthPolicy(depth));
    for (let i = 0; i < k; i++) {
      g.tokens = [drafted[i]];
      g.count = 1;
      g.pos = P + i;
      engine.run([g]);
      expect(g.layers).toBe(depth);
      drafted.push(next.token);
    }
    expect(g.pending.map((p) => [p.pos, p.depth])).toEqual(Array.from({ length: k }, (_, i) => [P + i, depth]));

    // Verify: the last draft runs at full depth; the drafted positions rejoin at `depth`, run the remaining
    // layers, and give the full model's logits at their positions.
    const verified = new Map<number, Float32Array>();
    g.decider = undefined;
    g.onRejoined = (pos, logits) => verified.set(pos, logits.slice());
    g.tokens = [drafted[k]];
    g.pos = P + k;
    engine.run([g]);
    expect(g.layers).toBe(nLayer);
    expect(g.pending).toEqual([]);
    expect([...verified.keys()]).toEqual(Array.from({ length: k }, (_, i) => P + i));
    const last = next.token;
    ctx.dispose();

    // The same tokens at full depth in one batch on a fresh context.
    const ref = model.createContext({ contextSize: 64, batchSize: 64, threads: 1 });
    const all = [...prompt, ...drafted];
    all.forEach((t, i) => (ref.native.tokens[i] = t));
    ref.forward(all.length, 0);
    for (let i = 0; i < k; i++) {
      const want = ref.logits(P + i).slice();
      const got = verified.get(P + i)!;
      let maxDiff = 0;
      let scale = 0;
      for (let v = 0; v < want.length; v++) {
        maxDiff = Math.max(maxDiff, Math.abs(got[v] - want[v]));
        scale = Math.max(scale, Math.abs(want[v]));
      }
      // Rows grouped into other steps round differently in attention (last bits only).
      expect(maxDiff).toBeLessThan(1e-4 * scale);
      expect(argmax(got)).toBe(argmax(want));
    }
    expect(last).toBe(argmax(ref.logits(P + k)));
    ref.dispose();
  });

  test('a prompt found whole in the cache runs its last step again with the same rows: the same figures bit for bit', () => {
    // 27 tokens in 8-row steps: [0, 8), [8, 16), [16, 24), [24, 27). A repeat that ran only the last token as a
    // 1-row step would sum in another order (301 of 512 logits differ by up to 2e-6 on this model).
    const long = model.tokenizer.encode('Once upon a time, there was a little girl named Lily who loved to play in the park with her dog', { addSpecial: true });
    expect(long.length % 8).not.toBe(1); // the last step holds more than the last token
    const labels = Array.from({ length: 64 }, (_, i) => 10 + 7 * i);
    for (const batchSize of [8, 64]) {
      const ctx = model.createContext({ contextSize: 128, batchSize, threads: 1 });
      const seq = new Sequence(ctx);
      expect(() => seq.classify(long, [...labels, model.config.nVocab])).toThrow(expect.objectContaining({ code: 'INVALID_OPTION', option: 'labels' }));
      const first = seq.classify(long, labels);
      const sampled = { temperature: 1, topK: 0, topP: 1, seed: 5 };
      const run = () => {
        const gen = seq.generate(long, { maxTokens: 12, stopAtEos: false, sampling: sampled });
        let r = gen.next();
        while (!r.done) r = gen.next();
        return r.value;
      };
      const generated = run();
      // The cache now holds the prompt and 11 generated tokens (1-row steps); the prompt's last step starts at
      // the last multiple of the batch size.
      const lastStep = Math.floor((long.length - 1) / batchSize) * batchSize;
      const again = run();
      expect(again.reusedPromptTokens).toBe(lastStep);
      expect(again.tokens).toEqual(generated.tokens);
      expect(seq.classify(long, labels).probs).toEqual(first.probs);
      // A prompt that extends the cache runs its new tokens as one step, which its repeat runs again whole.
      const extended = [...long, ...generated.tokens.slice(0, 5)];
      const viaCache = seq.classify(extended, labels);
      expect(seq.classify(extended, labels)).toEqual(viaCache);
      ctx.dispose();
    }
  });

  test('a sequence cut back to an accepted length goes on as if the rest never ran', () => {
    const ctx = model.createContext({ contextSize: 64, batchSize: 64, threads: 1 });
    const run = (seq: Sequence, tokens: number[], exit?: ExitDecider) => {
      const gen = seq.generate(tokens, { maxTokens: 8, stopAtEos: false, sampling: GREEDY, exit });
      let r = gen.next();
      while (!r.done) r = gen.next();
      return r.value;
    };
    const seq = new Sequence(ctx);
    const first = run(seq, prompt);
    expect(seq.nPast).toBe(prompt.length + 7);
    seq.truncate(prompt.length + 3);
    expect(seq.nPast).toBe(prompt.length + 3);
    const again = run(seq, [...prompt, ...first.tokens.slice(0, 5)]);
    expect(again.reusedPromptTokens).toBe(prompt.length + 3);
    const fresh = model.createContext({ contextSize: 64, batchSize: 64, threads: 1 });
    expect(again.tokens).toEqual(run(new Sequence(fresh), [...prompt, ...first.tokens.slice(0, 5)]).tokens);
    fresh.dispose();
    expect(() => seq.truncate(seq.nPast + 1)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION', option: 'length' }));

    // With 4-row steps the prompt's last step (positions 8..) decides and is left inexact; the steps before it
    // ran at full depth and stay reusable, up to where the cut leaves the sequence.
    const narrow = model.createContext({ contextSize: 64, batchSize: 4, threads: 1 });
    const propagate = new Sequence(narrow, 'propagate');
    const exiting = () => new ExitDecider(narrow, thresholdPolicy('gap', 0.3, { minLayer: 2, checkEvery: 1 }));
    const r = run(propagate, prompt, exiting());
    expect(r.exitLayers[0]).toBeLessThan(nLayer);
    expect(run(propagate, prompt, exiting()).reusedPromptTokens).toBe(8);
    propagate.truncate(6);
    expect(propagate.nPast).toBe(6);
    expect(run(propagate, prompt, exiting()).reusedPromptTokens).toBe(6);
    narrow.dispose();
    ctx.dispose();
  });
});
