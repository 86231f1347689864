#include "fuzz_loader.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <initializer_list>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <exception>
#include <memory>
#include <new>
#include <vector>

#include "blocks/llama_blocks.h"
#include "core/kernels.h"
#include "core/mapped_file.h"
#include "gguf_table.h"

namespace adafuzz {

const char* stage_name(Stage s) {
  switch (s) {
    case Stage::kNotGguf: return "not-gguf";
    case Stage::kNotLlama: return "not-llama";
    case Stage::kMisaligned: return "misaligned";
    case Stage::kMapFailed: return "map-failed";
    case Stage::kRejected: return "rejected";
    case Stage::kLoaded: return "loaded";
    case Stage::kForwardError: return "forward-error";
  }
  return "?";
}

int64_t element_alignment(int32_t type) {
  switch (type) {
    case 0:   // F32
    case 15:  // Q8_K (float scale)
    case 26:  // I32
      return 4;
    case 27:  // I64
    case 28:  // F64
      return 8;
    case 24:  // I8
      return 1;
    default:  // F16, BF16, I16 and the quantized blocks (fp16 scales)
      return 2;
  }
}

namespace {

bool pass_misaligned() {
  static const bool on = [] {
    const char* e = std::getenv("ADAINFER_FUZZ_MISALIGNED");
    return e && *e == '1';
  }();
  return on;
}

// The input as a file the loader can map: an anonymous memory file, reached through /proc/self/fd.
class MemFile {
 public:
  MemFile(const uint8_t* data, size_t size) {
    fd_ = ::memfd_create("adainfer-fuzz", MFD_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error("memfd_create failed");
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::write(fd_, data + done, size - done);
      if (n <= 0) throw std::runtime_error("memfd write failed");
      done += static_cast<size_t>(n);
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// A short forward pass over the loaded weights, two sequences in one cache: a 3-row prompt batch (2 rows of
// sequence 0, 1 of sequence 1), then a decode batch of one row each, the K/V fill of a skipped layer, the head
// and both logit lenses. Exercises every block on weights that passed validation but may hold any bit
// pattern (NaN, inf, denormals).
void forward(const std::shared_ptr<const adainfer::LlamaWeights>& w, const adainfer::KernelTable& k) {
  const adainfer::LlamaHParams& hp = w->hp;
  const int64_t n_seq = 2, n_ctx = 4, n_batch = 3, lens_k = 3, n_cand = 3;
  std::vector<int32_t> tokens(n_batch), row_seq(n_batch), row_pos(n_batch), cand(n_cand), ids(lens_k);
  std::vector<float> logits(static_cast<size_t>(hp.n_vocab));
  std::vector<float> probs(lens_k), features(4);
  adainfer::HostBuffers io;
  io.tokens = tokens.data();
  io.row_seq = row_seq.data();
  io.row_pos = row_pos.data();
  io.logits = logits.data();
  io.lens_candidates = cand.data();
  io.lens_max_candidates = n_cand;
  io.lens_ids = ids.data();
  io.lens_probs = probs.data();
  io.lens_features = features.data();
  io.lens_k = lens_k;
  adainfer::LlamaState st(w, n_seq, n_ctx, n_batch, 1, k, io);
  const int32_t last = static_cast<int32_t>(hp.n_vocab - 1);
  const int32_t mid = static_cast<int32_t>(hp.n_vocab / 2);
  auto rows = [&](std::initializer_list<std::array<int32_t, 3>> r) {  // {token, seq, pos}
    int64_t i = 0;
    for (const auto& x : r) {
      tokens[i] = x[0];
      row_seq[i] = x[1];
      row_pos[i] = x[2];
      ++i;
    }
    return i;
  };
  int64_t n = rows({{0, 0, 0}, {last, 0, 1}, {mid, 1, 0}});
  st.embed(n);
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    st.attention_block(l, n);
    st.mlp_block(l, n);
  }
  n = rows({{mid, 0, 2}, {0, 1, 1}});
  st.embed(n);
  st.attention_block(0, n);
  st.mlp_block(0, n);
  for (int64_t l = 1; l < hp.n_layer; ++l) st.fill_kv(l, n);  // as after an exit at layer 1
  st.head(0);
  st.logit_lens(1, std::min<int64_t>(2, lens_k));
  cand[0] = 0;
  cand[1] = last;
  cand[2] = mid;
  st.logit_lens_candidates(0, n_cand, lens_k);
  std::vector<float> row(static_cast<size_t>(hp.n_embd));
  st.read_hidden(1, 1, row.data());  // the row ops of batch compaction
  st.move_hidden(0, 1, 1);
  st.write_hidden(1, 1, row.data());
}

}  // namespace

Outcome run_loader_input(const uint8_t* data, size_t size) {
  Outcome out;
  GgufTable table;
  if (!parse_gguf_table(data, size, &table, &out.message)) return out;
  adainfer::LlamaHParams hp;
  if (!llama_hparams_from_table(table, &hp, &out.message)) {
    out.stage = Stage::kNotLlama;
    return out;
  }
  if (!pass_misaligned()) {
    for (const auto& t : table.tensors) {
      if (t.offset % static_cast<uint64_t>(element_alignment(t.type)) != 0) {
        out.stage = Stage::kMisaligned;
        out.message = "tensor " + t.name + " data is misaligned";
        return out;
      }
    }
  }
  std::shared_ptr<adainfer::MappedFile> file;
  try {
    MemFile mem(data, size);
    file = std::make_shared<adainfer::MappedFile>(mem.path());
  } catch (const std::exception& e) {
    out.stage = Stage::kMapFailed;
    out.message = e.what();
    return out;
  }
  // Alternate kernel variants by input so both the scalar reference and the SIMD code see fuzzed weights.
  const adainfer::KernelTable& k = (size & 1) ? adainfer::kernels_best() : adainfer::kernels_generic();
  std::shared_ptr<const adainfer::LlamaWeights> w;
  try {
    w = std::make_shared<const adainfer::LlamaWeights>(adainfer::load_llama_weights(file, hp, table.tensors, k));
  } catch (const adainfer::ModelError& e) {
    out.stage = Stage::kRejected;
    out.code = e.code;
    out.message = e.what();
    return out;
  }
  // Anything else escaping load_llama_weights (std::bad_alloc, std::length_error, ...) is a finding: the
  // addon would report it as NATIVE, but the loader promises ModelError for bad tables. Let it propagate.
  out.stage = Stage::kLoaded;
  try {
    forward(w, k);
  } catch (const std::exception& e) {
    out.stage = Stage::kForwardError;
    out.message = e.what();
  }
  return out;
}

}  // namespace adafuzz

#ifdef ADAINFER_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const adafuzz::Outcome o = adafuzz::run_loader_input(data, size);
  // A forward pass over weights that loaded fine must not throw: the shapes were validated.
  if (o.stage == adafuzz::Stage::kForwardError) {
    std::fprintf(stderr, "forward pass threw after a successful load: %s\n", o.message.c_str());
    std::abort();
  }
  return 0;
}
#endif
