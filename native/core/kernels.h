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

// ---- activations of the integer (and bf16) dot products ---------------------------------------------------
// As in ggml-cpu (whose scalar build made the goldens), a matmul with quantized weights does not multiply
// them by float activations: each activation row is first quantized to the weight type's "vec_dot type"
// (Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 -> Q8_0 blocks of 32, the K-quants -> Q8_K blocks of 256) and the dot products
// are integer, scaled per block. Quantizing once per matmul (not per row) is cheap, reading int8
// activations is 4x less traffic than floats, and it reproduces llama.cpp's numerics.
// ActFormat of each weight type: KernelTable::act_format. One row of n elements, every section starting
// at a 64-byte boundary (act_row_bytes(format, n) bytes, a multiple of 64):
//   kActQ8_0 (n % 32 == 0, nb = n / 32):
//       int8 q[n] | int8 qn[n rounded up to 128] | float d[nb] | float s[nb] | float sum[nb]
//       per block of 32: d = fp16(amax / 127) (as a float), q = roundf(x / (amax / 127)) (ggml's
//       quantize_row_q8_0_ref), s = fp16((amax / 127) * sum q) (ggml's Q8_1 s), sum = sum q (exact);
//       qn = q reordered for the 4-bit kernels: per 4 blocks (128 elements) the first 16 elements of each
//       block, then the last 16 of each (matching the low and high nibbles of 4 blocks' bytes); zeros past n
//   kActQ8_K (n % 256 == 0, nb = n / 256):
//       int8 q[n] | int8 qk[n] | float d[nb] | int16 bsums[n / 16] | float sum16[n / 16] | float sum32[n / 32]
//       per block of 256: as ggml's quantize_row_q8_K_ref (d = max / -127 with max the signed value of
//       largest magnitude, q = min(127, nearest_int(x / d))), bsums[g] = sum of q over 16-element group g,
//       sum16 = the same as floats, sum32[k] = bsums[2k] + bsums[2k + 1] as floats; qk = q reordered for
//       Q4_K / Q5_K: per 128 elements, elements 0-31 and 64-95, then 32-63 and 96-127 (the low and high
//       nibbles of two 32-byte chunks)
//   kActBF16: uint16 bf16[n] (round to nearest even)
enum ActFormat : int32_t { kActF32 = 0, kActQ8_0 = 1, kActQ8_K = 2, kActBF16 = 3, kActFormats = 4 };

static inline size_t act_align64(size_t b) { return (b + 63) & ~static_cast<size_t>(63); }

// Bytes of one activation row of n elements; 0 if n does not fit the format's blocks (or format is F32).
static inline size_t act_row_bytes(int32_t format, int64_t n) {
  if (n <= 0) return 0;
  const size_t un = static_cast<size_t>(n);
  switch (format) {
    case kActQ8_0:
      return n % 32 ? 0 : act_align64(un) + (un + 127) / 128 * 128 + 3 * act_align64(un / 32 * 4);
    case kActQ8_K:
      return n % 256 ? 0
                     : 2 * act_align64(un) + act_align64(un / 256 * 4) + act_align64(un / 16 * 2) +
                           act_align64(un / 16 * 4) + act_align64(un / 32 * 4);
    case kActBF16:
      return act_align64(un * 2);
    default:
      return 0;
  }
}

struct ActQ8_0Row {
  const int8_t* q;
  const int8_t* qn;
  const float* d;
  const float* s;
  const float* sum;
};
static inline ActQ8_0Row act_q8_0_row(const uint8_t* row, int64_t n) {
  const size_t un = static_cast<size_t>(n), sec = act_align64(un / 32 * 4);
  const uint8_t* qn = row + act_align64(un);
  const uint8_t* d = qn + (un + 127) / 128 * 128;
  return {reinterpret_cast<const int8_t*>(row), reinterpret_cast<const int8_t*>(qn), reinterpret_cast<const float*>(d),
          reinterpret_cast<const float*>(d + sec), reinterpret_cast<const float*>(d + 2 * sec)};
}

struct ActQ8_KRow {
  const int8_t* q;
  const int8_t* qk;
  const float* d;
  const int16_t* bsums;
  const float* sum16;
  const float* sum32;
};
static inline ActQ8_KRow act_q8_k_row(const uint8_t* row, int64_t n) {
  const size_t un = static_cast<size_t>(n);
  const uint8_t* qk = row + act_align64(un);
  const uint8_t* d = qk + act_align64(un);
  const uint8_t* bsums = d + act_align64(un / 256 * 4);
  const uint8_t* sum16 = bsums + act_align64(un / 16 * 2);
  const uint8_t* sum32 = sum16 + act_align64(un / 16 * 4);
  return {reinterpret_cast<const int8_t*>(row), reinterpret_cast<const int8_t*>(qk), reinterpret_cast<const float*>(d),
          reinterpret_cast<const int16_t*>(bsums), reinterpret_cast<const float*>(sum16),
          reinterpret_cast<const float*>(sum32)};
}

