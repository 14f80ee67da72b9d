/*
 * tests/engine/test_smtp_txn.c — the delivery half of the SMTP client state machine,
 * driven by scripted replies: pipelined and one-at-a-time transactions, partial and
 * total recipient refusals, refusals of MAIL and DATA, 421 at every step, a connection
 * lost mid-body, the SMTPUTF8 / 8BITMIME / SIZE rules decided before MAIL, the next
 * message on the same connection (RSET only after a failed transaction), recipient
 * lists spanning several command groups, and the exact command bytes throughout.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engine/smtp_client.h"
#include "tests/engine/smtp_script.h"

#define CAPS_ALL                                                               \
    "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n" \
    "250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n"
#define CAPS_NO_PIPELINING "250-mx.example\r\n250-SIZE\r\n250 8BITMIME\r\n"
#define CAPS_PLAIN         "250-mx.example\r\n250 PIPELINING\r\n"

static void cmd_is(const struct smtp_client *c, const char *expect)
{
    assert_int_equal(c->cmd_len, strlen(expect));
    assert_memory_equal(c->cmd, expect, c->cmd_len);
}

/* A delivery client through STARTTLS to READY with the given EHLO-over-TLS reply. */
static void to_ready(struct smtp_client *c, const char *ehlo_tls)
{
    assert_int_equal(smtp_client_init_mode(c, SMTPC_MODE_DELIVER, "client.example", "mx"), 0);
    assert_int_equal(script_event(c, SMTPC_EV_CONNECTED, 0), SMTPC_ACT_RECV);
    assert_int_equal(script_reply(c, "220 mx ESMTP\r\n"), SMTPC_ACT_SEND);
    assert_int_equal(script_reply(c, "250-mx\r\n250 STARTTLS\r\n"), SMTPC_ACT_SEND);
    assert_int_equal(script_reply(c, "220 go ahead\r\n"), SMTPC_ACT_TLS);
    struct tls_verdict v;
    tls_verdict_clear(&v);
    v.pass = true;
    struct smtpc_event ev = { .kind = SMTPC_EV_TLS_DONE, .verdict = &v };
    assert_int_equal(smtp_client_step(c, &ev), SMTPC_ACT_SEND);
    cmd_is(c, "EHLO client.example\r\n");
    assert_int_equal(script_reply(c, ehlo_tls), SMTPC_ACT_IDLE);
    assert_int_equal(c->state, SMTPC_READY);
    assert_int_equal(c->outcome, SMTPC_OUTCOME_PASS);
}

struct msg {
    const char *rcpts[8];
    struct smtp_rcpt_result results[8];
    struct smtp_txn txn;
};

static void msg_init(struct msg *m, const char *sender, unsigned n, ...)
{
    memset(m, 0, sizeof(*m));
    va_list ap;
    va_start(ap, n);
    for (unsigned i = 0; i < n; i++)
        m->rcpts[i] = va_arg(ap, const char *);
    va_end(ap);
    m->txn.sender = sender;
    m->txn.rcpts = m->rcpts;
    m->txn.nrcpts = n;
    m->txn.body = "Subject: hi\r\n\r\nhello\r\n";
    m->txn.body_len = strlen(m->txn.body);
    m->txn.size = 1234;
    m->txn.results = m->results;
}

static enum smtpc_action begin(struct smtp_client *c, struct msg *m)
{
    enum smtpc_action act = SMTPC_ACT_CLOSE;
    assert_int_equal(smtp_client_begin(c, &m->txn, &act), 0);
    return act;
}

static void result_is(const struct smtp_rcpt_result *r, enum smtp_rcpt_status st, int code,
                      const char *enhanced, enum smtpc_state at)
{
    assert_int_equal(r->status, st);
    assert_int_equal(r->code, code);
    assert_string_equal(r->enhanced, enhanced);
    assert_int_equal(r->at, at);
}

