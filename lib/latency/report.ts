/**
 * The latency report of `adainfer bench --exit … [--speculative …] --json` (one per model and thread count in
 * bench/latency.ts's latency.json): its types, how it is summarised from the timed requests (lib/latency/measure.ts),
 * and its JSON Schema (LATENCY_REPORT_SCHEMA, published as docs/schemas/bench-latency.schema.json).
 *
 *   { "format": "adainfer.bench-latency/1",
 *     "model":    { path, name, fingerprint, nLayer, kernels, backend, device, threads, cpuFeatures },
 *     "settings": { prompts, maxTokens, reps, warmup, temperature: 0, exit: { choice, file, source }, speculative },
 *     "arms": [ { arm: "full" | "exit" | "speculative", requests, tokens, ttftMs, tokenMs, msPerToken,
 *                 layersPerToken, layerHistogram, ratioToFull, speedup, tokenAgreement, speculative,
 *                 samples: { ttftMs, tokenMs } } ],
 *     "createdAt": ISO time }
 *
 * Definitions: ttftMs = call to the first token event (a fresh session: the whole prompt's prefill, then the first
 * token); tokenMs = time between two consecutive token events of a request (a speculative round delivers its
 * accepted tokens together: gaps near zero, then one long one); both as { n, mean, min, p50, p90, p99, max } by
 * nearest rank (lib/latency/quantiles.ts). msPerToken = total decode time / tokens after the first.
 * layersPerToken = mean layers run per generated token (full depth: nLayer; speculative: the rounds' row-layers —
 * drafts and verification — per token they gave); layerHistogram[i] = tokens that ran i + 1 layers (null for
 * speculative, whose tokens have no single depth). ratioToFull: the arm's figure over full depth's (layers =
 * layersPerToken / nLayer); speedup = full depth's msPerToken / the arm's; tokenAgreement = share of generated
 * tokens equal to full depth's at the same position of the same request (greedy).
 */
import { int, nullable, num, object, share, str, strings } from '../schema/build';
import { compileSchema, schemaErrors, Validator } from '../schema/validate';
import type { SpeculativeSpec } from '../api';
import type { ArmKind, RunRecord } from './measure';
import { Distribution, distribution } from './quantiles';

export const LATENCY_FORMAT = 'adainfer.bench-latency/1';

export interface LatencyModel {
  path: string;
  name: string;
  fingerprint: string;
  nLayer: number;
  kernels: string;
  backend: string;
  device: string | null;
  threads: number;
  cpuFeatures: string;
}

export interface LatencySettings {
  prompts: string[];
  maxTokens: number;
  reps: number;
  warmup: number;
  temperature: 0;
  /** What --exit asked for, and what it resolved to (source: given, auto, auto-none, never). */
  exit: { choice: string; file: string | null; source: string };
  /** The speculative arm's drafter, or null without one. */
  speculative: { draft: string; maxDraft: number | null } | null;
}

export interface ArmReport {
  arm: ArmKind;
  requests: number;
  tokens: number;
  ttftMs: Distribution;
  tokenMs: Distribution;
  msPerToken: number;
  layersPerToken: number;
  layerHistogram: number[] | null;
  ratioToFull: { layers: number; msPerToken: number; ttftP50: number | null; tokenP50: number | null; tokenP90: number | null; tokenP99: number | null };
  speedup: number;
  tokenAgreement: number;
  speculative: { acceptanceRate: number; meanDraftLength: number; draftStepMs: number; verifyStepMs: number; fallbackTokens: number } | null;
  samples: { ttftMs: number[]; tokenMs: number[] };
}

export interface LatencyReport {
  format: typeof LATENCY_FORMAT;
  model: LatencyModel;
  settings: LatencySettings;
  arms: ArmReport[];
  createdAt: string;
}

/** A speculative spec as the report names its drafter. */
export function describeDraft(spec: SpeculativeSpec): string {
  const d = spec.draft as unknown;
  if (typeof d === 'string') return d;
  if (d && typeof d === 'object' && 'layer' in d) return `layer ${(d as { layer: number }).layer}`;
  return JSON.stringify(d);
}

const ratio = (a: number | null, b: number | null) => (a === null || b === null || b === 0 ? null : a / b);

