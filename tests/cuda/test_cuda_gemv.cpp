// The decode GEMVs (backend/cuda/linear.cuh, NVFP4, n <= 8 tokens): linear_forward's GEMV path
// against an fp64 CPU reference of the dequantised weights; the fused variants against the unfused
// ops: q/k/v multi, gate/up + SwiGLU and projection + residual bit for bit, q/k/v and gate/up with
// the RMSNorm in front (from their own prologue, or from the start the residual GEMV hands them)
// within rounding; the tile loop against one block per tile, bit for bit; sentinels after every output; and a
// chain of 50 dependent GEMVs (programmatic dependent launch) equal bit for bit whether run one launch at a
// time, back to back, or replayed from a CUDA graph. Skips without a GPU.
//
// Bounds. A bf16 output is rounded once (relative error <= 2^-9: NMSE <= 2^-18 = 3.8e-6 if every
// element hit the worst case, ~1.3e-6 typically); the fp32 dot products of K <= 9728 exact products
// add ~K * 2^-48 < 1e-10. kBf16Out = 8e-6 covers both; a wrong index, a lost code or a flushed
// subnormal (0.5 codes) gives NMSE > 1e-3. An F32 output has only the accumulation error: 1e-8.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/activation.cuh"
#include "backend/cuda/check.cuh"
#include "backend/cuda/context.cuh"
#include "backend/cuda/linear.cuh"
#include "backend/cuda/norm.cuh"
#include "core/error.h"
#include "core/half.h"
#include "cuda/cuda_test_util.h"
#include "quant/nvfp4.h"

namespace nibble {
namespace {

using bf16 = __nv_bfloat16;
using test::kPad;

constexpr double kBf16Out = 8e-6;
constexpr double kF32Out = 1e-8;
constexpr uint16_t kSentinelBits = 0xC5F3;  // bf16 -7776: no op here produces it
constexpr float kSentinelF32 = -7776.0f;

// A random NVFP4 weight (out, in): `unique` rows quantised with the ModelOpt codec from normal
// values of std 1/sqrt(in) (so y stays O(|x|)), repeated to `out` rows (a 151936-row head would
// take minutes to quantise on the CPU; the kernel does not know rows repeat).
struct HostWeight {
  Nvfp4Tensor q;           // the unique rows
  std::vector<float> deq;  // (unique, in) dequantised
  int64_t out = 0;
};

HostWeight random_weight(int64_t out, int64_t in, std::mt19937& rng) {
  const int64_t unique = std::min<int64_t>(out, 4096);
  std::normal_distribution<float> d(0.0f, 1.0f / std::sqrt(static_cast<float>(in)));
  std::vector<float> w(static_cast<size_t>(unique * in));
  for (auto& v : w) v = d(rng);
  HostWeight h;
  h.q = quantize_nvfp4(w.data(), unique, in);
  h.deq = dequantize_nvfp4(h.q.view());
  h.out = out;
  return h;
}

// Device copy of a HostWeight (rows repeated up to `out`).
struct DevWeight {
  cuda::DeviceBuffer codes, scales;
  Weight w;
  DevWeight(cuda::Context& ctx, const HostWeight& h) {
    const int64_t in = h.q.in, unique = h.q.out;
    codes = cuda::DeviceBuffer(ctx, static_cast<size_t>(h.out * in / 2), "test codes");
    scales = cuda::DeviceBuffer(ctx, static_cast<size_t>(h.out * in / 16), "test scales");
    for (int64_t r0 = 0; r0 < h.out; r0 += unique) {
      const int64_t r = std::min(unique, h.out - r0);
      CUDA_CHECK(cudaMemcpy(codes.get<uint8_t>() + r0 * in / 2, h.q.packed.data(),
                            static_cast<size_t>(r * in / 2), cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(scales.get<uint8_t>() + r0 * in / 16, h.q.scales.data(),
                            static_cast<size_t>(r * in / 16), cudaMemcpyHostToDevice));
    }
    CUDA_CHECK(cudaDeviceSynchronize());  // see to_device
    w = h.q.view();
    w.out = h.out;
    w.data = codes.get();
    w.scales = scales.get<uint8_t>();
    CUDA_CHECK(cudaDeviceSynchronize());  // pageable copies may still be in flight on return
  }
};

// Host -> device, finished before return (a pageable cudaMemcpy may return before its DMA is done,
// and the Context's stream does not wait for the legacy stream).
void to_device(void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaDeviceSynchronize());
}

// A device array of `count` elements (bf16 or f32) followed by kPad sentinels.
struct DevArray {
  cuda::DeviceBuffer buf;
  int64_t count = 0;
  bool f32 = false;
  DevArray(cuda::Context& ctx, int64_t n, bool is_f32 = false) : count(n), f32(is_f32) {
    buf = cuda::DeviceBuffer(ctx, static_cast<size_t>((n + kPad) * (f32 ? 4 : 2)), "test array");
    poison();
  }
  void poison() {
    if (f32) {
      std::vector<float> v(static_cast<size_t>(count + kPad), kSentinelF32);
      to_device(buf.get(), v.data(), v.size() * 4);
    } else {
      std::vector<uint16_t> v(static_cast<size_t>(count + kPad), kSentinelBits);
      to_device(buf.get(), v.data(), v.size() * 2);
    }
  }
  void upload(const std::vector<float>& v) {  // bf16 arrays only; values already bf16-exact
    const auto bits = test::to_bf16_bits(v);
    to_device(buf.get(), bits.data(), bits.size() * 2);
  }
  bf16* bf() const { return buf.get<bf16>(); }
  // Raw bits of the count elements (bf16: 16-bit, f32: 32-bit); fails on a changed sentinel.
  std::vector<uint32_t> bits(const std::string& what) const {
    std::vector<uint32_t> out(static_cast<size_t>(count + kPad));
    if (f32) {
      CUDA_CHECK(cudaMemcpy(out.data(), buf.get(), out.size() * 4, cudaMemcpyDeviceToHost));
    } else {
      std::vector<uint16_t> h(out.size());
      CUDA_CHECK(cudaMemcpy(h.data(), buf.get(), h.size() * 2, cudaMemcpyDeviceToHost));
      for (size_t i = 0; i < h.size(); ++i) out[i] = h[i];
    }
    const uint32_t sentinel = f32 ? std::bit_cast<uint32_t>(kSentinelF32) : kSentinelBits;
    for (int64_t i = count; i < count + kPad; ++i)
      if (out[static_cast<size_t>(i)] != sentinel) {
        ADD_FAILURE() << what << ": write past the end at +" << i - count;
        break;
      }
    out.resize(static_cast<size_t>(count));
    return out;
  }
  std::vector<float> values(const std::string& what) const {
    const auto b = bits(what);
    std::vector<float> v(b.size());
    for (size_t i = 0; i < b.size(); ++i) {
      v[i] = f32 ? std::bit_cast<float>(b[i]) : bf16_to_f32(static_cast<uint16_t>(b[i]));
      if (!std::isfinite(v[i]) || v[i] == kSentinelF32) {
        ADD_FAILURE() << what << ": element " << i << " is " << v[i] << " (not written or not finite)";
        break;
      }
    }
    return v;
  }
};

std::vector<float> random_bias(int64_t n, std::mt19937& rng) {
  return test::randn_bf16(static_cast<size_t>(n), rng, 0.5f);
}

// y[t][r] = sum_k deq[r % unique][k] x[t][k] (+ bias[r]) in fp64.
std::vector<double> reference(const HostWeight& h, const std::vector<float>& x, int64_t n,
                              const std::vector<float>* bias) {
  const int64_t in = h.q.in, unique = h.q.out;
  std::vector<double> u(static_cast<size_t>(n * unique));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < unique; ++r) {
      double s = 0;
      const float* wr = h.deq.data() + r * in;
      const float* xr = x.data() + t * in;
      for (int64_t k = 0; k < in; ++k) s += static_cast<double>(wr[k]) * xr[k];
      u[static_cast<size_t>(t * unique + r)] = s;
    }
  std::vector<double> y(static_cast<size_t>(n * h.out));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < h.out; ++r)
      y[static_cast<size_t>(t * h.out + r)] =
          u[static_cast<size_t>(t * unique + r % unique)] + (bias ? (*bias)[static_cast<size_t>(r)] : 0.0);
  return y;
}

