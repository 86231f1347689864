/**
 * One sequence on a TransformerContext: prompt processing (in batches), decoding token by token, sampling and
 * stopping. Runs synchronously on the thread that owns the context (the model worker).
 *
 * The KV cache keeps the tokens of the previous generation: a new prompt that starts with the same tokens
 * reuses their cache entries (as llama.cpp's server does with cache_prompt) and only the rest is processed.
 * Unlike cache_prompt, a repeat is exact: a prompt found whole in the cache reruns the step that held its last
 * token with the same rows (a row's rounding depends on its step's rows), not its last token alone.
 */
import { AbortError, AdaInferError, ContextOverflowError, OptionError } from '../errors';
import { TransformerContext } from '../model/transformer';
import { ExitDecider } from '../exit/decider';
import { checkKvFill, KvFill } from './options';
import { checkSpeculation, DraftingMeters, Speculation, SpeculativeOptions, SpeculativeStats } from './speculative';
import { argmax, ResolvedSampling, Sampler } from './sampling';
import { StopMatcher } from './stop';
import { LabelScores, newRowGroup, NextToken, RowGroup, RowOutput, StepEngine } from './step';

export type { KvFill } from './options';

export interface TokenEvent {
  token: number;
  /** Text this token completes (may be empty while a multi-byte character is split across tokens). */
  text: string;
  /** Layers run to produce this token (the model's depth unless an exit policy stopped earlier). */
  exitLayer: number;
}

/** Why a generation ended; 'stop': at one of the `stop` strings (`stopString` says which). */
export type StopReason = 'eos' | 'stop' | 'maxTokens' | 'contextFull' | 'aborted';

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
  /** The stop string the text ended at (stopReason 'stop'); the text stops before it. */
  stopString?: string;
  timings: Timings;
  /** With `speculative`: how the drafts went. */
  speculative?: SpeculativeStats;
}

export type { SpeculativeOptions, SpeculativeStats } from './speculative';

export interface SequenceGenerateOptions {
  maxTokens: number;
  sampling: ResolvedSampling;
  /** Stop at an end-of-generation token (default true). */
  stopAtEos?: boolean;
  /**
   * Stop strings (lib/engine/stop.ts): the generation ends where its text first contains one; the text ends
   * before it (the tokens include the one that completed it). Token events hold back text that could be the
   * start of one, so their texts always add up to the result's text.
   */
  stop?: readonly string[];
  /** Checked between layers; when it returns true the generation ends with stopReason 'aborted'. */
  aborted?: () => boolean;
  /**
   * Early exit: the policy decides between layers for the last prompt batch and every generated token.
   * What the skipped layers' K/V become is the sequence's kvFill; positions whose K/V differ from full depth
   * are never reused by a later prompt.
   */
  exit?: ExitDecider;
  /** Self-speculative decoding (not with `exit`). */
  speculative?: SpeculativeOptions;
}

/**
 * One sequence: a step engine over one cache slot, its prompt split into steps of the context's batch size.
 * Only the last step of a prompt may exit early (the decision is read at the prompt's last position, as in the
 * paper). The KV cache keeps the tokens of the previous generation for prefix reuse.
 */
export class Sequence {
  /** Tokens whose K/V are in the cache, in position order. */
  private cached: number[] = [];
  /**
   * Where each step that wrote the cache began, ascending. A row's rounding depends on how its step grouped the
   * rows (a 1-row step sums in another order than a prompt chunk), so a prompt found whole in the cache is run
   * again from the start of the step that first ran its last token: the repeat then computes that token exactly
   * as the first run did (same logits, same exit decision, same K/V).
   */
  private stepStarts: number[] = [];
  /** First cached position whose K/V differ from full depth's (an exit cut it short); Infinity if none. */
  private firstInexact = Infinity;
  /** The rows of each step (slot 0); `pending` holds the positions that wait for their skipped layers (recompute). */
  private readonly group: RowGroup = newRowGroup(0);
  private readonly engine: StepEngine;
  private aborted: (() => boolean) | undefined;
  /** Self-speculative decoding: drafted rows keep their exit states (kvFill 'recompute') until verified. */
  private speculationEngine: StepEngine | undefined;

