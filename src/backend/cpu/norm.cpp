// RMSNorm (Zhang & Sennrich 2019), as HF's Qwen3RMSNorm / LlamaRMSNorm compute it:
// out = x * rsqrt(mean(x^2) + eps) * w, per row. Used for the block norms (rows = n, dim) and the
// Qwen3 per-head q/k norms (rows = n * heads, dim = hd).
#include <algorithm>
#include <cmath>

#include "backend/cpu/convert.h"
#include "backend/cpu/ops.h"

namespace nibble::cpu {

void rmsnorm_forward(ThreadPool& pool, const Tensor& x, const Tensor& w, float eps, const Tensor& out,
                     const Tensor& rstd) {
  const int64_t rows = x.rows(), dim = x.cols();
  NIBBLE_ASSERT(x.dtype == DType::F32 && out.dtype == DType::F32 && out.rows() == rows && out.cols() == dim);
  NIBBLE_ASSERT(w.numel() == dim && is_dense_float(w.dtype));
  NIBBLE_ASSERT(rstd.empty() || (rstd.dtype == DType::F32 && rstd.numel() == rows));
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(dim, 1));
  pool.parallel_for(rows, grain, [&](int64_t b, int64_t e, int) {
    for (int64_t r = b; r < e; ++r) {
      const float* xr = x.as<const float>() + r * dim;
      float* yr = out.as<float>() + r * dim;
      // 8 independent partial sums: vectorizable and independent of the thread split.
      float acc[8] = {};
      int64_t i = 0;
      for (; i + 8 <= dim; i += 8) {
        for (int u = 0; u < 8; ++u) acc[u] += xr[i + u] * xr[i + u];
      }
      float ss = 0.0f;
      for (; i < dim; ++i) ss += xr[i] * xr[i];
      for (float a : acc) ss += a;
      const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
      if (!rstd.empty()) rstd.as<float>()[r] = inv;
      if (w.dtype == DType::F32) {
        const float* wf = w.as<const float>();
        for (int64_t j = 0; j < dim; ++j) yr[j] = xr[j] * inv * wf[j];
      } else {
        for (int64_t j = 0; j < dim; ++j) yr[j] = xr[j] * inv * load_f32(w.data, w.dtype, j);
      }
    }
  });
}

}  // namespace nibble::cpu
