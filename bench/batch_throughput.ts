/**
 * Batch throughput (lib/engine/batch.ts): prompts/s and generated tokens/s for several batch sizes, full depth
 * against AdaInfer early exit with row compaction, and AdaInfer with compaction turned off (exited rows stay in
 * the batch, computed and ignored) to measure what compaction gains. Two workloads:
 *  - classify: one next-token decision per prompt (the paper's setting; prefill only);
 *  - generate: `--tokens` greedy tokens per prompt (EOS ignored, so every configuration generates as many).
 * With `--speculative LAYER:K` the generate workload also runs every prompt with self-speculative decoding in
 * the batch (drafts of LAYER layers, up to K per round; adaptive drafting with --adaptive): its greedy output must equal full
 * depth's (a difference is a failure, exit code 1), and its tokens/s goes beside full depth's.
 * Every configuration runs the same prompts; reps alternate between configurations (rotating which goes
 * first) so that machine noise falls on all alike; the table shows medians.
 *
 *   node dist/bench/batch_throughput.js [--model M] [--exit FILE | --gap G] [--batch-sizes 1,4,16,64]
 *       [--prompts N] [--tokens T] [--reps R] [--threads T] [--kv-fill propagate|none] [--speculative L:K] [--json]
 */
import { Command } from 'commander';
import * as fs from 'fs';
import * as path from 'path';
import { BatchExit, BatchKvFill, BatchStats, classifyBatch, generateBatch, runBatchToEnd } from '../lib/engine/batch';
import { loadExitFile, policyFromExitFile } from '../lib/exit/exit_file';
import { thresholdPolicy } from '../lib/exit/policy';
import { TransformerContext, TransformerModel } from '../lib/model/transformer';
import { describeMachine, formatMachine, repoRoot } from './machine';

const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };

type Config = 'full' | 'ada' | 'ada-nocompact' | 'spec';

