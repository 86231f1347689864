/**
 * Writes a random-weight Llama GGUF at a named geometry, in any type `adainfer quantize` produces, with a
 * synthetic SentencePiece vocabulary of 32000 tokens in the metadata (so adainfer and node-llama-cpp both
 * load it). Random weights do not change speed; the files are for benchmarks only.
 *
 *   node dist/bench/make_model.js --geometry tinyllama-1.1b --type Q4_0 [--out FILE] [--seed N] [--threads T] [--force]
 *
 * Geometries: tiny (smoke tests), tinyllama-1.1b, llama2-7b (see GEOMETRIES). Default output:
 * bench/models/<geometry>-<type>.gguf (git-ignored); an existing file is kept unless --force.
 * Tensor types follow the quantizer's rules (lib/quant/quantize_model.ts): 1-D norms F32, the output head at
 * Q6_K for low-bit types (Q8_0 for Q8_0), Q4_K_M / Q5_K_M mixtures; --pure gives every matrix the type.
 * The file is streamed tensor by tensor (GGUFWriter): memory stays at a few chunks of rows, whatever the size.
 * Values: uniform with the standard deviation of the reference recipe (0.02; attn_q / attn_k 0.08), norm
 * weights 1 + small noise, from a seeded xorshift generator (the same seed gives the same file).
 *
 * --depth-decay D (0 < D <= 1) makes a file where drafting from early layers pays (issue 15): layer l's output
 * projections (attn_output, ffn_down: what each block adds to the residual stream) get D^l times the standard
 * deviation, so later layers change the prediction less and a share of positions settles before the last layer.
 * Random weights otherwise never agree across layers. The share is measured, not assumed:
 * `node dist/bench/draft_acceptance.js --model FILE` prints it per layer. Default output name: ...-decayD.gguf.
 */
import * as fs from 'fs';
import * as path from 'path';
import { GGUFWriter } from '../lib/gguf/writer';
import { GGMLType, GGUFValueType } from '../lib/gguf/types';
import { quantizeRows } from '../lib/quant/native_quant';
import { parseQuantTarget, planTensorTypes, targetBaseType, targetFileType, type QuantTarget } from '../lib/quant/quantize_model';
import { repoRoot } from './machine';

export interface Geometry {
  name: string;
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nKvHead: number;
  nFf: number;
  nVocab: number;
  nCtx: number;
  ropeBase: number;
}

export const GEOMETRIES: Record<string, Geometry> = {
  tiny: { name: 'tiny', nEmbd: 256, nLayer: 2, nHead: 4, nKvHead: 2, nFf: 768, nVocab: 32000, nCtx: 2048, ropeBase: 10000 },
  'tinyllama-1.1b': { name: 'tinyllama-1.1b', nEmbd: 2048, nLayer: 22, nHead: 32, nKvHead: 4, nFf: 5632, nVocab: 32000, nCtx: 2048, ropeBase: 10000 },
  'llama2-7b': { name: 'llama2-7b', nEmbd: 4096, nLayer: 32, nHead: 32, nKvHead: 32, nFf: 11008, nVocab: 32000, nCtx: 4096, ropeBase: 10000 },
};

