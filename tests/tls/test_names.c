/*
 * tests/tls/test_names.c — tls/'s names and texts: error strings, version names and
 * parsing, reason names (the stable strings logs, JSON and metrics use), and the
 * verdict helpers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "tls/tls.h"

static void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(tls_strerror(TLS_ERR_CA_LOAD), "cannot load the trust store");
    assert_string_equal(tls_strerror(TLS_ERR_HANDSHAKE),
                        "TLS handshake did not pass (see the verdict)");
    assert_string_equal(tls_strerror(TLS_ERR_LIBRARY), "TLS library failure");
    assert_string_equal(tls_strerror(-ENOBUFS), strerror(ENOBUFS));
    assert_string_equal(tls_strerror(0), "success");
    assert_string_equal(tls_strerror(-99999), "unknown TLS error");
    assert_string_equal(tls_strerror(12345), "unknown TLS error");
}

static void test_versions(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        uint16_t want;
    } ok[] = {
        { "1.2", TLS_VERSION_1_2 },     { "1.3", TLS_VERSION_1_3 },
        { "TLSv1.2", TLS_VERSION_1_2 }, { "tls1.3", TLS_VERSION_1_3 },
        { "TLS1.1", TLS_VERSION_1_1 },  { "tlsv1.0", TLS_VERSION_1_0 },
        { "1.0", TLS_VERSION_1_0 },
    };
    uint16_t v;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        v = 0;
        assert_int_equal(tls_version_parse(ok[i].in, &v), 0);
        assert_int_equal(v, ok[i].want);
    }
    const char *bad[] = { "", "1.4", "ssl3", "TLSv", "1.2 ", "v1.2", "tls1.2x" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(tls_version_parse(bad[i], &v), TLS_ERR_CONFIG);
    assert_int_equal(tls_version_parse(NULL, &v), TLS_ERR_CONFIG);

    assert_string_equal(tls_version_name(TLS_VERSION_1_0), "TLSv1");
    assert_string_equal(tls_version_name(TLS_VERSION_1_1), "TLSv1.1");
    assert_string_equal(tls_version_name(TLS_VERSION_1_2), "TLSv1.2");
    assert_string_equal(tls_version_name(TLS_VERSION_1_3), "TLSv1.3");
    assert_string_equal(tls_version_name(0x0300), "unknown");
    assert_string_equal(tls_version_name(0), "unknown");
}

static void test_reasons(void **state)
{
    (void)state;
    assert_string_equal(tls_reason_name(TLS_REASON_NONE), "none");
    assert_string_equal(tls_reason_name(TLS_REASON_VERSION_BELOW_FLOOR), "version_below_floor");
    assert_string_equal(tls_reason_name(TLS_REASON_CERT_SELF_SIGNED), "cert_self_signed");
    assert_string_equal(tls_reason_name(TLS_REASON_WEAK_SIGNATURE), "weak_signature");
    assert_string_equal(tls_reason_text(TLS_REASON_HOSTNAME_MISMATCH),
                        "certificate does not match the MX host name");
    assert_string_equal(tls_reason_name(TLS_REASON__COUNT), "unknown");
    assert_string_equal(tls_reason_text((enum tls_reason) - 1), "unknown");
    /* Every reason has a distinct, non-empty name. */
    for (int i = 0; i < TLS_REASON__COUNT; i++) {
        assert_true(strlen(tls_reason_name(i)) > 0);
        assert_true(strlen(tls_reason_text(i)) > 0);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(tls_reason_name(i), tls_reason_name(j));
    }
}

static void test_verdict_helpers(void **state)
{
    (void)state;
    struct tls_verdict v;
    memset(&v, 0xa5, sizeof(v));
    tls_verdict_clear(&v);
    assert_false(v.pass);
    assert_int_equal(v.reason, TLS_REASON_NONE);
    assert_int_equal(v.ev.problems, 0);
    assert_string_equal(v.ev.subject, "");
    assert_string_equal(v.ev.cipher, "");

    v.ev.version = TLS_VERSION_1_3;
    tls_verdict_refuse(&v, TLS_REASON_NO_STARTTLS);
    assert_false(v.pass);
    assert_int_equal(v.reason, TLS_REASON_NO_STARTTLS);
    assert_int_equal(v.ev.version, TLS_VERSION_1_3); /* evidence kept */
    assert_int_equal(v.ev.problems, 1u << TLS_REASON_NO_STARTTLS);

    for (int i = 0; i < 32; i++)
        v.ev.sha256[i] = (uint8_t)((i % 16) * 17);
    char hex[65];
    assert_string_equal(tls_evidence_fingerprint(&v.ev, hex, sizeof(hex)),
                        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
    char small[9];
    assert_string_equal(tls_evidence_fingerprint(&v.ev, small, sizeof(small)), "00112233");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_reasons),
        cmocka_unit_test(test_verdict_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
