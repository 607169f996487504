// defines: one 16-row tile of the tensor-core NVFP4 GEMV (gemv_mma.cu) -- its layout in shared memory
// (GemvSmem), the TMA copies of its weights (gemv_issue_tile), the RMSNorm modes in front of it
// (GemvNormMode, GemvNorm and their prologues), the two main loops and the cross-warp sum
// (gemv_tile_sums), and the store through an epilogue (gemv_store_tile) -- so that a kernel can run
// tiles in whatever order and grid it likes. Only for .cu files: uses device code.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cstdint>

#include "backend/cuda/async_copy.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/linear.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/nvfp4_decode.cuh"
#include "backend/cuda/rmsnorm_row.cuh"

namespace nibble::cuda {

// ---- tensor-core NVFP4 GEMV (n <= 8, K % 32 == 0) ---------------------------------------------
// One block per 16-row tile of W (with P parts: SwiGLU's gate and up tiles of the same rows).
// Loads: at its start, before griddepcontrol.wait, the block's first warp hands the tile's codes
// (one bulk copy per row, into rows padded so that consecutive rows sit 64 bytes apart modulo 128:
// no bank conflicts) and scales (one bulk copy per part) to the TMA engine (cp.async.bulk, sm_90),
// which writes them to shared memory and signals an mbarrier. No register or instruction goes to
// loading, the block's whole tile is in flight at once, and it streams in while the previous kernel
// of the stream still runs. The block's gemv_warps(K, tiles) warps then split K. Each warp runs
// mma.sync m16n8k16 (bf16 in, fp32 accumulate): A = the tile's 16 rows dequantised in registers,
// B = x for 8 token slots (slots >= n repeat token n-1 and their columns are dropped; one token
// with a NormHandoff instead runs gemv_block_diagonal_loop, where B's columns are scale blocks). Thread
// (g = lane/4, t = lane%4) owns rows g and g+8; chunk c (16 bytes = 32 codes of a row) of group j is
// c = 4j + t, and warp s takes groups s, s + warps, s + 2 warps, ... The summation order depends on
// K and the tile count alone (through gemv_warps), never on the fused variant: every variant without
// the RMSNorm equals linear_forward bit for bit (with it: rmsnorm_deferred_to_shared).
//
// Element order: a dot product may visit k in any order as long as A and B agree. The 8 codes of a
// 32-bit word (k0..k0+7) are taken as 4 pairs {k0+j, k0+j+4}: codes j and j+4 lie 16 bits apart,
// so one shift per field places both halves of a bf16x2 (4 operations per pair). B takes the same
// pairs out of x with byte permutes, or loads them as they are where x arrives in pair order (a
// NormHandoff's xw, a SwiGLU GEMV's paired_out: norm_handoff_index).
//
// Numerics: a code at bf16 bits 15 (sign) and 8..6 (e1 e0 m) is e2m1 * 2^-126 (0.5 is the subnormal
// 2^-127; bf16 FMA has no flush-to-zero mode). Multiplied by the block scale * 2^119 it becomes
// e2m1 * scale * 2^-7, exact in bf16 (2 + 4 significant bits) and normal (2^-17 .. 21); its products
// with x are exact in fp32, and y = D * 2^7 * global.
constexpr int kMmaTile = 16;      // rows per tile (the M of m16n8k16)
constexpr int kMmaMaxWarps = 16;  // warps splitting K in a block
constexpr float kMmaOutScale = 128.0f;

// Warps splitting K: a function of K and the tile count alone (the summation order must not depend
// on anything else): about 2 groups (8 chunks) per warp, 4 to 16 warps; with kGemvManyTiles tiles
// or more (the head), or K >= kGemvLongK, about 4 groups per warp. Measured on an H200 at n = 1
// (bench_cuda_gemv, 2026-11-26, shared-memory kernel): 2 instead of 4 groups per warp took q+k+v
// from 878 to 1404 GB/s, gate/up 1634 -> 1885, and the decode step from 453 to 502 tok/s; the
// head went the other way (2696 -> 2224 GB/s) and keeps 4. In the decode step (nibble bench,
// H200, 2026-11-26, ctx 0) o_proj (K = 4096: 8 warps instead of 16) took the step from 565 to 586
// tok/s -- its smaller blocks leave room on each SM for the gate/up blocks that PDL starts early,
// whose weight copies then overlap it; down_proj (K = 9728) is within noise either way (2: 580,
// 4: 585, 8: 590); q/k/v and gate/up lose with 4 (548, 541) and with 1 (514, 448).
constexpr int64_t kGemvManyTiles = 2048;
constexpr int64_t kGemvLongK = 4096;

inline int gemv_warps(int64_t K, int64_t tiles) {
  const int64_t per_warp = tiles >= kGemvManyTiles || K >= kGemvLongK ? 4 : 2;
  const int64_t groups = ceil_div(K / 32, 4);
  int64_t s = 4;
  while (s < kMmaMaxWarps && 2 * s <= groups / per_warp) s *= 2;
  return static_cast<int>(std::min(groups, s));
}

__device__ __forceinline__ int tile_rows(int64_t N, int64_t r0) {
  return static_cast<int>(N - r0 < kMmaTile ? N - r0 : kMmaTile);
}

struct GemvTile {
  const uint8_t* codes;   // (rows, K/2): row 0 of the tile
  const uint8_t* scales;  // (rows, K/16)
  int rows;               // valid rows, 0..16
};

template <int J>  // codes J and J+4 of a word -> bf16x2 {e2m1 * 2^-126, ...}
__device__ __forceinline__ uint32_t e2m1_pair_bf16(uint32_t w) {
  constexpr int kMag = 6 - 4 * J, kSign = 12 - 4 * J;
  const uint32_t m = kMag >= 0 ? (w << (kMag >= 0 ? kMag : 0)) : (w >> (kMag < 0 ? -kMag : 0));
  return (m & 0x01C001C0u) | ((w << kSign) & 0x80008000u);
}

__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

__device__ __forceinline__ uint32_t bf16x2_bits(float a) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(a, a);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Two fp8 scales (low byte first) -> {s0, s0} and {s1, s1} * 2^119 as bf16x2 (exact).
__device__ __forceinline__ void scale_pairs(uint32_t s2, uint32_t& lo, uint32_t& hi) {
  const float2 f = fp8x2_to_float2(static_cast<uint16_t>(s2));
  lo = bf16x2_bits(f.x * 0x1p119f);
  hi = bf16x2_bits(f.y * 0x1p119f);
}

__device__ __forceinline__ uint32_t word_of(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// The RMSNorm in front of a GEMV: none, the kernel's own prologue (rmsnorm_deferred_to_shared), or
// prepared by the residual GEMV that wrote x (NormHandoff: bf16(x * w) * 2^64 and sums of
// squares); kPreparedOne: prepared, one token, through the block-diagonal main loop (below);
// kPairedOne: no RMSNorm, one token whose x arrives in pair order * 2^64 (the SwiGLU GEMV's
// paired_out), through the block-diagonal main loop.
enum class GemvNormMode { kNone, kPrologue, kPrepared, kPreparedOne, kPairedOne };

__host__ __device__ constexpr bool is_prepared(GemvNormMode m) {
  return m == GemvNormMode::kPrepared || m == GemvNormMode::kPreparedOne;
}
__host__ __device__ constexpr bool has_norm(GemvNormMode m) {
  return m != GemvNormMode::kNone && m != GemvNormMode::kPairedOne;
}
__host__ __device__ constexpr bool block_diagonal(GemvNormMode m) {
  return m == GemvNormMode::kPreparedOne || m == GemvNormMode::kPairedOne;
}

// The RMSNorm fused in front of a GEMV: w (K) fp32 norm weight; out (n, K) bf16 rows of stride K,
// written in shares by every block (null: not kept); kPrepared: xw (n, K) and sumsq (n, ld).
struct GemvNorm {
  const float* w = nullptr;
  float eps = 0.0f;
  bf16* out = nullptr;
  const bf16* xw = nullptr;
  const float* sumsq = nullptr;
  int64_t ld = 0;
};

// x * w rows in shared memory: row stride K + kNormPad elements. The pad shifts row r by
// 4r banks, so that the 8 token rows x 4 chunk threads of an mma's B load spread over all banks.
constexpr int kNormPad = 8;

// The RMSNorm in front of a GEMV with its 1/rms deferred: y = (1/rms) * (W . bf16(x * w)) instead
// of W . bf16(x * (1/rms) * w). The prologue that every block runs between griddepcontrol.wait and
// its main loop is then elementwise: xs (shared, row stride K + kNormPad) = bf16(x * w), while each
// thread adds up the squares of the x it reads; the warps' sums go to ss_s (n x kMmaMaxWarps
// floats) and the epilogue turns them into 1/rms (gemv_inv_rms) -- no reduction and no second
// pass before the mma.
// Measured on an H200 (2026-11-26): the exact prologue this replaces (warp r summing row r's squares
// in rmsnorm_row.cuh's order, a barrier, then every thread scaling) cost the decode step 0.31 ms of
// 1.82 (sampling and attention left out), 0.14 ms of it the reduction; deferring took decode from
// 518.5 to 540.1 tok/s at context 0 (441.1 -> 451.6 at 4K).
// Numerics: 1/rms = rsqrtf(sum / K + eps) with the sum in the block's order (each thread's chunks
// in order, warp_sum, warps in order): the same for every NORM kernel of one K and tile count, but
// not rmsnorm_forward's order, and bf16 rounds x * w instead of x * w / rms: results equal the
// unfused rmsnorm_forward + GEMV within rounding, not bit for bit. The kept x_norm is
// bf16(x * (1/rms) * w) with this 1/rms (gemv_keep_x_norm_share).
// The caller's __syncthreads makes xs and ss_s visible to the block.
__device__ __forceinline__ void rmsnorm_deferred_to_shared(const bf16* __restrict__ x, int64_t ldx, int n,
                                                           int64_t K, const GemvNorm& norm, bf16* xs,
                                                           float* ss_s) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t per_row = K / 8;
  float part[kGemvMaxTokens];
#pragma unroll
  for (int r = 0; r < kGemvMaxTokens; ++r) part[r] = 0.0f;
  for (int64_t i = threadIdx.x; i < n * per_row; i += blockDim.x) {
    const int r = static_cast<int>(i / per_row);
    const int64_t c = (i % per_row) * 8;
    float f[8];
    bf16x8_to_float(*reinterpret_cast<const Bf16x8*>(x + r * ldx + c), f);
    float sq = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      sq = fmaf(f[j], f[j], sq);
      f[j] *= norm.w[c + j];
    }
#pragma unroll
    for (int q = 0; q < kGemvMaxTokens; ++q)  // part[r] with r known at run time: a select per
      if (q == r) part[q] += sq;              // slot keeps part in registers, not local memory
    const Bf16x8 y8 = float_to_bf16x8(f);
    *reinterpret_cast<uint4*>(xs + r * (K + kNormPad) + c) = *reinterpret_cast<const uint4*>(&y8);
  }
  for (int r = 0; r < n; ++r) {
    float v = 0.0f;
#pragma unroll
    for (int q = 0; q < kGemvMaxTokens; ++q)
      if (q == r) v = part[q];
    v = warp_sum(v);
    if (lane == 0) ss_s[r * kMmaMaxWarps + warp] = v;
  }
}

