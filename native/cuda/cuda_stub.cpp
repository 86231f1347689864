// The CUDA backend of a build without CUDA (no nvcc when it was compiled): nothing is available.
#include "cuda/cuda_backend.h"

namespace adainfer {

class CudaWeights {};

const CudaProbe& cuda_probe() {
  static const CudaProbe probe = [] {
    CudaProbe p;
    p.reason = "this build of adainfer has no CUDA backend (it was compiled without nvcc; rebuild with "
               "`npm run build:cuda` on a machine with the CUDA toolkit)";
    return p;
  }();
  return probe;
}

std::string cuda_unsupported_reason(const LlamaWeights&) { return cuda_probe().reason; }

std::shared_ptr<CudaWeights> cuda_upload_weights(std::shared_ptr<const LlamaWeights>, int) {
  throw ModelError("BACKEND_UNAVAILABLE", cuda_probe().reason);
}

int64_t cuda_weight_bytes(const CudaWeights&) { return 0; }

std::unique_ptr<Blocks> make_cuda_blocks(std::shared_ptr<CudaWeights>, int64_t, int64_t, int64_t, const KernelTable&,
                                         const HostBuffers&) {
  throw ModelError("BACKEND_UNAVAILABLE", cuda_probe().reason);
}

}  // namespace adainfer
