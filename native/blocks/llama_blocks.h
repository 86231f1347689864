// The Llama block on the CPU — pre-RMSNorm attention with RoPE and GQA, SwiGLU MLP — and the weights it runs
// (views into the mapped files, checked at load). The architectures built on it (native/architectures/: llama, and
// qwen2 / qwen3 with their two additions, Q/K/V biases and a per-head RMSNorm of Q and K before RoPE) differ only in
// which tensors they load and which hyper-parameters they fix. LlamaState is their CPU implementation of the block
// API, on the shared CPU plumbing (cpu_blocks.h). Shapes below use GGUF names; "rows" means tokens of the batch.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "blocks/architecture.h"
#include "blocks/block_common.h"
#include "blocks/blocks.h"
#include "blocks/cpu_blocks.h"
#include "core/kernels.h"
#include "core/mapped_file.h"
#include "core/thread_pool.h"

namespace adainfer {

struct LlamaHParams {
  int64_t n_layer = 0;
  int64_t n_embd = 0;     // residual width
  int64_t n_head = 0;     // query heads
  int64_t n_kv_head = 0;  // key/value heads (GQA when < n_head)
  int64_t head_dim = 0;   // per head; q width = n_head * head_dim
  int64_t n_ff = 0;       // SwiGLU hidden width
  int64_t n_vocab = 0;
  int64_t n_rot = 0;      // rope.dimension_count (<= head_dim)
  float rms_eps = 1e-5f;
  float rope_base = 10000.f;
  // RoPE pairs: false = adjacent (x[2i], x[2i+1]), GGUF's layout for llama; true = NEOX / rotate-half
  // (x[i], x[i + n_rot/2]), the layout of Hugging Face llama checkpoints, whose Q/K rows GGUF converters permute.
  // Choosing the pairing at load uses such weights in place, unpermuted.
  bool rope_neox = false;
  // Biases on the Q, K and V projections (attn_q.bias, attn_k.bias, attn_v.bias: qwen2).
  bool qkv_bias = false;
  // RMSNorm of every head of Q and K, with weights attn_q_norm / attn_k_norm [head_dim], between the projection and
  // RoPE (qwen3).
  bool qk_norm = false;
};

// The keys every architecture on the Llama block reads (nLayer, nEmbd, nHead, nKvHead, headDim, nFf, nVocab, nRot,
// rmsEps, ropeBase, ropeNeox = false when absent). Throws ModelError INVALID_OPTION naming a missing key.
LlamaHParams llama_hparams(const HParams& p);

struct LlamaLayer {
  std::vector<float> attn_norm;  // [n_embd]
  WeightView wq;                 // attn_q.weight      [n_embd] -> [n_head * head_dim]
  WeightView wk;                 // attn_k.weight      [n_embd] -> [n_kv_head * head_dim]
  WeightView wv;                 // attn_v.weight      [n_embd] -> [n_kv_head * head_dim]
  WeightView wo;                 // attn_output.weight [n_head * head_dim] -> [n_embd]
  std::vector<float> ffn_norm;   // [n_embd]
  WeightView w_gate;             // ffn_gate.weight    [n_embd] -> [n_ff]
  WeightView w_up;               // ffn_up.weight      [n_embd] -> [n_ff]
  WeightView w_down;             // ffn_down.weight    [n_ff] -> [n_embd]
  std::vector<float> bq, bk, bv;  // attn_{q,k,v}.bias [q_dim], [kv_dim], [kv_dim] (qkv_bias; else empty)
  std::vector<float> q_norm;      // attn_q_norm.weight [head_dim] (qk_norm; else empty)
  std::vector<float> k_norm;      // attn_k_norm.weight [head_dim]
};

// Weights of a whole model, pointing into `files` (kept alive by the shared_ptrs; one for a GGUF, one per shard
// of a sharded safetensors checkpoint).
struct LlamaWeights : ModelWeights {
  LlamaHParams hp;
  WeightView tok_embd;                // token_embd.weight [n_embd] x n_vocab rows
  std::vector<float> output_norm;     // output_norm.weight [n_embd]
  WeightView output;                  // output.weight [n_embd] x n_vocab (token_embd when tied)
  std::vector<float> rope_freqs;      // rope_freqs.weight [n_rot/2], empty when absent
  std::vector<LlamaLayer> layers;

