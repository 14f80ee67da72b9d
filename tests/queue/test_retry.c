/*
 * tests/queue/test_retry.c — the retry clock: the backoff sequence (defaults and
 * custom), overflow safety, jitter bounds and spread, the clamp of the last retry to
 * max_age, expiry exactly at the age, and the delay warning given exactly once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "queue/queue.h"
#include "queue/sched_int.h" /* queue_sched_seed */

#define DAY (24 * 3600)

static void test_default_sequence(void **state)
{
    (void)state;
    static const uint32_t want[] = { 300, 600, 1200, 2400, 3600, 3600, 3600, 3600 };
    struct queue_retry_config zero = { 0 };
    for (unsigned i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_int_equal(queue_retry_interval(&zero, i + 1), want[i]);
        assert_int_equal(queue_retry_interval(NULL, i + 1), want[i]);
    }
    assert_int_equal(queue_retry_interval(NULL, 0), 300); /* treated as the first */
    assert_int_equal(queue_retry_interval(NULL, 1000), 3600);
}

static void check_sequence(const struct queue_retry_config *cfg, const uint32_t *want, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        uint32_t got = queue_retry_interval(cfg, i + 1);
        if (got != want[i])
            fail_msg("attempt %u: %u, want %u", i + 1, got, want[i]);
    }
}

static void test_custom_sequences(void **state)
{
    (void)state;
    /* 60 s growing by half, capped at 1000: exact halves are rounded down. */
    struct queue_retry_config a = { .first = 60, .factor_pct = 150, .max = 1000 };
    static const uint32_t wa[] = { 60, 90, 135, 202, 303, 455, 683, 1000, 1000 };
    check_sequence(&a, wa, 9);

    /* Tripling. */
    struct queue_retry_config b = { .first = 10, .factor_pct = 300, .max = 100000 };
    static const uint32_t wb[] = { 10, 30, 90, 270, 810, 2430, 7290, 21870, 65610, 100000 };
    check_sequence(&b, wb, 10);

    /* 10% growth: exact where the exact value is an integer (110, 121). */
    struct queue_retry_config c = { .first = 100, .factor_pct = 110, .max = 200 };
    static const uint32_t wc[] = { 100, 110, 121, 133, 146, 161, 177, 194, 200 };
    check_sequence(&c, wc, 9);

    /* A small first interval does not stall at 1 s (1, 1.5, 2.25, 3.375, 5.06, 7.6). */
    struct queue_retry_config d = { .first = 1, .factor_pct = 150, .max = 7 };
    static const uint32_t wd[] = { 1, 1, 2, 3, 5, 7, 7 };
    check_sequence(&d, wd, 7);

    /* Constant interval, and first above max (max wins). */
    struct queue_retry_config e = { .first = 900, .factor_pct = 100, .max = 3600 };
    assert_int_equal(queue_retry_interval(&e, 1), 900);
    assert_int_equal(queue_retry_interval(&e, 50), 900);
    assert_int_equal(queue_retry_interval(&e, UINT_MAX), 900);
    struct queue_retry_config f = { .first = 5000, .max = 3600 };
    assert_int_equal(queue_retry_interval(&f, 1), 3600);
    assert_int_equal(queue_retry_interval(&f, 7), 3600);

    /* Postfix-like: 300 s doubling to 4000. */
    struct queue_retry_config g = { .max = 4000 };
    static const uint32_t wg[] = { 300, 600, 1200, 2400, 4000, 4000 };
    check_sequence(&g, wg, 6);
}

