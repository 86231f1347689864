/**
 * The numbering and sizes GGUF files use: GGML tensor types with their block layouts, the metadata
 * value types, and llama.cpp's `general.file_type` names. Ids and sizes are ggml's, so a file written
 * by llama.cpp's tools and one written by GGUFWriter mean the same thing.
 */

/** GGML tensor type ids as stored in a GGUF tensor info. Gaps (4, 5, 31–33, 36–38) are ids ggml retired. */
export enum GGMLType {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
}

export interface GGMLTypeInfo {
  readonly id: GGMLType;
  readonly name: string;
  /** Elements per block; a row's length must be a multiple of it. */
  readonly blockSize: number;
  /** Bytes per block. */
  readonly typeSize: number;
  /** True for the block-quantized types (blockSize > 1). */
  readonly quantized: boolean;
}

const QK_K = 256; // elements in a k-quant / i-quant super-block

// [id, blockSize, typeSize] — ggml's type traits.
const TYPE_TABLE: ReadonlyArray<readonly [GGMLType, number, number]> = [
  [GGMLType.F32, 1, 4],
  [GGMLType.F16, 1, 2],
  [GGMLType.Q4_0, 32, 2 + 16],
  [GGMLType.Q4_1, 32, 2 + 2 + 16],
  [GGMLType.Q5_0, 32, 2 + 4 + 16],
  [GGMLType.Q5_1, 32, 2 + 2 + 4 + 16],
  [GGMLType.Q8_0, 32, 2 + 32],
  [GGMLType.Q8_1, 32, 2 + 2 + 32],
  [GGMLType.Q2_K, QK_K, 2 + 2 + QK_K / 16 + QK_K / 4], // 84
  [GGMLType.Q3_K, QK_K, 2 + QK_K / 4 + QK_K / 8 + 12], // 110
  [GGMLType.Q4_K, QK_K, 2 + 2 + 12 + QK_K / 2], // 144
  [GGMLType.Q5_K, QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2], // 176
  [GGMLType.Q6_K, QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16], // 210
  [GGMLType.Q8_K, QK_K, 4 + QK_K + (QK_K / 16) * 2], // 292
  [GGMLType.IQ2_XXS, QK_K, 2 + QK_K / 4], // 66
  [GGMLType.IQ2_XS, QK_K, 2 + QK_K / 4 + QK_K / 32], // 74
  [GGMLType.IQ3_XXS, QK_K, 2 + QK_K / 4 + QK_K / 8], // 98
  [GGMLType.IQ1_S, QK_K, 2 + QK_K / 8 + QK_K / 16], // 50
  [GGMLType.IQ4_NL, 32, 2 + 16],
  [GGMLType.IQ3_S, QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4], // 110
  [GGMLType.IQ2_S, QK_K, 2 + QK_K / 4 + QK_K / 16], // 82
  [GGMLType.IQ4_XS, QK_K, 2 + 2 + QK_K / 64 + QK_K / 2], // 136
  [GGMLType.I8, 1, 1],
  [GGMLType.I16, 1, 2],
  [GGMLType.I32, 1, 4],
  [GGMLType.I64, 1, 8],
  [GGMLType.F64, 1, 8],
  [GGMLType.IQ1_M, QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32], // 56
  [GGMLType.BF16, 1, 2],
  [GGMLType.TQ1_0, QK_K, 2 + 4 * 13], // 54
  [GGMLType.TQ2_0, QK_K, 2 + QK_K / 4], // 66
  [GGMLType.MXFP4, 32, 1 + 16],
];

const TYPE_INFO: ReadonlyMap<number, GGMLTypeInfo> = new Map(
  TYPE_TABLE.map(([id, blockSize, typeSize]) => [
    id,
    Object.freeze({ id, name: GGMLType[id], blockSize, typeSize, quantized: blockSize > 1 }),
  ]),
);

/** Ids ggml once used and then removed; named so an error can say why such a file is refused. */
const RETIRED_TYPE_NAMES: ReadonlyMap<number, string> = new Map([
  [4, 'Q4_2'],
  [5, 'Q4_3'],
  [31, 'Q4_0_4_4'],
  [32, 'Q4_0_4_8'],
  [33, 'Q4_0_8_8'],
  [36, 'IQ4_NL_4_4'],
  [37, 'IQ4_NL_4_8'],
  [38, 'IQ4_NL_8_8'],
]);

