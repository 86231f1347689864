/**
 * The Llama architecture (GGUF `general.architecture = "llama"`: Llama 1/2/3, TinyLlama, Mistral-style,
 * SmolLM): hyper-parameters from GGUF metadata, weights mapped by the native addon, and the layer loop.
 *
 * The whole forward pass of one batch of tokens is `forward()` below:
 *   embed -> for each layer: attention block, MLP block, [exit decision] -> head
 * Each block is one native call working in place on the context's buffers.
 */
import { AdaInferError, ModelFileError } from '../errors';
import { fromNativeError, native, NativeBackend, NativeContext, NativeHParams, NativeModel } from '../bindings/native';
import { getInteger, getNumber, getString, GGMLType, GGUFFile, readGGUF } from '../gguf';
import { createTokenizer, Tokenizer } from '../tokenizer';
import { tokenizerMetadataFromGGUF } from './gguf_tokenizer';
import { fingerprintGGUF } from './fingerprint';
import { DEFAULT_FAST_TOP_K } from '../exit/lens';

export interface LlamaConfig extends NativeHParams {
  /** `general.name`, or the file name. */
  name: string;
  /** Context length the model was trained with (`llama.context_length`). */
  contextLength: number;
}

/** Reads the hyper-parameters of a `llama` GGUF, rejecting what this runtime cannot run. */
export function llamaConfigFromGGUF(file: GGUFFile): LlamaConfig {
  const required = { required: true } as const;
  const arch = getString(file, 'general.architecture', required);
  if (arch !== 'llama') {
    throw new ModelFileError(
      'UNSUPPORTED_ARCHITECTURE',
      file.path,
      `architecture '${arch}' is not supported (supported: llama)`,
    );
  }
  const int = (key: string, fallback?: number): number =>
    fallback === undefined ? getInteger(file, 'llama.' + key, required) : getInteger(file, 'llama.' + key) ?? fallback;
  const float = (key: string, fallback: number): number => getNumber(file, 'llama.' + key) ?? fallback;

  // Sessions default to the trained context: a length below 1 would only fail later, as a session option.
  const contextLength = int('context_length');
  if (contextLength < 1) {
    throw new ModelFileError('GGUF_CORRUPT', file.path, `metadata key "llama.context_length" is ${contextLength}; it must be at least 1`);
  }
  const nEmbd = int('embedding_length');
  const nHead = int('attention.head_count');
  const headDim = int('attention.key_length', nHead > 0 ? Math.floor(nEmbd / nHead) : 0);
  const tokens = file.metadata.get('tokenizer.ggml.tokens');
  const embd = file.tensorsByName.get('token_embd.weight');
  const nVocab = int('vocab_size', Array.isArray(tokens) ? tokens.length : embd?.dims[1] ?? 0);
  const scaling = getString(file, 'llama.rope.scaling.type');
  if (scaling !== undefined && scaling !== 'none') {
    throw new ModelFileError('UNSUPPORTED_ARCHITECTURE', file.path, `rope scaling '${scaling}' is not supported yet`);
  }
  const valueLength = int('attention.value_length', headDim);
  if (valueLength !== headDim) {
    throw new ModelFileError(
      'UNSUPPORTED_ARCHITECTURE',
      file.path,
      `attention.value_length ${valueLength} differs from key_length ${headDim}`,
    );
  }
  return {
    name: getString(file, 'general.name') ?? file.path.split('/').pop() ?? file.path,
    contextLength,
    nLayer: int('block_count'),
    nEmbd,
    nHead,
    nKvHead: int('attention.head_count_kv', nHead),
    headDim,
    nFf: int('feed_forward_length'),
    nVocab,
    nRot: int('rope.dimension_count', headDim),
    rmsEps: float('attention.layer_norm_rms_epsilon', 1e-5),
    ropeBase: float('rope.freq_base', 10000),
  };
}

/** Bytes an element (or a quantized block's scale) of a ggml type must be aligned to when read in place. */
function elementAlignment(type: number): number {
  switch (type) {
    case GGMLType.F32:
    case GGMLType.I32:
    case GGMLType.Q8_K:
      return 4;
    case GGMLType.I64:
    case GGMLType.F64:
      return 8;
    case GGMLType.I8:
      return 1;
    default:
      return 2; // F16, BF16, I16 and the quantized blocks (fp16 scales)
  }
}

