// Kernels for the quantized weight types on x86, shared by the AVX2, AVX-512 and AVX-512 VNNI builds.
//
// Include ONLY from an instruction-set translation unit, after simd_common.h (which defines the float
// traits). The instruction set is read from the compiler's macros (__AVX512BW__, __AVX512VNNI__,
// __AVX512BF16__), so each translation unit gets the code its flags allow. Everything lives in an anonymous
// namespace (see simd_common.h for why), and nothing here uses std templates or inline functions with
// external linkage: only C library calls (malloc/free/memcpy).
//
// Numerics (as ggml-cpu, whose scalar build made the goldens): activations are quantized once per matmul
// to Q8_0 blocks (types of 32-element blocks) or Q8_K blocks (K-quants) with the rules of the reference
// quantizers (bit-identical to quantize_act_*_ref), and the dot products are exact integer sums per block,
// scaled in float. Only the order of the float additions differs from the scalar reference.
//
// Three kernels:
//  - row kernel (decode and small batches): one weight row at a time, lanes along the row. Each group of
//    blocks is unpacked to unsigned codes once and multiplied with T tokens' int8 activations (vpdpbusd, or
//    vpmaddubsw + vpmaddwd without VNNI). Types whose values are code - offset (Q4_0: 8, Q5_0: 16, Q8_0 with
//    VNNI: 128, Q6_K: 32) subtract offset * sum(activation codes), which the activation rows carry.
//    A few rows (2 .. kFewRowsMax, matmul_act_few: speculative verify steps) go through it all at once, in one
//    pass over the weights like decode (matmul_act_few_q).
//  - prefill without VNNI: the row kernel on tiles of 4 tokens, rows and tokens blocked so that a row stays
//    in L1 and 64 tokens' activations in L2. On AVX2 the types of 32-element blocks take tiles of 8 weight rows x
//    8 tokens instead (rows8_dot, also their few-row and decode kernel, so that a row's bits do not depend on the
//    row count): lanes along the 8 weight rows, so the conversion and multiply-add go once per block and token for
//    all 8 rows. Measured on the shared Zen 3 (CPU time, TinyLlama layer, 128 tokens), its first form (elements in
//    lanes, folded with vphaddw) against the row kernel: Q4_0 169.6 -> 98.5 ms, Q5_0 226 -> 129.5 ms; 8 rows
//    streamed (22 layers) Q4_0 227.5 -> 146.5 ms, 1 row 58.4 -> 47.0 ms. The present form (rows in lanes) against that: see rows8_dot.
//    Q4_K / Q5_K (from 8 tokens) and Q8_0 (from 32) take 8-row panels instead (matmul_panels8): the same rows-in-lanes
//    form, but the 8 rows are transposed once into a buffer (K-quants: with their scales and mins unpacked) that
//    every token of the matmul reads, 4 tokens per micro-kernel call. For the K-quants it halves the multiplies
//    against the row kernel (a sub-block's 8 vpmaddubsw add up in 16 bits, one vpmaddwd applies 8 rows' scales);
//    for Q8_0 it drops rows8_dot's per-8-token transposes and register spills. Measured: see k45_panel_dot and
//    q8_0_panel_dot.
//  - prefill with VNNI: 16 weight rows are unpacked into a panel (codes of 4 consecutive elements of the 16
//    rows side by side, one float scale and bias per row and sub-block) that stays in L1/L2; the micro-kernel
//    multiplies it with up to 8 tokens at once, lanes across the 16 rows, the 4 activation bytes broadcast
//    (vpdpbusd with a {1to16} operand), so each panel load feeds 8 dot-product instructions.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "core/ggml_types.h"
#include "core/kernels.h"
#include "core/quantize.h"

#if defined(__AVX512BW__)
#define ADAINFER_Q512 1
#else
#define ADAINFER_Q512 0
#endif
#if defined(__AVX512VNNI__)
#define ADAINFER_QVNNI 1
#else
#define ADAINFER_QVNNI 0
#endif

namespace adainfer {
namespace {

// ---- integer vector layer ------------------------------------------------------------------------------

#if ADAINFER_Q512
using QI = __m512i;
using QF = __m512;
inline QI qzero() { return _mm512_setzero_si512(); }
inline QI qload(const void* p) { return _mm512_loadu_si512(p); }
inline QI qadd(QI a, QI b) { return _mm512_add_epi32(a, b); }
inline QF qcvt(QI v) { return _mm512_cvtepi32_ps(v); }
inline QI qmadd16(QI a, QI b) { return _mm512_madd_epi16(a, b); }
inline QI qmul32(QI a, QI b) { return _mm512_mullo_epi32(a, b); }
// acc + sum over each 4 bytes of u (unsigned) * s (signed), per int32 lane. Without VNNI the pairs go
// through int16 with saturation, so u must stay <= 128 there (true of every caller: codes <= 63, or |w|).
inline QI qdot(QI acc, QI u, QI s) {
#if ADAINFER_QVNNI
  return _mm512_dpbusd_epi32(acc, u, s);
#else
  return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
#endif
}
// acc + sum of a (signed) * b (signed): |a| as the unsigned operand, b with a's sign (|a| <= 128, b != -128).
inline QI qdot_ss(QI acc, QI a, QI b) {
  const __mmask64 neg = _mm512_movepi8_mask(a);
  const QI bs = _mm512_mask_sub_epi8(b, neg, _mm512_setzero_si512(), b);
  return qdot(acc, _mm512_abs_epi8(a), bs);
}
inline float qreduce(QF v) { return _mm512_reduce_add_ps(v); }
// acc + a * b per int32 lane, where a and b fit in 16 bits (b's upper 16 bits zero): one vpdpwssd with VNNI.
inline QI qacc16(QI acc, QI a, QI b) {
#if ADAINFER_QVNNI
  return _mm512_dpwssd_epi32(acc, a, b);
#else
  return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
#endif
}
#else
using QI = __m256i;
using QF = __m256;
inline QI qzero() { return _mm256_setzero_si256(); }
inline QI qload(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline QI qadd(QI a, QI b) { return _mm256_add_epi32(a, b); }
inline QF qcvt(QI v) { return _mm256_cvtepi32_ps(v); }
inline QI qmadd16(QI a, QI b) { return _mm256_madd_epi16(a, b); }
inline QI qmul32(QI a, QI b) { return _mm256_mullo_epi32(a, b); }
inline QI qdot(QI acc, QI u, QI s) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}
inline QI qdot_ss(QI acc, QI a, QI b) { return qdot(acc, _mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a)); }
inline float qreduce(QF v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline int32_t qreduce_i(QI v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}
#endif

inline float half_to_float(uint16_t h) { return _cvtsh_ss(h); }
inline float round_to_half(float f) { return _cvtsh_ss(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT)); }
inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline __m128i load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The 6-bit scales and mins of the 8 sub-blocks of a Q4_K / Q5_K block from its 12 packed bytes, as four
// words of four bytes: [scales 0-3, scales 4-7, mins 0-3, mins 4-7] (the packing k_scale_min reads one by one).
inline void k_scale_words(const uint8_t* s, uint32_t* out) {
  const uint32_t w0 = load_u32(s), w1 = load_u32(s + 4), w2 = load_u32(s + 8);
  const uint32_t low6 = 0x3f3f3f3fu, low4 = 0x0f0f0f0fu, low2 = 0x03030303u;
  out[0] = w0 & low6;
  out[1] = (w2 & low4) | (((w0 >> 6) & low2) << 4);
  out[2] = w1 & low6;
  out[3] = ((w2 >> 4) & low4) | (((w1 >> 6) & low2) << 4);
}

// k_scale_words in vector registers: the 16 bytes [scales 0-7, mins 0-7] of a Q4_K / Q5_K block (reads 16 bytes
// at s: the 12 packed bytes and 4 bytes of what follows them in the block).
inline __m128i k_scales_vec(const uint8_t* s) {
  const __m128i v = load128(s);                                     // w0 w1 w2 -
  const __m128i p = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0));  // w0 w2 w1 w2
  const __m128i q = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0));  // w0 w0 w1 w1
  const __m128i low = _mm_and_si128(_mm_srlv_epi32(p, _mm_setr_epi32(0, 0, 0, 4)),
                                    _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
  // bits 6-7 of each byte of w0 (w1) into bits 4-5: ((w >> 6) << 4) masked per byte
  const __m128i high = _mm_and_si128(_mm_slli_epi32(_mm_srli_epi32(q, 6), 4), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
  return _mm_or_si128(low, high);
}

// ---- activation quantizers (bit-identical to quantize_act_*_ref) ---------------------------------------------

// Zeros the slots of qn past the last block (n not a multiple of 128).
inline void zero_qn_tail(int8_t* qn, int64_t n) {
  const int64_t padded = (n + 127) / 128 * 128;
  for (int64_t i = n; i < padded; i += 16) std::memset(qn + act_qn_pos(i), 0, 16);
}

#if ADAINFER_Q512
// roundf (half away from zero) of each lane, as int32: trunc, then one step away from zero when the dropped
// fraction (exact) is >= 0.5.
inline __m512i round_away_i32(__m512 v) {
  const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m512 frac = _mm512_abs_ps(_mm512_sub_ps(v, t));
  const __mmask16 up = _mm512_cmp_ps_mask(frac, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __m512 step = _mm512_or_ps(_mm512_and_ps(v, _mm512_set1_ps(-0.0f)), _mm512_set1_ps(1.0f));
  return _mm512_cvttps_epi32(_mm512_mask_add_ps(t, up, t, step));
}

void quantize_act_q8_0(const float* x, uint8_t* out, int64_t n) {
  const ActQ8_0Row r = act_q8_0_row(out, n);
  int8_t* q = const_cast<int8_t*>(r.q);
  float* d_out = const_cast<float*>(r.d);
  float* s_out = const_cast<float*>(r.s);
  float* sum_out = const_cast<float*>(r.sum);
  int8_t* qn = const_cast<int8_t*>(r.qn);
  zero_qn_tail(qn, n);
  for (int64_t b = 0; b < n / 32; ++b) {
    const __m512 x0 = _mm512_loadu_ps(x + 32 * b), x1 = _mm512_loadu_ps(x + 32 * b + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    const __m512 vid = _mm512_set1_ps(id);
    const __m512i q0 = round_away_i32(_mm512_mul_ps(x0, vid)), q1 = round_away_i32(_mm512_mul_ps(x1, vid));
    const __m128i lo = _mm512_cvtepi32_epi8(q0), hi = _mm512_cvtepi32_epi8(q1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 32 * b), lo);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 32 * b + 16), hi);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qn + act_qn_pos(32 * b)), lo);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qn + act_qn_pos(32 * b + 16)), hi);
    const int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    d_out[b] = round_to_half(d);
    s_out[b] = round_to_half(static_cast<float>(sum) * d);
    sum_out[b] = static_cast<float>(sum);
  }
}

void quantize_act_q8_k(const float* x, uint8_t* out, int64_t n) {
  const ActQ8_KRow r = act_q8_k_row(out, n);
  int8_t* q = const_cast<int8_t*>(r.q);
  float* d_out = const_cast<float*>(r.d);
  int16_t* bsums = const_cast<int16_t*>(r.bsums);
  float* sum16 = const_cast<float*>(r.sum16);
  float* sum32 = const_cast<float*>(r.sum32);
  int8_t* qk = const_cast<int8_t*>(r.qk);
  for (int64_t b = 0; b < n / 256; ++b) {
    const float* xb = x + 256 * b;
    __m512 m = _mm512_setzero_ps();
    for (int i = 0; i < 16; ++i) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(xb + 16 * i)));
    const float amax = _mm512_reduce_max_ps(m);
    if (amax == 0.f) {
      std::memset(q + 256 * b, 0, 256);
      std::memset(qk + 256 * b, 0, 256);
      d_out[b] = 0.f;
      for (int g = 0; g < 16; ++g) {
        bsums[16 * b + g] = 0;
        sum16[16 * b + g] = 0.f;
      }
      for (int k = 0; k < 8; ++k) sum32[8 * b + k] = 0.f;
      continue;
    }
    float max = 0.f;  // the signed value of the first element of largest magnitude
    for (int i = 0; i < 16; ++i) {
      const __mmask16 hit =
          _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(xb + 16 * i)), _mm512_set1_ps(amax), _CMP_EQ_OQ);
      if (hit) {
        max = xb[16 * i + __builtin_ctz(hit)];
        break;
      }
    }
    const float iscale = -127.f / max;
    const __m512 vs = _mm512_set1_ps(iscale);
    for (int i = 0; i < 16; ++i) {
      // nearest_int is round-half-even, as the default MXCSR rounding of cvtps2dq
      const __m512i qi = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + 16 * i), vs)),
                                          _mm512_set1_epi32(127));
      const __m128i q8 = _mm512_cvtepi32_epi8(qi);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 256 * b + 16 * i), q8);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qk + act_qk_pos(256 * b + 16 * i)), q8);
      const int s = _mm512_reduce_add_epi32(qi);
      bsums[16 * b + i] = static_cast<int16_t>(s);
      sum16[16 * b + i] = static_cast<float>(s);
    }
    for (int k = 0; k < 8; ++k) sum32[8 * b + k] = sum16[16 * b + 2 * k] + sum16[16 * b + 2 * k + 1];
    d_out[b] = 1.f / iscale;
  }
}
#else
inline __m256i round_away_i32(__m256 v) {
  const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
  const __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
  const __m256 step = _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0f));
  return _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(up, step)));
}

// 32 int32 (four vectors, elements in order) -> 32 int8 in order.
inline __m256i pack_i8x32(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
  const __m256i abcd = _mm256_packs_epi16(ab, cd);
  return _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

inline float hmax256(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

void quantize_act_q8_0(const float* x, uint8_t* out, int64_t n) {
  const ActQ8_0Row r = act_q8_0_row(out, n);
  int8_t* q = const_cast<int8_t*>(r.q);
  float* d_out = const_cast<float*>(r.d);
  float* s_out = const_cast<float*>(r.s);
  float* sum_out = const_cast<float*>(r.sum);
  int8_t* qn = const_cast<int8_t*>(r.qn);
  zero_qn_tail(qn, n);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t b = 0; b < n / 32; ++b) {
    __m256 v[4];
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(x + 32 * b + 8 * i);
      m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[i]));
    }
    const float amax = hmax256(m);
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    __m256i qi[4];
    __m256i sum = _mm256_setzero_si256();
    for (int i = 0; i < 4; ++i) {
      qi[i] = round_away_i32(_mm256_mul_ps(v[i], _mm256_set1_ps(id)));
      sum = _mm256_add_epi32(sum, qi[i]);
    }
    const __m256i q8 = pack_i8x32(qi[0], qi[1], qi[2], qi[3]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 32 * b), q8);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qn + act_qn_pos(32 * b)), _mm256_castsi256_si128(q8));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qn + act_qn_pos(32 * b + 16)), _mm256_extracti128_si256(q8, 1));
    const int s = qreduce_i(sum);
    d_out[b] = round_to_half(d);
    s_out[b] = round_to_half(static_cast<float>(s) * d);
    sum_out[b] = static_cast<float>(s);
  }
}

void quantize_act_q8_k(const float* x, uint8_t* out, int64_t n) {
  const ActQ8_KRow r = act_q8_k_row(out, n);
  int8_t* q = const_cast<int8_t*>(r.q);
  float* d_out = const_cast<float*>(r.d);
  int16_t* bsums = const_cast<int16_t*>(r.bsums);
  float* sum16 = const_cast<float*>(r.sum16);
  float* sum32 = const_cast<float*>(r.sum32);
  int8_t* qk = const_cast<int8_t*>(r.qk);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t b = 0; b < n / 256; ++b) {
    const float* xb = x + 256 * b;
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < 32; ++i) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + 8 * i)));
    const float amax = hmax256(m);
    if (amax == 0.f) {
      std::memset(q + 256 * b, 0, 256);
      std::memset(qk + 256 * b, 0, 256);
      d_out[b] = 0.f;
      for (int g = 0; g < 16; ++g) {
        bsums[16 * b + g] = 0;
        sum16[16 * b + g] = 0.f;
      }
      for (int k = 0; k < 8; ++k) sum32[8 * b + k] = 0.f;
      continue;
    }
    float max = 0.f;
    for (int i = 0; i < 32; ++i) {
      const int hit = _mm256_movemask_ps(
          _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(xb + 8 * i)), _mm256_set1_ps(amax), _CMP_EQ_OQ));
      if (hit) {
        max = xb[8 * i + __builtin_ctz(static_cast<unsigned>(hit))];
        break;
      }
    }
    const float iscale = -127.f / max;
    const __m256 vs = _mm256_set1_ps(iscale);
    for (int g = 0; g < 8; ++g) {  // 32 elements = two bsum groups at a time
      __m256i qi[4];
      for (int i = 0; i < 4; ++i) {
        qi[i] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 32 * g + 8 * i), vs)),
                                 _mm256_set1_epi32(127));
      }
      const __m256i q8 = pack_i8x32(qi[0], qi[1], qi[2], qi[3]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 256 * b + 32 * g), q8);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qk + act_qk_pos(256 * b + 32 * g)), q8);
      const int s0 = qreduce_i(_mm256_add_epi32(qi[0], qi[1]));
      const int s1 = qreduce_i(_mm256_add_epi32(qi[2], qi[3]));
      bsums[16 * b + 2 * g] = static_cast<int16_t>(s0);
      bsums[16 * b + 2 * g + 1] = static_cast<int16_t>(s1);
      sum16[16 * b + 2 * g] = static_cast<float>(s0);
      sum16[16 * b + 2 * g + 1] = static_cast<float>(s1);
      sum32[8 * b + g] = static_cast<float>(s0 + s1);
    }
    d_out[b] = 1.f / iscale;
  }
}
#endif

