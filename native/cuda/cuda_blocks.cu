// The CUDA backend of the Llama block (cuda_backend.h; the architectures llama, qwen2, qwen3): weights uploaded once per model, and per context a
// KV cache, the residual stream and the scratch activations on the device. Each block call queues its kernels
// on the context's stream and returns; the host waits only where it reads results (head, logit lens,
// read_hidden), so a run of layers streams without a round trip per layer. Inputs the host owns (token ids,
// row positions) are checked on the host, as the CPU backend does, before they are copied.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>

#include "core/ggml_types.h"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_kernels.h"

namespace adainfer {

namespace {

void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  cudaGetLastError();  // clear a sticky-free error so that later calls are not blamed for it
  if (e == cudaErrorMemoryAllocation)
    throw ModelError("OUT_OF_MEMORY", std::string(what) + ": the CUDA device is out of memory");
  throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// A device allocation (cudaMalloc; never managed memory), freed with its owner.
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t n) : n_(n) {
    if (n == 0) return;
    void* p = nullptr;
    check(cudaMalloc(&p, n * sizeof(T)), "cudaMalloc");
    p_ = static_cast<T*>(p);
  }
  ~DeviceArray() {
    if (p_) cudaFree(p_);
  }
  DeviceArray(DeviceArray&& o) noexcept : p_(o.p_), n_(o.n_) {
    o.p_ = nullptr;
    o.n_ = 0;
  }
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return p_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// Pinned host memory (cudaMallocHost), for copies that overlap the host's work.
struct PinnedFree {
  void operator()(void* p) const { cudaFreeHost(p); }
};
template <typename T>
std::unique_ptr<T[], PinnedFree> pinned_array(size_t n) {
  void* p = nullptr;
  check(cudaMallocHost(&p, std::max<size_t>(n, 1) * sizeof(T)), "cudaMallocHost");
  return std::unique_ptr<T[], PinnedFree>(static_cast<T*>(p));
}

struct StreamDestroy {
  void operator()(CUstream_st* s) const {
    cudaStreamSynchronize(s);
    cudaStreamDestroy(s);
  }
};

__global__ void probe_kernel(int* out) { *out = 42; }

}  // namespace

const CudaProbe& cuda_probe() {
  static CudaProbe probe;
  static std::once_flag once;
  std::call_once(once, [] {
    probe.compiled = true;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
      probe.reason = e != cudaSuccess ? std::string("no usable CUDA device: ") + cudaGetErrorString(e)
                                      : "no CUDA device found";
      cudaGetLastError();
      return;
    }
    for (int d = 0; d < n; ++d) {
      cudaDeviceProp p{};
      if (cudaGetDeviceProperties(&p, d) != cudaSuccess) continue;
      CudaDevice dev;
      dev.index = d;
      dev.name = p.name;
      dev.cc_major = p.major;
      dev.cc_minor = p.minor;
      dev.total_memory = static_cast<int64_t>(p.totalGlobalMem);
      probe.devices.push_back(dev);
    }
    // Really usable: a kernel of this build runs on device 0 (a device newer than the compiled architectures
    // with no PTX to fall back on, or a broken driver, fails here rather than in the middle of a model).
    int* d_out = nullptr;
    int host = 0;
    e = cudaSetDevice(0);
    if (e == cudaSuccess) e = cudaMalloc(&d_out, sizeof(int));
    if (e == cudaSuccess) {
      probe_kernel<<<1, 1>>>(d_out);
      e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpy(&host, d_out, sizeof(int), cudaMemcpyDeviceToHost);
    if (d_out) cudaFree(d_out);
    if (e != cudaSuccess || host != 42) {
      probe.reason = std::string("the CUDA device cannot run this build's kernels: ") +
                     (e != cudaSuccess ? cudaGetErrorString(e) : "wrong result");
      cudaGetLastError();
      return;
    }
    probe.available = true;
  });
  return probe;
}

// ---- weights ----------------------------------------------------------------------------------------------

struct DeviceMatrix {
  const void* data = nullptr;
  int32_t type = -1;
  int64_t n_in = 0, n_out = 0;
  size_t row_bytes = 0;
};

