/**
 * Property-based fuzzing of the GGUF parser (fast-check, fixed seeds and run counts): mutated copies of valid
 * files — the bundled model, and the reference models when ../shared is present — either parse to a
 * structure that keeps every promise of lib/gguf/reader.ts, or throw a ModelFileError with a parser code;
 * each parse is bounded in time and heap. parseGGUF (memory) and readGGUF (file, small read chunks) must
 * agree on every input. Mutations: test/fuzz/gguf_mutate.ts.
 */
import * as fs from 'fs';
import * as path from 'path';
import fc from 'fast-check';
import { ModelFileError } from '../../lib/errors';
import { GGUFFile, parseGGUF, readGGUF } from '../../lib/gguf';
import {
  applyMutation,
  checkParsedFile,
  decodeRaw,
  describeMutation,
  encodeRaw,
  expectTypedError,
  INTERESTING_U64,
  INVALID_UTF8,
  mutation,
  Mutation,
  PARSER_CODES,
  RawGGUF,
} from '../fuzz/gguf_mutate';
import { BUNDLED_MODEL, sharedDir, skipForMissingShared, tmpDir } from '../helpers';
import { fuzzRuns } from '../fuzz/config';

/** Per-parse limits: far above what any input takes (a few ms), far below a hang or a runaway allocation. */
const MAX_PARSE_MS = 1500;
const MAX_HEAP_GROWTH = 256 * 1024 * 1024;

const shared = sharedDir();
if (!shared) skipForMissingShared('../shared (its reference models are mutated too)');
const referenceModels = shared
  ? [
      ...fs
        .readdirSync(path.join(shared, 'reference', 'models'))
        .filter((f) => f.endsWith('.gguf'))
        .map((f) => path.join(shared, 'reference', 'models', f)),
      path.join(shared, 'models', 'stories260K.gguf'),
    ].filter((f) => fs.existsSync(f))
  : [];

interface Stats {
  runs: number;
  parsed: number;
  codes: Record<string, number>;
  maxMs: number;
  maxHeapMB: number;
}

function parseOnce(bytes: Buffer, m: Mutation, stats: Stats): GGUFFile | ModelFileError {
  const heap0 = process.memoryUsage().heapUsed;
  const t0 = performance.now();
  let out: GGUFFile | ModelFileError;
  try {
    out = parseGGUF(bytes, bytes.length, 'fuzz.gguf');
  } catch (err) {
    expectTypedError(err, PARSER_CODES, describeMutation(m));
    if (!(err instanceof ModelFileError) || err.path !== 'fuzz.gguf') throw new Error(`not a ModelFileError naming the file: ${String(err)}`);
    out = err;
  }
  const ms = performance.now() - t0;
  const heap = process.memoryUsage().heapUsed - heap0;
  stats.runs++;
  stats.maxMs = Math.max(stats.maxMs, ms);
  stats.maxHeapMB = Math.max(stats.maxHeapMB, heap / 2 ** 20);
  if (ms > MAX_PARSE_MS) throw new Error(`parse took ${ms.toFixed(0)} ms: ${describeMutation(m)}`);
  if (heap > MAX_HEAP_GROWTH) throw new Error(`parse grew the heap by ${(heap / 2 ** 20).toFixed(0)} MB: ${describeMutation(m)}`);
  if (out instanceof ModelFileError) stats.codes[out.code] = (stats.codes[out.code] ?? 0) + 1;
  else {
    checkParsedFile(out, bytes.length);
    stats.parsed++;
  }
  return out;
}

function report(name: string, s: Stats): void {
  // The figures the issue asks for; jest prints them with the test output.
  console.log(
    `${name}: ${s.runs} inputs, ${s.parsed} parsed, errors ${JSON.stringify(s.codes)}, ` +
      `slowest ${s.maxMs.toFixed(1)} ms, largest heap growth ${s.maxHeapMB.toFixed(1)} MB, crashes 0`,
  );
}

const newStats = (): Stats => ({ runs: 0, parsed: 0, codes: {}, maxMs: 0, maxHeapMB: 0 });