#if defined(__AVX512BF16__)
void quantize_act_bf16(const float* x, uint8_t* out, int64_t n) {
  uint16_t* h = reinterpret_cast<uint16_t*>(out);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256bh b = _mm512_cvtneps_pbh(_mm512_loadu_ps(x + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + i), reinterpret_cast<const __m256i&>(b));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m256bh b = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + i));
    _mm256_mask_storeu_epi16(h + i, m, reinterpret_cast<const __m256i&>(b));
  }
}
#endif

// ---- weight types ----------------------------------------------------------------------------------------------
// Each type: block geometry, activation format, how its values relate to its codes (offset or min), and
//   codes of one "unit" of kUnit elements (AVX-512: 64, AVX2: 32) as unsigned bytes in element order.

constexpr int kUnit = ADAINFER_Q512 ? 64 : 32;
// Software prefetch distance of the row kernels, in bytes of weights (ADAINFER_PREFETCH overrides at build).
#ifndef ADAINFER_PREFETCH
#define ADAINFER_PREFETCH 16384
#endif
constexpr int kPrefetchAhead = ADAINFER_PREFETCH;
#ifndef ADAINFER_PREFETCH_L2
#define ADAINFER_PREFETCH_L2 0
#endif
constexpr int kPrefetchL2 = ADAINFER_PREFETCH_L2;
// Weight rows per call of the decode row kernel (ADAINFER_DECODE_ROWS overrides at build).
#ifndef ADAINFER_DECODE_ROWS
#define ADAINFER_DECODE_ROWS 4
#endif
constexpr int kDecodeRows = ADAINFER_DECODE_ROWS;

// Types of 32-element blocks: value = d * (code - kOffset) [+ m]; codes 4 or 5 bits, or Q8_0's bytes.
struct TQ4_0 {
  static constexpr GgmlType kType = GgmlType::Q4_0;
  static constexpr int kBytes = 18, kQs = 2, kQh = 0, kM = 0, kOffset = 8;
  static constexpr bool kQ5 = false, kQ8 = false, kMin = false;
};
struct TQ4_1 {
  static constexpr GgmlType kType = GgmlType::Q4_1;
  static constexpr int kBytes = 20, kQs = 4, kQh = 0, kM = 2, kOffset = 0;
  static constexpr bool kQ5 = false, kQ8 = false, kMin = true;
};
struct TQ5_0 {
  static constexpr GgmlType kType = GgmlType::Q5_0;
  static constexpr int kBytes = 22, kQs = 6, kQh = 2, kM = 0, kOffset = 16;
  static constexpr bool kQ5 = true, kQ8 = false, kMin = false;
};
struct TQ5_1 {
  static constexpr GgmlType kType = GgmlType::Q5_1;
  static constexpr int kBytes = 24, kQs = 8, kQh = 4, kM = 2, kOffset = 0;
  static constexpr bool kQ5 = true, kQ8 = false, kMin = true;
};
// Q8_0: with VNNI the codes are the bytes + 128 (xor of the sign bit), offset 128; without, the signed bytes
// go through the sign trick (qdot_ss) and there is no offset.
struct TQ8_0 {
  static constexpr GgmlType kType = GgmlType::Q8_0;
  static constexpr int kBytes = 34, kQs = 2, kQh = 0, kM = 0, kOffset = ADAINFER_QVNNI ? 128 : 0;
  static constexpr bool kQ5 = false, kQ8 = true, kMin = false;
};

#if ADAINFER_Q512
// Shift counts per 16-bit word: 0 in 128-bit lanes 0 and 2, 4 in lanes 1 and 3 (low then high nibbles).
inline __m512i nib_shift_128() {
  return _mm512_set_epi32(0x00040004, 0x00040004, 0x00040004, 0x00040004, 0, 0, 0, 0, 0x00040004, 0x00040004,
                          0x00040004, 0x00040004, 0, 0, 0, 0);
}
// 0 in the low 256 bits, `hi` (a 16-bit count, twice per word pair) in the high 256 bits.
inline __m512i shift_halves(int lo, int hi) {
  const int l = lo | (lo << 16), h = hi | (hi << 16);
  return _mm512_set_epi32(h, h, h, h, h, h, h, h, l, l, l, l, l, l, l, l);
}

// The fp16 values at p, p + kStride, ..., p + 15 * kStride (the first cnt of them; the rest 0) as floats.
template <int kStride>
inline __m512 halves16(const uint8_t* p, int cnt) {
  uint64_t q[4] = {0, 0, 0, 0};
  if (cnt == 16) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) q[i >> 2] |= static_cast<uint64_t>(load_u16(p + i * kStride)) << (16 * (i & 3));
  } else {
    for (int i = 0; i < cnt; ++i) q[i >> 2] |= static_cast<uint64_t>(load_u16(p + i * kStride)) << (16 * (i & 3));
  }
  return _mm512_cvtph_ps(_mm256_setr_epi64x(static_cast<int64_t>(q[0]), static_cast<int64_t>(q[1]),
                                            static_cast<int64_t>(q[2]), static_cast<int64_t>(q[3])));
}

// Codes of blocks b0 and b0 + kBytes (kTwo) or of b0 alone (high half zero), 64 bytes in element order.
template <class Ty, bool kTwo>
inline __m512i codes_a(const uint8_t* b0) {
  const uint8_t* b1 = b0 + Ty::kBytes;
  if constexpr (Ty::kQ8) {
    __m512i v = _mm512_zextsi256_si512(load256(b0 + Ty::kQs));
    if constexpr (kTwo) v = _mm512_inserti64x4(v, load256(b1 + Ty::kQs), 1);
#if ADAINFER_QVNNI
    v = _mm512_mask_xor_epi32(v, kTwo ? 0xFFFF : 0x00FF, v, _mm512_set1_epi8(static_cast<char>(0x80)));
#endif
    return v;
  } else {
    __m512i v = _mm512_maskz_broadcast_i32x4(0x00FF, load128(b0 + Ty::kQs));
    if constexpr (kTwo) v = _mm512_mask_broadcast_i32x4(v, 0xFF00, load128(b1 + Ty::kQs));
    v = _mm512_and_si512(_mm512_srlv_epi16(v, nib_shift_128()), _mm512_set1_epi8(0x0F));
    if constexpr (Ty::kQ5) {
      uint64_t bits = load_u32(b0 + Ty::kQh);
      if constexpr (kTwo) bits |= static_cast<uint64_t>(load_u32(b1 + Ty::kQh)) << 32;
      v = _mm512_mask_add_epi8(v, static_cast<__mmask64>(bits), v, _mm512_set1_epi8(16));
    }
    return v;
  }
}

// Lanes 4u..4u+3 of a 16-lane vector, each four times (the four 16-element groups of a 64-element unit).
inline __m512i lanes_quad(int u) {
  const int g = 4 * u;
  return _mm512_setr_epi32(g, g, g, g, g + 1, g + 1, g + 1, g + 1, g + 2, g + 2, g + 2, g + 2, g + 3, g + 3, g + 3,
                           g + 3);
}

// Word-gather tables for halves16_vec: lane k of the result takes 16-bit word (kStride * k + kOff) / 2 of the
// group; window w (a pair of 64-byte vectors, words 64w .. 64w + 63) serves the lanes whose word falls in it.
template <int kStride, int kOff>
struct HalfGather {
  static constexpr int kLastWord = (15 * kStride + kOff) / 2;
  static constexpr int kVectors = kLastWord / 32 + 1;   // 64-byte loads covering the words
  static constexpr int kWindows = (kVectors + 1) / 2;
  struct Table {
    uint16_t idx[4][32];
    uint32_t mask[4];
  };
  static constexpr Table make() {
    Table t{};
    for (int k = 0; k < 16; ++k) {
      const int word = (kStride * k + kOff) / 2, w = word / 64;
      t.idx[w][k] = static_cast<uint16_t>(word - 64 * w);
      t.mask[w] |= 1u << k;
    }
    return t;
  }
  static constexpr Table kTable = make();
};

// The 16 fp16 values at g + kOff + kStride * k, k = 0..15, as floats, from a few vector loads and word
// permutes (the loads also bring the group's cache lines in; the last one is masked to the group's bytes).
template <int kStride, int kOff>
inline __m512 halves16_vec(const uint8_t* g) {
  using H = HalfGather<kStride, kOff>;
  constexpr int kGroupBytes = 16 * kStride;
  __m512i z[2 * H::kWindows];
#pragma GCC unroll 8
  for (int i = 0; i < 2 * H::kWindows; ++i) {
    if (i >= H::kVectors) {
      z[i] = _mm512_setzero_si512();
    } else if (64 * (i + 1) <= kGroupBytes) {
      z[i] = _mm512_loadu_si512(g + 64 * i);
    } else {
      const int left = kGroupBytes - 64 * i;
      z[i] = _mm512_maskz_loadu_epi8(left >= 64 ? ~0ull : (1ull << left) - 1ull, g + 64 * i);
    }
  }
  __m512i r = _mm512_setzero_si512();
#pragma GCC unroll 4
  for (int w = 0; w < H::kWindows; ++w) {
    const __m512i idx = _mm512_loadu_si512(H::kTable.idx[w]);
    r = _mm512_mask_mov_epi16(r, H::kTable.mask[w], _mm512_permutex2var_epi16(z[2 * w], idx, z[2 * w + 1]));
  }
  return _mm512_cvtph_ps(_mm512_castsi512_si256(r));
}

// halves16_vec also reads the whole group early (its loads double as demand loads of the lines): faster than
// scalar loads for every block size measured (Q8_0: 29.5 against 26 GB/s streaming on Zen 5).
#ifndef ADAINFER_VEC_HALVES_MAX
#define ADAINFER_VEC_HALVES_MAX 64
#endif
template <class Ty>
constexpr bool kVecHalves = Ty::kBytes <= ADAINFER_VEC_HALVES_MAX;

// Codes of 4 consecutive blocks of a 4/5-bit type (the first kCount of them; the rest zero), as two vectors
// in the activation order qn: lo = the first 16 elements of each block, hi = the last 16.
template <class Ty, int kCount>
inline void codes_quad(const uint8_t* b0, __m512i* lo, __m512i* hi) {
  __m512i v = _mm512_zextsi128_si512(load128(b0 + Ty::kQs));
  if constexpr (kCount > 1) v = _mm512_inserti32x4(v, load128(b0 + Ty::kBytes + Ty::kQs), 1);
  if constexpr (kCount > 2) v = _mm512_inserti32x4(v, load128(b0 + 2 * Ty::kBytes + Ty::kQs), 2);
  if constexpr (kCount > 3) v = _mm512_inserti32x4(v, load128(b0 + 3 * Ty::kBytes + Ty::kQs), 3);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  *lo = _mm512_and_si512(v, m4);
  *hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
  if constexpr (Ty::kQ5) {
    uint64_t mlo = 0, mhi = 0;
#pragma GCC unroll 4
    for (int k = 0; k < kCount; ++k) {
      const uint32_t h = load_u32(b0 + k * Ty::kBytes + Ty::kQh);
      mlo |= static_cast<uint64_t>(h & 0xFFFFu) << (16 * k);
      mhi |= static_cast<uint64_t>(h >> 16) << (16 * k);
    }
    const __m512i bit4 = _mm512_set1_epi8(16);
    *lo = _mm512_mask_add_epi8(*lo, static_cast<__mmask64>(mlo), *lo, bit4);
    *hi = _mm512_mask_add_epi8(*hi, static_cast<__mmask64>(mhi), *hi, bit4);
  }
}

