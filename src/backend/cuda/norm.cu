#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/norm.cuh"

namespace nibble::cuda {
namespace {

constexpr int kNormWarps = 4;

// One warp per (token, head) row; VEC = 8 (16-byte accesses) when dim and strides allow it.
// The row is read twice (sum of squares, then scale): the second read hits L1/L2.
template <int VEC>
__global__ void __launch_bounds__(kNormWarps* kWarp)
    rmsnorm_kernel(const bf16* x, int64_t xs, int64_t rows, int64_t heads, int64_t dim,
                   const float* __restrict__ w, float eps, bf16* out, int64_t os, float* rstd) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kNormWarps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (r >= rows) return;
  const bf16* xr = x + (r / heads) * xs + (r % heads) * dim;
  bf16* yr = out + (r / heads) * os + (r % heads) * dim;
  float ss = 0.0f;
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

}  // namespace

void rmsnorm_forward(Context& ctx, const bf16* x, int64_t x_stride, int64_t n, int64_t heads, int64_t dim,
                     const float* w, float eps, bf16* out, int64_t out_stride, float* rstd) {
  const int64_t rows = n * heads;
  if (rows == 0) return;
  const unsigned grid = static_cast<unsigned>(ceil_div(rows, kNormWarps));
  const bool vec = dim % 8 == 0 && x_stride % 8 == 0 && out_stride % 8 == 0 &&
                   reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  if (vec)
    rmsnorm_kernel<8><<<grid, kNormWarps * kWarp, 0, ctx.stream()>>>(x, x_stride, rows, heads, dim, w, eps,
                                                                     out, out_stride, rstd);
  else
    rmsnorm_kernel<1><<<grid, kNormWarps * kWarp, 0, ctx.stream()>>>(x, x_stride, rows, heads, dim, w, eps,
                                                                     out, out_stride, rstd);
  CUDA_CHECK_LAUNCH();
}

}  // namespace nibble::cuda
