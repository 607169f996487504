#include <algorithm>

#include "backend/cuda/check.cuh"
#include "backend/cuda/dequant.cuh"
#include "backend/cuda/nvfp4_decode.cuh"

namespace nibble::cuda {
namespace {

constexpr int kDequantWarps = 8;
constexpr int kGroupsPerLane = 4;  // 8-element groups per lane per round: 4 loads in flight
constexpr int64_t kWarpElems = kWarp * 8 * kGroupsPerLane;

// The weight is one flat run of `total` elements (rows are contiguous in codes, scales and out).
// A warp takes kWarpElems elements per round; in group j lane l converts the 8 elements at
// base + 256 j + 8 l: a 4-byte code load, a 1-byte scale load and a 16-byte store, each coalesced
// across the warp (128 B of codes, 512 B of output per instruction).
__global__ void __launch_bounds__(kDequantWarps* kWarp)
    nvfp4_dequant_kernel(const uint8_t* __restrict__ codes, const uint8_t* __restrict__ scales, int64_t total,
                         bf16* __restrict__ out) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kDequantWarps;
  for (int64_t base = (static_cast<int64_t>(blockIdx.x) * kDequantWarps + threadIdx.x / kWarp) * kWarpElems;
       base < total; base += warps * kWarpElems) {
    uint32_t c[kGroupsPerLane];
    uint8_t s[kGroupsPerLane];
#pragma unroll
    for (int j = 0; j < kGroupsPerLane; ++j) {
      const int64_t e = base + 256 * j + 8 * lane;
      if (e < total) {
        c[j] = __ldg(reinterpret_cast<const uint32_t*>(codes + e / 2));
        s[j] = __ldg(scales + e / 16);
      }
    }
#pragma unroll
    for (int j = 0; j < kGroupsPerLane; ++j) {
      const int64_t e = base + 256 * j + 8 * lane;
      if (e >= total) continue;
      const float sc = fp8_to_float(s[j]) * kE2m1HalfScale;
      float f[8];
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        const float2 v = e2m1x2_to_float2(c[j] >> (8 * b));
        f[2 * b] = v.x * sc;
        f[2 * b + 1] = v.y * sc;
      }
      *reinterpret_cast<Bf16x8*>(out + e) = float_to_bf16x8(f);
    }
  }
}

}  // namespace

void nvfp4_dequant(Context& ctx, const uint8_t* codes, const uint8_t* scales, int64_t rows, int64_t K,
                   bf16* out) {
  if (K % 16 != 0) fail("nvfp4_dequant: K={} (a multiple of 16 expected)", K);
  if (!aligned16(out) || reinterpret_cast<uintptr_t>(codes) % 4 != 0)
    fail("nvfp4_dequant: out must be 16-byte and codes 4-byte aligned");
  const int64_t total = rows * K;
  if (total == 0) return;
  const int64_t blocks = std::min<int64_t>(ceil_div(total, kWarpElems * kDequantWarps),
                                           static_cast<int64_t>(ctx.info().sm_count) * 16);
  nvfp4_dequant_kernel<<<static_cast<unsigned>(blocks), kDequantWarps * kWarp, 0, ctx.stream()>>>(
      codes, scales, total, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace nibble::cuda
