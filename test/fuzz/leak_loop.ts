/**
 * Load/dispose cycles in a fresh process (run with --expose-gc), reporting resident memory along the way:
 *   node --expose-gc dist/test/fuzz/leak_loop.js sync 1000     TransformerModel.load + context + 2 tokens + dispose
 *   node --expose-gc dist/test/fuzz/leak_loop.js async 100     loadModel (worker) + session + 2 tokens + dispose
 * Prints one JSON line: { mode, cycles, ms, rss: { [cycle]: bytes }, heap: { [cycle]: bytes }, external: {...} }.
 * Memory is sampled after a full GC at cycles 1, 10, 100 and every 100 after that (and the last one).
 */
import { loadModel } from '../../lib/api';
import { Sequence } from '../../lib/engine/sequence';
import { TransformerModel } from '../../lib/model/transformer';
import { BUNDLED_MODEL } from '../helpers';

const gc = (globalThis as { gc?: () => void }).gc;

function syncCycle(): void {
  const model = TransformerModel.load(BUNDLED_MODEL, { kernels: 'generic' });
  const ctx = model.createContext({ contextSize: 32, batchSize: 8, threads: 1 });
  const run = new Sequence(ctx).generate(model.tokenizer.encode('Once upon a time'), {
    maxTokens: 2,
    sampling: { temperature: 0, topK: 0, topP: 1, seed: 0 },
  });
  while (!run.next().done);
  ctx.dispose();
  model.dispose();
}

async function asyncCycle(): Promise<void> {
  const model = await loadModel(BUNDLED_MODEL, { threads: 1 });
  const session = await model.createSession({ contextSize: 32 });
  await session.generate('Once upon a time', { maxTokens: 2, temperature: 0 });
  await session.dispose();
  await model.dispose();
}

async function main(): Promise<void> {
  const mode = process.argv[2] === 'async' ? 'async' : 'sync';
  const cycles = Number(process.argv[3] ?? (mode === 'async' ? 100 : 1000));
  if (!gc) throw new Error('run with node --expose-gc');
  const rss: Record<number, number> = {};
  const heap: Record<number, number> = {};
  const external: Record<number, number> = {};
  const sample = async (i: number) => {
    // Twice, with a turn of the event loop between: finalizers of native objects run after the first.
    gc!();
    await new Promise((r) => setImmediate(r));
    gc!();
    const m = process.memoryUsage();
    rss[i] = m.rss;
    heap[i] = m.heapUsed;
    external[i] = m.external + m.arrayBuffers;
  };
  const t0 = performance.now();
  for (let i = 1; i <= cycles; i++) {
    if (mode === 'sync') syncCycle();
    else await asyncCycle();
    if (i === 1 || i === 10 || i % 100 === 0 || i === cycles) await sample(i);
  }
  console.log(JSON.stringify({ mode, cycles, ms: performance.now() - t0, rss, heap, external }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
