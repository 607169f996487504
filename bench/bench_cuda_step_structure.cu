// bench_cuda_step_structure: what the *structure* of a decode step costs, without its arithmetic.
//
//   bench_cuda_step_structure [compute_ns (default 0)]
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
// Runs on one CUDA graph (kernels) or one launch (persistent) per step; median of 30 steps. The
// numbers bound what a restructured step can gain: see bench/RESULTS.md (seventh and eighth
// sessions); the same persistent step with the real GEMV main loop in place of the spin is
// bench_cuda_step_real. Not a correctness test: the results are not checked, and the `persistent/*`
// rows' consumer groups share one ring and wait on its slots by parity, which a group two rounds
// ahead of a slot could misread (harmless for their timing; bench_cuda_step_real gives each group
// its own slots, after a deadlock from exactly that).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "backend/cuda/async_copy.cuh"
#include "backend/cuda/check.cuh"
#include "backend/cuda/context.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/timing.h"
#include "step_stages.cuh"

namespace nibble::cuda {
namespace {

constexpr int kDim = 2560;         // the vector each stage reads and writes
constexpr int kTileBytes = 23040;  // largest tile of the persistent ring (q/k/v's: K = 2560)

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

int run(int compute_ns) {
  Context ctx(0);
  const int sms = ctx.info().sm_count;
  const std::vector<Stage> step = qwen3_4b_step();
  const int stages = static_cast<int>(step.size());
  uint64_t total = 0;
  const std::vector<uint64_t> offset = stage_offsets(step, total);
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
  report("kernels/stream", kernels(stage_kernel<Wait::kStream, false>, false, false));
  report("kernels/pdl", kernels(stage_kernel<Wait::kPdl, false>, true, false));
  report("kernels/counters", kernels(stage_kernel<Wait::kCounter, false>, true, false));
  report("kernels/pdl+loop", kernels(stage_kernel<Wait::kPdl, true>, true, true));

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
  report("hybrid: attention kernels",
         hybrid(persistent_step<Sync::kCounters, 2>, stage_kernel<Wait::kPdl, false>));

  report("persistent/full, counters", persistent(persistent_step<Sync::kCounters, 2>, 2, true));
  report("persistent/full, 1 group", persistent(persistent_step<Sync::kCounters, 1>, 1, true));
  report("persistent/full, LL flags", persistent(persistent_step<Sync::kLowLatency, 2>, 2, true));
  report("persistent/stream only", persistent(persistent_step<Sync::kNone, 2>, 2, true));
  report("persistent/waits, counters", persistent(persistent_step<Sync::kCounters, 2>, 2, false));
  report("persistent/waits, 1 group", persistent(persistent_step<Sync::kCounters, 1>, 1, false));
  report("persistent/waits, LL flags", persistent(persistent_step<Sync::kLowLatency, 2>, 2, false));
  // The weight stream alone, other rings: slot size and count, L2 evict-first copies.
  for (const Ring r : {Ring{kTileBytes, 8, false, false, 1}, Ring{kTileBytes, 8, false, false, 4},
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
    return nibble::cuda::run(compute_ns);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_step_structure: %s\n", e.what());
    return 1;
  }
}
