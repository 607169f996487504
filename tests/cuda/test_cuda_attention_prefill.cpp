// attention_prefill (tensor-core causal GQA flash attention) against an fp64 CPU reference.
//
// Inputs are random normals rounded to bf16 (K/V through e4m3 for the FP8 cache) before the
// reference sees them, so both sides start from identical values. q lives in a fused qkv-like
// buffer (token stride (H + 2 KVH) hd) whose K/V slots hold NaN, cache positions at and past
// pos0 + n hold NaN, and out has a token stride of H*hd + 8 with the gaps and kPad elements after
// the end set to a sentinel: reading anything outside the inputs shows up as NaN, writing outside
// the outputs as a changed sentinel, a missed element as a sentinel left in place.
//
// Bounds. The GPU computes q k in fp32 from exact bf16 products, rounds P to bf16 for the P V
// product and rounds the output to bf16. Each rounding adds a relative error of variance about
// ulp^2/12 / E[x^2] ~ 2.2e-6 (bf16: 8 significant bits), independent across terms, so the expected
// NMSE is ~4.4e-6 whether the softmax is flat or sharp. kNmse = 2e-5 leaves 4.5x for that; a key
// wrongly masked or unmasked, a lost tile or a wrong head gives 1e-3 and more. Per (token, head)
// row, the NMSE of 64 or 128 elements fluctuates (chi-square, 2x the mean at most over 10^5 rows);
// kRowNmse = 1e-4 still catches one wrong key among 2048 (~2.6e-4 for v ~ N(0, 1)).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "backend/cuda/attention_prefill.cuh"
#include "backend/cuda/check.cuh"
#include "core/error.h"
#include "cuda/cuda_test_util.h"
#include "quant/fp8.h"

