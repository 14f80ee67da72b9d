/*
 * tests/engine/test_connpool_live.c — the connection pool (engine/connpool.h) under
 * real delivery attempts (engine/deliver.h): a real dnsmasq on 127.0.0.1 and
 * floormta-sink on 127.0.0.2 / 127.0.0.3, counting the connections it accepted.
 *
 *   good.floormta.test   MX 10 mx.floormta.test  (127.0.0.3, profile tls1.3)
 *   also.floormta.test   MX 10 mx.floormta.test  (the same MX host name)
 *   other.floormta.test  MX 10 mx1.floormta.test (127.0.0.2, profile wildcard: a
 *                        certificate for *.floormta.test)
 *
 * What is checked: reuse for the same domain and across domains sharing an MX name,
 * the per-host and total limits, messages per connection, TLS session resumption on a
 * new connection, the idle timeout, a receiver closing an idle connection, and egress
 * source addresses. Exit 77 when io_uring is unavailable.
 */
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "engine/connpool.h"
#include "engine/deliver.h"
#include "queue/queue.h"
#include "tests/dns/dnsmasq_fixture.h"
#include "tests/engine/deliver_fixture.h"
#include "tests/engine/sink_fixture.h"
#include "tls/tls.h"

#define MX_NAME "mx.floormta.test"

static const char zone[] = "local-ttl=60\n"
                           "host-record=mx.floormta.test,127.0.0.3\n"
                           "host-record=mx1.floormta.test,127.0.0.2\n"
                           "mx-host=good.floormta.test,mx.floormta.test,10\n"
                           "mx-host=also.floormta.test,mx.floormta.test,10\n"
                           "mx-host=other.floormta.test,mx1.floormta.test,10\n";

static char work[] = "/tmp/floormta-connpool-live-XXXXXX";

/* ---- one engine: loop, resolver, session cache, pool ---------------------------------------- */

/* The egress source addresses of the env's attempts (none: env_init clears them). */
static const struct sockaddr_storage *sources;
static unsigned nsources;

static void env_init(struct live_env *e, uint16_t port, const struct eng_connpool_config *pcfg)
{
    struct live_env_config cfg = { .tls_cache = true, .pool = true, .pool_cfg = pcfg };
    live_env_init(e, port, &cfg);
    sources = NULL;
    nsources = 0;
}

static void start(struct live_env *e, const char *domain, struct live_outcome *o)
{
    struct eng_deliver_config cfg = live_deliver_config(e);
    cfg.sources = sources;
    cfg.nsources = nsources;
    struct queue_envelope *qe = live_envelope(domain, 1, "rcpt");
    live_start(&cfg, qe, o);
    queue_envelope_free(qe); /* the attempt has its own copy */
}

/* Runs the loop until every outcome is done; checks the pool never exceeds max_conns
 * (0 = no check) meanwhile. */
static void run_until_done(struct live_env *e, struct live_outcome *o, unsigned n,
                           unsigned max_conns)
{
    uint64_t end = live_now_ms() + 20000;
    for (;;) {
        unsigned done = 0;
        for (unsigned i = 0; i < n; i++)
            done += o[i].done;
        if (done == n)
            return;
        if (live_now_ms() > end)
            fail_msg("%u of %u attempts finished", done, n);
        assert_true(eng_loop_run_once(e->loop, 20) >= 0);
        if (max_conns) {
            struct eng_connpool_stats st;
            eng_connpool_stats(e->pool, &st);
            assert_true(st.total <= max_conns);
        }
    }
}

static void attempt(struct live_env *e, const char *domain, struct live_outcome *o)
{
    start(e, domain, o);
    run_until_done(e, o, 1, 0);
}

/* ---- tests ------------------------------------------------------------------------------- */

/* One connection carries every message, for the domain and for another domain whose MX
 * is the same host name. */
static void test_reuse(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=tls1.3", NULL);
    struct live_env e;
    env_init(&e, k.port, NULL);
    struct live_outcome o;
    for (unsigned i = 0; i < 6; i++) {
        attempt(&e, i % 2 ? "also.floormta.test" : "good.floormta.test", &o);
        assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
        assert_int_equal(o.rep.reused, i > 0);
        assert_int_equal(o.rep.connections, i == 0 ? 1 : 0);
        assert_true(o.rep.verdict.pass);
        assert_string_equal(o.rep.mx_host, MX_NAME);
        live_assert_json_str(&o, "connection", NULL, i > 0 ? "reused" : "new");
        live_outcome_free(&o);
    }
    struct eng_connpool_stats st;
    eng_connpool_stats(e.pool, &st);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.reuses, 5);
    assert_int_equal(st.idle, 1);
    live_env_free(&e); /* QUIT */
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 6);
    assert_int_equal(c.connections, 1);
    assert_int_equal(c.handshakes, 1);
    assert_int_equal(c.resumed, 0);
}

