// Kernels shared by the AVX2 and AVX-512 variants, written once against a "vector traits" struct S.
//
// Include this ONLY from a translation unit compiled for the matching instruction set, after defining S
// there. Everything below lives in an anonymous namespace: each ISA file gets its own private copy, so
// the linker can never pick the AVX-512 build of a helper for a caller in the AVX2 or generic code
// (a shared inline function would be one symbol, emitted by whichever TU the linker keeps).
//
// Contract of S (V is the register type, kWidth floats per register):
//   V zero(); V set1(float); V load(const float*); void store(float*, V)
//   V load_partial(const float*, int64_t n)         first n < kWidth lanes, the rest 0; reads only n floats
//   void store_partial(float*, V, int64_t n)        writes only the first n lanes
//   V load_f16(const uint16_t*), load_f16_partial(p, n), load_bf16(p), load_bf16_partial(p, n)
//   V add, sub, mul, div (V, V); V fmadd(a, b, c) = a * b + c
//   V min(a, b), max(a, b)                          return b when either lane is NaN (x86 semantics)
//   V round_nearest(V); V pow2i(V n)                2^n for integer-valued n in [-126, 127]
//   V select_gt(V x, V limit, V a, V b)             x > limit ? a : b, lane-wise (false for NaN)
//   float reduce_add(V); float reduce_max(V)
//   void reduce4(V a, V b, V c, V d, float* out)    out[0..3] = reduce_add of a, b, c, d
//   kPrefillRows, kPrefillTokens                    prefill tile shape (register budget, see matmul)
//   kDecodeRows, kDecodeAccumulators                decode (one token) tile: weight rows per pass, accumulators
//                                                   per row (see matmul)
//   kAttnDimRegs                                    registers of head_dim per kv-group accumulator block
#pragma once

#include <immintrin.h>
#include <math.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/kernels.h"

