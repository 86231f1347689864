/**
 * Detokenization: the whole-sequence form (decodeIds, used by Tokenizer.decode) and the incremental
 * form (TokenStreamDecoder, used while generating). Both follow llama.cpp's llama_detokenize:
 *
 *  1. with removeSpecial, a leading BOS (if the vocabulary adds BOS) and a trailing EOS (if it adds EOS)
 *     are dropped;
 *  2. the pieces' bytes are concatenated; for SPM (add_space_prefix) one leading space is removed from
 *     the first piece, unless a BOS was dropped in step 1: llama.cpp keeps the space then, which is why
 *     detokenize([BOS, ▁Once, ...], removeSpecial) is " Once ..." but detokenize([▁Once, ...]) is "Once ...";
 *  3. BPE vocabularies with clean_up_tokenization_spaces get llama.cpp's three clean-up passes;
 *  4. the bytes are decoded as UTF-8 once, invalid sequences becoming U+FFFD.
 *
 * The stream decoder gives the same text: it holds back a trailing EOS (it might be the last token), the
 * bytes the clean-up passes still need to look at, and an unfinished UTF-8 sequence.
 */
import { TextDecoder } from 'util';
import { Attr, DecodeOptions, EncodeOptions, parseByteToken, StreamDecoder, TokenType, utf8Encode, Vocab } from './types';

const EMPTY_PIECE = new Uint8Array(0);

/** What detokenization needs from a tokenizer. */
export interface PieceSource {
  readonly vocab: Vocab;
  /** Strip one leading space from the first piece (SPM add_space_prefix). */
  readonly addSpacePrefix: boolean;
  /** Apply llama.cpp's clean_up_tokenization_spaces passes (BPE). */
  readonly cleanSpaces: boolean;
  /** A token's bytes (shared cache: do not modify). Throws for ids outside the vocabulary. */
  pieceBytes(id: number, special: boolean): Uint8Array;
}

const SPACE = 0x20;
const APOS = 0x27;

function isPunct(b: number): boolean {
  return b === 0x3f /* ? */ || b === 0x21 /* ! */ || b === 0x2e /* . */ || b === 0x2c /* , */;
}

/**
 * llama.cpp's clean-up over a whole byte string, pass by pass:
 *  1. drop a space before ? ! . ,
 *  2. " ' " becomes "'" (both spaces go; the dropped right space cannot start another match)
 *  3. drop the space before 's 'm 're 've (not before 't 'd 'll, which llama.cpp leaves alone)
 */
export function cleanSpacesBatch(input: Uint8Array): Uint8Array {
  // pass 1
  const p1: number[] = [];
  for (let i = 0; i < input.length; i++) {
    if (input[i] === SPACE && i + 1 < input.length && isPunct(input[i + 1])) continue;
    p1.push(input[i]);
  }
  // pass 2
  const p2: number[] = [];
  for (let i = 0; i < p1.length; i++) {
    const x = p1[i];
    if (x === APOS && i > 0 && i + 1 < p1.length && p1[i - 1] === SPACE && p1[i + 1] === SPACE && p2[p2.length - 1] === SPACE) {
      p2.pop();
      p2.push(x);
      i++; // the right space is consumed
      continue;
    }
    p2.push(x);
  }
  // pass 3
  const p3: number[] = [];
  for (let i = 0; i < p2.length; i++) {
    const x = p2[i];
    if (x === APOS && i > 0 && p2[i - 1] === SPACE && i + 1 < p2.length) {
      const x1 = p2[i + 1];
      const x2 = i + 2 < p2.length ? p2[i + 2] : -1;
      if (x1 === 0x73 /* s */ || x1 === 0x6d /* m */ || ((x1 === 0x72 /* r */ || x1 === 0x76) /* v */ && x2 === 0x65) /* e */) {
        p3.pop();
      }
    }
    p3.push(x);
  }
  return Uint8Array.from(p3);
}

/**
 * The same three passes as byte transducers chained together, each holding back only the few bytes
 * its rule still depends on. Feeding any split of a byte string and then flushing yields exactly
 * cleanSpacesBatch of the whole string.
 */
export class SpaceCleaner {
  // pass 1: a held space (its fate depends on the next byte)
  private p1Held = false;
  // pass 2: 0 = nothing held, 1 = " ", 2 = " '"
  private p2State = 0;
  // pass 3: 0 = nothing, 1 = " ", 2 = " '", 3 = " 'r" or " 'v" (byte in p3Letter)
  private p3State = 0;
  private p3Letter = 0;
  private out: number[] = [];

  push(bytes: Uint8Array): Uint8Array {
    for (let i = 0; i < bytes.length; i++) this.pass1(bytes[i]);
    return this.take();
  }

