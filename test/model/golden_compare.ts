/**
 * Comparing our logits with llama.cpp's goldens (../shared/reference, README sections 2 and 3.5), shared by
 * the F32/F16 and the quantized golden tests.
 */
import { argmax } from '../../lib/engine/sampling';

export interface LogitsGolden {
  text: string;
  tokens: number[];
  n_vocab: number;
  logits: number[][];
}

export interface GreedyGolden {
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
