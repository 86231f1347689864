// Block layouts of the GGML tensor types and the scalar 16-bit float conversions.
// This file is compiled for baseline x86-64 (no -m flags), so everything here runs on any CPU.
#include "core/ggml_types.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace adainfer {

namespace {

// Every type id of the GgmlType enum, with ggml's block layout:
//   block_elems = elements per block, block_bytes = bytes per block (scales included).
struct TypeEntry {
  GgmlType type;
  TypeTraits traits;
};

constexpr TypeEntry kTypeTable[] = {
    {GgmlType::F32, {1, 4}},      {GgmlType::F16, {1, 2}},      {GgmlType::BF16, {1, 2}},
    {GgmlType::Q4_0, {32, 18}},   {GgmlType::Q4_1, {32, 20}},   {GgmlType::Q5_0, {32, 22}},
    {GgmlType::Q5_1, {32, 24}},   {GgmlType::Q8_0, {32, 34}},   {GgmlType::Q8_1, {32, 36}},
    {GgmlType::Q2_K, {256, 84}},  {GgmlType::Q3_K, {256, 110}}, {GgmlType::Q4_K, {256, 144}},
    {GgmlType::Q5_K, {256, 176}}, {GgmlType::Q6_K, {256, 210}}, {GgmlType::Q8_K, {256, 292}},
};

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace

bool type_traits(int32_t type, TypeTraits* out) {
  for (const TypeEntry& e : kTypeTable) {
    if (static_cast<int32_t>(e.type) == type) {
      if (out) *out = e.traits;
      return true;
    }
  }
  return false;
}

size_t row_bytes(int32_t type, int64_t n) {
  TypeTraits t;
  if (!type_traits(type, &t) || n < 0 || n % t.block_elems != 0) return 0;
  // blocks * block_bytes must fit both size_t and int64_t (callers do pointer arithmetic with it).
  const uint64_t blocks = static_cast<uint64_t>(n / t.block_elems);
  const uint64_t limit = std::min<uint64_t>(std::numeric_limits<size_t>::max(),
                                            static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
  if (blocks > limit / static_cast<uint64_t>(t.block_bytes)) return 0;
  return static_cast<size_t>(blocks * static_cast<uint64_t>(t.block_bytes));
}

// binary16 layout: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits.
float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;

  if (exponent == 0x1f) {  // inf (mantissa 0) or NaN (payload kept in the top mantissa bits)
    return bits_float(sign | 0x7f800000u | (mantissa << 13));
  }
  if (exponent != 0) {  // normal: rebias 15 -> 127
    return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  }
  if (mantissa == 0) return bits_float(sign);  // +-0

  // Subnormal half: value = mantissa * 2^-24. Normalise so the leading 1 lands on bit 10 (the
  // implicit bit), lowering the exponent by one per shift; every half subnormal is an f32 normal.
  int shifts = 0;
  while ((mantissa & 0x400u) == 0) {
    mantissa <<= 1;
    ++shifts;
  }
  mantissa &= 0x3ffu;
  const uint32_t exponent32 = static_cast<uint32_t>(127 - 14 - shifts);
  return bits_float(sign | (exponent32 << 23) | (mantissa << 13));
}

uint16_t fp32_to_fp16(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t magnitude = x & 0x7fffffffu;

  if (magnitude > 0x7f800000u) {  // NaN: keep the sign and top payload bits, force the quiet bit
    return static_cast<uint16_t>(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
  }
  // 0x477ff000 = 65520, halfway between the largest half (65504, odd mantissa) and 65536: ties and
  // everything above round to infinity.
  if (magnitude >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);

  const uint32_t exponent = magnitude >> 23;  // biased f32 exponent
  if (magnitude >= 0x38800000u) {             // >= 2^-14: a normal half
    uint32_t h = ((exponent - 112u) << 10) | ((magnitude >> 13) & 0x3ffu);
    const uint32_t dropped = magnitude & 0x1fffu;  // the 13 mantissa bits that do not fit
    if (dropped > 0x1000u || (dropped == 0x1000u && (h & 1u))) ++h;  // carries into the exponent are right
    return static_cast<uint16_t>(sign | h);
  }

  // Below the smallest normal half: result is mantissa * 2^-24 (subnormal), rounded to nearest even.
  // With the implicit bit, value = m24 * 2^(exponent - 150), so value * 2^24 = m24 >> (126 - exponent).
  if (exponent < 102) return sign;  // < 2^-25: rounds to zero (2^-25 itself ties to even zero below)
  const uint32_t m24 = (magnitude & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - exponent;  // 14 .. 24
  uint32_t q = m24 >> shift;
  const uint32_t rem = m24 & ((1u << shift) - 1u);
  const uint32_t halfway = 1u << (shift - 1u);
  if (rem > halfway || (rem == halfway && (q & 1u))) ++q;  // q may become 0x400, the smallest normal
  return static_cast<uint16_t>(sign | q);
}

float bf16_to_fp32(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

uint16_t fp32_to_bf16(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) {  // NaN: truncating could clear the payload, so set the quiet bit
    return static_cast<uint16_t>((x >> 16) | 0x40u);
  }
  // Round to nearest even on the 16 dropped bits: add 0x7fff, plus 1 when the kept lsb is odd.
  const uint32_t rounded = x + 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

}  // namespace adainfer
