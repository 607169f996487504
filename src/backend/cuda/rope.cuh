// defines: rope_forward (rotary position embedding, rotate-half / NeoX form, in place).
//
// HF apply_rotary_pos_emb: with x1 = x[:d/2], x2 = x[d/2:], f_i = pos * inv_freq[i] (fp32),
//   out1 = x1 cos f - x2 sin f,  out2 = x2 cos f + x1 sin f,  cos/sin scaled by attention_scaling
// (YaRN's mscale, 1 otherwise). inv_freq carries the config's theta and any rope scaling.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/context.cuh"

namespace nibble::cuda {

// x: (n, heads, head_dim) bf16, token stride `stride` (elements), head stride head_dim; rotated in
// place. Token t sits at position pos0 + t, or pos[t] (int32, device) when pos is given (a decode
// step replayed as a graph reads its position from device memory). inv_freq: (head_dim/2) fp32.
void rope_forward(Context& ctx, __nv_bfloat16* x, int64_t stride, int64_t n, int64_t heads, int64_t head_dim,
                  int64_t pos0, const int32_t* pos, const float* inv_freq, float attention_scaling);

}  // namespace nibble::cuda
