// Tests of the quantized weight types: block layouts decoded element by element here (independently of the
// library's unpacking code), the quantizers, the activation quantizers (every SIMD table bit-identical to the
// reference), and the matmuls: the generic one against a double-precision sum over the dequantized weights
// and activations, every SIMD table against the generic one, at awkward sizes.
#include <math.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/ggml_types.h"
#include "core/kernels.h"
#include "blocks/block_common.h"
#include "core/quantize.h"
#include "core/thread_pool.h"
#include "test_harness.h"

using namespace adainfer;

namespace {

struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed) {}
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform(float lo, float hi) {
    return lo + (hi - lo) * static_cast<float>(static_cast<double>(next() >> 40) / 16777216.0);
  }
  float normal() {  // Box-Muller
    const double u1 = (static_cast<double>(next() >> 11) + 1.0) / 9007199254740993.0;
    const double u2 = static_cast<double>(next() >> 11) / 9007199254740992.0;
    return static_cast<float>(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
  }
};

const GgmlType kQuantTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
                                GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q8_K};

const char* name_of(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return "Q4_0";
    case GgmlType::Q4_1: return "Q4_1";
    case GgmlType::Q5_0: return "Q5_0";
    case GgmlType::Q5_1: return "Q5_1";
    case GgmlType::Q8_0: return "Q8_0";
    case GgmlType::Q4_K: return "Q4_K";
    case GgmlType::Q5_K: return "Q5_K";
    case GgmlType::Q6_K: return "Q6_K";
    case GgmlType::Q8_K: return "Q8_K";
    case GgmlType::F32: return "F32";
    case GgmlType::F16: return "F16";
    case GgmlType::BF16: return "BF16";
    default: return "?";
  }
}
int id_of(GgmlType t) { return static_cast<int>(t); }
int block_elems(GgmlType t) {
  TypeTraits tt{};
  type_traits(id_of(t), &tt);
  return tt.block_elems;
}
bool is_k(GgmlType t) { return block_elems(t) == 256; }

// ---- independent decoding: element i of a row, from the bytes, following ggml-common.h's descriptions --------

uint16_t u16_at(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
float half_at(const uint8_t* p) { return fp16_to_fp32(u16_at(p)); }
int bit(const uint8_t* bytes, int k) { return (bytes[k / 8] >> (k % 8)) & 1; }

// 6-bit scale (kind 0) or min (kind 1) of sub-block j of Q4_K/Q5_K, from the 12 bytes, as the bit diagram
// of get_scale_min_k4: j < 4: low 6 bits of byte j (scale) / j + 4 (min); j >= 4: 4 low bits from the nibbles
// of byte j + 4 (scale: low nibble, min: high nibble), 2 high bits from bits 6-7 of byte j - 4 / j.
int k6(const uint8_t* s, int j, int kind) {
  if (j < 4) return s[j + 4 * kind] % 64;
  const int low = kind == 0 ? s[j + 4] % 16 : s[j + 4] / 16;
  const int high = (kind == 0 ? s[j - 4] : s[j]) / 64;
  return low + 16 * high;
}

double element(GgmlType type, const uint8_t* row, int64_t i) {
  const int64_t nb = block_elems(type);
  TypeTraits tt{};
  type_traits(id_of(type), &tt);
  const uint8_t* b = row + (i / nb) * tt.block_bytes;
  const int e = static_cast<int>(i % nb);
  switch (type) {
    case GgmlType::Q4_0: {
      const int q = e < 16 ? b[2 + e] % 16 : b[2 + e - 16] / 16;
      return half_at(b) * (q - 8);
    }
    case GgmlType::Q4_1: {
      const int q = e < 16 ? b[4 + e] % 16 : b[4 + e - 16] / 16;
      return static_cast<double>(half_at(b)) * q + half_at(b + 2);
    }
    case GgmlType::Q5_0: {
      const int q = (e < 16 ? b[6 + e] % 16 : b[6 + e - 16] / 16) + 16 * bit(b + 2, e);
      return half_at(b) * (q - 16);
    }
    case GgmlType::Q5_1: {
      const int q = (e < 16 ? b[8 + e] % 16 : b[8 + e - 16] / 16) + 16 * bit(b + 4, e);
      return static_cast<double>(half_at(b)) * q + half_at(b + 2);
    }
    case GgmlType::Q8_0:
      return half_at(b) * static_cast<int8_t>(b[2 + e]);
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      const bool five = type == GgmlType::Q5_K;
      const uint8_t* qs = b + (five ? 48 : 16);
      const int chunk = e / 64, l = e % 32;
      const bool high = (e % 64) >= 32;
      int q = high ? qs[32 * chunk + l] / 16 : qs[32 * chunk + l] % 16;
      if (five) q += 16 * ((b[16 + l] >> (2 * chunk + (high ? 1 : 0))) & 1);
      const int j = e / 32;
      return static_cast<double>(half_at(b)) * k6(b + 4, j, 0) * q - static_cast<double>(half_at(b + 2)) * k6(b + 4, j, 1);
    }
    case GgmlType::Q6_K: {
      const uint8_t* ql = b;
      const uint8_t* qh = b + 128;
      const int8_t sc = static_cast<int8_t>(b[192 + e / 16]);
      const int half = e / 128, r = e % 128, quarter = r / 32, l = r % 32;
      // quarter 0: low nibble of ql[l], 1: low of ql[32+l], 2: high of ql[l], 3: high of ql[32+l];
      // high bits: bits 2*quarter, 2*quarter+1 of qh[l]
      const uint8_t lb = ql[64 * half + (quarter % 2) * 32 + l];
      const int low = quarter < 2 ? lb % 16 : lb / 16;
      const int hi2 = (qh[32 * half + l] >> (2 * quarter)) & 3;
      return static_cast<double>(half_at(b + 208)) * sc * (low + 16 * hi2 - 32);
    }
    case GgmlType::Q8_K: {
      float d;
      std::memcpy(&d, b, 4);
      return static_cast<double>(d) * static_cast<int8_t>(b[4 + e]);
    }
    default:
      return NAN;
  }
}

