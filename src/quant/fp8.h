// defines: FP8 E4M3 ("fn" variant, as torch.float8_e4m3fn and the OCP FP8 spec define it) encode
// and decode on the host.
//
// Bits: sign | 4 exponent bits (bias 7) | 3 mantissa bits. No infinities; 0x7f and 0xff are NaN;
// the largest finite value is 448 (0x7e); subnormals are m * 2^-9 (0x01 = 2^-9 is the smallest).
#pragma once

#include <cstdint>

namespace nibble {

inline constexpr float kFp8E4M3Max = 448.0f;
inline constexpr float kFp8E4M3MinSubnormal = 1.0f / 512.0f;  // 2^-9

// Exact value of a code (NaN for 0x7f / 0xff; 0x80 is -0.0).
float fp8_e4m3_to_f32(uint8_t code);

// Round to nearest, ties to even, as torch's `.to(torch.float8_e4m3fn)` (c10 Float8_e4m3fn, CPU and
// CUDA alike): it does not saturate. |x| up to 464 rounds to 448 (464 is the tie between 448 and
// the non-existent 480, and 448's mantissa is even); |x| > 464, infinities and NaN give NaN
// (0x7f, or 0xff when the sign bit is set). -0.0 gives 0x80.
uint8_t f32_to_fp8_e4m3(float x);

// The same rounding with saturation: finite values beyond 448 clamp to +-448; NaN stays NaN.
uint8_t f32_to_fp8_e4m3_saturate(float x);

}  // namespace nibble
