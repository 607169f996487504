// Every forward op of the CUDA backend against the CPU backend (the reference), in the style of
// ggml's test-backend-ops: random inputs (rounded to bf16 so both backends see the same values),
// several shapes including odd ones, NaN/inf and unwritten-element checks, sentinels after each
// output, and an NMSE bound per op with its reason. Skips without a GPU.
//
// Bounds. The CUDA backend keeps activations in bf16: every op's output is rounded once to bf16
// (relative error <= 2^-9: NMSE <= 2^-18 = 3.8e-6 if every element hit the worst case, ~1.3e-6
// typically). kBf16Out = 8e-6 allows that plus fp32 reordering on outputs of a few elements; a
// wrong index or a missed term gives NMSE > 1e-3. F32 outputs (logits) only differ by the fp32
// summation order: kF32Out = 1e-8.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "cuda/cuda_test_util.h"
#include "quant/fp8.h"
#include "quant/nvfp4.h"
#include "runtime/sampler.h"

namespace nibble {
namespace {

using test::DevTensor;
using test::nmse;
using test::randn_bf16;

constexpr double kBf16Out = 8e-6;
constexpr double kF32Out = 1e-8;

// Per-head q and k norm weights near 1 and RoPE inverse frequencies (theta 1e6) for head_dim hd.
struct QkWeights {
  std::vector<float> q_norm, k_norm, inv_freq;
};
QkWeights random_qk_weights(int64_t hd, std::mt19937& rng) {
  QkWeights w{std::vector<float>(static_cast<size_t>(hd)), std::vector<float>(static_cast<size_t>(hd)),
              std::vector<float>(static_cast<size_t>(hd / 2))};
  for (auto* v : {&w.q_norm, &w.k_norm})
    for (auto& x : *v) x = 1.0f + 0.2f * std::normal_distribution<float>()(rng);
  for (size_t i = 0; i < w.inv_freq.size(); ++i)
    w.inv_freq[i] =
        static_cast<float>(std::pow(1e6, -2.0 * static_cast<double>(i) / static_cast<double>(hd)));
  return w;
}

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    NIBBLE_REQUIRE_GPU();
    gpu = std::make_unique<CudaBackend>(CudaBackendOptions{});
    cpu = make_backend("cpu", BackendOptions{4});
  }
  std::unique_ptr<CudaBackend> gpu;
  std::unique_ptr<Backend> cpu;
  std::mt19937 rng{20240601};
};

TEST_F(CudaOps, Embedding) {
  for (auto [vocab, dim] :
       {std::pair<int64_t, int64_t>{1, 8}, {50, 7}, {512, 64}, {37, 130}, {151936, 2560}}) {
    const auto table = randn_bf16(static_cast<size_t>(vocab * dim), rng);
    const auto bits = test::to_bf16_bits(table);
    const Weight host{WeightFormat::Dense, DType::BF16, vocab, dim, bits.data()};
    const Weight w = gpu->upload_weight(host);
    std::vector<int32_t> ids;
    std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab - 1));
    for (int i = 0; i < 11; ++i) ids.push_back(i == 0 ? static_cast<int32_t>(vocab - 1) : pick(rng));
    DevTensor out(*gpu, {11, dim});
    gpu->embedding_forward(w, ids, out.t);
    const auto got = out.read(*gpu, "embedding");
    for (size_t i = 0; i < ids.size(); ++i)
      for (int64_t j = 0; j < dim; ++j)
        ASSERT_EQ(got[i * dim + j], table[ids[i] * dim + j]) << vocab << "x" << dim << " token " << i;
  }
}

TEST_F(CudaOps, RmsNorm) {
  for (auto [rows, dim] :
       {std::pair<int64_t, int64_t>{1, 8}, {3, 64}, {7, 129}, {4, 2560}, {33, 16}, {256, 128}}) {
    const auto x = randn_bf16(static_cast<size_t>(rows * dim), rng, 3.0f);
    const auto w = randn_bf16(static_cast<size_t>(dim), rng);
    const Tensor wh(const_cast<float*>(w.data()), DType::F32, {dim});
    const Tensor wg = gpu->upload_tensor(wh), wc = cpu->upload_tensor(wh);
    DevTensor xg(*gpu, {rows, dim}, &x), og(*gpu, {rows, dim}), rg(*gpu, DType::F32, {rows});
    DevTensor xc(*cpu, {rows, dim}, &x), oc(*cpu, {rows, dim}), rc(*cpu, DType::F32, {rows});
    gpu->rmsnorm_forward(xg.t, wg, 1e-6f, og.t, rg.t);
    cpu->rmsnorm_forward(xc.t, wc, 1e-6f, oc.t, rc.t);
    EXPECT_LT(nmse(og.read(*gpu, "rmsnorm"), oc.read(*cpu, "cpu")), kBf16Out) << rows << "x" << dim;
    // rstd in fp32 (rsqrtf: a few ulp).
    EXPECT_LT(nmse(rg.read(*gpu, "rstd"), rc.read(*cpu, "cpu")), 1e-10) << rows << "x" << dim;
    EXPECT_EQ(xg.read(*gpu, "rmsnorm input"), x);  // input untouched
  }
}