struct DeviceLayer {
  const float* attn_norm = nullptr;  // [n_embd]
  DeviceMatrix wq, wk, wv, wo;
  const float* ffn_norm = nullptr;   // [n_embd]
  DeviceMatrix w_gate, w_up, w_down;
  const float* bq = nullptr;      // [q_dim], with bk, bv [kv_dim]: Q/K/V biases (qwen2), else nullptr
  const float* bk = nullptr;
  const float* bv = nullptr;
  const float* q_norm = nullptr;  // [head_dim], with k_norm: per-head Q/K RMSNorm (qwen3), else nullptr
  const float* k_norm = nullptr;
};

class CudaWeights {
 public:
  std::shared_ptr<const LlamaWeights> host;  // hyper-parameters, and the embedding rows read on the host
  int device = 0;
  std::vector<DeviceArray<uint8_t>> arrays;   // every upload, freed with the model
  std::vector<DeviceLayer> layers;
  const float* output_norm = nullptr;
  DeviceMatrix output;
  const float* rope_freqs = nullptr;          // [n_rot / 2] or nullptr
  int64_t bytes = 0;

  DeviceMatrix upload(const WeightView& v) {
    DeviceMatrix m;
    m.data = upload_bytes(v.data, v.row_bytes * static_cast<size_t>(v.ne1));
    m.type = v.type;
    m.n_in = v.ne0;
    m.n_out = v.ne1;
    m.row_bytes = v.row_bytes;
    return m;
  }
  const float* upload(const std::vector<float>& v) {
    return static_cast<const float*>(upload_bytes(v.data(), v.size() * sizeof(float)));
  }
  // An optional vector (empty: absent, nullptr).
  const float* upload_optional(const std::vector<float>& v) { return v.empty() ? nullptr : upload(v); }
  const void* upload_bytes(const void* src, size_t n) {
    DeviceArray<uint8_t> a(n);
    check(cudaMemcpy(a.get(), src, n, cudaMemcpyHostToDevice), "uploading weights");
    bytes += static_cast<int64_t>(n);
    const void* p = a.get();
    arrays.push_back(std::move(a));
    return p;
  }
};

std::string cuda_unsupported_reason(const LlamaWeights& w) {
  auto bad = [](const WeightView& v) { return !cuda::supports_type(v.type); };
  if (bad(w.output)) return "output.weight has GGML type " + std::to_string(w.output.type) + ", which the CUDA kernels lack";
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LlamaLayer& L = w.layers[l];
    for (const WeightView* v : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      if (bad(*v))
        return "a weight of layer " + std::to_string(l) + " has GGML type " + std::to_string(v->type) +
               ", which the CUDA kernels lack";
  }
  return "";
}

std::shared_ptr<CudaWeights> cuda_upload_weights(std::shared_ptr<const LlamaWeights> weights, int device) {
  const CudaProbe& probe = cuda_probe();
  if (!probe.available) throw ModelError("BACKEND_UNAVAILABLE", probe.reason);
  if (device < 0 || device >= static_cast<int>(probe.devices.size()))
    throw ModelError("BACKEND_UNAVAILABLE", "CUDA device " + std::to_string(device) + " does not exist (" +
                                                std::to_string(probe.devices.size()) + " found)");
  const std::string why = cuda_unsupported_reason(*weights);
  if (!why.empty()) throw ModelError("BACKEND_UNAVAILABLE", why);
  check(cudaSetDevice(device), "cudaSetDevice");
  auto w = std::make_shared<CudaWeights>();
  w->host = weights;
  w->device = device;
  for (const LlamaLayer& L : weights->layers) {
    DeviceLayer d;
    d.attn_norm = w->upload(L.attn_norm);
    d.wq = w->upload(L.wq);
    d.wk = w->upload(L.wk);
    d.wv = w->upload(L.wv);
    d.wo = w->upload(L.wo);
    d.ffn_norm = w->upload(L.ffn_norm);
    d.w_gate = w->upload(L.w_gate);
    d.w_up = w->upload(L.w_up);
    d.w_down = w->upload(L.w_down);
    d.bq = w->upload_optional(L.bq);
    d.bk = w->upload_optional(L.bk);
    d.bv = w->upload_optional(L.bv);
    d.q_norm = w->upload_optional(L.q_norm);
    d.k_norm = w->upload_optional(L.k_norm);
    w->layers.push_back(d);
  }
  w->output_norm = w->upload(weights->output_norm);
  w->output = w->upload(weights->output);
  if (!weights->rope_freqs.empty()) w->rope_freqs = w->upload(weights->rope_freqs);
  return w;
}

