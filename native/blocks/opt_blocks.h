// The OPT architecture (Meta's Open Pre-trained Transformers, Hugging Face `model_type: opt`) on the CPU: its
// weights (views into the mapped safetensors files, checked at load) and OptState, the CPU implementation of the
// block API (blocks.h), so the TypeScript layer loop and the early exit drive OPT as they drive Llama.
//
// The decoder, as transformers' modeling_opt.py computes it (OPTDecoder, OPTDecoderLayer, OPTAttention):
//   embed:      x = project_in(token_embd[id]) + position_embd[pos + 2]        (project_in only when present)
//   attention:  pre-LN:  x += out_proj(Attn(LN_attn(x)))                        (q, k, v, out_proj with biases;
//               post-LN: x = LN_attn(x + out_proj(Attn(x)))                       scores scaled by head_dim^-0.5)
//   mlp:        pre-LN:  x += fc2(ReLU(fc1(LN_ffn(x))))
//               post-LN: x = LN_ffn(x + fc2(ReLU(fc1(x))))
//   head:       logits = token_embd · project_out(LN_final(x))                  (LN_final only with pre-LN;
//                                                                                 the LM head is tied to the embedding)
// The logit lens reads the same head. Names are the runtime's (lib/hf/folder.ts maps Hugging Face's):
// token_embd, position_embd, project_in, project_out, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output,
// ffn_norm, ffn_up (fc1), ffn_down (fc2)}.{weight,bias}, output_norm.{weight,bias}.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blocks/architecture.h"
#include "blocks/block_common.h"
#include "blocks/blocks.h"
#include "blocks/cpu_blocks.h"
#include "core/kernels.h"
#include "core/mapped_file.h"
#include "core/thread_pool.h"

namespace adainfer {

struct OptHParams {
  int64_t n_layer = 0;
  int64_t n_embd = 0;      // hidden_size: the residual stream
  int64_t n_embd_in = 0;   // word_embed_proj_dim: the embedding's width (!= n_embd: project_in / project_out)
  int64_t n_head = 0;
  int64_t head_dim = 0;    // n_embd / n_head
  int64_t n_ff = 0;        // ffn_dim
  int64_t n_vocab = 0;
  int64_t n_pos = 0;       // rows of position_embd (max_position_embeddings + pos_offset)
  int64_t pos_offset = 2;  // position p reads row p + pos_offset
  bool pre_ln = true;      // do_layer_norm_before
  bool final_ln = true;    // the decoder's final_layer_norm exists
  bool bias = true;        // enable_bias
  float ln_eps = 1e-5f;
};

struct OptLayer {
  std::vector<float> attn_norm_w, attn_norm_b;  // self_attn_layer_norm [n_embd]
  WeightView wq, wk, wv, wo;                     // [n_embd] -> [n_embd]
  std::vector<float> bq, bk, bv, bo;             // [n_embd] (empty without biases)
  std::vector<float> ffn_norm_w, ffn_norm_b;     // final_layer_norm of the layer [n_embd]
  WeightView w_up;                               // fc1 [n_embd] -> [n_ff]
  std::vector<float> b_up;                       // [n_ff]
  WeightView w_down;                             // fc2 [n_ff] -> [n_embd]
  std::vector<float> b_down;                     // [n_embd]
};

struct OptWeights : ModelWeights {
  OptHParams hp;
  WeightView tok_embd;     // [n_embd_in] x n_vocab (also the LM head)
  WeightView pos_embd;     // [n_embd] x n_pos
  WeightView project_in;   // [n_embd_in] -> [n_embd], data == nullptr when absent
  WeightView project_out;  // [n_embd] -> [n_embd_in], data == nullptr when absent
  std::vector<float> output_norm_w, output_norm_b;  // empty without final_ln
  std::vector<OptLayer> layers;

  int64_t vocabulary() const override { return hp.n_vocab; }
  bool tied_output() const override { return true; }
  std::vector<WeightView*> layer_matrices() override {
    std::vector<WeightView*> m;
    for (OptLayer& L : layers) m.insert(m.end(), {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_up, &L.w_down});
    return m;
  }
};

// The keys of an OPT model: nLayer, nEmbd, nHead, headDim, nFf, nVocab and opt.{embedDim, nPos, posOffset,
// preLayerNorm, finalLayerNorm, bias, lnEps}. Throws ModelError INVALID_OPTION naming a missing key.
OptHParams opt_hparams(const HParams& p);

// Builds the weights from the tensor table with the same checks as load_llama_weights (every tensor present,
// a type the kernels compute, the shape the hyper-parameters imply, data inside its file and aligned).
// Throws ModelError.
OptWeights load_opt_weights(std::vector<std::shared_ptr<MappedFile>> files, const OptHParams& hp,
                            const std::vector<TensorSpec>& tensors, const KernelTable& kernels);

class OptState final : public CpuBlocks {
 public:
  // n_ctx may not exceed the learned positions (n_pos - pos_offset): INVALID_OPTION.
  OptState(std::shared_ptr<const OptWeights> weights, int64_t n_seq, int64_t n_ctx, int64_t n_batch, int n_threads,
           const KernelTable& kernels, const HostBuffers& io);

  const OptHParams& hp() const { return w_->hp; }

  void embed(int64_t n) override;
  void attention_block(int64_t layer, int64_t n) override;
  void fill_kv(int64_t layer, int64_t n) override;
  void mlp_block(int64_t layer, int64_t n) override;

 private:
  // The head's input for one row, in xb_ (the final LN and project_out applied): n_embd_in floats. The head is the
  // token embedding.
  const float* head_input(int64_t row0, int64_t n) override;
  const WeightView& head_matrix() const override { return w_->tok_embd; }
  // out = LayerNorm(x) for n rows of n_embd.
  void layer_norm_rows(const float* x, const std::vector<float>& w, const std::vector<float>& b, float* out, int64_t n);
  // y[t] += bias for n rows of width `width` (no-op without biases).
  void add_bias(float* y, const std::vector<float>& bias, int64_t n, int64_t width) {
    if (!bias.empty()) add_rows(y, bias.data(), n, width);
  }
  // The attention block's input: LN_attn(hidden) (pre-LN) or hidden itself (post-LN), in xb_.
  const float* attn_input(int64_t layer, int64_t n);
  void write_kv(int64_t layer, const float* x, int64_t n);

  std::shared_ptr<const OptWeights> w_;
  std::vector<float> xb_;       // [n_batch][max(n_embd, n_embd_in)]
  std::vector<float> emb_;      // [n_batch][n_embd_in] embedding rows before project_in
  std::vector<float> q_, k_new_, v_new_, att_;  // [n_batch][n_embd]
  std::vector<float> out_;      // [n_batch][n_embd]
  std::vector<float> up_;       // [n_batch][n_ff]
};

}  // namespace adainfer
