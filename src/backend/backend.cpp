#include "backend/backend.h"

#include <fmt/format.h>

#include <utility>

#include "backend/cpu/cpu_backend.h"
#ifdef NIBBLE_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "core/error.h"

namespace nibble {

std::string Tensor::shape_string() const {
  std::string s = "[";
  for (int i = 0; i < rank; ++i) s += fmt::format("{}{}", i ? ", " : "", shape[i]);
  return fmt::format("{}] {}", s, dtype_name(dtype));
}

Buffer::~Buffer() { release(); }

Buffer::Buffer(Buffer&& other) noexcept
    : backend_(std::exchange(other.backend_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)) {}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    release();
    backend_ = std::exchange(other.backend_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void Buffer::release() {
  if (data_ != nullptr) backend_->raw_free(data_);
  data_ = nullptr;
  bytes_ = 0;
}

Tensor Buffer::view(DType dtype, std::initializer_list<int64_t> dims) const {
  Tensor t(data_, dtype, dims);
  NIBBLE_ASSERT(t.nbytes() <= bytes_);
  return t;
}

Buffer Backend::alloc(size_t bytes) {
  if (bytes == 0) return Buffer(this, nullptr, 0);
  return Buffer(this, raw_alloc(bytes), bytes);
}

Tensor Backend::alloc_tensor(Buffer& storage, DType dtype, std::initializer_list<int64_t> dims) {
  const Tensor shape_only(nullptr, dtype, dims);
  storage = alloc(shape_only.nbytes());
  return storage.view(dtype, dims);
}

KvCache Backend::alloc_kv_cache(int64_t layers, int64_t kv_heads, int64_t capacity, int64_t head_dim) {
  KvCache c;
  c.dtype = kv_dtype();
  c.layers = layers;
  c.kv_heads = kv_heads;
  c.capacity = capacity;
  c.head_dim = head_dim;
  const size_t bytes = static_cast<size_t>(layers * kv_heads * capacity * head_dim) * dtype_size(c.dtype);
  c.k = alloc(bytes);
  c.v = alloc(bytes);
  return c;
}

static Tensor kv_layer_view(const Buffer& b, const KvCache& c, int64_t layer) {
  NIBBLE_ASSERT(layer >= 0 && layer < c.layers);
  const size_t per_layer = static_cast<size_t>(c.kv_heads * c.capacity * c.head_dim) * dtype_size(c.dtype);
  return Tensor(static_cast<char*>(b.data()) + per_layer * static_cast<size_t>(layer), c.dtype,
                {c.kv_heads, c.capacity, c.head_dim});
}

Tensor KvCache::k_layer(int64_t layer) const { return kv_layer_view(k, *this, layer); }
Tensor KvCache::v_layer(int64_t layer) const { return kv_layer_view(v, *this, layer); }

std::unique_ptr<Backend> make_backend(const std::string& device, const BackendOptions& opts) {
  if (device == "cpu") return make_cpu_backend(opts);
  if (device == "cuda") {
#ifdef NIBBLE_HAVE_CUDA
    CudaBackendOptions cuda;
    cuda.mem_budget_gb = opts.gpu_mem_budget_gb;
    return make_cuda_backend(cuda);
#else
    fail("device \"cuda\": this build has no CUDA backend (nvcc was not found when it was configured)");
#endif
  }
  fail("unknown device \"{}\" (available: cpu, cuda)", device);
}

}  // namespace nibble
