// defines: linear_forward (y = x · W^T for a dense BF16 or an NVFP4 Weight), linear_scratch_bytes,
// gemm_bf16_nt (the cuBLASLt call under it) and MatmulCache (descriptors by shape; both in matmul.cpp), the
// decode-time NVFP4 GEMVs (tensor cores in gemv_mma.cu: nvfp4_gemv_linear, and the fused ones): fused q/k/v
// (nvfp4_gemv_multi), gate/up + SwiGLU (nvfp4_gemv_swiglu), both also with the RMSNorm in front (*_rmsnorm;
// nvfp4_gemv_rmsnorm for one weight, the head), projection + residual add (nvfp4_gemv_residual, which can
// also start the next RMSNorm: NormHandoff), nvfp4_gemv_fusable, nvfp4_gemv_ffma.
//
// Shapes (row-major, HF nn.Linear layout): x (n, in) bf16 with row stride ldx; W (out, in), `in`
// contiguous; y (n, out) bf16 or f32 with row stride ldy. fp32 accumulation everywhere.
// NVFP4 (DESIGN.md "NVFP4"): packed codes (out, in/2), fp8 e4m3 scales (out, in/16), fp32 global.
//   n <= kGemvMaxTokens: a GEMV kernel streams the packed weights once and dequantises in registers
//   (K % 32 == 0: tensor cores, mma.sync with the dequantised tile as A and x as B; other K: FFMA).
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

// Weights read by later kernels, to pull into L2 while this one runs (cp.async.bulk.prefetch.L2,
// sm_90): the GEMV's blocks split the ranges between them and issue the prefetches before
// griddepcontrol.wait, so DRAM streams the next GEMVs' weights while the latency-bound kernels of
// the step (norms, RoPE, attention) run. Only a hint: the result never depends on it. Each range
// 16-byte aligned; bytes are rounded down to a multiple of 16. Chosen by the caller (CudaBackend
// plans a window over the weights in upload order).
struct L2Prefetch {
  static constexpr int kMaxRanges = 16;
  struct Range {
    const void* ptr;
    uint32_t bytes;
  };
  Range range[kMaxRanges] = {};
  int count = 0;
};

// Scratch the call needs for n tokens: the NVFP4 dequantised tile (GEMM path), and with a bias and
// a BF16 output an fp32 staging of y, so that y + bias is rounded to bf16 once, as HF's addmm does.
size_t linear_scratch_bytes(const Weight& w, int64_t n, bool bias, DType y_dtype);

// y (n, w.out) = x (n, w.in) · W^T + bias. y_dtype is BF16 or F32; bias (w.out) fp32, optional.
// Throws Error on an unsupported weight (dense other than BF16), a misaligned pointer or a
// too-small scratch.
// prefetch: see L2Prefetch (used by the tensor-core GEMV only).
void linear_forward(Context& ctx, const bf16* x, int64_t ldx, int64_t n, const Weight& w, const float* bias,
                    void* y, DType y_dtype, int64_t ldy, Scratch scratch, const L2Prefetch& prefetch = {});

// ---- decode GEMVs (NVFP4, n <= kGemvMaxTokens) --------------------------------------------------
// Programmatic dependent launch (PDL). The tensor-core GEMVs (linear_forward's NVFP4 path for
// K % 32 == 0 and the three fused variants below) are launched with
// cudaLaunchAttributeProgrammaticStreamSerialization: the GPU may start them while the previous
// kernel of the stream still runs. Before griddepcontrol.wait they only load weights (which no
// kernel writes); every read of x / residual / bias and every write comes after it, and the wait
// returns only once the previous kernel has completed and its writes are visible. RULE for any
// kernel launched this way: every write (and every read of data another kernel writes) happens
// after its griddepcontrol.wait. A kernel launched the ordinary way after a PDL kernel simply waits
// for it, so mixing the two is safe, in a stream and under CUDA-graph capture.
//
// Bit-exactness: for one K (and fewer than 2048 16-row tiles, or more: the head), every variant
// without the RMSNorm runs the same per-row summation (the same split of K over warps, the same mma
// order) and then the same roundings as the unfused ops, so each equals linear_forward followed by
// swiglu_forward / add_forward bit for bit (the _rmsnorm variants: see there). Weight tiles reach shared
// memory through the TMA engine (cp.async.bulk) before griddepcontrol.wait: codes 16-byte aligned, scales too
// (nvfp4_gemv_fusable).

