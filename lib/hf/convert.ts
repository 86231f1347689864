/**
 * Hugging Face Llama folder → GGUF, as llama.cpp's convert_hf_to_gguf.py writes it (so llama.cpp reads the
 * result, and so does this runtime's GGUF loader):
 *
 *  - tensors under the GGUF names (token_embd, blk.N.attn_q, ..., output_norm, output — absent when the head is
 *    tied), data as HF stores it (a [out, in] row-major Linear weight is GGUF's [in, out]) except the Q and K
 *    weights, whose rows are permuted from Hugging Face's rotate-half order to GGUF's adjacent pairs
 *    (LlamaModel.permute: within each head, row 2i + j comes from row j * headDim/2 + i);
 *  - the llama.* hyper-parameters, general.architecture / name / file_type;
 *  - the tokenizer: a byte-level BPE tokenizer.json becomes tokenizer.ggml.model "gpt2" with its tokens
 *    (padded with unused [PAD<id>] tokens up to vocab_size), token types, merges, special ids, add_bos/add_eos,
 *    and the pre-tokenizer ("gpt-2" for ByteLevel's own regex, "llama-bpe" for Llama 3's Split + ByteLevel).
 *    Other tokenizers (SentencePiece-style BPE, which llama.cpp converts from tokenizer.model) are refused;
 *  - weight types: `type` is one of the quantize targets (F32, F16 — the default, as convert_hf_to_gguf —, BF16,
 *    Q8_0, Q4_K_M, ...); which tensor gets which type follows `adainfer quantize` exactly (planTensorTypes: 1-D
 *    tensors stay F32, the head gets more bits, ...), and quantized types go through the same native quantizer.
 * OPT has no llama.cpp architecture: converting it is an UNSUPPORTED_ARCHITECTURE error.
 */
import * as fs from 'fs';
import { AdaInferError, ModelFileError, OptionError } from '../errors';
import { GGUFWriter } from '../gguf';
import { GGMLType, GGUFValueType, ggmlTypeName, rowBytes } from '../gguf/types';
import { dequantizeRows, quantizeRows } from '../quant/native_quant';
import { planTensorTypes, QuantTarget, targetBaseType, targetFileType, TensorPlan } from '../quant/quantize_model';
import { HfTokenizer } from '../tokenizer/hf';
import { HfLlamaConfig } from './config';
import { HfTensor, readHfFolder } from './folder';

export interface ConvertOptions {
  /** Weight type (default F16). */
  type?: QuantTarget;
  pure?: boolean;
  keepOutputF16?: boolean;
  threads?: number;
  log?: (message: string) => void;
}

export interface ConvertResult {
  plans: TensorPlan[];
  outputBytes: number;
  seconds: number;
}

/** Llama 3's pre-tokenizer regex, as tokenizer.json spells it. */
const LLAMA3_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

export function convertHfToGGUF(dir: string, out: string, options: ConvertOptions = {}): ConvertResult {
  const t0 = Date.now();
  const log = options.log ?? (() => undefined);
  const target = options.type ?? 'F16';
  const folder = readHfFolder(dir);
  const c = folder.config;
  if (c.modelType !== 'llama') {
    throw new ModelFileError('UNSUPPORTED_ARCHITECTURE', dir, `convert writes llama GGUF files; model_type '${c.modelType}' has no llama.cpp architecture`);
  }
  const writer = new GGUFWriter();
  writeLlamaMetadata(writer, c, target);
  writeTokenizer(writer, folder.tokenizer, dir);

  const plans = planTensorTypes(folder.tensors, target, { pure: options.pure, keepOutputF16: options.keepOutputF16 });
  const threads = Math.max(1, Math.floor(options.threads ?? 1));
  const fds = folder.files.map((f) => fs.openSync(f, 'r'));
  try {
    folder.tensors.forEach((t, i) => {
      const plan = plans[i];
      if (plan.reason) log(`${t.name}: ${plan.reason}`);
      writer.addTensor(t.name, t.dims, plan.to, () => {
        log(`${t.hfName} -> ${t.name} [${t.dims.join(' x ')}] ${ggmlTypeName(t.type)} -> ${ggmlTypeName(plan.to)}${t.neoxRows ? ' (Q/K rows permuted)' : ''}`);
        return convertTensor(fds[t.file], t, plan.to, c, threads);
      });
    });
    const res = writer.write(out);
    return { plans, outputBytes: res.fileSize, seconds: (Date.now() - t0) / 1000 };
  } finally {
    for (const fd of fds) fs.closeSync(fd);
  }
}

function writeLlamaMetadata(w: GGUFWriter, c: HfLlamaConfig, target: QuantTarget): void {
  w.setString('general.architecture', 'llama');
  w.setString('general.name', c.name);
  w.setU32('general.file_type', targetFileType(target));
  if (![GGMLType.F32, GGMLType.F16, GGMLType.BF16].includes(targetBaseType(target))) w.setU32('general.quantization_version', 2);
  w.setU32('llama.context_length', c.contextLength);
  w.setU32('llama.embedding_length', c.nEmbd);
  w.setU32('llama.block_count', c.nLayer);
  w.setU32('llama.feed_forward_length', c.nFf);
  w.setU32('llama.rope.dimension_count', c.nRot);
  w.setU32('llama.attention.head_count', c.nHead);
  w.setU32('llama.attention.head_count_kv', c.nKvHead);
  if (c.headDim !== c.nEmbd / c.nHead) {
    w.setU32('llama.attention.key_length', c.headDim);
    w.setU32('llama.attention.value_length', c.headDim);
  }
  w.setF32('llama.attention.layer_norm_rms_epsilon', c.rmsEps);
  w.setF32('llama.rope.freq_base', c.ropeBase);
  w.setU32('llama.vocab_size', c.nVocab);
}

