/**
 * Tokenizers on small hand-built vocabularies (no model files needed). Every expected output below is
 * derived by hand in the comments from the rules llama.cpp follows.
 */
import { AdaInferError } from '../../lib/errors';
import {
  cleanSpacesBatch,
  createTokenizer,
  GPT2_PATTERN,
  LLAMA3_PATTERN,
  QWEN2_PATTERN,
  SpaceCleaner,
  splitWords,
  Tokenizer,
  TokenizerMetadata,
  TokenType,
} from '../../lib/tokenizer';

const T = TokenType;

function expectTokenizerError(fn: () => unknown, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(AdaInferError);
  expect((caught as AdaInferError).code).toBe('TOKENIZER');
  expect((caught as AdaInferError).message).toMatch(message);
}

/** Deterministic PRNG (mulberry32) so failures are reproducible. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function streamDecode(tok: Tokenizer, ids: number[], opts?: Parameters<Tokenizer['decode']>[1]): string {
  const d = tok.createDecoder(opts);
  let text = '';
  for (const id of ids) text += d.push(id);
  return text + d.flush();
}

// ---------------------------------------------------------------------------------------------------
// SentencePiece
// ---------------------------------------------------------------------------------------------------

/**
 * ids 0..2 special, 3..15 pieces (score = merge priority: higher merges first), 16 a user-defined
 * token, 17.. the 256 byte tokens <0x00>..<0xFF> (byte b is id 17 + b).
 */
const SPM_PIECES: [string, number, TokenType][] = [
  ['<unk>', 0, T.Unknown], // 0
  ['<s>', 0, T.Control], // 1
  ['</s>', 0, T.Control], // 2
  ['▁', 0, T.Normal], // 3
  ['a', 0, T.Normal], // 4
  ['b', 0, T.Normal], // 5
  ['c', 0, T.Normal], // 6
  ['d', 0, T.Normal], // 7
  ['ab', -5, T.Normal], // 8
  ['bc', -1, T.Normal], // 9
  ['▁a', -3, T.Normal], // 10
  ['abc', -2, T.Normal], // 11
  ['dd', -4, T.Normal], // 12
  ['▁▁', -6, T.Normal], // 13
  ['é', -7, T.Normal], // 14
  ['▁b', -8, T.Normal], // 15
  ['xy', 0, T.UserDefined], // 16
];
const BYTE0 = SPM_PIECES.length;
const hex2 = (b: number) => b.toString(16).toUpperCase().padStart(2, '0');

function spmMeta(withBytes = true): TokenizerMetadata {
  const entries = [...SPM_PIECES];
  if (withBytes) for (let b = 0; b < 256; b++) entries.push([`<0x${hex2(b)}>`, 0, T.Byte]);
  return {
    model: 'llama',
    tokens: entries.map((e) => e[0]),
    scores: entries.map((e) => e[1]),
    tokenTypes: entries.map((e) => e[2]),
    bosId: 1,
    eosId: 2,
    unkId: 0,
  };
}

