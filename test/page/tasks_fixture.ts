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


/** A valid results object with made-up figures for `tasks` on a `layers`-layer model (sweeps included). */
export function syntheticResults(tasks = ['sst2', 'agnews', 'csqa', 'mmlu', 'copa'], layers = 10): Results {
  const r: Results = {
    format: 'adainfer.eval-tasks/1',
    model: { name: 'synthetic', fingerprint: 'sha256:' + '0'.repeat(64), layers, path: '/models/synthetic.gguf', vocab: 512, contextLength: 256, tokenizer: 'SentencePiece' },
    settings: {
      shots: 2,
      seed: 1,
      exit: 'train:svm',
      mode: 'fast',
      classifier: 'svm',
      target: 0.99,
      label: 'final',
      limit: 20,
      trainLimit: 50,
      minLayer: 1,
      checkEvery: 1,
      threads: 2,
      dataDir: '/data',
      tasks,
      splitSeed: 20240304,
      createdAt: '2026-01-01T00:00:00.000Z',
    },
    tasks: {},
  };
  tasks.forEach((name, k) => {
    const n = 20;
    const exitHistogram = new Array<number>(layers).fill(0);
    for (let i = 0; i < n; i++) exitHistogram[(i * 7 + k) % layers]++;
    const meanLayers = exitHistogram.reduce((a, c, i) => a + c * (i + 1), 0) / n;
    const sweep = Array.from({ length: 12 }, (_, i) => {
      const ml = layers - (i * (layers - 1)) / 11;
      return { threshold: i === 0 ? null : 3 - i / 4, agreement: 1 - i / 20, accuracy: 0.6 - i / 50, meanLayers: ml, pruningRatio: (layers - ml) / layers };
    });
    r.tasks[name] = {
      title: name.toUpperCase(),
      n,
      accuracyFull: 0.6,
      accuracyExit: 0.55,
      agreement: 0.9,
      meanLayers,
      pruningRatio: (layers - meanLayers) / layers,
      secondsFull: 1 + k,
      secondsExit: 0.7 + k / 2,
      speedup: (1 + k) / (0.7 + k / 2),
      exitHistogram,
      chance: 0.25,
      shots: 2,
      meanPromptTokens: 120,
      tokenWeightedPruningRatio: (layers - meanLayers) / layers,
      agreementLower: 0.72,
      oracleFirst: 0.6,
      oracleStay: 0.5,
      oracleFraction: (layers - meanLayers) / layers / 0.5,
      idealSpeedup: layers / meanLayers,
      classifierMicrosPerCheck: 0.05,
      skipped: 0,
      shotsReduced: 1,
      tokenizationMismatches: 0,
      labelBoundary: 'joined',
      sharedPrefix: [],
      labels: [
        { word: 'yes', token: 5, piece: '▁yes', pieces: ['▁yes'], multiToken: false },
        { word: 'no <b>', token: 6, piece: '▁no', pieces: ['▁no', '▁<b>'], multiToken: true },
      ],
      exit: { kind: 'svm', threshold: 0.5, score: 'svm score', training: null },
      sweep,
      sweepAtThreshold: { agreement: 0.9, accuracy: 0.55, meanLayers },
      sources: { demo: '/data/x.train', eval: '/data/x.dev' },
      notes: ['a note with <html> & "quotes"'],
    };
  });
  return r;
}
