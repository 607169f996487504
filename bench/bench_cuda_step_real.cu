// bench_cuda_step_real: the decode step of Qwen3-4B as one persistent kernel with the real GEMV
// main loop (gemv_tile.cuh) in it -- what bench_cuda_step_structure's persistent kernel costs once
// its spin becomes arithmetic.
//
//   bench_cuda_step_real
//
// The step's 181 stages (step_stages.cuh) with their real weight bytes; one block per SM: a
// producer warp streams the SM's work items -- K-slices (<= 2560 columns) of 16-row tiles -- into
// the ring slots of the consumer group that owns each, and G consumer groups of W warps run the main
// loop per slice, wait for the stage before through counters, and signal their own. Printed: ms per
// step and GB/s of weights for variants (block-diagonal or token-column loop; the codes fed to the
// mma unconverted; no mma; no loop; x in shared memory or from global memory; slices dealt as items
// of their own; groups x warps) and, where marked, where one profiled step's time goes per consumer
// group (clock64). Attention is a stage of work units without weights or arithmetic. Not a
// correctness test: the results are not checked. Numbers: bench/RESULTS.md (eighth session).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/cuda/async_copy.cuh"
#include "backend/cuda/check.cuh"
#include "backend/cuda/context.cuh"
#include "backend/cuda/gemv_tile.cuh"
#include "backend/cuda/timing.h"
#include "step_stages.cuh"

namespace nibble::cuda {
namespace {

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

// One persistent_real variant through report_real (run's lambda).
template <int G, int GW, int V, class Report>
void real_variant(Report&& report_real, int ablate = 0) {
  using L = RealLayout<G, GW, V>;
  report_real(persistent_real<G, GW, V>, G, GW, V, L::kRing, L::kSmem, ablate);
}

int run() {
  Context ctx(0);
  const int sms = ctx.info().sm_count;
  const std::vector<Stage> step = qwen3_4b_step();
  const int stages = static_cast<int>(step.size());
  uint64_t total = 0;
  const std::vector<uint64_t> offset = stage_offsets(step, total);
  std::printf("%s, %d SMs: %d stages, %.3f GB of weights per step\n", ctx.info().name.c_str(), sms, stages,
              total / 1e9);
  int max_words = 0;
  for (const Stage& t : step) max_words = std::max(max_words, t.out_words);
  char* w = nullptr;
  unsigned* done = nullptr;
  uint32_t* vec = nullptr;  // the stages' vectors, two buffers by stage parity
  CUDA_CHECK(cudaMalloc(&w, total));
  CUDA_CHECK(cudaMemset(w, 1, total));
  CUDA_CHECK(cudaMalloc(&done, stages * sizeof(unsigned)));
  CUDA_CHECK(cudaMalloc(&vec, 2 * static_cast<size_t>(max_words) * 4));
  cudaStream_t st = ctx.stream();
  const auto report = [&](const char* what, double ms) {
    std::printf("  %-28s %7.3f ms per step  %7.1f GB/s\n", what, ms, total / (ms * 1e6));
  };

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

  for (void* p : {static_cast<void*>(w), static_cast<void*>(done), static_cast<void*>(vec)})
    CUDA_CHECK(cudaFree(p));
  return 0;
}

}  // namespace
}  // namespace nibble::cuda

int main(int argc, char**) {
  if (argc > 1) {
    std::fprintf(stderr, "usage: bench_cuda_step_real (no arguments)\n");
    return 2;
  }
  try {
    return nibble::cuda::run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_step_real: %s\n", e.what());
    return 1;
  }
}
