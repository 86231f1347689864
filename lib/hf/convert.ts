/**
 * Hugging Face Llama folder → GGUF, as llama.cpp's convert_hf_to_gguf.py writes it (so llama.cpp reads the
 * result, and so does this runtime's GGUF loader):
 *
 *  - tensors under the GGUF names (token_embd, blk.N.attn_q, ..., output_norm, output — absent when the head is
 *    tied), data as HF stores it (a [out, in] row-major Linear weight is GGUF's [in, out]) except the Q and K
 *    weights, whose rows are permuted from Hugging Face's rotate-half order to GGUF's adjacent pairs
 *    (TransformerModel.permute: within each head, row 2i + j comes from row j * headDim/2 + i);
 *  - the llama.* hyper-parameters, general.architecture / name / file_type;
 *  - the tokenizer: a byte-level BPE tokenizer.json becomes tokenizer.ggml.model "gpt2" with its tokens
 *    (padded with unused [PAD<id>] tokens up to vocab_size), token types, merges, special ids, add_bos/add_eos,
 *    and the pre-tokenizer ("gpt-2" for ByteLevel's own regex, "llama-bpe" for Llama 3's Split + ByteLevel).
 *    A SentencePiece-style tokenizer.json (BPE with byte_fallback, <0xXX> byte tokens, "▁" for spaces through a
 *    Prepend + Replace normalizer or a Metaspace pre-tokenizer: Llama 2, TinyLlama, Mistral) becomes
 *    tokenizer.ggml.model "llama" as convert_hf_to_gguf.py's LlamaHfVocab path writes it (tokens in id order,
 *    pre "default", <0xXX> byte tokens BYTE, the special tokens — BOS, EOS, UNK, PAD, added tokens marked
 *    special — CONTROL, special ids, add_bos/add_eos), with two differences: the scores (spmScores), and added
 *    tokens not marked special are USER_DEFINED wherever their id lies (LlamaHfVocab leaves those inside the
 *    BPE model's id range NORMAL, which llama.cpp then never splits out of the text; Hugging Face does). Any
 *    other tokenizer shape is a TOKENIZER error;
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
import { TokenType } from '../tokenizer/types';
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
  if (folder.config.modelType !== 'llama') {
    throw new ModelFileError('UNSUPPORTED_ARCHITECTURE', dir, `convert writes llama GGUF files; model_type '${folder.config.modelType}' is not converted`);
  }
  const c = folder.config as HfLlamaConfig;
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
  if (tok.model === 'llama') {
    writeSpmTokenizer(w, tok, dir);
    return;
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
  writeSpecialIds(w, tok);
}

function writeSpecialIds(w: GGUFWriter, tok: HfTokenizer): void {
  const v = tok.vocab;
  if (v.bosId !== undefined) w.setU32('tokenizer.ggml.bos_token_id', v.bosId);
  if (v.eosId !== undefined) w.setU32('tokenizer.ggml.eos_token_id', v.eosId);
  if (v.unkId !== undefined) w.setU32('tokenizer.ggml.unknown_token_id', v.unkId);
  if (v.padId !== undefined) w.setU32('tokenizer.ggml.padding_token_id', v.padId);
  w.setBool('tokenizer.ggml.add_bos_token', v.addBos);
  w.setBool('tokenizer.ggml.add_eos_token', v.addEos);
}

/** A SentencePiece-style tokenizer.json as tokenizer.ggml.model "llama" (see the file comment). */
function writeSpmTokenizer(w: GGUFWriter, tok: HfTokenizer, dir: string): void {
  const refuse = (why: string): never => {
    throw new AdaInferError('TOKENIZER', `${dir}: convert cannot write this tokenizer.json as a llama.cpp SentencePiece tokenizer: ${why}`);
  };
  if (!tok.byteFallback) refuse('its BPE model has no byte_fallback (supported: byte-level BPE, or BPE with byte_fallback and "▁" spaces)');
  if (tok.ignoreMerges) refuse('its BPE model has ignore_merges');
  const n = tok.vocabSize;
  const tokens: string[] = [];
  const types: number[] = [];
  for (let id = 0; id < n; id++) {
    tokens.push(tok.tokenText(id));
    types.push(tok.tokenType(id));
  }
  const addSpacePrefix = spmSpacePrefix(tok.normalizer, tok.preTokenizer, tokens);
  if (typeof addSpacePrefix === 'string') refuse(addSpacePrefix);
  // LlamaHfVocab: the tokenizer's special tokens (transformers' all_special_ids: BOS, EOS, UNK, PAD) are
  // control tokens — UNK included, so no token is UNKNOWN; byte tokens stay BYTE.
  for (const id of [tok.vocab.bosId, tok.vocab.eosId, tok.vocab.unkId, tok.vocab.padId]) {
    if (id !== undefined && types[id] !== TokenType.Byte) types[id] = TokenType.Control;
  }
  w.setString('tokenizer.ggml.model', 'llama');
  w.setString('tokenizer.ggml.pre', 'default');
  w.setArray('tokenizer.ggml.tokens', GGUFValueType.STRING, tokens);
  w.setArray('tokenizer.ggml.scores', GGUFValueType.FLOAT32, spmScores(tokens, types, tok.merges));
  w.setArray('tokenizer.ggml.token_type', GGUFValueType.INT32, types);
  writeSpecialIds(w, tok);
  w.setBool('tokenizer.ggml.add_space_prefix', addSpacePrefix as boolean);
}

