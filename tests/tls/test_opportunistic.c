/*
 * tests/tls/test_opportunistic.c — the opportunistic client context, through real
 * in-memory handshakes: receivers a floor refuses (self-signed, expired, capped at
 * TLS 1.0 / 1.1, a 1.2 receiver under a 1.3 floor) complete the handshake, the verdict
 * passes with every problem in its evidence, and data flows; the floor context still
 * refuses each of them; a handshake that fails outright still fails; and nothing below
 * the floor reaches the session cache.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "tests/tls/harness.h"

static struct tls_ctx *opp_ctx(uint16_t floor)
{
    struct tls_client_config cfg = {
        .min_version = floor,
        .ca_file = pki_path("ca.crt"),
        .opportunistic = true,
    };
    struct tls_ctx *ctx = NULL;
    assert_int_equal(tls_ctx_new_client(&cfg, &ctx), 0);
    return ctx;
}

/* One opportunistic handshake against profile (server versions min..max, 0 = default):
 * it must complete on both sides and pass as opportunistic with reason want; a
 * greeting must then go through. Returns the verdict. */
static struct tls_verdict expect_opportunistic(const char *profile, uint16_t floor,
                                               uint16_t server_min, uint16_t server_max,
                                               enum tls_reason want)
{
    struct tls_ctx *cctx = opp_ctx(floor);
    struct tls_ctx *sctx = server_ctx(profile, server_min, server_max, NULL);
    assert_non_null(sctx);
    struct tls_conn *c = NULL, *s = NULL;
    assert_int_equal(tls_conn_new_client(cctx, MX_NAME, NULL, NULL, &c), 0);
    assert_int_equal(tls_conn_new_server(sctx, &s), 0);
    struct hs_result r = handshake(c, s);
    const struct tls_verdict *v = tls_conn_verdict(c);
    if (r.client_rc != 0)
        fail_msg("%s: handshake failed: %s (detail '%s')", profile, tls_reason_name(v->reason),
                 v->ev.detail);
    assert_true(r.client_done);
    assert_true(r.server_done);
    assert_true(v->pass);
    assert_true(v->opportunistic);
    if (v->reason != want)
        fail_msg("%s: reason %s, want %s (problems 0x%x)", profile, tls_reason_name(v->reason),
                 tls_reason_name(want), v->ev.problems);
    assert_int_equal(tls_verdict_meets_floor(v), want == TLS_REASON_NONE);
    if (want != TLS_REASON_NONE)
        assert_true(v->ev.problems & (1u << want));
    assert_true(v->ev.has_cert);
    assert_int_equal(v->ev.version, tls_conn_version(s));
    assert_string_equal(v->ev.cipher, tls_conn_cipher(s));

    /* The session works both ways. */
    const char greeting[] = "250 mx.floormta.test\r\n";
    uint8_t out[64];
    assert_int_equal(transfer(s, c, greeting, sizeof(greeting) - 1, out, sizeof(out)),
                     sizeof(greeting) - 1);
    assert_memory_equal(out, greeting, sizeof(greeting) - 1);
    const char cmd[] = "MAIL FROM:<a@b.example>\r\n";
    assert_int_equal(transfer(c, s, cmd, sizeof(cmd) - 1, out, sizeof(out)), sizeof(cmd) - 1);

    struct tls_verdict copy = *v;
    tls_conn_free(c);
    tls_conn_free(s);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
    return copy;
}

