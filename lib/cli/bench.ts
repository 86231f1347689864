/**
 * `adainfer bench`: prompt processing and text generation speed in the style of llama-bench.
 *   pp<N>: N random tokens prefilled in one batch from an empty KV cache;
 *   tg<N>: N tokens decoded one at a time from an empty KV cache (each computes its logits).
 * Each test runs once unmeasured, then --reps times; tokens/s as mean ± sample standard deviation.
 */
import { Command } from 'commander';
import { type KernelVariant, loadModel, type Model } from '../api';
import { native } from '../bindings/native';
import { OptionError } from '../errors';
import { llamaFileTypeName } from '../gguf/types';
import { addBackendOptions, BackendFlags, intOption, modelOption } from './options';

interface BenchFlags extends BackendFlags {
  model: string;
  prompt: number;
  gen: number;
  threads?: number;
  reps: number;
  kernels?: KernelVariant;
  json?: boolean;
}

export interface BenchStat {
  tokens: number;
  mean: number;
  sd: number;
  samples: number[];
}

function stat(tokens: number, samples: number[]): BenchStat {
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  const sd = samples.length > 1 ? Math.sqrt(samples.reduce((a, b) => a + (b - mean) ** 2, 0) / (samples.length - 1)) : 0;
  return { tokens, mean, sd, samples };
}

/** Runs the pp and tg tests on a loaded model (p or n = 0 skips that test). */
export async function runBench(model: Model, p: number, n: number, reps: number): Promise<{ pp?: BenchStat; tg?: BenchStat }> {
  const session = await model.createSession({ contextSize: Math.max(p, n, 1) + 1, batchSize: Math.max(p, 1) });
  try {
    const out: { pp?: BenchStat; tg?: BenchStat } = {};
    if (p > 0) {
      const samples: number[] = [];
      for (let r = -1; r < reps; r++) {
        const res = await session.bench({ promptTokens: p, genTokens: 0, seed: r + 2 });
        if (r >= 0) samples.push((p * 1000) / res.prefillMs);
      }
      out.pp = stat(p, samples);
    }
    if (n > 0) {
      const samples: number[] = [];
      for (let r = -1; r < reps; r++) {
        const res = await session.bench({ promptTokens: 0, genTokens: n, seed: r + 2 });
        if (r >= 0) samples.push((n * 1000) / res.decodeMs);
      }
      out.tg = stat(n, samples);
    }
    return out;
  } finally {
    await session.dispose();
  }
}

function size(bytes: number): string {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(2)} GiB` : `${(bytes / 2 ** 20).toFixed(2)} MiB`;
}

function params(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)} B` : `${(n / 1e6).toFixed(2)} M`;
}

export function registerBench(program: Command): void {
  addBackendOptions(program.command('bench'))
    .description('prompt processing (pp) and text generation (tg) tokens/s, as llama-bench')
    .addOption(modelOption())
    .option('-p, --prompt <n>', 'prompt tokens of the pp test (0: skip)', intOption('-p', 0), 512)
    .option('-n, --gen <n>', 'generated tokens of the tg test (0: skip)', intOption('-n', 0), 128)
    .option('-t, --threads <t>', 'threads (default: physical cores)', intOption('--threads', 1, 1024))
    .option('-r, --reps <r>', 'measured repetitions per test', intOption('--reps', 1, 1000), 5)
    .option('--kernels <isa>', 'kernel variant: generic, avx2, avx512 (default: best for this CPU)')
    .option('--json', 'print one JSON object')
    .action(async (flags: BenchFlags) => {
      if (flags.prompt === 0 && flags.gen === 0) throw new OptionError('-p/-n', 'nothing to measure');
      const model = await loadModel(flags.model, { threads: flags.threads, kernels: flags.kernels, backend: flags.backend, device: flags.device });
      try {
        const info = model.info;
        const type = info.fileType !== undefined ? llamaFileTypeName(info.fileType).replace(/^(MOSTLY|ALL)_/, '') : '?';
        const features = native().systemInfo().cpuFeatures;
        const r = await runBench(model, flags.prompt, flags.gen, flags.reps);
        if (flags.json) {
          const strip = (s: BenchStat | undefined) => s && { tokens: s.tokens, mean: s.mean, sd: s.sd, samples: s.samples };
          process.stdout.write(
            JSON.stringify({
              model: info.path,
              type,
              threads: model.threads,
              pp: strip(r.pp),
              tg: strip(r.tg),
              sizeBytes: info.weightBytes,
              parameters: info.parameters,
              kernels: info.kernels,
              backend: info.backend,
              device: info.device,
              cpuFeatures: features,
              reps: flags.reps,
            }) + '\n',
          );
          return;
        }
        const rows: string[][] = [];
        const name = `${info.name || 'model'} (${info.nLayer} layers, dim ${info.nEmbd})`;
        for (const [test, s] of [[`pp${flags.prompt}`, r.pp], [`tg${flags.gen}`, r.tg]] as const) {
          if (!s) continue;
          const backend = info.backend === 'cuda' ? `cuda (${info.device ?? 'device'})` : info.kernels;
          rows.push([name, size(info.weightBytes), params(info.parameters), type, String(model.threads), backend, test, `${s.mean.toFixed(2)} ± ${s.sd.toFixed(2)}`]);
        }
        const head = ['model', 'size', 'params', 'type', 'threads', 'backend', 'test', 't/s'];
        const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
        const line = (cells: string[]) => '| ' + cells.map((c, i) => (i >= 1 && i !== 3 && i !== 5 && i !== 6 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(' | ') + ' |';
        process.stdout.write(`cpu features: ${features}\n`);
        process.stdout.write(line(head) + '\n');
        process.stdout.write('| ' + widths.map((w, i) => (i >= 1 && i !== 3 && i !== 5 && i !== 6 ? '-'.repeat(w - 1) + ':' : '-'.repeat(w))).join(' | ') + ' |\n');
        for (const row of rows) process.stdout.write(line(row) + '\n');
      } finally {
        await model.dispose();
      }
    });
}
