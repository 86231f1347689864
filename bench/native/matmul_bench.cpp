// Micro-benchmark of the matmul kernels on TinyLlama-1.1B-shaped weights (not a test; built with
// -DADAINFER_BENCH=ON, see CMakeLists.txt):
//   decode: one token through the 7 matrices of each of 22 layers (~1.1 GB of F16, far beyond the caches),
//           reported as GB/s of weights streamed;
//   prefill: N tokens through one layer's matrices, reported as GMAC/s (multiply-adds per second).
//   few rows: decode mode with --tokens 2..16 streams all 22 layers with the few-row kernels (matmul_act_few),
//           as MatmulRunner does; --no-few takes the prefill kernels instead.
// usage: adainfer_matmul_bench TYPE [decode|prefill|hot] [--tokens N] [--threads T] [--isa NAME] [--reps R] [--no-few]
//   TYPE: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K Q8_K;  NAME: generic avx2 avx512 avx512_plain
//   --packed: the weights in the table's packed layout (KernelTable::pack_rows, as a CPU model loads its layer
//   matrices: Q4_0 and Q8_0 on avx2) through the packed kernels; without it, GGUF rows.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "core/ggml_types.h"
#include "core/kernels.h"
#include "core/quantize.h"
#include "core/thread_pool.h"

using namespace adainfer;

