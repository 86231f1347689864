/**
 * Llama (GGUF `llama`: Llama 1/2/3, TinyLlama, Mistral-style, SmolLM; Hugging Face model_type `llama`), and the
 * readers the other architectures on the Llama block (qwen2.ts, qwen3.ts) share: GGUF metadata under
 * `<arch>.` keys, config.json's Llama keys, and the Llama tensor names. Native half: native/architectures/llama.cpp.
 */
import { ModelFileError } from '../../errors';
import { getInteger, getNumber, getString, GGUFFile } from '../../gguf';
import { ConfigReader, HfConfigBase } from '../../hf/config_reader';
import type { TransformerConfig } from '../transformer';
import { Architecture, HfWantedTensor } from './architecture';

/**
 * The hyper-parameters of a GGUF on the Llama block, read from `<arch>.*` keys, rejecting what the blocks cannot run
 * (rope scaling, value length != key length).
 */
export function llamaFamilyFromGGUF(file: GGUFFile, arch: string): TransformerConfig {
  const required = { required: true } as const;
  const int = (key: string, fallback?: number): number =>
    fallback === undefined ? getInteger(file, `${arch}.${key}`, required) : getInteger(file, `${arch}.${key}`) ?? fallback;
  const float = (key: string, fallback: number): number => getNumber(file, `${arch}.${key}`) ?? fallback;

  // Sessions default to the trained context: a length below 1 would only fail later, as a session option.
  const contextLength = int('context_length');
  if (contextLength < 1) {
    throw new ModelFileError('GGUF_CORRUPT', file.path, `metadata key "${arch}.context_length" is ${contextLength}; it must be at least 1`);
  }
  const nEmbd = int('embedding_length');
  const nHead = int('attention.head_count');
  const headDim = int('attention.key_length', nHead > 0 ? Math.floor(nEmbd / nHead) : 0);
  const tokens = file.metadata.get('tokenizer.ggml.tokens');
  const embd = file.tensorsByName.get('token_embd.weight');
  const nVocab = int('vocab_size', Array.isArray(tokens) ? tokens.length : embd?.dims[1] ?? 0);
  const scaling = getString(file, `${arch}.rope.scaling.type`);
  if (scaling !== undefined && scaling !== 'none') {
    throw new ModelFileError('UNSUPPORTED_ARCHITECTURE', file.path, `rope scaling '${scaling}' is not supported yet`);
  }
  const valueLength = int('attention.value_length', headDim);
  if (valueLength !== headDim) {
    throw new ModelFileError(
      'UNSUPPORTED_ARCHITECTURE',
      file.path,
      `attention.value_length ${valueLength} differs from key_length ${headDim}`,
    );
  }
  return {
    name: getString(file, 'general.name') ?? file.path.split('/').pop() ?? file.path,
    architecture: arch,
    contextLength,
    nLayer: int('block_count'),
    nEmbd,
    nHead,
    nKvHead: int('attention.head_count_kv', nHead),
    headDim,
    nFf: int('feed_forward_length'),
    nVocab,
    nRot: int('rope.dimension_count', headDim),
    rmsEps: float('attention.layer_norm_rms_epsilon', 1e-5),
    ropeBase: float('rope.freq_base', 10000),
  };
}

export interface HfLlamaConfig extends HfConfigBase {
  nRot: number;
  rmsEps: number;
  ropeBase: number;
  /** tie_word_embeddings: the LM head is embed_tokens (no lm_head.weight). */
  tiedOutput: boolean;
}

/** What the Llama-block config.json readers may differ in. */
export interface LlamaFamilyHf {
  /** Biases on q/k/v_proj: true = always there (Qwen2), false = attention_bias must not be set (Llama, Qwen3). */
  qkvBias: boolean;
  /** The default of tie_word_embeddings. */
  tiedDefault: boolean;
  /** The default of rms_norm_eps. */
  rmsEpsDefault: number;
}

/**
 * config.json of a model on the Llama block (transformers' TransformerConfig keys and defaults, which Qwen2Config and
 * Qwen3Config share). Rope scaling, partial rotary, MLP biases and an activation other than SiLU are refused.
 */
export function llamaFamilyHfConfig(c: ConfigReader, name: string, modelType: string, o: LlamaFamilyHf): HfLlamaConfig {
  const nEmbd = c.int('hidden_size', 1);
  const nHead = c.int('num_attention_heads', 1);
  const nKvHead = c.int('num_key_value_heads', 1, nHead);
  if (nHead % nKvHead !== 0) c.bad(`num_attention_heads ${nHead} is not a multiple of num_key_value_heads ${nKvHead}`);
  if (c.raw.head_dim === undefined && nEmbd % nHead !== 0) c.bad(`hidden_size ${nEmbd} is not a multiple of num_attention_heads ${nHead}`);
  const headDim = c.int('head_dim', 2, Math.floor(nEmbd / nHead));
  if (headDim % 2 !== 0) c.bad(`head_dim ${headDim} is odd: RoPE rotates pairs`);
  const scaling = c.raw.rope_scaling;
  if (scaling !== undefined && scaling !== null) c.unsupported(`rope_scaling ${JSON.stringify(scaling)} is not supported yet`);
  if (!o.qkvBias && c.raw.attention_bias === true) c.unsupported(`attention_bias is not supported (${modelType} blocks have no attention biases)`);
  if (c.raw.mlp_bias === true) c.unsupported(`mlp_bias is not supported (${modelType} blocks have no MLP biases)`);
  const act = c.raw.hidden_act ?? 'silu';
  if (act !== 'silu') c.unsupported(`hidden_act '${String(act)}' is not supported (${modelType} blocks use SiLU)`);
  const partial = c.raw.partial_rotary_factor;
  if (partial !== undefined && partial !== 1) c.unsupported(`partial_rotary_factor ${String(partial)} is not supported`);
  if (c.raw.use_sliding_window === true) c.unsupported('use_sliding_window is not supported (every layer attends to the whole context)');
  return {
    modelType,
    name,
    raw: c.raw,
    contextLength: c.int('max_position_embeddings', 1, 2048),
    nLayer: c.int('num_hidden_layers', 1),
    nEmbd,
    nHead,
    nKvHead,
    headDim,
    nFf: c.int('intermediate_size', 1),
    nVocab: c.int('vocab_size', 1),
    nRot: headDim,
    rmsEps: c.num('rms_norm_eps', o.rmsEpsDefault),
    ropeBase: c.num('rope_theta', 10000),
    tiedOutput: c.bool('tie_word_embeddings', o.tiedDefault),
  };
}

