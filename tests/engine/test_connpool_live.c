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
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
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

#include <arpa/inet.h>
#include <cmocka.h>
#include <jansson.h>

#include "engine/capcache.h"
#include "engine/connpool.h"
#include "engine/deliver.h"
#include "engine/dns_loop.h"
#include "engine/log.h"
#include "engine/loop.h"
#include "queue/queue.h"
#include "tests/dns/dnsmasq_fixture.h"
#include "tests/engine/sink_fixture.h"
#include "tests/pki/testpki.h"
#include "tls/tls.h"

#define MX_NAME "mx.floormta.test"

static const char zone[] = "local-ttl=60\n"
                           "host-record=mx.floormta.test,127.0.0.3\n"
                           "host-record=mx1.floormta.test,127.0.0.2\n"
                           "mx-host=good.floormta.test,mx.floormta.test,10\n"
                           "mx-host=also.floormta.test,mx.floormta.test,10\n"
                           "mx-host=other.floormta.test,mx1.floormta.test,10\n";

static char work[] = "/tmp/floormta-connpool-live-XXXXXX";
static struct tls_ctx *tls;
static struct dnsq Q;

static const char body[] = "From: a@sender.test\r\nSubject: t\r\n\r\nhello\r\n";

/* ---- one engine: loop, resolver, session cache, pool ---------------------------------------- */

struct env {
    struct eng_loop *loop;
    struct eng_dns *dns;
    struct tls_cache *tcache;
    struct eng_connpool *pool;
    uint16_t port;
    const struct sockaddr_storage *sources;
    unsigned nsources;
};

static void env_init(struct env *e, uint16_t port, const struct eng_connpool_config *pcfg)
{
    memset(e, 0, sizeof(*e));
    assert_int_equal(eng_loop_new(NULL, &e->loop), 0);
    struct dns_config dcfg = { .servers = Q.server, .timeout_ms = 1000, .tries = 2 };
    assert_int_equal(eng_dns_new(e->loop, &dcfg, &e->dns), 0);
    assert_int_equal(tls_cache_new(64, &e->tcache), 0);
    struct eng_connpool_config c = pcfg ? *pcfg : (struct eng_connpool_config){ 0 };
    c.loop = e->loop;
    assert_int_equal(eng_connpool_new(&c, &e->pool), 0);
    e->port = port;
}

