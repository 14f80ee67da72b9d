/*
 * tests/engine/test_retry_live.c — a receiver that answers 4xx, then accepts on retry,
 * through the worker (engine/worker.h) end to end: a spool on disk in a scratch folder, a
 * real dnsmasq on 127.0.0.1 serving the zone below, and floormta-sink on 127.0.0.60, where
 * a tempfail-once-* recipient gets 451 4.7.1 the first time and 250 after (greylisting).
 *
 *   grey.floormta.test    MX 10 mx (127.0.0.60)
 *   sender.floormta.test  MX 10 mx (127.0.0.60): where DSNs would go (none may be made)
 *
 * The retry clock counts whole unix seconds (queue/sched_retry.c: next = now + interval,
 * with now = time(NULL)), so a retry `first` seconds later may come up to one second
 * sooner by a wall clock. The tests therefore check the order against the persisted
 * schedule: no second attempt while the clock is before next_attempt, the second one
 * only at or after it, next_attempt >= the first result's time + first, and a measured
 * gap of at least (first - 1) seconds.
 * Exit 77 when io_uring is unavailable; dnsmasq missing is a failure.
 */
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "engine/log.h"
#include "engine/worker.h"
#include "queue/queue.h"
#include "tests/dns/dnsmasq_fixture.h"
#include "tests/engine/deliver_fixture.h"
#include "tests/engine/sink_fixture.h"
#include "tls/tls.h"

#define MX_NAME "mx.floormta.test"
#define DOMAIN  "grey.floormta.test"
#define FIRST   2 /* seconds before the first retry */

static const char zone[] = "local-ttl=60\n"
                           "host-record=mx.floormta.test,127.0.0.60\n"
                           "mx-host=grey.floormta.test,mx.floormta.test,10\n"
                           "mx-host=sender.floormta.test,mx.floormta.test,10\n";

static char work[] = "/tmp/floormta-retry-live-XXXXXX";
static int log_fd = -1; /* the delivery log's file while a test captures it */

/* ---- messages for the worker (struct live_rig in deliver_fixture.h runs it) --------------- */

/* jitter 1%: of 2 s that is 0 s, so the retry is exactly FIRST seconds out. */
static const struct queue_retry_config retry_cfg = { .first = FIRST,
                                                     .jitter_pct = 1,
                                                     .max_age = 3600 };

/* The clock the worker's retry schedule uses (unix time), in milliseconds. */
static uint64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char body[] = "From: a@sender.floormta.test\r\nSubject: t\r\n\r\nhello\r\n";

/* Enqueues one message from a@sender.floormta.test to the n local parts (at DOMAIN) and
 * waits until it is durable. Returns its id. */
static queue_id_t enqueue(struct live_rig *r, unsigned n, const char *const *locals)
{
    struct queue_envelope *qe = queue_envelope_alloc(n);
    assert_non_null(qe);
    snprintf(qe->sender, sizeof(qe->sender), "a@sender.floormta.test");
    snprintf(qe->domain, sizeof(qe->domain), DOMAIN);
    for (unsigned i = 0; i < n; i++)
        snprintf(qe->rcpts[i].addr, sizeof(qe->rcpts[i].addr), "%s@" DOMAIN, locals[i]);
    struct live_queued q = { 0 };
    assert_int_equal(eng_worker_enqueue(r->w, qe, body, sizeof(body) - 1, live_on_queued, &q), 0);
    queue_envelope_free(qe);
    return live_rig_await_queued(r, &q);
}

/* The first attempt left message id deferred: returns its persisted envelope (free it). */
static struct queue_envelope *read_deferred(struct live_rig *r, queue_id_t id)
{
    struct queue_envelope *env = NULL;
    assert_int_equal(queue_spool_read(r->spool, id, &env, NULL, NULL), 0);
    assert_int_equal(env->attempts, 1);
    return env;
}

/* The greylisted recipient's persisted result after the first attempt. */
static void assert_greylisted(const struct queue_rcpt *rc)
{
    assert_int_equal(rc->state, QUEUE_RCPT_DEFERRED);
    assert_int_equal(rc->attempts, 1);
    assert_int_equal(rc->last.kind, QUEUE_RESULT_SMTP);
    assert_int_equal(rc->last.code, 451);
    assert_string_equal(rc->last.enhanced, "4.7.1");
    live_assert_contains(rc->last.text, "try again later");
}

