// Kernel tests: the generic kernels against direct double-precision computations, and every SIMD
// variant this CPU runs (avx2, avx512) against the generic one, at awkward sizes.
//
// Tolerances. u = 2^-24 is the float unit roundoff. A float dot product of n terms computed as W
// interleaved lane sums plus a reduction tree has |error| <= (n/W + depth) * u * sum|w_i x_i| (standard
// worst-case bound; FMA products are exact). We use W = 8 (the narrowest variant) and depth 16, so
//   dot_tol(n, sum_abs) = (n / 8 + 16) * u * sum_abs
// which holds for any input, with no reliance on luck, while one missing or doubled term (about
// sum_abs / n) is orders of magnitude above it for the n we test. The generic kernels round each product
// to float and sum in double: |error| <= 2u * sum_abs. Other tolerances are derived next to their tests.
#include <math.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/ggml_types.h"
#include "core/kernels.h"
#include "blocks/block_common.h"
#include "test_harness.h"

using namespace adainfer;

namespace {

constexpr double kU = 1.0 / 16777216.0;  // 2^-24

double dot_tol(int64_t n, double sum_abs) { return (static_cast<double>(n) / 8.0 + 16.0) * kU * sum_abs; }

// splitmix64: small, fast, reproducible.
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
};

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// A NaN with a recognisable payload, written where kernels must not write.
const float kSentinel = float_of(0x7fc0deadu);
bool is_sentinel(float f) { return bits_of(f) == 0x7fc0deadu; }

struct Variant {
  const char* name;
  const KernelTable* table;
};

// The SIMD tables this CPU supports (none on non-x86 or old CPUs; those tests then check nothing).
std::vector<Variant> simd_variants() {
  std::vector<Variant> v;
  for (const char* name : {"avx2", "avx512"}) {
    if (const KernelTable* t = kernels_by_name(name)) v.push_back({name, t});
  }
  return v;
}

const char* type_name(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return "F32";
    case GgmlType::F16: return "F16";
    case GgmlType::BF16: return "BF16";
    default: return "?";
  }
}
int type_id(GgmlType t) { return static_cast<int>(t); }

// A weight matrix stored as `type`, plus the exact float value of every stored element.
//   bytes: [n_rows][n_in] elements of the type;  values: [n_rows][n_in]
struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};

Weights make_weights(GgmlType type, int64_t n_rows, int64_t n_in, Rng& rng) {
  Weights w;
  const size_t n = static_cast<size_t>(n_rows * n_in);
  w.values.resize(n);
  w.bytes.resize(row_bytes(type_id(type), n_in) * static_cast<size_t>(n_rows));
  for (size_t i = 0; i < n; ++i) {
    const float f = rng.uniform(-1.0f, 1.0f);
    if (type == GgmlType::F32) {
      w.values[i] = f;
      std::memcpy(w.bytes.data() + 4 * i, &f, 4);
    } else {
      const uint16_t h = type == GgmlType::F16 ? fp32_to_fp16(f) : fp32_to_bf16(f);
      w.values[i] = type == GgmlType::F16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
      std::memcpy(w.bytes.data() + 2 * i, &h, 2);
    }
  }
  return w;
}

// X: [n_tok][ldx] with the ldx - n_in padding columns set to NaN, so reading past a row poisons results.
// The buffer ends right after the last token's n_in values (an over-read past it is caught by ASan).
std::vector<float> make_activations(int64_t n_tok, int64_t n_in, int64_t ldx, Rng& rng) {
  std::vector<float> x(static_cast<size_t>((n_tok - 1) * ldx + n_in), NAN);
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t i = 0; i < n_in; ++i) x[t * ldx + i] = rng.uniform(-1.0f, 1.0f);
  return x;
}

// ---- type table ------------------------------------------------------------------------------------------

TEST(type_traits_match_ggml) {
  struct Expect {
    int32_t id;
    int32_t elems, bytes;
  };
  const Expect expected[] = {{0, 1, 4},     {1, 1, 2},      {30, 1, 2},     {2, 32, 18},    {3, 32, 20},
                             {6, 32, 22},   {7, 32, 24},    {8, 32, 34},    {9, 32, 36},    {10, 256, 84},
                             {11, 256, 110}, {12, 256, 144}, {13, 256, 176}, {14, 256, 210}, {15, 256, 292}};
  for (const Expect& e : expected) {
    TypeTraits t{};
    CHECK_MSG(type_traits(e.id, &t), "type %d", e.id);
    CHECK_MSG(t.block_elems == e.elems && t.block_bytes == e.bytes, "type %d: %d/%d", e.id, t.block_elems,
              t.block_bytes);
  }
  for (int32_t unknown : {-1, 4, 5, 16, 29, 31, 39, 40, 1000}) {
    TypeTraits t{};
    CHECK_MSG(!type_traits(unknown, &t), "type %d should be unknown", unknown);
    CHECK(row_bytes(unknown, 256) == 0);
  }
}

TEST(row_bytes_sizes_and_overflow) {
  CHECK(row_bytes(0, 10) == 40);
  CHECK(row_bytes(1, 7) == 14);
  CHECK(row_bytes(30, 3) == 6);
  CHECK(row_bytes(2, 64) == 36);
  CHECK(row_bytes(2, 33) == 0);  // not a whole number of blocks
  CHECK(row_bytes(12, 4096) == 16 * 144);
  CHECK(row_bytes(15, 255) == 0);
  CHECK(row_bytes(0, 0) == 0);
  CHECK(row_bytes(0, -4) == 0);
  CHECK(row_bytes(2, -32) == 0);
  const int64_t big = std::numeric_limits<int64_t>::max();
  CHECK(row_bytes(0, big) == 0);                  // 4 * (2^63 - 1) overflows
  CHECK(row_bytes(0, int64_t{1} << 61) == 0);     // 2^63 bytes > INT64_MAX
  CHECK(row_bytes(0, int64_t{1} << 60) == (size_t{1} << 62));
  CHECK(row_bytes(15, big - big % 256) == 0);     // blocks * 292 overflows
  CHECK(row_bytes(1, big - 1) == 0);              // 2 * (2^63 - 2) overflows
}

// ---- 16-bit float conversions ------------------------------------------------------------------------------

