/**
 * Hugging Face Qwen2ForCausalLM and Qwen3ForCausalLM folders (test/fixtures/hf/qwen2, qwen3: random weights, expected
 * outputs from the float64 torch forward pass of make_fixtures.py, written from transformers' modeling_qwen2.py /
 * modeling_qwen3.py) on every kernel variant this CPU runs; their tokenizer (Qwen2's Split regex + ByteLevel, no BOS);
 * the native loader's checks of their own tensors; and early exit — lens, batches with compaction, classification —
 * unchanged on them.
 *
 * Tolerances as hf_models.test.ts: max |Δlogit| over every prompt position ≤ 1e-4, lens p1/p2/entropy after every
 * layer ≤ 1e-5, greedy continuations equal (smallest top-1/top-2 gap along them: 0.065 / 1.5).
 */
import * as fs from 'fs';
import * as path from 'path';
import { loadModel } from '../../lib';
import { native } from '../../lib/bindings/native';
import { TransformerModel } from '../../lib/model/transformer';
import { runCli } from '../page/tasks_fixture';
import { tmpDir } from '../helpers';
import { checkModel } from './hf_check';
import { expected, QWEN2, QWEN3, QWEN_FIXTURES } from './hf_fixtures';

const observed: Record<string, unknown> = {};
afterAll(() => console.log(`observed vs the float64 reference: ${JSON.stringify(observed)}`));

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return (e as { code: string }).code;
  }
  return 'none';
}

describe.each(Object.entries(QWEN_FIXTURES))('%s folder', (name, dir) => {
  const exp = expected(dir);

  test.each(native().systemInfo().available)('logits, greedy continuation and logit lens against the reference [%s kernels]', (kernels) => {
    const model = TransformerModel.load(dir, { kernels });
    try {
      expect(model.config.architecture).toBe(name);
      expect(model.native.info()).toMatchObject({ architecture: name, tiedOutput: name === 'qwen3' });
      for (const threads of [1, 2]) {
        const c = checkModel(model, exp, threads);
        observed[`${name} (${kernels}, threads ${threads})`] = { maxLogitDiff: c.maxLogitDiff, maxLensDiff: c.maxLensDiff };
        expect(c.maxLogitDiff).toBeLessThanOrEqual(1e-4);
        expect(c.greedy).toEqual(exp.greedy);
        expect(c.maxLensDiff).toBeLessThanOrEqual(1e-5);
        expect(c.lensTop1Agree).toBe(true);
      }
    } finally {
      model.dispose();
    }
  });

  test("tokenizer: Qwen2's pre-tokenizer, special tokens, no BOS", () => {
    const model = TransformerModel.load(dir);
    try {
      const tok = model.tokenizer;
      expect(tok.model).toBe('gpt2');
      expect(tok.addBos).toBe(false);
      for (const t of exp.tokenize) {
        expect(tok.encode(t.text, { parseSpecial: true })).toEqual(t.ids);
        expect(tok.encode(t.text, { addSpecial: false, parseSpecial: true })).toEqual(t.idsNoSpecial);
        if (!t.text.includes('<|')) expect(tok.encode(t.text)).toEqual(t.ids);
      }
      expect(tok.encode('Once upon a time the little cat')).toEqual(exp.prompt);
      expect(tok.encode('')).toEqual([]);
    } finally {
      model.dispose();
    }
  });
});

test('the native loader checks the Qwen tensors itself (biases, Q/K norms)', () => {
  for (const [dir, name, shape] of [
    [QWEN2, 'blk.1.attn_k.bias', [16]],
    [QWEN3, 'blk.0.attn_q_norm.weight', [16]],
  ] as const) {
    const model = TransformerModel.load(dir);
    const hf = model.hf!;
    const cfg = model.config;
    model.dispose();
    const specs = () => hf.tensors.map((t) => ({ name: t.name, type: t.type, dims: [...t.dims], offset: t.offset, file: t.file }));
    const make = (tensors: ReturnType<typeof specs>) => () => new (native().Model)(hf.files, cfg, tensors, {}).dispose();
    expect(codeOf(make(specs()))).toBe('none');
    expect(codeOf(make(specs().filter((t) => t.name !== name)))).toBe('MISSING_TENSOR');
    expect(codeOf(make(specs().map((t) => (t.name === name ? { ...t, dims: [...shape] } : t))))).toBe('SHAPE_MISMATCH');
  }
});

