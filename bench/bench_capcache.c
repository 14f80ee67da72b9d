/*
 * bench/bench_capcache.c — what the capability cache costs on the delivery path: a
 * check that finds a blocking entry (the deferral that saves a connection and a
 * handshake), and recording a verdict. 10,000 MX hosts per worker cache, visited in
 * turn so that the lookups are not all served from one cache line.
 */
#include "bench/bench.h"
#include "engine/capcache.h"

#include <stdio.h>
#include <string.h>

#define HOSTS 10000
#define NOW   1795392000 /* 2026-11-23T00:00:00Z */

static char names[HOSTS][40];

static struct eng_capcache *filled_cache(struct bench_state *st, struct tls_verdict *v)
{
    struct eng_capcache_config cfg = { .max_entries = 2 * HOSTS };
    struct eng_capcache *c = NULL;
    tls_verdict_clear(v);
    v->reason = TLS_REASON_VERSION_BELOW_FLOOR;
    v->ev.version = TLS_VERSION_1_0;
    snprintf(v->ev.cipher, sizeof(v->ev.cipher), "ECDHE-RSA-AES128-SHA");
    if (eng_capcache_new(&cfg, &c) != 0) {
        bench_fail(st, "cannot make the cache");
        return NULL;
    }
    for (int i = 0; i < HOSTS; i++) {
        snprintf(names[i], sizeof(names[i]), "mx%d.mail-%d.example.net", i, i * 7919 % 1000);
        if (eng_capcache_record(c, names[i], 25, v, NOW) != 0) {
            bench_fail(st, "cannot record");
            eng_capcache_free(c);
            return NULL;
        }
    }
    return c;
}

/* eng_capcache_check of a blocked host, the entry copied out (as the deferral does). */
static void bench_capcache_hit(struct bench_state *st)
{
    struct tls_verdict v;
    struct eng_capcache *c = filled_cache(st, &v);
    if (c == NULL)
        return;
    struct eng_capcache_entry e;
    int64_t items = 0;
    unsigned i = 0;
    while (bench_next(st)) {
        if (eng_capcache_check(c, names[i], 25, NOW + 1, &e) != ENG_CAPCACHE_BLOCKED) {
            bench_fail(st, "entry not blocked");
            break;
        }
        i = i + 1 < HOSTS ? i + 1 : 0;
        items++;
    }
    bench_set_items(st, items);
    eng_capcache_free(c);
}
BENCH_REGISTER(bench_capcache_hit)

/* eng_capcache_record of a verdict for a host already known (the common case). */
static void bench_capcache_record(struct bench_state *st)
{
    struct tls_verdict v;
    struct eng_capcache *c = filled_cache(st, &v);
    if (c == NULL)
        return;
    int64_t items = 0;
    unsigned i = 0;
    while (bench_next(st)) {
        if (eng_capcache_record(c, names[i], 25, &v, NOW + 1) != 0) {
            bench_fail(st, "cannot record");
            break;
        }
        i = i + 1 < HOSTS ? i + 1 : 0;
        items++;
    }
    bench_set_items(st, items);
    eng_capcache_free(c);
}
BENCH_REGISTER(bench_capcache_record)
