// ThreadPool tests: coverage of run() and parallel_for(), alignment of chunks, many back-to-back tiny
// jobs (a lost wake-up would hang; the runner's watchdog turns that into a failure), jobs separated by
// pauses longer than the spin (the sleep/wake path), destruction in each state, exceptions, pool of 1.
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/thread_pool.h"
#include "test_harness.h"

using adainfer::ThreadPool;

namespace {

TEST(pool_run_covers_every_thread_once) {
  for (int n : {1, 2, 3, 4, 8, 16}) {
    ThreadPool pool(n);
    CHECK(pool.size() == n);
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<std::atomic<int>> hits(n);
      for (auto& h : hits) h.store(0);
      pool.run([&](int i) { hits[i].fetch_add(1); });
      for (int i = 0; i < n; ++i)
        CHECK_MSG(hits[i].load() == 1, "threads=%d index %d ran %d times", n, i, hits[i].load());
    }
  }
}

TEST(pool_size_is_at_least_one) {
  ThreadPool zero(0), negative(-3);
  CHECK(zero.size() == 1);
  CHECK(negative.size() == 1);
  int calls = 0;
  zero.run([&](int i) { calls += (i == 0); });
  CHECK(calls == 1);
}

// Thread 0 is the caller: the pool of n starts n - 1 threads and the caller does its share.
TEST(pool_caller_is_thread_zero) {
  ThreadPool pool(4);
  const std::thread::id caller = std::this_thread::get_id();
  std::vector<std::thread::id> ids(4);
  pool.run([&](int i) { ids[i] = std::this_thread::get_id(); });
  CHECK(ids[0] == caller);
  for (int i = 1; i < 4; ++i) CHECK(ids[i] != caller);
}

TEST(pool_of_one_runs_inline) {
  ThreadPool pool(1);
  const std::thread::id caller = std::this_thread::get_id();
  bool inline_call = false;
  pool.run([&](int i) { inline_call = (i == 0 && std::this_thread::get_id() == caller); });
  CHECK(inline_call);
  int calls = 0;
  pool.parallel_for(1000, 16, [&](int64_t b, int64_t e, int t) {
    ++calls;
    CHECK(b == 0 && e == 1000 && t == 0);
    CHECK(std::this_thread::get_id() == caller);
  });
  CHECK(calls == 1);
}

TEST(parallel_for_covers_range_with_alignment) {
  for (int threads : {1, 2, 3, 4, 7, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 3, 5, 7, 8, 31, 32, 33, 100, 1000, 4097}) {
      for (int64_t align : {0, 1, 2, 4, 8, 16, 32, 64}) {
        const int64_t step = align < 1 ? 1 : align;
        std::vector<std::atomic<int>> covered(static_cast<size_t>(n));
        for (auto& c : covered) c.store(0);
        std::mutex mu;
        struct Chunk {
          int64_t begin, end;
          int thread;
        };
        std::vector<Chunk> chunks;
        pool.parallel_for(n, align, [&](int64_t b, int64_t e, int t) {
          for (int64_t i = b; i < e; ++i) covered[i].fetch_add(1);
          std::lock_guard<std::mutex> lock(mu);
          chunks.push_back({b, e, t});
        });
        for (int64_t i = 0; i < n; ++i)
          CHECK_MSG(covered[i].load() == 1, "threads=%d n=%lld align=%lld: index %lld covered %d times", threads,
                    (long long)n, (long long)align, (long long)i, covered[i].load());
        CHECK(static_cast<int>(chunks.size()) <= threads);
        std::vector<int> per_thread(threads, 0);
        for (const Chunk& c : chunks) {
          CHECK_MSG(c.begin < c.end, "empty chunk [%lld, %lld)", (long long)c.begin, (long long)c.end);
          CHECK_MSG(c.begin % step == 0, "chunk begin %lld not aligned to %lld", (long long)c.begin, (long long)step);
          CHECK_MSG(c.end % step == 0 || c.end == n, "chunk end %lld not aligned to %lld", (long long)c.end,
                    (long long)step);
          CHECK(c.thread >= 0 && c.thread < threads);
          if (c.thread >= 0 && c.thread < threads) ++per_thread[c.thread];
        }
        for (int count : per_thread) CHECK(count <= 1);
        // Balance: with u = ceil(n / step) units, every chunk holds floor(u/T) or ceil(u/T) units
        // (the last one possibly short by the remainder).
        const int64_t units = (n + step - 1) / step;
        for (const Chunk& c : chunks) {
          const int64_t chunk_units = (c.end - c.begin + step - 1) / step;
          CHECK(chunk_units <= (units + threads - 1) / threads);
        }
      }
    }
  }
}

