// The NVFP4 codec and the CPU NVFP4 matmul against vectors derived by hand from DESIGN.md "NVFP4"
// (ModelOpt nvfp4_tensor.py): E2M1 ties to even, block scales, the zero-scale rule, packing order,
// underflowing blocks, stochastic rounding statistics, and dequantise-then-matmul in double.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/nvfp4_matmul.h"
#include "core/error.h"
#include "core/half.h"
#include "quant/fp8.h"
#include "quant/nvfp4.h"

namespace nibble {
namespace {

constexpr float kG = 1.0f / 4096.0f;  // a power-of-two global scale keeps every product exact

TEST(E2M1, RoundingTable) {
  // DESIGN.md: 0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4; above 6 saturates.
  const std::vector<std::pair<float, uint8_t>> cases = {
      {0.0f, 0},  {0.25f, 0}, {0.2501f, 1}, {0.5f, 1},  {0.75f, 2}, {0.7499f, 1}, {1.0f, 2}, {1.25f, 2},
      {1.26f, 3}, {1.5f, 3},  {1.75f, 4},   {2.0f, 4},  {2.5f, 4},  {2.51f, 5},   {3.0f, 5}, {3.5f, 6},
      {3.49f, 5}, {4.0f, 6},  {5.0f, 6},    {5.01f, 7}, {6.0f, 7},  {7.0f, 7},    {1e9f, 7}};
  for (auto [x, code] : cases) {
    EXPECT_EQ(e2m1_round(x), code) << x;
    EXPECT_EQ(e2m1_round(-x), code | 8) << -x;
  }
  EXPECT_EQ(e2m1_round(-0.1f), 8);  // rounds to zero, keeps its sign bit
  for (int c = 0; c < 16; ++c) EXPECT_EQ(e2m1_round(kE2M1Values[c]), c) << c;
}

TEST(Nvfp4, GlobalScale) {
  EXPECT_EQ(nvfp4_global_scale(2688.0f * kG), kG);  // amax / (6 * 448)
  EXPECT_EQ(nvfp4_global_scale(2688.0f), 1.0f);
  EXPECT_EQ(nvfp4_global_scale(0.0f), 1.0f);  // all-zero tensor: 1.0, not ModelOpt's 0 (-> NaN)
}

// One block at block scale 2: w / (2 * g) lands exactly on every E2M1 rounding bound.
TEST(Nvfp4, HandDerivedBlockTiesAndPacking) {
  const float v[16] = {0.25f,  0.75f,  1.25f,  1.75f,  2.5f,  3.5f,  5.0f,  6.0f,
                       -0.25f, -0.75f, -1.25f, -1.75f, -2.5f, -3.5f, -5.0f, 6.0f};
  std::vector<float> w(16);
  for (int i = 0; i < 16; ++i) w[i] = v[i] * 2.0f * kG;
  const Nvfp4Tensor q = quantize_nvfp4(w.data(), 1, 16, kG);
  ASSERT_EQ(q.scales.size(), 1u);
  EXPECT_EQ(q.scales[0], 0x40);  // block amax 12g / (6g) = 2.0 = fp8 0x40
  // codes 0,2,2,4,4,6,6,7 | 8,10,10,12,12,14,14,7; byte = odd << 4 | even
  const std::vector<uint8_t> expect = {0x20, 0x42, 0x64, 0x76, 0xa8, 0xca, 0xec, 0x7e};
  EXPECT_EQ(q.packed, expect);
  const std::vector<float> d = dequantize_nvfp4(q.view());
  const float rounded[16] = {0, 1, 1, 2, 2, 4, 4, 6, -0.0f, -1, -1, -2, -2, -4, -4, 6};
  for (int i = 0; i < 16; ++i) EXPECT_EQ(d[i], rounded[i] * 2.0f * kG) << i;
}

TEST(Nvfp4, PackingLowNibbleIsEvenElement) {
  std::vector<float> w(32, 0.0f);
  w[0] = 6.0f;   // -> code 7 in the low nibble of byte 0
  w[3] = -3.0f;  // -> code 13 (0xd) in the high nibble of byte 1
  w[16] = 1.0f;  // second block: its own scale
  const Nvfp4Tensor q = quantize_nvfp4(w.data(), 1, 32, nvfp4_global_scale(6.0f));
  // global = 6 / 2688; block 0 scale = 6 / (6 * global) = 448 (0x7e)
  EXPECT_EQ(q.scales[0], 0x7e);
  EXPECT_EQ(q.packed[0], 0x07);
  EXPECT_EQ(q.packed[1], 0xd0);
  // block 1: 1 / (6 * g) = 74.67 -> fp8 72 (0x69: 1.125 * 2^6); 1 / (72 g) = 6.22 -> 6 (code 7)
  EXPECT_EQ(q.scales[1], 0x69);
  EXPECT_EQ(q.packed[8], 0x07);
}

TEST(Nvfp4, ZeroBlockAndZeroTensor) {
  std::vector<float> w(32, 0.0f);
  w[20] = 1.0f;
  const Nvfp4Tensor q = quantize_nvfp4(w.data(), 1, 32);
  EXPECT_EQ(q.scales[0], 0x38);  // zero block amax -> scale 1.0 (ModelOpt's rule)
  for (int i = 0; i < 8; ++i) EXPECT_EQ(q.packed[i], 0) << i;

  const std::vector<float> z(64, 0.0f);
  const Nvfp4Tensor qz = quantize_nvfp4(z.data(), 2, 32);
  EXPECT_EQ(qz.global_scale, 1.0f);
  for (uint8_t s : qz.scales) EXPECT_EQ(s, 0x38);
  for (uint8_t b : qz.packed) EXPECT_EQ(b, 0);
  for (float d : dequantize_nvfp4(qz.view())) EXPECT_EQ(d, 0.0f);
}

// A block far below the tensor's amax: its scale block_amax / (6 g) is below the smallest FP8
// subnormal. ModelOpt clamps it to 2^-9 (code 0x01); the values round to zero, never NaN.
TEST(Nvfp4, UnderflowingBlockGivesZerosNotNaN) {
  std::vector<float> w(32, 0.0f);
  w[0] = 2688.0f;                                                 // global scale 1.0
  for (int i = 16; i < 32; ++i) w[i] = (i % 2 ? 1e-4f : -1e-4f);  // 1e-4 / 6 < 2^-9
  const Nvfp4Tensor q = quantize_nvfp4(w.data(), 1, 32);
  EXPECT_EQ(q.global_scale, 1.0f);
  EXPECT_EQ(q.scales[1], 0x01);
  for (float d : dequantize_nvfp4(q.view())) EXPECT_FALSE(std::isnan(d));
  const std::vector<float> d = dequantize_nvfp4(q.view());
  for (int i = 16; i < 32; ++i) EXPECT_EQ(d[i], 0.0f) << i;

  // A checkpoint from an older ModelOpt (no clamp) stores scale 0x00 with codes of +-6: zeros.
  Nvfp4Tensor old = q;
  old.scales[1] = 0x00;
  for (int i = 8; i < 16; ++i) old.packed[i] = 0xf7;
  for (int i = 16; i < 32; ++i) EXPECT_EQ(dequantize_nvfp4(old.view())[i], 0.0f);
  std::vector<float> x(32, 1.0f), y(1, 0.0f);
  nvfp4_matmul_rows(x.data(), 1, old.view(), 0, 1, y.data());
  EXPECT_EQ(y[0], 2688.0f);
}

TEST(Nvfp4, Errors) {
  std::vector<float> w(24, 1.0f);
  EXPECT_THROW(quantize_nvfp4(w.data(), 1, 24), Error);  // K not a multiple of 16
  std::vector<float> bad(16, 1.0f);
  bad[5] = std::nanf("");
  EXPECT_THROW(quantize_nvfp4(bad.data(), 1, 16), Error);
  bad[5] = INFINITY;
  EXPECT_THROW(quantize_nvfp4(bad.data(), 1, 16, 1.0f), Error);
  EXPECT_THROW(quantize_nvfp4(w.data(), 1, 16, 0.0f), Error);
}

std::vector<float> random_weights(int64_t out, int64_t in, uint32_t seed, float sigma = 0.05f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sigma);
  std::vector<float> w(static_cast<size_t>(out * in));
  for (auto& v : w) v = nd(rng);
  return w;
}

// quantise(dequantise(Q)) == Q byte for byte when the global scale is kept (ModelOpt's
// weights_scaling_factor_2 argument), for weights whose blocks all have normal FP8 scales.
TEST(Nvfp4, RequantiseDequantisedIsByteIdentical) {
  const int64_t out = 64, in = 256;
  const std::vector<float> w = random_weights(out, in, 7);
  const Nvfp4Tensor q = quantize_nvfp4(w.data(), out, in);
  const std::vector<float> d = dequantize_nvfp4(q.view());
  const Nvfp4Tensor q2 = quantize_nvfp4(d.data(), out, in, q.global_scale);
  EXPECT_EQ(q2.scales, q.scales);
  EXPECT_EQ(q2.packed, q.packed);
}

// The documented limits of that round trip (nvfp4.h), so that they stay true and known.
TEST(Nvfp4, RequantiseCornerCases) {
  // A block with a subnormal FP8 scale: g = 1, block amax 9.6 * 2^-9 -> scale 2^-8 (code 0x02);
  // its largest value, 4.8, rounds to 4, so the dequantised block asks for scale 2^-9.
  std::vector<float> w(32, 0.0f);
  w[0] = 2688.0f;
  w[16] = 9.6f / 512.0f;
  const Nvfp4Tensor q = quantize_nvfp4(w.data(), 1, 32);
  ASSERT_EQ(q.global_scale, 1.0f);
  EXPECT_EQ(q.scales[1], 0x02);
  EXPECT_EQ(q.packed[8] & 0xf, 6);  // 4.0
  const std::vector<float> d = dequantize_nvfp4(q.view());
  EXPECT_NE(quantize_nvfp4(d.data(), 1, 32, 1.0f).scales[1], q.scales[1]);

  // The global scale recomputed from the dequantised tensor can be one ulp off:
  // amax 0.1 -> g; the dequantised maximum 6 * (448 * g) gives back a different g.
  int off = 0;
  for (int i = 1; i <= 1000; ++i) {
    const float g = nvfp4_global_scale(0.001f * static_cast<float>(i));
    off += nvfp4_global_scale(6.0f * (448.0f * g)) != g;
  }
  EXPECT_GT(off, 100);  // about a third
  EXPECT_LT(off, 600);
}

TEST(Nvfp4, StochasticRoundingIsUnbiasedAndSeeded) {
  // Scaled values 1.25 (between 1 and 1.5) and 4.5 (between 4 and 6): means over many elements.
  const int64_t out = 256, in = 64;
  std::vector<float> w(static_cast<size_t>(out * in));
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t k = 0; k < in; ++k) {
      const int64_t pos = k % 16;
      w[r * in + k] = (pos == 0 ? 6.0f : (pos % 2 ? 1.25f : 4.5f)) * kG;  // block scale 1.0
    }
  }
  const Nvfp4Tensor a = quantize_nvfp4_stochastic(w.data(), out, in, kG, 42);
  const Nvfp4Tensor b = quantize_nvfp4_stochastic(w.data(), out, in, kG, 42);
  const Nvfp4Tensor c = quantize_nvfp4_stochastic(w.data(), out, in, kG, 43);
  EXPECT_EQ(a.packed, b.packed);
  EXPECT_NE(a.packed, c.packed);
  for (uint8_t s : a.scales) EXPECT_EQ(s, 0x38);
  const std::vector<float> d = dequantize_nvfp4(a.view());
  double sum_odd = 0, sum_even = 0;
  int n_odd = 0, n_even = 0;
  for (int64_t i = 0; i < out * in; ++i) {
    const int64_t pos = i % 16;
    if (pos == 0) continue;
    const float v = d[i] / kG;
    if (pos % 2) {
      EXPECT_TRUE(v == 1.0f || v == 1.5f) << v;
      sum_odd += v;
      ++n_odd;
    } else {
      EXPECT_TRUE(v == 4.0f || v == 6.0f) << v;
      sum_even += v;
      ++n_even;
    }
  }
  // Bernoulli(p) * step: sd of the mean = step * 0.5 / sqrt(n); allow 5 sd.
  EXPECT_NEAR(sum_odd / n_odd, 1.25, 5 * 0.5 * 0.5 / std::sqrt(n_odd));
  EXPECT_NEAR(sum_even / n_even, 4.5, 5 * 2.0 * std::sqrt(0.25 * 0.75) / std::sqrt(n_even));
  // Round to nearest would lose the 0.25: 1.25 -> 1 always.
  EXPECT_EQ(e2m1_round_stochastic(1.25f, 0.99f), 2);
  EXPECT_EQ(e2m1_round_stochastic(1.25f, 0.0f), 3);
  EXPECT_EQ(e2m1_round_stochastic(-7.0f, 0.0f), 15);
  EXPECT_EQ(e2m1_round_stochastic(3.0f, 0.999f), 5);  // exactly on the grid: never moves
}

