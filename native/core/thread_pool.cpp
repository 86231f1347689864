// Persistent worker pool: the caller is thread 0, workers 1..n-1 wait for a job generation number.
//
// Hand-off protocol (why it is correct):
//  - run() stores job_ and pending_, then bumps generation_ (release) while holding mu_, then notifies.
//    A worker either sees the new generation while spinning (acquire load, so job_ is visible), or it
//    re-checks generation_ under mu_ inside condition_variable::wait; since the bump happens under mu_,
//    the check is ordered either before the bump (then the worker is waiting and gets the notify) or after
//    it (then it sees the new value). No wake-up can be lost.
//  - Each worker runs the job and decrements pending_ (acq_rel). The one that brings it to 0 locks mu_
//    before notifying done_, for the same reason on the caller's side.
//  - The caller waits for pending_ == 0 with an acquire load, so all workers' writes are visible when
//    run() returns.
// Spinning is bounded (kSpinTime), after which both sides sleep: with more runnable threads than cores
// (another process, or an oversubscribed pool) a sleeping thread leaves its core to someone useful.
#include "core/thread_pool.h"

#include <dirent.h>
#ifdef __linux__
#include <sched.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <utility>

#if ADAINFER_X86
#include <immintrin.h>  // _mm_pause is SSE2, part of baseline x86-64
#endif

namespace adainfer {

namespace {

// Long enough to cover the gap between two kernels of one forward pass (a few µs to tens of µs),
// short enough that an idle pool gives its cores back almost at once.
constexpr std::chrono::microseconds kSpinTime{80};
// Polls done with the pause instruction before switching to sched_yield: a hand-off between running
// threads completes within these; past them the thread we wait for is probably not on a core (more
// threads than cores, or another process), and yielding lets it run instead of burning the time slice.
constexpr int kPausePolls = 256;

inline void cpu_relax() {
#if ADAINFER_X86
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Polls `ready` for up to kSpinTime; true if it became true. Reads the clock only every 16 polls.
template <class Ready>
bool spin_until(Ready ready) {
  for (int i = 0; i < kPausePolls; ++i) {
    if (ready()) return true;
    cpu_relax();
  }
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    for (int i = 0; i < 16; ++i) {
      if (ready()) return true;
      std::this_thread::yield();
    }
    if (std::chrono::steady_clock::now() - start > kSpinTime) return ready();
  }
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  threads_.reserve(static_cast<size_t>(n_threads_ - 1));
  for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this, i] { worker_main(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);  // publishes stop_ to spinning workers
  }
  wake_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void ThreadPool::worker_main(int index) {
  uint64_t seen = 0;  // the generation of the last job this worker ran
  for (;;) {
    auto has_new_job = [&] { return generation_.load(std::memory_order_relaxed) != seen; };
    if (!spin_until(has_new_job)) {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, has_new_job);
    }
    // Acquire pairs with the caller's release bump: job_ and stop_ written before it are visible now.
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_relaxed)) return;

    try {
      (*job_)(index);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }

    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // Lock so the caller is either before its predicate check (and will see 0) or already waiting.
      std::lock_guard<std::mutex> lock(mu_);
      done_.notify_one();
    }
  }
}

void ThreadPool::run(const std::function<void(int)>& fn) {
  if (n_threads_ == 1) {  // nothing to hand off: no atomics, no locks
    fn(0);
    return;
  }

  job_ = &fn;
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();

  // The caller's share. If it throws we must still wait: workers are using `fn`, which the caller owns.
  std::exception_ptr caller_error;
  try {
    fn(0);
  } catch (...) {
    caller_error = std::current_exception();
  }

  auto all_done = [this] { return pending_.load(std::memory_order_acquire) == 0; };
  if (!spin_until(all_done)) {
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, all_done);
  }
  job_ = nullptr;

  if (caller_error) std::rethrow_exception(caller_error);
  std::exception_ptr worker_error;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::swap(worker_error, error_);
  }
  if (worker_error) std::rethrow_exception(worker_error);
}

void ThreadPool::parallel_for(int64_t n, int64_t align,
                              const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  if (align < 1) align = 1;
  // Work is dealt in units of `align` items; thread i gets units [units*i/T, units*(i+1)/T), so chunk
  // sizes differ by at most one unit and every boundary except the final n is a multiple of align.
  const int64_t units = n / align + (n % align != 0);
  const int64_t threads = n_threads_;
  if (threads == 1 || units == 1) {
    fn(0, n, 0);
    return;
  }
  // units*i/T without overflowing int64 for huge n: (q*T + r)*i/T = q*i + r*i/T, r < T.
  auto boundary = [units, threads, align, n](int64_t i) -> int64_t {
    const int64_t unit = (units / threads) * i + (units % threads) * i / threads;
    return i == threads ? n : std::min(n, unit * align);
  };
  run([&](int thread) {
    const int64_t begin = boundary(thread);
    const int64_t end = boundary(thread + 1);
    if (begin < end) fn(begin, end, thread);
  });
}

namespace {

bool read_int_file(const std::string& path, long* out) {
  std::ifstream in(path);
  return static_cast<bool>(in >> *out);
}

// Distinct (package, core) pairs from sysfs; 0 if sysfs has no topology (containers may hide it).
int cores_from_sysfs() {
  DIR* dir = opendir("/sys/devices/system/cpu");
  if (!dir) return 0;
  std::set<std::pair<long, long>> cores;
  while (dirent* entry = readdir(dir)) {
    const char* name = entry->d_name;
    // Only cpu<N> entries (not cpufreq, cpuidle, ...). Offline CPUs have no topology and are skipped.
    if (std::strncmp(name, "cpu", 3) != 0 || name[3] < '0' || name[3] > '9') continue;
    const std::string topology = std::string("/sys/devices/system/cpu/") + name + "/topology/";
    long package = 0, core = 0;
    if (!read_int_file(topology + "core_id", &core)) continue;
    if (!read_int_file(topology + "physical_package_id", &package)) package = 0;
    cores.emplace(package, core);
  }
  closedir(dir);
  return static_cast<int>(cores.size());
}

// Same count from /proc/cpuinfo's "physical id" / "core id" lines; 0 if they are absent.
int cores_from_cpuinfo() {
  std::ifstream in("/proc/cpuinfo");
  if (!in) return 0;
  std::set<std::pair<long, long>> cores;
  long package = 0, core = -1;
  std::string line;
  auto value_of = [](const std::string& l) { return std::atol(l.c_str() + l.find(':') + 1); };
  auto flush = [&] {
    if (core >= 0) cores.emplace(package, core);
    package = 0;
    core = -1;
  };
  while (std::getline(in, line)) {
    if (line.empty()) {
      flush();  // a blank line ends one processor's block
    } else if (line.rfind("physical id", 0) == 0) {
      package = value_of(line);
    } else if (line.rfind("core id", 0) == 0) {
      core = value_of(line);
    }
  }
  flush();
  return static_cast<int>(cores.size());
}

// CPUs this process may run on (a container or taskset can allow fewer than the machine has).
int allowed_cpus() {
#ifdef __linux__
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
  return CPU_COUNT(&set);
#else
  return 0;
#endif
}

int detect_physical_cores() {
  int n = cores_from_sysfs();
  if (n <= 0) n = cores_from_cpuinfo();
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  // More threads than the CPUs we are allowed on would only time-slice, so cap at the affinity count.
  if (int allowed = allowed_cpus(); allowed > 0) n = std::min(n, allowed);
  return std::max(1, n);
}

}  // namespace

int physical_core_count() {
  static const int count = detect_physical_cores();
  return count;
}

}  // namespace adainfer
