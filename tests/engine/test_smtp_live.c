/*
 * tests/engine/test_smtp_live.c — delivery sessions against floormta-sink on loopback
 * over real TLS (the test PKI): several messages on one connection (1 KB, 100 KB with
 * dot lines, a bare-LF body, 2 MB read through a callback in small pieces) checked
 * against the sink's counters (messages, body bytes, RSETs, pipelined commands); a
 * recipient refused next to an accepted one, then a fully refused message (RSET) and
 * the connection still usable; a receiver that drops the connection mid-DATA (every
 * recipient deferred, the session error reported); the READY idle timeout.
 *
 * The sink is started per test with fork/exec and stopped by PID (SIGTERM), which makes
 * it print its counters. Exit 77 when io_uring is unavailable. SMTP_LIVE_DEBUG=1 logs
 * every client state transition.
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "engine/log.h"
#include "engine/loop.h"
#include "engine/smtp_session.h"
#include "tests/engine/sink_fixture.h"
#include "tests/pki/testpki.h"
#include "tls/tls.h"

#define MX_NAME "mx.floormta.test"

static char work[] = "/tmp/floormta-smtp-live-XXXXXX";
static struct tls_ctx *tls;

/* ---- the owner: hands the session its messages one by one ------------------------------ */

struct msg {
    const char *rcpts[4];
    struct smtp_rcpt_result results[4];
    struct smtp_txn txn;
};

struct owner {
    struct msg *msgs;
    unsigned nmsgs, next, ended;
    bool hold; /* do not answer ready: let the idle timeout act */
    unsigned readies;
    bool done;
    struct smtp_client result;
};

static void on_ready(void *arg, struct smtp_session *s)
{
    struct owner *o = arg;
    o->readies++;
    if (o->hold)
        return;
    if (o->next < o->nmsgs) {
        int rc = smtp_session_deliver(s, &o->msgs[o->next++].txn);
        assert_int_equal(rc, SMTP_TXN_STARTED);
        /* Not ready any more until the transaction ends. */
        assert_int_equal(smtp_session_quit(s), -EBUSY);
        return;
    }
    assert_int_equal(smtp_session_quit(s), 0);
}

static void on_txn_done(void *arg, struct smtp_session *s, const struct smtp_txn *txn)
{
    struct owner *o = arg;
    assert_ptr_equal(txn, &o->msgs[o->ended].txn);
    o->ended++;
    /* Inside txn_done the session is not ready yet. */
    assert_int_equal(smtp_session_deliver(s, txn), -EBUSY);
    for (unsigned i = 0; i < txn->nrcpts; i++)
        assert_int_not_equal(txn->results[i].status, SMTP_RCPT_PENDING);
}

static void on_done(void *arg, const struct smtp_client *result)
{
    struct owner *o = arg;
    o->result = *result;
    o->done = true;
}

static const struct smtp_session_ops owner_ops = {
    .ready = on_ready,
    .txn_done = on_txn_done,
    .done = on_done,
};

