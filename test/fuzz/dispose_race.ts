/**
 * Disposing a model while its sessions and batches are generating, many times over, in a fresh process
 * (a native abort kills this process, not the test runner):
 *   node dist/test/fuzz/dispose_race.js 40
 * Each round: load, start a generation, a stream and a batch, dispose the model at once or after a few
 * tokens. Every one of them must end with DISPOSED (or finish, if it was that fast); the process must live.
 * Prints one JSON line: { rounds, outcomes: { [code or 'finished']: n } }.
 */
import { AdaInferError } from '../../lib/errors';
import { loadModel } from '../../lib/api';
import { BUNDLED_MODEL } from '../helpers';

const LONG = { temperature: 0, maxTokens: 200, stopAtEos: false };

async function main(): Promise<void> {
  const rounds = Number(process.argv[2] ?? 40);
  const outcomes: Record<string, number> = {};
  const settle = (p: Promise<unknown>) =>
    p.then(
      () => 'finished',
      (e: unknown) => (e instanceof AdaInferError ? e.code : `untyped: ${String(e)}`),
    );
  for (let i = 0; i < rounds; i++) {
    const model = await loadModel(BUNDLED_MODEL, { threads: 1 });
    const [a, b] = await Promise.all([model.createSession(), model.createSession()]);
    const running = [
      settle(a.generate('Once upon a time', LONG)),
      settle(
        (async () => {
          for await (const _ of b.stream('The dog ran', LONG));
        })(),
      ),
      settle(model.generateBatch(['Once', 'Tom went', 'A cat'], { ...LONG, batchSize: 3 })),
    ];
    if (i % 2 === 1) await new Promise((r) => setTimeout(r, i % 7)); // sometimes a few tokens in
    await model.dispose();
    for (const o of await Promise.all(running)) outcomes[o] = (outcomes[o] ?? 0) + 1;
    await Promise.all([a.dispose(), b.dispose()]);
  }
  console.log(JSON.stringify({ rounds, outcomes }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