// One linear on both backends; returns {gpu, cpu} outputs.
void check_linear(Backend& gpu, Backend& cpu, const Weight& host, int64_t n, bool with_bias, DType out_dtype,
                  std::mt19937& rng, const std::string& label) {
  const auto x = randn_bf16(static_cast<size_t>(n * host.in), rng);
  const auto bias = randn_bf16(static_cast<size_t>(host.out), rng);
  const Tensor bh(const_cast<float*>(bias.data()), DType::F32, {host.out});
  const Weight wg = gpu.upload_weight(host), wc = cpu.upload_weight(host);
  const Tensor bg = with_bias ? gpu.upload_tensor(bh) : Tensor(),
               bc = with_bias ? cpu.upload_tensor(bh) : Tensor();
  DevTensor xg(gpu, {n, host.in}, &x), yg(gpu, out_dtype, {n, host.out});
  DevTensor xc(cpu, {n, host.in}, &x), yc(cpu, {n, host.out});
  gpu.linear_forward(xg.t, wg, bg, yg.t);
  cpu.linear_forward(xc.t, wc, bc, yc.t);
  const double e = nmse(yg.read(gpu, label), yc.read(cpu, "cpu"));
  EXPECT_LT(e, out_dtype == DType::F32 ? kF32Out : kBf16Out) << label << (with_bias ? " bias" : "");
}

TEST_F(CudaOps, LinearDenseBf16) {
  for (auto [n, in, out] : {std::tuple<int64_t, int64_t, int64_t>{1, 64, 7},
                            {3, 8, 4},
                            {17, 136, 65},
                            {2, 2560, 9},
                            {5, 172, 64},  // K % 8 != 0 (llama2c's down_proj)
                            {64, 128, 512},
                            {300, 256, 96}}) {
    for (DType src : {DType::BF16, DType::F32}) {  // F32 checkpoints are uploaded as BF16
      auto w = randn_bf16(static_cast<size_t>(out * in), rng, 0.1f);
      const Weight host{WeightFormat::Dense, DType::F32, out, in, w.data()};
      auto bits = test::to_bf16_bits(w);
      const Weight hb{WeightFormat::Dense, DType::BF16, out, in, bits.data()};
      for (bool bias : {false, true})
        for (DType od : {DType::BF16, DType::F32})
          check_linear(*gpu, *cpu, src == DType::BF16 ? hb : host, n, bias, od, rng,
                       fmt::format("dense {}x{}->{} {} out {}", n, in, out, dtype_name(src), dtype_name(od)));
    }
  }
}

// NVFP4: the GEMV path (n <= 8, 16- and 8-byte code loads) and the dequantise + cuBLASLt path
// (n > 8; 16 x 2560 x 9728 spans two scratch chunks). Weights are exact on both sides.
TEST_F(CudaOps, LinearNvfp4) {
  for (auto [n, in, out] : {std::tuple<int64_t, int64_t, int64_t>{1, 64, 33},
                            {1, 80, 16},
                            {3, 2560, 1024},
                            {8, 48, 100},
                            {1, 9728, 2560},
                            {9, 64, 33},
                            {40, 80, 70},
                            {16, 2560, 9728}}) {
    const auto w = randn_bf16(static_cast<size_t>(out * in), rng, 0.05f);
    const Nvfp4Tensor q = quantize_nvfp4(w.data(), out, in);
    for (bool bias : {false, true})
      for (DType od : {DType::BF16, DType::F32})
        check_linear(*gpu, *cpu, q.view(), n, bias, od, rng,
                     fmt::format("nvfp4 {}x{}->{} out {}", n, in, out, dtype_name(od)));
  }
}

TEST_F(CudaOps, Rope) {
  for (auto [n, heads, hd, pos0, att] :
       {std::tuple<int64_t, int64_t, int64_t, int64_t, float>{1, 1, 8, 0, 1.0f},
        {5, 3, 16, 0, 1.0f},
        {4, 2, 32, 100, 1.1386f},
        {1, 32, 128, 40000, 1.0f},
        {9, 8, 128, 7, 1.0f},
        {3, 1, 6, 5, 1.0f}}) {
    const auto x = randn_bf16(static_cast<size_t>(n * heads * hd), rng);
    std::vector<float> inv_freq(static_cast<size_t>(hd / 2));
    for (int64_t j = 0; j < hd / 2; ++j) inv_freq[j] = static_cast<float>(std::pow(1e6, -2.0 * j / hd));
    DevTensor xg(*gpu, {n, heads, hd}, &x), fg(*gpu, DType::F32, {hd / 2}, &inv_freq);
    DevTensor xc(*cpu, {n, heads, hd}, &x), fc(*cpu, DType::F32, {hd / 2}, &inv_freq);
    gpu->rope_forward(xg.t, pos0, RopeTable{fg.t, att});
    cpu->rope_forward(xc.t, pos0, RopeTable{fc.t, att});
    EXPECT_LT(nmse(xg.read(*gpu, "rope"), xc.read(*cpu, "cpu")), kBf16Out)
        << n << "x" << heads << "x" << hd << " @" << pos0;
  }
}

