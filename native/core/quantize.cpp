// Quantizers for the GGML block types and for activation rows. Baseline x86-64 code (no -m flags).
//
// The 32-element types use ggml's reference rules (round to nearest, one scale per block), so a tensor
// quantized here is the one llama-quantize writes without an importance matrix. The K-quants search each
// sub-block's scale (and min) for the least weighted squared error over a small set of candidate scales,
// then quantize the sub-block scales themselves to 6 bits (Q4_K, Q5_K) or 8 bits (Q6_K) against the
// largest one, and finally re-quantize the elements with the scales as stored.
#include "core/quantize.h"

#include <math.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "core/ggml_types.h"
#include "core/kernels.h"

namespace adainfer {

int nearest_int(float x) {
  // Adding 1.5 * 2^23 leaves the integer part of x in the low mantissa bits, rounded by the FPU's
  // round-to-nearest-even; valid for |x| < 2^22.
  const float shifted = x + 12582912.f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  return (bits & 0x007fffff) - 0x00400000;
}

namespace {

// fp16 rounding of a float, as a float
float round_fp16(float f) { return fp16_to_fp32(fp32_to_fp16(f)); }

// Element of largest magnitude (its signed value; the first one on ties) and that magnitude.
void signed_absmax(const float* x, int n, float* max, float* amax) {
  *max = 0.f;
  *amax = 0.f;
  for (int i = 0; i < n; ++i) {
    const float a = fabsf(x[i]);
    if (a > *amax) {
      *amax = a;
      *max = x[i];
    }
  }
}

// ---- 32-element blocks ---------------------------------------------------------------------------------

void q4_0_block(const float* x, BlockQ4_0* b) {
  float max, amax;
  signed_absmax(x, 32, &max, &amax);
  // The extreme element maps to -8, the end of the range with room (q - 8 spans -8..7).
  const float d = max / -8.f;
  const float id = d != 0.f ? 1.f / d : 0.f;
  b->d = fp32_to_fp16(d);
  for (int j = 0; j < 16; ++j) {
    const int lo = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
    const int hi = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 8.5f)));
    b->qs[j] = static_cast<uint8_t>(lo | (hi << 4));
  }
}

void q4_1_block(const float* x, BlockQ4_1* b) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < 32; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  const float d = (hi - lo) / 15.f;
  const float id = d != 0.f ? 1.f / d : 0.f;
  b->d = fp32_to_fp16(d);
  b->m = fp32_to_fp16(lo);
  for (int j = 0; j < 16; ++j) {
    const int a = std::min(15, static_cast<int>(static_cast<int8_t>((x[j] - lo) * id + 0.5f)));
    const int c = std::min(15, static_cast<int>(static_cast<int8_t>((x[j + 16] - lo) * id + 0.5f)));
    b->qs[j] = static_cast<uint8_t>(a | (c << 4));
  }
}

// Stores 32 five-bit codes into a Q5 block's qs (low nibbles) and qh (bit 4 of code j -> bit j).
void pack_q5(const int* q, uint8_t* qs, uint8_t* qh_bytes) {
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = static_cast<uint8_t>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
    qh |= static_cast<uint32_t>((q[j] >> 4) & 1) << j;
    qh |= static_cast<uint32_t>((q[j + 16] >> 4) & 1) << (j + 16);
  }
  for (int k = 0; k < 4; ++k) qh_bytes[k] = static_cast<uint8_t>(qh >> (8 * k));
}

void q5_0_block(const float* x, BlockQ5_0* b) {
  float max, amax;
  signed_absmax(x, 32, &max, &amax);
  const float d = max / -16.f;
  const float id = d != 0.f ? 1.f / d : 0.f;
  b->d = fp32_to_fp16(d);
  int q[32];
  for (int j = 0; j < 32; ++j) q[j] = std::min(31, static_cast<int>(static_cast<int8_t>(x[j] * id + 16.5f)));
  pack_q5(q, b->qs, b->qh);
}

void q5_1_block(const float* x, BlockQ5_1* b) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < 32; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  const float d = (hi - lo) / 31.f;
  const float id = d != 0.f ? 1.f / d : 0.f;
  b->d = fp32_to_fp16(d);
  b->m = fp32_to_fp16(lo);
  int q[32];
  for (int j = 0; j < 32; ++j) q[j] = std::min(31, static_cast<int>(static_cast<uint8_t>((x[j] - lo) * id + 0.5f)));
  pack_q5(q, b->qs, b->qh);
}

