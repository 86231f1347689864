#include "addon/js_model.h"

#include "addon/errors.h"
#include "blocks/weight_packing.h"

namespace adainfer {

namespace {

int64_t get_int(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw js_error(o.Env(), "INVALID_OPTION", std::string("hparams.") + key + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= -9007199254740991.0 && d <= 9007199254740991.0) || d != static_cast<double>(static_cast<int64_t>(d)))
    throw js_error(o.Env(), "INVALID_OPTION", std::string("hparams.") + key + " must be an integer");
  return static_cast<int64_t>(d);
}

// hparams as the architecture reads them: numbers, booleans and strings by key, a nested object's keys as
// "outer.inner" (one level); other values (undefined, null, arrays) are left out, so a missing key is the
// architecture's INVALID_OPTION.
HParams parse_hparams(const Napi::Object& o, const std::string& prefix = "") {
  HParams hp;
  Napi::Array keys = o.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); ++i) {
    const std::string key = keys.Get(i).ToString().Utf8Value();
    Napi::Value v = o.Get(key);
    if (v.IsNumber()) {
      hp.numbers[prefix + key] = v.As<Napi::Number>().DoubleValue();
    } else if (v.IsBoolean()) {
      hp.flags[prefix + key] = v.As<Napi::Boolean>().Value();
    } else if (v.IsString()) {
      hp.strings[prefix + key] = v.As<Napi::String>().Utf8Value();
    } else if (v.IsObject() && !v.IsArray() && prefix.empty()) {
      HParams inner = parse_hparams(v.As<Napi::Object>(), key + ".");
      hp.numbers.insert(inner.numbers.begin(), inner.numbers.end());
      hp.flags.insert(inner.flags.begin(), inner.flags.end());
      hp.strings.insert(inner.strings.begin(), inner.strings.end());
    }
  }
  return hp;
}

