// The CUDA backend as the rest of the runtime sees it: a probe, device weights and a Blocks factory. Plain C++
// (no CUDA headers), so the addon and the tests compile the same way with or without CUDA: a build without
// nvcc links cuda_stub.cpp, whose probe says why there is no device and whose factories throw
// BACKEND_UNAVAILABLE. A CUDA build links the real implementation (cuda_blocks.cu), against the static CUDA
// runtime: the addon then loads on machines without a driver, and the probe reports the driver's error.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blocks/blocks.h"
#include "blocks/llama_blocks.h"

namespace adainfer {

struct CudaDevice {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int64_t total_memory = 0;  // bytes
};

struct CudaProbe {
  bool compiled = false;   // this build has the CUDA backend
  bool available = false;  // a usable device was found
  std::string reason;      // why not, when !available
  std::vector<CudaDevice> devices;
};

// Never throws, never aborts: a missing driver, no device or a failed context creation all come back as
// available = false with the runtime's message. Probed once, then cached.
const CudaProbe& cuda_probe();

// A model's weights uploaded to one device (shared by every context made from it).
class CudaWeights;

// Whether the CUDA kernels compute every tensor type of these weights; "" when they do, else the reason.
std::string cuda_unsupported_reason(const LlamaWeights& w);

// Uploads the weights (once) to `device`. Throws ModelError BACKEND_UNAVAILABLE (no device, types the kernels
// lack) or OUT_OF_MEMORY (the device cannot hold them).
std::shared_ptr<CudaWeights> cuda_upload_weights(std::shared_ptr<const LlamaWeights> weights, int device);
// Bytes of device memory the weights take.
int64_t cuda_weight_bytes(const CudaWeights& w);

// The CUDA Blocks of a llama model: KV cache, residual stream and scratch on the device. `host_kernels` converts
// embedding rows on the host (the embedding matrix stays in the mapped file; only the rows of a batch cross).
std::unique_ptr<Blocks> make_cuda_blocks(std::shared_ptr<CudaWeights> weights, int64_t n_seq, int64_t n_ctx,
                                         int64_t n_batch, const KernelTable& host_kernels, const HostBuffers& io);

}  // namespace adainfer
