/**
 * The measurement under `adainfer bench --exit` / `--speculative` and bench/latency.ts: the same greedy requests
 * (every prompt, `reps` times) at full depth and under each other arm — an exit policy, self-speculative decoding —
 * interleaved in one run: request i runs the arms in an order rotated by i, so machine noise and cache warmth fall
 * on every arm alike. Each request runs in a fresh session (no cached prompt prefix: the time to first token is
 * always a whole prefill) and generates exactly `maxTokens` tokens (no stop at EOS, so every arm does the same
 * number of steps). Token events are timed on the caller's thread as they arrive: what a user of the API sees.
 */
import { AdaInferError, OptionError } from '../errors';
import type { Model, SpeculativeSpec, SpeculativeStats } from '../api';

/** One arm of the comparison: full depth (always measured first in the list), an exit policy, or speculative decoding. */
export type Arm = { kind: 'full' } | { kind: 'exit'; exit: string } | { kind: 'speculative'; speculative: SpeculativeSpec };

export type ArmKind = Arm['kind'];

/** One timed request. */
export interface RunRecord {
  arm: ArmKind;
  prompt: number;
  rep: number;
  /** Call to the first token event, ms (prefill and the first token). */
  ttftMs: number;
  /** Between consecutive token events, ms (maxTokens - 1 of them). */
  tokenMs: number[];
  tokens: number[];
  /** Layers run per token, as the result reports them (full depth for a speculative request: see layersPerToken). */
  exitLayers: number[];
  /** Row-layers computed per token: mean exitLayers; speculative: the rounds' row-layers (drafts, rejoins, verification), the rest at full depth. */
  layersPerToken: number;
  prefillMs: number;
  decodeMs: number;
  speculative?: SpeculativeStats;
}

export interface MeasureOptions {
  prompts: string[];
  maxTokens: number;
  /** Timed requests per prompt and arm. */
  reps: number;
  /** Untimed requests per arm first (the first prompt): JIT, caches, the exit file read. */
  warmup?: number;
  arms: Arm[];
  /** Called after each timed request (progress). */
  onRecord?: (r: RunRecord) => void;
}

/**
 * Runs every arm on every prompt `reps` times, interleaved. A speculative request whose tokens differ from the
 * full-depth request of the same prompt and rep is an error (its output is the full model's greedy output by
 * construction: a difference is a failure, not a figure).
 */
export async function measureArms(model: Model, o: MeasureOptions): Promise<RunRecord[]> {
  if (o.arms.length === 0 || o.arms[0].kind !== 'full') throw new OptionError('arms', 'the first arm must be full depth (the reference of every ratio)');
  if (o.prompts.length === 0) throw new OptionError('prompts', 'at least one prompt is needed');
  if (!Number.isInteger(o.maxTokens) || o.maxTokens < 2) throw new OptionError('maxTokens', `must be an integer >= 2 (one gap between tokens), got ${o.maxTokens}`);
  const contextLimit = model.info.contextLength;
  const lengths: number[] = [];
  for (const [i, p] of o.prompts.entries()) {
    const n = (await model.tokenize(p, { addSpecial: true })).length;
    if (n + o.maxTokens + 1 > contextLimit)
      throw new OptionError('maxTokens', `prompt ${i} (${n} tokens) + ${o.maxTokens} generated tokens exceed the model's context of ${contextLimit}`);
    lengths.push(n);
  }
  for (let w = 0; w < (o.warmup ?? 1); w++) for (const arm of o.arms) await runOnce(model, arm, o.prompts[0], lengths[0], o.maxTokens);

  const records: RunRecord[] = [];
  let request = 0;
  for (let rep = 0; rep < o.reps; rep++) {
    for (let p = 0; p < o.prompts.length; p++, request++) {
      const order = o.arms.map((_, i) => o.arms[(i + request) % o.arms.length]);
      const byKind = new Map<ArmKind, RunRecord>();
      for (const arm of order) {
        const r = { ...(await runOnce(model, arm, o.prompts[p], lengths[p], o.maxTokens)), prompt: p, rep };
        byKind.set(arm.kind, r);
      }
      const full = byKind.get('full')!;
      const spec = byKind.get('speculative');
      if (spec && spec.tokens.join() !== full.tokens.join())
        throw new AdaInferError('INTERNAL', `prompt ${p}: the speculative output differs from the full-depth greedy output (a failure, not a figure)`);
      for (const arm of o.arms) {
        const r = byKind.get(arm.kind)!;
        records.push(r);
        o.onRecord?.(r);
      }
    }
  }
  return records;
}

async function runOnce(model: Model, arm: Arm, prompt: string, promptTokens: number, maxTokens: number): Promise<Omit<RunRecord, 'prompt' | 'rep'>> {
  const session = await model.createSession({ contextSize: promptTokens + maxTokens + 1 });
  try {
    const stamps: number[] = [];
    const t0 = performance.now();
    // stream() yields each token event as it arrives and returns the result (timings, speculative stats) at done.
    const stream = session.stream(prompt, {
      maxTokens,
      temperature: 0,
      stopAtEos: false,
      ...(arm.kind === 'exit' && { exit: arm.exit }),
      ...(arm.kind === 'speculative' && { speculative: arm.speculative }),
    });
    let step = await stream.next();
    for (; !step.done; step = await stream.next()) stamps.push(performance.now());
    const r = step.value;
    if (r === undefined) throw new AdaInferError('INTERNAL', 'the stream ended without a result');
    if (stamps.length !== r.tokens.length || r.tokens.length !== maxTokens)
      throw new AdaInferError('INTERNAL', `${r.tokens.length} tokens and ${stamps.length} token events for ${maxTokens} requested (stop: ${r.stopReason})`);
    const tokenMs: number[] = [];
    for (let i = 1; i < stamps.length; i++) tokenMs.push(stamps[i] - stamps[i - 1]);
    const meanLayers = r.exitLayers.reduce((a, b) => a + b, 0) / r.exitLayers.length;
    // Speculative: the rounds' row-layers per token they gave; the first token (from the prefill) and the tokens
    // of plain fallback steps ran the whole model.
    const s = r.speculative;
    const roundTokens = s ? Math.max(0, r.tokens.length - 1 - s.fallbackTokens) : 0;
    const nLayer = model.info.nLayer;
    return {
      arm: arm.kind,
      ttftMs: stamps[0] - t0,
      tokenMs,
      tokens: r.tokens,
      exitLayers: r.exitLayers,
      layersPerToken: s ? (s.layersPerToken * roundTokens + nLayer * (r.tokens.length - roundTokens)) / r.tokens.length : meanLayers,
      prefillMs: r.timings.prefillMs,
      decodeMs: r.timings.decodeMs,
      ...(r.speculative && { speculative: r.speculative }),
    };
  } finally {
    await session.dispose();
  }
}