// inv_s[r] = 1/rms of row r < n, by the lanes of one warp. kPrologue: from the warps' sums of
// squares (ss_s, n x kMmaMaxWarps, after a barrier), added in warp order. kPrepared: from the
// handoff's columns (sums_s, n x ld, in shared memory once its bulk copy has landed): lane l adds
// columns l, l + 32, ..., then warp_sum. The caller's barrier publishes inv_s. Not inlined: inlined,
// ptxas keeps its addressing live across the main loop and the kPrepared SwiGLU kernel grows from
// 80 to 95 registers (3 -> 2 blocks of 8 warps per SM).
template <GemvNormMode M>
__device__ __noinline__ void gemv_inv_rms_rows(const float* sums_s, int n, int warps, int64_t K,
                                               const GemvNorm& norm, float* inv_s, int lane) {
  if constexpr (M == GemvNormMode::kPrologue) {
    if (lane < n) {
      float ss = 0.0f;
      for (int w = 0; w < warps; ++w) ss += sums_s[lane * kMmaMaxWarps + w];
      inv_s[lane] = rsqrtf(ss / static_cast<float>(K) + norm.eps);
    }
  } else {
    const int64_t parts = ceil_div(K, kMmaTile);
    for (int r = 0; r < n; ++r) {
      float ss = 0.0f;
      for (int64_t p = lane; p < parts; p += kWarp) ss += sums_s[r * norm.ld + p];
      ss = warp_sum(ss);
      if (lane == 0) inv_s[r] = rsqrtf(ss / static_cast<float>(K) + norm.eps);
    }
  }
}

