// defines: DeviceInfo, Context (one GPU's stream, cuBLASLt handle and workspace, device properties,
// and the only door to cudaMalloc), cuda_device_count / cuda_unavailable_reason.
//
// No global state (STYLE.md point 4): everything a CUDA op needs arrives through the Context it is
// given, so two models or two GPUs can live in one process. Plain C++ header (no device code).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_set>

namespace nibble::cuda {

class MatmulCache;  // linear.cuh: cuBLASLt layouts and algorithms by problem shape

// A scratch region an op may use for the duration of one call (a slice of the planned arena).
struct Scratch {
  void* ptr = nullptr;
  size_t bytes = 0;
};

struct DeviceInfo {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  size_t total_bytes = 0;  // device memory
  size_t l2_bytes = 0;
  size_t smem_per_block_optin = 0;  // largest dynamic shared memory a block may ask for
};

// Number of usable CUDA devices; 0 when there is no driver or no device (never throws).
int cuda_device_count();
// Why cuda_device_count() is 0 ("no CUDA device: cudaGetDeviceCount: ..."), empty otherwise.
std::string cuda_unavailable_reason();

class Context {
 public:
  // Binds `device`, creates a non-blocking stream and a cuBLASLt handle. Throws Error when the
  // device does not exist or is not Hopper-class or newer (the kernels are built for sm_90a).
  explicit Context(int device = 0);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  const DeviceInfo& info() const { return info_; }
  cudaStream_t stream() const { return stream_; }
  cublasLtHandle_t blaslt() const { return blaslt_; }
  MatmulCache& matmul_cache() { return *matmul_cache_; }

  // The cuBLASLt workspace, a region of the owner's arena (none until set).
  void set_blas_workspace(void* ptr, size_t bytes) {
    blas_workspace_ = ptr;
    blas_workspace_bytes_ = bytes;
  }
  void* blas_workspace() const { return blas_workspace_; }
  size_t blas_workspace_bytes() const { return blas_workspace_bytes_; }

  void synchronize();  // waits for the stream; surfaces asynchronous kernel faults as Error

  // Every device allocation of nibble goes through here, so a test can prove that generation
  // allocates nothing (alloc_count() constant). `what` names the allocation in the OOM message.
  void* device_alloc(size_t bytes, std::string_view what);
  void device_free(void* ptr, size_t bytes);
  int64_t alloc_count() const { return alloc_count_; }
  size_t live_bytes() const { return live_bytes_; }
  size_t peak_bytes() const { return peak_bytes_; }

  // cudaMemGetInfo: (free, total) bytes on this device, all processes.
  std::pair<size_t, size_t> mem_info() const;

  // A kernel's one-time set-up on this device (cudaFuncSetAttribute): runs `setup` the first time
  // `kernel` is seen, so that launches (every op of an unrecorded step, every prefill) pay a hash
  // lookup instead of driver calls.
  void kernel_setup(const void* kernel, const std::function<void()>& setup);

  // Blocks of `kernel` (its attributes set: kernel_setup) one SM holds at once with `threads` threads
  // and `smem` bytes of dynamic shared memory: cudaOccupancyMaxActiveBlocksPerMultiprocessor, asked
  // once per (kernel, threads, smem).
  int blocks_per_sm(const void* kernel, int threads, size_t smem);

 private:
  DeviceInfo info_;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t blaslt_ = nullptr;
  std::unique_ptr<MatmulCache> matmul_cache_;
  void* blas_workspace_ = nullptr;
  size_t blas_workspace_bytes_ = 0;
  int64_t alloc_count_ = 0;
  size_t live_bytes_ = 0, peak_bytes_ = 0;
  std::unordered_set<const void*> kernel_setups_;
  std::map<std::tuple<const void*, int, size_t>, int> blocks_per_sm_;
};

// A device buffer owned through a Context (RAII); for tests and for the arena itself.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Context& ctx, size_t bytes, std::string_view what)
      : ctx_(&ctx), ptr_(ctx.device_alloc(bytes, what)), bytes_(bytes) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      ctx_ = o.ctx_, ptr_ = o.ptr_, bytes_ = o.bytes_;
      o.ptr_ = nullptr, o.bytes_ = 0;
    }
    return *this;
  }
  void reset() {
    if (ptr_) ctx_->device_free(ptr_, bytes_);
    ptr_ = nullptr, bytes_ = 0;
  }
  template <typename T = void>
  T* get() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  Context* ctx_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace nibble::cuda
