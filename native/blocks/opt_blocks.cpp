#include "blocks/opt_blocks.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace adainfer {

namespace {

void check_hparams(const OptHParams& hp) {
  auto positive = [](int64_t v, const char* what) {
    if (v <= 0 || v > (int64_t(1) << 31))
      throw ModelError("SHAPE_MISMATCH", std::string("hyper-parameter ") + what + " = " + std::to_string(v) + " is out of range");
  };
  positive(hp.n_layer, "num_hidden_layers");
  positive(hp.n_embd, "hidden_size");
  positive(hp.n_embd_in, "word_embed_proj_dim");
  positive(hp.n_head, "num_attention_heads");
  positive(hp.head_dim, "head dimension");
  positive(hp.n_ff, "ffn_dim");
  positive(hp.n_vocab, "vocab_size");
  positive(hp.n_pos, "position embeddings");
  if (hp.n_head * hp.head_dim != hp.n_embd)
    throw ModelError("SHAPE_MISMATCH", "num_attention_heads " + std::to_string(hp.n_head) + " x head dimension " +
                                           std::to_string(hp.head_dim) + " is not hidden_size " + std::to_string(hp.n_embd));
  if (hp.pos_offset < 0 || hp.pos_offset >= hp.n_pos)
    throw ModelError("SHAPE_MISMATCH", "position offset " + std::to_string(hp.pos_offset) + " is out of range");
  if (!(hp.ln_eps > 0.f)) throw ModelError("SHAPE_MISMATCH", "layer norm epsilon must be positive");
}

}  // namespace

OptWeights load_opt_weights(std::vector<std::shared_ptr<MappedFile>> files, const OptHParams& hp,
                            const std::vector<TensorSpec>& tensors, const KernelTable& kernels) {
  check_hparams(hp);
  if (files.empty()) throw ModelError("INVALID_OPTION", "no model file");
  for (const auto& f : files)
    if (!f) throw ModelError("INVALID_OPTION", "a model file is missing");
  TensorTable t(files, tensors, kernels);
  const int64_t d = hp.n_embd;
  OptWeights w;
  w.hp = hp;
  w.tok_embd = t.matrix("token_embd.weight", hp.n_embd_in, hp.n_vocab);
  w.pos_embd = t.matrix("position_embd.weight", d, hp.n_pos);
  if (hp.n_embd_in != d) {
    w.project_in = t.matrix("project_in.weight", hp.n_embd_in, d);
    w.project_out = t.matrix("project_out.weight", d, hp.n_embd_in);
  }
  if (hp.final_ln) {
    w.output_norm_w = t.vector("output_norm.weight", d);
    w.output_norm_b = t.vector("output_norm.bias", d);
  }
  auto bias = [&](const std::string& name, int64_t n) { return hp.bias ? t.vector(name, n) : std::vector<float>(); };
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    OptLayer L;
    L.attn_norm_w = t.vector(p + "attn_norm.weight", d);
    L.attn_norm_b = t.vector(p + "attn_norm.bias", d);
    L.wq = t.matrix(p + "attn_q.weight", d, d);
    L.wk = t.matrix(p + "attn_k.weight", d, d);
    L.wv = t.matrix(p + "attn_v.weight", d, d);
    L.wo = t.matrix(p + "attn_output.weight", d, d);
    L.bq = bias(p + "attn_q.bias", d);
    L.bk = bias(p + "attn_k.bias", d);
    L.bv = bias(p + "attn_v.bias", d);
    L.bo = bias(p + "attn_output.bias", d);
    L.ffn_norm_w = t.vector(p + "ffn_norm.weight", d);
    L.ffn_norm_b = t.vector(p + "ffn_norm.bias", d);
    L.w_up = t.matrix(p + "ffn_up.weight", d, hp.n_ff);
    L.b_up = bias(p + "ffn_up.bias", hp.n_ff);
    L.w_down = t.matrix(p + "ffn_down.weight", hp.n_ff, d);
    L.b_down = bias(p + "ffn_down.bias", d);
    w.layers.push_back(std::move(L));
  }
  w.files = std::move(files);
  return w;
}

namespace {

CpuBlocksDims dims_of(const OptWeights& w) {
  CpuBlocksDims d;
  d.n_layer = w.hp.n_layer;
  d.n_embd = w.hp.n_embd;
  d.kv_dim = w.hp.n_embd;  // as many K/V heads as query heads
  d.n_vocab = w.hp.n_vocab;
  return d;
}

}  // namespace

