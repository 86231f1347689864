/**
 * Tensor (de)quantization through the native addon: whole rows between float32 and the GGML types
 * (native/core/quantize.cpp). The quantizers follow ggml's reference rules (round to nearest; the K-quants
 * search each sub-block's scale), so the bytes are what llama-quantize writes without an importance matrix.
 */
import { native } from '../bindings/native';
import { OptionError } from '../errors';
import { GGMLType, ggmlTypeInfo, ggmlTypeName, rowBytes } from '../gguf/types';

interface QuantAddon {
  quantize(type: number, src: Float32Array, dst: Uint8Array, nRows: number, nPerRow: number, threads?: number): number;
  dequantize(type: number, src: Uint8Array, dst: Float32Array, nRows: number, nPerRow: number): number;
}

function addon(): QuantAddon {
  return native() as unknown as QuantAddon;
}

/** The types `quantizeRows` can produce. */
export const QUANTIZABLE_TYPES: readonly GGMLType[] = [
  GGMLType.F32,
  GGMLType.F16,
  GGMLType.BF16,
  GGMLType.Q4_0,
  GGMLType.Q4_1,
  GGMLType.Q5_0,
  GGMLType.Q5_1,
  GGMLType.Q8_0,
  GGMLType.Q4_K,
  GGMLType.Q5_K,
  GGMLType.Q6_K,
  GGMLType.Q8_K,
];

/** The types `dequantizeRows` can read (what the runtime computes with). */
export const DEQUANTIZABLE_TYPES: readonly GGMLType[] = QUANTIZABLE_TYPES;

/** nRows rows of nPerRow floats -> the bytes of those rows in `type` (threads: native threads to use). */
export function quantizeRows(type: GGMLType, src: Float32Array, nRows: number, nPerRow: number, threads = 1): Uint8Array {
  if (!QUANTIZABLE_TYPES.includes(type)) throw new OptionError('type', `cannot quantize to ${ggmlTypeName(type)}`);
  const block = ggmlTypeInfo(type)?.blockSize ?? 1;
  if (!Number.isInteger(nPerRow) || nPerRow <= 0 || nPerRow % block !== 0)
    throw new OptionError('type', `rows of ${nPerRow} elements are not a whole number of ${ggmlTypeName(type)} blocks (${block})`);
  const dst = new Uint8Array(rowBytes(type, nPerRow) * nRows);
  addon().quantize(type, src, dst, nRows, nPerRow, threads);
  return dst;
}

/** The bytes of nRows rows of `type` -> nRows * nPerRow floats. */
export function dequantizeRows(type: GGMLType, src: Uint8Array, nRows: number, nPerRow: number): Float32Array {
  if (!DEQUANTIZABLE_TYPES.includes(type)) throw new OptionError('type', `cannot read tensors of type ${ggmlTypeName(type)}`);
  const dst = new Float32Array(nRows * nPerRow);
  addon().dequantize(type, src, dst, nRows, nPerRow);
  return dst;
}
