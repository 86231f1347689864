/**
 * Cross-check of `adainfer convert` against llama.cpp (node-llama-cpp, installed on demand into bench/.peer like
 * every benchmark's peer; never needed by the tests): the Llama test folder (test/fixtures/hf/llama) is converted
 * to GGUF (F32 and F16), and the same prompt is run by llama.cpp, by adainfer on the GGUF, and — when the native
 * side reads Hugging Face folders — by adainfer on the folder itself; all against the float64 torch reference of
 * make_fixtures.py.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/hf_crosscheck.js [--json]
 *
 * llama.cpp runs with its defaults (F16 KV cache, flash attention 'auto'), then with an F32 KV cache and no flash
 * attention (adainfer's attention is all F32).
 *
 * node-llama-cpp exposes probabilities, not logits, so rows are compared as log-probabilities (logit minus the
 * row's log-sum-exp: the same comparison up to each row's constant). Reported per engine pair: max |Δ log p| over
 * every token of every position, top-1 agreement, and the greedy continuations.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { argmax } from '../lib/engine/sampling';
import { convertHfToGGUF } from '../lib/hf/convert';
import { TransformerModel } from '../lib/model/transformer';
import { QuantTarget } from '../lib/quant/quantize_model';
import { LlamaCppPeer } from './peer';
import { repoRoot } from './machine';

interface Expected {
  prompt: number[];
  logits: number[][];
  greedy: number[];
}

function logSoftmax(row: ArrayLike<number>): Float64Array {
  let m = -Infinity;
  for (let i = 0; i < row.length; i++) m = Math.max(m, row[i]);
  let s = 0;
  for (let i = 0; i < row.length; i++) s += Math.exp(row[i] - m);
  const lse = m + Math.log(s);
  const out = new Float64Array(row.length);
  for (let i = 0; i < row.length; i++) out[i] = row[i] - lse;
  return out;
}

function compare(a: Float64Array[], b: Float64Array[]): { maxAbsLogProb: number; top1Agree: number; positions: number } {
  let maxAbs = 0;
  let agree = 0;
  for (let i = 0; i < a.length; i++) {
    for (let j = 0; j < a[i].length; j++) if (Number.isFinite(a[i][j]) && Number.isFinite(b[i][j])) maxAbs = Math.max(maxAbs, Math.abs(a[i][j] - b[i][j]));
    if (argmax(a[i]) === argmax(b[i])) agree++;
  }
  return { maxAbsLogProb: maxAbs, top1Agree: agree, positions: a.length };
}

function adainferRows(model: TransformerModel, exp: Expected): { rows: Float64Array[]; greedy: number[] } {
  const n = exp.prompt.length;
  const ctx = model.createContext({ contextSize: n + exp.greedy.length + 1, batchSize: n, threads: 1 });
  try {
    exp.prompt.forEach((t, i) => (ctx.native.tokens[i] = t));
    ctx.forward(n, 0);
    const rows = exp.prompt.map((_, i) => logSoftmax(ctx.logits(i)));
    const greedy: number[] = [];
    let next = argmax(ctx.logits(n - 1));
    for (let pos = n; greedy.length < exp.greedy.length; pos++) {
      greedy.push(next);
      ctx.native.tokens[0] = next;
      ctx.forward(1, pos);
      next = argmax(ctx.logits(0));
    }
    return { rows, greedy };
  } finally {
    ctx.dispose();
  }
}

async function main(): Promise<void> {
  const json = process.argv.includes('--json');
  const folder = path.join(repoRoot(), 'test', 'fixtures', 'hf', 'llama');
  const exp = JSON.parse(fs.readFileSync(path.join(folder, 'expected.json'), 'utf8')) as Expected;
  const nVocab = exp.logits[0].length;
  const reference = exp.logits.map(logSoftmax);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'adainfer-hf-crosscheck-'));
  const peer = await LlamaCppPeer.start();
  const report: Record<string, unknown> = { llamaCpp: peer.info.llamaCpp, nodeLlamaCpp: peer.info.nodeLlamaCpp, prompt: exp.prompt.length, nVocab };
  try {
    for (const type of ['F32', 'F16'] as QuantTarget[]) {
      const gguf = path.join(dir, `llama-${type}.gguf`);
      convertHfToGGUF(folder, gguf, { type });
      const lm = await peer.loadModel(gguf);
      const runner = await lm.createRunner({ contextSize: 64, batchSize: 64, threads: 1 });
      const cpp = await runner.logProbs(exp.prompt, nVocab);
      const cppGreedy = await runner.greedy(exp.prompt, exp.greedy.length);
      await runner.dispose();
      // llama.cpp's defaults round K/V (F16 cache) and, with flash attention, Q and the softmax weights to F16; with
      // an F32 cache and no flash attention its attention is all F32, as adainfer's.
      const runner32 = await lm.createRunner({ contextSize: 64, batchSize: 64, threads: 1, kvCacheType: 'F32', flashAttention: false });
      const cpp32 = await runner32.logProbs(exp.prompt, nVocab);
      await runner32.dispose();
      await lm.dispose();
      const ours = TransformerModel.load(gguf);
      const a = adainferRows(ours, exp);
      ours.dispose();
      report[type] = {
        'llama.cpp vs reference': compare(cpp, reference),
        'adainfer(gguf) vs reference': compare(a.rows, reference),
        'adainfer(gguf) vs llama.cpp': compare(a.rows, cpp),
        'llama.cpp (F32 KV cache, no flash attention) vs reference': compare(cpp32, reference),
        'adainfer(gguf) vs llama.cpp (F32 KV cache, no flash attention)': compare(a.rows, cpp32),
        greedy: { reference: exp.greedy, llamaCpp: cppGreedy, adainfer: a.greedy },
      };
    }
    // The folder itself, when this build's loader reads Hugging Face folders.
    try {
      const direct = TransformerModel.load(folder);
      const a = adainferRows(direct, exp);
      direct.dispose();
      report['folder (F32 as stored)'] = { 'adainfer(folder) vs reference': compare(a.rows, reference), greedy: a.greedy };
    } catch (err) {
      report['folder (F32 as stored)'] = `not run: ${(err as Error).message}`;
    }
  } finally {
    await peer.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (peer.warnings.length) report.llamaCppWarnings = peer.warnings;
  if (json) process.stdout.write(JSON.stringify(report) + '\n');
  else process.stdout.write(JSON.stringify(report, null, 2) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
