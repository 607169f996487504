#include "tools/telemetry.h"

#include <fmt/format.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tools/guard.h"
#include "tools/memory_source.h"
#include "tools/process_tree.h"

namespace nibble {
namespace {

constexpr std::array<Phase, 7> kPhases = {Phase::load,        Phase::prefill,  Phase::decode,
                                          Phase::forward,     Phase::backward, Phase::optimizer_step,
                                          Phase::export_model};

double monotonic_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

nlohmann::json bytes_or_null(const std::optional<uint64_t>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json();
}

}  // namespace

std::span<const Phase> all_phases() { return kPhases; }

std::string_view phase_name(Phase phase) {
  switch (phase) {
    case Phase::load:
      return "load";
    case Phase::prefill:
      return "prefill";
    case Phase::decode:
      return "decode";
    case Phase::forward:
      return "forward";
    case Phase::backward:
      return "backward";
    case Phase::optimizer_step:
      return "optimizer-step";
    case Phase::export_model:
      return "export";
  }
  NIBBLE_ASSERT(false);
  return "";
}

std::optional<Phase> find_phase(std::string_view name) {
  for (Phase p : kPhases) {
    if (phase_name(p) == name) return p;
  }
  return std::nullopt;
}

std::string phase_names_list() {
  std::string out;
  for (Phase p : kPhases) out += fmt::format("{}{}", out.empty() ? "" : ", ", phase_name(p));
  return out;
}

Phase parse_phase(std::string_view name) {
  if (auto p = find_phase(name)) return *p;
  fail("unknown phase '{}': expected one of {}", name, phase_names_list());
}

std::string to_json_line(const MemoryRecord& r) {
  nlohmann::ordered_json j;
  j["phase"] = std::string(phase_name(r.phase));
  j["seq"] = r.seq;
  j["t_ms"] = std::round(r.t_ms * 1000.0) / 1000.0;
  j["gpu_used_bytes"] = bytes_or_null(r.gpu_used_bytes);
  j["gpu_peak_bytes"] = bytes_or_null(r.gpu_peak_bytes);
  j["gpu_scope"] = r.gpu_scope.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(r.gpu_scope);
  if (!r.gpu_note.empty()) j["gpu_note"] = r.gpu_note;
  j["planner_used_bytes"] = bytes_or_null(r.planner.used_bytes);
  j["planner_peak_bytes"] = bytes_or_null(r.planner.peak_bytes);
  j["rss_bytes"] = bytes_or_null(r.rss_bytes);
  j["rss_peak_bytes"] = bytes_or_null(r.rss_peak_bytes);
  return j.dump();
}

MemoryTelemetry::MemoryTelemetry(MemoryTelemetryOptions options)
    : MemoryTelemetry(options, !options.report_path.empty() || options.stop_after
                                   ? open_memory_source({},
                                                        [] {
                                                          const char* lib =
                                                              std::getenv("NIBBLE_NVML_LIBRARY");
                                                          return std::string(lib != nullptr ? lib : "");
                                                        }())
                                   : nullptr) {}

MemoryTelemetry::MemoryTelemetry(MemoryTelemetryOptions options, std::unique_ptr<MemorySource> source)
    : options_(std::move(options)), source_(std::move(source)), start_ms_(monotonic_ms()) {
  NIBBLE_ASSERT(source_ != nullptr || (options_.report_path.empty() && !options_.stop_after));
  if (!options_.report_path.empty()) {
    report_ = std::fopen(options_.report_path.c_str(), "w");
    if (report_ == nullptr) {
      fail("cannot open --mem-report file {} for writing: {}", options_.report_path.string(),
           std::strerror(errno));
    }
  }
}

MemoryTelemetry::~MemoryTelemetry() {
  if (report_ != nullptr) std::fclose(report_);
}

void MemoryTelemetry::phase(Phase phase, const PlannerNumbers& planner) {
  if (source_ == nullptr) return;
  const MemorySample s = source_->sample(::getpid(), false);
  MemoryRecord r;
  r.phase = phase;
  r.seq = seq_++;
  r.t_ms = monotonic_ms() - start_ms_;
  if (s.process_gpu_observable) {
    r.gpu_used_bytes = s.tree_gpu_bytes();
    r.gpu_scope = "process";
  } else {
    // Without per-process numbers the device total is the best the driver can say.
    r.gpu_used_bytes = s.device_used_bytes;
    r.gpu_scope = s.device_used_bytes ? "device" : "";
    r.gpu_note = s.process_gpu_note;
  }
  if (r.gpu_used_bytes) gpu_peak_ = std::max(gpu_peak_.value_or(0), *r.gpu_used_bytes);
  r.gpu_peak_bytes = gpu_peak_;
  r.planner = planner;
  r.rss_bytes = s.tree_rss_bytes();
  r.rss_peak_bytes = peak_resident_bytes();
  last_ = r;

  if (report_ != nullptr) {
    const std::string line = to_json_line(r) + "\n";
    // Flushed per line: the report must survive the crash it is meant to explain.
    if (std::fwrite(line.data(), 1, line.size(), report_) != line.size() || std::fflush(report_) != 0) {
      fail("cannot write --mem-report file {}: {}", options_.report_path.string(), std::strerror(errno));
    }
  }
  if (options_.stop_after == phase) {
    std::string summary = r.gpu_used_bytes
                              ? fmt::format("GPU {} ({}, peak {})", format_memory(*r.gpu_used_bytes),
                                            r.gpu_scope, format_memory(r.gpu_peak_bytes.value_or(0)))
                              : std::string("GPU not observable");
    if (r.planner.used_bytes) summary += fmt::format(", planner {}", format_memory(*r.planner.used_bytes));
    if (r.rss_bytes) summary += fmt::format(", RSS {}", format_memory(*r.rss_bytes));
    if (r.rss_peak_bytes) summary += fmt::format(" (peak {})", format_memory(*r.rss_peak_bytes));
    throw StopAfterPhase(phase, fmt::format("stopped after phase '{}' (--stop-after {}): {}",
                                            phase_name(phase), phase_name(phase), summary));
  }
}

}  // namespace nibble
