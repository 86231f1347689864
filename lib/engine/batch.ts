/**
 * Batched execution: many sequences together in one TransformerContext (one KV cache slot per sequence), with
 * AdaInfer early exit decided per sequence and row compaction between layers.
 *
 * Scheduling (continuous batching): the context's `sequences` slots are filled with prompts in input order;
 * a sequence that finishes frees its slot for the next prompt. Each step holds:
 *  - one row per decoding sequence (its last sampled token), then
 *  - whole prompts of the sequences still prefilling, in admission order, as long as the context's row
 *    capacity (`batchSize`) has room (a prompt that does not fit waits for a later step). A prompt longer than
 *    promptChunk = batchSize - slots rows runs in chunks of that size, one per step, and only its last chunk
 *    may exit early (as in Sequence: the decision is read at the prompt's last position).
 * The step engine (lib/engine/step.ts) runs each step: per-sequence exit decisions (one ExitDecider per
 * sequence), row compaction (or, with `compaction: false`, the baseline that keeps exited rows computing
 * into a scratch slot — the context's last sequence, which then holds no prompt), and the K/V of skipped
 * layers (`kvFill` 'propagate' or 'none'; 'recompute' is single-sequence only: Session).
 *
 * Per-sequence results equal those of the same prompt run alone through Sequence on a fresh context (same
 * sampler seed, same policy, same kvFill): the native blocks compute every row independently of the other rows
 * of the batch (tested bit for bit), and each sequence's decider sees its own lens readings.
 *
 * Runs synchronously on the thread that owns the context; the generators yield after every step so that the
 * model worker can post finished results and let other requests in.
 */
import { AbortError, ContextOverflowError, OptionError } from '../errors';
import { ExitDecider } from '../exit/decider';
import { ExitPolicy, withLabelCandidates } from '../exit/policy';
import { TransformerContext } from '../model/transformer';
import { StreamDecoder } from '../tokenizer/types';
import { BatchKvFill, checkBatchKvFill } from './options';
import { ResolvedSampling, Sampler } from './sampling';
import type { StopReason } from './sequence';
import { StopMatcher } from './stop';
import { LabelScores, newRowGroup, NextToken, RowGroup, RowOutput, StepEngine, StepStats } from './step';

export type { BatchKvFill } from './options';

/**
 * The exit policy of a batch: a policy object shared by every slot (stateless kinds: never, threshold, svm,
 * svm-rbf), or a factory called once per slot (needed for 'crf', whose classifier keeps a forward message
 * across the layers of one token).
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
  admittedAt: number;
  /** When the step that read its first output ended; -1 before. */
  firstAt: number;
}