TEST(fp16_known_values) {
  CHECK(fp16_to_fp32(0x3c00) == 1.0f);
  CHECK(fp16_to_fp32(0xc000) == -2.0f);
  CHECK(fp16_to_fp32(0x7bff) == 65504.0f);
  CHECK(fp16_to_fp32(0x0400) == ldexpf(1.0f, -14));     // smallest normal
  CHECK(fp16_to_fp32(0x0001) == ldexpf(1.0f, -24));     // smallest subnormal
  CHECK(fp16_to_fp32(0x03ff) == ldexpf(1023.0f, -24));  // largest subnormal
  CHECK(fp16_to_fp32(0x8001) == -ldexpf(1.0f, -24));
  CHECK(fp16_to_fp32(0x3555) == 0.333251953125f);
  CHECK(bits_of(fp16_to_fp32(0x0000)) == 0x00000000u);
  CHECK(bits_of(fp16_to_fp32(0x8000)) == 0x80000000u);  // -0 keeps its sign
  CHECK(fp16_to_fp32(0x7c00) == INFINITY);
  CHECK(fp16_to_fp32(0xfc00) == -INFINITY);
  CHECK(isnan(fp16_to_fp32(0x7e00)));
  CHECK(isnan(fp16_to_fp32(0x7c01)));  // signalling NaN is still NaN
  CHECK(signbit(fp16_to_fp32(0xfe00)));

  CHECK(fp32_to_fp16(1.0f) == 0x3c00);
  CHECK(fp32_to_fp16(-2.0f) == 0xc000);
  CHECK(fp32_to_fp16(65504.0f) == 0x7bff);
  CHECK(fp32_to_fp16(65519.0f) == 0x7bff);  // below the halfway point to 65536
  CHECK(fp32_to_fp16(65520.0f) == 0x7c00);  // tie, rounds to even = overflow to inf
  CHECK(fp32_to_fp16(1e10f) == 0x7c00);
  CHECK(fp32_to_fp16(-1e10f) == 0xfc00);
  CHECK(fp32_to_fp16(INFINITY) == 0x7c00);
  CHECK(fp32_to_fp16(-INFINITY) == 0xfc00);
  CHECK(fp32_to_fp16(0.0f) == 0x0000);
  CHECK(fp32_to_fp16(-0.0f) == 0x8000);
  CHECK(fp32_to_fp16(1.0f + ldexpf(1.0f, -11)) == 0x3c00);         // tie -> even (1.0)
  CHECK(fp32_to_fp16(1.0f + 3 * ldexpf(1.0f, -11)) == 0x3c02);     // tie -> even (up)
  CHECK(fp32_to_fp16(ldexpf(1.0f, -24)) == 0x0001);
  CHECK(fp32_to_fp16(ldexpf(1.0f, -25)) == 0x0000);                // tie between 0 and 2^-24 -> 0
  CHECK(fp32_to_fp16(ldexpf(1.0f, -25) * 1.0000001f) == 0x0001);   // just above the tie
  CHECK(fp32_to_fp16(ldexpf(1.5f, -24)) == 0x0002);                // tie between 1 and 2 ulps -> 2
  CHECK(fp32_to_fp16(ldexpf(2.5f, -24)) == 0x0002);                // tie between 2 and 3 ulps -> 2
  CHECK(fp32_to_fp16(ldexpf(1023.5f, -24)) == 0x0400);             // rounds up into the normals
  CHECK(fp32_to_fp16(ldexpf(1.0f, -30)) == 0x0000);
  CHECK(fp32_to_fp16(-ldexpf(1.0f, -30)) == 0x8000);
  CHECK(fp32_to_fp16(1e-45f) == 0x0000);  // f32 subnormal
  const uint16_t nan_h = fp32_to_fp16(NAN);
  CHECK((nan_h & 0x7c00) == 0x7c00 && (nan_h & 0x03ff) != 0);
  const uint16_t neg_nan = fp32_to_fp16(-NAN);
  CHECK((neg_nan & 0x8000) != 0 && isnan(fp16_to_fp32(neg_nan)));
  CHECK(isnan(fp16_to_fp32(fp32_to_fp16(float_of(0x7f800001u)))));  // payload only in low bits
}

TEST(fp16_round_trip_all_values) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = fp16_to_fp32(static_cast<uint16_t>(h));
    if (isnan(f)) {
      CHECK_MSG(isnan(fp16_to_fp32(fp32_to_fp16(f))), "h=%04x", h);
      continue;
    }
    CHECK_MSG(fp32_to_fp16(f) == h, "h=%04x -> %g -> %04x", h, f, fp32_to_fp16(f));
  }
}

// Nearest half to f, ties to even, computed in double from the definition: halves are multiples of the
// quantum 2^(e-10) for |f| in [2^e, 2^(e+1)), e >= -14, and of 2^-24 below.
double nearest_half(float f) {
  const double a = fabs(static_cast<double>(f));
  if (a >= 65520.0) return copysign(INFINITY, f);
  int e = 0;
  frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  const int quantum_exp = (e - 1 >= -14 ? e - 1 : -14) - 10;
  const double q = ldexp(a, -quantum_exp);
  double r = floor(q);
  const double frac = q - r;
  if (frac > 0.5 || (frac == 0.5 && fmod(r, 2.0) != 0.0)) r += 1.0;
  return copysign(ldexp(r, quantum_exp), f);
}

TEST(fp16_rounding_matches_definition) {
  Rng rng(1);
  for (int i = 0; i < 400000; ++i) {
    // random sign, exponent across the whole half range and beyond, random mantissa
    const uint32_t exponent = 127 - 30 + static_cast<uint32_t>(rng.next() % 50);
    const uint32_t bits = (static_cast<uint32_t>(rng.next() & 1) << 31) | (exponent << 23) |
                          static_cast<uint32_t>(rng.next() & 0x7fffff);
    const float f = float_of(bits);
    const double expect = nearest_half(f);
    const float got = fp16_to_fp32(fp32_to_fp16(f));
    CHECK_MSG(static_cast<double>(got) == expect || (expect == 0.0 && got == 0.0f), "f=%a got %a want %a", f, got,
              expect);
    if (expect == 0.0) CHECK(signbit(got) == signbit(f));
  }
}

