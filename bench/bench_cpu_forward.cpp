// bench_cpu_forward: prefill and decode speed of the CPU backend through the Engine.
//
//   bench_cpu_forward [--threads N] [--prefill P] [--decode D] [--runs R] [MODEL_DIR ...]
//
// Default models (paths relative to the repository root, the working directory): the llama2.c
// fixture (tests/fixtures/llama2c_aidreams260K/hf) and models/tiny-qwen3. For each: one warm-up,
// then R runs of (a) a P-token prefill from position 0 and (b) D one-token decode steps after a
// 16-token prompt; medians are printed with the weight bytes streamed per decoded token (decode is
// bound by reading every linear weight once per token) and the prefill GFLOP/s (2 flops per
// layer weight per token plus the head for the last token, attention not counted).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "format/safetensors.h"
#include "runtime/engine.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// Bytes of the weights one token's forward reads: every linear layer and the head (the embedding
// lookup reads one row).
struct WeightCounts {
  double linear_params = 0;  // per token: multiply-adds of the layers
  double head_params = 0;    // and of the head (prefill runs it for the last token only)
  double bytes = 0;
};

WeightCounts count_weights(const std::filesystem::path& dir, const nibble::ModelConfig& c) {
  const nibble::WeightStore store = nibble::WeightStore::open_dir(dir);
  WeightCounts w;
  for (const auto& name : store.names()) {
    const auto& t = store.get(name);
    const bool head =
        name == "lm_head.weight" || (c.tie_word_embeddings && name == "model.embed_tokens.weight");
    const bool linear = name.find("_proj.weight") != std::string::npos;
    if (!head && !linear) continue;
    (head ? w.head_params : w.linear_params) +=
        static_cast<double>(t.numel()) * (t.dtype == nibble::DType::U8 ? 2 : 1);
    w.bytes += static_cast<double>(t.nbytes);
  }
  return w;
}

void bench_model(const std::filesystem::path& dir, int threads, int64_t prefill, int64_t decode, int runs) {
  nibble::EngineOptions opts;
  opts.threads = threads;
  auto engine = nibble::Engine::load(dir, opts);
  const auto& c = engine->config();
  const int64_t ctx = engine->context_length();
  const int64_t p = std::min(prefill, ctx);
  const int64_t prompt = std::min<int64_t>(16, ctx - 1);
  const int64_t d = std::min(decode, ctx - prompt);
  const WeightCounts w = count_weights(dir, c);

  std::vector<int32_t> tokens(static_cast<size_t>(std::max(p, prompt)));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7919 + 13) % c.vocab_size);

  std::vector<double> prefill_s, decode_s;
  for (int r = 0; r <= runs; ++r) {  // run 0 warms caches and pages in the mmap
    engine->truncate(0);
    auto t0 = Clock::now();
    engine->forward(std::span<const int32_t>(tokens.data(), static_cast<size_t>(p)));
    const double tp = seconds_since(t0);

    engine->truncate(0);
    std::span<const float> logits =
        engine->forward(std::span<const int32_t>(tokens.data(), static_cast<size_t>(prompt)));
    t0 = Clock::now();
    for (int64_t i = 0; i < d; ++i) {
      const int32_t next =
          static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      logits = engine->forward(std::span<const int32_t>(&next, 1));
    }
    const double td = seconds_since(t0);
    if (r > 0) {
      prefill_s.push_back(tp);
      decode_s.push_back(td);
    }
  }
  const double tp = median(prefill_s), td = median(decode_s);
  fmt::print("{}\n  {}\n", dir.string(), c.summary());
  fmt::print("  weights read per token: {:.1f} MB ({:.2f} M multiply-adds)\n", w.bytes / 1e6,
             w.linear_params / 1e6);
  fmt::print("  prefill {:4d} tokens: {:9.1f} tok/s  ({:.2f} ms, {:.2f} GFLOP/s)\n", p, p / tp, tp * 1e3,
             (2.0 * w.linear_params * p + 2.0 * w.head_params) / tp / 1e9);
  fmt::print("  decode  {:4d} tokens: {:9.1f} tok/s  ({:.3f} ms/token, {:.2f} GB/s of weights)\n", d, d / td,
             td / d * 1e3, w.bytes * d / td / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0, runs = 5;
  int64_t prefill = 128, decode = 64;
  std::vector<std::filesystem::path> dirs;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> long {
      if (i + 1 >= argc) {
        fmt::print(stderr, "{} needs a value\n", a);
        std::exit(2);
      }
      return std::strtol(argv[++i], nullptr, 10);
    };
    if (a == "--threads") {
      threads = static_cast<int>(value());
    } else if (a == "--prefill") {
      prefill = value();
    } else if (a == "--decode") {
      decode = value();
    } else if (a == "--runs") {
      runs = static_cast<int>(value());
    } else if (a == "-h" || a == "--help") {
      fmt::print(
          "usage: bench_cpu_forward [--threads N] [--prefill P] [--decode D] [--runs R] [MODEL_DIR ...]\n");
      return 0;
    } else {
      dirs.emplace_back(a);
    }
  }
  if (dirs.empty()) {
    for (const char* d : {"tests/fixtures/llama2c_aidreams260K/hf", "models/tiny-qwen3"}) {
      if (std::filesystem::exists(d)) dirs.emplace_back(d);
    }
  }
  const unsigned cores = std::thread::hardware_concurrency();
  fmt::print("bench_cpu_forward: {} hardware threads, using {}; median of {} runs\n", cores,
             threads > 0 ? threads : static_cast<int>(cores), runs);
  try {
    for (const auto& d : dirs) bench_model(d, threads, prefill, decode, runs);
  } catch (const nibble::Error& e) {
    fmt::print(stderr, "bench_cpu_forward: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
