// The native registry of model architectures. An architecture is one file in native/architectures/ that defines an
// `Architecture`: how its hyper-parameters are read (HParams: the flat keys lib/model/architectures/<name>.ts sends),
// how its weights are looked up in the tensor table and checked, and which blocks run them — on the CPU always, on
// CUDA where it says so. architecture.cpp holds THE list (one line each); the addon (js_model.cpp, js_context.cpp)
// knows no architecture by name.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "blocks/block_common.h"
#include "blocks/blocks.h"
#include "blocks/cpu_blocks.h"
#include "core/kernels.h"
#include "core/mapped_file.h"

namespace adainfer {

class CudaWeights;

// Hyper-parameters as the TypeScript side passes them: numbers, flags and strings by key; a nested object's keys are
// "outer.inner". A missing or ill-typed key is INVALID_OPTION naming it.
class HParams {
 public:
  std::map<std::string, double> numbers;
  std::map<std::string, bool> flags;
  std::map<std::string, std::string> strings;

  bool has(const std::string& key) const { return numbers.count(key) || flags.count(key) || strings.count(key); }
  // An integer (exactly representable, |v| <= 2^53).
  int64_t integer(const std::string& key) const;
  float real(const std::string& key) const;
  bool flag(const std::string& key) const;
  bool flag(const std::string& key, bool fallback) const;
};

// A model's weights on the host, whatever its architecture: views into `files`, which they keep mapped.
struct ModelWeights {
  virtual ~ModelWeights() = default;
  std::vector<std::shared_ptr<MappedFile>> files;
  virtual int64_t vocabulary() const = 0;
  // The LM head is the token embedding (no output matrix of its own).
  virtual bool tied_output() const = 0;
  // The layer matrices (attention and MLP projections), which the CPU kernels may keep in a packed layout
  // (blocks/weight_packing.h). Not the embedding or the LM head: those are also read row by row.
  virtual std::vector<WeightView*> layer_matrices() = 0;
  // The packed copies of layer matrices (their views point here instead of into `files`).
  std::vector<std::shared_ptr<uint8_t>> packed;
};

struct Architecture {
  const char* name;
  // Reads the hyper-parameters and builds the weights from the tensor table (every tensor present, a type the kernels
  // compute, the shape the hyper-parameters imply, data inside its file). Throws ModelError.
  std::shared_ptr<ModelWeights> (*load)(const HParams& hp, std::vector<std::shared_ptr<MappedFile>> files,
                                              const std::vector<TensorSpec>& tensors, const KernelTable& kernels);
  // The CPU blocks over weights this architecture's load() made.
  std::unique_ptr<Blocks> (*cpu_blocks)(std::shared_ptr<const ModelWeights> weights, const BlocksShape& shape,
                                        const KernelTable& kernels, const HostBuffers& io);
  // The device copy of the weights for the CUDA backend (the CUDA blocks are made from it); nullptr: this
  // architecture runs on the CPU only (BACKEND_UNAVAILABLE).
  std::shared_ptr<CudaWeights> (*cuda_upload)(std::shared_ptr<const ModelWeights> weights, int device);
};

// The architecture named `name`, or nullptr.
const Architecture* find_architecture(const std::string& name);
// "llama, opt, ..." (error messages).
std::string architecture_names();

}  // namespace adainfer
