#include "blocks/llama_blocks.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <cmath>

#include "core/ggml_types.h"

namespace adainfer {

namespace {

void check_hparams(const LlamaHParams& hp) {
  auto positive = [](int64_t v, const char* what) {
    if (v <= 0 || v > (int64_t(1) << 31)) throw ModelError("SHAPE_MISMATCH", std::string("hyper-parameter ") + what + " = " + std::to_string(v) + " is out of range");
  };
  positive(hp.n_layer, "block_count");
  positive(hp.n_embd, "embedding_length");
  positive(hp.n_head, "attention.head_count");
  positive(hp.n_kv_head, "attention.head_count_kv");
  positive(hp.head_dim, "head dimension");
  positive(hp.n_ff, "feed_forward_length");
  positive(hp.n_vocab, "vocabulary size");
  if (hp.n_head % hp.n_kv_head != 0)
    throw ModelError("SHAPE_MISMATCH", "head_count " + std::to_string(hp.n_head) + " is not a multiple of head_count_kv " +
                                           std::to_string(hp.n_kv_head));
  if (hp.n_rot <= 0 || hp.n_rot > hp.head_dim || hp.n_rot % 2 != 0)
    throw ModelError("SHAPE_MISMATCH", "rope.dimension_count " + std::to_string(hp.n_rot) +
                                           " must be even and at most the head dimension " + std::to_string(hp.head_dim));
  if (!(hp.rms_eps > 0.f) || !(hp.rope_base > 0.f))
    throw ModelError("SHAPE_MISMATCH", "rms epsilon and rope base must be positive");
}

}  // namespace

LlamaWeights load_llama_weights(std::vector<std::shared_ptr<MappedFile>> files, const LlamaHParams& hp,
                                const std::vector<TensorSpec>& tensors, const KernelTable& kernels) {
  check_hparams(hp);
  if (files.empty()) throw ModelError("INVALID_OPTION", "no model file");
  for (const auto& f : files)
    if (!f) throw ModelError("INVALID_OPTION", "a model file is missing");
  TensorTable t(files, tensors, kernels);
  const int64_t q_dim = hp.n_head * hp.head_dim;
  const int64_t kv_dim = hp.n_kv_head * hp.head_dim;

  LlamaWeights w;
  w.hp = hp;
  w.tok_embd = t.matrix("token_embd.weight", hp.n_embd, hp.n_vocab);
  w.output_norm = t.vector("output_norm.weight", hp.n_embd);
  // Tied embeddings: models trained with a shared input/output matrix store only token_embd.
  w.output = t.has("output.weight") ? t.matrix("output.weight", hp.n_embd, hp.n_vocab) : w.tok_embd;
  if (t.has("rope_freqs.weight")) w.rope_freqs = t.vector("rope_freqs.weight", hp.n_rot / 2);
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LlamaLayer L;
    L.attn_norm = t.vector(p + "attn_norm.weight", hp.n_embd);
    L.wq = t.matrix(p + "attn_q.weight", hp.n_embd, q_dim);
    L.wk = t.matrix(p + "attn_k.weight", hp.n_embd, kv_dim);
    L.wv = t.matrix(p + "attn_v.weight", hp.n_embd, kv_dim);
    L.wo = t.matrix(p + "attn_output.weight", q_dim, hp.n_embd);
    L.ffn_norm = t.vector(p + "ffn_norm.weight", hp.n_embd);
    L.w_gate = t.matrix(p + "ffn_gate.weight", hp.n_embd, hp.n_ff);
    L.w_up = t.matrix(p + "ffn_up.weight", hp.n_embd, hp.n_ff);
    L.w_down = t.matrix(p + "ffn_down.weight", hp.n_ff, hp.n_embd);
    w.layers.push_back(std::move(L));
  }
  w.files = std::move(files);
  return w;
}

void rope_row(const LlamaHParams& hp, const float* freq_factors, float* x, int64_t n_heads, int64_t pos) {
  if (hp.rope_neox)
    rope_neox(x, n_heads, hp.head_dim, hp.n_rot, pos, hp.rope_base, freq_factors);
  else
    rope_llama(x, n_heads, hp.head_dim, hp.n_rot, pos, hp.rope_base, freq_factors);
}

