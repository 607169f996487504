// FP8 E4M3 (float8_e4m3fn) against values derived by hand from the format definition (OCP FP8
// spec: bias 7, no infinities, S.1111.111 is NaN, max 448, subnormals m * 2^-9). The comparison
// with PyTorch's own casts is in test_quant_fixtures.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "quant/fp8.h"

namespace nibble {
namespace {

TEST(Fp8E4M3, DecodeKnownCodes) {
  EXPECT_EQ(fp8_e4m3_to_f32(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(fp8_e4m3_to_f32(0x80)));
  EXPECT_EQ(fp8_e4m3_to_f32(0x80), 0.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x01), 0.001953125f);      // 2^-9, smallest subnormal
  EXPECT_EQ(fp8_e4m3_to_f32(0x07), 7 * 0.001953125f);  // largest subnormal
  EXPECT_EQ(fp8_e4m3_to_f32(0x08), 0.015625f);         // 2^-6, smallest normal
  EXPECT_EQ(fp8_e4m3_to_f32(0x38), 1.0f);              // exponent 7 = bias
  EXPECT_EQ(fp8_e4m3_to_f32(0x3c), 1.5f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x40), 2.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x7e), 448.0f);  // 1.75 * 2^8
  EXPECT_EQ(fp8_e4m3_to_f32(0xfe), -448.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(0xb8), -1.0f);
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_f32(0x7f)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_f32(0xff)));
}

TEST(Fp8E4M3, AllCodesRoundTripAndAreOrdered) {
  int nan_count = 0;
  for (int c = 0; c < 256; ++c) {
    const float v = fp8_e4m3_to_f32(static_cast<uint8_t>(c));
    if (std::isnan(v)) {
      ++nan_count;
      EXPECT_EQ(f32_to_fp8_e4m3(v) & 0x7f, 0x7f) << c;
      continue;
    }
    EXPECT_EQ(f32_to_fp8_e4m3(v), c) << "code " << c << " value " << v;
    if ((c & 0x7f) > 0 && (c & 0x7f) < 0x7f) {  // strictly increasing magnitudes
      EXPECT_GT(std::fabs(v), std::fabs(fp8_e4m3_to_f32(static_cast<uint8_t>(c - 1)))) << c;
    }
  }
  EXPECT_EQ(nan_count, 2);
}

TEST(Fp8E4M3, RoundsToNearestEven) {
  EXPECT_EQ(f32_to_fp8_e4m3(1.0625f), 0x38);  // tie between 1.0 (even) and 1.125
  EXPECT_EQ(f32_to_fp8_e4m3(1.1875f), 0x3a);  // tie between 1.125 and 1.25 (even)
  EXPECT_EQ(f32_to_fp8_e4m3(1.07f), 0x39);
  EXPECT_EQ(f32_to_fp8_e4m3(-1.0625f), 0xb8);
  EXPECT_EQ(f32_to_fp8_e4m3(0.0009765625f), 0x00);  // 2^-10: tie between 0 (even) and 2^-9
  EXPECT_EQ(f32_to_fp8_e4m3(0.00098f), 0x01);
  EXPECT_EQ(f32_to_fp8_e4m3(3 * 0.0009765625f), 0x02);          // 1.5 * 2^-9: tie, to 2 * 2^-9
  EXPECT_EQ(f32_to_fp8_e4m3(0.015625f - 0.0009765625f), 0x08);  // 7.5 * 2^-9 -> 2^-6 (even)
  EXPECT_EQ(f32_to_fp8_e4m3(1e-30f), 0x00);
  EXPECT_EQ(f32_to_fp8_e4m3(-1e-30f), 0x80);
  EXPECT_EQ(f32_to_fp8_e4m3(-0.0f), 0x80);
  EXPECT_EQ(f32_to_fp8_e4m3(240.0f), 0x77);  // 1.875 * 2^7
  EXPECT_EQ(f32_to_fp8_e4m3(248.0f), 0x78);  // tie between 240 and 256 (even)
}

// Beyond the largest finite value torch's cast does not saturate: 464 (the tie with the would-be
// 480) rounds to 448, anything above becomes NaN. The saturating variant clamps instead.
TEST(Fp8E4M3, OverflowAndSaturation) {
  EXPECT_EQ(f32_to_fp8_e4m3(449.0f), 0x7e);
  EXPECT_EQ(f32_to_fp8_e4m3(464.0f), 0x7e);
  EXPECT_EQ(f32_to_fp8_e4m3(-464.0f), 0xfe);
  EXPECT_EQ(f32_to_fp8_e4m3(464.00003f), 0x7f);
  EXPECT_EQ(f32_to_fp8_e4m3(1e6f), 0x7f);
  EXPECT_EQ(f32_to_fp8_e4m3(std::numeric_limits<float>::infinity()), 0x7f);
  EXPECT_EQ(f32_to_fp8_e4m3(-std::numeric_limits<float>::infinity()), 0xff);
  EXPECT_EQ(f32_to_fp8_e4m3(std::numeric_limits<float>::quiet_NaN()), 0x7f);
  EXPECT_EQ(f32_to_fp8_e4m3_saturate(1e6f), 0x7e);
  EXPECT_EQ(f32_to_fp8_e4m3_saturate(-std::numeric_limits<float>::infinity()), 0xfe);
  EXPECT_EQ(f32_to_fp8_e4m3_saturate(1.0625f), 0x38);
  EXPECT_EQ(f32_to_fp8_e4m3_saturate(std::numeric_limits<float>::quiet_NaN()), 0x7f);
}

}  // namespace
}  // namespace nibble