namespace nibble {
namespace {

using cuda::KvType;

constexpr double kNmse = 2e-5;
constexpr double kRowNmse = 1e-4;
constexpr uint16_t kBf16NaN = 0x7fc0;
constexpr uint8_t kFp8NaN = 0x7f;
constexpr int64_t kExtraCapacity = 37;  // cache positions past pos0 + n, poisoned with NaN

struct Shape {
  int64_t heads, kv_heads, head_dim;
};

// One problem: host inputs (as the reference sees them), device copies and the fp64 reference.
struct Problem {
  Shape s;
  int64_t pos0, n, cap, q_stride, out_stride;
  KvType kv;
  float scale;
  std::vector<float> q;       // (n, q_stride), only [0, H*hd) of a token used
  std::vector<float> kc, vc;  // (KVH, cap, hd) values the GPU decodes
  std::vector<float> ref;     // (n, H, hd)
};

Problem make_problem(Shape s, int64_t pos0, int64_t n, KvType kv, float q_std, std::mt19937& rng) {
  Problem p{s,
            pos0,
            n,
            pos0 + n + kExtraCapacity,
            (s.heads + 2 * s.kv_heads) * s.head_dim,
            s.heads * s.head_dim + 8,
            kv,
            static_cast<float>(1.0 / std::sqrt(double(s.head_dim))),
            {},
            {},
            {},
            {}};
  const int64_t hd = s.head_dim;
  p.q = test::randn_bf16(static_cast<size_t>(n * p.q_stride), rng, q_std);
  p.kc = test::randn_bf16(static_cast<size_t>(s.kv_heads * p.cap * hd), rng);
  p.vc = test::randn_bf16(static_cast<size_t>(s.kv_heads * p.cap * hd), rng);
  if (kv == KvType::FP8_E4M3)
    for (auto* c : {&p.kc, &p.vc})
      for (auto& x : *c) x = fp8_e4m3_to_f32(f32_to_fp8_e4m3_saturate(x));

  // fp64 reference, heads spread over threads.
  const int64_t H = s.heads, G = s.heads / s.kv_heads;
  p.ref.assign(static_cast<size_t>(n * H * hd), 0.0f);
  auto work = [&](int64_t h) {
    const int64_t g = h / G;
    std::vector<double> sc(static_cast<size_t>(pos0 + n)), acc(static_cast<size_t>(hd));
    for (int64_t i = 0; i < n; ++i) {
      const float* qi = &p.q[static_cast<size_t>(i * p.q_stride + h * hd)];
      const int64_t keys = pos0 + i + 1;
      double mx = -INFINITY;
      for (int64_t t = 0; t < keys; ++t) {
        const float* k = &p.kc[static_cast<size_t>((g * p.cap + t) * hd)];
        double d = 0;
        for (int64_t e = 0; e < hd; ++e) d += double(qi[e]) * k[e];
        sc[static_cast<size_t>(t)] = d * p.scale;
        mx = std::max(mx, sc[static_cast<size_t>(t)]);
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      double den = 0;
      for (int64_t t = 0; t < keys; ++t) {
        const double w = std::exp(sc[static_cast<size_t>(t)] - mx);
        den += w;
        const float* v = &p.vc[static_cast<size_t>((g * p.cap + t) * hd)];
        for (int64_t e = 0; e < hd; ++e) acc[static_cast<size_t>(e)] += w * v[e];
      }
      for (int64_t e = 0; e < hd; ++e)
        p.ref[static_cast<size_t>((i * H + h) * hd + e)] =
            static_cast<float>(acc[static_cast<size_t>(e)] / den);
    }
  };
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(H, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int64_t t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (int64_t h = t; h < H; h += threads) work(h);
    });
  for (auto& th : pool) th.join();

  // Poison what the kernel must not read: the K/V slots of the qkv-like q buffer, cache positions
  // past pos0 + n (NaN in the host copy, turned into NaN codes on upload).
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = H * hd; c < p.q_stride; ++c) p.q[static_cast<size_t>(i * p.q_stride + c)] = NAN;
  for (auto* c : {&p.kc, &p.vc})
    for (int64_t g = 0; g < s.kv_heads; ++g)
      for (int64_t t = pos0 + n; t < p.cap; ++t)
        for (int64_t e = 0; e < hd; ++e) (*c)[static_cast<size_t>((g * p.cap + t) * hd + e)] = NAN;
  return p;
}

// The device side of a problem: inputs uploaded once, output poisoned before every run. Every copy
// goes through the context's stream: it is non-blocking, so a plain cudaMemcpy (legacy stream,
// pageable memory: may return before the DMA lands) would race the kernel.
struct DeviceProblem {
  cuda::DeviceBuffer q, k, v, out;
  int64_t out_elems;

  DeviceProblem(cuda::Context& ctx, const Problem& p) {
    const auto qb = test::to_bf16_bits(p.q);
    q = cuda::DeviceBuffer(ctx, qb.size() * 2, "test q");
    CUDA_CHECK(cudaMemcpyAsync(q.get(), qb.data(), qb.size() * 2, cudaMemcpyHostToDevice, ctx.stream()));
    auto upload = [&](const std::vector<float>& c) {
      if (p.kv == KvType::BF16) {
        const auto b = test::to_bf16_bits(c);
        cuda::DeviceBuffer d(ctx, b.size() * 2, "test cache");
        CUDA_CHECK(cudaMemcpyAsync(d.get(), b.data(), b.size() * 2, cudaMemcpyHostToDevice, ctx.stream()));
        ctx.synchronize();
        return d;
      }
      std::vector<uint8_t> b(c.size());
      for (size_t i = 0; i < c.size(); ++i)
        b[i] = std::isnan(c[i]) ? kFp8NaN : f32_to_fp8_e4m3_saturate(c[i]);
      cuda::DeviceBuffer d(ctx, b.size(), "test cache");
      CUDA_CHECK(cudaMemcpyAsync(d.get(), b.data(), b.size(), cudaMemcpyHostToDevice, ctx.stream()));
      ctx.synchronize();
      return d;
    };
    k = upload(p.kc);
    v = upload(p.vc);
    out_elems = p.n * p.out_stride + test::kPad;
    out = cuda::DeviceBuffer(ctx, static_cast<size_t>(out_elems) * 2, "test out");
  }

