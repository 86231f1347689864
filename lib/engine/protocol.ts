/** Messages between the API (main thread) and the model worker (lib/engine/worker.ts). */
import { SerializedError } from '../errors';
import { SamplingOptions } from './sampling';
import { KvFill, SequenceResult, TokenEvent } from './sequence';

export interface WorkerLoadOptions {
  kernels?: string;
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

export interface WorkerGenerateOptions extends SamplingOptions {
  maxTokens: number;
  stopAtEos?: boolean;
  addBos?: boolean;
  exit?: ExitSpec;
}

export interface WorkerClassifyOptions {
  addBos?: boolean;
  exit?: ExitSpec;
}

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
  | { op: 'classify'; sessionId: number; prompt: string | number[]; labels: string[]; options: WorkerClassifyOptions }
  | { op: 'bench'; sessionId: number; request: BenchRequest }
  | { op: 'disposeSession'; sessionId: number }
  | { op: 'dispose' };

export type RequestMessage = Request & { id: number };

export type ResponseMessage =
  | { id: number; kind: 'result'; value: unknown }
  | { id: number; kind: 'error'; error: SerializedError }
  | { id: number; kind: 'token'; event: TokenEvent };

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
  bosId: number | undefined;
  eosId: number | undefined;
  loadMs: number;
}

export type GenerateResultMessage = SequenceResult;