// Random bytes that form valid blocks (finite fp16 scales of moderate size; Q8_K: a float d, consistent bsums).
std::vector<uint8_t> random_blocks(GgmlType type, int64_t n, Rng& rng) {
  const size_t bytes = row_bytes(id_of(type), n);
  std::vector<uint8_t> v(bytes);
  for (auto& x : v) x = static_cast<uint8_t>(rng.next());
  TypeTraits tt{};
  type_traits(id_of(type), &tt);
  for (size_t off = 0; off < bytes; off += static_cast<size_t>(tt.block_bytes)) {
    uint8_t* b = v.data() + off;
    auto put_half = [&](uint8_t* p, float f) {
      const uint16_t h = fp32_to_fp16(f);
      p[0] = static_cast<uint8_t>(h);
      p[1] = static_cast<uint8_t>(h >> 8);
    };
    switch (type) {
      case GgmlType::Q4_1: case GgmlType::Q5_1: case GgmlType::Q4_K: case GgmlType::Q5_K:
        put_half(b, rng.uniform(-0.05f, 0.05f));
        put_half(b + 2, rng.uniform(-0.05f, 0.05f));
        break;
      case GgmlType::Q6_K:
        put_half(b + 208, rng.uniform(-0.01f, 0.01f));
        break;
      case GgmlType::Q8_K: {
        const float d = rng.uniform(-0.01f, 0.01f);
        std::memcpy(b, &d, 4);
        for (int g = 0; g < 16; ++g) {
          int s = 0;
          for (int l = 0; l < 16; ++l) s += static_cast<int8_t>(b[4 + 16 * g + l]);
          b[260 + 2 * g] = static_cast<uint8_t>(s & 0xff);
          b[261 + 2 * g] = static_cast<uint8_t>((s >> 8) & 0xff);
        }
        break;
      }
      default:
        put_half(b, rng.uniform(-0.05f, 0.05f));
        break;
    }
  }
  return v;
}

std::vector<const KernelTable*> all_tables() {
  std::vector<const KernelTable*> v = {&kernels_generic()};
  for (const KernelTable* t : {kernels_avx2(), kernels_avx512_plain(), kernels_avx512_vnni()})
    if (t) v.push_back(t);
  return v;
}
const char* table_label(const KernelTable* t) {
  if (t == kernels_avx512_vnni()) return "avx512+vnni";
  return t->name;
}
// The SIMD tables this CPU runs, with VNNI and without.
std::vector<const KernelTable*> simd_tables() {
  std::vector<const KernelTable*> v = all_tables();
  v.erase(v.begin());
  return v;
}

}  // namespace

TEST(quant_tables_complete) {
  for (const KernelTable* t : all_tables()) {
    for (GgmlType type : kQuantTypes) {
      const int id = id_of(type);
      CHECK_MSG(t->matmul[id] && t->matmul_act[id] && t->dequant_row[id], "%s %s", table_label(t), name_of(type));
      CHECK_MSG(t->act_format[id] == (is_k(type) ? kActQ8_K : kActQ8_0), "%s %s", table_label(t), name_of(type));
    }
    CHECK(t->quantize_act[kActQ8_0] && t->quantize_act[kActQ8_K]);
  }
  if (cpu_features().avx512_vnni) CHECK(kernels_avx512() == kernels_avx512_vnni());
}

TEST(quant_dequant_matches_independent_decoding) {
  Rng rng(11);
  for (GgmlType type : kQuantTypes) {
    for (int64_t n : {256, 512, 1280}) {
      const std::vector<uint8_t> row = random_blocks(type, n, rng);
      std::vector<float> out(static_cast<size_t>(n));
      std::vector<double> want(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) want[i] = element(type, row.data(), i);
      const int64_t nb = block_elems(type);
      for (const KernelTable* t : all_tables()) {
        t->dequant_row[id_of(type)](row.data(), out.data(), n);
        for (int64_t i = 0; i < n; ++i) {
          double block_max = 0;
          for (int64_t k = i / nb * nb; k < (i / nb + 1) * nb; ++k) block_max = fmax(block_max, fabs(want[k]));
          // float rounding of d * sc * q and dmin * m (and their difference): a few ulps of the block's scale
          CHECK_MSG(fabs(out[i] - want[i]) <= 1e-6 * block_max + 1e-12, "%s %s n=%lld i=%lld: %g vs %g",
                    table_label(t), name_of(type), (long long)n, (long long)i, out[i], want[i]);
        }
      }
    }
  }
}

