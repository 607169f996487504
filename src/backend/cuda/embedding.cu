#include "backend/cuda/check.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/embedding.cuh"

namespace nibble::cuda {
namespace {

// grid (n, column blocks); each thread copies 8 bf16 (16 bytes) when dim % 8 == 0, else one.
template <int VEC>
__global__ void embedding_kernel(const int32_t* __restrict__ ids, const bf16* __restrict__ table,
                                 int64_t vocab, int64_t dim, bf16* __restrict__ out) {
  const int64_t row = blockIdx.x;
  const int64_t col = (static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x) * VEC;
  if (col >= dim) return;
  const int32_t id = ids[row];
  bf16* o = out + row * dim + col;
  if (id < 0 || id >= vocab) {
    for (int i = 0; i < VEC; ++i) o[i] = __float2bfloat16(__int_as_float(0x7fc00000));
    return;
  }
  const bf16* src = table + static_cast<int64_t>(id) * dim + col;
  if constexpr (VEC == 8)
    *reinterpret_cast<Bf16x8*>(o) = *reinterpret_cast<const Bf16x8*>(src);
  else
    *o = *src;
}

}  // namespace

void embedding_forward(Context& ctx, const int32_t* ids, int64_t n, const bf16* table, int64_t vocab,
                       int64_t dim, bf16* out) {
  if (n == 0) return;
  constexpr int kThreads = 128;
  if (dim % 8 == 0) {
    const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(ceil_div(dim / 8, kThreads)));
    embedding_kernel<8><<<grid, kThreads, 0, ctx.stream()>>>(ids, table, vocab, dim, out);
  } else {
    const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(ceil_div(dim, kThreads)));
    embedding_kernel<1><<<grid, kThreads, 0, ctx.stream()>>>(ids, table, vocab, dim, out);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace nibble::cuda
