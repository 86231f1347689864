/**
 * Comparing our logits with llama.cpp's goldens (../shared/reference, README sections 2 and 3.5), shared by
 * the F32/F16 and the quantized golden tests.
 */
import * as fs from 'fs';
import * as path from 'path';
import { argmax } from '../../lib/engine/sampling';
import { readF32Rows } from '../helpers';

export interface LogitsGolden {
  text: string;
  tokens: number[];
  n_vocab: number;
  /** Inline rows (logits_inline), else in the `logits_file` sidecar (vocabularies above 1024, README section 2). */
  logits_inline?: boolean;
  logits?: number[][];
  logits_file?: string;
}

/** The golden's logits, one row per token: inline or from its .f32 sidecar (checked to hold exactly n_tokens rows). */
export function goldenLogitRows(goldenDir: string, g: LogitsGolden): ArrayLike<number>[] {
  if (g.logits_inline !== false) return g.logits!;
  const file = path.join(goldenDir, g.logits_file!);
  const bytes = fs.statSync(file).size;
  if (bytes !== g.tokens.length * g.n_vocab * 4) throw new Error(`${file}: ${bytes} bytes, expected ${g.tokens.length} rows of ${g.n_vocab} floats`);
  return readF32Rows(file, g.n_vocab);
}

export interface GreedyGolden {
  prompt: string;
  prompt_tokens: number[];
  generated: number[];
  steps: { margin: number }[];
}

/** Absolute tolerance per logit (a function of the row's largest |logit|) and on the mean |delta|. */
export interface Tolerance {
  atol: (maxAbs: number) => number;
  mean: number;
}

/** Top-1 minus top-2 of a row. */
export function gap(row: ArrayLike<number>): number {
  let a = -Infinity;
  let b = -Infinity;
  for (let i = 0; i < row.length; i++) {
    const v = row[i];
    if (v > a) {
      b = a;
      a = v;
    } else if (v > b) b = v;
  }
  return a - b;
}

export interface RowStats {
  maxDelta: number;
  meanDelta: number;
}

/**
 * Compares one row: max and mean |delta| within the tolerance, and the same argmax wherever the golden's
 * top-1/top-2 gap is at least 2 * atol. Returns the first problem (or undefined) and the deltas.
 */
export function compareRow(ours: Float32Array, golden: ArrayLike<number>, tol: Tolerance): { problem?: string; stats: RowStats } {
  let maxAbs = 0;
  for (let i = 0; i < golden.length; i++) maxAbs = Math.max(maxAbs, Math.abs(golden[i]));
  const atol = tol.atol(maxAbs);
  let maxDelta = 0;
  let sumDelta = 0;
  for (let i = 0; i < golden.length; i++) {
    const d = Math.abs(ours[i] - Math.fround(golden[i]));
    maxDelta = Math.max(maxDelta, d);
    sumDelta += d;
  }
  const meanDelta = sumDelta / golden.length;
  const stats = { maxDelta, meanDelta };
  if (!(maxDelta <= atol)) return { problem: `max |delta| ${maxDelta.toExponential(2)} > atol ${atol.toExponential(2)}`, stats };
  if (!(meanDelta <= tol.mean)) return { problem: `mean |delta| ${meanDelta.toExponential(2)} > ${tol.mean}`, stats };
  if (gap(golden) >= 2 * atol && argmax(ours) !== argmax(golden)) return { problem: `argmax ${argmax(ours)} != ${argmax(golden)}`, stats };
  return { stats };
}
