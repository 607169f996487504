// bench_cuda_step_structure: what the *structure* of a decode step costs, without its arithmetic.
//
//   bench_cuda_step_structure [compute_ns (default 0)] [real]   ("real": only the real-loop rows)
//
// The step of Qwen3-4B with NVFP4 weights (batch 1) as 181 dependent stages -- per layer q/k/v,
// attention, o_proj, gate/up, down_proj, then the head -- each streaming its real weight bytes
// (16-row tiles: 16 x K/2 codes + 16 x K/16 scales, TMA bulk copies into shared memory), waiting for
// the stage before, reading the vector it wrote (kernels: 10 KB; persistent: its real size),
// spinning `compute_ns` per tile (a stand-in for a main loop), and writing its own. Attention is a stage of
// 132 tiles without weights. Printed: ms per step and GB/s of weights (2.26 GB per step) for
//   kernels/stream      one kernel per stage, stream order;
//   kernels/pdl         the same with programmatic dependent launch (weights copied before
//                       griddepcontrol.wait: nibble's decode step);
//   kernels/counters    PDL, but each block waits on a completion counter of the stage before
//                       (ld.acquire) instead of griddepcontrol.wait;
//   kernels/pdl+loop    PDL, and each kernel on as many blocks as fit, each taking tiles b, b + grid,
//                       ... through two shared-memory stages;
//   persistent/*        one kernel for the whole step, one block per SM: a producer warp streams the
//                       SM's share of every stage's tiles (dealt round robin, in stage order) through a
//                       ring of 8 stages, never waiting for data; two consumer groups of 4 warps take
//                       alternate tiles and, at a stage's first, read the whole vector the stage
//                       before wrote (its real size: 2.5-9.5K bf16) -- after every SM has signalled
//                       that stage (fence + atomic counter, polled), or spinning on a flag stored
//                       with each word (LL, NCCL's low-latency protocol). "stream only": no waits;
//                       "waits": no weight bytes. "stream only, S x U in P": no waits, a ring of S slots
//                       of U bytes, each work item copied in P bulk copies ("ef": L2 evict-first);
//   hybrid              attention a kernel (PDL), the GEMV stages between two attentions one
//                       persistent kernel each (PDL: its producer streams while attention runs);
//   real loop, G x W    persistent, with the real main loop (gemv_tile.cuh) in place of the spin:
//                       G consumer groups of W warps, each with its own slots of the ring; work
//                       items = K-slices (<= 2560 columns) of 16-row tiles; variants and ablations
//                       (block-diagonal loop, codes unconverted, no mma, no loop, x in shared memory
//                       or read from global memory, slices dealt as items of their own) and, with
//                       "per consumer group", where one profiled step's time goes (clock64).
// Runs on one CUDA graph (kernels) or one launch (persistent) per step; median of 30 steps. The
// numbers bound what a restructured step can gain: see bench/RESULTS.md (seventh and eighth
// sessions). Not a correctness test: the results are not checked, and the `persistent/*` rows'
// consumer groups share one ring and wait on its slots by parity, which a group two rounds ahead
// of a slot could misread (harmless for their timing; the real-loop kernel gives each group its own
// slots, after a deadlock from exactly that).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "backend/cuda/async_copy.cuh"
#include "backend/cuda/check.cuh"
#include "backend/cuda/context.cuh"
#include "backend/cuda/gemv_tile.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/timing.h"

namespace nibble::cuda {
namespace {

constexpr int kDim = 2560;         // the vector each stage reads and writes
constexpr int kTileBytes = 23040;  // largest tile of the persistent ring (q/k/v's: K = 2560)

struct Stage {
  int tiles, threads;
  uint32_t tile_bytes;
  int out_words;   // its output vector in 32-bit words (two bf16 each)
  int K = 0;       // input length (the real main loop: x of K bf16)
  int kslice = 0;  // columns per slice of a tile (the real main loop's work item); 0: no weights
  int parts = 1;   // weights per tile (gate + up: 2)
};

// Qwen3-4B (hidden 2560, q 32 x 128, kv 8 x 128, intermediate 9728, vocab 151936, 36 layers).
std::vector<Stage> qwen3_4b_step() {
  const auto tile = [](uint32_t K, uint32_t parts) { return parts * (16 * K / 2 + 16 * K / 16); };
  std::vector<Stage> s;
  for (int l = 0; l < 36; ++l) {
    s.push_back({(4096 + 2 * 1024) / 16, 256, tile(2560, 1), 3072, 2560, 2560});  // q/k/v
    s.push_back({132, 256, 0, 2048, 6144, 0});                                    // attention (no weights)
    s.push_back({2560 / 16, 256, tile(4096, 1), 1280, 4096, 2048});               // o_proj
    s.push_back({9728 / 16, 256, tile(2560, 2), 4864, 2560, 2560, 2});            // gate + up
    s.push_back({2560 / 16, 512, tile(9728, 1), 1280, 9728, 2432});               // down_proj
  }
  s.push_back({151936 / 16, 256, tile(2560, 1), 75968, 2560, 2560});  // head
  return s;
}

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}

__device__ __forceinline__ void spin_ns(int ns) {
  const long long t0 = clock64();
  while (clock64() - t0 < 2LL * ns) {  // ~2 GHz SM clock
  }
}

// Lanes 0..pieces-1 of the calling warp copy `bytes` from src into dst in `pieces` bulk copies,
// completing on bar.
__device__ __forceinline__ void copy_tile(unsigned char* dst, const char* src, uint32_t bytes, uint64_t* bar,
                                          int lane, bool evict_first = false, int pieces = 16) {
  if (lane == 0) mbar_arrive_expect_tx(bar, bytes);
  __syncwarp();
  const uint32_t piece = (bytes / pieces + 15) / 16 * 16, lo = lane * piece, hi = min(bytes, lo + piece);
  if (lo < hi) {
    if (evict_first)
      bulk_load(dst + lo, src + lo, hi - lo, bar, l2_evict_first_policy());
    else
      bulk_load(dst + lo, src + lo, hi - lo, bar);
  }
}

// Sum of the stage's input vector (an L2 round trip after the wait), by the block.
__device__ float read_vector(const float* x, float* red) {
  float s = 0.0f;
  for (int j = threadIdx.x; j < kDim; j += blockDim.x) s += __ldcg(x + j);
  for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = s;
  __syncthreads();
  float t = 0.0f;
  for (int i = 0; i < static_cast<int>(blockDim.x / 32); ++i) t += red[i];
  return t;
}

enum class Wait { kStream, kPdl, kCounter };

// One stage as one kernel, one tile per block (LOOP: tiles b, b + grid, ... through two stages).
template <Wait W, bool LOOP>
__global__ void stage_kernel(const float* xin, float* xout, const char* w, uint32_t tile_bytes, int tiles,
                             const unsigned* prev_done, unsigned prev_target, unsigned* done,
                             int compute_ns) {
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ __align__(8) uint64_t bar[2];
  __shared__ float red[32];
  const int lane = threadIdx.x % 32;
  const int64_t first = blockIdx.x, stride = LOOP ? gridDim.x : 1, end = LOOP ? tiles : first + 1;
  if (tile_bytes > 0 && threadIdx.x < 32) {
    if (lane == 0) {
      mbar_init(&bar[0]);
      mbar_init(&bar[1]);
    }
    __syncwarp();
    copy_tile(smem, w + first * tile_bytes, tile_bytes, &bar[0], lane);
    if (LOOP && first + stride < end)
      copy_tile(smem + tile_bytes, w + (first + stride) * tile_bytes, tile_bytes, &bar[1], lane);
  }
  if constexpr (W != Wait::kStream) pdl_launch_dependents();
  if constexpr (W == Wait::kPdl) pdl_wait();
  if constexpr (W == Wait::kCounter) {
    if (prev_done != nullptr && threadIdx.x == 0)
      while (ld_acquire(prev_done) < prev_target) {
      }
    __syncthreads();
  }
  const float v = read_vector(xin, red);
  for (int64_t t = first, it = 0; t < end; t += stride, ++it) {
    const int st = static_cast<int>(it % 2);
    if (tile_bytes > 0) mbar_wait(&bar[st], static_cast<uint32_t>((it / 2) % 2));
    if (compute_ns > 0) spin_ns(compute_ns);
    const float u = tile_bytes > 0 ? v + smem[st * tile_bytes + threadIdx.x * 64 % tile_bytes] * 1e-30f : v;
    if (threadIdx.x < 16) __stcg(xout + (t * 16 + threadIdx.x) % kDim, u * 1e-4f);
    if constexpr (LOOP) {
      __syncthreads();  // stage st consumed
      if (tile_bytes > 0 && threadIdx.x < 32 && t + 2 * stride < end)
        copy_tile(smem + st * tile_bytes, w + (t + 2 * stride) * tile_bytes, tile_bytes, &bar[st], lane);
    }
  }
  if constexpr (W == Wait::kCounter) {
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(done, 1u);
    }
  }
}