namespace adainfer {
namespace {

// Software prefetch distance (bytes) of the decode row kernels.
#ifndef ADAINFER_PREFETCH
#define ADAINFER_PREFETCH 16384
#endif
constexpr int64_t kFloatPrefetch = ADAINFER_PREFETCH;

// A compile-time count passed as a value (std::integral_constant would drag in shared std code).
template <int N>
struct Count {
  static constexpr int value = N;
};

// ---- weight-row loaders: one per stored element type, giving kWidth floats per load -------------------

template <class S>
struct F32Row {
  using Elem = float;
  static typename S::V load(const float* p) { return S::load(p); }
  static typename S::V load_partial(const float* p, int64_t n) { return S::load_partial(p, n); }
};

template <class S>
struct F16Row {
  using Elem = uint16_t;
  static typename S::V load(const uint16_t* p) { return S::load_f16(p); }
  static typename S::V load_partial(const uint16_t* p, int64_t n) { return S::load_f16_partial(p, n); }
};

template <class S>
struct BF16Row {
  using Elem = uint16_t;
  static typename S::V load(const uint16_t* p) { return S::load_bf16(p); }
  static typename S::V load_partial(const uint16_t* p, int64_t n) { return S::load_bf16_partial(p, n); }
};

// ---- matmul -------------------------------------------------------------------------------------------

// The register-blocked micro-kernel: R weight rows times T tokens, over all n elements.
//   w:   R row pointers, n elements each
//   x:   T activation row pointers, n floats each
//   out: out[r][t] = w[r] . x[t]
// Each loaded weight vector is used T times and each activation vector R times, so for T > 1 the loop
// does R*T multiply-adds per R+T loads (compute-bound prefill). U independent accumulator sets per
// (r, t) hide the FMA latency when R*T alone is too few chains (decode, T = 1). All loops have constant
// trip counts and are fully unrolled, so acc[][][] lives in registers.
// kStream: the rows are streamed from memory once (decode): software prefetch ahead in every row.
template <class S, class Row, int R, int T, int U, bool kStream>
inline void matmul_tile(const typename Row::Elem* const* w, const float* const* x, int64_t n,
                        float (*out)[T]) {
  using V = typename S::V;
  constexpr int64_t kW = S::kWidth;
  V acc[U][R][T];
#pragma GCC unroll 64
  for (int u = 0; u < U; ++u)
#pragma GCC unroll 64
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 64
      for (int t = 0; t < T; ++t) acc[u][r][t] = S::zero();

  int64_t i = 0;
  {
    // A weight row read once is a sequential stream, and then loads that straddle two cache lines cost
    // measurably (e.g. 64-byte loads from a 32-byte aligned GGUF tensor). Take a partial first step up
    // to the next boundary of one load's size, so the main loop's weight loads are aligned. Every tile takes
    // it (decode, a few rows, prefill), and only where every row of the matrix has the same alignment (a row
    // a multiple of one load, as in every model's shapes): then each row's sums run in one order whatever the
    // tile and the row count, so a row's result does not depend on how many rows a step holds.
    constexpr uintptr_t kElemBytes = sizeof(typename Row::Elem);
    constexpr uintptr_t kLoadBytes = kW * kElemBytes;
    const uintptr_t addr = reinterpret_cast<uintptr_t>(w[0]);
    const int64_t head = static_cast<int64_t>((kLoadBytes - addr % kLoadBytes) % kLoadBytes / kElemBytes);
    const bool rows_alike = static_cast<uintptr_t>(n) * kElemBytes % kLoadBytes == 0;
    if (rows_alike && addr % kElemBytes == 0 && head > 0 && head < n) {
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r) {
        const V wv = Row::load_partial(w[r], head);
#pragma GCC unroll 64
        for (int t = 0; t < T; ++t) acc[0][r][t] = S::fmadd(wv, S::load_partial(x[t], head), acc[0][r][t]);
      }
      i = head;
    }
  }
  for (; i + U * kW <= n; i += U * kW) {
    if constexpr (kStream) {
      // Decode streams the rows from memory: software prefetch far ahead lets one core reach more of the
      // memory bandwidth than the hardware prefetcher alone (kFloatPrefetch bytes ahead in each row).
      constexpr int64_t kBytes = U * kW * static_cast<int64_t>(sizeof(typename Row::Elem));
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r) {
        const char* p = reinterpret_cast<const char*>(w[r] + i) + kFloatPrefetch;
#pragma GCC unroll 8
        for (int64_t off = 0; off < kBytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
      }
    }
#pragma GCC unroll 64
    for (int u = 0; u < U; ++u) {
      V wv[R];
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r) wv[r] = Row::load(w[r] + i + u * kW);
#pragma GCC unroll 64
      for (int t = 0; t < T; ++t) {
        const V xv = S::load(x[t] + i + u * kW);
#pragma GCC unroll 64
        for (int r = 0; r < R; ++r) acc[u][r][t] = S::fmadd(wv[r], xv, acc[u][r][t]);
      }
    }
  }
  // Whole vectors left over when U > 1, then the partial tail (zero-filled lanes add nothing).
  for (; i < n; i += kW) {
    const int64_t left = n - i;
    V wv[R];
    if (left >= kW) {
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r) wv[r] = Row::load(w[r] + i);
    } else {
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r) wv[r] = Row::load_partial(w[r] + i, left);
    }
#pragma GCC unroll 64
    for (int t = 0; t < T; ++t) {
      const V xv = left >= kW ? S::load(x[t] + i) : S::load_partial(x[t] + i, left);
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r) acc[0][r][t] = S::fmadd(wv[r], xv, acc[0][r][t]);
    }
  }

#pragma GCC unroll 64
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 64
    for (int t = 0; t < T; ++t) {
      V sum = acc[0][r][t];
#pragma GCC unroll 64
      for (int u = 1; u < U; ++u) sum = S::add(sum, acc[u][r][t]);
      out[r][t] = S::reduce_add(sum);
    }
}

