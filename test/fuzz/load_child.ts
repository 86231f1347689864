/**
 * The child process of the full-load fuzzing test (test/standalone/fuzz_load.test.ts): loads each file it is
 * sent through TransformerModel.load (parser, hyper-parameters, tokenizer, native weights), and when that works runs
 * a short generation on it. A native crash kills this process, not jest: the parent sees the exit and fails
 * with the input that caused it.
 *
 *   parent -> child: { id, file }
 *   child -> parent: { id, ok: true, tokens, rss } | { id, ok: false, stage, error: { name, code, message, typed }, rss }
 */
import { AdaInferError } from '../../lib/errors';
import { Sequence } from '../../lib/engine/sequence';
import { TransformerModel } from '../../lib/model/transformer';

export interface LoadRequest {
  id: number;
  file: string;
}

export type LoadReply =
  | { id: number; ok: true; tokens: number[]; rss: number; ms: number }
  | {
      id: number;
      ok: false;
      stage: 'load' | 'run';
      error: { name: string; code?: string; message: string; typed: boolean; stack?: string };
      rss: number;
      ms: number;
    };

function describe(err: unknown): { name: string; code?: string; message: string; typed: boolean; stack?: string } {
  const typed = err instanceof AdaInferError;
  const e = err as { name?: string; code?: string; message?: string; stack?: string };
  return { name: e?.name ?? 'unknown', code: typed ? (err as AdaInferError).code : e?.code, message: String(e?.message ?? err), typed, stack: typed ? undefined : e?.stack };
}

function handle(req: LoadRequest): LoadReply {
  const t0 = performance.now();
  let model: TransformerModel;
  try {
    model = TransformerModel.load(req.file);
  } catch (err) {
    return { id: req.id, ok: false, stage: 'load', error: describe(err), rss: process.memoryUsage().rss, ms: performance.now() - t0 };
  }
  try {
    const ctx = model.createContext({ contextSize: 16, batchSize: 4, threads: 1 });
    try {
      const v = model.config.nVocab;
      const prompts = [model.tokenizer.encode('Once upon a time').slice(0, 8), [0, v - 1, Math.floor(v / 2)]];
      const tokens: number[] = [];
      const seq = new Sequence(ctx);
      for (const prompt of prompts) {
        if (prompt.length === 0) continue;
        const run = seq.generate(prompt, { maxTokens: 3, stopAtEos: false, sampling: { temperature: 0.8, topK: 40, topP: 0.95, seed: 1 } });
        let r = run.next();
        while (!r.done) r = run.next();
        tokens.push(...r.value.tokens);
        model.tokenizer.decode(r.value.tokens);
      }
      return { id: req.id, ok: true, tokens, rss: process.memoryUsage().rss, ms: performance.now() - t0 };
    } finally {
      ctx.dispose();
    }
  } catch (err) {
    return { id: req.id, ok: false, stage: 'run', error: describe(err), rss: process.memoryUsage().rss, ms: performance.now() - t0 };
  } finally {
    model.dispose();
  }
}

if (require.main === module) {
  process.on('message', (req: LoadRequest) => process.send!(handle(req)));
  process.send!({ ready: true });
}
