// defines: fill_random_bf16, fill_random_fp8 (device memory filled with seeded normal-ish bf16 values), for
// benches and tests that need realistic, never-zero data in large device buffers (a 32K-token KV cache).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/context.cuh"

namespace nibble::cuda {

// p[0, count) = bf16 of scale * (sum of 4 uniforms - 2) * sqrt(3), a zero-mean unit-variance
// approximation of a normal, from a counter hash of (seed, index): reproducible, any launch shape.
void fill_random_bf16(Context& ctx, __nv_bfloat16* p, int64_t count, uint64_t seed, float scale);
// The same values rounded to FP8 E4M3 (saturating), one byte each: an FP8 KV cache.
void fill_random_fp8(Context& ctx, uint8_t* p, int64_t count, uint64_t seed, float scale);

}  // namespace nibble::cuda
