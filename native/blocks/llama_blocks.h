// The Llama architecture on the CPU: its weights (views into the mapped files, checked at load) and
// LlamaState, the CPU implementation of the block API (blocks.h). Shapes below use GGUF names; "rows" means
// tokens of the current batch.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "blocks/block_common.h"
#include "blocks/blocks.h"
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
};

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
};

// Weights of a whole model, pointing into `files` (kept alive by the shared_ptrs; one for a GGUF, one per shard
// of a sharded safetensors checkpoint).
struct LlamaWeights {
  std::vector<std::shared_ptr<MappedFile>> files;
  LlamaHParams hp;
  WeightView tok_embd;                // token_embd.weight [n_embd] x n_vocab rows
  std::vector<float> output_norm;     // output_norm.weight [n_embd]
  WeightView output;                  // output.weight [n_embd] x n_vocab (token_embd when tied)
  std::vector<float> rope_freqs;      // rope_freqs.weight [n_rot/2], empty when absent
  std::vector<LlamaLayer> layers;
};

// Builds the weights of a `llama` GGUF from its tensor table, looking tensors up by their GGUF names
// (token_embd.weight, blk.N.attn_q.weight, ...). Checks that every tensor exists, has a type the kernels
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

// The CPU backend of the block API for llama. Owns the KV cache, the residual stream and the scratch buffers;
// the kernels come from the CPUID-chosen KernelTable, the threads from its own pool.
class LlamaState final : public Blocks {
 public:
  LlamaState(std::shared_ptr<const LlamaWeights> weights, int64_t n_seq, int64_t n_ctx, int64_t n_batch,
             int n_threads, const KernelTable& kernels, const HostBuffers& io);

  const char* backend() const override { return "cpu"; }
  int64_t n_embd() const override { return w_->hp.n_embd; }
  const LlamaHParams& hp() const { return w_->hp; }
  int64_t n_seq() const { return n_seq_; }
  int64_t n_ctx() const { return n_ctx_; }
  int64_t n_batch() const override { return n_batch_; }
  int n_threads() const { return pool_.size(); }
  const KernelTable& kernels() const { return k_; }

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
  // logits = output(RMSNorm_final(hidden[row])).
  void head(int64_t row) override;
  // head(row), then softmax statistics into the lens buffers: top-k ids and probs, p1, p2, gap, entropy.
  void logit_lens(int64_t row, int64_t k) override;
  // The same statistics over a candidate set only (lens_candidates[0..m)): m rows of the head instead of
  // the whole vocabulary, softmax renormalised over the candidates. logits[id] is written for candidates only.
  void logit_lens_candidates(int64_t row, int64_t m, int64_t k) override;
  void sync_logits() override {}  // the head writes the host buffer directly
  void read_hidden(int64_t row0, int64_t n, float* dst) override;
  void write_hidden(int64_t row0, int64_t n, const float* src) override;
  void move_hidden(int64_t dst_row, int64_t src_row, int64_t n) override;
  // The residual stream itself (tests).
  const float* hidden() const { return hidden_.data(); }

 private:
  // y = W x for n rows. same_input: x holds the very rows of the previous matmul call (same pointer, shape and
  // contents), so activation rows already quantized for an integer matmul are reused (K/V/Q, gate/up).
  void matmul(const WeightView& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy,
              bool same_input = false) {
    mm_(w, x, ldx, n, y, ldy, same_input);
  }
  void rms_norm_rows(const float* x, const float* w, float* out, int64_t n);
  // xb = RMSNorm_l(hidden); K/V of layer l for the n rows into the cache (RoPE applied to K).
  void norm_and_write_kv(int64_t layer, int64_t n);
  float* k_cache_at(int64_t layer, int64_t seq) { return k_cache_.data() + ((layer * n_seq_ + seq) * n_ctx_) * kv_dim_; }
  float* v_cache_at(int64_t layer, int64_t seq) { return v_cache_.data() + ((layer * n_seq_ + seq) * n_ctx_) * kv_dim_; }
  // Softmax statistics over logits[ids[0..m)] (ids == nullptr: the whole vocabulary) into the lens buffers.
  void lens_statistics(const int32_t* ids, int64_t m, int64_t k) {
    adainfer::lens_statistics(io_, ids, m, k, top_ids_.data());
  }

  std::shared_ptr<const LlamaWeights> w_;
  const KernelTable& k_;
  int64_t n_seq_;
  int64_t n_ctx_;
  int64_t n_batch_;
  ThreadPool pool_;
  HostBuffers io_;
  MatmulRunner mm_;

  int64_t q_dim_;   // n_head * head_dim
  int64_t kv_dim_;  // n_kv_head * head_dim
  std::vector<float> hidden_;   // [n_batch][n_embd]  residual stream of the batch
  std::vector<float> k_cache_;  // [n_layer][n_seq][n_ctx][kv_dim]
  std::vector<float> v_cache_;  // [n_layer][n_seq][n_ctx][kv_dim]
  std::vector<float> k_new_;    // [n_batch][kv_dim]  K of the rows of the current call, before the scatter
  std::vector<float> v_new_;    // [n_batch][kv_dim]
  std::vector<int64_t> runs_;   // [n_batch + 1] starts of row runs (same sequence, consecutive positions)
  std::vector<float> xb_;       // [n_batch][max(n_embd, q_dim)]  normed input / block output
  std::vector<float> q_;        // [n_batch][q_dim]
  std::vector<float> att_;      // [n_batch][q_dim]
  std::vector<float> gate_;     // [n_batch][n_ff]
  std::vector<float> up_;       // [n_batch][n_ff]
  std::vector<float> scratch_;  // [n_threads][n_ctx] attention scores
  std::vector<int32_t> top_ids_;  // [max(lens_k, 2)] logit-lens top-k, best first
};

}  // namespace adainfer
