/**
 * Batched execution: many sequences together in one LlamaContext (one KV cache slot per sequence), with
 * AdaInfer early exit decided per sequence and row compaction between layers.
 *
 * Scheduling (continuous batching): the context's `sequences` slots are filled with prompts in input order;
 * a sequence that finishes frees its slot for the next prompt. Each step builds one batch of rows:
 *  - one row per decoding sequence (its last sampled token), then
 *  - whole prompts of the sequences still prefilling, in admission order, as long as the context's row
 *    capacity (`batchSize`) has room (a prompt that does not fit waits for a later step). A prompt longer than
 *    promptChunk = batchSize - slots rows runs in chunks of that size, one per step, and only its last chunk
 *    may exit early (as in Sequence: the decision is read at the prompt's last position).
 * The batch runs through LlamaContext.forwardRows(); after every checked layer each sequence's policy reads the
 * logit lens at that sequence's decision row (the prompt's last row, or its decode row). A sequence that exits
 * takes its token (or label probabilities) from that lens read at once, and all its rows leave the batch:
 * the continuing rows are moved to the front (hidden state, rowSeq, rowPos), so the remaining layers run on
 * fewer rows. With `compaction: false` exited rows stay in the batch (computed, ignored) until every row of
 * the step has exited — the baseline that measures what compaction gains; their K/V writes are redirected to a
 * scratch slot (the context's last sequence, which then holds no prompt), so results are identical either way.
 *
 * K/V of the layers an exit skipped (`kvFill`):
 *  - 'propagate' (default, CALM): after the step, the exit hidden state of every exited row computes the K/V of
 *    its skipped layers (LlamaContext.native.fillKv, K and V projections only). Exited rows are loaded sorted by
 *    exit depth, so the rows needing layer j are a prefix and each fillKv(j, n) call covers exactly them.
 *  - 'none' (the paper's): nothing is written; a later token of that sequence reads whatever the slot holds for
 *    those layers (zeros in a fresh context, an earlier prompt's entries in a reused slot). Exact only when one
 *    token is generated (classification, maxTokens 1).
 *  - 'recompute' is implemented for single sequences only (Session, lib/engine/sequence.ts): rejected here.
 *
 * Per-sequence results equal those of the same prompt run alone through Sequence on a fresh context (same
 * sampler seed, same policy, same kvFill): the native blocks compute every row independently of the other rows
 * of the batch (tested bit for bit), and the policy sees each sequence's own lens readings.
 *
 * Runs synchronously on the thread that owns the context; the generators yield after every step so that the
 * model worker can post finished results and let other requests in.
 */
import { fromNativeError } from '../bindings/native';
import { AdaInferError, ContextOverflowError, OptionError } from '../errors';
import { LensOptions, LensReader, LensReading } from '../exit/lens';
import { ExitPolicy, isCheckedLayer } from '../exit/policy';
import { LlamaContext } from '../model/llama';
import { StreamDecoder } from '../tokenizer/types';
import { ResolvedSampling, Sampler } from './sampling';
import type { StopReason } from './sequence';

export type BatchKvFill = 'none' | 'propagate';
export const BATCH_KV_FILL_MODES: readonly BatchKvFill[] = ['none', 'propagate'];

/** Checks a kvFill option for batch mode (default 'propagate'). */
export function checkBatchKvFill(kvFill: unknown): BatchKvFill {
  if (kvFill === undefined) return 'propagate';
  if (kvFill === 'recompute')
    throw new OptionError(
      'kvFill',
      "'recompute' is implemented for single sequences only (Session); batch mode supports 'none' and 'propagate'",
    );
  if (kvFill !== 'none' && kvFill !== 'propagate')
    throw new OptionError('kvFill', `must be 'none' or 'propagate' in batch mode, got ${String(kvFill)}`);
  return kvFill;
}

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
  /** Checked between steps; when it returns true the run throws an ABORTED error. */
  aborted?: () => boolean;
}