void q8_0_block(const float* x, BlockQ8_0* b) {
  float amax = 0.f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, fabsf(x[j]));
  const float d = amax / 127.f;
  const float id = d != 0.f ? 1.f / d : 0.f;
  b->d = fp32_to_fp16(d);
  for (int j = 0; j < 32; ++j) b->qs[j] = static_cast<int8_t>(roundf(x[j] * id));
}

// ---- K-quant scale search ------------------------------------------------------------------------------

// Fits x[i] ~ scale * L[i] + offset with L[i] in [0, nmax] and offset <= 0, minimising sum w[i] * error^2.
// Candidates: the min/max mapping and nstep + 1 stretched ones (iscale = (nmax + rmin + rdelta * k) / range),
// each with its codes refitted by weighted least squares. Returns the scale; *neg_offset = -offset >= 0.
float fit_scale_offset(const float* x, const float* w, int n, int nmax, float rmin, float rdelta, int nstep,
                       uint8_t* L, float* neg_offset) {
  float lo = x[0], hi = x[0];
  float sum_w = w[0], sum_x = w[0] * x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (lo > 0.f) lo = 0.f;  // the offset only ever subtracts
  if (hi == lo) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *neg_offset = -lo;
    return 0.f;
  }
  float iscale = nmax / (hi - lo);
  float scale = 1.f / iscale;
  float offset = lo;
  float best = 0.f;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, nearest_int(iscale * (x[i] - lo)))));
    const float e = scale * L[i] + lo - x[i];
    best += w[i] * e * e;
  }
  uint8_t cand[32];
  for (int k = 0; k <= nstep; ++k) {
    iscale = (rmin + rdelta * k + nmax) / (hi - lo);
    float sum_l = 0.f, sum_l2 = 0.f, sum_xl = 0.f;
    for (int i = 0; i < n; ++i) {
      const int l = std::max(0, std::min(nmax, nearest_int(iscale * (x[i] - lo))));
      cand[i] = static_cast<uint8_t>(l);
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    // Normal equations of the 2x2 weighted least-squares problem in (scale, offset).
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (!(det > 0.f)) continue;
    float s = (sum_w * sum_xl - sum_x * sum_l) / det;
    float o = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (o > 0.f) {  // a positive offset is not representable: refit the scale alone
      o = 0.f;
      s = sum_xl / sum_l2;
    }
    float err = 0.f;
    for (int i = 0; i < n; ++i) {
      const float e = s * cand[i] + o - x[i];
      err += w[i] * e * e;
    }
    if (err < best) {
      best = err;
      std::memcpy(L, cand, static_cast<size_t>(n));
      scale = s;
      offset = o;
    }
  }
  *neg_offset = -offset;
  return scale;
}

// Fits x[i] ~ scale * l[i], l in [-nmax, nmax - 1], weights x[i]^2: starts from the extreme element mapped
// to -nmax and tries 18 nearby scales, keeping the one of least weighted error (largest (sum w x l)^2 /
// sum w l^2). Returns the scale (0 for an all-zero group).
float fit_scale_signed(const float* x, int n, int nmax) {
  float max, amax;
  signed_absmax(x, n, &max, &amax);
  if (amax < 1e-15f) return 0.f;
  auto fit = [&](float iscale, float* sum_xl, float* sum_l2) {
    *sum_xl = 0.f;
    *sum_l2 = 0.f;
    for (int i = 0; i < n; ++i) {
      const int l = std::max(-nmax, std::min(nmax - 1, nearest_int(iscale * x[i])));
      const float w = x[i] * x[i];
      *sum_xl += w * x[i] * l;
      *sum_l2 += w * l * l;
    }
  };
  float sum_xl, sum_l2;
  fit(-nmax / max, &sum_xl, &sum_l2);
  float scale = sum_l2 != 0.f ? sum_xl / sum_l2 : 0.f;
  float best = scale * sum_xl;
  for (int k = -9; k <= 9; ++k) {
    if (k == 0) continue;
    fit(-(nmax + 0.1f * k) / max, &sum_xl, &sum_l2);
    if (sum_l2 > 0.f && sum_xl * sum_xl > best * sum_l2) {
      scale = sum_xl / sum_l2;
      best = scale * sum_xl;
    }
  }
  return scale;
}

