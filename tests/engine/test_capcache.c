/*
 * tests/engine/test_capcache.c — the per-destination TLS capability cache
 * (engine/capcache.h): blocking and expiry to the second, the shorter TTL of
 * transient-looking refusals, what a pass changes, what cannot be recorded, LRU
 * bounds, forget, iteration, the reason text, the file (round trip, expired, truncated,
 * garbage, empty, missing, foreign), and 100,000 hosts without an allocation.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/capcache.h"

#define T0  1795392000 /* 2026-11-23T00:00:00Z */
#define TTL 3600

/* ---- allocation counting: ASan's hooks, or jemalloc's per-thread counter -------------- */

#ifdef __SANITIZE_ADDRESS__
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));
static uint64_t mallocs;
static void count_malloc(const volatile void *p, size_t size)
{
    (void)p;
    (void)size;
    mallocs++;
}
static void count_free(const volatile void *p)
{
    (void)p;
}
#endif
extern int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen)
        __attribute__((weak));

/* A number that grows with every allocation by this thread; false if none is available. */
static bool alloc_counter(uint64_t *out)
{
#ifdef __SANITIZE_ADDRESS__
    static bool installed;
    if (!installed)
        installed = __sanitizer_install_malloc_and_free_hooks(count_malloc, count_free) != 0;
    *out = mallocs;
    return installed;
#else
    size_t len = sizeof(*out);
    return mallctl != NULL && mallctl("thread.allocated", out, &len, NULL, 0) == 0;
#endif
}

/* ---- helpers -------------------------------------------------------------------------- */

static struct tls_verdict verdict(enum tls_reason reason, uint16_t version, const char *cipher,
                                  bool cert)
{
    struct tls_verdict v;
    tls_verdict_clear(&v);
    v.pass = reason == TLS_REASON_NONE;
    v.reason = reason;
    v.ev.version = version;
    snprintf(v.ev.cipher, sizeof(v.ev.cipher), "%s", cipher);
    v.ev.problems = reason == TLS_REASON_NONE ? 0 : 1u << reason;
    if (cert) {
        v.ev.has_cert = true;
        for (int i = 0; i < 32; i++)
            v.ev.sha256[i] = (uint8_t)(i * 7 + 0xa0);
        v.ev.not_after = T0 - 86400; /* 2026-11-22 */
    }
    return v;
}

static struct tls_verdict pass13(void)
{
    return verdict(TLS_REASON_NONE, TLS_VERSION_1_3, "TLS_AES_128_GCM_SHA256", true);
}

static struct tls_verdict old10(void)
{
    return verdict(TLS_REASON_VERSION_BELOW_FLOOR, TLS_VERSION_1_0, "ECDHE-RSA-AES128-SHA", false);
}

static struct eng_capcache *cache_new(size_t max, uint32_t ttl, uint32_t transient)
{
    struct eng_capcache_config cfg = { .max_entries = max, .ttl = ttl, .transient_ttl = transient };
    struct eng_capcache *c = NULL;
    assert_int_equal(eng_capcache_new(&cfg, &c), 0);
    assert_non_null(c);
    return c;
}

static struct eng_capcache_stats stats_of(const struct eng_capcache *c)
{
    struct eng_capcache_stats s;
    eng_capcache_stats(c, &s);
    return s;
}

/* ---- blocking and expiry ---------------------------------------------------------------- */

static void refusal_blocks_until_exactly_ttl(void **state)
{
    (void)state;
    struct eng_capcache *c = cache_new(16, TTL, 0);
    struct tls_verdict v = old10();
    assert_int_equal(eng_capcache_record(c, "mx.example.net", 25, &v, T0), 0);

    struct eng_capcache_entry e;
    assert_int_equal(eng_capcache_check(c, "mx.example.net", 25, T0, &e), ENG_CAPCACHE_BLOCKED);
    assert_false(e.pass);
    assert_int_equal(e.reason, TLS_REASON_VERSION_BELOW_FLOOR);
    assert_int_equal(e.version, TLS_VERSION_1_0);
    assert_true(e.starttls_offered);
    assert_int_equal(e.checked_at, T0);
    assert_int_equal(e.expires_at, T0 + TTL);
    assert_int_equal(e.refusals, 1);
    assert_string_equal(e.host, "mx.example.net");
    assert_int_equal(e.port, 25);
    assert_int_equal(eng_capcache_check(c, "mx.example.net", 25, T0 + TTL - 1, NULL),
                     ENG_CAPCACHE_BLOCKED);
    assert_int_equal(eng_capcache_check(c, "mx.example.net", 25, T0 + TTL, &e),
                     ENG_CAPCACHE_UNKNOWN);
    assert_int_equal(eng_capcache_check(c, "mx.example.net", 25, T0 + TTL + 1, NULL),
                     ENG_CAPCACHE_UNKNOWN);

    struct eng_capcache_stats s = stats_of(c);
    assert_int_equal(s.records, 1);
    assert_int_equal(s.checks, 4);
    assert_int_equal(s.hits, 2);
    assert_int_equal(s.blocks, 2);
    assert_int_equal(s.expirations, 1);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.refuse_entries, 0);
    assert_int_equal(s.evictions, 0);
    eng_capcache_free(c);
}

