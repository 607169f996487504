// defines: the decode step of Qwen3-4B as the step benchmarks (bench_cuda_step_structure,
// bench_cuda_step_real) see it -- its 181 dependent stages (Stage, qwen3_4b_step) and where each
// stage's weights lie in one buffer (stage_offsets) -- the device helpers both programs' persistent
// kernels use (ld_acquire, mbar_arrive), and how both time a step (time_steps). Only for .cu files.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "backend/cuda/async_copy.cuh"
#include "backend/cuda/context.cuh"
#include "backend/cuda/timing.h"

namespace nibble::cuda {

// One stage: its 16-row tiles (or, without weights, work units), the threads of its kernel, the
// bytes of one tile, and the vector it writes.
struct Stage {
  int tiles, threads;
  uint32_t tile_bytes;
  int out_words;   // its output vector in 32-bit words (two bf16 each)
  int K = 0;       // input length (the real main loop: x of K bf16)
  int kslice = 0;  // columns per slice of a tile (the real main loop's work item); 0: no weights
  int parts = 1;   // weights per tile (gate + up: 2)
};

// Qwen3-4B (hidden 2560, q 32 x 128, kv 8 x 128, intermediate 9728, vocab 151936, 36 layers).
inline std::vector<Stage> qwen3_4b_step() {
  const auto tile = [](uint32_t K, uint32_t parts) { return parts * (16 * K / 2 + 16 * K / 16); };
  std::vector<Stage> s;
  for (int l = 0; l < 36; ++l) {
    s.push_back({(4096 + 2 * 1024) / 16, 256, tile(2560, 1), 3072, 2560, 2560});  // q/k/v
    s.push_back({132, 256, 0, 2048, 6144, 0});                                    // attention (no weights)
    s.push_back({2560 / 16, 256, tile(4096, 1), 1280, 4096, 2048});               // o_proj
    s.push_back({9728 / 16, 256, tile(2560, 2), 4864, 2560, 2560, 2});            // gate + up
    s.push_back({2560 / 16, 512, tile(9728, 1), 1280, 9728, 2432});               // down_proj
  }
  s.push_back({151936 / 16, 256, tile(2560, 1), 75968, 2560, 2560});  // head
  return s;
}

// Where each stage's tiles start in one buffer of all the step's weights (stage order); total: its
// size.
inline std::vector<uint64_t> stage_offsets(const std::vector<Stage>& step, uint64_t& total) {
  std::vector<uint64_t> offset;
  total = 0;
  for (const Stage& s : step) {
    offset.push_back(total);
    total += static_cast<uint64_t>(s.tiles) * s.tile_bytes;
  }
  return offset;
}

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}

// ms per step: the median of 30 steps after 3 warm-ups.
inline double time_steps(Context& ctx, const std::function<void()>& step) {
  return median_ms(ctx, step, 30, 3);
}

}  // namespace nibble::cuda
