/**
 * A model of any registered architecture (lib/model/architectures: llama, opt, qwen2, qwen3), from a GGUF file or a
 * Hugging Face folder: its config (read by the architecture's plugin), tokenizer, weights mapped by the native addon,
 * and the layer loop. The loop is the same for every architecture; config.architecture only picks the native blocks.
 *
 * The whole forward pass of one batch of tokens is `forwardRows()` below:
 *   embed -> for each layer: attention block, MLP block, [exit decision] -> head
 * Each block is one native call working in place on the context's buffers.
 */
import { AdaInferError, ModelFileError } from '../errors';
import {
  fromNativeError,
  KernelVariant,
  native,
  NativeBackend,
  NativeContext,
  NativeHParams,
  NativeModel,
  NativeTensorSpec,
} from '../bindings/native';
import { getString, GGMLType, GGUFFile, readGGUF } from '../gguf';
import { createTokenizer, Tokenizer } from '../tokenizer';
import { tokenizerMetadataFromGGUF } from './gguf_tokenizer';
import { fingerprintGGUF, fingerprintHfFolder } from './fingerprint';
import { HfConfig } from '../hf/config';
import { Architecture, architectureByName, architectureOfGGUF, architectureOfModelType, GGUF_ARCHITECTURES } from './architectures';
import { HfFolder, isModelFolder, readHfFolder } from '../hf/folder';
import { DEFAULT_FAST_TOP_K } from '../defaults';

export interface TransformerConfig extends NativeHParams {
  /** `general.name`, or the file name (the folder name for a Hugging Face folder). */
  name: string;
  /** Context length the model was trained with (`<arch>.context_length`, max_position_embeddings). */
  contextLength: number;
  /**
   * The architecture (lib/model/architectures): it read this config and its native half builds the blocks the layer
   * loop drives. The loop itself is the same for all (embed, then attention and MLP per layer, then the head).
   */
  architecture: string;
  nHead: number;
  nKvHead: number;
  headDim: number;
  nFf: number;
}

/**
 * Reads the hyper-parameters of a GGUF file through the plugin of its general.architecture, rejecting what this
 * runtime cannot run (UNSUPPORTED_ARCHITECTURE).
 */
export function configFromGGUF(file: GGUFFile): TransformerConfig {
  const arch = getString(file, 'general.architecture', { required: true });
  const plugin = architectureOfGGUF(arch);
  if (!plugin?.gguf) {
    throw new ModelFileError(
      'UNSUPPORTED_ARCHITECTURE',
      file.path,
      `architecture '${arch}' is not supported (supported: ${GGUF_ARCHITECTURES.join(', ')})`,
    );
  }
  return plugin.gguf(file);
}

