/** Messages between the API (main thread) and the model worker (lib/engine/worker.ts). */
import { SerializedError } from '../errors';
import { SamplingOptions } from './sampling';
import type { KernelVariant, NativeBackend } from '../bindings/native';
import type { BackendChoice } from '../model/transformer';
import { TokenEvent } from './sequence';
import type { BatchKvFill, KvFill } from './options';
import type { BatchSequenceResult, BatchStats } from './batch';

export interface WorkerLoadOptions {
  kernels?: KernelVariant;
  backend: BackendChoice;
  device?: number;
}

export interface WorkerSessionOptions {
  contextSize: number;
  batchSize: number;
  threads: number;
  kvFill: KvFill;
}

/**
 * An exit policy as the API names it: 'never' (full depth), the path of an exit file made by train-exit for
 * this model, or a threshold on one lens feature.
 */
export type ExitSpec =
  | 'never'
  | string
  | {
      kind: 'threshold';
      feature: 'p1' | 'gap';
      value: number;
      minLayer?: number;
      checkEvery?: number;
      mode?: 'faithful' | 'fast';
    };

/**
 * Self-speculative decoding as the API names it: the drafter is `{ layer }` (a fixed depth) or an exit spec (an
 * exit file made by train-exit, a threshold): the exit policy decides each drafted token's depth.
 */
export interface SpeculativeSpec {
  draft: { layer: number } | Exclude<ExitSpec, 'never'>;
  maxDraft?: number;
  adaptive?: boolean | { minP1?: number; fallbackTokens?: number };
}

export interface WorkerGenerateOptions extends SamplingOptions {
  maxTokens: number;
  stopAtEos?: boolean;
  stop?: string[];
  addBos?: boolean;
  /** Text prompts: turn the texts of control tokens (<|im_start|>, ...) into their ids (default false). */
  parseSpecial?: boolean;
  exit?: ExitSpec;
  speculative?: SpeculativeSpec;
}

export interface WorkerClassifyOptions {
  addBos?: boolean;
  exit?: ExitSpec;
}

/** The keys of a threshold exit spec (checked in plain JavaScript: a misspelt key is refused). */
export const THRESHOLD_SPEC_KEYS = ['kind', 'feature', 'value', 'minLayer', 'checkEvery', 'mode'] as const;

export interface ClassifyResult {
  /** Index of the winning label. */
  index: number;
  label: string;
  /** Softmax over the labels' first-token logits, in label order. */
  probs: number[];
  /** Layers run. */
  exitLayer: number;
  /** The token each label was scored by (its first token after the prompt). */
  labelTokens: number[];
}

export interface BenchRequest {
  promptTokens: number;
  genTokens: number;
  seed: number;
}

export interface BenchResult {
  prefillMs: number;
  decodeMs: number;
  promptTokens: number;
  genTokens: number;
}

export type Request =
  | { op: 'load'; path: string; options: WorkerLoadOptions }
  | { op: 'tokenize'; text: string; addSpecial: boolean; parseSpecial: boolean }
  | { op: 'detokenize'; tokens: number[] }
  | { op: 'createSession'; sessionId: number; options: WorkerSessionOptions }
  | {
      op: 'generate';
      sessionId: number;
      prompt: string | number[];
      options: WorkerGenerateOptions;
      /** Int32Array(1) on a SharedArrayBuffer: set to 1 by the main thread to abort. */
      abort: SharedArrayBuffer;
    }
  | {
      op: 'classify';
      sessionId: number;
      prompt: string | number[];
      labels: string[];
      options: WorkerClassifyOptions;
      /** As generate's. */
      abort: SharedArrayBuffer;
    }
  | { op: 'bench'; sessionId: number; request: BenchRequest }
  | { op: 'disposeSession'; sessionId: number }
  | { op: 'dispose' }
  | { op: 'generateBatch'; prompts: BatchPromptSpec[]; options: WorkerBatchGenerateOptions; abort: SharedArrayBuffer }
  | { op: 'classifyBatch'; prompts: (string | number[])[]; labels: string[]; options: WorkerBatchOptions; abort: SharedArrayBuffer }
  | { op: 'openBatch'; batchId: number; options: WorkerOpenBatchOptions }
  | {
      op: 'batchSubmit';
      batchId: number;
      prompt: string | number[];
      options: WorkerBatchSubmitOptions;
      /** As generate's: set to 1 to make the request leave the batch at the next step. */
      abort: SharedArrayBuffer;
    }
  | { op: 'closeBatch'; batchId: number };

