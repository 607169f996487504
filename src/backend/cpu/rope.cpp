// Rotary position embedding (Su et al. 2021, arXiv 2104.09864) in HF's rotate-half (NeoX) form:
// for pair j < hd/2 of each head, (x_j, x_{j+hd/2}) rotates by angle p * inv_freq[j]:
//   out_j = x_j cos - x_{j+hd/2} sin,  out_{j+hd/2} = x_{j+hd/2} cos + x_j sin,
// with cos and sin multiplied by rope.attention_scaling (yarn) as HF does. The angle is the fp32
// product p * inv_freq[j], as in HF's rotary forward (which runs in fp32 even for a f64 model).
#include <cmath>
#include <vector>

#include "backend/cpu/ops.h"

namespace nibble::cpu {

void rope_forward(ThreadPool& pool, const Tensor& x, int64_t pos0, const RopeTable& rope) {
  NIBBLE_ASSERT(x.dtype == DType::F32 && x.rank == 3);
  const int64_t n = x.dim(0), heads = x.dim(1), hd = x.dim(2), half = hd / 2;
  NIBBLE_ASSERT(hd % 2 == 0 && rope.inv_freq.numel() == half && rope.inv_freq.dtype == DType::F32);
  const float* inv_freq = rope.inv_freq.as<const float>();
  const float att = rope.attention_scaling;
  pool.parallel_for(n, 4, [&](int64_t b, int64_t e, int) {
    std::vector<float> cs(static_cast<size_t>(2 * half));
    for (int64_t i = b; i < e; ++i) {
      const float p = static_cast<float>(pos0 + i);
      for (int64_t j = 0; j < half; ++j) {
        const double angle = static_cast<double>(p * inv_freq[j]);
        cs[j] = static_cast<float>(std::cos(angle)) * att;
        cs[half + j] = static_cast<float>(std::sin(angle)) * att;
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x.as<float>() + (i * heads + h) * hd;
        for (int64_t j = 0; j < half; ++j) {
          const float a = v[j], c = v[half + j];
          v[j] = a * cs[j] - c * cs[half + j];
          v[half + j] = c * cs[j] + a * cs[half + j];
        }
      }
    }
  });
}

}  // namespace nibble::cpu
