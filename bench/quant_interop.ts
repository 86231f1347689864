/**
 * Interoperability of quantized files between adainfer and node-llama-cpp (llama.cpp), issue 3:
 *  - files written by `adainfer quantize` load and run in node-llama-cpp, and
 *  - files written by llama-quantize (../shared/reference/models, when present) load and run in adainfer;
 * for each file both engines decode the same prompt greedily and the length of their common prefix is printed
 * (random-weight models have small top-1 margins, and llama.cpp keeps an F16 KV cache where adainfer keeps F32,
 * so they part after a while; the first tokens must agree). Not a test: node-llama-cpp is installed on demand
 * into bench/.peer (bench/peer.ts).
 *
 *   npx tsc -p tsconfig.json && node dist/bench/quant_interop.js [--types Q8_0,Q4_0,Q4_K_M,Q6_K,Q5_K_M,Q4_1,Q5_0,BF16] [--gen 16]
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { readGGUF } from '../lib/gguf';
import { ggmlTypeName } from '../lib/gguf/types';
import { TransformerModel } from '../lib/model/transformer';
import { Sequence } from '../lib/engine/sequence';
import { parseQuantTarget, quantizeModel } from '../lib/quant/quantize_model';
import { repoRoot } from './machine';
import { LlamaCppPeer } from './peer';

interface Row {
  file: string;
  madeBy: 'adainfer' | 'llama-quantize';
  types: string;
  adainfer: number[] | string;
  llamacpp: number[] | string;
  agree: number;
  /** adainfer's top-1/top-2 logit gap at the first step where the engines differ. */
  marginAtSplit?: number;
}

/** Greedy tokens and, per step, the gap between the two largest logits (how close a call the step was). */
function adainferGreedy(file: string, prompt: number[], n: number, margins: number[]): number[] {
  const model = TransformerModel.load(file);
  const ctx = model.createContext({ contextSize: 256, batchSize: 64, threads: 2 });
  try {
    const seq = new Sequence(ctx);
    const run = seq.generate(prompt, { maxTokens: n, stopAtEos: false, sampling: { temperature: 0, topK: 0, topP: 1, seed: 0 } });
    const out: number[] = [];
    for (let s = run.next(); !s.done; s = run.next()) {
      if (!s.value) continue; // between two prompt chunks: no token
      out.push(s.value.token);
      const l = ctx.native.logits;
      let a = -Infinity;
      let b = -Infinity;
      for (let i = 0; i < l.length; i++) {
        if (l[i] > a) {
          b = a;
          a = l[i];
        } else if (l[i] > b) b = l[i];
      }
      margins.push(a - b);
    }
    return out;
  } finally {
    ctx.dispose();
    model.dispose();
  }
}

function typesOf(file: string): string {
  const counts = new Map<string, number>();
  for (const t of readGGUF(file).tensors) counts.set(ggmlTypeName(t.type), (counts.get(ggmlTypeName(t.type)) ?? 0) + 1);
  return [...counts].map(([k, v]) => `${k}x${v}`).join(' ');
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let types = ['Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q4_K_M', 'Q5_K_M', 'Q6_K', 'BF16'];
  let gen = 16;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--types') types = argv[++i].split(',');
    else if (argv[i] === '--gen') gen = Number(argv[++i]);
    else throw new Error(`unknown option ${argv[i]}`);
  }
  const root = repoRoot();
  const shared = path.resolve(root, '..', 'shared', 'reference', 'models');
  const haveShared = fs.existsSync(path.join(shared, 'rand-gqa-f32.gguf'));
  const source = haveShared ? path.join(shared, 'rand-gqa-f32.gguf') : path.join(root, 'models', 'adainfer-tinystories-10L.f16.gguf');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'adainfer-interop-'));
  const files: { file: string; madeBy: Row['madeBy'] }[] = [];
  for (const t of types) {
    const out = path.join(dir, `${path.basename(source, '.gguf')}-${t}.gguf`);
    quantizeModel(source, out, parseQuantTarget(t), { threads: 2 });
    files.push({ file: out, madeBy: 'adainfer' });
  }
  if (haveShared) {
    for (const f of ['q8_0', 'q4_0', 'q4_k_m', 'q6_k', 'bf16']) files.push({ file: path.join(shared, `rand-gqa-${f}.gguf`), madeBy: 'llama-quantize' });
  }
  // "Once upon a time" in the 512-token vocabulary of these models (the goldens' greedy prompt)
  const prompt = [1, 403, 407, 261, 378];
  const peer = await LlamaCppPeer.start({ log: (m) => process.stderr.write(m + '\n') });
  const rows: Row[] = [];
  try {
    for (const { file, madeBy } of files) {
      let ours: number[] | string;
      let theirs: number[] | string;
      const margins: number[] = [];
      try {
        ours = adainferGreedy(file, prompt, gen, margins);
      } catch (err) {
        ours = `error: ${(err as Error).message}`;
      }
      try {
        const m = await peer.loadModel(file);
        const r = await m.createRunner({ contextSize: 256, batchSize: 64, threads: 2 });
        theirs = await r.greedy(prompt, gen);
        await r.dispose();
        await m.dispose();
      } catch (err) {
        theirs = `error: ${(err as Error).message}`;
      }
      let agree = 0;
      if (Array.isArray(ours) && Array.isArray(theirs)) while (agree < gen && ours[agree] === theirs[agree]) agree++;
      rows.push({ file: path.basename(file), madeBy, types: typesOf(file), adainfer: ours, llamacpp: theirs, agree, marginAtSplit: agree < gen ? margins[agree] : undefined });
    }
  } finally {
    await peer.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(`source: ${source}; node-llama-cpp ${peer.info.nodeLlamaCpp} (${peer.info.llamaCpp}, ${peer.info.cpuBackend ?? '?'} backend)\n`);
  process.stdout.write(`greedy ${gen} tokens from [${prompt.join(', ')}] in both engines:\n`);
  for (const r of rows) {
    const ok = Array.isArray(r.adainfer) && Array.isArray(r.llamacpp);
    process.stdout.write(
      `  ${r.file.padEnd(34)} made by ${r.madeBy.padEnd(14)} ${r.types.padEnd(26)} ` +
        (ok
          ? `loads and runs in both; first ${r.agree}/${gen} tokens identical` +
            (r.marginAtSplit !== undefined ? ` (then a step with top-1/top-2 gap ${r.marginAtSplit.toExponential(1)})` : '')
          : `FAILED: adainfer ${String(r.adainfer)}; node-llama-cpp ${String(r.llamacpp)}`) +
        '\n',
    );
  }
  if (rows.some((r) => !Array.isArray(r.adainfer) || !Array.isArray(r.llamacpp))) process.exitCode = 1;
}

main().catch((err) => {
  process.stderr.write(`quant_interop: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