// Packs the 6-bit scales and mins of 8 sub-blocks into Q4_K/Q5_K's 12 bytes (inverse of k_scale_min).
void pack_k_scales(const uint8_t* sc, const uint8_t* m, uint8_t* out) {
  for (int j = 0; j < 4; ++j) {
    out[j] = sc[j] & 63;
    out[j + 4] = m[j] & 63;
  }
  for (int j = 4; j < 8; ++j) {
    out[j + 4] = static_cast<uint8_t>((sc[j] & 0xF) | ((m[j] & 0xF) << 4));
    out[j - 4] |= static_cast<uint8_t>((sc[j] >> 4) << 6);
    out[j] |= static_cast<uint8_t>((m[j] >> 4) << 6);
  }
}

// The common part of Q4_K and Q5_K: searches the 8 sub-blocks, stores d, dmin and the packed scales, and
// returns the final codes L[256] in [0, nmax].
void k_scales_and_codes(const float* x, int nmax, float rmin, float rdelta, int nstep, uint16_t* d_out,
                        uint16_t* dmin_out, uint8_t* scales_out, uint8_t* L) {
  float scale[8], neg_min[8], w[32];
  float max_scale = 0.f, max_min = 0.f;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0.f;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float av = sqrtf(sum_x2 / 32.f);
    for (int l = 0; l < 32; ++l) w[l] = av + fabsf(xs[l]);  // emphasise the large elements
    scale[j] = fit_scale_offset(xs, w, 32, nmax, rmin, rdelta, nstep, L + 32 * j, &neg_min[j]);
    max_scale = std::max(max_scale, scale[j]);
    max_min = std::max(max_min, neg_min[j]);
  }
  const float inv_scale = max_scale > 0.f ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0.f ? 63.f / max_min : 0.f;
  uint8_t sc[8], m[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = static_cast<uint8_t>(std::min(63, nearest_int(inv_scale * scale[j])));
    m[j] = static_cast<uint8_t>(std::min(63, nearest_int(inv_min * neg_min[j])));
  }
  std::memset(scales_out, 0, 12);
  pack_k_scales(sc, m, scales_out);
  *d_out = fp32_to_fp16(max_scale / 63.f);
  *dmin_out = fp32_to_fp16(max_min / 63.f);
  // Re-quantize against the scales as stored (6-bit sub-scales times fp16 super-scales).
  const float d = fp16_to_fp32(*d_out), dmin = fp16_to_fp32(*dmin_out);
  for (int j = 0; j < 8; ++j) {
    const float ds = d * sc[j];
    if (ds == 0.f) continue;  // keep the search's codes: they multiply a zero scale anyway
    const float dm = dmin * m[j];
    for (int l = 0; l < 32; ++l) {
      L[32 * j + l] = static_cast<uint8_t>(std::max(0, std::min(nmax, nearest_int((x[32 * j + l] + dm) / ds))));
    }
  }
}

void q4_k_block(const float* x, BlockQ4_K* b) {
  uint8_t L[256];
  k_scales_and_codes(x, 15, -1.f, 0.1f, 20, &b->d, &b->dmin, b->scales, L);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) b->qs[32 * c + l] = static_cast<uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
}

void q5_k_block(const float* x, BlockQ5_K* b) {
  uint8_t L[256];
  k_scales_and_codes(x, 31, -0.5f, 0.1f, 15, &b->d, &b->dmin, b->scales, L);
  std::memset(b->qh, 0, sizeof b->qh);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      const int a = L[64 * c + l], h = L[64 * c + 32 + l];
      b->qs[32 * c + l] = static_cast<uint8_t>((a & 0xF) | ((h & 0xF) << 4));
      b->qh[l] |= static_cast<uint8_t>(((a >> 4) << (2 * c)) | ((h >> 4) << (2 * c + 1)));
    }
  }
}