// Causal GQA: a prefill, a second chunk, then single-token decode steps; the last shape runs a
// decode at position 3000 so that split-KV (several partitions and the combine) is exercised.
TEST_F(CudaOps, Attention) {
  struct Case {
    int64_t hq, hkv, hd, cap;
    std::vector<std::pair<int64_t, int64_t>> calls;  // (pos0, n)
  };
  const std::vector<Case> cases = {
      {4, 4, 16, 64, {{0, 5}, {5, 1}, {6, 1}}}, {8, 2, 32, 64, {{0, 7}, {7, 6}, {13, 1}}},
      {4, 2, 40, 64, {{0, 33}, {33, 2}}},       {32, 8, 128, 4096, {{0, 100}, {100, 3}, {103, 1}}},
      {2, 1, 256, 64, {{0, 9}, {9, 1}}},        {16, 8, 64, 3100, {{0, 3000}, {3000, 1}, {3001, 4}}},
  };
  for (const Case& c : cases) {
    KvCache kg = gpu->alloc_kv_cache(2, c.hkv, c.cap, c.hd), kc = cpu->alloc_kv_cache(2, c.hkv, c.cap, c.hd);
    for (auto [pos0, n] : c.calls) {
      const auto q = randn_bf16(static_cast<size_t>(n * c.hq * c.hd), rng);
      const auto k = randn_bf16(static_cast<size_t>(n * c.hkv * c.hd), rng);
      const auto v = randn_bf16(static_cast<size_t>(n * c.hkv * c.hd), rng);
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
      DevTensor qg(*gpu, {n, c.hq, c.hd}, &q), kg_(*gpu, {n, c.hkv, c.hd}, &k),
          vg(*gpu, {n, c.hkv, c.hd}, &v), og(*gpu, {n, c.hq, c.hd});
      DevTensor qc(*cpu, {n, c.hq, c.hd}, &q), kc_(*cpu, {n, c.hkv, c.hd}, &k),
          vc(*cpu, {n, c.hkv, c.hd}, &v), oc(*cpu, {n, c.hq, c.hd});
      gpu->attention_forward(qg.t, kg_.t, vg.t, kg, 1, pos0, scale, og.t);
      cpu->attention_forward(qc.t, kc_.t, vc.t, kc, 1, pos0, scale, oc.t);
      EXPECT_LT(nmse(og.read(*gpu, "attention"), oc.read(*cpu, "cpu")), kBf16Out)
          << "hq " << c.hq << " hkv " << c.hkv << " hd " << c.hd << " pos0 " << pos0 << " n " << n;
    }
    // The cache layout (layer, head, position, hd) holds the appended keys exactly.
    std::vector<float> a(static_cast<size_t>(kg.k_layer(1).numel())), b(a.size());
    gpu->copy_to_host(kg.k_layer(1), a);
    cpu->copy_to_host(kc.k_layer(1), b);
    EXPECT_EQ(a, b) << "k cache, hd " << c.hd;
  }
}

