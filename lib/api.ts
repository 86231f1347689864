/**
 * The programmatic API. Every heavy call runs on a worker thread that owns the model, so the caller's event
 * loop keeps running while a model loads or generates.
 *
 *   const model = await loadModel('model.gguf', { threads: 4 });
 *   const session = await model.createSession();
 *   const { text } = await session.generate('Once upon a time', { maxTokens: 64, temperature: 0 });
 *   for await (const { text } of session.stream('Once upon a time')) process.stdout.write(text);
 *   await session.dispose(); await model.dispose();
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { KERNEL_VARIANTS, KernelVariant, native } from './bindings/native';
import { BackendChoice, BACKENDS } from './model/transformer';
import { AbortError, AdaInferError, deserializeError, ModelFileError, OptionError } from './errors';
import {
  BenchRequest,
  BenchResult,
  ModelInfo,
  ClassifyResult,
  ExitSpec,
  SpeculativeSpec,
  Request,
  ResponseMessage,
  THRESHOLD_SPEC_KEYS,
  WorkerGenerateOptions,
} from './engine/protocol';
import { ResolvedSampling, resolveSampling, SamplingOptions } from './engine/sampling';
import { checkStop } from './engine/stop';
import { ChatTemplate } from './chat/template';
import { ChatSession } from './chat/session';
import type { BatchSequenceResult } from './engine/batch';
import type {
  BatchClassifyItem,
  BatchClassifyResult,
  BatchGenerateResult,
  BatchPromptSpec,
  WorkerBatchGenerateOptions,
  WorkerBatchOptions,
  WorkerBatchSubmitOptions,
} from './engine/protocol';
import { SequenceResult, TokenEvent } from './engine/sequence';
import {
  BatchKvFill,
  checkBatchKvFill,
  checkBoolean,
  checkKnownOptions,
  checkKvFill,
  checkLabels,
  checkMaxTokens,
  checkPositiveInt,
  checkSeed,
  checkSpeculative,
  KvFill,
  optionNames,
} from './engine/options';

export type { ModelInfo, BenchResult, ClassifyResult, ExitSpec } from './engine/protocol';
export type { BatchClassifyItem, BatchClassifyResult, BatchGenerateResult, BatchPromptSpec } from './engine/protocol';
export type { BatchSequenceResult, BatchStats, BatchTimings } from './engine/batch';
export type { TokenEvent, StopReason, Timings, SpeculativeStats } from './engine/sequence';
export type { SpeculativeSpec } from './engine/protocol';
export type { BatchKvFill, KvFill } from './engine/options';
export type { KernelVariant } from './bindings/native';

/** The bundled default model (trained for this project with an early-exit loss). */
export const DEFAULT_MODEL = path.resolve(__dirname, '..', '..', 'models', 'adainfer-tinystories-10L-ee.f16.gguf');

export interface ModelOptions {
  /** Threads for the kernels of every session (default: physical cores). */
  threads?: number;
  /** Kernel variant (default: the best this CPU runs). */
  kernels?: KernelVariant;
  /**
   * Where the blocks run (default 'auto'): 'auto' uses a CUDA device when one is usable and the model's weight
   * types have CUDA kernels, else the CPU; 'cuda' insists (BACKEND_UNAVAILABLE if it cannot); 'cpu' never
   * touches a GPU. `systemInfo().cuda` says what was found.
   */
  backend?: BackendChoice;
  /** CUDA device index (default 0). */
  device?: number;
}

export interface SessionOptions {
  /** KV cache positions (default: the model's context length, at most 2048). */
  contextSize?: number;
  /** Prompt tokens per native call (default 256). */
  batchSize?: number;
  /** Overrides the model's thread count for this session. */
  threads?: number;
  /**
   * K/V of the layers an early exit skipped (default 'propagate'): 'none' (the paper's: nothing is written, so a
   * later token reads at a skipped layer what that cache row last held — this session's earlier K/V at that
   * position, from another prompt too, or zeros in a fresh session; positions from the first exit on are never
   * reused as a prompt prefix), 'propagate' (CALM: K/V projections of the exit state) or 'recompute' (exact:
   * skipped positions rejoin later tokens' batches; sets the batch size to the context size).
   */
  kvFill?: KvFill;
}

export interface GenerateOptions extends SamplingOptions {
  /** Tokens to generate at most (default 128). */
  maxTokens?: number;
  /** Stop at an end-of-generation token (EOS, and end-of-turn tokens such as <|im_end|>, <|eot_id|>; default true). */
  stopAtEos?: boolean;
  /**
   * Stop strings: the generation ends where its text first contains one (across token boundaries); the text ends
   * before it, stopReason is 'stop' and `stopString` names it. A stream holds back text that could be the start
   * of one until the next token rules it out.
   */
  stop?: string[];
  /** Prepend BOS when the tokenizer asks for it (default true). */
  addBos?: boolean;
  /** A text prompt's control-token texts (`<|im_start|>`, `</s>`, ...) become those tokens (default false: plain text). */
  parseSpecial?: boolean;
  /** Cancels the generation: the call (or the stream) rejects with an AbortError (code 'ABORTED'). */
  signal?: AbortSignal;
  /**
   * Early exit (default 'never'): an exit file made by `adainfer train-exit` for this model, or
   * { kind: 'threshold', feature: 'p1' | 'gap', value, minLayer?, checkEvery?, mode? }.
   * Each token's layers are reported in `exitLayers`.
   */
  exit?: ExitSpec;
  /**
   * Self-speculative decoding (not with `exit`): tokens drafted by the first layers — `draft` is `{ layer: n }`,
   * an exit file or a threshold spec (its policy decides each draft's depth) — up to `maxDraft` (default 4) at a
   * time, checked together by the whole model. Greedy: the output is the verifier's greedy output (README);
   * sampling: speculative sampling, the full model's distribution. `adaptive` (default on) ends a round at an
   * unsure draft and decodes plainly while speculation measures slower (a verdict the session's later generations,
   * and a batch's requests, share). The result's `speculative` reports it.
   */
  speculative?: SpeculativeSpec;
}