double nmse(const std::vector<float>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return num / den;
}

class CudaGemv : public ::testing::Test {
 protected:
  void SetUp() override {
    NIBBLE_REQUIRE_GPU();
    ctx = std::make_unique<cuda::Context>(0);
  }
  void TearDown() override { cuda::set_gemv_tile_loop(0); }  // whatever a test left forced
  void sync() { ctx->synchronize(); }
  void linear(const DevArray& x, int64_t n, const Weight& w, const float* bias, DevArray& y) {
    cuda::linear_forward(*ctx, x.bf(), w.in, n, w, bias, y.buf.get(), y.f32 ? DType::F32 : DType::BF16, w.out,
                         cuda::Scratch{});
  }
  std::unique_ptr<cuda::Context> ctx;
  std::mt19937 rng{20251201};
};

TEST_F(CudaGemv, SingleAgainstFp64Reference) {
  struct Case {
    int64_t out, in;
    std::vector<int64_t> ns;
    bool f32, bias;
  };
  std::vector<Case> cases;
  for (int64_t in : {16, 48, 2560, 9728})
    for (int64_t out : {1, 7, 1024, 4096})
      cases.push_back({out, in, {1, 2, 3, 4, 5, 6, 7, 8}, false, out == 7});
  cases.push_back({151936, 2560, {1, 8}, false, false});
  cases.push_back({151936, 2560, {1, 3}, true, false});  // the head's F32 logits
  cases.push_back({4096, 2560, {1, 5, 8}, true, true});
  cases.push_back({33, 9728, {2, 7}, true, true});
  for (const Case& c : cases) {
    const HostWeight h = random_weight(c.out, c.in, rng);
    DevWeight dw(*ctx, h);
    const auto bias = random_bias(c.out, rng);
    cuda::DeviceBuffer bias_dev(*ctx, static_cast<size_t>(c.out) * 4, "bias");
    to_device(bias_dev.get(), bias.data(), bias.size() * 4);
    for (int64_t n : c.ns) {
      const auto x = test::randn_bf16(static_cast<size_t>(n * c.in), rng);
      DevArray xd(*ctx, n * c.in), yd(*ctx, n * c.out, c.f32);
      xd.upload(x);
      linear(xd, n, dw.w, c.bias ? bias_dev.get<float>() : nullptr, yd);
      sync();
      const std::string what = "gemv " + std::to_string(c.out) + "x" + std::to_string(c.in) +
                               " n=" + std::to_string(n) + (c.f32 ? " f32" : " bf16") +
                               (c.bias ? " bias" : "");
      const double e = nmse(yd.values(what), reference(h, x, n, c.bias ? &bias : nullptr));
      EXPECT_LT(e, c.f32 ? kF32Out : kBf16Out) << what;
      EXPECT_EQ(xd.bits("x").size(), static_cast<size_t>(n * c.in));  // input's sentinels intact
    }
  }
}

TEST_F(CudaGemv, MultiEqualsSeparateLinears) {
  struct Case {
    int64_t in;
    std::vector<int64_t> outs;
    int biased;  // index of the target with a bias, -1 for none
  };
  for (const Case& c : {Case{2560, {4096, 1024, 1024}, -1}, Case{2560, {4096, 1024, 1024}, 1},
                        Case{64, {7, 33, 1}, 2}, Case{9728, {17}, 0}, Case{96, {40, 8}, -1}}) {
    std::vector<HostWeight> hs;
    std::vector<std::unique_ptr<DevWeight>> dws;
    for (int64_t o : c.outs) {
      hs.push_back(random_weight(o, c.in, rng));
      dws.push_back(std::make_unique<DevWeight>(*ctx, hs.back()));
    }
    const auto bias = random_bias(c.outs[0] + 64, rng);
    cuda::DeviceBuffer bias_dev(*ctx, bias.size() * 4, "bias");
    to_device(bias_dev.get(), bias.data(), bias.size() * 4);
    for (int64_t n = 1; n <= 8; ++n) {
      DevArray xd(*ctx, n * c.in);
      xd.upload(test::randn_bf16(static_cast<size_t>(n * c.in), rng));
      std::vector<std::unique_ptr<DevArray>> fused, plain;
      std::vector<cuda::GemvTarget> targets;
      for (size_t i = 0; i < c.outs.size(); ++i) {
        fused.push_back(std::make_unique<DevArray>(*ctx, n * c.outs[i]));
        plain.push_back(std::make_unique<DevArray>(*ctx, n * c.outs[i]));
        const float* b = static_cast<int>(i) == c.biased ? bias_dev.get<float>() : nullptr;
        targets.push_back({&dws[i]->w, b, fused.back()->bf(), c.outs[i]});
        linear(xd, n, dws[i]->w, b, *plain.back());
      }
      cuda::nvfp4_gemv_multi(*ctx, xd.bf(), c.in, n, targets.data(), static_cast<int>(targets.size()));
      sync();
      for (size_t i = 0; i < c.outs.size(); ++i) {
        const std::string what =
            "multi K=" + std::to_string(c.in) + " target " + std::to_string(i) + " n=" + std::to_string(n);
        const auto got = fused[i]->bits(what);
        EXPECT_EQ(got, plain[i]->bits(what + " (unfused)")) << what;
        fused[i]->values(what);  // every element written and finite
      }
    }
  }
}

