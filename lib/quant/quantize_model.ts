/**
 * Quantizes a GGUF model file to another weight type, tensor by tensor (a multi-GB model is never held in
 * memory: each tensor is read, converted and written in chunks of rows through GGUFWriter's streaming).
 *
 * Which type each tensor gets (the usual llama-quantize rules, without an importance matrix):
 *  - 1-D tensors (norm weights, rope factors) are copied unchanged (F32 in every common file);
 *  - F32 / F16 / BF16 targets: every 2-D tensor becomes that type;
 *  - quantized targets: every 2-D tensor becomes the target type, except output.weight (token_embd.weight
 *    when the output is tied to it), which becomes Q6_K — Q8_0 when the target is Q8_0 — as llama.cpp
 *    keeps the head at higher precision. token_embd.weight otherwise gets the target type, as in llama.cpp.
 *    Q4_K_M / Q5_K_M also give attn_v.weight and ffn_down.weight Q6_K in the layers llama.cpp picks
 *    (the first and last eighth and every third in between);
 *  - `keepOutputF16`: output.weight (or the tied token_embd.weight) is written as F16 instead;
 *  - `pure`: no exceptions, every 2-D tensor gets the target type;
 *  - rows that are not a whole number of blocks fall back as llama.cpp does: Q4_K -> Q5_0, Q5_K -> Q5_1,
 *    Q6_K / Q8_K -> Q8_0, and to F16 when not a multiple of 32 either.
 * A tensor already of its output type is copied byte for byte; a quantized input tensor going to another
 * type is dequantized and quantized again (a loss on top of the first quantization: a warning is logged).
 * `general.file_type` is set to the llama.cpp file type of the target and, for quantized targets,
 * `general.quantization_version` to 2.
 */
import * as fs from 'fs';
import * as path from 'path';
import { OptionError } from '../errors';
import { GGUFWriter, readGGUF, type GGUFFile, type GGUFTensorInfo } from '../gguf';
import { GGMLType, LlamaFileType, ggmlTypeInfo, ggmlTypeName, rowBytes } from '../gguf/types';
import { DEQUANTIZABLE_TYPES, dequantizeRows, quantizeRows } from './native_quant';

/** Target names accepted by `adainfer quantize` (the llama.cpp spellings). */
export const QUANT_TARGETS = ['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K', 'Q4_K_M', 'Q5_K_M'] as const;
export type QuantTarget = (typeof QUANT_TARGETS)[number];

interface TargetInfo {
  /** The type of ordinary 2-D tensors. */
  base: GGMLType;
  fileType: LlamaFileType;
  /** Q4_K_M / Q5_K_M: attn_v and ffn_down of some layers get Q6_K. */
  mixed: boolean;
}

const TARGETS: Record<QuantTarget, TargetInfo> = {
  F32: { base: GGMLType.F32, fileType: LlamaFileType.ALL_F32, mixed: false },
  F16: { base: GGMLType.F16, fileType: LlamaFileType.MOSTLY_F16, mixed: false },
  BF16: { base: GGMLType.BF16, fileType: LlamaFileType.MOSTLY_BF16, mixed: false },
  Q8_0: { base: GGMLType.Q8_0, fileType: LlamaFileType.MOSTLY_Q8_0, mixed: false },
  Q4_0: { base: GGMLType.Q4_0, fileType: LlamaFileType.MOSTLY_Q4_0, mixed: false },
  Q4_1: { base: GGMLType.Q4_1, fileType: LlamaFileType.MOSTLY_Q4_1, mixed: false },
  Q5_0: { base: GGMLType.Q5_0, fileType: LlamaFileType.MOSTLY_Q5_0, mixed: false },
  Q5_1: { base: GGMLType.Q5_1, fileType: LlamaFileType.MOSTLY_Q5_1, mixed: false },
  Q4_K: { base: GGMLType.Q4_K, fileType: LlamaFileType.MOSTLY_Q4_K_S, mixed: false },
  Q5_K: { base: GGMLType.Q5_K, fileType: LlamaFileType.MOSTLY_Q5_K_S, mixed: false },
  Q6_K: { base: GGMLType.Q6_K, fileType: LlamaFileType.MOSTLY_Q6_K, mixed: false },
  Q4_K_M: { base: GGMLType.Q4_K, fileType: LlamaFileType.MOSTLY_Q4_K_M, mixed: true },
  Q5_K_M: { base: GGMLType.Q5_K, fileType: LlamaFileType.MOSTLY_Q5_K_M, mixed: true },
};

