/*
 * tests/engine/test_profiles_live.c — one delivery attempt (engine/deliver.h) against every
 * receiver profile of the TLS floor, end to end: a real dnsmasq on 127.0.0.1 and one
 * floormta-sink process listening on 127.0.0.40 + i (one shared port) in profile i.
 *
 * Every profile gets its own domain and MX host, on its own address:
 *   <tag>.floormta.test  MX 10 mx-<tag>.floormta.test  A 127.0.0.(40 + i)
 * (tag: the profile name without dots). Each certificate-bearing profile gets its own test
 * PKI made for its MX name (pki-<tag>/); the listener serves it (--listen ...=PROFILE@DIR)
 * and the client trusts the concatenation of those roots, so a refusal can only come from
 * the profile itself, never from a name or root that does not fit.
 *
 * Per profile (one cmocka test each, in table order): the first attempt delivers (pass,
 * the expected version, the log line's TLS evidence equal to the listener's certificate)
 * or is deferred with the profile's reason, never bounced, and the queue result names the
 * reason; a second attempt right after is then skipped from the capability cache without
 * a connection. The last test stops the sink and checks, per listener, that exactly one
 * connection was made and that only the passing profiles received a message.
 * Exit 77 when io_uring is unavailable; dnsmasq missing is a failure.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/digest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "engine/capcache.h"
#include "engine/deliver.h"
#include "queue/queue.h"
#include "tests/dns/dnsmasq_fixture.h"
#include "tests/engine/deliver_fixture.h"
#include "tests/engine/sink_fixture.h"
#include "tests/pki/testpki.h"
#include "tls/tls.h"

/* One receiver profile and what the floor must make of it. */
struct prof {
    const char *name;       /* the sink's profile */
    const char *cert;       /* the PKI leaf it serves (its sink_profile cert), NULL = none */
    enum tls_reason reason; /* NONE: delivered */
    uint16_t version;       /* delivered: the version negotiated */
};

/* tls1.0-only / tls1.1-only: the client offers only TLS >= 1.2, so a receiver capped
 * below answers the ClientHello with a protocol_version alert before any ServerHello,
 * which tls/ maps to version_below_floor (tls_handshake.c judge_failure). "valid" allows
 * 1.2..1.3 and negotiates 1.3. */
static const struct prof profs[] = {
    { "none", NULL, TLS_REASON_NO_STARTTLS, 0 },
    { "tls1.0-only", "valid", TLS_REASON_VERSION_BELOW_FLOOR, 0 },
    { "tls1.1-only", "valid", TLS_REASON_VERSION_BELOW_FLOOR, 0 },
    { "tls1.2", "valid", TLS_REASON_NONE, TLS_VERSION_1_2 },
    { "tls1.3", "valid", TLS_REASON_NONE, TLS_VERSION_1_3 },
    { "valid", "valid", TLS_REASON_NONE, TLS_VERSION_1_3 },
    { "self-signed", "self-signed", TLS_REASON_CERT_SELF_SIGNED, 0 },
    { "expired", "expired", TLS_REASON_CERT_EXPIRED, 0 },
    { "not-yet-valid", "not-yet-valid", TLS_REASON_CERT_NOT_YET_VALID, 0 },
    { "wrong-name", "wrong-name", TLS_REASON_HOSTNAME_MISMATCH, 0 },
    { "untrusted-ca", "untrusted-ca", TLS_REASON_CERT_UNTRUSTED, 0 },
    { "starttls-454", NULL, TLS_REASON_STARTTLS_REFUSED, 0 },
};
#define NPROF (sizeof(profs) / sizeof(profs[0]))

static char work[] = "/tmp/floormta-profiles-live-XXXXXX";
static struct sink K;
static bool sink_running;

/* Per profile: names, address, and what the attempts saw (for the summary). */
struct row {
    const struct prof *p;
    char tag[32];
    char domain[64];
    char mx[64];
    char addr[16];
    char pki[PATH_MAX];
    char spec[PATH_MAX + 64];
    char seen[256]; /* what the first attempt reported, printed at the end */
};
static struct row rows[NPROF];

/* ---- helpers -------------------------------------------------------------------------------- */

/* One attempt of qe on e, with the capability cache; waits for its report. */
static void attempt(struct live_env *e, const struct queue_envelope *qe, struct live_outcome *o)
{
    struct eng_deliver_config cfg = live_deliver_config(e);
    live_start(&cfg, qe, o);
    assert_false(o->done);
    live_run_until(e->loop, &o->done, 15000);
}