describe('SentencePiece tokenizer (hand-built vocabulary)', () => {
  const tok = createTokenizer(spmMeta());

  test('defaults follow llama.cpp for SPM: add BOS, no EOS, EOS ends generation', () => {
    expect(tok.model).toBe('llama');
    expect(tok.vocabSize).toBe(BYTE0 + 256);
    expect(tok.addBos).toBe(true);
    expect(tok.addEos).toBe(false);
    expect(tok.bosId).toBe(1);
    expect(tok.eosId).toBe(2);
    expect([...tok.eogIds]).toEqual([2]);
  });

  test('merges take the highest score first', () => {
    // "abc" -> "▁abc": symbols ▁ a b c. Candidate pairs ▁a (-3), ab (-5), bc (-1).
    // bc (-1) merges first -> ▁ a bc; new pair a+bc = "abc" (-2) beats ▁a (-3) -> ▁ abc.
    // "▁abc" is not a token, so the result is [▁, abc]. (Lowest-score-first would start with ab.)
    expect(tok.encode('abc', { addSpecial: false })).toEqual([3, 11]);
    expect(tok.encode('abc')).toEqual([1, 3, 11]);
  });

  test('equal scores merge the leftmost pair first', () => {
    // "ddd" -> ▁ d d d; pairs (d,d) at 1-2 and 2-3 both score -4: the left one wins -> ▁ dd d.
    expect(tok.encode('ddd', { addSpecial: false })).toEqual([3, 12, 7]);
  });

  test('characters not in the vocabulary fall back to <0xXX> byte tokens', () => {
    // "é" is a token; "ç" (C3 A7) and "\n" (0A) are not: one byte token per UTF-8 byte.
    expect(tok.encode('é', { addSpecial: false })).toEqual([3, 14]);
    expect(tok.encode('ç\n', { addSpecial: false })).toEqual([3, BYTE0 + 0xc3, BYTE0 + 0xa7, BYTE0 + 0x0a]);
    // A 4-byte character (U+1F999) gives 4 byte tokens.
    expect(tok.encode('🦙', { addSpecial: false })).toEqual([3, ...[0xf0, 0x9f, 0xa6, 0x99].map((b) => BYTE0 + b)]);
  });

  test('without byte tokens, unknown bytes become <unk>', () => {
    const noBytes = createTokenizer(spmMeta(false));
    expect(noBytes.encode('ç', { addSpecial: false })).toEqual([3, 0, 0]);
  });

  test('spaces become ▁ and the text gets one space prefix', () => {
    // " a" -> "▁▁a": pairs ▁▁ (-6), ▁a (-3): ▁a first -> [▁, ▁a]; ▁ + ▁a is not a token.
    expect(tok.encode(' a', { addSpecial: false })).toEqual([3, 10]);
    // "a b" -> "▁a▁b": ▁a (-3) and ▁b (-8) both merge -> [▁a, ▁b].
    expect(tok.encode('a b', { addSpecial: false })).toEqual([10, 15]);
    const noPrefix = createTokenizer({ ...spmMeta(), addSpacePrefix: false });
    expect(noPrefix.encode('a b', { addSpecial: false })).toEqual([4, 15]);
  });

  test('empty text is [BOS] with special tokens, [] without', () => {
    expect(tok.encode('')).toEqual([1]);
    expect(tok.encode('', { addSpecial: false })).toEqual([]);
  });

  test('special tokens are parsed only with parseSpecial, and the text after one gets a space prefix', () => {
    // "<s> ab</s>" with parseSpecial: [<s>, " ab", </s>]; " ab" follows a special token so it becomes
    // "▁▁ab": ▁a (-3) before ab (-5) and ▁▁ (-6) -> ▁ ▁a b; nothing else merges -> [▁, ▁a, b].
    expect(tok.encode('<s> ab</s>', { parseSpecial: true })).toEqual([1, 1, 3, 10, 5, 2]);
    // Without parseSpecial "<", "s", ">" are text: byte tokens.
    const asText = tok.encode('<s>', { addSpecial: false });
    expect(asText).toEqual([3, ...[0x3c, 0x73, 0x3e].map((b) => BYTE0 + b)]);
    // <unk> is special too (llama.cpp partitions control, user-defined and unknown tokens).
    expect(tok.encode('a<unk>', { addSpecial: false, parseSpecial: true })).toEqual([10, 0]);
  });

  test('user-defined tokens are always split out, even without parseSpecial', () => {
    // "axyb" -> ["a", xy, "b"]: "▁a" -> [▁a]; then xy; "b" follows a token, so "▁b" -> [▁b].
    expect(tok.encode('axyb')).toEqual([1, 10, 16, 15]);
  });

  test('pieces: ▁ is a space, bytes are raw, control tokens are empty unless special', () => {
    expect(Buffer.from(tok.tokenToPiece(10)).toString()).toBe(' a');
    expect([...tok.tokenToPiece(BYTE0 + 0xc3)]).toEqual([0xc3]);
    expect(tok.tokenToPiece(1).length).toBe(0);
    expect(Buffer.from(tok.tokenToPiece(1, true)).toString()).toBe('<s>');
    expect(tok.tokenToPiece(0).length).toBe(0); // <unk> is special as well
    expect(Buffer.from(tok.tokenToPiece(16)).toString()).toBe('xy'); // user-defined: raw text
    expect(tok.tokenText(10)).toBe('▁a');
    expect(tok.tokenType(BYTE0)).toBe(T.Byte);
  });

  test('decode follows llama_detokenize, including its leading-space rule', () => {
    // Without BOS the first piece loses one leading space (the one encode added).
    expect(tok.decode([10, 11])).toBe('aabc');
    // removeSpecial drops the BOS and then keeps the space (llama.cpp's behaviour).
    expect(tok.decode([1, 10, 11], { removeSpecial: true })).toBe(' aabc');
    // A BOS that is decoded (to nothing) still uses up the strip: the space stays.
    expect(tok.decode([1, 10, 11])).toBe(' aabc');
    expect(tok.decode([1, 10, 2], { unparseSpecial: true })).toBe('<s> a</s>');
    expect(tok.decode([10, 11], { keepLeadingSpace: true })).toBe(' aabc');
    // Bytes are assembled before UTF-8 decoding; a lone lead byte is U+FFFD.
    expect(tok.decode([BYTE0 + 0xc3, BYTE0 + 0xa7])).toBe('ç');
    expect(tok.decode([BYTE0 + 0xc3])).toBe('\uFFFD');
    expect(tok.decode([BYTE0 + 0xef, BYTE0 + 0xbb, BYTE0 + 0xbf, 4])).toBe('\uFEFFa'); // a BOM character is kept
  });

  test('encode then decode round-trips text (without BOS)', () => {
    for (const text of ['abc dd  é', ' leading', 'trailing ', '', 'ç🦙\n\tx', 'a\u0000b']) {
      expect(tok.decode(tok.encode(text, { addSpecial: false }))).toBe(text);
    }
  });

  test('lone surrogates are encoded as U+FFFD (what UTF-8 conversion produces)', () => {
    expect(tok.encode('\uD800', { addSpecial: false })).toEqual([3, ...[0xef, 0xbf, 0xbd].map((b) => BYTE0 + b)]);
  });

  test('stream decoding equals decode for random ids, byte tokens included', () => {
    const rand = rng(7);
    const optionSets = [{}, { removeSpecial: true }, { unparseSpecial: true }, { keepLeadingSpace: true }];
    const eosTok = createTokenizer({ ...spmMeta(), addEos: true });
    for (let iter = 0; iter < 400; iter++) {
      const n = Math.floor(rand() * 12);
      const ids: number[] = [];
      for (let i = 0; i < n; i++) {
        // mostly byte tokens in the interesting range, so invalid and split UTF-8 is common
        const r = rand();
        ids.push(r < 0.6 ? BYTE0 + 0x80 + Math.floor(rand() * 0x80) : r < 0.7 ? Math.floor(rand() * 3) : Math.floor(rand() * tok.vocabSize));
      }
      for (const opts of optionSets) {
        expect(streamDecode(tok, ids, opts)).toBe(tok.decode(ids, opts));
        expect(streamDecode(eosTok, ids, opts)).toBe(eosTok.decode(ids, opts));
      }
    }
  });

  test('a stream decoder holds back a character split across tokens', () => {
    const d = tok.createDecoder({ keepLeadingSpace: true });
    expect(d.push(10)).toBe(' a');
    expect(d.push(BYTE0 + 0xc3)).toBe('');
    expect(d.push(BYTE0 + 0xa7)).toBe('ç');
    expect(d.push(BYTE0 + 0xc3)).toBe('');
    expect(d.flush()).toBe('\uFFFD');
    // flush resets: the next push starts a new sequence
    expect(d.push(4)).toBe('a');
  });

  test('encode is O(n log n): 200 KB in well under a second', () => {
    const text = 'abc ddd é ç\n'.repeat(15000);
    const t0 = performance.now();
    const ids = tok.encode(text);
    const ms = performance.now() - t0;
    expect(ids.length).toBeGreaterThan(100000);
    expect(ms).toBeLessThan(1000);
    expect(tok.decode(ids, { removeSpecial: true })).toBe(' ' + text);
  });
});

