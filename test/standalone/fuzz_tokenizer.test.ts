/**
 * Property-based fuzzing of the tokenizer path (fast-check, fixed seeds and run counts):
 *  - mutated tokenizer metadata, both as TokenizerMetadata (createTokenizer) and as GGUF metadata values
 *    (tokenizerMetadataFromGGUF): a working tokenizer or an AdaInferError 'TOKENIZER', nothing else;
 *  - encode/decode of arbitrary text (any code point, lone surrogates, special-token texts, byte-token
 *    texts, whitespace runs): ids inside the vocabulary, and decode(encode(s)) === s where llama.cpp
 *    round-trips (SentencePiece with byte fallback; byte-level BPE without the clean-up, and with it up to
 *    that clean-up); arbitrary ids decode without throwing, the stream decoder agrees with decode.
 * The bundled model's SentencePiece vocabulary, a complete byte-level BPE vocabulary, and the reference
 * models' tokenizers when ../shared is present.
 */
import * as fs from 'fs';
import * as path from 'path';
import fc from 'fast-check';
import { AdaInferError } from '../../lib/errors';
import { GGUFValue, readGGUF } from '../../lib/gguf';
import { tokenizerMetadataFromGGUF } from '../../lib/model/gguf_tokenizer';
import { cleanSpacesBatch, createTokenizer, SUPPORTED_PRE_TOKENIZERS, Tokenizer, TokenizerMetadata, TokenType } from '../../lib/tokenizer';
import { BYTE_TO_CHAR } from '../../lib/tokenizer/bpe';
import { wellFormed } from '../../lib/tokenizer/types';
import { BUNDLED_MODEL, sharedDir, skipForMissingShared } from '../helpers';
import { fuzzRuns } from '../fuzz/config';

const MAX_CASE_MS = 2000;

// ---------------------------------------------------------------------------------------------------
// Vocabularies

const bundledGGUF = readGGUF(BUNDLED_MODEL);
const spmMeta = tokenizerMetadataFromGGUF(bundledGGUF);

/** A complete byte-level BPE vocabulary: 256 byte tokens, some merges, special tokens. */
function bpeMeta(pre: string): TokenizerMetadata {
  const tokens: string[] = [];
  for (let b = 0; b < 256; b++) tokens.push(BYTE_TO_CHAR[b]);
  const merges: string[] = [];
  const add = (a: string, b: string) => {
    merges.push(`${a} ${b}`);
    tokens.push(a + b);
  };
  const G = BYTE_TO_CHAR[0x20];
  add(G, 't');
  add('h', 'e');
  add(G + 't', 'he');
  add('i', 'n');
  add(G, 'a');
  add('e', 'r');
  add('1', '2');
  add('.', '.');
  const special = ['<|endoftext|>', '<|eot_id|>', '<|im_end|>'];
  tokens.push(...special);
  return {
    model: 'gpt2',
    pre,
    tokens,
    merges,
    tokenTypes: tokens.map((t) => (special.includes(t) ? TokenType.Control : TokenType.Normal)),
    bosId: tokens.length - 3,
    eosId: tokens.length - 3,
  };
}

const shared = sharedDir();
if (!shared) skipForMissingShared('../shared (its reference tokenizers are fuzzed too)');
const referenceTokenizers: [string, TokenizerMetadata][] = shared
  ? [path.join(shared, 'models', 'stories260K.gguf'), path.join(shared, 'reference', 'models', 'rand-gqa-f32.gguf')]
      .filter((f) => fs.existsSync(f))
      .map((f): [string, TokenizerMetadata] => [path.basename(f), tokenizerMetadataFromGGUF(readGGUF(f))])
  : [];

// ---------------------------------------------------------------------------------------------------
// Text

/** Pieces text is made of: tokens' own texts, whitespace, specials, byte-token look-alikes, any code point. */
const textUnit = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(' ', '  ', '\n', '\n\n', '\t', '\r\n', 'a', 'e', 'the', ' the', 'Once', ' upon', '.', ',', "'s", "'t", ' ?', '!') },
  { weight: 1, arbitrary: fc.constantFrom('<s>', '</s>', '<unk>', '<|endoftext|>', '<|eot_id|>', '▁', '▁▁', '<0x41>', '<0xFF>', 'Ġ', 'Ċ', '\u0000', '\uFEFF', '\u2581') },
  { weight: 3, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0x10ffff }).map((c) => (c >= 0xd800 && c <= 0xdfff ? String.fromCharCode(c) : String.fromCodePoint(c))) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 9999 }).map(String) },
);
const text = fc.array(textUnit, { maxLength: 40 }).map((parts) => parts.join(''));

