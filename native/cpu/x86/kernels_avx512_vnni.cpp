// AVX-512 kernels with VNNI (vpdpbusd) and, where the CPU has it, AVX512-BF16 (vdpbf16ps): Ice Lake /
// Cooper Lake / Sapphire Rapids and later, Zen 4 and later. Compiled with the AVX-512 flags of
// kernels_avx512.cpp plus -mavx512vnni -mavx512bf16; nothing here runs unless cpu_features() reported
// AVX-512 VNNI (static data is constant-initialised). kernels_avx512() hands this table out on such CPUs.
// The float kernels are the same source as the plain AVX-512 build; the quantized types get the int8
// dot products of VNNI and the repacked-panel prefill (cpu/x86/quant_x86.h).
#include "core/kernels.h"

#if ADAINFER_X86

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's AVX-512 headers trip -W(maybe-)uninitialized on their own _mm512_undefined_* placeholders
// (GCC bug 105593, fixed in 13); the warnings are about the compiler's headers, not this file.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "core/cpu_features.h"
#include "cpu/x86/avx512_traits.h"
#include "cpu/x86/simd_common.h"
#include "cpu/x86/quant_x86.h"

namespace adainfer {
namespace {
constexpr KernelTable make_table(bool bf16) {
  KernelTable t = make_simd_table<Avx512>("avx512");
  add_quant_kernels(t);
  if (bf16) add_bf16_kernels(t);
  return t;
}
constexpr KernelTable kVnniTable = make_table(false);
// With AVX512-BF16 too: BF16 weights through vdpbf16ps (activations rounded to bf16 as in ggml).
constexpr KernelTable kVnniBf16Table = make_table(true);
}  // namespace

const KernelTable* kernels_avx512_vnni() {
  if (!has_avx512() || !cpu_features().avx512_vnni) return nullptr;
  return cpu_features().avx512_bf16 ? &kVnniBf16Table : &kVnniTable;
}

}  // namespace adainfer

#else  // not x86: the variant does not exist

namespace adainfer {
const KernelTable* kernels_avx512_vnni() { return nullptr; }
}  // namespace adainfer

#endif