export interface BatchGenerateOptions extends BatchCommonOptions {
  maxTokens: number;
  /** Prompt i samples with seed `sampling.seed + i` (modulo 2^32) unless it has its own seed. */
  sampling: ResolvedSampling;
  stopAtEos?: boolean;
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

export interface BatchStats {
  prompts: number;
  steps: number;
  /** Σ over steps and layers of the rows that ran the layer (the work done, in row-layers). */
  rowLayers: number;
  /** The same at full depth without exits: Σ over steps of rows × nLayer. */
  rowLayersFull: number;
  /** Rows × layers of K/V propagation (fillKv). */
  fillKvRowLayers: number;
  /** Logit-lens reads of the exit policies. */
  lensReads: number;
  ms: number;
}

export interface BatchRun<R> {
  /** In input order. */
  results: R[];
  stats: BatchStats;
}

/** A text decoder per sequence (the tokenizer's streaming decoder). */
type Decoder = StreamDecoder;

// ---------------------------------------------------------------------------------------------------

/** The logit lens of one sequence: LensReader's reads, with candidates kept per sequence (the native
 * candidate buffer is shared by every row of the batch, so it is written before each candidate read). */
class RowLens {
  private readonly cands: Int32Array;
  private active = 0;
  private readonly fixed: number;
  private readonly topK: number;

  constructor(
    private readonly ctx: LlamaContext,
    private readonly mode: LensOptions['mode'],
    fixed: number[] | undefined,
    topK: number,
  ) {
    this.topK = topK;
    this.fixed = fixed ? fixed.length : 0;
    this.cands = new Int32Array(Math.max(this.fixed, topK, 1));
    if (fixed) this.cands.set(fixed);
  }

  begin(): void {
    this.active = this.fixed;
  }