// qk_norm_rope_kv_forward (one kernel: q/k norm, RoPE, k and v to the cache) on BF16 and FP8
// caches that start filled with a marker byte, with the host pos0 and with the device pos0 of a
// recorded step (recorded at one position, replayed at the last one the cache holds and at one
// past it, where the tokens beyond the capacity must not be written). Checks: q_out and k_out
// bitwise equal to the GPU's qk_norm_rope_forward (the same arithmetic) and within kBf16Out of the
// CPU's composition (the bound of test_cuda_decode's QkNormRopeMatchesComposition); every cache byte
// equal to the marker, except [pos0, pos0 + n) of the layer, which holds k_out and v as bf16 or as
// e4m3 (the CPU codec's saturating round to nearest even); with the host pos0 also bitwise the
// caches of the GPU's composition (Backend's default: qk_norm_rope_forward, kv_cache_write) and for
// BF16 the CPU cache within kBf16Out. The layer alternates so that a write past a head's capacity
// would land on a marked byte.
TEST_F(CudaOps, QkNormRopeKv) {
  struct Case {
    int64_t n, hq, hkv, hd, pos0, cap;
    bool norm;
  };
  const Case cases[] = {{1, 32, 8, 128, 4095, 4100, true}, {7, 4, 2, 64, 0, 16, true},
                        {3, 2, 1, 256, 60, 64, true},      {5, 6, 3, 40, 17, 30, true},
                        {2, 4, 4, 32, 9, 12, false},       {20, 8, 2, 128, 5, 40, true}};
  constexpr uint8_t kMarker = 0x5a;
  const int64_t layers = 2;
  for (const DType kt : {DType::BF16, DType::F8_E4M3}) {
    CudaBackendOptions opts;
    opts.kv_dtype = kt;
    CudaBackend g(opts);
    const size_t eb = dtype_size(kt);
    for (size_t ci = 0; ci < std::size(cases); ++ci) {
      const Case& c = cases[ci];
      const int64_t layer = static_cast<int64_t>(ci % 2);
      SCOPED_TRACE(::testing::Message() << (kt == DType::BF16 ? "BF16" : "FP8") << " n " << c.n << " hq "
                                        << c.hq << " hkv " << c.hkv << " hd " << c.hd << " layer " << layer);
      const auto q = randn_bf16(static_cast<size_t>(c.n * c.hq * c.hd), rng, 2.0f);
      const auto k = randn_bf16(static_cast<size_t>(c.n * c.hkv * c.hd), rng, 2.0f);
      const auto v = randn_bf16(k.size(), rng, 200.0f);  // some past e4m3's 448: saturation
      const QkWeights qkw = random_qk_weights(c.hd, rng);
      const auto& qw = qkw.q_norm;
      const auto& kw = qkw.k_norm;
      const auto& freq = qkw.inv_freq;
      const size_t cache_bytes = static_cast<size_t>(layers * c.hkv * c.cap * c.hd) * eb;
      const Tensor none;

      // Tensors of one backend; without norms q_out and k_out are q and k (RoPE in place).
      struct Io {
        DevTensor qd, kd, vd, qo, ko, qn, kn, f;
        Io(Backend& b, const Case& c, const std::vector<float>& q, const std::vector<float>& k,
           const std::vector<float>& v, const std::vector<float>& qw, const std::vector<float>& kw,
           const std::vector<float>& freq)
            : qd(b, {c.n, c.hq, c.hd}, &q),
              kd(b, {c.n, c.hkv, c.hd}, &k),
              vd(b, {c.n, c.hkv, c.hd}, &v),
              qo(b, {c.n, c.hq, c.hd}),
              ko(b, {c.n, c.hkv, c.hd}),
              qn(b, DType::F32, {c.hd}, &qw),
              kn(b, DType::F32, {c.hd}, &kw),
              f(b, DType::F32, {c.hd / 2}, &freq) {}
      };
      auto q_out = [&](const Io& io) -> const DevTensor& { return c.norm ? io.qo : io.qd; };
      auto k_out = [&](const Io& io) -> const DevTensor& { return c.norm ? io.ko : io.kd; };
      auto norms = [&](const Io& io, bool q_side) -> const Tensor& {
        return !c.norm ? none : q_side ? io.qn.t : io.kn.t;
      };
      auto mark = [&](const KvCache& cache) {
        g.synchronize();
        ASSERT_EQ(cudaMemset(cache.k.data(), kMarker, cache_bytes), cudaSuccess);
        ASSERT_EQ(cudaMemset(cache.v.data(), kMarker, cache_bytes), cudaSuccess);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      };
      auto bytes_of = [&](const Buffer& b) {
        g.synchronize();
        std::vector<uint8_t> h(cache_bytes);
        EXPECT_EQ(cudaMemcpy(h.data(), b.data(), cache_bytes, cudaMemcpyDeviceToHost), cudaSuccess);
        return h;
      };
      // The cache bytes after the marker and the rows (n, hkv, hd) written at positions p + t < cap.
      auto expected = [&](const std::vector<float>& rows, int64_t p) {
        std::vector<uint8_t> e(cache_bytes, kMarker);
        for (int64_t t = 0; t < c.n && p + t < c.cap; ++t)
          for (int64_t h = 0; h < c.hkv; ++h)
            for (int64_t d = 0; d < c.hd; ++d) {
              const float x = rows[static_cast<size_t>((t * c.hkv + h) * c.hd + d)];
              const size_t at = static_cast<size_t>(((layer * c.hkv + h) * c.cap + p + t) * c.hd + d) * eb;
              if (kt == DType::BF16) {
                const uint16_t bits = f32_to_bf16(x);
                std::memcpy(&e[at], &bits, 2);
              } else {
                e[at] = f32_to_fp8_e4m3_saturate(x);
              }
            }
        return e;
      };
      auto count_diff = [](const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
        int64_t d = 0;
        for (size_t i = 0; i < a.size() && i < b.size(); ++i) d += a[i] != b[i];
        return d + static_cast<int64_t>(a.size() != b.size());
      };
      // q_out and k_out of the GPU's unfused qk_norm_rope_forward at position p.
      auto reference_qk = [&](int64_t p) {
        Io io(g, c, q, k, v, qw, kw, freq);
        g.qk_norm_rope_forward(io.qd.t, io.kd.t, norms(io, true), norms(io, false), 1e-6f, p,
                               RopeTable{io.f.t, 1.0f}, q_out(io).t, k_out(io).t);
        return std::pair{q_out(io).read(g, "reference q_out"), k_out(io).read(g, "reference k_out")};
      };
      // Checks q_out, k_out and both caches after the fused op at position p.
      // reference: reference_qk(p), computed before a recording (its temporaries are device buffers,
      // and freeing one drops the backend's recordings).
      auto check = [&](const Io& io, const KvCache& cache, int64_t p, const char* what,
                       const std::pair<std::vector<float>, std::vector<float>>& reference) {
        SCOPED_TRACE(::testing::Message() << what << " at " << p);
        const auto& [rq, rk] = reference;
        EXPECT_EQ(q_out(io).read(g, "q_out"), rq);
        EXPECT_EQ(k_out(io).read(g, "k_out"), rk);
        EXPECT_EQ(count_diff(bytes_of(cache.k), expected(rk, p)), 0) << "k cache";
        EXPECT_EQ(count_diff(bytes_of(cache.v), expected(v, p)), 0) << "v cache";
      };

      // Host pos0: the fused op, the GPU's composition and the CPU's.
      {
        Io fused(g, c, q, k, v, qw, kw, freq), composed(g, c, q, k, v, qw, kw, freq);
        KvCache cf = g.alloc_kv_cache(layers, c.hkv, c.cap, c.hd),
                cc = g.alloc_kv_cache(layers, c.hkv, c.cap, c.hd);
        mark(cf);
        mark(cc);
        g.qk_norm_rope_kv_forward(fused.qd.t, fused.kd.t, fused.vd.t, norms(fused, true), norms(fused, false),
                                  1e-6f, c.pos0, RopeTable{fused.f.t, 1.0f}, q_out(fused).t, k_out(fused).t,
                                  cf, layer);
        g.Backend::qk_norm_rope_kv_forward(
            composed.qd.t, composed.kd.t, composed.vd.t, norms(composed, true), norms(composed, false), 1e-6f,
            c.pos0, RopeTable{composed.f.t, 1.0f}, q_out(composed).t, k_out(composed).t, cc, layer);
        check(fused, cf, c.pos0, "host pos0", reference_qk(c.pos0));
        EXPECT_EQ(count_diff(bytes_of(cf.k), bytes_of(cc.k)), 0) << "k cache against the composition";
        EXPECT_EQ(count_diff(bytes_of(cf.v), bytes_of(cc.v)), 0) << "v cache against the composition";

        Io ref(*cpu, c, q, k, v, qw, kw, freq);
        KvCache cr = cpu->alloc_kv_cache(layers, c.hkv, c.cap, c.hd);
        cpu->qk_norm_rope_kv_forward(ref.qd.t, ref.kd.t, ref.vd.t, norms(ref, true), norms(ref, false), 1e-6f,
                                     c.pos0, RopeTable{ref.f.t, 1.0f}, q_out(ref).t, k_out(ref).t, cr, layer);
        EXPECT_LT(nmse(q_out(fused).read(g, "q_out"), q_out(ref).read(*cpu, "cpu q_out")), kBf16Out);
        EXPECT_LT(nmse(k_out(fused).read(g, "k_out"), k_out(ref).read(*cpu, "cpu k_out")), kBf16Out);
        if (kt == DType::BF16) {
          std::vector<float> kg(static_cast<size_t>(cf.k_layer(layer).numel())), kc(kg.size());
          g.copy_to_host(cf.k_layer(layer), kg);
          cpu->copy_to_host(cr.k_layer(layer), kc);
          std::vector<float> got, want;  // the written positions of every head
          for (int64_t h = 0; h < c.hkv; ++h) {
            const auto b = static_cast<ptrdiff_t>((h * c.cap + c.pos0) * c.hd);
            const auto e = b + static_cast<ptrdiff_t>(c.n * c.hd);
            got.insert(got.end(), kg.begin() + b, kg.begin() + e);
            want.insert(want.end(), kc.begin() + b, kc.begin() + e);
          }
          EXPECT_LT(nmse(got, want), kBf16Out) << "k cache against the CPU";
        }
      }

      // Device pos0: recorded at pos0, replayed at cap - n and at cap - n + 2 (the last two tokens
      // past the capacity); q and k are uploaded again before each replay (RoPE in place without norms).
      if (c.n <= 8) {
        Io io(g, c, q, k, v, qw, kw, freq);
        KvCache cache = g.alloc_kv_cache(layers, c.hkv, c.cap, c.hd);
        const std::vector<int32_t> tokens(static_cast<size_t>(c.n), 0);
        const int64_t replay_at[2] = {c.cap - c.n, c.cap - c.n + 2};
        const auto ref_rec = reference_qk(c.pos0);
        const std::pair<std::vector<float>, std::vector<float>> ref_replay[2] = {reference_qk(replay_at[0]),
                                                                                 reference_qk(replay_at[1])};
        mark(cache);
        g.set_step_inputs(tokens, c.pos0);
        g.begin_recording();
        g.qk_norm_rope_kv_forward(io.qd.t, io.kd.t, io.vd.t, norms(io, true), norms(io, false), 1e-6f, c.pos0,
                                  RopeTable{io.f.t, 1.0f}, q_out(io).t, k_out(io).t, cache, layer);
        g.end_recording(1);
        check(io, cache, c.pos0, "recorded", ref_rec);
        for (int i = 0; i < 2; ++i) {
          g.copy_from_host(q, io.qd.t);
          g.copy_from_host(k, io.kd.t);
          mark(cache);
          g.set_step_inputs(tokens, replay_at[i]);
          ASSERT_TRUE(g.replay(1));
          check(io, cache, replay_at[i], "replayed", ref_replay[i]);
        }
      }
    }
  }
}

