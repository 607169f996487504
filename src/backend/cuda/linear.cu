// linear_forward (the NVFP4 tensor-core GEMVs it calls for decode are in gemv_mma.cu), the FFMA
// GEMV for K % 32 != 0, and the bias passes after a cuBLASLt product. API and numerics: linear.cuh.
#include <algorithm>

#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/dequant.cuh"
#include "backend/cuda/linear.cuh"
#include "backend/cuda/nvfp4_decode.cuh"

namespace nibble::cuda {
namespace {

__device__ __forceinline__ uint4 load_stream16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Dot of one 16-element NVFP4 block (two 32-bit words of codes) with x[k0..k0+16) of NT tokens.
template <int NT>
__device__ __forceinline__ void block_dot(uint32_t w0, uint32_t w1, const bf16* x, int64_t ldx, int64_t k0,
                                          float (&inner)[NT]) {
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const Bf16x8* xp = reinterpret_cast<const Bf16x8*>(x + t * ldx + k0);
    float xf[16];
    {
      float a[8], b[8];
      bf16x8_to_float(xp[0], a);
      bf16x8_to_float(xp[1], b);
#pragma unroll
      for (int i = 0; i < 8; ++i) xf[i] = a[i], xf[8 + i] = b[i];
    }
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 lo = e2m1x2_to_float2(w0 >> (8 * j));
      const float2 hi = e2m1x2_to_float2(w1 >> (8 * j));
      s = fmaf(lo.x, xf[2 * j], s);
      s = fmaf(lo.y, xf[2 * j + 1], s);
      s = fmaf(hi.x, xf[8 + 2 * j], s);
      s = fmaf(hi.y, xf[8 + 2 * j + 1], s);
    }
    inner[t] = s;
  }
}

// FFMA GEMV over NVFP4 rows for NT <= 8 tokens, any K % 16 == 0 (the tensor-core kernel of gemv_mma.cu
// needs K % 32 == 0). Each group of kLanesPerRow lanes owns one row of W and
// walks it in chunks of BPC blocks (BPC=2: 16-byte loads of 32 codes; BPC=1: 8-byte loads, for K
// not a multiple of 32); partial sums meet through shuffles. Weights are read once, bypassing L1;
// x (n, K) is small and re-read through the caches.
//   x (NT, K) bf16, ldx;  wq (N, K/2) u8;  ws (N, K/16) fp8;  y (NT, N) with ldy.
constexpr int kLanesPerRow = 8;
constexpr int kGemvWarps = 2;
constexpr int kGemvRowsPerBlock = kGemvWarps * (kWarp / kLanesPerRow);
constexpr int kGemvUnroll = 4;

