// AVX-512 (F, BW, VL, DQ) kernels: Skylake-X and later, Zen 4 and later. Compiled with -mavx512f
// -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c; nothing here runs unless cpu_features() reported
// AVX-512 (static data is constant-initialised). Tails use masked loads/stores, which do not fault
// on masked-off lanes. kernels_avx512() hands out the VNNI build (kernels_avx512_vnni.cpp) instead when
// the CPU has AVX-512 VNNI.
#include "core/kernels.h"

#if ADAINFER_X86

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's AVX-512 headers trip -W(maybe-)uninitialized on their own _mm512_undefined_* placeholders
// (GCC bug 105593, fixed in 13); the warnings are about the compiler's headers, not this file.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <cstdlib>

#include "core/cpu_features.h"
#include "cpu/x86/avx512_traits.h"
#include "cpu/x86/simd_common.h"
#include "cpu/x86/quant_x86.h"

namespace adainfer {
namespace {
constexpr KernelTable make_table() {
  KernelTable t = make_simd_table<Avx512>("avx512");
  add_quant_kernels(t);
  return t;
}
constexpr KernelTable kAvx512Table = make_table();

bool vnni_disabled() {
  const char* v = std::getenv("ADAINFER_NO_VNNI");
  return v && *v && !(v[0] == '0' && v[1] == 0);
}
}  // namespace

const KernelTable* kernels_avx512_plain() { return has_avx512() ? &kAvx512Table : nullptr; }

const KernelTable* kernels_avx512() {
  static const KernelTable* chosen = [] {
    const KernelTable* vnni = vnni_disabled() ? nullptr : kernels_avx512_vnni();
    return vnni ? vnni : &kAvx512Table;
  }();
  return chosen;
}

}  // namespace adainfer

#else  // not x86: the variant does not exist

namespace adainfer {
const KernelTable* kernels_avx512() { return nullptr; }
const KernelTable* kernels_avx512_plain() { return nullptr; }
}  // namespace adainfer

#endif
