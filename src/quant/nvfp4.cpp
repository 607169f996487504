#include "quant/nvfp4.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "quant/fp8.h"

namespace nibble {
namespace {

static_assert(kNvfp4Block % 2 == 0, "two codes per byte must not straddle a block");
static_assert(kNvfp4Block / 2 == 8, "a block is 8 packed bytes");

// Magnitudes of codes 0..7.
constexpr std::array<float, 8> kGrid = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

// ModelOpt clamps block scales at the smallest FP8 subnormal so that a tiny block does not
// underflow to a zero scale (nvfp4_tensor.py get_weights_scaling_factor: clamp_(min=2**-9)).
constexpr float kMinBlockScale = 1.0f / 512.0f;

uint8_t block_scale_code(float block_amax, float six_global) {
  // per_block_scale = per_block_amax / (6 * weights_scaling_factor_2); zeros -> 1.0; clamp; fp8.
  float s = block_amax / six_global;
  if (s == 0.0f) s = 1.0f;
  s = std::max(s, kMinBlockScale);
  // Saturating: identical to torch's cast for every s <= 464, which is all that ModelOpt's own
  // global scale can produce (block_amax <= amax); a caller's smaller global cannot yield NaN.
  return f32_to_fp8_e4m3_saturate(s);
}

void check_shape(int64_t out, int64_t in) {
  if (out < 0 || in < 0) fail("NVFP4: invalid weight shape ({}, {})", out, in);
  if (in % kNvfp4Block != 0)
    fail("NVFP4: the input dimension K = {} is not a multiple of the block size {}", in, kNvfp4Block);
}

template <typename RoundFn>
Nvfp4Tensor quantize_impl(const float* w, int64_t out, int64_t in, float global_scale, RoundFn round) {
  check_shape(out, in);
  if (!(global_scale > 0.0f) || !std::isfinite(global_scale))
    fail("NVFP4: the global scale must be positive and finite, got {}", global_scale);
  Nvfp4Tensor t;
  t.out = out;
  t.in = in;
  t.global_scale = global_scale;
  t.packed.assign(static_cast<size_t>(out * in / 2), 0);
  t.scales.assign(static_cast<size_t>(out * (in / kNvfp4Block)), 0);
  const float six_global = 6.0f * global_scale;
  const int64_t nblocks = in / kNvfp4Block;
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t b = 0; b < nblocks; ++b) {
      const int64_t k0 = b * kNvfp4Block;
      const float* src = w + r * in + k0;
      float block_amax = 0.0f;
      for (int64_t i = 0; i < kNvfp4Block; ++i) {
        if (!std::isfinite(src[i])) fail("NVFP4: non-finite value {} at ({}, {})", src[i], r, k0 + i);
        block_amax = std::max(block_amax, std::fabs(src[i]));
      }
      const uint8_t sc = block_scale_code(block_amax, six_global);
      t.scales[static_cast<size_t>(r * nblocks + b)] = sc;
      // scaled_weight = input / (weights_scaling_factor.float() * weights_scaling_factor_2)
      const float denom = fp8_e4m3_to_f32(sc) * global_scale;
      uint8_t* dst = t.packed.data() + (r * in + k0) / 2;
      for (int64_t i = 0; i < kNvfp4Block; i += 2) {
        const uint8_t lo = round(src[i] / denom, r * in + k0 + i);
        const uint8_t hi = round(src[i + 1] / denom, r * in + k0 + i + 1);
        dst[i / 2] = static_cast<uint8_t>(hi << 4 | lo);
      }
    }
  }
  return t;
}

}  // namespace

uint8_t e2m1_round(float x) {
  const uint8_t sign = std::signbit(x) ? 0x8 : 0x0;
  const float a = std::fabs(x);
  // torch.searchsorted(bounds, a) (side "left") = the number of bounds strictly below a.
  uint8_t ord = (a > 0.25f) + (a > 0.75f) + (a > 1.25f) + (a > 1.75f) + (a > 2.5f) + (a > 3.5f) + (a > 5.0f);
  ord += (a == 0.75f) || (a == 1.75f) || (a == 3.5f);  // ties at odd codes go up, to the even one
  return sign | ord;
}

