/**
 * GGUF v2/v3 parser (little-endian). Reads only the header — metadata and tensor infos — and validates
 * every length, count and offset against the file size before trusting it, so a truncated or hostile
 * file produces a ModelFileError naming the problem instead of a crash, a hang or a huge allocation.
 * Tensor data is never read here: a loader maps/reads [absoluteOffset, +byteSize) itself.
 *
 * Decisions worth knowing:
 *  - UINT64 / INT64 metadata values are returned as `number` when they are safe integers and as `bigint`
 *    otherwise; `metadataTypes` keeps the declared type, so a round trip through GGUFWriter is exact.
 *  - Anything that would run past the end of the file (a count, a length, the data section) is
 *    GGUF_TRUNCATED — the file may be cut short, or the count corrupt; the message says which bytes were
 *    expected. A count or length of 2^53 or more can describe no real file and is GGUF_CORRUPT.
 *  - A tensor dimension may be 0 (ggml allows empty tensors: 0 elements, 0 bytes); a u64 dimension
 *    >= 2^63 is negative to ggml and rejected, as is an element count that overflows int64.
 *  - BOOL values: any non-zero byte is true (as ggml reads them).
 */
import * as fs from 'fs';
import { ModelFileError, OptionError, type ErrorCode } from '../errors';
import {
  GGML_MAX_DIMS,
  GGUFValueType,
  checkTensorShape,
  ggmlTypeInfo,
  ggmlTypeName,
  ggufValueTypeName,
  isIntegerValueType,
  isKnownValueType,
  scalarValueSize,
} from './types';

// ---------------------------------------------------------------------------------------------------
// Public shapes

/** A metadata value. Integers are numbers, except 64-bit ones outside ±(2^53-1), which are bigints. */
export type GGUFValue = number | bigint | boolean | string | GGUFValue[];

/** Declared type of a metadata value. For an array of arrays, `elements[i]` is the type of element i. */
export interface GGUFMetadataType {
  type: GGUFValueType;
  arrayType?: GGUFValueType;
  elements?: GGUFMetadataType[];
}

export interface GGUFTensorInfo {
  name: string;
  /** ne order: dims[0] is the innermost (row length). */
  dims: number[];
  type: number;
  typeName: string;
  /** Offset of the tensor's data relative to the data section. */
  offset: number;
  /** Offset of the tensor's data in the file (dataOffset + offset). */
  absoluteOffset: number;
  byteSize: number;
  nElements: number;
}

export interface GGUFFile {
  path: string;
  version: number;
  fileSize: number;
  alignment: number;
  /** Start of the data section: end of the tensor infos rounded up to `alignment`. */
  dataOffset: number;
  metadata: Map<string, GGUFValue>;
  metadataTypes: Map<string, GGUFMetadataType>;
  /** In file order. */
  tensors: GGUFTensorInfo[];
  tensorsByName: Map<string, GGUFTensorInfo>;
}

export interface GGUFReadOptions {
  /** Longest metadata array accepted (default 16,777,216 elements; a 256k vocabulary is far below). */
  maxArrayLength?: number;
  /** Longest string accepted, in bytes (default 16 MiB; chat templates are a few KB). */
  maxStringLength?: number;
  /** Bytes read from disk at a time by readGGUF (default 1 MiB). Small values exist for tests. */
  chunkSize?: number;
}

export const GGUF_MAGIC = 'GGUF';
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** An array inside an array inside … at most this deep. */
export const GGUF_MAX_ARRAY_DEPTH = 4;
export const GGUF_SUPPORTED_VERSIONS: readonly number[] = [2, 3];

const DEFAULT_MAX_ARRAY_LENGTH = 1 << 24;
const DEFAULT_MAX_STRING_LENGTH = 1 << 24;
const DEFAULT_CHUNK_SIZE = 1 << 20;

// Smallest possible encodings, used to reject a count before looping over it.
const MIN_KV_BYTES = 8 + 4 + 1; // key length, value type, 1-byte value
const MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8; // name length, n_dims, type, offset
const MIN_ARRAY_BYTES = 4 + 8; // element type, count
const MIN_STRING_BYTES = 8; // length

const TWO_32 = 4294967296;
const SAFE_HI = 0x200000; // high word below this → the u64 is < 2^53

// ---------------------------------------------------------------------------------------------------
// Entry points