/* Eight attempts at once, two connections per host: the others wait their turn and go
 * over the same two connections. */
static void test_per_host_limit(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=tls1.3", NULL);
    struct live_env e;
    struct eng_connpool_config pcfg = { .max_per_host = 2 };
    env_init(&e, k.port, &pcfg);
    struct live_outcome o[8];
    for (unsigned i = 0; i < 8; i++)
        start(&e, "good.floormta.test", &o[i]);
    run_until_done(&e, o, 8, 2);
    unsigned reused = 0;
    for (unsigned i = 0; i < 8; i++) {
        assert_int_equal(o[i].rep.result, ENG_DELIVER_DELIVERED);
        reused += o[i].rep.reused;
        live_outcome_free(&o[i]);
    }
    assert_int_equal(reused, 6);
    struct eng_connpool_stats st;
    eng_connpool_stats(e.pool, &st);
    assert_int_equal(st.connects, 2);
    assert_true(st.waits >= 6);
    assert_int_equal(st.waiting, 0);
    live_env_free(&e);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 8);
    assert_int_equal(c.connections, 2);
}

/* At most two messages per connection: five messages, three connections; the later
 * connections resume the TLS session of the first. */
static void test_msgs_per_conn_and_resumption(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=tls1.3", NULL);
    struct live_env e;
    struct eng_connpool_config pcfg = { .max_msgs_per_conn = 2 };
    env_init(&e, k.port, &pcfg);
    struct live_outcome o;
    unsigned resumed = 0, fresh = 0;
    for (unsigned i = 0; i < 5; i++) {
        attempt(&e, "good.floormta.test", &o);
        assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
        assert_int_equal(o.rep.reused, i % 2 == 1);
        if (!o.rep.reused) {
            fresh++;
            resumed += o.rep.verdict.ev.resumed;
            live_assert_json_str(&o, "tls", "session", i == 0 ? "full" : "resumed");
            /* A resumed session is judged on the chain it was verified with. */
            assert_true(o.rep.verdict.ev.has_cert);
        }
        live_outcome_free(&o);
    }
    assert_int_equal(fresh, 3);
    assert_int_equal(resumed, 2);
    struct tls_cache_stats ts;
    tls_cache_stats(e.tcache, &ts);
    assert_true(ts.hits >= 2);
    live_env_free(&e);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 5);
    assert_int_equal(c.connections, 3);
    assert_int_equal(c.handshakes, 3);
    assert_int_equal(c.resumed, 2); /* the receiver saw it too */
}

