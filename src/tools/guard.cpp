#include "tools/guard.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "tools/memory_source.h"
#include "tools/process_tree.h"

namespace nibble {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

std::string wall_clock_now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return fmt::format("{}.{:03d}", buf, static_cast<int>(ms));
}

// The signals the guard waits for with sigtimedwait instead of handling them asynchronously: no
// handler state, and none is lost between two polls. SIGTTOU is only blocked, so that giving the
// terminal to the child and taking it back cannot stop the guard.
sigset_t waited_signals() {
  sigset_t set;
  ::sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD}) ::sigaddset(&set, s);
  return set;
}

class BlockedSignals {
 public:
  BlockedSignals() {
    sigset_t set = waited_signals();
    ::sigaddset(&set, SIGTTOU);
    ::pthread_sigmask(SIG_BLOCK, &set, &old_);
  }
  ~BlockedSignals() { ::pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  BlockedSignals(const BlockedSignals&) = delete;
  BlockedSignals& operator=(const BlockedSignals&) = delete;
  const sigset_t& old() const { return old_; }

 private:
  sigset_t old_;
};

// Hands the terminal's foreground to the child's group, so an interactive command can read it,
// and takes it back at the end.
class TerminalForeground {
 public:
  explicit TerminalForeground(bool active) : active_(active) {}
  void give(pid_t group) {
    if (active_) active_ = ::tcsetpgrp(STDIN_FILENO, group) == 0;
  }
  ~TerminalForeground() {
    if (active_) ::tcsetpgrp(STDIN_FILENO, ::getpgrp());
  }
  TerminalForeground(const TerminalForeground&) = delete;
  TerminalForeground& operator=(const TerminalForeground&) = delete;

 private:
  bool active_;
};

// In the forked child: only async-signal-safe calls until exec.
[[noreturn]] void exec_child(const char* path, char* const* argv, bool take_terminal,
                             const sigset_t& old_mask, pid_t guard_pid, int report_fd) {
  ::setpgid(0, 0);
  if (take_terminal) ::tcsetpgrp(STDIN_FILENO, ::getpid());
  // A guard that dies (OOM killer, SIGKILL) must not leave its command running unguarded.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != guard_pid) ::_exit(128 + SIGTERM);
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::execv(path, argv);
  const int err = errno;
  [[maybe_unused]] ssize_t n = ::write(report_fd, &err, sizeof err);
  ::_exit(kCommandNotFoundExitCode);
}

bool group_alive(pid_t group) {
  return (::kill(-group, 0) == 0 || errno == EPERM) && group_has_live_process(group);
}

void signal_group(pid_t group, int sig) {
  // The child leads the group; should it have left the group, reach it directly.
  if (::kill(-group, sig) != 0) ::kill(group, sig);
}

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev != nullptr ? fmt::format("SIG{}", abbrev) : fmt::format("signal {}", sig);
}

struct Guarded {
  std::string label;
  uint64_t bytes = 0;
};

// The values the limit applies to, most specific first (see guard.h).
std::vector<Guarded> guarded_values(const MemorySample& s) {
  std::vector<Guarded> out;
  if (s.process_gpu_observable) out.push_back({"command GPU", s.tree_gpu_bytes()});
  if (s.device_used_bytes) out.push_back({"device used", *s.device_used_bytes});
  if (out.empty()) {
    if (auto rss = s.tree_rss_bytes()) out.push_back({"command RSS", *rss});
  }
  return out;
}

std::string fallback_name(const MemorySample& s) {
  if (s.device_used_bytes) return "the device's total used memory";
  if (s.tree_rss_bytes()) return "the command's resident memory (RSS of its process tree)";
  return "nothing";
}