TEST(quantize_round_trip) {
  // Gaussian rows: the relative RMS error of quantize -> dequantize is what the bit widths allow.
  struct Bound {
    GgmlType type;
    double max_rel_rms;
  };
  const Bound bounds[] = {{GgmlType::Q4_0, 0.12}, {GgmlType::Q4_1, 0.10}, {GgmlType::Q5_0, 0.06},
                          {GgmlType::Q5_1, 0.05}, {GgmlType::Q8_0, 0.006}, {GgmlType::Q4_K, 0.10},
                          {GgmlType::Q5_K, 0.05}, {GgmlType::Q6_K, 0.025}, {GgmlType::Q8_K, 0.015}};
  Rng rng(12);
  const int64_t rows = 8, n = 1024;
  std::vector<float> x(static_cast<size_t>(rows * n));
  for (auto& v : x) v = rng.normal() * 0.02f;
  x[5] = 0.3f;  // an outlier
  for (int64_t i = 0; i < 256; ++i) x[2 * n + i] = 0.f;  // an all-zero block
  for (const Bound& b : bounds) {
    const size_t rb = row_bytes(id_of(b.type), n);
    std::vector<uint8_t> q(rb * rows);
    CHECK(quantize_rows(id_of(b.type), x.data(), q.data(), rows, n) == rb * rows);
    double err = 0, ref = 0;
    std::vector<float> back(static_cast<size_t>(n));
    for (int64_t r = 0; r < rows; ++r) {
      kernels_generic().dequant_row[id_of(b.type)](q.data() + r * rb, back.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double d = back[i] - x[r * n + i];
        err += d * d;
        ref += static_cast<double>(x[r * n + i]) * x[r * n + i];
        if (r == 2 && i < 256) CHECK_MSG(back[i] == 0.f, "%s: zero block decodes to %g", name_of(b.type), back[i]);
      }
    }
    const double rel = sqrt(err / ref);
    CHECK_MSG(rel <= b.max_rel_rms, "%s: relative rms error %.4f > %.4f", name_of(b.type), rel, b.max_rel_rms);
  }
  // Rows not a whole number of blocks, unknown types: nothing written.
  std::vector<uint8_t> dummy(4096);
  CHECK(quantize_rows(id_of(GgmlType::Q4_K), x.data(), dummy.data(), 1, 100) == 0);
  CHECK(quantize_rows(id_of(GgmlType::Q8_0), x.data(), dummy.data(), 1, 33) == 0);
  CHECK(quantize_rows(19, x.data(), dummy.data(), 1, 256) == 0);
}

TEST(quantize_reference_rules) {
  // Q8_0 / Q4_0 follow ggml's reference rounding exactly; check one block by hand.
  float x[32];
  for (int i = 0; i < 32; ++i) x[i] = (i - 16) * 0.01f;
  x[3] = -0.5f;  // the extreme value sets the scale: Q4_0 maps it to -8, Q8_0 to -127
  BlockQ8_0 q8;
  quantize_rows(id_of(GgmlType::Q8_0), x, &q8, 1, 32);
  CHECK(q8.qs[3] == -127);
  CHECK(fp16_to_fp32(q8.d) == fp16_to_fp32(fp32_to_fp16(0.5f / 127.f)));
  for (int i = 0; i < 32; ++i) CHECK(q8.qs[i] == static_cast<int8_t>(roundf(x[i] / (0.5f / 127.f))));
  BlockQ4_0 q4;
  quantize_rows(id_of(GgmlType::Q4_0), x, &q4, 1, 32);
  CHECK((q4.qs[3] & 0xF) == 0);  // -8 + 8
  CHECK(fp16_to_fp32(q4.d) == fp16_to_fp32(fp32_to_fp16(0.5f / 8.f)));
}

// ---- activation quantizers ----------------------------------------------------------------------------------