/* The SHA-256 (lowercase hex) of the first certificate in path: the leaf a listener
 * serves, to compare with the evidence the engine logged. */
static void leaf_fingerprint(const char *path, char out[65])
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    uint8_t md[32];
    unsigned len = 0;
    assert_int_equal(X509_digest(x, EVP_sha256(), md, &len), 1);
    X509_free(x);
    assert_int_equal(len, 32);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* ---- one profile -------------------------------------------------------------------------- */

static void check_delivered(const struct row *r, const struct live_outcome *o,
                            struct eng_capcache *cap)
{
    const struct prof *p = r->p;
    assert_int_equal(o->rep.result, ENG_DELIVER_DELIVERED);
    assert_true(o->rep.transacted);
    assert_true(o->rep.verdict.pass);
    assert_int_equal(o->rep.verdict.reason, TLS_REASON_NONE);
    assert_int_equal(o->rep.refusal, TLS_REASON_NONE);
    assert_int_equal(o->rep.verdict.ev.version, p->version);
    assert_string_equal(o->rep.mx_host, r->mx);
    assert_int_equal(o->rep.connections, 1);
    assert_int_equal(o->rep.skipped_cached, 0);
    const struct queue_rcpt *rc = &o->env->rcpts[0];
    assert_int_equal(rc->state, QUEUE_RCPT_DELIVERED);
    assert_int_equal(rc->last.kind, QUEUE_RESULT_SMTP);
    assert_int_equal(rc->last.code, 250);

    /* The log line carries the evidence of this listener's own certificate. */
    char path[PATH_MAX + 32], fp[65];
    snprintf(path, sizeof(path), "%s/%s.crt", r->pki, p->cert);
    leaf_fingerprint(path, fp);
    json_t *j = live_json(o);
    assert_string_equal(live_json_str(j, "result"), "delivered");
    assert_string_equal(live_json_str(j, "verdict"), "pass");
    assert_string_equal(live_json_str(j, "reason"), "none");
    assert_string_equal(live_json_str(j, "mx"), r->mx);
    json_t *t = json_object_get(j, "tls");
    if (!json_is_object(t))
        fail_msg("delivery log line has no tls object: %s", o->json);
    assert_string_equal(live_json_str(t, "version"), tls_version_name(p->version));
    assert_string_equal(live_json_str(t, "cipher"), o->rep.verdict.ev.cipher);
    assert_true(strlen(o->rep.verdict.ev.cipher) > 0);
    assert_string_equal(live_json_str(t, "fingerprint"), fp);
    live_assert_contains(live_json_str(t, "subject"), r->mx);
    json_decref(j);

    assert_int_equal(eng_capcache_check(cap, r->mx, K.port, time(NULL), NULL), ENG_CAPCACHE_PASSED);
}

static void check_refused(const struct row *r, const struct live_outcome *o,
                          struct eng_capcache *cap)
{
    const struct prof *p = r->p;
    const char *why = tls_reason_name(p->reason);
    if (o->rep.result != ENG_DELIVER_DEFERRED || o->rep.refusal != p->reason)
        fail_msg("%s: result %s, refusal %s; wanted deferred, %s", p->name,
                 eng_deliver_result_name(o->rep.result), tls_reason_name(o->rep.refusal), why);
    assert_false(o->rep.transacted);
    assert_int_equal(o->rep.bounced, 0);
    assert_int_equal(o->rep.deferred, 1);
    assert_int_equal(o->rep.connections, 1);
    assert_int_equal(o->rep.skipped_cached, 0);
    const struct queue_rcpt *rc = &o->env->rcpts[0];
    assert_int_equal(rc->state, QUEUE_RCPT_DEFERRED);
    assert_int_equal(rc->attempts, 1);
    assert_int_equal(rc->last.kind, QUEUE_RESULT_TLS);
    assert_int_equal(rc->last.code / 100, 4);
    bool no_tls = p->reason == TLS_REASON_NO_STARTTLS || p->reason == TLS_REASON_STARTTLS_REFUSED;
    assert_string_equal(rc->last.enhanced, no_tls ? "4.7.4" : "4.7.5");
    live_assert_contains(rc->last.text, why);

