// The plumbing every CPU implementation of the block API shares, whatever the architecture: the residual stream of
// the batch, the K/V caches, the thread pool and matmul runner, the row ops (read/write/move_hidden), the K/V scatter
// into the caches, the attention over row runs, and the head / logit lens (an architecture names the head's input
// and matrix; the rest is here). An architecture's blocks (llama_blocks.h, opt_blocks.h) derive from CpuBlocks and
// implement embed, attention_block, fill_kv, mlp_block and head_input.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "blocks/block_common.h"
#include "blocks/blocks.h"
#include "core/kernels.h"
#include "core/thread_pool.h"

namespace adainfer {

// What a context asks of its blocks: sequences (KV cache slots), positions per sequence, rows per call, threads.
struct BlocksShape {
  int64_t n_seq = 1;
  int64_t n_ctx = 0;
  int64_t n_batch = 0;
  int n_threads = 1;
};

// Sizes the shared buffers need from the architecture.
struct CpuBlocksDims {
  int64_t n_layer = 0;
  int64_t n_embd = 0;   // residual width
  int64_t kv_dim = 0;   // floats of one position's K (and V) in the cache of one layer
  int64_t n_vocab = 0;
};

class CpuBlocks : public Blocks {
 public:
  const char* backend() const override { return "cpu"; }
  int64_t n_embd() const override { return d_; }
  int64_t n_batch() const override { return n_batch_; }
  int64_t n_seq() const { return n_seq_; }
  int64_t n_ctx() const { return n_ctx_; }
  int n_threads() const { return pool_.size(); }
  const KernelTable& kernels() const { return k_; }

  // logits = head matrix · head_input(row), written to the host buffer.
  void head(int64_t row) final;
  // head_input of the n rows, then one matmul of n rows (2..16 rows take the few-row kernels: one weight read).
  void head_rows(int64_t row0, int64_t n, float* dst) final;
  void logit_lens(int64_t row, int64_t k) final;
  // One head row per candidate, written at its own index of logits.
  void logit_lens_candidates(int64_t row, int64_t m, int64_t k) final;
  void sync_logits() final {}  // the head writes the host buffer directly
  void read_hidden(int64_t row0, int64_t n, float* dst) final;
  void write_hidden(int64_t row0, int64_t n, const float* src) final;
  void move_hidden(int64_t dst_row, int64_t src_row, int64_t n) final;
  bool computes_exit_statistics() const final { return true; }
  void set_attention_statistics(bool on) final { attention_stats_on_ = on; }
  void exit_statistics(int64_t row, bool first_check) final;
  // The residual stream itself (tests).
  const float* hidden() const { return hidden_.data(); }

 protected:
  // Throws INVALID_OPTION unless the shape is positive.
  CpuBlocks(const CpuBlocksDims& dims, const BlocksShape& shape, const KernelTable& kernels, const HostBuffers& io);

  // The input of the head for rows [row0, row0 + n) (final norm and whatever the architecture applies; checks the
  // rows): n consecutive rows of head_matrix().ne0 floats. And the matrix that turns one into logits ([ne0] -> [n_vocab]).
  virtual const float* head_input(int64_t row0, int64_t n) = 0;
  virtual const WeightView& head_matrix() const = 0;

  // y = W x for n rows. same_input: x holds the very rows of the previous matmul call (same pointer, shape and
  // contents), so activation rows already quantized for an integer matmul are reused (K/V/Q, gate/up).
  void matmul(const WeightView& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy,
              bool same_input = false) {
    mm_(w, x, ldx, n, y, ldy, same_input);
  }
  // y[t] += bias for rows t < n of `width` floats.
  void add_rows(float* y, const float* bias, int64_t n, int64_t width) {
    for (int64_t t = 0; t < n; ++t) k_.add(y + t * width, bias, width);
  }
  // The checks of a block call that writes the cache: layer, row count, every row's sequence and position.
  void check_cache_rows(int64_t layer, int64_t n) const {
    check_layer(layer, dims_.n_layer);
    check_rows(n, n_batch_);
    check_row_positions(io_, n, n_seq_, n_ctx_);
  }
  // Copies the K and V rows of the n rows ([n][kv_dim] each) to their sequence's position in layer l's caches.
  void scatter_kv(int64_t layer, const float* k_rows, const float* v_rows, int64_t n) {
    for (int64_t t = 0; t < n; ++t) store_kv_row(layer, t, k_rows + t * dims_.kv_dim, v_rows + t * dims_.kv_dim);
  }
  // The same for row t alone (an architecture that finishes K row by row stores each while it is in cache).
  void store_kv_row(int64_t layer, int64_t t, const float* k, const float* v) {
    const int64_t kv = dims_.kv_dim, seq = io_.row_seq[t], pos = io_.row_pos[t];
    std::memcpy(k_cache_at(layer, seq) + pos * kv, k, static_cast<size_t>(kv) * sizeof(float));
    std::memcpy(v_cache_at(layer, seq) + pos * kv, v, static_cast<size_t>(kv) * sizeof(float));
  }
  // Causal attention of rows [0, n) over layer l's caches (attention_rows in block_common.h).
  // With attention statistics on, the kernels also keep those of each run's last row (set_attention_statistics).
  void attend(int64_t layer, int64_t n, int64_t n_head, int64_t n_kv_head, int64_t head_dim, const float* q, float* out);
  float* k_cache_at(int64_t layer, int64_t seq) { return k_cache_.data() + ((layer * n_seq_ + seq) * n_ctx_) * dims_.kv_dim; }
  float* v_cache_at(int64_t layer, int64_t seq) { return v_cache_.data() + ((layer * n_seq_ + seq) * n_ctx_) * dims_.kv_dim; }
  // A residual row of the batch.
  float* hidden_row(int64_t t) { return hidden_.data() + t * d_; }

  const KernelTable& k_;
  const CpuBlocksDims dims_;
  const int64_t d_;  // n_embd
  const int64_t n_seq_, n_ctx_, n_batch_;
  ThreadPool pool_;
  HostBuffers io_;
  MatmulRunner mm_;
  std::vector<float> hidden_;   // [n_batch][n_embd]  residual stream of the batch
  std::vector<float> k_cache_;  // [n_layer][n_seq][n_ctx][kv_dim]
  std::vector<float> v_cache_;  // [n_layer][n_seq][n_ctx][kv_dim]

 private:
  std::vector<int64_t> runs_;     // [n_batch + 1] starts of row runs (same sequence, consecutive positions)
  std::vector<float> scratch_;    // [n_threads][n_ctx] attention scores
  std::vector<int32_t> top_ids_;  // [max(lens_k, 2)] logit-lens top-k, best first
  // Exit statistics (exit_statistics): attention statistics of the last attention call, allocated when turned on.
  bool attention_stats_on_ = false;
  int64_t stats_heads_ = 0;             // n_head of the last attend() that kept statistics
  std::vector<float> head_stats_;       // [n_batch][n_head][2] entropy, self-weight (AttentionArgs::stats)
  std::vector<uint8_t> stats_kept_;     // [n_batch] 1 where the last attend() kept a row's statistics
  std::vector<float> hidden_before_;    // [n_seq][n_embd] each sequence's hidden state at its previous check
  std::vector<uint8_t> has_before_;     // [n_seq]
};

}  // namespace adainfer
