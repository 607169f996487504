// Every forward op of the CPU backend against a plain double-precision reference written here,
// in the style of ggml's test-backend-ops: random inputs, several shapes including odd ones,
// a NaN/inf check, an NMSE bound per op, and sentinels after each output to catch writes past
// its end. The op runners take a Backend&, so the CUDA suite can run them against the CPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/convert.h"
#include "core/half.h"

namespace nibble {
namespace {

constexpr int64_t kPad = 37;            // sentinel elements after every output
constexpr float kSentinel = -7777.25f;  // a value no op produces from these inputs

// fp32 ops with fp32 accumulation against a double reference: relative errors ~1e-7 per element,
// so NMSE ~1e-13; 1e-10 leaves room for long sums (K up to 2560) and still fails on any real bug
// (a wrong index or a missed term gives NMSE > 1e-4).
constexpr double kNmseBound = 1e-10;

std::vector<float> randn(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Host data of a given dtype; `values` is rounded to it in place so the reference sees exactly
// what the op sees.
struct HostArray {
  DType dtype = DType::F32;
  std::vector<uint8_t> bytes;
};

HostArray to_dtype(std::vector<float>& values, DType t) {
  HostArray a;
  a.dtype = t;
  a.bytes.resize(values.size() * dtype_size(t));
  for (size_t i = 0; i < values.size(); ++i) {
    if (t == DType::F32) {
      std::memcpy(a.bytes.data() + 4 * i, &values[i], 4);
    } else {
      const uint16_t h = t == DType::BF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
      std::memcpy(a.bytes.data() + 2 * i, &h, 2);
      values[i] = t == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
  }
  return a;
}

// A backend tensor followed by kPad sentinel elements.
struct DevTensor {
  Buffer storage;
  Tensor t;
  Tensor padded;  // the tensor and its sentinels, as one flat view

  DevTensor(Backend& b, std::initializer_list<int64_t> dims, const std::vector<float>* init = nullptr)
      : DevTensor(b, b.activation_dtype(), dims, init) {}
  DevTensor(Backend& b, DType dtype, std::initializer_list<int64_t> dims, const std::vector<float>* init) {
    const Tensor shape(nullptr, dtype, dims);
    padded = b.alloc_tensor(storage, dtype, {shape.numel() + kPad});
    t = storage.view(dtype, dims);
    std::vector<float> fill(static_cast<size_t>(shape.numel() + kPad), kSentinel);
    if (init != nullptr) std::copy(init->begin(), init->end(), fill.begin());
    b.copy_from_host(fill, padded);
  }

  // Contents; fails the test when a sentinel was overwritten or a value is not finite.
  std::vector<float> read(Backend& b, const char* what) const {
    std::vector<float> all(static_cast<size_t>(padded.numel()));
    b.copy_to_host(padded, all);
    for (int64_t i = t.numel(); i < padded.numel(); ++i) {
      EXPECT_EQ(all[static_cast<size_t>(i)], kSentinel)
          << what << ": write past the end at +" << i - t.numel();
    }
    all.resize(static_cast<size_t>(t.numel()));
    for (size_t i = 0; i < all.size(); ++i) {
      EXPECT_TRUE(std::isfinite(all[i])) << what << ": non-finite output at " << i;
      if (!std::isfinite(all[i])) break;
    }
    return all;
  }
};

double nmse(const std::vector<float>& got, const std::vector<double>& ref) {
  EXPECT_EQ(got.size(), ref.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size() && i < got.size(); ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? num / den : num;
}

class BackendOps : public ::testing::TestWithParam<int> {  // parameter: CPU threads
 protected:
  void SetUp() override { backend = make_backend("cpu", BackendOptions{GetParam()}); }
  std::unique_ptr<Backend> backend;
  std::mt19937 rng{1234};
};

TEST_P(BackendOps, Embedding) {
  Backend& b = *backend;
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (auto [vocab, dim] : {std::pair<int64_t, int64_t>{1, 1}, {50, 7}, {512, 64}, {33, 130}}) {
      std::vector<float> table = randn(static_cast<size_t>(vocab * dim), rng);
      HostArray host = to_dtype(table, dt);
      Weight w{WeightFormat::Dense, dt, vocab, dim, host.bytes.data()};
      w = b.upload_weight(w);
      std::vector<int32_t> ids;
      std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab - 1));
      for (int i = 0; i < 9; ++i) ids.push_back(i == 0 ? static_cast<int32_t>(vocab - 1) : pick(rng));
      DevTensor out(b, {9, dim});
      b.embedding_forward(w, ids, out.t);
      const auto got = out.read(b, "embedding");
      for (size_t i = 0; i < ids.size(); ++i) {
        for (int64_t j = 0; j < dim; ++j) {
          ASSERT_EQ(got[i * dim + j], table[ids[i] * dim + j]) << dtype_name(dt) << " token " << i;
        }
      }
    }
  }
}

TEST_P(BackendOps, RmsNorm) {
  Backend& b = *backend;
  for (DType wt : {DType::F32, DType::BF16}) {
    for (auto [rows, dim] : {std::pair<int64_t, int64_t>{1, 1}, {3, 64}, {7, 129}, {4, 2560}, {33, 16}}) {
      std::vector<float> x = randn(static_cast<size_t>(rows * dim), rng, 3.0f);
      std::vector<float> w = randn(static_cast<size_t>(dim), rng);
      HostArray wh = to_dtype(w, wt);
      const Tensor wv = b.upload_tensor(Tensor(wh.bytes.data(), wt, {dim}));
      const float eps = 1e-6f;
      DevTensor xd(b, {rows, dim}, &x), out(b, {rows, dim}), rstd(b, {rows});
      b.rmsnorm_forward(xd.t, wv, eps, out.t, rstd.t);
      std::vector<double> ref(x.size()), ref_rstd(static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t j = 0; j < dim; ++j) ss += double(x[r * dim + j]) * x[r * dim + j];
        const double inv = 1.0 / std::sqrt(ss / dim + eps);
        ref_rstd[r] = inv;
        for (int64_t j = 0; j < dim; ++j) ref[r * dim + j] = x[r * dim + j] * inv * w[j];
      }
      EXPECT_LT(nmse(out.read(b, "rmsnorm"), ref), kNmseBound) << rows << "x" << dim << " " << dtype_name(wt);
      EXPECT_LT(nmse(rstd.read(b, "rmsnorm rstd"), ref_rstd), kNmseBound);
      // Input untouched (outputs never alias inputs).
      EXPECT_EQ(xd.read(b, "rmsnorm input"), x);
    }
  }
}

TEST_P(BackendOps, Linear) {
  Backend& b = *backend;
  for (DType wt : {DType::F32, DType::BF16, DType::F16}) {
    for (auto [n, in, out] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1},
                              {1, 64, 7},
                              {3, 5, 4},
                              {17, 130, 65},
                              {2, 2560, 9},
                              {5, 64, 512}}) {
      for (bool with_bias : {false, true}) {
        std::vector<float> x = randn(static_cast<size_t>(n * in), rng);
        std::vector<float> w = randn(static_cast<size_t>(out * in), rng, 0.1f);
        std::vector<float> bias = randn(static_cast<size_t>(out), rng);
        HostArray wh = to_dtype(w, wt), bh = to_dtype(bias, wt);
        const Weight wv = b.upload_weight(Weight{WeightFormat::Dense, wt, out, in, wh.bytes.data()});
        const Tensor bv = with_bias ? b.upload_tensor(Tensor(bh.bytes.data(), wt, {out})) : Tensor();
        DevTensor xd(b, {n, in}, &x), y(b, {n, out});
        b.linear_forward(xd.t, wv, bv, y.t);
        std::vector<double> ref(static_cast<size_t>(n * out));
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j < out; ++j) {
            double s = with_bias ? bias[j] : 0.0;
            for (int64_t k = 0; k < in; ++k) s += double(x[i * in + k]) * w[j * in + k];
            ref[i * out + j] = s;
          }
        }
        EXPECT_LT(nmse(y.read(b, "linear"), ref), kNmseBound)
            << n << "x" << in << " -> " << out << " " << dtype_name(wt) << (with_bias ? " bias" : "");
      }
    }
  }
}

