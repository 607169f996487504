// bench_cuda_attention: causal prefill attention on the GPU, the tensor-core attention_prefill
// (both tilings, BF16 and FP8 caches) beside attention_forward's prefill path (the baseline).
//
//   bench_cuda_attention [N ...]     (default 512 1024 2048 4096)
//
// Qwen3-4B's attention shape (32 query heads over 8 KV heads, head_dim 128), n queries from
// position 0 over a cache of n positions. 3 warm-up runs, then the median of 10, each timed alone
// with CUDA events (cuda::median_ms). FLOPs counted as FA2 counts them: 4 n^2/2 hd H (q k^T and p v over the
// causal half). K/V (8 MB at n = 2048) stay in L2 between runs, as they do right after the prefill wrote
// them. The card's bf16 dense peak is 989 TFLOP/s (H100 SXM, wgmma); mma.sync reaches about 2/3.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <random>
#include <vector>

#ifdef NIBBLE_HAVE_CUDA
#include <cuda_runtime.h>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/attention_prefill.cuh"
#include "backend/cuda/check.cuh"
#include "backend/cuda/timing.h"
#include "core/half.h"
#include "quant/fp8.h"

namespace {

using namespace nibble;

// 3 warm-up runs, then the median of 10.
double median_ms(cuda::Context& ctx, const std::function<void()>& f) {
  return cuda::median_ms(ctx, f, 10, 3);
}

void bench(cuda::Context& ctx, int64_t n) {
  const int64_t H = 32, KVH = 8, hd = 128, cap = n;
  const float scale = 1.0f / std::sqrt(float(hd));
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<uint16_t> q(static_cast<size_t>(n * H * hd)), kv(static_cast<size_t>(KVH * cap * hd));
  std::vector<uint8_t> kv8(kv.size());
  for (auto& x : q) x = f32_to_bf16(nd(rng));
  for (size_t i = 0; i < kv.size(); ++i) {
    const float x = nd(rng);
    kv[i] = f32_to_bf16(x);
    kv8[i] = f32_to_fp8_e4m3_saturate(x);
  }
  cuda::DeviceBuffer dq(ctx, q.size() * 2, "q"), dk(ctx, kv.size() * 2, "k"), dv(ctx, kv.size() * 2, "v");
  cuda::DeviceBuffer dk8(ctx, kv8.size(), "k8"), dv8(ctx, kv8.size(), "v8"), dout(ctx, q.size() * 2, "out");
  CUDA_CHECK(cudaMemcpy(dq.get(), q.data(), q.size() * 2, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dk.get(), kv.data(), kv.size() * 2, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dv.get(), kv.data(), kv.size() * 2, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dk8.get(), kv8.data(), kv8.size(), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dv8.get(), kv8.data(), kv8.size(), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaDeviceSynchronize());  // the context's stream does not wait for the legacy stream's copies
  const auto* qp = dq.get<const __nv_bfloat16>();
  auto* op = dout.get<__nv_bfloat16>();
  const double flops = 4.0 * n * n / 2 * hd * H;
  auto line = [&](const char* what, double ms) {
    fmt::print("  n {:5}  {:<28} {:9.3f} ms  {:6.1f} TFLOP/s\n", n, what, ms, flops / (ms * 1e-3) / 1e12);
  };
  auto prefill = [&](const void* k, const void* v, cuda::KvType t, int rows) {
    return median_ms(ctx, [&] {
      cuda::detail::attention_prefill_rows(ctx, qp, H * hd, n, 0, k, v, t, H, KVH, hd, cap, scale, op, H * hd,
                                           rows);
    });
  };
  line("prefill bf16 (chosen tile)", prefill(dk.get(), dv.get(), cuda::KvType::BF16, 0));
  line("prefill bf16 16 rows/warp", prefill(dk.get(), dv.get(), cuda::KvType::BF16, 16));
  line("prefill bf16 32 rows/warp", prefill(dk.get(), dv.get(), cuda::KvType::BF16, 32));
  line("prefill fp8 (chosen tile)", prefill(dk8.get(), dv8.get(), cuda::KvType::FP8_E4M3, 0));

  const cuda::AttentionShape s{H, KVH, hd, cap};
  cuda::DeviceBuffer scratch(ctx, std::max<size_t>(16, cuda::attention_scratch_bytes(s, n)), "scratch");
  line("attention_forward (baseline)", median_ms(ctx, [&] {
         cuda::attention_forward(ctx, qp, H * hd, n, 0, nullptr, dk.get(), dv.get(), cuda::KvType::BF16, s,
                                 scale, op, H * hd, cuda::Scratch{scratch.get(), scratch.bytes()});
       }));
}

}  // namespace

int main(int argc, char** argv) {
  if (cuda::cuda_device_count() == 0) {
    fmt::print("{}\n", cuda::cuda_unavailable_reason());
    return 0;
  }
  std::vector<int64_t> sizes;
  for (int i = 1; i < argc; ++i) sizes.push_back(std::atoll(argv[i]));
  if (sizes.empty()) sizes = {512, 1024, 2048, 4096};
  cuda::Context ctx(0);
  fmt::print("{} ({} SMs): causal attention, H 32 / KVH 8, head_dim 128, pos0 0\n", ctx.info().name,
             ctx.info().sm_count);
  for (int64_t n : sizes) bench(ctx, n);
  return 0;
}
#else
int main() {
  fmt::print("bench_cuda_attention: built without CUDA\n");
  return 0;
}
#endif
