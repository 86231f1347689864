// Quantization to the GGML tensor types, written for this runtime (round-to-nearest reference quantizers in
// the manner of ggml's *_ref functions, and the usual per-sub-block scale search for the K-quants), plus the
// quantization of activation rows that the integer matmuls consume (see ActFormat in kernels.h).
// Compiled for baseline x86-64: callable from anywhere.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/ggml_types.h"

namespace adainfer {

// True when quantize_rows can produce `type`: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q8_K.
bool quantize_supported(int32_t type);

// Writes n_rows rows of n_per_row floats (src, row-major) as `type` into dst (row_bytes(type, n_per_row) bytes
// per row, rows back to back). Returns the bytes written, or 0 when the type is not supported or n_per_row is
// not a multiple of its block size. Deterministic; no threads.
size_t quantize_rows(int32_t type, const float* src, void* dst, int64_t n_rows, int64_t n_per_row);

// ggml's nearest_int: round half to even (as rint in the default rounding mode) for |x| < 2^22.
int nearest_int(float x);

// ---- dequantization: out[i] = element i of a row of n elements (n a multiple of the block size) -----------
void dequant_row_q4_0(const void* row, float* out, int64_t n);
void dequant_row_q4_1(const void* row, float* out, int64_t n);
void dequant_row_q5_0(const void* row, float* out, int64_t n);
void dequant_row_q5_1(const void* row, float* out, int64_t n);
void dequant_row_q8_0(const void* row, float* out, int64_t n);
void dequant_row_q4_k(const void* row, float* out, int64_t n);
void dequant_row_q5_k(const void* row, float* out, int64_t n);
void dequant_row_q6_k(const void* row, float* out, int64_t n);
void dequant_row_q8_k(const void* row, float* out, int64_t n);

// Codes (0..15, or 0..31 with qh) of the 256 elements of a Q4_K (qh == nullptr) / Q5_K block, in element order.
void unpack_k_codes(const uint8_t* qs, const uint8_t* qh, int8_t* codes);
// Values (code - 32, in -32..31) of the 256 elements of a Q6_K block, in element order.
void unpack_q6_values(const BlockQ6_K& b, int8_t* values);

// ---- activation rows (reference versions; the SIMD tables have their own, bit-identical) -------------------
// x: n floats -> one row in the ActFormat layout of kernels.h (act_row_bytes(format, n) bytes).
void quantize_act_q8_0_ref(const float* x, uint8_t* out, int64_t n);
void quantize_act_q8_k_ref(const float* x, uint8_t* out, int64_t n);
void quantize_act_bf16_ref(const float* x, uint8_t* out, int64_t n);

}  // namespace adainfer