// ---------------------------------------------------------------------------------------------------
// Byte-level BPE
// ---------------------------------------------------------------------------------------------------

describe('pre-tokenizer patterns', () => {
  const split = (text: string, ...patterns: string[]) => splitWords(text, patterns.map((p) => new RegExp(p, 'gu')));
  const sample = "Hello world's 12345 ...";

  test('GPT-2 keeps numbers whole and a space in front of words', () => {
    expect(split(sample, GPT2_PATTERN)).toEqual(['Hello', ' world', "'s", ' 12345', ' ...']);
  });

  test('Llama 3 groups digits by three; the space before them stands alone', () => {
    // " 12345": no alternative takes " 1" ([^\r\n\p{L}\p{N}]?\p{L}+ needs a letter), and "\s+(?!\S)" fails
    // before "1", so the last alternative "\s+" takes " "; then \p{N}{1,3} gives "123", "45".
    expect(split(sample, LLAMA3_PATTERN)).toEqual(['Hello', ' world', "'s", ' ', '123', '45', ' ...']);
  });

  test('Qwen 2 splits every digit', () => {
    expect(split(sample, QWEN2_PATTERN)).toEqual(['Hello', ' world', "'s", ' ', '1', '2', '3', '4', '5', ' ...']);
  });

  test('contractions are case-insensitive for Llama 3 only', () => {
    // GPT-2's 's alternative is lower case: "'" goes with the punctuation alternative, "S" is a word.
    expect(split("IT'S", GPT2_PATTERN)).toEqual(['IT', "'", 'S']);
    expect(split("IT'S", LLAMA3_PATTERN)).toEqual(['IT', "'S"]);
  });

  test('whitespace runs: the last space joins the next word; newlines', () => {
    // "a  b": "\s+(?!\S)" takes the first space only (two spaces would be followed by "b").
    expect(split('a  b', GPT2_PATTERN)).toEqual(['a', ' ', ' b']);
    // GPT-2: "\n\n" before "b" splits into "\n" (followed by whitespace) and "\n" (by "\s+").
    expect(split('a\n\nb', GPT2_PATTERN)).toEqual(['a', '\n', '\n', 'b']);
    // Llama 3: "\s*[\r\n]+" keeps the newlines together; "[^\r\n\p{L}\p{N}]?\p{L}+" cannot start at "\n".
    expect(split('a\n\nb', LLAMA3_PATTERN)).toEqual(['a', '\n\n', 'b']);
    expect(split('x.\n\ny', LLAMA3_PATTERN)).toEqual(['x', '.\n\n', 'y']);
  });

  test('several patterns apply in turn, each to the pieces of the previous one', () => {
    // llama.cpp's "default": punctuation runs, then GPT-2, then \p{N}+, then [0-9]{3}.
    const patterns = ['[\\p{P}\\$\\+<=>\\^~\\|]+', GPT2_PATTERN, '\\p{N}+', '[0-9][0-9][0-9]'];
    expect(split('Hi, you!! 1234567', ...patterns)).toEqual(['Hi', ',', ' you', '!!', ' ', '123', '456', '7']);
  });
});