TEST(bf16_conversions) {
  CHECK(bf16_to_fp32(0x3f80) == 1.0f);
  CHECK(bf16_to_fp32(0xc040) == -3.0f);
  CHECK(bits_of(bf16_to_fp32(0x8000)) == 0x80000000u);
  CHECK(bf16_to_fp32(0x7f80) == INFINITY);
  CHECK(bf16_to_fp32(0x0001) == float_of(0x00010000u));  // f32 subnormal, exact
  CHECK(fp32_to_bf16(1.0f) == 0x3f80);
  CHECK(fp32_to_bf16(1.0f + ldexpf(1.0f, -8)) == 0x3f80);      // tie -> even
  CHECK(fp32_to_bf16(1.0f + 3 * ldexpf(1.0f, -8)) == 0x3f82);  // tie -> even (up)
  CHECK(fp32_to_bf16(1.0f + ldexpf(1.0f, -8) + ldexpf(1.0f, -20)) == 0x3f81);
  CHECK(fp32_to_bf16(-0.0f) == 0x8000);
  CHECK(fp32_to_bf16(INFINITY) == 0x7f80);
  CHECK(fp32_to_bf16(std::numeric_limits<float>::max()) == 0x7f80);  // rounds up to inf
  CHECK(isnan(bf16_to_fp32(fp32_to_bf16(NAN))));
  CHECK(isnan(bf16_to_fp32(fp32_to_bf16(float_of(0x7f800001u)))));  // truncation alone would give inf
  CHECK(isnan(bf16_to_fp32(fp32_to_bf16(float_of(0xff800001u)))));
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = bf16_to_fp32(static_cast<uint16_t>(h));
    if (!isnan(f)) CHECK_MSG(fp32_to_bf16(f) == h, "h=%04x", h);
  }
  // Against the definition: the nearest of the two bf16 neighbours, ties to even.
  Rng rng(2);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t bits = static_cast<uint32_t>(rng.next()) & 0x7f7fffffu;  // finite, exponent < 255
    const float f = float_of(bits);
    const float lo = float_of(bits & 0xffff0000u);
    // The next bf16 up, in double: lo + one bf16 ulp (2^(e-134); subnormals share e = 1). Above the
    // largest bf16 this is 2^128, which rounds to inf in IEEE arithmetic.
    const int biased_exp = static_cast<int>((bits >> 23) & 0xffu);
    const double hi = static_cast<double>(lo) + ldexp(1.0, (biased_exp == 0 ? 1 : biased_exp) - 134);
    const double d_lo = static_cast<double>(f) - lo, d_hi = hi - f;
    const bool lo_even = ((bits >> 16) & 1u) == 0;
    const float hi_f = hi >= ldexp(1.0, 128) ? INFINITY : static_cast<float>(hi);
    const float expect = (d_lo < d_hi || (d_lo == d_hi && lo_even)) ? lo : hi_f;
    CHECK_MSG(bf16_to_fp32(fp32_to_bf16(f)) == expect, "f=%a", f);
  }
}

// ---- matmul ------------------------------------------------------------------------------------------------

// Y[t][r] from the exact stored values in double: (product exact in double, sum rounded once)
double reference_dot(const float* w, const float* x, int64_t n, double* sum_abs) {
  double s = 0.0, a = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    s += static_cast<double>(w[i]) * x[i];
    a += fabs(static_cast<double>(w[i]) * x[i]);
  }
  *sum_abs = a;
  return s;
}

// The activations as `table` multiplies them with `type`: tables whose act_format for BF16 is kActBF16 (the
// AVX512-BF16 kernels, vdpbf16ps) round them to bf16 first, as ggml does; the others use them as they are.
std::vector<float> effective_activations(const KernelTable& table, GgmlType type, const std::vector<float>& x) {
  if (table.act_format[type_id(type)] != kActBF16) return x;
  std::vector<float> r(x);
  for (float& v : r)
    if (!isnan(v)) v = bf16_to_fp32(fp32_to_bf16(v));
  return r;
}

// Runs `table`'s matmul for one shape and checks it against the double reference (within tol_fn) and that
// nothing outside rows [row_begin, row_end) x tokens [0, n_tok) was written.
template <class TolFn>
void check_matmul(const KernelTable& table, GgmlType type, int64_t n_in, int64_t rows, int64_t n_tok,
                  int64_t row_begin, Rng& rng, TolFn tol_fn) {
  const int64_t total_rows = row_begin + rows + 1;
  const int64_t row_end = row_begin + rows;
  const int64_t ldx = n_in + 5;
  const int64_t ldy = total_rows + 3;
  const Weights w = make_weights(type, total_rows, n_in, rng);
  const std::vector<float> x_in = make_activations(n_tok, n_in, ldx, rng);
  const std::vector<float> x = effective_activations(table, type, x_in);
  std::vector<float> y(static_cast<size_t>(n_tok * ldy), kSentinel);

  table.matmul[type_id(type)](w.bytes.data(), n_in, x_in.data(), ldx, n_tok, y.data(), ldy, row_begin, row_end);

  int reported = 0;
  for (int64_t t = 0; t < n_tok; ++t) {
    for (int64_t r = 0; r < ldy; ++r) {
      const float got = y[t * ldy + r];
      if (r < row_begin || r >= row_end) {
        CHECK_MSG(is_sentinel(got), "%s %s: wrote outside the row range (t=%lld r=%lld)", table.name, type_name(type),
                  (long long)t, (long long)r);
        continue;
      }
      double sum_abs = 0;
      const double ref = reference_dot(&w.values[r * n_in], &x[t * ldx], n_in, &sum_abs);
      const double tol = tol_fn(n_in, sum_abs);
      if (!(fabs(got - ref) <= tol) && reported++ < 3) {
        CHECK_MSG(false, "%s %s n_in=%lld rows=%lld n_tok=%lld t=%lld r=%lld: got %.9g want %.9g tol %.3g", table.name,
                  type_name(type), (long long)n_in, (long long)rows, (long long)n_tok, (long long)t, (long long)r,
                  got, ref, tol);
      }
    }
  }
}

const GgmlType kFloatTypes[] = {GgmlType::F32, GgmlType::F16, GgmlType::BF16};
const int64_t kMatmulNIn[] = {1, 7, 31, 33, 64, 100, 257, 1000};

TEST(matmul_generic_matches_double_reference) {
  Rng rng(10);
  const KernelTable& g = kernels_generic();
  for (GgmlType type : kFloatTypes) {
    CHECK(g.matmul[type_id(type)] != nullptr);
    for (int64_t n_in : kMatmulNIn)
      for (int64_t rows : {1, 3, 17})
        for (int64_t n_tok : {1, 2, 5})
          check_matmul(g, type, n_in, rows, n_tok, n_tok % 2, rng,
                       [](int64_t, double sum_abs) { return 2 * kU * sum_abs; });
  }
}

// Every shape of the task list. Row counts 1, 3, 8, 17, 64 leave 1..5 rows after the prefill tiles of
// 3 (avx2) and 6 (avx512) rows; token counts leave 1..3 after the 4-token tiles; n_in covers partial,
// single, unaligned and multi-vector tails; the row range starts at 0, 1 or 2.
TEST(matmul_simd_matches_reference) {
  Rng rng(11);
  for (const Variant& v : simd_variants()) {
    for (GgmlType type : kFloatTypes) {
      CHECK(v.table->matmul[type_id(type)] != nullptr);
      for (int64_t n_in : kMatmulNIn)
        for (int64_t rows : {1, 3, 8, 17, 64})
          for (int64_t n_tok : {1, 2, 3, 5, 8, 13})
            check_matmul(*v.table, type, n_in, rows, n_tok, (rows + n_tok) % 3, rng,
                         [](int64_t n, double sum_abs) { return dot_tol(n, sum_abs); });
    }
  }
}

