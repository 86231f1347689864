/**
 * Batched execution: many sequences together in one TransformerContext (one KV cache slot per sequence), with
 * AdaInfer early exit decided per sequence and row compaction between layers.
 *
 * Scheduling (continuous batching, one step loop: `schedule`): the context's `sequences` slots are filled with
 * requests in submission order; a sequence that finishes, or whose request is cancelled, frees its slot for the
 * next one between two steps. An OpenBatch takes requests while it runs (a server's batch: each request with its
 * own sampler, exit policy, limits and token stream); generateBatch is an OpenBatch fed a fixed list and
 * closed; classifyBatch schedules a fixed list through the same loop. Each step holds:
 *  - whole prompts of the sequences still prefilling, in admission order, as long as the context's row
 *    capacity (`batchSize`) has room (a prompt that does not fit waits for a later step). A prompt longer than
 *    promptChunk = batchSize - slots rows runs in chunks of that size, one per step, and only its last chunk
 *    may exit early (as in Sequence: the decision is read at the prompt's last position);
 *  - one row per decoding sequence (its last sampled token) — except in a step that runs prompt chunks right
 *    after a step where the decode rows ran (prefill priority, as vLLM's default scheduler): a newly admitted
 *    prompt's first token then costs its own step's prompt rows only, not those plus up to slots - 1 decode
 *    rows. The decode rows sit out at most one step in a row (a long prompt's chunks alternate with steps that
 *    carry the decode rows too), so prompts never stall decoding for long.
 * A request with `speculative` decodes self-speculatively (lib/engine/speculative.ts): in each step its decode
 * row is its round's next draft (at the draft depth) or its verification (at full depth, with the drafted positions
 * rejoining at their draft depth beside the other sequences' rows), so a round takes k + 1 steps and emits up to
 * k + 1 tokens. Its rows reserve 1 + (pending drafts) rows of the step.
 * The step engine (lib/engine/step.ts) runs each step: per-sequence exit decisions (one ExitDecider per
 * sequence), row compaction (or, with `compaction: false`, the baseline that keeps exited rows computing
 * into a scratch slot — the context's last sequence, which then holds no prompt), and the K/V of skipped
 * layers (`kvFill` 'propagate' or 'none' for exits; a speculative request's drafts wait for their verification,
 * as 'recompute' does in a Session).
 *
 * Per-sequence results equal those of the same prompt run alone through Sequence on a fresh context (same
 * sampler seed, same policy, same kvFill): the native blocks compute every row independently of the other rows
 * of the batch (tested bit for bit), and each sequence's decider sees its own lens readings.
 *
 * Runs synchronously on the thread that owns the context; the generators yield after every step so that the
 * model worker can post finished results and let other requests in.
 */
import { AbortError, AdaInferError, ContextOverflowError, OptionError } from '../errors';
import { ExitDecider } from '../exit/decider';
import { ExitPolicy, withLabelCandidates } from '../exit/policy';
import { TransformerContext } from '../model/transformer';
import { StreamDecoder } from '../tokenizer/types';
import { BatchKvFill, checkBatchKvFill } from './options';
import { ResolvedSampling, Sampler } from './sampling';
import type { StopReason, TokenEvent } from './sequence';
import { checkSpeculation, CheckedSpeculation, DraftingMeters, Speculation, SpeculativeOptions, SpeculativeStats } from './speculative';
import { StopMatcher } from './stop';
import { LabelScores, newRowGroup, NextToken, RowGroup, RowOutput, StepEngine, StepStats } from './step';

export type { BatchKvFill } from './options';

/**
 * The exit policy of a batch: a policy object shared by every sequence (stateless kinds: never, threshold, svm,
 * svm-rbf), or a factory called once per sequence when it is admitted (needed for 'crf', whose classifier keeps
 * a forward message across the layers of one token).
 */
export type BatchExit = ExitPolicy | (() => ExitPolicy);

export interface BatchPrompt {
  /** Token ids (BOS included when wanted). */
  tokens: number[];
  /** Overrides the batch's maxTokens for this prompt. */
  maxTokens?: number;
  /** Overrides the sampler seed of this prompt (default: sampling.seed + its index, modulo 2^32). */
  seed?: number;
}

