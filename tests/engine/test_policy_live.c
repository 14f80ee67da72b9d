/*
 * tests/engine/test_policy_live.c — per-domain TLS policy (engine/policy.h) in real
 * delivery attempts (engine/deliver.h) with the connection pool and the capability
 * cache: a real dnsmasq on 127.0.0.1 and floormta-sink on loopback.
 *
 *   opp1    MX mxnone (127.0.0.2, profile none: no STARTTLS)       opportunistic
 *   opp2    MX mxself (127.0.0.3, profile self-signed)             opportunistic
 *   strict  MX mxself                                               (default: the floor)
 *   bounce  MX mxself                                               on_refusal=bounce
 *   v13     MX mx     (127.0.0.4: tls1.2 in one test, untrusted-ca floor=1.3
 *                      in the other; certificates for mx.floormta.test)
 *   plain   MX mx                                                   (default)
 *   pinned  MX mx                                                   ca=<evil-ca.crt>
 * (every name under .floormta.test)
 *
 * Checks: opportunistic delivers in plaintext or over TLS below the floor and says so
 * (JSON transport / verdict / reason), the floor refuses the same receivers; a refusal
 * under on_refusal=bounce bounces with 5.7.x; a floor=1.3 domain is never lent a TLS 1.2
 * connection of another domain and its refusal does not block the host for the others;
 * a pinned CA accepts what the default trust store refuses, and the other way round.
 * Exit 77 when io_uring is unavailable.
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
#include <jansson.h>

#include "engine/capcache.h"
#include "engine/connpool.h"
#include "engine/deliver.h"
#include "engine/dns_loop.h"
#include "engine/log.h"
#include "engine/loop.h"
#include "engine/policy.h"
#include "queue/queue.h"
#include "tests/dns/dnsmasq_fixture.h"
#include "tests/engine/sink_fixture.h"
#include "tests/pki/testpki.h"
#include "tls/tls.h"

#define MX_NAME "mx.floormta.test"

static const char zone[] = "local-ttl=60\n"
                           "host-record=mxnone.floormta.test,127.0.0.2\n"
                           "host-record=mxself.floormta.test,127.0.0.3\n"
                           "host-record=mx.floormta.test,127.0.0.4\n"
                           "mx-host=opp1.floormta.test,mxnone.floormta.test,10\n"
                           "mx-host=opp2.floormta.test,mxself.floormta.test,10\n"
                           "mx-host=strict.floormta.test,mxself.floormta.test,10\n"
                           "mx-host=bounce.floormta.test,mxself.floormta.test,10\n"
                           "mx-host=v13.floormta.test,mx.floormta.test,10\n"
                           "mx-host=plain.floormta.test,mx.floormta.test,10\n"
                           "mx-host=pinned.floormta.test,mx.floormta.test,10\n";

static char work[] = "/tmp/floormta-policy-live-XXXXXX";
static struct tls_ctx *unused_tls;
static struct eng_policy_table *policies;
static struct dnsq Q;

static const char body[] = "From: a@sender.test\r\nSubject: t\r\n\r\nhello\r\n";

struct env {
    struct eng_loop *loop;
    struct eng_dns *dns;
    struct eng_capcache *cap;
    struct eng_connpool *pool;
    uint16_t port;
};

static void env_init(struct env *e, uint16_t port)
{
    memset(e, 0, sizeof(*e));
    assert_int_equal(eng_loop_new(NULL, &e->loop), 0);
    struct dns_config dcfg = { .servers = Q.server, .timeout_ms = 1000, .tries = 2 };
    assert_int_equal(eng_dns_new(e->loop, &dcfg, &e->dns), 0);
    assert_int_equal(eng_capcache_new(NULL, &e->cap), 0);
    struct eng_connpool_config pcfg = { .loop = e->loop };
    assert_int_equal(eng_connpool_new(&pcfg, &e->pool), 0);
    e->port = port;
}

static void env_free(struct env *e)
{
    eng_connpool_free(e->pool);
    eng_dns_free(e->dns);
    eng_loop_free(e->loop);
    eng_capcache_free(e->cap);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* What a test looks at after the attempt. */
struct outcome {
    bool done;
    struct eng_deliver_report rep;
    struct queue_result last; /* the recipient's */
    json_t *json;
};