std::string describe_sample(const MemorySample& s, const std::vector<Guarded>& guarded) {
  std::string out;
  for (const auto& g : guarded) {
    if (!out.empty()) out += ", ";
    out += fmt::format("{} {}", g.label, format_memory(g.bytes));
    if (g.label == "device used" && s.device_total_bytes)
      out += " of " + format_memory(*s.device_total_bytes);
    if (g.label == "command GPU" || g.label == "command RSS") {
      // Name the processes holding the memory (up to 8), largest first.
      std::vector<std::pair<uint64_t, pid_t>> held;
      for (const auto& p : s.processes) {
        const auto bytes = g.label == "command GPU" ? p.gpu_bytes : p.rss_bytes;
        if (bytes && *bytes > 0) held.emplace_back(*bytes, p.pid);
      }
      std::sort(held.rbegin(), held.rend());
      std::string list;
      for (size_t i = 0; i < held.size() && i < 8; ++i) {
        list += fmt::format("{}pid {} {}", i > 0 ? ", " : "", held[i].second, format_memory(held[i].first));
      }
      if (!list.empty()) out += " [" + list + "]";
    }
  }
  return out;
}

int read_exec_error(int fd) {
  int err = 0;
  ssize_t n;
  do {
    n = ::read(fd, &err, sizeof err);
  } while (n < 0 && errno == EINTR);
  return n == static_cast<ssize_t>(sizeof err) ? err : 0;
}

}  // namespace

std::string format_memory(uint64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (bytes >= (1ull << 30)) return fmt::format("{:.2f} GiB", b / (1ull << 30));
  if (bytes >= (1ull << 20)) return fmt::format("{:.1f} MiB", b / (1ull << 20));
  if (bytes >= (1ull << 10)) return fmt::format("{:.0f} KiB", b / (1ull << 10));
  return fmt::format("{} B", bytes);
}

std::string resolve_command(const std::string& name) {
  auto runnable = [](const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
  };
  if (name.find('/') != std::string::npos) {
    struct stat st {};
    if (::stat(name.c_str(), &st) != 0) {
      throw CommandNotRunnable(fmt::format("command not found: {} ({})", name, std::strerror(errno)),
                               kCommandNotFoundExitCode);
    }
    if (!runnable(name)) {
      throw CommandNotRunnable(fmt::format("command {} is not an executable file", name),
                               kCommandNotExecutableExitCode);
    }
    return name;
  }
  const char* env = std::getenv("PATH");
  const std::string path_list = env != nullptr ? env : "/usr/local/bin:/usr/bin:/bin";
  size_t begin = 0;
  while (begin <= path_list.size()) {
    const size_t end = std::min(path_list.find(':', begin), path_list.size());
    const std::string dir = end > begin ? path_list.substr(begin, end - begin) : ".";
    if (const std::string candidate = dir + "/" + name; runnable(candidate)) return candidate;
    begin = end + 1;
  }
  throw CommandNotRunnable(
      fmt::format("command not found: '{}' is not an executable in PATH ({})", name, path_list),
      kCommandNotFoundExitCode);
}

void validate_guard_options(const GuardOptions& o) {
  if (o.command.empty() || o.command[0].empty()) {
    fail("no command to guard: expected `nibble guard [options] -- COMMAND [ARGS...]`");
  }
  if (o.limit_bytes && *o.limit_bytes == 0) fail("--gpu-limit-gb must be > 0, got 0");
  auto check = [](const char* flag, double v, bool zero_ok) {
    if (!std::isfinite(v) || v < 0 || (!zero_ok && v == 0)) {
      fail("{} must be {} seconds, got {}", flag, zero_ok ? ">= 0" : "> 0", v);
    }
  };
  check("--over-secs", o.over_secs, true);
  check("--poll-secs", o.poll_secs, false);
  check("--grace-secs", o.grace_secs, false);
}