int64_t cuda_weight_bytes(const CudaWeights& w) { return w.bytes; }

// ---- blocks -----------------------------------------------------------------------------------------------

namespace {

class CudaLlamaBlocks final : public Blocks {
 public:
  CudaLlamaBlocks(std::shared_ptr<CudaWeights> w, int64_t n_seq, int64_t n_ctx, int64_t n_batch,
                  const KernelTable& host_kernels, const HostBuffers& io)
      : w_(std::move(w)), hp_(w_->host->hp), hk_(host_kernels), io_(io), n_seq_(n_seq), n_ctx_(n_ctx), n_batch_(n_batch) {
    if (n_seq <= 0 || n_ctx <= 0 || n_batch <= 0)
      throw ModelError("INVALID_OPTION", "sequences, context size and batch size must be positive");
    check(cudaSetDevice(w_->device), "cudaSetDevice");
    const int64_t max_ctx = cuda::attention_max_ctx(w_->device);
    if (n_ctx > max_ctx)
      throw ModelError("INVALID_OPTION", "a context of " + std::to_string(n_ctx) + " positions is more than the CUDA " +
                                             "attention kernel holds on this device (" + std::to_string(max_ctx) + ")");
    q_dim_ = hp_.n_head * hp_.head_dim;
    kv_dim_ = hp_.n_kv_head * hp_.head_dim;
    cudaStream_t stream = nullptr;
    check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    stream_holder_.reset(stream);
    stream_ = stream;
    const size_t b = static_cast<size_t>(n_batch);
    const size_t cache = static_cast<size_t>(hp_.n_layer) * n_seq * n_ctx * kv_dim_;
    k_cache_ = DeviceArray<float>(cache);
    v_cache_ = DeviceArray<float>(cache);
    check(cudaMemsetAsync(k_cache_.get(), 0, k_cache_.bytes(), stream_), "clearing the KV cache");
    check(cudaMemsetAsync(v_cache_.get(), 0, v_cache_.bytes(), stream_), "clearing the KV cache");
    hidden_ = DeviceArray<float>(b * hp_.n_embd);
    xb_ = DeviceArray<float>(b * std::max(hp_.n_embd, q_dim_));
    q_ = DeviceArray<float>(b * q_dim_);
    att_ = DeviceArray<float>(b * q_dim_);
    k_new_ = DeviceArray<float>(b * kv_dim_);
    v_new_ = DeviceArray<float>(b * kv_dim_);
    gate_ = DeviceArray<float>(b * hp_.n_ff);
    up_ = DeviceArray<float>(b * hp_.n_ff);
    logits_ = DeviceArray<float>(static_cast<size_t>(hp_.n_vocab));
    // split attention for up to 8 rows (decode steps and small batches); larger batches fill the GPU unsplit
    attn_scratch_ = DeviceArray<float>(static_cast<size_t>(
        cuda::attention_scratch_floats(std::min<int64_t>(n_batch, 8), hp_.n_head, hp_.head_dim)));
    row_seq_ = DeviceArray<int32_t>(b);
    row_pos_ = DeviceArray<int32_t>(b);
    candidates_ = DeviceArray<int32_t>(static_cast<size_t>(std::max<int64_t>(io_.lens_max_candidates, 1)));
    lens_k_ = std::max<int64_t>(io_.lens_k, 2);
    lens_out_ = DeviceArray<uint8_t>(static_cast<size_t>(lens_k_) * 8 + 4 * sizeof(float));
    lens_host_ = pinned_array<uint8_t>(lens_out_.size());
    lens_scratch_ = DeviceArray<uint8_t>(static_cast<size_t>(cuda::lens_scratch_bytes()));
    staging_ = pinned_array<float>(b * hp_.n_embd);
    rows_pinned_ = pinned_array<int32_t>(2 * b);
    shadow_rows_.assign(2 * b, -1);
    check(cudaEventCreateWithFlags(&staging_free_, cudaEventDisableTiming), "cudaEventCreate");
    check(cudaEventCreateWithFlags(&rows_free_, cudaEventDisableTiming), "cudaEventCreate");
    check(cudaStreamSynchronize(stream_), "creating the context");
  }

  // Work still queued on the stream may use the device arrays: wait for it before the members are freed.
  ~CudaLlamaBlocks() override {
    cudaSetDevice(w_->device);
    if (stream_) cudaStreamSynchronize(stream_);
    if (staging_free_) cudaEventDestroy(staging_free_);
    if (rows_free_) cudaEventDestroy(rows_free_);
  }

