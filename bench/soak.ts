/**
 * Soak test (issue 20): on one model, for a fixed time, what a server holding the model runs at once —
 *   - `--sessions` sessions (default 4), each issuing generation requests back to back (prompts and lengths drawn
 *     from a seeded generator, sampled at temperature 0.8 with a per-request seed, streamed so the time to first
 *     token is measured);
 *   - a `generateBatch` loop (a few prompts per batch, sampled, seeded);
 *   - a `session.classify` loop on a session of its own (two labels; every other request with the model's shipped
 *     exit file, when it has one).
 * Every request is checked (token counts, stop reasons, probabilities; one request in eight is repeated and must
 * give the same result). Reports per workload kind: requests, tokens, latency p50 / p99 / max (nearest rank,
 * lib/latency/quantiles.ts) and errors (must be 0: the exit code is 1 otherwise); the event loop's worst delay;
 * resident memory sampled each second, reported at the checkpoint (`--rss-checkpoint`, default minute 5) and at
 * the end, with the growth between them.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/soak.js [--seconds 30] [--sessions 4] [--model PATH]
 *       [--threads N] [--max-tokens 48] [--context 256] [--batch-prompts 3] [--rss-checkpoint 300] [--seed 1] [--json]
 *
 * The issue's soak: `--seconds 1800` on a quiet machine (RSS at minute 5 and minute 30). This is a benchmark, not
 * a test: nothing in `npm test` runs it (.ci/run runs a short one).
 */
import * as fs from 'fs';
import * as path from 'path';
import { Command, InvalidArgumentError } from 'commander';
import { loadModel, Model, Session, TokenEvent } from '../lib/api';
import { findShippedExitFile } from '../lib/cli/exit_choice';
import { STORY_PROMPTS } from '../lib/latency/prompts';
import { Distribution, distribution } from '../lib/latency/quantiles';
import { describeMachine, formatMachine, MachineInfo, repoRoot } from './machine';

interface Options {
  model: string;
  seconds: number;
  sessions: number;
  threads: number | undefined;
  maxTokens: number;
  context: number | undefined;
  batchPrompts: number;
  rssCheckpoint: number;
  seed: number;
  json: boolean;
}

/** The concurrent workloads: generation sessions, a generateBatch loop, a classify loop. */
type WorkloadKind = 'session' | 'batch' | 'classify';
const KINDS: WorkloadKind[] = ['session', 'batch', 'classify'];

/**
 * What the run keeps of its requests: counts, and latencies in flat number arrays (8 bytes a figure), never an
 * object per request. A 30-minute run makes about 750k requests: kept as objects they grew the heap by ~90 MB,
 * which a reader of the RSS figures could not tell from a leak in the runtime.
 */
class Tally {
  readonly latencyMs: Record<WorkloadKind, number[]> = { session: [], batch: [], classify: [] };
  readonly tokens: Record<WorkloadKind, number> = { session: 0, batch: 0, classify: 0 };
  /** Sessions only. */
  readonly firstTokenMs: number[] = [];
  readonly perSession: { requests: number; tokens: number }[];
  readonly stopReasons: Record<string, number> = {};

  constructor(sessions: number) {
    this.perSession = Array.from({ length: sessions }, () => ({ requests: 0, tokens: 0 }));
  }

  add(kind: WorkloadKind, latencyMs: number, tokens: number): void {
    this.latencyMs[kind].push(latencyMs);
    this.tokens[kind] += tokens;
  }

  addSession(session: number, latencyMs: number, firstTokenMs: number | undefined, tokens: number, stopReason: string): void {
    this.add('session', latencyMs, tokens);
    if (firstTokenMs !== undefined) this.firstTokenMs.push(firstTokenMs);
    this.perSession[session].requests++;
    this.perSession[session].tokens += tokens;
    this.stopReasons[stopReason] = (this.stopReasons[stopReason] ?? 0) + 1;
  }

  get requests(): number {
    return KINDS.reduce((a, k) => a + this.latencyMs[k].length, 0);
  }

  get allTokens(): number {
    return KINDS.reduce((a, k) => a + this.tokens[k], 0);
  }
}

interface RssSample {
  t: number;
  rssMB: number;
  heapMB: number;
}

/** One workload kind's figures. Latency: per request (a whole generation, batch or classification), ms. */
export interface WorkloadReport {
  requests: number;
  /** Generated tokens (classify: 0). */
  tokens: number;
  requestsPerSecond: number;
  latencyMs: Distribution;
  errors: number;
  errorSamples: string[];
}