// The whole step in one kernel (see the header). Each SM's work is the list work[begin[b] ..
// begin[b + 1]); need[s]: how many (SM, group) pairs signal stage s. Stage s writes the vector of
// words[s] 32-bit words (its real output: two bf16 per word) into buffer s % 2, its tile `unit`
// (of units) the words unit, unit + units, ...; the first tile of a stage a group takes reads
// the whole vector of the stage before. Counters: the words plain, then per group and stage a
// fence and a counter the readers poll. LL (flag in the data, NCCL's low-latency protocol): each
// word goes out as one 8-byte store {word, flag} with flag = the step's stage number, and the
// readers spin on the flags themselves: no fence, no counter.
struct Work {
  uint64_t offset;  // of the tile's weights
  uint32_t bytes;
  int stage, unit, units;
  int last;  // the consumer group's last tile of this stage
};
constexpr int kMaxRing = 16, kConsumerWarps = 8, kReadBatch = 16;
// The persistent kernels' ring: slots of `unit` bytes (the most weight bytes of one work item).
struct Ring {
  int unit, slots;
  bool evict_first;
  bool ahead = false;  // load each work item's description one item ahead (else: when due)
  int pieces = 16;     // bulk copies per work item
};
enum class Sync { kNone, kCounters, kLowLatency };

// The sum of words [0, count) of buffer `in` (LL: once each carries `flag`; gives up after ~2^20
// polls of a batch and sets *error).
template <Sync S>
__device__ float read_words(const uint32_t* in, const uint64_t* in_ll, int count, uint32_t flag, int gtid,
                            int nthr, unsigned* error) {
  float v = 0.0f;
  for (int j0 = gtid; j0 < count; j0 += kReadBatch * nthr) {
    uint64_t got[kReadBatch];
    for (int spins = 0;; ++spins) {
      bool ready = true;
#pragma unroll
      for (int k = 0; k < kReadBatch; ++k) {
        const int j = j0 + k * nthr;
        if (j >= count) {
          got[k] = static_cast<uint64_t>(flag) << 32;
          continue;
        }
        if constexpr (S == Sync::kLowLatency) {
          asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(got[k]) : "l"(in_ll + j) : "memory");
          ready = ready && static_cast<uint32_t>(got[k] >> 32) == flag;
        } else {
          got[k] = (static_cast<uint64_t>(flag) << 32) | __ldcg(in + j);
        }
      }
      if (ready) break;
      if (spins > (1 << 20)) {
        atomicExch(error, 1u);
        break;
      }
    }
#pragma unroll
    for (int k = 0; k < kReadBatch; ++k) v += __uint_as_float(static_cast<uint32_t>(got[k]) & 0x3fffffffu);
  }
  return v;
}

// G consumer groups of kConsumerWarps / G warps.
template <Sync S, int G>
__global__ void __launch_bounds__((1 + kConsumerWarps) * 32, 1)
    persistent_step(const char* w, const Work* work, const int* begin, uint32_t* vec, uint64_t* vec_ll,
                    const int* words, int max_words, unsigned* done, const unsigned* need, uint32_t step_base,
                    unsigned* error, int compute_ns, int first_stage, bool pdl, Ring ring) {
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ __align__(8) uint64_t full[kMaxRing], empty[kMaxRing];
  const int kRing = ring.slots;
  constexpr int kGroupWarps = kConsumerWarps / G;
  __shared__ float red[kConsumerWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b = begin[blockIdx.x], e = begin[blockIdx.x + 1];
  if (threadIdx.x == 0)
    for (int s = 0; s < kRing; ++s) {
      mbar_init(&full[s]);
      mbar_init(&empty[s]);
    }
  __syncthreads();
  if (pdl) pdl_launch_dependents();
  if (warp == kConsumerWarps) {  // the producer
    Work next = b < e ? work[b] : Work{};
    for (int i = b; i < e; ++i) {
      const int s = (i - b) % kRing, round = (i - b) / kRing;
      const Work u = ring.ahead ? next : work[i];
      if (ring.ahead && i + 1 < e) next = work[i + 1];
      if (round > 0) mbar_wait(&empty[s], (round - 1) % 2);
      if (u.bytes > 0) {
        copy_tile(smem + s * ring.unit, w + u.offset, u.bytes, &full[s], lane, ring.evict_first, ring.pieces);
      } else if (lane == 0) {
        mbar_arrive_expect_tx(&full[s], 0);
      }
    }
    return;
  }
  const int group = warp / kGroupWarps, gtid = threadIdx.x % (kGroupWarps * 32), nthr = kGroupWarps * 32;
  int stage = -1;
  float v = 0.0f;
  if (pdl) pdl_wait();
  Work next = b + group < e ? work[b + group] : Work{};
  for (int i = b + group; i < e; i += G) {
    const int s = (i - b) % kRing, round = (i - b) / kRing;
    const Work u = ring.ahead ? next : work[i];
    if (ring.ahead && i + G < e) next = work[i + G];
    if (u.stage != stage) {
      stage = u.stage;
      if (S == Sync::kCounters && stage > first_stage && gtid == 0)
        while (ld_acquire(done + stage - 1) < need[stage - 1]) {
        }
      asm volatile("bar.sync %0, %1;" ::"r"(1 + group), "r"(nthr) : "memory");
      if (stage > 0) {
        const int in = (stage - 1) % 2;
        v = read_words<S>(vec + in * max_words, vec_ll + in * max_words, words[stage - 1], step_base + stage,
                          gtid, nthr, error);
      }
    }
    mbar_wait(&full[s], round % 2);
    if (compute_ns > 0) spin_ns(compute_ns);
    float sum = u.bytes > 0 ? v + smem[s * ring.unit + gtid * 64 % u.bytes] * 1e-30f : v;
    for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) red[warp] = sum;
    asm volatile("bar.sync %0, %1;" ::"r"(1 + group), "r"(nthr) : "memory");
    if (gtid == 0) mbar_arrive(&empty[s]);
    const uint32_t word = __float_as_uint(red[group * kGroupWarps] * 1e-4f) & 0x3fffffffu;
    const int out = stage % 2;
    for (int j = u.unit + gtid * u.units; j < words[stage]; j += nthr * u.units) {
      if constexpr (S == Sync::kLowLatency) {
        const uint64_t wf = (static_cast<uint64_t>(step_base + stage + 1) << 32) | word;
        asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" ::"l"(vec_ll + out * max_words + j), "l"(wf)
                     : "memory");
      } else {
        __stcg(vec + out * max_words + j, word);
      }
    }
    if (S == Sync::kCounters && u.last) {
      asm volatile("bar.sync %0, %1;" ::"r"(1 + group), "r"(nthr) : "memory");
      if (gtid == 0) {
        __threadfence();
        atomicAdd(done + stage, 1u);
      }
    }
  }
}