export function parseQuantTarget(name: string): QuantTarget {
  const up = name.toUpperCase();
  if ((QUANT_TARGETS as readonly string[]).includes(up)) return up as QuantTarget;
  throw new OptionError('TYPE', `unknown type '${name}'; expected one of ${QUANT_TARGETS.join(', ')}`);
}

export function targetFileType(target: QuantTarget): LlamaFileType {
  return TARGETS[target].fileType;
}

export function targetBaseType(target: QuantTarget): GGMLType {
  return TARGETS[target].base;
}

export interface QuantizeOptions {
  /** Write output.weight (or the tied token_embd.weight) as F16. */
  keepOutputF16?: boolean;
  /** Every 2-D tensor gets the target type (no higher-precision head, no mixtures). */
  pure?: boolean;
  /** Native threads for the quantization of each chunk (default 1). */
  threads?: number;
  /** Progress / warnings (default: nothing). */
  log?: (message: string) => void;
}

export interface TensorPlan {
  name: string;
  dims: number[];
  from: GGMLType;
  to: GGMLType;
  /** Why `to` is not the target's base type, when it is not. */
  reason?: string;
}

const QUANTIZED_BASES = new Set<GGMLType>([GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K]);

/** llama.cpp's choice of layers that get more bits in the _M mixtures. */
export function useMoreBits(layer: number, nLayers: number): boolean {
  const eighth = Math.floor(nLayers / 8);
  return layer < eighth || layer >= Math.floor((7 * nLayers) / 8) || (layer - eighth) % 3 === 2;
}

function fallbackType(type: GGMLType, rowLength: number): { type: GGMLType; reason?: string } {
  const block = ggmlTypeInfo(type)?.blockSize ?? 1;
  if (rowLength % block === 0) return { type };
  const alt: Partial<Record<GGMLType, GGMLType>> = {
    [GGMLType.Q4_K]: GGMLType.Q5_0,
    [GGMLType.Q5_K]: GGMLType.Q5_1,
    [GGMLType.Q6_K]: GGMLType.Q8_0,
    [GGMLType.Q8_K]: GGMLType.Q8_0,
  };
  const next = alt[type];
  if (next !== undefined && rowLength % 32 === 0)
    return { type: next, reason: `rows of ${rowLength} are not a multiple of ${block}: ${ggmlTypeName(next)}` };
  return { type: GGMLType.F16, reason: `rows of ${rowLength} are not a multiple of ${block}: F16` };
}

/** A tensor as planQuantization needs it. */
export interface TensorDesc {
  name: string;
  dims: number[];
  type: number;
}

/** The output type of every tensor of `file` for `target` (see the file comment for the rules). */
export function planQuantization(file: GGUFFile, target: QuantTarget, options: QuantizeOptions = {}): TensorPlan[] {
  return planTensorTypes(file.tensors, target, options);
}

/** planQuantization on a plain list of tensors (in file order). */
export function planTensorTypes(tensors: readonly TensorDesc[], target: QuantTarget, options: QuantizeOptions = {}): TensorPlan[] {
  const t = TARGETS[target];
  const quantized = QUANTIZED_BASES.has(t.base);
  const hasOutput = tensors.some((x) => x.name === 'output.weight');
  const headName = hasOutput ? 'output.weight' : 'token_embd.weight';
  const nLayers = countLayers(tensors);
  return tensors.map((info) => {
    const plan: TensorPlan = { name: info.name, dims: [...info.dims], from: info.type, to: info.type };
    if (info.dims.length < 2) return plan;  // norms and other vectors: unchanged
    let to = t.base;
    let reason: string | undefined;
    if (options.keepOutputF16 && info.name === headName) {
      to = GGMLType.F16;
      reason = 'output kept at F16 (--keep-output-f16)';
    } else if (!options.pure && quantized && info.name === headName) {
      to = t.base === GGMLType.Q8_0 ? GGMLType.Q8_0 : GGMLType.Q6_K;
      if (to !== t.base) reason = 'output at higher precision (llama.cpp default)';
    } else if (!options.pure && t.mixed) {
      const m = /^blk\.(\d+)\.(attn_v|ffn_down)\.weight$/.exec(info.name);
      if (m && useMoreBits(Number(m[1]), nLayers)) {
        to = GGMLType.Q6_K;
        reason = `${m[2]} of layer ${m[1]} gets more bits (${target})`;
      }
    }
    const fb = fallbackType(to, info.dims[0]);
    if (fb.type !== to) {
      to = fb.type;
      reason = fb.reason;
    }
    plan.to = to;
    if (reason) plan.reason = reason;
    return plan;
  });
}