/** Options of Model.createChatSession: the session's, the system prompt and the template. */
export interface ChatSessionOptions extends SessionOptions {
  /** The first message of the history, with role 'system'. */
  systemPrompt?: string;
  /**
   * The chat template: Jinja text or a built-in name (chatml, llama3, llama2); default: the model's own
   * (NO_CHAT_TEMPLATE when it has none).
   */
  template?: string;
}

export interface ClassifyOptions {
  addBos?: boolean;
  exit?: ExitSpec;
  /** Cancels the classification (checked between layers): the call rejects with an AbortError. */
  signal?: AbortSignal;
}

/** Options of Model.generateBatch / classifyBatch (lib/engine/batch.ts). */
export interface BatchOptions {
  /** Sequences run together, one KV cache slot each (default 16). */
  batchSize?: number;
  /** Positions per sequence (default: the longest prompt plus its maxTokens, at most the model's context). */
  contextSize?: number;
  /** Overrides the model's thread count for this batch. */
  threads?: number;
  addBos?: boolean;
  /** Early exit, as for Session.generate (an exit file gives each batch slot its own policy instance). */
  exit?: ExitSpec;
  /** Remove exited rows from the batch between layers (default true); false keeps them computing, ignored. */
  compaction?: boolean;
  /** Stops the batch between two steps: the call rejects with an AbortError (results already passed to onResult stay). */
  signal?: AbortSignal;
}

export interface GenerateBatchOptions extends BatchOptions, SamplingOptions {
  /** Tokens to generate at most per prompt (default 128; a prompt's own maxTokens wins). */
  maxTokens?: number;
  stopAtEos?: boolean;
  /** Stop strings, as Session.generate's. */
  stop?: string[];
  /** As Session.generate's. */
  parseSpecial?: boolean;
  /** K/V of the layers an exit skipped (default 'propagate'); 'recompute' is single-sequence only. */
  kvFill?: BatchKvFill;
  /**
   * Self-speculative decoding of every prompt, as Session.generate's (not with `exit`; a draft exit file must not
   * be a CRF): each sequence drafts and verifies on its own, its steps shared with the other sequences' rows, and
   * its result equals the same prompt generated alone with these options. `maxDraft` is at most
   * (slots + 512) / slots − 1, slots = min(batchSize, prompts) (every sequence's verification fits one step).
   */
  speculative?: SpeculativeSpec;
  onResult?: (result: BatchSequenceResult) => void;
}

export interface ClassifyBatchOptions extends BatchOptions {
  onResult?: (result: BatchClassifyItem) => void;
}

/** Options of Model.openBatch: a continuous batch that takes requests while it runs (lib/engine/batch.ts OpenBatch). */
export interface OpenBatchOptions {
  /** Requests decoded together, one KV cache slot each (default 16); more wait for a free slot. */
  slots?: number;
  /** Positions per request, prompt and generated tokens (default: the model's context length, at most 2048). */
  contextSize?: number;
  /** Overrides the model's thread count for this batch. */
  threads?: number;
  /** K/V of the layers an exit skipped (default 'propagate'). */
  kvFill?: BatchKvFill;
  /** Remove exited rows from the batch between layers (default true). */
  compaction?: boolean;
  /** Exit files the requests may name: a fast lens's top-k sizes the batch's lens buffer when it opens. */
  exitFiles?: string[];
}

/** One request of a ContinuousBatch: its own sampling, limit and exit policy. */
export interface BatchRequestOptions extends SamplingOptions {
  /** Tokens to generate at most (default 128). */
  maxTokens?: number;
  stopAtEos?: boolean;
  /** Stop strings, as Session.generate's (token events hold back a possible start of one, as a Session stream does). */
  stop?: string[];
  addBos?: boolean;
  /** As Session.generate's. */
  parseSpecial?: boolean;
  /** This request's early exit, as for Session.generate (an exit file gives it its own policy instance). */
  exit?: ExitSpec;
  /** This request's self-speculative decoding, as Model.generateBatch's. */
  speculative?: SpeculativeSpec;
  /** Cancels the request: it leaves the batch at the next step (its slot is free), and rejects with an AbortError. */
  signal?: AbortSignal;
}

/** A submitted request: its token events as they are sampled, and its result. */
export interface BatchRequestStream extends AsyncIterableIterator<TokenEvent> {
  /** The request's result (rejects with an AbortError when cancelled); leaving the loop early cancels it. */
  readonly result: Promise<BatchSequenceResult>;
}

export interface GenerateResult extends SequenceResult {
  timings: SequenceResult['timings'] & { loadMs: number };
}

/** Session.stream / ChatSession.stream: token events, then (done: true) the generation's result. */
export type GenerationStream = AsyncIterableIterator<TokenEvent, GenerateResult | undefined>;

