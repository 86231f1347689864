/**
 * Float64 references computed in TypeScript straight from a model file, independent of the native blocks:
 * tensors read with the project's GGUF reader and dequantized here (F32, F16), and the few operations the
 * tests recompute (matrix-vector product, RMSNorm, the LM head).
 */
import * as fs from 'fs';
import { readGGUF } from '../lib/gguf';
import { GGMLType } from '../lib/gguf/types';

/** IEEE half to number. */
export function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** The file's tensors as float64 arrays (F32 and F16 only: what the bundled model holds), dequantized once. */
export function weightReader(file: string): (name: string) => Float64Array {
  const gguf = readGGUF(file);
  const bytes = fs.readFileSync(file);
  const cache = new Map<string, Float64Array>();
  return (name) => {
    const cached = cache.get(name);
    if (cached) return cached;
    const t = gguf.tensorsByName.get(name);
    if (!t) throw new Error(`no tensor ${name}`);
    const raw = bytes.subarray(t.absoluteOffset, t.absoluteOffset + t.byteSize);
    const out = new Float64Array(t.nElements);
    if (t.type === GGMLType.F32) for (let i = 0; i < out.length; i++) out[i] = raw.readFloatLE(4 * i);
    else if (t.type === GGMLType.F16) for (let i = 0; i < out.length; i++) out[i] = halfToNumber(raw.readUInt16LE(2 * i));
    else throw new Error(`${name}: type ${t.type} is not dequantized by this test`);
    cache.set(name, out);
    return out;
  };
}

/** y = W x for a GGUF matrix of dims [nIn, nOut] (row r holds nIn weights). */
export function matvec(w: Float64Array, x: ArrayLike<number>, nIn: number, nOut: number): Float64Array {
  const y = new Float64Array(nOut);
  for (let r = 0; r < nOut; r++) {
    let s = 0;
    for (let i = 0; i < nIn; i++) s += w[r * nIn + i] * x[i];
    y[r] = s;
  }
  return y;
}

export function rmsNorm(x: ArrayLike<number>, weight: Float64Array, eps: number): Float64Array {
  let ms = 0;
  for (let i = 0; i < x.length; i++) ms += x[i] * x[i];
  const scale = 1 / Math.sqrt(ms / x.length + eps);
  return Float64Array.from({ length: x.length }, (_, i) => x[i] * scale * weight[i]);
}

/** The LM head in float64: output(RMSNorm_final(hidden)); the output matrix is token_embd when tied. */
export function headLogits(weight: (name: string) => Float64Array, hidden: ArrayLike<number>, nEmbd: number, nVocab: number, eps: number, tied: boolean): Float64Array {
  const x = rmsNorm(hidden, weight('output_norm.weight'), eps);
  return matvec(weight(tied ? 'token_embd.weight' : 'output.weight'), x, nEmbd, nVocab);
}

/** Softmax over the logits of `ids` (float64). */
export function softmaxAt(logits: ArrayLike<number>, ids: readonly number[]): number[] {
  const z = ids.map((i) => logits[i]);
  const max = Math.max(...z);
  const e = z.map((v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

export function argmaxOf(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}