template <int NT, int BPC, typename OutT>
__global__ void __launch_bounds__(kGemvWarps* kWarp)
    nvfp4_gemv_ffma_kernel(const bf16* __restrict__ x, int64_t ldx, const uint8_t* __restrict__ wq,
                           const uint8_t* __restrict__ ws, float out_scale, const float* __restrict__ bias,
                           int64_t N, int64_t K, OutT* __restrict__ y, int64_t ldy) {
  const int lane = threadIdx.x % kWarp;
  const int sub = lane % kLanesPerRow;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kGemvRowsPerBlock + threadIdx.x / kLanesPerRow;
  const int64_t chunks = K / (16 * BPC);
  float acc[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.0f;

  if (row < N) {
    const uint8_t* wrow = wq + row * (K / 2);
    const uint8_t* srow = ws + row * (K / 16);
    for (int64_t c0 = sub; c0 < chunks; c0 += kLanesPerRow * kGemvUnroll) {
      uint4 wv[kGemvUnroll];
      uint16_t sv[kGemvUnroll];
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) {  // all loads first: kGemvUnroll in flight per lane
        const int64_t c = c0 + u * kLanesPerRow;
        if (c < chunks) {
          if constexpr (BPC == 2) {
            wv[u] = load_stream16(wrow + c * 16);
            sv[u] = *reinterpret_cast<const uint16_t*>(srow + 2 * c);
          } else {
            const uint2 v = *reinterpret_cast<const uint2*>(wrow + c * 8);
            wv[u] = make_uint4(v.x, v.y, 0, 0);
            sv[u] = srow[c];
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) {
        const int64_t c = c0 + u * kLanesPerRow;
        if (c < chunks) {
          float inner[NT];
          if constexpr (BPC == 2) {
            const float2 s = fp8x2_to_float2(sv[u]);
            block_dot<NT>(wv[u].x, wv[u].y, x, ldx, c * 32, inner);
#pragma unroll
            for (int t = 0; t < NT; ++t) acc[t] = fmaf(inner[t], s.x, acc[t]);
            block_dot<NT>(wv[u].z, wv[u].w, x, ldx, c * 32 + 16, inner);
#pragma unroll
            for (int t = 0; t < NT; ++t) acc[t] = fmaf(inner[t], s.y, acc[t]);
          } else {
            const float s = fp8_to_float(static_cast<uint8_t>(sv[u]));
            block_dot<NT>(wv[u].x, wv[u].y, x, ldx, c * 16, inner);
#pragma unroll
            for (int t = 0; t < NT; ++t) acc[t] = fmaf(inner[t], s, acc[t]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
#pragma unroll
    for (int o = kLanesPerRow / 2; o > 0; o >>= 1) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], o);
  }
  if (row < N && sub == 0) {
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const float v = gemv_value(acc[t], out_scale, bias, row);
      if constexpr (sizeof(OutT) == 4)
        y[t * ldy + row] = v;
      else
        y[t * ldy + row] = __float2bfloat16_rn(v);
    }
  }
}

template <int NT, int BPC, typename OutT>
void launch_gemv(Context& ctx, const bf16* x, int64_t ldx, const Weight& w, const float* bias, OutT* y,
                 int64_t ldy) {
  const dim3 grid(static_cast<unsigned>(ceil_div(w.out, kGemvRowsPerBlock)));
  nvfp4_gemv_ffma_kernel<NT, BPC, OutT><<<grid, kGemvWarps * kWarp, 0, ctx.stream()>>>(
      x, ldx, static_cast<const uint8_t*>(w.data), w.scales, w.global_scale * kE2m1HalfScale, bias, w.out,
      w.in, y, ldy);
  CUDA_CHECK_LAUNCH();
}

template <int BPC, typename OutT>
void dispatch_gemv_tokens(Context& ctx, const bf16* x, int64_t ldx, int64_t n, const Weight& w,
                          const float* bias, OutT* y, int64_t ldy) {
  switch (n) {
    case 1:
      return launch_gemv<1, BPC>(ctx, x, ldx, w, bias, y, ldy);
    case 2:
      return launch_gemv<2, BPC>(ctx, x, ldx, w, bias, y, ldy);
    case 3:
      return launch_gemv<3, BPC>(ctx, x, ldx, w, bias, y, ldy);
    case 4:
      return launch_gemv<4, BPC>(ctx, x, ldx, w, bias, y, ldy);
    case 5:
      return launch_gemv<5, BPC>(ctx, x, ldx, w, bias, y, ldy);
    case 6:
      return launch_gemv<6, BPC>(ctx, x, ldx, w, bias, y, ldy);
    case 7:
      return launch_gemv<7, BPC>(ctx, x, ldx, w, bias, y, ldy);
    case 8:
      return launch_gemv<8, BPC>(ctx, x, ldx, w, bias, y, ldy);
    default:
      fail("nvfp4 GEMV: {} tokens (at most {})", n, kGemvMaxTokens);
  }
}

template <typename OutT>
void nvfp4_gemv_ffma_typed(Context& ctx, const bf16* x, int64_t ldx, int64_t n, const Weight& w,
                           const float* bias, OutT* y, int64_t ldy) {
  if (w.in % 32 == 0)
    dispatch_gemv_tokens<2>(ctx, x, ldx, n, w, bias, y, ldy);
  else
    dispatch_gemv_tokens<1>(ctx, x, ldx, n, w, bias, y, ldy);
}

// y (n, m) row stride ldy += bias (m), after a cuBLASLt product.
template <typename OutT>
__global__ void bias_add_kernel(OutT* y, int64_t ldy, int64_t n, int64_t m, const float* __restrict__ bias) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * m) return;
  OutT* p = y + (idx / m) * ldy + idx % m;
  if constexpr (sizeof(OutT) == 4)
    *p += bias[idx % m];
  else
    *p = __float2bfloat16_rn(__bfloat162float(*p) + bias[idx % m]);
}

// y (n, m) bf16 = bf16(t (n, m) fp32 + bias): the one rounding of a biased GEMM with bf16 output.
__global__ void bias_round_kernel(const float* __restrict__ t, int64_t n, int64_t m,
                                  const float* __restrict__ bias, bf16* y, int64_t ldy) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * m) return;
  y[(idx / m) * ldy + idx % m] = __float2bfloat16_rn(t[idx] + bias[idx % m]);
}