export interface SoakReport {
  machine: MachineInfo;
  model: string;
  sessions: number;
  seconds: number;
  threads: number;
  kernels: string;
  /** The classify loop's exit file on its odd requests (null: full depth only). */
  classifyExitFile: string | null;
  requests: number;
  tokens: number;
  requestsPerSecond: number;
  tokensPerSecond: number;
  /** Generation sessions' requests (as before the other workloads were added). */
  latencyMs: Distribution;
  firstTokenMs: Distribution;
  workloads: Record<WorkloadKind, WorkloadReport>;
  perSession: { session: number; requests: number; tokens: number }[];
  stopReasons: Record<string, number>;
  errors: number;
  errorSamples: string[];
  eventLoopMaxDelayMs: number;
  rss: RssSample[];
  rssMB: {
    start: number;
    /** At --rss-checkpoint seconds into serving (default minute 5); null when the run was shorter. */
    checkpoint: { t: number; rssMB: number; heapMB: number } | null;
    end: { t: number; rssMB: number; heapMB: number };
    /**
     * end − checkpoint (MB), and per minute between them; null without a checkpoint. Two samples of a sawtooth (the
     * JS heap grows between collections): slopeMBPerMin, a least-squares fit over every sample, is the leak signal.
     */
    growthMB: number | null;
    growthMBPerMin: number | null;
    max: number;
    afterDispose: number;
    slopeMBPerMin: number;
  };
}

const PROMPTS = STORY_PROMPTS;
const CLASSIFY_LABELS = [' happy', ' sad'];

/** xorshift32: the same request mix for a given --seed. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

/** Least-squares slope of rss over time, in MB per minute. */
function slope(samples: RssSample[]): number {
  if (samples.length < 2) return 0;
  const n = samples.length;
  const mt = samples.reduce((a, s) => a + s.t, 0) / n;
  const mr = samples.reduce((a, s) => a + s.rssMB, 0) / n;
  let num = 0;
  let den = 0;
  for (const s of samples) {
    num += (s.t - mt) * (s.rssMB - mr);
    den += (s.t - mt) ** 2;
  }
  return den > 0 ? (num / den) * 60 : 0;
}

async function sessionLoop(
  id: number,
  session: Session,
  o: Options,
  deadline: number,
  tally: Tally,
  errors: SoakError[],
): Promise<void> {
  const random = rng(o.seed * 7919 + id);
  while (performance.now() < deadline) {
    const prompt = PROMPTS[Math.floor(random() * PROMPTS.length)];
    const maxTokens = 1 + Math.floor(random() * o.maxTokens);
    const seed = Math.floor(random() * 2 ** 32);
    const start = performance.now();
    let first: number | undefined;
    const events: TokenEvent[] = [];
    try {
      for await (const e of session.stream(prompt, { maxTokens, temperature: 0.8, seed })) {
        if (first === undefined) first = performance.now() - start;
        events.push(e);
      }
      // The same request again must give the same tokens (seeded sampling, KV prefix reuse): a cheap
      // correctness check under load, done for one request in eight.
      if (random() < 0.125) {
        const again = await session.generate(prompt, { maxTokens, temperature: 0.8, seed });
        const a = again.tokens.join(',');
        const b = events.map((e) => e.token).join(',');
        if (a !== b) throw new Error(`a repeated request gave different tokens: [${a}] vs [${b}]`);
      }
      if (events.length === 0 || events.length > maxTokens) throw new Error(`${events.length} tokens for maxTokens ${maxTokens}`);
      const latency = performance.now() - start;
      tally.addSession(id, latency, first, events.length, events.length === maxTokens ? 'maxTokens' : 'eos');
    } catch (err) {
      errors.push({ kind: 'session', message: `session ${id}: ${describeError(err)}` });
    }
  }
}

function describeError(err: unknown): string {
  return err instanceof Error ? `${(err as { code?: string }).code ?? err.name}: ${err.message}` : String(err);
}

interface SoakError {
  kind: WorkloadKind;
  message: string;
}