  const char* backend() const override { return "cuda"; }
  int64_t n_embd() const override { return hp_.n_embd; }
  int64_t n_batch() const override { return n_batch_; }

  void embed(int64_t n) override {
    check_rows(n, n_batch_);
    // The embedding matrix stays in the mapped file: the batch's rows are converted on the host (the CPU
    // kernels' dequant_row) and copied up, n * n_embd floats.
    const WeightView& e = w_->host->tok_embd;
    for (int64_t t = 0; t < n; ++t) {
      const int32_t id = io_.tokens[t];
      if (id < 0 || id >= hp_.n_vocab)
        throw std::out_of_range("token id " + std::to_string(id) + " out of range [0, " + std::to_string(hp_.n_vocab) + ")");
    }
    device();
    check(cudaEventSynchronize(staging_free_), "embed");  // the previous embed's copy has read the staging rows
    for (int64_t t = 0; t < n; ++t)
      hk_.dequant_row[e.type](static_cast<const uint8_t*>(e.data) + static_cast<size_t>(io_.tokens[t]) * e.row_bytes,
                              staging_.get() + t * hp_.n_embd, hp_.n_embd);
    check(cudaMemcpyAsync(hidden_.get(), staging_.get(), static_cast<size_t>(n * hp_.n_embd) * sizeof(float),
                          cudaMemcpyHostToDevice, stream_),
          "embed");
    check(cudaEventRecord(staging_free_, stream_), "embed");
  }

  void attention_block(int64_t layer, int64_t n) override {
    check_layer(layer, hp_.n_layer);
    check_rows(n, n_batch_);
    upload_rows(n);
    const DeviceLayer& L = w_->layers[layer];
    norm_and_write_kv(layer, n);
    matmul(L.wq, xb_.get(), hp_.n_embd, n, q_.get(), q_dim_);
    if (L.bq) cuda::add_bias(stream_, q_.get(), L.bq, n, q_dim_);
    if (L.q_norm) cuda::head_rms_norm(stream_, q_.get(), L.q_norm, n * hp_.n_head, hp_.head_dim, hp_.rms_eps);
    cuda::rope(stream_, q_.get(), q_dim_, n, row_pos_.get(), hp_.n_head, hp_.head_dim, hp_.n_rot, hp_.rope_base,
               w_->rope_freqs, hp_.rope_neox);
    int64_t max_pos = 0;
    for (int64_t t = 0; t < n; ++t) max_pos = std::max<int64_t>(max_pos, io_.row_pos[t] + 1);
    cuda::attention(stream_, q_.get(), n, row_seq_.get(), row_pos_.get(), k_layer(layer), v_layer(layer), n_ctx_,
                    hp_.n_head, hp_.n_kv_head, hp_.head_dim, 1.0f / std::sqrt(static_cast<float>(hp_.head_dim)),
                    att_.get(), max_pos, attn_scratch_.get(), static_cast<int64_t>(attn_scratch_.size()));
    matmul(L.wo, att_.get(), q_dim_, n, hidden_.get(), hp_.n_embd, /*accumulate=*/true);  // hidden += Wo att
  }

  void fill_kv(int64_t layer, int64_t n) override {
    check_layer(layer, hp_.n_layer);
    check_rows(n, n_batch_);
    upload_rows(n);
    norm_and_write_kv(layer, n);
  }

  void mlp_block(int64_t layer, int64_t n) override {
    check_layer(layer, hp_.n_layer);
    check_rows(n, n_batch_);
    device();
    const DeviceLayer& L = w_->layers[layer];
    const int64_t d = hp_.n_embd;
    cuda::rms_norm(stream_, hidden_.get(), L.ffn_norm, xb_.get(), n, d, hp_.rms_eps);
    if (L.w_gate.type == L.w_up.type) {  // one pass over both matrices (decode), SwiGLU fused
      cuda::matmul_glu(stream_, L.w_gate.type, L.w_gate.data, L.w_up.data, L.w_gate.row_bytes, d, hp_.n_ff, xb_.get(), d,
                       n, gate_.get(), up_.get(), hp_.n_ff);
    } else {  // Q4_K_M-style files may mix types
      matmul(L.w_gate, xb_.get(), d, n, gate_.get(), hp_.n_ff);
      matmul(L.w_up, xb_.get(), d, n, up_.get(), hp_.n_ff);
      cuda::swiglu(stream_, gate_.get(), up_.get(), n * hp_.n_ff);
    }
    matmul(L.w_down, gate_.get(), hp_.n_ff, n, hidden_.get(), d, /*accumulate=*/true);  // hidden += W_down h
  }

