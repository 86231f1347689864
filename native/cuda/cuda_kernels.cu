// CUDA kernels of the llama blocks (declared in cuda_kernels.h). Every weight type is read through one device
// function, deq16<T>(row, chunk): 16 consecutive elements of a row as floats, computed exactly as the CPU's
// dequant_row does (products rounded as ggml's reference, no FMA contraction), so a dequantized weight is
// bit-identical on both backends. Each GGML block is a whole number of 16-element chunks.
#include "cuda/cuda_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <cfloat>
#include <type_traits>
#include <stdexcept>
#include <string>

#include "core/ggml_types.h"

namespace adainfer {
namespace cuda {

namespace {

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA kernel ") + what + ": " + cudaGetErrorString(e));
}

constexpr int kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ4_K = 12, kQ5_K = 13,
              kQ6_K = 14, kBF16 = 30;

__device__ __forceinline__ float h2f(const uint8_t* p) {
  const uint16_t h = static_cast<uint16_t>(p[0] | (p[1] << 8));
  return __half2float(__ushort_as_half(h));
}
__device__ __forceinline__ float bf2f(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }
// d * q and d * q + m / - m with each operation rounded (the CPU reference has no FMA contraction).
__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float mad(float a, float b, float c) { return __fadd_rn(__fmul_rn(a, b), c); }
__device__ __forceinline__ float msub(float a, float b, float c) { return __fsub_rn(__fmul_rn(a, b), c); }

// The 6-bit scale and min of sub-block j of a Q4_K / Q5_K block (k_scale_min in core/ggml_types.h).
__device__ __forceinline__ void scale_min_k4(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// 16 bytes at p into registers, with loads of A bytes (the alignment the block layout guarantees at p): the
// quants of one chunk arrive in 1 to 8 load instructions instead of 16.
template <int A>
__device__ __forceinline__ void load16(const uint8_t* p, uint8_t* out) {
  if constexpr (A >= 16) {
    *reinterpret_cast<uint4*>(out) = __ldg(reinterpret_cast<const uint4*>(p));
  } else if constexpr (A >= 8) {
    const uint2* q = reinterpret_cast<const uint2*>(p);
    reinterpret_cast<uint2*>(out)[0] = __ldg(q);
    reinterpret_cast<uint2*>(out)[1] = __ldg(q + 1);
  } else if constexpr (A >= 4) {
#pragma unroll
    for (int i = 0; i < 4; ++i) reinterpret_cast<uint32_t*>(out)[i] = __ldg(reinterpret_cast<const uint32_t*>(p) + i);
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) reinterpret_cast<uint16_t*>(out)[i] = __ldg(reinterpret_cast<const uint16_t*>(p) + i);
  }
}

// Elements [16c, 16c + 16) of a row of n_in elements (zeros past n_in: only the float types have rows that are
// not whole chunks). Rows start 16-byte aligned on the device (cudaMalloc'd, row_bytes a multiple of the
// block size), so each type's fields sit at the alignment noted below.
template <int T>
__device__ __forceinline__ void deq16(const uint8_t* row, int64_t c, int64_t n_in, float* o) {
  if constexpr (T == kF32 || T == kF16 || T == kBF16) {
    const int64_t e0 = 16 * c;
    constexpr int es = T == kF32 ? 4 : 2;
    if (e0 + 16 <= n_in && (n_in * es) % 16 == 0) {  // whole, 16-byte aligned chunk: vector loads
      if constexpr (T == kF32) {
        const float4* p = reinterpret_cast<const float4*>(row) + 4 * c;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float4 v = __ldg(p + i);
          o[4 * i] = v.x;
          o[4 * i + 1] = v.y;
          o[4 * i + 2] = v.z;
          o[4 * i + 3] = v.w;
        }
      } else {
        uint16_t h[16];
        load16<16>(row + 32 * c, reinterpret_cast<uint8_t*>(h));
        load16<16>(row + 32 * c + 16, reinterpret_cast<uint8_t*>(h + 8));
#pragma unroll
        for (int i = 0; i < 16; ++i) o[i] = T == kF16 ? __half2float(__ushort_as_half(h[i])) : bf2f(h[i]);
      }
      return;
    }
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const int64_t e = e0 + i;
      float v = 0.f;
      if (e < n_in) {
        if constexpr (T == kF32) v = reinterpret_cast<const float*>(row)[e];
        if constexpr (T == kF16) v = __half2float(reinterpret_cast<const __half*>(row)[e]);
        if constexpr (T == kBF16) v = bf2f(reinterpret_cast<const uint16_t*>(row)[e]);
      }
      o[i] = v;
    }
  } else if constexpr (T == kQ8_0) {  // 34-byte blocks: 2-byte aligned
    const uint8_t* b = row + (c >> 1) * 34;
    const float d = h2f(b);
    int8_t q[16];
    load16<2>(b + 2 + (c & 1) * 16, reinterpret_cast<uint8_t*>(q));
#pragma unroll
    for (int i = 0; i < 16; ++i) o[i] = mul(d, static_cast<float>(q[i]));
  } else if constexpr (T == kQ4_0 || T == kQ4_1) {  // 18-byte blocks: 2-aligned; 20-byte: quants 4-aligned
    constexpr int bytes = T == kQ4_0 ? 18 : 20;
    const uint8_t* b = row + (c >> 1) * bytes;
    const float d = h2f(b);
    uint8_t qs[16];
    load16<T == kQ4_0 ? 2 : 4>(b + (T == kQ4_0 ? 2 : 4), qs);
    const int shift = (c & 1) * 4;  // half 0: low nibbles (elements 0-15), half 1: high nibbles (16-31)
    if constexpr (T == kQ4_0) {
#pragma unroll
      for (int i = 0; i < 16; ++i) o[i] = mul(static_cast<float>(((qs[i] >> shift) & 0xF) - 8), d);
    } else {
      const float m = h2f(b + 2);
#pragma unroll
      for (int i = 0; i < 16; ++i) o[i] = mad(static_cast<float>((qs[i] >> shift) & 0xF), d, m);
    }
  } else if constexpr (T == kQ5_0 || T == kQ5_1) {  // 22-byte blocks: 2-aligned; 24-byte: quants 8-aligned
    constexpr int bytes = T == kQ5_0 ? 22 : 24;
    const uint8_t* b = row + (c >> 1) * bytes;
    const float d = h2f(b);
    const uint8_t* qhp = b + (T == kQ5_0 ? 2 : 4);
    const uint32_t qh = qhp[0] | (qhp[1] << 8) | (qhp[2] << 16) | (static_cast<uint32_t>(qhp[3]) << 24);
    uint8_t qs[16];
    load16<T == kQ5_0 ? 2 : 8>(qhp + 4, qs);
    const int half = c & 1;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const int e = half * 16 + i;
      const int q = ((qs[i] >> (half * 4)) & 0xF) | (((qh >> e) & 1) << 4);
      if constexpr (T == kQ5_0)
        o[i] = mul(static_cast<float>(q - 16), d);
      else
        o[i] = mad(static_cast<float>(q), d, h2f(b + 2));
    }
  } else if constexpr (T == kQ4_K || T == kQ5_K) {  // 144 / 176-byte blocks: quants 16-aligned
    constexpr int bytes = T == kQ4_K ? 144 : 176;
    const uint8_t* b = row + (c >> 4) * bytes;
    const int e0 = (c & 15) * 16;  // first element of the chunk in the block
    const int g = e0 >> 6, j = e0 >> 5;  // 64-element group, 32-element sub-block
    int sc, m;
    scale_min_k4(j, b + 4, &sc, &m);
    const float d1 = mul(h2f(b), static_cast<float>(sc));
    const float m1 = mul(h2f(b + 2), static_cast<float>(m));
    const int hi = (e0 >> 5) & 1;  // second 32 of the group: high nibbles
    const int l0 = e0 & 31;
    uint8_t qs[16];
    load16<16>(b + (T == kQ4_K ? 16 : 48) + 32 * g + l0, qs);
    uint8_t qh[16];
    if constexpr (T == kQ5_K) load16<16>(b + 16 + l0, qh);
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      int q = (qs[i] >> (4 * hi)) & 0xF;
      if constexpr (T == kQ5_K) q |= ((qh[i] >> (2 * g + hi)) & 1) << 4;
      o[i] = msub(d1, static_cast<float>(q), m1);
    }
  } else if constexpr (T == kQ6_K) {  // 210-byte blocks: 2-aligned
    const uint8_t* b = row + (c >> 4) * 210;
    const int e0 = (c & 15) * 16;
    const int h = e0 >> 7, r = e0 & 127, qq = r >> 5, l0 = r & 31;
    uint8_t ql[16], qh[16];
    load16<2>(b + 64 * h + (qq & 1) * 32 + l0, ql);
    load16<2>(b + 128 + 32 * h + l0, qh);
    const float d = mul(h2f(b + 208), static_cast<float>(reinterpret_cast<const int8_t*>(b + 192)[e0 >> 4]));
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const int q = ((ql[i] >> (4 * (qq >> 1))) & 0xF) | (((qh[i] >> (2 * qq)) & 3) << 4);
      o[i] = mul(d, static_cast<float>(q - 32));
    }
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ---- matrix-vector: one warp per weight row, up to NT tokens per pass over the row ---------------------
constexpr int kMmvWarps = 4;

