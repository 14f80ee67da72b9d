/*
 * tests/engine/test_smtp_client.c — the SMTP client state machine driven by scripted
 * events: the whole probe dialogue, every refusal path (no STARTTLS, STARTTLS refused,
 * handshake refused), errors, and that nothing but QUIT follows a refusal.
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
