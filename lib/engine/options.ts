/**
 * The option checks of generation, with their one set of messages. The public API (lib/api.ts) checks what the
 * user passed here, once, before anything reaches the model worker; the engines' entry points (Sequence,
 * generateBatch, classifyBatch — also used directly by tools and tests) check only what depends on their context.
 */
import { OptionError } from '../errors';

/**
 * What happens to the K/V of the layers an early exit skipped, for the positions that exited:
 *  - none:       nothing (the paper's behaviour; exact only when a single token is generated). A later token
 *                attending at a skipped layer reads what that cache row last held: the K/V this session (or
 *                batch slot) last computed at that layer and position — an earlier generation's, possibly of
 *                another prompt — or zeros if none ever was. Positions from the first exited one on are never
 *                reused as a prefix: a later prompt through them recomputes them (Sequence.prefill);
 *  - propagate:  the exit hidden state computes the K/V of every skipped layer (only the K and V projections),
 *                as CALM does — cheap, approximate;
 *  - recompute:  the exited position's hidden state is kept, and the position rejoins the batch at the layer
 *                it stopped at when the next token runs that layer (SkipDecode-style bookkeeping) — exact K/V,
 *                the skipped work is only postponed. One sequence per context only (Session).
 */
export type KvFill = 'none' | 'propagate' | 'recompute';
/** The kvFill modes of batches (generateBatch). */
export type BatchKvFill = Exclude<KvFill, 'recompute'>;

const KV_FILL_MODES: readonly KvFill[] = ['none', 'propagate', 'recompute'];

/** A session's kvFill (default 'propagate'). */
export function checkKvFill(kvFill: unknown): KvFill {
  if (kvFill === undefined) return 'propagate';
  if (!KV_FILL_MODES.includes(kvFill as KvFill)) throw new OptionError('kvFill', `must be one of ${KV_FILL_MODES.join(', ')}, got ${String(kvFill)}`);
  return kvFill as KvFill;
}

/** A batch's kvFill (default 'propagate'): 'recompute' keeps one sequence's pending rows, so it is Session only. */
export function checkBatchKvFill(kvFill: unknown): BatchKvFill {
  if (kvFill === 'recompute')
    throw new OptionError('kvFill', "'recompute' is implemented for single sequences only (Session); batch mode supports 'none' and 'propagate'");
  return checkKvFill(kvFill) as BatchKvFill;
}

/** maxTokens (default 128); `where` names the prompt that carries its own. */
export function checkMaxTokens(value: unknown, where = ''): number {
  if (value === undefined) return 128;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0)
    throw new OptionError('maxTokens', `${where}must be an integer >= 0, got ${String(value)}`);
  return value;
}

/** A sampler seed in [0, 2^32). */
export function checkSeed(value: unknown, where = ''): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0xffffffff)
    throw new OptionError('seed', `${where}must be an integer in [0, 2^32), got ${String(value)}`);
  return value;
}

/** An integer option in [1, max], or undefined when absent. */
export function checkPositiveInt(value: unknown, option: string, max: number): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max)
    throw new OptionError(option, `must be an integer in [1, ${max}], got ${String(value)}`);
  return value;
}

export function checkBoolean(value: unknown, option: string): void {
  if (value !== undefined && value !== null && typeof value !== 'boolean') throw new OptionError(option, `must be a boolean, got ${String(value)}`);
}

/** Drafted tokens per verification step when `maxDraft` is not given. */
export const DEFAULT_MAX_DRAFT = 4;
/** Adaptive drafting's defaults: a round stops after a draft whose exit-layer p1 is below MIN_P1; FALLBACK_TOKENS plain tokens after speculation measured slower. */
export const DEFAULT_ADAPTIVE = { minP1: 0.3, fallbackTokens: 16 };

export interface CheckedAdaptive {
  minP1: number;
  fallbackTokens: number;
}

/**
 * Self-speculative decoding: `{ draft, maxDraft?, adaptive? }`. `draft` is `{ layer }` with 1 <= layer < nLayer
 * (checked here), or something the caller resolves to an exit policy (an exit file, a threshold spec, a policy).
 * Not with an exit policy of the generation's own (the output is the full model's). Returns maxDraft and adaptive
 * with their defaults (adaptive: on unless `false`).
 */
