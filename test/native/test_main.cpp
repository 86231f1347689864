// Test runner: runs the registered tests in registration order, with a watchdog so that a deadlock
// (e.g. a lost wake-up in the thread pool) fails loudly instead of hanging CI.
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "core/cpu_features.h"
#include "core/kernels.h"
#include "test_harness.h"

namespace adatest {

namespace {

struct TestCase {
  const char* name;
  TestFn fn;
};

std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

const char* g_current = "";
int g_failures_in_test = 0;
constexpr int kPrintedFailuresPerTest = 8;  // the rest are counted, not printed

// Seconds a single test may take before the watchdog aborts the run.
constexpr int kTestTimeoutSeconds = 300;
std::atomic<int64_t> g_deadline_ms{0};  // 0 = no test running

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Registrar::Registrar(const char* name, TestFn fn) { registry().push_back({name, fn}); }

void fail(const char* file, int line, const std::string& message) {
  if (g_failures_in_test < kPrintedFailuresPerTest) {
    std::printf("    FAILED %s:%d: %s\n", file, line, message.c_str());
  } else if (g_failures_in_test == kPrintedFailuresPerTest) {
    std::printf("    (further failures in %s not printed)\n", g_current);
  }
  ++g_failures_in_test;
}

std::string format(const char* fmt, ...) {
  char buf[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  return buf;
}

}  // namespace adatest

int main(int argc, char** argv) {
  using namespace adatest;
  const char* filter = argc > 1 ? argv[1] : nullptr;
  std::printf("cpu features: %s; kernels_best: %s\n", adainfer::cpu_features_string(), adainfer::kernels_best().name);

  std::thread watchdog([] {
    for (;;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      const int64_t deadline = g_deadline_ms.load();
      if (deadline < 0) return;
      if (deadline > 0 && now_ms() > deadline) {
        std::printf("TIMEOUT: test %s ran longer than %d s (deadlock?)\n", g_current, kTestTimeoutSeconds);
        std::fflush(stdout);
        std::_Exit(2);
      }
    }
  });

  int passed = 0, failed = 0;
  for (const TestCase& test : registry()) {
    if (filter && !std::strstr(test.name, filter)) continue;
    g_current = test.name;
    g_failures_in_test = 0;
    const int64_t start = now_ms();
    g_deadline_ms.store(start + kTestTimeoutSeconds * 1000);
    std::printf("[ RUN  ] %s\n", test.name);
    std::fflush(stdout);
    test.fn();
    g_deadline_ms.store(0);
    const int64_t elapsed = now_ms() - start;
    if (g_failures_in_test == 0) {
      ++passed;
      std::printf("[  OK  ] %s (%lld ms)\n", test.name, static_cast<long long>(elapsed));
    } else {
      ++failed;
      std::printf("[ FAIL ] %s: %d failed checks (%lld ms)\n", test.name, g_failures_in_test,
                  static_cast<long long>(elapsed));
    }
    std::fflush(stdout);
  }
  g_deadline_ms.store(-1);
  watchdog.join();
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
