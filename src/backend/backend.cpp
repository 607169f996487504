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

void Backend::qk_norm_rope_forward(const Tensor& q, const Tensor& k, const Tensor& q_norm,
                                   const Tensor& k_norm, float eps, int64_t pos0, const RopeTable& rope,
                                   const Tensor& q_out, const Tensor& k_out) {
  const int64_t n = q.dim(0), hq = q.dim(1), hkv = k.dim(1), hd = q.dim(2);
  if (!q_norm.empty()) {
    rmsnorm_forward(q.reshape({n * hq, hd}), q_norm, eps, q_out.reshape({n * hq, hd}), Tensor());
    rmsnorm_forward(k.reshape({n * hkv, hd}), k_norm, eps, k_out.reshape({n * hkv, hd}), Tensor());
  } else {
    NIBBLE_ASSERT(q_out.data == q.data && k_out.data == k.data);
  }
  rope_forward(q_out, pos0, rope);
  rope_forward(k_out, pos0, rope);
}

void Backend::qk_norm_rope_kv_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& q_norm,
                                      const Tensor& k_norm, float eps, int64_t pos0, const RopeTable& rope,
                                      const Tensor& q_out, const Tensor& k_out, KvCache& cache,
                                      int64_t layer) {
  qk_norm_rope_forward(q, k, q_norm, k_norm, eps, pos0, rope, q_out, k_out);
  kv_cache_write(k_out, v, cache, layer, pos0);
}

void Backend::qk_norm_rope_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                             const Tensor& q_norm, const Tensor& k_norm, float eps,
                                             int64_t pos0, const RopeTable& rope, const Tensor& q_out,
                                             const Tensor& k_out, KvCache& cache, int64_t layer, float scale,
                                             const Tensor& out) {
  qk_norm_rope_kv_forward(q, k, v, q_norm, k_norm, eps, pos0, rope, q_out, k_out, cache, layer);
  attention_forward(q_out, Tensor(), Tensor(), cache, layer, pos0, scale, out);
}

void Backend::linear_multi_forward(const Tensor& x, std::span<const LinearOut> outs) {
  for (const LinearOut& o : outs) linear_forward(x, *o.w, *o.bias, *o.out);
}

void Backend::linear_swiglu_forward(const Tensor& x, const Weight& gate, const Weight& up,
                                    const Tensor& gate_tmp, const Tensor& up_tmp, const Tensor& out) {
  linear_forward(x, gate, Tensor(), gate_tmp);
  linear_forward(x, up, Tensor(), up_tmp);
  swiglu_forward(gate_tmp, up_tmp, out);
}

void Backend::rmsnorm_linear_multi_forward(const Tensor& x, const Tensor& norm_w, float eps,
                                           const Tensor& x_norm, std::span<const LinearOut> outs) {
  rmsnorm_forward(x, norm_w, eps, x_norm, Tensor());
  linear_multi_forward(x_norm, outs);
}

void Backend::rmsnorm_linear_swiglu_forward(const Tensor& x, const Tensor& norm_w, float eps,
                                            const Tensor& x_norm, const Weight& gate, const Weight& up,
                                            const Tensor& gate_tmp, const Tensor& up_tmp, const Tensor& out) {
  rmsnorm_forward(x, norm_w, eps, x_norm, Tensor());
  linear_swiglu_forward(x_norm, gate, up, gate_tmp, up_tmp, out);
}

void Backend::rmsnorm_linear_forward(const Tensor& x, const Tensor& norm_w, float eps, const Tensor& x_norm,
                                     const Weight& w, const Tensor& out) {
  rmsnorm_forward(x, norm_w, eps, x_norm, Tensor());
  linear_forward(x_norm, w, Tensor(), out);
}

void Backend::linear_residual_forward(const Tensor& x, const Weight& w, const Tensor& bias,
                                      const Tensor& residual, const Tensor& tmp, const Tensor& out) {
  linear_forward(x, w, bias, tmp);
  add_forward(residual, tmp, out);
}

void Backend::linear_residual_norm_forward(const Tensor& x, const Weight& w, const Tensor& bias,
                                           const Tensor& residual, const Tensor& tmp, const Tensor& out,
                                           const Tensor& /*next_norm_w*/, float /*eps*/) {
  linear_residual_forward(x, w, bias, residual, tmp, out);
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
  if (device == "cpu") {
    if (opts.kv_fp8)
      fail("an FP8 KV cache is a CUDA option (--kv-cache fp8 needs --device cuda); the CPU keeps fp32");
    return make_cpu_backend(opts);
  }
  if (device == "cuda") {
#ifdef NIBBLE_HAVE_CUDA
    CudaBackendOptions cuda;
    cuda.mem_budget_gb = opts.gpu_mem_budget_gb;
    if (opts.kv_fp8) cuda.kv_dtype = DType::F8_E4M3;
    return make_cuda_backend(cuda);
#else
    fail("device \"cuda\": this build has no CUDA backend (nvcc was not found when it was configured)");
#endif
  }
  fail("unknown device \"{}\" (available: cpu, cuda)", device);
}

}  // namespace nibble