// acc[t] = the dot products of row with x[t] over chunks first, first + stride, ... (t < n_tok), summed over
// the warp (every lane gets the sums).
template <int T, int NT>
__device__ __forceinline__ void chunk_dots(const uint8_t* row, int64_t n_in, const float* __restrict__ x, int64_t ldx,
                                           int n_tok, int64_t first, int64_t stride, float* acc) {
  const int64_t nc = (n_in + 15) / 16;
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.f;
  const bool x_vec = ldx % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
#pragma unroll 2
  for (int64_t c = first; c < nc; c += stride) {
    float w[16];
    deq16<T>(row, c, n_in, w);
    const int64_t e0 = 16 * c;
    const int lim = n_in - e0 < 16 ? static_cast<int>(n_in - e0) : 16;
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      if (t >= n_tok) break;
      const float* xp = x + t * ldx + e0;
      float s = 0.f;
      if (lim == 16 && x_vec) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float4 v = __ldg(reinterpret_cast<const float4*>(xp) + i);
          s += w[4 * i] * v.x + w[4 * i + 1] * v.y + w[4 * i + 2] * v.z + w[4 * i + 3] * v.w;
        }
      } else {
        for (int i = 0; i < lim; ++i) s += w[i] * xp[i];
      }
      acc[t] += s;
    }
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = warp_sum(acc[t]);
}

// The whole block on one row: its warps take interleaved chunks (all of a row's loads in flight at once — a
// warp per row leaves too few bytes in flight per SM to reach the memory bandwidth), then meet in shared memory.
// Thread 0 gets the sums.
template <int T, int NT>
__device__ __forceinline__ void block_row_dots(const uint8_t* row, int64_t n_in, const float* __restrict__ x,
                                               int64_t ldx, int n_tok, float* acc) {
  __shared__ float part[kMmvWarps][NT];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  chunk_dots<T, NT>(row, n_in, x, ldx, n_tok, threadIdx.x, kMmvWarps * 32, acc);
  if (lane == 0)
#pragma unroll
    for (int t = 0; t < NT; ++t) part[warp][t] = acc[t];
  __syncthreads();
  if (threadIdx.x == 0)
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      float v = part[0][t];
#pragma unroll
      for (int w = 1; w < kMmvWarps; ++w) v += part[w][t];
      acc[t] = v;
    }
  __syncthreads();  // part is reused by a second call in the same kernel (the GLU's up projection)
}

// y[t][r] = (accumulate ? y[t][r] : 0) + dot(W row r, x[t]): one block per row.
template <int T, int NT>
__global__ void __launch_bounds__(kMmvWarps * 32)
    mmv_kernel(const uint8_t* __restrict__ W, size_t rb, int64_t n_in, int64_t n_out, const float* __restrict__ x,
               int64_t ldx, int n_tok, float* __restrict__ y, int64_t ldy, int accumulate) {
  const int64_t r = blockIdx.x;
  float acc[NT];
  block_row_dots<T, NT>(W + r * rb, n_in, x, ldx, n_tok, acc);
  if (threadIdx.x != 0) return;
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    if (t >= n_tok) break;
    float* out = y + t * ldy + r;
    *out = accumulate ? *out + acc[t] : acc[t];
  }
}

// y[t][r] = silu(dot(Wg row r, x[t])) * dot(Wu row r, x[t]): the gate and up projections and SwiGLU in one pass.
template <int T, int NT>
__global__ void __launch_bounds__(kMmvWarps * 32)
    mmv_glu_kernel(const uint8_t* __restrict__ Wg, const uint8_t* __restrict__ Wu, size_t rb, int64_t n_in, int64_t n_out,
                   const float* __restrict__ x, int64_t ldx, int n_tok, float* __restrict__ y, int64_t ldy) {
  const int64_t r = blockIdx.x;
  float g[NT], u[NT];
  block_row_dots<T, NT>(Wg + r * rb, n_in, x, ldx, n_tok, g);
  block_row_dots<T, NT>(Wu + r * rb, n_in, x, ldx, n_tok, u);
  if (threadIdx.x != 0) return;
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    if (t >= n_tok) break;
    y[t * ldy + r] = __fmul_rn(__fdiv_rn(g[t], 1.0f + expf(-g[t])), u[t]);  // as swiglu_kernel
  }
}

// Rows ids[i] of W for one token.
template <int T>
__global__ void __launch_bounds__(kMmvWarps * 32)
    mmv_rows_kernel(const uint8_t* __restrict__ W, size_t rb, int64_t n_in, const int32_t* __restrict__ ids, int64_t m,
                    const float* __restrict__ x, float* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kMmvWarps + (threadIdx.x >> 5);
  if (i >= m) return;
  const int64_t r = ids[i];
  const uint8_t* row = W + r * rb;
  const int64_t nc = (n_in + 15) / 16;
  float acc = 0.f;
  for (int64_t c = lane; c < nc; c += 32) {
    float w[16];
    deq16<T>(row, c, n_in, w);
    const int64_t e0 = 16 * c;
    const int lim = n_in - e0 < 16 ? static_cast<int>(n_in - e0) : 16;
    for (int k = 0; k < lim; ++k) acc += w[k] * x[e0 + k];
  }
  acc = warp_sum(acc);
  if (lane == 0) y[r] = acc;
}

