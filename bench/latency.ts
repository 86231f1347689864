/**
 * The latency matrix (issue 16, point 2): models × policies × threads, each cell the report of
 * `adainfer bench --exit … [--speculative …]` (lib/latency: full depth, the exit policy and speculative decoding
 * interleaved on the same prompts), plus micro-measurements of what an exit check costs, with the `benchmark`
 * package. Writes latency.json and latency.html (self-contained: inline SVG drawn by Vega-Lite in Node, as
 * eval-tasks' report, lib/report/html.ts) into --out.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/latency.js [--models a.gguf,b.gguf] [--threads 1,2]
 *       [--policies never,exit,speculative] [-n 64] [--reps 3] [--out bench/results/latency] [--no-micro]
 *
 * Defaults: the two bundled models with their shipped exit files (models/*.exit.json). The speculative arm drafts
 * with the model's exit file, and only where that is sensible: when the file's calibration says it prunes at least
 * 10% of the layers (a drafter that stops almost nowhere drafts nothing; the cell notes why it was left out).
 *
 * Micro-measurements (benchmark.js: repeated until its statistics settle, mean ± relative margin of error), per model,
 * one thread, in process on the main thread (the layer loop, no worker): a decoded token at full depth (forward of
 * one row + LM head), an exit check (lens read + the policy's decision, ExitDecider.decide), and the classifier's
 * decision alone on a recorded reading. The check and the classifier are given as a share of one layer
 * (token / nLayer): what a check must save to pay for itself.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Command, InvalidArgumentError } from 'commander';
import { loadModel } from '../lib/api';
import { findShippedExitFile } from '../lib/cli/exit_choice';
import { ExitDecider } from '../lib/exit/decider';
import { loadExitFile, policyFromExitFile } from '../lib/exit/exit_file';
import { isCheckedLayer } from '../lib/exit/policy';
import { STORY_PROMPTS } from '../lib/latency/prompts';
import { LatencyReport } from '../lib/latency/report';
import { runLatencyBench } from '../lib/latency/run';
import { TransformerModel } from '../lib/model/transformer';
import { CONFIG, CSS, escapeHtml, figure, renderSvg, Spec } from '../lib/report/html';
import { describeMachine, formatMachine, MachineInfo, repoRoot } from './machine';

// benchmark.js has no types in this project (no @types/benchmark): the little of it used here.
interface BenchmarkStats {
  mean: number;
  rme: number;
  sample: number[];
}
interface BenchmarkInstance {
  name: string;
  hz: number;
  stats: BenchmarkStats;
}
interface BenchmarkSuite {
  add(name: string, fn: () => void, options?: { maxTime?: number; minSamples?: number }): BenchmarkSuite;
  run(options: { async: boolean }): BenchmarkSuite;
  forEach(fn: (b: BenchmarkInstance) => void): void;
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const Benchmark = require('benchmark') as { Suite: new () => BenchmarkSuite };

type Policy = 'never' | 'exit' | 'speculative';

interface Options {
  models: string[];
  threads: number[];
  policies: Policy[];
  maxTokens: number;
  reps: number;
  out: string;
  micro: boolean;
}

interface Cell {
  model: string;
  threads: number;
  notes: string[];
  report: LatencyReport;
}

interface MicroResult {
  model: string;
  nLayer: number;
  exitFile: string | null;
  /** benchmark.js figures: mean µs per call, relative margin of error (%), samples. */
  tokenMicros: { mean: number; rme: number; samples: number };
  exitCheckMicros: { mean: number; rme: number; samples: number } | null;
  classifierMicros: { mean: number; rme: number; samples: number } | null;
  /** exit check / (token / nLayer), classifier / (token / nLayer). */
  exitCheckPerLayer: number | null;
  classifierPerLayer: number | null;
}

export interface LatencyMatrix {
  format: 'adainfer.bench-latency-matrix/1';
  machine: MachineInfo;
  settings: Options & { prompts: string[] };
  cells: Cell[];
  micro: MicroResult[];
}

/** The speculative arm drafts with the exit file when its calibration prunes at least this share of the layers. */
const MIN_DRAFT_PRUNING = 0.1;

