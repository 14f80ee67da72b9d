/*
 * tests/engine/test_worker_live.c — the worker (engine/worker.h) end to end: a spool
 * on disk in a scratch folder, a real dnsmasq on 127.0.0.1 serving the zone below, and
 * floormta-sink on loopback addresses sharing one port, in the profiles each test needs.
 *
 *   good.floormta.test    MX 10 mx (127.0.0.3)
 *   old.floormta.test     MX 10 mx1 (127.0.0.2)
 *   sender.floormta.test  MX 10 mx (127.0.0.3): where the DSNs go
 *
 * The certificate of the "valid" leaf names mx.floormta.test, so the good receiver is
 * always that host. Exit 77 when io_uring is unavailable; dnsmasq missing is a failure.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/capcache.h"
#include "engine/dns_loop.h"
#include "engine/log.h"
#include "engine/loop.h"
#include "engine/worker.h"
#include "queue/queue.h"
#include "tests/dns/dnsmasq_fixture.h"
#include "tests/engine/sink_fixture.h"
#include "tests/pki/testpki.h"
#include "tls/tls.h"

#define MX_NAME "mx.floormta.test"

static const char zone[] = "local-ttl=60\n"
                           "host-record=mx1.floormta.test,127.0.0.2\n"
                           "host-record=mx.floormta.test,127.0.0.3\n"
                           "mx-host=old.floormta.test,mx1.floormta.test,10\n"
                           "mx-host=good.floormta.test,mx.floormta.test,10\n"
                           "mx-host=sender.floormta.test,mx.floormta.test,10\n";

static char work[] = "/tmp/floormta-worker-live-XXXXXX";
static struct tls_ctx *tls;
static struct dnsq Q;

/* ---- one worker on its own loop, resolver, capability cache and spool ----------------------- */

struct rig {
    struct eng_loop *loop;
    struct eng_dns *dns;
    struct eng_capcache *cap;
    struct queue_spool *spool;
    struct eng_worker *w;
    char dir[PATH_MAX];
    uint16_t port;
    struct queue_retry_config retry;
};

static void spool_open(struct rig *r)
{
    struct queue_spool_config scfg = { .dir = r->dir, .min_free_bytes = 1 };
    assert_int_equal(queue_spool_open(&scfg, &r->spool), 0);
}

static void worker_open(struct rig *r)
{
    struct eng_worker_config cfg = {
        .loop = r->loop,
        .spool = r->spool,
        .dns = r->dns,
        .tls = tls,
        .capcache = r->cap,
        .retry = r->retry,
        .helo_name = "client.floormta.test",
        .reporting_mta = "mta.floormta.test",
        .port = r->port,
        .connect_timeout_ms = 5000,
        .reply_timeout_ms = 5000,
    };
    assert_int_equal(eng_worker_new(&cfg, &r->w), 0);
    assert_int_equal(eng_worker_start(r->w), 0);
}

static void rig_open(struct rig *r, const char *name, uint16_t port,
                     const struct queue_retry_config *retry)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->dir, sizeof(r->dir), "%s/%s", work, name);
    r->port = port;
    if (retry)
        r->retry = *retry;
    assert_int_equal(eng_loop_new(NULL, &r->loop), 0);
    struct dns_config dcfg = { .servers = Q.server, .timeout_ms = 1000, .tries = 2 };
    assert_int_equal(eng_dns_new(r->loop, &dcfg, &r->dns), 0);
    assert_int_equal(eng_capcache_new(NULL, &r->cap), 0);
    spool_open(r);
    worker_open(r);
}

