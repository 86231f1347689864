/**
 * eval-tasks on the real data sets of ../shared/datasets: the readers' row counts, the splits (disjoint, fixed
 * whatever the seed), and a --limit 4 run of every task on the bundled model producing both files.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Results } from '../../lib/report/schema';
import { readAgNews, readCopa, readCsqa, readMmlu, readSst2 } from '../../lib/tasks/readers';
import { loadTaskData } from '../../lib/tasks/tasks';
import { TASK_NAMES } from '../../lib/tasks/formats';
import { BUNDLED_MODEL, describeShared, tmpDir } from '../helpers';
import { checkResults, runCli } from '../page/tasks_fixture';

describeShared('task data readers on ../shared/datasets', (shared) => {
  const d = path.join(shared, 'datasets');

  test('SST-2: 6920 train / 872 dev lines, labels 0/1', () => {
    const train = readSst2(path.join(d, 'sst2', 'stsa.binary.train'));
    const dev = readSst2(path.join(d, 'sst2', 'stsa.binary.dev'));
    expect([train.length, dev.length]).toEqual([6920, 872]);
    expect(train[0]).toEqual({ label: 1, sentence: 'a stirring , funny and finally transporting re-imagining of beauty and the beast and 1930s horror films' });
    expect(new Set(dev.map((r) => r.label))).toEqual(new Set([0, 1]));
  });

  test('AG News: 6000 CSV rows (quoted fields with commas), four classes', () => {
    const rows = readAgNews(path.join(d, 'agnews', 'agnews.csv'));
    expect(rows.length).toBe(6000);
    expect(rows[0]).toMatchObject({ classIndex: 3, title: 'Fears for T N pension after talks' });
    expect(rows[1].description.startsWith('SPACE.com - TORONTO, Canada -- A second\\team')).toBe(true);
    expect(new Set(rows.map((r) => r.classIndex))).toEqual(new Set([1, 2, 3, 4]));
  });

  test('CommonsenseQA: 1221 questions, five choices A–E', () => {
    const rows = readCsqa(path.join(d, 'csqa', 'dev_rand_split.jsonl'));
    expect(rows.length).toBe(1221);
    expect(rows[0]).toMatchObject({ labels: ['A', 'B', 'C', 'D', 'E'], choices: ['bank', 'library', 'department store', 'mall', 'new york'], answer: 0 });
  });

  test('MMLU: 285 dev / 14042 test rows over 57 subjects', () => {
    const dev = readMmlu(path.join(d, 'mmlu'), 'dev');
    const test = readMmlu(path.join(d, 'mmlu'), 'test');
    expect([dev.length, test.length]).toEqual([285, 14042]);
    expect(new Set(dev.map((r) => r.subject)).size).toBe(57);
    expect(new Set(test.map((r) => r.subject)).size).toBe(57);
    expect(dev[1]).toMatchObject({ subject: 'abstract_algebra', choices: ['True, True', 'False, False', 'True, False', 'False, True'], answer: 1 });
  });

  test('COPA: 100 rows, two choices', () => {
    const rows = readCopa(path.join(d, 'copa', 'copa.jsonl'));
    expect(rows.length).toBe(100);
    expect(rows[0]).toEqual({ query: 'The man turned on the faucet, therefore', choices: ['the toilet filled with water.', 'water flowed from the spout.'], gold: 1 });
  });

  test('splits: demo and eval parts are disjoint; single-file sets are halved with a fixed seed', () => {
    const sizes: Record<string, [number, number]> = { sst2: [6920, 872], agnews: [3000, 3000], csqa: [611, 610], mmlu: [285, 14042], copa: [50, 50] };
    for (const task of TASK_NAMES) {
      const data = loadTaskData(task, d);
      expect([task, data.demo.length, data.eval.length]).toEqual([task, ...sizes[task]]);
      const demoIds = new Set(data.demo.map((i) => i.id));
      expect(data.eval.filter((i) => demoIds.has(i.id))).toEqual([]);
      expect(loadTaskData(task, d).eval.map((i) => i.id)).toEqual(data.eval.map((i) => i.id));
    }
  });
});

describeShared('eval-tasks on ../shared/datasets', (shared) => {
  test('every task, --limit 4, 1-shot, --train-exit, bundled model: both files', async () => {
    const out = tmpDir('adainfer-tasks-real-');
    const r = await runCli([
      'eval-tasks',
      '-m',
      BUNDLED_MODEL,
      '--data-dir',
      path.join(shared, 'datasets'),
      '--limit',
      '4',
      '--shots',
      '1',
      '--train-exit',
      '--train-limit',
      '12',
      '--out',
      out,
      '--threads',
      '1',
      '--json',
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const res = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as Results;
    expect(JSON.parse(r.stdout)).toEqual(res);
    checkResults(res, [...TASK_NAMES], 4);
    expect(fs.readFileSync(path.join(out, 'report.html'), 'utf8')).toMatch(/<figure class="plot" id="plot-accuracy"><svg /);
    fs.rmSync(out, { recursive: true, force: true });
  });
});
