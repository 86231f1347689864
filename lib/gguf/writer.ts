/**
 * GGUF v3 writer. Metadata is typed explicitly per key (so a file read back has the same types) and
 * encoded as soon as it is set; tensor data is streamed to disk one tensor at a time from a buffer or
 * a provider function, so a multi-GB model never has to be in memory at once. The layout is the one
 * llama.cpp writes and expects: tensor infos, zero padding to the alignment, then each tensor's data
 * padded to the alignment, offsets assigned in the order tensors were added.
 *
 * The output is written to a temporary file beside `path` and renamed over it when complete, so a
 * crash or a failing provider never leaves a half-written model under the final name.
 * Misuse (a value that does not fit its declared type, a wrong data length) throws TypeError/RangeError
 * naming the key or tensor; file-system errors are Node's own.
 */
import * as fs from 'fs';
import { GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, type GGUFFile, type GGUFMetadataType, type GGUFValue } from './reader';
import { GGML_MAX_DIMS, GGUFValueType, checkTensorShape, ggmlTypeName, ggufValueTypeName, isKnownValueType } from './types';

/** Bytes of one tensor: all at once, or a function called when the tensor is written (may yield chunks). */
export type TensorDataSource = Uint8Array | (() => Uint8Array | Iterable<Uint8Array>);

export interface GGUFWriteResult {
  fileSize: number;
  dataOffset: number;
}

/** ggml keeps tensor names in a 64-byte buffer with a terminating NUL; llama.cpp rejects longer ones. */
export const GGML_MAX_NAME_BYTES = 63;

const GGUF_VERSION = 3;
const ALIGNMENT_KEY = 'general.alignment';

interface PendingTensor {
  name: string;
  nameBytes: Buffer;
  dims: number[];
  type: number;
  byteSize: number;
  data: TensorDataSource;
}

export class GGUFWriter {
  /** Encoded key + type + value, in insertion order. */
  private readonly entries = new Map<string, Buffer>();
  private readonly tensors: PendingTensor[] = [];
  private readonly tensorNames = new Set<string>();
  private alignment = GGUF_DEFAULT_ALIGNMENT;

  constructor(options: { alignment?: number } = {}) {
    if (options.alignment !== undefined) this.setU32(ALIGNMENT_KEY, options.alignment);
  }

  /** Sets (or replaces) a key. `type` is a value type, or a full description for arrays. */
  setMetadata(key: string, value: GGUFValue, type: GGUFValueType | GGUFMetadataType): this {
    if (typeof key !== 'string' || key.length === 0) throw new TypeError('metadata key must be a non-empty string');
    const meta: GGUFMetadataType = typeof type === 'number' ? { type } : type;
    if (key === ALIGNMENT_KEY) this.alignment = checkAlignment(value, meta);
    const sink = new ByteSink(64);
    sink.string(utf8(key, 'metadata key'));
    sink.u32(meta.type);
    encodeValue(sink, value, meta, `metadata key "${key}"`, 1);
    this.entries.set(key, sink.bytes());
    return this;
  }

  setU8(key: string, v: number): this {
    return this.setMetadata(key, v, GGUFValueType.UINT8);
  }
  setI8(key: string, v: number): this {
    return this.setMetadata(key, v, GGUFValueType.INT8);
  }
  setU16(key: string, v: number): this {
    return this.setMetadata(key, v, GGUFValueType.UINT16);
  }
  setI16(key: string, v: number): this {
    return this.setMetadata(key, v, GGUFValueType.INT16);
  }
  setU32(key: string, v: number): this {
    return this.setMetadata(key, v, GGUFValueType.UINT32);
  }
  setI32(key: string, v: number): this {
    return this.setMetadata(key, v, GGUFValueType.INT32);
  }
  setU64(key: string, v: number | bigint): this {
    return this.setMetadata(key, v, GGUFValueType.UINT64);
  }
  setI64(key: string, v: number | bigint): this {
    return this.setMetadata(key, v, GGUFValueType.INT64);
  }
  setF32(key: string, v: number): this {
    return this.setMetadata(key, v, GGUFValueType.FLOAT32);
  }
  setF64(key: string, v: number): this {
    return this.setMetadata(key, v, GGUFValueType.FLOAT64);
  }
  setBool(key: string, v: boolean): this {
    return this.setMetadata(key, v, GGUFValueType.BOOL);
  }
  setString(key: string, v: string): this {
    return this.setMetadata(key, v, GGUFValueType.STRING);
  }