// 10,000 back-to-back tiny jobs: every hand-off races the workers' spin/sleep transition. A lost wake-up
// would hang here (the runner's watchdog fails the run after a timeout). 4 threads on a 2-core machine
// also exercises oversubscription.
TEST(pool_many_tiny_jobs) {
  for (int threads : {2, 4}) {
    ThreadPool pool(threads);
    std::atomic<int64_t> total{0};
    const int jobs = 10000;
    for (int j = 0; j < jobs; ++j) pool.run([&](int) { total.fetch_add(1, std::memory_order_relaxed); });
    CHECK(total.load() == int64_t{jobs} * threads);

    std::atomic<int64_t> covered{0};
    for (int j = 0; j < jobs; ++j)
      pool.parallel_for(64, 8, [&](int64_t b, int64_t e, int) { covered.fetch_add(e - b, std::memory_order_relaxed); });
    CHECK(covered.load() == int64_t{jobs} * 64);
  }
}

// Gaps longer than the spin window: the workers must go to sleep and be woken by the condition variable.
TEST(pool_jobs_after_workers_sleep) {
  ThreadPool pool(3);
  std::atomic<int> total{0};
  for (int j = 0; j < 100; ++j) {
    std::this_thread::sleep_for(std::chrono::microseconds(j % 2 ? 300 : 2000));
    pool.run([&](int) { total.fetch_add(1); });
  }
  CHECK(total.load() == 300);
}

// Plain (non-atomic) writes by workers must be visible to the caller when run() returns.
TEST(pool_results_visible_after_run) {
  ThreadPool pool(4);
  std::vector<int64_t> data(4 * 1024);
  for (int rep = 0; rep < 500; ++rep) {
    pool.parallel_for(static_cast<int64_t>(data.size()), 16, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) data[i] = i * rep;
    });
    bool ok = true;
    for (size_t i = 0; i < data.size(); ++i) ok = ok && data[i] == static_cast<int64_t>(i) * rep;
    CHECK_MSG(ok, "rep %d", rep);
  }
}

TEST(pool_destruction_in_every_state) {
  { ThreadPool never_used(4); }
  {
    ThreadPool pool(4);  // destroyed right after a job, while workers still spin
    pool.run([](int) {});
  }
  {
    ThreadPool pool(4);  // destroyed while workers sleep
    pool.run([](int) {});
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (int i = 0; i < 200; ++i) {  // quick create/use/destroy cycles
    ThreadPool pool(3);
    std::atomic<int> n{0};
    pool.run([&](int) { n.fetch_add(1); });
    CHECK(n.load() == 3);
  }
}

TEST(pool_propagates_exceptions) {
  ThreadPool pool(4);
  for (int thrower : {0, 2}) {  // the caller's share, then a worker's
    bool caught = false;
    std::atomic<int> finished{0};
    try {
      pool.run([&](int i) {
        if (i == thrower) throw std::runtime_error("boom");
        finished.fetch_add(1);
      });
    } catch (const std::runtime_error&) {
      caught = true;
    }
    CHECK_MSG(caught, "exception from thread %d not rethrown", thrower);
    CHECK(finished.load() == 3);  // run() waited for the others before rethrowing
    std::atomic<int> after{0};
    pool.run([&](int) { after.fetch_add(1); });  // still usable
    CHECK(after.load() == 4);
  }
}

TEST(physical_core_count_is_sane) {
  const int cores = adainfer::physical_core_count();
  std::printf("    physical_core_count() = %d, hardware_concurrency() = %u\n", cores,
              std::thread::hardware_concurrency());
  CHECK(cores >= 1);
  if (std::thread::hardware_concurrency() > 0) CHECK(cores <= static_cast<int>(std::thread::hardware_concurrency()));
  CHECK(adainfer::physical_core_count() == cores);
}

}  // namespace
