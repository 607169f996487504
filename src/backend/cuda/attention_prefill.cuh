// defines: KvType, attention_prefill_supported and attention_prefill (causal GQA attention of n
// new queries over the KV cache on the tensor cores, for prefill-sized n).
//
// Flash-attention 2 (Dao 2023) with mma.sync m16n8k16 bf16 -> fp32: S = Q K^T and O += P V on the
// tensor cores, online softmax in fp32 registers, P rounded to bf16 for the second product. GQA
// packing: a block owns 64 or 128 consecutive rows r = i*G + g (query token i, head kvh*G + g) of
// ONE KV head kvh (G = heads / kv_heads), so each K/V tile it loads serves all G query heads.
// Plain C++ header (no device code): callable from .cpp files.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/attention.cuh"  // KvType
#include "backend/cuda/context.cuh"

namespace nibble::cuda {

// True when attention_prefill handles this shape (head_dim 64 or 128, H % KVH == 0).
bool attention_prefill_supported(int64_t heads, int64_t kv_heads, int64_t head_dim);

// out (n, H, hd) bf16 (token stride out_stride) = causal softmax(scale q K^T) V for queries i at
// positions pos0+i over cache positions [0, pos0+i]. q (n, H, hd) bf16, token stride q_stride,
// RoPE applied. k_cache / v_cache: (KVH, capacity, hd) of `kv` type, positions [0, pos0+n) written.
// q, out and the caches must be 16-byte aligned, q_stride and out_stride multiples of 8; scale > 0.
// Throws Error (saying which) otherwise. Reads no cache position at or past pos0 + n.
void attention_prefill(Context& ctx, const __nv_bfloat16* q, int64_t q_stride, int64_t n, int64_t pos0,
                       const void* k_cache, const void* v_cache, KvType kv, int64_t heads, int64_t kv_heads,
                       int64_t head_dim, int64_t capacity, float scale, __nv_bfloat16* out,
                       int64_t out_stride);

namespace detail {
// attention_prefill with the query rows per warp fixed: 16 (64-row blocks, Q fragments kept in
// registers) or 32 (128-row blocks, each K/V fragment read from shared memory feeds two MMAs);
// 0 lets attention_prefill choose (FP8 caches with head_dim 128 always take 16). For the tests and
// the benchmark, which check and time both.
void attention_prefill_rows(Context& ctx, const __nv_bfloat16* q, int64_t q_stride, int64_t n, int64_t pos0,
                            const void* k_cache, const void* v_cache, KvType kv, int64_t heads,
                            int64_t kv_heads, int64_t head_dim, int64_t capacity, float scale,
                            __nv_bfloat16* out, int64_t out_stride, int rows_per_warp);
}  // namespace detail

}  // namespace nibble::cuda
