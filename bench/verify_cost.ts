/**
 * The cost of an n-row step relative to a 1-row (decode) step, at a decode position, through the layer loop
 * (TransformerContext.forwardRows: embedding, attention and MLP blocks of every layer; the LM head separately). This is
 * the verify step of self-speculative decoding (issue 15): k drafted rows through the layers should cost about one
 * decode step, since decode is bound by reading the weights and a few rows can share each weight read
 * (the few-row kernels, KernelTable::matmul_act_few). Target: <= 1.5x for 8 rows, Q8_0 and Q4_0.
 *
 *   node dist/bench/verify_cost.js [--geometry tinyllama-1.1b] [--types Q8_0,Q4_0] [--threads 1,2] [--rows 1,2,4,8]
 *                                  [--pos 256] [--rounds 3] [--reps 3] [--json]
 *
 * Each (type, threads) runs in child processes, alternating in every round between the few-row kernels and the
 * prefill path they replace (ADAINFER_FEW_ROWS=0), so both see the same machine; a child times every row count
 * interleaved (reps times each, median), and the table gives, per setting, the median over rounds. The models are
 * random-weight files at real geometry (bench/make_model.ts, made in bench/models/ when missing).
 */
import { spawnSync } from 'child_process';
import { Command } from 'commander';
import { TransformerModel } from '../lib/model/transformer';
import { describeMachine, formatMachine } from './machine';
import { ensureModel } from './make_model';

interface ChildResult {
  kernels: string;
  model: string;
  /** median seconds of the layer loop for rows[i] rows */
  layers: number[];
  /** median seconds of one head() call (one row of logits) */
  head: number;
}

const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function child(model: string, threads: number, rows: number[], pos: number, reps: number): ChildResult {
  const m = TransformerModel.load(model);
  const maxRows = Math.max(...rows);
  const ctx = m.createContext({ contextSize: pos + maxRows, batchSize: maxRows, threads });
  const c = ctx.native;
  // Rows at positions pos .. pos + n - 1 of sequence 0: attention reads the cache below them (its contents do
  // not change the time), as a verify step after pos accepted tokens.
  const step = (n: number): number => {
    for (let i = 0; i < n; i++) {
      c.tokens[i] = 300 + i;
      c.rowSeq[i] = 0;
      c.rowPos[i] = pos + i;
    }
    const t0 = process.hrtime.bigint();
    ctx.forwardRows(n);
    return Number(process.hrtime.bigint() - t0) / 1e9;
  };
  for (const n of rows) step(n);  // warm-up: page in the weights, size the buffers
  const times = rows.map(() => [] as number[]);
  const head: number[] = [];
  for (let r = 0; r < reps; r++) {
    rows.forEach((n, i) => times[i].push(step(n)));
    const t0 = process.hrtime.bigint();
    ctx.logits(0);
    head.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  const out = { kernels: c.kernels, model: m.config.name, layers: times.map(median), head: median(head) };
  m.dispose();
  return out;
}

function main(): void {
  const o = new Command()
    .option('--geometry <g>', 'model geometry (bench/make_model.ts)', 'tinyllama-1.1b')
    .option('--types <list>', 'weight types', 'Q8_0,Q4_0')
    .option('--threads <list>', 'thread counts', '1,2')
    .option('--rows <list>', 'rows per step (the first is the baseline, 1 = decode)', '1,2,4,8')
    .option('--pos <n>', 'decode position of the first row', '256')
    .option('--rounds <n>', 'rounds, alternating the two paths', '3')
    .option('--reps <n>', 'timed steps per row count in each child', '3')
    .option('--json', 'also print the results as one JSON line')
    .option('--child <spec>', 'internal: model|threads')
    .parse(process.argv)
    .opts();
  const rows = String(o.rows).split(',').map(Number);
  if (rows.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`--rows: ${o.rows}`);
  if (o.child) {
    const [model, threads] = String(o.child).split('|');
    process.stdout.write(JSON.stringify(child(model, Number(threads), rows, Number(o.pos), Number(o.reps))) + '\n');
    return;
  }
  const types = String(o.types).split(',');
  const threadList = String(o.threads).split(',').map(Number);
  const machine = describeMachine();
  for (const line of formatMachine(machine)) console.log(line);
  const models = new Map(types.map((t) => [t, ensureModel(String(o.geometry), t, { threads: 2 })]));
  const paths = [
    { name: 'few-row kernels', env: {} as Record<string, string> },
    { name: 'prefill path (ADAINFER_FEW_ROWS=0)', env: { ADAINFER_FEW_ROWS: '0' } },
  ];
  const runChild = (model: string, threads: number, env: Record<string, string>): ChildResult => {
    const args = [__filename, '--child', `${model}|${threads}`, '--rows', rows.join(','), '--pos', String(o.pos), '--reps', String(o.reps)];
    const r = spawnSync(process.execPath, args, { env: { ...process.env, ...env }, encoding: 'utf8', maxBuffer: 1 << 20 });
    if (r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildResult;
  };
  const results: {
    type: string;
    threads: number;
    path: string;
    kernels: string;
    model: string;
    rows: number[];
    layersMs: number[];
    ratio: number[];
    headMs: number;
  }[] = [];
  for (const type of types) {
    for (const threads of threadList) {
      const runs = paths.map(() => [] as ChildResult[]);
      for (let round = 0; round < Number(o.rounds); round++) {
        paths.forEach((p, i) => runs[i].push(runChild(models.get(type)!, threads, p.env)));
      }
      paths.forEach((p, i) => {
        const rs = runs[i];
        // per round, the ratio of each row count to the baseline of the same child (side by side), then medians
        const ratio = rows.map((_, k) => median(rs.map((r) => r.layers[k] / r.layers[0])));
        results.push({
          type,
          threads,
          path: p.name,
          kernels: rs[0].kernels,
          model: rs[0].model,
          rows,
          layersMs: rows.map((_, k) => 1e3 * median(rs.map((r) => r.layers[k]))),
          ratio,
          headMs: 1e3 * median(rs.map((r) => r.head)),
        });
      });
    }
  }
  console.log(
    `\n${o.geometry}, rows at decode position ${o.pos}; layer loop (embedding + every layer), median of ${o.rounds} rounds x ${o.reps} steps; ` +
      `ratio = n-row step / ${rows[0]}-row step in the same child`,
  );
  console.log('type  threads kernels path                                 ' + rows.map((n) => `${n} row${n > 1 ? 's' : ' '}`.padStart(17)).join('') + '   head/row');
  for (const r of results) {
    const cells = r.rows.map((_, k) => `${r.layersMs[k].toFixed(1)}ms ${r.ratio[k].toFixed(2)}x`.padStart(17)).join('');
    console.log(`${r.type.padEnd(5)} ${String(r.threads).padStart(7)} ${r.kernels.padEnd(7)} ${r.path.padEnd(36)} ${cells} ${r.headMs.toFixed(1).padStart(8)}ms`);
  }
  console.log(
    '\nThe LM head is one row per call (TransformerContext.logits): a verify step that needs logits for n rows pays n head calls on top.',
  );
  if (o.json) console.log(JSON.stringify({ machine, geometry: o.geometry, pos: Number(o.pos), results }));
}

if (require.main === module) {
  try {
    main();
  } catch (err) {
    process.stderr.write(`verify_cost: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}
