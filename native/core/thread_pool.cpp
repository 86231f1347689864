// Persistent worker pool: the caller is thread 0, workers 1..n-1 wait for a job generation number.
//
// Work: parallel_for cuts [0, n) into one contiguous range per thread (balanced in `align` units) and each
// range into s <= sub_chunks_ sub-chunks. slots_[r].word = tag | started | lo | hi says that sub-chunks
// [lo, hi) of range r are unclaimed in the job whose generation has tag `tag` (its low 47 bits), and whether
// the range's owner has claimed any. A thread claims with one compare-exchange on that word: the owner takes
// lo (front to back); a thief takes lo too while the owner has not started (a thief that finished range
// r - 1 thus goes on streaming in order into range r: a worker that never comes costs nothing), else the
// back half of [lo, hi) (at least one sub-chunk), run as one call. So a thread that keeps up streams its
// own range in order, thieves take only what it has not reached, and rows are walked in ascending order
// (taking single sub-chunks from the back would walk a range backwards, against the prefetchers: slower).
// remaining_ counts the sub-chunks of the job not yet finished; a thread subtracts the ones it ran once it
// finds nothing left to claim, and the job is complete at 0.
//
// Why a late worker can never run a stale job (the caller's std::function may be gone once it returns):
//  1. A thread runs fn only for a sub-chunk it claimed, and a claim succeeds only on a slot word that carries
//     the tag of the generation the thread read from generation_ and has lo < hi, i.e. an unclaimed
//     sub-chunk of that job.
//  2. The caller returns only when remaining_ is 0, which needs every sub-chunk of the job claimed and
//     finished. So between a successful claim and the claimer's subtraction from remaining_ the job cannot
//     complete: fn, job_ and the caller's frame are alive for the whole of the claimed sub-chunk.
//  3. A worker that wakes late holds an old generation g. The slot words of a finished job g have lo == hi,
//     and the caller rewrites every word with the new tag before it publishes a new generation; so its
//     claims fail (tag mismatch or empty), it runs nothing, subtracts nothing, and waits again (or joins
//     the newer job if there is one). The tag is the generation modulo 2^47: an old tag could be mistaken
//     for the current one only if the worker stalled between reading generation_ and its claim across
//     exactly k * 2^47 jobs (years at a million jobs a second).
//  4. Memory order: the caller writes job_ and remaining_, then stores the slot words (release), then
//     publishes the generation. A claim is an acquire read-modify-write of a slot word; every other write to
//     that word during the job is a read-modify-write too, so the claim reads from the release sequence of
//     the caller's store and job_ is visible to the claimer. job_ is read only after a claim; the claimer's
//     reads of it (and the results fn wrote) come before its release subtraction from remaining_, which the
//     caller reads with acquire before it returns or writes job_ again. job_ needs no lock.
//  5. remaining_ is stored by the caller before the slot words, and only threads that claimed a sub-chunk of
//     the current job subtract from it, so no subtraction of an older job can land in a newer one.
// The caller does not wait for workers that have not started, only for sub-chunks that a worker claimed and
// is still running. It claims work itself until none is left, so it can do all of a job alone. And (on
// Linux) it takes no lock that a worker can hold (error_mu_ only after an exception): a worker descheduled
// anywhere outside a claimed sub-chunk cannot hold up a job.
//
// Sleeping and waking, without locks (Linux futexes; a mutex and condition variable elsewhere):
//  - Workers: after a bounded spin, sleepers_ += 1, then sleep on gen_word_ while it still holds the value
//    of the generation they have seen. The caller: stores the new generation into gen_word_, then reads
//    sleepers_ and wakes gen_word_ only if it is non-zero. All four accesses are seq_cst, so in their single
//    total order either the caller's read of sleepers_ follows the worker's increment (it wakes the worker;
//    a futex wait on a word that has already changed returns at once) or the worker's read of gen_word_
//    follows the caller's store (it does not sleep). No wake-up is lost, and a job costs no system call
//    while the workers are spinning.
//  - The caller, once it has nothing left to claim: spins (bounded) for remaining_ == 0, then sets
//    caller_sleeping_, re-reads remaining_, and sleeps on done_word_. The worker that brings remaining_ to 0
//    bumps done_word_, then reads caller_sleeping_ and wakes it if set; the same seq_cst argument applies.
//    A late wake meant for an older job only makes the caller re-check remaining_.
// Spinning is bounded (kSpinTime), after which both sides sleep: with more runnable threads than cores
// (another process, or an oversubscribed pool) a sleeping thread leaves its core to someone useful.
#include "core/thread_pool.h"

#include <dirent.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <chrono>
#include <climits>
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

// slot word: tag (47 bits) | owner started (1 bit) | lo (8 bits) | hi (8 bits)
constexpr int kTagShift = 17;
constexpr uint64_t kTagMask = (uint64_t{1} << 47) - 1;
constexpr uint64_t kOwnerBit = uint64_t{1} << 16;
constexpr int kMaxSubChunks = 255;