/**
 * The kernels read weights in place from the mapping, as floats and halves: tensor data must sit at offsets
 * that are multiples of its element size. A file with general.alignment 1 or 2 (which the GGUF spec forbids:
 * it must be a multiple of 8) can place it elsewhere; the native loader does not check this.
 */
function checkElementAlignment(gguf: GGUFFile): void {
  for (const t of gguf.tensors) {
    const need = elementAlignment(t.type);
    if (t.absoluteOffset % need !== 0) {
      throw new ModelFileError(
        'GGUF_CORRUPT',
        gguf.path,
        `tensor "${t.name}" (${t.typeName}) data at file offset ${t.absoluteOffset} is not aligned to ${need} bytes ` +
          `(general.alignment ${gguf.alignment}; the GGUF spec requires a multiple of 8)`,
      );
    }
  }
}

/** Where the blocks run: 'auto' picks CUDA when a usable device is there and the model fits its kernels. */
export type BackendChoice = 'auto' | NativeBackend;
export const BACKENDS: readonly BackendChoice[] = ['auto', 'cpu', 'cuda'];

export interface LoadOptions {
  /** Kernel variant: 'generic' | 'avx2' | 'avx512'; default: the best this CPU runs. */
  kernels?: string;
  /** Default 'cpu' here ('auto' in the public API, lib/api.ts). */
  backend?: BackendChoice;
  /** CUDA device index (default 0). */
  device?: number;
}

function tryCudaThenCpu(make: (backend: NativeBackend) => NativeModel): NativeModel {
  try {
    return make('cuda');
  } catch (err) {
    const code = (err as AdaInferError).code;
    if (code !== 'BACKEND_UNAVAILABLE' && code !== 'OUT_OF_MEMORY') throw err;
    return make('cpu');
  }
}

/** A loaded model: parsed header, tokenizer and mapped weights. Synchronous; see lib/index.ts for the async API. */
export class LlamaModel {
  private nativeModel: NativeModel | undefined;

  private constructor(
    readonly path: string,
    readonly gguf: GGUFFile,
    readonly config: LlamaConfig,
    readonly tokenizer: Tokenizer,
    nativeModel: NativeModel,
    /** Identity of the weights, for files derived from a model (exit classifiers). */
    readonly fingerprint: string,
  ) {
    this.nativeModel = nativeModel;
  }

  static load(path: string, options: LoadOptions = {}): LlamaModel {
    const gguf = readGGUF(path);
    const config = llamaConfigFromGGUF(gguf);
    const tokenizer = createTokenizer(tokenizerMetadataFromGGUF(gguf));
    if (tokenizer.vocabSize !== config.nVocab) {
      throw new ModelFileError(
        'SHAPE_MISMATCH',
        path,
        `the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocabulary is ${config.nVocab}`,
      );
    }
    checkElementAlignment(gguf);
    const tensors = gguf.tensors.map((t) => ({ name: t.name, type: t.type, dims: t.dims, offset: t.absoluteOffset }));
    const make = (backend: NativeBackend): NativeModel => {
      try {
        return new (native().Model)(path, config, tensors, { kernels: options.kernels, backend, device: options.device });
      } catch (err) {
        const e = fromNativeError(err);
        throw ['INVALID_OPTION', 'NATIVE', 'BACKEND_UNAVAILABLE', 'OUT_OF_MEMORY'].includes(e.code)
          ? e
          : new ModelFileError(e.code, path, e.message);
      }
    };
    let nativeModel: NativeModel;
    const backend = options.backend ?? 'cpu';
    if (backend === 'auto') {
      // CUDA only when a device is really usable; if it then cannot take this model (a weight type its kernels
      // lack, too little memory), the CPU runs it, as it would without a GPU.
      nativeModel = native().systemInfo().cuda.available ? tryCudaThenCpu(make) : make('cpu');
    } else {
      nativeModel = make(backend);
    }
    return new LlamaModel(path, gguf, config, tokenizer, nativeModel, fingerprintGGUF(gguf));
  }

  get native(): NativeModel {
    if (!this.nativeModel) throw new AdaInferError('DISPOSED', 'the model has been disposed');
    return this.nativeModel;
  }

  get disposed(): boolean {
    return this.nativeModel === undefined;
  }

