/**
 * Hugging Face tokenizers (`tokenizer.json`), behind the project's Tokenizer interface so that generation,
 * classification and the exit features work unchanged on a Hugging Face model folder.
 *
 * Encoding is @huggingface/tokenizers' (the JavaScript port of Hugging Face's tokenizers: normalizer,
 * pre-tokenizer, BPE model); the rest — the vocabulary, special tokens, BOS/EOS, decoding and the stream
 * decoder — is the project's own (lib/tokenizer/types.ts Vocab, stream_decoder.ts), fed by pieceBytes, so
 * decoding follows the same llama.cpp rules as a GGUF tokenizer. How the two are put together:
 *
 *  - the vocabulary is model.vocab plus added_tokens, by id; ids nobody names, and rows of the model's
 *    embedding past the tokenizer (OPT: 50272 rows for 50265 tokens), become unused "[PAD<id>]" tokens;
 *  - added tokens marked "special" are control tokens, the others user-defined tokens; the text is split at
 *    them first (Vocab.partition: control tokens only with parseSpecial, as llama.cpp), and each piece between
 *    them is encoded by the library, which is given the tokenizer without its added tokens so that it never
 *    splits at a special token itself (the added tokens' lstrip/rstrip/single_word flags are not honoured);
 *  - BOS/EOS are added here, not by the tokenizer's post-processor: add_bos_token / add_eos_token from
 *    tokenizer_config.json, else a TemplateProcessing post-processor that starts (ends) with a special token,
 *    else the architecture's default (`defaultAddBos`: OPT and Llama prepend BOS). The BOS and EOS tokens are
 *    tokenizer_config.json's bos_token / eos_token, else config.json's bos_token_id / eos_token_id. Every id of
 *    config.json's eos_token_id (a number or a list) ends generation;
 *  - a byte-level tokenizer (ByteLevel decoder or pre-tokenizer: GPT-2, OPT, Llama 3) is model "gpt2": a token's
 *    bytes are its characters through GPT-2's bytes_to_unicode table. Otherwise (SentencePiece-style BPE with
 *    Metaspace and byte fallback: Llama 2) it is model "llama": "▁" is a space, <0xXX> a byte, and the space the
 *    encoder prepended is removed from the first token on decoding;
 *  - clean_up_tokenization_spaces (tokenizer_config.json) turns on llama.cpp's clean-up passes.
 */
import { Tokenizer as HfLibTokenizer } from '@huggingface/tokenizers';
import { unicodeToBytes } from './bpe';
import { TokenizerBase } from './stream_decoder';
import { EncodeOptions, Tokenizer, TokenizerMetadata, TokenType, tokenizerError, utf8Encode, Vocab, wellFormed } from './types';

type Json = Record<string, unknown>;

export interface HfTokenizerFiles {
  /** tokenizer.json, parsed. */
  tokenizer: unknown;
  /** tokenizer_config.json, parsed (optional). */
  tokenizerConfig?: unknown;
  /** config.json, parsed (optional): bos_token_id / eos_token_id fallbacks. */
  config?: unknown;
  /** Pad the vocabulary with unused tokens up to this size (the model's embedding rows). */
  vocabSize?: number;
  /** Whether BOS is prepended when neither tokenizer_config.json nor the post-processor says (default false). */
  defaultAddBos?: boolean;
}


function isObject(v: unknown): v is Json {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** A token named in tokenizer_config.json: "text" or { "content": "text", ... }. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  return undefined;
}

/** Every component of a (possibly Sequence) pre-tokenizer / decoder / normalizer. */
function components(v: unknown, listKey: string): Json[] {
  if (!isObject(v)) return [];
  if (v.type === 'Sequence' && Array.isArray(v[listKey])) return (v[listKey] as unknown[]).flatMap((x) => components(x, listKey));
  return [v];
}

