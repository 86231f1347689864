// adainfer_cuda_tests: every CUDA kernel against the scalar CPU reference (cpu/generic), in the manner of
// ggml's test-backend-ops, then the whole CUDA blocks against the CPU blocks on random-weight models.
// Needs no Node.js, so it runs on a bare GPU server (test/gpu/run.sh builds and runs it).
//
//   adainfer_cuda_tests                    the comparisons; exit 0 all passed, 1 a failure, 77 no CUDA device
//   adainfer_cuda_tests --bench            kernel and model benchmark (llama2-7b geometry, random weights)
//   adainfer_cuda_tests --logits MODEL.gguf OUT.f32 TOKENS [--backend cpu|cuda]
//                                          logits of every position of one batch (TOKENS: 1,2,3), [n][n_vocab]
//   adainfer_cuda_tests --greedy MODEL.gguf OUT.f32 N_GEN TOKENS [--backend cpu|cuda]
//                                          prompt in one batch, then N_GEN greedy steps through the KV cache;
//                                          the logits of every step, [N_GEN][n_vocab] (test/gpu/check_goldens.py)
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../fuzz/native/gguf_table.h"
#include "blocks/llama_blocks.h"
#include "core/ggml_types.h"
#include "core/kernels.h"
#include "core/mapped_file.h"
#include "core/quantize.h"
#include "core/thread_pool.h"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_kernels.h"

using namespace adainfer;

namespace {

int g_failed = 0, g_passed = 0;

void report(bool ok, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void report(bool ok, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::printf("%s ", ok ? "PASS" : "FAIL");
  std::vprintf(fmt, ap);
  std::printf("\n");
  va_end(ap);
  (ok ? g_passed : g_failed)++;
}

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error in %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) { cuda_check(cudaMalloc(reinterpret_cast<void**>(&p), std::max<size_t>(n, 1) * sizeof(T)), "cudaMalloc"); }
  explicit Dev(const std::vector<T>& v) : Dev(v.size()) { up(v); }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  void up(const std::vector<T>& v) { cuda_check(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), "upload"); }
  std::vector<T> down() const {
    std::vector<T> v(n);
    cuda_check(cudaDeviceSynchronize(), "kernel");
    cuda_check(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return v;
  }
};

