/**
 * Qwen3 dense models (GGUF `qwen3`, Hugging Face Qwen3ForCausalLM, model_type `qwen3`): the Llama block with a
 * per-head RMSNorm of Q and K before NEOX RoPE (attn_q_norm / attn_k_norm, [head_dim]), no biases, and a head size of
 * its own (attention.key_length / head_dim: q width n_head * head_dim may differ from hidden_size). Tokenizer as
 * qwen2.ts. Native half: native/architectures/qwen3.cpp.
 */
import { ConfigReader } from '../../hf/config_reader';
import { Architecture } from './architecture';
import { describeLlamaFamily, HfLlamaConfig, llamaFamilyConfigFromHf, llamaFamilyFromGGUF, llamaFamilyHfConfig, llamaFamilyTensors } from './llama';

export const qwen3: Architecture = {
  name: 'qwen3',
  cuda: true,
  gguf: (file) => llamaFamilyFromGGUF(file, 'qwen3'),
  hf: {
    modelTypes: ['qwen3'],
    addBos: false,
    read: (c: ConfigReader, name: string) => llamaFamilyHfConfig(c, name, 'qwen3', { qkvBias: false, tiedDefault: false, rmsEpsDefault: 1e-6 }),
    config: (c: HfLlamaConfig) => llamaFamilyConfigFromHf(c, 'qwen3'),
    tensors: (c: HfLlamaConfig) =>
      llamaFamilyTensors(c, false, (hf, g) => [
        { name: g + 'attn_q_norm.weight', hfName: hf + 'self_attn.q_norm.weight', shape: [c.headDim] },
        { name: g + 'attn_k_norm.weight', hfName: hf + 'self_attn.k_norm.weight', shape: [c.headDim] },
      ]),
    describe: describeLlamaFamily,
  },
};
