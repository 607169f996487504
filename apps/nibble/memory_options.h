// defines: add_memory_options (--mem-report FILE, --stop-after PHASE on any subcommand) and
// ending_cleanly_after_phase (a callback wrapper: --stop-after ends the command with exit 0).
//
//   MemoryTelemetryOptions mem;
//   add_memory_options(*sub, mem);
//   sub->callback(ending_cleanly_after_phase([&] { MemoryTelemetry t(mem); ... t.phase(Phase::load); }));
//
// Header-only so that the tests can drive it on a CLI::App of their own.
#pragma once

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>

#include "tools/telemetry.h"

namespace nibble::app {

inline void add_memory_options(CLI::App& sub, MemoryTelemetryOptions& options) {
  sub.add_option_function<std::string>(
         "--mem-report", [&options](const std::string& path) { options.report_path = path; },
         "Write GPU and host memory at each phase to FILE, one JSON line per phase")
      ->type_name("FILE");
  sub.add_option_function<std::string>(
         "--stop-after", [&options](const std::string& name) { options.stop_after = find_phase(name); },
         "End the run cleanly (exit 0) after PHASE, for diagnosis: " + phase_names_list())
      ->type_name("PHASE")
      ->check(CLI::Validator(
          [](std::string& name) -> std::string {
            if (find_phase(name)) return {};
            return fmt::format("unknown phase '{}'; known phases: {}", name, phase_names_list());
          },
          "PHASE"));
}

// Runs `body`; a StopAfterPhase from MemoryTelemetry::phase prints its message and exits 0
// (CLI::RuntimeError(0) is how a CLI11 callback sets the exit code).
inline std::function<void()> ending_cleanly_after_phase(std::function<void()> body) {
  return [body = std::move(body)] {
    try {
      body();
    } catch (const StopAfterPhase& stop) {
      std::fflush(stdout);
      fmt::print(stderr, "nibble: {}\n", stop.what());
      throw CLI::RuntimeError(0);
    }
  };
}

}  // namespace nibble::app