// Dot products of one weight row (n elements) with T activation rows, for a type of 32-element blocks.
// 16 blocks at a time: their scales are loaded and converted together, S = d_w * d_x per block. Q8_0 then
// goes a pair of blocks per 64-byte vector (int32 lanes 0-7 / 8-15 for the first / second block); the 4- and
// 5-bit types go 4 blocks at a time: one 64-byte load of their nibbles gives 128 codes (two vectors, with the
// activations in the matching order qn), and both dot products land in lanes 4k .. 4k + 3 for block k, so
// one conversion and one multiply-add per 4 blocks.
template <class Ty, int R, int T>
void rowdot_a(const uint8_t* w, size_t rb, const ActQ8_0Row* a, int64_t n, float (*out)[T]) {
  const int64_t nb = n / 32;
  const __m512i pair = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  // R rows at once: independent accumulation chains, and the per-row setup and reductions amortized.
  __m512 acc[R][T], corr[R][T], mins[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = corr[r][t] = mins[r][t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; b += 16) {
    const int cnt = nb - b < 16 ? static_cast<int>(nb - b) : 16;
    const __mmask16 m = static_cast<__mmask16>((1u << cnt) - 1u);
    __m512 dx[T];
    for (int t = 0; t < T; ++t) dx[t] = _mm512_maskz_loadu_ps(m, a[t].d + b);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const uint8_t* g = w + r * rb + b * Ty::kBytes;
      // The stream of weights runs ahead of its use by kPrefetchAhead bytes (the hardware prefetcher alone
      // leaves one core short of the memory bandwidth here).
      for (int off = 0; off < 16 * Ty::kBytes; off += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(g + kPrefetchAhead + off), _MM_HINT_T0);
        if constexpr (kPrefetchL2 > 0) _mm_prefetch(reinterpret_cast<const char*>(g + kPrefetchL2 + off), _MM_HINT_T1);
      }
      // d (and m) of the 16 blocks (a vector gather of them is slow on AMD)
      const __m512 dw = cnt == 16 && kVecHalves<Ty> ? halves16_vec<Ty::kBytes, 0>(g) : halves16<Ty::kBytes>(g, cnt);
      __m512 mw = _mm512_setzero_ps();
      if constexpr (Ty::kMin) mw = cnt == 16 ? halves16_vec<Ty::kBytes, Ty::kM>(g) : halves16<Ty::kBytes>(g + Ty::kM, cnt);
      __m512 S[T];
      for (int t = 0; t < T; ++t) {
        S[t] = _mm512_mul_ps(dw, dx[t]);
        if constexpr (Ty::kOffset != 0) corr[r][t] = _mm512_fmadd_ps(S[t], _mm512_maskz_loadu_ps(m, a[t].sum + b), corr[r][t]);
        if constexpr (Ty::kMin) mins[r][t] = _mm512_fmadd_ps(mw, _mm512_maskz_loadu_ps(m, a[t].s + b), mins[r][t]);
      }
      if constexpr (Ty::kQ8) {
        auto unit = [&](auto two, int p) {
          const __m512i c = codes_a<Ty, decltype(two)::value>(g + 2 * p * Ty::kBytes);
          const __m512i idx = _mm512_add_epi32(pair, _mm512_set1_epi32(2 * p));
          for (int t = 0; t < T; ++t) {
            const __m512i x = qload(a[t].q + (b + 2 * p) * 32);
            const __m512i i = ADAINFER_QVNNI ? qdot(qzero(), c, x) : qdot_ss(qzero(), c, x);
            acc[r][t] = _mm512_fmadd_ps(qcvt(i), _mm512_permutexvar_ps(idx, S[t]), acc[r][t]);
          }
        };
        if (cnt == 16) {
#pragma GCC unroll 8
          for (int p = 0; p < 8; ++p) unit(Count<1>{}, p);
        } else {
          for (int p = 0; 2 * p < cnt; ++p) {
            if (2 * p + 1 < cnt) {
              unit(Count<1>{}, p);
            } else {
              unit(Count<0>{}, p);
            }
          }
        }
      } else {
        auto quad = [&](auto count, int q) {
          __m512i lo, hi;
          codes_quad<Ty, decltype(count)::value>(g + 4 * q * Ty::kBytes, &lo, &hi);
          const __m512i idx = lanes_quad(q);
          for (int t = 0; t < T; ++t) {
            const int8_t* x = a[t].qn + (b + 4 * q) * 32;
            const __m512i i = qdot(qdot(qzero(), lo, qload(x)), hi, qload(x + 64));
            acc[r][t] = _mm512_fmadd_ps(qcvt(i), _mm512_permutexvar_ps(idx, S[t]), acc[r][t]);
          }
        };
        if (cnt == 16) {
#pragma GCC unroll 4
          for (int q = 0; q < 4; ++q) quad(Count<4>{}, q);
        } else {
          for (int q = 0; 4 * q < cnt; ++q) {
            switch (cnt - 4 * q) {
              case 1: quad(Count<1>{}, q); break;
              case 2: quad(Count<2>{}, q); break;
              case 3: quad(Count<3>{}, q); break;
              default: quad(Count<4>{}, q); break;
            }
          }
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) {
      __m512 v = acc[r][t];
      if constexpr (Ty::kOffset != 0) v = _mm512_fmadd_ps(_mm512_set1_ps(-static_cast<float>(Ty::kOffset)), corr[r][t], v);
      if constexpr (Ty::kMin) v = _mm512_add_ps(v, mins[r][t]);
      out[r][t] = qreduce(v);
    }
}
#else
// AVX2: one block (32 codes) per vector, its scale converted in scalar code.
template <class Ty>
inline __m256i codes_a1(const uint8_t* b) {
  if constexpr (Ty::kQ8) {
    return load256(b + Ty::kQs);  // signed: used with qdot_ss
  } else {
    const __m128i v = load128(b + Ty::kQs);
    __m256i c = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F));
    if constexpr (Ty::kQ5) {
      // bit j of qh -> byte j: spread the 4 bytes of qh over the 32 bytes, test one bit per byte
      const __m256i spread = _mm256_shuffle_epi8(
          _mm256_set1_epi32(static_cast<int>(load_u32(b + Ty::kQh))),
          _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
      const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
      const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
      c = _mm256_or_si256(c, _mm256_and_si256(set, _mm256_set1_epi8(16)));
    }
    return c;
  }
}

// Blocks [b0, b1) of one row times T activation rows, one block at a time with its scale in scalar code.
template <class Ty, int T>
void rowdot_a1_blocks(const uint8_t* w, const ActQ8_0Row* a, int64_t b0, int64_t b1, float* out) {
  __m256 acc[T];
  float corr[T], mins[T];
  for (int t = 0; t < T; ++t) {
    acc[t] = _mm256_setzero_ps();
    corr[t] = mins[t] = 0.f;
  }
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* blk = w + b * Ty::kBytes;
    const __m256i c = codes_a1<Ty>(blk);
    const float dw = half_to_float(load_u16(blk));
    for (int t = 0; t < T; ++t) {
      const float S = dw * a[t].d[b];
      const __m256i x = qload(a[t].q + b * 32);
      const __m256i i = Ty::kQ8 ? qdot_ss(qzero(), c, x) : qdot(qzero(), c, x);
      acc[t] = _mm256_fmadd_ps(qcvt(i), _mm256_set1_ps(S), acc[t]);
      if constexpr (Ty::kOffset != 0) corr[t] += S * a[t].sum[b];
      if constexpr (Ty::kMin) mins[t] += half_to_float(load_u16(blk + Ty::kM)) * a[t].s[b];
    }
  }
  for (int t = 0; t < T; ++t) out[t] = qreduce(acc[t]) - static_cast<float>(Ty::kOffset) * corr[t] + mins[t];
}

// The fp16 values at p, p + kStride, ..., p + 7 * kStride as floats.
template <int kStride>
inline __m256 halves8(const uint8_t* p) {
  return _mm256_cvtph_ps(_mm_setr_epi16(
      static_cast<int16_t>(load_u16(p)), static_cast<int16_t>(load_u16(p + kStride)),
      static_cast<int16_t>(load_u16(p + 2 * kStride)), static_cast<int16_t>(load_u16(p + 3 * kStride)),
      static_cast<int16_t>(load_u16(p + 4 * kStride)), static_cast<int16_t>(load_u16(p + 5 * kStride)),
      static_cast<int16_t>(load_u16(p + 6 * kStride)), static_cast<int16_t>(load_u16(p + 7 * kStride))));
}

// One weight row times T activation rows (decode, the few rows of a speculative verify step, the tiles of
// prefill), 8 blocks at a time. Each block's codes are unpacked once and serve every activation row,
// so the integer work per block and row is one vpmaddubsw + vpmaddwd (Q8_0: one more vpsignb) and one
// conversion and multiply-add. The 8 blocks' weight scales are converted together and multiplied by each row's
// activation scales as vectors (S: one broadcast load per block and row afterwards); the offset and min terms
// go in per 8 blocks as vectors, into the same accumulators (they are summed across lanes at the end). The
// weights run ahead of their use by kPrefetchAhead bytes. Measured on Zen 3 (TinyLlama shapes, 22 layers
// streamed, alternating): decode 10.1 -> 11.1 GB/s (Q4_0) and 13.3 -> 17.1 GB/s (Q8_0) against one block at a
// time with scalar scales (rowdot_a1_blocks, now only the tail); the order rows outer / blocks inner with the 8
// blocks' codes held in registers was as fast for Q4_0 and slower for Q8_0, and pairing blocks through
// vphaddw before one conversion (4- and 5-bit types) 15% slower.
template <class Ty, int T>
void rowdot_group(const uint8_t* w, const ActQ8_0Row* a, int64_t n, float* out) {
  const int64_t nb = n / 32;
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  const __m256i ones16 = _mm256_set1_epi16(1);
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8) {
    const uint8_t* g = w + b * Ty::kBytes;
    for (int off = 0; off < 8 * Ty::kBytes; off += 64)
      _mm_prefetch(reinterpret_cast<const char*>(g + kPrefetchAhead + off), _MM_HINT_T0);
    const __m256 dw = halves8<Ty::kBytes>(g);
    alignas(32) float S[T][8];
    for (int t = 0; t < T; ++t) {
      const __m256 st = _mm256_mul_ps(dw, _mm256_loadu_ps(a[t].d + b));
      _mm256_store_ps(S[t], st);
      if constexpr (Ty::kOffset != 0)
        acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(st, _mm256_loadu_ps(a[t].sum + b)),
                                 _mm256_set1_ps(-static_cast<float>(Ty::kOffset)), acc[t]);
      if constexpr (Ty::kMin) acc[t] = _mm256_fmadd_ps(halves8<Ty::kBytes>(g + Ty::kM), _mm256_loadu_ps(a[t].s + b), acc[t]);
    }
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const __m256i c = codes_a1<Ty>(g + j * Ty::kBytes);
      // Q8_0's signed codes go through |c| and the activations with c's sign (qdot_ss), |c| once per block
      const __m256i cu = Ty::kQ8 ? _mm256_sign_epi8(c, c) : c;
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) {
        __m256i x = qload(a[t].q + (b + j) * 32);
        if constexpr (Ty::kQ8) x = _mm256_sign_epi8(x, c);
        const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(cu, x), ones16);
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(&S[t][j]), acc[t]);
      }
    }
  }
  float tail[T];
  rowdot_a1_blocks<Ty, T>(w, a, b, nb, tail);
  for (int t = 0; t < T; ++t) out[t] = qreduce(acc[t]) + tail[t];
}

// AVX2: R rows one after the other.
template <class Ty, int R, int T>
void rowdot_a(const uint8_t* w, size_t rb, const ActQ8_0Row* a, int64_t n, float (*out)[T]) {
  for (int r = 0; r < R; ++r) rowdot_group<Ty, T>(w + r * rb, a, n, out[r]);
}

// Every activation row count takes rows8_dot on AVX2 (decode, a few rows, prefill tiles; Q8_0 prefill from 32 tokens
// its panels, which compute the same products): its rows-in-lanes sums run in another order than the row kernel's,
// and a row's result must not depend on the row count (a speculative verify step must give what decode gives; see
// the native test matmul_row_result_independent_of_row_count). Q8_0 took the row kernel below 4 activation rows
// until its 8-row groups were packed at load (pack_rows8): a verify step of 4 rows then gave other bits than decode,
// and speculative greedy output differed from full depth on the 1.1B Q8_0 file. Packed, the transposes are gone and
// rows8_dot is the faster kernel at every count (bench/native matmul_bench Q8_0 decode, 22 TinyLlama layers, 1
// thread, shared Zen 3, GGUF rows -> packed: 1 row 74-80 -> 83-85 ms, within the noise of a run that waits on memory;
// 2 rows 83 -> 68-72 ms; 4 rows 129-134 -> 91-110 ms; 8 rows 193-260 -> 171-202 ms).

// The fp16 values at offset off of the 8 rows, as floats in row order.
inline __m256 halves_rows8(const uint8_t* const* row, size_t off) {
  return _mm256_cvtph_ps(_mm_setr_epi16(
      static_cast<int16_t>(load_u16(row[0] + off)), static_cast<int16_t>(load_u16(row[1] + off)),
      static_cast<int16_t>(load_u16(row[2] + off)), static_cast<int16_t>(load_u16(row[3] + off)),
      static_cast<int16_t>(load_u16(row[4] + off)), static_cast<int16_t>(load_u16(row[5] + off)),
      static_cast<int16_t>(load_u16(row[6] + off)), static_cast<int16_t>(load_u16(row[7] + off))));
}

// The 8 rows' qh words (5-bit types) as int32 lanes in row order.
inline __m256i rows8_qh(const uint8_t* const* row, size_t off) {
  return _mm256_setr_epi32(load_i32(row[0] + off), load_i32(row[1] + off), load_i32(row[2] + off),
                           load_i32(row[3] + off), load_i32(row[4] + off), load_i32(row[5] + off),
                           load_i32(row[6] + off), load_i32(row[7] + off));
}

// Dwords k = 0..3 of 16 bytes at offset off of the 8 rows, transposed: D[k] holds row r's dword k in int32 lane r
// (rows 0-3 in the low 128 bits, 4-7 in the high: one in-lane 4x4 transpose of dwords, 8 unpacks).
inline void rows8_transpose16(const uint8_t* const* row, size_t off, __m256i* D) {
  __m256i v[4];
  for (int j = 0; j < 4; ++j)
    v[j] = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(row[j + 4] + off), reinterpret_cast<const __m128i*>(row[j] + off));
  const __m256i t0 = _mm256_unpacklo_epi32(v[0], v[1]), t1 = _mm256_unpackhi_epi32(v[0], v[1]);
  const __m256i t2 = _mm256_unpacklo_epi32(v[2], v[3]), t3 = _mm256_unpackhi_epi32(v[2], v[3]);
  D[0] = _mm256_unpacklo_epi64(t0, t2);
  D[1] = _mm256_unpackhi_epi64(t0, t2);
  D[2] = _mm256_unpacklo_epi64(t1, t3);
  D[3] = _mm256_unpackhi_epi64(t1, t3);
}

// The packed layouts of the AVX2 kernels (KernelTable::pack_rows; Q4_0 and Q8_0): each group of 8 rows is stored
// block by block, 8 * kBytes bytes per block (the 8 rows' blocks, rearranged): first the code bytes of the 8 rows as
// rows8_dot's transposes leave them (vector k holds row r's code bytes 4k .. 4k + 3 in int32 lane r; Q4_0: 4 x 32
// bytes, Q8_0: 8 x 32, the layout of the Q8_0 prefill panel's codes), then the 8 rows' fp16 scales in row order.
// Rows past the last whole group stay GGUF rows. A group of 8 rows thus takes the bytes of 8 rows, so row r's group
// starts at r * row_bytes, as in the file.
// Measured on the shared Zen 3 (EPYC, 1 thread; bench/native matmul_bench Q4_0 decode --tokens N [--packed], 22
// TinyLlama layers streamed, GGUF rows -> packed): 1 row 48.9 -> 44.9 ms (weights in cache: 30.6 -> 16.6 ms), 3 rows
// 83.6 -> 59.8 ms, 8 rows 130 -> 114 ms; prefill of 128 tokens 95-99 -> 84 ms. Through the layer loop
// (bench/verify_cost.ts): a 3-row step 1.46x -> 1.21x a 1-row step, 8 rows 2.91x -> 2.78x. Q8_0: see the comment
// above halves_rows8.
template <class Ty>
constexpr size_t kPackedCodes = 8 * Ty::kBytes - 16;

template <class Ty>
void pack_rows8(const void* src_raw, void* dst_raw, int64_t rows, int64_t n_in) {
  static_assert(Ty::kType == GgmlType::Q4_0 || Ty::kType == GgmlType::Q8_0, "packed layouts exist for Q4_0 and Q8_0");
  const uint8_t* src = static_cast<const uint8_t*>(src_raw);
  uint8_t* dst = static_cast<uint8_t*>(dst_raw);
  const size_t rb = row_bytes(static_cast<int32_t>(Ty::kType), n_in);
  const int64_t nb = n_in / 32, groups = rows / 8;
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* row[8];
    for (int r = 0; r < 8; ++r) row[r] = src + (static_cast<size_t>(g) * 8 + r) * rb;
    uint8_t* out = dst + static_cast<size_t>(g) * 8 * rb;
    for (int64_t b = 0; b < nb; ++b, out += 8 * Ty::kBytes) {
      const size_t off = static_cast<size_t>(b) * Ty::kBytes;
      constexpr int kVectors = static_cast<int>(kPackedCodes<Ty> / 32);
      __m256i D[kVectors];
      for (int h = 0; h < kVectors / 4; ++h) rows8_transpose16(row, off + Ty::kQs + 16 * h, D + 4 * h);
      for (int k = 0; k < kVectors; ++k) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * k), D[k]);
      for (int r = 0; r < 8; ++r) std::memcpy(out + kPackedCodes<Ty> + 2 * r, row[r] + off, 2);
    }
  }
  const size_t done = static_cast<size_t>(groups) * 8 * rb;
  std::memcpy(dst + done, src + done, static_cast<size_t>(rows) * rb - done);
}

