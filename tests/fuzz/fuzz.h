/*
 * tests/fuzz/fuzz.h — the contract of a fuzz target (tests/fuzz/fuzz_*.c): libFuzzer's.
 *
 * A target defines LLVMFuzzerTestOneInput (and may define LLVMFuzzerInitialize). It
 * feeds the bytes to one parser of input floormta does not control (the network, the
 * spool, the API), checks the invariants the parser promises (bounds, progress,
 * consistent results) with fuzz_check, and frees everything: a leak is a failure under
 * LeakSanitizer. It never writes files and never depends on earlier inputs.
 *
 * Two ways to run one (tests/fuzz/README.md):
 *   - in `make test`: tests/fuzz/driver.c, a deterministic mutation loop (fixed seed,
 *     a fixed number of inputs) over the target's seed corpus, under both builds;
 *   - `make fuzz`: clang's libFuzzer, open-ended, coverage-guided.
 */
#ifndef FLOORMTA_TESTS_FUZZ_H
#define FLOORMTA_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* An invariant: a violation aborts, which the driver and libFuzzer report with the input
 * that caused it. */
#define fuzz_check(cond)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* xorshift32: a target's own decisions (split points, results it plays back), drawn from
 * a state it seeds from its input so that an input always replays the same way. The
 * state must not be 0. */
static inline uint32_t fuzz_xorshift32(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

#endif /* FLOORMTA_TESTS_FUZZ_H */
