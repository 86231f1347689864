// Qwen2 / Qwen2.5 (GGUF `qwen2`, Hugging Face Qwen2ForCausalLM): the Llama block with biases on the Q, K and V
// projections and NEOX RoPE (llama.cpp's LLM_ARCH_QWEN2). Hyper-parameters: lib/model/architectures/qwen2.ts.
#include "blocks/architecture.h"
#include "blocks/llama_blocks.h"

namespace adainfer {

namespace {

std::shared_ptr<ModelWeights> load(const HParams& p, std::vector<std::shared_ptr<MappedFile>> files,
                                         const std::vector<TensorSpec>& tensors, const KernelTable& kernels) {
  LlamaHParams hp = llama_hparams(p);
  hp.rope_neox = true;
  hp.qkv_bias = true;
  return std::make_shared<LlamaWeights>(load_llama_weights(std::move(files), hp, tensors, kernels));
}

}  // namespace

extern const Architecture arch_qwen2 = {"qwen2", load, llama_cpu_blocks, llama_cuda_upload};

}  // namespace adainfer
