/**
 * `adainfer eval-tasks` end to end on the bundled model, on a small data directory written here in the five
 * formats of ../shared/datasets (made-up rows, so this runs without ../shared): both files are written, the
 * results match their schema, --json prints the same object, and the threshold sweep replayed from traces
 * reproduces the measured exit run exactly.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Results } from '../../lib/report/schema';
import { checkResults, runCli, writeFixtureData } from '../page/tasks_fixture';
import { BUNDLED_MODEL, BUNDLED_PLAIN_MODEL, tmpDir } from '../helpers';

const dirs: string[] = [];
const tmp = (prefix: string) => (dirs.push(tmpDir(prefix)), dirs[dirs.length - 1]);
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

describe('eval-tasks end to end (bundled model, fixture data)', () => {
  const data = writeFixtureData(tmp('adainfer-tasks-data-'));
  const tasks = ['sst2', 'agnews', 'csqa', 'mmlu', 'copa'];

  test('--train-exit --limit 4: results.json and report.html, --json prints the same object', async () => {
    const out = tmp('adainfer-tasks-out-');
    const r = await runCli(['eval-tasks', '-m', BUNDLED_MODEL, '--data-dir', data, '--limit', '4', '--shots', '1', '--train-exit', '--train-limit', '8', '--out', out, '--threads', '1', '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.stdout) as Results;
    const written = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as Results;
    expect(printed).toEqual(written);
    checkResults(written, tasks, 4);
    expect(written.settings).toMatchObject({ shots: 1, seed: 1, exit: 'train:svm', classifier: 'svm', target: 0.99, label: 'final', limit: 4, trainLimit: 8, mode: 'fast' });
    expect(written.model).toMatchObject({ name: 'adainfer-tinystories-10L-ee', layers: 10 });
    for (const t of Object.values(written.tasks)) {
      expect(t.exit.training).toMatchObject({ examples: 8 });
      // An SVM, unless every training layer had the same label (then the fallback says so).
      if (t.exit.kind !== 'svm') expect(t.notes.join(' ')).toMatch(/\(one class\): no svm can be fitted/);
    }
    expect(written.tasks.csqa.labelBoundary).toBe('space-in-prompt');
    const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    expect(html).toMatch(/^<!DOCTYPE html>/);
    expect((html.match(/<svg /g) ?? []).length).toBe(2 + tasks.length);
    expect(html).not.toMatch(/(src|href)\s*=\s*["']?https?:|url\(\s*["']?https?:|@import/i);
  });

  test('--exit threshold and never; a text table on stdout', async () => {
    const out = tmp('adainfer-tasks-out-');
    const r = await runCli(['eval-tasks', '-m', BUNDLED_MODEL, '--data-dir', data, '--tasks', 'sst2,copa', '--limit', '4', '--exit', 'threshold:gap:0.2', '--out', out, '--threads', '1']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^model adainfer-tinystories-10L-ee \(10 layers\), 0-shot, exit threshold:gap:0.2/);
    expect(r.stdout).toMatch(/\nsst2 +4 /);
    const res = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as Results;
    checkResults(res, ['sst2', 'copa'], 4);
    expect(res.tasks.sst2.exit).toMatchObject({ kind: 'threshold', threshold: 0.2, score: 'gap' });

    const never = await runCli(['eval-tasks', '-m', BUNDLED_MODEL, '--data-dir', data, '--tasks', 'copa', '--limit', '4', '--out', out, '--threads', '1', '--json']);
    expect(never.code).toBe(0);
    const t = (JSON.parse(never.stdout) as Results).tasks.copa;
    expect(t.meanLayers).toBe(10);
    expect(t.agreement).toBe(1);
    expect(t.accuracyExit).toBe(t.accuracyFull);
  });

  test('--exit with an exit file of train-exit: its policy over the label tokens; a file of another model is an error', async () => {
    const dir = tmp('adainfer-tasks-exit-');
    const text = path.join(dir, 'stories.txt');
    fs.writeFileSync(text, 'Once upon a time there was a little dog. The dog liked to play in the park with a ball.\n<|endoftext|>\n'.repeat(4));
    const exitFile = path.join(dir, 'exit.json');
    const trained = await runCli(['train-exit', '-m', BUNDLED_MODEL, '--data', text, '--limit', '120', '--mode', 'fast', '--classifier', 'threshold', '--threads', '1', '-o', exitFile]);
    expect(trained.code).toBe(0);
    const out = tmp('adainfer-tasks-out-');
    const r = await runCli(['eval-tasks', '-m', BUNDLED_MODEL, '--data-dir', data, '--tasks', 'sst2', '--limit', '4', '--exit', exitFile, '--out', out, '--threads', '1', '--json']);
    expect(r.code).toBe(0);
    const res = JSON.parse(r.stdout) as Results;
    checkResults(res, ['sst2'], 4);
    expect(res.settings).toMatchObject({ exit: exitFile, mode: 'fast', classifier: 'threshold', target: 0.99 });
    expect(res.tasks.sst2.exit.kind).toBe('threshold');

    const other = path.join(dir, 'other.json');
    expect((await runCli(['train-exit', '-m', BUNDLED_PLAIN_MODEL, '--data', text, '--limit', '60', '--threads', '1', '-o', other])).code).toBe(0);
    const bad = await runCli(['eval-tasks', '-m', BUNDLED_MODEL, '--data-dir', data, '--tasks', 'sst2', '--limit', '4', '--exit', other, '--out', out]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/EXIT_FILE.*made for model 'adainfer-tinystories-10L'/);
  });

  test('bad options are errors with exit code 2', async () => {
    const out = tmp('adainfer-tasks-out-');
    expect((await runCli(['eval-tasks', '--data-dir', data, '--tasks', 'sst2,nope', '--out', out])).stderr).toMatch(/unknown task\(s\) nope/);
    const r = await runCli(['eval-tasks', '--data-dir', path.join(data, 'absent'), '--out', out]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--data-dir/);
    expect((await runCli(['eval-tasks', '--data-dir', data, '--exit', 'threshold:gap:x', '--out', out])).stderr).toMatch(/threshold value must be a number/);
    expect((await runCli(['eval-tasks', '--data-dir', data, '--exit', 'no-such.json', '--out', out])).stderr).toMatch(/neither a policy/);
    expect((await runCli(['eval-tasks', '--data-dir', data, '--exit', 'threshold:gap:0.5', '--train-exit', '--out', out])).code).toBe(2);
  });
});
