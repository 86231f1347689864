/**
 * Backend selection where there is no usable CUDA device (every CI machine): 'auto' runs on the CPU,
 * 'cuda' is a BACKEND_UNAVAILABLE error that says why, for the API and the CLI, and a bad backend name is an
 * option error. (On a GPU machine test/gpu/run.sh checks the CUDA backend itself.)
 */
import * as fs from 'fs';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { loadModel } from '../../lib';
import { native } from '../../lib/bindings/native';
import { repoRoot, tmpDir } from '../helpers';
import { writeFixtureData } from '../page/tasks_fixture';

const CLI = path.join(repoRoot(), 'dist', 'lib', 'cli', 'main.js');
const cuda = native().systemInfo().cuda;
const noGpu = cuda.available ? describe.skip : describe;

describe('systemInfo().cuda', () => {
  test('reports whether this build has the backend, whether a device works, and why not', () => {
    expect(typeof cuda.compiled).toBe('boolean');
    expect(typeof cuda.available).toBe('boolean');
    expect(Array.isArray(cuda.devices)).toBe(true);
    if (!cuda.available) expect(cuda.reason).toMatch(/CUDA/);
  });
});

noGpu('without a usable CUDA device', () => {
  test("backend 'auto' (the default) loads on the CPU and generates", async () => {
    const model = await loadModel(undefined, { threads: 1 });
    try {
      expect(model.info.backend).toBe('cpu');
      expect(model.info.deviceBytes).toBe(0);
      const session = await model.createSession({ contextSize: 64 });
      const r = await session.generate('Once upon a time', { temperature: 0, maxTokens: 4 });
      expect(r.tokens).toHaveLength(4);
    } finally {
      await model.dispose();
    }
  });

  test("backend 'cuda' is BACKEND_UNAVAILABLE with the probe's reason", async () => {
    await expect(loadModel(undefined, { threads: 1, backend: 'cuda' })).rejects.toMatchObject({
      code: 'BACKEND_UNAVAILABLE',
      message: cuda.reason,
    });
  });

  test('the CLI: --backend cuda fails with the code and the reason, --backend cpu runs', () => {
    const bad = spawnSync(process.execPath, [CLI, 'generate', '-p', 'Once', '-n', '2', '--backend', 'cuda'], {
      encoding: 'utf8',
      timeout: 60000,
    });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('[BACKEND_UNAVAILABLE]');
    const ok = spawnSync(
      process.execPath,
      [CLI, 'generate', '-p', 'Once', '-n', '2', '--temp', '0', '--threads', '1', '--backend', 'cpu', '--json'],
      { encoding: 'utf8', timeout: 60000 },
    );
    expect(ok.status).toBe(0);
    expect(JSON.parse(ok.stdout).model.backend).toBe('cpu');
  });

  test('the offline commands take --backend too: train-exit, eval-exit and eval-tasks (cuda refused, cpu runs)', () => {
    const dir = tmpDir('adainfer-backend-');
    try {
      const text = path.join(dir, 'stories.txt');
      fs.writeFileSync(text, 'Once upon a time there was a little dog. The dog liked to play in the park.\n<|endoftext|>\n'.repeat(3));
      const exitFile = path.join(dir, 'exit.json');
      const data = writeFixtureData(path.join(dir, 'tasks'));
      const run = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120000 });
      const train = ['train-exit', '--data', text, '--limit', '40', '--classifier', 'threshold', '--threads', '1', '-o', exitFile];
      const evalExit = ['eval-exit', '--data', text, '--limit', '20', '--exit', exitFile, '--threads', '1', '--json'];
      const evalTasks = ['eval-tasks', '--data-dir', data, '--tasks', 'sst2', '--limit', '2', '--no-sweep', '--out', path.join(dir, 'out'), '--threads', '1', '--json'];
      expect(run([...train, '--backend', 'cpu']).status).toBe(0);
      for (const args of [train, evalExit, evalTasks]) {
        const bad = run([...args, '--backend', 'cuda']);
        expect(bad.stderr).toContain('[BACKEND_UNAVAILABLE]');
        expect(bad.status).toBe(1);
        expect(run([...args, '--backend', 'tpu']).status).toBe(2);
      }
      expect(run([...evalExit, '--backend', 'cpu']).status).toBe(0);
      expect(run([...evalTasks, '--backend', 'cpu']).status).toBe(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('invalid backend options', () => {
  test.each([['tpu'], [''], [3]])('backend %p is an INVALID_OPTION error', async (backend) => {
    await expect(loadModel(undefined, { backend: backend as 'cpu' })).rejects.toMatchObject({ code: 'INVALID_OPTION' });
  });

  test('a negative device is an INVALID_OPTION error', async () => {
    await expect(loadModel(undefined, { device: -1 })).rejects.toMatchObject({ code: 'INVALID_OPTION' });
  });

  test('the CLI names the flag', () => {
    const r = spawnSync(process.execPath, [CLI, 'generate', '-p', 'Once', '--backend', 'tpu'], { encoding: 'utf8', timeout: 60000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--backend');
  });
});