TEST_F(CudaGemv, SwigluEqualsLinearsThenSwiglu) {
  for (auto [out, in] : {std::pair<int64_t, int64_t>{9728, 2560}, {7, 96}, {1024, 9728}}) {
    const HostWeight hg = random_weight(out, in, rng), hu = random_weight(out, in, rng);
    DevWeight g(*ctx, hg), u(*ctx, hu);
    for (int64_t n = 1; n <= 8; ++n) {
      DevArray xd(*ctx, n * in), gd(*ctx, n * out), ud(*ctx, n * out), plain(*ctx, n * out),
          fused(*ctx, n * out);
      xd.upload(test::randn_bf16(static_cast<size_t>(n * in), rng, 2.0f));
      linear(xd, n, g.w, nullptr, gd);
      linear(xd, n, u.w, nullptr, ud);
      cuda::swiglu_forward(*ctx, gd.bf(), out, ud.bf(), out, n, out, plain.bf(), out);
      cuda::nvfp4_gemv_swiglu(*ctx, xd.bf(), in, n, g.w, u.w, fused.bf(), out);
      sync();
      const std::string what =
          "swiglu " + std::to_string(out) + "x" + std::to_string(in) + " n=" + std::to_string(n);
      EXPECT_EQ(fused.bits(what), plain.bits(what + " (unfused)")) << what;
      fused.values(what);
    }
  }
}

TEST_F(CudaGemv, ResidualEqualsLinearThenAdd) {
  for (auto [out, in] : {std::pair<int64_t, int64_t>{2560, 4096}, {2560, 9728}, {7, 64}}) {
    const HostWeight h = random_weight(out, in, rng);
    DevWeight dw(*ctx, h);
    const auto bias = random_bias(out, rng);
    cuda::DeviceBuffer bias_dev(*ctx, bias.size() * 4, "bias");
    to_device(bias_dev.get(), bias.data(), bias.size() * 4);
    for (int64_t n = 1; n <= 8; ++n)
      for (const float* b :
           {static_cast<const float*>(nullptr), static_cast<const float*>(bias_dev.get<float>())}) {
        DevArray xd(*ctx, n * in), res(*ctx, n * out), tmp(*ctx, n * out), plain(*ctx, n * out),
            fused(*ctx, n * out), inplace(*ctx, n * out);
        xd.upload(test::randn_bf16(static_cast<size_t>(n * in), rng));
        const auto r = test::randn_bf16(static_cast<size_t>(n * out), rng, 4.0f);
        res.upload(r);
        inplace.upload(r);
        linear(xd, n, dw.w, b, tmp);
        cuda::add_forward(*ctx, res.bf(), tmp.bf(), n * out, plain.bf());
        cuda::nvfp4_gemv_residual(*ctx, xd.bf(), in, n, dw.w, b, res.bf(), out, fused.bf(), out);
        cuda::nvfp4_gemv_residual(*ctx, xd.bf(), in, n, dw.w, b, inplace.bf(), out, inplace.bf(), out);
        sync();
        const std::string what = "residual " + std::to_string(out) + "x" + std::to_string(in) +
                                 " n=" + std::to_string(n) + (b ? " bias" : "");
        const auto want = plain.bits(what + " (unfused)");
        EXPECT_EQ(fused.bits(what), want) << what;
        EXPECT_EQ(inplace.bits(what + " in place"), want) << what << " in place";
        fused.values(what);
      }
  }
}

// A norm weight around 1 (as trained RMSNorm weights are), fp32; its values also in *host if given.
cuda::DeviceBuffer random_norm_weight(cuda::Context& ctx, int64_t dim, std::mt19937& rng,
                                      std::vector<float>* host = nullptr) {
  std::normal_distribution<float> d(1.0f, 0.25f);
  std::vector<float> w(static_cast<size_t>(dim));
  for (auto& v : w) v = d(rng);
  if (host != nullptr) *host = w;
  cuda::DeviceBuffer b(ctx, w.size() * 4, "norm weight");
  to_device(b.get(), w.data(), w.size() * 4);
  return b;
}

// NMSE of a against b (both bf16 outputs of one shape), b the reference.
double nmse_between(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return num / den;
}

// Elements of two bf16 arrays (bit patterns) more than one unit in the last place apart (same sign
// assumed: the RMSNorm keeps signs).
int64_t beyond_one_ulp(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b) {
  int64_t bad = 0;
  for (size_t i = 0; i < b.size(); ++i)
    if (std::abs(static_cast<int64_t>(a[i]) - static_cast<int64_t>(b[i])) > 1) ++bad;
  return bad;
}

// Elements of two bf16 outputs (values) further apart than one bf16 ulp of the larger magnitude,
// leaving out differences below 2^-16 of b's RMS: two fp32 sums of the same exact products in
// different orders round to bf16 within one ulp except where they cancel to near zero.
int64_t beyond_one_ulp_or_cancelled(const std::vector<float>& a, const std::vector<float>& b) {
  double ss = 0;
  for (float v : b) ss += static_cast<double>(v) * v;
  const double floor = std::sqrt(ss / static_cast<double>(b.size())) * 0x1p-16;
  int64_t bad = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    const double d = std::abs(static_cast<double>(a[i]) - b[i]);
    const double ulp = std::max(std::abs(a[i]), std::abs(b[i])) * 0x1p-7;
    if (d > ulp && d > floor) ++bad;
  }
  return bad;
}

// The fused RMSNorm defers its 1/rms to the epilogue (gemv_mma.cu, rmsnorm_deferred_to_shared): bf16
// rounds x * w instead of x * w / rms and the sum of squares runs in the block's order. Outputs:
// NMSE against rmsnorm_forward + the unfused GEMV below 3e-5 (measured up to 1.1e-5 for q/k/v and
// 3.6e-5 for the SwiGLU product on an H200; both sides carry bf16 roundings of x and of y); x_norm
// within one bf16 ulp of rmsnorm_forward's.
constexpr double kDeferredNorm = 3e-5;

