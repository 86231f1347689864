/**
 * Throughput benchmark: prefill and decode tokens/s of adainfer beside node-llama-cpp (llama.cpp) on the same
 * GGUF files with the same explicit thread count, reps alternating between the engines (A B A B ...) so that
 * the noise of a shared machine hits both alike. Also measures the cost of one N-API call against one layer.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/throughput.js [--model PATH]... [--threads 1,2] [--prompt 128]
 *       [--gen 64] [--reps 5] [--warmup 1] [--engines adainfer,llamacpp] [--no-overhead] [--json]
 *
 * See bench/README.md for what is measured and how to read it. This is a benchmark, not a test: nothing in
 * `npm test` runs it, and node-llama-cpp is installed on demand into bench/.peer (see bench/peer.ts).
 */
import * as fs from 'fs';
import * as path from 'path';
import { Command, InvalidArgumentError } from 'commander';
import type { Model as AdainferModel, Session as AdainferSession } from '../lib/api';
import { describeMachine, formatMachine, MachineInfo, repoRoot } from './machine';
import { LlamaCppModel, LlamaCppPeer, LlamaCppRunner, NODE_LLAMA_CPP_VERSION, PeerInfo } from './peer';

// ---------------------------------------------------------------------------------------------------
// Statistics

export interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
  q1: number;
  q3: number;
}

/** Linear-interpolated quantile of sorted values (the same rule as numpy's default). */
function quantile(sorted: number[], q: number): number {
  if (sorted.length === 1) return sorted[0];
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export function summarize(values: number[]): Summary {
  if (values.length === 0) return { n: 0, median: NaN, min: NaN, max: NaN, q1: NaN, q3: NaN };
  const s = [...values].sort((a, b) => a - b);
  return { n: s.length, median: quantile(s, 0.5), min: s[0], max: s[s.length - 1], q1: quantile(s, 0.25), q3: quantile(s, 0.75) };
}

/** The xorshift32 stream adainfer's session.bench draws its random tokens from (lib/engine/worker.ts). */
export function randomTokens(seed: number, count: number, nVocab: number): number[] {
  let x = seed >>> 0 || 1;
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.push((x >>> 0) % nVocab);
  }
  return out;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------------
// Models

export interface ModelDescription {
  path: string;
  /** File name (general.name is often just "llama"). */
  name: string;
  generalName: string | undefined;
  fileBytes: number;
  parameters: number | undefined;
  /** general.file_type as llama.cpp names it (MOSTLY_F16, ALL_F32, ...). */
  fileType: string | undefined;
  /** Tensor types and how many tensors of each ("F16 x57, F32 x21"). */
  tensorTypes: string | undefined;
  contextLength: number | undefined;
  nLayer: number | undefined;
  nEmbd: number | undefined;
  nVocab: number | undefined;
  error?: string;
}

/** Reads the GGUF header with adainfer's parser (pure TypeScript; no native code). */
export function describeModel(modelPath: string): ModelDescription {
  const abs = path.resolve(modelPath);
  const base: ModelDescription = {
    path: abs,
    name: path.basename(abs),
    generalName: undefined,
    fileBytes: fs.statSync(abs).size,
    parameters: undefined,
    fileType: undefined,
    tensorTypes: undefined,
    contextLength: undefined,
    nLayer: undefined,
    nEmbd: undefined,
    nVocab: undefined,
  };
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const gguf = require('../lib/gguf') as typeof import('../lib/gguf');
    const f = gguf.readGGUF(abs);
    const num = (key: string): number | undefined => {
      const v = f.metadata.get(key);
      return typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined;
    };
    const arch = f.metadata.get('general.architecture');
    const p = typeof arch === 'string' ? arch + '.' : 'llama.';
    const byType = new Map<string, number>();
    for (const t of f.tensors) byType.set(t.typeName, (byType.get(t.typeName) ?? 0) + 1);
    const tokens = f.metadata.get('tokenizer.ggml.tokens');
    const fileType = num('general.file_type');
    const name = f.metadata.get('general.name');
    return {
      ...base,
      generalName: typeof name === 'string' ? name : undefined,
      parameters: f.tensors.reduce((s, t) => s + t.nElements, 0),
      fileType: fileType === undefined ? undefined : gguf.llamaFileTypeName(fileType),
      tensorTypes: [...byType].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} x${v}`).join(', '),
      contextLength: num(p + 'context_length'),
      nLayer: num(p + 'block_count'),
      nEmbd: num(p + 'embedding_length'),
      nVocab: num(p + 'vocab_size') ?? (Array.isArray(tokens) ? tokens.length : undefined),
    };
  } catch (err) {
    return { ...base, error: (err as Error).message };
  }
}

function displayPath(p: string): string {
  const rel = path.relative(process.cwd(), p);
  return rel.length < p.length ? rel : p;
}

// ---------------------------------------------------------------------------------------------------
// Engines

export type EngineName = 'adainfer' | 'llamacpp';
export const ENGINE_LABEL: Record<EngineName, string> = { adainfer: 'adainfer', llamacpp: 'node-llama-cpp' };

export interface RepResult {
  prefillMs: number;
  decodeMs: number;
  /** llama.cpp's own time inside llama_decode (node-llama-cpp only). */
  core?: { prefillMs: number; decodeMs: number };
}

interface Runner {
  engine: EngineName;
  run(seed: number): Promise<RepResult>;
  /** What the engine reports it actually uses (threads, context, ...). */
  describe(): Record<string, unknown>;
  dispose(): Promise<void>;
}

class AdainferRunner implements Runner {
  readonly engine = 'adainfer' as const;
  constructor(
    private readonly session: AdainferSession,
    private readonly promptTokens: number,
    private readonly genTokens: number,
    private readonly threads: number,
    private readonly batchSize: number,
  ) {}
  async run(seed: number): Promise<RepResult> {
    const r = await this.session.bench({ promptTokens: this.promptTokens, genTokens: this.genTokens, seed });
    if (r.promptTokens !== this.promptTokens || r.genTokens !== this.genTokens)
      throw new Error(`adainfer's bench ran ${r.promptTokens}/${r.genTokens} tokens, asked ${this.promptTokens}/${this.genTokens}`);
    return { prefillMs: r.prefillMs, decodeMs: r.decodeMs };
  }
  describe(): Record<string, unknown> {
    return {
      threads: this.threads,
      contextSize: this.session.contextSize,
      batchSize: this.batchSize,
      kernels: this.session.model.info.kernels,
    };
  }
  dispose(): Promise<void> {
    return this.session.dispose();
  }
}

