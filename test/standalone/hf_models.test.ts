/**
 * Hugging Face folders run in place (safetensors mapped zero-copy, shards included): the random-weight OPT (pre-LN;
 * OPT-350m-like post-LN with project_in/out and F16 weights) and Llama (GQA, untied head, two shards, NEOX RoPE on
 * the unpermuted Q/K) against the float64 torch reference of make_fixtures.py, then through the API with early
 * exit, batches and KV fill — the same layer loop and exit machinery as GGUF llama models.
 *
 * Tolerances (max |logit| 24 / 12 / 6 for opt-pre / opt-post / llama): max |Δlogit| over every prompt position
 * ≤ 1e-4 (F32 and F16 weights alike: the reference uses the stored F16 values and the kernels keep F32 activations;
 * observed 9.4e-6 / 5.2e-6 / 1.9e-6), lens p1/p2/entropy after every layer ≤ 1e-5 (observed ≤ 3e-7), greedy
 * continuations equal (the fixtures' smallest top-1/top-2 gap along them is ≥ 0.05).
 */
import * as fs from 'fs';
import * as path from 'path';
import { AdaInferError, loadModel } from '../../lib';
import { native } from '../../lib/bindings/native';
import { convertHfToGGUF } from '../../lib/hf/convert';
import { TransformerModel } from '../../lib/model/transformer';
import { tmpDir } from '../helpers';
import { checkModel } from './hf_check';
import { ALL_FIXTURES, LLAMA, OPT_POST, OPT_PRE, StEntry, copyFixture, expected, maxAbsDiff, readRawSafetensors, writeRawSafetensors } from './hf_fixtures';

const observed: Record<string, unknown> = {};
afterAll(() => {
  // The numbers the tolerances are set against, for the record (jest prints console output of a passing suite).
  console.log(`observed vs the float64 reference: ${JSON.stringify(observed)}`);
});