TEST(quant_activation_rows_bit_identical) {
  Rng rng(13);
  for (int64_t n : {256, 512, 2304, 96, 2080}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = rng.normal();
    // ties: values that scale to exactly k + 0.5 in the first Q8_0 block (amax 127 -> d = 1)
    x[0] = 127.f;
    for (int i = 1; i < 32; ++i) x[i] = static_cast<float>(i - 16) + 0.5f;
    for (int i = 32; i < 64; ++i) x[i] = 0.f;  // an all-zero Q8_0 block
    if (n > 200) x[200] = -127.f;  // same magnitude as x[0] in the first Q8_K block: the first one sets the sign
    for (int i = 256; i < 512 && i < n; ++i) x[i] = 0.f;  // an all-zero Q8_K block
    for (int32_t format : {kActQ8_0, kActQ8_K}) {
      if (format == kActQ8_K && n % 256 != 0) continue;
      const size_t bytes = act_row_bytes(format, n);
      std::vector<uint8_t> want(bytes, 0xAB), got(bytes, 0xAB);
      kernels_generic().quantize_act[format](x.data(), want.data(), n);
      for (const KernelTable* t : simd_tables()) {
        std::fill(got.begin(), got.end(), 0xAB);
        t->quantize_act[format](x.data(), got.data(), n);
        // compare the meaningful bytes of each section (padding is left as is)
        bool same = true;
        if (format == kActQ8_0) {
          const ActQ8_0Row a = act_q8_0_row(want.data(), n), b = act_q8_0_row(got.data(), n);
          same = !std::memcmp(a.q, b.q, n) && !std::memcmp(a.qn, b.qn, (n + 127) / 128 * 128) &&
                 !std::memcmp(a.d, b.d, n / 32 * 4) && !std::memcmp(a.s, b.s, n / 32 * 4) &&
                 !std::memcmp(a.sum, b.sum, n / 32 * 4);
        } else {
          const ActQ8_KRow a = act_q8_k_row(want.data(), n), b = act_q8_k_row(got.data(), n);
          same = !std::memcmp(a.q, b.q, n) && !std::memcmp(a.qk, b.qk, n) && !std::memcmp(a.d, b.d, n / 256 * 4) &&
                 !std::memcmp(a.bsums, b.bsums, n / 16 * 2) && !std::memcmp(a.sum16, b.sum16, n / 16 * 4) &&
                 !std::memcmp(a.sum32, b.sum32, n / 32 * 4);
        }
        CHECK_MSG(same, "%s format %d n=%lld differs from the reference", table_label(t), format, (long long)n);
      }
    }
  }
  // The rules themselves, on the reference: roundf ties away from zero (Q8_0), max/-127 scale (Q8_K).
  std::vector<float> x(256, 0.f);
  x[0] = 127.f;
  x[1] = 2.5f;
  x[2] = -2.5f;
  std::vector<uint8_t> a(act_row_bytes(kActQ8_0, 256));
  kernels_generic().quantize_act[kActQ8_0](x.data(), a.data(), 256);
  const ActQ8_0Row r = act_q8_0_row(a.data(), 256);
  CHECK(r.q[0] == 127 && r.q[1] == 3 && r.q[2] == -3 && r.d[0] == 1.f && r.sum[0] == 127.f);
  std::vector<uint8_t> k(act_row_bytes(kActQ8_K, 256));
  x[5] = -254.f;
  kernels_generic().quantize_act[kActQ8_K](x.data(), k.data(), 256);
  const ActQ8_KRow kr = act_q8_k_row(k.data(), 256);
  // max = -254 -> iscale = 0.5, d = 2: q = nearest_int(x / 2), ties to even
  CHECK(kr.q[5] == -127 && kr.d[0] == 2.f && kr.q[1] == 1 && kr.q[0] == 64);
}

// ---- matmul -------------------------------------------------------------------------------------------------

namespace {

// A quantized weight matrix from Gaussian values, with the dequantized values.
struct QWeights {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
  size_t rb;
};

QWeights make_qweights(GgmlType type, int64_t rows, int64_t n, Rng& rng) {
  QWeights w;
  w.rb = row_bytes(id_of(type), n);
  std::vector<float> x(static_cast<size_t>(rows * n));
  for (auto& v : x) v = rng.normal() * 0.05f;
  w.bytes.resize(w.rb * rows);
  quantize_rows(id_of(type), x.data(), w.bytes.data(), rows, n);
  w.values.resize(x.size());
  for (int64_t r = 0; r < rows; ++r) kernels_generic().dequant_row[id_of(type)](w.bytes.data() + r * w.rb, &w.values[r * n], n);
  return w;
}

// Dequantized activation row (d * q) of either format.
std::vector<double> act_values(int32_t format, const uint8_t* row, int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  if (format == kActQ8_0) {
    const ActQ8_0Row a = act_q8_0_row(row, n);
    for (int64_t i = 0; i < n; ++i) v[i] = static_cast<double>(a.d[i / 32]) * a.q[i];
  } else {
    const ActQ8_KRow a = act_q8_k_row(row, n);
    for (int64_t i = 0; i < n; ++i) v[i] = static_cast<double>(a.d[i / 256]) * a.q[i];
  }
  return v;
}

struct Case {
  int64_t n_in, rows, n_tok, row_begin;
};

}  // namespace

TEST(quant_matmul_generic_matches_double_reference) {
  Rng rng(21);
  for (GgmlType type : kQuantTypes) {
    const int32_t format = is_k(type) ? kActQ8_K : kActQ8_0;
    for (const Case c : {Case{256, 5, 3, 1}, Case{is_k(type) ? 768 : 96, 7, 2, 0}}) {
      const int64_t total = c.row_begin + c.rows;
      const QWeights w = make_qweights(type, total, c.n_in, rng);
      std::vector<float> x(static_cast<size_t>(c.n_tok * c.n_in));
      for (auto& v : x) v = rng.normal();
      const size_t lda = act_row_bytes(format, c.n_in);
      std::vector<uint8_t> act(lda * c.n_tok);
      for (int64_t t = 0; t < c.n_tok; ++t) kernels_generic().quantize_act[format](&x[t * c.n_in], &act[t * lda], c.n_in);
      std::vector<float> y(static_cast<size_t>(c.n_tok * total), NAN);
      kernels_generic().matmul_act[id_of(type)](w.bytes.data(), c.n_in, act.data(), static_cast<int64_t>(lda), c.n_tok,
                                                y.data(), total, c.row_begin, total);
      const bool has_min = type == GgmlType::Q4_1 || type == GgmlType::Q5_1;
      for (int64_t t = 0; t < c.n_tok; ++t) {
        const std::vector<double> xv = act_values(format, &act[t * lda], c.n_in);
        for (int64_t r = c.row_begin; r < total; ++r) {
          double s = 0, a = 0;
          for (int64_t i = 0; i < c.n_in; ++i) {
            s += w.values[r * c.n_in + i] * xv[i];
            a += fabs(w.values[r * c.n_in + i] * xv[i]);
          }
          if (has_min) {
            // ggml multiplies a block's min m by the activation's s = fp16(d * sum q), not by d * sum q
            const ActQ8_0Row ar = act_q8_0_row(&act[t * lda], c.n_in);
            for (int64_t b = 0; b < c.n_in / 32; ++b) {
              const double m = half_at(w.bytes.data() + r * w.rb + b * (type == GgmlType::Q4_1 ? 20 : 24) + 2);
              s += m * (static_cast<double>(ar.s[b]) - static_cast<double>(ar.d[b]) * ar.sum[b]);
            }
          }
          // float rounding of the per-block scale products and of the running sum: ~1e-6 of sum |w x|
          CHECK_MSG(fabs(y[t * total + r] - s) <= 2e-6 * a + 1e-9, "%s n=%lld t=%lld r=%lld: %.9g vs %.9g (sum|wx| %g)",
                    name_of(type), (long long)c.n_in, (long long)t, (long long)r, y[t * total + r], s, a);
        }
      }
    }
  }
}