function writeTokenizer(w: GGUFWriter, tok: HfTokenizer, dir: string): void {
  if (tok.model !== 'gpt2') {
    throw new AdaInferError('TOKENIZER', `${dir}: convert supports byte-level BPE tokenizers (GPT-2 / Llama 3 style); this tokenizer.json is SentencePiece-style`);
  }
  const pre = preTokenizerName(tok.preTokenizer);
  if (pre === undefined) {
    throw new AdaInferError('TOKENIZER', `${dir}: the tokenizer.json pre-tokenizer ${JSON.stringify(tok.preTokenizer)} has no llama.cpp equivalent known to convert`);
  }
  const n = tok.vocabSize;
  const tokens: string[] = [];
  const types: number[] = [];
  for (let id = 0; id < n; id++) {
    tokens.push(tok.tokenText(id));
    types.push(tok.tokenType(id));
  }
  w.setString('tokenizer.ggml.model', 'gpt2');
  w.setString('tokenizer.ggml.pre', pre);
  w.setArray('tokenizer.ggml.tokens', GGUFValueType.STRING, tokens);
  w.setArray('tokenizer.ggml.token_type', GGUFValueType.INT32, types);
  w.setArray('tokenizer.ggml.merges', GGUFValueType.STRING, tok.merges);
  const v = tok.vocab;
  if (v.bosId !== undefined) w.setU32('tokenizer.ggml.bos_token_id', v.bosId);
  if (v.eosId !== undefined) w.setU32('tokenizer.ggml.eos_token_id', v.eosId);
  if (v.unkId !== undefined) w.setU32('tokenizer.ggml.unknown_token_id', v.unkId);
  if (v.padId !== undefined) w.setU32('tokenizer.ggml.padding_token_id', v.padId);
  w.setBool('tokenizer.ggml.add_bos_token', v.addBos);
  w.setBool('tokenizer.ggml.add_eos_token', v.addEos);
}

/** The llama.cpp pre-tokenizer name of a tokenizer.json pre_tokenizer, if known. */
export function preTokenizerName(pre: unknown): string | undefined {
  const o = pre as { type?: string; use_regex?: boolean; add_prefix_space?: boolean; pretokenizers?: unknown[] } | null;
  if (!o || typeof o !== 'object') return undefined;
  if (o.type === 'ByteLevel' && o.use_regex !== false && o.add_prefix_space !== true) return 'gpt-2';
  if (o.type === 'Sequence' && Array.isArray(o.pretokenizers) && o.pretokenizers.length === 2) {
    const [split, bl] = o.pretokenizers as Array<{ type?: string; pattern?: { Regex?: string }; use_regex?: boolean }>;
    if (split?.type === 'Split' && split.pattern?.Regex === LLAMA3_REGEX && bl?.type === 'ByteLevel' && bl.use_regex === false) return 'llama-bpe';
  }
  return undefined;
}

/** One tensor's bytes in type `to`: Q/K rows permuted to the GGUF order, converted row chunk by row chunk. */
function* convertTensor(fd: number, t: HfTensor, to: GGMLType, c: HfLlamaConfig, threads: number): Iterable<Uint8Array> {
  const nPerRow = t.dims[0];
  const nRows = t.dims.slice(1).reduce((a, b) => a * b, 1);
  const inRow = rowBytes(t.type, nPerRow);
  const raw = new Uint8Array(t.byteSize);
  readExactly(fd, raw, t.offset);
  const rows = t.neoxRows ? permuteRows(raw, inRow, nRows, c.headDim) : raw;
  if (to === t.type) {
    yield rows;
    return;
  }
  const chunkRows = Math.max(1, Math.floor((8 << 20) / nPerRow));
  for (let r = 0; r < nRows; r += chunkRows) {
    const n = Math.min(chunkRows, nRows - r);
    const part = rows.subarray(r * inRow, (r + n) * inRow);
    const f32 = t.type === GGMLType.F32 ? new Float32Array(part.slice().buffer) : dequantizeRows(t.type, part, n, nPerRow);
    yield quantizeRows(to, f32, n, nPerRow, threads);
  }
}

/**
 * Hugging Face rotate-half rows → GGUF adjacent-pair rows, per head of `headDim` rows:
 * out row 2i + j = in row j * headDim/2 + i (llama.cpp's LlamaModel.permute).
 */
export function permuteRows(src: Uint8Array, rowBytes: number, nRows: number, headDim: number): Uint8Array {
  if (nRows % headDim !== 0) throw new OptionError('tensor', `${nRows} rows are not whole heads of ${headDim}`);
  const out = new Uint8Array(src.length);
  const half = headDim / 2;
  for (let h = 0; h < nRows; h += headDim) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const from = h + j * half + i;
        const to = h + 2 * i + j;
        out.set(src.subarray(from * rowBytes, (from + 1) * rowBytes), to * rowBytes);
      }
    }
  }
  return out;
}

function readExactly(fd: number, buf: Uint8Array, position: number): void {
  let off = 0;
  while (off < buf.length) {
    const n = fs.readSync(fd, buf, off, buf.length - off, position + off);
    if (n <= 0) throw new AdaInferError('FILE_READ', `unexpected end of file at byte ${position + off}`);
    off += n;
  }
}