// 8 weight rows (w, w + rb, ..., w + 7 * rb) times T activation rows, for the types of 32-element blocks. The row
// kernel has elements in the lanes, so each block's products must be summed across lanes (a conversion and
// multiply-add per block, weight row and activation row; an earlier 8-row kernel folded them with vphaddw, 3 per
// block and activation row). Here the lanes are the rows instead: each block's codes are transposed once, for all
// T activation rows, into 8 vectors C[k] whose int32 lane r holds elements 4k .. 4k + 3 of row r (in-lane unpacks,
// no copy of the weights), and the activation's 4 bytes of those elements are broadcast (vpbroadcastd from memory).
// One vpmaddubsw per 4 elements then serves 8 rows; the 16-bit pair sums of a block add up in place (4-bit codes:
// 8 * 2 * 15 * 127 < 2^15; 5-bit codes in two halves) and one vpmaddwd leaves one int32 per row, with no horizontal
// step. Q8_0's signed bytes use |w| and the activation with w's sign (qdot_ss); their pair sums (<= 2 * 128 * 127)
// only just fit 16 bits, so each goes through vpmaddwd before adding. Offsets (code - 8 or 16) are subtracted as
// offset * (sum of the block's activation codes) in float, once per block and activation row for all 8 rows.
// Measured against the vphaddw form (shared Zen 3, 1 thread, CPU time of bench/native matmul_bench, old and new
// binaries alternating): Q8_0, which had only the row kernel, prefill of 128 tokens 192 / 183 -> 141 / 142 ms and
// 8 rows streamed through 22 layers 232 / 296 -> 193 / 209 ms; Q4_0 the same within the noise (8 rows streamed,
// median of 4: 134 -> 132.5 ms; prefill 101 / 103 -> 99 / 104 ms; weights in L2: 115 -> 113 ms). Through the layer
// loop (bench/verify_cost.ts, quiet machine, 1 thread, medians of 3 alternating rounds, with the vfnmadd below):
// an 8-row step Q4_0 153 -> 145 ms (3.38x -> 3.16x a 1-row step), Q8_0 254 -> 221 ms (3.55x -> 2.96x). Neither form is
// bound by vpmaddubsw itself: on that machine it issues two per cycle (0.16 ns each in 10 independent chains held in
// registers; an earlier figure of 0.51 ns came from a loop that stored and reloaded its accumulators), so the 240 M
// of an 8-row step through the 22 TinyLlama layers take ~40 ms. The rest of the work per block and activation row
// (8 activation broadcasts, the 16-bit adds, the widening, conversion and two float multiply-adds) and, at 8 rows,
// register spills make the step's time.
//
// kPacked (Q4_0, Q8_0: pack_rows8): the 8 rows are already stored that way, block by block, so the transposes and the
// gathering of the 8 scales are gone and the 8 rows are one forward stream. Measured: see kPackedCodes.
template <class Ty, int T, bool kPacked = false>
void rows8_dot(const uint8_t* w, size_t rb, const ActQ8_0Row* a, int64_t n, float (*out)[T]) {
  static_assert(!kPacked || Ty::kType == GgmlType::Q4_0 || Ty::kType == GgmlType::Q8_0,
                "packed layouts exist for Q4_0 and Q8_0");
  const int64_t nb = n / 32;
  const uint8_t* row[8];
  for (int r = 0; r < 8; ++r) row[r] = w + r * rb;
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  const __m256i m4 = _mm256_set1_epi8(0x0F), ones16 = _mm256_set1_epi16(1);
  const __m256 offset = _mm256_set1_ps(static_cast<float>(Ty::kOffset));
  for (int64_t b = 0; b < nb; ++b) {
    const size_t off = static_cast<size_t>(b) * Ty::kBytes;
    // the 8 rows are one contiguous stretch of memory, consumed 8 blocks' bytes per block step
    const char* pf = reinterpret_cast<const char*>(w) + kPrefetchAhead + 8 * off;
    for (int line = 0; line < 8 * Ty::kBytes; line += 64) _mm_prefetch(pf + line, _MM_HINT_T0);
    // C[k]: elements 4k .. 4k + 3 of each row, lane r = row r (Q8_0: U[k] = |C[k]|)
    __m256i C[8], U[8];
    if constexpr (Ty::kQ8) {
      if constexpr (kPacked) {
        for (int k = 0; k < 8; ++k) C[k] = load256(w + 8 * off + 32 * k);
      } else {
        rows8_transpose16(row, off + Ty::kQs, C);
        rows8_transpose16(row, off + Ty::kQs + 16, C + 4);
      }
      for (int k = 0; k < 8; ++k) U[k] = _mm256_sign_epi8(C[k], C[k]);
    } else {
      // byte i of a 4/5-bit block: element i in the low nibble, element i + 16 in the high
      __m256i D[4];
      if constexpr (kPacked) {
        for (int k = 0; k < 4; ++k) D[k] = load256(w + 8 * off + 32 * k);
      } else {
        rows8_transpose16(row, off + Ty::kQs, D);
      }
      for (int k = 0; k < 4; ++k) {
        C[k] = _mm256_and_si256(D[k], m4);
        C[k + 4] = _mm256_and_si256(_mm256_srli_epi16(D[k], 4), m4);
      }
      if constexpr (Ty::kQ5) {
        // bit j of a row's qh is bit 4 of element j: bits 4k .. 4k + 3 lie in byte k / 2 of the word; spread
        // that byte over the lane's 4 bytes and test one bit per byte
        const __m256i qh = rows8_qh(row, off + Ty::kQh);
        const __m256i sixteen = _mm256_set1_epi8(16);
        for (int k = 0; k < 8; ++k) {
          const char s = static_cast<char>(k >> 1);
          const __m256i spread = _mm256_shuffle_epi8(
              qh, _mm256_setr_epi8(s, s, s, s, s + 4, s + 4, s + 4, s + 4, s + 8, s + 8, s + 8, s + 8, s + 12, s + 12, s + 12,
                                   s + 12, s, s, s, s, s + 4, s + 4, s + 4, s + 4, s + 8, s + 8, s + 8, s + 8, s + 12,
                                   s + 12, s + 12, s + 12));
          const __m256i bit = _mm256_set1_epi32((k & 1) ? static_cast<int>(0x80402010u) : 0x08040201);
          C[k] = _mm256_or_si256(C[k], _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), sixteen));
        }
      }
    }
    const __m256 dw = kPacked ? _mm256_cvtph_ps(load128(w + 8 * off + kPackedCodes<Ty>)) : halves_rows8(row, off);
    __m256 mw = _mm256_setzero_ps();
    if constexpr (Ty::kMin) mw = halves_rows8(row, off + Ty::kM);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const int8_t* x = a[t].q + b * 32;
      __m256i isum;
      if constexpr (Ty::kQ8) {
        isum = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) {
          const __m256i xs = _mm256_sign_epi8(_mm256_set1_epi32(load_i32(x + 4 * k)), C[k]);
          isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(U[k], xs), ones16));
        }
      } else {
        __m256i s16[2];
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          s16[h] = _mm256_maddubs_epi16(C[4 * h], _mm256_set1_epi32(load_i32(x + 16 * h)));
#pragma GCC unroll 3
          for (int k = 1; k < 4; ++k)
            s16[h] = _mm256_add_epi16(s16[h], _mm256_maddubs_epi16(C[4 * h + k], _mm256_set1_epi32(load_i32(x + 16 * h + 4 * k))));
        }
        if constexpr (Ty::kQ5) {
          // 5-bit codes: 4 * 2 * 31 * 127 < 2^15 per half, not both halves
          isum = _mm256_add_epi32(_mm256_madd_epi16(s16[0], ones16), _mm256_madd_epi16(s16[1], ones16));
        } else {
          isum = _mm256_madd_epi16(_mm256_add_epi16(s16[0], s16[1]), ones16);
        }
      }
      __m256 v = _mm256_cvtepi32_ps(isum);
      // codes are value + offset: subtract offset * (sum of the activation codes), exact in float (< 2^24); the
      // broadcasts come straight from memory, one vfnmadd does the rest
      if constexpr (Ty::kOffset != 0) v = _mm256_fnmadd_ps(_mm256_broadcast_ss(a[t].sum + b), offset, v);
      acc[t] = _mm256_fmadd_ps(v, _mm256_mul_ps(dw, _mm256_broadcast_ss(a[t].d + b)), acc[t]);
      if constexpr (Ty::kMin) acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(a[t].s[b]), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc[t]);
    for (int r = 0; r < 8; ++r) out[r][t] = lanes[r];
  }
}

template <int T>
void q8_0_panel_dot(const uint8_t* panel, const ActQ8_0Row* a, int64_t nblocks, __m256* acc);
constexpr int kPanel8Tokens = 4;

// Rows [r0, r1) times activation rows [t0, t0 + T): rows8_dot on each 8 rows, the row kernel on the rest (packed:
// r0 is a multiple of 8, and the rows past the last whole group of the matrix are GGUF rows).
template <class Ty, int T, bool kPacked = false>
inline void rows8_tile(const uint8_t* W, size_t rb, int64_t n_in, const uint8_t* A, int64_t lda, int64_t t0, float* Y,
                       int64_t ldy, int64_t r0, int64_t r1) {
  ActQ8_0Row a[T];
  for (int t = 0; t < T; ++t) a[t] = act_q8_0_row(A + (t0 + t) * lda, n_in);
  int64_t r = r0;
  for (; r + 8 <= r1; r += 8) {
    if constexpr (kPacked && Ty::kQ8 && T > kPanel8Tokens) {
      // packed Q8_0, more than 4 activation rows: the panel kernel (the same products) in two tiles, not rows8_dot,
      // whose codes, |codes| and T accumulators would not fit the registers
      const uint8_t* group = W + static_cast<size_t>(r) * rb;
      auto part = [&](int tb, auto count) {
        constexpr int kC = decltype(count)::value;
        __m256 acc[kC];
        q8_0_panel_dot<kC>(group, a + tb, n_in / 32, acc);
        for (int t = 0; t < kC; ++t) _mm256_storeu_ps(Y + (t0 + tb + t) * ldy + r, acc[t]);
      };
      part(0, Count<kPanel8Tokens>{});
      part(kPanel8Tokens, Count<T - kPanel8Tokens>{});
      continue;
    }
    float out[8][T];
    rows8_dot<Ty, T, kPacked>(W + static_cast<size_t>(r) * rb, rb, a, n_in, out);
    for (int i = 0; i < 8; ++i)
      for (int t = 0; t < T; ++t) Y[(t0 + t) * ldy + r + i] = out[i][t];
  }
  for (; r < r1; ++r) {
    float out[1][T];
    rowdot_a<Ty, 1, T>(W + static_cast<size_t>(r) * rb, rb, a, n_in, out);
    for (int t = 0; t < T; ++t) Y[(t0 + t) * ldy + r] = out[0][t];
  }
}
#endif

// ---- K-quants ----------------------------------------------------------------------------------------------------

#if ADAINFER_Q512
// Permutation picking int32 lane `a` for lanes 0-7 and `b` for lanes 8-15.
inline __m512i lanes_ab(int a, int b) {
  return _mm512_setr_epi32(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b);
}

// Codes of chunk c (elements 64c .. 64c + 63) of a Q4_K / Q5_K block: low nibbles of the 32 bytes, then high.
template <bool kFive>
inline __m512i codes_k45(const uint8_t* qs, const uint8_t* qh, int c) {
  __m512i v = _mm512_broadcast_i64x4(load256(qs + 32 * c));
  v = _mm512_and_si512(_mm512_srlv_epi16(v, shift_halves(0, 4)), _mm512_set1_epi8(0x0F));
  if constexpr (kFive) {
    const __m512i h = _mm512_broadcast_i64x4(load256(qh));
    const __m512i sel = _mm512_inserti64x4(_mm512_set1_epi8(static_cast<char>(1 << (2 * c))),
                                           _mm256_set1_epi8(static_cast<char>(1 << (2 * c + 1))), 1);
    v = _mm512_mask_add_epi8(v, _mm512_test_epi8_mask(h, sel), v, _mm512_set1_epi8(16));
  }
  return v;
}

// Codes of unit u (elements 64u .. 64u + 63) of a Q6_K block: u = 2h + hi for half h.
inline __m512i codes_q6k(const BlockQ6_K* b, int u) {
  const int h = u >> 1;
  const __m512i q = qload(b->ql + 64 * h);
  const __m512i hb = _mm512_broadcast_i64x4(load256(b->qh + 32 * h));
  const __m512i lo4 = _mm512_set1_epi8(0x0F);
  if ((u & 1) == 0) {
    const __m512i top = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(hb, shift_halves(0, 2)), _mm512_set1_epi8(3)), 4);
    return _mm512_ternarylogic_epi32(q, top, lo4, 0xEC);  // (q & 0x0F) | top
  }
  const __m512i top = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(hb, shift_halves(4, 6)), _mm512_set1_epi8(3)), 4);
  return _mm512_ternarylogic_epi32(_mm512_srli_epi16(q, 4), top, lo4, 0xEC);
}

template <bool kFive, int T>
void rowdot_k45_1(const uint8_t* w, const ActQ8_KRow* a, int64_t n, float* out) {
  using Block = typename std::conditional<kFive, BlockQ5_K, BlockQ4_K>::type;
  const Block* blocks = reinterpret_cast<const Block*>(w);
  __m512 acc[T];
  __m256 macc[T];
  for (int t = 0; t < T; ++t) {
    acc[t] = _mm512_setzero_ps();
    macc[t] = _mm256_setzero_ps();
  }
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int64_t i = 0; i < n / 256; ++i) {
    const Block& b = blocks[i];
    _mm_prefetch(reinterpret_cast<const char*>(&b) + kPrefetchAhead, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(&b) + kPrefetchAhead + 64, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(&b) + kPrefetchAhead + 128, _MM_HINT_T0);
    // int32 lanes 0-7: the sub-block scales, 8-15: the mins
    const __m512i scm = _mm512_cvtepu8_epi32(k_scales_vec(b.scales));
    const __m256i mins = _mm512_extracti64x4_epi64(scm, 1);
    const float d = half_to_float(b.d), dmin = half_to_float(b.dmin);
    __m512i h = _mm512_setzero_si512();
    if constexpr (kFive) h = _mm512_broadcast_i64x4(load256(b.qh));
    __m512i isum[T];
    for (int t = 0; t < T; ++t) isum[t] = qzero();
    // Two 32-byte chunks (128 elements) at a time: low nibbles = sub-blocks 4p and 4p + 2, high = 4p + 1 and
    // 4p + 3, against the activations in the matching order qk.
#pragma GCC unroll 2
    for (int p = 0; p < 2; ++p) {
      const __m512i v = qload(b.qs + 64 * p);
      __m512i lo = _mm512_and_si512(v, m4);
      __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
      if constexpr (kFive) {
        const char c0 = static_cast<char>(1 << (4 * p)), c1 = static_cast<char>(1 << (4 * p + 1));
        const char c2 = static_cast<char>(1 << (4 * p + 2)), c3 = static_cast<char>(1 << (4 * p + 3));
        const __m512i sel_lo = _mm512_inserti64x4(_mm512_set1_epi8(c0), _mm256_set1_epi8(c2), 1);
        const __m512i sel_hi = _mm512_inserti64x4(_mm512_set1_epi8(c1), _mm256_set1_epi8(c3), 1);
        const __m512i bit4 = _mm512_set1_epi8(16);
        lo = _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(h, sel_lo), lo, bit4);
        hi = _mm512_mask_add_epi8(hi, _mm512_test_epi8_mask(h, sel_hi), hi, bit4);
      }
      const __m512i sc_lo = _mm512_permutexvar_epi32(lanes_ab(4 * p, 4 * p + 2), scm);
      const __m512i sc_hi = _mm512_permutexvar_epi32(lanes_ab(4 * p + 1, 4 * p + 3), scm);
      for (int t = 0; t < T; ++t) {
        const int8_t* x = a[t].qk + 256 * i + 128 * p;
        // |dot| < 2^15 per lane and the scales < 64: one 16-bit product per lane
        isum[t] = qacc16(isum[t], qdot(qzero(), lo, qload(x)), sc_lo);
        isum[t] = qacc16(isum[t], qdot(qzero(), hi, qload(x + 64)), sc_hi);
      }
    }
    for (int t = 0; t < T; ++t) {
      const float dx = a[t].d[i];
      acc[t] = _mm512_fmadd_ps(qcvt(isum[t]), _mm512_set1_ps(d * dx), acc[t]);
      const __m256i pair_sums = _mm256_madd_epi16(load256(a[t].bsums + 16 * i), _mm256_set1_epi16(1));
      macc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_mullo_epi32(mins, pair_sums)), _mm256_set1_ps(dmin * dx),
                                macc[t]);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = qreduce(acc[t]) - hsum256(macc[t]);
}