static void transient_refusals_block_for_less(void **state)
{
    (void)state;
    struct eng_capcache *c = cache_new(16, TTL, 0);
    assert_int_equal(eng_capcache_ttl_for(c, TLS_REASON_HANDSHAKE_FAILED), TTL / 4);
    assert_int_equal(eng_capcache_ttl_for(c, TLS_REASON_STARTTLS_REFUSED), TTL / 4);
    assert_int_equal(eng_capcache_ttl_for(c, TLS_REASON_NO_STARTTLS), TTL);
    assert_int_equal(eng_capcache_ttl_for(c, TLS_REASON_CERT_EXPIRED), TTL);
    assert_int_equal(eng_capcache_ttl_for(c, TLS_REASON_NONE), TTL);

    struct tls_verdict hs = verdict(TLS_REASON_HANDSHAKE_FAILED, 0, "", false);
    struct tls_verdict st = verdict(TLS_REASON_STARTTLS_REFUSED, 0, "", false);
    struct tls_verdict no = verdict(TLS_REASON_NO_STARTTLS, 0, "", false);
    assert_int_equal(eng_capcache_record(c, "hs.example", 25, &hs, T0), 0);
    assert_int_equal(eng_capcache_record(c, "st.example", 25, &st, T0), 0);
    assert_int_equal(eng_capcache_record(c, "no.example", 25, &no, T0), 0);
    struct eng_capcache_entry e;
    assert_int_equal(eng_capcache_check(c, "st.example", 25, T0, &e), ENG_CAPCACHE_BLOCKED);
    assert_true(e.starttls_offered);
    assert_int_equal(eng_capcache_check(c, "no.example", 25, T0, &e), ENG_CAPCACHE_BLOCKED);
    assert_false(e.starttls_offered);
    assert_int_equal(eng_capcache_check(c, "hs.example", 25, T0 + TTL / 4 - 1, NULL),
                     ENG_CAPCACHE_BLOCKED);
    assert_int_equal(eng_capcache_check(c, "hs.example", 25, T0 + TTL / 4, NULL),
                     ENG_CAPCACHE_UNKNOWN);
    assert_int_equal(eng_capcache_check(c, "st.example", 25, T0 + TTL / 4, NULL),
                     ENG_CAPCACHE_UNKNOWN);
    assert_int_equal(eng_capcache_check(c, "no.example", 25, T0 + TTL / 4, NULL),
                     ENG_CAPCACHE_BLOCKED);
    eng_capcache_free(c);

    /* Configurable, and never longer than the full TTL. */
    c = cache_new(16, 600, 60);
    assert_int_equal(eng_capcache_ttl_for(c, TLS_REASON_HANDSHAKE_FAILED), 60);
    eng_capcache_free(c);
    c = cache_new(16, 600, 6000);
    assert_int_equal(eng_capcache_ttl_for(c, TLS_REASON_HANDSHAKE_FAILED), 600);
    eng_capcache_free(c);
    c = cache_new(0, 0, 0); /* defaults */
    assert_int_equal(eng_capcache_ttl_for(c, TLS_REASON_WEAK_KEY), ENG_CAPCACHE_DEFAULT_TTL);
    assert_int_equal(stats_of(c).capacity, ENG_CAPCACHE_DEFAULT_MAX);
    eng_capcache_free(c);
}

static void pass_never_blocks_and_raises_highest(void **state)
{
    (void)state;
    struct eng_capcache *c = cache_new(16, TTL, 0);
    struct tls_verdict p12 =
            verdict(TLS_REASON_NONE, TLS_VERSION_1_2, "ECDHE-RSA-AES128-GCM-SHA256", true);
    struct tls_verdict p13 = pass13();
    struct tls_verdict r10 = old10();
    struct eng_capcache_entry e;

    assert_int_equal(eng_capcache_record(c, "mx.example", 25, &p12, T0), 0);
    assert_int_equal(eng_capcache_check(c, "mx.example", 25, T0, &e), ENG_CAPCACHE_PASSED);
    assert_int_equal(e.highest_version, TLS_VERSION_1_2);
    assert_int_equal(eng_capcache_record(c, "mx.example", 25, &p13, T0 + 10), 0);
    assert_int_equal(eng_capcache_check(c, "mx.example", 25, T0 + 10, &e), ENG_CAPCACHE_PASSED);
    assert_int_equal(e.highest_version, TLS_VERSION_1_3);
    assert_int_equal(e.expires_at, T0 + 10 + TTL);
    assert_true(e.pass);
    assert_true(e.has_cert);

    /* A downgrade: blocked now, the highest version seen is remembered. */
    assert_int_equal(eng_capcache_record(c, "mx.example", 25, &r10, T0 + 20), 0);
    assert_int_equal(eng_capcache_record(c, "mx.example", 25, &r10, T0 + 30), 0);
    assert_int_equal(eng_capcache_check(c, "mx.example", 25, T0 + 30, &e), ENG_CAPCACHE_BLOCKED);
    assert_int_equal(e.version, TLS_VERSION_1_0);
    assert_int_equal(e.highest_version, TLS_VERSION_1_3);
    assert_int_equal(e.refusals, 2);
    assert_false(e.has_cert);
    assert_string_equal(e.cipher, "ECDHE-RSA-AES128-SHA");
    struct eng_capcache_stats s = stats_of(c);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.refuse_entries, 1);
    assert_int_equal(s.pass_entries, 0);

    /* A pass (after an operator's retry) clears the refusal count at once. */
    assert_int_equal(eng_capcache_record(c, "mx.example", 25, &p13, T0 + 40), 0);
    assert_int_equal(eng_capcache_check(c, "mx.example", 25, T0 + 40, &e), ENG_CAPCACHE_PASSED);
    assert_int_equal(e.refusals, 0);
    assert_int_equal(e.reason, TLS_REASON_NONE);
    s = stats_of(c);
    assert_int_equal(s.pass_entries, 1);
    assert_int_equal(s.refuse_entries, 0);
    assert_int_equal(s.blocks, 1);
    eng_capcache_free(c);
}

static void pass_after_expired_refusal_replaces_it(void **state)
{
    (void)state;
    struct eng_capcache *c = cache_new(16, TTL, 0);
    struct tls_verdict p12 = verdict(TLS_REASON_NONE, TLS_VERSION_1_2, "X", false);
    struct tls_verdict r10 = old10();
    struct tls_verdict p13 = pass13();
    struct eng_capcache_entry e;
    assert_int_equal(eng_capcache_record(c, "a.example", 25, &p12, T0), 0);
    assert_int_equal(eng_capcache_record(c, "a.example", 25, &r10, T0 + 1), 0);
    assert_int_equal(eng_capcache_record(c, "b.example", 25, &r10, T0 + 1), 0);

    /* Expired but never checked: the record itself finds it expired. */
    assert_int_equal(eng_capcache_record(c, "a.example", 25, &r10, T0 + 1 + TTL), 0);
    assert_int_equal(eng_capcache_check(c, "a.example", 25, T0 + 1 + TTL, &e),
                     ENG_CAPCACHE_BLOCKED);
    assert_int_equal(e.refusals, 1);                      /* not 2: a fresh entry */
    assert_int_equal(e.highest_version, TLS_VERSION_1_0); /* the 1.2 pass had expired */

    assert_int_equal(eng_capcache_record(c, "b.example", 25, &p13, T0 + 1 + TTL), 0);
    assert_int_equal(eng_capcache_check(c, "b.example", 25, T0 + 2 + TTL, &e), ENG_CAPCACHE_PASSED);
    assert_true(e.pass);
    assert_int_equal(e.refusals, 0);
    assert_int_equal(e.highest_version, TLS_VERSION_1_3);
    assert_int_equal(e.checked_at, T0 + 1 + TTL);
    struct eng_capcache_stats s = stats_of(c);
    assert_int_equal(s.expirations, 2);
    assert_int_equal(s.entries, 2);
    eng_capcache_free(c);
}