function countLayers(tensors: readonly TensorDesc[]): number {
  let n = 0;
  for (const t of tensors) {
    const m = /^blk\.(\d+)\./.exec(t.name);
    if (m) n = Math.max(n, Number(m[1]) + 1);
  }
  return n;
}

export interface QuantizeResult {
  plans: TensorPlan[];
  inputBytes: number;
  outputBytes: number;
  seconds: number;
}

/** Bytes of input converted per chunk (as float32): large enough for the native threads, small for memory. */
const CHUNK_FLOATS = 8 << 20;

/**
 * Reads `inPath`, writes `outPath` with the tensors converted as `planQuantization` says. The output is
 * written to a temporary file and renamed when complete (GGUFWriter).
 */
export function quantizeModel(inPath: string, outPath: string, target: QuantTarget, options: QuantizeOptions = {}): QuantizeResult {
  const t0 = Date.now();
  const log = options.log ?? (() => undefined);
  const threads = Math.max(1, Math.floor(options.threads ?? 1));
  if (path.resolve(inPath) === path.resolve(outPath)) throw new OptionError('OUT', 'the output must be a different file than the input');
  const file = readGGUF(inPath);
  const plans = planQuantization(file, target, options);
  for (const p of plans) {
    if (p.from !== p.to && !DEQUANTIZABLE_TYPES.includes(p.from))
      throw new OptionError('IN', `tensor ${p.name} has type ${ggmlTypeName(p.from)}, which cannot be converted`);
  }
  const writer = new GGUFWriter({ alignment: file.alignment });
  writer.copyMetadataFrom(file, (key) => key !== 'general.alignment');
  writer.setU32('general.file_type', targetFileType(target));
  if (QUANTIZED_BASES.has(TARGETS[target].base)) writer.setU32('general.quantization_version', 2);

  const fd = fs.openSync(inPath, 'r');
  try {
    plans.forEach((plan, i) => {
      const info = file.tensors[i];
      if (plan.from === plan.to) {
        writer.addTensor(info.name, info.dims, info.type, () => copyChunks(fd, info));
        return;
      }
      if (plan.reason) log(`${plan.name}: ${plan.reason}`);
      if ((ggmlTypeInfo(plan.from)?.quantized ?? false) && plan.from !== plan.to)
        log(`warning: ${plan.name} is ${ggmlTypeName(plan.from)}: requantizing to ${ggmlTypeName(plan.to)} adds error`);
      writer.addTensor(info.name, info.dims, plan.to, () => convertChunks(fd, info, plan.to, threads, (done) => {
        if (done) log(`${info.name} [${info.dims.join(' x ')}] ${ggmlTypeName(plan.from)} -> ${ggmlTypeName(plan.to)}`);
      }));
    });
    const res = writer.write(outPath);
    const inputBytes = file.tensors.reduce((s, x) => s + x.byteSize, 0);
    return { plans, inputBytes, outputBytes: res.fileSize, seconds: (Date.now() - t0) / 1000 };
  } finally {
    fs.closeSync(fd);
  }
}

function readExactly(fd: number, buf: Uint8Array, position: number): void {
  let off = 0;
  while (off < buf.length) {
    const n = fs.readSync(fd, buf, off, buf.length - off, position + off);
    if (n <= 0) throw new Error(`unexpected end of file at byte ${position + off}`);
    off += n;
  }
}

function* copyChunks(fd: number, info: GGUFTensorInfo): Iterable<Uint8Array> {
  const chunk = 16 << 20;
  for (let off = 0; off < info.byteSize; off += chunk) {
    const buf = new Uint8Array(Math.min(chunk, info.byteSize - off));
    readExactly(fd, buf, info.absoluteOffset + off);
    yield buf;
  }
}

function* convertChunks(fd: number, info: GGUFTensorInfo, to: GGMLType, threads: number, done: (d: boolean) => void): Iterable<Uint8Array> {
  const nPerRow = info.dims[0];
  const nRows = info.nElements / nPerRow;
  const inRow = rowBytes(info.type, nPerRow);
  const rowsPerChunk = Math.max(1, Math.min(nRows, Math.floor(CHUNK_FLOATS / nPerRow)));
  for (let r = 0; r < nRows; r += rowsPerChunk) {
    const rows = Math.min(rowsPerChunk, nRows - r);
    const raw = new Uint8Array(inRow * rows);
    readExactly(fd, raw, info.absoluteOffset + r * inRow);
    const f32 = info.type === GGMLType.F32 ? new Float32Array(raw.buffer, raw.byteOffset, rows * nPerRow) : dequantizeRows(info.type, raw, rows, nPerRow);
    yield quantizeRows(to, f32, rows, nPerRow, threads);
  }
  done(true);
}