// Direct comparison of the variant against the generic kernel on the same inputs (the tolerance is the
// sum of both kernels' bounds).
TEST(matmul_simd_matches_generic) {
  Rng rng(12);
  for (const Variant& v : simd_variants()) {
    for (GgmlType type : kFloatTypes) {
      for (int64_t n_in : {33, 257, 1000}) {
        const int64_t rows = 21, n_tok = 6, ldx = n_in + 1, ldy = rows + 2;
        const Weights w = make_weights(type, rows, n_in, rng);
        const std::vector<float> x_in = make_activations(n_tok, n_in, ldx, rng);
        // the generic kernel gets the activations as the variant sees them (bf16-rounded for vdpbf16ps)
        const std::vector<float> x = effective_activations(*v.table, type, x_in);
        std::vector<float> y_simd(n_tok * ldy, kSentinel), y_gen(n_tok * ldy, kSentinel);
        v.table->matmul[type_id(type)](w.bytes.data(), n_in, x_in.data(), ldx, n_tok, y_simd.data(), ldy, 2, rows);
        kernels_generic().matmul[type_id(type)](w.bytes.data(), n_in, x.data(), ldx, n_tok, y_gen.data(), ldy, 2,
                                                rows);
        for (int64_t t = 0; t < n_tok; ++t)
          for (int64_t r = 2; r < rows; ++r) {
            double sum_abs = 0;
            reference_dot(&w.values[r * n_in], &x[t * ldx], n_in, &sum_abs);
            CHECK_NEAR(y_simd[t * ldy + r], y_gen[t * ldy + r], dot_tol(n_in, sum_abs) + 2 * kU * sum_abs);
          }
      }
    }
  }
}

// ---- dequant_row -------------------------------------------------------------------------------------------

TEST(dequant_row_generic_exact) {
  Rng rng(20);
  for (GgmlType type : kFloatTypes) {
    const int64_t n = 77;
    const Weights w = make_weights(type, 1, n, rng);
    std::vector<float> out(n + 1, kSentinel);
    kernels_generic().dequant_row[type_id(type)](w.bytes.data(), out.data(), n);
    for (int64_t i = 0; i < n; ++i) CHECK(bits_of(out[i]) == bits_of(w.values[i]));
    CHECK(is_sentinel(out[n]));
  }
}

// Bit-exact equality (conversions are exact), on random bit patterns: subnormals, -0 and inf included.
// NaNs only need to stay NaN (F16C quiets signalling NaNs, the software path keeps their payload).
TEST(dequant_row_simd_matches_generic_bitwise) {
  Rng rng(21);
  std::vector<int64_t> sizes;
  for (int64_t n = 1; n <= 40; ++n) sizes.push_back(n);
  for (int64_t n : {63, 64, 65, 100, 257, 1000}) sizes.push_back(n);
  for (const Variant& v : simd_variants()) {
    for (GgmlType type : kFloatTypes) {
      for (int64_t n : sizes) {
        const size_t bytes = row_bytes(type_id(type), n);
        std::vector<uint8_t> row(bytes);
        for (auto& b : row) b = static_cast<uint8_t>(rng.next());
        std::vector<float> a(n + 1, kSentinel), b(n + 1, kSentinel);
        v.table->dequant_row[type_id(type)](row.data(), a.data(), n);
        kernels_generic().dequant_row[type_id(type)](row.data(), b.data(), n);
        for (int64_t i = 0; i < n; ++i) {
          if (isnan(b[i])) {
            CHECK_MSG(isnan(a[i]), "%s %s i=%lld", v.name, type_name(type), (long long)i);
          } else {
            CHECK_MSG(bits_of(a[i]) == bits_of(b[i]), "%s %s n=%lld i=%lld: %a vs %a", v.name, type_name(type),
                      (long long)n, (long long)i, a[i], b[i]);
          }
        }
        CHECK_MSG(is_sentinel(a[n]), "%s %s n=%lld wrote past the end", v.name, type_name(type), (long long)n);
      }
    }
  }
}

// ---- vector ops --------------------------------------------------------------------------------------------

std::vector<int64_t> vector_sizes() {
  std::vector<int64_t> sizes;
  for (int64_t n = 1; n <= 70; ++n) sizes.push_back(n);
  for (int64_t n : {100, 257, 1000, 4096, 4097}) sizes.push_back(n);
  return sizes;
}

std::vector<float> random_vector(int64_t n, Rng& rng, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = rng.uniform(lo, hi);
  return v;
}

TEST(dot_f32_against_reference) {
  Rng rng(30);
  std::vector<const KernelTable*> tables = {&kernels_generic()};
  for (const Variant& v : simd_variants()) tables.push_back(v.table);
  for (const KernelTable* t : tables) {
    CHECK(t->dot_f32(nullptr, nullptr, 0) == 0.0f);
    for (int64_t n : vector_sizes()) {
      const std::vector<float> a = random_vector(n, rng), b = random_vector(n, rng);
      double sum_abs = 0;
      const double ref = reference_dot(a.data(), b.data(), n, &sum_abs);
      const double tol = t == &kernels_generic() ? 2 * kU * sum_abs : dot_tol(n, sum_abs);
      CHECK_MSG(fabs(t->dot_f32(a.data(), b.data(), n) - ref) <= tol, "%s n=%lld", t->name, (long long)n);
    }
  }
}

