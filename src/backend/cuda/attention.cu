#include <algorithm>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"

namespace nibble::cuda {
namespace {

constexpr int kTileKeys = 32;           // keys per shared-memory tile: one per lane for q·k
constexpr int kRowsPerWarp = 4;         // query rows a warp carries (K/V smem reads shared by them)
constexpr int kMaxSplits = 64;          // split-KV partitions at most
constexpr int64_t kSplitMaxTokens = 8;  // split-KV only for decode-sized n (scratch is planned for it)
constexpr int64_t kMinKeysPerSplit = 256;
constexpr float kLog2e = 1.4426950408889634f;

struct Params {
  const bf16* q;  // (n, H, hd), token stride q_stride
  int64_t q_stride;
  int64_t n, pos0;
  const bf16* kc;  // (KVH, cap, hd)
  const bf16* vc;
  int64_t cap;
  int heads, kv_heads, hd, group;
  float scale_log2;  // softmax scale * log2(e): exp2 of scaled scores
  bf16* out;         // (n, H, hd), token stride out_stride
  int64_t out_stride;
  int64_t split_len;  // keys per split (a multiple of kTileKeys)
  float* part_o;      // (splits, n*H, hd) unnormalised partial outputs, splits > 1 only
  float* part_ml;     // (splits, n*H, 2) running max (log2 domain) and sum
};

// grid (ceil(n*G / ROWS), KVH, splits); block WARPS warps. Rows r = i*G + g of KV head kvh are query
// token i, head kvh*G + g. Each warp owns kRowsPerWarp rows; lane j scores key j of the tile, then
// the lanes split head_dim (d = lane + 32 t) for p·V.
// Shared memory: q (ROWS, hd) bf16 | K tile (32, hd+2) bf16 (the +2 makes the per-lane row reads of
// q·k fall in distinct banks) | V tile (32, hd) bf16.
template <int WARPS, int DPL>
__global__ void __launch_bounds__(WARPS* kWarp) attention_kernel(Params p) {
  constexpr int ROWS = WARPS * kRowsPerWarp;
  extern __shared__ __align__(16) unsigned char smem[];
  const int hd = p.hd, kstride = hd + 2;
  bf16* q_s = reinterpret_cast<bf16*>(smem);
  bf16* k_s = q_s + ROWS * hd;
  bf16* v_s = k_s + kTileKeys * kstride;

  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int kvh = blockIdx.y, split = blockIdx.z;
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

  // Keys this block may need: its split's range, cut at the last row's causal limit.
  const int64_t last_i = std::min<int64_t>(p.n - 1, (std::min(r0 + ROWS, rows_total) - 1) / p.group);
  const int64_t kbeg = split * p.split_len;
  const int64_t kend = std::min(kbeg + p.split_len, p.pos0 + last_i + 1);

  int64_t row_pos[kRowsPerWarp];  // causal limit of each of this warp's rows (-1: no row)
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][DPL];
#pragma unroll
  for (int j = 0; j < kRowsPerWarp; ++j) {
    const int64_t r = r0 + warp * kRowsPerWarp + j;
    row_pos[j] = r < rows_total ? p.pos0 + r / p.group : -1;
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
    if (gridDim.z == 1) {
      const float inv = l[j] > 0.0f ? 1.0f / l[j] : 0.0f;
      bf16* o = p.out + i * p.out_stride + h * hd;
#pragma unroll
      for (int t = 0; t < DPL; ++t) {
        const int d = lane + kWarp * t;
        if (d < hd) o[d] = __float2bfloat16_rn(acc[j][t] * inv);
      }
    } else {
      const int64_t prow = (static_cast<int64_t>(split) * p.n + i) * p.heads + h;
      float* o = p.part_o + prow * hd;
#pragma unroll
      for (int t = 0; t < DPL; ++t) {
        const int d = lane + kWarp * t;
        if (d < hd) o[d] = acc[j][t];
      }
      if (lane == 0) {
        p.part_ml[2 * prow] = m[j];
        p.part_ml[2 * prow + 1] = l[j];
      }
    }
  }
}

// Merges the splits' partial results: grid (n*H), block head_dim threads.
// O = sum_s 2^(m_s - M) o_s / sum_s 2^(m_s - M) l_s, M = max_s m_s.
__global__ void attention_combine_kernel(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                         int splits, int64_t rows, int64_t heads, int hd, bf16* out,
                                         int64_t out_stride) {
  const int64_t row = blockIdx.x;  // i * H + h
  const int d = threadIdx.x;
  float mmax = -INFINITY;
  for (int s = 0; s < splits; ++s) mmax = fmaxf(mmax, part_ml[2 * (s * rows + row)]);
  float num = 0.0f, den = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float ms = part_ml[2 * (s * rows + row)];
    if (ms == -INFINITY) continue;  // a split with no visible key
    const float w = exp2f(ms - mmax);
    den += w * part_ml[2 * (s * rows + row) + 1];
    num += w * part_o[(s * rows + row) * hd + d];
  }
  const int64_t i = row / heads, h = row % heads;
  out[i * out_stride + h * hd + d] = __float2bfloat16_rn(den > 0.0f ? num / den : 0.0f);
}