std::mt19937 rng(1234);
std::vector<float> randn(size_t n, float scale = 1.f) {
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

const char* type_name(int32_t t) {
  switch (t) {
    case 0: return "F32";
    case 1: return "F16";
    case 30: return "BF16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 6: return "Q5_0";
    case 7: return "Q5_1";
    case 8: return "Q8_0";
    case 12: return "Q4_K";
    case 13: return "Q5_K";
    case 14: return "Q6_K";
    default: return "?";
  }
}
const int32_t kTypes[] = {0, 1, 30, 2, 3, 6, 7, 8, 12, 13, 14};
bool is_float_type(int32_t t) { return t == 0 || t == 1 || t == 30; }
int64_t block_elems(int32_t t) {
  TypeTraits tr{};
  type_traits(t, &tr);
  return tr.block_elems;
}

std::vector<uint8_t> quantize(int32_t type, const std::vector<float>& src, int64_t rows, int64_t n_in) {
  std::vector<uint8_t> q(row_bytes(type, n_in) * rows);
  if (quantize_rows(type, src.data(), q.data(), rows, n_in) == 0) {
    std::fprintf(stderr, "cannot quantize to %s\n", type_name(type));
    std::exit(1);
  }
  return q;
}

// ---- kernels ---------------------------------------------------------------------------------------------

void test_dequant() {
  const KernelTable& ref = kernels_generic();
  for (int32_t type : kTypes) {
    const int64_t n_in = is_float_type(type) ? 172 : 512, rows = 7;
    const auto q = quantize(type, randn(rows * n_in), rows, n_in);
    const size_t rb = row_bytes(type, n_in);
    std::vector<float> cpu(rows * n_in);
    for (int64_t r = 0; r < rows; ++r) ref.dequant_row[type](q.data() + r * rb, cpu.data() + r * n_in, n_in);
    Dev<uint8_t> dq(q);
    Dev<float> out(rows * n_in);
    cuda::dequant_rows(nullptr, type, dq.p, rb, n_in, rows, out.p);
    const auto gpu = out.down();
    size_t differ = 0;
    double max_rel = 0;
    for (size_t i = 0; i < cpu.size(); ++i) {
      if (std::memcmp(&cpu[i], &gpu[i], 4) != 0) ++differ;
      max_rel = std::max(max_rel, std::fabs(double(cpu[i]) - gpu[i]) / std::max(1e-30, std::fabs(double(cpu[i]))));
    }
    report(max_rel <= 1e-6, "dequant %-5s %zu of %zu values not bit-identical to the CPU (max rel %.1e)", type_name(type),
           differ, cpu.size(), max_rel);
  }
}

// What the tensor-core path rounds weights and activations to (cuda_kernels.cu: mm_tc_kernel), 0 for none.
enum Round { kNone, kHalf, kBf16 };
float round_to(float v, Round r) {
  if (r == kHalf) return fp16_to_fp32(fp32_to_fp16(v));
  if (r == kBf16) return bf16_to_fp32(fp32_to_bf16(v));
  return v;
}

// Reference y = W x in double over the CPU's dequantized rows (both rounded as the kernel does, if it does).
std::vector<double> ref_matmul(int32_t type, const std::vector<uint8_t>& q, int64_t n_in, int64_t n_out,
                               std::vector<float> x, int64_t ldx, int64_t n_tok, std::vector<double>* mag,
                               Round round = kNone) {
  const size_t rb = row_bytes(type, n_in);
  for (float& v : x) v = round_to(v, round);
  std::vector<float> row(n_in);
  std::vector<double> y(n_tok * n_out);
  mag->assign(n_tok * n_out, 0.0);
  for (int64_t r = 0; r < n_out; ++r) {
    kernels_generic().dequant_row[type](q.data() + r * rb, row.data(), n_in);
    for (float& v : row) v = round_to(v, round);
    for (int64_t t = 0; t < n_tok; ++t) {
      double s = 0, m = 0;
      for (int64_t i = 0; i < n_in; ++i) {
        s += double(row[i]) * x[t * ldx + i];
        m += std::fabs(double(row[i]) * x[t * ldx + i]);
      }
      y[t * n_out + r] = s;
      (*mag)[t * n_out + r] = m;
    }
  }
  return y;
}

void test_matmul() {
  for (int32_t type : kTypes) {
    for (int64_t n_tok : {1, 2, 5, 8, 9, 70}) {
      const int64_t n_in = is_float_type(type) ? (n_tok % 2 ? 172 : 512) : (block_elems(type) == 256 ? 1024 : 512);
      const int64_t n_out = n_tok == 70 ? 130 : 67, ldx = n_in + 4, ldy = n_out + 3;
      const auto q = quantize(type, randn(n_out * n_in), n_out, n_in);
      const auto x = randn(n_tok * ldx);
      std::vector<double> mag;
      // more than 8 tokens: the tensor cores, on weights and activations rounded to 16 bits (F32 excepted)
      const Round round = n_tok <= 8 || type == 0 ? kNone : type == 30 ? kBf16 : kHalf;
      const auto ref = ref_matmul(type, q, n_in, n_out, x, ldx, n_tok, &mag, round);
      Dev<uint8_t> dq(q);
      Dev<float> dx(x);
      Dev<float> dy(n_tok * ldy);
      cuda::matmul(nullptr, type, dq.p, row_bytes(type, n_in), n_in, n_out, dx.p, ldx, n_tok, dy.p, ldy);
      const auto y = dy.down();
      double worst = 0;  // error / (1e-5 * sum |w x|)
      for (int64_t t = 0; t < n_tok; ++t)
        for (int64_t r = 0; r < n_out; ++r)
          worst = std::max(worst, std::fabs(y[t * ldy + r] - ref[t * n_out + r]) / (1e-5 * mag[t * n_out + r] + 1e-30));
      report(worst <= 1.0, "matmul %-5s n_in %4lld n_out %3lld tokens %2lld%s: max |err| / (1e-5 sum|wx|) = %.3f",
             type_name(type), (long long)n_in, (long long)n_out, (long long)n_tok,
             round == kNone ? "" : round == kHalf ? " (tensor cores, f16)" : " (tensor cores, bf16)", worst);
    }
  }
}

// y += W x (the residual add fused into the product) and y = silu(Wg x) * (Wu x), on both paths.
void test_fused() {
  for (int32_t type : {1, 8, 12}) {
    for (int64_t n_tok : {1, 3, 40}) {
      const int64_t n_in = 512, n_out = 200;
      const Round round = n_tok <= 8 ? kNone : kHalf;
      const auto qg = quantize(type, randn(n_out * n_in), n_out, n_in);
      const auto qu = quantize(type, randn(n_out * n_in), n_out, n_in);
      const auto x = randn(n_tok * n_in), y0 = randn(n_tok * n_out);
      std::vector<double> mg, mu;
      const auto g = ref_matmul(type, qg, n_in, n_out, x, n_in, n_tok, &mg, round);
      const auto u = ref_matmul(type, qu, n_in, n_out, x, n_in, n_tok, &mu, round);
      Dev<uint8_t> dg(qg), du(qu);
      Dev<float> dx(x), dy(y0), dglu(n_tok * n_out), dup(n_tok * n_out);
      const size_t rb = row_bytes(type, n_in);
      cuda::matmul(nullptr, type, dg.p, rb, n_in, n_out, dx.p, n_in, n_tok, dy.p, n_out, /*accumulate=*/true);
      cuda::matmul_glu(nullptr, type, dg.p, du.p, rb, n_in, n_out, dx.p, n_in, n_tok, dglu.p, dup.p, n_out);
      const auto y = dy.down(), glu = dglu.down();
      double worst_acc = 0, worst_glu = 0;
      for (int64_t i = 0; i < n_tok * n_out; ++i) {
        worst_acc = std::max(worst_acc, std::fabs(y[i] - (y0[i] + g[i])) / (1e-5 * mg[i] + 1e-6));
        const double want = g[i] / (1.0 + std::exp(-g[i])) * u[i];
        const double scale = 1e-5 * (mg[i] * std::fabs(u[i]) + mu[i] * std::fabs(g[i])) + 1e-6;
        worst_glu = std::max(worst_glu, std::fabs(glu[i] - want) / scale);
      }
      report(worst_acc <= 1.0 && worst_glu <= 1.0, "fused %-5s tokens %2lld: y += Wx (err ratio %.3f), SwiGLU(Wg x, Wu x) (%.3f)",
             type_name(type), (long long)n_tok, worst_acc, worst_glu);
    }
  }
}

void test_matvec_rows() {
  for (int32_t type : {0, 8, 14}) {
    const int64_t n_in = 256, n_out = 300, m = 17;
    const auto q = quantize(type, randn(n_out * n_in), n_out, n_in);
    const auto x = randn(n_in);
    std::vector<double> mag;
    const auto ref = ref_matmul(type, q, n_in, n_out, x, n_in, 1, &mag);
    std::vector<int32_t> ids(m);
    for (int64_t i = 0; i < m; ++i) ids[i] = static_cast<int32_t>((i * 37 + 11) % n_out);
    Dev<uint8_t> dq(q);
    Dev<float> dx(x);
    Dev<int32_t> did(ids);
    Dev<float> dy(std::vector<float>(n_out, -1234.f));
    cuda::matvec_rows(nullptr, type, dq.p, row_bytes(type, n_in), n_in, did.p, m, dx.p, dy.p);
    const auto y = dy.down();
    double worst = 0;
    bool untouched = true;
    for (int64_t r = 0; r < n_out; ++r) {
      const bool cand = std::find(ids.begin(), ids.end(), r) != ids.end();
      if (cand) worst = std::max(worst, std::fabs(y[r] - ref[r]) / (1e-5 * mag[r]));
      else untouched = untouched && y[r] == -1234.f;
    }
    report(worst <= 1.0 && untouched, "matvec_rows %-5s candidates only (max err ratio %.3f)", type_name(type), worst);
  }
}

template <typename A, typename B>
double max_abs_diff(const A& a, const B& b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

void test_vector_ops() {
  const KernelTable& ref = kernels_generic();
  {
    const int64_t rows = 3, n = 4103;
    const auto x = randn(rows * n), w = randn(n);
    std::vector<float> cpu(rows * n);
    for (int64_t r = 0; r < rows; ++r) ref.rms_norm(x.data() + r * n, w.data(), cpu.data() + r * n, n, 1e-5f);
    Dev<float> dx(x), dw(w), out(rows * n);
    cuda::rms_norm(nullptr, dx.p, dw.p, out.p, rows, n, 1e-5f);
    const double d = max_abs_diff(cpu, out.down(), cpu.size());
    report(d <= 1e-5, "rms_norm: max |gpu - cpu| = %.2e", d);
  }
  for (bool neox : {false, true}) {
    for (int64_t n_rot : {64, 32}) {
      for (bool factors : {false, true}) {
        const int64_t n_heads = 4, head_dim = 64, rows = 5;
        const std::vector<int32_t> pos = {0, 1, 17, 500, 4095};
        const auto x = randn(rows * n_heads * head_dim);
        std::vector<float> ff(n_rot / 2);
        for (size_t i = 0; i < ff.size(); ++i) ff[i] = 1.f + 0.5f * i;
        std::vector<float> cpu = x;
        for (int64_t r = 0; r < rows; ++r)
          (neox ? rope_neox : rope_llama)(cpu.data() + r * n_heads * head_dim, n_heads, head_dim, n_rot, pos[r], 10000.f,
                                          factors ? ff.data() : nullptr);
        Dev<float> dx(x), dff(ff);
        Dev<int32_t> dpos(pos);
        cuda::rope(nullptr, dx.p, n_heads * head_dim, rows, dpos.p, n_heads, head_dim, n_rot, 10000.f,
                   factors ? dff.p : nullptr, neox);
        const double d = max_abs_diff(cpu, dx.down(), cpu.size());
        report(d <= 2e-5, "rope %-8s n_rot %2lld %-12s: max |gpu - cpu| = %.2e", neox ? "neox" : "adjacent",
               (long long)n_rot, factors ? "freq factors" : "", d);
      }
    }
  }
  {
    const int64_t n = 100003;
    const auto g = randn(n, 3.f), u = randn(n);
    std::vector<float> cpu = g;
    ref.swiglu(cpu.data(), u.data(), n);
    Dev<float> dg(g), du(u);
    cuda::swiglu(nullptr, dg.p, du.p, n);
    const auto gpu = dg.down();
    double rel = 0;
    for (int64_t i = 0; i < n; ++i) rel = std::max(rel, std::fabs(double(cpu[i]) - gpu[i]) / (std::fabs(double(cpu[i])) + 1e-6));
    report(rel <= 1e-5, "swiglu: max relative |gpu - cpu| = %.2e", rel);
    std::vector<float> y = u;
    ref.add(y.data(), g.data(), n);
    Dev<float> dy(u);
    cuda::add(nullptr, dy.p, Dev<float>(g).p, n);
    report(max_abs_diff(y, dy.down(), n) == 0, "add: bit-identical");
  }
  {  // Q/K/V biases (qwen2): every row plus the same bias
    const int64_t rows = 7, width = 320;
    const auto y = randn(rows * width), bias = randn(width);
    std::vector<float> cpu = y;
    for (int64_t r = 0; r < rows; ++r) ref.add(cpu.data() + r * width, bias.data(), width);
    Dev<float> dy(y), db(bias);
    cuda::add_bias(nullptr, dy.p, db.p, rows, width);
    report(max_abs_diff(cpu, dy.down(), cpu.size()) == 0, "add_bias: bit-identical");
  }
  for (int64_t head_dim : {64, 128, 40}) {  // per-head Q/K RMSNorm (qwen3), in place; 40: a head not a multiple of 32
    const int64_t heads = 5 * 8;             // 5 rows of 8 heads
    const auto x = randn(heads * head_dim, 3.f), w = randn(head_dim);
    std::vector<float> cpu = x;
    for (int64_t h = 0; h < heads; ++h) ref.rms_norm(cpu.data() + h * head_dim, w.data(), cpu.data() + h * head_dim, head_dim, 1e-6f);
    Dev<float> dx(x), dw(w);
    cuda::head_rms_norm(nullptr, dx.p, dw.p, heads, head_dim, 1e-6f);
    const double d = max_abs_diff(cpu, dx.down(), cpu.size());
    report(d <= 1e-5, "head_rms_norm head_dim %3lld: max |gpu - cpu| = %.2e", (long long)head_dim, d);
  }
}

void test_attention() {
  const KernelTable& ref = kernels_generic();
  for (int64_t n_kv_head : {2, 8}) {
    // positions long enough for the split path (slices of >= 128), and rows too short to fill every slice
    const int64_t n_seq = 2, n_ctx = 700, n_head = 8, head_dim = 32;
    const int64_t kv_dim = n_kv_head * head_dim, q_dim = n_head * head_dim;
    const auto k = randn(n_seq * n_ctx * kv_dim, 2.f), v = randn(n_seq * n_ctx * kv_dim);
    const std::vector<int32_t> seq = {0, 1, 0, 1, 0}, pos = {5, 0, 699, 300, 6};
    const int64_t rows = seq.size();
    const auto q = randn(rows * q_dim);
    std::vector<float> cpu(rows * q_dim), scratch(n_ctx);
    for (int64_t r = 0; r < rows; ++r) {
      AttentionArgs a;
      a.q = q.data() + r * q_dim;
      a.k = k.data() + seq[r] * n_ctx * kv_dim;
      a.v = v.data() + seq[r] * n_ctx * kv_dim;
      a.out = cpu.data() + r * q_dim;
      a.n_tok = 1;
      a.pos0 = pos[r];
      a.n_head = n_head;
      a.n_kv_head = n_kv_head;
      a.head_dim = head_dim;
      a.scale = 1.f / std::sqrt(float(head_dim));
      ref.attention(a, 0, n_head, scratch.data());
    }
    Dev<float> dq(q), dk(k), dv(v), out(rows * q_dim);
    Dev<int32_t> dseq(seq), dpos(pos);
    const int64_t sf = cuda::attention_scratch_floats(rows, n_head, head_dim);
    Dev<float> dscratch(sf);
    for (bool split : {false, true}) {  // whole rows, and rows split over slices of positions then merged
      cuda::attention(nullptr, dq.p, rows, dseq.p, dpos.p, dk.p, dv.p, n_ctx, n_head, n_kv_head, head_dim,
                      1.f / std::sqrt(float(head_dim)), out.p, 700, split ? dscratch.p : nullptr, split ? sf : 0);
      const double d = max_abs_diff(cpu, out.down(), cpu.size());
      report(d <= 1e-5, "attention %s (8 heads / %lld kv heads), rows of 2 sequences%s: max |gpu - cpu| = %.2e",
             n_kv_head < n_head ? "GQA" : "MHA", (long long)n_kv_head, split ? ", split positions" : "", d);
    }
  }
  {
    // the KV store puts each row at its (sequence, position)
    const int64_t n_ctx = 16, kv_dim = 64;
    const std::vector<int32_t> seq = {1, 0, 1}, pos = {3, 15, 4};
    const auto kn = randn(3 * kv_dim), vn = randn(3 * kv_dim);
    Dev<float> dk(std::vector<float>(2 * n_ctx * kv_dim, 0.f)), dv(std::vector<float>(2 * n_ctx * kv_dim, 0.f));
    Dev<float> dkn(kn), dvn(vn);
    Dev<int32_t> dseq(seq), dpos(pos);
    cuda::kv_store(nullptr, dkn.p, dvn.p, 3, dseq.p, dpos.p, dk.p, dv.p, n_ctx, kv_dim);
    const auto kc = dk.down(), vc = dv.down();
    bool ok = true;
    for (int r = 0; r < 3; ++r)
      for (int64_t e = 0; e < kv_dim; ++e) {
        const size_t at = (seq[r] * n_ctx + pos[r]) * kv_dim + e;
        ok = ok && kc[at] == kn[r * kv_dim + e] && vc[at] == vn[r * kv_dim + e];
      }
    report(ok, "kv_store: rows at their (sequence, position)");
  }
}

void test_lens() {
  Dev<uint8_t> scratch(cuda::lens_scratch_bytes());
  for (int mode = 0; mode < 3; ++mode) {  // vocabulary (one block), vocabulary (many blocks), candidates
    const bool candidates = mode == 2, many = mode == 1;
    const int64_t V = 50000, k = 5;
    auto z = randn(V, 2.f);
    z[17] = z[4000] = 9.f;  // a tie for first place: the lower id ranks first
    z[31000] = z[44000] = 8.5f;  // and for third, in other blocks of the many-block path
    std::vector<int32_t> ids;
    if (candidates)
      for (int32_t i = 4000; i >= 0; i -= 7) ids.push_back(i);
    const int64_t m = candidates ? ids.size() : V;
    auto id_at = [&](int64_t i) { return candidates ? ids[i] : int32_t(i); };
    std::vector<int32_t> order(m);
    for (int64_t i = 0; i < m; ++i) order[i] = id_at(i);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); });
    double zmax = z[order[0]], sum = 0, wsum = 0;
    for (int64_t i = 0; i < m; ++i) {
      const double t = z[id_at(i)] - zmax, e = std::exp(t);
      sum += e;
      wsum += e * t;
    }
    Dev<float> dz(z);
    Dev<int32_t> dids(candidates ? ids : std::vector<int32_t>(1)), oid(k);
    Dev<float> oprob(k), ofeat(4);
    cuda::lens_stats(nullptr, dz.p, candidates ? dids.p : nullptr, m, k, oid.p, oprob.p, ofeat.p,
                     many ? scratch.p : nullptr);
    const auto gid = oid.down();
    const auto gp = oprob.down();
    const auto gf = ofeat.down();
    bool ok = true;
    double dp = 0;
    for (int64_t i = 0; i < k; ++i) {
      ok = ok && gid[i] == order[i];
      dp = std::max(dp, std::fabs(gp[i] - std::exp(z[order[i]] - zmax) / sum));
    }
    const double p1 = std::exp(z[order[0]] - zmax) / sum, p2 = std::exp(z[order[1]] - zmax) / sum;
    const double h = std::log(sum) - wsum / sum;
    ok = ok && dp <= 1e-6 && std::fabs(gf[0] - p1) <= 1e-6 && std::fabs(gf[1] - p2) <= 1e-6 &&
         std::fabs(gf[2] - (p1 - p2)) <= 1e-6 && std::fabs(gf[3] - h) <= 1e-5;
    report(ok, "lens_stats %-10s: top-%lld ids (ties by lowest id), probabilities (max err %.1e), p1 p2 gap entropy",
           candidates ? "candidates" : many ? "vocabulary, many blocks" : "vocabulary, one block", (long long)k, dp);
  }
}

