// The scalar reference kernels: the oracle the SIMD variants are tested against, and the fallback on
// CPUs without AVX2. Written for clarity. Compiled for baseline x86-64 (no -m flags).
//
// Numerics follow ggml's scalar CPU build, which produced the golden outputs:
//  - dot products multiply in float and accumulate in double: sum += (double)(w * x);
//  - softmax sums its exponentials in double;
//  - rms_norm sums squares in double.
#include <math.h>

#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/ggml_types.h"
#include "core/kernels.h"
#include "core/quantize.h"

namespace adainfer {

namespace {

// ---- element access for each weight type -----------------------------------------------------------

// fp16_to_fp32 of every half (256 KB), so the F16 kernels do a lookup instead of a branchy call per
// weight. Filled when the library loads (~0.2 ms), by baseline code, before any kernel can run.
struct HalfTable {
  float value[65536];
  HalfTable() {
    for (uint32_t h = 0; h < 65536; ++h) value[h] = fp16_to_fp32(static_cast<uint16_t>(h));
  }
};
const HalfTable kHalfTable;

float load_f32(const void* row, int64_t i) { return static_cast<const float*>(row)[i]; }
float load_f16(const void* row, int64_t i) { return kHalfTable.value[static_cast<const uint16_t*>(row)[i]]; }
// bf16 is the upper half of an f32 (same as bf16_to_fp32, inlined here because it sits in the inner loop)
float load_bf16(const void* row, int64_t i) {
  const uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(row)[i]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// sum_i w[i] * x[i] as ggml's scalar vec_dot: float products, double sum.
//   w: one weight row of n elements (any of the three float types), x: n floats
template <float (*Load)(const void*, int64_t)>
double dot_row(const void* w, const float* x, int64_t n) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(Load(w, i) * x[i]);
  return sum;
}

// Y[t][r] = W[r] . X[t] for r in [row_begin, row_end), t in [0, n_tok)   (shapes as MatmulFn)
//   W: [n_rows][n_in] of ElemBytes-sized elements, X: [n_tok][ldx], Y: [n_tok][ldy]
template <float (*Load)(const void*, int64_t), int64_t ElemBytes>
void matmul(const void* W, int64_t n_in, const float* X, int64_t ldx, int64_t n_tok, float* Y, int64_t ldy,
            int64_t row_begin, int64_t row_end) {
  const char* base = static_cast<const char*>(W);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const void* w_row = base + r * n_in * ElemBytes;
    for (int64_t t = 0; t < n_tok; ++t) {
      Y[t * ldy + r] = static_cast<float>(dot_row<Load>(w_row, X + t * ldx, n_in));
    }
  }
}

// out[i] = element i of the row, as float   (row: n elements, out: n floats)
template <float (*Load)(const void*, int64_t)>
void dequant_row(const void* row, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = Load(row, i);
}

// ---- quantized weight types ----------------------------------------------------------------------------
// dequant_row: dequant_row_* of core/quantize.h (ggml's element formulas). The dot products reproduce ggml's generic (scalar)
// vec_dot_<type>_q8_0 / _q8_1 / _q8_K on activations quantized by quantize_act_*_ref: integer sums per block,
// combined in float in ggml's order (the same expressions, no FMA in this baseline build).

float h2f(uint16_t h) { return kHalfTable.value[h]; }

uint32_t load_qh(const uint8_t* qh) {
  uint32_t v;
  std::memcpy(&v, qh, 4);
  return v;  // x86 is little endian, as the file
}

// The 5-bit code of element j of a Q5 block.
int q5_code(const uint8_t* qs, uint32_t qh, int j) {
  const int low = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
  return low | static_cast<int>(((qh >> j) & 1u) << 4);
}

// ---- dot products of one weight row with one activation row (n elements) ----
// The types of 32-element blocks, each as its block's integer codes (value = d * code [+ m]) and how ggml
// scales a block's integer sum: the one-row dot (dot_q) and the few-row matmul (matmul_act_few) share both,
// so they give the same bits.

struct GQ4_0 {
  static constexpr GgmlType kType = GgmlType::Q4_0;
  using Block = BlockQ4_0;
  static void codes(const Block& b, int* c) {
    for (int j = 0; j < 16; ++j) {
      c[j] = (b.qs[j] & 0xF) - 8;
      c[j + 16] = (b.qs[j] >> 4) - 8;
    }
  }
  static float scaled(const Block& b, int sumi, const ActQ8_0Row& y, int64_t ib) {
    return static_cast<float>(sumi) * h2f(b.d) * y.d[ib];
  }
};

struct GQ4_1 {
  static constexpr GgmlType kType = GgmlType::Q4_1;
  using Block = BlockQ4_1;
  static void codes(const Block& b, int* c) {
    for (int j = 0; j < 16; ++j) {
      c[j] = b.qs[j] & 0xF;
      c[j + 16] = b.qs[j] >> 4;
    }
  }
  static float scaled(const Block& b, int sumi, const ActQ8_0Row& y, int64_t ib) {
    return (h2f(b.d) * y.d[ib]) * static_cast<float>(sumi) + h2f(b.m) * y.s[ib];
  }
};

struct GQ5_0 {
  static constexpr GgmlType kType = GgmlType::Q5_0;
  using Block = BlockQ5_0;
  static void codes(const Block& b, int* c) {
    const uint32_t qh = load_qh(b.qh);
    for (int j = 0; j < 32; ++j) c[j] = q5_code(b.qs, qh, j) - 16;
  }
  static float scaled(const Block& b, int sumi, const ActQ8_0Row& y, int64_t ib) {
    return (h2f(b.d) * y.d[ib]) * static_cast<float>(sumi);
  }
};

struct GQ5_1 {
  static constexpr GgmlType kType = GgmlType::Q5_1;
  using Block = BlockQ5_1;
  static void codes(const Block& b, int* c) {
    const uint32_t qh = load_qh(b.qh);
    for (int j = 0; j < 32; ++j) c[j] = q5_code(b.qs, qh, j);
  }
  static float scaled(const Block& b, int sumi, const ActQ8_0Row& y, int64_t ib) {
    return (h2f(b.d) * y.d[ib]) * static_cast<float>(sumi) + h2f(b.m) * y.s[ib];
  }
};

struct GQ8_0 {
  static constexpr GgmlType kType = GgmlType::Q8_0;
  using Block = BlockQ8_0;
  static void codes(const Block& b, int* c) {
    for (int j = 0; j < 32; ++j) c[j] = b.qs[j];
  }
  static float scaled(const Block& b, int sumi, const ActQ8_0Row& y, int64_t ib) {
    return static_cast<float>(sumi) * (h2f(b.d) * y.d[ib]);
  }
};

// sum of codes[j] * q[j] over one block of 32
int block_sum(const int* codes, const int8_t* q) {
  int sumi = 0;
  for (int j = 0; j < 32; ++j) sumi += codes[j] * q[j];
  return sumi;
}

// ggml's vec_dot_<type>_q8_0 / _q8_1: integer sum per block, scaled and added in block order.
template <class Ty>
float dot_q(const void* w, const uint8_t* act, int64_t n) {
  const typename Ty::Block* x = static_cast<const typename Ty::Block*>(w);
  const ActQ8_0Row y = act_q8_0_row(act, n);
  float sumf = 0.f;
  for (int64_t ib = 0; ib < n / 32; ++ib) {
    int codes[32];
    Ty::codes(x[ib], codes);
    sumf += Ty::scaled(x[ib], block_sum(codes, y.q + 32 * ib), y, ib);
  }
  return sumf;
}

// MatmulActFn for a few activation rows (n_tok <= kFewRowsMax): each weight block is unpacked once and used for
// every row, the order in which the SIMD variants read the weights; per row the same sums as dot_q, in the same
// order, so the result is bit-identical to matmul_act.
template <class Ty>
void matmul_act_few(const void* W, int64_t n_in, const uint8_t* A, int64_t lda, int64_t n_tok, float* Y, int64_t ldy,
                    int64_t row_begin, int64_t row_end) {
  const size_t rb = row_bytes(static_cast<int32_t>(Ty::kType), n_in);
  ActQ8_0Row y[kFewRowsMax];
  float sumf[kFewRowsMax];
  const int64_t rows = n_tok < kFewRowsMax ? n_tok : kFewRowsMax;  // callers keep n_tok <= kFewRowsMax
  for (int64_t t = 0; t < rows; ++t) y[t] = act_q8_0_row(A + t * lda, n_in);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const typename Ty::Block* x =
        reinterpret_cast<const typename Ty::Block*>(static_cast<const uint8_t*>(W) + static_cast<size_t>(r) * rb);
    for (int64_t t = 0; t < rows; ++t) sumf[t] = 0.f;
    for (int64_t ib = 0; ib < n_in / 32; ++ib) {
      int codes[32];
      Ty::codes(x[ib], codes);
      for (int64_t t = 0; t < rows; ++t) sumf[t] += Ty::scaled(x[ib], block_sum(codes, y[t].q + 32 * ib), y[t], ib);
    }
    for (int64_t t = 0; t < rows; ++t) Y[t * ldy + r] = sumf[t];
  }
}

