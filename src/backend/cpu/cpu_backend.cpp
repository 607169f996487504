#include "backend/cpu/cpu_backend.h"

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "backend/cpu/convert.h"
#include "backend/cpu/ops.h"
#include "core/half.h"

namespace nibble {

namespace {
constexpr size_t kAlign = 64;  // a cache line; also enough for any SIMD load
}

CpuBackend::CpuBackend(const BackendOptions& opts) : pool_(opts.threads) {}

std::string CpuBackend::name() const { return fmt::format("cpu ({} threads)", pool_.size()); }

void* CpuBackend::raw_alloc(size_t bytes) {
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, rounded);
  if (p == nullptr) fail("out of host memory allocating {} bytes", bytes);
  std::memset(p, 0, rounded);
  return p;
}

void CpuBackend::raw_free(void* p) { std::free(p); }

void CpuBackend::copy_to_host(const Tensor& src, std::span<float> dst) {
  NIBBLE_ASSERT(static_cast<int64_t>(dst.size()) == src.numel());
  cpu::load_row_f32(src.data, src.dtype, src.numel(), dst.data());
}

void CpuBackend::copy_from_host(std::span<const float> src, const Tensor& dst) {
  NIBBLE_ASSERT(static_cast<int64_t>(src.size()) == dst.numel());
  switch (dst.dtype) {
    case DType::F32:
      std::memcpy(dst.data, src.data(), src.size() * sizeof(float));
      return;
    case DType::BF16:
      for (size_t i = 0; i < src.size(); ++i) dst.as<uint16_t>()[i] = f32_to_bf16(src[i]);
      return;
    case DType::F16:
      for (size_t i = 0; i < src.size(); ++i) dst.as<uint16_t>()[i] = f32_to_f16(src[i]);
      return;
    default:
      NIBBLE_ASSERT(!"copy_from_host: destination is not F32, BF16 or F16");
  }
}

void CpuBackend::embedding_forward(const Weight& table, std::span<const int32_t> tokens, const Tensor& out) {
  cpu::embedding_forward(pool_, table, tokens, out);
}

void CpuBackend::rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& out,
                                 const Tensor& rstd) {
  cpu::rmsnorm_forward(pool_, x, w, eps, out, rstd);
}

void CpuBackend::linear_forward(const Tensor& x, const Weight& w, const Tensor& bias, const Tensor& out) {
  cpu::linear_forward(pool_, x, w, bias, out);
}

void CpuBackend::rope_forward(const Tensor& x, int64_t pos0, const RopeTable& rope) {
  cpu::rope_forward(pool_, x, pos0, rope);
}

void CpuBackend::kv_cache_write(const Tensor& k, const Tensor& v, KvCache& cache, int64_t layer,
                                int64_t pos0) {
  cpu::kv_cache_write(k, v, cache, layer, pos0);
}

void CpuBackend::attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache,
                                   int64_t layer, int64_t pos0, float scale, const Tensor& out) {
  cpu::attention_forward(pool_, q, k, v, cache, layer, pos0, scale, out, attention_scratch_);
}

void CpuBackend::swiglu_forward(const Tensor& gate, const Tensor& up, const Tensor& out) {
  cpu::swiglu_forward(pool_, gate, up, out);
}

void CpuBackend::add_forward(const Tensor& a, const Tensor& b, const Tensor& out) {
  cpu::add_forward(pool_, a, b, out);
}

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& opts) {
  return std::make_unique<CpuBackend>(opts);
}

}  // namespace nibble
