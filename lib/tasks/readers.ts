/**
 * One small reader per data-set format of ../shared/datasets (see its README). Each returns the rows as they
 * are in the file (no normalisation beyond parsing) and fails with a DATA_FILE error naming the file and line.
 *
 *   sst2    `<label 0/1> <sentence>` one a line                        readSst2(file)
 *   agnews  CSV `Class Index,Title,Description` (classes 1..4)         readAgNews(file)
 *   csqa    JSONL {id, question, choices: {label, text}, answerKey}    readCsqa(file)
 *   mmlu    CSV `question,choice0..3,answer` per subject and split     readMmlu(dir, split)
 *   copa    JSONL {query, choices: [2], gold}                          readCopa(file)
 */
import * as fs from 'fs';
import * as path from 'path';
import { AdaInferError } from '../errors';
import { csvRecords } from './csv';

export interface Sst2Row {
  /** 1 = positive, 0 = negative. */
  label: 0 | 1;
  sentence: string;
}

export interface AgNewsRow {
  /** 1 World, 2 Sports, 3 Business, 4 Sci/Tech (as in the file). */
  classIndex: 1 | 2 | 3 | 4;
  title: string;
  description: string;
}

export interface CsqaRow {
  id: string;
  question: string;
  /** Option labels A..E, in file order. */
  labels: string[];
  choices: string[];
  /** Index into choices of answerKey. */
  answer: number;
}

export interface MmluRow {
  /** From the file name: `<subject>_<split>.csv`. */
  subject: string;
  question: string;
  choices: [string, string, string, string];
  /** 0..3 */
  answer: number;
}

export interface CopaRow {
  query: string;
  choices: [string, string];
  /** 0 or 1 */
  gold: number;
}

function read(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new AdaInferError('DATA_FILE', `${file}: cannot read: ${(e as Error).message}`);
  }
}

function jsonLines(file: string): { line: number; value: Record<string, unknown> }[] {
  const out: { line: number; value: Record<string, unknown> }[] = [];
  read(file)
    .split('\n')
    .forEach((text, i) => {
      if (!text.trim()) return;
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        throw new AdaInferError('DATA_FILE', `${file}:${i + 1}: not valid JSON`);
      }
      if (!value || typeof value !== 'object' || Array.isArray(value)) throw new AdaInferError('DATA_FILE', `${file}:${i + 1}: not a JSON object`);
      out.push({ line: i + 1, value: value as Record<string, unknown> });
    });
  return out;
}

const isStringArray = (v: unknown, n?: number): v is string[] =>
  Array.isArray(v) && v.every((x) => typeof x === 'string') && (n === undefined || v.length === n);

export function readSst2(file: string): Sst2Row[] {
  const rows: Sst2Row[] = [];
  read(file)
    .split('\n')
    .forEach((line, i) => {
      const text = line.replace(/\r$/, '');
      if (!text.trim()) return;
      const m = /^([01]) (.+)$/.exec(text);
      if (!m) throw new AdaInferError('DATA_FILE', `${file}:${i + 1}: expected '<0|1> <sentence>'`);
      rows.push({ label: m[1] === '1' ? 1 : 0, sentence: m[2] });
    });
  return rows;
}

export function readAgNews(file: string): AgNewsRow[] {
  return csvRecords(read(file), file, ['Class Index', 'Title', 'Description']).map((r, k) => {
    const c = Number(r['Class Index']);
    if (![1, 2, 3, 4].includes(c)) throw new AdaInferError('DATA_FILE', `${file}: record ${k + 1}: Class Index must be 1..4, got '${r['Class Index']}'`);
    return { classIndex: c as 1 | 2 | 3 | 4, title: r.Title, description: r.Description };
  });
}

export function readCsqa(file: string): CsqaRow[] {
  return jsonLines(file).map(({ line, value: v }) => {
    const fail = (what: string) => new AdaInferError('DATA_FILE', `${file}:${line}: ${what}`);
    const choices = v.choices as { label?: unknown; text?: unknown } | undefined;
    if (typeof v.question !== 'string') throw fail('"question" must be a string');
    if (!choices || !isStringArray(choices.label) || !isStringArray(choices.text) || choices.label.length !== choices.text.length || choices.label.length < 2)
      throw fail('"choices" must be {label: [...], text: [...]} of equal length >= 2');
    const answer = choices.label.indexOf(v.answerKey as string);
    if (answer < 0) throw fail(`"answerKey" ${JSON.stringify(v.answerKey)} is not one of the choice labels`);
    return { id: String(v.id ?? line), question: v.question, labels: choices.label, choices: choices.text, answer };
  });
}

/** All subjects of one split (`dev` or `test`): files `<dir>/<split>/<subject>_<split>.csv`, subjects sorted. */
export function readMmlu(dir: string, split: 'dev' | 'test'): MmluRow[] {
  const sub = path.join(dir, split);
  let names: string[];
  try {
    names = fs.readdirSync(sub);
  } catch (e) {
    throw new AdaInferError('DATA_FILE', `${sub}: cannot list: ${(e as Error).message}`);
  }
  const suffix = `_${split}.csv`;
  const files = names.filter((n) => n.endsWith(suffix)).sort();
  if (files.length === 0) throw new AdaInferError('DATA_FILE', `${sub}: no *${suffix} files`);
  const rows: MmluRow[] = [];
  for (const name of files) {
    const file = path.join(sub, name);
    const subject = name.slice(0, -suffix.length);
    csvRecords(read(file), file, ['question', 'choice0', 'choice1', 'choice2', 'choice3', 'answer']).forEach((r, k) => {
      const answer = Number(r.answer);
      if (![0, 1, 2, 3].includes(answer)) throw new AdaInferError('DATA_FILE', `${file}: record ${k + 1}: answer must be 0..3, got '${r.answer}'`);
      rows.push({ subject, question: r.question, choices: [r.choice0, r.choice1, r.choice2, r.choice3], answer });
    });
  }
  return rows;
}

export function readCopa(file: string): CopaRow[] {
  return jsonLines(file).map(({ line, value: v }) => {
    const fail = (what: string) => new AdaInferError('DATA_FILE', `${file}:${line}: ${what}`);
    if (typeof v.query !== 'string') throw fail('"query" must be a string');
    if (!isStringArray(v.choices, 2)) throw fail('"choices" must be two strings');
    if (v.gold !== 0 && v.gold !== 1) throw fail('"gold" must be 0 or 1');
    return { query: v.query, choices: v.choices as [string, string], gold: v.gold };
  });
}
