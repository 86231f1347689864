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

// ---- block layouts, byte for byte as ggml stores them (ggml-common.h) --------------------------------
// fp16 fields are raw IEEE binary16 bits. Element i of a block is "element i of its row segment".
constexpr int kQK = 32;    // elements per block of the 32-element types
constexpr int kQKK = 256;  // elements per super-block of the K-quants

// Q4_0: x = d * (q - 8), q in [0, 15]. Byte j holds element j (low nibble) and element j + 16 (high nibble).
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[16];
};
// Q4_1: x = d * q + m, q in [0, 15]; nibbles as Q4_0.
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[16];
};
// Q5_0: x = d * (q - 16), q in [0, 31]; low 4 bits as Q4_0, bit 4 of element j is bit j of qh (little endian).
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[16];
};
// Q5_1: x = d * q + m, q in [0, 31]; bits as Q5_0.
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[16];
};
// Q8_0: x = d * q, q in [-128, 127].
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[32];
};
// Q8_1 (activations only in ggml): as Q8_0 plus s = d * sum(q).
struct BlockQ8_1 {
  uint16_t d;
  uint16_t s;
  int8_t qs[32];
};
// Q4_K: 8 sub-blocks of 32; x = d * sc[j] * q - dmin * m[j], q in [0, 15], sc/m 6-bit (packed in `scales`,
// see k_scale_min). qs: 4 chunks of 32 bytes; chunk c holds element 64c + l (low nibble of byte l) and
// element 64c + 32 + l (high nibble).
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[128];
};
// Q5_K: as Q4_K with a fifth bit: bit 4 of element 64c + l is bit 2c of qh[l], of element 64c + 32 + l bit 2c+1.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
// Q6_K: 16 sub-blocks of 16; x = d * sc[j] * (q - 32), q in [0, 63], sc int8. Two halves of 128 elements;
// in half h (ql + 64h, qh + 32h), for l < 32: element l = low nibble of ql[l] | (qh[l] bits 0-1) << 4,
// element 32 + l = low nibble of ql[32 + l] | (qh[l] bits 2-3) << 4, element 64 + l = high nibble of ql[l] |
// (qh[l] bits 4-5) << 4, element 96 + l = high nibble of ql[32 + l] | (qh[l] bits 6-7) << 4.
struct BlockQ6_K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
};
// Q8_K: x = d * q with a float d; bsums[g] = sum of q over elements 16g .. 16g + 15.
struct BlockQ8_K {
  float d;
  int8_t qs[256];
  int16_t bsums[16];
};

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
                  sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36,
              "32-element block layouts");
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 &&
                  sizeof(BlockQ8_K) == 292,
              "K-quant block layouts");

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block: j < 4 in the low 6 bits of bytes
// j and j + 4; j >= 4 in the nibbles of byte j + 4 with their top 2 bits in bits 6-7 of bytes j - 4 / j.
// static: every translation unit (each compiled for its own instruction set) keeps a private copy.
static inline void k_scale_min(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

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
