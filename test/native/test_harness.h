// A minimal self-contained test harness for the native tests (no external framework).
//   TEST(name) { ... }        defines and registers a test
//   CHECK(cond)               records a failure (file:line, the expression) and keeps going
//   CHECK_MSG(cond, fmt, ...) same, with a printf-style explanation
//   CHECK_NEAR(a, b, tol)     |a - b| <= tol (NaN never passes)
// test_main.cpp runs every test (or those whose name contains argv[1]) and ends with the line
// "N passed, M failed"; the exit code is non-zero when anything failed.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>

namespace adatest {

using TestFn = void (*)();

struct Registrar {
  Registrar(const char* name, TestFn fn);
};

// Records one failed check in the running test; prints the first few of each test.
void fail(const char* file, int line, const std::string& message);

// printf into a std::string (for CHECK_MSG).
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace adatest

#define TEST(name)                                                        \
  static void adatest_##name();                                           \
  static const ::adatest::Registrar adatest_registrar_##name(#name, &adatest_##name); \
  static void adatest_##name()

#define CHECK(cond)                                     \
  do {                                                  \
    if (!(cond)) ::adatest::fail(__FILE__, __LINE__, #cond); \
  } while (0)

#define CHECK_MSG(cond, ...)                                                                \
  do {                                                                                      \
    if (!(cond)) ::adatest::fail(__FILE__, __LINE__, std::string(#cond) + ": " + ::adatest::format(__VA_ARGS__)); \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                                       \
  do {                                                                                              \
    const double adatest_a = (a), adatest_b = (b), adatest_tol = (tol);                             \
    if (!(std::fabs(adatest_a - adatest_b) <= adatest_tol))                                         \
      ::adatest::fail(__FILE__, __LINE__,                                                           \
                      ::adatest::format("%s = %.9g vs %s = %.9g, |diff| %.3g > tol %.3g", #a, adatest_a, #b, \
                                        adatest_b, std::fabs(adatest_a - adatest_b), adatest_tol)); \
  } while (0)
