// The block API that the TypeScript layer loop drives, whatever computes it:
//   embed -> for each layer l: attention_block(l), mlp_block(l) [-> exit?] -> head / logit_lens
// One implementation per backend and block kind: on the CPU, classes on CpuBlocks (cpu_blocks.h: LlamaState for the
// Llama block of llama / qwen2 / qwen3, OptState), made by the architecture registry (architecture.h); on CUDA,
// CudaLlamaBlocks (native/cuda/, when built with CUDA). The exit policy lives in TypeScript; nothing here decides.
//
// "Rows" are the tokens of the current batch. The residual stream of the rows (`hidden`, [n_batch][n_embd])
// is owned by the backend — host memory on the CPU, device memory on a GPU — so activations stay where they are
// computed between layers; TypeScript reaches it only through read_hidden / write_hidden / move_hidden (stashing
// an exited row, compacting the batch). Small per-call inputs and outputs (token ids, row positions, logits,
// logit-lens features) are host buffers owned by JS (HostBuffers): no copy across the N-API boundary.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace adainfer {

// An error about the model's content or an option; `code` is one of the runtime's error codes
// (MISSING_TENSOR, SHAPE_MISMATCH, UNSUPPORTED_TENSOR_TYPE, TENSOR_OUT_OF_BOUNDS, INVALID_OPTION,
// BACKEND_UNAVAILABLE, ...) so JS can type it.
struct ModelError : std::runtime_error {
  std::string code;
  ModelError(std::string c, const std::string& message) : std::runtime_error(message), code(std::move(c)) {}
};

// Host buffers shared with JS (ArrayBuffers the addon allocates). Sizes are fixed when the context is made.
// The pointers are valid during a block call only: JS can detach an ArrayBuffer between two calls (its memory
// then belongs to whoever received it), so the addon checks every buffer is still attached before each call
// (JsContext::blocks, error BUFFER_DETACHED), and a backend finishes every access to them before the call
// returns (a GPU waits for its device-to-host copies into them; it never keeps one of them queued).
struct HostBuffers {
  int32_t* tokens = nullptr;   // [n_batch]  token id of each row, read by embed()
  int32_t* row_seq = nullptr;  // [n_batch]  sequence (KV cache slot) of each row
  int32_t* row_pos = nullptr;  // [n_batch]  position of each row in its sequence
  float* logits = nullptr;     // [n_vocab]  head output of one row (see sync_logits)
  int32_t* lens_candidates = nullptr;  // [lens_max_candidates] token ids for logit_lens_candidates
  int64_t lens_max_candidates = 0;
  int32_t* lens_ids = nullptr;     // [lens_k]  top-k token ids of the last logit-lens call
  float* lens_probs = nullptr;     // [lens_k]  their probabilities
  float* lens_features = nullptr;  // [4]       p1, p2, p1 - p2, entropy (nats)
  int64_t lens_k = 0;
  float* exit_stats = nullptr;  // [kExitStats] what exit_statistics() read of one row (see there)
};

// exit_statistics() writes io.exit_stats[0 .. kExitStats): the attention entropy and self-weight, then the hidden
// state's change.
constexpr int64_t kExitStats = 4;

// ---- the checks every backend makes on what JS passes, before any memory is touched (std::out_of_range) ----
inline void check_layer(int64_t layer, int64_t n_layer) {
  if (layer < 0 || layer >= n_layer)
    throw std::out_of_range("layer " + std::to_string(layer) + " out of range [0, " + std::to_string(n_layer) + ")");
}
// A row count of a block call: [1, n_batch].
inline void check_rows(int64_t n, int64_t n_batch) {
  if (n <= 0 || n > n_batch)
    throw std::out_of_range("row count " + std::to_string(n) + " out of range [1, " + std::to_string(n_batch) + "]");
}
inline void check_row(int64_t row, int64_t n_batch) {
  if (row < 0 || row >= n_batch)
    throw std::out_of_range("row " + std::to_string(row) + " out of range [0, " + std::to_string(n_batch) + ")");
}
inline void check_top_k(int64_t k, const HostBuffers& io) {
  if (k < 1 || k > io.lens_k)
    throw std::out_of_range("top-k " + std::to_string(k) + " out of range [1, " + std::to_string(io.lens_k) + "]");
}
// Every row's sequence and position (row_seq / row_pos of rows [0, n)).
inline void check_row_positions(const HostBuffers& io, int64_t n, int64_t n_seq, int64_t n_ctx) {
  for (int64_t t = 0; t < n; ++t) {
    const int64_t seq = io.row_seq[t], pos = io.row_pos[t];
    if (seq < 0 || seq >= n_seq)
      throw std::out_of_range("row " + std::to_string(t) + ": sequence " + std::to_string(seq) + " out of range [0, " +
                              std::to_string(n_seq) + ")");
    if (pos < 0 || pos >= n_ctx)
      throw std::out_of_range("row " + std::to_string(t) + ": position " + std::to_string(pos) +
                              " exceeds the context of " + std::to_string(n_ctx));
  }
}
// The candidate set of a logit_lens_candidates call: m in [1, lens_max_candidates], ids in the vocabulary.
inline void check_candidates(const HostBuffers& io, int64_t m, int64_t n_vocab) {
  if (m < 1 || m > io.lens_max_candidates)
    throw std::out_of_range("candidate count " + std::to_string(m) + " out of range [1, " +
                            std::to_string(io.lens_max_candidates) + "]");
  for (int64_t i = 0; i < m; ++i) {
    const int32_t id = io.lens_candidates[i];
    if (id < 0 || id >= n_vocab)
      throw std::out_of_range("candidate token id " + std::to_string(id) + " out of range [0, " +
                              std::to_string(n_vocab) + ")");
  }
}