static void test_overflow(void **state)
{
    (void)state;
    struct queue_retry_config a = { .first = UINT32_MAX - 1,
                                    .factor_pct = UINT32_MAX,
                                    .max = UINT32_MAX };
    assert_int_equal(queue_retry_interval(&a, 1), UINT32_MAX - 1);
    assert_int_equal(queue_retry_interval(&a, 2), UINT32_MAX);
    assert_int_equal(queue_retry_interval(&a, UINT_MAX), UINT32_MAX);

    /* A huge factor from 1 s: one step is exactly factor/100, then the cap. */
    struct queue_retry_config b = { .first = 1, .factor_pct = UINT32_MAX, .max = UINT32_MAX };
    assert_int_equal(queue_retry_interval(&b, 2), UINT32_MAX / 100);
    assert_int_equal(queue_retry_interval(&b, 3), UINT32_MAX);

    /* The slowest growth to the largest cap: the loop ends (about 2,230 steps). */
    struct queue_retry_config c = { .first = 1, .factor_pct = 101, .max = UINT32_MAX };
    assert_int_equal(queue_retry_interval(&c, UINT_MAX), UINT32_MAX);
    uint32_t prev = 0;
    for (unsigned i = 1; i < 3000; i += 7) {
        uint32_t v = queue_retry_interval(&c, i);
        assert_true(v >= prev); /* monotonic, no wrap-around */
        prev = v;
    }

    /* A shrinking factor is refused by the scheduler, but the function is total. */
    struct queue_retry_config d = { .first = 1000, .factor_pct = 50, .max = 3600 };
    assert_int_equal(queue_retry_interval(&d, 2), 500);
    assert_int_equal(queue_retry_interval(&d, UINT_MAX), 0);
    struct queue_sched *s = NULL;
    assert_int_equal(queue_sched_new(&d, &s), QUEUE_ERR_CONFIG);
    assert_null(s);
    struct queue_retry_config j = { .jitter_pct = 101 };
    assert_int_equal(queue_sched_new(&j, &s), QUEUE_ERR_CONFIG);
}

/* An in-flight entry: added ready, then popped. */
static struct queue_entry *inflight(struct queue_sched *s, queue_id_t id, int64_t arrival,
                                    uint16_t attempts, bool warned, bool dsn)
{
    struct queue_entry_info info = {
        .id = id,
        .domain = "retry.example",
        .arrival = arrival,
        .next_attempt = 0,
        .attempts = attempts,
        .nrcpts = 1,
        .content_size = 1000,
        .is_dsn = dsn,
        .delay_warned = warned,
    };
    struct queue_entry *e = NULL;
    assert_int_equal(queue_sched_add(s, &info, arrival, &e), 0);
    assert_ptr_equal(queue_sched_pop_domain(s, "retry.example"), e);
    return e;
}

static void test_jitter(void **state)
{
    (void)state;
    struct queue_sched *s;
    assert_int_equal(queue_sched_new(NULL, &s), 0);
    const int64_t now = 1700000000;
    enum { N = 20000 };
    static uint8_t seen[61];
    memset(seen, 0, sizeof(seen));
    int64_t lo = INT64_MAX, hi = INT64_MIN, sum = 0;
    for (unsigned i = 0; i < N; i++) {
        /* Previous attempts 0 and 4: intervals 300 (+-30) and 3600 (+-360). */
        struct queue_entry *e = inflight(s, i + 1, now, 0, false, false);
        int64_t next = 0;
        assert_int_equal(queue_sched_defer(s, e, now, &next), QUEUE_DEFER_RETRY);
        assert_int_equal(queue_entry_next_attempt(e), next);
        assert_int_equal(queue_entry_attempts(e), 1);
        assert_in_range(next - now, 270, 330);
        seen[next - now - 270] = 1;
        lo = next < lo ? next : lo;
        hi = next > hi ? next : hi;
        sum += next - now;

        struct queue_entry *f = inflight(s, N + i + 1, now, 4, false, false);
        assert_int_equal(queue_sched_defer(s, f, now, &next), QUEUE_DEFER_RETRY);
        assert_in_range(next - now, 3240, 3960);
        queue_sched_remove(s, e);
        queue_sched_remove(s, f);
    }
    /* Uniform over 61 values: every one drawn, the mean near 300. */
    for (unsigned v = 0; v < 61; v++)
        assert_true(seen[v]);
    assert_int_equal(lo - now, 270);
    assert_int_equal(hi - now, 330);
    assert_in_range(sum / N, 298, 302);
    queue_sched_free(s);

    /* 100% jitter on 1 s: a delay of 0 would come up, and is never returned. */
    struct queue_retry_config c = { .first = 1, .max = 1, .jitter_pct = 100 };
    assert_int_equal(queue_sched_new(&c, &s), 0);
    unsigned ones = 0;
    for (unsigned i = 0; i < 2000; i++) {
        struct queue_entry *e = inflight(s, i + 1, now, 0, false, false);
        int64_t next = 0;
        queue_sched_defer(s, e, now, &next);
        assert_in_range(next - now, 1, 2);
        ones += next - now == 1;
        queue_sched_remove(s, e);
    }
    assert_in_range(ones, 1000, 1800); /* 2/3 expected: draws of 0 and 1 */
    queue_sched_free(s);
}