/*
 * After the first attempt deferred the message at next_attempt (unix seconds): runs the
 * loop while the clock is before it, asserting no second attempt starts, then until the
 * second attempt has started; returns the unix time (ms) at which the worker was seen to
 * have started it.
 */
static uint64_t await_retry(struct live_rig *r, int64_t next_attempt)
{
    uint64_t due = (uint64_t)next_attempt * 1000;
    while (unix_ms() + 20 < due) {
        assert_true(eng_loop_run_once(r->e.loop, 10) >= 0);
        if (live_rig_stats(r).attempts != 1)
            fail_msg("retried %llu ms before its time", (unsigned long long)(due - unix_ms()));
    }
    uint64_t end = live_now_ms() + 5000;
    while (live_rig_stats(r).attempts < 2 && live_now_ms() < end)
        assert_true(eng_loop_run_once(r->e.loop, 10) >= 0);
    assert_int_equal(live_rig_stats(r).attempts, 2);
    return unix_ms();
}

/* ---- tests -------------------------------------------------------------------------------- */

/* One recipient, 451 on the first attempt, 250 on the retry FIRST seconds later. */
static void test_tempfail_then_accept(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.60=tls1.2", NULL);
    struct live_rig r;
    live_rig_open(&r, work, "spool-one", k.port, &retry_cfg);
    const char *locals[] = { "tempfail-once-alice" };
    queue_id_t id = enqueue(&r, 1, locals);

    LIVE_RIG_RUN_UNTIL(&r, deferred, 1, 5000);
    uint64_t t1 = live_now_ms();
    struct eng_worker_stats s = live_rig_stats(&r);
    assert_int_equal(s.attempts, 1);
    assert_int_equal(s.delivered, 0);
    assert_int_equal(s.bounced, 0);
    struct queue_envelope *env = read_deferred(&r, id);
    assert_greylisted(&env->rcpts[0]);
    int64_t next = env->next_attempt;
    assert_true(next >= env->rcpts[0].last.when + FIRST);
    queue_envelope_free(env);

    uint64_t seen = await_retry(&r, next);
    assert_true(seen >= (uint64_t)next * 1000);
    assert_true(live_now_ms() - t1 >= (FIRST - 1) * 1000);

    LIVE_RIG_RUN_UNTIL(&r, removed, 1, 5000);
    s = live_rig_stats(&r);
    assert_int_equal(s.attempts, 2);
    assert_int_equal(s.deferred, 1);
    assert_int_equal(s.delivered, 1);
    assert_int_equal(s.bounced, 0);
    assert_int_equal(s.dsns, 0);
    assert_int_equal(s.errors, 0);
    assert_int_equal(queue_spool_read(r.spool, id, &env, NULL, NULL), QUEUE_ERR_NOT_FOUND);
    live_rig_stop(&r);
    assert_int_equal(live_spool_count(r.dir, &r.spool), 0);

    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 1);
    assert_int_equal(c.connections, 2);
    assert_int_equal(c.greylisted, 1);
    assert_int_equal(c.refused, 1);
    assert_int_equal(c.accepted, 1);
    live_rig_close(&r);
}

/* Sends the log back to stderr at the test level (also the teardown after a failure). */
static void log_restore(void)
{
    if (log_fd < 0)
        return;
    eng_log_set_fd(2);
    live_log_level("RETRY_LIVE_DEBUG");
    close(log_fd);
    log_fd = -1;
}

static int log_teardown(void **state)
{
    log_restore();
    return sink_teardown(state);
}

/* The delivery-log lines ("... info delivery {json}") in path, parsed, in order. */
static unsigned read_delivery_log(const char *path, json_t **out, unsigned max)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[8192];
    unsigned n = 0;
    while (fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, " info delivery {");
        if (!p)
            continue;
        json_error_t jerr;
        json_t *j = json_loads(p + strlen(" info delivery "), JSON_DISABLE_EOF_CHECK, &jerr);
        if (!j)
            fail_msg("delivery log line does not parse: %s: %s", jerr.text, line);
        if (n == max)
            fail_msg("more than %u delivery log lines", max);
        out[n++] = j;
    }
    fclose(f);
    return n;
}

/* Asserts the attempt's log line lists exactly one recipient, addr, in state. */
static void assert_only_rcpt(json_t *j, const char *addr, const char *state)
{
    json_t *a = json_object_get(j, "recipients");
    assert_true(json_is_array(a));
    assert_int_equal(json_array_size(a), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(a, 0), "addr")), addr);
    assert_string_equal(json_string_value(json_object_get(json_array_get(a, 0), "state")), state);
}