inline uint64_t slot_word(uint64_t tag, uint64_t lo, uint64_t hi) { return (tag << kTagShift) | (lo << 8) | hi; }

int sub_chunks_setting(int requested) {
  if (requested > 0) return std::min(requested, kMaxSubChunks);
  const char* v = std::getenv("ADAINFER_POOL_CHUNKS");
  if (!v || !*v) return ThreadPool::kDefaultSubChunks;
  const long s = std::strtol(v, nullptr, 10);
  return static_cast<int>(std::clamp<long>(s, 1, kMaxSubChunks));
}

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t) && std::atomic<uint32_t>::is_always_lock_free,
              "futex words are std::atomic<uint32_t>");

}  // namespace

#ifdef __linux__
void ThreadPool::wait_while_equal(std::atomic<uint32_t>& word, uint32_t expected) {
  // Returns at once if the word no longer holds `expected` (checked by the kernel atomically with going to
  // sleep), on a wake, or spuriously (EINTR): callers re-check their condition in a loop.
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}

void ThreadPool::wake_all(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}
#else
// The word is changed before wake_all; the waiter checks it under sleep_mu_, and the waker takes sleep_mu_
// before notifying, so the check is either after the change or before the waiter blocks (then notified).
void ThreadPool::wait_while_equal(std::atomic<uint32_t>& word, uint32_t expected) {
  std::unique_lock<std::mutex> lock(sleep_mu_);
  if (word.load() == expected) sleep_cv_.wait(lock);
}

void ThreadPool::wake_all(std::atomic<uint32_t>&) {
  { std::lock_guard<std::mutex> lock(sleep_mu_); }
  sleep_cv_.notify_all();
}
#endif

ThreadPool::ThreadPool(int n_threads, int sub_chunks)
    : n_threads_(std::max(1, n_threads)),
      sub_chunks_(sub_chunks_setting(sub_chunks)),
      slots_(new Slot[std::max(1, n_threads)]) {
  threads_.reserve(static_cast<size_t>(n_threads_ - 1));
  for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this, i] { worker_main(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_relaxed);
  publish(generation_.load(std::memory_order_relaxed) + 1);  // release: stop_ is visible with the bump
  wake_all(gen_word_);  // unconditionally: a worker may be between its sleepers_ increment and its wait
  for (std::thread& t : threads_) t.join();
}

void ThreadPool::publish(uint64_t gen) {
  generation_.store(gen, std::memory_order_release);
  gen_word_.store(static_cast<uint32_t>(gen), std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) wake_all(gen_word_);
}

void ThreadPool::worker_main(int index) {
  uint64_t seen = 0;  // the last generation this worker looked at
  for (;;) {
    auto has_new_job = [&] { return generation_.load(std::memory_order_relaxed) != seen; };
    if (!spin_until(has_new_job)) {
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      while (gen_word_.load(std::memory_order_seq_cst) == static_cast<uint32_t>(seen))
        wait_while_equal(gen_word_, static_cast<uint32_t>(seen));
      sleepers_.fetch_sub(1, std::memory_order_relaxed);
    }
    // Acquire pairs with the release store in publish(): stop_ written before it is visible now. (The job
    // itself is reached only through claims, which synchronize on their own: see the protocol above.)
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_relaxed)) return;
    // Possibly a job that finished long ago (this worker woke late) or a newer one than the change it
    // noticed: work() claims only what is still unclaimed in generation `seen`, which may be nothing.
    finished(work(seen, index));
  }
}

// First unit of thread range i: units*i/T without overflowing int64 for huge n (q*T + r)*i/T = q*i + r*i/T.
int64_t ThreadPool::unit_boundary(int64_t i) const {
  const int64_t units = job_.units, threads = n_threads_;
  return (units / threads) * i + (units % threads) * i / threads;
}

int ThreadPool::sub_count(int64_t range_units) const {
  return static_cast<int>(std::min<int64_t>(sub_chunks_, range_units));
}

bool ThreadPool::claim(int range, uint64_t tag, bool owner, int* first, int* count) {
  std::atomic<uint64_t>& word = slots_[range].word;
  uint64_t w = word.load(std::memory_order_relaxed);
  for (;;) {
    const uint64_t lo = (w >> 8) & 0xFF, hi = w & 0xFF;
    if ((w >> kTagShift) != tag || lo >= hi) return false;
    // The owner takes one sub-chunk from the front (and marks the range started). A thief takes the front
    // sub-chunk too while the owner has not started (the thief just finished the range before, so that
    // continues its stream in order), else the back half of what is left (at least one sub-chunk) as one
    // call. So every call, and every thread's sequence of calls, walks rows in ascending order as far as
    // possible: taking single sub-chunks from the back would walk a range backwards, against the
    // prefetchers (measured slower).
    uint64_t take = 1, next, at;
    if (owner || !(w & kOwnerBit)) {
      at = lo;
      next = (w + (uint64_t{1} << 8)) | (owner ? kOwnerBit : 0);
    } else {
      take = (hi - lo + 1) / 2;
      at = hi - take;
      next = w - take;
    }
    // acquire on success: job_ (written before the caller's release store of this word) is visible
    if (word.compare_exchange_weak(w, next, std::memory_order_acquire, std::memory_order_relaxed)) {
      *first = static_cast<int>(at);
      *count = static_cast<int>(take);
      return true;
    }
  }
}

