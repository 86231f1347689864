/**
 * A Hugging Face model folder: config.json, the safetensors checkpoint (one file or shards), tokenizer.json
 * (+ tokenizer_config.json). readHfFolder() reads the headers, builds the tokenizer and maps every tensor the
 * architecture needs to the name the native loader expects (the GGUF names: token_embd.weight,
 * blk.N.attn_q.weight, ...), with its file, offset, ggml type and dims in ggml order (HF's row-major [out, in]
 * is ggml's [in, out]: the same bytes). Everything is checked here, before the native loader sees it:
 * a tensor missing (MISSING_TENSOR), a dtype the kernels cannot read (UNSUPPORTED_TENSOR_TYPE), a shape that
 * disagrees with config.json (SHAPE_MISMATCH), data not aligned to its element size (BAD_SAFETENSORS).
 *
 * Names: Llama's model.embed_tokens / model.layers.N.self_attn.q_proj / ... / lm_head (absent when
 * tie_word_embeddings); OPT's [model.]decoder.embed_tokens / embed_positions / project_in / project_out /
 * layers.N.{self_attn.{q,k,v,out}_proj, self_attn_layer_norm, fc1, fc2, final_layer_norm} / final_layer_norm,
 * with the LM head tied to embed_tokens (a lm_head.weight in the checkpoint is ignored, as transformers ties it).
 */
import * as fs from 'fs';
import * as path from 'path';
import { ModelFileError } from '../errors';
import { GGMLType } from '../gguf/types';
import { CheckpointTensor, ggmlTypeOfDType, readCheckpoint, SafetensorsCheckpoint } from '../safetensors/reader';
import { HfTokenizer } from '../tokenizer/hf';
import { HfConfig, HfLlamaConfig, HfOptConfig, readHfConfig } from './config';

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
  const wanted = config.modelType === 'llama' ? llamaTensors(config) : optTensors(config, optPrefix(checkpoint, dir));
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

