// Native loader tests (ctest "native_loader"; run under ASan/UBSan by .ci/run): MappedFile edge cases, every
// tensor of the bundled model's table made to lie in every way, hostile hyper-parameters, deterministic
// mutations of the bundled file through the fuzz target, and a replay of a fuzz corpus directory.
//   ADAINFER_TEST_MODEL         model file (default: the bundled models/adainfer-tinystories-10L-ee.f16.gguf)
//   ADAINFER_LOADER_MUTATIONS   mutated inputs to run (default 400)
//   ADAINFER_FUZZ_CORPUS        a directory of inputs to replay (optional: e.g. the libFuzzer corpus)
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cinttypes>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../../native/test_harness.h"
#include "blocks/llama_blocks.h"
#include "core/kernels.h"
#include "core/mapped_file.h"
#include "fuzz_loader.h"
#include "gguf_table.h"

#ifndef ADAINFER_SOURCE_DIR
#define ADAINFER_SOURCE_DIR "."
#endif

using adafuzz::Outcome;
using adafuzz::Stage;

namespace {

std::string model_path() {
  const char* env = std::getenv("ADAINFER_TEST_MODEL");
  return env && *env ? env : std::string(ADAINFER_SOURCE_DIR) + "/models/adainfer-tinystories-10L-ee.f16.gguf";
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

const std::vector<uint8_t>& model_bytes() {
  static const std::vector<uint8_t> bytes = read_file(model_path());
  return bytes;
}

struct Parsed {
  adafuzz::GgufTable table;
  adainfer::LlamaHParams hp;
};

const Parsed& model_table() {
  static const Parsed p = [] {
    Parsed out;
    const auto& b = model_bytes();
    std::string why;
    if (!adafuzz::parse_gguf_table(b.data(), b.size(), &out.table, &why)) std::printf("    parse: %s\n", why.c_str());
    if (!adafuzz::llama_hparams_from_table(out.table, &out.hp, &why)) std::printf("    hparams: %s\n", why.c_str());
    return out;
  }();
  return p;
}

std::shared_ptr<adainfer::MappedFile> mapped_model() {
  static const std::shared_ptr<adainfer::MappedFile> f = std::make_shared<adainfer::MappedFile>(model_path());
  return f;
}

// load_llama_weights on the bundled file: "" when it loads, else the ModelError code; "EXCEPTION: ..." for any
// other exception (a finding: the loader promises ModelError for a bad table).
std::string load_code(const std::vector<adainfer::TensorSpec>& tensors, const adainfer::LlamaHParams& hp,
                      const adainfer::KernelTable& k = adainfer::kernels_generic()) {
  try {
    adainfer::load_llama_weights(mapped_model(), hp, tensors, k);
    return "";
  } catch (const adainfer::ModelError& e) {
    return e.code;
  } catch (const std::exception& e) {
    return std::string("EXCEPTION: ") + e.what();
  }
}

bool throws(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception&) {
    return true;
  }
  return false;
}

// splitmix64: the same mutation sequence on every machine.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) { return n ? next() % n : 0; }
};

const uint64_t kInteresting[] = {0,
                                 1,
                                 2,
                                 3,
                                 31,
                                 32,
                                 255,
                                 65535,
                                 0x7fffffffULL,
                                 0x80000000ULL,
                                 0xffffffffULL,
                                 0x100000000ULL,
                                 (1ULL << 53) - 1,
                                 1ULL << 53,
                                 0x7fffffffffffffffULL,
                                 0x8000000000000000ULL,
                                 0xfffffffffffffff0ULL,
                                 0xffffffffffffffffULL};

}  // namespace

TEST(mapped_file_refuses_what_is_not_a_regular_nonempty_file) {
  CHECK(throws([] { adainfer::MappedFile f("/nonexistent/adainfer/model.gguf"); }));
  CHECK(throws([] { adainfer::MappedFile f("/"); }));          // a directory
  CHECK(throws([] { adainfer::MappedFile f("/dev/null"); }));  // a character device
  CHECK(throws([] { adainfer::MappedFile f(""); }));
  char empty[] = "/tmp/adainfer-empty-XXXXXX";
  const int fd = ::mkstemp(empty);
  CHECK(fd >= 0);
  if (fd >= 0) {
    CHECK(throws([&] { adainfer::MappedFile f(empty); }));
    CHECK(::write(fd, "G", 1) == 1);
    adainfer::MappedFile one(empty);
    CHECK(one.size() == 1);
    CHECK(one.data()[0] == 'G');
    ::close(fd);
    ::unlink(empty);
  }
}