// ---- a random-weight llama model in host memory ------------------------------------------------------------

struct HostModel {
  std::vector<std::vector<uint8_t>> blobs;  // the tensors' bytes (WeightViews point in here)
  std::shared_ptr<LlamaWeights> w;

  WeightView matrix(int32_t type, int64_t n_in, int64_t n_out, float scale, bool random_bytes) {
    std::vector<uint8_t> bytes;
    if (random_bytes) {
      bytes = random_quant_bytes(type, n_in, n_out);
    } else {
      bytes = quantize(type, randn(n_in * n_out, scale), n_out, n_in);
    }
    blobs.push_back(std::move(bytes));
    WeightView v;
    v.data = blobs.back().data();
    v.type = type;
    v.ne0 = n_in;
    v.ne1 = n_out;
    v.row_bytes = row_bytes(type, n_in);
    return v;
  }

  // Speed does not depend on the values: fill quickly with random bits, and sane scales in every block.
  static std::vector<uint8_t> random_quant_bytes(int32_t type, int64_t n_in, int64_t n_out) {
    const size_t rb = row_bytes(type, n_in), total = rb * n_out;
    std::vector<uint8_t> b(total);
    const int threads = std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        uint64_t s = 0x9E3779B97F4A7C15ull * (t + 1);
        const size_t r0 = n_out * t / threads, r1 = n_out * (t + 1) / threads;
        for (size_t i = r0 * rb; i < r1 * rb; i += 8) {
          s ^= s << 13;
          s ^= s >> 7;
          s ^= s << 17;
          std::memcpy(&b[i], &s, std::min<size_t>(8, r1 * rb - i));
        }
        const uint16_t h = fp32_to_fp16(0.01f);
        TypeTraits tr{};
        type_traits(type, &tr);
        if (type == 0 || type == 1 || type == 30) {  // float types: small finite values
          for (size_t i = r0 * rb; i < r1 * rb; i += (type == 0 ? 4 : 2)) {
            if (type == 0) {
              const float f = (b[i] - 128) * 1e-4f;
              std::memcpy(&b[i], &f, 4);
            } else {
              const uint16_t v = type == 1 ? fp32_to_fp16((b[i] - 128) * 1e-4f) : fp32_to_bf16((b[i] - 128) * 1e-4f);
              std::memcpy(&b[i], &v, 2);
            }
          }
          return;
        }
        for (size_t blk = r0 * rb; blk < r1 * rb; blk += tr.block_bytes) {
          if (type == 14) {
            std::memcpy(&b[blk + 208], &h, 2);
          } else {
            std::memcpy(&b[blk], &h, 2);
            if (type == 3 || type == 7 || type == 12 || type == 13) std::memcpy(&b[blk + 2], &h, 2);
          }
        }
      });
    for (auto& th : pool) th.join();
    return b;
  }

  std::vector<float> norm(int64_t n) {
    std::vector<float> v = randn(n, 0.1f);
    for (float& x : v) x += 1.f;
    return v;
  }

  HostModel(const LlamaHParams& hp, int32_t type, bool random_bytes) {
    w = std::make_shared<LlamaWeights>();
    w->hp = hp;
    const int64_t q_dim = hp.n_head * hp.head_dim, kv_dim = hp.n_kv_head * hp.head_dim;
    blobs.reserve(4 + 7 * hp.n_layer);
    w->tok_embd = matrix(is_float_type(type) ? type : 1, hp.n_embd, hp.n_vocab, 0.5f, random_bytes);
    w->output_norm = norm(hp.n_embd);
    w->output = matrix(type, hp.n_embd, hp.n_vocab, 0.05f, random_bytes);
    for (int64_t l = 0; l < hp.n_layer; ++l) {
      LlamaLayer L;
      L.attn_norm = norm(hp.n_embd);
      L.wq = matrix(type, hp.n_embd, q_dim, 0.08f, random_bytes);
      L.wk = matrix(type, hp.n_embd, kv_dim, 0.08f, random_bytes);
      L.wv = matrix(type, hp.n_embd, kv_dim, 0.05f, random_bytes);
      L.wo = matrix(type, q_dim, hp.n_embd, 0.05f, random_bytes);
      L.ffn_norm = norm(hp.n_embd);
      L.w_gate = matrix(type, hp.n_embd, hp.n_ff, 0.05f, random_bytes);
      L.w_up = matrix(type, hp.n_embd, hp.n_ff, 0.05f, random_bytes);
      L.w_down = matrix(type, hp.n_ff, hp.n_embd, 0.05f, random_bytes);
      if (hp.qkv_bias) {
        L.bq = randn(q_dim, 0.3f);
        L.bk = randn(kv_dim, 0.3f);
        L.bv = randn(kv_dim, 0.1f);
      }
      if (hp.qk_norm) {
        L.q_norm = norm(hp.head_dim);
        L.k_norm = norm(hp.head_dim);
      }
      w->layers.push_back(std::move(L));
    }
  }
};

