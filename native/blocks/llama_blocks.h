// The blocks of a Llama decoder, one call each, so that the layer loop (and the exit decision between
// layers) lives in TypeScript:
//   embed -> for each layer l: attention_block(l), mlp_block(l) [-> exit?] -> head / logit_lens
// No policy here. Shapes below use GGUF names; "rows" means tokens of the current batch.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/kernels.h"
#include "core/mapped_file.h"
#include "core/thread_pool.h"

namespace adainfer {

// A weight tensor used in place inside the mapped file. GGUF dims: ne0 = row length (inputs), ne1 = rows
// (outputs). 1-D tensors have ne1 = 1.
struct WeightView {
  const void* data = nullptr;
  int32_t type = -1;
  int64_t ne0 = 0;
  int64_t ne1 = 0;
  size_t row_bytes = 0;
};

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

// Weights of a whole model, pointing into `file` (kept alive by the shared_ptr).
struct LlamaWeights {
  std::shared_ptr<MappedFile> file;
  LlamaHParams hp;
  WeightView tok_embd;                // token_embd.weight [n_embd] x n_vocab rows
  std::vector<float> output_norm;     // output_norm.weight [n_embd]
  WeightView output;                  // output.weight [n_embd] x n_vocab (token_embd when tied)
  std::vector<float> rope_freqs;      // rope_freqs.weight [n_rot/2], empty when absent
  std::vector<LlamaLayer> layers;
};

// Per-session state: KV cache and activation buffers, sized once. The activation buffers that the
// TypeScript side reads or writes (tokens, hidden, logits, lens outputs) are owned by JS ArrayBuffers
// and passed in as raw pointers, so there is no copy across the N-API boundary.
struct LlamaBuffers {
  int32_t* tokens = nullptr;  // [n_batch]
  int32_t* row_seq = nullptr;  // [n_batch]  sequence (KV cache slot) of each row
  int32_t* row_pos = nullptr;  // [n_batch]  position of each row in its sequence
  float* hidden = nullptr;    // [n_batch][n_embd]   residual stream of the batch
  float* logits = nullptr;    // [n_vocab]           head output of one row
  int32_t* lens_candidates = nullptr;  // [lens_max_candidates] token ids for logit_lens_candidates
  int64_t lens_max_candidates = 0;
  int32_t* lens_ids = nullptr;     // [lens_k]  top-k token ids of the last logit-lens call
  float* lens_probs = nullptr;     // [lens_k]  their probabilities
  float* lens_features = nullptr;  // [4]       p1, p2, p1 - p2, entropy (nats)
  int64_t lens_k = 0;
};

// One tensor of the file as the GGUF header describes it (absolute offset of its data in the file).
struct TensorSpec {
  std::string name;
  int32_t type = -1;
  std::vector<int64_t> dims;  // GGUF ne order
  uint64_t offset = 0;
};

// Builds the weights of a `llama` GGUF from its tensor table, looking tensors up by their GGUF names
// (token_embd.weight, blk.N.attn_q.weight, ...). Checks that every tensor exists, has a type the kernels
// support, the shape the hyper-parameters imply, and data inside the file. Throws ModelError.
LlamaWeights load_llama_weights(std::shared_ptr<MappedFile> file, const LlamaHParams& hp,
                                const std::vector<TensorSpec>& tensors, const KernelTable& kernels);

// An error about the model's content; `code` is one of the runtime's error codes (MISSING_TENSOR,
// SHAPE_MISMATCH, UNSUPPORTED_TENSOR_TYPE, TENSOR_OUT_OF_BOUNDS, INVALID_OPTION) so JS can type it.
struct ModelError : std::runtime_error {
  std::string code;
  ModelError(std::string c, const std::string& message) : std::runtime_error(message), code(std::move(c)) {}
};

class LlamaState {
 public:
  LlamaState(std::shared_ptr<const LlamaWeights> weights, int64_t n_seq, int64_t n_ctx, int64_t n_batch,
             int n_threads, const KernelTable& kernels, const LlamaBuffers& io);

