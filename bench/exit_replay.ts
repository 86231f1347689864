/**
 * Replaying exit rules on recorded traces, shared by bench/exit_ablation.ts, bench/exit_calibration.ts and
 * bench/exit_probe.ts: traces cached as JSON, the outcome of a rule "stop at the first check whose score reaches
 * at(layer)", the calibration examples of scored traces, and the thresholds for an accuracy-drop budget (point
 * estimate, or the shipped calibration's bound).
 */
import * as fs from 'fs';
import { Command } from 'commander';
import * as path from 'path';
import { DEFAULT_CONFIDENCE } from '../lib/exit/bounds';
import { calibrateThresholdForDrop, CalibrationExample } from '../lib/exit/calibrate';
import { FEATURE_NAMES, RESIDUAL_FEATURES } from '../lib/exit/classifier';
import { Trace } from '../lib/exit/collect';
import { exitEvidenceModels, repoRoot } from './machine';

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

/** A scored trace of a known document (the calibration's bounds count over documents). */
export interface DocumentScoredTrace extends ScoredTrace {
  doc: number;
}

/** The calibration examples (lib/exit/calibrate.ts) of scored traces: each check's score and agreement with full depth. */
export const calibrationExamples = (s: DocumentScoredTrace[]): CalibrationExample[] =>
  s.map((t) => ({ nLayer: t.nLayer, doc: t.doc, checks: t.checks.map((c) => ({ layer: c.layer, score: c.score, agrees: c.top1 === t.final })) }));

/** The shipped `--max-drop` calibration on scored traces: the threshold whose stories' upper bound on the accuracy drop is <= maxDrop. */
export function boundedThresholdForDrop(s: DocumentScoredTrace[], maxDrop: number): number {
  const examples = s.map((t) => ({
    nLayer: t.nLayer,
    doc: t.doc,
    fullCorrect: t.final === t.gold,
    checks: t.checks.map((c) => ({ layer: c.layer, score: c.score, agrees: c.top1 === t.final, correct: c.top1 === t.gold })),
  }));
  return calibrateThresholdForDrop(examples, maxDrop, DEFAULT_CONFIDENCE).threshold;
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

/**
 * The options of the calibration protocol the replay benches share (bench/exit_calibration.ts, bench/exit_probe.ts):
 * fit on --fit-limit positions of --train, calibrate and evaluate on the two story halves of --valid, --seeds draws.
 */
export function calibrationProtocolCommand(name: string, cache: { help: string; default?: string }): Command {
  const shared = path.resolve(repoRoot(), '..', 'shared');
  return new Command(name)
    .option('--train <file>', 'fit text', path.join(shared, 'datasets', 'tinystories', 'train.txt'))
    .option('--valid <file>', 'calibration and evaluation text (halves by story, every position)', path.join(shared, 'datasets', 'tinystories', 'valid.txt'))
    .option('--models <list>', 'GGUF files, comma-separated', exitEvidenceModels().slice(0, 2).join(','))
    .option('--fit-limit <n>', 'fit positions drawn from --train', '8000')
    .option('--window <w>', 'prompt tokens per example', '64')
    .option('--target <a>', 'agreement target (train-exit --target)', '0.99')
    .option('--max-drop <points>', 'the accuracy criterion: largest next-token accuracy drop, in points', '1')
    .option('--seeds <n>', 'draws of the calibration / evaluation halves', '5')
    .option('--cache <dir>', cache.help, cache.default)
    .option('--markdown', 'print the table as Markdown on stdout');
}