static void run_with(struct owner *o, uint16_t port, unsigned idle_ms, unsigned reply_ms)
{
    struct eng_loop *loop = NULL;
    assert_int_equal(eng_loop_new(NULL, &loop), 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct smtp_session_config cfg = {
        .tls = tls,
        .mx_name = MX_NAME,
        .helo_name = "client.floormta.test",
        .connect_timeout_ms = 10000,
        .reply_timeout_ms = reply_ms,
        .send_timeout_ms = 10000,
        .idle_timeout_ms = idle_ms,
    };
    assert_int_equal(smtp_session_start_delivery(loop, &cfg, (struct sockaddr *)&sa, sizeof(sa),
                                                 &owner_ops, o),
                     0);
    assert_int_equal(eng_loop_run(loop), 0);
    eng_loop_free(loop);
    assert_true(o->done);
}

static void run(struct owner *o, uint16_t port, unsigned idle_ms)
{
    run_with(o, port, idle_ms, 10000);
}

static void msg_init(struct msg *m, const char *body, size_t len, unsigned n, ...)
{
    memset(m, 0, sizeof(*m));
    va_list ap;
    va_start(ap, n);
    for (unsigned i = 0; i < n; i++)
        m->rcpts[i] = va_arg(ap, const char *);
    va_end(ap);
    m->txn.sender = "sender@floormta.test";
    m->txn.rcpts = m->rcpts;
    m->txn.nrcpts = n;
    m->txn.body = body;
    m->txn.body_len = len;
    m->txn.results = m->results;
}

/* A body of about len bytes: CRLF lines (or bare LF ones), every 7th line starting
 * with a dot. *wire = the bytes the sink will count for it (doubled dots and CRLFs). */
static char *make_body(size_t len, bool bare_lf, size_t *out_len, uint64_t *wire)
{
    char *b = malloc(len + 128);
    assert_non_null(b);
    size_t n = 0, lines = 0, dots = 0;
    while (n < len) {
        if (lines % 7 == 3) {
            b[n++] = '.';
            dots++;
        }
        n += (size_t)sprintf(b + n, "line %zu of a realistic body, with some text to fill it",
                             lines);
        if (!bare_lf)
            b[n++] = '\r';
        b[n++] = '\n';
        lines++;
    }
    *out_len = n;
    *wire = n + dots + (bare_lf ? lines : 0);
    return b;
}

/* The body-read callback: the content in pieces of at most 1000 bytes. */
struct piecewise {
    const char *data;
    size_t len;
    unsigned calls;
    unsigned sleep_ms; /* per piece: a slow source (blocks the loop, on purpose) */
};

static int read_piece(void *arg, uint64_t off, const char **data, size_t *len)
{
    struct piecewise *p = arg;
    p->calls++;
    if (p->sleep_ms)
        usleep(p->sleep_ms * 1000);
    assert_true(off <= p->len);
    *data = p->data + off;
    *len = p->len - off < 1000 ? p->len - (size_t)off : 1000;
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void several_messages_one_connection(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.1=valid", NULL);
    size_t l1, l2, l3, l4;
    uint64_t w1, w2, w3, w4;
    char *b1 = make_body(1024, false, &l1, &w1);
    char *b2 = make_body(100 * 1024, false, &l2, &w2);
    char *b3 = make_body(1024, true, &l3, &w3);
    char *b4 = make_body(2 * 1024 * 1024, false, &l4, &w4);
    struct piecewise pw = { .data = b4, .len = l4 };
    struct msg m[4];
    msg_init(&m[0], b1, l1, 2, "a@floormta.test", "b@floormta.test");
    msg_init(&m[1], b2, l2, 1, "c@floormta.test");
    msg_init(&m[2], b3, l3, 1, "d@floormta.test");
    msg_init(&m[3], NULL, 0, 1, "e@floormta.test");
    m[3].txn.body_read = read_piece;
    m[3].txn.body_arg = &pw;
    m[3].txn.size = l4;
    struct owner o = { .msgs = m, .nmsgs = 4 };
    run(&o, k.port, 0);

    assert_int_equal(o.ended, 4);
    assert_int_equal(o.readies, 5); /* after EHLO, then after each message */
    for (int i = 0; i < 4; i++)
        for (unsigned r = 0; r < m[i].txn.nrcpts; r++) {
            assert_int_equal(m[i].results[r].status, SMTP_RCPT_DELIVERED);
            assert_int_equal(m[i].results[r].code, 250);
            assert_string_equal(m[i].results[r].enhanced, "2.0.0");
        }
    assert_true(pw.calls >= l4 / 1000);
    assert_int_equal(o.result.outcome, SMTPC_OUTCOME_PASS);
    assert_int_equal(o.result.err, 0);
    assert_true(o.result.caps.ext & SMTP_EXT_PIPELINING);

    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 4);
    assert_int_equal(c.bytes, w1 + w2 + w3 + w4);
    assert_int_equal(c.connections, 1);
    assert_int_equal(c.handshakes, 1);
    assert_int_equal(c.rsets, 0); /* every transaction reached its end of data */
    /* MAIL + RCPTs + DATA in one group: 3 or 2 commands behind the first, per message. */
    assert_int_equal(c.pipelined, 3 + 2 + 2 + 2);
    free(b1);
    free(b2);
    free(b3);
    free(b4);
}

static void refusals_and_rset(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.1=valid", NULL);
    static const char body[] = "Subject: t\r\n\r\nhello\r\n";
    struct msg m[3];
    msg_init(&m[0], body, sizeof(body) - 1, 3, "ok@floormta.test", "reject-bob@floormta.test",
             "tempfail-carol@floormta.test");
    msg_init(&m[1], body, sizeof(body) - 1, 2, "reject-a@floormta.test", "reject-b@floormta.test");
    msg_init(&m[2], body, sizeof(body) - 1, 1, "after-rset@floormta.test");
    struct owner o = { .msgs = m, .nmsgs = 3 };
    run(&o, k.port, 0);

    assert_int_equal(o.ended, 3);
    assert_int_equal(m[0].results[0].status, SMTP_RCPT_DELIVERED);
    assert_int_equal(m[0].results[1].status, SMTP_RCPT_BOUNCED);
    assert_int_equal(m[0].results[1].code, 550);
    assert_string_equal(m[0].results[1].enhanced, "5.1.1");
    assert_int_equal(m[0].results[1].at, SMTPC_RCPT);
    assert_int_equal(m[0].results[2].status, SMTP_RCPT_DEFERRED);
    assert_int_equal(m[0].results[2].code, 451);
    assert_string_equal(m[0].results[2].enhanced, "4.2.0");
    assert_int_equal(m[1].results[0].status, SMTP_RCPT_BOUNCED);
    assert_int_equal(m[1].results[1].status, SMTP_RCPT_BOUNCED);
    assert_int_equal(m[2].results[0].status, SMTP_RCPT_DELIVERED);
    assert_int_equal(o.result.err, 0);

    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 2);
    assert_int_equal(c.bytes, 2 * (sizeof(body) - 1));
    assert_int_equal(c.rsets, 1); /* only after the refused message */
    assert_int_equal(c.refused, 4);
    assert_int_equal(c.connections, 1);
}