// ---- matrix-matrix on the tensor cores (sm_80 and later): 128 rows x 64 tokens per block ----------------------
// Weights dequantized (deq16) and activations rounded to 16-bit floats in shared memory, products summed in
// f32 by wmma 16x16x16 fragments; 8 warps, each 32 rows x 32 tokens. The 16-bit format is the one llama.cpp's
// CPU backend rounds activations to for these weights: bf16 for BF16 weights, f16 for the others (F16 and the
// dequantized quants). F32 weights keep the float kernel below (exact-weight results).
constexpr int kTcRows = 128, kTcToks = 64, kTcK = 64, kTcPad = 8;

template <typename H>
__device__ __forceinline__ H to_h(float v);
template <>
__device__ __forceinline__ __half to_h<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 to_h<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <int T, typename H>
__global__ void __launch_bounds__(256)
    mm_tc_kernel(const uint8_t* __restrict__ W, size_t rb, int64_t n_in, int64_t n_out, const float* __restrict__ x,
                 int64_t ldx, int64_t n_tok, float* __restrict__ y, int64_t ldy, int accumulate) {
#if __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  __shared__ __align__(32) H ws[kTcRows][kTcK + kTcPad];  // [row][k]
  __shared__ __align__(32) H xs[kTcToks][kTcK + kTcPad];  // [token][k]
  __shared__ __align__(32) float stage[8][16 * 16];       // one fragment per warp on its way out
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wr = warp >> 1, wt = warp & 1;  // this warp: rows 32wr .. +32, tokens 32wt .. +32
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kTcRows;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTcToks;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);
  for (int64_t k0 = 0; k0 < n_in; k0 += kTcK) {
#pragma unroll
    for (int part = 0; part < 2; ++part) {  // 128 rows x 4 chunks: two per thread
      const int item = tid + 256 * part, row = item >> 2, chunk = item & 3;
      const int64_t r = r0 + row, c = k0 / 16 + chunk;
      float w[16];
      if (r < n_out && 16 * c < n_in) {
        deq16<T>(W + r * rb, c, n_in, w);
      } else {
#pragma unroll
        for (int i = 0; i < 16; ++i) w[i] = 0.f;
      }
#pragma unroll
      for (int i = 0; i < 16; ++i) ws[row][chunk * 16 + i] = to_h<H>(w[i]);
    }
    {
      const int tok = tid >> 2, chunk = tid & 3;
      const int64_t t = t0 + tok, e0 = k0 + chunk * 16;
#pragma unroll
      for (int i = 0; i < 16; ++i)
        xs[tok][chunk * 16 + i] = to_h<H>(t < n_tok && e0 + i < n_in ? x[t * ldx + e0 + i] : 0.f);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTcK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, H, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, H, wmma::col_major> b[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], &ws[32 * wr + 16 * i][kk], kTcK + kTcPad);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], &xs[32 * wt + 16 * j][kk], kTcK + kTcPad);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
  // y[t][r]: each fragment (rows x tokens) goes out through the warp's staging tile, bounds checked
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(stage[warp], acc[i][j], 16, wmma::mem_col_major);  // element (r, t) at r + 16 t
      __syncwarp();
      for (int e = lane; e < 256; e += 32) {
        const int rr = e & 15, tt = e >> 4;
        const int64_t r = r0 + 32 * wr + 16 * i + rr, t = t0 + 32 * wt + 16 * j + tt;
        if (r < n_out && t < n_tok) {
          float* out = y + t * ldy + r;
          *out = accumulate ? *out + stage[warp][e] : stage[warp][e];
        }
      }
      __syncwarp();
    }
#endif
}

// ---- matrix-matrix in f32: 64 rows x 64 tokens per block, 64 elements of the row per step ---------------
constexpr int kTile = 64;
constexpr int kTileK = 64;

template <int T>
__global__ void __launch_bounds__(256)
    mm_kernel(const uint8_t* __restrict__ W, size_t rb, int64_t n_in, int64_t n_out, const float* __restrict__ x,
              int64_t ldx, int64_t n_tok, float* __restrict__ y, int64_t ldy, int accumulate) {
  __shared__ float ws[kTileK][kTile + 1];  // [k][row]
  __shared__ float xs[kTileK][kTile + 1];  // [k][token]
  const int tid = threadIdx.x;
  const int tr = tid >> 4, tc = tid & 15;  // this thread: rows tr + 16i, tokens tc + 16j
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTile;
  float acc[4][4] = {};
  const int ld_row = tid >> 2, ld_chunk = tid & 3;  // loader: one 16-element chunk of one row / token
  for (int64_t k0 = 0; k0 < n_in; k0 += kTileK) {
    {
      float w[16];
      const int64_t r = r0 + ld_row;
      const int64_t c = k0 / 16 + ld_chunk;
      if (r < n_out && 16 * c < n_in) {
        deq16<T>(W + r * rb, c, n_in, w);
      } else {
#pragma unroll
        for (int i = 0; i < 16; ++i) w[i] = 0.f;
      }
#pragma unroll
      for (int i = 0; i < 16; ++i) ws[ld_chunk * 16 + i][ld_row] = w[i];
      const int64_t t = t0 + ld_row;
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        const int64_t e = k0 + ld_chunk * 16 + i;
        xs[ld_chunk * 16 + i][ld_row] = t < n_tok && e < n_in ? x[t * ldx + e] : 0.f;
      }
    }
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < kTileK; ++k) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = ws[k][tr + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = xs[k][tc + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t r = r0 + tr + 16 * i;
    if (r >= n_out) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t t = t0 + tc + 16 * j;
      if (t < n_tok) y[t * ldy + r] = accumulate ? y[t * ldy + r] + acc[i][j] : acc[i][j];
    }
  }
}

template <int T>
__global__ void dequant_kernel(const uint8_t* __restrict__ W, size_t rb, int64_t n_in, int64_t n_rows, float* out) {
  const int64_t nc = (n_in + 15) / 16;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_rows * nc) return;
  const int64_t r = i / nc, c = i % nc;
  float w[16];
  deq16<T>(W + r * rb, c, n_in, w);
  for (int k = 0; k < 16 && 16 * c + k < n_in; ++k) out[r * n_in + 16 * c + k] = w[k];
}

// Calls fn(std::integral_constant<int, T>) for the weight type T; false when it has no kernels.
template <int T>
using TypeTag = std::integral_constant<int, T>;
template <class Fn>
bool dispatch_type(int32_t type, Fn&& fn) {
  switch (type) {
    case kF32: fn(TypeTag<kF32>{}); return true;
    case kF16: fn(TypeTag<kF16>{}); return true;
    case kBF16: fn(TypeTag<kBF16>{}); return true;
    case kQ4_0: fn(TypeTag<kQ4_0>{}); return true;
    case kQ4_1: fn(TypeTag<kQ4_1>{}); return true;
    case kQ5_0: fn(TypeTag<kQ5_0>{}); return true;
    case kQ5_1: fn(TypeTag<kQ5_1>{}); return true;
    case kQ8_0: fn(TypeTag<kQ8_0>{}); return true;
    case kQ4_K: fn(TypeTag<kQ4_K>{}); return true;
    case kQ5_K: fn(TypeTag<kQ5_K>{}); return true;
    case kQ6_K: fn(TypeTag<kQ6_K>{}); return true;
    default: return false;
  }
}