/**
 * A byte-level vocabulary: tokens are written in GPT-2's bytes_to_unicode alphabet ("Ġ" = space,
 * "Ċ" = newline). Merges in rank order.
 */
const BPE_TOKENS = [
  '<|endoftext|>', // 0 control
  'H', 'e', 'l', 'o', 'Ġ', 'w', 'r', 'd', "'", 's', // 1..10
  '1', '2', '3', '4', '5', '.', ',', // 11..17
  'll', 'He', 'Hell', 'Hello', 'Ġw', 'or', 'Ġwor', 'ld', 'Ġworld', "'s", // 18..27
  'Ġ1', '12', '123', '45', 'Ġ12', // 28..32
  'Hel', // 33: a token no merge produces
  'Ċ', // 34
  '<|eot_id|>', // 35: recognised by text as end of turn
];
const BPE_MERGES = [
  'l l', // r0 -> ll
  'H e', // r1 -> He
  'He ll', // r2 -> Hell
  'Hell o', // r3 -> Hello
  'Ġ w', // r4 -> Ġw
  'o r', // r5 -> or
  'Ġw or', // r6 -> Ġwor
  'l d', // r7 -> ld
  'Ġwor ld', // r8 -> Ġworld
  "' s", // r9 -> 's
  'Ġ 1', // r10 -> Ġ1
  '1 2', // r11 -> 12
  '12 3', // r12 -> 123
  '4 5', // r13 -> 45
  'Ġ1 2', // r14 -> Ġ12
];
const id = (t: string) => BPE_TOKENS.indexOf(t);

