// The SIMT attention kernel over a BF16 cache (attention_simt.cuh).
#include <algorithm>

#include "backend/cuda/attention_simt.cuh"
#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"

namespace nibble::cuda {
namespace {

// ---- SIMT kernel (BF16 cache, prefill-sized n) ------------------------------------------------------
constexpr int kTileKeys = 32;    // keys per shared-memory tile: one per lane for q·k
constexpr int kRowsPerWarp = 4;  // query rows a warp carries (K/V smem reads shared by them)

struct Params {
  const bf16* q;  // (n, H, hd), token stride q_stride
  int64_t q_stride;
  int64_t n, pos0;
  const int32_t* d_pos0;  // null, or pos0 on the device (then pos0 is its upper bound)
  const bf16* kc;         // (KVH, cap, hd)
  const bf16* vc;
  int64_t cap;
  int heads, kv_heads, hd, group;
  float scale_log2;  // softmax scale * log2(e): exp2 of scaled scores
  bf16* out;         // (n, H, hd), token stride out_stride
  int64_t out_stride;
};

// grid (ceil(n*G / ROWS), KVH); block WARPS warps. Rows r = i*G + g of KV head kvh are query
// token i, head kvh*G + g. Each warp owns kRowsPerWarp rows; lane j scores key j of the tile, then
// the lanes split head_dim (d = lane + 32 t) for p·V.
// Shared memory: q (ROWS, hd) bf16 | K tile (32, hd+2) bf16 (the +2 makes the per-lane row reads of
// q·k fall in distinct banks) | V tile (32, hd) bf16.
template <int WARPS, int DPL>
__global__ void __launch_bounds__(WARPS* kWarp) simt_attention_kernel(Params p) {
  constexpr int ROWS = WARPS * kRowsPerWarp;
  extern __shared__ __align__(16) unsigned char smem[];
  const int hd = p.hd, kstride = hd + 2;
  bf16* q_s = reinterpret_cast<bf16*>(smem);
  bf16* k_s = q_s + ROWS * hd;
  bf16* v_s = k_s + kTileKeys * kstride;

  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int kvh = blockIdx.y;
  const int64_t pos0 = p.d_pos0 ? *p.d_pos0 : p.pos0;
  const int64_t rows_total = p.n * p.group;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * ROWS;

  // Stage q rows (zeros for rows past the end).
  for (int idx = threadIdx.x; idx < ROWS * hd / 8; idx += WARPS * kWarp) {
    const int lr = idx / (hd / 8), col = (idx % (hd / 8)) * 8;
    const int64_t r = r0 + lr;
    Bf16x8 v{};
    if (r < rows_total) {
      const int64_t i = r / p.group, h = kvh * p.group + r % p.group;
      v = *reinterpret_cast<const Bf16x8*>(p.q + i * p.q_stride + h * hd + col);
    }
    *reinterpret_cast<Bf16x8*>(q_s + lr * hd + col) = v;
  }

  // Keys this block may need: up to the last row's causal limit.
  const int64_t last_i = std::min<int64_t>(p.n - 1, (std::min(r0 + ROWS, rows_total) - 1) / p.group);
  const int64_t kbeg = 0, kend = pos0 + last_i + 1;

  int64_t row_pos[kRowsPerWarp];  // causal limit of each of this warp's rows (-1: no row)
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][DPL];
#pragma unroll
  for (int j = 0; j < kRowsPerWarp; ++j) {
    const int64_t r = r0 + warp * kRowsPerWarp + j;
    row_pos[j] = r < rows_total ? pos0 + r / p.group : -1;
    m[j] = -INFINITY;
    l[j] = 0.0f;
#pragma unroll
    for (int t = 0; t < DPL; ++t) acc[j][t] = 0.0f;
  }