/** Parses the header of the GGUF file at `path`, reading it in chunks (the tensor data is not read). */
export function readGGUF(path: string, options: GGUFReadOptions = {}): GGUFFile {
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (err) {
    throw openError(path, err);
  }
  try {
    let stat: fs.Stats;
    try {
      stat = fs.fstatSync(fd);
    } catch (err) {
      throw new ModelFileError('FILE_READ', path, `cannot stat: ${errText(err)}`, { cause: err });
    }
    if (stat.isDirectory()) throw new ModelFileError('FILE_READ', path, 'is a directory, not a GGUF file');
    if (!stat.isFile()) throw new ModelFileError('FILE_READ', path, 'is not a regular file');
    const chunkSize = positiveInt(options.chunkSize, DEFAULT_CHUNK_SIZE, 'chunkSize');
    const source = new FileWindowSource(fd, path, stat.size, chunkSize);
    const cursor = new Cursor(path, stat.size, source, EMPTY, 0);
    return parseHeader(cursor, options);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Parses a GGUF header from memory. `bytes` holds the start of the file — at least the whole header —
 * and `fileSize` is the size of the whole file (tensor placement is checked against it).
 */
export function parseGGUF(bytes: Uint8Array, fileSize: number, path: string, options: GGUFReadOptions = {}): GGUFFile {
  if (!Number.isSafeInteger(fileSize) || fileSize < bytes.length) {
    throw new OptionError('fileSize', `${fileSize} is not an integer >= the ${bytes.length} bytes given (${path})`);
  }
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const source: WindowSource = {
    fill(position: number, minBytes: number) {
      throw new ModelFileError(
        'FILE_READ',
        path,
        `the header continues past the ${bytes.length} bytes given to parseGGUF ` +
          `(needed ${minBytes} bytes at offset ${position} of a ${fileSize}-byte file)`,
      );
    },
  };
  return parseHeader(new Cursor(path, fileSize, source, buf, buf.length), options);
}

// ---------------------------------------------------------------------------------------------------
// Byte access

const EMPTY = Buffer.alloc(0);

interface WindowSource {
  /** Returns a buffer holding file bytes [position, position + length), length >= minBytes. */
  fill(position: number, minBytes: number): { buf: Buffer; length: number };
}

/** Reads the file a chunk at a time, growing the chunk only when one item (a long string) needs it. */
class FileWindowSource implements WindowSource {
  private scratch: Buffer = EMPTY;
  constructor(
    private readonly fd: number,
    private readonly path: string,
    private readonly fileSize: number,
    private readonly chunkSize: number,
  ) {}

  fill(position: number, minBytes: number): { buf: Buffer; length: number } {
    // The cursor has already checked position + minBytes <= fileSize, so this allocation is bounded by the file.
    const want = Math.min(Math.max(minBytes, this.chunkSize), this.fileSize - position);
    if (this.scratch.length < want) this.scratch = Buffer.allocUnsafe(Math.max(want, this.chunkSize));
    let got = 0;
    while (got < want) {
      let n: number;
      try {
        n = fs.readSync(this.fd, this.scratch, got, want - got, position + got);
      } catch (err) {
        throw new ModelFileError('FILE_READ', this.path, `read failed at offset ${position + got}: ${errText(err)}`, {
          cause: err,
        });
      }
      if (n === 0) break;
      got += n;
    }
    if (got < minBytes) {
      throw new ModelFileError(
        'GGUF_TRUNCATED',
        this.path,
        `file ended at offset ${position + got} while reading (it shrank while being read; expected ${this.fileSize} bytes)`,
      );
    }
    return { buf: this.scratch, length: got };
  }
}

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Strict UTF-8 decode; undefined if the bytes are not valid UTF-8. ASCII (nearly every token) skips the decoder. */
function decodeUtf8(buf: Buffer, start: number, end: number): string | undefined {
  for (let i = start; i < end; i++) {
    if (buf[i] > 0x7f) {
      try {
        return fatalUtf8.decode(buf.subarray(start, end));
      } catch {
        return undefined;
      }
    }
  }
  return buf.toString('latin1', start, end);
}

/**
 * Position in the file plus a window of its bytes. Every read goes through take(), which checks the
 * file size first, so no read ever trusts a length it has not compared with the bytes that exist.
 * `subject` and `element` describe what is being parsed, for error messages only.
 */
class Cursor {
  pos = 0;
  subject = 'the GGUF header';
  element = -1;
  private bufStart = 0;

  constructor(
    readonly path: string,
    readonly fileSize: number,
    private readonly source: WindowSource,
    public buf: Buffer,
    private bufEnd: number,
  ) {}

  get remaining(): number {
    return this.fileSize - this.pos;
  }

  /**
   * Reserves n bytes at the current position; returns their index in `buf`. It may replace `buf`, so
   * callers read `this.buf` only after it returns (never `this.buf.readX(this.take(...))`, which would
   * evaluate the old buffer first).
   */
  take(n: number, what: string): number {
    if (this.pos + n > this.bufEnd) this.refill(n, what);
    const i = this.pos - this.bufStart;
    this.pos += n;
    return i;
  }

  private refill(n: number, what: string): void {
    if (this.pos + n > this.fileSize) throw this.truncated(n, what);
    const { buf, length } = this.source.fill(this.pos, n);
    this.buf = buf;
    this.bufStart = this.pos;
    this.bufEnd = this.pos + length;
  }

  u8(what: string): number {
    const i = this.take(1, what);
    return this.buf[i];
  }
  i8(what: string): number {
    const i = this.take(1, what);
    return this.buf.readInt8(i);
  }
  u16(what: string): number {
    const i = this.take(2, what);
    return this.buf.readUInt16LE(i);
  }
  i16(what: string): number {
    const i = this.take(2, what);
    return this.buf.readInt16LE(i);
  }
  u32(what: string): number {
    const i = this.take(4, what);
    return this.buf.readUInt32LE(i);
  }
  i32(what: string): number {
    const i = this.take(4, what);
    return this.buf.readInt32LE(i);
  }
  f32(what: string): number {
    const i = this.take(4, what);
    return this.buf.readFloatLE(i);
  }
  f64(what: string): number {
    const i = this.take(8, what);
    return this.buf.readDoubleLE(i);
  }
  /** Unsigned 64-bit: a number when below 2^53, else a bigint. */
  u64(what: string): number | bigint {
    const i = this.take(8, what);
    const hi = this.buf.readUInt32LE(i + 4);
    return hi < SAFE_HI ? hi * TWO_32 + this.buf.readUInt32LE(i) : this.buf.readBigUInt64LE(i);
  }
  /** Signed 64-bit: a number when within ±(2^53-1), else a bigint. */
  i64(what: string): number | bigint {
    const i = this.take(8, what);
    const hi = this.buf.readInt32LE(i + 4);
    if (hi >= -SAFE_HI && hi < SAFE_HI) {
      const v = hi * TWO_32 + this.buf.readUInt32LE(i);
      if (Number.isSafeInteger(v)) return v;
    }
    return this.buf.readBigInt64LE(i);
  }

  /**
   * A u64 count or byte length that will drive a loop or an allocation: it must be below 2^53 and the
   * file must have at least `count * minBytesEach` bytes left.
   */
  count(what: string, minBytesEach: number): number {
    const at = this.pos;
    const v = this.u64(what);
    if (typeof v === 'bigint') {
      throw this.error('GGUF_CORRUPT', `${what} ${v} at offset ${at} is impossibly large`);
    }
    const needed = v * minBytesEach;
    if (needed > this.remaining) {
      throw this.error(
        'GGUF_TRUNCATED',
        `${what} ${v} at offset ${at} needs at least ${needed} more bytes, but the file (${this.fileSize} bytes) ` +
          `has only ${this.remaining} after offset ${this.pos}: truncated, or the count is corrupt`,
      );
    }
    return v;
  }

  /** A length-prefixed string's bytes, decoded; undefined if they are not valid UTF-8. */
  rawString(what: string, maxLength: number): string | undefined {
    const len = this.count(`${what} length`, 1);
    if (len > maxLength) {
      throw this.error('GGUF_CORRUPT', `${what} is ${len} bytes long, above the ${maxLength}-byte limit (maxStringLength)`);
    }
    const i = this.take(len, what);
    return decodeUtf8(this.buf, i, i + len);
  }

  where(): string {
    return this.element >= 0 ? `${this.subject}, element ${this.element}` : this.subject;
  }

  error(code: ErrorCode, message: string): ModelFileError {
    return new ModelFileError(code, this.path, `${this.where()}: ${message}`);
  }

  truncated(n: number, what: string): ModelFileError {
    return new ModelFileError(
      'GGUF_TRUNCATED',
      this.path,
      `truncated: ${this.where()}: needed ${n} bytes at offset ${this.pos} for the ${what}, ` +
        `but the file ends at offset ${this.fileSize}`,
    );
  }
}

// ---------------------------------------------------------------------------------------------------
// Header

function parseHeader(c: Cursor, options: GGUFReadOptions): GGUFFile {
  const limits = {
    maxArrayLength: positiveInt(options.maxArrayLength, DEFAULT_MAX_ARRAY_LENGTH, 'maxArrayLength'),
    maxStringLength: positiveInt(options.maxStringLength, DEFAULT_MAX_STRING_LENGTH, 'maxStringLength'),
  };
  checkMagic(c);
  const version = c.u32('version');
  checkVersion(c, version);

  const tensorCount = c.count('tensor count', MIN_TENSOR_INFO_BYTES);
  const kvCount = c.count('metadata entry count', MIN_KV_BYTES);
  if (tensorCount * MIN_TENSOR_INFO_BYTES + kvCount * MIN_KV_BYTES > c.remaining) {
    throw c.error(
      'GGUF_TRUNCATED',
      `${kvCount} metadata entries and ${tensorCount} tensor infos need at least ` +
        `${tensorCount * MIN_TENSOR_INFO_BYTES + kvCount * MIN_KV_BYTES} bytes, but only ${c.remaining} remain ` +
        `after offset ${c.pos}: truncated, or a count is corrupt`,
    );
  }

  const { metadata, metadataTypes } = readMetadata(c, kvCount, limits);
  const alignment = resolveAlignment(c, metadata, metadataTypes);
  const tensors = readTensorInfos(c, tensorCount, limits.maxStringLength);
  const headerEnd = c.pos;
  const dataOffset = Math.ceil(headerEnd / alignment) * alignment;

  const file: GGUFFile = {
    path: c.path,
    version,
    fileSize: c.fileSize,
    alignment,
    dataOffset,
    metadata,
    metadataTypes,
    tensors: [],
    tensorsByName: new Map(),
  };
  placeTensors(c, file, tensors, headerEnd);
  return file;
}

function checkMagic(c: Cursor): void {
  if (c.fileSize === 0) throw new ModelFileError('GGUF_TRUNCATED', c.path, 'the file is empty (0 bytes), not a GGUF file');
  const n = Math.min(4, c.fileSize);
  const i = c.take(n, 'magic');
  const found = c.buf.subarray(i, i + n);
  if (!found.equals(Buffer.from(GGUF_MAGIC, 'latin1').subarray(0, n))) {
    throw new ModelFileError('GGUF_BAD_MAGIC', c.path, `not a GGUF file: ${describeMagic(found)}`);
  }
  if (n < 4) throw new ModelFileError('GGUF_TRUNCATED', c.path, `truncated: the file is only ${c.fileSize} bytes long`);
}

function describeMagic(found: Buffer): string {
  const hex = [...found].map((b) => b.toString(16).padStart(2, '0')).join(' ');
  const base = `it starts with bytes ${hex}, expected 47 47 55 46 ("GGUF")`;
  const text = found.toString('latin1');
  // Pre-GGUF llama.cpp formats wrote their magic as a little-endian u32, hence the reversed letters.
  if (text === 'lmgg' || text === 'fmgg' || text === 'tjgg') {
    return `${base} — this is a legacy GGML/GGMF/GGJT model; convert it to GGUF with llama.cpp`;
  }
  return base;
}

function checkVersion(c: Cursor, version: number): void {
  if (GGUF_SUPPORTED_VERSIONS.includes(version)) return;
  let why: string;
  if (version === 1) {
    why = 'GGUF version 1 (32-bit counts) is not supported; re-convert the model with a current llama.cpp';
  } else if (version !== 0 && (version & 0xffff) === 0 && GGUF_SUPPORTED_VERSIONS.includes(byteSwap32(version))) {
    why = `this is a big-endian GGUF file (version ${byteSwap32(version)} stored big-endian); only little-endian files are supported`;
  } else {
    why = `GGUF version ${version} is not supported (this reader supports versions ${GGUF_SUPPORTED_VERSIONS.join(' and ')})`;
  }
  throw new ModelFileError('GGUF_UNSUPPORTED_VERSION', c.path, why);
}

function byteSwap32(v: number): number {
  return (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0;
}

// ---------------------------------------------------------------------------------------------------
// Metadata

interface Limits {
  maxArrayLength: number;
  maxStringLength: number;
}

function readMetadata(c: Cursor, kvCount: number, limits: Limits) {
  const metadata = new Map<string, GGUFValue>();
  const metadataTypes = new Map<string, GGUFMetadataType>();
  for (let k = 0; k < kvCount; k++) {
    c.subject = `metadata entry ${k} of ${kvCount}`;
    c.element = -1;
    const keyAt = c.pos;
    const key = c.rawString('key', limits.maxStringLength);
    if (key === undefined) throw c.error('GGUF_CORRUPT', `the key at offset ${keyAt} is not valid UTF-8`);
    if (metadata.has(key)) throw c.error('GGUF_CORRUPT', `duplicate metadata key "${key}" at offset ${keyAt}`);
    c.subject = `metadata key "${key}"`;
    const typeAt = c.pos;
    const type = c.u32('value type');
    if (!isKnownValueType(type)) {
      throw c.error('GGUF_CORRUPT', `unknown metadata value type ${type} at offset ${typeAt}`);
    }
    if (type === GGUFValueType.ARRAY) {
      const { value, meta } = readArray(c, 1, limits);
      metadata.set(key, value);
      metadataTypes.set(key, meta);
    } else {
      metadata.set(key, readScalar(c, type, limits));
      metadataTypes.set(key, { type });
    }
  }
  c.element = -1;
  return { metadata, metadataTypes };
}

function readScalar(c: Cursor, type: GGUFValueType, limits: Limits): GGUFValue {
  switch (type) {
    case GGUFValueType.UINT8:
      return c.u8('UINT8 value');
    case GGUFValueType.INT8:
      return c.i8('INT8 value');
    case GGUFValueType.UINT16:
      return c.u16('UINT16 value');
    case GGUFValueType.INT16:
      return c.i16('INT16 value');
    case GGUFValueType.UINT32:
      return c.u32('UINT32 value');
    case GGUFValueType.INT32:
      return c.i32('INT32 value');
    case GGUFValueType.FLOAT32:
      return c.f32('FLOAT32 value');
    case GGUFValueType.BOOL:
      return c.u8('BOOL value') !== 0;
    case GGUFValueType.UINT64:
      return c.u64('UINT64 value');
    case GGUFValueType.INT64:
      return c.i64('INT64 value');
    case GGUFValueType.FLOAT64:
      return c.f64('FLOAT64 value');
    case GGUFValueType.STRING: {
      const at = c.pos;
      const s = c.rawString('string', limits.maxStringLength);
      if (s === undefined) throw c.error('GGUF_CORRUPT', `the string at offset ${at} is not valid UTF-8`);
      return s;
    }
    default:
      // ARRAY is handled by readArray; unknown types were rejected by the caller.
      throw c.error('GGUF_CORRUPT', `unexpected value type ${ggufValueTypeName(type)}`);
  }
}

/** Reads an array value (element type, count, elements); `depth` is 1 for a top-level array. */
function readArray(c: Cursor, depth: number, limits: Limits): { value: GGUFValue[]; meta: GGUFMetadataType } {
  if (depth > GGUF_MAX_ARRAY_DEPTH) {
    throw c.error('GGUF_CORRUPT', `arrays nested deeper than ${GGUF_MAX_ARRAY_DEPTH} levels at offset ${c.pos}`);
  }
  const typeAt = c.pos;
  const elemType = c.u32('array element type');
  if (!isKnownValueType(elemType)) {
    throw c.error('GGUF_CORRUPT', `unknown array element type ${elemType} at offset ${typeAt}`);
  }
  const minBytes =
    elemType === GGUFValueType.STRING
      ? MIN_STRING_BYTES
      : elemType === GGUFValueType.ARRAY
        ? MIN_ARRAY_BYTES
        : (scalarValueSize(elemType) as number);
  const count = c.count(`array length (${ggufValueTypeName(elemType)} elements)`, minBytes);
  if (count > limits.maxArrayLength) {
    throw c.error(
      'GGUF_CORRUPT',
      `array of ${count} elements is above the ${limits.maxArrayLength}-element limit (maxArrayLength)`,
    );
  }
  const meta: GGUFMetadataType = { type: GGUFValueType.ARRAY, arrayType: elemType };
  const value: GGUFValue[] = [];
  const trackElement = depth === 1; // error messages name the top-level element index
  if (elemType === GGUFValueType.ARRAY) {
    meta.elements = [];
    for (let i = 0; i < count; i++) {
      if (trackElement) c.element = i;
      const inner = readArray(c, depth + 1, limits);
      value.push(inner.value);
      meta.elements.push(inner.meta);
    }
  } else if (elemType === GGUFValueType.STRING) {
    for (let i = 0; i < count; i++) {
      if (trackElement) c.element = i;
      const at = c.pos;
      const s = c.rawString('string', limits.maxStringLength);
      if (s === undefined) throw c.error('GGUF_CORRUPT', `the string at offset ${at} is not valid UTF-8`);
      value.push(s);
    }
  } else {
    for (let i = 0; i < count; i++) {
      if (trackElement) c.element = i;
      value.push(readScalar(c, elemType, limits));
    }
  }
  if (trackElement) c.element = -1;
  return { value, meta };
}

function resolveAlignment(
  c: Cursor,
  metadata: Map<string, GGUFValue>,
  types: Map<string, GGUFMetadataType>,
): number {
  c.subject = 'metadata key "general.alignment"';
  const type = types.get('general.alignment');
  if (!type) return GGUF_DEFAULT_ALIGNMENT;
  // ggml reads it with gguf_get_val_u32, so any other type is a malformed file.
  if (type.type !== GGUFValueType.UINT32) {
    throw c.error('GGUF_CORRUPT', `must be a UINT32, found ${describeType(type)}`);
  }
  const a = metadata.get('general.alignment') as number;
  if (a === 0 || (a & (a - 1)) !== 0) throw c.error('GGUF_CORRUPT', `alignment ${a} is not a power of two`);
  return a;
}

// ---------------------------------------------------------------------------------------------------
// Tensor infos

interface RawTensorInfo {
  name: string;
  dims: number[];
  type: number;
  offset: number | bigint;
  byteSize: number;
  nElements: number;
}

function readTensorInfos(c: Cursor, tensorCount: number, maxStringLength: number): RawTensorInfo[] {
  const out: RawTensorInfo[] = [];
  const seen = new Set<string>();
  for (let t = 0; t < tensorCount; t++) {
    c.subject = `tensor info ${t} of ${tensorCount}`;
    const nameAt = c.pos;
    const name = c.rawString('name', maxStringLength);
    if (name === undefined) throw c.error('GGUF_CORRUPT', `the tensor name at offset ${nameAt} is not valid UTF-8`);
    if (seen.has(name)) throw c.error('GGUF_CORRUPT', `duplicate tensor name "${name}" at offset ${nameAt}`);
    seen.add(name);
    c.subject = `tensor "${name}"`;

    const nDims = c.u32('dimension count');
    if (nDims > GGML_MAX_DIMS) {
      throw c.error('GGUF_CORRUPT', `has ${nDims} dimensions (ggml allows at most ${GGML_MAX_DIMS})`);
    }
    const rawDims: Array<number | bigint> = [];
    for (let d = 0; d < nDims; d++) rawDims.push(c.u64(`dimension ${d}`));
    const typeAt = c.pos;
    const type = c.u32('type');
    if (!ggmlTypeInfo(type)) {
      throw c.error(
        'UNSUPPORTED_TENSOR_TYPE',
        `has tensor type id ${type} (${ggmlTypeName(type)}) at offset ${typeAt}, which is not a known ggml type`,
      );
    }
    const offset = c.u64('data offset');
    const size = checkTensorShape(type, rawDims);
    if (typeof size === 'string') {
      throw c.error('GGUF_CORRUPT', `invalid shape [${rawDims.join(', ')}] of type ${ggmlTypeName(type)}: ${size}`);
    }
    out.push({ name, dims: rawDims.map(Number), type, offset, byteSize: size.bytes, nElements: size.elements });
  }
  c.element = -1;
  return out;
}

/** Checks each tensor's data lies inside the file, aligned and not overlapping another's. */
function placeTensors(c: Cursor, file: GGUFFile, raw: RawTensorInfo[], headerEnd: number): void {
  const { dataOffset, alignment, fileSize } = file;
  if (raw.length > 0 && dataOffset > fileSize) {
    throw new ModelFileError(
      'GGUF_TRUNCATED',
      c.path,
      `truncated: the data section starts at offset ${dataOffset} (header end ${headerEnd} aligned to ${alignment}), ` +
        `past the end of the ${fileSize}-byte file`,
    );
  }
  for (const r of raw) {
    const where = `tensor "${r.name}" (${ggmlTypeName(r.type)} [${r.dims.join(', ')}], ${r.byteSize} bytes)`;
    if (typeof r.offset === 'bigint' || dataOffset + r.offset + r.byteSize > fileSize) {
      throw new ModelFileError(
        'TENSOR_OUT_OF_BOUNDS',
        c.path,
        `${where}: data at offset ${r.offset} in the data section (file offset ${BigInt(dataOffset) + BigInt(r.offset)}` +
          `..${BigInt(dataOffset) + BigInt(r.offset) + BigInt(r.byteSize)}) extends past the end of the ${fileSize}-byte file`,
      );
    }
    if (r.offset % alignment !== 0) {
      throw new ModelFileError(
        'GGUF_CORRUPT',
        c.path,
        `${where}: data offset ${r.offset} is not a multiple of the alignment ${alignment}`,
      );
    }
    const info: GGUFTensorInfo = {
      name: r.name,
      dims: r.dims,
      type: r.type,
      typeName: ggmlTypeName(r.type),
      offset: r.offset,
      absoluteOffset: dataOffset + r.offset,
      byteSize: r.byteSize,
      nElements: r.nElements,
    };
    file.tensors.push(info);
    file.tensorsByName.set(info.name, info);
  }
  const byStart = file.tensors.filter((t) => t.byteSize > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byStart.length; i++) {
    const prev = byStart[i - 1];
    const cur = byStart[i];
    if (cur.offset < prev.offset + prev.byteSize) {
      throw new ModelFileError(
        'GGUF_CORRUPT',
        c.path,
        `tensor "${cur.name}" data [${cur.offset}, ${cur.offset + cur.byteSize}) overlaps tensor "${prev.name}" ` +
          `data [${prev.offset}, ${prev.offset + prev.byteSize}) (offsets relative to the data section)`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Small helpers

function positiveInt(v: number | undefined, fallback: number, name: string): number {
  if (v === undefined) return fallback;
  if (!Number.isSafeInteger(v) || v <= 0) throw new OptionError(name, `must be a positive integer, got ${v}`);
  return v;
}

function openError(path: string, err: unknown): ModelFileError {
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return new ModelFileError('FILE_NOT_FOUND', path, 'no such file', { cause: err });
  if (code === 'ENOTDIR') return new ModelFileError('FILE_NOT_FOUND', path, 'a parent of this path is not a directory', { cause: err });
  return new ModelFileError('FILE_READ', path, `cannot open: ${errText(err)}`, { cause: err });
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** "UINT32", "ARRAY of STRING", "ARRAY of ARRAY". */
export function describeType(t: GGUFMetadataType): string {
  return t.type === GGUFValueType.ARRAY
    ? `ARRAY of ${ggufValueTypeName(t.arrayType ?? -1)}`
    : ggufValueTypeName(t.type);
}

// ---------------------------------------------------------------------------------------------------
// Typed metadata getters. A missing key is MISSING_METADATA when required (undefined otherwise);
// a key present with the wrong type or an out-of-range value is GGUF_CORRUPT, required or not.

export interface GetOptions {
  required?: boolean;
}
type RequiredOption = { required: true };

function lookup<T>(
  file: GGUFFile,
  key: string,
  options: GetOptions | undefined,
  expected: string,
  convert: (value: GGUFValue, type: GGUFMetadataType) => T | undefined,
): T | undefined {
  const type = file.metadataTypes.get(key);
  if (!type) {
    if (options?.required) {
      throw new ModelFileError('MISSING_METADATA', file.path, `required metadata key "${key}" is missing`);
    }
    return undefined;
  }
  const value = file.metadata.get(key) as GGUFValue;
  const out = convert(value, type);
  if (out === undefined) {
    throw new ModelFileError(
      'GGUF_CORRUPT',
      file.path,
      `metadata key "${key}" should be ${expected}, but it is ${describeType(type)} ${previewValue(value)}`,
    );
  }
  return out;
}

function previewValue(v: GGUFValue): string {
  if (Array.isArray(v)) return `(${v.length} elements)`;
  const s = typeof v === 'string' ? JSON.stringify(v) : String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function isNumericType(t: number): boolean {
  return isIntegerValueType(t) || t === GGUFValueType.FLOAT32 || t === GGUFValueType.FLOAT64;
}

/** The raw value of a key, whatever its type. */
export function getValue(file: GGUFFile, key: string, options: RequiredOption): GGUFValue;
export function getValue(file: GGUFFile, key: string, options?: GetOptions): GGUFValue | undefined;
export function getValue(file: GGUFFile, key: string, options?: GetOptions): GGUFValue | undefined {
  return lookup(file, key, options, 'any value', (v) => v);
}

export function getString(file: GGUFFile, key: string, options: RequiredOption): string;
export function getString(file: GGUFFile, key: string, options?: GetOptions): string | undefined;
export function getString(file: GGUFFile, key: string, options?: GetOptions): string | undefined {
  return lookup(file, key, options, 'a STRING', (v, t) => (t.type === GGUFValueType.STRING ? (v as string) : undefined));
}

export function getBool(file: GGUFFile, key: string, options: RequiredOption): boolean;
export function getBool(file: GGUFFile, key: string, options?: GetOptions): boolean | undefined;
export function getBool(file: GGUFFile, key: string, options?: GetOptions): boolean | undefined {
  return lookup(file, key, options, 'a BOOL', (v, t) => (t.type === GGUFValueType.BOOL ? (v as boolean) : undefined));
}

/** Any integer or float type, as a JS number (a 64-bit integer beyond 2^53 is rejected). */
export function getNumber(file: GGUFFile, key: string, options: RequiredOption): number;
export function getNumber(file: GGUFFile, key: string, options?: GetOptions): number | undefined;
export function getNumber(file: GGUFFile, key: string, options?: GetOptions): number | undefined {
  return lookup(file, key, options, 'a number', (v, t) =>
    isNumericType(t.type) && typeof v === 'number' ? v : undefined,
  );
}

/** Any integer type holding a safe integer (signed). */
export function getInteger(file: GGUFFile, key: string, options: RequiredOption): number;
export function getInteger(file: GGUFFile, key: string, options?: GetOptions): number | undefined;
export function getInteger(file: GGUFFile, key: string, options?: GetOptions): number | undefined {
  return lookup(file, key, options, 'an integer', (v, t) =>
    isIntegerValueType(t.type) && typeof v === 'number' ? v : undefined,
  );
}

/** Any integer type holding a value in 0..2^32-1 (files disagree on UINT32 vs INT32 for counts). */
export function getU32(file: GGUFFile, key: string, options: RequiredOption): number;
export function getU32(file: GGUFFile, key: string, options?: GetOptions): number | undefined;
export function getU32(file: GGUFFile, key: string, options?: GetOptions): number | undefined {
  return lookup(file, key, options, 'an integer in 0..4294967295', (v, t) =>
    isIntegerValueType(t.type) && typeof v === 'number' && v >= 0 && v <= 0xffffffff ? v : undefined,
  );
}

/** An array; with `elementType`, its elements must have that declared type. */
export function getArray(file: GGUFFile, key: string, options: RequiredOption & { elementType?: GGUFValueType }): GGUFValue[];
export function getArray(
  file: GGUFFile,
  key: string,
  options?: GetOptions & { elementType?: GGUFValueType },
): GGUFValue[] | undefined;
export function getArray(
  file: GGUFFile,
  key: string,
  options?: GetOptions & { elementType?: GGUFValueType },
): GGUFValue[] | undefined {
  const want = options?.elementType;
  const expected = want === undefined ? 'an ARRAY' : `an ARRAY of ${ggufValueTypeName(want)}`;
  return lookup(file, key, options, expected, (v, t) =>
    t.type === GGUFValueType.ARRAY && (want === undefined || t.arrayType === want) ? (v as GGUFValue[]) : undefined,
  );
}

export function getStringArray(file: GGUFFile, key: string, options: RequiredOption): string[];
export function getStringArray(file: GGUFFile, key: string, options?: GetOptions): string[] | undefined;
export function getStringArray(file: GGUFFile, key: string, options?: GetOptions): string[] | undefined {
  return lookup(file, key, options, 'an ARRAY of STRING', (v, t) =>
    t.type === GGUFValueType.ARRAY && t.arrayType === GGUFValueType.STRING ? (v as string[]) : undefined,
  );
}

/** An array of any numeric element type, as JS numbers (64-bit elements beyond 2^53 are rejected). */
export function getNumberArray(file: GGUFFile, key: string, options: RequiredOption): number[];
export function getNumberArray(file: GGUFFile, key: string, options?: GetOptions): number[] | undefined;
export function getNumberArray(file: GGUFFile, key: string, options?: GetOptions): number[] | undefined {
  return lookup(file, key, options, 'an ARRAY of numbers', (v, t) => {
    if (t.type !== GGUFValueType.ARRAY || t.arrayType === undefined || !isNumericType(t.arrayType)) return undefined;
    const arr = v as GGUFValue[];
    for (const x of arr) if (typeof x !== 'number') return undefined;
    return arr as number[];
  });
}
