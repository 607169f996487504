// defines: MemoryPlan (every device buffer of a model, named and grouped, with its offset in one
// arena) and DeviceArena (the plan allocated by a single cudaMalloc).
//
// The CUDA backend adds weights, KV cache, activations and workspaces to a plan at load, prints it,
// refuses to start when it exceeds --gpu-mem-budget or the free memory, then allocates it once:
// nothing is allocated while generating.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "backend/cuda/context.cuh"

namespace nibble::cuda {

class MemoryPlan {
 public:
  static constexpr size_t kAlign = 256;  // cuBLASLt and 16-byte vector accesses need far less
  // Every entry is padded to kAlign, so the total does not depend on the order of allocation.
  static constexpr size_t padded(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

  struct Entry {
    std::string group;  // "weights", "kv cache", "activations", "workspace"
    std::string name;
    size_t bytes = 0;
    size_t offset = 0;
  };

  // Reserves `bytes` (padded) and returns the offset in the arena.
  size_t add(const std::string& group, const std::string& name, size_t bytes);

  size_t total_bytes() const { return total_; }
  size_t group_bytes(const std::string& group) const;
  const std::vector<Entry>& entries() const { return entries_; }

  // A table: one line per group (bytes and entry count) and the total; with `budget`, the budget
  // and whether the plan fits.
  std::string describe(std::optional<size_t> budget = std::nullopt) const;

 private:
  std::vector<Entry> entries_;
  size_t total_ = 0;
};

class DeviceArena {
 public:
  DeviceArena() = default;
  DeviceArena(Context& ctx, const MemoryPlan& plan) : buffer_(ctx, plan.total_bytes(), "the memory plan") {}

  template <typename T>
  T* at(size_t offset) const {
    return reinterpret_cast<T*>(buffer_.get<char>() + offset);
  }
  size_t bytes() const { return buffer_.bytes(); }

 private:
  DeviceBuffer buffer_;
};

}  // namespace nibble::cuda
