// What the CPU (and the OS, for the wide register state) supports, detected once with CPUID/XGETBV.
// Kernel selection reads has_avx2 / has_avx512; the other flags are reported for later kernels.
// On non-x86 builds every flag is false.
#pragma once

namespace adainfer {

struct CpuFeatures {
  // Usable = the instructions exist AND the OS saves the register state they need.
  bool avx2 = false;    // AVX2 + FMA + F16C, YMM state enabled
  bool avx512 = false;  // AVX-512 F + BW + VL + DQ, opmask/ZMM state enabled

  // Reported only (not used by any kernel yet). Each already includes the OS-state check.
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool avx_vnni = false;
  bool amx_tile = false;  // the OS must also grant AMX state per process (Linux arch_prctl) before use
  bool amx_int8 = false;
  bool amx_bf16 = false;
};

// Detected on first call, then cached. Thread-safe.
const CpuFeatures& cpu_features();
// Out of line on purpose: no inline code in headers that the -mavx512f translation units also compile
// (the linker could keep their copy for everyone).
bool has_avx2();
bool has_avx512();

// Short space-separated list of the detected features, e.g. "avx2 avx512 avx512_vnni", or "none".
const char* cpu_features_string();

}  // namespace adainfer