class PeerRunner implements Runner {
  readonly engine = 'llamacpp' as const;
  constructor(
    private readonly runner: LlamaCppRunner,
    private readonly promptTokens: number,
    private readonly genTokens: number,
    private readonly nVocab: number,
  ) {}
  async run(seed: number): Promise<RepResult> {
    const r = await this.runner.bench(randomTokens(seed, this.promptTokens, this.nVocab), this.genTokens);
    return { prefillMs: r.prefillMs, decodeMs: r.decodeMs, core: r.core && { prefillMs: r.core.prefillMs, decodeMs: r.core.decodeMs } };
  }
  describe(): Record<string, unknown> {
    return {
      threads: this.runner.threads,
      contextSize: this.runner.contextSize,
      batchSize: this.runner.batchSize,
      flashAttention: this.runner.flashAttention,
    };
  }
  dispose(): Promise<void> {
    return this.runner.dispose();
  }
}

// ---------------------------------------------------------------------------------------------------
// Options

interface Options {
  models: string[];
  threads: number[];
  prompt: number;
  gen: number;
  reps: number;
  warmup: number;
  engines: EngineName[];
  overhead: boolean;
  json: boolean;
}

function intArg(name: string, min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isInteger(n) || n < min)
      throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got '${value}'`);
    return n;
  };
}

function parseThreads(value: string, previous: number[] | undefined): number[] {
  const list = value.split(',').map((s) => s.trim()).filter(Boolean).map((s) => intArg('--threads', 1)(s));
  if (list.length === 0) throw new InvalidArgumentError(`--threads needs a number or a list like 1,2`);
  return [...(previous ?? []), ...list];
}

function parseEngines(value: string): EngineName[] {
  const out: EngineName[] = [];
  for (const raw of value.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean)) {
    const e: EngineName | undefined =
      raw === 'adainfer' ? 'adainfer' : ['llamacpp', 'llama.cpp', 'node-llama-cpp', 'nlc'].includes(raw) ? 'llamacpp' : undefined;
    if (!e) throw new InvalidArgumentError(`unknown engine '${raw}' (engines: adainfer, llamacpp)`);
    if (!out.includes(e)) out.push(e);
  }
  if (out.length === 0) throw new InvalidArgumentError('--engines needs at least one engine');
  return out;
}

function defaultModels(): string[] {
  const root = repoRoot();
  return [path.join(root, 'models', 'adainfer-tinystories-10L-ee.f16.gguf'), path.resolve(root, '..', 'shared', 'models', 'stories260K.gguf')];
}

function parseOptions(argv: string[]): Options {
  const program = new Command()
    .name('node dist/bench/throughput.js')
    .description('prefill/decode tokens/s of adainfer beside node-llama-cpp (llama.cpp), reps alternating between engines')
    .option('--model <path>', 'GGUF model (repeatable; default: the bundled model and ../shared/models/stories260K.gguf)', (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .option('--threads <list>', 'thread counts, e.g. 1 or 1,2 (default 1)', parseThreads)
    .option('--prompt <n>', 'prompt tokens (prefill); clamped to context - gen - 1 per model', intArg('--prompt', 1), 128)
    .option('--gen <n>', 'generated tokens (decode)', intArg('--gen', 1), 64)
    .option('--reps <n>', 'measured reps per engine', intArg('--reps', 1), 5)
    .option('--warmup <n>', 'unmeasured reps per engine before measuring', intArg('--warmup', 0), 1)
    .option('--engines <list>', 'engines to run, in this order within each rep (default: adainfer,llamacpp)', parseEngines)
    .option('--no-overhead', 'skip the N-API call overhead measurement')
    .option('--json', 'also print a machine-readable JSON object, on stdout (the table then goes to stderr)')
    .showHelpAfterError('(run with --help for usage)')
    .parse(argv);
  const o = program.opts<{
    model?: string[];
    threads?: number[];
    prompt: number;
    gen: number;
    reps: number;
    warmup: number;
    engines?: EngineName[];
    overhead: boolean;
    json?: boolean;
  }>();
  if (program.args.length > 0) program.error(`unexpected argument(s): ${program.args.join(' ')}`);
  const explicit = o.model !== undefined;
  const models = (o.model ?? defaultModels()).map((m) => path.resolve(m));
  for (const m of models) {
    if (!fs.existsSync(m)) {
      if (explicit) program.error(`error: model file not found: ${m}`);
      else program.error(`error: default model not found: ${m} (pass --model to choose models)`);
    }
  }
  return {
    models: [...new Set(models)],
    threads: [...new Set(o.threads ?? [1])],
    prompt: o.prompt,
    gen: o.gen,
    reps: o.reps,
    warmup: o.warmup,
    engines: o.engines ?? ['adainfer', 'llamacpp'],
    overhead: o.overhead,
    json: o.json === true,
  };
}

// ---------------------------------------------------------------------------------------------------
// Measurement

export interface PhaseStats {
  /** tokens/s of every measured rep, in run order. */
  samples: number[];
  tokensPerSecond: Summary;
  /** Median milliseconds per token. */
  msPerToken: number;
}

export interface EngineResult {
  engine: EngineName;
  settings: Record<string, unknown>;
  prefill: PhaseStats;
  decode: PhaseStats;
  /** node-llama-cpp only: the same reps timed inside llama_decode by llama.cpp itself. */
  core?: { prefill: PhaseStats; decode: PhaseStats };
}

export interface Ratio {
  /** median(adainfer tok/s) / median(reference tok/s); > 1: adainfer is faster. */
  ofMedians: number;
  /** The same ratio per rep (adjacent runs, so drift cancels), summarized. */
  paired: Summary;
}

export interface ConfigResult {
  model: ModelDescription;
  threads: number;
  promptTokens: number;
  genTokens: number;
  /** The prompt was shortened to fit the model's context. */
  promptClamped: boolean;
  engines: EngineResult[];
  ratios?: {
    vsNodeLlamaCpp: { prefill: Ratio; decode: Ratio };
    vsLlamaCppCore?: { prefill: Ratio; decode: Ratio };
  };
}

function phaseStats(tokens: number, ms: number[]): PhaseStats {
  const rates = ms.map((t) => (tokens * 1000) / t);
  return { samples: rates, tokensPerSecond: summarize(rates), msPerToken: summarize(ms).median / tokens };
}

function ratio(a: PhaseStats, b: PhaseStats): Ratio {
  return {
    ofMedians: a.tokensPerSecond.median / b.tokensPerSecond.median,
    paired: summarize(a.samples.map((x, i) => x / b.samples[i])),
  };
}

interface ModelEngines {
  adainfer?: AdainferModel;
  llamacpp?: LlamaCppModel;
}

async function runConfig(
  opts: Options,
  desc: ModelDescription,
  models: ModelEngines,
  threads: number,
  promptTokens: number,
  log: (m: string) => void,
): Promise<ConfigResult> {
  const contextSize = Math.min(desc.contextLength!, 2048);
  const runners: Runner[] = [];
  try {
    for (const engine of opts.engines) {
      if (engine === 'adainfer') {
        const session = await models.adainfer!.createSession({ contextSize, batchSize: promptTokens, threads });
        runners.push(new AdainferRunner(session, promptTokens, opts.gen, threads, promptTokens));
      } else {
        const r = await models.llamacpp!.createRunner({ contextSize, batchSize: promptTokens, threads });
        if (r.threads !== threads) throw new Error(`node-llama-cpp uses ${r.threads} threads, asked ${threads}`);
        runners.push(new PeerRunner(r, promptTokens, opts.gen, desc.nVocab!));
      }
    }
    const results = new Map<EngineName, RepResult[]>(runners.map((r) => [r.engine, []]));
    for (let w = 0; w < opts.warmup; w++) for (const r of runners) await r.run(1000 + w);
    for (let rep = 0; rep < opts.reps; rep++) {
      const parts: string[] = [];
      // Alternate engines rep by rep (A B A B ...); the same seed (prompt ids) for both within a rep.
      for (const r of runners) {
        await sleep(20); // lets the other engine's worker threads finish spinning down
        const res = await r.run(rep + 1);
        results.get(r.engine)!.push(res);
        parts.push(`${ENGINE_LABEL[r.engine]} pp ${fmtRate((promptTokens * 1000) / res.prefillMs)} tg ${fmtRate((opts.gen * 1000) / res.decodeMs)}`);
      }
      log(`  rep ${rep + 1}/${opts.reps}: ${parts.join(' | ')}`);
    }
    const engines: EngineResult[] = runners.map((r) => {
      const reps = results.get(r.engine)!;
      const e: EngineResult = {
        engine: r.engine,
        settings: r.describe(),
        prefill: phaseStats(promptTokens, reps.map((x) => x.prefillMs)),
        decode: phaseStats(opts.gen, reps.map((x) => x.decodeMs)),
      };
      if (reps.every((x) => x.core)) {
        e.core = {
          prefill: phaseStats(promptTokens, reps.map((x) => x.core!.prefillMs)),
          decode: phaseStats(opts.gen, reps.map((x) => x.core!.decodeMs)),
        };
      }
      return e;
    });
    const result: ConfigResult = { model: desc, threads, promptTokens, genTokens: opts.gen, promptClamped: promptTokens < opts.prompt, engines };
    const a = engines.find((e) => e.engine === 'adainfer');
    const b = engines.find((e) => e.engine === 'llamacpp');
    if (a && b) {
      result.ratios = { vsNodeLlamaCpp: { prefill: ratio(a.prefill, b.prefill), decode: ratio(a.decode, b.decode) } };
      if (b.core) result.ratios.vsLlamaCppCore = { prefill: ratio(a.prefill, b.core.prefill), decode: ratio(a.decode, b.core.decode) };
    }
    return result;
  } finally {
    for (const r of runners) await r.dispose();
  }
}

// ---------------------------------------------------------------------------------------------------
// N-API call overhead

export interface OverheadResult {
  model: string;
  /** ns per ctx.native.noop() call: median of `trials` loops of `calls` calls. */
  noopNs: number;
  noopNsRange: [number, number];
  calls: number;
  trials: number;
  /** Decode (n = 1) at position `position`: one attention + one MLP call of layer 0..nLayer-1, per pair. */
  position: number;
  nLayer: number;
  perThreads: {
    threads: number;
    layerPairNs: number;
    layerPairNsMin: number;
    layerPairNsIqr: [number, number];
    /** noop / layer pair, percent. */
    noopPercentOfLayerPair: number;
    /** native calls per decoded token (embed + 2 per layer + head) times noopNs, as % of one token's layers. */
    callsPerToken: number;
    overheadPercentOfToken: number;
  }[];
}

/**
 * Times 1e6 ctx.native.noop() calls (the bare cost of crossing N-API from JS) and one attention + MLP call
 * pair at decode (n = 1) on an in-process TransformerModel (the main thread, synchronous; no worker messages).
 */
async function measureOverhead(modelPath: string, threadsList: number[], position: number, log: (m: string) => void): Promise<OverheadResult> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { TransformerModel } = require('../lib/model/transformer') as typeof import('../lib/model/transformer');
  const model = TransformerModel.load(modelPath);
  const cfg = model.config;
  const calls = 1_000_000;
  const trials = 5;
  const result: OverheadResult = {
    model: modelPath,
    noopNs: NaN,
    noopNsRange: [NaN, NaN],
    calls,
    trials,
    position,
    nLayer: cfg.nLayer,
    perThreads: [],
  };
  try {
    for (const threads of threadsList) {
      const ctx = model.createContext({ contextSize: Math.min(cfg.contextLength, 2048), batchSize: Math.max(1, position), threads });
      try {
        const c = ctx.native;
        if (threads === threadsList[0]) {
          for (let i = 0; i < 100_000; i++) c.noop(); // warm up (JIT, inline caches)
          const ns: number[] = [];
          for (let t = 0; t < trials; t++) {
            const t0 = process.hrtime.bigint();
            for (let i = 0; i < calls; i++) c.noop();
            ns.push(Number(process.hrtime.bigint() - t0) / calls);
          }
          const s = summarize(ns);
          result.noopNs = s.median;
          result.noopNsRange = [s.min, s.max];
        }
        // Fill the KV cache with `position` random tokens, then time decode steps at that position.
        const toks = randomTokens(7, position, cfg.nVocab);
        for (let i = 0; i < position; i++) c.tokens[i] = toks[i];
        if (position > 0) ctx.forward(position, 0);
        const pairNs: number[] = [];
        const deadline = performance.now() + 400;
        for (let iter = 0; iter < 20_000 && (iter < 50 || performance.now() < deadline); iter++) {
          c.tokens[0] = toks[iter % Math.max(1, position)] ?? 1;
          c.rowSeq[0] = 0;
          c.rowPos[0] = position;
          c.embed(1); // fresh residual row for every pass (not timed)
          const t0 = process.hrtime.bigint();
          for (let layer = 0; layer < cfg.nLayer; layer++) {
            c.attention(layer, 1);
            c.mlp(layer, 1);
          }
          const dt = Number(process.hrtime.bigint() - t0);
          if (iter >= 10) pairNs.push(dt / cfg.nLayer); // the first passes warm caches
        }
        const s = summarize(pairNs);
        const callsPerToken = 2 * cfg.nLayer + 2;
        result.perThreads.push({
          threads,
          layerPairNs: s.median,
          layerPairNsMin: s.min,
          layerPairNsIqr: [s.q1, s.q3],
          noopPercentOfLayerPair: (100 * result.noopNs) / s.median,
          callsPerToken,
          overheadPercentOfToken: (100 * callsPerToken * result.noopNs) / (s.median * cfg.nLayer),
        });
        log(`  overhead: threads ${threads}: layer pair ${fmtNs(s.median)}, ${pairNs.length} passes`);
      } finally {
        ctx.dispose();
      }
      await sleep(20);
    }
  } finally {
    model.dispose();
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------
// Formatting

function fmtRate(x: number): string {
  if (!Number.isFinite(x)) return 'n/a';
  if (x >= 100) return Math.round(x).toLocaleString('en-US');
  return x.toFixed(x >= 10 ? 1 : 2);
}

function fmtNs(ns: number): string {
  if (!Number.isFinite(ns)) return 'n/a';
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(2)} ms`;
  if (ns >= 1e3) return `${(ns / 1e3).toFixed(2)} µs`;
  return `${ns.toFixed(1)} ns`;
}