function bpeMeta(pre: string | undefined, extra: Partial<TokenizerMetadata> = {}): TokenizerMetadata {
  return {
    model: 'gpt2',
    pre,
    tokens: BPE_TOKENS,
    tokenTypes: BPE_TOKENS.map((t, i) => (i === 0 ? T.Control : T.Normal)),
    merges: BPE_MERGES,
    bosId: 0,
    eosId: 0,
    ...extra,
  };
}

describe('byte-level BPE tokenizer (hand-built vocabulary)', () => {
  const gpt2 = createTokenizer(bpeMeta('gpt-2'));
  const llama3 = createTokenizer(bpeMeta('llama-bpe'));
  const qwen2 = createTokenizer(bpeMeta('qwen2'));

  test('add_bos defaults by pre-tokenizer: llama3 yes, gpt-2 and qwen2 no', () => {
    expect(llama3.addBos).toBe(true);
    expect(gpt2.addBos).toBe(false);
    expect(qwen2.addBos).toBe(false);
    expect(createTokenizer(bpeMeta('qwen2', { addBos: true })).addBos).toBe(true);
    expect(llama3.encode('Hello')).toEqual([0, id('Hello')]);
    expect(gpt2.encode('Hello')).toEqual([id('Hello')]);
  });

  test('merges apply lowest rank first', () => {
    // "Hello": pairs He (r1), ll (r0) -> ll, then He, then He+ll = Hell (r2), then Hell+o (r3).
    // " world": Ġw (r4), or (r5), ld (r7) -> Ġw, or, Ġw+or (r6) -> Ġwor, ld, Ġwor+ld (r8).
    expect(gpt2.encode("Hello world's", { addSpecial: false })).toEqual([id('Hello'), id('Ġworld'), id("'s")]);
  });

  test('GPT-2 vs Llama 3 vs Qwen 2 splitting changes the tokens of " 12345"', () => {
    // GPT-2, one word "Ġ12345": pairs Ġ1 (r10), 12 (r11), 45 (r13). Ġ1 first -> Ġ1 2 3 4 5; then 45 (r13)
    // before Ġ1+2 (r14) -> Ġ1 2 3 45; then Ġ12 -> Ġ12 3 45 (Ġ12+3 is no merge). 123 never forms because
    // "1" was taken by Ġ1 first.
    expect(gpt2.encode(' 12345', { addSpecial: false })).toEqual([id('Ġ12'), id('3'), id('45')]);
    // Llama 3 words " ", "123", "45": 12 (r11) then 123 (r12).
    expect(llama3.encode(' 12345', { addSpecial: false })).toEqual([id('Ġ'), id('123'), id('45')]);
    // Qwen 2: single digits.
    expect(qwen2.encode(' 12345', { addSpecial: false })).toEqual(['Ġ', '1', '2', '3', '4', '5'].map(id));
  });

  test('llama3 takes a word that is a token as is (ignore_merges); gpt-2 merges it', () => {
    // "Hel": no merge makes the token "Hel"; merging gives He + l.
    expect(llama3.encode('Hel', { addSpecial: false })).toEqual([id('Hel')]);
    expect(gpt2.encode('Hel', { addSpecial: false })).toEqual([id('He'), id('l')]);
  });

  test('special tokens with parseSpecial; no space is added after them', () => {
    expect(gpt2.encode('<|endoftext|>Hello<|endoftext|>', { parseSpecial: true })).toEqual([0, id('Hello'), 0]);
    expect(gpt2.encode('Hello<|eot_id|>', { parseSpecial: true })).toEqual([id('Hello'), 35]);
  });

  test('end of generation: EOS plus tokens llama.cpp recognises by text, which become control tokens', () => {
    expect([...gpt2.eogIds].sort((a, b) => a - b)).toEqual([0, 35]);
    expect(gpt2.eotId).toBe(35);
    expect(gpt2.isEog(35)).toBe(true);
    expect(gpt2.tokenType(35)).toBe(T.Control);
    expect(gpt2.decode([id('Hello'), 35])).toBe('Hello');
    expect(gpt2.decode([id('Hello'), 35], { unparseSpecial: true })).toBe('Hello<|eot_id|>');
  });

  test('decode maps the byte alphabet back to bytes', () => {
    expect(gpt2.decode([id('Hello'), id('Ġworld'), id('Ċ'), id("'s")])).toBe("Hello world\n's");
    expect([...gpt2.tokenToPiece(id('Ġ'))]).toEqual([0x20]);
  });

  test('clean_up_tokenization_spaces: on for gpt-2 and llama3, off for qwen2', () => {
    // "Hello" "Ġ" "," -> "Hello ," -> the space before "," goes.
    const ids = [id('Hello'), id('Ġ'), id(','), id('Ġ'), id("'s")];
    expect(gpt2.decode(ids)).toBe("Hello,'s");
    expect(llama3.decode(ids)).toBe("Hello,'s");
    expect(qwen2.decode(ids)).toBe("Hello , 's");
  });

  test("llama.cpp's clean-up passes", () => {
    const clean = (s: string) => Buffer.from(cleanSpacesBatch(Buffer.from(s))).toString();
    // pass 1 drops " " before , . ? !; pass 2 turns " ' " into "'"; pass 3 drops " " before 's 'm 're 've
    // but not before 't 'd 'll.
    expect(clean("a , b ' c x 's y 're z 't w 'll v 'm u 've .")).toBe("a, b'c x's y're z 't w 'll v'm u've.");
    // A space consumed by " ' " cannot start another match: " ' ' " -> "'' ".
    expect(clean(" ' ' ")).toBe("'' ");
    expect(clean("x '")).toBe("x '"); // nothing after the apostrophe
  });

  test('the streaming clean-up equals the batch one for any split', () => {
    const rand = rng(11);
    const alphabet = [" ", " ", "'", 's', 'm', 'r', 'v', 'e', 't', '.', ',', '?', 'a'];
    for (let iter = 0; iter < 3000; iter++) {
      const n = Math.floor(rand() * 14);
      let s = '';
      for (let i = 0; i < n; i++) s += alphabet[Math.floor(rand() * alphabet.length)];
      const bytes = Buffer.from(s);
      const cleaner = new SpaceCleaner();
      const parts: number[] = [];
      for (let at = 0; at < bytes.length; ) {
        const len = 1 + Math.floor(rand() * 3);
        parts.push(...cleaner.push(bytes.subarray(at, at + len)));
        at += len;
      }
      parts.push(...cleaner.flush());
      expect(Buffer.from(parts).toString()).toBe(Buffer.from(cleanSpacesBatch(bytes)).toString());
    }
  });

  test('stream decoding equals decode for random ids (with the clean-up)', () => {
    const rand = rng(3);
    for (let iter = 0; iter < 500; iter++) {
      const ids = Array.from({ length: Math.floor(rand() * 10) }, () => Math.floor(rand() * BPE_TOKENS.length));
      for (const opts of [{}, { removeSpecial: true }, { unparseSpecial: true }]) {
        expect(streamDecode(gpt2, ids, opts)).toBe(gpt2.decode(ids, opts));
        expect(streamDecode(qwen2, ids, opts)).toBe(qwen2.decode(ids, opts));
      }
    }
  });

  test('a character missing from a partial vocabulary is skipped, as llama.cpp does', () => {
    // "z" is no token and has no merge: llama.cpp drops it.
    expect(gpt2.encode('Hez', { addSpecial: false })).toEqual([id('He')]);
  });
});

