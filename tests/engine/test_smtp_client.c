/*
 * tests/engine/test_smtp_client.c — the SMTP client state machine driven by scripted
 * events: the whole probe dialogue, every refusal path (no STARTTLS, STARTTLS refused,
 * handshake refused), errors, and that nothing but QUIT follows a refusal; then
 * opportunistic mode: plaintext READY only when STARTTLS is not offered, TLS below the
 * floor accepted, and STARTTLS refused or a failed handshake still refused.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine/smtp_client.h"
#include "tests/engine/smtp_script.h"

static enum smtpc_action tls_end(struct smtp_client *c, bool pass, enum tls_reason reason)
{
    struct tls_verdict v;
    tls_verdict_clear(&v);
    v.pass = pass;
    v.reason = reason;
    v.ev.version = pass ? TLS_VERSION_1_3 : TLS_VERSION_1_0;
    struct smtpc_event ev = { .kind = pass ? SMTPC_EV_TLS_DONE : SMTPC_EV_TLS_FAILED,
                              .verdict = &v };
    return smtp_client_step(c, &ev);
}

static void cmd_is(const struct smtp_client *c, const char *expect)
{
    assert_int_equal(c->cmd_len, strlen(expect));
    assert_memory_equal(c->cmd, expect, c->cmd_len);
}

static void start(struct smtp_client *c)
{
    assert_int_equal(smtp_client_init(c, "client.example", "mx[127.0.0.1]:25"), 0);
    assert_int_equal(c->state, SMTPC_CONNECT);
    assert_int_equal(script_event(c, SMTPC_EV_CONNECTED, 0), SMTPC_ACT_RECV);
    assert_int_equal(script_reply(c, "220 mx ESMTP\r\n"), SMTPC_ACT_SEND);
    cmd_is(c, "EHLO client.example\r\n");
}

static void full_dialogue_passes(void **state)
{
    (void)state;
    struct smtp_client c;
    start(&c);
    assert_int_equal(script_reply(&c, "250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n"),
                     SMTPC_ACT_SEND);
    assert_true(c.starttls_offered);
    cmd_is(&c, "STARTTLS\r\n");
    assert_int_equal(script_reply(&c, "220 2.0.0 go ahead\r\n"), SMTPC_ACT_TLS);
    assert_int_equal(c.state, SMTPC_TLS);
    assert_int_equal(tls_end(&c, true, TLS_REASON_NONE), SMTPC_ACT_SEND);
    cmd_is(&c, "EHLO client.example\r\n");
    /* Capabilities learnt before TLS are forgotten (RFC 3207). */
    assert_int_equal(c.caps.ext, 0);
    assert_int_equal(script_reply(&c, "250-mx\r\n250 SIZE 1000\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "QUIT\r\n");
    assert_int_equal(c.outcome, SMTPC_OUTCOME_PASS);
    assert_true(c.verdict.pass);
    assert_int_equal(c.verdict.ev.version, TLS_VERSION_1_3);
    assert_int_equal(c.caps.size_max, 1000);
    assert_int_equal(script_reply(&c, "221 bye\r\n"), SMTPC_ACT_CLOSE);
    assert_int_equal(c.state, SMTPC_DONE);
    assert_string_equal(c.greeting, "220 mx ESMTP");
}

static void no_starttls_refuses(void **state)
{
    (void)state;
    struct smtp_client c;
    start(&c);
    assert_int_equal(script_reply(&c, "250-mx\r\n250 PIPELINING\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "QUIT\r\n");
    assert_int_equal(c.outcome, SMTPC_OUTCOME_REFUSED);
    assert_int_equal(c.verdict.reason, TLS_REASON_NO_STARTTLS);
    assert_false(c.verdict.pass);
    assert_int_equal(script_reply(&c, "221 bye\r\n"), SMTPC_ACT_CLOSE);
}

static void ehlo_rejected_refuses_as_no_starttls(void **state)
{
    (void)state;
    struct smtp_client c;
    start(&c);
    assert_int_equal(script_reply(&c, "502 5.5.1 no EHLO here\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "QUIT\r\n");
    assert_int_equal(c.verdict.reason, TLS_REASON_NO_STARTTLS);
}

static void starttls_454_refuses(void **state)
{
    (void)state;
    struct smtp_client c;
    start(&c);
    script_reply(&c, "250-mx\r\n250 STARTTLS\r\n");
    assert_int_equal(script_reply(&c, "454 4.7.0 TLS not available\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "QUIT\r\n");
    assert_int_equal(c.outcome, SMTPC_OUTCOME_REFUSED);
    assert_int_equal(c.verdict.reason, TLS_REASON_STARTTLS_REFUSED);
    assert_string_equal(c.last_reply, "454 4.7.0 TLS not available");
    assert_int_equal(script_reply(&c, "221 2.0.0 bye\r\n"), SMTPC_ACT_CLOSE);
    assert_string_equal(c.last_reply, "454 4.7.0 TLS not available");
}

static void handshake_refusal_closes_without_plaintext(void **state)
{
    (void)state;
    struct smtp_client c;
    start(&c);
    script_reply(&c, "250-mx\r\n250 STARTTLS\r\n");
    script_reply(&c, "220 go\r\n");
    c.cmd_len = 0;
    assert_int_equal(tls_end(&c, false, TLS_REASON_VERSION_BELOW_FLOOR), SMTPC_ACT_CLOSE);
    assert_int_equal(c.cmd_len, 0); /* not even QUIT in the clear */
    assert_int_equal(c.outcome, SMTPC_OUTCOME_REFUSED);
    assert_int_equal(c.verdict.reason, TLS_REASON_VERSION_BELOW_FLOOR);
    assert_int_equal(c.verdict.ev.version, TLS_VERSION_1_0);
    /* Later events change nothing. */
    assert_int_equal(script_reply(&c, "250 ok\r\n"), SMTPC_ACT_CLOSE);
    assert_int_equal(c.outcome, SMTPC_OUTCOME_REFUSED);
}

static void failure_without_reason_is_handshake_failed(void **state)
{
    (void)state;
    struct smtp_client c;
    start(&c);
    script_reply(&c, "250-mx\r\n250 STARTTLS\r\n");
    script_reply(&c, "220 go\r\n");
    assert_int_equal(tls_end(&c, false, TLS_REASON_NONE), SMTPC_ACT_CLOSE);
    assert_int_equal(c.verdict.reason, TLS_REASON_HANDSHAKE_FAILED);
}

static void greeting_rejection_is_an_error(void **state)
{
    (void)state;
    struct smtp_client c;
    assert_int_equal(smtp_client_init(&c, "client.example", "mx"), 0);
    script_event(&c, SMTPC_EV_CONNECTED, 0);
    assert_int_equal(script_reply(&c, "554 5.7.1 go away\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "QUIT\r\n");
    assert_int_equal(c.outcome, SMTPC_OUTCOME_ERROR);
    assert_int_equal(c.err, SMTP_ERR_UNEXPECTED);
    assert_int_equal(c.err_state, SMTPC_GREETING);
    /* The receiver hanging up on QUIT keeps the first error. */
    assert_int_equal(script_event(&c, SMTPC_EV_ERROR, SMTP_ERR_CLOSED), SMTPC_ACT_CLOSE);
    assert_int_equal(c.err, SMTP_ERR_UNEXPECTED);
}

static void io_errors_record_state(void **state)
{
    (void)state;
    struct smtp_client c;
    assert_int_equal(smtp_client_init(&c, "client.example", "mx"), 0);
    assert_int_equal(script_event(&c, SMTPC_EV_ERROR, -ECONNREFUSED), SMTPC_ACT_CLOSE);
    assert_int_equal(c.outcome, SMTPC_OUTCOME_ERROR);
    assert_int_equal(c.err, -ECONNREFUSED);
    assert_int_equal(c.err_state, SMTPC_CONNECT);

    start(&c);
    assert_int_equal(script_event(&c, SMTPC_EV_ERROR, -ETIMEDOUT), SMTPC_ACT_CLOSE);
    assert_int_equal(c.err_state, SMTPC_EHLO);
    assert_int_equal(c.err, -ETIMEDOUT);
}

static void unexpected_events(void **state)
{
    (void)state;
    struct smtp_client c;
    start(&c);
    /* A TLS event outside the handshake state is a bug in the driver: an error. */
    assert_int_equal(tls_end(&c, true, TLS_REASON_NONE), SMTPC_ACT_CLOSE);
    assert_int_equal(c.outcome, SMTPC_OUTCOME_ERROR);
    assert_int_equal(c.err, SMTP_ERR_UNEXPECTED);
}

static void bad_helo_names(void **state)
{
    (void)state;
    struct smtp_client c;
    assert_int_equal(smtp_client_init(&c, "", "mx"), -EINVAL);
    assert_int_equal(smtp_client_init(&c, "a b", "mx"), -EINVAL);
    assert_int_equal(smtp_client_init(&c, "a\r\nRCPT TO:<x>", "mx"), -EINVAL);
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(smtp_client_init(&c, longname, "mx"), -EINVAL);
    assert_string_equal(smtpc_state_name(SMTPC_EHLO_TLS), "ehlo-tls");
    assert_string_equal(smtpc_outcome_name(SMTPC_OUTCOME_REFUSED), "refuse");
}

/* ---- opportunistic mode ------------------------------------------------------------- */

/* A client in the given mode, opportunistic, up to the reply to its first EHLO. */
static void start_opportunistic(struct smtp_client *c, enum smtpc_mode mode)
{
    assert_int_equal(smtp_client_init_mode(c, mode, "client.example", "mx[127.0.0.1]:25"), 0);
    assert_false(c->opportunistic); /* the floor unless asked */
    smtp_client_set_opportunistic(c, true);
    assert_true(c->opportunistic);
    assert_int_equal(script_event(c, SMTPC_EV_CONNECTED, 0), SMTPC_ACT_RECV);
    assert_int_equal(script_reply(c, "220 mx ESMTP\r\n"), SMTPC_ACT_SEND);
    cmd_is(c, "EHLO client.example\r\n");
}

static void opportunistic_no_starttls_probe_is_plaintext(void **state)
{
    (void)state;
    struct smtp_client c;
    start_opportunistic(&c, SMTPC_MODE_PROBE);
    assert_int_equal(script_reply(&c, "250-mx\r\n250 PIPELINING\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "QUIT\r\n");
    assert_int_equal(c.outcome, SMTPC_OUTCOME_PASS);
    assert_true(c.plaintext);
    assert_false(c.starttls_offered);
    assert_true(c.verdict.pass);
    assert_true(c.verdict.opportunistic);
    assert_int_equal(c.verdict.reason, TLS_REASON_NO_STARTTLS);
    assert_int_equal(c.verdict.ev.problems, 1u << TLS_REASON_NO_STARTTLS);
    assert_int_equal(c.verdict.ev.version, 0);
    assert_false(tls_verdict_meets_floor(&c.verdict));
    assert_int_equal(script_reply(&c, "221 bye\r\n"), SMTPC_ACT_CLOSE);
}

/* Delivery: READY in plaintext, and the message goes (MAIL in the clear: the one case
 * the operator asked for). */
static void opportunistic_no_starttls_delivers_in_plaintext(void **state)
{
    (void)state;
    struct smtp_client c;
    start_opportunistic(&c, SMTPC_MODE_DELIVER);
    assert_int_equal(script_reply(&c, "250-mx\r\n250 SIZE 1000\r\n"), SMTPC_ACT_IDLE);
    assert_int_equal(c.state, SMTPC_READY);
    assert_int_equal(c.outcome, SMTPC_OUTCOME_PASS);
    assert_true(c.plaintext);
    assert_int_equal(c.verdict.reason, TLS_REASON_NO_STARTTLS);
    /* Capabilities of the plaintext EHLO are the ones in force. */
    assert_int_equal(c.caps.size_max, 1000);

    const char *rcpts[] = { "bob@example.com" };
    struct smtp_rcpt_result res[1];
    struct smtp_txn t = { .sender = "alice@example.org",
                          .rcpts = rcpts,
                          .nrcpts = 1,
                          .body = "hi\r\n",
                          .body_len = 4,
                          .results = res };
    enum smtpc_action act;
    assert_int_equal(smtp_client_begin(&c, &t, &act), 0);
    assert_int_equal(act, SMTPC_ACT_SEND);
    cmd_is(&c, "MAIL FROM:<alice@example.org> SIZE=4\r\n");
}

/* STARTTLS offered: it is used, and READY follows a verdict below the floor, which is
 * kept as the evidence. */
static void opportunistic_starttls_offered_uses_tls(void **state)
{
    (void)state;
    struct smtp_client c;
    start_opportunistic(&c, SMTPC_MODE_DELIVER);
    assert_int_equal(script_reply(&c, "250-mx\r\n250 STARTTLS\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "STARTTLS\r\n");
    assert_int_equal(script_reply(&c, "220 go ahead\r\n"), SMTPC_ACT_TLS);
    struct tls_verdict v;
    tls_verdict_clear(&v);
    v.pass = true;
    v.opportunistic = true;
    v.reason = TLS_REASON_VERSION_BELOW_FLOOR;
    v.ev.problems = (1u << TLS_REASON_VERSION_BELOW_FLOOR) | (1u << TLS_REASON_CERT_SELF_SIGNED);
    v.ev.version = TLS_VERSION_1_0;
    struct smtpc_event ev = { .kind = SMTPC_EV_TLS_DONE, .verdict = &v };
    assert_int_equal(smtp_client_step(&c, &ev), SMTPC_ACT_SEND);
    cmd_is(&c, "EHLO client.example\r\n");
    assert_int_equal(script_reply(&c, "250-mx\r\n250 PIPELINING\r\n"), SMTPC_ACT_IDLE);
    assert_int_equal(c.outcome, SMTPC_OUTCOME_PASS);
    assert_false(c.plaintext);
    assert_true(c.verdict.pass);
    assert_true(c.verdict.opportunistic);
    assert_int_equal(c.verdict.reason, TLS_REASON_VERSION_BELOW_FLOOR);
    assert_int_equal(c.verdict.ev.version, TLS_VERSION_1_0);
    assert_int_equal(c.verdict.ev.problems, v.ev.problems);
}

/* STARTTLS offered and then refused: the session may have been tampered with, so the
 * connection ends as in floor mode and nothing of a message goes in plaintext. */
static void opportunistic_starttls_refused_never_plaintext(void **state)
{
    (void)state;
    static const char *const replies[] = { "454 4.7.0 TLS not available\r\n",
                                           "502 5.5.1 unrecognised command\r\n" };
    for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++) {
        struct smtp_client c;
        start_opportunistic(&c, SMTPC_MODE_DELIVER);
        assert_int_equal(script_reply(&c, "250-mx\r\n250 STARTTLS\r\n"), SMTPC_ACT_SEND);
        assert_int_equal(script_reply(&c, replies[i]), SMTPC_ACT_SEND);
        cmd_is(&c, "QUIT\r\n");
        assert_int_equal(c.outcome, SMTPC_OUTCOME_REFUSED);
        assert_int_equal(c.verdict.reason, TLS_REASON_STARTTLS_REFUSED);
        assert_false(c.verdict.pass);
        assert_false(c.plaintext);
        assert_int_equal(c.state, SMTPC_QUIT);

        /* No transaction can start: no MAIL in the clear. */
        const char *rcpts[] = { "bob@example.com" };
        struct smtp_rcpt_result res[1];
        struct smtp_txn t = {
            .sender = "a@example.org", .rcpts = rcpts, .nrcpts = 1, .results = res
        };
        enum smtpc_action act;
        assert_int_equal(smtp_client_begin(&c, &t, &act), -EBUSY);
        cmd_is(&c, "QUIT\r\n");
        assert_int_equal(script_reply(&c, "221 bye\r\n"), SMTPC_ACT_CLOSE);
        assert_int_equal(c.outcome, SMTPC_OUTCOME_REFUSED);
    }
}

/* A failed handshake ends the connection at once, as in floor mode. */
static void opportunistic_handshake_failure_closes(void **state)
{
    (void)state;
    struct smtp_client c;
    start_opportunistic(&c, SMTPC_MODE_DELIVER);
    script_reply(&c, "250-mx\r\n250 STARTTLS\r\n");
    script_reply(&c, "220 go\r\n");
    c.cmd_len = 0;
    assert_int_equal(tls_end(&c, false, TLS_REASON_HANDSHAKE_FAILED), SMTPC_ACT_CLOSE);
    assert_int_equal(c.cmd_len, 0);
    assert_int_equal(c.outcome, SMTPC_OUTCOME_REFUSED);
    assert_int_equal(c.verdict.reason, TLS_REASON_HANDSHAKE_FAILED);
    assert_false(c.plaintext);
    assert_int_equal(c.state, SMTPC_DONE);
}

/* Floor mode refuses a verdict below the floor even if it says pass (an opportunistic
 * context handed to a floor-mode client). */
static void floor_mode_refuses_opportunistic_pass(void **state)
{
    (void)state;
    struct smtp_client c;
    start(&c);
    script_reply(&c, "250-mx\r\n250 STARTTLS\r\n");
    script_reply(&c, "220 go\r\n");
    c.cmd_len = 0;
    struct tls_verdict v;
    tls_verdict_clear(&v);
    v.pass = true;
    v.opportunistic = true;
    v.reason = TLS_REASON_CERT_EXPIRED;
    v.ev.problems = 1u << TLS_REASON_CERT_EXPIRED;
    struct smtpc_event ev = { .kind = SMTPC_EV_TLS_DONE, .verdict = &v };
    assert_int_equal(smtp_client_step(&c, &ev), SMTPC_ACT_CLOSE);
    assert_int_equal(c.cmd_len, 0);
    assert_int_equal(c.outcome, SMTPC_OUTCOME_REFUSED);
    assert_false(c.verdict.pass);
    assert_int_equal(c.verdict.reason, TLS_REASON_CERT_EXPIRED);

    /* An opportunistic context's verdict that met the floor is fine in floor mode. */
    start(&c);
    script_reply(&c, "250-mx\r\n250 STARTTLS\r\n");
    script_reply(&c, "220 go\r\n");
    tls_verdict_clear(&v);
    v.pass = true;
    v.opportunistic = true;
    assert_int_equal(smtp_client_step(&c, &ev), SMTPC_ACT_SEND);
    cmd_is(&c, "EHLO client.example\r\n");
}

/* The mode is fixed once the dialogue has started. */
static void opportunistic_only_before_first_event(void **state)
{
    (void)state;
    struct smtp_client c;
    start(&c);
    smtp_client_set_opportunistic(&c, true);
    assert_false(c.opportunistic);
    assert_int_equal(script_reply(&c, "250-mx\r\n250 PIPELINING\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "QUIT\r\n");
    assert_int_equal(c.outcome, SMTPC_OUTCOME_REFUSED);
    assert_false(c.plaintext);

    /* And can be turned off again before it starts. */
    assert_int_equal(smtp_client_init(&c, "client.example", "mx"), 0);
    smtp_client_set_opportunistic(&c, true);
    smtp_client_set_opportunistic(&c, false);
    script_event(&c, SMTPC_EV_CONNECTED, 0);
    script_reply(&c, "220 mx\r\n");
    script_reply(&c, "250 mx\r\n");
    assert_int_equal(c.outcome, SMTPC_OUTCOME_REFUSED);
    assert_int_equal(c.verdict.reason, TLS_REASON_NO_STARTTLS);
}

/* An EHLO the receiver rejects: no HELO fallback, even opportunistic. */
static void opportunistic_ehlo_rejected_refuses(void **state)
{
    (void)state;
    struct smtp_client c;
    start_opportunistic(&c, SMTPC_MODE_DELIVER);
    assert_int_equal(script_reply(&c, "502 5.5.1 no EHLO here\r\n"), SMTPC_ACT_SEND);
    cmd_is(&c, "QUIT\r\n");
    assert_int_equal(c.outcome, SMTPC_OUTCOME_REFUSED);
    assert_int_equal(c.verdict.reason, TLS_REASON_NO_STARTTLS);
    assert_false(c.plaintext);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_dialogue_passes),
        cmocka_unit_test(no_starttls_refuses),
        cmocka_unit_test(ehlo_rejected_refuses_as_no_starttls),
        cmocka_unit_test(starttls_454_refuses),
        cmocka_unit_test(handshake_refusal_closes_without_plaintext),
        cmocka_unit_test(failure_without_reason_is_handshake_failed),
        cmocka_unit_test(greeting_rejection_is_an_error),
        cmocka_unit_test(io_errors_record_state),
        cmocka_unit_test(unexpected_events),
        cmocka_unit_test(bad_helo_names),
        cmocka_unit_test(opportunistic_no_starttls_probe_is_plaintext),
        cmocka_unit_test(opportunistic_no_starttls_delivers_in_plaintext),
        cmocka_unit_test(opportunistic_starttls_offered_uses_tls),
        cmocka_unit_test(opportunistic_starttls_refused_never_plaintext),
        cmocka_unit_test(opportunistic_handshake_failure_closes),
        cmocka_unit_test(floor_mode_refuses_opportunistic_pass),
        cmocka_unit_test(opportunistic_only_before_first_event),
        cmocka_unit_test(opportunistic_ehlo_rejected_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
