// The CUDA kernels, as host functions that launch them on a stream. Plain C++ (no CUDA headers): the
// CUDA blocks (cuda_blocks.cu) and the kernel tests (test/cuda/) call the same launchers. Every pointer
// argument is device memory unless named host_*. Shapes use GGUF's convention: a weight matrix has n_out rows
// of n_in elements in its GGUF layout (row_bytes each), y = W x per token row.
// The kernels mirror the scalar CPU reference (cpu/generic) operation by operation; where the GPU changes the
// order of a sum (parallel reductions), tests state the tolerance. Weights are dequantized on the fly and
// multiplied by float activations (ggml's CPU path quantizes activations to 8 bits first; this is at least as
// accurate).
#pragma once
#include <cstddef>
#include <cstdint>

struct CUstream_st;

namespace adainfer {
namespace cuda {

using Stream = CUstream_st*;

// True when the kernels compute weights of this GGML type (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
// Q5_K, Q6_K).
bool supports_type(int32_t type);

// y[t][r] = dot(W row r, x[t]) for r < n_out, t < n_tok (x: rows of stride ldx floats, y: stride ldy).
// n_tok <= 8: one block per row, the row read once for every token (decode, small batches: memory bound);
// larger: tiles through shared memory on the tensor cores (f16/bf16; prefill), or in f32 for F32 weights.
// accumulate: y += W x (the residual add fused into the product).
void matmul(Stream s, int32_t type, const void* W, size_t row_bytes, int64_t n_in, int64_t n_out, const float* x,
            int64_t ldx, int64_t n_tok, float* y, int64_t ldy, bool accumulate = false);
// y[t][r] = silu(Wg x[t])[r] * (Wu x[t])[r] (SwiGLU's gate and up projections): one pass over both matrices for
// at most 8 tokens; beyond, two products into y and `up` (both [n_tok][n_out], ldy == n_out) and swiglu().
void matmul_glu(Stream s, int32_t type, const void* Wg, const void* Wu, size_t row_bytes, int64_t n_in, int64_t n_out,
                const float* x, int64_t ldx, int64_t n_tok, float* y, float* up, int64_t ldy);
// Only rows ids[0..m) of W, for one token: y[ids[i]] = dot(W row ids[i], x) (the logit lens over candidates).
void matvec_rows(Stream s, int32_t type, const void* W, size_t row_bytes, int64_t n_in, const int32_t* ids, int64_t m,
                 const float* x, float* y);
// out[r][0..n_in) = rows [0, n_rows) of W as floats (tests).
void dequant_rows(Stream s, int32_t type, const void* W, size_t row_bytes, int64_t n_in, int64_t n_rows, float* out);

// out[r] = (x[r] * scale_r) * w, scale_r = 1 / sqrt(mean(x[r]^2) + eps), for rows of n floats.
void rms_norm(Stream s, const float* x, const float* w, float* out, int64_t n_rows, int64_t n, float eps);
// RoPE of n_rows rows (stride ld floats) of n_heads heads each, row r at position pos[r] (device array);
// adjacent pairs (GGUF) or NEOX pairs (i, i + n_rot/2). freq_factors: [n_rot/2] or nullptr.
void rope(Stream s, float* x, int64_t ld, int64_t n_rows, const int32_t* pos, int64_t n_heads, int64_t head_dim,
          int64_t n_rot, float freq_base, const float* freq_factors, bool neox);
// K/V rows of this call into the cache of one layer ([n_seq][n_ctx][kv_dim]): row r at (row_seq[r], row_pos[r]).
void kv_store(Stream s, const float* k_new, const float* v_new, int64_t n_rows, const int32_t* row_seq,
              const int32_t* row_pos, float* k_cache, float* v_cache, int64_t n_ctx, int64_t kv_dim);
// Causal GQA attention of n_rows query rows ([n_rows][n_head * head_dim]): row r attends to positions
// 0..row_pos[r] of sequence row_seq[r] in the layer's cache. out: [n_rows][n_head * head_dim].
// max_pos: the largest row_pos[r] + 1 (host-known). With `scratch` (attention_scratch_floats() floats), few rows
// are split over slices of their positions, merged afterwards (flash-decoding): a decode step fills the GPU.
void attention(Stream s, const float* q, int64_t n_rows, const int32_t* row_seq, const int32_t* row_pos,
               const float* k_cache, const float* v_cache, int64_t n_ctx, int64_t n_head, int64_t n_kv_head,
               int64_t head_dim, float scale, float* out, int64_t max_pos, float* scratch, int64_t scratch_floats);
int64_t attention_scratch_floats(int64_t n_rows, int64_t n_head, int64_t head_dim);
// The longest context attention() takes on `device` (its scores live in shared memory).
int64_t attention_max_ctx(int device);
// gate[i] = silu(gate[i]) * up[i]
void swiglu(Stream s, float* gate, const float* up, int64_t n);
// y[i] += x[i]
void add(Stream s, float* y, const float* x, int64_t n);
// y[r][i] += bias[i] for n_rows rows of `width` floats (contiguous): the Q/K/V biases (qwen2).
void add_bias(Stream s, float* y, const float* bias, int64_t n_rows, int64_t width);
// x[h] = (x[h] * scale_h) * w in place, scale_h = 1 / sqrt(mean(x[h]^2) + eps), for n_heads contiguous heads of
// head_dim floats (every head of every row): the per-head RMSNorm of Q and K before RoPE (qwen3).
void head_rms_norm(Stream s, float* x, const float* w, int64_t n_heads, int64_t head_dim, float eps);
// Softmax statistics over logits[ids[i]] for i < m (ids == nullptr: logits[0..m)): the top k (>= 1) ids by
// (logit desc, id asc) and their probabilities, then p1, p2, p1 - p2 and the entropy in nats. k <= m; the
// top 2 are always ranked for p2 (so out_ids / out_probs need max(k, 2) entries).
// With `scratch` (lens_scratch_bytes()), a whole vocabulary and k <= 8 are reduced by many blocks (the exit check
// every layer pays); otherwise (candidate sets, large k) by one block.
void lens_stats(Stream s, const float* logits, const int32_t* ids, int64_t m, int64_t k, int32_t* out_ids,
                float* out_probs, float* out_features, void* scratch = nullptr);
int64_t lens_scratch_bytes();

}  // namespace cuda
}  // namespace adainfer
