// JS functions `quantize` and `dequantize`: whole tensors between float32 and the GGML types, for the
// `adainfer quantize` command and the benchmark model generator (lib/quant/).
#pragma once
#include <napi.h>

namespace adainfer {

// quantize(type, src: Float32Array, dst: Uint8Array, nRows, nPerRow, threads?) -> bytes written
//   src holds nRows * nPerRow floats; dst at least nRows * rowBytes(type, nPerRow) bytes.
Napi::Value JsQuantize(const Napi::CallbackInfo& info);
// dequantize(type, src: Uint8Array, dst: Float32Array, nRows, nPerRow) -> floats written
Napi::Value JsDequantize(const Napi::CallbackInfo& info);

}  // namespace adainfer
