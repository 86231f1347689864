/**
 * `adainfer bench`: prompt processing and text generation speed in the style of llama-bench.
 *   pp<N>: N random tokens prefilled in one batch from an empty KV cache;
 *   tg<N>: N tokens decoded one at a time from an empty KV cache (each computes its logits).
 * Each test runs once unmeasured, then --reps times; tokens/s as mean ± sample standard deviation.
 * `--speculative` alone: greedy tg tokens/s at full depth and speculative, alternating.
 * `--exit FILE|auto|never [--speculative …]`: the latency report (lib/latency): time to first token, per-token
 * latency percentiles, layers per token and ratios to full depth, every arm interleaved on the same prompts.
 */
import * as fs from 'fs';
import { Command } from 'commander';
import { type KernelVariant, loadModel, type Model, type SpeculativeSpec, type SpeculativeStats } from '../api';
import { native } from '../bindings/native';
import { OptionError } from '../errors';
import { llamaFileTypeName } from '../gguf/types';
import { measureArms, RunRecord } from '../latency/measure';
import { STORY_PROMPTS } from '../latency/prompts';
import { LatencyReport } from '../latency/report';
import { runLatencyBench } from '../latency/run';
import { addBackendOptions, BackendFlags, intOption, modelOption } from './options';
import { addSpeculativeOptions, SpeculativeFlags, speculativeFromFlags } from './speculative_options';