/** The pruning ratio an exit file's training measured on its calibration examples (train-exit's metrics), if recorded. */
function calibrationPruning(metrics: Record<string, unknown>): number | undefined {
  const calibration = metrics.calibration as { pruningRatio?: unknown } | undefined;
  const v = calibration?.pruningRatio ?? metrics.pruningRatio;
  return typeof v === 'number' ? v : undefined;
}

async function runCell(modelPath: string, threads: number, o: Options, log: (m: string) => void): Promise<Cell> {
  const model = await loadModel(modelPath, { threads });
  try {
    const notes: string[] = [];
    const shipped = findShippedExitFile({ ...model.info });
    let exit = 'never';
    if (o.policies.includes('exit')) {
      if (shipped) exit = shipped;
      else notes.push('no exit file ships for this model: no exit arm');
    }
    let speculative;
    if (o.policies.includes('speculative')) {
      const pruning = shipped ? calibrationPruning(loadExitFile(shipped, model.info).metrics) : undefined;
      if (shipped && pruning !== undefined && pruning >= MIN_DRAFT_PRUNING) speculative = { draft: shipped };
      else
        notes.push(
          shipped
            ? `speculative left out: the exit file prunes ${(100 * (pruning ?? 0)).toFixed(1)}% of the layers at calibration (< ${100 * MIN_DRAFT_PRUNING}%), its drafts would run almost every layer`
            : 'speculative left out: no exit file to draft with',
        );
    }
    log(`${path.basename(modelPath)}, ${threads} thread(s): arms full${exit !== 'never' ? ', exit' : ''}${speculative ? ', speculative' : ''}`);
    const report = await runLatencyBench(model, { exit, speculative, prompts: STORY_PROMPTS, maxTokens: o.maxTokens, reps: o.reps, warmup: 1 });
    return { model: modelPath, threads, notes, report };
  } finally {
    await model.dispose();
  }
}

function benchmarkFigures(b: BenchmarkInstance) {
  return { mean: b.stats.mean * 1e6, rme: b.stats.rme, samples: b.stats.sample.length };
}

/** benchmark.js over a token, an exit check and a classifier decision (see the file's comment). */
function runMicro(modelPath: string): MicroResult {
  const model = TransformerModel.load(modelPath);
  const ctx = model.createContext({ contextSize: 64, batchSize: 32, threads: 1 });
  try {
    const cfg = model.config;
    const c = ctx.native;
    const prompt = 24;
    for (let i = 0; i < prompt; i++) c.tokens[i] = 1 + ((i * 7919) % (cfg.nVocab - 1));
    ctx.forward(prompt, 0);
    const fingerprint = model.fingerprint;
    const shipped = findShippedExitFile({ path: modelPath, fingerprint, name: '', nLayer: cfg.nLayer });
    const suite = new Benchmark.Suite();
    const timing = { maxTime: 1, minSamples: 20 };
    suite.add('token', () => {
      c.tokens[0] = 5;
      ctx.forward(1, prompt);
      ctx.logits(0);
    }, timing);
    let decider: ExitDecider | undefined;
    const policy = shipped ? policyFromExitFile(loadExitFile(shipped)) : undefined;
    // A layer the policy's schedule checks, from the middle of the model on (an unchecked layer costs nothing).
    const layers = Array.from({ length: cfg.nLayer }, (_, l) => (l + Math.floor(cfg.nLayer / 2) - 1 + cfg.nLayer) % cfg.nLayer);
    const layer = policy ? layers.find((l) => isCheckedLayer(policy.schedule, l, cfg.nLayer)) : undefined;
    if (policy && layer !== undefined) {
      decider = new ExitDecider(ctx, policy);
      const d = decider;
      // After a one-row forward the hidden row 0 is there to read; the decision runs whether it stops or not.
      suite.add('exitCheck', () => {
        d.begin();
        d.decide(layer, 0);
      }, timing);
      d.begin();
      const reading = { ...d.lens.read(0) };
      suite.add('classifier', () => {
        policy.begin();
        policy.shouldExit(layer, reading, cfg.nLayer);
      }, timing);
    }
    suite.run({ async: false });
    const byName = new Map<string, BenchmarkInstance>();
    suite.forEach((b) => byName.set(b.name, b));
    const token = benchmarkFigures(byName.get('token')!);
    const check = byName.has('exitCheck') ? benchmarkFigures(byName.get('exitCheck')!) : null;
    const classifier = byName.has('classifier') ? benchmarkFigures(byName.get('classifier')!) : null;
    const perLayer = token.mean / cfg.nLayer;
    return {
      model: modelPath,
      nLayer: cfg.nLayer,
      exitFile: shipped ?? null,
      tokenMicros: token,
      exitCheckMicros: check,
      classifierMicros: classifier,
      exitCheckPerLayer: check ? check.mean / perLayer : null,
      classifierPerLayer: classifier ? classifier.mean / perLayer : null,
    };
  } finally {
    ctx.dispose();
    model.dispose();
  }
}

