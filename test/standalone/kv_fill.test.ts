/**
 * K/V of skipped layers during generation with early exit (kvFill), and abort between two layers.
 */
import { Sequence, KvFill } from '../../lib/engine/sequence';
import { argmax } from '../../lib/engine/sampling';
import { ExitDecider } from '../../lib/exit/decider';
import { ExitPolicy, neverPolicy, thresholdPolicy } from '../../lib/exit/policy';
import { TransformerModel } from '../../lib/model/transformer';
import { BUNDLED_MODEL } from '../helpers';
import { argmaxOf, headLogits, softmaxAt, weightReader } from '../reference';

const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };

describe('kvFill', () => {
  const model = TransformerModel.load(BUNDLED_MODEL);
  const nLayer = model.config.nLayer;
  const prompt = model.tokenizer.encode('Once upon a time, there was a little girl');
  const contexts = new Map<KvFill, ReturnType<TransformerModel['createContext']>>();
  const ctxFor = (kvFill: KvFill) => {
    if (!contexts.has(kvFill)) contexts.set(kvFill, model.createContext({ contextSize: 128, batchSize: 128, threads: 1 }));
    return contexts.get(kvFill)!;
  };
  afterAll(() => {
    for (const c of contexts.values()) c.dispose();
    model.dispose();
  });

  function generate(kvFill: KvFill, policy: ExitPolicy | undefined, n: number) {
    const ctx = ctxFor(kvFill);
    const run = new Sequence(ctx, kvFill).generate(prompt, {
      maxTokens: n,
      stopAtEos: false,
      sampling: GREEDY,
      exit: policy && new ExitDecider(ctx, policy),
    });
    let r = run.next();
    while (!r.done) r = run.next();
    return r.value;
  }

  const full = generate('none', undefined, 40);
  // exits often on this early-exit model, after a few layers
  const exiting = () => thresholdPolicy('gap', 0.3, { minLayer: 2, checkEvery: 1 });

  test.each<KvFill>(['none', 'propagate', 'recompute'])('%s with a policy that never stops equals full depth', (kvFill) => {
    expect(generate(kvFill, neverPolicy(), 40).tokens).toEqual(full.tokens);
    expect(generate(kvFill, thresholdPolicy('p1', Infinity), 40).tokens).toEqual(full.tokens);
  });

  test('the threshold policy used below really exits early', () => {
    const r = generate('propagate', exiting(), 40);
    expect(r.exitLayers.filter((l) => l < nLayer).length).toBeGreaterThan(10);
  });

  test('recompute is exact: every step decides as a full-depth run of the same prefix would', () => {
    const r = generate('recompute', exiting(), 32);
    // Replay: the prompt plus the tokens generated so far, all at full depth, then the policy at the last
    // position. With exact K/V for every earlier position, exit layer and token must be the same.
    const ctx = model.createContext({ contextSize: 128, batchSize: 128, threads: 1 });
    const runner = new ExitDecider(ctx, exiting());
    const mismatches: string[] = [];
    for (let s = 0; s < r.tokens.length; s++) {
      const prefix = [...prompt, ...r.tokens.slice(0, s)];
      prefix.slice(0, -1).forEach((t, i) => (ctx.native.tokens[i] = t));
      if (prefix.length > 1) ctx.forward(prefix.length - 1, 0);
      ctx.native.tokens[0] = prefix[prefix.length - 1];
      const out = runner.forward(1, prefix.length - 1);
      const token = out.token >= 0 ? out.token : argmax(ctx.logits(0));
      if (out.layers !== r.exitLayers[s] || token !== r.tokens[s]) mismatches.push(`step ${s}: ${out.layers}/${token} vs ${r.exitLayers[s]}/${r.tokens[s]}`);
    }
    ctx.dispose();
    expect(mismatches).toEqual([]);
  });

  test('the first token and its exit come from the prompt alone (float64 reference); the K/V fill then matters', () => {
    // Each mode in a fresh context, so no earlier run's K/V sit in the cache.
    const fresh = (kvFill: KvFill) => {
      const ctx = model.createContext({ contextSize: 128, batchSize: 128, threads: 1 });
      const run = new Sequence(ctx, kvFill).generate(prompt, { maxTokens: 40, stopAtEos: false, sampling: GREEDY, exit: new ExitDecider(ctx, exiting()) });
      let r = run.next();
      while (!r.done) r = run.next();
      ctx.dispose();
      return r.value;
    };
    const runs = { none: fresh('none'), propagate: fresh('propagate'), recompute: fresh('recompute') };

    // Reference: the hidden state of the prompt's last row after each layer, the final norm and head in
    // float64 from the file's weights, and the policy's rule (gap >= 0.3 from layer 2 on) applied to that.
    const { nEmbd, nVocab } = model.config;
    const rmsEps = model.config.rmsEps as number;
    const weight = weightReader(BUNDLED_MODEL);
    const ctx = model.createContext({ contextSize: 128, batchSize: 128, threads: 1 });
    prompt.forEach((t, i) => (ctx.native.tokens[i] = t));
    let exitLayer = nLayer;
    let token = -1;
    const headAt = () => {
      const h = new Float32Array(nEmbd);
      ctx.native.readHidden(prompt.length - 1, 1, h);
      return headLogits(weight, h, nEmbd, nVocab, rmsEps, true);
    };
    ctx.forward(prompt.length, 0, (layer) => {
      if (layer + 1 < 2) return false;
      const z = headAt();
      const p = softmaxAt(z, Array.from({ length: nVocab }, (_, i) => i)).sort((a, b) => b - a);
      if (p[0] - p[1] < 0.3) return false;
      exitLayer = layer + 1;
      token = argmaxOf(z);
      return true;
    });
    if (token < 0) token = argmaxOf(headAt());
    ctx.dispose();
    expect(exitLayer).toBeLessThan(nLayer); // the prompt itself exits early
    for (const [mode, r] of Object.entries(runs)) {
      expect([mode, r.exitLayers[0], r.tokens[0]]).toEqual([mode, exitLayer, token]);
      expect(r.tokens).toHaveLength(40);
    }
    // Past the first token the modes see different K/V at the skipped layers: zeros (none, fresh cache), the
    // exit state's projection (propagate), exact values (recompute). If a fill did nothing, two would agree.
    expect(runs.none.tokens).not.toEqual(runs.propagate.tokens);
    expect(runs.none.tokens).not.toEqual(runs.recompute.tokens);
  });

  test("'none' in a session: positions from the first exit on are never reused as a prefix (their K/V are stale)", () => {
    // Chunks of 8: the prompt's first chunk runs at full depth, its last chunk decides (and exits).
    const ctx = model.createContext({ contextSize: 128, batchSize: 8, threads: 1 });
    const seq = new Sequence(ctx, 'none');
    const drain = <R>(run: Generator<unknown, R>): R => {
      let r = run.next();
      while (!r.done) r = run.next();
      return r.value;
    };
    const first = drain(seq.generate(prompt, { maxTokens: 12, stopAtEos: false, sampling: GREEDY, exit: new ExitDecider(ctx, exiting()) }));
    // The cache holds the prompt and every generated token but the last (it was never run). Where the first
    // inexact position is: the start of the prompt's last chunk when the prompt exited, else the position of the
    // first generated token whose step exited (token j >= 1 was produced by the step at position |prompt| + j - 1).
    const lastChunkStart = Math.floor((prompt.length - 1) / 8) * 8;
    const j = first.exitLayers.findIndex((l, i) => i >= 1 && l < nLayer);
    const firstInexact = first.exitLayers[0] < nLayer ? lastChunkStart : j >= 1 ? prompt.length + j - 1 : Infinity;
    expect(firstInexact).toBeLessThan(prompt.length + first.tokens.length - 1); // something did exit
    const replay = [...prompt, ...first.tokens];
    const second = drain(seq.generate(replay, { maxTokens: 1, sampling: GREEDY }));
    expect(second.reusedPromptTokens).toBe(firstInexact);
    // A full-depth run leaves exact K/V: everything is reused next time but the 8-row step that held the last
    // prompt token (run again with the same rows).
    const third = drain(seq.generate(replay, { maxTokens: 1, sampling: GREEDY }));
    expect(third.reusedPromptTokens).toBe(firstInexact + Math.floor((replay.length - 1 - firstInexact) / 8) * 8);
    ctx.dispose();
  });

  test('recompute needs a batch as large as the context', () => {
    const ctx = model.createContext({ contextSize: 64, batchSize: 16, threads: 1 });
    expect(() => new Sequence(ctx, 'recompute')).toThrow(expect.objectContaining({ code: 'INVALID_OPTION', option: 'kvFill' }));
    expect(() => new Sequence(ctx, 'sometimes' as KvFill)).toThrow(expect.objectContaining({ option: 'kvFill' }));
    ctx.dispose();
  });
});

describe('abort between two layers', () => {
  test('a prompt being processed stops at the next layer boundary, and the sequence stays usable', () => {
    const model = TransformerModel.load(BUNDLED_MODEL);
    const ctx = model.createContext({ contextSize: 256, batchSize: 256, threads: 1 });
    const seq = new Sequence(ctx);
    const prompt = model.tokenizer.encode('Once upon a time, there was a little girl named Lily who loved to play.');
    let polls = 0;
    const run = seq.generate(prompt, { maxTokens: 8, sampling: GREEDY, aborted: () => ++polls > 3 });
    let r = run.next();
    while (!r.done) r = run.next();
    expect(r.value.stopReason).toBe('aborted');
    expect(r.value.tokens).toEqual([]);
    expect(polls).toBe(4); // three layer boundaries passed, the fourth stopped it
    expect(seq.nPast).toBe(0); // the aborted batch is not part of the sequence
    // still usable, and equal to a fresh run
    const again = seq.generate(prompt, { maxTokens: 8, sampling: GREEDY });
    let a = again.next();
    while (!a.done) a = again.next();
    expect(a.value.tokens).toHaveLength(8);
    ctx.dispose();
    model.dispose();
  });
});
