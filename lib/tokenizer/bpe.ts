/**
 * GPT-2 style byte-level BPE (GGUF tokenizer.ggml.model = "gpt2"), reproducing llama.cpp's
 * llm_tokenizer_bpe:
 *
 *  - special tokens are split out first (Vocab.partition); no space prefix is added;
 *  - each raw fragment is cut into pre-tokens ("words") by the regular expressions of the
 *    pre-tokenizer named by tokenizer.ggml.pre. Like llama.cpp's unicode_regex_split, each expression
 *    in turn splits every piece the previous one produced, and text between matches is kept as a
 *    piece of its own;
 *  - a word's UTF-8 bytes are written with GPT-2's bytes_to_unicode characters (the vocabulary's
 *    alphabet), then merged pairwise by merge rank, lowest rank first (ties: leftmost), with a heap;
 *    pre-tokenizers with ignore_merges (llama3) take a word that is itself a token as is;
 *  - a final symbol that is not a token (only with inconsistent merges) is emitted character by
 *    character, skipping characters that are not tokens either.
 */
import { TokenizerBase } from './stream_decoder';
import {
  BinaryHeap,
  EncodeOptions,
  Tokenizer,
  TokenizerMetadata,
  tokenizerError,
  utf8Encode,
  Vocab,
  wellFormed,
} from './types';

// ---------------------------------------------------------------------------------------------------
// GPT-2's byte <-> unicode table
// ---------------------------------------------------------------------------------------------------

/**
 * bytes_to_unicode: printable bytes (! .. ~, ¡ .. ¬, ® .. ÿ) stand for themselves; the other 68 bytes
 * (controls, space, DEL, NBSP, soft hyphen) are given the characters U+0100, U+0101, ... in byte order,
 * so every byte is a visible, non-space character.
 */
function buildByteTables(): { byteToChar: string[]; charToByte: Map<number, number> } {
  const byteToChar = new Array<string>(256);
  const charToByte = new Map<number, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    const cp = printable ? b : 256 + extra++;
    byteToChar[b] = String.fromCharCode(cp);
    charToByte.set(cp, b);
  }
  return { byteToChar, charToByte };
}
export const { byteToChar: BYTE_TO_CHAR, charToByte: CHAR_TO_BYTE } = buildByteTables();

// ---------------------------------------------------------------------------------------------------
// Pre-tokenizers
// ---------------------------------------------------------------------------------------------------

// \s is Unicode White_Space, as in llama.cpp's unicode tables (JS's \s would add U+FEFF and miss U+0085).
const S = '\\p{White_Space}';
const NOT_S = '\\P{White_Space}';
/** GPT-2's pattern. */
export const GPT2_PATTERN = `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${S}\\p{L}\\p{N}]+|${S}+(?!${NOT_S})|${S}+`;
/** The case-insensitive contractions of Llama 3 / Qwen 2 ((?i:'s|'t|...) has no JS equivalent in Node 20). */
const CONTRACTIONS = `'(?:[sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])`;
const llama3Like = (digits: string): string =>
  `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|${digits}| ?[^${S}\\p{L}\\p{N}]+[\\r\\n]*|${S}*[\\r\\n]+|${S}+(?!${NOT_S})|${S}+`;
/** Llama 3's pattern: numbers in groups of up to three digits. */
export const LLAMA3_PATTERN = llama3Like('\\p{N}{1,3}');
/** Qwen 2's pattern: Llama 3's with single digits. */
export const QWEN2_PATTERN = llama3Like('\\p{N}');

export interface PreTokenizer {
  /** Applied in order; each splits every piece the previous ones produced. */
  readonly patterns: string[];
  /** A word that is itself a token is not merged (llama.cpp ignore_merges). */
  readonly ignoreMerges: boolean;
  /** Default of add_bos_token when the GGUF does not say. */
  readonly addBos: boolean;
  /** clean_up_tokenization_spaces on decode. */
  readonly cleanSpaces: boolean;
}

const family = (patterns: string[], ignoreMerges: boolean, addBos: boolean) => (cleanSpaces: boolean): PreTokenizer => ({
  patterns,
  ignoreMerges,
  addBos,
  cleanSpaces,
});
const DEFAULT = family([`[\\p{P}\\$\\+<=>\\^~\\|]+`, GPT2_PATTERN, `\\p{N}+`, `[0-9][0-9][0-9]`], false, false);
const GPT2 = family([GPT2_PATTERN], false, false);
const LLAMA3 = family([LLAMA3_PATTERN], true, true);
const LLAMA3_MERGING = family([LLAMA3_PATTERN], false, false);
const QWEN2 = family([QWEN2_PATTERN], false, false);
const STARCODER = family([`\\p{N}`, GPT2_PATTERN], false, false);