// rms_norm: the SIMD sum of squares has relative error <= (n/8 + 16)u (all terms positive); the scale
// 1/sqrt(mean + eps) halves that and adds ~3u; the two output multiplies add 2u. So
//   |out - ref| <= |ref| * ((n/8 + 16)u + 8u).   For generic (double sum): |ref| * 8u.
TEST(rms_norm_against_reference) {
  Rng rng(31);
  const float eps = 1e-5f;
  std::vector<const KernelTable*> tables = {&kernels_generic()};
  for (const Variant& v : simd_variants()) tables.push_back(v.table);
  for (const KernelTable* t : tables) {
    for (int64_t n : vector_sizes()) {
      const std::vector<float> x = random_vector(n, rng, -3.0f, 3.0f), w = random_vector(n, rng, 0.5f, 1.5f);
      double sum_sq = 0;
      for (float f : x) sum_sq += static_cast<double>(f) * f;
      const double scale = 1.0 / sqrt(sum_sq / static_cast<double>(n) + eps);
      std::vector<float> out(n + 1, kSentinel);
      t->rms_norm(x.data(), w.data(), out.data(), n, eps);
      const double rel = t == &kernels_generic() ? 8 * kU : (static_cast<double>(n) / 8 + 24) * kU;
      for (int64_t i = 0; i < n; ++i) {
        const double ref = static_cast<double>(x[i]) * scale * w[i];
        CHECK_MSG(fabs(out[i] - ref) <= rel * fabs(ref) + 1e-30, "%s n=%lld i=%lld: %.9g vs %.9g", t->name,
                  (long long)n, (long long)i, out[i], ref);
      }
      CHECK(is_sentinel(out[n]));
      // in place (out == x) gives the same result
      std::vector<float> inplace = x;
      t->rms_norm(inplace.data(), w.data(), inplace.data(), n, eps);
      for (int64_t i = 0; i < n; ++i) CHECK(bits_of(inplace[i]) == bits_of(out[i]));
    }
  }
}

// swiglu: silu(g) * up = g * up / (1 + e^-g). With e^-g accurate to a few ulps (expf ~1 ulp, the vector exp
// ~2 ulps), the relative error of e^-g passes to the result scaled by e^-g / (1 + e^-g) <= 1, and the add,
// divide and multiply add 3u: |out - ref| <= 8u |ref|. Below g = -87.3 the vector exp of -g saturates to
// inf and the result is -0 where the true value is ~1e-36: an absolute 1e-34 covers it.
double silu_up_ref(float g, float up) {
  return static_cast<double>(g) / (1.0 + exp(-static_cast<double>(g))) * up;
}

TEST(swiglu_against_reference) {
  Rng rng(32);
  std::vector<const KernelTable*> tables = {&kernels_generic()};
  for (const Variant& v : simd_variants()) tables.push_back(v.table);
  for (const KernelTable* t : tables) {
    for (int64_t n : vector_sizes()) {
      std::vector<float> gate = random_vector(n, rng, -12.0f, 12.0f);
      const std::vector<float> up = random_vector(n, rng, -2.0f, 2.0f), gate_in = gate;
      gate.push_back(kSentinel);
      t->swiglu(gate.data(), up.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double ref = silu_up_ref(gate_in[i], up[i]);
        CHECK_MSG(fabs(gate[i] - ref) <= 8 * kU * fabs(ref) + 1e-34, "%s n=%lld g=%.9g: %.9g vs %.9g", t->name,
                  (long long)n, gate_in[i], gate[i], ref);
      }
      CHECK(is_sentinel(gate[n]));
    }
  }
}

// A dense sweep of silu over [-100, 100] (up = 1): this is where the vector exp's range reduction,
// polynomial and over/underflow limits show, since silu has no other approximation in it.
TEST(swiglu_exp_sweep) {
  const int64_t n = 200001;
  std::vector<float> g_in(n), ones(n, 1.0f);
  for (int64_t i = 0; i < n; ++i) g_in[i] = -100.0f + 200.0f * static_cast<float>(i) / static_cast<float>(n - 1);
  g_in[12345] = INFINITY;
  g_in[12346] = -INFINITY;
  g_in[12347] = NAN;
  std::vector<const KernelTable*> tables = {&kernels_generic()};
  for (const Variant& v : simd_variants()) tables.push_back(v.table);
  for (const KernelTable* t : tables) {
    std::vector<float> g = g_in;
    t->swiglu(g.data(), ones.data(), n);
    double worst = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (i == 12345) {
        CHECK_MSG(g[i] == INFINITY, "%s silu(inf) = %g", t->name, g[i]);
        continue;
      }
      if (i == 12346) {  // -inf / (1 + inf) is NaN in IEEE arithmetic for every variant; just no crash
        continue;
      }
      if (i == 12347) {
        CHECK_MSG(isnan(g[i]), "%s silu(nan) = %g", t->name, g[i]);
        continue;
      }
      const double ref = silu_up_ref(g_in[i], 1.0f);
      const double err = fabs(g[i] - ref);
      if (fabs(ref) > 1e-30 && err / fabs(ref) > worst) worst = err / fabs(ref);
      CHECK_MSG(err <= 8 * kU * fabs(ref) + 1e-34, "%s g=%.9g: %.9g vs %.9g", t->name, g_in[i], g[i], ref);
    }
    std::printf("    %s: worst relative error of silu %.2f ulp\n", t->name, worst / kU);
  }
}

TEST(add_exact) {
  Rng rng(33);
  std::vector<const KernelTable*> tables = {&kernels_generic()};
  for (const Variant& v : simd_variants()) tables.push_back(v.table);
  for (const KernelTable* t : tables) {
    for (int64_t n : vector_sizes()) {
      std::vector<float> y = random_vector(n, rng);
      const std::vector<float> x = random_vector(n, rng), y_in = y;
      y.push_back(kSentinel);
      t->add(y.data(), x.data(), n);
      for (int64_t i = 0; i < n; ++i) CHECK(y[i] == y_in[i] + x[i]);
      CHECK(is_sentinel(y[n]));
    }
  }
}

// ---- attention ---------------------------------------------------------------------------------------------

struct AttentionCase {
  int64_t n_head, n_kv_head, head_dim, n_tok, pos0;
  float q_scale;  // larger queries make the softmax peakier
};

struct AttentionData {
  std::vector<float> q, k, v;
  AttentionArgs args;
};

AttentionData make_attention(const AttentionCase& c, Rng& rng) {
  AttentionData d;
  const int64_t n_ctx = c.pos0 + c.n_tok;  // exactly the valid rows, so over-reads are caught by ASan
  d.q = random_vector(c.n_tok * c.n_head * c.head_dim, rng, -c.q_scale, c.q_scale);
  d.k = random_vector(n_ctx * c.n_kv_head * c.head_dim, rng);
  d.v = random_vector(n_ctx * c.n_kv_head * c.head_dim, rng);
  d.args = AttentionArgs{d.q.data(), d.k.data(), d.v.data(), nullptr, c.n_tok, c.pos0, c.n_head, c.n_kv_head,
                         c.head_dim, static_cast<float>(1.0 / sqrt(static_cast<double>(c.head_dim)))};
  return d;
}

