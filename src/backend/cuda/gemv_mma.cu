// The decode GEMVs on tensor cores (NVFP4, n <= kGemvMaxTokens, K % 32 == 0): linear_forward's
// GEMV path (nvfp4_gemv_linear) and the fused variants of linear.cuh -- q/k/v, gate/up + SwiGLU,
// projection + residual (with the next RMSNorm's start, NormHandoff), each RMSNorm variant -- as one
// kernel template with an epilogue per variant. API and numerics: linear.cuh; one tile (layout, weight
// copies, main loops, the RMSNorm modes): gemv_tile.cuh.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>

#include "backend/cuda/async_copy.cuh"
#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/gemv_tile.cuh"
#include "backend/cuda/linear.cuh"
#include "backend/cuda/pdl.cuh"

namespace nibble::cuda {
namespace {

// This block's share of the ranges of `pf` (the blocks of the grid split their concatenation
// evenly), prefetched into L2 by the lanes of warp 0 in pieces of kL2PrefetchPiece bytes.
constexpr uint32_t kL2PrefetchPiece = 32u << 10;

__device__ __forceinline__ void issue_l2_prefetch(const L2Prefetch& pf) {
  if (pf.count == 0 || threadIdx.x >= kWarp) return;
  uint64_t total = 0;
  for (int i = 0; i < pf.count; ++i) total += pf.range[i].bytes & ~15u;
  const uint64_t share = (total / gridDim.x + 15) & ~uint64_t{15};
  const uint64_t lo = blockIdx.x * share, hi = min(total, lo + share);
  uint64_t off = 0;
  int piece = 0;
  for (int i = 0; i < pf.count && off < hi; ++i) {
    const uint64_t bytes = pf.range[i].bytes & ~15u, a = max(lo, off), b = min(hi, off + bytes);
    for (uint64_t p = a; p < b; p += kL2PrefetchPiece, ++piece) {
      if (piece % kWarp != static_cast<int>(threadIdx.x)) continue;
      const char* ptr = static_cast<const char*>(pf.range[i].ptr) + (p - off);
      const uint32_t len = static_cast<uint32_t>(min(static_cast<uint64_t>(kL2PrefetchPiece), b - p));
      prefetch_l2(ptr, len);
    }
    off += bytes;
  }
}

// acc[p][q]: part p, q = 2h + e -> row g + 8h of the tile, token 2t + e.
// LOOP (the tile loop): block b takes tiles b, b + gridDim.x, ... < tiles through two shared-memory
// stages -- both first tiles' copies go out before griddepcontrol.wait, and each later tile's as soon
// as the tile two before it has left its stage -- so that the weight stream of a GEMV with more tiles
// than fit on the SMs at once never waits for a block to retire. Only for full tiles (every part's N %
// 16 == 0: no hand-copied scales). Every tile is summed exactly as without the loop. Without LOOP:
// block b takes tile b (tiles unused).
template <int P, GemvNormMode M, class Epi, bool LOOP>
__global__ void __launch_bounds__(kMmaMaxWarps* kWarp, 1)
    nvfp4_gemv_mma_kernel(const bf16* __restrict__ x, int64_t ldx, int n, int64_t K, const Epi epi,
                          const GemvNorm norm, const L2Prefetch prefetch, int64_t tiles) {
  constexpr bool kNorm = has_norm(M);
  extern __shared__ __align__(128) unsigned char smem[];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  const int g = lane / 4, t = lane % 4;
  const int64_t chunks = K / 32, groups = ceil_div(chunks, 4);
  const int gw = static_cast<int>((groups - warp + warps - 1) / warps);  // this warp's groups
  const GemvSmem lay(P, K, warps, n, M, LOOP ? 2 : 1);
  const int64_t cs = smem_code_stride(K), ss = K / 16;
  unsigned char* codes_s = smem + lay.codes;
  unsigned char* scales_s = smem + lay.scales;
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + lay.bar);  // stage 0, the handoff's sums, stage 1
  const int64_t tile = blockIdx.x;