void unsupported(int32_t type) {
  throw std::runtime_error("the CUDA kernels have no matmul for GGML type " + std::to_string(type));
}

// Whether the current device has the bf16/f16 tensor-core path (compute capability 8.0 or later).
bool tensor_cores() {
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
    return false;
  return major >= 8;
}

unsigned blocks_for(int64_t n, int per_block) { return static_cast<unsigned>((n + per_block - 1) / per_block); }

// ---- vector kernels --------------------------------------------------------------------------------------

// One block per row: the sum of squares in double, as the CPU reference.
__global__ void rms_norm_kernel(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ out,
                                int64_t n, float eps) {
  const float* xr = x + blockIdx.x * n;
  float* orow = out + blockIdx.x * n;
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += static_cast<double>(xr[i] * xr[i]);
  __shared__ double part[32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x < 32) {
    double v = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) part[0] = v;
  }
  __syncthreads();
  const float mean = static_cast<float>(part[0] / static_cast<double>(n));
  const float scale = 1.0f / sqrtf(mean + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) orow[i] = __fmul_rn(__fmul_rn(xr[i], scale), w[i]);
}

// One thread per (row, pair); every head of the row rotates by the same angles. The angle of pair p advances
// by repeated multiplication, as ggml (and the CPU reference) computes it.
__global__ void rope_kernel(float* x, int64_t ld, int64_t n_rows, const int32_t* __restrict__ pos, int64_t n_heads,
                            int64_t head_dim, int64_t n_rot, float theta_scale, const float* __restrict__ ff, int neox) {
  const int64_t n_pairs = n_rot / 2;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_rows * n_pairs) return;
  const int64_t r = i / n_pairs, p = i % n_pairs;
  float theta = static_cast<float>(pos[r]);
  for (int64_t k = 0; k < p; ++k) theta = __fmul_rn(theta, theta_scale);
  const float angle = ff ? __fdiv_rn(theta, ff[p]) : theta;
  float s, c;
  sincosf(angle, &s, &c);
  const int64_t stride = neox ? 1 : 2, second = neox ? n_rot / 2 : 1;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* a = x + r * ld + h * head_dim + stride * p;
    const float x0 = a[0], x1 = a[second];
    a[0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    a[second] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
  }
}

__global__ void kv_store_kernel(const float* __restrict__ k_new, const float* __restrict__ v_new, int64_t n_rows,
                                const int32_t* __restrict__ row_seq, const int32_t* __restrict__ row_pos,
                                float* k_cache, float* v_cache, int64_t n_ctx, int64_t kv_dim) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_rows * kv_dim) return;
  const int64_t r = i / kv_dim, e = i % kv_dim;
  const int64_t at = (static_cast<int64_t>(row_seq[r]) * n_ctx + row_pos[r]) * kv_dim + e;
  k_cache[at] = k_new[i];
  v_cache[at] = v_new[i];
}

// One block per (query head, row): scores of every visible position in shared memory, then the softmax and
// the weighted sum of V. In both passes warps take positions and lanes the head's dims, so every K and V row is
// read with coalesced loads; the warps' partial sums of V meet in shared memory.
constexpr int kAttnThreads = 256;
constexpr int kAttnWarps = kAttnThreads / 32;
constexpr int kAttnMaxHeadDim = 256;
constexpr int kAttnMaxSplit = 16;

// With n_split > 1 (few rows: decode), block (h, r, s) takes the s-th slice of the row's positions and writes
// its unnormalised partial output, maximum and sum to part_o / part_ml; attention_combine_kernel merges the
// slices (flash-decoding), so a single row keeps every SM busy.
__global__ void __launch_bounds__(kAttnThreads)
    attention_kernel(const float* __restrict__ q, const int32_t* __restrict__ row_seq,
                     const int32_t* __restrict__ row_pos, const float* __restrict__ k_cache,
                     const float* __restrict__ v_cache, int64_t n_ctx, int64_t n_head, int64_t n_kv_head,
                     int64_t head_dim, float scale, float* __restrict__ out, int n_split, float* __restrict__ part_o,
                     float* __restrict__ part_ml) {
  extern __shared__ float smem[];  // [head_dim] q, then the slice's scores
  __shared__ float part[kAttnWarps][kAttnMaxHeadDim];
  __shared__ float red[kAttnWarps];
  const int64_t h = blockIdx.x, r = blockIdx.y;
  const int64_t kv_dim = n_kv_head * head_dim, q_dim = n_head * head_dim;
  const int64_t kv_h = h / (n_head / n_kv_head);
  const int64_t n_pos = static_cast<int64_t>(row_pos[r]) + 1;
  const int64_t slice = (n_pos + n_split - 1) / n_split;
  const int64_t j0 = blockIdx.z * slice, j1 = j0 + slice < n_pos ? j0 + slice : n_pos;
  const float* kb = k_cache + static_cast<int64_t>(row_seq[r]) * n_ctx * kv_dim + kv_h * head_dim;
  const float* vb = v_cache + static_cast<int64_t>(row_seq[r]) * n_ctx * kv_dim + kv_h * head_dim;
  float* qs = smem;
  float* sc = smem + head_dim - j0;  // sc[j] for j in [j0, j1)
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) qs[d] = q[r * q_dim + h * head_dim + d];
  __syncthreads();
  // scores, and each warp's maximum
  float mx = -FLT_MAX;
  for (int64_t j = j0 + warp; j < j1; j += kAttnWarps) {
    const float* kr = kb + j * kv_dim;
    float s = 0.f;
    for (int64_t d = lane; d < head_dim; d += 32) s += qs[d] * __ldg(kr + d);
    s = warp_sum(s) * scale;
    if (lane == 0) sc[j] = s;
    mx = fmaxf(mx, s);
  }
  if (lane == 0) red[warp] = mx;
  __syncthreads();
  mx = red[0];
#pragma unroll
  for (int w = 1; w < kAttnWarps; ++w) mx = fmaxf(mx, red[w]);
  __syncthreads();  // every thread has read red before it is reused for the sums
  // exp, the sum, and the warps' partial sums of p_j * V_j (lanes over dims)
  float acc[kAttnMaxHeadDim / 32];
#pragma unroll
  for (int i = 0; i < kAttnMaxHeadDim / 32; ++i) acc[i] = 0.f;
  float sum = 0.f;
  for (int64_t j = j0 + warp; j < j1; j += kAttnWarps) {
    const float p = expf(sc[j] - mx);
    sum += p;
    const float* vr = vb + j * kv_dim;
#pragma unroll
    for (int i = 0; i < kAttnMaxHeadDim / 32; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < head_dim) acc[i] += p * __ldg(vr + d);
    }
  }
  if (lane == 0) red[warp] = sum;