static void rig_close(struct rig *r)
{
    eng_worker_free(r->w);
    r->w = NULL;
    eng_dns_free(r->dns);
    eng_loop_free(r->loop);
    eng_capcache_free(r->cap);
    queue_spool_close(r->spool);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct eng_worker_stats stats(const struct rig *r)
{
    struct eng_worker_stats s;
    eng_worker_stats(r->w, &s);
    return s;
}

/* Runs the loop until field of the worker's stats reaches want (or fails after ms). */
#define RUN_UNTIL(r, field, want, ms)                                                 \
    do {                                                                              \
        uint64_t end_ = now_ms() + (ms);                                              \
        while (stats(r).field < (want) && now_ms() < end_)                            \
            assert_true(eng_loop_run_once((r)->loop, 50) >= 0);                       \
        if (stats(r).field < (want))                                                  \
            fail_msg("worker stats " #field "=%llu, wanted %llu",                     \
                     (unsigned long long)stats(r).field, (unsigned long long)(want)); \
    } while (0)

static const char body[] = "From: a@sender.floormta.test\r\nSubject: t\r\n\r\nhello\r\n";

struct queued {
    unsigned done;
    queue_id_t id;
    int res;
};

static void on_queued(void *arg, queue_id_t id, int res)
{
    struct queued *q = arg;
    q->done++;
    q->id = id;
    q->res = res;
}

/* Enqueues one message (sender a@sender.floormta.test, one recipient) and waits until it
 * is durable. Returns its id. */
static queue_id_t enqueue(struct rig *r, const char *domain, const char *local)
{
    struct queue_envelope *qe = queue_envelope_alloc(1);
    assert_non_null(qe);
    snprintf(qe->sender, sizeof(qe->sender), "a@sender.floormta.test");
    snprintf(qe->domain, sizeof(qe->domain), "%s", domain);
    snprintf(qe->rcpts[0].addr, sizeof(qe->rcpts[0].addr), "%s@%s", local, domain);
    struct queued q = { 0 };
    assert_int_equal(eng_worker_enqueue(r->w, qe, body, sizeof(body) - 1, on_queued, &q), 0);
    queue_envelope_free(qe);     /* copied */
    assert_int_equal(q.done, 0); /* never from inside the call */
    uint64_t end = now_ms() + 5000;
    while (!q.done && now_ms() < end)
        assert_true(eng_loop_run_once(r->loop, 50) >= 0);
    assert_int_equal(q.done, 1);
    assert_int_equal(q.res, 0);
    assert_true(q.id != 0);
    return q.id;
}

static int count_one(void *arg, const struct queue_envelope *env)
{
    (void)env;
    (*(unsigned *)arg)++;
    return 0;
}

/* How many unfinished messages a fresh recovery of the rig's spool finds. */
static unsigned spool_count(struct rig *r)
{
    queue_spool_close(r->spool);
    spool_open(r);
    unsigned n = 0;
    struct queue_recover_stats rs;
    assert_int_equal(queue_spool_recover(r->spool, count_one, &n, &rs), 0);
    return n;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("\"%s\" not in \"%s\"", needle, hay);
}

/* ---- tests -------------------------------------------------------------------------------- */

/* 20 messages to a good receiver: all delivered, the spool empty afterwards. */
static void test_delivers_all(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=tls1.2", NULL);
    struct rig r;
    rig_open(&r, "spool-all", k.port, NULL);
    struct queued q[20];
    memset(q, 0, sizeof(q));
    struct queue_envelope *qe = queue_envelope_alloc(1);
    assert_non_null(qe);
    snprintf(qe->sender, sizeof(qe->sender), "a@sender.floormta.test");
    snprintf(qe->domain, sizeof(qe->domain), "good.floormta.test");
    for (unsigned i = 0; i < 20; i++) {
        snprintf(qe->rcpts[0].addr, sizeof(qe->rcpts[0].addr), "r%u@good.floormta.test", i);
        assert_int_equal(eng_worker_enqueue(r.w, qe, body, sizeof(body) - 1, on_queued, &q[i]), 0);
    }
    queue_envelope_free(qe);
    RUN_UNTIL(&r, removed, 20, 15000);
    struct eng_worker_stats s = stats(&r);
    assert_int_equal(s.enqueued, 20);
    assert_int_equal(s.attempts, 20);
    assert_int_equal(s.delivered, 20);
    assert_int_equal(s.deferred, 0);
    assert_int_equal(s.bounced, 0);
    assert_int_equal(s.dsns, 0);
    assert_int_equal(s.errors, 0);
    for (unsigned i = 0; i < 20; i++) {
        assert_int_equal(q[i].done, 1);
        assert_int_equal(q[i].res, 0);
    }
    eng_worker_free(r.w);
    r.w = NULL;
    assert_int_equal(spool_count(&r), 0);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 20);
    rig_close(&r);
}

/* The only MX is below the floor: deferred (persisted with the reason), retried (a delay
 * warning after 1 s), expired, bounced; both DSNs (DELAYED, FAILED) are delivered to the
 * sender's domain; the original is removed. */