TEST(mapped_file_contains_is_overflow_safe) {
  adainfer::MappedFile& f = *mapped_model();
  const uint64_t n = f.size();
  CHECK(f.contains(0, n));
  CHECK(f.contains(n, 0));
  CHECK(!f.contains(n, 1));
  CHECK(!f.contains(n + 1, 0));
  CHECK(!f.contains(0, n + 1));
  CHECK(!f.contains(1, n));
  CHECK(!f.contains(UINT64_MAX, 1));
  CHECK(!f.contains(1, UINT64_MAX));
  CHECK(!f.contains(UINT64_MAX, UINT64_MAX));
  CHECK(!f.contains(n - 1, UINT64_MAX - n + 2));  // offset + bytes wraps to a small number
}

TEST(bundled_model_loads_and_runs_with_every_kernel_variant) {
  const auto& b = model_bytes();
  CHECK_MSG(b.size() > 1000, "model %s not found", model_path().c_str());
  Outcome o = adafuzz::run_loader_input(b.data(), b.size());  // even size: generic kernels
  CHECK_MSG(o.stage == Stage::kLoaded, "stage %s: %s", adafuzz::stage_name(o.stage), o.message.c_str());
  std::vector<uint8_t> odd(b);
  odd.push_back(0);  // one trailing byte changes nothing in the table; odd size selects the best kernels
  o = adafuzz::run_loader_input(odd.data(), odd.size());
  CHECK_MSG(o.stage == Stage::kLoaded, "stage %s: %s", adafuzz::stage_name(o.stage), o.message.c_str());
  CHECK(load_code(model_table().table.tensors, model_table().hp, adainfer::kernels_best()).empty());
}

// Every tensor of the table, each edit in turn: the loader answers with the right code, never anything else.
TEST(every_tensor_of_the_table_lying_is_a_model_error) {
  const Parsed& p = model_table();
  const auto& base = p.table.tensors;
  const uint64_t size = mapped_model()->size();
  struct Edit {
    const char* what;
    std::function<void(adainfer::TensorSpec&)> apply;
    const char* codes;  // acceptable codes, '|' separated ("" = must load)
  };
  const std::vector<Edit> edits = {
      {"offset at the last byte", [&](adainfer::TensorSpec& t) { t.offset = size - 1; }, "TENSOR_OUT_OF_BOUNDS"},
      {"offset at the end", [&](adainfer::TensorSpec& t) { t.offset = size; }, "TENSOR_OUT_OF_BOUNDS"},
      {"offset 2^63", [](adainfer::TensorSpec& t) { t.offset = 1ULL << 63; }, "TENSOR_OUT_OF_BOUNDS"},
      {"offset 2^64-1", [](adainfer::TensorSpec& t) { t.offset = UINT64_MAX; }, "TENSOR_OUT_OF_BOUNDS"},
      {"offset 0 (overlaps the header)", [](adainfer::TensorSpec& t) { t.offset = 0; }, ""},
      // Not here: an offset that is not a multiple of the element size. The loader does not check it and
      // the kernels would load misaligned floats (UB); LlamaModel.load refuses such tables (lib/model/llama.ts).
      {"offset moved by 32", [](adainfer::TensorSpec& t) { t.offset += 32; }, "|TENSOR_OUT_OF_BOUNDS"},
      {"no dims", [](adainfer::TensorSpec& t) { t.dims.clear(); }, "SHAPE_MISMATCH"},
      {"a zero dim", [](adainfer::TensorSpec& t) { t.dims[0] = 0; }, "SHAPE_MISMATCH"},
      {"a negative dim", [](adainfer::TensorSpec& t) { t.dims.back() = -1; }, "SHAPE_MISMATCH"},
      {"INT64_MAX dims", [](adainfer::TensorSpec& t) { t.dims.assign(2, INT64_MAX); }, "SHAPE_MISMATCH"},
      {"INT64_MIN dim", [](adainfer::TensorSpec& t) { t.dims[0] = INT64_MIN; }, "SHAPE_MISMATCH"},
      {"an extra dim of 1", [](adainfer::TensorSpec& t) { t.dims.push_back(1); }, "SHAPE_MISMATCH"},
      {"five dims", [](adainfer::TensorSpec& t) { t.dims.assign(5, 2); }, "SHAPE_MISMATCH"},
      {"type -1", [](adainfer::TensorSpec& t) { t.type = -1; }, "UNSUPPORTED_TENSOR_TYPE"},
      {"type 40 (kMaxType)", [](adainfer::TensorSpec& t) { t.type = 40; }, "UNSUPPORTED_TENSOR_TYPE"},
      {"type 2^30", [](adainfer::TensorSpec& t) { t.type = 1 << 30; }, "UNSUPPORTED_TENSOR_TYPE"},
      {"type 4 (retired Q4_2: no layout)", [](adainfer::TensorSpec& t) { t.type = 4; }, "UNSUPPORTED_TENSOR_TYPE"},
      {"type Q4_0 (fewer bytes)", [](adainfer::TensorSpec& t) { t.type = 2; }, "|UNSUPPORTED_TENSOR_TYPE|SHAPE_MISMATCH"},
      {"type Q6_K", [](adainfer::TensorSpec& t) { t.type = 14; }, "|UNSUPPORTED_TENSOR_TYPE|SHAPE_MISMATCH"},
      {"type F32 (twice the bytes)", [](adainfer::TensorSpec& t) { t.type = 0; }, "|TENSOR_OUT_OF_BOUNDS"},
      {"type BF16", [](adainfer::TensorSpec& t) { t.type = 30; }, ""},
      {"renamed", [](adainfer::TensorSpec& t) { t.name += "x"; }, "|MISSING_TENSOR"},
      {"empty name", [](adainfer::TensorSpec& t) { t.name.clear(); }, "|MISSING_TENSOR"},
  };
  int runs = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    for (const Edit& e : edits) {
      std::vector<adainfer::TensorSpec> t = base;
      if (t[i].dims.empty() && (std::strstr(e.what, "dim") && !std::strstr(e.what, "no dims"))) continue;
      e.apply(t[i]);
      const std::string code = load_code(t, p.hp);
      ++runs;
      const std::string allowed = std::string("|") + e.codes + "|";
      // A tensor the loader does not use (none in this model) or an edit that keeps it valid may load.
      const bool ok = allowed.find("|" + code + "|") != std::string::npos ||
                      (std::string(e.codes).empty() && code.empty());
      CHECK_MSG(ok, "%s of %s: got '%s', expected one of '%s'", e.what, base[i].name.c_str(), code.c_str(), e.codes);
    }
  }
  // Whole-table edits.
  CHECK(load_code({}, p.hp) == "MISSING_TENSOR");
  std::vector<adainfer::TensorSpec> twice = base;
  twice.insert(twice.end(), base.begin(), base.end());
  CHECK(load_code(twice, p.hp).empty());  // duplicates: the TS reader refuses them; natively the last one wins
  std::printf("    %d table edits\n", runs);
}