#pragma unroll
  for (int i = 0; i < kAttnMaxHeadDim / 32; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < head_dim) part[warp][d] = acc[i];
  }
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kAttnWarps; ++w) total += red[w];
  if (n_split == 1) {
    const float inv = 1.0f / total;
    for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
      float v = 0.f;
#pragma unroll
      for (int w = 0; w < kAttnWarps; ++w) v += part[w][d];
      out[r * q_dim + h * head_dim + d] = v * inv;
    }
    return;
  }
  const int64_t at = (r * n_head + h) * n_split + blockIdx.z;
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) v += part[w][d];
    part_o[at * head_dim + d] = v;
  }
  if (threadIdx.x == 0) {
    part_ml[2 * at] = j0 < j1 ? mx : -FLT_MAX;  // an empty slice (short rows) weighs nothing
    part_ml[2 * at + 1] = j0 < j1 ? total : 0.f;
  }
}

// out = sum_s e^(m_s - M) o_s / sum_s e^(m_s - M) l_s over the slices of one (head, row).
__global__ void attention_combine_kernel(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                         int64_t n_head, int64_t head_dim, int n_split, float* __restrict__ out) {
  const int64_t h = blockIdx.x, r = blockIdx.y;
  const int64_t base = (r * n_head + h) * n_split;
  float m = -FLT_MAX;
  for (int s = 0; s < n_split; ++s)
    if (part_ml[2 * (base + s) + 1] > 0.f) m = fmaxf(m, part_ml[2 * (base + s)]);
  float l = 0.f;
  for (int s = 0; s < n_split; ++s) {
    const float ls = part_ml[2 * (base + s) + 1];
    if (ls > 0.f) l += expf(part_ml[2 * (base + s)] - m) * ls;
  }
  const float inv = 1.0f / l;
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float v = 0.f;
    for (int s = 0; s < n_split; ++s) {
      const float ls = part_ml[2 * (base + s) + 1];
      if (ls > 0.f) v += expf(part_ml[2 * (base + s)] - m) * part_o[(base + s) * head_dim + d];
    }
    out[r * n_head * head_dim + h * head_dim + d] = v * inv;
  }
}

__global__ void swiglu_kernel(float* gate, const float* __restrict__ up, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  gate[i] = __fmul_rn(__fdiv_rn(g, 1.0f + expf(-g)), up[i]);
}

__global__ void add_kernel(float* y, const float* __restrict__ x, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] += x[i];
}

// One thread per element of the n_rows x width block.
__global__ void add_bias_kernel(float* y, const float* __restrict__ bias, int64_t width, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] += bias[i % width];
}

