/**
 * Tokenizer types, plus the few building blocks both tokenizer kinds share (the validated vocabulary,
 * special-token partitioning, a binary heap). The behaviour reproduces llama.cpp's `llama-vocab.cpp`
 * (the snapshot the reference goldens were made with) so that token ids match llama.cpp exactly.
 */
import { TextEncoder } from 'util';
import { AdaInferError } from '../errors';

/**
 * A tokenizer as described by a GGUF file's `tokenizer.ggml.*` metadata. Keys are the GGUF names in
 * camelCase; special ids that are absent, -1 or 0xFFFFFFFF mean "not set".
 */
export interface TokenizerMetadata {
  /** `tokenizer.ggml.model`: "llama" (SentencePiece) or "gpt2" (byte-level BPE). */
  model: string;
  /** `tokenizer.ggml.pre`: the BPE pre-tokenizer name ("default", "llama-bpe", "qwen2", "gpt-2", "smollm", ...). */
  pre?: string;
  /** `tokenizer.ggml.tokens`. */
  tokens: string[];
  /** `tokenizer.ggml.scores` (SentencePiece merge priorities). */
  scores?: Float32Array | number[];
  /** `tokenizer.ggml.token_type`, values of {@link TokenType}. */
  tokenTypes?: Int32Array | number[];
  /** `tokenizer.ggml.merges` ("left right", rank = index), required for "gpt2". */
  merges?: string[];
  bosId?: number;
  eosId?: number;
  unkId?: number;
  padId?: number;
  eotId?: number;
  /** `tokenizer.ggml.add_bos_token`. Default: SPM true; BPE true only for the llama3 pre-tokenizer family. */
  addBos?: boolean;
  /** `tokenizer.ggml.add_eos_token`. Default false. */
  addEos?: boolean;
  /** `tokenizer.ggml.add_space_prefix`. Default: SPM true, BPE false. */
  addSpacePrefix?: boolean;
}

/** GGUF `tokenizer.ggml.token_type` values. */
export enum TokenType {
  Undefined = 0,
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6,
}

export interface EncodeOptions {
  /** Add BOS/EOS as the vocabulary says (addBos/addEos). Default true. */
  addSpecial?: boolean;
  /** Turn control/unknown token texts found in the input (e.g. "<s>") into their ids. Default false.
   *  User-defined tokens are always matched, as in llama.cpp. */
  parseSpecial?: boolean;
}

export interface DecodeOptions {
  /** Drop a leading BOS (if addBos) and a trailing EOS (if addEos), as llama_detokenize(remove_special). Default false. */
  removeSpecial?: boolean;
  /** Render control/unknown tokens as their text instead of nothing (llama_detokenize(unparse_special)). Default false. */
  unparseSpecial?: boolean;
  /**
   * Not part of llama_detokenize: keep the leading space of the first token. llama.cpp strips one leading
   * space from the first token of an SPM sequence that does not start with a (removed) BOS, because that
   * space is the one the encoder prepended. When the ids continue earlier text (generated tokens after
   * a prompt), that space is real text: set this to true. Default false.
   */
  keepLeadingSpace?: boolean;
}

/** Incremental detokenizer: the pushes' outputs plus flush() equal decode(all ids) with the same options. */
export interface StreamDecoder {
  /** Adds one token; returns the text that became complete (may be ''). */
  push(id: number): string;
  /** Ends the sequence: returns the held-back rest (an unfinished UTF-8 sequence becomes U+FFFD) and resets. */
  flush(): string;
}

export interface Tokenizer {
  /** "llama" (SentencePiece) or "gpt2" (byte-level BPE). */
  readonly model: 'llama' | 'gpt2';
  readonly vocabSize: number;
  /** undefined when the vocabulary has none. */
  readonly bosId: number | undefined;
  readonly eosId: number | undefined;
  readonly unkId: number | undefined;
  readonly eotId: number | undefined;
  /** Tokens that end generation: EOS, EOT and the tokens llama.cpp recognises by text (<|eot_id|>, <|im_end|>, ...). */
  readonly eogIds: Set<number>;
  readonly addBos: boolean;
  readonly addEos: boolean;
  encode(text: string, opts?: EncodeOptions): number[];
  decode(ids: number[], opts?: DecodeOptions): string;
  /** The bytes a token stands for (llama_token_to_piece with lstrip 0). Control/unknown tokens are empty unless special. */
  tokenToPiece(id: number, special?: boolean): Uint8Array;
  createDecoder(opts?: DecodeOptions): StreamDecoder;
  /** The raw vocabulary string of a token (SPM keeps U+2581, BPE keeps the byte-to-unicode characters). */
  tokenText(id: number): string;
  tokenType(id: number): TokenType;
  isEog(id: number): boolean;
}