  constructor(
    readonly context: TransformerContext,
    readonly kvFill: KvFill = 'propagate',
  ) {
    checkKvFill(kvFill);
    if (kvFill === 'recompute' && context.batchSize < context.contextSize)
      throw new OptionError('kvFill', "'recompute' needs a batch as large as the context (pending positions rejoin the batch)");
    if (kvFill === 'recompute') this.group.pending = [];
    this.engine = new StepEngine(context, {
      kvFill,
      compaction: true,
      scratchSlot: -1,
      betweenLayers: () => {
        if (this.aborted?.()) throw new AbortError('the generation was aborted');
      },
    });
  }

  get nPast(): number {
    return this.cached.length;
  }

  /**
   * Generates from `prompt` (token ids, BOS included when wanted). Yields each new token, and `null` between two
   * prompt chunks (a point where the caller may let other work run: a long prefill does not hold the thread);
   * returns the result when the generation stops.
   */
  *generate(prompt: number[], options: SequenceGenerateOptions): Generator<TokenEvent | null, SequenceResult> {
    this.checkPrompt(prompt);
    // One generator for the whole generation: plain steps, drafts and acceptance draw from one stream (two
    // generators of one seed would repeat each other's draws, correlating the first token and the first draft).
    const sampler = new Sampler(options.sampling);
    const spec = options.speculative ? this.startSpeculation(options, sampler) : undefined;
    try {
      return yield* this.generateWith(prompt, options, sampler, spec);
    } finally {
      spec?.close(); // also when the caller stops iterating early
    }
  }

  private *generateWith(prompt: number[], options: SequenceGenerateOptions, sampler: Sampler, spec: Speculation | undefined): Generator<TokenEvent | null, SequenceResult> {
    const { maxTokens } = options;
    const ctxSize = this.context.contextSize;
    const tokenizer = this.context.model.tokenizer;
    const next = new NextToken(sampler);
    const output = maxTokens > 0 ? next : undefined;
    const stopAtEos = options.stopAtEos ?? true;
    this.aborted = options.aborted;
    const stopper = options.stop && options.stop.length > 0 ? new StopMatcher(options.stop) : undefined;
    // The repetition penalties see the prompt, then each generated token (llama.cpp's server does the same).
    if (sampler.penalties) for (const t of prompt) sampler.accept(t);

    const t0 = performance.now();
    let reused = 0;
    let layers: number;
    try {
      ({ reused, layers } = yield* this.prefill(prompt, options.exit, output));
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
    let stopString: string | undefined;
    // With stop strings: the last token's event while its text ends with a possible start of one (the held-back
    // text joins the event that releases it: the next token's, or this one's when the generation ends here).
    let deferred: TokenEvent | undefined;
    // Tokens ready to emit: one per step, or a speculative step's accepted drafts and the full model's next.
    const ready = [next.token];
    let emitted = 0;
    while (out.length < maxTokens) {
      if (options.aborted?.()) {
        stopReason = 'aborted';
        break;
      }
      if (emitted === ready.length) {
        // Everything ready was emitted: run the last token (it is not in the cache yet).
        if (this.cached.length >= ctxSize) {
          stopReason = 'contextFull';
          break;
        }
        const last = ready[emitted - 1];
        ready.length = emitted = 0;
        try {
          if (spec && !spec.shouldDecodePlainly()) {
            const pos = this.cached.length;
            const round = spec.round(this.speculationEngine!, last, pos, maxTokens - out.length - 1);
            // A draft-and-verify round groups no layer's rows as a prompt step would: every position counts as
            // a step of its own (a repeat recomputes just the last one, as after plain decode steps).
            for (let i = 0; i <= round.accepted; i++) this.stepStarts.push(pos + i);
            this.cached.push(last, ...round.tokens.slice(0, round.accepted));
            ready.push(...round.tokens);
          } else {
            const t = performance.now();
            layers = this.evaluate([last], options.exit, next);
            spec?.plainStep(performance.now() - t);
            ready.push(next.token);
          }
        } catch (e) {
          if (!(e instanceof AdaInferError && e.code === 'ABORTED')) throw e;
          stopReason = 'aborted';
          break;
        }
      }
      const token = ready[emitted++];
      if (stopAtEos && tokenizer.eogIds.has(token)) {
        stopReason = 'eos';
        break;
      }
      out.push(token);
      exitLayers.push(layers);
      sampler.accept(token);
      let piece = decoder.push(token);
      if (stopper) {
        const pushed = stopper.push(piece);
        piece = pushed.text;
        stopString = pushed.stop;
      }
      text += piece;
      const event: TokenEvent = { token, text: piece, exitLayer: layers };
      if (deferred) yield deferred;
      deferred = undefined;
      if (stopString !== undefined) {
        stopReason = 'stop';
        yield event;
        break;
      }
      if (stopper?.holding) deferred = event;
      else yield event;
    }
    if (stopper) {
      const rest = stopper.flush();
      text += rest;
      if (deferred) deferred.text += rest;
    }
    if (deferred && stopReason !== 'aborted') yield deferred;
    // An incomplete UTF-8 sequence left at the end (only possible when generation stopped mid-character)
    // is in the final text as U+FFFD, not in a token event.
    if (stopReason !== 'stop') text += decoder.flush();
    else decoder.flush();
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
      ...(stopString !== undefined && { stopString }),
      timings: {
        prefillMs: t1 - t0,
        decodeMs: t2 - t1,
        prefillTokensPerSecond: prefilled > 0 ? (prefilled * 1000) / (t1 - t0) : 0,
        decodeTokensPerSecond: decoded > 0 ? (decoded * 1000) / (t2 - t1) : 0,
      },
      ...(spec && { speculative: spec.stats }),
    };
  }

