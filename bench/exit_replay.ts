/**
 * Replaying exit rules on recorded traces, shared by bench/exit_ablation.ts and bench/exit_calibration.ts: traces
 * cached as JSON, the outcome of a rule "stop at the first check whose score reaches at(layer)", and the
 * point-estimate threshold for an accuracy-drop budget.
 */
import * as fs from 'fs';
import * as path from 'path';
import { FEATURE_NAMES, RESIDUAL_FEATURES } from '../lib/exit/classifier';
import { Trace } from '../lib/exit/collect';

/**
 * What the cached traces record: every feature but the hidden-state probe's input (nEmbd floats per check, which
 * JSON would bloat; bench/exit_probe_traces.ts keeps it in a binary file of its own).
 */
export const TRACE_FEATURES = FEATURE_NAMES.filter((f) => !RESIDUAL_FEATURES.includes(f));

/** One trace's checks with their scores under some classifier. */
export interface ScoredTrace {
  nLayer: number;
  final: number;
  gold?: number;
  checks: { layer: number; score: number; top1: number }[];
}

/** Traces cached as JSON under `dir` (the same examples give the same traces: the forward pass is deterministic). */
export function cachedTraces(dir: string | undefined, key: string, collect: () => Trace[]): Trace[] {
  if (!dir) return collect();
  const file = path.join(dir, key.replace(/[^A-Za-z0-9._-]+/g, '_') + '.json');
  if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8')) as Trace[];
  const traces = collect();
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(file, JSON.stringify(traces));
  return traces;
}

/** Agreement, accuracy drop, pruning and per-example agreement of the rule "first check with score >= at(layer)". */
export function exitOutcome(s: ScoredTrace[], at: (layer: number) => number) {
  let agree = 0;
  let correct = 0;
  let correctFull = 0;
  let layers = 0;
  const agrees: boolean[] = [];
  for (const t of s) {
    let answer = t.final;
    let used = t.nLayer;
    for (const c of t.checks)
      if (c.score >= at(c.layer)) {
        answer = c.top1;
        used = c.layer + 1;
        break;
      }
    agrees.push(answer === t.final);
    if (answer === t.final) agree++;
    if (answer === t.gold) correct++;
    if (t.final === t.gold) correctFull++;
    layers += used;
  }
  const n = s.length;
  const nLayer = s[0].nLayer;
  return { agreement: agree / n, drop: (correctFull - correct) / n, pruning: (nLayer - layers / n) / nLayer, agrees };
}

/** The cheapest single threshold, of 400 score quantiles, whose point-estimate accuracy drop on `s` is <= maxDrop. */
export function quantileThresholdForDrop(s: ScoredTrace[], maxDrop: number): number {
  const all = Float64Array.from(s.flatMap((t) => t.checks.map((c) => c.score))).sort();
  let best = Infinity;
  let bestPruning = 0;
  for (let q = 0; q < 400; q++) {
    const v = all[Math.floor(((q + 0.5) * all.length) / 400)];
    const o = exitOutcome(s, () => v);
    if (o.drop <= maxDrop && o.pruning > bestPruning) {
      bestPruning = o.pruning;
      best = v;
    }
  }
  return best;
}