static void only_verdicts_are_recordable(void **state)
{
    (void)state;
    struct eng_capcache *c = cache_new(16, TTL, 0);
    struct tls_verdict v;
    /* What a network error leaves: no decision. */
    tls_verdict_clear(&v);
    assert_int_equal(eng_capcache_record(c, "mx.example", 25, &v, T0), -EINVAL);
    v.pass = true;
    v.reason = TLS_REASON_WEAK_KEY;
    assert_int_equal(eng_capcache_record(c, "mx.example", 25, &v, T0), -EINVAL);
    v.pass = false;
    v.reason = TLS_REASON__COUNT;
    assert_int_equal(eng_capcache_record(c, "mx.example", 25, &v, T0), -EINVAL);
    v = old10();
    assert_int_equal(eng_capcache_record(c, "mx.example", 25, NULL, T0), -EINVAL);
    assert_int_equal(eng_capcache_record(c, "mx.example", 0, &v, T0), -EINVAL);
    assert_int_equal(eng_capcache_record(NULL, "mx.example", 25, &v, T0), -EINVAL);
    assert_int_equal(eng_capcache_record(c, NULL, 25, &v, T0), -EINVAL);
    assert_int_equal(eng_capcache_record(c, "", 25, &v, T0), -EILSEQ);
    assert_int_equal(eng_capcache_record(c, ".", 25, &v, T0), -EILSEQ);
    assert_int_equal(eng_capcache_record(c, "mx example", 25, &v, T0), -EILSEQ);
    assert_int_equal(eng_capcache_record(c, "mx\n.example", 25, &v, T0), -EILSEQ);
    assert_int_equal(eng_capcache_record(c, "mx.\xc3\xa9xample", 25, &v, T0), -EILSEQ);
    char long_name[300];
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    assert_int_equal(eng_capcache_record(c, long_name, 25, &v, T0), -ENAMETOOLONG);
    long_name[255] = '\0'; /* 255 characters: the longest name */
    assert_int_equal(eng_capcache_record(c, long_name, 25, &v, T0), 0);
    assert_int_equal(eng_capcache_check(c, long_name, 25, T0, NULL), ENG_CAPCACHE_BLOCKED);
    assert_int_equal(eng_capcache_check(c, "", 25, T0, NULL), ENG_CAPCACHE_UNKNOWN);
    assert_int_equal(stats_of(c).records, 1);
    eng_capcache_free(c);
}

static void names_are_normalised_and_ports_distinct(void **state)
{
    (void)state;
    struct eng_capcache *c = cache_new(16, TTL, 0);
    struct tls_verdict v = old10();
    assert_int_equal(eng_capcache_record(c, "MX.Example.NET.", 2525, &v, T0), 0);
    struct eng_capcache_entry e;
    assert_int_equal(eng_capcache_check(c, "mx.example.net", 2525, T0, &e), ENG_CAPCACHE_BLOCKED);
    assert_string_equal(e.host, "mx.example.net");
    assert_int_equal(eng_capcache_check(c, "mx.EXAMPLE.net.", 2525, T0, NULL),
                     ENG_CAPCACHE_BLOCKED);
    assert_int_equal(eng_capcache_check(c, "mx.example.net", 25, T0, NULL), ENG_CAPCACHE_UNKNOWN);
    assert_int_equal(eng_capcache_check(c, "mx.example.ne", 2525, T0, NULL), ENG_CAPCACHE_UNKNOWN);
    assert_string_equal(eng_capcache_state_name(ENG_CAPCACHE_BLOCKED), "blocked");
    assert_string_equal(eng_capcache_state_name(ENG_CAPCACHE_PASSED), "passed");
    assert_string_equal(eng_capcache_state_name((enum eng_capcache_state)42), "invalid");
    eng_capcache_free(c);
}

/* ---- bounds, forget, iteration ------------------------------------------------------------ */

static void lru_bound_and_eviction_counts(void **state)
{
    (void)state;
    struct eng_capcache *c = cache_new(4, TTL, 0);
    struct tls_verdict v = old10();
    const char *names[] = { "a", "b", "c", "d", "e", "f" };
    for (int i = 0; i < 4; i++)
        assert_int_equal(eng_capcache_record(c, names[i], 25, &v, T0), 0);
    /* a is used again, so b is the least recently used. */
    assert_int_equal(eng_capcache_check(c, "a", 25, T0, NULL), ENG_CAPCACHE_BLOCKED);
    assert_int_equal(eng_capcache_record(c, "e", 25, &v, T0), 0);
    assert_int_equal(eng_capcache_check(c, "b", 25, T0, NULL), ENG_CAPCACHE_UNKNOWN);
    assert_int_equal(eng_capcache_check(c, "a", 25, T0, NULL), ENG_CAPCACHE_BLOCKED);
    assert_int_equal(eng_capcache_check(c, "c", 25, T0, NULL), ENG_CAPCACHE_BLOCKED);
    struct eng_capcache_stats s = stats_of(c);
    assert_int_equal(s.entries, 4);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(s.expirations, 0);

    /* A victim that had expired anyway counts as an expiration, not an eviction. */
    assert_int_equal(eng_capcache_record(c, "f", 25, &v, T0 + TTL), 0);
    s = stats_of(c);
    assert_int_equal(s.entries, 4);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(s.expirations, 1);
    assert_int_equal(eng_capcache_check(c, "d", 25, T0, NULL), ENG_CAPCACHE_UNKNOWN);
    assert_int_equal(eng_capcache_check(c, "f", 25, T0 + TTL, NULL), ENG_CAPCACHE_BLOCKED);
    eng_capcache_free(c);
}

