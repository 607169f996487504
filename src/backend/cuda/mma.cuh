// defines: mma_m16n8k16, the warp-level tensor-core product that the decode GEMV (gemv_tile.cuh)
// and both attention kernels run: d += a * b with a 16 x 16 (row-major), b 16 x 8 (column-major),
// bf16 or f16 inputs and fp32 accumulators, each operand in the registers of PTX's fragment layout
// (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"): thread (g = lane / 4,
// t = lane % 4) holds a's rows g and g + 8 at columns 2t, 2t + 1 (a0: row g, a1: row g + 8) and
// 2t + 8, 2t + 9 (a2, a3), b's column g at rows 2t, 2t + 1 (b0) and 2t + 8, 2t + 9 (b1), and d's rows
// g (d[0], d[1]) and g + 8 (d[2], d[3]) at columns 2t, 2t + 1. Only for .cu files: device code.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace nibble::cuda {

// T: __nv_bfloat16 or __half, the type of a's and b's elements (two per 32-bit register).
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                             uint32_t a3, uint32_t b0, uint32_t b1) {
  static_assert(std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>, "bf16 or f16 inputs");
  if constexpr (std::is_same_v<T, __half>)
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

}  // namespace nibble::cuda
