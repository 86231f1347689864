/**
 * Tokenizer against llama.cpp's tokenizer dumps (../shared/reference/tokenizer/*.json, README section 2):
 * for every case, encode with and without special tokens and with parseSpecial, the pieces, both
 * detokenizations, and the stream decoder; plus the whole vocabulary's pieces. The tokenizer is built
 * from the dump's own vocabulary (text, score, attr), and also from stories260K.gguf when present.
 *
 * The bundled models (models/*.gguf in this repository) are checked too: their SentencePiece vocabulary
 * must give the documented prompt ids and round-trip text.
 */
import * as fs from 'fs';
import * as path from 'path';
import { skipForMissingShared } from '../helpers';
import { createTokenizer, DecodeOptions, Tokenizer, TokenizerMetadata, TokenType } from '../../lib/tokenizer';

interface GoldenCase {
  label: string;
  text: string;
  tokens_with_special: number[];
  tokens_no_special: number[];
  tokens_parse_special: number[];
  pieces: { id: number; piece: string | null; piece_hex: string }[];
  detokenized: string;
  detokenized_hex: string;
  detokenized_no_special: string;
  detokenized_no_special_hex: string;
}

interface GoldenVocabEntry {
  id: number;
  text: string | null;
  score: number;
  attr: string;
  piece_hex: string;
}

interface TokenizerGolden {
  model: string;
  model_info: { file: string };
  vocab_type: string;
  add_bos: boolean;
  add_eos: boolean;
  bos: number;
  eos: number;
  eot: number;
  pad: number;
  n_vocab: number;
  cases: GoldenCase[];
  vocab: GoldenVocabEntry[];
}