// out[t][h][d] in double, straight from the definition, plus the error bound for that (t, h):
// a score s_j = scale * q.k_j has |error| <= delta = (head_dim/8 + 16) u * scale * sum|q_i k_ji|; it moves
// each softmax weight by a relative 2*delta, so the output moves by <= max|v| * 4 * delta; the exp,
// normalisation and the n_pos-term weighted sum add <= max|v| * 4u * (n_pos + 16).
void attention_reference(const AttentionCase& c, const AttentionData& d, int64_t t, int64_t h, double* out,
                         double* tol) {
  const int64_t q_stride = c.n_head * c.head_dim, kv_stride = c.n_kv_head * c.head_dim;
  const int64_t kv_h = h / (c.n_head / c.n_kv_head);
  const int64_t n_pos = c.pos0 + t + 1;
  const double scale = d.args.scale;
  const float* q = &d.q[t * q_stride + h * c.head_dim];
  std::vector<double> p(n_pos);
  double max_s = -INFINITY, max_abs = 0, max_v = 0;
  for (int64_t j = 0; j < n_pos; ++j) {
    const float* k = &d.k[j * kv_stride + kv_h * c.head_dim];
    double s = 0, a = 0;
    for (int64_t i = 0; i < c.head_dim; ++i) {
      s += static_cast<double>(q[i]) * k[i];
      a += fabs(static_cast<double>(q[i]) * k[i]);
    }
    p[j] = s * scale;
    max_s = p[j] > max_s ? p[j] : max_s;
    max_abs = a * scale > max_abs ? a * scale : max_abs;
  }
  double sum = 0;
  for (double& x : p) sum += (x = exp(x - max_s));
  for (int64_t i = 0; i < c.head_dim; ++i) out[i] = 0;
  for (int64_t j = 0; j < n_pos; ++j) {
    const float* v = &d.v[j * kv_stride + kv_h * c.head_dim];
    for (int64_t i = 0; i < c.head_dim; ++i) {
      out[i] += p[j] / sum * v[i];
      max_v = fabs(v[i]) > max_v ? fabs(v[i]) : max_v;
    }
  }
  const double delta = (static_cast<double>(c.head_dim) / 8 + 16) * kU * max_abs;
  *tol = max_v * (4 * delta + 4 * kU * static_cast<double>(n_pos + 16));
}

void check_attention(const KernelTable& table, const AttentionCase& c, int64_t head_begin, int64_t head_end,
                     Rng& rng) {
  AttentionData d = make_attention(c, rng);
  const int64_t q_stride = c.n_head * c.head_dim;
  std::vector<float> out(c.n_tok * q_stride, kSentinel);
  std::vector<float> scratch(c.pos0 + c.n_tok);
  d.args.out = out.data();
  table.attention(d.args, head_begin, head_end, scratch.data());

  std::vector<double> ref(c.head_dim);
  int reported = 0;
  for (int64_t t = 0; t < c.n_tok; ++t) {
    for (int64_t h = 0; h < c.n_head; ++h) {
      const float* got = &out[t * q_stride + h * c.head_dim];
      if (h < head_begin || h >= head_end) {
        for (int64_t i = 0; i < c.head_dim; ++i)
          CHECK_MSG(is_sentinel(got[i]), "%s wrote head %lld outside [%lld, %lld)", table.name, (long long)h,
                    (long long)head_begin, (long long)head_end);
        continue;
      }
      double tol = 0;
      attention_reference(c, d, t, h, ref.data(), &tol);
      for (int64_t i = 0; i < c.head_dim; ++i) {
        if (!(fabs(got[i] - ref[i]) <= tol) && reported++ < 3) {
          CHECK_MSG(false,
                    "%s heads %lld/%lld dim %lld n_tok %lld pos0 %lld: t=%lld h=%lld i=%lld got %.9g want %.9g tol %.3g",
                    table.name, (long long)c.n_head, (long long)c.n_kv_head, (long long)c.head_dim, (long long)c.n_tok,
                    (long long)c.pos0, (long long)t, (long long)h, (long long)i, got[i], ref[i], tol);
        }
      }
    }
  }
}

// Head layouts: GQA 4:1, MHA, MQA with 6 heads, GQA 2:1, GQA 8:1 (groups larger than the SIMD kernels'
// 4-head batches). pos0 = 300 spans several of their 128-position online-softmax blocks.
void attention_sweep(const KernelTable& table, Rng& rng) {
  const int64_t head_layouts[][2] = {{8, 2}, {4, 4}, {6, 1}, {8, 4}, {16, 2}};
  for (const auto& layout : head_layouts)
    for (int64_t head_dim : {8, 16, 20, 32, 64, 72, 128})
      for (int64_t n_tok : {1, 3, 7})
        for (int64_t pos0 : {0, 5, 17, 300}) {
          const AttentionCase c{layout[0], layout[1], head_dim, n_tok, pos0, (pos0 % 2) ? 4.0f : 1.0f};
          check_attention(table, c, 0, c.n_head, rng);
          check_attention(table, c, 1, c.n_head - 1, rng);  // a head range, as one thread would get
        }
}

TEST(attention_generic_matches_double_reference) {
  Rng rng(40);
  attention_sweep(kernels_generic(), rng);
}

TEST(attention_simd_matches_double_reference) {
  Rng rng(41);
  for (const Variant& v : simd_variants()) attention_sweep(*v.table, rng);
}

// Same inputs through the variant and the generic kernel; each is within `tol` of the truth.
TEST(attention_simd_matches_generic) {
  Rng rng(42);
  for (const Variant& v : simd_variants()) {
    const AttentionCase c{8, 2, 64, 5, 300, 2.0f};
    AttentionData d = make_attention(c, rng);
    const int64_t q_stride = c.n_head * c.head_dim;
    std::vector<float> a(c.n_tok * q_stride), b(c.n_tok * q_stride), scratch(c.pos0 + c.n_tok);
    d.args.out = a.data();
    v.table->attention(d.args, 0, c.n_head, scratch.data());
    d.args.out = b.data();
    kernels_generic().attention(d.args, 0, c.n_head, scratch.data());
    std::vector<double> ref(c.head_dim);
    for (int64_t t = 0; t < c.n_tok; ++t)
      for (int64_t h = 0; h < c.n_head; ++h) {
        double tol = 0;
        attention_reference(c, d, t, h, ref.data(), &tol);
        for (int64_t i = 0; i < c.head_dim; ++i)
          CHECK_NEAR(a[t * q_stride + h * c.head_dim + i], b[t * q_stride + h * c.head_dim + i], 2 * tol);
      }
  }
}