// The same model with every matrix dequantized to F32 (by the CPU's dequant_row, which the CUDA kernels match bit
// for bit): the exact-weight reference for the CUDA blocks, which multiply dequantized weights by float
// activations (the CPU blocks on the quantized model quantize activations first, as ggml does).
std::shared_ptr<LlamaWeights> dequantized_f32(const LlamaWeights& w, std::vector<std::vector<float>>& store) {
  auto out = std::make_shared<LlamaWeights>(w);
  store.reserve(store.size() + 3 + 7 * w.layers.size());
  auto f32 = [&](WeightView& v) {
    store.emplace_back(static_cast<size_t>(v.ne0 * v.ne1));
    std::vector<float>& dst = store.back();
    for (int64_t r = 0; r < v.ne1; ++r)
      kernels_generic().dequant_row[v.type](static_cast<const uint8_t*>(v.data) + r * v.row_bytes, dst.data() + r * v.ne0,
                                            v.ne0);
    v.data = dst.data();
    v.type = 0;
    v.row_bytes = static_cast<size_t>(v.ne0) * 4;
  };
  f32(out->tok_embd);
  f32(out->output);
  for (LlamaLayer& L : out->layers)
    for (WeightView* v : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) f32(*v);
  return out;
}

struct Io {
  std::vector<int32_t> tokens, row_seq, row_pos, cand, ids;
  std::vector<float> logits, probs, features;
  HostBuffers b;
  Io(int64_t n_batch, int64_t n_vocab, int64_t lens_k, int64_t n_cand)
      : tokens(n_batch), row_seq(n_batch), row_pos(n_batch), cand(n_cand), ids(lens_k), logits(n_vocab),
        probs(lens_k), features(4) {
    b.tokens = tokens.data();
    b.row_seq = row_seq.data();
    b.row_pos = row_pos.data();
    b.logits = logits.data();
    b.lens_candidates = cand.data();
    b.lens_max_candidates = n_cand;
    b.lens_ids = ids.data();
    b.lens_probs = probs.data();
    b.lens_features = features.data();
    b.lens_k = lens_k;
  }
};

