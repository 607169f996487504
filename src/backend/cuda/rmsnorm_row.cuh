// defines: rms_row_inv and rms_scale8, the RMSNorm of one row by one warp (norm.cu); rms_scale8
// also writes the x_norm the fused GEMVs keep (gemv_mma.cu, with their own 1/rms). Only for .cu
// files: uses device code.
//
// Order (part of the contract): lane l takes the 8-element chunks l, l + 32, l + 64, ... and sums
// their squares with fmaf in that order; warp_sum; inv = rsqrtf(ss / dim + eps); y = bf16(x * inv * w).
#pragma once

#include "backend/cuda/common.cuh"

namespace nibble::cuda {

// 1 / rms of row xr (dim % 8 == 0, 16-byte aligned), identical in every lane. AHEAD chunks of a lane
// are loaded before the first is used (a one-row norm is a chain of memory latencies otherwise).
template <int AHEAD>
__device__ __forceinline__ float rms_row_inv(const bf16* __restrict__ xr, int64_t dim, float eps, int lane) {
  float ss = 0.0f;
  for (int64_t c0 = lane * 8; c0 < dim; c0 += AHEAD * kWarp * 8) {
    Bf16x8 v[AHEAD];
#pragma unroll
    for (int u = 0; u < AHEAD; ++u) {
      const int64_t c = c0 + u * kWarp * 8;
      if (c < dim) v[u] = *reinterpret_cast<const Bf16x8*>(xr + c);
    }
#pragma unroll
    for (int u = 0; u < AHEAD; ++u) {
      if (c0 + u * kWarp * 8 >= dim) continue;
      float f[8];
      bf16x8_to_float(v[u], f);
#pragma unroll
      for (int i = 0; i < 8; ++i) ss = fmaf(f[i], f[i], ss);
    }
  }
  return rsqrtf(warp_sum(ss) / static_cast<float>(dim) + eps);
}

// bf16(x[c + i] * inv * w[c + i]) for the 8 elements at c.
__device__ __forceinline__ Bf16x8 rms_scale8(const bf16* __restrict__ xr, int64_t c, float inv,
                                             const float* __restrict__ w) {
  float f[8];
  bf16x8_to_float(*reinterpret_cast<const Bf16x8*>(xr + c), f);
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = f[i] * inv * w[c + i];
  return float_to_bf16x8(f);
}

}  // namespace nibble::cuda
