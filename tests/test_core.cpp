// Core utilities: dtype table, half-precision conversions against known bit patterns, atomic writes.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/dtype.h"
#include "core/error.h"
#include "core/file.h"
#include "core/half.h"
#include "support/test_support.h"

namespace nibble {
namespace {

TEST(DType, NamesRoundTrip) {
  for (DType t : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::U8, DType::I8,
                  DType::I16, DType::I32, DType::I64, DType::BOOL}) {
    auto back = dtype_from_name(dtype_name(t));
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, t);
  }
  EXPECT_FALSE(dtype_from_name("F4").has_value());
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::I64), 8u);
}

// Bit patterns from the IEEE 754 binary16 and bfloat16 definitions.
TEST(Half, KnownValues) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(-2.0f), 0xc000);
  EXPECT_EQ(bf16_to_f32(0x4049), 3.140625f);
  // 1 + 2^-8 is halfway between two bf16 values: ties to even (down); 1 + 3*2^-8 rounds up.
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);
  EXPECT_EQ(f32_to_f16(5.9604645e-08f), 0x0001);  // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_EQ(f16_to_f32(0x0001), 5.9604645e-08f);
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  for (uint32_t h = 0; h < 0x7c00; ++h) {  // every finite positive half round-trips
    ASSERT_EQ(f32_to_f16(f16_to_f32(static_cast<uint16_t>(h))), h) << h;
  }
}

TEST(File, AtomicWriteReplacesAndLeavesNoTemp) {
  test::ScratchDir dir("core");
  const auto p = dir / "x.txt";
  write_file_atomic(p, "one");
  write_file_atomic(p, "two");
  EXPECT_EQ(read_text_file(p), "two");
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) (void)e, ++n;
  EXPECT_EQ(n, 1);
  {
    AtomicFileWriter w(dir / "y.txt");
    w.write("partial");
  }  // not committed: nothing appears
  EXPECT_FALSE(std::filesystem::exists(dir / "y.txt"));
}

TEST(File, MissingFileIsAnError) {
  EXPECT_THROW(MappedFile("/nonexistent/nibble/file"), Error);
  EXPECT_THROW(read_text_file("/nonexistent/nibble/file"), Error);
}

}  // namespace
}  // namespace nibble
