// defines: Tensor (a non-owning view of a dense, contiguous, row-major array in backend memory)
// and Buffer (owned backend memory, freed through its backend).
//
// Tensors are views: activations live in Buffers the model allocates once, weights live in the
// mapped checkpoint (CPU) or in memory the backend owns (CUDA). A Tensor never owns its data.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/dtype.h"
#include "core/error.h"

namespace nibble {

class Backend;

struct Tensor {
  static constexpr int kMaxRank = 4;

  void* data = nullptr;
  DType dtype = DType::F32;
  int rank = 0;
  std::array<int64_t, kMaxRank> shape{};  // row-major, last dimension contiguous

  Tensor() = default;
  Tensor(void* d, DType t, std::initializer_list<int64_t> dims) : data(d), dtype(t) {
    NIBBLE_ASSERT(dims.size() <= kMaxRank);
    for (int64_t n : dims) shape[rank++] = n;
  }

  bool empty() const { return data == nullptr; }
  int64_t dim(int i) const { return shape[i < 0 ? rank + i : i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= shape[i];
    return n;
  }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  int64_t rows() const { return rank == 0 ? 1 : numel() / shape[rank - 1]; }  // all but the last dim
  int64_t cols() const { return rank == 0 ? 1 : shape[rank - 1]; }

  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }

  // The same memory with another shape of the same element count.
  Tensor reshape(std::initializer_list<int64_t> dims) const {
    Tensor t(data, dtype, dims);
    NIBBLE_ASSERT(t.numel() == numel());
    return t;
  }
  // Rows [begin, begin + count) along the first dimension.
  Tensor slice_rows(int64_t begin, int64_t count) const {
    NIBBLE_ASSERT(rank >= 1 && begin >= 0 && count >= 0 && begin + count <= shape[0]);
    Tensor t = *this;
    t.shape[0] = count;
    t.data =
        static_cast<char*>(data) + static_cast<size_t>(begin) * (nbytes() / static_cast<size_t>(shape[0]));
    return t;
  }

  std::string shape_string() const;  // "[4, 64] F32"
};

// Backend memory owned by this object; moved, never copied.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Backend* backend, void* data, size_t bytes) : backend_(backend), data_(data), bytes_(bytes) {}
  ~Buffer();
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  // A view of the start of the buffer (asserts that it fits).
  Tensor view(DType dtype, std::initializer_list<int64_t> dims) const;

 private:
  void release();
  Backend* backend_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace nibble
