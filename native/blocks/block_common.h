// What the CPU blocks of every architecture share (llama_blocks.cpp, opt_blocks.cpp): weight views and the tensor
// table they are looked up and checked in (TensorTable), matrix products split over the thread pool with activation
// rows quantized once per input (MatmulRunner), and the logit lens's softmax statistics (lens_statistics).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "blocks/blocks.h"
#include "core/ggml_types.h"
#include "core/kernels.h"
#include "core/mapped_file.h"
#include "core/thread_pool.h"

namespace adainfer {

// A weight tensor used in place inside the mapped file, or a layer matrix in the kernels' packed layout
// (blocks/weight_packing.h). GGUF dims: ne0 = row length (inputs), ne1 = rows (outputs). 1-D tensors have ne1 = 1.
struct WeightView {
  const void* data = nullptr;
  int32_t type = -1;
  int64_t ne0 = 0;
  int64_t ne1 = 0;
  size_t row_bytes = 0;
  // data holds the rows in KernelTable::pack_rows[type]'s layout, not GGUF rows: only the matmul kernels read it.
  bool packed = false;
};

// One tensor of a model file as its header describes it (a GGUF, or a safetensors shard: absolute offset of its
// data in that file).
struct TensorSpec {
  std::string name;
  int32_t type = -1;
  std::vector<int64_t> dims;  // GGUF ne order
  uint64_t offset = 0;        // absolute, in files[file]
  int32_t file = 0;           // index into the files the model is loaded from
};

inline std::string shape_str(const std::vector<int64_t>& d) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < d.size(); ++i) s << (i ? ", " : "") << d[i];
  s << "]";
  return s.str();
}

// Looks tensors up by name and turns them into views, checking everything the kernels rely on: presence
// (MISSING_TENSOR), shape (SHAPE_MISMATCH), a type the kernels compute (UNSUPPORTED_TENSOR_TYPE), data inside
// its file and aligned to its element size (TENSOR_OUT_OF_BOUNDS).
class TensorTable {
 public:
  TensorTable(const std::vector<std::shared_ptr<MappedFile>>& files, const std::vector<TensorSpec>& specs,
              const KernelTable& k)
      : files_(files), k_(k) {
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

  // A 1-D tensor of n elements, converted to floats (norm weights, biases, rope factors: tiny, read every row).
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
    if (s.file < 0 || static_cast<size_t>(s.file) >= files_.size())
      throw ModelError("TENSOR_OUT_OF_BOUNDS", "tensor " + s.name + " names file " + std::to_string(s.file) + " of " +
                                                   std::to_string(files_.size()));
    const MappedFile& file_ = *files_[s.file];
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
                                                   std::to_string(bytes) + ") runs past the end of " + file_.path() +
                                                   " (" + std::to_string(file_.size()) + " bytes)");
    WeightView v;
    v.data = file_.data() + s.offset;
    v.type = s.type;
    v.ne0 = cols;
    v.ne1 = rows;
    v.row_bytes = rb;
    return v;
  }

  const std::vector<std::shared_ptr<MappedFile>>& files_;
  const KernelTable& k_;
  std::map<std::string, const TensorSpec*> by_name_;
};

// y = W x over the thread pool. Output rows are split across the threads; each runs the kernel on its own ranges of
// W's rows, so weights are streamed once per call whatever the number of tokens. Quantized weight types first get
// their activation rows quantized (once per input, in parallel over rows for a batch), as ggml does.
class MatmulRunner {
 public:
  MatmulRunner(ThreadPool& pool, const KernelTable& k) : pool_(pool), k_(k) {}
  // y = W x for n rows. same_input: x holds the very rows of the previous call (same pointer, shape and
  // contents), so activation rows already quantized for an integer matmul are reused (K/V/Q, gate/up).
  void operator()(const WeightView& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy,
                  bool same_input = false);

 private:
  // Activation rows quantized for the integer matmuls (KernelTable::act_format), one buffer per format, and
  // what they were made from (nullptr: nothing valid).
  struct ActRows {
    std::vector<uint8_t> rows;
    const float* x = nullptr;
    int64_t ldx = 0, n_in = 0, n = 0;
  };
  static uint8_t* aligned_rows(ActRows& a);
  ThreadPool& pool_;
  const KernelTable& k_;
  ActRows act_[kActFormats];
};

// Softmax statistics over io.logits[ids[0..m)] (ids == nullptr: the first m, the whole vocabulary) into the lens
// buffers: top-k ids and probabilities, p1, p2, p1 - p2, entropy (nats). `top`: scratch of max(k, 2) ids.
void lens_statistics(const HostBuffers& io, const int32_t* ids, int64_t m, int64_t k, int32_t* top);

// The change of a residual row between two checks, in double: cosine(now, before) and ||now - before|| / ||before||
// (1 and 0 where `before` is zero). Scalar: it runs once per check over n_embd floats, next to a head read of
// n_vocab x n_embd weights, so a SIMD variant would not show.
void hidden_change(const float* now, const float* before, int64_t n, float* cosine, float* relative_norm);

// Causal attention of rows [0, n) over one layer's caches (k_layer / v_layer: [n_seq][n_ctx][n_kv_head * head_dim]);
// row t is position io.row_pos[t] of sequence io.row_seq[t], its own K/V already in the cache. Runs of rows of one
// sequence at consecutive positions share one kernel call (a prompt chunk; a batch of decoding sequences is one run
// per row); work items are (run, group of query heads sharing a KV head: the SIMD kernels take a group together),
// split over the pool. q, out: [n][n_head * head_dim]. runs: n + 1 entries; scratch: pool.size() * n_ctx floats.
// head_stats: nullptr, or [n][n_head][2]: the AttentionArgs statistics of the last row of each run, written there.
// Returns the number of runs (runs[0..n_runs] their bounds).
int64_t attention_rows(ThreadPool& pool, const KernelTable& k, const HostBuffers& io, int64_t n, int64_t n_head,
                       int64_t n_kv_head, int64_t head_dim, const float* q, float* out, const float* k_layer,
                       const float* v_layer, int64_t n_ctx, int64_t* runs, float* scratch, float* head_stats = nullptr);

}  // namespace adainfer
