// The float vector traits of the AVX-512 builds (kernels_avx512.cpp, kernels_avx512_vnni.cpp) for
// simd_common.h. Include only from a translation unit compiled with the AVX-512 flags; anonymous namespace
// (each translation unit keeps its own copy, see simd_common.h).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace adainfer {
namespace {

// Vector traits for simd_common.h: 16 floats per __m512.
struct Avx512 {
  using V = __m512;
  static constexpr int64_t kWidth = 16;
  // Prefill tile: 6 rows x 4 tokens = 24 accumulators + 6 weight registers + 1 activation of the 32 zmm.
  // (Measured on Zen 5: 10-15% above 4x4 and 5x4.)
  static constexpr int kPrefillRows = 6;
  static constexpr int kPrefillTokens = 4;
  // Decode: one row at a time, 4 accumulators (measured on Zen 5; see matmul in simd_common.h).
  static constexpr int kDecodeRows = 1;
  static constexpr int kDecodeAccumulators = 4;
  // Attention weighted sum: 4 heads x 4 = 16 accumulators + 4 V + 1 probability of the 32 zmm.
  static constexpr int kAttnDimRegs = 4;

  static __mmask16 lane_mask(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }  // n < 16

  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float f) { return _mm512_set1_ps(f); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V load_partial(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(lane_mask(n), p); }
  static void store_partial(float* p, V v, int64_t n) { _mm512_mask_storeu_ps(p, lane_mask(n), v); }

  static __m256i load_16x16(const uint16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static V load_f16(const uint16_t* p) { return _mm512_cvtph_ps(load_16x16(p)); }
  static V load_f16_partial(const uint16_t* p, int64_t n) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lane_mask(n), p));
  }
  static V bf16_bits_to_f32(__m256i h) {  // bf16 is the top half of an f32
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static V load_bf16(const uint16_t* p) { return bf16_bits_to_f32(load_16x16(p)); }
  static V load_bf16_partial(const uint16_t* p, int64_t n) {
    return bf16_bits_to_f32(_mm256_maskz_loadu_epi16(lane_mask(n), p));
  }

  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V round_nearest(V x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V pow2i(V n) {  // build the float 2^n directly: biased exponent n + 127, zero mantissa
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
  static V select_gt(V x, V limit, V a, V b) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, limit, _CMP_GT_OQ), b, a);
  }

  static __m256 fold(V v) { return _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)); }
  static float reduce_add(V v) {
    const __m256 h = fold(v);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float reduce_max(V v) {
    __m256 h = _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  // Fold each register to 8 lanes, then three rounds of pairwise adds as in the AVX2 variant.
  static void reduce4(V a, V b, V c, V d, float* out) {
    const __m256 ab = _mm256_hadd_ps(fold(a), fold(b));
    const __m256 cd = _mm256_hadd_ps(fold(c), fold(d));
    const __m256 abcd = _mm256_hadd_ps(ab, cd);
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1)));
  }
};

}  // namespace
}  // namespace adainfer