  // Weights never change: their copies go out before waiting for the kernel that writes x. Scale
  // bytes past the last multiple of 16 of a part (K % 256 != 0 and a short last tile) go by hand.
  GemvTile tl[P];
  epi.tile(tile, tl);
  if (warp == 0) {
    if (lane == 0) {
      mbar_init(bar);
      if constexpr (is_prepared(M)) mbar_init(bar + 1);
      if constexpr (LOOP) mbar_init(bar + 2);
    }
    __syncwarp();
    gemv_issue_tile<P>(tl, K, cs, ss, codes_s, scales_s, bar, lane);
    if (LOOP && tile + gridDim.x < tiles) {
      GemvTile next[P];
      epi.tile(tile + gridDim.x, next);
      gemv_issue_tile<P>(next, K, cs, ss, codes_s + lay.stage, scales_s + lay.stage, bar + 2, lane);
    }
  }
  if constexpr (!LOOP) {
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int64_t sb = tl[p].rows * ss, from = sb & ~int64_t{15};
      for (int64_t i = from + threadIdx.x; i < sb; i += blockDim.x)
        scales_s[p * kMmaTile * ss + i] = tl[p].scales[i];
    }
  }
  issue_l2_prefetch(prefetch);
  pdl_launch_dependents();
  pdl_wait();
  const bf16* xr;
  float* inv_s = reinterpret_cast<float*>(smem + lay.inv);
  float* sums_s = reinterpret_cast<float*>(smem + (M == GemvNormMode::kPrologue ? lay.sums : lay.xs));
  if constexpr (M == GemvNormMode::kPrologue) {
    bf16* xs = reinterpret_cast<bf16*>(smem + lay.xs);
    rmsnorm_deferred_to_shared(x, ldx, n, K, norm, xs, sums_s);
    xr = xs + static_cast<int64_t>(min(g, n - 1)) * (K + kNormPad);
  } else if constexpr (is_prepared(M)) {
    if (threadIdx.x == 0) {  // the handoff's sums: written by the previous kernel, so after pdl_wait
      const uint32_t bytes = static_cast<uint32_t>(n * norm.ld * 4);
      mbar_arrive_expect_tx(bar + 1, bytes);
      bulk_load(sums_s, norm.sumsq, bytes, bar + 1);
    }
    xr = norm.xw + static_cast<int64_t>(min(g, n - 1)) * K;
  } else {
    xr = x + static_cast<int64_t>(min(g, n - 1)) * ldx;
  }
  if (warp == 0) epi.preload(tile, n, smem + lay.epi, lane);
  __syncthreads();  // the mbarriers' initialisation, the hand-copied scales, x * w and its squares

  float* part = reinterpret_cast<float*>(smem + lay.partial);
  // The last warp (the fewest groups) turns the sums of squares into 1/rms for every row (first tile).
  const auto inv_rms = [&] {
    if (kNorm && warp == warps - 1) {
      if constexpr (is_prepared(M)) mbar_wait(bar + 1, 0);
      gemv_inv_rms_rows<M>(sums_s, n, warps, K, norm, inv_s, lane);
      __syncwarp();
    }
  };
  float acc[P][4];
  if constexpr (!LOOP) {
    mbar_wait(bar, 0);
    gemv_tile_sums<P, M>(codes_s, scales_s, cs, ss, xr, chunks, gw, warp, warps, g, t, lane, part, inv_rms,
                         acc);
    if (kNorm && norm.out != nullptr && warp == (warps > 1 ? 1 : 0))
      gemv_keep_x_norm_share(x, ldx, n, K, norm, inv_s, lane);
    if (warp != 0) return;
    gemv_store_tile<P, M>(epi, tile, acc, inv_s, g, t, n, smem + lay.epi);
  } else {
    for (int64_t cur = tile, it = 0; cur < tiles; cur += gridDim.x, ++it) {
      const int64_t st = (it % 2) * lay.stage;
      mbar_wait(it % 2 ? bar + 2 : bar, static_cast<uint32_t>((it / 2) % 2));
      gemv_tile_sums<P, M>(
          codes_s + st, scales_s + st, cs, ss, xr, chunks, gw, warp, warps, g, t, lane, part,
          [&] {
            if (it == 0) inv_rms();
          },
          acc);
      // Every warp is past the stage; warp 0 has read `part` before the next tile writes it.
      if (warps > 1) __syncthreads();
      if (kNorm && norm.out != nullptr && it == 0 && warp == (warps > 1 ? 1 : 0))
        gemv_keep_x_norm_share(x, ldx, n, K, norm, inv_s, lane);
      if (warp != 0) continue;
      const int64_t after_next = cur + 2 * static_cast<int64_t>(gridDim.x);
      if (after_next < tiles) {  // the stage is free: the tile after next goes into it
        GemvTile next[P];
        epi.tile(after_next, next);
        gemv_issue_tile<P>(next, K, cs, ss, codes_s + st, scales_s + st, it % 2 ? bar + 2 : bar, lane);
      }
      gemv_store_tile<P, M>(epi, cur, acc, inv_s, g, t, n, smem + lay.epi);
      if (cur + gridDim.x < tiles) epi.preload(cur + gridDim.x, n, smem + lay.epi, lane);
    }
  }
}

