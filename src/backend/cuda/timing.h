// defines: median_ms (CUDA-event timing of the work enqueued on a Context's stream) and
// copy_bandwidth_gbps (the card's device-to-device copy rate): the measuring tools of
// `nibble bench`, the bench/ programs and the timing rows of the GPU suites. Plain C++ header.
#pragma once

#include <cstddef>
#include <functional>

#include "backend/cuda/context.cuh"

namespace nibble::cuda {

// The median (the upper one of an even count) of `reps` timings, in milliseconds, of what work()
// enqueues on ctx.stream(), each between two CUDA events, after `warmup` untimed calls.
double median_ms(Context& ctx, const std::function<void()>& work, int reps, int warmup);

// A device-to-device copy of `bytes` of random data: bytes read plus written per second, in GB/s,
// from the median of 10 copies after 2 warm-ups.
double copy_bandwidth_gbps(Context& ctx, size_t bytes = size_t{1} << 30);

}  // namespace nibble::cuda