  flush(): Uint8Array {
    if (this.p1Held) {
      this.p1Held = false;
      this.pass2(SPACE);
    }
    if (this.p2State === 1) this.pass3(SPACE);
    else if (this.p2State === 2) {
      this.pass3(SPACE);
      this.pass3(APOS);
    }
    this.p2State = 0;
    if (this.p3State === 1) this.out.push(SPACE);
    else if (this.p3State === 2) this.out.push(SPACE, APOS);
    else if (this.p3State === 3) this.out.push(SPACE, APOS, this.p3Letter);
    this.p3State = 0;
    return this.take();
  }

  private take(): Uint8Array {
    const result = Uint8Array.from(this.out);
    this.out = [];
    return result;
  }

  private pass1(b: number): void {
    if (this.p1Held) {
      this.p1Held = false;
      if (!isPunct(b)) this.pass2(SPACE);
    }
    if (b === SPACE) this.p1Held = true;
    else this.pass2(b);
  }

  private pass2(b: number): void {
    switch (this.p2State) {
      case 1:
        if (b === APOS) {
          this.p2State = 2;
          return;
        }
        this.p2State = 0;
        this.pass3(SPACE);
        break;
      case 2:
        this.p2State = 0;
        if (b === SPACE) {
          // " ' " -> "'"; the consumed space cannot be the left space of another match
          this.pass3(APOS);
          return;
        }
        this.pass3(SPACE);
        this.pass3(APOS);
        break;
    }
    if (b === SPACE) this.p2State = 1;
    else this.pass3(b);
  }

  private pass3(b: number): void {
    const out = this.out;
    switch (this.p3State) {
      case 1:
        if (b === APOS) {
          this.p3State = 2;
          return;
        }
        this.p3State = 0;
        out.push(SPACE);
        break;
      case 2:
        if (b === 0x73 || b === 0x6d) {
          // " 's" / " 'm": the space goes
          this.p3State = 0;
          out.push(APOS, b);
          return;
        }
        if (b === 0x72 || b === 0x76) {
          this.p3State = 3;
          this.p3Letter = b;
          return;
        }
        this.p3State = 0;
        out.push(SPACE, APOS);
        break;
      case 3:
        this.p3State = 0;
        if (b === 0x65) out.push(APOS, this.p3Letter); // " 're" / " 've": the space goes
        else out.push(SPACE, APOS, this.p3Letter);
        break;
    }
    if (b === SPACE) this.p3State = 1;
    else out.push(b);
  }
}

function newUtf8Decoder(): TextDecoder {
  // ignoreBOM: a U+FEFF produced by the tokens is text, not a byte-order mark to drop.
  return new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
}