static void test_seeded(void **state)
{
    (void)state;
    struct queue_sched *a, *b;
    assert_int_equal(queue_sched_new(NULL, &a), 0);
    assert_int_equal(queue_sched_new(NULL, &b), 0);
    queue_sched_seed(a, 42);
    queue_sched_seed(b, 42);
    unsigned differ = 0;
    int64_t prev = 0;
    for (unsigned i = 0; i < 100; i++) {
        int64_t na, nb;
        queue_sched_defer(a, inflight(a, i + 1, 1000, 1, false, false), 1000, &na);
        queue_sched_defer(b, inflight(b, i + 1, 1000, 1, false, false), 1000, &nb);
        assert_int_equal(na, nb);
        differ += na != prev;
        prev = na;
    }
    assert_true(differ > 50);
    queue_sched_free(a);
    queue_sched_free(b);
}

static void test_max_age(void **state)
{
    (void)state;
    struct queue_retry_config c = { .first = 300, .max_age = 1000 };
    struct queue_sched *s;
    assert_int_equal(queue_sched_new(&c, &s), 0);
    const int64_t t0 = 5000000;
    struct queue_entry *e = inflight(s, 1, t0, 0, false, false);
    int64_t next;
    /* 600 (+-60) after t0 + 700 would be past the limit: clamped to it. */
    assert_int_equal(queue_sched_defer(s, e, t0 + 100, &next), QUEUE_DEFER_RETRY);
    assert_in_range(next, t0 + 370, t0 + 430);
    assert_ptr_equal(queue_sched_find(s, 1), e);
    assert_int_equal(queue_sched_flush(s, NULL, t0 + 700), 1);
    assert_ptr_equal(queue_sched_pop(s), e);
    assert_int_equal(queue_sched_defer(s, e, t0 + 700, &next), QUEUE_DEFER_RETRY);
    assert_int_equal(next, t0 + 1000);
    /* One second before the age: the retry is at the age, one second later. */
    queue_sched_flush(s, NULL, t0 + 999);
    assert_ptr_equal(queue_sched_pop(s), e);
    assert_int_equal(queue_sched_defer(s, e, t0 + 999, &next), QUEUE_DEFER_RETRY);
    assert_int_equal(next, t0 + 1000);
    assert_int_equal(queue_sched_next_due(s, t0 + 999), 1);
    assert_int_equal(queue_sched_promote(s, t0 + 999), 0);
    assert_int_equal(queue_sched_promote(s, t0 + 1000), 1);
    /* Exactly at the age: expire; the entry stays in flight for the caller to bounce. */
    assert_ptr_equal(queue_sched_pop(s), e);
    assert_int_equal(queue_entry_attempts(e), 3);
    assert_int_equal(queue_sched_defer(s, e, t0 + 1000, &next), QUEUE_DEFER_EXPIRE);
    assert_int_equal(next, t0 + 1000);
    assert_int_equal(queue_entry_attempts(e), 4);
    struct queue_sched_stats st;
    queue_sched_stats(s, &st);
    assert_int_equal(st.inflight, 1);
    assert_int_equal(st.deferred, 0);
    /* And past it. */
    assert_int_equal(queue_sched_defer(s, e, t0 + 5000, &next), QUEUE_DEFER_EXPIRE);
    queue_sched_remove(s, e);
    queue_sched_stats(s, &st);
    assert_int_equal(st.entries, 0);

    /* The default age is 5 days; a DSN follows the same clock. */
    queue_sched_free(s);
    assert_int_equal(queue_sched_new(NULL, &s), 0);
    e = inflight(s, 2, 0, 10, false, true);
    assert_int_equal(queue_sched_defer(s, e, 5 * DAY - 1, &next), QUEUE_DEFER_RETRY);
    assert_int_equal(next, 5 * DAY);
    queue_sched_flush(s, NULL, 5 * DAY);
    assert_ptr_equal(queue_sched_pop(s), e);
    assert_int_equal(queue_sched_defer(s, e, 5 * DAY, &next), QUEUE_DEFER_EXPIRE);
    queue_sched_free(s); /* frees the in-flight entry too (ASan checks) */
}

