// defines: bf16 -> FP8 E4M3 as the KV-cache writes store it (kv_cache_write in attention.cu,
// qk_norm_rope_kv_forward in rope.cu): saturating to +-448, round to nearest even
// (cvt.rn.satfinite), the rounding of quant/fp8.h's f32_to_fp8_e4m3_saturate. One conversion for
// both writers, so a cache holds the same bytes whichever op appended to it. Only for .cu files:
// uses device code.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "backend/cuda/common.cuh"

namespace nibble::cuda {

// Two bf16 -> two e4m3 codes, x.x in the low byte.
__device__ __forceinline__ uint16_t bf16x2_to_e4m3x2(__nv_bfloat162 x) {
  return static_cast<uint16_t>(__nv_cvt_bfloat16raw2_to_fp8x2(x, __NV_SATFINITE, __NV_E4M3));
}

// Eight bf16 -> eight e4m3 codes in element order (one 8-byte store).
__device__ __forceinline__ uint2 bf16x8_to_e4m3x8(const Bf16x8& x) {
  uint2 r;
  r.x = bf16x2_to_e4m3x2(x.h[0]) | (static_cast<uint32_t>(bf16x2_to_e4m3x2(x.h[1])) << 16);
  r.y = bf16x2_to_e4m3x2(x.h[2]) | (static_cast<uint32_t>(bf16x2_to_e4m3x2(x.h[3])) << 16);
  return r;
}

}  // namespace nibble::cuda
