// JS class `Context`: the KV caches, residual stream and scratch of one or more sequences over a Model, on the
// Model's architecture and backend (Blocks: the architecture's CPU blocks, or the CUDA blocks). The blocks are synchronous; the TypeScript side
// calls them from a worker thread, never the main loop.
#pragma once
#include <napi.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "blocks/llama_blocks.h"

namespace adainfer {

class JsContext : public Napi::ObjectWrap<JsContext> {
 public:
  static Napi::Function Init(Napi::Env env);
  // new Context(model, { nCtx, nSeq?, nBatch, threads, lensK, lensMaxCandidates })
  explicit JsContext(const Napi::CallbackInfo& info);

 private:
  // The blocks, for a call that may touch the host buffers: refuses a disposed context (DISPOSED) and one whose
  // buffers JS has detached (BUFFER_DETACHED). Every block method starts with it.
  Blocks& blocks(Napi::Env env);
  Napi::Value Embed(const Napi::CallbackInfo& info);           // embed(n)
  Napi::Value Attention(const Napi::CallbackInfo& info);       // attention(layer, n)
  Napi::Value FillKv(const Napi::CallbackInfo& info);          // fillKv(layer, n)
  Napi::Value Mlp(const Napi::CallbackInfo& info);             // mlp(layer, n)
  Napi::Value Head(const Napi::CallbackInfo& info);            // head(row)
  Napi::Value HeadRows(const Napi::CallbackInfo& info);        // headRows(row0, n, dst): [n][nVocab] logits
  Napi::Value LogitLens(const Napi::CallbackInfo& info);       // logitLens(row, k)
  Napi::Value LogitLensCandidates(const Napi::CallbackInfo& info);  // logitLensCandidates(row, m, k)
  Napi::Value SyncLogits(const Napi::CallbackInfo& info);      // syncLogits()
  Napi::Value SetAttentionStatistics(const Napi::CallbackInfo& info);  // setAttentionStatistics(on)
  Napi::Value ExitStatistics(const Napi::CallbackInfo& info);  // exitStatistics(row, firstCheck) -> exitStats
  Napi::Value ReadHidden(const Napi::CallbackInfo& info);      // readHidden(row0, n, dst)
  Napi::Value WriteHidden(const Napi::CallbackInfo& info);     // writeHidden(row0, n, src)
  Napi::Value MoveHidden(const Napi::CallbackInfo& info);      // moveHidden(dstRow, srcRow, n)
  Napi::Value Noop(const Napi::CallbackInfo& info);            // noop(): measures the N-API call cost
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  std::unique_ptr<Blocks> blocks_;
  int64_t n_vocab_ = 0;  // floats of one row of logits (headRows' rows)
  // The JS ArrayBuffers behind the zero-copy views (HostBuffers points into them), by property name. Held so
  // they outlive every native use; checked before every call, because JS can still detach one
  // (structuredClone(b, { transfer: [b] }), b.transfer()): its memory then belongs to another ArrayBuffer and
  // may be freed with it, so a block must not write there.
  std::vector<std::pair<std::string, Napi::Reference<Napi::ArrayBuffer>>> buffers_;
};

}  // namespace adainfer
