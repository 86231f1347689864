#include "addon/js_quant.h"

#include <algorithm>
#include <string>

#include "addon/errors.h"
#include "core/ggml_types.h"
#include "core/kernels.h"
#include "core/quantize.h"
#include "core/thread_pool.h"

namespace adainfer {

namespace {

int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* what, int64_t min) {
  if (info.Length() <= i || !info[i].IsNumber()) throw js_error(info.Env(), "INVALID_OPTION", std::string(what) + " must be a number");
  const double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= static_cast<double>(min)) || v != static_cast<double>(static_cast<int64_t>(v)) || v > 9007199254740991.0)
    throw js_error(info.Env(), "INVALID_OPTION", std::string(what) + " must be an integer >= " + std::to_string(min));
  return static_cast<int64_t>(v);
}

}  // namespace

Napi::Value JsQuantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t type = int_arg(info, 0, "type", 0);
  if (info.Length() < 3 || !info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
      !info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    throw js_error(env, "INVALID_OPTION", "quantize(type, src: Float32Array, dst: Uint8Array, nRows, nPerRow, threads?)");
  Napi::Float32Array src = info[1].As<Napi::Float32Array>();
  Napi::Uint8Array dst = info[2].As<Napi::Uint8Array>();
  const int64_t n_rows = int_arg(info, 3, "nRows", 0);
  const int64_t n_per_row = int_arg(info, 4, "nPerRow", 1);
  const int64_t threads = info.Length() > 5 && !info[5].IsUndefined() ? int_arg(info, 5, "threads", 1) : 1;
  if (type > INT32_MAX || !quantize_supported(static_cast<int32_t>(type)))
    throw js_error(env, "INVALID_OPTION", "cannot quantize to GGML type " + std::to_string(type));
  const size_t rb = row_bytes(static_cast<int32_t>(type), n_per_row);
  if (rb == 0)
    throw js_error(env, "INVALID_OPTION", "rows of " + std::to_string(n_per_row) + " elements are not a whole number of blocks of type " +
                                              std::to_string(type));
  if (static_cast<double>(n_rows) * static_cast<double>(n_per_row) > static_cast<double>(src.ElementLength()))
    throw js_error(env, "INVALID_OPTION", "src holds fewer than nRows * nPerRow floats");
  if (static_cast<double>(n_rows) * static_cast<double>(rb) > static_cast<double>(dst.ByteLength()))
    throw js_error(env, "INVALID_OPTION", "dst is smaller than nRows * rowBytes");
  const float* s = src.Data();
  uint8_t* d = dst.Data();
  ThreadPool pool(static_cast<int>(std::min<int64_t>(threads, 256)));
  pool.parallel_for(n_rows, 1, [&](int64_t r0, int64_t r1, int) {
    quantize_rows(static_cast<int32_t>(type), s + r0 * n_per_row, d + static_cast<size_t>(r0) * rb, r1 - r0, n_per_row);
  });
  return Napi::Number::New(env, static_cast<double>(rb) * static_cast<double>(n_rows));
}

Napi::Value JsDequantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t type = int_arg(info, 0, "type", 0);
  if (info.Length() < 3 || !info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
      !info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw js_error(env, "INVALID_OPTION", "dequantize(type, src: Uint8Array, dst: Float32Array, nRows, nPerRow)");
  Napi::Uint8Array src = info[1].As<Napi::Uint8Array>();
  Napi::Float32Array dst = info[2].As<Napi::Float32Array>();
  const int64_t n_rows = int_arg(info, 3, "nRows", 0);
  const int64_t n_per_row = int_arg(info, 4, "nPerRow", 1);
  const KernelTable& k = kernels_generic();
  if (type >= KernelTable::kMaxType || !k.dequant_row[type])
    throw js_error(env, "INVALID_OPTION", "cannot dequantize GGML type " + std::to_string(type));
  const size_t rb = row_bytes(static_cast<int32_t>(type), n_per_row);
  if (rb == 0) throw js_error(env, "INVALID_OPTION", "rows are not a whole number of blocks");
  if (static_cast<double>(n_rows) * static_cast<double>(rb) > static_cast<double>(src.ByteLength()))
    throw js_error(env, "INVALID_OPTION", "src is smaller than nRows * rowBytes");
  if (static_cast<double>(n_rows) * static_cast<double>(n_per_row) > static_cast<double>(dst.ElementLength()))
    throw js_error(env, "INVALID_OPTION", "dst holds fewer than nRows * nPerRow floats");
  for (int64_t r = 0; r < n_rows; ++r)
    k.dequant_row[type](src.Data() + static_cast<size_t>(r) * rb, dst.Data() + r * n_per_row, n_per_row);
  return Napi::Number::New(env, static_cast<double>(n_rows) * static_cast<double>(n_per_row));
}

}  // namespace adainfer