// Rotate-half RoPE reference (HF apply_rotary_pos_emb) in double from the same inv_freq.
TEST_P(BackendOps, Rope) {
  Backend& b = *backend;
  for (auto [n, heads, hd, pos0, att] :
       {std::tuple<int64_t, int64_t, int64_t, int64_t, float>{1, 1, 2, 0, 1.0f},
        {5, 3, 16, 0, 1.0f},
        {4, 2, 32, 100, 1.1386f},
        {1, 8, 128, 4095, 1.0f},
        {9, 1, 6, 7, 1.0f}}) {
    std::vector<float> x = randn(static_cast<size_t>(n * heads * hd), rng);
    std::vector<float> inv_freq(static_cast<size_t>(hd / 2));
    for (int64_t j = 0; j < hd / 2; ++j) inv_freq[j] = static_cast<float>(std::pow(10000.0, -2.0 * j / hd));
    DevTensor xd(b, {n, heads, hd}, &x), f(b, DType::F32, {hd / 2}, &inv_freq);
    RopeTable rope{f.t, att};
    b.rope_forward(xd.t, pos0, rope);
    std::vector<double> ref(x.size());
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t j = 0; j < hd / 2; ++j) {
          const double angle = double(static_cast<float>(pos0 + i) * inv_freq[j]);
          const double c = std::cos(angle) * att, s = std::sin(angle) * att;
          const size_t o = static_cast<size_t>((i * heads + h) * hd);
          ref[o + j] = x[o + j] * c - x[o + j + hd / 2] * s;
          ref[o + j + hd / 2] = x[o + j + hd / 2] * c + x[o + j] * s;
        }
      }
    }
    EXPECT_LT(nmse(xd.read(b, "rope"), ref), kNmseBound) << n << "x" << heads << "x" << hd << " @" << pos0;
  }
}

