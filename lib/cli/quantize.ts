/** `adainfer quantize IN.gguf OUT.gguf TYPE`: writes a copy of a model with its weights in another type. */
import { Command } from 'commander';
import { OptionError } from '../errors';
import { ggmlTypeName } from '../gguf/types';
import { QUANT_TARGETS, parseQuantTarget, quantizeModel } from '../quant/quantize_model';
import { intOption } from './options';
import { checkWritableFile } from './output';

interface QuantizeFlags {
  keepOutputF16?: boolean;
  pure?: boolean;
  threads?: number;
  quiet?: boolean;
  json?: boolean;
}

export function registerQuantize(program: Command): void {
  program
    .command('quantize')
    .description(
      `write IN's weights as TYPE into OUT (${QUANT_TARGETS.join(', ')}); 1-D tensors stay as they are, the output head ` +
        'stays at higher precision (Q6_K, or Q8_0 for Q8_0) unless --pure',
    )
    .argument('<in>', 'input GGUF model')
    .argument('<out>', 'output GGUF file (written to a temporary file, renamed when complete)')
    .argument('<type>', 'target type')
    .option('--keep-output-f16', 'write output.weight (the tied token_embd.weight) as F16')
    .option('--pure', 'every 2-D tensor gets TYPE: no higher-precision head, no Q4_K_M/Q5_K_M mixture')
    .option('--threads <t>', 'threads (default: physical cores)', intOption('--threads', 1, 1024))
    .option('-q, --quiet', 'no per-tensor lines')
    .option('--json', 'print a JSON summary on stdout')
    .action((input: string, output: string, type: string, flags: QuantizeFlags) => {
      if (flags.keepOutputF16 && flags.pure) throw new OptionError('--pure', 'cannot be combined with --keep-output-f16');
      const target = parseQuantTarget(type);
      checkWritableFile(output, '<out>');
      const threads = flags.threads ?? defaultThreads();
      const log = flags.quiet ? () => undefined : (m: string) => process.stderr.write(`${m}\n`);
      const r = quantizeModel(input, output, target, { keepOutputF16: flags.keepOutputF16, pure: flags.pure, threads, log });
      const counts = new Map<string, number>();
      for (const p of r.plans) counts.set(ggmlTypeName(p.to), (counts.get(ggmlTypeName(p.to)) ?? 0) + 1);
      const types = [...counts].map(([k, v]) => `${k} x${v}`).join(', ');
      const summary = {
        input,
        output,
        type: target,
        tensors: r.plans.length,
        tensorTypes: Object.fromEntries(counts),
        inputBytes: r.inputBytes,
        outputBytes: r.outputBytes,
        seconds: r.seconds,
      };
      if (flags.json) process.stdout.write(JSON.stringify(summary) + '\n');
      else
        process.stderr.write(
          `quantized ${input} -> ${output} (${target}): ${types}; ${(r.inputBytes / 2 ** 20).toFixed(1)} MiB of tensors -> ` +
            `${(r.outputBytes / 2 ** 20).toFixed(1)} MiB file in ${r.seconds.toFixed(1)} s\n`,
        );
    });
}

function defaultThreads(): number {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { native } = require('../bindings/native') as typeof import('../bindings/native');
    return native().systemInfo().physicalCores;
  } catch {
    return 1;
  }
}
