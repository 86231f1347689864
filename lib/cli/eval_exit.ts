/** `adainfer eval-exit`: an exit file against full depth on the same examples, with wall-clock times. */
import { Command } from 'commander';
import { DEFAULT_FAST_TOP_K } from '../defaults';
import { evaluatePolicy } from '../exit/evaluate';
import { loadExitFile, policyFromExitFile } from '../exit/exit_file';
import { addExampleOptions, ExampleFlags, loadForExit } from './exit_common';
import { progressBar } from './progress';

interface EvalFlags extends ExampleFlags {
  exit: string;
  json?: boolean;
}

export function registerEvalExit(program: Command): void {
  const cmd = program.command('eval-exit').description('evaluate an exit file against full depth');
  addExampleOptions(cmd)
    .requiredOption('--exit <file>', 'exit file made by train-exit for this model')
    .option('--json', 'print one JSON object')
    .action((flags: EvalFlags) => {
      const peek = loadExitFile(flags.exit);
      // lensK: a fast lens's top-k, or the jsd feature's candidate set in faithful mode (the default top-k).
      const { model, ctx, examples } = loadForExit(flags, Math.max(DEFAULT_FAST_TOP_K, peek.policy.lens.topK ?? 0));
      try {
        const file = loadExitFile(flags.exit, { fingerprint: model.fingerprint, name: model.config.name, nLayer: model.config.nLayer });
        const bar = progressBar('eval', examples.length);
        const report = evaluatePolicy(ctx, examples, policyFromExitFile(file), (d) => bar.update(d));
        bar.stop();
        if (flags.json) {
          process.stdout.write(JSON.stringify(report) + '\n');
          return;
        }
        const pct = (x: number | null) => (x === null ? 'n/a' : (x * 100).toFixed(2) + '%');
        process.stdout.write(
          [
            `model ${model.config.name} (${report.layers} layers), exit ${flags.exit} (${file.policy.kind}, ${file.policy.lens.mode})`,
            `examples            ${report.examples}`,
            `agreement w/ full   ${pct(report.agreement)}  (95% lower bound ${pct(report.agreementLower)})`,
            `accuracy (gold)     exit ${pct(report.accuracy)}  full ${pct(report.accuracyFull)}  drop ${report.accuracyDrop === null ? 'n/a' : (report.accuracyDrop * 100).toFixed(2) + ' points'}`,
            `mean layers         ${report.meanLayers.toFixed(3)} / ${report.layers}   pruning ratio ${pct(report.pruningRatio)}`,
            `oracles (pruning)   first ${pct(report.oracleFirst)}  stay ${pct(report.oracleStay)}  this policy reaches ${pct(report.oracleFraction)} of stay`,
            `wall clock          full ${report.secondsFull.toFixed(3)} s  exit ${report.secondsExit.toFixed(3)} s  speedup ${report.speedup.toFixed(3)}x (ideal ${report.idealSpeedup.toFixed(3)}x)`,
            `classifier cost     ${report.classifierMicrosPerCheck.toFixed(3)} µs per check (lens read excluded)`,
            `exit layer histogram ${report.histogram.map((c, i) => `${i + 1}:${c}`).join(' ')}`,
          ].join('\n') + '\n',
        );
      } finally {
        ctx.dispose();
        model.dispose();
      }
    });
}
