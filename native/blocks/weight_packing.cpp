#include "blocks/weight_packing.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace adainfer {

namespace {

bool packing_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("ADAINFER_PACK");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return enabled;
}

}  // namespace

uint64_t pack_layer_matrices(ModelWeights& weights, const KernelTable& kernels) {
  if (!packing_enabled()) return 0;
  uint64_t packed_bytes = 0;
  for (WeightView* w : weights.layer_matrices()) {
    if (w->packed || w->type < 0 || w->type >= KernelTable::kMaxType || !kernels.pack_rows[w->type]) continue;
    const uint64_t bytes = static_cast<uint64_t>(w->row_bytes) * static_cast<uint64_t>(w->ne1);
    // 64-byte aligned, so that a group's blocks start where the kernels' loads expect (aligned_alloc wants a multiple)
    void* copy = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!copy) throw std::bad_alloc();
    std::shared_ptr<uint8_t> storage(static_cast<uint8_t*>(copy), [](uint8_t* p) { std::free(p); });
    kernels.pack_rows[w->type](w->data, storage.get(), w->ne1, w->ne0);
    for (const auto& file : weights.files) file->release(w->data, bytes);
    w->data = storage.get();
    w->packed = true;
    weights.packed.push_back(std::move(storage));
    packed_bytes += bytes;
  }
  return packed_bytes;
}

}  // namespace adainfer