void q6_k_block(const float* x, BlockQ6_K* b) {
  float scale[16];
  float max_scale = 0.f, max_abs = 0.f;
  for (int j = 0; j < 16; ++j) {
    scale[j] = fit_scale_signed(x + 16 * j, 16, 32);
    if (fabsf(scale[j]) > max_abs) {
      max_abs = fabsf(scale[j]);
      max_scale = scale[j];
    }
  }
  std::memset(b, 0, sizeof *b);
  if (max_abs < 1e-15f) return;  // all zero: d = 0
  // Sub-scales are int8; the largest maps to -128 (sign chosen so that it is representable).
  const float iscale = -128.f / max_scale;
  b->d = fp32_to_fp16(1.f / iscale);
  for (int j = 0; j < 16; ++j) b->scales[j] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scale[j])));
  const float d = fp16_to_fp32(b->d);
  uint8_t L[256];
  for (int j = 0; j < 16; ++j) {
    const float ds = d * b->scales[j];
    for (int l = 0; l < 16; ++l) {
      L[16 * j + l] = ds == 0.f ? 32
                                : static_cast<uint8_t>(std::max(-32, std::min(31, nearest_int(x[16 * j + l] / ds))) + 32);
    }
  }
  for (int h = 0; h < 2; ++h) {
    const uint8_t* Lh = L + 128 * h;
    uint8_t* ql = b->ql + 64 * h;
    uint8_t* qh = b->qh + 32 * h;
    for (int l = 0; l < 32; ++l) {
      ql[l] = static_cast<uint8_t>((Lh[l] & 0xF) | ((Lh[64 + l] & 0xF) << 4));
      ql[32 + l] = static_cast<uint8_t>((Lh[32 + l] & 0xF) | ((Lh[96 + l] & 0xF) << 4));
      qh[l] = static_cast<uint8_t>((Lh[l] >> 4) | ((Lh[32 + l] >> 4) << 2) | ((Lh[64 + l] >> 4) << 4) |
                                   ((Lh[96 + l] >> 4) << 6));
    }
  }
}

void q8_k_block(const float* x, BlockQ8_K* b) {
  float max, amax;
  signed_absmax(x, 256, &max, &amax);
  if (amax == 0.f) {
    std::memset(b, 0, sizeof *b);
    return;
  }
  const float iscale = -127.f / max;
  for (int j = 0; j < 256; ++j) b->qs[j] = static_cast<int8_t>(std::min(127, nearest_int(iscale * x[j])));
  for (int g = 0; g < 16; ++g) {
    int sum = 0;
    for (int l = 0; l < 16; ++l) sum += b->qs[16 * g + l];
    b->bsums[g] = static_cast<int16_t>(sum);
  }
  b->d = 1.f / iscale;
}

template <class Block, void (*Fn)(const float*, Block*), int QK>
void quantize_blocks(const float* x, void* dst, int64_t n) {
  Block* out = static_cast<Block*>(dst);
  for (int64_t i = 0; i < n / QK; ++i) Fn(x + i * QK, out + i);
}

}  // namespace

bool quantize_supported(int32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16: case GgmlType::Q4_0: case GgmlType::Q4_1:
    case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q8_0: case GgmlType::Q4_K: case GgmlType::Q5_K:
    case GgmlType::Q6_K: case GgmlType::Q8_K:
      return true;
    default:
      return false;
  }
}

size_t quantize_rows(int32_t type, const float* src, void* dst, int64_t n_rows, int64_t n_per_row) {
  if (!quantize_supported(type) || n_rows < 0) return 0;
  const size_t rb = row_bytes(type, n_per_row);
  if (rb == 0) return 0;
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* x = src + r * n_per_row;
    void* out = static_cast<uint8_t*>(dst) + static_cast<size_t>(r) * rb;
    const int64_t n = n_per_row;
    switch (static_cast<GgmlType>(type)) {
      case GgmlType::F32: std::memcpy(out, x, rb); break;
      case GgmlType::F16: {
        uint16_t* h = static_cast<uint16_t*>(out);
        for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_fp16(x[i]);
        break;
      }
      case GgmlType::BF16: {
        uint16_t* h = static_cast<uint16_t*>(out);
        for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_bf16(x[i]);
        break;
      }
      case GgmlType::Q4_0: quantize_blocks<BlockQ4_0, q4_0_block, 32>(x, out, n); break;
      case GgmlType::Q4_1: quantize_blocks<BlockQ4_1, q4_1_block, 32>(x, out, n); break;
      case GgmlType::Q5_0: quantize_blocks<BlockQ5_0, q5_0_block, 32>(x, out, n); break;
      case GgmlType::Q5_1: quantize_blocks<BlockQ5_1, q5_1_block, 32>(x, out, n); break;
      case GgmlType::Q8_0: quantize_blocks<BlockQ8_0, q8_0_block, 32>(x, out, n); break;
      case GgmlType::Q4_K: quantize_blocks<BlockQ4_K, q4_k_block, 256>(x, out, n); break;
      case GgmlType::Q5_K: quantize_blocks<BlockQ5_K, q5_k_block, 256>(x, out, n); break;
      case GgmlType::Q6_K: quantize_blocks<BlockQ6_K, q6_k_block, 256>(x, out, n); break;
      case GgmlType::Q8_K: quantize_blocks<BlockQ8_K, q8_k_block, 256>(x, out, n); break;
      default: return 0;
    }
  }
  return rb * static_cast<size_t>(n_rows);
}