// qk_norm_rope_attention_forward of one token (the decode kernel normalising and rotating q and k
// itself, appending k and v to the cache) against Backend's composition on the same GPU
// (qk_norm_rope_kv_forward, attention_forward), which the tests above and test_cuda_attention_decode
// hold to the CPU and fp64 references: out and both caches bitwise equal, with the host pos0 and with
// the device pos0 of a recorded step replayed at other positions. The caches start with random keys
// and values at every position (what earlier steps left), so each position reads a full history.
// Shapes: Qwen3-4B's (G = 4, one split at short positions, several at 4K), G = 2 at head_dim 64, a
// head_dim below its padded width (40), head_dim 256, G = 10 (16-row tiles), no q/k norm (Llama:
// RoPE in place, q and k must come out unchanged from the fused kernel).
TEST_F(CudaOps, QkNormRopeAttentionMatchesComposition) {
  struct Case {
    int64_t hq, hkv, hd, cap;
    std::vector<int64_t> positions;  // the first: host pos0 and recording; then replays
    bool norm;
  };
  const Case cases[] = {{32, 8, 128, 4200, {0, 1, 17, 127, 128, 300, 4095, 4199}, true},
                        {16, 8, 64, 600, {300, 0, 599}, true},
                        {4, 2, 40, 40, {17, 0, 39}, true},
                        {2, 1, 256, 70, {60, 5}, true},
                        {80, 8, 128, 300, {250, 3}, true},
                        {8, 8, 128, 40, {5, 33}, false}};
  const int64_t layers = 2;
  for (const DType kt : {DType::BF16, DType::F8_E4M3}) {
    CudaBackendOptions opts;
    opts.kv_dtype = kt;
    CudaBackend g(opts);
    for (size_t ci = 0; ci < std::size(cases); ++ci) {
      const Case& c = cases[ci];
      const int64_t layer = static_cast<int64_t>(ci % 2);
      SCOPED_TRACE(::testing::Message() << (kt == DType::BF16 ? "BF16" : "FP8") << " hq " << c.hq << " hkv "
                                        << c.hkv << " hd " << c.hd << (c.norm ? "" : " no norm"));
      const auto q = randn_bf16(static_cast<size_t>(c.hq * c.hd), rng, 2.0f);
      const auto k = randn_bf16(static_cast<size_t>(c.hkv * c.hd), rng, 2.0f);
      const auto v = randn_bf16(k.size(), rng);
      const QkWeights qkw = random_qk_weights(c.hd, rng);
      const auto& qw = qkw.q_norm;
      const auto& kw = qkw.k_norm;
      const auto& freq = qkw.inv_freq;
      // Random history at every position of every layer (as bytes: bf16, or e4m3 codes).
      const size_t eb = dtype_size(kt), cache_bytes = static_cast<size_t>(layers * c.hkv * c.cap * c.hd) * eb;
      std::vector<uint8_t> hist_k(cache_bytes), hist_v(cache_bytes);
      {
        const auto hk = randn_bf16(cache_bytes / eb, rng, 2.0f), hv = randn_bf16(cache_bytes / eb, rng);
        for (size_t e = 0; e < cache_bytes / eb; ++e) {
          if (kt == DType::BF16) {
            const uint16_t a = f32_to_bf16(hk[e]), b = f32_to_bf16(hv[e]);
            std::memcpy(&hist_k[2 * e], &a, 2);
            std::memcpy(&hist_v[2 * e], &b, 2);
          } else {
            hist_k[e] = f32_to_fp8_e4m3_saturate(hk[e]);
            hist_v[e] = f32_to_fp8_e4m3_saturate(hv[e]);
          }
        }
      }
      struct Io {
        DevTensor qd, kd, vd, qo, ko, out, qn, kn, f;
        KvCache cache;
        Io(CudaBackend& b, const Case& c, const std::vector<float>& qw, const std::vector<float>& kw,
           const std::vector<float>& freq, int64_t layers)
            : qd(b, {1, c.hq, c.hd}),
              kd(b, {1, c.hkv, c.hd}),
              vd(b, {1, c.hkv, c.hd}),
              qo(b, {1, c.hq, c.hd}),
              ko(b, {1, c.hkv, c.hd}),
              out(b, {1, c.hq, c.hd}),
              qn(b, DType::F32, {c.hd}, &qw),
              kn(b, DType::F32, {c.hd}, &kw),
              f(b, DType::F32, {c.hd / 2}, &freq),
              cache(b.alloc_kv_cache(layers, c.hkv, c.cap, c.hd)) {}
      };
      Io fused(g, c, qw, kw, freq, layers), composed(g, c, qw, kw, freq, layers);
      const Tensor none;
      // Inputs and history uploaded again before every run (without norms the composition rotates
      // q and k in place).
      auto reset = [&](Io& io) {
        g.copy_from_host(q, io.qd.t);
        g.copy_from_host(k, io.kd.t);
        g.copy_from_host(v, io.vd.t);
        g.synchronize();
        ASSERT_EQ(cudaMemcpy(io.cache.k.data(), hist_k.data(), cache_bytes, cudaMemcpyHostToDevice),
                  cudaSuccess);
        ASSERT_EQ(cudaMemcpy(io.cache.v.data(), hist_v.data(), cache_bytes, cudaMemcpyHostToDevice),
                  cudaSuccess);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      };
      auto run = [&](Io& io, int64_t p, bool fuse) {
        const Tensor& q_out = c.norm ? io.qo.t : io.qd.t;
        const Tensor& k_out = c.norm ? io.ko.t : io.kd.t;
        const Tensor& qn = c.norm ? io.qn.t : none;
        const Tensor& kn = c.norm ? io.kn.t : none;
        const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
        if (fuse)
          g.qk_norm_rope_attention_forward(io.qd.t, io.kd.t, io.vd.t, qn, kn, 1e-6f, p,
                                           RopeTable{io.f.t, 1.0f}, q_out, k_out, io.cache, layer, scale,
                                           io.out.t);
        else
          g.Backend::qk_norm_rope_attention_forward(io.qd.t, io.kd.t, io.vd.t, qn, kn, 1e-6f, p,
                                                    RopeTable{io.f.t, 1.0f}, q_out, k_out, io.cache, layer,
                                                    scale, io.out.t);
      };
      auto bytes_of = [&](const Buffer& b) {
        g.synchronize();
        std::vector<uint8_t> h(cache_bytes);
        EXPECT_EQ(cudaMemcpy(h.data(), b.data(), cache_bytes, cudaMemcpyDeviceToHost), cudaSuccess);
        return h;
      };
      auto out_bits = [&](const Io& io) {
        std::vector<float> all(static_cast<size_t>(io.out.padded.numel()));
        g.copy_to_host(io.out.padded, all);
        return all;
      };
      // The composition at p, then a comparison with the fused op's state.
      auto compare = [&](int64_t p, const char* what) {
        SCOPED_TRACE(::testing::Message() << what << " at " << p);
        reset(composed);
        run(composed, p, false);
        const auto want = composed.out.read(g, "composed out");
        EXPECT_EQ(fused.out.read(g, "fused out"), want);
        EXPECT_EQ(out_bits(fused), out_bits(composed)) << "out with its sentinels";
        EXPECT_TRUE(bytes_of(fused.cache.k) == bytes_of(composed.cache.k)) << "k cache";
        EXPECT_TRUE(bytes_of(fused.cache.v) == bytes_of(composed.cache.v)) << "v cache";
        if (!c.norm) {  // RoPE in place is the composition's; the fused kernel only reads q and k
          EXPECT_EQ(fused.qd.read(g, "q"), q);
          EXPECT_EQ(fused.kd.read(g, "k"), k);
        }
      };
      for (const int64_t p : c.positions) {
        reset(fused);
        run(fused, p, true);
        compare(p, "host pos0");
      }
      // Device pos0: recorded at the first position, replayed at the others.
      const std::vector<int32_t> token(1, 0);
      reset(fused);
      g.set_step_inputs(token, c.positions[0]);
      g.begin_recording();
      run(fused, c.positions[0], true);
      g.end_recording(1);
      compare(c.positions[0], "recorded");
      for (size_t i = 1; i < c.positions.size(); ++i) {
        reset(fused);
        g.set_step_inputs(token, c.positions[i]);
        ASSERT_TRUE(g.replay(1));
        compare(c.positions[i], "replayed");
      }
    }
  }
}

