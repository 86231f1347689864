/**
 * SentencePiece tokenizer (GGUF tokenizer.ggml.model = "llama"), reproducing llama.cpp's
 * llm_tokenizer_spm:
 *
 *  - special tokens are split out first (Vocab.partition); every raw-text fragment that follows a
 *    special token, or starts the text, gets a space prepended (add_space_prefix), even right after
 *    "<s>" parsed from the text: "<s> hello" becomes [<s>, "▁▁hello"];
 *  - spaces become U+2581 ("▁"); the fragment is split into characters;
 *  - adjacent symbol pairs whose concatenation is a vocabulary entry are merged, highest score first
 *    (ties: leftmost pair), until no pair is left; a binary heap of candidate pairs keeps this
 *    O(n log n). Pairs whose symbols changed since they were queued are skipped when popped;
 *  - each final symbol is its token, or, when it is not in the vocabulary (only possible for a
 *    single character, since every merge forms a vocabulary entry), one <0xXX> byte token per UTF-8 byte.
 */
import { AdaInferError } from '../errors';
import { TokenizerBase } from './stream_decoder';
import { BinaryHeap, EncodeOptions, Tokenizer, TokenizerMetadata, utf8Encode, Vocab, wellFormed } from './types';

/** A candidate merge of the symbols at `left` and `right`; `size` is their combined length when queued. */
interface Bigram {
  left: number;
  right: number;
  score: number;
  size: number;
}

const higherScoreFirst = (a: Bigram, b: Bigram): boolean => a.score > b.score || (a.score === b.score && a.left < b.left);

const HEX = '0123456789ABCDEF';

export class SpmTokenizer extends TokenizerBase implements Tokenizer {
  readonly model = 'llama' as const;
  readonly addSpacePrefix: boolean;
  readonly cleanSpaces = false;
  /** id of <0xXX> for each byte, or -1. */
  private readonly byteTokens = new Int32Array(256).fill(-1);

  constructor(meta: TokenizerMetadata) {
    // llama.cpp's SPM defaults: BOS 1, EOS 2, UNK 0, add BOS, no EOS, space prefix.
    super(new Vocab(meta, { bosId: 1, eosId: 2, unkId: 0, addBos: true, addEos: false }));
    this.addSpacePrefix = meta.addSpacePrefix ?? true;
    for (let b = 0; b < 256; b++) {
      const hex = `<0x${HEX[b >> 4]}${HEX[b & 15]}>`;
      // Like llama.cpp's byte_to_token: the <0xXX> entry, else a token that is the byte itself (ASCII only).
      const id = this.vocab.textToId.get(hex) ?? (b < 0x80 ? this.vocab.textToId.get(String.fromCharCode(b)) : undefined);
      if (id !== undefined) this.byteTokens[b] = id;
    }
    // Byte tokens must name their byte; checked now so decoding cannot fail later.
    this.checkByteTokens();
  }

  override encode(text: string, opts: EncodeOptions = {}): number[] {
    const addSpecial = opts.addSpecial ?? true;
    const out: number[] = [];
    if (addSpecial && this.vocab.addBos) out.push(this.vocab.bosId!);
    // The start of the text counts as "after a special token": it gets the space prefix.
    let prevSpecial = true;
    for (const fragment of this.vocab.partition(wellFormed(text), opts.parseSpecial ?? false)) {
      if (typeof fragment === 'number') {
        out.push(fragment);
        prevSpecial = true;
      } else {
        this.encodeFragment(this.addSpacePrefix && prevSpecial ? ' ' + fragment : fragment, out);
        prevSpecial = false;
      }
    }
    if (addSpecial && this.vocab.addEos) out.push(this.vocab.eosId!);
    return out;
  }

  protected override normalPieceBytes(text: string): Uint8Array {
    return utf8Encode(text.replace(/\u2581/g, ' '));
  }

  /** Tokenizes one raw-text fragment (space prefix already applied) into `out`. */
  private encodeFragment(fragment: string, out: number[]): void {
    const text = fragment.replace(/ /g, '\u2581');
    if (text.length === 0) return;
    const { textToId, scores } = this.vocab;

    // Symbols are the characters of text: [start, start + len) in UTF-16 units, in a doubly linked list.
    const n = text.length;
    const start = new Int32Array(n);
    const len = new Int32Array(n);
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    let count = 0;
    for (let pos = 0; pos < n; ) {
      const c = text.charCodeAt(pos);
      const l = c >= 0xd800 && c <= 0xdbff && pos + 1 < n ? 2 : 1; // the input is well-formed
      start[count] = pos;
      len[count] = l;
      prev[count] = count - 1;
      pos += l;
      next[count] = pos === n ? -1 : count + 1;
      count++;
    }

    const heap = new BinaryHeap<Bigram>(higherScoreFirst);
    const tryAddBigram = (left: number, right: number): void => {
      if (left < 0 || right < 0) return;
      const size = len[left] + len[right];
      const id = textToId.get(text.slice(start[left], start[left] + size));
      if (id === undefined) return;
      heap.push({ left, right, score: scores[id], size });
    };
    for (let i = 1; i < count; i++) tryAddBigram(i - 1, i);

    for (let bigram = heap.pop(); bigram !== undefined; bigram = heap.pop()) {
      const { left, right } = bigram;
      // Stale: one side was merged away or grew since the pair was queued.
      if (len[left] === 0 || len[right] === 0 || len[left] + len[right] !== bigram.size) continue;
      len[left] += len[right];
      len[right] = 0;
      next[left] = next[right];
      if (next[right] >= 0) prev[next[right]] = left;
      tryAddBigram(prev[left], left);
      tryAddBigram(left, next[left]);
    }

    for (let i = 0; i !== -1; i = next[i]) {
      const symbol = text.slice(start[i], start[i] + len[i]);
      const id = textToId.get(symbol);
      if (id !== undefined) out.push(id);
      else this.byteFallback(symbol, out);
    }
  }

  private byteFallback(symbol: string, out: number[]): void {
    for (const b of utf8Encode(symbol)) {
      const id = this.byteTokens[b];
      if (id >= 0) out.push(id);
      else if (this.vocab.unkId !== undefined) out.push(this.vocab.unkId);
      else {
        // llama.cpp aborts here; a vocabulary without byte tokens or <unk> cannot represent this text.
        throw new AdaInferError(
          'TOKENIZER',
          `cannot encode byte 0x${HEX[b >> 4]}${HEX[b & 15]}: the vocabulary has no <0x..> byte token and no unknown token`,
        );
      }
    }
  }
}