// A p1 threshold per model at which some rows exit after layer 1 and others run both layers.
describe.each([
  ['qwen2', QWEN2, 0.1],
  ['qwen3', QWEN3, 0.9999],
] as const)('early exit on %s through the API', (_name, dir, threshold) => {
  test('exit layers, classification, batches with compaction and K/V propagation', async () => {
    const model = await loadModel(dir, { threads: 1 });
    try {
      const exp = expected(dir);
      const session = await model.createSession({ kvFill: 'propagate' });
      const full = await session.generate(exp.prompt, { temperature: 0, maxTokens: 8, stopAtEos: false });
      expect(full.tokens).toEqual(exp.greedy.slice(0, 8));
      // p1 >= 0 always holds: every token stops after the first checked layer (minLayer 1 -> after layer 1 of 2)
      const early = await session.generate(exp.prompt, { temperature: 0, maxTokens: 8, stopAtEos: false, exit: { kind: 'threshold', feature: 'p1', value: 0, minLayer: 1 } });
      expect(early.exitLayers).toHaveLength(8);
      expect(early.exitLayers!.every((l) => l === 1)).toBe(true);
      // the lens after layer 1 is the reference lens of layer 0 (0-based) for the first token
      expect(early.tokens[0]).toBe(exp.lens[0].top1);
      const never = await session.generate(exp.prompt, { temperature: 0, maxTokens: 8, stopAtEos: false, exit: { kind: 'threshold', feature: 'p1', value: 2 } });
      expect(never.tokens).toEqual(full.tokens);
      await session.dispose();

      const prompts = ['Once upon a time', 'The dog', 'Hello world!', 'The cat was happy', 'One day the dog'];
      const exit = { kind: 'threshold', feature: 'p1', value: threshold, minLayer: 1 } as const;
      const batched = await model.generateBatch(prompts, { temperature: 0, maxTokens: 6, batchSize: 3, stopAtEos: false, exit, kvFill: 'propagate' });
      const uncompacted = await model.generateBatch(prompts, { temperature: 0, maxTokens: 6, batchSize: 3, stopAtEos: false, exit, kvFill: 'propagate', compaction: false });
      expect(batched.results.map((r) => r.tokens)).toEqual(uncompacted.results.map((r) => r.tokens));
      expect(batched.results.map((r) => r.exitLayers)).toEqual(uncompacted.results.map((r) => r.exitLayers));
      // Each result equals the same prompt run alone in a fresh session (same exit and kvFill).
      for (const [i, p] of prompts.entries()) {
        const s = await model.createSession({ kvFill: 'propagate' });
        const alone = await s.generate(p, { temperature: 0, maxTokens: 6, stopAtEos: false, exit });
        expect(batched.results[i].tokens).toEqual(alone.tokens);
        expect(batched.results[i].exitLayers).toEqual(alone.exitLayers);
        await s.dispose();
      }
      const exits = batched.results.flatMap((r) => r.exitLayers ?? []);
      observed[`${_name} batch exit layers`] = exits;
      expect(exits.some((l) => l === 1) && exits.some((l) => l === 2)).toBe(true);
      const cls = await model.classifyBatch(prompts, [' cat', ' dog'], { exit, batchSize: 2 });
      expect(cls.results).toHaveLength(prompts.length);
      for (const r of cls.results) expect(r.probs.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    } finally {
      await model.dispose();
    }
  });
});

test('exit files on qwen3: train-exit, then a batch with the file; a file of another model is refused', async () => {
  const dir = tmpDir('adainfer-qwen-exit-');
  try {
    const text = path.join(dir, 'stories.txt');
    fs.writeFileSync(text, 'Once upon a time there was a little cat. The cat liked to play in the garden with the dog.\n<|endoftext|>\n'.repeat(4));
    const exitFile = path.join(dir, 'exit.json');
    const trained = await runCli(['train-exit', '-m', QWEN3, '--data', text, '--limit', '60', '--classifier', 'svm', '--target', '0.9', '--threads', '1', '-o', exitFile]);
    expect(trained.code).toBe(0);
    const file = JSON.parse(fs.readFileSync(exitFile, 'utf8'));
    expect(file.model).toMatchObject({ name: 'qwen3', nLayer: 2 });
    expect(file.policy.kind).toBe('svm');

    const input = path.join(dir, 'in.jsonl');
    fs.writeFileSync(input, ['Once upon a time', 'The dog', 'Hello world!', 'The cat was happy'].map((p, i) => JSON.stringify({ id: `p${i}`, prompt: p })).join('\n') + '\n');
    const out = path.join(dir, 'out.jsonl');
    const r = await runCli(['batch', '-m', QWEN3, '--in', input, '--out', out, '--exit', exitFile, '--max-tokens', '6', '--batch-size', '2', '--temp', '0', '--threads', '1']);
    expect(r.code).toBe(0);
    const recs = fs.readFileSync(out, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { tokens: number[]; exitLayers: number[] });
    expect(recs).toHaveLength(4);
    for (const x of recs) {
      expect(x.tokens).toHaveLength(6);
      expect(x.exitLayers).toHaveLength(6);
      expect(x.exitLayers.every((l) => l === 1 || l === 2)).toBe(true);
    }

    const bad = await runCli(['batch', '-m', QWEN2, '--in', input, '--out', path.join(dir, 'bad.jsonl'), '--exit', exitFile, '--threads', '1']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/EXIT_FILE/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