template <int T>
void rowdot_q6k_1(const uint8_t* w, const ActQ8_KRow* a, int64_t n, float* out) {
  const BlockQ6_K* blocks = reinterpret_cast<const BlockQ6_K*>(w);
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / 256; ++i) {
    const BlockQ6_K& b = blocks[i];
    const char* pf = reinterpret_cast<const char*>(&b) + kPrefetchAhead;
    _mm_prefetch(pf, _MM_HINT_T0);
    _mm_prefetch(pf + 64, _MM_HINT_T0);
    _mm_prefetch(pf + 128, _MM_HINT_T0);
    _mm_prefetch(pf + 192, _MM_HINT_T0);
    const __m128i sc8 = load128(b.scales);
    // int32 lanes: the 16 signed scales as 16-bit values with zero upper halves (for qacc16)
    const __m512i sc32 = _mm512_and_si512(_mm512_cvtepi8_epi32(sc8), _mm512_set1_epi32(0xFFFF));
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    const float d = half_to_float(b.d);
    __m512i isum[T];
    for (int t = 0; t < T; ++t) isum[t] = qzero();
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) {
      const __m512i codes = codes_q6k(&b, u);
      const __m512i sc = _mm512_permutexvar_epi32(lanes_quad(u), sc32);
      for (int t = 0; t < T; ++t) {
        // |dot| <= 4 * 63 * 127 < 2^15
        isum[t] = qacc16(isum[t], qdot(qzero(), codes, qload(a[t].q + 256 * i + 64 * u)), sc);
      }
    }
    for (int t = 0; t < T; ++t) {
      // codes are value + 32: subtract 32 * sum over groups of scale * (sum of the group's activations)
      const __m256i corr = _mm256_madd_epi16(sc16, load256(a[t].bsums + 16 * i));
      isum[t] = _mm512_sub_epi32(isum[t], _mm512_zextsi256_si512(_mm256_slli_epi32(corr, 5)));
      acc[t] = _mm512_fmadd_ps(qcvt(isum[t]), _mm512_set1_ps(d * a[t].d[i]), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = qreduce(acc[t]);
}

template <int T>
void rowdot_q8k_1(const uint8_t* w, const ActQ8_KRow* a, int64_t n, float* out) {
  const BlockQ8_K* blocks = reinterpret_cast<const BlockQ8_K*>(w);
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / 256; ++i) {
    const BlockQ8_K& b = blocks[i];
    __m512i isum[T];
    for (int t = 0; t < T; ++t) isum[t] = qzero();
    for (int c = 0; c < 4; ++c) {
      const __m512i wv = qload(b.qs + 64 * c);
      for (int t = 0; t < T; ++t) isum[t] = qdot_ss(isum[t], wv, qload(a[t].q + 256 * i + 64 * c));
    }
    for (int t = 0; t < T; ++t) acc[t] = _mm512_fmadd_ps(qcvt(isum[t]), _mm512_set1_ps(b.d * a[t].d[i]), acc[t]);
  }
  for (int t = 0; t < T; ++t) out[t] = qreduce(acc[t]);
}
#else
// AVX2 Q4_K / Q5_K rows. Per block: the scales and mins unpacked in vector registers (k_scales_vec), one
// maddubs + one madd with the sub-block scale per 32 elements, and the min term from the activations' bsums (pair
// sums by hadd, times the mins by madd). The block's two integer sums per row and token are then reduced across the
// lanes and scaled exactly as the prefill panels scale them (k45_panel_dot: v = S * d - M * dmin, then acc += v * dx),
// so a row's bits do not depend on which kernel ran it (decode and a few rows here, steps of more than kFewRowsMax
// rows in the panels). The reductions go 4 at a time through one hadd tree: 4 tokens of a row, or at decode 4 rows
// of the one token (rowdot_k45). The weights are prefetched kPrefetchAhead bytes ahead like the other row kernels.
// History, all on the shared Zen 3 (EPYC, 'avx2' kernels, random-weight TinyLlama Q4_K): a first kernel unpacked the
// scales and mins with scalar code and reduced each block horizontally in scalar steps; vector unpacking with the 8
// partial sums scaled in the lanes (no reduction per block) took decode from 13.5 to 20.2-21.5 t/s (`compare.js
// --types Q4_K --threads 1 --pp 32 --tg 64 --engines adainfer`), but no panel can match its bits. The present form
// against that one: decode the same (same command at --pp 0, 1 / 2 threads, medians of 3 alternating: 20.6 / 34.6
// -> 20.3 / 34.5 t/s); bench/native matmul_bench Q4_K hot, 1 thread, medians of 5: 1 row 30.1 -> 28.4 ms, 2 rows
// 43.3 -> 46.3 ms, 4 rows 95 -> 71 ms. Reducing each row and token on its own (no hadd tree shared by 4) had cost
// decode 11-20%.
template <bool kFive>
using BlockK45 = typename std::conditional<kFive, BlockQ5_K, BlockQ4_K>::type;

// isum[t] (8 int32 lanes adding up to S) of block b times activation rows a[0..T) at block index i; mins16: the
// block's 8 sub-block mins as int16.
template <bool kFive, int T>
inline void k45_block_isum(const BlockK45<kFive>& b, const ActQ8_KRow* a, int64_t i, __m256i* isum, __m128i* mins16) {
  const char* pf = reinterpret_cast<const char*>(&b) + kPrefetchAhead;
  _mm_prefetch(pf, _MM_HINT_T0);
  _mm_prefetch(pf + 64, _MM_HINT_T0);
  _mm_prefetch(pf + 128, _MM_HINT_T0);
  // 16-bit lanes 0-7: the sub-block scales, 8-15: the mins
  const __m256i scm16 = _mm256_cvtepu8_epi16(k_scales_vec(b.scales));
  *mins16 = _mm256_extracti128_si256(scm16, 1);
  const __m256i scales16 = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(scm16));
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  for (int t = 0; t < T; ++t) isum[t] = qzero();
  __m256i hbits = _mm256_setzero_si256();
  if constexpr (kFive) hbits = load256(b.qh);
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    const __m256i chunk = load256(b.qs + 32 * c);
    __m256i lo = _mm256_and_si256(chunk, m4);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(chunk, 4), m4);
    if constexpr (kFive) {
      const __m256i one = _mm256_set1_epi8(1);
      const __m256i h0 = _mm256_and_si256(_mm256_srl_epi16(hbits, _mm_cvtsi32_si128(2 * c)), one);
      const __m256i h1 = _mm256_and_si256(_mm256_srl_epi16(hbits, _mm_cvtsi32_si128(2 * c + 1)), one);
      lo = _mm256_or_si256(lo, _mm256_slli_epi16(h0, 4));
      hi = _mm256_or_si256(hi, _mm256_slli_epi16(h1, 4));
    }
    // every 16-bit lane: scale 2c (2c + 1), picked from the scales in both 128-bit halves
    const __m256i sc_lo = _mm256_shuffle_epi8(scales16, _mm256_set1_epi16(static_cast<short>(((4 * c + 1) << 8) | (4 * c))));
    const __m256i sc_hi =
        _mm256_shuffle_epi8(scales16, _mm256_set1_epi16(static_cast<short>(((4 * c + 3) << 8) | (4 * c + 2))));
    for (int t = 0; t < T; ++t) {
      const int8_t* x = a[t].q + 256 * i + 64 * c;
      // pair products: |.| <= 2 * 31 * 128 < 2^15; times a scale < 64 summed in pairs fits int32
      isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(lo, qload(x)), sc_lo));
      isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(hi, qload(x + 32)), sc_hi));
    }
  }
}

// M's 4 partial lanes: the 8 sub-block mins times the sums of the activation row's 8 sub-blocks (bsums hold
// 16-element groups; |pair| <= 32 * 128 fits int16).
inline __m128i k45_min_lanes(__m128i mins16, const ActQ8_KRow& a, int64_t i) {
  const __m256i bs = load256(a.bsums + 16 * i);
  return _mm_madd_epi16(mins16, _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1)));
}

inline __m128i fold_i32(__m256i v) { return _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)); }

// [sum of a's lanes, of b's, of c's, of d's] (exact: integer adds in any order)
inline __m128i sums4_i32(__m128i a, __m128i b, __m128i c, __m128i d) {
  return _mm_hadd_epi32(_mm_hadd_epi32(a, b), _mm_hadd_epi32(c, d));
}

// The panels' float steps on 4 lanes: acc + (S * d - M * dmin) * dx.
inline __m128 k45_scale4(__m128 acc, __m128i S, __m128i M, __m128 d, __m128 dmin, __m128 dx) {
  return _mm_fmadd_ps(_mm_fnmadd_ps(_mm_cvtepi32_ps(M), dmin, _mm_mul_ps(_mm_cvtepi32_ps(S), d)), dx, acc);
}

template <bool kFive, int T>
void rowdot_k45_1(const uint8_t* w, const ActQ8_KRow* a, int64_t n, float* out) {
  const BlockK45<kFive>* blocks = reinterpret_cast<const BlockK45<kFive>*>(w);
  // from 2 tokens, in groups of 4 (lane k of acc[g]: token 4g + k; lanes past the last token repeat the group's
  // first); one token in lane 0, the same float steps
  constexpr int kGroups = (T + 3) / 4;
  __m128 acc[kGroups];
  for (int g = 0; g < kGroups; ++g) acc[g] = _mm_setzero_ps();
  for (int64_t i = 0; i < n / 256; ++i) {
    const BlockK45<kFive>& b = blocks[i];
    __m256i isum[T];
    __m128i mins16;
    k45_block_isum<kFive, T>(b, a, i, isum, &mins16);
    const __m128 d = _mm_set1_ps(half_to_float(b.d)), dmin = _mm_set1_ps(half_to_float(b.dmin));
    if constexpr (T == 1) {
      const __m128i s4 = fold_i32(isum[0]), m4 = k45_min_lanes(mins16, a[0], i);
      // [s0 + s2, s1 + s3, m0 + m2, m1 + m3], then each pair: lanes [S, S, M, M]
      const __m128i half = _mm_add_epi32(_mm_unpacklo_epi64(s4, m4), _mm_unpackhi_epi64(s4, m4));
      const __m128i sm = _mm_add_epi32(half, _mm_shuffle_epi32(half, 0xB1));
      acc[0] = k45_scale4(acc[0], sm, _mm_unpackhi_epi64(sm, sm), d, dmin, _mm_set1_ps(a[0].d[i]));
    } else {
#pragma GCC unroll 4
      for (int g = 0; g < kGroups; ++g) {
        __m128i s[4], m[4];
        alignas(16) float dx[4];
        for (int k = 0; k < 4; ++k) {
          const int t = 4 * g + k < T ? 4 * g + k : 4 * g;
          s[k] = fold_i32(isum[t]);
          m[k] = k45_min_lanes(mins16, a[t], i);
          dx[k] = a[t].d[i];
        }
        acc[g] = k45_scale4(acc[g], sums4_i32(s[0], s[1], s[2], s[3]), sums4_i32(m[0], m[1], m[2], m[3]), d, dmin,
                            _mm_load_ps(dx));
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    alignas(16) float lanes[4];
    _mm_store_ps(lanes, acc[t / 4]);
    out[t] = lanes[t % 4];
  }
}

// Decode (one token) of 4 rows at once: the 4 rows' sums share one hadd tree and one set of float steps, lane r for
// row r (the same steps as rowdot_k45_1, so the same bits). The integer sums of up to kChunk blocks are taken row
// after row first, so the weights are still read as one forward stream (the 4 rows are contiguous): reading the 4
// rows block by block, interleaved, made decode 8-15% slower on the shared Zen 3.
template <bool kFive>
void rowdot_k45_rows4(const uint8_t* w, size_t rb, const ActQ8_KRow* a, int64_t n, float (*out)[1]) {
  constexpr int64_t kChunk = 32;
  const int64_t nb = n / 256;
  __m128 acc = _mm_setzero_ps();
  for (int64_t i0 = 0; i0 < nb; i0 += kChunk) {
    const int64_t cnt = nb - i0 < kChunk ? nb - i0 : kChunk;
    __m128i s[4][kChunk], m[4][kChunk];
    alignas(16) float d[kChunk][4], dmin[kChunk][4];
    for (int r = 0; r < 4; ++r) {
      const BlockK45<kFive>* blocks = reinterpret_cast<const BlockK45<kFive>*>(w + r * rb);
      for (int64_t j = 0; j < cnt; ++j) {
        const BlockK45<kFive>& b = blocks[i0 + j];
        __m256i isum;
        __m128i mins16;
        k45_block_isum<kFive, 1>(b, a, i0 + j, &isum, &mins16);
        s[r][j] = fold_i32(isum);
        m[r][j] = k45_min_lanes(mins16, a[0], i0 + j);
        d[j][r] = half_to_float(b.d);
        dmin[j][r] = half_to_float(b.dmin);
      }
    }
    for (int64_t j = 0; j < cnt; ++j)
      acc = k45_scale4(acc, sums4_i32(s[0][j], s[1][j], s[2][j], s[3][j]), sums4_i32(m[0][j], m[1][j], m[2][j], m[3][j]),
                       _mm_load_ps(d[j]), _mm_load_ps(dmin[j]), _mm_set1_ps(a[0].d[i0 + j]));
  }
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, acc);
  for (int r = 0; r < 4; ++r) out[r][0] = lanes[r];
}

// Q6_K on AVX2: a unit of 32 codes (6 bits, from ql and qh) times each activation row with vpmaddubsw, and the pair
// sums times the unit's two group scales with one vpmaddwd (|pair| <= 2 * 63 * 128 < 2^15; times a scale < 128, summed
// in pairs, fits int32). The offset 32 comes off as 32 * sum(scale * bsum) per block, also with one vpmaddwd, and each
// block's integer sum is converted and scaled into a float accumulator (reduced once per row): no horizontal sums
// or scalar loops per block. The work per activation row is the same whatever T (a row's logits do not depend on how
// many rows a call takes: speculative verification must equal decode). Measured on the shared Zen 3 (EPYC, 'avx2',
// bench/native matmul_bench, 22 TinyLlama layers of Q6_K streamed, 1 thread) against the form with vpmulld, a
// horizontal sum and a scalar offset loop per block: 1 row 79-109 -> 46-63 ms, 3 rows 138-148 -> 74 ms; the 1.1B
// LM head (one row) 7.4 -> 4.6 ms.
template <int T>
void rowdot_q6k_1(const uint8_t* w, const ActQ8_KRow* a, int64_t n, float* out) {
  const BlockQ6_K* blocks = reinterpret_cast<const BlockQ6_K*>(w);
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  const __m256i lo4 = _mm256_set1_epi8(0x0F), three = _mm256_set1_epi8(3);
  for (int64_t i = 0; i < n / 256; ++i) {
    const BlockQ6_K& b = blocks[i];
    const char* ahead = reinterpret_cast<const char*>(&b) + kPrefetchAhead;
    for (int line = 0; line < static_cast<int>(sizeof(BlockQ6_K)); line += 64) _mm_prefetch(ahead + line, _MM_HINT_T0);
    // the 16 group scales as int16 (lane g); per half, both 128-bit lanes hold that half's 8 scales
    const __m256i sc16 = _mm256_cvtepi8_epi16(load128(b.scales));
    __m256i isum[T];
    for (int t = 0; t < T; ++t) {
      // 32 * sum(scale[g] * bsum[g]) to subtract (codes are value + 32)
      const __m256i corr = _mm256_madd_epi16(load256(a[t].bsums + 16 * i), sc16);
      isum[t] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 5));
    }
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = load256(b.ql + 64 * h), ql1 = load256(b.ql + 64 * h + 32), qh = load256(b.qh + 32 * h);
      __m256i codes[4];
      codes[0] = _mm256_or_si256(_mm256_and_si256(ql0, lo4), _mm256_slli_epi16(_mm256_and_si256(qh, three), 4));
      codes[1] = _mm256_or_si256(_mm256_and_si256(ql1, lo4),
                                 _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), three), 4));
      codes[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), lo4),
                                 _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), three), 4));
      codes[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), lo4),
                                 _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), three), 4));
      const __m256i half_scales = h ? _mm256_permute2x128_si256(sc16, sc16, 0x11) : _mm256_permute2x128_si256(sc16, sc16, 0x00);
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        // unit k: elements 0-15 take group 8h + 2k (word 2k of the half), 16-31 group 8h + 2k + 1 (word 2k + 1)
        const char lo = static_cast<char>(4 * k), hi = static_cast<char>(4 * k + 2);
        const __m256i sc = _mm256_shuffle_epi8(
            half_scales, _mm256_setr_epi8(lo, lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1, lo,
                                          lo + 1, lo, lo + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1,
                                          hi, hi + 1, hi, hi + 1, hi, hi + 1));
        for (int t = 0; t < T; ++t) {
          const __m256i p = _mm256_maddubs_epi16(codes[k], qload(a[t].q + 256 * i + 128 * h + 32 * k));
          isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(p, sc));
        }
      }
    }
    const float d = half_to_float(b.d);
    for (int t = 0; t < T; ++t) acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(d * a[t].d[i]), acc[t]);
  }
  for (int t = 0; t < T; ++t) out[t] = qreduce(acc[t]);
}

template <int T>
void rowdot_q8k_1(const uint8_t* w, const ActQ8_KRow* a, int64_t n, float* out) {
  const BlockQ8_K* blocks = reinterpret_cast<const BlockQ8_K*>(w);
  float res[T];
  for (int t = 0; t < T; ++t) res[t] = 0.f;
  for (int64_t i = 0; i < n / 256; ++i) {
    const BlockQ8_K& b = blocks[i];
    __m256i isum[T];
    for (int t = 0; t < T; ++t) isum[t] = qzero();
    for (int c = 0; c < 8; ++c) {
      const __m256i wv = qload(b.qs + 32 * c);
      for (int t = 0; t < T; ++t) isum[t] = qdot_ss(isum[t], wv, qload(a[t].q + 256 * i + 32 * c));
    }
    for (int t = 0; t < T; ++t) res[t] += b.d * a[t].d[i] * static_cast<float>(qreduce_i(isum[t]));
  }
  for (int t = 0; t < T; ++t) out[t] = res[t];
}
#endif

