// defines: MemoryTelemetry (memory at the named phases of a long command, written as JSON lines with
// --mem-report FILE), Phase, PlannerNumbers, MemoryRecord, StopAfterPhase (--stop-after PHASE).
//
// Usage in a command (the CLI options come from apps/nibble/memory_options.h):
//   MemoryTelemetry mem(options);              // opens the report, loads NVML if a driver is there
//   load_model(...);  mem.phase(Phase::load);
//   prefill(...);     mem.phase(Phase::prefill, {.used_bytes = plan.used, .peak_bytes = plan.peak});
// phase() is called when a phase has ended. It throws StopAfterPhase after recording the phase
// named by --stop-after (its first occurrence); the command wrapper turns that into a clean exit 0.
#pragma once

#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace nibble {

class MemorySource;

enum class Phase { load, prefill, decode, forward, backward, optimizer_step, export_model };

std::span<const Phase> all_phases();
// "load", "prefill", "decode", "forward", "backward", "optimizer-step", "export".
std::string_view phase_name(Phase phase);
std::optional<Phase> find_phase(std::string_view name);
// Throws Error naming `name` and listing the known phases.
Phase parse_phase(std::string_view name);
std::string phase_names_list();  // "load, prefill, decode, ..."

// What the caller's memory planner knows (the CUDA backend's arena); unset fields are written as null.
struct PlannerNumbers {
  std::optional<uint64_t> used_bytes;
  std::optional<uint64_t> peak_bytes;
};

struct MemoryTelemetryOptions {
  std::filesystem::path report_path;  // --mem-report; empty: no report
  std::optional<Phase> stop_after;    // --stop-after
};

// One JSON line of the report.
struct MemoryRecord {
  Phase phase = Phase::load;
  uint64_t seq = 0;                        // 0, 1, 2... in call order
  double t_ms = 0;                         // since the telemetry was created
  std::optional<uint64_t> gpu_used_bytes;  // driver (NVML): this process, else the device total
  std::optional<uint64_t> gpu_peak_bytes;  // largest gpu_used_bytes recorded so far
  std::string gpu_scope;                   // "process", "device", or "" when no GPU number
  std::string gpu_note;                    // why gpu_used_bytes is not per process, if it is not
  PlannerNumbers planner;
  std::optional<uint64_t> rss_bytes;       // /proc/self/statm
  std::optional<uint64_t> rss_peak_bytes;  // VmHWM from /proc/self/status
};

// {"phase":"prefill","seq":1,"t_ms":..,"gpu_used_bytes":..,"gpu_peak_bytes":..,"gpu_scope":"process",
//  "planner_used_bytes":..,"planner_peak_bytes":..,"rss_bytes":..,"rss_peak_bytes":..} (+ "gpu_note")
std::string to_json_line(const MemoryRecord& record);

// Thrown by MemoryTelemetry::phase after recording the --stop-after phase.
class StopAfterPhase : public std::exception {
 public:
  StopAfterPhase(Phase phase, std::string message) : phase_(phase), message_(std::move(message)) {}
  Phase phase() const { return phase_; }
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  Phase phase_;
  std::string message_;
};

class MemoryTelemetry {
 public:
  // Opens the report (truncating it; throws Error naming the path) and, when any option is set,
  // the memory source: NVML over all devices where a driver loads, else /proc only.
  explicit MemoryTelemetry(MemoryTelemetryOptions options);
  // With an injected source (tests); `source` may be null when no option is set.
  MemoryTelemetry(MemoryTelemetryOptions options, std::unique_ptr<MemorySource> source);
  ~MemoryTelemetry();
  MemoryTelemetry(const MemoryTelemetry&) = delete;
  MemoryTelemetry& operator=(const MemoryTelemetry&) = delete;

  // False when neither --mem-report nor --stop-after is set: phase() then costs nothing.
  bool active() const { return source_ != nullptr; }

  // Records the memory at the end of `phase`, writes it (one flushed JSON line) to the report, and
  // throws StopAfterPhase when `phase` is the --stop-after phase.
  void phase(Phase phase, const PlannerNumbers& planner = {});

  const std::optional<MemoryRecord>& last() const { return last_; }

 private:
  MemoryTelemetryOptions options_;
  std::unique_ptr<MemorySource> source_;
  std::FILE* report_ = nullptr;
  double start_ms_ = 0;
  uint64_t seq_ = 0;
  std::optional<uint64_t> gpu_peak_;
  std::optional<MemoryRecord> last_;
};

}  // namespace nibble