const utf8 = new TextDecoder('utf-8', { ignoreBOM: true });

/**
 * What SentencePiece decoding gives back for `s`, as llama.cpp: lone surrogates become U+FFFD (UTF-8
 * conversion), and a U+2581 in the text is the encoder's space marker, so it comes back as a space.
 */
const spmText = (s: string) => wellFormed(s).replace(/\u2581/g, ' ');

function checkIds(tok: Tokenizer, ids: number[], context: string): void {
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= tok.vocabSize) throw new Error(`${context}: id ${id} outside [0, ${tok.vocabSize})`);
  }
}

function expectTokenizerError(err: unknown, context: string): void {
  if (!(err instanceof AdaInferError)) throw new Error(`${context}: threw a non-AdaInferError: ${err instanceof Error ? err.stack : String(err)}`);
  if (err.code !== 'TOKENIZER') throw new Error(`${context}: code ${err.code}: ${err.message}`);
}

/** Everything a tokenizer must survive, whatever text it gets. */
function exercise(tok: Tokenizer, s: string, context: string): void {
  const t0 = performance.now();
  for (const parseSpecial of [false, true]) {
    const ids = tok.encode(s, { addSpecial: true, parseSpecial });
    checkIds(tok, ids, context);
    const out = tok.decode(ids);
    if (typeof out !== 'string') throw new Error(`${context}: decode returned ${typeof out}`);
    const d = tok.createDecoder();
    let streamed = '';
    for (const id of ids) streamed += d.push(id);
    streamed += d.flush();
    if (streamed !== out) throw new Error(`${context}: stream decoder ${JSON.stringify(streamed)} != decode ${JSON.stringify(out)}`);
  }
  const ms = performance.now() - t0;
  if (ms > MAX_CASE_MS) throw new Error(`${context}: took ${ms.toFixed(0)} ms`);
}

// ---------------------------------------------------------------------------------------------------
// encode / decode of arbitrary text

describe('tokenizers on arbitrary text', () => {
  const spm = createTokenizer(spmMeta);
  const bpe = Object.fromEntries(['qwen2', 'llama-bpe', 'gpt-2'].map((pre) => [pre, createTokenizer(bpeMeta(pre))]));

  test('SentencePiece (bundled model): ids in the vocabulary and decode(encode(s)) === s', () => {
    fc.assert(
      fc.property(text, (s) => {
        const ids = spm.encode(s, { addSpecial: false });
        checkIds(spm, ids, JSON.stringify(s));
        expect(spm.decode(ids)).toBe(spmText(s));
        // With BOS, removed by removeSpecial: llama_detokenize then keeps the space the encoder prepended.
        expect(spm.decode(spm.encode(s), { removeSpecial: true })).toBe(s === '' ? '' : ' ' + spmText(s));
        exercise(spm, s, JSON.stringify(s));
      }),
      fuzzRuns(0x70c1, 3000),
    );
  });

  test.each(referenceTokenizers.length > 0 ? referenceTokenizers : [['(no ../shared)', spmMeta] as [string, TokenizerMetadata]])(
    'reference tokenizer %s: round trip where it has byte fallback, never an untyped error',
    (_name, meta) => {
      const tok = createTokenizer(meta);
      const hasBytes = meta.tokens.some((t) => /^<0x[0-9A-F]{2}>$/.test(t));
      fc.assert(
        fc.property(text, (s) => {
          const ids = tok.encode(s, { addSpecial: false });
          checkIds(tok, ids, JSON.stringify(s));
          if (hasBytes) expect(tok.decode(ids)).toBe(spmText(s));
          exercise(tok, s, JSON.stringify(s));
        }),
        fuzzRuns(0x70c2, 300),
      );
    },
  );

  test('byte-level BPE: qwen2 round-trips exactly; gpt-2 and llama-bpe up to their space clean-up', () => {
    fc.assert(
      fc.property(text, fc.constantFrom('qwen2', 'llama-bpe', 'gpt-2'), (s, pre) => {
        const tok = bpe[pre];
        const ids = tok.encode(s, { addSpecial: false });
        checkIds(tok, ids, JSON.stringify(s));
        const wf = wellFormed(s);
        const expected = pre === 'qwen2' ? wf : utf8.decode(cleanSpacesBatch(Buffer.from(wf, 'utf8')));
        expect(tok.decode(ids)).toBe(expected);
        exercise(tok, s, `${pre} ${JSON.stringify(s)}`);
      }),
      fuzzRuns(0x70c3, 2000),
    );
  });

  test('any ids: decode never throws inside the vocabulary and throws TOKENIZER outside it', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('spm', 'qwen2', 'gpt-2'),
        fc.array(fc.integer({ min: -3, max: 600 }), { maxLength: 40 }),
        fc.record({ removeSpecial: fc.boolean(), unparseSpecial: fc.boolean(), keepLeadingSpace: fc.boolean() }),
        (which, ids, opts) => {
          const tok = which === 'spm' ? spm : bpe[which];
          const inside = ids.every((id) => id >= 0 && id < tok.vocabSize);
          let out: string | undefined;
          try {
            out = tok.decode(ids, opts);
          } catch (err) {
            expectTokenizerError(err, `${which} ${JSON.stringify(ids)}`);
          }
          if (inside) {
            expect(typeof out).toBe('string');
            const d = tok.createDecoder(opts);
            let streamed = '';
            for (const id of ids) streamed += d.push(id);
            expect(streamed + d.flush()).toBe(out);
          } else {
            expect(out).toBeUndefined();
          }
        },
      ),
      fuzzRuns(0x70c4, 2000),
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// Mutated metadata

type Meta = Record<string, unknown>;

const anyValue = fc.oneof(
  fc.constantFrom(undefined, null, NaN, Infinity, -1, 0, 1, 1.5, 2 ** 31, 0xffffffff, 2 ** 53, -(2 ** 31), '', 'x', true, false),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n }),
  fc.string({ maxLength: 8 }),
  fc.array(fc.oneof(fc.integer(), fc.string({ maxLength: 4 }), fc.constant(null)), { maxLength: 4 }),
  fc.constant({}),
);

