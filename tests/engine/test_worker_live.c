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
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "engine/worker.h"
#include "queue/queue.h"
#include "tests/dns/dnsmasq_fixture.h"
#include "tests/engine/deliver_fixture.h"
#include "tests/engine/sink_fixture.h"
#include "tls/tls.h"

#define MX_NAME "mx.floormta.test"

static const char zone[] = "local-ttl=60\n"
                           "host-record=mx1.floormta.test,127.0.0.2\n"
                           "host-record=mx.floormta.test,127.0.0.3\n"
                           "mx-host=old.floormta.test,mx1.floormta.test,10\n"
                           "mx-host=good.floormta.test,mx.floormta.test,10\n"
                           "mx-host=sender.floormta.test,mx.floormta.test,10\n";

static char work[] = "/tmp/floormta-worker-live-XXXXXX";

/* ---- messages for the worker (struct live_rig in deliver_fixture.h runs it) --------------- */

static const char body[] = "From: a@sender.floormta.test\r\nSubject: t\r\n\r\nhello\r\n";

/* Enqueues one message (sender a@sender.floormta.test, one recipient) and waits until it
 * is durable. Returns its id. */
static queue_id_t enqueue(struct live_rig *r, const char *domain, const char *local)
{
    struct queue_envelope *qe = queue_envelope_alloc(1);
    assert_non_null(qe);
    snprintf(qe->sender, sizeof(qe->sender), "a@sender.floormta.test");
    snprintf(qe->domain, sizeof(qe->domain), "%s", domain);
    snprintf(qe->rcpts[0].addr, sizeof(qe->rcpts[0].addr), "%s@%s", local, domain);
    struct live_queued q = { 0 };
    assert_int_equal(eng_worker_enqueue(r->w, qe, body, sizeof(body) - 1, live_on_queued, &q), 0);
    queue_envelope_free(qe);     /* copied */
    assert_int_equal(q.done, 0); /* never from inside the call */
    return live_rig_await_queued(r, &q);
}

/* ---- tests -------------------------------------------------------------------------------- */

/* 20 messages to a good receiver: all delivered, the spool empty afterwards. */
static void test_delivers_all(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=tls1.2", NULL);
    struct live_rig r;
    live_rig_open(&r, work, "spool-all", k.port, NULL);
    struct live_queued q[20];
    memset(q, 0, sizeof(q));
    struct queue_envelope *qe = queue_envelope_alloc(1);
    assert_non_null(qe);
    snprintf(qe->sender, sizeof(qe->sender), "a@sender.floormta.test");
    snprintf(qe->domain, sizeof(qe->domain), "good.floormta.test");
    for (unsigned i = 0; i < 20; i++) {
        snprintf(qe->rcpts[0].addr, sizeof(qe->rcpts[0].addr), "r%u@good.floormta.test", i);
        assert_int_equal(eng_worker_enqueue(r.w, qe, body, sizeof(body) - 1, live_on_queued, &q[i]),
                         0);
    }
    queue_envelope_free(qe);
    LIVE_RIG_RUN_UNTIL(&r, removed, 20, 15000);
    struct eng_worker_stats s = live_rig_stats(&r);
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
    live_rig_stop(&r);
    assert_int_equal(live_spool_count(r.dir, &r.spool), 0);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 20);
    live_rig_close(&r);
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
    struct live_rig r;
    live_rig_open(&r, work, "spool-expire", k.port, &retry);
    uint64_t t0 = live_now_ms();
    queue_id_t id = enqueue(&r, "old.floormta.test", "a");

    LIVE_RIG_RUN_UNTIL(&r, deferred, 1, 5000);
    struct queue_envelope *env = NULL;
    assert_int_equal(queue_spool_read(r.spool, id, &env, NULL, NULL), 0);
    assert_int_equal(env->attempts, 1);
    assert_true(env->next_attempt > 0);
    assert_int_equal(env->rcpts[0].state, QUEUE_RCPT_DEFERRED);
    assert_int_equal(env->rcpts[0].last.kind, QUEUE_RESULT_TLS);
    assert_int_equal(env->rcpts[0].last.code / 100, 4);
    live_assert_contains(env->rcpts[0].last.text, "version_below_floor");
    queue_envelope_free(env);

    /* Expiry bounces it; the DSNs (to a@sender.floormta.test) are delivered too. */
    LIVE_RIG_RUN_UNTIL(&r, expired, 1, 8000);
    LIVE_RIG_RUN_UNTIL(&r, removed, 3, 8000);
    struct eng_worker_stats s = live_rig_stats(&r);
    assert_true(s.deferred >= 2); /* retried at least once before the age limit */
    assert_int_equal(s.bounced, 1);
    assert_int_equal(s.dsns, 2);
    assert_int_equal(s.delivered, 2); /* the DSNs */
    assert_int_equal(s.errors, 0);
    assert_true(live_now_ms() - t0 >= 2000);
    assert_int_equal(queue_spool_read(r.spool, id, &env, NULL, NULL), QUEUE_ERR_NOT_FOUND);
    live_rig_stop(&r);
    assert_int_equal(live_spool_count(r.dir, &r.spool), 0);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 2); /* only the DSNs could reach 127.0.0.3 */
    live_rig_close(&r);
}

/* A deferred message survives a restart with its persisted state. */
static void test_restart_recovers(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.2=tls1.0-only", NULL);
    struct queue_retry_config retry = { .first = 3600, .max_age = 86400 };
    struct live_rig r;
    live_rig_open(&r, work, "spool-restart", k.port, &retry);
    queue_id_t id = enqueue(&r, "old.floormta.test", "a");
    LIVE_RIG_RUN_UNTIL(&r, deferred, 1, 5000);
    struct queue_envelope *env = NULL;
    assert_int_equal(queue_spool_read(r.spool, id, &env, NULL, NULL), 0);
    assert_int_equal(env->attempts, 1);
    int64_t next = env->next_attempt;
    assert_true(next > (int64_t)time(NULL) + 3000);
    queue_envelope_free(env);

    /* Stop; a new worker (after the spool is closed and opened again) recovers it. */
    eng_worker_free(r.w);
    queue_spool_close(r.spool);
    live_spool_open(r.dir, &r.spool);
    live_rig_worker_open(&r);
    struct eng_worker_stats s = live_rig_stats(&r);
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
        assert_true(eng_loop_run_once(r.e.loop, 20) >= 0);
    assert_int_equal(live_rig_stats(&r).attempts, 0);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.connections, 1);
    live_rig_close(&r);
}

/* ---- fixture ------------------------------------------------------------------------------ */

int main(void)
{
    static const struct live_suite suite = {
        .debug_env = "WORKER_LIVE_DEBUG", .work = work, .mx_name = MX_NAME, .zone = zone
    };
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_delivers_all, sink_teardown),
        cmocka_unit_test_teardown(test_expires_with_dsn, sink_teardown),
        cmocka_unit_test_teardown(test_restart_recovers, sink_teardown),
    };
    return live_main(&suite, tests);
}