// Q4_K / Q5_K: the integer products of each 32-element sub-block weighted by its 6-bit scale, accumulated in
// 8 interleaved lanes (element index mod 8) and scaled once per block, as ggml's generic code; the mins go
// through the activation group sums.
template <bool kFive>
float dot_q45_k(const void* w, const uint8_t* act, int64_t n) {
  using Block = typename std::conditional<kFive, BlockQ5_K, BlockQ4_K>::type;
  const Block* x = static_cast<const Block*>(w);
  const ActQ8_KRow y = act_q8_k_row(act, n);
  float sums[8] = {};
  float sumf = 0.f;
  for (int64_t i = 0; i < n / 256; ++i) {
    int8_t codes[256];
    if constexpr (kFive) {
      unpack_k_codes(x[i].qs, x[i].qh, codes);
    } else {
      unpack_k_codes(x[i].qs, nullptr, codes);
    }
    const int8_t* q = y.q + 256 * i;
    const int16_t* bsums = y.bsums + 16 * i;
    int32_t lanes[8] = {};
    int min_sum = 0;
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      k_scale_min(j, x[i].scales, &sc, &m);
      min_sum += (bsums[2 * j] + bsums[2 * j + 1]) * m;
      for (int l = 0; l < 32; ++l) lanes[l % 8] += sc * (codes[32 * j + l] * q[32 * j + l]);
    }
    const float d = h2f(x[i].d) * y.d[i];
    for (int l = 0; l < 8; ++l) sums[l] += d * static_cast<float>(lanes[l]);
    const float dmin = h2f(x[i].dmin) * y.d[i];
    sumf -= dmin * static_cast<float>(min_sum);
  }
  for (int l = 0; l < 8; ++l) sumf += sums[l];
  return sumf;
}