function describe(c: HfConfig): string {
  const base = `hidden_size ${c.nEmbd}, ${c.nLayer} layers, ${c.nHead} heads`;
  return c.modelType === 'llama'
    ? `${base}, ${c.nKvHead} KV heads, head_dim ${c.headDim}, intermediate_size ${c.nFf}, vocab_size ${c.nVocab}`
    : `${base}, ffn_dim ${c.nFf}, word_embed_proj_dim ${c.embedDim}, vocab_size ${c.nVocab}, max_position_embeddings ${c.contextLength}`;
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

interface Wanted {
  name: string;
  hfName: string;
  /** HF (row-major) shape. */
  shape: number[];
  neoxRows?: boolean;
}

function llamaTensors(c: HfLlamaConfig): Wanted[] {
  const out: Wanted[] = [{ name: 'token_embd.weight', hfName: 'model.embed_tokens.weight', shape: [c.nVocab, c.nEmbd] }];
  const q = c.nHead * c.headDim;
  const kv = c.nKvHead * c.headDim;
  for (let l = 0; l < c.nLayer; l++) {
    const hf = `model.layers.${l}.`;
    const g = `blk.${l}.`;
    out.push(
      { name: g + 'attn_norm.weight', hfName: hf + 'input_layernorm.weight', shape: [c.nEmbd] },
      { name: g + 'attn_q.weight', hfName: hf + 'self_attn.q_proj.weight', shape: [q, c.nEmbd], neoxRows: true },
      { name: g + 'attn_k.weight', hfName: hf + 'self_attn.k_proj.weight', shape: [kv, c.nEmbd], neoxRows: true },
      { name: g + 'attn_v.weight', hfName: hf + 'self_attn.v_proj.weight', shape: [kv, c.nEmbd] },
      { name: g + 'attn_output.weight', hfName: hf + 'self_attn.o_proj.weight', shape: [c.nEmbd, q] },
      { name: g + 'ffn_norm.weight', hfName: hf + 'post_attention_layernorm.weight', shape: [c.nEmbd] },
      { name: g + 'ffn_gate.weight', hfName: hf + 'mlp.gate_proj.weight', shape: [c.nFf, c.nEmbd] },
      { name: g + 'ffn_up.weight', hfName: hf + 'mlp.up_proj.weight', shape: [c.nFf, c.nEmbd] },
      { name: g + 'ffn_down.weight', hfName: hf + 'mlp.down_proj.weight', shape: [c.nEmbd, c.nFf] },
    );
  }
  out.push({ name: 'output_norm.weight', hfName: 'model.norm.weight', shape: [c.nEmbd] });
  if (!c.tiedOutput) out.push({ name: 'output.weight', hfName: 'lm_head.weight', shape: [c.nVocab, c.nEmbd] });
  return out;
}

/** "model.decoder." or "decoder." (some OPT checkpoints lack "model."). */
function optPrefix(ck: SafetensorsCheckpoint, dir: string): string {
  for (const p of ['model.decoder.', 'decoder.']) if (ck.tensors.has(p + 'embed_tokens.weight')) return p;
  throw new ModelFileError('MISSING_TENSOR', ck.indexPath ?? ck.files[0]?.path ?? dir, 'the checkpoint has no "model.decoder.embed_tokens.weight" (nor "decoder.embed_tokens.weight")');
}

/**
 * OPT's tensors under the runtime's names: token_embd, position_embd, project_in / project_out (when
 * word_embed_proj_dim != hidden_size), blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
 * ffn_up (fc1), ffn_down (fc2)} with .weight and .bias, output_norm (the decoder's final_layer_norm).
 */
function optTensors(c: HfOptConfig, p: string): Wanted[] {
  const d = c.nEmbd;
  const out: Wanted[] = [
    { name: 'token_embd.weight', hfName: p + 'embed_tokens.weight', shape: [c.nVocab, c.embedDim] },
    { name: 'position_embd.weight', hfName: p + 'embed_positions.weight', shape: [c.contextLength + c.positionOffset, d] },
  ];
  if (c.embedDim !== d) {
    out.push(
      { name: 'project_in.weight', hfName: p + 'project_in.weight', shape: [d, c.embedDim] },
      { name: 'project_out.weight', hfName: p + 'project_out.weight', shape: [c.embedDim, d] },
    );
  }
  const linear = (name: string, hfName: string, nOut: number, nIn: number): Wanted[] => [
    { name: name + '.weight', hfName: hfName + '.weight', shape: [nOut, nIn] },
    ...(c.bias ? [{ name: name + '.bias', hfName: hfName + '.bias', shape: [nOut] }] : []),
  ];
  const norm = (name: string, hfName: string): Wanted[] => [
    { name: name + '.weight', hfName: hfName + '.weight', shape: [d] },
    { name: name + '.bias', hfName: hfName + '.bias', shape: [d] },
  ];
  for (let l = 0; l < c.nLayer; l++) {
    const hf = `${p}layers.${l}.`;
    const g = `blk.${l}.`;
    out.push(
      ...norm(g + 'attn_norm', hf + 'self_attn_layer_norm'),
      ...linear(g + 'attn_q', hf + 'self_attn.q_proj', d, d),
      ...linear(g + 'attn_k', hf + 'self_attn.k_proj', d, d),
      ...linear(g + 'attn_v', hf + 'self_attn.v_proj', d, d),
      ...linear(g + 'attn_output', hf + 'self_attn.out_proj', d, d),
      ...norm(g + 'ffn_norm', hf + 'final_layer_norm'),
      ...linear(g + 'ffn_up', hf + 'fc1', c.nFf, d),
      ...linear(g + 'ffn_down', hf + 'fc2', d, c.nFf),
    );
  }
  if (c.finalLayerNorm) out.push(...norm('output_norm', p + 'final_layer_norm'));
  return out;
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
      // LlamaTokenizer and OPT's GPT2Tokenizer (add_bos_token) prepend BOS.
      defaultAddBos: true,
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
