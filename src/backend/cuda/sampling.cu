#include <cmath>

#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/sampling.cuh"

namespace nibble::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / kWarp;

// Order-preserving map of an fp32 onto uint32 (larger float -> larger key).
__device__ __forceinline__ uint32_t float_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

struct Args {
  const void* logits;  // (vocab) fp32, or bf16 when is_bf16
  bool is_bf16;
  int64_t vocab;
  const uint32_t* seen_bits;  // (vocab/32) bitmap of penalised ids, nullptr when no penalty
  float penalty, inv_temp;
};

// The processed logit of id i: repetition penalty, then temperature.
__device__ __forceinline__ float value(const Args& a, int64_t i) {
  float l = a.is_bf16 ? __bfloat162float(static_cast<const bf16*>(a.logits)[i])
                      : static_cast<const float*>(a.logits)[i];
  if (a.seen_bits && (a.seen_bits[i >> 5] >> (i & 31) & 1u)) l = l < 0.0f ? l * a.penalty : l / a.penalty;
  return l * a.inv_temp;
}

// Block-wide reductions over 1024 threads; every thread gets the result.
__device__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  __syncthreads();
  if (threadIdx.x % kWarp == 0) red[threadIdx.x / kWarp] = v;
  __syncthreads();
  float t = threadIdx.x < kWarps ? red[threadIdx.x] : 0.0f;
  if (threadIdx.x < kWarp) t = warp_sum(t);
  if (threadIdx.x == 0) red[0] = t;
  __syncthreads();
  return red[0];
}

// (value, id) max with the lowest id on ties.
__device__ __forceinline__ void argmax_merge(float& v, int64_t& i, float ov, int64_t oi) {
  if (ov > v || (ov == v && oi < i)) v = ov, i = oi;
}
__device__ void block_argmax(float& v, int64_t& i, float* redv, int64_t* redi) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, i, o);
    argmax_merge(v, i, ov, oi);
  }
  __syncthreads();
  if (threadIdx.x % kWarp == 0) redv[threadIdx.x / kWarp] = v, redi[threadIdx.x / kWarp] = i;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kWarps; ++w) argmax_merge(redv[0], redi[0], redv[w], redi[w]);
  }
  __syncthreads();
  v = redv[0], i = redi[0];
}

// Largest key t with sum over {x >= t} of w(x) >= target, w = 1 (counts; top-k) or exp(x - M)
// (mass; top-p). Four passes of an 8-bit digit histogram, most significant digit first.
template <bool MASS>
__device__ uint32_t radix_select(const Args& a, float M, float target, float* hist, uint32_t* shared_u,
                                 float* shared_f) {
  uint32_t prefix = 0, mask = 0;
  float above = 0.0f;  // weight of elements known to be above the answer
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kThreads) hist[b] = 0.0f;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < a.vocab; i += kThreads) {
      const float x = value(a, i);
      const uint32_t k = float_key(x);
      if ((k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255u], MASS ? __expf(x - M) : 1.0f);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      float cum = above;
      int d = 255;
      for (; d > 0; --d) {
        if (cum + hist[d] >= target) break;
        cum += hist[d];
      }
      shared_u[0] = prefix | (static_cast<uint32_t>(d) << shift);
      shared_f[0] = cum;
    }
    __syncthreads();
    prefix = shared_u[0];
    above = shared_f[0];
    mask |= 255u << shift;
    __syncthreads();
  }
  return prefix;
}

__global__ void seen_bits_kernel(const int32_t* seen, int64_t n_seen, int64_t vocab, uint32_t* bits) {
  const int64_t words = (vocab + 31) / 32;
  for (int64_t w = threadIdx.x; w < words; w += blockDim.x) bits[w] = 0;
  __syncthreads();
  for (int64_t j = threadIdx.x; j < n_seen; j += blockDim.x) {
    const int32_t id = seen[j];
    if (id >= 0 && id < vocab) atomicOr(&bits[id >> 5], 1u << (id & 31));
  }
}

// The chosen id to *out_id, and with feed_step (a recorded decode step's inputs {position, id}) to
// the next step as well: the position advances by one and the id becomes its token.
__device__ __forceinline__ void publish(int32_t id, int32_t* out_id, int32_t* feed_step) {
  *out_id = id;
  if (feed_step != nullptr) {
    feed_step[1] = id;
    feed_step[0] += 1;
  }
}

