#include "blocks/architecture.h"

#include <cmath>

namespace adainfer {

// THE list of architectures, one line each; native/architectures/<name>.cpp defines arch_<name>.
#define ADAINFER_ARCHITECTURES(X) \
  X(llama)                        \
  X(opt)                          \
  X(qwen2)                        \
  X(qwen3)

#define ADAINFER_DECLARE(name) extern const Architecture arch_##name;
ADAINFER_ARCHITECTURES(ADAINFER_DECLARE)
#undef ADAINFER_DECLARE

namespace {

#define ADAINFER_ENTRY(name) &arch_##name,
const Architecture* const kArchitectures[] = {ADAINFER_ARCHITECTURES(ADAINFER_ENTRY)};
#undef ADAINFER_ENTRY

[[noreturn]] void bad_key(const std::string& key, const char* what) {
  throw ModelError("INVALID_OPTION", "hparams." + key + " must be " + what);
}

}  // namespace

const Architecture* find_architecture(const std::string& name) {
  for (const Architecture* a : kArchitectures)
    if (name == a->name) return a;
  return nullptr;
}

std::string architecture_names() {
  std::string s;
  for (const Architecture* a : kArchitectures) s += (s.empty() ? "" : ", ") + std::string(a->name);
  return s;
}

int64_t HParams::integer(const std::string& key) const {
  auto it = numbers.find(key);
  if (it == numbers.end()) bad_key(key, "a number");
  const double d = it->second;
  if (!(d >= -9007199254740991.0 && d <= 9007199254740991.0) || d != std::floor(d)) bad_key(key, "an integer");
  return static_cast<int64_t>(d);
}

float HParams::real(const std::string& key) const {
  auto it = numbers.find(key);
  if (it == numbers.end()) bad_key(key, "a number");
  return static_cast<float>(it->second);
}

bool HParams::flag(const std::string& key) const {
  auto it = flags.find(key);
  if (it == flags.end()) bad_key(key, "a boolean");
  return it->second;
}

bool HParams::flag(const std::string& key, bool fallback) const {
  auto it = flags.find(key);
  return it == flags.end() ? fallback : it->second;
}

}  // namespace adainfer
