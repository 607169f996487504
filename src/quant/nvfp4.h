// defines: the reference NVFP4 codec: E2M1 values, block scales, the global scale, packing,
// round-to-nearest quantisation exactly as NVIDIA ModelOpt computes it, seeded stochastic rounding,
// and dequantisation.
//
// Format (DESIGN.md "NVFP4"; ModelOpt qtensor/nvfp4_tensor.py):
//   value  E2M1 nibble: bit 3 = sign, bits 2..0 index {0, 0.5, 1, 1.5, 2, 3, 4, 6}
//   block  16 consecutive elements along K (the input dimension) share one FP8 E4M3 scale
//   global fp32 weight_scale_2 = amax(W) / (6 * 448)
//   w = e2m1[q] * fp8(scale) * weight_scale_2
//   packing: byte i of a row = q[2i+1] << 4 | q[2i] (even element in the low nibble)
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "model/weight.h"

namespace nibble {

inline constexpr int64_t kNvfp4Block = 16;  // elements per FP8 scale, along K
inline constexpr float kE2M1Max = 6.0f;

// Code -> value. Code 8 is -0.0 (sign bit with a zero magnitude): equal to 0 in every use, and it
// keeps quantise(dequantise(q)) == q (see quantize_nvfp4).
inline constexpr std::array<float, 16> kE2M1Values = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                                      -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// Round a scaled value to the nearest E2M1 code as ModelOpt's _cast_fp4 does: the magnitude
// indexes the bounds {0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5} (a value equal to a bound goes down),
// except that values equal to 0.75, 1.75 and 3.5 go up, which makes every tie go to the even
// mantissa: 0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4; above 6 saturates to 6.
// The sign bit is the float's sign bit (ModelOpt tests x < 0; the two differ only for -0.0).
// NaN gives code 0.
uint8_t e2m1_round(float x);

// Stochastic rounding between the two E2M1 neighbours of x: up with probability
// (|x| - lo) / (hi - lo), given u uniform in [0, 1). |x| >= 6 gives 6. Unbiased for |x| <= 6.
uint8_t e2m1_round_stochastic(float x, float u);

// ModelOpt's weight_scale_2 for a tensor of absolute maximum `amax`: amax * fp32(1 / 2688), which
// is how torch on CUDA evaluates ModelOpt's `amax.float() / (6.0 * 448.0)` (see nvfp4.cpp). An all-zero
// tensor (or one so small that the scale underflows to 0) gets 1.0: ModelOpt would compute 0 and then NaN
// block scales; 1.0 keeps every code 0 and every value exactly 0.
float nvfp4_global_scale(float amax);

// max |w[i]| over n values; throws Error naming the index when a value is NaN or infinite.
float abs_max(const float* w, int64_t n);

// One quantised (out, in) weight. `in` is a multiple of 16.
struct Nvfp4Tensor {
  int64_t out = 0;
  int64_t in = 0;
  std::vector<uint8_t> packed;  // (out, in/2) E2M1 codes, even k in the low nibble
  std::vector<uint8_t> scales;  // (out, in/16) FP8 E4M3 codes
  float global_scale = 1.0f;    // weight_scale_2

  Weight view() const;  // a Weight pointing into this tensor
};

// Round-to-nearest, ModelOpt's dynamic path (NVFP4QTensor.quantize with block size 16):
//   block_scale = fp8(max(block_amax / (6 * global), 2^-9)), a zero block_amax giving 1.0
//   q = e2m1_round(w / (float(block_scale) * global))   (fp32 arithmetic, in this order)
// `global_scale` is weight_scale_2 (ModelOpt shares one across q/k/v and across gate/up: pass the
// group's); without it, the tensor's own amax gives it. Throws Error when in % 16 != 0 or a value
// is not finite.
//
// Round trip: quantize_nvfp4(dequantize_nvfp4(Q), Q.global_scale) == Q byte for byte, because
// every block's largest value rounds to +-6 (its scale is within 1/16 of block_amax / 6), so the
// dequantised block reproduces its scale, and dequantised values divide back to exact E2M1 values.
// It needs (1) the global scale carried over: recomputing it from the dequantised amax,
// fl(fl(6 * fl(448 * g)) / 2688), differs from g in the last bit for about a third of all g;
// (2) code 8 kept as -0.0 (ModelOpt's table decodes it to +0, and its `x < 0` test then writes
// code 0: ModelOpt alone is not idempotent); (3) no block with a subnormal FP8 scale (block amax
// below 2^-6 * 6 * g, i.e. under 1/448 of the tensor's amax / 64), whose coarse scale can leave
// the largest value at 4 instead of 6, or whose values all round to 0 (scale 2^-9 -> 1.0).
Nvfp4Tensor quantize_nvfp4(const float* w, int64_t out, int64_t in);
Nvfp4Tensor quantize_nvfp4(const float* w, int64_t out, int64_t in, float global_scale);

// Stochastic rounding for training: the same scales, each value rounded up or down at random with
// the probability that makes it unbiased. The random number of element (r, k) is a hash of
// (seed, r * in + k), so the result depends only on the seed, not on threading or call order.
Nvfp4Tensor quantize_nvfp4_stochastic(const float* w, int64_t out, int64_t in, float global_scale,
                                      uint64_t seed);

// Uniform [0, 1) from a counter-based generator (splitmix64 finaliser of seed and counter).
float counter_uniform(uint64_t seed, uint64_t counter);

// Dequantise rows [row_begin, row_end) of an NVFP4 weight into y (row-major, `w.in` per row):
// w = e2m1[q] * (float(scale) * global), the product of the two scales rounded to fp32 first, as
// ModelOpt's dequantize does.
void dequantize_nvfp4_rows(const Weight& w, int64_t row_begin, int64_t row_end, float* y);
std::vector<float> dequantize_nvfp4(const Weight& w);  // all rows, (out, in)

}  // namespace nibble
