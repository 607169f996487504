// Tokenizer throughput on one core: load time of tokenizer.json, then encoding of the 1.1 MB
// tinyshakespeare corpus. The first encode runs with an empty per-word BPE cache ("cold"); the
// following runs hit the cache ("warm"), which is the steady state of a long-lived process.
//
// Usage: bench_tokenizer [TOKENIZER_DIR] [TEXT_FILE] [RUNS]
//   defaults: tests/fixtures/qwen3_tokenizer tests/fixtures/corpus/tinyshakespeare_input.txt 9
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file.h"
#include "tokenizer/tokenizer.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// CPU time of this thread: on a shared machine wall time also counts time spent descheduled.
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "tests/fixtures/qwen3_tokenizer";
  const std::string path = argc > 2 ? argv[2] : "tests/fixtures/corpus/tinyshakespeare_input.txt";
  const int runs = argc > 3 ? std::max(1, std::atoi(argv[3])) : 9;
  try {
    auto t0 = std::chrono::steady_clock::now();
    const nibble::Tokenizer tok = nibble::Tokenizer::load_dir(dir);
    const double load_s = seconds_since(t0);
    const std::string text = nibble::read_text_file(path);
    const double mb = text.size() / 1e6;

    t0 = std::chrono::steady_clock::now();
    double c0 = thread_cpu_seconds();
    const size_t n_tokens = tok.encode(text).size();
    const double cold_s = seconds_since(t0), cold_cpu = thread_cpu_seconds() - c0;

    std::vector<double> times, cpu_times;
    for (int i = 0; i < runs; ++i) {
      t0 = std::chrono::steady_clock::now();
      c0 = thread_cpu_seconds();
      const size_t n = tok.encode(text).size();
      times.push_back(seconds_since(t0));
      cpu_times.push_back(thread_cpu_seconds() - c0);
      if (n != n_tokens) nibble::fail("encode is not deterministic: {} then {} tokens", n_tokens, n);
    }
    std::sort(times.begin(), times.end());
    std::sort(cpu_times.begin(), cpu_times.end());
    const double median = times[times.size() / 2], median_cpu = cpu_times[cpu_times.size() / 2];

    fmt::print("tokenizer: {} (load {:.3f} s, vocab {})\n", dir, load_s, tok.vocab_size());
    fmt::print("text: {} ({:.2f} MB, {} tokens, {:.2f} bytes/token), one thread\n", path, mb, n_tokens,
               text.size() / double(n_tokens));
    fmt::print(
        "cold encode (empty word cache): wall {:.3f} s = {:.1f} MB/s, {:.2f} M tokens/s; thread CPU {:.3f} "
        "s\n",
        cold_s, mb / cold_s, n_tokens / cold_s / 1e6, cold_cpu);
    fmt::print(
        "warm encode, median of {}: wall {:.3f} s = {:.1f} MB/s, {:.2f} M tokens/s (min {:.3f}, max {:.3f}); "
        "thread CPU {:.3f} s = {:.1f} MB/s\n",
        runs, median, mb / median, n_tokens / median / 1e6, times.front(), times.back(), median_cpu,
        mb / median_cpu);
  } catch (const nibble::Error& e) {
    fmt::print(stderr, "bench_tokenizer: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