// linear_forward's tensor-core GEMV (gemv_mma.cu): y (n, w.out) BF16 or F32, row stride ldy, =
// x W^T * global + bias (bias (w.out) fp32 or null). Throws Error when the weight is not fusable
// (nvfp4_gemv_fusable), x is misaligned or y_dtype is neither.
void nvfp4_gemv_linear(Context& ctx, const __nv_bfloat16* x, int64_t ldx, int64_t n, const Weight& w,
                       const float* bias, void* y, DType y_dtype, int64_t ldy,
                       const L2Prefetch& prefetch = {});

// y_j (n, out_j) bf16, row stride ldy = x W_j^T * global_j + bias_j (bias (out_j) fp32 or null).
struct GemvTarget {
  const Weight* w;
  const float* bias;
  __nv_bfloat16* y;
  int64_t ldy;
};

// The tile loop of the tensor-core GEMVs (gemv_mma.cu): 0 (the default) runs it where a GEMV has more
// 16-row tiles than 4 waves of one-tile blocks fill (the head), on as many blocks as fit on the SMs
// at once; -1 never; blocks > 0 always, on that many blocks (tests compare the paths: results are bit
// for bit the same). Process-wide; not thread-safe against concurrent launches.
void set_gemv_tile_loop(int blocks);

// True when the fused variants (and linear_forward's tensor-core GEMV) take this weight at n
// tokens: NVFP4, K % 32 == 0, 1 <= n <= kGemvMaxTokens, 16-byte-aligned codes and scales.
bool nvfp4_gemv_fusable(const Weight& w, int64_t n);

// q, k and v (up to 3 NVFP4 weights of one `in`) in one launch. x (n, in) bf16, 16-byte aligned,
// ldx % 8 == 0; no y may overlap x. Throws Error when a weight is not fusable or the K differ.
void nvfp4_gemv_multi(Context& ctx, const __nv_bfloat16* x, int64_t ldx, int64_t n, const GemvTarget* targets,
                      int count, const L2Prefetch& prefetch = {});

// out (n, out) = silu(x Wg^T) * (x Wu^T), one launch: gate and up rows of one tile are computed by
// the same threads (one pass over x). gate and up are each rounded to bf16, then silu(g) * u in fp32
// and one rounding, as linear_forward + swiglu_forward do. Wg, Wu of one shape, no bias.
// paired_out (null: none; one token, out % 8 == 0, 16-byte aligned): out again as the one-token
// GEMV after it takes x (nvfp4_gemv_residual's x_paired): element k at norm_handoff_index(k),
// times norm_handoff_scale (exact).
void nvfp4_gemv_swiglu(Context& ctx, const __nv_bfloat16* x, int64_t ldx, int64_t n, const Weight& wg,
                       const Weight& wu, __nv_bfloat16* out, int64_t ldo, const L2Prefetch& prefetch = {},
                       __nv_bfloat16* paired_out = nullptr);

// RMSNorm fused in front: the two GEMVs above applied to rmsnorm(x) (norm_w (in) fp32, eps) with
// the 1/rms deferred to the epilogue: every block writes bf16(x * norm_w) to shared memory after
// griddepcontrol.wait while summing the squares of x (no reduction before its main loop), and
// scales its sums by 1/rms = rsqrtf(sum / in + eps) at the end. Results equal rmsnorm_forward
// followed by the plain variant within bf16 rounding (not bit for bit: bf16 rounds x * w instead
// of x * w / rms, and the sum of squares runs in the block's order; the same for every _rmsnorm
// variant of one K and tile count). Block 0 also writes bf16(x * (1/rms) * norm_w) to x_norm_out
// ((n, in) bf16, row stride in, 16-byte aligned, apart from x; null: not kept), within one bf16 ulp
// of rmsnorm_forward's. Shared memory: n * (in + 8) * 2 bytes more than the plain variant.
//
// prepared (null: the prologue above): the RMSNorm already started by the residual GEMV that wrote
// x (NormHandoff; its norm_w must be this norm_w). The block then reads bf16(x * norm_w) from
// prepared->xw in its main loop and takes 1/rms from prepared->sumsq (one bulk copy to shared
// memory after griddepcontrol.wait): no prologue, and no shared memory for x. Results equal the
// prologue's within rounding (the same bf16(x * w); the sum of squares in another order).
struct NormHandoff;
void nvfp4_gemv_multi_rmsnorm(Context& ctx, const __nv_bfloat16* x, int64_t ldx, int64_t n,
                              const float* norm_w, float eps, const GemvTarget* targets, int count,
                              __nv_bfloat16* x_norm_out, const L2Prefetch& prefetch = {},
                              const NormHandoff* prepared = nullptr);