  /**
   * An array whose elements all have `elementType`. For an array of arrays, `innerType` describes every
   * element (e.g. `{ type: ARRAY, arrayType: UINT8 }`); mixed or deeper nesting goes through setMetadata.
   */
  setArray(key: string, elementType: GGUFValueType, values: GGUFValue[], innerType?: GGUFMetadataType): this {
    const meta: GGUFMetadataType = { type: GGUFValueType.ARRAY, arrayType: elementType };
    if (elementType === GGUFValueType.ARRAY) {
      if (!innerType) throw new TypeError(`metadata key "${key}": an array of arrays needs innerType`);
      if (!Array.isArray(values)) throw new TypeError(`metadata key "${key}": expected an array`);
      meta.elements = values.map(() => innerType);
    }
    return this.setMetadata(key, values, meta);
  }

  /** Copies keys (with their types) from a parsed file; `filter` chooses which. */
  copyMetadataFrom(file: GGUFFile, filter: (key: string) => boolean = () => true): this {
    for (const [key, type] of file.metadataTypes) {
      if (filter(key)) this.setMetadata(key, file.metadata.get(key) as GGUFValue, type);
    }
    return this;
  }

  deleteMetadata(key: string): this {
    this.entries.delete(key);
    if (key === ALIGNMENT_KEY) this.alignment = GGUF_DEFAULT_ALIGNMENT;
    return this;
  }

  hasMetadata(key: string): boolean {
    return this.entries.has(key);
  }

  /** Adds a tensor; dims in ne order (dims[0] = row length). The data's length is checked against the shape. */
  addTensor(name: string, dims: readonly number[], type: number, data: TensorDataSource): this {
    if (typeof name !== 'string' || name.length === 0) throw new TypeError('tensor name must be a non-empty string');
    if (this.tensorNames.has(name)) throw new RangeError(`tensor "${name}" was already added`);
    const nameBytes = utf8(name, 'tensor name');
    if (nameBytes.length > GGML_MAX_NAME_BYTES) {
      throw new RangeError(`tensor name "${name}" is ${nameBytes.length} bytes; ggml allows at most ${GGML_MAX_NAME_BYTES}`);
    }
    if (dims.length > GGML_MAX_DIMS) throw new RangeError(`tensor "${name}": ${dims.length} dims, at most ${GGML_MAX_DIMS}`);
    const size = checkTensorShape(type, dims);
    if (typeof size === 'string') throw new RangeError(`tensor "${name}" (${ggmlTypeName(type)}): ${size}`);
    if (data instanceof Uint8Array) {
      if (data.length !== size.bytes) throw wrongLength(name, size.bytes, data.length);
    } else if (typeof data !== 'function') {
      throw new TypeError(`tensor "${name}": data must be a Uint8Array or a function returning one`);
    }
    this.tensors.push({ name, nameBytes, dims: [...dims], type, byteSize: size.bytes, data });
    this.tensorNames.add(name);
    return this;
  }

  get tensorCount(): number {
    return this.tensors.length;
  }

  /** Writes the file (replacing any file at `path`). Providers are called one at a time, in order. */
  write(path: string): GGUFWriteResult {
    const align = this.alignment;
    const header = this.encodeHeader(align);
    const dataOffset = padTo(header.length, align);
    const tmp = `${path}.tmp-${process.pid}-${tmpCounter++}`;
    const fd = fs.openSync(tmp, 'w');
    let pos = 0;
    const put = (b: Uint8Array) => {
      writeAll(fd, b);
      pos += b.length;
    };
    try {
      put(header);
      writeZeros(fd, dataOffset - pos);
      pos = dataOffset;
      for (const t of this.tensors) {
        const start = pos;
        for (const chunk of chunksOf(t)) {
          if (pos - start + chunk.length > t.byteSize) throw wrongLength(t.name, t.byteSize, pos - start + chunk.length);
          put(chunk);
        }
        if (pos - start !== t.byteSize) throw wrongLength(t.name, t.byteSize, pos - start);
        const padded = padTo(pos, align);
        writeZeros(fd, padded - pos);
        pos = padded;
      }
      fs.fsyncSync(fd);
      fs.closeSync(fd);
    } catch (err) {
      fs.closeSync(fd);
      fs.rmSync(tmp, { force: true });
      throw err;
    }
    try {
      fs.renameSync(tmp, path);
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      throw err;
    }
    return { fileSize: pos, dataOffset };
  }

  private encodeHeader(align: number): Buffer {
    const sink = new ByteSink(1 << 16);
    sink.raw(Buffer.from(GGUF_MAGIC, 'latin1'));
    sink.u32(GGUF_VERSION);
    sink.u64(this.tensors.length);
    sink.u64(this.entries.size);
    for (const encoded of this.entries.values()) sink.raw(encoded);
    let offset = 0;
    for (const t of this.tensors) {
      sink.string(t.nameBytes);
      sink.u32(t.dims.length);
      for (const d of t.dims) sink.u64(d);
      sink.u32(t.type);
      sink.u64(offset);
      offset = padTo(offset + t.byteSize, align);
    }
    return sink.bytes();
  }
}

