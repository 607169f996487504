// defines: the NVFP4 side of `nibble inspect`: logical weights (an NVFP4 linear's codes, block
// scales and global scale counted as one weight) with bytes and bits per weight, the quantisation
// error of an NVFP4 model against its source (NMSE per weight, worst first), and the
// check_weights hook that validates NVFP4 linears.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "format/hf_config.h"
#include "format/safetensors.h"

namespace nibble {

struct WeightBitsRow {
  std::string name;            // "model.layers.0.mlp.up_proj.weight" (the logical weight)
  std::string format;          // "NVFP4", or the stored dtype ("BF16", ...)
  std::vector<int64_t> shape;  // logical shape: [out, in] for NVFP4
  int64_t params = 0;          // logical weights
  uint64_t bytes = 0;          // every stored tensor of it (codes, block scales, global, input scale)
  double bits_per_weight() const {
    return params ? 8.0 * static_cast<double>(bytes) / static_cast<double>(params) : 0;
  }
};

struct WeightBitsReport {
  std::vector<WeightBitsRow> rows;  // natural name order
  struct Total {
    std::string format;
    int64_t weights = 0;  // rows
    int64_t params = 0;
    uint64_t bytes = 0;
  };
  std::vector<Total> by_format;  // NVFP4 first, then dtypes by name
  Total total;
};

// NVFP4 linears are recognised by their tensors (ModelOpt or compressed-tensors layout); every
// other stored tensor is its own row. Throws Error for a broken NVFP4 layout.
WeightBitsReport inspect_weight_bits(const WeightStore& store);
std::string format_weight_bits(const WeightBitsReport& report);

struct WeightErrorRow {
  std::string name;    // logical weight name, as in the reference
  std::string format;  // format in the quantised model
  int64_t params = 0;
  double nmse = 0;     // sum (q - ref)^2 / sum ref^2 (0 when ref is all zero and q equals it)
  double max_abs = 0;  // max |q - ref|
};

// Every float weight of `ref` against the same weight in `quant` (NVFP4 dequantised, dense ones
// converted), worst NMSE first. Errors name the weight: missing in `quant`, or of another shape.
std::vector<WeightErrorRow> quantization_error(const WeightStore& quant, const WeightStore& ref);
std::string format_quantization_error(const std::vector<WeightErrorRow>& rows);

// For check_weights / weight_problems (format/hf_config.h): nullopt when the expected linear is
// not stored as NVFP4, "" when it is and its layout is right, else the problem.
std::optional<std::string> check_nvfp4_linear(const ExpectedTensor& expected, const WeightStore& store);

}  // namespace nibble