/* The floor context, on the same receiver, refuses with reason want. */
static void expect_floor_refuses(const char *profile, uint16_t floor, uint16_t server_min,
                                 uint16_t server_max, enum tls_reason want)
{
    struct tls_ctx *cctx = client_ctx(floor);
    struct tls_ctx *sctx = server_ctx(profile, server_min, server_max, NULL);
    assert_non_null(cctx);
    assert_non_null(sctx);
    struct tls_verdict v;
    struct hs_result r = { 0, 0, false, false };
    tls_verdict_clear(&v);
    assert_int_equal(verdict_for(cctx, sctx, MX_NAME, &v, &r), TLS_ERR_HANDSHAKE);
    assert_false(r.client_done);
    assert_false(v.pass);
    assert_false(v.opportunistic);
    assert_int_equal(v.reason, want);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

static void test_valid_meets_floor(void **state)
{
    (void)state;
    struct tls_verdict v = expect_opportunistic("valid", 0, 0, 0, TLS_REASON_NONE);
    assert_int_equal(v.ev.problems, 0);
    assert_int_equal(v.ev.version, TLS_VERSION_1_3);
    assert_int_equal(v.ev.x509_error, 0);
}

static void test_self_signed(void **state)
{
    (void)state;
    struct tls_verdict v =
            expect_opportunistic("self-signed", 0, 0, 0, TLS_REASON_CERT_SELF_SIGNED);
    assert_int_equal(v.ev.version, TLS_VERSION_1_3);
    assert_string_equal(v.ev.cipher, "TLS_AES_128_GCM_SHA256");
    assert_true(v.ev.x509_error != 0);
    assert_string_equal(v.ev.sans, MX_NAME);
    expect_floor_refuses("self-signed", 0, 0, 0, TLS_REASON_CERT_SELF_SIGNED);
}

static void test_expired(void **state)
{
    (void)state;
    struct tls_verdict v = expect_opportunistic("expired", 0, 0, 0, TLS_REASON_CERT_EXPIRED);
    assert_int_equal(v.ev.x509_error, X509_V_ERR_CERT_HAS_EXPIRED);
    assert_true(v.ev.not_after < (int64_t)time(NULL));
    expect_floor_refuses("expired", 0, 0, 0, TLS_REASON_CERT_EXPIRED);
}

static void test_wrong_name(void **state)
{
    (void)state;
    struct tls_verdict v =
            expect_opportunistic("wrong-name", 0, 0, 0, TLS_REASON_HOSTNAME_MISMATCH);
    assert_string_equal(v.ev.sans, "other.invalid");
    expect_floor_refuses("wrong-name", 0, 0, 0, TLS_REASON_HOSTNAME_MISMATCH);
}

/* A modern server capped at TLS 1.0 (the sink's tls1.0-only profile): the version is
 * the first problem, the CBC suite it had to use the second; the certificate is fine. */
static void test_tls10_server(void **state)
{
    (void)state;
    struct tls_verdict v = expect_opportunistic("valid-rsa", 0, TLS_VERSION_1_0, TLS_VERSION_1_0,
                                                TLS_REASON_VERSION_BELOW_FLOOR);
    assert_int_equal(v.ev.version, TLS_VERSION_1_0);
    assert_int_equal(v.ev.problems, (1u << TLS_REASON_VERSION_BELOW_FLOOR) |
                                            (1u << TLS_REASON_CIPHER_BELOW_FLOOR));
    assert_non_null(strstr(v.ev.cipher, "-SHA"));
    assert_null(strstr(v.ev.cipher, "GCM"));
    assert_int_equal(v.ev.x509_error, 0);
    expect_floor_refuses("valid-rsa", 0, TLS_VERSION_1_0, TLS_VERSION_1_0,
                         TLS_REASON_VERSION_BELOW_FLOOR);
}

static void test_tls11_server(void **state)
{
    (void)state;
    struct tls_verdict v = expect_opportunistic("valid", 0, TLS_VERSION_1_0, TLS_VERSION_1_1,
                                                TLS_REASON_VERSION_BELOW_FLOOR);
    assert_int_equal(v.ev.version, TLS_VERSION_1_1);
    assert_true(v.ev.problems & (1u << TLS_REASON_CIPHER_BELOW_FLOOR));
    expect_floor_refuses("valid", 0, TLS_VERSION_1_0, TLS_VERSION_1_1,
                         TLS_REASON_VERSION_BELOW_FLOOR);
}

/* Several problems at once: all in the evidence, the first in TLS_REASONS order named. */
static void test_tls10_and_expired(void **state)
{
    (void)state;
    struct tls_verdict v = expect_opportunistic("expired", 0, TLS_VERSION_1_0, TLS_VERSION_1_0,
                                                TLS_REASON_VERSION_BELOW_FLOOR);
    assert_true(v.ev.problems & (1u << TLS_REASON_CERT_EXPIRED));
    assert_true(v.ev.problems & (1u << TLS_REASON_CIPHER_BELOW_FLOOR));
}

/* The context's min_version is the floor the evidence is judged against. */
static void test_judged_against_13(void **state)
{
    (void)state;
    struct tls_verdict v = expect_opportunistic("valid", TLS_VERSION_1_3, 0, TLS_VERSION_1_2,
                                                TLS_REASON_VERSION_BELOW_FLOOR);
    assert_int_equal(v.ev.version, TLS_VERSION_1_2);
    assert_int_equal(v.ev.problems, 1u << TLS_REASON_VERSION_BELOW_FLOOR);
    expect_floor_refuses("valid", TLS_VERSION_1_3, 0, TLS_VERSION_1_2,
                         TLS_REASON_VERSION_BELOW_FLOOR);
}

/* A handshake that fails outright (the receiver answers STARTTLS with plaintext) is no
 * TLS at all: it fails, opportunistic or not. */
static void test_failure_still_fails(void **state)
{
    (void)state;
    struct tls_ctx *cctx = opp_ctx(0);
    struct tls_conn *c = NULL;
    bool done;
    assert_int_equal(tls_conn_new_client(cctx, MX_NAME, NULL, NULL, &c), 0);
    assert_int_equal(tls_conn_handshake(c, &done), 0);
    uint8_t hello[2048];
    assert_true(tls_conn_drain(c, hello, sizeof(hello)) > 0);
    const char junk[] = "250 ok, but this is not TLS\r\n";
    assert_int_equal(tls_conn_feed(c, junk, sizeof(junk) - 1), 0);
    assert_int_equal(tls_conn_handshake(c, &done), TLS_ERR_HANDSHAKE);
    assert_false(done);
    const struct tls_verdict *v = tls_conn_verdict(c);
    assert_false(v->pass);
    assert_true(v->opportunistic);
    assert_int_equal(v->reason, TLS_REASON_HANDSHAKE_FAILED);
    assert_true(v->ev.detail[0] != '\0');
    /* No application data over it. */
    assert_int_equal(tls_conn_write(c, "MAIL", 4), TLS_ERR_STATE);
    tls_conn_free(c);
    tls_ctx_free(cctx);
}

/* Sessions: one that met the floor is stored and resumed; one below the floor never
 * reaches the cache, so no later connection (floor or not) is offered it. */
static void test_cache_only_floor_sessions(void **state)
{
    (void)state;
    struct tls_ctx *cctx = opp_ctx(0);
    struct tls_ctx *good = server_ctx("valid", 0, TLS_VERSION_1_2, NULL);
    struct tls_ctx *bad = server_ctx("self-signed", 0, TLS_VERSION_1_2, NULL);
    struct tls_cache *cache = NULL;
    struct tls_cache_stats st;
    assert_int_equal(tls_cache_new(4, &cache), 0);

    for (int i = 0; i < 2; i++) {
        struct tls_conn *c = NULL, *s = NULL;
        assert_int_equal(tls_conn_new_client(cctx, MX_NAME, cache, "bad:25", &c), 0);
        assert_int_equal(tls_conn_new_server(bad, &s), 0);
        struct hs_result r = handshake(c, s);
        assert_int_equal(r.client_rc, 0);
        assert_true(tls_conn_verdict(c)->pass);
        assert_false(tls_conn_verdict(c)->ev.resumed);
        tls_conn_free(c);
        tls_conn_free(s);
    }
    tls_cache_stats(cache, &st);
    assert_int_equal(st.stores, 0);
    assert_int_equal(st.entries, 0);

    bool resumed = false;
    for (int i = 0; i < 2; i++) {
        struct tls_conn *c = NULL, *s = NULL;
        assert_int_equal(tls_conn_new_client(cctx, MX_NAME, cache, "good:25", &c), 0);
        assert_int_equal(tls_conn_new_server(good, &s), 0);
        struct hs_result r = handshake(c, s);
        assert_int_equal(r.client_rc, 0);
        assert_true(tls_verdict_meets_floor(tls_conn_verdict(c)));
        resumed = tls_conn_verdict(c)->ev.resumed;
        tls_conn_free(c);
        tls_conn_free(s);
    }
    assert_true(resumed);
    tls_cache_stats(cache, &st);
    assert_true(st.stores >= 1);

    tls_cache_free(cache);
    tls_ctx_free(bad);
    tls_ctx_free(good);
    tls_ctx_free(cctx);
}

/* tls_ctx_verify_chain judges as a handshake with that context would. */
static void test_verify_chain(void **state)
{
    (void)state;
    FILE *f = fopen(pki_path("self-signed.crt"), "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    uint8_t *der = NULL;
    int len = i2d_X509(x, &der);
    X509_free(x);
    assert_true(len > 0);
    const uint8_t *ders[] = { der };
    size_t lens[] = { (size_t)len };

    struct tls_ctx *opp = opp_ctx(0);
    struct tls_ctx *floor = client_ctx(0);
    struct tls_verdict v;
    assert_int_equal(tls_ctx_verify_chain(opp, MX_NAME, ders, lens, 1, &v), 0);
    assert_true(v.pass);
    assert_true(v.opportunistic);
    assert_int_equal(v.reason, TLS_REASON_CERT_SELF_SIGNED);
    assert_int_equal(tls_ctx_verify_chain(floor, MX_NAME, ders, lens, 1, &v), 0);
    assert_false(v.pass);
    assert_false(v.opportunistic);
    assert_int_equal(v.reason, TLS_REASON_CERT_SELF_SIGNED);

    /* tls_verdict_clear resets the flag; a refusal recorded outside tls/ keeps it. */
    tls_verdict_clear(&v);
    assert_false(v.opportunistic);
    v.opportunistic = true;
    tls_verdict_refuse(&v, TLS_REASON_STARTTLS_REFUSED);
    assert_false(v.pass);
    assert_true(v.opportunistic);
    assert_int_equal(v.reason, TLS_REASON_STARTTLS_REFUSED);

    OPENSSL_free(der);
    tls_ctx_free(floor);
    tls_ctx_free(opp);
}

static void test_config_errors(void **state)
{
    (void)state;
    struct tls_ctx *ctx = NULL;
    struct tls_client_config cfg = { .min_version = TLS_VERSION_1_1, .opportunistic = true };
    assert_int_equal(tls_ctx_new_client(&cfg, &ctx), TLS_ERR_CONFIG);
    cfg.min_version = 0;
    cfg.ca_file = "/nonexistent/ca.pem";
    assert_int_equal(tls_ctx_new_client(&cfg, &ctx), TLS_ERR_CA_LOAD);
    assert_null(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_meets_floor),
        cmocka_unit_test(test_self_signed),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_wrong_name),
        cmocka_unit_test(test_tls10_server),
        cmocka_unit_test(test_tls11_server),
        cmocka_unit_test(test_tls10_and_expired),
        cmocka_unit_test(test_judged_against_13),
        cmocka_unit_test(test_failure_still_fails),
        cmocka_unit_test(test_cache_only_floor_sessions),
        cmocka_unit_test(test_verify_chain),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
