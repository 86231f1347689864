#include "addon/js_model.h"

#include "addon/errors.h"

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

LlamaHParams parse_hparams(const Napi::Object& o) {
  LlamaHParams hp;
  hp.n_layer = get_int(o, "nLayer");
  hp.n_embd = get_int(o, "nEmbd");
  hp.n_head = get_int(o, "nHead");
  hp.n_kv_head = get_int(o, "nKvHead");
  hp.head_dim = get_int(o, "headDim");
  hp.n_ff = get_int(o, "nFf");
  hp.n_vocab = get_int(o, "nVocab");
  hp.n_rot = get_int(o, "nRot");
  hp.rms_eps = o.Get("rmsEps").As<Napi::Number>().FloatValue();
  hp.rope_base = o.Get("ropeBase").As<Napi::Number>().FloatValue();
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
    if (info.Length() < 3 || !info[0].IsString() || !info[1].IsObject() || !info[2].IsArray())
      throw js_error(env, "INVALID_OPTION", "Model(path, hparams, tensors[, isa]) expected");
    const std::string path = info[0].As<Napi::String>().Utf8Value();
    kernels_ = &kernels_best();
    if (info.Length() > 3 && info[3].IsString()) {
      const std::string isa = info[3].As<Napi::String>().Utf8Value();
      kernels_ = kernels_by_name(isa.c_str());
      if (!kernels_) throw js_error(env, "INVALID_OPTION", "kernel variant '" + isa + "' is unknown or not supported by this CPU");
    }
    LlamaHParams hp = parse_hparams(info[1].As<Napi::Object>());
    std::vector<TensorSpec> tensors = parse_tensors(info[2].As<Napi::Array>());
    std::shared_ptr<MappedFile> file;
    try {
      file = std::make_shared<MappedFile>(path);
    } catch (const std::exception& e) {
      throw js_error(env, "FILE_READ", e.what());
    }
    weights_ = std::make_shared<const LlamaWeights>(load_llama_weights(file, hp, tensors, *kernels_));
    return 0;
  });
}

std::shared_ptr<const LlamaWeights> JsModel::weights(Napi::Env env) const {
  if (!weights_) throw js_error(env, "DISPOSED", "the model has been disposed");
  return weights_;
}

Napi::Value JsModel::Dispose(const Napi::CallbackInfo& info) {
  weights_.reset();
  return info.Env().Undefined();
}

Napi::Value JsModel::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto w = weights(env);
  Napi::Object o = Napi::Object::New(env);
  o.Set("kernels", kernels_->name);
  o.Set("mappedBytes", Napi::Number::New(env, static_cast<double>(w->file->size())));
  o.Set("tiedOutput", Napi::Boolean::New(env, w->output.data == w->tok_embd.data));
  return o;
}

}  // namespace adainfer