float dot_q6_k(const void* w, const uint8_t* act, int64_t n) {
  const BlockQ6_K* x = static_cast<const BlockQ6_K*>(w);
  const ActQ8_KRow y = act_q8_k_row(act, n);
  float sums[8] = {};
  for (int64_t i = 0; i < n / 256; ++i) {
    int8_t v[256];
    unpack_q6_values(x[i], v);
    const int8_t* q = y.q + 256 * i;
    int32_t lanes[8] = {};
    for (int j = 0; j < 256; ++j) lanes[j % 8] += x[i].scales[j / 16] * (v[j] * q[j]);
    const float d = h2f(x[i].d) * y.d[i];
    for (int l = 0; l < 8; ++l) sums[l] += d * static_cast<float>(lanes[l]);
  }
  float sumf = 0.f;
  for (int l = 0; l < 8; ++l) sumf += sums[l];
  return sumf;
}

// Q8_K weights (ggml has no CPU dot for them; this is the natural one): integer sum per block times both d.
float dot_q8_k(const void* w, const uint8_t* act, int64_t n) {
  const BlockQ8_K* x = static_cast<const BlockQ8_K*>(w);
  const ActQ8_KRow y = act_q8_k_row(act, n);
  float sumf = 0.f;
  for (int64_t i = 0; i < n / 256; ++i) {
    int sumi = 0;
    for (int j = 0; j < 256; ++j) sumi += x[i].qs[j] * y.q[256 * i + j];
    sumf += (x[i].d * y.d[i]) * static_cast<float>(sumi);
  }
  return sumf;
}

// MatmulActFn over one of the dots above: Y[t][r] = dot(W row r, activation row t).
template <float (*Dot)(const void*, const uint8_t*, int64_t), GgmlType kType>
void matmul_act(const void* W, int64_t n_in, const uint8_t* A, int64_t lda, int64_t n_tok, float* Y, int64_t ldy,
                int64_t row_begin, int64_t row_end) {
  const size_t rb = row_bytes(static_cast<int32_t>(kType), n_in);
  const uint8_t* base = static_cast<const uint8_t*>(W);
  for (int64_t r = row_begin; r < row_end; ++r)
    for (int64_t t = 0; t < n_tok; ++t) Y[t * ldy + r] = Dot(base + static_cast<size_t>(r) * rb, A + t * lda, n_in);
}

// MatmulFn for a quantized type: quantizes the n_tok activation rows, then matmul_act.
template <float (*Dot)(const void*, const uint8_t*, int64_t), GgmlType kType, int32_t kFormat,
          void (*Quantize)(const float*, uint8_t*, int64_t)>
