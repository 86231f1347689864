// CPUID / XGETBV feature detection. Compiled for baseline x86-64; runs before any variant is chosen.
#include "core/cpu_features.h"

#include <cstdint>
#include <string>

#if ADAINFER_X86
#include <cpuid.h>
#endif

namespace adainfer {

namespace {

#if ADAINFER_X86

// Bit positions from the Intel SDM, vol. 2A, CPUID.
constexpr uint32_t kLeaf1EcxFma = 1u << 12;
constexpr uint32_t kLeaf1EcxOsxsave = 1u << 27;  // OS uses XSAVE, so XGETBV is allowed
constexpr uint32_t kLeaf1EcxAvx = 1u << 28;
constexpr uint32_t kLeaf1EcxF16c = 1u << 29;

constexpr uint32_t kLeaf7EbxAvx2 = 1u << 5;
constexpr uint32_t kLeaf7EbxAvx512F = 1u << 16;
constexpr uint32_t kLeaf7EbxAvx512Dq = 1u << 17;
constexpr uint32_t kLeaf7EbxAvx512Bw = 1u << 30;
constexpr uint32_t kLeaf7EbxAvx512Vl = 1u << 31;
constexpr uint32_t kLeaf7EcxAvx512Vnni = 1u << 11;
constexpr uint32_t kLeaf7EdxAmxBf16 = 1u << 22;
constexpr uint32_t kLeaf7EdxAmxTile = 1u << 24;
constexpr uint32_t kLeaf7EdxAmxInt8 = 1u << 25;
constexpr uint32_t kLeaf7Sub1EaxAvxVnni = 1u << 4;
constexpr uint32_t kLeaf7Sub1EaxAvx512Bf16 = 1u << 5;

// XCR0 state components the OS must save/restore for each register file.
constexpr uint64_t kXcr0Sse = 1u << 1;
constexpr uint64_t kXcr0Ymm = 1u << 2;
constexpr uint64_t kXcr0Opmask = 1u << 5;
constexpr uint64_t kXcr0ZmmHi256 = 1u << 6;
constexpr uint64_t kXcr0Hi16Zmm = 1u << 7;
constexpr uint64_t kXcr0TileCfg = 1u << 17;
constexpr uint64_t kXcr0TileData = 1u << 18;

// XGETBV with ECX=0 reads XCR0. Inline asm, so this baseline translation unit needs no -mxsave.
uint64_t read_xcr0() {
  uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

bool all_set(uint32_t reg, uint32_t bits) { return (reg & bits) == bits; }

CpuFeatures detect() {
  CpuFeatures f;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const uint32_t ecx1 = ecx;
  if (!(ecx1 & kLeaf1EcxOsxsave)) return f;  // no XSAVE: the OS does not manage YMM/ZMM state

  const uint64_t xcr0 = read_xcr0();
  const bool os_ymm = (xcr0 & (kXcr0Sse | kXcr0Ymm)) == (kXcr0Sse | kXcr0Ymm);
  const uint64_t zmm_state = kXcr0Sse | kXcr0Ymm | kXcr0Opmask | kXcr0ZmmHi256 | kXcr0Hi16Zmm;
  const bool os_zmm = (xcr0 & zmm_state) == zmm_state;
  const bool os_amx = (xcr0 & (kXcr0TileCfg | kXcr0TileData)) == (kXcr0TileCfg | kXcr0TileData);

  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return f;
  const uint32_t max_subleaf7 = eax, ebx7 = ebx, ecx7 = ecx, edx7 = edx;
  uint32_t eax7_1 = 0;
  if (max_subleaf7 >= 1 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) eax7_1 = eax;

  const bool avx = (ecx1 & kLeaf1EcxAvx) && os_ymm;
  f.avx2 = avx && all_set(ecx1, kLeaf1EcxFma | kLeaf1EcxF16c) && (ebx7 & kLeaf7EbxAvx2);
  f.avx512 = f.avx2 && os_zmm &&
             all_set(ebx7, kLeaf7EbxAvx512F | kLeaf7EbxAvx512Bw | kLeaf7EbxAvx512Vl | kLeaf7EbxAvx512Dq);
  f.avx512_vnni = f.avx512 && (ecx7 & kLeaf7EcxAvx512Vnni);
  f.avx512_bf16 = f.avx512 && (eax7_1 & kLeaf7Sub1EaxAvx512Bf16);
  f.avx_vnni = f.avx2 && (eax7_1 & kLeaf7Sub1EaxAvxVnni);
  f.amx_tile = os_amx && (edx7 & kLeaf7EdxAmxTile);
  f.amx_int8 = f.amx_tile && (edx7 & kLeaf7EdxAmxInt8);
  f.amx_bf16 = f.amx_tile && (edx7 & kLeaf7EdxAmxBf16);
  return f;
}

#else

CpuFeatures detect() { return CpuFeatures{}; }

#endif

std::string describe(const CpuFeatures& f) {
  std::string s;
  auto add = [&s](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(f.avx2, "avx2");
  add(f.avx512, "avx512");
  add(f.avx512_vnni, "avx512_vnni");
  add(f.avx512_bf16, "avx512_bf16");
  add(f.avx_vnni, "avx_vnni");
  add(f.amx_tile, "amx_tile");
  add(f.amx_int8, "amx_int8");
  add(f.amx_bf16, "amx_bf16");
  return s.empty() ? std::string("none") : s;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();  // C++11 guarantees one thread-safe initialisation
  return features;
}

bool has_avx2() { return cpu_features().avx2; }
bool has_avx512() { return cpu_features().avx512; }

const char* cpu_features_string() {
  static const std::string text = describe(cpu_features());
  return text.c_str();
}

}  // namespace adainfer
