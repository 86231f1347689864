/**
 * Qwen2 / Qwen2.5 (GGUF `qwen2`, Hugging Face Qwen2ForCausalLM, model_type `qwen2`): the Llama block with biases on
 * the Q, K and V projections, NEOX RoPE (GGUF and Hugging Face store the same, unpermuted rows) and the `qwen2`
 * byte-level BPE pre-tokenizer (lib/tokenizer/bpe.ts). No BOS (Qwen2Tokenizer adds none). Native half:
 * native/architectures/qwen2.cpp.
 */
import { ConfigReader } from '../../hf/config_reader';
import { Architecture } from './architecture';
import { describeLlamaFamily, HfLlamaConfig, llamaFamilyConfigFromHf, llamaFamilyFromGGUF, llamaFamilyHfConfig, llamaFamilyTensors } from './llama';

export const qwen2: Architecture = {
  name: 'qwen2',
  cuda: true,
  gguf: (file) => llamaFamilyFromGGUF(file, 'qwen2'),
  hf: {
    modelTypes: ['qwen2'],
    addBos: false,
    read: (c: ConfigReader, name: string) => llamaFamilyHfConfig(c, name, 'qwen2', { qkvBias: true, tiedDefault: false, rmsEpsDefault: 1e-6 }),
    config: (c: HfLlamaConfig) => llamaFamilyConfigFromHf(c, 'qwen2'),
    tensors: (c: HfLlamaConfig) =>
      llamaFamilyTensors(c, false, (hf, g) => [
        { name: g + 'attn_q.bias', hfName: hf + 'self_attn.q_proj.bias', shape: [c.nHead * c.headDim] },
        { name: g + 'attn_k.bias', hfName: hf + 'self_attn.k_proj.bias', shape: [c.nKvHead * c.headDim] },
        { name: g + 'attn_v.bias', hfName: hf + 'self_attn.v_proj.bias', shape: [c.nKvHead * c.headDim] },
      ]),
    describe: describeLlamaFamily,
  },
};
