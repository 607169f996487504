// defines: AttentionShape, kv_cache_write (append k, v to a layer's BF16 KV cache) and
// attention_forward (causal GQA attention of n new queries over the cache), attention_scratch_bytes.
//
// KV cache of one layer: k_cache, v_cache (kv_heads, capacity, head_dim) bf16: each KV head's keys
// are contiguous, so a decode step streams them in 16-byte loads.
// Attention (HF eager_attention_forward): query i of n sits at position pos0 + i and sees cache
// positions [0, pos0 + i]; softmax(q k^T * scale) v in fp32 (online softmax, Milakov & Gimelshein
// 2018; split-KV "flash-decoding", Dao et al. 2023), the G = heads / kv_heads query heads of a KV
// head sharing each K/V tile loaded to shared memory.
#pragma once

#include <cuda_bf16.h>

#include <cstddef>
#include <cstdint>

#include "backend/cuda/context.cuh"

namespace nibble::cuda {

// Element type of the KV cache: BF16, or FP8 E4M3 (OCP FP8 spec; scale 1, saturating
// round-to-nearest on write), which halves the bytes a decode step streams.
enum class KvType { BF16, FP8_E4M3 };

inline size_t kv_type_bytes(KvType t) { return t == KvType::BF16 ? 2 : 1; }

struct AttentionShape {
  int64_t heads = 0;     // query heads H
  int64_t kv_heads = 0;  // KV heads (H % kv_heads == 0)
  int64_t head_dim = 0;  // a multiple of 8, at most 256
  int64_t capacity = 0;  // cache positions per layer
};

// Throws Error when the shape is not supported (the message says which limit).
void check_attention_shape(const AttentionShape& s);

// k (n, kv_heads, head_dim) and v (same) bf16 with token strides -> cache positions [pos0, pos0+n).
void kv_cache_write(Context& ctx, const __nv_bfloat16* k, int64_t k_stride, const __nv_bfloat16* v,
                    int64_t v_stride, int64_t n, int64_t pos0, __nv_bfloat16* k_cache, __nv_bfloat16* v_cache,
                    const AttentionShape& s);

// Scratch attention_forward may use for n queries (split-KV partial results); plan it once.
size_t attention_scratch_bytes(const AttentionShape& s, int64_t n);

// out (n, heads, head_dim) bf16, token stride out_stride = attention of q (n, heads, head_dim) bf16
// (token stride q_stride, RoPE applied) over the cache, whose positions [0, pos0 + n) must be
// written. scale: the softmax scale (head_dim^-0.5).
void attention_forward(Context& ctx, const __nv_bfloat16* q, int64_t q_stride, int64_t n, int64_t pos0,
                       const __nv_bfloat16* k_cache, const __nv_bfloat16* v_cache, const AttentionShape& s,
                       float scale, __nv_bfloat16* out, int64_t out_stride, Scratch scratch);

}  // namespace nibble::cuda
