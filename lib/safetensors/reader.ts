/**
 * safetensors reader (Hugging Face's checkpoint format), pure TypeScript like lib/gguf/reader.ts: it reads
 * only the header and checks it against the file size before trusting anything; tensor data is never read
 * here (the native Model maps the files and reads the weights in place, zero-copy).
 *
 * Layout of a file:
 *   u64 LE  N                      header length
 *   N bytes JSON (UTF-8)           { "<name>": { "dtype", "shape": [..], "data_offsets": [begin, end] }, ...,
 *                                    "__metadata__"?: { "<key>": "<string>" } }  (may end with spaces)
 *   data                           the byte buffer; data_offsets are relative to its start (8 + N)
 *
 * Checks (each failure a ModelFileError naming the file and the tensor):
 *  - N <= file size - 8 (BAD_SAFETENSORS), and N <= 100 MB (the Rust implementation's limit);
 *  - the header is valid UTF-8 JSON: an object of tensor entries plus an optional string→string __metadata__;
 *  - dtype is a safetensors dtype (unknown: BAD_SAFETENSORS); shape is a list of non-negative safe integers;
 *  - data_offsets are [begin, end] with 0 <= begin <= end, end inside the data section (TENSOR_OUT_OF_BOUNDS),
 *    and end - begin == numel x dtype size (BAD_SAFETENSORS);
 *  - no two tensors' bytes overlap (BAD_SAFETENSORS). Gaps and trailing bytes are tolerated.
 * Whether a dtype can be *used* (F32, F16, BF16) is the loader's question (supportedDType / UNSUPPORTED_TENSOR_TYPE),
 * so a checkpoint holding an extra I64 buffer (some do) still parses.
 *
 * Sharded checkpoints: `model.safetensors.index.json` ({ "metadata"?, "weight_map": { name: shard file } });
 * readCheckpoint() reads every shard's header and checks the index against them (MISSING_SHARD for a shard
 * file that is absent, MISSING_TENSOR for a tensor the index places in a shard that lacks it).
 */
import * as fs from 'fs';
import * as path from 'path';
import { ModelFileError } from '../errors';
import { GGMLType } from '../gguf/types';

/** Every dtype the safetensors format defines, with its element size in bytes. */
export const SAFETENSORS_DTYPES: Readonly<Record<string, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
};

/** The dtypes the kernels read in place, with their ggml type. */
const SUPPORTED: Readonly<Record<string, GGMLType>> = {
  F32: GGMLType.F32,
  F16: GGMLType.F16,
  BF16: GGMLType.BF16,
};

/** The largest header accepted (the reference Rust implementation's MAX_HEADER_SIZE). */
export const SAFETENSORS_MAX_HEADER = 100_000_000;

export interface SafetensorsTensorInfo {
  name: string;
  dtype: string;
  /** Row-major (torch) order: shape[last] is the row length. */
  shape: number[];
  /** Offsets relative to the data section. */
  begin: number;
  end: number;
  /** Offset of the tensor's data in the file (dataOffset + begin). */
  absoluteOffset: number;
  byteSize: number;
  nElements: number;
}

export interface SafetensorsFile {
  path: string;
  fileSize: number;
  /** N, the JSON header's length. */
  headerLength: number;
  /** Start of the data section: 8 + N. */
  dataOffset: number;
  /** `__metadata__` (string → string), empty when absent. */
  metadata: Map<string, string>;
  /** In header order. */
  tensors: SafetensorsTensorInfo[];
  tensorsByName: Map<string, SafetensorsTensorInfo>;
}

/** Is `dtype` readable in place by the kernels (F32, F16, BF16)? */
export function supportedDType(dtype: string): boolean {
  return Object.prototype.hasOwnProperty.call(SUPPORTED, dtype);
}

/** The ggml type of a supported dtype; UNSUPPORTED_TENSOR_TYPE naming the tensor otherwise. */
export function ggmlTypeOfDType(file: string, t: Pick<SafetensorsTensorInfo, 'name' | 'dtype'>): GGMLType {
  if (!supportedDType(t.dtype)) {
    throw new ModelFileError(
      'UNSUPPORTED_TENSOR_TYPE',
      file,
      `tensor "${t.name}" has dtype ${t.dtype}, which is not supported (supported: ${Object.keys(SUPPORTED).join(', ')})`,
    );
  }
  return SUPPORTED[t.dtype];
}

