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
 * Every example carries its document (`doc`: the document's index in plain text, the line's in JSONL), so that
 * fit and calibration can be split by document (splitByDocument): overlapping windows of one story then never
 * land on both sides. `documents` keeps only a seeded part of the documents (`{ part, parts, seed }`: the
 * documents whose seeded draw falls in part `part` of `parts`), so one file yields disjoint calibration and
 * evaluation sets. `limit` draws that many examples uniformly with a seed, so any subset is reproducible.
 */
import * as fs from 'fs';
import { AdaInferError } from '../errors';
import { Tokenizer } from '../tokenizer';
import { Rng } from '../engine/sampling';

export interface Example {
  tokens: number[];
  gold?: number;
  /** The document the example comes from (index in its file). */
  doc: number;
}

/** A seeded part of a file's documents: those of part `part` (0-based) of `parts` equal parts. */
export interface DocumentPart {
  part: number;
  parts: number;
  seed: number;
}

export interface ExampleOptions {
  window: number;
  limit?: number;
  seed: number;
  documents?: DocumentPart;
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
  let all = firstLine.startsWith('{') ? jsonlExamples(path, text, tokenizer, options.window) : textExamples(text, tokenizer, options.window);
  if (options.documents) all = documentPart(all, options.documents);
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
    out.push({ tokens, gold, doc: i });
  });
  return out;
}

function textExamples(text: string, tokenizer: Tokenizer, window: number): Example[] {
  const out: Example[] = [];
  let docIndex = 0;
  for (const doc of text.split(/^<\|endoftext\|>\s*$/m)) {
    const trimmed = doc.trim();
    if (!trimmed || trimmed === DOC_SEPARATOR) continue;
    const ids = tokenizer.encode(trimmed);
    for (let i = 1; i < ids.length; i++) out.push({ tokens: ids.slice(Math.max(0, i - window), i), gold: ids[i], doc: docIndex });
    docIndex++;
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

/**
 * Splits items into two parts by document: a seeded `firstFraction` of the documents (at least one, and at
 * least one left when there are two or more) goes first, every item with its document. No document is on
 * both sides.
 */
export function splitByDocument<T extends { doc: number }>(items: T[], firstFraction: number, seed: number): [T[], T[]] {
  const docs = Array.from(new Set(items.map((t) => t.doc))).sort((a, b) => a - b);
  const n = Math.min(Math.max(1, Math.round(docs.length * firstFraction)), Math.max(1, docs.length - 1));
  const first = new Set(sample(docs, n, seed));
  return [items.filter((t) => first.has(t.doc)), items.filter((t) => !first.has(t.doc))];
}

/** The examples of one seeded part of the documents (DocumentPart). */
export function documentPart<T extends { doc: number }>(items: T[], p: DocumentPart): T[] {
  if (!Number.isInteger(p.parts) || p.parts < 1 || !Number.isInteger(p.part) || p.part < 0 || p.part >= p.parts)
    throw new AdaInferError('INVALID_OPTION', `document part must be i/n with 0 <= i < n, got ${String(p.part)}/${String(p.parts)}`);
  const docs = Array.from(new Set(items.map((t) => t.doc))).sort((a, b) => a - b);
  // A seeded shuffle of the documents, cut into `parts` runs of equal size (±1).
  const rng = new Rng(p.seed);
  for (let i = docs.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [docs[i], docs[j]] = [docs[j], docs[i]];
  }
  const begin = Math.floor((p.part * docs.length) / p.parts);
  const end = Math.floor(((p.part + 1) * docs.length) / p.parts);
  const keep = new Set(docs.slice(begin, end));
  return items.filter((t) => keep.has(t.doc));
}
