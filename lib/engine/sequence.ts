/**
 * One sequence on a LlamaContext: prompt processing (in batches), decoding token by token, sampling and
 * stopping. Runs synchronously on the thread that owns the context (the model worker).
 *
 * The KV cache keeps the tokens of the previous generation: a new prompt that starts with the same tokens
 * reuses their cache entries (as llama.cpp's server does with cache_prompt) and only the rest is processed.
 */
import { AbortError, AdaInferError, ContextOverflowError, OptionError } from '../errors';
import { LlamaContext } from '../model/llama';
import { ExitDecider } from '../exit/decider';
import { fixedDepthPolicy } from '../exit/policy';
import { checkKvFill, checkSpeculative, KvFill } from './options';
import { argmax, ResolvedSampling, Sampler } from './sampling';
import { LabelScores, newRowGroup, NextToken, RowGroup, RowOutput, StepEngine } from './step';

export type { KvFill } from './options';

export interface TokenEvent {
  token: number;
  /** Text this token completes (may be empty while a multi-byte character is split across tokens). */
  text: string;
  /** Layers run to produce this token (the model's depth unless an exit policy stopped earlier). */
  exitLayer: number;
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
  /** Layers run for each token of `tokens`. */
  exitLayers: number[];
  promptTokens: number;
  /** Prompt tokens whose KV entries were reused from the previous generation. */
  reusedPromptTokens: number;
  stopReason: StopReason;
  timings: Timings;
  /** With `speculative`: how the drafts went. */
  speculative?: SpeculativeStats;
}

/**
 * Self-speculative decoding (greedy): tokens are drafted from the first `layer` layers (the exit layer's lens),
 * up to `maxDraft` at a time; one step then runs the remaining layers on every drafted position (each starts
 * from its saved exit state) and the last draft at full depth, and keeps the drafts the full model agrees with,
 * plus the full model's own next token. The output is the full-depth greedy output.
 */
export interface SpeculativeOptions {
  /** Draft depth: layers each drafted token runs before its token is read (1 <= layer < nLayer). */
  layer: number;
  /** Drafted tokens per verification step (default 4). */
  maxDraft?: number;
}

export interface SpeculativeStats {
  layer: number;
  /** Tokens drafted, and of them accepted by the full model. */
  drafted: number;
  accepted: number;
  acceptanceRate: number;
  /** Verification steps, and the mean drafted tokens each checked. */
  verifySteps: number;
  meanDraftLength: number;
}

export interface SequenceGenerateOptions {
  maxTokens: number;
  sampling: ResolvedSampling;
  /** Stop at an end-of-generation token (default true). */
  stopAtEos?: boolean;
  /** Checked between layers; when it returns true the generation ends with stopReason 'aborted'. */
  aborted?: () => boolean;
  /**
   * Early exit: the policy decides between layers for the last prompt batch and every generated token.
   * What the skipped layers' K/V become is the sequence's kvFill; positions whose K/V differ from full depth
   * are never reused by a later prompt.
   */
  exit?: ExitDecider;
  /** Self-speculative decoding (greedy only; not with `exit`). */
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
  /** First cached position whose K/V differ from full depth's (an exit cut it short); Infinity if none. */
  private firstInexact = Infinity;
  /** The rows of each step (slot 0); `pending` holds the positions that wait for their skipped layers (recompute). */
  private readonly group: RowGroup = newRowGroup(0);
  private readonly engine: StepEngine;
  private aborted: (() => boolean) | undefined;
  /** Self-speculative decoding: drafted rows keep their exit states (kvFill 'recompute') until verified. */
  private speculation: { engine: StepEngine; group: RowGroup } | undefined;

  constructor(
    readonly context: LlamaContext,
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
    const { maxTokens } = options;
    this.checkPrompt(prompt);
    const ctxSize = this.context.contextSize;
    const tokenizer = this.context.model.tokenizer;
    const next = new NextToken(new Sampler(options.sampling));
    const output = maxTokens > 0 ? next : undefined;
    const stopAtEos = options.stopAtEos ?? true;
    this.aborted = options.aborted;
    const spec = options.speculative && this.startSpeculation(options);

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
          if (spec) this.speculate(last, Math.min(spec.maxDraft, maxTokens - out.length - 1), spec, ready);
          else {
            layers = this.evaluate([last], options.exit, next);
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
      const piece = decoder.push(token);
      text += piece;
      yield { token, text: piece, exitLayer: layers };
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
      ...(spec && { speculative: spec.stats }),
    };
  }