/** Reads and checks the header of the safetensors file at `file` (the tensor data is not read). */
export function readSafetensors(file: string): SafetensorsFile {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException)?.code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new ModelFileError('FILE_NOT_FOUND', file, 'no such file', { cause: err });
    throw new ModelFileError('FILE_READ', file, `cannot open: ${errText(err)}`, { cause: err });
  }
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) throw new ModelFileError('FILE_READ', file, 'is not a regular file');
    const fileSize = stat.size;
    if (fileSize < 8) {
      throw bad(file, `the file has ${fileSize} bytes: too short for the 8-byte header length of a safetensors file`);
    }
    const lenBuf = Buffer.alloc(8);
    readExactly(fd, lenBuf, 0, file);
    const n = lenBuf.readBigUInt64LE(0);
    checkHeaderLength(file, n, fileSize);
    const header = Buffer.alloc(Number(n));
    readExactly(fd, header, 8, file);
    return parseSafetensorsHeader(header, fileSize, file);
  } finally {
    fs.closeSync(fd);
  }
}

function checkHeaderLength(file: string, n: bigint, fileSize: number): void {
  if (n > BigInt(fileSize - 8)) {
    throw bad(file, `the header length ${n} is more than the ${fileSize - 8} bytes that follow it (file size ${fileSize}): truncated or not a safetensors file`);
  }
  if (n > BigInt(SAFETENSORS_MAX_HEADER)) {
    throw bad(file, `the header length ${n} is above the ${SAFETENSORS_MAX_HEADER}-byte limit`);
  }
  if (n < 2n) throw bad(file, `the header length ${n} is too short for a JSON object`);
}

/**
 * Parses a safetensors header: `header` is the N JSON bytes (after the 8-byte length), `fileSize` the size of
 * the whole file (offsets are checked against it).
 */
export function parseSafetensorsHeader(header: Uint8Array, fileSize: number, file: string): SafetensorsFile {
  checkHeaderLength(file, BigInt(header.length), fileSize);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(header);
  } catch {
    throw bad(file, 'the header is not valid UTF-8');
  }
  if (!text.startsWith('{')) throw bad(file, `the header does not start with '{' (got ${JSON.stringify(text.slice(0, 16))}): not a safetensors file`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw bad(file, `the header is not valid JSON: ${errText(err)}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw bad(file, 'the header is not a JSON object');

  const dataOffset = 8 + header.length;
  const dataSize = fileSize - dataOffset;
  const out: SafetensorsFile = {
    path: file,
    fileSize,
    headerLength: header.length,
    dataOffset,
    metadata: new Map(),
    tensors: [],
    tensorsByName: new Map(),
  };
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw bad(file, '__metadata__ is not an object');
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') throw bad(file, `__metadata__["${k}"] is not a string`);
        out.metadata.set(k, v);
      }
      continue;
    }
    const info = tensorEntry(file, name, entry, dataOffset, dataSize);
    out.tensors.push(info);
    out.tensorsByName.set(name, info);
  }
  const byStart = out.tensors.filter((t) => t.byteSize > 0).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < byStart.length; i++) {
    const prev = byStart[i - 1];
    const cur = byStart[i];
    if (cur.begin < prev.end) {
      throw bad(file, `tensor "${cur.name}" data [${cur.begin}, ${cur.end}) overlaps tensor "${prev.name}" data [${prev.begin}, ${prev.end})`);
    }
  }
  return out;
}

function tensorEntry(file: string, name: string, entry: unknown, dataOffset: number, dataSize: number): SafetensorsTensorInfo {
  const where = `tensor "${name}"`;
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw bad(file, `${where}: its entry is not an object`);
  const e = entry as Record<string, unknown>;
  const dtype = e.dtype;
  if (typeof dtype !== 'string') throw bad(file, `${where}: dtype is missing or not a string`);
  const elementSize = Object.prototype.hasOwnProperty.call(SAFETENSORS_DTYPES, dtype) ? SAFETENSORS_DTYPES[dtype] : undefined;
  if (elementSize === undefined) {
    throw bad(file, `${where}: dtype ${JSON.stringify(dtype)} is not a safetensors dtype (${Object.keys(SAFETENSORS_DTYPES).join(', ')})`);
  }
  const shape = e.shape;
  if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || (d as number) < 0)) {
    throw bad(file, `${where}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
  }
  let nElements = 1;
  for (const d of shape as number[]) {
    nElements *= d;
    if (!Number.isSafeInteger(nElements)) throw bad(file, `${where}: shape [${shape.join(', ')}] has too many elements`);
  }
  const offsets = e.data_offsets;
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !Number.isSafeInteger(offsets[0]) ||
    !Number.isSafeInteger(offsets[1]) ||
    offsets[0] < 0 ||
    offsets[1] < offsets[0]
  ) {
    throw bad(file, `${where}: data_offsets ${JSON.stringify(offsets)} is not [begin, end] with 0 <= begin <= end`);
  }
  const [begin, end] = offsets as [number, number];
  if (end > dataSize) {
    throw new ModelFileError(
      'TENSOR_OUT_OF_BOUNDS',
      file,
      `${where} (${dtype} [${shape.join(', ')}]): data_offsets [${begin}, ${end}) extend past the end of the ${dataSize}-byte data section ` +
        `(file offsets ${dataOffset + begin}..${dataOffset + end} of a ${dataOffset + dataSize}-byte file)`,
    );
  }
  const byteSize = nElements * elementSize;
  if (end - begin !== byteSize) {
    throw bad(file, `${where}: data_offsets [${begin}, ${end}) hold ${end - begin} bytes, but ${dtype} [${shape.join(', ')}] needs ${byteSize}`);
  }
  return { name, dtype, shape: shape as number[], begin, end, absoluteOffset: dataOffset + begin, byteSize, nElements };
}

