#include "backend/cuda/timing.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <vector>

#include "backend/cuda/check.cuh"
#include "backend/cuda/fill.cuh"

namespace nibble::cuda {

double median_ms(Context& ctx, const std::function<void()>& work, int reps, int warmup) {
  if (reps < 1) fail("median_ms: {} timed runs (at least 1 expected)", reps);
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  for (int i = 0; i < warmup; ++i) work();
  std::vector<float> ms(static_cast<size_t>(reps));
  for (float& t : ms) {
    CUDA_CHECK(cudaEventRecord(e0, ctx.stream()));
    work();
    CUDA_CHECK(cudaEventRecord(e1, ctx.stream()));
    CUDA_CHECK(cudaEventSynchronize(e1));
    CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

double copy_bandwidth_gbps(Context& ctx, size_t bytes) {
  DeviceBuffer a(ctx, bytes, "bandwidth source"), b(ctx, bytes, "bandwidth destination");
  fill_random_bf16(ctx, a.get<__nv_bfloat16>(), static_cast<int64_t>(bytes / 2), 1, 1.0f);
  const double ms = median_ms(
      ctx,
      [&] { CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, ctx.stream())); },
      10, 2);
  return 2.0 * static_cast<double>(bytes) / (ms * 1e-3) / 1e9;
}

}  // namespace nibble::cuda
