/*
 * tests/dns/test_cache.c — the resolver's cache: a hit is a copy with cached = true,
 * the seconds left and a fresh shuffle; expiry; the LRU bound; negative entries (NXDOMAIN,
 * null MX) kept and temporary failures refused; the stats counters; the TTL clamp. The
 * cache takes its time as an argument and the resolver's clock is replaceable, so
 * nothing here sleeps; no query is ever sent (the resolver is pointed at a port nobody
 * answers and never asked).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "dns/dns_int.h"

static void add_host(struct dns_mx_result *res, uint16_t pref, const char *name, unsigned naddrs)
{
    struct dns_addr addrs[DNS_ADDRS_MAX];
    memset(addrs, 0, sizeof(addrs));
    for (unsigned i = 0; i < naddrs; i++) {
        addrs[i].family = i % 2 ? AF_INET : AF_INET6;
        if (i % 2)
            addrs[i].v4.s_addr = htonl(0xC0000200 + res->nhosts * 16 + i);
        else
            addrs[i].v6.s6_addr[15] = (uint8_t)(res->nhosts * 16 + i);
    }
    dns_host_set(&res->hosts[res->nhosts++], pref, name, strlen(name), addrs, naddrs);
}

static void ok_result(struct dns_mx_result *res, const char *domain, uint32_t ttl)
{
    memset(res, 0, sizeof(*res));
    res->outcome = DNS_OUTCOME_OK;
    res->ttl = ttl;
    snprintf(res->domain, sizeof(res->domain), "%s", domain);
    add_host(res, 10, "a.mx.test", 2);
    add_host(res, 10, "b.mx.test", 1);
    add_host(res, 10, "c.mx.test", 3);
    add_host(res, 20, "backup.mx.test", 1);
    res->skipped = 1;
}

static void test_hit_copies(void **state)
{
    (void)state;
    struct dns_cache *c;
    struct dns_rng rng;
    dns_rng_init(&rng);
    assert_int_equal(dns_cache_new(16, &c), 0);
    struct dns_mx_result in, out;
    ok_result(&in, "example.test", 300);
    assert_int_equal(dns_cache_put(c, &in, 1000000), 0);

    assert_int_equal(dns_cache_get(c, "other.test", 1000000, 16, &rng, &out), -ENOENT);
    assert_int_equal(dns_cache_get(c, "example.test", 1000000 + 500, 16, &rng, &out), 0);
    assert_true(out.cached);
    assert_int_equal(out.outcome, DNS_OUTCOME_OK);
    assert_int_equal(out.ttl, 300); /* 299.5 s left, rounded up */
    assert_int_equal(out.nhosts, 4);
    assert_int_equal(out.skipped, 1);
    assert_string_equal(out.domain, "example.test");
    assert_string_equal(out.hosts[3].name, "backup.mx.test");
    assert_int_equal(out.hosts[3].naddrs, 1);
    /* Each host keeps its own addresses, whatever the order. */
    for (int i = 0; i < 3; i++) {
        const struct dns_mx_host *h = &out.hosts[i];
        unsigned expect = h->name[0] == 'a' ? 2 : h->name[0] == 'b' ? 1 : 3;
        unsigned base = (unsigned)(h->name[0] - 'a') * 16;
        assert_int_equal(h->naddrs, expect);
        assert_int_equal(h->addrs[0].family, AF_INET6);
        assert_int_equal(h->addrs[0].v6.s6_addr[15], base);
        if (expect > 1)
            assert_int_equal(ntohl(h->addrs[1].v4.s_addr), 0xC0000200 + base + 1);
    }

    /* A fresh shuffle per hit: all six orders of the three pref-10 hosts in 600. */
    bool seen[3][3][3] = { { { false } } };
    for (int i = 0; i < 600; i++) {
        assert_int_equal(dns_cache_get(c, "example.test", 1000000 + 1000, 16, &rng, &out), 0);
        assert_int_equal(out.hosts[3].pref, 20);
        seen[out.hosts[0].name[0] - 'a'][out.hosts[1].name[0] - 'a'][out.hosts[2].name[0] - 'a'] =
                true;
    }
    unsigned perms = 0;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int d = 0; d < 3; d++)
                perms += seen[a][b][d];
    assert_int_equal(perms, 6);

    /* max_hosts cuts after the shuffle and counts the rest as skipped. */
    assert_int_equal(dns_cache_get(c, "example.test", 1000000, 2, &rng, &out), 0);
    assert_int_equal(out.nhosts, 2);
    assert_int_equal(out.skipped, 1 + 2);
    dns_cache_free(c);
}

