// JS class `Model`: the weights of one model, memory-mapped and shared by every Context made from it; with
// the CUDA backend, also their copy on the device (uploaded once, here).
#pragma once
#include <napi.h>

#include <memory>

#include "blocks/llama_blocks.h"
#include "blocks/opt_blocks.h"
#include "cuda/cuda_backend.h"

namespace adainfer {

class JsModel : public Napi::ObjectWrap<JsModel> {
 public:
  static Napi::Function Init(Napi::Env env);
  // Tags every Model object, so a Context can check its argument really is one before unwrapping it.
  static const napi_type_tag kTypeTag;
  // new Model(paths: string | string[], hparams, tensors, { kernels?, backend?: 'cpu' | 'cuda', device? })
  // hparams.architecture: 'llama' (default) or 'opt' (then hparams.opt holds OPT's own hyper-parameters).
  explicit JsModel(const Napi::CallbackInfo& info);

  // The llama weights, or nullptr for an OPT model. Throws a DISPOSED error once dispose() was called.
  std::shared_ptr<const LlamaWeights> weights(Napi::Env env) const;
  // The OPT weights, or nullptr for a llama model. Throws a DISPOSED error once dispose() was called.
  std::shared_ptr<const OptWeights> opt_weights(Napi::Env env) const;
  int64_t n_vocab(Napi::Env env) const;
  const KernelTable& kernels() const { return *kernels_; }
  // The device weights, or nullptr for the CPU backend.
  std::shared_ptr<CudaWeights> cuda_weights() const { return cuda_; }

 private:
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);

  // Contexts hold their own reference, so the file stays mapped until the last one is gone.
  std::shared_ptr<const LlamaWeights> weights_;
  std::shared_ptr<const OptWeights> opt_;
  std::shared_ptr<CudaWeights> cuda_;
  const KernelTable* kernels_ = nullptr;
};

}  // namespace adainfer
