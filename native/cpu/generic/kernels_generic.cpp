// The scalar reference kernels: the oracle the SIMD variants are tested against, and the fallback on
// CPUs without AVX2. Written for clarity. Compiled for baseline x86-64 (no -m flags).
//
// Numerics follow ggml's scalar CPU build, which produced the golden outputs:
//  - dot products multiply in float and accumulate in double: sum += (double)(w * x);
//  - softmax sums its exponentials in double;
//  - rms_norm sums squares in double.
#include <math.h>

#include <cstring>

#include "core/ggml_types.h"
#include "core/kernels.h"

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
