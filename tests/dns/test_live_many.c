/*
 * tests/dns/test_live_many.c — thousands of MX lookups in flight on one loop against a
 * real dnsmasq: 2000 distinct domains from a generated zone, all started before the
 * loop runs, each answered exactly once with its own MX host and address; then the
 * same 2000 again, all from the cache; and no handle left open afterwards.
 * Exits 77 when io_uring is not available; dnsmasq missing is a failure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dns/dns.h"
#include "engine/dns_loop.h"
#include "engine/loop.h"
#include "tests/dns/dnsmasq_fixture.h"

#define N 2000

static int failures;

#define CHECK(cond, ...)                                             \
    do {                                                             \
        if (!(cond)) {                                               \
            failures++;                                              \
            if (failures < 10) {                                     \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
                fprintf(stderr, __VA_ARGS__);                        \
                fputc('\n', stderr);                                 \
            }                                                        \
        }                                                            \
    } while (0)

struct slot {
    int idx;
    int calls;
    bool cached;
    bool ok;
};

static int answered;

static void expect_addr(int i, char *out, size_t cap)
{
    snprintf(out, cap, "10.%d.%d.%d", 1 + i / 65536, (i / 256) % 256, i % 256);
}

static void on_mx(void *arg, const struct dns_mx_result *r)
{
    struct slot *s = arg;
    char want_name[64], want_addr[32], got[INET6_ADDRSTRLEN];
    s->calls++;
    answered++;
    s->cached = r->cached;
    snprintf(want_name, sizeof(want_name), "mx%d.many.test", s->idx);
    expect_addr(s->idx, want_addr, sizeof(want_addr));
    s->ok = r->outcome == DNS_OUTCOME_OK && r->nhosts == 1 &&
            strcmp(r->hosts[0].name, want_name) == 0 && r->hosts[0].naddrs == 1 &&
            strcmp(dns_addr_format(&r->hosts[0].addrs[0], got, sizeof(got)), want_addr) == 0;
    if (!s->ok && failures < 10)
        fprintf(stderr, "d%d.many.test: %s %s (%s)\n", s->idx, dns_outcome_name(r->outcome),
                dns_reason_name(r->reason), r->detail);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Starts all N lookups, then runs the loop until all are answered (30 s at most). */
static void round_trip(struct eng_loop *loop, struct eng_dns *d, struct slot *slots)
{
    char name[64];
    answered = 0;
    for (int i = 0; i < N; i++) {
        slots[i] = (struct slot){ .idx = i };
        snprintf(name, sizeof(name), "d%d.many.test", i);
        int rc = eng_dns_lookup_mx(d, name, on_mx, &slots[i]);
        CHECK(rc == 0, "lookup %s: %s", name, dns_strerror(rc));
    }
    uint64_t end = now_ms() + 30000;
    while (answered < N && now_ms() < end)
        eng_loop_run_once(loop, 100);
    CHECK(answered == N, "%d of %d answered", answered, N);
    for (int i = 0; i < N; i++) {
        CHECK(slots[i].calls == 1, "d%d: %d callbacks", i, slots[i].calls);
        CHECK(slots[i].ok, "d%d: wrong answer", i);
    }
}

int main(void)
{
    struct eng_loop *loop = NULL;
    struct eng_loop_config lcfg = { .entries = 4096 };
    int rc = eng_loop_new(&lcfg, &loop);
    if (rc == ENG_ERR_URING) {
        printf("io_uring is not available: skipped\n");
        return 77;
    }
    if (rc < 0)
        return 1;
    struct dnsq q;
    if (dnsq_init(&q) < 0)
        return 1;
    /* The zone: d<i>.many.test MX 10 mx<i>.many.test, which has one A record. */
    size_t cap = (size_t)N * 120 + 64, used = 0;
    char *zone = malloc(cap);
    char addr[32];
    used += (size_t)snprintf(zone + used, cap - used, "local-ttl=600\n");
    for (int i = 0; i < N; i++) {
        expect_addr(i, addr, sizeof(addr));
        used += (size_t)snprintf(zone + used, cap - used,
                                 "mx-host=d%d.many.test,mx%d.many.test,10\n"
                                 "host-record=mx%d.many.test,%s\n",
                                 i, i, i, addr);
    }
    rc = dnsq_start(&q, zone);
    free(zone);
    if (rc < 0) {
        dnsq_stop(&q);
        eng_loop_free(loop);
        return 1;
    }

    /* Retries cover datagrams the loopback may drop under the burst. */
    struct dns_config cfg = { .servers = q.server, .timeout_ms = 1000, .tries = 4 };
    struct eng_dns *d = NULL;
    rc = eng_dns_new(loop, &cfg, &d);
    CHECK(rc == 0, "eng_dns_new: %s", dns_strerror(rc));
    struct slot *slots = calloc(N, sizeof(*slots));
    uint64_t t0 = now_ms();
    round_trip(loop, d, slots);
    uint64_t took = now_ms() - t0;
    int uncached = 0;
    for (int i = 0; i < N; i++)
        uncached += !slots[i].cached;
    CHECK(uncached == N, "%d of %d answered from the network", uncached, N);
    int queries = dnsq_count(&q, "query[MX] d");
    CHECK(queries >= N, "%d MX queries for %d domains", queries, N);

    struct dns_stats st;
    dns_resolver_stats(eng_dns_resolver(d), &st);
    CHECK(st.inflight == 0, "%zu still in flight", st.inflight);
    CHECK(st.cache_entries == N, "%zu cache entries", st.cache_entries);

    /* Again: every one a hit, delivered from the loop. */
    round_trip(loop, d, slots);
    int hits = 0;
    for (int i = 0; i < N; i++)
        hits += slots[i].cached;
    CHECK(hits == N, "%d of %d from the cache", hits, N);
    CHECK(dnsq_count(&q, "query[MX] d") == queries, "the cached round queried again");

    eng_dns_free(d);
    struct eng_loop_stats ls;
    for (int i = 0; i < 100; i++) {
        eng_loop_run_once(loop, 10);
        eng_loop_stats(loop, &ls);
        if (ls.handles == 0)
            break;
    }
    CHECK(ls.handles == 0, "%u handles left open", ls.handles);
    printf("%d lookups in flight: answered in %llu ms (%d MX queries, %d retries)\n", N,
           (unsigned long long)took, queries, queries - N);
    free(slots);
    dnsq_stop(&q);
    eng_loop_free(loop);
    printf("%s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
