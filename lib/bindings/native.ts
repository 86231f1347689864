/**
 * The typed contract of the native addon (native/addon/*.cpp) and its loader.
 * Every buffer a Context exposes is a view on memory the native blocks read and write in place:
 * the TypeScript layer loop passes indices and counts, never arrays.
 */
import { AdaInferError, ErrorCode } from '../errors';

export interface NativeHParams {
  nLayer: number;
  nEmbd: number;
  nHead: number;
  nKvHead: number;
  headDim: number;
  nFf: number;
  nVocab: number;
  nRot: number;
  rmsEps: number;
  ropeBase: number;
}

export interface NativeTensorSpec {
  name: string;
  type: number;
  dims: number[];
  /** Absolute byte offset of the tensor's data in the file. */
  offset: number;
}

export interface NativeModel {
  dispose(): void;
  info(): { kernels: string; mappedBytes: number; tiedOutput: boolean };
}

export interface NativeContextOptions {
  /** Positions per sequence. */
  nCtx: number;
  /** Sequences (KV cache slots), default 1. */
  nSeq?: number;
  nBatch: number;
  threads: number;
  /** Largest top-k a logitLens call may ask for. */
  lensK: number;
  /** Size of the lensCandidates buffer (at most the vocabulary). */
  lensMaxCandidates: number;
}

export interface NativeContext {
  /** [nBatch] token ids read by embed(). */
  readonly tokens: Int32Array;
  /** [nBatch] sequence (KV cache slot) and position of each row, read by attention() and fillKv(). */
  readonly rowSeq: Int32Array;
  readonly rowPos: Int32Array;
  /** [nBatch][nEmbd] residual stream of the current batch. */
  readonly hidden: Float32Array;
  /** [nVocab] output of the last head() or logitLens() call. */
  readonly logits: Float32Array;
  /** [lensMaxCandidates] token ids read by logitLensCandidates(). */
  readonly lensCandidates: Int32Array;
  /** [lensK] top-k ids and probabilities of the last logitLens() call, best first (-1 / 0 past the candidates). */
  readonly lensIds: Int32Array;
  readonly lensProbs: Float32Array;
  /** [4] p1, p2, p1 - p2, entropy (nats) of the last logitLens() call. */
  readonly lensFeatures: Float32Array;
  readonly kernels: string;
  readonly threads: number;

  /** hidden[t] = embedding(tokens[t]) for t < n. */
  embed(n: number): void;
  /**
   * hidden[t] += attention block of `layer` for rows t < n; row t is position rowPos[t] of sequence rowSeq[t]
   * (its K/V are written to the cache, and it attends to that sequence's positions 0..rowPos[t]).
   */
  attention(layer: number, n: number): void;
  /** Only the K/V of `layer` for rows t < n from their current hidden state (fills layers an exit skipped). */
  fillKv(layer: number, n: number): void;
  /** hidden[t] += MLP block of `layer` for rows t < n. */
  mlp(layer: number, n: number): void;
  /** logits = LM head (final norm + output) of hidden[row]. */
  head(row: number): void;
  /** head(row), then top-k and softmax features into lensIds / lensProbs / lensFeatures. */
  logitLens(row: number, k: number): void;
  /**
   * logitLens over lensCandidates[0..m) only: m rows of the head instead of the vocabulary, softmax
   * renormalised over the candidates (fast mode of the exit features).
   */
  logitLensCandidates(row: number, m: number, k: number): void;
  /** Does nothing: measures the cost of one N-API call. */
  noop(): void;
  dispose(): void;
}

export interface SystemInfo {
  cpuFeatures: string;
  physicalCores: number;
  /** The kernel variant chosen for this CPU. */
  kernels: string;
  /** Every variant this CPU can run. */
  available: string[];
}

export interface NativeAddon {
  Model: new (path: string, hparams: NativeHParams, tensors: NativeTensorSpec[], isa?: string) => NativeModel;
  Context: new (model: NativeModel, options: NativeContextOptions) => NativeContext;
  systemInfo(): SystemInfo;
}

let addon: NativeAddon | undefined;

/** Loads build/Release/adainfer.node (built by `npm install`) once per thread. */
export function native(): NativeAddon {
  if (!addon) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      addon = require('bindings')('adainfer') as NativeAddon;
    } catch (err) {
      throw new AdaInferError(
        'NATIVE',
        `the native addon is not built (run \`npm install\` or \`npx node-gyp rebuild\`): ${(err as Error).message}`,
        { cause: err },
      );
    }
  }
  return addon;
}

const NATIVE_CODES = new Set<ErrorCode>([
  'FILE_READ',
  'MISSING_TENSOR',
  'SHAPE_MISMATCH',
  'UNSUPPORTED_TENSOR_TYPE',
  'TENSOR_OUT_OF_BOUNDS',
  'INVALID_OPTION',
  'DISPOSED',
  'NATIVE',
]);

/** Re-types an error thrown by the addon (which carries a `code`) as an AdaInferError. */
export function fromNativeError(err: unknown): AdaInferError {
  if (err instanceof AdaInferError) return err;
  const e = err as { code?: string; message?: string };
  const code = (e && typeof e.code === 'string' && NATIVE_CODES.has(e.code as ErrorCode) ? e.code : 'NATIVE') as ErrorCode;
  return new AdaInferError(code, e?.message ?? String(err), { cause: err });
}