interface BenchFlags extends BackendFlags, SpeculativeFlags {
  model: string;
  prompt: number;
  gen: number;
  threads?: number;
  reps: number;
  kernels?: KernelVariant;
  json?: boolean;
  text: string;
  exit?: string;
  prompts?: string;
  warmup: number;
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

/** Full depth against self-speculative decoding, alternating: greedy tg of `n` tokens from `text`, --reps times each. */
export interface SpeculativeBench {
  full: BenchStat;
  speculative: BenchStat;
  speedup: number;
  /** From the measured acceptance and draft / verify step costs: tokens per round / (round cost in full steps). */
  predictedSpeedup: number;
  acceptanceRate: number;
  meanDraftLength: number;
  layersPerToken: number;
  draftStepMs: number;
  verifyStepMs: number;
}

export async function runSpeculativeBench(model: Model, text: string, n: number, reps: number, speculative: SpeculativeSpec): Promise<SpeculativeBench> {
  // The latency harness's interleaved requests (it also checks that the outputs are equal), summed as tokens/s.
  const records = await measureArms(model, { prompts: [text], maxTokens: n, reps, warmup: 1, arms: [{ kind: 'full' }, { kind: 'speculative', speculative }] });
  const tokensPerSecond = (r: RunRecord) => ((r.tokens.length - 1) * 1000) / r.decodeMs;
  const fullRuns = records.filter((r) => r.arm === 'full');
  const specs = records.map((r) => r.speculative).filter((s) => s !== undefined);
  const sum = (f: (s: SpeculativeStats) => number) => specs.reduce((a, s) => a + f(s), 0);
  const drafted = sum((s) => s.drafted);
  const accepted = sum((s) => s.accepted);
  const rounds = sum((s) => s.verifySteps);
  const draftMs = sum((s) => s.draftStepMs * s.drafted);
  const verifyMs = sum((s) => s.verifyStepMs * s.verifySteps);
  const fullStep = fullRuns.reduce((a, r) => a + r.decodeMs, 0) / Math.max(1, fullRuns.reduce((a, r) => a + r.tokens.length - 1, 0));
  const perRound = (accepted + rounds) / Math.max(1, rounds);
  const roundCost = ((draftMs / Math.max(1, drafted)) * (drafted / Math.max(1, rounds)) + verifyMs / Math.max(1, rounds)) / fullStep;
  const f = stat(n, fullRuns.map(tokensPerSecond));
  const sp = stat(n, records.filter((r) => r.arm === 'speculative').map(tokensPerSecond));
  return {
    full: f,
    speculative: sp,
    speedup: sp.mean / f.mean,
    predictedSpeedup: perRound / roundCost,
    acceptanceRate: drafted > 0 ? accepted / drafted : 0,
    meanDraftLength: drafted / Math.max(1, rounds),
    layersPerToken: sum((s) => s.layersPerToken) / reps,
    draftStepMs: draftMs / Math.max(1, drafted),
    verifyStepMs: verifyMs / Math.max(1, rounds),
  };
}

/** The latency report's prompts: a file's non-empty lines, --text alone, or the default story openings. */
function latencyPrompts(file: string | undefined, text: string | undefined): string[] {
  if (text !== undefined) return [text];
  if (file === undefined) return [...STORY_PROMPTS];
  let content: string;
  try {
    content = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new OptionError('--prompts', `cannot read ${file}: ${(err as Error).message}`);
  }
  const lines = content.split(/\r?\n/).filter((l) => l.trim() !== '');
  if (lines.length === 0) throw new OptionError('--prompts', `${file} holds no prompt (one per line)`);
  return lines;
}

/** The latency report as a table: one row per arm. */
export function formatLatencyReport(r: LatencyReport): string {
  const f = (v: number | null, d = 2) => (v === null || !Number.isFinite(v) ? '-' : v.toFixed(d));
  const s = r.settings;
  const head = ['arm', 'ttft p50/p90/p99 ms', 'token p50/p90/p99 ms', 'ms/token', 'layers/token', 'layers vs full', 'token p50 vs full', 'speedup', 'agreement'];
  const rows = r.arms.map((a) => [
    a.arm === 'exit' ? 'exit policy' : a.arm === 'speculative' ? `speculative (${s.speculative?.draft})` : 'full depth',
    `${f(a.ttftMs.p50)} / ${f(a.ttftMs.p90)} / ${f(a.ttftMs.p99)}`,
    `${f(a.tokenMs.p50, 3)} / ${f(a.tokenMs.p90, 3)} / ${f(a.tokenMs.p99, 3)}`,
    f(a.msPerToken, 3),
    f(a.layersPerToken),
    `${(100 * a.ratioToFull.layers).toFixed(1)}%`,
    f(a.ratioToFull.tokenP50, 3),
    `${a.speedup.toFixed(3)}x`,
    `${(100 * a.tokenAgreement).toFixed(1)}%`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ') + ' |';
  const exit = s.exit.file !== null ? `${s.exit.file} (${s.exit.source})` : s.exit.source === 'auto-none' ? 'none shipped for this model (auto): full depth only' : 'never';
  const spec = r.arms.find((a) => a.speculative !== null)?.speculative;
  return [
    `${r.model.name || 'model'} (${r.model.nLayer} layers), ${r.model.threads} threads, ${r.model.backend === 'cuda' ? `cuda (${r.model.device})` : r.model.kernels}; cpu features: ${r.model.cpuFeatures}`,
    `${s.prompts.length} prompt(s) x ${s.reps} reps, ${s.maxTokens} tokens each, greedy, arms interleaved; exit: ${exit}`,
    line(head),
    '| ' + widths.map((w, i) => (i === 0 ? '-'.repeat(w) : '-'.repeat(w - 1) + ':')).join(' | ') + ' |',
    ...rows.map(line),
    ...(spec
      ? [`speculative: acceptance ${(100 * spec.acceptanceRate).toFixed(1)}%, mean draft ${spec.meanDraftLength.toFixed(2)}, draft step ${spec.draftStepMs.toFixed(3)} ms, verify step ${spec.verifyStepMs.toFixed(3)} ms, ${spec.fallbackTokens} fallback tokens`]
      : []),
    'ttft: call to first token (fresh session: the whole prefill); token: gap between consecutive tokens as the caller receives them (speculative rounds arrive in bursts).',
  ].join('\n') + '\n';
}

function size(bytes: number): string {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(2)} GiB` : `${(bytes / 2 ** 20).toFixed(2)} MiB`;
}

function params(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)} B` : `${(n / 1e6).toFixed(2)} M`;
}

export function registerBench(program: Command): void {
  addSpeculativeOptions(
    addBackendOptions(program.command('bench')),
    'full depth against self-speculative decoding, alternating: greedy tg tokens/s, acceptance, draft length, measured and predicted speedup',
  )
    .description('prompt processing (pp) and text generation (tg) tokens/s, as llama-bench; with --exit, the latency report (TTFT, per-token percentiles, layers per token against full depth)')
    .addOption(modelOption())
    .option('-p, --prompt <n>', 'prompt tokens of the pp test (0: skip)', intOption('-p', 0), 512)
    .option('-n, --gen <n>', 'generated tokens of the tg test (0: skip)', intOption('-n', 0), 128)
    .option('-t, --threads <t>', 'threads (default: physical cores)', intOption('--threads', 1, 1024))
    .option('-r, --reps <r>', 'measured repetitions per test', intOption('--reps', 1, 1000), 5)
    .option('--kernels <isa>', 'kernel variant: generic, avx2, avx512 (default: best for this CPU)')
    .option('--json', 'print one JSON object')
    .option('--text <prompt>', 'speculative / latency: the one prompt text', 'Once upon a time, there was a little girl named Lily.')
    .option('--exit <file|auto|never>', "latency report: full depth against this exit policy (an exit file, 'auto' for the model's shipped one, 'never' for full depth alone), and against --speculative if given, interleaved on the same prompts")
    .option('--prompts <file>', 'latency report: prompts, one per line (default: 8 short story openings)')
    .option('--warmup <w>', 'latency report: unmeasured requests per arm first', intOption('--warmup', 0, 1000), 1)
    .action(async (flags: BenchFlags, command: Command) => {
      if (flags.prompt === 0 && flags.gen === 0) throw new OptionError('-p/-n', 'nothing to measure');
      const speculative = speculativeFromFlags(flags);
      const given = (name: string) => command.getOptionValueSource(name) === 'cli';
      const latency = flags.exit !== undefined;
      if (!latency && (flags.prompts !== undefined || given('warmup'))) throw new OptionError(flags.prompts !== undefined ? '--prompts' : '--warmup', 'belongs to the latency report: add --exit FILE|auto|never');
      if (latency && given('prompt')) throw new OptionError('-p', 'does not apply to the latency report (--exit): it generates -n tokens from each prompt (--prompts FILE or --text)');
      if (latency && flags.gen < 2) throw new OptionError('-n', 'the latency report needs at least 2 generated tokens per request (one gap between two tokens)');
      if (flags.prompts !== undefined && given('text')) throw new OptionError('--prompts', 'give either --prompts FILE or --text, not both');
      const prompts = latency ? latencyPrompts(flags.prompts, given('text') ? flags.text : undefined) : [];
      const model = await loadModel(flags.model, { threads: flags.threads, kernels: flags.kernels, backend: flags.backend, device: flags.device });
      try {
        const info = model.info;
        if (latency) {
          const report = await runLatencyBench(model, {
            exit: flags.exit!,
            speculative,
            prompts,
            maxTokens: flags.gen,
            reps: flags.reps,
            warmup: flags.warmup,
          });
          process.stdout.write(flags.json ? JSON.stringify(report) + '\n' : formatLatencyReport(report));
          return;
        }
        if (speculative) {
          const s = await runSpeculativeBench(model, flags.text, flags.gen || 128, flags.reps, speculative);
          if (flags.json) {
            process.stdout.write(JSON.stringify({ model: info.path, threads: model.threads, kernels: info.kernels, backend: info.backend, reps: flags.reps, ...s }) + '\n');
            return;
          }
          const tps = (b: BenchStat) => `${b.mean.toFixed(2)} ± ${b.sd.toFixed(2)}`;
          process.stdout.write(
            [
              `${info.name || 'model'} (${info.nLayer} layers), ${model.threads} threads, ${info.kernels}, tg${flags.gen || 128} greedy, ${flags.reps} reps alternating`,
              `full depth    ${tps(s.full)} t/s`,
              `speculative   ${tps(s.speculative)} t/s   (draft ${flags.draftExit ?? `layer ${flags.draftLayer}`}, max ${flags.maxDraft ?? 4})`,
              `speedup       ${s.speedup.toFixed(3)}x measured, ${s.predictedSpeedup.toFixed(3)}x predicted from acceptance and step costs`,
              `acceptance    ${(100 * s.acceptanceRate).toFixed(1)}%, mean draft ${s.meanDraftLength.toFixed(2)}, ${s.layersPerToken.toFixed(2)} layers per token`,
              `step costs    draft ${s.draftStepMs.toFixed(2)} ms, verify ${s.verifyStepMs.toFixed(2)} ms`,
            ].join('\n') + '\n',
          );
          return;
        }
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