TEST(quant_matmul_simd_matches_generic) {
  Rng rng(22);
  for (GgmlType type : kQuantTypes) {
    const int32_t format = is_k(type) ? kActQ8_K : kActQ8_0;
    // awkward sizes: odd block counts, partial groups of 16 blocks, partial 16-row panels, token counts
    // around the tile sizes (4 and 8), and past the token counts from which AVX2 prefill takes the 8-row panels
    // (Q4_K / Q5_K: 8, Q8_0: 32) with a partial tile of tokens and rows left over
    const std::vector<int64_t> sizes = is_k(type) ? std::vector<int64_t>{256, 768, 2304} : std::vector<int64_t>{32, 96, 544, 2080};
    for (int64_t n_in : sizes) {
      for (const Case c : {Case{n_in, 1, 1, 0}, Case{n_in, 17, 1, 3}, Case{n_in, 33, 2, 5}, Case{n_in, 16, 3, 0},
                           Case{n_in, 5, 8, 2}, Case{n_in, 21, 9, 1}, Case{n_in, 40, 17, 7},
                           Case{n_in, 19, 37, 3}}) {
        const int64_t total = c.row_begin + c.rows + 2;
        const int64_t row_end = c.row_begin + c.rows;
        const QWeights w = make_qweights(type, total, n_in, rng);
        const int64_t ldx = n_in + 3;
        std::vector<float> x(static_cast<size_t>(c.n_tok * ldx), NAN);
        for (int64_t t = 0; t < c.n_tok; ++t)
          for (int64_t i = 0; i < n_in; ++i) x[t * ldx + i] = rng.normal();
        const size_t lda = act_row_bytes(format, n_in);
        std::vector<uint8_t> act(lda * c.n_tok);
        for (int64_t t = 0; t < c.n_tok; ++t) kernels_generic().quantize_act[format](&x[t * ldx], &act[t * lda], n_in);
        const int64_t ldy = total + 1;
        std::vector<float> want(static_cast<size_t>(c.n_tok * ldy), 7.f);
        kernels_generic().matmul_act[id_of(type)](w.bytes.data(), n_in, act.data(), static_cast<int64_t>(lda), c.n_tok,
                                                  want.data(), ldy, c.row_begin, row_end);
        for (const KernelTable* t : simd_tables()) {
          for (int entry = 0; entry < 2; ++entry) {  // matmul_act, and matmul (float activations)
            std::vector<float> got(static_cast<size_t>(c.n_tok * ldy), 7.f);
            if (entry == 0) {
              t->matmul_act[id_of(type)](w.bytes.data(), n_in, act.data(), static_cast<int64_t>(lda), c.n_tok, got.data(),
                                         ldy, c.row_begin, row_end);
            } else {
              t->matmul[id_of(type)](w.bytes.data(), n_in, x.data(), ldx, c.n_tok, got.data(), ldy, c.row_begin, row_end);
            }
            int reported = 0;
            for (int64_t tok = 0; tok < c.n_tok; ++tok) {
              const std::vector<double> xv = act_values(format, &act[tok * lda], n_in);
              for (int64_t r = 0; r < ldy; ++r) {
                const float g = got[tok * ldy + r], e = want[tok * ldy + r];
                if (r < c.row_begin || r >= row_end) {
                  if (g != 7.f && reported++ < 3) CHECK_MSG(false, "%s %s wrote row %lld outside the range", table_label(t), name_of(type), (long long)r);
                  continue;
                }
                double a = 0;
                for (int64_t i = 0; i < n_in; ++i) a += fabs(w.values[r * n_in + i] * xv[i]);
                if (!(fabs(g - e) <= 4e-6 * a + 1e-9) && reported++ < 3) {
                  CHECK_MSG(false, "%s %s entry %d n=%lld rows=%lld tok=%lld/%lld r=%lld: %.9g vs generic %.9g (sum|wx| %g)",
                            table_label(t), name_of(type), entry, (long long)n_in, (long long)c.rows, (long long)tok,
                            (long long)c.n_tok, (long long)r, g, e, a);
                }
              }
            }
          }
        }
      }
    }
  }
}

// The few-row kernels (matmul_act_few, rows 2 .. kFewRowsMax): present for every quantized type in every table,
// the generic one bit-identical to the generic matmul_act (same sums, same order), every SIMD table within the
// tolerance of quant_matmul_simd_matches_generic, writing only its rows and range.
TEST(quant_matmul_few_tables) {
  for (const KernelTable* t : all_tables()) {
    for (GgmlType type : kQuantTypes) {
      CHECK_MSG(t->matmul_act_few[id_of(type)] != nullptr, "%s %s", table_label(t), name_of(type));
    }
  }
}