  void head(int64_t row) override {
    device_head(row);
    check(cudaMemcpyAsync(io_.logits, logits_.get(), logits_.bytes(), cudaMemcpyDeviceToHost, stream_), "head");
    check(cudaStreamSynchronize(stream_), "head");
  }

  // Row by row (the CUDA backend's decode is not where the verify step's weight reads are shared today).
  void head_rows(int64_t row0, int64_t n, float* dst) override {
    check_row_range(row0, n);
    for (int64_t t = 0; t < n; ++t) {
      device_head(row0 + t);
      check(cudaMemcpyAsync(dst + t * hp_.n_vocab, logits_.get(), logits_.bytes(), cudaMemcpyDeviceToHost, stream_), "head_rows");
    }
    check(cudaStreamSynchronize(stream_), "head_rows");
  }

  void logit_lens(int64_t row, int64_t k) override {
    check_top_k(k, io_);
    device_head(row);
    lens_statistics(nullptr, hp_.n_vocab, k);
  }

  void logit_lens_candidates(int64_t row, int64_t m, int64_t k) override {
    check_row(row, n_batch_);
    check_top_k(k, io_);
    check_candidates(io_, m, hp_.n_vocab);
    device();
    check(cudaMemcpyAsync(candidates_.get(), io_.lens_candidates, static_cast<size_t>(m) * sizeof(int32_t),
                          cudaMemcpyHostToDevice, stream_),
          "lens candidates");
    const int64_t d = hp_.n_embd;
    cuda::rms_norm(stream_, hidden_.get() + row * d, w_->output_norm, xb_.get(), 1, d, hp_.rms_eps);
    const DeviceMatrix& o = w_->output;
    cuda::matvec_rows(stream_, o.type, o.data, o.row_bytes, o.n_in, candidates_.get(), m, xb_.get(), logits_.get());
    lens_statistics(candidates_.get(), m, k);
  }

  void sync_logits() override {
    device();
    check(cudaMemcpyAsync(io_.logits, logits_.get(), logits_.bytes(), cudaMemcpyDeviceToHost, stream_), "logits");
    check(cudaStreamSynchronize(stream_), "logits");
  }

  void read_hidden(int64_t row0, int64_t n, float* dst) override {
    check_row_range(row0, n);
    device();
    check(cudaMemcpyAsync(dst, hidden_.get() + row0 * hp_.n_embd, static_cast<size_t>(n * hp_.n_embd) * sizeof(float),
                          cudaMemcpyDeviceToHost, stream_),
          "read_hidden");
    check(cudaStreamSynchronize(stream_), "read_hidden");
  }

  void write_hidden(int64_t row0, int64_t n, const float* src) override {
    check_row_range(row0, n);
    device();
    // Pageable source: the copy has taken the data when the call returns, so the caller may reuse it.
    check(cudaMemcpyAsync(hidden_.get() + row0 * hp_.n_embd, src, static_cast<size_t>(n * hp_.n_embd) * sizeof(float),
                          cudaMemcpyHostToDevice, stream_),
          "write_hidden");
    check(cudaStreamSynchronize(stream_), "write_hidden");
  }

  void move_hidden(int64_t dst_row, int64_t src_row, int64_t n) override {
    check_row_range(dst_row, n);
    check_row_range(src_row, n);
    if (n == 0 || dst_row == src_row) return;
    device();
    const int64_t d = hp_.n_embd;
    const size_t bytes = static_cast<size_t>(n * d) * sizeof(float);
    if (dst_row + n <= src_row || src_row + n <= dst_row) {
      check(cudaMemcpyAsync(hidden_.get() + dst_row * d, hidden_.get() + src_row * d, bytes, cudaMemcpyDeviceToDevice,
                            stream_),
            "move_hidden");
    } else {  // overlapping: through the scratch rows (xb holds at least n_batch * n_embd floats)
      check(cudaMemcpyAsync(xb_.get(), hidden_.get() + src_row * d, bytes, cudaMemcpyDeviceToDevice, stream_),
            "move_hidden");
      check(cudaMemcpyAsync(hidden_.get() + dst_row * d, xb_.get(), bytes, cudaMemcpyDeviceToDevice, stream_),
            "move_hidden");
    }
  }