void matmul_quantized(const void* W, int64_t n_in, const float* X, int64_t ldx, int64_t n_tok, float* Y, int64_t ldy,
                      int64_t row_begin, int64_t row_end) {
  const size_t lda = act_row_bytes(kFormat, n_in);
  std::vector<uint8_t> act(lda * static_cast<size_t>(n_tok));
  for (int64_t t = 0; t < n_tok; ++t) Quantize(X + t * ldx, act.data() + t * lda, n_in);
  matmul_act<Dot, kType>(W, n_in, act.data(), static_cast<int64_t>(lda), n_tok, Y, ldy, row_begin, row_end);
}

// ---- attention --------------------------------------------------------------------------------------

// Causal attention of query heads [head_begin, head_end) for every token of the batch (see AttentionArgs).
//   q, out: [n_tok][n_head * head_dim]   k, v: [pos0 + n_tok][n_kv_head * head_dim]
//   scratch: [pos0 + n_tok] floats, the scores then probabilities of one (token, head)
void attention(const AttentionArgs& a, int64_t head_begin, int64_t head_end, float* scratch) {
  const int64_t q_stride = a.n_head * a.head_dim;
  const int64_t kv_stride = a.n_kv_head * a.head_dim;
  const int64_t heads_per_kv = a.n_head / a.n_kv_head;

  for (int64_t t = 0; t < a.n_tok; ++t) {
    const int64_t n_pos = a.pos0 + t + 1;  // token t sees positions 0 .. pos0 + t
    for (int64_t h = head_begin; h < head_end; ++h) {
      const int64_t kv_h = h / heads_per_kv;
      const float* q = a.q + t * q_stride + h * a.head_dim;
      const float* k = a.k + kv_h * a.head_dim;
      const float* v = a.v + kv_h * a.head_dim;
      float* out = a.out + t * q_stride + h * a.head_dim;

      // scores[j] = (q . k_j) * scale, and their maximum for a stable softmax
      float max_score = -INFINITY;
      for (int64_t j = 0; j < n_pos; ++j) {
        const float s = static_cast<float>(dot_row<load_f32>(k + j * kv_stride, q, a.head_dim)) * a.scale;
        scratch[j] = s;
        if (s > max_score) max_score = s;
      }

      // p_j = exp(s_j - max) / sum_j exp(s_j - max)
      double sum = 0.0;
      for (int64_t j = 0; j < n_pos; ++j) {
        const float e = expf(scratch[j] - max_score);
        scratch[j] = e;
        sum += e;
      }
      const float inv_sum = static_cast<float>(1.0 / sum);
      for (int64_t j = 0; j < n_pos; ++j) scratch[j] *= inv_sum;
      if (t == a.stats_tok && a.stats != nullptr) {
        double entropy = 0.0;
        for (int64_t j = 0; j < n_pos; ++j)
          if (scratch[j] > 0.f) entropy -= static_cast<double>(scratch[j]) * std::log(static_cast<double>(scratch[j]));
        a.stats[2 * h] = static_cast<float>(entropy);
        a.stats[2 * h + 1] = scratch[n_pos - 1];
      }

      // out[d] = sum_j p_j * v_j[d], in double, a block of dims at a time so V is read row by row
      constexpr int64_t kBlock = 64;
      for (int64_t d0 = 0; d0 < a.head_dim; d0 += kBlock) {
        const int64_t d1 = d0 + kBlock < a.head_dim ? d0 + kBlock : a.head_dim;
        double acc[kBlock] = {};
        for (int64_t j = 0; j < n_pos; ++j) {
          const float p = scratch[j];
          const float* v_row = v + j * kv_stride;
          for (int64_t d = d0; d < d1; ++d) acc[d - d0] += static_cast<double>(p * v_row[d]);
        }
        for (int64_t d = d0; d < d1; ++d) out[d] = static_cast<float>(acc[d - d0]);
      }
    }
  }
}

// ---- vector ops -------------------------------------------------------------------------------------

// a . b over n floats
float dot_f32(const float* a, const float* b, int64_t n) {
  return static_cast<float>(dot_row<load_f32>(a, b, n));
}

