// A persistent pool of worker threads for data-parallel kernels.
// The calling thread takes part as thread 0, so a pool of n threads starts n-1 OS threads.
//
// A job is done when its *work* is done, not when every thread has checked in. The work of a job is cut
// into sub-chunks that threads claim from atomic counters; the caller claims too, and can do all of it
// alone. A worker that is late (its core taken by another process, or still waking up) finds the work
// already claimed and goes back to waiting: the job never waits for a thread that has not started on it,
// only for sub-chunks already claimed and still running. (Before, every worker ran a fixed share and the
// caller waited for all of them: with another process busy on one of two cores, a job waited whenever the
// OS had not scheduled the worker, and 2-thread decode could fall to a few tokens/s.)
//
// Workers spin briefly after a job, then sleep (futex): when another process shares the cores, a sleeping
// worker costs nothing (no spin-wait collapse). On Linux the caller never takes a lock that a worker may
// hold, so a worker descheduled at any point delays a job only if it holds a claimed sub-chunk of it. See
// thread_pool.cpp for the protocol.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace adainfer {

class ThreadPool {
 public:
  // sub_chunks: per thread range in parallel_for, 1..255; 0 takes the default (see sub_chunks()).
  explicit ThreadPool(int n_threads, int sub_chunks = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(begin, end, thread) on chunks that cover [0, n) exactly once, chunk boundaries multiples of
  // `align` (except n itself), and returns when all chunks have run. `thread` is the index (in
  // [0, size())) of the thread running that call: two calls that run at the same time never share it, so
  // it may select per-thread scratch memory.
  // Split: [0, n) is first cut into size() contiguous ranges, one per thread, of balanced numbers of
  // `align` units (as a static split would), and each range into up to sub_chunks() sub-chunks. Thread i
  // claims its own range's sub-chunks front to back, so a thread that keeps up streams one contiguous range
  // (what the hardware prefetchers and the kernels' software prefetch do best with); a thread that has
  // finished its range then goes on with the next range's sub-chunks in order while that range's owner has
  // not started, else takes the back half of its unclaimed sub-chunks as one call, and so on until nothing
  // is left. Not re-entrant; one caller at a time. The first exception thrown by fn is rethrown once every
  // claimed chunk has finished (the other chunks still run).
  void parallel_for(int64_t n, int64_t align, const std::function<void(int64_t, int64_t, int)>& fn);

  // Calls fn(task) once for every task in [0, size()), and returns when all have finished. Task i is
  // first offered to thread i, but any thread may run it (the caller may run them all when the workers
  // are late): fn must not assume which thread runs it. Each task runs once, on one thread, so scratch
  // memory indexed by the task is safe. Same exception rule as parallel_for.
  void run(const std::function<void(int)>& fn);

  // Sub-chunks per thread range in parallel_for (1..255): the constructor's argument, else the environment
  // variable ADAINFER_POOL_CHUNKS read at construction (to measure one setting against another), else
  // kDefaultSubChunks.
  int sub_chunks() const { return sub_chunks_; }
  static constexpr int kDefaultSubChunks = 4;

 private:
  // One job: what parallel_for was asked, and how it is split. Written only by the caller before a job
  // is published, read by any thread only after it has claimed one of the job's sub-chunks.
  struct Job {
    const std::function<void(int64_t, int64_t, int)>* fn = nullptr;
    int64_t n = 0, align = 1, units = 0;
  };
  // The claim word of one thread's range: tag (47 bits of the job's generation) | owner started (1) |
  // lo (8) | hi (8): the sub-chunks [lo, hi) of the range are unclaimed. One cache line each.
  struct alignas(64) Slot {
    std::atomic<uint64_t> word{0};
  };

  void worker_main(int index);
  // Claims and runs sub-chunks of job `gen` (own range first, then the others) until none is left;
  // returns how many it ran.
  int64_t work(uint64_t gen, int self);
  bool claim(int range, uint64_t tag, bool owner, int* first, int* count);
  void run_sub_chunks(int range, int first, int count, int self);  // sub-chunks [first, first + count)
  int64_t unit_boundary(int64_t i) const;  // first unit of range i (i in [0, size()])
  int sub_count(int64_t range_units) const;
  void finished(int64_t count);            // count sub-chunks done; the last one wakes the caller if it sleeps
  void publish(uint64_t gen);              // makes generation `gen` visible and wakes sleeping workers
  // Sleeping on a 32-bit word until it changes (a futex on Linux; a mutex and condition variable elsewhere).
  void wait_while_equal(std::atomic<uint32_t>& word, uint32_t expected);
  void wake_all(std::atomic<uint32_t>& word);

  int n_threads_;
  int sub_chunks_;
  std::vector<std::thread> threads_;
  std::unique_ptr<Slot[]> slots_;
  Job job_;
  std::atomic<uint64_t> generation_{0};  // bumped for each job (and once by the destructor)
  std::atomic<uint32_t> gen_word_{0};    // its low 32 bits: what sleeping workers wait on
  std::atomic<int> sleepers_{0};         // workers asleep (or about to sleep) on gen_word_
  std::atomic<bool> stop_{false};
  alignas(64) std::atomic<int64_t> remaining_{0};  // sub-chunks of the current job not yet finished
  std::atomic<uint32_t> done_word_{0};   // bumped when a worker finishes a job; the sleeping caller waits on it
  std::atomic<bool> caller_sleeping_{false};
  std::atomic<bool> has_error_{false};   // error_ is set (read by the caller without the lock)
  std::mutex error_mu_;
  std::exception_ptr error_;  // first exception thrown by fn in the current job (guarded by error_mu_)
#ifndef __linux__
  std::mutex sleep_mu_;  // the fallback for futexes
  std::condition_variable sleep_cv_;
#endif
};

// Physical cores of this machine (not hyper-threads), capped at the CPUs this process may run on
// (sched_getaffinity); at least 1.
int physical_core_count();

}  // namespace adainfer