static void on_done(void *arg, const struct eng_deliver_report *rep)
{
    struct outcome *o = arg;
    assert_false(o->done);
    o->done = true;
    o->rep = *rep;
    o->rep.env = NULL;
    o->rep.log_json = NULL;
    o->last = rep->env->rcpts[0].last;
    json_error_t jerr;
    o->json = json_loads(rep->log_json, 0, &jerr);
    assert_non_null(o->json);
}

static void attempt(struct env *e, const char *domain, struct outcome *o)
{
    memset(o, 0, sizeof(*o));
    struct eng_deliver_config cfg = {
        .loop = e->loop,
        .dns = e->dns,
        .tls = unused_tls, /* the table decides; this one trusts nothing we use */
        .policy = policies,
        .capcache = e->cap,
        .pool = e->pool,
        .helo_name = "client.floormta.test",
        .port = e->port,
        .connect_timeout_ms = 5000,
        .reply_timeout_ms = 5000,
    };
    struct queue_envelope *qe = queue_envelope_alloc(1);
    assert_non_null(qe);
    qe->id = 0x42;
    snprintf(qe->sender, sizeof(qe->sender), "a@sender.test");
    snprintf(qe->domain, sizeof(qe->domain), "%s", domain);
    qe->content_size = sizeof(body) - 1;
    snprintf(qe->rcpts[0].addr, sizeof(qe->rcpts[0].addr), "rcpt@%s", domain);
    qe->rcpts[0].state = QUEUE_RCPT_PENDING;
    assert_int_equal(eng_deliver_start(&cfg, qe, body, sizeof(body) - 1, on_done, o), 0);
    queue_envelope_free(qe);
    uint64_t end = now_ms() + 15000;
    while (!o->done && now_ms() < end)
        assert_true(eng_loop_run_once(e->loop, 20) >= 0);
    assert_true(o->done);
}

static void outcome_free(struct outcome *o)
{
    json_decref(o->json);
}

static void assert_field(const struct outcome *o, const char *key, const char *want)
{
    json_t *v = json_object_get(o->json, key);
    if (!json_is_string(v) || strcmp(json_string_value(v), want) != 0) {
        char *s = json_dumps(o->json, JSON_COMPACT);
        fail_msg("%s is not \"%s\" in %s", key, want, s);
    }
}

/* ---- tests ------------------------------------------------------------------------------- */

/* Opportunistic: plaintext without STARTTLS, TLS below the floor with it — delivered and
 * labelled. The floor refuses the same self-signed receiver, and bounces with
 * on_refusal=bounce (from the capability cache: the same floor judged it). */