describe('GGUF parser under mutation', () => {
  const cases: { name: string; file: string; numRuns: number; seed: number }[] = [
    { name: 'bundled model', file: BUNDLED_MODEL, numRuns: 3000, seed: 0x9a11 },
    ...referenceModels.map((f, i) => ({ name: path.basename(f), file: f, numRuns: 300, seed: 0x5eed + i })),
  ];

  test.each(cases)('$name: a valid structure or a typed parser error, bounded ($numRuns runs)', ({ name, file, numRuns, seed }) => {
    const base = fs.readFileSync(file);
    const stats = newStats();
    fc.assert(
      fc.property(mutation(), (m) => {
        parseOnce(applyMutation(base, m), m, stats);
      }),
      fuzzRuns(seed, numRuns),
    );
    report(name, stats);
    expect(stats.runs).toBeGreaterThanOrEqual(fuzzRuns(seed, numRuns).numRuns);
    // The mutations reach deep into the parser: several error kinds, and valid files too.
    expect(Object.keys(stats.codes).length).toBeGreaterThanOrEqual(4);
  });

  test('parseGGUF and readGGUF (any read chunk size) agree on every mutated file', () => {
    const base = fs.readFileSync(BUNDLED_MODEL);
    const dir = tmpDir('adainfer-fuzz-gguf-');
    const file = path.join(dir, 'm.gguf');
    const stats = newStats();
    try {
      fc.assert(
        fc.property(mutation(), fc.integer({ min: 1, max: 70000 }), (m, chunkSize) => {
          const bytes = applyMutation(base, m);
          const a = parseOnce(bytes, m, stats);
          fs.writeFileSync(file, bytes);
          let b: GGUFFile | ModelFileError;
          try {
            b = readGGUF(file, { chunkSize });
          } catch (err) {
            expectTypedError(err, PARSER_CODES, describeMutation(m));
            b = err as ModelFileError;
          }
          if (a instanceof ModelFileError || b instanceof ModelFileError) {
            expect(b instanceof ModelFileError && a instanceof ModelFileError ? b.code : b).toBe(a instanceof ModelFileError ? a.code : a);
          } else {
            expect(b.dataOffset).toBe(a.dataOffset);
            expect(b.tensors).toEqual(a.tensors);
            expect([...b.metadata.keys()]).toEqual([...a.metadata.keys()]);
          }
        }),
        fuzzRuns(0xc4a7, 300),
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    report('readGGUF vs parseGGUF', stats);
  });
});

/** Targeted properties: each defect the issue names, alone, gives the code and message that name it. */
describe('GGUF parser: each defect alone', () => {
  const base = fs.readFileSync(BUNDLED_MODEL);
  const { raw } = decodeRaw(base);
  const parsedBase = parseGGUF(base, base.length, 'base.gguf');
  const clone = (): RawGGUF => ({ ...raw, kvs: raw.kvs.map((k) => ({ ...k })), tensors: raw.tensors.map((t) => ({ ...t, dims: [...t.dims] })) });
  const parse = (bytes: Buffer) => () => parseGGUF(bytes, bytes.length, 'fuzz.gguf');
  const tensorIndex = fc.nat({ max: raw.tensors.length - 1 });

  test('dims whose element count overflows 64 bits, or goes past 2^53 bytes', () => {
    const big = fc.constantFrom(...INTERESTING_U64.filter((v) => v >= 2n ** 31n));
    fc.assert(
      fc.property(tensorIndex, fc.array(big, { minLength: 2, maxLength: 4 }), (i, dims) => {
        const r = clone();
        r.tensors[i].dims = dims;
        expect(parse(encodeRaw(r))).toThrow(expect.objectContaining({ code: 'GGUF_CORRUPT', message: expect.stringMatching(/overflows 64 bits|outside 0\.\.2\^63-1|2\^53/) }));
      }),
      fuzzRuns(1, 100),
    );
  });

  test('tensor data overlapping another tensor, or out of range', () => {
    fc.assert(
      fc.property(tensorIndex, tensorIndex, fc.constantFrom(...INTERESTING_U64), (i, j, far) => {
        fc.pre(raw.tensors[i].offset !== raw.tensors[j].offset);
        const r = clone();
        r.tensors[i].offset = r.tensors[j].offset;
        // Onto another tensor's data: an overlap, unless the moved tensor then also runs past the end.
        const fits = parsedBase.tensors[j].absoluteOffset + parsedBase.tensors[i].byteSize <= base.length;
        expect(parse(encodeRaw(r))).toThrow(
          fits
            ? expect.objectContaining({ code: 'GGUF_CORRUPT', message: expect.stringMatching(/overlaps/) })
            : expect.objectContaining({ code: 'TENSOR_OUT_OF_BOUNDS' }),
        );
        const r2 = clone();
        r2.tensors[i].offset = BigInt(base.length) + far;
        expect(parse(encodeRaw(r2))).toThrow(expect.objectContaining({ code: 'TENSOR_OUT_OF_BOUNDS', message: expect.stringContaining(`"${new TextDecoder().decode(raw.tensors[i].name)}"`) }));
      }),
      fuzzRuns(2, 100),
    );
  });

  test('a string, key or tensor name that is not UTF-8', () => {
    fc.assert(
      fc.property(fc.constantFrom('key', 'name', 'string'), fc.nat(), fc.nat({ max: INVALID_UTF8.length - 1 }), (target, index, bad) => {
        const bytes = applyMutation(base, { structural: [{ kind: 'invalidUtf8', target: target as 'key', index, bytes: bad, at: index }], bytes: [] });
        expect(parse(bytes)).toThrow(expect.objectContaining({ code: 'GGUF_CORRUPT', message: expect.stringMatching(/UTF-8/) }));
      }),
      fuzzRuns(3, 60),
    );
  });

  test('arrays nested deeper than 4 levels are refused; 4 levels parse', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 2 }), (depth, count) => {
        fc.pre(count ** depth <= 1 << 16);
        const bytes = applyMutation(base, { structural: [{ kind: 'deepArray', depth, count }], bytes: [] });
        if (depth <= 4) expect(parse(bytes)().metadata.get('fuzz.deep')).toBeDefined();
        else expect(parse(bytes)).toThrow(expect.objectContaining({ code: 'GGUF_CORRUPT', message: expect.stringMatching(/nested deeper/) }));
      }),
      fuzzRuns(4, 60),
    );
  });

  test('inflated counts and lengths: truncation or corruption, never an allocation of the claimed size', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.record({ kind: fc.constant('inflateCount' as const), which: fc.constantFrom('tensor' as const, 'kv' as const), value: fc.bigInt({ min: 200n, max: 2n ** 64n - 1n }) }),
          fc.record({ kind: fc.constant('hugeArray' as const), elemType: fc.constantFrom(0, 4, 8, 9, 10), count: fc.bigInt({ min: 2n ** 22n, max: 2n ** 64n - 1n }) }),
          fc.record({ kind: fc.constant('longString' as const), length: fc.bigInt({ min: 2n ** 22n, max: 2n ** 64n - 1n }) }),
        ),
        (s) => {
          const heap0 = process.memoryUsage().heapUsed;
          expect(parse(applyMutation(base, { structural: [s], bytes: [] }))).toThrow(
            expect.objectContaining({ code: expect.stringMatching(/^(GGUF_TRUNCATED|GGUF_CORRUPT)$/) }),
          );
          expect(process.memoryUsage().heapUsed - heap0).toBeLessThan(64 * 2 ** 20);
        },
      ),
      fuzzRuns(5, 100),
    );
  });

  test('truncation anywhere: GGUF_TRUNCATED in the header, TENSOR_OUT_OF_BOUNDS in the data, BAD_MAGIC never', () => {
    const { dataOffset } = decodeRaw(base);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: base.length - 1 }), (at) => {
        const code = at < dataOffset ? 'GGUF_TRUNCATED' : 'TENSOR_OUT_OF_BOUNDS';
        expect(parse(base.subarray(0, at))).toThrow(expect.objectContaining({ code }));
      }),
      fuzzRuns(6, 200),
    );
  });
});
