/*
 * tests/tls/test_reload.c — tls_ctx_reload_server / tls_ctx_reload_client, what SIGHUP
 * relies on (engine/daemon_reload.c):
 *   - a server reload swaps the certificate for new connections, while a connection
 *     made before (established, or created and not yet handshaking) keeps the old one;
 *   - a client reload to a trust store without the root turns a pass into
 *     cert_untrusted, even for a tls_cache that memoised the pass and holds a session
 *     to resume (the memo is keyed by the reload generation);
 *   - a reload that fails (missing file, another floor) leaves the context as it was;
 *   - reloads from another thread while connections are made: every handshake passes
 *     and nothing is used after it was freed (run it under ASan).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tests/tls/harness.h"

static struct tls_server_config server_config(const char *profile, char *crt, char *key)
{
    snprintf(crt, PATH_MAX, "%s", pki_path(profile));
    strcat(crt, ".crt");
    snprintf(key, PATH_MAX, "%s", pki_path(profile));
    strcat(key, ".key");
    return (struct tls_server_config){ .cert_file = crt, .key_file = key };
}

/* One handshake (and, when it passed, the greeting, so that TLS 1.3 tickets reach the
 * cache); copies the client's verdict. Returns the client's handshake result. */
static int connect_once(struct tls_ctx *cctx, struct tls_ctx *sctx, struct tls_cache *cache,
                        const char *key, struct tls_verdict *v)
{
    struct tls_conn *c = NULL, *s = NULL;
    assert_int_equal(tls_conn_new_client(cctx, MX_NAME, cache, key, &c), 0);
    assert_int_equal(tls_conn_new_server(sctx, &s), 0);
    struct hs_result r = handshake(c, s);
    if (r.client_rc == 0) {
        const char greeting[] = "220 mx.floormta.test ESMTP\r\n";
        uint8_t out[64];
        assert_int_equal(transfer(s, c, greeting, sizeof(greeting) - 1, out, sizeof(out)),
                         sizeof(greeting) - 1);
    }
    *v = *tls_conn_verdict(c);
    tls_conn_free(c);
    tls_conn_free(s);
    return r.client_rc;
}