GuardResult run_guard(const GuardOptions& options, MemorySource& source, const GuardLog& log) {
  validate_guard_options(options);
  const std::string path = resolve_command(options.command[0]);

  // Observability is checked before the child starts: the guard never silently guards nothing.
  const MemorySample probe = source.sample(::getpid(), false);
  if (guarded_values(probe).empty()) {
    fail("no memory is observable: GPU: {}; device: {}; /proc: unreadable", probe.process_gpu_note,
         probe.device_note);
  }
  uint64_t limit = 0;
  if (options.limit_bytes) {
    limit = *options.limit_bytes;
  } else if (probe.device_total_bytes) {
    limit = *probe.device_total_bytes / 100 * 95;
  } else {
    fail("--gpu-limit-gb is required here: the GPU's memory size is not observable ({})", probe.device_note);
  }

  std::vector<char*> argv;
  for (const auto& a : options.command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const bool take_terminal =
      options.take_terminal && ::isatty(STDIN_FILENO) && ::tcgetpgrp(STDIN_FILENO) == ::getpgrp();

  BlockedSignals blocked;
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) fail("cannot create a pipe: {}", std::strerror(errno));
  const pid_t guard_pid = ::getpid();
  const pid_t child = ::fork();
  if (child < 0) {
    ::close(report[0]);
    ::close(report[1]);
    fail("cannot fork: {}", std::strerror(errno));
  }
  if (child == 0) exec_child(path.c_str(), argv.data(), take_terminal, blocked.old(), guard_pid, report[1]);
  ::setpgid(child, child);  // also done by the child: whichever runs first
  TerminalForeground terminal(take_terminal);
  terminal.give(child);
  ::close(report[1]);
  const int exec_error = read_exec_error(report[0]);
  ::close(report[0]);
  if (exec_error != 0) {
    ::waitpid(child, nullptr, 0);
    throw CommandNotRunnable(fmt::format("cannot run {}: {}", path, std::strerror(exec_error)),
                             exec_error == ENOENT ? kCommandNotFoundExitCode : kCommandNotExecutableExitCode);
  }

  const Clock::time_point start = Clock::now();
  GuardResult r;
  r.child = child;
  log(fmt::format("guard pid {}, command pid {} (process group {}): {}", guard_pid, child, child,
                  fmt::join(options.command, " ")));
  log(fmt::format("watching {}: limit {}, over {} s, poll {} s, grace {} s", source.describe(),
                  format_memory(limit), options.over_secs, options.poll_secs, options.grace_secs));

  std::string reported_process_note;
  bool reported_device_note = false;
  int unmatched_samples = 0;  // consecutive: a process may exit between NVML's list and /proc
  auto report_observability = [&](const MemorySample& s) {
    unmatched_samples = s.unmatched_gpu_pids.empty() ? 0 : unmatched_samples + 1;
    if (unmatched_samples == 2 && s.device_used_bytes) {
      log(
          fmt::format("NVML lists GPU processes this PID namespace does not show (pid {}; a container?): the "
                      "command's own GPU memory may read 0; the device's total used memory is still guarded",
                      s.unmatched_gpu_pids.front()));
    }
    if (!s.process_gpu_observable && s.process_gpu_note != reported_process_note) {
      reported_process_note = s.process_gpu_note;
      log(fmt::format("per-process GPU memory is not observable ({}); guarding {} instead",
                      s.process_gpu_note, fallback_name(s)));
    }
    if (s.process_gpu_observable && !s.device_used_bytes && !reported_device_note) {
      reported_device_note = true;
      log(fmt::format(
          "the device's total used memory is not observable ({}); guarding the command's GPU memory",
          s.device_note));
    }
  };
  report_observability(probe);

  const sigset_t waited = waited_signals();
  Clock::time_point next_poll = start;
  std::optional<Clock::time_point> over_since, kill_at;
  std::string last_sample_error;
  bool child_done = false;
  bool kill_deadline_passed = false;
  int status = 0;
  auto job_alive = [&] { return group_alive(child) || (!child_done && ::kill(child, 0) == 0); };
  for (;;) {
    if (!child_done && ::waitpid(child, &status, WNOHANG) == child) {
      child_done = true;
      r.end_s = seconds_between(start, Clock::now());
    }
    // After a breach the whole group must be gone (or SIGKILLed), not only the child.
    if (child_done && (!r.stopped_over_limit || kill_deadline_passed || !job_alive())) break;

    Clock::time_point now = Clock::now();
    if (!r.stopped_over_limit && !child_done && now >= next_poll) {
      MemorySample s;
      bool sampled = true;
      try {
        s = source.sample(child, true);
      } catch (const std::exception& e) {
        sampled = false;
        if (last_sample_error != e.what()) log(fmt::format("cannot sample memory: {}", e.what()));
        last_sample_error = e.what();
      }
      now = Clock::now();
      next_poll = std::max(next_poll + seconds(options.poll_secs), now);
      const std::vector<Guarded> guarded = sampled ? guarded_values(s) : std::vector<Guarded>{};
      if (sampled) {
        ++r.samples;
        report_observability(s);
        if (options.verbose) {
          log(fmt::format("t={:.2f} s {}", seconds_between(start, now), describe_sample(s, guarded)));
        }
      }
      const bool over =
          std::any_of(guarded.begin(), guarded.end(), [&](const Guarded& g) { return g.bytes > limit; });
      if (!over && sampled) {
        over_since.reset();
        r.first_over_s.reset();
      } else if (over) {
        if (!over_since) {
          over_since = now;
          r.first_over_s = seconds_between(start, now);
        }
        const double over_for = seconds_between(*over_since, now);
        if (over_for >= options.over_secs) {
          r.term_s = seconds_between(start, now);
          log(fmt::format(
              "limit exceeded at {:.2f} s ({}): {}; limit {}, over for {:.2f} s; sending SIGTERM to "
              "process group {}",
              *r.term_s, wall_clock_now(), describe_sample(s, guarded), format_memory(limit), over_for,
              child));
          signal_group(child, SIGTERM);
          r.stopped_over_limit = true;
          kill_at = now + seconds(options.grace_secs);
        }
      }
    }
    if (r.stopped_over_limit && !kill_deadline_passed && now >= *kill_at) {
      kill_deadline_passed = true;
      if (job_alive()) {
        r.sent_kill = true;
        r.kill_s = seconds_between(start, now);
        log(fmt::format("process group {} still alive {} s after SIGTERM; sending SIGKILL", child,
                        options.grace_secs));
        signal_group(child, SIGKILL);
      }
    }

    // Sleep until the next poll or the SIGKILL deadline; SIGCHLD or a forwarded signal wakes earlier.
    Clock::time_point wake = now + std::chrono::milliseconds(200);
    if (!r.stopped_over_limit && !child_done) wake = next_poll;
    if (r.stopped_over_limit && !kill_deadline_passed) {
      // Group members are not our children (no SIGCHLD): once the child is gone, look every 20 ms.
      wake = child_done ? std::min(*kill_at, now + std::chrono::milliseconds(20)) : *kill_at;
    }
    const auto wait_ns =
        std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::nanoseconds>(wake - now).count());
    const timespec ts{static_cast<time_t>(wait_ns / 1000000000), static_cast<long>(wait_ns % 1000000000)};
    siginfo_t info{};
    const int sig = ::sigtimedwait(&waited, &info, &ts);
    if (sig > 0 && sig != SIGCHLD) {
      r.forwarded_signals.push_back(sig);
      log(fmt::format("forwarding {} to process group {}", signal_name(sig), child));
      signal_group(child, sig);
    }
  }

  if (WIFSIGNALED(status)) r.child_signal = WTERMSIG(status);
  if (r.stopped_over_limit) {
    r.exit_code = kGuardStoppedExitCode;
    const std::string how = r.child_signal != 0 ? "ended by " + signal_name(r.child_signal)
                                                : fmt::format("exited with code {}", WEXITSTATUS(status));
    log(fmt::format("command stopped over the memory limit ({} at {:.2f} s); exit code {}", how, r.end_s,
                    kGuardStoppedExitCode));
  } else {
    r.exit_code = r.child_signal != 0 ? 128 + r.child_signal : WEXITSTATUS(status);
  }
  return r;
}

}  // namespace nibble