// The RMSNorm fused in front of the q/k/v GEMV against rmsnorm_forward then nvfp4_gemv_multi (dims
// of Qwen3-4B, 4096, and 1056 = 33 * 32: K % 256 != 0, so threads own different numbers of
// chunks); x_norm_out null gives the same outputs bit for bit.
TEST_F(CudaGemv, RmsnormMultiEqualsNormThenMulti) {
  struct Case {
    int64_t in;
    std::vector<int64_t> outs;
    int biased;
  };
  for (const Case& c :
       {Case{2560, {4096, 1024, 1024}, -1}, Case{4096, {512, 128}, 0}, Case{1056, {40, 33, 7}, 2}}) {
    std::vector<std::unique_ptr<DevWeight>> dws;
    for (int64_t o : c.outs) dws.push_back(std::make_unique<DevWeight>(*ctx, random_weight(o, c.in, rng)));
    const auto bias = random_bias(c.outs[0], rng);
    cuda::DeviceBuffer bias_dev(*ctx, bias.size() * 4, "bias");
    to_device(bias_dev.get(), bias.data(), bias.size() * 4);
    const cuda::DeviceBuffer norm_w = random_norm_weight(*ctx, c.in, rng);
    for (int64_t n = 1; n <= 8; ++n) {
      DevArray xd(*ctx, n * c.in), xn_plain(*ctx, n * c.in), xn_fused(*ctx, n * c.in);
      xd.upload(test::randn_bf16(static_cast<size_t>(n * c.in), rng, 3.0f));
      std::vector<std::unique_ptr<DevArray>> fused, fused_nokeep, plain;
      std::vector<cuda::GemvTarget> t_plain, t_fused, t_nokeep;
      for (size_t i = 0; i < c.outs.size(); ++i) {
        const float* b = static_cast<int>(i) == c.biased ? bias_dev.get<float>() : nullptr;
        for (auto* v : {&fused, &fused_nokeep, &plain})
          v->push_back(std::make_unique<DevArray>(*ctx, n * c.outs[i]));
        t_plain.push_back({&dws[i]->w, b, plain.back()->bf(), c.outs[i]});
        t_fused.push_back({&dws[i]->w, b, fused.back()->bf(), c.outs[i]});
        t_nokeep.push_back({&dws[i]->w, b, fused_nokeep.back()->bf(), c.outs[i]});
      }
      const int count = static_cast<int>(c.outs.size());
      cuda::rmsnorm_forward(*ctx, xd.bf(), c.in, n, 1, c.in, norm_w.get<float>(), 1e-6f, xn_plain.bf(), c.in);
      cuda::nvfp4_gemv_multi(*ctx, xn_plain.bf(), c.in, n, t_plain.data(), count);
      cuda::nvfp4_gemv_multi_rmsnorm(*ctx, xd.bf(), c.in, n, norm_w.get<float>(), 1e-6f, t_fused.data(),
                                     count, xn_fused.bf());
      cuda::nvfp4_gemv_multi_rmsnorm(*ctx, xd.bf(), c.in, n, norm_w.get<float>(), 1e-6f, t_nokeep.data(),
                                     count, nullptr);
      sync();
      const std::string what = "rmsnorm+multi K=" + std::to_string(c.in) + " n=" + std::to_string(n);
      EXPECT_EQ(beyond_one_ulp(xn_fused.bits(what + " x_norm"), xn_plain.bits(what + " x_norm (unfused)")), 0)
          << what;
      for (size_t i = 0; i < c.outs.size(); ++i) {
        const std::string wi = what + " target " + std::to_string(i);
        EXPECT_LT(nmse_between(fused[i]->values(wi), plain[i]->values(wi + " (unfused)")), kDeferredNorm)
            << wi;
        EXPECT_EQ(fused_nokeep[i]->bits(wi + " no x_norm"), fused[i]->bits(wi)) << wi << " no x_norm";
      }
      EXPECT_EQ(xd.bits("x").size(), static_cast<size_t>(n * c.in));  // input's sentinels intact
    }
  }
}

// The RMSNorm fused in front of gate/up + SwiGLU against rmsnorm_forward then nvfp4_gemv_swiglu
// (the SwiGLU product carries the rounding of both projections: twice the bound).
TEST_F(CudaGemv, RmsnormSwigluEqualsNormThenSwiglu) {
  for (auto [out, in] : {std::pair<int64_t, int64_t>{9728, 2560}, {1024, 4096}, {40, 1056}}) {
    DevWeight g(*ctx, random_weight(out, in, rng)), u(*ctx, random_weight(out, in, rng));
    const cuda::DeviceBuffer norm_w = random_norm_weight(*ctx, in, rng);
    for (int64_t n = 1; n <= 8; ++n) {
      DevArray xd(*ctx, n * in), xn_plain(*ctx, n * in), xn_fused(*ctx, n * in), plain(*ctx, n * out),
          fused(*ctx, n * out);
      xd.upload(test::randn_bf16(static_cast<size_t>(n * in), rng, 0.5f));
      cuda::rmsnorm_forward(*ctx, xd.bf(), in, n, 1, in, norm_w.get<float>(), 1e-6f, xn_plain.bf(), in);
      cuda::nvfp4_gemv_swiglu(*ctx, xn_plain.bf(), in, n, g.w, u.w, plain.bf(), out);
      cuda::nvfp4_gemv_swiglu_rmsnorm(*ctx, xd.bf(), in, n, norm_w.get<float>(), 1e-6f, g.w, u.w, fused.bf(),
                                      out, xn_fused.bf());
      sync();
      const std::string what =
          "rmsnorm+swiglu " + std::to_string(out) + "x" + std::to_string(in) + " n=" + std::to_string(n);
      EXPECT_EQ(beyond_one_ulp(xn_fused.bits(what + " x_norm"), xn_plain.bits(what + " x_norm (unfused)")), 0)
          << what;
      EXPECT_LT(nmse_between(fused.values(what), plain.values(what + " (unfused)")), 2 * kDeferredNorm)
          << what;
    }
  }
}

