#include "quant/fp8.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>

namespace nibble {
namespace {

constexpr uint8_t kNaN = 0x7f;

// The 256 code values, built once from the bit layout (not from the encoder under test).
std::array<float, 256> make_decode_table() {
  std::array<float, 256> t{};
  for (int c = 0; c < 256; ++c) {
    const int exp = (c >> 3) & 0xf;
    const int man = c & 0x7;
    float v;
    if (exp == 0xf && man == 0x7) {
      v = std::numeric_limits<float>::quiet_NaN();
    } else if (exp == 0) {
      v = std::ldexp(static_cast<float>(man), -9);  // subnormal: m * 2^-6 * 2^-3
    } else {
      v = std::ldexp(1.0f + static_cast<float>(man) / 8.0f, exp - 7);
    }
    t[c] = (c & 0x80) ? -v : v;
  }
  return t;
}

const std::array<float, 256> kDecode = make_decode_table();

}  // namespace

float fp8_e4m3_to_f32(uint8_t code) { return kDecode[code]; }

uint8_t f32_to_fp8_e4m3(float x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  if (std::isnan(x)) return sign | kNaN;
  const float a = std::fabs(x);
  uint32_t code;
  if (a < 0.015625f) {
    // Subnormal range (below 2^-6): quantum 2^-9. a * 512 is exact; nearbyint rounds to nearest
    // even in the default rounding mode. 8 * 2^-9 = 2^-6 becomes the smallest normal, code 0x08.
    code = static_cast<uint32_t>(std::nearbyint(a * 512.0f));
  } else {
    if (a > 464.0f) return sign | kNaN;  // also +-inf
    int e = 0;
    const float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
    // Mantissa in eighths: (2m - 1) * 8 is exact; round to nearest even, carry into the exponent.
    uint32_t q = static_cast<uint32_t>(std::nearbyint((2.0f * m - 1.0f) * 8.0f));
    int biased = e - 1 + 7;
    if (q == 8) {
      q = 0;
      ++biased;
    }
    code = static_cast<uint32_t>(biased) << 3 | q;
    if (code > 0x7e) return sign | kNaN;  // cannot happen for a <= 464, kept as a guard
  }
  return static_cast<uint8_t>(sign | code);
}

uint8_t f32_to_fp8_e4m3_saturate(float x) {
  if (std::isnan(x)) return f32_to_fp8_e4m3(x);
  return f32_to_fp8_e4m3(std::clamp(x, -kFp8E4M3Max, kFp8E4M3Max));
}

}  // namespace nibble