// Epilogues: tile(idx) names tile idx's parts, store(idx) writes what thread (g, t) holds of it.
// Every write of these kernels comes after pdl_wait() (PDL rule in linear.cuh).

// f(row, tok, q) for each accumulator slot q of thread (g, t) of tile idx that lies inside (N, n).
template <class F>
__device__ __forceinline__ void for_each_slot(int64_t idx, int64_t N, int g, int t, int n, F&& f) {
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const int64_t row = idx * kMmaTile + g + 8 * (q / 2);
    const int tok = 2 * t + q % 2;
    if (row < N && tok < n) f(row, tok, q);
  }
}
// One NVFP4 weight as the epilogues see it: its tiles, and y = acc * scale + bias (scale: the
// global scale times kMmaOutScale; bias (N) fp32 or null).
struct GemvWeight {
  const uint8_t* codes;   // (N, K/2)
  const uint8_t* scales;  // (N, K/16)
  int64_t N;
  float scale;
  const float* bias;

  __device__ GemvTile tile(int64_t K, int64_t idx) const {  // rows idx * 16 ...
    const int64_t r0 = idx * kMmaTile;
    return {codes + r0 * (K / 2), scales + r0 * (K / 16), tile_rows(N, r0)};
  }
  __device__ float value(float acc, int64_t row) const { return gemv_value(acc, scale, bias, row); }
  bool full_tiles() const { return N % kMmaTile == 0; }  // (host) no short last tile
};

template <typename OutT>
struct GemvLinear {  // y = x W^T * scale + bias
  GemvWeight w;
  int64_t K;
  OutT* y;
  int64_t ldy;

  bool full_tiles() const { return w.full_tiles(); }
  __device__ void tile(int64_t idx, GemvTile (&tl)[1]) const { tl[0] = w.tile(K, idx); }
  __device__ void preload(int64_t, int, unsigned char*, int) const {}
  __device__ void store(int64_t idx, const float (&acc)[1][4], int g, int t, int n,
                        const unsigned char*) const {
    for_each_slot(idx, w.N, g, t, n, [&](int64_t row, int tok, int q) {
      const float v = w.value(acc[0][q], row);
      if constexpr (sizeof(OutT) == 4)
        y[tok * ldy + row] = v;
      else
        y[tok * ldy + row] = __float2bfloat16_rn(v);
    });
  }
};

struct GemvMultiPart {
  GemvWeight w;
  int64_t tiles;
  bf16* y;
  int64_t ldy;
};

struct GemvMulti {  // up to 3 weights of one K, the tiles of each following those of the one before
  GemvMultiPart part[3];
  int count;
  int64_t K;

  bool full_tiles() const {
    for (int i = 0; i < count; ++i)
      if (!part[i].w.full_tiles()) return false;
    return true;
  }
  __device__ int locate(int64_t& tile) const {
    int i = 0;
    while (i + 1 < count && tile >= part[i].tiles) tile -= part[i++].tiles;
    return i;
  }
  __device__ void tile(int64_t idx, GemvTile (&tl)[1]) const {
    const GemvMultiPart& m = part[locate(idx)];  // idx becomes the tile within part i first
    tl[0] = m.w.tile(K, idx);
  }
  __device__ void preload(int64_t, int, unsigned char*, int) const {}
  __device__ void store(int64_t idx, const float (&acc)[1][4], int g, int t, int n,
                        const unsigned char*) const {
    const GemvMultiPart& m = part[locate(idx)];
    for_each_slot(idx, m.w.N, g, t, n, [&](int64_t row, int tok, int q) {
      m.y[tok * m.ldy + row] = __float2bfloat16_rn(m.w.value(acc[0][q], row));
    });
  }
};

