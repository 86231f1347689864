/**
 * Structure-aware mutations of a valid GGUF file, for the property tests (test/standalone/fuzz_*.test.ts) and
 * the full-load fuzzing child (test/fuzz/load_child.ts).
 *
 * A valid file is split into its raw parts (key/value entries as encoded bytes, tensor infos, the data
 * section), so that a mutation can change one thing and re-encode the rest faithfully: a count or a length
 * inflated, a tensor moved over another or past the end, dimensions whose product overflows 64 bits, a
 * string made invalid UTF-8, arrays nested deeper than allowed, ... Byte-level mutations (truncation, bit
 * flips, a boundary value over a known field) then apply to the encoded bytes. Everything is deterministic
 * in the fast-check values, so a failing case shrinks and replays from its seed.
 */
import fc from 'fast-check';
import { AdaInferError, type ErrorCode } from '../../lib/errors';
import { checkTensorShape, GGUFFile } from '../../lib/gguf';

// ---------------------------------------------------------------------------------------------------
// Raw structure

export interface RawKV {
  key: Buffer;
  type: number;
  /** The encoded value, without the type word. */
  value: Buffer;
}

export interface RawTensor {
  name: Buffer;
  dims: bigint[];
  type: number;
  /** Relative to the data section. */
  offset: bigint;
}

export interface RawGGUF {
  magic: Buffer;
  version: number;
  kvs: RawKV[];
  tensors: RawTensor[];
  /** Counts written in the header (default: the array lengths). */
  tensorCount?: bigint;
  kvCount?: bigint;
  /** The data section: every byte after the aligned end of the header. */
  data: Buffer;
}

export type FieldKind =
  | 'version'
  | 'tensorCount'
  | 'kvCount'
  | 'keyLength'
  | 'valueType'
  | 'stringLength'
  | 'arrayType'
  | 'arrayLength'
  | 'scalar'
  | 'nameLength'
  | 'nDims'
  | 'dim'
  | 'tensorType'
  | 'tensorOffset';

export interface Field {
  kind: FieldKind;
  at: number;
  size: 1 | 2 | 4 | 8;
}

const SCALAR_SIZE: Record<number, 1 | 2 | 4 | 8> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const STRING = 8;
const ARRAY = 9;

class Walker {
  pos = 0;
  readonly fields: Field[] = [];
  constructor(readonly b: Buffer) {}
  u32(kind?: FieldKind): number {
    if (this.pos + 4 > this.b.length) throw new Error('raw GGUF: truncated');
    if (kind) this.fields.push({ kind, at: this.pos, size: 4 });
    const v = this.b.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(kind?: FieldKind): bigint {
    if (this.pos + 8 > this.b.length) throw new Error('raw GGUF: truncated');
    if (kind) this.fields.push({ kind, at: this.pos, size: 8 });
    const v = this.b.readBigUInt64LE(this.pos);
    this.pos += 8;
    return v;
  }
  bytes(n: number): Buffer {
    const out = this.b.subarray(this.pos, this.pos + n);
    if (out.length !== n) throw new Error('raw GGUF: truncated');
    this.pos += n;
    return out;
  }
  /** A count that cannot describe more items (of at least one byte) than the rest of the input holds. */
  count(kind?: FieldKind): number {
    const n = this.u64(kind);
    if (n > BigInt(this.b.length - this.pos)) throw new Error('raw GGUF: count past the end');
    return Number(n);
  }
  value(type: number, record: boolean, depth = 0): void {
    if (depth > 8) throw new Error('raw GGUF: nested too deep');
    if (type === STRING) {
      this.bytes(this.count(record ? 'stringLength' : undefined));
    } else if (type === ARRAY) {
      const et = this.u32(record ? 'arrayType' : undefined);
      const n = this.count(record ? 'arrayLength' : undefined);
      // Only the first few elements of a long array are recorded as fields (the vocabulary has thousands).
      for (let i = 0; i < n; i++) this.value(et, record && i < 8, depth + 1);
    } else {
      const size = SCALAR_SIZE[type];
      if (size === undefined) throw new Error(`raw GGUF: value type ${type}`);
      if (record) this.fields.push({ kind: 'scalar', at: this.pos, size });
      this.bytes(size);
    }
  }
}

/** Splits a valid GGUF file into its raw parts, and lists where its counts, lengths, types, dims and offsets are. */
export function decodeRaw(bytes: Buffer): { raw: RawGGUF; fields: Field[]; headerEnd: number; dataOffset: number } {
  const w = new Walker(bytes);
  const magic = w.bytes(4);
  const version = w.u32('version');
  const nTensors = w.count('tensorCount');
  const nKv = w.count('kvCount');
  const kvs: RawKV[] = [];
  for (let i = 0; i < nKv; i++) {
    const key = w.bytes(w.count('keyLength'));
    const type = w.u32('valueType');
    const start = w.pos;
    w.value(type, true);
    kvs.push({ key, type, value: bytes.subarray(start, w.pos) });
  }
  const tensors: RawTensor[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = w.bytes(w.count('nameLength'));
    const nDims = w.u32('nDims');
    if (nDims > 16) throw new Error('raw GGUF: n_dims');
    const dims: bigint[] = [];
    for (let d = 0; d < nDims; d++) dims.push(w.u64('dim'));
    const type = w.u32('tensorType');
    const offset = w.u64('tensorOffset');
    tensors.push({ name, dims, type, offset });
  }
  const headerEnd = w.pos;
  const align = alignmentOf(kvs);
  const dataOffset = Math.ceil(headerEnd / align) * align;
  return {
    raw: { magic, version, kvs, tensors, data: bytes.subarray(Math.min(dataOffset, bytes.length)) },
    fields: w.fields,
    headerEnd,
    dataOffset,
  };
}

/** general.alignment when it is a usable UINT32, else the default 32 (where the encoder puts the data). */
function alignmentOf(kvs: RawKV[]): number {
  const kv = kvs.find((k) => k.key.toString('latin1') === 'general.alignment');
  if (!kv || kv.type !== 4 || kv.value.length !== 4) return 32;
  const a = kv.value.readUInt32LE(0);
  return a > 0 && a <= 1 << 16 && (a & (a - 1)) === 0 ? a : 32;
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
}
function u64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, v));
  return b;
}
function lenPrefixed(s: Buffer): Buffer {
  return Buffer.concat([u64(BigInt(s.length)), s]);
}

