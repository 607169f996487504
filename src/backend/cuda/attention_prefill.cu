#include <cuda_fp8.h>

#include <algorithm>
#include <climits>

#include "backend/cuda/async_copy.cuh"
#include "backend/cuda/attention_prefill.cuh"
#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/mma.cuh"

namespace nibble::cuda {
namespace {

constexpr int kWarps = 4;  // warps per block
constexpr int kKeys = 64;  // keys per K/V tile

// Shared-memory layout of one block. Rows of bf16 are stored in 16-byte chunks whose index is XORed
// with (row & 7): the 8 row addresses of one ldmatrix (and the 16-byte cp.async stores) then fall
// in 8 distinct bank groups although every row starts at the same bank.
//   q_s  (ROWS, HD) bf16: the block's query rows; reused per warp to stage its output rows
//   k_s  (BF16_STAGES, KEYS, HD) bf16, v_s likewise: K/V tiles (two stages: cp.async double buffer)
//   k8_s (2, KEYS, HD) e4m3, v8_s likewise (FP8 only): the cp.async stages, converted to bf16 in
//        k_s / v_s (one stage) before use
template <int HD, int MT, bool FP8>
struct Tile {
  static constexpr int kRows = kWarps * 16 * MT;  // query rows per block (16 * MT per warp)
  static constexpr int kChunks = HD / 8;          // 16-byte chunks per bf16 row
  static constexpr int kBf16Stages = FP8 ? 1 : 2;
  static constexpr int kQBytes = kRows * HD * 2;
  static constexpr int kTileBytes = kKeys * HD * 2;
  static constexpr int kFp8TileBytes = kKeys * HD;
  static constexpr int kK = kQBytes;
  static constexpr int kV = kK + kBf16Stages * kTileBytes;
  static constexpr int kK8 = kV + kBf16Stages * kTileBytes;
  static constexpr int kV8 = kK8 + 2 * kFp8TileBytes;
  static constexpr int kBytes = FP8 ? kV8 + 2 * kFp8TileBytes : kK8;
  static_assert(HD % 16 == 0 && kChunks >= 8, "swizzle needs at least 8 chunks per row");
};

__device__ __forceinline__ int swz(int row, int chunk, int chunks) {
  return row * chunks + (chunk ^ (row & 7));
}

struct Params {
  const bf16* q;  // (n, H, hd), token stride q_stride
  int64_t q_stride;
  int pos0;
  const void* kc;  // (KVH, cap, hd) bf16 or e4m3
  const void* vc;
  int64_t cap;
  int group, kv_heads;
  int64_t rows;      // n * group: packed query rows per KV head
  int row_blocks;    // ceil(rows / block rows)
  float scale_log2;  // softmax scale * log2(e)
  bf16* out;         // (n, H, hd), token stride out_stride
  int64_t out_stride;
};

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// 2^x on the special-function unit, subnormal results flushed to zero (they are below any weight
// that could matter next to the row maximum's 1).
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Two e4m3 codes -> two bf16 (exact: e4m3 values are representable in f16 and bf16).
__device__ __forceinline__ uint32_t fp8x2_to_bf16x2(uint16_t v) {
  const __half2 h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(v), __NV_E4M3);
  const float2 f = __half22float2(h);
  return pack_bf16(f.x, f.y);
}

// One block: rows [r0, r0 + ROWS) of KV head kvh; grid = row_blocks * KVH, the heaviest (latest)
// row blocks first so that the causal triangle's long blocks do not form the last wave.
// Warp w owns rows [w*16*MT, (w+1)*16*MT); in the mma fragments lane holds rows g = lane/4 and g+8
// of each 16-row slice and columns 2*(lane%4) + {0,1} of each 8-column tile.
template <int HD, int MT, bool FP8>
__global__ void __launch_bounds__(kWarps* kWarp) attention_prefill_kernel(const Params p) {
  using T = Tile<HD, MT, FP8>;
  constexpr int ROWS = T::kRows, CH = T::kChunks, SUB = kKeys / MT;
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* q_s = smem;
  const uint32_t q_u = smem_u32(smem), k_u = q_u + T::kK, v_u = q_u + T::kV;

  const int tid = threadIdx.x, warp = tid / kWarp, lane = tid % kWarp;
  const int kvh = blockIdx.x % p.kv_heads;
  const int rb = p.row_blocks - 1 - static_cast<int>(blockIdx.x / p.kv_heads);
  const int64_t r0 = static_cast<int64_t>(rb) * ROWS;
  const int64_t r_last = std::min<int64_t>(r0 + ROWS, p.rows) - 1;
  const int G = p.group;
  const int pmin = p.pos0 + static_cast<int>(r0 / G), pmax = p.pos0 + static_cast<int>(r_last / G);
  const int ntiles = pmax / kKeys + 1;  // keys [0, pmax] are all this block reads

  // Query rows -> q_s (zeros past the end).
  for (int idx = tid; idx < ROWS * CH; idx += kWarps * kWarp) {
    const int lr = idx / CH, c = idx % CH;
    const int64_t r = r0 + lr;
    const bool valid = r < p.rows;
    const bf16* src = valid ? p.q + (r / G) * p.q_stride + (kvh * G + r % G) * HD + c * 8 : p.q;
    cp_async16(q_u + swz(lr, c, CH) * 16, src, valid ? 16 : 0);
  }

  // K/V tile j -> stage (keys past pmax zero-filled: their scores are masked, and 0 * V must not
  // meet a NaN from an unwritten cache row).
  auto load_tile = [&](int j, int stage) {
    const int t0 = j * kKeys;
    if constexpr (!FP8) {
      const bf16* kb = static_cast<const bf16*>(p.kc) + static_cast<int64_t>(kvh) * p.cap * HD;
      const bf16* vb = static_cast<const bf16*>(p.vc) + static_cast<int64_t>(kvh) * p.cap * HD;
      for (int idx = tid; idx < kKeys * CH; idx += kWarps * kWarp) {
        const int row = idx / CH, c = idx % CH;
        const bool valid = t0 + row <= pmax;
        const int64_t off = valid ? static_cast<int64_t>(t0 + row) * HD + c * 8 : 0;
        const uint32_t dst = stage * T::kTileBytes + swz(row, c, CH) * 16;
        cp_async16(k_u + dst, kb + off, valid ? 16 : 0);
        cp_async16(v_u + dst, vb + off, valid ? 16 : 0);
      }
    } else {
      const uint8_t* kb = static_cast<const uint8_t*>(p.kc) + static_cast<int64_t>(kvh) * p.cap * HD;
      const uint8_t* vb = static_cast<const uint8_t*>(p.vc) + static_cast<int64_t>(kvh) * p.cap * HD;
      for (int idx = tid; idx < kKeys * HD / 16; idx += kWarps * kWarp) {
        const int row = idx / (HD / 16), c = idx % (HD / 16);
        const bool valid = t0 + row <= pmax;
        const int64_t off = valid ? static_cast<int64_t>(t0 + row) * HD + c * 16 : 0;
        const uint32_t dst = stage * T::kFp8TileBytes + idx * 16;
        cp_async16(q_u + T::kK8 + dst, kb + off, valid ? 16 : 0);
        cp_async16(q_u + T::kV8 + dst, vb + off, valid ? 16 : 0);
      }
    }
  };

  load_tile(0, 0);
  cp_async_commit();

  // This lane's rows: positions (padded rows past the end take the last row's, and are not stored).
  int rpos[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = std::min(r0 + warp * 16 * MT + mt * 16 + lane / 4 + 8 * h, r_last);
      rpos[mt][h] = p.pos0 + static_cast<int>(r / G);
    }
  // The warp's last row's position (warp-uniform: the sub-tile skip below must not diverge).
  const int warp_pmax = p.pos0 + static_cast<int>(std::min(r0 + warp * 16 * MT + 16 * MT - 1, r_last) / G);

  float o[MT][HD / 8][4], m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int d = 0; d < HD / 8; ++d)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mt][d][e] = 0.0f;
