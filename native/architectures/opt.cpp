// OPT (Hugging Face `opt` folders): its own blocks (opt_blocks.h: learned positions, LayerNorm, biases, ReLU MLP,
// project_in/out, head tied to the embedding); CPU only. Hyper-parameters: lib/model/architectures/opt.ts.
#include "blocks/architecture.h"
#include "blocks/opt_blocks.h"

namespace adainfer {

namespace {

std::shared_ptr<ModelWeights> load(const HParams& p, std::vector<std::shared_ptr<MappedFile>> files,
                                         const std::vector<TensorSpec>& tensors, const KernelTable& kernels) {
  return std::make_shared<OptWeights>(load_opt_weights(std::move(files), opt_hparams(p), tensors, kernels));
}

std::unique_ptr<Blocks> cpu_blocks(std::shared_ptr<const ModelWeights> weights, const BlocksShape& shape,
                                   const KernelTable& kernels, const HostBuffers& io) {
  return std::make_unique<OptState>(std::static_pointer_cast<const OptWeights>(std::move(weights)), shape.n_seq,
                                    shape.n_ctx, shape.n_batch, shape.n_threads, kernels, io);
}

}  // namespace

extern const Architecture arch_opt = {"opt", load, cpu_blocks, nullptr};

}  // namespace adainfer