/** The runtime config of a Llama-block folder (its Q/K rows in rotate-half order: NEOX RoPE). */
export function llamaFamilyConfigFromHf(c: HfLlamaConfig, architecture: string): TransformerConfig {
  return {
    name: c.name,
    architecture,
    contextLength: c.contextLength,
    nLayer: c.nLayer,
    nEmbd: c.nEmbd,
    nHead: c.nHead,
    nKvHead: c.nKvHead,
    headDim: c.headDim,
    nFf: c.nFf,
    nVocab: c.nVocab,
    nRot: c.nRot,
    rmsEps: c.rmsEps,
    ropeBase: c.ropeBase,
    ropeNeox: true,
  };
}

/**
 * The Llama-block tensors of a Hugging Face checkpoint under the runtime's names; `perLayer` adds an architecture's
 * own tensors of layer l (its biases, its Q/K norms). `neoxRows`: Q/K rows are rotate-half where the architecture's
 * GGUF has adjacent pairs (llama only).
 */
export function llamaFamilyTensors(
  c: HfLlamaConfig,
  neoxRows: boolean,
  perLayer: (hf: string, gguf: string) => HfWantedTensor[] = () => [],
): HfWantedTensor[] {
  const out: HfWantedTensor[] = [{ name: 'token_embd.weight', hfName: 'model.embed_tokens.weight', shape: [c.nVocab, c.nEmbd] }];
  const q = c.nHead * c.headDim;
  const kv = c.nKvHead * c.headDim;
  const nx = neoxRows ? { neoxRows: true } : {};
  for (let l = 0; l < c.nLayer; l++) {
    const hf = `model.layers.${l}.`;
    const g = `blk.${l}.`;
    out.push(
      { name: g + 'attn_norm.weight', hfName: hf + 'input_layernorm.weight', shape: [c.nEmbd] },
      { name: g + 'attn_q.weight', hfName: hf + 'self_attn.q_proj.weight', shape: [q, c.nEmbd], ...nx },
      { name: g + 'attn_k.weight', hfName: hf + 'self_attn.k_proj.weight', shape: [kv, c.nEmbd], ...nx },
      { name: g + 'attn_v.weight', hfName: hf + 'self_attn.v_proj.weight', shape: [kv, c.nEmbd] },
      { name: g + 'attn_output.weight', hfName: hf + 'self_attn.o_proj.weight', shape: [c.nEmbd, q] },
      ...perLayer(hf, g),
      { name: g + 'ffn_norm.weight', hfName: hf + 'post_attention_layernorm.weight', shape: [c.nEmbd] },
      { name: g + 'ffn_gate.weight', hfName: hf + 'mlp.gate_proj.weight', shape: [c.nFf, c.nEmbd] },
      { name: g + 'ffn_up.weight', hfName: hf + 'mlp.up_proj.weight', shape: [c.nFf, c.nEmbd] },
      { name: g + 'ffn_down.weight', hfName: hf + 'mlp.down_proj.weight', shape: [c.nEmbd, c.nFf] },
    );
  }
  out.push({ name: 'output_norm.weight', hfName: 'model.norm.weight', shape: [c.nEmbd] });
  if (!c.tiedOutput) out.push({ name: 'output.weight', hfName: 'lm_head.weight', shape: [c.nVocab, c.nEmbd] });
  return out;
}

export function describeLlamaFamily(c: HfLlamaConfig): string {
  return `hidden_size ${c.nEmbd}, ${c.nLayer} layers, ${c.nHead} heads, ${c.nKvHead} KV heads, head_dim ${c.headDim}, intermediate_size ${c.nFf}, vocab_size ${c.nVocab}`;
}

export const llama: Architecture = {
  name: 'llama',
  cuda: true,
  gguf: (file) => llamaFamilyFromGGUF(file, 'llama'),
  hf: {
    modelTypes: ['llama'],
    addBos: true, // LlamaTokenizer prepends BOS
    read: (c: ConfigReader, name: string) => llamaFamilyHfConfig(c, name, 'llama', { qkvBias: false, tiedDefault: false, rmsEpsDefault: 1e-6 }),
    // Hugging Face stores Llama's Q/K rows in rotate-half order (GGUF converters permute them): NEOX RoPE uses them in place.
    config: (c: HfLlamaConfig) => llamaFamilyConfigFromHf(c, 'llama'),
    tensors: (c: HfLlamaConfig) => llamaFamilyTensors(c, true),
    describe: describeLlamaFamily,
  },
};