// The residual GEMV that starts the next RMSNorm (NormHandoff): its sum equals the plain residual
// bit for bit; xw is bf16(y * w) * norm_handoff_scale exactly (host RNE) at norm_handoff_index; each sumsq
// column is the fp64 sum of y^2 over its 16 rows within fp32 rounding; and the fused GEMVs that take the
// handoff equal their own prologue (on the same y) within one bf16 ulp, x_norm too -- only the sum of
// squares' order differs -- and rmsnorm_forward + the unfused GEMV within kDeferredNorm. Dims: Qwen3-4B's
// o_proj
// -> q/k/v, down_proj -> gate/up and the last down_proj -> the head (F32 logits, 9496 tiles: the
// head's warp split), and 1056 (66 tiles: sumsq rows padded to 68 columns).
TEST_F(CudaGemv, ResidualHandoffFeedsTheNextRmsnorm) {
  enum class Next { kMulti, kSwiglu, kHead };
  struct Case {
    int64_t dim, in;            // the residual GEMV: (dim, in)
    std::vector<int64_t> outs;  // the next GEMV: q/k/v outputs, one gate/up output, or the head's
    Next next;
  };
  for (const Case& c :
       {Case{2560, 4096, {4096, 1024, 1024}, Next::kMulti}, Case{2560, 9728, {9728}, Next::kSwiglu},
        Case{2560, 9728, {151936}, Next::kHead}, Case{1056, 64, {40, 33, 7}, Next::kMulti},
        Case{1056, 96, {40}, Next::kSwiglu}, Case{1056, 96, {40}, Next::kHead}}) {
    const bool swiglu = c.next == Next::kSwiglu, head = c.next == Next::kHead;
    DevWeight wr(*ctx, random_weight(c.dim, c.in, rng));
    std::vector<std::unique_ptr<DevWeight>> dws;
    for (size_t i = 0; i < c.outs.size() + (swiglu ? 1 : 0); ++i)
      dws.push_back(std::make_unique<DevWeight>(
          *ctx, random_weight(c.outs[std::min(i, c.outs.size() - 1)], c.dim, rng)));
    std::vector<float> norm_host;
    const cuda::DeviceBuffer norm_w = random_norm_weight(*ctx, c.dim, rng, &norm_host);
    const int64_t ld = cuda::norm_handoff_ld(c.dim), tiles = c.dim / 16;
    ASSERT_EQ(ld % 4, 0);
    ASSERT_GE(ld, tiles);
    for (int64_t n = 1; n <= 8; ++n) {
      const std::string what = "handoff " + std::to_string(c.dim) + "x" + std::to_string(c.in) +
                               " n=" + std::to_string(n) +
                               (swiglu ? " swiglu"
                                : head ? " head"
                                       : " multi");
      DevArray xd(*ctx, n * c.in), res(*ctx, n * c.dim), y_plain(*ctx, n * c.dim), y(*ctx, n * c.dim),
          xw(*ctx, n * c.dim), sumsq(*ctx, n * ld, true);
      xd.upload(test::randn_bf16(static_cast<size_t>(n * c.in), rng));
      res.upload(test::randn_bf16(static_cast<size_t>(n * c.dim), rng, 4.0f));
      const cuda::NormHandoff h{norm_w.get<float>(), xw.bf(), sumsq.buf.get<float>()};
      cuda::nvfp4_gemv_residual(*ctx, xd.bf(), c.in, n, wr.w, nullptr, res.bf(), c.dim, y_plain.bf(), c.dim);
      cuda::nvfp4_gemv_residual(*ctx, xd.bf(), c.in, n, wr.w, nullptr, res.bf(), c.dim, y.bf(), c.dim, {},
                                &h);
      sync();
      const auto y_bits = y.bits(what + " y");
      EXPECT_EQ(y_bits, y_plain.bits(what + " y (no handoff)")) << what;
      const auto xw_bits = xw.bits(what + " xw");
      const auto ss = sumsq.bits(what + " sumsq");
      int64_t bad_xw = 0, bad_ss = 0;
      for (int64_t t = 0; t < n; ++t)
        for (int64_t j = 0; j < tiles; ++j) {
          double want = 0;
          for (int64_t r = 16 * j; r < 16 * j + 16; ++r) {
            const size_t i = static_cast<size_t>(t * c.dim + r);
            const float f = bf16_to_f32(static_cast<uint16_t>(y_bits[i]));
            want += static_cast<double>(f) * f;
            const size_t iw = static_cast<size_t>(t * c.dim + cuda::norm_handoff_index(r));
            if (xw_bits[iw] != f32_to_bf16(f * norm_host[static_cast<size_t>(r)] * cuda::norm_handoff_scale))
              ++bad_xw;
          }
          const float got = std::bit_cast<float>(ss[static_cast<size_t>(t * ld + j)]);
          if (!(std::abs(got - want) <= 1e-6 * want)) ++bad_ss;
        }
      EXPECT_EQ(bad_xw, 0) << what;
      EXPECT_EQ(bad_ss, 0) << what;

      // The next GEMV three ways: rmsnorm_forward + unfused, its prologue, the handoff.
      const int64_t out = c.outs[0];
      DevArray xn_plain(*ctx, n * c.dim), xn_pro(*ctx, n * c.dim), xn_prep(*ctx, n * c.dim);
      std::vector<std::unique_ptr<DevArray>> plain, pro, prep;
      std::vector<cuda::GemvTarget> t_plain, t_pro, t_prep;
      for (size_t i = 0; i < (swiglu ? 1 : c.outs.size()); ++i) {
        for (auto* v : {&plain, &pro, &prep})
          v->push_back(std::make_unique<DevArray>(*ctx, n * c.outs[i], head));
        t_plain.push_back({&dws[i]->w, nullptr, plain.back()->bf(), c.outs[i]});
        t_pro.push_back({&dws[i]->w, nullptr, pro.back()->bf(), c.outs[i]});
        t_prep.push_back({&dws[i]->w, nullptr, prep.back()->bf(), c.outs[i]});
      }
      const int count = static_cast<int>(t_plain.size());
      const float* nw = norm_w.get<float>();
      cuda::rmsnorm_forward(*ctx, y.bf(), c.dim, n, 1, c.dim, nw, 1e-6f, xn_plain.bf(), c.dim);
      if (head) {
        const Weight& w = dws[0]->w;
        linear(xn_plain, n, w, nullptr, *plain[0]);
        cuda::nvfp4_gemv_rmsnorm(*ctx, y.bf(), c.dim, n, nw, 1e-6f, w, pro[0]->buf.get(), DType::F32, out,
                                 xn_pro.bf());
        cuda::nvfp4_gemv_rmsnorm(*ctx, y.bf(), c.dim, n, nw, 1e-6f, w, prep[0]->buf.get(), DType::F32, out,
                                 xn_prep.bf(), {}, &h);
      } else if (swiglu) {
        const Weight &g = dws[0]->w, &u = dws[1]->w;
        cuda::nvfp4_gemv_swiglu(*ctx, xn_plain.bf(), c.dim, n, g, u, plain[0]->bf(), out);
        cuda::nvfp4_gemv_swiglu_rmsnorm(*ctx, y.bf(), c.dim, n, nw, 1e-6f, g, u, pro[0]->bf(), out,
                                        xn_pro.bf());
        cuda::nvfp4_gemv_swiglu_rmsnorm(*ctx, y.bf(), c.dim, n, nw, 1e-6f, g, u, prep[0]->bf(), out,
                                        xn_prep.bf(), {}, &h);
      } else {
        cuda::nvfp4_gemv_multi(*ctx, xn_plain.bf(), c.dim, n, t_plain.data(), count);
        cuda::nvfp4_gemv_multi_rmsnorm(*ctx, y.bf(), c.dim, n, nw, 1e-6f, t_pro.data(), count, xn_pro.bf());
        cuda::nvfp4_gemv_multi_rmsnorm(*ctx, y.bf(), c.dim, n, nw, 1e-6f, t_prep.data(), count, xn_prep.bf(),
                                       {}, &h);
      }
      sync();
      EXPECT_EQ(beyond_one_ulp(xn_prep.bits(what + " x_norm"), xn_pro.bits(what + " x_norm (prologue)")), 0)
          << what;
      EXPECT_EQ(beyond_one_ulp(xn_prep.bits(what + " x_norm"), xn_plain.bits(what + " x_norm (unfused)")), 0)
          << what;
      for (int i = 0; i < count; ++i) {
        const std::string wi = what + " target " + std::to_string(i);
        const auto v = prep[static_cast<size_t>(i)]->values(wi);
        // SwiGLU: silu(g) * u of g, u each within one ulp of the prologue's; the head's F32 logits
        // differ only by the 1/rms (a few fp32 ulps) and, with one token (the block-diagonal loop),
        // by the order of the sums; the bf16 outputs of one token likewise (cancellation aside).
        if (swiglu)
          EXPECT_LT(nmse_between(v, pro[0]->values(wi + " (prologue)")), 1e-6) << wi;
        else if (head)
          EXPECT_LT(nmse_between(v, pro[0]->values(wi + " (prologue)")), 1e-12) << wi;
        else if (n == 1)
          EXPECT_EQ(beyond_one_ulp_or_cancelled(v, pro[static_cast<size_t>(i)]->values(wi + " (prologue)")),
                    0)
              << wi;
        else
          EXPECT_EQ(
              beyond_one_ulp(prep[static_cast<size_t>(i)]->bits(wi), pro[static_cast<size_t>(i)]->bits(wi)),
              0)
              << wi;
        EXPECT_LT(nmse_between(v, plain[static_cast<size_t>(i)]->values(wi + " (unfused)")),
                  (swiglu ? 2 : 1) * kDeferredNorm)
            << wi;
      }
    }
  }
}