void bias_add(Context& ctx, void* y, DType y_dtype, int64_t ldy, int64_t n, int64_t m, const float* bias) {
  const unsigned grid = static_cast<unsigned>(ceil_div(n * m, 256));
  if (y_dtype == DType::F32)
    bias_add_kernel<<<grid, 256, 0, ctx.stream()>>>(static_cast<float*>(y), ldy, n, m, bias);
  else
    bias_add_kernel<<<grid, 256, 0, ctx.stream()>>>(static_cast<bf16*>(y), ldy, n, m, bias);
  CUDA_CHECK_LAUNCH();
}

constexpr size_t kMaxDequantScratch = size_t{64} << 20;  // bf16 rows of W per cuBLASLt call
constexpr int64_t kDequantRowAlign = 16;

int64_t dequant_rows_per_chunk(const Weight& w, size_t scratch_bytes) {
  int64_t rows = static_cast<int64_t>(scratch_bytes / (static_cast<size_t>(w.in) * 2));
  if (rows >= w.out) return w.out;
  return rows / kDequantRowAlign * kDequantRowAlign;
}

}  // namespace

// ---- linear -----------------------------------------------------------------------------------

size_t linear_scratch_bytes(const Weight& w, int64_t n, bool bias, DType y_dtype) {
  const bool gemv = w.is_nvfp4() && n <= kGemvMaxTokens;  // fuses the bias: no staging
  size_t staging = 0;
  if (bias && y_dtype == DType::BF16 && !gemv)
    staging = (static_cast<size_t>(n * w.out) * 4 + 255) / 256 * 256;
  if (!w.is_nvfp4() || gemv) return staging;
  const size_t row_bytes = static_cast<size_t>(w.in) * 2;
  const size_t all = row_bytes * static_cast<size_t>(w.out);
  return staging +
         std::min(all, std::max(kMaxDequantScratch / row_bytes, size_t{kDequantRowAlign}) * row_bytes);
}