/* Two recipients, one greylisted: the other is delivered by the first attempt, and the
 * retry carries only the greylisted one. */
static void test_partial_then_retry_one(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.60=tls1.3", NULL);
    /* The delivery log (info level) goes to a file: it names the recipients each
     * attempt tried. */
    char logpath[PATH_MAX];
    snprintf(logpath, sizeof(logpath), "%s/delivery.log", work);
    log_fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(log_fd >= 0);
    eng_log_set_fd(log_fd);
    eng_log_set_level(ENG_LOG_INFO);

    struct live_rig r;
    live_rig_open(&r, work, "spool-two", k.port, &retry_cfg);
    const char *locals[] = { "tempfail-once-bob", "carol" };
    queue_id_t id = enqueue(&r, 2, locals);

    LIVE_RIG_RUN_UNTIL(&r, deferred, 1, 5000);
    uint64_t t1 = live_now_ms();
    struct eng_worker_stats s = live_rig_stats(&r);
    assert_int_equal(s.attempts, 1);
    assert_int_equal(s.delivered, 1); /* carol, durable */
    struct queue_envelope *env = read_deferred(&r, id);
    assert_greylisted(&env->rcpts[0]);
    const struct queue_rcpt *carol = &env->rcpts[1];
    assert_int_equal(carol->state, QUEUE_RCPT_DELIVERED);
    assert_int_equal(carol->attempts, 1);
    assert_int_equal(carol->last.kind, QUEUE_RESULT_SMTP);
    assert_int_equal(carol->last.code, 250);
    int64_t next = env->next_attempt;
    assert_true(next >= env->rcpts[0].last.when + FIRST);
    queue_envelope_free(env);

    uint64_t seen = await_retry(&r, next);
    assert_true(seen >= (uint64_t)next * 1000);
    assert_true(live_now_ms() - t1 >= (FIRST - 1) * 1000);

    LIVE_RIG_RUN_UNTIL(&r, removed, 1, 5000);
    s = live_rig_stats(&r);
    assert_int_equal(s.attempts, 2);
    assert_int_equal(s.deferred, 1);
    assert_int_equal(s.delivered, 2);
    assert_int_equal(s.bounced, 0);
    assert_int_equal(s.dsns, 0);
    assert_int_equal(s.errors, 0);
    live_rig_stop(&r);
    log_restore();
    assert_int_equal(queue_spool_read(r.spool, id, &env, NULL, NULL), QUEUE_ERR_NOT_FOUND);
    assert_int_equal(live_spool_count(r.dir, &r.spool), 0);

    /* Attempt 1 tried both (bob deferred, carol delivered); attempt 2 only bob. */
    json_t *lines[4];
    assert_int_equal(read_delivery_log(logpath, lines, 4), 2);
    json_t *a = json_object_get(lines[0], "recipients");
    assert_int_equal(json_array_size(a), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(a, 0), "state")),
                        "deferred");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(a, 0), "code")), 451);
    assert_string_equal(json_string_value(json_object_get(json_array_get(a, 1), "addr")),
                        "carol@" DOMAIN);
    assert_string_equal(json_string_value(json_object_get(json_array_get(a, 1), "state")),
                        "delivered");
    assert_only_rcpt(lines[1], "tempfail-once-bob@" DOMAIN, "delivered");
    assert_string_equal(json_string_value(json_object_get(lines[1], "result")), "delivered");
    json_decref(lines[0]);
    json_decref(lines[1]);

    /* The receiver's side: two messages, one RCPT accepted in each, bob refused once. */
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 2);
    assert_int_equal(c.connections, 2);
    assert_int_equal(c.accepted, 2);
    assert_int_equal(c.greylisted, 1);
    assert_int_equal(c.refused, 1);
    live_rig_close(&r);
}

/* ---- fixture ------------------------------------------------------------------------------ */

int main(void)
{
    static const struct live_suite suite = {
        .debug_env = "RETRY_LIVE_DEBUG", .work = work, .mx_name = MX_NAME, .zone = zone
    };
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_tempfail_then_accept, sink_teardown),
        cmocka_unit_test_teardown(test_partial_then_retry_one, log_teardown),
    };
    return live_main(&suite, tests);
}