TEST(hostile_hyper_parameters_are_model_errors) {
  const Parsed& p = model_table();
  const int64_t big[] = {INT64_MIN, -1, 0, (int64_t(1) << 31) + 1, (int64_t(1) << 40), INT64_MAX};
  int64_t adainfer::LlamaHParams::*fields[] = {
      &adainfer::LlamaHParams::n_layer,  &adainfer::LlamaHParams::n_embd, &adainfer::LlamaHParams::n_head,
      &adainfer::LlamaHParams::n_kv_head, &adainfer::LlamaHParams::head_dim, &adainfer::LlamaHParams::n_ff,
      &adainfer::LlamaHParams::n_vocab,  &adainfer::LlamaHParams::n_rot};
  for (auto f : fields) {
    for (int64_t v : big) {
      adainfer::LlamaHParams hp = p.hp;
      hp.*f = v;
      const std::string code = load_code(p.table.tensors, hp);
      CHECK_MSG(code == "SHAPE_MISMATCH" || code == "MISSING_TENSOR", "field value %" PRId64 ": '%s'", v, code.c_str());
    }
  }
  // Large but in range: each implies tensors the file does not have, or shapes it does not match.
  for (auto f : fields) {
    for (int64_t v : {int64_t(1) << 31, int64_t(3), int64_t(7)}) {
      adainfer::LlamaHParams hp = p.hp;
      hp.*f = v;
      const std::string code = load_code(p.table.tensors, hp);
      CHECK_MSG(code.rfind("EXCEPTION", 0) != 0, "field value %" PRId64 ": '%s'", v, code.c_str());
    }
  }
  for (float bad : {0.f, -1.f, std::nanf(""), -INFINITY}) {
    adainfer::LlamaHParams hp = p.hp;
    hp.rms_eps = bad;
    CHECK(load_code(p.table.tensors, hp) == "SHAPE_MISMATCH");
    hp = p.hp;
    hp.rope_base = bad;
    CHECK(load_code(p.table.tensors, hp) == "SHAPE_MISMATCH");
  }
}

