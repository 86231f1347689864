// Llama (GGUF `llama`: Llama 1/2/3, TinyLlama, Mistral-style, SmolLM; Hugging Face `llama` folders with ropeNeox):
// the Llama block as it is (llama_blocks.h). Hyper-parameters: lib/model/architectures/llama.ts.
#include "blocks/architecture.h"
#include "blocks/llama_blocks.h"

namespace adainfer {

namespace {

std::shared_ptr<ModelWeights> load(const HParams& p, std::vector<std::shared_ptr<MappedFile>> files,
                                         const std::vector<TensorSpec>& tensors, const KernelTable& kernels) {
  return std::make_shared<LlamaWeights>(load_llama_weights(std::move(files), llama_hparams(p), tensors, kernels));
}

}  // namespace

extern const Architecture arch_llama = {"llama", load, llama_cpu_blocks, llama_cuda_upload};

}  // namespace adainfer