#pragma unroll
    for (int h = 0; h < 2; ++h) m[mt][h] = -INFINITY, l[mt][h] = 0.0f;
  }
  uint32_t qf[MT == 1 ? HD / 16 : 1][4];  // MT == 1: the warp's Q fragments, loaded once
  const float sl = p.scale_log2;
  const int lrow0 = warp * 16 * MT;  // first block row of this warp

  // ldmatrix row addresses, as byte offsets of this lane within a 16-row slice: chunk 2*kk + c of
  // row r sits at chunk (2*kk + c) ^ (r & 7) = 8*(kk/4) + ((2*(kk%4)) ^ (c ^ (r & 7))), so four
  // offsets per lane (kk % 4) plus compile-time immediates address every fragment.
  //   a_off: x4 over rows lane & 15, chunk 2*kk + lane/16 (Q and P-side A tiles; V with .trans)
  //   k_off: x4 over keys (lane & 7) + 8*(lane/16), chunk 2*kk + (lane/8 & 1) (K as the B operand)
  uint32_t a_off[4], k_off[4];
#pragma unroll
  for (int k4 = 0; k4 < 4; ++k4) {
    a_off[k4] = ((lane & 15) * CH + ((2 * k4) ^ ((lane >> 4) ^ (lane & 7)))) * 16;
    k_off[k4] = (((lane & 7) + ((lane >> 4) << 3)) * CH + ((2 * k4) ^ (((lane >> 3) & 1) ^ (lane & 7)))) * 16;
  }

  for (int j = 0; j < ntiles; ++j) {
    if (j + 1 < ntiles) load_tile(j + 1, (j + 1) & 1);
    cp_async_commit();
    cp_async_wait<1>();  // tile j (and q, with tile 0) landed
    __syncthreads();
    int stage = j & 1;
    if constexpr (FP8) {
      // e4m3 stage (j & 1) -> the bf16 stage, swizzled as ldmatrix wants it; K then V (fewer live
      // registers than both at once).
#pragma unroll 1
      for (int kv = 0; kv < 2; ++kv) {
        const unsigned char* src = smem + (kv ? T::kV8 : T::kK8) + (j & 1) * T::kFp8TileBytes;
        unsigned char* dst = smem + (kv ? T::kV : T::kK);
#pragma unroll 1
        for (int idx = tid; idx < kKeys * HD / 16; idx += kWarps * kWarp) {
          const int row = idx / (HD / 16), c = idx % (HD / 16);
          const uint4 in = *reinterpret_cast<const uint4*>(src + idx * 16);
          const uint32_t w[4] = {in.x, in.y, in.z, in.w};
          uint32_t outw[8];
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            outw[2 * i] = fp8x2_to_bf16x2(static_cast<uint16_t>(w[i] & 0xffffu));
            outw[2 * i + 1] = fp8x2_to_bf16x2(static_cast<uint16_t>(w[i] >> 16));
          }
          *reinterpret_cast<uint4*>(dst + swz(row, 2 * c, CH) * 16) =
              make_uint4(outw[0], outw[1], outw[2], outw[3]);
          *reinterpret_cast<uint4*>(dst + swz(row, 2 * c + 1, CH) * 16) =
              make_uint4(outw[4], outw[5], outw[6], outw[7]);
        }
      }
      __syncthreads();
      stage = 0;
    }
    if constexpr (MT == 1) {
      if (j == 0) {
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk)
          ldmatrix_x4(qf[kk], q_u + lrow0 * CH * 16 + a_off[kk % 4] + kk / 4 * 128);
      }
    }
    const uint32_t ks = k_u + stage * T::kTileBytes, vs = v_u + stage * T::kTileBytes;
    // The tile in sub-blocks of SUB keys (all 64 at 16 rows a warp; 32 at 32 rows, which keeps the
    // scores at 32 registers beside the 128 of O): S = Q K^T, online softmax, O += P V.
