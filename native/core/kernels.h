// The CPU kernel table: one struct of function pointers, filled by each instruction-set variant
// (cpu/generic = scalar reference, cpu/x86/avx2, cpu/x86/avx512) and chosen once at load from CPUID.
// Kernels hold no policy and allocate nothing; callers split work into row ranges for the thread pool.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ggml_types.h"

namespace adainfer {

// Y[t][r] = dot(W row r, X[t]) for rows r in [row_begin, row_end) and tokens t in [0, n_tok).
//   W: weight matrix in its GGUF layout, rows of `n_in` elements (`row_bytes(type, n_in)` bytes each)
//   X: activations, n_tok rows of n_in floats, row stride ldx (floats)
//   Y: outputs, n_tok rows, row stride ldy (floats); only columns [row_begin, row_end) are written
using MatmulFn = void (*)(const void* W, int64_t n_in, const float* X, int64_t ldx, int64_t n_tok, float* Y,
                          int64_t ldy, int64_t row_begin, int64_t row_end);

// Converts one row of n elements of the weight type to floats (embedding lookup, logit lens on a few rows).
using DequantRowFn = void (*)(const void* row, float* out, int64_t n);

// Causal attention for one head range of a batch of tokens, over a float KV cache of one layer.
//   q:      [n_tok][n_head * head_dim]          queries, RoPE already applied
//   k, v:   [n_ctx][n_kv_head * head_dim]       the layer's cache; rows 0 .. pos0 + n_tok - 1 are valid
//   out:    [n_tok][n_head * head_dim]          written for heads [head_begin, head_end)
//   scratch: at least (pos0 + n_tok) floats, private to the calling thread
// Token t sits at position pos0 + t and attends to positions 0 .. pos0 + t. Query head h reads kv head
// h / (n_head / n_kv_head) (grouped-query attention, as llama.cpp).
struct AttentionArgs {
  const float* q;
  const float* k;
  const float* v;
  float* out;
  int64_t n_tok;
  int64_t pos0;
  int64_t n_head;
  int64_t n_kv_head;
  int64_t head_dim;
  float scale;  // 1/sqrt(head_dim)
};
using AttentionFn = void (*)(const AttentionArgs& a, int64_t head_begin, int64_t head_end, float* scratch);

struct KernelTable {
  const char* name;  // "generic", "avx2", "avx512"

  // Indexed by GgmlType id (0..kMaxType-1); nullptr where the variant has no kernel for that type.
  static constexpr int kMaxType = 40;
  MatmulFn matmul[kMaxType];
  DequantRowFn dequant_row[kMaxType];

  AttentionFn attention;

  float (*dot_f32)(const float* a, const float* b, int64_t n);
  // out[i] = x[i] * w[i] / sqrt(mean(x^2) + eps)
  void (*rms_norm)(const float* x, const float* w, float* out, int64_t n, float eps);
  // gate[i] = silu(gate[i]) * up[i]
  void (*swiglu)(float* gate, const float* up, int64_t n);
  // y[i] += x[i]
  void (*add)(float* y, const float* x, int64_t n);
};

const KernelTable& kernels_generic();
// nullptr when the variant was not compiled in (non-x86 builds).
const KernelTable* kernels_avx2();
const KernelTable* kernels_avx512();

// Best table this CPU runs, or the one named by the ADAINFER_ISA environment variable
// ("generic", "avx2", "avx512") when set and supported. Decided once, on first call.
const KernelTable& kernels_best();
// Table by name; nullptr if unknown or unsupported by this CPU.
const KernelTable* kernels_by_name(const char* name);

// RoPE as llama.cpp's `llama` architecture applies it: rotates adjacent pairs (x[2i], x[2i+1]) of the
// first n_rot dims of each head by theta = pos * base^(-2i/n_rot) / freq_factors[i] (factors optional).
// Angles are computed as ggml does (theta_scale = powf(base, -2/n_rot), multiplied iteratively in float).
void rope_llama(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int64_t pos, float freq_base,
                const float* freq_factors);

}  // namespace adainfer