describe('Hugging Face folders against the reference', () => {
  for (const [name, dir] of Object.entries(ALL_FIXTURES)) {
    test(`${name}: logits, greedy continuation and logit lens after every layer`, () => {
      const model = TransformerModel.load(dir);
      try {
        expect(model.config.architecture).toBe(name === 'llama' ? 'llama' : 'opt');
        expect(model.gguf).toBeUndefined();
        const exp = expected(dir);
        for (const threads of [1, 2]) {
          const c = checkModel(model, exp, threads);
          observed[`${name} (threads ${threads})`] = { maxLogitDiff: c.maxLogitDiff, maxLensDiff: c.maxLensDiff };
          expect(c.maxLogitDiff).toBeLessThanOrEqual(1e-4);
          expect(c.greedy).toEqual(exp.greedy);
          expect(c.maxLensDiff).toBeLessThanOrEqual(1e-5);
          expect(c.lensTop1Agree).toBe(true);
        }
      } finally {
        model.dispose();
      }
    });
  }

  test('every kernel variant this CPU runs gives the reference logits (OPT post-LN, F16)', () => {
    const exp = expected(OPT_POST);
    for (const kernels of native().systemInfo().available) {
      const model = TransformerModel.load(OPT_POST, { kernels });
      try {
        const c = checkModel(model, exp);
        observed[`opt-post (${kernels})`] = c.maxLogitDiff;
        expect(c.maxLogitDiff).toBeLessThanOrEqual(1e-4);
        expect(c.greedy).toEqual(exp.greedy);
      } finally {
        model.dispose();
      }
    }
  });

  test('the Llama folder and its converted GGUF give the same logits (NEOX RoPE in place = permuted rows)', () => {
    const dir = tmpDir('adainfer-hfgguf-');
    try {
      const gguf = path.join(dir, 'llama.gguf');
      convertHfToGGUF(LLAMA, gguf, { type: 'F32' });
      const a = TransformerModel.load(LLAMA);
      const b = TransformerModel.load(gguf);
      const exp = expected(LLAMA);
      const n = exp.prompt.length;
      const ca = a.createContext({ contextSize: 32, batchSize: 32, threads: 1 });
      const cb = b.createContext({ contextSize: 32, batchSize: 32, threads: 1 });
      try {
        exp.prompt.forEach((t, i) => {
          ca.native.tokens[i] = t;
          cb.native.tokens[i] = t;
        });
        ca.forward(n, 0);
        cb.forward(n, 0);
        let worst = 0;
        for (let i = 0; i < n; i++) worst = Math.max(worst, maxAbsDiff(ca.logits(i), Float32Array.from(cb.logits(i))));
        observed['llama folder vs converted GGUF'] = worst;
        expect(worst).toBeLessThanOrEqual(1e-4);
        expect(a.tokenizer.encode('Once upon a time')).toEqual(b.tokenizer.encode('Once upon a time'));
      } finally {
        ca.dispose();
        cb.dispose();
        a.dispose();
        b.dispose();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('BF16 safetensors: opt-pre with every tensor rounded to bfloat16 stays close to the reference', () => {
    const dir = tmpDir('adainfer-bf16-');
    try {
      const out = copyFixture(OPT_PRE, dir, 'opt-pre-bf16');
      const file = path.join(out, 'model.safetensors');
      const { header, data } = readRawSafetensors(file);
      const parts: Buffer[] = [];
      let offset = 0;
      const next: Record<string, unknown> = { __metadata__: header.__metadata__ };
      for (const [name, e] of Object.entries(header)) {
        if (name === '__metadata__') continue;
        const t = e as StEntry;
        const f32 = new Float32Array(data.buffer.slice(data.byteOffset + t.data_offsets[0], data.byteOffset + t.data_offsets[1]));
        const u32 = new Uint32Array(f32.buffer);
        const bf = Buffer.alloc(f32.length * 2);
        // round to nearest even (no NaNs here)
        for (let i = 0; i < u32.length; i++) bf.writeUInt16LE((u32[i] + 0x7fff + ((u32[i] >>> 16) & 1)) >>> 16, 2 * i);
        next[name] = { dtype: 'BF16', shape: t.shape, data_offsets: [offset, offset + bf.length] };
        parts.push(bf);
        offset += bf.length;
      }
      writeRawSafetensors(file, next, Buffer.concat(parts));
      const model = TransformerModel.load(out);
      try {
        expect(model.hf!.tensors.every((t) => t.type === 30)).toBe(true);
        const exp = expected(OPT_PRE);
        const c = checkModel(model, exp);
        observed['opt-pre as BF16 (weights rounded)'] = c.maxLogitDiff;
        // weights rounded to 8 bits of mantissa: logits (max 24) move by a few hundredths
        expect(c.maxLogitDiff).toBeLessThanOrEqual(0.5);
      } finally {
        model.dispose();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('the native loader checks OPT tensors itself (missing, shape, file bounds, type)', () => {
    const model = TransformerModel.load(OPT_PRE);
    const hf = model.hf!;
    model.dispose();
    const specs = () => hf.tensors.map((t) => ({ name: t.name, type: t.type, dims: [...t.dims], offset: t.offset, file: t.file }));
    const cfg = model.config;
    const make = (tensors: ReturnType<typeof specs>, hp = cfg) => () => new (native().Model)(hf.files, hp, tensors, {});
    const codeOf = (fn: () => unknown): string => {
      try {
        fn();
      } catch (e) {
        return (e as { code: string }).code;
      }
      return 'none';
    };
    expect(codeOf(() => make(specs())().dispose())).toBe('none');
    expect(codeOf(make(specs().filter((t) => t.name !== 'blk.1.ffn_up.bias')))).toBe('MISSING_TENSOR');
    expect(codeOf(make(specs().map((t) => (t.name === 'blk.0.attn_q.weight' ? { ...t, dims: [64, 32] } : t))))).toBe('SHAPE_MISMATCH');
    expect(codeOf(make(specs().map((t) => (t.name === 'position_embd.weight' ? { ...t, offset: 1 << 30 } : t))))).toBe('TENSOR_OUT_OF_BOUNDS');
    expect(codeOf(make(specs().map((t) => (t.name === 'token_embd.weight' ? { ...t, file: 3 } : t))))).toBe('TENSOR_OUT_OF_BOUNDS');
    expect(codeOf(make(specs().map((t) => (t.name === 'blk.0.attn_k.weight' ? { ...t, type: 24 } : t))))).toBe('UNSUPPORTED_TENSOR_TYPE');
    expect(codeOf(make(specs(), { ...cfg, opt: undefined }))).toBe('INVALID_OPTION');
    expect(codeOf(make(specs(), { ...cfg, opt: { ...(cfg.opt as object), posOffset: 1000 } }))).toBe('SHAPE_MISMATCH');
    // OPT needs the CPU blocks
    expect(codeOf(() => new (native().Model)(hf.files, cfg, specs(), { backend: 'cuda' }))).toBe('BACKEND_UNAVAILABLE');
  });

  test('a context longer than the learned positions of an OPT model is refused', () => {
    const model = TransformerModel.load(OPT_PRE);
    try {
      expect(() => model.createContext({ contextSize: 65, batchSize: 8, threads: 1 })).toThrow(/exceeds the 64 positions/);
      model.createContext({ contextSize: 64, batchSize: 8, threads: 1 }).dispose();
    } finally {
      model.dispose();
    }
  });
});

describe('Hugging Face folders through the API', () => {
  test('OPT: info, tokenize with </s> as BOS, greedy generation from text, cuda refused, auto on the CPU', async () => {
    const model = await loadModel(OPT_PRE, { threads: 1 });
    try {
      expect(model.info).toMatchObject({ architecture: 'opt', nLayer: 3, nEmbd: 64, nVocab: 328, contextLength: 64, backend: 'cpu', bosId: 2, eosId: 2 });
      expect(model.info.fileType).toBeUndefined();
      expect(model.info.fingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);
      const exp = expected(OPT_PRE);
      expect(await model.tokenize('Once upon a time the little cat')).toEqual(exp.prompt);
      const session = await model.createSession();
      expect(session.contextSize).toBe(64);
      const r = await session.generate('Once upon a time the little cat', { temperature: 0, maxTokens: exp.greedy.length, stopAtEos: false });
      expect(r.tokens).toEqual(exp.greedy);
      expect(r.text).toBe(await model.detokenize(exp.greedy));
      await session.dispose();
    } finally {
      await model.dispose();
    }
    await expect(loadModel(OPT_POST, { backend: 'cuda' })).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
  });

  test('early exit on OPT: exitLayers, classification, batches with compaction and KV propagation', async () => {
    const model = await loadModel(OPT_POST, { threads: 1 });
    try {
      const exp = expected(OPT_POST);
      const prompt = exp.prompt;
      const session = await model.createSession({ kvFill: 'propagate' });
      const full = await session.generate(prompt, { temperature: 0, maxTokens: 8, stopAtEos: false });
      expect(full.tokens).toEqual(exp.greedy.slice(0, 8));
      // p1 >= 0 always holds: every token stops after the first checked layer (minLayer 1 -> after layer 1 of 2)
      const early = await session.generate(prompt, { temperature: 0, maxTokens: 8, stopAtEos: false, exit: { kind: 'threshold', feature: 'p1', value: 0, minLayer: 1 } });
      expect(early.exitLayers).toHaveLength(8);
      expect(early.exitLayers!.every((l) => l === 1)).toBe(true);
      // the lens after layer 1 is the reference lens of layer 0 (0-based) for the first token
      expect(early.tokens[0]).toBe(exp.lens[0].top1);
      const never = await session.generate(prompt, { temperature: 0, maxTokens: 8, stopAtEos: false, exit: { kind: 'threshold', feature: 'p1', value: 2 } });
      expect(never.tokens).toEqual(full.tokens);
      const c = await session.classify(prompt, [' cat', ' dog'], { exit: { kind: 'threshold', feature: 'gap', value: 0, minLayer: 1 } });
      expect(c.exitLayer).toBe(1);
      expect(c.probs.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
      await session.dispose();

      const prompts = ['Once upon a time', 'The dog', 'Hello world!', 'The cat was happy'];
      const alone = await model.generateBatch(prompts, { temperature: 0, maxTokens: 6, batchSize: 4, stopAtEos: false });
      const exit = { kind: 'threshold', feature: 'p1', value: 0.6, minLayer: 1 } as const;
      const batched = await model.generateBatch(prompts, { temperature: 0, maxTokens: 6, batchSize: 4, stopAtEos: false, exit, kvFill: 'propagate' });
      const uncompacted = await model.generateBatch(prompts, { temperature: 0, maxTokens: 6, batchSize: 4, stopAtEos: false, exit, kvFill: 'propagate', compaction: false });
      expect(batched.results.map((r) => r.tokens)).toEqual(uncompacted.results.map((r) => r.tokens));
      expect(batched.results.map((r) => r.exitLayers)).toEqual(uncompacted.results.map((r) => r.exitLayers));
      for (const r of alone.results) expect(r.tokens).toHaveLength(6);
      const cls = await model.classifyBatch(prompts, [' cat', ' dog'], { exit, batchSize: 2 });
      expect(cls.results).toHaveLength(4);
    } finally {
      await model.dispose();
    }
  });

  test('Llama folder (sharded): generation equals the reference greedy continuation', async () => {
    const model = await loadModel(LLAMA, { threads: 2 });
    try {
      expect(model.info).toMatchObject({ architecture: 'llama', nLayer: 2, nKvHead: 2, nVocab: 320 });
      const exp = expected(LLAMA);
      const session = await model.createSession({ contextSize: 64 });
      const r = await session.generate(exp.prompt, { temperature: 0, maxTokens: exp.greedy.length, stopAtEos: false });
      expect(r.tokens).toEqual(exp.greedy);
      await session.dispose();
    } finally {
      await model.dispose();
    }
  });

  test('bad folders through loadModel are typed errors', async () => {
    const dir = tmpDir('adainfer-hfbad-');
    try {
      fs.mkdirSync(path.join(dir, 'empty'));
      await expect(loadModel(path.join(dir, 'empty'))).rejects.toMatchObject({ code: 'FILE_NOT_FOUND', message: expect.stringMatching(/config\.json/) });
      fs.mkdirSync(path.join(dir, 'neox'));
      fs.writeFileSync(path.join(dir, 'neox', 'config.json'), JSON.stringify({ model_type: 'gpt_neox' }));
      const err = await loadModel(path.join(dir, 'neox')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AdaInferError);
      expect(err).toMatchObject({ code: 'UNSUPPORTED_ARCHITECTURE', message: expect.stringMatching(/gpt_neox/) });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
