#include "backend/cuda/activation.cuh"
#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"

namespace nibble::cuda {
namespace {

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

__global__ void swiglu_kernel(const bf16* gate, int64_t gs, const bf16* up, int64_t us, int64_t n, int64_t d,
                              bf16* out, int64_t os) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * d) return;
  const int64_t t = idx / d, j = idx % d;
  const float g = __bfloat162float(gate[t * gs + j]);
  const float u = __bfloat162float(up[t * us + j]);
  out[t * os + j] = __float2bfloat16_rn(silu(g) * u);
}

__global__ void add_kernel(const bf16* a, const bf16* b, int64_t count, bf16* out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= count) return;
  out[idx] = __float2bfloat16_rn(__bfloat162float(a[idx]) + __bfloat162float(b[idx]));
}

}  // namespace

void swiglu_forward(Context& ctx, const bf16* gate, int64_t gate_stride, const bf16* up, int64_t up_stride,
                    int64_t n, int64_t d, bf16* out, int64_t out_stride) {
  const int64_t total = n * d;
  if (total == 0) return;
  swiglu_kernel<<<static_cast<unsigned>(ceil_div(total, 256)), 256, 0, ctx.stream()>>>(
      gate, gate_stride, up, up_stride, n, d, out, out_stride);
  CUDA_CHECK_LAUNCH();
}

void add_forward(Context& ctx, const bf16* a, const bf16* b, int64_t count, bf16* out) {
  if (count == 0) return;
  add_kernel<<<static_cast<unsigned>(ceil_div(count, 256)), 256, 0, ctx.stream()>>>(a, b, count, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace nibble::cuda