// One token: the SwiGLU GEMV's paired_out holds its output again, element k at norm_handoff_index(k)
// times norm_handoff_scale, exactly; the residual GEMV that reads it (x_paired, the block-diagonal
// main loop) equals the one that reads the plain output within one bf16 ulp (cancellation aside),
// with and without a NormHandoff. Dims: Qwen3-4B's gate/up -> down_proj, and 160 x 96 -> 40 x 160.
// More than one token, or a misaligned buffer, is refused.
TEST_F(CudaGemv, SwigluPairedOutputFeedsTheResidualGemv) {
  for (auto [inter, dim] : {std::pair<int64_t, int64_t>{9728, 2560}, {160, 96}}) {
    const HostWeight hg = random_weight(inter, dim, rng), hu = random_weight(inter, dim, rng);
    DevWeight g(*ctx, hg), u(*ctx, hu), down(*ctx, random_weight(dim % 32 == 0 ? dim : 40, inter, rng));
    const int64_t out = down.w.out;
    const std::string what = "paired " + std::to_string(inter) + "x" + std::to_string(dim);
    DevArray xd(*ctx, dim), act(*ctx, inter), paired(*ctx, inter), res(*ctx, out), y_plain(*ctx, out),
        y_paired(*ctx, out), y_handoff(*ctx, out);
    xd.upload(test::randn_bf16(static_cast<size_t>(dim), rng, 2.0f));
    res.upload(test::randn_bf16(static_cast<size_t>(out), rng, 4.0f));
    cuda::nvfp4_gemv_swiglu(*ctx, xd.bf(), dim, 1, g.w, u.w, act.bf(), inter, {}, paired.bf());
    sync();
    const auto a = act.values(what + " act"), pv = paired.values(what + " paired");
    int64_t bad = 0;
    for (int64_t k = 0; k < inter; ++k)
      if (pv[static_cast<size_t>(cuda::norm_handoff_index(k))] !=
          a[static_cast<size_t>(k)] * cuda::norm_handoff_scale)
        ++bad;
    EXPECT_EQ(bad, 0) << what;

    std::vector<float> norm_host;
    const cuda::DeviceBuffer norm_w = random_norm_weight(*ctx, out, rng, &norm_host);
    DevArray xw(*ctx, out), sumsq(*ctx, cuda::norm_handoff_ld(out), true);
    const cuda::NormHandoff h{norm_w.get<float>(), xw.bf(), sumsq.buf.get<float>()};
    cuda::nvfp4_gemv_residual(*ctx, act.bf(), inter, 1, down.w, nullptr, res.bf(), out, y_plain.bf(), out);
    cuda::nvfp4_gemv_residual(*ctx, act.bf(), inter, 1, down.w, nullptr, res.bf(), out, y_paired.bf(), out,
                              {}, nullptr, paired.bf());
    cuda::nvfp4_gemv_residual(*ctx, act.bf(), inter, 1, down.w, nullptr, res.bf(), out, y_handoff.bf(), out,
                              {}, out % 8 == 0 ? &h : nullptr, paired.bf());
    sync();
    const auto yp = y_paired.values(what + " y");
    EXPECT_EQ(beyond_one_ulp_or_cancelled(yp, y_plain.values(what + " y (plain x)")), 0) << what;
    EXPECT_EQ(y_handoff.bits(what + " y (handoff)"), y_paired.bits(what + " y")) << what;

    DevArray act2(*ctx, 2 * inter), x2(*ctx, 2 * dim);
    EXPECT_THROW(cuda::nvfp4_gemv_swiglu(*ctx, x2.bf(), dim, 2, g.w, u.w, act2.bf(), inter, {}, paired.bf()),
                 Error);
    EXPECT_THROW(
        cuda::nvfp4_gemv_swiglu(*ctx, xd.bf(), dim, 1, g.w, u.w, act.bf(), inter, {}, paired.bf() + 1),
        Error);
  }
}

