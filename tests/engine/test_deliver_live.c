/*
 * tests/engine/test_deliver_live.c — delivery attempts (engine/deliver.h) end to end:
 * a real dnsmasq on 127.0.0.1 serves the zone below, and floormta-sink listens on
 * loopback addresses (127.0.0.2, .3) sharing one port, in the receiver profiles each
 * test needs (one sink process per test, so its counters are the test's own).
 *
 *   mixed.floormta.test  MX 10 mx1 (127.0.0.2), MX 20 mx (127.0.0.3)
 *   old.floormta.test    MX 10 mx1 (127.0.0.2)
 *   good.floormta.test   MX 10 mx (127.0.0.3)
 *   mx.floormta.test     no MX, an address: implicit MX
 *   null.floormta.test   null MX
 *   nothere.floormta.test  NXDOMAIN
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
#include <jansson.h>

#include "engine/capcache.h"
#include "engine/deliver.h"
#include "queue/queue.h"
#include "tests/dns/dnsmasq_fixture.h"
#include "tests/engine/deliver_fixture.h"
#include "tests/engine/sink_fixture.h"
#include "tls/tls.h"

#define MX_NAME "mx.floormta.test"

static const char zone[] = "local-ttl=60\n"
                           "mx-host=mixed.floormta.test,mx1.floormta.test,10\n"
                           "mx-host=mixed.floormta.test,mx.floormta.test,20\n"
                           "host-record=mx1.floormta.test,127.0.0.2\n"
                           "host-record=mx.floormta.test,127.0.0.3\n"
                           "mx-host=old.floormta.test,mx1.floormta.test,10\n"
                           "mx-host=good.floormta.test,mx.floormta.test,10\n"
                           "dns-rr=null.floormta.test,15,000000\n";

static char work[] = "/tmp/floormta-deliver-live-XXXXXX";

static const struct live_env_config env_cfg = { .capcache = true };

/* One attempt of qe on e, with the capability cache; waits for its report. */
static void attempt(struct live_env *e, const struct queue_envelope *qe, struct live_outcome *o)
{
    struct eng_deliver_config cfg = live_deliver_config(e);
    live_start(&cfg, qe, o);
    assert_false(o->done); /* never from inside the call */
    live_run_until(e->loop, &o->done, 15000);
}

/* The delivery-log line parses and carries its fields; returns it (json_decref it). */
static json_t *check_json(const struct live_outcome *o, const char *result)
{
    json_t *j = live_json(o);
    assert_string_equal(json_string_value(json_object_get(j, "queue_id")), "0000000000001234");
    assert_string_equal(json_string_value(json_object_get(j, "domain")), o->env->domain);
    assert_string_equal(json_string_value(json_object_get(j, "result")), result);
    json_t *r = json_object_get(j, "recipients");
    assert_true(json_is_array(r));
    assert_int_equal(json_array_size(r), o->env->nrcpts);
    static const char *const keys[] = { "mx",     "address",    "smtp_reply", "tls", "verdict",
                                        "reason", "connection", "durations",  "dns" };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (!json_object_get(j, keys[i]))
            fail_msg("delivery log line lacks %s: %s", keys[i], o->json);
    json_t *t = json_object_get(j, "durations");
    assert_true(json_is_integer(json_object_get(t, "dns_ms")));
    assert_true(json_is_integer(json_object_get(t, "connect_ms")));
    assert_true(json_is_integer(json_object_get(t, "txn_ms")));
    return j;
}

/* ---- tests -------------------------------------------------------------------------------- */

/* The primary is below the floor: delivered through the secondary, primary cached. */
static void test_secondary_after_refusal(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.2=tls1.0-only", "127.0.0.3=tls1.2", NULL);
    struct live_env e;
    live_env_init(&e, k.port, &env_cfg);
    struct queue_envelope *qe = live_envelope("mixed.floormta.test", 1, "ok");
    struct live_outcome o;
    attempt(&e, qe, &o);

    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    assert_int_equal(o.env->rcpts[0].state, QUEUE_RCPT_DELIVERED);
    assert_int_equal(o.env->rcpts[0].attempts, 1);
    assert_int_equal(o.env->rcpts[0].last.kind, QUEUE_RESULT_SMTP);
    assert_int_equal(o.env->rcpts[0].last.code, 250);
    char remote[64];
    snprintf(remote, sizeof(remote), MX_NAME "[127.0.0.3]:%u", (unsigned)k.port);
    assert_string_equal(o.env->rcpts[0].last.remote, remote);
    assert_true(o.rep.transacted);
    assert_string_equal(o.rep.mx_host, MX_NAME);
    assert_int_equal(o.rep.verdict.ev.version, TLS_VERSION_1_2);
    assert_true(o.rep.verdict.pass);
    assert_int_equal(o.rep.connections, 2);
    assert_int_equal(qe->rcpts[0].state, QUEUE_RCPT_PENDING); /* the caller's is untouched */

    json_t *j = check_json(&o, "delivered");
    assert_string_equal(json_string_value(json_object_get(j, "mx")), MX_NAME);
    json_t *t = json_object_get(j, "tls");
    assert_string_equal(json_string_value(json_object_get(t, "version")), "TLSv1.2");
    assert_true(json_string_length(json_object_get(t, "cipher")) > 0);
    live_assert_contains(json_string_value(json_object_get(t, "subject")), MX_NAME);
    assert_true(json_is_string(json_object_get(t, "issuer")));
    assert_int_equal(json_string_length(json_object_get(t, "fingerprint")), 64);
    assert_string_equal(json_string_value(json_object_get(t, "session")), "full");
    assert_string_equal(json_string_value(json_object_get(j, "verdict")), "pass");
    assert_string_equal(json_string_value(json_object_get(j, "connection")), "new");
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "none");
    assert_string_equal(json_string_value(json_object_get(j, "refused_before")),
                        "version_below_floor");
    live_assert_contains(json_string_value(json_object_get(j, "smtp_reply")), "250");
    json_decref(j);

    struct eng_capcache_entry ce;
    assert_int_equal(eng_capcache_check(e.cap, "mx1.floormta.test", k.port, time(NULL), &ce),
                     ENG_CAPCACHE_BLOCKED);
    assert_int_equal(ce.reason, TLS_REASON_VERSION_BELOW_FLOOR);
    assert_int_equal(eng_capcache_check(e.cap, MX_NAME, k.port, time(NULL), NULL),
                     ENG_CAPCACHE_PASSED);

    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 1);
    assert_int_equal(c.connections, 2);
    live_outcome_free(&o);
    queue_envelope_free(qe);
    live_env_free(&e);
}

