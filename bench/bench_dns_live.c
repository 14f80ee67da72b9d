/*
 * bench/bench_dns_live.c — MX resolution throughput through the whole stack: the loop's
 * resolver binding (engine/dns_loop.h), dns/ and c-ares, against a real dnsmasq on
 * 127.0.0.1 (tests/dns/dnsmasq_fixture.h) serving BENCH_DOMAINS distinct domains.
 *
 * Each iteration starts every lookup at once on a fresh resolver (an empty cache, so
 * every lookup is an MX query plus A and AAAA queries for its target) and runs the loop
 * until all are answered; items/s is lookups per second. dnsmasq runs without its query
 * log and shares the machine, so the figure is a floor for the client side.
 */
#include "bench/bench.h"
#include "engine/dns_loop.h"
#include "engine/loop.h"
#include "tests/dns/dnsmasq_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BENCH_DOMAINS 2000

static struct dnsq dnsq;
static int dnsq_state; /* 0 not yet, 1 running, -1 failed */

static void bench_dnsq_stop(void)
{
    dnsq_stop(&dnsq);
}

/* dnsmasq with the benchmark's zone, started on first use; NULL if it failed. */
static struct dnsq *bench_dnsq(void)
{
    if (dnsq_state != 0)
        return dnsq_state == 1 ? &dnsq : NULL;
    dnsq_state = -1;
    if (dnsq_init(&dnsq) < 0)
        return NULL;
    dnsq.quiet = true;
    size_t cap = (size_t)BENCH_DOMAINS * 120 + 64, used = 0;
    char *zone = malloc(cap);
    if (!zone)
        return NULL;
    used += (size_t)snprintf(zone, cap, "local-ttl=600\n");
    for (int i = 0; i < BENCH_DOMAINS; i++)
        used += (size_t)snprintf(zone + used, cap - used,
                                 "mx-host=b%d.bench.test,mx%d.bench.test,10\n"
                                 "host-record=mx%d.bench.test,10.%d.%d.%d\n",
                                 i, i, i, 1 + i / 65536, (i / 256) % 256, i % 256);
    int rc = dnsq_start(&dnsq, zone);
    free(zone);
    if (rc < 0) {
        dnsq_stop(&dnsq);
        return NULL;
    }
    atexit(bench_dnsq_stop);
    dnsq_state = 1;
    return &dnsq;
}

struct bench_lookups {
    int answered;
    int ok;
};

static void bench_on_mx(void *arg, const struct dns_mx_result *res)
{
    struct bench_lookups *b = arg;
    b->answered++;
    b->ok += res->outcome == DNS_OUTCOME_OK && res->nhosts == 1;
}

static void bench_dns_resolution_throughput(struct bench_state *st)
{
    struct dnsq *q = bench_dnsq();
    if (!q) {
        bench_fail(st, "cannot start dnsmasq (/usr/sbin/dnsmasq, package dnsmasq-base)");
        return;
    }
    struct eng_loop *loop = NULL;
    struct eng_loop_config lcfg = { .entries = 4096 };
    if (eng_loop_new(&lcfg, &loop) < 0) {
        bench_fail(st, "io_uring is not available");
        return;
    }
    static char names[BENCH_DOMAINS][32];
    for (int i = 0; i < BENCH_DOMAINS; i++)
        snprintf(names[i], sizeof(names[i]), "b%d.bench.test", i);
    struct dns_config cfg = { .servers = q->server, .timeout_ms = 1000, .tries = 4 };
    int64_t items = 0;
    while (bench_next(st)) {
        struct eng_dns *d = NULL;
        struct bench_lookups b = { 0 };
        if (eng_dns_new(loop, &cfg, &d) < 0) {
            bench_fail(st, "eng_dns_new failed");
            break;
        }
        for (int i = 0; i < BENCH_DOMAINS; i++)
            if (eng_dns_lookup_mx(d, names[i], bench_on_mx, &b) < 0)
                b.answered++; /* counted as done, not as ok */
        while (b.answered < BENCH_DOMAINS)
            if (eng_loop_run_once(loop, 1000) < 0)
                break;
        bench_pause(st);
        eng_dns_free(d);
        eng_loop_run_once(loop, 0); /* release its handles outside the timing */
        bench_resume(st);
        if (b.ok != BENCH_DOMAINS) {
            bench_fail(st, "not every lookup was answered correctly");
            break;
        }
        items += BENCH_DOMAINS;
    }
    bench_set_items(st, items);
    eng_loop_free(loop);
}
BENCH_REGISTER_REAL_TIME(bench_dns_resolution_throughput)