// R rows (starting at `row`) times every token, T_MAX tokens per tile, smaller tiles for the last few.
//   W: [*][n_in] weights, X: [n_tok][ldx], Y: [n_tok][ldy]; writes Y[t][row .. row+R-1]
template <class S, class Row, int R, int T_MAX, int U, bool kStream = false>
inline void matmul_rows(const typename Row::Elem* W, int64_t n_in, const float* X, int64_t ldx, int64_t n_tok,
                        float* Y, int64_t ldy, int64_t row) {
  const typename Row::Elem* w[R];
  for (int r = 0; r < R; ++r) w[r] = W + (row + r) * n_in;

  // One tile of exactly T tokens starting at token t0.
  auto tile = [&](auto tokens, int64_t t0) {
    constexpr int T = decltype(tokens)::value;
    const float* x[T];
    for (int t = 0; t < T; ++t) x[t] = X + (t0 + t) * ldx;
    float out[R][T];
    matmul_tile<S, Row, R, T, U, kStream>(w, x, n_in, out);
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) Y[(t0 + t) * ldy + row + r] = out[r][t];
  };

  int64_t t0 = 0;
  for (; t0 + T_MAX <= n_tok; t0 += T_MAX) tile(Count<T_MAX>{}, t0);
  static_assert(T_MAX <= 6, "remainder dispatch below covers up to 5 leftover tokens");
  switch (n_tok - t0) {
    case 5: if constexpr (T_MAX > 5) tile(Count<5>{}, t0); break;
    case 4: if constexpr (T_MAX > 4) tile(Count<4>{}, t0); break;
    case 3: tile(Count<3>{}, t0); break;
    case 2: tile(Count<2>{}, t0); break;
    case 1: tile(Count<1>{}, t0); break;
    default: break;
  }
}

// The last `rest` < kPrefillRows rows of a prefill range, as one tile of exactly `rest` rows (a caller's
// row chunk need not be a multiple of kPrefillRows; single-row tiles would run at a fraction of the speed).
template <class S, class Row, int K, int T>
inline void matmul_rest_rows(int64_t rest, const typename Row::Elem* W, int64_t n_in, const float* X, int64_t ldx,
                             int64_t n_tok, float* Y, int64_t ldy, int64_t row) {
  if constexpr (K >= 1) {
    if (rest == K) {
      matmul_rows<S, Row, K, T, 1>(W, n_in, X, ldx, n_tok, Y, ldy, row);
    } else {
      matmul_rest_rows<S, Row, K - 1, T>(rest, W, n_in, X, ldx, n_tok, Y, ldy, row);
    }
  }
}

// MatmulFn for one weight type: Y[t][r] = W[r] . X[t], r in [row_begin, row_end), t in [0, n_tok).
//   W: [n_rows][n_in] (Row::Elem), X: [n_tok][ldx] floats, Y: [n_tok][ldy] floats
// Decode (n_tok == 1) is bandwidth-bound: W is streamed once, S::kDecodeRows rows per pass with
// S::kDecodeAccumulators accumulators each, every row prefetched kFloatPrefetch bytes ahead. The best shape
// differs by CPU, so it is a trait of each instruction set:
//  - AVX-512: one row at a time, so W is read as a single sequential stream (rows are contiguous), which the
//    hardware prefetcher follows best; 4 accumulators hide FMA latency. Measured on Zen 5, this beat 4 or 8
//    interleaved rows by 10-40% for a W larger than the L3.
//  - AVX2: 4 rows per pass, one accumulator each (the rows are the independent FMA chains). Measured on Zen 3
//    (EPYC, F16, TinyLlama shapes, 8 layers = 700 MB streamed, 1 thread, CPU time, medians, alternating in one
//    process): 17-18 GB/s against 12-13 GB/s for one row with 4 accumulators (+38%); 2 rows x 2 accumulators
//    13-14.5 GB/s, 6 x 2 and 8 x 1 as 4 x 1 or a little below, 4 x 2 about 5% below. Prefetching each cache
//    line once (64 bytes of each row per step) was no faster than once per load, a distance of 24-64 KB within
//    the noise of 16 KB (4-8 KB slower), and vcvtph2ps from a memory operand the same as after a separate load.
// Prefill walks W once, kPrefillRows rows at a time, and runs every kPrefillTokens-token tile against
// those rows while they sit in L1; the activations (n_tok * n_in floats) are re-read from L2 instead,
// each activation load feeding kPrefillRows FMAs.
template <class S, class Row>
void matmul(const void* W_raw, int64_t n_in, const float* X, int64_t ldx, int64_t n_tok, float* Y, int64_t ldy,
            int64_t row_begin, int64_t row_end) {
  const auto* W = static_cast<const typename Row::Elem*>(W_raw);
  int64_t row = row_begin;
  // A row's sums run in an order set by the accumulator count U (and the head step, see matmul_tile), so
  // decode's U is kept by every path that must give decode's bits: the last rows of decode, and a few rows
  // (2 .. kFewRowsMax: a speculative verify step, a few decoding sequences) where prefill's tile has another U.
  constexpr int kU = S::kDecodeAccumulators;
  if (n_tok == 1 || (kU != 1 && n_tok <= kFewRowsMax)) {
    constexpr int R = S::kDecodeRows;
    // tokens per tile: R * T * kU accumulators beside R weight registers
    constexpr int T = R * kU >= 4 ? 4 : 1;
    for (; row + R <= row_end; row += R) matmul_rows<S, Row, R, T, kU, true>(W, n_in, X, ldx, n_tok, Y, ldy, row);
    for (; row < row_end; ++row) matmul_rows<S, Row, 1, T, kU, true>(W, n_in, X, ldx, n_tok, Y, ldy, row);
    return;
  }
  constexpr int R = S::kPrefillRows;
  constexpr int T = S::kPrefillTokens;
  for (; row + R <= row_end; row += R) matmul_rows<S, Row, R, T, 1>(W, n_in, X, ldx, n_tok, Y, ldy, row);
  matmul_rest_rows<S, Row, R - 1, T>(row_end - row, W, n_in, X, ldx, n_tok, Y, ldy, row);
}