/** generateBatch back to back: `batchPrompts` sampled prompts a batch; one batch in eight is repeated and must match. */
async function batchLoop(model: Model, o: Options, deadline: number, tally: Tally, errors: SoakError[]): Promise<void> {
  const random = rng(o.seed * 104729 + 17);
  while (performance.now() < deadline) {
    const prompts = Array.from({ length: o.batchPrompts }, () => ({ prompt: PROMPTS[Math.floor(random() * PROMPTS.length)], maxTokens: 1 + Math.floor(random() * o.maxTokens) }));
    const seed = Math.floor(random() * 2 ** 32);
    const start = performance.now();
    try {
      const options = { temperature: 0.8, seed, batchSize: o.batchPrompts, ...(o.context !== undefined && { contextSize: o.context }) };
      const r = await model.generateBatch(prompts, options);
      if (r.results.length !== prompts.length) throw new Error(`${r.results.length} results for ${prompts.length} prompts`);
      r.results.forEach((res, i) => {
        if (res.index !== i) throw new Error(`result ${i} has index ${res.index}`);
        if (res.tokens.length > prompts[i].maxTokens || (res.tokens.length < prompts[i].maxTokens && res.stopReason !== 'eos'))
          throw new Error(`prompt ${i}: ${res.tokens.length} tokens for maxTokens ${prompts[i].maxTokens}, stop ${res.stopReason}`);
      });
      if (random() < 0.125) {
        const again = await model.generateBatch(prompts, options);
        const a = again.results.map((x) => x.tokens.join(',')).join('|');
        const b = r.results.map((x) => x.tokens.join(',')).join('|');
        if (a !== b) throw new Error('a repeated batch gave different tokens');
      }
      const tokens = r.results.reduce((a, x) => a + x.tokens.length, 0);
      tally.add('batch', performance.now() - start, tokens);
    } catch (err) {
      errors.push({ kind: 'batch', message: `batch: ${describeError(err)}` });
    }
  }
}

/**
 * session.classify back to back on a session of its own: a prompt and two labels, every other request through the
 * model's shipped exit file (when it has one); one in eight repeated, which must give the same exit layer and
 * the same probabilities bit for bit.
 */
async function classifyLoop(session: Session, exitFile: string | undefined, o: Options, deadline: number, tally: Tally, errors: SoakError[]): Promise<void> {
  const random = rng(o.seed * 15485863 + 29);
  let n = 0;
  while (performance.now() < deadline) {
    const prompt = `${PROMPTS[Math.floor(random() * PROMPTS.length)]} The end. The story was`;
    const options = exitFile !== undefined && n++ % 2 === 1 ? { exit: exitFile } : {};
    const start = performance.now();
    try {
      const r = await session.classify(prompt, CLASSIFY_LABELS, options);
      const sum = r.probs.reduce((a, b) => a + b, 0);
      if (r.probs.length !== CLASSIFY_LABELS.length || !(Math.abs(sum - 1) < 1e-4)) throw new Error(`probabilities ${JSON.stringify(r.probs)} do not sum to 1`);
      if (r.label !== CLASSIFY_LABELS[r.index] || r.probs[r.index] !== Math.max(...r.probs)) throw new Error(`label ${r.index} is not the most probable of ${JSON.stringify(r.probs)}`);
      if (random() < 0.125) {
        // The repeat finds the prompt in the cache and runs its last step again with the same rows: the same
        // figures bit for bit.
        const again = await session.classify(prompt, CLASSIFY_LABELS, options);
        if (again.probs.some((p, i) => p !== r.probs[i]) || again.exitLayer !== r.exitLayer)
          throw new Error(`a repeated classification gave another result: probabilities ${JSON.stringify(again.probs)} vs ${JSON.stringify(r.probs)}, exit layer ${again.exitLayer} vs ${r.exitLayer}`);
      }
      tally.add('classify', performance.now() - start, 0);
    } catch (err) {
      errors.push({ kind: 'classify', message: `classify: ${describeError(err)}` });
    }
  }
}