// Every options object of the API, by name: a key that is not one of these is refused (plain JavaScript has no
// compiler to catch `{ maxTokenz: 5 }`).
const MODEL_OPTIONS = optionNames<ModelOptions>({ threads: true, kernels: true, backend: true, device: true });
const SESSION_OPTIONS = optionNames<SessionOptions>({ contextSize: true, batchSize: true, threads: true, kvFill: true });
const SAMPLING_OPTIONS = optionNames<SamplingOptions>({
  ...{ temperature: true, topK: true, topP: true, seed: true },
  ...{ repeatPenalty: true, repeatLastN: true, presencePenalty: true, frequencyPenalty: true },
});
const GENERATE_OPTIONS = optionNames<GenerateOptions>({
  ...(Object.fromEntries(SAMPLING_OPTIONS.map((k) => [k, true])) as Record<keyof SamplingOptions, true>),
  ...{ maxTokens: true, stopAtEos: true, stop: true, addBos: true, parseSpecial: true, signal: true, exit: true, speculative: true },
});
const CHAT_SESSION_OPTIONS = optionNames<ChatSessionOptions>({ contextSize: true, batchSize: true, threads: true, kvFill: true, systemPrompt: true, template: true });
const CHAT_SEND_OPTIONS = GENERATE_OPTIONS.filter((k) => k !== 'addBos' && k !== 'parseSpecial');
const CLASSIFY_OPTIONS = optionNames<ClassifyOptions>({ addBos: true, exit: true, signal: true });
const BATCH_OPTIONS = { batchSize: true, contextSize: true, threads: true, addBos: true, exit: true, compaction: true, signal: true } as const;
const GENERATE_BATCH_OPTIONS = optionNames<GenerateBatchOptions>({
  ...BATCH_OPTIONS,
  ...(Object.fromEntries(SAMPLING_OPTIONS.map((k) => [k, true])) as Record<keyof SamplingOptions, true>),
  ...{ maxTokens: true, stopAtEos: true, stop: true, parseSpecial: true, kvFill: true, speculative: true, onResult: true },
});
const CLASSIFY_BATCH_OPTIONS = optionNames<ClassifyBatchOptions>({ ...BATCH_OPTIONS, onResult: true });
const OPEN_BATCH_OPTIONS = optionNames<OpenBatchOptions>({ slots: true, contextSize: true, threads: true, kvFill: true, compaction: true, exitFiles: true });
const BATCH_REQUEST_OPTIONS = optionNames<BatchRequestOptions>({
  ...(Object.fromEntries(SAMPLING_OPTIONS.map((k) => [k, true])) as Record<keyof SamplingOptions, true>),
  ...{ maxTokens: true, stopAtEos: true, stop: true, addBos: true, parseSpecial: true, exit: true, speculative: true, signal: true },
});
const TOKENIZE_OPTIONS = ['addSpecial', 'parseSpecial'] as const;
const PROMPT_SPEC_KEYS = ['prompt', 'maxTokens', 'seed'] as const;

/** An exit spec's object form has only the keys of a threshold spec (the rest is checked by the worker). */
function checkExitSpec(exit: unknown): void {
  if (exit !== null && typeof exit === 'object' && !Array.isArray(exit)) checkKnownOptions(exit, THRESHOLD_SPEC_KEYS, 'a threshold exit spec');
}

/** The rejection of a cancelled call: an AbortError whose cause is the signal's reason. */
function abortError(what: string, signal: AbortSignal | undefined, when = ''): AbortError {
  return new AbortError(`the ${what} was aborted${when}`, signal?.aborted ? { cause: signal.reason } : undefined);
}

type Pending = {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  onToken?: (e: TokenEvent) => void;
  onBatchResult?: (result: unknown) => void;
};

/** The connection to one model worker: numbered requests, answered in any order. */
class WorkerLink {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private dead: Error | undefined;

  constructor() {
    this.worker = new Worker(path.join(__dirname, 'engine', 'worker.js'));
    this.worker.on('message', (m: ResponseMessage) => this.onMessage(m));
    this.worker.on('error', (e) => this.fail(e));
    this.worker.on('exit', (code) => this.fail(new AdaInferError('INTERNAL', `the model worker exited (code ${code})`)));
  }

  call<T>(req: Request, onToken?: (e: TokenEvent) => void, onBatchResult?: (result: unknown) => void): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, onToken, onBatchResult });
      try {
        this.worker.postMessage({ ...req, id });
      } catch (err) {
        // A value the structured clone cannot copy (a function, a symbol, ...): nothing was sent, so nothing
        // may stay pending (it would keep the worker referenced and the process alive).
        this.pending.delete(id);
        reject(new OptionError('arguments', `hold a value that cannot be sent to the model worker: ${(err as Error).message}`));
      }
    });
  }

  async terminate(): Promise<void> {
    this.dead = new AdaInferError('DISPOSED', 'the model has been disposed');
    await this.worker.terminate();
  }

  /** Keeps the process alive while work is pending, and lets it exit when idle. */
  private updateRef(): void {
    if (this.pending.size > 0) this.worker.ref();
    else this.worker.unref();
  }

  private onMessage(m: ResponseMessage): void {
    if (m.kind === 'tokens') {
      for (const { id, event } of m.events) this.pending.get(id)?.onToken?.(event);
      return;
    }
    const p = this.pending.get(m.id);
    if (!p) return;
    if (m.kind === 'token') {
      p.onToken?.(m.event);
      return;
    }
    if (m.kind === 'batchResult') {
      p.onBatchResult?.(m.result);
      return;
    }
    this.pending.delete(m.id);
    this.updateRef();
    if (m.kind === 'result') p.resolve(m.value);
    else p.reject(deserializeError(m.error));
  }

  private fail(e: Error): void {
    if (!this.dead) this.dead = e instanceof AdaInferError ? e : new AdaInferError('INTERNAL', e.message, { cause: e });
    for (const p of this.pending.values()) p.reject(this.dead);
    this.pending.clear();
  }

  // Requests are counted before they are sent.
  track<T>(promise: Promise<T>): Promise<T> {
    this.updateRef();
    return promise.finally(() => this.updateRef());
  }
}

