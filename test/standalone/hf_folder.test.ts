/**
 * Hugging Face model folders: config.json parsing (llama, opt), the tensor mapping, and one defect at a time in
 * a copy of a fixture folder — each a typed error naming the file and the problem.
 */
import * as fs from 'fs';
import * as path from 'path';
import { AdaInferError } from '../../lib/errors';
import { GGMLType } from '../../lib/gguf/types';
import { parseHfConfig, readHfConfig } from '../../lib/hf/config';
import { isModelFolder, readHfFolder } from '../../lib/hf/folder';
import { tmpDir } from '../helpers';
import { LLAMA, OPT_POST, OPT_PRE, copyFixture, editJson, readRawSafetensors, writeRawSafetensors } from './hf_fixtures';

function codeOf(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (e) {
    if (e instanceof AdaInferError) return { code: e.code, message: e.message };
    throw e;
  }
  throw new Error('no error');
}

describe('Hugging Face model folders', () => {
  const dir = tmpDir('adainfer-hf-');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('llama config: GQA, head_dim, untied head, defaults', () => {
    const c = readHfConfig(LLAMA);
    expect(c.modelType).toBe('llama');
    if (c.modelType !== 'llama') return;
    expect(c).toMatchObject({ nLayer: 2, nEmbd: 64, nHead: 4, nKvHead: 2, headDim: 16, nRot: 16, nFf: 160, nVocab: 320, contextLength: 128, rmsEps: 1e-5, ropeBase: 10000, tiedOutput: false });
    const d = parseHfConfig({ model_type: 'llama', hidden_size: 8, num_attention_heads: 2, num_hidden_layers: 1, intermediate_size: 4, vocab_size: 5 }, 'x', 'n');
    expect(d).toMatchObject({ nKvHead: 2, headDim: 4, rmsEps: 1e-6, ropeBase: 10000, contextLength: 2048, tiedOutput: false });
  });

  test('opt configs: pre-LN with the final layer norm, post-LN with project_in/out', () => {
    const pre = readHfConfig(OPT_PRE);
    const post = readHfConfig(OPT_POST);
    expect(pre).toMatchObject({ modelType: 'opt', preLayerNorm: true, finalLayerNorm: true, embedDim: 64, nEmbd: 64, nFf: 128, nLayer: 3, nVocab: 328, positionOffset: 2, bias: true });
    expect(post).toMatchObject({ modelType: 'opt', preLayerNorm: false, finalLayerNorm: false, embedDim: 32, nEmbd: 64, nLayer: 2 });
  });

  test('tensor mapping: GGUF names, ggml dims, files and offsets of the shards', () => {
    const f = readHfFolder(LLAMA);
    expect(f.files).toHaveLength(2);
    const q = f.tensorsByName.get('blk.1.attn_q.weight')!;
    expect(q).toMatchObject({ hfName: 'model.layers.1.self_attn.q_proj.weight', type: GGMLType.F32, dims: [64, 64], file: 1, neoxRows: true });
    expect(f.tensorsByName.get('blk.0.attn_k.weight')!.dims).toEqual([64, 32]);
    expect(f.tensorsByName.get('blk.0.attn_v.weight')!.neoxRows).toBeUndefined();
    expect(f.tensorsByName.get('output.weight')!.hfName).toBe('lm_head.weight');
    expect(f.tensors).toHaveLength(2 + 9 * 2 + 1);
    const post = readHfFolder(OPT_POST);
    expect(post.tensorsByName.get('token_embd.weight')).toMatchObject({ hfName: 'decoder.embed_tokens.weight', type: GGMLType.F16, dims: [32, 320] });
    expect(post.tensorsByName.get('position_embd.weight')!.dims).toEqual([64, 66]);
    expect(post.tensorsByName.get('project_in.weight')!.dims).toEqual([32, 64]);
    expect(post.tensorsByName.has('output_norm.weight')).toBe(false);
    expect(post.tensorsByName.has('output.weight')).toBe(false); // lm_head.weight is in the file, tied: ignored
    const pre = readHfFolder(OPT_PRE);
    expect(pre.tensorsByName.get('blk.2.ffn_up.bias')).toMatchObject({ hfName: 'model.decoder.layers.2.fc1.bias', dims: [128] });
    expect(pre.tensorsByName.get('output_norm.bias')!.hfName).toBe('model.decoder.final_layer_norm.bias');
    expect(pre.tensorsByName.has('project_in.weight')).toBe(false);
    expect(isModelFolder(LLAMA)).toBe(true);
    expect(isModelFolder(path.join(LLAMA, 'config.json'))).toBe(false);
  });

  const cases: { name: string; from: string; edit: (d: string) => void; code: string; message: RegExp }[] = [
    { name: 'no config.json', from: OPT_PRE, edit: (d) => fs.rmSync(path.join(d, 'config.json')), code: 'FILE_NOT_FOUND', message: /config\.json.*has no config\.json/ },
    { name: 'config.json not JSON', from: OPT_PRE, edit: (d) => fs.writeFileSync(path.join(d, 'config.json'), '{"model_type": '), code: 'BAD_CONFIG', message: /not valid JSON/ },
    { name: 'unknown model_type', from: OPT_PRE, edit: (d) => editJson(path.join(d, 'config.json'), (j) => (j.model_type = 'gpt_neox')), code: 'UNSUPPORTED_ARCHITECTURE', message: /model_type 'gpt_neox' is not supported \(supported: llama, opt, qwen2, qwen3\)/ },
    { name: 'no model_type', from: LLAMA, edit: (d) => editJson(path.join(d, 'config.json'), (j) => delete j.model_type), code: 'BAD_CONFIG', message: /"model_type" is missing/ },
    { name: 'a required key missing', from: LLAMA, edit: (d) => editJson(path.join(d, 'config.json'), (j) => delete j.hidden_size), code: 'BAD_CONFIG', message: /"hidden_size" is missing/ },
    { name: 'a key of the wrong type', from: OPT_PRE, edit: (d) => editJson(path.join(d, 'config.json'), (j) => (j.num_hidden_layers = '3')), code: 'BAD_CONFIG', message: /"num_hidden_layers" must be an integer/ },
    { name: 'heads not dividing KV heads', from: LLAMA, edit: (d) => editJson(path.join(d, 'config.json'), (j) => (j.num_key_value_heads = 3)), code: 'BAD_CONFIG', message: /not a multiple of num_key_value_heads 3/ },
    { name: 'rope scaling', from: LLAMA, edit: (d) => editJson(path.join(d, 'config.json'), (j) => (j.rope_scaling = { type: 'linear', factor: 2 })), code: 'UNSUPPORTED_ARCHITECTURE', message: /rope_scaling/ },
    { name: 'an OPT activation other than ReLU', from: OPT_PRE, edit: (d) => editJson(path.join(d, 'config.json'), (j) => (j.activation_function = 'gelu')), code: 'UNSUPPORTED_ARCHITECTURE', message: /activation_function 'gelu'/ },
    { name: 'a shard missing', from: LLAMA, edit: (d) => fs.rmSync(path.join(d, 'model-00001-of-00002.safetensors')), code: 'MISSING_SHARD', message: /model-00001-of-00002\.safetensors/ },
    { name: 'no weights at all', from: OPT_PRE, edit: (d) => fs.rmSync(path.join(d, 'model.safetensors')), code: 'FILE_NOT_FOUND', message: /neither model\.safetensors/ },
    {
      name: 'a header longer than the file',
      from: OPT_PRE,
      edit: (d) => {
        const f = path.join(d, 'model.safetensors');
        const fd = fs.openSync(f, 'r+');
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(fs.statSync(f).size));
        fs.writeSync(fd, len, 0, 8, 0);
        fs.closeSync(fd);
      },
      code: 'BAD_SAFETENSORS',
      message: /header length \d+ is more than/,
    },
    {
      name: 'a truncated file',
      from: OPT_PRE,
      edit: (d) => {
        const f = path.join(d, 'model.safetensors');
        fs.truncateSync(f, fs.statSync(f).size - 100);
      },
      code: 'TENSOR_OUT_OF_BOUNDS',
      message: /extend past the end/,
    },
    {
      name: 'a dtype not supported',
      from: OPT_PRE,
      edit: (d) => retype(path.join(d, 'model.safetensors'), 'model.decoder.layers.0.fc1.weight', 'I32'),
      code: 'UNSUPPORTED_TENSOR_TYPE',
      message: /"model\.decoder\.layers\.0\.fc1\.weight" has dtype I32/,
    },
    { name: 'a shape that disagrees with config.json', from: OPT_POST, edit: (d) => editJson(path.join(d, 'config.json'), (j) => (j.ffn_dim = 96)), code: 'SHAPE_MISMATCH', message: /"decoder\.layers\.0\.fc1\.weight" has shape \[128, 64\], but config\.json .* needs \[96, 64\]/ },
    { name: 'vocab_size disagreeing with the embedding', from: LLAMA, edit: (d) => editJson(path.join(d, 'config.json'), (j) => (j.vocab_size = 400)), code: 'SHAPE_MISMATCH', message: /model\.embed_tokens\.weight" has shape \[320, 64\]/ },
    { name: 'a tensor missing', from: LLAMA, edit: (d) => editJson(path.join(d, 'config.json'), (j) => (j.num_hidden_layers = 3)), code: 'MISSING_TENSOR', message: /no tensor "model\.layers\.2\.input_layernorm\.weight"/ },
    { name: 'lm_head missing when untied', from: LLAMA, edit: (d) => dropTensor(d, 'lm_head.weight'), code: 'MISSING_TENSOR', message: /"lm_head\.weight"/ },
    { name: 'no tokenizer.json', from: LLAMA, edit: (d) => fs.rmSync(path.join(d, 'tokenizer.json')), code: 'FILE_NOT_FOUND', message: /tokenizer\.json/ },
    { name: 'a tokenizer larger than the model', from: OPT_POST, edit: (d) => editJson(path.join(d, 'config.json'), (j) => (j.vocab_size = 300)), code: 'SHAPE_MISMATCH', message: /tokenizer defines 320 tokens but .* is 300/ },
    { name: 'a broken tokenizer.json', from: LLAMA, edit: (d) => fs.writeFileSync(path.join(d, 'tokenizer.json'), '[]'), code: 'TOKENIZER', message: /not a JSON object/ },
  ];
  for (const c of cases) {
    test(`${c.name}: ${c.code}`, () => {
      const d = copyFixture(c.from, dir, c.name.replace(/\W+/g, '_'));
      c.edit(d);
      const e = codeOf(() => readHfFolder(d));
      expect(e.code).toBe(c.code);
      expect(e.message).toMatch(c.message);
    });
  }
});

/** Rewrites one tensor's dtype in the header (same byte size: F32 -> I32). */
function retype(file: string, name: string, dtype: string): void {
  const { header, data } = readRawSafetensors(file);
  (header[name] as { dtype: string }).dtype = dtype;
  writeRawSafetensors(file, header, data);
}

/** Removes a tensor from the sharded llama fixture (its shard's header and the index). */
function dropTensor(d: string, name: string): void {
  const indexFile = path.join(d, 'model.safetensors.index.json');
  const index = JSON.parse(fs.readFileSync(indexFile, 'utf8'));
  const shard = path.join(d, index.weight_map[name]);
  delete index.weight_map[name];
  fs.writeFileSync(indexFile, JSON.stringify(index));
  const { header, data } = readRawSafetensors(shard);
  delete header[name];
  writeRawSafetensors(shard, header, data);
}