/** The tensors of a llama model of this geometry, in llama.cpp's order, with their (unquantized) F32 type. */
export function llamaTensors(g: Geometry): { name: string; dims: number[]; type: number; std: number }[] {
  const headDim = g.nEmbd / g.nHead;
  const kv = g.nKvHead * headDim;
  const t: { name: string; dims: number[]; type: number; std: number }[] = [];
  t.push({ name: 'token_embd.weight', dims: [g.nEmbd, g.nVocab], type: GGMLType.F32, std: 0.02 });
  for (let l = 0; l < g.nLayer; l++) {
    const p = `blk.${l}.`;
    t.push({ name: p + 'attn_norm.weight', dims: [g.nEmbd], type: GGMLType.F32, std: -1 });
    t.push({ name: p + 'attn_q.weight', dims: [g.nEmbd, g.nEmbd], type: GGMLType.F32, std: 0.08 });
    t.push({ name: p + 'attn_k.weight', dims: [g.nEmbd, kv], type: GGMLType.F32, std: 0.08 });
    t.push({ name: p + 'attn_v.weight', dims: [g.nEmbd, kv], type: GGMLType.F32, std: 0.02 });
    t.push({ name: p + 'attn_output.weight', dims: [g.nEmbd, g.nEmbd], type: GGMLType.F32, std: 0.02 });
    t.push({ name: p + 'ffn_norm.weight', dims: [g.nEmbd], type: GGMLType.F32, std: -1 });
    t.push({ name: p + 'ffn_gate.weight', dims: [g.nEmbd, g.nFf], type: GGMLType.F32, std: 0.02 });
    t.push({ name: p + 'ffn_up.weight', dims: [g.nEmbd, g.nFf], type: GGMLType.F32, std: 0.02 });
    t.push({ name: p + 'ffn_down.weight', dims: [g.nFf, g.nEmbd], type: GGMLType.F32, std: 0.02 });
  }
  t.push({ name: 'output_norm.weight', dims: [g.nEmbd], type: GGMLType.F32, std: -1 });
  t.push({ name: 'output.weight', dims: [g.nEmbd, g.nVocab], type: GGMLType.F32, std: 0.02 });
  return t;
}

/**
 * A synthetic SentencePiece (llama) vocabulary of n tokens: <unk>, <s>, </s>, the 256 byte tokens <0x00>..
 * <0xFF>, then pieces made of letters, with and without the leading U+2581, scores decreasing.
 */
export function syntheticVocab(n: number): { tokens: string[]; scores: number[]; types: number[] } {
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [2, 3, 3];  // UNKNOWN, CONTROL, CONTROL
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(6);  // BYTE
  }
  const letters = 'etaoinshrdlcumwfgypbvkjxqz';
  const pieces: string[] = ['\u2581'];
  for (const c of letters) pieces.push('\u2581' + c, c);
  outer: for (let len = 2; len <= 4; len++) {
    const idx = new Array(len).fill(0);
    for (;;) {
      const word = idx.map((i) => letters[i]).join('');
      pieces.push('\u2581' + word, word);
      if (tokens.length + pieces.length >= n) break outer;
      let k = len - 1;
      while (k >= 0 && ++idx[k] === letters.length) idx[k--] = 0;
      if (k < 0) break;
    }
  }
  for (const p of pieces) {
    if (tokens.length >= n) break;
    tokens.push(p);
    types.push(1);  // NORMAL
  }
  const scores = tokens.map((_, i) => (i < 259 ? 0 : -(i - 259)));
  return { tokens, scores, types };
}

/** Two xorshift32 generators summed: uniform values, fast enough for a billion weights. */
class Random {
  private a: number;
  private b: number;
  constructor(seed: number) {
    // splitmix32 to fill two 32-bit states (plain numbers: fast)
    let x = seed >>> 0;
    const next = () => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next() | 1;
    this.b = next() | 1;
  }
  /** Fills out with uniform values in [-scale, scale). */
  fill(out: Float32Array, scale: number): void {
    let a = this.a;
    let b = this.b;
    const k = (2 * scale) / 4294967296;
    for (let i = 0; i < out.length; i++) {
      // xorshift32 pair (Marsaglia), combined
      a ^= a << 13;
      a ^= a >>> 17;
      a ^= a << 5;
      b ^= b << 15;
      b ^= b >>> 21;
      b ^= b << 4;
      out[i] = ((a + b) >>> 0) * k - scale;
    }
    this.a = a;
    this.b = b;
  }
}

export interface MakeModelOptions {
  geometry: Geometry;
  target: QuantTarget;
  out: string;
  seed?: number;
  threads?: number;
  pure?: boolean;
  /** Layer l's attn_output and ffn_down get depthDecay^l times their standard deviation (default 1: none). */
  depthDecay?: number;
  log?: (m: string) => void;
}