/** The report's arms from the timed requests of measureArms (full depth is the reference). */
export function summarizeArms(records: RunRecord[], nLayer: number): ArmReport[] {
  const kinds = [...new Set(records.map((r) => r.arm))];
  const fullOf = new Map<string, RunRecord>();
  for (const r of records) if (r.arm === 'full') fullOf.set(`${r.prompt}/${r.rep}`, r);
  const base = (kind: ArmKind) => {
    const rs = records.filter((r) => r.arm === kind);
    const tokenMs = rs.flatMap((r) => r.tokenMs);
    const ttftMs = rs.map((r) => r.ttftMs);
    const tokens = rs.reduce((a, r) => a + r.tokens.length, 0);
    const decoded = rs.reduce((a, r) => a + r.tokens.length - 1, 0);
    const msPerToken = rs.reduce((a, r) => a + r.decodeMs, 0) / Math.max(1, decoded);
    const layersPerToken = rs.reduce((a, r) => a + r.layersPerToken * r.tokens.length, 0) / Math.max(1, tokens);
    return { rs, tokenMs, ttftMs, tokens, msPerToken, layersPerToken, ttft: distribution(ttftMs), token: distribution(tokenMs) };
  };
  const full = base('full');
  return kinds.map((kind): ArmReport => {
    const b = kind === 'full' ? full : base(kind);
    let histogram: number[] | null = null;
    if (kind !== 'speculative') {
      histogram = new Array<number>(nLayer).fill(0);
      for (const r of b.rs) for (const l of r.exitLayers) histogram[l - 1]++;
    }
    let same = 0;
    for (const r of b.rs) {
      const f = fullOf.get(`${r.prompt}/${r.rep}`);
      if (f) for (let i = 0; i < r.tokens.length; i++) if (r.tokens[i] === f.tokens[i]) same++;
    }
    const specs = b.rs.map((r) => r.speculative).filter((s) => s !== undefined);
    const drafted = specs.reduce((a, s) => a + s.drafted, 0);
    const steps = specs.reduce((a, s) => a + s.verifySteps, 0);
    return {
      arm: kind,
      requests: b.rs.length,
      tokens: b.tokens,
      ttftMs: b.ttft,
      tokenMs: b.token,
      msPerToken: b.msPerToken,
      layersPerToken: b.layersPerToken,
      layerHistogram: histogram,
      ratioToFull: {
        layers: b.layersPerToken / nLayer,
        msPerToken: b.msPerToken / full.msPerToken,
        ttftP50: ratio(b.ttft.p50, full.ttft.p50),
        tokenP50: ratio(b.token.p50, full.token.p50),
        tokenP90: ratio(b.token.p90, full.token.p90),
        tokenP99: ratio(b.token.p99, full.token.p99),
      },
      speedup: full.msPerToken / b.msPerToken,
      tokenAgreement: same / Math.max(1, b.tokens),
      speculative:
        specs.length === 0
          ? null
          : {
              acceptanceRate: drafted > 0 ? specs.reduce((a, s) => a + s.accepted, 0) / drafted : 0,
              meanDraftLength: drafted / Math.max(1, steps),
              draftStepMs: specs.reduce((a, s) => a + s.draftStepMs * s.drafted, 0) / Math.max(1, drafted),
              verifyStepMs: specs.reduce((a, s) => a + s.verifyStepMs * s.verifySteps, 0) / Math.max(1, steps),
              fallbackTokens: specs.reduce((a, s) => a + s.fallbackTokens, 0),
            },
      samples: { ttftMs: b.ttftMs, tokenMs: b.tokenMs },
    };
  });
}

// --- the schema (docs/schemas/bench-latency.schema.json), checked by ajv ------------------------------