export interface BatchClassifyPrompt {
  tokens: number[];
  /** The token each label is scored by (its first token after this prompt); fast lenses use them as candidates. */
  labelTokens: number[];
}

interface BatchCommonOptions {
  /** Early exit; undefined or a 'never' policy: full depth. */
  exit?: BatchExit;
  /** Remove exited rows from the batch between layers (default true). */
  compaction?: boolean;
  /** Checked between steps; when it returns true the run throws an AbortError (code ABORTED). */
  aborted?: () => boolean;
}

export interface BatchGenerateOptions extends BatchCommonOptions {
  maxTokens: number;
  /** Prompt i samples with seed `sampling.seed + i` (modulo 2^32) unless it has its own seed. */
  sampling: ResolvedSampling;
  stopAtEos?: boolean;
  /** Stop strings, as Sequence's (lib/engine/stop.ts). */
  stop?: readonly string[];
  /** Default 'propagate'. */
  kvFill?: BatchKvFill;
  /** Self-speculative decoding of every prompt (not with `exit`; a fixed depth or a stateless draft policy). */
  speculative?: SpeculativeOptions;
}

export type BatchClassifyOptions = BatchCommonOptions;

export interface BatchTimings {
  /** From the start of the run to the step that admitted this prompt into a slot. */
  queuedMs: number;
  /** From admission to the end of the step that produced the first token (the whole prompt). */
  prefillMs: number;
  /** From the first token to the end. */
  decodeMs: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
}

export interface BatchSequenceResult {
  /** Index of the prompt in the input. */
  index: number;
  text: string;
  tokens: number[];
  /** Layers run for each token of `tokens`. */
  exitLayers: number[];
  promptTokens: number;
  stopReason: StopReason;
  /** The stop string the text ended at (stopReason 'stop'). */
  stopString?: string;
  timings: BatchTimings;
  /** With `speculative`: how the drafts went. */
  speculative?: SpeculativeStats;
}

export interface BatchClassifyRow {
  index: number;
  /** Index of the winning label. */
  label: number;
  /** Softmax over the labels' logits (at the exit layer's lens after an early exit). */
  probs: number[];
  /** Layers run for the prompt's last chunk. */
  exitLayer: number;
  timings: { queuedMs: number; ms: number };
}

export interface BatchStats extends StepStats {
  prompts: number;
  /** Logit-lens reads of the exit policies. */
  lensReads: number;
  ms: number;
}

export interface BatchRun<R> {
  /** In input order. */
  results: R[];
  stats: BatchStats;
}

// ---------------------------------------------------------------------------------------------------
// The scheduler

/** A prompt while it holds a cache slot. */
interface Job {
  index: number;
  tokens: number[];
  /** Its rows in each step (group.slot: its cache slot). */
  group: RowGroup;
  output: RowOutput;
  /** Decides this prompt's exits; undefined: full depth. */
  decider: ExitDecider | undefined;
  /** Prompt tokens evaluated so far. */
  fed: number;
  /** Positions in the cache (prompt + generated tokens evaluated). */
  pos: number;
  /** The next decode input ([token]); empty while prefilling. */
  decodeInput: number[];
  /** In a self-speculative round: its group holds the round's next step (Speculation prepares it). */
  speculating: boolean;
  admittedAt: number;
  /** When the step that read its first output ended; -1 before. */
  firstAt: number;
}

/**
 * Where the scheduler's requests come from and what it does with them: a fixed list (classifyBatch) or an open
 * queue that takes requests while it runs (OpenBatch, which generateBatch feeds with its list).
 */