// The persistent step with the real main loop (gemv_tile.cuh) instead of a spin. A work item is one
// K-slice (<= 2560 columns) of one 16-row tile of one weight: the producer copies its 16 code rows
// (one bulk copy each, into rows padded as the GEMV kernels pad them) and its scales into the next
// ring slot of the consumer group that owns the item; the group runs the main loop over the slice,
// keeps the sums in registers across the tile's slices, and after the last one adds its warps' sums
// (shared memory, in warp order) and writes the tile's 16 outputs. At a stage's first item a group
// waits for the stage before (counters), then (unless x is read from global memory) copies its
// input vector (K bf16, 16-byte ld.global.cg) into its own shared-memory buffer.
struct RealWork {
  uint64_t offset;  // of the slice's codes (16 rows x kslice/2), then its scales (16 x kslice/16)
  uint32_t bytes;
  int stage, unit, units;
  int last;  // the consumer group's last item of this stage
  int group, slice, slices, k0, kslice, K;
};
constexpr int kRealSlot = 16 * 1344 + 16 * 160;  // a 2560-column slice, rows padded (smem_code_stride)
constexpr int kRealMaxK = 9728, kRealMaxRing = 8;
// Kernel variants (bits of V): the block-diagonal main loop (one token, the scale blocks as the
// mma's columns: what nibble's decode GEMVs run where x arrives prepared) instead of the token-column
// loop; no shared-memory input vectors (x read from global memory).
constexpr int kRealBlockDiagonal = 1, kRealNoXBuffer = 2, kRealRawCodes = 4, kRealRawTwoChains = 8,
              kRealRawNoMma = 16, kRealRelease = 32,
              kRealUnroll2 = 64;  // red.release: the stage signal without a separate fence;
                                  // unroll 2: the raw loop's groups two at a time

// The block-diagonal loop's loads and mmas with the codes fed to the mma as they are (no e2m1 ->
// bf16 conversion): what the main loop would cost if dequantising were free. Timing only.
// CHAINS: independent mma accumulators per group of 8 mmas (1 or 2); 0: no mma at all (the loads
// alone, their words folded into the sums).
template <int CHAINS, bool UNROLL2>
__device__ __forceinline__ void raw_codes_loop(const unsigned char* codes_s, const unsigned char* scales_s,
                                               int64_t cs, int64_t ss, const bf16* __restrict__ xr,
                                               int64_t chunks, int gw, int warp, int warps, int g, int t,
                                               float (&acc)[1][4]) {
  const bool x_lo = g == 2 * t, x_hi = g == 2 * t + 1;
  const auto group = [&](int jj) {
    const int64_t c = 4 * (warp + static_cast<int64_t>(warps) * jj) + t;
    const bool in = c < chunks;
    uint4 xa[2], xb[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      xa[i] = in && x_lo ? *reinterpret_cast<const uint4*>(xr + c * 32 + i * 8) : make_uint4(0, 0, 0, 0);
      xb[i] = in && x_hi ? *reinterpret_cast<const uint4*>(xr + c * 32 + 16 + i * 8) : make_uint4(0, 0, 0, 0);
    }
    uint4 wv[1][2];
    uint32_t s2[1][2];
    gemv_load_chunk<1>(codes_s, scales_s, cs, ss, c, in, g, wv, s2);
    const float2 sf0 = fp8x2_to_float2(static_cast<uint16_t>(s2[0][0])),
                 sf1 = fp8x2_to_float2(static_cast<uint16_t>(s2[0][1]));
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f}, e[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      const int w = m / 4;
      if constexpr (CHAINS == 0) {
        d[m % 4] += __uint_as_float((word_of(wv[0][0], w) ^ word_of(wv[0][1], 2 + w) ^ word_of(xa[w], m % 4) ^
                                     word_of(xb[w], m % 4)) &
                                    0x3f7fffffu);
      } else {
        mma_m16n8k16<bf16>(CHAINS == 2 && m % 2 ? e : d, word_of(wv[0][0], w), word_of(wv[0][1], w),
                           word_of(wv[0][0], 2 + w), word_of(wv[0][1], 2 + w), word_of(xa[w], m % 4),
                           word_of(xb[w], m % 4));
      }
    }
#pragma unroll
    for (int q = 0; q < 4; ++q) d[q] += e[q];
    acc[0][0] = fmaf(sf0.y, d[1], fmaf(sf0.x, d[0], acc[0][0]));
    acc[0][2] = fmaf(sf1.y, d[3], fmaf(sf1.x, d[2], acc[0][2]));
  };
  if constexpr (UNROLL2) {  // two groups' loads in flight at once
#pragma unroll 2
    for (int jj = 0; jj < gw; ++jj) group(jj);
  } else {
#pragma unroll 1
    for (int jj = 0; jj < gw; ++jj) group(jj);
  }
}
// G consumer groups of GW warps: each group's input vector and cross-warp sums, then the ring.
template <int G, int GW, int V>
struct RealLayout {
  static constexpr int kPartial = (GW - 1) * 4 * 32 * 4;
  static constexpr int kGroupBytes = (V & kRealNoXBuffer ? 0 : kRealMaxK * 2) + kPartial;
  static constexpr int kRing = std::min(kRealMaxRing, (227 * 1024 - G * kGroupBytes) / kRealSlot);
  static constexpr int kSmem = G * kGroupBytes + kRing * kRealSlot;
};
// Ablations (bits of `ablate`): no main loop; x read from global memory in the main loop (L1 may
// hold stale lines: timing only) instead of copied into shared memory.
// (host) kSplitSlices: every slice dealt as a tile of its own (split-K without the reduction).
// kProfile: also one profiled step (where the consumer groups' time goes).
constexpr int kNoMainLoop = 1, kNoXCopy = 2, kSplitSlices = 4, kProfile = 8;

