// Linear layer: out (n, out) = x (n, in) · W^T (+ bias), W (out, in) row-major as in nn.Linear.
//
// Dense W (F32 / BF16 / F16): threads take blocks of 4 rows of W; a block is converted to fp32
// once (BF16 / F16 rows on the fly into per-thread scratch, no full copy of W) and then dotted
// with every row of x, so each weight byte is read once per call whatever n is. The dot products
// keep 8 independent fp32 partial sums per row, which compilers turn into SIMD and which make the
// result independent of the thread split. NVFP4 W goes to nvfp4_matmul_rows (dequantised inside
// the dot product, backend/cpu/nvfp4_matmul.h).
#include <algorithm>
#include <vector>

#include "backend/cpu/convert.h"
#include "backend/cpu/nvfp4_matmul.h"
#include "backend/cpu/ops.h"

namespace nibble::cpu {

namespace {

constexpr int64_t kRowBlock = 4;  // rows of W per block (4 dot products share each load of x)

// y[0..R) += dot(x, w_r) for R (<= 4) rows w_r of length k.
template <int R>
void dot_rows(const float* x, const float* const* w, int64_t k, float* y) {
  float acc[R][8] = {};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    for (int r = 0; r < R; ++r) {
      for (int u = 0; u < 8; ++u) acc[r][u] += x[i + u] * w[r][i + u];
    }
  }
  for (int r = 0; r < R; ++r) {
    float s = 0.0f;
    for (int64_t j = i; j < k; ++j) s += x[j] * w[r][j];
    for (int u = 0; u < 8; ++u) s += acc[r][u];
    y[r] = s;
  }
}

void dense_rows(const float* x, int64_t n, const Weight& w, int64_t row_begin, int64_t row_end, float* y,
                std::vector<float>& scratch) {
  const int64_t k = w.in, out = w.out;
  const size_t row_bytes = static_cast<size_t>(k) * dtype_size(w.dtype);
  if (w.dtype != DType::F32) scratch.resize(static_cast<size_t>(kRowBlock * k));
  for (int64_t j0 = row_begin; j0 < row_end; j0 += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, row_end - j0);
    const float* wr[kRowBlock];
    for (int64_t r = 0; r < rows; ++r) {
      const void* src = static_cast<const char*>(w.data) + static_cast<size_t>(j0 + r) * row_bytes;
      if (w.dtype == DType::F32) {
        wr[r] = static_cast<const float*>(src);
      } else {
        load_row_f32(src, w.dtype, k, scratch.data() + r * k);
        wr[r] = scratch.data() + r * k;
      }
    }
    float res[kRowBlock];
    for (int64_t i = 0; i < n; ++i) {
      const float* xi = x + i * k;
      switch (rows) {
        case 4:
          dot_rows<4>(xi, wr, k, res);
          break;
        case 3:
          dot_rows<3>(xi, wr, k, res);
          break;
        case 2:
          dot_rows<2>(xi, wr, k, res);
          break;
        default:
          dot_rows<1>(xi, wr, k, res);
          break;
      }
      for (int64_t r = 0; r < rows; ++r) y[i * out + j0 + r] = res[r];
    }
  }
}

}  // namespace

void linear_forward(ThreadPool& pool, const Tensor& x, const Weight& w, const Tensor& bias,
                    const Tensor& out) {
  const int64_t n = x.rows();
  NIBBLE_ASSERT(x.dtype == DType::F32 && out.dtype == DType::F32);
  NIBBLE_ASSERT(x.cols() == w.in && out.rows() == n && out.cols() == w.out);
  NIBBLE_ASSERT(bias.empty() || (bias.numel() == w.out && is_dense_float(bias.dtype)));
  NIBBLE_ASSERT(w.is_nvfp4() || is_dense_float(w.dtype));
  if (n == 0 || w.out == 0) return;
  const float* xp = x.as<const float>();
  float* yp = out.as<float>();

  // Blocks of kRowBlock rows of W; a chunk of blocks should hold ~64K multiply-adds.
  const int64_t blocks = (w.out + kRowBlock - 1) / kRowBlock;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(kRowBlock * w.in * n, 1));
  std::vector<std::vector<float>> scratch(static_cast<size_t>(pool.size()));
  pool.parallel_for(blocks, grain, [&](int64_t b, int64_t e, int thread) {
    const int64_t r0 = b * kRowBlock, r1 = std::min(w.out, e * kRowBlock);
    if (w.is_nvfp4()) {
      nvfp4_matmul_rows(xp, n, w, r0, r1, yp);
    } else {
      dense_rows(xp, n, w, r0, r1, yp, scratch[static_cast<size_t>(thread)]);
    }
    if (!bias.empty()) {
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = r0; j < r1; ++j) yp[i * w.out + j] += load_f32(bias.data, bias.dtype, j);
      }
    }
  });
}

}  // namespace nibble::cpu