TEST_F(CudaOps, SwiGluAndAdd) {
  for (auto [n, d] : {std::pair<int64_t, int64_t>{1, 1}, {7, 172}, {64, 9728}, {3, 40001}}) {
    const auto g = randn_bf16(static_cast<size_t>(n * d), rng, 4.0f),
               u = randn_bf16(static_cast<size_t>(n * d), rng);
    DevTensor gg(*gpu, {n, d}, &g), ug(*gpu, {n, d}, &u), yg(*gpu, {n, d}), sg(*gpu, {n, d});
    DevTensor gc(*cpu, {n, d}, &g), uc(*cpu, {n, d}, &u), yc(*cpu, {n, d}), sc(*cpu, {n, d});
    gpu->swiglu_forward(gg.t, ug.t, yg.t);
    cpu->swiglu_forward(gc.t, uc.t, yc.t);
    gpu->add_forward(gg.t, ug.t, sg.t);
    cpu->add_forward(gc.t, uc.t, sc.t);
    EXPECT_LT(nmse(yg.read(*gpu, "swiglu"), yc.read(*cpu, "cpu")), kBf16Out) << n << "x" << d;
    EXPECT_LT(nmse(sg.read(*gpu, "add"), sc.read(*cpu, "cpu")), kBf16Out) << n << "x" << d;
  }
}