/** What generation and classification do with their prompts; the scheduler does the rest. */
interface JobKind<J extends Job> {
  /** Prompt `index` as a job in `slot`, or undefined when it needs no evaluation (it is then finished). */
  admit(index: number, slot: number, policy: ExitPolicy | undefined, now: number): J | undefined;
  /** After a step that read the job's output: true when the job is finished (then `finish` follows). */
  advance(job: J, now: number): boolean;
  finish(job: J, now: number): void;
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

/** Makes the policy of a slot (a new one per slot from a factory, else the shared one); undefined: full depth. */
function slotPolicies(exit: BatchExit | undefined): () => ExitPolicy | undefined {
  if (exit === undefined) return () => undefined;
  if (typeof exit === 'function') {
    return () => {
      const p = exit();
      return p.kind === 'never' ? undefined : p;
    };
  }
  if (exit.kind === 'crf')
    throw new OptionError('exit', 'a CRF policy keeps state across the layers of a token: pass a factory (() => policy) so that each batch slot has its own');
  const shared = exit.kind === 'never' ? undefined : exit;
  return () => shared;
}

function newJob(index: number, tokens: number[], slot: number, output: RowOutput, decider: ExitDecider | undefined, now: number): Job {
  return { index, tokens, group: newRowGroup(slot), output, decider, fed: 0, pos: 0, decodeInput: [], admittedAt: now, firstAt: -1 };
}

/**
 * The step loop shared by generation and classification: admits prompts into free slots, builds each step
 * (decode rows, then prompt chunks), runs it on the step engine and advances the jobs. Yields, after each step,
 * the indices of the prompts finished in it.
 */
function* schedule<J extends Job>(
  ctx: TransformerContext,
  count: number,
  kind: JobKind<J>,
  options: BatchCommonOptions & { kvFill: BatchKvFill },
  stats: BatchStats,
): Generator<number[], void> {
  const compaction = options.compaction ?? true;
  // Without compaction, exited rows keep running: their K/V writes go to a scratch slot (the context's last
  // sequence), so that the cache holds exactly what it would with compaction (and kvFill 'none' stays 'none').
  const slots = compaction ? ctx.sequences : ctx.sequences - 1;
  if (slots < 1) throw new OptionError('compaction', 'compaction: false needs a context with one more sequence than the batch (a scratch slot)');
  const engine = new StepEngine(ctx, { kvFill: options.kvFill, compaction, scratchSlot: compaction ? -1 : ctx.sequences - 1 });
  const policyOf = slotPolicies(options.exit);
  const policies: (ExitPolicy | undefined)[] = [];
  const freeSlots: number[] = [];
  for (let s = slots - 1; s >= 0; s--) freeSlots.push(s);
  /** Rows of one prompt chunk: what the decode rows of the other slots leave. */
  const promptChunk = ctx.batchSize - slots;
  const live: J[] = [];
  const step: J[] = [];
  const groups: RowGroup[] = [];
  let nextPrompt = 0;
  const t0 = performance.now();

  while (nextPrompt < count || live.length > 0) {
    if (options.aborted?.()) throw new AbortError('the batch was aborted');
    const finishedNow: number[] = [];
    // Admit prompts into free slots.
    while (freeSlots.length > 0 && nextPrompt < count) {
      const slot = freeSlots[freeSlots.length - 1];
      if (!(slot in policies)) policies[slot] = policyOf();
      const job = kind.admit(nextPrompt++, slot, policies[slot], performance.now());
      if (job) {
        freeSlots.pop();
        live.push(job);
      } else {
        finishedNow.push(nextPrompt - 1);
      }
    }
    if (live.length === 0) {
      if (finishedNow.length > 0) yield finishedNow;
      continue;
    }

    buildStep(live, step, groups, promptChunk, ctx.batchSize);
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
      if (kind.advance(job, end)) {
        stats.lensReads += job.decider?.lensReads ?? 0;
        kind.finish(job, end);
        live.splice(live.indexOf(job), 1);
        freeSlots.push(g.slot);
        finishedNow.push(job.index);
      }
    }
    stats.ms = performance.now() - t0;
    yield finishedNow;
  }
  stats.ms = performance.now() - t0;
}

/** The rows of the next step: one per decoding job, then prompt chunks while they fit (`step`, `groups`: out). */
function buildStep<J extends Job>(live: J[], step: J[], groups: RowGroup[], promptChunk: number, capacity: number): void {
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
  for (const job of live) if (job.decodeInput.length > 0) add(job, job.decodeInput, 0, 1, true);
  for (const job of live) {
    if (job.decodeInput.length > 0) continue;
    // A prompt is never split across steps unless it is longer than promptChunk; then it runs in chunks of
    // promptChunk from its start (as Sequence with that batch size): the attention kernel's rounding depends
    // on how a sequence's rows are grouped, so equal grouping keeps results bit-identical.
    const n = Math.min(job.tokens.length - job.fed, promptChunk);
    if (n > capacity - rows) continue; // next step (decode rows never take more than slots - 1 rows from it)
    add(job, job.tokens, job.fed, n, job.fed + n === job.tokens.length);
  }
}

function newStats(prompts: number): BatchStats {
  return { prompts, steps: 0, rowLayers: 0, rowLayersFull: 0, fillKvRowLayers: 0, lensReads: 0, ms: 0 };
}

// ---------------------------------------------------------------------------------------------------
// Generation

interface GenJob extends Job {
  output: NextToken;
  maxTokens: number;
  decoder: StreamDecoder;
  out: number[];
  outLayers: number[];
  text: string;
  stopReason: StopReason;
  stopper: StopMatcher | undefined;
  stopString: string | undefined;
}

/**
 * Generates a continuation of every prompt. Yields, after each step, the indices of the prompts that finished
 * in it (their results are in the returned run and available through `resultOf`); returns every result in
 * input order.
 */