/** Encodes raw parts back into a file: header, zero padding to the alignment, the data section. */
export function encodeRaw(raw: RawGGUF): Buffer {
  const parts: Buffer[] = [raw.magic, u32(raw.version), u64(raw.tensorCount ?? BigInt(raw.tensors.length)), u64(raw.kvCount ?? BigInt(raw.kvs.length))];
  for (const kv of raw.kvs) parts.push(lenPrefixed(kv.key), u32(kv.type), kv.value);
  for (const t of raw.tensors) {
    parts.push(lenPrefixed(t.name), u32(t.dims.length), ...t.dims.map(u64), u32(t.type), u64(t.offset));
  }
  const header = Buffer.concat(parts);
  const align = alignmentOf(raw.kvs);
  const pad = Math.ceil(header.length / align) * align - header.length;
  return Buffer.concat([header, Buffer.alloc(pad), raw.data]);
}

// ---------------------------------------------------------------------------------------------------
// Values worth trying

/** Boundary values for u64 fields: around 2^31, 2^32, 2^53, 2^63, 2^64 and small. */
export const INTERESTING_U64: bigint[] = [
  0n, 1n, 2n, 3n, 7n, 31n, 32n, 33n, 255n, 256n, 4096n, 65535n, 65536n,
  2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 40n,
  2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 62n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 32n, 2n ** 64n - 1n,
];

/** Byte sequences that are not UTF-8: a lone continuation, an overlong '/', a surrogate, a cut 4-byte sequence, 0xFF. */
export const INVALID_UTF8: Buffer[] = [
  Buffer.from([0x80]),
  Buffer.from([0xc0, 0xaf]),
  Buffer.from([0xed, 0xa0, 0x80]),
  Buffer.from([0xf0, 0x9f, 0x98]),
  Buffer.from([0xff]),
  Buffer.from([0xf4, 0x90, 0x80, 0x80]),
];

// ---------------------------------------------------------------------------------------------------
// Mutations