#pragma unroll
    for (int sub = 0; sub < kKeys / SUB; ++sub) {
      const int t0 = j * kKeys + sub * SUB;
      if (t0 > warp_pmax) break;  // every key left in the tile is above this warp's diagonal
      float s[MT][SUB / 8][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < SUB / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          if constexpr (MT == 1) {
#pragma unroll
            for (int e = 0; e < 4; ++e) a[mt][e] = qf[kk][e];
          } else {
            ldmatrix_x4(a[mt], q_u + (lrow0 + mt * 16) * CH * 16 + a_off[kk % 4] + kk / 4 * 128);
          }
        }
#pragma unroll
        for (int nb = 0; nb < SUB / 16; ++nb) {
          uint32_t b[4];  // keys nb*16 + [0,8): b[0], b[1]; keys nb*16 + [8,16): b[2], b[3]
          ldmatrix_x4(b, ks + k_off[kk % 4] + (sub * SUB + nb * 16) * CH * 16 + kk / 4 * 128);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma_m16n8k16<bf16>(s[mt][2 * nb], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[0], b[1]);
            mma_m16n8k16<bf16>(s[mt][2 * nb + 1], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[2], b[3]);
          }
        }
      }
      if (t0 + SUB - 1 > pmin) {  // crosses the block's diagonal: hide keys after each row's position
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int nt = 0; nt < SUB / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int key = t0 + nt * 8 + 2 * (lane & 3) + (e & 1);
              if (key > rpos[mt][e >> 1]) s[mt][nt][e] = -INFINITY;
            }
      }
      // Online softmax (Milakov & Gimelshein 2018) in the log2 domain; m holds raw-score maxima.
      float corr[MT][2];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float mx = m[mt][h];