    json_t *j = live_json(o);
    /* A certificate refusal names the certificate it saw (this listener's), in the
     * recipient's result and in the log line's evidence, with the version and cipher. */
    json_t *t = json_object_get(j, "tls");
    if (p->reason >= TLS_REASON_NO_CERTIFICATE) {
        char path[PATH_MAX + 32], fp[65], needle[80];
        snprintf(path, sizeof(path), "%s/%s.crt", r->pki, p->cert);
        leaf_fingerprint(path, fp);
        snprintf(needle, sizeof(needle), "sha256=%s", fp);
        live_assert_contains(rc->last.text, needle);
        assert_true(json_is_object(t));
        assert_string_equal(live_json_str(t, "fingerprint"), fp);
        assert_string_equal(live_json_str(t, "version"), "TLSv1.3");
        assert_true(strlen(live_json_str(t, "cipher")) > 0);
        assert_true(strlen(live_json_str(t, "subject")) > 0);
    } else if (no_tls) {
        assert_true(json_is_null(t)); /* no TLS at all: no evidence but the reason */
    }
    assert_string_equal(live_json_str(j, "result"), "deferred");
    assert_string_equal(live_json_str(j, "verdict"), "refuse");
    assert_string_equal(live_json_str(j, "reason"), why);
    json_decref(j);

    struct eng_capcache_entry ce;
    assert_int_equal(eng_capcache_check(cap, r->mx, K.port, time(NULL), &ce), ENG_CAPCACHE_BLOCKED);
    assert_int_equal(ce.reason, p->reason);
}

static void test_profile(void **state)
{
    struct row *r = *state;
    const struct prof *p = r->p;
    assert_true(sink_running);
    struct live_env e;
    live_env_init(&e, K.port, &(struct live_env_config){ .capcache = true });
    struct queue_envelope *qe = live_envelope(r->domain, 1, "ok");

    struct live_outcome o;
    attempt(&e, qe, &o);
    if (o.rep.transacted)
        snprintf(r->seen, sizeof(r->seen), "%s: %s %s", eng_deliver_result_name(o.rep.result),
                 tls_version_name(o.rep.verdict.ev.version), o.rep.verdict.ev.cipher);
    else
        snprintf(r->seen, sizeof(r->seen), "%s: %.200s", eng_deliver_result_name(o.rep.result),
                 o.env->rcpts[0].last.text);
    if (p->reason == TLS_REASON_NONE) {
        check_delivered(r, &o, e.cap);
    } else {
        check_refused(r, &o, e.cap);
        /* Right after: skipped from the capability cache, no connection. */
        struct live_outcome o2;
        attempt(&e, o.env, &o2);
        assert_int_equal(o2.rep.result, ENG_DELIVER_DEFERRED);
        assert_int_equal(o2.rep.connections, 0);
        assert_int_equal(o2.rep.skipped_cached, 1);
        assert_int_equal(o2.rep.refusal, p->reason);
        assert_int_equal(o2.rep.bounced, 0);
        const struct queue_rcpt *rc = &o2.env->rcpts[0];
        assert_int_equal(rc->state, QUEUE_RCPT_DEFERRED);
        assert_int_equal(rc->attempts, 2);
        assert_int_equal(rc->last.kind, QUEUE_RESULT_TLS);
        live_assert_contains(rc->last.text, "cached refusal");
        live_assert_contains(rc->last.text, tls_reason_name(p->reason));
        live_outcome_free(&o2);
    }
    live_outcome_free(&o);
    queue_envelope_free(qe);
    live_env_free(&e);
}

/* Last: per listener, one connection (the second attempts never connected) and a message
 * only where the floor passed. */
static void test_sink_counters(void **state)
{
    (void)state;
    assert_true(sink_running);
    struct sink_counters c;
    sink_running = false;
    sink_stop(&K, &c);
    unsigned passing = 0;
    for (size_t i = 0; i < NPROF; i++) {
        unsigned long long conns = 0, msgs = 0;
        sink_listener_counters(&K, rows[i].addr, &conns, &msgs);
        bool pass = profs[i].reason == TLS_REASON_NONE;
        passing += pass;
        if (conns != 1 || msgs != (pass ? 1u : 0u))
            fail_msg("%s (%s): connections=%llu messages=%llu", profs[i].name, rows[i].addr, conns,
                     msgs);
    }
    assert_int_equal(c.messages, passing);
    assert_int_equal(c.connections, NPROF);
    /* A refused handshake never completes: the sink finished only the passing ones. */
    assert_int_equal(c.handshakes, passing);
    for (size_t i = 0; i < NPROF; i++)
        fprintf(stderr, "profile %-14s %s\n", profs[i].name, rows[i].seen);
}

