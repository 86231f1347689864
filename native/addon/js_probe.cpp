#include "addon/js_probe.h"

#include <cstdint>
#include <string>

#include "addon/errors.h"

namespace adainfer {

namespace {

// The order of lib/exit/mlp.ts dot4, which training and the TypeScript reference use: each lane is one sequential
// chain, so a compiler that puts the four chains in vector lanes keeps every sum exactly (no reassociation, and
// this translation unit is built without FMA contraction of a baseline target).
double dot4(const double* w, const double* x, int64_t d) {
  double l0 = 0.0, l1 = 0.0, l2 = 0.0, l3 = 0.0;
  const int64_t d4 = d - d % 4;
  int64_t j = 0;
  for (; j < d4; j += 4) {
    l0 += w[j] * x[j];
    l1 += w[j + 1] * x[j + 1];
    l2 += w[j + 2] * x[j + 2];
    l3 += w[j + 3] * x[j + 3];
  }
  for (; j < d; ++j) l0 += w[j] * x[j];
  return (l0 + l1) + (l2 + l3);
}

bool is_f64(const Napi::Value& v) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_float64_array;
}

}  // namespace

Napi::Value JsMatvecF64(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !is_f64(info[0]) || !is_f64(info[1]) || !is_f64(info[2]))
    throw js_error(env, "INVALID_OPTION", "matvecF64(w: Float64Array, x: Float64Array, out: Float64Array)");
  Napi::Float64Array w = info[0].As<Napi::Float64Array>();
  Napi::Float64Array x = info[1].As<Napi::Float64Array>();
  Napi::Float64Array out = info[2].As<Napi::Float64Array>();
  const int64_t d = static_cast<int64_t>(x.ElementLength());
  const int64_t rows = static_cast<int64_t>(out.ElementLength());
  if (d == 0 || static_cast<int64_t>(w.ElementLength()) != rows * d)
    throw js_error(env, "INVALID_OPTION",
                   "matvecF64: w has " + std::to_string(w.ElementLength()) + " values, expected out.length (" + std::to_string(rows) +
                       ") x x.length (" + std::to_string(d) + ")");
  const double* wp = w.Data();
  const double* xp = x.Data();
  double* op = out.Data();
  for (int64_t r = 0; r < rows; ++r) op[r] = dot4(wp + r * d, xp, d);
  return env.Undefined();
}

}  // namespace adainfer