// Causal GQA over the cache, run as two appends (prefill n1 tokens, then n2 at pos0 = n1) and
// checked against softmax attention over the whole sequence computed in double.
TEST_P(BackendOps, Attention) {
  Backend& b = *backend;
  for (auto [hq, hkv, hd, n1, n2] : {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>{1, 1, 1, 1, 1},
                                     {4, 4, 16, 5, 1},
                                     {8, 2, 32, 7, 6},
                                     {3, 1, 7, 1, 12},
                                     {4, 2, 128, 33, 2}}) {
    const int64_t total = n1 + n2, cap = total + 3, layers = 2, layer = 1;
    std::vector<float> q = randn(static_cast<size_t>(total * hq * hd), rng);
    std::vector<float> k = randn(static_cast<size_t>(total * hkv * hd), rng);
    std::vector<float> v = randn(static_cast<size_t>(total * hkv * hd), rng);
    KvCache cache = b.alloc_kv_cache(layers, hkv, cap, hd);
    std::vector<float> got;
    for (auto [pos0, n] : {std::pair<int64_t, int64_t>{0, n1}, {n1, n2}}) {
      auto part = [&](const std::vector<float>& all, int64_t heads) {
        return std::vector<float>(all.begin() + pos0 * heads * hd, all.begin() + (pos0 + n) * heads * hd);
      };
      const auto qp = part(q, hq), kp = part(k, hkv), vp = part(v, hkv);
      DevTensor qd(b, {n, hq, hd}, &qp), kd(b, {n, hkv, hd}, &kp), vd(b, {n, hkv, hd}, &vp),
          out(b, {n, hq, hd});
      const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
      b.attention_forward(qd.t, kd.t, vd.t, cache, layer, pos0, scale, out.t);
      const auto o = out.read(b, "attention");
      got.insert(got.end(), o.begin(), o.end());
    }
    std::vector<double> ref(q.size());
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    for (int64_t i = 0; i < total; ++i) {
      for (int64_t h = 0; h < hq; ++h) {
        const int64_t g = h / (hq / hkv);
        std::vector<double> s(static_cast<size_t>(i + 1));
        double mx = -INFINITY, sum = 0;
        for (int64_t t = 0; t <= i; ++t) {
          double d = 0;
          for (int64_t e = 0; e < hd; ++e) d += double(q[(i * hq + h) * hd + e]) * k[(t * hkv + g) * hd + e];
          s[t] = d * scale;
          mx = std::max(mx, s[t]);
        }
        for (auto& x : s) sum += (x = std::exp(x - mx));
        for (int64_t e = 0; e < hd; ++e) {
          double acc = 0;
          for (int64_t t = 0; t <= i; ++t) acc += s[t] / sum * v[(t * hkv + g) * hd + e];
          ref[(i * hq + h) * hd + e] = acc;
        }
      }
    }
    EXPECT_LT(nmse(got, ref), kNmseBound) << "hq " << hq << " hkv " << hkv << " hd " << hd;
    // The cache holds k and v at their positions, (layer, head, position, hd) layout.
    std::vector<float> kc(static_cast<size_t>(cache.k_layer(layer).numel()));
    b.copy_to_host(cache.k_layer(layer), kc);
    for (int64_t t = 0; t < total; ++t) {
      for (int64_t g = 0; g < hkv; ++g) {
        ASSERT_EQ(kc[(g * cap + t) * hd], k[(t * hkv + g) * hd]) << "cache position " << t << " head " << g;
      }
    }
  }
}