static void forget_one_port_or_all(void **state)
{
    (void)state;
    struct eng_capcache *c = cache_new(16, TTL, 0);
    struct tls_verdict v = old10();
    assert_int_equal(eng_capcache_record(c, "mx.example", 25, &v, T0), 0);
    assert_int_equal(eng_capcache_record(c, "mx.example", 2525, &v, T0), 0);
    assert_int_equal(eng_capcache_record(c, "mx.example", 2526, &v, T0), 0);
    assert_int_equal(eng_capcache_record(c, "other.example", 25, &v, T0), 0);
    assert_int_equal(eng_capcache_forget(c, "MX.example.", 2525), 1);
    assert_int_equal(eng_capcache_forget(c, "mx.example", 2525), 0);
    assert_int_equal(eng_capcache_check(c, "mx.example", 2525, T0, NULL), ENG_CAPCACHE_UNKNOWN);
    assert_int_equal(eng_capcache_check(c, "mx.example", 25, T0, NULL), ENG_CAPCACHE_BLOCKED);
    assert_int_equal(eng_capcache_forget(c, "mx.example", 0), 2);
    assert_int_equal(eng_capcache_check(c, "mx.example", 25, T0, NULL), ENG_CAPCACHE_UNKNOWN);
    assert_int_equal(eng_capcache_check(c, "other.example", 25, T0, NULL), ENG_CAPCACHE_BLOCKED);
    assert_int_equal(eng_capcache_forget(c, "", 25), -EILSEQ);
    struct eng_capcache_stats s = stats_of(c);
    assert_int_equal(s.forgets, 3);
    assert_int_equal(s.entries, 1);
    /* A forgotten host's slot is reused. */
    for (int i = 0; i < 40; i++) {
        char name[32];
        snprintf(name, sizeof(name), "h%d", i);
        assert_int_equal(eng_capcache_record(c, name, 25, &v, T0), 0);
        assert_int_equal(eng_capcache_forget(c, name, 25), 1);
    }
    assert_int_equal(stats_of(c).evictions, 0);
    eng_capcache_free(c);
}

struct seen {
    int n;
    char hosts[16][32];
    int stop_after;
};

static bool collect(void *arg, const struct eng_capcache_entry *e)
{
    struct seen *s = arg;
    snprintf(s->hosts[s->n], sizeof(s->hosts[s->n]), "%.31s", e->host);
    s->n++;
    return s->stop_after == 0 || s->n < s->stop_after;
}

static void foreach_sees_every_live_entry(void **state)
{
    (void)state;
    struct eng_capcache *c = cache_new(16, TTL, 0);
    struct tls_verdict r = old10(), p = pass13();
    struct tls_verdict hs = verdict(TLS_REASON_HANDSHAKE_FAILED, 0, "", false);
    for (int i = 0; i < 10; i++) {
        char name[16];
        snprintf(name, sizeof(name), "h%d", i);
        const struct tls_verdict *v = i % 3 == 0 ? &hs : i % 3 == 1 ? &r : &p;
        assert_int_equal(eng_capcache_record(c, name, 25, v, T0 + i), 0);
    }
    struct seen s = { 0 };
    eng_capcache_foreach(c, T0 + 10, collect, &s);
    assert_int_equal(s.n, 10);
    assert_string_equal(s.hosts[0], "h9"); /* most recently used first */
    assert_string_equal(s.hosts[9], "h0");

    /* At T0 + TTL/4 + 3, the handshake_failed entries of h0 and h3 have expired. */
    memset(&s, 0, sizeof(s));
    eng_capcache_foreach(c, T0 + TTL / 4 + 3, collect, &s);
    assert_int_equal(s.n, 8);
    struct eng_capcache_stats st = stats_of(c);
    assert_int_equal(st.entries, 8);
    assert_int_equal(st.expirations, 2);
    assert_int_equal(st.pass_entries, 3);
    assert_int_equal(st.refuse_entries, 5);

    memset(&s, 0, sizeof(s));
    s.stop_after = 3;
    eng_capcache_foreach(c, T0 + TTL / 4 + 3, collect, &s);
    assert_int_equal(s.n, 3);

    assert_int_equal(eng_capcache_expire(c, T0 + TTL + 4), 5); /* h1 h2 h4 h6 h9 gone */
    assert_int_equal(stats_of(c).entries, 3);
    eng_capcache_free(c);
}

/* ---- the reason text ------------------------------------------------------------------------ */