static void ended(struct smtp_client *c, const struct msg *m)
{
    assert_ptr_equal(smtp_client_take_ended(c), &m->txn);
    assert_null(smtp_client_take_ended(c));
    assert_null(c->txn);
}

/* ---- pipelining --------------------------------------------------------------------- */

static void pipelined_two_of_three(void **state)
{
    (void)state;
    struct smtp_client c;
    struct msg m;
    to_ready(&c, CAPS_ALL);
    msg_init(&m, "sender@example.org", 3, "a@example.com", "b@example.com", "c@example.com");
    assert_int_equal(begin(&c, &m), SMTPC_ACT_SEND);
    cmd_is(&c, "MAIL FROM:<sender@example.org> SIZE=1234\r\n"
               "RCPT TO:<a@example.com>\r\n"
               "RCPT TO:<b@example.com>\r\n"
               "RCPT TO:<c@example.com>\r\n"
               "DATA\r\n");
    assert_true(c.pipelining);
    assert_int_equal(c.state, SMTPC_MAIL);
    assert_int_equal(script_reply(&c, "250 2.1.0 Ok\r\n"), SMTPC_ACT_RECV);
    assert_int_equal(script_reply(&c, "250 2.1.5 Ok\r\n"), SMTPC_ACT_RECV);
    assert_int_equal(script_reply(&c, "550 5.1.1 <b@example.com>: User unknown\r\n"),
                     SMTPC_ACT_RECV);
    assert_int_equal(script_reply(&c, "250 2.1.5 Ok\r\n"), SMTPC_ACT_RECV);
    assert_int_equal(c.state, SMTPC_DATA);
    assert_null(smtp_client_take_ended(&c));
    assert_int_equal(script_reply(&c, "354 End data with <CR><LF>.<CR><LF>\r\n"), SMTPC_ACT_BODY);
    assert_int_equal(c.state, SMTPC_BODY);
    assert_int_equal(script_event(&c, SMTPC_EV_BODY_SENT, 0), SMTPC_ACT_RECV);
    assert_int_equal(c.state, SMTPC_DOT);
    assert_int_equal(script_reply(&c, "250 2.0.0 Ok: queued as 42\r\n"), SMTPC_ACT_IDLE);
    assert_int_equal(c.state, SMTPC_READY);
    ended(&c, &m);
    result_is(&m.results[0], SMTP_RCPT_DELIVERED, 250, "2.0.0", SMTPC_DOT);
    result_is(&m.results[1], SMTP_RCPT_BOUNCED, 550, "5.1.1", SMTPC_RCPT);
    result_is(&m.results[2], SMTP_RCPT_DELIVERED, 250, "2.0.0", SMTPC_DOT);
    assert_string_equal(m.results[0].text, "250 2.0.0 Ok: queued as 42");
    assert_string_equal(m.results[1].text, "550 5.1.1 <b@example.com>: User unknown");
    assert_int_equal(m.results[1].source, SMTP_RESULT_REPLY);
    assert_true(m.results[0].accepted);
    assert_false(m.results[1].accepted);
    assert_int_equal(c.err, 0);
}