let warnedOversubscribed = false;

/**
 * A thread count as llama.cpp takes `-t`: any count in [1, 1024] is honoured, even above the CPUs this process
 * may use (each kernel call then time-slices its threads, which is slow but works); the first such request
 * in a process emits a warning (code ADAINFER_THREADS).
 */
function checkThreads(threads: unknown, option = 'threads'): number | undefined {
  if (threads === undefined) return undefined;
  if (typeof threads !== 'number' || !Number.isInteger(threads) || threads < 1 || threads > 1024)
    throw new OptionError(option, `must be an integer in [1, 1024], got ${String(threads)}`);
  const cpus = os.availableParallelism();
  if (threads > cpus && !warnedOversubscribed) {
    warnedOversubscribed = true;
    process.emitWarning(`${option} ${threads} is more than the ${cpus} CPUs this process may use: the kernels will be slower than with ${cpus}`, {
      code: 'ADAINFER_THREADS',
    });
  }
  return threads;
}

/** An AbortSignal, or nothing (undefined / null). */
function checkSignal(signal: unknown): AbortSignal | undefined {
  if (signal === undefined || signal === null) return undefined;
  const s = signal as AbortSignal;
  if (typeof s !== 'object' || typeof s.aborted !== 'boolean' || typeof s.addEventListener !== 'function' || typeof s.removeEventListener !== 'function')
    throw new OptionError('signal', 'must be an AbortSignal');
  return s;
}

function checkOptionsObject(options: unknown, option = 'options'): void {
  if (options === null || typeof options !== 'object') throw new OptionError(option, 'must be an object');
}

/**
 * `speculative` of a generation (Session.generate, Model.generateBatch, ContinuousBatch.submit), checked here; the
 * worker checks what depends on the context (maxDraft against the rows of a verification step).
 */
function checkSpeculativeOption(options: { speculative?: unknown; exit?: ExitSpec }, nLayer: number, sampling: ResolvedSampling): void {
  if (options.speculative === undefined) return;
  checkSpeculative(options.speculative, nLayer, options.exit !== undefined && options.exit !== 'never');
  if (sampling.penalties) throw new OptionError('speculative', 'repetition penalties are not supported with speculative decoding');
}

/** The options every batch takes (Model.generateBatch, Model.classifyBatch), checked; `prompts` must be an array. */
function checkBatchCommon(prompts: unknown, options: BatchOptions, known: readonly string[], where: string): void {
  if (!Array.isArray(prompts)) throw new OptionError('prompts', 'must be an array');
  checkOptionsObject(options);
  checkKnownOptions(options, known, where);
  checkExitSpec(options.exit);
  checkBoolean(options.compaction, 'compaction');
  checkBoolean(options.addBos, 'addBos');
  checkPositiveInt(options.contextSize, 'contextSize', 1 << 20);
}

/** Each prompt of generateBatch: text, token ids, or { prompt, maxTokens?, seed? }. */
function checkBatchPromptSpecs(prompts: BatchPromptSpec[]): void {
  prompts.forEach((spec, i) => {
    if (typeof spec === 'string' || Array.isArray(spec)) return;
    if (!spec || typeof spec !== 'object' || (typeof spec.prompt !== 'string' && !Array.isArray(spec.prompt)))
      throw new OptionError('prompts', `prompt ${i} must be a string, token ids, or { prompt, maxTokens?, seed? }`);
    checkKnownOptions(spec, PROMPT_SPEC_KEYS, `prompt ${i}`);
    if (spec.maxTokens !== undefined) checkMaxTokens(spec.maxTokens, `prompt ${i}: `);
    if (spec.seed !== undefined) checkSeed(spec.seed, `prompt ${i}: `);
  });
}

/**
 * Loads a model — a GGUF file, or a Hugging Face folder (config.json, safetensors, tokenizer.json; llama or opt) —
 * on its own worker thread (default: the bundled model).
 */
