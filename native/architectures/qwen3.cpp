// Qwen3 dense models (GGUF `qwen3`, Hugging Face Qwen3ForCausalLM): the Llama block with a per-head RMSNorm of Q and
// K (attn_q_norm / attn_k_norm, [head_dim]) before NEOX RoPE, no biases, and a head size of its own (key_length: q
// width n_head * head_dim may differ from the residual width). llama.cpp's LLM_ARCH_QWEN3. Hyper-parameters:
// lib/model/architectures/qwen3.ts.
#include "blocks/architecture.h"
#include "blocks/llama_blocks.h"

namespace adainfer {

namespace {

std::shared_ptr<ModelWeights> load(const HParams& p, std::vector<std::shared_ptr<MappedFile>> files,
                                         const std::vector<TensorSpec>& tensors, const KernelTable& kernels) {
  LlamaHParams hp = llama_hparams(p);
  hp.rope_neox = true;
  hp.qk_norm = true;
  return std::make_shared<LlamaWeights>(load_llama_weights(std::move(files), hp, tensors, kernels));
}

}  // namespace

extern const Architecture arch_qwen3 = {"qwen3", load, llama_cpu_blocks, llama_cuda_upload};

}  // namespace adainfer
