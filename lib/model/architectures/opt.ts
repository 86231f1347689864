/**
 * OPT (Meta's Open Pre-trained Transformers; Hugging Face model_type `opt`, no GGUF): learned positions, LayerNorm
 * (pre- or post-LN), biases, ReLU MLP, project_in/out, the head tied to the embedding. Defaults are transformers'
 * OPTConfig. Native half (its own blocks, CPU only): native/architectures/opt.cpp, native/blocks/opt_blocks.*.
 */
import { ConfigReader, HfConfigBase } from '../../hf/config_reader';
import type { SafetensorsCheckpoint } from '../../safetensors/reader';
import { ModelFileError } from '../../errors';
import type { TransformerConfig } from '../transformer';
import { Architecture, HfWantedTensor } from './architecture';

export interface HfOptConfig extends HfConfigBase {
  /** word_embed_proj_dim: the embedding's width (project_in / project_out map it to hidden_size). */
  embedDim: number;
  /** do_layer_norm_before: pre-LN (true: OPT-125m, 1.3b, ...) or post-LN (false: OPT-350m). */
  preLayerNorm: boolean;
  /** The decoder's final_layer_norm exists: do_layer_norm_before and not _remove_final_layer_norm. */
  finalLayerNorm: boolean;
  /** enable_bias: the attention and MLP linears have biases. */
  bias: boolean;
  /** nn.LayerNorm's epsilon. */
  lnEps: number;
  /** Row of embed_positions for position 0 (OPTLearnedPositionalEmbedding's offset). */
  positionOffset: number;
}

function read(c: ConfigReader, name: string): HfOptConfig {
  const nEmbd = c.int('hidden_size', 1);
  const nHead = c.int('num_attention_heads', 1);
  if (nEmbd % nHead !== 0) c.bad(`hidden_size ${nEmbd} is not a multiple of num_attention_heads ${nHead}`);
  const act = c.raw.activation_function ?? 'relu';
  if (act !== 'relu') c.unsupported(`activation_function '${String(act)}' is not supported (OPT blocks use ReLU)`);
  if (!c.bool('layer_norm_elementwise_affine', true)) c.unsupported('layer_norm_elementwise_affine false is not supported');
  const preLayerNorm = c.bool('do_layer_norm_before', true);
  if (!c.bool('tie_word_embeddings', true)) c.unsupported('an untied OPT LM head (tie_word_embeddings false) is not supported');
  return {
    modelType: 'opt',
    name,
    raw: c.raw,
    contextLength: c.int('max_position_embeddings', 1, 2048),
    nLayer: c.int('num_hidden_layers', 1),
    nEmbd,
    nHead,
    nKvHead: nHead,
    headDim: nEmbd / nHead,
    nFf: c.int('ffn_dim', 1),
    nVocab: c.int('vocab_size', 1),
    embedDim: c.int('word_embed_proj_dim', 1, nEmbd),
    preLayerNorm,
    finalLayerNorm: preLayerNorm && !c.bool('_remove_final_layer_norm', false),
    bias: c.bool('enable_bias', true),
    lnEps: 1e-5,
    positionOffset: 2,
  };
}

function config(c: HfOptConfig): TransformerConfig {
  return {
    name: c.name,
    architecture: 'opt',
    contextLength: c.contextLength,
    nLayer: c.nLayer,
    nEmbd: c.nEmbd,
    nHead: c.nHead,
    nKvHead: c.nKvHead,
    headDim: c.headDim,
    nFf: c.nFf,
    nVocab: c.nVocab,
    opt: {
      embedDim: c.embedDim,
      nPos: c.contextLength + c.positionOffset,
      posOffset: c.positionOffset,
      preLayerNorm: c.preLayerNorm,
      finalLayerNorm: c.finalLayerNorm,
      bias: c.bias,
      lnEps: c.lnEps,
    },
  };
}

