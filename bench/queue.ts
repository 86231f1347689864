/**
 * The batch queue on one machine (issue 19): 1 worker × 2 threads against 2 workers × 1 thread, and the
 * one-process `adainfer batch --threads 2` on the same requests as the baseline, on a redis-server of its own.
 * Reports prompts/s (first shard started to last record stored; model loading excluded: the workers are up before the
 * submit, and the baseline's own figure starts after its load)
 * and the queue's cost per shard, two ways: the gap between one shard's end and the next one's start in a worker
 * (BullMQ completing a shard and handing over the next: the worker's idle time), and (queue wall − baseline wall) /
 * shards with the same threads. Reps alternate the configurations; the table shows medians.
 *
 *   node dist/bench/queue.js [--prompts 240] [--tokens 16] [--shard-size 20] [--batch-size 16] [--reps 3] [--json]
 */
import { ChildProcess, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Command } from 'commander';
import IORedis from 'ioredis';
import { redisServerPath, RedisServer } from '../test/queue/redis';
import { describeMachine, formatMachine, repoRoot } from './machine';

const MAIN = path.join(repoRoot(), 'dist', 'lib', 'cli', 'main.js');
const STARTS = ['Once upon a time', 'The little dog', 'Lily wanted', 'Tom and Sam were', 'One day, a cat', 'The sun was', 'Mom said', 'A big bird'];

