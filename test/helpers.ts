/** Shared test helpers: where ../shared is, and how to skip when it is absent (a user's fresh clone). */
import * as fs from 'fs';
import * as path from 'path';

/** The repository root (the folder holding package.json), from either test/ or dist/test/. */
export function repoRoot(): string {
  let dir = __dirname;
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('package.json not found above ' + __dirname);
    dir = up;
  }
  return dir;
}

/** ../shared beside the checkout, or undefined when it is absent. */
export function sharedDir(): string | undefined {
  const dir = path.resolve(repoRoot(), '..', 'shared');
  return fs.existsSync(path.join(dir, 'README.md')) ? dir : undefined;
}

/**
 * True when ADAINFER_REQUIRE_SHARED=1: CI (.ci/run) sets it, so that a test that needs ../shared fails
 * instead of skipping. Without it a user's fresh clone skips those tests with a message.
 */
export function sharedRequired(): boolean {
  return process.env.ADAINFER_REQUIRE_SHARED === '1';
}

/**
 * The one way a test skips for want of something in ../shared: logs why and returns true, or throws when
 * ADAINFER_REQUIRE_SHARED=1 (the test file then fails to load, and jest fails). `what` names the missing
 * path.
 */
export function skipForMissingShared(what: string): true {
  const message = `${what} is absent (../shared holds the reference models, goldens and datasets)`;
  if (sharedRequired()) throw new Error(`ADAINFER_REQUIRE_SHARED=1 but ${message}`);
  console.warn(`skipped: ${message}`);
  return true;
}

/** describe() over ../shared; skips with a message when it is absent (fails when ADAINFER_REQUIRE_SHARED=1). */
export function describeShared(name: string, fn: (shared: string) => void): void {
  const shared = sharedDir();
  if (!shared) {
    skipForMissingShared(path.resolve(repoRoot(), '..', 'shared'));
    describe.skip(`${name} (skipped: ../shared is absent, so the reference models and goldens are not here)`, () => {
      test('needs ../shared', () => undefined);
    });
    return;
  }
  describe(name, () => fn(shared));
}

export const BUNDLED_MODEL = path.join(repoRoot(), 'models', 'adainfer-tinystories-10L-ee.f16.gguf');
export const BUNDLED_PLAIN_MODEL = path.join(repoRoot(), 'models', 'adainfer-tinystories-10L.f16.gguf');

/** Reads a little-endian float32 file as rows of `width`. */
export function readF32Rows(file: string, width: number): Float32Array[] {
  const buf = fs.readFileSync(file);
  const all = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const rows: Float32Array[] = [];
  for (let i = 0; i + width <= all.length; i += width) rows.push(all.slice(i, i + width));
  return rows;
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(require('os').tmpdir(), prefix));
}

/**
 * The backend the model tests load with: 'cpu', or 'cuda' when ADAINFER_TEST_BACKEND=cuda (test/gpu/run.sh runs
 * the golden tests that way on a GPU machine that has Node.js).
 */
export function testBackend(): 'cpu' | 'cuda' {
  return process.env.ADAINFER_TEST_BACKEND === 'cuda' ? 'cuda' : 'cpu';
}