void linear_forward(Context& ctx, const bf16* x, int64_t ldx, int64_t n, const Weight& w, const float* bias,
                    void* y, DType y_dtype, int64_t ldy, Scratch scratch, const L2Prefetch& prefetch) {
  if (n == 0) return;
  if (y_dtype != DType::BF16 && y_dtype != DType::F32)
    fail("linear_forward: output dtype {} (expected BF16 or F32)", dtype_name(y_dtype));
  if (!w.is_nvfp4() && w.dtype != DType::BF16)
    fail("linear_forward: dense weight of dtype {} on the GPU (upload converts to BF16)",
         dtype_name(w.dtype));
  if (w.is_nvfp4() && w.in % 16 != 0)
    fail("linear_forward: NVFP4 weight with K={} (a multiple of 16 expected)", w.in);
  if (scratch.bytes < linear_scratch_bytes(w, n, bias != nullptr, y_dtype) || !aligned16(scratch.ptr))
    fail("linear_forward: scratch of {} bytes, {} needed", scratch.bytes,
         linear_scratch_bytes(w, n, bias != nullptr, y_dtype));
  if (w.is_nvfp4() && n <= kGemvMaxTokens) {  // 16-byte loads of x; cuBLASLt takes any layout
    if (!aligned16(x) || ldx % 8 != 0) fail("linear_forward: x must be 16-byte aligned with ldx % 8 == 0");
    if (!nvfp4_gemv_fusable(w, n)) return nvfp4_gemv_ffma(ctx, x, ldx, n, w, bias, y, y_dtype, ldy);
    return nvfp4_gemv_linear(ctx, x, ldx, n, w, bias, y, y_dtype, ldy, prefetch);
  }
  // A biased bf16 product is staged in fp32 at the start of the scratch (see linear_scratch_bytes).
  void* out = y;
  DType out_dtype = y_dtype;
  int64_t ld_out = ldy;
  char* free_scratch = static_cast<char*>(scratch.ptr);
  size_t free_bytes = scratch.bytes;
  const bool staged = bias && y_dtype == DType::BF16;
  if (staged) {
    const size_t staging = (static_cast<size_t>(n * w.out) * 4 + 255) / 256 * 256;
    out = free_scratch, out_dtype = DType::F32, ld_out = w.out;
    free_scratch += staging, free_bytes -= staging;
  }
  if (!w.is_nvfp4()) {
    gemm_bf16_nt(ctx, x, ldx, static_cast<const bf16*>(w.data), w.in, out, out_dtype, ld_out, n, w.out, w.in,
                 1.0f);
  } else {
    const int64_t rows = dequant_rows_per_chunk(w, free_bytes);
    const size_t osize = out_dtype == DType::F32 ? 4 : 2;
    bf16* tile = reinterpret_cast<bf16*>(free_scratch);
    const auto* wq = static_cast<const uint8_t*>(w.data);
    for (int64_t r0 = 0; r0 < w.out; r0 += rows) {
      const int64_t r = std::min(rows, w.out - r0);
      nvfp4_dequant(ctx, wq + r0 * (w.in / 2), w.scales + r0 * (w.in / 16), r, w.in, tile);
      gemm_bf16_nt(ctx, x, ldx, tile, w.in, static_cast<char*>(out) + r0 * osize, out_dtype, ld_out, n, r,
                   w.in, w.global_scale);
    }
  }
  if (!bias) return;
  if (staged) {
    bias_round_kernel<<<static_cast<unsigned>(ceil_div(n * w.out, 256)), 256, 0, ctx.stream()>>>(
        static_cast<const float*>(out), n, w.out, bias, static_cast<bf16*>(y), ldy);
    CUDA_CHECK_LAUNCH();
  } else {
    bias_add(ctx, y, y_dtype, ldy, n, w.out, bias);
  }
}

// ---- NVFP4 GEMV: the FFMA kernel ------------------------------------------------------------

void nvfp4_gemv_ffma(Context& ctx, const bf16* x, int64_t ldx, int64_t n, const Weight& w, const float* bias,
                     void* y, DType y_dtype, int64_t ldy) {
  if (!w.is_nvfp4() || w.in % 16 != 0 || n < 1 || n > kGemvMaxTokens)
    fail("nvfp4_gemv_ffma: NVFP4 weight with K % 16 == 0 and 1..{} tokens expected (K={}, n={})",
         kGemvMaxTokens, w.in, n);
  if (y_dtype == DType::F32)
    nvfp4_gemv_ffma_typed(ctx, x, ldx, n, w, bias, static_cast<float*>(y), ldy);
  else
    nvfp4_gemv_ffma_typed(ctx, x, ldx, n, w, bias, static_cast<bf16*>(y), ldy);
}

}  // namespace nibble::cuda
