// defines: rmsnorm_forward (RMSNorm over the last dimension; also the per-head q/k norm of Qwen3).
//
// HF Qwen3RMSNorm / LlamaRMSNorm: y = x * rsqrt(mean(x^2) + eps) * w, statistics in fp32.
// (HF rounds x * rsqrt(..) to bf16 before multiplying by w; here the product is rounded once.)
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/context.cuh"

namespace nibble::cuda {

// x, out: (n, heads, dim) bf16 with token stride `stride` (elements) and head stride dim; w: (dim)
// fp32. Every (token, head) row is normalised on its own; heads = 1 for the hidden-state norms.
// In place (out == x) is allowed. rstd (n*heads) fp32, optional: 1/rms of each row, for a backward.
void rmsnorm_forward(Context& ctx, const __nv_bfloat16* x, int64_t x_stride, int64_t n, int64_t heads,
                     int64_t dim, const float* w, float eps, __nv_bfloat16* out, int64_t out_stride,
                     float* rstd = nullptr);

}  // namespace nibble::cuda
