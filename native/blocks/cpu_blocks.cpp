#include "blocks/cpu_blocks.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

namespace adainfer {

namespace {

const BlocksShape& checked(const BlocksShape& s) {
  if (s.n_seq <= 0 || s.n_ctx <= 0 || s.n_batch <= 0)
    throw ModelError("INVALID_OPTION", "sequences, context size and batch size must be positive");
  return s;
}

}  // namespace

CpuBlocks::CpuBlocks(const CpuBlocksDims& dims, const BlocksShape& shape, const KernelTable& kernels,
                     const HostBuffers& io)
    : k_(kernels), dims_(dims), d_(dims.n_embd), n_seq_(checked(shape).n_seq), n_ctx_(shape.n_ctx),
      n_batch_(shape.n_batch), pool_(shape.n_threads), io_(io), mm_(pool_, kernels) {
  const size_t cache = static_cast<size_t>(dims.n_layer) * n_seq_ * n_ctx_ * dims.kv_dim;
  hidden_.assign(static_cast<size_t>(n_batch_) * d_, 0.f);
  k_cache_.assign(cache, 0.f);
  v_cache_.assign(cache, 0.f);
  runs_.assign(static_cast<size_t>(n_batch_) + 1, 0);
  scratch_.assign(static_cast<size_t>(pool_.size()) * n_ctx_, 0.f);
  top_ids_.assign(static_cast<size_t>(std::max<int64_t>(io_.lens_k, 2)), 0);
}

void CpuBlocks::head(int64_t row) {
  check_row(row, n_batch_);
  const float* x = head_input(row, 1);
  const WeightView& w = head_matrix();
  matmul(w, x, w.ne0, 1, io_.logits, dims_.n_vocab);
}

void CpuBlocks::head_rows(int64_t row0, int64_t n, float* dst) {
  check_row_range(row0, n);
  if (n == 0) return;
  const float* x = head_input(row0, n);
  const WeightView& w = head_matrix();
  matmul(w, x, w.ne0, n, dst, dims_.n_vocab);
}

void CpuBlocks::logit_lens(int64_t row, int64_t k) {
  check_top_k(k, io_);
  head(row);
  lens_statistics(io_, nullptr, dims_.n_vocab, k, top_ids_.data());
}

void CpuBlocks::logit_lens_candidates(int64_t row, int64_t m, int64_t k) {
  check_row(row, n_batch_);
  check_top_k(k, io_);
  check_candidates(io_, m, dims_.n_vocab);
  const float* x = head_input(row, 1);
  const WeightView& w = head_matrix();
  // One head row per candidate, written at its own index of logits (the matmul writes columns [id, id+1)).
  MatmulFn fn = k_.matmul[w.type];
  for (int64_t i = 0; i < m; ++i) {
    const int32_t id = io_.lens_candidates[i];
    fn(w.data, w.ne0, x, w.ne0, 1, io_.logits, dims_.n_vocab, id, id + 1);
  }
  lens_statistics(io_, io_.lens_candidates, m, k, top_ids_.data());
}

void CpuBlocks::read_hidden(int64_t row0, int64_t n, float* dst) {
  check_row_range(row0, n);
  std::memcpy(dst, hidden_.data() + row0 * d_, static_cast<size_t>(n * d_) * sizeof(float));
}

void CpuBlocks::write_hidden(int64_t row0, int64_t n, const float* src) {
  check_row_range(row0, n);
  std::memcpy(hidden_.data() + row0 * d_, src, static_cast<size_t>(n * d_) * sizeof(float));
}

void CpuBlocks::move_hidden(int64_t dst_row, int64_t src_row, int64_t n) {
  check_row_range(dst_row, n);
  check_row_range(src_row, n);
  std::memmove(hidden_.data() + dst_row * d_, hidden_.data() + src_row * d_, static_cast<size_t>(n * d_) * sizeof(float));
}

void CpuBlocks::attend(int64_t layer, int64_t n, int64_t n_head, int64_t n_kv_head, int64_t head_dim, const float* q,
                       float* out) {
  float* head_stats = nullptr;
  if (attention_stats_on_) {
    const size_t size = static_cast<size_t>(n_batch_) * n_head * 2;
    if (head_stats_.size() < size) head_stats_.assign(size, 0.f);
    stats_kept_.assign(static_cast<size_t>(n_batch_), 0);
    stats_heads_ = n_head;
    head_stats = head_stats_.data();
  } else if (!stats_kept_.empty()) {
    stats_kept_.assign(stats_kept_.size(), 0);
  }
  const int64_t n_runs = attention_rows(pool_, k_, io_, n, n_head, n_kv_head, head_dim, q, out, k_cache_at(layer, 0),
                                        v_cache_at(layer, 0), n_ctx_, runs_.data(), scratch_.data(), head_stats);
  if (head_stats != nullptr)
    for (int64_t r = 1; r <= n_runs; ++r) stats_kept_[static_cast<size_t>(runs_[r] - 1)] = 1;
}

void CpuBlocks::exit_statistics(int64_t row, bool first_check) {
  check_row(row, n_batch_);
  const int64_t seq = io_.row_seq[row];
  if (seq < 0 || seq >= n_seq_)
    throw std::out_of_range("row " + std::to_string(row) + ": sequence " + std::to_string(seq) + " out of range [0, " +
                            std::to_string(n_seq_) + ")");
  float* stats = io_.exit_stats;
  if (!stats_kept_.empty() && stats_kept_[static_cast<size_t>(row)]) {
    const float* h = head_stats_.data() + row * stats_heads_ * 2;
    const int64_t n_pos = static_cast<int64_t>(io_.row_pos[row]) + 1;
    const double log_positions = n_pos > 1 ? std::log(static_cast<double>(n_pos)) : 0.0;
    double entropy = 0.0, self = 0.0;
    for (int64_t i = 0; i < stats_heads_; ++i) {
      entropy += h[2 * i];
      self += h[2 * i + 1];
    }
    stats[0] = log_positions > 0.0 ? static_cast<float>(entropy / stats_heads_ / log_positions) : 0.f;
    stats[1] = static_cast<float>(self / stats_heads_);
  } else {
    stats[0] = stats[1] = std::nanf("");
  }
  if (hidden_before_.empty()) {
    hidden_before_.assign(static_cast<size_t>(n_seq_) * d_, 0.f);
    has_before_.assign(static_cast<size_t>(n_seq_), 0);
  }
  float* before = hidden_before_.data() + seq * d_;
  const float* now = hidden_row(row);
  if (first_check || !has_before_[static_cast<size_t>(seq)]) {
    stats[2] = 1.f;
    stats[3] = 0.f;
  } else {
    hidden_change(now, before, d_, &stats[2], &stats[3]);
  }
  std::memcpy(before, now, static_cast<size_t>(d_) * sizeof(float));
  has_before_[static_cast<size_t>(seq)] = 1;
}

}  // namespace adainfer