// This block's share of x_norm = bf16(x * (1/rms) * w) (norm.out, row stride K): the 8-element
// chunks i = blockIdx.x, blockIdx.x + gridDim.x, ... of the n rows, by the lanes of one warp (one
// that has nothing else to do while warp 0 stores), so that no block's tail grows.
__device__ __forceinline__ void gemv_keep_x_norm_share(const bf16* __restrict__ x, int64_t ldx, int n,
                                                       int64_t K, const GemvNorm& norm, const float* inv_s,
                                                       int lane) {
  const int64_t per_row = K / 8;
  for (int64_t i = blockIdx.x + static_cast<int64_t>(gridDim.x) * lane; i < n * per_row;
       i += static_cast<int64_t>(gridDim.x) * kWarp) {
    const int r = static_cast<int>(i / per_row);
    const int64_t c = (i % per_row) * 8;
    const Bf16x8 y8 = rms_scale8(x + r * ldx, c, inv_s[r], norm.w);
    *reinterpret_cast<uint4*>(norm.out + r * K + c) = *reinterpret_cast<const uint4*>(&y8);
  }
}

// Shared-memory row stride of a tile's codes: K/2 bytes padded so that rows r and r+1 start 64
// bytes apart modulo 128 (the 8 rows x 4 threads of a 16-byte load then hit distinct banks).
__host__ __device__ __forceinline__ int64_t smem_code_stride(int64_t K) {
  const int64_t b = K / 2;
  return b + (64 - b % 128 + 128) % 128;
}