interface JobKind<J extends Job> {
  /** Requests waiting for a slot. */
  waiting(): number;
  /** True once no request will arrive any more: the run ends when the last one has finished. */
  closed(): boolean;
  /**
   * The next waiting request as a job in `slot`; undefined when it needs no evaluation or was cancelled while it
   * waited (it is then finished, and its index pushed to `finished`).
   */
  admit(slot: number, now: number, finished: number[]): J | undefined;
  /** After a step that read the job's output (it took `stepMs`): true when the job is finished (then `finish` follows). */
  advance(job: J, now: number, stepMs: number): boolean;
  finish(job: J, now: number): void;
  /** Checked before each step: true when the job's request was cancelled (then `drop` follows, freeing its slot). */
  cancelled(job: J): boolean;
  drop(job: J, now: number): void;
}

function checkContext(ctx: TransformerContext): void {
  if (ctx.batchSize <= ctx.sequences)
    throw new OptionError(
      'batchSize',
      `a batch context needs more rows than sequences (rows ${ctx.batchSize}, sequences ${ctx.sequences}): one decode row per sequence, the rest for prompt chunks`,
    );
}

function checkPromptTokens(tokens: unknown, i: number, ctx: TransformerContext): number[] {
  if (!Array.isArray(tokens) || tokens.length === 0) throw new OptionError('prompts', `prompt ${i} has no tokens (not even BOS)`);
  const nVocab = ctx.model.config.nVocab;
  for (const t of tokens)
    if (!Number.isInteger(t) || t < 0 || t >= nVocab) throw new OptionError('prompts', `prompt ${i}: token id ${String(t)} is outside the vocabulary`);
  if (tokens.length > ctx.contextSize)
    throw new ContextOverflowError(`prompt ${i} has ${tokens.length} tokens but the context holds ${ctx.contextSize} per sequence`);
  return tokens as number[];
}

/** A policy object shared by many requests must be stateless: a CRF keeps a forward message across layers. */
function checkShareable(exit: BatchExit | undefined): void {
  if (exit !== undefined && typeof exit !== 'function' && exit.kind === 'crf')
    throw new OptionError('exit', 'a CRF policy keeps state across the layers of a token: pass a factory (() => policy) so that each batch slot has its own');
}

/** The policy of one request (a factory is called for it); undefined: full depth. */
function requestPolicy(exit: BatchExit | undefined): ExitPolicy | undefined {
  const policy = typeof exit === 'function' ? exit() : exit;
  return policy === undefined || policy.kind === 'never' ? undefined : policy;
}

function newJob(index: number, tokens: number[], slot: number, output: RowOutput, decider: ExitDecider | undefined, now: number): Job {
  return { index, tokens, group: newRowGroup(slot), output, decider, fed: 0, pos: 0, decodeInput: [], speculating: false, admittedAt: now, firstAt: -1 };
}

interface ScheduleOptions {
  /** Remove exited rows from the batch between layers (default true). */
  compaction?: boolean;
  kvFill: BatchKvFill;
  /** Checked between steps; when it returns true the run throws an AbortError (code ABORTED). */
  aborted?: () => boolean;
}

/** The cache slots a batch schedules into (without compaction the context's last sequence is the scratch slot). */
function batchSlots(ctx: TransformerContext, compaction: boolean): number {
  const slots = compaction ? ctx.sequences : ctx.sequences - 1;
  if (slots < 1) throw new OptionError('compaction', 'compaction: false needs a context with one more sequence than the batch (a scratch slot)');
  return slots;
}

/**
 * THE step loop (continuous batching), shared by generation and classification: between two steps it removes
 * cancelled jobs, admits waiting requests into free slots, builds the step (decode rows, then prompt chunks; a
 * step with prompt chunks leaves the decode rows out unless they sat out the step before),
 * runs it on the step engine and advances the jobs. Yields, after each step, the indices of the requests
 * finished in it; while the batch is open and idle (nothing live, nothing waiting) it yields an empty list after
 * each look, and its driver waits for a request before it asks again.
 */
