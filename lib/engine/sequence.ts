/**
 * One sequence on a LlamaContext: prompt processing (in batches), decoding token by token, sampling and
 * stopping. Runs synchronously on the thread that owns the context (the model worker).
 *
 * The KV cache keeps the tokens of the previous generation: a new prompt that starts with the same tokens
 * reuses their cache entries (as llama.cpp's server does with cache_prompt) and only the rest is processed.
 */
import { ContextOverflowError, OptionError } from '../errors';
import { LlamaContext } from '../model/llama';
import { ResolvedSampling, Sampler } from './sampling';

export interface TokenEvent {
  token: number;
  /** Text this token completes (may be empty while a multi-byte character is split across tokens). */
  text: string;
}

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
}

export class Sequence {
  /** Tokens whose K/V are in the cache, in position order. */
  private cached: number[] = [];

  constructor(readonly context: LlamaContext) {}

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
    const reused = this.prefill(prompt);
    const t1 = performance.now();

    // Generated tokens keep their leading space (the prompt precedes them), as llama.cpp prints them.
    const decoder = tokenizer.createDecoder({ keepLeadingSpace: true });
    const out: number[] = [];
    let text = '';
    let stopReason: StopReason = 'maxTokens';
    let logits = this.context.logits(this.lastRow);
    while (out.length < maxTokens) {
      if (options.aborted?.()) {
        stopReason = 'aborted';
        break;
      }
      const token = sampler.sample(logits);
      if (stopAtEos && tokenizer.eogIds.has(token)) {
        stopReason = 'eos';
        break;
      }
      out.push(token);
      const piece = decoder.push(token);
      text += piece;
      yield { token, text: piece };
      if (out.length === maxTokens) break;
      if (this.cached.length >= ctxSize) {
        stopReason = 'contextFull';
        break;
      }
      this.evaluate([token]);
      logits = this.context.logits(this.lastRow);
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

  /** Forgets the cached tokens (the next prompt is processed from position 0). */
  reset(): void {
    this.cached = [];
  }

  /** Row of the batch holding the last evaluated token. */
  private lastRow = 0;

  /** Brings the cache to exactly `prompt`, reusing the longest common prefix; returns the reused count. */
  private prefill(prompt: number[]): number {
    let common = 0;
    while (common < this.cached.length && common < prompt.length && this.cached[common] === prompt[common]) common++;
    // The last prompt token is always run again: its logits are needed and only the cache was kept.
    const reuse = Math.min(common, prompt.length - 1);
    this.cached.length = reuse;
    this.evaluate(prompt.slice(reuse));
    return reuse;
  }

  /** Appends tokens to the sequence, in batches of the context's batch size. */
  private evaluate(tokens: number[]): void {
    const { batchSize, native } = this.context;
    for (let start = 0; start < tokens.length; start += batchSize) {
      const n = Math.min(batchSize, tokens.length - start);
      for (let i = 0; i < n; i++) native.tokens[i] = tokens[start + i];
      this.context.forward(n, this.cached.length);
      for (let i = 0; i < n; i++) this.cached.push(tokens[start + i]);
      this.lastRow = n - 1;
    }
  }
}
