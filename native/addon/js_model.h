// JS class `Model`: the weights of one model, memory-mapped and shared by every Context made from it; with
// the CUDA backend, also their copy on the device (uploaded once, here). The architecture (native/blocks/architecture.h)
// reads the hyper-parameters, loads the weights and makes the blocks; nothing here names one.
#pragma once
#include <napi.h>

#include <memory>

#include "blocks/architecture.h"
#include "cuda/cuda_backend.h"

namespace adainfer {

class JsModel : public Napi::ObjectWrap<JsModel> {
 public:
  static Napi::Function Init(Napi::Env env);
  // Tags every Model object, so a Context can check its argument really is one before unwrapping it.
  static const napi_type_tag kTypeTag;
  // new Model(paths: string | string[], hparams, tensors, { kernels?, backend?: 'cpu' | 'cuda', device? })
  // hparams.architecture names a registered architecture; its other keys are that architecture's.
  explicit JsModel(const Napi::CallbackInfo& info);

  // The weights. Throws a DISPOSED error once dispose() was called.
  std::shared_ptr<const ModelWeights> weights(Napi::Env env) const;
  const Architecture& architecture() const { return *arch_; }
  const KernelTable& kernels() const { return *kernels_; }
  // The device weights, or nullptr for the CPU backend.
  std::shared_ptr<CudaWeights> cuda_weights() const { return cuda_; }

 private:
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);

  // Contexts hold their own reference, so the file stays mapped until the last one is gone.
  std::shared_ptr<const ModelWeights> weights_;
  // Bytes of layer matrices held in the kernels' packed layout (blocks/weight_packing.h).
  uint64_t packed_bytes_ = 0;
  std::shared_ptr<CudaWeights> cuda_;
  const Architecture* arch_ = nullptr;
  const KernelTable* kernels_ = nullptr;
};

}  // namespace adainfer