interface Sample {
  ms: number;
  /** CPU time of the process (user + system), ms: steadier than wall clock on a shared machine. */
  cpuMs: number;
  tokens: number;
  layerSum: number;
  decisions: number;
  stats: BatchStats;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

function main(): void {
  const shared = path.resolve(repoRoot(), '..', 'shared');
  const o = new Command('batch_throughput')
    .option('--model <path>', 'GGUF model', path.join(repoRoot(), 'models', 'adainfer-tinystories-10L-ee.f16.gguf'))
    .option('--exit <file>', 'exit file made by train-exit (default: a gap threshold policy)')
    .option('--gap <g>', 'threshold on the lens gap when no exit file is given', '0.3')
    .option('--data <file>', 'stories whose first words are the prompts', path.join(shared, 'datasets', 'tinystories', 'valid.txt'))
    .option('--words <n>', 'words of each story in its prompt', '12')
    .option('--batch-sizes <list>', 'sequences run together', '1,4,16,64')
    .option('--prompts <n>', 'prompts per run', '64')
    .option('--tokens <n>', 'tokens generated per prompt (generate workload)', '16')
    .option('--workloads <list>', 'classify, generate', 'classify,generate')
    .option('--reps <r>', 'measured reps per configuration', '5')
    .option('--threads <t>', 'threads', '1')
    .option('--kv-fill <mode>', 'K/V of skipped layers: propagate or none', 'propagate')
    .option('--speculative <layer:k>', 'generate workload: also self-speculative decoding, drafts of LAYER layers, up to K per round')
    .option('--adaptive', 'speculative: adaptive drafting on (ends a round at an unsure draft, decodes plainly while speculation measures slower)')
    .option('--json', 'also print a JSON object')
    .parse(process.argv)
    .opts();
  const model = TransformerModel.load(o.model);
  const nLayer = model.config.nLayer;
  const threads = Number(o.threads);
  const reps = Number(o.reps);
  const gen = Number(o.tokens);
  const kvFill = o.kvFill as BatchKvFill;
  const exitFile = o.exit ? loadExitFile(o.exit, { fingerprint: model.fingerprint, name: model.config.name, nLayer }) : undefined;
  // An exit file gives each slot its own policy (CRF state); a threshold policy is stateless and shared.
  const exit: BatchExit = exitFile ? () => policyFromExitFile(exitFile) : thresholdPolicy('gap', Number(o.gap));
  const lensK = Math.max(8, exitFile?.policy.lens.topK ?? 16);
  const [draftLayer, maxDraft] = o.speculative ? String(o.speculative).split(':').map(Number) : [0, 0];
  if (o.speculative && !(draftLayer >= 1 && draftLayer < nLayer && maxDraft >= 1)) throw new Error(`--speculative: LAYER:K with 1 <= LAYER < ${nLayer}, K >= 1`);
  const speculative = o.speculative ? { draft: { layer: draftLayer }, maxDraft, adaptive: o.adaptive === true } : undefined;

  let texts: string[];
  if (fs.existsSync(o.data)) {
    const stories = fs.readFileSync(o.data, 'utf8').split(/^<\|endoftext\|>\s*$/m).map((s) => s.trim()).filter(Boolean);
    texts = stories.slice(0, Number(o.prompts)).map((s) => s.split(/\s+/).slice(0, Number(o.words)).join(' '));
  } else {
    texts = Array.from({ length: Number(o.prompts) }, (_, i) => `Once upon a time there was a little ${['dog', 'cat', 'girl', 'boy'][i % 4]} named`);
  }
  const prompts = texts.map((t) => model.tokenizer.encode(t));
  const labels = [' the', ' a', ' and', ' he', ' she'].map((w) => model.tokenizer.encode(w, { addSpecial: false })[0]);
  const promptTokens = prompts.reduce((a, p) => a + p.length, 0);
  const longest = prompts.reduce((a, p) => Math.max(a, p.length), 0);

  for (const line of formatMachine(describeMachine())) console.log(line);
  console.log(`model     ${model.config.name} (${nLayer} layers, ${path.basename(o.model)})`);
  console.log(`threads   ${threads}`);
  console.log(
    `workload  ${prompts.length} prompts (first ${o.words} words of ${fs.existsSync(o.data) ? path.basename(o.data) : 'a template'}; ` +
      `${(promptTokens / prompts.length).toFixed(1)} tokens on average), generate: ${gen} greedy tokens each (EOS ignored), classify: ${labels.length} labels`,
  );
  console.log(
    `policy    ${exitFile ? `${o.exit} (${exitFile.policy.kind}, ${exitFile.policy.lens.mode} lens)` : `gap >= ${o.gap} (faithful lens)`}; kvFill ${kvFill}; ${reps} reps, medians\n`,
  );

  const batchSizes = String(o.batchSizes).split(',').map(Number);
  const workloads = String(o.workloads).split(',') as ('classify' | 'generate')[];
  const results: Record<string, unknown>[] = [];
  let mismatches = 0;
  for (const workload of workloads) {
    const CONFIGS: Config[] = ['full', 'ada', 'ada-nocompact', ...(workload === 'generate' && speculative ? (['spec'] as const) : [])];
    for (const b of batchSizes) {
      // One context per configuration, reused by its reps (compaction off needs a scratch slot).
      const ctxs = new Map<Config, TransformerContext>(
        CONFIGS.map((c) => [
          c,
          model.createContext({
            contextSize: longest + gen,
            sequences: b + (c === 'ada-nocompact' ? 1 : 0),
            // A speculative round's rows: every sequence may verify 1 + K rows in one step.
            batchSize: b + Math.max(512, b * maxDraft),
            threads,
            lensK,
          }),
        ]),
      );
      const runOnce = (c: Config): Sample => {
        const ctx = ctxs.get(c)!;
        const common = { exit: c === 'full' || c === 'spec' ? undefined : exit, compaction: c !== 'ada-nocompact' };
        const t0 = performance.now();
        const c0 = process.cpuUsage();
        const cpu = () => {
          const c = process.cpuUsage(c0);
          return (c.user + c.system) / 1000;
        };
        if (workload === 'classify') {
          const r = runBatchToEnd(classifyBatch(ctx, prompts.map((tokens) => ({ tokens, labelTokens: labels })), common));
          const ms = performance.now() - t0;
          return { ms, cpuMs: cpu(), tokens: prompts.length, layerSum: r.results.reduce((a, x) => a + x.exitLayer, 0), decisions: prompts.length, stats: r.stats };
        }
        const r = runBatchToEnd(
          generateBatch(ctx, prompts.map((tokens) => ({ tokens })), {
            ...common,
            maxTokens: gen,
            sampling: GREEDY,
            stopAtEos: false,
            kvFill,
            speculative: c === 'spec' ? speculative : undefined,
          }),
        );
        if (c === 'full') fullTokens = r.results.map((x) => x.tokens);
        else if (c === 'spec') {
          const differ = r.results.filter((x, i) => fullTokens !== undefined && x.tokens.join() !== fullTokens[i].join()).length;
          if (differ > 0) console.error(`FAILURE: ${differ} speculative outputs differ from full depth (batch ${b})`);
          mismatches += differ;
          specStats = r.results.map((x) => x.speculative!);
        }
        const ms = performance.now() - t0;
        const cpuMs = cpu();
        const tokens = r.results.reduce((a, x) => a + x.tokens.length, 0);
        return { ms, cpuMs, tokens, layerSum: r.results.reduce((a, x) => a + x.exitLayers.reduce((s, l) => s + l, 0), 0), decisions: tokens, stats: r.stats };
      };
      let fullTokens: number[][] | undefined;
      let specStats: { drafted: number; accepted: number }[] = [];
      for (const c of CONFIGS) runOnce(c); // warm-up
      const samples = new Map<Config, Sample[]>(CONFIGS.map((c) => [c, []]));
      for (let rep = 0; rep < reps; rep++) {
        for (let k = 0; k < CONFIGS.length; k++) {
          const c = CONFIGS[(rep + k) % CONFIGS.length];
          samples.get(c)!.push(runOnce(c));
        }
      }
      for (const ctx of ctxs.values()) ctx.dispose();
      const row: Record<string, unknown> = { workload, batchSize: b };
      for (const c of CONFIGS) {
        const s = samples.get(c)!;
        const ms = median(s.map((x) => x.ms));
        const cpuMs = median(s.map((x) => x.cpuMs));
        row[c] = {
          ms,
          cpuMs,
          promptsPerCpuSecond: (prompts.length * 1000) / cpuMs,
          tokensPerCpuSecond: (s[0].tokens * 1000) / cpuMs,
          promptsPerSecond: (prompts.length * 1000) / ms,
          tokensPerSecond: (s[0].tokens * 1000) / ms,
          meanLayers: s[0].layerSum / s[0].decisions,
          rowLayers: s[0].stats.rowLayers,
          rowLayersFull: s[0].stats.rowLayersFull,
          fillKvRowLayers: s[0].stats.fillKvRowLayers,
          steps: s[0].stats.steps,
        };
      }
      if (workload === 'generate' && speculative) {
        const drafted = specStats.reduce((a, x) => a + x.drafted, 0);
        row.speculative = { layer: draftLayer, maxDraft, drafted, acceptanceRate: drafted > 0 ? specStats.reduce((a, x) => a + x.accepted, 0) / drafted : 0 };
      }
      results.push(row);
    }
  }

  const f = (x: number, d = 1) => x.toFixed(d);
  type Cell = {
    ms: number;
    cpuMs: number;
    promptsPerSecond: number;
    tokensPerSecond: number;
    promptsPerCpuSecond: number;
    tokensPerCpuSecond: number;
    meanLayers: number;
    rowLayers: number;
    rowLayersFull: number;
  };
  const table = (clock: 'wall' | 'cpu') => {
    const pps = (x: Cell) => (clock === 'wall' ? x.promptsPerSecond : x.promptsPerCpuSecond);
    const tps = (x: Cell) => (clock === 'wall' ? x.tokensPerSecond : x.tokensPerCpuSecond);
    const t = (x: Cell) => (clock === 'wall' ? x.ms : x.cpuMs);
    const unit = clock === 'wall' ? '/s' : '/cpu-s';
    console.log(clock === 'wall' ? 'By wall clock:\n' : '\nBy CPU time of the process (user + system):\n');
    const header =
      `| workload | batch | full: prompts${unit} | full: tok${unit} | AdaInfer: prompts${unit} | AdaInfer: tok${unit} | mean layers | ` +
      `row-layers vs full | speedup vs full | no compaction: prompts${unit} | no compaction: row-layers | compaction gain |`;
    console.log(header);
    console.log('|' + header.split('|').slice(1, -1).map(() => '---').join('|') + '|');
    for (const r of results) {
      const full = r.full as Cell;
      const ada = r.ada as Cell;
      const off = r['ada-nocompact'] as Cell;
      console.log(
        `| ${r.workload} | ${r.batchSize} | ${f(pps(full))} | ${f(tps(full))} | ${f(pps(ada))} | ${f(tps(ada))} | ` +
          `${f(ada.meanLayers, 2)}/${nLayer} | ${f((100 * ada.rowLayers) / ada.rowLayersFull, 0)}% | ${f(t(full) / t(ada), 2)}x | ` +
          `${f(pps(off))} | ${f((100 * off.rowLayers) / off.rowLayersFull, 0)}% | ${f(t(off) / t(ada), 2)}x |`,
      );
    }
  };
  table('wall');
  table('cpu');
  if (speculative) {
    console.log(`\nSelf-speculative decoding in the batch (generate workload; drafts of ${draftLayer} layers, up to ${maxDraft} per round, adaptive ${speculative.adaptive ? 'on' : 'off'}; greedy, checked against full depth):\n`);
    console.log('| batch | full: tok/s | speculative: tok/s | ratio | acceptance | full: tok/cpu-s | speculative: tok/cpu-s | ratio |');
    console.log('|---|---|---|---|---|---|---|---|');
    for (const r of results.filter((x) => x.workload === 'generate')) {
      const full = r.full as Cell;
      const sp = r.spec as Cell;
      const st = r.speculative as { acceptanceRate: number };
      console.log(
        `| ${r.batchSize} | ${f(full.tokensPerSecond)} | ${f(sp.tokensPerSecond)} | ${f(sp.tokensPerSecond / full.tokensPerSecond, 2)}x | ${f(100 * st.acceptanceRate)}% | ` +
          `${f(full.tokensPerCpuSecond)} | ${f(sp.tokensPerCpuSecond)} | ${f(sp.tokensPerCpuSecond / full.tokensPerCpuSecond, 2)}x |`,
      );
    }
  }
  console.log(
    '\nrow-layers: rows that ran a layer, summed over layers and steps, against the same batches at full depth ' +
      '(K/V propagation not included); speedup and compaction gain are ratios of median times (full / AdaInfer, ' +
      'no compaction / compaction).',
  );
  if (o.json) console.log(JSON.stringify({ machine: describeMachine(), model: model.config.name, threads, kvFill, results }));
  model.dispose();
  if (mismatches > 0) process.exitCode = 1;
}

main();