// The tile loop (blocks taking several tiles through two shared-memory stages, gemv_mma.cu) against
// one block per tile, bit for bit, for every kernel variant: plain (bf16 and f32 out, bias), q/k/v
// multi, SwiGLU (with the pair-ordered copy), each RMSNorm variant (prologue with x_norm_out,
// prepared by a handoff: one token and several), the residual GEMV (handing off; reading paired
// x), and a weight with a short last tile (the loop does not take it: one block per tile). Three
// blocks for 40-160 tiles: each block loops 13-54 times, through both stages and parities.
TEST_F(CudaGemv, TileLoopEqualsOneBlockPerTile) {
  constexpr int64_t kDim = 2560, kOut = 640, kShort = 632;
  DevWeight w_res(*ctx, random_weight(kDim, kDim, rng)), w_a(*ctx, random_weight(kOut, kDim, rng)),
      w_b(*ctx, random_weight(kOut, kDim, rng)), w_kv(*ctx, random_weight(160, kDim, rng)),
      w_down(*ctx, random_weight(kDim, kOut, rng)), w_short(*ctx, random_weight(kShort, kDim, rng));
  const cuda::DeviceBuffer norm_w = random_norm_weight(*ctx, kDim, rng);
  std::vector<float> bias_host = random_bias(kOut, rng);
  cuda::DeviceBuffer bias(*ctx, kOut * 4, "bias");
  to_device(bias.get(), bias_host.data(), kOut * 4);
  const float* nw = norm_w.get<float>();
  const int64_t ld = cuda::norm_handoff_ld(kDim);

  struct Outputs {
    std::vector<std::vector<uint32_t>> bits;
    std::vector<std::string> names;
  };
  const auto run = [&](int loop_blocks, int64_t n, const std::vector<float>& x0,
                       const std::vector<float>& r0) {
    cuda::set_gemv_tile_loop(loop_blocks);
    DevArray x(*ctx, n * kDim), res(*ctx, n * kDim), h_y(*ctx, n * kDim), xw(*ctx, n * kDim),
        sumsq(*ctx, n * ld, true), lin(*ctx, n * kOut), lin32(*ctx, n * kOut, true), q(*ctx, n * kOut),
        k(*ctx, n * 160), v(*ctx, n * 160), qn(*ctx, n * kOut), kn(*ctx, n * 160), xnorm(*ctx, n * kDim),
        qp(*ctx, n * kOut), kp(*ctx, n * 160), act(*ctx, n * kOut), paired(*ctx, kOut), actn(*ctx, n * kOut),
        actp(*ctx, n * kOut), head(*ctx, n * kOut, true), headp(*ctx, n * kOut, true), down(*ctx, n * kDim),
        downp(*ctx, n * kDim), shortv(*ctx, n * kShort);
    x.upload(x0);
    res.upload(r0);
    const cuda::NormHandoff h{nw, xw.bf(), sumsq.buf.get<float>()};
    cuda::nvfp4_gemv_residual(*ctx, x.bf(), kDim, n, w_res.w, nullptr, res.bf(), kDim, h_y.bf(), kDim, {},
                              &h);
    cuda::nvfp4_gemv_linear(*ctx, x.bf(), kDim, n, w_a.w, bias.get<float>(), lin.bf(), DType::BF16, kOut);
    cuda::nvfp4_gemv_linear(*ctx, x.bf(), kDim, n, w_a.w, nullptr, lin32.buf.get(), DType::F32, kOut);
    const cuda::GemvTarget t[3] = {
        {&w_a.w, nullptr, q.bf(), kOut}, {&w_kv.w, nullptr, k.bf(), 160}, {&w_kv.w, nullptr, v.bf(), 160}};
    cuda::nvfp4_gemv_multi(*ctx, x.bf(), kDim, n, t, 3);
    const cuda::GemvTarget tn[2] = {{&w_a.w, nullptr, qn.bf(), kOut}, {&w_kv.w, nullptr, kn.bf(), 160}};
    cuda::nvfp4_gemv_multi_rmsnorm(*ctx, h_y.bf(), kDim, n, nw, 1e-6f, tn, 2, xnorm.bf());
    const cuda::GemvTarget tp[2] = {{&w_a.w, nullptr, qp.bf(), kOut}, {&w_kv.w, nullptr, kp.bf(), 160}};
    cuda::nvfp4_gemv_multi_rmsnorm(*ctx, h_y.bf(), kDim, n, nw, 1e-6f, tp, 2, nullptr, {}, &h);
    cuda::nvfp4_gemv_swiglu(*ctx, x.bf(), kDim, n, w_a.w, w_b.w, act.bf(), kOut, {},
                            n == 1 ? paired.bf() : nullptr);
    cuda::nvfp4_gemv_swiglu_rmsnorm(*ctx, h_y.bf(), kDim, n, nw, 1e-6f, w_a.w, w_b.w, actn.bf(), kOut,
                                    nullptr);
    cuda::nvfp4_gemv_swiglu_rmsnorm(*ctx, h_y.bf(), kDim, n, nw, 1e-6f, w_a.w, w_b.w, actp.bf(), kOut,
                                    nullptr, {}, &h);
    cuda::nvfp4_gemv_rmsnorm(*ctx, h_y.bf(), kDim, n, nw, 1e-6f, w_a.w, head.buf.get(), DType::F32, kOut,
                             nullptr);
    cuda::nvfp4_gemv_rmsnorm(*ctx, h_y.bf(), kDim, n, nw, 1e-6f, w_a.w, headp.buf.get(), DType::F32, kOut,
                             nullptr, {}, &h);
    cuda::nvfp4_gemv_residual(*ctx, act.bf(), kOut, n, w_down.w, nullptr, res.bf(), kDim, down.bf(), kDim);
    if (n == 1)
      cuda::nvfp4_gemv_residual(*ctx, act.bf(), kOut, n, w_down.w, nullptr, res.bf(), kDim, downp.bf(), kDim,
                                {}, nullptr, paired.bf());
    cuda::nvfp4_gemv_linear(*ctx, x.bf(), kDim, n, w_short.w, nullptr, shortv.bf(), DType::BF16, kShort);
    sync();
    Outputs o;
    const std::pair<const char*, const DevArray*> all[] = {{"residual + handoff y", &h_y},
                                                           {"handoff xw", &xw},
                                                           {"handoff sumsq", &sumsq},
                                                           {"linear bf16 + bias", &lin},
                                                           {"linear f32", &lin32},
                                                           {"multi q", &q},
                                                           {"multi k", &k},
                                                           {"multi v", &v},
                                                           {"multi rmsnorm q", &qn},
                                                           {"multi rmsnorm k", &kn},
                                                           {"x_norm_out", &xnorm},
                                                           {"multi prepared q", &qp},
                                                           {"multi prepared k", &kp},
                                                           {"swiglu", &act},
                                                           {"swiglu paired", &paired},
                                                           {"swiglu rmsnorm", &actn},
                                                           {"swiglu prepared", &actp},
                                                           {"head rmsnorm", &head},
                                                           {"head prepared", &headp},
                                                           {"down", &down},
                                                           {"down paired x", &downp},
                                                           {"short last tile", &shortv}};
    for (const auto& [name, arr] : all) {
      o.names.push_back(name);
      o.bits.push_back(arr->bits(name));
    }
    return o;
  };
  for (int64_t n : {1, 3}) {
    const auto x0 = test::randn_bf16(static_cast<size_t>(n * kDim), rng);
    const auto r0 = test::randn_bf16(static_cast<size_t>(n * kDim), rng, 4.0f);
    const Outputs one = run(-1, n, x0, r0), looped = run(3, n, x0, r0);
    for (size_t i = 0; i < one.bits.size(); ++i)
      EXPECT_EQ(looped.bits[i], one.bits[i]) << one.names[i] << " n=" << n;
    double mass = 0;  // the outputs are not all zero
    for (uint32_t b : one.bits[0]) mass += std::abs(bf16_to_f32(static_cast<uint16_t>(b)));
    EXPECT_GT(mass, 0.0);
  }
}