static void all_rejected_no_body(void **state)
{
    (void)state;
    struct smtp_client c;
    struct msg m;
    to_ready(&c, CAPS_ALL);
    msg_init(&m, "s@example.org", 2, "a@example.com", "b@example.com");
    assert_int_equal(begin(&c, &m), SMTPC_ACT_SEND);
    assert_int_equal(script_reply(&c, "250 2.1.0 Ok\r\n"), SMTPC_ACT_RECV);
    assert_int_equal(script_reply(&c, "550 5.1.1 no such user\r\n"), SMTPC_ACT_RECV);
    assert_int_equal(script_reply(&c, "553 5.7.1 relay denied\r\n"), SMTPC_ACT_RECV);
    /* The DATA reply still has to be read (RFC 2920 3.1); a refusal ends it: RSET. */
    assert_int_equal(script_reply(&c, "554 5.5.1 Error: no valid recipients\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "RSET\r\n");
    assert_int_equal(c.state, SMTPC_RSET);
    ended(&c, &m);
    result_is(&m.results[0], SMTP_RCPT_BOUNCED, 550, "5.1.1", SMTPC_RCPT);
    result_is(&m.results[1], SMTP_RCPT_BOUNCED, 553, "5.7.1", SMTPC_RCPT);
    assert_int_equal(script_reply(&c, "250 2.0.0 Ok\r\n"), SMTPC_ACT_IDLE);

    /* A receiver that answers DATA with 354 anyway gets a lone "." — never the body. */
    msg_init(&m, "s@example.org", 1, "a@example.com");
    assert_int_equal(begin(&c, &m), SMTPC_ACT_SEND);
    assert_int_equal(script_reply(&c, "250 2.1.0 Ok\r\n"), SMTPC_ACT_RECV);
    assert_int_equal(script_reply(&c, "450 4.2.1 mailbox busy\r\n"), SMTPC_ACT_RECV);
    assert_int_equal(script_reply(&c, "354 go ahead\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, ".\r\n");
    assert_int_equal(c.state, SMTPC_DOT);
    assert_int_equal(script_reply(&c, "554 5.5.1 no valid recipients\r\n"), SMTPC_ACT_IDLE);
    ended(&c, &m);
    result_is(&m.results[0], SMTP_RCPT_DEFERRED, 450, "4.2.1", SMTPC_RCPT);
}

static void mail_refused(void **state)
{
    (void)state;
    struct smtp_client c;
    struct msg m;
    to_ready(&c, CAPS_ALL);
    msg_init(&m, "s@example.org", 2, "a@example.com", "b@example.com");
    assert_int_equal(begin(&c, &m), SMTPC_ACT_SEND);
    assert_int_equal(script_reply(&c, "451 4.3.0 try again later\r\n"), SMTPC_ACT_RECV);
    /* The replies to the pipelined RCPTs and DATA say nothing about the recipients. */
    assert_int_equal(script_reply(&c, "503 5.5.1 need MAIL\r\n"), SMTPC_ACT_RECV);
    assert_int_equal(script_reply(&c, "503 5.5.1 need MAIL\r\n"), SMTPC_ACT_RECV);
    assert_int_equal(script_reply(&c, "503 5.5.1 need MAIL\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "RSET\r\n");
    ended(&c, &m);
    for (int i = 0; i < 2; i++) {
        result_is(&m.results[i], SMTP_RCPT_DEFERRED, 451, "4.3.0", SMTPC_MAIL);
        assert_string_equal(m.results[i].text, "451 4.3.0 try again later");
    }
    assert_int_equal(script_reply(&c, "250 2.0.0 Ok\r\n"), SMTPC_ACT_IDLE);

    /* Without pipelining a refused MAIL is followed by RSET at once; 5xx bounces. */
    to_ready(&c, CAPS_NO_PIPELINING);
    msg_init(&m, "s@example.org", 2, "a@example.com", "b@example.com");
    assert_int_equal(begin(&c, &m), SMTPC_ACT_SEND);
    cmd_is(&c, "MAIL FROM:<s@example.org> SIZE=1234\r\n");
    assert_int_equal(script_reply(&c, "550 5.7.1 sender rejected\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "RSET\r\n");
    ended(&c, &m);
    result_is(&m.results[0], SMTP_RCPT_BOUNCED, 550, "5.7.1", SMTPC_MAIL);
    result_is(&m.results[1], SMTP_RCPT_BOUNCED, 550, "5.7.1", SMTPC_MAIL);
    /* A receiver that cannot even reset gets QUIT. */
    assert_int_equal(script_reply(&c, "500 5.5.2 what?\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "QUIT\r\n");
    assert_int_equal(c.err, SMTP_ERR_UNEXPECTED);
}

/* The replies of a good transaction to 2 recipients, in order; 421 replaces reply k. */
static void service_closing_at(unsigned k)
{
    static const char *const script[] = {
        "250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n", "250 2.1.5 Ok\r\n",
        "354 go\r\n",       "-body-",           "250 2.0.0 Ok\r\n",
    };
    struct smtp_client c;
    struct msg m;
    to_ready(&c, CAPS_ALL);
    msg_init(&m, "s@example.org", 2, "a@example.com", "b@example.com");
    assert_int_equal(begin(&c, &m), SMTPC_ACT_SEND);
    for (unsigned i = 0; i < k; i++) {
        if (strcmp(script[i], "-body-") == 0)
            assert_int_equal(script_event(&c, SMTPC_EV_BODY_SENT, 0), SMTPC_ACT_RECV);
        else
            assert_int_not_equal(script_reply(&c, script[i]), SMTPC_ACT_CLOSE);
    }
    c.cmd_len = 0;
    assert_int_equal(script_reply(&c, "421 4.3.2 shutting down\r\n"), SMTPC_ACT_CLOSE);
    assert_int_equal(c.cmd_len, 0); /* no QUIT to a receiver that is leaving */
    assert_int_equal(c.state, SMTPC_DONE);
    assert_int_equal(c.err, SMTP_ERR_CLOSED);
    assert_int_equal(c.outcome, SMTPC_OUTCOME_PASS); /* the floor verdict stands */
    ended(&c, &m);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(m.results[i].status, SMTP_RCPT_DEFERRED);
        assert_int_equal(m.results[i].code, 421);
        assert_string_equal(m.results[i].enhanced, "4.3.2");
    }
    /* Nothing more happens. */
    assert_int_equal(script_reply(&c, "250 ok\r\n"), SMTPC_ACT_CLOSE);
}

static void service_closing_anywhere(void **state)
{
    (void)state;
    for (unsigned k = 0; k <= 5; k++)
        if (k != 4) /* during the body: an early reply, below */
            service_closing_at(k);

    /* 421 as the reply to RSET after a failed transaction. */
    struct smtp_client c;
    struct msg m;
    to_ready(&c, CAPS_ALL);
    msg_init(&m, "s@example.org", 1, "a@example.com");
    begin(&c, &m);
    script_reply(&c, "250 Ok\r\n");
    script_reply(&c, "550 5.1.1 no\r\n");
    assert_int_equal(script_reply(&c, "554 no recipients\r\n"), SMTPC_ACT_SEND);
    ended(&c, &m);
    assert_int_equal(script_reply(&c, "421 4.4.2 bye\r\n"), SMTPC_ACT_CLOSE);
    assert_int_equal(m.results[0].status, SMTP_RCPT_BOUNCED); /* final stays final */
    assert_int_equal(c.err, SMTP_ERR_CLOSED);
}

/* A reply while the body is going out: not a delivery, whatever it says. */
static void early_reply_during_body(void **state)
{
    (void)state;
    static const char *const replies[] = { "250 2.0.0 Ok\r\n", "421 4.3.2 bye\r\n",
                                           "554 5.6.0 bad content\r\n" };
    static const enum smtp_rcpt_status want[] = { SMTP_RCPT_DEFERRED, SMTP_RCPT_DEFERRED,
                                                  SMTP_RCPT_BOUNCED };
    for (int k = 0; k < 3; k++) {
        struct smtp_client c;
        struct msg m;
        to_ready(&c, CAPS_ALL);
        msg_init(&m, "s@example.org", 1, "a@example.com");
        begin(&c, &m);
        script_reply(&c, "250 Ok\r\n");
        script_reply(&c, "250 Ok\r\n");
        assert_int_equal(script_reply(&c, "354 go\r\n"), SMTPC_ACT_BODY);
        assert_int_equal(script_reply(&c, replies[k]), SMTPC_ACT_CLOSE);
        ended(&c, &m);
        assert_int_equal(m.results[0].status, want[k]);
        assert_int_equal(m.results[0].at, SMTPC_BODY);
    }
}

/* ---- without pipelining ---------------------------------------------------------------- */

static void one_command_at_a_time(void **state)
{
    (void)state;
    struct smtp_client c;
    struct msg m;
    to_ready(&c, CAPS_NO_PIPELINING);
    msg_init(&m, "s@example.org", 3, "a@example.com", "b@example.com", "c@example.com");
    m.txn.size = 0; /* SIZE= then comes from the body */
    assert_int_equal(begin(&c, &m), SMTPC_ACT_SEND);
    assert_false(c.pipelining);
    cmd_is(&c, "MAIL FROM:<s@example.org> SIZE=22\r\n");
    assert_int_equal(script_reply(&c, "250 2.1.0 Ok\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "RCPT TO:<a@example.com>\r\n");
    assert_int_equal(script_reply(&c, "250 2.1.5 Ok\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "RCPT TO:<b@example.com>\r\n");
    assert_int_equal(script_reply(&c, "452 4.2.2 mailbox full\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "RCPT TO:<c@example.com>\r\n");
    assert_int_equal(script_reply(&c, "250 2.1.5 Ok\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "DATA\r\n");
    assert_int_equal(script_reply(&c, "354 go\r\n"), SMTPC_ACT_BODY);
    assert_int_equal(script_event(&c, SMTPC_EV_BODY_SENT, 0), SMTPC_ACT_RECV);
    assert_int_equal(script_reply(&c, "451 4.3.0 queue file write error\r\n"), SMTPC_ACT_IDLE);
    ended(&c, &m);
    result_is(&m.results[0], SMTP_RCPT_DEFERRED, 451, "4.3.0", SMTPC_DOT);
    result_is(&m.results[1], SMTP_RCPT_DEFERRED, 452, "4.2.2", SMTPC_RCPT);
    result_is(&m.results[2], SMTP_RCPT_DEFERRED, 451, "4.3.0", SMTPC_DOT);

    /* No accepted recipient: no DATA at all, RSET. */
    msg_init(&m, "s@example.org", 1, "a@example.com");
    begin(&c, &m);
    assert_int_equal(script_reply(&c, "250 2.1.0 Ok\r\n"), SMTPC_ACT_SEND);
    assert_int_equal(script_reply(&c, "550 5.1.1 unknown\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "RSET\r\n");
    ended(&c, &m);

    /* DATA refused with recipients accepted: they get DATA's verdict. */
    assert_int_equal(script_reply(&c, "250 2.0.0 Ok\r\n"), SMTPC_ACT_IDLE);
    msg_init(&m, "s@example.org", 1, "a@example.com");
    begin(&c, &m);
    script_reply(&c, "250 2.1.0 Ok\r\n");
    assert_int_equal(script_reply(&c, "250 2.1.5 Ok\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "DATA\r\n");
    assert_int_equal(script_reply(&c, "554 5.7.0 not now, not ever\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "RSET\r\n");
    ended(&c, &m);
    result_is(&m.results[0], SMTP_RCPT_BOUNCED, 554, "5.7.0", SMTPC_DATA);
}

/* ---- decided before MAIL --------------------------------------------------------------- */

static void refused_before_mail(struct smtp_client *c, struct msg *m, int code,
                                const char *enhanced)
{
    c->cmd_len = 0;
    assert_int_equal(begin(c, m), SMTPC_ACT_IDLE);
    assert_int_equal(c->cmd_len, 0); /* nothing to send */
    assert_int_equal(c->state, SMTPC_READY);
    ended(c, m);
    for (unsigned i = 0; i < m->txn.nrcpts; i++) {
        result_is(&m->results[i], SMTP_RCPT_BOUNCED, code, enhanced, SMTPC_READY);
        assert_int_equal(m->results[i].source, SMTP_RESULT_LOCAL);
    }
}

static void extensions_needed(void **state)
{
    (void)state;
    struct smtp_client c;
    struct msg m;
    to_ready(&c, CAPS_PLAIN);
    msg_init(&m, "s@example.org", 2, "a@example.com", "b@example.com");
    m.txn.needs_smtputf8 = true;
    refused_before_mail(&c, &m, 553, "5.6.7");
    /* A non-ASCII address needs SMTPUTF8 even if the flag was forgotten. */
    msg_init(&m, "s@example.org", 1, "j\xc3\xb6rg@example.com");
    refused_before_mail(&c, &m, 553, "5.6.7");
    msg_init(&m, "s@example.org", 1, "a@example.com");
    m.txn.needs_8bit = true;
    refused_before_mail(&c, &m, 554, "5.6.3");

    /* Offered: the MAIL parameters say so. */
    to_ready(&c, CAPS_ALL);
    msg_init(&m, "s\xc3\xa9@example.org", 1, "a@example.com");
    m.txn.needs_8bit = true;
    assert_int_equal(begin(&c, &m), SMTPC_ACT_SEND);
    cmd_is(&c, "MAIL FROM:<s\xc3\xa9@example.org> SIZE=1234 BODY=8BITMIME SMTPUTF8\r\n"
               "RCPT TO:<a@example.com>\r\nDATA\r\n");

    /* Over the announced SIZE: 5.3.4, nothing sent. */
    to_ready(&c, CAPS_ALL);
    msg_init(&m, "s@example.org", 1, "a@example.com");
    m.txn.size = 1000001;
    refused_before_mail(&c, &m, 552, "5.3.4");
    /* Still ready for the next one. */
    msg_init(&m, "", 1, "a@example.com");
    assert_int_equal(begin(&c, &m), SMTPC_ACT_SEND);
    cmd_is(&c, "MAIL FROM:<> SIZE=1234\r\nRCPT TO:<a@example.com>\r\nDATA\r\n");
}

/* ---- the next message ------------------------------------------------------------------ */

static void next_message_on_the_connection(void **state)
{
    (void)state;
    struct smtp_client c;
    struct msg m1, m2, m3;
    to_ready(&c, CAPS_ALL);
    msg_init(&m1, "s@example.org", 1, "a@example.com");
    begin(&c, &m1);
    script_reply(&c, "250 Ok\r\n");
    script_reply(&c, "250 Ok\r\n");
    script_reply(&c, "354 go\r\n");
    script_event(&c, SMTPC_EV_BODY_SENT, 0);
    assert_int_equal(script_reply(&c, "250 2.0.0 queued\r\n"), SMTPC_ACT_IDLE);
    ended(&c, &m1);
    assert_int_equal(m1.results[0].status, SMTP_RCPT_DELIVERED);

    /* After the reply to the end of data: MAIL at once, no RSET. */
    msg_init(&m2, "", 2, "b@example.com", "c@example.com");
    m2.txn.size = 99;
    assert_int_equal(begin(&c, &m2), SMTPC_ACT_SEND);
    cmd_is(&c, "MAIL FROM:<> SIZE=99\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\n"
               "DATA\r\n");
    script_reply(&c, "250 Ok\r\n");
    script_reply(&c, "550 5.1.1 no\r\n");
    script_reply(&c, "550 5.1.1 no\r\n");
    /* After a transaction that failed on the way: RSET first, then READY. */
    assert_int_equal(script_reply(&c, "554 5.5.1 no valid recipients\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "RSET\r\n");
    ended(&c, &m2);
    /* Not ready until the RSET is answered. */
    assert_int_equal(smtp_client_begin(&c, &m2.txn, &(enum smtpc_action){ 0 }), -EBUSY);
    assert_int_equal(script_reply(&c, "250 2.0.0 Ok\r\n"), SMTPC_ACT_IDLE);

    msg_init(&m3, "s@example.org", 1, "d@example.com");
    assert_int_equal(begin(&c, &m3), SMTPC_ACT_SEND);
    cmd_is(&c, "MAIL FROM:<s@example.org> SIZE=1234\r\nRCPT TO:<d@example.com>\r\nDATA\r\n");
    assert_int_equal(c.txns, 3);

    /* And QUIT when the owner is done (from READY only). */
    to_ready(&c, CAPS_ALL);
    enum smtpc_action act;
    assert_int_equal(smtp_client_quit(&c, &act), 0);
    assert_int_equal(act, SMTPC_ACT_SEND);
    cmd_is(&c, "QUIT\r\n");
    assert_int_equal(smtp_client_quit(&c, &act), -EBUSY);
    assert_int_equal(script_reply(&c, "221 2.0.0 Bye\r\n"), SMTPC_ACT_CLOSE);
    assert_int_equal(c.err, 0);
}

/* ---- connection failures ------------------------------------------------------------- */

static void lost_connection_defers(void **state)
{
    (void)state;
    static const enum smtpc_state where[] = { SMTPC_MAIL, SMTPC_RCPT, SMTPC_BODY, SMTPC_DOT };
    for (int k = 0; k < 4; k++) {
        struct smtp_client c;
        struct msg m;
        to_ready(&c, CAPS_ALL);
        msg_init(&m, "s@example.org", 2, "a@example.com", "reject@example.com");
        begin(&c, &m);
        if (k >= 1)
            script_reply(&c, "250 Ok\r\n");
        if (k >= 2) {
            script_reply(&c, "250 Ok\r\n");
            script_reply(&c, "550 5.1.1 no\r\n");
            assert_int_equal(script_reply(&c, "354 go\r\n"), SMTPC_ACT_BODY);
        }
        if (k >= 3)
            script_event(&c, SMTPC_EV_BODY_SENT, 0);
        assert_int_equal(c.state, where[k]);
        int err = k == 3 ? -ETIMEDOUT : SMTP_ERR_CLOSED;
        assert_int_equal(script_event(&c, SMTPC_EV_ERROR, err), SMTPC_ACT_CLOSE);
        ended(&c, &m);
        result_is(&m.results[0], SMTP_RCPT_DEFERRED, 451, "4.4.2", where[k]);
        assert_int_equal(m.results[0].source, SMTP_RESULT_NETWORK);
        if (k >= 2)
            assert_int_equal(m.results[1].status, SMTP_RCPT_BOUNCED);
        else
            assert_int_equal(m.results[1].status, SMTP_RCPT_DEFERRED);
        assert_int_equal(c.err, err);
        assert_int_equal(c.err_state, where[k]);
        assert_int_equal(c.state, SMTPC_DONE);
    }
}

/* ---- many recipients: several command groups ---------------------------------------- */

static void recipients_span_groups(void **state)
{
    (void)state;
    enum { N = 100 };
    static char addrs[N][80];
    static const char *rcpts[N];
    static struct smtp_rcpt_result results[N];
    for (int i = 0; i < N; i++) {
        snprintf(addrs[i], sizeof(addrs[i]), "recipient-number-%03d-with-a-long-name@example.com",
                 i);
        rcpts[i] = addrs[i];
    }
    struct smtp_txn t = { .sender = "s@example.org",
                          .rcpts = rcpts,
                          .nrcpts = N,
                          .body = "x",
                          .body_len = 1,
                          .results = results };
    struct smtp_client c;
    to_ready(&c, CAPS_ALL);
    enum smtpc_action act;
    assert_int_equal(smtp_client_begin(&c, &t, &act), 0);
    assert_int_equal(act, SMTPC_ACT_SEND);
    unsigned next = 0, groups = 0;
    bool mail = true, data = false;
    while (!data) {
        groups++;
        /* Parse this group's commands and answer each in order. */
        const char *p = c.cmd, *end = c.cmd + c.cmd_len;
        assert_true(c.cmd_len <= sizeof(c.cmd));
        unsigned ncmd = 0;
        char expect[128];
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            assert_non_null(nl);
            size_t n = (size_t)(nl + 1 - p);
            if (mail) {
                assert_memory_equal(p, "MAIL FROM:<s@example.org>", 25);
                mail = false;
            } else if (n == 6 && memcmp(p, "DATA\r\n", 6) == 0) {
                data = true;
            } else {
                snprintf(expect, sizeof(expect), "RCPT TO:<%s>\r\n", addrs[next++]);
                assert_int_equal(n, strlen(expect));
                assert_memory_equal(p, expect, n);
            }
            ncmd++;
            p = nl + 1;
        }
        for (unsigned i = 0; i < ncmd; i++) {
            const char *r = data && i == ncmd - 1 ? "354 go\r\n" : "250 Ok\r\n";
            act = script_reply(&c, r);
            if (i + 1 < ncmd)
                assert_int_equal(act, SMTPC_ACT_RECV);
        }
        if (!data)
            assert_int_equal(act, SMTPC_ACT_SEND);
    }
    assert_int_equal(act, SMTPC_ACT_BODY);
    assert_int_equal(next, N);
    assert_true(groups >= 2);
    script_event(&c, SMTPC_EV_BODY_SENT, 0);
    assert_int_equal(script_reply(&c, "250 2.0.0 Ok\r\n"), SMTPC_ACT_IDLE);
    for (int i = 0; i < N; i++)
        assert_int_equal(results[i].status, SMTP_RCPT_DELIVERED);
}

/* ---- misuse ------------------------------------------------------------------------------- */

static void bad_transactions(void **state)
{
    (void)state;
    struct smtp_client c;
    struct msg m;
    enum smtpc_action act;
    /* Not in delivery mode, or not READY. */
    assert_int_equal(smtp_client_init(&c, "client.example", "mx"), 0);
    msg_init(&m, "s@example.org", 1, "a@example.com");
    assert_int_equal(smtp_client_begin(&c, &m.txn, &act), -EBUSY);

    to_ready(&c, CAPS_ALL);
    msg_init(&m, "s@example.org", 1, "a@example.com>\r\nRCPT TO:<evil@example.net");
    assert_int_equal(smtp_client_begin(&c, &m.txn, &act), -EINVAL);
    msg_init(&m, "s@example.org\r\nDATA", 1, "a@example.com");
    assert_int_equal(smtp_client_begin(&c, &m.txn, &act), -EINVAL);
    msg_init(&m, "s@example.org", 1, "");
    assert_int_equal(smtp_client_begin(&c, &m.txn, &act), -EINVAL);
    msg_init(&m, "s@example.org", 0);
    assert_int_equal(smtp_client_begin(&c, &m.txn, &act), -EINVAL);
    char longaddr[400];
    memset(longaddr, 'a', sizeof(longaddr) - 1);
    longaddr[sizeof(longaddr) - 1] = '\0';
    msg_init(&m, "s@example.org", 1, longaddr);
    assert_int_equal(smtp_client_begin(&c, &m.txn, &act), -EINVAL);
    msg_init(&m, "s@example.org", 1, "a@example.com");
    m.txn.results = NULL;
    assert_int_equal(smtp_client_begin(&c, &m.txn, &act), -EINVAL);
    assert_int_equal(c.state, SMTPC_READY); /* nothing changed */
    assert_int_equal(c.txns, 0);

    /* The body-sent event outside BODY is a driver bug: an error. */
    assert_int_equal(script_event(&c, SMTPC_EV_BODY_SENT, 0), SMTPC_ACT_CLOSE);
    assert_int_equal(c.err, SMTP_ERR_UNEXPECTED);
    assert_string_equal(smtpc_state_name(SMTPC_DOT), "end-of-data");
    assert_string_equal(smtp_rcpt_status_name(SMTP_RCPT_BOUNCED), "bounced");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pipelined_two_of_three),
        cmocka_unit_test(all_rejected_no_body),
        cmocka_unit_test(mail_refused),
        cmocka_unit_test(service_closing_anywhere),
        cmocka_unit_test(early_reply_during_body),
        cmocka_unit_test(one_command_at_a_time),
        cmocka_unit_test(extensions_needed),
        cmocka_unit_test(next_message_on_the_connection),
        cmocka_unit_test(lost_connection_defers),
        cmocka_unit_test(recipients_span_groups),
        cmocka_unit_test(bad_transactions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
