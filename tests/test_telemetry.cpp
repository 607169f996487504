// Memory telemetry: the JSON lines written at each phase (GPU from an injected source, planner
// numbers, real RSS), the GPU peak, the fallbacks when per-process GPU memory is not observable,
// --stop-after, and the CLI options that every long command adds.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../apps/nibble/memory_options.h"
#include "core/error.h"
#include "support/test_support.h"
#include "tools/memory_source.h"
#include "tools/telemetry.h"

namespace nibble {
namespace {

using nlohmann::json;
using test::ScratchDir;

// Per-process GPU bytes from a list, one per sample (the last repeats); RSS a fixed 5 MiB.
class ScriptedSource : public MemorySource {
 public:
  explicit ScriptedSource(std::vector<uint64_t> gpu, bool per_process = true)
      : gpu_(std::move(gpu)), per_process_(per_process) {}
  MemorySample sample(pid_t root, bool with_descendants) override {
    EXPECT_EQ(root, ::getpid());
    EXPECT_FALSE(with_descendants);
    const uint64_t bytes = gpu_[std::min(calls_++, gpu_.size() - 1)];
    MemorySample s;
    s.processes = {{root, std::nullopt, 5u << 20}};
    s.process_gpu_observable = per_process_;
    if (per_process_) {
      s.processes[0].gpu_bytes = bytes;
      s.device_used_bytes = bytes + 1000;
    } else {
      s.process_gpu_note = "fake: Not Supported";
      s.device_used_bytes = bytes;
    }
    return s;
  }
  std::string describe() const override { return "scripted"; }

 private:
  std::vector<uint64_t> gpu_;
  bool per_process_;
  size_t calls_ = 0;
};

std::vector<json> read_lines(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::vector<json> out;
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
  return out;
}

TEST(Phases, NamesRoundTripAndUnknownNamesListTheKnownOnes) {
  for (Phase p : all_phases()) EXPECT_EQ(parse_phase(phase_name(p)), p);
  EXPECT_EQ(all_phases().size(), 7u);
  EXPECT_EQ(phase_name(Phase::optimizer_step), "optimizer-step");
  EXPECT_EQ(phase_name(Phase::export_model), "export");
  EXPECT_FALSE(find_phase("Decode").has_value());
  try {
    parse_phase("warmup");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'warmup'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("load, prefill, decode, forward, backward, optimizer-step, export"), std::string::npos)
        << msg;
  }
}

TEST(MemoryTelemetry, WritesOneJsonLinePerPhaseWithPeaks) {
  ScratchDir dir("telemetry");
  const auto report = dir / "mem.jsonl";
  {
    MemoryTelemetry t({report, std::nullopt},
                      std::make_unique<ScriptedSource>(std::vector<uint64_t>{100, 300, 200}));
    EXPECT_TRUE(t.active());
    t.phase(Phase::load);
    t.phase(Phase::prefill, {.used_bytes = 1000, .peak_bytes = 2000});
    // Each line is flushed as it is written: readable while the run goes on.
    EXPECT_EQ(read_lines(report).size(), 2u);
    t.phase(Phase::decode);
  }
  const auto lines = read_lines(report);
  ASSERT_EQ(lines.size(), 3u);
  const std::vector<std::string> phases{"load", "prefill", "decode"};
  const std::vector<uint64_t> used{100, 300, 200}, peak{100, 300, 300};
  double last_t = -1;
  for (size_t i = 0; i < 3; ++i) {
    const json& j = lines[i];
    EXPECT_EQ(j["phase"], phases[i]);
    EXPECT_EQ(j["seq"], i);
    EXPECT_EQ(j["gpu_used_bytes"], used[i]);
    EXPECT_EQ(j["gpu_peak_bytes"], peak[i]);
    EXPECT_EQ(j["gpu_scope"], "process");
    EXPECT_FALSE(j.contains("gpu_note"));
    EXPECT_EQ(j["rss_bytes"], 5u << 20);
    // VmHWM of this test process: real, and at least a few hundred KiB.
    ASSERT_TRUE(j["rss_peak_bytes"].is_number_unsigned()) << j;
    EXPECT_GT(j["rss_peak_bytes"].get<uint64_t>(), 100u << 10);
    EXPECT_GE(j["t_ms"].get<double>(), last_t);
    last_t = j["t_ms"].get<double>();
  }
  EXPECT_TRUE(lines[0]["planner_used_bytes"].is_null());
  EXPECT_TRUE(lines[0]["planner_peak_bytes"].is_null());
  EXPECT_EQ(lines[1]["planner_used_bytes"], 1000);
  EXPECT_EQ(lines[1]["planner_peak_bytes"], 2000);
}

TEST(MemoryTelemetry, FallsBackToTheDeviceTotalWithANote) {
  ScratchDir dir("telemetry-device");
  const auto report = dir / "mem.jsonl";
  {
    MemoryTelemetry t({report, std::nullopt},
                      std::make_unique<ScriptedSource>(std::vector<uint64_t>{7000}, false));
    t.phase(Phase::forward);
    ASSERT_TRUE(t.last().has_value());
    EXPECT_EQ(t.last()->gpu_scope, "device");
  }
  const auto lines = read_lines(report);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["gpu_used_bytes"], 7000);
  EXPECT_EQ(lines[0]["gpu_scope"], "device");
  EXPECT_EQ(lines[0]["gpu_note"], "fake: Not Supported");
}