OptHParams opt_hparams(const HParams& p) {
  OptHParams hp;
  hp.n_layer = p.integer("nLayer");
  hp.n_embd = p.integer("nEmbd");
  hp.n_head = p.integer("nHead");
  hp.head_dim = p.integer("headDim");
  hp.n_ff = p.integer("nFf");
  hp.n_vocab = p.integer("nVocab");
  hp.n_embd_in = p.integer("opt.embedDim");
  hp.n_pos = p.integer("opt.nPos");
  hp.pos_offset = p.integer("opt.posOffset");
  hp.pre_ln = p.flag("opt.preLayerNorm");
  hp.final_ln = p.flag("opt.finalLayerNorm");
  hp.bias = p.flag("opt.bias");
  hp.ln_eps = p.real("opt.lnEps");
  return hp;
}

OptState::OptState(std::shared_ptr<const OptWeights> weights, int64_t n_seq, int64_t n_ctx, int64_t n_batch,
                   int n_threads, const KernelTable& kernels, const HostBuffers& io)
    : CpuBlocks(dims_of(*weights), BlocksShape{n_seq, n_ctx, n_batch, n_threads}, kernels, io), w_(std::move(weights)) {
  const OptHParams& hp = w_->hp;
  if (n_ctx > hp.n_pos - hp.pos_offset)
    throw ModelError("INVALID_OPTION", "context size " + std::to_string(n_ctx) + " exceeds the " +
                                           std::to_string(hp.n_pos - hp.pos_offset) +
                                           " positions this OPT model has embeddings for (max_position_embeddings)");
  const size_t rows = static_cast<size_t>(n_batch);
  xb_.assign(rows * std::max(d_, hp.n_embd_in), 0.f);
  emb_.assign(rows * hp.n_embd_in, 0.f);
  q_.assign(rows * d_, 0.f);
  k_new_.assign(rows * d_, 0.f);
  v_new_.assign(rows * d_, 0.f);
  att_.assign(rows * d_, 0.f);
  out_.assign(rows * d_, 0.f);
  up_.assign(rows * hp.n_ff, 0.f);
}

// nn.LayerNorm: (x - mean) / sqrt(var + eps) * w + b, biased variance; sums in double (rows are short).
void OptState::layer_norm_rows(const float* x, const std::vector<float>& w, const std::vector<float>& b, float* out,
                               int64_t n) {
  const int64_t d = d_;
  const double eps = w_->hp.ln_eps;
  for (int64_t t = 0; t < n; ++t) {
    const float* xr = x + t * d;
    float* o = out + t * d;
    double sum = 0;
    for (int64_t i = 0; i < d; ++i) sum += xr[i];
    const double mean = sum / d;
    double var = 0;
    for (int64_t i = 0; i < d; ++i) {
      const double c = xr[i] - mean;
      var += c * c;
    }
    const float inv = static_cast<float>(1.0 / std::sqrt(var / d + eps));
    const float m = static_cast<float>(mean);
    for (int64_t i = 0; i < d; ++i) o[i] = (xr[i] - m) * inv * w[i] + b[i];
  }
}

void OptState::embed(int64_t n) {
  check_rows(n, n_batch_);
  check_row_positions(io_, n, n_seq_, n_ctx_);
  const OptHParams& hp = w_->hp;
  const WeightView& e = w_->tok_embd;
  const WeightView& p = w_->pos_embd;
  const bool project = w_->project_in.data != nullptr;
  float* rows = project ? emb_.data() : hidden_.data();
  for (int64_t t = 0; t < n; ++t) {
    const int32_t id = io_.tokens[t];
    if (id < 0 || id >= hp.n_vocab)
      throw std::out_of_range("token id " + std::to_string(id) + " out of range [0, " + std::to_string(hp.n_vocab) + ")");
    k_.dequant_row[e.type](static_cast<const uint8_t*>(e.data) + static_cast<size_t>(id) * e.row_bytes,
                           rows + t * hp.n_embd_in, hp.n_embd_in);
  }
  if (project) mm_(w_->project_in, emb_.data(), hp.n_embd_in, n, hidden_.data(), d_);
  for (int64_t t = 0; t < n; ++t) {
    const int64_t row = io_.row_pos[t] + hp.pos_offset;  // < n_pos: n_ctx was checked against it
    k_.dequant_row[p.type](static_cast<const uint8_t*>(p.data) + static_cast<size_t>(row) * p.row_bytes, out_.data(), d_);
    k_.add(hidden_.data() + t * d_, out_.data(), d_);
  }
}

