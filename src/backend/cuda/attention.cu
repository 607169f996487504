#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "backend/cuda/async_copy.cuh"
#include "backend/cuda/attention.cuh"
#include "backend/cuda/attention_simt.cuh"
#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/kv_convert.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/qk_rope_row.cuh"

namespace nibble::cuda {
namespace {

constexpr int64_t kSplitMaxTokens = 8;  // decode-sized n: the split-KV kernel (scratch is planned for it)

// ---- Decode: split-KV on the tensor cores ---------------------------------------------------------
//
// Block (kDecodeWarps warps) = (split, KV head kvh, tile of RT = 8 or 16 query rows). Row r = i*G + g
// of a KV head is query token i, head kvh*G + g. The block's key range [kbeg, kend) goes in chunks
// of 16 keys to its warps in turn (warp w takes chunks w, w + 4, ...); each warp keeps its own
// online softmax and the block merges the warps through shared memory at the end.
//
// Per chunk a warp computes S (RT rows x 16 keys) = Q K^T with mma m16n8k16 (two n8 tiles of keys,
// head_dim / 16 k-steps), then O (RT x head_dim) += P V (head_dim / 8 n8 tiles of dims, one k-step of
// the 16 keys). Lane (g = lane / 4, c = lane % 4) layouts, HDP = head_dim padded to 64, 128 or 256:
// - The k index of q k^T runs over head_dim in any order both operands agree on: at k-step j the
//   slots (2c, 2c+1, 2c+8, 2c+9) are dims c*HDP/4 + 4j + (0, 1, 2, 3). So lane c of key g reads the
//   contiguous dims [c*HDP/4, (c+1)*HDP/4) of K row g with 16-byte loads straight into registers
//   (B fragment), and lane c of row g the same dims of q (A fragment, loaded once).
// - P (the C fragment of S) is the A fragment of P V as it stands (FlashAttention-2 register reuse).
// - The B fragment of P V pairs two keys per register at one output dim: lane g owns the dims
//   [g*HDP/8, (g+1)*HDP/8) (output tile u <-> dim g*HDP/8 + u), loads them for keys 2c, 2c+1, 2c+8,
//   2c+9 and interleaves the two keys' halves (bf16) or bytes (fp8, then cvt e4m3x2 -> f16x2).
// - The C fragment of O puts row g's dims [c*HDP/4, (c+1)*HDP/4) in lane c.
//
// The splits' partials (unnormalised o, max m, sum l) are merged by decode_combine_kernel. Both
// kernels use programmatic dependent launch (the rule in linear.cuh): each may start while the
// previous kernel of the stream still runs. Before griddepcontrol.wait a decode block reads
// *d_pos0 (written before the previous kernel: the step inputs), asks L2 to prefetch its first keys
// and starts copying the chunks whose keys all lie below pos0 (earlier steps wrote them; the kernel
// in front writes only positions [pos0, pos0 + n)); everything else it reads comes after the wait.
// After its main loop it lets the combine launch, whose blocks then wait on the device, ready,
// instead of being launched after the decode kernel ends; the combine lets the next kernel launch
// at once (it waits for the combine, which waits for the decode kernel). Every block of either
// kernel that does work waits first, so each kernel completes after its predecessor.
//
// QK (qk_norm_rope_attention_forward, one token): q arrives as the raw projection and the cache lacks
// key pos0. Before griddepcontrol.wait a block also computes its lanes' rotations and reads the norm
// weights; after it, every block normalises and rotates its own q rows into shared memory (no
// kernel in between, no round trip through a rotated-q buffer), and the warp whose chunk holds key
// pos0 computes that key's k and v, writes them to the cache (row tile 0) and into its ring after
// the chunk's copy (which zero-fills that row) has landed. The rings copy only keys below pos0, so
// every chunk may go out before the wait.
//
// Grid (KVH, splits, row tiles): the blocks are dispatched in that order, so when a launch sized
// for a bound has more splits than the keys need, the blocks with work come first and spread over
// the SMs.
constexpr int kDecodeWarps = 4;
constexpr int kChunkKeys = 16;
constexpr int kBlockKeys = kDecodeWarps * kChunkKeys;  // split lengths are multiples of this
constexpr int kMinKeysPerSplit = 128;
// Up to kSplitTarget splits of at least kMinKeysPerSplit keys, and beyond that as many as keep each
// split at most kMaxKeysPerSplit keys (within the launch's max_splits). Measured on an H200
// (2026-11-26, nibble bench, Qwen3-4B: 8 KV heads, one wave = 33 splits): always 128-key splits gave
// 516 / 457 / 314 tok/s at context 1K / 4K / 32K, 512-key splits 490 / 475 / 314: short contexts
// want the parallelism, at 4K 32 splits of 128 keys lose to 8 longer ones (fewer partials for the
// combine, longer per-warp pipelines). With the decode step's one block per SM (QK kernel: one
// wave = 16 splits) a target of 16 instead of 8 (H100, 2026-11-26; the split lengths round up to
// kBlockKeys, so ~1,040 keys made 6 splits of 192 with 8, 9 of 128 with 16): 556.1 / 562.0 ->
// 578.0 / 578.6 tok/s at 1K, 513.2 / 517.2 -> 520.0 / 517.7 at 4K, 32K unchanged (also tried:
// 12 and 384 keys, 8 and 256: within those).
constexpr int kSplitTarget = 16;
constexpr int kMaxKeysPerSplit = 512;
constexpr int kDecodeMaxSplits = 64;  // scratch is planned for this many
constexpr int kCombineBatch = 16;     // splits whose partials a combine thread loads at once

constexpr int kStages = 3;  // chunks in each warp's shared-memory ring (2 in flight)

// Resident blocks per SM the registers and the shared-memory ring allow (the kernel's launch bounds);
// splits are chosen to fill one wave of the blocks the device actually keeps resident.
// The QK kernel (qk_norm_rope_attention_forward) runs one block per SM: it directly follows the q/k/v
// GEMV, whose early launch (PDL) lets its blocks become resident while the GEMV's blocks still hold
// most SMs, and the block scheduler then packs two onto an SM as the first GEMV blocks retire; the
// two share that SM's load pipes while other SMs idle. Asking for more than half an SM's shared
// memory spreads them. Measured on an H100 (2026-11-26, nibble bench, Qwen3-4B): up to two blocks
// per SM 591.0 / 548.1 / 483.2 tok/s at context 0 / 1K / 4K, one 596.0 / 571.5 / 518.3 (the
// unfused kernels, launched after the q/k-norm kernel, 582.7 / 550.4 / 498.4); the shared memory
// one block then may use as a 5-stage ring instead of 3 gained nothing (32K: 290 -> 283).
constexpr int decode_blocks_per_sm(KvType kv, int hdp, bool qk) {
  return qk || hdp > 128 ? 1 : kv == KvType::FP8_E4M3 ? 3 : 2;
}

// Shared memory of the decode kernel: each warp's ring of chunks (16 K rows, 16 V rows, each padded
// to HDP elements + 16 bytes), reused after the loop for the warps' merge; with QK then the block's
// rotated q rows (RT x HDP bf16, zero past head_dim), read once before the loop.
constexpr size_t decode_row_bytes(KvType kv, int hdp) { return hdp * (kv == KvType::BF16 ? 2 : 1) + 16; }
constexpr size_t decode_ring_bytes(KvType kv, int hdp, bool full) {
  const size_t ring = size_t{kDecodeWarps} * kStages * 2 * kChunkKeys * decode_row_bytes(kv, hdp);
  const size_t merge = size_t{kDecodeWarps} * (full ? 16 : 8) * (hdp + 4 + 2) * sizeof(float);
  return ring > merge ? ring : merge;
}
constexpr size_t decode_smem_bytes(KvType kv, int hdp, bool full, bool qk) {
  return decode_ring_bytes(kv, hdp, full) + (qk ? size_t{full ? 16u : 8u} * hdp * 2 : 0);
}

// qk_norm_rope_attention_forward: the decode kernel (one token) does the work of qk_norm_rope_kv_forward
// itself. DecodeParams::q is then the raw q projection; k and v are the token's raw k and v rows.
struct QkFused {
  const bf16* k;        // (KVH, hd)
  const bf16* v;        // (KVH, hd)
  const float* q_norm;  // (hd) each; both null: no norm
  const float* k_norm;
  float eps;
  const float* inv_freq;  // (hd / 2)
  float scaling;
};

struct DecodeParams {
  const bf16* q;  // (n, H, hd), token stride q_stride
  int64_t q_stride;
  int64_t n, pos0;        // pos0: the host value, or the bound on *d_pos0
  const int32_t* d_pos0;  // null, or pos0 on the device
  const void* kc;         // (KVH, cap, hd) of KvType
  const void* vc;
  int64_t cap;
  int heads, hd, group, rows;  // rows = n * group per KV head
  float scale_log2;            // softmax scale * log2(e): scores in the exp2 domain
  bf16* out;                   // (n, H, hd), token stride out_stride
  int64_t out_stride;
  int max_splits;      // from the shape, scratch and device only (never from pos0)
  int min_split_keys;  // kMinKeysPerSplit
  float* part_o;       // (max_splits, n*H, hd) unnormalised partial outputs
  float* part_ml;      // (max_splits, n*H, 2) max (log2 domain) and sum of each split
  QkFused qk;          // the kernel's QK instances only
};

// The split partition of `keys` keys: `count` splits of `len` keys (a multiple of kBlockKeys; the
// last one shorter). count <= min(max_splits, max(min(kSplitTarget, ceil(keys / min_keys)),
// ceil(keys / kMaxKeysPerSplit))), which never decreases as keys grow: a launch sized for the
// largest keys covers every smaller count.
struct SplitPlan {
  int count;
  int len;
};
// In 32-bit arithmetic (positions fit int; 64-bit divisions lengthen the blocks' start-up).
__host__ __device__ inline int max_split_count(int keys, int max_splits, int min_keys) {
  const int by_min = (keys + min_keys - 1) / min_keys,
            by_max = (keys + kMaxKeysPerSplit - 1) / kMaxKeysPerSplit;
  const int short_ctx = by_min < kSplitTarget ? by_min : kSplitTarget;
  const int s = by_max > short_ctx ? by_max : short_ctx;
  return s < 1 ? 1 : s > max_splits ? max_splits : s;
}
__host__ __device__ inline SplitPlan plan_splits(int keys, int max_splits, int min_keys) {
  const int s = max_split_count(keys, max_splits, min_keys);
  const int len = ((keys + s - 1) / s + kBlockKeys - 1) / kBlockKeys * kBlockKeys;
  return {(keys + len - 1) / len, len};
}

// Keys of this call (the host checked that pos0 + n fits int); pos0 from the device or the host.
__device__ __forceinline__ int decode_keys(const DecodeParams& p, int* pos0_out) {
  const int pos0 = p.d_pos0 ? *p.d_pos0 : static_cast<int>(p.pos0);
  *pos0_out = pos0;
  // A device pos0 past its bound counts as the bound (<= cap - n): the partition must fit the launch
  // and the reads the cache.
  const int keys = pos0 + static_cast<int>(p.n), bound = static_cast<int>(p.pos0 + p.n);
  return keys < bound ? keys : bound;
}

// Loads BYTES bytes (a multiple of 8) at src into words, of which only the first `valid` bytes (a
// multiple of 8, may be <= 0) may be read: the rest are zero. `narrow`: src is only 8-byte aligned
// (FP8 rows of a head_dim that is 8 mod 16), so 8-byte loads. Read-only, no L1 allocation: K/V are
// streamed once.
template <int BYTES>
__device__ __forceinline__ void load_row(uint32_t (&w)[BYTES / 4], const unsigned char* src, int valid,
                                         bool narrow = false) {
  static_assert(BYTES == 8 || BYTES % 16 == 0, "rows load in 16-byte pieces, or one 8-byte piece");
  auto load8 = [](uint32_t* x, const unsigned char* a) {
    asm("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];" : "=r"(x[0]), "=r"(x[1]) : "l"(a));
  };
  if constexpr (BYTES == 8) {
    w[0] = w[1] = 0;
    if (valid >= 8) load8(w, src);
  } else {
#pragma unroll
    for (int o = 0; o < BYTES; o += 16) {
      uint32_t* x = &w[o / 4];
      x[0] = x[1] = x[2] = x[3] = 0;
      if (valid >= o + 16 && !narrow) {
        asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
            : "=r"(x[0]), "=r"(x[1]), "=r"(x[2]), "=r"(x[3])
            : "l"(src + o));
      } else {
        if (valid >= o + 8) load8(x, src + o);
        if (valid >= o + 16) load8(x + 2, src + o + 8);
      }
    }
  }
}

// BYTES (8 or a multiple of 16) from shared memory into words.
template <int BYTES>
__device__ __forceinline__ void load_smem(uint32_t (&w)[BYTES / 4], const unsigned char* src) {
  if constexpr (BYTES == 8) {
    const uint2 v = *reinterpret_cast<const uint2*>(src);
    w[0] = v.x, w[1] = v.y;
  } else {
#pragma unroll
    for (int o = 0; o < BYTES; o += 16) {
      const uint4 v = *reinterpret_cast<const uint4*>(src + o);
      w[o / 4] = v.x, w[o / 4 + 1] = v.y, w[o / 4 + 2] = v.z, w[o / 4 + 3] = v.w;
    }
  }
}

// Rows 0-7 of d += a b (m16n8k16, A row-major, B column-major, fp32), and rows 8-15 too when
// FULL; without FULL, a's rows 8-15 must be zero and d holds rows 0-7 only (no registers spent on
// the other half of the accumulator).
template <bool F16, bool FULL>
__device__ __forceinline__ void mma16816(float (&d)[FULL ? 4 : 2], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  using T = std::conditional_t<F16, __half, bf16>;
  if constexpr (FULL) {
    mma_m16n8k16<T>(d, a[0], a[1], a[2], a[3], b0, b1);
  } else {
    float e[4] = {d[0], d[1], 0.0f, 0.0f};
    mma_m16n8k16<T>(e, a[0], a[1], a[2], a[3], b0, b1);
    d[0] = e[0], d[1] = e[1];
  }
}

// Two e4m3 (low byte first) -> f16x2, exact.
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t two) {
  const __half2_raw h =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two & 0xffffu), __NV_E4M3);
  return static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
}