  /**
   * Checks the speculative options against this context; the drafter and verifier of one generation (adaptive
   * drafting shares what it measures with the context's other generations that draft the same way).
   */
  private startSpeculation(options: SequenceGenerateOptions, sampler: Sampler): Speculation {
    const checked = checkSpeculation(options.speculative!, this.context, options.sampling, options.exit !== undefined);
    this.speculationEngine ??= new StepEngine(this.context, { kvFill: 'recompute', compaction: true, scratchSlot: -1, betweenLayers: this.engine.options.betweenLayers });
    return new Speculation(this.context, newRowGroup(0), checked, sampler, DraftingMeters.of(this.context).for(checked, options.sampling.temperature > 0));
  }

  /**
   * Single-token classification: runs the prompt (with the exit policy, if any) and compares the logits of
   * the label tokens at its last position — at the exit layer's lens when the policy stopped early.
   * Returns the winning label's index, the softmax over the labels' logits, and the layers run.
   */
  classify(prompt: number[], labelTokens: number[], exit?: ExitDecider): { index: number; probs: number[]; layers: number } {
    return drain(this.classifySteps(prompt, labelTokens, exit));
  }

  /**
   * classify() in steps: yields `null` between two prompt chunks. `aborted` is checked between layers; when it
   * returns true the run throws an ABORTED error and the step's tokens are not part of the sequence.
   */
  *classifySteps(
    prompt: number[],
    labelTokens: number[],
    exit?: ExitDecider,
    aborted?: () => boolean,
  ): Generator<null, { index: number; probs: number[]; layers: number }> {
    this.checkPrompt(prompt);
    const nVocab = this.context.model.config.nVocab;
    const bad = labelTokens.find((t) => !Number.isInteger(t) || t < 0 || t >= nVocab);
    if (bad !== undefined) throw new OptionError('labels', `label token ${String(bad)} is not in the vocabulary [0, ${nVocab})`);
    const scores = new LabelScores(labelTokens);
    this.aborted = aborted;
    const { layers } = yield* this.prefill(prompt, exit, scores);
    return { ...scores.result(), layers };
  }

  /** Forgets the cached tokens (the next prompt is processed from position 0). */
  reset(): void {
    this.truncate(0);
  }