std::vector<TensorSpec> parse_tensors(const Napi::Array& a) {
  std::vector<TensorSpec> out;
  out.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Object t = a.Get(i).As<Napi::Object>();
    TensorSpec s;
    s.name = t.Get("name").As<Napi::String>().Utf8Value();
    s.type = static_cast<int32_t>(get_int(t, "type"));
    int64_t off = get_int(t, "offset");
    if (off < 0) throw js_error(a.Env(), "TENSOR_OUT_OF_BOUNDS", "tensor " + s.name + " has a negative offset");
    s.offset = static_cast<uint64_t>(off);
    if (t.Has("file")) {
      const int64_t f = get_int(t, "file");
      s.file = f < 0 || f > INT32_MAX ? -1 : static_cast<int32_t>(f);  // out of range: refused by the loader
    }
    Napi::Array dims = t.Get("dims").As<Napi::Array>();
    for (uint32_t j = 0; j < dims.Length(); ++j) s.dims.push_back(static_cast<int64_t>(dims.Get(j).As<Napi::Number>().Int64Value()));
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

const napi_type_tag JsModel::kTypeTag = {0x6164616966657231ULL, 0x6d6f64656c000001ULL};

Napi::Function JsModel::Init(Napi::Env env) {
  return DefineClass(env, "Model",
                     {InstanceMethod("dispose", &JsModel::Dispose), InstanceMethod("info", &JsModel::Info)});
}

JsModel::JsModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsModel>(info) {
  Napi::Env env = info.Env();
  info.This().As<Napi::Object>().TypeTag(&kTypeTag);
  guarded(env, [&] {
    if (info.Length() < 3 || !(info[0].IsString() || info[0].IsArray()) || !info[1].IsObject() || !info[2].IsArray())
      throw js_error(env, "INVALID_OPTION", "Model(paths, hparams, tensors[, options]) expected");
    std::vector<std::string> paths;
    if (info[0].IsString()) {
      paths.push_back(info[0].As<Napi::String>().Utf8Value());
    } else {
      Napi::Array a = info[0].As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); ++i) {
        if (!a.Get(i).IsString()) throw js_error(env, "INVALID_OPTION", "model paths must be strings");
        paths.push_back(a.Get(i).As<Napi::String>().Utf8Value());
      }
    }
    Napi::Object opt = info.Length() > 3 && info[3].IsObject() ? info[3].As<Napi::Object>() : Napi::Object::New(env);
    kernels_ = &kernels_best();
    if (opt.Get("kernels").IsString()) {
      const std::string isa = opt.Get("kernels").As<Napi::String>().Utf8Value();
      kernels_ = kernels_by_name(isa.c_str());
      if (!kernels_) throw js_error(env, "INVALID_OPTION", "kernel variant '" + isa + "' is unknown or not supported by this CPU");
    }
    std::string backend = "cpu";
    if (opt.Get("backend").IsString()) backend = opt.Get("backend").As<Napi::String>().Utf8Value();
    if (backend != "cpu" && backend != "cuda")
      throw js_error(env, "INVALID_OPTION", "backend must be 'cpu' or 'cuda', got '" + backend + "'");
    Napi::Value device_value = opt.Get("device");
    if (!device_value.IsUndefined() && !device_value.IsNumber())
      throw js_error(env, "INVALID_OPTION", "device must be a device index");
    const int64_t device = device_value.IsUndefined() ? 0 : device_value.As<Napi::Number>().Int64Value();
    Napi::Object hparams = info[1].As<Napi::Object>();
    Napi::Value arch_value = hparams.Get("architecture");
    if (!arch_value.IsString()) throw js_error(env, "INVALID_OPTION", "hparams.architecture must be a string");
    const std::string arch = arch_value.As<Napi::String>().Utf8Value();
    arch_ = find_architecture(arch);
    if (!arch_)
      throw js_error(env, "INVALID_OPTION", "hparams.architecture '" + arch + "' is not one of " + architecture_names());
    if (backend == "cuda" && !arch_->cuda_upload)
      throw ModelError("BACKEND_UNAVAILABLE", "the CUDA backend does not run " + arch + " models: run this model on the CPU (backend 'cpu')");
    std::vector<TensorSpec> tensors = parse_tensors(info[2].As<Napi::Array>());
    std::vector<std::shared_ptr<MappedFile>> files;
    for (const std::string& path : paths) {
      try {
        files.push_back(std::make_shared<MappedFile>(path));
      } catch (const std::exception& e) {
        throw js_error(env, "FILE_READ", e.what());
      }
    }
    std::shared_ptr<ModelWeights> weights = arch_->load(parse_hparams(hparams), std::move(files), tensors, *kernels_);
    if (backend == "cpu") packed_bytes_ = pack_layer_matrices(*weights, *kernels_);
    weights_ = std::move(weights);
    if (backend == "cuda") {
      if (device < 0 || device > 1024) throw js_error(env, "INVALID_OPTION", "device must be a device index");
      cuda_ = arch_->cuda_upload(weights_, static_cast<int>(device));
    }
    return 0;
  });
}

std::shared_ptr<const ModelWeights> JsModel::weights(Napi::Env env) const {
  if (!weights_) throw js_error(env, "DISPOSED", "the model has been disposed");
  return weights_;
}

Napi::Value JsModel::Dispose(const Napi::CallbackInfo& info) {
  weights_.reset();
  cuda_.reset();
  return info.Env().Undefined();
}

Napi::Value JsModel::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto w = weights(env);
  Napi::Object o = Napi::Object::New(env);
  o.Set("kernels", kernels_->name);
  o.Set("architecture", arch_->name);
  double mapped = 0;
  for (const auto& f : w->files) mapped += static_cast<double>(f->size());
  o.Set("mappedBytes", Napi::Number::New(env, mapped));
  o.Set("backend", cuda_ ? "cuda" : "cpu");
  o.Set("deviceBytes", Napi::Number::New(env, cuda_ ? static_cast<double>(cuda_weight_bytes(*cuda_)) : 0.0));
  o.Set("tiedOutput", Napi::Boolean::New(env, w->tied_output()));
  o.Set("packedBytes", Napi::Number::New(env, static_cast<double>(packed_bytes_)));
  return o;
}

}  // namespace adainfer
