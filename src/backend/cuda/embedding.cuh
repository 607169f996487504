// defines: embedding_forward (rows of the token table gathered by id).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/context.cuh"

namespace nibble::cuda {

// out (n, dim) bf16 = table (vocab, dim) bf16 [ids (n) int32, device]. An id outside [0, vocab)
// writes a NaN row (callers validate ids on the host; the NaN makes a slip visible, not a stray read).
void embedding_forward(Context& ctx, const int32_t* ids, int64_t n, const __nv_bfloat16* table, int64_t vocab,
                       int64_t dim, __nv_bfloat16* out);

}  // namespace nibble::cuda
