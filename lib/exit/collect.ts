/**
 * Feature collection: runs examples to full depth and records the logit lens at every checked layer, the
 * full-depth answer and the gold token. Training, calibration and the oracle bound all read these traces.
 */
import { argmax } from '../engine/sampling';
import { LlamaContext } from '../model/llama';
import { Example } from './data';
import { ExitDecider } from './decider';
import { LensOptions, LensReading } from './lens';
import { ExitSchedule, observingPolicy } from './policy';

export interface Check extends LensReading {
  /** 0-based layer after which the lens was read. (`top1` is the answer at that layer, see AnswerOf.) */
  layer: number;
}

export interface Trace {
  nLayer: number;
  /** The full-depth answer (argmax of the model's logits at the last position). */
  final: number;
  gold?: number;
  checks: Check[];
}

/**
 * The answer a set of logits gives: by default the argmax over the vocabulary (next-token prediction); a
 * classification task answers with the best of its label tokens. After a lens read, `logits` holds the
 * lens logits (at least of the lens candidates).
 */
export type AnswerOf = (logits: Float32Array) => number;

export function collectTraces(
  ctx: LlamaContext,
  examples: Example[],
  schedule: ExitSchedule,
  lens: LensOptions,
  onProgress?: (done: number) => void,
  answerOf?: AnswerOf,
): Trace[] {
  const nLayer = ctx.model.config.nLayer;
  let checks: Check[] = [];
  const decider = new ExitDecider(
    ctx,
    observingPolicy(schedule, lens, (layer, r) => checks.push({ layer, ...r, top1: answerOf ? answerOf(ctx.lensLogits()) : r.top1 })),
  );
  return examples.map((ex, i) => {
    checks = [];
    const n = ex.tokens.length;
    ex.tokens.forEach((t, k) => (ctx.native.tokens[k] = t));
    decider.forward(n, 0);
    const logits = ctx.logits(n - 1);
    const final = answerOf ? answerOf(logits) : argmax(logits);
    onProgress?.(i + 1);
    return { nLayer, final, gold: ex.gold, checks };
  });
}

/**
 * The oracle bound: stopping at the first layer whose top-1 equals the full-depth answer ("first"), or
 * from which it stays equal to the end ("stay"). Needs traces checked at every layer in faithful mode.
 */
export function oracleBound(traces: Trace[]): { first: number; stay: number } {
  let first = 0;
  let stay = 0;
  for (const t of traces) {
    const f = t.checks.find((c) => c.top1 === t.final);
    first += f ? f.layer + 1 : t.nLayer;
    let s = t.nLayer;
    for (let i = t.checks.length - 1; i >= 0 && t.checks[i].top1 === t.final; i--) s = t.checks[i].layer + 1;
    stay += s;
  }
  const n = Math.max(1, traces.length);
  return { first: first / n, stay: stay / n };
}
