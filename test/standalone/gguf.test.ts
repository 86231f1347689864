/**
 * GGUF types, reader and writer.
 *  (a) every GGUF under ../shared parses and matches MANIFEST.json / the model READMEs (skipped without ../shared);
 *  (b) writer round trip: every metadata type, nested arrays, 64-bit ints, unicode, several tensor types;
 *  (c) malformed input: each case must throw ModelFileError with the expected code and a message naming
 *      the problem, through both parseGGUF (memory) and readGGUF (file, tiny read chunks).
 * Malformed files are built byte by byte with RawGGUF below, not with the writer, so they can be wrong
 * in exactly one place.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { skipForMissingShared } from '../helpers';
import { ModelFileError, type ErrorCode } from '../../lib/errors';
import {
  GGMLType,
  GGUFValueType,
  GGUFWriter,
  allGGMLTypes,
  getArray,
  getBool,
  getInteger,
  getNumber,
  getNumberArray,
  getString,
  getStringArray,
  getU32,
  ggmlTypeFromName,
  ggmlTypeInfo,
  ggmlTypeName,
  llamaFileTypeName,
  parseGGUF,
  readGGUF,
  rowBytes,
  tensorBytes,
  type GGUFFile,
  type GGUFMetadataType,
  type GGUFValue,
} from '../../lib/gguf';

// ---------------------------------------------------------------------------------------------------
// Locations

/** The repository root: the nearest ancestor of this (compiled) file holding package.json. */
function repoRoot(): string {
  let dir = __dirname;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${__dirname}`);
    dir = up;
  }
}

/** The fs module object itself (the `import * as` namespace above is a read-only view), for jest.spyOn. */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const nodeFs: typeof fs = require('fs');

/** test.each needs a non-empty table even inside a skipped describe. */
function rowsOrPlaceholder<T extends readonly unknown[]>(rows: T[], placeholder: T): T[] {
  return rows.length > 0 ? rows : [placeholder];
}

const SHARED = path.resolve(repoRoot(), '..', 'shared');
const STORIES = path.join(SHARED, 'models', 'stories260K.gguf');
const REFERENCE_DIR = path.join(SHARED, 'reference', 'models');
const SHIP_DIR = path.join(SHARED, 'models', 'ship');
const HAVE_SHARED = fs.existsSync(STORIES) && fs.existsSync(path.join(REFERENCE_DIR, 'MANIFEST.json'));
if (!HAVE_SHARED) skipForMissingShared(`${STORIES} or ${path.join(REFERENCE_DIR, 'MANIFEST.json')}`);
const describeShared = HAVE_SHARED ? describe : describe.skip;

let tmpDir: string;
beforeAll(() => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'adainfer-gguf-'));
});
afterAll(() => {
  fs.rmSync(tmpDir, { recursive: true, force: true });
});

function tmpFile(name: string, bytes?: Uint8Array): string {
  const p = path.join(tmpDir, name);
  if (bytes) fs.writeFileSync(p, bytes);
  return p;
}

function ggufFilesIn(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.gguf'))
    .sort()
    .map((f) => path.join(dir, f));
}

// ---------------------------------------------------------------------------------------------------
// Raw GGUF bytes

/** Little-endian byte builder for hand-made (possibly malformed) GGUF files. */
class RawGGUF {
  private readonly parts: Buffer[] = [];
  length = 0;

  raw(b: Uint8Array | number[]): this {
    const buf = Buffer.from(b as Uint8Array);
    this.parts.push(buf);
    this.length += buf.length;
    return this;
  }
  u8(v: number): this {
    return this.raw([v & 0xff]);
  }
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    return this.raw(b);
  }
  u64(v: number | bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)));
    return this.raw(b);
  }
  f32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    return this.raw(b);
  }
  /** Length-prefixed string; a Buffer is written as given (for invalid UTF-8). */
  str(s: string | Uint8Array, declaredLength?: number | bigint): this {
    const bytes = typeof s === 'string' ? Buffer.from(s, 'utf8') : Buffer.from(s);
    return this.u64(declaredLength ?? bytes.length).raw(bytes);
  }
  header(tensorCount: number | bigint, kvCount: number | bigint, version = 3, magic = 'GGUF'): this {
    return this.raw(Buffer.from(magic, 'latin1')).u32(version).u64(tensorCount).u64(kvCount);
  }
  kvU32(key: string | Uint8Array, v: number): this {
    return this.str(key).u32(GGUFValueType.UINT32).u32(v);
  }
  kvString(key: string, v: string | Uint8Array): this {
    return this.str(key).u32(GGUFValueType.STRING).str(v);
  }
  tensorInfo(name: string | Uint8Array, dims: Array<number | bigint>, type: number, offset: number | bigint): this {
    this.str(name).u32(dims.length);
    for (const d of dims) this.u64(d);
    return this.u32(type).u64(offset);
  }
  padTo(align: number): this {
    const pad = (align - (this.length % align)) % align;
    return this.raw(Buffer.alloc(pad));
  }
  build(): Buffer {
    return Buffer.concat(this.parts);
  }
}

interface RawTensor {
  name: string | Uint8Array;
  dims: Array<number | bigint>;
  type: number;
  offset: number | bigint;
}

interface RawFileSpec {
  version?: number;
  tensorCount?: number | bigint;
  kvCount?: number | bigint;
  /** Writes the metadata entries; `count` is how many (default 1: general.architecture). */
  kvs?: { count: number; write: (b: RawGGUF) => void };
  tensors?: RawTensor[];
  alignment?: number;
  dataBytes?: number;
}

/** A small valid file unless the spec says otherwise: 1 key, tensor "a" F32 [8] at offset 0, 32 data bytes. */
function rawFile(spec: RawFileSpec = {}): Buffer {
  const kvs = spec.kvs ?? { count: 1, write: (b: RawGGUF) => b.kvString('general.architecture', 'llama') };
  const tensors = spec.tensors ?? [{ name: 'a', dims: [8], type: GGMLType.F32, offset: 0 }];
  const b = new RawGGUF().header(spec.tensorCount ?? tensors.length, spec.kvCount ?? kvs.count, spec.version ?? 3);
  kvs.write(b);
  for (const t of tensors) b.tensorInfo(t.name, t.dims, t.type, t.offset);
  b.padTo(spec.alignment ?? 32);
  b.raw(Buffer.alloc(spec.dataBytes ?? 32, 0xab));
  return b.build();
}

function oneKv(write: (b: RawGGUF) => void): RawFileSpec['kvs'] {
  return { count: 1, write };
}

// ---------------------------------------------------------------------------------------------------
// Expectations

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

/** fn must throw a ModelFileError with `code` whose message matches every pattern. */
function expectModelFileError(fn: () => unknown, code: ErrorCode, ...mentions: Array<string | RegExp>): ModelFileError {
  const err = catchError(fn);
  if (!(err instanceof ModelFileError)) {
    throw new Error(`expected ModelFileError ${code}, got ${err === undefined ? 'no error' : String(err)}`);
  }
  expect({ code: err.code, message: err.message }).toEqual({ code, message: err.message });
  for (const m of mentions) expect(err.message).toMatch(m);
  return err;
}

let fileCounter = 0;

/** Same bytes through parseGGUF and through readGGUF (with 7-byte reads, to cross every chunk boundary). */
function expectBadBytes(bytes: Uint8Array, code: ErrorCode, ...mentions: Array<string | RegExp>): ModelFileError {
  const err = expectModelFileError(() => parseGGUF(bytes, bytes.length, 'bad.gguf'), code, ...mentions);
  const p = tmpFile(`bad-${fileCounter++}.gguf`, bytes);
  const fileErr = expectModelFileError(() => readGGUF(p, { chunkSize: 7 }), code, ...mentions);
  expect(fileErr.message.replace(p, 'bad.gguf')).toBe(err.message);
  expect(fileErr.path).toBe(p);
  return err;
}

function parseBytes(bytes: Uint8Array): GGUFFile {
  return parseGGUF(bytes, bytes.length, 'mem.gguf');
}

/** Deterministic PRNG (mulberry32), so fuzz failures reproduce. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Compact comparable view of a parsed file (no path). */
function summary(f: GGUFFile) {
  return {
    version: f.version,
    fileSize: f.fileSize,
    alignment: f.alignment,
    dataOffset: f.dataOffset,
    metadata: [...f.metadata],
    metadataTypes: [...f.metadataTypes],
    tensors: f.tensors,
  };
}

// ---------------------------------------------------------------------------------------------------
// types.ts

describe('GGML type table', () => {
  test('block and type sizes are ggml’s', () => {
    const expected: Record<string, [number, number]> = {
      F32: [1, 4], F16: [1, 2], Q4_0: [32, 18], Q4_1: [32, 20], Q5_0: [32, 22], Q5_1: [32, 24],
      Q8_0: [32, 34], Q8_1: [32, 36], Q2_K: [256, 84], Q3_K: [256, 110], Q4_K: [256, 144],
      Q5_K: [256, 176], Q6_K: [256, 210], Q8_K: [256, 292], IQ2_XXS: [256, 66], IQ2_XS: [256, 74],
      IQ3_XXS: [256, 98], IQ1_S: [256, 50], IQ4_NL: [32, 18], IQ3_S: [256, 110], IQ2_S: [256, 82],
      IQ4_XS: [256, 136], I8: [1, 1], I16: [1, 2], I32: [1, 4], I64: [1, 8], F64: [1, 8],
      IQ1_M: [256, 56], BF16: [1, 2], TQ1_0: [256, 54], TQ2_0: [256, 66], MXFP4: [32, 17],
    };
    const table = Object.fromEntries(allGGMLTypes().map((t) => [t.name, [t.blockSize, t.typeSize]]));
    expect(table).toEqual(expected);
    expect(ggmlTypeInfo(14)?.name).toBe('Q6_K');
    expect(ggmlTypeInfo(30)?.name).toBe('BF16');
    expect(ggmlTypeInfo(35)?.name).toBe('TQ2_0');
    expect(ggmlTypeFromName('q4_k')).toBe(GGMLType.Q4_K);
    expect(ggmlTypeName(99)).toBe('type 99');
    expect(ggmlTypeName(4)).toMatch(/Q4_2.*retired/);
    expect(ggmlTypeInfo(4)).toBeUndefined();
  });

  test('rowBytes and tensorBytes', () => {
    expect(rowBytes(GGMLType.F32, 64)).toBe(256);
    expect(rowBytes(GGMLType.Q8_0, 64)).toBe(68);
    expect(rowBytes(GGMLType.Q4_K, 512)).toBe(288);
    expect(() => rowBytes(GGMLType.Q4_0, 33)).toThrow(/multiple of the Q4_0 block size 32/);
    expect(() => rowBytes(99, 32)).toThrow(RangeError);
    expect(tensorBytes(GGMLType.Q6_K, [256, 512])).toBe(512 * 210);
    expect(tensorBytes(GGMLType.F16, [3, 5, 7, 11])).toBe(2 * 3 * 5 * 7 * 11);
    expect(tensorBytes(GGMLType.F32, [])).toBe(4); // ggml: zero dims is a scalar
    expect(tensorBytes(GGMLType.F32, [0, 100])).toBe(0);
    expect(() => tensorBytes(GGMLType.F32, [2 ** 32, 2 ** 32])).toThrow(/overflows 64 bits/);
    expect(() => tensorBytes(GGMLType.F32, [1n << 62n, 4n])).toThrow(/overflows 64 bits/);
    expect(() => tensorBytes(GGMLType.F32, [2 ** 30, 2 ** 30])).toThrow(/exceeds 2\^53 bytes/);
    expect(() => tensorBytes(GGMLType.F32, [1n << 63n])).toThrow(/outside 0\.\.2\^63-1/);
    expect(() => tensorBytes(GGMLType.F32, [0n, 2n ** 60n])).toThrow(/dimension 1 is 1152921504606846976, above 2\^53/);
    expect(() => tensorBytes(GGMLType.F32, [1, 1, 1, 1, 1])).toThrow(/5 dimensions/);
  });

  test('file type names', () => {
    expect(llamaFileTypeName(0)).toBe('ALL_F32');
    expect(llamaFileTypeName(15)).toBe('MOSTLY_Q4_K_M');
    expect(llamaFileTypeName(32)).toBe('MOSTLY_BF16');
    expect(llamaFileTypeName(500)).toBe('file type 500');
  });
});

// ---------------------------------------------------------------------------------------------------
// (a) real files

interface ManifestEntry {
  file: string;
  size: number;
  gguf_version: number;
  file_type: string;
  metadata: Record<string, string | number>;
  tensor_type_counts: Record<string, number>;
  tensors: Array<{ name: string; type: string; ne: number[]; n_bytes: number }>;
}

describeShared('shared GGUF files', () => {
  // MANIFEST.json, and the manifests of later additions in the same format (MANIFEST-qwen.json).
  const manifest: ManifestEntry[] = HAVE_SHARED
    ? fs
        .readdirSync(REFERENCE_DIR)
        .filter((f) => /^MANIFEST(-[\w-]+)?\.json$/.test(f))
        .sort()
        .flatMap((f) => JSON.parse(fs.readFileSync(path.join(REFERENCE_DIR, f), 'utf8')) as ManifestEntry[])
    : [];
  const allFiles = HAVE_SHARED ? [STORIES, ...ggufFilesIn(SHIP_DIR), ...ggufFilesIn(REFERENCE_DIR)] : [];

  test('the manifest covers every reference model', () => {
    expect(manifest.map((m) => m.file).sort()).toEqual(ggufFilesIn(REFERENCE_DIR).map((p) => path.basename(p)));
  });

  const manifestRows = rowsOrPlaceholder<[string, ManifestEntry]>(
    manifest.map((m) => [m.file, m] as [string, ManifestEntry]),
    ['(no manifest)', {} as ManifestEntry],
  );
  test.each<[string, ManifestEntry]>(manifestRows)('%s matches MANIFEST.json', (_name, m) => {
    const f = readGGUF(path.join(REFERENCE_DIR, m.file));
    expect(f.version).toBe(m.gguf_version);
    expect(f.fileSize).toBe(m.size);
    expect(f.alignment).toBe(32);
    expect(f.metadata.has('general.alignment')).toBe(false);
    expect(
      f.tensors.map((t) => ({ name: t.name, type: t.typeName, ne: t.dims, n_bytes: t.byteSize })),
    ).toEqual(m.tensors);
    const counts: Record<string, number> = {};
    for (const t of f.tensors) counts[t.typeName] = (counts[t.typeName] ?? 0) + 1;
    expect(counts).toEqual(m.tensor_type_counts);
    expect(llamaFileTypeName(getU32(f, 'general.file_type', { required: true }))).toBe(m.file_type);

    expect([...f.metadata.keys()].sort()).toEqual(Object.keys(m.metadata).sort());
    for (const [key, want] of Object.entries(m.metadata)) {
      const got = f.metadata.get(key);
      const arrayMatch = typeof want === 'string' ? /^<array\[(\d+)\] of (\w+)>$/.exec(want) : null;
      if (arrayMatch) {
        expect(Array.isArray(got) && got.length).toBe(Number(arrayMatch[1]));
        expect(GGUFValueType[f.metadataTypes.get(key)?.arrayType ?? -1]).toBe(arrayMatch[2]);
      } else {
        expect([key, got]).toEqual([key, want]);
      }
    }
  });

  test('stories260K: metadata, tokenizer arrays, layout', () => {
    const f = readGGUF(STORIES);
    expect(f.version).toBe(3);
    expect(f.alignment).toBe(32);
    expect(getString(f, 'general.architecture', { required: true })).toBe('llama');
    expect(getU32(f, 'llama.block_count', { required: true })).toBe(5);
    expect(getU32(f, 'llama.embedding_length')).toBe(64);
    expect(getU32(f, 'llama.feed_forward_length')).toBe(172);
    expect(getU32(f, 'llama.attention.head_count')).toBe(8);
    expect(getU32(f, 'llama.attention.head_count_kv')).toBe(4);
    expect(getNumber(f, 'llama.attention.layer_norm_rms_epsilon')).toBe(Math.fround(1e-5));
    expect(getU32(f, 'tokenizer.ggml.bos_token_id')).toBe(1);
    expect(getU32(f, 'tokenizer.ggml.eos_token_id')).toBe(2);
    const tokens = getStringArray(f, 'tokenizer.ggml.tokens', { required: true });
    expect(tokens).toHaveLength(512);
    expect(tokens.slice(0, 4)).toEqual(['<unk>', '<s>', '</s>', '<0x00>']);
    expect(getNumberArray(f, 'tokenizer.ggml.scores', { required: true })).toHaveLength(512);
    expect(getArray(f, 'tokenizer.ggml.token_type', { elementType: GGUFValueType.INT32 })).toHaveLength(512);
    expect(f.tensors).toHaveLength(3 + 5 * 9);
    expect(f.tensorsByName.get('token_embd.weight')).toMatchObject({ dims: [64, 512], typeName: 'F32', offset: 0 });
    expect(f.tensorsByName.get('blk.4.ffn_down.weight')?.dims).toEqual([172, 64]);
  });

  test('ship models: 10 layers, vocabulary 512', () => {
    for (const p of ggufFilesIn(SHIP_DIR)) {
      const f = readGGUF(p);
      expect([p, f.version, getU32(f, 'llama.block_count')]).toEqual([p, 3, 10]);
      expect(getStringArray(f, 'tokenizer.ggml.tokens')).toHaveLength(512);
      expect(f.tensors).toHaveLength(2 + 10 * 9); // tied embeddings: no output.weight
      expect(f.tensorsByName.has('output.weight')).toBe(false);
      const wantType = p.includes('.f16.') ? 'MOSTLY_F16' : 'ALL_F32';
      expect(llamaFileTypeName(getU32(f, 'general.file_type', { required: true }))).toBe(wantType);
    }
  });

  test.each(rowsOrPlaceholder<[string, string]>(allFiles.map((p) => [path.relative(SHARED, p), p]), ['(no files)', '']))(
    '%s: data section aligned and packed; memory, chunked and default reads agree',
    (_rel, p) => {
      const f = readGGUF(p);
      expect(f.dataOffset % f.alignment).toBe(0);
      const sorted = [...f.tensors].sort((a, b) => a.offset - b.offset);
      let end = f.dataOffset;
      for (const t of sorted) {
        expect(t.absoluteOffset).toBe(f.dataOffset + t.offset);
        expect(t.absoluteOffset).toBeGreaterThanOrEqual(end);
        end = t.absoluteOffset + t.byteSize;
      }
      expect(end).toBeLessThanOrEqual(f.fileSize);
      expect(f.fileSize - end).toBeLessThan(f.alignment);

      const bytes = fs.readFileSync(p);
      expect(summary(parseGGUF(bytes, bytes.length, p))).toEqual(summary(f));
      // Only the header region, as a loader that read the first N bytes would pass it.
      expect(summary(parseGGUF(bytes.subarray(0, f.dataOffset), bytes.length, p))).toEqual(summary(f));
      expect(summary(readGGUF(p, { chunkSize: 13 }))).toEqual(summary(f));
      expect(summary(readGGUF(p, { chunkSize: 1 }))).toEqual(summary(f)); // a refill for every item
    },
  );

  test('readGGUF reads only the header region', () => {
    const readSync = jest.spyOn(nodeFs, 'readSync');
    try {
      const f = readGGUF(STORIES, { chunkSize: 4096 });
      const requested = readSync.mock.calls.reduce((sum, call) => sum + Number((call as unknown[])[3] ?? 0), 0);
      expect(requested).toBeLessThan(f.dataOffset + 4096);
    } finally {
      readSync.mockRestore();
    }
  });

  test('a header-only buffer shorter than the header is reported, not misparsed', () => {
    const bytes = fs.readFileSync(STORIES);
    expectModelFileError(
      () => parseGGUF(bytes.subarray(0, 1000), bytes.length, 'stories.gguf'),
      'FILE_READ',
      /continues past the 1000 bytes given/,
    );
  });

  test('writer reproduces stories260K byte for byte from its parsed header and tensor data', () => {
    const original = fs.readFileSync(STORIES);
    const f = parseBytes(original);
    const w = new GGUFWriter().copyMetadataFrom(f);
    for (const t of f.tensors) {
      w.addTensor(t.name, t.dims, t.type, () => original.subarray(t.absoluteOffset, t.absoluteOffset + t.byteSize));
    }
    const out = tmpFile('stories-copy.gguf');
    const result = w.write(out);
    expect(result).toEqual({ fileSize: original.length, dataOffset: f.dataOffset });
    expect(fs.readFileSync(out).equals(original)).toBe(true);
  });

  describe('truncated copies of stories260K', () => {
    const original = HAVE_SHARED ? fs.readFileSync(STORIES) : Buffer.alloc(0);
    const header = HAVE_SHARED ? parseBytes(original) : undefined;

    test('200 cut points in the header region are GGUF_TRUNCATED', () => {
      const end = header!.dataOffset;
      const cuts = new Set<number>([0, 1, 2, 3, 4, 5, 8, 12, 16, 20, 23, 24, end - 1]);
      for (let i = 0; cuts.size < 200; i++) cuts.add(Math.floor((i * 7919) % end));
      for (const cut of cuts) {
        const bytes = original.subarray(0, cut);
        const err = expectModelFileError(() => parseBytes(bytes), 'GGUF_TRUNCATED');
        expect(err.message).toMatch(cut === 0 ? /empty/ : /truncated/);
      }
    });

    test('cuts through readGGUF too, with small read chunks', () => {
      for (const cut of [3, 10, 24, 25, 100, 1000, 5000, 9999, header!.dataOffset - 1]) {
        const p = tmpFile(`cut-${cut}.gguf`, original.subarray(0, cut));
        expectModelFileError(() => readGGUF(p, { chunkSize: 64 }), 'GGUF_TRUNCATED', /truncated/);
      }
    });

    test('cuts inside the tensor data are TENSOR_OUT_OF_BOUNDS naming the tensor', () => {
      const f = header!;
      const last = f.tensors.reduce((a, b) => (a.absoluteOffset > b.absoluteOffset ? a : b));
      for (const cut of [f.dataOffset, f.dataOffset + 1, Math.floor(original.length / 2), original.length - 1]) {
        const err = expectModelFileError(() => parseBytes(original.subarray(0, cut)), 'TENSOR_OUT_OF_BOUNDS');
        expect(err.message).toMatch(/tensor "[^"]+"/);
        expect(err.message).toMatch(/extends past the end/);
        expect(err.message).toContain(`${cut}-byte file`);
      }
      expectModelFileError(
        () => parseBytes(original.subarray(0, original.length - 1)),
        'TENSOR_OUT_OF_BOUNDS',
        `tensor "${last.name}"`,
      );
    });

    test('random byte corruption of the header never escapes as another error type', () => {
      const rand = prng(12345);
      const end = header!.dataOffset;
      let parsed = 0;
      for (let i = 0; i < 400; i++) {
        const bytes = Buffer.from(original.subarray(0, end + 4096));
        const flips = 1 + Math.floor(rand() * 3);
        for (let k = 0; k < flips; k++) bytes[Math.floor(rand() * end)] = Math.floor(rand() * 256);
        const err = catchError(() => parseGGUF(bytes, original.length, 'fuzz.gguf'));
        if (err === undefined) parsed++;
        else if (!(err instanceof ModelFileError)) throw new Error(`iteration ${i}: non-ModelFileError ${String(err)}`);
      }
      expect(parsed).toBeLessThan(400);
    });
  });
});

// ---------------------------------------------------------------------------------------------------
// (b) writer round trip

describe('GGUFWriter round trip', () => {
  const u8 = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

  const nested: GGUFMetadataType = {
    type: GGUFValueType.ARRAY,
    arrayType: GGUFValueType.ARRAY,
    elements: [
      { type: GGUFValueType.ARRAY, arrayType: GGUFValueType.UINT8 },
      { type: GGUFValueType.ARRAY, arrayType: GGUFValueType.STRING },
      {
        type: GGUFValueType.ARRAY,
        arrayType: GGUFValueType.ARRAY,
        elements: [
          {
            type: GGUFValueType.ARRAY,
            arrayType: GGUFValueType.ARRAY,
            elements: [{ type: GGUFValueType.ARRAY, arrayType: GGUFValueType.INT64 }],
          },
        ],
      },
      { type: GGUFValueType.ARRAY, arrayType: GGUFValueType.FLOAT32 },
    ],
  };
  const nestedValue: GGUFValue = [[1, 2, 255], ['x', 'ÿ', ''], [[[-1n << 63n, 7]]], []];

  function build(alignment?: number): { w: GGUFWriter; expected: Map<string, [GGUFValue, GGUFMetadataType]> } {
    const w = new GGUFWriter(alignment === undefined ? {} : { alignment });
    const expected = new Map<string, [GGUFValue, GGUFMetadataType]>();
    const t = (type: GGUFValueType, arrayType?: GGUFValueType): GGUFMetadataType =>
      arrayType === undefined ? { type } : { type, arrayType };
    const put = (key: string, value: GGUFValue, meta: GGUFMetadataType) => expected.set(key, [value, meta]);

    if (alignment !== undefined) put('general.alignment', alignment, t(GGUFValueType.UINT32));
    w.setU8('t.u8', 255); put('t.u8', 255, t(GGUFValueType.UINT8));
    w.setI8('t.i8', -128); put('t.i8', -128, t(GGUFValueType.INT8));
    w.setU16('t.u16', 65535); put('t.u16', 65535, t(GGUFValueType.UINT16));
    w.setI16('t.i16', -32768); put('t.i16', -32768, t(GGUFValueType.INT16));
    w.setU32('t.u32', 4294967295); put('t.u32', 4294967295, t(GGUFValueType.UINT32));
    w.setI32('t.i32', -2147483648); put('t.i32', -2147483648, t(GGUFValueType.INT32));
    w.setU64('t.u64.small', 5n); put('t.u64.small', 5, t(GGUFValueType.UINT64)); // safe → number
    w.setU64('t.u64.safe_max', Number.MAX_SAFE_INTEGER); put('t.u64.safe_max', Number.MAX_SAFE_INTEGER, t(GGUFValueType.UINT64));
    w.setU64('t.u64.2^53', 2n ** 53n); put('t.u64.2^53', 2n ** 53n, t(GGUFValueType.UINT64));
    w.setU64('t.u64.max', 2n ** 64n - 1n); put('t.u64.max', 2n ** 64n - 1n, t(GGUFValueType.UINT64));
    w.setI64('t.i64.min', -(2n ** 63n)); put('t.i64.min', -(2n ** 63n), t(GGUFValueType.INT64));
    w.setI64('t.i64.neg', -5); put('t.i64.neg', -5, t(GGUFValueType.INT64));
    w.setI64('t.i64.-2^53', -(2n ** 53n)); put('t.i64.-2^53', -(2n ** 53n), t(GGUFValueType.INT64));
    w.setF32('t.f32', 0.1); put('t.f32', Math.fround(0.1), t(GGUFValueType.FLOAT32));
    w.setF32('t.f32.inf', -Infinity); put('t.f32.inf', -Infinity, t(GGUFValueType.FLOAT32));
    w.setF64('t.f64', Math.PI); put('t.f64', Math.PI, t(GGUFValueType.FLOAT64));
    w.setBool('t.true', true); put('t.true', true, t(GGUFValueType.BOOL));
    w.setBool('t.false', false); put('t.false', false, t(GGUFValueType.BOOL));
    const unicode = 'héllo wörld — 日本語 🦙 \u0000 end';
    w.setString('t.unicode', unicode); put('t.unicode', unicode, t(GGUFValueType.STRING));
    w.setString('t.bom', '\uFEFFbom kept'); put('t.bom', '\uFEFFbom kept', t(GGUFValueType.STRING));
    w.setString('t.empty', ''); put('t.empty', '', t(GGUFValueType.STRING));
    w.setString('ключ.🔑', 'unicode key'); put('ключ.🔑', 'unicode key', t(GGUFValueType.STRING));

    const scalarArrays: Array<[GGUFValueType, GGUFValue[], GGUFValue[]?]> = [
      [GGUFValueType.UINT8, [0, 1, 255]],
      [GGUFValueType.INT8, [-128, 0, 127]],
      [GGUFValueType.UINT16, [0, 65535]],
      [GGUFValueType.INT16, [-32768, 32767]],
      [GGUFValueType.UINT32, [0, 4294967295]],
      [GGUFValueType.INT32, [-2147483648, 2147483647]],
      [GGUFValueType.FLOAT32, [1.5, -0.1, 3e38], [1.5, Math.fround(-0.1), Math.fround(3e38)]],
      [GGUFValueType.BOOL, [true, false, true]],
      [GGUFValueType.STRING, ['a', 'ß', '🦙', '']],
      [GGUFValueType.UINT64, [0, 2n ** 64n - 1n, 2n ** 53n + 1n, 12345n], [0, 2n ** 64n - 1n, 2n ** 53n + 1n, 12345]],
      [GGUFValueType.INT64, [-(2n ** 63n), 2n ** 63n - 1n, -1]],
      [GGUFValueType.FLOAT64, [Math.E, -0, Number.MIN_VALUE]],
    ];
    for (const [type, values, readBack] of scalarArrays) {
      const key = `a.${GGUFValueType[type]}`;
      w.setArray(key, type, values);
      put(key, readBack ?? values, t(GGUFValueType.ARRAY, type));
    }
    w.setArray('a.empty', GGUFValueType.INT32, []); put('a.empty', [], t(GGUFValueType.ARRAY, GGUFValueType.INT32));
    w.setArray('a.uniform_nested', GGUFValueType.ARRAY, [[1, 2], [], [3]], {
      type: GGUFValueType.ARRAY,
      arrayType: GGUFValueType.UINT16,
    });
    put('a.uniform_nested', [[1, 2], [], [3]], {
      type: GGUFValueType.ARRAY,
      arrayType: GGUFValueType.ARRAY,
      elements: [0, 1, 2].map(() => ({ type: GGUFValueType.ARRAY, arrayType: GGUFValueType.UINT16 })),
    });
    w.setMetadata('a.nested', nestedValue, nested);
    put('a.nested', [[1, 2, 255], ['x', 'ÿ', ''], [[[-(2n ** 63n), 7]]], []], nested);
    return { w, expected };
  }

  const tensorSpecs = [
    { name: 'f32', dims: [4, 3], type: GGMLType.F32 },
    { name: 'f16', dims: [8], type: GGMLType.F16 },
    { name: 'q8_0', dims: [64, 2], type: GGMLType.Q8_0 },
    { name: 'q4_k', dims: [256, 2], type: GGMLType.Q4_K },
    { name: 'q6_k', dims: [512], type: GGMLType.Q6_K },
    { name: 'i32.4d', dims: [3, 1, 1, 2], type: GGMLType.I32 },
    { name: 'empty', dims: [0, 4], type: GGMLType.F32 },
    { name: 'bf16.provider', dims: [5, 7], type: GGMLType.BF16 },
    { name: 'q4_0.chunks', dims: [32, 3], type: GGMLType.Q4_0 },
  ];

  test.each([[undefined], [64], [1]])('metadata and tensors read back identically (alignment %p)', (alignment) => {
    const { w, expected } = build(alignment);
    const data = new Map<string, Uint8Array>();
    tensorSpecs.forEach((s, i) => {
      const bytes = u8(tensorBytes(s.type, s.dims), i);
      data.set(s.name, bytes);
      if (s.name.endsWith('.provider')) w.addTensor(s.name, s.dims, s.type, () => bytes);
      else if (s.name.endsWith('.chunks')) {
        w.addTensor(s.name, s.dims, s.type, function* () {
          for (let o = 0; o < bytes.length; o += 10) yield bytes.subarray(o, o + 10);
        });
      } else w.addTensor(s.name, s.dims, s.type, bytes);
    });
    const p = tmpFile(`roundtrip-${alignment}.gguf`);
    const result = w.write(p);
    const f = readGGUF(p, { chunkSize: 5 });
    const align = alignment ?? 32;

    expect(f.version).toBe(3);
    expect(f.alignment).toBe(align);
    expect(result).toEqual({ fileSize: f.fileSize, dataOffset: f.dataOffset });
    expect(f.fileSize % align).toBe(0);
    expect([...f.metadata.keys()]).toEqual([...expected.keys()]);
    for (const [key, [value, type]] of expected) {
      expect([key, f.metadata.get(key)]).toEqual([key, value]);
      expect([key, f.metadataTypes.get(key)]).toEqual([key, type]);
    }
    expect(Object.is(f.metadata.get('t.f32.inf'), -Infinity)).toBe(true);
    expect(Object.is((f.metadata.get('a.FLOAT64') as number[])[1], -0)).toBe(true);

    const file = fs.readFileSync(p);
    expect(f.tensors.map((t) => [t.name, t.dims, t.typeName])).toEqual(
      tensorSpecs.map((s) => [s.name, s.dims, GGMLType[s.type]]),
    );
    for (const t of f.tensors) {
      expect(t.offset % align).toBe(0);
      expect(file.subarray(t.absoluteOffset, t.absoluteOffset + t.byteSize).equals(data.get(t.name)!)).toBe(true);
    }
    expect(f.tensorsByName.get('empty')).toMatchObject({ nElements: 0, byteSize: 0 });

    // A second generation through copyMetadataFrom is byte-identical.
    const w2 = new GGUFWriter().copyMetadataFrom(f);
    for (const t of f.tensors) w2.addTensor(t.name, t.dims, t.type, file.subarray(t.absoluteOffset, t.absoluteOffset + t.byteSize));
    const p2 = tmpFile(`roundtrip-${alignment}-copy.gguf`);
    w2.write(p2);
    expect(fs.readFileSync(p2).equals(file)).toBe(true);
  });

  test('typed getters', () => {
    const { w } = build();
    const p = tmpFile('getters.gguf');
    w.write(p);
    const f = readGGUF(p);
    expect(getU32(f, 't.u8')).toBe(255);
    expect(getU32(f, 't.u64.small')).toBe(5);
    expect(getInteger(f, 't.i32')).toBe(-2147483648);
    expect(getNumber(f, 't.f64')).toBe(Math.PI);
    expect(getBool(f, 't.true')).toBe(true);
    expect(getString(f, 'missing')).toBeUndefined();
    expectModelFileError(() => getString(f, 'missing', { required: true }), 'MISSING_METADATA', /"missing"/);
    expectModelFileError(() => getString(f, 't.u32'), 'GGUF_CORRUPT', /"t\.u32" should be a STRING, but it is UINT32/);
    expectModelFileError(() => getU32(f, 't.i32'), 'GGUF_CORRUPT', /0\.\.4294967295/);
    expectModelFileError(() => getNumber(f, 't.u64.max'), 'GGUF_CORRUPT', /UINT64 18446744073709551615/);
    expectModelFileError(() => getStringArray(f, 'a.UINT8'), 'GGUF_CORRUPT', /ARRAY of STRING.*ARRAY of UINT8/);
    expectModelFileError(() => getNumberArray(f, 'a.UINT64'), 'GGUF_CORRUPT', /ARRAY of numbers/);
    expect(getNumberArray(f, 'a.INT16')).toEqual([-32768, 32767]);
    expectModelFileError(
      () => getArray(f, 'a.STRING', { elementType: GGUFValueType.INT32, required: true }),
      'GGUF_CORRUPT',
      /ARRAY of INT32/,
    );
  });

  test('a 150k-entry vocabulary header parses well under a second', () => {
    const n = 150_000;
    const w = new GGUFWriter();
    const tokens: string[] = [];
    const merges: string[] = [];
    const scores: number[] = [];
    const types: number[] = [];
    for (let i = 0; i < n; i++) {
      tokens.push(i % 5 === 0 ? `▁日本${i}` : `tok${i.toString(36)}`);
      merges.push(`m${i} n${i}`);
      scores.push(-i);
      types.push(1);
    }
    w.setString('general.architecture', 'llama');
    w.setArray('tokenizer.ggml.tokens', GGUFValueType.STRING, tokens);
    w.setArray('tokenizer.ggml.merges', GGUFValueType.STRING, merges);
    w.setArray('tokenizer.ggml.scores', GGUFValueType.FLOAT32, scores);
    w.setArray('tokenizer.ggml.token_type', GGUFValueType.INT32, types);
    w.addTensor('x', [32], GGMLType.Q8_0, new Uint8Array(34));
    const p = tmpFile('vocab150k.gguf');
    w.write(p);
    let best = Infinity;
    let f: GGUFFile | undefined;
    for (let i = 0; i < 3; i++) {
      const t0 = process.hrtime.bigint();
      f = readGGUF(p);
      best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e6);
    }
    console.log(`gguf.test: 150k-token vocabulary + 150k merges header (${(f!.dataOffset / 1e6).toFixed(1)} MB) parsed in ${best.toFixed(0)} ms`);
    expect(best).toBeLessThan(1000);
    expect(getStringArray(f!, 'tokenizer.ggml.tokens')![149_995]).toBe('▁日本149995');
  });

  test('a multi-GB (sparse) file is parsed without reading its data', () => {
    const big = 3 * 2 ** 30;
    const header = new RawGGUF().header(1, 0).tensorInfo('huge', [big / 4], GGMLType.F32, 0).padTo(32).build();
    const p = tmpFile('sparse.gguf', header);
    fs.truncateSync(p, header.length + big);
    const readSync = jest.spyOn(nodeFs, 'readSync');
    try {
      const f = readGGUF(p);
      expect(f.tensors[0]).toMatchObject({ byteSize: big, absoluteOffset: header.length });
      const requested = readSync.mock.calls.reduce((sum, call) => sum + Number((call as unknown[])[3] ?? 0), 0);
      expect(requested).toBeLessThanOrEqual(2 ** 20); // one default-size chunk
    } finally {
      readSync.mockRestore();
      fs.rmSync(p);
    }
  });

  describe('misuse is refused and leaves no file behind', () => {
    test('wrong tensor data length (buffer, provider, chunks)', () => {
      expect(() => new GGUFWriter().addTensor('t', [4], GGMLType.F32, new Uint8Array(15))).toThrow(
        /tensor "t": data is 15 bytes, the shape and type need exactly 16/,
      );
      for (const data of [() => new Uint8Array(17), () => [new Uint8Array(8), new Uint8Array(4)]]) {
        const p = tmpFile('misuse.gguf');
        const w = new GGUFWriter().addTensor('ok', [8], GGMLType.F32, new Uint8Array(32));
        w.addTensor('t', [4], GGMLType.F32, data);
        expect(() => w.write(p)).toThrow(/tensor "t": data is (17|12) bytes/);
        expect(fs.existsSync(p)).toBe(false);
        expect(fs.readdirSync(tmpDir).filter((n) => n.includes('.tmp-'))).toEqual([]);
      }
    });

    test('invalid values, shapes and names', () => {
      const w = new GGUFWriter();
      expect(() => w.setU8('k', 256)).toThrow(/out of range for UINT8/);
      expect(() => w.setI32('k', 1.5)).toThrow(/must be an integer/);
      expect(() => w.setU32('k', 5n as unknown as number)).toThrow(/must be an integer/);
      expect(() => w.setU64('k', -1n)).toThrow(/out of range for UINT64/);
      expect(() => w.setI64('k', 2n ** 63n)).toThrow(/out of range for INT64/);
      expect(() => w.setString('k', 'bad \uD800 surrogate')).toThrow(/lone surrogate/);
      expect(() => w.setBool('k', 1 as unknown as boolean)).toThrow(/BOOL value must be a boolean/);
      expect(() => w.setArray('k', GGUFValueType.UINT8, [1, 'x'])).toThrow(/must be an integer/);
      expect(() => w.setArray('k', GGUFValueType.ARRAY, [[1]])).toThrow(/innerType/);
      expect(() => w.setMetadata('k', 1, 42 as GGUFValueType)).toThrow(/unknown value type 42/);
      expect(() => w.setU32('general.alignment', 48)).toThrow(/power of two/);
      expect(() => w.setU64('general.alignment', 64)).toThrow(/must be a UINT32/);
      expect(() => w.addTensor('q', [33], GGMLType.Q4_0, new Uint8Array(0))).toThrow(/block size 32/);
      expect(() => w.addTensor('q', [1, 1, 1, 1, 1], GGMLType.F32, new Uint8Array(4))).toThrow(/5 dims/);
      expect(() => w.addTensor('q', [4], 99, new Uint8Array(4))).toThrow(/unknown ggml type id 99/);
      expect(() => w.addTensor('x'.repeat(64), [1], GGMLType.F32, new Uint8Array(4))).toThrow(/at most 63/);
      w.addTensor('dup', [1], GGMLType.F32, new Uint8Array(4));
      expect(() => w.addTensor('dup', [1], GGMLType.F32, new Uint8Array(4))).toThrow(/already added/);
      expect(w.tensorCount).toBe(1);
      expect(w.hasMetadata('k')).toBe(false);
    });
  });
});

// ---------------------------------------------------------------------------------------------------
// (c) malformed input

describe('malformed GGUF input', () => {
  test('the baseline hand-made file is valid', () => {
    const f = parseBytes(rawFile());
    expect(f.tensors[0]).toMatchObject({ name: 'a', dims: [8], byteSize: 32, offset: 0 });
    expect(f.metadata.get('general.architecture')).toBe('llama');
  });

  describe('file access', () => {
    test('non-existent path', () => {
      const p = path.join(tmpDir, 'does-not-exist.gguf');
      const err = expectModelFileError(() => readGGUF(p), 'FILE_NOT_FOUND', /no such file/);
      expect(err.path).toBe(p);
      expect(err.message).toContain(p);
      expectModelFileError(() => readGGUF(path.join(tmpFile('plain', rawFile()), 'x.gguf')), 'FILE_NOT_FOUND');
    });
    test('directory', () => {
      expectModelFileError(() => readGGUF(tmpDir), 'FILE_READ', /is a directory/);
    });
    test('empty file', () => {
      expectBadBytes(Buffer.alloc(0), 'GGUF_TRUNCATED', /empty/);
    });
    test('invalid read options', () => {
      expect(() => readGGUF(tmpFile('opt.gguf', rawFile()), { chunkSize: 0 })).toThrow(/chunkSize/);
    });
  });

  describe('magic and version', () => {
    test('wrong magic, with the bytes found', () => {
      const bytes = rawFile();
      bytes.write('GGUX', 0, 'latin1');
      expectBadBytes(bytes, 'GGUF_BAD_MAGIC', /47 47 55 58/, /expected 47 47 55 46/);
      expectBadBytes(Buffer.from('{"__metadata__":{}}'), 'GGUF_BAD_MAGIC', /not a GGUF file/);
      expectBadBytes(Buffer.from('x'), 'GGUF_BAD_MAGIC');
      expectBadBytes(Buffer.from('tjgg\x03\x00\x00\x00', 'latin1'), 'GGUF_BAD_MAGIC', /legacy GGML/);
    });
    test('a prefix of the magic is truncation', () => {
      expectBadBytes(Buffer.from('GGU'), 'GGUF_TRUNCATED', /only 3 bytes/);
    });
    test('version 1, 0, 99 and big-endian', () => {
      expectBadBytes(rawFile({ version: 1 }), 'GGUF_UNSUPPORTED_VERSION', /version 1 \(32-bit counts\)/);
      expectBadBytes(rawFile({ version: 99 }), 'GGUF_UNSUPPORTED_VERSION', /version 99 is not supported/);
      expectBadBytes(rawFile({ version: 0 }), 'GGUF_UNSUPPORTED_VERSION', /version 0/);
      expectBadBytes(rawFile({ version: 0x03000000 }), 'GGUF_UNSUPPORTED_VERSION', /big-endian/);
    });
    test('version 2 is read like version 3', () => {
      expect(parseBytes(rawFile({ version: 2 })).version).toBe(2);
    });
  });

  describe('counts and lengths', () => {
    test('tensor count 2^40 runs past the end; 2^63 is impossible', () => {
      expectBadBytes(rawFile({ tensorCount: 2n ** 40n }), 'GGUF_TRUNCATED', /tensor count 1099511627776/, /needs at least/);
      expectBadBytes(rawFile({ tensorCount: 2n ** 63n }), 'GGUF_CORRUPT', /tensor count 9223372036854775808 .* impossibly large/);
      expectBadBytes(rawFile({ tensorCount: 2n ** 64n - 1n }), 'GGUF_CORRUPT', /impossibly large/);
    });
    test('kv count 2^40 / 2^63', () => {
      expectBadBytes(rawFile({ kvCount: 2n ** 40n }), 'GGUF_TRUNCATED', /metadata entry count 1099511627776/);
      expectBadBytes(rawFile({ kvCount: 2n ** 63n }), 'GGUF_CORRUPT', /metadata entry count .* impossibly large/);
    });
    test('counts that each fit but not together', () => {
      const bytes = rawFile();
      const n = Math.floor(bytes.length / 24) - 1;
      expectBadBytes(rawFile({ tensorCount: n, kvCount: n }), 'GGUF_TRUNCATED', /metadata entries and .* tensor infos need/);
    });
    test('an extra count past the real entries is truncation at the exact offset', () => {
      const bytes = rawFile({ kvCount: 2, dataBytes: 0, tensors: [], alignment: 1 });
      expectBadBytes(bytes, 'GGUF_TRUNCATED', `metadata entry 1 of 2: needed 8 bytes at offset ${bytes.length} for the key length`);
    });
    test('key length, string length and tensor name length 2^40 / 2^63', () => {
      for (const [len, code, pattern] of [
        [2n ** 40n, 'GGUF_TRUNCATED', /key length 1099511627776 .* needs at least/],
        [2n ** 63n, 'GGUF_CORRUPT', /key length 9223372036854775808 .* impossibly large/],
      ] as const) {
        const keyBytes = rawFile({ kvs: oneKv((b) => b.str('general.name', len).u32(GGUFValueType.STRING).str('x')) });
        expectBadBytes(keyBytes, code, /metadata entry 0 of 1/, pattern);
        const value = rawFile({ kvs: oneKv((b) => b.str('general.name').u32(GGUFValueType.STRING).str('x', len)) });
        expectBadBytes(value, code, /metadata key "general.name"/, /string length/);
        const tname = rawFile({ kvs: { count: 0, write: () => undefined } });
        tname.writeBigUInt64LE(len, 24); // the first tensor info's name length follows the 24-byte header
        expectBadBytes(tname, code, /tensor info 0 of 1/, /name length/);
      }
    });
    test('array length 2^40 / 2^63 / over maxArrayLength', () => {
      const arr = (count: number | bigint, elemType = GGUFValueType.UINT32) =>
        rawFile({ kvs: oneKv((b) => b.str('tokenizer.ggml.scores').u32(GGUFValueType.ARRAY).u32(elemType).u64(count)) });
      expectBadBytes(arr(2n ** 40n), 'GGUF_TRUNCATED', /"tokenizer.ggml.scores"/, /array length \(UINT32 elements\) 1099511627776/);
      expectBadBytes(arr(2n ** 63n), 'GGUF_CORRUPT', /"tokenizer.ggml.scores"/, /impossibly large/);
      expectBadBytes(arr(2n ** 40n, GGUFValueType.STRING), 'GGUF_TRUNCATED', /STRING elements/);
      // 50 one-byte elements fit in the file (they are the following bytes) but exceed a limit of 10.
      const bytes = arr(50, GGUFValueType.UINT8);
      expectModelFileError(
        () => parseGGUF(bytes, bytes.length, 'x.gguf', { maxArrayLength: 10 }),
        'GGUF_CORRUPT',
        /50 elements is above the 10-element limit \(maxArrayLength\)/,
      );
    });
    test('string over maxStringLength', () => {
      const bytes = rawFile({ kvs: oneKv((b) => b.kvString('general.name', 'x'.repeat(100))) });
      expectModelFileError(
        () => parseGGUF(bytes, bytes.length, 'x.gguf', { maxStringLength: 50 }),
        'GGUF_CORRUPT',
        /"general.name".*100 bytes long, above the 50-byte limit/,
      );
      expect(parseBytes(bytes).metadata.get('general.name')).toBe('x'.repeat(100));
    });
  });

  describe('tensor infos', () => {
    const tensor = (t: Partial<RawTensor>, extra: RawFileSpec = {}) =>
      rawFile({ tensors: [{ name: 'blk.0.w', dims: [8], type: GGMLType.F32, offset: 0, ...t }], ...extra });

    test('n_dims 5', () => {
      expectBadBytes(tensor({ dims: [1, 1, 1, 1, 8] }), 'GGUF_CORRUPT', /tensor "blk.0.w": has 5 dimensions/);
    });
    test('zero dims is a scalar; a zero dim is an empty tensor (allowed, as in ggml)', () => {
      expect(parseBytes(tensor({ dims: [] })).tensors[0]).toMatchObject({ dims: [], nElements: 1, byteSize: 4 });
      const f = parseBytes(tensor({ dims: [0, 8] }));
      expect(f.tensors[0]).toMatchObject({ dims: [0, 8], nElements: 0, byteSize: 0 });
    });
    test('a dim of 2^63 or more is negative to ggml', () => {
      expectBadBytes(tensor({ dims: [8, 2n ** 63n] }), 'GGUF_CORRUPT', /"blk.0.w"/, /dimension 1 is 9223372036854775808/);
      expectBadBytes(tensor({ dims: [2n ** 64n - 1n] }), 'GGUF_CORRUPT', /dimension 0/);
    });
    test('dims whose product overflows 64 bits, or exceeds 2^53 bytes', () => {
      expectBadBytes(tensor({ dims: [2n ** 32n, 2n ** 32n] }), 'GGUF_CORRUPT', /"blk.0.w"/, /overflows 64 bits/);
      expectBadBytes(tensor({ dims: [2n ** 62n, 2n, 2n, 2n] }), 'GGUF_CORRUPT', /overflows 64 bits/);
      expectBadBytes(tensor({ dims: [2n ** 40n, 2n ** 20n] }), 'GGUF_CORRUPT', /exceeds 2\^53 bytes/);
      expectBadBytes(tensor({ dims: [0, 2n ** 60n] }), 'GGUF_CORRUPT', /dimension 1 is 1152921504606846976, above 2\^53/);
    });
    test('row length not a whole number of blocks', () => {
      expectBadBytes(tensor({ dims: [33], type: GGMLType.Q4_0 }), 'GGUF_CORRUPT', /row length 33 is not a multiple of the Q4_0 block size 32/);
    });
    test('unknown and retired tensor types', () => {
      expectBadBytes(tensor({ type: 99 }), 'UNSUPPORTED_TENSOR_TYPE', /tensor "blk.0.w"/, /type id 99/);
      expectBadBytes(tensor({ type: 4 }), 'UNSUPPORTED_TENSOR_TYPE', /Q4_2 \(retired id 4\)/);
      expectBadBytes(tensor({ type: 0xffffffff }), 'UNSUPPORTED_TENSOR_TYPE', /4294967295/);
    });
    test('offset past the end of the file', () => {
      expectBadBytes(tensor({ offset: 64 }), 'TENSOR_OUT_OF_BOUNDS', /tensor "blk.0.w"/, /extends past the end/);
      expectBadBytes(tensor({ offset: 2n ** 63n }), 'TENSOR_OUT_OF_BOUNDS', /"blk.0.w"/, /9223372036854775808/);
      expectBadBytes(tensor({ offset: 2n ** 64n - 32n }), 'TENSOR_OUT_OF_BOUNDS', /"blk.0.w"/);
      expectBadBytes(tensor({ dims: [9] }), 'TENSOR_OUT_OF_BOUNDS', /36 bytes/); // one element too many
    });
    test('misaligned offset', () => {
      expectBadBytes(tensor({ offset: 4 }, { dataBytes: 64 }), 'GGUF_CORRUPT', /"blk.0.w"/, /offset 4 is not a multiple of the alignment 32/);
    });
    test('overlapping tensors', () => {
      const bytes = rawFile({
        tensors: [
          { name: 'first', dims: [16], type: GGMLType.F32, offset: 0 },
          { name: 'second', dims: [8], type: GGMLType.F32, offset: 32 },
          { name: 'third', dims: [8], type: GGMLType.F32, offset: 32 },
        ],
        dataBytes: 96,
      });
      expectBadBytes(bytes, 'GGUF_CORRUPT', /overlaps/, /"first"|"second"|"third"/);
      const ok = rawFile({
        tensors: [
          { name: 'b', dims: [8], type: GGMLType.F32, offset: 32 },
          { name: 'a', dims: [8], type: GGMLType.F32, offset: 0 },
          { name: 'empty', dims: [0], type: GGMLType.F32, offset: 0 },
        ],
        dataBytes: 64,
      });
      expect(parseBytes(ok).tensors.map((t) => t.name)).toEqual(['b', 'a', 'empty']);
    });
    test('duplicate tensor name', () => {
      const bytes = rawFile({
        tensors: [
          { name: 'w', dims: [8], type: GGMLType.F32, offset: 0 },
          { name: 'w', dims: [8], type: GGMLType.F32, offset: 32 },
        ],
        dataBytes: 64,
      });
      expectBadBytes(bytes, 'GGUF_CORRUPT', /duplicate tensor name "w"/);
    });
    test('invalid UTF-8 tensor name', () => {
      expectBadBytes(tensor({ name: Buffer.from([0x77, 0xff]) }), 'GGUF_CORRUPT', /tensor name at offset \d+ is not valid UTF-8/);
    });
    test('data section start past the end of the file', () => {
      const bytes = rawFile({ dataBytes: 0 });
      const cut = bytes.subarray(0, bytes.length - 3);
      expectBadBytes(cut, 'GGUF_TRUNCATED', /data section starts at offset \d+/);
    });
  });

  describe('metadata', () => {
    const kv = (write: (b: RawGGUF) => void, count = 1) => rawFile({ kvs: { count, write } });

    test('unknown metadata value type, at the top and inside an array', () => {
      expectBadBytes(kv((b) => b.str('general.x').u32(13).u32(0)), 'GGUF_CORRUPT', /"general.x"/, /unknown metadata value type 13/);
      expectBadBytes(
        kv((b) => b.str('general.y').u32(GGUFValueType.ARRAY).u32(77).u64(1)),
        'GGUF_CORRUPT',
        /"general.y"/,
        /unknown array element type 77/,
      );
    });
    test('invalid UTF-8: key, string value, array element', () => {
      expectBadBytes(kv((b) => b.str(Buffer.from([0x67, 0xc3])).u32(GGUFValueType.UINT8).u8(1)), 'GGUF_CORRUPT', /key at offset 24 is not valid UTF-8/);
      expectBadBytes(kv((b) => b.kvString('general.name', Buffer.from([0xc0, 0x80]))), 'GGUF_CORRUPT', /"general.name"/, /not valid UTF-8/);
      expectBadBytes(kv((b) => b.kvString('general.name', Buffer.from([0xed, 0xa0, 0x80]))), 'GGUF_CORRUPT', /not valid UTF-8/);
      expectBadBytes(
        kv((b) => b.str('tokenizer.ggml.tokens').u32(GGUFValueType.ARRAY).u32(GGUFValueType.STRING).u64(3).str('a').str('b').str(Buffer.from([0xfe]))),
        'GGUF_CORRUPT',
        /"tokenizer.ggml.tokens", element 2/,
        /not valid UTF-8/,
      );
    });
    test('duplicate key', () => {
      expectBadBytes(
        kv((b) => b.kvU32('llama.block_count', 2).kvU32('llama.block_count', 3), 2),
        'GGUF_CORRUPT',
        /duplicate metadata key "llama.block_count"/,
      );
    });
    test('general.alignment 0, 3, 2^40 (UINT64), a string; 64 and 1 are fine', () => {
      const align = (write: (b: RawGGUF) => void) => kv((b) => write(b.str('general.alignment')));
      expectBadBytes(align((b) => b.u32(GGUFValueType.UINT32).u32(0)), 'GGUF_CORRUPT', /"general.alignment"/, /0 is not a power of two/);
      expectBadBytes(align((b) => b.u32(GGUFValueType.UINT32).u32(3)), 'GGUF_CORRUPT', /3 is not a power of two/);
      expectBadBytes(align((b) => b.u32(GGUFValueType.UINT64).u64(2n ** 40n)), 'GGUF_CORRUPT', /must be a UINT32, found UINT64/);
      expectBadBytes(align((b) => b.u32(GGUFValueType.STRING).str('32')), 'GGUF_CORRUPT', /must be a UINT32, found STRING/);
      const a64 = rawFile({ kvs: oneKv((b) => b.kvU32('general.alignment', 64)), alignment: 64 });
      expect(parseBytes(a64)).toMatchObject({ alignment: 64 });
      expect(parseBytes(a64).dataOffset % 64).toBe(0);
      const a1 = rawFile({ kvs: oneKv((b) => b.kvU32('general.alignment', 1)), alignment: 1 });
      expect(parseBytes(a1).alignment).toBe(1);
    });
    test('general.alignment 2^31 puts the data section past the end', () => {
      expectBadBytes(rawFile({ kvs: oneKv((b) => b.kvU32('general.alignment', 2 ** 31)) }), 'GGUF_TRUNCATED', /data section starts at offset 2147483648/);
    });
    test('array nesting depth 100 is refused; depth 4 is fine', () => {
      const nest = (depth: number) =>
        kv((b) => {
          b.str('general.deep').u32(GGUFValueType.ARRAY);
          for (let i = 1; i < depth; i++) b.u32(GGUFValueType.ARRAY).u64(1);
          b.u32(GGUFValueType.UINT8).u64(1).u8(42);
        });
      expectBadBytes(nest(100), 'GGUF_CORRUPT', /"general.deep"/, /nested deeper than 4 levels/);
      expectBadBytes(nest(5), 'GGUF_CORRUPT', /nested deeper than 4/);
      expect(parseBytes(nest(4)).metadata.get('general.deep')).toEqual([[[[42]]]]);
    });
    test('BOOL: any non-zero byte is true', () => {
      const f = parseBytes(kv((b) => b.str('b').u32(GGUFValueType.BOOL).u8(7)));
      expect(f.metadata.get('b')).toBe(true);
    });
    test('truncation inside a value names the key and the element', () => {
      const bytes = kv((b) =>
        b.str('tokenizer.ggml.tokens').u32(GGUFValueType.ARRAY).u32(GGUFValueType.STRING).u64(3)
          .str('abcdefghijkl').str('mnopqrstuvwx').str('yz'),
      );
      const at = bytes.indexOf(Buffer.from('abcdefghijkl')) + 12 + 8 + 5; // 5 bytes into element 1's text
      expectModelFileError(
        () => parseBytes(bytes.subarray(0, at)),
        'GGUF_TRUNCATED',
        /"tokenizer.ggml.tokens", element 1: string length 12 at offset \d+ needs at least 12 more bytes/,
      );
      const atCount = bytes.indexOf(Buffer.from('abcdefghijkl')) - 8 - 3; // inside the array count
      expectModelFileError(
        () => parseBytes(bytes.subarray(0, atCount)),
        'GGUF_TRUNCATED',
        /"tokenizer.ggml.tokens": needed 8 bytes at offset \d+ for the array length/,
      );
    });
  });
});
