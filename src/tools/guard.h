// defines: run_guard (start a command in its own process group, watch its GPU memory, stop it over a
// limit: SIGTERM to the group, SIGKILL after a grace period), GuardOptions, GuardResult, the guard's
// exit codes, resolve_command.
//
// Policy: every poll samples the memory source. The guarded values are the GPU memory of the
// child's process tree and the watched device's total used memory; where per-process GPU memory
// is not observable only the device total is guarded, and with no GPU numbers at all the tree's
// resident memory (RSS). When any guarded value stays above the limit for over_secs (0: the
// first sample over), the breach is logged and the group gets SIGTERM, then SIGKILL grace_secs
// later if any of it is still alive. SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to the guard are
// forwarded to the group.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"

namespace nibble {

class MemorySource;

// Exit codes of `nibble guard` (README "nibble guard", --help):
//   the child's own code when it exits by itself; 128 + N when signal N ended it and the guard
//   did not stop it (a forwarded Ctrl-C gives 130);
inline constexpr int kGuardStoppedExitCode = 3;  // the guard stopped it over the memory limit
inline constexpr int kCommandNotExecutableExitCode = 126;
inline constexpr int kCommandNotFoundExitCode = 127;
//   1 for the guard's own errors (arguments, memory not observable at all).

struct GuardOptions {
  std::vector<std::string> command;     // argv; command[0] is looked up in PATH unless it has a '/'
  std::optional<uint64_t> limit_bytes;  // unset: 95% of the watched device's memory
  double over_secs = 0;                 // >= 0
  double poll_secs = 1;                 // > 0
  double grace_secs = 5;                // > 0
  bool verbose = false;                 // log every sample
  // Give the child the terminal's foreground (so that an interactive command can read it and gets
  // Ctrl-C directly) when the guard holds it.
  bool take_terminal = true;
};

// What happened, for the exit code and for tests. Times are seconds since the child started.
struct GuardResult {
  int exit_code = 0;
  pid_t child = 0;
  bool stopped_over_limit = false;     // the guard sent SIGTERM for a breach
  bool sent_kill = false;              // ... and SIGKILL after the grace period
  int child_signal = 0;                // the signal that ended the child; 0 when it exited
  std::optional<double> first_over_s;  // first sample over the limit (of the breach episode)
  std::optional<double> term_s;
  std::optional<double> kill_s;
  double end_s = 0;
  std::vector<int> forwarded_signals;
  int samples = 0;
};

// A command that cannot be started: the exit code says which way (126 or 127).
class CommandNotRunnable : public Error {
 public:
  CommandNotRunnable(const std::string& message, int exit_code) : Error(message), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// The path exec will run for `name`: `name` itself when it holds a '/', else the first executable
// match in $PATH. Throws CommandNotRunnable.
std::string resolve_command(const std::string& name);

// Throws Error naming the first invalid option.
void validate_guard_options(const GuardOptions& options);

using GuardLog = std::function<void(const std::string& line)>;

// Runs the command to its end under the policy above. `log` receives each message line (no
// newline). Throws Error / CommandNotRunnable before the child starts when the options are
// invalid, the command cannot be run, or no memory at all is observable.
GuardResult run_guard(const GuardOptions& options, MemorySource& source, const GuardLog& log);

// "2.00 GiB", "512.0 MiB", "12 KiB": the unit nearest the size.
std::string format_memory(uint64_t bytes);

}  // namespace nibble
