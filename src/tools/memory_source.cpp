#include "tools/memory_source.h"

#include <fmt/format.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <map>

#include "core/error.h"
#include "tools/nvml.h"
#include "tools/process_tree.h"

namespace nibble {
namespace {

// The processes to sample, each with its resident memory.
std::vector<ProcessMemory> resident_tree(pid_t root, bool with_descendants) {
  std::vector<pid_t> pids = with_descendants ? process_tree(root) : std::vector<pid_t>{root};
  std::vector<ProcessMemory> out;
  for (pid_t pid : pids) out.push_back({pid, std::nullopt, resident_bytes(pid)});
  return out;
}

}  // namespace

uint64_t MemorySample::tree_gpu_bytes() const {
  uint64_t sum = 0;
  for (const auto& p : processes) sum += p.gpu_bytes.value_or(0);
  return sum;
}

std::optional<uint64_t> MemorySample::tree_rss_bytes() const {
  std::optional<uint64_t> sum;
  for (const auto& p : processes) {
    if (p.rss_bytes) sum = sum.value_or(0) + *p.rss_bytes;
  }
  return sum;
}

ProcMemorySource::ProcMemorySource(std::string gpu_note) : gpu_note_(std::move(gpu_note)) {}

MemorySample ProcMemorySource::sample(pid_t root, bool with_descendants) {
  MemorySample s;
  s.processes = resident_tree(root, with_descendants);
  s.process_gpu_observable = false;
  s.process_gpu_note = gpu_note_;
  s.device_note = gpu_note_;
  return s;
}

NvmlMemorySource::NvmlMemorySource(std::shared_ptr<Nvml> nvml, std::vector<unsigned> devices)
    : nvml_(std::move(nvml)), devices_(std::move(devices)) {
  NIBBLE_ASSERT(nvml_ != nullptr && !devices_.empty());
}

std::string NvmlMemorySource::describe() const {
  std::string out = devices_.size() == 1 ? "NVML device " : "NVML devices ";
  for (size_t i = 0; i < devices_.size(); ++i) {
    out += fmt::format("{}{}", i > 0 ? ", " : "", devices_[i]);
    if (const std::string name = nvml_->device_name(devices_[i]); !name.empty()) out += " (" + name + ")";
  }
  return out;
}

MemorySample NvmlMemorySource::sample(pid_t root, bool with_descendants) {
  MemorySample s;
  s.processes = resident_tree(root, with_descendants);
  std::map<pid_t, ProcessMemory*> by_pid;
  for (auto& p : s.processes) by_pid[p.pid] = &p;

  s.process_gpu_observable = true;
  for (unsigned device : devices_) {
    const auto memory = nvml_->device_memory(device);
    if (memory.value) {
      // Several devices: the one nearest to a limit is the one that matters.
      if (!s.device_used_bytes || memory.value->used > *s.device_used_bytes) {
        s.device_used_bytes = memory.value->used;
        s.device_total_bytes = memory.value->total;
      }
    } else if (s.device_note.empty()) {
      s.device_note = memory.error;
    }
    const auto procs = nvml_->compute_processes(device);
    if (!procs.value) {
      s.process_gpu_observable = false;
      s.process_gpu_note = procs.error;
      continue;
    }
    for (const auto& usage : *procs.value) {
      if (!usage.used_bytes) {
        // Unified-memory GPUs list the process but cannot size its memory.
        s.process_gpu_observable = false;
        s.process_gpu_note = fmt::format("NVML lists pid {} with memory NVML_VALUE_NOT_AVAILABLE", usage.pid);
        continue;
      }
      if (auto it = by_pid.find(usage.pid); it != by_pid.end()) {
        it->second->gpu_bytes = it->second->gpu_bytes.value_or(0) + *usage.used_bytes;
      } else if (::kill(usage.pid, 0) != 0 && errno == ESRCH) {
        s.unmatched_gpu_pids.push_back(usage.pid);
      }
    }
  }
  // A GPU whose device memory is "Not Supported" shares memory with the host: per-process numbers,
  // even where NVML lists none yet, would not show what the job takes.
  if (!s.device_used_bytes && s.process_gpu_observable) {
    s.process_gpu_observable = false;
    s.process_gpu_note = s.device_note;
  }
  if (!s.process_gpu_observable) {
    for (auto& p : s.processes) p.gpu_bytes.reset();
  } else {
    for (auto& p : s.processes) {
      if (!p.gpu_bytes) p.gpu_bytes = 0;  // observable: absent from NVML's list means none
    }
  }
  return s;
}

std::unique_ptr<MemorySource> open_memory_source(const std::vector<unsigned>& devices,
                                                 const std::string& library) {
  std::string why;
  std::shared_ptr<Nvml> nvml = Nvml::load(library, &why);
  if (nvml == nullptr) return std::make_unique<ProcMemorySource>(why);
  const unsigned count = nvml->device_count();
  if (count == 0) return std::make_unique<ProcMemorySource>("NVML sees no GPU");
  std::vector<unsigned> watched = devices;
  if (watched.empty()) {
    for (unsigned i = 0; i < count; ++i) watched.push_back(i);
  }
  for (unsigned d : watched) {
    if (d >= count)
      fail("GPU device {} does not exist: NVML sees {} device(s), numbered 0 to {}", d, count, count - 1);
  }
  return std::make_unique<NvmlMemorySource>(std::move(nvml), std::move(watched));
}

}  // namespace nibble
