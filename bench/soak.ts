/**
 * Soak test: concurrent sessions on one model for a fixed time, as a server holding a model would run them.
 * Each session issues generation requests back to back (prompts and lengths drawn from a seeded generator,
 * sampled at temperature 0.8 with a per-request seed, streamed so the time to first token is measured);
 * every request is checked (tokens, text, stop reason). Reports throughput (tokens/s, requests/s), latency
 * per request (p50 / p99 / max, and time to first token), errors (must be 0: the exit code is 1 otherwise),
 * the event loop's worst delay, and resident memory sampled each second.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/soak.js [--seconds 30] [--sessions 4] [--model PATH]
 *       [--threads N] [--max-tokens 48] [--context 256] [--seed 1] [--json]
 *
 * This is a benchmark, not a test: nothing in `npm test` runs it (.ci/run runs a short one).
 */
import * as fs from 'fs';
import * as path from 'path';
import { Command, InvalidArgumentError } from 'commander';
import { loadModel, Model, Session, TokenEvent } from '../lib/api';
import { describeMachine, formatMachine, MachineInfo, repoRoot } from './machine';

interface Options {
  model: string;
  seconds: number;
  sessions: number;
  threads: number | undefined;
  maxTokens: number;
  context: number | undefined;
  seed: number;
  json: boolean;
}

interface RequestRecord {
  session: number;
  startMs: number;
  latencyMs: number;
  firstTokenMs: number | undefined;
  tokens: number;
  stopReason: string;
}

interface RssSample {
  t: number;
  rssMB: number;
  heapMB: number;
}

export interface SoakReport {
  machine: MachineInfo;
  model: string;
  sessions: number;
  seconds: number;
  threads: number;
  kernels: string;
  requests: number;
  tokens: number;
  requestsPerSecond: number;
  tokensPerSecond: number;
  latencyMs: { p50: number; p99: number; max: number; mean: number };
  firstTokenMs: { p50: number; p99: number; max: number };
  perSession: { session: number; requests: number; tokens: number }[];
  stopReasons: Record<string, number>;
  errors: number;
  errorSamples: string[];
  eventLoopMaxDelayMs: number;
  rss: RssSample[];
  rssMB: { start: number; end: number; max: number; afterDispose: number; slopeMBPerMin: number };
}

const PROMPTS = [
  'Once upon a time',
  'One day, a little girl named Lily',
  'Tom and his dog went to the park.',
  'The sun was shining and the birds were singing.',
  'There was a big red ball in the garden',
  'Mom said, "Time for bed!"',
  'Ben wanted to build a tall tower',
  'A small cat lived in a house near the sea.',
];

/** Nearest-rank quantile of sorted values. */
function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

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
  t0: number,
  records: RequestRecord[],
  errors: string[],
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
      records.push({ session: id, startMs: start - t0, latencyMs: latency, firstTokenMs: first, tokens: events.length, stopReason: events.length === maxTokens ? 'maxTokens' : 'eos' });
    } catch (err) {
      errors.push(`session ${id}: ${err instanceof Error ? `${(err as { code?: string }).code ?? err.name}: ${err.message}` : String(err)}`);
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
  const records: RequestRecord[] = [];
  const errors: string[] = [];
  const sessions: Session[] = [];
  for (let i = 0; i < o.sessions; i++) sessions.push(await model.createSession(o.context !== undefined ? { contextSize: o.context } : {}));
  const start = performance.now();
  const deadline = start + o.seconds * 1000;
  await Promise.all(sessions.map((s, i) => sessionLoop(i, s, o, deadline, t0, records, errors)));
  const elapsed = (performance.now() - start) / 1000;
  sample();
  const endRss = rss[rss.length - 1].rssMB;
  for (const s of sessions) await s.dispose();
  const kernels = model.info.kernels;
  const threads = model.threads;
  await model.dispose();
  clearInterval(sampler);
  clearInterval(ticker);
  const afterDispose = process.memoryUsage().rss / 2 ** 20;

  const lat = records.map((r) => r.latencyMs).sort((a, b) => a - b);
  const ttft = records.map((r) => r.firstTokenMs).filter((v): v is number => v !== undefined).sort((a, b) => a - b);
  const tokens = records.reduce((a, r) => a + r.tokens, 0);
  const stopReasons: Record<string, number> = {};
  for (const r of records) stopReasons[r.stopReason] = (stopReasons[r.stopReason] ?? 0) + 1;
  // Memory while serving: from the first sample after the model loaded to the end of the run.
  const serving = rss.filter((s) => s.t >= (start - t0) / 1000);
  return {
    machine: describeMachine(),
    model: o.model,
    sessions: o.sessions,
    seconds: elapsed,
    threads,
    kernels,
    requests: records.length,
    tokens,
    requestsPerSecond: records.length / elapsed,
    tokensPerSecond: tokens / elapsed,
    latencyMs: { p50: quantile(lat, 0.5), p99: quantile(lat, 0.99), max: lat[lat.length - 1] ?? NaN, mean: lat.reduce((a, v) => a + v, 0) / Math.max(1, lat.length) },
    firstTokenMs: { p50: quantile(ttft, 0.5), p99: quantile(ttft, 0.99), max: ttft[ttft.length - 1] ?? NaN },
    perSession: sessions.map((_, i) => ({
      session: i,
      requests: records.filter((r) => r.session === i).length,
      tokens: records.filter((r) => r.session === i).reduce((a, r) => a + r.tokens, 0),
    })),
    stopReasons,
    errors: errors.length,
    errorSamples: errors.slice(0, 5),
    eventLoopMaxDelayMs: maxDelay,
    rss,
    rssMB: {
      start: serving[0]?.rssMB ?? NaN,
      end: endRss,
      max: Math.max(...rss.map((s) => s.rssMB)),
      afterDispose,
      slopeMBPerMin: slope(serving.length >= 5 ? serving.slice(Math.floor(serving.length / 5)) : serving), // past warm-up
    },
  };
}

