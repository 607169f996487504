// defines: CpuBackend (the reference backend: F32 activations and KV cache, fp32 accumulation,
// weights used in place from the mapped checkpoint) and make_cpu_backend.
#pragma once

#include <memory>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/thread_pool.h"

namespace nibble {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const BackendOptions& opts);

  std::string name() const override;
  DType activation_dtype() const override { return DType::F32; }
  DType kv_dtype() const override { return DType::F32; }
  int threads() const { return pool_.size(); }

  Weight upload_weight(const Weight& host) override { return host; }  // zero copy: the mmap is host memory
  Tensor upload_tensor(const Tensor& host) override { return host; }
  void copy_to_host(const Tensor& src, std::span<float> dst) override;
  void copy_from_host(std::span<const float> src, const Tensor& dst) override;

  void embedding_forward(const Weight& table, std::span<const int32_t> tokens, const Tensor& out) override;
  void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& out,
                       const Tensor& rstd) override;
  void linear_forward(const Tensor& x, const Weight& w, const Tensor& bias, const Tensor& out) override;
  void rope_forward(const Tensor& x, int64_t pos0, const RopeTable& rope) override;
  void kv_cache_write(const Tensor& k, const Tensor& v, KvCache& cache, int64_t layer, int64_t pos0) override;
  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache, int64_t layer,
                         int64_t pos0, float scale, const Tensor& out) override;
  void swiglu_forward(const Tensor& gate, const Tensor& up, const Tensor& out) override;
  void add_forward(const Tensor& a, const Tensor& b, const Tensor& out) override;

 protected:
  void* raw_alloc(size_t bytes) override;
  void raw_free(void* p) override;

 private:
  ThreadPool pool_;
  std::vector<float> attention_scratch_;  // per-thread score rows
};

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& opts);

}  // namespace nibble
