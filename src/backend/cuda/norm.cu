#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/norm.cuh"
#include "backend/cuda/pdl.cuh"

namespace nibble::cuda {
namespace {

constexpr int kNormWarps = 4;

// One warp per (token, head) row; VEC = 8 (16-byte accesses) when dim and strides allow it. Lane l
// takes the VEC-element chunks l, l + 32, ... With CHUNKS > 0 (dim <= 32 * VEC * CHUNKS) a lane
// loads all its chunks at once (every load in flight before the first use: a one-row norm of a
// decode step is a chain of memory latencies otherwise) and keeps them for the scaling pass;
// CHUNKS = 0 reads the row twice (the second read hits L1/L2). Both sum in the same order.
template <int VEC, int CHUNKS>
__global__ void __launch_bounds__(kNormWarps* kWarp)
    rmsnorm_kernel(const bf16* x, int64_t xs, int64_t rows, int64_t heads, int64_t dim,
                   const float* __restrict__ w, float eps, bf16* out, int64_t os, float* rstd) {
  pdl_wait();  // x comes from the previous kernel (launched with launch_pdl)
  pdl_launch_dependents();
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kNormWarps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (r >= rows) return;
  const bf16* xr = x + (r / heads) * xs + (r % heads) * dim;
  bf16* yr = out + (r / heads) * os + (r % heads) * dim;
  float ss = 0.0f;
  if constexpr (CHUNKS > 0) {
    Bf16x8 v[CHUNKS];
#pragma unroll
    for (int u = 0; u < CHUNKS; ++u) {
      const int64_t c = (lane + static_cast<int64_t>(kWarp) * u) * 8;
      if (c < dim) v[u] = *reinterpret_cast<const Bf16x8*>(xr + c);
    }
#pragma unroll
    for (int u = 0; u < CHUNKS; ++u) {
      const int64_t c = (lane + static_cast<int64_t>(kWarp) * u) * 8;
      if (c < dim) {
        float f[8];
        bf16x8_to_float(v[u], f);
#pragma unroll
        for (int i = 0; i < 8; ++i) ss = fmaf(f[i], f[i], ss);
      }
    }
    ss = warp_sum(ss);
    const float inv = rsqrtf(ss / static_cast<float>(dim) + eps);
    if (rstd && lane == 0) rstd[r] = inv;
#pragma unroll
    for (int u = 0; u < CHUNKS; ++u) {
      const int64_t c = (lane + static_cast<int64_t>(kWarp) * u) * 8;
      if (c < dim) {
        float f[8];
        bf16x8_to_float(v[u], f);
#pragma unroll
        for (int i = 0; i < 8; ++i) f[i] = f[i] * inv * w[c + i];
        *reinterpret_cast<Bf16x8*>(yr + c) = float_to_bf16x8(f);
      }
    }
    return;
  }
  for (int64_t c = lane * VEC; c < dim; c += kWarp * VEC) {
    if constexpr (VEC == 8) {
      float f[8];
      bf16x8_to_float(*reinterpret_cast<const Bf16x8*>(xr + c), f);
#pragma unroll
      for (int i = 0; i < 8; ++i) ss = fmaf(f[i], f[i], ss);
    } else {
      const float f = __bfloat162float(xr[c]);
      ss = fmaf(f, f, ss);
    }
  }
  ss = warp_sum(ss);
  const float inv = rsqrtf(ss / static_cast<float>(dim) + eps);
  if (rstd && lane == 0) rstd[r] = inv;
  for (int64_t c = lane * VEC; c < dim; c += kWarp * VEC) {
    if constexpr (VEC == 8) {
      float f[8];
      bf16x8_to_float(*reinterpret_cast<const Bf16x8*>(xr + c), f);
#pragma unroll
      for (int i = 0; i < 8; ++i) f[i] = f[i] * inv * w[c + i];
      *reinterpret_cast<Bf16x8*>(yr + c) = float_to_bf16x8(f);
    } else {
      yr[c] = __float2bfloat16_rn(__bfloat162float(xr[c]) * inv * w[c]);
    }
  }
}

constexpr int kNormChunks = 16;  // registers for rows up to 32 * 8 * 16 = 4096 elements

}  // namespace

void rmsnorm_forward(Context& ctx, const bf16* x, int64_t x_stride, int64_t n, int64_t heads, int64_t dim,
                     const float* w, float eps, bf16* out, int64_t out_stride, float* rstd) {
  const int64_t rows = n * heads;
  if (rows == 0) return;
  const unsigned grid = static_cast<unsigned>(ceil_div(rows, kNormWarps));
  const bool vec = dim % 8 == 0 && x_stride % 8 == 0 && out_stride % 8 == 0 &&
                   reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const dim3 block(kNormWarps * kWarp);
  auto* kernel = vec && dim <= kWarp * 8 * kNormChunks ? rmsnorm_kernel<8, kNormChunks>
                 : vec                                 ? rmsnorm_kernel<8, 0>
                                                       : rmsnorm_kernel<1, 0>;
  launch_pdl(ctx, kernel, dim3(grid), block, 0, x, x_stride, rows, heads, dim, w, eps, out, out_stride, rstd);
}

}  // namespace nibble::cuda