/** tokenizer.ggml.pre names, with llama.cpp's settings for them. */
const PRE_TOKENIZERS: Record<string, PreTokenizer> = {
  default: DEFAULT(true),
  'gpt-2': GPT2(true),
  gpt2: GPT2(true),
  'phi-2': GPT2(true),
  mpt: GPT2(true),
  olmo: GPT2(true),
  jais: GPT2(true),
  'roberta-bpe': GPT2(true),
  exaone4: GPT2(true),
  llama3: LLAMA3(true),
  'llama-v3': LLAMA3(true),
  'llama-bpe': LLAMA3(true),
  falcon3: LLAMA3(true),
  pixtral: LLAMA3(true),
  dbrx: LLAMA3_MERGING(true),
  'smaug-bpe': LLAMA3_MERGING(true),
  qwen2: QWEN2(false),
  'deepseek-r1-qwen': QWEN2(false),
  stablelm2: QWEN2(true),
  megrez: QWEN2(true),
  smollm: STARCODER(false),
  'command-r': STARCODER(false),
  starcoder: STARCODER(true),
  refact: STARCODER(true),
  codeshell: STARCODER(true),
  exaone: STARCODER(true),
  'minerva-7b': STARCODER(true),
};

export const SUPPORTED_PRE_TOKENIZERS = Object.keys(PRE_TOKENIZERS);

export function preTokenizerFor(pre: string | undefined): PreTokenizer {
  // llama.cpp uses "default" (with a warning) when the GGUF names none.
  const name = pre === undefined || pre === '' ? 'default' : pre;
  const found = Object.prototype.hasOwnProperty.call(PRE_TOKENIZERS, name) ? PRE_TOKENIZERS[name] : undefined;
  if (!found) {
    throw tokenizerError(`unsupported BPE pre-tokenizer '${name}' (supported: ${SUPPORTED_PRE_TOKENIZERS.join(', ')})`);
  }
  return found;
}

/** Splits text into pre-tokens: every pattern splits each current piece into its matches and the gaps between them. */
export function splitWords(text: string, patterns: readonly RegExp[]): string[] {
  let pieces = text.length > 0 ? [text] : [];
  for (const re of patterns) {
    const next: string[] = [];
    for (const piece of pieces) {
      re.lastIndex = 0;
      let last = 0;
      for (let m = re.exec(piece); m !== null; m = re.exec(piece)) {
        if (m[0].length === 0) {
          re.lastIndex++; // no pattern here matches empty text; guard against looping anyway
          continue;
        }
        if (m.index > last) next.push(piece.slice(last, m.index));
        next.push(m[0]);
        last = m.index + m[0].length;
      }
      if (last < piece.length) next.push(last === 0 ? piece : piece.slice(last));
    }
    pieces = next;
  }
  return pieces;
}

// ---------------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------------

interface Bigram {
  left: number;
  right: number;
  rank: number;
  /** The merged text when queued: the pair is stale if its symbols no longer spell it. */
  text: string;
}

const lowerRankFirst = (a: Bigram, b: Bigram): boolean => a.rank < b.rank || (a.rank === b.rank && a.left < b.left);

/** Words cached (pre-token → ids) before the cache is cleared. */
const WORD_CACHE_LIMIT = 100_000;

export class BpeTokenizer extends TokenizerBase implements Tokenizer {
  readonly model = 'gpt2' as const;
  readonly addSpacePrefix: boolean;
  readonly cleanSpaces: boolean;
  readonly preTokenizer: PreTokenizer;
  /** "left right" → rank (its index in tokenizer.ggml.merges; the first occurrence wins). */
  private readonly ranks = new Map<string, number>();
  private readonly patterns: RegExp[];
  private readonly wordCache = new Map<string, number[]>();

