/**
 * Writes the seed corpus of the native loader fuzzer (test/fuzz/native/fuzz_loader.cpp):
 *   node dist/test/fuzz/make_seeds.js OUT_DIR
 * Tiny llama models that load and run (a few KB each, so libFuzzer mutates them quickly) in every weight
 * type the kernels compute, with the variants the loader branches on (tied output, rope_freqs, GQA or not,
 * another alignment), plus the bundled model cut short (its real header; tensor data past the end).
 */
import * as fs from 'fs';
import * as path from 'path';
import { GGMLType, GGUFValueType, GGUFWriter } from '../../lib/gguf';
import { BUNDLED_MODEL } from '../helpers';

interface Tiny {
  name: string;
  matrixType: GGMLType;
  normType?: GGMLType;
  nLayer?: number;
  nHead?: number;
  nKvHead?: number;
  tied?: boolean;
  ropeFreqs?: boolean;
  alignment?: number;
  vocabSizeKey?: boolean;
}

const N_EMBD = 16;
const N_FF = 24;
const N_VOCAB = 32;

/** Deterministic small weights (xorshift), encoded in `type`. */
function weights(type: GGMLType, n: number, seed: number): Uint8Array {
  let x = seed >>> 0 || 1;
  const f = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    f[i] = ((x >>> 0) / 2 ** 32 - 0.5) * 0.5;
  }
  if (type === GGMLType.F32) return new Uint8Array(f.buffer);
  const out = new Uint16Array(n);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < n; i++) {
    if (type === GGMLType.BF16) out[i] = u[i] >>> 16;
    else {
      // f32 -> f16 for |v| < 0.25 (normal range, truncating the mantissa: exact enough for a seed)
      const sign = (u[i] >>> 16) & 0x8000;
      const exp = ((u[i] >>> 23) & 0xff) - 127 + 15;
      out[i] = exp <= 0 ? sign : sign | (exp << 10) | ((u[i] >>> 13) & 0x3ff);
    }
  }
  return new Uint8Array(out.buffer);
}

function tinyModel(t: Tiny): GGUFWriter {
  const nHead = t.nHead ?? 4;
  const nKv = t.nKvHead ?? 2;
  const headDim = N_EMBD / nHead;
  const nLayer = t.nLayer ?? 2;
  const w = new GGUFWriter(t.alignment ? { alignment: t.alignment } : {});
  w.setString('general.architecture', 'llama');
  w.setString('general.name', t.name);
  w.setU32('llama.context_length', 32);
  w.setU32('llama.embedding_length', N_EMBD);
  w.setU32('llama.block_count', nLayer);
  w.setU32('llama.feed_forward_length', N_FF);
  w.setU32('llama.attention.head_count', nHead);
  w.setU32('llama.attention.head_count_kv', nKv);
  w.setU32('llama.rope.dimension_count', headDim);
  w.setF32('llama.attention.layer_norm_rms_epsilon', 1e-5);
  if (t.vocabSizeKey) w.setU32('llama.vocab_size', N_VOCAB);
  const tokens = ['<unk>', '<s>', '</s>', ...Array.from({ length: N_VOCAB - 3 }, (_, i) => String.fromCharCode(97 + (i % 26)) + (i >= 26 ? '_' : ''))];
  w.setString('tokenizer.ggml.model', 'llama');
  w.setArray('tokenizer.ggml.tokens', GGUFValueType.STRING, tokens);
  w.setArray('tokenizer.ggml.scores', GGUFValueType.FLOAT32, tokens.map((_, i) => -i));
  w.setArray('tokenizer.ggml.token_type', GGUFValueType.INT32, tokens.map((_, i) => (i === 0 ? 2 : i < 3 ? 3 : 1)));
  w.setU32('tokenizer.ggml.bos_token_id', 1);
  w.setU32('tokenizer.ggml.eos_token_id', 2);
  let seed = 1;
  const norm = t.normType ?? t.matrixType;
  const add = (name: string, dims: number[], type: GGMLType) => w.addTensor(name, dims, type, weights(type, dims.reduce((a, b) => a * b, 1), seed++));
  add('token_embd.weight', [N_EMBD, N_VOCAB], t.matrixType);
  add('output_norm.weight', [N_EMBD], norm);
  if (!t.tied) add('output.weight', [N_EMBD, N_VOCAB], t.matrixType);
  if (t.ropeFreqs) add('rope_freqs.weight', [headDim / 2], GGMLType.F32);
  for (let l = 0; l < nLayer; l++) {
    const p = `blk.${l}.`;
    add(p + 'attn_norm.weight', [N_EMBD], norm);
    add(p + 'attn_q.weight', [N_EMBD, nHead * headDim], t.matrixType);
    add(p + 'attn_k.weight', [N_EMBD, nKv * headDim], t.matrixType);
    add(p + 'attn_v.weight', [N_EMBD, nKv * headDim], t.matrixType);
    add(p + 'attn_output.weight', [nHead * headDim, N_EMBD], t.matrixType);
    add(p + 'ffn_norm.weight', [N_EMBD], norm);
    add(p + 'ffn_gate.weight', [N_EMBD, N_FF], t.matrixType);
    add(p + 'ffn_up.weight', [N_EMBD, N_FF], t.matrixType);
    add(p + 'ffn_down.weight', [N_FF, N_EMBD], t.matrixType);
  }
  return w;
}

export const TINY_MODELS: Tiny[] = [
  { name: 'tiny-f32', matrixType: GGMLType.F32 },
  { name: 'tiny-f16', matrixType: GGMLType.F16, normType: GGMLType.F32 },
  { name: 'tiny-bf16', matrixType: GGMLType.BF16, normType: GGMLType.F32 },
  { name: 'tiny-f16-norms', matrixType: GGMLType.F16 },
  { name: 'tiny-tied', matrixType: GGMLType.F16, normType: GGMLType.F32, tied: true },
  { name: 'tiny-rope-freqs', matrixType: GGMLType.F32, ropeFreqs: true, vocabSizeKey: true },
  { name: 'tiny-mha-1layer', matrixType: GGMLType.F32, nHead: 2, nKvHead: 2, nLayer: 1 },
  { name: 'tiny-align64', matrixType: GGMLType.F16, normType: GGMLType.F32, alignment: 64 },
];

/** Writes the seeds into `dir`; returns their paths. */
export function writeSeeds(dir: string): string[] {
  fs.mkdirSync(dir, { recursive: true });
  const out: string[] = [];
  for (const t of TINY_MODELS) {
    const file = path.join(dir, `${t.name}.gguf`);
    tinyModel(t).write(file);
    out.push(file);
  }
  const bundled = fs.readFileSync(BUNDLED_MODEL);
  for (const cut of [4096, 17408, 65536]) {
    const file = path.join(dir, `bundled-cut-${cut}.gguf`);
    fs.writeFileSync(file, bundled.subarray(0, cut));
    out.push(file);
  }
  return out;
}

if (require.main === module) {
  const dir = process.argv[2];
  if (!dir) {
    console.error('usage: node dist/test/fuzz/make_seeds.js OUT_DIR');
    process.exit(2);
  }
  const files = writeSeeds(dir);
  console.log(`${files.length} seeds in ${dir}: ${files.map((f) => `${path.basename(f)} (${fs.statSync(f).size} B)`).join(', ')}`);
}