const tokenString = fc.oneof(
  fc.string({ maxLength: 6 }),
  fc.constantFrom('', ' ', '<0xZZ>', '<0x00>', '<0x100>', '<0x4>', '▁', 'Ġ', '<s>', '<|eot_id|>', '<|im_end|>', 'a b', 'x'.repeat(5000)),
  fc.integer({ min: 0, max: 0x10ffff }).map((c) => (c >= 0xd800 && c <= 0xdfff ? String.fromCharCode(c) : String.fromCodePoint(c))),
);

/** One change to a TokenizerMetadata (as a plain object, so wrong types can be put in). */
const metaEdit = fc.oneof(
  fc.record({ k: fc.constant('model'), v: fc.oneof(fc.constantFrom('llama', 'gpt2', 'bert', 'LLAMA', ''), anyValue) }),
  fc.record({ k: fc.constant('pre'), v: fc.oneof(fc.constantFrom(...SUPPORTED_PRE_TOKENIZERS, 'nope', '__proto__', 'constructor'), anyValue) }),
  fc.record({ k: fc.constant('tokens[i]'), i: fc.nat(), v: tokenString }),
  fc.record({ k: fc.constant('tokens.length'), n: fc.nat({ max: 600 }) }),
  fc.record({ k: fc.constant('tokens'), v: anyValue }),
  fc.record({ k: fc.constant('scores[i]'), i: fc.nat(), v: fc.oneof(fc.constantFrom(NaN, Infinity, -Infinity, -1e30, 1e30), anyValue) }),
  fc.record({ k: fc.constant('scores'), v: anyValue }),
  fc.record({ k: fc.constant('tokenTypes[i]'), i: fc.nat(), v: fc.oneof(fc.integer({ min: -2, max: 8 }), fc.constantFrom(2 ** 31, NaN, 1.5), anyValue) }),
  fc.record({ k: fc.constant('tokenTypes'), v: anyValue }),
  fc.record({ k: fc.constant('merges[i]'), i: fc.nat(), v: fc.oneof(tokenString, fc.constantFrom('a', ' ', 'a  b', 'Ġ t', 'zz qq', 'h e x')) }),
  fc.record({ k: fc.constant('merges'), v: anyValue }),
  fc.record({
    k: fc.constantFrom('bosId', 'eosId', 'unkId', 'padId', 'eotId'),
    v: fc.oneof(fc.integer({ min: -3, max: 600 }), fc.constantFrom(0xffffffff, NaN, 1.5, 2 ** 53), anyValue),
  }),
  fc.record({ k: fc.constantFrom('addBos', 'addEos', 'addSpacePrefix'), v: fc.oneof(fc.boolean(), anyValue) }),
);