// The cache written first (kv_cache_write, or qk_norm_rope_kv_forward, what the model runs), then
// attention over it without k and v: bitwise the output and cache of the appending call. The
// fused op's q_out and k_out are qk_norm_rope_forward's, the cache holds k_out and v at
// [pos0, pos0 + n) of its layer and nothing else changes (the caches start filled with a marker).
TEST_P(BackendOps, AttentionOverWrittenCache) {
  Backend& b = *backend;
  for (auto [hq, hkv, hd, pos0, n] : {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>{1, 1, 2, 0, 1},
                                      {4, 2, 16, 0, 5},
                                      {8, 2, 32, 9, 1},
                                      {3, 1, 6, 4, 7}}) {
    SCOPED_TRACE(::testing::Message() << "hq " << hq << " hkv " << hkv << " hd " << hd << " pos0 " << pos0);
    const int64_t cap = pos0 + n + 2, layers = 2, layer = 1;
    const std::vector<float> q = randn(static_cast<size_t>(n * hq * hd), rng);
    const std::vector<float> k = randn(static_cast<size_t>(n * hkv * hd), rng);
    const std::vector<float> v = randn(static_cast<size_t>(n * hkv * hd), rng);
    const std::vector<float> past = randn(static_cast<size_t>(layers * hkv * cap * hd), rng);
    const std::vector<float> qw = randn(static_cast<size_t>(hd), rng),
                             kw = randn(static_cast<size_t>(hd), rng);
    std::vector<float> inv_freq(static_cast<size_t>(hd / 2));
    for (int64_t j = 0; j < hd / 2; ++j) inv_freq[j] = static_cast<float>(std::pow(10000.0, -2.0 * j / hd));
    DevTensor qn(b, DType::F32, {hd}, &qw), kn(b, DType::F32, {hd}, &kw),
        f(b, DType::F32, {hd / 2}, &inv_freq);
    const RopeTable rope{f.t, 1.0f};
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    auto cache_of = [&] {
      KvCache c = b.alloc_kv_cache(layers, hkv, cap, hd);
      const Tensor all_k(c.k.data(), c.dtype, {layers * hkv * cap * hd});
      const Tensor all_v(c.v.data(), c.dtype, {layers * hkv * cap * hd});
      b.copy_from_host(past, all_k);
      b.copy_from_host(past, all_v);
      return c;
    };
    auto contents = [&](const KvCache& c, const Buffer& which) {
      std::vector<float> all(past.size());
      b.copy_to_host(Tensor(which.data(), c.dtype, {static_cast<int64_t>(past.size())}), all);
      return all;
    };

    // Appending attention, against kv_cache_write + attention over the cache.
    KvCache ca = cache_of(), cb = cache_of();
    DevTensor qd(b, {n, hq, hd}, &q), kd(b, {n, hkv, hd}, &k), vd(b, {n, hkv, hd}, &v);
    DevTensor oa(b, {n, hq, hd}), ob(b, {n, hq, hd});
    b.attention_forward(qd.t, kd.t, vd.t, ca, layer, pos0, scale, oa.t);
    b.kv_cache_write(kd.t, vd.t, cb, layer, pos0);
    b.attention_forward(qd.t, Tensor(), Tensor(), cb, layer, pos0, scale, ob.t);
    EXPECT_EQ(oa.read(b, "appending attention"), ob.read(b, "attention over the cache"));
    EXPECT_EQ(contents(ca, ca.k), contents(cb, cb.k));
    EXPECT_EQ(contents(ca, ca.v), contents(cb, cb.v));

    // qk_norm_rope_kv_forward against qk_norm_rope_forward; the cache against the marker, k_out, v.
    KvCache cf = cache_of();
    DevTensor qo(b, {n, hq, hd}), ko(b, {n, hkv, hd}), qr(b, {n, hq, hd}), kr(b, {n, hkv, hd});
    b.qk_norm_rope_kv_forward(qd.t, kd.t, vd.t, qn.t, kn.t, 1e-6f, pos0, rope, qo.t, ko.t, cf, layer);
    b.qk_norm_rope_forward(qd.t, kd.t, qn.t, kn.t, 1e-6f, pos0, rope, qr.t, kr.t);
    EXPECT_EQ(qo.read(b, "q_out"), qr.read(b, "q_out of qk_norm_rope"));
    const std::vector<float> k_out = ko.read(b, "k_out");
    EXPECT_EQ(k_out, kr.read(b, "k_out of qk_norm_rope"));
    for (int which = 0; which < 2; ++which) {
      const std::vector<float> got = contents(cf, which ? cf.v : cf.k);
      const std::vector<float>& src = which ? v : k_out;
      int64_t bad = 0;
      for (int64_t l = 0; l < layers; ++l)
        for (int64_t g = 0; g < hkv; ++g)
          for (int64_t t = 0; t < cap; ++t)
            for (int64_t e = 0; e < hd; ++e) {
              const size_t at = static_cast<size_t>(((l * hkv + g) * cap + t) * hd + e);
              const bool written = l == layer && t >= pos0 && t < pos0 + n;
              const float want =
                  written ? src[static_cast<size_t>(((t - pos0) * hkv + g) * hd + e)] : past[at];
              bad += got[at] != want;
            }
      EXPECT_EQ(bad, 0) << (which ? "v" : "k") << " cache";
    }
  }
}

