#include "blocks/cpu_blocks.h"

#include <algorithm>
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

}  // namespace adainfer
