/*
 * tests/tls/test_conn.c — a tls_conn as the engine drives it: application data both
 * ways after the handshake, close_notify, the 64 KiB feed bound, and the calls that
 * are not valid in a state.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/tls/harness.h"

struct pair {
    struct tls_ctx *cctx, *sctx;
    struct tls_conn *c, *s;
};

static void pair_open(struct pair *p, uint16_t server_max)
{
    p->cctx = client_ctx(0);
    p->sctx = server_ctx("valid", 0, server_max, NULL);
    assert_non_null(p->cctx);
    assert_non_null(p->sctx);
    assert_int_equal(tls_conn_new_client(p->cctx, MX_NAME, NULL, NULL, &p->c), 0);
    assert_int_equal(tls_conn_new_server(p->sctx, &p->s), 0);
    /* Contexts may go while their conns live: each conn holds a reference. */
    tls_ctx_free(p->cctx);
    tls_ctx_free(p->sctx);
    struct hs_result r = handshake(p->c, p->s);
    assert_int_equal(r.client_rc, 0);
    assert_int_equal(r.server_rc, 0);
    assert_true(r.client_done);
    assert_true(r.server_done);
}

static void pair_close(struct pair *p)
{
    tls_conn_free(p->c);
    tls_conn_free(p->s);
}

static void round_trip(uint16_t server_max, uint16_t want_version)
{
    struct pair p;
    pair_open(&p, server_max);
    assert_int_equal(tls_conn_version(p.s), want_version);
    assert_string_equal(tls_conn_cipher(p.s), tls_conn_verdict(p.c)->ev.cipher);

    const char msg[] = "EHLO client.floormta.test\r\n";
    uint8_t out[256];
    assert_int_equal(transfer(p.c, p.s, msg, sizeof(msg) - 1, out, sizeof(out)), sizeof(msg) - 1);
    assert_memory_equal(out, msg, sizeof(msg) - 1);
    const char reply[] = "250 mx.floormta.test\r\n";
    assert_int_equal(transfer(p.s, p.c, reply, sizeof(reply) - 1, out, sizeof(out)),
                     sizeof(reply) - 1);
    assert_memory_equal(out, reply, sizeof(reply) - 1);

    /* A message body larger than a record and than the feed bound: moved in slices. */
    size_t big = 200 * 1024;
    uint8_t *data = malloc(big), *got = malloc(big);
    assert_non_null(data);
    assert_non_null(got);
    for (size_t i = 0; i < big; i++)
        data[i] = (uint8_t)(i * 7 + 3);
    assert_int_equal(transfer(p.c, p.s, data, big, got, big), big);
    assert_memory_equal(got, data, big);
    free(data);
    free(got);
    pair_close(&p);
}

static void test_round_trip_tls13(void **state)
{
    (void)state;
    round_trip(0, TLS_VERSION_1_3);
}

static void test_round_trip_tls12(void **state)
{
    (void)state;
    round_trip(TLS_VERSION_1_2, TLS_VERSION_1_2);
}

static void test_close_notify(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p, 0);
    uint8_t buf[64];
    size_t n;
    assert_int_equal(tls_conn_shutdown(p.s), 0);
    assert_int_equal(tls_conn_shutdown(p.s), 0); /* once is enough; again is harmless */
    assert_int_equal(tls_conn_write(p.s, "x", 1), TLS_ERR_STATE);
    assert_true(tls_conn_pending(p.s) > 0);
    assert_int_equal(pump_one(p.s, p.c), 0);
    int rc;
    /* The client may first read the server's session tickets, then the alert. */
    for (int i = 0; i < 4 && (rc = tls_conn_read(p.c, buf, sizeof(buf), &n)) == 0; i++)
        assert_int_equal(n, 0);
    assert_int_equal(rc, TLS_ERR_CLOSED);
    assert_int_equal(tls_conn_read(p.c, buf, sizeof(buf), &n), TLS_ERR_CLOSED);
    /* The client answers with its own close_notify. */
    assert_int_equal(tls_conn_shutdown(p.c), 0);
    assert_int_equal(pump_one(p.c, p.s), 0);
    assert_int_equal(tls_conn_read(p.s, buf, sizeof(buf), &n), TLS_ERR_CLOSED);
    pair_close(&p);
}

