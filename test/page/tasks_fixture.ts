/**
 * Fixtures of the eval-tasks tests (test/standalone/tasks_cli, test/model/tasks, test/page/report_page): a
 * small data directory in the five formats of ../shared/datasets (made-up rows), the CLI run in-process, and
 * the checks every results object must pass.
 */
import * as fs from 'fs';
import * as path from 'path';
import { main } from '../../lib/cli/main';
import { Results, validateResults } from '../../lib/report/schema';

const csvField = (s: string) => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);

/** A data directory with `n` rows per file part, in the layout and formats of ../shared/datasets. */
export function writeFixtureData(dir: string, n = 12): string {
  const w = (rel: string, text: string) => {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), text);
  };
  const adj = ['good', 'bad', 'fine', 'dull', 'great', 'awful'];
  const sst = (k: number) => Array.from({ length: n }, (_, i) => `${i % 2} the film number ${k + i} was ${adj[(k + i) % adj.length]} .`).join('\n') + '\n';
  w('sst2/stsa.binary.train', sst(0));
  w('sst2/stsa.binary.dev', sst(100));
  const ag = Array.from({ length: 2 * n }, (_, i) => [String((i % 4) + 1), `Story ${i}`, `The team, the bank and the "lab" met on day ${i}.`].map(csvField).join(','));
  w('agnews/agnews.csv', 'Class Index,Title,Description\n' + ag.join('\n') + '\n');
  const letters = ['A', 'B', 'C', 'D', 'E'];
  const csqa = Array.from({ length: 2 * n }, (_, i) =>
    JSON.stringify({ id: `q${i}`, question: `Where is thing ${i}?`, question_concept: 'thing', choices: { label: letters, text: ['park', 'house', 'shop', 'tree', 'car'] }, answerKey: letters[i % 5] }),
  );
  w('csqa/dev_rand_split.jsonl', csqa.join('\n') + '\n');
  const mmlu = (split: string, subject: string, rows: number) =>
    w(
      `mmlu/${split}/${subject}_${split}.csv`,
      'question,choice0,choice1,choice2,choice3,answer\n' +
        Array.from({ length: rows }, (_, i) => [`What is ${i} plus ${i}, in ${subject}?`, String(2 * i), String(i), '0, or none', 'one', String(i % 4)].map(csvField).join(',')).join('\n') +
        '\n',
    );
  for (const subject of ['toy_math', 'toy_words']) {
    mmlu('dev', subject, 5);
    mmlu('test', subject, n);
  }
  const copa = Array.from({ length: 2 * n }, (_, i) =>
    JSON.stringify({ query: `The cat ${i} was hungry, ${i % 2 ? 'because' : 'therefore'}`, choices: ['it ate.', 'it slept.'], gold: i % 2 }),
  );
  w('copa/copa.jsonl', copa.join('\n') + '\n');
  return dir;
}

/** Runs the CLI in this process; returns its exit code and what it printed. */
export async function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = jest.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => ((stdout += String(s)), true));
  const err = jest.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => ((stderr += String(s)), true));
  try {
    const code = await main(['node', 'adainfer', ...args]);
    return { code, stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
}

/** What every eval-tasks run must satisfy. */
export function checkResults(r: Results, tasks: string[], n: number): void {
  expect(validateResults(r)).toEqual([]);
  expect(Object.keys(r.tasks)).toEqual(tasks);
  for (const t of Object.values(r.tasks)) {
    expect(t.n).toBe(n);
    expect(t.exitHistogram.reduce((a, b) => a + b, 0)).toBe(n);
    expect(t.secondsFull).toBeGreaterThan(0);
    expect(t.secondsExit).toBeGreaterThan(0);
    // The sweep replays the exit decisions from full-depth traces: at the policy's threshold it must give
    // exactly what the timed exit run measured.
    expect(t.sweepAtThreshold).not.toBeNull();
    expect(t.sweepAtThreshold!.agreement).toBeCloseTo(t.agreement, 12);
    expect(t.sweepAtThreshold!.meanLayers).toBeCloseTo(t.meanLayers, 12);
    expect(t.sweepAtThreshold!.accuracy).toBeCloseTo(t.accuracyExit, 12);
    expect(t.sweep!.length).toBeGreaterThanOrEqual(1);
    expect(t.sweep![0].threshold).toBeNull(); // +Infinity: never exit = full depth
    expect(t.sweep![0].accuracy).toBeCloseTo(t.accuracyFull, 12);
    expect(t.sweep![0].agreement).toBe(1);
  }
}