// y = residual + bf16(x W^T * scale + bias); y may be residual. With next.xw: the next RMSNorm's
// start as well (NormHandoff): bf16(y * next.norm_w) * 2^64 in pair order, and per token the sum of y^2 over
// the tile's rows (each thread's rows g, g + 8, then the 8 lanes of a token slot) into column idx of sumsq.
struct GemvResidual {
  GemvWeight w;
  int64_t K;
  const bf16* residual;
  int64_t ldr;
  bf16* y;
  int64_t ldy;
  NormHandoff next;
  int64_t next_ld;

  bool full_tiles() const { return w.full_tiles(); }
  __device__ void tile(int64_t idx, GemvTile (&tl)[1]) const { tl[0] = w.tile(K, idx); }
  // Tile idx's residual rows (n x 16 bf16) and next norm weights (16 fp32) into shared memory s
  // (kEpiBytes) by warp 0 right after griddepcontrol.wait (cp.async, lanes 0 .. 2n-1 and 16 .. 19),
  // so that their L2 round trip runs under the main loop instead of in front of the stores. A
  // short last tile or unaligned buffers: store reads them itself.
  __device__ bool preloadable(int64_t idx) const {
    return (idx + 1) * kMmaTile <= w.N && aligned16(residual) && ldr % 8 == 0 &&
           (next.xw == nullptr || aligned16(next.norm_w));
  }
  __device__ void preload(int64_t idx, int n, unsigned char* s, int lane) const {
    if (!preloadable(idx)) return;
    const int64_t r0 = idx * kMmaTile;
    if (lane < 2 * n) cp_async16(s + lane * 16, residual + (lane / 2) * ldr + r0 + (lane % 2) * 8, 16);
    if (next.xw != nullptr && lane >= 16 && lane < 20)
      cp_async16(s + kGemvMaxTokens * kMmaTile * 2 + (lane - 16) * 16, next.norm_w + r0 + (lane - 16) * 4,
                 16);
    cp_async_commit();
  }
  __device__ void store(int64_t idx, const float (&acc)[1][4], int g, int t, int n,
                        const unsigned char* s) const {
    const bool pre = preloadable(idx);
    if (pre) {
      cp_async_wait<0>();
      __syncwarp();
    }
    const bf16* res_s = reinterpret_cast<const bf16*>(s);
    const float* nw_s = reinterpret_cast<const float*>(s + kGemvMaxTokens * kMmaTile * 2);
    float sq[2] = {0.0f, 0.0f};  // tokens 2t, 2t + 1
    for_each_slot(idx, w.N, g, t, n, [&](int64_t row, int tok, int q) {
      const int r = static_cast<int>(row - idx * kMmaTile);
      const float v = __bfloat162float(__float2bfloat16_rn(w.value(acc[0][q], row)));
      const bf16 res = pre ? res_s[tok * kMmaTile + r] : residual[tok * ldr + row];
      const bf16 s = __float2bfloat16_rn(__bfloat162float(res) + v);
      y[tok * ldy + row] = s;
      if (next.xw != nullptr) {
        const float f = __bfloat162float(s);
        const float nw = pre ? nw_s[r] : next.norm_w[row];
        next.xw[tok * w.N + norm_handoff_index(row)] = __float2bfloat16_rn(f * nw * norm_handoff_scale);
        sq[q % 2] = fmaf(f, f, sq[q % 2]);
      }
    });
    if (next.xw == nullptr) return;
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float v = sq[e];
#pragma unroll
      for (int o = 4; o < kWarp; o *= 2) v += __shfl_xor_sync(0xffffffffu, v, o);  // over g
      if (g == 0 && 2 * t + e < n) next.sumsq[(2 * t + e) * next_ld + idx] = v;
    }
  }
};

struct GemvSwiglu {     // out = bf16(silu(bf16(x Wg^T)) * bf16(x Wu^T)), as swiglu_forward rounds
  GemvWeight gate, up;  // one shape, no bias
  int64_t K;
  bf16* out;
  int64_t ldo;
  bf16* paired;  // null, or (one token) out again in pair order * 2^64 (exact)

