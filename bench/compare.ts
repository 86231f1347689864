/**
 * Quantized-weights comparison against node-llama-cpp on TinyLlama-1.1B-shaped random models (issue 3):
 * decode (tg) and prefill (pp) tokens/s of both engines on the same file and thread count, runs alternating
 * between the engines, each run in its own process (so its peak resident memory is its own); the ratio; the
 * bytes of weights each decoded token reads and the bandwidth that implies, beside the machine's measured
 * read bandwidth at 1 and 2 threads; peak RSS while decoding, with the KV cache bytes of each engine.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/compare.js [--types F16,Q8_0,Q4_0,Q4_K] [--threads 1,2]
 *       [--pp 512] [--tg 128] [--reps 3] [--ctx 1024] [--geometry tinyllama-1.1b] [--engines adainfer,llamacpp]
 *       [--contend [on|both]] [--contend-cpu N] [--quiet-max 0.05] [--retries 2] [--spread-max 0.1] [--json FILE]
 *
 * Models come from bench/make_model.ts (generated into bench/models/ when missing). The bandwidth comes from
 * bench/native/membw.c, compiled with the system C compiler into bench/.build/ on first use.
 *
 * One run (child process, one engine): load the model, create a context of --ctx positions with batch --pp,
 * warm up (a 32-token prefill and 4 decoded tokens), then
 *   pp: --pp random tokens in one batch from an empty cache (time of the prefill call);
 *   tg: 4 tokens prefilled, then --tg tokens decoded one at a time (each with its logits; node-llama-cpp
 *       samples greedily, as its users do; the "core" numbers are llama.cpp's own timers of llama_decode).
 * Peak RSS while decoding: VmHWM reset (/proc/self/clear_refs) after the prefill, read after the decode.
 * The file is mapped by both engines: its pages count in RSS once touched.
 *
 * Noise: on a shared machine another process taking a core wrecks a run (node-llama-cpp's 2-thread decode then
 * collapses, and a "ratio" of 15x has been seen). Each run measures, for its timed prefill and decode, how much of
 * the CPUs this process may use went to OTHER processes: the busy time of those CPUs (/proc/stat) minus the run's
 * own CPU time (process.cpuUsage, all threads), over wall time x CPUs. A run above --quiet-max (default 0.05 =
 * 5%) is run again, up to --retries times (default 2); the tables take the medians of the quiet runs and mark a
 * row `NOISY` when an engine has no quiet run, and `SPREAD` when an engine's kept runs differ by more than
 * --spread-max (default 10%, max/min - 1). Runs with --contend's own busy loop are not checked.
 * The table prints, per row, the kernel variant adainfer ran, the share of the CPUs other processes took
 * (median), and for tg the bandwidth bound: measured read bandwidth at that thread count / weight bytes per token.
 *
 * --contend: a competing process busy-loops one CPU during each run (`taskset -c N sh -c 'while :; do :; done'`,
 * N = --contend-cpu, default the last CPU this process may use), started before the run's process and killed
 * after it; the rows say "busy cpuN". `--contend both` measures every configuration both ways, the idle and
 * the contended run of each engine adjacent (idle first on even reps, contended first on odd ones).
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'child_process';
import * as os from 'os';
import * as fs from 'fs';
import * as path from 'path';
import { describeMachine, formatMachine, repoRoot } from './machine';
import { ensureModel, GEOMETRIES } from './make_model';

// ---------------------------------------------------------------------------------------------------
// Child: one run of one engine

interface RunResult {
  engine: 'adainfer' | 'llamacpp';
  ppTps: number;
  tgTps: number;
  /** llama.cpp's own timers (llama_decode only), when readable. */
  corePpTps?: number;
  coreTgTps?: number;
  rssAfterLoad: number;
  rssPeakDecode: number;
  rssPeakAll: number;
  kvBytes: number;
  kvType: string;
  kernels?: string;
  flashAttention?: string;
  /** Share of this process's allowed CPUs that other processes used during the timed prefill / decode (0..1). */
  ppOthers?: number;
  tgOthers?: number;
  /** Attempts this configuration took (noisy runs are run again); set by the parent. */
  attempts?: number;
}