export type RequestMessage = Request & { id: number };

export type ResponseMessage =
  | { id: number; kind: 'result'; value: unknown }
  | { id: number; kind: 'error'; error: SerializedError }
  | { id: number; kind: 'token'; event: TokenEvent }
  /** The token events of one step of an open batch, for the requests (message ids) that got one: one message per step. */
  | { id: 0; kind: 'tokens'; events: { id: number; event: TokenEvent }[] }
  /** One prompt of a generateBatch / classifyBatch request finished (sent as soon as it does). */
  | { id: number; kind: 'batchResult'; result: unknown };

export interface ModelInfo {
  path: string;
  name: string;
  architecture: string;
  fingerprint: string;
  fileType: number | undefined;
  contextLength: number;
  nLayer: number;
  nEmbd: number;
  nHead: number;
  nKvHead: number;
  nFf: number;
  nVocab: number;
  /** Total elements of every weight tensor. */
  parameters: number;
  /** Bytes of tensor data in the file. */
  weightBytes: number;
  kernels: string;
  /** Where the blocks run: 'cpu', or 'cuda' with the device's name. */
  backend: NativeBackend;
  device?: string;
  /** Bytes of weights on the device (CUDA), 0 on the CPU. */
  deviceBytes: number;
  bosId: number | undefined;
  eosId: number | undefined;
  /** The BOS / EOS tokens' texts ('' when none), as a chat template gets them. */
  bosToken: string;
  eosToken: string;
  /** Whether the tokenizer prepends BOS / appends EOS to a text prompt. */
  addBos: boolean;
  addEos: boolean;
  /** The model's chat template (GGUF tokenizer.chat_template, tokenizer_config.json chat_template); undefined: none. */
  chatTemplate?: string;
  loadMs: number;
}

// --- batches (lib/engine/batch.ts) ------------------------------------------------------------------

/** A prompt of a batch: text or token ids, optionally with its own maxTokens and sampler seed. */
export type BatchPromptSpec = string | number[] | { prompt: string | number[]; maxTokens?: number; seed?: number };

export interface WorkerBatchOptions {
  /** Sequences run together (KV cache slots). */
  batchSize: number;
  /** Positions per sequence; default: the longest prompt + its maxTokens, at most the model's context. */
  contextSize?: number;
  threads: number;
  addBos?: boolean;
  exit?: ExitSpec;
  /** Remove exited rows from the batch between layers (default true). */
  compaction?: boolean;
}

export interface WorkerBatchGenerateOptions extends WorkerBatchOptions, SamplingOptions {
  maxTokens: number;
  stopAtEos?: boolean;
  stop?: string[];
  parseSpecial?: boolean;
  kvFill: BatchKvFill;
  speculative?: SpeculativeSpec;
}

export interface BatchGenerateResult {
  /** In prompt order. */
  results: BatchSequenceResult[];
  stats: BatchStats;
}

export interface BatchClassifyItem extends ClassifyResult {
  /** Index of the prompt in the request. */
  promptIndex: number;
  timings: { queuedMs: number; ms: number };
}

export interface BatchClassifyResult {
  /** In prompt order. */
  results: BatchClassifyItem[];
  stats: BatchStats;
}

// --- open batches (lib/engine/batch.ts OpenBatch): a long-running batch that takes requests while it runs ------

export interface WorkerOpenBatchOptions {
  /** Sequences run together (KV cache slots). */
  slots: number;
  /** Positions per sequence. */
  contextSize: number;
  threads: number;
  kvFill: BatchKvFill;
  compaction?: boolean;
  /** The exit files requests may name (their fast lens's top-k sizes the context's lens buffer). */
  exitFiles?: string[];
}

export interface WorkerBatchSubmitOptions extends SamplingOptions {
  maxTokens: number;
  stopAtEos?: boolean;
  stop?: string[];
  addBos?: boolean;
  parseSpecial?: boolean;
  exit?: ExitSpec;
  speculative?: SpeculativeSpec;
}
