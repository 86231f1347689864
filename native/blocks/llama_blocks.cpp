#include "blocks/llama_blocks.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <cmath>

#include "core/ggml_types.h"
#include "cuda/cuda_backend.h"

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

LlamaHParams llama_hparams(const HParams& p) {
  LlamaHParams hp;
  hp.n_layer = p.integer("nLayer");
  hp.n_embd = p.integer("nEmbd");
  hp.n_head = p.integer("nHead");
  hp.n_kv_head = p.integer("nKvHead");
  hp.head_dim = p.integer("headDim");
  hp.n_ff = p.integer("nFf");
  hp.n_vocab = p.integer("nVocab");
  hp.n_rot = p.integer("nRot");
  hp.rms_eps = p.real("rmsEps");
  hp.rope_base = p.real("ropeBase");
  hp.rope_neox = p.flag("ropeNeox", false);
  return hp;
}

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
    if (hp.qkv_bias) {
      L.bq = t.vector(p + "attn_q.bias", q_dim);
      L.bk = t.vector(p + "attn_k.bias", kv_dim);
      L.bv = t.vector(p + "attn_v.bias", kv_dim);
    }
    if (hp.qk_norm) {
      L.q_norm = t.vector(p + "attn_q_norm.weight", hp.head_dim);
      L.k_norm = t.vector(p + "attn_k_norm.weight", hp.head_dim);
    }
    L.ffn_norm = t.vector(p + "ffn_norm.weight", hp.n_embd);
    L.w_gate = t.matrix(p + "ffn_gate.weight", hp.n_embd, hp.n_ff);
    L.w_up = t.matrix(p + "ffn_up.weight", hp.n_embd, hp.n_ff);
    L.w_down = t.matrix(p + "ffn_down.weight", hp.n_ff, hp.n_embd);
    w.layers.push_back(std::move(L));
  }
  w.files = std::move(files);
  return w;
}

std::unique_ptr<Blocks> llama_cpu_blocks(std::shared_ptr<const ModelWeights> weights, const BlocksShape& shape,
                                         const KernelTable& kernels, const HostBuffers& io) {
  return std::make_unique<LlamaState>(std::static_pointer_cast<const LlamaWeights>(std::move(weights)), shape.n_seq,
                                      shape.n_ctx, shape.n_batch, shape.n_threads, kernels, io);
}

std::shared_ptr<CudaWeights> llama_cuda_upload(std::shared_ptr<const ModelWeights> weights, int device) {
  return cuda_upload_weights(std::static_pointer_cast<const LlamaWeights>(std::move(weights)), device);
}

void rope_row(const LlamaHParams& hp, const float* freq_factors, float* x, int64_t n_heads, int64_t pos) {
  if (hp.rope_neox)
    rope_neox(x, n_heads, hp.head_dim, hp.n_rot, pos, hp.rope_base, freq_factors);
  else
    rope_llama(x, n_heads, hp.head_dim, hp.n_rot, pos, hp.rope_base, freq_factors);
}

namespace {

CpuBlocksDims dims_of(const LlamaWeights& w) {
  CpuBlocksDims d;
  d.n_layer = w.hp.n_layer;
  d.n_embd = w.hp.n_embd;
  d.kv_dim = w.hp.n_kv_head * w.hp.head_dim;
  d.n_vocab = w.hp.n_vocab;
  return d;
}

}  // namespace

LlamaState::LlamaState(std::shared_ptr<const LlamaWeights> weights, int64_t n_seq, int64_t n_ctx, int64_t n_batch,
                       int n_threads, const KernelTable& kernels, const HostBuffers& io)
    : CpuBlocks(dims_of(*weights), BlocksShape{n_seq, n_ctx, n_batch, n_threads}, kernels, io), w_(std::move(weights)) {
  const LlamaHParams& hp = w_->hp;
  q_dim_ = hp.n_head * hp.head_dim;
  kv_dim_ = hp.n_kv_head * hp.head_dim;
  xb_.assign(static_cast<size_t>(n_batch) * std::max(hp.n_embd, q_dim_), 0.f);
  q_.assign(static_cast<size_t>(n_batch) * q_dim_, 0.f);
  k_new_.assign(static_cast<size_t>(n_batch) * kv_dim_, 0.f);
  v_new_.assign(static_cast<size_t>(n_batch) * kv_dim_, 0.f);
  att_.assign(static_cast<size_t>(n_batch) * q_dim_, 0.f);
  gate_.assign(static_cast<size_t>(n_batch) * hp.n_ff, 0.f);
  up_.assign(static_cast<size_t>(n_batch) * hp.n_ff, 0.f);
}