// ---------------------------------------------------------------------------------------------------
// Noise: what the other processes on this process's CPUs did while a timed section ran

interface CpuSnapshot {
  /** Busy jiffies (user, nice, system, irq, softirq, steal) summed over the allowed CPUs, from /proc/stat. */
  busyTicks: number;
  /** This process's CPU time (all threads), microseconds. */
  ownUs: number;
  wallUs: number;
}

let clockTicks: number | undefined;
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

function cpuSnapshot(cpus: number[]): CpuSnapshot | undefined {
  let text: string;
  try {
    text = fs.readFileSync('/proc/stat', 'utf8');
  } catch {
    return undefined;  // not Linux: noise is not measured
  }
  const wanted = new Set(cpus.map((c) => `cpu${c}`));
  let busy = 0;
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (!wanted.has(f[0])) continue;
    // user nice system idle iowait irq softirq steal
    const v = f.slice(1).map(Number);
    busy += v[0] + v[1] + v[2] + (v[5] ?? 0) + (v[6] ?? 0) + (v[7] ?? 0);
  }
  const u = process.cpuUsage();
  return { busyTicks: busy, ownUs: u.user + u.system, wallUs: Number(process.hrtime.bigint() / 1000n) };
}

/** Share (0..1) of the allowed CPUs' time between a and b that went to other processes; NaN when unknown. */
function othersShare(a: CpuSnapshot | undefined, b: CpuSnapshot | undefined, nCpus: number): number {
  if (!a || !b || b.wallUs <= a.wallUs) return NaN;
  const busyUs = ((b.busyTicks - a.busyTicks) * 1e6) / ticksPerSecond();
  const others = busyUs - (b.ownUs - a.ownUs);
  return Math.max(0, others / ((b.wallUs - a.wallUs) * nCpus));
}

/** Runs fn, returning its result and the share of the allowed CPUs other processes took meanwhile. */
async function watched<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const cpus = allowedCpus();
  const before = cpuSnapshot(cpus);
  const r = await fn();
  return [r, othersShare(before, cpuSnapshot(cpus), cpus.length)];
}

function status(): { rss: number; hwm: number } {
  const s = fs.readFileSync('/proc/self/status', 'utf8');
  const kb = (k: string) => Number((new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s) ?? [])[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

function resetPeak(): void {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
  } catch {
    // not Linux, or not allowed: the peak then covers the whole run
  }
}

function tokensFor(seed: number, n: number, vocab: number): number[] {
  let x = seed >>> 0 || 1;
  return Array.from({ length: n }, () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % vocab;
  });
}

async function childAdainfer(model: string, threads: number, pp: number, tg: number, ctx: number, seed: number): Promise<RunResult> {
  const { loadModel } = await import('../lib/api');
  const m = await loadModel(model, { threads });
  try {
    const s = await m.createSession({ contextSize: ctx, batchSize: Math.max(pp, 32), threads });
    const rssAfterLoad = status().rss;
    await s.bench({ promptTokens: 32, genTokens: 4, seed: seed + 1000 });
    const [p, ppOthers] = pp > 0 ? await watched(() => s.bench({ promptTokens: pp, genTokens: 0, seed })) : [{ prefillMs: NaN }, NaN];
    resetPeak();
    const [g, tgOthers] = await watched(() => s.bench({ promptTokens: 4, genTokens: tg, seed: seed + 1 }));
    const after = status();
    await s.dispose();
    const kvDim = (m.info.nKvHead * m.info.nEmbd) / m.info.nHead;
    return {
      engine: 'adainfer',
      ppTps: (pp * 1000) / p.prefillMs,
      tgTps: (tg * 1000) / g.decodeMs,
      rssAfterLoad,
      rssPeakDecode: after.hwm,
      rssPeakAll: after.hwm,
      kvBytes: 2 * m.info.nLayer * ctx * kvDim * 4,
      kvType: 'F32',
      kernels: m.info.kernels,
      ppOthers,
      tgOthers,
    };
  } finally {
    await m.dispose();
  }
}