TEST(quant_matmul_few_matches_generic) {
  Rng rng(23);
  for (GgmlType type : kQuantTypes) {
    const int32_t format = is_k(type) ? kActQ8_K : kActQ8_0;
    // block counts below, at and around the AVX2 kernel's groups of 8 blocks and AVX-512's 16; K-quants: 1..9
    // blocks of 256
    const std::vector<int64_t> sizes =
        is_k(type) ? std::vector<int64_t>{256, 768, 2304} : std::vector<int64_t>{32, 96, 256, 288, 544, 2080};
    for (int64_t n_in : sizes) {
      // every activation row count 1 .. kFewRowsMax (each a separate instantiation of the AVX2 8-row kernel); weight
      // row counts 6 .. 21 around its groups of 8 weight rows (and the row kernel for the rest)
      for (int64_t n_tok = 1; n_tok <= kFewRowsMax; ++n_tok) {
        const int64_t row_begin = n_tok % 3, rows = 5 + n_tok;  // unaligned ranges, partial 16-row blocks
        const int64_t row_end = row_begin + rows, total = row_end + 2;
        const QWeights w = make_qweights(type, total, n_in, rng);
        const size_t lda = act_row_bytes(format, n_in);
        // activation rows 64-byte aligned, as MatmulRunner makes them, and one row past n_tok that must stay unread
        std::vector<uint8_t> act_mem(lda * static_cast<size_t>(n_tok + 1) + 64);
        uint8_t* act = act_mem.data() + (64 - reinterpret_cast<uintptr_t>(act_mem.data()) % 64) % 64;
        std::vector<float> x(static_cast<size_t>(n_in));
        for (int64_t t = 0; t <= n_tok; ++t) {
          for (auto& v : x) v = rng.normal();
          kernels_generic().quantize_act[format](x.data(), act + t * lda, n_in);
        }
        const int64_t ldy = total + 1;
        std::vector<float> want(static_cast<size_t>((n_tok + 1) * ldy), 7.f);
        kernels_generic().matmul_act[id_of(type)](w.bytes.data(), n_in, act, static_cast<int64_t>(lda), n_tok,
                                                  want.data(), ldy, row_begin, row_end);
        for (const KernelTable* t : all_tables()) {
          std::vector<float> got(static_cast<size_t>((n_tok + 1) * ldy), 7.f);
          t->matmul_act_few[id_of(type)](w.bytes.data(), n_in, act, static_cast<int64_t>(lda), n_tok, got.data(), ldy,
                                         row_begin, row_end);
          const bool generic = t == &kernels_generic();
          int reported = 0;
          for (int64_t tok = 0; tok <= n_tok; ++tok) {
            const std::vector<double> xv = act_values(format, act + tok * lda, n_in);
            for (int64_t r = 0; r < ldy; ++r) {
              const float g = got[tok * ldy + r], e = want[tok * ldy + r];
              if (tok == n_tok || r < row_begin || r >= row_end) {
                if (g != 7.f && reported++ < 3)
                  CHECK_MSG(false, "%s %s n_tok=%lld wrote row %lld of token %lld outside the range", table_label(t),
                            name_of(type), (long long)n_tok, (long long)r, (long long)tok);
                continue;
              }
              double a = 0;
              for (int64_t i = 0; i < n_in; ++i) a += fabs(w.values[r * n_in + i] * xv[i]);
              const bool ok = generic ? std::memcmp(&g, &e, sizeof g) == 0 : fabs(g - e) <= 4e-6 * a + 1e-9;
              if (!ok && reported++ < 3) {
                CHECK_MSG(false, "%s %s n=%lld tok=%lld/%lld r=%lld: %.9g vs generic matmul_act %.9g (sum|wx| %g)",
                          table_label(t), name_of(type), (long long)n_in, (long long)tok, (long long)n_tok,
                          (long long)r, g, e, a);
              }
            }
          }
        }
      }
    }
  }
}

