// Chooses the kernel table for this CPU. Compiled for baseline x86-64: it must run before we know
// whether the wider instruction sets exist.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/cpu_features.h"
#include "core/kernels.h"

namespace adainfer {

const KernelTable* kernels_by_name(const char* name) {
  if (!name) return nullptr;
  if (std::strcmp(name, "generic") == 0) return &kernels_generic();
  // kernels_avx2()/kernels_avx512() are nullptr when not compiled in (non-x86).
  if (std::strcmp(name, "avx2") == 0) return has_avx2() ? kernels_avx2() : nullptr;
  if (std::strcmp(name, "avx512") == 0) return has_avx512() ? kernels_avx512() : nullptr;
  return nullptr;
}

namespace {

const KernelTable& best_supported() {
  if (const KernelTable* t = kernels_by_name("avx512")) return *t;
  if (const KernelTable* t = kernels_by_name("avx2")) return *t;
  return kernels_generic();
}

const KernelTable& choose() {
  const KernelTable& best = best_supported();
  const char* requested = std::getenv("ADAINFER_ISA");
  if (!requested || !*requested) return best;
  if (const KernelTable* t = kernels_by_name(requested)) return *t;
  // An unknown or unsupported name must not stop the program: say so once and use the best table.
  std::fprintf(stderr, "adainfer: ADAINFER_ISA=%s is unknown or not supported by this CPU; using %s\n",
               requested, best.name);
  return best;
}

}  // namespace

const KernelTable& kernels_best() {
  static const KernelTable& chosen = choose();  // decided once, thread-safe
  return chosen;
}

}  // namespace adainfer
