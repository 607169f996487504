// Elementwise ops: SwiGLU (Shazeer 2020: silu(gate) * up, silu(g) = g / (1 + e^-g)) and the
// residual add.
#include <cmath>

#include "backend/cpu/ops.h"

namespace nibble::cpu {

namespace {
constexpr int64_t kGrain = 16384;  // elements per chunk: below this, threads cost more than they save
}

void swiglu_forward(ThreadPool& pool, const Tensor& gate, const Tensor& up, const Tensor& out) {
  NIBBLE_ASSERT(gate.dtype == DType::F32 && up.dtype == DType::F32 && out.dtype == DType::F32);
  NIBBLE_ASSERT(gate.numel() == up.numel() && gate.numel() == out.numel());
  const float* g = gate.as<const float>();
  const float* u = up.as<const float>();
  float* y = out.as<float>();
  pool.parallel_for(gate.numel(), kGrain, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) y[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  });
}

void add_forward(ThreadPool& pool, const Tensor& a, const Tensor& b, const Tensor& out) {
  NIBBLE_ASSERT(a.dtype == DType::F32 && b.dtype == DType::F32 && out.dtype == DType::F32);
  NIBBLE_ASSERT(a.numel() == b.numel() && a.numel() == out.numel());
  const float* pa = a.as<const float>();
  const float* pb = b.as<const float>();
  float* y = out.as<float>();
  pool.parallel_for(a.numel(), kGrain, [&](int64_t s, int64_t e, int) {
    for (int64_t i = s; i < e; ++i) y[i] = pa[i] + pb[i];
  });
}

}  // namespace nibble::cpu
