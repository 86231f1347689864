// A persistent pool of worker threads for data-parallel kernels.
// The calling thread takes part as worker 0, so a pool of n threads starts n-1 OS threads.
// Workers spin briefly after a job, then sleep on a condition variable: when another process shares
// the cores, a sleeping worker costs nothing (no spin-wait collapse).
#pragma once
#include <atomic>
#include <condition_variable>
#include <exception>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace adainfer {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Runs fn(thread_index) on every thread of the pool (thread_index in [0, size())) and returns when
  // all have finished. Not re-entrant; one caller at a time.
  void run(const std::function<void(int)>& fn);

  // Splits [0, n) into contiguous chunks, one per thread (chunk boundaries rounded to `align`),
  // and calls fn(begin, end, thread_index) for each non-empty chunk.
  void parallel_for(int64_t n, int64_t align, const std::function<void(int64_t, int64_t, int)>& fn);

 private:
  void worker_main(int index);

  int n_threads_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable wake_;  // workers sleep here between jobs (after their short spin)
  std::condition_variable done_;  // the caller sleeps here until the workers finish
  // Written by the caller before generation_ is bumped (release); read by workers after they see the bump.
  const std::function<void(int)>* job_ = nullptr;
  // Atomics because workers and the caller spin on them without the mutex; every change that a
  // sleeper must not miss is made (or followed by a lock of mu_) before notifying, so no wake-up is lost.
  std::atomic<uint64_t> generation_{0};  // bumped for each job
  std::atomic<int> pending_{0};          // workers still running the current job
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;             // first exception thrown by a worker's fn, rethrown by run()
};

// Physical cores of this machine (not hyper-threads), capped at the CPUs this process may run on
// (sched_getaffinity); at least 1.
int physical_core_count();

}  // namespace adainfer