function fmtRatio(r: number): string {
  return Number.isFinite(r) ? `${r.toFixed(2)}x` : 'n/a';
}

function fmtBytes(b: number): string {
  return b >= 2 ** 20 ? `${(b / 2 ** 20).toFixed(2)} MiB` : `${(b / 1024).toFixed(1)} KiB`;
}

function fmtParams(n: number | undefined): string {
  if (n === undefined) return '? params';
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)} B params` : n >= 1e6 ? `${(n / 1e6).toFixed(2)} M params` : `${(n / 1e3).toFixed(1)} K params`;
}

function table(rows: string[][], align: ('l' | 'r')[]): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) =>
    r
      .map((cell, i) => (align[i] === 'r' ? cell.padStart(widths[i]) : cell.padEnd(widths[i])))
      .join('  ')
      .trimEnd(),
  );
}

function formatConfig(r: ConfigResult): string[] {
  const rows: string[][] = [['phase', 'engine', 'median tok/s', 'min', 'max', 'IQR (q1 - q3)', 'ms/tok']];
  const add = (phase: string, label: string, p: PhaseStats) => {
    const s = p.tokensPerSecond;
    rows.push([phase, label, fmtRate(s.median), fmtRate(s.min), fmtRate(s.max), `${fmtRate(s.q1)} - ${fmtRate(s.q3)}`, p.msPerToken.toFixed(4)]);
  };
  for (const phase of ['prefill', 'decode'] as const) {
    for (const e of r.engines) {
      add(phase, ENGINE_LABEL[e.engine], e[phase]);
      if (e.core) add(phase, '  (llama.cpp core)', e.core[phase]);
    }
  }
  const out = table(rows, ['l', 'l', 'r', 'r', 'r', 'r', 'r']).map((l) => '  ' + l);
  const fmt = (x: Ratio) =>
    `${fmtRatio(x.ofMedians)} (paired: median ${fmtRatio(x.paired.median)}, ${fmtRatio(x.paired.min)} - ${fmtRatio(x.paired.max)})`;
  if (r.ratios) {
    out.push(`  ratio adainfer / node-llama-cpp:    prefill ${fmt(r.ratios.vsNodeLlamaCpp.prefill)}   decode ${fmt(r.ratios.vsNodeLlamaCpp.decode)}`);
    if (r.ratios.vsLlamaCppCore)
      out.push(`  ratio adainfer / llama.cpp core:    prefill ${fmt(r.ratios.vsLlamaCppCore.prefill)}   decode ${fmt(r.ratios.vsLlamaCppCore.decode)}`);
  }
  return out;
}

function formatModel(d: ModelDescription): string {
  const parts = [
    displayPath(d.path),
    fmtBytes(d.fileBytes),
    fmtParams(d.parameters),
    d.fileType ?? 'general.file_type unset',
    d.tensorTypes ? `(${d.tensorTypes})` : '',
    d.nLayer !== undefined ? `${d.nLayer} layers, dim ${d.nEmbd}, vocab ${d.nVocab}, context ${d.contextLength}` : '',
  ];
  return parts.filter(Boolean).join(', ').replace(', (', ' (');
}

function formatSummary(results: ConfigResult[]): string[] {
  const both = results.some((r) => r.ratios);
  const head = ['model', 'threads', 'prompt', 'gen'];
  const engines = [...new Set(results.flatMap((r) => r.engines.map((e) => e.engine)))];
  for (const phase of ['prefill', 'decode']) {
    for (const e of engines) head.push(`${phase} ${e === 'adainfer' ? 'adainfer' : 'nlc'}`);
    if (both) head.push(`${phase} ratio`);
  }
  const rows = [head];
  for (const r of results) {
    const row = [r.model.name, String(r.threads), String(r.promptTokens) + (r.promptClamped ? '*' : ''), String(r.genTokens)];
    for (const phase of ['prefill', 'decode'] as const) {
      for (const e of engines) row.push(fmtRate(r.engines.find((x) => x.engine === e)?.[phase].tokensPerSecond.median ?? NaN));
      if (both) row.push(r.ratios ? fmtRatio(r.ratios.vsNodeLlamaCpp[phase].ofMedians) : '');
    }
    rows.push(row);
  }
  return table(rows, ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r']).map((l) => '  ' + l);
}

function formatOverhead(o: OverheadResult): string[] {
  const out = [
    `  model ${displayPath(o.model)} (${o.nLayer} layers), in-process TransformerModel on the main thread`,
    `  ctx.native.noop()                ${fmtNs(o.noopNs)}/call (median of ${o.trials} x ${o.calls.toLocaleString('en-US')} calls; ${fmtNs(o.noopNsRange[0])} - ${fmtNs(o.noopNsRange[1])})`,
  ];
  for (const t of o.perThreads) {
    out.push(
      `  threads ${t.threads}: attention+mlp pair at decode (n=1, pos ${o.position}) ${fmtNs(t.layerPairNs)} ` +
        `(min ${fmtNs(t.layerPairNsMin)}, IQR ${fmtNs(t.layerPairNsIqr[0])} - ${fmtNs(t.layerPairNsIqr[1])}); one call = ${t.noopPercentOfLayerPair.toFixed(2)}% of a layer pair; ` +
        `${t.callsPerToken} calls/token = ${t.overheadPercentOfToken.toFixed(2)}% of a token's layers`,
    );
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Main