static void env_free(struct env *e)
{
    eng_connpool_free(e->pool);
    eng_dns_free(e->dns);
    eng_loop_free(e->loop);
    tls_cache_free(e->tcache);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A report kept past its callback. */
struct outcome {
    bool done;
    struct eng_deliver_report rep;
    char *json;
    char text[QUEUE_TEXT_MAX];
};

static void on_done(void *arg, const struct eng_deliver_report *rep)
{
    struct outcome *o = arg;
    assert_false(o->done);
    o->done = true;
    o->rep = *rep;
    o->rep.env = NULL;
    o->json = strdup(rep->log_json);
    o->rep.log_json = NULL;
    snprintf(o->text, sizeof(o->text), "%s", rep->env->rcpts[0].last.text);
}

static struct queue_envelope *envelope(const char *domain)
{
    struct queue_envelope *qe = queue_envelope_alloc(1);
    assert_non_null(qe);
    qe->id = 0x1234;
    snprintf(qe->sender, sizeof(qe->sender), "a@sender.test");
    snprintf(qe->domain, sizeof(qe->domain), "%s", domain);
    qe->content_size = sizeof(body) - 1;
    snprintf(qe->rcpts[0].addr, sizeof(qe->rcpts[0].addr), "rcpt@%s", domain);
    qe->rcpts[0].state = QUEUE_RCPT_PENDING;
    return qe;
}

static void start(struct env *e, const char *domain, struct outcome *o)
{
    memset(o, 0, sizeof(*o));
    struct eng_deliver_config cfg = {
        .loop = e->loop,
        .dns = e->dns,
        .tls = tls,
        .tls_cache = e->tcache,
        .pool = e->pool,
        .sources = e->sources,
        .nsources = e->nsources,
        .helo_name = "client.floormta.test",
        .port = e->port,
        .connect_timeout_ms = 5000,
        .reply_timeout_ms = 5000,
    };
    struct queue_envelope *qe = envelope(domain);
    assert_int_equal(eng_deliver_start(&cfg, qe, body, sizeof(body) - 1, on_done, o), 0);
    queue_envelope_free(qe); /* the attempt has its own copy */
}

/* Runs the loop until every outcome is done; checks the pool never exceeds max_conns
 * (0 = no check) meanwhile. */
static void run_until_done(struct env *e, struct outcome *o, unsigned n, unsigned max_conns)
{
    uint64_t end = now_ms() + 20000;
    for (;;) {
        unsigned done = 0;
        for (unsigned i = 0; i < n; i++)
            done += o[i].done;
        if (done == n)
            return;
        if (now_ms() > end)
            fail_msg("%u of %u attempts finished", done, n);
        assert_true(eng_loop_run_once(e->loop, 20) >= 0);
        if (max_conns) {
            struct eng_connpool_stats st;
            eng_connpool_stats(e->pool, &st);
            assert_true(st.total <= max_conns);
        }
    }
}

static void attempt(struct env *e, const char *domain, struct outcome *o)
{
    start(e, domain, o);
    run_until_done(e, o, 1, 0);
}

static void outcome_free(struct outcome *o)
{
    free(o->json);
    o->json = NULL;
}

static void assert_json_field(const struct outcome *o, const char *path1, const char *path2,
                              const char *want)
{
    json_error_t jerr;
    json_t *j = json_loads(o->json, 0, &jerr);
    if (!j)
        fail_msg("delivery log line does not parse: %s", o->json);
    json_t *v = json_object_get(j, path1);
    if (path2)
        v = json_object_get(v, path2);
    if (!json_is_string(v) || strcmp(json_string_value(v), want) != 0)
        fail_msg("%s%s%s is not \"%s\" in %s", path1, path2 ? "." : "", path2 ? path2 : "", want,
                 o->json);
    json_decref(j);
}

/* ---- tests ------------------------------------------------------------------------------- */

/* One connection carries every message, for the domain and for another domain whose MX
 * is the same host name. */
static void test_reuse(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=tls1.3", NULL);
    struct env e;
    env_init(&e, k.port, NULL);
    struct outcome o;
    for (unsigned i = 0; i < 6; i++) {
        attempt(&e, i % 2 ? "also.floormta.test" : "good.floormta.test", &o);
        assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
        assert_int_equal(o.rep.reused, i > 0);
        assert_int_equal(o.rep.connections, i == 0 ? 1 : 0);
        assert_true(o.rep.verdict.pass);
        assert_string_equal(o.rep.mx_host, MX_NAME);
        assert_json_field(&o, "connection", NULL, i > 0 ? "reused" : "new");
        outcome_free(&o);
    }
    struct eng_connpool_stats st;
    eng_connpool_stats(e.pool, &st);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.reuses, 5);
    assert_int_equal(st.idle, 1);
    env_free(&e); /* QUIT */
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
    struct env e;
    struct eng_connpool_config pcfg = { .max_per_host = 2 };
    env_init(&e, k.port, &pcfg);
    struct outcome o[8];
    for (unsigned i = 0; i < 8; i++)
        start(&e, "good.floormta.test", &o[i]);
    run_until_done(&e, o, 8, 2);
    unsigned reused = 0;
    for (unsigned i = 0; i < 8; i++) {
        assert_int_equal(o[i].rep.result, ENG_DELIVER_DELIVERED);
        reused += o[i].rep.reused;
        outcome_free(&o[i]);
    }
    assert_int_equal(reused, 6);
    struct eng_connpool_stats st;
    eng_connpool_stats(e.pool, &st);
    assert_int_equal(st.connects, 2);
    assert_true(st.waits >= 6);
    assert_int_equal(st.waiting, 0);
    env_free(&e);
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
    struct env e;
    struct eng_connpool_config pcfg = { .max_msgs_per_conn = 2 };
    env_init(&e, k.port, &pcfg);
    struct outcome o;
    unsigned resumed = 0, fresh = 0;
    for (unsigned i = 0; i < 5; i++) {
        attempt(&e, "good.floormta.test", &o);
        assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
        assert_int_equal(o.rep.reused, i % 2 == 1);
        if (!o.rep.reused) {
            fresh++;
            resumed += o.rep.verdict.ev.resumed;
            assert_json_field(&o, "tls", "session", i == 0 ? "full" : "resumed");
            /* A resumed session is judged on the chain it was verified with. */
            assert_true(o.rep.verdict.ev.has_cert);
        }
        outcome_free(&o);
    }
    assert_int_equal(fresh, 3);
    assert_int_equal(resumed, 2);
    struct tls_cache_stats ts;
    tls_cache_stats(e.tcache, &ts);
    assert_true(ts.hits >= 2);
    env_free(&e);
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
    struct env e;
    struct eng_connpool_config pcfg = { .idle_timeout_ms = 200 };
    env_init(&e, k.port, &pcfg);
    struct outcome o;
    attempt(&e, "good.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    outcome_free(&o);
    struct eng_connpool_stats st;
    eng_connpool_stats(e.pool, &st);
    assert_int_equal(st.idle, 1);
    uint64_t end = now_ms() + 5000;
    while (st.total > 0 && now_ms() < end) {
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
    outcome_free(&o);
    env_free(&e);
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
    struct env e;
    env_init(&e, k.port, NULL);
    struct outcome o;
    attempt(&e, "good.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    outcome_free(&o);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 1);
    struct eng_connpool_stats st;
    eng_connpool_stats(e.pool, &st);
    uint64_t end = now_ms() + 5000;
    while (st.total > 0 && now_ms() < end) {
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
    outcome_free(&o);
    env_free(&e);
}

/* One connection in the whole pool: the idle one to mx is closed to make room for
 * mx1. */
static void test_total_limit(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=tls1.3", "127.0.0.2=wildcard", NULL);
    struct env e;
    struct eng_connpool_config pcfg = { .max_total = 1 };
    env_init(&e, k.port, &pcfg);
    struct outcome o[2];
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
    outcome_free(&o[0]);
    outcome_free(&o[1]);
    env_free(&e);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 2);
    assert_int_equal(c.connections, 2);
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
    struct env e;
    env_init(&e, k.port, NULL);
    struct sockaddr_storage good = source_v4("127.0.0.9");
    e.sources = &good;
    e.nsources = 1;
    struct outcome o;
    attempt(&e, "good.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    outcome_free(&o);
    env_free(&e);

    env_init(&e, k.port, NULL);
    struct sockaddr_storage bad = source_v4("192.0.2.77"); /* TEST-NET-1: not ours */
    e.sources = &bad;
    e.nsources = 1;
    attempt(&e, "good.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DEFERRED);
    if (!strstr(o.text, "assign requested address"))
        fail_msg("expected a bind failure, got: %s", o.text);
    outcome_free(&o);
    env_free(&e);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 1);
    assert_int_equal(c.connections, 1);
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
    signal(SIGPIPE, SIG_IGN);
    eng_log_set_level(getenv("CONNPOOL_LIVE_DEBUG") ? ENG_LOG_DEBUG : ENG_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_reuse, sink_teardown),
        cmocka_unit_test_teardown(test_per_host_limit, sink_teardown),
        cmocka_unit_test_teardown(test_msgs_per_conn_and_resumption, sink_teardown),
        cmocka_unit_test_teardown(test_idle_timeout, sink_teardown),
        cmocka_unit_test_teardown(test_receiver_closes_idle, sink_teardown),
        cmocka_unit_test_teardown(test_total_limit, sink_teardown),
        cmocka_unit_test_teardown(test_egress_source, sink_teardown),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