/** The factor on a tensor's standard deviation for --depth-decay: decay^l for layer l's output projections. */
export function depthDecayFactor(tensorName: string, decay: number): number {
  const m = /^blk\.(\d+)\.(attn_output|ffn_down)\.weight$/.exec(tensorName);
  return m ? Math.pow(decay, Number(m[1])) : 1;
}

function checkDepthDecay(decay: number | undefined): void {
  if (decay !== undefined && !(decay > 0 && decay <= 1)) throw new Error(`--depth-decay must be in (0, 1], got ${decay}`);
}

/** Writes the model; returns the file size. */
export function makeModel(o: MakeModelOptions): number {
  const g = o.geometry;
  checkDepthDecay(o.depthDecay);
  const decay = o.depthDecay ?? 1;
  const log = o.log ?? (() => undefined);
  const threads = o.threads ?? 1;
  const tensors = llamaTensors(g);
  const plans = planTensorTypes(tensors, o.target, { pure: o.pure });
  const rng = new Random(o.seed ?? 1);
  const vocab = syntheticVocab(g.nVocab);

  const w = new GGUFWriter();
  w.setString('general.architecture', 'llama');
  w.setString('general.name', `adainfer-bench-${g.name}-${o.target}`);
  w.setU32('llama.context_length', g.nCtx);
  w.setU32('llama.embedding_length', g.nEmbd);
  w.setU32('llama.block_count', g.nLayer);
  w.setU32('llama.feed_forward_length', g.nFf);
  w.setU32('llama.rope.dimension_count', g.nEmbd / g.nHead);
  w.setU32('llama.attention.head_count', g.nHead);
  w.setU32('llama.attention.head_count_kv', g.nKvHead);
  w.setF32('llama.attention.layer_norm_rms_epsilon', 1e-5);
  w.setF32('llama.rope.freq_base', g.ropeBase);
  w.setU32('llama.vocab_size', g.nVocab);
  w.setU32('general.file_type', targetFileType(o.target));
  if (decay !== 1) w.setF32('adainfer.bench.depth_decay', decay);
  if (![GGMLType.F32, GGMLType.F16, GGMLType.BF16].includes(targetBaseType(o.target))) w.setU32('general.quantization_version', 2);
  w.setString('tokenizer.ggml.model', 'llama');
  w.setArray('tokenizer.ggml.tokens', GGUFValueType.STRING, vocab.tokens);
  w.setArray('tokenizer.ggml.scores', GGUFValueType.FLOAT32, vocab.scores);
  w.setArray('tokenizer.ggml.token_type', GGUFValueType.INT32, vocab.types);
  w.setU32('tokenizer.ggml.bos_token_id', 1);
  w.setU32('tokenizer.ggml.eos_token_id', 2);
  w.setU32('tokenizer.ggml.unknown_token_id', 0);
  w.setBool('tokenizer.ggml.add_bos_token', true);
  w.setBool('tokenizer.ggml.add_eos_token', false);

  const t0 = Date.now();
  tensors.forEach((t, i) => {
    const type = plans[i].to;
    w.addTensor(t.name, t.dims, type, function* () {
      const nPerRow = t.dims[0];
      const nRows = t.dims.length > 1 ? t.dims[1] : 1;
      const rowsPerChunk = Math.max(1, Math.min(nRows, Math.floor((8 << 20) / nPerRow)));
      const buf = new Float32Array(rowsPerChunk * nPerRow);
      for (let r = 0; r < nRows; r += rowsPerChunk) {
        const rows = Math.min(rowsPerChunk, nRows - r);
        const f32 = buf.subarray(0, rows * nPerRow);
        if (t.std < 0) {
          rng.fill(f32, 0.1);
          for (let k = 0; k < f32.length; k++) f32[k] += 1;
        } else {
          rng.fill(f32, t.std * depthDecayFactor(t.name, decay) * Math.sqrt(3));  // uniform with standard deviation t.std (times the decay)
        }
        yield type === GGMLType.F32 ? new Uint8Array(f32.buffer.slice(0, f32.byteLength)) : quantizeRows(type, f32, rows, nPerRow, threads);
      }
      if (i % 9 === 0 || i === tensors.length - 1)
        log(`[make_model] ${i + 1}/${tensors.length} tensors (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
    });
  });
  fs.mkdirSync(path.dirname(o.out), { recursive: true });
  return w.write(o.out).fileSize;
}

export function defaultModelPath(geometry: string, target: string, pure = false, depthDecay?: number): string {
  const decay = depthDecay !== undefined && depthDecay !== 1 ? `-decay${depthDecay}` : '';
  return path.join(repoRoot(), 'bench', 'models', `${geometry}-${target}${pure ? '-pure' : ''}${decay}.gguf`);
}

/** Makes the model unless the file exists (and `force` is not set); returns its path. */
export function ensureModel(
  geometry: string,
  target: string,
  options: { force?: boolean; threads?: number; seed?: number; pure?: boolean; depthDecay?: number; out?: string; log?: (m: string) => void } = {},
): string {
  const g = GEOMETRIES[geometry];
  if (!g) throw new Error(`unknown geometry '${geometry}'; known: ${Object.keys(GEOMETRIES).join(', ')}`);
  const t = parseQuantTarget(target);
  checkDepthDecay(options.depthDecay);
  const out = options.out ?? defaultModelPath(geometry, t, options.pure, options.depthDecay);
  if (!options.force && fs.existsSync(out)) return out;
  const log = options.log ?? ((m: string) => process.stderr.write(m + '\n'));
  const t0 = Date.now();
  log(`[make_model] writing ${out} (${geometry}, ${t}) ...`);
  const size = makeModel({
    geometry: g,
    target: t,
    out,
    seed: options.seed,
    threads: options.threads,
    pure: options.pure,
    depthDecay: options.depthDecay,
    log,
  });
  log(`[make_model] ${out}: ${(size / 2 ** 30).toFixed(2)} GiB in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return out;
}

function parseArgs(argv: string[]): Record<string, string | boolean> {
  const out: Record<string, string | boolean> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument '${a}'`);
    const key = a.slice(2);
    if (key === 'force' || key === 'pure' || key === 'help') out[key] = true;
    else if (i + 1 < argv.length) out[key] = argv[++i];
    else throw new Error(`${a} needs a value`);
  }
  return out;
}

if (require.main === module) {
  try {
    const args = parseArgs(process.argv.slice(2));
    if (args.help || !args.geometry || !args.type) {
      process.stderr.write(
        'usage: node dist/bench/make_model.js --geometry tiny|tinyllama-1.1b|llama2-7b --type TYPE [--out FILE] [--seed N] [--threads T] [--pure] [--depth-decay D] [--force]\n' +
          '  --depth-decay D: layer l\'s attn_output and ffn_down scaled by D^l (0 < D <= 1), so that early layers settle the\n' +
          '                   prediction for a share of positions (measure it: node dist/bench/draft_acceptance.js --model FILE)\n',
      );
      process.exitCode = args.help ? 0 : 2;
    } else {
      const file = ensureModel(String(args.geometry), String(args.type), {
        force: Boolean(args.force),
        pure: Boolean(args.pure),
        depthDecay: typeof args['depth-decay'] === 'string' ? Number(args['depth-decay']) : undefined,
        out: typeof args.out === 'string' ? args.out : undefined,
        seed: typeof args.seed === 'string' ? Number(args.seed) : undefined,
        threads: typeof args.threads === 'string' ? Number(args.threads) : 2,
      });
      process.stdout.write(file + '\n');
    }
  } catch (err) {
    process.stderr.write(`make_model: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}