  const bf16* kbase = p.kc + static_cast<int64_t>(kvh) * p.cap * hd;
  const bf16* vbase = p.vc + static_cast<int64_t>(kvh) * p.cap * hd;
  for (int64_t t0 = kbeg; t0 < kend; t0 += kTileKeys) {
    __syncthreads();  // previous tile consumed (and q staged, first time)
    for (int idx = threadIdx.x; idx < kTileKeys * hd / 8; idx += WARPS * kWarp) {
      const int j = idx / (hd / 8), col = (idx % (hd / 8)) * 8;
      Bf16x8 kv{}, vv{};
      if (t0 + j < kend) {
        kv = *reinterpret_cast<const Bf16x8*>(kbase + (t0 + j) * hd + col);
        vv = *reinterpret_cast<const Bf16x8*>(vbase + (t0 + j) * hd + col);
      }
      uint32_t* kd = reinterpret_cast<uint32_t*>(k_s + j * kstride + col);  // 4-byte aligned rows
      const uint32_t* ks = reinterpret_cast<const uint32_t*>(&kv);
#pragma unroll
      for (int w = 0; w < 4; ++w) kd[w] = ks[w];
      *reinterpret_cast<Bf16x8*>(v_s + j * hd + col) = vv;
    }
    __syncthreads();

    // Scores: lane owns key t0 + lane.
    float s[kRowsPerWarp];
#pragma unroll
    for (int j = 0; j < kRowsPerWarp; ++j) s[j] = 0.0f;
    const __nv_bfloat162* krow = reinterpret_cast<const __nv_bfloat162*>(k_s + lane * kstride);
    const __nv_bfloat162* qrow = reinterpret_cast<const __nv_bfloat162*>(q_s + warp * kRowsPerWarp * hd);
#pragma unroll 4
    for (int d2 = 0; d2 < hd / 2; ++d2) {
      const float2 kf = __bfloat1622float2(krow[d2]);
#pragma unroll
      for (int j = 0; j < kRowsPerWarp; ++j) {
        const float2 qf = __bfloat1622float2(qrow[j * hd / 2 + d2]);
        s[j] = fmaf(qf.x, kf.x, fmaf(qf.y, kf.y, s[j]));
      }
    }
    const int64_t key = t0 + lane;
    float pr[kRowsPerWarp];
#pragma unroll
    for (int j = 0; j < kRowsPerWarp; ++j) {
      const bool visible = key < kend && key <= row_pos[j];
      const float sj = visible ? s[j] * p.scale_log2 : -INFINITY;
      const float m_new = fmaxf(m[j], warp_max(sj));
      // A row with no visible key yet keeps m = -inf: its p and correction must not become NaN.
      const float corr = m_new == -INFINITY ? 1.0f : exp2f(m[j] - m_new);
      pr[j] = m_new == -INFINITY ? 0.0f : exp2f(sj - m_new);
      l[j] = l[j] * corr + warp_sum(pr[j]);
      m[j] = m_new;
#pragma unroll
      for (int t = 0; t < DPL; ++t) acc[j][t] *= corr;
    }
    // p·V: lane owns dims lane + 32 t.
    const int nkeys = static_cast<int>(std::min<int64_t>(kTileKeys, kend - t0));
    for (int kk = 0; kk < nkeys; ++kk) {
      float pk[kRowsPerWarp];
#pragma unroll
      for (int j = 0; j < kRowsPerWarp; ++j) pk[j] = __shfl_sync(0xffffffffu, pr[j], kk);
#pragma unroll
      for (int t = 0; t < DPL; ++t) {
        const int d = lane + kWarp * t;
        if (d < hd) {
          const float v = __bfloat162float(v_s[kk * hd + d]);
#pragma unroll
          for (int j = 0; j < kRowsPerWarp; ++j) acc[j][t] = fmaf(pk[j], v, acc[j][t]);
        }
      }
    }
  }

#pragma unroll
  for (int j = 0; j < kRowsPerWarp; ++j) {
    if (row_pos[j] < 0) continue;
    const int64_t r = r0 + warp * kRowsPerWarp + j;
    const int64_t i = r / p.group, h = kvh * p.group + r % p.group;
    const float inv = l[j] > 0.0f ? 1.0f / l[j] : 0.0f;
    bf16* o = p.out + i * p.out_stride + h * hd;
#pragma unroll
    for (int t = 0; t < DPL; ++t) {
      const int d = lane + kWarp * t;
      if (d < hd) o[d] = __float2bfloat16_rn(acc[j][t] * inv);
    }
  }
}

int dims_per_lane(int64_t hd) { return hd <= 32 ? 1 : hd <= 64 ? 2 : hd <= 128 ? 4 : 8; }

size_t smem_bytes(int warps, int64_t hd) {
  return static_cast<size_t>(warps * kRowsPerWarp * hd + kTileKeys * (hd + 2) + kTileKeys * hd) * 2;
}

template <int WARPS, int DPL>
void launch_simt(Context& ctx, const Params& p, dim3 grid) {
  const size_t smem = smem_bytes(WARPS, p.hd);
  if (smem > 48 * 1024)  // the largest any head_dim asks of this kernel, set once
    ctx.kernel_setup(reinterpret_cast<const void*>(simt_attention_kernel<WARPS, DPL>), [&] {
      CUDA_CHECK(cudaFuncSetAttribute(simt_attention_kernel<WARPS, DPL>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(ctx.info().smem_per_block_optin)));
    });
  simt_attention_kernel<WARPS, DPL><<<grid, WARPS * kWarp, smem, ctx.stream()>>>(p);
  CUDA_CHECK_LAUNCH();
}

template <int WARPS>
void launch_simt_dpl(Context& ctx, const Params& p, dim3 grid) {
  switch (dims_per_lane(p.hd)) {
    case 1:
      return launch_simt<WARPS, 1>(ctx, p, grid);
    case 2:
      return launch_simt<WARPS, 2>(ctx, p, grid);
    case 4:
      return launch_simt<WARPS, 4>(ctx, p, grid);
    default:
      return launch_simt<WARPS, 8>(ctx, p, grid);
  }
}

}  // namespace

void attention_simt(Context& ctx, const bf16* q, int64_t q_stride, int64_t n, int64_t pos0,
                    const int32_t* d_pos0, const bf16* k_cache, const bf16* v_cache, const AttentionShape& s,
                    float scale, bf16* out, int64_t out_stride) {
  Params p{};
  p.q = q, p.q_stride = q_stride, p.n = n, p.pos0 = pos0, p.d_pos0 = d_pos0;
  p.kc = k_cache, p.vc = v_cache, p.cap = s.capacity;
  p.heads = static_cast<int>(s.heads), p.kv_heads = static_cast<int>(s.kv_heads);
  p.hd = static_cast<int>(s.head_dim), p.group = static_cast<int>(s.heads / s.kv_heads);
  p.scale_log2 = scale * kLog2e;
  p.out = out, p.out_stride = out_stride;
  // Small row counts get one-warp blocks (no idle warps), larger ones four-warp blocks.
  const int64_t rows = n * p.group;
  const int warps = rows <= 2 * kRowsPerWarp ? 1 : 4;
  const dim3 grid(static_cast<unsigned>(ceil_div(rows, warps * kRowsPerWarp)),
                  static_cast<unsigned>(s.kv_heads));
  if (warps == 1)
    launch_simt_dpl<1>(ctx, p, grid);
  else
    launch_simt_dpl<4>(ctx, p, grid);
}

}  // namespace nibble::cuda
