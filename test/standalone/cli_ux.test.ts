/**
 * Issue 17: what a new user hits on the command line. Each test spawns the built CLI (node dist/lib/cli/main.js)
 * as a user would, and fails without its fix.
 */
import { spawn, spawnSync, SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { DEFAULT_MODEL } from '../../lib/api';
import { BUNDLED_MODEL, BUNDLED_PLAIN_MODEL, repoRoot, sharedDir, skipForMissingShared, tmpDir } from '../helpers';
import { writeFixtureData } from '../page/tasks_fixture';
import * as adainfer from '../../lib/index';

const CLI = path.join(repoRoot(), 'dist', 'lib', 'cli', 'main.js');

function cli(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120000, cwd: options.cwd, env: { ...process.env, ...options.env } });
}

/** A failure a user can act on: exit code 1 (2 for a bad option), one `adainfer: error [CODE]` line, no stack trace, no "internal error". */
function expectUserError(r: SpawnSyncReturns<string>, code: string, mention: RegExp): void {
  const status = code === 'INVALID_OPTION' ? 2 : 1;
  expect({ status: r.status, stderr: r.stderr }).toEqual({ status, stderr: expect.stringContaining(`adainfer: error [${code}]`) });
  expect(r.stderr).toMatch(mention);
  expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
}

