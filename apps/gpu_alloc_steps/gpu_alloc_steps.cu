// gpu_alloc_steps: takes device memory step by step (cudaMalloc + cudaMemset, so the pages are
// really backed) and prints each step with its time, then holds it. The demo load for
// `nibble guard` (scripts/guard_gpu_demo.sh): the guard's breach log can be read against this
// program's own timeline.
//
//   gpu_alloc_steps [--step-mb 256] [--interval-secs 0.25] [--total-mb 4096] [--hold-secs 60] [--device 0]
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

void check(cudaError_t err, const char* what, const char* file, int line) {
  if (err == cudaSuccess) return;
  std::fprintf(stderr, "gpu_alloc_steps: %s failed at %s:%d: %s\n", what, file, line,
               cudaGetErrorString(err));
  std::exit(1);
}
#define CHECK_CUDA(call) check((call), #call, __FILE__, __LINE__)

struct Options {
  double step_mb = 256;
  double interval_secs = 0.25;
  double total_mb = 4096;
  double hold_secs = 60;
  int device = 0;
};

[[noreturn]] void usage(const char* problem) {
  std::fprintf(
      stderr,
      "gpu_alloc_steps: %s\nusage: gpu_alloc_steps [--step-mb MB] [--interval-secs S] [--total-mb MB] "
      "[--hold-secs S] [--device N]\n",
      problem);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") usage("allocates device memory step by step");
    if (i + 1 >= argc) usage(("missing value after " + flag).c_str());
    char* end = nullptr;
    const double v = std::strtod(argv[++i], &end);
    if (end == argv[i] || *end != '\0' || v < 0) usage(("bad value for " + flag + ": " + argv[i]).c_str());
    if (flag == "--step-mb")
      o.step_mb = v;
    else if (flag == "--interval-secs")
      o.interval_secs = v;
    else if (flag == "--total-mb")
      o.total_mb = v;
    else if (flag == "--hold-secs")
      o.hold_secs = v;
    else if (flag == "--device")
      o.device = static_cast<int>(v);
    else
      usage(("unknown flag " + flag).c_str());
  }
  if (o.step_mb <= 0 || o.total_mb <= 0) usage("--step-mb and --total-mb must be > 0");
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };

  CHECK_CUDA(cudaSetDevice(o.device));
  CHECK_CUDA(cudaFree(nullptr));  // create the context first: its own memory shows before step 1
  size_t free_bytes = 0, total_bytes = 0;
  CHECK_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
  std::printf("t=%.3f s context ready on device %d: %.0f MiB free of %.0f MiB\n", elapsed(), o.device,
              free_bytes / 1048576.0, total_bytes / 1048576.0);
  std::fflush(stdout);

  const size_t step = static_cast<size_t>(o.step_mb * 1048576.0);
  const size_t total = static_cast<size_t>(o.total_mb * 1048576.0);
  std::vector<void*> blocks;
  size_t held = 0;
  while (held < total) {
    const size_t n = std::min(step, total - held);
    void* p = nullptr;
    CHECK_CUDA(cudaMalloc(&p, n));
    CHECK_CUDA(cudaMemset(p, 0x5a, n));
    CHECK_CUDA(cudaDeviceSynchronize());
    blocks.push_back(p);
    held += n;
    std::printf("t=%.3f s step %zu: holding %.0f MiB\n", elapsed(), blocks.size(), held / 1048576.0);
    std::fflush(stdout);
    if (held < total) std::this_thread::sleep_for(std::chrono::duration<double>(o.interval_secs));
  }
  std::printf("t=%.3f s all %.0f MiB allocated; holding for %.1f s\n", elapsed(), held / 1048576.0,
              o.hold_secs);
  std::fflush(stdout);
  std::this_thread::sleep_for(std::chrono::duration<double>(o.hold_secs));
  for (void* p : blocks) CHECK_CUDA(cudaFree(p));
  std::printf("t=%.3f s released; done\n", elapsed());
  return 0;
}
