/**
 * Feature collection: runs examples to full depth and records the logit lens at every checked layer (and what
 * `features` need beside it: lens.ts, extrasFor), the full-depth answer and the gold token. Training, calibration and the oracle bound all read these traces.
 */
import { argmax } from '../engine/sampling';
import { oraclePruning } from './bounds';
import { TransformerContext } from '../model/transformer';
import { FeatureName } from './classifier';
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
  /** The example's document (Example.doc): fit and calibration are split by it. */
  doc: number;
  checks: Check[];
}

/**
 * The answer a set of logits gives: by default the argmax over the vocabulary (next-token prediction); a
 * classification task answers with the best of its label tokens. After a lens read, `logits` holds the
 * lens logits (at least of the lens candidates).
 */
export type AnswerOf = (logits: Float32Array) => number;

export function collectTraces(
  ctx: TransformerContext,
  examples: Example[],
  schedule: ExitSchedule,
  lens: LensOptions,
  onProgress?: (done: number) => void,
  answerOf?: AnswerOf,
  features?: readonly FeatureName[],
): Trace[] {
  const nLayer = ctx.model.config.nLayer;
  let checks: Check[] = [];
  const decider = new ExitDecider(
    ctx,
    observingPolicy(
      schedule,
      lens,
      // The hidden state ('probe') is the reader's buffer: each check keeps its own copy.
      (layer, r) => checks.push({ layer, ...r, hidden: r.hidden && Float32Array.from(r.hidden), top1: answerOf ? answerOf(ctx.lensLogits()) : r.top1 }),
      features,
    ),
  );
  return examples.map((ex, i) => {
    checks = [];
    const n = ex.tokens.length;
    ex.tokens.forEach((t, k) => (ctx.native.tokens[k] = t));
    decider.forward(n, 0);
    const logits = ctx.logits(n - 1);
    const final = answerOf ? answerOf(logits) : argmax(logits);
    onProgress?.(i + 1);
    return { nLayer, final, gold: ex.gold, doc: ex.doc, checks };
  });
}

/** The oracles' mean layers (lib/exit/bounds.ts: oraclePruning, of which this is the layer count form). */
export function oracleBound(traces: Trace[]): { first: number; stay: number } {
  const { oracleFirst, oracleStay } = oraclePruning(traces);
  const nLayer = traces[0]?.nLayer ?? 0;
  return { first: nLayer * (1 - oracleFirst), stay: nLayer * (1 - oracleStay) };
}