// DequantRowFn: out[i] = row[i] as float, i in [0, n)
template <class S, class Row>
void dequant_row(const void* row_raw, float* out, int64_t n) {
  const auto* row = static_cast<const typename Row::Elem*>(row_raw);
  int64_t i = 0;
  for (; i + S::kWidth <= n; i += S::kWidth) S::store(out + i, Row::load(row + i));
  if (i < n) S::store_partial(out + i, Row::load_partial(row + i, n - i), n - i);
}

// ---- element-wise math ---------------------------------------------------------------------------------

// e^x per lane. Range reduction x = k*ln2 + r, |r| <= ln2/2, then e^r by its Taylor series to r^7
// (truncation error < 6e-9 relative, below float rounding), scaled by 2^k through the exponent bits.
// Matches expf to ~2 ulp. Limits: x > 88.376 gives +inf (where true e^x is within 2^0.5 of FLT_MAX),
// x < -87.336 gives 0 (no subnormal results), NaN stays NaN.
template <class S>
inline typename S::V vec_exp(typename S::V x) {
  using V = typename S::V;
  const V hi = S::set1(88.3762626647949f);  // 127.5 * ln2: k stays <= 127
  const V lo = S::set1(-87.3365447505531f);  // -126 * ln2: k stays >= -126
  // max/min return their second operand when a lane is NaN, so NaN flows through to the result.
  const V xc = S::min(hi, S::max(lo, x));
  const V k = S::round_nearest(S::mul(xc, S::set1(1.44269504088896341f)));  // x / ln2
  // r = x - k*ln2, with ln2 split in two so k*ln2_hi is exact in float.
  V r = S::fmadd(k, S::set1(-0.693359375f), xc);
  r = S::fmadd(k, S::set1(2.12194440e-4f), r);
  // Horner on 1 + r + r^2/2! + ... + r^7/7!
  V p = S::set1(1.0f / 5040.0f);
  p = S::fmadd(p, r, S::set1(1.0f / 720.0f));
  p = S::fmadd(p, r, S::set1(1.0f / 120.0f));
  p = S::fmadd(p, r, S::set1(1.0f / 24.0f));
  p = S::fmadd(p, r, S::set1(1.0f / 6.0f));
  p = S::fmadd(p, r, S::set1(0.5f));
  p = S::fmadd(p, r, S::set1(1.0f));
  p = S::fmadd(p, r, S::set1(1.0f));
  V result = S::mul(p, S::pow2i(k));
  result = S::select_gt(x, hi, S::set1(INFINITY), result);
  result = S::select_gt(lo, x, S::zero(), result);
  return result;
}

// a . b over n floats; four accumulators so consecutive FMAs do not wait on each other.
template <class S>
float dot_f32(const float* a, const float* b, int64_t n) {
  using V = typename S::V;
  constexpr int64_t kW = S::kWidth;
  V acc0 = S::zero(), acc1 = S::zero(), acc2 = S::zero(), acc3 = S::zero();
  int64_t i = 0;
  for (; i + 4 * kW <= n; i += 4 * kW) {
    acc0 = S::fmadd(S::load(a + i), S::load(b + i), acc0);
    acc1 = S::fmadd(S::load(a + i + kW), S::load(b + i + kW), acc1);
    acc2 = S::fmadd(S::load(a + i + 2 * kW), S::load(b + i + 2 * kW), acc2);
    acc3 = S::fmadd(S::load(a + i + 3 * kW), S::load(b + i + 3 * kW), acc3);
  }
  for (; i + kW <= n; i += kW) acc0 = S::fmadd(S::load(a + i), S::load(b + i), acc0);
  if (i < n) acc1 = S::fmadd(S::load_partial(a + i, n - i), S::load_partial(b + i, n - i), acc1);
  return S::reduce_add(S::add(S::add(acc0, acc1), S::add(acc2, acc3)));
}