// R rows of the K-quant row kernels (one after the other: their per-block work dwarfs the per-row setup).
template <bool kFive, int R, int T>
void rowdot_k45(const uint8_t* w, size_t rb, const ActQ8_KRow* a, int64_t n, float (*out)[T]) {
#if !ADAINFER_Q512
  if constexpr (R == 4 && T == 1) {
    rowdot_k45_rows4<kFive>(w, rb, a, n, out);
    return;
  }
#endif
  for (int r = 0; r < R; ++r) rowdot_k45_1<kFive, T>(w + r * rb, a, n, out[r]);
}
template <int R, int T>
void rowdot_q6k(const uint8_t* w, size_t rb, const ActQ8_KRow* a, int64_t n, float (*out)[T]) {
  for (int r = 0; r < R; ++r) rowdot_q6k_1<T>(w + r * rb, a, n, out[r]);
}
template <int R, int T>
void rowdot_q8k(const uint8_t* w, size_t rb, const ActQ8_KRow* a, int64_t n, float (*out)[T]) {
  for (int r = 0; r < R; ++r) rowdot_q8k_1<T>(w + r * rb, a, n, out[r]);
}

// The K types, in the shape the drivers below use.
struct TQ4_K {
  static constexpr GgmlType kType = GgmlType::Q4_K;
  static constexpr int kBytes = 144;
};
struct TQ5_K {
  static constexpr GgmlType kType = GgmlType::Q5_K;
  static constexpr int kBytes = 176;
};
struct TQ6_K {
  static constexpr GgmlType kType = GgmlType::Q6_K;
  static constexpr int kBytes = 210;
};
struct TQ8_K {
  static constexpr GgmlType kType = GgmlType::Q8_K;
  static constexpr int kBytes = 292;
};

template <class Ty>
struct IsKType {
  static constexpr bool value = Ty::kType == GgmlType::Q4_K || Ty::kType == GgmlType::Q5_K ||
                                Ty::kType == GgmlType::Q6_K || Ty::kType == GgmlType::Q8_K;
};

// Activation row views of T rows starting at A (lda bytes apart).
template <class Ty>
using ActRow = typename std::conditional<IsKType<Ty>::value, ActQ8_KRow, ActQ8_0Row>::type;

template <class Ty>
inline ActRow<Ty> act_row(const uint8_t* row, int64_t n) {
  if constexpr (IsKType<Ty>::value) {
    return act_q8_k_row(row, n);
  } else {
    return act_q8_0_row(row, n);
  }
}

// R rows (starting at w, rb bytes apart) times T activation rows: out[r][t].
template <class Ty, int R, int T>
inline void rowdot(const uint8_t* w, size_t rb, const ActRow<Ty>* a, int64_t n, float (*out)[T]) {
  if constexpr (Ty::kType == GgmlType::Q4_K) {
    rowdot_k45<false, R, T>(w, rb, a, n, out);
  } else if constexpr (Ty::kType == GgmlType::Q5_K) {
    rowdot_k45<true, R, T>(w, rb, a, n, out);
  } else if constexpr (Ty::kType == GgmlType::Q6_K) {
    rowdot_q6k<R, T>(w, rb, a, n, out);
  } else if constexpr (Ty::kType == GgmlType::Q8_K) {
    rowdot_q8k<R, T>(w, rb, a, n, out);
  } else {
    rowdot_a<Ty, R, T>(w, rb, a, n, out);
  }
}

// Rows [r0, r1) times tokens [t0, t0 + T) with the row kernel, R rows per call (decode: T = 1, R = 4).
template <class Ty, int T, int R = 1>
inline void row_tile(const uint8_t* W, size_t rb, int64_t n_in, const uint8_t* A, int64_t lda, int64_t t0, float* Y,
                     int64_t ldy, int64_t r0, int64_t r1) {
  ActRow<Ty> a[T];
  for (int t = 0; t < T; ++t) a[t] = act_row<Ty>(A + (t0 + t) * lda, n_in);
  int64_t r = r0;
  auto rows = [&](auto count) {
    constexpr int kR = decltype(count)::value;
    float out[kR][T];
    rowdot<Ty, kR, T>(W + static_cast<size_t>(r) * rb, rb, a, n_in, out);
    for (int i = 0; i < kR; ++i)
      for (int t = 0; t < T; ++t) Y[(t0 + t) * ldy + r + i] = out[i][t];
    r += kR;
  };
  for (; r + R <= r1;) rows(Count<R>{});
  for (; r < r1;) rows(Count<1>{});
}

template <class Ty, bool kPacked = false>
inline void few_tile(int64_t count, const uint8_t* W, size_t rb, int64_t n_in, const uint8_t* A, int64_t lda,
                     int64_t t0, float* Y, int64_t ldy, int64_t r0, int64_t r1);

// f(Count<count>{}) for a count known only at run time, in [1, 8] (others: nothing).
template <class F>
inline void with_count8(int64_t count, F&& f) {
  switch (count) {
    case 8: f(Count<8>{}); break;
    case 7: f(Count<7>{}); break;
    case 6: f(Count<6>{}); break;
    case 5: f(Count<5>{}); break;
    case 4: f(Count<4>{}); break;
    case 3: f(Count<3>{}); break;
    case 2: f(Count<2>{}); break;
    case 1: f(Count<1>{}); break;
    default: break;
  }
}

#if !ADAINFER_Q512
// ---- AVX2 Q4_K / Q5_K prefill: 8-row panels, rows in lanes -------------------------------------------------------
// The row kernel multiplies each 32-element sub-block with vpmaddubsw and then vpmaddwd by its scale: two
// multiplies per 32 elements, weight row and token. With the rows in the lanes (as rows8_dot) a sub-block's 8
// vpmaddubsw (4 elements x 8 rows each) add up in 16 bits and one vpmaddwd applies the 8 rows' scales at once:
// 9 multiplies per 32 elements, 8 rows and token. The transposes that put the rows in the lanes, and the scale
// and min unpacking, are done once per 8 rows into a panel (all of a row's blocks) that every token then reads
// from L1/L2, so their cost is spread over all the matmul's tokens. The min term is summed in float from the
// activations' sub-block sums (sum32): every product (< 64 * 4096) and partial sum (< 2^24) is an integer, so it is
// exact, as the reference's integer sum.
// Measured on the shared Zen 3 (EPYC, 'avx2' kernels; bench/native matmul_bench, one TinyLlama layer, 1 thread, CPU
// time, medians of 7 runs alternating with the row kernel's build): 128 tokens Q4_K 158 -> 97 ms, Q5_K 157 -> 100 ms;
// 512 tokens Q4_K 697 -> 358 ms (medians of 5). A first form with the sub-block loop unrolled spilled the sums
// (GCC reassociated them, see below) and took 100 ms for Q4_K at 128 tokens.
// One panel block (256 elements of 8 rows):
//   codes  [8 sub-blocks j][8 quads q][32 bytes]: int32 lane r = codes of elements 32j + 4q .. 32j + 4q + 3 of row r
//   scales [8 j][8 int32]: lane r = row r's scale of sub-block j in both 16-bit halves (vpmaddwd operand)
//   mins   [8 j][8 float]: lane r = row r's min of sub-block j
//   d, dmin [8 float]: lane r = row r's block scales
constexpr size_t kK45PanelCodes = 8 * 8 * 32, kK45PanelScales = kK45PanelCodes, kK45PanelMins = kK45PanelScales + 8 * 32;
constexpr size_t kK45PanelD = kK45PanelMins + 8 * 32, kK45PanelDmin = kK45PanelD + 32, kK45PanelBlock = kK45PanelDmin + 32;
// Fewest tokens for which a matmul takes the panels (below: the row kernel, which reads each weight block once
// per 4 tokens but packs nothing). One TinyLlama layer, CPU time row kernel / panels on the shared Zen 3 (medians
// of 5 alternating): 8 tokens 0.99x, 12 1.07x, 16 1.9x, 128 1.76x.
constexpr int64_t kK45PanelMinTokens = 8;

// The 8 rows at w, w + rb, ..., w + 7 * rb (nblocks blocks each) into panel.
template <bool kFive>
void pack_k45_rows8(const uint8_t* w, size_t rb, int64_t nblocks, uint8_t* panel) {
  using Block = typename std::conditional<kFive, BlockQ5_K, BlockQ4_K>::type;
  const uint8_t* row[8];
  for (int r = 0; r < 8; ++r) row[r] = w + r * rb;
  const __m256i m4 = _mm256_set1_epi8(0x0F), bit4 = _mm256_set1_epi8(16);
  for (int64_t i = 0; i < nblocks; ++i) {
    const size_t off = static_cast<size_t>(i) * sizeof(Block);
    uint8_t* p = panel + static_cast<size_t>(i) * kK45PanelBlock;
    // bytes 16h .. 16h + 15 of chunk c: low nibbles are elements 16h .. 16h + 15 of sub-block 2c, high of 2c + 1
    for (int c = 0; c < 4; ++c) {
      for (int h = 0; h < 2; ++h) {
        __m256i D[4], H[4];
        rows8_transpose16(row, off + offsetof(Block, qs) + 32 * c + 16 * h, D);
        if constexpr (kFive) rows8_transpose16(row, off + offsetof(Block, qh) + 16 * h, H);
        for (int k = 0; k < 4; ++k) {
          __m256i lo = _mm256_and_si256(D[k], m4), hi = _mm256_and_si256(_mm256_srli_epi16(D[k], 4), m4);
          if constexpr (kFive) {
            // bit 2c (2c + 1) of each qh byte to bit 4: shifts within 16-bit lanes keep each byte's bits apart
            // after the mask, as the shift is < 8
            const __m128i to_lo = _mm_cvtsi32_si128(2 * c), to_hi = _mm_cvtsi32_si128(2 * c + 1);
            lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(_mm256_srl_epi16(H[k], to_lo), 4), bit4));
            hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(_mm256_srl_epi16(H[k], to_hi), 4), bit4));
          }
          _mm256_store_si256(reinterpret_cast<__m256i*>(p + 32 * (8 * (2 * c) + 4 * h + k)), lo);
          _mm256_store_si256(reinterpret_cast<__m256i*>(p + 32 * (8 * (2 * c + 1) + 4 * h + k)), hi);
        }
      }
    }
    int32_t* scales = reinterpret_cast<int32_t*>(p + kK45PanelScales);
    float* mins = reinterpret_cast<float*>(p + kK45PanelMins);
    float* d = reinterpret_cast<float*>(p + kK45PanelD);
    float* dmin = reinterpret_cast<float*>(p + kK45PanelDmin);
    for (int r = 0; r < 8; ++r) {
      const Block* b = reinterpret_cast<const Block*>(row[r] + off);
      uint32_t words[4];
      k_scale_words(b->scales, words);
      for (int j = 0; j < 8; ++j) {
        const int32_t sc = static_cast<int32_t>((words[j / 4] >> (8 * (j % 4))) & 0xff);
        scales[8 * j + r] = sc | (sc << 16);
        mins[8 * j + r] = static_cast<float>((words[2 + j / 4] >> (8 * (j % 4))) & 0xff);
      }
      d[r] = half_to_float(b->d);
      dmin[r] = half_to_float(b->dmin);
    }
  }
}

// The panel's 8 rows times T activation rows: acc[t] lane r = dot(row r, activation row t).
template <bool kFive, int T>
void k45_panel_dot(const uint8_t* panel, const ActQ8_KRow* a, int64_t nblocks, __m256* acc) {
  // 16-bit sums of vpmaddubsw pairs (|pair| <= 2 * 15 * 128): 8 quads of 4-bit codes fit, 4 of 5-bit codes
  constexpr int kQuadsPerSum = kFive ? 4 : 8;
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nblocks; ++i) {
    const uint8_t* p = panel + static_cast<size_t>(i) * kK45PanelBlock;
    __m256i isum[T];
    for (int t = 0; t < T; ++t) isum[t] = _mm256_setzero_si256();
#pragma GCC unroll 1
    for (int j = 0; j < 8; ++j) {
      const __m256i sc = _mm256_load_si256(reinterpret_cast<const __m256i*>(p + kK45PanelScales + 32 * j));
#pragma GCC unroll 2
      for (int q0 = 0; q0 < 8; q0 += kQuadsPerSum) {
        __m256i s16[T];
#pragma GCC unroll 8
        for (int q = q0; q < q0 + kQuadsPerSum; ++q) {
          const __m256i C = _mm256_load_si256(reinterpret_cast<const __m256i*>(p + 32 * (8 * j + q)));
          for (int t = 0; t < T; ++t) {
            const __m256i prod = _mm256_maddubs_epi16(C, _mm256_set1_epi32(load_i32(a[t].q + 256 * i + 32 * j + 4 * q)));
            s16[t] = q == q0 ? prod : _mm256_add_epi16(s16[t], prod);
            // an empty asm that "changes" the sum: without it GCC reassociates the 8 additions into a tree, holds
            // all 32 products of the 4 tokens at once and spills them to the stack
            __asm__("" : "+x"(s16[t]));
          }
        }
        // |s16| * scale summed in pairs: < 2 * 2^15 * 64 per sub-block, 8 sub-blocks < 2^31
        for (int t = 0; t < T; ++t) isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16[t], sc));
      }
    }
    const __m256 dv = _mm256_load_ps(reinterpret_cast<const float*>(p + kK45PanelD));
    const __m256 dminv = _mm256_load_ps(reinterpret_cast<const float*>(p + kK45PanelDmin));
    const float* mins = reinterpret_cast<const float*>(p + kK45PanelMins);
    for (int t = 0; t < T; ++t) {
      // sum over sub-blocks of min * (sum of the sub-block's activation codes), exact in float (see above)
      const float* s = a[t].sum32 + 8 * i;
      __m256 m0 = _mm256_mul_ps(_mm256_load_ps(mins), _mm256_broadcast_ss(s));
      __m256 m1 = _mm256_mul_ps(_mm256_load_ps(mins + 8), _mm256_broadcast_ss(s + 1));
      for (int j = 2; j < 8; j += 2) {
        m0 = _mm256_fmadd_ps(_mm256_load_ps(mins + 8 * j), _mm256_broadcast_ss(s + j), m0);
        m1 = _mm256_fmadd_ps(_mm256_load_ps(mins + 8 * j + 8), _mm256_broadcast_ss(s + j + 1), m1);
      }
      const __m256 v = _mm256_fnmadd_ps(_mm256_add_ps(m0, m1), dminv, _mm256_mul_ps(_mm256_cvtepi32_ps(isum[t]), dv));
      acc[t] = _mm256_fmadd_ps(v, _mm256_broadcast_ss(a[t].d + i), acc[t]);
    }
  }
}

// ---- AVX2 Q8_0 prefill: 8-row panels ---------------------------------------------------------------------------
// rows8_dot transposes each block of 8 rows again for every 8 tokens and, with 8 tokens, holds more vectors than
// there are registers (the codes, their absolute values and 8 accumulators: spilled). The panel transposes them
// once per 8 rows; per block and 4 tokens the micro-kernel then loads 8 vectors of codes from L1/L2, takes |w| once
// for the 4 tokens and keeps everything else in registers. Measured as k45_panel_dot, against rows8_dot's 8 x 8
// tiles: 128 tokens 153 -> 139 ms (medians of 7), 512 tokens 694 -> 561 ms (medians of 5).
// The panel is the packed layout (pack_rows8<TQ8_0>): a packed matrix's groups are read in place, GGUF rows are
// packed 8 at a time into a buffer.

// The panel's 8 rows times T activation rows: acc[t] lane r = dot(row r, activation row t). As rows8_dot: |w| times
// the activation with w's sign (vpsignb), the pair sums (<= 2 * 128 * 127) through vpmaddwd one by one.
// The products are those of rows8_dot, term by term (the same exact integer sums, the same scale product and
// multiply-add per block), so a row's result does not depend on which of the two kernels computed it.
template <int T>
void q8_0_panel_dot(const uint8_t* panel, const ActQ8_0Row* a, int64_t nblocks, __m256* acc) {
  const __m256i ones16 = _mm256_set1_epi16(1);
  constexpr size_t kBlock = 8 * TQ8_0::kBytes;
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nblocks; ++b) {
    const uint8_t* p = panel + static_cast<size_t>(b) * kBlock;
    __m256i isum[T];
#pragma GCC unroll 8
    for (int q = 0; q < 8; ++q) {
      const __m256i C = load256(p + 32 * q);
      const __m256i U = _mm256_sign_epi8(C, C);
      for (int t = 0; t < T; ++t) {
        const __m256i xs = _mm256_sign_epi8(_mm256_set1_epi32(load_i32(a[t].q + 32 * b + 4 * q)), C);
        const __m256i prod = _mm256_madd_epi16(_mm256_maddubs_epi16(U, xs), ones16);
        isum[t] = q == 0 ? prod : _mm256_add_epi32(isum[t], prod);
        __asm__("" : "+x"(isum[t]));  // keeps the sum a chain (see k45_panel_dot)
      }
    }
    const __m256 dv = _mm256_cvtph_ps(load128(p + kPackedCodes<TQ8_0>));
    for (int t = 0; t < T; ++t)
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(dv, _mm256_broadcast_ss(a[t].d + b)), acc[t]);
  }
}

