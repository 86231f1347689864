/**
 * The typed contract of the native addon (native/addon/*.cpp) and its loader.
 * Every buffer a Context exposes is a view on memory the native blocks read and write in place:
 * the TypeScript layer loop passes indices and counts, never arrays. The views are read-only properties, and
 * a Context whose buffer was detached (transferred to another thread or owner) refuses every block call with
 * BUFFER_DETACHED rather than write memory it no longer owns.
 */
import * as fs from 'fs';
import * as path from 'path';
import { AdaInferError, ErrorCode } from '../errors';

/** A value of the hyper-parameters the native Model reads: numbers, flags, strings, one level of nested object. */
export type NativeHParamValue = number | boolean | string | undefined | { [key: string]: number | boolean | string | undefined };

/**
 * The hyper-parameters of a native Model. `architecture` names the native architecture (native/blocks/architecture.cpp:
 * 'llama', 'opt', 'qwen2', 'qwen3'); the other keys are the ones that architecture reads (native/architectures/*.cpp;
 * lib/model/architectures/*.ts writes them): a nested object's keys are read as "outer.inner".
 */
export interface NativeHParams {
  architecture: string;
  nLayer: number;
  nEmbd: number;
  nVocab: number;
  [key: string]: NativeHParamValue;
}

export interface NativeTensorSpec {
  name: string;
  type: number;
  dims: number[];
  /** Absolute byte offset of the tensor's data in its file. */
  offset: number;
  /** Index of its file in the Model's paths (default 0). */
  file?: number;
}

/** The CPU kernel variants (native/cpu): the scalar reference and the x86 SIMD ones, chosen at run time. */
export type KernelVariant = 'generic' | 'avx2' | 'avx512';
export const KERNEL_VARIANTS: readonly KernelVariant[] = ['generic', 'avx2', 'avx512'];

/** Compute backends of the native blocks. */
export type NativeBackend = 'cpu' | 'cuda';

export interface NativeModelOptions {
  /** CPU kernel variant (default: the best this CPU runs); also converts embedding rows for the CUDA backend. */
  kernels?: KernelVariant;
  /** Default 'cpu'. 'cuda' uploads the weights to the device here, once. */
  backend?: NativeBackend;
  /** CUDA device index (default 0). */
  device?: number;
}

export interface NativeModel {
  dispose(): void;
  info(): {
    kernels: string;
    architecture: string;
    mappedBytes: number;
    tiedOutput: boolean;
    backend: NativeBackend;
    deviceBytes: number;
    /**
     * Bytes of layer matrices the CPU kernels hold in a packed layout (a copy made at load; the file's pages are
     * dropped): Q4_0 and Q8_0 on AVX2. 0 on other kernels and backends, and with ADAINFER_PACK=0.
     */
    packedBytes: number;
  };
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
  /** [nVocab] output of the last head() call, or of the last logitLens*() call after syncLogits(). */
  readonly logits: Float32Array;
  /** [lensMaxCandidates] token ids read by logitLensCandidates(). */
  readonly lensCandidates: Int32Array;
  /** [lensK] top-k ids and probabilities of the last logitLens() call, best first (-1 / 0 past the candidates). */
  readonly lensIds: Int32Array;
  readonly lensProbs: Float32Array;
  /** [4] p1, p2, p1 - p2, entropy (nats) of the last logitLens() call. */
  readonly lensFeatures: Float32Array;
  /**
   * [4] what the last exitStatistics(row) call read of its row: the head mean of its attention's entropy over
   * log(positions attended) and of its attention weight on its own position (NaN where the last attention() kept
   * none for that row), the cosine and the relative norm ||h - h_prev|| / ||h_prev|| between its hidden state
   * and its sequence's at the previous call (1 and 0 at a token's first check).
   */
  readonly exitStats: Float32Array;
  /** Whether this backend computes exitStatistics (the CPU does; CUDA does not). */
  readonly computesExitStatistics: boolean;
  readonly kernels: string;
  readonly threads: number;
  /** Where the blocks run (the Model's backend). */
  readonly backend: NativeBackend;

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
  /** The head of rows [row0, row0 + n) into dst ([n][nVocab]): one pass over the head matrix for all rows. */
  headRows(row0: number, n: number, dst: Float32Array): void;
  /** head(row), then top-k and softmax features into lensIds / lensProbs / lensFeatures. */
  logitLens(row: number, k: number): void;
  /**
   * logitLens over lensCandidates[0..m) only: m rows of the head instead of the vocabulary, softmax
   * renormalised over the candidates (fast mode of the exit features).
   */
  logitLensCandidates(row: number, m: number, k: number): void;
  /** Makes `logits` hold the last logitLens*() call's logits (a GPU keeps them on the device until asked). */
  syncLogits(): void;
  /**
   * On: every attention() from now on keeps the attention statistics of the last row of each run of rows (a
   * sequence's decision row), computed by the kernels beside the softmax. Off by default.
   */
  setAttentionStatistics(on: boolean): void;
  /** The exit statistics of batch row `row` into exitStats; its hidden state becomes its sequence's previous one. */
  exitStatistics(row: number, firstCheck: boolean): void;
  /**
   * The residual stream ([nBatch][nEmbd], kept by the backend: on the device for CUDA) of rows
   * [row0, row0 + n): copied out to / in from `buffer` (at least n * nEmbd floats).
   */
  readHidden(row0: number, n: number, buffer: Float32Array): void;
  writeHidden(row0: number, n: number, buffer: Float32Array): void;
  /** Moves rows [srcRow, srcRow + n) of the residual stream to dstRow (ranges may overlap). */
  moveHidden(dstRow: number, srcRow: number, n: number): void;
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
  available: KernelVariant[];
  cuda: CudaInfo;
}