// The main loops. Group jj of warp s is group G = s + jj * warps: chunks 4G .. 4G + 3 (32 codes
// each), thread t taking chunk c = 4G + t of rows g and g + 8 of each part (its scale blocks 2c and
// 2c + 1). acc[p][q]: part p, row g + 8 (q / 2) of the tile, column 2t + q % 2 of the mma.
//
// Chunk c (16 bytes) of rows g and g + 8 of each part and the 2 scale bytes of its blocks 2c,
// 2c + 1 (low byte first), from shared memory; zeros past the last chunk (!in).
template <int P>
__device__ __forceinline__ void gemv_load_chunk(const unsigned char* codes_s, const unsigned char* scales_s,
                                                int64_t cs, int64_t ss, int64_t c, bool in, int g,
                                                uint4 (&wv)[P][2], uint32_t (&s2)[P][2]) {
#pragma unroll
  for (int p = 0; p < P; ++p)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = p * kMmaTile + g + 8 * h;
      wv[p][h] = in ? *reinterpret_cast<const uint4*>(codes_s + row * cs + c * 16) : make_uint4(0, 0, 0, 0);
      s2[p][h] = in ? *reinterpret_cast<const uint16_t*>(scales_s + row * ss + c * 2) : 0u;
    }
}

// Token columns (any n): B = x for 8 token slots, A = the codes times their block scales
// (bf16x2_mul); acc column = token. PAIR_X: x arrives as plain rows, and byte permutes make the
// pairs {x_j, x_j+4}; else it is in pair order already (a NormHandoff's xw, norm_handoff_index).
template <int P, bool PAIR_X>
__device__ __forceinline__ void gemv_token_column_loop(const unsigned char* codes_s,
                                                       const unsigned char* scales_s, int64_t cs, int64_t ss,
                                                       const bf16* __restrict__ xr, int64_t chunks, int gw,
                                                       int warp, int warps, int g, int t,
                                                       float (&acc)[P][4]) {
  for (int jj = 0; jj < gw; ++jj) {
    const int64_t c = 4 * (warp + static_cast<int64_t>(warps) * jj) + t;
    const bool in = c < chunks;
    uint4 xv[4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
      xv[i] = in ? *reinterpret_cast<const uint4*>(xr + c * 32 + i * 8) : make_uint4(0, 0, 0, 0);
    uint4 wv[P][2];
    uint32_t s2[P][2], sc[P][2][2];
    gemv_load_chunk<P>(codes_s, scales_s, cs, ss, c, in, g, wv, s2);
#pragma unroll
    for (int p = 0; p < P; ++p)
#pragma unroll
      for (int h = 0; h < 2; ++h) scale_pairs(s2[p][h], sc[p][h][0], sc[p][h][1]);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      // x[k0..k0+7] as pairs {x_j, x_j+4}
      uint32_t b0 = xv[i].x, b1 = xv[i].y, b2 = xv[i].z, b3 = xv[i].w;
      if constexpr (PAIR_X) {
        b0 = __byte_perm(xv[i].x, xv[i].z, 0x5410), b1 = __byte_perm(xv[i].x, xv[i].z, 0x7632);
        b2 = __byte_perm(xv[i].y, xv[i].w, 0x5410), b3 = __byte_perm(xv[i].y, xv[i].w, 0x7632);
      }
#pragma unroll
      for (int p = 0; p < P; ++p) {
        const uint32_t w0 = word_of(wv[p][0], i), w1 = word_of(wv[p][1], i);
        const uint32_t s0 = sc[p][0][i / 2], s1 = sc[p][1][i / 2];
        mma_m16n8k16<bf16>(acc[p], bf16x2_mul(e2m1_pair_bf16<0>(w0), s0),
                           bf16x2_mul(e2m1_pair_bf16<0>(w1), s1), bf16x2_mul(e2m1_pair_bf16<1>(w0), s0),
                           bf16x2_mul(e2m1_pair_bf16<1>(w1), s1), b0, b1);
        mma_m16n8k16<bf16>(acc[p], bf16x2_mul(e2m1_pair_bf16<2>(w0), s0),
                           bf16x2_mul(e2m1_pair_bf16<2>(w1), s1), bf16x2_mul(e2m1_pair_bf16<3>(w0), s0),
                           bf16x2_mul(e2m1_pair_bf16<3>(w1), s1), b2, b3);
      }
    }
  }
}