// The matmul against dequantise-then-matmul in double. Bound: each output is an fp32 sum of K
// products; the error is at most ~K * 2^-24 * sum|x_k w_k| (Higham's bound for recursive
// summation), so 1e-5 * sum|x w| with K <= 256 is a bound that a wrong scale or nibble breaks.
TEST(Nvfp4Matmul, MatchesDequantisedReferenceInDouble) {
  for (auto [n, out, in] : {std::tuple{1, 5, 16}, std::tuple{3, 17, 64}, std::tuple{4, 33, 256}}) {
    const std::vector<float> w = random_weights(out, in, 11 + out, 0.2f);
    const Nvfp4Tensor q = quantize_nvfp4(w.data(), out, in);
    const std::vector<float> d = dequantize_nvfp4(q.view());
    const std::vector<float> x = random_weights(n, in, 99 + n, 1.0f);
    std::vector<float> y(static_cast<size_t>(n * out), -12345.0f);
    nvfp4_matmul_rows(x.data(), n, q.view(), 1, out, y.data());  // row 0 left to the sentinel
    for (int t = 0; t < n; ++t) {
      EXPECT_EQ(y[t * out], -12345.0f);
      for (int j = 1; j < out; ++j) {
        double ref = 0, mag = 0;
        for (int k = 0; k < in; ++k) {
          ref += static_cast<double>(x[t * in + k]) * d[j * in + k];
          mag += std::fabs(static_cast<double>(x[t * in + k]) * d[j * in + k]);
        }
        EXPECT_NEAR(y[t * out + j], ref, 1e-5 * mag + 1e-30) << n << " " << out << " " << in << " " << j;
      }
    }
  }
}