template <int G, int GW, int V>
__global__ void __launch_bounds__((1 + G * GW) * 32, 1)
    persistent_real(const char* w, const RealWork* work, const int* begin, const int* mine,
                    const int* mine_begin, uint32_t* vec, int max_words, unsigned* done, const unsigned* need,
                    int ablate, unsigned long long* prof) {
  using L = RealLayout<G, GW, V>;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ __align__(8) uint64_t full[L::kRing], empty[L::kRing];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b = begin[blockIdx.x], e = begin[blockIdx.x + 1];
  if (threadIdx.x == 0)
    for (int s = 0; s < L::kRing; ++s) {
      mbar_init(&full[s]);
      mbar_init(&empty[s]);
    }
  __syncthreads();
  constexpr int R = L::kRing / G;  // each consumer group's own slots: [group * R, group * R + R)
  if (warp == G * GW) {            // the producer
    int issued[G];
#pragma unroll
    for (int q = 0; q < G; ++q) issued[q] = 0;
    for (int i = b; i < e; ++i) {
      const RealWork u = work[i];
      int n = 0;
#pragma unroll
      for (int q = 0; q < G; ++q)
        if (q == u.group) n = issued[q]++;
      const int s = u.group * R + n % R, round = n / R;
      if (round > 0) mbar_wait(&empty[s], (round - 1) % 2);
      unsigned char* slot = smem + s * kRealSlot;
      if (u.bytes == 0) {
        if (lane == 0) mbar_arrive_expect_tx(&full[s], 0);
        continue;
      }
      const int64_t cs = smem_code_stride(u.kslice), row = u.kslice / 2, ss = u.kslice / 16;
      if (lane == 0) mbar_arrive_expect_tx(&full[s], u.bytes);
      __syncwarp();
      const uint64_t policy = l2_evict_first_policy();
      if (lane < 16)
        bulk_load(slot + lane * cs, w + u.offset + lane * row, static_cast<uint32_t>(row), &full[s], policy);
      if (lane == 16)
        bulk_load(slot + 16 * cs, w + u.offset + 16 * row, static_cast<uint32_t>(16 * ss), &full[s], policy);
    }
    return;
  }
  const int group = warp / GW, gw_id = warp % GW, gtid = threadIdx.x % (GW * 32);
  const int nthr = GW * 32, g = lane / 4, t = lane % 4;
  bf16* xs = reinterpret_cast<bf16*>(smem + L::kRing * kRealSlot + group * L::kGroupBytes);
  float* part = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(xs) +
                                         (V & kRealNoXBuffer ? 0 : kRealMaxK * 2));
  const auto group_sync = [&] { asm volatile("bar.sync %0, %1;" ::"r"(1 + group), "r"(nthr) : "memory"); };
  int stage = -1;
  float acc[1][4] = {{0.0f, 0.0f, 0.0f, 0.0f}};
  // kProfile: the group's first thread adds up where its time goes (clock64): waiting for the stage
  // before (and reading its vector), waiting for an item's weights, the item's loop and sums.
  const bool profile = (ablate & kProfile) && gtid == 0;
  long long t_dep = 0, t_full = 0, t_loop = 0, t0 = 0;
  // The group's own items (indices into the SM's list, which the producer follows).
  const int k0 = mine_begin[blockIdx.x * G + group], k1 = mine_begin[blockIdx.x * G + group + 1];
  RealWork next = k0 < k1 ? work[mine[k0]] : RealWork{};  // each item's description loaded one item ahead
  for (int k = k0; k < k1; ++k) {
    const RealWork u = next;
    if (k + 1 < k1) next = work[mine[k + 1]];
    const int s = group * R + (k - k0) % R, round = (k - k0) / R;
    if (profile) t0 = clock64();
    if (u.stage != stage) {
      stage = u.stage;
      if (stage > 0 && gtid == 0)
        while (ld_acquire(done + stage - 1) < need[stage - 1]) {
        }
      group_sync();
      const uint4* in = reinterpret_cast<const uint4*>(vec + ((stage + 1) % 2) * max_words);
      if (!(ablate & kNoXCopy) && !(V & kRealNoXBuffer))
        for (int j = gtid; j < u.K / 8; j += nthr) reinterpret_cast<uint4*>(xs)[j] = __ldcg(in + j);
      group_sync();
    }
    if (profile) {
      const long long t1 = clock64();
      t_dep += t1 - t0;
      t0 = t1;
    }
    mbar_wait(&full[s], round % 2);
    if (profile) {
      const long long t1 = clock64();
      t_full += t1 - t0;
      t0 = t1;
    }
    if (u.bytes > 0) {
      if (u.slice == 0) acc[0][0] = acc[0][1] = acc[0][2] = acc[0][3] = 0.0f;
      const int64_t cs = smem_code_stride(u.kslice), chunks = u.kslice / 32, groups = ceil_div(chunks, 4);
      const int gw = static_cast<int>((groups - gw_id + GW - 1) / GW);
      const unsigned char* slot = smem + s * kRealSlot;
      const bf16* xr = (ablate & kNoXCopy) || (V & kRealNoXBuffer)
                           ? reinterpret_cast<const bf16*>(vec + ((stage + 1) % 2) * max_words) + u.k0
                           : xs + u.k0;
      if (ablate & kNoMainLoop) {
      } else if constexpr (V & kRealRawCodes) {
        raw_codes_loop<(V & kRealRawNoMma       ? 0
                        : V & kRealRawTwoChains ? 2
                                                : 1),
                       (V & kRealUnroll2) != 0>(slot, slot + 16 * cs, cs, u.kslice / 16, xr, chunks, gw,
                                                gw_id, GW, g, t, acc);
      } else if constexpr (V & kRealBlockDiagonal) {
        gemv_block_diagonal_loop<1>(slot, slot + 16 * cs, cs, u.kslice / 16, xr, chunks, gw, gw_id, GW, g, t,
                                    acc);
      } else {
        gemv_token_column_loop<1, true>(slot, slot + 16 * cs, cs, u.kslice / 16, xr, chunks, gw, gw_id, GW, g,
                                        t, acc);
      }
      const bool tile_done = u.slice + 1 == u.slices;
      if (tile_done && gw_id > 0)
        for (int q = 0; q < 4; ++q) part[((gw_id - 1) * 4 + q) * 32 + lane] = acc[0][q];
      group_sync();
      if (gtid == 0) mbar_arrive(&empty[s]);
      if (tile_done && gw_id == 0) {
        for (int w2 = 0; w2 < GW - 1; ++w2)
          for (int q = 0; q < 4; ++q) acc[0][q] += part[(w2 * 4 + q) * 32 + lane];
        bf16* out = reinterpret_cast<bf16*>(vec + (stage % 2) * max_words);
        if (t == 0) {
          out[u.unit * 16 + g] = __float2bfloat16_rn(acc[0][0]);
          out[u.unit * 16 + g + 8] = __float2bfloat16_rn(acc[0][2]);
        }
      }
      if (tile_done) group_sync();  // warp 0 has read `part`
    } else {
      group_sync();
      if (gtid == 0) mbar_arrive(&empty[s]);
      uint32_t* out = vec + (stage % 2) * max_words;
      for (int j = u.unit + gtid * u.units; j < 2048; j += nthr * u.units) __stcg(out + j, 0x3f803f80u);
    }
    if (u.last) {
      group_sync();
      if (gtid == 0) {
        if constexpr (V & kRealRelease) {
          asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(done + stage) : "memory");
        } else {
          __threadfence();
          atomicAdd(done + stage, 1u);
        }
      }
    }
    if (profile) t_loop += clock64() - t0;
  }
  if (profile) {
    atomicAdd(prof + 0, static_cast<unsigned long long>(t_dep));
    atomicAdd(prof + 1, static_cast<unsigned long long>(t_full));
    atomicAdd(prof + 2, static_cast<unsigned long long>(t_loop));
  }
}