export interface CudaInfo {
  /** This build has the CUDA backend (compiled where nvcc was found). */
  compiled: boolean;
  /** A usable device was found (probed once, safely: a missing driver is an answer, not a crash). */
  available: boolean;
  /** Why not, when unavailable. */
  reason: string;
  devices: { index: number; name: string; computeCapability: string; totalMemory: number }[];
}

export interface NativeAddon {
  Model: new (paths: string | string[], hparams: NativeHParams, tensors: NativeTensorSpec[], options?: NativeModelOptions) => NativeModel;
  Context: new (model: NativeModel, options: NativeContextOptions) => NativeContext;
  systemInfo(): SystemInfo;
  /**
   * out[r] = w[r·d .. r·d + d) · x (d = x.length, out.length rows), summed in lib/exit/mlp.ts dot4's order, so bit
   * for bit its result: the hidden-state probe's matrix-vector product. INVALID_OPTION when the lengths disagree.
   */
  matvecF64(w: Float64Array, x: Float64Array, out: Float64Array): void;
}

let addon: NativeAddon | undefined;

/** The optional package holding the CUDA build of the addon for this platform (`npm run build:cuda` makes it). */
export const CUDA_PACKAGE = `@adainfer/cuda-${process.platform}-${process.arch}`;

/** The package's root: the nearest folder above this file that holds binding.gyp (the repository, or the installed package). */
function packageRoot(): string {
  let dir = __dirname;
  while (!fs.existsSync(path.join(dir, 'binding.gyp'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new AdaInferError('NATIVE', `no binding.gyp above ${__dirname}: the adainfer package is incomplete`);
    dir = parent;
  }
  return dir;
}

/**
 * The CUDA build from the optional per-platform package, when it is installed, loads (its CUDA runtime
 * libraries are found) and sees a usable device; otherwise undefined and the CPU addon is used. Set
 * ADAINFER_NO_CUDA_PACKAGE=1 to ignore an installed one.
 */
function loadCudaPackage(): NativeAddon | undefined {
  if (process.env.ADAINFER_NO_CUDA_PACKAGE === '1') return undefined;
  let file: string;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    file = (require(CUDA_PACKAGE) as { addonPath: string }).addonPath;
  } catch {
    return undefined; // not installed: the usual case
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const cuda = require(file) as NativeAddon;
    return cuda.systemInfo().cuda.available ? cuda : undefined;
  } catch {
    return undefined; // no CUDA runtime on this machine: the CPU addon serves
  }
}

/**
 * Loads the addon once per thread: the CUDA package's (see loadCudaPackage), else, through node-gyp-build,
 * a local build (build/Release, from `npm install` compiling from source or `npm run build`) or the prebuilt
 * addon shipped in prebuilds/<platform>-<arch>/ for this platform and libc. Every build holds all CPU kernel
 * variants and picks one from CPUID at run time.
 */
export function native(): NativeAddon {
  if (!addon) {
    addon = loadCudaPackage();
    if (!addon) {
      try {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        addon = (require('node-gyp-build') as (dir: string) => unknown)(packageRoot()) as NativeAddon;
      } catch (err) {
        if (err instanceof AdaInferError) throw err;
        throw new AdaInferError(
          'NATIVE',
          `no native addon for ${process.platform}-${process.arch}: no prebuilt one fits and none was compiled ` +
            `(run \`npm rebuild adainfer\` with a C++ compiler, make and python3): ${(err as Error).message}`,
          { cause: err },
        );
      }
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
  'BUFFER_DETACHED',
  'BACKEND_UNAVAILABLE',
  'OUT_OF_MEMORY',
  'NATIVE',
]);

/** Re-types an error thrown by the addon (which carries a `code`) as an AdaInferError. */
export function fromNativeError(err: unknown): AdaInferError {
  if (err instanceof AdaInferError) return err;
  const e = err as { code?: string; message?: string };
  const code = (e && typeof e.code === 'string' && NATIVE_CODES.has(e.code as ErrorCode) ? e.code : 'NATIVE') as ErrorCode;
  return new AdaInferError(code, e?.message ?? String(err), { cause: err });
}