/* The only MX is below the floor: deferred with the reason; then from the cache. */
static void test_below_floor_then_cached(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.2=tls1.0-only", NULL);
    struct live_env e;
    live_env_init(&e, k.port, &env_cfg);
    struct queue_envelope *qe = live_envelope("old.floormta.test", 2, "a", "b");
    struct live_outcome o;
    attempt(&e, qe, &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DEFERRED);
    assert_false(o.rep.transacted);
    assert_int_equal(o.rep.refusal, TLS_REASON_VERSION_BELOW_FLOOR);
    assert_int_equal(o.rep.connections, 1);
    for (unsigned i = 0; i < 2; i++) {
        const struct queue_rcpt *r = &o.env->rcpts[i];
        assert_int_equal(r->state, QUEUE_RCPT_DEFERRED);
        assert_int_equal(r->attempts, 1);
        assert_int_equal(r->last.kind, QUEUE_RESULT_TLS);
        assert_int_equal(r->last.code / 100, 4);
        assert_string_equal(r->last.enhanced, "4.7.5");
        live_assert_contains(r->last.text, "version_below_floor");
    }
    json_t *j = check_json(&o, "deferred");
    assert_string_equal(json_string_value(json_object_get(j, "verdict")), "refuse");
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "version_below_floor");
    json_decref(j);

    /* Second attempt, with the updated envelope: no connection at all. */
    struct live_outcome o2;
    attempt(&e, o.env, &o2);
    assert_int_equal(o2.rep.result, ENG_DELIVER_DEFERRED);
    assert_int_equal(o2.rep.connections, 0);
    assert_int_equal(o2.rep.skipped_cached, 1);
    assert_int_equal(o2.rep.refusal, TLS_REASON_VERSION_BELOW_FLOOR);
    for (unsigned i = 0; i < 2; i++) {
        const struct queue_rcpt *r = &o2.env->rcpts[i];
        assert_int_equal(r->state, QUEUE_RCPT_DEFERRED);
        assert_int_equal(r->attempts, 2);
        assert_int_equal(r->last.kind, QUEUE_RESULT_TLS);
        live_assert_contains(r->last.text, "cached refusal");
        live_assert_contains(r->last.text, "version_below_floor");
    }
    json_decref(check_json(&o2, "deferred"));

    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.connections, 1);
    assert_int_equal(c.messages, 0);
    live_outcome_free(&o);
    live_outcome_free(&o2);
    queue_envelope_free(qe);
    live_env_free(&e);
}

static void test_null_mx(void **state)
{
    (void)state;
    struct live_env e;
    live_env_init(&e, 0, &env_cfg);
    struct queue_envelope *qe = live_envelope("null.floormta.test", 2, "a", "b");
    struct live_outcome o;
    attempt(&e, qe, &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_BOUNCED);
    assert_int_equal(o.rep.dns_outcome, DNS_OUTCOME_NULLMX);
    assert_int_equal(o.rep.connections, 0);
    for (unsigned i = 0; i < 2; i++) {
        const struct queue_rcpt *r = &o.env->rcpts[i];
        assert_int_equal(r->state, QUEUE_RCPT_BOUNCED);
        assert_int_equal(r->last.kind, QUEUE_RESULT_DNS);
        assert_int_equal(r->last.code, 556);
        assert_string_equal(r->last.enhanced, "5.1.10");
        live_assert_contains(r->last.text, "null_mx");
    }
    json_decref(check_json(&o, "bounced"));
    live_outcome_free(&o);
    queue_envelope_free(qe);
    live_env_free(&e);
}

