/*
 * bench/bench.h — the C face of Google Benchmark.
 *
 * Benchmarks are plain C: a function that runs while bench_next() says so, registered
 * with BENCH_REGISTER at load time. bench/bench_shim.cc adapts this to Google
 * Benchmark (the only C++ in floormta), so its table, filters and JSON output all work:
 *   ./build/floormta-bench --benchmark_filter=tls
 */
#ifndef FLOORMTA_BENCH_H
#define FLOORMTA_BENCH_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct bench_state; /* Google Benchmark's State, opaque to C */

typedef void (*bench_fn)(struct bench_state *st);

/* Registers fn under name (both borrowed: string literals). Called by BENCH_REGISTER. */
void bench_register(const char *name, bench_fn fn);

/* Like bench_register, but rates are per wall-clock second, not per CPU second: for
 * benchmarks that wait on another process (a DNS server, a receiver). */
void bench_register_real_time(const char *name, bench_fn fn);

/* True while the benchmark should run one more iteration. */
bool bench_next(struct bench_state *st);

/* Exclude the work between pause and resume from the timing (set-up per iteration). */
void bench_pause(struct bench_state *st);
void bench_resume(struct bench_state *st);

/* Report throughput: items (handshakes, lookups, ...) and bytes processed in total. */
void bench_set_items(struct bench_state *st, int64_t items);
void bench_set_bytes(struct bench_state *st, int64_t bytes);

/* Reports a named figure of the run as it is (no rate): handshakes, CPU per message.
 * name is borrowed for the call. */
void bench_set_counter(struct bench_state *st, const char *name, double value);

/* Stops the benchmark with an error message (borrowed) shown in the table. */
void bench_fail(struct bench_state *st, const char *msg);

/* Runs once before any benchmark: a scratch directory (created, removed at exit) for
 * files a benchmark needs, such as the test PKI. Static string. */
const char *bench_scratch_dir(void);

#define BENCH_REGISTER(fn)                                             \
    __attribute__((constructor)) static void bench_register_##fn(void) \
    {                                                                  \
        bench_register(#fn, fn);                                       \
    }

#define BENCH_REGISTER_REAL_TIME(fn)                                   \
    __attribute__((constructor)) static void bench_register_##fn(void) \
    {                                                                  \
        bench_register_real_time(#fn, fn);                             \
    }

#ifdef __cplusplus
}
#endif

#endif /* FLOORMTA_BENCH_H */