// Block diagonal (one token, x in pair order and scaled by 2^64: a NormHandoff's xw): the mma's 8
// B columns take 8 scale blocks instead of 8 tokens, so that the block scales multiply 4 sums per
// thread after the mma instead of every A pair before it. Per group, k slots (2i, 2i + 1) of its 8
// mmas hold scale block 2i of the group (i < 4) or block 2(i - 4) + 1 (i >= 4), two codes per mma,
// and B column j is x on the slots of block j, zero elsewhere: column j of D sums block j's
// products. Thread (g, t) then converts blocks 2t and 2t + 1 (its own chunk), holds x only where
// g = 2t (block 2t, b0) or g = 2t + 1 (block 2t + 1, b1), and D's columns 2t and 2t + 1 are its own
// chunk's blocks, whose scales it loaded: 4 FMAs per group and part, no bf16x2_mul, no permutes.
// Numerics: A = e2m1 * 2^-126 times x * 2^64: products e2m1 * x * 2^-62, exact and normal in fp32
// for |x| >= 2^-64; acc = sum over blocks of scale * D (fp32), and y = acc * 2^62 * global. The
// sums run in another order than the token-column loop's: results agree within fp32 rounding.
template <int P>
__device__ __forceinline__ void gemv_block_diagonal_loop(const unsigned char* codes_s,
                                                         const unsigned char* scales_s, int64_t cs,
                                                         int64_t ss, const bf16* __restrict__ xr,
                                                         int64_t chunks, int gw, int warp, int warps, int g,
                                                         int t, float (&acc)[P][4]) {
  const bool x_lo = g == 2 * t, x_hi = g == 2 * t + 1;
  for (int jj = 0; jj < gw; ++jj) {
    const int64_t c = 4 * (warp + static_cast<int64_t>(warps) * jj) + t;
    const bool in = c < chunks;
    uint4 xa[2], xb[2];  // x of block 2c (lanes g = 2t), of block 2c + 1 (lanes g = 2t + 1), else 0
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      xa[i] = in && x_lo ? *reinterpret_cast<const uint4*>(xr + c * 32 + i * 8) : make_uint4(0, 0, 0, 0);
      xb[i] = in && x_hi ? *reinterpret_cast<const uint4*>(xr + c * 32 + 16 + i * 8) : make_uint4(0, 0, 0, 0);
    }
    uint4 wv[P][2];
    uint32_t s2[P][2];
    float2 sf[P][2];
    gemv_load_chunk<P>(codes_s, scales_s, cs, ss, c, in, g, wv, s2);
#pragma unroll
    for (int p = 0; p < P; ++p)
#pragma unroll
      for (int h = 0; h < 2; ++h) sf[p][h] = fp8x2_to_float2(static_cast<uint16_t>(s2[p][h]));
#pragma unroll
    for (int p = 0; p < P; ++p) {
      float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int m = 0; m < 8; ++m) {  // codes {J, J + 4} of word w (w = m / 4, J = m % 4) of each block
        const int w = m / 4;
        const uint32_t b0 = word_of(xa[w], m % 4), b1 = word_of(xb[w], m % 4);
        const uint32_t lo0 = word_of(wv[p][0], w), lo1 = word_of(wv[p][1], w);          // block 2t
        const uint32_t hi0 = word_of(wv[p][0], 2 + w), hi1 = word_of(wv[p][1], 2 + w);  // block 2t + 1
        uint32_t a0, a1, a2, a3;
        switch (m % 4) {
          case 0:
            a0 = e2m1_pair_bf16<0>(lo0), a1 = e2m1_pair_bf16<0>(lo1), a2 = e2m1_pair_bf16<0>(hi0),
            a3 = e2m1_pair_bf16<0>(hi1);
            break;
          case 1:
            a0 = e2m1_pair_bf16<1>(lo0), a1 = e2m1_pair_bf16<1>(lo1), a2 = e2m1_pair_bf16<1>(hi0),
            a3 = e2m1_pair_bf16<1>(hi1);
            break;
          case 2:
            a0 = e2m1_pair_bf16<2>(lo0), a1 = e2m1_pair_bf16<2>(lo1), a2 = e2m1_pair_bf16<2>(hi0),
            a3 = e2m1_pair_bf16<2>(hi1);
            break;
          default:
            a0 = e2m1_pair_bf16<3>(lo0), a1 = e2m1_pair_bf16<3>(lo1), a2 = e2m1_pair_bf16<3>(hi0),
            a3 = e2m1_pair_bf16<3>(hi1);
            break;
        }
        mma_m16n8k16<bf16>(d, a0, a1, a2, a3, b0, b1);
      }
      acc[p][0] = fmaf(sf[p][0].y, d[1], fmaf(sf[p][0].x, d[0], acc[p][0]));  // row g
      acc[p][2] = fmaf(sf[p][1].y, d[3], fmaf(sf[p][1].x, d[2], acc[p][2]));  // row g + 8
    }
  }
  // Rows g, g + 8 summed over the 4 threads of the row: every lane holds them, as column 0.