/** "model.decoder." or "decoder." (some OPT checkpoints lack "model."). */
function prefix(ck: SafetensorsCheckpoint, dir: string): string {
  for (const p of ['model.decoder.', 'decoder.']) if (ck.tensors.has(p + 'embed_tokens.weight')) return p;
  throw new ModelFileError('MISSING_TENSOR', ck.indexPath ?? ck.files[0]?.path ?? dir, 'the checkpoint has no "model.decoder.embed_tokens.weight" (nor "decoder.embed_tokens.weight")');
}

/**
 * OPT's tensors under the runtime's names: token_embd, position_embd, project_in / project_out (when
 * word_embed_proj_dim != hidden_size), blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
 * ffn_up (fc1), ffn_down (fc2)} with .weight and .bias, output_norm (the decoder's final_layer_norm). The LM head is
 * tied to embed_tokens (a lm_head.weight in the checkpoint is ignored, as transformers ties it).
 */
function tensors(c: HfOptConfig, ck: SafetensorsCheckpoint, dir: string): HfWantedTensor[] {
  const p = prefix(ck, dir);
  const d = c.nEmbd;
  const out: HfWantedTensor[] = [
    { name: 'token_embd.weight', hfName: p + 'embed_tokens.weight', shape: [c.nVocab, c.embedDim] },
    { name: 'position_embd.weight', hfName: p + 'embed_positions.weight', shape: [c.contextLength + c.positionOffset, d] },
  ];
  if (c.embedDim !== d) {
    out.push(
      { name: 'project_in.weight', hfName: p + 'project_in.weight', shape: [d, c.embedDim] },
      { name: 'project_out.weight', hfName: p + 'project_out.weight', shape: [c.embedDim, d] },
    );
  }
  const linear = (name: string, hfName: string, nOut: number, nIn: number): HfWantedTensor[] => [
    { name: name + '.weight', hfName: hfName + '.weight', shape: [nOut, nIn] },
    ...(c.bias ? [{ name: name + '.bias', hfName: hfName + '.bias', shape: [nOut] }] : []),
  ];
  const norm = (name: string, hfName: string): HfWantedTensor[] => [
    { name: name + '.weight', hfName: hfName + '.weight', shape: [d] },
    { name: name + '.bias', hfName: hfName + '.bias', shape: [d] },
  ];
  for (let l = 0; l < c.nLayer; l++) {
    const hf = `${p}layers.${l}.`;
    const g = `blk.${l}.`;
    out.push(
      ...norm(g + 'attn_norm', hf + 'self_attn_layer_norm'),
      ...linear(g + 'attn_q', hf + 'self_attn.q_proj', d, d),
      ...linear(g + 'attn_k', hf + 'self_attn.k_proj', d, d),
      ...linear(g + 'attn_v', hf + 'self_attn.v_proj', d, d),
      ...linear(g + 'attn_output', hf + 'self_attn.out_proj', d, d),
      ...norm(g + 'ffn_norm', hf + 'final_layer_norm'),
      ...linear(g + 'ffn_up', hf + 'fc1', c.nFf, d),
      ...linear(g + 'ffn_down', hf + 'fc2', d, c.nFf),
    );
  }
  if (c.finalLayerNorm) out.push(...norm('output_norm', p + 'final_layer_norm'));
  return out;
}

export const opt: Architecture = {
  name: 'opt',
  cuda: false,
  hf: {
    modelTypes: ['opt'],
    addBos: true, // OPT's GPT2Tokenizer (add_bos_token) prepends BOS
    read,
    config,
    tensors,
    describe: (c: HfOptConfig) =>
      `hidden_size ${c.nEmbd}, ${c.nLayer} layers, ${c.nHead} heads, ffn_dim ${c.nFf}, word_embed_proj_dim ${c.embedDim}, vocab_size ${c.nVocab}, max_position_embeddings ${c.contextLength}`,
  },
};