TEST_P(BackendOps, SwiGluAndAdd) {
  Backend& b = *backend;
  for (int64_t n : {1, 7, 1000, 40000}) {
    std::vector<float> g = randn(static_cast<size_t>(n), rng, 4.0f), u = randn(static_cast<size_t>(n), rng);
    DevTensor gd(b, {n}, &g), ud(b, {n}, &u), y(b, {n}), s(b, {n});
    b.swiglu_forward(gd.t, ud.t, y.t);
    b.add_forward(gd.t, ud.t, s.t);
    std::vector<double> ref(g.size()), ref_add(g.size());
    for (size_t i = 0; i < g.size(); ++i) {
      ref[i] = g[i] / (1.0 + std::exp(-double(g[i]))) * u[i];
      ref_add[i] = double(g[i]) + u[i];
    }
    EXPECT_LT(nmse(y.read(b, "swiglu"), ref), kNmseBound) << n;
    EXPECT_LT(nmse(s.read(b, "add"), ref_add), kNmseBound) << n;
  }
  // silu saturates without NaN at the fp32 extremes.
  std::vector<float> big{-1e30f, -100.0f, 100.0f, 1e30f}, ones(4, 1.0f);
  DevTensor gd(b, {4}, &big), ud(b, {4}, &ones), y(b, {4});
  b.swiglu_forward(gd.t, ud.t, y.t);
  const auto r = y.read(b, "swiglu extremes");
  EXPECT_EQ(r[0], -0.0f);
  EXPECT_EQ(r[3], 1e30f);
}

// Results do not depend on the thread count: each output element is computed by one thread with
// the same code whatever the split.
TEST(BackendOpsThreads, LinearAndAttentionIdenticalAcrossThreadCounts) {
  std::mt19937 rng(7);
  const int64_t n = 13, in = 96, out = 77, hq = 4, hkv = 2, hd = 16;
  std::vector<float> x = randn(n * in, rng), w = randn(out * in, rng);
  std::vector<float> q = randn(n * hq * hd, rng), k = randn(n * hkv * hd, rng), v = randn(n * hkv * hd, rng);
  std::vector<std::vector<float>> results;
  for (int threads : {1, 2, 5}) {
    auto b = make_backend("cpu", BackendOptions{threads});
    DevTensor xd(*b, {n, in}, &x), y(*b, {n, out});
    b->linear_forward(xd.t, Weight{WeightFormat::Dense, DType::F32, out, in, w.data()}, Tensor(), y.t);
    KvCache cache = b->alloc_kv_cache(1, hkv, n, hd);
    DevTensor qd(*b, {n, hq, hd}, &q), kd(*b, {n, hkv, hd}, &k), vd(*b, {n, hkv, hd}, &v), o(*b, {n, hq, hd});
    b->attention_forward(qd.t, kd.t, vd.t, cache, 0, 0, 0.25f, o.t);
    auto r = y.read(*b, "linear");
    const auto ro = o.read(*b, "attention");
    r.insert(r.end(), ro.begin(), ro.end());
    results.push_back(r);
  }
  EXPECT_EQ(results[0], results[1]);
  EXPECT_EQ(results[0], results[2]);
}

// The CPU backend's branch-light F16 decode agrees with core/half.h on all 65536 bit patterns.
TEST(BackendOpsConvert, F16AllBitPatterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = cpu::f16_bits_to_f32(static_cast<uint16_t>(h)), e = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(e)) {
      ASSERT_TRUE(std::isnan(a)) << std::hex << h;
    } else {
      ASSERT_EQ(std::memcmp(&a, &e, 4), 0) << std::hex << h << " " << a << " vs " << e;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Threads, BackendOps, ::testing::Values(1, 3));

}  // namespace
}  // namespace nibble