#pragma unroll
  for (int p = 0; p < P; ++p)
#pragma unroll
    for (int q = 0; q < 4; q += 2) {
      float v = acc[p][q];
      v += __shfl_xor_sync(0xffffffffu, v, 1);
      v += __shfl_xor_sync(0xffffffffu, v, 2);
      acc[p][q] = v;
    }
}

// Dynamic shared memory of a block: codes P x 16 rows (stride smem_code_stride), scales P x 16 x
// K/16, the K-split sums (warps - 1) x P x 4 x 32 floats; with a norm the rows' 1/rms (inv, 8
// floats), then kPrologue: the warps' sums of squares (n x kMmaMaxWarps floats) and x * w (xs, n x
// (K + kNormPad) bf16), kPrepared: the handoff's sums (n x ld floats, at xs); two mbarriers (the
// weights; the handoff's sums); the epilogue's preloaded inputs (kEpiBytes).
constexpr int64_t kEpiBytes = kGemvMaxTokens * kMmaTile * 2 + kMmaTile * 4;  // GemvResidual::preload

// What turns a mode's sums into the token-column loop's scale (exact powers of two), so that the
// epilogues' kMmaOutScale fits every mode: x arriving in pair order carries norm_handoff_scale; the
// block-diagonal loop's products are e2m1 * 2^-126 * x * norm_handoff_scale instead of e2m1 *
// scale * 2^-7 * x (the block scales applied separately).
__host__ __device__ constexpr float gemv_sum_fix(GemvNormMode m) {
  return block_diagonal(m) ? 0x1p126f / (norm_handoff_scale * kMmaOutScale)
         : is_prepared(m)  ? 1.0f / norm_handoff_scale
                           : 1.0f;
}
static_assert(gemv_sum_fix(GemvNormMode::kPairedOne) == 0x1p55f &&
              gemv_sum_fix(GemvNormMode::kPrepared) == 0x1p-64f);

