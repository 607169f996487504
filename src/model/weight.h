// defines: Weight, the weight of one linear layer as the backends consume it, dense or NVFP4.
//
// Layout follows HF / PyTorch nn.Linear: (out, in) row-major, `in` (K) contiguous, y = x W^T.
// The pointers refer to backend memory (host for the CPU backend, device for CUDA); a Weight never
// owns them.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace nibble {

enum class WeightFormat : uint8_t { Dense, NVFP4 };

struct Weight {
  WeightFormat format = WeightFormat::Dense;
  DType dtype = DType::F32;    // Dense: F32, BF16 or F16. NVFP4: U8 (packed codes)
  int64_t out = 0;             // rows (N)
  int64_t in = 0;              // columns (K), contiguous
  const void* data = nullptr;  // Dense: (out, in) of dtype. NVFP4: uint8 (out, in/2), low nibble = even k
  const uint8_t* scales = nullptr;  // NVFP4: float8_e4m3fn (out, in/16), one per 16 consecutive k
  float global_scale = 1.0f;        // NVFP4: weight_scale_2 (fp32), w = e2m1 * scale * global_scale

  bool is_nvfp4() const { return format == WeightFormat::NVFP4; }
};

}  // namespace nibble