  bool full_tiles() const { return gate.full_tiles(); }
  __device__ void tile(int64_t idx, GemvTile (&tl)[2]) const {
    tl[0] = gate.tile(K, idx);
    tl[1] = up.tile(K, idx);
  }
  __device__ void preload(int64_t, int, unsigned char*, int) const {}
  __device__ void store(int64_t idx, const float (&acc)[2][4], int g, int t, int n,
                        const unsigned char*) const {
    for_each_slot(idx, gate.N, g, t, n, [&](int64_t row, int tok, int q) {
      const float gv = __bfloat162float(__float2bfloat16_rn(gate.value(acc[0][q], row)));
      const float uv = __bfloat162float(__float2bfloat16_rn(up.value(acc[1][q], row)));
      const bf16 a = __float2bfloat16_rn(gv / (1.0f + expf(-gv)) * uv);  // activation.cu's silu
      out[tok * ldo + row] = a;
      if (paired != nullptr)
        paired[norm_handoff_index(row)] = __float2bfloat16_rn(__bfloat162float(a) * 0x1p64f);
    });
  }
};

int g_gemv_tile_loop = 0;  // set_gemv_tile_loop

// The tile loop runs where a GEMV has more than this many waves of one-tile blocks: the head (9,496
// tiles, ~24 waves on an H100) gained 1-2% in the decode step, the gate/up GEMV (608 tiles, 1.5
// waves) lost 3-4%, and 1-2% with its tiles dealt evenly (3 per block) (nibble bench, H100,
// 2026-11-26): the loop's blocks hold their SMs to the last tile, where one-tile blocks free them for
// the next kernel's early-started blocks as they finish.
constexpr int64_t kGemvLoopWaves = 4;

// Once per kernel and device: allow the device's largest dynamic shared memory.
template <class Kernel>
void gemv_kernel_setup(Context& ctx, Kernel kernel) {
  ctx.kernel_setup(reinterpret_cast<const void*>(kernel), [&] {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(ctx.info().smem_per_block_optin)));
  });
}

// M: how `norm`, the RMSNorm in front, is applied (kPrologue: its rows take n * (K + kNormPad)
// bf16 of shared memory). One block per tile up to kGemvLoopWaves waves of them; beyond (the head) the
// tile loop, on as many blocks as fit on the SMs at once (set_gemv_tile_loop overrides).
template <int P, GemvNormMode M = GemvNormMode::kNone, class Epi>
void launch_gemv_mma(Context& ctx, int64_t tiles, const bf16* x, int64_t ldx, int64_t n, int64_t K,
                     const Epi& epi, const L2Prefetch& prefetch, const GemvNorm& norm = {}) {
  const auto kernel = nvfp4_gemv_mma_kernel<P, M, Epi, false>;
  const int warps = gemv_warps(K, tiles);
  const size_t smem = static_cast<size_t>(GemvSmem(P, K, warps, static_cast<int>(n), M).total);
  if (smem > ctx.info().smem_per_block_optin)
    fail("nvfp4 GEMV: K={} with {} tokens needs {} bytes of shared memory per block (the device has {})", K,
         n, smem, ctx.info().smem_per_block_optin);
  gemv_kernel_setup(ctx, kernel);
  const int threads = warps * kWarp;
  const size_t smem2 = static_cast<size_t>(GemvSmem(P, K, warps, static_cast<int>(n), M, 2).total);
  const int64_t wave =
      static_cast<int64_t>(ctx.blocks_per_sm(reinterpret_cast<const void*>(kernel), threads, smem)) *
      ctx.info().sm_count;
  bool loop = tiles > kGemvLoopWaves * wave;
  if (g_gemv_tile_loop != 0) loop = g_gemv_tile_loop > 0;
  if (loop && epi.full_tiles() && smem2 <= ctx.info().smem_per_block_optin) {
    const auto looped = nvfp4_gemv_mma_kernel<P, M, Epi, true>;
    gemv_kernel_setup(ctx, looped);
    int64_t blocks =
        static_cast<int64_t>(ctx.blocks_per_sm(reinterpret_cast<const void*>(looped), threads, smem2)) *
        ctx.info().sm_count;
    if (g_gemv_tile_loop > 0) blocks = g_gemv_tile_loop;
    if (blocks > 0) {
      launch_pdl(ctx, looped, dim3(static_cast<unsigned>(std::min(tiles, blocks))), dim3(threads), smem2, x,
                 ldx, static_cast<int>(n), K, epi, norm, prefetch, tiles);
      return;
    }
  }
  launch_pdl(ctx, kernel, dim3(static_cast<unsigned>(tiles)), dim3(threads), smem, x, ldx,
             static_cast<int>(n), K, epi, norm, prefetch, tiles);
}