__global__ void kv_write_kernel(const bf16* k, int64_t ks, const bf16* v, int64_t vs, int64_t n, int64_t pos0,
                                bf16* kc, bf16* vc, int64_t kv_heads, int64_t hd, int64_t cap) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // one per 8 elements
  const int64_t per_token = kv_heads * hd / 8;
  if (idx >= n * per_token) return;
  const int64_t i = idx / per_token, e = (idx % per_token) * 8;
  const int64_t g = e / hd, col = e % hd;
  const int64_t dst = (g * cap + pos0 + i) * hd + col;
  *reinterpret_cast<Bf16x8*>(kc + dst) = *reinterpret_cast<const Bf16x8*>(k + i * ks + e);
  *reinterpret_cast<Bf16x8*>(vc + dst) = *reinterpret_cast<const Bf16x8*>(v + i * vs + e);
}

int dims_per_lane(int64_t hd) { return hd <= 32 ? 1 : hd <= 64 ? 2 : hd <= 128 ? 4 : 8; }

size_t smem_bytes(int warps, int64_t hd) {
  return static_cast<size_t>(warps * kRowsPerWarp * hd + kTileKeys * (hd + 2) + kTileKeys * hd) * 2;
}

template <int WARPS, int DPL>
void launch(Context& ctx, const Params& p, dim3 grid) {
  const size_t smem = smem_bytes(WARPS, p.hd);
  if (smem > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<WARPS, DPL>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)));
  attention_kernel<WARPS, DPL><<<grid, WARPS * kWarp, smem, ctx.stream()>>>(p);
  CUDA_CHECK_LAUNCH();
}

template <int WARPS>
void launch_dpl(Context& ctx, const Params& p, dim3 grid) {
  switch (dims_per_lane(p.hd)) {
    case 1:
      return launch<WARPS, 1>(ctx, p, grid);
    case 2:
      return launch<WARPS, 2>(ctx, p, grid);
    case 4:
      return launch<WARPS, 4>(ctx, p, grid);
    default:
      return launch<WARPS, 8>(ctx, p, grid);
  }
}

}  // namespace

void check_attention_shape(const AttentionShape& s) {
  if (s.heads <= 0 || s.kv_heads <= 0 || s.heads % s.kv_heads != 0)
    fail("attention: {} query heads over {} KV heads (a positive multiple expected)", s.heads, s.kv_heads);
  if (s.head_dim % 8 != 0 || s.head_dim <= 0 || s.head_dim > 256)
    fail("attention: head_dim {} (the CUDA kernels need a multiple of 8, at most 256)", s.head_dim);
}