  int64_t vocabulary() const override { return hp.n_vocab; }
  bool tied_output() const override { return output.data == tok_embd.data; }
  std::vector<WeightView*> layer_matrices() override {
    std::vector<WeightView*> m;
    for (LlamaLayer& L : layers) m.insert(m.end(), {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down});
    return m;
  }
};

// Builds the weights from the tensor table, looking tensors up by their GGUF names (token_embd.weight,
// blk.N.attn_q.weight, ...; the biases and Q/K norms when hp asks for them). Checks that every tensor exists, has a type the kernels
// support, the shape the hyper-parameters imply, and data inside the file. Throws ModelError.
// Tensors name the file they live in (TensorSpec::file); a spec naming no file of `files` is refused.
LlamaWeights load_llama_weights(std::vector<std::shared_ptr<MappedFile>> files, const LlamaHParams& hp,
                                const std::vector<TensorSpec>& tensors, const KernelTable& kernels);
inline LlamaWeights load_llama_weights(std::shared_ptr<MappedFile> file, const LlamaHParams& hp,
                                       const std::vector<TensorSpec>& tensors, const KernelTable& kernels) {
  return load_llama_weights(std::vector<std::shared_ptr<MappedFile>>{std::move(file)}, hp, tensors, kernels);
}

// RoPE of one row (q or k: [n_heads][head_dim]) at `pos`, in the pairing the hyper-parameters name.
void rope_row(const LlamaHParams& hp, const float* freq_factors, float* x, int64_t n_heads, int64_t pos);

// The architectures' Architecture::cpu_blocks / cuda_upload for weights made by load_llama_weights.
std::unique_ptr<Blocks> llama_cpu_blocks(std::shared_ptr<const ModelWeights> weights, const BlocksShape& shape,
                                         const KernelTable& kernels, const HostBuffers& io);
std::shared_ptr<CudaWeights> llama_cuda_upload(std::shared_ptr<const ModelWeights> weights, int device);

// The CPU backend of the block API for the Llama block. Owns the scratch buffers of its block; the KV cache,
// residual stream and threads are the shared CPU plumbing's (CpuBlocks).
class LlamaState final : public CpuBlocks {
 public:
  LlamaState(std::shared_ptr<const LlamaWeights> weights, int64_t n_seq, int64_t n_ctx, int64_t n_batch,
             int n_threads, const KernelTable& kernels, const HostBuffers& io);

  const LlamaHParams& hp() const { return w_->hp; }

  // hidden[t] = token_embd[tokens[t]] for t < n. Throws std::out_of_range on a bad id.
  void embed(int64_t n) override;
  // hidden[t] += Attention_l(RMSNorm(hidden[t])) for rows t < n. Row t is position row_pos[t] of sequence
  // row_seq[t]: its K/V go into that sequence's cache of layer l, and it attends to positions 0..row_pos[t] of
  // it (earlier positions must be in the cache already, or be earlier rows of this call). Rows of one
  // sequence with consecutive positions are computed together.
  void attention_block(int64_t layer, int64_t n) override;
  // Only the K/V of layer l for rows t < n, from their current hidden state (no attention, no residual):
  // fills the cache of layers an early exit skipped (CALM's state propagation).
  void fill_kv(int64_t layer, int64_t n) override;
  // hidden[t] += SwiGLU_l(RMSNorm(hidden[t])).
  void mlp_block(int64_t layer, int64_t n) override;

 private:
  // RMSNorm_final of the row, in xb_; the head is output.weight (token_embd when tied).
  const float* head_input(int64_t row0, int64_t n) override;
  const WeightView& head_matrix() const override { return w_->output; }
  void rms_norm_rows(const float* x, const float* w, float* out, int64_t n);
  // The per-head RMSNorm of rows [0, n) of x ([n][n_heads * head_dim]), in place (qk_norm).
  void head_norm_rows(float* x, const std::vector<float>& w, int64_t n_heads, int64_t n);
  // xb = RMSNorm_l(hidden); K/V of layer l for the n rows into the cache (biases, K norm and RoPE applied to K).
  void norm_and_write_kv(int64_t layer, int64_t n);

  std::shared_ptr<const LlamaWeights> w_;
  int64_t q_dim_;   // n_head * head_dim
  int64_t kv_dim_;  // n_kv_head * head_dim
  std::vector<float> k_new_;    // [n_batch][kv_dim]  K of the rows of the current call, before the scatter
  std::vector<float> v_new_;    // [n_batch][kv_dim]
  std::vector<float> xb_;       // [n_batch][max(n_embd, q_dim)]  normed input / block output
  std::vector<float> q_;        // [n_batch][q_dim]
  std::vector<float> att_;      // [n_batch][q_dim]
  std::vector<float> gate_;     // [n_batch][n_ff]
  std::vector<float> up_;       // [n_batch][n_ff]
};

}  // namespace adainfer