// One warp per head (heads are short: 64 or 128 floats), in place; the sum of squares in double, as the CPU
// reference (rms_norm_kernel's arithmetic on a row of head_dim floats).
constexpr int kHeadNormWarps = 8;
__global__ void __launch_bounds__(kHeadNormWarps * 32)
head_rms_norm_kernel(float* x, const float* __restrict__ w, int64_t n_heads, int64_t head_dim, float eps) {
  const int64_t h = static_cast<int64_t>(blockIdx.x) * kHeadNormWarps + threadIdx.x / 32;
  if (h >= n_heads) return;  // the whole warp
  float* xr = x + h * head_dim;
  const int lane = threadIdx.x & 31;
  double s = 0.0;
  for (int64_t i = lane; i < head_dim; i += 32) s += static_cast<double>(xr[i] * xr[i]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  const float mean = static_cast<float>(s / static_cast<double>(head_dim));
  const float scale = 1.0f / sqrtf(mean + eps);
  for (int64_t i = lane; i < head_dim; i += 32) xr[i] = __fmul_rn(__fmul_rn(xr[i], scale), w[i]);
}

// ---- logit-lens statistics: one block of 1024 threads ------------------------------------------------------
constexpr int kLensThreads = 1024;

struct Ranked {
  float z;
  int32_t id;
};
// a ranks before b: higher logit, then lower id (argmax with lowest-id ties, as the CPU).
__device__ __forceinline__ bool before(Ranked a, Ranked b) { return a.z > b.z || (a.z == b.z && a.id < b.id); }

__global__ void __launch_bounds__(kLensThreads)
    lens_kernel(const float* __restrict__ logits, const int32_t* __restrict__ ids, int64_t m, int64_t k,
                int32_t* out_ids, float* out_probs, float* out_features) {
  __shared__ float fred[kLensThreads / 32];
  __shared__ double dred[2][kLensThreads / 32];
  __shared__ Ranked rred[kLensThreads / 32];
  __shared__ Ranked prev;
  __shared__ float zmax_s;
  __shared__ double log_sum_s;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, n_warps = blockDim.x >> 5;
  auto id_at = [&](int64_t i) { return ids ? ids[i] : static_cast<int32_t>(i); };
  // max
  float mx = -FLT_MAX;
  for (int64_t i = tid; i < m; i += blockDim.x) mx = fmaxf(mx, logits[id_at(i)]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  if (lane == 0) fred[warp] = mx;
  __syncthreads();
  if (tid == 0) {
    float v = fred[0];
    for (int w = 1; w < n_warps; ++w) v = fmaxf(v, fred[w]);
    zmax_s = v;
  }
  __syncthreads();
  const float zmax = zmax_s;
  // softmax normaliser and entropy in one pass, in double (H = log S - sum(e t) / S, t = z - zmax)
  double sum = 0.0, weighted = 0.0;
  for (int64_t i = tid; i < m; i += blockDim.x) {
    const double t = static_cast<double>(logits[id_at(i)] - zmax);
    const double e = exp(t);
    sum += e;
    weighted += e * t;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    sum += __shfl_xor_sync(0xffffffffu, sum, o);
    weighted += __shfl_xor_sync(0xffffffffu, weighted, o);
  }
  if (lane == 0) {
    dred[0][warp] = sum;
    dred[1][warp] = weighted;
  }
  __syncthreads();
  if (tid == 0) {
    double s = 0.0, wsum = 0.0;
    for (int w = 0; w < n_warps; ++w) {
      s += dred[0][w];
      wsum += dred[1][w];
    }
    log_sum_s = log(s);
    out_features[3] = static_cast<float>(log(s) - wsum / s);
    prev.z = FLT_MAX;  // nothing ranked yet: every element is eligible
    prev.id = -1;
  }
  __syncthreads();
  const double log_sum = log_sum_s;
  // top-k: k passes of a block argmax, each over the elements ranked after the previous pick
  const int64_t kk = k < 2 ? 2 : k;
  for (int64_t pass = 0; pass < kk && pass < m; ++pass) {
    const Ranked p = prev;
    Ranked best{-FLT_MAX, INT32_MAX};
    bool found = false;
    for (int64_t i = tid; i < m; i += blockDim.x) {
      const Ranked c{logits[id_at(i)], id_at(i)};
      const bool after_prev = pass == 0 || before(p, c);
      if (after_prev && (!found || before(c, best))) {
        best = c;
        found = true;
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      Ranked other{__shfl_xor_sync(0xffffffffu, best.z, o), __shfl_xor_sync(0xffffffffu, best.id, o)};
      const bool of = __shfl_xor_sync(0xffffffffu, static_cast<int>(found), o) != 0;
      if (of && (!found || before(other, best))) {
        best = other;
        found = true;
      }
    }
    if (lane == 0) rred[warp] = found ? best : Ranked{-FLT_MAX, -1};
    __syncthreads();
    if (tid == 0) {
      Ranked b{-FLT_MAX, -1};
      for (int w = 0; w < n_warps; ++w)
        if (rred[w].id >= 0 && (b.id < 0 || before(rred[w], b))) b = rred[w];
      out_ids[pass] = b.id;
      out_probs[pass] = static_cast<float>(exp(static_cast<double>(b.z - zmax) - log_sum));
      prev = b;
    }
    __syncthreads();
  }
  if (tid == 0) {
    for (int64_t i = m; i < kk; ++i) {  // fewer candidates than ranked
      out_ids[i] = -1;
      out_probs[i] = 0.f;
    }
    const float p1 = out_probs[0];
    const float p2 = m > 1 ? out_probs[1] : 0.f;
    out_features[0] = p1;
    out_features[1] = p2;
    out_features[2] = p1 - p2;
  }
}

// ---- logit-lens statistics over the whole vocabulary, many blocks: the per-check cost of AdaInfer ----------
// lens_partial_kernel: block b takes a contiguous span of the logits and writes its maximum m_b, S_b =
// sum e^(z - m_b), W_b = sum e^(z - m_b) (z - m_b) (double) and its own top kk; lens_final_kernel merges them:
// M = max m_b, S = sum S_b e^(m_b - M), sum e^(z - M)(z - M) = sum e^(m_b - M) (W_b + (m_b - M) S_b).
constexpr int kLensPartThreads = 256;
constexpr int kLensMaxParts = 256;
constexpr int kLensFastK = 8;  // the top-k of the many-block path; larger k use lens_kernel

struct LensPart {
  double s, w;
  float m;
  float pad;
};

// Block-wide argmax (by `before`) of the elements ranked after `prev` (all when first); every thread gets it.
__device__ Ranked block_best_after(const float* __restrict__ z, int64_t i0, int64_t i1, Ranked prev, bool first,
                                   Ranked* red) {
  Ranked best{-FLT_MAX, -1};
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    const Ranked c{z[i], static_cast<int32_t>(i)};
    if ((first || before(prev, c)) && (best.id < 0 || before(c, best))) best = c;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const Ranked other{__shfl_xor_sync(0xffffffffu, best.z, o), __shfl_xor_sync(0xffffffffu, best.id, o)};
    if (other.id >= 0 && (best.id < 0 || before(other, best))) best = other;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // red may still be read from the previous call
  if (lane == 0) red[warp] = best;
  __syncthreads();
  Ranked b{-FLT_MAX, -1};
  for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w)
    if (red[w].id >= 0 && (b.id < 0 || before(red[w], b))) b = red[w];
  return b;
}

__global__ void __launch_bounds__(kLensPartThreads)
    lens_partial_kernel(const float* __restrict__ logits, int64_t m, int64_t span, int kk, LensPart* parts,
                        Ranked* cands) {
  __shared__ Ranked red[kLensPartThreads / 32];
  __shared__ float fmax_s[kLensPartThreads / 32];
  __shared__ double ds[2][kLensPartThreads / 32];
  const int64_t i0 = blockIdx.x * span, i1 = i0 + span < m ? i0 + span : m;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  float mx = -FLT_MAX;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) mx = fmaxf(mx, logits[i]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  if (lane == 0) fmax_s[warp] = mx;
  __syncthreads();
  mx = fmax_s[0];
  for (int w = 1; w < n_warps; ++w) mx = fmaxf(mx, fmax_s[w]);
  double sum = 0.0, weighted = 0.0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    const double t = static_cast<double>(logits[i] - mx);
    const double e = exp(t);
    sum += e;
    weighted += e * t;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    sum += __shfl_xor_sync(0xffffffffu, sum, o);
    weighted += __shfl_xor_sync(0xffffffffu, weighted, o);
  }
  if (lane == 0) {
    ds[0][warp] = sum;
    ds[1][warp] = weighted;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    LensPart p{0.0, 0.0, mx, 0.f};
    for (int w = 0; w < n_warps; ++w) {
      p.s += ds[0][w];
      p.w += ds[1][w];
    }
    parts[blockIdx.x] = p;
  }
  Ranked prev{0.f, -1};
  for (int pass = 0; pass < kk; ++pass) {
    prev = block_best_after(logits, i0, i1, prev, pass == 0, red);
    if (threadIdx.x == 0) cands[blockIdx.x * kk + pass] = prev;
    if (prev.id < 0) {  // the span had fewer than kk elements: pad
      if (threadIdx.x == 0)
        for (int rest = pass + 1; rest < kk; ++rest) cands[blockIdx.x * kk + rest] = Ranked{-FLT_MAX, -1};
      break;
    }
  }
}

__global__ void __launch_bounds__(kLensPartThreads)
    lens_final_kernel(const LensPart* __restrict__ parts, int n_parts, const Ranked* __restrict__ cands, int kk,
                      int64_t m, int64_t k, int32_t* out_ids, float* out_probs, float* out_features) {
  __shared__ Ranked red[kLensPartThreads / 32];
  __shared__ Ranked picked[kLensFastK];
  __shared__ float zmax_s;
  __shared__ double log_sum_s;
  if (threadIdx.x == 0) {
    float M = -FLT_MAX;
    for (int b = 0; b < n_parts; ++b) M = fmaxf(M, parts[b].m);
    double S = 0.0, W = 0.0;
    for (int b = 0; b < n_parts; ++b) {
      const double f = exp(static_cast<double>(parts[b].m - M));
      S += parts[b].s * f;
      W += f * (parts[b].w + static_cast<double>(parts[b].m - M) * parts[b].s);
    }
    zmax_s = M;
    log_sum_s = log(S);
    out_features[3] = static_cast<float>(log(S) - W / S);
  }
  // top-kk among the candidates, by the same ranking (a candidate's id is its vocabulary index)
  const int n_c = n_parts * kk;
  Ranked prev{0.f, -1};
  for (int pass = 0; pass < kk; ++pass) {
    Ranked best{-FLT_MAX, -1};
    for (int i = threadIdx.x; i < n_c; i += blockDim.x) {
      const Ranked c = cands[i];
      if (c.id >= 0 && (pass == 0 || before(prev, c)) && (best.id < 0 || before(c, best))) best = c;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const Ranked other{__shfl_xor_sync(0xffffffffu, best.z, o), __shfl_xor_sync(0xffffffffu, best.id, o)};
      if (other.id >= 0 && (best.id < 0 || before(other, best))) best = other;
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = best;
    __syncthreads();
    Ranked b{-FLT_MAX, -1};
    for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w)
      if (red[w].id >= 0 && (b.id < 0 || before(red[w], b))) b = red[w];
    prev = b;
    if (threadIdx.x == 0) picked[pass] = b;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const float zmax = zmax_s;
    const double log_sum = log_sum_s;
    for (int i = 0; i < kk; ++i) {
      const bool ok = i < m && picked[i].id >= 0;
      out_ids[i] = ok ? picked[i].id : -1;
      out_probs[i] = ok ? static_cast<float>(exp(static_cast<double>(picked[i].z - zmax) - log_sum)) : 0.f;
    }
    const float p1 = out_probs[0];
    const float p2 = m > 1 ? out_probs[1] : 0.f;
    out_features[0] = p1;
    out_features[1] = p2;
    out_features[2] = p1 - p2;
  }
}

}  // namespace