export async function loadModel(modelPath: string = DEFAULT_MODEL, options: ModelOptions = {}): Promise<Model> {
  if (typeof modelPath !== 'string' || modelPath.length === 0) throw new OptionError('path', 'must be a non-empty string');
  if (options === null || typeof options !== 'object') throw new OptionError('options', 'must be an object');
  checkKnownOptions(options, MODEL_OPTIONS, 'loadModel');
  const threads = checkThreads(options.threads) ?? native().systemInfo().physicalCores;
  if (options.kernels !== undefined && !KERNEL_VARIANTS.includes(options.kernels))
    throw new OptionError('kernels', `must be one of ${KERNEL_VARIANTS.join(', ')}, got ${String(options.kernels)}`);
  const backend = options.backend ?? 'auto';
  if (!BACKENDS.includes(backend)) throw new OptionError('backend', `must be one of ${BACKENDS.join(', ')}, got ${String(backend)}`);
  if (options.device !== undefined && (!Number.isInteger(options.device) || options.device < 0))
    throw new OptionError('device', `must be a device index (an integer >= 0), got ${String(options.device)}`);
  const resolved = path.resolve(modelPath);
  if (!fs.existsSync(resolved)) throw new ModelFileError('FILE_NOT_FOUND', resolved, 'no such file');
  const link = new WorkerLink();
  try {
    const info = await link.track(
      link.call<ModelInfo>({ op: 'load', path: resolved, options: { kernels: options.kernels, backend, device: options.device } }),
    );
    return new Model(link, info, threads);
  } catch (err) {
    await link.terminate();
    throw err;
  }
}

export class Model {
  private disposed = false;
  private nextSessionId = 1;

  /** @internal use loadModel() */
  constructor(
    private readonly link: WorkerLink,
    readonly info: ModelInfo,
    readonly threads: number,
  ) {}

  private check(): void {
    if (this.disposed) throw new AdaInferError('DISPOSED', 'the model has been disposed');
  }

  /** @internal */
  request<T>(req: Request, onToken?: (e: TokenEvent) => void, onBatchResult?: (result: unknown) => void): Promise<T> {
    this.check();
    return this.link.track(this.link.call<T>(req, onToken, onBatchResult));
  }

  /**
   * Generates a continuation of every prompt, many sequences at a time in one context (one KV cache slot per
   * sequence, `batchSize` of them): prompts are prefilled together and decoded one row per live sequence per
   * step; with an exit policy each sequence exits on its own and its rows leave the batch (row compaction).
   * Prompt i samples with seed `seed + i` (mod 2^32) unless it carries its own seed. Results come in prompt
   * order; `onResult` sees each one as soon as its prompt finishes. See lib/engine/batch.ts.
   */
  async generateBatch(prompts: BatchPromptSpec[], options: GenerateBatchOptions = {}): Promise<BatchGenerateResult> {
    this.check();
    checkBatchCommon(prompts, options, GENERATE_BATCH_OPTIONS, 'generateBatch');
    checkBatchPromptSpecs(prompts);
    checkBoolean(options.stopAtEos, 'stopAtEos');
    checkBoolean(options.parseSpecial, 'parseSpecial');
    const sampling = resolveSampling(options); // refuses a bad sampling option here, before anything is sent
    checkSpeculativeOption(options, this.info.nLayer, sampling);
    const { signal: rawSignal, onResult, batchSize, threads, maxTokens, kvFill, stop, ...rest } = options;
    const signal = checkSignal(rawSignal);
    const workerOptions: WorkerBatchGenerateOptions = {
      ...rest,
      maxTokens: checkMaxTokens(maxTokens),
      stop: checkStop(stop),
      kvFill: checkBatchKvFill(kvFill),
      batchSize: checkPositiveInt(batchSize, 'batchSize', 4096) ?? 16,
      threads: checkThreads(threads) ?? this.threads,
    };
    return this.runBatch<BatchGenerateResult>({ op: 'generateBatch', prompts, options: workerOptions, abort: new SharedArrayBuffer(4) }, signal, onResult);
  }

  /**
   * Single-token classification of every prompt (as Session.classify), many at a time; with an exit policy
   * each prompt exits on its own and its rows leave the batch. Results in prompt order.
   */
  async classifyBatch(prompts: (string | number[])[], labels: string[], options: ClassifyBatchOptions = {}): Promise<BatchClassifyResult> {
    this.check();
    checkBatchCommon(prompts, options, CLASSIFY_BATCH_OPTIONS, 'classifyBatch');
    prompts.forEach((p, i) => {
      if (typeof p !== 'string' && !Array.isArray(p)) throw new OptionError('prompts', `prompt ${i} must be a string or token ids`);
    });
    checkLabels(labels);
    const { signal: rawSignal, onResult, batchSize, threads, ...rest } = options;
    const signal = checkSignal(rawSignal);
    const workerOptions: WorkerBatchOptions = {
      ...rest,
      batchSize: checkPositiveInt(batchSize, 'batchSize', 4096) ?? 16,
      threads: checkThreads(threads) ?? this.threads,
    };
    return this.runBatch<BatchClassifyResult>(
      { op: 'classifyBatch', prompts, labels, options: workerOptions, abort: new SharedArrayBuffer(4) },
      signal,
      onResult as ((r: unknown) => void) | undefined,
    );
  }