__device__ __forceinline__ uint32_t pack2(float lo, float hi, bool f16) {
  if (f16) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// QK: this lane's pairs (i, i + half) of the token's k row for KV head kvh, normalised and rotated
// (kn), and of its v row (vn); both also written to the cache rows kdst, vdst unless those are null.
template <KvType KV>
__device__ __forceinline__ void qk_new_key(const QkFused& qk, int kvh, int hd, int lane, const QkLane& prep,
                                           unsigned char* kdst, unsigned char* vdst,
                                           __nv_bfloat162 (&kn)[kQkMaxPairs],
                                           __nv_bfloat162 (&vn)[kQkMaxPairs]) {
  const int half = hd / 2;
  qk_lane_apply(qk.k + static_cast<int64_t>(kvh) * hd, lane, half, qk.k_norm != nullptr, qk.eps, prep, kn);
  const bf16* vin = qk.v + static_cast<int64_t>(kvh) * hd;
#pragma unroll
  for (int u = 0; u < kQkMaxPairs; ++u) {
    const int i = lane + kWarp * u;
    vn[u] = i < half ? __halves2bfloat162(vin[i], vin[i + half]) : __nv_bfloat162{};
    if (kdst != nullptr && i < half)
      store_pair<KV>(kdst, i, half, kn[u]), store_pair<KV>(vdst, i, half, vn[u]);
  }
}

// QK: query rows [row0, row0 + RT) of KV head kvh (row r: head kvh * group + r of the one token),
// normalised and rotated, into q_s (RT x HDP bf16; zeros past head_dim and for rows past p.rows).
// Warp w takes rows w, w + kDecodeWarps, ...; the caller's __syncthreads publishes them.
template <int RT, int HDP>
__device__ __forceinline__ void qk_rows_to_shared(const DecodeParams& p, int kvh, int row0, int warp,
                                                  int lane, const QkLane& prep, bf16* q_s) {
  const int hd = p.hd, half = hd / 2;
  for (int lr = warp; lr < RT; lr += kDecodeWarps) {
    bf16* dst = q_s + lr * HDP;
    const int r = row0 + lr;
    int from = 0;  // zeros from this dim on
    if (r < p.rows) {
      __nv_bfloat162 o[kQkMaxPairs];
      qk_lane_apply(p.q + static_cast<int64_t>(kvh * p.group + r) * hd, lane, half, p.qk.q_norm != nullptr,
                    p.qk.eps, prep, o);
#pragma unroll
      for (int u = 0; u < kQkMaxPairs; ++u) {
        const int i = lane + kWarp * u;
        if (i < half) dst[i] = o[u].x, dst[i + half] = o[u].y;
      }
      from = hd;
    }
    for (int d = from + lane; d < HDP; d += kWarp) dst[d] = __float2bfloat16_rn(0.0f);
  }
}

template <KvType KV, int HDP, bool FULL, bool QK>
__global__ void __launch_bounds__(kDecodeWarps* kWarp, decode_blocks_per_sm(KV, HDP, QK))
    attention_decode_kernel(DecodeParams p) {
  constexpr bool F16 = KV == KvType::FP8_E4M3;  // fp8 K/V and the operands they meet go through f16
  constexpr int EB = F16 ? 1 : 2;               // cache bytes per element
  constexpr int RH = FULL ? 2 : 1;              // row halves: rows g and g + 8
  constexpr int RT = 8 * RH;                    // query rows per block
  constexpr int KS = HDP / 16;                  // k-steps of q k^T
  constexpr int NT = HDP / 8;                   // n8 tiles of output dims
  constexpr int KB = HDP / 4 * EB;              // K bytes a lane loads per key
  constexpr int VB = HDP / 8 * EB;              // V bytes a lane loads per key
  constexpr int QW = HDP / 8;                   // q words (bf16 pairs) a lane holds per row
  constexpr int STAGES = kStages;

  constexpr int ROWB = static_cast<int>(decode_row_bytes(KV, HDP));
  extern __shared__ __align__(16) unsigned char smem[];

  int pos0;
  const int keys = decode_keys(p, &pos0);
  const SplitPlan plan = plan_splits(keys, p.max_splits, p.min_split_keys);
  const int split = blockIdx.y;
  if (split >= plan.count) return;  // a launch sized for the bound: this split has no keys
  const int kvh = blockIdx.x, row0 = blockIdx.z * RT;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, g = lane / 4, c = lane % 4;
  const int hd = p.hd, row_bytes = hd * EB;

  // This block's keys, cut at the causal limit of its last row.
  const int last_row = min(row0 + RT, p.rows) - 1;
  const int kbeg = split * plan.len;
  const int kend = min(min(kbeg + plan.len, keys), pos0 + last_row / p.group + 1);
  // Keys the rings copy from the cache: with QK key pos0 is this launch's own, computed below and
  // written into the ring (its row is zero-filled by the copy).
  const int kcopy = QK ? min(kend, pos0) : kend;
  const int64_t head_off = static_cast<int64_t>(kvh) * p.cap * row_bytes;
  const unsigned char* kg = static_cast<const unsigned char*>(p.kc) + head_off;
  const unsigned char* vg = static_cast<const unsigned char*>(p.vc) + head_off;

  // Before waiting for the previous kernel: L2 prefetch of the keys the rings load first (K by
  // thread 0, V by thread 1; the range trimmed to 16-byte bounds).
  if (threadIdx.x < 2 && kend > kbeg) {
    const int nk = min(kend - kbeg, kBlockKeys * (STAGES - 1));
    const uintptr_t a =
        reinterpret_cast<uintptr_t>((threadIdx.x ? vg : kg) + static_cast<int64_t>(kbeg) * row_bytes);
    const uintptr_t lo = (a + 15) & ~uintptr_t{15},
                    hi = (a + static_cast<uintptr_t>(nk) * row_bytes) & ~uintptr_t{15};
    if (hi > lo) prefetch_l2(reinterpret_cast<const void*>(lo), static_cast<uint32_t>(hi - lo));
  }

  // This warp's ring: stage st holds K rows [0, 16) then V rows [16, 32), ROWB bytes each.
  unsigned char* ring = smem + static_cast<size_t>(warp) * STAGES * 2 * kChunkKeys * ROWB;
  // Copies chunk t of this warp (keys kbeg + (warp + 4t) * 16 + [0, 16)) into its stage; keys at or
  // past kend are zero-filled. head_dim == HDP (the usual case): each lane copies fixed 16-byte
  // pieces of fixed rows, no index arithmetic per piece. Otherwise a generic loop; FP8 rows of a
  // head_dim that is 8 mod 16 are only 8-byte aligned.
  const int unit = F16 && hd % 16 != 0 ? 8 : 16, units = row_bytes / unit;
  const int chunks = kend > kbeg + warp * kChunkKeys
                         ? static_cast<int>(ceil_div(kend - kbeg - warp * kChunkKeys, kBlockKeys))
                         : 0;
  auto issue = [&](int t) {
    if (t < chunks) {
      unsigned char* st = ring + (t % STAGES) * 2 * kChunkKeys * ROWB;
      const int key0 = kbeg + (warp + kDecodeWarps * t) * kChunkKeys;
      if (hd == HDP) {
        constexpr int U = HDP * EB / 16;  // 16-byte pieces per row: 4 to 32, a power of two
        constexpr int RPP = kWarp / U;    // rows per pass of the warp
        const int r0 = lane / U, off = (lane % U) * 16;
        const unsigned char* ks = kg + static_cast<int64_t>(key0) * (HDP * EB) + off;
        const unsigned char* vs = vg + static_cast<int64_t>(key0) * (HDP * EB) + off;
#pragma unroll
        for (int j = 0; j < kChunkKeys / RPP; ++j) {
          const int r = r0 + RPP * j;
          const bool ok = key0 + r < kcopy;
          const int src = ok ? r * (HDP * EB) : 0;
          cp_async16(st + r * ROWB + off, ks + src, ok ? 16 : 0);
          cp_async16(st + (kChunkKeys + r) * ROWB + off, vs + src, ok ? 16 : 0);
        }
      } else {
        for (int idx = lane; idx < kChunkKeys * units; idx += kWarp) {
          const int r = idx / units, off = (idx % units) * unit, key = key0 + r;
          const int64_t src = static_cast<int64_t>(key < kcopy ? key : key0) * row_bytes + off;
          const int bytes = key < kcopy ? unit : 0;
          if (unit == 16) {
            cp_async16(st + r * ROWB + off, kg + src, bytes);
            cp_async16(st + (kChunkKeys + r) * ROWB + off, vg + src, bytes);
          } else {
            cp_async8(st + r * ROWB + off, kg + src, bytes);
            cp_async8(st + (kChunkKeys + r) * ROWB + off, vg + src, bytes);
          }
        }
      }
    }
    cp_async_commit();  // one group per chunk index, empty or not: the wait count stays uniform
  };
  // The first chunks go out before q is loaded: their latency covers q's. Those whose keys all lie
  // before pos0 (written by earlier steps, not by the kernel in front) go out even before
  // griddepcontrol.wait -- with QK all of them (the copies stop at pos0); one commit group per chunk
  // index either way, in order.
  int early = 0;
  while (early < STAGES - 1 && (QK || kbeg + (warp + kDecodeWarps * early + 1) * kChunkKeys <= pos0))
    issue(early++);

  // QK: the norm weights and rotations of this lane's pairs (qk_rope_row.cuh), one position for q
  // and k; the warp holding the chunk of key pos0 (new_t: its index among the warp's chunks, -1:
  // none) keeps that key's rotated k and its v for the ring.
  const int half = hd / 2;
  QkLane qprep{}, kprep{};
  int new_t = -1, new_r = 0;
  if constexpr (QK) {
    qprep = qk_lane_prepare(lane, half, true, p.qk.q_norm, pos0, p.qk.inv_freq, p.qk.scaling);
    if (pos0 >= kbeg && pos0 < kend && (pos0 - kbeg) / kChunkKeys % kDecodeWarps == warp) {
      new_t = (pos0 - kbeg) / kChunkKeys / kDecodeWarps;
      new_r = (pos0 - kbeg) % kChunkKeys;
      kprep = qprep;  // the same rotations, k's weights
#pragma unroll
      for (int u = 0; u < kQkMaxPairs; ++u)
        qk_pair_weights(kprep, u, lane + kWarp * u, half, lane + kWarp * u < half, p.qk.k_norm);
    }
  }
  pdl_wait();
  for (int t = early; t < STAGES - 1; ++t) issue(t);

  __nv_bfloat162 kn[kQkMaxPairs], vn[kQkMaxPairs];  // QK, warp new_t >= 0: key pos0's k and v pairs
  bf16* q_s = reinterpret_cast<bf16*>(smem + decode_ring_bytes(KV, HDP, FULL));
  if constexpr (QK) {
    if (new_t >= 0) {  // one writer of the cache rows (every row tile computes them)
      const bool write = blockIdx.z == 0;
      const int64_t at = static_cast<int64_t>(pos0) * row_bytes;
      qk_new_key<KV>(p.qk, kvh, hd, lane, kprep, write ? const_cast<unsigned char*>(kg) + at : nullptr,
                     write ? const_cast<unsigned char*>(vg) + at : nullptr, kn, vn);
    }
    qk_rows_to_shared<RT, HDP>(p, kvh, row0, warp, lane, qprep, q_s);
    __syncthreads();
  }

  // q A fragments (zero for rows past the end and dims past hd), causal limits of rows g, g + 8.
  uint32_t qa[KS][4];
  int limit[RH];
#pragma unroll
  for (int h = 0; h < RH; ++h) {
    const int r = row0 + g + 8 * h;
    uint32_t w[QW];
    limit[h] = -1;  // no row: every key masked
#pragma unroll
    for (int t = 0; t < QW; ++t) w[t] = 0;
    if (r < p.rows) {
      const int i = r / p.group, head = kvh * p.group + r % p.group;
      limit[h] = pos0 + i;
      if constexpr (QK) {
        load_smem<QW * 4>(w, reinterpret_cast<const unsigned char*>(q_s + (g + 8 * h) * HDP + c * (HDP / 4)));
      } else {
        const bf16* src = p.q + i * p.q_stride + static_cast<int64_t>(head) * hd + c * (HDP / 4);
        load_row<QW * 4>(w, reinterpret_cast<const unsigned char*>(src), (hd - c * (HDP / 4)) * 2);
      }
      if constexpr (F16) {  // f16(q * scale * log2 e): the scores come out in the exp2 domain
#pragma unroll
        for (int t = 0; t < QW; ++t) {
          const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[t]));
          w[t] = pack2(f.x * p.scale_log2, f.y * p.scale_log2, true);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < KS; ++j) {
      qa[j][h] = w[2 * j];          // row g (+8): dims 4j, 4j+1 of the lane's quarter
      qa[j][2 + h] = w[2 * j + 1];  // dims 4j+2, 4j+3
    }
  }
  if constexpr (!FULL) {
#pragma unroll
    for (int j = 0; j < KS; ++j) qa[j][1] = qa[j][3] = 0;
  }

  // Bytes [hd*EB, HDP*EB) of every row stay zero (the copies write [0, hd*EB) only): q is zero there,
  // and 0 * garbage could be NaN.
  if (hd < HDP) {
    const int pad = (HDP - hd) * EB / 8;  // 8-byte words per row
    for (int idx = lane; idx < STAGES * 2 * kChunkKeys * pad; idx += kWarp)
      *reinterpret_cast<uint2*>(ring + (idx / pad) * ROWB + hd * EB + (idx % pad) * 8) = make_uint2(0, 0);
  }

  float m[RH], l[RH], o[NT][2 * RH];
#pragma unroll
  for (int h = 0; h < RH; ++h) m[h] = -INFINITY, l[h] = 0.0f;
#pragma unroll
  for (int u = 0; u < NT; ++u)
#pragma unroll
    for (int e = 0; e < 2 * RH; ++e) o[u][e] = 0.0f;

#pragma unroll 1
  for (int t = 0; t < chunks; ++t) {
    __syncwarp();  // every lane has read the stage that chunk t + STAGES - 1 overwrites
    issue(t + STAGES - 1);
    cp_async_wait<STAGES - 1>();  // chunk t has landed (this lane's copies)
    __syncwarp();                 // and every lane's
    const int base = kbeg + (warp + kDecodeWarps * t) * kChunkKeys;
    unsigned char* st = ring + (t % STAGES) * 2 * kChunkKeys * ROWB;
    if constexpr (QK) {
      if (t == new_t) {  // key pos0 into its zero-filled rows
#pragma unroll
        for (int u = 0; u < kQkMaxPairs; ++u) {
          const int i = lane + kWarp * u;
          if (i < half) {
            store_pair<KV>(st + new_r * ROWB, i, half, kn[u]);
            store_pair<KV>(st + (kChunkKeys + new_r) * ROWB, i, half, vn[u]);
          }
        }
        __syncwarp();
      }
    }
    // K rows g and 8 + g at dims [c*HDP/4, (c+1)*HDP/4); V rows 2c + (0, 1, 8, 9) at dims
    // [g*HDP/8, (g+1)*HDP/8). Keys past kend are zeros.
    uint32_t kw[2][KB / 4], vw[4][VB / 4];
#pragma unroll
    for (int r = 0; r < 2; ++r) load_smem<KB>(kw[r], st + (8 * r + g) * ROWB + c * (HDP / 4) * EB);
#pragma unroll
    for (int r = 0; r < 4; ++r)
      load_smem<VB>(vw[r], st + (kChunkKeys + 2 * c + (r & 1) + 8 * (r >> 1)) * ROWB + g * (HDP / 8) * EB);

    float s[2][2 * RH];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
#pragma unroll
      for (int e = 0; e < 2 * RH; ++e) s[t][e] = 0.0f;
#pragma unroll
      for (int j = 0; j < KS; ++j) {
        if constexpr (F16)
          mma16816<true, FULL>(s[t], qa[j], e4m3x2_to_f16x2(kw[t][j]), e4m3x2_to_f16x2(kw[t][j] >> 16));
        else
          mma16816<false, FULL>(s[t], qa[j], kw[t][2 * j], kw[t][2 * j + 1]);
      }
    }

    // Online softmax per row; lane holds keys base + 2c + (0, 1, 8, 9) of rows g (+8).
    uint32_t pa[4];
#pragma unroll
    for (int h = 0; h < RH; ++h) {
      float x[4] = {s[0][2 * h], s[0][2 * h + 1], s[1][2 * h], s[1][2 * h + 1]};
      float mx = -INFINITY;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = base + 2 * c + (e & 1) + 8 * (e >> 1);
        x[e] = key < kend && key <= limit[h] ? (F16 ? x[e] : x[e] * p.scale_log2) : -INFINITY;
        mx = fmaxf(mx, x[e]);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[h], mx);
      // A row with no visible key yet keeps m = -inf: its p and correction must not become NaN.
      const float corr = m_new == -INFINITY ? 1.0f : exp2f(m[h] - m_new);
      float sum = 0.0f;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        x[e] = m_new == -INFINITY ? 0.0f : exp2f(x[e] - m_new);
        sum += x[e];
      }
      l[h] = l[h] * corr + sum;  // this lane's share; the four lanes of a row are summed at the end
      m[h] = m_new;
#pragma unroll
      for (int u = 0; u < NT; ++u) o[u][2 * h] *= corr, o[u][2 * h + 1] *= corr;
      pa[h] = pack2(x[0], x[1], F16);      // row g (+8), keys 2c, 2c+1
      pa[2 + h] = pack2(x[2], x[3], F16);  // keys 2c+8, 2c+9
    }
    if constexpr (!FULL) pa[1] = pa[3] = 0;

