/** `adainfer convert HF_FOLDER OUT.gguf [--type T]`: a Hugging Face Llama folder as a GGUF file llama.cpp reads. */
import { Command } from 'commander';
import { OptionError } from '../errors';
import { ggmlTypeName } from '../gguf/types';
import { convertHfToGGUF } from '../hf/convert';
import { QUANT_TARGETS, parseQuantTarget } from '../quant/quantize_model';
import { intOption } from './options';

interface ConvertFlags {
  type: string;
  pure?: boolean;
  keepOutputF16?: boolean;
  threads?: number;
  quiet?: boolean;
  json?: boolean;
}

export function registerConvert(program: Command): void {
  program
    .command('convert')
    .description(
      'write a Hugging Face Llama model folder (config.json, safetensors, tokenizer.json) as a GGUF file: GGUF tensor ' +
        `names, Q/K rows permuted for llama.cpp's RoPE layout, weights as TYPE (${QUANT_TARGETS.join(', ')}; default F16)`,
    )
    .argument('<folder>', 'Hugging Face model folder')
    .argument('<out>', 'output GGUF file (written to a temporary file, renamed when complete)')
    .option('--type <type>', 'weight type (as adainfer quantize)', 'F16')
    .option('--pure', 'every 2-D tensor gets TYPE: no higher-precision head, no Q4_K_M/Q5_K_M mixture')
    .option('--keep-output-f16', 'write output.weight (or the tied token_embd.weight) as F16')
    .option('--threads <t>', 'threads for quantization (default 1)', intOption('--threads', 1, 1024))
    .option('-q, --quiet', 'no per-tensor lines')
    .option('--json', 'print a JSON summary on stdout')
    .action((folder: string, out: string, flags: ConvertFlags) => {
      if (flags.keepOutputF16 && flags.pure) throw new OptionError('--pure', 'cannot be combined with --keep-output-f16');
      const type = parseQuantTarget(flags.type);
      const log = flags.quiet ? () => undefined : (m: string) => process.stderr.write(`${m}\n`);
      const r = convertHfToGGUF(folder, out, { type, pure: flags.pure, keepOutputF16: flags.keepOutputF16, threads: flags.threads, log });
      const counts = new Map<string, number>();
      for (const p of r.plans) counts.set(ggmlTypeName(p.to), (counts.get(ggmlTypeName(p.to)) ?? 0) + 1);
      const summary = { folder, output: out, type, tensors: r.plans.length, tensorTypes: Object.fromEntries(counts), outputBytes: r.outputBytes, seconds: r.seconds };
      if (flags.json) process.stdout.write(JSON.stringify(summary) + '\n');
      else
        process.stderr.write(
          `converted ${folder} -> ${out} (${type}): ${[...counts].map(([k, v]) => `${k} x${v}`).join(', ')}; ` +
            `${(r.outputBytes / 2 ** 20).toFixed(1)} MiB in ${r.seconds.toFixed(1)} s\n`,
        );
    });
}
