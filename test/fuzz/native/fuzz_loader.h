// The native loader fuzz target: one input = the bytes of a GGUF file.
//   bytes -> memfd -> MappedFile -> tensor table (gguf_table.h) -> load_llama_weights -> a short forward pass
// Any outcome but a crash, a sanitizer report or a hang is fine; a throw must be a ModelError or another
// std::exception the addon turns into a typed JS error (native/addon/errors.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace adafuzz {

enum class Stage {
  kNotGguf,       // the header did not parse (the TypeScript reader would refuse it too)
  kNotLlama,      // parsed, but no llama hyper-parameters
  kMisaligned,    // tensor data not aligned to its element size: LlamaModel.load refuses it (see below)
  kMapFailed,     // MappedFile threw (e.g. empty file)
  kRejected,      // load_llama_weights threw ModelError (the expected outcome for a broken table)
  kLoaded,        // weights loaded; the forward pass ran
  kForwardError,  // weights loaded, LlamaState or a block threw a std::exception
};

struct Outcome {
  Stage stage = Stage::kNotGguf;
  std::string code;     // ModelError code when stage == kRejected
  std::string message;  // what() of the exception, or the header parse failure
};

const char* stage_name(Stage s);

// Tensor data whose file offset is not a multiple of its element alignment never reaches the native loader:
// LlamaModel.load (lib/model/llama.ts) refuses it, because load_llama_weights does not check it and the
// kernels would then load misaligned floats (undefined behaviour, reported by UBSan). Set
// ADAINFER_FUZZ_MISALIGNED=1 to pass such tables through anyway (to check a native fix).
int64_t element_alignment(int32_t type);

// Runs one input through the loader. Never throws: every exception is reported in the outcome.
Outcome run_loader_input(const uint8_t* data, size_t size);

}  // namespace adafuzz
