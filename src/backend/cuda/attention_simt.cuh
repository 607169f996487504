// defines: attention_simt, causal GQA attention over a BF16 KV cache on the SIMT cores, for
// prefill-sized n where the tensor-core prefill kernel does not serve the shape (attention.cu's
// attention_forward picks it; semantics and layouts: attention.cuh). One warp carries 4 query rows
// of one KV head; keys go through shared memory in 32-key tiles, lane j scoring key j.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/attention.cuh"

namespace nibble::cuda {

// out (n, heads, head_dim), token stride out_stride = attention of q (token stride q_stride, RoPE
// applied) over cache positions [0, pos0 + i] for query i; d_pos0: as attention_forward's. The
// caller checked the shape, positions and alignment.
void attention_simt(Context& ctx, const __nv_bfloat16* q, int64_t q_stride, int64_t n, int64_t pos0,
                    const int32_t* d_pos0, const __nv_bfloat16* k_cache, const __nv_bfloat16* v_cache,
                    const AttentionShape& s, float scale, __nv_bfloat16* out, int64_t out_stride);

}  // namespace nibble::cuda
