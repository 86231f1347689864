#include "gguf_table.h"

#include <cstring>

namespace adafuzz {

namespace {

enum : uint32_t {
  T_UINT8 = 0,
  T_INT8 = 1,
  T_UINT16 = 2,
  T_INT16 = 3,
  T_UINT32 = 4,
  T_INT32 = 5,
  T_FLOAT32 = 6,
  T_BOOL = 7,
  T_STRING = 8,
  T_ARRAY = 9,
  T_UINT64 = 10,
  T_INT64 = 11,
  T_FLOAT64 = 12,
};
constexpr int kMaxArrayDepth = 4;  // GGUF_MAX_ARRAY_DEPTH in lib/gguf/reader.ts
constexpr uint32_t kMaxDims = 4;

// Every read checks the remaining length first; a failed read latches `ok = false` and returns zeros.
struct Reader {
  const uint8_t* p;
  size_t size;
  size_t pos = 0;
  bool ok = true;
  std::string why;

  bool need(uint64_t n, const char* what) {
    if (!ok) return false;
    if (n > size - pos) {
      ok = false;
      why = std::string("truncated at ") + what;
      return false;
    }
    return true;
  }
  template <typename T>
  T scalar(const char* what) {
    T v{};
    if (!need(sizeof(T), what)) return v;
    std::memcpy(&v, p + pos, sizeof(T));  // GGUF is little-endian, as is every host this builds on
    pos += sizeof(T);
    return v;
  }
  uint32_t u32(const char* what) { return scalar<uint32_t>(what); }
  uint64_t u64(const char* what) { return scalar<uint64_t>(what); }
  // A count of items of at least min_each bytes: refused when the rest of the input cannot hold them.
  uint64_t count(const char* what, uint64_t min_each) {
    const uint64_t n = u64(what);
    if (!ok) return 0;
    if (min_each > 0 && n > (size - pos) / min_each) {
      ok = false;
      why = std::string(what) + " larger than the input";
      return 0;
    }
    return n;
  }
  std::string str(const char* what) {
    const uint64_t n = count(what, 1);
    if (!need(n, what)) return std::string();
    std::string s(reinterpret_cast<const char*>(p + pos), static_cast<size_t>(n));
    pos += static_cast<size_t>(n);
    return s;
  }
  void skip(uint64_t n, const char* what) {
    if (need(n, what)) pos += static_cast<size_t>(n);
  }
};

uint64_t scalar_size(uint32_t type) {
  switch (type) {
    case T_UINT8:
    case T_INT8:
    case T_BOOL:
      return 1;
    case T_UINT16:
    case T_INT16:
      return 2;
    case T_UINT32:
    case T_INT32:
    case T_FLOAT32:
      return 4;
    case T_UINT64:
    case T_INT64:
    case T_FLOAT64:
      return 8;
    default:
      return 0;
  }
}

void skip_array(Reader& r, int depth) {
  if (depth > kMaxArrayDepth) {
    r.ok = false;
    r.why = "arrays nested too deep";
    return;
  }
  const uint32_t type = r.u32("array type");
  if (!r.ok) return;
  if (type == T_STRING) {
    const uint64_t n = r.count("array length", 8);
    for (uint64_t i = 0; i < n && r.ok; ++i) r.skip(r.count("string length", 1), "string");
  } else if (type == T_ARRAY) {
    const uint64_t n = r.count("array length", 12);
    for (uint64_t i = 0; i < n && r.ok; ++i) skip_array(r, depth + 1);
  } else if (const uint64_t es = scalar_size(type)) {
    const uint64_t n = r.count("array length", es);
    r.skip(n * es, "array data");  // n * es <= remaining, so no overflow
  } else {
    r.ok = false;
    r.why = "unknown array element type";
  }
}

}  // namespace

bool parse_gguf_table(const uint8_t* data, size_t size, GgufTable* out, std::string* why) {
  Reader r{data, size};
  auto fail = [&](const std::string& w) {
    if (why) *why = w;
    return false;
  };
  if (size < 4 || std::memcmp(data, "GGUF", 4) != 0) return fail("bad magic");
  r.pos = 4;
  out->version = r.u32("version");
  if (!r.ok) return fail(r.why);
  if (out->version != 2 && out->version != 3) return fail("unsupported version");
  const uint64_t n_tensors = r.count("tensor count", 8 + 4 + 4 + 8);
  const uint64_t n_kv = r.count("kv count", 8 + 4 + 1);
  if (!r.ok) return fail(r.why);

  bool alignment_seen = false;
  for (uint64_t k = 0; k < n_kv && r.ok; ++k) {
    std::string key = r.str("key");
    const uint32_t type = r.u32("value type");
    if (!r.ok) break;
    switch (type) {
      case T_UINT8: out->ints[key] = r.scalar<uint8_t>("u8"); break;
      case T_INT8: out->ints[key] = r.scalar<int8_t>("i8"); break;
      case T_UINT16: out->ints[key] = r.scalar<uint16_t>("u16"); break;
      case T_INT16: out->ints[key] = r.scalar<int16_t>("i16"); break;
      case T_UINT32: {
        const uint32_t v = r.u32("u32");
        out->ints[key] = v;
        if (key == "general.alignment") {
          if (v == 0 || (v & (v - 1)) != 0) {
            r.ok = false;
            r.why = "alignment not a power of two";
          }
          out->alignment = v;
          alignment_seen = true;
        }
        break;
      }
      case T_INT32: out->ints[key] = r.scalar<int32_t>("i32"); break;
      case T_UINT64: {
        const uint64_t v = r.u64("u64");
        if (v <= static_cast<uint64_t>(INT64_MAX)) out->ints[key] = static_cast<int64_t>(v);
        break;
      }
      case T_INT64: out->ints[key] = r.scalar<int64_t>("i64"); break;
      case T_FLOAT32: out->floats[key] = r.scalar<float>("f32"); break;
      case T_FLOAT64: out->floats[key] = r.scalar<double>("f64"); break;
      case T_BOOL: out->ints[key] = r.scalar<uint8_t>("bool") != 0; break;
      case T_STRING: out->strings[key] = r.str("string value"); break;
      case T_ARRAY: {
        // Peek at the element type and count for array_lengths, then skip the elements.
        const size_t at = r.pos;
        const uint32_t et = r.u32("array type");
        const uint64_t n = r.u64("array length");
        if (!r.ok) break;
        (void)et;
        r.pos = at;
        skip_array(r, 1);
        if (r.ok) out->array_lengths[key] = n;
        break;
      }
      default:
        r.ok = false;
        r.why = "unknown value type";
    }
    if (key == "general.alignment" && type != T_UINT32 && r.ok) {
      r.ok = false;
      r.why = "general.alignment is not a UINT32";
    }
  }
  if (!r.ok) return fail(r.why);
  (void)alignment_seen;

  out->tensors.reserve(static_cast<size_t>(n_tensors));
  std::vector<uint64_t> relative;
  for (uint64_t t = 0; t < n_tensors && r.ok; ++t) {
    adainfer::TensorSpec s;
    s.name = r.str("tensor name");
    const uint32_t n_dims = r.u32("n_dims");
    if (!r.ok) break;
    if (n_dims > kMaxDims) return fail("too many dims");
    for (uint32_t d = 0; d < n_dims; ++d) s.dims.push_back(static_cast<int64_t>(r.u64("dim")));  // may be < 0
    s.type = static_cast<int32_t>(r.u32("type"));
    relative.push_back(r.u64("offset"));
    out->tensors.push_back(std::move(s));
  }
  if (!r.ok) return fail(r.why);
  out->header_end = r.pos;
  const uint64_t a = out->alignment;
  out->data_offset = (out->header_end + a - 1) / a * a;  // header_end <= size and a <= 2^31: no overflow
  for (size_t i = 0; i < out->tensors.size(); ++i) out->tensors[i].offset = out->data_offset + relative[i];
  return true;
}

bool llama_hparams_from_table(const GgufTable& t, adainfer::LlamaHParams* hp, std::string* why) {
  auto fail = [&](const std::string& w) {
    if (why) *why = w;
    return false;
  };
  // The architectures on the Llama block (lib/model/architectures/{llama,qwen2,qwen3}.ts, native/architectures/):
  // their keys under "<arch>.", and what qwen2 / qwen3 fix (native/architectures/qwen2.cpp, qwen3.cpp).
  auto arch = t.strings.find("general.architecture");
  if (arch == t.strings.end() || (arch->second != "llama" && arch->second != "qwen2" && arch->second != "qwen3"))
    return fail("not a model on the Llama block (llama, qwen2, qwen3)");
  const std::string prefix = arch->second + ".";
  hp->rope_neox = arch->second != "llama";
  hp->qkv_bias = arch->second == "qwen2";
  hp->qk_norm = arch->second == "qwen3";
  auto get = [&](const char* key, int64_t* v) {
    auto it = t.ints.find(prefix + key);
    if (it == t.ints.end()) return false;
    *v = it->second;
    return true;
  };
  auto need = [&](const char* key, int64_t* v) { return get(key, v); };
  auto num = [&](const char* key, float fallback) {
    const std::string k = prefix + key;
    if (auto f = t.floats.find(k); f != t.floats.end()) return static_cast<float>(f->second);
    if (auto i = t.ints.find(k); i != t.ints.end()) return static_cast<float>(i->second);
    return fallback;
  };
  if (!need("embedding_length", &hp->n_embd) || !need("attention.head_count", &hp->n_head) ||
      !need("block_count", &hp->n_layer) || !need("feed_forward_length", &hp->n_ff))
    return fail("a required " + prefix + "* key is missing");
  int64_t ctx = 0;
  if (!need("context_length", &ctx)) return fail(prefix + "context_length is missing");
  hp->head_dim = hp->n_head > 0 ? hp->n_embd / hp->n_head : 0;
  get("attention.key_length", &hp->head_dim);
  hp->n_kv_head = hp->n_head;
  get("attention.head_count_kv", &hp->n_kv_head);
  hp->n_rot = hp->head_dim;
  get("rope.dimension_count", &hp->n_rot);
  hp->n_vocab = 0;
  if (auto tok = t.array_lengths.find("tokenizer.ggml.tokens"); tok != t.array_lengths.end()) {
    hp->n_vocab = static_cast<int64_t>(tok->second);
  } else {
    for (const auto& s : t.tensors)
      if (s.name == "token_embd.weight" && s.dims.size() > 1) hp->n_vocab = s.dims[1];
  }
  get("vocab_size", &hp->n_vocab);
  hp->rms_eps = num("attention.layer_norm_rms_epsilon", 1e-5f);
  hp->rope_base = num("rope.freq_base", 10000.f);
  return true;
}

}  // namespace adafuzz
