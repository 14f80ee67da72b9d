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
#include <limits.h>
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
#include "engine/policy.h"
#include "queue/queue.h"
#include "tests/dns/dnsmasq_fixture.h"
#include "tests/engine/deliver_fixture.h"
#include "tests/engine/sink_fixture.h"
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
static struct eng_policy_table *policies;

/* One engine: loop, resolver, capability cache, pool. */
static const struct live_env_config env_cfg = { .capcache = true, .pool = true };

/* One attempt for rcpt@domain under the policy table; waits for its report, whose log
 * line must parse. */
static void attempt(struct live_env *e, const char *domain, struct live_outcome *o)
{
    /* The table decides; live_tls trusts nothing we use. */
    struct eng_deliver_config cfg = live_deliver_config(e);
    cfg.policy = policies;
    struct queue_envelope *qe = live_envelope(domain, 1, "rcpt");
    live_start(&cfg, qe, o);
    queue_envelope_free(qe);
    live_run_until(e->loop, &o->done, 15000);
    json_decref(live_json(o));
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
    struct live_env e;
    live_env_init(&e, k.port, &env_cfg);
    struct live_outcome o;

    attempt(&e, "opp1.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    assert_true(o.rep.plaintext);
    assert_false(o.rep.floor_met);
    assert_int_equal(o.rep.mode, ENG_POLICY_OPPORTUNISTIC);
    live_assert_json_str(&o, "transport", NULL, "plaintext");
    live_assert_json_str(&o, "verdict", NULL, "opportunistic");
    live_assert_json_str(&o, "reason", NULL, "no_starttls");
    live_assert_json_str(&o, "mode", NULL, "opportunistic");
    json_t *j = live_json(&o);
    assert_true(json_is_null(json_object_get(j, "tls")));
    json_decref(j);
    live_outcome_free(&o);

    attempt(&e, "strict.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DEFERRED);
    assert_int_equal(o.rep.refusal, TLS_REASON_CERT_SELF_SIGNED);
    assert_int_equal(o.env->rcpts[0].last.code, 454);
    live_assert_json_str(&o, "verdict", NULL, "refuse");
    live_assert_json_str(&o, "policy", NULL, "default");
    live_outcome_free(&o);

    /* The cached refusal does not speak for an opportunistic domain. */
    attempt(&e, "opp2.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    assert_false(o.rep.plaintext);
    assert_false(o.rep.floor_met);
    assert_int_equal(o.rep.skipped_cached, 0);
    assert_int_equal(o.rep.verdict.reason, TLS_REASON_CERT_SELF_SIGNED);
    live_assert_json_str(&o, "transport", NULL, "tls");
    live_assert_json_str(&o, "verdict", NULL, "opportunistic");
    live_assert_json_str(&o, "reason", NULL, "cert_self_signed");
    live_outcome_free(&o);

    attempt(&e, "bounce.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_BOUNCED);
    assert_int_equal(o.rep.skipped_cached, 1);
    assert_int_equal(o.rep.connections, 0);
    assert_int_equal(o.env->rcpts[0].last.kind, QUEUE_RESULT_TLS);
    assert_int_equal(o.env->rcpts[0].last.code, 550);
    assert_string_equal(o.env->rcpts[0].last.enhanced, "5.7.5");
    live_outcome_free(&o);

    live_env_free(&e);
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
    struct live_env e;
    live_env_init(&e, k.port, &env_cfg);
    struct live_outcome o;

    attempt(&e, "plain.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    assert_true(o.rep.floor_met);
    assert_int_equal(o.rep.verdict.ev.version, TLS_VERSION_1_2);
    live_outcome_free(&o);

    attempt(&e, "v13.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DEFERRED);
    assert_false(o.rep.reused);
    assert_int_equal(o.rep.connections, 1);
    assert_int_equal(o.rep.refusal, TLS_REASON_VERSION_BELOW_FLOOR);
    live_assert_json_str(&o, "policy", NULL, "v13.floormta.test");
    live_outcome_free(&o);

    attempt(&e, "plain.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    assert_true(o.rep.reused);
    live_outcome_free(&o);
    assert_int_equal(eng_capcache_check(e.cap, MX_NAME, k.port, time(NULL), NULL),
                     ENG_CAPCACHE_PASSED);

    live_env_free(&e);
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
    struct live_env e;
    live_env_init(&e, k.port, &env_cfg);
    struct live_outcome o;

    attempt(&e, "plain.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DEFERRED);
    assert_int_equal(o.rep.refusal, TLS_REASON_CERT_UNTRUSTED);
    live_outcome_free(&o);

    attempt(&e, "pinned.floormta.test", &o);
    assert_int_equal(o.rep.result, ENG_DELIVER_DELIVERED);
    assert_true(o.rep.floor_met);
    assert_int_equal(o.rep.skipped_cached, 0);
    live_assert_json_str(&o, "verdict", NULL, "pass");
    live_assert_json_str(&o, "policy", NULL, "pinned.floormta.test");
    live_outcome_free(&o);

    live_env_free(&e);
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

/* After the PKI, before dnsmasq: the policy table. */
static int policies_setup(void)
{
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
    return 0;
}

static void policies_teardown(void)
{
    eng_policy_table_free(policies);
}

int main(void)
{
    static const struct live_suite suite = {
        .debug_env = "POLICY_LIVE_DEBUG",
        .work = work,
        .mx_name = MX_NAME,
        .zone = zone,
        .setup = policies_setup,
        .teardown = policies_teardown,
    };
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_opportunistic_and_bounce, sink_teardown),
        cmocka_unit_test_teardown(test_higher_floor, sink_teardown),
        cmocka_unit_test_teardown(test_pinned_ca, sink_teardown),
    };
    return live_main(&suite, tests);
}