int64_t lens_scratch_bytes() {
  return static_cast<int64_t>(kLensMaxParts * (sizeof(LensPart) + kLensFastK * sizeof(Ranked)));
}

bool supports_type(int32_t type) {
  switch (type) {
    case kF32: case kF16: case kBF16: case kQ4_0: case kQ4_1: case kQ5_0: case kQ5_1: case kQ8_0: case kQ4_K:
    case kQ5_K: case kQ6_K:
      return true;
    default:
      return false;
  }
}

void matmul(Stream s, int32_t type, const void* W, size_t row_bytes, int64_t n_in, int64_t n_out, const float* x,
            int64_t ldx, int64_t n_tok, float* y, int64_t ldy, bool accumulate) {
  if (n_out <= 0 || n_tok <= 0) return;
  const uint8_t* w = static_cast<const uint8_t*>(W);
  bool ok;
  if (n_tok <= 8) {
    const unsigned grid = static_cast<unsigned>(n_out);  // a block per row
    const int nt = static_cast<int>(n_tok), acc = accumulate ? 1 : 0;
    ok = dispatch_type(type, [&](auto tag) {
      constexpr int T = decltype(tag)::value;
      if (nt == 1)
        mmv_kernel<T, 1><<<grid, kMmvWarps * 32, 0, s>>>(w, row_bytes, n_in, n_out, x, ldx, nt, y, ldy, acc);
      else if (nt <= 2)
        mmv_kernel<T, 2><<<grid, kMmvWarps * 32, 0, s>>>(w, row_bytes, n_in, n_out, x, ldx, nt, y, ldy, acc);
      else if (nt <= 4)
        mmv_kernel<T, 4><<<grid, kMmvWarps * 32, 0, s>>>(w, row_bytes, n_in, n_out, x, ldx, nt, y, ldy, acc);
      else
        mmv_kernel<T, 8><<<grid, kMmvWarps * 32, 0, s>>>(w, row_bytes, n_in, n_out, x, ldx, nt, y, ldy, acc);
    });
  } else if (type != kF32 && tensor_cores()) {
    const int acc = accumulate ? 1 : 0;
    const dim3 grid(blocks_for(n_out, kTcRows), blocks_for(n_tok, kTcToks));
    ok = dispatch_type(type, [&](auto tag) {
      constexpr int T = decltype(tag)::value;
      if constexpr (T == kBF16)
        mm_tc_kernel<T, __nv_bfloat16><<<grid, 256, 0, s>>>(w, row_bytes, n_in, n_out, x, ldx, n_tok, y, ldy, acc);
      else
        mm_tc_kernel<T, __half><<<grid, 256, 0, s>>>(w, row_bytes, n_in, n_out, x, ldx, n_tok, y, ldy, acc);
    });
  } else {
    const int acc = accumulate ? 1 : 0;
    const dim3 grid(blocks_for(n_out, kTile), blocks_for(n_tok, kTile));
    ok = dispatch_type(type, [&](auto tag) {
      constexpr int T = decltype(tag)::value;
      mm_kernel<T><<<grid, 256, 0, s>>>(w, row_bytes, n_in, n_out, x, ldx, n_tok, y, ldy, acc);
    });
  }
  if (!ok) unsupported(type);
  check_launch("matmul");
}

void matmul_glu(Stream s, int32_t type, const void* Wg, const void* Wu, size_t row_bytes, int64_t n_in, int64_t n_out,
                const float* x, int64_t ldx, int64_t n_tok, float* y, float* up, int64_t ldy) {
  if (n_out <= 0 || n_tok <= 0) return;
  if (n_tok > 8) {
    matmul(s, type, Wg, row_bytes, n_in, n_out, x, ldx, n_tok, y, ldy, false);
    matmul(s, type, Wu, row_bytes, n_in, n_out, x, ldx, n_tok, up, ldy, false);
    if (ldy != n_out) throw std::runtime_error("matmul_glu: rows must be packed (ldy == n_out) for more than 8 tokens");
    swiglu(s, y, up, n_tok * n_out);
    return;
  }
  const uint8_t* wg = static_cast<const uint8_t*>(Wg);
  const uint8_t* wu = static_cast<const uint8_t*>(Wu);
  const int nt = static_cast<int>(n_tok);
  const unsigned grid = static_cast<unsigned>(n_out);  // a block per row
  const bool ok = dispatch_type(type, [&](auto tag) {
    constexpr int T = decltype(tag)::value;
    if (nt == 1)
      mmv_glu_kernel<T, 1><<<grid, kMmvWarps * 32, 0, s>>>(wg, wu, row_bytes, n_in, n_out, x, ldx, nt, y, ldy);
    else if (nt <= 2)
      mmv_glu_kernel<T, 2><<<grid, kMmvWarps * 32, 0, s>>>(wg, wu, row_bytes, n_in, n_out, x, ldx, nt, y, ldy);
    else if (nt <= 4)
      mmv_glu_kernel<T, 4><<<grid, kMmvWarps * 32, 0, s>>>(wg, wu, row_bytes, n_in, n_out, x, ldx, nt, y, ldy);
    else
      mmv_glu_kernel<T, 8><<<grid, kMmvWarps * 32, 0, s>>>(wg, wu, row_bytes, n_in, n_out, x, ldx, nt, y, ldy);
  });
  if (!ok) unsupported(type);
  check_launch("matmul_glu");
}

void matvec_rows(Stream s, int32_t type, const void* W, size_t row_bytes, int64_t n_in, const int32_t* ids, int64_t m,
                 const float* x, float* y) {
  if (m <= 0) return;
  const uint8_t* w = static_cast<const uint8_t*>(W);
  const bool ok = dispatch_type(type, [&](auto tag) {
      constexpr int T = decltype(tag)::value;
    mmv_rows_kernel<T><<<blocks_for(m, kMmvWarps), kMmvWarps * 32, 0, s>>>(w, row_bytes, n_in, ids, m, x, y);
  });
  if (!ok) unsupported(type);
  check_launch("matvec_rows");
}

void dequant_rows(Stream s, int32_t type, const void* W, size_t row_bytes, int64_t n_in, int64_t n_rows, float* out) {
  const int64_t items = n_rows * ((n_in + 15) / 16);
  if (items <= 0) return;
  const uint8_t* w = static_cast<const uint8_t*>(W);
  const bool ok = dispatch_type(type, [&](auto tag) {
      constexpr int T = decltype(tag)::value;
    dequant_kernel<T><<<blocks_for(items, 256), 256, 0, s>>>(w, row_bytes, n_in, n_rows, out);
  });
  if (!ok) unsupported(type);
  check_launch("dequant_rows");
}

void rms_norm(Stream s, const float* x, const float* w, float* out, int64_t n_rows, int64_t n, float eps) {
  if (n_rows <= 0) return;
  rms_norm_kernel<<<static_cast<unsigned>(n_rows), 256, 0, s>>>(x, w, out, n, eps);
  check_launch("rms_norm");
}