static void test_opportunistic_and_bounce(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.2=none", "127.0.0.3=self-signed", NULL);
    struct env e;
    env_init(&e, k.port);
    struct outcome o;

    attempt(&e, "opp1.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    assert_true(o.rep.plaintext);
    assert_false(o.rep.floor_met);
    assert_int_equal(o.rep.mode, ENG_POLICY_OPPORTUNISTIC);
    assert_field(&o, "transport", "plaintext");
    assert_field(&o, "verdict", "opportunistic");
    assert_field(&o, "reason", "no_starttls");
    assert_field(&o, "mode", "opportunistic");
    assert_true(json_is_null(json_object_get(o.json, "tls")));
    outcome_free(&o);

    attempt(&e, "strict.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DEFERRED);
    assert_int_equal(o.rep.refusal, TLS_REASON_CERT_SELF_SIGNED);
    assert_int_equal(o.last.code, 454);
    assert_field(&o, "verdict", "refuse");
    assert_field(&o, "policy", "default");
    outcome_free(&o);

    /* The cached refusal does not speak for an opportunistic domain. */
    attempt(&e, "opp2.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    assert_false(o.rep.plaintext);
    assert_false(o.rep.floor_met);
    assert_int_equal(o.rep.skipped_cached, 0);
    assert_int_equal(o.rep.verdict.reason, TLS_REASON_CERT_SELF_SIGNED);
    assert_field(&o, "transport", "tls");
    assert_field(&o, "verdict", "opportunistic");
    assert_field(&o, "reason", "cert_self_signed");
    outcome_free(&o);

    attempt(&e, "bounce.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_BOUNCED);
    assert_int_equal(o.rep.skipped_cached, 1);
    assert_int_equal(o.rep.connections, 0);
    assert_int_equal(o.last.kind, QUEUE_RESULT_TLS);
    assert_int_equal(o.last.code, 550);
    assert_string_equal(o.last.enhanced, "5.7.5");
    outcome_free(&o);

    env_free(&e);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 2);
}

/* floor=1.3 against a TLS 1.2 receiver that the default floor accepts: refused, never
 * lent the default domain's idle connection, and its refusal blocks nobody else. */
static void test_higher_floor(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.4=tls1.2", NULL);
    struct env e;
    env_init(&e, k.port);
    struct outcome o;

    attempt(&e, "plain.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    assert_true(o.rep.floor_met);
    assert_int_equal(o.rep.verdict.ev.version, TLS_VERSION_1_2);
    outcome_free(&o);

    attempt(&e, "v13.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DEFERRED);
    assert_false(o.rep.reused);
    assert_int_equal(o.rep.connections, 1);
    assert_int_equal(o.rep.refusal, TLS_REASON_VERSION_BELOW_FLOOR);
    assert_field(&o, "policy", "v13.floormta.test");
    outcome_free(&o);

    attempt(&e, "plain.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    assert_true(o.rep.reused);
    outcome_free(&o);
    assert_int_equal(eng_capcache_check(e.cap, MX_NAME, k.port, time(NULL), NULL),
                     ENG_CAPCACHE_PASSED);

    env_free(&e);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 2);
}

/* A pinned CA: the receiver whose certificate chains to it is accepted for that domain
 * only. */
static void test_pinned_ca(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.4=untrusted-ca", NULL);
    struct env e;
    env_init(&e, k.port);
    struct outcome o;

    attempt(&e, "plain.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DEFERRED);
    assert_int_equal(o.rep.refusal, TLS_REASON_CERT_UNTRUSTED);
    outcome_free(&o);

    attempt(&e, "pinned.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    assert_true(o.rep.floor_met);
    assert_int_equal(o.rep.skipped_cached, 0);
    assert_field(&o, "verdict", "pass");
    assert_field(&o, "policy", "pinned.floormta.test");
    outcome_free(&o);

    env_free(&e);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 1);
}

/* ---- fixture ------------------------------------------------------------------------------ */

static int add(const char *pattern, const char *line)
{
    struct eng_policy_spec spec;
    char err[256];
    if (eng_policy_spec_parse(line, &spec, err, sizeof(err)) != 0) {
        fprintf(stderr, "policy %s: %s\n", pattern, err);
        return -1;
    }
    return eng_policy_table_add(policies, pattern, &spec);
}

static int setup(void **state)
{
    (void)state;
    if (live_pki_setup(work, MX_NAME, &unused_tls) != 0)
        return -1;
    char ca[PATH_MAX], evil[PATH_MAX + 64];
    snprintf(ca, sizeof(ca), "%s/ca.crt", work);
    snprintf(evil, sizeof(evil), "ca=%s/evil-ca.crt", work);
    struct eng_policy_defaults d = { .ca_file = ca };
    if (eng_policy_table_new(&d, &policies) != 0 ||
        add("opp1.floormta.test", "opportunistic") != 0 ||
        add("opp2.floormta.test", "opportunistic") != 0 ||
        add("bounce.floormta.test", "floor on_refusal=bounce") != 0 ||
        add("v13.floormta.test", "floor=1.3") != 0 || add("pinned.floormta.test", evil) != 0 ||
        eng_policy_table_build(policies) != 0)
        return -1;
    if (dnsq_init(&Q) != 0 || dnsq_start(&Q, zone) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    dnsq_stop(&Q);
    eng_policy_table_free(policies);
    return live_pki_teardown(work, unused_tls);
}

int main(void)
{
    int rc = live_preflight();
    if (rc != 0)
        return rc;
    srand((unsigned)getpid() ^ (unsigned)time(NULL));
    eng_log_set_level(getenv("POLICY_LIVE_DEBUG") ? ENG_LOG_DEBUG : ENG_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_opportunistic_and_bounce, sink_teardown),
        cmocka_unit_test_teardown(test_higher_floor, sink_teardown),
        cmocka_unit_test_teardown(test_pinned_ca, sink_teardown),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