// --- the page -----------------------------------------------------------------------------------------

const cellName = (c: Cell) => `${path.basename(c.model).replace(/\.gguf$/, '')}, ${c.threads} thread${c.threads > 1 ? 's' : ''}`;
const ARM_LABEL: Record<string, string> = { full: 'full depth', exit: 'exit policy', speculative: 'speculative' };
const ARM_COLORS = { domain: ['full depth', 'exit policy', 'speculative'], range: ['#4c78a8', '#f58518', '#54a24b'] };

/** An empirical CDF as at most `points` (value, share) pairs: the sorted samples at evenly spaced ranks. */
export function cdfPoints(samples: number[], points = 200): { value: number; share: number }[] {
  const sorted = [...samples].sort((a, b) => a - b);
  const n = sorted.length;
  if (n === 0) return [];
  const step = Math.max(1, Math.floor(n / points));
  const out: { value: number; share: number }[] = [];
  for (let i = 0; i < n; i += step) out.push({ value: sorted[i], share: (i + 1) / n });
  if (out[out.length - 1].share !== 1) out.push({ value: sorted[n - 1], share: 1 });
  return out;
}

function cdfSpec(cells: Cell[], which: 'tokenMs' | 'ttftMs', title: string): Spec {
  const values = cells.flatMap((c) =>
    c.report.arms.flatMap((a) => cdfPoints(a.samples[which]).map((p) => ({ cell: cellName(c), arm: ARM_LABEL[a.arm], ms: Math.max(p.value, 1e-3), share: p.share }))),
  );
  return {
    title,
    config: CONFIG,
    data: { values },
    facet: { field: 'cell', type: 'nominal', title: null },
    columns: 2,
    spec: {
      width: 380,
      height: 200,
      mark: { type: 'line', interpolate: 'step-after', strokeWidth: 1.5 },
      encoding: {
        x: { field: 'ms', type: 'quantitative', title: 'ms (log scale)', scale: { type: 'log' } },
        y: { field: 'share', type: 'quantitative', title: 'share of samples ≤ x', axis: { format: '%' } },
        color: { field: 'arm', type: 'nominal', title: null, scale: ARM_COLORS, legend: { orient: 'bottom' } },
      },
    },
  };
}

function layersSpec(cells: Cell[]): Spec {
  // One cell per model (the first thread count): the layers a token ran do not depend on threads.
  const seen = new Set<string>();
  const values: Record<string, unknown>[] = [];
  for (const c of cells) {
    if (seen.has(c.model)) continue;
    seen.add(c.model);
    for (const a of c.report.arms) {
      if (!a.layerHistogram) continue;
      a.layerHistogram.forEach((count, i) => values.push({ model: path.basename(c.model).replace(/\.gguf$/, ''), arm: ARM_LABEL[a.arm], layers: i + 1, share: count / a.tokens }));
    }
  }
  return {
    title: 'Layers run per generated token',
    config: CONFIG,
    data: { values },
    facet: { field: 'model', type: 'nominal', title: null },
    columns: 2,
    spec: {
      width: 380,
      height: 180,
      mark: { type: 'bar' },
      encoding: {
        x: { field: 'layers', type: 'ordinal', title: 'layers run', axis: { labelAngle: 0 } },
        xOffset: { field: 'arm', type: 'nominal' },
        y: { field: 'share', type: 'quantitative', title: 'share of tokens', axis: { format: '%' } },
        color: { field: 'arm', type: 'nominal', title: null, scale: ARM_COLORS, legend: { orient: 'bottom' } },
      },
    },
  };
}

const f = (v: number | null, d = 3) => (v === null || !Number.isFinite(v) ? '—' : v.toFixed(d));