#pragma unroll
    for (int u = 0; u < NT; ++u) {
      uint32_t b0, b1;
      if constexpr (F16) {
        const int w = u / 4, e = u % 4;
        const uint32_t sel = e < 2 ? 0x5140u : 0x7362u;  // bytes (x_e, y_e, x_e+1, y_e+1)
        const uint32_t t0 = __byte_perm(vw[0][w], vw[1][w], sel), t1 = __byte_perm(vw[2][w], vw[3][w], sel);
        b0 = e4m3x2_to_f16x2(e & 1 ? t0 >> 16 : t0);
        b1 = e4m3x2_to_f16x2(e & 1 ? t1 >> 16 : t1);
      } else {
        const int w = u / 2;
        const uint32_t sel = u & 1 ? 0x7632u : 0x5410u;  // high or low halves of the two keys
        b0 = __byte_perm(vw[0][w], vw[1][w], sel);
        b1 = __byte_perm(vw[2][w], vw[3][w], sel);
      }
      mma16816<F16, FULL>(o[u], pa, b0, b1);
    }
  }
  pdl_launch_dependents();  // this block streams nothing more: the combine may launch

  // Merge the warps: each writes its (m, l, o) rows (over the rings, once every warp is done with
  // its ring), then the block combines them per element.
  auto o_s = reinterpret_cast<float(*)[RT][HDP + 4]>(smem);
  auto m_s = reinterpret_cast<float(*)[RT]>(smem + sizeof(float) * kDecodeWarps * RT * (HDP + 4));
  auto l_s = m_s + kDecodeWarps;
  __syncthreads();