function* schedule<J extends Job>(ctx: TransformerContext, kind: JobKind<J>, options: ScheduleOptions, stats: BatchStats): Generator<number[], void> {
  const compaction = options.compaction ?? true;
  // Without compaction, exited rows keep running: their K/V writes go to a scratch slot (the context's last
  // sequence), so that the cache holds exactly what it would with compaction (and kvFill 'none' stays 'none').
  const slots = batchSlots(ctx, compaction);
  const engine = new StepEngine(ctx, { kvFill: options.kvFill, compaction, scratchSlot: compaction ? -1 : ctx.sequences - 1 });
  const freeSlots: number[] = [];
  for (let s = slots - 1; s >= 0; s--) freeSlots.push(s);
  /** Rows of one prompt chunk: what the decode rows of the other slots leave. */
  const promptChunk = ctx.batchSize - slots;
  const live: J[] = [];
  const step: J[] = [];
  const groups: RowGroup[] = [];
  /** The decoding jobs sat out the last step (a prompt-only step): they run in the next one. */
  let decodesSatOut = false;
  const t0 = performance.now();
  const leave = (job: J, finishedNow: number[]) => {
    stats.lensReads += job.decider?.lensReads ?? 0;
    live.splice(live.indexOf(job), 1);
    freeSlots.push(job.group.slot);
    finishedNow.push(job.index);
  };

  while (!kind.closed() || kind.waiting() > 0 || live.length > 0) {
    if (options.aborted?.()) throw new AbortError('the batch was aborted');
    const finishedNow: number[] = [];
    // Cancelled requests leave (their slots are free for this step's admissions).
    for (const job of live.filter((j) => kind.cancelled(j))) {
      leave(job, finishedNow);
      kind.drop(job, performance.now());
    }
    // Admit waiting requests into free slots.
    while (freeSlots.length > 0 && kind.waiting() > 0) {
      const job = kind.admit(freeSlots[freeSlots.length - 1], performance.now(), finishedNow);
      if (job) {
        freeSlots.pop();
        live.push(job);
      }
    }
    if (live.length === 0) {
      stats.ms = performance.now() - t0;
      yield finishedNow;
      continue;
    }

    decodesSatOut = buildStep(live, step, groups, promptChunk, ctx.batchSize, !decodesSatOut);
    const start = performance.now();
    engine.run(groups);
    Object.assign(stats, engine.stats);

    // Advance the jobs.
    const end = performance.now();
    for (const job of step) {
      const g = job.group;
      if (job.decodeInput.length === 0) job.fed += g.count; // a prompt chunk
      job.pos += g.count;
      if (!g.output) continue;
      if (job.firstAt < 0) job.firstAt = end;
      if (kind.advance(job, end, end - start)) {
        leave(job, finishedNow);
        kind.finish(job, end);
      }
    }
    stats.ms = performance.now() - t0;
    yield finishedNow;
  }
  stats.ms = performance.now() - t0;
}

/**
 * The rows of the next step (`step`, `groups`: out): one row per decoding job (a speculative round's step: its
 * row and the drafts that may rejoin it), then prompt chunks while they fit; with `promptsOnly`, a step that has
 * prompt chunks to run leaves the decode rows out. Returns true when decoding jobs sat out the step.
 */
function buildStep<J extends Job>(live: J[], step: J[], groups: RowGroup[], promptChunk: number, capacity: number, promptsOnly: boolean): boolean {
  step.length = 0;
  groups.length = 0;
  let rows = 0;
  const add = (job: J, tokens: number[], from: number, count: number, last: boolean) => {
    const g = job.group;
    g.tokens = tokens;
    g.from = from;
    g.count = count;
    g.pos = job.pos;
    g.output = last ? job.output : undefined;
    g.decider = last ? job.decider : undefined;
    rows += count;
    step.push(job);
    groups.push(g);
  };
  const decoding = live.some((job) => job.decodeInput.length > 0);
  // A prompt's (first) chunk always fits an empty step: promptChunk < capacity.
  const sitOut = promptsOnly && decoding && live.some((job) => job.decodeInput.length === 0);
  if (!sitOut)
    for (const job of live) {
      if (job.decodeInput.length === 0) continue;
      if (!job.speculating) {
        add(job, job.decodeInput, 0, 1, true);
        continue;
      }
      rows += 1 + job.group.pending!.length;
      step.push(job);
      groups.push(job.group);
    }
  for (const job of live) {
    if (job.decodeInput.length > 0) continue;
    // A prompt is never split across steps unless it is longer than promptChunk; then it runs in chunks of
    // promptChunk from its start (as Sequence with that batch size): the attention kernel's rounding depends
    // on how a sequence's rows are grouped, so equal grouping keeps results bit-identical.
    const n = Math.min(job.tokens.length - job.fed, promptChunk);
    // Else the next step (plain decode rows never take more than slots - 1 rows from it; a prompt-only step has room).
    if (n > capacity - rows) continue;
    add(job, job.tokens, job.fed, n, job.fed + n === job.tokens.length);
  }
  return sitOut;
}

