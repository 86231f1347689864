/* Memory read bandwidth: T threads each stream over their share of a buffer much larger than the caches
 * (default 1 GiB), summing 64-bit words with four independent accumulators (the compiler vectorises it).
 * Prints one JSON line per thread count: {"threads", "gib_per_s" (median of reps), "samples"}.
 * Built by bench/compare.ts with the system C compiler (cc -O3 -pthread); a benchmark helper, not part of
 * the runtime.  usage: membw [threads...] [--mib N] [--reps R]            */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
  const uint64_t* p;
  size_t n;
  uint64_t sum;
} Job;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

/* The same loop compiled for three instruction sets; the widest the CPU has is used (wide loads need fewer
 * instructions per byte, so one thread can approach the memory bandwidth). */
#define SUM_LOOP                                                   \
  uint64_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                      \
  for (size_t i = 0; i + 8 <= n; i += 8)                           \
    for (int k = 0; k < 8; ++k) acc[k] += p[i + k];                \
  uint64_t s = 0;                                                  \
  for (int k = 0; k < 8; ++k) s += acc[k];                         \
  return s;

__attribute__((target("avx512f"))) static uint64_t sum_avx512(const uint64_t* p, size_t n) { SUM_LOOP }
__attribute__((target("avx2"))) static uint64_t sum_avx2(const uint64_t* p, size_t n) { SUM_LOOP }
static uint64_t sum_base(const uint64_t* p, size_t n) { SUM_LOOP }

static uint64_t (*sum_fn)(const uint64_t*, size_t) = sum_base;

static void* run(void* arg) {
  Job* j = (Job*)arg;
  j->sum = sum_fn(j->p, j->n);
  return NULL;
}

static int cmp(const void* x, const void* y) {
  const double a = *(const double*)x, b = *(const double*)y;
  return a < b ? -1 : a > b;
}

int main(int argc, char** argv) {
  int threads[16], nt = 0, reps = 5;
  size_t mib = 1024;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = (size_t)atol(argv[++i]);
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (nt < 16) threads[nt++] = atoi(argv[i]);
  }
  if (nt == 0) threads[nt++] = 1;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) sum_fn = sum_avx512;
  else if (__builtin_cpu_supports("avx2")) sum_fn = sum_avx2;
  if (reps < 1) reps = 1;
  if (reps > 64) reps = 64;
  const size_t bytes = mib << 20, words = bytes / 8;
  uint64_t* buf = NULL;
  if (posix_memalign((void**)&buf, 64, bytes)) return 1;
  for (size_t i = 0; i < words; ++i) buf[i] = i;  /* touch every page */
  uint64_t sink = 0;
  for (int k = 0; k < nt; ++k) {
    const int t = threads[k] < 1 ? 1 : threads[k] > 64 ? 64 : threads[k];
    double samples[64];
    for (int r = -1; r < reps; ++r) {
      pthread_t th[64];
      Job jobs[64];
      const double t0 = now();
      for (int i = 0; i < t; ++i) {
        jobs[i].p = buf + words / t * i;
        jobs[i].n = words / t;
        pthread_create(&th[i], NULL, run, &jobs[i]);
      }
      for (int i = 0; i < t; ++i) {
        pthread_join(th[i], NULL);
        sink += jobs[i].sum;
      }
      const double dt = now() - t0;
      if (r >= 0) samples[r] = (double)(words / t * t * 8) / dt / (1 << 30);
    }
    double sorted[64];
    memcpy(sorted, samples, sizeof(double) * reps);
    qsort(sorted, reps, sizeof(double), cmp);
    printf("{\"threads\": %d, \"gib_per_s\": %.3f, \"samples\": [", t, sorted[reps / 2]);
    for (int r = 0; r < reps; ++r) printf("%s%.3f", r ? ", " : "", samples[r]);
    printf("]}\n");
  }
  free(buf);
  return sink == 42 ? 3 : 0;
}