 private:
  void device() const { check(cudaSetDevice(w_->device), "cudaSetDevice"); }

  // Checks every row's sequence and position on the host, then copies them to the device — only when they
  // changed since the last copy (the layers of one forward pass share them), from pinned memory so that the copy
  // does not wait for the queued kernels.
  void upload_rows(int64_t n) {
    check_row_positions(io_, n, n_seq_, n_ctx_);
    const size_t bytes = static_cast<size_t>(n) * sizeof(int32_t);
    int32_t* shadow_seq = shadow_rows_.data();
    int32_t* shadow_pos = shadow_rows_.data() + n_batch_;
    if (std::memcmp(shadow_seq, io_.row_seq, bytes) == 0 && std::memcmp(shadow_pos, io_.row_pos, bytes) == 0) return;
    device();
    check(cudaEventSynchronize(rows_free_), "row positions");  // the previous copy has read the pinned rows
    int32_t* pinned_seq = rows_pinned_.get();
    int32_t* pinned_pos = rows_pinned_.get() + n_batch_;
    std::memcpy(pinned_seq, io_.row_seq, bytes);
    std::memcpy(pinned_pos, io_.row_pos, bytes);
    check(cudaMemcpyAsync(row_seq_.get(), pinned_seq, bytes, cudaMemcpyHostToDevice, stream_), "row positions");
    check(cudaMemcpyAsync(row_pos_.get(), pinned_pos, bytes, cudaMemcpyHostToDevice, stream_), "row positions");
    check(cudaEventRecord(rows_free_, stream_), "row positions");
    std::memcpy(shadow_seq, io_.row_seq, bytes);
    std::memcpy(shadow_pos, io_.row_pos, bytes);
  }

  float* k_layer(int64_t layer) { return k_cache_.get() + static_cast<size_t>(layer) * n_seq_ * n_ctx_ * kv_dim_; }
  float* v_layer(int64_t layer) { return v_cache_.get() + static_cast<size_t>(layer) * n_seq_ * n_ctx_ * kv_dim_; }

  void matmul(const DeviceMatrix& m, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy,
              bool accumulate = false) {
    cuda::matmul(stream_, m.type, m.data, m.row_bytes, m.n_in, m.n_out, x, ldx, n, y, ldy, accumulate);
  }

  // xb = RMSNorm_l(hidden); K/V of layer l for the n rows into the cache (biases, K norm and RoPE applied to K).
  void norm_and_write_kv(int64_t layer, int64_t n) {
    const DeviceLayer& L = w_->layers[layer];
    const int64_t d = hp_.n_embd;
    cuda::rms_norm(stream_, hidden_.get(), L.attn_norm, xb_.get(), n, d, hp_.rms_eps);
    matmul(L.wk, xb_.get(), d, n, k_new_.get(), kv_dim_);
    matmul(L.wv, xb_.get(), d, n, v_new_.get(), kv_dim_);
    if (L.bk) {
      cuda::add_bias(stream_, k_new_.get(), L.bk, n, kv_dim_);
      cuda::add_bias(stream_, v_new_.get(), L.bv, n, kv_dim_);
    }
    if (L.k_norm) cuda::head_rms_norm(stream_, k_new_.get(), L.k_norm, n * hp_.n_kv_head, hp_.head_dim, hp_.rms_eps);
    cuda::rope(stream_, k_new_.get(), kv_dim_, n, row_pos_.get(), hp_.n_kv_head, hp_.head_dim, hp_.n_rot, hp_.rope_base,
               w_->rope_freqs, hp_.rope_neox);
    cuda::kv_store(stream_, k_new_.get(), v_new_.get(), n, row_seq_.get(), row_pos_.get(), k_layer(layer),
                   v_layer(layer), n_ctx_, kv_dim_);
  }

  // logits_ (on the device) = output(RMSNorm_final(hidden[row])).
  void device_head(int64_t row) {
    check_row(row, n_batch_);
    device();
    const int64_t d = hp_.n_embd;
    cuda::rms_norm(stream_, hidden_.get() + row * d, w_->output_norm, xb_.get(), 1, d, hp_.rms_eps);
    matmul(w_->output, xb_.get(), d, 1, logits_.get(), hp_.n_vocab);
  }