// MatmulRunner picks the kernel by row count (one row, a few, a batch) and splits the rows over the pool (or, for a
// matrix of few rows, the tokens: split_work): each count gives what the generic matmul_act gives, for the best table
// and two threads, and bit for bit what one thread gives.
TEST(matmul_runner_every_row_count) {
  Rng rng(24);
  ThreadPool pool(2), one(1);
  const KernelTable& k = kernels_best();
  MatmulRunner mm(pool, k), mm_one(one, k);
  for (GgmlType type : {GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K}) {
    for (int64_t rows : {int64_t{100}, int64_t{600}}) {  // 100 rows: split by tokens; 600: by rows
    const int64_t n_in = 512;
    const QWeights w = make_qweights(type, rows, n_in, rng);
    WeightView view;
    view.data = w.bytes.data();
    view.type = id_of(type);
    view.ne0 = n_in;
    view.ne1 = rows;
    view.row_bytes = w.rb;
    const int32_t format = is_k(type) ? kActQ8_K : kActQ8_0;
    const size_t lda = act_row_bytes(format, n_in);
    for (int64_t n : {1, 2, 3, 8, 9, 16, 17, 33, 64, 70, 97}) {
      std::vector<float> x(static_cast<size_t>(n * n_in));
      for (auto& v : x) v = rng.normal();
      std::vector<uint8_t> act(lda * static_cast<size_t>(n));
      for (int64_t t = 0; t < n; ++t) kernels_generic().quantize_act[format](&x[t * n_in], &act[t * lda], n_in);
      std::vector<float> want(static_cast<size_t>(n * rows)), got(static_cast<size_t>(n * rows), 7.f);
      kernels_generic().matmul_act[id_of(type)](w.bytes.data(), n_in, act.data(), static_cast<int64_t>(lda), n,
                                                want.data(), rows, 0, rows);
      mm(view, x.data(), n_in, n, got.data(), rows);
      std::vector<float> got_one(got.size(), 7.f);
      mm_one(view, x.data(), n_in, n, got_one.data(), rows);
      CHECK_MSG(std::memcmp(got.data(), got_one.data(), got.size() * sizeof(float)) == 0,
                "%s %s rows=%lld n=%lld: two threads give other results than one", k.name, name_of(type), (long long)rows, (long long)n);
      // the same matrix packed, where the table packs the type (the runner takes the packed kernels)
      std::vector<float> got_packed(got.size(), 7.f);
      std::vector<uint8_t> packed;
      if (k.pack_rows[id_of(type)]) {
        packed.resize(w.bytes.size());
        k.pack_rows[id_of(type)](w.bytes.data(), packed.data(), rows, n_in);
        WeightView packed_view = view;
        packed_view.data = packed.data();
        packed_view.packed = true;
        mm(packed_view, x.data(), n_in, n, got_packed.data(), rows);
        CHECK_MSG(std::memcmp(got.data(), got_packed.data(), got.size() * sizeof(float)) == 0,
                  "%s %s n=%lld: the packed matrix gives other results", k.name, name_of(type), (long long)n);
      }
      int reported = 0;
      for (int64_t t = 0; t < n; ++t) {
        const std::vector<double> xv = act_values(format, &act[t * lda], n_in);
        for (int64_t r = 0; r < rows; ++r) {
          double a = 0;
          for (int64_t i = 0; i < n_in; ++i) a += fabs(w.values[r * n_in + i] * xv[i]);
          const float g = got[t * rows + r], e = want[t * rows + r];
          if (!(fabs(g - e) <= 4e-6 * a + 1e-9) && reported++ < 3)
            CHECK_MSG(false, "%s %s n=%lld t=%lld r=%lld: %.9g vs %.9g", k.name, name_of(type), (long long)n,
                      (long long)t, (long long)r, g, e);
        }
      }
    }
  }
    }
}

// Packed layer matrices (KernelTable::pack_rows, blocks/weight_packing.h): for every table and type that packs, the
// packed kernels give bit for bit what the same table's kernels give on the GGUF rows (the packing only moves
// bytes; each row's sums run in the same order), for every row count (decode, the few-row kernel, prefill tiles and
// their rests), row counts that leave a tail of GGUF rows, and ranges that start on a later group of 8. A packed
// matrix has the bytes of the original, and no kernel writes outside its rows and range.
TEST(quant_matmul_packed_matches_rows) {
  Rng rng(25);
  int packed_types = 0;
  for (const KernelTable* t : all_tables()) {
    for (GgmlType type : kQuantTypes) {
      const int id = id_of(type);
      if (!t->pack_rows[id]) continue;
      ++packed_types;
      CHECK_MSG(t->matmul_act_packed[id] && t->matmul_act_few_packed[id], "%s %s packs without kernels", table_label(t),
                name_of(type));
      const int32_t format = is_k(type) ? kActQ8_K : kActQ8_0;
      for (int64_t n_in : {32, 96, 288, 2080}) {
        for (int64_t total : {8, 13, 21, 40, 53}) {
          const QWeights w = make_qweights(type, total, n_in, rng);
          std::vector<uint8_t> packed(w.bytes.size() + 1, 0xA5);
          t->pack_rows[id](w.bytes.data(), packed.data(), total, n_in);
          CHECK_MSG(packed.back() == 0xA5, "%s %s: pack_rows wrote past the matrix", table_label(t), name_of(type));
          const size_t lda = act_row_bytes(format, n_in);
          for (int64_t n_tok : {1, 2, 3, 4, 5, 8, 9, 16, 17, 37}) {
            std::vector<uint8_t> act_mem(lda * static_cast<size_t>(n_tok) + 64);
            uint8_t* act = act_mem.data() + (64 - reinterpret_cast<uintptr_t>(act_mem.data()) % 64) % 64;
            std::vector<float> x(static_cast<size_t>(n_in));
            for (int64_t tok = 0; tok < n_tok; ++tok) {
              for (auto& v : x) v = rng.normal();
              kernels_generic().quantize_act[format](x.data(), act + tok * lda, n_in);
            }
            for (int64_t row_begin : {int64_t{0}, int64_t{8}}) {
              if (row_begin >= total) continue;
              const int64_t ldy = total + 1;
              const bool few = n_tok >= 2 && n_tok <= kFewRowsMax;
              const MatmulActFn rows_fn = few ? t->matmul_act_few[id] : t->matmul_act[id];
              const MatmulActFn packed_fn = few ? t->matmul_act_few_packed[id] : t->matmul_act_packed[id];
              std::vector<float> want(static_cast<size_t>(n_tok * ldy), 7.f), got(want.size(), 7.f);
              rows_fn(w.bytes.data(), n_in, act, static_cast<int64_t>(lda), n_tok, want.data(), ldy, row_begin, total);
              packed_fn(packed.data(), n_in, act, static_cast<int64_t>(lda), n_tok, got.data(), ldy, row_begin, total);
              int reported = 0;
              for (size_t i = 0; i < want.size(); ++i) {
                if (std::memcmp(&want[i], &got[i], sizeof(float)) != 0 && reported++ < 3)
                  CHECK_MSG(false, "%s %s n_in=%lld rows=%lld n_tok=%lld from %lld: token %lld row %lld %.9g packed, %.9g rows",
                            table_label(t), name_of(type), (long long)n_in, (long long)total, (long long)n_tok,
                            (long long)row_begin, (long long)(i / ldy), (long long)(i % ldy), got[i], want[i]);
              }
            }
          }
        }
      }
    }
  }
  // the AVX2 table packs Q4_0: where it runs, this test must have checked something
  if (kernels_by_name("avx2")) CHECK(packed_types > 0);
}


