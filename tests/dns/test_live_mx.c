/*
 * tests/dns/test_live_mx.c — MX resolution through the io_uring loop (engine/dns_loop.h)
 * against a real dnsmasq on 127.0.0.1: preferences, equal preferences shuffled, null MX
 * (and no address query made), implicit MX, NXDOMAIN, CNAME'd and address-less and
 * literal MX targets, TTLs and cache expiry, SERVFAIL and REFUSED, an unreachable
 * server, coalescing (one query for 100 lookups), and the loop's side of the binding:
 * cache hits delivered from the next iteration, no handle left open when idle, a
 * resolver freed with lookups pending or from inside a callback.
 * Exits 77 when io_uring is not available; dnsmasq missing is a failure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dns/dns.h"
#include "engine/dns_loop.h"
#include "engine/loop.h"
#include "tests/dns/dnsmasq_fixture.h"

static struct dnsq Q;
static struct eng_loop *L;

/* ---- helpers ------------------------------------------------------------------------------ */

struct lk {
    int calls;
    struct dns_mx_result res;
};

static void lk_cb(void *arg, const struct dns_mx_result *r)
{
    struct lk *k = arg;
    k->calls++;
    k->res = *r;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct eng_dns *dns_with(const char *servers, unsigned timeout_ms, unsigned tries,
                                uint32_t ttl_min)
{
    struct dns_config cfg = {
        .servers = servers,
        .timeout_ms = timeout_ms,
        .tries = tries,
        .ttl_min = ttl_min,
    };
    struct eng_dns *d = NULL;
    assert_int_equal(eng_dns_new(L, &cfg, &d), 0);
    return d;
}

static struct eng_dns *dns_new(void)
{
    return dns_with(Q.server, 1000, 2, 1);
}

/* Runs the loop until *calls reaches want (at most 10 s). */
static void wait_calls(const int *calls, int want)
{
    uint64_t end = now_ms() + 10000;
    while (*calls < want && now_ms() < end)
        assert_true(eng_loop_run_once(L, 50) >= 0);
    assert_int_equal(*calls, want);
}

/* Runs the loop until every handle is released (at most 2 s); asserts none is left. */
static void drain(void)
{
    struct eng_loop_stats st;
    uint64_t end = now_ms() + 2000;
    do {
        assert_true(eng_loop_run_once(L, 10) >= 0);
        eng_loop_stats(L, &st);
    } while (st.handles > 0 && now_ms() < end);
    assert_int_equal(st.handles, 0);
}

static void dns_done(struct eng_dns *d)
{
    eng_dns_free(d);
    drain();
}

static void lookup(struct eng_dns *d, const char *domain, struct lk *k)
{
    memset(k, 0, sizeof(*k));
    assert_int_equal(eng_dns_lookup_mx(d, domain, lk_cb, k), 0);
    assert_int_equal(k->calls, 0); /* never from inside the call */
    wait_calls(&k->calls, 1);
}

static const char *addr4(const struct dns_mx_host *h, unsigned i, char *buf)
{
    assert_true(i < h->naddrs);
    return dns_addr_format(&h->addrs[i], buf, INET6_ADDRSTRLEN);
}

static int count(const char *what, const char *domain)
{
    char needle[300];
    snprintf(needle, sizeof(needle), "query[%s] %s from", what, domain);
    int n = dnsq_count(&Q, needle);
    assert_true(n >= 0);
    return n;
}

/* ---- answers ---------------------------------------------------------------------------- */

static void test_preferences(void **state)
{
    (void)state;
    struct eng_dns *d = dns_new();
    struct lk k;
    char a[INET6_ADDRSTRLEN];
    lookup(d, "multi.test", &k);
    assert_int_equal(k.res.outcome, DNS_OUTCOME_OK);
    assert_int_equal(k.res.reason, DNS_REASON_NONE);
    assert_false(k.res.implicit_mx);
    assert_false(k.res.cached);
    assert_int_equal(k.res.nhosts, 3);
    assert_int_equal(k.res.hosts[0].pref, 10);
    assert_string_equal(k.res.hosts[0].name, "mx1.multi.test");
    assert_string_equal(addr4(&k.res.hosts[0], 0, a), "127.0.0.11");
    assert_int_equal(k.res.hosts[1].pref, 20);
    assert_string_equal(k.res.hosts[1].name, "mx2.multi.test");
    assert_string_equal(addr4(&k.res.hosts[1], 0, a), "127.0.0.12");
    assert_int_equal(k.res.hosts[2].pref, 30);
    assert_string_equal(addr4(&k.res.hosts[2], 0, a), "127.0.0.13");
    /* Every record in the zone has --local-ttl=300. */
    assert_int_equal(k.res.ttl, 300);
    /* One MX query, and one per address family per host. */
    assert_int_equal(count("MX", "multi.test"), 1);
    assert_int_equal(count("A", "mx1.multi.test"), 1);
    assert_int_equal(count("AAAA", "mx3.multi.test"), 1);
    /* Idle: no handle left open, even before the resolver is freed. */
    drain();
    dns_done(d);
}

/* Index of an order of the three equal-preference hosts a, b, c (0..5). */
static int order_of(const struct dns_mx_result *r)
{
    assert_int_equal(r->nhosts, 4);
    for (int i = 0; i < 3; i++)
        assert_int_equal(r->hosts[i].pref, 10);
    assert_int_equal(r->hosts[3].pref, 20); /* never shuffled across preferences */
    assert_string_equal(r->hosts[3].name, "z.eq.test");
    int idx = 0;
    for (int i = 0; i < 3; i++)
        idx = idx * 3 + (r->hosts[i].name[0] - 'a');
    static const int codes[6] = { 0 * 9 + 1 * 3 + 2, 0 * 9 + 2 * 3 + 1, 1 * 9 + 0 * 3 + 2,
                                  1 * 9 + 2 * 3 + 0, 2 * 9 + 0 * 3 + 1, 2 * 9 + 1 * 3 + 0 };
    for (int i = 0; i < 6; i++)
        if (codes[i] == idx)
            return i;
    fail_msg("not a permutation of a, b, c");
    return -1;
}

static void test_equal_preferences_shuffled(void **state)
{
    (void)state;
    int seen[6] = { 0 };
    /* Uncached: a fresh resolver per lookup, so each order comes from a real answer.
     * 120 lookups miss one of 6 orders with probability 6 * (5/6)^120 < 1e-8. */
    for (int i = 0; i < 120; i++) {
        struct eng_dns *d = dns_new();
        struct lk k;
        lookup(d, "eq.test", &k);
        assert_false(k.res.cached);
        seen[order_of(&k.res)]++;
        dns_done(d);
    }
    for (int i = 0; i < 6; i++)
        assert_true(seen[i] > 0);
    /* Cached: the same entry, shuffled afresh on every hit. */
    memset(seen, 0, sizeof(seen));
    struct eng_dns *d = dns_new();
    struct lk k;
    lookup(d, "eq.test", &k);
    int before = count("MX", "eq.test");
    for (int i = 0; i < 120; i++) {
        lookup(d, "eq.test", &k);
        assert_true(k.res.cached);
        seen[order_of(&k.res)]++;
    }
    assert_int_equal(count("MX", "eq.test"), before);
    for (int i = 0; i < 6; i++)
        assert_true(seen[i] > 0);
    dns_done(d);
}

static void test_null_mx(void **state)
{
    (void)state;
    struct eng_dns *d = dns_new();
    struct lk k;
    lookup(d, "nullmx.test", &k);
    assert_int_equal(k.res.outcome, DNS_OUTCOME_NULLMX);
    assert_int_equal(k.res.reason, DNS_REASON_NULL_MX);
    assert_int_equal(k.res.nhosts, 0);
    assert_int_equal(count("MX", "nullmx.test"), 1);
    /* The name has an A record; a null MX means it must never be asked for. */
    assert_int_equal(count("A", "nullmx.test"), 0);
    assert_int_equal(count("AAAA", "nullmx.test"), 0);
    dns_done(d);
}

static void test_implicit_mx(void **state)
{
    (void)state;
    struct eng_dns *d = dns_new();
    struct lk k;
    char a[INET6_ADDRSTRLEN];
    lookup(d, "aonly.test", &k);
    assert_int_equal(k.res.outcome, DNS_OUTCOME_OK);
    assert_true(k.res.implicit_mx);
    assert_int_equal(k.res.nhosts, 1);
    assert_int_equal(k.res.hosts[0].pref, 0);
    assert_string_equal(k.res.hosts[0].name, "aonly.test");
    assert_string_equal(addr4(&k.res.hosts[0], 0, a), "127.0.0.20");
    dns_done(d);
}

static void test_nxdomain(void **state)
{
    (void)state;
    struct eng_dns *d = dns_new();
    struct lk k;
    lookup(d, "nx.test", &k);
    assert_int_equal(k.res.outcome, DNS_OUTCOME_PERMFAIL);
    assert_int_equal(k.res.reason, DNS_REASON_NXDOMAIN);
    assert_false(k.res.implicit_mx);
    assert_int_equal(count("A", "nx.test"), 0);
    dns_done(d);
}

static void test_cname_target(void **state)
{
    (void)state;
    struct eng_dns *d = dns_new();
    struct lk k;
    char a[INET6_ADDRSTRLEN];
    lookup(d, "cn.test", &k);
    assert_int_equal(k.res.outcome, DNS_OUTCOME_OK);
    assert_int_equal(k.res.nhosts, 1);
    assert_int_equal(k.res.hosts[0].naddrs, 1);
    assert_string_equal(addr4(&k.res.hosts[0], 0, a), "127.0.0.11");
    dns_done(d);
}

static void test_targets_skipped(void **state)
{
    (void)state;
    struct eng_dns *d = dns_new();
    struct lk k;
    char a[INET6_ADDRSTRLEN];
    /* An MX target without any address is left out, the next one is used. */
    lookup(d, "partial.test", &k);
    assert_int_equal(k.res.outcome, DNS_OUTCOME_OK);
    assert_int_equal(k.res.nhosts, 1);
    assert_int_equal(k.res.skipped, 1);
    assert_string_equal(k.res.hosts[0].name, "mx2.multi.test");
    assert_string_equal(addr4(&k.res.hosts[0], 0, a), "127.0.0.12");
    /* The only MX without an address: permanent, and no implicit MX. */
    lookup(d, "dead.test", &k);
    assert_int_equal(k.res.outcome, DNS_OUTCOME_PERMFAIL);
    assert_int_equal(k.res.reason, DNS_REASON_NO_ADDRESS);
    assert_false(k.res.implicit_mx);
    assert_int_equal(count("A", "dead.test"), 0);
    /* An address literal as the MX target is not a host name: skipped, never
     * queried, never connected to. */
    lookup(d, "lit.test", &k);
    assert_int_equal(k.res.outcome, DNS_OUTCOME_OK);
    assert_int_equal(k.res.nhosts, 1);
    assert_int_equal(k.res.skipped, 1);
    assert_string_equal(k.res.hosts[0].name, "mx1.multi.test");
    assert_int_equal(count("A", "127.0.0.9"), 0);
    dns_done(d);
}

/* ---- TTLs and the cache -------------------------------------------------------------------- */

static void test_ttl_and_expiry(void **state)
{
    (void)state;
    struct eng_dns *d = dns_new(); /* ttl_min 1 */
    struct lk k;
    struct dns_stats st;
    lookup(d, "short.test", &k);
    assert_int_equal(k.res.outcome, DNS_OUTCOME_OK);
    assert_false(k.res.cached);
    /* The MX record says 300, the target's A record 2: the answer lives 2 s. */
    assert_int_equal(k.res.ttl, 2);
    assert_int_equal(count("MX", "short.test"), 1);
    /* Within the TTL: a hit, delivered from the loop, no query. */
    lookup(d, "short.test", &k);
    assert_true(k.res.cached);
    assert_int_equal(count("MX", "short.test"), 1);
    dns_resolver_stats(eng_dns_resolver(d), &st);
    uint64_t expired = st.cache_expired;
    /* After it: a miss that queries again. */
    usleep(2300 * 1000);
    lookup(d, "short.test", &k);
    assert_false(k.res.cached);
    assert_int_equal(k.res.outcome, DNS_OUTCOME_OK);
    assert_int_equal(count("MX", "short.test"), 2);
    dns_resolver_stats(eng_dns_resolver(d), &st);
    assert_true(st.cache_expired > expired);
    dns_done(d);
}

/* A cache hit is never delivered inside eng_dns_lookup_mx, and if it expires before
 * the loop gets to it, the lookup goes to the network instead. */
static void test_hit_expired_before_delivery(void **state)
{
    (void)state;
    struct eng_dns *d = dns_new();
    struct lk k;
    lookup(d, "short.test", &k);
    int before = count("MX", "short.test");
    memset(&k, 0, sizeof(k));
    assert_int_equal(eng_dns_lookup_mx(d, "short.test", lk_cb, &k), 0); /* a hit */
    assert_int_equal(k.calls, 0);
    usleep(2300 * 1000); /* expires before the loop runs again */
    wait_calls(&k.calls, 1);
    assert_int_equal(k.res.outcome, DNS_OUTCOME_OK);
    assert_false(k.res.cached);
    assert_int_equal(count("MX", "short.test"), before + 1);
    dns_done(d);
}

/* ---- failures ---------------------------------------------------------------------------- */

static void test_servfail(void **state)
{
    (void)state;
    struct eng_dns *d = dns_new();
    struct lk k;
    lookup(d, "x.fail.test", &k);
    assert_int_equal(k.res.outcome, DNS_OUTCOME_TEMPFAIL);
    assert_int_equal(k.res.reason, DNS_REASON_SERVFAIL);
    assert_false(k.res.implicit_mx);
    assert_int_equal(k.res.nhosts, 0);
    /* Never an implicit MX: no address query for the domain. */
    assert_int_equal(count("A", "x.fail.test"), 0);
    dns_done(d);
}

static void test_refused(void **state)
{
    (void)state;
    struct eng_dns *d = dns_new();
    struct lk k;
    lookup(d, "x.refused.test", &k);
    assert_int_equal(k.res.outcome, DNS_OUTCOME_TEMPFAIL);
    assert_int_equal(k.res.reason, DNS_REASON_REFUSED);
    assert_false(k.res.implicit_mx);
    dns_done(d);
}

static void test_unreachable_server_times_out(void **state)
{
    (void)state;
    /* A socket that is bound, so nothing answers with port-unreachable, and never
     * read: the queries simply vanish. */
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char server[64];
    snprintf(server, sizeof(server), "127.0.0.1:%u", ntohs(sa.sin_port));
    struct eng_dns *d = dns_with(server, 200, 2, 1);
    struct lk k;
    uint64_t t0 = now_ms();
    lookup(d, "multi.test", &k);
    uint64_t took = now_ms() - t0;
    assert_int_equal(k.res.outcome, DNS_OUTCOME_TEMPFAIL);
    assert_int_equal(k.res.reason, DNS_REASON_TIMEOUT);
    assert_false(k.res.implicit_mx);
    assert_true(took >= 300 && took < 2000);
    dns_done(d);
    close(fd);
}

/* ---- concurrency --------------------------------------------------------------------------- */

static void test_coalescing(void **state)
{
    (void)state;
    struct eng_dns *d = dns_new();
    enum { N = 100 };
    static struct lk ks[N];
    memset(ks, 0, sizeof(ks));
    int calls = 0;
    for (int i = 0; i < N; i++)
        assert_int_equal(eng_dns_lookup_mx(d, "coal.test", lk_cb, &ks[i]), 0);
    uint64_t end = now_ms() + 10000;
    for (;;) {
        calls = 0;
        for (int i = 0; i < N; i++)
            calls += ks[i].calls;
        if (calls == N || now_ms() > end)
            break;
        assert_true(eng_loop_run_once(L, 50) >= 0);
    }
    assert_int_equal(calls, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(ks[i].calls, 1);
        assert_int_equal(ks[i].res.outcome, DNS_OUTCOME_OK);
        assert_string_equal(ks[i].res.hosts[0].name, "mx1.multi.test");
    }
    assert_int_equal(count("MX", "coal.test"), 1);
    struct dns_stats st;
    dns_resolver_stats(eng_dns_resolver(d), &st);
    /* Beyond the binding's window (64), the rest wait and, by their turn, find the
     * answer cached: either way one lookup went to the network. */
    assert_int_equal(st.coalesced + st.cache_hits, N - 1);
    assert_int_equal(st.inflight, 0);
    dns_done(d);
}

/* Lookups one after the other, each started once the previous one is answered and
 * c-ares has closed its socket: the new socket usually gets the same fd number, and
 * the old poll's late cancellation must not be taken for the new socket's. */
static void test_sequential_sockets(void **state)
{
    (void)state;
    struct eng_dns *d = dns_new();
    static const char *const names[] = { "multi.test", "partial.test", "aonly.test" };
    struct eng_loop_stats st;
    for (int i = 0; i < 30; i++) {
        struct lk k;
        /* Three domains, then a fresh resolver (an empty cache) for the next three. */
        lookup(d, names[i % 3], &k);
        assert_int_equal(k.res.outcome, DNS_OUTCOME_OK);
        assert_false(k.res.cached);
        drain();
        if (i % 3 == 2) {
            dns_done(d);
            d = dns_new();
        }
    }
    dns_done(d);
    eng_loop_stats(L, &st);
    assert_int_equal(st.handles, 0);
}

/* ---- the binding's lifetime --------------------------------------------------------------- */

static void test_free_with_pending(void **state)
{
    (void)state;
    struct eng_dns *d = dns_new();
    struct lk miss, hit;
    lookup(d, "multi.test", &hit); /* now cached */
    memset(&miss, 0, sizeof(miss));
    memset(&hit, 0, sizeof(hit));
    assert_int_equal(eng_dns_lookup_mx(d, "cn.test", lk_cb, &miss), 0);
    assert_int_equal(eng_dns_lookup_mx(d, "multi.test", lk_cb, &hit), 0);
    eng_dns_free(d);
    /* Both answered, once each, from the free itself. */
    assert_int_equal(miss.calls, 1);
    assert_int_equal(miss.res.outcome, DNS_OUTCOME_TEMPFAIL);
    assert_int_equal(miss.res.reason, DNS_REASON_SHUTDOWN);
    assert_int_equal(hit.calls, 1);
    assert_int_equal(hit.res.reason, DNS_REASON_SHUTDOWN);
    drain();
}

struct freer {
    struct eng_dns *d;
    int calls;
    int after_free_rc;
};

static void freer_cb(void *arg, const struct dns_mx_result *r)
{
    struct freer *f = arg;
    (void)r;
    if (f->calls++ == 0) {
        eng_dns_free(f->d);
        f->after_free_rc = eng_dns_lookup_mx(f->d, "multi.test", freer_cb, f);
    }
}

static void test_free_from_callback(void **state)
{
    (void)state;
    struct freer f = { .d = dns_new() };
    struct lk other = { 0 };
    assert_int_equal(eng_dns_lookup_mx(f.d, "multi.test", freer_cb, &f), 0);
    assert_int_equal(eng_dns_lookup_mx(f.d, "partial.test", lk_cb, &other), 0);
    wait_calls(&f.calls, 1);
    assert_int_equal(f.after_free_rc, DNS_ERR_CLOSING);
    wait_calls(&other.calls, 1); /* answered (or shut down), exactly once */
    drain();
}

static void test_bad_names(void **state)
{
    (void)state;
    struct eng_dns *d = dns_new();
    struct lk k = { 0 };
    assert_int_equal(eng_dns_lookup_mx(d, "", lk_cb, &k), DNS_ERR_NAME);
    assert_int_equal(eng_dns_lookup_mx(d, "192.0.2.1", lk_cb, &k), DNS_ERR_NAME);
    assert_int_equal(eng_dns_lookup_mx(d, "bad..name.test", lk_cb, &k), DNS_ERR_NAME);
    assert_int_equal(k.calls, 0);
    dns_done(d);
}

/* ---- set-up --------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (dnsq_init(&Q) < 0)
        return -1;
    uint16_t sf = dnsq_servfail_port(&Q);
    if (sf == 0)
        return -1;
    char zone[4096];
    snprintf(zone, sizeof(zone),
             "local-ttl=300\n"
             "mx-host=multi.test,mx3.multi.test,30\n"
             "mx-host=multi.test,mx1.multi.test,10\n"
             "mx-host=multi.test,mx2.multi.test,20\n"
             "host-record=mx1.multi.test,127.0.0.11\n"
             "host-record=mx2.multi.test,127.0.0.12\n"
             "host-record=mx3.multi.test,127.0.0.13\n"
             "mx-host=eq.test,a.eq.test,10\n"
             "mx-host=eq.test,b.eq.test,10\n"
             "mx-host=eq.test,c.eq.test,10\n"
             "mx-host=eq.test,z.eq.test,20\n"
             "host-record=a.eq.test,127.0.1.1\n"
             "host-record=b.eq.test,127.0.1.2\n"
             "host-record=c.eq.test,127.0.1.3\n"
             "host-record=z.eq.test,127.0.1.26\n"
             "dns-rr=nullmx.test,15,000000\n"
             "host-record=nullmx.test,127.0.0.66\n"
             "host-record=aonly.test,127.0.0.20\n"
             "cname=alias.test,mx1.multi.test\n"
             "mx-host=cn.test,alias.test,10\n"
             "mx-host=partial.test,noaddr.partial.test,10\n"
             "mx-host=partial.test,mx2.multi.test,20\n"
             "mx-host=dead.test,noaddr.dead.test,10\n"
             "mx-host=lit.test,127.0.0.9,10\n"
             "mx-host=lit.test,mx1.multi.test,20\n"
             "mx-host=short.test,mx.short.test,10\n"
             "host-record=mx.short.test,127.0.0.30,2\n"
             "mx-host=coal.test,mx1.multi.test,10\n"
             "server=/fail.test/127.0.0.1#%u\n"
             "server=/refused.test/#\n",
             sf);
    if (dnsq_start(&Q, zone) < 0) {
        dnsq_stop(&Q);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    dnsq_stop(&Q);
    return 0;
}

int main(void)
{
    int rc = eng_loop_new(NULL, &L);
    if (rc == ENG_ERR_URING) {
        printf("1..0 # SKIP io_uring is not available\n");
        return 77;
    }
    if (rc < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_preferences),
        cmocka_unit_test(test_equal_preferences_shuffled),
        cmocka_unit_test(test_null_mx),
        cmocka_unit_test(test_implicit_mx),
        cmocka_unit_test(test_nxdomain),
        cmocka_unit_test(test_cname_target),
        cmocka_unit_test(test_targets_skipped),
        cmocka_unit_test(test_ttl_and_expiry),
        cmocka_unit_test(test_hit_expired_before_delivery),
        cmocka_unit_test(test_servfail),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_unreachable_server_times_out),
        cmocka_unit_test(test_coalescing),
        cmocka_unit_test(test_sequential_sockets),
        cmocka_unit_test(test_free_with_pending),
        cmocka_unit_test(test_free_from_callback),
        cmocka_unit_test(test_bad_names),
    };
    rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
    eng_loop_free(L);
    return rc == 0 ? 0 : 1;
}
