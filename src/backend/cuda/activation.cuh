// defines: swiglu_forward (silu(gate) * up) and add_forward (elementwise sum, the residual).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/context.cuh"

namespace nibble::cuda {

// out (n, d) = silu(gate (n, d)) * up (n, d), bf16, each with its own row stride (gate and up may be
// the two halves of one fused projection). silu(g) = g / (1 + exp(-g)), in fp32.
void swiglu_forward(Context& ctx, const __nv_bfloat16* gate, int64_t gate_stride, const __nv_bfloat16* up,
                    int64_t up_stride, int64_t n, int64_t d, __nv_bfloat16* out, int64_t out_stride);

// out (count) = a + b, bf16, rounded once from the fp32 sum (HF adds residuals in the model dtype).
// out may alias a or b.
void add_forward(Context& ctx, const __nv_bfloat16* a, const __nv_bfloat16* b, int64_t count,
                 __nv_bfloat16* out);

}  // namespace nibble::cuda