// What a test_blocks model adds to the plain Llama block: the architectures on it (llama, qwen2, qwen3).
struct BlockVariant {
  const char* name;
  bool neox = false;
  bool qkv_bias = false;  // qwen2
  bool qk_norm = false;   // qwen3
  int64_t head_dim = 32;  // 64: q width 512 != n_embd 256 (qwen3)
};

// The same call sequence on the CPU blocks (scalar reference kernels) and the CUDA blocks: a prefill of two
// sequences in one batch, the logit lens after layer 0, an early exit with K/V propagation, a decode step, a
// batch compaction; logits and lens features compared after each.
void test_blocks(int32_t type, const BlockVariant& variant) {
  LlamaHParams hp;
  hp.n_layer = 3;
  hp.n_embd = 256;
  hp.n_head = 8;
  hp.n_kv_head = 2;
  hp.head_dim = variant.head_dim;
  hp.n_ff = 512;
  hp.n_vocab = 300;
  hp.n_rot = variant.head_dim;
  hp.rope_neox = variant.neox;
  hp.qkv_bias = variant.qkv_bias;
  hp.qk_norm = variant.qk_norm;
  hp.rms_eps = variant.qk_norm ? 1e-6f : 1e-5f;
  HostModel model(hp, type, false);
  std::shared_ptr<const LlamaWeights> w = model.w;
  std::vector<std::vector<float>> f32_store;
  std::shared_ptr<const LlamaWeights> ref_w = dequantized_f32(*model.w, f32_store);
  const int64_t n_seq = 2, n_ctx = 32, n_batch = 8, lens_k = 4, n_cand = 8;
  Io ci(n_batch, hp.n_vocab, lens_k, n_cand), gi(n_batch, hp.n_vocab, lens_k, n_cand);
  LlamaState cpu(ref_w, n_seq, n_ctx, n_batch, 1, kernels_generic(), ci.b);
  auto gw = cuda_upload_weights(w, 0);
  auto gpu = make_cuda_blocks(gw, n_seq, n_ctx, n_batch, kernels_generic(), gi.b);
  // Same weights, float activations on both sides: only the order of the sums differs.
  const double tol = 1e-4;
  double worst = 0;
  std::string where;
  auto both = [&](const std::function<void(Blocks&, Io&)>& f) {
    f(cpu, ci);
    f(*gpu, gi);
  };
  auto compare_logits = [&](const char* what) {
    double mx = 1;
    for (float v : ci.logits) mx = std::max(mx, double(std::fabs(v)));
    const double d = max_abs_diff(ci.logits, gi.logits, ci.logits.size()) / mx;
    if (d > worst) {
      worst = d;
      where = what;
    }
  };
  auto rows = [&](std::initializer_list<std::array<int32_t, 3>> r) {
    int64_t n = 0;
    for (const auto& x : r) {
      for (Io* io : {&ci, &gi}) {
        io->tokens[n] = x[0];
        io->row_seq[n] = x[1];
        io->row_pos[n] = x[2];
      }
      ++n;
    }
    return n;
  };
  // prefill: 5 tokens of sequence 0 and 3 of sequence 1
  int64_t n = rows({{1, 0, 0}, {7, 0, 1}, {99, 0, 2}, {250, 0, 3}, {3, 0, 4}, {1, 1, 0}, {42, 1, 1}, {17, 1, 2}});
  both([&](Blocks& b, Io&) { b.embed(n); });
  bool lens_ok = true;
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    both([&](Blocks& b, Io&) {
      b.attention_block(l, n);
      b.mlp_block(l, n);
    });
    if (l == 0) {
      both([&](Blocks& b, Io&) {
        b.logit_lens(4, lens_k);
        b.sync_logits();
      });
      compare_logits("lens after layer 0");
      lens_ok = lens_ok && std::fabs(ci.features[0] - gi.features[0]) <= tol && std::fabs(ci.features[3] - gi.features[3]) <= 10 * tol;
    }
  }
  both([&](Blocks& b, Io&) { b.head(4); });
  compare_logits("prefill, sequence 0");
  both([&](Blocks& b, Io&) { b.head(7); });
  compare_logits("prefill, sequence 1");
  // decode: one row per sequence; sequence 0 exits after layer 0 (K/V of layers 1.. propagated)
  n = rows({{5, 0, 5}, {6, 1, 3}});
  both([&](Blocks& b, Io&) {
    b.embed(n);
    b.attention_block(0, n);
    b.mlp_block(0, n);
  });
  std::vector<float> hc(hp.n_embd), hg(hp.n_embd);
  cpu.read_hidden(0, 1, hc.data());
  gpu->read_hidden(0, 1, hg.data());
  const double dh = max_abs_diff(hc, hg, hc.size());
  both([&](Blocks& b, Io& io) {
    io.cand[0] = 3;
    io.cand[1] = 250;
    io.cand[2] = 0;
    b.logit_lens_candidates(0, 3, 2);
  });
  lens_ok = lens_ok && ci.ids[0] == gi.ids[0] && std::fabs(ci.features[0] - gi.features[0]) <= tol;
  // compaction: row 1 (sequence 1) moves to the front and runs on; row 0's K/V are filled
  both([&](Blocks& b, Io& io) {
    std::vector<float> stash(hp.n_embd);
    b.read_hidden(0, 1, stash.data());
    b.move_hidden(0, 1, 1);
    io.row_seq[0] = 1;
    io.row_pos[0] = 3;
    for (int64_t l = 1; l < hp.n_layer; ++l) {
      b.attention_block(l, 1);
      b.mlp_block(l, 1);
    }
    b.head(0);
  });
  compare_logits("decode after compaction, sequence 1");
  both([&](Blocks& b, Io& io) {
    // propagate the exit state of sequence 0's position 5, then decode position 6 at full depth
    std::vector<float> h(hp.n_embd);
    io.row_seq[0] = 0;
    io.row_pos[0] = 5;
    io.tokens[0] = 5;
    b.embed(1);
    b.attention_block(0, 1);
    b.mlp_block(0, 1);
    for (int64_t l = 1; l < hp.n_layer; ++l) b.fill_kv(l, 1);
    io.tokens[0] = 9;
    io.row_pos[0] = 6;
    b.embed(1);
    for (int64_t l = 0; l < hp.n_layer; ++l) {
      b.attention_block(l, 1);
      b.mlp_block(l, 1);
    }
    b.head(0);
  });
  compare_logits("decode after an exit with K/V propagation");
  report(worst <= tol && lens_ok && dh <= tol * 10,
         "blocks %-5s %-8s CUDA vs CPU (F32 of the same weights): max |logit delta| / max|logit| = %.2e (%s), hidden %.1e, lens %s (tol %.0e)",
         type_name(type), variant.name, worst, where.c_str(), dh, lens_ok ? "agree" : "DISAGREE", tol);
}