export function checkSpeculative(spec: unknown, nLayer: number, withExit: boolean): { maxDraft: number; adaptive: CheckedAdaptive | undefined } {
  if (spec === null || typeof spec !== 'object') throw new OptionError('speculative', 'must be an object { draft, maxDraft?, adaptive? }');
  checkKnownOptions(spec, ['draft', 'maxDraft', 'adaptive'], 'speculative');
  const { draft, maxDraft = DEFAULT_MAX_DRAFT, adaptive = true } = spec as { draft?: unknown; maxDraft?: unknown; adaptive?: unknown };
  if (draft === undefined || draft === null || (typeof draft !== 'object' && typeof draft !== 'string'))
    throw new OptionError('speculative', 'draft must be { layer: n }, an exit file path or an exit policy');
  if (typeof draft === 'object' && 'layer' in draft) {
    const { layer } = draft as { layer: unknown };
    if (typeof layer !== 'number' || !Number.isInteger(layer) || layer < 1 || layer >= nLayer)
      throw new OptionError('speculative', `draft.layer must be an integer in [1, ${nLayer - 1}], got ${String(layer)}`);
  }
  if (typeof maxDraft !== 'number' || !Number.isInteger(maxDraft) || maxDraft < 1)
    throw new OptionError('speculative', `maxDraft must be an integer >= 1, got ${String(maxDraft)}`);
  if (withExit) throw new OptionError('speculative', 'speculative decoding drafts with its own draft policy; it does not take an exit policy');
  return { maxDraft, adaptive: checkAdaptive(adaptive) };
}

function checkAdaptive(adaptive: unknown): CheckedAdaptive | undefined {
  if (adaptive === false) return undefined;
  if (adaptive === true) return { ...DEFAULT_ADAPTIVE };
  if (adaptive === null || typeof adaptive !== 'object') throw new OptionError('speculative', 'adaptive must be a boolean or { minP1?, fallbackTokens? }');
  checkKnownOptions(adaptive, ['minP1', 'fallbackTokens'], 'speculative.adaptive');
  const { minP1 = DEFAULT_ADAPTIVE.minP1, fallbackTokens = DEFAULT_ADAPTIVE.fallbackTokens } = adaptive as { minP1?: unknown; fallbackTokens?: unknown };
  if (typeof minP1 !== 'number' || !(minP1 >= 0 && minP1 <= 1)) throw new OptionError('speculative', `adaptive.minP1 must be a number in [0, 1], got ${String(minP1)}`);
  if (typeof fallbackTokens !== 'number' || !Number.isInteger(fallbackTokens) || fallbackTokens < 0)
    throw new OptionError('speculative', `adaptive.fallbackTokens must be an integer >= 0, got ${String(fallbackTokens)}`);
  return { minP1, fallbackTokens };
}

/** Labels of a classification: at least two non-empty strings. */
export function checkLabels(labels: unknown): string[] {
  if (!Array.isArray(labels) || labels.length < 2 || labels.some((l) => typeof l !== 'string' || l.length === 0))
    throw new OptionError('labels', 'must be at least two non-empty strings');
  return labels as string[];
}

/**
 * The names of an options type, written out so that plain JavaScript callers get their typos refused: the
 * `Record<keyof T, true>` argument makes the compiler fail when the list and the interface drift apart.
 */
export function optionNames<T>(names: Record<keyof T, true>): readonly string[] {
  return Object.keys(names);
}

/**
 * Refuses an options object with a key that is not one of `known` (`{ maxTokenz: 5 }`): an OptionError naming
 * the key (and the option it is closest to, when one is close). `where` names the object in the message.
 */
export function checkKnownOptions(options: object, known: readonly string[], where: string): void {
  for (const key of Object.keys(options)) {
    if (known.includes(key)) continue;
    const near = known.map((k) => ({ k, d: editDistance(key.toLowerCase(), k.toLowerCase()) })).sort((a, b) => a.d - b.d)[0];
    const hint = near && near.d <= Math.max(1, Math.floor(key.length / 3)) ? ` (did you mean ${near.k}?)` : '';
    throw new OptionError(key, `is not an option of ${where}${hint}; the options are ${known.join(', ')}`);
  }
}

/** Levenshtein distance (short option names only). */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}
