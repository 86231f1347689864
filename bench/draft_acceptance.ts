/**
 * The acceptance a self-speculative draft from layer L would get (issue 15): on greedy generations at full
 * depth, the share of generated positions whose top-1 token after layer L (logit lens: final norm + output head
 * on the residual stream after L) equals the final top-1. Greedy verification accepts a drafted token exactly
 * when the two agree, so this is the per-token acceptance rate of a fixed draft layer L — measured, not assumed.
 *
 *   node dist/bench/draft_acceptance.js --model FILE [--layers 4,8,12] [--prompts 2] [--prompt-tokens 16]
 *                                       [--tokens 48] [--threads 1] [--seed 1] [--json]
 *
 * The prompts are random token ids (seeded): for random-weight files (bench/make_model.ts --depth-decay D) no
 * text means more than any other. Also prints the mean run of agreeing positions from each generated position
 * (capped at 8): the accepted length a draft of up to 8 tokens from layer L would reach on average.
 */
import { Command } from 'commander';
import { TransformerModel } from '../lib/model/transformer';
import { describeMachine, formatMachine } from './machine';

interface LayerStats {
  layer: number;
  agree: number;
  total: number;
}

/** xorshift32: the prompts' token ids. */
function randomTokens(n: number, lo: number, hi: number, seed: number): number[] {
  let s = seed >>> 0 || 1;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out.push(lo + (s % (hi - lo)));
  }
  return out;
}

function main(): void {
  const o = new Command()
    .requiredOption('--model <file>', 'GGUF model')
    .option('--layers <list>', 'draft layers L (1-based: the top-1 after L layers), comma-separated; default: every layer')
    .option('--prompts <n>', 'prompts', '2')
    .option('--prompt-tokens <n>', 'tokens per prompt', '16')
    .option('--tokens <n>', 'greedy tokens generated per prompt', '48')
    .option('--threads <t>', 'threads', '1')
    .option('--seed <n>', 'seed of the prompt tokens', '1')
    .option('--json', 'print one JSON object instead of the table')
    .parse(process.argv)
    .opts();
  const model = TransformerModel.load(o.model);
  const nLayer = model.config.nLayer;
  const layers: number[] = o.layers
    ? String(o.layers)
        .split(',')
        .map(Number)
    : Array.from({ length: nLayer - 1 }, (_, i) => i + 1);
  for (const l of layers) {
    if (!Number.isInteger(l) || l < 1 || l >= nLayer) throw new Error(`--layers: ${l} is not in [1, ${nLayer - 1}]`);
  }
  const promptLen = Number(o.promptTokens);
  const gen = Number(o.tokens);
  const ctx = model.createContext({ contextSize: promptLen + gen + 1, batchSize: promptLen, threads: Number(o.threads), lensK: 1 });
  const c = ctx.native;
  const stats: LayerStats[] = layers.map((layer) => ({ layer, agree: 0, total: 0 }));
  const runs = layers.map(() => ({ sum: 0, count: 0 }));
  const top1 = (row: number): number => {
    c.logitLens(row, 1);
    return c.lensIds[0];
  };
  const started = Date.now();
  for (let p = 0; p < Number(o.prompts); p++) {
    const prompt = randomTokens(promptLen, 259, model.config.nVocab, Number(o.seed) * 1000003 + p);
    c.tokens.set(prompt);
    ctx.forward(promptLen, 0);
    let next = top1(promptLen - 1);
    const perPrompt: boolean[][] = layers.map(() => []);
    for (let i = 0; i < gen; i++) {
      c.tokens[0] = next;
      const drafted = new Map<number, number>();
      ctx.forward(1, promptLen + i, (layer) => {
        if (layers.includes(layer + 1)) drafted.set(layer + 1, top1(0));
        return false;
      });
      next = top1(0);
      layers.forEach((l, k) => {
        const ok = drafted.get(l) === next;
        stats[k].total++;
        if (ok) stats[k].agree++;
        perPrompt[k].push(ok);
      });
    }
    perPrompt.forEach((seq, k) => {
      for (let i = 0; i < seq.length; i++) {
        let run = 0;
        while (run < 8 && i + run < seq.length && seq[i + run]) run++;
        runs[k].sum += run;
        runs[k].count++;
      }
    });
  }
  const seconds = (Date.now() - started) / 1000;
  const rows = stats.map((s, k) => ({
    layer: s.layer,
    positions: s.total,
    acceptance: s.agree / s.total,
    meanRunCap8: runs[k].sum / runs[k].count,
  }));
  if (o.json) {
    console.log(JSON.stringify({ machine: describeMachine(), model: model.config.name, file: o.model, nLayer, prompts: Number(o.prompts), tokens: gen, rows }));
    return;
  }
  for (const line of formatMachine(describeMachine())) console.log(line);
  console.log(`model ${model.config.name} (${o.model}), ${nLayer} layers; ${o.prompts} random prompts of ${promptLen} tokens, ${gen} greedy tokens each (${seconds.toFixed(0)} s)`);
  console.log('draft layer L | positions | top-1 after L = final top-1 | mean agreeing run (cap 8)');
  for (const r of rows) {
    console.log(`${String(r.layer).padStart(13)} | ${String(r.positions).padStart(9)} | ${(100 * r.acceptance).toFixed(1).padStart(26)}% | ${r.meanRunCap8.toFixed(2).padStart(25)}`);
  }
}

if (require.main === module) {
  try {
    main();
  } catch (err) {
    process.stderr.write(`draft_acceptance: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}