uint8_t e2m1_round_stochastic(float x, float u) {
  const uint8_t sign = std::signbit(x) ? 0x8 : 0x0;
  const float a = std::fabs(x);
  if (!(a < kE2M1Max)) return std::isnan(a) ? 0 : sign | 7;
  uint8_t lo = 0;
  while (kGrid[lo + 1] <= a) ++lo;  // kGrid[lo] <= a < kGrid[lo + 1]
  const float p = (a - kGrid[lo]) / (kGrid[lo + 1] - kGrid[lo]);
  return sign | static_cast<uint8_t>(lo + (u < p ? 1 : 0));
}

float nvfp4_global_scale(float amax) {
  // get_weights_scaling_factor_2: reduce_amax(input).float() / (6.0 * 448.0). ModelOpt runs this
  // on the GPU, where torch divides a tensor by a Python scalar as a multiply by the scalar's fp32
  // reciprocal (BinaryDivTrueKernel.cu); on the CPU it divides. The two differ in the last bit for
  // some amax (tests/fixtures/quant has both); real ModelOpt checkpoints come from the GPU.
  constexpr float kInv2688 = 1.0f / 2688.0f;
  const float g = amax * kInv2688;
  return g > 0.0f ? g : 1.0f;
}

float abs_max(const float* w, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(w[i])) fail("non-finite value {} at flat index {}", w[i], i);
    m = std::max(m, std::fabs(w[i]));
  }
  return m;
}

Weight Nvfp4Tensor::view() const {
  Weight v;
  v.format = WeightFormat::NVFP4;
  v.dtype = DType::U8;
  v.out = out;
  v.in = in;
  v.data = packed.data();
  v.scales = scales.data();
  v.global_scale = global_scale;
  return v;
}

Nvfp4Tensor quantize_nvfp4(const float* w, int64_t out, int64_t in) {
  check_shape(out, in);
  return quantize_nvfp4(w, out, in, nvfp4_global_scale(abs_max(w, out * in)));
}

Nvfp4Tensor quantize_nvfp4(const float* w, int64_t out, int64_t in, float global_scale) {
  return quantize_impl(w, out, in, global_scale, [](float x, int64_t) { return e2m1_round(x); });
}

float counter_uniform(uint64_t seed, uint64_t counter) {
  // splitmix64 finaliser (Steele, Lea, Flood 2014) over a Weyl sequence: a counter-based generator.
  uint64_t z = seed + (counter + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // 24 bits: exact in fp32, < 1
}

Nvfp4Tensor quantize_nvfp4_stochastic(const float* w, int64_t out, int64_t in, float global_scale,
                                      uint64_t seed) {
  return quantize_impl(w, out, in, global_scale, [seed](float x, int64_t idx) {
    return e2m1_round_stochastic(x, counter_uniform(seed, static_cast<uint64_t>(idx)));
  });
}

void dequantize_nvfp4_rows(const Weight& w, int64_t row_begin, int64_t row_end, float* y) {
  NIBBLE_ASSERT(w.is_nvfp4() && w.in % kNvfp4Block == 0);
  NIBBLE_ASSERT(0 <= row_begin && row_begin <= row_end && row_end <= w.out);
  const auto* packed = static_cast<const uint8_t*>(w.data);
  const int64_t nblocks = w.in / kNvfp4Block;
  for (int64_t r = row_begin; r < row_end; ++r) {
    float* dst = y + (r - row_begin) * w.in;
    for (int64_t b = 0; b < nblocks; ++b) {
      // per_block_scale = scale.float() * double_scale, then e2m1 * per_block_scale (ModelOpt).
      const float bs = fp8_e4m3_to_f32(w.scales[r * nblocks + b]) * w.global_scale;
      const uint8_t* src = packed + (r * w.in + b * kNvfp4Block) / 2;
      for (int64_t i = 0; i < kNvfp4Block / 2; ++i) {
        dst[b * kNvfp4Block + 2 * i] = kE2M1Values[src[i] & 0xf] * bs;
        dst[b * kNvfp4Block + 2 * i + 1] = kE2M1Values[src[i] >> 4] * bs;
      }
    }
  }
}

std::vector<float> dequantize_nvfp4(const Weight& w) {
  std::vector<float> y(static_cast<size_t>(w.out * w.in));
  dequantize_nvfp4_rows(w, 0, w.out, y.data());
  return y;
}

}  // namespace nibble