function table(m: LatencyMatrix): string {
  const head = ['model, threads', 'arm', 'ttft p50', 'ttft p99', 'token p50', 'token p90', 'token p99', 'ms/token', 'layers/token', 'layers vs full', 'speedup', 'agreement'];
  const rows = m.cells.flatMap((c) =>
    c.report.arms.map((a) =>
      [
        escapeHtml(cellName(c)),
        ARM_LABEL[a.arm],
        f(a.ttftMs.p50, 2),
        f(a.ttftMs.p99, 2),
        f(a.tokenMs.p50),
        f(a.tokenMs.p90),
        f(a.tokenMs.p99),
        f(a.msPerToken),
        f(a.layersPerToken, 2),
        `${(100 * a.ratioToFull.layers).toFixed(1)}%`,
        `${a.speedup.toFixed(3)}×`,
        `${(100 * a.tokenAgreement).toFixed(1)}%`,
      ].map((x) => `<td>${x}</td>`).join(''),
    ),
  );
  return `<div class="table-scroll"><table><thead><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr></thead><tbody>${rows.map((r) => `<tr>${r}</tr>`).join('')}</tbody></table></div>`;
}

function microTable(m: LatencyMatrix): string {
  if (m.micro.length === 0) return '<p class="dim">Not measured (--no-micro).</p>';
  const head = ['model', 'token at full depth µs', 'exit check µs', 'classifier µs', 'check / layer', 'classifier / layer'];
  const cell = (x: { mean: number; rme: number } | null) => (x ? `${x.mean.toFixed(2)} ± ${x.rme.toFixed(1)}%` : '—');
  const rows = m.micro.map((r) =>
    [escapeHtml(path.basename(r.model)), cell(r.tokenMicros), cell(r.exitCheckMicros), cell(r.classifierMicros), f(r.exitCheckPerLayer, 2), f(r.classifierPerLayer, 4)].map((x) => `<td>${x}</td>`).join(''),
  );
  return `<table><thead><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr></thead><tbody>${rows.map((r) => `<tr>${r}</tr>`).join('')}</tbody></table>`;
}