TEST(Nvfp4Matmul, DenseWeights) {
  const int n = 2, out = 3, in = 20;
  const std::vector<float> w = random_weights(out, in, 5, 1.0f);
  const std::vector<float> x = random_weights(n, in, 6, 1.0f);
  std::vector<uint16_t> wb(w.size()), wh(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    wb[i] = f32_to_bf16(w[i]);
    wh[i] = f32_to_f16(w[i]);
  }
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    Weight wt;
    wt.dtype = dt;
    wt.out = out;
    wt.in = in;
    wt.data = dt == DType::F32 ? static_cast<const void*>(w.data())
                               : (dt == DType::BF16 ? static_cast<const void*>(wb.data()) : wh.data());
    std::vector<float> y(n * out);
    nvfp4_matmul_rows(x.data(), n, wt, 0, out, y.data());
    for (int t = 0; t < n; ++t) {
      for (int j = 0; j < out; ++j) {
        double ref = 0;
        for (int k = 0; k < in; ++k) {
          const float wk = dt == DType::F32 ? w[j * in + k]
                                            : (dt == DType::BF16 ? bf16_to_f32(wb[j * in + k])
                                                                 : f16_to_f32(wh[j * in + k]));
          ref += static_cast<double>(x[t * in + k]) * wk;
        }
        EXPECT_NEAR(y[t * out + j], ref, 1e-4) << static_cast<int>(dt);
      }
    }
  }
}

}  // namespace
}  // namespace nibble
