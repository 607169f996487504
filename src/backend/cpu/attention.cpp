// Causal grouped-query attention over the KV cache (one sequence).
//
// k, v (n, hkv, hd), when given, are first written to the cache at positions [pos0, pos0 + n)
// (kv_cache_write); then query row i (position pos0 + i) of head h attends to positions
// [0, pos0 + i] of kv head h / (hq / hkv):
//   s_t = scale * q . K_t,  p = softmax(s) (max-subtracted, fp32),  out = sum_t p_t V_t.
// Work is split over (token, head) pairs; the cache layout (hkv, capacity, hd) makes each head's
// keys and values one contiguous block.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/ops.h"

namespace nibble::cpu {

namespace {

float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int u = 0; u < 8; ++u) acc[u] += a[i + u] * b[i + u];
  }
  float s = 0.0f;
  for (; i < n; ++i) s += a[i] * b[i];
  for (float x : acc) s += x;
  return s;
}

}  // namespace

void kv_cache_write(const Tensor& k, const Tensor& v, KvCache& cache, int64_t layer, int64_t pos0) {
  NIBBLE_ASSERT(k.rank == 3 && v.rank == 3 && k.dtype == DType::F32 && v.dtype == DType::F32 &&
                cache.dtype == DType::F32);
  const int64_t n = k.dim(0), hkv = k.dim(1), hd = k.dim(2);
  NIBBLE_ASSERT(v.dim(0) == n && v.dim(1) == hkv && v.dim(2) == hd);
  NIBBLE_ASSERT(cache.kv_heads == hkv && cache.head_dim == hd);
  NIBBLE_ASSERT(pos0 >= 0 && pos0 + n <= cache.capacity);
  const int64_t cap = cache.capacity;
  float* kc = cache.k_layer(layer).as<float>();  // (hkv, cap, hd)
  float* vc = cache.v_layer(layer).as<float>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t g = 0; g < hkv; ++g) {
      const size_t dst = static_cast<size_t>((g * cap + pos0 + i) * hd);
      const size_t src = static_cast<size_t>((i * hkv + g) * hd);
      std::memcpy(kc + dst, k.as<const float>() + src, static_cast<size_t>(hd) * sizeof(float));
      std::memcpy(vc + dst, v.as<const float>() + src, static_cast<size_t>(hd) * sizeof(float));
    }
  }
}

void attention_forward(ThreadPool& pool, const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache,
                       int64_t layer, int64_t pos0, float scale, const Tensor& out,
                       std::vector<float>& scratch) {
  NIBBLE_ASSERT(q.rank == 3 && out.rank == 3);
  const int64_t n = q.dim(0), hq = q.dim(1), hd = q.dim(2), hkv = cache.kv_heads;
  NIBBLE_ASSERT(q.dtype == DType::F32 && out.dtype == DType::F32 && cache.dtype == DType::F32);
  NIBBLE_ASSERT(out.dim(0) == n && out.dim(1) == hq && out.dim(2) == hd);
  NIBBLE_ASSERT(hkv > 0 && hq % hkv == 0 && cache.head_dim == hd);
  NIBBLE_ASSERT(pos0 >= 0 && pos0 + n <= cache.capacity);
  NIBBLE_ASSERT(k.empty() == v.empty());
  if (!k.empty()) {
    NIBBLE_ASSERT(k.dim(0) == n);
    kv_cache_write(k, v, cache, layer, pos0);
  }
  const int64_t cap = cache.capacity, group = hq / hkv, total = pos0 + n;
  const float* kc = cache.k_layer(layer).as<const float>();  // (hkv, cap, hd)
  const float* vc = cache.v_layer(layer).as<const float>();

  const size_t per_thread = static_cast<size_t>(total + hd);
  if (scratch.size() < per_thread * static_cast<size_t>(pool.size())) {
    scratch.resize(per_thread * static_cast<size_t>(pool.size()));
  }
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(total * hd, 1));
  pool.parallel_for(n * hq, grain, [&](int64_t b, int64_t e, int thread) {
    float* s = scratch.data() + per_thread * static_cast<size_t>(thread);
    float* acc = s + total;
    for (int64_t task = b; task < e; ++task) {
      const int64_t i = task / hq, h = task % hq, g = h / group;
      const int64_t len = pos0 + i + 1;  // causal: positions [0, pos0 + i]
      const float* qi = q.as<const float>() + (i * hq + h) * hd;
      const float* kg = kc + g * cap * hd;
      const float* vg = vc + g * cap * hd;
      float mx = -INFINITY;
      for (int64_t t = 0; t < len; ++t) {
        s[t] = scale * dot(qi, kg + t * hd, hd);
        mx = std::max(mx, s[t]);
      }
      float sum = 0.0f;
      for (int64_t t = 0; t < len; ++t) {
        s[t] = std::exp(s[t] - mx);
        sum += s[t];
      }
      std::fill(acc, acc + hd, 0.0f);
      for (int64_t t = 0; t < len; ++t) {
        const float p = s[t];
        const float* vt = vg + t * hd;
        for (int64_t d = 0; d < hd; ++d) acc[d] += p * vt[d];
      }
      float* oi = out.as<float>() + (i * hq + h) * hd;
      const float inv = 1.0f / sum;
      for (int64_t d = 0; d < hd; ++d) oi[d] = acc[d] * inv;
    }
  });
}

}  // namespace nibble::cpu
