#include "addon/js_context.h"

#include <thread>

#include "addon/errors.h"
#include "addon/js_model.h"
#include "cuda/cuda_backend.h"

namespace adainfer {

namespace {

int64_t option_int(const Napi::Object& o, const char* key, int64_t min, int64_t max) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw js_error(o.Env(), "INVALID_OPTION", std::string(key) + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= static_cast<double>(min) && d <= static_cast<double>(max)) || d != static_cast<double>(static_cast<int64_t>(d)))
    throw js_error(o.Env(), "INVALID_OPTION",
                   std::string(key) + " must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  return static_cast<int64_t>(d);
}

int64_t arg_int(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsNumber())
    throw js_error(info.Env(), "INVALID_OPTION", std::string(name) + " must be a number");
  return info[i].As<Napi::Number>().Int64Value();
}

}  // namespace

Napi::Function JsContext::Init(Napi::Env env) {
  return DefineClass(env, "Context",
                     {
                         InstanceMethod("embed", &JsContext::Embed),
                         InstanceMethod("attention", &JsContext::Attention),
                         InstanceMethod("mlp", &JsContext::Mlp),
                         InstanceMethod("fillKv", &JsContext::FillKv),
                         InstanceMethod("head", &JsContext::Head),
                         InstanceMethod("headRows", &JsContext::HeadRows),
                         InstanceMethod("logitLens", &JsContext::LogitLens),
                         InstanceMethod("logitLensCandidates", &JsContext::LogitLensCandidates),
                         InstanceMethod("syncLogits", &JsContext::SyncLogits),
                         InstanceMethod("setAttentionStatistics", &JsContext::SetAttentionStatistics),
                         InstanceMethod("exitStatistics", &JsContext::ExitStatistics),
                         InstanceMethod("readHidden", &JsContext::ReadHidden),
                         InstanceMethod("writeHidden", &JsContext::WriteHidden),
                         InstanceMethod("moveHidden", &JsContext::MoveHidden),
                         InstanceMethod("noop", &JsContext::Noop),
                         InstanceMethod("dispose", &JsContext::Dispose),
                     });
}

JsContext::JsContext(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsContext>(info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsObject() ||
        !info[0].As<Napi::Object>().CheckTypeTag(&JsModel::kTypeTag))
      throw js_error(env, "INVALID_OPTION", "Context(model, options) expected");
    JsModel* model = JsModel::Unwrap(info[0].As<Napi::Object>());
    std::shared_ptr<const ModelWeights> weights = model->weights(env);
    const int64_t n_vocab = weights->vocabulary();
    n_vocab_ = n_vocab;
    Napi::Object opt = info[1].As<Napi::Object>();
    const int64_t n_ctx = option_int(opt, "nCtx", 1, int64_t(1) << 24);
    const int64_t n_seq = opt.Has("nSeq") ? option_int(opt, "nSeq", 1, 4096) : 1;
    const int64_t n_batch = option_int(opt, "nBatch", 1, int64_t(1) << 20);
    const int64_t threads = option_int(opt, "threads", 1, 1024);
    const int64_t lens_k = option_int(opt, "lensK", 1, 1024);
    const int64_t lens_candidates = option_int(opt, "lensMaxCandidates", 1, n_vocab);

    // Activation buffers are JS ArrayBuffers (V8 memory, never moved), exposed as typed-array views.
    // The views are read-only properties: reassigning one would silently disconnect TypeScript from native.
    Napi::Object self = info.This().As<Napi::Object>();
    HostBuffers io;
    auto define = [&](const char* name, Napi::Value value) {
      self.DefineProperty(Napi::PropertyDescriptor::Value(name, value, napi_enumerable));
    };
    auto f32 = [&](const char* name, int64_t n, float** out) {
      Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, static_cast<size_t>(n) * sizeof(float));
      *out = static_cast<float*>(ab.Data());
      buffers_.emplace_back(name, Napi::Persistent(ab));
      define(name, Napi::Float32Array::New(env, static_cast<size_t>(n), ab, 0));
    };
    auto i32 = [&](const char* name, int64_t n, int32_t** out) {
      Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, static_cast<size_t>(n) * sizeof(int32_t));
      *out = static_cast<int32_t*>(ab.Data());
      buffers_.emplace_back(name, Napi::Persistent(ab));
      define(name, Napi::Int32Array::New(env, static_cast<size_t>(n), ab, 0));
    };
    i32("tokens", n_batch, &io.tokens);
    i32("rowSeq", n_batch, &io.row_seq);
    i32("rowPos", n_batch, &io.row_pos);
    f32("logits", n_vocab, &io.logits);
    i32("lensCandidates", lens_candidates, &io.lens_candidates);
    io.lens_max_candidates = lens_candidates;
    i32("lensIds", lens_k, &io.lens_ids);
    f32("lensProbs", lens_k, &io.lens_probs);
    f32("lensFeatures", 4, &io.lens_features);
    io.lens_k = lens_k;
    f32("exitStats", kExitStats, &io.exit_stats);
    if (auto cuda = model->cuda_weights())
      blocks_ = make_cuda_blocks(cuda, n_seq, n_ctx, n_batch, model->kernels(), io);
    else
      blocks_ = model->architecture().cpu_blocks(weights, BlocksShape{n_seq, n_ctx, n_batch, static_cast<int>(threads)},
                                                 model->kernels(), io);
    define("backend", Napi::String::New(env, blocks_->backend()));
    define("kernels", Napi::String::New(env, model->kernels().name));
    define("computesExitStatistics", Napi::Boolean::New(env, blocks_->computes_exit_statistics()));
    define("threads", Napi::Number::New(env, static_cast<double>(threads)));
    return 0;
  });
}

