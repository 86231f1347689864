/**
 * The tasks' data: each task's file rows (readers.ts) normalised to TaskItems, in two disjoint parts —
 *
 *   demo   where demonstrations and the exit classifier's training examples are drawn from;
 *   eval   what is evaluated.
 *
 * SST-2 and MMLU have a training split in the files (stsa.binary.train, mmlu/dev) and evaluate on another
 * (stsa.binary.dev, mmlu/test). AG News, CommonsenseQA and COPA have one file each: it is split in halves
 * with a fixed seed (SPLIT_SEED, independent of --seed), so no evaluated example is ever a demonstration
 * or a training example, whatever the seed.
 */
import * as path from 'path';
import { split } from '../exit/data';
import { PROMPT_FORMATS, TaskItem, TaskName } from './formats';
import { readAgNews, readCopa, readCsqa, readMmlu, readSst2 } from './readers';

export const SPLIT_SEED = 20240304;
export const SPLIT_FRACTION = 0.5;

export interface TaskData {
  demo: TaskItem[];
  eval: TaskItem[];
  /** Where each part comes from, for the report. */
  sources: { demo: string; eval: string };
}

/** AG News text: "\" stands for a line break in the source, "#36;" for "&#36;" ($). */
export function cleanAgNews(s: string): string {
  return s
    .replace(/\\/g, ' ')
    .replace(/#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code)))
    .replace(/\s+/g, ' ')
    .trim();
}

function halves(items: TaskItem[], file: string): TaskData {
  const [demo, evalPart] = split(items, SPLIT_FRACTION, SPLIT_SEED);
  const what = `${file}: ${items.length} rows split ${demo.length}/${evalPart.length} with fixed seed ${SPLIT_SEED}`;
  return { demo, eval: evalPart, sources: { demo: `${what} (first part)`, eval: `${what} (second part)` } };
}

export function loadTaskData(task: TaskName, dataDir: string): TaskData {
  switch (task) {
    case 'sst2': {
      const item = (r: { label: 0 | 1; sentence: string }, i: number, f: string): TaskItem => ({
        id: `${f}:${i + 1}`,
        fields: { sentence: r.sentence },
        answer: r.label,
      });
      const train = path.join(dataDir, 'sst2', 'stsa.binary.train');
      const dev = path.join(dataDir, 'sst2', 'stsa.binary.dev');
      return {
        demo: readSst2(train).map((r, i) => item(r, i, 'train')),
        eval: readSst2(dev).map((r, i) => item(r, i, 'dev')),
        sources: { demo: train, eval: dev },
      };
    }
    case 'agnews': {
      const file = path.join(dataDir, 'agnews', 'agnews.csv');
      const items = readAgNews(file).map((r, i): TaskItem => {
        const title = cleanAgNews(r.title);
        const description = cleanAgNews(r.description);
        const article = /[.!?]$/.test(title) || title === '' ? `${title} ${description}`.trim() : `${title}. ${description}`;
        return { id: `row${i + 1}`, fields: { article }, answer: r.classIndex - 1 };
      });
      return halves(items, file);
    }
    case 'csqa': {
      const file = path.join(dataDir, 'csqa', 'dev_rand_split.jsonl');
      const letters = PROMPT_FORMATS.csqa.labels;
      const items = readCsqa(file).map((r): TaskItem => {
        if (r.labels.join() !== letters.join()) throw new Error(`${file}: question ${r.id} has choice labels ${r.labels.join(',')}, expected ${letters.join(',')}`);
        return { id: r.id, fields: { question: r.question }, options: r.choices, answer: r.answer };
      });
      return halves(items, file);
    }
    case 'mmlu': {
      const dir = path.join(dataDir, 'mmlu');
      const item = (split: string) => (r: { subject: string; question: string; choices: string[]; answer: number }, i: number): TaskItem => ({
        id: `${split}:${r.subject}:${i}`,
        fields: { question: r.question, subject: r.subject.replace(/_/g, ' ') },
        options: r.choices,
        answer: r.answer,
        group: r.subject,
      });
      return {
        demo: readMmlu(dir, 'dev').map(item('dev')),
        eval: readMmlu(dir, 'test').map(item('test')),
        sources: { demo: path.join(dir, 'dev') + ' (demonstrations from the same subject)', eval: path.join(dir, 'test') },
      };
    }
    case 'copa': {
      const file = path.join(dataDir, 'copa', 'copa.jsonl');
      const items = readCopa(file).map((r, i): TaskItem => ({ id: `row${i + 1}`, fields: { premise: r.query }, options: r.choices, answer: r.gold }));
      return halves(items, file);
    }
  }
}
