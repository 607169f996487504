// defines: the NVFP4 decoding helpers the kernels share (e2m1 codes and fp8 e4m3 scales to
// float) and gemv_value, where both NVFP4 GEMVs (linear.cu's FFMA kernel, gemv_mma.cu's tensor-core
// kernel) turn a sum into an output value. Only for .cu files: uses device code.
//
// E2M1 code c (bit 3 sign, bits 2..0 = e1 e0 m) placed at fp16 bits 15 and 11..9 is an fp16 whose
// value is e2m1(c) * 2^-14: exponent field e, mantissa m<<9 gives 2^(e-15) (1 + m/2) for e >= 1 and
// the subnormal m * 2^-15 for e = 0 (0 or 0.5 after scaling). The 2^14 is folded into the scales.
// (DESIGN.md "NVFP4"; OCP Microscaling Formats spec v1.0 for e2m1.)
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "backend/cuda/common.cuh"

namespace nibble::cuda {

constexpr float kE2m1HalfScale = 16384.0f;

// Byte b = hi << 4 | lo (even element in the low nibble) -> {e2m1(lo), e2m1(hi)} * 2^-14.
__device__ __forceinline__ float2 e2m1x2_to_float2(uint32_t b) {
  const uint32_t h = ((b & 0x7u) << 9) | ((b & 0x8u) << 12) | ((b & 0x70u) << 21) | ((b & 0x80u) << 24);
  return __half22float2(*reinterpret_cast<const __half2*>(&h));
}

// fp8 e4m3 scale -> float, exact (cvt.rn.f16x2.e4m3x2, PTX ISA 8.x).
__device__ __forceinline__ float fp8_to_float(uint8_t s) {
  const __half_raw r = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(s), __NV_E4M3);
  return __half2float(*reinterpret_cast<const __half*>(&r));
}

// Two fp8 e4m3 scales (low byte first) -> float2, exact (cvt.rn.f16x2.e4m3x2, PTX ISA 8.x).
__device__ __forceinline__ float2 fp8x2_to_float2(uint16_t s) {
  const __half2_raw r = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(s), __NV_E4M3);
  return __half22float2(*reinterpret_cast<const __half2*>(&r));
}

// y = acc * scale (+ bias): the one place every GEMV kernel turns its sum into an output value, so
// that the fused variants round exactly as linear_forward does (no `+ 0.0f`: it would turn -0 into +0).
__device__ __forceinline__ float gemv_value(float acc, float scale, const float* bias, int64_t row) {
  return bias ? fmaf(acc, scale, bias[row]) : acc * scale;
}

}  // namespace nibble::cuda