describe('unwritable output paths are OUTPUT_PATH errors, checked before the work (defect 2)', () => {
  test('train-exit -o, quantize OUT, batch --out, eval-tasks --out', () => {
    const dir = tmpDir('adainfer-ux-');
    const input = path.join(dir, 'in.jsonl');
    fs.writeFileSync(input, JSON.stringify({ id: 1, prompt: 'Once' }) + '\n');
    const text = path.join(dir, 'text.txt');
    fs.writeFileSync(text, 'Once upon a time there was a cat.\n');
    expectUserError(cli(['train-exit', '--data', text, '-o', '/nonexistent/x.json']), 'OUTPUT_PATH', /\/nonexistent/);
    expectUserError(cli(['quantize', BUNDLED_PLAIN_MODEL, '/nonexistent/q.gguf', 'Q8_0']), 'OUTPUT_PATH', /\/nonexistent/);
    expectUserError(cli(['batch', '--in', input, '--out', '/nonexistent/dir/o.jsonl']), 'OUTPUT_PATH', /\/nonexistent/);
    expectUserError(cli(['batch', '--in', input, '--out', dir]), 'OUTPUT_PATH', /is a directory/);
    fs.writeFileSync(path.join(dir, 'file'), '');
    expectUserError(cli(['eval-tasks', '--data-dir', dir, '--out', path.join(dir, 'file', 'sub')]), 'OUTPUT_PATH', /is not a folder/);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

test('a reader that closes the pipe early (`generate | head -c 20`) ends the command quietly with 0 (defect 3)', async () => {
  const child = spawn(process.execPath, [CLI, 'generate', '-p', 'Once', '-n', '250', '--temp', '0', '--threads', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += String(d)));
  const first = await new Promise<string>((resolve) => child.stdout.once('data', (d) => resolve(String(d))));
  child.stdout.destroy(); // as `head -c 20` does after its bytes
  const status = await new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  expect(first.startsWith('Once')).toBe(true);
  expect({ status, stderr }).toEqual({ status: 0, stderr: '' });
});

test('a context beyond the trained positions is accepted with a warning (defect 4)', () => {
  const r = cli(['generate', '-p', 'Once', '-n', '2', '--temp', '0', '--threads', '1', '-c', '100000']);
  expect(r.status).toBe(0);
  expect(r.stderr).toMatch(/adainfer: warning: --ctx 100000 is more than the 256 positions the model was trained on/);
});

test('the threads warning is one CLI line, not a Node warning with --trace-warnings advice (defect 11)', () => {
  const r = cli(['generate', '-p', 'Once', '-n', '1', '--temp', '0', '--threads', '64']);
  expect(r.status).toBe(0);
  expect(r.stderr).toMatch(/^adainfer: warning: threads 64 is more than the \d+ CPUs/m);
  expect(r.stderr).not.toMatch(/trace-warnings|\(node:\d+\)/);
});

describe('flags agree across commands (defect 8)', () => {
  test('--version prints the package version', () => {
    const version = (JSON.parse(fs.readFileSync(path.join(repoRoot(), 'package.json'), 'utf8')) as { version: string }).version;
    for (const flag of ['--version', '-V']) expect(cli([flag])).toMatchObject({ status: 0, stdout: `${version}\n` });
  });

  test('generate: --max-tokens, -n and the old --n are one option', () => {
    const tokens = (flag: string) => (JSON.parse(cli(['generate', '-p', 'Once', flag, '3', '--temp', '0', '--threads', '1', '--json']).stdout) as { tokens: number[] }).tokens;
    const viaLong = tokens('--max-tokens');
    expect(viaLong).toHaveLength(3);
    expect(tokens('-n')).toEqual(viaLong);
    expect(tokens('--n')).toEqual(viaLong);
    const help = cli(['generate', '--help']).stdout;
    expect(help).toMatch(/-n, --max-tokens <tokens>/);
    expect(help).not.toMatch(/--n </); // the old spelling is accepted but not advertised
  });

  test('train-exit takes --out (and the old -o / --output); batch takes -o and -n like the others', () => {
    for (const flag of ['--out', '-o', '--output']) expectUserError(cli(['train-exit', '--data', 'x', flag, '/nonexistent/x.json']), 'OUTPUT_PATH', /--out \/nonexistent/);
    expectUserError(cli(['train-exit', '--data', 'x']), 'INVALID_OPTION', /--out/);
    const help = cli(['batch', '--help']).stdout;
    expect(help).toMatch(/-o, --out <file>/);
    expect(help).toMatch(/-n, --max-tokens <n>/);
  });

  test('bench defaults to the bundled model like every other command', () => {
    const r = cli(['bench', '-p', '8', '-n', '2', '-r', '1', '-t', '1', '--json']);
    expect(r.status).toBe(0);
    expect((JSON.parse(r.stdout) as { model: string }).model).toBe(DEFAULT_MODEL);
  });

  test("-m's default is named once, as the bundled model, in every command's help", () => {
    for (const command of ['generate', 'batch', 'bench', 'train-exit', 'eval-exit', 'eval-tasks']) {
      const help = cli([command, '--help']).stdout.replace(/\s+/g, ' ');
      expect({ command, named: help.includes('(default: the bundled model, adainfer-tinystories-10L-ee.f16.gguf)') }).toEqual({ command, named: true });
      expect({ command, absolutePath: help.includes(DEFAULT_MODEL) }).toEqual({ command, absolutePath: false });
    }
  });
});

describe('eval-tasks (defects 9, 10)', () => {
  test('a missing data folder says the data does not ship and how to give it', () => {
    const r = cli(['eval-tasks', '--tasks', 'copa', '--limit', '2', '--out', tmpDir('adainfer-ux-out-')], { cwd: '/', env: { ADAINFER_DATA_DIR: '/nonexistent/datasets' } });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/\/nonexistent\/datasets does not exist\. The task data sets .* do not ship with adainfer/);
    expect(r.stderr).toMatch(/--data-dir or ADAINFER_DATA_DIR/);
  });

  test('the default data folder does not depend on the working directory', () => {
    const shared = sharedDir();
    if (!shared) return void skipForMissingShared('eval-tasks default --data-dir');
    const out = tmpDir('adainfer-ux-out-');
    const r = cli(['eval-tasks', '--tasks', 'copa', '--limit', '2', '--threads', '1', '--no-sweep', '--out', out, '--json'], { cwd: '/', env: { ADAINFER_DATA_DIR: '' } });
    expect(r.stderr).not.toMatch(/does not exist/);
    expect(r.status).toBe(0);
    expect((JSON.parse(r.stdout) as { tasks: Record<string, { n: number }> }).tasks.copa.n).toBe(2);
    fs.rmSync(out, { recursive: true, force: true });
  });

  test('--exit never reports no speedup (null), not timing noise', () => {
    const data = writeFixtureData(tmpDir('adainfer-ux-data-'));
    const out = tmpDir('adainfer-ux-out-');
    const r = cli(['eval-tasks', '--data-dir', data, '--tasks', 'sst2,copa', '--limit', '4', '--exit', 'never', '--threads', '1', '--out', out, '--json']);
    expect(r.status).toBe(0);
    const tasks = (JSON.parse(r.stdout) as { tasks: Record<string, { speedup: number | null; meanLayers: number; secondsExit: number; secondsFull: number }> }).tasks;
    for (const t of Object.values(tasks)) expect(t).toMatchObject({ speedup: null, meanLayers: 10, secondsExit: t.secondsFull });
    expect(fs.readFileSync(path.join(out, 'report.html'), 'utf8')).toContain('<td>—</td>');
    fs.rmSync(data, { recursive: true, force: true });
    fs.rmSync(out, { recursive: true, force: true });
  });
});

describe('generate --exit FILE|auto|never', () => {
  interface ExitJson {
    tokens: number[];
    exit: { file: string | null; source: string; meanLayers: number; exitHistogram: number[] | null; layerSpeedup: number; speedup: number | null };
  }
  const run = (args: string[]) => {
    const r = cli(['generate', '-p', 'Once upon a time', '-n', '24', '--temp', '0', '--threads', '1', '--json', ...args]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    return JSON.parse(r.stdout) as ExitJson;
  };

  test('every bundled model ships an exit file recorded for it', () => {
    for (const model of [BUNDLED_MODEL, BUNDLED_PLAIN_MODEL]) {
      const file = model.replace(/\.f16\.gguf$/, '.exit.json');
      const r = run(['-m', model, '--exit', 'auto']);
      expect(r.exit.file).toBe(file);
      expect(r.exit.source).toBe('auto');
    }
  });

  test('auto: mean layers, histogram and speedups of the shipped exit file; never: full depth', () => {
    const auto = run(['--exit', 'auto']);
    expect(auto.exit.exitHistogram).toHaveLength(10);
    expect(auto.exit.exitHistogram!.reduce((a, b) => a + b, 0)).toBe(auto.tokens.length);
    const mean = auto.exit.exitHistogram!.reduce((a, c, i) => a + c * (i + 1), 0) / auto.tokens.length;
    expect(auto.exit.meanLayers).toBeCloseTo(mean, 12);
    expect(auto.exit.meanLayers).toBeLessThan(10); // the -ee model exits early on this story
    expect(auto.exit.layerSpeedup).toBeCloseTo(10 / mean, 12);
    expect(auto.exit.speedup).toBeGreaterThan(0);
    const never = run(['--exit', 'never']);
    expect(never.exit).toEqual({ file: null, source: 'never', meanLayers: 10, exitHistogram: null, layerSpeedup: 1, speedup: null });
  });

  test('auto without a matching exit file runs at full depth; a file for another model is an EXIT_FILE error', () => {
    const dir = tmpDir('adainfer-ux-');
    const copy = path.join(dir, 'copy.gguf');
    fs.copyFileSync(BUNDLED_MODEL, copy); // same weights: its fingerprint matches the shipped file
    expect(run(['-m', copy, '--exit', 'auto']).exit.source).toBe('auto');
    const other = path.join(dir, 'other.exit.json');
    fs.copyFileSync(BUNDLED_PLAIN_MODEL.replace(/\.f16\.gguf$/, '.exit.json'), other);
    const shared = sharedDir();
    if (shared) {
      const stories = path.join(shared, 'models', 'stories260K.gguf');
      const none = run(['-m', stories, '--exit', 'auto']);
      expect(none.exit).toMatchObject({ file: null, source: 'auto-none', speedup: null });
    }
    expectUserError(cli(['generate', '-p', 'Once', '-n', '2', '--exit', other]), 'EXIT_FILE', /made for model 'adainfer-tinystories-10L'/);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

test("the README's systemInfo() is exported by the package (defect 7)", () => {
  const info = adainfer.systemInfo();
  expect(info.physicalCores).toBeGreaterThan(0);
  expect(typeof info.cuda.available).toBe('boolean');
});