void ThreadPool::run_sub_chunks(int range, int first, int count, int self) {
  const int64_t u0 = unit_boundary(range), m = unit_boundary(range + 1) - u0;
  const int64_t s = sub_count(m);
  auto item = [&](int64_t j) {  // first item of sub-chunk j of this range (j == s: the range's end)
    const int64_t unit = u0 + (m / s) * j + (m % s) * j / s;
    return unit >= job_.units ? job_.n : std::min(job_.n, unit * job_.align);
  };
  try {
    (*job_.fn)(item(first), item(first + count), self);
  } catch (...) {
    std::lock_guard<std::mutex> lock(error_mu_);
    if (!error_) error_ = std::current_exception();
    has_error_.store(true, std::memory_order_relaxed);  // published by the release subtraction that follows
  }
}

int64_t ThreadPool::work(uint64_t gen, int self) {
  const uint64_t tag = gen & kTagMask;
  int64_t ran = 0;
  int range = self;
  for (int j = 0; j < n_threads_; ++j, range = range + 1 == n_threads_ ? 0 : range + 1) {
    int first, count;
    while (claim(range, tag, /*owner=*/j == 0, &first, &count)) {
      run_sub_chunks(range, first, count, self);
      ran += count;
    }
  }
  return ran;
}

void ThreadPool::finished(int64_t count) {
  if (count == 0) return;  // claimed nothing: this job (or an older one) is none of its business
  // seq_cst (it is a release too): the caller's sleep protocol pairs it with its caller_sleeping_ store
  if (remaining_.fetch_sub(count, std::memory_order_seq_cst) == count) {
    done_word_.fetch_add(1, std::memory_order_seq_cst);
    if (caller_sleeping_.load(std::memory_order_seq_cst)) wake_all(done_word_);
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t align, const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  if (align < 1) align = 1;
  const int64_t units = n / align + (n % align != 0);
  if (n_threads_ == 1 || units == 1) {  // nothing to hand off: no atomics, no system calls
    fn(0, n, 0);
    return;
  }

  job_.fn = &fn;
  job_.n = n;
  job_.align = align;
  job_.units = units;
  const uint64_t gen = generation_.load(std::memory_order_relaxed) + 1;  // only this thread changes it
  const uint64_t tag = gen & kTagMask;
  int64_t total = 0;
  for (int r = 0; r < n_threads_; ++r) total += sub_count(unit_boundary(r + 1) - unit_boundary(r));
  remaining_.store(total, std::memory_order_relaxed);
  for (int r = 0; r < n_threads_; ++r)
    slots_[r].word.store(slot_word(tag, 0, sub_count(unit_boundary(r + 1) - unit_boundary(r))),
                         std::memory_order_release);
  publish(gen);

  // The caller's share: its own range, then whatever the workers have not claimed (all of it if none came).
  // Then it waits only for sub-chunks that workers claimed and are still running.
  const int64_t mine = work(gen, 0);
  if (remaining_.fetch_sub(mine, std::memory_order_acq_rel) != mine) {
    auto all_done = [this] { return remaining_.load(std::memory_order_acquire) == 0; };
    if (!spin_until(all_done)) {
      uint32_t word = done_word_.load(std::memory_order_seq_cst);
      caller_sleeping_.store(true, std::memory_order_seq_cst);
      while (remaining_.load(std::memory_order_seq_cst) != 0) {
        wait_while_equal(done_word_, word);
        word = done_word_.load(std::memory_order_seq_cst);
      }
      caller_sleeping_.store(false, std::memory_order_relaxed);
    }
  }
  job_.fn = nullptr;

  if (has_error_.load(std::memory_order_relaxed)) {  // ordered by the acquire on remaining_ above
    std::exception_ptr error;
    {
      std::lock_guard<std::mutex> lock(error_mu_);
      std::swap(error, error_);
      has_error_.store(false, std::memory_order_relaxed);
    }
    std::rethrow_exception(error);
  }
}

void ThreadPool::run(const std::function<void(int)>& fn) {
  if (n_threads_ == 1) {
    fn(0);
    return;
  }
  // One unit per task: one range of one sub-chunk per thread.
  parallel_for(n_threads_, 1, [&fn](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) fn(static_cast<int>(i));
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