void kv_cache_write(Context& ctx, const bf16* k, int64_t k_stride, const bf16* v, int64_t v_stride, int64_t n,
                    int64_t pos0, bf16* k_cache, bf16* v_cache, const AttentionShape& s) {
  check_attention_shape(s);
  if (pos0 < 0 || pos0 + n > s.capacity)
    fail("kv_cache_write: positions [{}, {}) outside the cache capacity {}", pos0, pos0 + n, s.capacity);
  if (!aligned16(k) || !aligned16(v) || k_stride % 8 || v_stride % 8)
    fail("kv_cache_write: k and v must be 16-byte aligned with strides % 8 == 0");
  const int64_t total = n * s.kv_heads * s.head_dim / 8;
  if (total == 0) return;
  kv_write_kernel<<<static_cast<unsigned>(ceil_div(total, 256)), 256, 0, ctx.stream()>>>(
      k, k_stride, v, v_stride, n, pos0, k_cache, v_cache, s.kv_heads, s.head_dim, s.capacity);
  CUDA_CHECK_LAUNCH();
}

size_t attention_scratch_bytes(const AttentionShape& s, int64_t n) {
  const int64_t rows = std::min(n, kSplitMaxTokens) * s.heads;
  return static_cast<size_t>(kMaxSplits) * rows * (s.head_dim + 2) * sizeof(float);
}

void attention_forward(Context& ctx, const bf16* q, int64_t q_stride, int64_t n, int64_t pos0,
                       const bf16* k_cache, const bf16* v_cache, const AttentionShape& s, float scale,
                       bf16* out, int64_t out_stride, Scratch scratch) {
  check_attention_shape(s);
  if (n == 0) return;
  if (pos0 < 0 || pos0 + n > s.capacity)
    fail("attention: positions [{}, {}) outside the cache capacity {}", pos0, pos0 + n, s.capacity);
  if (!aligned16(q) || q_stride % 8) fail("attention: q must be 16-byte aligned with q_stride % 8 == 0");
  Params p{};
  p.q = q, p.q_stride = q_stride, p.n = n, p.pos0 = pos0;
  p.kc = k_cache, p.vc = v_cache, p.cap = s.capacity;
  p.heads = static_cast<int>(s.heads), p.kv_heads = static_cast<int>(s.kv_heads);
  p.hd = static_cast<int>(s.head_dim), p.group = static_cast<int>(s.heads / s.kv_heads);
  p.scale_log2 = scale * kLog2e;
  p.out = out, p.out_stride = out_stride;

  // Decode-sized row counts get one-warp blocks (no idle warps); prefill gets four-warp blocks.
  const int64_t rows = n * p.group;
  const int warps = rows <= 2 * kRowsPerWarp ? 1 : 4;
  const int64_t row_blocks = ceil_div(rows, warps * kRowsPerWarp);
  const int64_t keys = pos0 + n;
  int64_t splits = 1;
  const int64_t base = row_blocks * s.kv_heads, target = 2 * ctx.info().sm_count;
  if (n <= kSplitMaxTokens && base < target) {
    splits = std::min<int64_t>({ceil_div(target, base), ceil_div(keys, kMinKeysPerSplit), kMaxSplits});
    const size_t per_split = static_cast<size_t>(n * s.heads) * (s.head_dim + 2) * sizeof(float);
    splits = std::min<int64_t>(splits, static_cast<int64_t>(scratch.bytes / per_split));
    splits = std::max<int64_t>(splits, 1);
  }
  p.split_len = ceil_div(ceil_div(keys, splits), kTileKeys) * kTileKeys;
  splits = ceil_div(keys, p.split_len);
  if (splits > 1) {
    p.part_o = static_cast<float*>(scratch.ptr);
    p.part_ml = p.part_o + splits * n * s.heads * s.head_dim;
  }
  const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(s.kv_heads),
                  static_cast<unsigned>(splits));
  if (warps == 1)
    launch_dpl<1>(ctx, p, grid);
  else
    launch_dpl<4>(ctx, p, grid);
  if (splits > 1) {
    attention_combine_kernel<<<static_cast<unsigned>(n * s.heads), static_cast<unsigned>(s.head_dim), 0,
                               ctx.stream()>>>(p.part_o, p.part_ml, static_cast<int>(splits), n * s.heads,
                                               s.heads, p.hd, out, out_stride);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace nibble::cuda