// Position in qn of element i (kActQ8_0), and in qk of element i (kActQ8_K).
static inline int64_t act_qn_pos(int64_t i) {
  const int64_t quad = i / 128, r = i % 128, block = r / 32, e = r % 32;
  return quad * 128 + (e < 16 ? 16 * block + e : 64 + 16 * block + (e - 16));
}
static inline int64_t act_qk_pos(int64_t i) {
  const int64_t pair = i / 128, r = i % 128, chunk = r / 64, e = r % 64;
  return pair * 128 + (e < 32 ? 32 * chunk + e : 64 + 32 * chunk + (e - 32));
}

// Y[t][r] = dot(W row r, activation row t) for r in [row_begin, row_end), t in [0, n_tok): as MatmulFn, but
// the activations were already converted by quantize_act[act_format[type]]: row t at A + t * lda bytes.
using MatmulActFn = void (*)(const void* W, int64_t n_in, const uint8_t* A, int64_t lda, int64_t n_tok, float* Y,
                             int64_t ldy, int64_t row_begin, int64_t row_end);
// Most activation rows a matmul_act_few kernel takes.
constexpr int64_t kFewRowsMax = 16;
// Rows of a packed layout that are interleaved together (KernelTable::pack_rows): a packed matrix holds its rows in
// groups of this many, then the rows past the last whole group as GGUF rows, so row r of a group starts no byte of its
// own; kernels on it take row ranges that begin at a multiple of it.
constexpr int64_t kPackedRowGroup = 8;
// Writes `rows` GGUF rows of n_in elements (src) in the variant's packed layout (dst: the same number of bytes).
using PackRowsFn = void (*)(const void* src, void* dst, int64_t rows, int64_t n_in);
// x: n floats -> one activation row (act_row_bytes(format, n) bytes at out).
using QuantizeActFn = void (*)(const float* x, uint8_t* out, int64_t n);

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
  // Statistics of one token's attention, only when asked (the exit features, CpuBlocks::set_attention_stats): for
  // token stats_tok (-1: none), stats[2h] = the entropy (nats) of head h's attention over its positions and
  // stats[2h + 1] = its weight on the token's own position, written for heads [head_begin, head_end).
  int64_t stats_tok = -1;
  float* stats = nullptr;
};
using AttentionFn = void (*)(const AttentionArgs& a, int64_t head_begin, int64_t head_end, float* scratch);

struct KernelTable {
  const char* name;  // "generic", "avx2", "avx512"

  // Indexed by GgmlType id (0..kMaxType-1); nullptr where the variant has no kernel for that type.
  static constexpr int kMaxType = 40;
  MatmulFn matmul[kMaxType];
  DequantRowFn dequant_row[kMaxType];

  // How each weight type wants its activations: kActF32 (matmul above, float X) or a quantized format, in
  // which case matmul_act runs on rows made by quantize_act[format] (matmul above then does that itself,
  // per call; the blocks quantize once and reuse the rows across matmuls that share an input).
  int32_t act_format[kMaxType];
  MatmulActFn matmul_act[kMaxType];
  // The same product for a few activation rows (2 .. kFewRowsMax: the verify step of speculative decoding,
  // a few sequences decoding together), where the weights are still streamed from memory as in decode: each
  // weight block is read and unpacked once and multiplied with every row, in one pass over the matrix.
  // nullptr where a variant has none for a type (matmul_act then serves every row count).
  // Every variant keeps a row's result independent of the row count up to kFewRowsMax (matmul / matmul_act with one
  // row, matmul_act_few with more: the same bits for the same activation row), or the verify step would not
  // reproduce decode; docs/architecture.md, "Row-count invariance".
  MatmulActFn matmul_act_few[kMaxType];
  QuantizeActFn quantize_act[kActFormats];

  // A repacked layout of a weight type that this variant's kernels read faster than the GGUF rows (nullptr: none).
  // pack_rows writes a matrix into it (same size in bytes: PackRowsFn); matmul_act_packed / matmul_act_few_packed
  // are matmul_act / matmul_act_few on it, for row ranges that start at a multiple of kPackedRowGroup. The blocks use
  // it for the layer matrices of a CPU model (blocks/weight_packing.h); the LM head and the embedding stay GGUF rows.
  PackRowsFn pack_rows[kMaxType];
  MatmulActFn matmul_act_packed[kMaxType];
  MatmulActFn matmul_act_few_packed[kMaxType];

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
// The AVX-512 table: on CPUs with AVX-512 VNNI it is the VNNI build (int8 dot products with vpdpbusd, and
// vdpbf16ps for BF16 weights when AVX512-BF16 is there too), unless ADAINFER_NO_VNNI is set to a non-empty
// value other than 0; otherwise the plain AVX-512 (F/BW/VL/DQ) build. Both are named "avx512".
const KernelTable* kernels_avx512();
// The two AVX-512 builds by themselves (tests, benchmarks); nullptr when the CPU lacks what they need.
const KernelTable* kernels_avx512_plain();
const KernelTable* kernels_avx512_vnni();

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
// The same angles in NEOX (rotate-half) pairing: pair i is (x[i], x[i + n_rot/2]) of each head (ggml's
// GGML_ROPE_TYPE_NEOX; Hugging Face's rotate_half). A GGUF converter's Q/K row permutation maps one to the other.
void rope_neox(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int64_t pos, float freq_base,
               const float* freq_factors);

}  // namespace adainfer