#pragma unroll
  for (int h = 0; h < RH; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
    if (c == 0) m_s[warp][g + 8 * h] = m[h], l_s[warp][g + 8 * h] = l[h];
#pragma unroll
    for (int u = 0; u < NT; ++u) {
      o_s[warp][g + 8 * h][(2 * c) * NT + u] = o[u][2 * h];
      o_s[warp][g + 8 * h][(2 * c + 1) * NT + u] = o[u][2 * h + 1];
    }
  }
  __syncthreads();
  const int nrows = min(RT, p.rows - row0);
  for (int idx = threadIdx.x; idx < nrows * hd; idx += kDecodeWarps * kWarp) {
    const int row = idx / hd, d = idx % hd, r = row0 + row;
    float mmax = -INFINITY;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) mmax = fmaxf(mmax, m_s[w][row]);
    float num = 0.0f, den = 0.0f;
    if (mmax != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kDecodeWarps; ++w) {
        const float sc = exp2f(m_s[w][row] - mmax);  // 0 for a warp without visible keys
        num += sc * o_s[w][row][d];
        den += sc * l_s[w][row];
      }
    }
    const int i = r / p.group, head = kvh * p.group + r % p.group;
    if (plan.count == 1) {
      p.out[i * p.out_stride + static_cast<int64_t>(head) * hd + d] =
          __float2bfloat16_rn(den > 0.0f ? num / den : 0.0f);
    } else {
      const int64_t prow = (static_cast<int64_t>(split) * p.n + i) * p.heads + head;
      p.part_o[prow * hd + d] = num;
      if (d == 0) p.part_ml[2 * prow] = mmax, p.part_ml[2 * prow + 1] = den;
    }
  }
}

