/**
 * Feature collection: runs examples to full depth and records the logit lens at every checked layer, the
 * full-depth answer and the gold token. Training, calibration and the oracle bound all read these traces.
 */
import { argmax } from '../engine/sampling';
import { LlamaContext } from '../model/llama';
import { Example } from './data';
import { LensOptions, LensReader, LensReading } from './lens';
import { ExitSchedule, isCheckedLayer } from './policy';

export interface Check extends LensReading {
  /** 0-based layer after which the lens was read. */
  layer: number;
}

export interface Trace {
  nLayer: number;
  /** The full-depth answer (argmax of the model's logits at the last position). */
  final: number;
  gold?: number;
  checks: Check[];
}

/** Runs one example at full depth; `onLayer` sees the context after every layer but the last. */
function runFullDepth(ctx: LlamaContext, ex: Example, onLayer: (layer: number, n: number) => void): number {
  const n = ex.tokens.length;
  ex.tokens.forEach((t, i) => (ctx.native.tokens[i] = t));
  ctx.forward(n, 0, (layer, rows) => {
    onLayer(layer, rows);
    return false;
  });
  return argmax(ctx.logits(n - 1));
}

export function collectTraces(
  ctx: LlamaContext,
  examples: Example[],
  schedule: ExitSchedule,
  lens: LensOptions,
  onProgress?: (done: number) => void,
): Trace[] {
  const nLayer = ctx.model.config.nLayer;
  const reader = new LensReader(ctx, lens);
  return examples.map((ex, i) => {
    const checks: Check[] = [];
    reader.begin();
    const final = runFullDepth(ctx, ex, (layer, n) => {
      if (isCheckedLayer(schedule, layer, nLayer)) checks.push({ layer, ...reader.read(n - 1) });
    });
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
