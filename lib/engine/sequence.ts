/**
 * One sequence on a LlamaContext: prompt processing (in batches), decoding token by token, sampling and
 * stopping. Runs synchronously on the thread that owns the context (the model worker).
 *
 * The KV cache keeps the tokens of the previous generation: a new prompt that starts with the same tokens
 * reuses their cache entries (as llama.cpp's server does with cache_prompt) and only the rest is processed.
 */
import { AdaInferError, ContextOverflowError, OptionError } from '../errors';
import { LlamaContext } from '../model/llama';
import { EarlyExitRunner } from '../exit/policy';
import { ResolvedSampling, Sampler } from './sampling';

export interface TokenEvent {
  token: number;
  /** Text this token completes (may be empty while a multi-byte character is split across tokens). */
  text: string;
  /** Layers run to produce this token (the model's depth unless an exit policy stopped earlier). */
  exitLayer: number;
}

/**
 * What happens to the K/V of the layers an early exit skipped, for the positions that exited:
 *  - none:       nothing (the paper's behaviour; exact only when a single token is generated) — later tokens
 *                read whatever those cache rows hold;
 *  - propagate:  the exit hidden state computes the K/V of every skipped layer (only the K and V projections),
 *                as CALM does — cheap, approximate;
 *  - recompute:  the exited position's hidden state is kept, and the position rejoins the batch at the layer
 *                it stopped at when the next token runs that layer (SkipDecode-style bookkeeping) — exact K/V,
 *                the skipped work is only postponed.
 */
export type KvFill = 'none' | 'propagate' | 'recompute';

export const KV_FILL_MODES: readonly KvFill[] = ['none', 'propagate', 'recompute'];

export type StopReason = 'eos' | 'maxTokens' | 'contextFull' | 'aborted';

export interface Timings {
  prefillMs: number;
  decodeMs: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
}

export interface SequenceResult {
  text: string;
  tokens: number[];
  /** Layers run for each token of `tokens`. */
  exitLayers: number[];
  promptTokens: number;
  /** Prompt tokens whose KV entries were reused from the previous generation. */
  reusedPromptTokens: number;
  stopReason: StopReason;
  timings: Timings;
}

export interface SequenceGenerateOptions {
  maxTokens: number;
  sampling: ResolvedSampling;
  /** Stop at an end-of-generation token (default true). */
  stopAtEos?: boolean;
  /** Checked between tokens; when it returns true the generation ends with stopReason 'aborted'. */
  aborted?: () => boolean;
  /**
   * Early exit: the policy decides between layers for the last prompt batch and every generated token.
   * Layers skipped for a position keep no K/V for it (the paper's behaviour, exact for one generated
   * token); such positions are never reused by a later prompt.
   */
  exit?: EarlyExitRunner;
}

export class Sequence {
  /** Tokens whose K/V are in the cache, in position order. */
  private cached: number[] = [];
  /** First cached position whose K/V differ from full depth's (an exit cut it short); Infinity if none. */
  private firstInexact = Infinity;
  /** recompute: positions an exit stopped after `depth` layers, with their hidden state there, by position. */
  private pending: { pos: number; depth: number; hidden: Float32Array }[] = [];

  constructor(
    readonly context: LlamaContext,
    readonly kvFill: KvFill = 'propagate',
  ) {
    if (!KV_FILL_MODES.includes(kvFill)) throw new OptionError('kvFill', `must be one of ${KV_FILL_MODES.join(', ')}, got ${String(kvFill)}`);
    if (kvFill === 'recompute' && context.batchSize < context.contextSize)
      throw new OptionError('kvFill', "'recompute' needs a batch as large as the context (pending positions rejoin the batch)");
  }

  get nPast(): number {
    return this.cached.length;
  }