// A row's result must not depend on how many rows the matmul holds: self-speculative decoding verifies k drafted
// tokens in one (k + 1)-row step and must reproduce, bit for bit, the one-row decode steps of full-depth greedy
// generation; a batch must give each sequence what it gets alone. So, through MatmulRunner (the kernel by row
// count, two threads, packed where the table packs the type), the same activation row alone and as the first or last
// of n rows gives the same bits:
//  - for n up to kFewRowsMax (a verify step's rows), on every table and weight type;
//  - beyond (prefill kernels: on AVX2 also the 8-row panels of Q4_K, Q5_K and Q8_0), on the generic and AVX2 tables.
//    The AVX-512 tables are not held to it beyond kFewRowsMax: their float prefill tile has one accumulator per row
//    and token against decode's four, and VNNI prefill has its own panels.
// Weight rows whose size is not a multiple of one vector load (F32 with 100 columns) take no alignment step.
TEST(matmul_row_result_independent_of_row_count) {
  Rng rng(31);
  ThreadPool pool(2);
  const GgmlType types[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1,
                            GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K,
                            GgmlType::Q6_K, GgmlType::Q8_K};
  int checked = 0;
  for (const KernelTable* kt : all_tables()) {
    MatmulRunner mm(pool, *kt);
    const std::string table = kt->name;
    for (GgmlType type : types) {
      const bool k_quant = is_k(type), is_float = type == GgmlType::F32 || type == GgmlType::F16 || type == GgmlType::BF16;
      const bool prefill_invariant = table == "generic" || table == "avx2";
      std::vector<int64_t> widths = k_quant ? std::vector<int64_t>{768} : std::vector<int64_t>{2080};
      if (is_float) widths.push_back(100);
      for (int64_t n_in : widths) {
        for (int64_t rows : {int64_t{100}, int64_t{200}}) {  // with two threads: split by tokens, by rows
          std::vector<float> wf(static_cast<size_t>(rows * n_in));
          for (auto& v : wf) v = rng.normal() * 0.05f;
          const size_t rb = row_bytes(id_of(type), n_in);
          // 4 bytes past a 64-byte boundary, so that float rows take the alignment step where they may
          std::vector<uint8_t> mem(rb * rows + 68);
          uint8_t* bytes = mem.data() + (64 - reinterpret_cast<uintptr_t>(mem.data()) % 64) % 64 + (is_float ? 4 : 0);
          quantize_rows(id_of(type), wf.data(), bytes, rows, n_in);
          std::vector<uint8_t> packed;
          for (bool pack : {false, true}) {
            WeightView view;
            view.data = bytes;
            view.type = id_of(type);
            view.ne0 = n_in;
            view.ne1 = rows;
            view.row_bytes = rb;
            if (pack) {
              if (!kt->pack_rows[id_of(type)]) continue;
              packed.assign(rb * rows, 0);
              kt->pack_rows[id_of(type)](bytes, packed.data(), rows, n_in);
              view.data = packed.data();
              view.packed = true;
            }
            std::vector<float> x0(static_cast<size_t>(n_in)), alone(static_cast<size_t>(rows));
            for (auto& v : x0) v = rng.normal();
            mm(view, x0.data(), n_in, 1, alone.data(), rows);
            for (int64_t n : {2, 3, 4, 5, 8, 9, 15, 16, 17, 33, 97}) {
              if (n > kFewRowsMax && !prefill_invariant) continue;
              for (int64_t at : {int64_t{0}, n - 1}) {
                std::vector<float> x(static_cast<size_t>(n * n_in));
                for (auto& v : x) v = rng.normal();
                std::memcpy(&x[static_cast<size_t>(at * n_in)], x0.data(), static_cast<size_t>(n_in) * sizeof(float));
                std::vector<float> y(static_cast<size_t>(n * rows));
                mm(view, x.data(), n_in, n, y.data(), rows);
                ++checked;
                CHECK_MSG(std::memcmp(&y[static_cast<size_t>(at * rows)], alone.data(), alone.size() * sizeof(float)) == 0,
                          "%s %s%s n_in=%lld rows=%lld: row %lld of %lld rows differs from the same row alone",
                          kt->name, name_of(type), pack ? " packed" : "", (long long)n_in, (long long)rows,
                          (long long)at, (long long)n);
              }
            }
          }
        }
      }
    }
  }
  CHECK(checked > 0);
}