export async function soak(o: Options): Promise<SoakReport> {
  const rss: RssSample[] = [];
  const t0 = performance.now();
  const sample = () => {
    const m = process.memoryUsage();
    rss.push({ t: (performance.now() - t0) / 1000, rssMB: m.rss / 2 ** 20, heapMB: m.heapUsed / 2 ** 20 });
  };
  sample();
  const sampler = setInterval(sample, 1000);
  // Event-loop delay: a 10 ms timer's lateness (the worker thread must keep the main loop free).
  let lastTick = performance.now();
  let maxDelay = 0;
  const ticker = setInterval(() => {
    const now = performance.now();
    maxDelay = Math.max(maxDelay, now - lastTick - 10);
    lastTick = now;
  }, 10);

  const model: Model = await loadModel(o.model, o.threads !== undefined ? { threads: o.threads } : {});
  const tally = new Tally(o.sessions);
  const errors: SoakError[] = [];
  const sessions: Session[] = [];
  const sessionOptions = o.context !== undefined ? { contextSize: o.context } : {};
  for (let i = 0; i < o.sessions; i++) sessions.push(await model.createSession(sessionOptions));
  const classifySession = await model.createSession(sessionOptions);
  const classifyExitFile = findShippedExitFile({ ...model.info });
  const start = performance.now();
  const deadline = start + o.seconds * 1000;
  await Promise.all([
    ...sessions.map((s, i) => sessionLoop(i, s, o, deadline, tally, errors)),
    batchLoop(model, o, deadline, tally, errors),
    classifyLoop(classifySession, classifyExitFile, o, deadline, tally, errors),
  ]);
  const elapsed = (performance.now() - start) / 1000;
  sample();
  const endSample = rss[rss.length - 1];
  for (const s of [...sessions, classifySession]) await s.dispose();
  const kernels = model.info.kernels;
  const threads = model.threads;
  await model.dispose();
  clearInterval(sampler);
  clearInterval(ticker);
  const afterDispose = process.memoryUsage().rss / 2 ** 20;

  const tokens = tally.allTokens;
  const workloads = Object.fromEntries(
    KINDS.map((kind): [WorkloadKind, WorkloadReport] => {
      const latencies = tally.latencyMs[kind];
      const es = errors.filter((e) => e.kind === kind);
      return [kind, { requests: latencies.length, tokens: tally.tokens[kind], requestsPerSecond: latencies.length / elapsed, latencyMs: distribution(latencies), errors: es.length, errorSamples: es.slice(0, 5).map((e) => e.message) }];
    }),
  ) as Record<WorkloadKind, WorkloadReport>;
  // Memory while serving: from the first sample after the model loaded to the end of the run.
  const servingFrom = (start - t0) / 1000;
  const serving = rss.filter((s) => s.t >= servingFrom);
  const checkpointSample = o.rssCheckpoint < elapsed ? serving.find((s) => s.t - servingFrom >= o.rssCheckpoint) : undefined;
  const end = { t: endSample.t - servingFrom, rssMB: endSample.rssMB, heapMB: endSample.heapMB };
  const checkpoint = checkpointSample ? { t: checkpointSample.t - servingFrom, rssMB: checkpointSample.rssMB, heapMB: checkpointSample.heapMB } : null;
  return {
    machine: describeMachine(),
    model: o.model,
    sessions: o.sessions,
    seconds: elapsed,
    threads,
    kernels,
    classifyExitFile: classifyExitFile ?? null,
    requests: tally.requests,
    tokens,
    requestsPerSecond: tally.requests / elapsed,
    tokensPerSecond: tokens / elapsed,
    latencyMs: distribution(tally.latencyMs.session),
    firstTokenMs: distribution(tally.firstTokenMs),
    workloads,
    perSession: tally.perSession.map((p, session) => ({ session, ...p })),
    stopReasons: tally.stopReasons,
    errors: errors.length,
    errorSamples: errors.slice(0, 5).map((e) => e.message),
    eventLoopMaxDelayMs: maxDelay,
    rss,
    rssMB: {
      start: serving[0]?.rssMB ?? NaN,
      checkpoint,
      end,
      growthMB: checkpoint ? end.rssMB - checkpoint.rssMB : null,
      growthMBPerMin: checkpoint && end.t > checkpoint.t ? ((end.rssMB - checkpoint.rssMB) * 60) / (end.t - checkpoint.t) : null,
      max: Math.max(...rss.map((s) => s.rssMB)),
      afterDispose,
      slopeMBPerMin: slope(serving.length >= 5 ? serving.slice(Math.floor(serving.length / 5)) : serving), // past warm-up
    },
  };
}

