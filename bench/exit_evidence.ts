/**
 * The AdaInfer evidence table: for each model, lens mode, classifier and target agreement, train on one
 * text file and evaluate on another (next-token prediction, teacher forced, the decision read at the last
 * position of a `window`-token prompt), with the oracle bound and the cost of a check relative to a layer.
 *
 *   node dist/bench/exit_evidence.js [--train F] [--valid F] [--models a,b] [--limit N] [--threads T] [--json]
 *
 * Every figure of one row comes from the same run: full depth and exit alternate example by example.
 */
import { Command } from 'commander';
import * as path from 'path';
import { collectTraces, oracleBound } from '../lib/exit/collect';
import { loadExamples } from '../lib/exit/data';
import { evaluatePolicy } from '../lib/exit/evaluate';
import { LensOptions } from '../lib/exit/lens';
import { classifierPolicy, ExitPolicy, thresholdPolicy } from '../lib/exit/policy';
import { ClassifierKind, trainPolicy } from '../lib/exit/train';
import { TransformerContext, TransformerModel } from '../lib/model/transformer';
import { describeMachine, formatMachine, exitEvidenceModels, repoRoot } from './machine';

interface Row {
  model: string;
  mode: string;
  classifier: ClassifierKind;
  target: number;
  threshold: number;
  agreement: number;
  accuracy: number | null;
  pruningRatio: number;
  speedup: number;
  secondsFull: number;
  secondsExit: number;
  histogram: number[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Median µs of a layer (attention + MLP on `n` rows) and of a lens check on the last row, both modes. */
function checkCost(ctx: TransformerContext, n: number): { layerUs: number; faithfulUs: number; fastUs: number } {
  const c = ctx.native;
  for (let i = 0; i < n; i++) c.tokens[i] = i % ctx.model.config.nVocab;
  for (let i = 0; i < n; i++) (c.rowSeq[i] = 0), (c.rowPos[i] = i);
  c.embed(n);
  const time = (fn: () => void, reps: number) => {
    const samples: number[] = [];
    for (let r = 0; r < 7; r++) {
      const t0 = performance.now();
      for (let i = 0; i < reps; i++) fn();
      samples.push(((performance.now() - t0) * 1000) / reps);
    }
    return median(samples);
  };
  const layerUs = time(() => {
    c.attention(0, n);
    c.mlp(0, n);
  }, 20);
  const faithfulUs = time(() => c.logitLens(n - 1, 1), 200);
  for (let i = 0; i < 16; i++) c.lensCandidates[i] = i;
  const fastUs = time(() => c.logitLensCandidates(n - 1, 16, 1), 200);
  return { layerUs, faithfulUs, fastUs };
}

async function main(): Promise<void> {
  const shared = path.resolve(repoRoot(), '..', 'shared');
  const program = new Command('exit_evidence')
    .option('--train <file>', 'training text', path.join(shared, 'datasets', 'tinystories', 'train.txt'))
    .option('--valid <file>', 'evaluation text', path.join(shared, 'datasets', 'tinystories', 'valid.txt'))
    .option('--models <list>', 'GGUF files, comma-separated', exitEvidenceModels().join(','))
    .option('--limit <n>', 'examples drawn from each file', '2000')
    .option('--window <w>', 'prompt tokens per example', '64')
    .option('--threads <t>', 'threads', '1')
    .option('--json', 'print rows as JSON')
    .parse(process.argv);
  const o = program.opts();
  const limit = Number(o.limit);
  const window = Number(o.window);
  const threads = Number(o.threads);
  const log = (s: string) => process.stderr.write(s + '\n');
  for (const line of formatMachine(describeMachine())) log(line);
  log(`settings: train ${o.train}, valid ${o.valid}, ${limit} examples each, window ${window}, threads ${threads}, seed 1`);

  const rows: Row[] = [];
  const classifiers: ClassifierKind[] = ['threshold', 'svm', 'svm-rbf', 'crf'];
  const modes: LensOptions[] = [{ mode: 'faithful' }, { mode: 'fast', topK: 16 }];
  const schedule = { minLayer: 1, checkEvery: 1 };
  for (const file of (o.models as string).split(',')) {
    const model = TransformerModel.load(file);
    const name = model.config.name;
    const ctx = model.createContext({ contextSize: window, batchSize: window, threads, lensK: 16 });
    const trainEx = loadExamples(o.train, model.tokenizer, { window, limit, seed: 1 });
    const validEx = loadExamples(o.valid, model.tokenizer, { window, limit, seed: 2 });
    const cost = checkCost(ctx, window);
    const decodeCost = checkCost(ctx, 1);
    log(
      `\n${name}: ${model.config.nLayer} layers, vocab ${model.config.nVocab}; one layer on ${window} rows ${cost.layerUs.toFixed(1)} µs, ` +
        `a check ${cost.faithfulUs.toFixed(1)} µs faithful (${((100 * cost.faithfulUs) / cost.layerUs).toFixed(1)}% of the layer), ` +
        `${cost.fastUs.toFixed(1)} µs fast/16 (${((100 * cost.fastUs) / cost.layerUs).toFixed(1)}%); at decode (1 row): layer ` +
        `${decodeCost.layerUs.toFixed(1)} µs, check ${((100 * decodeCost.faithfulUs) / decodeCost.layerUs).toFixed(0)}% / ` +
        `${((100 * decodeCost.fastUs) / decodeCost.layerUs).toFixed(0)}% of it`,
    );
    // Untimed warm-up, so the first row's full-depth time is not inflated by cold caches and JIT.
    evaluatePolicy(ctx, validEx.slice(0, 100), thresholdPolicy('gap', 2));
    const oracleTraces = collectTraces(ctx, validEx, schedule, { mode: 'faithful' });
    const oracle = oracleBound(oracleTraces);
    const L = model.config.nLayer;
    log(
      `oracle on valid: first ${(((L - oracle.first) / L) * 100).toFixed(1)}% pruned, stay ${(((L - oracle.stay) / L) * 100).toFixed(1)}% pruned`,
    );
    for (const lens of modes) {
      const traces = collectTraces(ctx, trainEx, schedule, lens);
      for (const classifier of classifiers) {
        for (const target of [0.95, 0.99]) {
          const t = trainPolicy(traces, schedule, lens, { classifier, label: 'final', target, seed: 1 });
          const policy: ExitPolicy = t.classifier
            ? classifierPolicy(t.classifier, t.threshold, schedule, lens)
            : thresholdPolicy(t.feature ?? 'gap', t.threshold, schedule, lens);
          const r = evaluatePolicy(ctx, validEx, policy);
          const row: Row = {
            model: name,
            mode: lens.mode,
            classifier,
            target,
            threshold: t.threshold,
            agreement: r.agreement,
            accuracy: r.accuracy,
            pruningRatio: r.pruningRatio,
            speedup: r.speedup,
            secondsFull: r.secondsFull,
            secondsExit: r.secondsExit,
            histogram: r.histogram,
          };
          rows.push(row);
          log(
            `  ${lens.mode.padEnd(8)} ${classifier.padEnd(9)} target ${target}: agreement ${(r.agreement * 100).toFixed(2)}%  ` +
              `gold acc ${((r.accuracy ?? 0) * 100).toFixed(2)}% (full ${((r.accuracyFull ?? 0) * 100).toFixed(2)}%)  ` +
              `pruned ${(r.pruningRatio * 100).toFixed(1)}%  speedup ${r.speedup.toFixed(3)}x  ` +
              `(full ${r.secondsFull.toFixed(2)} s, exit ${r.secondsExit.toFixed(2)} s)`,
          );
        }
      }
    }
    ctx.dispose();
    model.dispose();
  }
  if (o.json) process.stdout.write(JSON.stringify(rows) + '\n');
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exitCode = 1;
});