// out[i] = (x[i] * scale) * w[i], scale = 1 / sqrt(mean(x^2) + eps); x, w, out: n floats (out may be x).
// Squares are summed in float with four accumulators (relative error ~1e-6, far below what matters).
template <class S>
void rms_norm(const float* x, const float* w, float* out, int64_t n, float eps) {
  using V = typename S::V;
  constexpr int64_t kW = S::kWidth;
  V acc0 = S::zero(), acc1 = S::zero(), acc2 = S::zero(), acc3 = S::zero();
  int64_t i = 0;
  for (; i + 4 * kW <= n; i += 4 * kW) {
    const V a = S::load(x + i), b = S::load(x + i + kW), c = S::load(x + i + 2 * kW), d = S::load(x + i + 3 * kW);
    acc0 = S::fmadd(a, a, acc0);
    acc1 = S::fmadd(b, b, acc1);
    acc2 = S::fmadd(c, c, acc2);
    acc3 = S::fmadd(d, d, acc3);
  }
  for (; i + kW <= n; i += kW) {
    const V a = S::load(x + i);
    acc0 = S::fmadd(a, a, acc0);
  }
  if (i < n) {
    const V a = S::load_partial(x + i, n - i);
    acc1 = S::fmadd(a, a, acc1);
  }
  const float sum_sq = S::reduce_add(S::add(S::add(acc0, acc1), S::add(acc2, acc3)));
  const float scale = 1.0f / sqrtf(sum_sq / static_cast<float>(n) + eps);
  const V vscale = S::set1(scale);
  i = 0;
  for (; i + kW <= n; i += kW) S::store(out + i, S::mul(S::mul(S::load(x + i), vscale), S::load(w + i)));
  if (i < n) {
    const V y = S::mul(S::mul(S::load_partial(x + i, n - i), vscale), S::load_partial(w + i, n - i));
    S::store_partial(out + i, y, n - i);
  }
}

// gate[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + e^-g); gate, up: n floats
template <class S>
void swiglu(float* gate, const float* up, int64_t n) {
  using V = typename S::V;
  constexpr int64_t kW = S::kWidth;
  const V one = S::set1(1.0f);
  auto silu_times = [&](V g, V u) { return S::mul(S::div(g, S::add(one, vec_exp<S>(S::sub(S::zero(), g)))), u); };
  int64_t i = 0;
  for (; i + kW <= n; i += kW) S::store(gate + i, silu_times(S::load(gate + i), S::load(up + i)));
  if (i < n) {
    S::store_partial(gate + i, silu_times(S::load_partial(gate + i, n - i), S::load_partial(up + i, n - i)), n - i);
  }
}

// y[i] += x[i]; y, x: n floats
template <class S>
void add(float* y, const float* x, int64_t n) {
  constexpr int64_t kW = S::kWidth;
  int64_t i = 0;
  for (; i + kW <= n; i += kW) S::store(y + i, S::add(S::load(y + i), S::load(x + i)));
  if (i < n) S::store_partial(y + i, S::add(S::load_partial(y + i, n - i), S::load_partial(x + i, n - i)), n - i);
}

// ---- attention -------------------------------------------------------------------------------------------
//
// For each token, the query heads that share one kv head (grouped-query attention) are processed together,
// so every K and V row is loaded once per group instead of once per query head. The softmax is computed
// online over blocks of kAttnBlock positions (running max and sum per head, the partial output rescaled
// when the max grows), which keeps the per-block scores on the stack for any context length.
// Numerically this equals a two-pass softmax up to float rounding.

constexpr int kMaxGroup = 4;      // query heads processed together (registers: kMaxGroup accumulators)
constexpr int64_t kAttnBlock = 128;  // positions per softmax block