export function formatReport(r: SoakReport): string {
  const f = (v: number | null, d = 1) => (v !== null && Number.isFinite(v) ? v.toFixed(d) : '-');
  const m = r.rssMB;
  const lines = [
    ...formatMachine(r.machine),
    `soak: ${path.basename(r.model)}, ${r.sessions} sessions + a generateBatch loop + a classify loop on one model, ${f(r.seconds)} s, threads ${r.threads}, kernels ${r.kernels}`,
    '',
    `  requests        ${String(r.requests).padStart(8)}   ${f(r.requestsPerSecond, 2)} /s`,
    `  tokens          ${String(r.tokens).padStart(8)}   ${f(r.tokensPerSecond, 1)} /s`,
    ...KINDS.map((k) => {
      const w = r.workloads[k];
      return `  ${k.padEnd(9)} ${String(w.requests).padStart(6)} req  ${String(w.tokens).padStart(7)} tok   latency ms p50 ${f(w.latencyMs.p50)}  p99 ${f(w.latencyMs.p99)}  max ${f(w.latencyMs.max)}   errors ${w.errors}`;
    }),
    `  first token ms  p50 ${f(r.firstTokenMs.p50)}   p99 ${f(r.firstTokenMs.p99)}   max ${f(r.firstTokenMs.max)}  (sessions)`,
    `  per session     ${r.perSession.map((s) => `#${s.session}: ${s.requests} req / ${s.tokens} tok`).join(', ')}`,
    `  stop reasons    ${Object.entries(r.stopReasons).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `  classify exit   ${r.classifyExitFile ? `${path.basename(r.classifyExitFile)} on every other request` : 'none (full depth)'}`,
    `  errors          ${r.errors}${r.errors > 0 ? `   e.g. ${r.errorSamples.join(' | ')}` : ''}`,
    `  event loop      worst delay ${f(r.eventLoopMaxDelayMs)} ms`,
    `  RSS MB          start ${f(m.start)}   at ${m.checkpoint ? `${f(m.checkpoint.t, 0)} s ${f(m.checkpoint.rssMB)} (heap ${f(m.checkpoint.heapMB)})` : 'checkpoint: run too short'}   at end (${f(m.end.t, 0)} s) ${f(m.end.rssMB)} (heap ${f(m.end.heapMB)})   growth ${m.growthMB === null ? '-' : `${f(m.growthMB)} MB (${f(m.growthMBPerMin, 3)} MB/min)`}`,
    `                  max ${f(m.max)}   trend (least squares past warm-up) ${f(m.slopeMBPerMin, 2)} MB/min   after dispose ${f(m.afterDispose)}`,
    '',
    '  RSS over time (MB, one sample per second):',
  ];
  for (let i = 0; i < r.rss.length; i += 10) {
    lines.push('    ' + r.rss.slice(i, i + 10).map((s) => `${f(s.t, 0).padStart(4)}s ${f(s.rssMB).padStart(6)}`).join(' '));
  }
  return lines.join('\n');
}

function intArg(name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be an integer in [${min}, ${max}]`);
    return n;
  };
}

function parseOptions(argv: string[]): Options {
  const program = new Command()
    .name('node dist/bench/soak.js')
    .description('concurrent sessions, a generateBatch loop and a classify loop on one model for a fixed time: throughput, latency per workload, errors, resident memory')
    .option('--model <path>', 'GGUF model (default: the bundled model)')
    .option('--seconds <n>', 'how long to run', intArg('--seconds', 1, 7 * 24 * 3600), 30)
    .option('--sessions <n>', 'concurrent sessions', intArg('--sessions', 1, 256), 4)
    .option('--threads <n>', 'kernel threads (default: physical cores)', intArg('--threads', 1, 1024))
    .option('--max-tokens <n>', 'each request generates 1..n tokens', intArg('--max-tokens', 1), 48)
    .option('--context <n>', 'context size of each session (default: the model context, at most 2048)', intArg('--context', 1))
    .option('--batch-prompts <n>', 'prompts per generateBatch call', intArg('--batch-prompts', 1, 256), 3)
    .option('--rss-checkpoint <s>', 'seconds into serving at which RSS is reported (growth is measured from there to the end)', intArg('--rss-checkpoint', 1), 300)
    .option('--seed <n>', 'seed of the request mix', intArg('--seed', 0), 1)
    .option('--json', 'print a JSON object on stdout (the table goes to stderr)')
    .showHelpAfterError('(run with --help for usage)')
    .parse(argv);
  const o = program.opts<{ model?: string; seconds: number; sessions: number; threads?: number; maxTokens: number; context?: number; batchPrompts: number; rssCheckpoint: number; seed: number; json?: boolean }>();
  if (program.args.length > 0) program.error(`unexpected argument(s): ${program.args.join(' ')}`);
  const model = path.resolve(o.model ?? path.join(repoRoot(), 'models', 'adainfer-tinystories-10L-ee.f16.gguf'));
  if (!fs.existsSync(model)) program.error(`error: model file not found: ${model}`);
  return { model, seconds: o.seconds, sessions: o.sessions, threads: o.threads, maxTokens: o.maxTokens, context: o.context, batchPrompts: o.batchPrompts, rssCheckpoint: o.rssCheckpoint, seed: o.seed, json: o.json === true };
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv);
  const report = await soak(o);
  const table = formatReport(report);
  if (o.json) {
    process.stderr.write(table + '\n');
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  } else {
    process.stdout.write(table + '\n');
  }
  // Every workload must have run and none may have failed.
  if (report.errors > 0 || KINDS.some((k) => report.workloads[k].requests === 0)) process.exitCode = 1;
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