// ---- dequantization (ggml's dequantize_row_* formulas) ----------------------------------------------------


void dequant_row_q4_0(const void* row, float* out, int64_t n) {
  const BlockQ4_0* b = static_cast<const BlockQ4_0*>(row);
  for (int64_t i = 0; i < n / 32; ++i, out += 32) {
    const float d = fp16_to_fp32(b[i].d);
    for (int j = 0; j < 16; ++j) {
      out[j] = static_cast<float>((b[i].qs[j] & 0xF) - 8) * d;
      out[j + 16] = static_cast<float>((b[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void dequant_row_q4_1(const void* row, float* out, int64_t n) {
  const BlockQ4_1* b = static_cast<const BlockQ4_1*>(row);
  for (int64_t i = 0; i < n / 32; ++i, out += 32) {
    const float d = fp16_to_fp32(b[i].d), m = fp16_to_fp32(b[i].m);
    for (int j = 0; j < 16; ++j) {
      out[j] = static_cast<float>(b[i].qs[j] & 0xF) * d + m;
      out[j + 16] = static_cast<float>(b[i].qs[j] >> 4) * d + m;
    }
  }
}

static uint32_t load_qh(const uint8_t* qh) {
  uint32_t v;
  std::memcpy(&v, qh, 4);
  return v;  // x86 is little endian, as the file
}

// The 5-bit code of element j of a Q5 block.
static int q5_code(const uint8_t* qs, uint32_t qh, int j) {
  const int low = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
  return low | static_cast<int>(((qh >> j) & 1u) << 4);
}

void dequant_row_q5_0(const void* row, float* out, int64_t n) {
  const BlockQ5_0* b = static_cast<const BlockQ5_0*>(row);
  for (int64_t i = 0; i < n / 32; ++i, out += 32) {
    const float d = fp16_to_fp32(b[i].d);
    const uint32_t qh = load_qh(b[i].qh);
    for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(q5_code(b[i].qs, qh, j) - 16) * d;
  }
}

void dequant_row_q5_1(const void* row, float* out, int64_t n) {
  const BlockQ5_1* b = static_cast<const BlockQ5_1*>(row);
  for (int64_t i = 0; i < n / 32; ++i, out += 32) {
    const float d = fp16_to_fp32(b[i].d), m = fp16_to_fp32(b[i].m);
    const uint32_t qh = load_qh(b[i].qh);
    for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(q5_code(b[i].qs, qh, j)) * d + m;
  }
}

void dequant_row_q8_0(const void* row, float* out, int64_t n) {
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(row);
  for (int64_t i = 0; i < n / 32; ++i, out += 32) {
    const float d = fp16_to_fp32(b[i].d);
    for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(b[i].qs[j]) * d;
  }
}

// Codes (0..15 or 0..31) of the 256 elements of a Q4_K / Q5_K block (qh == nullptr for Q4_K).
void unpack_k_codes(const uint8_t* qs, const uint8_t* qh, int8_t* codes) {
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      int lo = qs[32 * c + l] & 0xF, hi = qs[32 * c + l] >> 4;
      if (qh) {
        lo |= ((qh[l] >> (2 * c)) & 1) << 4;
        hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
      }
      codes[64 * c + l] = static_cast<int8_t>(lo);
      codes[64 * c + 32 + l] = static_cast<int8_t>(hi);
    }
  }
}

namespace {
template <bool kFive>
void dequant_q45_k(const void* row, float* out, int64_t n) {
  using Block = typename std::conditional<kFive, BlockQ5_K, BlockQ4_K>::type;
  const Block* b = static_cast<const Block*>(row);
  for (int64_t i = 0; i < n / 256; ++i, out += 256) {
    int8_t codes[256];
    if constexpr (kFive) {
      unpack_k_codes(b[i].qs, b[i].qh, codes);
    } else {
      unpack_k_codes(b[i].qs, nullptr, codes);
    }
    const float d = fp16_to_fp32(b[i].d), dmin = fp16_to_fp32(b[i].dmin);
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      k_scale_min(j, b[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      for (int l = 0; l < 32; ++l) out[32 * j + l] = d1 * static_cast<float>(codes[32 * j + l]) - m1;
    }
  }
}

}  // namespace

void dequant_row_q4_k(const void* row, float* out, int64_t n) { dequant_q45_k<false>(row, out, n); }
void dequant_row_q5_k(const void* row, float* out, int64_t n) { dequant_q45_k<true>(row, out, n); }

// Signed values (code - 32, in -32..31) of the 256 elements of a Q6_K block.
void unpack_q6_values(const BlockQ6_K& b, int8_t* v) {
  for (int h = 0; h < 2; ++h) {
    const uint8_t* ql = b.ql + 64 * h;
    const uint8_t* qh = b.qh + 32 * h;
    int8_t* o = v + 128 * h;
    for (int l = 0; l < 32; ++l) {
      o[l] = static_cast<int8_t>(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
      o[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
      o[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
      o[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
    }
  }
}

void dequant_row_q6_k(const void* row, float* out, int64_t n) {
  const BlockQ6_K* b = static_cast<const BlockQ6_K*>(row);
  for (int64_t i = 0; i < n / 256; ++i, out += 256) {
    int8_t v[256];
    unpack_q6_values(b[i], v);
    const float d = fp16_to_fp32(b[i].d);
    for (int j = 0; j < 256; ++j) out[j] = d * b[i].scales[j / 16] * v[j];
  }
}

void dequant_row_q8_k(const void* row, float* out, int64_t n) {
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(row);
  for (int64_t i = 0; i < n / 256; ++i, out += 256)
    for (int j = 0; j < 256; ++j) out[j] = b[i].d * b[i].qs[j];
}

// ---- activation rows ----------------------------------------------------------------------------------------

void quantize_act_q8_0_ref(const float* x, uint8_t* out, int64_t n) {
  const ActQ8_0Row r = act_q8_0_row(out, n);
  int8_t* q = const_cast<int8_t*>(r.q);
  float* d_out = const_cast<float*>(r.d);
  float* s_out = const_cast<float*>(r.s);
  float* sum_out = const_cast<float*>(r.sum);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + 32 * b;
    float amax = 0.f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, fabsf(xb[j]));
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      const int v = static_cast<int>(roundf(xb[j] * id));
      q[32 * b + j] = static_cast<int8_t>(v);
      sum += v;
    }
    d_out[b] = round_fp16(d);
    s_out[b] = round_fp16(static_cast<float>(sum) * d);
    sum_out[b] = static_cast<float>(sum);
  }
  int8_t* qn = const_cast<int8_t*>(r.qn);
  const int64_t padded = (n + 127) / 128 * 128;
  for (int64_t i = n; i < padded; ++i) qn[act_qn_pos(i)] = 0;
  for (int64_t i = 0; i < n; ++i) qn[act_qn_pos(i)] = q[i];
}

void quantize_act_q8_k_ref(const float* x, uint8_t* out, int64_t n) {
  const ActQ8_KRow r = act_q8_k_row(out, n);
  int8_t* q = const_cast<int8_t*>(r.q);
  float* d_out = const_cast<float*>(r.d);
  int16_t* bsums = const_cast<int16_t*>(r.bsums);
  float* sum16 = const_cast<float*>(r.sum16);
  float* sum32 = const_cast<float*>(r.sum32);
  for (int64_t b = 0; b < n / 256; ++b) {
    BlockQ8_K blk;
    q8_k_block(x + 256 * b, &blk);
    std::memcpy(q + 256 * b, blk.qs, 256);
    std::memcpy(bsums + 16 * b, blk.bsums, sizeof blk.bsums);
    d_out[b] = blk.d;
    for (int g = 0; g < 16; ++g) sum16[16 * b + g] = blk.bsums[g];
    for (int k = 0; k < 8; ++k) sum32[8 * b + k] = static_cast<float>(blk.bsums[2 * k] + blk.bsums[2 * k + 1]);
  }
  int8_t* qk = const_cast<int8_t*>(r.qk);
  for (int64_t i = 0; i < n; ++i) qk[act_qk_pos(i)] = q[i];
}

void quantize_act_bf16_ref(const float* x, uint8_t* out, int64_t n) {
  uint16_t* h = reinterpret_cast<uint16_t*>(out);
  for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_bf16(x[i]);
}

}  // namespace adainfer