// x[i] *= c for i in [0, n)
template <class S>
inline void scale_in_place(float* x, int64_t n, float c) {
  constexpr int64_t kW = S::kWidth;
  const typename S::V vc = S::set1(c);
  int64_t i = 0;
  for (; i + kW <= n; i += kW) S::store(x + i, S::mul(S::load(x + i), vc));
  if (i < n) S::store_partial(x + i, S::mul(S::load_partial(x + i, n - i), vc), n - i);
}

// s[g][j] = scale * (q[g] . k_j) for j in [0, n), g in [0, G)
//   q: G query pointers [head_dim]; k: rows j at k + j * kv_stride, each [head_dim]; s: [G][kAttnBlock]
// Each K vector is loaded once and multiplied into the G heads' accumulators.
template <class S, int G>
inline void group_scores(const float* const* q, const float* k, int64_t kv_stride, int64_t head_dim, int64_t n,
                         float scale, float (*s)[kAttnBlock]) {
  using V = typename S::V;
  constexpr int64_t kW = S::kWidth;
  for (int64_t j = 0; j < n; ++j) {
    const float* kj = k + j * kv_stride;
    V acc[kMaxGroup];
#pragma GCC unroll 8
    for (int g = 0; g < kMaxGroup; ++g) acc[g] = S::zero();
    int64_t i = 0;
    for (; i + kW <= head_dim; i += kW) {
      const V kv = S::load(kj + i);
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) acc[g] = S::fmadd(S::load(q[g] + i), kv, acc[g]);
    }
    if (i < head_dim) {
      const int64_t left = head_dim - i;
      const V kv = S::load_partial(kj + i, left);
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) acc[g] = S::fmadd(S::load_partial(q[g] + i, left), kv, acc[g]);
    }
    if constexpr (G == 1) {
      s[0][j] = S::reduce_add(acc[0]) * scale;
    } else {
      float dots[4];
      S::reduce4(acc[0], acc[1], acc[2], acc[3], dots);  // lanes >= G hold zeros
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) s[g][j] = dots[g] * scale;
    }
  }
}

// In place: p[j] = e^(p[j] - max) for j in [0, n); returns the sum of the new values.
template <class S>
inline float exp_shifted_sum(float* p, int64_t n, float max) {
  using V = typename S::V;
  constexpr int64_t kW = S::kWidth;
  const V vmax = S::set1(max);
  V sum = S::zero();
  int64_t i = 0;
  for (; i + kW <= n; i += kW) {
    const V e = vec_exp<S>(S::sub(S::load(p + i), vmax));
    S::store(p + i, e);
    sum = S::add(sum, e);
  }
  if (i < n) {
    // Padding lanes would hold e^(0 - max): store the real lanes, then reload them zero-padded to sum.
    S::store_partial(p + i, vec_exp<S>(S::sub(S::load_partial(p + i, n - i), vmax)), n - i);
    sum = S::add(sum, S::load_partial(p + i, n - i));
  }
  return S::reduce_add(sum);
}

// max of p[0 .. n), n >= 1
template <class S>
inline float max_of(const float* p, int64_t n) {
  using V = typename S::V;
  constexpr int64_t kW = S::kWidth;
  V vmax = S::set1(-INFINITY);
  int64_t i = 0;
  for (; i + kW <= n; i += kW) vmax = S::max(vmax, S::load(p + i));
  float m = S::reduce_max(vmax);
  for (; i < n; ++i) m = p[i] > m ? p[i] : m;
  return m;
}

// out[g][d0 .. d0 + NV*kW) += sum_j p[g][j] * v_j[d0 ..] for j in [0, n), in registers over j.
// With kPartial, a single register of which only the first `left` lanes are real (NV must be 1).
//   p: [G][kAttnBlock]; v: rows j at v + j * kv_stride (already offset by d0); out: G pointers (offset by d0)
template <class S, int G, int NV, bool kPartial>
inline void group_weighted_sum_block(const float (*p)[kAttnBlock], const float* v, int64_t kv_stride, int64_t n,
                                     float* const* out, int64_t left) {
  static_assert(!kPartial || NV == 1, "a partial block is one register");
  using V = typename S::V;
  constexpr int64_t kW = S::kWidth;
  V acc[G][NV];
#pragma GCC unroll 8
  for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
    for (int b = 0; b < NV; ++b) acc[g][b] = kPartial ? S::load_partial(out[g], left) : S::load(out[g] + b * kW);
  for (int64_t j = 0; j < n; ++j) {
    const float* row = v + j * kv_stride;
    V vv[NV];
#pragma GCC unroll 8
    for (int b = 0; b < NV; ++b) vv[b] = kPartial ? S::load_partial(row, left) : S::load(row + b * kW);
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
      const V pj = S::set1(p[g][j]);
#pragma GCC unroll 8
      for (int b = 0; b < NV; ++b) acc[g][b] = S::fmadd(pj, vv[b], acc[g][b]);
    }
  }