// Accumulator slots a warp hands over in the cross-warp sum: all 4, or with the block-diagonal loop
// (one token) the 2 that hold column 0 (acc[p][0] and acc[p][2]).
__host__ __device__ constexpr int partial_slots(GemvNormMode m) { return block_diagonal(m) ? 2 : 4; }

struct GemvSmem {
  int64_t codes, scales, stage, partial, inv, sums, xs, bar, epi, total;
  __host__ __device__ GemvSmem(int P, int64_t K, int warps, int n, GemvNormMode mode, int stages = 1) {
    codes = 0;
    scales = codes + P * kMmaTile * smem_code_stride(K);
    stage = (scales + P * K + 127) / 128 * 128;  // P x 16 rows x K/16 scales; stage s at s * stage
    partial = stages == 1 ? scales + P * K : stages * stage;
    inv = partial + static_cast<int64_t>(warps - 1) * P * partial_slots(mode) * kWarp * 4;
    sums = inv + (has_norm(mode) ? 4 * kGemvMaxTokens : 0);
    xs = sums + (mode == GemvNormMode::kPrologue ? 4 * kGemvMaxTokens * kMmaMaxWarps : 0);
    int64_t xs_bytes = 0;
    if (mode == GemvNormMode::kPrologue) xs_bytes = static_cast<int64_t>(n) * (K + kNormPad) * 2;
    if (is_prepared(mode)) xs_bytes = static_cast<int64_t>(n) * handoff_ld(K) * 4;
    bar = xs + (xs_bytes + 15) / 16 * 16;
    epi = bar + (stages == 1 ? 16 : 32);  // mbarriers: stage 0, the handoff's sums, stage 1
    total = epi + kEpiBytes;
  }
  // Columns of a NormHandoff's sumsq for a sum over K rows: one per 16-row tile, rounded up to 4.
  __host__ __device__ static int64_t handoff_ld(int64_t K) { return (ceil_div(K, kMmaTile) + 3) / 4 * 4; }
};