static void test_server_swaps_certificate(void **state)
{
    (void)state;
    char crt[PATH_MAX], key[PATH_MAX];
    struct tls_ctx *cctx = client_ctx(0);
    struct tls_ctx *sctx = server_ctx("valid", 0, 0, NULL);
    struct tls_verdict v;
    assert_non_null(cctx);
    assert_non_null(sctx);

    assert_int_equal(connect_once(cctx, sctx, NULL, NULL, &v), 0);
    assert_string_equal(v.ev.sans, MX_NAME);
    uint8_t old_leaf[32];
    memcpy(old_leaf, v.ev.sha256, sizeof(old_leaf));

    /* Made before the reload: one established, one created but not yet started. */
    struct tls_conn *c1 = NULL, *s1 = NULL, *c2 = NULL, *s2 = NULL;
    assert_int_equal(tls_conn_new_client(cctx, MX_NAME, NULL, NULL, &c1), 0);
    assert_int_equal(tls_conn_new_server(sctx, &s1), 0);
    struct hs_result r = handshake(c1, s1);
    assert_true(r.client_done && r.server_done);
    assert_int_equal(tls_conn_new_client(cctx, MX_NAME, NULL, NULL, &c2), 0);
    assert_int_equal(tls_conn_new_server(sctx, &s2), 0);

    struct tls_server_config sc = server_config("wildcard", crt, key);
    assert_int_equal(tls_ctx_reload_server(sctx, &sc), 0);

    /* A new connection sees the new leaf. */
    assert_int_equal(connect_once(cctx, sctx, NULL, NULL, &v), 0);
    assert_true(v.pass);
    assert_string_equal(v.ev.sans, "*.floormta.test");
    assert_memory_not_equal(v.ev.sha256, old_leaf, sizeof(old_leaf));

    /* The established one still carries data both ways. */
    uint8_t out[64];
    assert_int_equal(transfer(c1, s1, "EHLO x\r\n", 8, out, sizeof(out)), 8);
    assert_memory_equal(out, "EHLO x\r\n", 8);
    assert_int_equal(transfer(s1, c1, "250 ok\r\n", 8, out, sizeof(out)), 8);
    /* The one created before handshakes now with the certificate it started with. */
    r = handshake(c2, s2);
    assert_int_equal(r.client_rc, 0);
    assert_true(r.client_done && r.server_done);
    assert_memory_equal(tls_conn_verdict(c2)->ev.sha256, old_leaf, sizeof(old_leaf));

    tls_conn_free(c1);
    tls_conn_free(s1);
    tls_conn_free(c2);
    tls_conn_free(s2);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

static void test_client_untrusts_memoised_pass(void **state)
{
    (void)state;
    struct tls_ctx *cctx = client_ctx(0);
    struct tls_ctx *sctx = server_ctx("valid", 0, 0, NULL);
    struct tls_cache *cache = NULL;
    struct tls_cache_stats st;
    struct tls_verdict v;
    assert_int_equal(tls_cache_new(8, &cache), 0);

    /* Two passes: the second from the memo (another key, so no resumption). */
    assert_int_equal(connect_once(cctx, sctx, cache, "a:25", &v), 0);
    assert_true(tls_verdict_meets_floor(&v));
    assert_int_equal(connect_once(cctx, sctx, cache, "b:25", &v), 0);
    assert_true(tls_verdict_meets_floor(&v));
    tls_cache_stats(cache, &st);
    assert_int_equal(st.verify_hits, 1);
    assert_int_equal(st.verify_misses, 1);

    /* The operator drops the test root: a store with only a root nobody uses. */
    struct tls_client_config cc = { .ca_file = pki_path("evil-ca.crt") };
    assert_int_equal(tls_ctx_reload_client(cctx, &cc), 0);

    /* The same chain and name, memoised as a pass: judged again, and refused. */
    assert_int_equal(connect_once(cctx, sctx, cache, "c:25", &v), TLS_ERR_HANDSHAKE);
    assert_false(v.pass);
    assert_int_equal(v.reason, TLS_REASON_CERT_UNTRUSTED);
    tls_cache_stats(cache, &st);
    assert_int_equal(st.verify_hits, 1);
    assert_int_equal(st.verify_misses, 2);
    /* ... and a session cached under the old store does not carry the pass over. */
    assert_int_equal(connect_once(cctx, sctx, cache, "a:25", &v), TLS_ERR_HANDSHAKE);
    assert_int_equal(v.reason, TLS_REASON_CERT_UNTRUSTED);
    tls_cache_stats(cache, &st);
    assert_int_equal(st.verify_hits, 1);

    /* Back to the root: passes again (judged in full, then memoised anew). */
    cc.ca_file = pki_path("ca.crt");
    assert_int_equal(tls_ctx_reload_client(cctx, &cc), 0);
    assert_int_equal(connect_once(cctx, sctx, cache, "d:25", &v), 0);
    assert_true(tls_verdict_meets_floor(&v));
    assert_int_equal(connect_once(cctx, sctx, cache, "e:25", &v), 0);
    tls_cache_stats(cache, &st);
    assert_int_equal(st.verify_hits, 2);

    tls_cache_free(cache);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

static void test_failed_reload_changes_nothing(void **state)
{
    (void)state;
    char crt[PATH_MAX], key[PATH_MAX];
    struct tls_ctx *cctx = client_ctx(0);
    struct tls_ctx *sctx = server_ctx("valid", 0, 0, NULL);
    struct tls_verdict v;
    assert_int_equal(connect_once(cctx, sctx, NULL, NULL, &v), 0);
    uint8_t leaf[32];
    memcpy(leaf, v.ev.sha256, sizeof(leaf));

    struct tls_server_config sc = server_config("no-such-profile", crt, key);
    assert_int_equal(tls_ctx_reload_server(sctx, &sc), TLS_ERR_CERT_LOAD);
    sc = server_config("valid", crt, key);
    sc.key_file = pki_path("wildcard.key"); /* a key that does not match */
    assert_int_equal(tls_ctx_reload_server(sctx, &sc), TLS_ERR_CERT_LOAD);

    struct tls_client_config cc = { .ca_file = pki_path("missing.pem") };
    assert_int_equal(tls_ctx_reload_client(cctx, &cc), TLS_ERR_CA_LOAD);
    cc.ca_file = pki_path("valid.key"); /* not a certificate */
    assert_int_equal(tls_ctx_reload_client(cctx, &cc), TLS_ERR_CA_LOAD);
    /* The floor and the mode are not a reload's to change. */
    cc = (struct tls_client_config){ .ca_file = pki_path("ca.crt"),
                                     .min_version = TLS_VERSION_1_3 };
    assert_int_equal(tls_ctx_reload_client(cctx, &cc), TLS_ERR_CONFIG);
    cc = (struct tls_client_config){ .ca_file = pki_path("ca.crt"), .opportunistic = true };
    assert_int_equal(tls_ctx_reload_client(cctx, &cc), TLS_ERR_CONFIG);
    /* Each kind of context takes only its own reload. */
    assert_int_equal(tls_ctx_reload_client(sctx, &cc), TLS_ERR_CONFIG);
    assert_int_equal(tls_ctx_reload_server(cctx, &sc), TLS_ERR_CONFIG);

    /* Still the same trust store and certificate. */
    assert_int_equal(connect_once(cctx, sctx, NULL, NULL, &v), 0);
    assert_true(tls_verdict_meets_floor(&v));
    assert_memory_equal(v.ev.sha256, leaf, sizeof(leaf));

    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

struct reloader {
    struct tls_ctx *cctx, *sctx;
    const char *bundle; /* the test root and another one */
    atomic_bool stop;
    unsigned reloads;
    int rc; /* first failure */
};

static void *reload_loop(void *arg)
{
    struct reloader *r = arg;
    char crt[2][PATH_MAX], key[2][PATH_MAX];
    /* Both leaves chain to the test root, so every handshake must pass whichever
     * certificate and store it meets. */
    struct tls_server_config sc[2] = { server_config("valid", crt[0], key[0]),
                                       server_config("chain", crt[1], key[1]) };
    struct tls_client_config cc[2] = { { .ca_file = pki_path("ca.crt") },
                                       { .ca_file = r->bundle } };
    while (!atomic_load(&r->stop)) {
        unsigned i = r->reloads++ % 2;
        int rc = tls_ctx_reload_server(r->sctx, &sc[i]);
        if (rc == 0)
            rc = tls_ctx_reload_client(r->cctx, &cc[i]);
        if (rc != 0 && r->rc == 0)
            r->rc = rc;
    }
    return NULL;
}

static void test_reload_while_connecting(void **state)
{
    (void)state;
    /* A bundle of two roots: the test root and one that signs nothing we see. */
    char bundle[PATH_MAX];
    snprintf(bundle, sizeof(bundle), "%s", pki_path("bundle.pem"));
    FILE *out = fopen(bundle, "w");
    assert_non_null(out);
    const char *parts[] = { "evil-ca.crt", "ca.crt" };
    for (size_t i = 0; i < 2; i++) {
        FILE *in = fopen(pki_path(parts[i]), "r");
        assert_non_null(in);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
            fwrite(buf, 1, n, out);
        fclose(in);
    }
    fclose(out);

    struct reloader r = { .cctx = client_ctx(0),
                          .sctx = server_ctx("valid", 0, 0, NULL),
                          .bundle = bundle };
    struct tls_cache *cache = NULL;
    assert_int_equal(tls_cache_new(4, &cache), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, reload_loop, &r), 0);
    unsigned passed = 0, resumed = 0;
    const unsigned n = 150;
    for (unsigned i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%u:25", i % 3);
        struct tls_verdict v;
        int rc = connect_once(r.cctx, r.sctx, i % 2 ? cache : NULL, key, &v);
        if (rc != 0)
            fprintf(stderr, "connection %u: %s (%s)\n", i, tls_strerror(rc),
                    tls_reason_name(v.reason));
        passed += rc == 0 && tls_verdict_meets_floor(&v);
        resumed += v.ev.resumed;
    }
    atomic_store(&r.stop, true);
    pthread_join(t, NULL);
    printf("# %u connections, %u passed (%u resumed), %u reloads of each context\n", n, passed,
           resumed, r.reloads);
    assert_int_equal(r.rc, 0);
    assert_int_equal(passed, n);
    assert_true(r.reloads > 0);

    tls_cache_free(cache);
    tls_ctx_free(r.sctx);
    tls_ctx_free(r.cctx);
    unlink(bundle);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_swaps_certificate),
        cmocka_unit_test(test_client_untrusts_memoised_pass),
        cmocka_unit_test(test_failed_reload_changes_nothing),
        cmocka_unit_test(test_reload_while_connecting),
    };
    return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
