/**
 * A Hugging Face model folder: config.json, the safetensors checkpoint (one file or shards), tokenizer.json
 * (+ tokenizer_config.json). readHfFolder() reads the headers, builds the tokenizer and maps every tensor the
 * architecture needs to the name the native loader expects (the GGUF names: token_embd.weight,
 * blk.N.attn_q.weight, ...), with its file, offset, ggml type and dims in ggml order (HF's row-major [out, in]
 * is ggml's [in, out]: the same bytes). Everything is checked here, before the native loader sees it:
 * a tensor missing (MISSING_TENSOR), a dtype the kernels cannot read (UNSUPPORTED_TENSOR_TYPE), a shape that
 * disagrees with config.json (SHAPE_MISMATCH), data not aligned to its element size (BAD_SAFETENSORS).
 *
 * Which checkpoint tensor is which runtime tensor, the folder's architecture says (lib/model/architectures/*.ts,
 * HfMapping.tensors).
 */
import * as fs from 'fs';
import * as path from 'path';
import { ModelFileError } from '../errors';
import { GGMLType } from '../gguf/types';
import { CheckpointTensor, ggmlTypeOfDType, readCheckpoint, SafetensorsCheckpoint } from '../safetensors/reader';
import { HfTokenizer } from '../tokenizer/hf';
import { architectureOfModelType, HfMapping } from '../model/architectures';
import { HfConfig, readHfConfig } from './config';

/** A tensor as the native loader takes it, plus where it came from. */
export interface HfTensor {
  /** The runtime's (GGUF-style) name. */
  name: string;
  /** The checkpoint's name. */
  hfName: string;
  type: GGMLType;
  /** ggml order: dims[0] is the row length (HF shape reversed). */
  dims: number[];
  /** Index into HfFolder.files. */
  file: number;
  /** Absolute byte offset in that file. */
  offset: number;
  byteSize: number;
  /**
   * Llama Q/K weights: rows are in Hugging Face's rotate-half order (pairs (i, i + headDim/2) of each head),
   * not GGUF's adjacent pairs; the blocks apply NEOX-style RoPE to them (or convert permutes them).
   */
  neoxRows?: boolean;
}

export interface HfFolder {
  dir: string;
  config: HfConfig;
  checkpoint: SafetensorsCheckpoint;
  /** The checkpoint's files, by HfTensor.file. */
  files: string[];
  tokenizer: HfTokenizer;
  tensors: HfTensor[];
  tensorsByName: Map<string, HfTensor>;
}