/* An idle connection is closed after the idle timeout. */
static void test_idle_timeout(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=tls1.3", NULL);
    struct live_env e;
    struct eng_connpool_config pcfg = { .idle_timeout_ms = 200 };
    env_init(&e, k.port, &pcfg);
    struct live_outcome o;
    attempt(&e, "good.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    live_outcome_free(&o);
    struct eng_connpool_stats st;
    eng_connpool_stats(e.pool, &st);
    assert_int_equal(st.idle, 1);
    uint64_t end = live_now_ms() + 5000;
    while (st.total > 0 && live_now_ms() < end) {
        assert_true(eng_loop_run_once(e.loop, 50) >= 0);
        eng_connpool_stats(e.pool, &st);
    }
    assert_int_equal(st.total, 0);
    assert_int_equal(st.idle, 0);
    assert_int_equal(st.hosts, 0);
    /* The next message needs a new connection. */
    attempt(&e, "good.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    assert_false(o.rep.reused);
    live_outcome_free(&o);
    live_env_free(&e);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 2);
    assert_int_equal(c.connections, 2);
}

/* The receiver goes away while a connection idles: the pool notices at once, not when
 * the next message is handed to a dead connection. */
static void test_receiver_closes_idle(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=tls1.3", NULL);
    struct live_env e;
    env_init(&e, k.port, NULL);
    struct live_outcome o;
    attempt(&e, "good.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    live_outcome_free(&o);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 1);
    struct eng_connpool_stats st;
    eng_connpool_stats(e.pool, &st);
    uint64_t end = live_now_ms() + 5000;
    while (st.total > 0 && live_now_ms() < end) {
        assert_true(eng_loop_run_once(e.loop, 50) >= 0);
        eng_connpool_stats(e.pool, &st);
    }
    assert_int_equal(st.total, 0);
    /* Nothing listens now: the next attempt connects (it is not handed a dead
     * connection) and is deferred for the network. */
    attempt(&e, "good.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DEFERRED);
    assert_false(o.rep.reused);
    assert_int_equal(o.rep.connections, 1);
    live_outcome_free(&o);
    live_env_free(&e);
}

/* One connection in the whole pool: the idle one to mx is closed to make room for
 * mx1. */
static void test_total_limit(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=tls1.3", "127.0.0.2=wildcard", NULL);
    struct live_env e;
    struct eng_connpool_config pcfg = { .max_total = 1 };
    env_init(&e, k.port, &pcfg);
    struct live_outcome o[2];
    attempt(&e, "good.floormta.test", &o[0]);
    assert_int_equal(o[0].rep.result, ENG_DELIVER_DELIVERED);
    start(&e, "other.floormta.test", &o[1]);
    run_until_done(&e, &o[1], 1, 1);
    assert_int_equal(o[1].rep.result, ENG_DELIVER_DELIVERED);
    assert_string_equal(o[1].rep.mx_host, "mx1.floormta.test");
    struct eng_connpool_stats st;
    eng_connpool_stats(e.pool, &st);
    assert_int_equal(st.connects, 2);
    assert_int_equal(st.idle_quits, 1);
    assert_int_equal(st.waits, 1);
    live_outcome_free(&o[0]);
    live_outcome_free(&o[1]);
    live_env_free(&e);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 2);
    assert_int_equal(c.connections, 2);
}

/* The total is full and a second attempt for the same MX host waits for it (in the
 * pool's global list, not the host's); the first connection then closes (one message
 * per connection), which leaves its host with no connection at all: the host must stay
 * for its global waiter, which then gets the slot. (The host used to be freed there,
 * and the waiter granted a slot on freed memory: the pool's total never came back to
 * zero and its stop waited forever.) */
static void test_global_waiter_keeps_host(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=tls1.3", NULL);
    struct live_env e;
    struct eng_connpool_config pcfg = { .max_total = 1, .max_msgs_per_conn = 1 };
    env_init(&e, k.port, &pcfg);
    struct live_outcome o[2];
    start(&e, "good.floormta.test", &o[0]);
    start(&e, "also.floormta.test", &o[1]);
    run_until_done(&e, o, 2, 1);
    assert_int_equal(o[0].rep.result, ENG_DELIVER_DELIVERED);
    assert_int_equal(o[1].rep.result, ENG_DELIVER_DELIVERED);
    struct eng_connpool_stats st;
    uint64_t end = live_now_ms() + 10000;
    do {
        assert_true(eng_loop_run_once(e.loop, 20) >= 0);
        eng_connpool_stats(e.pool, &st);
    } while (st.total > 0 && live_now_ms() < end);
    assert_int_equal(st.total, 0);
    assert_int_equal(st.connects, 2);
    assert_int_equal(st.waits, 1);
    live_outcome_free(&o[0]);
    live_outcome_free(&o[1]);
    live_env_free(&e);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 2);
}

static struct sockaddr_storage source_v4(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    s4->sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
    return ss;
}

/* Connections leave from the configured source address: a loopback one works, one
 * that is not this machine's fails to bind (so the binding is real). */
static void test_egress_source(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=tls1.3", NULL);
    struct live_env e;
    env_init(&e, k.port, NULL);
    struct sockaddr_storage good = source_v4("127.0.0.9");
    sources = &good;
    nsources = 1;
    struct live_outcome o;
    attempt(&e, "good.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    live_outcome_free(&o);
    live_env_free(&e);

    env_init(&e, k.port, NULL);
    struct sockaddr_storage bad = source_v4("192.0.2.77"); /* TEST-NET-1: not ours */
    sources = &bad;
    nsources = 1;
    attempt(&e, "good.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DEFERRED);
    if (!strstr(o.env->rcpts[0].last.text, "assign requested address"))
        fail_msg("expected a bind failure, got: %s", o.env->rcpts[0].last.text);
    live_outcome_free(&o);
    live_env_free(&e);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 1);
    assert_int_equal(c.connections, 1);
}

/* ---- fixture ------------------------------------------------------------------------------ */

int main(void)
{
    static const struct live_suite suite = {
        .debug_env = "CONNPOOL_LIVE_DEBUG", .work = work, .mx_name = MX_NAME, .zone = zone
    };
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_reuse, sink_teardown),
        cmocka_unit_test_teardown(test_per_host_limit, sink_teardown),
        cmocka_unit_test_teardown(test_msgs_per_conn_and_resumption, sink_teardown),
        cmocka_unit_test_teardown(test_idle_timeout, sink_teardown),
        cmocka_unit_test_teardown(test_receiver_closes_idle, sink_teardown),
        cmocka_unit_test_teardown(test_total_limit, sink_teardown),
        cmocka_unit_test_teardown(test_global_waiter_keeps_host, sink_teardown),
        cmocka_unit_test_teardown(test_egress_source, sink_teardown),
    };
    return live_main(&suite, tests);
}