const uint8_t* codes_of(const Weight& w) { return static_cast<const uint8_t*>(w.data); }

GemvWeight gemv_weight(const Weight& w, const float* bias) {
  return {codes_of(w), w.scales, w.out, w.global_scale * kMmaOutScale, bias};
}

}  // namespace

void set_gemv_tile_loop(int blocks) { g_gemv_tile_loop = blocks; }

bool nvfp4_gemv_fusable(const Weight& w, int64_t n) {
  return w.is_nvfp4() && n >= 1 && n <= kGemvMaxTokens && w.in % 32 == 0 && aligned16(w.data) &&
         aligned16(w.scales);
}

namespace {
void check_fused(const char* what, const bf16* x, int64_t ldx, int64_t n, const Weight& w) {
  if (!nvfp4_gemv_fusable(w, n))
    fail("{}: NVFP4 weight with K % 32 == 0 (16-byte rows) and 1..{} tokens expected (K={}, n={})", what,
         kGemvMaxTokens, w.in, n);
  if (!aligned16(x) || ldx % 8 != 0) fail("{}: x must be 16-byte aligned with ldx % 8 == 0", what);
}

GemvMulti multi_epilogue(const bf16* x, int64_t ldx, int64_t n, const GemvTarget* targets, int count,
                         int64_t& total_tiles) {
  if (count < 1 || count > 3) fail("nvfp4_gemv_multi: {} targets (1 to 3)", count);
  GemvMulti epi{};
  epi.count = count;
  epi.K = targets[0].w->in;
  total_tiles = 0;
  for (int i = 0; i < count; ++i) {
    const Weight& w = *targets[i].w;
    check_fused("nvfp4_gemv_multi", x, ldx, n, w);
    if (w.in != epi.K) fail("nvfp4_gemv_multi: target {} has K={}, target 0 K={}", i, w.in, epi.K);
    const int64_t tiles = ceil_div(w.out, kMmaTile);
    epi.part[i] = {gemv_weight(w, targets[i].bias), tiles, targets[i].y, targets[i].ldy};
    total_tiles += tiles;
  }
  return epi;
}

GemvSwiglu swiglu_epilogue(const bf16* x, int64_t ldx, int64_t n, const Weight& wg, const Weight& wu,
                           bf16* out, int64_t ldo, bf16* paired) {
  check_fused("nvfp4_gemv_swiglu", x, ldx, n, wg);
  check_fused("nvfp4_gemv_swiglu", x, ldx, n, wu);
  if (wg.out != wu.out || wg.in != wu.in)
    fail("nvfp4_gemv_swiglu: gate ({}, {}) and up ({}, {}) differ in shape", wg.out, wg.in, wu.out, wu.in);
  if (paired != nullptr && (n != 1 || wg.out % 8 != 0 || !aligned16(paired)))
    fail(
        "nvfp4_gemv_swiglu: a pair-ordered copy takes one token, out % 8 == 0 and a 16-byte-aligned buffer "
        "(n={}, out={})",
        n, wg.out);
  return GemvSwiglu{gemv_weight(wg, nullptr), gemv_weight(wu, nullptr), wg.in, out, ldo, paired};
}

// The RMSNorm in front of a GEMV of K inputs: a weight, and x_norm_out (n, K) null or 16-byte
// aligned and apart from x (block 0 writes it while other blocks still read x); prepared: a
// NormHandoff for this weight (kPrepared), null: the kernel's prologue.
GemvNorm norm_of(const char* what, const bf16* x, int64_t ldx, int64_t n, int64_t K, const float* norm_w,
                 float eps, bf16* x_norm_out, const NormHandoff* prepared) {
  if (norm_w == nullptr) fail("{}: no norm weight", what);
  if (x_norm_out != nullptr) {
    if (!aligned16(x_norm_out)) fail("{}: x_norm_out must be 16-byte aligned", what);
    const auto lo = reinterpret_cast<uintptr_t>(x), hi = reinterpret_cast<uintptr_t>(x + (n - 1) * ldx + K);
    const auto olo = reinterpret_cast<uintptr_t>(x_norm_out),
               ohi = reinterpret_cast<uintptr_t>(x_norm_out + n * K);
    if (olo < hi && lo < ohi) fail("{}: x_norm_out overlaps x", what);
  }
  GemvNorm norm{norm_w, eps, x_norm_out};
  if (prepared != nullptr) {
    if (prepared->norm_w != norm_w) fail("{}: the prepared RMSNorm is for another norm weight", what);
    if (!aligned16(prepared->xw) || !aligned16(prepared->sumsq))
      fail("{}: the prepared RMSNorm's buffers must be 16-byte aligned", what);
    norm.xw = prepared->xw;
    norm.sumsq = prepared->sumsq;
    norm.ld = norm_handoff_ld(K);
  }
  return norm;
}

// The two RMSNorm variants of one fused GEMV: the prologue, or the prepared handoff.
template <int P, class Epi>
void launch_gemv_mma_norm(Context& ctx, int64_t tiles, const bf16* x, int64_t ldx, int64_t n, int64_t K,
                          const Epi& epi, const L2Prefetch& prefetch, const GemvNorm& norm) {
  if (norm.xw != nullptr && n == 1)
    launch_gemv_mma<P, GemvNormMode::kPreparedOne>(ctx, tiles, x, ldx, n, K, epi, prefetch, norm);
  else if (norm.xw != nullptr)
    launch_gemv_mma<P, GemvNormMode::kPrepared>(ctx, tiles, x, ldx, n, K, epi, prefetch, norm);
  else
    launch_gemv_mma<P, GemvNormMode::kPrologue>(ctx, tiles, x, ldx, n, K, epi, prefetch, norm);
}

// launch(epi) with the GemvLinear epilogue for y_dtype (BF16 or F32): y = x W^T * scale + bias.
template <class Launch>
void with_linear_epilogue(const char* what, const Weight& w, const float* bias, void* y, DType y_dtype,
                          int64_t ldy, Launch&& launch) {
  if (y_dtype == DType::F32)
    launch(GemvLinear<float>{gemv_weight(w, bias), w.in, static_cast<float*>(y), ldy});
  else if (y_dtype == DType::BF16)
    launch(GemvLinear<bf16>{gemv_weight(w, bias), w.in, static_cast<bf16*>(y), ldy});
  else
    fail("{}: output dtype {} (expected BF16 or F32)", what, dtype_name(y_dtype));
}
}  // namespace