let tmpCounter = 0;

function chunksOf(t: PendingTensor): Iterable<Uint8Array> {
  if (t.data instanceof Uint8Array) return [t.data];
  const produced = t.data();
  if (produced instanceof Uint8Array) return [produced];
  if (produced && typeof (produced as Iterable<Uint8Array>)[Symbol.iterator] === 'function') {
    return checkedChunks(t.name, produced);
  }
  throw new TypeError(`tensor "${t.name}": the data provider returned neither a Uint8Array nor an iterable of them`);
}

function* checkedChunks(name: string, chunks: Iterable<Uint8Array>): Iterable<Uint8Array> {
  for (const c of chunks) {
    if (!(c instanceof Uint8Array)) throw new TypeError(`tensor "${name}": a data chunk is not a Uint8Array`);
    yield c;
  }
}

function wrongLength(name: string, expected: number, got: number): RangeError {
  return new RangeError(`tensor "${name}": data is ${got} bytes, the shape and type need exactly ${expected}`);
}

function padTo(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

function writeAll(fd: number, b: Uint8Array): void {
  let off = 0;
  while (off < b.length) off += fs.writeSync(fd, b, off, b.length - off);
}

const ZEROS = Buffer.alloc(1 << 16);

function writeZeros(fd: number, n: number): void {
  while (n > 0) {
    const k = Math.min(n, ZEROS.length);
    writeAll(fd, ZEROS.subarray(0, k));
    n -= k;
  }
}

function utf8(s: string, what: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  // Buffer.from silently turns a lone surrogate into U+FFFD; refuse instead of writing a different string.
  if (b.toString('utf8') !== s) throw new RangeError(`${what} ${JSON.stringify(s)} is not valid Unicode (lone surrogate)`);
  return b;
}

function checkAlignment(value: GGUFValue, meta: GGUFMetadataType): number {
  if (meta.type !== GGUFValueType.UINT32) throw new TypeError(`${ALIGNMENT_KEY} must be a UINT32`);
  const a = value as number;
  if (typeof a !== 'number' || !Number.isInteger(a) || a <= 0 || a > 0xffffffff || (a & (a - 1)) !== 0) {
    throw new RangeError(`${ALIGNMENT_KEY} must be a power of two, got ${String(value)}`);
  }
  return a;
}

// ---------------------------------------------------------------------------------------------------
// Value encoding

const INT_RANGES: Partial<Record<GGUFValueType, readonly [bigint, bigint]>> = {
  [GGUFValueType.UINT8]: [0n, 0xffn],
  [GGUFValueType.INT8]: [-0x80n, 0x7fn],
  [GGUFValueType.UINT16]: [0n, 0xffffn],
  [GGUFValueType.INT16]: [-0x8000n, 0x7fffn],
  [GGUFValueType.UINT32]: [0n, 0xffffffffn],
  [GGUFValueType.INT32]: [-0x80000000n, 0x7fffffffn],
  [GGUFValueType.UINT64]: [0n, (1n << 64n) - 1n],
  [GGUFValueType.INT64]: [-(1n << 63n), (1n << 63n) - 1n],
};

function checkInteger(value: GGUFValue, type: GGUFValueType, where: string): number | bigint {
  const range = INT_RANGES[type] as readonly [bigint, bigint];
  const wide = type === GGUFValueType.UINT64 || type === GGUFValueType.INT64;
  const ok =
    (typeof value === 'number' && Number.isSafeInteger(value)) || (wide && typeof value === 'bigint');
  if (!ok) throw new TypeError(`${where}: ${ggufValueTypeName(type)} value must be an integer, got ${String(value)}`);
  const big = BigInt(value as number | bigint);
  if (big < range[0] || big > range[1]) {
    throw new RangeError(`${where}: ${String(value)} is out of range for ${ggufValueTypeName(type)}`);
  }
  return value as number | bigint;
}

function encodeValue(sink: ByteSink, value: GGUFValue, meta: GGUFMetadataType, where: string, depth: number): void {
  const type = meta.type;
  if (!isKnownValueType(type)) throw new TypeError(`${where}: unknown value type ${type}`);
  switch (type) {
    case GGUFValueType.UINT8:
      sink.u8(checkInteger(value, type, where) as number);
      return;
    case GGUFValueType.INT8:
      sink.u8((checkInteger(value, type, where) as number) & 0xff);
      return;
    case GGUFValueType.UINT16:
      sink.u16(checkInteger(value, type, where) as number);
      return;
    case GGUFValueType.INT16:
      sink.u16((checkInteger(value, type, where) as number) & 0xffff);
      return;
    case GGUFValueType.UINT32:
      sink.u32(checkInteger(value, type, where) as number);
      return;
    case GGUFValueType.INT32:
      sink.u32((checkInteger(value, type, where) as number) >>> 0);
      return;
    case GGUFValueType.UINT64:
      sink.u64(checkInteger(value, type, where));
      return;
    case GGUFValueType.INT64:
      sink.i64(checkInteger(value, type, where));
      return;
    case GGUFValueType.FLOAT32:
    case GGUFValueType.FLOAT64:
      if (typeof value !== 'number') throw new TypeError(`${where}: ${ggufValueTypeName(type)} value must be a number`);
      if (type === GGUFValueType.FLOAT32) sink.f32(value);
      else sink.f64(value);
      return;
    case GGUFValueType.BOOL:
      if (typeof value !== 'boolean') throw new TypeError(`${where}: BOOL value must be a boolean`);
      sink.u8(value ? 1 : 0);
      return;
    case GGUFValueType.STRING:
      if (typeof value !== 'string') throw new TypeError(`${where}: STRING value must be a string`);
      sink.string(utf8(value, `${where}: string`));
      return;
    case GGUFValueType.ARRAY:
      encodeArray(sink, value, meta, where, depth);
      return;
  }
}

function encodeArray(sink: ByteSink, value: GGUFValue, meta: GGUFMetadataType, where: string, depth: number): void {
  if (!Array.isArray(value)) throw new TypeError(`${where}: ARRAY value must be an array`);
  const elemType = meta.arrayType;
  if (elemType === undefined || !isKnownValueType(elemType)) {
    throw new TypeError(`${where}: ARRAY needs a known arrayType, got ${String(elemType)}`);
  }
  if (depth > 4) throw new RangeError(`${where}: arrays nested deeper than 4 levels are not readable`);
  sink.u32(elemType);
  sink.u64(value.length);
  if (elemType === GGUFValueType.ARRAY) {
    const elements = meta.elements;
    if (!elements || elements.length !== value.length) {
      throw new TypeError(`${where}: an array of arrays needs one element type per element (meta.elements)`);
    }
    for (let i = 0; i < value.length; i++) {
      const inner = elements[i];
      if (inner?.type !== GGUFValueType.ARRAY) throw new TypeError(`${where}[${i}]: element type must be ARRAY`);
      // A nested array is encoded like a top-level one minus the value type: element type, count, items.
      encodeArray(sink, value[i], inner, `${where}[${i}]`, depth + 1);
    }
    return;
  }
  const elemMeta: GGUFMetadataType = { type: elemType };
  for (let i = 0; i < value.length; i++) encodeValue(sink, value[i], elemMeta, where, depth);
}

/** Growable little-endian byte buffer. */
class ByteSink {
  private buf: Buffer;
  private len = 0;
  constructor(initial: number) {
    this.buf = Buffer.allocUnsafe(initial);
  }
  /** Reserves n bytes and returns their offset. Callers must read `this.buf` only after calling it (it may reallocate). */
  private room(n: number): number {
    if (this.len + n > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
      this.buf.copy(next, 0, 0, this.len);
      this.buf = next;
    }
    const at = this.len;
    this.len += n;
    return at;
  }
  u8(v: number): void {
    const at = this.room(1);
    this.buf[at] = v;
  }
  u16(v: number): void {
    const at = this.room(2);
    this.buf.writeUInt16LE(v, at);
  }
  u32(v: number): void {
    const at = this.room(4);
    this.buf.writeUInt32LE(v, at);
  }
  u64(v: number | bigint): void {
    const at = this.room(8);
    if (typeof v === 'number') {
      this.buf.writeUInt32LE(v % 4294967296, at);
      this.buf.writeUInt32LE(Math.floor(v / 4294967296), at + 4);
    } else {
      this.buf.writeBigUInt64LE(v, at);
    }
  }
  i64(v: number | bigint): void {
    const at = this.room(8);
    this.buf.writeBigInt64LE(BigInt(v), at);
  }
  f32(v: number): void {
    const at = this.room(4);
    this.buf.writeFloatLE(v, at);
  }
  f64(v: number): void {
    const at = this.room(8);
    this.buf.writeDoubleLE(v, at);
  }
  string(bytes: Buffer): void {
    this.u64(bytes.length);
    this.raw(bytes);
  }
  raw(bytes: Uint8Array): void {
    const at = this.room(bytes.length);
    this.buf.set(bytes, at);
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}