export async function buildLatencyHtml(m: LatencyMatrix): Promise<string> {
  const tokenCdf = await renderSvg(cdfSpec(m.cells, 'tokenMs', 'Per-token latency (gap between consecutive tokens), CDF'));
  const ttftCdf = await renderSvg(cdfSpec(m.cells, 'ttftMs', 'Time to first token, CDF'));
  const layers = await renderSvg(layersSpec(m.cells));
  const notes = m.cells.flatMap((c) => c.notes.map((n) => `<li><b>${escapeHtml(cellName(c))}</b>: ${escapeHtml(n)}</li>`));
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>adainfer latency</title>
<style>${CSS}</style></head><body>
<h1>adainfer latency: full depth, early exit, self-speculative decoding</h1>
<p class="settings">${escapeHtml(formatMachine(m.machine).join(' · '))}<br>
${m.settings.prompts.length} prompts × ${m.settings.reps} reps, ${m.settings.maxTokens} greedy tokens each, arms interleaved request by request, each request in a fresh session.</p>
<h2>Results</h2>
${table(m)}
<p class="dim">ttft: call to the first token (the whole prompt's prefill, then the first token). token: gap between two consecutive tokens as the caller receives them; a speculative round delivers its accepted tokens together (gaps near zero, then a long one). Percentiles by nearest rank, in ms. Layers vs full: layers per token / the model's layers. Speedup: full depth's decode ms per token / the arm's. Agreement: generated tokens equal to full depth's at the same position.</p>
<h2>Latency CDFs</h2>
${figure('plot-token-cdf', tokenCdf, 'Per model and thread count, the share of token gaps at most x ms, per arm.')}
${figure('plot-ttft-cdf', ttftCdf, 'Per model and thread count, the share of requests whose first token came within x ms.')}
<h2>Layers per token</h2>
${figure('plot-layers', layers, 'Share of generated tokens by the layers they ran, at full depth and under the exit file (speculative tokens have no single depth: see layers/token in the table).')}
<h2>What a check costs (benchmark.js)</h2>
${microTable(m)}
<p class="dim">One thread, in process: a token = forward of one row at full depth + the LM head; an exit check = the lens read (final norm + head + softmax features, as the exit file's lens mode) + the policy's decision; classifier = the decision alone on a recorded reading. "/ layer": over one layer's share of a token (token / layers).</p>
${notes.length > 0 ? `<h2>Notes</h2><ul class="notes">${notes.join('')}</ul>` : ''}
</body></html>
`;
}

// --- command line -------------------------------------------------------------------------------------

function list<T>(name: string, parse: (s: string) => T) {
  return (v: string) => {
    const items = v.split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (items.length === 0) throw new InvalidArgumentError(`${name} needs at least one value`);
    return items.map(parse);
  };
}

function intArg(name: string, min: number) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
    return n;
  };
}

function parseOptions(argv: string[]): Options {
  const root = repoRoot();
  const program = new Command()
    .name('node dist/bench/latency.js')
    .description('latency matrix: models x policies x threads -> latency.json and latency.html')
    .option('--models <list>', 'GGUF files, comma-separated (default: the two bundled models)', list('--models', (s) => path.resolve(s)))
    .option('--threads <list>', 'thread counts', list('--threads', intArg('--threads', 1)), [1, 2])
    .option('--policies <list>', 'never, exit, speculative (full depth is always measured)', list('--policies', (s) => {
      if (!['never', 'exit', 'speculative'].includes(s)) throw new InvalidArgumentError(`unknown policy '${s}'`);
      return s as Policy;
    }), ['never', 'exit', 'speculative'] as Policy[])
    .option('-n, --max-tokens <n>', 'greedy tokens per request', intArg('-n', 2), 64)
    .option('--reps <n>', 'requests per prompt and arm', intArg('--reps', 1), 3)
    .option('--out <dir>', 'output folder', path.join(root, 'bench', 'results', 'latency'))
    .option('--no-micro', 'skip the benchmark.js micro-measurements')
    .parse(argv);
  const o = program.opts<{ models?: string[]; threads: number[]; policies: Policy[]; maxTokens: number; reps: number; out: string; micro: boolean }>();
  const models = o.models ?? [path.join(root, 'models', 'adainfer-tinystories-10L-ee.f16.gguf'), path.join(root, 'models', 'adainfer-tinystories-10L.f16.gguf')];
  for (const m of models) if (!fs.existsSync(m)) program.error(`error: model file not found: ${m}`);
  return { models, threads: o.threads, policies: o.policies, maxTokens: o.maxTokens, reps: o.reps, out: path.resolve(o.out), micro: o.micro };
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv);
  const log = (m: string) => process.stderr.write(m + '\n');
  const machine = describeMachine();
  log(formatMachine(machine).join('\n'));
  const cells: Cell[] = [];
  for (const model of o.models) for (const threads of o.threads) cells.push(await runCell(model, threads, o, log));
  const micro: MicroResult[] = [];
  if (o.micro) {
    for (const model of o.models) {
      log(`micro: ${path.basename(model)}`);
      micro.push(runMicro(model));
    }
  }
  const matrix: LatencyMatrix = { format: 'adainfer.bench-latency-matrix/1', machine, settings: { ...o, prompts: [...STORY_PROMPTS] }, cells, micro };
  fs.mkdirSync(o.out, { recursive: true });
  fs.writeFileSync(path.join(o.out, 'latency.json'), JSON.stringify(matrix, null, 2) + '\n');
  fs.writeFileSync(path.join(o.out, 'latency.html'), await buildLatencyHtml(matrix));
  for (const c of cells) {
    for (const a of c.report.arms)
      log(
        `${cellName(c).padEnd(44)} ${ARM_LABEL[a.arm].padEnd(12)} ttft p50 ${f(a.ttftMs.p50, 2)} ms  token p50/p90/p99 ${f(a.tokenMs.p50)}/${f(a.tokenMs.p90)}/${f(a.tokenMs.p99)} ms  layers ${f(a.layersPerToken, 2)}  speedup ${a.speedup.toFixed(3)}x`,
      );
  }
  for (const r of micro)
    log(`micro ${path.basename(r.model)}: token ${f(r.tokenMicros.mean, 1)} µs, exit check ${f(r.exitCheckMicros?.mean ?? null, 2)} µs (${f(r.exitCheckPerLayer, 2)} layer), classifier ${f(r.classifierMicros?.mean ?? null, 3)} µs`);
  log(`wrote ${path.join(o.out, 'latency.json')} and latency.html`);
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