// Merges the splits' partial results: grid (n*H), block max(head_dim, 32) threads; nothing to do
// when the partition has one split (the decode kernel wrote out itself).
// O = sum_s 2^(m_s - M) o_s / sum_s 2^(m_s - M) l_s, M = max_s m_s. Each thread loads its first
// kCombineBatch splits' partials before the weights are known, so the loads overlap warp 0's
// reduction of the (m, l) pairs; the partials bypass L1 (other SMs wrote them).
__global__ void decode_combine_kernel(DecodeParams p) {
  __shared__ float w_s[kDecodeMaxSplits];
  __shared__ float den_s;
  int pos0;
  const SplitPlan plan = plan_splits(decode_keys(p, &pos0), p.max_splits, p.min_split_keys);
  pdl_launch_dependents();  // the next kernel waits for this one, which waits for the decode kernel
  pdl_wait();               // the decode kernel has completed: partials (or out) written
  if (plan.count <= 1) return;
  const int64_t rows = p.n * p.heads, row = blockIdx.x;  // i * H + h
  const int d = threadIdx.x, count = plan.count;
  const bool has_d = d < p.hd;
  const float* po = p.part_o + row * p.hd + d;  // split s at po[s * rows * hd]
  float ov[kCombineBatch];
#pragma unroll
  for (int s = 0; s < kCombineBatch; ++s) ov[s] = has_d && s < count ? __ldcg(po + s * rows * p.hd) : 0.0f;
  if (threadIdx.x < kWarp) {                // one warp: the weights 2^(m_s - M) and their sum
    const float* ml = p.part_ml + 2 * row;  // split s at ml[2 * s * rows]
    float2 v[kDecodeMaxSplits / kWarp];
#pragma unroll
    for (int t = 0; t < kDecodeMaxSplits / kWarp; ++t) {
      const int s = threadIdx.x + kWarp * t;
      v[t] = s < count ? __ldcg(reinterpret_cast<const float2*>(ml + 2 * s * rows))
                       : make_float2(-INFINITY, 0.0f);
    }
    float mmax = -INFINITY;
#pragma unroll
    for (int t = 0; t < kDecodeMaxSplits / kWarp; ++t) mmax = fmaxf(mmax, v[t].x);
    mmax = warp_max(mmax);
    float den = 0.0f;
#pragma unroll
    for (int t = 0; t < kDecodeMaxSplits / kWarp; ++t) {
      const int s = threadIdx.x + kWarp * t;
      const float w = v[t].x == -INFINITY ? 0.0f : exp2f(v[t].x - mmax);  // a split with no visible key: 0
      if (s < count) w_s[s] = w;
      den += w * v[t].y;
    }
    den = warp_sum(den);
    if (threadIdx.x == 0) den_s = den;
  }
  __syncthreads();
  if (!has_d) return;
  float num = 0.0f;
#pragma unroll
  for (int s = 0; s < kCombineBatch; ++s)
    if (s < count) num += w_s[s] * ov[s];
#pragma unroll 8
  for (int s = kCombineBatch; s < count; ++s) num += w_s[s] * __ldcg(po + s * rows * p.hd);
  const int64_t i = row / p.heads, h = row % p.heads;
  p.out[i * p.out_stride + h * p.hd + d] = __float2bfloat16_rn(den_s > 0.0f ? num / den_s : 0.0f);
}

