/**
 * The quantizer (lib/quant, `adainfer quantize`) on the bundled model: which type each tensor gets, files that
 * load and compute logits close to the original F16 model in every type, and the command's errors.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { main } from '../../lib/cli/main';
import { readGGUF } from '../../lib/gguf';
import { GGMLType, LlamaFileType, rowBytes } from '../../lib/gguf/types';
import { TransformerModel } from '../../lib/model/transformer';
import type { KernelVariant } from '../../lib/bindings/native';
import { dequantizeRows, quantizeRows } from '../../lib/quant/native_quant';
import { QUANT_TARGETS, planTensorTypes, quantizeModel, type QuantTarget, type TensorDesc } from '../../lib/quant/quantize_model';
import { BUNDLED_PLAIN_MODEL, tmpDir } from '../helpers';

function llamaTensors(nEmbd: number, nFf: number, nLayer: number, tied = false): TensorDesc[] {
  const t: TensorDesc[] = [{ name: 'token_embd.weight', dims: [nEmbd, 512], type: GGMLType.F32 }];
  for (let l = 0; l < nLayer; l++) {
    for (const n of ['attn_q', 'attn_k', 'attn_v', 'attn_output']) t.push({ name: `blk.${l}.${n}.weight`, dims: [nEmbd, nEmbd], type: GGMLType.F32 });
    t.push({ name: `blk.${l}.attn_norm.weight`, dims: [nEmbd], type: GGMLType.F32 });
    t.push({ name: `blk.${l}.ffn_gate.weight`, dims: [nEmbd, nFf], type: GGMLType.F32 });
    t.push({ name: `blk.${l}.ffn_down.weight`, dims: [nFf, nEmbd], type: GGMLType.F32 });
  }
  if (!tied) t.push({ name: 'output.weight', dims: [nEmbd, 512], type: GGMLType.F32 });
  return t;
}

function typeOf(plans: { name: string; to: number }[], name: string): number {
  const p = plans.find((x) => x.name === name);
  if (!p) throw new Error(`no tensor ${name}`);
  return p.to;
}

describe('tensor types chosen by the quantizer', () => {
  const tensors = llamaTensors(256, 512, 8);

  test('1-D tensors stay, the head gets higher precision, --pure and --keep-output-f16', () => {
    const q4 = planTensorTypes(tensors, 'Q4_0');
    expect(typeOf(q4, 'blk.0.attn_norm.weight')).toBe(GGMLType.F32);
    expect(typeOf(q4, 'blk.0.attn_q.weight')).toBe(GGMLType.Q4_0);
    expect(typeOf(q4, 'token_embd.weight')).toBe(GGMLType.Q4_0);
    expect(typeOf(q4, 'output.weight')).toBe(GGMLType.Q6_K);
    expect(typeOf(planTensorTypes(tensors, 'Q8_0'), 'output.weight')).toBe(GGMLType.Q8_0);
    expect(typeOf(planTensorTypes(tensors, 'Q4_0', { pure: true }), 'output.weight')).toBe(GGMLType.Q4_0);
    expect(typeOf(planTensorTypes(tensors, 'Q4_0', { keepOutputF16: true }), 'output.weight')).toBe(GGMLType.F16);
    expect(typeOf(planTensorTypes(tensors, 'F16'), 'output.weight')).toBe(GGMLType.F16);
    expect(typeOf(planTensorTypes(tensors, 'BF16'), 'blk.3.ffn_down.weight')).toBe(GGMLType.BF16);
    // tied embeddings: token_embd is the head
    const tied = planTensorTypes(llamaTensors(256, 512, 2, true), 'Q4_K');
    expect(typeOf(tied, 'token_embd.weight')).toBe(GGMLType.Q6_K);
  });

  test('Q4_K_M gives attn_v and ffn_down of the layers llama.cpp picks Q6_K', () => {
    const plans = planTensorTypes(tensors, 'Q4_K_M');
    // 8 layers: use_more_bits(i) = i < 1 || i >= 7 || (i - 1) % 3 == 2  ->  layers 0, 3, 6, 7
    const more = [0, 3, 6, 7];
    for (let l = 0; l < 8; l++) {
      const want = more.includes(l) ? GGMLType.Q6_K : GGMLType.Q4_K;
      expect([l, typeOf(plans, `blk.${l}.attn_v.weight`)]).toEqual([l, want]);
      expect([l, typeOf(plans, `blk.${l}.ffn_down.weight`)]).toEqual([l, want]);
      expect(typeOf(plans, `blk.${l}.attn_q.weight`)).toBe(GGMLType.Q4_K);
    }
    expect(typeOf(planTensorTypes(tensors, 'Q4_K_M', { pure: true }), 'blk.0.attn_v.weight')).toBe(GGMLType.Q4_K);
  });

  test('rows that are not a whole number of blocks fall back to a compatible type', () => {
    const plans = planTensorTypes(llamaTensors(128, 344, 1), 'Q4_K', { pure: true });
    expect(typeOf(plans, 'blk.0.attn_q.weight')).toBe(GGMLType.Q5_0);  // 128 % 256 != 0, 128 % 32 == 0
    expect(typeOf(plans, 'blk.0.ffn_down.weight')).toBe(GGMLType.F16);  // 344 % 32 != 0
    expect(typeOf(plans, 'blk.0.ffn_gate.weight')).toBe(GGMLType.Q5_0);
    expect(typeOf(planTensorTypes(llamaTensors(128, 344, 1), 'Q6_K', { pure: true }), 'blk.0.attn_q.weight')).toBe(GGMLType.Q8_0);
    expect(typeOf(planTensorTypes(llamaTensors(128, 344, 1), 'Q5_K', { pure: true }), 'blk.0.attn_q.weight')).toBe(GGMLType.Q5_1);
    expect(typeOf(planTensorTypes(llamaTensors(128, 344, 1), 'Q4_0'), 'blk.0.ffn_down.weight')).toBe(GGMLType.F16);
  });
});

describe('native tensor quantization', () => {
  test('round trip within the type\'s resolution, errors on bad shapes', () => {
    const n = 512;
    const x = new Float32Array(4 * n).map((_, i) => Math.sin(i * 0.37) * 0.05);
    for (const [type, tol] of [
      [GGMLType.Q8_0, 0.006],
      [GGMLType.Q4_K, 0.1],
      [GGMLType.Q6_K, 0.03],
      [GGMLType.F16, 1e-3],
    ] as const) {
      const q = quantizeRows(type, x, 4, n, 2);
      expect(q.length).toBe(4 * rowBytes(type, n));
      const back = dequantizeRows(type, q, 4, n);
      let err = 0;
      let ref = 0;
      for (let i = 0; i < x.length; i++) {
        err += (back[i] - x[i]) ** 2;
        ref += x[i] ** 2;
      }
      expect(Math.sqrt(err / ref)).toBeLessThan(tol);
    }
    expect(() => quantizeRows(GGMLType.Q4_K, x, 1, 100)).toThrow(/not a whole number/);
    expect(() => quantizeRows(GGMLType.IQ2_XS, x, 1, 256)).toThrow(/cannot quantize/);
  });
});

describe('quantized copies of the bundled model', () => {
  let dir: string;
  let tokens: number[];
  let reference: Float32Array[];
  beforeAll(() => {
    dir = tmpDir('adainfer-quant-');
    tokens = Array.from({ length: 24 }, (_, i) => (i * 37 + 11) % 512);
    reference = logitsOf(BUNDLED_PLAIN_MODEL, tokens);
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  function logitsOf(file: string, toks: number[], kernels?: KernelVariant): Float32Array[] {
    const model = TransformerModel.load(file, { kernels });
    const ctx = model.createContext({ contextSize: 64, batchSize: 64, threads: 2 });
    try {
      toks.forEach((t, i) => (ctx.native.tokens[i] = t));
      ctx.forward(toks.length, 0);
      return toks.map((_, row) => ctx.logits(row).slice());
    } finally {
      ctx.dispose();
      model.dispose();
    }
  }

  // Relative RMS difference of the logits from the F16 original, and top-1 agreement, per target. The bundled
  // model's rows are 128 / 344 long: K-quant targets fall back to Q5_0 / Q5_1 / Q8_0 and ffn_down to F16.
  const bounds: Record<QuantTarget, { rel: number; top1: number }> = {
    F32: { rel: 1e-5, top1: 1 },
    F16: { rel: 1e-6, top1: 1 },
    BF16: { rel: 0.02, top1: 0.9 },
    Q8_0: { rel: 0.02, top1: 0.9 },
    Q6_K: { rel: 0.02, top1: 0.9 },
    Q5_0: { rel: 0.06, top1: 0.75 },
    Q5_1: { rel: 0.06, top1: 0.75 },
    Q5_K: { rel: 0.06, top1: 0.75 },
    Q5_K_M: { rel: 0.06, top1: 0.75 },
    Q4_0: { rel: 0.15, top1: 0.6 },
    Q4_1: { rel: 0.15, top1: 0.6 },
    Q4_K: { rel: 0.15, top1: 0.6 },
    Q4_K_M: { rel: 0.15, top1: 0.6 },
  };

  test.each(['Q4_0', 'Q8_0'] as const)('%s layer matrices are packed for the AVX2 kernels, with the logits of the GGUF rows bit for bit', (target) => {
    const out = path.join(dir, `packed-${target}.gguf`);
    quantizeModel(BUNDLED_PLAIN_MODEL, out, target, { threads: 2 });
    const f = readGGUF(out);
    // the layer matrices of the type (Q4_0: ffn_down's 344-long rows fall back to F16; the head and the embedding
    // stay rows)
    const layers = f.tensors.filter((t) => t.type === GGMLType[target] && t.name.startsWith('blk.'));
    expect(layers.length).toBeGreaterThan(0);
    const layerBytes = layers.reduce((s, t) => s + rowBytes(t.type, t.dims[0]) * t.dims[1], 0);
    const packedBytes = (kernels: KernelVariant): number => {
      const m = TransformerModel.load(out, { kernels });
      const bytes = m.native.info().packedBytes;
      m.dispose();
      return bytes;
    };
    expect(packedBytes('avx2')).toBe(layerBytes);
    expect(packedBytes('generic')).toBe(0);
    // the same logits with packing off (ADAINFER_PACK=0 is read once per process: a child computes them)
    const script = `
      const { TransformerModel } = require(${JSON.stringify(path.resolve(__dirname, '../../lib/model/transformer'))});
      const m = TransformerModel.load(process.argv[1], { kernels: 'avx2' });
      const ctx = m.createContext({ contextSize: 64, batchSize: 64, threads: 2 });
      const toks = ${JSON.stringify(tokens)};
      toks.forEach((t, i) => (ctx.native.tokens[i] = t));
      ctx.forward(toks.length, 0);
      const rows = toks.map((_, r) => Array.from(ctx.logits(r)));
      process.stdout.write(JSON.stringify({ packedBytes: m.native.info().packedBytes, rows }));`;
    const child = spawnSync(process.execPath, ['-e', script, out], { env: { ...process.env, ADAINFER_PACK: '0' }, encoding: 'utf8', maxBuffer: 1 << 26 });
    expect(child.stderr).toBe('');
    const unpacked = JSON.parse(child.stdout) as { packedBytes: number; rows: number[][] };
    expect(unpacked.packedBytes).toBe(0);
    logitsOf(out, tokens, 'avx2').forEach((row, r) => expect(Array.from(row)).toEqual(unpacked.rows[r]));
  });

  test.each([...QUANT_TARGETS])('%s: loads, file type set, logits close to the F16 model', (target) => {
    const out = path.join(dir, `model-${target}.gguf`);
    const r = quantizeModel(BUNDLED_PLAIN_MODEL, out, target, { threads: 2 });
    const f = readGGUF(out);
    expect(f.metadata.get('general.file_type')).toBe(
      {
        F32: LlamaFileType.ALL_F32,
        F16: LlamaFileType.MOSTLY_F16,
        BF16: LlamaFileType.MOSTLY_BF16,
        Q8_0: LlamaFileType.MOSTLY_Q8_0,
        Q4_0: LlamaFileType.MOSTLY_Q4_0,
        Q4_1: LlamaFileType.MOSTLY_Q4_1,
        Q5_0: LlamaFileType.MOSTLY_Q5_0,
        Q5_1: LlamaFileType.MOSTLY_Q5_1,
        Q4_K: LlamaFileType.MOSTLY_Q4_K_S,
        Q5_K: LlamaFileType.MOSTLY_Q5_K_S,
        Q6_K: LlamaFileType.MOSTLY_Q6_K,
        Q4_K_M: LlamaFileType.MOSTLY_Q4_K_M,
        Q5_K_M: LlamaFileType.MOSTLY_Q5_K_M,
      }[target],
    );
    // every tensor has the planned type, the metadata (tokenizer included) is carried over
    for (const p of r.plans) expect([p.name, f.tensorsByName.get(p.name)?.type]).toEqual([p.name, p.to]);
    expect(f.metadata.get('tokenizer.ggml.tokens')).toEqual(readGGUF(BUNDLED_PLAIN_MODEL).metadata.get('tokenizer.ggml.tokens'));
    const logits = logitsOf(out, tokens);
    let err = 0;
    let ref = 0;
    let agree = 0;
    logits.forEach((row, i) => {
      let a = 0;
      let b = 0;
      for (let v = 0; v < row.length; v++) {
        err += (row[v] - reference[i][v]) ** 2;
        ref += reference[i][v] ** 2;
        if (row[v] > row[a]) a = v;
        if (reference[i][v] > reference[i][b]) b = v;
      }
      if (a === b) agree++;
    });
    const rel = Math.sqrt(err / ref);
    expect(rel).toBeLessThanOrEqual(bounds[target].rel);
    expect(agree / tokens.length).toBeGreaterThanOrEqual(bounds[target].top1);
  });

  test('`adainfer quantize`: writes the file; unknown types and conflicting flags are usage errors', async () => {
    const out = path.join(dir, 'cli-q8.gguf');
    const stderr = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      expect(await main(['node', 'adainfer', 'quantize', BUNDLED_PLAIN_MODEL, out, 'q8_0', '-q'])).toBe(0);
      expect(readGGUF(out).metadata.get('general.file_type')).toBe(LlamaFileType.MOSTLY_Q8_0);
      expect(await main(['node', 'adainfer', 'quantize', BUNDLED_PLAIN_MODEL, out, 'Q9_9'])).toBe(2);
      expect(await main(['node', 'adainfer', 'quantize', BUNDLED_PLAIN_MODEL, out, 'Q4_0', '--pure', '--keep-output-f16'])).toBe(2);
      expect(await main(['node', 'adainfer', 'quantize', BUNDLED_PLAIN_MODEL, BUNDLED_PLAIN_MODEL, 'Q4_0'])).toBe(2);
      expect(await main(['node', 'adainfer', 'quantize', path.join(dir, 'missing.gguf'), out, 'Q4_0'])).toBe(1);
    } finally {
      stderr.mockRestore();
    }
  });
});

describe('`adainfer bench` and the benchmark model generator', () => {
  let dir: string;
  beforeAll(() => {
    dir = tmpDir('adainfer-bench-');
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('--json prints model, type, threads and pp/tg statistics', async () => {
    const chunks: string[] = [];
    const out = jest.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
      chunks.push(String(s));
      return true;
    });
    try {
      expect(await main(['node', 'adainfer', 'bench', '-m', BUNDLED_PLAIN_MODEL, '-p', '16', '-n', '4', '-r', '2', '-t', '1', '--json'])).toBe(0);
    } finally {
      out.mockRestore();
    }
    const r = JSON.parse(chunks.join('')) as Record<string, unknown> & { pp: { tokens: number; mean: number; sd: number }; tg: { tokens: number; mean: number; sd: number } };
    expect(r.model).toBe(BUNDLED_PLAIN_MODEL);
    expect(r.type).toBe('F16');
    expect(r.threads).toBe(1);
    expect(r.pp.tokens).toBe(16);
    expect(r.tg.tokens).toBe(4);
    for (const s of [r.pp, r.tg]) {
      expect(s.mean).toBeGreaterThan(0);
      expect(s.sd).toBeGreaterThanOrEqual(0);
    }
    expect(await main(['node', 'adainfer', 'bench', '-m', BUNDLED_PLAIN_MODEL, '-p', '0', '-n', '0'])).toBe(2);
  });

  test('make_model --depth-decay scales layer l\'s attn_output and ffn_down by D^l and nothing else', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { GEOMETRIES, makeModel, depthDecayFactor } = require('../../bench/make_model') as typeof import('../../bench/make_model');
    expect(depthDecayFactor('blk.3.ffn_down.weight', 0.5)).toBe(0.125);
    expect(depthDecayFactor('blk.0.attn_output.weight', 0.5)).toBe(1);
    expect(depthDecayFactor('blk.3.attn_q.weight', 0.5)).toBe(1);
    expect(() => makeModel({ geometry: GEOMETRIES.tiny, target: 'F32', out: path.join(dir, 'bad.gguf'), depthDecay: 1.5 })).toThrow(/depth-decay/);
    const plainFile = path.join(dir, 'tiny-f32.gguf');
    const decayFile = path.join(dir, 'tiny-f32-decay.gguf');
    makeModel({ geometry: GEOMETRIES.tiny, target: 'F32', out: plainFile, seed: 7 });
    makeModel({ geometry: GEOMETRIES.tiny, target: 'F32', out: decayFile, seed: 7, depthDecay: 0.5 });
    const plain = readGGUF(plainFile);
    const decay = readGGUF(decayFile);
    expect(decay.metadata.get('adainfer.bench.depth_decay')).toBeCloseTo(0.5);
    const values = (file: string, t: { absoluteOffset: number; byteSize: number }): Float32Array => {
      const fd = fs.openSync(file, 'r');
      const buf = Buffer.alloc(t.byteSize);
      fs.readSync(fd, buf, 0, t.byteSize, t.absoluteOffset);
      fs.closeSync(fd);
      return new Float32Array(buf.buffer, buf.byteOffset, t.byteSize / 4);
    };
    // the same random stream: halving is exact in binary floating point, so the values compare exactly
    for (const [name, factor] of [['blk.0.ffn_down.weight', 1], ['blk.1.ffn_down.weight', 0.5], ['blk.1.attn_output.weight', 0.5], ['blk.1.attn_q.weight', 1], ['blk.1.ffn_up.weight', 1]] as const) {
      const a = values(plainFile, plain.tensorsByName.get(name)!);
      const b = values(decayFile, decay.tensorsByName.get(name)!);
      expect(b.length).toBe(a.length);
      let mismatches = 0;
      for (let i = 0; i < a.length; i++) if (b[i] !== a[i] * factor) mismatches++;
      expect({ name, mismatches }).toEqual({ name, mismatches: 0 });
    }
  });

  test('make_model writes a loadable random model with a 32000-token SentencePiece vocabulary', async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { GEOMETRIES, makeModel, syntheticVocab } = require('../../bench/make_model') as typeof import('../../bench/make_model');
    const vocab = syntheticVocab(32000);
    expect(vocab.tokens).toHaveLength(32000);
    expect(new Set(vocab.tokens).size).toBe(32000);
    expect(vocab.tokens.slice(0, 3)).toEqual(['<unk>', '<s>', '</s>']);
    expect(vocab.tokens[3 + 0x41]).toBe('<0x41>');
    const file = path.join(dir, 'tiny-q4_k.gguf');
    makeModel({ geometry: GEOMETRIES.tiny, target: 'Q4_K', out: file, threads: 2 });
    const f = readGGUF(file);
    expect(f.tensorsByName.get('blk.0.attn_q.weight')?.type).toBe(GGMLType.Q4_K);
    expect(f.tensorsByName.get('output.weight')?.type).toBe(GGMLType.Q6_K);
    expect(f.tensorsByName.get('blk.1.ffn_norm.weight')?.type).toBe(GGMLType.F32);
    expect(f.metadata.get('general.file_type')).toBe(LlamaFileType.MOSTLY_Q4_K_S);
    const model = TransformerModel.load(file);
    const ctx = model.createContext({ contextSize: 32, batchSize: 8, threads: 2 });
    try {
      [1, 500, 9000, 31999].forEach((t, i) => (ctx.native.tokens[i] = t));
      ctx.forward(4, 0);
      const l = ctx.logits(3);
      expect(l).toHaveLength(32000);
      expect(l.every((v) => Number.isFinite(v))).toBe(true);
    } finally {
      ctx.dispose();
      model.dispose();
    }
  });
});
