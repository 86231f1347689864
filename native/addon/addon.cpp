// The adainfer Node addon: exports the Model and Context classes plus machine information.
// Its typed contract is lib/bindings/native.ts.
#include <napi.h>

#include "addon/js_context.h"
#include "addon/js_model.h"
#include "addon/js_probe.h"
#include "addon/js_quant.h"
#include "core/cpu_features.h"
#include "core/kernels.h"
#include "core/thread_pool.h"
#include "cuda/cuda_backend.h"

namespace adainfer {

class Addon : public Napi::Addon<Addon> {
 public:
  Addon(Napi::Env env, Napi::Object exports) {
    DefineAddon(exports, {
                             InstanceValue("Model", JsModel::Init(env)),
                             InstanceValue("Context", JsContext::Init(env)),
                             InstanceMethod("systemInfo", &Addon::SystemInfo),
                             InstanceMethod("quantize", &Addon::Quantize),
                             InstanceMethod("dequantize", &Addon::Dequantize),
                             InstanceMethod("matvecF64", &Addon::MatvecF64),
                         });
  }

 private:
  Napi::Value Quantize(const Napi::CallbackInfo& info) { return JsQuantize(info); }
  Napi::Value Dequantize(const Napi::CallbackInfo& info) { return JsDequantize(info); }
  Napi::Value MatvecF64(const Napi::CallbackInfo& info) { return JsMatvecF64(info); }

  // { cpuFeatures, physicalCores, kernels: best variant, available: [variants this CPU runs],
  //   cuda: { compiled, available, reason, devices: [{ index, name, computeCapability, totalMemory }] } }
  Napi::Value SystemInfo(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("cpuFeatures", cpu_features_string());
    o.Set("physicalCores", physical_core_count());
    o.Set("kernels", kernels_best().name);
    Napi::Array avail = Napi::Array::New(env);
    uint32_t i = 0;
    for (const char* name : {"generic", "avx2", "avx512"})
      if (kernels_by_name(name)) avail.Set(i++, name);
    o.Set("available", avail);
    const CudaProbe& probe = cuda_probe();
    Napi::Object cuda = Napi::Object::New(env);
    cuda.Set("compiled", Napi::Boolean::New(env, probe.compiled));
    cuda.Set("available", Napi::Boolean::New(env, probe.available));
    cuda.Set("reason", probe.reason);
    Napi::Array devices = Napi::Array::New(env);
    for (size_t d = 0; d < probe.devices.size(); ++d) {
      const CudaDevice& dev = probe.devices[d];
      Napi::Object od = Napi::Object::New(env);
      od.Set("index", dev.index);
      od.Set("name", dev.name);
      od.Set("computeCapability", std::to_string(dev.cc_major) + "." + std::to_string(dev.cc_minor));
      od.Set("totalMemory", Napi::Number::New(env, static_cast<double>(dev.total_memory)));
      devices.Set(static_cast<uint32_t>(d), od);
    }
    cuda.Set("devices", devices);
    o.Set("cuda", cuda);
    return o;
  }
};

}  // namespace adainfer

// The registration macro pastes the class name into an identifier, so it needs an unqualified name.
using AdaInferAddon = adainfer::Addon;
NODE_API_ADDON(AdaInferAddon)