static void test_feed_bound(void **state)
{
    (void)state;
    struct tls_ctx *cctx = client_ctx(0);
    struct tls_conn *c = NULL;
    assert_int_equal(tls_conn_new_client(cctx, MX_NAME, NULL, NULL, &c), 0);
    tls_ctx_free(cctx);
    static uint8_t junk[32 * 1024];
    assert_int_equal(tls_conn_feed(c, junk, sizeof(junk)), 0);
    assert_int_equal(tls_conn_feed(c, junk, sizeof(junk)), 0);
    assert_int_equal(tls_conn_feed(c, junk, 1), -ENOBUFS);
    assert_int_equal(tls_conn_feed(c, NULL, 0), 0);
    assert_int_equal(tls_conn_feed(c, NULL, 1), -EINVAL);
    tls_conn_free(c);
}

static void test_state_errors(void **state)
{
    (void)state;
    struct tls_ctx *cctx = client_ctx(0);
    struct tls_ctx *sctx = server_ctx("expired", 0, 0, NULL);
    struct tls_conn *c = NULL, *s = NULL;
    uint8_t buf[16];
    size_t n = 99;

    assert_int_equal(tls_conn_new_client(cctx, "", NULL, NULL, &c), -EINVAL);
    assert_int_equal(tls_conn_new_client(sctx, MX_NAME, NULL, NULL, &c), -EINVAL);
    assert_int_equal(tls_conn_new_server(cctx, &s), -EINVAL);
    assert_int_equal(tls_conn_new_client(cctx, MX_NAME, NULL, NULL, &c), 0);
    assert_int_equal(tls_conn_new_server(sctx, &s), 0);
    assert_int_equal(tls_conn_read(c, buf, sizeof(buf), &n), TLS_ERR_STATE);
    assert_int_equal(n, 0);
    assert_int_equal(tls_conn_write(c, "x", 1), TLS_ERR_STATE);
    assert_int_equal(tls_conn_shutdown(c), TLS_ERR_STATE);
    assert_int_equal(tls_conn_version(c), 0);
    assert_string_equal(tls_conn_cipher(c), "");
    const struct tls_verdict *v = tls_conn_verdict(c);
    assert_false(v->pass);
    assert_int_equal(v->reason, TLS_REASON_NONE);

    /* Refused: nothing can be written over it. */
    struct hs_result r = handshake(c, s);
    assert_int_equal(r.client_rc, TLS_ERR_HANDSHAKE);
    assert_int_equal(v->reason, TLS_REASON_CERT_EXPIRED);
    assert_int_equal(tls_conn_write(c, "x", 1), TLS_ERR_STATE);
    assert_int_equal(tls_conn_read(s, buf, sizeof(buf), &n), TLS_ERR_STATE);
    bool done = true;
    assert_int_equal(tls_conn_handshake(c, &done), TLS_ERR_HANDSHAKE);
    assert_false(done);
    tls_conn_free(c);
    tls_conn_free(s);
    tls_ctx_free(cctx);
    tls_ctx_free(sctx);
    tls_conn_free(NULL);
    tls_ctx_free(NULL);
}

/* Garbage from the "receiver" (say, a plaintext SMTP reply): a failed handshake with
 * the library's words, not a crash or a pass. */
static void test_garbage(void **state)
{
    (void)state;
    struct tls_ctx *cctx = client_ctx(0);
    struct tls_conn *c = NULL;
    bool done;
    assert_int_equal(tls_conn_new_client(cctx, MX_NAME, NULL, NULL, &c), 0);
    assert_int_equal(tls_conn_handshake(c, &done), 0);
    uint8_t drop[2048];
    tls_conn_drain(c, drop, sizeof(drop));
    const char reply[] = "454 4.7.0 TLS not available due to local problem\r\n";
    assert_int_equal(tls_conn_feed(c, reply, sizeof(reply) - 1), 0);
    assert_int_equal(tls_conn_handshake(c, &done), TLS_ERR_HANDSHAKE);
    const struct tls_verdict *v = tls_conn_verdict(c);
    assert_int_equal(v->reason, TLS_REASON_HANDSHAKE_FAILED);
    assert_true(v->ev.detail[0] != '\0');
    tls_conn_free(c);
    tls_ctx_free(cctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_tls13), cmocka_unit_test(test_round_trip_tls12),
        cmocka_unit_test(test_close_notify),     cmocka_unit_test(test_feed_bound),
        cmocka_unit_test(test_state_errors),     cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