  /**
   * Generates from `prompt` (token ids, BOS included when wanted). Yields each new token; returns the
   * result when the generation stops.
   */
  *generate(prompt: number[], options: SequenceGenerateOptions): Generator<TokenEvent, SequenceResult> {
    const { maxTokens } = options;
    if (!Number.isInteger(maxTokens) || maxTokens < 0)
      throw new OptionError('maxTokens', `must be an integer >= 0, got ${String(maxTokens)}`);
    if (prompt.length === 0) throw new OptionError('prompt', 'the prompt has no tokens (not even BOS)');
    const ctxSize = this.context.contextSize;
    if (prompt.length > ctxSize) {
      throw new ContextOverflowError(
        `the prompt has ${prompt.length} tokens but the context holds ${ctxSize}; shorten the prompt or raise contextSize`,
      );
    }
    const tokenizer = this.context.model.tokenizer;
    const sampler = new Sampler(options.sampling);
    const stopAtEos = options.stopAtEos ?? true;

    const t0 = performance.now();
    let reused = 0;
    let promptLayers: number;
    try {
      ({ reused, layers: promptLayers } = this.prefill(prompt, options.exit, options.aborted));
    } catch (e) {
      if (!(e instanceof AdaInferError && e.code === 'ABORTED')) throw e;
      return this.emptyResult(prompt.length, 'aborted', performance.now() - t0);
    }
    const t1 = performance.now();

    // Generated tokens keep their leading space (the prompt precedes them), as llama.cpp prints them.
    const decoder = tokenizer.createDecoder({ keepLeadingSpace: true });
    const out: number[] = [];
    const exitLayers: number[] = [];
    let text = '';
    let stopReason: StopReason = 'maxTokens';
    let layers = promptLayers;
    while (out.length < maxTokens) {
      if (options.aborted?.()) {
        stopReason = 'aborted';
        break;
      }
      const token = this.next(sampler, layers, options.exit);
      if (stopAtEos && tokenizer.eogIds.has(token)) {
        stopReason = 'eos';
        break;
      }
      out.push(token);
      exitLayers.push(layers);
      const piece = decoder.push(token);
      text += piece;
      yield { token, text: piece, exitLayer: layers };
      if (out.length === maxTokens) break;
      if (this.cached.length >= ctxSize) {
        stopReason = 'contextFull';
        break;
      }
      try {
        layers = this.evaluate([token], options.exit, options.aborted);
      } catch (e) {
        if (!(e instanceof AdaInferError && e.code === 'ABORTED')) throw e;
        stopReason = 'aborted';
        break;
      }
    }
    // An incomplete UTF-8 sequence left at the end (only possible when generation stopped mid-character)
    // is in the final text as U+FFFD, not in a token event.
    text += decoder.flush();
    const t2 = performance.now();
    const prefilled = prompt.length - reused;
    const decoded = Math.max(0, out.length - 1); // the first token comes from the prompt's logits
    return {
      text,
      tokens: out,
      exitLayers,
      promptTokens: prompt.length,
      reusedPromptTokens: reused,
      stopReason,
      timings: {
        prefillMs: t1 - t0,
        decodeMs: t2 - t1,
        prefillTokensPerSecond: prefilled > 0 ? (prefilled * 1000) / (t1 - t0) : 0,
        decodeTokensPerSecond: decoded > 0 ? (decoded * 1000) / (t2 - t1) : 0,
      },
    };
  }

  /**
   * Single-token classification: runs the prompt (with the exit policy, if any) and compares the logits of
   * the label tokens at its last position — at the exit layer's lens when the policy stopped early.
   * Returns the winning label's index, the softmax over the labels' logits, and the layers run.
   */
  classify(prompt: number[], labelTokens: number[], exit?: EarlyExitRunner): { index: number; probs: number[]; layers: number } {
    if (prompt.length === 0) throw new OptionError('prompt', 'the prompt has no tokens (not even BOS)');
    if (prompt.length > this.context.contextSize)
      throw new ContextOverflowError(`the prompt has ${prompt.length} tokens but the context holds ${this.context.contextSize}`);
    const { layers } = this.prefill(prompt, exit, undefined);
    const logits = layers === this.context.model.config.nLayer ? this.context.logits(this.lastRow) : this.context.lensLogits();
    const z = labelTokens.map((t) => logits[t]);
    const max = Math.max(...z);
    const e = z.map((v) => Math.exp(v - max));
    const sum = e.reduce((a, b) => a + b, 0);
    const probs = e.map((v) => v / sum);
    let index = 0;
    for (let i = 1; i < z.length; i++) if (z[i] > z[index]) index = i;
    return { index, probs, layers };
  }

  /** Forgets the cached tokens (the next prompt is processed from position 0). */
  reset(): void {
    this.cached = [];
    this.firstInexact = Infinity;
    this.pending = [];
  }

  private emptyResult(promptTokens: number, stopReason: StopReason, prefillMs: number): SequenceResult {
    return {
      text: '',
      tokens: [],
      exitLayers: [],
      promptTokens,
      reusedPromptTokens: 0,
      stopReason,
      timings: { prefillMs, decodeMs: 0, prefillTokensPerSecond: 0, decodeTokensPerSecond: 0 },
    };
  }

  /** Row of the batch holding the last evaluated token. */
  private lastRow = 0;