// Fewest tokens for which a matmul takes the panels, and tokens per micro-kernel call. Q8_0's panel (as large as
// the weights) pays back later than the K-quants': one TinyLlama layer (weights beyond L3), CPU time old/new on the
// shared Zen 3, medians of 5 alternating: 8 tokens 0.69x, 16 1.02x, 32 1.10x, 64 1.25x, 128 1.17x.
template <class Ty>
constexpr int64_t kPanel8MinTokens = Ty::kType == GgmlType::Q8_0 ? 32 : kK45PanelMinTokens;

// Rows from row_begin in whole groups of 8 times all n_tok tokens through the 8-row panels (Q4_K, Q5_K, Q8_0);
// returns the first row not done (the rest, fewer than 8, go through the row kernel). kPacked (Q8_0): each group of
// the packed matrix is its own panel (row_begin a multiple of 8), nothing is repacked.
template <class Ty, bool kPacked = false>
int64_t matmul_panels8(const uint8_t* W, size_t rb, int64_t n_in, const uint8_t* A, int64_t lda, int64_t n_tok,
                       float* Y, int64_t ldy, int64_t row_begin, int64_t row_end) {
  constexpr bool kQ8 = Ty::kType == GgmlType::Q8_0, kFive = Ty::kType == GgmlType::Q5_K;
  static_assert(!kPacked || kQ8, "packed panels exist for Q8_0 only");
  const int64_t nblocks = n_in / (kQ8 ? 32 : 256);
  const size_t block_bytes = kQ8 ? 8 * TQ8_0::kBytes : kK45PanelBlock;
  uint8_t* panel = nullptr;
  if constexpr (!kPacked) {
    panel = static_cast<uint8_t*>(std::aligned_alloc(64, act_align64(static_cast<size_t>(nblocks) * block_bytes)));
    if (!panel) std::abort();
  }
  int64_t r = row_begin;
  for (; r + 8 <= row_end; r += 8) {
    const uint8_t* rows = W + static_cast<size_t>(r) * rb;
    if constexpr (!kPacked) {  // (packed: the group is the panel)
      if constexpr (kQ8) {
        pack_rows8<TQ8_0>(rows, panel, 8, n_in);
      } else {
        pack_k45_rows8<kFive>(rows, rb, nblocks, panel);
      }
    }
    auto tile = [&](int64_t t0, auto tokens) {
      constexpr int kT = decltype(tokens)::value;
      ActRow<Ty> a[kT];
      for (int t = 0; t < kT; ++t) a[t] = act_row<Ty>(A + (t0 + t) * lda, n_in);
      __m256 acc[kT];
      if constexpr (kQ8) {
        q8_0_panel_dot<kT>(kPacked ? rows : panel, a, nblocks, acc);
      } else {
        k45_panel_dot<kFive, kT>(panel, a, nblocks, acc);
      }
      for (int t = 0; t < kT; ++t) _mm256_storeu_ps(Y + (t0 + t) * ldy + r, acc[t]);
    };
    int64_t t = 0;
    for (; t + kPanel8Tokens <= n_tok; t += kPanel8Tokens) tile(t, Count<kPanel8Tokens>{});
    with_count8(n_tok - t, [&](auto tokens) { tile(t, tokens); });
  }
  std::free(panel);
  return r;
}
#endif


// The row kernel over a whole matmul: rows in blocks of 16 (they stay in L1/L2) times tokens in blocks of 64
// (their activations stay in L2), 4 tokens per call.
template <class Ty, bool kPacked = false>
void matmul_rows(const void* W_raw, int64_t n_in, const uint8_t* A, int64_t lda, int64_t n_tok, float* Y,
                 int64_t ldy, int64_t row_begin, int64_t row_end) {
  const uint8_t* W = static_cast<const uint8_t*>(W_raw);
  const size_t rb = row_bytes(static_cast<int32_t>(Ty::kType), n_in);
  if (n_tok == 1) {
#if !ADAINFER_Q512
    if constexpr (!IsKType<Ty>::value) {
      rows8_tile<Ty, 1, kPacked>(W, rb, n_in, A, lda, 0, Y, ldy, row_begin, row_end);
      return;
    }
#endif
    row_tile<Ty, 1, kDecodeRows>(W, rb, n_in, A, lda, 0, Y, ldy, row_begin, row_end);
    return;
  }
#if !ADAINFER_Q512
  // AVX2 Q4_K / Q5_K / Q8_0: whole groups of 8 rows through the panels, the rest below
  if constexpr (Ty::kType == GgmlType::Q4_K || Ty::kType == GgmlType::Q5_K || Ty::kType == GgmlType::Q8_0) {
    if (n_tok >= kPanel8MinTokens<Ty>) row_begin = matmul_panels8<Ty, kPacked>(W, rb, n_in, A, lda, n_tok, Y, ldy, row_begin, row_end);
  }
#endif
  for (int64_t r0 = row_begin; r0 < row_end; r0 += 16) {
    const int64_t r1 = r0 + 16 < row_end ? r0 + 16 : row_end;
    for (int64_t tb = 0; tb < n_tok; tb += 64) {
      const int64_t te = tb + 64 < n_tok ? tb + 64 : n_tok;
      int64_t t = tb;
#if !ADAINFER_Q512
      // AVX2, types of 32-element blocks: tiles of 8 weight rows x 8 tokens (rows8_dot); few_tile takes the rest
      if constexpr (!IsKType<Ty>::value) {
        for (; t + 8 <= te; t += 8) rows8_tile<Ty, 8, kPacked>(W, rb, n_in, A, lda, t, Y, ldy, r0, r1);
        if (t < te) few_tile<Ty, kPacked>(te - t, W, rb, n_in, A, lda, t, Y, ldy, r0, r1);
        continue;
      }
#endif
      for (; t + 4 <= te; t += 4) row_tile<Ty, 4>(W, rb, n_in, A, lda, t, Y, ldy, r0, r1);
      switch (te - t) {
        case 3: row_tile<Ty, 3>(W, rb, n_in, A, lda, t, Y, ldy, r0, r1); break;
        case 2: row_tile<Ty, 2>(W, rb, n_in, A, lda, t, Y, ldy, r0, r1); break;
        case 1: row_tile<Ty, 1>(W, rb, n_in, A, lda, t, Y, ldy, r0, r1); break;
        default: break;
      }
    }
  }
}

// ---- a few activation rows (kernels.h: matmul_act_few) ----------------------------------------------------------

// Rows [r0, r1) times activation rows [t0, t0 + count), count in [1, 8], with all of them at once: 8 weight rows
// at a time (rows8_dot) on AVX2, the row kernel otherwise.
template <class Ty, bool kPacked>
inline void few_tile(int64_t count, const uint8_t* W, size_t rb, int64_t n_in, const uint8_t* A, int64_t lda,
                     int64_t t0, float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  with_count8(count, [&](auto tokens) {
    constexpr int kT = decltype(tokens)::value;
#if !ADAINFER_Q512
    if constexpr (!IsKType<Ty>::value) {
      rows8_tile<Ty, kT, kPacked>(W, rb, n_in, A, lda, t0, Y, ldy, r0, r1);
      return;
    }
#endif
    if constexpr (!kPacked) row_tile<Ty, kT>(W, rb, n_in, A, lda, t0, Y, ldy, r0, r1);
  });
}

// MatmulActFn for 2 .. kFewRowsMax activation rows. Like decode, one pass over the weights, which stream from
// memory: up to 8 rows all go through the row kernel together (each weight block read and unpacked once);
// 9 .. 16 rows take 16 weight rows at a time (they stay in L1) through a tile of 8 activation rows and one of
// the rest. Not the repacked panels of VNNI prefill: they unpack every 16 weight rows into a buffer first, work
// that few activation rows cannot pay back (not measured: the development machine has no AVX-512).
template <class Ty, bool kPacked = false>
void matmul_act_few_q(const void* W_raw, int64_t n_in, const uint8_t* A, int64_t lda, int64_t n_tok, float* Y,
                      int64_t ldy, int64_t row_begin, int64_t row_end) {
  const uint8_t* W = static_cast<const uint8_t*>(W_raw);
  const size_t rb = row_bytes(static_cast<int32_t>(Ty::kType), n_in);
  if (n_tok <= 8) {
    few_tile<Ty, kPacked>(n_tok, W, rb, n_in, A, lda, 0, Y, ldy, row_begin, row_end);
    return;
  }
  const int64_t rest = (n_tok < kFewRowsMax ? n_tok : kFewRowsMax) - 8;
  for (int64_t r0 = row_begin; r0 < row_end; r0 += 16) {
    const int64_t r1 = r0 + 16 < row_end ? r0 + 16 : row_end;
    few_tile<Ty, kPacked>(8, W, rb, n_in, A, lda, 0, Y, ldy, r0, r1);
    few_tile<Ty, kPacked>(rest, W, rb, n_in, A, lda, 8, Y, ldy, r0, r1);
  }
}

// ---- prefill with VNNI: repacked 16-row panels ---------------------------------------------------------------

#if ADAINFER_QVNNI
constexpr int kPanelRows = 16;
constexpr int kPanelTokens = 8;

// 16 rows of one weight matrix, repacked: codes of elements 4k .. 4k + 3 of row r at byte (16 * k + r) * 4,
// and per row and sub-block (kSub elements) a float scale and bias with value = scale * code + bias.
struct Panel {
  uint8_t* codes;  // [n_units * 16][16][4]
  float* scale;    // [n_sub][16]
  float* bias;     // [n_sub][16]
};

template <class Ty>
struct PanelTraits {
  // Elements per sub-block (one scale/bias): 16 for Q6_K, 32 for the rest.
  static constexpr int kSub = Ty::kType == GgmlType::Q6_K ? 16 : 32;
  static constexpr bool kMinS = Ty::kType == GgmlType::Q4_1 || Ty::kType == GgmlType::Q5_1;
};

// Codes of unit u (elements 64u .. 64u + 63) of one row, unsigned, in element order.
template <class Ty>
inline __m512i unit_codes(const uint8_t* row, int64_t u, int64_t n) {
  if constexpr (Ty::kType == GgmlType::Q4_K || Ty::kType == GgmlType::Q5_K) {
    constexpr bool kFive = Ty::kType == GgmlType::Q5_K;
    const uint8_t* b = row + (u >> 2) * Ty::kBytes;
    // Q4_K: d, dmin, scales[12], qs; Q5_K: d, dmin, scales[12], qh[32], qs
    return codes_k45<kFive>(b + (kFive ? 48 : 16), kFive ? b + 16 : nullptr, static_cast<int>(u & 3));
  } else if constexpr (Ty::kType == GgmlType::Q6_K) {
    return codes_q6k(reinterpret_cast<const BlockQ6_K*>(row + (u >> 2) * Ty::kBytes), static_cast<int>(u & 3));
  } else if constexpr (Ty::kType == GgmlType::Q8_K) {
    const uint8_t* b = row + (u >> 2) * Ty::kBytes;
    return _mm512_xor_si512(qload(b + 4 + 64 * (u & 3)), _mm512_set1_epi8(static_cast<char>(0x80)));
  } else {
    const uint8_t* b = row + 2 * u * Ty::kBytes;
    return 2 * u + 1 < n / 32 ? codes_a<Ty, true>(b) : codes_a<Ty, false>(b);
  }
}

// scale[j], bias[j] of every sub-block j of one row (kSub elements each).
template <class Ty>
inline void row_scales(const uint8_t* row, int64_t n, float* scale, float* bias, int64_t stride) {
  if constexpr (Ty::kType == GgmlType::Q4_K || Ty::kType == GgmlType::Q5_K) {
    for (int64_t i = 0; i < n / 256; ++i) {
      const uint8_t* b = row + i * Ty::kBytes;
      const float d = half_to_float(load_u16(b)), dmin = half_to_float(load_u16(b + 2));
      uint32_t words[4];
      k_scale_words(b + 4, words);
      uint8_t sm[16];
      std::memcpy(sm, words, 16);
      for (int j = 0; j < 8; ++j) {
        scale[(8 * i + j) * stride] = d * sm[j];
        bias[(8 * i + j) * stride] = -(dmin * sm[8 + j]);
      }
    }
  } else if constexpr (Ty::kType == GgmlType::Q6_K) {
    for (int64_t i = 0; i < n / 256; ++i) {
      const BlockQ6_K* b = reinterpret_cast<const BlockQ6_K*>(row + i * Ty::kBytes);
      const float d = half_to_float(b->d);
      for (int g = 0; g < 16; ++g) {
        const float s = d * b->scales[g];
        scale[(16 * i + g) * stride] = s;
        bias[(16 * i + g) * stride] = -32.f * s;
      }
    }
  } else if constexpr (Ty::kType == GgmlType::Q8_K) {
    for (int64_t i = 0; i < n / 256; ++i) {
      float d;
      std::memcpy(&d, row + i * Ty::kBytes, 4);
      for (int j = 0; j < 8; ++j) {
        scale[(8 * i + j) * stride] = d;
        bias[(8 * i + j) * stride] = -128.f * d;
      }
    }
  } else {
    for (int64_t j = 0; j < n / 32; ++j) {
      const uint8_t* b = row + j * Ty::kBytes;
      const float d = half_to_float(load_u16(b));
      scale[j * stride] = d;
      bias[j * stride] = Ty::kMin ? half_to_float(load_u16(b + Ty::kM)) : -static_cast<float>(Ty::kOffset) * d;
    }
  }
}

// Repacks rows [r0, r0 + nrows) (nrows <= 16; the missing rows get zero codes and scales) into the panel.
template <class Ty>
void pack_panel(const uint8_t* W, size_t rb, int64_t r0, int nrows, int64_t n, const Panel& P) {
  const int64_t n_units = (n + 63) / 64;
  const int64_t n_sub = n / PanelTraits<Ty>::kSub;
  alignas(64) uint8_t tmp[kPanelRows * 64];
  const __m512i rows_idx =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(64));
  if (nrows < kPanelRows) std::memset(tmp, 0, sizeof tmp);
  for (int64_t u = 0; u < n_units; ++u) {
    for (int r = 0; r < nrows; ++r) _mm512_store_si512(tmp + 64 * r, unit_codes<Ty>(W + (r0 + r) * rb, u, n));
    // transpose: dword k of every row -> 16 consecutive dwords
    uint8_t* dst = P.codes + u * 16 * 64;
    for (int k = 0; k < 16; ++k) _mm512_store_si512(dst + 64 * k, _mm512_i32gather_epi32(rows_idx, tmp + 4 * k, 1));
  }
  for (int r = 0; r < nrows; ++r) row_scales<Ty>(W + (r0 + r) * rb, n, P.scale + r, P.bias + r, kPanelRows);
  for (int r = nrows; r < kPanelRows; ++r)
    for (int64_t j = 0; j < n_sub; ++j) P.scale[j * kPanelRows + r] = P.bias[j * kPanelRows + r] = 0.f;
}