int64_t norm_handoff_ld(int64_t dim) { return GemvSmem::handoff_ld(dim); }

size_t norm_handoff_sumsq_offset(int64_t n, int64_t dim) {
  return (static_cast<size_t>(n * dim) * 2 + 255) / 256 * 256;
}

size_t norm_handoff_bytes(int64_t n, int64_t dim) {
  return norm_handoff_sumsq_offset(n, dim) + static_cast<size_t>(n * norm_handoff_ld(dim)) * 4;
}

void nvfp4_gemv_linear(Context& ctx, const bf16* x, int64_t ldx, int64_t n, const Weight& w,
                       const float* bias, void* y, DType y_dtype, int64_t ldy, const L2Prefetch& prefetch) {
  check_fused("nvfp4_gemv_linear", x, ldx, n, w);
  with_linear_epilogue("nvfp4_gemv_linear", w, bias, y, y_dtype, ldy, [&](const auto& epi) {
    launch_gemv_mma<1>(ctx, ceil_div(w.out, kMmaTile), x, ldx, n, w.in, epi, prefetch);
  });
}

void nvfp4_gemv_multi(Context& ctx, const bf16* x, int64_t ldx, int64_t n, const GemvTarget* targets,
                      int count, const L2Prefetch& prefetch) {
  int64_t tiles = 0;
  const GemvMulti epi = multi_epilogue(x, ldx, n, targets, count, tiles);
  launch_gemv_mma<1>(ctx, tiles, x, ldx, n, epi.K, epi, prefetch);
}

