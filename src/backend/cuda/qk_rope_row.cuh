// defines: the per-head q/k RMSNorm + RoPE of one row by one warp (QkLane: qk_lane_prepare before
// griddepcontrol.wait, qk_lane_apply after it), store_pair (a rotated pair into a BF16 or FP8
// cache row) and check_qk_args (the host's checks of what these need). Shared by the q/k-norm kernel
// (rope.cu) and the decode attention kernel that does the same work itself (attention.cu,
// qk_norm_rope_attention_forward): both compute every bit alike. Only for .cu files: uses device code.
//
// Layout (part of the contract): lane j owns the pairs (i, i + half), i = j + 32 u, u < kQkMaxPairs;
// its sum of squares is fmaf(x1, x1, fmaf(x2, x2, ss)) over u in order, then warp_sum; the row is
// bf16(x * inv * w) (rmsnorm_forward's rounding), then rotated (rope.cuh: HF's rotate-half form).
#pragma once

#include <cuda_bf16.h>

#include "backend/cuda/attention.cuh"  // KvType
#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/kv_convert.cuh"

namespace nibble::cuda {

constexpr int kQkMaxPairs = 4;  // (i, i + half) pairs per lane: head_dim <= 2 * 32 * 4

// Throws Error unless head_dim fits a warp's pairs and q_norm, k_norm are given together (op names
// the caller in the message).
inline void check_qk_args(const char* op, int64_t head_dim, const float* q_norm, const float* k_norm) {
  if (head_dim % 2 != 0 || head_dim > 2 * kWarp * kQkMaxPairs)
    fail("{}: head_dim {} (even, at most {} expected)", op, head_dim, 2 * kWarp * kQkMaxPairs);
  if ((q_norm == nullptr) != (k_norm == nullptr)) fail("{}: q_norm and k_norm must be given together", op);
}

// A pair's rotation: cos and sin of its angle by sincosf (not the fast __sinf: positions reach 10^5
// and the argument must be reduced accurately, as torch's fp32 cos/sin do), times the scaling;
// rotate applies it and returns (out1, out2) rounded to bf16.
struct Rotation {
  float c, s;  // cos, sin of the angle, times the scaling
};
__device__ __forceinline__ Rotation rotation(float angle, float scaling) {
  float s, c;
  sincosf(angle, &s, &c);
  return {c * scaling, s * scaling};
}
__device__ __forceinline__ __nv_bfloat162 rotate(float x1, float x2, Rotation r) {
  return __floats2bfloat162_rn(x1 * r.c - x2 * r.s, x2 * r.c + x1 * r.s);
}

// What a lane needs of a row before its data exists: the norm weights of its pairs (zero without a
// norm) and their rotations at position pos.
struct QkLane {
  float w1[kQkMaxPairs], w2[kQkMaxPairs];
  Rotation rot[kQkMaxPairs];
};

// Pair u of the lane (i = lane + 32 u) gets its norm weights w[i], w[i + half] when `on` (and w
// non-null), else zeros.
__device__ __forceinline__ void qk_pair_weights(QkLane& q, int u, int i, int half, bool on,
                                                const float* __restrict__ w) {
  q.w1[u] = on && w ? w[i] : 0.0f;
  q.w2[u] = on && w ? w[i + half] : 0.0f;
}

// live: the lane's warp has a row to rotate (else everything is zero). w: the norm weight, or null.
__device__ __forceinline__ QkLane qk_lane_prepare(int lane, int half, bool live, const float* __restrict__ w,
                                                  int64_t pos, const float* __restrict__ inv_freq,
                                                  float scaling) {
  QkLane q;
#pragma unroll
  for (int u = 0; u < kQkMaxPairs; ++u) {
    const int i = lane + kWarp * u;
    const bool on = live && i < half;
    qk_pair_weights(q, u, i, half, on, w);
    q.rot[u] = on ? rotation(static_cast<float>(pos) * inv_freq[i], scaling) : Rotation{};
  }
  return q;
}

// Row `in` (head_dim 2 * half bf16) -> the lane's rotated pairs out[u] = (i, i + half), normalised
// first when `norm`. Every lane of the warp must call it (warp_sum).
__device__ __forceinline__ void qk_lane_apply(const bf16* in, int lane, int half, bool norm, float eps,
                                              const QkLane& q, __nv_bfloat162 (&out)[kQkMaxPairs]) {
  float x1[kQkMaxPairs], x2[kQkMaxPairs];
  float ss = 0.0f;
#pragma unroll
  for (int u = 0; u < kQkMaxPairs; ++u) {
    const int i = lane + kWarp * u;
    x1[u] = i < half ? __bfloat162float(in[i]) : 0.0f;
    x2[u] = i < half ? __bfloat162float(in[i + half]) : 0.0f;
    ss = fmaf(x1[u], x1[u], fmaf(x2[u], x2[u], ss));
  }
  if (norm) {
    const float inv = rsqrtf(warp_sum(ss) / static_cast<float>(2 * half) + eps);
#pragma unroll
    for (int u = 0; u < kQkMaxPairs; ++u) {
      x1[u] = __bfloat162float(__float2bfloat16_rn(x1[u] * inv * q.w1[u]));
      x2[u] = __bfloat162float(__float2bfloat16_rn(x2[u] * inv * q.w2[u]));
    }
  }
#pragma unroll
  for (int u = 0; u < kQkMaxPairs; ++u) out[u] = rotate(x1[u], x2[u], q.rot[u]);
}

// Elements i and i + half of a cache row: bf16, or e4m3 converted as kv_cache_write converts.
template <KvType KV>
__device__ __forceinline__ void store_pair(void* row, int i, int half, __nv_bfloat162 x) {
  if constexpr (KV == KvType::BF16) {
    static_cast<bf16*>(row)[i] = x.x;
    static_cast<bf16*>(row)[i + half] = x.y;
  } else {
    const uint16_t two = bf16x2_to_e4m3x2(x);
    static_cast<uint8_t*>(row)[i] = static_cast<uint8_t>(two & 0xffu);
    static_cast<uint8_t*>(row)[i + half] = static_cast<uint8_t>(two >> 8);
  }
}

}  // namespace nibble::cuda