Blocks& JsContext::blocks(Napi::Env env) {
  if (!blocks_) throw js_error(env, "DISPOSED", "the context has been disposed");
  for (const auto& [name, buffer] : buffers_)
    if (buffer.Value().IsDetached())
      throw js_error(env, "BUFFER_DETACHED",
                     "the context's " + name + " buffer was detached (transferred); the context can no longer be used");
  return *blocks_;
}

namespace {

// The Float32Array argument i, checked to hold at least `floats` elements.
float* float_rows_arg(const Napi::CallbackInfo& info, size_t i, int64_t floats) {
  if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw js_error(info.Env(), "INVALID_OPTION", "a Float32Array was expected");
  Napi::Float32Array a = info[i].As<Napi::Float32Array>();
  if (floats < 0 || static_cast<int64_t>(a.ElementLength()) < floats)
    throw js_error(info.Env(), "INVALID_OPTION",
                   "the Float32Array holds " + std::to_string(a.ElementLength()) + " floats, " + std::to_string(floats) + " needed");
  return a.Data();
}

}  // namespace

Napi::Value JsContext::SyncLogits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    blocks(env).sync_logits();
    return 0;
  });
  return env.Undefined();
}

Napi::Value JsContext::ReadHidden(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    Blocks& b = blocks(env);
    const int64_t row0 = arg_int(info, 0, "row0"), n = arg_int(info, 1, "n");
    if (n < 0 || n > b.n_batch()) throw std::out_of_range("row count " + std::to_string(n) + " out of range");
    b.read_hidden(row0, n, float_rows_arg(info, 2, n * b.n_embd()));
    return 0;
  });
  return env.Undefined();
}

Napi::Value JsContext::WriteHidden(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    Blocks& b = blocks(env);
    const int64_t row0 = arg_int(info, 0, "row0"), n = arg_int(info, 1, "n");
    if (n < 0 || n > b.n_batch()) throw std::out_of_range("row count " + std::to_string(n) + " out of range");
    b.write_hidden(row0, n, float_rows_arg(info, 2, n * b.n_embd()));
    return 0;
  });
  return env.Undefined();
}

Napi::Value JsContext::MoveHidden(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    blocks(env).move_hidden(arg_int(info, 0, "dstRow"), arg_int(info, 1, "srcRow"), arg_int(info, 2, "n"));
    return 0;
  });
  return env.Undefined();
}

Napi::Value JsContext::Embed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    blocks(env).embed(arg_int(info, 0, "n"));
    return 0;
  });
  return env.Undefined();
}

Napi::Value JsContext::Attention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    blocks(env).attention_block(arg_int(info, 0, "layer"), arg_int(info, 1, "n"));
    return 0;
  });
  return env.Undefined();
}

Napi::Value JsContext::FillKv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    blocks(env).fill_kv(arg_int(info, 0, "layer"), arg_int(info, 1, "n"));
    return 0;
  });
  return env.Undefined();
}

Napi::Value JsContext::Mlp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    blocks(env).mlp_block(arg_int(info, 0, "layer"), arg_int(info, 1, "n"));
    return 0;
  });
  return env.Undefined();
}

Napi::Value JsContext::Head(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    blocks(env).head(arg_int(info, 0, "row"));
    return 0;
  });
  return env.Undefined();
}

Napi::Value JsContext::HeadRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    Blocks& b = blocks(env);
    const int64_t row0 = arg_int(info, 0, "row0"), n = arg_int(info, 1, "n");
    if (n < 0 || n > b.n_batch()) throw std::out_of_range("row count " + std::to_string(n) + " out of range");
    b.head_rows(row0, n, float_rows_arg(info, 2, n * n_vocab_));
    return 0;
  });
  return env.Undefined();
}

Napi::Value JsContext::LogitLens(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    blocks(env).logit_lens(arg_int(info, 0, "row"), arg_int(info, 1, "k"));
    return 0;
  });
  return env.Undefined();
}

Napi::Value JsContext::LogitLensCandidates(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    blocks(env).logit_lens_candidates(arg_int(info, 0, "row"), arg_int(info, 1, "m"), arg_int(info, 2, "k"));
    return 0;
  });
  return env.Undefined();
}

Napi::Value JsContext::SetAttentionStatistics(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    if (info.Length() < 1 || !info[0].IsBoolean()) throw js_error(env, "INVALID_OPTION", "on must be a boolean");
    blocks(env).set_attention_statistics(info[0].As<Napi::Boolean>().Value());
    return 0;
  });
  return env.Undefined();
}

Napi::Value JsContext::ExitStatistics(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    if (info.Length() < 2 || !info[1].IsBoolean()) throw js_error(env, "INVALID_OPTION", "firstCheck must be a boolean");
    blocks(env).exit_statistics(arg_int(info, 0, "row"), info[1].As<Napi::Boolean>().Value());
    return 0;
  });
  return env.Undefined();
}

Napi::Value JsContext::Noop(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

Napi::Value JsContext::Dispose(const Napi::CallbackInfo& info) {
  blocks_.reset();
  buffers_.clear();
  return info.Env().Undefined();
}

}  // namespace adainfer