  /**
   * Forgets the positions from `length` on (a rejected draft of speculative decoding, or a shorter prompt): their
   * cache entries are overwritten by whatever runs there next, their pending rows ('recompute') are dropped.
   */
  truncate(length: number): void {
    if (!Number.isInteger(length) || length < 0 || length > this.cached.length)
      throw new OptionError('length', `must be an integer in [0, ${this.cached.length}], got ${String(length)}`);
    this.cutCache(length);
    const pending = this.group.pending;
    if (pending) {
      let w = 0;
      for (const p of pending) if (p.pos < length) pending[w++] = p;
      pending.length = w;
      this.firstInexact = w > 0 ? Math.min(...pending.map((p) => p.pos)) : Infinity;
    } else if (this.firstInexact >= length) {
      this.firstInexact = Infinity;
    }
  }

  /** Keeps the first `length` cached positions and the steps that began among them. */
  private cutCache(length: number): void {
    this.cached.length = length;
    let n = this.stepStarts.length;
    while (n > 0 && this.stepStarts[n - 1] >= length) n--;
    this.stepStarts.length = n;
  }

  /** The start of the step that ran cached position `pos`. */
  private stepStartAtOrBefore(pos: number): number {
    for (let i = this.stepStarts.length - 1; i >= 0; i--) if (this.stepStarts[i] <= pos) return this.stepStarts[i];
    return 0;
  }

  private checkPrompt(prompt: number[]): void {
    if (prompt.length === 0) throw new OptionError('prompt', 'the prompt has no tokens (not even BOS)');
    if (prompt.length > this.context.contextSize) {
      throw new ContextOverflowError(
        `the prompt has ${prompt.length} tokens but the context holds ${this.context.contextSize}; shorten the prompt or raise contextSize`,
      );
    }
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

  /**
   * Brings the cache to exactly `prompt`, reusing the longest common prefix of exact positions. Returns the
   * reused count and the layers run for the last step.
   */
  private *prefill(prompt: number[], exit: ExitDecider | undefined, output: RowOutput | undefined): Generator<null, { reused: number; layers: number }> {
    const exact = Math.min(this.cached.length, this.firstInexact);
    let common = 0;
    while (common < exact && common < prompt.length && this.cached[common] === prompt[common]) common++;
    // The last prompt token is always run again (its logits are needed and only the cache was kept), with the
    // rows its first step grouped it with, so that a repeated prompt gives what it gave the first time.
    const reused = common < prompt.length ? common : this.stepStartAtOrBefore(prompt.length - 1);
    this.cutCache(reused);
    if (this.group.pending) this.group.pending.length = 0;
    this.firstInexact = Infinity;
    return { reused, layers: yield* this.evaluateSteps(prompt.slice(reused), exit, output) };
  }

  /**
   * Appends tokens to the sequence in steps of the context's batch size; the last step decides the exit and
   * gives the output. Returns the layers it ran. Throws an ABORTED error, between two layers, when `aborted`
   * says so; the tokens of that step are then not part of the sequence.
   */
  private evaluate(tokens: number[], exit: ExitDecider | undefined, output: RowOutput | undefined): number {
    return drain(this.evaluateSteps(tokens, exit, output));
  }

  /** evaluate() in steps: yields `null` after every step but the last. */
  private *evaluateSteps(tokens: number[], exit: ExitDecider | undefined, output: RowOutput | undefined): Generator<null, number> {
    const { batchSize } = this.context;
    const g = this.group;
    const nLayer = this.context.model.config.nLayer;
    g.tokens = tokens;
    for (let start = 0; start < tokens.length; start += batchSize) {
      const last = start + batchSize >= tokens.length;
      g.from = start;
      g.count = Math.min(batchSize, tokens.length - start);
      g.pos = this.cached.length;
      g.output = last ? output : undefined;
      g.decider = last ? exit : undefined;
      this.engine.run([g]);
      this.stepStarts.push(g.pos);
      for (let i = start; i < start + g.count; i++) this.cached.push(tokens[i]);
      if (g.layers < nLayer && this.kvFill !== 'recompute') this.firstInexact = Math.min(this.firstInexact, g.pos);
      if (!last) yield null;
    }
    if (g.pending) this.firstInexact = g.pending.length > 0 ? Math.min(...g.pending.map((p) => p.pos)) : Infinity;
    g.tokens = [];
    return g.layers;
  }
}

/** Runs a stepwise computation to its end in one go. */
function drain<R>(steps: Generator<null, R>): R {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}