TEST(MemoryTelemetry, NoGpuNumbersAreNull) {
  MemoryTelemetry t({"", Phase::backward}, std::make_unique<ProcMemorySource>("NVML not loaded: test"));
  t.phase(Phase::forward);
  ASSERT_TRUE(t.last().has_value());
  const json j = json::parse(to_json_line(*t.last()));
  EXPECT_TRUE(j["gpu_used_bytes"].is_null());
  EXPECT_TRUE(j["gpu_peak_bytes"].is_null());
  EXPECT_TRUE(j["gpu_scope"].is_null());
  EXPECT_EQ(j["gpu_note"], "NVML not loaded: test");
  EXPECT_GT(j["rss_bytes"].get<uint64_t>(), 0u);  // the real /proc/self/statm
}

TEST(MemoryTelemetry, StopAfterThrowsOnceThePhaseIsRecorded) {
  ScratchDir dir("telemetry-stop");
  const auto report = dir / "mem.jsonl";
  MemoryTelemetry t({report, Phase::prefill},
                    std::make_unique<ScriptedSource>(std::vector<uint64_t>{1ull << 30}));
  t.phase(Phase::load);
  try {
    t.phase(Phase::prefill, {.used_bytes = 3ull << 30, .peak_bytes = std::nullopt});
    ADD_FAILURE() << "expected StopAfterPhase";
  } catch (const StopAfterPhase& stop) {
    EXPECT_EQ(stop.phase(), Phase::prefill);
    const std::string msg = stop.what();
    EXPECT_NE(msg.find("stopped after phase 'prefill'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("GPU 1.00 GiB"), std::string::npos) << msg;
    EXPECT_NE(msg.find("planner 3.00 GiB"), std::string::npos) << msg;
  }
  const auto lines = read_lines(report);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1]["phase"], "prefill");
}

TEST(MemoryTelemetry, InactiveWithoutOptions) {
  MemoryTelemetry t(MemoryTelemetryOptions{});
  EXPECT_FALSE(t.active());
  for (Phase p : all_phases()) t.phase(p);
  EXPECT_FALSE(t.last().has_value());
}

TEST(MemoryTelemetry, RealSourceWritesAParsableLine) {
  ScratchDir dir("telemetry-real");
  const auto report = dir / "mem.jsonl";
  {
    MemoryTelemetry t({report, std::nullopt});  // NVML where a driver is, /proc otherwise
    t.phase(Phase::load);
  }
  const auto lines = read_lines(report);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["phase"], "load");
  EXPECT_GT(lines[0]["rss_bytes"].get<uint64_t>(), 0u);
  EXPECT_GE(lines[0]["rss_peak_bytes"].get<uint64_t>(), lines[0]["rss_bytes"].get<uint64_t>());
}

TEST(MemoryTelemetry, UnwritableReportNamesThePath) {
  try {
    MemoryTelemetry t({"/nonexistent-dir/mem.jsonl", std::nullopt}, std::make_unique<ProcMemorySource>("x"));
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/mem.jsonl"), std::string::npos) << e.what();
  }
}

// The CLI glue on a toy program, as a subcommand would use it.
struct ToyApp {
  CLI::App app{"toy", "toy"};
  MemoryTelemetryOptions mem;
  std::vector<std::string> reached;

  ToyApp() {
    CLI::App* sub = app.add_subcommand("train", "");
    app::add_memory_options(*sub, mem);
    sub->callback(app::ending_cleanly_after_phase([this] {
      MemoryTelemetry t(mem, std::make_unique<ScriptedSource>(std::vector<uint64_t>{42}));
      for (Phase p : {Phase::load, Phase::forward, Phase::backward, Phase::optimizer_step}) {
        reached.emplace_back(phase_name(p));
        t.phase(p);
      }
    }));
  }
  int run(std::vector<std::string> args) {
    args.insert(args.begin(), "toy");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    try {
      app.parse(static_cast<int>(argv.size()), argv.data());
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    return 0;
  }
};

TEST(MemoryOptions, StopAfterEndsTheCommandCleanly) {
  ScratchDir dir("telemetry-cli");
  const auto report = dir / "mem.jsonl";
  ToyApp toy;
  testing::internal::CaptureStderr();
  const int code = toy.run({"train", "--mem-report", report.string(), "--stop-after", "backward"});
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(code, 0);
  EXPECT_EQ(toy.reached, (std::vector<std::string>{"load", "forward", "backward"}));
  EXPECT_NE(err.find("nibble: stopped after phase 'backward' (--stop-after backward)"), std::string::npos)
      << err;
  const auto lines = read_lines(report);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[2]["phase"], "backward");
}

TEST(MemoryOptions, RunsToTheEndWithoutStopAfter) {
  ToyApp toy;
  EXPECT_EQ(toy.run({"train"}), 0);
  EXPECT_EQ(toy.reached.size(), 4u);
  EXPECT_FALSE(toy.mem.stop_after.has_value());
}

TEST(MemoryOptions, UnknownPhaseIsAnErrorListingThePhases) {
  ToyApp toy;
  testing::internal::CaptureStderr();
  const int code = toy.run({"train", "--stop-after", "warmup"});
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(code, 0);
  EXPECT_TRUE(toy.reached.empty());
  EXPECT_NE(err.find("unknown phase 'warmup'; known phases: load, prefill, decode"), std::string::npos)
      << err;
}

}  // namespace
}  // namespace nibble