static void test_expiry(void **state)
{
    (void)state;
    struct dns_cache *c;
    struct dns_rng rng;
    dns_rng_seed(&rng, 3);
    struct dns_cache_stats st;
    assert_int_equal(dns_cache_new(16, &c), 0);
    struct dns_mx_result in, out;
    ok_result(&in, "short.test", 60);
    assert_int_equal(dns_cache_put(c, &in, 5000), 0);
    assert_int_equal(dns_cache_get(c, "short.test", 5000 + 59999, 16, &rng, &out), 0);
    assert_int_equal(out.ttl, 1);
    assert_int_equal(dns_cache_get(c, "short.test", 5000 + 60000, 16, &rng, &out), -ENOENT);
    dns_cache_stats(c, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.entries, 0);
    /* Gone for good, not just hidden. */
    assert_int_equal(dns_cache_get(c, "short.test", 0, 16, &rng, &out), -ENOENT);
    dns_cache_stats(c, &st);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.misses, 2);
    dns_cache_free(c);
}

static void test_lru_bound(void **state)
{
    (void)state;
    struct dns_cache *c;
    struct dns_rng rng;
    dns_rng_seed(&rng, 4);
    struct dns_cache_stats st;
    struct dns_mx_result in, out;
    assert_int_equal(dns_cache_new(3, &c), 0);
    const char *names[] = { "a.test", "b.test", "c.test" };
    for (int i = 0; i < 3; i++) {
        ok_result(&in, names[i], 600);
        assert_int_equal(dns_cache_put(c, &in, 0), 0);
    }
    assert_int_equal(dns_cache_get(c, "a.test", 1, 16, &rng, &out), 0); /* a: most recent */
    ok_result(&in, "d.test", 600);
    assert_int_equal(dns_cache_put(c, &in, 2), 0); /* evicts b, the least recent */
    dns_cache_stats(c, &st);
    assert_int_equal(st.entries, 3);
    assert_int_equal(st.evicted, 1);
    assert_int_equal(dns_cache_get(c, "b.test", 3, 16, &rng, &out), -ENOENT);
    assert_int_equal(dns_cache_get(c, "a.test", 3, 16, &rng, &out), 0);
    assert_int_equal(dns_cache_get(c, "c.test", 3, 16, &rng, &out), 0);
    assert_int_equal(dns_cache_get(c, "d.test", 3, 16, &rng, &out), 0);

    /* Replacing a key does not evict and keeps one entry. */
    ok_result(&in, "c.test", 1);
    assert_int_equal(dns_cache_put(c, &in, 4), 0);
    dns_cache_stats(c, &st);
    assert_int_equal(st.entries, 3);
    assert_int_equal(st.evicted, 1);
    assert_int_equal(dns_cache_get(c, "c.test", 4, 16, &rng, &out), 0);
    assert_int_equal(out.ttl, 1);

    /* Many more than the bound. */
    for (int i = 0; i < 1000; i++) {
        char name[32];
        snprintf(name, sizeof(name), "n%d.test", i);
        ok_result(&in, name, 600);
        assert_int_equal(dns_cache_put(c, &in, 10), 0);
    }
    dns_cache_stats(c, &st);
    assert_int_equal(st.entries, 3);
    assert_int_equal(st.evicted, 1 + 1000);
    assert_int_equal(dns_cache_get(c, "n999.test", 10, 16, &rng, &out), 0);
    assert_int_equal(dns_cache_get(c, "n996.test", 10, 16, &rng, &out), -ENOENT);
    dns_cache_free(c);
}

static void test_negative_entries(void **state)
{
    (void)state;
    struct dns_cache *c;
    struct dns_rng rng;
    dns_rng_seed(&rng, 5);
    struct dns_mx_result in, out;
    assert_int_equal(dns_cache_new(8, &c), 0);

    memset(&in, 0, sizeof(in));
    in.outcome = DNS_OUTCOME_PERMFAIL;
    in.reason = DNS_REASON_NXDOMAIN;
    in.ttl = 120;
    snprintf(in.domain, sizeof(in.domain), "gone.test");
    snprintf(in.detail, sizeof(in.detail), "NXDOMAIN for MX gone.test");
    assert_int_equal(dns_cache_put(c, &in, 0), 0);
    assert_int_equal(dns_cache_get(c, "gone.test", 1000, 16, &rng, &out), 0);
    assert_int_equal(out.outcome, DNS_OUTCOME_PERMFAIL);
    assert_int_equal(out.reason, DNS_REASON_NXDOMAIN);
    assert_int_equal(out.nhosts, 0);
    assert_int_equal(out.ttl, 119);
    assert_true(out.cached);
    assert_string_equal(out.detail, "NXDOMAIN for MX gone.test");

    in.outcome = DNS_OUTCOME_NULLMX;
    in.reason = DNS_REASON_NULL_MX;
    snprintf(in.domain, sizeof(in.domain), "nomail.test");
    assert_int_equal(dns_cache_put(c, &in, 0), 0);
    assert_int_equal(dns_cache_get(c, "nomail.test", 0, 16, &rng, &out), 0);
    assert_int_equal(out.outcome, DNS_OUTCOME_NULLMX);
    assert_int_equal(out.reason, DNS_REASON_NULL_MX);

    /* A temporary failure is never remembered. */
    in.outcome = DNS_OUTCOME_TEMPFAIL;
    in.reason = DNS_REASON_SERVFAIL;
    snprintf(in.domain, sizeof(in.domain), "flaky.test");
    assert_int_equal(dns_cache_put(c, &in, 0), -EINVAL);
    assert_int_equal(dns_cache_get(c, "flaky.test", 0, 16, &rng, &out), -ENOENT);
    dns_cache_free(c);
}