void rope(Stream s, float* x, int64_t ld, int64_t n_rows, const int32_t* pos, int64_t n_heads, int64_t head_dim,
          int64_t n_rot, float freq_base, const float* freq_factors, bool neox) {
  const int64_t items = n_rows * (n_rot / 2);
  if (items <= 0) return;
  const float theta_scale = powf(freq_base, -2.0f / static_cast<float>(n_rot));  // on the host, as the CPU
  rope_kernel<<<blocks_for(items, 256), 256, 0, s>>>(x, ld, n_rows, pos, n_heads, head_dim, n_rot, theta_scale,
                                                     freq_factors, neox ? 1 : 0);
  check_launch("rope");
}

void kv_store(Stream s, const float* k_new, const float* v_new, int64_t n_rows, const int32_t* row_seq,
              const int32_t* row_pos, float* k_cache, float* v_cache, int64_t n_ctx, int64_t kv_dim) {
  const int64_t items = n_rows * kv_dim;
  if (items <= 0) return;
  kv_store_kernel<<<blocks_for(items, 256), 256, 0, s>>>(k_new, v_new, n_rows, row_seq, row_pos, k_cache, v_cache,
                                                         n_ctx, kv_dim);
  check_launch("kv_store");
}

int64_t attention_max_ctx(int device) {
  int optin = 0;
  if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) return 0;
  // q (head_dim <= 256 floats) and the static reduction buffers come out of the same shared memory
  return (static_cast<int64_t>(optin) - kAttnMaxHeadDim * 4 - static_cast<int64_t>(sizeof(float)) * kAttnWarps *
                                                                    (kAttnMaxHeadDim + 1) - 256) / 4;
}

int64_t attention_scratch_floats(int64_t n_rows, int64_t n_head, int64_t head_dim) {
  return n_rows * n_head * kAttnMaxSplit * (head_dim + 2);
}

void attention(Stream s, const float* q, int64_t n_rows, const int32_t* row_seq, const int32_t* row_pos,
               const float* k_cache, const float* v_cache, int64_t n_ctx, int64_t n_head, int64_t n_kv_head,
               int64_t head_dim, float scale, float* out, int64_t max_pos, float* scratch, int64_t scratch_floats) {
  if (n_rows <= 0) return;
  if (head_dim > kAttnMaxHeadDim)
    throw std::runtime_error("CUDA attention: head dimension " + std::to_string(head_dim) + " above " +
                             std::to_string(kAttnMaxHeadDim));
  const size_t smem = static_cast<size_t>(head_dim + n_ctx) * sizeof(float);
  // The attribute belongs to the kernel on the current device: remembered per (host thread, device).
  constexpr int kDevices = 64;
  static thread_local size_t configured[kDevices] = {};
  int dev = 0;
  cudaGetDevice(&dev);
  const size_t static_smem = sizeof(float) * kAttnWarps * (kAttnMaxHeadDim + 1);
  if (smem + static_smem > 48 * 1024 && (dev >= kDevices || smem > configured[dev])) {
    if (cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)) !=
        cudaSuccess)
      throw std::runtime_error("CUDA attention: a context of " + std::to_string(n_ctx) +
                               " positions does not fit in shared memory");
    if (dev < kDevices) configured[dev] = smem;
  }
  // Slices: enough blocks for about two per SM, each slice at least 128 positions, when the scratch holds them.
  static thread_local int sms[kDevices] = {};
  if (dev < kDevices && sms[dev] == 0) cudaDeviceGetAttribute(&sms[dev], cudaDevAttrMultiProcessorCount, dev);
  const int64_t n_sm = dev < kDevices && sms[dev] > 0 ? sms[dev] : 100;
  int64_t n_split = std::min<int64_t>({kAttnMaxSplit, (2 * n_sm + n_head * n_rows - 1) / (n_head * n_rows),
                                       (std::max<int64_t>(max_pos, 1) + 127) / 128});
  if (n_split < 1 || !scratch || scratch_floats < attention_scratch_floats(n_rows, n_head, head_dim)) n_split = 1;
  float* part_o = scratch;
  float* part_ml = scratch ? scratch + n_rows * n_head * n_split * head_dim : nullptr;
  const dim3 grid(static_cast<unsigned>(n_head), static_cast<unsigned>(n_rows), static_cast<unsigned>(n_split));
  attention_kernel<<<grid, kAttnThreads, smem, s>>>(q, row_seq, row_pos, k_cache, v_cache, n_ctx, n_head, n_kv_head,
                                                    head_dim, scale, out, static_cast<int>(n_split), part_o, part_ml);
  check_launch("attention");
  if (n_split > 1) {
    attention_combine_kernel<<<dim3(static_cast<unsigned>(n_head), static_cast<unsigned>(n_rows)), 128, 0, s>>>(
        part_o, part_ml, n_head, head_dim, static_cast<int>(n_split), out);
    check_launch("attention_combine");
  }
}

void swiglu(Stream s, float* gate, const float* up, int64_t n) {
  if (n <= 0) return;
  swiglu_kernel<<<blocks_for(n, 256), 256, 0, s>>>(gate, up, n);
  check_launch("swiglu");
}

void add(Stream s, float* y, const float* x, int64_t n) {
  if (n <= 0) return;
  add_kernel<<<blocks_for(n, 256), 256, 0, s>>>(y, x, n);
  check_launch("add");
}

void add_bias(Stream s, float* y, const float* bias, int64_t n_rows, int64_t width) {
  const int64_t n = n_rows * width;
  if (n <= 0) return;
  add_bias_kernel<<<blocks_for(n, 256), 256, 0, s>>>(y, bias, width, n);
  check_launch("add_bias");
}

void head_rms_norm(Stream s, float* x, const float* w, int64_t n_heads, int64_t head_dim, float eps) {
  if (n_heads <= 0) return;
  head_rms_norm_kernel<<<blocks_for(n_heads, kHeadNormWarps), kHeadNormWarps * 32, 0, s>>>(x, w, n_heads, head_dim, eps);
  check_launch("head_rms_norm");
}

void lens_stats(Stream s, const float* logits, const int32_t* ids, int64_t m, int64_t k, int32_t* out_ids,
                float* out_probs, float* out_features, void* scratch) {
  if (m <= 0 || k <= 0) throw std::runtime_error("lens_stats: empty input");
  const int kk = static_cast<int>(k < 2 ? 2 : k);
  if (ids || !scratch || kk > kLensFastK || m < 4096) {  // candidates (a few ids) or a large k: one block
    lens_kernel<<<1, kLensThreads, 0, s>>>(logits, ids, m, k, out_ids, out_probs, out_features);
    check_launch("lens_stats");
    return;
  }
  const int64_t parts = std::min<int64_t>(kLensMaxParts, (m + kLensPartThreads - 1) / kLensPartThreads);
  const int64_t span = (m + parts - 1) / parts;
  LensPart* p = static_cast<LensPart*>(scratch);
  Ranked* c = reinterpret_cast<Ranked*>(static_cast<uint8_t*>(scratch) + kLensMaxParts * sizeof(LensPart));
  lens_partial_kernel<<<static_cast<unsigned>(parts), kLensPartThreads, 0, s>>>(logits, m, span, kk, p, c);
  check_launch("lens_partial");
  lens_final_kernel<<<1, kLensPartThreads, 0, s>>>(p, static_cast<int>(parts), c, kk, m, k, out_ids, out_probs,
                                                   out_features);
  check_launch("lens_final");
}

}  // namespace cuda
}  // namespace adainfer