// The decode kernel instance for a cache type, head_dim and tile height, made ready to launch: its
// dynamic shared memory allowed and the largest shared-memory carveout asked for (without it the
// driver may keep fewer blocks resident than the launch bounds plan), and how many blocks of it
// the device actually keeps resident per SM (the splits fill one wave of those).
struct DecodeKernel {
  void (*fn)(DecodeParams);
  size_t smem;
  int blocks_per_sm;
};

template <KvType KV, int HDP, bool FULL, bool QK>
DecodeKernel decode_kernel(Context& ctx) {
  DecodeKernel k{attention_decode_kernel<KV, HDP, FULL, QK>, decode_smem_bytes(KV, HDP, FULL, QK), 0};
  // QK: one block per SM (decode_blocks_per_sm): more than half of what one block may ask for (two
  // such blocks and their reserved 1 KB each exceed an SM's shared memory).
  if constexpr (QK) k.smem = std::max(k.smem, ctx.info().smem_per_block_optin / 2 + 1024);
  ctx.kernel_setup(reinterpret_cast<const void*>(k.fn), [&] {
    CUDA_CHECK(
        cudaFuncSetAttribute(k.fn, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(k.smem)));
    CUDA_CHECK(cudaFuncSetAttribute(k.fn, cudaFuncAttributePreferredSharedMemoryCarveout,
                                    cudaSharedmemCarveoutMaxShared));
  });
  k.blocks_per_sm = ctx.blocks_per_sm(reinterpret_cast<const void*>(k.fn), kDecodeWarps * kWarp, k.smem);
  return k;
}