/* ---- fixture ------------------------------------------------------------------------------ */

/* Appends the file at path to out (open for writing). Returns 0 or -1. */
static int append_file(FILE *out, const char *path)
{
    FILE *in = fopen(path, "r");
    if (!in)
        return -1;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    if (mkdtemp(work) == NULL)
        return -1;
    char zone[8192], roots[PATH_MAX];
    size_t zn = (size_t)snprintf(zone, sizeof(zone), "local-ttl=60\n");
    snprintf(roots, sizeof(roots), "%s/roots.crt", work);
    FILE *rf = fopen(roots, "w");
    if (!rf)
        return -1;
    const char *specs[NPROF];
    for (size_t i = 0; i < NPROF; i++) {
        /* Built in locals, then copied: gcc's -Wrestrict (at -O0) takes one field of a row
         * formatted into another for an overlap. */
        char tag[32], domain[64], mx[64], addr[16], pki[PATH_MAX], spec[PATH_MAX + 64];
        size_t t = 0;
        for (const char *c = profs[i].name; *c && t + 1 < sizeof(tag); c++)
            if (*c != '.')
                tag[t++] = *c;
        tag[t] = '\0';
        snprintf(domain, sizeof(domain), "%s.floormta.test", tag);
        snprintf(mx, sizeof(mx), "mx-%s.floormta.test", tag);
        snprintf(addr, sizeof(addr), "127.0.0.%zu", 40 + i);
        zn += (size_t)snprintf(zone + zn, sizeof(zone) - zn,
                               "mx-host=%s,%s,10\nhost-record=%s,%s\n", domain, mx, mx, addr);
        pki[0] = '\0';
        if (profs[i].cert == NULL) {
            snprintf(spec, sizeof(spec), "%s=%s", addr, profs[i].name);
        } else {
            /* A PKI for this MX name; its root joins the client's trust store. */
            snprintf(pki, sizeof(pki), "%s/pki-%s", work, tag);
            char ca[PATH_MAX + 16];
            snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
            if (mkdir(pki, 0700) != 0 || testpki_generate(pki, mx) != 0 ||
                append_file(rf, ca) != 0) {
                fclose(rf);
                return -1;
            }
            snprintf(spec, sizeof(spec), "%s=%s@%s", addr, profs[i].name, pki);
        }
        struct row *r = &rows[i];
        r->p = &profs[i];
        memcpy(r->tag, tag, sizeof(tag));
        memcpy(r->domain, domain, sizeof(domain));
        memcpy(r->mx, mx, sizeof(mx));
        memcpy(r->addr, addr, sizeof(addr));
        memcpy(r->pki, pki, sizeof(pki));
        memcpy(r->spec, spec, sizeof(spec));
        specs[i] = r->spec;
    }
    if (fclose(rf) != 0 || zn >= sizeof(zone))
        return -1;
    struct tls_client_config cfg = { .ca_file = roots };
    if (tls_ctx_new_client(&cfg, &live_tls) != 0)
        return -1;
    if (dnsq_init(&live_dns) != 0 || dnsq_start(&live_dns, zone) != 0)
        return -1;
    sink_start_list(&K, work, "mx.floormta.test", specs, NPROF);
    sink_running = true;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sink_kill_leftover();
    dnsq_stop(&live_dns);
    return live_pki_teardown(work, live_tls);
}

int main(void)
{
    int rc = live_main_init("PROFILES_LIVE_DEBUG");
    if (rc != 0)
        return rc;
    struct CMUnitTest tests[NPROF + 1];
    memset(tests, 0, sizeof(tests));
    for (size_t i = 0; i < NPROF; i++) {
        tests[i].name = profs[i].name;
        tests[i].test_func = test_profile;
        tests[i].initial_state = &rows[i];
    }
    tests[NPROF].name = "sink_counters";
    tests[NPROF].test_func = test_sink_counters;
    return _cmocka_run_group_tests("profiles_live", tests, NPROF + 1, setup, teardown);
}
