/**
 * One latency report: full depth, the exit policy `--exit` resolves to (if any) and self-speculative decoding
 * (if asked), measured interleaved on the same prompts (lib/latency/measure.ts), summarised and checked against
 * the published schema (lib/latency/report.ts). Shared by `adainfer bench --exit` and bench/latency.ts.
 */
import { AdaInferError } from '../errors';
import { native } from '../bindings/native';
import type { Model, SpeculativeSpec } from '../api';
import { resolveExitChoice } from '../cli/exit_choice';
import { Arm, measureArms, RunRecord } from './measure';
import { describeDraft, LATENCY_FORMAT, LatencyReport, summarizeArms, validateLatencyReport } from './report';

export interface LatencyBenchOptions {
  /** `--exit`: an exit file, 'auto' (the model's shipped one, else none) or 'never'. */
  exit: string;
  speculative?: SpeculativeSpec;
  prompts: readonly string[];
  maxTokens: number;
  reps: number;
  warmup: number;
  onRecord?: (r: RunRecord) => void;
}

export async function runLatencyBench(model: Model, o: LatencyBenchOptions): Promise<LatencyReport> {
  const info = model.info;
  const exit = resolveExitChoice(o.exit, { ...info });
  const arms: Arm[] = [{ kind: 'full' }];
  if (exit.file !== undefined) arms.push({ kind: 'exit', exit: exit.file });
  if (o.speculative) arms.push({ kind: 'speculative', speculative: o.speculative });
  const records = await measureArms(model, { prompts: [...o.prompts], maxTokens: o.maxTokens, reps: o.reps, warmup: o.warmup, arms, onRecord: o.onRecord });
  const report: LatencyReport = {
    format: LATENCY_FORMAT,
    model: {
      path: info.path,
      name: info.name,
      fingerprint: info.fingerprint,
      nLayer: info.nLayer,
      kernels: info.kernels,
      backend: info.backend,
      device: info.device ?? null,
      threads: model.threads,
      cpuFeatures: native().systemInfo().cpuFeatures,
    },
    settings: {
      prompts: [...o.prompts],
      maxTokens: o.maxTokens,
      reps: o.reps,
      warmup: o.warmup,
      temperature: 0,
      exit: { choice: o.exit, file: exit.file ?? null, source: exit.source },
      speculative: o.speculative ? { draft: describeDraft(o.speculative), maxDraft: o.speculative.maxDraft ?? null } : null,
    },
    arms: summarizeArms(records, info.nLayer),
    createdAt: new Date().toISOString(),
  };
  // Checked before anyone reads it, as eval-tasks checks results.json: a report that breaks its schema is a bug.
  const problems = validateLatencyReport(JSON.parse(JSON.stringify(report)));
  if (problems.length > 0) throw new AdaInferError('INTERNAL', `the latency report does not match its schema: ${problems.join('; ')}`);
  return report;
}