function concatBytes(parts: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Decodes a whole id sequence (llama_detokenize semantics, see the file comment). */
export function decodeIds(src: PieceSource, ids: readonly number[], opts: DecodeOptions = {}): string {
  const { bosId, eosId, addBos, addEos } = src.vocab;
  const special = opts.unparseSpecial ?? false;
  let start = 0;
  let end = ids.length;
  let removeSpace = src.addSpacePrefix && !opts.keepLeadingSpace;
  if (opts.removeSpecial && addBos && end > 0 && ids[0] === bosId) {
    removeSpace = false;
    start = 1;
  }
  if (opts.removeSpecial && addEos && end > start && ids[end - 1] === eosId) end--;

  const parts: Uint8Array[] = [];
  let total = 0;
  for (let i = start; i < end; i++) {
    let piece = src.pieceBytes(ids[i], special);
    if (removeSpace && piece.length > 0 && piece[0] === SPACE) piece = piece.subarray(1);
    removeSpace = false;
    parts.push(piece);
    total += piece.length;
  }
  let bytes = concatBytes(parts, total);
  if (src.cleanSpaces) bytes = cleanSpacesBatch(bytes);
  return newUtf8Decoder().decode(bytes);
}

/** Incremental decodeIds: see StreamDecoder. */
export class TokenStreamDecoder implements StreamDecoder {
  private utf8 = newUtf8Decoder();
  private cleaner: SpaceCleaner | undefined;
  private first = true;
  private removeSpace: boolean;
  /** An EOS that is dropped if it turns out to be the last token (removeSpecial with addEos). */
  private heldEos = false;

  constructor(
    private readonly src: PieceSource,
    private readonly opts: DecodeOptions = {},
  ) {
    this.cleaner = src.cleanSpaces ? new SpaceCleaner() : undefined;
    this.removeSpace = this.initialRemoveSpace();
  }

  push(id: number): string {
    const { bosId, eosId, addBos, addEos } = this.src.vocab;
    this.src.vocab.checkId(id);
    const removeSpecial = this.opts.removeSpecial ?? false;
    if (this.first) {
      this.first = false;
      if (removeSpecial && addBos && id === bosId) {
        this.removeSpace = false;
        return '';
      }
    }
    let text = '';
    if (this.heldEos) {
      this.heldEos = false;
      text += this.emit(eosId!);
    }
    if (removeSpecial && addEos && id === eosId) {
      this.heldEos = true;
      return text;
    }
    return text + this.emit(id);
  }

  flush(): string {
    this.heldEos = false; // it was the last token: removed
    let text = '';
    if (this.cleaner) text += this.utf8.decode(this.cleaner.flush(), { stream: true });
    text += this.utf8.decode();
    // ready for a new sequence
    this.utf8 = newUtf8Decoder();
    this.first = true;
    this.removeSpace = this.initialRemoveSpace();
    return text;
  }

  private initialRemoveSpace(): boolean {
    return this.src.addSpacePrefix && !this.opts.keepLeadingSpace;
  }

  private emit(id: number): string {
    let piece = this.src.pieceBytes(id, this.opts.unparseSpecial ?? false);
    if (this.removeSpace && piece.length > 0 && piece[0] === SPACE) piece = piece.subarray(1);
    this.removeSpace = false;
    if (this.cleaner) piece = this.cleaner.push(piece);
    return piece.length > 0 ? this.utf8.decode(piece, { stream: true }) : '';
  }
}

/**
 * What SPM and BPE tokenizers have in common: the vocabulary accessors and the decoding side of the
 * Tokenizer interface, all driven by pieceBytes. Subclasses supply encode() and how a normal token's text
 * becomes bytes.
 */
export abstract class TokenizerBase implements PieceSource {
  abstract readonly model: 'llama' | 'gpt2';
  abstract readonly addSpacePrefix: boolean;
  abstract readonly cleanSpaces: boolean;
  private readonly pieceCache: Array<Uint8Array | undefined>;

  constructor(readonly vocab: Vocab) {
    this.pieceCache = new Array(vocab.size);
  }

  abstract encode(text: string, opts?: EncodeOptions): number[];
  /** The bytes of a normal token's text (SPM: "\u2581" is a space; byte-level BPE: GPT-2's byte alphabet). */
  protected abstract normalPieceBytes(text: string): Uint8Array;

  /** Byte tokens must name their byte: subclasses check this while validating, so decoding cannot fail later. */
  protected checkByteTokens(): void {
    for (let id = 0; id < this.vocab.size; id++) {
      if (this.vocab.attrs[id] & Attr.Byte) parseByteToken(this.vocab.texts[id], id);
    }
  }

  /** llama_token_to_piece (lstrip 0). The returned array is cached: callers must not modify it. */
  pieceBytes(id: number, special: boolean): Uint8Array {
    this.vocab.checkId(id);
    const attr = this.vocab.attrs[id];
    if (!special && attr & (Attr.Unknown | Attr.Control)) return EMPTY_PIECE;
    let piece = this.pieceCache[id];
    if (piece === undefined) {
      const text = this.vocab.texts[id];
      if (attr & (Attr.Unknown | Attr.Control | Attr.UserDefined)) piece = utf8Encode(text);
      else if (attr & Attr.Normal) piece = this.normalPieceBytes(text);
      else if (attr & Attr.Byte) piece = Uint8Array.of(parseByteToken(text, id));
      else piece = EMPTY_PIECE; // unused / undefined tokens render as nothing
      this.pieceCache[id] = piece;
    }
    return piece;
  }

  get vocabSize(): number {
    return this.vocab.size;
  }
  get bosId(): number | undefined {
    return this.vocab.bosId;
  }
  get eosId(): number | undefined {
    return this.vocab.eosId;
  }
  get unkId(): number | undefined {
    return this.vocab.unkId;
  }
  get eotId(): number | undefined {
    return this.vocab.eotId;
  }
  get eogIds(): Set<number> {
    return this.vocab.eogIds;
  }
  get addBos(): boolean {
    return this.vocab.addBos;
  }
  get addEos(): boolean {
    return this.vocab.addEos;
  }

  decode(ids: number[], opts?: DecodeOptions): string {
    return decodeIds(this, ids, opts);
  }

  createDecoder(opts?: DecodeOptions): StreamDecoder {
    return new TokenStreamDecoder(this, opts);
  }

  tokenToPiece(id: number, special = false): Uint8Array {
    return this.pieceBytes(id, special).slice();
  }

  tokenText(id: number): string {
    this.vocab.checkId(id);
    return this.vocab.texts[id];
  }

  tokenType(id: number): TokenType {
    return this.vocab.tokenType(id);
  }

  isEog(id: number): boolean {
    return this.vocab.eogIds.has(id);
  }
}
