// A minimal, bounds-checked GGUF header reader for the native fuzz harness and the loader tests only.
//
// The runtime has no native GGUF parser: lib/gguf/reader.ts parses the header and hands the native loader
// (load_llama_weights) a tensor table and hyper-parameters, which the loader checks against the mapped file
// itself. To drive that loader from raw fuzzed bytes, the harness needs the same table the TypeScript side
// would build, so this reader mirrors lib/gguf/reader.ts and llamaConfigFromGGUF (lib/model/llama.ts) — but
// deliberately NOT their placement checks (alignment, overlap, data inside the file): the native loader must
// survive tables that lie, so the harness passes offsets through unchecked (dataOffset + offset, wrapping).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "blocks/llama_blocks.h"

namespace adafuzz {

struct GgufTable {
  uint32_t version = 0;
  uint64_t alignment = 32;
  uint64_t header_end = 0;
  uint64_t data_offset = 0;  // header_end rounded up to alignment (may exceed the file size)
  std::map<std::string, int64_t> ints;     // every integer-typed scalar (u64 above INT64_MAX is dropped)
  std::map<std::string, double> floats;    // FLOAT32 / FLOAT64 scalars
  std::map<std::string, std::string> strings;
  std::map<std::string, uint64_t> array_lengths;  // top-level arrays: element count
  std::vector<adainfer::TensorSpec> tensors;      // offsets already absolute (data_offset + offset, mod 2^64)
};

// Parses the header in [data, data + size). Returns false (with `why`) on anything malformed; never reads
// outside the buffer, never allocates more than the input justifies.
bool parse_gguf_table(const uint8_t* data, size_t size, GgufTable* out, std::string* why);

// The hyper-parameters lib/model/llama.ts llamaConfigFromGGUF would pass to the native Model (same keys,
// same defaults) for the architectures on the Llama block (llama, qwen2, qwen3; with what qwen2 / qwen3 fix:
// NEOX RoPE, Q/K/V biases, Q/K norms). Returns false when the TypeScript side would have refused the file before the
// native call (another architecture, a required key missing).
bool llama_hparams_from_table(const GgufTable& t, adainfer::LlamaHParams* hp, std::string* why);

}  // namespace adafuzz