static void test_implicit_mx(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=tls1.2", NULL);
    struct live_env e;
    live_env_init(&e, k.port, &env_cfg);
    struct queue_envelope *qe = live_envelope(MX_NAME, 1, "ok");
    struct live_outcome o;
    attempt(&e, qe, &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    assert_string_equal(o.rep.mx_host, MX_NAME);
    assert_int_equal(o.env->rcpts[0].state, QUEUE_RCPT_DELIVERED);
    json_decref(check_json(&o, "delivered"));
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 1);
    live_outcome_free(&o);
    queue_envelope_free(qe);
    live_env_free(&e);
}

static void test_per_recipient(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=valid", NULL);
    struct live_env e;
    live_env_init(&e, k.port, &env_cfg);
    struct queue_envelope *qe =
            live_envelope("good.floormta.test", 3, "tempfail-x", "reject-y", "ok");
    struct live_outcome o;
    attempt(&e, qe, &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_MIXED);
    assert_int_equal(o.rep.delivered, 1);
    assert_int_equal(o.rep.deferred, 1);
    assert_int_equal(o.rep.bounced, 1);
    const struct queue_rcpt *r = o.env->rcpts;
    assert_int_equal(r[0].state, QUEUE_RCPT_DEFERRED);
    assert_int_equal(r[0].last.code, 451);
    assert_int_equal(r[0].last.kind, QUEUE_RESULT_SMTP);
    assert_int_equal(r[1].state, QUEUE_RCPT_BOUNCED);
    assert_int_equal(r[1].last.code, 550);
    assert_string_equal(r[1].last.enhanced, "5.1.1");
    assert_int_equal(r[2].state, QUEUE_RCPT_DELIVERED);
    assert_int_equal(r[2].last.code, 250);
    for (int i = 0; i < 3; i++)
        assert_int_equal(r[i].attempts, 1);
    json_t *j = check_json(&o, "mixed");
    json_t *a = json_object_get(j, "recipients");
    assert_string_equal(json_string_value(json_object_get(json_array_get(a, 0), "state")),
                        "deferred");
    assert_string_equal(json_string_value(json_object_get(json_array_get(a, 1), "state")),
                        "bounced");
    assert_string_equal(json_string_value(json_object_get(json_array_get(a, 2), "state")),
                        "delivered");
    json_decref(j);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 1);
    live_outcome_free(&o);
    queue_envelope_free(qe);
    live_env_free(&e);
}

static void test_drop_data(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=drop-data", NULL);
    struct live_env e;
    live_env_init(&e, k.port, &env_cfg);
    struct queue_envelope *qe = live_envelope("good.floormta.test", 2, "a", "b");
    struct live_outcome o;
    attempt(&e, qe, &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DEFERRED);
    for (unsigned i = 0; i < 2; i++) {
        assert_int_equal(o.env->rcpts[i].state, QUEUE_RCPT_DEFERRED);
        assert_int_equal(o.env->rcpts[i].last.kind, QUEUE_RESULT_NETWORK);
        assert_int_equal(o.env->rcpts[i].last.code / 100, 4);
    }
    json_decref(check_json(&o, "deferred"));
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 0);
    live_outcome_free(&o);
    queue_envelope_free(qe);
    live_env_free(&e);
}

static void test_nxdomain(void **state)
{
    (void)state;
    struct live_env e;
    live_env_init(&e, 0, &env_cfg);
    struct queue_envelope *qe = live_envelope("nothere.floormta.test", 1, "a");
    struct live_outcome o;
    attempt(&e, qe, &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_BOUNCED);
    assert_int_equal(o.rep.dns_outcome, DNS_OUTCOME_PERMFAIL);
    assert_int_equal(o.rep.connections, 0);
    assert_int_equal(o.env->rcpts[0].state, QUEUE_RCPT_BOUNCED);
    assert_int_equal(o.env->rcpts[0].last.kind, QUEUE_RESULT_DNS);
    assert_int_equal(o.env->rcpts[0].last.code, 550);
    live_assert_contains(o.env->rcpts[0].last.text, "nxdomain");
    json_decref(check_json(&o, "bounced"));
    live_outcome_free(&o);
    queue_envelope_free(qe);
    live_env_free(&e);
}

/* ---- fixture ------------------------------------------------------------------------------ */

int main(void)
{
    static const struct live_suite suite = {
        .debug_env = "DELIVER_LIVE_DEBUG", .work = work, .mx_name = MX_NAME, .zone = zone
    };
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_secondary_after_refusal, sink_teardown),
        cmocka_unit_test_teardown(test_below_floor_then_cached, sink_teardown),
        cmocka_unit_test_teardown(test_null_mx, sink_teardown),
        cmocka_unit_test_teardown(test_implicit_mx, sink_teardown),
        cmocka_unit_test_teardown(test_per_recipient, sink_teardown),
        cmocka_unit_test_teardown(test_drop_data, sink_teardown),
        cmocka_unit_test_teardown(test_nxdomain, sink_teardown),
    };
    return live_main(&suite, tests);
}
