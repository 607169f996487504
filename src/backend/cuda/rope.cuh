// defines: rope_forward (rotary position embedding, rotate-half / NeoX form, in place),
// qk_norm_rope_forward (Qwen3's per-head q/k RMSNorm and RoPE of q and k in one launch) and
// qk_norm_rope_kv_forward (the same, appending the rotated k and v to a layer's KV cache).
//
// HF apply_rotary_pos_emb: with x1 = x[:d/2], x2 = x[d/2:], f_i = pos * inv_freq[i] (fp32),
//   out1 = x1 cos f - x2 sin f,  out2 = x2 cos f + x1 sin f,  cos/sin scaled by attention_scaling
// (YaRN's mscale, 1 otherwise). inv_freq carries the config's theta and any rope scaling.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/attention.cuh"  // KvType
#include "backend/cuda/context.cuh"

namespace nibble::cuda {

// x: (n, heads, head_dim) bf16, token stride `stride` (elements), head stride head_dim; rotated in
// place. Token t sits at position pos0 + t, or *d_pos0 + t when d_pos0 (int32, device) is given: a
// decode step replayed as a CUDA graph reads its position from device memory. inv_freq:
// (head_dim/2) fp32.
void rope_forward(Context& ctx, __nv_bfloat16* x, int64_t stride, int64_t n, int64_t heads, int64_t head_dim,
                  int64_t pos0, const int32_t* d_pos0, const float* inv_freq, float attention_scaling);

// Per-head RMSNorm (weights q_norm / k_norm, fp32, head_dim each; both null: no norm) then RoPE,
// for q (n, hq, hd) and k (n, hkv, hd) in one launch, one warp per (token, head) row:
//   q_out = rope(rmsnorm(q)), k_out = rope(rmsnorm(k)); the normalised row is rounded to bf16 before
// the rotation, as the separate rmsnorm_forward + rope_forward do. Inputs and outputs have token
// strides; out may alias in (in place). head_dim even, at most 256.
void qk_norm_rope_forward(Context& ctx, const __nv_bfloat16* q, int64_t q_stride, const __nv_bfloat16* k,
                          int64_t k_stride, int64_t n, int64_t hq, int64_t hkv, int64_t head_dim,
                          const float* q_norm, const float* k_norm, float eps, int64_t pos0,
                          const int32_t* d_pos0, const float* inv_freq, float attention_scaling,
                          __nv_bfloat16* q_out, int64_t q_out_stride, __nv_bfloat16* k_out,
                          int64_t k_out_stride);

// qk_norm_rope_forward, and in the same launch k_out's rows and v (n, hkv, hd) bf16 (token stride
// v_stride) written to one layer's KV cache, k_cache and v_cache (hkv, capacity, hd) of kv_type, at
// positions [pos0, pos0 + n): the bytes kv_cache_write (attention.cuh) writes for k_out and v, with
// the same e4m3 conversion for an FP8 cache. Saves a decode step's separate cache-write kernel. With
// d_pos0, pos0 is its host upper bound (pos0 + n <= capacity) and positions at or past capacity are
// not written. The kernel waits for the previous one (PDL) before it reads q, k or v.
void qk_norm_rope_kv_forward(Context& ctx, const __nv_bfloat16* q, int64_t q_stride, const __nv_bfloat16* k,
                             int64_t k_stride, const __nv_bfloat16* v, int64_t v_stride, int64_t n,
                             int64_t hq, int64_t hkv, int64_t head_dim, const float* q_norm,
                             const float* k_norm, float eps, int64_t pos0, const int32_t* d_pos0,
                             const float* inv_freq, float attention_scaling, __nv_bfloat16* q_out,
                             int64_t q_out_stride, __nv_bfloat16* k_out, int64_t k_out_stride, void* k_cache,
                             void* v_cache, KvType kv_type, int64_t capacity);

}  // namespace nibble::cuda