export function* generateBatch(
  ctx: TransformerContext,
  prompts: BatchPrompt[],
  options: BatchGenerateOptions,
  onResult?: (result: BatchSequenceResult) => void,
): Generator<number[], BatchRun<BatchSequenceResult>> {
  checkContext(ctx);
  const kvFill = checkBatchKvFill(options.kvFill);
  prompts.forEach((p, i) => checkPromptTokens(p.tokens, i, ctx));
  const tokenizer = ctx.model.tokenizer;
  const stopAtEos = options.stopAtEos ?? true;
  const stop = options.stop && options.stop.length > 0 ? options.stop : undefined;
  const results: BatchSequenceResult[] = new Array(prompts.length);
  const stats = newStats(prompts.length);
  const t0 = performance.now();

  const finishResult = (job: GenJob | undefined, index: number, now: number) => {
    const prompt = prompts[index];
    if (!job) {
      results[index] = {
        index,
        text: '',
        tokens: [],
        exitLayers: [],
        promptTokens: prompt.tokens.length,
        stopReason: 'maxTokens',
        timings: { queuedMs: now - t0, prefillMs: 0, decodeMs: 0, prefillTokensPerSecond: 0, decodeTokensPerSecond: 0 },
      };
    } else {
      const held = job.stopper?.flush() ?? '';
      const rest = job.decoder.flush();
      const text = job.text + held + (job.stopReason === 'stop' ? '' : rest);
      const prefillMs = job.firstAt - job.admittedAt;
      const decodeMs = now - job.firstAt;
      const decoded = Math.max(0, job.out.length - 1);
      results[index] = {
        index,
        text,
        tokens: job.out,
        exitLayers: job.outLayers,
        promptTokens: job.tokens.length,
        stopReason: job.stopReason,
        ...(job.stopString !== undefined && { stopString: job.stopString }),
        timings: {
          queuedMs: job.admittedAt - t0,
          prefillMs,
          decodeMs,
          prefillTokensPerSecond: prefillMs > 0 ? (job.tokens.length * 1000) / prefillMs : 0,
          decodeTokensPerSecond: decoded > 0 && decodeMs > 0 ? (decoded * 1000) / decodeMs : 0,
        },
      };
    }
    onResult?.(results[index]);
  };

  const kind: JobKind<GenJob> = {
    admit(index, slot, policy, now) {
      const p = prompts[index];
      const max = p.maxTokens ?? options.maxTokens;
      if (max === 0) {
        finishResult(undefined, index, now);
        return undefined;
      }
      const seed = p.seed ?? (options.sampling.seed + index) % 0x100000000;
      const sampler = new Sampler({ ...options.sampling, seed });
      // The repetition penalties see the prompt, then each generated token.
      if (sampler.penalties) for (const t of p.tokens) sampler.accept(t);
      const output = new NextToken(sampler);
      return {
        ...newJob(index, p.tokens, slot, output, policy && new ExitDecider(ctx, policy), now),
        output,
        maxTokens: max,
        decoder: tokenizer.createDecoder({ keepLeadingSpace: true }),
        out: [],
        outLayers: [],
        text: '',
        stopReason: 'maxTokens',
        stopper: stop ? new StopMatcher(stop) : undefined,
        stopString: undefined,
      };
    },
    advance(job) {
      const token = job.output.token;
      if (stopAtEos && tokenizer.eogIds.has(token)) {
        job.stopReason = 'eos';
        return true;
      }
      job.out.push(token);
      job.outLayers.push(job.group.layers);
      job.output.sampler.accept(token);
      const piece = job.decoder.push(token);
      if (job.stopper) {
        const pushed = job.stopper.push(piece);
        job.text += pushed.text;
        if (pushed.stop !== undefined) {
          job.stopString = pushed.stop;
          job.stopReason = 'stop';
          return true;
        }
      } else {
        job.text += piece;
      }
      if (job.out.length >= job.maxTokens) {
        job.stopReason = 'maxTokens';
        return true;
      }
      if (job.pos >= ctx.contextSize) {
        job.stopReason = 'contextFull';
        return true;
      }
      job.decodeInput[0] = token;
      return false;
    },
    finish(job, now) {
      finishResult(job, job.index, now);
    },
  };

  yield* schedule(ctx, prompts.length, kind, { ...options, kvFill }, stats);
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
  const kind: JobKind<ClassJob> = {
    admit(index, slot, policy, now) {
      const p = prompts[index];
      const lensed = withLabelCandidates(policy, p.labelTokens);
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
  };
  yield* schedule(ctx, prompts.length, kind, { ...options, kvFill: 'none' }, stats);
  return { results, stats };
}

/** Runs a batch generator to its end (for callers that do not interleave other work). */
export function runBatchToEnd<R>(gen: Generator<number[], BatchRun<R>>): BatchRun<R> {
  for (;;) {
    const step = gen.next();
    if (step.done) return step.value;
  }
}