export interface ThroughputReport {
  benchmark: 'throughput';
  machine: MachineInfo;
  settings: Omit<Options, 'json' | 'models'> & { models: string[] };
  adainfer: { version: string } | undefined;
  peer: (PeerInfo & { warnings: string[] }) | undefined;
  results: ConfigResult[];
  callOverhead: OverheadResult | undefined;
  notes: string[];
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv);
  const out = opts.json ? process.stderr : process.stdout;
  const print = (line = '') => out.write(line + '\n');
  const log = (m: string) => process.stderr.write(m + '\n');
  const root = repoRoot();
  const machine = describeMachine();
  const notes: string[] = [];

  const cpus = machine.availableParallelism;
  if (opts.threads.some((t) => t > cpus))
    notes.push(`threads ${opts.threads.filter((t) => t > cpus).join(',')} exceed the ${cpus} CPUs available: both engines are oversubscribed`);
  if (cpus > 1 && opts.threads.includes(cpus))
    notes.push(`threads ${cpus} = every CPU of this machine: no core is left for Node, the OS or neighbours, so expect noisy, bimodal numbers there (check IQR and min/max)`);

  // Models and the prompt length each can take.
  const plans = opts.models.map((m) => {
    const desc = describeModel(m);
    if (desc.error || desc.contextLength === undefined || desc.nVocab === undefined)
      throw new Error(`cannot read the GGUF header of ${m}: ${desc.error ?? 'no context length / vocabulary size'}`);
    // One position stays free: node-llama-cpp shifts the context (drops tokens) as soon as the last one fills.
    const room = Math.min(desc.contextLength, 2048) - opts.gen - 1;
    if (room < 1)
      throw new Error(`--gen ${opts.gen} leaves no room for a prompt in the ${desc.contextLength}-token context of ${desc.name}`);
    const prompt = Math.min(opts.prompt, room);
    if (prompt < opts.prompt)
      notes.push(`${desc.name}: prompt clamped from ${opts.prompt} to ${prompt} tokens (context ${desc.contextLength} - gen ${opts.gen} - 1)`);
    return { desc, prompt };
  });

  let peer: LlamaCppPeer | undefined;
  const pkgVersion = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
  const results: ConfigResult[] = [];
  let overhead: OverheadResult | undefined;

  try {
    if (opts.engines.includes('llamacpp')) {
      log('[bench] starting node-llama-cpp (CPU only)...');
      peer = await LlamaCppPeer.start({ log });
    }
    let loadModel: typeof import('../lib/api').loadModel | undefined;
    if (opts.engines.includes('adainfer')) {
      try {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        loadModel = (require('../lib/api') as typeof import('../lib/api')).loadModel;
      } catch (err) {
        throw new Error(`cannot load adainfer (is it built? npx tsc -p tsconfig.json; npx node-gyp rebuild): ${(err as Error).message}`);
      }
    }

    print('adainfer throughput benchmark: prefill / decode tokens/s beside node-llama-cpp');
    print();
    print('machine');
    for (const l of formatMachine(machine)) print('  ' + l);
    print();
    print('engines');
    if (opts.engines.includes('adainfer')) print(`  adainfer ${pkgVersion} (session.bench inside the model worker: random tokens, no per-token messages)`);
    if (peer) {
      print(
        `  node-llama-cpp ${peer.info.nodeLlamaCpp} (${peer.info.buildType}, llama.cpp ${peer.info.llamaCpp}, CPU backend ${peer.info.cpuBackend ?? '?'}, gpu: ${peer.info.gpu})`,
      );
      print(`    ${peer.info.systemInfo}`);
    }
    print();
    print('settings');
    print(
      `  threads ${opts.threads.join(', ')} | prompt ${opts.prompt} tokens | gen ${opts.gen} tokens | reps ${opts.reps} (+${opts.warmup} warmup) per engine, ` +
        `alternating ${opts.engines.map((e) => ENGINE_LABEL[e]).join(' / ')}`,
    );
    for (const n of notes) print(`  note: ${n}`);

    for (const plan of plans) {
      const { desc, prompt } = plan;
      print();
      print(`model ${formatModel(desc)}`);
      const models: ModelEngines = {};
      try {
        if (loadModel) models.adainfer = await loadModel(desc.path, { threads: opts.threads[0] });
        if (peer) models.llamacpp = await peer.loadModel(desc.path);
        for (const threads of opts.threads) {
          log(`[bench] ${desc.name}, threads ${threads}, prompt ${prompt}, gen ${opts.gen}, reps ${opts.reps}`);
          const r = await runConfig(opts, desc, models, threads, prompt, log);
          results.push(r);
          print();
          print(`  threads ${threads} | prompt ${prompt}${r.promptClamped ? ' (clamped)' : ''} | gen ${opts.gen} | reps ${opts.reps}` +
            r.engines.map((e) => ` | ${ENGINE_LABEL[e.engine]}: ${Object.entries(e.settings).map(([k, v]) => `${k} ${v}`).join(', ')}`).join(''));
          for (const l of formatConfig(r)) print(l);
        }
      } finally {
        await models.adainfer?.dispose();
        await models.llamacpp?.dispose();
      }
    }

    if (results.length > 0) {
      print();
      print('summary: median tokens/s (ratio = adainfer / node-llama-cpp; > 1 means adainfer is faster)');
      for (const l of formatSummary(results)) print(l);
    }

    if (opts.overhead && opts.engines.includes('adainfer')) {
      const bundled = path.join(root, 'models', 'adainfer-tinystories-10L-ee.f16.gguf');
      const d = describeModel(bundled);
      const position = Math.min(opts.prompt, (d.contextLength ?? 256) - 1);
      log('[bench] N-API call overhead');
      overhead = await measureOverhead(bundled, opts.threads, position, log);
      print();
      print('N-API call overhead');
      for (const l of formatOverhead(overhead)) print(l);
      for (const t of overhead.perThreads) {
        const r = results.find((x) => x.model.path === bundled && x.threads === t.threads);
        const a = r?.engines.find((e) => e.engine === 'adainfer');
        if (a) {
          const tokenNs = a.decode.msPerToken * 1e6;
          print(
            `  threads ${t.threads}: a decoded token (session.bench above) takes ${fmtNs(tokenNs)}: its ${t.callsPerToken} native calls ` +
              `cost ~${fmtNs(t.callsPerToken * overhead.noopNs)} = ${((100 * t.callsPerToken * overhead.noopNs) / tokenNs).toFixed(2)}% of it`,
          );
        }
      }
    }
    if (peer && peer.warnings.length > 0) {
      print();
      print(`llama.cpp warnings (${peer.warnings.length}): ${[...new Set(peer.warnings)].slice(0, 5).join(' | ')}`);
    }
  } finally {
    await peer?.dispose();
  }

  if (opts.json) {
    const report: ThroughputReport = {
      benchmark: 'throughput',
      machine,
      settings: {
        models: opts.models,
        threads: opts.threads,
        prompt: opts.prompt,
        gen: opts.gen,
        reps: opts.reps,
        warmup: opts.warmup,
        engines: opts.engines,
        overhead: opts.overhead,
      },
      adainfer: opts.engines.includes('adainfer') ? { version: pkgVersion } : undefined,
      peer: peer ? { ...peer.info, warnings: [...new Set(peer.warnings)] } : undefined,
      results,
      callOverhead: overhead,
      notes,
    };
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  }
}

if (require.main === module) {
  // Keeps the event loop alive for the whole run: an engine may await work whose handle is unref'd (adainfer's
  // Model.dispose() awaits its worker without ref'ing it), and Node would then exit silently with code 0.
  const keepAlive = setInterval(() => undefined, 1 << 30);
  main()
    .catch((err: unknown) => {
      process.stderr.write(`[bench] error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    })
    .finally(() => clearInterval(keepAlive));
}

export { NODE_LLAMA_CPP_VERSION };
