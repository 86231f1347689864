// JS class `Model`: the weights of one model file, memory-mapped and shared by every Context made from it.
#pragma once
#include <napi.h>

#include <memory>

#include "blocks/llama_blocks.h"

namespace adainfer {

class JsModel : public Napi::ObjectWrap<JsModel> {
 public:
  static Napi::Function Init(Napi::Env env);
  // Tags every Model object, so a Context can check its argument really is one before unwrapping it.
  static const napi_type_tag kTypeTag;
  // new Model(path, hparams, tensors, isa?)
  explicit JsModel(const Napi::CallbackInfo& info);

  // Throws a DISPOSED error once dispose() was called.
  std::shared_ptr<const LlamaWeights> weights(Napi::Env env) const;
  const KernelTable& kernels() const { return *kernels_; }

 private:
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);

  // Contexts hold their own reference, so the file stays mapped until the last one is gone.
  std::shared_ptr<const LlamaWeights> weights_;
  const KernelTable* kernels_ = nullptr;
};

}  // namespace adainfer