function applyMetaEdit(meta: Meta, e: { k: string; v?: unknown; i?: number; n?: number }): void {
  const arr = (key: string): unknown[] | undefined => {
    const a = meta[key];
    if (Array.isArray(a)) return (meta[key] = [...a]) as unknown[];
    if (ArrayBuffer.isView(a)) return (meta[key] = Array.from(a as unknown as ArrayLike<number>)) as unknown[];
    return undefined;
  };
  const at = e.k.match(/^(\w+)\[i\]$/);
  if (at) {
    const a = arr(at[1]);
    if (a && a.length > 0) a[e.i! % a.length] = e.v;
  } else if (e.k === 'tokens.length') {
    const a = arr('tokens');
    if (a) {
      const old = a.length;
      a.length = e.n!;
      for (let i = old; i < a.length; i++) a[i] = `extra${i}`;
    }
  } else {
    meta[e.k] = e.v;
  }
}

describe('tokenizers from mutated metadata', () => {
  const bases: [string, TokenizerMetadata][] = [
    ['spm (bundled)', spmMeta],
    ['bpe qwen2', bpeMeta('qwen2')],
    ['bpe llama-bpe', bpeMeta('llama-bpe')],
    ...referenceTokenizers,
  ];

  test('createTokenizer: a working tokenizer or a TOKENIZER error, never another failure', () => {
    const outcome = { built: 0, refused: 0 };
    fc.assert(
      fc.property(fc.nat({ max: bases.length - 1 }), fc.array(metaEdit, { minLength: 1, maxLength: 3 }), text, (b, edits, s) => {
        const meta: Meta = { ...bases[b][1] };
        for (const e of edits) applyMetaEdit(meta, e);
        const context = `${bases[b][0]} ${JSON.stringify(edits, (_k, v) => (typeof v === 'bigint' ? `${v}n` : typeof v === 'string' && v.length > 40 ? `${v.slice(0, 10)}…(${v.length})` : v))}`;
        const t0 = performance.now();
        let tok: Tokenizer;
        try {
          tok = createTokenizer(meta as unknown as TokenizerMetadata);
        } catch (err) {
          expectTokenizerError(err, context);
          outcome.refused++;
          return;
        }
        if (performance.now() - t0 > MAX_CASE_MS) throw new Error(`${context}: construction took too long`);
        outcome.built++;
        exercise(tok, s, context);
      }),
      fuzzRuns(0x3e7a, 4000),
    );
    console.log(`mutated tokenizer metadata: ${outcome.built} built, ${outcome.refused} refused with TOKENIZER, crashes 0`);
    expect(outcome.built).toBeGreaterThan(50);
    expect(outcome.refused).toBeGreaterThan(50);
  });

  test('GGUF tokenizer.ggml.* values of any type: tokenizerMetadataFromGGUF + createTokenizer give a tokenizer or a TOKENIZER error', () => {
    const keys = [...bundledGGUF.metadata.keys()].filter((k) => k.startsWith('tokenizer.'));
    keys.push('tokenizer.ggml.merges', 'tokenizer.ggml.pre', 'tokenizer.ggml.eot_token_id', 'tokenizer.ggml.padding_token_id');
    const ggufValue: fc.Arbitrary<GGUFValue | undefined> = fc.oneof(
      fc.constant(undefined),
      fc.constantFrom('llama', 'gpt2', '', 'qwen2'),
      fc.integer({ min: -5, max: 600 }),
      fc.double(),
      fc.bigInt({ min: 2n ** 53n, max: 2n ** 64n - 1n }),
      fc.boolean(),
      fc.array(fc.oneof(fc.string({ maxLength: 4 }), fc.integer({ min: -2, max: 9 })), { maxLength: 600 }),
      fc.array(fc.array(fc.integer(), { maxLength: 2 }), { maxLength: 3 }),
    );
    let built = 0;
    let refused = 0;
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom(...keys), ggufValue), { minLength: 1, maxLength: 3 }), text, (edits, s) => {
        const metadata = new Map(bundledGGUF.metadata);
        for (const [k, v] of edits) {
          if (v === undefined) metadata.delete(k);
          else metadata.set(k, v);
        }
        const context = JSON.stringify(edits, (_k, v) => (typeof v === 'bigint' ? `${v}n` : Array.isArray(v) && v.length > 8 ? `[${v.length} items]` : v));
        let tok: Tokenizer;
        try {
          tok = createTokenizer(tokenizerMetadataFromGGUF({ ...bundledGGUF, metadata }));
        } catch (err) {
          expectTokenizerError(err, context);
          refused++;
          return;
        }
        built++;
        exercise(tok, s, context);
      }),
      fuzzRuns(0x3e7b, 2000),
    );
    console.log(`mutated GGUF tokenizer values: ${built} built, ${refused} refused with TOKENIZER, crashes 0`);
    expect(refused).toBeGreaterThan(50);
  });
});
