#include <cuda_fp8.h>

#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/fill.cuh"

namespace nibble::cuda {
namespace {

// splitmix64 finaliser (Steele, Lea & Flood 2014): a counter-based generator, one hash per value.
__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__device__ __forceinline__ float normalish(uint64_t seed, int64_t i) {
  const uint64_t h = mix64(seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(i));
  float s = 0.0f;
#pragma unroll
  for (int k = 0; k < 4; ++k) s += static_cast<float>((h >> (16 * k)) & 0xffffu) * (1.0f / 65536.0f);
  return (s - 2.0f) * 1.7320508f;
}

__global__ void fill_kernel(bf16* p, int64_t count, uint64_t seed, float scale) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = __float2bfloat16_rn(scale * normalish(seed, i));
}

__global__ void fill_fp8_kernel(uint8_t* p, int64_t count, uint64_t seed, float scale) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = __nv_cvt_float_to_fp8(scale * normalish(seed, i), __NV_SATFINITE, __NV_E4M3);
}

}  // namespace

void fill_random_bf16(Context& ctx, bf16* p, int64_t count, uint64_t seed, float scale) {
  if (count <= 0) return;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(ceil_div(count, 256), 65536));
  fill_kernel<<<grid, 256, 0, ctx.stream()>>>(p, count, seed, scale);
  CUDA_CHECK_LAUNCH();
}

void fill_random_fp8(Context& ctx, uint8_t* p, int64_t count, uint64_t seed, float scale) {
  if (count <= 0) return;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(ceil_div(count, 256), 65536));
  fill_fp8_kernel<<<grid, 256, 0, ctx.stream()>>>(p, count, seed, scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace nibble::cuda
