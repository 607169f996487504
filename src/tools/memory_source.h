// defines: MemorySample, MemorySource (what memory a process tree and its GPU use, sampled on demand),
// ProcMemorySource (/proc only: resident memory), NvmlMemorySource (NVML GPU memory + /proc),
// open_memory_source (NVML where a driver is, else /proc with the reason).
//
// The guard and the telemetry read memory only through this interface, so that tests can inject a
// fake that simulates a GPU breach or an unobservable GPU.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nibble {

class Nvml;

struct ProcessMemory {
  pid_t pid = 0;
  std::optional<uint64_t> gpu_bytes;  // summed over the watched devices; unset where not observable
  std::optional<uint64_t> rss_bytes;  // resident set; unset when /proc could not be read (it exited)
};

struct MemorySample {
  std::vector<ProcessMemory> processes;  // the sampled tree, root first

  // Per-process GPU memory: false without a driver, or where NVML answers "Not Supported" or
  // NVML_VALUE_NOT_AVAILABLE (unified-memory GPUs); the note says why.
  bool process_gpu_observable = false;
  std::string process_gpu_note;

  // Memory used on the watched device (the most used one when several are watched), all processes.
  std::optional<uint64_t> device_used_bytes;
  std::optional<uint64_t> device_total_bytes;
  std::string device_note;  // why device_used_bytes is unset

  // GPU processes NVML lists that this PID namespace does not show. In a container NVML reports
  // host pids, so the command's own memory cannot be matched and only the device total guards it.
  std::vector<pid_t> unmatched_gpu_pids;

  // Sums over `processes` (the GPU sum is meaningful only when process_gpu_observable).
  uint64_t tree_gpu_bytes() const;
  std::optional<uint64_t> tree_rss_bytes() const;  // unset when no process's RSS could be read
};

class MemorySource {
 public:
  virtual ~MemorySource() = default;
  // Memory of `root` and, with `with_descendants`, of every process descended from it or sharing
  // its process group (a daemonised grandchild reparented to init still counts while it stays in
  // the group).
  virtual MemorySample sample(pid_t root, bool with_descendants) = 0;
  virtual std::string describe() const = 0;  // e.g. "NVML device 0 (NVIDIA H100 80GB HBM3)"
};

// /proc only: no GPU numbers; `gpu_note` says why (e.g. the NVML load error).
class ProcMemorySource final : public MemorySource {
 public:
  explicit ProcMemorySource(std::string gpu_note);
  MemorySample sample(pid_t root, bool with_descendants) override;
  std::string describe() const override { return "/proc (no GPU numbers)"; }

 private:
  std::string gpu_note_;
};

// NVML for GPU memory (per process and per device) over `devices`, /proc for resident memory.
class NvmlMemorySource final : public MemorySource {
 public:
  NvmlMemorySource(std::shared_ptr<Nvml> nvml, std::vector<unsigned> devices);
  MemorySample sample(pid_t root, bool with_descendants) override;
  std::string describe() const override;

 private:
  std::shared_ptr<Nvml> nvml_;
  std::vector<unsigned> devices_;
};

// NVML over `devices` (all devices when empty) where libnvidia-ml loads and initialises, else a
// ProcMemorySource whose note gives the reason. `library` overrides the NVML library name (the
// NIBBLE_NVML_LIBRARY environment variable in the apps). Throws Error for a device index NVML
// does not have.
std::unique_ptr<MemorySource> open_memory_source(const std::vector<unsigned>& devices,
                                                 const std::string& library = "");

}  // namespace nibble