  const LlamaHParams& hp() const { return w_->hp; }
  int64_t n_seq() const { return n_seq_; }
  int64_t n_ctx() const { return n_ctx_; }
  int64_t n_batch() const { return n_batch_; }
  int n_threads() const { return pool_.size(); }
  const KernelTable& kernels() const { return k_; }

  // hidden[t] = token_embd[tokens[t]] for t < n. Throws std::out_of_range on a bad id.
  void embed(int64_t n);
  // hidden[t] += Attention_l(RMSNorm(hidden[t])) for rows t < n. Row t is position row_pos[t] of sequence
  // row_seq[t]: its K/V go into that sequence's cache of layer l, and it attends to positions 0..row_pos[t] of
  // it (earlier positions must be in the cache already, or be earlier rows of this call). Rows of one
  // sequence with consecutive positions are computed together.
  void attention_block(int64_t layer, int64_t n);
  // Only the K/V of layer l for rows t < n, from their current hidden state (no attention, no residual):
  // fills the cache of layers an early exit skipped (CALM's state propagation).
  void fill_kv(int64_t layer, int64_t n);
  // hidden[t] += SwiGLU_l(RMSNorm(hidden[t])).
  void mlp_block(int64_t layer, int64_t n);
  // logits = output(RMSNorm_final(hidden[row])).
  void head(int64_t row);
  // head(row), then softmax statistics into the lens buffers: top-k ids and probs, p1, p2, gap, entropy.
  void logit_lens(int64_t row, int64_t k);
  // The same statistics over a candidate set only (lens_candidates[0..m)): m rows of the head instead of
  // the whole vocabulary, softmax renormalised over the candidates. logits[id] is written for candidates only.
  void logit_lens_candidates(int64_t row, int64_t m, int64_t k);

 private:
  // y = W x for n rows. same_input: x holds the very rows of the previous matmul call (same pointer, shape and
  // contents), so activation rows already quantized for an integer matmul are reused (K/V/Q, gate/up).
  void matmul(const WeightView& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy,
              bool same_input = false);
  void rms_norm_rows(const float* x, const float* w, float* out, int64_t n);
  void check_layer(int64_t layer) const;
  void check_rows(int64_t n) const;
  // Checks every row's sequence and position (row_seq / row_pos come from JS).
  void check_row_positions(int64_t n) const;
  // xb = RMSNorm_l(hidden); K/V of layer l for the n rows into the cache (RoPE applied to K).
  void norm_and_write_kv(int64_t layer, int64_t n);
  float* k_cache_at(int64_t layer, int64_t seq) { return k_cache_.data() + ((layer * n_seq_ + seq) * n_ctx_) * kv_dim_; }
  float* v_cache_at(int64_t layer, int64_t seq) { return v_cache_.data() + ((layer * n_seq_ + seq) * n_ctx_) * kv_dim_; }
  void check_row(int64_t row) const;
  // Softmax statistics over logits[ids[0..m)] (ids == nullptr: the whole vocabulary) into the lens buffers.
  void lens_statistics(const int32_t* ids, int64_t m, int64_t k);

  std::shared_ptr<const LlamaWeights> w_;
  const KernelTable& k_;
  int64_t n_seq_;
  int64_t n_ctx_;
  int64_t n_batch_;
  ThreadPool pool_;
  LlamaBuffers io_;

  int64_t q_dim_;   // n_head * head_dim
  int64_t kv_dim_;  // n_kv_head * head_dim
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
  // Activation rows quantized for the integer matmuls (KernelTable::act_format), one buffer per format, and
  // what they were made from (nullptr: nothing valid).
  struct ActRows {
    std::vector<uint8_t> rows;
    const float* x = nullptr;
    int64_t ldx = 0, n_in = 0, n = 0;
  };
  ActRows act_[kActFormats];
  static uint8_t* aligned_rows(ActRows& a);
};

}  // namespace adainfer