export type StructuralMutation =
  | { kind: 'inflateCount'; which: 'tensor' | 'kv'; value: bigint }
  | { kind: 'tensorOffset'; tensor: number; to: 'overlap' | 'end' | 'value'; other: number; value: bigint }
  | { kind: 'dims'; tensor: number; dims: bigint[] }
  | { kind: 'tensorType'; tensor: number; type: number }
  | { kind: 'invalidUtf8'; target: 'key' | 'name' | 'string'; index: number; bytes: number; at: number }
  | { kind: 'deepArray'; depth: number; count: number }
  | { kind: 'hugeArray'; elemType: number; count: bigint }
  | { kind: 'longString'; length: bigint }
  | { kind: 'alignment'; value: number; type: number }
  | { kind: 'duplicate'; what: 'key' | 'tensor'; index: number }
  | { kind: 'dropKv'; index: number }
  | { kind: 'dropTensor'; index: number }
  | { kind: 'hparam'; key: string; value: bigint; type: number };

export type ByteMutation =
  | { kind: 'truncate'; at: number; inHeader: boolean }
  | { kind: 'flip'; at: number; bit: number; inHeader: boolean }
  | { kind: 'field'; field: number; value: bigint }
  | { kind: 'splice'; at: number; bytes: Uint8Array };

export interface Mutation {
  structural: StructuralMutation[];
  bytes: ByteMutation[];
}

/** llama.* keys the loader reads, for hyper-parameter mutations. */
export const HPARAM_KEYS = [
  'llama.context_length',
  'llama.embedding_length',
  'llama.block_count',
  'llama.feed_forward_length',
  'llama.attention.head_count',
  'llama.attention.head_count_kv',
  'llama.attention.key_length',
  'llama.rope.dimension_count',
  'llama.vocab_size',
  'llama.attention.layer_norm_rms_epsilon',
  'llama.rope.freq_base',
  'tokenizer.ggml.bos_token_id',
  'tokenizer.ggml.eos_token_id',
  'general.architecture',
];

const interestingU64 = () => fc.oneof(fc.constantFrom(...INTERESTING_U64), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));

export function structuralMutation(): fc.Arbitrary<StructuralMutation> {
  const idx = fc.nat({ max: 1 << 16 });
  return fc.oneof(
    fc.record({ kind: fc.constant('inflateCount' as const), which: fc.constantFrom('tensor' as const, 'kv' as const), value: interestingU64() }),
    fc.record({
      kind: fc.constant('tensorOffset' as const),
      tensor: idx,
      to: fc.constantFrom('overlap' as const, 'end' as const, 'value' as const),
      other: idx,
      value: interestingU64(),
    }),
    fc.record({
      kind: fc.constant('dims' as const),
      tensor: idx,
      dims: fc.array(fc.oneof(fc.constantFrom(...INTERESTING_U64), fc.bigInt({ min: 0n, max: 1024n })), { maxLength: 6 }),
    }),
    fc.record({ kind: fc.constant('tensorType' as const), tensor: idx, type: fc.oneof(fc.nat({ max: 45 }), fc.constantFrom(0xffffffff, 0x80000000, 1 << 16)) }),
    fc.record({
      kind: fc.constant('invalidUtf8' as const),
      target: fc.constantFrom('key' as const, 'name' as const, 'string' as const),
      index: idx,
      bytes: fc.nat({ max: INVALID_UTF8.length - 1 }),
      at: idx,
    }),
    fc.record({ kind: fc.constant('deepArray' as const), depth: fc.integer({ min: 1, max: 40 }), count: fc.integer({ min: 0, max: 3 }) }),
    fc.record({ kind: fc.constant('hugeArray' as const), elemType: fc.nat({ max: 13 }), count: interestingU64() }),
    fc.record({ kind: fc.constant('longString' as const), length: interestingU64() }),
    fc.record({ kind: fc.constant('alignment' as const), value: fc.oneof(fc.constantFrom(0, 1, 2, 3, 4, 8, 16, 64, 4096, 2 ** 31, 0xffffffff), fc.nat()), type: fc.constantFrom(4, 4, 4, 5, 10, 8) }),
    fc.record({ kind: fc.constant('duplicate' as const), what: fc.constantFrom('key' as const, 'tensor' as const), index: idx }),
    fc.record({ kind: fc.constant('dropKv' as const), index: idx }),
    fc.record({ kind: fc.constant('dropTensor' as const), index: idx }),
    fc.record({
      kind: fc.constant('hparam' as const),
      key: fc.constantFrom(...HPARAM_KEYS),
      value: interestingU64(),
      type: fc.constantFrom(0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 8),
    }),
  );
}

