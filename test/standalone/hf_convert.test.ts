/**
 * `adainfer convert`: the Llama fixture (GQA, untied head, two shards) written as GGUF and run by the GGUF
 * loader gives the reference's logits (float64 torch forward of make_fixtures.py), so the Q/K row permutation,
 * the tensor names and the llama.* keys are right; the tokenizer keys reproduce tokenizer.json's ids.
 *
 * Tolerances (max |Δlogit| over all 14 positions x 320 logits; logits are O(10)):
 *   F32  1e-3   (observed ~2e-6: the f32 kernels vs float64)
 *   F16  2e-2   (observed ~5e-3: weights rounded to half)
 *   Q8_0 only the file's structure and top-1 agreement on most positions (quantization error).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { GGMLType, readGGUF } from '../../lib/gguf';
import { convertHfToGGUF, permuteRows, preTokenizerName } from '../../lib/hf/convert';
import { readHfFolder } from '../../lib/hf/folder';
import { TransformerModel } from '../../lib/model/transformer';
import { argmax } from '../../lib/engine/sampling';
import { createTokenizer } from '../../lib/tokenizer';
import { tokenizerMetadataFromGGUF } from '../../lib/model/gguf_tokenizer';
import { repoRoot, tmpDir } from '../helpers';
import { checkModel } from './hf_check';
import { LLAMA, OPT_PRE, expected } from './hf_fixtures';

const CLI = path.join(repoRoot(), 'dist', 'lib', 'cli', 'main.js');

describe('convert (Hugging Face Llama folder -> GGUF)', () => {
  const dir = tmpDir('adainfer-convert-');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const exp = expected(LLAMA);

  test('permuteRows: rotate-half rows to adjacent pairs, head by head (llama.cpp TransformerModel.permute)', () => {
    // 2 heads of 4 rows, one byte per row: HF row order per head is [x0, x1, y0, y1] (pairs (i, i + 2));
    // GGUF wants [x0, y0, x1, y1].
    const src = Uint8Array.from([0, 1, 2, 3, 10, 11, 12, 13]);
    expect([...permuteRows(src, 1, 8, 4)]).toEqual([0, 2, 1, 3, 10, 12, 11, 13]);
    const wide = Uint8Array.from([0, 0, 1, 1, 2, 2, 3, 3]);
    expect([...permuteRows(wide, 2, 4, 4)]).toEqual([0, 0, 2, 2, 1, 1, 3, 3]);
  });

  test('F32: the same logits, greedy continuation and lens as the reference', () => {
    const out = path.join(dir, 'llama-f32.gguf');
    const r = convertHfToGGUF(LLAMA, out, { type: 'F32' });
    expect(r.plans.every((p) => p.to === GGMLType.F32)).toBe(true);
    const model = TransformerModel.load(out);
    try {
      const c = checkModel(model, exp);
      expect(c.maxLogitDiff).toBeLessThanOrEqual(1e-3);
      expect(c.greedy).toEqual(exp.greedy);
      expect(c.maxLensDiff).toBeLessThanOrEqual(1e-4);
      expect(c.lensTop1Agree).toBe(true);
    } finally {
      model.dispose();
    }
  });

  test('the GGUF has llama.cpp names, keys and tokenizer', () => {
    const out = path.join(dir, 'llama-f16.gguf');
    convertHfToGGUF(LLAMA, out);
    const g = readGGUF(out);
    const md = g.metadata;
    expect(md.get('general.architecture')).toBe('llama');
    expect(md.get('general.file_type')).toBe(1); // MOSTLY_F16
    expect(md.get('llama.block_count')).toBe(2);
    expect(md.get('llama.embedding_length')).toBe(64);
    expect(md.get('llama.attention.head_count')).toBe(4);
    expect(md.get('llama.attention.head_count_kv')).toBe(2);
    expect(md.get('llama.feed_forward_length')).toBe(160);
    expect(md.get('llama.rope.dimension_count')).toBe(16);
    expect(md.get('llama.context_length')).toBe(128);
    expect(md.get('llama.rope.freq_base')).toBe(10000);
    expect(md.get('tokenizer.ggml.model')).toBe('gpt2');
    expect(md.get('tokenizer.ggml.pre')).toBe('gpt-2');
    expect(md.get('tokenizer.ggml.bos_token_id')).toBe(1);
    expect(md.get('tokenizer.ggml.add_bos_token')).toBe(true);
    expect((md.get('tokenizer.ggml.tokens') as string[]).length).toBe(320);
    const names = g.tensors.map((t) => t.name);
    expect(names).toContain('blk.1.attn_q.weight');
    expect(names).toContain('output.weight');
    expect(g.tensorsByName.get('blk.0.attn_k.weight')!.dims).toEqual([64, 32]);
    expect(g.tensorsByName.get('blk.0.attn_k.weight')!.type).toBe(GGMLType.F16);
    expect(g.tensorsByName.get('blk.0.attn_norm.weight')!.type).toBe(GGMLType.F32);

    // The GGUF tokenizer (llama.cpp's algorithm, lib/tokenizer/bpe.ts) gives tokenizer.json's ids.
    const ggufTok = createTokenizer(tokenizerMetadataFromGGUF(g));
    const hfTok = readHfFolder(LLAMA).tokenizer;
    for (const t of exp.tokenize) {
      expect(ggufTok.encode(t.text, { parseSpecial: true })).toEqual(t.ids);
      expect(ggufTok.encode(t.text)).toEqual(hfTok.encode(t.text));
    }

    const model = TransformerModel.load(out);
    try {
      const c = checkModel(model, exp);
      expect(c.maxLogitDiff).toBeLessThanOrEqual(2e-2);
      expect(c.greedy).toEqual(exp.greedy);
    } finally {
      model.dispose();
    }
  });

  test('Q8_0 through the project quantizer: types as adainfer quantize plans them', () => {
    const out = path.join(dir, 'llama-q8.gguf');
    convertHfToGGUF(LLAMA, out, { type: 'Q8_0' });
    const g = readGGUF(out);
    expect(g.metadata.get('general.file_type')).toBe(7); // MOSTLY_Q8_0
    expect(g.metadata.get('general.quantization_version')).toBe(2);
    expect(g.tensorsByName.get('blk.0.ffn_up.weight')!.type).toBe(GGMLType.Q8_0);
    expect(g.tensorsByName.get('output_norm.weight')!.type).toBe(GGMLType.F32);
    const model = TransformerModel.load(out);
    const ctx = model.createContext({ contextSize: 32, batchSize: 32, threads: 1 });
    try {
      exp.prompt.forEach((t, i) => (ctx.native.tokens[i] = t));
      ctx.forward(exp.prompt.length, 0);
      let agree = 0;
      for (let i = 0; i < exp.prompt.length; i++) if (argmax(ctx.logits(i)) === argmax(exp.logits[i])) agree++;
      expect(agree).toBeGreaterThanOrEqual(exp.prompt.length - 3);
    } finally {
      ctx.dispose();
      model.dispose();
    }
  });

  test('pre-tokenizer names', () => {
    expect(preTokenizerName({ type: 'ByteLevel', add_prefix_space: false, use_regex: true })).toBe('gpt-2');
    expect(preTokenizerName({ type: 'ByteLevel', add_prefix_space: true, use_regex: true })).toBeUndefined();
    expect(preTokenizerName({ type: 'Metaspace' })).toBeUndefined();
  });

  test('CLI: convert --type f32 --json, then an OPT folder and a bad type', () => {
    const out = path.join(dir, 'cli.gguf');
    const ok = spawnSync(process.execPath, [CLI, 'convert', LLAMA, out, '--type', 'f32', '--json', '-q'], { encoding: 'utf8' });
    expect(ok.status).toBe(0);
    const summary = JSON.parse(ok.stdout);
    expect(summary.type).toBe('F32');
    expect(summary.tensors).toBe(21);
    expect(fs.existsSync(out)).toBe(true);
    const opt = spawnSync(process.execPath, [CLI, 'convert', OPT_PRE, path.join(dir, 'opt.gguf')], { encoding: 'utf8' });
    expect(opt.status).toBe(1);
    expect(opt.stderr).toMatch(/UNSUPPORTED_ARCHITECTURE.*model_type 'opt'/);
    const bad = spawnSync(process.execPath, [CLI, 'convert', LLAMA, path.join(dir, 'x.gguf'), '--type', 'q3'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/INVALID_OPTION/);
  });
});