// Scores that grow with position: every later softmax block has a larger max, so the blocked (online)
// softmax of the SIMD kernels rescales its partial output at each block; and the reverse order, where the
// first block holds the max and later blocks never rescale.
TEST(attention_online_softmax_rescaling) {
  Rng rng(43);
  std::vector<const KernelTable*> tables = {&kernels_generic()};
  for (const Variant& v : simd_variants()) tables.push_back(v.table);
  for (bool increasing : {true, false}) {
    const AttentionCase c{4, 1, 32, 2, 600, 1.0f};
    AttentionData d = make_attention(c, rng);
    const int64_t n_ctx = c.pos0 + c.n_tok;
    for (float& x : d.q) x = 0.5f;
    for (int64_t j = 0; j < n_ctx; ++j) {
      const float ramp = 8.0f * static_cast<float>(increasing ? j : n_ctx - 1 - j) / static_cast<float>(n_ctx);
      for (int64_t i = 0; i < c.head_dim; ++i) d.k[j * c.head_dim + i] = ramp + rng.uniform(-0.2f, 0.2f);
    }
    for (const KernelTable* t : tables) {
      std::vector<float> out(c.n_tok * c.n_head * c.head_dim), scratch(n_ctx);
      d.args.out = out.data();
      t->attention(d.args, 0, c.n_head, scratch.data());
      std::vector<double> ref(c.head_dim);
      for (int64_t tok = 0; tok < c.n_tok; ++tok)
        for (int64_t h = 0; h < c.n_head; ++h) {
          double tol = 0;
          attention_reference(c, d, tok, h, ref.data(), &tol);
          for (int64_t i = 0; i < c.head_dim; ++i)
            CHECK_MSG(fabs(out[(tok * c.n_head + h) * c.head_dim + i] - ref[i]) <= tol,
                      "%s increasing=%d t=%lld h=%lld", t->name, increasing, (long long)tok, (long long)h);
        }
    }
  }
}

// The statistics a kernel keeps of one token when asked (AttentionArgs::stats: the exit features), against the
// definition in double: entropy -sum p log p and the weight on the token's own position. A score error of delta
// moves each weight by a relative 2 delta, the entropy by <= 2 delta (H + 1) and the self-weight by 2 delta p; the
// exponentials, sums and the online softmax's rescaling add <= 8u (n_pos + 16) relative. And asking for them leaves
// the attention output bit-identical.
TEST(attention_statistics_match_double_reference) {
  Rng rng(44);
  std::vector<const KernelTable*> tables = {&kernels_generic()};
  for (const Variant& v : simd_variants()) tables.push_back(v.table);
  const AttentionCase cases[] = {{8, 2, 64, 3, 0, 1.0f}, {4, 4, 32, 5, 17, 4.0f}, {6, 1, 20, 2, 300, 4.0f}, {8, 4, 72, 1, 600, 1.0f}};
  for (const AttentionCase& c : cases) {
    AttentionData d = make_attention(c, rng);
    const int64_t q_stride = c.n_head * c.head_dim, kv_stride = c.n_kv_head * c.head_dim;
    for (int64_t stats_tok = 0; stats_tok < c.n_tok; stats_tok += 2) {
      const int64_t n_pos = c.pos0 + stats_tok + 1;
      for (const KernelTable* t : tables) {
        std::vector<float> plain(c.n_tok * q_stride), with(c.n_tok * q_stride), scratch(c.pos0 + c.n_tok);
        std::vector<float> stats(c.n_head * 2, kSentinel);
        // Both calls take the same head range (a SIMD kernel's head grouping sets its rounding).
        d.args.out = plain.data();
        d.args.stats_tok = -1;
        d.args.stats = nullptr;
        t->attention(d.args, 1, c.n_head, scratch.data());
        d.args.out = with.data();
        d.args.stats_tok = stats_tok;
        d.args.stats = stats.data();
        t->attention(d.args, 1, c.n_head, scratch.data());  // a head range: head 0 is left alone
        d.args.stats = nullptr;
        d.args.stats_tok = -1;
        CHECK_MSG(is_sentinel(stats[0]) && is_sentinel(stats[1]), "%s wrote statistics of head 0 outside [1, n_head)", t->name);
        for (int64_t i = 0; i < c.n_tok * q_stride; ++i)
          if (i % q_stride >= c.head_dim) CHECK_MSG(plain[i] == with[i], "%s: statistics changed the output at %lld", t->name, (long long)i);
        for (int64_t h = 1; h < c.n_head; ++h) {
          const int64_t kv_h = h / (c.n_head / c.n_kv_head);
          const float* q = &d.q[stats_tok * q_stride + h * c.head_dim];
          std::vector<double> s(n_pos);
          double max_s = -INFINITY, max_abs = 0;
          for (int64_t j = 0; j < n_pos; ++j) {
            const float* k = &d.k[j * kv_stride + kv_h * c.head_dim];
            double dot = 0, a = 0;
            for (int64_t i = 0; i < c.head_dim; ++i) {
              dot += static_cast<double>(q[i]) * k[i];
              a += fabs(static_cast<double>(q[i]) * k[i]);
            }
            s[j] = dot * d.args.scale;
            max_s = s[j] > max_s ? s[j] : max_s;
            max_abs = a * d.args.scale > max_abs ? a * d.args.scale : max_abs;
          }
          double sum = 0;
          for (double x : s) sum += exp(x - max_s);
          double entropy = 0;
          for (double x : s) {
            const double p = exp(x - max_s) / sum;
            if (p > 0) entropy -= p * log(p);
          }
          const double self = exp(s[n_pos - 1] - max_s) / sum;
          const double delta = (static_cast<double>(c.head_dim) / 8 + 16) * kU * max_abs;
          const double rounding = 8 * kU * static_cast<double>(n_pos + 16);
          CHECK_MSG(fabs(stats[2 * h] - entropy) <= (2 * delta + rounding) * (entropy + 1) + 1e-6,
                    "%s entropy h=%lld n_pos=%lld got %.9g want %.9g", t->name, (long long)h, (long long)n_pos, stats[2 * h], entropy);
          CHECK_MSG(fabs(stats[2 * h + 1] - self) <= (2 * delta + rounding) * self + 1e-7,
                    "%s self-weight h=%lld n_pos=%lld got %.9g want %.9g", t->name, (long long)h, (long long)n_pos, stats[2 * h + 1], self);
        }
      }
    }
  }
}

