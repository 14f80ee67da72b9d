/*
 * bench/bench_dns.c — what a cached MX answer costs: dns_mx_cached hits on a warm cache
 * of 10,000 domains with two MX hosts each (equal preference, so every hit shuffles;
 * two addresses per host), cycling through all of them so the hash map and the LRU
 * list see realistic spread. The cache is filled through dns/'s private hook with
 * results as a lookup would build them; no query is ever sent. The network throughput
 * benchmark (dnsmasq on loopback) is a separate one.
 */
#include "bench/bench.h"
#include "dns/dns_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#define DOMAINS 10000

static void make_result(struct dns_mx_result *res, unsigned i)
{
    memset(res, 0, sizeof(*res));
    res->outcome = DNS_OUTCOME_OK;
    res->ttl = 3600;
    snprintf(res->domain, sizeof(res->domain), "domain-%u.example", i);
    for (unsigned h = 0; h < 2; h++) {
        struct dns_addr addrs[2];
        memset(addrs, 0, sizeof(addrs));
        addrs[0].family = AF_INET6;
        addrs[0].v6.s6_addr[0] = 0x20;
        addrs[0].v6.s6_addr[15] = (uint8_t)h;
        addrs[1].family = AF_INET;
        addrs[1].v4.s_addr = htonl(0xC0000200u + h);
        char name[64];
        snprintf(name, sizeof(name), "mx%u.domain-%u.example", h + 1, i);
        dns_host_set(&res->hosts[h], 10, name, strlen(name), addrs, 2);
    }
    res->nhosts = 2;
}

static void bench_dns_cached_lookup(struct bench_state *st)
{
    /* The servers are never contacted: the port is the discard service. */
    struct dns_config cfg = { .servers = "127.0.0.1:9", .cache_max_entries = DOMAINS };
    struct dns_resolver *r = NULL;
    if (dns_resolver_new(&cfg, NULL, NULL, &r) != 0) {
        bench_fail(st, "cannot create the resolver");
        return;
    }
    static struct dns_mx_result res;
    static char names[DOMAINS][32];
    for (unsigned i = 0; i < DOMAINS; i++) {
        make_result(&res, i);
        snprintf(names[i], sizeof(names[i]), "domain-%u.example", i);
        if (dns_resolver_cache_put(r, &res) != 0) {
            bench_fail(st, "cannot fill the cache");
            dns_resolver_free(r);
            return;
        }
    }
    int64_t items = 0;
    unsigned i = 0;
    while (bench_next(st)) {
        if (dns_mx_cached(r, names[i], &res) != 0 || res.nhosts != 2) {
            bench_fail(st, "cache miss on a warm cache");
            break;
        }
        if (++i == DOMAINS)
            i = 0;
        items++;
    }
    bench_set_items(st, items);
    struct dns_stats stats;
    dns_resolver_stats(r, &stats);
    if (stats.cache_misses != 0 || stats.cache_evicted != 0)
        bench_fail(st, "the warm cache missed or evicted");
    dns_resolver_free(r);
}
BENCH_REGISTER(bench_dns_cached_lookup)
