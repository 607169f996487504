#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/norm.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/rmsnorm_row.cuh"

namespace nibble::cuda {
namespace {

constexpr int kNormWarps = 4;
constexpr int kNormAhead = 16;  // chunks a lane loads before the first is used (rows <= 4096 at once)

// One warp per (token, head) row. VEC = 8 (16-byte accesses, when dim and strides allow it): the
// row's RMSNorm as rmsnorm_row.cuh defines it (the fused GEMVs of gemv_mma.cu defer 1/rms and agree
// within rounding), every chunk of a lane loaded before the first is used; the scaling pass
// re-reads the row from L1. VEC = 1: one element at a time, the same order within each lane's
// elements.
template <int VEC>
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
  if constexpr (VEC == 8) {
    const float inv = rms_row_inv<kNormAhead>(xr, dim, eps, lane);
    if (rstd && lane == 0) rstd[r] = inv;
    for (int64_t c = lane * 8; c < dim; c += kWarp * 8)
      *reinterpret_cast<Bf16x8*>(yr + c) = rms_scale8(xr, c, inv, w);
    return;
  }
  float ss = 0.0f;
  for (int64_t c = lane; c < dim; c += kWarp) {
    const float f = __bfloat162float(xr[c]);
    ss = fmaf(f, f, ss);
  }
  const float inv = rsqrtf(warp_sum(ss) / static_cast<float>(dim) + eps);
  if (rstd && lane == 0) rstd[r] = inv;
  for (int64_t c = lane; c < dim; c += kWarp)
    yr[c] = __float2bfloat16_rn(__bfloat162float(xr[c]) * inv * w[c]);
}

}  // namespace

void rmsnorm_forward(Context& ctx, const bf16* x, int64_t x_stride, int64_t n, int64_t heads, int64_t dim,
                     const float* w, float eps, bf16* out, int64_t out_stride, float* rstd) {
  const int64_t rows = n * heads;
  if (rows == 0) return;
  const unsigned grid = static_cast<unsigned>(ceil_div(rows, kNormWarps));
  const bool vec = dim % 8 == 0 && x_stride % 8 == 0 && out_stride % 8 == 0 &&
                   reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const dim3 block(kNormWarps * kWarp);
  auto* kernel = vec ? rmsnorm_kernel<8> : rmsnorm_kernel<1>;
  launch_pdl(ctx, kernel, dim3(grid), block, 0, x, x_stride, rows, heads, dim, w, eps, out, out_stride, rstd);
}

}  // namespace nibble::cuda