export class HfTokenizer extends TokenizerBase implements Tokenizer {
  readonly model: 'llama' | 'gpt2';
  readonly addSpacePrefix: boolean;
  readonly cleanSpaces: boolean;
  /** The merges of a BPE model as "left right" strings, rank order (for conversion to GGUF). */
  readonly merges: string[];
  /** The pre-tokenizer's description (tokenizer.json "pre_tokenizer"). */
  readonly preTokenizer: unknown;
  /** The normalizer's description (tokenizer.json "normalizer"; null when absent). */
  readonly normalizer: unknown;
  /** The BPE model's byte_fallback and ignore_merges flags. */
  readonly byteFallback: boolean;
  readonly ignoreMerges: boolean;
  /** Number of tokens the tokenizer defines (before padding to the model's vocabulary). */
  readonly definedTokens: number;
  private readonly lib: HfLibTokenizer;

  constructor(files: HfTokenizerFiles) {
    const tj = files.tokenizer;
    if (!isObject(tj)) throw tokenizerError('tokenizer.json is not a JSON object');
    const model = tj.model;
    if (!isObject(model)) throw tokenizerError('tokenizer.json has no "model" object');
    if (model.type !== 'BPE') {
      throw tokenizerError(`tokenizer.json model type ${JSON.stringify(model.type)} is not supported (supported: BPE)`);
    }
    const tc = isObject(files.tokenizerConfig) ? files.tokenizerConfig : {};
    const cfg = isObject(files.config) ? files.config : {};

    // --- vocabulary by id
    const texts: Array<string | undefined> = [];
    const types: number[] = [];
    const place = (id: unknown, text: string, type: TokenType, where: string): void => {
      if (!Number.isInteger(id) || (id as number) < 0 || (id as number) > 1 << 24) throw tokenizerError(`${where}: id ${String(id)} is not a token id`);
      const i = id as number;
      if (texts[i] !== undefined && texts[i] !== text) {
        throw tokenizerError(`${where}: id ${i} is both ${JSON.stringify(texts[i])} and ${JSON.stringify(text)}`);
      }
      texts[i] = text;
      types[i] = type;
    };
    if (!isObject(model.vocab)) throw tokenizerError('tokenizer.json model.vocab is not an object of token → id');
    const byteFallback = model.byte_fallback === true;
    for (const [text, id] of Object.entries(model.vocab)) {
      place(id, text, byteFallback && /^<0x[0-9A-Fa-f]{2}>$/.test(text) ? TokenType.Byte : TokenType.Normal, `model.vocab[${JSON.stringify(text)}]`);
    }
    const added = tj.added_tokens ?? [];
    if (!Array.isArray(added)) throw tokenizerError('tokenizer.json added_tokens is not a list');
    for (const [i, a] of added.entries()) {
      if (!isObject(a) || typeof a.content !== 'string') throw tokenizerError(`added_tokens[${i}] has no content`);
      place(a.id, a.content, a.special === true ? TokenType.Control : TokenType.UserDefined, `added_tokens[${i}]`);
    }
    const definedTokens = texts.length;
    const size = Math.max(texts.length, files.vocabSize ?? 0);
    const tokens: string[] = new Array(size);
    for (let i = 0; i < size; i++) {
      if (texts[i] === undefined) {
        tokens[i] = `[PAD${i}]`;
        types[i] = TokenType.Unused;
      } else tokens[i] = texts[i]!;
    }

    // --- special tokens
    const idOfText = new Map<string, number>();
    tokens.forEach((t, i) => idOfText.set(t, i));
    const special = (key: 'bos' | 'eos' | 'unk' | 'pad'): number | undefined => {
      const text = tokenContent(tc[`${key}_token`]);
      if (text !== undefined) {
        const id = idOfText.get(text);
        if (id === undefined) throw tokenizerError(`tokenizer_config.json ${key}_token ${JSON.stringify(text)} is not in the vocabulary`);
        return id;
      }
      const fromConfig = cfg[`${key}_token_id`];
      const first = Array.isArray(fromConfig) ? fromConfig[0] : fromConfig;
      return Number.isInteger(first) && first >= 0 && first < size ? (first as number) : undefined;
    };
    const post = components(tj.post_processor, 'processors').find((p) => p.type === 'TemplateProcessing');
    const single = post && Array.isArray(post.single) ? (post.single as unknown[]) : undefined;
    const templateSpecial = (at: unknown): number | undefined => {
      const s = isObject(at) && isObject(at.SpecialToken) ? at.SpecialToken : undefined;
      return s && typeof s.id === 'string' ? idOfText.get(s.id) : undefined;
    };
    const templateBos = single ? templateSpecial(single[0]) : undefined;
    const templateEos = single && single.length > 1 ? templateSpecial(single[single.length - 1]) : undefined;
    const flag = (key: string): boolean | undefined => {
      const v = tc[key];
      if (v === undefined || v === null) return undefined;
      if (typeof v !== 'boolean') throw tokenizerError(`tokenizer_config.json ${key} must be a boolean`);
      return v;
    };
    const bosId = special('bos') ?? templateBos;
    const eosId = special('eos') ?? templateEos;
    const meta: TokenizerMetadata = {
      model: 'hf',
      tokens,
      tokenTypes: types,
      bosId,
      eosId,
      unkId: special('unk') ?? (typeof model.unk_token === 'string' ? idOfText.get(model.unk_token) : undefined),
      padId: special('pad'),
      addBos: flag('add_bos_token') ?? (templateBos !== undefined || (files.defaultAddBos === true && bosId !== undefined)),
      addEos: flag('add_eos_token') ?? (templateEos !== undefined && templateEos !== templateBos ? true : false),
    };
    super(new Vocab(meta, { bosId: undefined, eosId: undefined, unkId: undefined, addBos: false, addEos: false }));
    this.definedTokens = definedTokens;
    const eosIds = cfg.eos_token_id;
    for (const id of Array.isArray(eosIds) ? eosIds : [eosIds]) {
      if (Number.isInteger(id) && id >= 0 && id < size) this.vocab.eogIds.add(id as number);
    }

    // --- kind: byte-level or SentencePiece-style
    const pre = components(tj.pre_tokenizer, 'pretokenizers');
    const dec = components(tj.decoder, 'decoders');
    const byteLevel = pre.some((p) => p.type === 'ByteLevel') || dec.some((d) => d.type === 'ByteLevel');
    this.model = byteLevel ? 'gpt2' : 'llama';
    const metaspace = [...pre, ...dec].find((p) => p.type === 'Metaspace');
    const stripsSpace = dec.some((d) => d.type === 'Strip' && typeof d.start === 'number' && d.start > 0);
    this.addSpacePrefix = byteLevel
      ? false
      : stripsSpace || (metaspace !== undefined && metaspace.add_prefix_space !== false && metaspace.prepend_scheme !== 'never');
    this.cleanSpaces = tc.clean_up_tokenization_spaces === true;
    this.preTokenizer = tj.pre_tokenizer ?? null;
    this.normalizer = tj.normalizer ?? null;
    this.byteFallback = byteFallback;
    this.ignoreMerges = model.ignore_merges === true;
    const merges = Array.isArray(model.merges) ? (model.merges as unknown[]) : [];
    this.merges = merges.map((m, i) => {
      if (typeof m === 'string' && m.indexOf(' ', 1) > 0) return m;
      if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') return `${m[0]} ${m[1]}`;
      throw tokenizerError(`tokenizer.json model.merges[${i}] = ${JSON.stringify(m)} is not a merge`);
    });
    this.checkByteTokens();

    // The library gets no added tokens: the text is split at them here (see the file comment).
    try {
      this.lib = new HfLibTokenizer({ ...tj, added_tokens: [] }, tc);
    } catch (err) {
      throw tokenizerError(`tokenizer.json: ${(err as Error).message}`);
    }
  }

  override encode(text: string, opts: EncodeOptions = {}): number[] {
    const addSpecial = opts.addSpecial ?? true;
    const out: number[] = [];
    if (addSpecial && this.vocab.addBos) out.push(this.vocab.bosId!);
    for (const fragment of this.vocab.partition(wellFormed(text), opts.parseSpecial ?? false)) {
      if (typeof fragment === 'number') out.push(fragment);
      else for (const id of this.lib.encode(fragment, { add_special_tokens: false }).ids) out.push(id);
    }
    if (addSpecial && this.vocab.addEos) out.push(this.vocab.eosId!);
    return out;
  }

  protected override normalPieceBytes(text: string): Uint8Array {
    return this.model === 'gpt2' ? unicodeToBytes(text) : utf8Encode(text.replace(/\u2581/g, ' '));
  }
}
