// defines: linear_forward (y = x · W^T for a dense BF16 or an NVFP4 Weight), linear_scratch_bytes,
// gemm_bf16_nt (the cuBLASLt call under it), MatmulCache (cuBLASLt descriptors by shape).
//
// Shapes (row-major, HF nn.Linear layout): x (n, in) bf16 with row stride ldx; W (out, in), `in`
// contiguous; y (n, out) bf16 or f32 with row stride ldy. fp32 accumulation everywhere.
// NVFP4 (DESIGN.md "NVFP4"): packed codes (out, in/2), fp8 e4m3 scales (out, in/16), fp32 global.
//   n <= kGemvMaxTokens: a GEMV kernel streams the packed weights once and dequantises in registers.
//   larger n: row chunks of W are dequantised to bf16 in `scratch` (e2m1 * fp8 scale is exact in
//   bf16: a 2-bit times a 4-bit significand fits bf16's 8), then cuBLASLt multiplies with
//   alpha = global scale. No full-precision copy of W is ever kept.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <tuple>

#include "backend/cuda/context.cuh"
#include "core/dtype.h"
#include "model/weight.h"

namespace nibble::cuda {

using bf16 = __nv_bfloat16;

constexpr int64_t kGemvMaxTokens = 8;

// Scratch the call needs for n tokens: the NVFP4 dequantised tile (GEMM path), and with a bias and
// a BF16 output an fp32 staging of y, so that y + bias is rounded to bf16 once, as HF's addmm does.
size_t linear_scratch_bytes(const Weight& w, int64_t n, bool bias, DType y_dtype);

// y (n, w.out) = x (n, w.in) · W^T + bias. y_dtype is BF16 or F32; bias (w.out) fp32, optional.
// Throws Error on an unsupported weight (dense other than BF16), a misaligned pointer or a
// too-small scratch.
void linear_forward(Context& ctx, const bf16* x, int64_t ldx, int64_t n, const Weight& w, const float* bias,
                    void* y, DType y_dtype, int64_t ldy, Scratch scratch);

// y (n, m) row-major, ldy = alpha * x (n, k) row-major ldx · w (m, k)^T row-major ldw, through
// cuBLASLt (bf16 inputs, fp32 compute). y_dtype BF16 or F32.
void gemm_bf16_nt(Context& ctx, const bf16* x, int64_t ldx, const bf16* w, int64_t ldw, void* y,
                  DType y_dtype, int64_t ldy, int64_t n, int64_t m, int64_t k, float alpha);

// cuBLASLt descriptors, layouts and the heuristic's algorithm for each problem shape seen, so that a
// repeated shape (every decode step) costs no heuristic query. Owned by the Context.
class MatmulCache {
 public:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  // (m, n, k, lda, ldb, ldc, c_type, workspace bytes)
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, size_t>;

  MatmulCache() = default;
  ~MatmulCache();
  MatmulCache(const MatmulCache&) = delete;
  MatmulCache& operator=(const MatmulCache&) = delete;

  const Plan& get(cublasLtHandle_t handle, const Key& key);

 private:
  std::map<Key, Plan> plans_;
};

}  // namespace nibble::cuda
