// Rotary position embedding as ggml computes it: "normal" (adjacent-pair) mode for the llama arch, and NEOX
// (rotate-half) mode for checkpoints laid out as Hugging Face's llama (pairs i and i + n_rot/2).
// Float math throughout, with the angle advanced by repeated multiplication exactly as ggml does, so
// results match ggml-produced goldens bit-for-bit up to the libm's cosf/sinf.
#include <math.h>

#include "core/kernels.h"

namespace adainfer {

namespace {

// Shared by both pairings: `second` is the distance from a pair's first element to its second (1: adjacent,
// n_rot / 2: NEOX), `stride` the distance between consecutive pairs' first elements (2: adjacent, 1: NEOX).
void rope_pairs(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int64_t pos, float freq_base,
                const float* freq_factors, int64_t stride, int64_t second) {
  if (n_rot <= 0) return;
  const float theta_scale = powf(freq_base, -2.0f / static_cast<float>(n_rot));
  const int64_t n_pairs = n_rot / 2;

  // Every head uses the same angles, so compute cos/sin once per pair (in chunks, to keep the tables on
  // the stack for any n_rot), then rotate that chunk of pairs in every head.
  constexpr int64_t kChunk = 64;
  float cos_table[kChunk];
  float sin_table[kChunk];
  float theta = static_cast<float>(pos);  // angle of pair i is pos * theta_scale^i, advanced as ggml does
  for (int64_t p0 = 0; p0 < n_pairs; p0 += kChunk) {
    const int64_t p1 = p0 + kChunk < n_pairs ? p0 + kChunk : n_pairs;
    for (int64_t p = p0; p < p1; ++p) {
      const float ff = freq_factors ? freq_factors[p] : 1.0f;
      const float angle = theta / ff;
      cos_table[p - p0] = cosf(angle);
      sin_table[p - p0] = sinf(angle);
      theta *= theta_scale;
    }
    for (int64_t h = 0; h < n_heads; ++h) {
      float* head = x + h * head_dim;
      for (int64_t p = p0; p < p1; ++p) {
        const float c = cos_table[p - p0];
        const float s = sin_table[p - p0];
        float* a = head + stride * p;
        const float x0 = a[0];
        const float x1 = a[second];
        a[0] = x0 * c - x1 * s;
        a[second] = x0 * s + x1 * c;
      }
    }
  }
}

}  // namespace

// x:            [n_heads][head_dim], rotated in place (one token's q or k)
// n_rot:        leading dims of each head that rotate (even, <= head_dim); the rest stay as they are
// pos:          the token's position
// freq_factors: [n_rot / 2] divisors of each pair's angle (llama3-style rope scaling), or nullptr
void rope_llama(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int64_t pos, float freq_base,
                const float* freq_factors) {
  rope_pairs(x, n_heads, head_dim, n_rot, pos, freq_base, freq_factors, 2, 1);
}

void rope_neox(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int64_t pos, float freq_base,
               const float* freq_factors) {
  rope_pairs(x, n_heads, head_dim, n_rot, pos, freq_base, freq_factors, 1, n_rot / 2);
}

}  // namespace adainfer