class Blocks {
 public:
  virtual ~Blocks() = default;

  virtual const char* backend() const = 0;  // "cpu", "cuda"
  virtual int64_t n_embd() const = 0;
  virtual int64_t n_batch() const = 0;

  // hidden[t] = token_embd[tokens[t]] for t < n. Throws std::out_of_range on a bad id.
  virtual void embed(int64_t n) = 0;
  // hidden[t] += Attention_l(Norm(hidden[t])) for rows t < n. Row t is position row_pos[t] of sequence
  // row_seq[t]: its K/V go into that sequence's cache of layer l, and it attends to positions 0..row_pos[t] of
  // it (earlier positions must be in the cache already, or be earlier rows of this call).
  virtual void attention_block(int64_t layer, int64_t n) = 0;
  // Only the K/V of layer l for rows t < n, from their current hidden state (no attention, no residual):
  // fills the cache of layers an early exit skipped (CALM's state propagation).
  virtual void fill_kv(int64_t layer, int64_t n) = 0;
  // hidden[t] += MLP_l(Norm(hidden[t])).
  virtual void mlp_block(int64_t layer, int64_t n) = 0;
  // logits = output(Norm_final(hidden[row])), written to the host buffer.
  virtual void head(int64_t row) = 0;
  // The head of rows [row0, row0 + n) into dst ([n][n_vocab] floats, caller-owned): one pass over the head matrix
  // for all rows (the verification step of speculative decoding reads the logits at every drafted position).
  virtual void head_rows(int64_t row0, int64_t n, float* dst) = 0;
  // The head of one row, then softmax statistics into the lens buffers: top-k ids and probs, p1, p2, gap,
  // entropy. The logits themselves stay with the backend until sync_logits() (a GPU copies k ids, k probs and
  // 4 features per check, not the vocabulary).
  virtual void logit_lens(int64_t row, int64_t k) = 0;
  // The same statistics over a candidate set only (lens_candidates[0..m)): m rows of the head instead of
  // the whole vocabulary, softmax renormalised over the candidates. Logits are meaningful at candidates only.
  virtual void logit_lens_candidates(int64_t row, int64_t m, int64_t k) = 0;
  // Copies the logits of the last logit_lens / logit_lens_candidates call to the host buffer (a no-op where
  // they are computed there).
  virtual void sync_logits() = 0;

  // Exit features beyond the lens (the policy's features ask for them; TypeScript reads io.exit_stats). A backend that
  // does not compute them says so here, and the methods below throw BACKEND_UNAVAILABLE there.
  virtual bool computes_exit_statistics() const { return false; }
  // On: every attention_block from now on keeps, for the last row of each run of rows (a sequence's decision row),
  // the statistics of its attention (the kernels compute them beside the softmax only then). Off by default: they
  // cost a little on every layer.
  virtual void set_attention_statistics(bool on) { (void)on; throw unavailable(); }
  // Of batch row `row`, after a layer ran on it:
  //   exit_stats[0] = mean over heads of the entropy of its attention in the last attention_block, divided by
  //                   log(positions attended) (0 where it attended one position); NaN where that block kept none
  //                   for this row (statistics off, or not the last row of its run);
  //   exit_stats[1] = mean over heads of the attention weight on its own position (NaN as above);
  //   exit_stats[2] = cosine between its hidden state and its sequence's hidden state at the previous call;
  //   exit_stats[3] = ||h - h_prev|| / ||h_prev|| for the same two;
  // then keeps the row's hidden state as its sequence's (row_seq[row]) previous one. first_check (a token's first
  // call): nothing to compare with, exit_stats[2] = 1 and exit_stats[3] = 0.
  virtual void exit_statistics(int64_t row, bool first_check) { (void)row, (void)first_check; throw unavailable(); }

  // The residual stream: rows [row0, row0 + n) to / from host floats ([n][n_embd]), and a move of n rows
  // from src to dst inside it (ranges may overlap, as memmove).
  virtual void read_hidden(int64_t row0, int64_t n, float* dst) = 0;
  virtual void write_hidden(int64_t row0, int64_t n, const float* src) = 0;
  virtual void move_hidden(int64_t dst_row, int64_t src_row, int64_t n) = 0;

 protected:
  // Checks [row0, row0 + n) is inside the batch (n may be 0).
  void check_row_range(int64_t row0, int64_t n) const {
    if (row0 < 0 || n < 0 || row0 > n_batch() || n > n_batch() - row0)
      throw std::out_of_range("rows [" + std::to_string(row0) + ", " + std::to_string(row0 + n) +
                              ") out of range [0, " + std::to_string(n_batch()) + ")");
  }

 private:
  ModelError unavailable() const {
    return ModelError("BACKEND_UNAVAILABLE", std::string("the ") + backend() +
                                                 " backend does not compute the exit statistics (attention, hidden-state change)");
  }
};

}  // namespace adainfer