static void describe_names_reason_version_and_times(void **state)
{
    (void)state;
    struct eng_capcache *c = cache_new(16, TTL, 0);
    struct tls_verdict r = old10();
    struct tls_verdict x =
            verdict(TLS_REASON_CERT_EXPIRED, TLS_VERSION_1_2, "ECDHE-RSA-AES128-GCM-SHA256", true);
    struct tls_verdict n = verdict(TLS_REASON_NO_STARTTLS, 0, "", false);
    struct tls_verdict p = pass13();
    assert_int_equal(eng_capcache_record(c, "old.example", 25, &r, T0), 0);
    assert_int_equal(eng_capcache_record(c, "exp.example", 25, &x, T0), 0);
    assert_int_equal(eng_capcache_record(c, "plain.example", 25, &n, T0), 0);
    assert_int_equal(eng_capcache_record(c, "good.example", 25, &p, T0), 0);
    struct eng_capcache_entry e;
    char text[ENG_CAPCACHE_DESCRIBE_MAX];

    assert_int_equal(eng_capcache_check(c, "old.example", 25, T0 + 5, &e), ENG_CAPCACHE_BLOCKED);
    int len = eng_capcache_describe(&e, text, sizeof(text));
    assert_int_equal(len, (int)strlen(text));
    assert_string_equal(text, "cached refusal: version_below_floor (TLSv1, ECDHE-RSA-AES128-SHA)"
                              " checked 2026-11-23T00:00:00Z, retry after 2026-11-23T01:00:00Z");

    assert_int_equal(eng_capcache_check(c, "exp.example", 25, T0, &e), ENG_CAPCACHE_BLOCKED);
    eng_capcache_describe(&e, text, sizeof(text));
    assert_string_equal(text, "cached refusal: cert_expired (TLSv1.2, ECDHE-RSA-AES128-GCM-SHA256,"
                              " cert sha256:a0a7aeb5bcc3cad1..., notAfter 2026-11-22T00:00:00Z)"
                              " checked 2026-11-23T00:00:00Z, retry after 2026-11-23T01:00:00Z");

    assert_int_equal(eng_capcache_check(c, "plain.example", 25, T0, &e), ENG_CAPCACHE_BLOCKED);
    eng_capcache_describe(&e, text, sizeof(text));
    assert_string_equal(text, "cached refusal: no_starttls (no TLS) checked 2026-11-23T00:00:00Z,"
                              " retry after 2026-11-23T01:00:00Z");

    assert_int_equal(eng_capcache_check(c, "good.example", 25, T0, &e), ENG_CAPCACHE_PASSED);
    eng_capcache_describe(&e, text, sizeof(text));
    assert_string_equal(text, "cached pass (TLSv1.3, TLS_AES_128_GCM_SHA256) checked"
                              " 2026-11-23T00:00:00Z, until 2026-11-23T01:00:00Z");

    /* The longest entry fits in ENG_CAPCACHE_DESCRIBE_MAX. */
    memset(e.cipher, 'c', sizeof(e.cipher) - 1);
    e.cipher[sizeof(e.cipher) - 1] = '\0';
    e.pass = false;
    e.reason = TLS_REASON_CERT_NOT_YET_VALID;
    e.has_cert = true;
    e.version = 0x7f1c;
    e.checked_at = e.expires_at = e.not_after = -62000000000; /* year -1 */
    assert_true(eng_capcache_describe(&e, text, sizeof(text)) < ENG_CAPCACHE_DESCRIBE_MAX);
    eng_capcache_free(c);
}

/* ---- the file ---------------------------------------------------------------------------------
 */

static char dir[64];

static int make_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/capcache-test-XXXXXX");
    return mkdtemp(dir) == NULL ? -1 : 0;
}

