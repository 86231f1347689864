/**
 * kvFill 'propagate' writes the right K/V (issue 20): after an exit at layer e, the K/V of every skipped layer
 * l >= e must be those of layer l's attention applied to the exit hidden state (CALM's state propagation):
 * K = RoPE(W_k · RMSNorm_l(h_exit)), V = W_v · RMSNorm_l(h_exit). Comparing batch with single-sequence runs
 * cannot show that (both use the same fill); this test holds the cache to K/V computed independently, in
 * float64 TypeScript, from the exit hidden states and the model file's weights (read with the project's GGUF
 * reader, F16 dequantized here).
 *
 * The cache is not readable from JS, so it is observed through attention: a probe row at the next position
 * runs attention_block(l), whose output depends on every cached K/V of the sequence at layer l; the same
 * attention computed in float64 from the expected K/V must match it. A control computed from K/V that are
 * wrong only at the skipped layers (what 'none' leaves: the K/V of an earlier prompt) must not match, so the
 * probe is proven sensitive enough to tell.
 */
import { Sequence } from '../../lib/engine/sequence';
import { ExitDecider } from '../../lib/exit/decider';
import { ExitPolicy } from '../../lib/exit/policy';
import { TransformerModel } from '../../lib/model/transformer';
import { BUNDLED_MODEL } from '../helpers';
import { matvec, rmsNorm, weightReader } from '../reference';

/** ggml "normal" RoPE: adjacent pairs (2i, 2i + 1) of each head rotated by pos · base^(−2i/nRot). */
function rope(x: Float64Array, nHeads: number, headDim: number, nRot: number, pos: number, base: number): Float64Array {
  const y = Float64Array.from(x);
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < nRot / 2; i++) {
      const angle = pos * base ** ((-2 * i) / nRot);
      const a = h * headDim + 2 * i;
      y[a] = x[a] * Math.cos(angle) - x[a + 1] * Math.sin(angle);
      y[a + 1] = x[a] * Math.sin(angle) + x[a + 1] * Math.cos(angle);
    }
  }
  return y;
}

