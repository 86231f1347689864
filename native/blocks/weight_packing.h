// Layer matrices in the CPU kernels' packed layout (KernelTable::pack_rows): a copy of each matrix whose type the
// kernel table packs, made once at load, which every matmul of the model then reads instead of the GGUF rows.
//
// Why: the AVX2 Q4_0 kernel puts 8 weight rows in the vector lanes (rows8_dot). From GGUF rows it must transpose each
// block of the 8 rows and gather their 8 scales first, and it reads 8 streams at once; packed, it loads the block
// as it is and reads one stream. llama.cpp repacks Q4_0 the same way for its AVX2 kernels. The packed copy has the
// size of the original, whose pages are then dropped from the process (MappedFile::release), so resident memory
// stays one copy of the weights. The LM head and the embedding stay GGUF rows: they are also read row by row (the
// lens's candidate rows, the embedding lookup).
#pragma once
#include "blocks/architecture.h"
#include "core/kernels.h"

namespace adainfer {

// Packs every layer matrix of `weights` whose type `kernels` packs, unless ADAINFER_PACK=0 (to measure one against
// the other). Call once, before any blocks use the weights; for the CPU backend only (the CUDA upload reads GGUF rows).
// Returns the bytes packed.
uint64_t pack_layer_matrices(ModelWeights& weights, const KernelTable& kernels);

}  // namespace adainfer