// The GPU draw inverts the kept distribution's CDF in id order at u; the CPU Sampler gives that
// distribution (runtime/sampler.h). Draws whose u falls within 1e-4 of a CDF step are skipped:
// fp32 sums on the GPU and double on the CPU may put such a u on either side.
TEST_F(CudaOps, Sampling) {
  for (int64_t vocab : {37, 1000, 151936}) {
    // fp32 logits without ties: top-p over tied values may cut a tie group in the CPU's sort order
    // while the GPU's threshold keeps the whole group (both are valid readings of HF's warper).
    std::vector<float> logits(static_cast<size_t>(vocab));
    std::normal_distribution<float> nd(0.0f, 3.0f);
    for (auto& x : logits) x = nd(rng);
    std::vector<int32_t> seen;
    for (int i = 0; i < 20; ++i) seen.push_back(static_cast<int32_t>(rng() % vocab));
    DevTensor lg(*gpu, DType::F32, {vocab}, &logits);
    std::vector<SamplerParams> configs;
    configs.push_back({});  // greedy
    SamplerParams p;
    p.temperature = 0.7f;
    configs.push_back(p);
    p.top_k = 20;
    configs.push_back(p);
    p.top_p = 0.8f;
    configs.push_back(p);
    p.top_k = 0;
    p.min_p = 0.05f;
    configs.push_back(p);
    p.repetition_penalty = 1.3f;
    p.top_k = 50;
    p.top_p = 0.95f;
    p.min_p = 0.0f;
    configs.push_back(p);
    for (const SamplerParams& sp : configs) {
      Sampler ref(sp);
      const std::vector<double> prob = ref.probabilities(logits, seen);
      std::vector<double> cdf(prob.size());
      double run = 0;
      for (size_t i = 0; i < prob.size(); ++i) cdf[i] = (run += prob[i]);
      int checked = 0;
      for (int t = 0; t < 64; ++t) {
        const double u = (t + 0.5) / 64;
        const auto it = std::upper_bound(cdf.begin(), cdf.end(), u);
        const int64_t want = std::min<int64_t>(it - cdf.begin(), vocab - 1);
        const double lo = want > 0 ? cdf[want - 1] : 0.0;
        if (std::abs(u - lo) < 1e-4 || std::abs(cdf[want] - u) < 1e-4) continue;
        const int32_t got = gpu->sample(lg.t, sp, seen, u).value();
        ASSERT_EQ(got, want) << "vocab " << vocab << " T " << sp.temperature << " top_k " << sp.top_k
                             << " top_p " << sp.top_p << " min_p " << sp.min_p << " penalty "
                             << sp.repetition_penalty << " u " << u << " (p[got] "
                             << (got >= 0 && got < vocab ? prob[got] : -1) << ")";
        ++checked;
        if (sp.greedy()) break;
      }
      EXPECT_GT(checked, 0);
    }
  }
}

