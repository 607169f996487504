#include "backend/cpu/nvfp4_matmul.h"

#include <array>

#include "core/error.h"
#include "core/half.h"
#include "quant/fp8.h"
#include "quant/nvfp4.h"

namespace nibble {
namespace {

// The two E2M1 values of every packed byte: {low nibble (even k), high nibble (odd k)}.
struct PairTable {
  std::array<std::array<float, 2>, 256> v{};
  PairTable() {
    for (int b = 0; b < 256; ++b) v[b] = {kE2M1Values[b & 0xf], kE2M1Values[b >> 4]};
  }
};
const PairTable kPairs;

// One output row of an NVFP4 weight against one input row: per 16-element block, the dot product
// of x with the E2M1 values, then times that block's scale (fp8 scale * global, as ModelOpt's
// dequantize forms it). No dequantised copy of the weight exists at any point.
float dot_nvfp4_row(const float* x, const uint8_t* codes, const uint8_t* scales, int64_t in, float global) {
  const int64_t nblocks = in / kNvfp4Block;
  float acc = 0.0f;
  for (int64_t b = 0; b < nblocks; ++b) {
    const uint8_t* c = codes + b * (kNvfp4Block / 2);
    const float* xb = x + b * kNvfp4Block;
    float s0 = 0.0f, s1 = 0.0f;
    for (int64_t i = 0; i < kNvfp4Block / 2; ++i) {
      const auto& p = kPairs.v[c[i]];
      s0 += xb[2 * i] * p[0];
      s1 += xb[2 * i + 1] * p[1];
    }
    acc += (s0 + s1) * (fp8_e4m3_to_f32(scales[b]) * global);
  }
  return acc;
}

template <typename Load>
float dot_dense_row(const float* x, const void* row, int64_t in, Load load) {
  float acc = 0.0f;
  for (int64_t k = 0; k < in; ++k) acc += x[k] * load(row, k);
  return acc;
}

}  // namespace

void nvfp4_matmul_rows(const float* x, int64_t n, const Weight& w, int64_t row_begin, int64_t row_end,
                       float* y) {
  NIBBLE_ASSERT(0 <= row_begin && row_begin <= row_end && row_end <= w.out && n >= 0);
  if (w.is_nvfp4()) {
    NIBBLE_ASSERT(w.in % kNvfp4Block == 0 && w.scales != nullptr);
    const auto* codes = static_cast<const uint8_t*>(w.data);
    const int64_t nblocks = w.in / kNvfp4Block;
    for (int64_t j = row_begin; j < row_end; ++j) {
      const uint8_t* cj = codes + j * (w.in / 2);
      const uint8_t* sj = w.scales + j * nblocks;
      for (int64_t t = 0; t < n; ++t)
        y[t * w.out + j] = dot_nvfp4_row(x + t * w.in, cj, sj, w.in, w.global_scale);
    }
    return;
  }
  const auto* base = static_cast<const uint8_t*>(w.data);
  const size_t row_bytes = static_cast<size_t>(w.in) * dtype_size(w.dtype);
  for (int64_t j = row_begin; j < row_end; ++j) {
    const void* row = base + static_cast<size_t>(j) * row_bytes;
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = x + t * w.in;
      float v;
      switch (w.dtype) {
        case DType::F32:
          v = dot_dense_row(xt, row, w.in,
                            [](const void* p, int64_t k) { return static_cast<const float*>(p)[k]; });
          break;
        case DType::BF16:
          v = dot_dense_row(xt, row, w.in, [](const void* p, int64_t k) {
            return bf16_to_f32(static_cast<const uint16_t*>(p)[k]);
          });
          break;
        case DType::F16:
          v = dot_dense_row(xt, row, w.in, [](const void* p, int64_t k) {
            return f16_to_f32(static_cast<const uint16_t*>(p)[k]);
          });
          break;
        default:
          NIBBLE_ASSERT(!"dense weight dtype must be F32, BF16 or F16");
          v = 0.0f;
      }
      y[t * w.out + j] = v;
    }
  }
}

}  // namespace nibble
