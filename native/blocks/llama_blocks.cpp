#include "blocks/llama_blocks.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <map>
#include <sstream>

#include "core/ggml_types.h"

namespace adainfer {

namespace {

std::string shape_str(const std::vector<int64_t>& d) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < d.size(); ++i) s << (i ? ", " : "") << d[i];
  s << "]";
  return s.str();
}

// Looks tensors up by GGUF name and turns them into views, checking everything the kernels rely on.
class TensorTable {
 public:
  TensorTable(const MappedFile& file, const std::vector<TensorSpec>& specs, const KernelTable& k)
      : file_(file), k_(k) {
    for (const auto& s : specs) by_name_[s.name] = &s;
  }

  bool has(const std::string& name) const { return by_name_.count(name) != 0; }

  // A matrix of `rows` rows of `cols` elements (GGUF dims [cols, rows]).
  WeightView matrix(const std::string& name, int64_t cols, int64_t rows) const {
    const TensorSpec& s = find(name);
    if (s.dims.size() != 2 || s.dims[0] != cols || s.dims[1] != rows)
      throw ModelError("SHAPE_MISMATCH", "tensor " + name + " has shape " + shape_str(s.dims) + ", expected " +
                                             shape_str({cols, rows}));
    if (s.type < 0 || s.type >= KernelTable::kMaxType || !k_.matmul[s.type] || !k_.dequant_row[s.type])
      throw ModelError("UNSUPPORTED_TENSOR_TYPE",
                       "tensor " + name + " has type " + std::to_string(s.type) + ", which this build cannot compute");
    return view(s, cols, rows);
  }

  // A 1-D tensor of n elements, converted to floats (norm weights, rope factors: tiny, read every row).
  std::vector<float> vector(const std::string& name, int64_t n) const {
    const TensorSpec& s = find(name);
    if (s.dims.size() != 1 || s.dims[0] != n)
      throw ModelError("SHAPE_MISMATCH",
                       "tensor " + name + " has shape " + shape_str(s.dims) + ", expected " + shape_str({n}));
    if (s.type < 0 || s.type >= KernelTable::kMaxType || !k_.dequant_row[s.type])
      throw ModelError("UNSUPPORTED_TENSOR_TYPE",
                       "tensor " + name + " has type " + std::to_string(s.type) + ", which this build cannot read");
    WeightView v = view(s, n, 1);
    std::vector<float> out(static_cast<size_t>(n));
    k_.dequant_row[s.type](v.data, out.data(), n);
    return out;
  }

 private:
  const TensorSpec& find(const std::string& name) const {
    auto it = by_name_.find(name);
    if (it == by_name_.end()) throw ModelError("MISSING_TENSOR", "tensor " + name + " is missing");
    return *it->second;
  }

  WeightView view(const TensorSpec& s, int64_t cols, int64_t rows) const {
    size_t rb = row_bytes(s.type, cols);
    if (rb == 0)
      throw ModelError("SHAPE_MISMATCH", "tensor " + s.name + ": row of " + std::to_string(cols) +
                                             " elements is not a whole number of blocks of type " +
                                             std::to_string(s.type));
    // rows * rb cannot overflow for real files, but the header is untrusted.
    if (rows <= 0 || rb > UINT64_MAX / static_cast<uint64_t>(rows))
      throw ModelError("SHAPE_MISMATCH", "tensor " + s.name + " is too large");
    uint64_t bytes = rb * static_cast<uint64_t>(rows);
    // Kernels read F32 values as floats and every other layout through 16-bit fields: the data must be
    // aligned to that (GGUF aligns tensor data to 32 bytes by default; a hostile file may not).
    const uint64_t need = s.type == static_cast<int32_t>(GgmlType::F32) ? 4 : 2;
    if (s.offset % need != 0)
      throw ModelError("TENSOR_OUT_OF_BOUNDS", "tensor " + s.name + " data at offset " + std::to_string(s.offset) +
                                                   " is not aligned to " + std::to_string(need) + " bytes");
    if (!file_.contains(s.offset, bytes))
      throw ModelError("TENSOR_OUT_OF_BOUNDS", "tensor " + s.name + " data [" + std::to_string(s.offset) + ", +" +
                                                   std::to_string(bytes) + ") runs past the end of the file (" +
                                                   std::to_string(file_.size()) + " bytes)");
    WeightView v;
    v.data = file_.data() + s.offset;
    v.type = s.type;
    v.ne0 = cols;
    v.ne1 = rows;
    v.row_bytes = rb;
    return v;
  }