// out[i] = (x[i] * scale) * w[i], scale = 1 / sqrt(mean(x^2) + eps); x, w, out: n floats (out may be x)
void rms_norm(const float* x, const float* w, float* out, int64_t n, float eps) {
  double sum_sq = 0.0;
  for (int64_t i = 0; i < n; ++i) sum_sq += static_cast<double>(x[i] * x[i]);
  const float mean = static_cast<float>(sum_sq / static_cast<double>(n));
  const float scale = 1.0f / sqrtf(mean + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = (x[i] * scale) * w[i];
}

// gate[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)); gate, up: n floats
void swiglu(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

// y[i] += x[i]; y, x: n floats
void add(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

// Built at compile time (constant initialisation): no code runs when the library loads.
constexpr KernelTable make_table() {
  KernelTable t{};
  t.name = "generic";
  t.matmul[static_cast<int>(GgmlType::F32)] = &matmul<load_f32, 4>;
  t.matmul[static_cast<int>(GgmlType::F16)] = &matmul<load_f16, 2>;
  t.matmul[static_cast<int>(GgmlType::BF16)] = &matmul<load_bf16, 2>;
  t.dequant_row[static_cast<int>(GgmlType::F32)] = &dequant_row<load_f32>;
  t.dequant_row[static_cast<int>(GgmlType::F16)] = &dequant_row<load_f16>;
  t.dequant_row[static_cast<int>(GgmlType::BF16)] = &dequant_row<load_bf16>;

  // Quantized types: activations as ggml's vec_dot_type (the float types take float activations).
  t.quantize_act[kActQ8_0] = &quantize_act_q8_0_ref;
  t.quantize_act[kActQ8_K] = &quantize_act_q8_k_ref;
  t.quantize_act[kActBF16] = &quantize_act_bf16_ref;
#define ADAINFER_QUANT(TYPE, DOT, DEQUANT, FORMAT, QUANTIZE)                                            \
  t.dequant_row[static_cast<int>(GgmlType::TYPE)] = &DEQUANT;                                           \
  t.act_format[static_cast<int>(GgmlType::TYPE)] = FORMAT;                                              \
  t.matmul_act[static_cast<int>(GgmlType::TYPE)] = &matmul_act<DOT, GgmlType::TYPE>;                    \
  t.matmul[static_cast<int>(GgmlType::TYPE)] = &matmul_quantized<DOT, GgmlType::TYPE, FORMAT, QUANTIZE>;
  ADAINFER_QUANT(Q4_0, dot_q<GQ4_0>, dequant_row_q4_0, kActQ8_0, quantize_act_q8_0_ref)
  ADAINFER_QUANT(Q4_1, dot_q<GQ4_1>, dequant_row_q4_1, kActQ8_0, quantize_act_q8_0_ref)
  ADAINFER_QUANT(Q5_0, dot_q<GQ5_0>, dequant_row_q5_0, kActQ8_0, quantize_act_q8_0_ref)
  ADAINFER_QUANT(Q5_1, dot_q<GQ5_1>, dequant_row_q5_1, kActQ8_0, quantize_act_q8_0_ref)
  ADAINFER_QUANT(Q8_0, dot_q<GQ8_0>, dequant_row_q8_0, kActQ8_0, quantize_act_q8_0_ref)
  t.matmul_act_few[static_cast<int>(GgmlType::Q4_0)] = &matmul_act_few<GQ4_0>;
  t.matmul_act_few[static_cast<int>(GgmlType::Q4_1)] = &matmul_act_few<GQ4_1>;
  t.matmul_act_few[static_cast<int>(GgmlType::Q5_0)] = &matmul_act_few<GQ5_0>;
  t.matmul_act_few[static_cast<int>(GgmlType::Q5_1)] = &matmul_act_few<GQ5_1>;
  t.matmul_act_few[static_cast<int>(GgmlType::Q8_0)] = &matmul_act_few<GQ8_0>;
  ADAINFER_QUANT(Q4_K, dot_q45_k<false>, dequant_row_q4_k, kActQ8_K, quantize_act_q8_k_ref)
  ADAINFER_QUANT(Q5_K, dot_q45_k<true>, dequant_row_q5_k, kActQ8_K, quantize_act_q8_k_ref)
  ADAINFER_QUANT(Q6_K, dot_q6_k, dequant_row_q6_k, kActQ8_K, quantize_act_q8_k_ref)
  ADAINFER_QUANT(Q8_K, dot_q8_k, dequant_row_q8_k, kActQ8_K, quantize_act_q8_k_ref)
#undef ADAINFER_QUANT
  // The K-quants' few-row entry is their matmul_act (row by row, each row read from memory once and from L1 for
  // the other activation rows): the scalar reference the SIMD few-row kernels are checked against.
  for (GgmlType k : {GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q8_K})
    t.matmul_act_few[static_cast<int>(k)] = t.matmul_act[static_cast<int>(k)];
  t.attention = &attention;
  t.dot_f32 = &dot_f32;
  t.rms_norm = &rms_norm;
  t.swiglu = &swiglu;
  t.add = &add;
  return t;
}

constexpr KernelTable kGenericTable = make_table();

}  // namespace

const KernelTable& kernels_generic() { return kGenericTable; }

}  // namespace adainfer