// ---------------------------------------------------------------------------------------------------
// Checkpoints: one file, or shards with an index

export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';

export interface CheckpointTensor extends SafetensorsTensorInfo {
  /** Index into Checkpoint.files. */
  file: number;
}

export interface SafetensorsCheckpoint {
  dir: string;
  /** The index file, when the checkpoint is sharded. */
  indexPath?: string;
  files: SafetensorsFile[];
  tensors: Map<string, CheckpointTensor>;
}

/**
 * The safetensors checkpoint of a Hugging Face model folder: `model.safetensors.index.json` and its shards
 * when the index exists, else `model.safetensors`.
 */
export function readCheckpoint(dir: string): SafetensorsCheckpoint {
  const indexPath = path.join(dir, INDEX_FILE);
  if (fs.existsSync(indexPath)) return readSharded(dir, indexPath);
  const single = path.join(dir, SINGLE_FILE);
  if (!fs.existsSync(single)) {
    throw new ModelFileError('FILE_NOT_FOUND', single, `the model folder has neither ${SINGLE_FILE} nor ${INDEX_FILE}`);
  }
  const f = readSafetensors(single);
  const tensors = new Map<string, CheckpointTensor>();
  for (const t of f.tensors) tensors.set(t.name, { ...t, file: 0 });
  return { dir, files: [f], tensors };
}

function readSharded(dir: string, indexPath: string): SafetensorsCheckpoint {
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (err) {
    throw bad(indexPath, `is not valid JSON: ${errText(err)}`);
  }
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (weightMap === null || typeof weightMap !== 'object' || Array.isArray(weightMap)) {
    throw bad(indexPath, 'has no "weight_map" object');
  }
  const shardNames: string[] = [];
  const shardOf = new Map<string, number>();
  for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard.length === 0) throw bad(indexPath, `weight_map["${name}"] is not a file name`);
    // A shard is a file of this folder: no absolute paths, no way out of the folder.
    if (path.isAbsolute(shard) || shard.split(/[\\/]/).includes('..')) {
      throw bad(indexPath, `weight_map["${name}"] = ${JSON.stringify(shard)} is not a file inside the model folder`);
    }
    let i = shardNames.indexOf(shard);
    if (i < 0) i = shardNames.push(shard) - 1;
    shardOf.set(name, i);
  }
  if (shardNames.length === 0) throw bad(indexPath, 'weight_map is empty');
  const files = shardNames.map((shard) => {
    const p = path.join(dir, shard);
    if (!fs.existsSync(p)) {
      const users = [...shardOf].filter(([, i]) => shardNames[i] === shard).length;
      throw new ModelFileError('MISSING_SHARD', p, `shard ${shard} (${users} tensors in ${INDEX_FILE}) is missing from the model folder`);
    }
    return readSafetensors(p);
  });
  const tensors = new Map<string, CheckpointTensor>();
  for (const [name, i] of shardOf) {
    const t = files[i].tensorsByName.get(name);
    if (!t) {
      throw new ModelFileError('MISSING_TENSOR', files[i].path, `${INDEX_FILE} places tensor "${name}" in ${shardNames[i]}, which does not hold it`);
    }
    tensors.set(name, { ...t, file: i });
  }
  return { dir, indexPath, files, tensors };
}

// ---------------------------------------------------------------------------------------------------

function bad(file: string, message: string): ModelFileError {
  return new ModelFileError('BAD_SAFETENSORS', file, message);
}

function readExactly(fd: number, buf: Buffer, position: number, file: string): void {
  let got = 0;
  while (got < buf.length) {
    let n: number;
    try {
      n = fs.readSync(fd, buf, got, buf.length - got, position + got);
    } catch (err) {
      throw new ModelFileError('FILE_READ', file, `read failed at offset ${position + got}: ${errText(err)}`, { cause: err });
    }
    if (n === 0) throw bad(file, `the file ended at offset ${position + got} while reading the header`);
    got += n;
  }
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
