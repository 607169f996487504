// defines: ThreadPool, the CPU backend's workers (owned by the backend context, never global).
//
// parallel_for splits [0, n) into chunks that the calling thread and the workers claim from an
// atomic counter; each index is processed by exactly one thread with the same code, so results do
// not depend on the thread count or on scheduling.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace nibble {

class ThreadPool {
 public:
  // `threads` threads in all, the caller included (0: hardware concurrency).
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // fn(begin, end, thread) over disjoint ranges covering [0, n), each at least `grain` long
  // (except the last); `thread` in [0, size()) indexes per-thread scratch. Returns when all are done.
  template <typename F>
  void parallel_for(int64_t n, int64_t grain, F&& fn) {
    run(n, grain, &fn, [](void* f, int64_t b, int64_t e, int t) { (*static_cast<F*>(f))(b, e, t); });
  }

 private:
  using Trampoline = void (*)(void*, int64_t, int64_t, int);
  void run(int64_t n, int64_t grain, void* fn, Trampoline call);
  void worker_loop(int index);
  void work(int thread);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  uint64_t generation_ = 0;  // guarded by mu_
  int busy_ = 0;             // workers still in the current job, guarded by mu_
  bool stop_ = false;

  // The current job (written by run() before waking the workers).
  void* fn_ = nullptr;
  Trampoline call_ = nullptr;
  int64_t n_ = 0, chunk_ = 1;
  std::atomic<int64_t> next_{0};
};

}  // namespace nibble
