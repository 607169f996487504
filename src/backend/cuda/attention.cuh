// defines: KvType, AttentionShape, kv_cache_write (append k, v to a layer's KV cache, BF16 or FP8),
// attention_forward (causal GQA attention of n new queries over the cache), attention_scratch_bytes.
//
// KV cache of one layer: k_cache, v_cache (kv_heads, capacity, head_dim) of KvType: each KV head's
// keys are contiguous, so a decode step streams them in 16-byte loads.
// Attention (HF eager_attention_forward): query i of n sits at position pos0 + i and sees cache
// positions [0, pos0 + i]; softmax(q k^T * scale) v with fp32 accumulation and online softmax
// (Milakov & Gimelshein 2018). Decode (n <= 8, or any n on an FP8 cache): split-KV
// "flash-decoding" (Dao et al. 2023): one block per (split, KV head, 8 or 16 query rows) serving all
// G = heads / kv_heads query heads of its KV head, so each K/V byte is read once; q k^T and p v on
// the tensor cores (mma.sync m16n8k16, fp32 accumulate: bf16 operands for a BF16 cache, f16 for FP8,
// whose e4m3 values f16 holds exactly); the splits' partial results merged by a second kernel.
// Both kernels use programmatic dependent launch (see linear.cuh): they may start while the
// previous kernel of the stream runs, and touch nothing it may write before waiting for it, except
// that the decode kernel reads *d_pos0 at once: *d_pos0 must hold its value before the kernels just
// before attention_forward start (the backend copies its step inputs from the host before the step).
// The decode kernel also starts copying cache positions below pos0 before it waits: the kernel in
// front may write positions [pos0, pos0 + n) only (the step's own keys), never older ones.
//
// Device-side positions (CUDA-graph replay): with d_pos0 non-null the kernels read pos0 from
// *d_pos0 and the host pos0 is only an upper bound on it that sizes the launch. The launch depends
// on (host pos0, n, shape, scratch, device) only, and the split partition on the actual key count
// and those: the output is bitwise that of the host-pos0 call with pos0 = *d_pos0.
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

// k (n, kv_heads, head_dim) and v (same) bf16 with token strides -> cache positions [pos0, pos0+n),
// converted to e4m3 (saturating, round to nearest even) for an FP8 cache. d_pos0: see above (the
// launch depends on n only; positions at or past capacity are not written).
void kv_cache_write(Context& ctx, const __nv_bfloat16* k, int64_t k_stride, const __nv_bfloat16* v,
                    int64_t v_stride, int64_t n, int64_t pos0, const int32_t* d_pos0, void* k_cache,
                    void* v_cache, KvType kv_type, const AttentionShape& s);

// Scratch attention_forward may use for n queries (split-KV partial results); plan it once.
size_t attention_scratch_bytes(const AttentionShape& s, int64_t n);

// out (n, heads, head_dim) bf16, token stride out_stride = attention of q (n, heads, head_dim) bf16
// (token stride q_stride, RoPE applied) over the cache, whose positions [0, pos0 + n) must be
// written. scale: the softmax scale (head_dim^-0.5). d_pos0: null, or the device-side pos0 (then
// pos0 is its host upper bound, pos0 + n <= capacity; see above).
void attention_forward(Context& ctx, const __nv_bfloat16* q, int64_t q_stride, int64_t n, int64_t pos0,
                       const int32_t* d_pos0, const void* k_cache, const void* v_cache, KvType kv_type,
                       const AttentionShape& s, float scale, __nv_bfloat16* out, int64_t out_stride,
                       Scratch scratch);

// One decode token's attention from its raw q/k/v projections: qk_norm_rope_kv_forward (rope.cuh) and
// attention_forward of its q_out in one kernel. q (heads, head_dim), k and v (kv_heads, head_dim) bf16;
// q_norm / k_norm (head_dim) fp32 or both null; inv_freq (head_dim / 2). Each block normalises and
// rotates the query rows it serves itself (into shared memory); the blocks whose keys end at pos0
// compute that key's k and v, write them to the cache (the bytes qk_norm_rope_kv_forward writes) and
// into their own rings. q_out and k_out are not written. Output, cache and every intermediate value
// are bitwise those of qk_norm_rope_kv_forward followed by attention_forward (the same device code:
// qk_rope_row.cuh). Saves a kernel and an L2 round trip per layer of a decode step. d_pos0: as
// attention_forward's (pos0 its host upper bound); a position at or past the capacity is not written.
void qk_norm_rope_attention_forward(Context& ctx, const __nv_bfloat16* q, const __nv_bfloat16* k,
                                    const __nv_bfloat16* v, const float* q_norm, const float* k_norm,
                                    float eps, int64_t pos0, const int32_t* d_pos0, const float* inv_freq,
                                    float attention_scaling, void* k_cache, void* v_cache, KvType kv_type,
                                    const AttentionShape& s, float scale, __nv_bfloat16* out,
                                    Scratch scratch);

}  // namespace nibble::cuda