  const MappedFile& file_;
  const KernelTable& k_;
  std::map<std::string, const TensorSpec*> by_name_;
};

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

LlamaWeights load_llama_weights(std::shared_ptr<MappedFile> file, const LlamaHParams& hp,
                                const std::vector<TensorSpec>& tensors, const KernelTable& kernels) {
  check_hparams(hp);
  TensorTable t(*file, tensors, kernels);
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
  w.file = std::move(file);
  return w;
}

LlamaState::LlamaState(std::shared_ptr<const LlamaWeights> weights, int64_t n_seq, int64_t n_ctx, int64_t n_batch,
                       int n_threads, const KernelTable& kernels, const LlamaBuffers& io)
    : w_(std::move(weights)), k_(kernels), n_seq_(n_seq), n_ctx_(n_ctx), n_batch_(n_batch), pool_(n_threads), io_(io) {
  const LlamaHParams& hp = w_->hp;
  if (n_seq <= 0 || n_ctx <= 0 || n_batch <= 0)
    throw ModelError("INVALID_OPTION", "sequences, context size and batch size must be positive");
  q_dim_ = hp.n_head * hp.head_dim;
  kv_dim_ = hp.n_kv_head * hp.head_dim;
  const size_t cache = static_cast<size_t>(hp.n_layer) * n_seq * n_ctx * kv_dim_;
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

void LlamaState::check_layer(int64_t layer) const {
  if (layer < 0 || layer >= w_->hp.n_layer)
    throw std::out_of_range("layer " + std::to_string(layer) + " out of range [0, " + std::to_string(w_->hp.n_layer) + ")");
}

void LlamaState::check_rows(int64_t n) const {
  if (n <= 0 || n > n_batch_)
    throw std::out_of_range("row count " + std::to_string(n) + " out of range [1, " + std::to_string(n_batch_) + "]");
}

namespace {

// ADAINFER_ROW_SPLIT=static | dynamic overrides the choice of split_rows (to measure one against the other).
int row_split_override() {  // 0: auto, 1: static, 2: dynamic
  static const int mode = [] {
    const char* v = std::getenv("ADAINFER_ROW_SPLIT");
    if (!v) return 0;
    if (std::strcmp(v, "static") == 0) return 1;
    if (std::strcmp(v, "dynamic") == 0) return 2;
    return 0;
  }();
  return mode;
}

// Calls fn(r0, r1) on chunks covering rows [0, n), chunk boundaries multiples of `align`.
//  - static (decode): parallel_for, one contiguous range per thread, streamed front to back in a few
//    sub-chunks; a thread done early takes over what another has not reached, and a worker that is late
//    (its core taken by another process) finds its range done by the others. Decode streams the weights once
//    from memory; one long sequential range per thread is what the prefetchers (and the kernels' software
//    prefetch, which runs ahead within the range) do best with: measured on TinyLlama Q4_0 at 2 threads, 98
//    tokens/s against 76 with the dynamic chunks.
//  - dynamic (batches, compute-bound): about eight chunks per thread handed out from an atomic counter, so a
//    thread that runs slower (another process on its core) hands its remaining chunks to the others.
template <class Fn>
void split_rows(ThreadPool& pool, int64_t n, int64_t align, bool dynamic, Fn&& fn) {
  const int64_t threads = pool.size();
  if (row_split_override() != 0) dynamic = row_split_override() == 2;
  if (threads == 1 || !dynamic) {
    pool.parallel_for(n, align, [&](int64_t r0, int64_t r1, int) { fn(r0, r1); });
    return;
  }
  int64_t chunk = (n + threads * 8 - 1) / (threads * 8);
  chunk = std::max<int64_t>(align, (chunk + align - 1) / align * align);
  if (chunk >= n) {
    fn(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  pool.run([&](int) {
    for (;;) {
      const int64_t r0 = next.fetch_add(chunk, std::memory_order_relaxed);
      if (r0 >= n) break;
      fn(r0, std::min(n, r0 + chunk));
    }
  });
}

}  // namespace

// The first 64-byte boundary of an activation buffer (allocated with 64 bytes of slack).
uint8_t* LlamaState::aligned_rows(ActRows& a) {
  const uintptr_t p = reinterpret_cast<uintptr_t>(a.rows.data());
  return a.rows.data() + ((64 - p % 64) % 64);
}

// Output rows are split across the pool (split_rows); each thread runs the kernel on its own ranges of W's
// rows, so weights are streamed once per call whatever the number of tokens. Quantized weight types first get
// their activation rows quantized (once per input, in parallel over rows for a batch), as ggml does.
void LlamaState::matmul(const WeightView& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy,
                        bool same_input) {
  const int32_t format = k_.act_format[w.type];
  if (!same_input) {
    for (ActRows& a : act_) a.x = nullptr;
  }
  // 48 = a multiple of the SIMD kernels' row blocks (3 on AVX2, 6 on AVX-512, 16-row panels).
  if (format == kActF32 || !k_.matmul_act[w.type]) {
    MatmulFn fn = k_.matmul[w.type];
    split_rows(pool_, w.ne1, 48, n > 1, [&](int64_t r0, int64_t r1) { fn(w.data, w.ne0, x, ldx, n, y, ldy, r0, r1); });
    return;
  }
  ActRows& a = act_[format];
  const size_t lda = act_row_bytes(format, w.ne0);
  if (a.x != x || a.ldx != ldx || a.n_in != w.ne0 || a.n != n) {
    // 64 bytes of slack so that the rows start on a cache line (the kernels' 64-byte loads never split)
    if (a.rows.size() < lda * static_cast<size_t>(n) + 64) a.rows.resize(lda * static_cast<size_t>(n) + 64);
    QuantizeActFn quantize = k_.quantize_act[format];
    uint8_t* rows = aligned_rows(a);
    const int64_t n_in = w.ne0;
    if (n == 1) {
      quantize(x, rows, n_in);
    } else {
      pool_.parallel_for(n, 1, [&](int64_t t0, int64_t t1, int) {
        for (int64_t t = t0; t < t1; ++t) quantize(x + t * ldx, rows + static_cast<size_t>(t) * lda, n_in);
      });
    }
    a.x = x;
    a.ldx = ldx;
    a.n_in = w.ne0;
    a.n = n;
  }
  MatmulActFn fn = k_.matmul_act[w.type];
  const uint8_t* rows = aligned_rows(a);
  split_rows(pool_, w.ne1, 48, n > 1, [&](int64_t r0, int64_t r1) {
    fn(w.data, w.ne0, rows, static_cast<int64_t>(lda), n, y, ldy, r0, r1);
  });
}

void LlamaState::rms_norm_rows(const float* x, const float* weight, float* out, int64_t n) {
  const int64_t d = w_->hp.n_embd;
  for (int64_t t = 0; t < n; ++t) k_.rms_norm(x + t * d, weight, out + t * d, d, w_->hp.rms_eps);
}

void LlamaState::embed(int64_t n) {
  check_rows(n);
  const LlamaHParams& hp = w_->hp;
  const WeightView& e = w_->tok_embd;
  for (int64_t t = 0; t < n; ++t) {
    const int32_t id = io_.tokens[t];
    if (id < 0 || id >= hp.n_vocab)
      throw std::out_of_range("token id " + std::to_string(id) + " out of range [0, " + std::to_string(hp.n_vocab) + ")");
    k_.dequant_row[e.type](static_cast<const uint8_t*>(e.data) + static_cast<size_t>(id) * e.row_bytes,
                           io_.hidden + t * hp.n_embd, hp.n_embd);
  }
}

void LlamaState::check_row_positions(int64_t n) const {
  for (int64_t t = 0; t < n; ++t) {
    const int64_t seq = io_.row_seq[t], pos = io_.row_pos[t];
    if (seq < 0 || seq >= n_seq_)
      throw std::out_of_range("row " + std::to_string(t) + ": sequence " + std::to_string(seq) + " out of range [0, " +
                              std::to_string(n_seq_) + ")");
    if (pos < 0 || pos >= n_ctx_)
      throw std::out_of_range("row " + std::to_string(t) + ": position " + std::to_string(pos) +
                              " exceeds the context of " + std::to_string(n_ctx_));
  }
}

void LlamaState::norm_and_write_kv(int64_t layer, int64_t n) {
  const LlamaHParams& hp = w_->hp;
  const LlamaLayer& L = w_->layers[layer];
  const int64_t d = hp.n_embd;
  rms_norm_rows(io_.hidden, L.attn_norm.data(), xb_.data(), n);
  matmul(L.wk, xb_.data(), d, n, k_new_.data(), kv_dim_);
  matmul(L.wv, xb_.data(), d, n, v_new_.data(), kv_dim_, /*same_input=*/true);
  const float* ff = w_->rope_freqs.empty() ? nullptr : w_->rope_freqs.data();
  const size_t row_bytes = static_cast<size_t>(kv_dim_) * sizeof(float);
  for (int64_t t = 0; t < n; ++t) {
    const int64_t seq = io_.row_seq[t], pos = io_.row_pos[t];
    float* k = k_new_.data() + t * kv_dim_;
    rope_llama(k, hp.n_kv_head, hp.head_dim, hp.n_rot, pos, hp.rope_base, ff);
    std::memcpy(k_cache_at(layer, seq) + pos * kv_dim_, k, row_bytes);
    std::memcpy(v_cache_at(layer, seq) + pos * kv_dim_, v_new_.data() + t * kv_dim_, row_bytes);
  }
}

void LlamaState::fill_kv(int64_t layer, int64_t n) {
  check_layer(layer);
  check_rows(n);
  check_row_positions(n);
  norm_and_write_kv(layer, n);
}

void LlamaState::attention_block(int64_t layer, int64_t n) {
  check_layer(layer);
  check_rows(n);
  check_row_positions(n);
  const LlamaHParams& hp = w_->hp;
  const LlamaLayer& L = w_->layers[layer];
  const int64_t d = hp.n_embd;

  norm_and_write_kv(layer, n);
  matmul(L.wq, xb_.data(), d, n, q_.data(), q_dim_, /*same_input=*/true);
  const float* ff = w_->rope_freqs.empty() ? nullptr : w_->rope_freqs.data();
  for (int64_t t = 0; t < n; ++t)
    rope_llama(q_.data() + t * q_dim_, hp.n_head, hp.head_dim, hp.n_rot, io_.row_pos[t], hp.rope_base, ff);

  // Runs of rows of one sequence at consecutive positions share one attention call (a prompt chunk);
  // a batch of decoding sequences is one run per row.
  int64_t n_runs = 0;
  runs_[0] = 0;
  for (int64_t t = 1; t <= n; ++t) {
    if (t == n || io_.row_seq[t] != io_.row_seq[t - 1] || io_.row_pos[t] != io_.row_pos[t - 1] + 1) runs_[++n_runs] = t;
  }
  // Work items: (run, group of query heads sharing a KV head); the SIMD kernels process a group together.
  const int64_t group = hp.n_head / hp.n_kv_head;
  const int64_t items = n_runs * hp.n_kv_head;
  pool_.parallel_for(items, 1, [&](int64_t i0, int64_t i1, int thread) {
    float* scratch = scratch_.data() + static_cast<size_t>(thread) * n_ctx_;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t run = i / hp.n_kv_head, g = i % hp.n_kv_head;
      const int64_t r0 = runs_[run], r1 = runs_[run + 1], seq = io_.row_seq[r0];
      AttentionArgs a;
      a.q = q_.data() + r0 * q_dim_;
      a.k = k_cache_at(layer, seq);
      a.v = v_cache_at(layer, seq);
      a.out = att_.data() + r0 * q_dim_;
      a.n_tok = r1 - r0;
      a.pos0 = io_.row_pos[r0];
      a.n_head = hp.n_head;
      a.n_kv_head = hp.n_kv_head;
      a.head_dim = hp.head_dim;
      a.scale = 1.0f / std::sqrt(static_cast<float>(hp.head_dim));
      k_.attention(a, g * group, (g + 1) * group, scratch);
    }
  });

  matmul(L.wo, att_.data(), q_dim_, n, xb_.data(), d);
  for (int64_t t = 0; t < n; ++t) k_.add(io_.hidden + t * d, xb_.data() + t * d, d);
}

void LlamaState::mlp_block(int64_t layer, int64_t n) {
  check_layer(layer);
  check_rows(n);
  const LlamaHParams& hp = w_->hp;
  const LlamaLayer& L = w_->layers[layer];
  const int64_t d = hp.n_embd;
  rms_norm_rows(io_.hidden, L.ffn_norm.data(), xb_.data(), n);
  matmul(L.w_gate, xb_.data(), d, n, gate_.data(), hp.n_ff);
  matmul(L.w_up, xb_.data(), d, n, up_.data(), hp.n_ff, /*same_input=*/true);
  for (int64_t t = 0; t < n; ++t) k_.swiglu(gate_.data() + t * hp.n_ff, up_.data() + t * hp.n_ff, hp.n_ff);
  matmul(L.w_down, gate_.data(), hp.n_ff, n, xb_.data(), d);
  for (int64_t t = 0; t < n; ++t) k_.add(io_.hidden + t * d, xb_.data() + t * d, d);
}

void LlamaState::check_row(int64_t row) const {
  if (row < 0 || row >= n_batch_)
    throw std::out_of_range("row " + std::to_string(row) + " out of range [0, " + std::to_string(n_batch_) + ")");
}

void LlamaState::head(int64_t row) {
  check_row(row);
  const int64_t d = w_->hp.n_embd;
  k_.rms_norm(io_.hidden + row * d, w_->output_norm.data(), xb_.data(), d, w_->hp.rms_eps);
  matmul(w_->output, xb_.data(), d, 1, io_.logits, w_->hp.n_vocab);
}

void LlamaState::logit_lens(int64_t row, int64_t k) {
  if (k < 1 || k > io_.lens_k)
    throw std::out_of_range("top-k " + std::to_string(k) + " out of range [1, " + std::to_string(io_.lens_k) + "]");
  head(row);
  lens_statistics(nullptr, w_->hp.n_vocab, k);
}

void LlamaState::logit_lens_candidates(int64_t row, int64_t m, int64_t k) {
  check_row(row);
  if (k < 1 || k > io_.lens_k)
    throw std::out_of_range("top-k " + std::to_string(k) + " out of range [1, " + std::to_string(io_.lens_k) + "]");
  if (m < 1 || m > io_.lens_max_candidates)
    throw std::out_of_range("candidate count " + std::to_string(m) + " out of range [1, " +
                            std::to_string(io_.lens_max_candidates) + "]");
  const int64_t V = w_->hp.n_vocab;
  for (int64_t i = 0; i < m; ++i) {
    const int32_t id = io_.lens_candidates[i];
    if (id < 0 || id >= V)
      throw std::out_of_range("candidate token id " + std::to_string(id) + " out of range [0, " + std::to_string(V) + ")");
  }
  const int64_t d = w_->hp.n_embd;
  k_.rms_norm(io_.hidden + row * d, w_->output_norm.data(), xb_.data(), d, w_->hp.rms_eps);
  // One head row per candidate, written at its own index of logits (the matmul writes columns [id, id+1)).
  MatmulFn fn = k_.matmul[w_->output.type];
  for (int64_t i = 0; i < m; ++i) {
    const int32_t id = io_.lens_candidates[i];
    fn(w_->output.data, d, xb_.data(), d, 1, io_.logits, V, id, id + 1);
  }
  lens_statistics(io_.lens_candidates, m, k);
}

void LlamaState::lens_statistics(const int32_t* ids, int64_t m, int64_t k) {
  const float* z = io_.logits;
  auto id_at = [ids](int64_t i) { return ids ? ids[i] : static_cast<int32_t>(i); };
  float zmax = z[id_at(0)];
  for (int64_t i = 1; i < m; ++i) zmax = std::max(zmax, z[id_at(i)]);
  // softmax normaliser and entropy in one pass: H = log S - sum(e_i (z_i - zmax)) / S with e_i = exp(z_i - zmax)
  double sum = 0, weighted = 0;
  for (int64_t i = 0; i < m; ++i) {
    const double t = static_cast<double>(z[id_at(i)] - zmax);
    const double e = std::exp(t);
    sum += e;
    weighted += e * t;
  }
  const double log_sum = std::log(sum);
  // Top-k in one pass with a small sorted list, ordered by (logit desc, id asc) - the same order as
  // argmax with lowest-id ties. At least two entries are kept, for p2.
  const int64_t kk = std::min<int64_t>(std::max<int64_t>(k, 2), m);
  int32_t* top = top_ids_.data();
  int64_t filled = 0;
  auto better = [z](int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); };
  for (int64_t i = 0; i < m; ++i) {
    const int32_t id = id_at(i);
    if (filled == kk && !better(id, top[kk - 1])) continue;
    int64_t j = filled < kk ? filled++ : kk - 1;
    while (j > 0 && better(id, top[j - 1])) {
      top[j] = top[j - 1];
      --j;
    }
    top[j] = id;
  }
  auto prob = [&](int32_t id) { return static_cast<float>(std::exp(static_cast<double>(z[id] - zmax) - log_sum)); };
  const int64_t written = std::min(k, kk);
  for (int64_t i = 0; i < written; ++i) {
    io_.lens_ids[i] = top[i];
    io_.lens_probs[i] = prob(top[i]);
  }
  for (int64_t i = written; i < k; ++i) {  // fewer candidates than k
    io_.lens_ids[i] = -1;
    io_.lens_probs[i] = 0.f;
  }
  const float p1 = prob(top[0]);
  const float p2 = kk > 1 ? prob(top[1]) : 0.f;
  io_.lens_features[0] = p1;
  io_.lens_features[1] = p2;
  io_.lens_features[2] = p1 - p2;
  io_.lens_features[3] = static_cast<float>(log_sum - weighted / sum);
}

}  // namespace adainfer