async function childLlamaCpp(model: string, threads: number, pp: number, tg: number, ctx: number, seed: number): Promise<RunResult> {
  const { LlamaCppPeer } = await import('./peer');
  const { readGGUF } = await import('../lib/gguf');
  const f = readGGUF(model);
  const num = (k: string) => Number(f.metadata.get(k));
  const nLayer = num('llama.block_count');
  const kvDim = (num('llama.attention.head_count_kv') * num('llama.embedding_length')) / num('llama.attention.head_count');
  const vocab = num('llama.vocab_size') || 32000;
  const peer = await LlamaCppPeer.start({ install: false, log: () => undefined });
  try {
    const lm = await peer.loadModel(model);
    const runner = await lm.createRunner({ contextSize: ctx, batchSize: Math.max(pp, 32), threads });
    const rssAfterLoad = status().rss;
    await runner.bench(tokensFor(seed + 1000, 32, vocab), 4);
    const [p, ppOthers] = pp > 0 ? await watched(() => runner.bench(tokensFor(seed, pp, vocab), 0)) : [{ prefillMs: NaN, core: undefined }, NaN];
    await runner.bench([1], 0);  // clear + tiny prefill outside the peak window
    resetPeak();
    const [g, tgOthers] = await watched(() => runner.bench(tokensFor(seed + 1, 4, vocab), tg));
    const after = status();
    const out: RunResult = {
      engine: 'llamacpp',
      ppTps: (pp * 1000) / p.prefillMs,
      tgTps: (tg * 1000) / g.decodeMs,
      corePpTps: p.core && p.core.prefillMs > 0 ? (p.core.prefillTokens * 1000) / p.core.prefillMs : undefined,
      coreTgTps: g.core && g.core.decodeMs > 0 ? (g.core.decodeRuns * 1000) / g.core.decodeMs : undefined,
      rssAfterLoad,
      rssPeakDecode: after.hwm,
      rssPeakAll: after.hwm,
      kvBytes: 2 * nLayer * ctx * kvDim * 2,  // llama.cpp's default K/V cache type is F16
      kvType: 'F16',
      flashAttention: String(runner.flashAttention),
      ppOthers,
      tgOthers,
    };
    await runner.dispose();
    await lm.dispose();
    return out;
  } finally {
    await peer.dispose();
  }
}

// ---------------------------------------------------------------------------------------------------
// Parent

