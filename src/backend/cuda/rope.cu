#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/qk_rope_row.cuh"
#include "backend/cuda/rope.cuh"

namespace nibble::cuda {
namespace {

__device__ __forceinline__ __nv_bfloat162 rotate(float x1, float x2, float angle, float scaling) {
  return rotate(x1, x2, rotation(angle, scaling));
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
  const __nv_bfloat162 o = rotate(__bfloat162float(row[i]), __bfloat162float(row[i + half]),
                                  static_cast<float>(p) * inv_freq[i], scaling);
  row[i] = o.x;
  row[i + half] = o.y;
}

constexpr int kQkWarps = 4;

// Where qk_norm_rope_kernel<true, KV> appends the rotated k rows and the v rows: one layer of the
// KV cache.
struct KvAppend {
  const bf16* v;  // (n, hkv, hd), token stride vs
  int64_t vs;
  void* kc;  // (hkv, cap, hd) of KV
  void* vc;
  int64_t cap;
};

// One warp per row r of the n * (hq + hkv) rows, or n * (hq + 2 hkv) with APPEND: token
// r / heads, head r % heads (q heads, then k heads, then the v heads that are only copied to the
// cache). Lane j owns the pairs (i, i + half) for i = j + 32 u. With APPEND, a k row goes to
// k_out and to the cache, a v row to the cache, at position pos0 + token when that is below cap.
// Before griddepcontrol.wait each lane reads what the previous kernel does not write -- the
// position (step inputs, uploaded before the step), its norm weights -- and computes its rotations,
// so that after the wait only the row's load, its norm and the stores remain.
template <bool APPEND, KvType KV>
__global__ void __launch_bounds__(kQkWarps* kWarp)
    qk_norm_rope_kernel(const bf16* q, int64_t qs, const bf16* k, int64_t ks, int64_t n, int hq, int hkv,
                        int half, const float* __restrict__ qw, const float* __restrict__ kw, float eps,
                        int64_t pos0, const int32_t* __restrict__ d_pos0, const float* __restrict__ inv_freq,
                        float scaling, bf16* qo, int64_t qos, bf16* ko, int64_t kos, KvAppend kv) {
  const int heads = hq + hkv + (APPEND ? hkv : 0);
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kQkWarps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  const bool row = r < n * heads;
  const int64_t t = row ? r / heads : 0;
  const int h = row ? static_cast<int>(r % heads) : 0;
  const int hd = 2 * half;
  const int64_t pos = (d_pos0 ? *d_pos0 : pos0) + t;
  const bool is_q = h < hq, is_v = APPEND && h >= hq + hkv;
  const QkLane prep = qk_lane_prepare(lane, half, row && !is_v, is_q ? qw : kw, pos, inv_freq, scaling);
  pdl_wait();  // q, k and v come from the previous kernel (launched with launch_pdl)
  pdl_launch_dependents();
  if (!row) return;
  // The cache row of this token for KV head g (null past the capacity: a device pos0 past its bound).
  auto cache_row = [&](void* cache, int g) -> void* {
    if (pos >= kv.cap) return nullptr;
    constexpr int64_t bytes = KV == KvType::BF16 ? 2 : 1;
    return static_cast<char*>(cache) + (g * kv.cap + pos) * hd * bytes;
  };
  if (is_v) {  // a v row: copied to the cache as it is
    const int g = h - hq - hkv;
    void* dst = cache_row(kv.vc, g);
    if (dst == nullptr) return;
    const bf16* in = kv.v + t * kv.vs + g * hd;
#pragma unroll
    for (int u = 0; u < kQkMaxPairs; ++u) {
      const int i = lane + kWarp * u;
      if (i < half) store_pair<KV>(dst, i, half, __halves2bfloat162(in[i], in[i + half]));
    }
    return;
  }
  const bf16* in = is_q ? q + t * qs + h * hd : k + t * ks + (h - hq) * hd;
  bf16* out = is_q ? qo + t * qos + h * hd : ko + t * kos + (h - hq) * hd;

  __nv_bfloat162 o[kQkMaxPairs];
  qk_lane_apply(in, lane, half, qw != nullptr, eps, prep, o);
  void* cached = APPEND && !is_q ? cache_row(kv.kc, h - hq) : nullptr;
#pragma unroll
  for (int u = 0; u < kQkMaxPairs; ++u) {
    const int i = lane + kWarp * u;
    if (i >= half) continue;
    out[i] = o[u].x;
    out[i + half] = o[u].y;
    if (cached) store_pair<KV>(cached, i, half, o[u]);
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
  check_qk_args("qk_norm_rope_forward", head_dim, q_norm, k_norm);
  const int64_t rows = n * (hq + hkv);
  if (rows == 0) return;
  launch_pdl(ctx, qk_norm_rope_kernel<false, KvType::BF16>,
             dim3(static_cast<unsigned>(ceil_div(rows, kQkWarps))), dim3(kQkWarps * kWarp), 0, q, q_stride, k,
             k_stride, n, static_cast<int>(hq), static_cast<int>(hkv), static_cast<int>(head_dim / 2), q_norm,
             k_norm, eps, pos0, d_pos0, inv_freq, attention_scaling, q_out, q_out_stride, k_out, k_out_stride,
             KvAppend{});
}

void qk_norm_rope_kv_forward(Context& ctx, const bf16* q, int64_t q_stride, const bf16* k, int64_t k_stride,
                             const bf16* v, int64_t v_stride, int64_t n, int64_t hq, int64_t hkv,
                             int64_t head_dim, const float* q_norm, const float* k_norm, float eps,
                             int64_t pos0, const int32_t* d_pos0, const float* inv_freq,
                             float attention_scaling, bf16* q_out, int64_t q_out_stride, bf16* k_out,
                             int64_t k_out_stride, void* k_cache, void* v_cache, KvType kv_type,
                             int64_t capacity) {
  check_qk_args("qk_norm_rope_kv_forward", head_dim, q_norm, k_norm);
  if (pos0 < 0 || pos0 + n > capacity)
    fail("qk_norm_rope_kv_forward: positions [{}, {}) outside the cache capacity {}", pos0, pos0 + n,
         capacity);
  const int64_t rows = n * (hq + 2 * hkv);
  if (rows == 0) return;
  const KvAppend kv{v, v_stride, k_cache, v_cache, capacity};
  const auto kernel = kv_type == KvType::BF16 ? qk_norm_rope_kernel<true, KvType::BF16>
                                              : qk_norm_rope_kernel<true, KvType::FP8_E4M3>;
  launch_pdl(ctx, kernel, dim3(static_cast<unsigned>(ceil_div(rows, kQkWarps))), dim3(kQkWarps * kWarp), 0, q,
             q_stride, k, k_stride, n, static_cast<int>(hq), static_cast<int>(hkv),
             static_cast<int>(head_dim / 2), q_norm, k_norm, eps, pos0, d_pos0, inv_freq, attention_scaling,
             q_out, q_out_stride, k_out, k_out_stride, kv);
}

}  // namespace nibble::cuda
