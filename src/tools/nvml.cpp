#include "tools/nvml.h"

#include <dlfcn.h>

#include <climits>

#include "core/error.h"

namespace nibble {
namespace {

// Return codes from the NVML API reference (nvmlReturn_t).
constexpr int kSuccess = 0;
constexpr int kInsufficientSize = 7;

// nvmlMemory_t: bytes.
struct MemoryInfo {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

// nvmlProcessInfo_v2_t, filled by nvmlDeviceGetComputeRunningProcesses_v2 and _v3 (the _v3 entry
// point takes nvmlProcessInfo_t, documented with the same four fields).
struct ProcessInfo {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};
static_assert(sizeof(ProcessInfo) == 24, "nvmlProcessInfo_v2_t is 24 bytes on LP64");

// NVML_VALUE_NOT_AVAILABLE: the driver cannot say (WDDM, unified-memory GPUs).
constexpr unsigned long long kValueNotAvailable = ULLONG_MAX;

using DeviceHandle = void*;  // nvmlDevice_t is an opaque pointer

}  // namespace

struct Nvml::Api {
  int (*init)() = nullptr;
  int (*shutdown)() = nullptr;
  const char* (*error_string)(int) = nullptr;
  int (*device_count)(unsigned*) = nullptr;
  int (*handle_by_index)(unsigned, DeviceHandle*) = nullptr;
  int (*memory_info)(DeviceHandle, MemoryInfo*) = nullptr;
  int (*device_name)(DeviceHandle, char*, unsigned) = nullptr;
  int (*compute_processes)(DeviceHandle, unsigned*, ProcessInfo*) = nullptr;
  const char* compute_processes_name = "";
};

std::shared_ptr<Nvml> Nvml::load(const std::string& library, std::string* why) {
  const std::string name = library.empty() ? "libnvidia-ml.so.1" : library;
  void* handle = ::dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = ::dlerror();
    *why = fmt::format("NVML not loaded: {}", err != nullptr ? err : name);
    return nullptr;
  }
  auto api = std::make_unique<Api>();
  std::string missing;
  auto resolve = [&](auto& fn, const char* symbol) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(handle, symbol));
    if (fn == nullptr && missing.empty()) missing = symbol;
  };
  resolve(api->init, "nvmlInit_v2");
  resolve(api->shutdown, "nvmlShutdown");
  resolve(api->error_string, "nvmlErrorString");
  resolve(api->device_count, "nvmlDeviceGetCount_v2");
  resolve(api->handle_by_index, "nvmlDeviceGetHandleByIndex_v2");
  resolve(api->memory_info, "nvmlDeviceGetMemoryInfo");
  resolve(api->device_name, "nvmlDeviceGetName");
  // _v3 (drivers >= 510) and _v2 fill the same struct; older drivers have only _v2.
  for (const char* symbol :
       {"nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2"}) {
    api->compute_processes = reinterpret_cast<decltype(api->compute_processes)>(::dlsym(handle, symbol));
    if (api->compute_processes != nullptr) {
      api->compute_processes_name = symbol;
      break;
    }
  }
  if (api->compute_processes == nullptr && missing.empty())
    missing = "nvmlDeviceGetComputeRunningProcesses_v2";
  if (!missing.empty()) {
    ::dlclose(handle);
    *why = fmt::format("NVML library {} has no {}", name, missing);
    return nullptr;
  }
  if (const int rc = api->init(); rc != kSuccess) {
    *why = fmt::format("nvmlInit_v2 failed: {}", api->error_string(rc));
    ::dlclose(handle);
    return nullptr;
  }
  return std::shared_ptr<Nvml>(new Nvml(handle, std::move(api)));
}

Nvml::Nvml(void* handle, std::unique_ptr<Api> api) : handle_(handle), api_(std::move(api)) {}

Nvml::~Nvml() {
  api_->shutdown();
  ::dlclose(handle_);
}

std::string Nvml::error_string(int code) const {
  const char* s = api_->error_string(code);
  return s != nullptr ? s : fmt::format("NVML error {}", code);
}

unsigned Nvml::device_count() const {
  unsigned n = 0;
  if (const int rc = api_->device_count(&n); rc != kSuccess)
    fail("nvmlDeviceGetCount_v2: {}", error_string(rc));
  return n;
}

void* Nvml::device_handle(unsigned index) const {
  DeviceHandle device = nullptr;
  if (const int rc = api_->handle_by_index(index, &device); rc != kSuccess) {
    fail("NVML device {}: nvmlDeviceGetHandleByIndex_v2: {} ({} device(s) present)", index, error_string(rc),
         device_count());
  }
  return device;
}

std::string Nvml::device_name(unsigned index) const {
  char name[96] = {};
  if (api_->device_name(device_handle(index), name, sizeof name) != kSuccess) return "";
  return name;
}

Nvml::Answer<Nvml::DeviceMemory> Nvml::device_memory(unsigned index) const {
  MemoryInfo info{};
  if (const int rc = api_->memory_info(device_handle(index), &info); rc != kSuccess) {
    return {std::nullopt, "nvmlDeviceGetMemoryInfo: " + error_string(rc)};
  }
  return {DeviceMemory{info.total, info.used}, ""};
}

Nvml::Answer<std::vector<Nvml::ProcessUsage>> Nvml::compute_processes(unsigned index) const {
  DeviceHandle device = device_handle(index);
  std::vector<ProcessInfo> infos(32);
  // The list can grow between calls: retry with the size NVML asks for, plus slack.
  for (int attempt = 0; attempt < 4; ++attempt) {
    auto count = static_cast<unsigned>(infos.size());
    const int rc = api_->compute_processes(device, &count, infos.data());
    if (rc == kInsufficientSize) {
      infos.resize(count + 16);
      continue;
    }
    if (rc != kSuccess) {
      return {std::nullopt, fmt::format("{}: {}", api_->compute_processes_name, error_string(rc))};
    }
    std::vector<ProcessUsage> out;
    for (unsigned i = 0; i < count; ++i) {
      ProcessUsage p;
      p.pid = static_cast<pid_t>(infos[i].pid);
      if (infos[i].usedGpuMemory != kValueNotAvailable) p.used_bytes = infos[i].usedGpuMemory;
      out.push_back(p);
    }
    return {std::move(out), ""};
  }
  return {std::nullopt, fmt::format("{}: the process list kept growing", api_->compute_processes_name)};
}

}  // namespace nibble
