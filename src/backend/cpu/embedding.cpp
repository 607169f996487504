// Embedding lookup: out (n, dim) F32 = rows tokens[i] of table (V, dim), converted on the fly.
#include "backend/cpu/convert.h"
#include "backend/cpu/ops.h"

namespace nibble::cpu {

void embedding_forward(ThreadPool& pool, const Weight& table, std::span<const int32_t> tokens,
                       const Tensor& out) {
  NIBBLE_ASSERT(!table.is_nvfp4() && is_dense_float(table.dtype));
  NIBBLE_ASSERT(out.dtype == DType::F32 && out.rows() == static_cast<int64_t>(tokens.size()) &&
                out.cols() == table.in);
  const int64_t dim = table.in;
  const size_t row_bytes = static_cast<size_t>(dim) * dtype_size(table.dtype);
  pool.parallel_for(static_cast<int64_t>(tokens.size()), 16, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t id = tokens[static_cast<size_t>(i)];
      NIBBLE_ASSERT(id >= 0 && id < table.out);  // the Engine validates user ids first
      load_row_f32(static_cast<const char*>(table.data) + static_cast<size_t>(id) * row_bytes, table.dtype,
                   dim, out.as<float>() + i * dim);
    }
  });
}

}  // namespace nibble::cpu