template <KvType KV, bool QK>
DecodeKernel decode_kernel_hd(Context& ctx, int64_t hd, bool full) {
  if (hd <= 64) return full ? decode_kernel<KV, 64, true, QK>(ctx) : decode_kernel<KV, 64, false, QK>(ctx);
  if (hd <= 128) return full ? decode_kernel<KV, 128, true, QK>(ctx) : decode_kernel<KV, 128, false, QK>(ctx);
  return decode_kernel<KV, 256, false, QK>(ctx);  // 16-row tiles would not fit the registers
}

DecodeKernel decode_kernel_for(Context& ctx, KvType kv, int64_t hd, bool full, bool qk) {
  if (kv == KvType::BF16)
    return qk ? decode_kernel_hd<KvType::BF16, true>(ctx, hd, full)
              : decode_kernel_hd<KvType::BF16, false>(ctx, hd, full);
  return qk ? decode_kernel_hd<KvType::FP8_E4M3, true>(ctx, hd, full)
            : decode_kernel_hd<KvType::FP8_E4M3, false>(ctx, hd, full);
}

// k, v (n, KVH, hd) bf16 -> cache (KVH, cap, hd) of KV, positions pos0 + i; one thread per 8 elements.
template <KvType KV>
__global__ void kv_write_kernel(const bf16* k, int64_t ks, const bf16* v, int64_t vs, int64_t n,
                                int64_t pos0_host, const int32_t* d_pos0, void* kc, void* vc,
                                int64_t kv_heads, int64_t hd, int64_t cap) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t per_token = kv_heads * hd / 8;
  if (idx >= n * per_token) return;
  const int64_t pos0 = d_pos0 ? static_cast<int64_t>(*d_pos0) : pos0_host;
  const int64_t i = idx / per_token, e = (idx % per_token) * 8;
  if (pos0 + i >= cap) return;  // a device pos0 past its bound
  const int64_t g = e / hd, col = e % hd;
  const int64_t dst = (g * cap + pos0 + i) * hd + col;
  const Bf16x8 kx = *reinterpret_cast<const Bf16x8*>(k + i * ks + e);
  const Bf16x8 vx = *reinterpret_cast<const Bf16x8*>(v + i * vs + e);
  if constexpr (KV == KvType::BF16) {
    *reinterpret_cast<Bf16x8*>(static_cast<bf16*>(kc) + dst) = kx;
    *reinterpret_cast<Bf16x8*>(static_cast<bf16*>(vc) + dst) = vx;
  } else {
    *reinterpret_cast<uint2*>(static_cast<uint8_t*>(kc) + dst) = bf16x8_to_e4m3x8(kx);
    *reinterpret_cast<uint2*>(static_cast<uint8_t*>(vc) + dst) = bf16x8_to_e4m3x8(vx);
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
                    int64_t pos0, const int32_t* d_pos0, void* k_cache, void* v_cache, KvType kv_type,
                    const AttentionShape& s) {
  check_attention_shape(s);
  if (pos0 < 0 || pos0 + n > s.capacity)
    fail("kv_cache_write: positions [{}, {}) outside the cache capacity {}", pos0, pos0 + n, s.capacity);
  if (!aligned16(k) || !aligned16(v) || k_stride % 8 || v_stride % 8)
    fail("kv_cache_write: k and v must be 16-byte aligned with strides % 8 == 0");
  const int64_t total = n * s.kv_heads * s.head_dim / 8;
  if (total == 0) return;
  const unsigned blocks = static_cast<unsigned>(ceil_div(total, 256));
  if (kv_type == KvType::BF16)
    kv_write_kernel<KvType::BF16><<<blocks, 256, 0, ctx.stream()>>>(
        k, k_stride, v, v_stride, n, pos0, d_pos0, k_cache, v_cache, s.kv_heads, s.head_dim, s.capacity);
  else
    kv_write_kernel<KvType::FP8_E4M3><<<blocks, 256, 0, ctx.stream()>>>(
        k, k_stride, v, v_stride, n, pos0, d_pos0, k_cache, v_cache, s.kv_heads, s.head_dim, s.capacity);
  CUDA_CHECK_LAUNCH();
}

