/**
 * Load benchmark of `adainfer serve` (lib/server/server.ts) with autocannon: concurrent streaming clients
 * (server-sent events) against the CLI server in a child process, in one run:
 *   --parallel 1 and --parallel 16 (batch slots), full depth and early exit (`adainfer.exit`: 'never' / 'auto',
 *   per request; with `--arms ...,speculative` also self-speculative decoding drafted by the shipped exit file),
 *   1, 4 and 16 concurrent clients.
 * For each: generated tokens/s over the run (the usage of every response, all clients together), request latency
 * p50/p99 (autocannon's, first byte sent to last byte received) and time to first token p50/p99 (first body
 * bytes of each response: the server writes its headers with the first token's chunk), and mean layers per token.
 * Both servers run side by side (an idle one costs nothing); every configuration runs `--reps` times, the reps
 * interleaved in rotated order so that the machine's drift falls on all alike; tokens/s and latency are medians
 * over the reps, TTFT percentiles are over every request. Each client sends `--requests` requests one after the other (autocannon `amount`, pipelining 1); prompts rotate
 * over a few TinyStories openings, greedy, `--tokens` tokens each (a story may end earlier at EOS: tokens/s counts
 * what was generated).
 *
 * Time to first token is measured at the client: from the moment autocannon writes the request (its 'request'
 * event; a client's first request also includes the TCP connect on 127.0.0.1) to the first body bytes of the
 * response (the first token's chunk: a completion stream writes nothing before it).
 *
 * Targets (issue 18; bundled model, 2 threads), printed last with met / NOT met for each exit and build:
 *   throughput: tokens/s of the most clients (16) on --parallel 16 / the same on --parallel 1 >= 2;
 *   TTFT:       p99 TTFT of the most clients on --parallel 16 / a lone request's TTFT (the median with 1 client,
 *               same server) <= 5.
 * The load generator runs in this process, on the same cores as the server (a 2-core machine has none to spare):
 * a quiet machine is needed for figures to compare with the targets.
 *
 * Where the time to first token goes, from the server's /metrics around each run (means): the server's own TTFT
 * (request parsed to first token on the event loop), of it the wait for a batch slot and the prefill (taking a
 * slot to the end of the step that gave the first token), both measured on the worker; the rest is HTTP handling
 * and messages between the event loop and the worker. (A build without those metrics shows '-'.)
 *
 * `--baseline CLI` runs another build's servers (its dist/lib/cli/main.js, e.g. the main branch's) side by side
 * with this build's, the configurations interleaved, so that a change is measured against it in one run.
 *
 *   node dist/bench/serve.js [--model M] [--threads 2] [--tokens 64] [--requests 4] [--clients 1,4,16] [--arms never,auto,speculative]
 *       [--parallel 1,16] [--reps 3] [--baseline CLI] [--json]
 */
import { ChildProcess, spawn } from 'child_process';
import * as path from 'path';
import autocannon from 'autocannon';
import { Command } from 'commander';
import { describeMachine, formatMachine, repoRoot } from './machine';
import { STORY_PROMPTS } from '../lib/latency/prompts';
import { nearestRank } from '../lib/latency/quantiles';

/** The latency harness's story openings (the bundled models' domain), one prompt set for every latency bench. */
const PROMPTS = STORY_PROMPTS;

/**
 * What each request asks of the server (`--arms`): full depth (`adainfer.exit: 'never'`), the shipped exit file
 * (`'auto'`), or self-speculative decoding drafted by the shipped exit file (`adainfer.speculative: { draft: 'auto' }`).
 */
type Arm = 'never' | 'auto' | 'speculative';
const ARMS: readonly Arm[] = ['never', 'auto', 'speculative'];

interface Row {
  build: string;
  parallel: number;
  /** The arm (named `exit` in the JSON, as before the speculative arm). */
  exit: Arm;
  clients: number;
  requests: number;
  errors: number;
  tokens: number;
  seconds: number;
  tokensPerSecond: number;
  latencyP50: number;
  latencyP99: number;
  ttftP50: number;
  ttftP99: number;
  meanLayers: number;
  /** Means over the run from the server's /metrics, in ms (NaN where the build lacks the metric). */
  serverTtftMean: number;
  queueWaitMean: number;
  prefillMean: number;
}

/** p-th percentile (0..100) by nearest rank, the definition every latency report here uses. */
const percentile = (xs: number[], p: number) => nearestRank([...xs].sort((a, b) => a - b), p / 100);