TEST_F(CudaGemv, FusedVariantsRefuseWhatTheyCannotTake) {
  const HostWeight h = random_weight(8, 48, rng);  // K % 32 != 0: FFMA only
  DevWeight dw(*ctx, h);
  DevArray x(*ctx, 48), y(*ctx, 8);
  EXPECT_FALSE(cuda::nvfp4_gemv_fusable(dw.w, 1));
  EXPECT_THROW(cuda::nvfp4_gemv_residual(*ctx, x.bf(), 48, 1, dw.w, nullptr, y.bf(), 8, y.bf(), 8), Error);
  const HostWeight h2 = random_weight(8, 64, rng);
  DevWeight dw2(*ctx, h2);
  EXPECT_TRUE(cuda::nvfp4_gemv_fusable(dw2.w, 8));
  EXPECT_FALSE(cuda::nvfp4_gemv_fusable(dw2.w, 9));
  // the RMSNorm variants: no norm weight, or x_norm_out on top of x
  DevArray x2(*ctx, 64), y2(*ctx, 8);
  const cuda::DeviceBuffer norm_w = random_norm_weight(*ctx, 64, rng);
  const cuda::GemvTarget t{&dw2.w, nullptr, y2.bf(), 8};
  EXPECT_THROW(cuda::nvfp4_gemv_multi_rmsnorm(*ctx, x2.bf(), 64, 1, nullptr, 1e-6f, &t, 1, nullptr), Error);
  EXPECT_THROW(
      cuda::nvfp4_gemv_multi_rmsnorm(*ctx, x2.bf(), 64, 1, norm_w.get<float>(), 1e-6f, &t, 1, x2.bf()),
      Error);
  EXPECT_THROW(cuda::nvfp4_gemv_swiglu_rmsnorm(*ctx, x2.bf(), 64, 1, norm_w.get<float>(), 1e-6f, dw2.w, dw2.w,
                                               y2.bf(), 8, x2.bf()),
               Error);
  // a handoff prepared for another norm weight, or with a misaligned buffer
  const cuda::DeviceBuffer other_w = random_norm_weight(*ctx, 64, rng);
  DevArray xw(*ctx, 64), ss(*ctx, cuda::norm_handoff_ld(64), true);
  const cuda::NormHandoff other{other_w.get<float>(), xw.bf(), ss.buf.get<float>()};
  EXPECT_THROW(cuda::nvfp4_gemv_multi_rmsnorm(*ctx, x2.bf(), 64, 1, norm_w.get<float>(), 1e-6f, &t, 1,
                                              nullptr, {}, &other),
               Error);
  const cuda::NormHandoff odd{other_w.get<float>(), xw.bf() + 1, ss.buf.get<float>()};
  EXPECT_THROW(
      cuda::nvfp4_gemv_residual(*ctx, x2.bf(), 64, 1, dw2.w, nullptr, y2.bf(), 8, y2.bf(), 8, {}, &odd),
      Error);
}

// 50 dependent steps on two ping-pong buffers x (n, 2560): a mix of linear_forward, the residual,
// SwiGLU and multi GEMVs (PDL launches, each reading the previous one's output) and, every fifth
// step, an RMSNorm (a PDL launch too, norm.cu) that keeps the values finite.
TEST_F(CudaGemv, PdlChainEqualsSerialAndGraph) {
  constexpr int64_t kDim = 2560, kN = 3;
  constexpr int kSteps = 50;
  std::vector<std::unique_ptr<DevWeight>> ws;
  for (int i = 0; i < 4; ++i) ws.push_back(std::make_unique<DevWeight>(*ctx, random_weight(kDim, kDim, rng)));
  std::vector<float> ones(kDim, 1.0f);
  cuda::DeviceBuffer norm_w(*ctx, kDim * 4, "norm weight");
  to_device(norm_w.get(), ones.data(), kDim * 4);
  const auto x0 = test::randn_bf16(static_cast<size_t>(kN * kDim), rng);
  DevArray a(*ctx, kN * kDim), b(*ctx, kN * kDim), c(*ctx, kN * kDim);

  // One link of the chain: step s reads *cur and writes *nxt (and c in the multi step).
  auto step = [&](int s, DevArray* cur, DevArray* nxt) {
    const Weight& w = ws[s % 4]->w;
    switch (s % 5) {
      case 0:
        cuda::linear_forward(*ctx, cur->bf(), kDim, kN, w, nullptr, nxt->buf.get(), DType::BF16, kDim,
                             cuda::Scratch{});
        break;
      case 1:
        cuda::nvfp4_gemv_residual(*ctx, cur->bf(), kDim, kN, w, nullptr, cur->bf(), kDim, nxt->bf(), kDim);
        break;
      case 2:
        cuda::nvfp4_gemv_swiglu(*ctx, cur->bf(), kDim, kN, w, ws[(s + 1) % 4]->w, nxt->bf(), kDim);
        break;
      case 3: {
        // q from x, plus a second target into c so that the multi launch has two parts
        const cuda::GemvTarget t[2] = {{&w, nullptr, nxt->bf(), kDim},
                                       {&ws[(s + 2) % 4]->w, nullptr, c.bf(), kDim}};
        cuda::nvfp4_gemv_multi(*ctx, cur->bf(), kDim, kN, t, 2);
        break;
      }
      case 4:
        cuda::rmsnorm_forward(*ctx, cur->bf(), kDim, kN, 1, kDim, norm_w.get<float>(), 1e-6f, nxt->bf(),
                              kDim);
        break;
    }
  };
  // mode 0: a host synchronisation after every launch; 1: back to back; 2: no uploads, no sync (to
  // be captured in a graph). Returns the array holding the chain's result.
  auto run = [&](int mode) {
    if (mode != 2) {
      a.upload(x0);
      b.poison();
      c.poison();
    }
    DevArray* cur = &a;
    DevArray* nxt = &b;
    for (int s = 0; s < kSteps; ++s) {
      step(s, cur, nxt);
      if (mode == 0) sync();
      std::swap(cur, nxt);
    }
    return cur;
  };

  DevArray* out = run(0);
  const auto serial = out->bits("serial chain");
  const auto serial_c = c.bits("serial chain c");
  const auto values = out->values("serial chain");
  double sq = 0;
  for (float v : values) sq += double(v) * v;
  EXPECT_GT(sq, 0.0);

  out = run(1);
  sync();
  EXPECT_EQ(out->bits("back-to-back chain"), serial);
  EXPECT_EQ(c.bits("back-to-back chain c"), serial_c);

  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_CHECK(cudaStreamBeginCapture(ctx->stream(), cudaStreamCaptureModeThreadLocal));
  DevArray* cur = run(2);
  CUDA_CHECK(cudaStreamEndCapture(ctx->stream(), &graph));
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; ++replay) {
    a.upload(x0);
    b.poison();
    c.poison();
    CUDA_CHECK(cudaGraphLaunch(exec, ctx->stream()));
    sync();
    EXPECT_EQ(cur->bits("graph chain"), serial) << "replay " << replay;
    EXPECT_EQ(c.bits("graph chain c"), serial_c) << "replay " << replay;
  }
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaGraphDestroy(graph));
}

}  // namespace
}  // namespace nibble