export function byteMutation(): fc.Arbitrary<ByteMutation> {
  return fc.oneof(
    fc.record({ kind: fc.constant('truncate' as const), at: fc.nat(), inHeader: fc.boolean() }),
    fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat({ max: 7 }), inHeader: fc.constantFrom(true, true, true, false) }),
    fc.record({ kind: fc.constant('field' as const), field: fc.nat(), value: interestingU64() }),
    fc.record({ kind: fc.constant('splice' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  );
}

export function mutation(): fc.Arbitrary<Mutation> {
  return fc
    .record({
      structural: fc.array(structuralMutation(), { maxLength: 2 }),
      bytes: fc.array(byteMutation(), { maxLength: 2 }),
    })
    .filter((m) => m.structural.length + m.bytes.length > 0);
}

/** Encodes a scalar of GGUF value type `type` holding `v` (truncated to the type's width). */
function encodeScalar(type: number, v: bigint): Buffer {
  const size = SCALAR_SIZE[type];
  if (type === STRING) return lenPrefixed(Buffer.from(v.toString()));
  if (size === undefined) return encodeScalar(4, v);
  const b = Buffer.alloc(size);
  if (type === 6) b.writeFloatLE(Number(BigInt.asIntN(64, v)));
  else if (type === 12) b.writeDoubleLE(Number(BigInt.asIntN(64, v)));
  else if (size === 8) b.writeBigUInt64LE(BigInt.asUintN(64, v));
  else if (size === 4) b.writeUInt32LE(Number(BigInt.asUintN(32, v)));
  else if (size === 2) b.writeUInt16LE(Number(BigInt.asUintN(16, v)));
  else b.writeUInt8(Number(BigInt.asUintN(8, v)));
  return b;
}

function applyStructural(raw: RawGGUF, m: StructuralMutation): void {
  const nt = raw.tensors.length;
  const pick = <T>(arr: T[], i: number): T | undefined => (arr.length > 0 ? arr[i % arr.length] : undefined);
  switch (m.kind) {
    case 'inflateCount':
      if (m.which === 'tensor') raw.tensorCount = m.value;
      else raw.kvCount = m.value;
      return;
    case 'tensorOffset': {
      const t = pick(raw.tensors, m.tensor);
      if (!t) return;
      if (m.to === 'overlap') {
        const o = raw.tensors[m.other % nt];
        t.offset = o.offset + BigInt(m.other % 3) * 32n; // onto (or into) another tensor's data
      } else if (m.to === 'end') {
        t.offset = BigInt(raw.data.length) - BigInt(m.other % 256) * 32n; // at or just before the end
      } else {
        t.offset = m.value;
      }
      return;
    }
    case 'dims': {
      const t = pick(raw.tensors, m.tensor);
      if (t) t.dims = m.dims;
      return;
    }
    case 'tensorType': {
      const t = pick(raw.tensors, m.tensor);
      if (t) t.type = m.type;
      return;
    }
    case 'invalidUtf8': {
      const bad = INVALID_UTF8[m.bytes];
      const inject = (s: Buffer) => {
        const at = s.length === 0 ? 0 : m.at % (s.length + 1);
        return Buffer.concat([s.subarray(0, at), bad, s.subarray(at)]);
      };
      if (m.target === 'key') {
        const kv = pick(raw.kvs, m.index);
        if (kv) kv.key = inject(kv.key);
      } else if (m.target === 'name') {
        const t = pick(raw.tensors, m.index);
        if (t) t.name = inject(t.name);
      } else {
        const strings = raw.kvs.filter((k) => k.type === STRING);
        const kv = pick(strings, m.index);
        if (kv) kv.value = lenPrefixed(inject(kv.value.subarray(8)));
      }
      return;
    }
    case 'deepArray': {
      // ARRAY of ARRAY of ... of UINT8, `depth` levels, `count` elements at each level.
      const build = (level: number): Buffer => {
        if (level === m.depth) return Buffer.concat([u32(0), u64(BigInt(m.count)), Buffer.alloc(m.count, 7)]);
        const inner = build(level + 1);
        return Buffer.concat([u32(ARRAY), u64(BigInt(m.count)), ...Array.from({ length: m.count }, () => inner)]);
      };
      if (m.count ** m.depth > 1 << 16) return; // keep the file small
      raw.kvs.push({ key: Buffer.from('fuzz.deep'), type: ARRAY, value: build(1) });
      return;
    }
    case 'hugeArray':
      // The count claims far more elements than follow (a few bytes of whatever type).
      raw.kvs.splice(0, 0, { key: Buffer.from('fuzz.huge'), type: ARRAY, value: Buffer.concat([u32(m.elemType), u64(m.count), Buffer.alloc(16, 0x41)]) });
      return;
    case 'longString':
      raw.kvs.splice(0, 0, { key: Buffer.from('fuzz.long'), type: STRING, value: Buffer.concat([u64(m.length), Buffer.from('abc')]) });
      return;
    case 'alignment': {
      const value = m.type === 8 ? lenPrefixed(Buffer.from(String(m.value))) : encodeScalar(m.type, BigInt(m.value));
      const kv = raw.kvs.find((k) => k.key.toString('latin1') === 'general.alignment');
      if (kv) {
        kv.type = m.type;
        kv.value = value;
      } else {
        raw.kvs.push({ key: Buffer.from('general.alignment'), type: m.type, value });
      }
      return;
    }
    case 'duplicate':
      if (m.what === 'key') {
        const kv = pick(raw.kvs, m.index);
        if (kv) raw.kvs.push({ ...kv });
      } else {
        const t = pick(raw.tensors, m.index);
        if (t) raw.tensors.push({ ...t, dims: [...t.dims] });
      }
      return;
    case 'dropKv':
      if (raw.kvs.length > 0) raw.kvs.splice(m.index % raw.kvs.length, 1);
      return;
    case 'dropTensor':
      if (nt > 0) raw.tensors.splice(m.index % nt, 1);
      return;
    case 'hparam': {
      const value = m.key === 'general.architecture' ? lenPrefixed(Buffer.from(m.value % 2n ? 'llama' : 'mamba')) : encodeScalar(m.type, m.value);
      const type = m.key === 'general.architecture' ? STRING : SCALAR_SIZE[m.type] === undefined ? 4 : m.type;
      const kv = raw.kvs.find((k) => k.key.toString('latin1') === m.key);
      if (kv) {
        kv.type = type;
        kv.value = value;
      } else {
        raw.kvs.push({ key: Buffer.from(m.key), type, value });
      }
      return;
    }
  }
}

function applyBytes(b: Buffer, m: ByteMutation, fields: Field[], headerEnd: number): Buffer {
  switch (m.kind) {
    case 'truncate': {
      const limit = m.inHeader ? Math.min(b.length, headerEnd + 64) : b.length;
      return b.subarray(0, m.at % (limit + 1));
    }
    case 'flip': {
      if (b.length === 0) return b;
      const limit = m.inHeader ? Math.min(b.length, headerEnd) : b.length;
      b[m.at % limit] ^= 1 << m.bit;
      return b;
    }
    case 'field': {
      if (fields.length === 0) return b;
      const f = fields[m.field % fields.length];
      if (f.at + f.size > b.length) return b;
      if (f.size === 8) b.writeBigUInt64LE(BigInt.asUintN(64, m.value), f.at);
      else if (f.size === 4) b.writeUInt32LE(Number(BigInt.asUintN(32, m.value)), f.at);
      else if (f.size === 2) b.writeUInt16LE(Number(BigInt.asUintN(16, m.value)), f.at);
      else b.writeUInt8(Number(BigInt.asUintN(8, m.value)), f.at);
      return b;
    }
    case 'splice': {
      const at = m.at % (Math.min(b.length, headerEnd) + 1);
      b.set(m.bytes.subarray(0, Math.max(0, b.length - at)), at);
      return b;
    }
  }
}

/** A mutated copy of `base` (a valid GGUF file). */
export function applyMutation(base: Buffer, m: Mutation): Buffer {
  let bytes: Buffer;
  if (m.structural.length > 0) {
    const { raw } = decodeRaw(base);
    const copy: RawGGUF = {
      ...raw,
      kvs: raw.kvs.map((k) => ({ ...k })),
      tensors: raw.tensors.map((t) => ({ ...t, dims: [...t.dims] })),
    };
    for (const s of m.structural) applyStructural(copy, s);
    bytes = encodeRaw(copy);
  } else {
    bytes = Buffer.from(base);
  }
  if (m.bytes.length > 0) {
    // Field positions of the (possibly re-encoded) file, when it still decodes; else of the original.
    let fields: Field[];
    let headerEnd: number;
    try {
      ({ fields, headerEnd } = decodeRaw(bytes));
    } catch {
      ({ fields, headerEnd } = decodeRaw(base));
    }
    for (const bm of m.bytes) bytes = applyBytes(bytes, bm, fields, headerEnd);
  }
  return bytes;
}

/** Readable one-line form of a mutation (bigints as strings), for failure messages. */
export function describeMutation(m: Mutation): string {
  return JSON.stringify(m, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v));
}