/** Starts `adainfer serve` on a free port; resolves with its URL and its first line (model, slots, kernels). */
async function startServer(cli: string, model: string, parallel: number, threads: number, context: number): Promise<{ child: ChildProcess; url: string; banner: string }> {
  const args = [cli, 'serve', '-m', model, '--port', '0', '--parallel', String(parallel), '--threads', String(threads), '--context', String(context), '--queue', '1024'];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+).*$/m.exec(out);
      if (m) resolve({ child, url: m[1], banner: m[0] });
    });
    child.on('exit', (code) => reject(new Error(`adainfer serve exited (${code}) before listening: ${out}`)));
  });
}

async function stopServer(child: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  child.kill('SIGTERM');
  return exited;
}

/** One autocannon run: `clients` streaming clients, `requests` requests each. */
interface Run {
  requests: number;
  errors: number;
  tokens: number;
  layers: number;
  seconds: number;
  latencyP50: number;
  latencyP99: number;
  ttft: number[];
  /** /metrics sums and counts gained over the run. */
  server: ServerTimes;
}

/** Seconds summed and observations counted by three histograms of /metrics. */
interface ServerTimes {
  ttft: [number, number];
  queueWait: [number, number];
  prefill: [number, number];
}

async function serverTimes(url: string): Promise<ServerTimes> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const read = (name: string): [number, number] => {
    const sum = new RegExp(`^${name}_sum (\\S+)`, 'm').exec(text);
    const count = new RegExp(`^${name}_count (\\S+)`, 'm').exec(text);
    return sum && count ? [Number(sum[1]), Number(count[1])] : [NaN, NaN];
  };
  return {
    ttft: read('adainfer_time_to_first_token_seconds'),
    queueWait: read('adainfer_queue_wait_seconds'),
    prefill: read('adainfer_prefill_seconds'),
  };
}

const minus = (a: ServerTimes, b: ServerTimes): ServerTimes => ({
  ttft: [a.ttft[0] - b.ttft[0], a.ttft[1] - b.ttft[1]],
  queueWait: [a.queueWait[0] - b.queueWait[0], a.queueWait[1] - b.queueWait[1]],
  prefill: [a.prefill[0] - b.prefill[0], a.prefill[1] - b.prefill[1]],
});

async function load(url: string, modelId: string, arm: Arm, clients: number, requests: number, tokens: number): Promise<Run> {
  const ttft: number[] = [];
  let generated = 0;
  let layers = 0;
  let clientIndex = 0;
  // tokens/s over the span from the first request sent to the last response received (autocannon's own start
  // and stop ticks would dilute short runs)
  let firstSent = Infinity;
  let lastDone = 0;
  const adainfer = arm === 'speculative' ? { speculative: { draft: 'auto' } } : { exit: arm };
  const body = (prompt: string) => JSON.stringify({ model: modelId, prompt, max_tokens: tokens, temperature: 0, stream: true, adainfer });
  const before = await serverTimes(url);
  const result = await autocannon({
    url: `${url}/v1/completions`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: body(PROMPTS[0]),
    connections: clients,
    pipelining: 1,
    amount: clients * requests,
    timeout: 120,
    setupClient: (client) => {
      const me = clientIndex++;
      let sent = 0;
      let startedAt = 0;
      let first = true;
      let text = '';
      client.setBody(body(PROMPTS[me % PROMPTS.length]));
      (client as unknown as NodeJS.EventEmitter).on('request', () => {
        startedAt = performance.now();
        firstSent = Math.min(firstSent, startedAt);
        first = true;
        text = '';
      });
      client.on('body', (chunk: Buffer) => {
        if (first) {
          first = false;
          ttft.push(performance.now() - startedAt);
        }
        text += chunk.toString('utf8');
      });
      client.on('response', () => {
        lastDone = performance.now();
        const usage = /"completion_tokens":(\d+)/.exec(text);
        const mean = /"adainfer":\{"n_layer":\d+,"exit":(?:"[^"]*"|\{[^}]*\}),"choices":\[.*?\],"mean_layers":([\d.]+)/.exec(text);
        if (usage) {
          generated += Number(usage[1]);
          if (mean) layers += Number(mean[1]) * Number(usage[1]);
        }
        // the next request of this client: the next prompt
        sent++;
        client.setBody(body(PROMPTS[(me + sent) % PROMPTS.length]));
      });
    },
  });
  const seconds = (lastDone - firstSent) / 1000;
  const server = minus(await serverTimes(url), before);
  return {
    requests: result.requests.total,
    errors: result.errors + result.non2xx + result.timeouts,
    tokens: generated,
    layers,
    seconds,
    latencyP50: result.latency.p50,
    latencyP99: result.latency.p99,
    ttft,
    server,
  };
}

const median = (xs: number[]) => percentile(xs, 50);
const armLabel = (arm: Arm) => (arm === 'speculative' ? 'speculative' : `exit ${arm.padEnd(5)}`).padEnd(11);
/** The mean in ms of histogram (sum s, count) pairs added up. */
const meanMs = (pairs: [number, number][]) => (1000 * pairs.reduce((a, p) => a + p[0], 0)) / pairs.reduce((a, p) => a + p[1], 0);
const ms = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '-');

