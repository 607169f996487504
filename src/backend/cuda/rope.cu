#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/rope.cuh"

namespace nibble::cuda {
namespace {

// sincosf (not the fast __sinf): positions reach 10^5 and the argument must be reduced accurately,
// as torch's fp32 cos/sin do.
__device__ __forceinline__ void rotate(float x1, float x2, float angle, float scaling, bf16* o1, bf16* o2) {
  float s, c;
  sincosf(angle, &s, &c);
  s *= scaling;
  c *= scaling;
  *o1 = __float2bfloat16_rn(x1 * c - x2 * s);
  *o2 = __float2bfloat16_rn(x2 * c + x1 * s);
}

// One thread per (token, head, i < half).
__global__ void rope_kernel(bf16* x, int64_t stride, int64_t n, int64_t heads, int64_t half, int64_t pos0,
                            const int32_t* __restrict__ d_pos0, const float* __restrict__ inv_freq,
                            float scaling) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * heads * half) return;
  const int64_t i = idx % half;
  const int64_t h = (idx / half) % heads;
  const int64_t t = idx / (half * heads);
  const int64_t p = (d_pos0 ? *d_pos0 : pos0) + t;
  bf16* row = x + t * stride + h * 2 * half;
  rotate(__bfloat162float(row[i]), __bfloat162float(row[i + half]), static_cast<float>(p) * inv_freq[i],
         scaling, &row[i], &row[i + half]);
}

constexpr int kQkWarps = 4;
constexpr int kQkMaxPairs = 4;  // (i, i + half) pairs per lane: head_dim <= 2 * 32 * 4

// One warp per row r of the n * (hq + hkv) rows: token r / (hq + hkv), head r % (hq + hkv) (q heads
// first). Lane j owns the pairs (i, i + half) for i = j + 32 u.
__global__ void __launch_bounds__(kQkWarps* kWarp)
    qk_norm_rope_kernel(const bf16* q, int64_t qs, const bf16* k, int64_t ks, int64_t n, int hq, int hkv,
                        int half, const float* __restrict__ qw, const float* __restrict__ kw, float eps,
                        int64_t pos0, const int32_t* __restrict__ d_pos0, const float* __restrict__ inv_freq,
                        float scaling, bf16* qo, int64_t qos, bf16* ko, int64_t kos) {
  pdl_wait();  // q and k come from the previous kernel (launched with launch_pdl)
  pdl_launch_dependents();
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kQkWarps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (r >= n * (hq + hkv)) return;
  const int64_t t = r / (hq + hkv);
  const int h = static_cast<int>(r % (hq + hkv));
  const bool is_q = h < hq;
  const int hd = 2 * half;
  const bf16* in = is_q ? q + t * qs + h * hd : k + t * ks + (h - hq) * hd;
  bf16* out = is_q ? qo + t * qos + h * hd : ko + t * kos + (h - hq) * hd;
  const float* w = is_q ? qw : kw;

  float x1[kQkMaxPairs], x2[kQkMaxPairs];
  float ss = 0.0f;
#pragma unroll
  for (int u = 0; u < kQkMaxPairs; ++u) {
    const int i = lane + kWarp * u;
    x1[u] = i < half ? __bfloat162float(in[i]) : 0.0f;
    x2[u] = i < half ? __bfloat162float(in[i + half]) : 0.0f;
    ss = fmaf(x1[u], x1[u], fmaf(x2[u], x2[u], ss));
  }
  if (w) {
    const float inv = rsqrtf(warp_sum(ss) / static_cast<float>(hd) + eps);
#pragma unroll
    for (int u = 0; u < kQkMaxPairs; ++u) {
      const int i = lane + kWarp * u;
      if (i < half) {  // the rounding of rmsnorm_forward's bf16 output
        x1[u] = __bfloat162float(__float2bfloat16_rn(x1[u] * inv * w[i]));
        x2[u] = __bfloat162float(__float2bfloat16_rn(x2[u] * inv * w[i + half]));
      }
    }
  }
  const float p = static_cast<float>((d_pos0 ? *d_pos0 : pos0) + t);
#pragma unroll
  for (int u = 0; u < kQkMaxPairs; ++u) {
    const int i = lane + kWarp * u;
    if (i < half) rotate(x1[u], x2[u], p * inv_freq[i], scaling, &out[i], &out[i + half]);
  }
}

}  // namespace

void rope_forward(Context& ctx, bf16* x, int64_t stride, int64_t n, int64_t heads, int64_t head_dim,
                  int64_t pos0, const int32_t* d_pos0, const float* inv_freq, float attention_scaling) {
  if (head_dim % 2 != 0) fail("rope_forward: odd head_dim {}", head_dim);
  const int64_t total = n * heads * (head_dim / 2);
  if (total == 0) return;
  rope_kernel<<<static_cast<unsigned>(ceil_div(total, 256)), 256, 0, ctx.stream()>>>(
      x, stride, n, heads, head_dim / 2, pos0, d_pos0, inv_freq, attention_scaling);
  CUDA_CHECK_LAUNCH();
}

void qk_norm_rope_forward(Context& ctx, const bf16* q, int64_t q_stride, const bf16* k, int64_t k_stride,
                          int64_t n, int64_t hq, int64_t hkv, int64_t head_dim, const float* q_norm,
                          const float* k_norm, float eps, int64_t pos0, const int32_t* d_pos0,
                          const float* inv_freq, float attention_scaling, bf16* q_out, int64_t q_out_stride,
                          bf16* k_out, int64_t k_out_stride) {
  if (head_dim % 2 != 0 || head_dim > 2 * kWarp * kQkMaxPairs)
    fail("qk_norm_rope_forward: head_dim {} (even, at most {} expected)", head_dim, 2 * kWarp * kQkMaxPairs);
  if ((q_norm == nullptr) != (k_norm == nullptr))
    fail("qk_norm_rope_forward: q_norm and k_norm must be given together");
  const int64_t rows = n * (hq + hkv);
  if (rows == 0) return;
  launch_pdl(ctx, qk_norm_rope_kernel, dim3(static_cast<unsigned>(ceil_div(rows, kQkWarps))),
             dim3(kQkWarps * kWarp), 0, q, q_stride, k, k_stride, n, static_cast<int>(hq),
             static_cast<int>(hkv), static_cast<int>(head_dim / 2), q_norm, k_norm, eps, pos0, d_pos0,
             inv_freq, attention_scaling, q_out, q_out_stride, k_out, k_out_stride);
}

}  // namespace nibble::cuda