// hidden_change (the exit features' residual change) against double: cosine and relative norm, and the zero cases.
TEST(hidden_change_matches_double_reference) {
  Rng rng(45);
  for (int64_t n : {1, 7, 64, 2048}) {
    const std::vector<float> a = random_vector(n, rng), b = random_vector(n, rng);
    for (int same = 0; same < 2; ++same) {
      const std::vector<float>& now = same ? b : a;
      double dot = 0, aa = 0, bb = 0, dd = 0;
      for (int64_t i = 0; i < n; ++i) {
        dot += static_cast<double>(now[i]) * b[i];
        aa += static_cast<double>(now[i]) * now[i];
        bb += static_cast<double>(b[i]) * b[i];
        dd += (static_cast<double>(now[i]) - b[i]) * (static_cast<double>(now[i]) - b[i]);
      }
      float cosine = 0, relative = 0;
      hidden_change(now.data(), b.data(), n, &cosine, &relative);
      CHECK_NEAR(cosine, dot / sqrt(aa * bb), 1e-6);
      CHECK_NEAR(relative, sqrt(dd / bb), 1e-6 * (1 + sqrt(dd / bb)));
      if (same) CHECK(cosine == 1.0f || fabs(cosine - 1.0f) <= 1e-6);
    }
  }
  const std::vector<float> zero(16, 0.f), x = random_vector(16, rng);
  float cosine = 0, relative = 0;
  hidden_change(x.data(), zero.data(), 16, &cosine, &relative);
  CHECK(cosine == 1.0f && relative == 0.0f);
}

// ---- rope --------------------------------------------------------------------------------------------------

// Pair i of a head rotates by angle_i = pos * base^(-2i/n_rot) / ff_i. ggml's float recurrence
// (theta *= theta_scale, with theta_scale = powf(base, -2/n_rot) rounded) has relative angle error
// <= (3i + 4)u, so the rotated pair is off by <= (|x0| + |x1|) * (angle_i (3i + 4)u + 4u) (the last
// term for cosf/sinf and the rotation's own roundings); the test allows twice that.
void check_rope(int64_t n_heads, int64_t head_dim, int64_t n_rot, int64_t pos, float base, bool with_factors,
                Rng& rng) {
  std::vector<float> factors;
  if (with_factors) factors = random_vector(n_rot / 2, rng, 1.0f, 8.0f);
  const std::vector<float> x_in = random_vector(n_heads * head_dim, rng, -2.0f, 2.0f);
  std::vector<float> x = x_in;
  rope_llama(x.data(), n_heads, head_dim, n_rot, pos, base, with_factors ? factors.data() : nullptr);
  for (int64_t h = 0; h < n_heads; ++h) {
    const float* in = &x_in[h * head_dim];
    const float* got = &x[h * head_dim];
    for (int64_t i = 0; i < n_rot / 2; ++i) {
      const double ff = with_factors ? factors[i] : 1.0;
      const double angle = static_cast<double>(pos) * pow(static_cast<double>(base), -2.0 * i / n_rot) / ff;
      const double x0 = in[2 * i], x1 = in[2 * i + 1];
      const double r0 = x0 * cos(angle) - x1 * sin(angle);
      const double r1 = x0 * sin(angle) + x1 * cos(angle);
      const double tol = 2 * (fabs(x0) + fabs(x1)) * (angle * (3.0 * i + 4) * kU + 4 * kU);
      CHECK_MSG(fabs(got[2 * i] - r0) <= tol && fabs(got[2 * i + 1] - r1) <= tol,
                "rope pos=%lld n_rot=%lld h=%lld pair=%lld: (%.9g, %.9g) vs (%.9g, %.9g) tol %.3g", (long long)pos,
                (long long)n_rot, (long long)h, (long long)i, got[2 * i], got[2 * i + 1], r0, r1, tol);
    }
    for (int64_t i = n_rot; i < head_dim; ++i) CHECK(bits_of(got[i]) == bits_of(in[i]));  // untouched
  }
}

TEST(rope_against_double_formula) {
  Rng rng(50);
  for (int64_t pos : {0, 1, 7, 100, 1000, 4095})
    for (bool factors : {false, true}) {
      check_rope(4, 64, 64, pos, 10000.0f, factors, rng);
      check_rope(3, 128, 128, pos, 500000.0f, factors, rng);
      check_rope(2, 96, 32, pos, 10000.0f, factors, rng);   // partial rotation: dims 32..95 untouched
      check_rope(5, 80, 80, pos, 1000000.0f, factors, rng); // 40 pairs: not a multiple of the chunk
      check_rope(1, 512, 320, pos, 10000.0f, factors, rng); // more pairs than one cos/sin chunk
    }
}

TEST(rope_position_zero_is_identity) {
  Rng rng(51);
  const std::vector<float> x_in = random_vector(4 * 64, rng);
  std::vector<float> x = x_in;
  rope_llama(x.data(), 4, 64, 64, 0, 10000.0f, nullptr);
  for (size_t i = 0; i < x.size(); ++i) CHECK(bits_of(x[i]) == bits_of(x_in[i]));
}

// ---- kernel selection --------------------------------------------------------------------------------------

TEST(kernel_selection) {
  const KernelTable& g = kernels_generic();
  CHECK(std::strcmp(g.name, "generic") == 0);
  CHECK(kernels_by_name("generic") == &g);
  CHECK(kernels_by_name("bogus") == nullptr);
  CHECK(kernels_by_name(nullptr) == nullptr);
  CHECK((kernels_by_name("avx2") != nullptr) == (has_avx2() && kernels_avx2() != nullptr));
  CHECK((kernels_by_name("avx512") != nullptr) == (has_avx512() && kernels_avx512() != nullptr));
  if (const KernelTable* t = kernels_by_name("avx2")) CHECK(std::strcmp(t->name, "avx2") == 0);
  if (const KernelTable* t = kernels_by_name("avx512")) CHECK(std::strcmp(t->name, "avx512") == 0);
#if !ADAINFER_X86
  CHECK(kernels_avx2() == nullptr && kernels_avx512() == nullptr);
#endif
  if (has_avx512()) CHECK(has_avx2());

  // kernels_best(): the ADAINFER_ISA choice when it names a supported table, else the widest supported.
  const KernelTable* widest = kernels_by_name("avx512");
  if (!widest) widest = kernels_by_name("avx2");
  if (!widest) widest = &g;
  const char* env = std::getenv("ADAINFER_ISA");
  const KernelTable* requested = env && *env ? kernels_by_name(env) : nullptr;
  CHECK(&kernels_best() == (requested ? requested : widest));
  CHECK(&kernels_best() == &kernels_best());

  const KernelTable* all[] = {&g, kernels_by_name("avx2"), kernels_by_name("avx512")};
  for (const KernelTable* t : all) {
    if (!t) continue;
    CHECK(t->attention && t->dot_f32 && t->rms_norm && t->swiglu && t->add);
    for (GgmlType type : kFloatTypes) CHECK(t->matmul[type_id(type)] && t->dequant_row[type_id(type)]);
  }
  CHECK(std::strlen(cpu_features_string()) > 0);
}

}  // namespace