static void test_warn_once(void **state)
{
    (void)state;
    struct queue_retry_config c = { .delay_warning = 4 * 3600 };
    struct queue_sched *s;
    assert_int_equal(queue_sched_new(&c, &s), 0);
    const int64_t t0 = 1000000;
    struct queue_entry *e = inflight(s, 1, t0, 0, false, false);
    struct queue_entry *w = inflight(s, 2, t0, 0, true, false); /* already warned */
    struct queue_entry *d = inflight(s, 3, t0, 0, false, true); /* a DSN */
    int64_t next;
    assert_int_equal(queue_sched_defer(s, e, t0 + 4 * 3600 - 1, &next), QUEUE_DEFER_RETRY);
    assert_int_equal(queue_sched_defer(s, w, t0 + 1, &next), QUEUE_DEFER_RETRY);
    assert_int_equal(queue_sched_defer(s, d, t0 + 1, &next), QUEUE_DEFER_RETRY);
    unsigned warns = 0;
    for (int64_t now = t0 + 4 * 3600; now < t0 + 2 * DAY; now += 1800) {
        queue_sched_flush(s, NULL, now);
        assert_ptr_equal(queue_sched_pop_domain(s, "retry.example"), e);
        enum queue_defer_verdict v = queue_sched_defer(s, e, now, &next);
        if (v == QUEUE_DEFER_WARN) {
            assert_int_equal(now, t0 + 4 * 3600); /* at the first chance */
            assert_true(next > now);
            warns++;
        } else {
            assert_int_equal(v, QUEUE_DEFER_RETRY);
        }
        assert_ptr_equal(queue_sched_pop_domain(s, "retry.example"), w);
        assert_int_equal(queue_sched_defer(s, w, now, &next), QUEUE_DEFER_RETRY);
        assert_ptr_equal(queue_sched_pop_domain(s, "retry.example"), d);
        assert_int_equal(queue_sched_defer(s, d, now, &next), QUEUE_DEFER_RETRY);
    }
    assert_int_equal(warns, 1);
    queue_sched_free(s);

    /* Off by default. */
    assert_int_equal(queue_sched_new(NULL, &s), 0);
    e = inflight(s, 1, 0, 0, false, false);
    assert_int_equal(queue_sched_defer(s, e, 4 * DAY, &next), QUEUE_DEFER_RETRY);
    queue_sched_free(s);
}

/* A reload's new schedule applies to the next defer; a bad one changes nothing. */
static void test_set_retry(void **state)
{
    (void)state;
    struct queue_retry_config c = { .first = 300, .jitter_pct = 100 };
    struct queue_sched *s;
    assert_int_equal(queue_sched_new(&c, &s), 0);
    c.jitter_pct = 1; /* 0 would be the default, 10 */
    assert_int_equal(queue_sched_set_retry(s, &c), 0);
    const int64_t t0 = 5000000;
    int64_t next;
    assert_int_equal(queue_sched_defer(s, inflight(s, 1, t0, 0, false, false), t0, &next),
                     QUEUE_DEFER_RETRY);
    assert_in_range(next, t0 + 297, t0 + 303);
    struct queue_retry_config bad = { .factor_pct = 50 };
    assert_int_equal(queue_sched_set_retry(s, &bad), QUEUE_ERR_CONFIG);
    assert_int_equal(queue_sched_set_retry(NULL, &c), -EINVAL);
    struct queue_retry_config quick = { .first = 10, .jitter_pct = 1 };
    assert_int_equal(queue_sched_set_retry(s, &quick), 0);
    assert_int_equal(queue_sched_defer(s, inflight(s, 2, t0, 0, false, false), t0, &next),
                     QUEUE_DEFER_RETRY);
    assert_in_range(next, t0 + 9, t0 + 11);
    assert_int_equal(queue_sched_set_retry(s, NULL), 0); /* the defaults */
    queue_sched_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_sequence), cmocka_unit_test(test_custom_sequences),
        cmocka_unit_test(test_overflow),         cmocka_unit_test(test_jitter),
        cmocka_unit_test(test_seeded),           cmocka_unit_test(test_max_age),
        cmocka_unit_test(test_warn_once),        cmocka_unit_test(test_set_retry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