async function main(): Promise<void> {
  const o = new Command('serve')
    .option('--model <path>', 'model file', path.join(repoRoot(), 'models', 'adainfer-tinystories-10L-ee.f16.gguf'))
    .option('--threads <t>', 'threads of the server', '2')
    .option('--tokens <n>', 'max_tokens of each request', '64')
    .option('--requests <n>', 'requests per client', '4')
    .option('--clients <list>', 'concurrent streaming clients', '1,4,16')
    .option('--parallel <list>', 'batch slots of the servers compared', '1,16')
    .option('--arms <list>', "what requests ask: exit 'never', exit 'auto' (the shipped exit file), 'speculative' (drafted by it)", 'never,auto')
    .option('--context <n>', 'positions per request', '256')
    .option('--reps <r>', 'runs of every configuration (interleaved)', '3')
    .option('--baseline <cli>', "another build's dist/lib/cli/main.js, run side by side as build 'baseline'")
    .option('--json', 'also print a JSON object')
    .parse(process.argv)
    .opts();
  const machine = describeMachine();
  for (const line of formatMachine(machine)) console.log(line);
  const clientsList = String(o.clients).split(',').map(Number);
  const arms = String(o.arms).split(',') as Arm[];
  for (const a of arms) if (!ARMS.includes(a)) throw new Error(`--arms: unknown arm '${a}' (${ARMS.join(', ')})`);
  const parallelList = String(o.parallel).split(',').map(Number);
  const modelId = path.basename(o.model).replace(/\.gguf$/i, '');
  console.log(`model     ${o.model}`);
  console.log(`server    adainfer serve --threads ${o.threads} --context ${o.context}; client: autocannon in this process (pipelining 1), ${o.requests} requests per client, max_tokens ${o.tokens}, greedy, streamed`);
  console.log('note      the machine is shared with other jobs: absolute figures are noisy; compare rows of this run');
  const builds: { build: string; cli: string }[] = [{ build: 'this', cli: path.join(repoRoot(), 'dist', 'lib', 'cli', 'main.js') }];
  if (o.baseline) builds.push({ build: 'baseline', cli: path.resolve(String(o.baseline)) });
  for (const b of builds) console.log(`build     ${b.build.padEnd(8)} ${b.cli}`);
  const servers: { build: string; parallel: number; child: ChildProcess; url: string }[] = [];
  const configs: { build: string; parallel: number; exit: Arm; clients: number }[] = [];
  for (const { build } of builds)
    for (const parallel of parallelList) for (const exit of arms) for (const clients of clientsList) configs.push({ build, parallel, exit, clients });
  const runs = new Map<string, Run[]>();
  const key = (c: { build: string; parallel: number; exit: string; clients: number }) => `${c.build}/${c.parallel}/${c.exit}/${c.clients}`;
  try {
    for (const { build, cli } of builds)
      for (const parallel of parallelList) {
        const { child, url, banner } = await startServer(cli, o.model, parallel, Number(o.threads), Number(o.context));
        servers.push({ build, parallel, child, url });
        console.log(`${build.padEnd(8)}  ${banner}`);
        await load(url, modelId, 'auto', 1, 1, 8); // warm-up: the exit file's first load, the first allocations
      }
    // Every configuration once per rep, in an order rotated by the rep, so that the machine's drift falls on all.
    for (let rep = 0; rep < Number(o.reps); rep++) {
      for (let i = 0; i < configs.length; i++) {
        const c = configs[(i + rep * 5) % configs.length];
        const server = servers.find((x) => x.build === c.build && x.parallel === c.parallel)!;
        const r = await load(server.url, modelId, c.exit, c.clients, Number(o.requests), Number(o.tokens));
        runs.set(key(c), [...(runs.get(key(c)) ?? []), r]);
      }
      process.stderr.write(`rep ${rep + 1}/${o.reps} done\n`);
    }
  } finally {
    for (const s of servers) {
      const code = await stopServer(s.child);
      if (code !== 0) console.log(`server ${s.build} --parallel ${s.parallel} exited with ${code}`);
    }
  }
  const rows: Row[] = configs.map((c) => {
    const rs = runs.get(key(c)) ?? [];
    const tokens = rs.reduce((a, r) => a + r.tokens, 0);
    const ttft = rs.flatMap((r) => r.ttft);
    return {
      ...c,
      requests: rs.reduce((a, r) => a + r.requests, 0),
      errors: rs.reduce((a, r) => a + r.errors, 0),
      tokens,
      seconds: rs.reduce((a, r) => a + r.seconds, 0),
      tokensPerSecond: median(rs.map((r) => r.tokens / r.seconds)),
      latencyP50: median(rs.map((r) => r.latencyP50)),
      latencyP99: median(rs.map((r) => r.latencyP99)),
      ttftP50: percentile(ttft, 50),
      ttftP99: percentile(ttft, 99),
      meanLayers: tokens > 0 ? rs.reduce((a, r) => a + r.layers, 0) / tokens : 0,
      serverTtftMean: meanMs(rs.map((r) => r.server.ttft)),
      queueWaitMean: meanMs(rs.map((r) => r.server.queueWait)),
      prefillMean: meanMs(rs.map((r) => r.server.prefill)),
    };
  });
  console.log(`\nmedians over ${o.reps} reps (tokens/s, latency percentiles); TTFT percentiles over every request of the reps`);
  for (const r of rows)
    console.log(
      `${builds.length > 1 ? r.build.padEnd(9) : ''}parallel ${String(r.parallel).padStart(2)}  ${armLabel(r.exit)}  clients ${String(r.clients).padStart(2)}: ` +
        `${r.tokensPerSecond.toFixed(0).padStart(5)} tok/s  latency p50 ${r.latencyP50.toFixed(0)} p99 ${r.latencyP99.toFixed(0)} ms  ` +
        `TTFT p50 ${r.ttftP50.toFixed(1)} p99 ${r.ttftP99.toFixed(1)} ms  layers/token ${r.meanLayers.toFixed(2)}  (${r.requests} requests, ${r.tokens} tokens, ${r.errors} errors)`,
    );
  console.log('\nwhere the time to first token goes (server /metrics, means in ms): server TTFT = slot wait + prefill + rest (HTTP, messages)');
  for (const r of rows)
    console.log(
      `${builds.length > 1 ? r.build.padEnd(9) : ''}parallel ${String(r.parallel).padStart(2)}  ${armLabel(r.exit)}  clients ${String(r.clients).padStart(2)}: ` +
        `server TTFT ${ms(r.serverTtftMean)} = slot wait ${ms(r.queueWaitMean)} + prefill ${ms(r.prefillMean)} + rest ${ms(r.serverTtftMean - r.queueWaitMean - r.prefillMean)}`,
    );

  const find = (build: string, parallel: number, exit: string, clients: number) =>
    rows.find((r) => r.build === build && r.parallel === parallel && r.exit === exit && r.clients === clients);
  const maxClients = Math.max(...clientsList);
  const maxParallel = Math.max(...parallelList);
  console.log(`\ntargets (issue 18): ${maxClients} clients, --parallel ${maxParallel} vs --parallel 1 and vs a lone request`);
  const targets: Record<string, number> = {};
  for (const { build } of builds)
    for (const exit of arms) {
      const batched = find(build, maxParallel, exit, maxClients);
      const serial = find(build, 1, exit, maxClients);
      const lone = find(build, maxParallel, exit, 1);
      const name = `${builds.length > 1 ? `${build} ` : ''}${armLabel(exit)}`;
      if (batched && serial) {
        const ratio = batched.tokensPerSecond / serial.tokensPerSecond;
        targets[`${build}_throughput_${exit}`] = ratio;
        console.log(`  ${name} tokens/s --parallel ${maxParallel} / --parallel 1 = ${ratio.toFixed(2)}x  (target >= 2x: ${ratio >= 2 ? 'met' : 'NOT met'})`);
      }
      if (batched && lone) {
        const ratio = batched.ttftP99 / lone.ttftP50;
        targets[`${build}_ttft_${exit}`] = ratio;
        console.log(
          `  ${name} p99 TTFT ${batched.ttftP99.toFixed(1)} ms / lone ${lone.ttftP50.toFixed(1)} ms = ${ratio.toFixed(2)}x  (target <= 5x: ${ratio <= 5 ? 'met' : 'NOT met'})`,
        );
      }
    }
  if (o.json) console.log(JSON.stringify({ machine, model: o.model, threads: Number(o.threads), tokens: Number(o.tokens), rows, targets }));
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