LlamaState::LlamaState(std::shared_ptr<const LlamaWeights> weights, int64_t n_seq, int64_t n_ctx, int64_t n_batch,
                       int n_threads, const KernelTable& kernels, const HostBuffers& io)
    : w_(std::move(weights)), k_(kernels), n_seq_(n_seq), n_ctx_(n_ctx), n_batch_(n_batch), pool_(n_threads), io_(io),
      mm_(pool_, kernels) {
  const LlamaHParams& hp = w_->hp;
  if (n_seq <= 0 || n_ctx <= 0 || n_batch <= 0)
    throw ModelError("INVALID_OPTION", "sequences, context size and batch size must be positive");
  q_dim_ = hp.n_head * hp.head_dim;
  kv_dim_ = hp.n_kv_head * hp.head_dim;
  const size_t cache = static_cast<size_t>(hp.n_layer) * n_seq * n_ctx * kv_dim_;
  hidden_.assign(static_cast<size_t>(n_batch) * hp.n_embd, 0.f);
  k_cache_.assign(cache, 0.f);
  v_cache_.assign(cache, 0.f);
  xb_.assign(static_cast<size_t>(n_batch) * std::max(hp.n_embd, q_dim_), 0.f);
  q_.assign(static_cast<size_t>(n_batch) * q_dim_, 0.f);
  k_new_.assign(static_cast<size_t>(n_batch) * kv_dim_, 0.f);
  v_new_.assign(static_cast<size_t>(n_batch) * kv_dim_, 0.f);
  runs_.assign(static_cast<size_t>(n_batch) + 1, 0);
  att_.assign(static_cast<size_t>(n_batch) * q_dim_, 0.f);
  gate_.assign(static_cast<size_t>(n_batch) * hp.n_ff, 0.f);
  up_.assign(static_cast<size_t>(n_batch) * hp.n_ff, 0.f);
  scratch_.assign(static_cast<size_t>(pool_.size()) * n_ctx, 0.f);
  top_ids_.assign(static_cast<size_t>(std::max<int64_t>(io_.lens_k, 2)), 0);
}

void LlamaState::rms_norm_rows(const float* x, const float* weight, float* out, int64_t n) {
  const int64_t d = w_->hp.n_embd;
  for (int64_t t = 0; t < n; ++t) k_.rms_norm(x + t * d, weight, out + t * d, d, w_->hp.rms_eps);
}

void LlamaState::embed(int64_t n) {
  check_rows(n, n_batch_);
  const LlamaHParams& hp = w_->hp;
  const WeightView& e = w_->tok_embd;
  for (int64_t t = 0; t < n; ++t) {
    const int32_t id = io_.tokens[t];
    if (id < 0 || id >= hp.n_vocab)
      throw std::out_of_range("token id " + std::to_string(id) + " out of range [0, " + std::to_string(hp.n_vocab) + ")");
    k_.dequant_row[e.type](static_cast<const uint8_t*>(e.data) + static_cast<size_t>(id) * e.row_bytes,
                           hidden_.data() + t * hp.n_embd, hp.n_embd);
  }
}

void LlamaState::norm_and_write_kv(int64_t layer, int64_t n) {
  const LlamaHParams& hp = w_->hp;
  const LlamaLayer& L = w_->layers[layer];
  const int64_t d = hp.n_embd;
  rms_norm_rows(hidden_.data(), L.attn_norm.data(), xb_.data(), n);
  matmul(L.wk, xb_.data(), d, n, k_new_.data(), kv_dim_);
  matmul(L.wv, xb_.data(), d, n, v_new_.data(), kv_dim_, /*same_input=*/true);
  const float* ff = w_->rope_freqs.empty() ? nullptr : w_->rope_freqs.data();
  const size_t row_bytes = static_cast<size_t>(kv_dim_) * sizeof(float);
  for (int64_t t = 0; t < n; ++t) {
    const int64_t seq = io_.row_seq[t], pos = io_.row_pos[t];
    float* k = k_new_.data() + t * kv_dim_;
    rope_row(hp, ff, k, hp.n_kv_head, pos);
    std::memcpy(k_cache_at(layer, seq) + pos * kv_dim_, k, row_bytes);
    std::memcpy(v_cache_at(layer, seq) + pos * kv_dim_, v_new_.data() + t * kv_dim_, row_bytes);
  }
}

void LlamaState::fill_kv(int64_t layer, int64_t n) {
  check_layer(layer, w_->hp.n_layer);
  check_rows(n, n_batch_);
  check_row_positions(io_, n, n_seq_, n_ctx_);
  norm_and_write_kv(layer, n);
}