#pragma GCC unroll 8
  for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
    for (int b = 0; b < NV; ++b) {
      if (kPartial) {
        S::store_partial(out[g], acc[g][b], left);
      } else {
        S::store(out[g] + b * kW, acc[g][b]);
      }
    }
}

// out[g][0 .. head_dim) += sum_j p[g][j] * v_j over j in [0, n): head_dim in blocks of kAttnDimRegs
// registers, then single registers, then one partial register.
template <class S, int G>
inline void group_weighted_sum(const float (*p)[kAttnBlock], const float* v, int64_t kv_stride, int64_t head_dim,
                               int64_t n, float* const* out) {
  constexpr int64_t kW = S::kWidth;
  constexpr int NV = S::kAttnDimRegs;
  float* o[G];
  int64_t d = 0;
  auto offset_out = [&](int64_t at) {
    for (int g = 0; g < G; ++g) o[g] = out[g] + at;
  };
  for (; d + NV * kW <= head_dim; d += NV * kW) {
    offset_out(d);
    group_weighted_sum_block<S, G, NV, false>(p, v + d, kv_stride, n, o, kW);
  }
  for (; d + kW <= head_dim; d += kW) {
    offset_out(d);
    group_weighted_sum_block<S, G, 1, false>(p, v + d, kv_stride, n, o, kW);
  }
  if (d < head_dim) {
    offset_out(d);
    group_weighted_sum_block<S, G, 1, true>(p, v + d, kv_stride, n, o, head_dim - d);
  }
}

// Attention of one token for G query heads that read the same kv head.
//   q, out: G pointers, [head_dim] each;  k, v: that kv head's rows j at k + j * kv_stride, j in [0, n_pos)
//   stats: nullptr, or G pointers to [2] floats: the entropy of each head's attention and its weight on the last
//   position (AttentionArgs::stats), kept online beside the softmax: with m the running max, S = sum e^(s_j - m) and
//   U = sum e^(s_j - m) s_j (both rescaled as S is), entropy = m + log S - U / S.
template <class S, int G>
void attend_group(const float* const* q, float* const* out, const float* k, const float* v, int64_t kv_stride,
                  int64_t head_dim, int64_t n_pos, float scale, float* const* stats = nullptr) {
  float p[G][kAttnBlock];  // scores, then unnormalised probabilities, of the current block
  float running_max[G], running_sum[G];
  double running_u[G];     // stats only
  float raw[kAttnBlock];   // stats only: the scores of one head's block before exponentiation
  for (int g = 0; g < G; ++g) {
    running_max[g] = -INFINITY;
    running_sum[g] = 0.0f;
    running_u[g] = 0.0;
    for (int64_t i = 0; i < head_dim; ++i) out[g][i] = 0.0f;
  }
  for (int64_t j0 = 0; j0 < n_pos; j0 += kAttnBlock) {
    const int64_t n = n_pos - j0 < kAttnBlock ? n_pos - j0 : kAttnBlock;
    group_scores<S, G>(q, k + j0 * kv_stride, kv_stride, head_dim, n, scale, p);
    for (int g = 0; g < G; ++g) {
      const float block_max = max_of<S>(p[g], n);
      if (block_max > running_max[g]) {
        // Earlier blocks were exponentiated against a smaller max: rescale their contribution.
        const float rescale = expf(running_max[g] - block_max);  // 0 on the first block (e^-inf)
        if (j0 > 0) scale_in_place<S>(out[g], head_dim, rescale);
        running_sum[g] *= rescale;
        running_u[g] *= rescale;
        running_max[g] = block_max;
      }
      if (stats != nullptr) {
        for (int64_t j = 0; j < n; ++j) raw[j] = p[g][j];
        if (j0 + n == n_pos) stats[g][1] = raw[n - 1];  // the own position's score, normalised below
      }
      running_sum[g] += exp_shifted_sum<S>(p[g], n, running_max[g]);
      if (stats != nullptr)
        for (int64_t j = 0; j < n; ++j) running_u[g] += static_cast<double>(p[g][j]) * raw[j];
    }
    group_weighted_sum<S, G>(p, v + j0 * kv_stride, kv_stride, head_dim, n, out);
  }
  for (int g = 0; g < G; ++g) scale_in_place<S>(out[g], head_dim, 1.0f / running_sum[g]);
  if (stats != nullptr)
    for (int g = 0; g < G; ++g) {
      const double sum = running_sum[g];
      stats[g][0] = static_cast<float>(running_max[g] + std::log(sum) - running_u[g] / sum);
      stats[g][1] = static_cast<float>(std::exp(static_cast<double>(stats[g][1]) - running_max[g]) / sum);
    }
}