static uint64_t fake_now;

static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

static void test_resolver_cache(void **state)
{
    (void)state;
    struct dns_config cfg = { .servers = "127.0.0.1:9", .max_mx_hosts = 3, .ttl_min = 30 };
    struct dns_resolver *r;
    assert_int_equal(dns_resolver_new(&cfg, NULL, NULL, &r), 0);
    dns_resolver_set_clock(r, fake_clock, NULL);
    fake_now = 1000000;
    struct dns_mx_result in, out;
    ok_result(&in, "example.test", 45);
    assert_int_equal(dns_resolver_cache_put(r, &in), 0);

    assert_int_equal(dns_mx_cached(r, "EXAMPLE.test.", &out), 0);
    assert_true(out.cached);
    assert_int_equal(out.nhosts, 3); /* max_mx_hosts */
    assert_int_equal(out.skipped, 2);
    assert_int_equal(out.ttl, 45);
    assert_int_equal(dns_mx_cached(r, "nothere.test", &out), -ENOENT);
    assert_int_equal(dns_mx_cached(r, "bad..name", &out), DNS_ERR_NAME);
    assert_int_equal(dns_mx_cached(r, "192.0.2.1", &out), DNS_ERR_NAME);
    fake_now += 45000;
    assert_int_equal(dns_mx_cached(r, "example.test", &out), -ENOENT);

    struct dns_stats st;
    dns_resolver_stats(r, &st);
    assert_int_equal(st.lookups, 3);
    assert_int_equal(st.cache_hits, 1);
    assert_int_equal(st.cache_misses, 2);
    assert_int_equal(st.cache_expired, 1);
    assert_int_equal(st.cache_entries, 0);
    assert_int_equal(st.queries, 0);
    assert_int_equal(st.inflight, 0);
    assert_int_equal(dns_resolver_timeout_ms(r), -1);

    /* The clamp: positive answers in [ttl_min, ttl_max], negative ones at most
     * negative_ttl_max and at least ttl_min. */
    assert_int_equal(dns_ttl_clamp(r, 5, false), 30);
    assert_int_equal(dns_ttl_clamp(r, 100000, false), 86400);
    assert_int_equal(dns_ttl_clamp(r, 600, false), 600);
    assert_int_equal(dns_ttl_clamp(r, 7200, true), 3600);
    assert_int_equal(dns_ttl_clamp(r, 5, true), 30);
    assert_int_equal(dns_ttl_clamp(r, UINT32_MAX, true), 30);
    dns_resolver_free(r);

    struct dns_config odd = { .servers = "127.0.0.1:9", .ttl_min = 7200 };
    assert_int_equal(dns_resolver_new(&odd, NULL, NULL, &r), 0);
    assert_int_equal(dns_ttl_clamp(r, 100, true), 7200); /* ttl_min wins */
    dns_resolver_free(r);
}

static void test_config(void **state)
{
    (void)state;
    struct dns_resolver *r = NULL;
    struct dns_config cfg = { .servers = "127.0.0.1:9", .max_mx_hosts = DNS_MX_HOSTS_MAX + 1 };
    assert_int_equal(dns_resolver_new(&cfg, NULL, NULL, &r), DNS_ERR_CONFIG);
    assert_null(r);
    cfg.max_mx_hosts = 0;
    cfg.max_addrs_per_host = DNS_ADDRS_MAX + 1;
    assert_int_equal(dns_resolver_new(&cfg, NULL, NULL, &r), DNS_ERR_CONFIG);
    cfg.max_addrs_per_host = 0;
    cfg.ttl_min = 100;
    cfg.ttl_max = 50;
    assert_int_equal(dns_resolver_new(&cfg, NULL, NULL, &r), DNS_ERR_CONFIG);
    cfg.ttl_min = cfg.ttl_max = 0;
    cfg.servers = "not an address";
    assert_int_equal(dns_resolver_new(&cfg, NULL, NULL, &r), DNS_ERR_CONFIG);
    cfg.servers = "";
    assert_int_equal(dns_resolver_new(&cfg, NULL, NULL, &r), DNS_ERR_CONFIG);
    cfg.servers = "127.0.0.1:5353,[::1]:53";
    assert_int_equal(dns_resolver_new(&cfg, NULL, NULL, &r), 0);
    dns_resolver_free(r);
    dns_resolver_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_copies),     cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_lru_bound),      cmocka_unit_test(test_negative_entries),
        cmocka_unit_test(test_resolver_cache), cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