/** Is `p` a folder (a Hugging Face model) rather than a file (GGUF)? */
export function isModelFolder(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

export function readHfFolder(dir: string): HfFolder {
  const config = readHfConfig(dir);
  const checkpoint = readCheckpoint(dir);
  const tokenizer = readHfTokenizer(dir, config);
  const wanted = mappingOf(config).tensors(config, checkpoint, dir);
  const tensors: HfTensor[] = [];
  for (const w of wanted) {
    const t = checkpoint.tensors.get(w.hfName);
    const file = checkpoint.files[t?.file ?? 0].path;
    if (!t) {
      throw new ModelFileError('MISSING_TENSOR', checkpoint.indexPath ?? file, `the checkpoint has no tensor "${w.hfName}" (${config.modelType}, ${describe(config)})`);
    }
    const type = ggmlTypeOfDType(file, t);
    if (t.shape.length !== w.shape.length || t.shape.some((d, i) => d !== w.shape[i])) {
      throw new ModelFileError(
        'SHAPE_MISMATCH',
        file,
        `tensor "${w.hfName}" has shape [${t.shape.join(', ')}], but config.json (${describe(config)}) needs [${w.shape.join(', ')}]`,
      );
    }
    checkAlignment(file, t);
    tensors.push({
      name: w.name,
      hfName: w.hfName,
      type,
      dims: [...t.shape].reverse(),
      file: t.file,
      offset: t.absoluteOffset,
      byteSize: t.byteSize,
      ...(w.neoxRows ? { neoxRows: true } : {}),
    });
  }
  return {
    dir,
    config,
    checkpoint,
    files: checkpoint.files.map((f) => f.path),
    tokenizer,
    tensors,
    tensorsByName: new Map(tensors.map((t) => [t.name, t])),
  };
}

/** The folder's architecture's mapping (readHfConfig only returns configs of architectures that have one). */
function mappingOf(c: HfConfig): HfMapping {
  return architectureOfModelType(c.modelType)!.hf!;
}

function describe(c: HfConfig): string {
  return mappingOf(c).describe(c);
}

/** Element alignment: the kernels read F32 as floats and F16/BF16 as halves, in place. */
function checkAlignment(file: string, t: CheckpointTensor): void {
  const need = t.dtype === 'F32' ? 4 : 2;
  if (t.absoluteOffset % need !== 0) {
    throw new ModelFileError(
      'BAD_SAFETENSORS',
      file,
      `tensor "${t.name}" (${t.dtype}) data at file offset ${t.absoluteOffset} is not aligned to ${need} bytes, so it cannot be read in place`,
    );
  }
}

export const TOKENIZER_FILE = 'tokenizer.json';
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';

/**
 * The tokenizer.json equivalent of GPT-2's "slow" tokenizer files (vocab.json + merges.txt: what facebook/opt-*
 * ship): byte-level BPE, the special tokens named by tokenizer_config.json as added tokens.
 */
function gpt2SlowTokenizer(vocabFile: string, mergesFile: string, tokenizerConfig: unknown, readJson: (f: string) => unknown): unknown {
  const vocab = readJson(vocabFile);
  const merges = fs
    .readFileSync(mergesFile, 'utf8')
    .split('\n')
    .filter((l, i) => l.trim() !== '' && !(i === 0 && l.startsWith('#version')));
  const tc = (tokenizerConfig ?? {}) as Record<string, unknown>;
  const specials = new Set<string>();
  for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
    const v = tc[key];
    const text = typeof v === 'string' ? v : v && typeof v === 'object' ? (v as { content?: unknown }).content : undefined;
    if (typeof text === 'string') specials.add(text);
  }
  const ids = vocab as Record<string, number>;
  const byteLevel = { type: 'ByteLevel', add_prefix_space: tc.add_prefix_space === true, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    added_tokens: [...specials]
      .filter((t) => vocab !== null && typeof vocab === 'object' && Object.prototype.hasOwnProperty.call(vocab, t))
      .map((t) => ({ id: ids[t], content: t, special: true, single_word: false, lstrip: false, rstrip: false, normalized: false })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: { type: 'BPE', vocab, merges, dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false },
  };
}

/**
 * tokenizer.json (+ tokenizer_config.json) — or GPT-2's vocab.json + merges.txt when there is no tokenizer.json —
 * padded to the model's vocabulary.
 */
export function readHfTokenizer(dir: string, config: HfConfig): HfTokenizer {
  const file = path.join(dir, TOKENIZER_FILE);
  const vocabFile = path.join(dir, 'vocab.json');
  const mergesFile = path.join(dir, 'merges.txt');
  const slow = !fs.existsSync(file) && fs.existsSync(vocabFile) && fs.existsSync(mergesFile);
  if (!fs.existsSync(file) && !slow) {
    throw new ModelFileError('FILE_NOT_FOUND', file, `the model folder has no ${TOKENIZER_FILE} (nor GPT-2's vocab.json + merges.txt)`);
  }
  const readJson = (f: string): unknown => {
    try {
      return JSON.parse(fs.readFileSync(f, 'utf8'));
    } catch (err) {
      throw new ModelFileError('TOKENIZER', f, `is not valid JSON: ${(err as Error).message}`);
    }
  };
  const cfgFile = path.join(dir, TOKENIZER_CONFIG_FILE);
  const tokenizerConfig = fs.existsSync(cfgFile) ? readJson(cfgFile) : undefined;
  let tokenizer: HfTokenizer;
  try {
    tokenizer = new HfTokenizer({
      tokenizer: slow ? gpt2SlowTokenizer(vocabFile, mergesFile, tokenizerConfig, readJson) : readJson(file),
      tokenizerConfig,
      config: config.raw,
      vocabSize: config.nVocab,
      defaultAddBos: mappingOf(config).addBos,
    });
  } catch (err) {
    if (err instanceof ModelFileError) throw err;
    throw new ModelFileError('TOKENIZER', file, (err as Error).message, { cause: err });
  }
  if (tokenizer.definedTokens > config.nVocab) {
    throw new ModelFileError(
      'SHAPE_MISMATCH',
      file,
      `the tokenizer defines ${tokenizer.definedTokens} tokens but the model's vocabulary (config.json vocab_size) is ${config.nVocab}`,
    );
  }
  return tokenizer;
}
