// defines: MatmulCache (cuBLASLt descriptors and algorithm by problem shape) and gemm_bf16_nt, the
// bf16 GEMM under linear_forward's prompt-sized path (both declared in linear.cuh).
#include "backend/cuda/check.cuh"
#include "backend/cuda/linear.cuh"

namespace nibble::cuda {

MatmulCache::~MatmulCache() {
  for (auto& [key, p] : plans_) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.desc);
  }
}

const MatmulCache::Plan& MatmulCache::get(cublasLtHandle_t handle, const Key& key) {
  if (auto it = plans_.find(key); it != plans_.end()) return it->second;
  const auto [m, n, k, lda, ldb, ldc, c_type, ws_bytes] = key;
  Plan p;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
  // Column-major view: A = W stored (k, m) ld lda, used transposed; B = x stored (k, n) ld ldb;
  // C = y stored (m, n) ld ldc, i.e. y row-major (n, m).
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, k, m, lda));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, k, n, ldb));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, static_cast<cudaDataType_t>(c_type), m, n, ldc));
  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  size_t ws = ws_bytes;
  CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(handle, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.desc);
    fail("cuBLASLt has no algorithm for bf16 GEMM m={} n={} k={} (lda {}, ldb {}, ldc {}): {}", m, n, k, lda,
         ldb, ldc, cublasLtGetStatusString(st));
  }
  p.algo = result.algo;
  return plans_.emplace(key, p).first->second;
}

void gemm_bf16_nt(Context& ctx, const bf16* x, int64_t ldx, const bf16* w, int64_t ldw, void* y,
                  DType y_dtype, int64_t ldy, int64_t n, int64_t m, int64_t k, float alpha) {
  if (n == 0 || m == 0) return;
  const int c_type = y_dtype == DType::F32 ? CUDA_R_32F : CUDA_R_16BF;
  const MatmulCache::Plan& p =
      ctx.matmul_cache().get(ctx.blaslt(), {m, n, k, ldw, ldx, ldy, c_type, ctx.blas_workspace_bytes()});
  const float beta = 0.0f;
  CUBLAS_CHECK(cublasLtMatmul(ctx.blaslt(), p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &p.algo,
                              ctx.blas_workspace(), ctx.blas_workspace_bytes(), ctx.stream()));
}

}  // namespace nibble::cuda