  /**
   * The next token after an evaluation that ran `layers` layers: at full depth from the model's logits; after
   * an exit from the exit layer's lens logits (faithful lens), or its top-1 token (fast lens, whose logits
   * cover only the candidates).
   */
  private next(sampler: Sampler, layers: number, exit: EarlyExitRunner | undefined): number {
    if (layers === this.context.model.config.nLayer) return sampler.sample(this.context.logits(this.lastRow));
    if (exit!.policy.lens.mode === 'fast') return exit!.lensReader.reading.top1;
    return sampler.sample(this.context.lensLogits());
  }

  /**
   * Brings the cache to exactly `prompt`, reusing the longest common prefix of exact positions. Returns the
   * reused count and the layers run for the last batch.
   */
  private prefill(prompt: number[], exit: EarlyExitRunner | undefined, aborted: (() => boolean) | undefined): { reused: number; layers: number } {
    const exact = Math.min(this.cached.length, this.firstInexact);
    let common = 0;
    while (common < exact && common < prompt.length && this.cached[common] === prompt[common]) common++;
    // The last prompt token is always run again: its logits are needed and only the cache was kept.
    const reused = Math.min(common, prompt.length - 1);
    this.cached.length = reused;
    this.pending = [];
    this.firstInexact = Infinity;
    return { reused, layers: this.evaluate(prompt.slice(reused), exit, aborted) };
  }

  /**
   * Appends tokens to the sequence in batches of the context's batch size. Only the last batch may exit
   * early (the decision is read at the last position, as in the paper). Returns the layers it ran.
   * Throws an ABORTED error, between two layers, when `aborted` says so; the tokens of that batch are then
   * not part of the sequence.
   */
  private evaluate(tokens: number[], exit: EarlyExitRunner | undefined, aborted: (() => boolean) | undefined): number {
    const { batchSize, native } = this.context;
    let layers = this.context.model.config.nLayer;
    for (let start = 0; start < tokens.length; start += batchSize) {
      const n = Math.min(batchSize, tokens.length - start);
      for (let i = 0; i < n; i++) native.tokens[i] = tokens[start + i];
      const last = start + n >= tokens.length;
      layers = this.run(n, last ? exit : undefined, aborted);
      for (let i = 0; i < n; i++) this.cached.push(tokens[start + i]);
      this.lastRow = n - 1;
    }
    return layers;
  }

  /** One batch of n new rows through the layer loop, with the exit decision and the KV bookkeeping. */
  private run(n: number, exit: EarlyExitRunner | undefined, aborted: (() => boolean) | undefined): number {
    const ctx = this.context;
    const c = ctx.native;
    const nLayer = ctx.model.config.nLayer;
    const d = ctx.model.config.nEmbd;
    const pos0 = this.cached.length;
    for (let i = 0; i < n; i++) {
      c.rowSeq[i] = 0;
      c.rowPos[i] = pos0 + i;
    }
    exit?.begin();
    // recompute: rows n.. hold pending positions that rejoined, in the order of `joined`.
    const joined: Sequence['pending'] = [];
    const layers = ctx.forwardRows(n, (layer, rows) => {
      if (aborted?.()) throw new AdaInferError('ABORTED', 'the generation was aborted');
      if (exit?.shouldStop(layer, n - 1)) return 0;
      for (const p of this.pending) {
        if (p.depth !== layer + 1) continue;
        c.writeHidden(rows, 1, p.hidden);
        c.rowSeq[rows] = 0;
        c.rowPos[rows] = p.pos;
        joined.push(p);
        rows++;
      }
      return rows;
    });
    if (layers === nLayer) {
      // every rejoined position is now complete
      if (joined.length > 0) this.pending = this.pending.filter((p) => !joined.includes(p));
    } else if (this.kvFill === 'propagate') {
      for (let layer = layers; layer < nLayer; layer++) c.fillKv(layer, n);
      this.firstInexact = Math.min(this.firstInexact, pos0);
    } else if (this.kvFill === 'recompute') {
      joined.forEach((p, i) => {
        p.depth = layers;
        c.readHidden(n + i, 1, p.hidden);
      });
      for (let i = 0; i < n; i++) {
        const hidden = new Float32Array(d);
        c.readHidden(i, 1, hidden);
        this.pending.push({ pos: pos0 + i, depth: layers, hidden });
      }
    } else {
      this.firstInexact = Math.min(this.firstInexact, pos0);
    }
    if (this.kvFill === 'recompute') this.firstInexact = this.pending.length > 0 ? Math.min(...this.pending.map((p) => p.pos)) : Infinity;
    return layers;
  }
}
