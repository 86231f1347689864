/**
 * Turning a task's items into token prompts: k demonstrations drawn with a seed from the demo part (from the
 * same group — MMLU's subject — when items have one; never the query itself), the query, and the label
 * scheme's suffix. A prompt longer than the model's context drops demonstrations, first ones first, until it
 * fits; a query that does not fit even without demonstrations is skipped. Both are counted for the report.
 */
import { Rng } from '../engine/sampling';
import { Tokenizer } from '../tokenizer';
import { buildPrompt, PromptFormat, TaskItem } from './formats';
import { LabelScheme, labelFollows, promptTokens } from './labels';

export interface PreparedExample {
  id: string;
  tokens: number[];
  /** Index of the right label. */
  gold: number;
  /** Demonstrations in the prompt (fewer than asked when the context was too small). */
  shots: number;
}

export interface PreparedSet {
  examples: PreparedExample[];
  /** Queries that did not fit the context even without demonstrations. */
  skipped: number;
  /** Examples that run with fewer demonstrations than asked. */
  shotsReduced: number;
  /** Examples whose gold label, written after the prompt, does not start with the scored token. */
  mismatches: number;
}

/** A seeded permutation of 0..n-1 (Fisher–Yates on the project's xoshiro128**). */
export function permutation(n: number, seed: number): number[] {
  const rng = new Rng(seed);
  const idx = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx;
}

function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * Demonstrations for a query: the first `shots` items (other than the query) of a seeded order of the
 * query's group in the demo pool. Every query of a group outside the pool gets the same demonstrations.
 */
export function demoPicker(pool: TaskItem[], shots: number, seed: number): (query: TaskItem) => TaskItem[] {
  const groups = new Map<string, TaskItem[]>();
  for (const item of pool) {
    const g = item.group ?? '';
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g)!.push(item);
  }
  const ordered = new Map<string, TaskItem[]>();
  for (const [g, items] of groups) ordered.set(g, permutation(items.length, (seed ^ hash(g)) >>> 0).map((i) => items[i]));
  return (query) => {
    if (shots === 0) return [];
    const order = ordered.get(query.group ?? '') ?? [];
    const out: TaskItem[] = [];
    for (const d of order) {
      if (out.length === shots) break;
      if (d !== query && d.id !== query.id) out.push(d);
    }
    return out;
  };
}

export interface PrepareOptions {
  shots: number;
  /** Examples wanted (default: all of `items`). */
  limit?: number;
  seed: number;
  /** Longest prompt in tokens (the model's context). */
  maxTokens: number;
}

/**
 * Prompts for up to `limit` items, taken in a seeded order; items whose prompt cannot fit are skipped and
 * the next one is taken, so `limit` examples come back unless the items run out.
 */
export function prepareExamples(
  items: TaskItem[],
  format: PromptFormat,
  tokenizer: Tokenizer,
  scheme: LabelScheme,
  demos: (query: TaskItem) => TaskItem[],
  o: PrepareOptions,
): PreparedSet {
  const out: PreparedSet = { examples: [], skipped: 0, shotsReduced: 0, mismatches: 0 };
  const limit = o.limit ?? items.length;
  for (const i of permutation(items.length, o.seed)) {
    if (out.examples.length >= limit) break;
    const query = items[i];
    let shots = demos(query);
    let text = buildPrompt(format, query, shots);
    let tokens = promptTokens(tokenizer, scheme, text);
    while (tokens.length > o.maxTokens && shots.length > 0) {
      shots = shots.slice(1);
      text = buildPrompt(format, query, shots);
      tokens = promptTokens(tokenizer, scheme, text);
    }
    if (tokens.length > o.maxTokens) {
      out.skipped++;
      continue;
    }
    if (shots.length < o.shots) out.shotsReduced++;
    if (!labelFollows(tokenizer, scheme, text, tokens, query.answer)) out.mismatches++;
    out.examples.push({ id: query.id, tokens, gold: query.answer, shots: shots.length });
  }
  return out;
}
