#include "backend/cuda/activation.cuh"
#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"

namespace nibble::cuda {
namespace {

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

// VEC = 8: one 16-byte load of gate and up and one 16-byte store per thread (d, strides % 8 == 0,
// 16-byte-aligned rows); VEC = 1 otherwise. The same arithmetic per element either way.
template <int VEC>
__global__ void swiglu_kernel(const bf16* gate, int64_t gs, const bf16* up, int64_t us, int64_t n, int64_t d,
                              bf16* out, int64_t os) {
  const int64_t idx = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * VEC;
  if (idx >= n * d) return;
  const int64_t t = idx / d, j = idx % d;
  if constexpr (VEC == 8) {
    float g[8], u[8];
    bf16x8_to_float(*reinterpret_cast<const Bf16x8*>(gate + t * gs + j), g);
    bf16x8_to_float(*reinterpret_cast<const Bf16x8*>(up + t * us + j), u);
#pragma unroll
    for (int i = 0; i < 8; ++i) g[i] = silu(g[i]) * u[i];
    *reinterpret_cast<Bf16x8*>(out + t * os + j) = float_to_bf16x8(g);
  } else {
    const float g = __bfloat162float(gate[t * gs + j]);
    const float u = __bfloat162float(up[t * us + j]);
    out[t * os + j] = __float2bfloat16_rn(silu(g) * u);
  }
}

template <int VEC>
__global__ void add_kernel(const bf16* a, const bf16* b, int64_t count, bf16* out) {
  const int64_t idx = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * VEC;
  if (idx >= count) return;
  if constexpr (VEC == 8) {
    float x[8], y[8];
    bf16x8_to_float(*reinterpret_cast<const Bf16x8*>(a + idx), x);
    bf16x8_to_float(*reinterpret_cast<const Bf16x8*>(b + idx), y);
#pragma unroll
    for (int i = 0; i < 8; ++i) x[i] += y[i];
    *reinterpret_cast<Bf16x8*>(out + idx) = float_to_bf16x8(x);
  } else {
    out[idx] = __float2bfloat16_rn(__bfloat162float(a[idx]) + __bfloat162float(b[idx]));
  }
}

unsigned blocks_for(int64_t threads) { return static_cast<unsigned>(ceil_div(threads, 256)); }

}  // namespace

void swiglu_forward(Context& ctx, const bf16* gate, int64_t gate_stride, const bf16* up, int64_t up_stride,
                    int64_t n, int64_t d, bf16* out, int64_t out_stride) {
  const int64_t total = n * d;
  if (total == 0) return;
  const bool vec = d % 8 == 0 && gate_stride % 8 == 0 && up_stride % 8 == 0 && out_stride % 8 == 0 &&
                   aligned16(gate) && aligned16(up) && aligned16(out);
  if (vec)
    swiglu_kernel<8><<<blocks_for(total / 8), 256, 0, ctx.stream()>>>(gate, gate_stride, up, up_stride, n, d,
                                                                      out, out_stride);
  else
    swiglu_kernel<1><<<blocks_for(total), 256, 0, ctx.stream()>>>(gate, gate_stride, up, up_stride, n, d, out,
                                                                  out_stride);
  CUDA_CHECK_LAUNCH();
}

void add_forward(Context& ctx, const bf16* a, const bf16* b, int64_t count, bf16* out) {
  if (count == 0) return;
  if (count % 8 == 0 && aligned16(a) && aligned16(b) && aligned16(out))
    add_kernel<8><<<blocks_for(count / 8), 256, 0, ctx.stream()>>>(a, b, count, out);
  else
    add_kernel<1><<<blocks_for(count), 256, 0, ctx.stream()>>>(a, b, count, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace nibble::cuda