void nvfp4_gemv_swiglu_rmsnorm(Context& ctx, const __nv_bfloat16* x, int64_t ldx, int64_t n,
                               const float* norm_w, float eps, const Weight& wg, const Weight& wu,
                               __nv_bfloat16* out, int64_t ldo, __nv_bfloat16* x_norm_out,
                               const L2Prefetch& prefetch = {}, const NormHandoff* prepared = nullptr,
                               __nv_bfloat16* paired_out = nullptr);

// linear_forward's tensor-core GEMV with the RMSNorm in front, as above (the head after the final
// norm): y (n, w.out) BF16 or F32, row stride ldy, = rmsnorm(x) W^T * global. No bias.
void nvfp4_gemv_rmsnorm(Context& ctx, const __nv_bfloat16* x, int64_t ldx, int64_t n, const float* norm_w,
                        float eps, const Weight& w, void* y, DType y_dtype, int64_t ldy,
                        __nv_bfloat16* x_norm_out, const L2Prefetch& prefetch = {},
                        const NormHandoff* prepared = nullptr);

// The RMSNorm of a residual sum y (n, dim), started by the GEMV that writes y for the fused GEMV
// that reads it next: xw (n, dim) bf16 = bf16(y * norm_w) * norm_handoff_scale (exact: a power of
// two, so that one-token GEMVs can multiply it with codes held as e2m1 * 2^-126 and stay in fp32's
// normal range; row stride dim; element k at norm_handoff_index(k): each 8 elements in the order
// 0 4 1 5 2 6 3 7, the pairs {k, k + 4} that the tensor-core GEMV's B operand takes, so that it
// loads them without byte permutes; dim % 8 == 0), and sumsq (n, ld)
// fp32, column j the sum of squares of y's row over rows 16j .. 16j+15 of the producing weight
// (ld = norm_handoff_ld(dim): ceil(dim / 16) rounded up to 4, so each row is a 16-byte bulk copy).
// The consumer adds the columns in order: the 1/rms is deterministic, but not rmsnorm_forward's
// summation order. Both 16-byte aligned; the caller owns them (norm_handoff_bytes for n rows).
struct NormHandoff {
  const float* norm_w;  // (dim) fp32: the next RMSNorm's weight
  __nv_bfloat16* xw;
  float* sumsq;
};
constexpr float norm_handoff_scale = 0x1p64f;
__host__ __device__ constexpr int64_t norm_handoff_index(int64_t k) {
  return (k & ~int64_t{7}) | ((k & 3) << 1) | ((k >> 2) & 1);
}
int64_t norm_handoff_ld(int64_t dim);
size_t norm_handoff_bytes(int64_t n, int64_t dim);  // xw, then sumsq at norm_handoff_sumsq_offset
size_t norm_handoff_sumsq_offset(int64_t n, int64_t dim);

// y (n, out) = residual + bf16(x W^T + bias), one launch (o_proj and down_proj adding into the
// residual stream); the sum is taken in fp32 and rounded once, as add_forward does. y may alias
// residual (in-place add: each element is read and then written by the same thread), never x.
// handoff (null: none): also write the next RMSNorm's start (NormHandoff) for y. x_paired (null:
// none; one token, 16-byte aligned): x in pair order times norm_handoff_scale (a SwiGLU GEMV's
// paired_out), read instead of x by the block-diagonal main loop: the sums run in another order,
// results within fp32 rounding of the plain call's (before the bf16 rounding of y).
void nvfp4_gemv_residual(Context& ctx, const __nv_bfloat16* x, int64_t ldx, int64_t n, const Weight& w,
                         const float* bias, const __nv_bfloat16* residual, int64_t ldr, __nv_bfloat16* y,
                         int64_t ldy, const L2Prefetch& prefetch = {}, const NormHandoff* handoff = nullptr,
                         const __nv_bfloat16* x_paired = nullptr);

// The FFMA GEMV (8 lanes per row, fp32 dot products of 16-code blocks): linear_forward uses it for
// K % 32 != 0; bench_cuda_gemv times it as the baseline. Ordinary launch (no PDL). y BF16 or F32.
void nvfp4_gemv_ffma(Context& ctx, const __nv_bfloat16* x, int64_t ldx, int64_t n, const Weight& w,
                     const float* bias, void* y, DType y_dtype, int64_t ldy);

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
