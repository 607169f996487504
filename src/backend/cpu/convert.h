// defines: fp32 loads of F32 / BF16 / F16 elements for the CPU ops (weights keep their checkpoint
// dtype; rows are converted on the fly, never copied whole).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"

namespace nibble::cpu {

inline float bf16_bits_to_f32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

// Branch-light binary16 -> binary32: shift exponent and mantissa into place, then multiply by
// 2^112 to rebias the exponent (15 -> 127); that multiply is exact and also turns subnormal
// halves (an f32 denormal before it) into the right normal value. Exponent 31 (inf / NaN) is
// forced to 255 first so that it stays inf / NaN.
inline float f16_bits_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h & 0x7fffu) << 13;
  if ((h & 0x7c00u) == 0x7c00u) bits |= 0x7f800000u;
  const float mag = std::bit_cast<float>(bits) * 0x1p112f;
  return (h & 0x8000u) ? -mag : mag;
}

// dst[0, n) = src[0, n) as fp32; src of dtype F32, BF16 or F16.
inline void load_row_f32(const void* src, DType dtype, int64_t n, float* dst) {
  switch (dtype) {
    case DType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::BF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_bits_to_f32(s[i]);
      return;
    }
    case DType::F16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_bits_to_f32(s[i]);
      return;
    }
    default:
      NIBBLE_ASSERT(!"load_row_f32: dtype is not F32, BF16 or F16");
  }
}

// Element i of a F32 / BF16 / F16 array.
inline float load_f32(const void* src, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::F32:
      return static_cast<const float*>(src)[i];
    case DType::BF16:
      return bf16_bits_to_f32(static_cast<const uint16_t*>(src)[i]);
    case DType::F16:
      return f16_bits_to_f32(static_cast<const uint16_t*>(src)[i]);
    default:
      NIBBLE_ASSERT(!"load_f32: dtype is not F32, BF16 or F16");
      return 0.0f;
  }
}

inline bool is_dense_float(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

}  // namespace nibble::cpu