// AttentionFn (shapes in kernels.h). Query heads of [head_begin, head_end) are taken in runs that share a
// kv head, up to kMaxGroup at a time. `scratch` is not needed: block scores live on the stack.
template <class S>
void attention(const AttentionArgs& a, int64_t head_begin, int64_t head_end, float* /*scratch*/) {
  const int64_t q_stride = a.n_head * a.head_dim;
  const int64_t kv_stride = a.n_kv_head * a.head_dim;
  const int64_t heads_per_kv = a.n_head / a.n_kv_head;
  for (int64_t t = 0; t < a.n_tok; ++t) {
    const int64_t n_pos = a.pos0 + t + 1;  // token t sees positions 0 .. pos0 + t
    for (int64_t h = head_begin; h < head_end;) {
      const int64_t kv_h = h / heads_per_kv;
      const int64_t group_end = (kv_h + 1) * heads_per_kv < head_end ? (kv_h + 1) * heads_per_kv : head_end;
      const int64_t count = group_end - h < kMaxGroup ? group_end - h : kMaxGroup;
      const float* q[kMaxGroup];
      float* out[kMaxGroup];
      for (int64_t g = 0; g < count; ++g) {
        q[g] = a.q + t * q_stride + (h + g) * a.head_dim;
        out[g] = a.out + t * q_stride + (h + g) * a.head_dim;
      }
      const float* k = a.k + kv_h * a.head_dim;
      const float* v = a.v + kv_h * a.head_dim;
      float* stats_of[kMaxGroup];
      float* const* stats = nullptr;
      if (t == a.stats_tok && a.stats != nullptr) {
        for (int64_t g = 0; g < count; ++g) stats_of[g] = a.stats + 2 * (h + g);
        stats = stats_of;
      }
      switch (count) {
        case 4: attend_group<S, 4>(q, out, k, v, kv_stride, a.head_dim, n_pos, a.scale, stats); break;
        case 3: attend_group<S, 3>(q, out, k, v, kv_stride, a.head_dim, n_pos, a.scale, stats); break;
        case 2: attend_group<S, 2>(q, out, k, v, kv_stride, a.head_dim, n_pos, a.scale, stats); break;
        default: attend_group<S, 1>(q, out, k, v, kv_stride, a.head_dim, n_pos, a.scale, stats); break;
      }
      h += count;
    }
  }
}

// The table for one instruction set, built at compile time: the ISA file's static data holds only
// constants, so nothing from it executes unless this CPU was found to support it.
template <class S>
constexpr KernelTable make_simd_table(const char* name) {
  KernelTable t{};
  t.name = name;
  t.matmul[static_cast<int>(GgmlType::F32)] = &matmul<S, F32Row<S>>;
  t.matmul[static_cast<int>(GgmlType::F16)] = &matmul<S, F16Row<S>>;
  t.matmul[static_cast<int>(GgmlType::BF16)] = &matmul<S, BF16Row<S>>;
  t.dequant_row[static_cast<int>(GgmlType::F32)] = &dequant_row<S, F32Row<S>>;
  t.dequant_row[static_cast<int>(GgmlType::F16)] = &dequant_row<S, F16Row<S>>;
  t.dequant_row[static_cast<int>(GgmlType::BF16)] = &dequant_row<S, BF16Row<S>>;
  t.attention = &attention<S>;
  t.dot_f32 = &dot_f32<S>;
  t.rms_norm = &rms_norm<S>;
  t.swiglu = &swiglu<S>;
  t.add = &add<S>;
  return t;
}

}  // namespace
}  // namespace adainfer
