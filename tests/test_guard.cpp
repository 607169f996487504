// nibble guard: the policy loop run against real child processes with an injected memory source
// (a simulated GPU breach), and the nibble binary itself: arguments, exit codes, the fallback
// message where GPU memory is not observable, signal forwarding and a real RSS breach.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "support/test_support.h"
#include "tools/guard.h"
#include "tools/memory_source.h"
#include "tools/process_tree.h"

namespace nibble {
namespace {

using test::ScratchDir;

constexpr uint64_t kGiB = 1ull << 30;
// Upper bounds on timings allow for a loaded machine; lower bounds are exact (the policy must
// never act early).
constexpr double kSlack = 0.35;

// Memory as a function of the seconds since the source was created (just before the child starts).
class FakeSource : public MemorySource {
 public:
  using Script = std::function<MemorySample(double t)>;
  explicit FakeSource(Script script) : script_(std::move(script)), start_(std::chrono::steady_clock::now()) {}
  MemorySample sample(pid_t root, bool with_descendants) override {
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    MemorySample s = script_(with_descendants ? t : -1.0);  // the guard's probe of itself: t = -1
    for (auto& p : s.processes) p.pid = root;
    return s;
  }
  std::string describe() const override { return "fake GPU"; }

 private:
  Script script_;
  std::chrono::steady_clock::time_point start_;
};

MemorySample gpu(uint64_t command_bytes, std::optional<uint64_t> device_used = 0) {
  MemorySample s;
  s.processes = {{0, command_bytes, 8u << 20}};
  s.process_gpu_observable = true;
  s.device_used_bytes = device_used;
  s.device_total_bytes = 80 * kGiB;
  return s;
}

struct GuardRun {
  GuardResult result;
  std::string log;
};

GuardRun guard(std::vector<std::string> command, FakeSource::Script script, double over, double poll,
               double grace, uint64_t limit = kGiB) {
  GuardOptions o;
  o.command = std::move(command);
  o.limit_bytes = limit;
  o.over_secs = over;
  o.poll_secs = poll;
  o.grace_secs = grace;
  FakeSource source(std::move(script));
  GuardRun run;
  run.result = run_guard(o, source, [&](const std::string& line) { run.log += line + "\n"; });
  return run;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(GuardPolicy, BreachSendsTermAndTheChildDiesOnIt) {
  const GuardRun r = guard(
      {"sleep", "30"}, [](double) { return gpu(2 * kGiB); }, 0, 0.05, 2.0);
  EXPECT_EQ(r.result.exit_code, kGuardStoppedExitCode);
  EXPECT_TRUE(r.result.stopped_over_limit);
  EXPECT_FALSE(r.result.sent_kill);
  EXPECT_EQ(r.result.child_signal, SIGTERM);
  ASSERT_TRUE(r.result.term_s.has_value());
  EXPECT_LT(*r.result.term_s, kSlack);
  EXPECT_LT(r.result.end_s, 1.0);  // well before the 2 s grace
  EXPECT_TRUE(contains(r.log, "limit exceeded")) << r.log;
  EXPECT_TRUE(contains(r.log, "command GPU 2.00 GiB")) << r.log;
  EXPECT_TRUE(contains(r.log, "limit 1.00 GiB")) << r.log;
  EXPECT_TRUE(contains(r.log, "sending SIGTERM")) << r.log;
  EXPECT_FALSE(contains(r.log, "SIGKILL")) << r.log;
  EXPECT_TRUE(contains(r.log, fmt::format("command pid {}", r.result.child))) << r.log;
}

TEST(GuardPolicy, TermIgnoredGetsKillAfterGraceForTheWholeGroup) {
  ScratchDir dir("guard-kill");
  const auto ready = dir / "ready";
  const auto pid_file = dir / "sleep.pid";
  // The shell and its background sleep both ignore SIGTERM; only SIGKILL to the group ends them.
  const std::string script =
      "trap '' TERM; sleep 30 & echo $! > " + pid_file.string() + "; touch " + ready.string() + "; wait";
  const double grace = 0.5;
  const GuardRun r = guard(
      {"sh", "-c", script},
      [&](double t) { return gpu(t >= 0 && std::filesystem::exists(ready) ? 2 * kGiB : 0); }, 0, 0.05, grace);
  EXPECT_EQ(r.result.exit_code, kGuardStoppedExitCode);
  EXPECT_TRUE(r.result.stopped_over_limit);
  EXPECT_TRUE(r.result.sent_kill);
  EXPECT_EQ(r.result.child_signal, SIGKILL);
  ASSERT_TRUE(r.result.term_s && r.result.kill_s);
  EXPECT_GE(*r.result.kill_s - *r.result.term_s, grace);
  EXPECT_LT(*r.result.kill_s - *r.result.term_s, grace + kSlack);
  EXPECT_TRUE(contains(r.log, "sending SIGTERM")) << r.log;
  EXPECT_TRUE(contains(r.log, "sending SIGKILL")) << r.log;
  EXPECT_LT(r.log.find("SIGTERM"), r.log.find("SIGKILL"));

  // The background sleep was in the group: gone, or a zombie waiting for init to reap it.
  std::ifstream in(pid_file);
  pid_t sleep_pid = 0;
  ASSERT_TRUE(in >> sleep_pid);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::ifstream stat("/proc/" + std::to_string(sleep_pid) + "/stat");
  std::string line;
  if (std::getline(stat, line)) EXPECT_NE(line.find(") Z"), std::string::npos) << line;
}

TEST(GuardPolicy, OverForLessThanOverSecsDoesNotStop) {
  // Over the limit between 0.2 s and 0.5 s only: 0.3 s < S = 0.8 s.
  const GuardRun r = guard(
      {"sleep", "1"}, [](double t) { return gpu(t >= 0.2 && t < 0.5 ? 2 * kGiB : 0); }, 0.8, 0.05, 1.0);
  EXPECT_EQ(r.result.exit_code, 0) << r.log;
  EXPECT_FALSE(r.result.stopped_over_limit);
  EXPECT_FALSE(contains(r.log, "SIGTERM")) << r.log;
  EXPECT_GT(r.result.samples, 5);
}

TEST(GuardPolicy, OverForOverSecsStops) {
  const double over = 0.5, poll = 0.05;
  const GuardRun r = guard(
      {"sleep", "30"}, [](double t) { return gpu(t >= 0.2 ? 2 * kGiB : 0); }, over, poll, 1.0);
  EXPECT_EQ(r.result.exit_code, kGuardStoppedExitCode);
  ASSERT_TRUE(r.result.first_over_s && r.result.term_s);
  EXPECT_GE(*r.result.first_over_s, 0.2 - 0.02);  // the fake's clock starts a moment before the guard's
  EXPECT_LT(*r.result.first_over_s, 0.2 + poll + kSlack);
  EXPECT_GE(*r.result.term_s - *r.result.first_over_s, over);
  EXPECT_LT(*r.result.term_s - *r.result.first_over_s, over + poll + kSlack);
  EXPECT_TRUE(contains(r.log, "over for 0.5")) << r.log;
}

TEST(GuardPolicy, ZeroOverSecsStopsAtTheFirstSampleOver) {
  const double poll = 0.1;
  const GuardRun r = guard(
      {"sleep", "30"}, [](double t) { return gpu(t >= 0.3 ? 2 * kGiB : 0); }, 0, poll, 1.0);
  EXPECT_EQ(r.result.exit_code, kGuardStoppedExitCode);
  ASSERT_TRUE(r.result.first_over_s && r.result.term_s);
  EXPECT_EQ(*r.result.term_s, *r.result.first_over_s);
  EXPECT_LT(*r.result.term_s, 0.3 + poll + kSlack);
}

TEST(GuardPolicy, DeviceTotalIsGuardedToo) {
  const GuardRun r = guard(
      {"sleep", "30"}, [](double) { return gpu(0, 3 * kGiB); }, 0, 0.05, 1.0);
  EXPECT_EQ(r.result.exit_code, kGuardStoppedExitCode);
  EXPECT_TRUE(contains(r.log, "device used 3.00 GiB of 80.00 GiB")) << r.log;
}

TEST(GuardPolicy, ExitCodesPassThrough) {
  auto under = [](double) { return gpu(0); };
  EXPECT_EQ(guard({"sh", "-c", "exit 7"}, under, 0, 0.05, 1.0).result.exit_code, 7);
  EXPECT_EQ(guard({"true"}, under, 0, 0.05, 1.0).result.exit_code, 0);
  const GuardRun r = guard({"sh", "-c", "kill -USR1 $$"}, under, 0, 0.05, 1.0);
  EXPECT_EQ(r.result.exit_code, 128 + SIGUSR1);
  EXPECT_EQ(r.result.child_signal, SIGUSR1);
  EXPECT_FALSE(r.result.stopped_over_limit);
}

TEST(GuardPolicy, UnobservablePerProcessMemoryFallsBackToTheDeviceTotal) {
  const GuardRun r = guard(
      {"sleep", "30"},
      [](double t) {
        MemorySample s = gpu(0, t > 0.2 ? 2 * kGiB : kGiB / 2);
        s.process_gpu_observable = false;
        s.process_gpu_note = "fake NVML: Not Supported";
        s.processes[0].gpu_bytes.reset();
        return s;
      },
      0, 0.05, 1.0);
  EXPECT_TRUE(contains(r.log,
                       "per-process GPU memory is not observable (fake NVML: Not Supported); guarding "
                       "the device's total used memory instead"))
      << r.log;
  EXPECT_LT(r.log.find("not observable"), r.log.find("limit exceeded"));
  EXPECT_EQ(r.result.exit_code, kGuardStoppedExitCode);
}

TEST(GuardPolicy, SaysSoWhenNvmlPidsAreFromAnotherPidNamespace) {
  const GuardRun r = guard(
      {"sh", "-c", "sleep 0.3"},
      [](double) {
        MemorySample s = gpu(0, kGiB / 2);
        s.unmatched_gpu_pids = {4194000};
        return s;
      },
      0, 0.05, 1.0);
  EXPECT_EQ(r.result.exit_code, 0);
  EXPECT_TRUE(contains(r.log, "NVML lists GPU processes this PID namespace does not show (pid 4194000"))
      << r.log;
  EXPECT_TRUE(contains(r.log, "the device's total used memory is still guarded")) << r.log;
}

TEST(GuardPolicy, NoGpuNumbersFallsBackToResidentMemory) {
  const GuardRun r = guard(
      {"sleep", "30"},
      [](double t) {
        MemorySample s;
        s.processes = {{0, std::nullopt, t > 0.2 ? 2 * kGiB : 1u << 20}};
        s.process_gpu_note = s.device_note = "NVML not loaded: fake";
        return s;
      },
      0, 0.05, 1.0);
  EXPECT_TRUE(contains(r.log,
                       "per-process GPU memory is not observable (NVML not loaded: fake); guarding the "
                       "command's resident memory (RSS of its process tree) instead"))
      << r.log;
  EXPECT_TRUE(contains(r.log, "command RSS 2.00 GiB")) << r.log;
  EXPECT_EQ(r.result.exit_code, kGuardStoppedExitCode);
}

TEST(GuardPolicy, NothingObservableRefusesToStart) {
  ScratchDir dir("guard-nothing");
  const auto marker = dir / "ran";
  FakeSource source([](double) {
    MemorySample s;
    s.processes = {{0, std::nullopt, std::nullopt}};
    s.process_gpu_note = s.device_note = "nothing";
    return s;
  });
  GuardOptions o;
  o.command = {"touch", marker.string()};
  o.limit_bytes = kGiB;
  EXPECT_THROW(run_guard(o, source, [](const std::string&) {}), Error);
  EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST(GuardPolicy, InvalidOptionsAndMissingCommands) {
  FakeSource source([](double) { return gpu(0); });
  auto run = [&](GuardOptions o) { run_guard(o, source, [](const std::string&) {}); };
  GuardOptions ok;
  ok.command = {"true"};
  ok.limit_bytes = kGiB;
  GuardOptions o = ok;
  o.command.clear();
  EXPECT_THROW(run(o), Error);
  o = ok;
  o.poll_secs = 0;
  EXPECT_THROW(run(o), Error);
  o = ok;
  o.over_secs = -1;
  EXPECT_THROW(run(o), Error);
  o = ok;
  o.grace_secs = std::nan("");
  EXPECT_THROW(run(o), Error);
  o = ok;
  o.limit_bytes = 0;
  EXPECT_THROW(run(o), Error);
  o = ok;
  o.command = {"nibble-no-such-command-xyz"};
  try {
    run(o);
    ADD_FAILURE() << "expected CommandNotRunnable";
  } catch (const CommandNotRunnable& e) {
    EXPECT_EQ(e.exit_code(), kCommandNotFoundExitCode);
    EXPECT_TRUE(contains(e.what(), "nibble-no-such-command-xyz")) << e.what();
  }
  o.command = {"/etc/hostname"};  // exists, not executable
  try {
    run(o);
    ADD_FAILURE() << "expected CommandNotRunnable";
  } catch (const CommandNotRunnable& e) {
    EXPECT_EQ(e.exit_code(), kCommandNotExecutableExitCode);
  }
  EXPECT_EQ(resolve_command("sh").back(), 'h');
  EXPECT_TRUE(std::filesystem::path(resolve_command("sh")).is_absolute() ||
              contains(resolve_command("sh"), "/"));
}

TEST(ProcessTree, FindsDescendantsAndTheirResidentMemory) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setpgid(0, 0);
    ::execlp("sh", "sh", "-c", "sleep 30 & sleep 30 & wait", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  std::vector<pid_t> tree;
  for (int i = 0; i < 100 && tree.size() < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    tree = process_tree(pid);
  }
  ProcMemorySource source("test");
  const MemorySample s = source.sample(pid, true);
  ::kill(-pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  ASSERT_EQ(tree.size(), 3u);
  EXPECT_EQ(tree[0], pid);
  EXPECT_GE(s.processes.size(), 3u);
  ASSERT_TRUE(s.tree_rss_bytes().has_value());
  EXPECT_GT(*s.tree_rss_bytes(), 0u);
  EXPECT_FALSE(s.process_gpu_observable);
  EXPECT_TRUE(process_tree(pid).empty());
}

// --- the nibble binary -------------------------------------------------------------------------

// NVML that cannot load: the same result here and on a machine with a driver.
std::vector<std::string> without_nvml(std::vector<std::string> args) {
  std::vector<std::string> argv{"env", "NIBBLE_NVML_LIBRARY=/nonexistent/libnvidia-ml.so.1",
                                test::nibble_bin().string(), "guard"};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

TEST(GuardCommand, ArgumentErrors) {
  auto r = test::run_nibble({"guard", "--gpu-limit-gb", "-1", "--", "true"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "--gpu-limit-gb must be > 0")) << r.err;
  r = test::run_nibble({"guard", "--gpu-limit-gb", "2", "--poll-secs", "0", "--", "true"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "--poll-secs must be > 0")) << r.err;
  r = test::run_nibble({"guard", "--gpu-limit-gb", "2", "--grace-secs", "-3", "--", "true"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "--grace-secs must be > 0")) << r.err;
  r = test::run_nibble({"guard", "--gpu-limit-gb", "2"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "no command to guard")) << r.err;
  r = test::run_nibble({"guard", "--gpu-limit-gb", "2", "--", "nibble-no-such-command-xyz", "a"});
  EXPECT_EQ(r.exit_code, kCommandNotFoundExitCode);
  EXPECT_TRUE(contains(r.err, "command not found: 'nibble-no-such-command-xyz'")) << r.err;
  r = test::run_nibble({"guard", "--gpu-limit-gb", "2", "--bogus", "--", "true"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "--bogus")) << r.err;
}

TEST(GuardCommand, PrintsPidsAndFallbackWhenNoDriverAndPassesArguments) {
  const auto r = test::run_program(
      without_nvml({"--gpu-limit-gb", "1", "--", "sh", "-c", "echo \"$@\"; exit 7", "sh", "--flag", "-x"}));
  EXPECT_EQ(r.exit_code, 7) << r.err;
  EXPECT_EQ(r.out, "--flag -x\n");
  EXPECT_TRUE(contains(r.err, "nibble guard: guard pid ")) << r.err;
  EXPECT_TRUE(contains(r.err, ", command pid ")) << r.err;
  EXPECT_TRUE(contains(r.err, "nibble guard: per-process GPU memory is not observable (NVML not loaded: "))
      << r.err;
  EXPECT_TRUE(contains(r.err, "guarding the command's resident memory (RSS of its process tree) instead"))
      << r.err;
  // Without a limit there is no device size to take 95% of.
  const auto no_limit = test::run_program(without_nvml({"--", "true"}));
  EXPECT_EQ(no_limit.exit_code, 1);
  EXPECT_TRUE(contains(no_limit.err, "--gpu-limit-gb is required here")) << no_limit.err;
}

TEST(GuardCommand, TrueExitsZeroWithTheFallbackMessage) {
  const auto r = test::run_program(without_nvml({"--gpu-limit-gb", "1", "--", "true"}));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "per-process GPU memory is not observable")) << r.err;
}

TEST(GuardCommand, StopsARealProcessTreeOverTheLimitByResidentMemory) {
  // dd holds a 64 MiB buffer while blocked writing into a pipe nobody reads: RSS of the tree >> 32 MiB.
  const auto start = std::chrono::steady_clock::now();
  const auto r =
      test::run_program(without_nvml({"--gpu-limit-gb", "0.03125", "--poll-secs", "0.05", "--grace-secs", "1",
                                      "--", "sh", "-c", "dd if=/dev/zero bs=64M count=1 | sleep 30"}));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.exit_code, kGuardStoppedExitCode) << r.err;
  EXPECT_TRUE(contains(r.err, "limit exceeded")) << r.err;
  EXPECT_TRUE(contains(r.err, "command RSS")) << r.err;
  EXPECT_TRUE(contains(r.err, "limit 32.0 MiB")) << r.err;
  EXPECT_TRUE(contains(r.err, "exit code 3")) << r.err;
  // Every process of the group dies on SIGTERM (orphaned zombies do not count as alive): no SIGKILL.
  EXPECT_FALSE(contains(r.err, "SIGKILL")) << r.err;
  EXPECT_LT(secs, 1.0);
}

TEST(GuardCommand, ForwardsCtrlCToTheCommand) {
  ScratchDir dir("guard-sigint");
  const auto err_path = dir / "stderr";
  const std::vector<std::string> argv =
      without_nvml({"--gpu-limit-gb", "100", "--poll-secs", "0.05", "--", "sleep", "30"});
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  // Wait until the guard has started its command, then Ctrl-C the guard.
  std::string err;
  for (int i = 0; i < 150 && !contains(err, "watching"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::ifstream in(err_path);
    err.assign(std::istreambuf_iterator<char>(in), {});
  }
  ::kill(pid, SIGINT);
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::ifstream in(err_path);
  err.assign(std::istreambuf_iterator<char>(in), {});
  ASSERT_TRUE(WIFEXITED(status)) << err;
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGINT) << err;
  EXPECT_TRUE(contains(err, "forwarding SIGINT to process group")) << err;
}

TEST(GuardCommand, HelpDocumentsTheExitCodes) {
  const auto r = test::run_nibble({"guard", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "3 if guard stopped it over the limit")) << r.out;
  EXPECT_TRUE(contains(r.out, "--over-secs")) << r.out;
}

}  // namespace
}  // namespace nibble