// ---------------------------------------------------------------------------------------------------
// Checks

/** The codes a malformed file may produce from the parser. */
export const PARSER_CODES: ErrorCode[] = [
  'GGUF_BAD_MAGIC',
  'GGUF_UNSUPPORTED_VERSION',
  'GGUF_TRUNCATED',
  'GGUF_CORRUPT',
  'TENSOR_OUT_OF_BOUNDS',
  'UNSUPPORTED_TENSOR_TYPE',
];

/** Codes the whole load (parser, hyper-parameters, tokenizer, native weights) may produce for a bad file. */
export const LOAD_CODES: ErrorCode[] = [
  ...PARSER_CODES,
  'UNSUPPORTED_ARCHITECTURE',
  'MISSING_METADATA',
  'MISSING_TENSOR',
  'SHAPE_MISMATCH',
  'TOKENIZER',
];

/** Throws (with a description) unless `err` is an AdaInferError whose code is in `codes`. */
export function expectTypedError(err: unknown, codes: readonly ErrorCode[], context: string): void {
  if (!(err instanceof AdaInferError)) {
    throw new Error(`${context}: threw a non-AdaInferError: ${err instanceof Error ? err.stack : String(err)}`);
  }
  if (!codes.includes(err.code)) throw new Error(`${context}: unexpected code ${err.code}: ${err.message}`);
  if (typeof err.message !== 'string' || err.message.length === 0) throw new Error(`${context}: empty message`);
}