// The panel times T tokens: y[t][0 .. 16) (masked to the panel's rows). kSub: elements per sub-block; kKAct:
// Q8_K activations (one d per 256 elements; else Q8_0, one d per 32); kMinS: the bias is a true min (Q4_1,
// Q5_1), multiplied by the activation's s = fp16(d * sum q) as ggml does, instead of an offset of the codes.
template <int kSub, bool kKAct, bool kMinS, int T>
void panel_tile(const Panel& P, int64_t n, const uint8_t* const* act, float* const* y, __mmask16 rows) {
  constexpr int kSteps = kSub / 4;
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  auto sub_block = [&](int64_t j, const int8_t* const* q, auto&& finish) {
    __m512i ai[T];
    for (int t = 0; t < T; ++t) ai[t] = qzero();
    const uint8_t* cw = P.codes + j * kSteps * 64;
#pragma GCC unroll 8
    for (int kk = 0; kk < kSteps; ++kk) {
      const __m512i wv = _mm512_load_si512(cw + 64 * kk);
      for (int t = 0; t < T; ++t) ai[t] = _mm512_dpbusd_epi32(ai[t], wv, _mm512_set1_epi32(load_i32(q[t] + j * kSub + 4 * kk)));
    }
    finish(ai, _mm512_load_ps(P.scale + 16 * j), _mm512_load_ps(P.bias + 16 * j));
  };
  if constexpr (!kKAct) {
    static_assert(kSub == 32, "Q8_0 activations come in blocks of 32");
    ActQ8_0Row a[T];
    const int8_t* q[T];
    for (int t = 0; t < T; ++t) {
      a[t] = act_q8_0_row(act[t], n);
      q[t] = a[t].q;
    }
    for (int64_t j = 0; j < n / 32; ++j) {
      sub_block(j, q, [&](__m512i* ai, __m512 sc, __m512 bi) {
        for (int t = 0; t < T; ++t) {
          if constexpr (kMinS) {
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(qcvt(ai[t]), sc), _mm512_set1_ps(a[t].d[j]), acc[t]);
            acc[t] = _mm512_fmadd_ps(bi, _mm512_set1_ps(a[t].s[j]), acc[t]);
          } else {
            const __m512 v = _mm512_fmadd_ps(qcvt(ai[t]), sc, _mm512_mul_ps(bi, _mm512_set1_ps(a[t].sum[j])));
            acc[t] = _mm512_fmadd_ps(v, _mm512_set1_ps(a[t].d[j]), acc[t]);
          }
        }
      });
    }
  } else {
    ActQ8_KRow a[T];
    const int8_t* q[T];
    const float* sums[T];
    for (int t = 0; t < T; ++t) {
      a[t] = act_q8_k_row(act[t], n);
      q[t] = a[t].q;
      sums[t] = kSub == 16 ? a[t].sum16 : a[t].sum32;
    }
    constexpr int kPerBlock = 256 / kSub;
    for (int64_t i = 0; i < n / 256; ++i) {
      __m512 sb[T];
      for (int t = 0; t < T; ++t) sb[t] = _mm512_setzero_ps();
      for (int js = 0; js < kPerBlock; ++js) {
        const int64_t j = i * kPerBlock + js;
        sub_block(j, q, [&](__m512i* ai, __m512 sc, __m512 bi) {
          for (int t = 0; t < T; ++t) {
            sb[t] = _mm512_fmadd_ps(qcvt(ai[t]), sc, sb[t]);
            sb[t] = _mm512_fmadd_ps(bi, _mm512_set1_ps(sums[t][j]), sb[t]);
          }
        });
      }
      for (int t = 0; t < T; ++t) acc[t] = _mm512_fmadd_ps(sb[t], _mm512_set1_ps(a[t].d[i]), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y[t], rows, acc[t]);
}

template <class Ty, int T>
inline void panel_tokens(const Panel& P, int64_t n, const uint8_t* A, int64_t lda, int64_t t0, float* Y, int64_t ldy,
                         int64_t row, __mmask16 rows) {
  const uint8_t* act[T];
  float* y[T];
  for (int t = 0; t < T; ++t) {
    act[t] = A + (t0 + t) * lda;
    y[t] = Y + (t0 + t) * ldy + row;
  }
  panel_tile<PanelTraits<Ty>::kSub, IsKType<Ty>::value, PanelTraits<Ty>::kMinS, T>(P, n, act, y, rows);
}

template <class Ty>
void matmul_panels(const void* W_raw, int64_t n_in, const uint8_t* A, int64_t lda, int64_t n_tok, float* Y,
                   int64_t ldy, int64_t row_begin, int64_t row_end) {
  const uint8_t* W = static_cast<const uint8_t*>(W_raw);
  const size_t rb = row_bytes(static_cast<int32_t>(Ty::kType), n_in);
  const int64_t n_units = (n_in + 63) / 64;
  const int64_t n_sub = n_in / PanelTraits<Ty>::kSub;
  const size_t code_bytes = static_cast<size_t>(n_units) * 16 * 64;
  const size_t scale_bytes = act_align64(static_cast<size_t>(n_sub) * kPanelRows * sizeof(float));
  uint8_t* mem = static_cast<uint8_t*>(std::aligned_alloc(64, code_bytes + 2 * scale_bytes));
  if (!mem) std::abort();
  const Panel P{mem, reinterpret_cast<float*>(mem + code_bytes), reinterpret_cast<float*>(mem + code_bytes + scale_bytes)};
  for (int64_t row = row_begin; row < row_end; row += kPanelRows) {
    const int nrows = row_end - row < kPanelRows ? static_cast<int>(row_end - row) : kPanelRows;
    pack_panel<Ty>(W, rb, row, nrows, n_in, P);
    const __mmask16 rows = static_cast<__mmask16>((1u << nrows) - 1u);
    int64_t t = 0;
    for (; t + kPanelTokens <= n_tok; t += kPanelTokens) panel_tokens<Ty, kPanelTokens>(P, n_in, A, lda, t, Y, ldy, row, rows);
    switch (n_tok - t) {
      case 7: panel_tokens<Ty, 7>(P, n_in, A, lda, t, Y, ldy, row, rows); break;
      case 6: panel_tokens<Ty, 6>(P, n_in, A, lda, t, Y, ldy, row, rows); break;
      case 5: panel_tokens<Ty, 5>(P, n_in, A, lda, t, Y, ldy, row, rows); break;
      case 4: panel_tokens<Ty, 4>(P, n_in, A, lda, t, Y, ldy, row, rows); break;
      case 3: panel_tokens<Ty, 3>(P, n_in, A, lda, t, Y, ldy, row, rows); break;
      case 2: panel_tokens<Ty, 2>(P, n_in, A, lda, t, Y, ldy, row, rows); break;
      case 1: panel_tokens<Ty, 1>(P, n_in, A, lda, t, Y, ldy, row, rows); break;
      default: break;
    }
  }
  std::free(mem);
}
#endif

// ---- BF16 weights with AVX512-BF16 (vdpbf16ps) ----------------------------------------------------------------
// The activations are rounded to bf16 once per matmul (as ggml does for BF16 weights); vdpbf16ps then does 32
// multiply-adds per instruction (the products of two bf16 values are exact in fp32), twice the rate of
// converting the weights to fp32 and using FMAs.

#if defined(__AVX512BF16__)
inline __m512bh bf16_load(const uint16_t* p) { return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p)); }
inline __m512bh bf16_load_partial(const uint16_t* p, int64_t n) {  // n < 32 elements, the rest zero
  return reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(static_cast<__mmask32>((1ull << n) - 1ull), p));
}

// R weight rows times T activation rows over n elements: out[r][t]. Each weight vector serves T tokens and
// each activation vector R rows; U independent accumulator sets hide the latency when R * T is small.
template <int R, int T, int U>
inline void bf16_tile(const uint16_t* const* w, const uint16_t* const* x, int64_t n, float (*out)[T]) {
  __m512 acc[U][R][T];
  for (int u = 0; u < U; ++u)
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) acc[u][r][t] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 * U <= n; i += 32 * U) {
    if constexpr (R == 1 && T == 1) _mm_prefetch(reinterpret_cast<const char*>(w[0] + i) + kPrefetchAhead, _MM_HINT_T0);
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      __m512bh wv[R];
      for (int r = 0; r < R; ++r) wv[r] = bf16_load(w[r] + i + 32 * u);
      for (int t = 0; t < T; ++t) {
        const __m512bh xv = bf16_load(x[t] + i + 32 * u);
        for (int r = 0; r < R; ++r) acc[u][r][t] = _mm512_dpbf16_ps(acc[u][r][t], wv[r], xv);
      }
    }
  }
  for (; i < n; i += 32) {
    const int64_t left = n - i;
    __m512bh wv[R];
    for (int r = 0; r < R; ++r) wv[r] = left >= 32 ? bf16_load(w[r] + i) : bf16_load_partial(w[r] + i, left);
    for (int t = 0; t < T; ++t) {
      const __m512bh xv = left >= 32 ? bf16_load(x[t] + i) : bf16_load_partial(x[t] + i, left);
      for (int r = 0; r < R; ++r) acc[0][r][t] = _mm512_dpbf16_ps(acc[0][r][t], wv[r], xv);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) {
      __m512 v = acc[0][r][t];
      for (int u = 1; u < U; ++u) v = _mm512_add_ps(v, acc[u][r][t]);
      out[r][t] = _mm512_reduce_add_ps(v);
    }
}

template <int R, int T>
inline void bf16_block(const uint16_t* W, int64_t n_in, const uint8_t* A, int64_t lda, int64_t t0, float* Y, int64_t ldy,
                       int64_t row) {
  const uint16_t* w[R];
  const uint16_t* x[T];
  for (int r = 0; r < R; ++r) w[r] = W + (row + r) * n_in;
  for (int t = 0; t < T; ++t) x[t] = reinterpret_cast<const uint16_t*>(A + (t0 + t) * lda);
  float out[R][T];
  bf16_tile<R, T, (R * T >= 8 ? 1 : 4)>(w, x, n_in, out);
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) Y[(t0 + t) * ldy + row + r] = out[r][t];
}

// Tokens [t0, t0 + T) times rows [r0, r1), 4 rows at a time.
template <int T>
inline void bf16_rows(const uint16_t* W, int64_t n_in, const uint8_t* A, int64_t lda, int64_t t0, float* Y, int64_t ldy,
                      int64_t r0, int64_t r1) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) bf16_block<4, T>(W, n_in, A, lda, t0, Y, ldy, r);
  for (; r < r1; ++r) bf16_block<1, T>(W, n_in, A, lda, t0, Y, ldy, r);
}

// MatmulActFn for BF16 weights and kActBF16 activations.
void matmul_act_bf16(const void* W_raw, int64_t n_in, const uint8_t* A, int64_t lda, int64_t n_tok, float* Y,
                     int64_t ldy, int64_t row_begin, int64_t row_end) {
  const uint16_t* W = static_cast<const uint16_t*>(W_raw);
  if (n_tok == 1) {
    for (int64_t r = row_begin; r < row_end; ++r) bf16_block<1, 1>(W, n_in, A, lda, 0, Y, ldy, r);
    return;
  }
  // 16 rows (in L1/L2) times every token, 4 x 4 tiles
  for (int64_t r0 = row_begin; r0 < row_end; r0 += 16) {
    const int64_t r1 = r0 + 16 < row_end ? r0 + 16 : row_end;
    int64_t t = 0;
    for (; t + 4 <= n_tok; t += 4) bf16_rows<4>(W, n_in, A, lda, t, Y, ldy, r0, r1);
    switch (n_tok - t) {
      case 3: bf16_rows<3>(W, n_in, A, lda, t, Y, ldy, r0, r1); break;
      case 2: bf16_rows<2>(W, n_in, A, lda, t, Y, ldy, r0, r1); break;
      case 1: bf16_rows<1>(W, n_in, A, lda, t, Y, ldy, r0, r1); break;
      default: break;
    }
  }
}

// MatmulFn for BF16 weights: rounds the activations to bf16, then matmul_act_bf16.
void matmul_float_bf16(const void* W, int64_t n_in, const float* X, int64_t ldx, int64_t n_tok, float* Y, int64_t ldy,
                       int64_t row_begin, int64_t row_end) {
  const size_t lda = act_row_bytes(kActBF16, n_in);
  uint8_t* act = static_cast<uint8_t*>(std::aligned_alloc(64, lda * static_cast<size_t>(n_tok)));
  if (!act) std::abort();
  for (int64_t t = 0; t < n_tok; ++t) quantize_act_bf16(X + t * ldx, act + t * lda, n_in);
  matmul_act_bf16(W, n_in, act, static_cast<int64_t>(lda), n_tok, Y, ldy, row_begin, row_end);
  std::free(act);
}

// The BF16 entries of a table whose CPU has AVX512-BF16.
constexpr void add_bf16_kernels(KernelTable& t) {
  const int id = static_cast<int>(GgmlType::BF16);
  t.quantize_act[kActBF16] = &quantize_act_bf16;
  t.act_format[id] = kActBF16;
  t.matmul_act[id] = &matmul_act_bf16;
  t.matmul[id] = &matmul_float_bf16;
}
#endif

// ---- table entries -------------------------------------------------------------------------------------------

// MatmulActFn: decode through the row kernel; batches through the panels (VNNI) or row tiles.
template <class Ty>
void matmul_act_q(const void* W, int64_t n_in, const uint8_t* A, int64_t lda, int64_t n_tok, float* Y, int64_t ldy,
                  int64_t row_begin, int64_t row_end) {
#if ADAINFER_QVNNI
  if (n_tok >= 2) {
    matmul_panels<Ty>(W, n_in, A, lda, n_tok, Y, ldy, row_begin, row_end);
    return;
  }
#endif
  matmul_rows<Ty>(W, n_in, A, lda, n_tok, Y, ldy, row_begin, row_end);
}

// MatmulFn (float activations): quantizes them, then matmul_act_q.
template <class Ty>
void matmul_float_q(const void* W, int64_t n_in, const float* X, int64_t ldx, int64_t n_tok, float* Y, int64_t ldy,
                    int64_t row_begin, int64_t row_end) {
  constexpr int32_t kFormat = IsKType<Ty>::value ? kActQ8_K : kActQ8_0;
  const size_t lda = act_row_bytes(kFormat, n_in);
  uint8_t* act = static_cast<uint8_t*>(std::aligned_alloc(64, lda * static_cast<size_t>(n_tok)));
  if (!act) std::abort();
  for (int64_t t = 0; t < n_tok; ++t) {
    if constexpr (kFormat == kActQ8_K) {
      quantize_act_q8_k(X + t * ldx, act + t * lda, n_in);
    } else {
      quantize_act_q8_0(X + t * ldx, act + t * lda, n_in);
    }
  }
  matmul_act_q<Ty>(W, n_in, act, static_cast<int64_t>(lda), n_tok, Y, ldy, row_begin, row_end);
  std::free(act);
}

template <class Ty, DequantRowFn kDequant>
constexpr void set_quant_type(KernelTable& t) {
  const int id = static_cast<int>(Ty::kType);
  t.act_format[id] = IsKType<Ty>::value ? kActQ8_K : kActQ8_0;
  t.matmul_act[id] = &matmul_act_q<Ty>;
  t.matmul[id] = &matmul_float_q<Ty>;
  t.dequant_row[id] = kDequant;  // baseline code (core/quantize.cpp): used for a few rows at a time
  t.matmul_act_few[id] = &matmul_act_few_q<Ty>;
}

constexpr void add_quant_kernels(KernelTable& t) {
  t.quantize_act[kActQ8_0] = &quantize_act_q8_0;
  t.quantize_act[kActQ8_K] = &quantize_act_q8_k;
  set_quant_type<TQ4_0, &dequant_row_q4_0>(t);
  set_quant_type<TQ4_1, &dequant_row_q4_1>(t);
  set_quant_type<TQ5_0, &dequant_row_q5_0>(t);
  set_quant_type<TQ5_1, &dequant_row_q5_1>(t);
  set_quant_type<TQ8_0, &dequant_row_q8_0>(t);
  set_quant_type<TQ4_K, &dequant_row_q4_k>(t);
  set_quant_type<TQ5_K, &dequant_row_q5_k>(t);
  set_quant_type<TQ6_K, &dequant_row_q6_k>(t);
  set_quant_type<TQ8_K, &dequant_row_q8_k>(t);
#if !ADAINFER_Q512
  // AVX2: Q4_0 and Q8_0 layer matrices packed in groups of 8 rows (pack_rows8); AVX-512 has its own prefill panels.
  static_assert(kPackedRowGroup == 8, "pack_rows8 groups 8 rows");
  const int q4_0 = static_cast<int>(GgmlType::Q4_0), q8_0 = static_cast<int>(GgmlType::Q8_0);
  t.pack_rows[q4_0] = &pack_rows8<TQ4_0>;
  t.matmul_act_packed[q4_0] = &matmul_rows<TQ4_0, true>;
  t.matmul_act_few_packed[q4_0] = &matmul_act_few_q<TQ4_0, true>;
  t.pack_rows[q8_0] = &pack_rows8<TQ8_0>;
  t.matmul_act_packed[q8_0] = &matmul_rows<TQ8_0, true>;
  t.matmul_act_few_packed[q8_0] = &matmul_act_few_q<TQ8_0, true>;
#endif
}

}  // namespace
}  // namespace adainfer