// Greedy: the lowest id among the largest logits of a 152K vocabulary (ties planted far apart),
// with the repetition penalty (HF: a positive logit of a seen id divided by it, a negative one
// multiplied), from fp32 and bf16 logits (random multiples of 1/8 below 32, planted 40 and 39.75:
// all exact in bf16).
TEST_F(CudaOps, GreedyPicksTheLowestIdOfTheLargest) {
  constexpr int64_t kVocab = 151936;
  std::vector<float> logits(static_cast<size_t>(kVocab));
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (auto& x : logits) x = std::round(nd(rng) * 8.0f) / 8.0f;
  logits[140000] = logits[9000] = logits[70000] = 40.0f;
  for (DType dtype : {DType::F32, DType::BF16}) {
    const std::string what = dtype == DType::F32 ? "fp32" : "bf16";
    auto pick = [&](const std::vector<float>& l, const std::vector<int32_t>& seen, float penalty) {
      SamplerParams p;  // greedy
      p.repetition_penalty = penalty;
      DevTensor lg(*gpu, dtype, {kVocab}, &l);
      return gpu->sample(lg.t, p, seen, 0.5).value();
    };
    std::vector<float> l = logits;
    EXPECT_EQ(pick(l, {}, 1.0f), 9000) << what;
    l[9000] = 39.75f;
    EXPECT_EQ(pick(l, {}, 1.0f), 70000) << what;
    EXPECT_EQ(pick(l, {70000, 5, 70000}, 1.25f), 140000) << what;  // 40 / 1.25 = 32
    l[140000] = -40.0f;                                            // seen and negative: * 1.25
    EXPECT_EQ(pick(l, {70000, 140000}, 1.25f), 9000) << what;      // 39.75 > 32
  }
}

}  // namespace
}  // namespace nibble
