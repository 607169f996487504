// nibble guard: run a command, stop it before its GPU memory takes the machine down.
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "core/error.h"
#include "tools/guard.h"
#include "tools/memory_source.h"

namespace nibble::app {
namespace {

struct GuardCli {
  std::optional<double> limit_gb;
  double over_secs = 0;
  double poll_secs = 1;
  double grace_secs = 5;
  unsigned device = 0;
  bool verbose = false;
  std::vector<std::string> command;
};

constexpr const char* kFooter = R"(Usage: nibble guard [OPTIONS] -- COMMAND [ARGS...]

The limit applies to the GPU memory of COMMAND and all its descendants (and process
group), and to the device's total used memory: whichever passes it for --over-secs ends the run
(SIGTERM to the process group, SIGKILL --grace-secs later). Where per-process GPU memory is not
observable (no driver, unified-memory GPU) guard says so and guards the device total, or with no
GPU numbers at all the command's resident memory (RSS). NIBBLE_NVML_LIBRARY overrides the NVML
library (default libnvidia-ml.so.1).

Exit codes: the command's own; 128+N if signal N ended it (a forwarded Ctrl-C: 130);
  3 if guard stopped it over the limit; 126 command not executable; 127 command not found;
  1 guard's own errors (arguments, nothing observable).)";

void run(const GuardCli& cli) {
  GuardOptions options;
  options.command = cli.command;
  if (cli.limit_gb) {
    if (!std::isfinite(*cli.limit_gb) || *cli.limit_gb <= 0)
      fail("--gpu-limit-gb must be > 0, got {}", *cli.limit_gb);
    options.limit_bytes = static_cast<uint64_t>(*cli.limit_gb * static_cast<double>(1ull << 30));
    if (*options.limit_bytes == 0) fail("--gpu-limit-gb {} is less than one byte", *cli.limit_gb);
  }
  options.over_secs = cli.over_secs;
  options.poll_secs = cli.poll_secs;
  options.grace_secs = cli.grace_secs;
  options.verbose = cli.verbose;
  validate_guard_options(options);  // before NVML is loaded: argument errors come first

  const char* library = std::getenv("NIBBLE_NVML_LIBRARY");
  std::unique_ptr<MemorySource> source = open_memory_source({cli.device}, library != nullptr ? library : "");
  auto log = [](const std::string& line) { fmt::print(stderr, "nibble guard: {}\n", line); };
  GuardResult result;
  try {
    result = run_guard(options, *source, log);
  } catch (const CommandNotRunnable& e) {
    fmt::print(stderr, "nibble: error: {}\n", e.what());
    throw CLI::RuntimeError(e.exit_code());
  }
  if (result.exit_code != 0) throw CLI::RuntimeError(result.exit_code);
}

}  // namespace

void add_guard_command(CLI::App& app) {
  auto cli = std::make_shared<GuardCli>();
  CLI::App* sub = app.add_subcommand(
      "guard", "Run COMMAND in its own process group and stop it when its GPU memory passes a limit");
  sub->add_option("--gpu-limit-gb", cli->limit_gb,
                  "Memory limit in GiB (2^30 bytes); default 95% of the device's memory")
      ->type_name("X");
  sub->add_option("--over-secs", cli->over_secs,
                  "Stop only after S seconds over the limit (0: first sample over)")
      ->type_name("S")
      ->capture_default_str();
  sub->add_option("--poll-secs", cli->poll_secs, "Seconds between memory samples")
      ->type_name("P")
      ->capture_default_str();
  sub->add_option("--grace-secs", cli->grace_secs, "Seconds between SIGTERM and SIGKILL")
      ->type_name("G")
      ->capture_default_str();
  sub->add_option("--device", cli->device, "NVML index of the GPU to watch (as nvidia-smi numbers it)")
      ->type_name("N")
      ->capture_default_str();
  sub->add_flag("--verbose", cli->verbose, "Log every memory sample");
  // After "--" every argument is positional, so the command's own options reach it untouched.
  sub->add_option("command", cli->command, "The command to run and its arguments (after --)")
      ->type_name("COMMAND");
  sub->footer(kFooter);
  sub->callback([cli] { run(*cli); });
}

}  // namespace nibble::app