// ---------------------------------------------------------------------------------------------------
// Invalid metadata
// ---------------------------------------------------------------------------------------------------

describe('invalid tokenizer metadata', () => {
  test('unknown tokenizer model', () => {
    expectTokenizerError(() => createTokenizer({ ...spmMeta(), model: 'bert' }), /unsupported tokenizer model 'bert'/);
  });

  test('missing or malformed token list', () => {
    expectTokenizerError(() => createTokenizer({ ...spmMeta(), tokens: [] }), /tokens is missing or empty/);
    expectTokenizerError(
      () => createTokenizer({ ...spmMeta(), tokens: undefined as unknown as string[] }),
      /tokens is missing or empty/,
    );
    expectTokenizerError(
      () => createTokenizer({ model: 'llama', tokens: ['a', 5 as unknown as string] }),
      /tokens\[1\] is not a string/,
    );
  });

  test('array lengths that disagree', () => {
    const meta = spmMeta();
    expectTokenizerError(() => createTokenizer({ ...meta, scores: [0, 1] }), /scores has 2 entries but there are 273 tokens/);
    expectTokenizerError(() => createTokenizer({ ...meta, tokenTypes: [1] }), /token_type has 1 entries/);
  });

  test('token types outside 0..6 and malformed byte tokens', () => {
    expectTokenizerError(
      () => createTokenizer({ model: 'llama', tokens: ['a', 'b'], tokenTypes: [1, 9] }),
      /token_type\[1\] = 9 is not a token type/,
    );
    expectTokenizerError(
      () => createTokenizer({ model: 'llama', tokens: ['a', 'zz'], tokenTypes: [1, 6] }),
      /byte token 1 is 'zz'/,
    );
  });

  test('special ids outside the vocabulary', () => {
    expectTokenizerError(() => createTokenizer({ ...spmMeta(), bosId: 9999 }), /bos_token_id = 9999 is not a token id/);
    expectTokenizerError(() => createTokenizer({ ...spmMeta(), eotId: -5 }), /eot_token_id = -5/);
    // -1 and 0xFFFFFFFF mean "none"; the SPM default (2) then applies
    expect(createTokenizer({ ...spmMeta(), eosId: 0xffffffff }).eosId).toBe(2);
  });

  test('add_bos / add_eos without the token', () => {
    // A 2-token vocabulary: the default EOS id 2 does not exist, so there is no EOS.
    const tiny: TokenizerMetadata = { model: 'llama', tokens: ['<unk>', '<s>'] };
    expect(createTokenizer(tiny).eosId).toBeUndefined();
    expectTokenizerError(() => createTokenizer({ ...tiny, addEos: true }), /add_eos_token is true but there is no EOS/);
    expectTokenizerError(() => createTokenizer({ model: 'llama', tokens: ['x'] }), /add_bos_token is true but there is no BOS/);
  });

  test('BPE: missing or malformed merges, unknown pre-tokenizer', () => {
    expectTokenizerError(() => createTokenizer(bpeMeta('gpt-2', { merges: undefined })), /merges is missing/);
    expectTokenizerError(() => createTokenizer(bpeMeta('gpt-2', { merges: ['l l', 'Hello'] })), /merges\[1\] = "Hello" is not "left right"/);
    expectTokenizerError(() => createTokenizer(bpeMeta('gpt-2', { merges: ['l '] })), /merges\[0\]/);
    expectTokenizerError(() => createTokenizer(bpeMeta('tekken')), /unsupported BPE pre-tokenizer 'tekken'/);
  });

  test('decoding an id outside the vocabulary', () => {
    const tok = createTokenizer(spmMeta());
    expectTokenizerError(() => tok.decode([3, 100000]), /token id 100000 is outside the vocabulary/);
    expectTokenizerError(() => tok.createDecoder().push(-1), /token id -1/);
  });
});
