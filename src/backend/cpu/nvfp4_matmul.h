// defines: nvfp4_matmul_rows, the CPU reference linear over a Weight (dense or NVFP4).
//
// NVFP4 weights are dequantised inside the dot product, one 16-element block at a time
// (w = e2m1[q] * fp8(scale) * global_scale, DESIGN.md "NVFP4"); no full-precision copy of W is
// made. Accumulation is fp32.
#pragma once

#include <cstdint>

#include "model/weight.h"

namespace nibble {

// y[n, w.out] (row-major, row stride w.out) = x[n, w.in] · dequant(W)^T, written only for columns
// j in [row_begin, row_end) (rows of W). Callers split [0, w.out) across threads.
// Dense weights (F32 / BF16 / F16) are accepted too, so one call serves every linear.
void nvfp4_matmul_rows(const float* x, int64_t n, const Weight& w, int64_t row_begin, int64_t row_end,
                       float* y);

}  // namespace nibble
