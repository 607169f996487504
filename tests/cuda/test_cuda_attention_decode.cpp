// The decode attention kernels (cuda::kv_cache_write, cuda::attention_forward with n <= 8 and the
// FP8 cache at any n) against an fp64 reference and the CPU backend, the device-pos0 path against
// the host-pos0 path (bitwise, also replayed from one CUDA graph, several calls back to back with
// the scratch overwritten between replays), the FP8 cache write against the CPU e4m3 codec
// (bitwise), and a timing of the decode step from 1 to 32K keys. Skips without a GPU.
//
// Bounds. BF16 cache: the output is rounded to bf16 once (NMSE ~1.3e-6) and P is rounded to bf16
// before P V on the tensor cores (relative 2^-9 per weight, which averages to another ~1.3e-6):
// kBf16Out = 8e-6 as in test_cuda_ops.cpp. FP8 cache, against the reference over the e4m3-rounded
// K/V the kernel sees: the same bound (q * scale and P go through f16, finer than bf16). FP8 against
// the unrounded bf16 K/V: e4m3 keeps 3 mantissa bits (relative error up to 2^-4, rms ~3.6%) on each
// of K (moves the scores) and V: NMSE of a few 1e-3, so kFp8VsBf16 = 1e-2; a wrong conversion or
// index gives NMSE ~1.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/attention.cuh"
#include "backend/cuda/rope.cuh"
#include "backend/cuda/timing.h"
#include "cuda/cuda_test_util.h"
#include "quant/fp8.h"

