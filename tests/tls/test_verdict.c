/*
 * tests/tls/test_verdict.c — every receiver profile of the test PKI, and every way a
 * receiver can be below the floor, judged through real in-memory handshakes: the
 * verdict, its reason and its evidence.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "tests/tls/harness.h"

/* DER of the first certificate in a PEM file (malloc'd into *der). */
static size_t read_der(const char *file, uint8_t **der)
{
    FILE *f = fopen(pki_path(file), "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    *der = NULL;
    int len = i2d_X509(x, der);
    X509_free(x);
    assert_true(len > 0);
    return (size_t)len;
}

static void expect_pass(const char *profile, uint16_t server_max, uint16_t version,
                        const char *cipher, const char *key_type, int key_bits, const char *sans)
{
    struct tls_ctx *cctx = client_ctx(0);
    struct tls_ctx *sctx = server_ctx(profile, 0, server_max, NULL);
    assert_non_null(cctx);
    assert_non_null(sctx);
    struct tls_verdict v;
    struct hs_result r;
    assert_int_equal(verdict_for(cctx, sctx, MX_NAME, &v, &r), 0);
    assert_true(r.client_done);
    assert_true(r.server_done);
    assert_true(v.pass);
    assert_int_equal(v.reason, TLS_REASON_NONE);
    assert_int_equal(v.ev.problems, 0);
    assert_int_equal(v.ev.version, version);
    assert_string_equal(v.ev.cipher, cipher);
    assert_false(v.ev.resumed);
    assert_true(v.ev.has_cert);
    assert_non_null(strstr(v.ev.subject, "O=floormta test"));
    assert_string_equal(v.ev.sans, sans);
    assert_string_equal(v.ev.key_type, key_type);
    assert_int_equal(v.ev.key_bits, key_bits);
    assert_int_equal(v.ev.x509_error, 0);
    assert_true(v.ev.not_before < (int64_t)time(NULL));
    assert_true(v.ev.not_after > (int64_t)time(NULL) + 300 * 86400);
    assert_true(v.ev.not_after < (int64_t)time(NULL) + 366 * 86400);

    /* The fingerprint is the SHA-256 of the leaf's DER, as in the file. */
    char file[64];
    snprintf(file, sizeof(file), "%s.crt", profile);
    uint8_t *der;
    size_t len = read_der(file, &der);
    uint8_t want[32];
    SHA256(der, len, want);
    OPENSSL_free(der);
    assert_memory_equal(v.ev.sha256, want, 32);
    char hex[65];
    assert_int_equal(strlen(tls_evidence_fingerprint(&v.ev, hex, sizeof(hex))), 64);

    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

static void test_valid(void **state)
{
    (void)state;
    expect_pass("valid", 0, TLS_VERSION_1_3, "TLS_AES_128_GCM_SHA256", "EC", 256, MX_NAME);
}

static void test_valid_tls12(void **state)
{
    (void)state;
    expect_pass("valid", TLS_VERSION_1_2, TLS_VERSION_1_2, "ECDHE-ECDSA-AES128-GCM-SHA256", "EC",
                256, MX_NAME);
}

static void test_valid_rsa(void **state)
{
    (void)state;
    expect_pass("valid-rsa", TLS_VERSION_1_2, TLS_VERSION_1_2, "ECDHE-RSA-AES128-GCM-SHA256", "RSA",
                2048, MX_NAME);
}

static void test_chain(void **state)
{
    (void)state;
    expect_pass("chain", 0, TLS_VERSION_1_3, "TLS_AES_128_GCM_SHA256", "EC", 256, MX_NAME);
}

static void test_wildcard(void **state)
{
    (void)state;
    expect_pass("wildcard", 0, TLS_VERSION_1_3, "TLS_AES_128_GCM_SHA256", "EC", 256,
                "*.floormta.test");
}

/* A profile refused with exactly this reason; the server must fail too (no byte of a
 * message can go over a refused handshake). */
static struct tls_verdict expect_refused(const char *profile, enum tls_reason reason)
{
    struct tls_ctx *cctx = client_ctx(0);
    struct tls_ctx *sctx = server_ctx(profile, 0, 0, NULL);
    assert_non_null(cctx);
    assert_non_null(sctx);
    struct tls_verdict v;
    struct hs_result r;
    assert_int_equal(verdict_for(cctx, sctx, MX_NAME, &v, &r), TLS_ERR_HANDSHAKE);
    assert_false(r.client_done);
    assert_false(r.server_done);
    assert_int_equal(r.server_rc, TLS_ERR_HANDSHAKE);
    assert_false(v.pass);
    if (v.reason != reason)
        fail_msg("%s: reason %s, want %s (problems 0x%x, x509 %d, detail '%s')", profile,
                 tls_reason_name(v.reason), tls_reason_name(reason), v.ev.problems, v.ev.x509_error,
                 v.ev.detail);
    assert_true(v.ev.problems & (1u << reason));
    assert_true(v.ev.has_cert);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
    return v;
}

static void test_expired(void **state)
{
    (void)state;
    struct tls_verdict v = expect_refused("expired", TLS_REASON_CERT_EXPIRED);
    assert_int_equal(v.ev.x509_error, X509_V_ERR_CERT_HAS_EXPIRED);
    assert_true(v.ev.not_after < (int64_t)time(NULL));
}

static void test_not_yet_valid(void **state)
{
    (void)state;
    struct tls_verdict v = expect_refused("not-yet-valid", TLS_REASON_CERT_NOT_YET_VALID);
    assert_int_equal(v.ev.x509_error, X509_V_ERR_CERT_NOT_YET_VALID);
    assert_true(v.ev.not_before > (int64_t)time(NULL));
}

static void test_wrong_name(void **state)
{
    (void)state;
    struct tls_verdict v = expect_refused("wrong-name", TLS_REASON_HOSTNAME_MISMATCH);
    assert_string_equal(v.ev.sans, "other.invalid");
    /* The chain itself is fine: the host name is the only problem. */
    assert_int_equal(v.ev.problems, 1u << TLS_REASON_HOSTNAME_MISMATCH);
}

static void test_self_signed(void **state)
{
    (void)state;
    struct tls_verdict v = expect_refused("self-signed", TLS_REASON_CERT_SELF_SIGNED);
    /* The library's own error (it does not call a leaf without keyCertSign
     * self-signed); the verdict does. */
    assert_int_not_equal(v.ev.x509_error, 0);
    assert_int_equal(v.ev.problems, 1u << TLS_REASON_CERT_SELF_SIGNED);
    assert_string_equal(v.ev.subject, v.ev.issuer);
}

static void test_untrusted_ca(void **state)
{
    (void)state;
    struct tls_verdict v = expect_refused("untrusted-ca", TLS_REASON_CERT_UNTRUSTED);
    assert_non_null(strstr(v.ev.issuer, "floormta evil root"));
}

static void test_weak_key(void **state)
{
    (void)state;
    struct tls_verdict v = expect_refused("weak-key", TLS_REASON_WEAK_KEY);
    assert_string_equal(v.ev.key_type, "RSA");
    assert_int_equal(v.ev.key_bits, 1024);
}

static void test_weak_sig(void **state)
{
    (void)state;
    struct tls_verdict v = expect_refused("weak-sig", TLS_REASON_WEAK_SIGNATURE);
    assert_int_equal(v.ev.problems, 1u << TLS_REASON_WEAK_SIGNATURE);
}

static void test_partial_wildcard(void **state)
{
    (void)state;
    struct tls_verdict v = expect_refused("partial-wildcard", TLS_REASON_HOSTNAME_MISMATCH);
    assert_string_equal(v.ev.sans, "m*.floormta.test");
}

/* A receiver capped below the floor that knows TLS 1.3 (this BoringSSL) negotiates from
 * our supported_versions only (RFC 8446, 4.2.1): no overlap, so it answers with a
 * protocol_version alert and never says which version it has. */
static void expect_version_alert(uint16_t floor, uint16_t server_min, uint16_t server_max)
{
    struct tls_ctx *cctx = client_ctx(floor);
    struct tls_ctx *sctx = server_ctx("valid-rsa", server_min, server_max, NULL);
    assert_non_null(cctx);
    assert_non_null(sctx);
    struct tls_verdict v;
    struct hs_result r;
    assert_int_equal(verdict_for(cctx, sctx, MX_NAME, &v, &r), TLS_ERR_HANDSHAKE);
    assert_false(v.pass);
    assert_int_equal(v.reason, TLS_REASON_VERSION_BELOW_FLOOR);
    assert_int_equal(v.ev.version, 0);
    assert_false(v.ev.has_cert);
    assert_non_null(strstr(v.ev.detail, "PROTOCOL_VERSION"));
    assert_int_equal(r.server_rc, TLS_ERR_HANDSHAKE);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

static void test_server_tls10(void **state)
{
    (void)state;
    expect_version_alert(0, TLS_VERSION_1_0, TLS_VERSION_1_0);
}

static void test_server_tls11(void **state)
{
    (void)state;
    expect_version_alert(0, TLS_VERSION_1_0, TLS_VERSION_1_1);
}

static void test_floor13_server12(void **state)
{
    (void)state;
    expect_version_alert(TLS_VERSION_1_3, 0, TLS_VERSION_1_2);
}

/* A legacy receiver (one that predates TLS 1.3, such as OpenSSL 1.0) ignores
 * supported_versions, picks its best version from legacy_version and a suite from our
 * offer, and answers with a ServerHello: the verdict names its version. This plays
 * that receiver's first flight byte for byte. */
static void expect_legacy_version(uint16_t floor, uint16_t version, uint16_t suite)
{
    struct tls_ctx *cctx = client_ctx(floor);
    struct tls_conn *c = NULL;
    bool done;
    assert_int_equal(tls_conn_new_client(cctx, MX_NAME, NULL, NULL, &c), 0);
    assert_int_equal(tls_conn_handshake(c, &done), 0);
    assert_false(done);
    uint8_t hello[2048];
    size_t n = tls_conn_drain(c, hello, sizeof(hello));
    assert_true(n > 5);
    assert_int_equal(hello[0], 22); /* our ClientHello */

    uint8_t sh[5 + 4 + 38] = { 22, 0x03, 0x01, 0, 42, 2, 0, 0, 38 };
    sh[9] = version >> 8;
    sh[10] = version & 0xff;
    memset(sh + 11, 0x5a, 32); /* server random */
    sh[43] = 0;                /* empty session id */
    sh[44] = suite >> 8;
    sh[45] = suite & 0xff;
    sh[46] = 0; /* no compression */
    /* Fed in two pieces: the version must be found across feeds. */
    assert_int_equal(tls_conn_feed(c, sh, 7), 0);
    assert_int_equal(tls_conn_handshake(c, &done), 0);
    assert_int_equal(tls_conn_feed(c, sh + 7, sizeof(sh) - 7), 0);
    assert_int_equal(tls_conn_handshake(c, &done), TLS_ERR_HANDSHAKE);
    const struct tls_verdict *v = tls_conn_verdict(c);
    assert_false(v->pass);
    assert_int_equal(v->reason, TLS_REASON_VERSION_BELOW_FLOOR);
    assert_int_equal(v->ev.version, version);
    assert_true(v->ev.detail[0] != '\0');
    /* A protocol_version alert is pending for the receiver. */
    assert_true(tls_conn_pending(c) > 0);
    /* Same result when asked again. */
    assert_int_equal(tls_conn_handshake(c, &done), TLS_ERR_HANDSHAKE);
    tls_conn_free(c);
    tls_ctx_free(cctx);
}

static void test_legacy_tls10(void **state)
{
    (void)state;
    expect_legacy_version(0, TLS_VERSION_1_0, 0xc013); /* ECDHE-RSA-AES128-SHA */
}

static void test_legacy_tls11(void **state)
{
    (void)state;
    expect_legacy_version(0, TLS_VERSION_1_1, 0xc013);
}

static void test_legacy_tls12_floor13(void **state)
{
    (void)state;
    expect_legacy_version(TLS_VERSION_1_3, TLS_VERSION_1_2, 0xc02f); /* ECDHE-RSA-AES128-GCM */
}

/* TLS 1.2 with only CBC suites: we never offer them, so the receiver aborts before any
 * ServerHello; the verdict is a refusal with the receiver's alert as detail. */
static void test_cbc_only(void **state)
{
    (void)state;
    struct tls_ctx *cctx = client_ctx(0);
    struct tls_ctx *sctx = server_ctx("valid-rsa", 0, TLS_VERSION_1_2, "ECDHE-RSA-AES128-SHA");
    assert_non_null(cctx);
    assert_non_null(sctx);
    struct tls_verdict v;
    assert_int_equal(verdict_for(cctx, sctx, MX_NAME, &v, NULL), TLS_ERR_HANDSHAKE);
    assert_false(v.pass);
    assert_int_equal(v.reason, TLS_REASON_HANDSHAKE_FAILED);
    assert_int_equal(v.ev.version, 0);
    assert_string_equal(v.ev.cipher, "");
    assert_non_null(strstr(v.ev.detail, "before ServerHello"));
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

/* Only suites we do not even offer: the receiver aborts before any ServerHello, which
 * the library cannot tell from other aborts; the detail says what happened. */
static void test_no_common_suite(void **state)
{
    (void)state;
    struct tls_ctx *cctx = client_ctx(0);
    struct tls_ctx *sctx = server_ctx("valid-rsa", 0, TLS_VERSION_1_2, "AES128-SHA");
    assert_non_null(cctx);
    assert_non_null(sctx);
    struct tls_verdict v;
    assert_int_equal(verdict_for(cctx, sctx, MX_NAME, &v, NULL), TLS_ERR_HANDSHAKE);
    assert_false(v.pass);
    assert_int_equal(v.reason, TLS_REASON_HANDSHAKE_FAILED);
    assert_int_equal(v.ev.version, 0);
    assert_non_null(strstr(v.ev.detail, "before ServerHello"));
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

/* The name the client asked for must be in the certificate. */
static void test_peer_name_checked(void **state)
{
    (void)state;
    struct tls_ctx *cctx = client_ctx(0);
    struct tls_ctx *sctx = server_ctx("valid", 0, 0, NULL);
    struct tls_verdict v;
    assert_int_equal(verdict_for(cctx, sctx, "mx2.floormta.test", &v, NULL), TLS_ERR_HANDSHAKE);
    assert_int_equal(v.reason, TLS_REASON_HOSTNAME_MISMATCH);
    /* The wildcard covers one label only. */
    tls_ctx_free(sctx);
    sctx = server_ctx("wildcard", 0, 0, NULL);
    assert_int_equal(verdict_for(cctx, sctx, "a.mx.floormta.test", &v, NULL), TLS_ERR_HANDSHAKE);
    assert_int_equal(v.reason, TLS_REASON_HOSTNAME_MISMATCH);
    assert_int_equal(verdict_for(cctx, sctx, "mx9.floormta.test", &v, NULL), 0);
    assert_true(v.pass);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

/* tls_ctx_verify_chain: the same judgement without a handshake. */
static void test_verify_chain(void **state)
{
    (void)state;
    struct tls_ctx *cctx = client_ctx(0);
    uint8_t *leaf, *inter;
    size_t leaf_len = read_der("chain.crt", &leaf);
    size_t inter_len = read_der("inter.crt", &inter);
    const uint8_t *ders[2] = { leaf, inter };
    size_t lens[2] = { leaf_len, inter_len };
    struct tls_verdict v;

    assert_int_equal(tls_ctx_verify_chain(cctx, MX_NAME, ders, lens, 2, &v), 0);
    assert_true(v.pass);
    assert_string_equal(v.ev.cipher, "");
    assert_int_equal(v.ev.version, 0);
    /* Without its intermediate, the leaf does not chain to the root. */
    assert_int_equal(tls_ctx_verify_chain(cctx, MX_NAME, ders, lens, 1, &v), 0);
    assert_int_equal(v.reason, TLS_REASON_CERT_UNTRUSTED);
    assert_int_equal(tls_ctx_verify_chain(cctx, "other.invalid", ders, lens, 2, &v), 0);
    assert_int_equal(v.reason, TLS_REASON_HOSTNAME_MISMATCH);
    assert_int_equal(tls_ctx_verify_chain(cctx, MX_NAME, ders, lens, 0, &v), 0);
    assert_int_equal(v.reason, TLS_REASON_NO_CERTIFICATE);
    /* Garbage is an invalid certificate, not a crash. */
    const uint8_t junk[] = { 0x30, 0x03, 0x02, 0x01, 0x01 };
    const uint8_t *jders[1] = { junk };
    size_t jlens[1] = { sizeof(junk) };
    assert_int_equal(tls_ctx_verify_chain(cctx, MX_NAME, jders, jlens, 1, &v), 0);
    assert_int_equal(v.reason, TLS_REASON_CERT_INVALID);
    assert_int_equal(tls_ctx_verify_chain(cctx, NULL, ders, lens, 2, &v), -EINVAL);

    struct tls_ctx *sctx = server_ctx("valid", 0, 0, NULL);
    assert_int_equal(tls_ctx_verify_chain(sctx, MX_NAME, ders, lens, 2, &v), TLS_ERR_STATE);
    tls_ctx_free(sctx);
    OPENSSL_free(leaf);
    OPENSSL_free(inter);
    tls_ctx_free(cctx);
}

/* Several problems: all recorded, the first in TLS_REASONS order reported. */
static void test_problem_order(void **state)
{
    (void)state;
    struct tls_ctx *cctx = client_ctx(0);
    uint8_t *der;
    size_t len = read_der("expired.crt", &der);
    const uint8_t *ders[1] = { der };
    struct tls_verdict v;
    assert_int_equal(tls_ctx_verify_chain(cctx, "other.invalid", ders, &len, 1, &v), 0);
    assert_int_equal(v.reason, TLS_REASON_CERT_EXPIRED);
    assert_int_equal(v.ev.problems,
                     (1u << TLS_REASON_CERT_EXPIRED) | (1u << TLS_REASON_HOSTNAME_MISMATCH));
    OPENSSL_free(der);
    tls_ctx_free(cctx);
}

static void test_ctx_errors(void **state)
{
    (void)state;
    struct tls_ctx *ctx = NULL;
    struct tls_client_config c = { .ca_file = "/nonexistent/ca.crt" };
    assert_int_equal(tls_ctx_new_client(&c, &ctx), TLS_ERR_CA_LOAD);
    c.ca_file = "/dev/null";
    assert_int_equal(tls_ctx_new_client(&c, &ctx), TLS_ERR_CA_LOAD);
    c.ca_file = pki_path("ca.crt");
    c.min_version = TLS_VERSION_1_1;
    assert_int_equal(tls_ctx_new_client(&c, &ctx), TLS_ERR_CONFIG);
    c.min_version = TLS_VERSION_1_3;
    assert_int_equal(tls_ctx_new_client(&c, &ctx), 0);
    tls_ctx_free(ctx);

    struct tls_server_config s = { .cert_file = pki_path("valid.crt"),
                                   .key_file = pki_path("valid-rsa.key") };
    assert_int_equal(tls_ctx_new_server(&s, &ctx), TLS_ERR_CERT_LOAD);
    s.key_file = "/nonexistent.key";
    assert_int_equal(tls_ctx_new_server(&s, &ctx), TLS_ERR_CERT_LOAD);
    s.key_file = pki_path("valid.key");
    s.min_version = TLS_VERSION_1_3;
    s.max_version = TLS_VERSION_1_2;
    assert_int_equal(tls_ctx_new_server(&s, &ctx), TLS_ERR_CONFIG);
    s.min_version = 0;
    s.max_version = 0;
    s.cipher_list = "NOT-A-SUITE";
    assert_int_equal(tls_ctx_new_server(&s, &ctx), TLS_ERR_CONFIG);
    s.cipher_list = NULL;
    assert_int_equal(tls_ctx_new_server(&s, &ctx), 0);
    tls_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_valid_tls12),
        cmocka_unit_test(test_valid_rsa),
        cmocka_unit_test(test_chain),
        cmocka_unit_test(test_wildcard),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_not_yet_valid),
        cmocka_unit_test(test_wrong_name),
        cmocka_unit_test(test_self_signed),
        cmocka_unit_test(test_untrusted_ca),
        cmocka_unit_test(test_weak_key),
        cmocka_unit_test(test_weak_sig),
        cmocka_unit_test(test_partial_wildcard),
        cmocka_unit_test(test_server_tls10),
        cmocka_unit_test(test_server_tls11),
        cmocka_unit_test(test_floor13_server12),
        cmocka_unit_test(test_legacy_tls10),
        cmocka_unit_test(test_legacy_tls11),
        cmocka_unit_test(test_legacy_tls12_floor13),
        cmocka_unit_test(test_cbc_only),
        cmocka_unit_test(test_no_common_suite),
        cmocka_unit_test(test_peer_name_checked),
        cmocka_unit_test(test_verify_chain),
        cmocka_unit_test(test_problem_order),
        cmocka_unit_test(test_ctx_errors),
    };
    return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