function newStats(prompts: number): BatchStats {
  return { prompts, steps: 0, rowLayers: 0, rowLayersFull: 0, fillKvRowLayers: 0, lensReads: 0, ms: 0 };
}

// ---------------------------------------------------------------------------------------------------
// Generation: the open batch

/** A generation request of an open batch: its own prompt, sampler, exit policy, limits and callbacks. */
export interface OpenBatchRequest {
  /** Token ids (BOS included when wanted). */
  tokens: number[];
  maxTokens: number;
  /** This request's sampler (its seed included). */
  sampling: ResolvedSampling;
  /** Default true. */
  stopAtEos?: boolean;
  /** Stop strings, as Sequence's (lib/engine/stop.ts): the text ends before the first one, stopReason 'stop'. */
  stop?: readonly string[];
  /** Its exit policy (a factory is called when it is admitted, for its own instance); undefined: full depth. */
  exit?: BatchExit;
  /**
   * Self-speculative decoding (not with `exit`; not without compaction): its output is the full model's, as
   * Session.generate's with the same options. A draft exit policy must be stateless (not a CRF).
   */
  speculative?: SpeculativeOptions;
  /**
   * Each token as soon as the step that sampled it ends (not the end-of-generation token). With stop strings, as
   * Sequence's stream: an event whose text ends with a possible start of one waits, and the held-back text joins
   * the event that releases it (the next token's, or the last one's when the generation ends).
   */
  onToken?: (event: TokenEvent) => void;
  /** Its result, once: when it finishes, or with stopReason 'aborted' after `cancelled` said true. */
  onEnd?: (result: BatchSequenceResult) => void;
  /** Read before each step: true makes the request leave the batch (waiting or running), freeing its slot. */
  cancelled?: () => boolean;
}

export interface OpenBatchOptions {
  /** Default 'propagate'. */
  kvFill?: BatchKvFill;
  /** Remove exited rows from the batch between layers (default true). */
  compaction?: boolean;
  /** Checked between steps; when it returns true the run throws an AbortError (code ABORTED). */
  aborted?: () => boolean;
}

interface GenJob extends Job {
  output: NextToken;
  request: OpenBatchRequest;
  maxTokens: number;
  decoder: StreamDecoder;
  out: number[];
  outLayers: number[];
  text: string;
  stopReason: StopReason;
  submittedAt: number;
  stopper: StopMatcher | undefined;
  stopString: string | undefined;
  /** The last token's event while the stop matcher holds text back. */
  deferred: TokenEvent | undefined;
  /** Self-speculative decoding: the request's rounds, and the position where the current one began. */
  spec: Speculation | undefined;
  roundPos: number;
}

/**
 * An open batch (continuous batching as a server needs it): requests are submitted at any time — also while
 * `run()` is stepping — and join the running batch at the next step that has a free slot, each with its own
 * sampler, exit policy, token limit, token callback and cancellation; a finished or cancelled request leaves
 * between two steps and frees its slot. `generateBatch` is this batch fed a fixed list and closed.
 *
 * Each request's result equals the same request run alone (Sequence on a fresh context, same seed, policy and
 * kvFill), whenever it was admitted: the native blocks compute every row independently of the others.
 */
export class OpenBatch {
  readonly stats: BatchStats = newStats(0);
  private readonly queue: { index: number; request: OpenBatchRequest; speculation: CheckedSpeculation | undefined; at: number }[] = [];
  private isClosed = false;
  private running = 0;
  private readonly kvFill: BatchKvFill;

