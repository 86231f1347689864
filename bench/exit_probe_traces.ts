/**
 * Traces with the decision row's hidden state at every check, for measuring a learned probe on the hidden state
 * (bench/exit_probe.ts). The traces are those of lib/exit/collect.ts (every feature); beside them, the residual
 * stream of the decision row after each checked layer (nEmbd floats, as the layer loop left it: before the final
 * norm), read with Context.readHidden. Cached under a directory: the traces as JSON, the hidden states as raw
 * little-endian float32, [check][nEmbd] in trace order then check order.
 */
import * as fs from 'fs';
import * as path from 'path';
import { argmax } from '../lib/engine/sampling';

import { Check, Trace } from '../lib/exit/collect';
import { Example } from '../lib/exit/data';
import { ExitDecider } from '../lib/exit/decider';
import { LensOptions } from '../lib/exit/lens';
import { ExitSchedule, observingPolicy } from '../lib/exit/policy';
import { TRACE_FEATURES } from './exit_replay';
import { TransformerContext } from '../lib/model/transformer';

export interface HiddenTraces {
  traces: Trace[];
  /** nEmbd floats per check, checks in trace order (offset of trace i's check j: (first[i] + j) * nEmbd). */
  hidden: Float32Array;
  nEmbd: number;
  /** Index of each trace's first check among all checks. */
  first: Int32Array;
}

function firstChecks(traces: Trace[]): Int32Array {
  const first = new Int32Array(traces.length);
  let k = 0;
  traces.forEach((t, i) => ((first[i] = k), (k += t.checks.length)));
  return first;
}

/** Runs `examples` to full depth, recording every check's lens reading (all features) and hidden state. */
export function collectHiddenTraces(ctx: TransformerContext, examples: Example[], schedule: ExitSchedule, lens: LensOptions, onProgress?: (done: number) => void): HiddenTraces {
  const nLayer = ctx.model.config.nLayer;
  const nEmbd = ctx.model.config.nEmbd;
  let checks: Check[] = [];
  let row = 0;
  const chunks: Float32Array[] = [];
  const read = new Float32Array(nEmbd);
  const decider = new ExitDecider(
    ctx,
    observingPolicy(
      schedule,
      lens,
      (layer, r) => {
        checks.push({ layer, ...r });
        ctx.native.readHidden(row, 1, read);
        chunks.push(Float32Array.from(read));
      },
      TRACE_FEATURES,
    ),
  );
  const traces = examples.map((ex, i): Trace => {
    checks = [];
    const n = ex.tokens.length;
    row = n - 1;
    ex.tokens.forEach((t, k) => (ctx.native.tokens[k] = t));
    decider.forward(n, 0);
    const final = argmax(ctx.logits(n - 1));
    onProgress?.(i + 1);
    return { nLayer, final, gold: ex.gold, doc: ex.doc, checks };
  });
  const hidden = new Float32Array(chunks.length * nEmbd);
  chunks.forEach((c, i) => hidden.set(c, i * nEmbd));
  return { traces, hidden, nEmbd, first: firstChecks(traces) };
}

/** The cached traces of `key` under `dir`, or collect() them and cache them there. */
export function cachedHiddenTraces(dir: string, key: string, nEmbd: number, collect: () => HiddenTraces): HiddenTraces {
  const base = path.join(dir, key.replace(/[^A-Za-z0-9._-]+/g, '_'));
  const [json, bin] = [base + '.json', base + '.hidden.f32'];
  if (fs.existsSync(json) && fs.existsSync(bin)) {
    const traces = JSON.parse(fs.readFileSync(json, 'utf8')) as Trace[];
    const bytes = fs.readFileSync(bin);
    const hidden = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    const first = firstChecks(traces);
    const nChecks = traces.reduce((a, t) => a + t.checks.length, 0);
    if (hidden.length !== nChecks * nEmbd) throw new Error(`${bin}: ${hidden.length} floats, expected ${nChecks} checks × ${nEmbd}`);
    return { traces, hidden, nEmbd, first };
  }
  const r = collect();
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(json, JSON.stringify(r.traces));
  fs.writeFileSync(bin, Buffer.from(r.hidden.buffer, r.hidden.byteOffset, r.hidden.byteLength));
  return r;
}