const ms = { type: 'number', minimum: 0, description: 'a non-negative number (ms)' } as const;
const positive = { type: 'number', exclusiveMinimum: 0, description: 'a positive number' } as const;
const msArray = { type: 'array', items: ms, description: 'an array of non-negative numbers (ms)' } as const;
const DISTRIBUTION = object({ n: int, mean: nullable(ms), min: nullable(ms), p50: nullable(ms), p90: nullable(ms), p99: nullable(ms), max: nullable(ms) });
const ARM = object({
  arm: { enum: ['full', 'exit', 'speculative'], description: 'one of full, exit, speculative' },
  requests: int,
  tokens: int,
  ttftMs: DISTRIBUTION,
  tokenMs: DISTRIBUTION,
  msPerToken: ms,
  layersPerToken: positive,
  layerHistogram: { type: ['array', 'null'], items: int, description: 'null or an array of non-negative integers' },
  ratioToFull: object({ layers: positive, msPerToken: positive, ttftP50: nullable(num), tokenP50: nullable(num), tokenP90: nullable(num), tokenP99: nullable(num) }),
  speedup: positive,
  tokenAgreement: share,
  speculative: {
    type: ['object', 'null'],
    description: 'null or an object',
    required: ['acceptanceRate', 'meanDraftLength', 'draftStepMs', 'verifyStepMs', 'fallbackTokens'],
    properties: { acceptanceRate: share, meanDraftLength: num, draftStepMs: ms, verifyStepMs: ms, fallbackTokens: int },
  },
  samples: object({ ttftMs: msArray, tokenMs: msArray }),
});

/** The JSON Schema of the latency report. What a schema cannot say (sums, counts) validateLatencyReport checks after it. */
export const LATENCY_REPORT_SCHEMA = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: 'urn:adainfer:schema:bench-latency:1',
  title: 'adainfer bench latency report (adainfer.bench-latency/1)',
  ...object({
    format: { const: LATENCY_FORMAT, description: JSON.stringify(LATENCY_FORMAT) },
    model: object({ path: str, name: str, fingerprint: str, nLayer: { ...int, minimum: 1 }, kernels: str, backend: str, device: nullable(str), threads: int, cpuFeatures: str }),
    settings: object({
      prompts: { ...strings, minItems: 1 },
      maxTokens: int,
      reps: int,
      warmup: int,
      temperature: { const: 0, description: '0 (greedy)' },
      exit: object({ choice: str, file: nullable(str), source: { enum: ['given', 'auto', 'auto-none', 'never'], description: 'one of given, auto, auto-none, never' } }),
      speculative: { type: ['object', 'null'], description: 'null or an object', required: ['draft', 'maxDraft'], properties: { draft: str, maxDraft: nullable(int) } },
    }),
    arms: { type: 'array', minItems: 1, items: ARM, description: 'an array of arms, full depth first' },
    createdAt: str,
  }),
};

let validator: Validator | undefined;

/** Every problem of a latency report (empty when valid): the schema's, naming the field, then the cross-field checks. */
export function validateLatencyReport(v: unknown): string[] {
  validator ??= compileSchema(LATENCY_REPORT_SCHEMA);
  const errors = schemaErrors(validator, v, { root: 'report', withValue: false, rootOnlyAtTop: true });
  if (errors.length > 0) return errors;
  const r = v as LatencyReport;
  if (r.arms[0].arm !== 'full') errors.push('arms[0].arm must be full (the reference of every ratio)');
  r.arms.forEach((a, i) => {
    const where = `arms[${i}]`;
    if (a.samples.ttftMs.length !== a.requests) errors.push(`${where}.samples.ttftMs has ${a.samples.ttftMs.length} entries, expected one per request (${a.requests})`);
    if (a.samples.tokenMs.length !== a.tokens - a.requests)
      errors.push(`${where}.samples.tokenMs has ${a.samples.tokenMs.length} entries, expected one per token after each request's first (${a.tokens - a.requests})`);
    if (a.tokenMs.n !== a.samples.tokenMs.length) errors.push(`${where}.tokenMs.n must equal the samples' count`);
    if (a.layerHistogram !== null) {
      if (a.layerHistogram.length !== r.model.nLayer) errors.push(`${where}.layerHistogram has ${a.layerHistogram.length} entries, expected one per layer (${r.model.nLayer})`);
      const total = a.layerHistogram.reduce((x, y) => x + y, 0);
      if (total !== a.tokens) errors.push(`${where}.layerHistogram sums to ${total}, expected tokens = ${a.tokens}`);
    }
    if (a.arm !== 'speculative' && a.layersPerToken > r.model.nLayer + 1e-9) errors.push(`${where}.layersPerToken must be at most nLayer (${r.model.nLayer})`);
    if (a.arm === 'speculative' && a.speculative === null) errors.push(`${where}.speculative is null for a speculative arm`);
  });
  return errors;
}
