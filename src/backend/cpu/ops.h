// defines: the CPU forward ops, one file per family (embedding.cpp, norm.cpp, linear.cpp,
// rope.cpp, attention.cpp, activation.cpp), called by CpuBackend. Shapes and semantics are those
// of backend/backend.h; activations are F32, accumulation is fp32, rows are split across the pool.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/thread_pool.h"

namespace nibble::cpu {

void embedding_forward(ThreadPool& pool, const Weight& table, std::span<const int32_t> tokens,
                       const Tensor& out);
void rmsnorm_forward(ThreadPool& pool, const Tensor& x, const Tensor& w, float eps, const Tensor& out,
                     const Tensor& rstd);
void linear_forward(ThreadPool& pool, const Tensor& x, const Weight& w, const Tensor& bias,
                    const Tensor& out);
void rope_forward(ThreadPool& pool, const Tensor& x, int64_t pos0, const RopeTable& rope);
void kv_cache_write(const Tensor& k, const Tensor& v, KvCache& cache, int64_t layer, int64_t pos0);
// k and v empty: the cache already holds them. `scratch` holds per-thread score rows; resized here
// as needed.
void attention_forward(ThreadPool& pool, const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache,
                       int64_t layer, int64_t pos0, float scale, const Tensor& out,
                       std::vector<float>& scratch);
void swiglu_forward(ThreadPool& pool, const Tensor& gate, const Tensor& up, const Tensor& out);
void add_forward(ThreadPool& pool, const Tensor& a, const Tensor& b, const Tensor& out);

}  // namespace nibble::cpu