void LlamaState::rms_norm_rows(const float* x, const float* weight, float* out, int64_t n) {
  const int64_t d = w_->hp.n_embd;
  for (int64_t t = 0; t < n; ++t) k_.rms_norm(x + t * d, weight, out + t * d, d, w_->hp.rms_eps);
}

void LlamaState::head_norm_rows(float* x, const std::vector<float>& w, int64_t n_heads, int64_t n) {
  const int64_t hd = w_->hp.head_dim;
  for (int64_t i = 0, e = n * n_heads; i < e; ++i) k_.rms_norm(x + i * hd, w.data(), x + i * hd, hd, w_->hp.rms_eps);
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
                           hidden_row(t), hp.n_embd);
  }
}

void LlamaState::norm_and_write_kv(int64_t layer, int64_t n) {
  const LlamaHParams& hp = w_->hp;
  const LlamaLayer& L = w_->layers[layer];
  const int64_t d = hp.n_embd;
  rms_norm_rows(hidden_.data(), L.attn_norm.data(), xb_.data(), n);
  matmul(L.wk, xb_.data(), d, n, k_new_.data(), kv_dim_);
  matmul(L.wv, xb_.data(), d, n, v_new_.data(), kv_dim_, /*same_input=*/true);
  if (!L.bk.empty()) {
    add_rows(k_new_.data(), L.bk.data(), n, kv_dim_);
    add_rows(v_new_.data(), L.bv.data(), n, kv_dim_);
  }
  if (!L.k_norm.empty()) head_norm_rows(k_new_.data(), L.k_norm, hp.n_kv_head, n);
  const float* ff = w_->rope_freqs.empty() ? nullptr : w_->rope_freqs.data();
  for (int64_t t = 0; t < n; ++t) {
    float* k = k_new_.data() + t * kv_dim_;
    rope_row(hp, ff, k, hp.n_kv_head, io_.row_pos[t]);
    store_kv_row(layer, t, k, v_new_.data() + t * kv_dim_);
  }
}

void LlamaState::fill_kv(int64_t layer, int64_t n) {
  check_cache_rows(layer, n);
  norm_and_write_kv(layer, n);
}

void LlamaState::attention_block(int64_t layer, int64_t n) {
  check_cache_rows(layer, n);
  const LlamaHParams& hp = w_->hp;
  const LlamaLayer& L = w_->layers[layer];
  const int64_t d = hp.n_embd;

  norm_and_write_kv(layer, n);
  matmul(L.wq, xb_.data(), d, n, q_.data(), q_dim_, /*same_input=*/true);
  if (!L.bq.empty()) add_rows(q_.data(), L.bq.data(), n, q_dim_);
  if (!L.q_norm.empty()) head_norm_rows(q_.data(), L.q_norm, hp.n_head, n);
  const float* ff = w_->rope_freqs.empty() ? nullptr : w_->rope_freqs.data();
  for (int64_t t = 0; t < n; ++t)
    rope_row(hp, ff, q_.data() + t * q_dim_, hp.n_head, io_.row_pos[t]);

  attend(layer, n, hp.n_head, hp.n_kv_head, hp.head_dim, q_.data(), att_.data());

  matmul(L.wo, att_.data(), q_dim_, n, xb_.data(), d);
  for (int64_t t = 0; t < n; ++t) k_.add(hidden_row(t), xb_.data() + t * d, d);
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
  for (int64_t t = 0; t < n; ++t) k_.add(hidden_row(t), xb_.data() + t * d, d);
}

const float* LlamaState::head_input(int64_t row0, int64_t n) {
  check_row_range(row0, n);
  const int64_t d = w_->hp.n_embd;
  for (int64_t t = 0; t < n; ++t) k_.rms_norm(hidden_row(row0 + t), w_->output_norm.data(), xb_.data() + t * d, d, w_->hp.rms_eps);
  return xb_.data();
}

}  // namespace adainfer
