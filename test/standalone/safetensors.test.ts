/**
 * The safetensors reader: the fixtures' files, and one defect at a time in synthetic files (header length,
 * JSON, dtype, shape, offsets, overlaps), plus sharded checkpoints (index, missing shard, misplaced tensor).
 */
import * as fs from 'fs';
import * as path from 'path';
import { AdaInferError, ModelFileError } from '../../lib/errors';
import { GGMLType } from '../../lib/gguf/types';
import { ggmlTypeOfDType, parseSafetensorsHeader, readCheckpoint, readSafetensors, supportedDType } from '../../lib/safetensors/reader';
import { tmpDir } from '../helpers';
import { LLAMA, OPT_POST, OPT_PRE, copyFixture, editJson, writeRawSafetensors } from './hf_fixtures';

function expectCode(fn: () => unknown, code: string, message?: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(AdaInferError);
  expect((err as AdaInferError).code).toBe(code);
  if (message) expect((err as Error).message).toMatch(message);
}

describe('safetensors reader', () => {
  const dir = tmpDir('adainfer-st-');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('reads the fixtures: dtypes, shapes, offsets inside the file, __metadata__', () => {
    const f = readSafetensors(path.join(OPT_PRE, 'model.safetensors'));
    expect(f.metadata.get('format')).toBe('pt');
    expect(f.dataOffset % 8).toBe(0);
    const e = f.tensorsByName.get('model.decoder.embed_tokens.weight')!;
    expect(e.dtype).toBe('F32');
    expect(e.shape).toEqual([328, 64]);
    expect(e.byteSize).toBe(328 * 64 * 4);
    expect(e.absoluteOffset).toBe(f.dataOffset + e.begin);
    for (const t of f.tensors) expect(t.absoluteOffset + t.byteSize).toBeLessThanOrEqual(f.fileSize);
    const h = readSafetensors(path.join(OPT_POST, 'model.safetensors'));
    expect(new Set(h.tensors.map((t) => t.dtype))).toEqual(new Set(['F16']));
  });

  test('dtype table: F32, F16, BF16 are supported, the rest are typed errors', () => {
    expect(ggmlTypeOfDType('x', { name: 'a', dtype: 'F32' })).toBe(GGMLType.F32);
    expect(ggmlTypeOfDType('x', { name: 'a', dtype: 'F16' })).toBe(GGMLType.F16);
    expect(ggmlTypeOfDType('x', { name: 'a', dtype: 'BF16' })).toBe(GGMLType.BF16);
    for (const d of ['I64', 'F64', 'I8', 'F8_E4M3', 'BOOL']) {
      expect(supportedDType(d)).toBe(false);
      expectCode(() => ggmlTypeOfDType('x', { name: 'w', dtype: d }), 'UNSUPPORTED_TENSOR_TYPE', new RegExp(`"w" has dtype ${d}`));
    }
  });

  test('a valid synthetic file with every float dtype and an empty tensor', () => {
    const f = path.join(dir, 'ok.safetensors');
    writeRawSafetensors(
      f,
      {
        __metadata__: { a: 'b' },
        x: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] },
        y: { dtype: 'BF16', shape: [4], data_offsets: [24, 32] },
        z: { dtype: 'F16', shape: [0, 5], data_offsets: [32, 32] },
        w: { dtype: 'I64', shape: [1], data_offsets: [32, 40] },
      },
      new Uint8Array(40),
    );
    const s = readSafetensors(f);
    expect(s.tensors.map((t) => t.name)).toEqual(['x', 'y', 'z', 'w']);
    expect(s.tensorsByName.get('z')!.nElements).toBe(0);
    expect(s.metadata.get('a')).toBe('b');
  });

  const one = { x: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] } };
  const bad: { name: string; header: unknown; data?: number; headerLength?: number; code: string; message: RegExp }[] = [
    { name: 'header length past the end of the file', header: one, data: 16, headerLength: 1 << 20, code: 'BAD_SAFETENSORS', message: /header length 1048576 is more than/ },
    { name: 'header length 2^64 - 1', header: one, data: 16, headerLength: -1, code: 'BAD_SAFETENSORS', message: /header length 18446744073709551615/ },
    { name: 'not JSON', header: 'not json', code: 'BAD_SAFETENSORS', message: /does not start with '\{'/ },
    { name: 'a JSON array', header: [1, 2], code: 'BAD_SAFETENSORS', message: /does not start with/ },
    { name: 'truncated JSON', header: '{"x": {', code: 'BAD_SAFETENSORS', message: /not valid JSON/ },
    { name: 'unknown dtype', header: { x: { dtype: 'F128', shape: [1], data_offsets: [0, 16] } }, data: 16, code: 'BAD_SAFETENSORS', message: /"F128" is not a safetensors dtype/ },
    { name: 'negative dimension', header: { x: { dtype: 'F32', shape: [-1, 4], data_offsets: [0, 16] } }, data: 16, code: 'BAD_SAFETENSORS', message: /shape \[-1,4\]/ },
    { name: 'fractional dimension', header: { x: { dtype: 'F32', shape: [1.5], data_offsets: [0, 16] } }, data: 16, code: 'BAD_SAFETENSORS', message: /shape/ },
    { name: 'end before begin', header: { x: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, data: 16, code: 'BAD_SAFETENSORS', message: /data_offsets \[8,4\]/ },
    { name: 'offsets past the data section', header: { x: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] } }, data: 12, code: 'TENSOR_OUT_OF_BOUNDS', message: /extend past the end of the 12-byte data section/ },
    { name: 'size disagreeing with the shape', header: { x: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 12] } }, data: 16, code: 'BAD_SAFETENSORS', message: /hold 12 bytes, but F32 \[2, 2\] needs 16/ },
    {
      name: 'overlapping tensors',
      header: { x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, y: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } },
      data: 16,
      code: 'BAD_SAFETENSORS',
      message: /"y" data \[4, 12\) overlaps tensor "x"/,
    },
    { name: 'metadata not strings', header: { __metadata__: { a: 1 }, ...one }, data: 16, code: 'BAD_SAFETENSORS', message: /__metadata__\["a"\]/ },
    { name: 'an entry that is not an object', header: { x: 3 }, code: 'BAD_SAFETENSORS', message: /"x": its entry is not an object/ },
  ];
  for (const c of bad) {
    test(`rejects ${c.name} (${c.code})`, () => {
      const f = path.join(dir, c.name.replace(/\W+/g, '_') + '.safetensors');
      if (typeof c.header === 'string') {
        const h = Buffer.from(c.header);
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(h.length));
        fs.writeFileSync(f, Buffer.concat([len, h]));
      } else {
        writeRawSafetensors(f, c.header as Record<string, unknown>, new Uint8Array(c.data ?? 0));
        if (c.headerLength !== undefined) {
          const fd = fs.openSync(f, 'r+');
          const len = Buffer.alloc(8);
          len.writeBigUInt64LE(c.headerLength < 0 ? 0xffffffffffffffffn : BigInt(c.headerLength));
          fs.writeSync(fd, len, 0, 8, 0);
          fs.closeSync(fd);
        }
      }
      expectCode(() => readSafetensors(f), c.code, c.message);
    });
  }

  test('a file shorter than 8 bytes, a missing file, a folder', () => {
    const f = path.join(dir, 'short.safetensors');
    fs.writeFileSync(f, Buffer.from([1, 2, 3]));
    expectCode(() => readSafetensors(f), 'BAD_SAFETENSORS', /3 bytes: too short/);
    expectCode(() => readSafetensors(path.join(dir, 'nope.safetensors')), 'FILE_NOT_FOUND');
    expectCode(() => readSafetensors(dir), 'FILE_READ', /not a regular file/);
  });

  test('errors name the file (ModelFileError.path)', () => {
    const f = path.join(dir, 'named.safetensors');
    writeRawSafetensors(f, { x: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, new Uint8Array(8));
    try {
      readSafetensors(f);
      throw new Error('no error');
    } catch (e) {
      expect(e).toBeInstanceOf(ModelFileError);
      expect((e as ModelFileError).path).toBe(f);
    }
  });

  test('parseSafetensorsHeader checks against the file size it is given', () => {
    const h = Buffer.from(JSON.stringify({ x: { dtype: 'F16', shape: [3], data_offsets: [0, 6] } }));
    expect(parseSafetensorsHeader(h, 8 + h.length + 6, 'mem').tensors[0].absoluteOffset).toBe(8 + h.length);
    expectCode(() => parseSafetensorsHeader(h, 8 + h.length + 5, 'mem'), 'TENSOR_OUT_OF_BOUNDS');
  });

  describe('checkpoints', () => {
    test('a sharded checkpoint: every tensor of the index, from its shard', () => {
      const ck = readCheckpoint(LLAMA);
      expect(ck.files).toHaveLength(2);
      expect(ck.indexPath).toMatch(/model\.safetensors\.index\.json$/);
      expect(ck.tensors.get('model.embed_tokens.weight')!.file).toBe(0);
      expect(ck.tensors.get('lm_head.weight')!.file).toBe(1);
      const index = JSON.parse(fs.readFileSync(path.join(LLAMA, 'model.safetensors.index.json'), 'utf8'));
      expect(ck.tensors.size).toBe(Object.keys(index.weight_map).length);
    });

    test('a single-file checkpoint', () => {
      const ck = readCheckpoint(OPT_PRE);
      expect(ck.files).toHaveLength(1);
      expect(ck.indexPath).toBeUndefined();
    });

    test('a missing shard is MISSING_SHARD, naming it', () => {
      const d = copyFixture(LLAMA, dir, 'noshard');
      fs.rmSync(path.join(d, 'model-00002-of-00002.safetensors'));
      expectCode(() => readCheckpoint(d), 'MISSING_SHARD', /model-00002-of-00002\.safetensors \(\d+ tensors/);
    });

    test('an index placing a tensor in a shard that lacks it is MISSING_TENSOR', () => {
      const d = copyFixture(LLAMA, dir, 'misplaced');
      editJson(path.join(d, 'model.safetensors.index.json'), (j) => {
        (j.weight_map as Record<string, string>)['lm_head.weight'] = 'model-00001-of-00002.safetensors';
      });
      expectCode(() => readCheckpoint(d), 'MISSING_TENSOR', /"lm_head\.weight" in model-00001-of-00002/);
    });

    test('an index naming a file outside the folder is refused', () => {
      const d = copyFixture(LLAMA, dir, 'escape');
      editJson(path.join(d, 'model.safetensors.index.json'), (j) => {
        (j.weight_map as Record<string, string>)['lm_head.weight'] = '../x.safetensors';
      });
      expectCode(() => readCheckpoint(d), 'BAD_SAFETENSORS', /not a file inside the model folder/);
    });

    test('a broken index, and a folder with no weights', () => {
      const d = copyFixture(LLAMA, dir, 'badindex');
      fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), '{"weight_map": 3}');
      expectCode(() => readCheckpoint(d), 'BAD_SAFETENSORS', /no "weight_map" object/);
      fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), '{');
      expectCode(() => readCheckpoint(d), 'BAD_SAFETENSORS', /not valid JSON/);
      const empty = path.join(dir, 'empty');
      fs.mkdirSync(empty);
      expectCode(() => readCheckpoint(empty), 'FILE_NOT_FOUND', /neither model\.safetensors nor/);
    });
  });
});
