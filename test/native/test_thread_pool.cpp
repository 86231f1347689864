// ThreadPool tests: coverage of run() and parallel_for() (every index exactly once, also over random sizes,
// alignments and sub-chunk counts), alignment and placement of chunks, the thread index identifies the
// running thread, many back-to-back tiny jobs (a lost wake-up would hang; the runner's watchdog turns that
// into a failure), jobs separated by pauses longer than the spin (the sleep/wake path), a worker delayed
// inside its first chunk or stopped outside any job (the caller finishes the work without it; the late
// worker must not run finished jobs), destruction in each state, exceptions, pool of 1.
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/thread_pool.h"
#include "test_harness.h"

using adainfer::ThreadPool;

namespace {

// run(fn) calls fn(task) once per task in [0, size()), whichever thread runs it.
TEST(pool_run_covers_every_task_once) {
  for (int n : {1, 2, 3, 4, 8, 16}) {
    ThreadPool pool(n);
    CHECK(pool.size() == n);
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<std::atomic<int>> hits(n);
      for (auto& h : hits) h.store(0);
      pool.run([&](int i) { hits[i].fetch_add(1); });
      for (int i = 0; i < n; ++i)
        CHECK_MSG(hits[i].load() == 1, "threads=%d task %d ran %d times", n, i, hits[i].load());
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

// The thread argument of parallel_for names the running thread: 0 is the caller (the pool of n starts n - 1
// threads and the caller takes part), each index is always the same OS thread, distinct indices distinct
// threads.
TEST(pool_thread_index_is_the_running_thread) {
  ThreadPool pool(4);
  const std::thread::id caller = std::this_thread::get_id();
  std::mutex mu;
  std::vector<std::thread::id> ids(4);
  bool consistent = true;
  for (int rep = 0; rep < 200; ++rep) {
    pool.parallel_for(64, 1, [&](int64_t, int64_t, int t) {
      std::this_thread::sleep_for(std::chrono::microseconds(20));  // gives the workers time to take part
      std::lock_guard<std::mutex> lock(mu);
      if (ids[t] == std::thread::id()) ids[t] = std::this_thread::get_id();
      consistent = consistent && ids[t] == std::this_thread::get_id();
    });
  }
  CHECK(consistent);
  CHECK(ids[0] == caller);
  for (int i = 0; i < 4; ++i)
    for (int j = i + 1; j < 4; ++j) CHECK(ids[i] == std::thread::id() || ids[i] != ids[j]);
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

struct Chunk {
  int64_t begin, end;
  int thread;
};

// Runs one parallel_for and checks: every index covered exactly once; chunks non-empty, aligned, each inside
// one thread's static range (the balanced split into size() ranges of whole units); in pools of 2+ threads,
// each chunk is one sub-chunk of its range (the range cut into min(sub_chunks(), units) balanced parts) or a
// stolen run of at most half of them (rounded up); at most size() * sub_chunks() chunks; thread indices in
// range.
void check_parallel_for(ThreadPool& pool, int64_t n, int64_t align) {
  const int threads = pool.size();
  const int64_t step = align < 1 ? 1 : align;
  std::vector<std::atomic<int>> covered(static_cast<size_t>(n));
  for (auto& c : covered) c.store(0);
  std::mutex mu;
  std::vector<Chunk> chunks;
  pool.parallel_for(n, align, [&](int64_t b, int64_t e, int t) {
    for (int64_t i = b; i < e; ++i) covered[i].fetch_add(1);
    std::lock_guard<std::mutex> lock(mu);
    chunks.push_back({b, e, t});
  });
  int bad = 0;
  for (int64_t i = 0; i < n && bad < 3; ++i) {
    if (covered[i].load() != 1) {
      ++bad;
      CHECK_MSG(false, "threads=%d sub=%d n=%lld align=%lld: index %lld covered %d times", threads,
                pool.sub_chunks(), (long long)n, (long long)align, (long long)i, covered[i].load());
    }
  }
  const int64_t units = (n + step - 1) / step;
  auto range_begin = [&](int64_t r) { return std::min(n, units * r / threads * step); };  // static split
  CHECK_MSG(static_cast<int64_t>(chunks.size()) <= int64_t{threads} * pool.sub_chunks(), "%zu chunks", chunks.size());
  for (const Chunk& c : chunks) {
    CHECK_MSG(c.begin < c.end, "empty chunk [%lld, %lld)", (long long)c.begin, (long long)c.end);
    CHECK_MSG(c.begin % step == 0, "chunk begin %lld not aligned to %lld", (long long)c.begin, (long long)step);
    CHECK_MSG(c.end % step == 0 || c.end == n, "chunk end %lld not aligned to %lld", (long long)c.end, (long long)step);
    CHECK(c.thread >= 0 && c.thread < threads);
    int64_t r = 0;
    while (r + 1 < threads && range_begin(r + 1) <= c.begin) ++r;
    const int64_t r_end = r + 1 == threads ? n : range_begin(r + 1);
    CHECK_MSG(c.end <= r_end, "chunk [%lld, %lld) crosses the end %lld of range %lld", (long long)c.begin,
              (long long)c.end, (long long)r_end, (long long)r);
    if (threads == 1) {  // a pool of one runs the whole range in one call
      CHECK(c.begin == 0 && c.end == n);
      continue;
    }
    // sub-chunk boundaries of range r, in items
    const int64_t u0 = units * r / threads, m = units * (r + 1) / threads - u0;
    const int64_t s = std::min<int64_t>(pool.sub_chunks(), m);
    int64_t first = -1, last = -1;
    for (int64_t j = 0; j <= s; ++j) {
      const int64_t item = std::min(n, (u0 + m * j / s) * step);
      if (item == c.begin) first = j;
      if (item == c.end) last = j;
    }
    CHECK_MSG(first >= 0 && last > first && (last - first == 1 || last - first <= (s + 1) / 2),
              "chunk [%lld, %lld) is not one sub-chunk or a stolen half of range %lld (%lld units, %lld sub-chunks)",
              (long long)c.begin, (long long)c.end, (long long)r, (long long)m, (long long)s);
  }
}

TEST(parallel_for_covers_range_with_alignment) {
  for (int threads : {1, 2, 3, 4, 7, 8}) {
    for (int sub : {1, 4}) {
      ThreadPool pool(threads, sub);
      CHECK(pool.sub_chunks() == sub);
      for (int64_t n : {0, 1, 2, 3, 5, 7, 8, 31, 32, 33, 100, 1000, 4097})
        for (int64_t align : {0, 1, 2, 4, 8, 16, 32, 64}) check_parallel_for(pool, n, align);
    }
  }
}

// Random sizes, alignments, thread and sub-chunk counts (including the 255 maximum), the same checks.
TEST(parallel_for_random_sizes_cover_exactly_once) {
  std::mt19937_64 rng(12345);
  for (int threads : {2, 3, 5, 8}) {
    for (int sub : {1, 2, 3, 8, 255}) {
      ThreadPool pool(threads, sub);
      for (int rep = 0; rep < 60; ++rep) {
        const int64_t n = static_cast<int64_t>(rng() % (rep % 3 == 0 ? 40 : 20000));
        const int64_t aligns[] = {1, 2, 3, 7, 16, 48, 64, 1000};
        check_parallel_for(pool, n, aligns[rng() % 8]);
      }
    }
  }
  ThreadPool pool(2);
  CHECK(pool.sub_chunks() >= 1 && pool.sub_chunks() <= 255);
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
  for (int thrower : {0, 2}) {  // the caller's task, then a worker's
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
    CHECK_MSG(caught, "exception from task %d not rethrown", thrower);
    CHECK(finished.load() == 3);  // run() waited for the others before rethrowing
    std::atomic<int> after{0};
    pool.run([&](int) { after.fetch_add(1); });  // still usable
    CHECK(after.load() == 4);
  }
}

// parallel_for: one of several exceptions comes out (the first thrown), after every other chunk has run;
// the pool stays usable. Exceptions from any thread, many times (a lost error or a hang would show).
TEST(parallel_for_propagates_exceptions) {
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    for (int rep = 0; rep < 200; ++rep) {
      const int64_t n = 997;
      std::atomic<int64_t> done{0}, thrown_items{0};
      int caught = 0;
      try {
        pool.parallel_for(n, 7, [&](int64_t b, int64_t e, int) {
          // the chunks holding items 100 and 900 (in different ranges) throw; every other chunk completes
          if ((b <= 100 && 100 < e) || (b <= 900 && 900 < e)) {
            thrown_items.fetch_add(e - b);
            throw std::out_of_range(b <= 100 ? "first" : "second");
          }
          done.fetch_add(e - b);
        });
      } catch (const std::out_of_range&) {
        ++caught;
      }
      CHECK(caught == 1);
      CHECK_MSG(done.load() + thrown_items.load() == n, "rep %d: %lld + %lld items", rep, (long long)done.load(),
                (long long)thrown_items.load());
    }
    std::atomic<int64_t> after{0};
    pool.parallel_for(1000, 1, [&](int64_t b, int64_t e, int) { after.fetch_add(e - b); });
    CHECK(after.load() == 1000);
  }
}

// A worker delayed inside its first chunk (as if its core were taken mid-chunk): the others take the rest of
// its range, so the job ends when that one chunk ends, not after the delay plus the worker's whole share.
TEST(pool_delayed_worker_chunk_is_stolen_around) {
  ThreadPool pool(2, 8);
  const int64_t n = 64;  // 32 items per thread range, 8 sub-chunks of 4 items
  const auto item_time = std::chrono::milliseconds(2);
  const auto delay = std::chrono::milliseconds(150);
  for (int rep = 0; rep < 3; ++rep) {
    std::atomic<int> worker_calls{0};
    std::atomic<bool> delayed{false};
    std::vector<std::atomic<int>> covered(n);
    for (auto& c : covered) c.store(0);
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(n, 1, [&](int64_t b, int64_t e, int t) {
      if (t == 1) {
        worker_calls.fetch_add(1);
        if (!delayed.exchange(true)) std::this_thread::sleep_for(delay);
      }
      for (int64_t i = b; i < e; ++i) {
        covered[i].fetch_add(1);
        std::this_thread::sleep_for(item_time);  // "work" that leaves the core to others
      }
    });
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    for (int64_t i = 0; i < n; ++i) CHECK(covered[i].load() == 1);
    // The caller alone needs ~60 * 2 ms = 120 ms for everything but the delayed chunk: done within the delay.
    // A static split would take 150 ms + 32 * 2 ms = 214 ms at least.
    std::printf("    delayed worker: job took %.0f ms (delay 150 ms), worker ran %d chunk(s)\n", ms, worker_calls.load());
    if (delayed.load()) {
      CHECK_MSG(ms < 205, "job took %.0f ms", ms);
      CHECK(worker_calls.load() <= 2);  // the delayed chunk, and possibly one more before the caller got there
    }
  }
}

// A worker stopped outside any job (a signal handler that sleeps: the OS descheduling it), while the caller
// runs many jobs: they must all complete without it, while it is still stopped. When it resumes it holds a
// finished job's generation and must not run that job's (destroyed) function: each job's fn is a fresh
// closure on the caller's stack, so ASan would see a stale call, and the coverage counts would too.
std::atomic<bool> g_stopped{false};
std::atomic<int> g_stop_ms{0};

void stop_handler(int) {
  g_stopped.store(true);
  const int ms = g_stop_ms.load();
  timespec ts{ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
  g_stopped.store(false);
}

TEST(pool_stopped_worker_does_not_block_jobs) {
  struct sigaction sa {};
  sa.sa_handler = stop_handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  CHECK(sigaction(SIGUSR1, &sa, nullptr) == 0);
  for (int threads : {2, 4}) {
    ThreadPool pool(threads);
    // pthread ids of the workers, from jobs slow enough that every worker takes part
    std::vector<pthread_t> tids(threads);
    std::vector<std::atomic<bool>> seen(threads);
    for (auto& s : seen) s.store(false);
    for (int rep = 0; rep < 2000; ++rep) {
      pool.parallel_for(threads * 16, 1, [&](int64_t, int64_t, int t) {
        if (!seen[t].exchange(true)) tids[t] = pthread_self();
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      });
      bool all = true;
      for (int t = 1; t < threads; ++t) all = all && seen[t].load();
      if (all) break;
    }
    bool all_seen = true;
    for (int t = 1; t < threads; ++t) all_seen = all_seen && seen[t].load();
    CHECK(all_seen);
    if (!all_seen) continue;

    // Stop worker 1, then run jobs without it. Trivial jobs keep the pool busy until the handler runs (under
    // TSan a signal waits for the thread to reach an intercepted call, which a worker asleep in a futex does
    // not); should the handler start inside a claimed chunk, that chunk holds its job up, and we try again.
    const pthread_t victim = tids[1];
    bool ran_without_it = false;
    for (int attempt = 0; attempt < 5 && !ran_without_it; ++attempt) {
      while (g_stopped.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      g_stop_ms.store(1000);
      CHECK(pthread_kill(victim, SIGUSR1) == 0);
      const auto wait0 = std::chrono::steady_clock::now();
      while (!g_stopped.load() && std::chrono::steady_clock::now() - wait0 < std::chrono::seconds(5))
        pool.parallel_for(threads * 4, 1, [](int64_t, int64_t, int) {});
      if (!g_stopped.load()) continue;

      const auto t0 = std::chrono::steady_clock::now();
      int64_t jobs = 0, bad = 0, victim_calls = 0;
      for (; jobs < 3000; ++jobs) {
        const int64_t n = 1 + jobs % 300;
        std::vector<int> hits(static_cast<size_t>(n), 0);  // plain ints: each index written by one thread
        std::atomic<int64_t> by_victim{0};
        pool.parallel_for(n, 1 + jobs % 5, [&hits, &by_victim](int64_t b, int64_t e, int t) {
          for (int64_t i = b; i < e; ++i) ++hits[i];
          if (t == 1) by_victim.fetch_add(1);
        });
        for (int h : hits) bad += h != 1;
        victim_calls += by_victim.load();
      }
      const bool still_stopped = g_stopped.load();
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::printf("    threads=%d: %lld jobs in %.1f ms with worker 1 stopped (still stopped after: %d)\n", threads,
                  (long long)jobs, ms, still_stopped ? 1 : 0);
      CHECK(bad == 0);
      CHECK(victim_calls == 0 || !still_stopped);
      ran_without_it = still_stopped;
    }
    CHECK_MSG(ran_without_it, "threads=%d: the jobs waited for the stopped worker", threads);

    // Let it resume (late, with a stale generation) while new jobs run; then everything still adds up.
    while (g_stopped.load()) {
      std::atomic<int64_t> covered{0};
      pool.parallel_for(100, 3, [&](int64_t b, int64_t e, int) { covered.fetch_add(e - b); });
      CHECK(covered.load() == 100);
    }
    int64_t bad = 0;
    for (int rep = 0; rep < 2000; ++rep) {
      std::vector<int> hits(257, 0);
      pool.parallel_for(257, 2, [&hits](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i) ++hits[i];
      });
      for (int h : hits) bad += h != 1;
    }
    CHECK(bad == 0);
  }
  // The handler stays installed: a signal that never got delivered (see above) must not kill the run later.
}

// Stress for stale-job races: many back-to-back jobs of varied sizes, each with a fresh closure over
// per-job data, on oversubscribed pools (4 and 8 threads on small machines), with random short pauses
// between jobs (some longer than the spin, so workers go to sleep and wake late). A call of a job's fn after
// its parallel_for returned would see g_live_job changed (and, under ASan, touch freed per-job memory).
std::atomic<int64_t> g_live_job{-1};

TEST(pool_back_to_back_jobs_stress) {
  std::mt19937 rng(7);
  for (int threads : {2, 4, 8}) {
    ThreadPool pool(threads, 1 + static_cast<int>(rng() % 6));
    int64_t bad = 0, stale = 0;
    for (int64_t job = 0; job < 20000; ++job) {
      const int64_t n = 1 + rng() % 200;
      const int64_t align = 1 + rng() % 8;
      auto hits = std::make_unique<std::vector<int>>(static_cast<size_t>(n), 0);
      std::atomic<int64_t> stale_calls{0};
      g_live_job.store(job);
      pool.parallel_for(n, align, [h = hits.get(), &stale_calls, job](int64_t b, int64_t e, int) {
        if (g_live_job.load() != job) stale_calls.fetch_add(1);
        for (int64_t i = b; i < e; ++i) ++(*h)[i];
      });
      g_live_job.store(-1);
      for (int x : *hits) bad += x != 1;
      stale += stale_calls.load();
      hits.reset();
      const unsigned pause = rng() % 64;
      if (pause == 0) std::this_thread::sleep_for(std::chrono::microseconds(200 + rng() % 300));
      else if (pause < 8) std::this_thread::yield();
    }
    CHECK_MSG(bad == 0 && stale == 0, "threads=%d: %lld bad counts, %lld stale calls", threads, (long long)bad,
              (long long)stale);
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