// ---------------------------------------------------------------------------------------------------
// Shared building blocks
// ---------------------------------------------------------------------------------------------------

/** llama.cpp's token attribute bits (llama_token_attr); a token type maps to one bit, and llama.cpp ORs in CONTROL for tokens it recognises as end-of-turn by text. */
export const Attr = {
  Undefined: 0,
  Unknown: 1 << 0,
  Unused: 1 << 1,
  Normal: 1 << 2,
  Control: 1 << 3,
  UserDefined: 1 << 4,
  Byte: 1 << 5,
} as const;

const ATTR_OF_TYPE: Record<number, number> = {
  [TokenType.Undefined]: Attr.Undefined,
  [TokenType.Normal]: Attr.Normal,
  [TokenType.Unknown]: Attr.Unknown,
  [TokenType.Control]: Attr.Control,
  [TokenType.UserDefined]: Attr.UserDefined,
  [TokenType.Unused]: Attr.Unused,
  [TokenType.Byte]: Attr.Byte,
};

/** Texts llama.cpp takes as "end of turn" when no eot id is given (first match becomes eotId). */
const EOT_TEXTS = [
  '<|eot_id|>', '<|im_end|>', '<|end|>', '<end_of_turn>', '<|endoftext|>', '<|end_of_text|>',
  '<EOT>', '_<EOT>', '<｜end▁of▁sentence｜>', '<end_of_utterance>',
];
/** Texts llama.cpp adds to the end-of-generation set. */
const EOG_TEXTS = [
  '<|eot_id|>', '<|im_end|>', '<|end|>', '<|return|>', '<|call|>', '<end_of_turn>', '<|endoftext|>',
  '<|eom_id|>', '<EOT>', '_<EOT>', '<|end_of_text|>', '<end_of_utterance>',
];

const NONE_IDS = new Set([-1, 0xffffffff]);

export function tokenizerError(message: string): AdaInferError {
  return new AdaInferError('TOKENIZER', `invalid tokenizer: ${message}`);
}

const utf8Encoder = new TextEncoder();
export function utf8Encode(s: string): Uint8Array {
  return utf8Encoder.encode(s);
}
/** UTF-8 byte length of a string (lone surrogates count as U+FFFD, 3 bytes, as TextEncoder writes them). */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
/** Replaces lone UTF-16 surrogates with U+FFFD: the input then is exactly the UTF-8 text llama.cpp would see. */
export function wellFormed(s: string): string {
  LONE_SURROGATE.lastIndex = 0;
  return LONE_SURROGATE.test(s) ? s.replace(LONE_SURROGATE, '\uFFFD') : s;
}

/** Defaults the tokenizer kind supplies (llama.cpp's per-model-type defaults). */
export interface VocabDefaults {
  bosId: number | undefined;
  eosId: number | undefined;
  unkId: number | undefined;
  addBos: boolean;
  addEos: boolean;
}

/**
 * The validated vocabulary: token texts, scores, attributes, the text→id map, special ids and the
 * special-token list used to partition input text.
 */
export class Vocab {
  readonly size: number;
  readonly texts: string[];
  readonly scores: Float32Array;
  readonly attrs: Uint8Array;
  /** text → id over every token, whatever its type (llama.cpp's token_to_id; the last duplicate wins). */
  readonly textToId = new Map<string, number>();
  readonly bosId: number | undefined;
  readonly eosId: number | undefined;
  readonly unkId: number | undefined;
  readonly padId: number | undefined;
  readonly eotId: number | undefined;
  readonly addBos: boolean;
  readonly addEos: boolean;
  readonly eogIds = new Set<number>();
  /** Control, user-defined and unknown tokens, longest text (in UTF-8 bytes) first: the order llama.cpp tries them in. */
  readonly specialIds: number[];