#pragma unroll
          for (int nt = 0; nt < SUB / 8; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * h], s[mt][nt][2 * h + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          // A row that has seen no visible key keeps mx = -inf: no NaN from (-inf) - (-inf).
          const float ms = mx == -INFINITY ? 0.0f : mx * sl;
          corr[mt][h] = exp2_ftz(m[mt][h] * sl - ms);  // exactly 1 when the maximum stayed
          m[mt][h] = mx;
          float sum = 0.0f;
#pragma unroll
          for (int nt = 0; nt < SUB / 8; ++nt)
#pragma unroll
            for (int e = 2 * h; e < 2 * h + 2; ++e) {
              s[mt][nt][e] = exp2_ftz(fmaf(s[mt][nt][e], sl, -ms));
              sum += s[mt][nt][e];
            }
          l[mt][h] = l[mt][h] * corr[mt][h] + sum;  // this lane's columns; summed over the quad at the end
        }
      bool rescale = false;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) rescale |= corr[mt][0] != 1.0f || corr[mt][1] != 1.0f;
      if (__any_sync(0xffffffffu, rescale)) {  // the maxima settle after the first tiles: skip then
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int d = 0; d < HD / 8; ++d) {
            o[mt][d][0] *= corr[mt][0], o[mt][d][1] *= corr[mt][0];
            o[mt][d][2] *= corr[mt][1], o[mt][d][3] *= corr[mt][1];
          }
      }
      // O += P V, P (bf16) straight from the S accumulators: the C layout of two 8-key tiles is the
      // A layout of one 16-key step.
#pragma unroll
      for (int kk = 0; kk < SUB / 16; ++kk) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          a[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          a[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          a[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          a[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int dn = 0; dn < HD / 16; ++dn) {
          uint32_t b[4];  // dims dn*16 + [0,8): b[0], b[1]; dims dn*16 + [8,16): b[2], b[3]
          ldmatrix_x4_trans(b, vs + a_off[dn % 4] + (sub * SUB + kk * 16) * CH * 16 + dn / 4 * 128);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma_m16n8k16<bf16>(o[mt][2 * dn], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[0], b[1]);
            mma_m16n8k16<bf16>(o[mt][2 * dn + 1], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[2], b[3]);
          }
        }
      }
    }
    __syncthreads();  // stage (j & 1) is refilled by the next iteration's load
  }

  // Normalise, stage the warp's rows in its own q_s rows (read by no other warp), store 16 bytes a
  // lane.
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = l[mt][h];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
      const int row = lrow0 + mt * 16 + lane / 4 + 8 * h;
#pragma unroll
      for (int d = 0; d < HD / 8; ++d)
        *reinterpret_cast<uint32_t*>(q_s + swz(row, d, CH) * 16 + (lane & 3) * 4) =
            pack_bf16(o[mt][d][2 * h] * inv, o[mt][d][2 * h + 1] * inv);
    }
  __syncwarp();
  for (int idx = lane; idx < 16 * MT * CH; idx += kWarp) {
    const int lr = lrow0 + idx / CH, c = idx % CH;
    const int64_t r = r0 + lr;
    if (r < p.rows)
      *reinterpret_cast<uint4*>(p.out + (r / G) * p.out_stride + (kvh * G + r % G) * HD + c * 8) =
          *reinterpret_cast<const uint4*>(q_s + swz(lr, c, CH) * 16);
  }
}

template <int HD, int MT, bool FP8>
void launch(Context& ctx, const Params& prm) {
  constexpr int bytes = Tile<HD, MT, FP8>::kBytes;
  auto kernel = attention_prefill_kernel<HD, MT, FP8>;
  ctx.kernel_setup(reinterpret_cast<const void*>(kernel), [&] {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    // Two blocks of up to 112 KB share an SM only with the largest shared-memory carveout.
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                    cudaSharedmemCarveoutMaxShared));
  });
  const int64_t blocks = static_cast<int64_t>(prm.row_blocks) * prm.kv_heads;
  kernel<<<static_cast<unsigned>(blocks), kWarps * kWarp, bytes, ctx.stream()>>>(prm);
  CUDA_CHECK_LAUNCH();
}