const float* OptState::attn_input(int64_t layer, int64_t n) {
  const OptLayer& L = w_->layers[layer];
  if (!w_->hp.pre_ln) return hidden_.data();
  layer_norm_rows(hidden_.data(), L.attn_norm_w, L.attn_norm_b, xb_.data(), n);
  return xb_.data();
}

void OptState::write_kv(int64_t layer, const float* x, int64_t n) {
  const OptLayer& L = w_->layers[layer];
  mm_(L.wk, x, d_, n, k_new_.data(), d_);
  mm_(L.wv, x, d_, n, v_new_.data(), d_, /*same_input=*/true);
  add_bias(k_new_.data(), L.bk, n, d_);
  add_bias(v_new_.data(), L.bv, n, d_);
  scatter_kv(layer, k_new_.data(), v_new_.data(), n);
}

void OptState::fill_kv(int64_t layer, int64_t n) {
  check_cache_rows(layer, n);
  write_kv(layer, attn_input(layer, n), n);
}

void OptState::attention_block(int64_t layer, int64_t n) {
  check_cache_rows(layer, n);
  const OptHParams& hp = w_->hp;
  const OptLayer& L = w_->layers[layer];
  const float* x = attn_input(layer, n);
  write_kv(layer, x, n);
  mm_(L.wq, x, d_, n, q_.data(), d_, /*same_input=*/true);
  add_bias(q_.data(), L.bq, n, d_);

  // OPT has as many K/V heads as query heads.
  attend(layer, n, hp.n_head, hp.n_head, hp.head_dim, q_.data(), att_.data());

  mm_(L.wo, att_.data(), d_, n, out_.data(), d_);
  add_bias(out_.data(), L.bo, n, d_);
  for (int64_t t = 0; t < n; ++t) k_.add(hidden_.data() + t * d_, out_.data() + t * d_, d_);
  if (!hp.pre_ln) layer_norm_rows(hidden_.data(), L.attn_norm_w, L.attn_norm_b, hidden_.data(), n);
}

void OptState::mlp_block(int64_t layer, int64_t n) {
  check_layer(layer, w_->hp.n_layer);
  check_rows(n, n_batch_);
  const OptHParams& hp = w_->hp;
  const OptLayer& L = w_->layers[layer];
  const float* x = hidden_.data();
  if (hp.pre_ln) {
    layer_norm_rows(hidden_.data(), L.ffn_norm_w, L.ffn_norm_b, xb_.data(), n);
    x = xb_.data();
  }
  mm_(L.w_up, x, d_, n, up_.data(), hp.n_ff);
  add_bias(up_.data(), L.b_up, n, hp.n_ff);
  for (size_t i = 0, e = static_cast<size_t>(n * hp.n_ff); i < e; ++i) up_[i] = std::max(up_[i], 0.f);
  mm_(L.w_down, up_.data(), hp.n_ff, n, out_.data(), d_);
  add_bias(out_.data(), L.b_down, n, d_);
  for (int64_t t = 0; t < n; ++t) k_.add(hidden_.data() + t * d_, out_.data() + t * d_, d_);
  if (!hp.pre_ln) layer_norm_rows(hidden_.data(), L.ffn_norm_w, L.ffn_norm_b, hidden_.data(), n);
}

const float* OptState::head_input(int64_t row0, int64_t n) {
  check_row_range(row0, n);
  const float* x = hidden_.data() + row0 * d_;
  if (w_->hp.final_ln) {
    layer_norm_rows(x, w_->output_norm_w, w_->output_norm_b, out_.data(), n);
    x = out_.data();
  }
  if (w_->project_out.data) {
    mm_(w_->project_out, x, d_, n, xb_.data(), w_->hp.n_embd_in);
    return xb_.data();
  }
  std::memcpy(xb_.data(), x, static_cast<size_t>(n * d_) * sizeof(float));
  return xb_.data();
}

}  // namespace adainfer
