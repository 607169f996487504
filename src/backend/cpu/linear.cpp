// Linear layer: out (n, out) = x (n, in) · W^T (+ bias), W (out, in) row-major as in nn.Linear.
//
// Dense W (F32 / BF16 / F16): threads take blocks of 4 rows of W; a block is converted to fp32
// to fp32 once (F16, or BF16 when x has many rows: into per-thread scratch, never a full copy of
// W) and dotted with every row of x, so each weight byte is read once per call whatever n is;
// BF16 with few rows of x (decode) is widened inside the dot product instead. The dot products
// keep 8 independent fp32 partial sums per row, which compilers turn into SIMD and which make the
// result independent of the thread split. NVFP4 W goes to nvfp4_matmul_rows (dequantised inside
// the dot product, backend/cpu/nvfp4_matmul.h).
#include <algorithm>
#include <bit>
#include <cstring>
#include <vector>

#include "backend/cpu/convert.h"
#include "backend/cpu/nvfp4_matmul.h"
#include "backend/cpu/ops.h"

namespace nibble::cpu {

namespace {

constexpr int64_t kRowBlock = 4;  // rows of W per block (4 dot products share each load of x)

// The dot-product kernels are compiled twice, for AVX2 and for the baseline, and picked at load
// time (GCC/Clang function multiversioning), so one portable binary uses the wide registers where
// they exist. Both clones do the same fp32 multiplies and adds in the same order (8 partial sums
// per row, no FMA contraction in ISO C++ mode), so results are identical on every x86-64.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NIBBLE_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define NIBBLE_SIMD_CLONES
#endif

// The vector helpers below are inlined into each clone; GCC's note that a 32-byte vector return
// would change the (never used) out-of-line ABI without AVX does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

// 8 fp32 lanes as a GCC/Clang vector: the AVX2 clone keeps one in a ymm register, the baseline
// splits it into two xmm registers. Lane u accumulates elements u, u+8, u+16, ...
typedef float v8f __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef uint16_t v8h __attribute__((vector_size(16)));

inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline v8f load8(const uint16_t* p) {  // BF16: the top half of an fp32
  v8h h;
  std::memcpy(&h, p, sizeof h);
  return reinterpret_cast<v8f>(__builtin_convertvector(h, v8u) << 16);
}
inline float widen(float v) { return v; }
inline float widen(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

// y[r] = dot(x, w_r) for 4 rows of length k (W is float or BF16 bits); fixed summation order.
template <typename T>
inline void dot4(const float* x, const T* w0, const T* w1, const T* w2, const T* w3, int64_t k, float* y) {
  v8f a0 = {}, a1 = {}, a2 = {}, a3 = {};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    const v8f xv = load8(x + i);
    a0 += xv * load8(w0 + i);
    a1 += xv * load8(w1 + i);
    a2 += xv * load8(w2 + i);
    a3 += xv * load8(w3 + i);
  }
  float s[4] = {};
  for (; i < k; ++i) {
    s[0] += x[i] * widen(w0[i]);
    s[1] += x[i] * widen(w1[i]);
    s[2] += x[i] * widen(w2[i]);
    s[3] += x[i] * widen(w3[i]);
  }
  for (int u = 0; u < 8; ++u) {
    s[0] += a0[u];
    s[1] += a1[u];
    s[2] += a2[u];
    s[3] += a3[u];
  }
  for (int r = 0; r < 4; ++r) y[r] = s[r];
}

// Two rows of x against the same 4 fp32 rows of W: 8 accumulators, 6 loads per 8 multiply-adds
// of each (prefill). Per output element the operations and their order are those of dot4, so
// prefill and one-token decode give identical results.
NIBBLE_SIMD_CLONES void dot4x2_f32(const float* x0, const float* x1, const float* w0, const float* w1,
                                   const float* w2, const float* w3, int64_t k, float* y0, float* y1) {
  v8f a0 = {}, a1 = {}, a2 = {}, a3 = {}, b0 = {}, b1 = {}, b2 = {}, b3 = {};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    const v8f xa = load8(x0 + i), xb = load8(x1 + i);
    const v8f v0 = load8(w0 + i), v1 = load8(w1 + i), v2 = load8(w2 + i), v3 = load8(w3 + i);
    a0 += xa * v0;
    a1 += xa * v1;
    a2 += xa * v2;
    a3 += xa * v3;
    b0 += xb * v0;
    b1 += xb * v1;
    b2 += xb * v2;
    b3 += xb * v3;
  }
  const float* w[4] = {w0, w1, w2, w3};
  const v8f* a[4] = {&a0, &a1, &a2, &a3};
  const v8f* b[4] = {&b0, &b1, &b2, &b3};
  for (int r = 0; r < 4; ++r) {
    float s = 0.0f, t = 0.0f;
    for (int64_t j = i; j < k; ++j) {
      s += x0[j] * w[r][j];
      t += x1[j] * w[r][j];
    }
    for (int u = 0; u < 8; ++u) {
      s += (*a[r])[u];
      t += (*b[r])[u];
    }
    y0[r] = s;
    y1[r] = t;
  }
}

NIBBLE_SIMD_CLONES void dot4_f32(const float* x, const float* w0, const float* w1, const float* w2,
                                 const float* w3, int64_t k, float* y) {
  dot4(x, w0, w1, w2, w3, k, y);
}

// BF16 rows widened in registers (decode: every weight is read once, so a conversion pass
// through memory would double the traffic).
NIBBLE_SIMD_CLONES void dot4_bf16(const float* x, const uint16_t* w0, const uint16_t* w1, const uint16_t* w2,
                                  const uint16_t* w3, int64_t k, float* y) {
  dot4(x, w0, w1, w2, w3, k, y);
}

// Rows [row_begin, row_end) of y (n, out). Rows past the end of a partial block point at the
// block's first row and their results are dropped.
void dense_rows(const float* x, int64_t n, const Weight& w, int64_t row_begin, int64_t row_end, float* y,
                std::vector<float>& scratch) {
  const int64_t k = w.in, out = w.out;
  const size_t row_bytes = static_cast<size_t>(k) * dtype_size(w.dtype);
  const auto* base = static_cast<const char*>(w.data);
  // BF16 with few rows of x: widen inside the dot product. Otherwise (F16, or BF16 with many
  // rows of x) widen the block once into scratch and reuse it for every row of x.
  const bool direct_bf16 = w.dtype == DType::BF16 && n <= 4;
  if (w.dtype != DType::F32 && !direct_bf16) scratch.resize(static_cast<size_t>(kRowBlock * k));
  for (int64_t j0 = row_begin; j0 < row_end; j0 += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, row_end - j0);
    const void* src[kRowBlock];
    for (int64_t r = 0; r < kRowBlock; ++r)
      src[r] = base + static_cast<size_t>(j0 + (r < rows ? r : 0)) * row_bytes;
    const float* wf[kRowBlock];
    if (w.dtype == DType::F32) {
      for (int64_t r = 0; r < kRowBlock; ++r) wf[r] = static_cast<const float*>(src[r]);
    } else if (!direct_bf16) {
      for (int64_t r = 0; r < rows; ++r) load_row_f32(src[r], w.dtype, k, scratch.data() + r * k);
      for (int64_t r = 0; r < kRowBlock; ++r) wf[r] = scratch.data() + (r < rows ? r : 0) * k;
    }
    float res[kRowBlock], res2[kRowBlock];
    int64_t i = 0;
    if (!direct_bf16) {
      for (; i + 2 <= n; i += 2) {
        dot4x2_f32(x + i * k, x + (i + 1) * k, wf[0], wf[1], wf[2], wf[3], k, res, res2);
        for (int64_t r = 0; r < rows; ++r) {
          y[i * out + j0 + r] = res[r];
          y[(i + 1) * out + j0 + r] = res2[r];
        }
      }
    }
    for (; i < n; ++i) {
      const float* xi = x + i * k;
      if (direct_bf16) {
        const auto* h = reinterpret_cast<const uint16_t* const*>(src);
        dot4_bf16(xi, h[0], h[1], h[2], h[3], k, res);
      } else {
        dot4_f32(xi, wf[0], wf[1], wf[2], wf[3], k, res);
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