interface Args {
  types: string[];
  threads: number[];
  pp: number;
  tg: number;
  reps: number;
  ctx: number;
  geometry: string;
  engines: ('adainfer' | 'llamacpp')[];
  json?: string;
  membw: boolean;
  /** off: idle machine; on: every run with a busy loop on contendCpu; both: each configuration both ways. */
  contend: 'off' | 'on' | 'both';
  contendCpu: number;
  /** A run whose timed sections saw other processes take more than this share of the CPUs is noisy. */
  quietMax: number;
  /** Extra attempts of a noisy run. */
  retries: number;
  /** An engine's kept runs differing by more than this (max / min - 1) mark the row. */
  spreadMax: number;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { types: ['F16', 'Q8_0', 'Q4_0', 'Q4_K'], threads: [1, 2], pp: 512, tg: 128, reps: 3, ctx: 1024, geometry: 'tinyllama-1.1b', engines: ['adainfer', 'llamacpp'], membw: true, contend: 'off', contendCpu: -1, quietMax: 0.05, retries: 2, spreadMax: 0.1 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${k} needs a value`);
      return argv[++i];
    };
    const int = (s: string) => {
      const n = Number(s);
      if (!Number.isInteger(n) || n < 0) throw new Error(`${k}: expected a non-negative integer, got ${s}`);
      return n;
    };
    if (k === '--types') a.types = v().split(',');
    else if (k === '--threads') a.threads = v().split(',').map(int);
    else if (k === '--pp') a.pp = int(v());
    else if (k === '--tg') a.tg = int(v());
    else if (k === '--reps') a.reps = Math.max(1, int(v()));
    else if (k === '--ctx') a.ctx = int(v());
    else if (k === '--geometry') a.geometry = v();
    else if (k === '--engines') a.engines = v().split(',') as Args['engines'];
    else if (k === '--json') a.json = v();
    else if (k === '--no-membw') a.membw = false;
    else if (k === '--contend') {
      const next = argv[i + 1];
      if (next === 'on' || next === 'both' || next === 'off') a.contend = argv[++i] as Args['contend'];
      else a.contend = 'on';
    } else if (k === '--contend-cpu') a.contendCpu = int(v());
    else if (k === '--quiet-max') a.quietMax = Number(v());
    else if (k === '--retries') a.retries = int(v());
    else if (k === '--spread-max') a.spreadMax = Number(v());
    else throw new Error(`unknown option ${k}`);
  }
  if (!GEOMETRIES[a.geometry]) throw new Error(`unknown geometry ${a.geometry}`);
  if (a.tg < 1) throw new Error('--tg must be at least 1');
  if (a.pp + a.tg + 2 > a.ctx) throw new Error(`--ctx ${a.ctx} is too small for --pp ${a.pp} / --tg ${a.tg}`);
  if (a.contendCpu < 0) a.contendCpu = allowedCpus().pop() ?? 0;
  for (const [name, x] of [['--quiet-max', a.quietMax], ['--spread-max', a.spreadMax]] as const)
    if (!(x >= 0)) throw new Error(`${name}: expected a non-negative number`);
  return a;
}

function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((p, q) => p - q);
  if (!s.length) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Memory read bandwidth (GiB/s) at each thread count, from bench/native/membw.c; undefined without a C compiler. */
export function measureBandwidth(threads: number[]): Map<number, number> | undefined {
  const root = repoRoot();
  const exe = path.join(root, 'bench', '.build', 'membw');
  const src = path.join(root, 'bench', 'native', 'membw.c');
  try {
    if (!fs.existsSync(exe) || fs.statSync(exe).mtimeMs < fs.statSync(src).mtimeMs) {
      fs.mkdirSync(path.dirname(exe), { recursive: true });
      execFileSync(process.env.CC ?? 'cc', ['-O3', '-pthread', '-o', exe, src], { stdio: 'pipe' });
    }
    const out = execFileSync(exe, [...threads.map(String), '--mib', '1024', '--reps', '5'], { encoding: 'utf8' });
    const m = new Map<number, number>();
    for (const line of out.trim().split('\n')) {
      const r = JSON.parse(line) as { threads: number; gib_per_s: number };
      m.set(r.threads, r.gib_per_s);
    }
    return m;
  } catch (err) {
    process.stderr.write(`[compare] memory bandwidth not measured: ${(err as Error).message.split('\n')[0]}\n`);
    return undefined;
  }
}

/** Bytes of weights one decoded token reads: every matrix once, token_embd one row (unless it is the head). */
export function weightBytesPerToken(model: string): number {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { readGGUF } = require('../lib/gguf') as typeof import('../lib/gguf');
  const f = readGGUF(model);
  const tied = !f.tensorsByName.has('output.weight');
  let bytes = 0;
  for (const t of f.tensors) {
    if (t.name === 'token_embd.weight' && !tied) bytes += t.byteSize / t.dims[1];
    else bytes += t.byteSize;
  }
  return bytes;
}

/** CPUs this process may run on (taskset -p of itself), ascending; [0 .. cpus-1] if that cannot be read. */
function allowedCpus(): number[] {
  try {
    const m = /Cpus_allowed_list:\s*(\S+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) {
      const out: number[] = [];
      for (const part of m[1].split(',')) {
        const [lo, hi] = part.split('-').map(Number);
        for (let c = lo; c <= (hi ?? lo); c++) out.push(c);
      }
      if (out.length) return out;
    }
  } catch {
    // not Linux
  }
  return Array.from({ length: os.cpus().length }, (_, i) => i);
}

/** Starts the competing busy loop pinned to `cpu`; the returned function kills it (and waits for it to go). */
const busyLoops = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of busyLoops) p.kill('SIGKILL');
});
async function startBusyLoop(cpu: number): Promise<() => Promise<void>> {
  const p = spawn('taskset', ['-c', String(cpu), 'sh', '-c', 'while :; do :; done'], { stdio: 'ignore' });
  busyLoops.add(p);
  const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    p.once('spawn', () => resolve());
    p.once('error', (err) => reject(new Error(`could not start the busy loop (taskset): ${err.message}`)));
  });
  await new Promise((r) => setTimeout(r, 200));  // the loop is running (and taskset has exec'd) before the run starts
  if (p.exitCode !== null) throw new Error(`the busy loop (taskset -c ${cpu}) exited with ${p.exitCode}`);
  return async () => {
    p.kill('SIGKILL');
    await exited;
    busyLoops.delete(p);
  };
}

function runChild(engine: string, model: string, threads: number, a: Args, seed: number): RunResult {
  const r = spawnSync(
    process.execPath,
    [__filename, '--child', engine, model, String(threads), String(a.pp), String(a.tg), String(a.ctx), String(seed)],
    { encoding: 'utf8', maxBuffer: 1 << 24, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  if (r.status !== 0) throw new Error(`${engine} run failed (${r.status}): ${r.stderr.slice(-2000)}`);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  // NaN (a test not run) travels as null
  const out = JSON.parse(line) as Record<string, unknown>;
  for (const k of Object.keys(out)) if (out[k] === null) out[k] = NaN;
  return out as unknown as RunResult;
}

const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;

/** Other processes took more than --quiet-max of the CPUs during a timed section of the run. */
function isNoisy(r: RunResult, a: Args): boolean {
  return [r.ppOthers, r.tgOthers].some((x) => typeof x === 'number' && x > a.quietMax);
}

/** The runs a median is taken over: the quiet ones when there are any (else all, and the row is marked). */
function keptRuns(runs: RunResult[], a: Args, test: 'pp' | 'tg', load: string): { kept: RunResult[]; noisy: boolean } {
  if (load !== 'idle') return { kept: runs, noisy: false };
  const quiet = runs.filter((r) => {
    const x = test === 'tg' ? r.tgOthers : r.ppOthers;
    return !(typeof x === 'number' && x > a.quietMax);
  });
  return quiet.length ? { kept: quiet, noisy: false } : { kept: runs, noisy: true };
}

/** max / min - 1 of the finite values (0 for fewer than two). */
function spread(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x) && x > 0);
  return v.length < 2 ? 0 : Math.max(...v) / Math.min(...v) - 1;
}

async function parent(a: Args): Promise<void> {
  const print = (s: string) => process.stdout.write(s + '\n');
  const machine = describeMachine();
  print('machine');
  for (const l of formatMachine(machine)) print('  ' + l);
  const bw = a.membw ? measureBandwidth(a.threads) : undefined;
  if (bw) print(`  read bandwidth (bench/native/membw.c, 1 GiB buffer, median of 5): ${[...bw].map(([t, g]) => `${t} thread(s) ${g.toFixed(1)} GiB/s`).join(', ')}`);
  print(`settings: ${a.geometry}, pp${a.pp}, tg${a.tg}, ${a.reps} reps per engine alternating, context ${a.ctx}, engines ${a.engines.join(', ')}`);
  const busyLabel = `busy cpu${a.contendCpu}`;
  if (a.contend !== 'off')
    print(`competing load: \`taskset -c ${a.contendCpu} sh -c 'while :; do :; done'\` during ${a.contend === 'both' ? 'the "busy" runs' : 'every run'}`);
  const loads: string[] = a.contend === 'off' ? ['idle'] : a.contend === 'on' ? [busyLabel] : ['idle', busyLabel];

