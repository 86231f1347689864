// GGML tensor types as GGUF stores them (ids and block layouts are ggml's, verbatim).
// A type is computable when the chosen KernelTable has a matmul for it; the loader rejects the rest.
#pragma once
#include <cstddef>
#include <cstdint>

namespace adainfer {

enum class GgmlType : int32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  BF16 = 30,
};

// Elements per block and bytes per block, as in ggml's type traits.
struct TypeTraits {
  int32_t block_elems;
  int32_t block_bytes;
};

// Returns false for a type id the runtime has no kernels for.
bool type_traits(int32_t type, TypeTraits* out);

// Bytes of one row of `n` elements; 0 if n is not a multiple of the block size or the type is unknown.
size_t row_bytes(int32_t type, int64_t n);

// Scalar conversions between f32 and the 16-bit float formats GGUF stores, bit-exact (defined in
// ggml_types.cpp, compiled for baseline x86-64, so any translation unit may call them).
//   fp16: IEEE binary16 (subnormals, +-0, inf and NaN as IEEE says; f32 -> f16 rounds to nearest even,
//         overflow gives inf, NaN stays a quiet NaN with the same sign)
//   bf16: the upper 16 bits of an f32 (f32 -> bf16 rounds to nearest even; NaN stays a quiet NaN)
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);

}  // namespace adainfer