static void test_expires_with_dsn(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.2=tls1.0-only", "127.0.0.3=tls1.2", NULL);
    struct queue_retry_config retry = { .first = 1, .max_age = 3, .delay_warning = 1 };
    struct rig r;
    rig_open(&r, "spool-expire", k.port, &retry);
    uint64_t t0 = now_ms();
    queue_id_t id = enqueue(&r, "old.floormta.test", "a");

    RUN_UNTIL(&r, deferred, 1, 5000);
    struct queue_envelope *env = NULL;
    assert_int_equal(queue_spool_read(r.spool, id, &env, NULL, NULL), 0);
    assert_int_equal(env->attempts, 1);
    assert_true(env->next_attempt > 0);
    assert_int_equal(env->rcpts[0].state, QUEUE_RCPT_DEFERRED);
    assert_int_equal(env->rcpts[0].last.kind, QUEUE_RESULT_TLS);
    assert_int_equal(env->rcpts[0].last.code / 100, 4);
    assert_contains(env->rcpts[0].last.text, "version_below_floor");
    queue_envelope_free(env);

    /* Expiry bounces it; the DSNs (to a@sender.floormta.test) are delivered too. */
    RUN_UNTIL(&r, expired, 1, 8000);
    RUN_UNTIL(&r, removed, 3, 8000);
    struct eng_worker_stats s = stats(&r);
    assert_true(s.deferred >= 2); /* retried at least once before the age limit */
    assert_int_equal(s.bounced, 1);
    assert_int_equal(s.dsns, 2);
    assert_int_equal(s.delivered, 2); /* the DSNs */
    assert_int_equal(s.errors, 0);
    assert_true(now_ms() - t0 >= 2000);
    assert_int_equal(queue_spool_read(r.spool, id, &env, NULL, NULL), QUEUE_ERR_NOT_FOUND);
    eng_worker_free(r.w);
    r.w = NULL;
    assert_int_equal(spool_count(&r), 0);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 2); /* only the DSNs could reach 127.0.0.3 */
    rig_close(&r);
}

/* A deferred message survives a restart with its persisted state. */
static void test_restart_recovers(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.2=tls1.0-only", NULL);
    struct queue_retry_config retry = { .first = 3600, .max_age = 86400 };
    struct rig r;
    rig_open(&r, "spool-restart", k.port, &retry);
    queue_id_t id = enqueue(&r, "old.floormta.test", "a");
    RUN_UNTIL(&r, deferred, 1, 5000);
    struct queue_envelope *env = NULL;
    assert_int_equal(queue_spool_read(r.spool, id, &env, NULL, NULL), 0);
    assert_int_equal(env->attempts, 1);
    int64_t next = env->next_attempt;
    assert_true(next > (int64_t)time(NULL) + 3000);
    queue_envelope_free(env);

    /* Stop; a new worker (after the spool is closed and opened again) recovers it. */
    eng_worker_free(r.w);
    queue_spool_close(r.spool);
    spool_open(&r);
    worker_open(&r);
    struct eng_worker_stats s = stats(&r);
    assert_int_equal(s.recovered, 1);
    struct queue_entry *e = queue_sched_find(eng_worker_sched(r.w), id);
    assert_non_null(e);
    assert_int_equal(queue_entry_attempts(e), 1);
    assert_int_equal(queue_entry_next_attempt(e), next);
    struct queue_sched_stats ss;
    queue_sched_stats(eng_worker_sched(r.w), &ss);
    assert_int_equal(ss.entries, 1);
    assert_int_equal(ss.deferred, 1);
    for (int i = 0; i < 5; i++) /* nothing is attempted before its time */
        assert_true(eng_loop_run_once(r.loop, 20) >= 0);
    assert_int_equal(stats(&r).attempts, 0);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.connections, 1);
    rig_close(&r);
}

/* ---- fixture ------------------------------------------------------------------------------ */

static int setup(void **state)
{
    (void)state;
    if (live_pki_setup(work, MX_NAME, &tls) != 0)
        return -1;
    if (dnsq_init(&Q) != 0 || dnsq_start(&Q, zone) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    dnsq_stop(&Q);
    return live_pki_teardown(work, tls);
}

int main(void)
{
    int rc = live_preflight();
    if (rc != 0)
        return rc;
    srand((unsigned)getpid() ^ (unsigned)time(NULL));
    eng_log_set_level(getenv("WORKER_LIVE_DEBUG") ? ENG_LOG_DEBUG : ENG_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_delivers_all, sink_teardown),
        cmocka_unit_test_teardown(test_expires_with_dsn, sink_teardown),
        cmocka_unit_test_teardown(test_restart_recovers, sink_teardown),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