/**
 * Scores for llama.cpp's SentencePiece tokenizer (llm_tokenizer_spm, lib/tokenizer/spm.ts), which merges the
 * adjacent pair whose concatenation is a token of the highest score, leftmost first on ties. llama.cpp's
 * LlamaHfVocab writes -1000 for every token (a placeholder), which turns that into "leftmost pair first" and
 * gives other ids than tokenizer.json's BPE wherever the order matters (s e e n: "ee" leftmost first, "en" by
 * rank — see hf_convert_spm.test.ts). Here a token made by a merge scores -(rank of the first merge that makes
 * it), so the highest score is the lowest merge rank, as BPE applies them; every other token (characters,
 * bytes, special and padding tokens, which no merge makes) scores -(number of merges), below all of them. For
 * a tokenizer.json converted from a SentencePiece model (transformers' SentencePieceExtractor lists every split
 * of every piece as a merge, grouped by the piece's score) this reproduces the BPE tokenization; a hand-made
 * merge list that leaves out some split of a token can still differ (SPM merges any pair that forms a token).
 */
export function spmScores(tokens: readonly string[], types: readonly number[], merges: readonly string[]): number[] {
  const firstRank = new Map<string, number>();
  merges.forEach((m, rank) => {
    const sp = m.indexOf(' ', 1);
    const text = m.slice(0, sp) + m.slice(sp + 1);
    if (!firstRank.has(text)) firstRank.set(text, rank);
  });
  const floor = -merges.length;
  return tokens.map((t, id) => {
    const rank = types[id] === TokenType.Normal ? firstRank.get(t) : undefined;
    return rank === undefined ? floor : 0 - rank; // 0 - 0 is +0
  });
}

/**
 * Whether a SentencePiece-style tokenizer.json prepends "▁" (llama.cpp's add_space_prefix), or why it has no
 * llama.cpp equivalent. Supported: the legacy normalizer (Prepend "▁" and Replace " " → "▁", no
 * pre-tokenizer: Llama 2, TinyLlama, Mistral), or a Metaspace pre-tokenizer without normalizer (newer
 * transformers) that does not split at "▁" — or that splits but where no token has "▁" past its start, so that
 * splitting changes nothing.
 */
export function spmSpacePrefix(normalizer: unknown, pre: unknown, tokens: readonly string[]): boolean | string {
  const SP = '\u2581';
  type Part = { type?: string; prepend?: string; pattern?: { String?: string }; content?: string; normalizers?: unknown[] };
  const parts = (n: unknown): Part[] | undefined => {
    if (n === null || n === undefined) return [];
    const o = n as Part;
    if (typeof o !== 'object') return undefined;
    if (o.type === 'Sequence') return Array.isArray(o.normalizers) ? o.normalizers.flatMap((x) => parts(x) ?? [{ type: '?' }]) : undefined;
    return [o];
  };
  const norm = parts(normalizer);
  const describe = `normalizer ${JSON.stringify(normalizer)}, pre-tokenizer ${JSON.stringify(pre ?? null)}`;
  if (norm === undefined) return `unsupported ${describe}`;
  if (norm.length > 0) {
    const replace = norm.filter((p) => p.type === 'Replace' && p.pattern?.String === ' ' && p.content === SP);
    const prepend = norm.filter((p) => p.type === 'Prepend' && p.prepend === SP);
    if (replace.length !== 1 || prepend.length > 1 || replace.length + prepend.length !== norm.length || (pre !== null && pre !== undefined)) {
      return `unsupported ${describe} (supported: Prepend "▁" + Replace " " → "▁", or a Metaspace pre-tokenizer)`;
    }
    return prepend.length === 1;
  }
  const m = pre as { type?: string; replacement?: string; prepend_scheme?: string; add_prefix_space?: boolean; split?: boolean } | null | undefined;
  if (!m || m.type !== 'Metaspace' || (m.replacement ?? SP) !== SP) {
    return `unsupported ${describe} (supported: Prepend "▁" + Replace " " → "▁", or a Metaspace pre-tokenizer)`;
  }
  if (m.split !== false && tokens.some((t) => t.indexOf(SP, 1) > 0)) {
    return 'its Metaspace pre-tokenizer splits the text at "▁", which llama.cpp does not, and some tokens have "▁" inside';
  }
  const scheme = m.prepend_scheme ?? (m.add_prefix_space === false ? 'never' : 'always');
  if (!['always', 'first', 'never'].includes(scheme)) return `unsupported Metaspace prepend_scheme ${JSON.stringify(scheme)}`;
  return scheme !== 'never';
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
 * out row 2i + j = in row j * headDim/2 + i (llama.cpp's TransformerModel.permute).
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