namespace {

struct Shape {
  int64_t rows, cols;  // W: rows x cols (cols = n_in)
};
// TinyLlama-1.1B: dim 2048, 32 heads of 64, 4 kv heads, ffn 5632
const Shape kLayerShapes[] = {{2048, 2048}, {256, 2048}, {256, 2048}, {2048, 2048}, {5632, 2048}, {5632, 2048}, {2048, 5632}};
// "hot": a matrix that stays in L2, read over and over (the kernel's compute ceiling, no DRAM traffic)
const Shape kHotShapes[] = {{256, 2048}, {256, 2048}, {256, 2048}, {256, 2048}, {256, 2048}, {256, 2048}, {256, 2048}};
const Shape* kLayer = kLayerShapes;
constexpr int kLayers = 22;

int type_by_name(const std::string& s) {
  const char* names[] = {"F32", "F16", "Q4_0", "Q4_1", "", "", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"};
  for (int i = 0; i < 16; ++i)
    if (s == names[i]) return i;
  if (s == "BF16") return 30;
  return -1;
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
// CPU time of the whole process (all threads): on a shared machine, where this process waits for a core, the wall
// time grows but the CPU time does not, so CPU ms per rep compare kernels more steadily (1 thread: the work itself).
double cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s TYPE [decode|prefill] [--tokens N] [--threads T] [--isa NAME] [--reps R]\n", argv[0]);
    return 2;
  }
  const int type = type_by_name(argv[1]);
  std::string mode = argc > 2 && argv[2][0] != '-' ? argv[2] : "decode";
  int64_t n_tok = mode == "decode" ? 1 : 512;
  int threads = 1, reps = 5;
  bool no_few = false, packed = false;
  std::string isa = "avx512";
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--tokens" && i + 1 < argc) n_tok = std::atoll(argv[++i]);
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    if (a == "--isa" && i + 1 < argc) isa = argv[++i];
    if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
    if (a == "--no-few") no_few = true;
    if (a == "--packed") packed = true;
  }
  const KernelTable* k = isa == "avx512_plain" ? kernels_avx512_plain() : kernels_by_name(isa.c_str());
  if (type < 0 || !k || !k->matmul[type]) {
    std::fprintf(stderr, "unknown or unsupported type / isa\n");
    return 2;
  }
  if (packed && !k->pack_rows[type]) {
    std::fprintf(stderr, "%s has no packed layout for this type\n", k->name);
    return 2;
  }
  if (mode == "hot") kLayer = kHotShapes;
  const int layers = mode == "decode" ? kLayers : 1;
  // Weights: random values quantized once per matrix shape, copied into every layer (copying is fast).
  std::vector<std::vector<uint8_t>> mats;
  const int hot_reps = mode == "hot" ? 200 : 1;
  size_t total = 0;
  uint64_t seed = 1;
  for (int l = 0; l < layers; ++l) {
    for (int si = 0; si < 7; ++si) {
      const Shape& s = kLayer[si];
      const size_t bytes = row_bytes(type, s.cols) * s.rows;
      std::vector<uint8_t> m(bytes);
      if (l == 0) {
        std::vector<float> x(static_cast<size_t>(s.cols) * 64);
        for (auto& v : x) {
          seed = seed * 6364136223846793005ull + 1442695040888963407ull;
          v = (static_cast<float>((seed >> 40) & 0xffff) / 65536.f - 0.5f) * 0.1f;
        }
        const size_t chunk = row_bytes(type, s.cols) * 64;
        for (int64_t r = 0; r < s.rows; r += 64) quantize_rows(type, x.data(), m.data() + r / 64 * chunk, 64, s.cols);
      } else {
        std::memcpy(m.data(), mats[mats.size() - 7].data(), bytes);  // packed too, when layer 0's is
      }
      total += bytes;
      if (packed && l == 0) {
        std::vector<uint8_t> p(bytes);
        k->pack_rows[type](m.data(), p.data(), s.rows, s.cols);
        m = std::move(p);
      }
      mats.push_back(std::move(m));
    }
  }
  const int64_t max_in = 5632, max_out = 5632;
  std::vector<float> x(static_cast<size_t>(n_tok * max_in)), y(static_cast<size_t>(n_tok * max_out));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.001f * static_cast<float>(i));
  const int32_t format = k->act_format[type];
  // as MatmulRunner: the few-row kernel for 2 .. kFewRowsMax rows where the table has one
  const bool few = !no_few && n_tok >= 2 && n_tok <= kFewRowsMax && k->matmul_act_few[type];
  const MatmulActFn act_fn = packed ? (few ? k->matmul_act_few_packed[type] : k->matmul_act_packed[type])
                                    : (few ? k->matmul_act_few[type] : k->matmul_act[type]);
  std::vector<uint8_t> act;
  ThreadPool pool(threads);

  auto run_once = [&] {
    for (int hr = 0; hr < hot_reps; ++hr)
    for (size_t m = 0; m < mats.size(); ++m) {
      const Shape& s = kLayer[m % 7];
      if (format != kActF32) {
        const size_t lda = act_row_bytes(format, s.cols);
        if (act.size() < lda * n_tok + 64) act.resize(lda * n_tok + 64);
        uint8_t* a = act.data() + (64 - reinterpret_cast<uintptr_t>(act.data()) % 64) % 64;  // as the blocks: aligned
        for (int64_t t = 0; t < n_tok; ++t) k->quantize_act[format](x.data() + t * s.cols, a + t * lda, s.cols);
        pool.parallel_for(s.rows, 48, [&](int64_t r0, int64_t r1, int) {
          act_fn(mats[m].data(), s.cols, a, static_cast<int64_t>(lda), n_tok, y.data(), s.rows, r0, r1);
        });
      } else {
        pool.parallel_for(s.rows, 48, [&](int64_t r0, int64_t r1, int) {
          k->matmul[type](mats[m].data(), s.cols, x.data(), s.cols, n_tok, y.data(), s.rows, r0, r1);
        });
      }
    }
  };
  run_once();  // warm-up
  std::vector<double> times, cpu_times;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now(), c0 = cpu_now();
    run_once();
    times.push_back(now() - t0);
    cpu_times.push_back(cpu_now() - c0);
  }
  std::sort(times.begin(), times.end());
  std::sort(cpu_times.begin(), cpu_times.end());
  const double med = times[times.size() / 2];
  const double cpu_med = cpu_times[cpu_times.size() / 2];
  double macs = 0;
  for (int i = 0; i < 7; ++i) macs += static_cast<double>(kLayer[i].rows) * kLayer[i].cols;
  macs *= static_cast<double>(layers) * n_tok * hot_reps;
  total *= hot_reps;
  std::printf("%s %s%s%s isa=%s threads=%d tokens=%lld: %.2f ms (cpu %.2f ms), %.1f GB/s of weights, %.1f GMAC/s\n", argv[1],
              mode.c_str(), few ? " (few-row kernel)" : "", packed ? " (packed)" : "", k == kernels_avx512_vnni() ? "avx512+vnni" : k->name, threads,
              (long long)n_tok, med * 1e3, cpu_med * 1e3, total / med / 1e9, macs / med / 1e9);
  return 0;
}