  private async runBatch<T>(
    req: Extract<Request, { op: 'generateBatch' | 'classifyBatch' }>,
    signal: AbortSignal | undefined,
    onResult: ((r: never) => void) | undefined,
  ): Promise<T> {
    if (signal?.aborted) throw abortError('batch', signal, ' before it started');
    const flag = new Int32Array(req.abort);
    const onAbort = () => Atomics.store(flag, 0, 1);
    signal?.addEventListener('abort', onAbort, { once: true });
    // After an abort, results still queued from the worker are not passed on.
    const forward = onResult && ((r: unknown) => Atomics.load(flag, 0) === 0 && (onResult as (r: unknown) => void)(r));
    try {
      return await this.request<T>(req, undefined, forward);
    } catch (err) {
      if (err instanceof AdaInferError && err.code === 'ABORTED') throw abortError('batch', signal);
      throw err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Opens a continuous batch: requests submitted to it at any time join the running batch at the next decode step
   * that has a free slot, each with its own sampling, limit and exit policy, and leave it when they finish or are
   * cancelled. A request's result equals the same request run alone in a fresh session (same seed and policy).
   * What a server runs (lib/server); close() it when done.
   */
  async openBatch(options: OpenBatchOptions = {}): Promise<ContinuousBatch> {
    this.check();
    checkOptionsObject(options);
    checkKnownOptions(options, OPEN_BATCH_OPTIONS, 'openBatch');
    checkBoolean(options.compaction, 'compaction');
    if (options.exitFiles !== undefined && (!Array.isArray(options.exitFiles) || options.exitFiles.some((f) => typeof f !== 'string')))
      throw new OptionError('exitFiles', 'must be an array of exit file paths');
    const slots = checkPositiveInt(options.slots, 'slots', 4096) ?? 16;
    const contextSize = checkPositiveInt(options.contextSize, 'contextSize', 1 << 20) ?? Math.min(this.info.contextLength, 2048);
    const batchId = this.nextSessionId++;
    await this.request({
      op: 'openBatch',
      batchId,
      options: {
        slots,
        contextSize,
        threads: checkThreads(options.threads) ?? this.threads,
        kvFill: checkBatchKvFill(options.kvFill),
        compaction: options.compaction,
        exitFiles: options.exitFiles,
      },
    });
    return new ContinuousBatch(this, batchId, slots, contextSize);
  }

  async tokenize(text: string, options: { addSpecial?: boolean; parseSpecial?: boolean } = {}): Promise<number[]> {
    if (typeof text !== 'string') throw new OptionError('text', 'must be a string');
    checkOptionsObject(options);
    checkKnownOptions(options, TOKENIZE_OPTIONS, 'tokenize');
    checkBoolean(options.addSpecial, 'addSpecial');
    checkBoolean(options.parseSpecial, 'parseSpecial');
    return this.request({ op: 'tokenize', text, addSpecial: options.addSpecial ?? true, parseSpecial: options.parseSpecial ?? false });
  }

  async detokenize(tokens: number[]): Promise<string> {
    if (!Array.isArray(tokens)) throw new OptionError('tokens', 'must be an array of token ids');
    return this.request({ op: 'detokenize', tokens });
  }

  async createSession(options: SessionOptions = {}): Promise<Session> {
    this.check();
    checkOptionsObject(options);
    checkKnownOptions(options, SESSION_OPTIONS, 'createSession');
    const contextSize = checkPositiveInt(options.contextSize, 'contextSize', 1 << 20) ?? Math.min(this.info.contextLength, 2048);
    const kvFill = checkKvFill(options.kvFill);
    const batchSize =
      kvFill === 'recompute' ? contextSize : Math.min(checkPositiveInt(options.batchSize, 'batchSize', 1 << 16) ?? 256, contextSize);
    const threads = checkThreads(options.threads) ?? this.threads;
    // The KV cache is allocated (and zeroed) up front: one larger than the machine's memory would get the
    // process killed instead of failing, so refuse it here.
    const { nLayer, nKvHead, nEmbd, nHead } = this.info;
    const kvBytes = 2 * 4 * nLayer * contextSize * nKvHead * Math.floor(nEmbd / nHead);
    if (kvBytes > os.totalmem())
      throw new OptionError('contextSize', `${contextSize} positions need ${(kvBytes / 2 ** 30).toFixed(1)} GiB of KV cache, more than this machine's ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`);
    const sessionId = this.nextSessionId++;
    await this.request({ op: 'createSession', sessionId, options: { contextSize, batchSize, threads, kvFill } });
    return new Session(this, sessionId, contextSize);
  }

  /**
   * A conversation (lib/chat/session.ts) on a new session: `send(text, options)` / `stream(text, options)` answer a
   * user message through the chat template, keep the history, and reuse the cached prefix between turns.
   */
  async createChatSession(options: ChatSessionOptions = {}): Promise<ChatSession> {
    this.check();
    checkOptionsObject(options);
    checkKnownOptions(options, CHAT_SESSION_OPTIONS, 'createChatSession');
    const { systemPrompt, template: override, ...sessionOptions } = options;
    if (systemPrompt !== undefined && typeof systemPrompt !== 'string') throw new OptionError('systemPrompt', 'must be a string');
    const template = ChatTemplate.fromModel(this, override);
    const session = await this.createSession(sessionOptions);
    return new ChatSession(session, template, this, CHAT_SEND_OPTIONS, systemPrompt);
  }

  /** Frees the weights and every session, and ends the worker. Idempotent. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    try {
      // Tracked like every request: an unref'd worker would let the process exit mid-await.
      await this.link.track(this.link.call({ op: 'dispose' }));
    } finally {
      await this.link.terminate();
    }
  }
}

export class Session {
  private disposed = false;
  /** Calls in flight (generations, streams, classifications): their abort flags, and their ends. */
  private readonly running = new Set<{ flag: Int32Array; done: Promise<unknown> }>();

  /** @internal use Model.createSession() */
  constructor(
    readonly model: Model,
    private readonly id: number,
    readonly contextSize: number,
  ) {}

  private check(): void {
    if (this.disposed) throw new AdaInferError('DISPOSED', 'the session has been disposed');
  }

  /** Generates a continuation of `prompt` (text, or token ids used as they are). */
  async generate(prompt: string | number[], options: GenerateOptions = {}): Promise<GenerateResult> {
    return this.run(prompt, options, undefined);
  }

  /**
   * The same generation as an async iterator of token events. Leaving the loop early (`break`, `return`, a throw
   * in its body) stops the generation; the session is free again once the loop has left. The iterator's last
   * result (`done: true`) carries what generate() returns (undefined after an early leave).
   */
  stream(prompt: string | number[], options: GenerateOptions = {}): GenerationStream {
    const queue: TokenEvent[] = [];
    let wake: (() => void) | undefined;
    let finished = false;
    let failure: unknown;
    let result: GenerateResult | undefined;
    const control: { flag?: Int32Array } = {};
    const done = this.run(
      prompt,
      options,
      (e) => {
        queue.push(e);
        wake?.();
      },
      control,
    ).then(
      (r) => {
        result = r;
        finished = true;
        wake?.();
      },
      (err) => {
        failure = err;
        finished = true;
        wake?.();
      },
    );
    const iterator: GenerationStream = {
      [Symbol.asyncIterator]: () => iterator,
      next: async () => {
        while (queue.length === 0 && !finished) await new Promise<void>((r) => (wake = r));
        wake = undefined;
        // Aborted (signal, dispose): events received before the abort but not yet read are dropped too.
        if (control.flag && Atomics.load(control.flag, 0) !== 0) queue.length = 0;
        if (queue.length > 0) return { value: queue.shift()!, done: false };
        await done;
        if (failure) throw failure;
        return { value: result, done: true };
      },
      // Called by `for await` when the loop is left early: stop the generation and wait for the worker to end it.
      return: async () => {
        if (!finished && control.flag) Atomics.store(control.flag, 0, 1);
        queue.length = 0;
        await done;
        return { value: undefined, done: true };
      },
    };
    return iterator;
  }

  /**
   * Frees the session's KV cache. A call in flight is aborted first (it rejects with an AbortError). Idempotent,
   * and a no-op once the model is disposed (that freed every session).
   */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    for (const r of this.running) Atomics.store(r.flag, 0, 1);
    await Promise.allSettled([...this.running].map((r) => r.done));
    try {
      await this.model.request({ op: 'disposeSession', sessionId: this.id });
    } catch (err) {
      if (!(err instanceof AdaInferError && err.code === 'DISPOSED')) throw err;
    }
  }

  /**
   * Runs one request of this session with its abort flag: refuses a fired signal, sets the flag when the signal
   * fires (or dispose() does), and turns every way the worker reports a cancellation into one AbortError.
   */
  private async withAbort<T>(what: string, signal: AbortSignal | undefined, send: (abort: SharedArrayBuffer, flag: Int32Array) => Promise<T>): Promise<T> {
    if (signal?.aborted) throw abortError(what, signal, ' before it started');
    const abort = new SharedArrayBuffer(4);
    const flag = new Int32Array(abort);
    const onAbort = () => Atomics.store(flag, 0, 1);
    signal?.addEventListener('abort', onAbort, { once: true });
    const done = send(abort, flag);
    const entry = { flag, done };
    this.running.add(entry);
    try {
      return await done;
    } catch (err) {
      if (err instanceof AdaInferError && err.code === 'ABORTED') throw abortError(what, signal);
      throw err;
    } finally {
      this.running.delete(entry);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  private async run(
    prompt: string | number[],
    options: GenerateOptions,
    onToken: ((e: TokenEvent) => void) | undefined,
    /** Receives the abort flag once the request is sent (a stream sets it when its loop is left). */
    control?: { flag?: Int32Array },
  ): Promise<GenerateResult> {
    this.check();
    if (typeof prompt !== 'string' && !Array.isArray(prompt)) throw new OptionError('prompt', 'must be a string or an array of token ids');
    if (options === null || typeof options !== 'object') throw new OptionError('options', 'must be an object');
    checkKnownOptions(options, GENERATE_OPTIONS, onToken ? 'stream' : 'generate');
    const maxTokens = checkMaxTokens(options.maxTokens);
    checkExitSpec(options.exit);
    const { signal: rawSignal, stop, ...rest } = options;
    const signal = checkSignal(rawSignal);
    checkBoolean(options.stopAtEos, 'stopAtEos');
    checkBoolean(options.addBos, 'addBos');
    checkBoolean(options.parseSpecial, 'parseSpecial');
    const sampling = resolveSampling(options); // refuses a bad sampling option here, before anything is sent
    checkSpeculativeOption(options, this.model.info.nLayer, sampling);
    const workerOptions: WorkerGenerateOptions = { ...rest, maxTokens, stop: checkStop(stop) };
    const result = await this.withAbort('generation', signal, (abort, flag) => {
      if (control) control.flag = flag;
      return this.model
        .request<SequenceResult>(
          { op: 'generate', sessionId: this.id, prompt, options: workerOptions, abort },
          // Token events the worker sent before it saw the abort are dropped: none arrives after abort().
          onToken && ((e) => Atomics.load(flag, 0) === 0 && onToken(e)),
        )
        .then((r) => {
          if (r.stopReason === 'aborted') throw new AbortError('the generation was aborted');
          return r;
        });
    });
    return { ...result, timings: { ...result.timings, loadMs: this.model.info.loadMs } };
  }

  /**
   * Single-token classification (the paper's setting): the label whose first token after the prompt has the
   * highest logit at the last position, at the exit layer when a policy stops early. A label's token is the first
   * token its text adds after the prompt's tokens (lib/tasks/labels.ts), also where the tokenizer would merge the
   * end of the prompt with the start of the label.
   */
  async classify(prompt: string | number[], labels: string[], options: ClassifyOptions = {}): Promise<ClassifyResult> {
    this.check();
    checkLabels(labels);
    checkOptionsObject(options);
    checkKnownOptions(options, CLASSIFY_OPTIONS, 'classify');
    checkBoolean(options.addBos, 'addBos');
    checkExitSpec(options.exit);
    const { signal: rawSignal, ...rest } = options;
    const signal = checkSignal(rawSignal);
    return this.withAbort('classification', signal, (abort) =>
      this.model.request<ClassifyResult>({ op: 'classify', sessionId: this.id, prompt, labels, options: rest, abort }),
    );
  }

  /** @internal llama-bench style measurement on this session's context (random tokens). */
  bench(request: BenchRequest): Promise<BenchResult> {
    this.check();
    return this.model.request({ op: 'bench', sessionId: this.id, request });
  }
}

/**
 * A continuous batch on the model's worker (Model.openBatch): submit() requests at any time; each streams its
 * tokens and ends with its own result. Requests beyond `slots` wait in the worker's queue, in submission order.
 */
export class ContinuousBatch {
  private closed = false;
  private readonly running = new Set<{ flag: Int32Array; done: Promise<unknown> }>();

  /** @internal use Model.openBatch() */
  constructor(
    readonly model: Model,
    private readonly id: number,
    /** Requests decoded together. */
    readonly slots: number,
    /** Positions per request. */
    readonly contextSize: number,
  ) {}

  /** Requests submitted and not yet finished (running or waiting for a slot). */
  get inFlight(): number {
    return this.running.size;
  }

  /**
   * Submits a request. Its events arrive through the returned iterator (they are buffered until read; the result
   * does not wait for them to be read). Leaving a `for await` loop over it early cancels the request.
   */
  submit(prompt: string | number[], options: BatchRequestOptions = {}): BatchRequestStream {
    if (this.closed) throw new AdaInferError('DISPOSED', 'the batch is closed');
    if (typeof prompt !== 'string' && !Array.isArray(prompt)) throw new OptionError('prompt', 'must be a string or an array of token ids');
    checkOptionsObject(options);
    checkKnownOptions(options, BATCH_REQUEST_OPTIONS, 'submit');
    checkExitSpec(options.exit);
    checkBoolean(options.stopAtEos, 'stopAtEos');
    checkBoolean(options.addBos, 'addBos');
    checkBoolean(options.parseSpecial, 'parseSpecial');
    const sampling = resolveSampling(options); // refuses a bad sampling option here, before anything is sent
    checkSpeculativeOption(options, this.model.info.nLayer, sampling);
    const { signal: rawSignal, stop, ...rest } = options;
    const signal = checkSignal(rawSignal);
    const workerOptions: WorkerBatchSubmitOptions = { ...rest, maxTokens: checkMaxTokens(options.maxTokens), stop: checkStop(stop) };
    const abort = new SharedArrayBuffer(4);
    const flag = new Int32Array(abort);
    const cancel = () => Atomics.store(flag, 0, 1);
    const queue: TokenEvent[] = [];
    let wake: (() => void) | undefined;
    let finished = false;
    const result = (async () => {
      if (signal?.aborted) throw abortError('request', signal, ' before it started');
      signal?.addEventListener('abort', cancel, { once: true });
      try {
        return await this.model.request<BatchSequenceResult>({ op: 'batchSubmit', batchId: this.id, prompt, options: workerOptions, abort }, (e) => {
          if (Atomics.load(flag, 0) !== 0) return; // none after a cancellation
          queue.push(e);
          wake?.();
        });
      } catch (err) {
        if (err instanceof AdaInferError && err.code === 'ABORTED') throw abortError('request', signal);
        throw err;
      } finally {
        signal?.removeEventListener('abort', cancel);
        finished = true;
        wake?.();
      }
    })();
    result.catch(() => undefined); // a caller that only iterates sees the error there
    const entry = { flag, done: result.catch(() => undefined) };
    this.running.add(entry);
    void entry.done.then(() => this.running.delete(entry));
    const iterator: BatchRequestStream = {
      result,
      [Symbol.asyncIterator]: () => iterator,
      next: async () => {
        while (queue.length === 0 && !finished) await new Promise<void>((r) => (wake = r));
        wake = undefined;
        if (Atomics.load(flag, 0) !== 0) queue.length = 0;
        if (queue.length > 0) return { value: queue.shift()!, done: false };
        await result;
        return { value: undefined, done: true };
      },
      return: async () => {
        if (!finished) cancel();
        queue.length = 0;
        await entry.done;
        return { value: undefined, done: true };
      },
    };
    return iterator;
  }

  /**
   * Closes the batch to new requests and frees it once the requests in flight have finished; `{ cancel: true }`
   * cancels them first (they reject with an AbortError). Idempotent.
   */
  async close(options: { cancel?: boolean } = {}): Promise<void> {
    if (options.cancel) for (const r of this.running) Atomics.store(r.flag, 0, 1);
    if (this.closed) return;
    this.closed = true;
    try {
      await this.model.request({ op: 'closeBatch', batchId: this.id });
    } catch (err) {
      if (!(err instanceof AdaInferError && err.code === 'DISPOSED')) throw err;
    }
  }
}