// Hands the copies of a tile's parts to the TMA engine (warp 0): codes one bulk copy per row (lane
// p * 16 + r: row r of part p), scales one per part (lane p), completing on `bar`, into the stage at
// codes_s / scales_s. Evict-first: weights are read once per step, and the lines L2Prefetch pulled
// in for the next kernels must outlive them. Scale bytes past the last multiple of 16 of a part are
// left to the caller.
template <int P>
__device__ __forceinline__ void gemv_issue_tile(const GemvTile (&tl)[P], int64_t K, int64_t cs, int64_t ss,
                                                unsigned char* codes_s, unsigned char* scales_s,
                                                uint64_t* bar, int lane) {
  const uint64_t policy = l2_evict_first_policy();
  uint32_t bytes = 0;
#pragma unroll
  for (int p = 0; p < P; ++p)
    bytes += static_cast<uint32_t>(tl[p].rows * (K / 2) + ((tl[p].rows * ss) & ~int64_t{15}));
  if (lane == 0) mbar_arrive_expect_tx(bar, bytes);
  __syncwarp();
  static_assert(P * kMmaTile <= kWarp, "one lane per row");
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int r = lane - p * kMmaTile;
    if (r >= 0 && r < tl[p].rows)
      bulk_load(codes_s + (p * kMmaTile + r) * cs, tl[p].codes + r * (K / 2), static_cast<uint32_t>(K / 2),
                bar, policy);
    const uint32_t sb = static_cast<uint32_t>((tl[p].rows * ss) & ~int64_t{15});
    if (lane == p && sb > 0) bulk_load(scales_s + p * kMmaTile * ss, tl[p].scales, sb, bar, policy);
  }
}

// One tile's sums: the main loop over the stage at codes_s / scales_s, then `between()` (every warp,
// before the barrier), then the cross-warp sum: warps 1.. hand their sums to warp 0 through `part`,
// which adds them in warp order (deterministic). acc of warp 0 holds the tile's sums.
template <int P, GemvNormMode M, class Between>
__device__ __forceinline__ void gemv_tile_sums(const unsigned char* codes_s, const unsigned char* scales_s,
                                               int64_t cs, int64_t ss, const bf16* __restrict__ xr,
                                               int64_t chunks, int gw, int warp, int warps, int g, int t,
                                               int lane, float* part, Between&& between, float (&acc)[P][4]) {
#pragma unroll
  for (int p = 0; p < P; ++p)
#pragma unroll
    for (int q = 0; q < 4; ++q) acc[p][q] = 0.0f;

  if constexpr (block_diagonal(M))
    gemv_block_diagonal_loop<P>(codes_s, scales_s, cs, ss, xr, chunks, gw, warp, warps, g, t, acc);
  else
    gemv_token_column_loop<P, !is_prepared(M)>(codes_s, scales_s, cs, ss, xr, chunks, gw, warp, warps, g, t,
                                               acc);
  between();
  if (warps > 1) {
    constexpr int S = partial_slots(M), step = 4 / S;  // slots q = 0, step, ...
    if (warp > 0)
#pragma unroll
      for (int p = 0; p < P; ++p)
#pragma unroll
        for (int i = 0; i < S; ++i) part[(((warp - 1) * P + p) * S + i) * kWarp + lane] = acc[p][i * step];
    __syncthreads();
    if (warp == 0)
      for (int w = 0; w < warps - 1; ++w)
#pragma unroll
        for (int p = 0; p < P; ++p)
#pragma unroll
          for (int i = 0; i < S; ++i) acc[p][i * step] += part[((w * P + p) * S + i) * kWarp + lane];
  }
}

// Warp 0's store of a tile: the deferred 1/rms of each accumulator's token (2t + q % 2) and the powers
// of two x's layout left in the sums (gemv_sum_fix), then the epilogue.
template <int P, GemvNormMode M, class Epi>
__device__ __forceinline__ void gemv_store_tile(const Epi& epi, int64_t tile, float (&acc)[P][4],
                                                const float* inv_s, int g, int t, int n,
                                                const unsigned char* epi_s) {
  constexpr float fix = gemv_sum_fix(M);
  if constexpr (has_norm(M) || fix != 1.0f) {
    const float inv0 = has_norm(M) ? inv_s[min(2 * t, n - 1)] * fix : fix,
                inv1 = has_norm(M) ? inv_s[min(2 * t + 1, n - 1)] * fix : fix;
#pragma unroll
    for (int q = 0; q < 4; ++q)
#pragma unroll
      for (int p = 0; p < P; ++p) acc[p][q] *= q % 2 ? inv1 : inv0;
  }
  epi.store(tile, acc, g, t, n, epi_s);
}

}  // namespace nibble::cuda
