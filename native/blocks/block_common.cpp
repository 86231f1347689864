#include "blocks/block_common.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace adainfer {

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

// ADAINFER_FEW_ROWS=0 turns the few-row kernels off (every batch takes the prefill path), to measure one against
// the other (bench/verify_cost.ts).
bool few_rows_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("ADAINFER_FEW_ROWS");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return enabled;
}

// ADAINFER_TOKEN_SPLIT=0 turns split_work's token ranges off (rows only), to measure one against the other.
bool token_split_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("ADAINFER_TOKEN_SPLIT");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return enabled;
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

// Calls fn(r0, r1, t0, t1) on blocks covering rows [0, rows) x tokens [0, n_tok): by rows (split_rows) as a rule;
// by tokens when the matrix has too few row units for the threads and there are tokens to share. Small models hit
// that: 128 output rows are three units of 48, which two threads split 2:1 (96 rows against 32; with stealing 80
// against 48), so a 16-sequence decode step or a server's wave of prompts ran at 60-80% of two threads on them. Such
// a matrix stays in cache, so each thread reading all of it for its own tokens costs nothing.
// A token must get the same bits whatever the thread count, but the kernels choose by the number of tokens a call
// takes and by where a token falls in their tiles (AVX2 Q8_0: the row kernel below 4 rows and for the rest of a tile
// of 8, 8-row panels from 32 tokens; the few-row kernels take 8 rows and then the rest; VNNI: its decode kernel for
// one token). So the token ranges are whole tiles of the kernels, the last one taking the rest: 8 tokens in a few-row
// step (static: 16 rows split 8 + 8, as the kernel cuts them) and 32 in a batch (dynamic: a multiple of the 8-token
// tiles, and at least where any kernel switches), so every token runs the kernel it runs in the whole call.
// (matmul_runner_every_row_count checks it bit for bit against one thread.)
template <class Fn>
void split_work(ThreadPool& pool, int64_t rows, int64_t align, int64_t n_tok, bool dynamic, Fn&& fn) {
  const int64_t threads = pool.size();
  const int64_t row_units = (rows + align - 1) / align;
  const int64_t tile = dynamic ? 32 : 8, token_units = n_tok / tile;
  if (threads > 1 && row_units < 2 * threads && token_units >= 2 && token_split_enabled()) {
    pool.parallel_for(token_units, 1, [&](int64_t u0, int64_t u1, int) {
      fn(int64_t{0}, rows, u0 * tile, u1 == token_units ? n_tok : u1 * tile);
    });
    return;
  }
  split_rows(pool, rows, align, dynamic, [&](int64_t r0, int64_t r1) { fn(r0, r1, int64_t{0}, n_tok); });
}

}  // namespace

// The first 64-byte boundary of an activation buffer (allocated with 64 bytes of slack).
uint8_t* MatmulRunner::aligned_rows(ActRows& a) {
  const uintptr_t p = reinterpret_cast<uintptr_t>(a.rows.data());
  return a.rows.data() + ((64 - p % 64) % 64);
}

