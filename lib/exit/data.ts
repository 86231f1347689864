/**
 * Examples for training and evaluating exit policies, in the paper's single-token setting: a prompt run
 * through the layer loop, the decision read at its last position, and (when known) the gold next token.
 *
 * Two input formats:
 *  - JSONL, one `{ "prompt": string, "answer"?: string }` a line; the gold token is the first token of the
 *    answer as it follows the prompt (tokenized without BOS);
 *  - plain text, documents separated by a line `<|endoftext|>`: every position of every document is an
 *    example whose prompt is the preceding `window` tokens (BOS included at a document's start) and whose
 *    gold token is the token at that position (teacher forcing).
 * `limit` draws that many examples uniformly with a seed, so any subset is reproducible.
 */
import * as fs from 'fs';
import { AdaInferError } from '../errors';
import { Tokenizer } from '../tokenizer';
import { Rng } from '../engine/sampling';

export interface Example {
  tokens: number[];
  gold?: number;
}

export interface ExampleOptions {
  window: number;
  limit?: number;
  seed: number;
}

const DOC_SEPARATOR = '<|endoftext|>';

export function loadExamples(path: string, tokenizer: Tokenizer, options: ExampleOptions): Example[] {
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (e) {
    throw new AdaInferError('DATA_FILE', `${path}: cannot read: ${(e as Error).message}`);
  }
  if (!Number.isInteger(options.window) || options.window < 1)
    throw new AdaInferError('INVALID_OPTION', `window must be an integer >= 1, got ${String(options.window)}`);
  const firstLine = text.slice(0, text.indexOf('\n') >>> 0).trim();
  const all = firstLine.startsWith('{') ? jsonlExamples(path, text, tokenizer, options.window) : textExamples(text, tokenizer, options.window);
  if (all.length === 0) throw new AdaInferError('DATA_FILE', `${path}: no examples`);
  return options.limit !== undefined ? sample(all, options.limit, options.seed) : all;
}

function jsonlExamples(path: string, text: string, tokenizer: Tokenizer, window: number): Example[] {
  const out: Example[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let row: { prompt?: unknown; answer?: unknown };
    try {
      row = JSON.parse(line);
    } catch {
      throw new AdaInferError('DATA_FILE', `${path}:${i + 1}: not valid JSON`);
    }
    if (typeof row.prompt !== 'string') throw new AdaInferError('DATA_FILE', `${path}:${i + 1}: "prompt" must be a string`);
    const tokens = tokenizer.encode(row.prompt).slice(-window);
    let gold: number | undefined;
    if (row.answer !== undefined) {
      if (typeof row.answer !== 'string') throw new AdaInferError('DATA_FILE', `${path}:${i + 1}: "answer" must be a string`);
      // The answer continues the prompt: its tokens are those the full text adds after the prompt's.
      const full = tokenizer.encode(row.prompt + row.answer);
      const prompt = tokenizer.encode(row.prompt);
      gold = full.length > prompt.length ? full[prompt.length] : undefined;
    }
    out.push({ tokens, gold });
  });
  return out;
}

function textExamples(text: string, tokenizer: Tokenizer, window: number): Example[] {
  const out: Example[] = [];
  for (const doc of text.split(/^<\|endoftext\|>\s*$/m)) {
    const trimmed = doc.trim();
    if (!trimmed || trimmed === DOC_SEPARATOR) continue;
    const ids = tokenizer.encode(trimmed);
    for (let i = 1; i < ids.length; i++) out.push({ tokens: ids.slice(Math.max(0, i - window), i), gold: ids[i] });
  }
  return out;
}

/** `n` examples drawn without replacement, in their original order. */
export function sample<T>(items: T[], n: number, seed: number): T[] {
  if (!Number.isInteger(n) || n < 1) throw new AdaInferError('INVALID_OPTION', `limit must be an integer >= 1, got ${String(n)}`);
  if (n >= items.length) return items;
  const rng = new Rng(seed);
  const idx = Array.from(items.keys());
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(rng.next() * (idx.length - i));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx
    .slice(0, n)
    .sort((a, b) => a - b)
    .map((i) => items[i]);
}

/** Splits items into two parts (fractions of the whole) with a seed. */
export function split<T>(items: T[], firstFraction: number, seed: number): [T[], T[]] {
  const n = Math.round(items.length * firstFraction);
  const first = new Set(sample(Array.from(items.keys()), Math.max(1, n), seed));
  return [items.filter((_, i) => first.has(i)), items.filter((_, i) => !first.has(i))];
}