static int remove_dir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *file_in_dir(const char *name)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return path;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static char *read_file(const char *path)
{
    static char buf[65536];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void entries_equal(const struct eng_capcache_entry *a, const struct eng_capcache_entry *b)
{
    assert_string_equal(a->host, b->host);
    assert_int_equal(a->port, b->port);
    assert_int_equal(a->pass, b->pass);
    assert_int_equal(a->reason, b->reason);
    assert_int_equal(a->starttls_offered, b->starttls_offered);
    assert_int_equal(a->version, b->version);
    assert_int_equal(a->highest_version, b->highest_version);
    assert_int_equal(a->refusals, b->refusals);
    assert_int_equal(a->problems, b->problems);
    assert_int_equal(a->checked_at, b->checked_at);
    assert_int_equal(a->expires_at, b->expires_at);
    assert_string_equal(a->cipher, b->cipher);
    assert_int_equal(a->has_cert, b->has_cert);
    if (a->has_cert) {
        assert_memory_equal(a->sha256, b->sha256, 32);
        assert_int_equal(a->not_after, b->not_after);
    }
}

/* A cache with one entry of each kind, saved to path at T0 + 100. */
static struct eng_capcache *saved_cache(const char *path)
{
    struct eng_capcache *c = cache_new(16, TTL, 0);
    struct tls_verdict p = pass13(), r = old10();
    struct tls_verdict x = verdict(TLS_REASON_CERT_EXPIRED, TLS_VERSION_1_2, "ECDHE-X", true);
    struct tls_verdict n = verdict(TLS_REASON_NO_STARTTLS, 0, "", false);
    struct tls_verdict h = verdict(TLS_REASON_HANDSHAKE_FAILED, 0x7f1c, "", false);
    assert_int_equal(eng_capcache_record(c, "good.example", 25, &p, T0), 0);
    assert_int_equal(eng_capcache_record(c, "old.example", 2525, &r, T0 + 1), 0);
    assert_int_equal(eng_capcache_record(c, "old.example", 2525, &r, T0 + 2), 0);
    assert_int_equal(eng_capcache_record(c, "exp.example", 25, &x, T0 + 3), 0);
    assert_int_equal(eng_capcache_record(c, "[ipv6:2001:db8::1]", 25, &n, T0 + 4), 0);
    assert_int_equal(eng_capcache_record(c, "hs.example", 25, &h, T0 + 5), 0);
    assert_int_equal(eng_capcache_record(c, "gone.example", 25, &h, T0 - TTL), 0); /* expired */
    assert_int_equal(eng_capcache_save(c, path, T0 + 100), 5);
    return c;
}

static void save_load_round_trip(void **state)
{
    (void)state;
    const char *path = file_in_dir("round.cap");
    struct eng_capcache *a = saved_cache(path);
    struct stat st;
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    assert_int_equal(stat(tmp, &st), -1); /* renamed away */
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    const char *text = read_file(path);
    assert_true(strncmp(text, "floormta-capcache 1\n#", 21) == 0);
    assert_non_null(strstr(text, "\nold.example:2525 refuse version_below_floor TLSv1 yes "
                                 "TLSv1 2026-11-23T00:00:02Z 2026-11-23T01:00:02Z 2 0x00000008 "
                                 "ECDHE-RSA-AES128-SHA - - "));
    assert_null(strstr(text, "gone.example"));

    struct eng_capcache *b = cache_new(16, TTL, 0);
    struct eng_capcache_load_result res;
    assert_int_equal(eng_capcache_load(b, path, T0 + 100, NULL, NULL, &res), 0);
    assert_int_equal(res.loaded, 5);
    assert_int_equal(res.malformed + res.expired + res.foreign + res.superseded, 0);
    assert_false(res.bad_header);
    const char *hosts[] = { "good.example", "old.example", "exp.example", "[ipv6:2001:db8::1]",
                            "hs.example" };
    const uint16_t ports[] = { 25, 2525, 25, 25, 25 };
    for (int i = 0; i < 5; i++) {
        struct eng_capcache_entry ea, eb;
        enum eng_capcache_state sa = eng_capcache_check(a, hosts[i], ports[i], T0 + 100, &ea);
        enum eng_capcache_state sb = eng_capcache_check(b, hosts[i], ports[i], T0 + 100, &eb);
        assert_int_equal(sa, sb);
        assert_int_not_equal(sb, ENG_CAPCACHE_UNKNOWN);
        entries_equal(&ea, &eb);
    }
    struct eng_capcache_stats s = stats_of(b);
    assert_int_equal(s.pass_entries, 1);
    assert_int_equal(s.refuse_entries, 4);

    /* The use order survives: saved oldest first, loaded in that order. */
    struct eng_capcache *o = cache_new(16, TTL, 0);
    assert_int_equal(eng_capcache_load(o, path, T0 + 100, NULL, NULL, NULL), 0);
    struct seen seen = { 0 };
    eng_capcache_foreach(o, T0 + 100, collect, &seen);
    assert_int_equal(seen.n, 5);
    assert_string_equal(seen.hosts[0], "hs.example");
    assert_string_equal(seen.hosts[4], "good.example");

    /* Saving the loaded cache gives the same file. */
    char first[4096];
    snprintf(first, sizeof(first), "%s", read_file(path));
    assert_int_equal(eng_capcache_save(o, path, T0 + 100), 5);
    assert_string_equal(read_file(path), first);
    eng_capcache_free(o);
    eng_capcache_free(b);
    eng_capcache_free(a);
}

static void load_drops_expired_and_caps_expiry(void **state)
{
    (void)state;
    const char *path = file_in_dir("expiry.cap");
    eng_capcache_free(saved_cache(path));
    struct eng_capcache *b = cache_new(16, TTL, 0);
    struct eng_capcache_load_result res;
    /* hs.example's handshake_failed entry (transient) expires at T0 + 5 + 900. */
    assert_int_equal(eng_capcache_load(b, path, T0 + 5 + TTL / 4, NULL, NULL, &res), 0);
    assert_int_equal(res.loaded, 4);
    assert_int_equal(res.expired, 1);
    assert_int_equal(eng_capcache_check(b, "hs.example", 25, T0 + 5 + TTL / 4, NULL),
                     ENG_CAPCACHE_UNKNOWN);
    eng_capcache_free(b);

    /* A cache whose TTL is now shorter (or a clock that was wrong at save) caps the
     * expiry at now + ttl. */
    b = cache_new(16, 60, 0);
    assert_int_equal(eng_capcache_load(b, path, T0 + 100, NULL, NULL, &res), 0);
    assert_int_equal(res.loaded, 5);
    struct eng_capcache_entry e;
    assert_int_equal(eng_capcache_check(b, "old.example", 2525, T0 + 100, &e),
                     ENG_CAPCACHE_BLOCKED);
    assert_int_equal(e.expires_at, T0 + 160);
    assert_int_equal(e.checked_at, T0 + 2);
    eng_capcache_free(b);
}

/* CRC-32 (IEEE) written independently of the cache's, to make valid lines by hand. */
static uint32_t crc32_ref(const char *s)
{
    uint32_t crc = 0xffffffffu;
    for (; *s; s++) {
        crc ^= (unsigned char)*s;
        for (int k = 0; k < 8; k++)
            crc = crc & 1 ? (crc >> 1) ^ 0xedb88320u : crc >> 1;
    }
    return ~crc;
}

static void append_line_with_crc(FILE *f, const char *body)
{
    fprintf(f, "%s %08x\n", body, crc32_ref(body));
}

static void load_skips_damaged_lines(void **state)
{
    (void)state;
    const char *path = file_in_dir("garbage.cap");
    eng_capcache_free(saved_cache(path));
    char good[4096];
    snprintf(good, sizeof(good), "%s", read_file(path));

    FILE *f = fopen(path, "a");
    assert_non_null(f);
    fputs("garbage\n\n# a comment\n", f);
    fputs("\x01\x02\xff binary \xfe\n", f);
    for (int i = 0; i < 3000; i++)
        fputc('x', f); /* a line longer than any valid one */
    fputc('\n', f);
    /* Valid checksums, invalid fields. */
    append_line_with_crc(f, "bad.example:25 refuse version_below_floor TLSv1.0 yes TLSv1.0 "
                            "2026-13-23T00:00:00Z 2026-11-23T01:00:00Z 1 0x00000008 - - -");
    append_line_with_crc(f, "bad.example:0 refuse version_below_floor TLSv1.0 yes TLSv1.0 "
                            "2026-11-23T00:00:00Z 2026-11-23T01:00:00Z 1 0x00000008 - - -");
    append_line_with_crc(f, "BAD.example:25 refuse version_below_floor TLSv1.0 yes TLSv1.0 "
                            "2026-11-23T00:00:00Z 2026-11-23T01:00:00Z 1 0x00000008 - - -");
    append_line_with_crc(f, "bad.example:25 pass version_below_floor TLSv1.0 yes TLSv1.0 "
                            "2026-11-23T00:00:00Z 2026-11-23T01:00:00Z 1 0x00000008 - - -");
    append_line_with_crc(f, "bad.example:25 refuse no_such_reason TLSv1.0 yes TLSv1.0 "
                            "2026-11-23T00:00:00Z 2026-11-23T01:00:00Z 1 0x00000008 - - -");
    append_line_with_crc(f, "bad.example:25 refuse version_below_floor TLSv1.0 yes TLSv1.0 "
                            "2026-11-23T00:00:00Z 2026-11-23T01:00:00Z 1 0x00000008 - -");
    append_line_with_crc(f, "bad.example:25 refuse version_below_floor TLSv1.0 yes TLSv1.0 "
                            "2026-11-23T00:00:00Z  2026-11-23T01:00:00Z 1 0x00000008 - - -");
    append_line_with_crc(f, "bad.example:25 refuse version_below_floor TLSv1.0 yes TLSv1.0 "
                            "2026-11-23T00:00:00Z 2026-11-23T01:00:00Z -1 0x00000008 - - -");
    append_line_with_crc(f, "bad.example:25 refuse cert_expired TLSv1.2 yes TLSv1.2 "
                            "2026-11-23T00:00:00Z 2026-11-23T01:00:00Z 1 0x00000008 - 00ff -");
    /* And one valid line written by hand. */
    append_line_with_crc(f, "hand.example:25 refuse weak_key TLSv1.2 yes TLSv1.3 "
                            "2026-11-23T00:00:50Z 2026-11-23T01:00:50Z 3 0x00002000 X - -");
    /* A good line with one byte flipped. */
    char flipped[1024];
    const char *line = strstr(good, "\nold.example") + 1;
    snprintf(flipped, sizeof(flipped), "%.*s", (int)(strchr(line, '\n') - line + 1), line);
    flipped[3] = 'X';
    fputs(flipped, f);
    assert_int_equal(fclose(f), 0);

    struct eng_capcache *b = cache_new(16, TTL, 0);
    struct eng_capcache_load_result res;
    assert_int_equal(eng_capcache_load(b, path, T0 + 100, NULL, NULL, &res), 0);
    assert_int_equal(res.loaded, 6);
    assert_int_equal(res.malformed, 13);
    struct eng_capcache_entry e;
    assert_int_equal(eng_capcache_check(b, "hand.example", 25, T0 + 100, &e), ENG_CAPCACHE_BLOCKED);
    assert_int_equal(e.reason, TLS_REASON_WEAK_KEY);
    assert_int_equal(e.refusals, 3);
    assert_int_equal(e.highest_version, TLS_VERSION_1_3);
    assert_int_equal(eng_capcache_check(b, "bad.example", 25, T0 + 100, NULL),
                     ENG_CAPCACHE_UNKNOWN);
    eng_capcache_free(b);
}

/* A file saved under a clock ahead of ours (found by tests/fuzz/fuzz_capcache.c): the
 * entry is not from the future once loaded, so it keeps expiring after its check and
 * does not win over a newer verdict for the same host. */
static void load_future_checked_time(void **state)
{
    (void)state;
    const char *path = file_in_dir("future.cap");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("floormta-capcache 1\n", f);
    /* checked a month after T0, expiring in 40 years */
    append_line_with_crc(f, "fut.example:25 refuse handshake_failed - yes - "
                            "2026-12-23T00:00:00Z 2066-11-23T00:00:00Z 1 0x00000000 - - -");
    assert_int_equal(fclose(f), 0);
    struct eng_capcache *b = cache_new(16, TTL, 0);
    struct eng_capcache_load_result res;
    assert_int_equal(eng_capcache_load(b, path, T0, NULL, NULL, &res), 0);
    assert_int_equal(res.loaded, 1);
    struct eng_capcache_entry e;
    assert_int_equal(eng_capcache_check(b, "fut.example", 25, T0, &e), ENG_CAPCACHE_BLOCKED);
    assert_int_equal(e.checked_at, T0);
    assert_true(e.expires_at > e.checked_at);
    assert_true(e.expires_at <= T0 + (int64_t)eng_capcache_ttl_for(b, TLS_REASON_HANDSHAKE_FAILED));
    /* A verdict recorded now is not overridden by the file's "future" one. */
    struct tls_verdict p = pass13();
    assert_int_equal(eng_capcache_record(b, "fut.example", 25, &p, T0 + 5), 0);
    assert_int_equal(eng_capcache_load(b, path, T0 + 5, NULL, NULL, &res), 0);
    assert_int_equal(res.superseded, 1);
    assert_int_equal(eng_capcache_check(b, "fut.example", 25, T0 + 5, NULL), ENG_CAPCACHE_PASSED);
    eng_capcache_free(b);
}

static void load_truncated_file(void **state)
{
    (void)state;
    const char *path = file_in_dir("trunc.cap");
    eng_capcache_free(saved_cache(path));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    struct eng_capcache_load_result res;

    /* Only the last newline lost: the line is whole, its checksum says so. */
    assert_int_equal(truncate(path, st.st_size - 1), 0);
    struct eng_capcache *b = cache_new(16, TTL, 0);
    assert_int_equal(eng_capcache_load(b, path, T0 + 100, NULL, NULL, &res), 0);
    assert_int_equal(res.loaded, 5);
    assert_int_equal(res.malformed, 0);
    eng_capcache_free(b);

    /* Cut in the middle of the last line. */
    assert_int_equal(truncate(path, st.st_size - 20), 0);
    b = cache_new(16, TTL, 0);
    assert_int_equal(eng_capcache_load(b, path, T0 + 100, NULL, NULL, &res), 0);
    assert_int_equal(res.loaded, 4);
    assert_int_equal(res.malformed, 1);
    assert_int_equal(eng_capcache_check(b, "hs.example", 25, T0 + 100, NULL), ENG_CAPCACHE_UNKNOWN);
    eng_capcache_free(b);

    /* Cut inside the header. */
    assert_int_equal(truncate(path, 10), 0);
    b = cache_new(16, TTL, 0);
    assert_int_equal(eng_capcache_load(b, path, T0 + 100, NULL, NULL, &res), 0);
    assert_true(res.bad_header);
    assert_int_equal(res.loaded, 0);
    eng_capcache_free(b);
}

static void load_empty_missing_and_foreign_files(void **state)
{
    (void)state;
    struct eng_capcache *b = cache_new(16, TTL, 0);
    struct eng_capcache_load_result res;

    assert_int_equal(eng_capcache_load(b, file_in_dir("missing.cap"), T0, NULL, NULL, &res), 0);
    assert_int_equal(res.loaded, 0);
    assert_false(res.bad_header);

    write_file(file_in_dir("empty.cap"), "");
    assert_int_equal(eng_capcache_load(b, file_in_dir("empty.cap"), T0, NULL, NULL, &res), 0);
    assert_int_equal(res.loaded + res.malformed, 0);
    assert_false(res.bad_header);

    write_file(file_in_dir("header.cap"), "floormta-capcache 1\n");
    assert_int_equal(eng_capcache_load(b, file_in_dir("header.cap"), T0, NULL, NULL, &res), 0);
    assert_int_equal(res.loaded + res.malformed, 0);

    write_file(file_in_dir("v2.cap"), "floormta-capcache 2\nwhatever\n");
    assert_int_equal(eng_capcache_load(b, file_in_dir("v2.cap"), T0, NULL, NULL, &res), 0);
    assert_true(res.bad_header);

    write_file(file_in_dir("text.cap"), "Lorem ipsum dolor sit amet\n");
    assert_int_equal(eng_capcache_load(b, file_in_dir("text.cap"), T0, NULL, NULL, &res), 0);
    assert_true(res.bad_header);

    /* A directory cannot be read as a file. */
    assert_true(eng_capcache_load(b, dir, T0, NULL, NULL, &res) < 0);
    assert_int_equal(stats_of(b).entries, 0);

    /* Saving where no directory exists fails and leaves nothing behind. */
    assert_int_equal(eng_capcache_save(b, "/nonexistent-dir/x.cap", T0), -ENOENT);
    eng_capcache_free(b);
}

static bool only_port_25(void *arg, const char *host, uint16_t port)
{
    (*(int *)arg)++;
    (void)host;
    return port == 25;
}

static void load_filter_and_newer_entries(void **state)
{
    (void)state;
    const char *path = file_in_dir("filter.cap");
    eng_capcache_free(saved_cache(path));
    struct eng_capcache *b = cache_new(16, TTL, 0);
    struct eng_capcache_load_result res;
    int calls = 0;
    /* The cache already holds a newer verdict for good.example. */
    struct tls_verdict r = old10();
    assert_int_equal(eng_capcache_record(b, "good.example", 25, &r, T0 + 50), 0);
    assert_int_equal(eng_capcache_load(b, path, T0 + 100, only_port_25, &calls, &res), 0);
    assert_int_equal(calls, 5);
    assert_int_equal(res.foreign, 1); /* old.example:2525 */
    assert_int_equal(res.superseded, 1);
    assert_int_equal(res.loaded, 3);
    assert_int_equal(eng_capcache_check(b, "good.example", 25, T0 + 100, NULL),
                     ENG_CAPCACHE_BLOCKED);
    assert_int_equal(eng_capcache_check(b, "old.example", 2525, T0 + 100, NULL),
                     ENG_CAPCACHE_UNKNOWN);
    eng_capcache_free(b);

    /* A small cache keeps the most recently used of a bigger file. */
    b = cache_new(2, TTL, 0);
    assert_int_equal(eng_capcache_load(b, path, T0 + 100, NULL, NULL, &res), 0);
    assert_int_equal(res.loaded, 5);
    assert_int_equal(stats_of(b).entries, 2);
    assert_int_equal(eng_capcache_check(b, "hs.example", 25, T0 + 100, NULL), ENG_CAPCACHE_BLOCKED);
    eng_capcache_free(b);
}

/* ---- scale --------------------------------------------------------------------------------------
 */

#define MANY 100000

static void many_hosts_without_allocation(void **state)
{
    (void)state;
    struct eng_capcache *c = cache_new(MANY, TTL, 0);
    struct eng_capcache *small = cache_new(MANY / 10, TTL, 0);
    struct tls_verdict r = old10(), p = pass13();
    char name[64];
    uint64_t before = 0, after = 0;
    bool counted = alloc_counter(&before);
    for (int i = 0; i < MANY; i++) {
        snprintf(name, sizeof(name), "mx%d.example%d.net", i, i % 97);
        if (eng_capcache_record(c, name, 25, i % 2 ? &r : &p, T0) != 0 ||
            eng_capcache_record(small, name, 25, &r, T0) != 0)
            fail_msg("record %d failed", i);
    }
    int blocked = 0, passed = 0, small_hits = 0;
    struct eng_capcache_entry e;
    for (int i = 0; i < MANY; i++) {
        snprintf(name, sizeof(name), "MX%d.example%d.net.", i, i % 97);
        enum eng_capcache_state s = eng_capcache_check(c, name, 25, T0 + 1, &e);
        blocked += s == ENG_CAPCACHE_BLOCKED;
        passed += s == ENG_CAPCACHE_PASSED;
        small_hits += eng_capcache_check(small, name, 25, T0 + 1, NULL) != ENG_CAPCACHE_UNKNOWN;
    }
    if (counted) {
        assert_true(alloc_counter(&after));
        assert_int_equal(after, before);
    } else {
        print_message("no allocation counter in this build: pool size checked only\n");
    }
    assert_int_equal(blocked, MANY / 2);
    assert_int_equal(passed, MANY / 2);
    struct eng_capcache_stats s = stats_of(c);
    assert_int_equal(s.entries, MANY);
    assert_int_equal(s.evictions, 0);
    s = stats_of(small);
    assert_int_equal(s.entries, MANY / 10);
    assert_int_equal(s.capacity, MANY / 10);
    assert_int_equal(s.evictions, MANY - MANY / 10);
    /* Checked in the order recorded: the last tenth is what the small cache holds. */
    assert_int_equal(small_hits, MANY / 10);

    const char *path = file_in_dir("many.cap");
    assert_int_equal(eng_capcache_save(c, path, T0 + 1), MANY);
    struct eng_capcache *b = cache_new(MANY, TTL, 0);
    struct eng_capcache_load_result res;
    assert_int_equal(eng_capcache_load(b, path, T0 + 1, NULL, NULL, &res), 0);
    assert_int_equal(res.loaded, MANY);
    assert_int_equal(res.malformed, 0);
    eng_capcache_free(b);
    eng_capcache_free(small);
    eng_capcache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(refusal_blocks_until_exactly_ttl),
        cmocka_unit_test(transient_refusals_block_for_less),
        cmocka_unit_test(pass_never_blocks_and_raises_highest),
        cmocka_unit_test(pass_after_expired_refusal_replaces_it),
        cmocka_unit_test(only_verdicts_are_recordable),
        cmocka_unit_test(names_are_normalised_and_ports_distinct),
        cmocka_unit_test(lru_bound_and_eviction_counts),
        cmocka_unit_test(forget_one_port_or_all),
        cmocka_unit_test(foreach_sees_every_live_entry),
        cmocka_unit_test(describe_names_reason_version_and_times),
        cmocka_unit_test(save_load_round_trip),
        cmocka_unit_test(load_drops_expired_and_caps_expiry),
        cmocka_unit_test(load_skips_damaged_lines),
        cmocka_unit_test(load_future_checked_time),
        cmocka_unit_test(load_truncated_file),
        cmocka_unit_test(load_empty_missing_and_foreign_files),
        cmocka_unit_test(load_filter_and_newer_entries),
        cmocka_unit_test(many_hosts_without_allocation),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