template <int HD, bool FP8>
void launch_rows(Context& ctx, Params& prm, int mt) {
  if constexpr (FP8 && HD == 128) mt = 1;  // at 32 rows a warp the fp8 conversion would spill registers
  prm.row_blocks = static_cast<int>(ceil_div(prm.rows, kWarps * 16 * mt));
  if constexpr (FP8 && HD == 128)
    launch<HD, 1, FP8>(ctx, prm);
  else if (mt == 1)
    launch<HD, 1, FP8>(ctx, prm);
  else
    launch<HD, 2, FP8>(ctx, prm);
}

}  // namespace

bool attention_prefill_supported(int64_t heads, int64_t kv_heads, int64_t head_dim) {
  return heads > 0 && kv_heads > 0 && heads % kv_heads == 0 && (head_dim == 64 || head_dim == 128);
}

namespace detail {

void attention_prefill_rows(Context& ctx, const bf16* q, int64_t q_stride, int64_t n, int64_t pos0,
                            const void* k_cache, const void* v_cache, KvType kv, int64_t heads,
                            int64_t kv_heads, int64_t head_dim, int64_t capacity, float scale, bf16* out,
                            int64_t out_stride, int rows_per_warp) {
  if (!attention_prefill_supported(heads, kv_heads, head_dim))
    fail(
        "attention_prefill: {} heads over {} KV heads of dim {} (a multiple of the KV heads and dim 64 "
        "or 128 expected)",
        heads, kv_heads, head_dim);
  if (n < 0 || pos0 < 0 || pos0 + n > capacity || capacity > INT_MAX)
    fail("attention_prefill: positions [{}, {}) outside the cache capacity {}", pos0, pos0 + n, capacity);
  if (!aligned16(q) || !aligned16(out) || !aligned16(k_cache) || !aligned16(v_cache) || q_stride % 8 ||
      out_stride % 8)
    fail(
        "attention_prefill: q, out and the caches must be 16-byte aligned, q_stride {} and out_stride {} "
        "multiples of 8",
        q_stride, out_stride);
  if (!(scale > 0.0f)) fail("attention_prefill: softmax scale {} (positive expected)", scale);
  if (rows_per_warp != 0 && rows_per_warp != 16 && rows_per_warp != 32)
    fail("attention_prefill: {} rows per warp (16 or 32 expected)", rows_per_warp);
  if (n == 0) return;

  Params prm{};
  prm.q = q, prm.q_stride = q_stride, prm.pos0 = static_cast<int>(pos0);
  prm.kc = k_cache, prm.vc = v_cache, prm.cap = capacity;
  prm.group = static_cast<int>(heads / kv_heads), prm.kv_heads = static_cast<int>(kv_heads);
  prm.rows = n * prm.group;
  prm.scale_log2 = scale * kLog2e;
  prm.out = out, prm.out_stride = out_stride;
  if (prm.rows / (kWarps * 16) * kv_heads > INT_MAX / 2) fail("attention_prefill: {} queries is too many", n);

  // 32 rows a warp halves the shared-memory reads per MMA; 16 keeps more blocks for small n.
  int mt = rows_per_warp / 16;
  if (mt == 0) mt = ceil_div(prm.rows, kWarps * 32) * kv_heads >= 2 * ctx.info().sm_count ? 2 : 1;
  const bool fp8 = kv == KvType::FP8_E4M3;
  if (head_dim == 64)
    fp8 ? launch_rows<64, true>(ctx, prm, mt) : launch_rows<64, false>(ctx, prm, mt);
  else
    fp8 ? launch_rows<128, true>(ctx, prm, mt) : launch_rows<128, false>(ctx, prm, mt);
}

}  // namespace detail

void attention_prefill(Context& ctx, const bf16* q, int64_t q_stride, int64_t n, int64_t pos0,
                       const void* k_cache, const void* v_cache, KvType kv, int64_t heads, int64_t kv_heads,
                       int64_t head_dim, int64_t capacity, float scale, bf16* out, int64_t out_stride) {
  detail::attention_prefill_rows(ctx, q, q_stride, n, pos0, k_cache, v_cache, kv, heads, kv_heads, head_dim,
                                 capacity, scale, out, out_stride, 0);
}

}  // namespace nibble::cuda
