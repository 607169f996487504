#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/rope.cuh"

namespace nibble::cuda {
namespace {

// One thread per (token, head, i < half). sincosf (not the fast __sinf): positions reach 10^5 and
// the argument must be reduced accurately, as torch's fp32 cos/sin do.
__global__ void rope_kernel(bf16* x, int64_t stride, int64_t n, int64_t heads, int64_t half, int64_t pos0,
                            const int32_t* __restrict__ pos, const float* __restrict__ inv_freq,
                            float scaling) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * heads * half) return;
  const int64_t i = idx % half;
  const int64_t h = (idx / half) % heads;
  const int64_t t = idx / (half * heads);
  float s, c;
  const int64_t p = pos ? pos[t] : pos0 + t;
  sincosf(static_cast<float>(p) * inv_freq[i], &s, &c);
  s *= scaling;
  c *= scaling;
  bf16* row = x + t * stride + h * 2 * half;
  const float x1 = __bfloat162float(row[i]);
  const float x2 = __bfloat162float(row[i + half]);
  row[i] = __float2bfloat16_rn(x1 * c - x2 * s);
  row[i + half] = __float2bfloat16_rn(x2 * c + x1 * s);
}

}  // namespace

void rope_forward(Context& ctx, bf16* x, int64_t stride, int64_t n, int64_t heads, int64_t head_dim,
                  int64_t pos0, const int32_t* pos, const float* inv_freq, float attention_scaling) {
  if (head_dim % 2 != 0) fail("rope_forward: odd head_dim {}", head_dim);
  const int64_t total = n * heads * (head_dim / 2);
  if (total == 0) return;
  rope_kernel<<<static_cast<unsigned>(ceil_div(total, 256)), 256, 0, ctx.stream()>>>(
      x, stride, n, heads, head_dim / 2, pos0, pos, inv_freq, attention_scaling);
  CUDA_CHECK_LAUNCH();
}

}  // namespace nibble::cuda