namespace nibble {
namespace {

using cuda::AttentionShape;
using cuda::KvType;
using test::nmse;
using test::randn_bf16;

constexpr double kBf16Out = 8e-6;
constexpr double kFp8VsBf16 = 1e-2;

#define CU(expr) ASSERT_EQ((expr), cudaSuccess) << #expr

struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DevBuf(size_t b) : bytes(b) { EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(b, 16)), cudaSuccess); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

// n bf16 values followed by test::kPad sentinels; starts all sentinel (or `init`, then sentinels).
struct DevBf16 {
  int64_t n;
  DevBuf buf;
  DevBf16(int64_t count, const std::vector<float>* init = nullptr)
      : n(count), buf(static_cast<size_t>(count + test::kPad) * 2) {
    std::vector<float> f(static_cast<size_t>(n + test::kPad), test::kSentinel);
    if (init) std::copy(init->begin(), init->end(), f.begin());
    const auto bits = test::to_bf16_bits(f);
    EXPECT_EQ(cudaMemcpy(buf.p, bits.data(), bits.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // a pageable copy may return before its DMA ends
  }
  __nv_bfloat16* ptr() const { return buf.as<__nv_bfloat16>(); }
  void poison() const {  // every element back to the sentinel
    const auto bits =
        test::to_bf16_bits(std::vector<float>(static_cast<size_t>(n + test::kPad), test::kSentinel));
    EXPECT_EQ(cudaMemcpy(buf.p, bits.data(), bits.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // a pageable copy may return before its DMA ends
  }
  std::vector<uint16_t> bits() const {
    std::vector<uint16_t> b(static_cast<size_t>(n + test::kPad));
    EXPECT_EQ(cudaMemcpy(b.data(), buf.p, b.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    return b;
  }
  // Values; fails the test on a changed sentinel, an unwritten element or a non-finite value.
  std::vector<float> read(const std::string& what) const {
    const auto b = bits();
    std::vector<float> v(static_cast<size_t>(n));
    for (int64_t i = n; i < n + test::kPad; ++i)
      if (bf16_to_f32(b[i]) != test::kSentinel) {
        ADD_FAILURE() << what << ": write past the end at +" << i - n;
        break;
      }
    for (int64_t i = 0; i < n; ++i) {
      v[i] = bf16_to_f32(b[i]);
      if (!std::isfinite(v[i]) || v[i] == test::kSentinel) {
        ADD_FAILURE() << what << ": element " << i << " is " << v[i] << " (not written or not finite)";
        break;
      }
    }
    return v;
  }
};

float fp8_round(float x) { return fp8_e4m3_to_f32(f32_to_fp8_e4m3_saturate(x)); }

// out (n, H, hd) of causal GQA attention, fp64: token i sees keys [0, pos0 + i]. k, v (keys, KVH, hd).
std::vector<float> reference(const std::vector<float>& q, const std::vector<float>& k,
                             const std::vector<float>& v, int64_t n, int64_t pos0, int64_t H, int64_t KVH,
                             int64_t hd, double scale) {
  std::vector<float> out(static_cast<size_t>(n * H * hd));
  std::vector<double> s, o(static_cast<size_t>(hd));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / KVH), keys = pos0 + i + 1;
      const float* qi = &q[(i * H + h) * hd];
      s.assign(static_cast<size_t>(keys), 0.0);
      double mx = -1e300;
      for (int64_t j = 0; j < keys; ++j) {
        const float* kj = &k[(j * KVH + g) * hd];
        double acc = 0;
        for (int64_t d = 0; d < hd; ++d) acc += static_cast<double>(qi[d]) * kj[d];
        s[j] = acc * scale;
        mx = std::max(mx, s[j]);
      }
      double den = 0;
      std::fill(o.begin(), o.end(), 0.0);
      for (int64_t j = 0; j < keys; ++j) {
        const double p = std::exp(s[j] - mx);
        den += p;
        const float* vj = &v[(j * KVH + g) * hd];
        for (int64_t d = 0; d < hd; ++d) o[d] += p * vj[d];
      }
      for (int64_t d = 0; d < hd; ++d) out[(i * H + h) * hd + d] = static_cast<float>(o[d] / den);
    }
  return out;
}

class CudaAttentionDecode : public ::testing::Test {
 protected:
  void SetUp() override {
    NIBBLE_REQUIRE_GPU();
    ctx = std::make_unique<cuda::Context>(0);
  }
  std::unique_ptr<cuda::Context> ctx;
  std::mt19937 rng{424242};
};

// For each shape and pos0: K/V for positions [0, pos0 + 8) drawn once; for n in {1, 3, 8} and both
// cache types: fill the cache (poisoned with 0xff = NaN in both types past the written positions),
// write the n new tokens, run attention with a host pos0 and with a device pos0 under a larger bound
// (must match bitwise), and compare with the fp64 reference and the CPU backend.
TEST_F(CudaAttentionDecode, MatchesReference) {
  struct Shape {
    int64_t H, KVH, hd;
  };
  const auto cpu = make_backend("cpu", BackendOptions{4});
  for (const Shape sh :
       {Shape{32, 8, 128}, Shape{16, 8, 64}, Shape{8, 8, 128}, Shape{4, 2, 40}, Shape{2, 1, 256}})
    for (const int64_t pos0 : {0, 1, 31, 300, 4095, 20000}) {
      const int64_t H = sh.H, KVH = sh.KVH, hd = sh.hd;
      const int64_t max_keys = pos0 + 8, cap = max_keys + 13;
      const AttentionShape s{H, KVH, hd, cap};
      const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
      const auto k_all = randn_bf16(static_cast<size_t>(max_keys * KVH * hd), rng);
      const auto v_all = randn_bf16(static_cast<size_t>(max_keys * KVH * hd), rng);
      std::vector<float> k8(k_all.size()), v8(v_all.size());
      for (size_t e = 0; e < k_all.size(); ++e) k8[e] = fp8_round(k_all[e]), v8[e] = fp8_round(v_all[e]);
      DevBf16 kd(max_keys * KVH * hd, &k_all), vd(max_keys * KVH * hd, &v_all);
      for (const int64_t n : {1, 3, 8})
        for (const KvType kt : {KvType::BF16, KvType::FP8_E4M3}) {
          const bool fp8 = kt == KvType::FP8_E4M3;
          SCOPED_TRACE(::testing::Message() << "H " << H << " KVH " << KVH << " hd " << hd << " pos0 " << pos0
                                            << " n " << n << (fp8 ? " FP8" : " BF16"));
          const size_t cache_bytes = static_cast<size_t>(KVH * cap * hd) * cuda::kv_type_bytes(kt);
          DevBuf kc(cache_bytes), vc(cache_bytes), scratch(cuda::attention_scratch_bytes(s, n)), dpos(4);
          CU(cudaMemset(kc.p, 0xff, cache_bytes));
          CU(cudaMemset(vc.p, 0xff, cache_bytes));
          CU(cudaDeviceSynchronize());  // legacy-stream set-up done before ctx's non-blocking stream runs
          const int64_t ts = KVH * hd;  // token stride of k, v
          if (pos0 > 0)
            cuda::kv_cache_write(*ctx, kd.ptr(), ts, vd.ptr(), ts, pos0, 0, nullptr, kc.p, vc.p, kt, s);
          cuda::kv_cache_write(*ctx, kd.ptr() + pos0 * ts, ts, vd.ptr() + pos0 * ts, ts, n, pos0, nullptr,
                               kc.p, vc.p, kt, s);
          const auto q = randn_bf16(static_cast<size_t>(n * H * hd), rng);
          DevBf16 qd(n * H * hd, &q), out_h(n * H * hd), out_d(n * H * hd);
          const cuda::Scratch sc{scratch.p, scratch.bytes};
          cuda::attention_forward(*ctx, qd.ptr(), H * hd, n, pos0, nullptr, kc.p, vc.p, kt, s,
                                  static_cast<float>(scale), out_h.ptr(), H * hd, sc);
          const int32_t p32 = static_cast<int32_t>(pos0);
          CU(cudaMemcpy(dpos.p, &p32, 4, cudaMemcpyHostToDevice));
          CU(cudaDeviceSynchronize());  // legacy-stream set-up done before ctx's non-blocking stream runs
          cuda::attention_forward(*ctx, qd.ptr(), H * hd, n, cap - n, dpos.as<int32_t>(), kc.p, vc.p, kt, s,
                                  static_cast<float>(scale), out_d.ptr(), H * hd, sc);
          ctx->synchronize();
          const auto got = out_h.read("attention");
          EXPECT_EQ(out_h.bits(), out_d.bits())
              << "device pos0 (bound " << cap - n << ") differs from host pos0";

          const auto ref = reference(q, fp8 ? k8 : k_all, fp8 ? v8 : v_all, n, pos0, H, KVH, hd, scale);
          EXPECT_LT(nmse(got, ref), kBf16Out) << "vs fp64 reference";
          if (fp8) {
            EXPECT_LT(nmse(got, reference(q, k_all, v_all, n, pos0, H, KVH, hd, scale)), kFp8VsBf16)
                << "vs the unrounded bf16 K/V";
          }

          // CPU backend (fp32): its cache holds the same (rounded) values for [0, pos0).
          if (pos0 <= 4095) {
            KvCache cc = cpu->alloc_kv_cache(1, KVH, cap, hd);
            std::vector<float> kl(static_cast<size_t>(KVH * cap * hd), 0.0f), vl(kl.size(), 0.0f);
            const auto& ks = fp8 ? k8 : k_all;
            const auto& vs = fp8 ? v8 : v_all;
            for (int64_t j = 0; j < pos0; ++j)
              for (int64_t g = 0; g < KVH; ++g)
                for (int64_t d = 0; d < hd; ++d) {
                  kl[(g * cap + j) * hd + d] = ks[(j * KVH + g) * hd + d];
                  vl[(g * cap + j) * hd + d] = vs[(j * KVH + g) * hd + d];
                }
            cpu->copy_from_host(kl, cc.k_layer(0));
            cpu->copy_from_host(vl, cc.v_layer(0));
            std::vector<float> kn(ks.begin() + pos0 * ts, ks.begin() + (pos0 + n) * ts),
                vn(vs.begin() + pos0 * ts, vs.begin() + (pos0 + n) * ts);
            test::DevTensor qc(*cpu, {n, H, hd}, &q), kc_(*cpu, {n, KVH, hd}, &kn),
                vc_(*cpu, {n, KVH, hd}, &vn), oc(*cpu, {n, H, hd});
            cpu->attention_forward(qc.t, kc_.t, vc_.t, cc, 0, pos0, static_cast<float>(scale), oc.t);
            EXPECT_LT(nmse(got, oc.read(*cpu, "cpu")), kBf16Out) << "vs the CPU backend";
          }
        }
    }
}

// Prefill-sized n on an FP8 cache (the decode kernel with row tiles, no splits) and on a BF16 cache
// (the SIMT kernel), with a device pos0.
TEST_F(CudaAttentionDecode, PrefillSizedN) {
  for (const KvType kt : {KvType::BF16, KvType::FP8_E4M3})
    for (const auto [pos0, n] : {std::pair<int64_t, int64_t>{0, 37}, {100, 9}, {500, 64}}) {
      const bool fp8 = kt == KvType::FP8_E4M3;
      const int64_t H = 32, KVH = 8, hd = 128, cap = pos0 + n + 5;
      SCOPED_TRACE(::testing::Message() << "pos0 " << pos0 << " n " << n << (fp8 ? " FP8" : " BF16"));
      const AttentionShape s{H, KVH, hd, cap};
      const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
      const auto k = randn_bf16(static_cast<size_t>((pos0 + n) * KVH * hd), rng);
      const auto v = randn_bf16(k.size(), rng);
      const auto q = randn_bf16(static_cast<size_t>(n * H * hd), rng);
      std::vector<float> k8(k), v8(v);
      for (size_t e = 0; e < k.size(); ++e) k8[e] = fp8_round(k[e]), v8[e] = fp8_round(v[e]);
      const size_t cache_bytes = static_cast<size_t>(KVH * cap * hd) * cuda::kv_type_bytes(kt);
      DevBuf kc(cache_bytes), vc(cache_bytes), scratch(cuda::attention_scratch_bytes(s, n)), dpos(4);
      CU(cudaMemset(kc.p, 0xff, cache_bytes));
      CU(cudaMemset(vc.p, 0xff, cache_bytes));
      CU(cudaDeviceSynchronize());  // legacy-stream set-up done before ctx's non-blocking stream runs
      DevBf16 kd(static_cast<int64_t>(k.size()), &k), vd(static_cast<int64_t>(v.size()), &v);
      DevBf16 qd(n * H * hd, &q), out(n * H * hd);
      const int32_t p32 = static_cast<int32_t>(pos0);
      CU(cudaMemcpy(dpos.p, &p32, 4, cudaMemcpyHostToDevice));
      CU(cudaDeviceSynchronize());  // legacy-stream set-up done before ctx's non-blocking stream runs
      cuda::kv_cache_write(*ctx, kd.ptr(), KVH * hd, vd.ptr(), KVH * hd, pos0 + n, 0, nullptr, kc.p, vc.p, kt,
                           s);
      cuda::attention_forward(*ctx, qd.ptr(), H * hd, n, cap - n, dpos.as<int32_t>(), kc.p, vc.p, kt, s,
                              static_cast<float>(scale), out.ptr(), H * hd, {scratch.p, scratch.bytes});
      ctx->synchronize();
      EXPECT_LT(
          nmse(out.read("attention"), reference(q, fp8 ? k8 : k, fp8 ? v8 : v, n, pos0, H, KVH, hd, scale)),
          kBf16Out);
    }
}

// The cache write: BF16 bit-exact, FP8 equal to the CPU codec's saturating round-to-nearest-even
// (inputs up to ~1000 so that some saturate at 448), host and device pos0 alike; positions outside
// [pos0, pos0 + n) untouched.
TEST_F(CudaAttentionDecode, KvCacheWrite) {
  for (const KvType kt : {KvType::BF16, KvType::FP8_E4M3})
    for (const bool device_pos : {false, true}) {
      const int64_t KVH = 4, hd = 40, cap = 50, n = 7, pos0 = 21;
      const AttentionShape s{8, KVH, hd, cap};
      const auto k = randn_bf16(static_cast<size_t>(n * KVH * hd), rng, 300.0f);
      const auto v = randn_bf16(k.size(), rng, 0.01f);  // small: e4m3 subnormals
      const size_t eb = cuda::kv_type_bytes(kt), bytes = static_cast<size_t>(KVH * cap * hd) * eb;
      DevBuf kc(bytes), vc(bytes), dpos(4);
      CU(cudaMemset(kc.p, 0x5a, bytes));
      CU(cudaMemset(vc.p, 0x5a, bytes));
      CU(cudaDeviceSynchronize());  // legacy-stream set-up done before ctx's non-blocking stream runs
      DevBf16 kd(static_cast<int64_t>(k.size()), &k), vd(static_cast<int64_t>(v.size()), &v);
      const int32_t p32 = static_cast<int32_t>(pos0);
      CU(cudaMemcpy(dpos.p, &p32, 4, cudaMemcpyHostToDevice));
      CU(cudaDeviceSynchronize());  // legacy-stream set-up done before ctx's non-blocking stream runs
      cuda::kv_cache_write(*ctx, kd.ptr(), KVH * hd, vd.ptr(), KVH * hd, n, device_pos ? cap - n : pos0,
                           device_pos ? dpos.as<int32_t>() : nullptr, kc.p, vc.p, kt, s);
      ctx->synchronize();
      for (int which = 0; which < 2; ++which) {
        std::vector<uint8_t> got(bytes);
        CU(cudaMemcpy(got.data(), which ? vc.p : kc.p, bytes, cudaMemcpyDeviceToHost));
        const auto& src = which ? v : k;
        int64_t bad = 0;
        for (int64_t g = 0; g < KVH; ++g)
          for (int64_t j = 0; j < cap; ++j)
            for (int64_t d = 0; d < hd; ++d) {
              const size_t e = static_cast<size_t>((g * cap + j) * hd + d);
              uint16_t want = 0x5a5a, have = 0;
              if (j >= pos0 && j < pos0 + n) {
                const float x = src[((j - pos0) * KVH + g) * hd + d];
                want = kt == KvType::BF16 ? f32_to_bf16(x) : f32_to_fp8_e4m3_saturate(x);
              } else if (kt == KvType::FP8_E4M3) {
                want = 0x5a;
              }
              if (kt == KvType::BF16)
                std::memcpy(&have, &got[2 * e], 2);
              else
                have = got[e];
              bad += have != want;
            }
        EXPECT_EQ(bad, 0) << (which ? "v" : "k") << (kt == KvType::BF16 ? " BF16" : " FP8")
                          << (device_pos ? " device pos0" : " host pos0");
      }
    }
}

// One CUDA graph of attention_forward with a device pos0, replayed for several positions: each
// replay equals the host-pos0 call bitwise.
TEST_F(CudaAttentionDecode, GraphReplayOverPositions) {
  const int64_t H = 32, KVH = 8, hd = 128, n = 1, cap = 4200;
  const AttentionShape s{H, KVH, hd, cap};
  const float scale = 1.0f / std::sqrt(128.0f);
  for (const KvType kt : {KvType::BF16, KvType::FP8_E4M3}) {
    const auto k = randn_bf16(static_cast<size_t>(cap * KVH * hd), rng);
    const auto v = randn_bf16(k.size(), rng);
    const auto q = randn_bf16(static_cast<size_t>(n * H * hd), rng);
    const size_t bytes = static_cast<size_t>(KVH * cap * hd) * cuda::kv_type_bytes(kt);
    DevBuf kc(bytes), vc(bytes), scratch(cuda::attention_scratch_bytes(s, n)), dpos(4);
    DevBf16 kd(static_cast<int64_t>(k.size()), &k), vd(static_cast<int64_t>(v.size()), &v);
    DevBf16 qd(n * H * hd, &q), out_g(n * H * hd), out_h(n * H * hd);
    cuda::kv_cache_write(*ctx, kd.ptr(), KVH * hd, vd.ptr(), KVH * hd, cap, 0, nullptr, kc.p, vc.p, kt, s);
    ctx->synchronize();
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CU(cudaStreamBeginCapture(ctx->stream(), cudaStreamCaptureModeThreadLocal));
    cuda::attention_forward(*ctx, qd.ptr(), H * hd, n, cap - n, dpos.as<int32_t>(), kc.p, vc.p, kt, s, scale,
                            out_g.ptr(), H * hd, {scratch.p, scratch.bytes});
    CU(cudaStreamEndCapture(ctx->stream(), &graph));
    CU(cudaGraphInstantiate(&exec, graph, 0));
    for (const int32_t pos0 : {0, 1, 31, 127, 128, 300, 4095, 4199}) {
      CU(cudaMemcpy(dpos.p, &pos0, 4, cudaMemcpyHostToDevice));
      CU(cudaDeviceSynchronize());  // legacy-stream set-up done before ctx's non-blocking stream runs
      CU(cudaGraphLaunch(exec, ctx->stream()));
      cuda::attention_forward(*ctx, qd.ptr(), H * hd, n, pos0, nullptr, kc.p, vc.p, kt, s, scale, out_h.ptr(),
                              H * hd, {scratch.p, scratch.bytes});
      ctx->synchronize();
      EXPECT_EQ(out_g.bits(), out_h.bits()) << "pos0 " << pos0 << (kt == KvType::BF16 ? " BF16" : " FP8");
      out_h.read("attention");
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
}

// Several attention calls back to back in one CUDA graph (device pos0, many splits, every n from 1
// to 8, both cache types), replayed at several positions with the scratch overwritten between
// replays (as other ops of a step would): each output is fully written (outputs poisoned before
// every replay), equals its host-pos0 call bitwise, and matches the fp64 reference at one position.
// This exercises the chain of programmatic dependent launches (decode, combine, next decode reusing
// the scratch) and the split merge at every n.
TEST_F(CudaAttentionDecode, BackToBackCallsInOneGraph) {
  const int64_t H = 32, KVH = 8, hd = 128, cap = 6000;
  const AttentionShape s{H, KVH, hd, cap};
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  constexpr int kCalls = 3;
  const auto k = randn_bf16(static_cast<size_t>(cap * KVH * hd), rng);
  const auto v = randn_bf16(k.size(), rng);
  std::vector<float> k8(k.size()), v8(v.size());
  for (size_t e = 0; e < k.size(); ++e) k8[e] = fp8_round(k[e]), v8[e] = fp8_round(v[e]);
  DevBf16 kd(static_cast<int64_t>(k.size()), &k), vd(static_cast<int64_t>(v.size()), &v);
  for (const KvType kt : {KvType::BF16, KvType::FP8_E4M3}) {
    const bool fp8 = kt == KvType::FP8_E4M3;
    const size_t bytes = static_cast<size_t>(KVH * cap * hd) * cuda::kv_type_bytes(kt);
    DevBuf kc(bytes), vc(bytes);
    cuda::kv_cache_write(*ctx, kd.ptr(), KVH * hd, vd.ptr(), KVH * hd, cap, 0, nullptr, kc.p, vc.p, kt, s);
    for (int64_t n = 1; n <= 8; ++n) {
      DevBuf scratch(cuda::attention_scratch_bytes(s, n)), dpos(4);
      const cuda::Scratch sc{scratch.p, scratch.bytes};
      std::vector<std::vector<float>> qs;
      std::vector<std::unique_ptr<DevBf16>> qd, out_g, out_h;
      for (int c = 0; c < kCalls; ++c) {
        qs.push_back(randn_bf16(static_cast<size_t>(n * H * hd), rng));
        qd.push_back(std::make_unique<DevBf16>(n * H * hd, &qs.back()));
        out_g.push_back(std::make_unique<DevBf16>(n * H * hd));
        out_h.push_back(std::make_unique<DevBf16>(n * H * hd));
      }
      ctx->synchronize();
      cudaGraph_t graph;
      cudaGraphExec_t exec;
      CU(cudaStreamBeginCapture(ctx->stream(), cudaStreamCaptureModeThreadLocal));
      for (int c = 0; c < kCalls; ++c)
        cuda::attention_forward(*ctx, qd[c]->ptr(), H * hd, n, cap - n, dpos.as<int32_t>(), kc.p, vc.p, kt, s,
                                static_cast<float>(scale), out_g[c]->ptr(), H * hd, sc);
      CU(cudaStreamEndCapture(ctx->stream(), &graph));
      CU(cudaGraphInstantiate(&exec, graph, 0));
      for (const int32_t pos0 : {static_cast<int32_t>(cap - n), 4000, 777, 100, 0, 4000}) {
        SCOPED_TRACE(::testing::Message() << "n " << n << " pos0 " << pos0 << (fp8 ? " FP8" : " BF16"));
        CU(cudaMemset(scratch.p, 0xff, scratch.bytes));  // what another op may leave there
        CU(cudaDeviceSynchronize());  // legacy-stream set-up done before ctx's non-blocking stream runs
        for (int c = 0; c < kCalls; ++c) out_g[c]->poison(), out_h[c]->poison();
        CU(cudaMemcpy(dpos.p, &pos0, 4, cudaMemcpyHostToDevice));
        CU(cudaDeviceSynchronize());  // legacy-stream set-up done before ctx's non-blocking stream runs
        CU(cudaGraphLaunch(exec, ctx->stream()));
        ctx->synchronize();
        std::vector<std::vector<uint16_t>> got_bits;
        for (int c = 0; c < kCalls; ++c) got_bits.push_back(out_g[c]->bits());
        for (int c = 0; c < kCalls; ++c)
          cuda::attention_forward(*ctx, qd[c]->ptr(), H * hd, n, pos0, nullptr, kc.p, vc.p, kt, s,
                                  static_cast<float>(scale), out_h[c]->ptr(), H * hd, sc);
        ctx->synchronize();
        for (int c = 0; c < kCalls; ++c) {
          const auto got = out_g[c]->read("graph call");
          EXPECT_EQ(got_bits[c], out_h[c]->bits()) << "call " << c << ": device pos0 differs from host pos0";
          if (pos0 == 4000 && c == 0)
            EXPECT_LT(nmse(got, reference(qs[c], fp8 ? k8 : k, fp8 ? v8 : v, n, pos0, H, KVH, hd, scale)),
                      kBf16Out);
        }
      }
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
    }
  }
}

// Decode of Qwen3-4B's shape (H 32, KVH 8, hd 128, n 1): achieved GB/s of K and V read, against a
// device-to-device copy. Each timing replays a graph of 20 calls that rotate over enough caches
// (>= 150 MB of K/V between two uses of one) to defeat the L2. Rows:
// - "attn": attention_forward alone, the launch sized by the host pos0 (capacity = keys);
// - "attn@bound": as the backend records it: capacity 32768, the launch sized for the end of the
//   cache, pos0 on the device;
// - "step": the same preceded by qk_norm_rope_kv_forward of the token (q/k norm and RoPE, k and v
//   appended to the cache: a layer's two kernels between its q/k/v and o projections);
// - "fused": the same work as "step" in one kernel (qk_norm_rope_attention_forward, what the model
//   runs for one token).
// Prints; asserts nothing on time.
TEST_F(CudaAttentionDecode, Bandwidth) {
  const int64_t H = 32, KVH = 8, hd = 128, n = 1, kMaxCap = 32768;
  const float scale = 1.0f / std::sqrt(128.0f);
  const double copy_gbs = cuda::copy_bandwidth_gbps(*ctx);
  std::printf("[bandwidth] %s: device-to-device copy %.0f GB/s (read + write)\n", ctx->info().name.c_str(),
              copy_gbs);
  const auto q = randn_bf16(static_cast<size_t>(H * hd), rng);
  const auto kv = randn_bf16(static_cast<size_t>(kMaxCap * KVH * hd), rng);
  DevBf16 qd(H * hd, &q), out(H * hd), kvd(static_cast<int64_t>(kv.size()), &kv), k_out(KVH * hd);
  std::vector<float> unit(static_cast<size_t>(hd), 1.0f), inv_freq(static_cast<size_t>(hd / 2));
  for (size_t i = 0; i < inv_freq.size(); ++i)
    inv_freq[i] = static_cast<float>(std::pow(1e6, -2.0 * static_cast<double>(i) / static_cast<double>(hd)));
  DevBuf norm_w(unit.size() * 4), freq(inv_freq.size() * 4);
  CU(cudaMemcpy(norm_w.p, unit.data(), unit.size() * 4, cudaMemcpyHostToDevice));
  CU(cudaMemcpy(freq.p, inv_freq.data(), inv_freq.size() * 4, cudaMemcpyHostToDevice));
  CU(cudaDeviceSynchronize());  // legacy-stream set-up done before ctx's non-blocking stream runs
  struct Case {
    const char* name;
    int64_t keys;
    bool at_bound, with_write, fused;
  };
  const Case cases[] = {{"attn", 4096, false, false, false},      {"attn", 32768, false, false, false},
                        {"attn@bound", 1, true, false, false},    {"attn@bound", 301, true, false, false},
                        {"attn@bound", 4096, true, false, false}, {"attn@bound", 32768, true, false, false},
                        {"step", 301, true, true, false},         {"step", 4096, true, true, false},
                        {"fused", 1, true, true, true},           {"fused", 301, true, true, true},
                        {"fused", 4096, true, true, true},        {"fused", 32768, true, true, true}};
  for (const KvType kt : {KvType::BF16, KvType::FP8_E4M3})
    for (const Case& cs : cases) {
      const int64_t keys = cs.keys, cap = cs.at_bound ? kMaxCap : keys, bound = cap - n;
      const AttentionShape s{H, KVH, hd, cap};
      const size_t eb = cuda::kv_type_bytes(kt), cache_bytes = static_cast<size_t>(KVH * cap * hd) * eb;
      const double kv_bytes = 2.0 * static_cast<double>(KVH * keys * hd * eb);  // what one call reads
      constexpr int kCalls = 20;
      const int copies = static_cast<int>(std::clamp<double>(
          std::ceil(150e6 / kv_bytes), 2.0, std::min<double>(kCalls, 2.5e9 / (2.0 * cache_bytes))));
      DevBuf pool(2 * cache_bytes * copies), scratch(cuda::attention_scratch_bytes(s, n)), dpos(4);
      for (int c = 0; c < copies; ++c) {  // random cache contents (not zeros) for the positions read
        unsigned char* base = pool.as<unsigned char>() + 2 * cache_bytes * c;
        cuda::kv_cache_write(*ctx, kvd.ptr(), KVH * hd, kvd.ptr(), KVH * hd, keys, 0, nullptr, base,
                             base + cache_bytes, kt, s);
      }
      const int32_t p32 = static_cast<int32_t>(keys - n);
      CU(cudaMemcpy(dpos.p, &p32, 4, cudaMemcpyHostToDevice));
      CU(cudaDeviceSynchronize());  // legacy-stream set-up done before ctx's non-blocking stream runs
      ctx->synchronize();
      cudaGraph_t graph;
      cudaGraphExec_t exec;
      CU(cudaStreamBeginCapture(ctx->stream(), cudaStreamCaptureModeThreadLocal));
      for (int c = 0; c < kCalls; ++c) {
        unsigned char* base = pool.as<unsigned char>() + 2 * cache_bytes * (c % copies);
        if (cs.fused) {  // the same work in one kernel (q only read)
          cuda::qk_norm_rope_attention_forward(*ctx, qd.ptr(), kvd.ptr(), kvd.ptr(), norm_w.as<float>(),
                                               norm_w.as<float>(), 1e-6f, bound, dpos.as<int32_t>(),
                                               freq.as<float>(), 1.0f, base, base + cache_bytes, kt, s, scale,
                                               out.ptr(), {scratch.p, scratch.bytes});
          continue;
        }
        if (cs.with_write)  // q rotated in place (normalised first, so repeated calls stay bounded)
          cuda::qk_norm_rope_kv_forward(*ctx, qd.ptr(), H * hd, kvd.ptr(), KVH * hd, kvd.ptr(), KVH * hd, n,
                                        H, KVH, hd, norm_w.as<float>(), norm_w.as<float>(), 1e-6f, bound,
                                        dpos.as<int32_t>(), freq.as<float>(), 1.0f, qd.ptr(), H * hd,
                                        k_out.ptr(), KVH * hd, base, base + cache_bytes, kt, cap);
        cuda::attention_forward(*ctx, qd.ptr(), H * hd, n, bound, dpos.as<int32_t>(), base,
                                base + cache_bytes, kt, s, scale, out.ptr(), H * hd,
                                {scratch.p, scratch.bytes});
      }
      CU(cudaStreamEndCapture(ctx->stream(), &graph));
      CU(cudaGraphInstantiate(&exec, graph, 0));
      const double ms = cuda::median_ms(
                            *ctx, [&] { CU(cudaGraphLaunch(exec, ctx->stream())); }, 15, 3) /
                        kCalls;
      ctx->synchronize();
      out.read("attention");
      const double gbs = kv_bytes / ms / 1e6;
      std::printf("[bandwidth] %-4s %-10s keys %6lld: %8.2f us  %7.0f GB/s  %5.1f%% of copy\n",
                  kt == KvType::BF16 ? "BF16" : "FP8", cs.name, static_cast<long long>(keys), ms * 1e3, gbs,
                  100.0 * gbs / copy_gbs);
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
    }
}

}  // namespace
}  // namespace nibble