// Deterministic mutations of the bundled file through the fuzz target: truncations, byte flips in the header
// and the data, and header words overwritten with boundary values. Nothing may crash; the unmutated file
// must load, and most header mutations must be refused.
TEST(mutated_model_files_never_crash_the_loader) {
  const char* env = std::getenv("ADAINFER_LOADER_MUTATIONS");
  const long n = env ? std::strtol(env, nullptr, 10) : 400;
  const auto& base = model_bytes();
  const uint64_t header = model_table().table.header_end;
  Rng rng{0xada1f3e5ULL};
  std::map<std::string, int> outcomes;
  const auto t0 = std::chrono::steady_clock::now();
  double slowest_ms = 0;
  std::vector<uint8_t> b;
  for (long i = 0; i < n; ++i) {
    b = base;
    const uint64_t kind = rng.below(6);
    if (kind == 0) {  // truncate anywhere (mostly in the header)
      b.resize(rng.below(4) == 0 ? rng.below(b.size()) : rng.below(header + 64));
    } else if (kind == 1) {  // flip a few header bits
      for (uint64_t j = 0, m = 1 + rng.below(8); j < m; ++j) b[rng.below(header)] ^= uint8_t(1u << rng.below(8));
    } else if (kind == 2) {  // a boundary value over 8 header bytes (counts, lengths, dims, offsets)
      const uint64_t v = kInteresting[rng.below(sizeof kInteresting / sizeof kInteresting[0])];
      const uint64_t at = rng.below(header - 8);
      std::memcpy(&b[at], &v, 8);
    } else if (kind == 3) {  // a boundary value over 4 header bytes (types, n_dims, u32 values)
      const uint32_t v = static_cast<uint32_t>(kInteresting[rng.below(sizeof kInteresting / sizeof kInteresting[0])]);
      const uint64_t at = rng.below(header - 4);
      std::memcpy(&b[at], &v, 4);
    } else if (kind == 4) {  // garbage weights: NaN / inf / denormal halves in the data
      const uint16_t halves[] = {0x7e00, 0x7c00, 0xfc00, 0x0001, 0x8000, 0xffff};
      for (uint64_t j = 0, m = 1 + rng.below(64); j < m; ++j) {
        const uint64_t at = header + rng.below(b.size() - header - 2);
        std::memcpy(&b[at & ~uint64_t(1)], &halves[rng.below(6)], 2);
      }
    } else {  // random bytes over a header span
      const uint64_t at = rng.below(header);
      for (uint64_t j = 0, m = 1 + rng.below(32); j < m && at + j < b.size(); ++j) b[at + j] = uint8_t(rng.next());
    }
    const auto s0 = std::chrono::steady_clock::now();
    const Outcome o = adafuzz::run_loader_input(b.data(), b.size());
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s0).count();
    slowest_ms = std::max(slowest_ms, ms);
    CHECK_MSG(o.stage != Stage::kForwardError, "mutation %ld (kind %d): the forward pass threw: %s", i,
              static_cast<int>(kind), o.message.c_str());
    ++outcomes[std::string(adafuzz::stage_name(o.stage)) + (o.code.empty() ? "" : ":" + o.code)];
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("    %ld mutations in %.1f s (slowest %.1f ms):", n, total, slowest_ms);
  for (const auto& [k, v] : outcomes) std::printf(" %s=%d", k.c_str(), v);
  std::printf("\n");
  CHECK(outcomes["loaded"] > 0);  // the data mutations still load
}

TEST(fuzz_corpus_replays_cleanly) {
  const char* dir = std::getenv("ADAINFER_FUZZ_CORPUS");
  if (!dir || !*dir) {
    std::printf("    (ADAINFER_FUZZ_CORPUS not set: nothing to replay)\n");
    return;
  }
  DIR* d = ::opendir(dir);
  CHECK_MSG(d != nullptr, "cannot open %s", dir);
  if (!d) return;
  int files = 0;
  std::map<std::string, int> outcomes;
  while (dirent* e = ::readdir(d)) {
    const std::string path = std::string(dir) + "/" + e->d_name;
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    const std::vector<uint8_t> b = read_file(path);
    const Outcome o = adafuzz::run_loader_input(b.data(), b.size());
    CHECK_MSG(o.stage != Stage::kForwardError, "%s: the forward pass threw: %s", path.c_str(), o.message.c_str());
    ++outcomes[adafuzz::stage_name(o.stage)];
    ++files;
  }
  ::closedir(d);
  std::printf("    %d corpus files:", files);
  for (const auto& [k, v] : outcomes) std::printf(" %s=%d", k.c_str(), v);
  std::printf("\n");
}
