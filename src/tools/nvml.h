// defines: Nvml, the few NVML calls nibble needs (device memory, per-process GPU memory), loaded at
// run time with dlopen so that nibble starts where no NVIDIA driver is installed.
//
// Function names, struct layouts and return codes follow the public NVML API reference
// (docs.nvidia.com/deploy/nvml-api); nothing is linked at build time.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nibble {

class Nvml {
 public:
  // Loads `library` (default "libnvidia-ml.so.1") and calls nvmlInit_v2. Returns null and sets
  // `why` (dlopen's or NVML's message) where that fails: no driver, a missing symbol, no device.
  static std::shared_ptr<Nvml> load(const std::string& library, std::string* why);
  ~Nvml();
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;

  struct DeviceMemory {
    uint64_t total = 0;
    uint64_t used = 0;
  };
  struct ProcessUsage {
    pid_t pid = 0;
    std::optional<uint64_t> used_bytes;  // unset where NVML reports NVML_VALUE_NOT_AVAILABLE
  };
  // A query that can be "Not Supported" on some GPUs: either a value or NVML's reason.
  template <typename T>
  struct Answer {
    std::optional<T> value;
    std::string error;  // e.g. "nvmlDeviceGetMemoryInfo: Not Supported"
  };

  unsigned device_count() const;
  std::string device_name(unsigned index) const;  // "" where NVML does not say
  Answer<DeviceMemory> device_memory(unsigned index) const;
  Answer<std::vector<ProcessUsage>> compute_processes(unsigned index) const;

  struct Api;  // resolved entry points (nvml.cpp)

 private:
  Nvml(void* handle, std::unique_ptr<Api> api);
  void* device_handle(unsigned index) const;  // throws Error for an index NVML does not have
  std::string error_string(int code) const;

  void* handle_ = nullptr;
  std::unique_ptr<Api> api_;
};

}  // namespace nibble
