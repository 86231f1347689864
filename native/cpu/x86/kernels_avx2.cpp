// AVX2 + FMA + F16C kernels (Haswell and later, Zen and later). Compiled with -mavx2 -mfma -mf16c;
// nothing here runs unless cpu_features() reported AVX2 (static data is constant-initialised).
#include "core/kernels.h"

#if ADAINFER_X86

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace adainfer {
namespace {

// Vector traits for simd_common.h: 8 floats per __m256.
struct Avx2 {
  using V = __m256;
  static constexpr int64_t kWidth = 8;
  // Prefill tile: 3 rows x 4 tokens = 12 accumulators + 3 weight registers + 1 activation = all 16 ymm.
  // (Measured: 2x4 and 4x3 reach about half the FMA throughput of 3x4.)
  static constexpr int kPrefillRows = 3;
  static constexpr int kPrefillTokens = 4;
  // Decode: 4 rows per pass, one accumulator each (the 4 rows are the independent FMA chains). Measured on
  // Zen 3 (F16, TinyLlama shapes, 8 layers streamed, 1 thread, CPU time, alternating): 15-18 GB/s against
  // 11-12 for one row at a time with 4 accumulators; see matmul in simd_common.h.
  static constexpr int kDecodeRows = 4;
  static constexpr int kDecodeAccumulators = 1;
  // Attention weighted sum: 4 heads x 2 = 8 accumulators + 2 V + 1 probability of the 16 ymm.
  static constexpr int kAttnDimRegs = 2;

  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float f) { return _mm256_set1_ps(f); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }

  // Lanes [0, n) set: vmaskmov neither reads nor faults on the other lanes.
  static __m256i lane_mask(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V load_partial(const float* p, int64_t n) { return _mm256_maskload_ps(p, lane_mask(n)); }
  static void store_partial(float* p, V v, int64_t n) { _mm256_maskstore_ps(p, lane_mask(n), v); }

  static V load_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static V load_bf16(const uint16_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));  // bf16 is the top half of an f32
  }
  // No 16-bit masked load in AVX2: copy the n elements into a zeroed block (tails only, so rare).
  static V load_f16_partial(const uint16_t* p, int64_t n) {
    uint16_t block[8] = {};
    std::memcpy(block, p, static_cast<size_t>(n) * sizeof(uint16_t));
    return load_f16(block);
  }
  static V load_bf16_partial(const uint16_t* p, int64_t n) {
    uint16_t block[8] = {};
    std::memcpy(block, p, static_cast<size_t>(n) * sizeof(uint16_t));
    return load_bf16(block);
  }

  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V round_nearest(V x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V pow2i(V n) {  // build the float 2^n directly: biased exponent n + 127, zero mantissa
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  static V select_gt(V x, V limit, V a, V b) { return _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, limit, _CMP_GT_OQ)); }

  static float reduce_add(V v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float reduce_max(V v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  // Three rounds of pairwise adds leave [a, b, c, d] partial sums in each 128-bit half.
  static void reduce4(V a, V b, V c, V d, float* out) {
    const __m256 ab = _mm256_hadd_ps(a, b);
    const __m256 cd = _mm256_hadd_ps(c, d);
    const __m256 abcd = _mm256_hadd_ps(ab, cd);
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1)));
  }
};

}  // namespace
}  // namespace adainfer

#include "cpu/x86/simd_common.h"
#include "cpu/x86/quant_x86.h"

namespace adainfer {
namespace {
constexpr KernelTable make_table() {
  KernelTable t = make_simd_table<Avx2>("avx2");
  add_quant_kernels(t);
  return t;
}
constexpr KernelTable kAvx2Table = make_table();
}  // namespace

const KernelTable* kernels_avx2() { return &kAvx2Table; }

}  // namespace adainfer

#else  // not x86: the variant does not exist

namespace adainfer {
const KernelTable* kernels_avx2() { return nullptr; }
}  // namespace adainfer

#endif