__global__ void __launch_bounds__(kThreads)
    sample_kernel(Args a, bool greedy, int64_t top_k, float top_p, float min_p, float uniform,
                  int32_t* out_id, int32_t* feed_step) {
  __shared__ float red[kWarps];
  __shared__ int64_t redi[kWarps];
  __shared__ float hist[256];
  __shared__ uint32_t shared_u[1];
  __shared__ float shared_f[kWarps + 1];
  __shared__ int64_t shared_i[2];

  // Max and argmax of the processed logits.
  float M = -INFINITY;
  int64_t arg = a.vocab;
  for (int64_t i = threadIdx.x; i < a.vocab; i += kThreads) argmax_merge(M, arg, value(a, i), i);
  block_argmax(M, arg, red, redi);
  if (greedy) {
    if (threadIdx.x == 0) publish(static_cast<int32_t>(arg), out_id, feed_step);
    return;
  }

  // Threshold key: every id with key >= t stays.
  uint32_t t = 0;
  if (top_k > 0 && top_k < a.vocab)
    t = radix_select<false>(a, M, static_cast<float>(top_k), hist, shared_u, shared_f);
  if (top_p < 1.0f) {
    float zk = 0.0f;
    for (int64_t i = threadIdx.x; i < a.vocab; i += kThreads) {
      const float x = value(a, i);
      if (float_key(x) >= t) zk += __expf(x - M);
    }
    zk = block_sum(zk, red);
    const uint32_t tp = radix_select<true>(a, M, top_p * zk, hist, shared_u, shared_f);
    t = max(t, tp);
  }
  if (min_p > 0.0f) t = max(t, float_key(M + logf(min_p)));  // p >= min_p * p_max
  t = min(t, float_key(M));                                  // the top token always survives

  // Inverse CDF in vocabulary order: thread j owns the contiguous ids [j*chunk, (j+1)*chunk).
  const int64_t chunk = (a.vocab + kThreads - 1) / kThreads;
  const int64_t lo = threadIdx.x * chunk, hi = min(lo + chunk, a.vocab);
  float local = 0.0f;
  int64_t last_kept = -1;
  for (int64_t i = lo; i < hi; ++i) {
    const float x = value(a, i);
    if (float_key(x) >= t) local += __expf(x - M), last_kept = i;
  }
  // Exclusive prefix over threads: warp scan, then the warp totals.
  float incl = local;
#pragma unroll
  for (int o = 1; o < kWarp; o <<= 1) {
    const float y = __shfl_up_sync(0xffffffffu, incl, o);
    if (threadIdx.x % kWarp >= o) incl += y;
  }
  if (threadIdx.x % kWarp == kWarp - 1) shared_f[threadIdx.x / kWarp] = incl;
  if (threadIdx.x == 0) shared_i[0] = a.vocab, shared_i[1] = -1;
  __syncthreads();
  if (threadIdx.x == 0) {
    float run = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      const float s = shared_f[w];
      shared_f[w] = run;
      run += s;
    }
    shared_f[kWarps] = run;
  }
  __syncthreads();
  const float excl = shared_f[threadIdx.x / kWarp] + incl - local;
  const float r = uniform * shared_f[kWarps];
  if (local > 0.0f && r >= excl && r < excl + local) {
    float cum = excl;
    int64_t pick = last_kept;
    for (int64_t i = lo; i < hi; ++i) {
      const float x = value(a, i);
      if (float_key(x) < t) continue;
      cum += __expf(x - M);
      if (cum > r) {
        pick = i;
        break;
      }
    }
    atomicMin(reinterpret_cast<unsigned long long*>(&shared_i[0]), static_cast<unsigned long long>(pick));
  }
  if (last_kept >= 0)
    atomicMax(reinterpret_cast<long long*>(&shared_i[1]), static_cast<long long>(last_kept));
  __syncthreads();
  if (threadIdx.x == 0) {
    // r past the total by rounding: the last kept id.
    const int64_t pick = shared_i[0] < a.vocab ? shared_i[0] : shared_i[1];
    publish(static_cast<int32_t>(pick), out_id, feed_step);
  }
}

}  // namespace

size_t sampling_scratch_bytes(int64_t vocab) { return static_cast<size_t>((vocab + 31) / 32) * 4; }

void sample_enqueue(Context& ctx, const void* logits, bool logits_bf16, int64_t vocab,
                    const SamplingConfig& cfg, const int32_t* seen, int64_t n_seen, float uniform,
                    int32_t* out_id, Scratch scratch, int32_t* feed_step) {
  if (vocab <= 0 || vocab > (int64_t{1} << 31) - 1) fail("sampling: vocabulary of {} ids", vocab);
  const bool greedy = cfg.temperature <= 0.0f;
  if (!greedy && !(std::isfinite(cfg.temperature))) fail("sampling: temperature {}", cfg.temperature);
  if (!(cfg.top_p > 0.0f && cfg.top_p <= 1.0f)) fail("sampling: top_p {} (expected (0, 1])", cfg.top_p);
  if (!(cfg.min_p >= 0.0f && cfg.min_p <= 1.0f)) fail("sampling: min_p {} (expected [0, 1])", cfg.min_p);
  if (cfg.top_k < 0) fail("sampling: top_k {} (expected >= 0)", cfg.top_k);
  if (!(cfg.repetition_penalty > 0.0f)) fail("sampling: repetition_penalty {}", cfg.repetition_penalty);
  Args a{};
  a.logits = logits;
  a.is_bf16 = logits_bf16;
  a.vocab = vocab;
  a.penalty = cfg.repetition_penalty;
  a.inv_temp = greedy ? 1.0f : 1.0f / cfg.temperature;
  if (cfg.repetition_penalty != 1.0f && n_seen > 0) {
    if (scratch.bytes < sampling_scratch_bytes(vocab))
      fail("sampling: scratch too small for the seen-id bitmap");
    a.seen_bits = static_cast<const uint32_t*>(scratch.ptr);
    seen_bits_kernel<<<1, 1024, 0, ctx.stream()>>>(seen, n_seen, vocab, static_cast<uint32_t*>(scratch.ptr));
    CUDA_CHECK_LAUNCH();
  }
  sample_kernel<<<1, kThreads, 0, ctx.stream()>>>(a, greedy, cfg.top_k, cfg.top_p, cfg.min_p, uniform, out_id,
                                                  feed_step);
  CUDA_CHECK_LAUNCH();
}

}  // namespace nibble::cuda