  constructor(meta: TokenizerMetadata) {
    const pre = preTokenizerFor(meta.pre);
    // llama.cpp's BPE defaults: BOS = EOS = 11 (when the vocabulary has that many tokens), no UNK.
    super(new Vocab(meta, { bosId: 11, eosId: 11, unkId: undefined, addBos: pre.addBos, addEos: false }));
    this.preTokenizer = pre;
    this.cleanSpaces = pre.cleanSpaces;
    // Only used by decode (BPE encoding never adds a space): llama.cpp honours the key for BPE too.
    this.addSpacePrefix = meta.addSpacePrefix ?? false;
    this.patterns = pre.patterns.map((p) => new RegExp(p, 'gu'));

    const merges = meta.merges as unknown;
    if (!Array.isArray(merges)) throw tokenizerError('tokenizer.ggml.merges is missing (required for a "gpt2" tokenizer)');
    for (let i = 0; i < merges.length; i++) {
      const m: unknown = merges[i];
      // llama.cpp splits at the first space after the first character.
      const at = typeof m === 'string' ? m.indexOf(' ', 1) : -1;
      if (typeof m !== 'string' || at < 0 || at === m.length - 1) {
        throw tokenizerError(`tokenizer.ggml.merges[${i}] = ${JSON.stringify(m)} is not "left right"`);
      }
      if (!this.ranks.has(m)) this.ranks.set(m, i);
    }
    this.checkByteTokens();
  }

  override encode(text: string, opts: EncodeOptions = {}): number[] {
    const addSpecial = opts.addSpecial ?? true;
    const out: number[] = [];
    if (addSpecial && this.vocab.addBos) out.push(this.vocab.bosId!);
    for (const fragment of this.vocab.partition(wellFormed(text), opts.parseSpecial ?? false)) {
      if (typeof fragment === 'number') out.push(fragment);
      else for (const word of splitWords(fragment, this.patterns)) this.encodeWord(word, out);
    }
    if (addSpecial && this.vocab.addEos) out.push(this.vocab.eosId!);
    return out;
  }

  protected override normalPieceBytes(text: string): Uint8Array {
    return unicodeToBytes(text);
  }

  private encodeWord(word: string, out: number[]): void {
    let ids = this.wordCache.get(word);
    if (ids === undefined) {
      ids = this.mergeWord(word);
      if (this.wordCache.size >= WORD_CACHE_LIMIT) this.wordCache.clear();
      this.wordCache.set(word, ids);
    }
    for (const id of ids) out.push(id);
  }

  private mergeWord(word: string): number[] {
    const { textToId } = this.vocab;
    const bytes = utf8Encode(word);
    const n = bytes.length;
    // One symbol per byte, written as its bytes_to_unicode character.
    const sym = new Array<string>(n);
    for (let i = 0; i < n; i++) sym[i] = BYTE_TO_CHAR[bytes[i]];
    if (this.preTokenizer.ignoreMerges) {
      const whole = textToId.get(sym.join(''));
      if (whole !== undefined) return [whole];
    }

    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    const heap = new BinaryHeap<Bigram>(lowerRankFirst);
    const addBigram = (left: number, right: number): void => {
      if (left < 0 || right < 0) return;
      const rank = this.ranks.get(sym[left] + ' ' + sym[right]);
      if (rank !== undefined) heap.push({ left, right, rank, text: sym[left] + sym[right] });
    };
    for (let i = 1; i < n; i++) addBigram(i - 1, i);

    for (let b = heap.pop(); b !== undefined; b = heap.pop()) {
      const { left, right } = b;
      if (sym[left] === '' || sym[right] === '' || sym[left] + sym[right] !== b.text) continue;
      sym[left] = b.text;
      sym[right] = '';
      next[left] = next[right];
      if (next[right] >= 0) prev[next[right]] = left;
      addBigram(prev[left], left);
      addBigram(left, next[left]);
    }

    const ids: number[] = [];
    for (let i = n > 0 ? 0 : -1; i !== -1; i = next[i]) {
      const id = textToId.get(sym[i]);
      if (id !== undefined) {
        ids.push(id);
        continue;
      }
      for (const ch of sym[i]) {
        const charId = textToId.get(ch);
        if (charId !== undefined) ids.push(charId);
      }
    }
    return ids;
  }
}

/**
 * A normal BPE token's bytes: each character mapped back through bytes_to_unicode. A character outside
 * the table is written as llama.cpp does: "[UNK_BYTE_0x" + its UTF-8 in hex + the token text + "]".
 */
export function unicodeToBytes(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const b = CHAR_TO_BYTE.get(ch.codePointAt(0)!);
    if (b !== undefined) {
      out.push(b);
      continue;
    }
    const hex = Array.from(utf8Encode(ch), (x) => x.toString(16).padStart(2, '0')).join('');
    for (const x of utf8Encode(`[UNK_BYTE_0x${hex}${text}]`)) out.push(x);
  }
  return Uint8Array.from(out);
}