  constructor(meta: TokenizerMetadata, defaults: VocabDefaults) {
    const tokens = meta.tokens as unknown;
    if (!Array.isArray(tokens) || tokens.length === 0) throw tokenizerError('tokenizer.ggml.tokens is missing or empty');
    const n = tokens.length;
    this.size = n;
    this.texts = new Array<string>(n);
    for (let i = 0; i < n; i++) {
      const t: unknown = tokens[i];
      if (typeof t !== 'string') throw tokenizerError(`tokenizer.ggml.tokens[${i}] is not a string`);
      // llama.cpp renames empty tokens so they can never match text.
      this.texts[i] = t === '' ? `[EMPTY_${i}]` : t;
      this.textToId.set(this.texts[i], i);
    }

    // JavaScript callers can pass anything: null is "absent", and anything else must at least be array-like.
    const optionalArray = (key: string, v: unknown): boolean => {
      if (v === undefined || v === null) return false;
      if (!Array.isArray(v) && !ArrayBuffer.isView(v)) throw tokenizerError(`${key} must be an array`);
      return true;
    };
    this.scores = new Float32Array(n);
    if (optionalArray('tokenizer.ggml.scores', meta.scores)) {
      if (meta.scores!.length !== n) {
        throw tokenizerError(`tokenizer.ggml.scores has ${meta.scores!.length} entries but there are ${n} tokens`);
      }
      for (let i = 0; i < n; i++) {
        const s = Number(meta.scores![i]);
        if (Number.isNaN(s)) throw tokenizerError(`tokenizer.ggml.scores[${i}] is not a number`);
        this.scores[i] = s;
      }
    }

    this.attrs = new Uint8Array(n).fill(Attr.Normal);
    if (optionalArray('tokenizer.ggml.token_type', meta.tokenTypes)) {
      if (meta.tokenTypes!.length !== n) {
        throw tokenizerError(`tokenizer.ggml.token_type has ${meta.tokenTypes!.length} entries but there are ${n} tokens`);
      }
      for (let i = 0; i < n; i++) {
        const attr = ATTR_OF_TYPE[meta.tokenTypes![i]];
        if (attr === undefined) {
          throw tokenizerError(`tokenizer.ggml.token_type[${i}] = ${String(meta.tokenTypes![i])} is not a token type (0..6)`);
        }
        this.attrs[i] = attr;
      }
    }

    const specialId = (key: string, value: number | undefined, fallback: number | undefined): number | undefined => {
      if (value === undefined || value === null || NONE_IDS.has(value)) {
        // llama.cpp's default ids are dropped when the vocabulary is too small for them.
        return fallback !== undefined && fallback < n ? fallback : undefined;
      }
      if (!Number.isInteger(value) || value < 0 || value >= n) {
        throw tokenizerError(`${key} = ${String(value)} is not a token id (vocabulary has ${n} tokens)`);
      }
      return value;
    };
    this.bosId = specialId('tokenizer.ggml.bos_token_id', meta.bosId, defaults.bosId);
    this.eosId = specialId('tokenizer.ggml.eos_token_id', meta.eosId, defaults.eosId);
    this.unkId = specialId('tokenizer.ggml.unknown_token_id', meta.unkId, defaults.unkId);
    this.padId = specialId('tokenizer.ggml.padding_token_id', meta.padId, undefined);
    let eotId = specialId('tokenizer.ggml.eot_token_id', meta.eotId, undefined);

    this.addBos = meta.addBos ?? defaults.addBos;
    this.addEos = meta.addEos ?? defaults.addEos;
    if (this.addBos && this.bosId === undefined) throw tokenizerError('add_bos_token is true but there is no BOS token');
    if (this.addEos && this.eosId === undefined) throw tokenizerError('add_eos_token is true but there is no EOS token');

    // End-of-turn / end-of-generation tokens recognised by text; llama.cpp makes them control tokens.
    // (llama.cpp takes whichever EOT text its hash map yields first; here the list order decides.)
    if (eotId === undefined) {
      for (const text of EOT_TEXTS) {
        eotId = this.textToId.get(text);
        if (eotId !== undefined) {
          this.attrs[eotId] |= Attr.Control;
          break;
        }
      }
    }
    for (const text of EOG_TEXTS) {
      const id = this.textToId.get(text);
      if (id !== undefined) {
        this.eogIds.add(id);
        this.attrs[id] |= Attr.Control;
      }
    }
    this.eotId = eotId;
    if (this.eosId !== undefined) this.eogIds.add(this.eosId);
    if (this.eotId !== undefined) this.eogIds.add(this.eotId);
    // gpt-oss ("harmony") vocabularies: <|end|> ends a message, not the generation, when <|return|> and <|call|> exist.
    const has = (t: string) => {
      const id = this.textToId.get(t);
      return id !== undefined && this.eogIds.has(id);
    };
    if (has('<|return|>') && has('<|call|>') && has('<|end|>')) this.eogIds.delete(this.textToId.get('<|end|>')!);

    const special: number[] = [];
    const byteLen = new Map<number, number>();
    for (let id = 0; id < n; id++) {
      if (this.attrs[id] & (Attr.Control | Attr.UserDefined | Attr.Unknown)) {
        special.push(id);
        byteLen.set(id, utf8Length(this.texts[id]));
      }
    }
    // llama.cpp sorts by length only (std::sort, unstable); ties are broken by id here so the order is defined.
    special.sort((a, b) => byteLen.get(b)! - byteLen.get(a)! || a - b);
    this.specialIds = special;
  }

  checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.size) {
      throw new AdaInferError('TOKENIZER', `token id ${String(id)} is outside the vocabulary [0, ${this.size})`);
    }
  }

  tokenType(id: number): TokenType {
    this.checkId(id);
    const a = this.attrs[id];
    if (a & Attr.Control) return TokenType.Control;
    if (a & Attr.Unknown) return TokenType.Unknown;
    if (a & Attr.UserDefined) return TokenType.UserDefined;
    if (a & Attr.Byte) return TokenType.Byte;
    if (a & Attr.Unused) return TokenType.Unused;
    if (a & Attr.Normal) return TokenType.Normal;
    return TokenType.Undefined;
  }

  /**
   * Splits text into raw-text pieces and special-token ids, as llama.cpp's tokenizer_st_partition:
   * each special token in turn (longest first) is searched in every remaining raw piece, left to right.
   * Control and unknown tokens only take part when parseSpecial; user-defined tokens always do.
   */
  partition(text: string, parseSpecial: boolean): Array<string | number> {
    let fragments: Array<string | number> = text.length > 0 ? [text] : [];
    for (const id of this.specialIds) {
      if (!parseSpecial && this.attrs[id] & (Attr.Control | Attr.Unknown)) continue;
      const needle = this.texts[id];
      // Every raw fragment is a substring of text, so a token absent from text is absent from all of them.
      if (!text.includes(needle)) continue;
      const next: Array<string | number> = [];
      for (const frag of fragments) {
        if (typeof frag === 'number') {
          next.push(frag);
          continue;
        }
        let from = 0;
        for (let at = frag.indexOf(needle); at >= 0; at = frag.indexOf(needle, from)) {
          if (at > from) next.push(frag.slice(from, at));
          next.push(id);
          from = at + needle.length;
        }
        if (from < frag.length) next.push(from === 0 ? frag : frag.slice(from));
      }
      fragments = next;
    }
    return fragments;
  }
}

/** A binary min-heap under `before` (before(a, b) = a comes out first). */
export class BinaryHeap<T> {
  private readonly items: T[] = [];
  constructor(private readonly before: (a: T, b: T) => boolean) {}

  get size(): number {
    return this.items.length;
  }

  push(item: T): void {
    const items = this.items;
    let i = items.length;
    items.push(item);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(item, items[parent])) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = item;
  }

  pop(): T | undefined {
    const items = this.items;
    if (items.length === 0) return undefined;
    const top = items[0];
    const last = items.pop()!;
    const n = items.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const child = r < n && this.before(items[r], items[l]) ? r : l;
        if (!this.before(items[child], last)) break;
        items[i] = items[child];
        i = child;
      }
      items[i] = last;
    }
    return top;
  }
}

/** The byte of a "<0xXX>" token (llama.cpp reads the two hex digits at offset 3). */
export function parseByteToken(text: string, id: number): number {
  const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(text);
  if (!m) throw new AdaInferError('TOKENIZER', `invalid tokenizer: byte token ${id} is '${text}', not <0xXX>`);
  return parseInt(m[1], 16);
}
