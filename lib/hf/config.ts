/**
 * config.json of a Hugging Face model folder: the hyper-parameters of the architectures this runtime runs,
 * dispatched on `model_type` (`llama`, `opt`). Missing or ill-typed keys are BAD_CONFIG errors naming the key;
 * an unknown model_type, or a feature the blocks do not implement (rope scaling, attention biases in Llama,
 * an activation other than OPT's ReLU), is UNSUPPORTED_ARCHITECTURE. Defaults are transformers' (LlamaConfig,
 * OPTConfig).
 */
import * as fs from 'fs';
import * as path from 'path';
import { ModelFileError } from '../errors';

export const HF_ARCHITECTURES = ['llama', 'opt'] as const;
export type HfArchitecture = (typeof HF_ARCHITECTURES)[number];

interface CommonConfig {
  /** The folder's name. */
  name: string;
  /** max_position_embeddings. */
  contextLength: number;
  nLayer: number;
  /** hidden_size: the residual stream's width. */
  nEmbd: number;
  nHead: number;
  nKvHead: number;
  headDim: number;
  nFf: number;
  /** Rows of the embedding (vocab_size). */
  nVocab: number;
  /** config.json, as parsed (the tokenizer reads bos/eos ids from it). */
  raw: Record<string, unknown>;
}

export interface HfLlamaConfig extends CommonConfig {
  modelType: 'llama';
  nRot: number;
  rmsEps: number;
  ropeBase: number;
  /** tie_word_embeddings: the LM head is embed_tokens (no lm_head.weight). */
  tiedOutput: boolean;
}

export interface HfOptConfig extends CommonConfig {
  modelType: 'opt';
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

export type HfConfig = HfLlamaConfig | HfOptConfig;

export const CONFIG_FILE = 'config.json';

/** Reads `dir/config.json`. */
export function readHfConfig(dir: string): HfConfig {
  const file = path.join(dir, CONFIG_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException)?.code;
    if (code === 'ENOENT') {
      throw new ModelFileError('FILE_NOT_FOUND', file, `the model folder has no ${CONFIG_FILE} (a Hugging Face model folder needs config.json and safetensors weights)`, { cause: err });
    }
    throw new ModelFileError('FILE_READ', file, `cannot read: ${(err as Error).message}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ModelFileError('BAD_CONFIG', file, `is not valid JSON: ${(err as Error).message}`);
  }
  return parseHfConfig(json, file, path.basename(path.resolve(dir)));
}

/** Parses a config.json object; `file` names it in errors. */
export function parseHfConfig(json: unknown, file: string, name: string): HfConfig {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new ModelFileError('BAD_CONFIG', file, 'is not a JSON object');
  const c = new ConfigReader(json as Record<string, unknown>, file);
  const modelType = c.raw.model_type;
  if (typeof modelType !== 'string') throw new ModelFileError('BAD_CONFIG', file, '"model_type" is missing or not a string');
  switch (modelType) {
    case 'llama':
      return llamaConfig(c, name);
    case 'opt':
      return optConfig(c, name);
    default:
      throw new ModelFileError(
        'UNSUPPORTED_ARCHITECTURE',
        file,
        `model_type '${modelType}' is not supported (supported: ${HF_ARCHITECTURES.join(', ')})`,
      );
  }
}

function llamaConfig(c: ConfigReader, name: string): HfLlamaConfig {
  const nEmbd = c.int('hidden_size', 1);
  const nHead = c.int('num_attention_heads', 1);
  const nKvHead = c.int('num_key_value_heads', 1, nHead);
  if (nHead % nKvHead !== 0) c.bad(`num_attention_heads ${nHead} is not a multiple of num_key_value_heads ${nKvHead}`);
  if (c.raw.head_dim === undefined && nEmbd % nHead !== 0) c.bad(`hidden_size ${nEmbd} is not a multiple of num_attention_heads ${nHead}`);
  const headDim = c.int('head_dim', 2, Math.floor(nEmbd / nHead));
  if (headDim % 2 !== 0) c.bad(`head_dim ${headDim} is odd: RoPE rotates pairs`);
  const scaling = c.raw.rope_scaling;
  if (scaling !== undefined && scaling !== null) c.unsupported(`rope_scaling ${JSON.stringify(scaling)} is not supported yet`);
  if (c.raw.attention_bias === true) c.unsupported('attention_bias is not supported (Llama blocks have no attention biases)');
  if (c.raw.mlp_bias === true) c.unsupported('mlp_bias is not supported (Llama blocks have no MLP biases)');
  const act = c.raw.hidden_act ?? 'silu';
  if (act !== 'silu') c.unsupported(`hidden_act '${String(act)}' is not supported (Llama blocks use SiLU)`);
  const partial = c.raw.partial_rotary_factor;
  if (partial !== undefined && partial !== 1) c.unsupported(`partial_rotary_factor ${String(partial)} is not supported`);
  return {
    modelType: 'llama',
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
    rmsEps: c.num('rms_norm_eps', 1e-6),
    ropeBase: c.num('rope_theta', 10000),
    tiedOutput: c.bool('tie_word_embeddings', false),
  };
}

function optConfig(c: ConfigReader, name: string): HfOptConfig {
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

class ConfigReader {
  constructor(
    readonly raw: Record<string, unknown>,
    private readonly file: string,
  ) {}

  bad(message: string): never {
    throw new ModelFileError('BAD_CONFIG', this.file, message);
  }

  unsupported(message: string): never {
    throw new ModelFileError('UNSUPPORTED_ARCHITECTURE', this.file, message);
  }

  /** An integer >= min; required unless a fallback is given (null counts as absent). */
  int(key: string, min: number, fallback?: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) {
      if (fallback === undefined) this.bad(`"${key}" is missing`);
      return fallback;
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) this.bad(`"${key}" must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return v;
  }

  num(key: string, fallback: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.bad(`"${key}" must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.raw[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') this.bad(`"${key}" must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }
}
