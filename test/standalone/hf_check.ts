/**
 * Runs a loaded model on a fixture's prompt and compares it with the fixture's expected outputs (float64 torch
 * reference): logits of every position, the greedy continuation, and the logit lens after every layer.
 */
import { argmax } from '../../lib/engine/sampling';
import { LensReader } from '../../lib/exit/lens';
import { TransformerModel } from '../../lib/model/transformer';
import { Expected, maxAbsDiff } from './hf_fixtures';

export interface CheckResult {
  /** Max |ours - reference| over every logit of every prompt position. */
  maxLogitDiff: number;
  greedy: number[];
  /** Max |Δp1|, |Δp2|, |Δentropy| of the lens after layers 0 .. L-2, and whether every top-1 agreed. */
  maxLensDiff: number;
  lensTop1Agree: boolean;
}

export function checkModel(model: TransformerModel, exp: Expected, threads = 1): CheckResult {
  const n = exp.prompt.length;
  const ctx = model.createContext({ contextSize: n + exp.greedy.length + 1, batchSize: n, threads });
  try {
    const lens = new LensReader(ctx, { mode: 'faithful' });
    const c = ctx.native;
    exp.prompt.forEach((t, i) => (c.tokens[i] = t));
    let maxLensDiff = 0;
    let lensTop1Agree = true;
    ctx.forward(n, 0, (layer) => {
      const r = lens.read(n - 1);
      const e = exp.lens[layer];
      maxLensDiff = Math.max(maxLensDiff, Math.abs(r.p1 - e.p1), Math.abs(r.p2 - e.p2), Math.abs(r.entropy - e.entropy));
      if (r.top1 !== e.top1) lensTop1Agree = false;
      return false;
    });
    let maxLogitDiff = 0;
    for (let i = 0; i < n; i++) maxLogitDiff = Math.max(maxLogitDiff, maxAbsDiff(ctx.logits(i), exp.logits[i]));
    const greedy: number[] = [];
    let next = argmax(ctx.logits(n - 1));
    for (let pos = n; greedy.length < exp.greedy.length; pos++) {
      greedy.push(next);
      c.tokens[0] = next;
      ctx.forward(1, pos);
      next = argmax(ctx.logits(0));
    }
    return { maxLogitDiff, greedy, maxLensDiff, lensTop1Agree };
  } finally {
    ctx.dispose();
  }
}