  /** Checks the speculative options against this context; the drafter's state for one generation. */
  private startSpeculation(options: SequenceGenerateOptions) {
    const { layer, maxDraft } = checkSpeculative(options.speculative, this.context.model.config.nLayer, options.sampling.temperature, options.exit !== undefined);
    if (maxDraft >= this.context.batchSize)
      throw new OptionError('speculative', `maxDraft must be an integer in [1, ${this.context.batchSize - 1}] (the verification step's rows), got ${String(maxDraft)}`);
    if (!this.speculation) {
      const engine = new StepEngine(this.context, { kvFill: 'recompute', compaction: true, scratchSlot: -1, betweenLayers: this.engine.options.betweenLayers });
      const group = newRowGroup(0);
      group.pending = [];
      this.speculation = { engine, group };
    }
    const greedy = { ...options.sampling, temperature: 0 };
    return {
      maxDraft,
      drafter: new ExitDecider(this.context, fixedDepthPolicy(layer)),
      draft: new NextToken(new Sampler(greedy)),
      verify: new NextToken(new Sampler(greedy)),
      /** The full model's greedy token after each drafted position of the verification step. */
      verified: [] as number[],
      stats: { layer, drafted: 0, accepted: 0, acceptanceRate: 0, verifySteps: 0, meanDraftLength: 0 } as SpeculativeStats,
    };
  }

  /**
   * One round of self-speculative decoding from `last` (the last emitted token, at the next position): up to
   * `maxDraft` drafts, each row stopping after the draft layer and keeping its exit state; then one step runs the
   * last draft at full depth while the drafted positions rejoin it at the draft layer. Pushes the accepted drafts
   * and the full model's next token to `ready`; the cache keeps exactly the accepted positions.
   */
  private speculate(last: number, maxDraft: number, spec: NonNullable<ReturnType<Sequence['startSpeculation']>>, ready: number[]): void {
    const { engine, group: g } = this.speculation!;
    const pos = this.cached.length;
    // The verification step holds the drafts and the last one: positions pos..pos+k must fit the context.
    const k = Math.max(0, Math.min(maxDraft, this.context.contextSize - pos - 1));
    g.pending!.length = 0;
    const drafts = [last];
    g.output = spec.draft;
    g.decider = spec.drafter;
    g.onRejoined = undefined;
    g.count = 1;
    g.from = 0;
    for (let j = 0; j < k; j++) {
      g.tokens = [drafts[j]];
      g.pos = pos + j;
      engine.run([g]);
      drafts.push(spec.draft.token);
    }
    const verified = spec.verified;
    verified.length = k;
    g.tokens = [drafts[k]];
    g.pos = pos + k;
    g.output = spec.verify;
    g.decider = undefined;
    g.onRejoined = (p, logits) => (verified[p - pos] = argmax(logits));
    engine.run([g]);
    verified[k] = spec.verify.token;
    let accepted = 0;
    while (accepted < k && verified[accepted] === drafts[accepted + 1]) accepted++;
    for (let j = 0; j <= accepted; j++) this.cached.push(drafts[j]);
    for (let j = 1; j <= accepted; j++) ready.push(drafts[j]);
    ready.push(verified[accepted]);
    const s = spec.stats;
    s.drafted += k;
    s.accepted += accepted;
    s.verifySteps++;
    s.acceptanceRate = s.drafted > 0 ? s.accepted / s.drafted : 0;
    s.meanDraftLength = s.drafted / s.verifySteps;
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
    this.cached.length = length;
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
    // The last prompt token is always run again: its logits are needed and only the cache was kept.
    const reused = Math.min(common, prompt.length - 1);
    this.cached.length = reused;
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