export function formatReport(r: SoakReport): string {
  const f = (v: number, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : '-');
  const lines = [
    ...formatMachine(r.machine),
    `soak: ${path.basename(r.model)}, ${r.sessions} sessions on one model, ${f(r.seconds)} s, threads ${r.threads}, kernels ${r.kernels}`,
    '',
    `  requests        ${String(r.requests).padStart(8)}   ${f(r.requestsPerSecond, 2)} /s`,
    `  tokens          ${String(r.tokens).padStart(8)}   ${f(r.tokensPerSecond, 1)} /s`,
    `  latency ms      p50 ${f(r.latencyMs.p50)}   p99 ${f(r.latencyMs.p99)}   max ${f(r.latencyMs.max)}   mean ${f(r.latencyMs.mean)}`,
    `  first token ms  p50 ${f(r.firstTokenMs.p50)}   p99 ${f(r.firstTokenMs.p99)}   max ${f(r.firstTokenMs.max)}`,
    `  per session     ${r.perSession.map((s) => `#${s.session}: ${s.requests} req / ${s.tokens} tok`).join(', ')}`,
    `  stop reasons    ${Object.entries(r.stopReasons).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `  errors          ${r.errors}${r.errors > 0 ? `   e.g. ${r.errorSamples.join(' | ')}` : ''}`,
    `  event loop      worst delay ${f(r.eventLoopMaxDelayMs)} ms`,
    `  RSS MB          start ${f(r.rssMB.start)}   end ${f(r.rssMB.end)}   max ${f(r.rssMB.max)}   trend ${f(r.rssMB.slopeMBPerMin, 2)} MB/min   after dispose ${f(r.rssMB.afterDispose)}`,
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
    .description('concurrent sessions on one model for a fixed time: throughput, latency, errors, resident memory')
    .option('--model <path>', 'GGUF model (default: the bundled model)')
    .option('--seconds <n>', 'how long to run', intArg('--seconds', 1, 7 * 24 * 3600), 30)
    .option('--sessions <n>', 'concurrent sessions', intArg('--sessions', 1, 256), 4)
    .option('--threads <n>', 'kernel threads (default: physical cores)', intArg('--threads', 1, 1024))
    .option('--max-tokens <n>', 'each request generates 1..n tokens', intArg('--max-tokens', 1), 48)
    .option('--context <n>', 'context size of each session (default: the model context, at most 2048)', intArg('--context', 1))
    .option('--seed <n>', 'seed of the request mix', intArg('--seed', 0), 1)
    .option('--json', 'print a JSON object on stdout (the table goes to stderr)')
    .showHelpAfterError('(run with --help for usage)')
    .parse(argv);
  const o = program.opts<{ model?: string; seconds: number; sessions: number; threads?: number; maxTokens: number; context?: number; seed: number; json?: boolean }>();
  if (program.args.length > 0) program.error(`unexpected argument(s): ${program.args.join(' ')}`);
  const model = path.resolve(o.model ?? path.join(repoRoot(), 'models', 'adainfer-tinystories-10L-ee.f16.gguf'));
  if (!fs.existsSync(model)) program.error(`error: model file not found: ${model}`);
  return { model, seconds: o.seconds, sessions: o.sessions, threads: o.threads, maxTokens: o.maxTokens, context: o.context, seed: o.seed, json: o.json === true };
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
  if (report.errors > 0 || report.requests === 0) process.exitCode = 1;
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