  const results: { type: string; threads: number; load: string; model: string; bytesPerToken: number; runs: RunResult[] }[] = [];
  for (const type of a.types) {
    const model = ensureModel(a.geometry, type, { threads: Math.max(...a.threads) });
    const bytesPerToken = weightBytesPerToken(model);
    for (const threads of a.threads) {
      const runs = new Map<string, RunResult[]>(loads.map((l) => [l, []]));
      for (let rep = 0; rep < a.reps; rep++) {
        const order = rep % 2 === 0 ? a.engines : [...a.engines].reverse();
        for (const engine of order) {
          for (const load of rep % 2 === 0 ? loads : [...loads].reverse()) {
            let r: RunResult | undefined;
            // the contended runs carry their own busy loop: only idle runs are checked for noise
            for (let attempt = 1; attempt <= 1 + (load === 'idle' ? a.retries : 0); attempt++) {
              const stop = load === 'idle' ? undefined : await startBusyLoop(a.contendCpu);
              try {
                r = runChild(engine, model, threads, a, 1 + rep);
              } finally {
                await stop?.();
              }
              r.attempts = attempt;
              const f = (v: number | null | undefined, d: number) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(d) : '-');
              process.stderr.write(
                `[compare] ${type} t${threads} ${load} rep ${rep} ${engine}: pp ${f(r.ppTps, 1)} tg ${f(r.tgTps, 2)} t/s, ` +
                  `others took ${f(100 * (r.ppOthers ?? NaN), 0)}% / ${f(100 * (r.tgOthers ?? NaN), 0)}% of the CPUs, peak RSS decoding ${mib(r.rssPeakDecode)}\n`,
              );
              if (load !== 'idle' || !isNoisy(r, a)) break;
              process.stderr.write(`[compare]   noisy (other processes above ${(100 * a.quietMax).toFixed(0)}%)${attempt <= a.retries ? ': again' : ': kept, marked'}\n`);
            }
            runs.get(load)!.push(r!);
          }
        }
      }
      for (const load of loads) results.push({ type, threads, load, model, bytesPerToken, runs: runs.get(load)! });
    }
  }

  print('');
  print('medians of alternating runs (the quiet ones); ratio = adainfer / node-llama-cpp (> 1: adainfer faster); [llama.cpp core timers]');
  print(`others = share of the CPUs other processes took during the timed part (median); bound = read bandwidth / weights per token;`);
  print(`NOISY: an engine had no run with others <= ${(100 * a.quietMax).toFixed(0)}% (after ${a.retries} retries): not a measurement; SPREAD: kept runs differ by > ${(100 * a.spreadMax).toFixed(0)}%`);
  const withLoad = a.contend !== 'off';
  const head = ['type', 'thr', ...(withLoad ? ['load'] : []), 'test', 'kernels', 'adainfer t/s', 'node-llama-cpp t/s', 'ratio', 'weights/token', 'adainfer GiB/s', 'bound t/s', '% of bw', 'others', 'mark'];
  const rows: string[][] = [];
  for (const r of results) {
    const bwT = bw?.get(r.threads);
    for (const test of ['tg', 'pp'] as const) {
      if ((test === 'tg' ? a.tg : a.pp) === 0) continue;
      const oursK = keptRuns(r.runs.filter((x) => x.engine === 'adainfer'), a, test, r.load);
      const peerK = keptRuns(r.runs.filter((x) => x.engine === 'llamacpp'), a, test, r.load);
      const ours = oursK.kept, peer = peerK.kept;
      const tps = (x: RunResult) => (test === 'tg' ? x.tgTps : x.ppTps);
      const o = median(ours.map(tps));
      const p = median(peer.map(tps));
      const core = median(peer.map((x) => (test === 'tg' ? x.coreTgTps ?? NaN : x.corePpTps ?? NaN)));
      const gibs = test === 'tg' ? (o * r.bytesPerToken) / 2 ** 30 : NaN;
      const bound = test === 'tg' && bwT ? (bwT * 2 ** 30) / r.bytesPerToken : NaN;
      const others = median([...ours, ...peer].map((x) => (test === 'tg' ? x.tgOthers ?? NaN : x.ppOthers ?? NaN)));
      const marks = [
        ...(oursK.noisy || peerK.noisy ? ['NOISY'] : []),
        ...(spread(ours.map(tps)) > a.spreadMax || spread(peer.map(tps)) > a.spreadMax ? ['SPREAD'] : []),
      ];
      const kernels = [...new Set(ours.map((x) => x.kernels ?? '?'))].join('/');
      rows.push([
        r.type,
        String(r.threads),
        ...(withLoad ? [r.load] : []),
        `${test}${test === 'tg' ? a.tg : a.pp}`,
        kernels || '-',
        Number.isFinite(o) ? o.toFixed(2) : '-',
        Number.isFinite(p) ? `${p.toFixed(2)}${Number.isFinite(core) ? ` [${core.toFixed(2)}]` : ''}` : '-',
        Number.isFinite(o / p) ? (o / p).toFixed(2) : '-',
        test === 'tg' ? mib(r.bytesPerToken) : '',
        Number.isFinite(gibs) ? gibs.toFixed(1) : '',
        Number.isFinite(bound) ? bound.toFixed(2) : '',
        Number.isFinite(gibs) && bwT ? `${((100 * gibs) / bwT).toFixed(0)}%` : '',
        Number.isFinite(others) ? `${(100 * others).toFixed(0)}%` : '-',
        marks.join(' '),
      ]);
    }
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i].length)));
  const line = (c: string[]) => '| ' + c.map((x, i) => x.padEnd(widths[i])).join(' | ') + ' |';
  print(line(head));
  print('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
  for (const row of rows) print(line(row));

  print('');
  print('peak RSS while decoding (medians; the mapped file counts once its pages are read)');
  for (const r of results) {
    const ours = r.runs.filter((x) => x.engine === 'adainfer');
    const peer = r.runs.filter((x) => x.engine === 'llamacpp');
    const o = median(ours.map((x) => x.rssPeakDecode));
    const p = median(peer.map((x) => x.rssPeakDecode));
    const kvO = ours[0]?.kvBytes ?? NaN;
    const kvP = peer[0]?.kvBytes ?? NaN;
    print(
      `  ${r.type} t${r.threads}${withLoad ? ` ${r.load}` : ''}: adainfer ${mib(o)} (KV ${mib(kvO)} F32), node-llama-cpp ${mib(p)} (KV ${mib(kvP)} F16), ` +
        `ratio ${(o / p).toFixed(2)}; without the KV caches ${((o - kvO) / (p - kvP)).toFixed(2)}`,
    );
  }
  if (a.json) {
    fs.writeFileSync(a.json, JSON.stringify({ benchmark: 'compare', machine, bandwidthGiBs: bw ? Object.fromEntries(bw) : undefined, settings: a, results }, null, 2));
    print(`\nJSON written to ${a.json}`);
  }
}

async function child(argv: string[]): Promise<void> {
  const [engine, model, threads, pp, tg, ctx, seed] = argv;
  const fn = engine === 'adainfer' ? childAdainfer : childLlamaCpp;
  const r = await fn(model, Number(threads), Number(pp), Number(tg), Number(ctx), Number(seed));
  process.stdout.write(JSON.stringify(r) + '\n');
}

if (require.main === module) {
  const argv = process.argv.slice(2);
  const run = argv[0] === '--child' ? child(argv.slice(1)) : parent(parseArgs(argv));
  run.catch((err) => {
    process.stderr.write(`compare: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  });
}