void test_errors() {
  // bad inputs are errors, not device faults
  LlamaHParams hp;
  hp.n_layer = 1;
  hp.n_embd = 64;
  hp.n_head = 2;
  hp.n_kv_head = 2;
  hp.head_dim = 32;
  hp.n_ff = 128;
  hp.n_vocab = 50;
  hp.n_rot = 32;
  HostModel model(hp, 0, false);
  Io io(2, hp.n_vocab, 2, 2);
  auto gpu = make_cuda_blocks(cuda_upload_weights(model.w, 0), 1, 8, 2, kernels_generic(), io.b);
  auto throws = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const std::out_of_range&) {
      return true;
    } catch (const ModelError&) {
      return true;
    }
    return false;
  };
  io.tokens[0] = 50;
  bool ok = throws([&] { gpu->embed(1); });
  io.tokens[0] = 1;
  io.row_pos[0] = 8;
  ok = ok && throws([&] { gpu->attention_block(0, 1); });
  io.row_pos[0] = 0;
  io.row_seq[0] = 1;
  ok = ok && throws([&] { gpu->fill_kv(0, 1); });
  ok = ok && throws([&] { gpu->mlp_block(1, 1); }) && throws([&] { gpu->head(2); }) &&
       throws([&] { gpu->logit_lens(0, 3); }) && throws([&] { gpu->move_hidden(1, 0, 2); });
  bool device_ok = cudaDeviceSynchronize() == cudaSuccess;
  ok = ok && throws([&] { cuda_upload_weights(model.w, 99); });
  report(ok && device_ok, "bad ids, positions, layers, rows and devices are errors; the device is still healthy");
}

// ---- benchmark ---------------------------------------------------------------------------------------------