  read(row: number, out: LensReading): LensReading {
    const c = this.ctx.native;
    if (this.mode === 'faithful') {
      c.logitLens(row, 1);
    } else {
      if (this.active === 0) {
        c.logitLens(row, this.topK);
        this.cands.set(c.lensIds.subarray(0, this.topK));
        this.active = this.topK;
      }
      c.lensCandidates.set(this.cands.subarray(0, this.active));
      c.logitLensCandidates(row, this.active, 1);
    }
    const f = c.lensFeatures;
    out.top1 = c.lensIds[0];
    out.p1 = f[0];
    out.p2 = f[1];
    out.gap = f[2];
    out.entropy = f[3];
    return out;
  }
}

/** State of one prompt while it is in the batch. */
interface Job {
  index: number;
  tokens: number[];
  slot: number;
  /** Prompt tokens evaluated so far. */
  fed: number;
  /** Positions in the cache (prompt + generated tokens evaluated). */
  pos: number;
  /** The next decode input (-1 while prefilling). */
  next: number;
  policy: ExitPolicy | undefined;
  lens: RowLens | undefined;
  // this step
  rowStart: number;
  rowCount: number;
  /** Tokens this step evaluates for the job (prompt chunk, or 1 when decoding). */
  chunk: number;
  decides: boolean;
  /** Layers run this step when it exited (0: did not exit). */
  exitLayers: number;
  stash: Float32Array | undefined;
  // timing
  admittedAt: number;
  firstAt: number;
}

interface Hooks<J extends Job> {
  /** An exit at `layers` layers: the lens logits of the job's decision row are ctx.lensLogits(). */
  onExit(job: J, layers: number, reading: LensReading): void;
  /** Full depth: native.logits holds the head output of the decision row. */
  onFull(job: J, logits: Float32Array): void;
  /** After the step: the job produced its output for this step. Returns true when it is finished. */
  afterOutput(job: J, now: number): boolean;
  finish(job: J, now: number): void;
}

function checkContext(ctx: LlamaContext): void {
  if (ctx.batchSize <= ctx.sequences)
    throw new OptionError(
      'batchSize',
      `a batch context needs more rows than sequences (rows ${ctx.batchSize}, sequences ${ctx.sequences}): one decode row per sequence, the rest for prompt chunks`,
    );
}

function checkPromptTokens(tokens: unknown, i: number, ctx: LlamaContext): number[] {
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

/**
 * The step loop shared by generation and classification. `admit` turns prompt i into a job (or undefined when
 * it needs no evaluation, e.g. maxTokens 0); finished jobs are yielded after each step.
 */
function* runBatch<J extends Job>(
  ctx: LlamaContext,
  count: number,
  admit: (index: number, slot: number, policy: ExitPolicy | undefined, now: number) => J | undefined,
  hooks: Hooks<J>,
  options: BatchCommonOptions & { kvFill: BatchKvFill },
  stats: BatchStats,
): Generator<number[], void> {
  const c = ctx.native;
  const nLayer = ctx.model.config.nLayer;
  const d = ctx.model.config.nEmbd;
  const capacity = ctx.batchSize;
  const compaction = options.compaction ?? true;
  const propagate = options.kvFill === 'propagate';
  const policyOf = slotPolicies(options.exit);
  const policies: (ExitPolicy | undefined)[] = [];
  const policyMade: boolean[] = [];
  // Without compaction, exited rows keep running: their K/V writes go to a scratch slot (the context's last
  // sequence), so that the cache holds exactly what it would with compaction (and kvFill 'none' stays 'none').
  const scratch = compaction ? -1 : ctx.sequences - 1;
  const slots = compaction ? ctx.sequences : ctx.sequences - 1;
  if (slots < 1) throw new OptionError('compaction', 'compaction: false needs a context with one more sequence than the batch (a scratch slot)');
  const freeSlots: number[] = [];
  for (let s = slots - 1; s >= 0; s--) freeSlots.push(s);
  /** Rows of one prompt chunk: what the decode rows of the other slots leave. */
  const promptChunk = capacity - slots;
  const live: J[] = [];
  let nextPrompt = 0;
  const reading: LensReading = { top1: -1, p1: 0, p2: 0, gap: 0, entropy: 0 };
  const t0 = performance.now();

  while (nextPrompt < count || live.length > 0) {
    if (options.aborted?.()) throw new AdaInferError('ABORTED', 'the batch was aborted');
    const now = performance.now();
    const finishedNow: number[] = [];
    // Admit prompts into free slots.
    while (freeSlots.length > 0 && nextPrompt < count) {
      const slot = freeSlots[freeSlots.length - 1];
      if (!policyMade[slot]) {
        policies[slot] = policyOf();
        policyMade[slot] = true;
      }
      const job = admit(nextPrompt++, slot, policies[slot], now);
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

    // Build the step: decode rows first, then prompt chunks.
    const step: J[] = [];
    let rows = 0;
    for (const job of live) {
      if (job.next < 0) continue;
      job.rowStart = rows;
      job.rowCount = 1;
      job.chunk = 1;
      job.decides = true;
      c.tokens[rows] = job.next;
      c.rowSeq[rows] = job.slot;
      c.rowPos[rows] = job.pos;
      rows++;
      step.push(job);
    }
    for (const job of live) {
      if (job.next >= 0) continue;
      // A prompt is never split across steps unless it is longer than promptChunk; then it runs in chunks of
      // promptChunk from its start (as Sequence with that batch size): the attention kernel's rounding depends
      // on how a sequence's rows are grouped, so equal grouping keeps results bit-identical.
      const n = Math.min(job.tokens.length - job.fed, promptChunk);
      if (n > capacity - rows) continue; // next step (decode rows never take more than slots - 1 rows from it)
      job.rowStart = rows;
      job.rowCount = n;
      job.chunk = n;
      job.decides = job.fed + n === job.tokens.length;
      for (let i = 0; i < n; i++) {
        c.tokens[rows + i] = job.tokens[job.fed + i];
        c.rowSeq[rows + i] = job.slot;
        c.rowPos[rows + i] = job.pos + i;
      }
      rows += n;
      step.push(job);
    }
    const deciders: J[] = [];
    for (const job of step) {
      job.exitLayers = 0;
      job.stash = undefined;
      if (job.decides && job.policy) {
        job.policy.begin();
        job.lens!.begin();
        deciders.push(job);
      }
    }

    // The layer loop with per-sequence exits and compaction.
    const stepRows = rows;
    let active = deciders.length;
    let lastRows = rows;
    const afterLayer =
      deciders.length === 0
        ? undefined
        : (layer: number, n: number): number => {
            stats.rowLayers += n;
            let exited = 0;
            for (const job of deciders) {
              if (job.exitLayers > 0 || !job.policy || !isCheckedLayer(job.policy.schedule, layer, nLayer)) continue;
              stats.lensReads++;
              const r = job.lens!.read(job.rowStart + job.rowCount - 1, reading);
              if (!job.policy.shouldExit(layer, r, nLayer)) continue;
              job.exitLayers = layer + 1;
              hooks.onExit(job, layer + 1, r);
              if (propagate) {
                job.stash = new Float32Array(job.rowCount * d);
                c.readHidden(job.rowStart, job.rowCount, job.stash);
              }
              exited++;
            }
            if (exited === 0) return (lastRows = n);
            active -= exited;
            if (!compaction) {
              // Baseline: the batch runs on until every row has exited; exited rows write to the scratch slot.
              for (const job of deciders)
                if (job.exitLayers === layer + 1) c.rowSeq.fill(scratch, job.rowStart, job.rowStart + job.rowCount);
              let allOut = active === 0;
              if (allOut) for (const job of step) if (job.exitLayers === 0) allOut = false;
              return (lastRows = allOut ? 0 : n);
            }
            let write = 0;
            for (const job of step) {
              if (job.exitLayers > 0) continue; // its rows leave the batch
              if (job.rowStart !== write) {
                c.moveHidden(write, job.rowStart, job.rowCount);
                c.rowSeq.copyWithin(write, job.rowStart, job.rowStart + job.rowCount);
                c.rowPos.copyWithin(write, job.rowStart, job.rowStart + job.rowCount);
                job.rowStart = write;
              }
              write += job.rowCount;
            }
            return (lastRows = write);
          };
    const layersRun = ctx.forwardRows(stepRows, afterLayer);
    if (afterLayer === undefined) stats.rowLayers += stepRows * nLayer;
    else if (layersRun === nLayer) stats.rowLayers += lastRows;
    stats.rowLayersFull += stepRows * nLayer;
    stats.steps++;

    // Full-depth outputs (before the buffer is reused for propagation).
    for (const job of step) {
      if (!job.decides || job.exitLayers > 0) continue;
      hooks.onFull(job, ctx.logits(job.rowStart + job.rowCount - 1));
    }

    // K/V of the skipped layers from the exit hidden states, grouped by exit depth.
    if (propagate) {
      const exited = step.filter((j) => j.stash !== undefined).sort((a, b) => a.exitLayers - b.exitLayers);
      if (exited.length > 0) {
        let r = 0;
        const prefixEnd: number[] = []; // rows of jobs with exitLayers <= layer
        for (const job of exited) {
          c.writeHidden(r, job.stash!.length / d, job.stash!);
          for (let i = 0; i < job.stash!.length / d; i++) {
            c.rowSeq[r + i] = job.slot;
            c.rowPos[r + i] = job.pos + i;
          }
          r += job.stash!.length / d;
          prefixEnd.push(r);
        }
        let k = 0;
        for (let layer = exited[0].exitLayers; layer < nLayer; layer++) {
          while (k < exited.length && exited[k].exitLayers <= layer) k++;
          const n = prefixEnd[k - 1];
          try {
            c.fillKv(layer, n);
          } catch (err) {
            throw fromNativeError(err);
          }
          stats.fillKvRowLayers += n;
        }
        for (const job of exited) job.stash = undefined;
      }
    }

    // Advance the jobs.
    const end = performance.now();
    for (const job of step) {
      if (job.next < 0) job.fed += job.chunk; // a prompt chunk
      job.pos += job.chunk;
      if (!job.decides) continue;
      if (job.firstAt < 0) job.firstAt = end;
      if (hooks.afterOutput(job, end)) {
        hooks.finish(job, end);
        live.splice(live.indexOf(job), 1);
        freeSlots.push(job.slot);
        finishedNow.push(job.index);
      }
    }
    stats.ms = performance.now() - t0;
    yield finishedNow;
  }
  stats.ms = performance.now() - t0;
}

function newStats(prompts: number): BatchStats {
  return { prompts, steps: 0, rowLayers: 0, rowLayersFull: 0, fillKvRowLayers: 0, lensReads: 0, ms: 0 };
}

function newJob(index: number, tokens: number[], slot: number, now: number): Job {
  return {
    index,
    tokens,
    slot,
    fed: 0,
    pos: 0,
    next: -1,
    policy: undefined,
    lens: undefined,
    rowStart: 0,
    rowCount: 0,
    chunk: 0,
    decides: false,
    exitLayers: 0,
    stash: undefined,
    admittedAt: now,
    firstAt: -1,
  };
}

function lensFor(ctx: LlamaContext, policy: ExitPolicy, fixed: number[] | undefined): RowLens {
  const lens: LensOptions = fixed && policy.lens.mode === 'fast' ? { mode: 'fast', candidates: fixed } : policy.lens;
  const checked = new LensReader(ctx, lens); // validates the options as a single-sequence run would
  return new RowLens(ctx, lens.mode, lens.mode === 'fast' ? lens.candidates : undefined, checked.options.topK ?? 16);
}

// ---------------------------------------------------------------------------------------------------
// Generation

interface GenJob extends Job {
  maxTokens: number;
  sampler: Sampler;
  decoder: Decoder;
  out: number[];
  outLayers: number[];
  text: string;
  /** The token of this step (set at an exit or at full depth), -1 before. */
  token: number;
  stopReason: StopReason;
  result?: BatchSequenceResult;
}

/**
 * Generates a continuation of every prompt. Yields, after each step, the indices of the prompts that finished
 * in it (their results are in the returned run and available through `resultOf`); returns every result in
 * input order.
 */
export function* generateBatch(
  ctx: LlamaContext,
  prompts: BatchPrompt[],
  options: BatchGenerateOptions,
  onResult?: (result: BatchSequenceResult) => void,
): Generator<number[], BatchRun<BatchSequenceResult>> {
  checkContext(ctx);
  const kvFill = checkBatchKvFill(options.kvFill);
  const { maxTokens } = options;
  if (!Number.isInteger(maxTokens) || maxTokens < 0) throw new OptionError('maxTokens', `must be an integer >= 0, got ${String(maxTokens)}`);
  prompts.forEach((p, i) => {
    checkPromptTokens(p.tokens, i, ctx);
    if (p.maxTokens !== undefined && (!Number.isInteger(p.maxTokens) || p.maxTokens < 0))
      throw new OptionError('maxTokens', `prompt ${i}: must be an integer >= 0, got ${String(p.maxTokens)}`);
    if (p.seed !== undefined && (!Number.isInteger(p.seed) || p.seed < 0 || p.seed > 0xffffffff))
      throw new OptionError('seed', `prompt ${i}: must be an integer in [0, 2^32), got ${String(p.seed)}`);
  });
  const tokenizer = ctx.model.tokenizer;
  const stopAtEos = options.stopAtEos ?? true;
  const nLayer = ctx.model.config.nLayer;
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
      const text = job.text + job.decoder.flush();
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

  const hooks: Hooks<GenJob> = {
    onExit(job, _layers, r) {
      // As Sequence.next(): the exit layer's lens logits (faithful), or its top-1 (fast: candidates only).
      job.token = job.policy!.lens.mode === 'fast' ? r.top1 : job.sampler.sample(ctx.lensLogits());
    },
    onFull(job, logits) {
      job.token = job.sampler.sample(logits);
    },
    afterOutput(job) {
      const token = job.token;
      const layers = job.exitLayers > 0 ? job.exitLayers : nLayer;
      if (stopAtEos && tokenizer.eogIds.has(token)) {
        job.stopReason = 'eos';
        return true;
      }
      job.out.push(token);
      job.outLayers.push(layers);
      job.text += job.decoder.push(token);
      if (job.out.length >= job.maxTokens) {
        job.stopReason = 'maxTokens';
        return true;
      }
      if (job.pos >= ctx.contextSize) {
        job.stopReason = 'contextFull';
        return true;
      }
      job.next = token;
      return false;
    },
    finish(job, now) {
      finishResult(job, job.index, now);
    },
  };

  const admit = (index: number, slot: number, policy: ExitPolicy | undefined, now: number): GenJob | undefined => {
    const p = prompts[index];
    const max = p.maxTokens ?? maxTokens;
    if (max === 0) {
      finishResult(undefined, index, now);
      return undefined;
    }
    const seed = p.seed ?? (options.sampling.seed + index) % 0x100000000;
    const job: GenJob = {
      ...newJob(index, p.tokens, slot, now),
      maxTokens: max,
      sampler: new Sampler({ ...options.sampling, seed }),
      decoder: tokenizer.createDecoder({ keepLeadingSpace: true }),
      out: [],
      outLayers: [],
      text: '',
      token: -1,
      stopReason: 'maxTokens',
    };
    if (policy) {
      job.policy = policy;
      job.lens = lensFor(ctx, policy, undefined);
    }
    return job;
  };

  yield* runBatch(ctx, prompts.length, admit, hooks, { ...options, kvFill }, stats);
  return { results, stats };
}

// ---------------------------------------------------------------------------------------------------
// Classification

interface ClassJob extends Job {
  labelTokens: number[];
  z: number[];
}

/**
 * Single-token classification of every prompt (as Sequence.classify): the label whose token has the highest
 * logit at the prompt's last position, at the exit layer's lens when the policy stops early. Fast lenses use
 * the prompt's label tokens as candidates. K/V of skipped layers are never needed (nothing follows).
 */
export function* classifyBatch(
  ctx: LlamaContext,
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
  const nLayer = ctx.model.config.nLayer;
  const results: BatchClassifyRow[] = new Array(prompts.length);
  const stats = newStats(prompts.length);
  const t0 = performance.now();
  const hooks: Hooks<ClassJob> = {
    onExit(job) {
      const logits = ctx.lensLogits();
      job.z = job.labelTokens.map((t) => logits[t]);
    },
    onFull(job, logits) {
      job.z = job.labelTokens.map((t) => logits[t]);
    },
    afterOutput: () => true,
    finish(job, now) {
      const z = job.z;
      const max = Math.max(...z);
      const e = z.map((v) => Math.exp(v - max));
      const sum = e.reduce((a, b) => a + b, 0);
      let label = 0;
      for (let i = 1; i < z.length; i++) if (z[i] > z[label]) label = i;
      results[job.index] = {
        index: job.index,
        label,
        probs: e.map((v) => v / sum),
        exitLayer: job.exitLayers > 0 ? job.exitLayers : nLayer,
        timings: { queuedMs: job.admittedAt - t0, ms: now - job.admittedAt },
      };
      onResult?.(results[job.index]);
    },
  };
  const admit = (index: number, slot: number, policy: ExitPolicy | undefined, now: number): ClassJob => {
    const p = prompts[index];
    const job: ClassJob = { ...newJob(index, p.tokens, slot, now), labelTokens: p.labelTokens, z: [] };
    if (policy) {
      job.policy = policy;
      job.lens = lensFor(ctx, policy, p.labelTokens);
    }
    return job;
  };
  yield* runBatch(ctx, prompts.length, admit, hooks, { ...options, kvFill: 'none' }, stats);
  return { results, stats };
}

/** Runs a batch generator to its end (for callers that do not interleave other work). */
export function runBatchToEnd<R>(gen: Generator<number[], BatchRun<R>>): BatchRun<R> {
  for (;;) {
    const step = gen.next();
    if (step.done) return step.value;
  }
}