  createContext(options: ContextOptions): LlamaContext {
    return new LlamaContext(this, options);
  }

  dispose(): void {
    this.nativeModel?.dispose();
    this.nativeModel = undefined;
  }
}

export interface ContextOptions {
  /** Positions the KV cache holds, per sequence. */
  contextSize: number;
  /** Sequences with their own KV cache (default 1). */
  sequences?: number;
  /** Rows per native call during prompt processing. */
  batchSize: number;
  threads: number;
  /** Largest top-k a logit-lens call may ask for (default 16, the fast lens's default top-k). */
  lensK?: number;
  /** Largest candidate set of a fast-mode logit-lens call (default min(vocabulary, 1024)). */
  lensMaxCandidates?: number;
}

/**
 * Decides, after layer `layer` (0-based) has run on rows [0, n), whether to stop. Returning true skips the
 * remaining layers for this batch. Never called after the last layer.
 */
export type ExitCheck = (layer: number, n: number) => boolean;

/**
 * Called after layer `layer` (0-based) has run on rows [0, rows): returns how many rows go on to the next
 * layer, after moving them to the front of the batch (row compaction). 0 ends the loop. Never called after
 * the last layer.
 */
export type AfterLayer = (layer: number, rows: number) => number;

/** One or more sequences: KV caches, the native buffers and the layer loop. */
export class LlamaContext {
  readonly native: NativeContext;
  readonly contextSize: number;
  readonly batchSize: number;
  readonly sequences: number;

  constructor(
    readonly model: LlamaModel,
    options: ContextOptions,
  ) {
    this.contextSize = options.contextSize;
    this.batchSize = options.batchSize;
    this.sequences = options.sequences ?? 1;
    try {
      this.native = new (native().Context)(model.native, {
        nCtx: this.contextSize,
        nSeq: this.sequences,
        nBatch: this.batchSize,
        threads: options.threads,
        lensK: options.lensK ?? DEFAULT_FAST_TOP_K,
        lensMaxCandidates: options.lensMaxCandidates ?? Math.min(model.config.nVocab, 1024),
      });
    } catch (err) {
      throw fromNativeError(err);
    }
  }

  /**
   * The layer loop. Rows [0, n) hold tokens (native.tokens), sequences (native.rowSeq) and positions
   * (native.rowPos); `afterLayer` may drop rows between layers. Returns the layers run before the loop ended.
   * The rows' hidden states are left in native.hidden for head()/logitLens().
   */
  forwardRows(n: number, afterLayer?: AfterLayer): number {
    const c = this.native;
    const nLayer = this.model.config.nLayer;
    try {
      c.embed(n);
      let rows = n;
      for (let layer = 0; layer < nLayer; layer++) {
        c.attention(layer, rows);
        c.mlp(layer, rows);
        if (afterLayer !== undefined && layer < nLayer - 1) {
          rows = afterLayer(layer, rows);
          if (rows === 0) return layer + 1;
        }
      }
    } catch (err) {
      throw fromNativeError(err);
    }
    return nLayer;
  }

  /**
   * Runs `n` tokens already written to native.tokens[0..n) at positions pos0..pos0+n-1 of sequence `seq`.
   * Returns the number of layers run (nLayer unless `exit` stopped earlier).
   */
  forward(n: number, pos0: number, exit?: ExitCheck, seq = 0): number {
    const c = this.native;
    for (let i = 0; i < n; i++) {
      c.rowSeq[i] = seq;
      c.rowPos[i] = pos0 + i;
    }
    return this.forwardRows(n, exit && ((layer, rows) => (exit(layer, rows) ? 0 : rows)));
  }

  /**
   * The logits of the last logitLens / logitLensCandidates call (native.logits, made current: a GPU backend
   * keeps them on the device until asked). After a candidates call they are meaningful at the candidates only.
   */
  lensLogits(): Float32Array {
    try {
      this.native.syncLogits();
    } catch (err) {
      throw fromNativeError(err);
    }
    return this.native.logits;
  }

  /** logits of hidden row `row` into native.logits (returned as the same zero-copy view). */
  logits(row: number): Float32Array {
    try {
      this.native.head(row);
    } catch (err) {
      throw fromNativeError(err);
    }
    return this.native.logits;
  }

  dispose(): void {
    this.native.dispose();
  }
}
