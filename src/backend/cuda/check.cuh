// defines: CUDA_CHECK, CUBLAS_CHECK (every CUDA runtime / cuBLASLt call checked with file:line) and
// CUDA_CHECK_LAUNCH (the launch error of the kernel just queued).
//
// A failing call throws nibble::Error naming the call, the error string and file:line: an
// out-of-memory at load is something a user can act on (a smaller --context), and the apps print it.
// Plain C++ (no device code): included by .cu and .cpp files alike.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "core/error.h"

namespace nibble::cuda {

[[noreturn]] inline void cuda_failed(cudaError_t err, const char* expr, const char* file, int line) {
  fail("CUDA error {} ({}) in `{}` at {}:{}", cudaGetErrorName(err), cudaGetErrorString(err), expr, file,
       line);
}

[[noreturn]] inline void cublas_failed(cublasStatus_t st, const char* expr, const char* file, int line) {
  fail("cuBLASLt error {} ({}) in `{}` at {}:{}", static_cast<int>(st), cublasLtGetStatusString(st), expr,
       file, line);
}

}  // namespace nibble::cuda

#define CUDA_CHECK(expr)                                                                                 \
  do {                                                                                                   \
    const cudaError_t nibble_err_ = (expr);                                                              \
    if (nibble_err_ != cudaSuccess) ::nibble::cuda::cuda_failed(nibble_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(expr)                                                  \
  do {                                                                      \
    const cublasStatus_t nibble_st_ = (expr);                               \
    if (nibble_st_ != CUBLAS_STATUS_SUCCESS)                                \
      ::nibble::cuda::cublas_failed(nibble_st_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a <<<...>>> launch: configuration errors surface here; faults inside the kernel surface at
// the next synchronising call.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