/** Layout of a tensor type, or undefined for an id this runtime does not know. */
export function ggmlTypeInfo(type: number): GGMLTypeInfo | undefined {
  return TYPE_INFO.get(type);
}

/** Every known tensor type, in id order. */
export function allGGMLTypes(): GGMLTypeInfo[] {
  return [...TYPE_INFO.values()];
}

/** Display name of a tensor type id: "Q4_K", "Q4_2 (retired)", or "type 99" for an unknown id. */
export function ggmlTypeName(type: number): string {
  const info = TYPE_INFO.get(type);
  if (info) return info.name;
  const retired = RETIRED_TYPE_NAMES.get(type);
  return retired ? `${retired} (retired id ${type})` : `type ${type}`;
}

/** Tensor type id for a name such as "Q8_0" (case-insensitive), or undefined. */
export function ggmlTypeFromName(name: string): GGMLType | undefined {
  const upper = name.toUpperCase();
  for (const info of TYPE_INFO.values()) if (info.name === upper) return info.id;
  return undefined;
}

function requireTypeInfo(type: number): GGMLTypeInfo {
  const info = TYPE_INFO.get(type);
  if (!info) throw new RangeError(`unknown GGML tensor type ${ggmlTypeName(type)}`);
  return info;
}

/** Bytes of one row of `n` elements. Throws RangeError if n is not a whole number of blocks. */
export function rowBytes(type: number, n: number): number {
  const info = requireTypeInfo(type);
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`row length ${n} is not a non-negative integer`);
  if (n % info.blockSize !== 0) {
    throw new RangeError(`row length ${n} is not a multiple of the ${info.name} block size ${info.blockSize}`);
  }
  const bytes = (n / info.blockSize) * info.typeSize;
  if (!Number.isSafeInteger(bytes)) throw new RangeError(`a row of ${n} ${info.name} elements exceeds 2^53 bytes`);
  return bytes;
}

export interface TensorSize {
  /** Number of elements (product of dims; 1 for zero dims, 0 if any dim is 0). */
  elements: number;
  bytes: number;
}

/** Dims are GGUF's ne order (dims[0] = row length); at most this many. */
export const GGML_MAX_DIMS = 4;

const INT64_MAX = (1n << 63n) - 1n;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * Checks a tensor shape and returns its size, or a sentence saying what is wrong with it.
 * Computed in BigInt so a product of four 64-bit dims cannot silently wrap or lose precision.
 * A dim of 0 is allowed (ggml allows empty tensors): such a tensor has 0 elements and 0 bytes.
 */
export function checkTensorShape(type: number, dims: ReadonlyArray<number | bigint>): TensorSize | string {
  const info = TYPE_INFO.get(type);
  if (!info) return `unknown ggml type id ${type}`;
  if (dims.length > GGML_MAX_DIMS) return `${dims.length} dimensions (ggml allows at most ${GGML_MAX_DIMS})`;
  let elements = 1n;
  for (let i = 0; i < dims.length; i++) {
    const d = dims[i];
    if (typeof d === 'number' && !Number.isSafeInteger(d)) {
      return `dimension ${i} is ${d}, not a safe integer (pass a bigint for exact large values)`;
    }
    const big = BigInt(d);
    // ggml stores ne as int64: a u64 dim >= 2^63 is a negative size.
    if (big < 0n || big > INT64_MAX) return `dimension ${i} is ${big}, outside 0..2^63-1`;
    elements *= big;
  }
  if (elements > INT64_MAX) return `element count ${shapeText(dims)} = ${elements} overflows 64 bits`;
  // Checked after the product so that overflow is reported as such; matters when another dim is 0.
  for (let i = 0; i < dims.length; i++) {
    if (BigInt(dims[i]) > MAX_SAFE) return `dimension ${i} is ${dims[i]}, above 2^53`;
  }
  const row = dims.length > 0 ? BigInt(dims[0]) : 1n;
  const block = BigInt(info.blockSize);
  if (row % block !== 0n) {
    return `row length ${row} is not a multiple of the ${info.name} block size ${info.blockSize}`;
  }
  const bytes = (elements / block) * BigInt(info.typeSize);
  if (elements > MAX_SAFE || bytes > MAX_SAFE) {
    return `size ${shapeText(dims)} (${bytes} bytes) exceeds 2^53 bytes`;
  }
  return { elements: Number(elements), bytes: Number(bytes) };
}