  // Runs attention_prefill (rows_per_warp 0: the public entry) on a poisoned output; returns the
  // raw bf16 bits of the whole output buffer.
  std::vector<uint16_t> run(cuda::Context& ctx, const Problem& p, int rows_per_warp) {
    std::vector<uint16_t> bits(static_cast<size_t>(out_elems), f32_to_bf16(test::kSentinel));
    CUDA_CHECK(
        cudaMemcpyAsync(out.get(), bits.data(), bits.size() * 2, cudaMemcpyHostToDevice, ctx.stream()));
    const auto* qd = q.get<const __nv_bfloat16>();
    auto* od = out.get<__nv_bfloat16>();
    const int64_t H = p.s.heads, KVH = p.s.kv_heads, hd = p.s.head_dim;
    if (rows_per_warp == 0)
      cuda::attention_prefill(ctx, qd, p.q_stride, p.n, p.pos0, k.get(), v.get(), p.kv, H, KVH, hd, p.cap,
                              p.scale, od, p.out_stride);
    else
      cuda::detail::attention_prefill_rows(ctx, qd, p.q_stride, p.n, p.pos0, k.get(), v.get(), p.kv, H, KVH,
                                           hd, p.cap, p.scale, od, p.out_stride, rows_per_warp);
    ctx.synchronize();
    CUDA_CHECK(
        cudaMemcpyAsync(bits.data(), out.get(), bits.size() * 2, cudaMemcpyDeviceToHost, ctx.stream()));
    ctx.synchronize();
    return bits;
  }
};

// Checks one run's output against the reference and the poison rules.
void check_output(const Problem& p, const std::vector<uint16_t>& bits, const char* what) {
  const int64_t H = p.s.heads, hd = p.s.head_dim, row = H * hd;
  const uint16_t sentinel = f32_to_bf16(test::kSentinel);
  std::vector<float> got(p.ref.size());
  int bad_gap = 0, bad_elem = 0;
  for (int64_t i = 0; i < p.n; ++i)
    for (int64_t c = 0; c < p.out_stride; ++c) {
      const uint16_t b = bits[static_cast<size_t>(i * p.out_stride + c)];
      if (c >= row) {
        bad_gap += b != sentinel;
        continue;
      }
      const float x = bf16_to_f32(b);
      bad_elem += b == sentinel || !std::isfinite(x);
      got[static_cast<size_t>(i * row + c)] = x;
    }
  for (int64_t e = p.n * p.out_stride; e < static_cast<int64_t>(bits.size()); ++e)
    bad_gap += bits[static_cast<size_t>(e)] != sentinel;
  EXPECT_EQ(bad_gap, 0) << what << ": writes outside the output rows";
  EXPECT_EQ(bad_elem, 0) << what << ": output elements unwritten or not finite";

  const double total = test::nmse(got, p.ref);
  double worst = 0;
  for (int64_t r = 0; r < p.n * H; ++r) {
    double num = 0, den = 0;
    for (int64_t e = r * hd; e < (r + 1) * hd; ++e) {
      const double d = double(got[static_cast<size_t>(e)]) - p.ref[static_cast<size_t>(e)];
      num += d * d;
      den += double(p.ref[static_cast<size_t>(e)]) * p.ref[static_cast<size_t>(e)];
    }
    worst = std::max(worst, den > 0 ? num / den : num);
  }
  std::printf("  %-34s nmse %.2e  worst row %.2e\n", what, total, worst);
  EXPECT_LT(total, kNmse) << what;
  EXPECT_LT(worst, kRowNmse) << what;
}

void run_cases(Shape s, KvType kv, const std::vector<std::pair<int64_t, int64_t>>& cases) {
  NIBBLE_REQUIRE_GPU();
  cuda::Context ctx(0);
  std::mt19937 rng(static_cast<uint32_t>(1000 * s.heads + 10 * s.kv_heads + s.head_dim));
  for (auto [pos0, n] : cases) {
    const float q_std = n % 2 ? 2.0f : 1.0f;  // odd n: sharper softmax (scores ~ N(0, 4))
    const Problem p = make_problem(s, pos0, n, kv, q_std, rng);
    DeviceProblem d(ctx, p);
    for (int rpw : {0, 16, 32}) {
      char what[96];
      std::snprintf(what, sizeof what, "H%lld/%lld hd%lld %s pos0 %lld n %lld rows/warp %d",
                    static_cast<long long>(s.heads), static_cast<long long>(s.kv_heads),
                    static_cast<long long>(s.head_dim), kv == KvType::BF16 ? "bf16" : "fp8",
                    static_cast<long long>(pos0), static_cast<long long>(n), rpw);
      SCOPED_TRACE(what);
      const auto bits = d.run(ctx, p, rpw);
      check_output(p, bits, what);
      // Same inputs, same bits: a race would move them.
      EXPECT_EQ(d.run(ctx, p, rpw), bits) << what << ": results differ between two runs";
    }
  }
}

const std::vector<std::pair<int64_t, int64_t>> kCases = {{0, 1},   {0, 17},   {0, 64},
                                                         {0, 129}, {100, 77}, {3000, 65}};
const std::vector<std::pair<int64_t, int64_t>> kFp8Cases = {{0, 129}, {100, 77}, {3000, 65}};

TEST(CudaAttentionPrefill, Qwen3_4B_Heads_32_8_128) {
  auto cases = kCases;
  cases.emplace_back(0, 2048);
  run_cases({32, 8, 128}, KvType::BF16, cases);
}
TEST(CudaAttentionPrefill, Heads_16_8_64) { run_cases({16, 8, 64}, KvType::BF16, kCases); }
TEST(CudaAttentionPrefill, Heads_4_4_64) { run_cases({4, 4, 64}, KvType::BF16, kCases); }
TEST(CudaAttentionPrefill, Heads_8_2_128) { run_cases({8, 2, 128}, KvType::BF16, kCases); }

TEST(CudaAttentionPrefill, Fp8Cache) {
  for (Shape s : {Shape{32, 8, 128}, Shape{16, 8, 64}, Shape{4, 4, 64}, Shape{8, 2, 128}})
    run_cases(s, KvType::FP8_E4M3, kFp8Cases);
}

TEST(CudaAttentionPrefill, SupportedShapesAndArgumentErrors) {
  EXPECT_TRUE(cuda::attention_prefill_supported(32, 8, 128));
  EXPECT_TRUE(cuda::attention_prefill_supported(4, 4, 64));
  EXPECT_FALSE(cuda::attention_prefill_supported(32, 8, 96));
  EXPECT_FALSE(cuda::attention_prefill_supported(32, 6, 128));
  EXPECT_FALSE(cuda::attention_prefill_supported(0, 1, 64));
  NIBBLE_REQUIRE_GPU();
  cuda::Context ctx(0);
  cuda::DeviceBuffer buf(ctx, 1 << 20, "test");
  auto* b = buf.get<__nv_bfloat16>();
  auto call = [&](int64_t hd, int64_t pos0, int64_t n, int64_t q_stride) {
    cuda::attention_prefill(ctx, b, q_stride, n, pos0, b, b, KvType::BF16, 4, 2, hd, 64, 0.125f, b, 4 * hd);
  };
  EXPECT_THROW(call(96, 0, 4, 4 * 96), Error);      // head_dim
  EXPECT_THROW(call(64, 60, 5, 4 * 64), Error);     // past the capacity
  EXPECT_THROW(call(64, 0, 4, 4 * 64 + 1), Error);  // stride not a multiple of 8
  EXPECT_NO_THROW(call(64, 0, 0, 4 * 64));          // nothing to do
}

}  // namespace
}  // namespace nibble