// ms per step: the median of 30 steps after 3 warm-ups.
double time_steps(Context& ctx, const std::function<void()>& step) { return median_ms(ctx, step, 30, 3); }

// One persistent_real variant through report_real (run's lambda).
template <int G, int GW, int V, class Report>
void real_variant(Report&& report_real, int ablate = 0) {
  using L = RealLayout<G, GW, V>;
  report_real(persistent_real<G, GW, V>, G, GW, V, L::kRing, L::kSmem, ablate);
}

int run(int compute_ns, bool real_only) {
  Context ctx(0);
  const int sms = ctx.info().sm_count;
  const std::vector<Stage> step = qwen3_4b_step();
  const int stages = static_cast<int>(step.size());
  std::vector<uint64_t> offset;
  uint64_t total = 0;
  for (const Stage& s : step) {
    offset.push_back(total);
    total += static_cast<uint64_t>(s.tiles) * s.tile_bytes;
  }
  std::printf("%s, %d SMs: %d stages, %.3f GB of weights per step, %d ns per tile\n", ctx.info().name.c_str(),
              sms, stages, total / 1e9, compute_ns);
  char* w = nullptr;
  float* x = nullptr;
  unsigned* done = nullptr;
  CUDA_CHECK(cudaMalloc(&w, total));
  CUDA_CHECK(cudaMemset(w, 1, total));
  CUDA_CHECK(cudaMalloc(&x, 2 * kDim * sizeof(float)));
  CUDA_CHECK(cudaMemset(x, 0, 2 * kDim * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&done, stages * sizeof(unsigned)));
  cudaStream_t st = ctx.stream();
  const auto report = [&](const char* what, double ms) {
    std::printf("  %-28s %7.3f ms per step  %7.1f GB/s\n", what, ms, total / (ms * 1e6));
  };

  // ms per step of the launches `record` makes, captured once in a CUDA graph and replayed.
  const auto time_graph = [&](const std::function<void()>& record) {
    cudaGraph_t graph;
    CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    record();
    CUDA_CHECK(cudaStreamEndCapture(st, &graph));
    cudaGraphExec_t exec;
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    const double ms = time_steps(ctx, [&] { CUDA_CHECK(cudaGraphLaunch(exec, st)); });
    CUDA_CHECK(cudaGraphExecDestroy(exec));
    CUDA_CHECK(cudaGraphDestroy(graph));
    return ms;
  };

  // One kernel per stage, captured in a graph.
  const auto kernels = [&](auto kernel, bool pdl, bool loop) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 200000));
    const double ms = time_graph([&] {
      CUDA_CHECK(cudaMemsetAsync(done, 0, stages * sizeof(unsigned), st));
      for (int i = 0; i < stages; ++i) {
        const Stage& s = step[static_cast<size_t>(i)];
        int blocks = s.tiles;
        uint32_t smem = s.tile_bytes;
        if (loop) {
          smem = 2 * s.tile_bytes;
          blocks = std::min(
              s.tiles,
              std::max(1, ctx.blocks_per_sm(reinterpret_cast<const void*>(kernel), s.threads, smem)) * sms);
        }
        const auto* xin = static_cast<const float*>(x + (i % 2) * kDim);
        float* xout = x + ((i + 1) % 2) * kDim;
        const char* wi = w + offset[i];
        const auto* prev = static_cast<const unsigned*>(i > 0 ? done + i - 1 : nullptr);
        const auto target = static_cast<unsigned>(i > 0 ? step[static_cast<size_t>(i - 1)].tiles : 0);
        if (pdl && i > 0) {
          launch_pdl(ctx, kernel, dim3(static_cast<unsigned>(blocks)), dim3(static_cast<unsigned>(s.threads)),
                     smem, xin, xout, wi, s.tile_bytes, s.tiles, prev, target, done + i, compute_ns);
        } else {
          kernel<<<blocks, s.threads, smem, st>>>(xin, xout, wi, s.tile_bytes, s.tiles, prev, target,
                                                  done + i, compute_ns);
          CUDA_CHECK_LAUNCH();
        }
      }
    });
    return ms;
  };
  if (!real_only) {
    report("kernels/stream", kernels(stage_kernel<Wait::kStream, false>, false, false));
    report("kernels/pdl", kernels(stage_kernel<Wait::kPdl, false>, true, false));
    report("kernels/counters", kernels(stage_kernel<Wait::kCounter, false>, true, false));
    report("kernels/pdl+loop", kernels(stage_kernel<Wait::kPdl, true>, true, true));
  }

  // The persistent step: tiles of at most kTileBytes dealt round robin over the SMs, stage by stage
  // (stages [lo, hi)).
  Ring ring{kTileBytes, 8, false};
  const auto deal = [&](int lo, int hi) {
    const int kTileBytes = ring.unit;
    std::vector<std::vector<Work>> per_sm(static_cast<size_t>(sms));
    int rot = 0;
    for (int i = lo; i < hi; ++i) {
      const Stage& s = step[static_cast<size_t>(i)];
      const uint64_t bytes = static_cast<uint64_t>(s.tiles) * s.tile_bytes;
      const int64_t units = bytes == 0 ? sms : static_cast<int64_t>((bytes + kTileBytes - 1) / kTileBytes);
      for (int64_t u = 0; u < units; ++u) {
        const uint32_t b =
            bytes == 0 ? 0 : static_cast<uint32_t>(std::min<uint64_t>(kTileBytes, bytes - u * kTileBytes));
        per_sm[static_cast<size_t>((u + rot) % sms)].push_back(
            {offset[i] + u * kTileBytes, b, i, static_cast<int>(u), static_cast<int>(units), 0});
      }
      rot = static_cast<int>((rot + units) % sms);
    }
    return per_sm;
  };
  // Each SM's list in order, with every consumer group's last tile of each stage marked (G groups
  // take alternate tiles); need[s] += the (SM, group) pairs that signal stage s.
  const auto plan = [&](const std::vector<std::vector<Work>>& lists, int groups, std::vector<int>& begin,
                        std::vector<unsigned>& need) {
    std::vector<Work> work;
    begin.clear();
    need.resize(static_cast<size_t>(stages), 0);
    for (std::vector<Work> list : lists) {
      begin.push_back(static_cast<int>(work.size()));
      for (int g = 0; g < groups; ++g) {
        int last = -1;
        for (int i = g;; i += groups) {
          const bool end = i >= static_cast<int>(list.size());
          if (last >= 0 &&
              (end || list[static_cast<size_t>(last)].stage != list[static_cast<size_t>(i)].stage)) {
            list[static_cast<size_t>(last)].last = 1;
            ++need[static_cast<size_t>(list[static_cast<size_t>(last)].stage)];
          }
          if (end) break;
          last = i;
        }
      }
      work.insert(work.end(), list.begin(), list.end());
    }
    begin.push_back(static_cast<int>(work.size()));
    return work;
  };
  std::vector<int> begin;
  std::vector<unsigned> need;
  size_t units = 0;  // work items at the smallest unit (kTileBytes / 2)
  for (const Stage& t : step)
    units += t.tile_bytes == 0
                 ? static_cast<size_t>(sms)
                 : (static_cast<uint64_t>(t.tiles) * t.tile_bytes + kTileBytes / 2 - 1) / (kTileBytes / 2);
  std::vector<int> words;
  int max_words = 0;
  for (const Stage& t : step) {
    words.push_back(t.out_words);
    max_words = std::max(max_words, t.out_words);
  }
  Work* d_work = nullptr;
  int *d_begin = nullptr, *d_words = nullptr;
  unsigned *d_need = nullptr, *d_error = nullptr;
  uint32_t* vec = nullptr;
  uint64_t* vec_ll = nullptr;
  CUDA_CHECK(cudaMalloc(&d_work, units * sizeof(Work)));
  CUDA_CHECK(cudaMalloc(&d_begin, (static_cast<size_t>(sms) + 1) * sizeof(int)));
  CUDA_CHECK(cudaMalloc(&d_need, static_cast<size_t>(stages) * sizeof(unsigned)));
  CUDA_CHECK(cudaMalloc(&d_words, words.size() * sizeof(int)));
  CUDA_CHECK(cudaMalloc(&d_error, sizeof(unsigned)));
  CUDA_CHECK(cudaMalloc(&vec, 2 * static_cast<size_t>(max_words) * 4));
  CUDA_CHECK(cudaMalloc(&vec_ll, 2 * static_cast<size_t>(max_words) * 8));
  CUDA_CHECK(cudaMemset(vec, 0, 2 * static_cast<size_t>(max_words) * 4));
  CUDA_CHECK(cudaMemset(vec_ll, 0, 2 * static_cast<size_t>(max_words) * 8));
  CUDA_CHECK(cudaMemset(d_error, 0, sizeof(unsigned)));
  CUDA_CHECK(cudaMemcpy(d_words, words.data(), words.size() * sizeof(int), cudaMemcpyHostToDevice));
  const auto smem_of = [&] { return ring.unit * ring.slots; };
  uint32_t step_base = 0;  // LL flags: stage s of a step writes step_base + s + 1
  const auto persistent = [&](auto kernel, int groups, bool stream) {
    const int smem = smem_of();
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    need.clear();
    std::vector<Work> wk = plan(deal(0, stages), groups, begin, need);
    CUDA_CHECK(cudaMemcpy(d_begin, begin.data(), begin.size() * sizeof(int), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_need, need.data(), need.size() * sizeof(unsigned), cudaMemcpyHostToDevice));
    if (!stream)
      for (Work& u : wk) u.bytes = 0;
    CUDA_CHECK(cudaMemcpy(d_work, wk.data(), wk.size() * sizeof(Work), cudaMemcpyHostToDevice));
    const double ms = time_steps(ctx, [&] {
      CUDA_CHECK(cudaMemsetAsync(done, 0, stages * sizeof(unsigned), st));
      kernel<<<sms, (1 + kConsumerWarps) * 32, smem, st>>>(w, d_work, d_begin, vec, vec_ll, d_words,
                                                           max_words, done, d_need, step_base, d_error,
                                                           compute_ns, 0, false, ring);
      CUDA_CHECK_LAUNCH();
      step_base += static_cast<uint32_t>(stages) + 1;
    });
    unsigned error = 0;
    CUDA_CHECK(cudaMemcpy(&error, d_error, sizeof(unsigned), cudaMemcpyDeviceToHost));
    if (error != 0) fail("bench_cuda_step_structure: a low-latency read gave up waiting for its flags");
    return ms;
  };
  // Hybrid: attention stays a kernel (PDL), and the GEMV stages between two attentions run as one
  // persistent kernel each (launched with PDL: its producers stream weights while the attention
  // kernel before it still runs; its consumers start after griddepcontrol.wait, then count).
  const auto hybrid = [&](auto kernel, auto attention) {
    const int smem = smem_of();
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    struct Segment {
      int lo, hi;
      Work* work;
      int* begin;
    };
    std::vector<Segment> segs;
    std::vector<unsigned> seg_need;
    for (int lo = 0; lo < stages;) {
      int hi = lo + 1;
      if (step[static_cast<size_t>(lo)].tile_bytes > 0)
        while (hi < stages && step[static_cast<size_t>(hi)].tile_bytes > 0) ++hi;
      Segment sg{lo, hi, nullptr, nullptr};
      if (step[static_cast<size_t>(lo)].tile_bytes > 0) {
        std::vector<int> b;
        const std::vector<Work> wk = plan(deal(lo, hi), 2, b, seg_need);
        CUDA_CHECK(cudaMalloc(&sg.work, wk.size() * sizeof(Work)));
        CUDA_CHECK(cudaMalloc(&sg.begin, b.size() * sizeof(int)));
        CUDA_CHECK(cudaMemcpy(sg.work, wk.data(), wk.size() * sizeof(Work), cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(sg.begin, b.data(), b.size() * sizeof(int), cudaMemcpyHostToDevice));
      }
      segs.push_back(sg);
      lo = hi;
    }
    CUDA_CHECK(
        cudaMemcpy(d_need, seg_need.data(), seg_need.size() * sizeof(unsigned), cudaMemcpyHostToDevice));
    const double ms = time_graph([&] {
      CUDA_CHECK(cudaMemsetAsync(done, 0, stages * sizeof(unsigned), st));
      for (const Segment& sg : segs) {
        if (sg.work != nullptr) {
          launch_pdl(ctx, kernel, dim3(static_cast<unsigned>(sms)), dim3((1 + kConsumerWarps) * 32), smem, w,
                     static_cast<const Work*>(sg.work), static_cast<const int*>(sg.begin), vec, vec_ll,
                     static_cast<const int*>(d_words), max_words, done, static_cast<const unsigned*>(d_need),
                     step_base, d_error, compute_ns, sg.lo, true, ring);
        } else {
          const Stage& s = step[static_cast<size_t>(sg.lo)];
          launch_pdl(ctx, attention, dim3(static_cast<unsigned>(s.tiles)),
                     dim3(static_cast<unsigned>(s.threads)), 0, static_cast<const float*>(x), x + kDim,
                     static_cast<const char*>(w), 0u, s.tiles, static_cast<const unsigned*>(nullptr), 0u,
                     done + sg.lo, compute_ns);
        }
      }
    });
    for (const Segment& sg : segs) {
      CUDA_CHECK(cudaFree(sg.work));
      CUDA_CHECK(cudaFree(sg.begin));
    }
    return ms;
  };
  if (!real_only) {
    report("hybrid: attention kernels",
           hybrid(persistent_step<Sync::kCounters, 2>, stage_kernel<Wait::kPdl, false>));
  }

  if (!real_only) {
    report("persistent/full, counters", persistent(persistent_step<Sync::kCounters, 2>, 2, true));
    report("persistent/full, 1 group", persistent(persistent_step<Sync::kCounters, 1>, 1, true));
    report("persistent/full, LL flags", persistent(persistent_step<Sync::kLowLatency, 2>, 2, true));
    report("persistent/stream only", persistent(persistent_step<Sync::kNone, 2>, 2, true));
    report("persistent/waits, counters", persistent(persistent_step<Sync::kCounters, 2>, 2, false));
    report("persistent/waits, 1 group", persistent(persistent_step<Sync::kCounters, 1>, 1, false));
    report("persistent/waits, LL flags", persistent(persistent_step<Sync::kLowLatency, 2>, 2, false));
    // The weight stream alone, other rings: slot size and count, L2 evict-first copies.
    for (const Ring r :
         {Ring{kTileBytes, 8, false, false, 1}, Ring{kTileBytes, 8, false, false, 4},
          Ring{kTileBytes / 2, 16, false, false, 1}, Ring{kTileBytes / 2, 16, false, true, 16},
          Ring{2 * kTileBytes, 4, false, false, 1}, Ring{2 * kTileBytes, 4, true, false, 16}}) {
      ring = r;
      char what[64];
      std::snprintf(what, sizeof what, "stream only, %d x %d in %d%s%s", r.slots, r.unit, r.pieces,
                    r.evict_first ? " ef" : "", r.ahead ? " ahead" : "");
      report(what, persistent(persistent_step<Sync::kNone, 2>, 2, true));
    }
    for (const Ring r : {Ring{kTileBytes, 8, false, false, 1}, Ring{2 * kTileBytes, 4, false, false, 1}}) {
      ring = r;
      char what[64];
      std::snprintf(what, sizeof what, "full, %d x %d in 1", r.slots, r.unit);
      report(what, persistent(persistent_step<Sync::kCounters, 2>, 2, true));
      std::snprintf(what, sizeof what, "waits, %d x %d in 1", r.slots, r.unit);
      report(what, persistent(persistent_step<Sync::kCounters, 2>, 2, false));
      std::snprintf(what, sizeof what, "hybrid, %d x %d in 1", r.slots, r.unit);
      report(what, hybrid(persistent_step<Sync::kCounters, 2>, stage_kernel<Wait::kPdl, false>));
    }
  }

  // The persistent step with the real main loop: tiles dealt round robin over (SM, consumer group),
  // the groups' items on each SM interleaved (one of each group in turn, each group's slices in order).
  std::string profile_line;  // kProfile: set by `real`, printed by `report_real`
  const auto real = [&](auto kernel, int groups, int group_warps, int smem, int ablate) {
    profile_line.clear();
    std::vector<std::vector<RealWork>> lists(static_cast<size_t>(sms));
    std::vector<unsigned> rneed(static_cast<size_t>(stages), 0);
    int rot = 0;
    for (int i = 0; i < stages; ++i) {
      const Stage& sg = step[static_cast<size_t>(i)];
      std::vector<std::vector<RealWork>> mine(static_cast<size_t>(sms) * groups);
      if (sg.kslice == 0) {
        for (int u = 0; u < sg.tiles; ++u)
          mine[static_cast<size_t>(((u + rot) % sms) * groups + u % groups)].push_back(
              {0, 0, i, u, sg.tiles, 0, u % groups, 0, 1, 0, 0, sg.K});
      } else {
        const int per_part = sg.K / sg.kslice, slices = sg.parts * per_part;
        const uint32_t slice_bytes = static_cast<uint32_t>(16 * sg.kslice / 2 + 16 * sg.kslice / 16);
        const bool split = ablate & kSplitSlices;
        for (int j = 0; j < sg.tiles; ++j)
          for (int sl = 0; sl < slices; ++sl) {
            const int d = split ? j * slices + sl : j, sm = (d + rot) % sms, grp = ((d + rot) / sms) % groups;
            mine[static_cast<size_t>(sm * groups + grp)].push_back(
                {offset[i] + (static_cast<uint64_t>(j) * slices + sl) * slice_bytes, slice_bytes, i, j,
                 sg.tiles, 0, grp, split ? 0 : sl, split ? 1 : slices, (sl % per_part) * sg.kslice, sg.kslice,
                 sg.K});
          }
      }
      const bool split_tiles = sg.kslice > 0 && (ablate & kSplitSlices);
      rot = (rot + (split_tiles ? sg.tiles * sg.parts * (sg.K / sg.kslice) : sg.tiles)) % sms;
      for (int sm = 0; sm < sms; ++sm) {
        std::vector<size_t> at(static_cast<size_t>(groups), 0);
        for (int q = 0; q < groups; ++q) {
          auto& l = mine[static_cast<size_t>(sm * groups + q)];
          if (!l.empty()) {
            l.back().last = 1;
            ++rneed[static_cast<size_t>(i)];
          }
        }
        auto& out = lists[static_cast<size_t>(sm)];
        for (bool more = true; more;) {
          more = false;
          for (int q = 0; q < groups; ++q) {
            auto& l = mine[static_cast<size_t>(sm * groups + q)];
            if (at[static_cast<size_t>(q)] < l.size()) {
              out.push_back(l[at[static_cast<size_t>(q)]++]);
              more = true;
            }
          }
        }
      }
    }
    std::vector<RealWork> all;
    std::vector<int> rbegin, mine_idx, mine_begin;
    for (const auto& l : lists) {
      rbegin.push_back(static_cast<int>(all.size()));
      for (int q = 0; q < groups; ++q) {
        mine_begin.push_back(static_cast<int>(mine_idx.size()));
        for (size_t k = 0; k < l.size(); ++k)
          if (l[k].group == q) mine_idx.push_back(static_cast<int>(all.size() + k));
      }
      all.insert(all.end(), l.begin(), l.end());
    }
    rbegin.push_back(static_cast<int>(all.size()));
    mine_begin.push_back(static_cast<int>(mine_idx.size()));
    int *d_mine = nullptr, *d_mine_begin = nullptr;
    CUDA_CHECK(cudaMalloc(&d_mine, mine_idx.size() * sizeof(int)));
    CUDA_CHECK(cudaMalloc(&d_mine_begin, mine_begin.size() * sizeof(int)));
    CUDA_CHECK(cudaMemcpy(d_mine, mine_idx.data(), mine_idx.size() * sizeof(int), cudaMemcpyHostToDevice));
    CUDA_CHECK(
        cudaMemcpy(d_mine_begin, mine_begin.data(), mine_begin.size() * sizeof(int), cudaMemcpyHostToDevice));
    RealWork* d_rwork = nullptr;
    int* d_rbegin = nullptr;
    unsigned* d_rneed = nullptr;
    CUDA_CHECK(cudaMalloc(&d_rwork, all.size() * sizeof(RealWork)));
    CUDA_CHECK(cudaMalloc(&d_rbegin, rbegin.size() * sizeof(int)));
    CUDA_CHECK(cudaMalloc(&d_rneed, rneed.size() * sizeof(unsigned)));
    CUDA_CHECK(cudaMemcpy(d_rwork, all.data(), all.size() * sizeof(RealWork), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_rbegin, rbegin.data(), rbegin.size() * sizeof(int), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_rneed, rneed.data(), rneed.size() * sizeof(unsigned), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    CUDA_CHECK(cudaMemset(vec, 0, 2 * static_cast<size_t>(max_words) * 4));
    const double ms = time_steps(ctx, [&] {
      CUDA_CHECK(cudaMemsetAsync(done, 0, stages * sizeof(unsigned), st));
      kernel<<<sms, (1 + groups * group_warps) * 32, smem, st>>>(w, d_rwork, d_rbegin, d_mine, d_mine_begin,
                                                                 vec, max_words, done, d_rneed,
                                                                 ablate & ~kProfile, nullptr);
      CUDA_CHECK_LAUNCH();
    });
    if (ablate & kProfile) {  // one more step, profiled: per consumer group and step, in microseconds
      unsigned long long* prof = nullptr;
      unsigned long long h[3] = {0, 0, 0};
      CUDA_CHECK(cudaMalloc(&prof, sizeof h));
      CUDA_CHECK(cudaMemset(prof, 0, sizeof h));
      CUDA_CHECK(cudaMemsetAsync(done, 0, stages * sizeof(unsigned), st));
      kernel<<<sms, (1 + groups * group_warps) * 32, smem, st>>>(w, d_rwork, d_rbegin, d_mine, d_mine_begin,
                                                                 vec, max_words, done, d_rneed, ablate, prof);
      CUDA_CHECK_LAUNCH();
      CUDA_CHECK(cudaStreamSynchronize(st));
      CUDA_CHECK(cudaMemcpy(h, prof, sizeof h, cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaFree(prof));
      int khz = 0;
      CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, ctx.info().index));
      const double us = 1e3 / khz / (static_cast<double>(sms) * groups);
      char line[160];
      std::snprintf(
          line, sizeof line,
          "    per consumer group: stage waits %.0f us, weight waits %.0f us, items %.0f us (step %.0f us)\n",
          h[0] * us, h[1] * us, h[2] * us, ms * 1e3);
      profile_line = line;
    }
    for (void* p : {static_cast<void*>(d_rwork), static_cast<void*>(d_rbegin), static_cast<void*>(d_rneed),
                    static_cast<void*>(d_mine), static_cast<void*>(d_mine_begin)})
      CUDA_CHECK(cudaFree(p));
    return ms;
  };
  const auto report_real = [&](auto kernel, int groups, int group_warps, int variant, int ring, int smem,
                               int ablate) {
    char what[112];
    std::snprintf(what, sizeof what, "real loop, %d x %d warps, ring %d%s%s%s%s%s", groups, group_warps, ring,
                  variant & kRealUnroll2
                      ? (variant & kRealRawNoMma ? ", raw, no mma, unroll 2" : ", raw, unroll 2")
                  : variant & kRealRawNoMma      ? ", raw codes, no mma"
                  : variant & kRealRawTwoChains  ? ", raw codes, 2 chains"
                  : variant & kRealRawCodes      ? ", raw codes"
                  : variant & kRealBlockDiagonal ? ", block-diag"
                                                 : "",
                  ablate & kNoMainLoop ? ", no loop" : "",
                  (ablate & kNoXCopy) || (variant & kRealNoXBuffer) ? ", x global" : "",
                  ablate & kSplitSlices ? ", split" : "", variant & kRealRelease ? ", red.release" : "");
    // (kProfile adds a line of its own)
    report(what, real(kernel, groups, group_warps, smem, ablate));
    std::printf("%s", profile_line.c_str());
  };
  if (!real_only) {
    real_variant<2, 4, 0>(report_real);
    real_variant<2, 8, 0>(report_real);
    real_variant<4, 4, 0>(report_real);
    for (int ab : {kNoMainLoop, kNoXCopy, kSplitSlices, kNoXCopy | kSplitSlices, kNoMainLoop | kNoXCopy})
      real_variant<2, 4, 0>(report_real, ab);
    real_variant<2, 4, kRealBlockDiagonal>(report_real);
    real_variant<2, 4, kRealBlockDiagonal | kRealNoXBuffer>(report_real, kSplitSlices);
    real_variant<6, 4, kRealBlockDiagonal | kRealNoXBuffer>(report_real, kSplitSlices);
    real_variant<3, 8, kRealBlockDiagonal | kRealNoXBuffer>(report_real, kSplitSlices);
    real_variant<8, 2, kRealBlockDiagonal | kRealNoXBuffer>(report_real, kSplitSlices);
    real_variant<6, 4, kRealRawCodes | kRealNoXBuffer>(report_real, kSplitSlices);
    real_variant<4, 4, kRealRawCodes | kRealRawTwoChains | kRealNoXBuffer>(report_real, kSplitSlices);
  }
  real_variant<4, 4, kRealBlockDiagonal | kRealNoXBuffer>(report_real, kSplitSlices | kProfile);
  real_variant<4, 4, kRealRawCodes | kRealNoXBuffer>(report_real, kSplitSlices | kProfile);
  real_variant<4, 4, kRealRawCodes | kRealRawNoMma | kRealNoXBuffer>(report_real, kSplitSlices | kProfile);
  real_variant<4, 4, kRealBlockDiagonal | kRealNoXBuffer>(report_real, kSplitSlices | kNoMainLoop | kProfile);
  real_variant<4, 4, kRealBlockDiagonal | kRealNoXBuffer | kRealRelease>(report_real,
                                                                         kSplitSlices | kProfile);
  real_variant<4, 4, kRealRawCodes | kRealUnroll2 | kRealNoXBuffer>(report_real, kSplitSlices | kProfile);
  real_variant<4, 4, kRealRawCodes | kRealRawNoMma | kRealUnroll2 | kRealNoXBuffer>(report_real,
                                                                                    kSplitSlices | kProfile);
  real_variant<8, 2, kRealBlockDiagonal | kRealNoXBuffer>(report_real, kSplitSlices | kProfile);
  real_variant<6, 4, kRealBlockDiagonal | kRealNoXBuffer>(report_real, kSplitSlices | kProfile);
  // the input vector in shared memory (copied per stage by each group)
  real_variant<4, 4, kRealBlockDiagonal>(report_real, kSplitSlices | kProfile);
  real_variant<4, 4, kRealRawCodes | kRealRawNoMma>(report_real, kSplitSlices | kProfile);
  real_variant<4, 4, kRealBlockDiagonal>(report_real, kSplitSlices | kNoMainLoop | kProfile);

  std::printf("  copy bandwidth               %7.1f GB/s (read + write)\n", copy_bandwidth_gbps(ctx));
  for (void* p :
       {static_cast<void*>(w), static_cast<void*>(x), static_cast<void*>(done), static_cast<void*>(d_work),
        static_cast<void*>(d_begin), static_cast<void*>(d_need), static_cast<void*>(d_words),
        static_cast<void*>(d_error), static_cast<void*>(vec), static_cast<void*>(vec_ll)})
    CUDA_CHECK(cudaFree(p));
  return 0;
}

}  // namespace
}  // namespace nibble::cuda

int main(int argc, char** argv) {
  const int compute_ns = argc > 1 ? std::atoi(argv[1]) : 0;
  if (compute_ns < 0 || compute_ns > 100000) {
    std::fprintf(stderr, "usage: bench_cuda_step_structure [compute_ns: 0..100000 per tile]\n");
    return 2;
  }
  try {
    return nibble::cuda::run(compute_ns, argc > 2 && std::string(argv[2]) == "real");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_step_structure: %s\n", e.what());
    return 1;
  }
}