  // Statistics on the device; k ids, k probabilities and 4 features come back in one copy.
  void lens_statistics(const int32_t* ids, int64_t m, int64_t k) {
    int32_t* d_ids = reinterpret_cast<int32_t*>(lens_out_.get());
    float* d_probs = reinterpret_cast<float*>(lens_out_.get() + lens_k_ * 4);
    float* d_features = reinterpret_cast<float*>(lens_out_.get() + lens_k_ * 8);
    cuda::lens_stats(stream_, logits_.get(), ids, m, k, d_ids, d_probs, d_features, lens_scratch_.get());
    const uint8_t* host = lens_host_.get();
    check(cudaMemcpyAsync(lens_host_.get(), lens_out_.get(), lens_out_.bytes(), cudaMemcpyDeviceToHost, stream_), "lens");
    check(cudaStreamSynchronize(stream_), "lens");
    const int32_t* ids_out = reinterpret_cast<const int32_t*>(host);
    const float* probs_out = reinterpret_cast<const float*>(host + lens_k_ * 4);
    const float* features_out = reinterpret_cast<const float*>(host + lens_k_ * 8);
    const int64_t written = std::min(k, m);
    for (int64_t i = 0; i < k; ++i) {
      io_.lens_ids[i] = i < written ? ids_out[i] : -1;
      io_.lens_probs[i] = i < written ? probs_out[i] : 0.f;
    }
    std::memcpy(io_.lens_features, features_out, 4 * sizeof(float));
  }

  std::shared_ptr<CudaWeights> w_;
  const LlamaHParams& hp_;
  const KernelTable& hk_;
  HostBuffers io_;
  int64_t n_seq_, n_ctx_, n_batch_;
  int64_t q_dim_ = 0, kv_dim_ = 0;
  std::unique_ptr<CUstream_st, StreamDestroy> stream_holder_;  // declared first: destroyed last
  cudaStream_t stream_ = nullptr;
  DeviceArray<float> k_cache_, v_cache_;  // [n_layer][n_seq][n_ctx][kv_dim]
  DeviceArray<float> hidden_;             // [n_batch][n_embd]  residual stream
  DeviceArray<float> xb_;                 // [n_batch][max(n_embd, q_dim)]  normed input / block output
  DeviceArray<float> q_, att_;            // [n_batch][q_dim]
  DeviceArray<float> k_new_, v_new_;      // [n_batch][kv_dim]
  DeviceArray<float> gate_, up_;          // [n_batch][n_ff]
  DeviceArray<float> logits_;             // [n_vocab]
  DeviceArray<float> attn_scratch_;       // partial outputs of split attention (cuda::attention_scratch_floats)
  DeviceArray<int32_t> row_seq_, row_pos_;  // [n_batch]
  DeviceArray<int32_t> candidates_;       // [lens_max_candidates]
  int64_t lens_k_ = 2;                    // max(lens_k, 2): the top 2 are always ranked
  DeviceArray<uint8_t> lens_out_;         // int32 ids[lens_k_] | float probs[lens_k_] | float features[4]
  std::unique_ptr<uint8_t[], PinnedFree> lens_host_;  // pinned copy of lens_out_
  DeviceArray<uint8_t> lens_scratch_;                 // the many-block reduction of a full-vocabulary lens
  std::unique_ptr<float[], PinnedFree> staging_;      // pinned [n_batch][n_embd]: embedding rows
  std::unique_ptr<int32_t[], PinnedFree> rows_pinned_;  // pinned [2][n_batch]: row_seq, row_pos being copied
  std::vector<int32_t> shadow_rows_;                  // [2][n_batch]: what the device's row_seq / row_pos hold
  cudaEvent_t staging_free_ = nullptr;                // recorded after each copy out of staging_
  cudaEvent_t rows_free_ = nullptr;                   // recorded after each copy out of rows_pinned_
};

}  // namespace

std::unique_ptr<Blocks> make_cuda_blocks(std::shared_ptr<CudaWeights> weights, int64_t n_seq, int64_t n_ctx,
                                         int64_t n_batch, const KernelTable& host_kernels, const HostBuffers& io) {
  if (!weights) throw ModelError("BACKEND_UNAVAILABLE", "the model has no CUDA weights");
  return std::make_unique<CudaLlamaBlocks>(std::move(weights), n_seq, n_ctx, n_batch, host_kernels, io);
}

}  // namespace adainfer