/** What a successful parse guarantees; throws naming the first violation. */
export function checkParsedFile(f: GGUFFile, fileSize: number): void {
  const fail = (what: string) => {
    throw new Error(`parsed file violates an invariant: ${what}`);
  };
  if (f.fileSize !== fileSize) fail(`fileSize ${f.fileSize} != ${fileSize}`);
  if (![2, 3].includes(f.version)) fail(`version ${f.version}`);
  if (!(f.alignment > 0 && (f.alignment & (f.alignment - 1)) === 0)) fail(`alignment ${f.alignment}`);
  if (f.dataOffset % f.alignment !== 0) fail('dataOffset not aligned');
  if (f.tensors.length > 0 && f.dataOffset > fileSize) fail('data section past the end');
  for (const [k, v] of f.metadata) {
    if (!f.metadataTypes.has(k)) fail(`no type for ${k}`);
    if (/[\uD800-\uDFFF]/.test(k.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g, ''))) fail(`lone surrogate in key ${k}`);
    if (typeof v === 'string' && /[\uD800-\uDFFF]/.test(v.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g, ''))) fail(`lone surrogate in ${k}`);
  }
  const names = new Set<string>();
  for (const t of f.tensors) {
    if (names.has(t.name)) fail(`duplicate tensor ${t.name}`);
    names.add(t.name);
    if (t.dims.length > 4) fail(`${t.name}: ${t.dims.length} dims`);
    if (!t.dims.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(`${t.name}: dims ${t.dims}`);
    const size = checkTensorShape(t.type, t.dims);
    if (typeof size === 'string') fail(`${t.name}: ${size}`);
    else if (size.bytes !== t.byteSize || size.elements !== t.nElements) fail(`${t.name}: size`);
    if (t.offset % f.alignment !== 0) fail(`${t.name}: misaligned`);
    if (t.absoluteOffset !== f.dataOffset + t.offset) fail(`${t.name}: absoluteOffset`);
    if (t.absoluteOffset + t.byteSize > fileSize) fail(`${t.name}: past the end`);
    if (f.tensorsByName.get(t.name) !== t) fail(`${t.name}: tensorsByName`);
  }
  const byStart = f.tensors.filter((t) => t.byteSize > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byStart.length; i++) {
    if (byStart[i].offset < byStart[i - 1].offset + byStart[i - 1].byteSize) fail(`${byStart[i].name} overlaps`);
  }
}
