#include <fmt/format.h>

#include "backend/cuda/check.cuh"
#include "backend/cuda/context.cuh"
#include "backend/cuda/linear.cuh"

namespace nibble::cuda {

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  return n;
}

std::string cuda_unavailable_reason() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return fmt::format("no CUDA device: cudaGetDeviceCount: {} ({})", cudaGetErrorName(err),
                       cudaGetErrorString(err));
  }
  if (n == 0) return "no CUDA device: cudaGetDeviceCount found 0 devices";
  return {};
}

Context::Context(int device) {
  const int n = cuda_device_count();
  if (n == 0) fail("{}", cuda_unavailable_reason());
  if (device < 0 || device >= n) fail("CUDA device {} does not exist ({} device(s) present)", device, n);
  CUDA_CHECK(cudaSetDevice(device));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  info_.index = device;
  info_.name = prop.name;
  info_.cc_major = prop.major;
  info_.cc_minor = prop.minor;
  info_.sm_count = prop.multiProcessorCount;
  info_.total_bytes = prop.totalGlobalMem;
  info_.l2_bytes = static_cast<size_t>(prop.l2CacheSize);
  info_.smem_per_block_optin = prop.sharedMemPerBlockOptin;
  if (prop.major < 9)
    fail("CUDA device {} ({}) has compute capability {}.{}; nibble's kernels need 9.0 (Hopper) or newer",
         device, info_.name, prop.major, prop.minor);
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  CUBLAS_CHECK(cublasLtCreate(&blaslt_));
  matmul_cache_ = std::make_unique<MatmulCache>();
}

Context::~Context() {
  if (stream_) cudaStreamSynchronize(stream_);
  matmul_cache_.reset();
  if (blaslt_) cublasLtDestroy(blaslt_);
  if (stream_) cudaStreamDestroy(stream_);
}

void Context::synchronize() { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

void* Context::device_alloc(size_t bytes, std::string_view what) {
  CUDA_CHECK(cudaSetDevice(info_.index));
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes == 0 ? 1 : bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail("out of GPU memory allocating {} ({:.3f} GB) on device {} ({}): {:.3f} GB free of {:.3f} GB", what,
         bytes / 1e9, info_.index, info_.name, free_b / 1e9, total_b / 1e9);
  }
  ++alloc_count_;
  live_bytes_ += bytes;
  if (live_bytes_ > peak_bytes_) peak_bytes_ = live_bytes_;
  return p;
}

void Context::device_free(void* ptr, size_t bytes) {
  if (!ptr) return;
  cudaFree(ptr);  // not checked: called from destructors; a fault here already surfaced elsewhere
  live_bytes_ -= bytes;
}

void Context::kernel_setup(const void* kernel, const std::function<void()>& setup) {
  if (kernel_setups_.count(kernel) != 0) return;
  setup();
  kernel_setups_.insert(kernel);
}

int Context::blocks_per_sm(const void* kernel, int threads, size_t smem) {
  const auto key = std::make_tuple(kernel, threads, smem);
  if (const auto it = blocks_per_sm_.find(key); it != blocks_per_sm_.end()) return it->second;
  int blocks = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, smem));
  blocks_per_sm_.emplace(key, blocks);
  return blocks;
}

std::pair<size_t, size_t> Context::mem_info() const {
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return {free_b, total_b};
}

}  // namespace nibble::cuda