describe("kvFill 'propagate' against K/V computed independently", () => {
  const model = TransformerModel.load(BUNDLED_MODEL);
  const cfg = model.config;
  const { nEmbd: d, nHead, nKvHead, headDim, nLayer } = cfg;
  const kvDim = nKvHead * headDim;
  // The Llama block's keys (lib/model/architectures/llama.ts): the config is a flat record of what the native half reads.
  const rmsEps = cfg.rmsEps as number;
  const nRot = cfg.nRot as number;
  const ropeBase = cfg.ropeBase as number;
  const weight = weightReader(BUNDLED_MODEL);
  afterAll(() => model.dispose());

  /** K and V of layer l for hidden state h at position pos. */
  function kv(l: number, h: ArrayLike<number>, pos: number): { k: Float64Array; v: Float64Array } {
    const x = rmsNorm(h, weight(`blk.${l}.attn_norm.weight`), rmsEps);
    const k = rope(matvec(weight(`blk.${l}.attn_k.weight`), x, d, kvDim), nKvHead, headDim, nRot, pos, ropeBase);
    return { k, v: matvec(weight(`blk.${l}.attn_v.weight`), x, d, kvDim) };
  }

  /** hidden + attention block of layer l for a row at position `pos` over cached K/V of positions 0..pos−1. */
  function attentionRow(l: number, hidden: Float32Array, pos: number, cache: { k: Float64Array; v: Float64Array }[]): Float64Array {
    const x = rmsNorm(hidden, weight(`blk.${l}.attn_norm.weight`), rmsEps);
    const q = rope(matvec(weight(`blk.${l}.attn_q.weight`), x, d, nHead * headDim), nHead, headDim, nRot, pos, ropeBase);
    const all = [...cache, kv(l, hidden, pos)];
    const heads = new Float64Array(nHead * headDim);
    for (let h = 0; h < nHead; h++) {
      const g = Math.floor(h / (nHead / nKvHead));
      const scores = all.map(({ k }) => {
        let s = 0;
        for (let i = 0; i < headDim; i++) s += q[h * headDim + i] * k[g * headDim + i];
        return s / Math.sqrt(headDim);
      });
      const max = Math.max(...scores);
      const p = scores.map((s) => Math.exp(s - max));
      const sum = p.reduce((a, b) => a + b, 0);
      all.forEach(({ v }, t) => {
        for (let i = 0; i < headDim; i++) heads[h * headDim + i] += (p[t] / sum) * v[g * headDim + i];
      });
    }
    const o = matvec(weight(`blk.${l}.attn_output.weight`), heads, nHead * headDim, d);
    return Float64Array.from(o, (v, i) => hidden[i] + v);
  }

  function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
    let m = 0;
    for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
    return m;
  }

  /** Relative to the largest change the attention makes to the probe row. */
  const TOLERANCE = 1e-4;

  test('the K/V of every skipped layer are those of the exit hidden state', () => {
    const exitAfter = 4; // layers run before the exit
    const ctx = model.createContext({ contextSize: 32, batchSize: 32, threads: 1 });
    // Another prompt first, at full depth: without propagation, its K/V would remain at the skipped layers.
    const other = model.tokenizer.encode('The big red ball rolled down the hill and the dog ran');
    const prompt = model.tokenizer.encode('Once upon a time, there was a little girl');
    expect(other.length).toBeGreaterThanOrEqual(prompt.length);
    const otherHidden: Float32Array[] = [];
    {
      // the K/V 'none' would leave: the full-depth hidden states entering each layer, for the control
      const byLayer = new Map<number, Float32Array>();
      other.forEach((t, i) => (ctx.native.tokens[i] = t));
      ctx.forward(other.length, 0, (layer) => {
        const h = new Float32Array(other.length * d);
        ctx.native.readHidden(0, other.length, h);
        byLayer.set(layer + 1, h);
        return false;
      });
      for (let l = 0; l < nLayer; l++) otherHidden.push(byLayer.get(l) ?? new Float32Array(0));
    }

    // The prompt, in a fresh sequence, with a policy that exits after `exitAfter` layers and records the
    // hidden states of the prompt's rows at that moment (the exit hidden states).
    const n = prompt.length;
    const exitHidden = new Float32Array(n * d);
    let exits = 0;
    const policy: ExitPolicy = {
      kind: 'threshold',
      schedule: { minLayer: 1, checkEvery: 1 },
      lens: { mode: 'faithful' },
      begin: () => undefined,
      shouldExit: (layer) => {
        if (layer + 1 !== exitAfter) return false;
        ctx.native.readHidden(0, n, exitHidden);
        exits++;
        return true;
      },
    };
    const run = new Sequence(ctx, 'propagate').generate(prompt, {
      maxTokens: 1,
      stopAtEos: false,
      sampling: { temperature: 0, topK: 0, topP: 1, seed: 0 },
      exit: new ExitDecider(ctx, policy),
    });
    let r = run.next();
    while (!r.done) r = run.next();
    expect(r.value.exitLayers).toEqual([exitAfter]);
    expect(exits).toBe(1);

    // Probe every skipped layer with a row at position n.
    let x = 12345;
    const probe = Float32Array.from({ length: d }, () => {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      return ((x >>> 8) / 2 ** 24 - 0.5) * 2;
    });
    const row = (h: Float32Array, t: number) => h.subarray(t * d, (t + 1) * d);
    const report: string[] = [];
    for (let l = exitAfter; l < nLayer; l++) {
      ctx.native.writeHidden(0, 1, probe);
      ctx.native.rowSeq[0] = 0;
      ctx.native.rowPos[0] = n;
      ctx.native.attention(l, 1);
      const got = new Float32Array(d);
      ctx.native.readHidden(0, 1, got);

      const expected = attentionRow(l, probe, n, Array.from({ length: n }, (_, t) => kv(l, row(exitHidden, t), t)));
      const stale = attentionRow(l, probe, n, Array.from({ length: n }, (_, t) => kv(l, row(otherHidden[l], t), t)));
      const change = maxAbsDiff(expected, probe); // what the attention adds to the probe
      const error = maxAbsDiff(got, expected);
      const staleDistance = maxAbsDiff(stale, expected);
      // F16 weights times F32 activations, accumulated in F32: measured ~3e-7 of what the attention adds (AVX2)
      if (!(error <= TOLERANCE * change)) report.push(`layer ${l}: |native − float64| = ${error.toExponential(2)}, attention adds ${change.toExponential(2)}`);
      // the control: K/V of the wrong hidden states are far outside that tolerance (measured: ~1× the change)
      expect(staleDistance).toBeGreaterThan(100 * TOLERANCE * change);
    }
    expect(report).toEqual([]);
    ctx.dispose();
  });
});
