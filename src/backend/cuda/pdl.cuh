// defines: programmatic dependent launch (PDL, sm_90): pdl_wait / pdl_launch_dependents in
// kernels, and launch_pdl, a kernel launch that lets the GPU start the grid while the previous
// kernel of the stream still runs. Only for .cu files: uses device code.
//
// The rule for a kernel started with launch_pdl: everything it reads that an earlier kernel writes,
// and everything it writes, comes after pdl_wait(), which returns once every earlier grid of the
// stream has completed and its writes are visible. What comes before (weights, constants) overlaps
// the previous kernel's tail; the launch latency itself is hidden either way. A kernel that never
// calls pdl_wait must not be launched with launch_pdl. Works under CUDA-graph capture (the edges
// become programmatic dependencies). CUDA Programming Guide, "Programmatic Dependent Launch".
#pragma once

#include <cuda_runtime.h>

#include "backend/cuda/check.cuh"
#include "backend/cuda/context.cuh"

namespace nibble::cuda {

__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
// This block no longer holds back the launch of the next grid (its blocks still wait in pdl_wait).
__device__ __forceinline__ void pdl_launch_dependents() {
  asm volatile("griddepcontrol.launch_dependents;" :::);
}

template <typename... KernelArgs, typename... Args>
void launch_pdl(Context& ctx, void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = ctx.stream();
  cudaLaunchAttribute attr[1] = {};
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<KernelArgs>(args)...));
}

}  // namespace nibble::cuda
