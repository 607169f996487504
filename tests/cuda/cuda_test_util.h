// defines: helpers shared by the GPU suites: the skip-without-GPU check, bf16-exact random data,
// device tensors followed by sentinels, NMSE.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/convert.h"
#include "backend/cuda/context.cuh"
#include "backend/cuda/cuda_backend.h"
#include "core/half.h"
#include "model/qwen3.h"
#include "quant/nvfp4.h"

namespace nibble::test {

// GTEST_SKIP() needs to run in the test body; this returns the reason ("" when a GPU is there).
inline std::string no_gpu_reason() { return cuda::cuda_unavailable_reason(); }

#define NIBBLE_REQUIRE_GPU()                                                                 \
  do {                                                                                       \
    const std::string reason_ = ::nibble::test::no_gpu_reason();                             \
    if (!reason_.empty()) GTEST_SKIP() << reason_ << " (GPU suites run on the GPU machine)"; \
  } while (0)

// Normal values rounded to bf16, so that the CPU reference (F32) and the GPU (BF16) see one input.
inline std::vector<float> randn_bf16(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = bf16_to_f32(f32_to_bf16(d(rng)));
  return v;
}

inline std::vector<uint16_t> to_bf16_bits(const std::vector<float>& v) {
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = f32_to_bf16(v[i]);
  return b;
}

constexpr int64_t kPad = 40;           // sentinel elements after every output
constexpr float kSentinel = -7776.0f;  // exact in bf16; no op produces it from these inputs

// A backend tensor followed by kPad sentinels; outputs start poisoned with the sentinel too, so an
// element the op fails to write shows up.
struct DevTensor {
  Buffer storage;
  Tensor t, padded;

  DevTensor(Backend& b, DType dtype, std::initializer_list<int64_t> dims,
            const std::vector<float>* init = nullptr) {
    const Tensor shape(nullptr, dtype, dims);
    padded = b.alloc_tensor(storage, dtype, {shape.numel() + kPad});
    t = storage.view(dtype, dims);
    std::vector<float> fill(static_cast<size_t>(shape.numel() + kPad), kSentinel);
    if (init) std::copy(init->begin(), init->end(), fill.begin());
    b.copy_from_host(fill, padded);
  }
  DevTensor(Backend& b, std::initializer_list<int64_t> dims, const std::vector<float>* init = nullptr)
      : DevTensor(b, b.activation_dtype(), dims, init) {}

  // Contents; fails the test on a changed sentinel, an unwritten element or a non-finite value.
  std::vector<float> read(Backend& b, const std::string& what) const {
    std::vector<float> all(static_cast<size_t>(padded.numel()));
    b.copy_to_host(padded, all);
    for (int64_t i = t.numel(); i < padded.numel(); ++i)
      if (all[static_cast<size_t>(i)] != kSentinel) {
        ADD_FAILURE() << what << ": write past the end at +" << i - t.numel();
        break;
      }
    all.resize(static_cast<size_t>(t.numel()));
    for (size_t i = 0; i < all.size(); ++i)
      if (!std::isfinite(all[i]) || all[i] == kSentinel) {
        ADD_FAILURE() << what << ": element " << i << " is " << all[i] << " (not written or not finite)";
        break;
      }
    return all;
  }
};

inline double nmse(const std::vector<float>& got, const std::vector<float>& ref) {
  EXPECT_EQ(got.size(), ref.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size() && i < got.size(); ++i) {
    num += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return den > 0 ? num / den : num;
}

// A model's weights with every linear of K % 16 == 0 quantised to NVFP4 (the ModelOpt codec,
// quant/nvfp4.h); the rest, if any, stay dense. `w` points into `storage` and the host weights.
struct QuantisedWeights {
  std::vector<Nvfp4Tensor> storage;
  ModelWeights w;
  explicit QuantisedWeights(const ModelWeights& host) : w(host) {
    storage.reserve(host.layers.size() * 7);
    for (LayerWeights& L : w.layers)
      for (Weight* p : {&L.q_proj, &L.k_proj, &L.v_proj, &L.o_proj, &L.gate_proj, &L.up_proj, &L.down_proj}) {
        if (p->in % 16 != 0) continue;
        std::vector<float> f(static_cast<size_t>(p->out * p->in));
        cpu::load_row_f32(p->data, p->dtype, p->out * p->in, f.data());
        storage.push_back(quantize_nvfp4(f.data(), p->out, p->in));
        *p = storage.back().view();
      }
  }
};

}  // namespace nibble::test