  constructor(
    readonly ctx: TransformerContext,
    private readonly options: OpenBatchOptions = {},
  ) {
    checkContext(ctx);
    this.kvFill = checkBatchKvFill(options.kvFill);
    batchSlots(ctx, options.compaction ?? true);
  }

  /** Queues a request; returns its index (results and events name it). Checks its prompt at once. */
  submit(request: OpenBatchRequest): number {
    if (this.isClosed) throw new AdaInferError('DISPOSED', 'the batch is closed to new requests');
    const index = this.stats.prompts;
    checkPromptTokens(request.tokens, index, this.ctx);
    const speculation = request.speculative && this.checkSpeculative(request);
    this.stats.prompts++;
    this.queue.push({ index, request, speculation, at: performance.now() });
    return index;
  }

  /** A request's speculative options against this batch: every slot may verify in the same step. */
  private checkSpeculative(request: OpenBatchRequest): CheckedSpeculation {
    const compaction = this.options.compaction ?? true;
    if (!compaction) throw new OptionError('speculative', 'self-speculative decoding needs compaction (drafted rows rejoin the verification step)');
    const checked = checkSpeculation(request.speculative!, this.ctx, request.sampling, requestPolicy(request.exit) !== undefined, batchSlots(this.ctx, compaction));
    if (checked.policy.kind === 'crf') throw new OptionError('speculative', 'a CRF draft policy keeps state across layers: a batch drafts with a fixed depth or a stateless exit policy');
    return checked;
  }