static void dropped_mid_data(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.1=drop-data", NULL);
    size_t len;
    uint64_t wire;
    char *body = make_body(100 * 1024, false, &len, &wire);
    struct msg m[2];
    msg_init(&m[0], body, len, 2, "a@floormta.test", "reject-b@floormta.test");
    msg_init(&m[1], body, len, 1, "never@floormta.test");
    struct owner o = { .msgs = m, .nmsgs = 2 };
    run(&o, k.port, 0);

    assert_int_equal(o.ended, 1); /* the second message was never begun */
    assert_int_equal(m[0].results[0].status, SMTP_RCPT_DEFERRED);
    assert_int_equal(m[0].results[0].source, SMTP_RESULT_NETWORK);
    assert_string_equal(m[0].results[0].enhanced, "4.4.2");
    assert_true(m[0].results[0].at == SMTPC_BODY || m[0].results[0].at == SMTPC_DOT);
    assert_int_equal(m[0].results[1].status, SMTP_RCPT_BOUNCED);
    assert_int_equal(o.result.outcome, SMTPC_OUTCOME_PASS);
    assert_int_not_equal(o.result.err, 0);
    assert_true(o.result.err_state == SMTPC_BODY || o.result.err_state == SMTPC_DOT);

    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 0);
    free(body);
}

/* A body that takes longer to send than a reply may take to come: the reply deadline
 * must not cut it (a recv armed for the pipelined replies is still in flight when the
 * body starts), while the final reply is still held to its own deadline. */
static void slow_body_outlives_reply_timeout(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.1=valid", NULL);
    size_t len;
    uint64_t wire;
    char *body = make_body(40 * 1024, false, &len, &wire);
    struct piecewise pw = { .data = body, .len = len, .sleep_ms = 20 };
    struct msg m[1];
    msg_init(&m[0], NULL, 0, 1, "slow@floormta.test");
    m[0].txn.body_read = read_piece;
    m[0].txn.body_arg = &pw;
    struct owner o = { .msgs = m, .nmsgs = 1 };
    run_with(&o, k.port, 0, 300); /* about 800 ms of body against a 300 ms reply timeout */
    assert_int_equal(m[0].results[0].status, SMTP_RCPT_DELIVERED);
    assert_int_equal(o.result.err, 0);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 1);
    assert_int_equal(c.bytes, wire);
    free(body);
}

static void idle_timeout_quits(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.1=valid", NULL);
    struct owner o = { .hold = true };
    run(&o, k.port, 300);
    assert_int_equal(o.readies, 1);
    assert_int_equal(o.ended, 0);
    assert_int_equal(o.result.err, 0); /* a polite QUIT, not an error */
    assert_int_equal(o.result.state, SMTPC_DONE);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.connections, 1);
    assert_int_equal(c.messages, 0);
}

/* After each test: a sink left running by a failed assertion is stopped by its PID. */
static int setup(void **state)
{
    (void)state;
    return live_pki_setup(work, MX_NAME, &tls);
}

static int teardown(void **state)
{
    (void)state;
    return live_pki_teardown(work, tls);
}

int main(void)
{
    int rc = live_preflight();
    if (rc != 0)
        return rc;
    if (getenv("SMTP_LIVE_DEBUG"))
        eng_log_set_level(ENG_LOG_DEBUG);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(several_messages_one_connection, sink_teardown),
        cmocka_unit_test_teardown(refusals_and_rset, sink_teardown),
        cmocka_unit_test_teardown(dropped_mid_data, sink_teardown),
        cmocka_unit_test_teardown(slow_body_outlives_reply_timeout, sink_teardown),
        cmocka_unit_test_teardown(idle_timeout_quits, sink_teardown),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