double time_us(const std::function<void()>& f, int reps) {
  f();
  cuda_check(cudaDeviceSynchronize(), "warm-up");
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    cudaEventRecord(a);
    f();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    t.push_back(ms * 1000.0);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void bench() {
  const CudaProbe& p = cuda_probe();
  std::printf("device: %s (compute %d.%d, %.1f GiB)\n", p.devices[0].name.c_str(), p.devices[0].cc_major,
              p.devices[0].cc_minor, p.devices[0].total_memory / 1073741824.0);
  {  // device-to-device copy: the bandwidth ceiling
    const size_t n = size_t(1) << 30;
    Dev<uint8_t> a(n), b(n);
    const double us = time_us([&] { cudaMemcpy(b.p, a.p, n, cudaMemcpyDeviceToDevice); }, 10);
    std::printf("device copy: %.0f GB/s (read + write)\n", 2.0 * n / us / 1e3);
  }
  std::printf("\nmatrix-vector (decode), llama2-7b shapes, median of 20:\n");
  std::printf("| type | shape | us | GB/s |\n|---|---|---:|---:|\n");
  for (int32_t type : {1, 30, 8, 2, 12, 14}) {
    for (auto shape : {std::pair<int64_t, int64_t>{4096, 4096}, {4096, 11008}, {11008, 4096}}) {
      const int64_t n_in = shape.first, n_out = shape.second;
      const auto q = HostModel::random_quant_bytes(type, n_in, n_out);
      Dev<uint8_t> dq(q);
      Dev<float> x(randn(n_in)), y(n_out);
      const double us = time_us(
          [&] { cuda::matmul(nullptr, type, dq.p, row_bytes(type, n_in), n_in, n_out, x.p, n_in, 1, y.p, n_out); }, 20);
      std::printf("| %s | %lldx%lld | %.1f | %.0f |\n", type_name(type), (long long)n_out, (long long)n_in, us,
                  q.size() / us / 1e3);
    }
  }
  std::printf("\nmatrix-matrix (prefill), 4096x4096 weights x 512 tokens:\n| type | us | TFLOP/s |\n|---|---:|---:|\n");
  for (int32_t type : {0, 1, 30, 8, 2, 12}) {  // F32: the float kernel; the others: tensor cores
    const int64_t n_in = 4096, n_out = 4096, n_tok = 512;
    const auto q = HostModel::random_quant_bytes(type, n_in, n_out);
    Dev<uint8_t> dq(q);
    Dev<float> x(randn(n_in * n_tok)), y(n_out * n_tok);
    const double us = time_us(
        [&] { cuda::matmul(nullptr, type, dq.p, row_bytes(type, n_in), n_in, n_out, x.p, n_in, n_tok, y.p, n_out); }, 5);
    std::printf("| %s | %.0f | %.1f |\n", type_name(type), us, 2.0 * n_in * n_out * n_tok / us / 1e6);
  }
  std::printf("\nattention, 32 heads x 128 dims (MHA), one query row:\n| context | us (one block per head) | us (split positions) |\n|---|---:|---:|\n");
  for (int64_t ctx : {512, 2048, 4096}) {
    const int64_t kv_dim = 32 * 128;
    Dev<float> k(randn(ctx * kv_dim)), v(randn(ctx * kv_dim)), q(randn(kv_dim)), out(kv_dim);
    Dev<int32_t> seq(std::vector<int32_t>{0}), pos(std::vector<int32_t>{int32_t(ctx - 1)});
    const int64_t sf = cuda::attention_scratch_floats(1, 32, 128);
    Dev<float> scratch(sf);
    double us[2];
    for (int split = 0; split < 2; ++split)
      us[split] = time_us([&] {
        cuda::attention(nullptr, q.p, 1, seq.p, pos.p, k.p, v.p, ctx, 32, 32, 128, 1.f / std::sqrt(128.f), out.p, ctx,
                        split ? scratch.p : nullptr, split ? sf : 0);
      }, 20);
    std::printf("| %lld | %.1f | %.1f |\n", (long long)ctx, us[0], us[1]);
  }

  // Whole model at llama2-7b geometry, random weights: one layer in us, then prefill and decode tokens/s.
  LlamaHParams hp;
  hp.n_layer = 32;
  hp.n_embd = 4096;
  hp.n_head = 32;
  hp.n_kv_head = 32;
  hp.head_dim = 128;
  hp.n_ff = 11008;
  hp.n_vocab = 32000;
  hp.n_rot = 128;
  std::printf("\nllama2-7b geometry (32 layers, dim 4096, ffn 11008, vocab 32000), random weights:\n");
  std::printf("| type | weights GiB | layer decode us | lens check us (vocab) | lens check us (16 ids) | layer pp512 us | "
              "pp512 tok/s | tg128 tok/s | tg GB/s |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int32_t type : {8, 2, 1}) {
    const auto t0 = std::chrono::steady_clock::now();
    HostModel model(hp, type, true);
    auto gw = cuda_upload_weights(model.w, 0);
    const double gib = cuda_weight_bytes(*gw) / 1073741824.0;
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t n_ctx = 1024, n_batch = 512;
    Io io(n_batch, hp.n_vocab, 16, 16);
    auto b = make_cuda_blocks(gw, 1, n_ctx, n_batch, kernels_best(), io.b);
    for (int64_t t = 0; t < n_batch; ++t) {
      io.tokens[t] = int32_t((t * 7919) % hp.n_vocab);
      io.row_seq[t] = 0;
      io.row_pos[t] = int32_t(t);
    }
    // One layer, wall clock (launches included), ended by a read of the residual stream (a stream sync).
    std::vector<float> h(hp.n_embd);
    auto layer_us = [&](int64_t rows, int reps) {
      b->attention_block(0, rows);
      b->mlp_block(0, rows);
      b->read_hidden(0, 1, h.data());
      const auto a = std::chrono::steady_clock::now();
      for (int r = 0; r < reps; ++r) {
        b->attention_block(0, rows);
        b->mlp_block(0, rows);
      }
      b->read_hidden(0, 1, h.data());
      return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count() / reps;
    };
    b->embed(n_batch);
    const double layer_pp = layer_us(n_batch, 5);
    io.row_pos[0] = 512;
    b->embed(1);
    const double layer_tg = layer_us(1, 50);
    // An exit check between layers (wall clock, the result on the host): the full-vocabulary lens and the
    // candidate lens (16 ids).
    auto check_us = [&](const std::function<void()>& f) {
      f();
      const auto a = std::chrono::steady_clock::now();
      for (int r = 0; r < 50; ++r) f();
      return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count() / 50;
    };
    const double lens_full = check_us([&] { b->logit_lens(0, 2); });
    for (int i = 0; i < 16; ++i) io.cand[i] = 100 * i;
    const double lens_cand = check_us([&] { b->logit_lens_candidates(0, 16, 2); });
    // prefill: 512 tokens, every layer, then the head of the last row (wall clock, host included)
    for (int64_t t = 0; t < n_batch; ++t) io.row_pos[t] = int32_t(t);
    auto wall = [](const std::function<void()>& f) {
      const auto a = std::chrono::steady_clock::now();
      f();
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
    };
    auto prefill = [&] {
      b->embed(n_batch);
      for (int64_t l = 0; l < hp.n_layer; ++l) {
        b->attention_block(l, n_batch);
        b->mlp_block(l, n_batch);
      }
      b->head(n_batch - 1);
    };
    prefill();
    std::vector<double> pp;
    for (int r = 0; r < 3; ++r) pp.push_back(wall(prefill));
    std::sort(pp.begin(), pp.end());
    // decode: 128 tokens after the prompt, each embed + 32 layers + head (logits to the host), greedy on the host
    const double tg = wall([&] {
      for (int s = 0; s < 128; ++s) {
        io.row_seq[0] = 0;
        io.row_pos[0] = int32_t(n_batch + s);
        b->embed(1);
        for (int64_t l = 0; l < hp.n_layer; ++l) {
          b->attention_block(l, 1);
          b->mlp_block(l, 1);
        }
        b->head(0);
        io.tokens[0] = int32_t(std::max_element(io.logits.begin(), io.logits.end()) - io.logits.begin());
      }
    });
    std::printf("| %s | %.2f | %.0f | %.0f | %.0f | %.0f | %.1f | %.0f | %.0f |\n", type_name(type), gib, layer_tg,
                lens_full, lens_cand, layer_pp, n_batch / pp[1], 128 / tg, gib * 1.073741824 * 128 / tg);
    std::fflush(stdout);
    (void)load_s;
  }
}

// ---- goldens: logits of a GGUF model on either backend -----------------------------------------------------

std::vector<int32_t> parse_tokens(const std::string& s) {
  std::vector<int32_t> out;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, ',')) out.push_back(std::stoi(tok));
  return out;
}