interface Run {
  config: string;
  seconds: number;
  promptsPerSecond: number;
  shards: number;
  /** Mean idle gap between a worker's shards (ms). */
  gapMs: number | null;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** A worker process whose log lines are timestamped as they arrive. */
class TimedWorker {
  readonly child: ChildProcess;
  readonly lines: { t: number; line: string }[] = [];
  private buf = '';
  constructor(url: string, threads: number) {
    this.child = spawn(process.execPath, [MAIN, 'worker', '--queue', url, '--threads', String(threads), '--backend', 'cpu'], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child.stderr!.on('data', (d) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        this.lines.push({ t: performance.now(), line: this.buf.slice(0, nl) });
        this.buf = this.buf.slice(nl + 1);
      }
    });
  }
  async ready(): Promise<void> {
    while (!this.lines.some((l) => l.line.includes(' ready: '))) {
      if (this.child.exitCode !== null) throw new Error(`worker exited: ${this.lines.map((l) => l.line).join('\n')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  /** Gaps between a shard's `done` and the next `started` of this worker, for one job. */
  gaps(job: string): number[] {
    const marks = this.lines.filter((l) => l.line.includes(`shard ${job}.`) && / (started|done) /.test(l.line));
    const gaps: number[] = [];
    for (let i = 1; i < marks.length; i++) if (marks[i - 1].line.includes(' done ') && marks[i].line.includes(' started ')) gaps.push(marks[i].t - marks[i - 1].t);
    return gaps;
  }
  async stop(): Promise<void> {
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    await exited;
  }
}

async function queueRun(url: string, input: string, job: string, workers: number, threads: number, o: Options, redis: IORedis): Promise<Run> {
  const ws = Array.from({ length: workers }, () => new TimedWorker(url, threads));
  await Promise.all(ws.map((w) => w.ready()));
  const submit = spawnSync(process.execPath, [MAIN, 'batch', 'submit', '--queue', url, '--in', input, '--job', job, '--shard-size', String(o.shardSize), '--batch-size', String(o.batchSize), '--temp', '0', '--max-tokens', String(o.tokens), '--json'], { encoding: 'utf8' });
  if (submit.status !== 0) throw new Error(submit.stderr);
  const shards = (JSON.parse(submit.stdout) as { shards: number }).shards;
  const results = `adainfer:batch:{${job}}:results`;
  while ((await redis.hlen(results)) < o.prompts) await new Promise((r) => setTimeout(r, 20));
  const end = performance.now();
  // From the first shard's start (the submit process's own start and model mapping excluded, as the baseline's).
  const t0 = Math.min(...ws.flatMap((w) => w.lines.filter((l) => l.line.includes(`shard ${job}.`) && l.line.includes(' started ')).map((l) => l.t)));
  const seconds = (end - t0) / 1000;
  await Promise.all(ws.map((w) => w.stop()));
  const gaps = ws.flatMap((w) => w.gaps(job));
  return { config: `${workers} worker(s) × ${threads} thread(s)`, seconds, promptsPerSecond: o.prompts / seconds, shards, gapMs: gaps.length ? median(gaps) : null };
}

function singleRun(input: string, o: Options, dir: string, rep: number): Run {
  const out = path.join(dir, `single-${rep}.jsonl`);
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [MAIN, 'batch', '--in', input, '--out', out, '--threads', '2', '--backend', 'cpu', '--batch-size', String(o.batchSize), '--temp', '0', '--max-tokens', String(o.tokens)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  // The process's own figure excludes its start and model load, as the queue runs do.
  const m = /([\d.]+) prompts\/s/.exec(r.stderr);
  const seconds = m ? o.prompts / Number(m[1]) : (performance.now() - t0) / 1000;
  return { config: '1 process (adainfer batch) × 2 threads', seconds, promptsPerSecond: o.prompts / seconds, shards: 0, gapMs: null };
}

interface Options {
  prompts: number;
  tokens: number;
  shardSize: number;
  batchSize: number;
  reps: number;
  json?: boolean;
}

async function main(): Promise<void> {
  const raw = new Command('queue')
    .option('--prompts <n>', 'requests', '240')
    .option('--tokens <n>', 'max_tokens per request (greedy)', '16')
    .option('--shard-size <n>', 'requests per shard', '20')
    .option('--batch-size <n>', 'sequences run together in a worker', '16')
    .option('--reps <r>', 'reps per configuration', '3')
    .option('--json', 'also print a JSON object')
    .parse(process.argv)
    .opts();
  const o: Options = { prompts: Number(raw.prompts), tokens: Number(raw.tokens), shardSize: Number(raw.shardSize), batchSize: Number(raw.batchSize), reps: Number(raw.reps), json: raw.json };
  const binary = redisServerPath();
  if (!binary) throw new Error('redis-server is not on PATH (Debian: apt-get install redis-server)');
  for (const line of formatMachine(describeMachine())) process.stderr.write(line + '\n');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'adainfer-bench-queue-'));
  const input = path.join(dir, 'requests.jsonl');
  fs.writeFileSync(
    input,
    Array.from({ length: o.prompts }, (_, i) =>
      JSON.stringify({ custom_id: `r${i}`, method: 'POST', url: '/v1/completions', body: { prompt: `${STARTS[i % STARTS.length]} ${i}`, max_tokens: o.tokens } }),
    ).join('\n') + '\n',
  );
  const server = await RedisServer.start(binary);
  const redis = new IORedis(server.url);
  const runs: Run[] = [];
  try {
    for (let rep = 0; rep < o.reps; rep++) {
      const order = rep % 2 === 0 ? [[1, 2], [2, 1]] : [[2, 1], [1, 2]];
      for (const [workers, threads] of order) runs.push(await queueRun(server.url, input, `bench-${rep}-${workers}x${threads}`, workers, threads, o, redis));
      runs.push(singleRun(input, o, dir, rep));
      process.stderr.write(`rep ${rep + 1}/${o.reps} done\n`);
    }
  } finally {
    redis.disconnect();
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const configs = [...new Set(runs.map((r) => r.config))];
  const baseline = median(runs.filter((r) => r.shards === 0).map((r) => r.seconds));
  const table = configs.map((config) => {
    const rs = runs.filter((r) => r.config === config);
    const seconds = median(rs.map((r) => r.seconds));
    const gaps = rs.map((r) => r.gapMs).filter((g): g is number => g !== null);
    const shards = rs[0].shards;
    return {
      config,
      seconds,
      promptsPerSecond: o.prompts / seconds,
      shards,
      shardGapMs: gaps.length ? median(gaps) : null,
      overheadPerShardMs: shards > 0 && config.endsWith('× 2 thread(s)') ? ((seconds - baseline) * 1000) / shards : null,
    };
  });
  process.stderr.write(`\n${o.prompts} requests × ${o.tokens} tokens (greedy), shards of ${o.shardSize}, batch size ${o.batchSize}; medians of ${o.reps} reps\n`);
  process.stderr.write('| configuration | s | prompts/s | shards | idle gap between shards (ms) | (wall − one-process wall) / shard (ms) |\n|---|---|---|---|---|---|\n');
  for (const r of table)
    process.stderr.write(
      `| ${r.config} | ${r.seconds.toFixed(2)} | ${r.promptsPerSecond.toFixed(1)} | ${r.shards || '–'} | ${r.shardGapMs?.toFixed(1) ?? '–'} | ${r.overheadPerShardMs?.toFixed(1) ?? '–'} |\n`,
    );
  if (o.json) process.stdout.write(JSON.stringify({ machine: describeMachine(), options: o, table, runs }) + '\n');
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exitCode = 1;
});