function repoRoot(): string {
  let dir = __dirname;
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${__dirname}`);
    dir = parent;
  }
  return dir;
}

const ROOT = repoRoot();
const SHARED = path.join(ROOT, '..', 'shared');
const GOLDEN_DIR = path.join(SHARED, 'reference', 'tokenizer');
const HAVE_GOLDENS = fs.existsSync(GOLDEN_DIR);
if (!HAVE_GOLDENS) skipForMissingShared(GOLDEN_DIR);
const describeGoldens = HAVE_GOLDENS ? describe : describe.skip;

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

/** llama.cpp attr flags ("control", "byte", "normal|..." ) back to a GGUF token type. */
function typeOfAttr(attr: string): TokenType {
  const flags = attr.split('|');
  const order: [string, TokenType][] = [
    ['control', TokenType.Control],
    ['unknown', TokenType.Unknown],
    ['user_defined', TokenType.UserDefined],
    ['byte', TokenType.Byte],
    ['unused', TokenType.Unused],
    ['normal', TokenType.Normal],
  ];
  for (const [flag, type] of order) if (flags.includes(flag)) return type;
  return TokenType.Undefined;
}

function metadataFromGolden(g: TokenizerGolden): TokenizerMetadata {
  if (g.vocab_type !== 'SPM') throw new Error(`unexpected vocab_type ${g.vocab_type}`);
  const none = (id: number) => (id < 0 ? undefined : id);
  return {
    model: 'llama',
    tokens: g.vocab.map((v) => v.text ?? ''),
    scores: Float32Array.from(g.vocab.map((v) => v.score)),
    tokenTypes: Int32Array.from(g.vocab.map((v) => typeOfAttr(v.attr))),
    bosId: none(g.bos),
    eosId: none(g.eos),
    eotId: none(g.eot),
    padId: none(g.pad),
    unkId: 0,
    addBos: g.add_bos,
    addEos: g.add_eos,
  };
}

function streamDecode(tok: Tokenizer, ids: number[], opts?: DecodeOptions): string {
  const d = tok.createDecoder(opts);
  let text = '';
  for (const id of ids) text += d.push(id);
  return text + d.flush();
}

// ---------------------------------------------------------------------------------------------------
// Minimal GGUF metadata reader (test-only: the tokenizer must not depend on lib/gguf)
// ---------------------------------------------------------------------------------------------------

function readGgufMetadata(file: string): Map<string, unknown> {
  const buf = fs.readFileSync(file);
  let off = 0;
  const u32 = () => ((off += 4), buf.readUInt32LE(off - 4));
  const u64 = () => ((off += 8), Number(buf.readBigUInt64LE(off - 8)));
  const str = () => {
    const n = u64();
    off += n;
    return buf.toString('utf8', off - n, off);
  };
  const value = (type: number): unknown => {
    switch (type) {
      case 0: return buf.readUInt8((off += 1) - 1);
      case 1: return buf.readInt8((off += 1) - 1);
      case 2: return buf.readUInt16LE((off += 2) - 2);
      case 3: return buf.readInt16LE((off += 2) - 2);
      case 4: return u32();
      case 5: return buf.readInt32LE((off += 4) - 4);
      case 6: return buf.readFloatLE((off += 4) - 4);
      case 7: return buf.readUInt8((off += 1) - 1) !== 0;
      case 8: return str();
      case 9: {
        const itemType = u32();
        const n = u64();
        const items = new Array<unknown>(n);
        for (let i = 0; i < n; i++) items[i] = value(itemType);
        return items;
      }
      case 10: return u64();
      case 11: return Number(buf.readBigInt64LE((off += 8) - 8));
      case 12: return buf.readDoubleLE((off += 8) - 8);
      default: throw new Error(`${file}: GGUF value type ${type}`);
    }
  };
  if (buf.toString('latin1', 0, 4) !== 'GGUF') throw new Error(`${file} is not GGUF`);
  off = 4;
  u32(); // version
  u64(); // tensor count
  const nKv = u64();
  const md = new Map<string, unknown>();
  for (let i = 0; i < nKv; i++) {
    const key = str();
    md.set(key, value(u32()));
  }
  return md;
}

function metadataFromGguf(file: string): TokenizerMetadata {
  const md = readGgufMetadata(file);
  const get = <T>(key: string) => md.get(`tokenizer.ggml.${key}`) as T | undefined;
  return {
    model: get<string>('model')!,
    pre: get<string>('pre'),
    tokens: get<string[]>('tokens')!,
    scores: get<number[]>('scores'),
    tokenTypes: get<number[]>('token_type'),
    merges: get<string[]>('merges'),
    bosId: get<number>('bos_token_id'),
    eosId: get<number>('eos_token_id'),
    unkId: get<number>('unknown_token_id'),
    padId: get<number>('padding_token_id'),
    eotId: get<number>('eot_token_id'),
    addBos: get<boolean>('add_bos_token'),
    addEos: get<boolean>('add_eos_token'),
    addSpacePrefix: get<boolean>('add_space_prefix'),
  };
}

// ---------------------------------------------------------------------------------------------------
// Goldens
// ---------------------------------------------------------------------------------------------------

const GOLDEN_FILES = HAVE_GOLDENS ? fs.readdirSync(GOLDEN_DIR).filter((f) => f.endsWith('.json')).sort() : [];

describeGoldens('tokenizer vs llama.cpp goldens', () => {
  test('the goldens include stories260K', () => {
    expect(GOLDEN_FILES).toContain('stories260K.json');
  });

  // (describe.skip still collects its body, and .each rejects an empty table)
  if (GOLDEN_FILES.length === 0) return;

  describe.each(GOLDEN_FILES)('%s', (file) => {
    const golden = JSON.parse(fs.readFileSync(path.join(GOLDEN_DIR, file), 'utf8')) as TokenizerGolden;
    // A BPE dump has no merges: its tokenizer is built from the GGUF it was dumped from (the test below then checks
    // that vocabulary against the dump's, piece by piece).
    const tok = createTokenizer(
      golden.vocab_type === 'BPE' ? metadataFromGguf(path.join(SHARED, 'reference', golden.model_info.file)) : metadataFromGolden(golden),
    );

    test('vocabulary: size, special ids, every piece', () => {
      expect(tok.vocabSize).toBe(golden.n_vocab);
      expect(tok.bosId).toBe(golden.bos);
      expect(tok.eosId).toBe(golden.eos);
      expect(tok.addBos).toBe(golden.add_bos);
      expect(tok.addEos).toBe(golden.add_eos);
      expect(tok.eogIds.has(golden.eos)).toBe(true);
      for (const v of golden.vocab) {
        expect({ id: v.id, piece: hex(tok.tokenToPiece(v.id, true)) }).toEqual({ id: v.id, piece: v.piece_hex });
      }
    });

    test.each(golden.cases.map((c) => [c.label, c] as const))('case %s', (_label, c) => {
      expect(tok.encode(c.text)).toEqual(c.tokens_with_special);
      expect(tok.encode(c.text, { addSpecial: true, parseSpecial: false })).toEqual(c.tokens_with_special);
      expect(tok.encode(c.text, { addSpecial: false })).toEqual(c.tokens_no_special);
      expect(tok.encode(c.text, { parseSpecial: true })).toEqual(c.tokens_parse_special);
      for (const p of c.pieces) expect([p.id, hex(tok.tokenToPiece(p.id, true))]).toEqual([p.id, p.piece_hex]);

      const detok = tok.decode(c.tokens_with_special, { removeSpecial: true });
      const detokNoSpecial = tok.decode(c.tokens_no_special, { removeSpecial: false });
      expect(detok).toBe(c.detokenized);
      expect(detokNoSpecial).toBe(c.detokenized_no_special);
      expect(Buffer.from(detok).toString('hex')).toBe(c.detokenized_hex);
      expect(Buffer.from(detokNoSpecial).toString('hex')).toBe(c.detokenized_no_special_hex);

      // stream decoder invariant
      expect(streamDecode(tok, c.tokens_with_special, { removeSpecial: true })).toBe(c.detokenized);
      expect(streamDecode(tok, c.tokens_no_special)).toBe(c.detokenized_no_special);
      for (const ids of [c.tokens_with_special, c.tokens_no_special, c.tokens_parse_special]) {
        for (const opts of [{}, { removeSpecial: true }, { unparseSpecial: true }, { keepLeadingSpace: true }]) {
          expect(streamDecode(tok, ids, opts)).toBe(tok.decode(ids, opts));
        }
      }
    });

    test('stream decoder equals decode on random id sequences (invalid UTF-8 included)', () => {
      let seed = 12345;
      const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296);
      // Byte tokens: SPM's <0xXX> ('byte'), or a byte-level BPE's single-byte pieces.
      const byteIds = golden.vocab.filter((v) => v.attr === 'byte' || (golden.vocab_type === 'BPE' && v.piece_hex.length === 2)).map((v) => v.id);
      for (let iter = 0; iter < 300; iter++) {
        const n = Math.floor(rand() * 16);
        const ids = Array.from({ length: n }, () =>
          rand() < 0.5 ? byteIds[Math.floor(rand() * byteIds.length)] : Math.floor(rand() * golden.n_vocab),
        );
        for (const opts of [{}, { removeSpecial: true }, { unparseSpecial: true }]) {
          expect(streamDecode(tok, ids, opts)).toBe(tok.decode(ids, opts));
        }
      }
    });
  });

  const gguf = path.join(SHARED, 'models', 'stories260K.gguf');
  if (!fs.existsSync(gguf)) skipForMissingShared(gguf);
  (fs.existsSync(gguf) ? test : test.skip)('stories260K.gguf metadata gives the same tokenizer as the dump', () => {
    const golden = JSON.parse(fs.readFileSync(path.join(GOLDEN_DIR, 'stories260K.json'), 'utf8')) as TokenizerGolden;
    const tok = createTokenizer(metadataFromGguf(gguf));
    for (const c of golden.cases) {
      expect(tok.encode(c.text)).toEqual(c.tokens_with_special);
      expect(tok.encode(c.text, { addSpecial: false })).toEqual(c.tokens_no_special);
      expect(tok.encode(c.text, { parseSpecial: true })).toEqual(c.tokens_parse_special);
      expect(tok.decode(c.tokens_with_special, { removeSpecial: true })).toBe(c.detokenized);
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// Bundled models (in this repository)
// ---------------------------------------------------------------------------------------------------

const BUNDLED = fs.existsSync(path.join(ROOT, 'models'))
  ? fs.readdirSync(path.join(ROOT, 'models')).filter((f) => f.endsWith('.gguf')).sort()
  : [];
if (BUNDLED.length === 0) console.warn('bundled-model tokenizer tests skipped: no models/*.gguf');

(BUNDLED.length > 0 ? describe : describe.skip)('bundled models tokenizer', () => {
  if (BUNDLED.length === 0) {
    test('no bundled model', () => undefined);
    return;
  }
  test.each(BUNDLED)('%s', (file) => {
    const tok = createTokenizer(metadataFromGguf(path.join(ROOT, 'models', file)));
    expect(tok.model).toBe('llama');
    expect(tok.vocabSize).toBe(512);
    expect([tok.bosId, tok.eosId, tok.unkId, tok.addBos, tok.addEos]).toEqual([1, 2, 0, true, false]);
    // models/README: prompt "Once upon a time" -> [1, 391, 408, 261, 372]
    expect(tok.encode('Once upon a time')).toEqual([1, 391, 408, 261, 372]);
    const samples = [
      'Once upon a time, there was a little girl named Lily.',
      '"Mom, can I play?" she asked.\nHer mom said, "Yes!"',
      'Tom had 3 red balls and 12 blue ones.',
      'Café naïve — 🦙 emoji  double  spaces',
      '  leading and trailing  ',
    ];
    for (const text of samples) {
      const ids = tok.encode(text, { addSpecial: false });
      expect(tok.decode(ids)).toBe(text);
      expect(streamDecode(tok, ids)).toBe(text);
      expect(tok.decode([1, ...ids], { removeSpecial: true })).toBe(' ' + text);
    }
  });
});
