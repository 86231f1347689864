/**
 * Full-load fuzzing: mutated copies of the bundled model through TransformerModel.load — parser, hyper-parameters,
 * tokenizer, the native loader — and, when the load succeeds, a short generation on the native blocks. It
 * runs in a child process (test/fuzz/load_child.ts), so a native crash is detected as a failure of this test
 * (with the input kept on disk) instead of killing jest. Every input must end in a typed error with a load
 * code, or in a model that generates; each within bounded time and resident memory.
 */
import { ChildProcess, fork } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import fc from 'fast-check';
import { fuzzRuns } from '../fuzz/config';
import { applyMutation, byteMutation, describeMutation, HPARAM_KEYS, LOAD_CODES, mutation, Mutation, StructuralMutation } from '../fuzz/gguf_mutate';
import type { LoadReply } from '../fuzz/load_child';
import { BUNDLED_MODEL, tmpDir } from '../helpers';

const CHILD = path.join(__dirname, '..', 'fuzz', 'load_child.js');
const CASE_TIMEOUT_MS = 30000;
const MAX_CASE_MS = 10000;
const MAX_RSS = 2 * 1024 ** 3;

/** One child at a time; a crashed child is replaced for the next input. */
class LoadChild {
  private child: ChildProcess | undefined;
  private waiting: ((r: LoadReply | { crashed: string }) => void) | undefined;
  private nextId = 1;

  private async start(): Promise<ChildProcess> {
    const child = fork(CHILD, [], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = undefined;
      this.waiting?.({ crashed: `the child exited (code ${code}, signal ${signal}); stderr: ${stderr}` });
      this.waiting = undefined;
    });
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', () => reject(new Error(`the load child did not start: ${stderr}`)));
    });
    child.on('message', (m: LoadReply) => {
      this.waiting?.(m);
      this.waiting = undefined;
    });
    return (this.child = child);
  }

  async load(file: string): Promise<LoadReply | { crashed: string }> {
    const child = this.child ?? (await this.start());
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        child.kill('SIGKILL');
        resolve({ crashed: `no answer within ${CASE_TIMEOUT_MS} ms (a hang)` });
      }, CASE_TIMEOUT_MS);
      this.waiting = (r) => {
        clearTimeout(timer);
        resolve(r);
      };
      child.send({ id, file });
    });
  }

  stop(): void {
    this.child?.kill();
    this.child = undefined;
  }
}

/** Mutations that keep the file parseable more often, so the native loader and the blocks see more of them. */
const loadableMutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({
    structural: fc.array(
      fc.oneof(
        fc.record({
          kind: fc.constant('hparam' as const),
          key: fc.constantFrom(...HPARAM_KEYS),
          value: fc.oneof(fc.bigInt({ min: 0n, max: 1024n }), fc.constantFrom(0n, 1n, 2n, 3n, 4n, 5n, 7n, 8n, 16n, 64n, 127n, 129n, 256n, 511n, 512n, 513n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 63n, 2n ** 64n - 1n)),
          type: fc.constantFrom(4, 4, 4, 5, 10, 11, 6, 12, 0),
        }),
        fc.record({ kind: fc.constant('tensorType' as const), tensor: fc.nat(), type: fc.constantFrom(0, 1, 2, 8, 12, 14, 30) }),
        fc.record({ kind: fc.constant('alignment' as const), value: fc.constantFrom(1, 2, 4, 8, 64), type: fc.constant(4) }),
      ) as fc.Arbitrary<StructuralMutation>,
      { minLength: 1, maxLength: 2 },
    ),
    bytes: fc.constant([]),
  }),
  // NaN / inf / garbage in the weights: data bytes only
  fc.record({
    structural: fc.constant([]),
    bytes: fc.array(fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat({ max: 7 }), inHeader: fc.constant(false) }), { minLength: 1, maxLength: 16 }),
  }),
  fc.record({ structural: fc.constant([]), bytes: fc.array(byteMutation(), { minLength: 1, maxLength: 2 }) }),
) as unknown as fc.Arbitrary<Mutation>;

describe('full load of mutated model files (in a child process)', () => {
  const base = fs.readFileSync(BUNDLED_MODEL);
  const dir = tmpDir('adainfer-fuzz-load-');
  const child = new LoadChild();
  let failed = false;
  afterAll(() => {
    child.stop();
    // A failing input stays on disk for replay (its path is in the failure message).
    if (!failed) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function run(name: string, arb: fc.Arbitrary<Mutation>, seed: number, numRuns: number) {
    const outcome: Record<string, number> = {};
    let maxMs = 0;
    let maxRss = 0;
    let n = 0;
    await fc.assert(
      fc.asyncProperty(arb, async (m) => {
        const file = path.join(dir, `case-${n++}.gguf`);
        fs.writeFileSync(file, applyMutation(base, m));
        const r = await child.load(file);
        const where = `${describeMutation(m)} (input kept at ${file})`;
        if ('crashed' in r) {
          failed = true;
          throw new Error(`${r.crashed}\ninput: ${where}`);
        }
        maxMs = Math.max(maxMs, r.ms);
        maxRss = Math.max(maxRss, r.rss);
        if (!r.ok) {
          if (r.stage === 'run') throw new Error(`the model loaded but failed to run: ${JSON.stringify(r.error)}\ninput: ${where}`);
          if (!r.error.typed || !LOAD_CODES.includes(r.error.code as never)) {
            failed = true;
            throw new Error(`untyped or unexpected load error ${JSON.stringify(r.error)}\ninput: ${where}`);
          }
        }
        if (r.ms > MAX_CASE_MS) throw new Error(`took ${r.ms.toFixed(0)} ms\ninput: ${where}`);
        if (r.rss > MAX_RSS) throw new Error(`resident memory ${(r.rss / 2 ** 20).toFixed(0)} MB\ninput: ${where}`);
        const key = r.ok ? 'loaded+ran' : r.error.code!;
        outcome[key] = (outcome[key] ?? 0) + 1;
        fs.rmSync(file);
      }),
      { ...fuzzRuns(seed, numRuns), endOnFailure: true },
    );
    console.log(
      `${name}: ${n} inputs, outcomes ${JSON.stringify(outcome)}, slowest ${maxMs.toFixed(0)} ms, ` +
        `peak child RSS ${(maxRss / 2 ** 20).toFixed(0)} MB, crashes 0`,
    );
    return outcome;
  }

  test('a context length below 1 is refused at load (not at the first session)', async () => {
    for (const value of [0n, 2n ** 32n - 5n]) {
      const m: Mutation = { structural: [{ kind: 'hparam', key: 'llama.context_length', value, type: 5 }], bytes: [] };
      const file = path.join(dir, 'ctx.gguf');
      fs.writeFileSync(file, applyMutation(base, m));
      const r = await child.load(file);
      expect(r).toMatchObject({ ok: false, stage: 'load', error: { code: 'GGUF_CORRUPT', message: expect.stringContaining('llama.context_length') } });
    }
  });

  test('any mutation: a typed load error or a model that generates', async () => {
    const outcome = await run('full load, any mutation', mutation(), 0x10ad, 1500);
    expect(Object.keys(outcome).length).toBeGreaterThanOrEqual(4);
  });

  test('mutations that keep the file parseable (hyper-parameters, types, alignment, weights)', async () => {
    const outcome = await run('full load, parseable mutations', loadableMutation, 0x10ae, 1500);
    expect(outcome['loaded+ran']).toBeGreaterThan(20);
  });
});