// Output rows are split across the pool (split_rows); each thread runs the kernel on its own ranges of W's
// rows, so weights are streamed once per call whatever the number of tokens. Quantized weight types first get
// their activation rows quantized (once per input, in parallel over rows for a batch), as ggml does.
void MatmulRunner::operator()(const WeightView& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy,
                              bool same_input) {
  const int32_t format = k_.act_format[w.type];
  if (!same_input) {
    for (ActRows& a : act_) a.x = nullptr;
  }
  // 48 = a multiple of the SIMD kernels' row blocks (3 on AVX2, 6 on AVX-512, 16-row panels) and of the packed
  // layouts' row groups (kPackedRowGroup): every range but the last starts and ends on a group.
  static_assert(48 % kPackedRowGroup == 0, "row ranges must begin on a packed row group");
  if (format == kActF32 || !k_.matmul_act[w.type]) {
    MatmulFn fn = k_.matmul[w.type];
    split_work(pool_, w.ne1, 48, n, n > 1, [&](int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
      fn(w.data, w.ne0, x + t0 * ldx, ldx, t1 - t0, y + t0 * ldy, ldy, r0, r1);
    });
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
  // By row count: one row (decode) and 2 .. kFewRowsMax rows (a speculative verify step, a few decoding
  // sequences) stream the weights once from memory, split statically like decode; larger batches are
  // compute-bound prefill, split dynamically.
  const bool few = n >= 2 && n <= kFewRowsMax && k_.matmul_act_few[w.type] && few_rows_enabled();
  MatmulActFn fn = w.packed ? (few ? k_.matmul_act_few_packed[w.type] : k_.matmul_act_packed[w.type])
                            : (few ? k_.matmul_act_few[w.type] : k_.matmul_act[w.type]);
  const uint8_t* rows = aligned_rows(a);
  split_work(pool_, w.ne1, 48, n, n > 1 && !few, [&](int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
    fn(w.data, w.ne0, rows + static_cast<size_t>(t0) * lda, static_cast<int64_t>(lda), t1 - t0, y + t0 * ldy, ldy, r0, r1);
  });
}

void lens_statistics(const HostBuffers& io, const int32_t* ids, int64_t m, int64_t k, int32_t* top) {
  const float* z = io.logits;
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
    io.lens_ids[i] = top[i];
    io.lens_probs[i] = prob(top[i]);
  }
  for (int64_t i = written; i < k; ++i) {  // fewer candidates than k
    io.lens_ids[i] = -1;
    io.lens_probs[i] = 0.f;
  }
  const float p1 = prob(top[0]);
  const float p2 = kk > 1 ? prob(top[1]) : 0.f;
  io.lens_features[0] = p1;
  io.lens_features[1] = p2;
  io.lens_features[2] = p1 - p2;
  io.lens_features[3] = static_cast<float>(log_sum - weighted / sum);
}

void hidden_change(const float* now, const float* before, int64_t n, float* cosine, float* relative_norm) {
  double dot = 0.0, now2 = 0.0, before2 = 0.0, diff2 = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double a = now[i], b = before[i];
    dot += a * b;
    now2 += a * a;
    before2 += b * b;
    diff2 += (a - b) * (a - b);
  }
  const double norms = std::sqrt(now2 * before2);
  *cosine = norms > 0.0 ? static_cast<float>(dot / norms) : 1.f;
  *relative_norm = before2 > 0.0 ? static_cast<float>(std::sqrt(diff2 / before2)) : 0.f;
}

int64_t attention_rows(ThreadPool& pool, const KernelTable& k, const HostBuffers& io, int64_t n, int64_t n_head,
                       int64_t n_kv_head, int64_t head_dim, const float* q, float* out, const float* k_layer,
                       const float* v_layer, int64_t n_ctx, int64_t* runs, float* scratch, float* head_stats) {
  const int64_t q_dim = n_head * head_dim, kv_dim = n_kv_head * head_dim;
  int64_t n_runs = 0;
  runs[0] = 0;
  for (int64_t t = 1; t <= n; ++t) {
    if (t == n || io.row_seq[t] != io.row_seq[t - 1] || io.row_pos[t] != io.row_pos[t - 1] + 1) runs[++n_runs] = t;
  }
  const int64_t group = n_head / n_kv_head;
  pool.parallel_for(n_runs * n_kv_head, 1, [&](int64_t i0, int64_t i1, int thread) {
    float* thread_scratch = scratch + static_cast<size_t>(thread) * n_ctx;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t run = i / n_kv_head, g = i % n_kv_head;
      const int64_t r0 = runs[run], r1 = runs[run + 1], seq = io.row_seq[r0];
      AttentionArgs a;
      a.q = q + r0 * q_dim;
      a.k = k_layer + seq * n_ctx * kv_dim;
      a.v = v_layer + seq * n_ctx * kv_dim;
      a.out = out + r0 * q_dim;
      a.n_tok = r1 - r0;
      a.pos0 = io.row_pos[r0];
      a.n_head = n_head;
      a.n_kv_head = n_kv_head;
      a.head_dim = head_dim;
      a.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));  // llama's and OPTAttention's head_dim^-0.5
      if (head_stats != nullptr) {
        a.stats_tok = a.n_tok - 1;
        a.stats = head_stats + (r1 - 1) * n_head * 2;
      }
      k.attention(a, g * group, (g + 1) * group, thread_scratch);
    }
  });
  return n_runs;
}

}  // namespace adainfer