size_t attention_scratch_bytes(const AttentionShape& s, int64_t n) {
  const int64_t rows = std::min(n, kSplitMaxTokens) * s.heads;
  return static_cast<size_t>(kDecodeMaxSplits) * rows * (s.head_dim + 2) * sizeof(float);
}

namespace {

// The checks of a call that reads positions [0, pos0 + n) of a KV cache of shape s (op names the
// caller in the messages).
void check_cache_call(const char* op, const AttentionShape& s, int64_t pos0, int64_t n, const void* k_cache,
                      const void* v_cache) {
  if (pos0 < 0 || pos0 + n > s.capacity)
    fail("{}: positions [{}, {}) outside the cache capacity {}", op, pos0, pos0 + n, s.capacity);
  if (!aligned16(k_cache) || !aligned16(v_cache)) fail("{}: the KV cache must be 16-byte aligned", op);
  if (s.capacity > INT32_MAX) fail("{}: capacity {} (positions must fit 32 bits)", op, s.capacity);
}

// The split-KV decode kernel (and the combine when the partition splits) for n <= kSplitMaxTokens
// tokens, or any n on an FP8 cache; qk: the fused q/k norm + RoPE + cache append of one token.
void launch_decode(Context& ctx, const bf16* q, int64_t q_stride, int64_t n, int64_t pos0,
                   const int32_t* d_pos0, const void* k_cache, const void* v_cache, KvType kv_type,
                   const AttentionShape& s, float scale, bf16* out, int64_t out_stride, Scratch scratch,
                   const QkFused* qk) {
  DecodeParams p{};
  p.q = q, p.q_stride = q_stride, p.n = n, p.pos0 = pos0, p.d_pos0 = d_pos0;
  p.kc = k_cache, p.vc = v_cache, p.cap = s.capacity;
  p.heads = static_cast<int>(s.heads), p.hd = static_cast<int>(s.head_dim);
  p.group = static_cast<int>(s.heads / s.kv_heads), p.rows = static_cast<int>(n * p.group);
  p.scale_log2 = scale * kLog2e;
  p.out = out, p.out_stride = out_stride;
  p.min_split_keys = kMinKeysPerSplit;
  if (qk) p.qk = *qk;

  // 8-row tiles when they hold every row (one decode token), else 16-row tiles (head_dim <= 128).
  const bool full = p.rows > 8 && s.head_dim <= 128;
  const int64_t tiles = ceil_div(p.rows, full ? 16 : 8);
  const DecodeKernel kernel = decode_kernel_for(ctx, kv_type, s.head_dim, full, qk != nullptr);
  // Splits: one wave of resident blocks, within the scratch; none for prefill-sized n (its scratch
  // is not planned). From the shape, scratch and device only: never from pos0.
  int64_t max_splits = 1;
  if (n <= kSplitMaxTokens && aligned16(scratch.ptr)) {
    const int64_t per_split = n * s.heads * (s.head_dim + 2) * static_cast<int64_t>(sizeof(float));
    const int64_t slots = int64_t{std::max(kernel.blocks_per_sm, 1)} * ctx.info().sm_count;
    max_splits = std::min<int64_t>(
        {slots / (s.kv_heads * tiles), kDecodeMaxSplits, static_cast<int64_t>(scratch.bytes) / per_split});
    max_splits = std::max<int64_t>(max_splits, 1);
  }
  p.max_splits = static_cast<int>(max_splits);
  p.part_o = static_cast<float*>(scratch.ptr);
  p.part_ml = p.part_o + max_splits * n * s.heads * s.head_dim;
  // The launch covers the largest partition a pos0 <= the host value can have.
  const int splits = max_split_count(static_cast<int>(pos0 + n), p.max_splits, p.min_split_keys);
  const dim3 grid(static_cast<unsigned>(s.kv_heads), static_cast<unsigned>(splits),
                  static_cast<unsigned>(tiles));
  launch_pdl(ctx, kernel.fn, grid, dim3(kDecodeWarps * kWarp), kernel.smem, p);
  if (splits > 1) {
    const unsigned threads = static_cast<unsigned>(std::max<int64_t>(s.head_dim, kWarp));
    launch_pdl(ctx, decode_combine_kernel, dim3(static_cast<unsigned>(n * s.heads)), dim3(threads), 0, p);
  }
}

}  // namespace

void attention_forward(Context& ctx, const bf16* q, int64_t q_stride, int64_t n, int64_t pos0,
                       const int32_t* d_pos0, const void* k_cache, const void* v_cache, KvType kv_type,
                       const AttentionShape& s, float scale, bf16* out, int64_t out_stride, Scratch scratch) {
  check_attention_shape(s);
  if (n == 0) return;
  check_cache_call("attention", s, pos0, n, k_cache, v_cache);
  if (!aligned16(q) || q_stride % 8) fail("attention: q must be 16-byte aligned with q_stride % 8 == 0");
  if (kv_type == KvType::BF16 && n > kSplitMaxTokens)
    return attention_simt(ctx, q, q_stride, n, pos0, d_pos0, static_cast<const bf16*>(k_cache),
                          static_cast<const bf16*>(v_cache), s, scale, out, out_stride);

  launch_decode(ctx, q, q_stride, n, pos0, d_pos0, k_cache, v_cache, kv_type, s, scale, out, out_stride,
                scratch, nullptr);
}

void qk_norm_rope_attention_forward(Context& ctx, const bf16* q, const bf16* k, const bf16* v,
                                    const float* q_norm, const float* k_norm, float eps, int64_t pos0,
                                    const int32_t* d_pos0, const float* inv_freq, float attention_scaling,
                                    void* k_cache, void* v_cache, KvType kv_type, const AttentionShape& s,
                                    float scale, bf16* out, Scratch scratch) {
  check_attention_shape(s);
  check_cache_call("qk_norm_rope_attention_forward", s, pos0, 1, k_cache, v_cache);
  check_qk_args("qk_norm_rope_attention_forward", s.head_dim, q_norm, k_norm);
  const QkFused qk{k, v, q_norm, k_norm, eps, inv_freq, attention_scaling};
  launch_decode(ctx, q, s.heads * s.head_dim, 1, pos0, d_pos0, k_cache, v_cache, kv_type, s, scale, out,
                s.heads * s.head_dim, scratch, &qk);
}

}  // namespace nibble::cuda