void LlamaState::attention_block(int64_t layer, int64_t n) {
  check_layer(layer, w_->hp.n_layer);
  check_rows(n, n_batch_);
  check_row_positions(io_, n, n_seq_, n_ctx_);
  const LlamaHParams& hp = w_->hp;
  const LlamaLayer& L = w_->layers[layer];
  const int64_t d = hp.n_embd;

  norm_and_write_kv(layer, n);
  matmul(L.wq, xb_.data(), d, n, q_.data(), q_dim_, /*same_input=*/true);
  const float* ff = w_->rope_freqs.empty() ? nullptr : w_->rope_freqs.data();
  for (int64_t t = 0; t < n; ++t)
    rope_row(hp, ff, q_.data() + t * q_dim_, hp.n_head, io_.row_pos[t]);

  attention_rows(pool_, k_, io_, n, hp.n_head, hp.n_kv_head, hp.head_dim, q_.data(), att_.data(), k_cache_at(layer, 0),
                 v_cache_at(layer, 0), n_ctx_, runs_.data(), scratch_.data());

  matmul(L.wo, att_.data(), q_dim_, n, xb_.data(), d);
  for (int64_t t = 0; t < n; ++t) k_.add(hidden_.data() + t * d, xb_.data() + t * d, d);
}

void LlamaState::mlp_block(int64_t layer, int64_t n) {
  check_layer(layer, w_->hp.n_layer);
  check_rows(n, n_batch_);
  const LlamaHParams& hp = w_->hp;
  const LlamaLayer& L = w_->layers[layer];
  const int64_t d = hp.n_embd;
  rms_norm_rows(hidden_.data(), L.ffn_norm.data(), xb_.data(), n);
  matmul(L.w_gate, xb_.data(), d, n, gate_.data(), hp.n_ff);
  matmul(L.w_up, xb_.data(), d, n, up_.data(), hp.n_ff, /*same_input=*/true);
  for (int64_t t = 0; t < n; ++t) k_.swiglu(gate_.data() + t * hp.n_ff, up_.data() + t * hp.n_ff, hp.n_ff);
  matmul(L.w_down, gate_.data(), hp.n_ff, n, xb_.data(), d);
  for (int64_t t = 0; t < n; ++t) k_.add(hidden_.data() + t * d, xb_.data() + t * d, d);
}

void LlamaState::read_hidden(int64_t row0, int64_t n, float* dst) {
  check_row_range(row0, n);
  const int64_t d = w_->hp.n_embd;
  std::memcpy(dst, hidden_.data() + row0 * d, static_cast<size_t>(n * d) * sizeof(float));
}

void LlamaState::write_hidden(int64_t row0, int64_t n, const float* src) {
  check_row_range(row0, n);
  const int64_t d = w_->hp.n_embd;
  std::memcpy(hidden_.data() + row0 * d, src, static_cast<size_t>(n * d) * sizeof(float));
}

void LlamaState::move_hidden(int64_t dst_row, int64_t src_row, int64_t n) {
  check_row_range(dst_row, n);
  check_row_range(src_row, n);
  const int64_t d = w_->hp.n_embd;
  std::memmove(hidden_.data() + dst_row * d, hidden_.data() + src_row * d, static_cast<size_t>(n * d) * sizeof(float));
}

void LlamaState::head(int64_t row) {
  check_row(row, n_batch_);
  const int64_t d = w_->hp.n_embd;
  k_.rms_norm(hidden_.data() + row * d, w_->output_norm.data(), xb_.data(), d, w_->hp.rms_eps);
  matmul(w_->output, xb_.data(), d, 1, io_.logits, w_->hp.n_vocab);
}

void LlamaState::logit_lens(int64_t row, int64_t k) {
  check_top_k(k, io_);
  head(row);
  lens_statistics(nullptr, w_->hp.n_vocab, k);
}

void LlamaState::logit_lens_candidates(int64_t row, int64_t m, int64_t k) {
  check_row(row, n_batch_);
  check_top_k(k, io_);
  check_candidates(io_, m, w_->hp.n_vocab);
  const int64_t V = w_->hp.n_vocab;
  const int64_t d = w_->hp.n_embd;
  k_.rms_norm(hidden_.data() + row * d, w_->output_norm.data(), xb_.data(), d, w_->hp.rms_eps);
  // One head row per candidate, written at its own index of logits (the matmul writes columns [id, id+1)).
  MatmulFn fn = k_.matmul[w_->output.type];
  for (int64_t i = 0; i < m; ++i) {
    const int32_t id = io_.lens_candidates[i];
    fn(w_->output.data, d, xb_.data(), d, 1, io_.logits, V, id, id + 1);
  }
  lens_statistics(io_.lens_candidates, m, k);
}

}  // namespace adainfer