int run_model(bool greedy, const std::string& path, const std::string& out_path, int n_gen,
              const std::vector<int32_t>& prompt, const std::string& backend) {
  auto file = std::make_shared<MappedFile>(path);
  adafuzz::GgufTable table;
  std::string why;
  if (!adafuzz::parse_gguf_table(file->data(), file->size(), &table, &why)) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), why.c_str());
    return 2;
  }
  LlamaHParams hp;
  if (!adafuzz::llama_hparams_from_table(table, &hp, &why)) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), why.c_str());
    return 2;
  }
  auto w = std::make_shared<const LlamaWeights>(load_llama_weights(file, hp, table.tensors, kernels_best()));
  const int64_t n = prompt.size(), n_ctx = 512;
  Io io(std::max<int64_t>(n, 1), hp.n_vocab, 2, 2);
  std::unique_ptr<Blocks> b;
  if (backend == "cuda")
    b = make_cuda_blocks(cuda_upload_weights(w, 0), 1, n_ctx, n, kernels_best(), io.b);
  else
    b = std::make_unique<LlamaState>(w, 1, n_ctx, n, 1, kernels_best(), io.b);
  std::ofstream out(out_path, std::ios::binary);
  auto forward = [&](int64_t rows) {
    b->embed(rows);
    for (int64_t l = 0; l < hp.n_layer; ++l) {
      b->attention_block(l, rows);
      b->mlp_block(l, rows);
    }
  };
  for (int64_t t = 0; t < n; ++t) {
    io.tokens[t] = prompt[t];
    io.row_seq[t] = 0;
    io.row_pos[t] = int32_t(t);
  }
  forward(n);
  if (!greedy) {
    for (int64_t t = 0; t < n; ++t) {
      b->head(t);
      out.write(reinterpret_cast<const char*>(io.logits.data()), io.logits.size() * 4);
    }
    return 0;
  }
  b->head(n - 1);
  for (int s = 0; s < n_gen; ++s) {
    out.write(reinterpret_cast<const char*>(io.logits.data()), io.logits.size() * 4);
    const int32_t next = int32_t(std::max_element(io.logits.begin(), io.logits.end()) - io.logits.begin());
    io.tokens[0] = next;
    io.row_seq[0] = 0;
    io.row_pos[0] = int32_t(n + s);
    forward(1);
    b->head(0);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string backend = "cuda";
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == "--backend") {
      backend = args[i + 1];
      args.erase(args.begin() + i, args.begin() + i + 2);
      break;
    }
  const CudaProbe& probe = cuda_probe();
  if (!probe.available && backend == "cuda") {
    std::printf("SKIP: %s\n", probe.reason.c_str());
    return 77;
  }
  try {
    if (!args.empty() && args[0] == "--logits" && args.size() == 4)
      return run_model(false, args[1], args[2], 0, parse_tokens(args[3]), backend);
    if (!args.empty() && args[0] == "--greedy" && args.size() == 5)
      return run_model(true, args[1], args[2], std::stoi(args[3]), parse_tokens(args[4]), backend);
    if (!args.empty() && args[0] == "--bench") {
      bench();
      return 0;
    }
    if (!args.empty()) {
      std::fprintf(stderr, "usage: see the comment at the top of test/cuda/test_cuda.cpp\n");
      return 2;
    }
    std::printf("device: %s (compute %d.%d)\n", probe.devices[0].name.c_str(), probe.devices[0].cc_major,
                probe.devices[0].cc_minor);
    test_dequant();
    test_matmul();
    test_fused();
    test_matvec_rows();
    test_vector_ops();
    test_attention();
    test_lens();
    const BlockVariant llama_adjacent{"adjacent"}, llama_neox{"neox", true};
    const BlockVariant qwen2{"qwen2", true, true, false, 32}, qwen3{"qwen3", true, false, true, 64};
    for (int32_t type : {0, 1, 30, 8, 2, 12, 14}) test_blocks(type, llama_adjacent);
    test_blocks(0, llama_neox);
    for (int32_t type : {0, 8}) {
      test_blocks(type, qwen2);
      test_blocks(type, qwen3);
    }
    test_errors();
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    return 1;
  }
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
