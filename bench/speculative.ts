/**
 * Self-speculative decoding (greedy) against full depth, alternating on the same prompts in one run: decode
 * tokens/s, acceptance, mean draft length, for several draft layers and lengths. A speculative output that
 * differs from full depth's is a failure (exit code 1), not a figure.
 *
 *   node dist/bench/speculative.js [--model M] [--layers 2,4,6] [--drafts 2,4,8] [--adaptive on,off] [--prompts N] [--tokens T] [--threads T]
 *
 * With adaptive drafting, the prompts of a configuration share its verdict (they run on one context, as a session's
 * generations do: lib/engine/speculative.ts DraftingMeter).
 * Beside the measured speedup, the speedup predicted from the measured acceptance and the measured costs of a
 * draft step and a verification step: (tokens per round) / ((mean drafts × draft step + verify step) / full step).
 */
import { Command } from 'commander';
import * as fs from 'fs';
import * as path from 'path';
import { Sequence, SequenceResult, SpeculativeOptions } from '../lib/engine/sequence';
import { TransformerContext, TransformerModel } from '../lib/model/transformer';
import { describeMachine, formatMachine, repoRoot } from './machine';

const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };

function run(ctx: TransformerContext, prompt: number[], n: number, speculative?: SpeculativeOptions): SequenceResult {
  const gen = new Sequence(ctx).generate(prompt, { maxTokens: n, stopAtEos: false, sampling: GREEDY, speculative });
  let r = gen.next();
  while (!r.done) r = gen.next();
  return r.value;
}

function main(): void {
  const shared = path.resolve(repoRoot(), '..', 'shared');
  const o = new Command('speculative')
    .option('--model <path>', 'GGUF model', path.join(repoRoot(), 'models', 'adainfer-tinystories-10L-ee.f16.gguf'))
    .option('--data <file>', 'stories whose first sentence is a prompt', path.join(shared, 'datasets', 'tinystories', 'valid.txt'))
    .option('--layers <list>', 'draft layers', '2,4,6')
    .option('--drafts <list>', 'drafted tokens per verification step', '2,4,8')
    .option('--prompts <n>', 'prompts', '20')
    .option('--tokens <n>', 'tokens generated per prompt', '64')
    .option('--threads <t>', 'threads', '1')
    .option('--adaptive <list>', 'adaptive drafting: on, off or both', 'off,on')
    .parse(process.argv)
    .opts();
  const model = TransformerModel.load(o.model);
  const n = Number(o.tokens);
  const stories = fs.existsSync(o.data)
    ? fs.readFileSync(o.data, 'utf8').split(/^<\|endoftext\|>\s*$/m).map((s) => s.trim()).filter(Boolean)
    : ['Once upon a time', 'The little dog', 'Lily and Tom went to the park'];
  const prompts = stories.slice(0, Number(o.prompts)).map((s) => model.tokenizer.encode(s.split(/(?<=\.)\s/)[0]));
  const ctx = model.createContext({ contextSize: 256, batchSize: 256, threads: Number(o.threads) });
  const configs: (SpeculativeOptions | undefined)[] = [undefined];
  for (const adaptive of String(o.adaptive).split(',').map((a) => a === 'on'))
    for (const layer of String(o.layers).split(',').map(Number))
      for (const maxDraft of String(o.drafts).split(',').map(Number)) configs.push({ draft: { layer }, maxDraft, adaptive });
  const ms = configs.map(() => 0);
  const tokens = configs.map(() => 0);
  const drafted = configs.map(() => 0);
  const accepted = configs.map(() => 0);
  const steps = configs.map(() => 0);
  const draftMs = configs.map(() => 0);
  const verifyMs = configs.map(() => 0);
  const rowLayers = configs.map(() => 0);
  const generated = configs.map(() => 0);
  const fallback = configs.map(() => 0);
  let mismatches = 0;
  for (const line of formatMachine(describeMachine())) console.log(line);
  console.log(`model ${model.config.name} (${model.config.nLayer} layers), ${prompts.length} prompts, ${n} greedy tokens each, threads ${o.threads}\n`);
  prompts.forEach((prompt, p) => {
    // Rotate which configuration goes first, so machine noise falls on all alike.
    const order = configs.map((_, i) => (i + p) % configs.length);
    const outs = new Map<number, SequenceResult>();
    for (const i of order) {
      const r = run(ctx, prompt, n, configs[i]);
      outs.set(i, r);
      ms[i] += r.timings.decodeMs;
      tokens[i] += Math.max(0, r.tokens.length - 1);
      drafted[i] += r.speculative?.drafted ?? 0;
      accepted[i] += r.speculative?.accepted ?? 0;
      const s = r.speculative;
      if (s) {
        steps[i] += s.verifySteps;
        draftMs[i] += s.draftStepMs * s.drafted;
        verifyMs[i] += s.verifyStepMs * s.verifySteps;
        const roundTokens = r.tokens.length - 1 - s.fallbackTokens;
        rowLayers[i] += s.layersPerToken * roundTokens + s.fallbackTokens * model.config.nLayer;
        generated[i] += Math.max(0, r.tokens.length - 1);
        fallback[i] += s.fallbackTokens;
      }
    }
    for (let i = 1; i < configs.length; i++) if (outs.get(i)!.tokens.join() !== outs.get(0)!.tokens.join()) mismatches++;
  });
  const base = (tokens[0] * 1000) / ms[0];
  const fullStepMs = ms[0] / tokens[0];
  console.log('config                      decode tok/s   vs full   predicted   acceptance   mean draft   layers/token   fallback   draft ms   verify ms');
  configs.forEach((c, i) => {
    const tps = (tokens[i] * 1000) / ms[i];
    const name = c ? `layer ${(c.draft as { layer: number }).layer}, draft ${c.maxDraft}${c.adaptive ? ', adaptive' : ''}` : 'full depth';
    const acc = c ? `${((100 * accepted[i]) / Math.max(1, drafted[i])).toFixed(1)}%` : '';
    const len = c ? (drafted[i] / Math.max(1, steps[i])).toFixed(2) : '';
    const dMs = draftMs[i] / Math.max(1, drafted[i]);
    const vMs = verifyMs[i] / Math.max(1, steps[i]);
    // Tokens a round gives over what the round costs in full steps (rounds only; fallback tokens run at 1x).
    const predicted = c && steps[i] > 0 ? ((accepted[i] + steps[i]) / steps[i]) / ((dMs * (drafted[i] / steps[i]) + vMs) / fullStepMs) : NaN;
    const lpt = c ? (rowLayers[i] / Math.max(1, generated[i])).toFixed(2) : String(model.config.nLayer);
    const cells = [
      name.padEnd(27),
      tps.toFixed(tps < 100 ? 2 : 0).padStart(12),
      `${(tps / base).toFixed(3)}x`.padStart(9),
      (c ? `${predicted.toFixed(3)}x` : '').padStart(11),
      acc.padStart(12),
      len.padStart(12),
      lpt.padStart(14),
      (c ? String(fallback[i]) : '').padStart(10),
      (c ? dMs.toFixed(2) : '').padStart(10),
      (c ? vMs.toFixed(2) : '').padStart(11),
    ];
    console.log(cells.join(' '));
  });
  console.log(`full step ${fullStepMs.toFixed(2)} ms`);
  ctx.dispose();
  model.dispose();
  if (mismatches > 0) {
    console.error(`FAILED: ${mismatches} speculative outputs differ from full depth`);
    process.exitCode = 1;
  }
}

main();
