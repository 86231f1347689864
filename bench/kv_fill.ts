/**
 * Generation with early exit under each kvFill mode, against full depth, on the same prompts in the same run:
 *  - agreement: share of generated positions whose token equals full-depth greedy's at that position;
 *  - perplexity of the generated text under the full model (teacher-forced, full depth);
 *  - mean layers per token and decode tokens/s (median over prompts).
 *
 *   node dist/bench/kv_fill.js [--model M] [--exit FILE | --gap G] [--prompts N] [--tokens T] [--threads T]
 */
import { Command } from 'commander';
import * as fs from 'fs';
import * as path from 'path';
import { KvFill, Sequence, SequenceResult } from '../lib/engine/sequence';
import { loadExitFile, policyFromExitFile } from '../lib/exit/exit_file';
import { ExitDecider } from '../lib/exit/decider';
import { ExitPolicy, thresholdPolicy } from '../lib/exit/policy';
import { TransformerContext, TransformerModel } from '../lib/model/transformer';
import { describeMachine, formatMachine, repoRoot } from './machine';

const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };

function run(ctx: TransformerContext, kvFill: KvFill, prompt: number[], n: number, policy?: ExitPolicy): SequenceResult {
  const gen = new Sequence(ctx, kvFill).generate(prompt, { maxTokens: n, stopAtEos: false, sampling: GREEDY, exit: policy && new ExitDecider(ctx, policy) });
  let r = gen.next();
  while (!r.done) r = gen.next();
  return r.value;
}

/** Mean negative log-likelihood per generated token under the full model. */
function nll(ctx: TransformerContext, prompt: number[], tokens: number[]): number {
  const all = [...prompt, ...tokens];
  all.forEach((t, i) => (ctx.native.tokens[i] = t));
  ctx.forward(all.length, 0);
  let sum = 0;
  for (let i = prompt.length - 1; i < all.length - 1; i++) {
    const z = ctx.logits(i);
    let max = -Infinity;
    for (const v of z) max = Math.max(max, v);
    let s = 0;
    for (const v of z) s += Math.exp(v - max);
    sum += -(z[all[i + 1]] - max - Math.log(s));
  }
  return sum / tokens.length;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function main(): void {
  const shared = path.resolve(repoRoot(), '..', 'shared');
  const o = new Command('kv_fill')
    .option('--model <path>', 'GGUF model', path.join(repoRoot(), 'models', 'adainfer-tinystories-10L-ee.f16.gguf'))
    .option('--exit <file>', 'exit file (default: a gap threshold)')
    .option('--gap <g>', 'threshold policy on the gap when no exit file is given', '0.3')
    .option('--mode <m>', 'lens of the threshold policy: faithful or fast (top-16 of the first check)', 'fast')
    .option('--data <file>', 'stories whose first sentence is a prompt', path.join(shared, 'datasets', 'tinystories', 'valid.txt'))
    .option('--prompts <n>', 'prompts', '40')
    .option('--tokens <n>', 'tokens generated per prompt', '64')
    .option('--threads <t>', 'threads', '1')
    .parse(process.argv)
    .opts();
  const model = TransformerModel.load(o.model);
  const nLayer = model.config.nLayer;
  const n = Number(o.tokens);
  const policy = o.exit
    ? policyFromExitFile(loadExitFile(o.exit, { fingerprint: model.fingerprint, name: model.config.name, nLayer }))
    : thresholdPolicy('gap', Number(o.gap), { minLayer: 2, checkEvery: 1 }, o.mode === 'fast' ? { mode: 'fast', topK: 16 } : { mode: 'faithful' });
  const stories = fs.readFileSync(o.data, 'utf8').split(/^<\|endoftext\|>\s*$/m).map((s) => s.trim()).filter(Boolean);
  const prompts = stories.slice(0, Number(o.prompts)).map((s) => model.tokenizer.encode(s.split(/(?<=\.)\s/)[0]));
  const ctx = model.createContext({ contextSize: 256, batchSize: 256, threads: Number(o.threads), lensK: 16 });
  const scorer = model.createContext({ contextSize: 256, batchSize: 256, threads: Number(o.threads) });
  for (const line of formatMachine(describeMachine())) console.log(line);
  console.log(`model ${model.config.name}, ${prompts.length} prompts (first sentences of ${path.basename(o.data)}), ${n} greedy tokens each, threads ${o.threads}`);
  console.log(`policy: ${o.exit ? `${o.exit} (${policy.kind}, ${policy.lens.mode} lens)` : `gap >= ${o.gap} from layer 2, ${o.mode} lens`}\n`);

  const modes: (KvFill | 'full')[] = ['full', 'none', 'propagate', 'recompute'];
  const stats = new Map(modes.map((m) => [m, { agree: 0, total: 0, nll: 0, layers: 0, tps: [] as number[] }]));
  for (const prompt of prompts) {
    const full = run(ctx, 'none', prompt, n);
    for (const mode of modes) {
      const r = mode === 'full' ? run(ctx, 'none', prompt, n) : run(ctx, mode, prompt, n, policy);
      const st = stats.get(mode)!;
      r.tokens.forEach((t, i) => (st.agree += t === full.tokens[i] ? 1 : 0));
      st.total += r.tokens.length;
      st.nll += nll(scorer, prompt, r.tokens) * r.tokens.length;
      st.layers += r.exitLayers.reduce((a, b) => a + b, 0);
      st.tps.push(r.timings.decodeTokensPerSecond);
    }
  }
  const fullTps = median(stats.get('full')!.tps);
  console.log('mode       agreement  perplexity  mean layers  pruned  decode tok/s (median)  vs full');
  for (const mode of modes) {
    const st = stats.get(mode)!;
    const tps = median(st.tps);
    const layers = st.layers / st.total;
    console.log(
      `${mode.padEnd(10)} ${((100 * st.agree) / st.total).toFixed(1).padStart(8)}%  ${Math.exp(st.nll / st.total).toFixed(3).padStart(10)}  ` +
        `${layers.toFixed(2).padStart(11)}  ${((100 * (nLayer - layers)) / nLayer).toFixed(1).padStart(5)}%  ${tps.toFixed(0).padStart(21)}  ${(tps / fullTps).toFixed(3)}x`,
    );
  }
  ctx.dispose();
  scorer.dispose();
  model.dispose();
}

main();