  /** No more submissions: run() ends once every request has finished. */
  close(): void {
    this.isClosed = true;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Requests waiting for a slot. */
  get waiting(): number {
    return this.queue.length;
  }

  /** Requests holding a slot. */
  get active(): number {
    return this.running;
  }

  /** The step loop; yields after each step (or each idle look) the indices of the requests finished in it. */
  *run(): Generator<number[], BatchStats> {
    const ctx = this.ctx;
    const tokenizer = ctx.model.tokenizer;
    const queue = this.queue;
    const result = (job: GenJob, now: number): BatchSequenceResult => {
      const rest = job.decoder.flush(); // an incomplete UTF-8 sequence at the end: U+FFFD in the text, in no event
      const text = job.text + (job.stopReason === 'stop' ? '' : rest);
      const started = job.firstAt >= 0;
      const prefillMs = started ? job.firstAt - job.admittedAt : now - job.admittedAt;
      const decodeMs = started ? now - job.firstAt : 0;
      const decoded = Math.max(0, job.out.length - 1);
      return {
        index: job.index,
        text,
        tokens: job.out,
        exitLayers: job.outLayers,
        promptTokens: job.tokens.length,
        stopReason: job.stopReason,
        ...(job.stopString !== undefined && { stopString: job.stopString }),
        ...(job.spec && { speculative: { ...job.spec.stats } }),
        timings: {
          queuedMs: job.admittedAt - job.submittedAt,
          prefillMs,
          decodeMs,
          prefillTokensPerSecond: started && prefillMs > 0 ? (job.tokens.length * 1000) / prefillMs : 0,
          decodeTokensPerSecond: decoded > 0 && decodeMs > 0 ? (decoded * 1000) / decodeMs : 0,
        },
      };
    };
    const unevaluated = (index: number, r: OpenBatchRequest, stopReason: StopReason, queuedMs: number): BatchSequenceResult => ({
      index,
      text: '',
      tokens: [],
      exitLayers: [],
      promptTokens: r.tokens.length,
      stopReason,
      timings: { queuedMs, prefillMs: 0, decodeMs: 0, prefillTokensPerSecond: 0, decodeTokensPerSecond: 0 },
    });

    /** Emits one token of the job (its event, stop strings, limits); true when the job is finished. */
    const emit = (job: GenJob, token: number): boolean => {
      if ((job.request.stopAtEos ?? true) && tokenizer.eogIds.has(token)) {
        job.stopReason = 'eos';
        return true;
      }
      const exitLayer = job.group.layers;
      job.out.push(token);
      job.outLayers.push(exitLayer);
      job.output.sampler.accept(token);
      let piece = job.decoder.push(token);
      if (job.stopper) {
        const pushed = job.stopper.push(piece);
        piece = pushed.text;
        job.stopString = pushed.stop;
      }
      job.text += piece;
      const event: TokenEvent = { token, text: piece, exitLayer };
      if (job.deferred) job.request.onToken?.(job.deferred);
      job.deferred = undefined;
      if (job.stopString !== undefined) {
        job.stopReason = 'stop';
        job.request.onToken?.(event);
        return true;
      }
      if (job.stopper?.holding) job.deferred = event;
      else job.request.onToken?.(event);
      if (job.out.length >= job.maxTokens) {
        job.stopReason = 'maxTokens';
        return true;
      }
      return false;
    };

    const kind: JobKind<GenJob> = {
      waiting: () => queue.length,
      closed: () => this.isClosed,
      admit: (slot, now, finished) => {
        const { index, request: r, speculation, at } = queue.shift()!;
        if (r.maxTokens === 0 || r.cancelled?.()) {
          finished.push(index);
          r.onEnd?.(unevaluated(index, r, r.maxTokens === 0 ? 'maxTokens' : 'aborted', now - at));
          return undefined;
        }
        const policy = requestPolicy(r.exit);
        const sampler = new Sampler(r.sampling);
        // The repetition penalties see the prompt, then each generated token.
        if (sampler.penalties) for (const t of r.tokens) sampler.accept(t);
        const output = new NextToken(sampler);
        this.running++;
        const job = newJob(index, r.tokens, slot, output, policy && new ExitDecider(ctx, policy), now);
        return {
          ...job,
          output,
          request: r,
          maxTokens: r.maxTokens,
          decoder: tokenizer.createDecoder({ keepLeadingSpace: true }),
          out: [],
          outLayers: [],
          text: '',
          stopReason: 'maxTokens',
          submittedAt: at,
          stopper: r.stop && r.stop.length > 0 ? new StopMatcher(r.stop) : undefined,
          stopString: undefined,
          deferred: undefined,
          spec: speculation && new Speculation(ctx, job.group, speculation, sampler, DraftingMeters.of(ctx).for(speculation, r.sampling.temperature > 0)),
          roundPos: 0,
        };
      },
      advance(job, _now, stepMs) {
        // The tokens this step gave: a plain step's one, or a speculative round's (none until its verification).
        let tokens: number[];
        if (job.speculating) {
          const round = job.spec!.afterStep();
          if (!round) return false;
          job.pos = job.roundPos + round.accepted + 1;
          tokens = round.tokens;
        } else {
          if (job.decodeInput.length > 0) job.spec?.plainStep(stepMs); // a decode step (not the prompt's last chunk)
          tokens = [job.output.token];
        }
        for (const token of tokens) if (emit(job, token)) return true;
        if (job.pos >= ctx.contextSize) {
          job.stopReason = 'contextFull';
          return true;
        }
        // The next step: a speculative round from the last token (unless adaptive drafting decodes plainly), or a plain decode row.
        const last = job.out[job.out.length - 1];
        job.speculating = job.spec !== undefined && !job.spec.shouldDecodePlainly();
        if (job.speculating) {
          job.roundPos = job.pos;
          job.spec!.begin(last, job.pos, job.maxTokens - job.out.length - 1);
        }
        job.decodeInput[0] = last;
        return false;
      },
      finish: (job, now) => {
        this.running--;
        // Text held back for a stop string that did not come: it ends the text, in the last event.
        const rest = job.stopper && job.stopReason !== 'stop' ? job.stopper.flush() : '';
        job.text += rest;
        if (job.deferred) {
          job.deferred.text += rest;
          job.request.onToken?.(job.deferred);
        }
        job.spec?.close();
        job.request.onEnd?.(result(job, now));
      },
      cancelled: (job) => job.request.cancelled?.() ?? false,
      drop: (job, now) => {
        this.running--;
        job.spec?.close();
        job.stopReason = 'aborted';
        job.request.onEnd?.(result(job, now));
      },
    };
    yield* schedule(ctx, kind, { compaction: this.options.compaction, kvFill: this.kvFill, aborted: this.options.aborted }, this.stats);
    return this.stats;
  }
}

/**
 * Generates a continuation of every prompt: an OpenBatch fed the prompts in order and closed. Yields, after each
 * step, the indices of the prompts that finished in it; returns every result in input order.
 */
export function* generateBatch(
  ctx: TransformerContext,
  prompts: BatchPrompt[],
  options: BatchGenerateOptions,
  onResult?: (result: BatchSequenceResult) => void,
): Generator<number[], BatchRun<BatchSequenceResult>> {
  const batch = new OpenBatch(ctx, { kvFill: options.kvFill, compaction: options.compaction, aborted: options.aborted });
  checkShareable(options.exit);
  const results: BatchSequenceResult[] = new Array(prompts.length);
  prompts.forEach((p, i) =>
    batch.submit({
      tokens: p.tokens,
      maxTokens: p.maxTokens ?? options.maxTokens,
      sampling: { ...options.sampling, seed: p.seed ?? (options.sampling.seed + i) % 0x100000000 },
      stopAtEos: options.stopAtEos,
      stop: options.stop,
      exit: options.exit,
      speculative: options.speculative,
      onEnd: (r) => {
        results[i] = r;
        onResult?.(r);
      },
    }),
  );
  batch.close();
  const stats = yield* batch.run();
  return { results, stats };
}

// ---------------------------------------------------------------------------------------------------
// Classification

interface ClassJob extends Job {
  output: LabelScores;
}

/**
 * Single-token classification of every prompt (as Sequence.classify): the label whose token has the highest
 * logit at the prompt's last position, at the exit layer's lens when the policy stops early. Fast lenses use
 * the prompt's label tokens as candidates. K/V of skipped layers are never needed (nothing follows).
 */
export function* classifyBatch(
  ctx: TransformerContext,
  prompts: BatchClassifyPrompt[],
  options: BatchClassifyOptions,
  onResult?: (result: BatchClassifyRow) => void,
): Generator<number[], BatchRun<BatchClassifyRow>> {
  checkContext(ctx);
  const nVocab = ctx.model.config.nVocab;
  prompts.forEach((p, i) => {
    checkPromptTokens(p.tokens, i, ctx);
    if (!Array.isArray(p.labelTokens) || p.labelTokens.length < 2)
      throw new OptionError('labels', `prompt ${i}: needs at least two label tokens`);
    for (const t of p.labelTokens)
      if (!Number.isInteger(t) || t < 0 || t >= nVocab) throw new OptionError('labels', `prompt ${i}: label token ${String(t)} is outside the vocabulary`);
  });
  const results: BatchClassifyRow[] = new Array(prompts.length);
  const stats = newStats(prompts.length);
  const t0 = performance.now();
  checkShareable(options.exit);
  let next = 0;
  const kind: JobKind<ClassJob> = {
    waiting: () => prompts.length - next,
    closed: () => true,
    admit(slot, now) {
      const index = next++;
      const p = prompts[index];
      const lensed = withLabelCandidates(requestPolicy(options.exit), p.labelTokens);
      const output = new LabelScores(p.labelTokens);
      return { ...newJob(index, p.tokens, slot, output, lensed && new ExitDecider(ctx, lensed), now), output };
    },
    advance: () => true,
    finish(job, now) {
      const { index, probs } = job.output.result();
      results[job.index] = {
        index: job.index,
        label: index,
        probs,
        exitLayer: job.group.layers,
        timings: { queuedMs: job.admittedAt - t0, ms: now - job.admittedAt },
      };
      onResult?.(results[job.index]);
    },
    cancelled: () => false,
    drop: () => undefined,
  };
  yield* schedule(ctx, kind, { compaction: options.compaction, aborted: options.aborted, kvFill: 'none' }, stats);
  return { results, stats };
}

/** Runs a batch generator to its end (for callers that do not interleave other work). */
export function runBatchToEnd<R>(gen: Generator<number[], BatchRun<R>>): BatchRun<R> {
  for (;;) {
    const step = gen.next();
    if (step.done) return step.value;
  }
}