/** Bytes of a whole tensor. Throws RangeError naming the problem if the shape is invalid or too large. */
export function tensorBytes(type: number, dims: ReadonlyArray<number | bigint>): number {
  const size = checkTensorShape(type, dims);
  if (typeof size === 'string') throw new RangeError(size);
  return size.bytes;
}

function shapeText(dims: ReadonlyArray<number | bigint>): string {
  return `[${dims.join(', ')}]`;
}

/** GGUF metadata value types. */
export enum GGUFValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** Display name of a metadata value type ("UINT32", or "value type 77" when unknown). */
export function ggufValueTypeName(type: number): string {
  return GGUFValueType[type] ?? `value type ${type}`;
}

export function isKnownValueType(type: number): type is GGUFValueType {
  return Number.isInteger(type) && type >= 0 && type <= GGUFValueType.FLOAT64;
}

/** Encoded size of a fixed-size scalar value type; undefined for STRING and ARRAY. */
export function scalarValueSize(type: number): number | undefined {
  switch (type) {
    case GGUFValueType.UINT8:
    case GGUFValueType.INT8:
    case GGUFValueType.BOOL:
      return 1;
    case GGUFValueType.UINT16:
    case GGUFValueType.INT16:
      return 2;
    case GGUFValueType.UINT32:
    case GGUFValueType.INT32:
    case GGUFValueType.FLOAT32:
      return 4;
    case GGUFValueType.UINT64:
    case GGUFValueType.INT64:
    case GGUFValueType.FLOAT64:
      return 8;
    default:
      return undefined;
  }
}

/** True for the integer metadata types (not BOOL). */
export function isIntegerValueType(type: number): boolean {
  return (
    type === GGUFValueType.UINT8 ||
    type === GGUFValueType.INT8 ||
    type === GGUFValueType.UINT16 ||
    type === GGUFValueType.INT16 ||
    type === GGUFValueType.UINT32 ||
    type === GGUFValueType.INT32 ||
    type === GGUFValueType.UINT64 ||
    type === GGUFValueType.INT64
  );
}

/** llama.cpp's `general.file_type` values (the "mostly" type of a model file), for display. */
export enum LlamaFileType {
  ALL_F32 = 0,
  MOSTLY_F16 = 1,
  MOSTLY_Q4_0 = 2,
  MOSTLY_Q4_1 = 3,
  MOSTLY_Q4_1_SOME_F16 = 4,
  MOSTLY_Q8_0 = 7,
  MOSTLY_Q5_0 = 8,
  MOSTLY_Q5_1 = 9,
  MOSTLY_Q2_K = 10,
  MOSTLY_Q3_K_S = 11,
  MOSTLY_Q3_K_M = 12,
  MOSTLY_Q3_K_L = 13,
  MOSTLY_Q4_K_S = 14,
  MOSTLY_Q4_K_M = 15,
  MOSTLY_Q5_K_S = 16,
  MOSTLY_Q5_K_M = 17,
  MOSTLY_Q6_K = 18,
  MOSTLY_IQ2_XXS = 19,
  MOSTLY_IQ2_XS = 20,
  MOSTLY_Q2_K_S = 21,
  MOSTLY_IQ3_XS = 22,
  MOSTLY_IQ3_XXS = 23,
  MOSTLY_IQ1_S = 24,
  MOSTLY_IQ4_NL = 25,
  MOSTLY_IQ3_S = 26,
  MOSTLY_IQ3_M = 27,
  MOSTLY_IQ2_S = 28,
  MOSTLY_IQ2_M = 29,
  MOSTLY_IQ4_XS = 30,
  MOSTLY_IQ1_M = 31,
  MOSTLY_BF16 = 32,
  MOSTLY_TQ1_0 = 36,
  MOSTLY_TQ2_0 = 37,
  MOSTLY_MXFP4_MOE = 38,
  GUESSED = 1024,
}

/** Name of a `general.file_type` value as llama.cpp spells it ("MOSTLY_Q4_K_M"), or "file type N". */
export function llamaFileTypeName(fileType: number): string {
  return LlamaFileType[fileType] ?? `file type ${fileType}`;
}
