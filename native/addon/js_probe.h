// JS function `matvecF64`: the hidden-state probe's matrix-vector product (lib/exit/probe.ts, mlp.ts), the one
// exit-decision cost that grows with the model's width and runs after every checked layer.
#pragma once
#include <napi.h>

namespace adainfer {

// matvecF64(w: Float64Array [rows * d], x: Float64Array [d], out: Float64Array [rows]) -> undefined
//   out[r] = w[r*d .. r*d + d) . x, summed in the order of lib/exit/mlp.ts dot4 (four lanes j mod 4 over the
//   multiple of 4, the rest into lane 0, then (l0 + l1) + (l2 + l3)): bit for bit what the TypeScript computes.
Napi::Value JsMatvecF64(const Napi::CallbackInfo& info);

}  // namespace adainfer