/** The runtime's hyper-parameters of a Hugging Face folder's config.json (through its architecture's plugin). */
export function configFromHf(c: HfConfig): TransformerConfig {
  return architectureOfModelType(c.modelType)!.hf!.config(c);
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
  /** Kernel variant; default: the best this CPU runs. */
  kernels?: KernelVariant;
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

/**
 * Creates the native model (its weights mapped from `paths`) on the chosen backend. `where` names the model in
 * errors. An architecture without CUDA blocks runs on the CPU under 'auto'; 'cuda' refuses it (BACKEND_UNAVAILABLE).
 */
function createNativeModel(where: string, paths: string | string[], config: TransformerConfig, tensors: NativeTensorSpec[], options: LoadOptions): NativeModel {
  const make = (backend: NativeBackend): NativeModel => {
    try {
      return new (native().Model)(paths, config, tensors, { kernels: options.kernels, backend, device: options.device });
    } catch (err) {
      const e = fromNativeError(err);
      throw ['INVALID_OPTION', 'NATIVE', 'BACKEND_UNAVAILABLE', 'OUT_OF_MEMORY'].includes(e.code)
        ? e
        : new ModelFileError(e.code, where, e.message);
    }
  };
  const backend = options.backend ?? 'cpu';
  const arch: Architecture | undefined = architectureByName(config.architecture);
  if (!arch?.cuda) {
    if (backend === 'cuda') {
      throw new AdaInferError(
        'BACKEND_UNAVAILABLE',
        `${where}: the CUDA backend does not run ${config.architecture} models; this one runs on the CPU (backend 'cpu' or 'auto')`,
      );
    }
    return make('cpu');
  }
  if (backend === 'auto') {
    // CUDA only when a device is really usable; if it then cannot take this model (a weight type its kernels
    // lack, too little memory), the CPU runs it, as it would without a GPU.
    return native().systemInfo().cuda.available ? tryCudaThenCpu(make) : make('cpu');
  }
  return make(backend);
}

/**
 * A loaded model: parsed header (GGUF) or folder (Hugging Face), tokenizer and mapped weights. Synchronous; see
 * lib/index.ts for the async API.
 */
export class TransformerModel {
  private nativeModel: NativeModel | undefined;

  private constructor(
    readonly path: string,
    /** The GGUF header; undefined for a Hugging Face folder. */
    readonly gguf: GGUFFile | undefined,
    /** The Hugging Face folder (config, checkpoint, tensor mapping); undefined for a GGUF file. */
    readonly hf: HfFolder | undefined,
    readonly config: TransformerConfig,
    readonly tokenizer: Tokenizer,
    nativeModel: NativeModel,
    /** Identity of the weights, for files derived from a model (exit classifiers). */
    readonly fingerprint: string,
  ) {
    this.nativeModel = nativeModel;
  }

  /** A GGUF file, or a Hugging Face model folder (config.json, safetensors, tokenizer.json) of a registered architecture. */
  static load(path: string, options: LoadOptions = {}): TransformerModel {
    if (isModelFolder(path)) return TransformerModel.loadFolder(path, options);
    const gguf = readGGUF(path);
    const config = configFromGGUF(gguf);
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
    const nativeModel = createNativeModel(path, path, config, tensors, options);
    return new TransformerModel(path, gguf, undefined, config, tokenizer, nativeModel, fingerprintGGUF(gguf));
  }

  /** A Hugging Face folder: its safetensors files are mapped as they are (every shard, zero-copy). */
  private static loadFolder(dir: string, options: LoadOptions): TransformerModel {
    const hf = readHfFolder(dir);
    const config = configFromHf(hf.config);
    const tensors = hf.tensors.map((t) => ({ name: t.name, type: t.type, dims: t.dims, offset: t.offset, file: t.file }));
    const nativeModel = createNativeModel(dir, hf.files, config, tensors, options);
    return new TransformerModel(dir, undefined, hf, config, hf.tokenizer, nativeModel, fingerprintHfFolder(hf));
  }

  /** Bytes of the weight tensors the model runs with. */
  get weightBytes(): number {
    return this.gguf ? this.gguf.tensors.reduce((a, t) => a + t.byteSize, 0) : this.hf!.tensors.reduce((a, t) => a + t.byteSize, 0);
  }

  /** Elements of those tensors. */
  get parameters(): number {
    return this.gguf
      ? this.gguf.tensors.reduce((a, t) => a + t.nElements, 0)
      : this.hf!.tensors.reduce((a, t) => a + t.dims.reduce((x, y) => x * y, 1), 0);
  }

  /** The GGUF's general.file_type (undefined for a Hugging Face folder). */
  get fileType(): number | undefined {
    const v = this.gguf?.metadata.get('general.file_type');
    return typeof v === 'number' ? v : undefined;
  }

  get native(): NativeModel {
    if (!this.nativeModel) throw new AdaInferError('DISPOSED', 'the model has been disposed');
    return this.nativeModel;
  }

  get disposed(): boolean {
    return this.nativeModel === undefined;
  }

  createContext(options: ContextOptions): TransformerContext {
    return new TransformerContext(this, options);
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
export class TransformerContext {
  readonly native: NativeContext;
  /** logitsRows' buffer, grown to the most rows asked for. */
  private rowsLogits = new Float32Array(0);
  readonly contextSize: number;
  readonly batchSize: number;
  readonly sequences: number;

  constructor(
    readonly model: TransformerModel,
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

  /**
   * The logits of hidden rows [row0, row0 + n), row i at [i * nVocab, (i + 1) * nVocab) of the returned view (valid
   * until the next call): one head call for all rows, so a few rows share each read of the head matrix.
   */
  logitsRows(row0: number, n: number): Float32Array {
    const size = n * this.model.config.nVocab;
    if (this.rowsLogits.length < size) this.rowsLogits = new Float32Array(size);
    const view = this.rowsLogits.subarray(0, size);
    try {
      this.native.headRows(row0, n, view);
    } catch (err) {
      throw fromNativeError(err);
    }
    return view;
  }

  dispose(): void {
    this.native.dispose();
  }
}