void nvfp4_gemv_multi_rmsnorm(Context& ctx, const bf16* x, int64_t ldx, int64_t n, const float* norm_w,
                              float eps, const GemvTarget* targets, int count, bf16* x_norm_out,
                              const L2Prefetch& prefetch, const NormHandoff* prepared) {
  int64_t tiles = 0;
  const GemvMulti epi = multi_epilogue(x, ldx, n, targets, count, tiles);
  const GemvNorm norm =
      norm_of("nvfp4_gemv_multi_rmsnorm", x, ldx, n, epi.K, norm_w, eps, x_norm_out, prepared);
  launch_gemv_mma_norm<1>(ctx, tiles, x, ldx, n, epi.K, epi, prefetch, norm);
}

void nvfp4_gemv_swiglu(Context& ctx, const bf16* x, int64_t ldx, int64_t n, const Weight& wg,
                       const Weight& wu, bf16* out, int64_t ldo, const L2Prefetch& prefetch,
                       bf16* paired_out) {
  const GemvSwiglu epi = swiglu_epilogue(x, ldx, n, wg, wu, out, ldo, paired_out);
  launch_gemv_mma<2>(ctx, ceil_div(wg.out, kMmaTile), x, ldx, n, wg.in, epi, prefetch);
}

void nvfp4_gemv_swiglu_rmsnorm(Context& ctx, const bf16* x, int64_t ldx, int64_t n, const float* norm_w,
                               float eps, const Weight& wg, const Weight& wu, bf16* out, int64_t ldo,
                               bf16* x_norm_out, const L2Prefetch& prefetch, const NormHandoff* prepared,
                               bf16* paired_out) {
  const GemvSwiglu epi = swiglu_epilogue(x, ldx, n, wg, wu, out, ldo, paired_out);
  const GemvNorm norm =
      norm_of("nvfp4_gemv_swiglu_rmsnorm", x, ldx, n, wg.in, norm_w, eps, x_norm_out, prepared);
  launch_gemv_mma_norm<2>(ctx, ceil_div(wg.out, kMmaTile), x, ldx, n, wg.in, epi, prefetch, norm);
}

void nvfp4_gemv_rmsnorm(Context& ctx, const bf16* x, int64_t ldx, int64_t n, const float* norm_w, float eps,
                        const Weight& w, void* y, DType y_dtype, int64_t ldy, bf16* x_norm_out,
                        const L2Prefetch& prefetch, const NormHandoff* prepared) {
  check_fused("nvfp4_gemv_rmsnorm", x, ldx, n, w);
  const GemvNorm norm = norm_of("nvfp4_gemv_rmsnorm", x, ldx, n, w.in, norm_w, eps, x_norm_out, prepared);
  with_linear_epilogue("nvfp4_gemv_rmsnorm", w, nullptr, y, y_dtype, ldy, [&](const auto& epi) {
    launch_gemv_mma_norm<1>(ctx, ceil_div(w.out, kMmaTile), x, ldx, n, w.in, epi, prefetch, norm);
  });
}

void nvfp4_gemv_residual(Context& ctx, const bf16* x, int64_t ldx, int64_t n, const Weight& w,
                         const float* bias, const bf16* residual, int64_t ldr, bf16* y, int64_t ldy,
                         const L2Prefetch& prefetch, const NormHandoff* handoff, const bf16* x_paired) {
  check_fused("nvfp4_gemv_residual", x, ldx, n, w);
  if (x_paired != nullptr && (n != 1 || !aligned16(x_paired)))
    fail("nvfp4_gemv_residual: a pair-ordered x takes one token and a 16-byte-aligned buffer (n={})", n);
  GemvResidual epi{gemv_weight(w, bias), w.in, residual, ldr, y, ldy, {}, 0};
  if (handoff != nullptr) {
    if (handoff->norm_w == nullptr || !aligned16(handoff->xw) || !aligned16(handoff->sumsq))
      fail("nvfp4_gemv_residual: a handoff needs a norm weight and 16-byte-aligned buffers");
    if (w.out % 8 != 0) fail("nvfp4_gemv_residual: a handoff needs out % 8 == 0 (out={})", w.out);
    epi.next = *handoff;
    epi.next_ld = norm_handoff_ld(w.out);
  }
  const int64_t tiles = ceil_div(w.out, kMmaTile);
  if (x_paired != nullptr)
    launch_gemv_mma<1, GemvNormMode::kPairedOne>(ctx, tiles, x_paired, w.in, n, w.in, epi, prefetch);
  else
    launch_gemv_mma<1>(ctx, tiles, x, ldx, n, w.in, epi, prefetch);
}

}  // namespace nibble::cuda
