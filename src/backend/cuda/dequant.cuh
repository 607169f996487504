// defines: nvfp4_dequant (rows of an NVFP4 weight -> bf16 tiles for the tensor-core GEMMs of a
// prefill). Plain C++ header.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/context.cuh"

namespace nibble::cuda {

// Rows [0, rows) of an NVFP4 weight (codes (rows, K/2), scales (rows, K/16), both contiguous) ->
// out (rows, K) bf16 without the global scale: e2m1 * fp8 is exact in bf16 (a 2-bit times a 4-bit
// significand fits bf16's 8), so a GEMM with alpha = global scale gives the NVFP4 product.
// out 16-byte aligned, codes 4-byte aligned, K % 16 == 0 (throws Error otherwise).
void nvfp4_dequant(Context& ctx, const uint8_t* codes, const uint8_t* scales, int64_t rows, int64_t K,
                   __nv_bfloat16* out);

}  // namespace nibble::cuda
