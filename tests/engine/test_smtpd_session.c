/*
 * tests/engine/test_smtpd_session.c — the submission server's state machine, driven
 * with strings (no sockets): the greeting and its 421 refusals, EHLO before and after
 * TLS, pipelined commands answered in order, STARTTLS discarding what was pipelined
 * behind it, AUTH PLAIN / LOGIN only over TLS against crypt(3) hashes, relay refusal,
 * size, recipient and line limits, bare LF in commands and content (never an end of
 * data), dot-unstuffing, the Received header, submit results, timeouts, the
 * credentials file and relay networks, a reload of the shared settings.
 */
#include <arpa/inet.h>
#include <crypt.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/smtpd_int.h"
#include "queue/queue.h"
#include "tls/tls.h"

static char creds_path[64];
static struct eng_smtpd_credentials *creds;

struct fx {
    struct smtpd_shared sh;
    struct smtpd_sess s;
};

static void fx_start(struct fx *f, const char *ip, const char *relay, unsigned max_rcpts,
                     uint64_t max_size)
{
    struct eng_smtpd_config cfg = {
        .hostname = "mx.test",
        .max_rcpts = max_rcpts,
        .max_message_size = max_size,
        .relay_networks = relay,
        .creds = creds,
        .tls = (struct tls_ctx *)1, /* only "TLS available" is looked at */
    };
    assert_int_equal(smtpd_shared_init(&f->sh, &cfg), 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(40000) };
    inet_pton(AF_INET, ip, &a.sin_addr);
    assert_int_equal(smtpd_sess_init(&f->s, &f->sh, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(smtpd_sess_start(&f->s, ENG_SMTPD_REJ__COUNT), SMTPD_ACT_MORE);
}

/* Feeds text; returns the action; *used must be all of it unless told. A credential
 * check (SMTPD_ACT_AUTH) is done here at once, as smtpd_io.c's checker thread would,
 * and the input behind it offered again, as smtpd_io.c does after the check's done. */
static enum smtpd_action feed_n(struct fx *f, const char *text, size_t *used)
{
    size_t len = strlen(text), pos = 0;
    for (;;) {
        size_t n = 0;
        enum smtpd_action act = smtpd_sess_input(&f->s, text + pos, len - pos, &n);
        pos += n;
        if (act != SMTPD_ACT_AUTH) {
            *used = pos;
            return act;
        }
        assert_int_equal(f->s.state, SMTPD_S_AUTH_CHECK);
        const char *user, *pass;
        smtpd_sess_auth_request(&f->s, &user, &pass);
        act = smtpd_sess_auth_checked(&f->s, eng_smtpd_credentials_verify(creds, user, pass));
        if (act != SMTPD_ACT_MORE || pos == len) {
            *used = pos;
            return act;
        }
    }
}

static enum smtpd_action feed(struct fx *f, const char *text)
{
    size_t used = 0;
    enum smtpd_action act = feed_n(f, text, &used);
    if (act == SMTPD_ACT_MORE)
        assert_int_equal(used, strlen(text));
    return act;
}

/* The replies queued since the last call, then cleared. */
static const char *out(struct fx *f)
{
    static char buf[SMTPD_OUT_CAP + 1];
    memcpy(buf, f->s.out, f->s.out_len);
    buf[f->s.out_len] = '\0';
    f->s.out_len = 0;
    return buf;
}

static void out_has(struct fx *f, const char *expect)
{
    const char *o = out(f);
    if (strstr(o, expect) == NULL)
        fail_msg("expected '%s' in replies:\n%s", expect, o);
}

static void fx_end(struct fx *f)
{
    smtpd_sess_fini(&f->s);
}

static void to_tls(struct fx *f)
{
    assert_int_equal(feed(f, "EHLO c.test\r\n"), SMTPD_ACT_MORE);
    assert_int_equal(feed(f, "STARTTLS\r\n"), SMTPD_ACT_STARTTLS);
    out(f);
    smtpd_sess_tls_ready(&f->s, TLS_VERSION_1_3, "TLS_AES_128_GCM_SHA256");
    assert_int_equal(feed(f, "EHLO c.test\r\n"), SMTPD_ACT_MORE);
}

static void greeting_and_ehlo(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "127.0.0.1", "127.0.0.0/8", 0, 0);
    assert_string_equal(out(&f), "220 mx.test ESMTP floormta\r\n");
    assert_int_equal(feed(&f, "MAIL FROM:<a@b.test>\r\n"), SMTPD_ACT_MORE);
    out_has(&f, "503 5.5.1");
    assert_int_equal(feed(&f, "EHLO c.test\r\n"), SMTPD_ACT_MORE);
    const char *o = out(&f);
    assert_non_null(strstr(o, "250-mx.test\r\n"));
    assert_non_null(strstr(o, "250-PIPELINING\r\n"));
    assert_non_null(strstr(o, "250-SIZE 26214400\r\n"));
    assert_non_null(strstr(o, "250-STARTTLS\r\n"));
    assert_non_null(strstr(o, "250-8BITMIME\r\n"));
    assert_non_null(strstr(o, "250-ENHANCEDSTATUSCODES\r\n"));
    assert_non_null(strstr(o, "250 SMTPUTF8\r\n"));
    assert_null(strstr(o, "AUTH")); /* never offered in plaintext */
    feed(&f, "EHLO\r\n");
    out_has(&f, "501 5.5.4");
    feed(&f, "FOO\r\n");
    out_has(&f, "500 5.5.2");
    feed(&f, "NOOP\r\n");
    out_has(&f, "250 2.0.0");
    assert_int_equal(feed(&f, "QUIT\r\n"), SMTPD_ACT_CLOSE);
    out_has(&f, "221 2.0.0");
    fx_end(&f);
}

static void refusals_at_greeting(void **state)
{
    (void)state;
    struct fx f;
    struct eng_smtpd_config cfg = { .hostname = "mx.test" };
    assert_int_equal(smtpd_shared_init(&f.sh, &cfg), 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    inet_pton(AF_INET, "192.0.2.7", &a.sin_addr);
    assert_int_equal(smtpd_sess_init(&f.s, &f.sh, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(smtpd_sess_start(&f.s, ENG_SMTPD_REJ_CONN_PER_CLIENT), SMTPD_ACT_CLOSE);
    out_has(&f, "421 4.7.0");
    assert_int_equal(f.sh.stats.rejects[ENG_SMTPD_REJ_CONN_PER_CLIENT], 1);
    /* Nothing is taken as a command afterwards. */
    feed(&f, "EHLO x\r\n");
    assert_string_equal(out(&f), "");
    smtpd_sess_fini(&f.s);
    assert_int_equal(smtpd_sess_init(&f.s, &f.sh, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(smtpd_sess_start(&f.s, ENG_SMTPD_REJ_CONN_TOTAL), SMTPD_ACT_CLOSE);
    out_has(&f, "421 4.3.2");
    smtpd_sess_fini(&f.s);
}

/* A whole transaction in one buffer: every reply in order, the message complete. */
static void pipelined_transaction(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "127.0.0.1", "127.0.0.0/8", 0, 0);
    out(&f);
    const char *in = "EHLO c.test\r\nMAIL FROM:<a@b.test> SIZE=100 BODY=8BITMIME\r\n"
                     "RCPT TO:<x@one.test>\r\nRCPT TO:<y@two.test>\r\nDATA\r\n"
                     "Subject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
    size_t used = 0;
    assert_int_equal(feed_n(&f, in, &used), SMTPD_ACT_SUBMIT);
    assert_string_equal(in + used, "QUIT\r\n"); /* kept for after done */
    const char *o = out(&f);
    const char *p250 = strstr(o, "250 2.1.0");
    const char *r1 = p250 ? strstr(p250, "250 2.1.5") : NULL;
    const char *r2 = r1 ? strstr(r1 + 1, "250 2.1.5") : NULL;
    const char *d354 = r2 ? strstr(r2, "354 ") : NULL;
    assert_non_null(d354);
    assert_null(strstr(o, "250 2.0.0")); /* not before durable */
    assert_int_equal(f.s.state, SMTPD_S_WAIT_DURABLE);
    /* Input offered while waiting is left alone. */
    assert_int_equal(feed_n(&f, "QUIT\r\n", &used), SMTPD_ACT_PAUSE);
    assert_int_equal(used, 0);

    struct eng_smtpd_message m;
    smtpd_sess_message(&f.s, &m);
    assert_string_equal(m.sender, "a@b.test");
    assert_int_equal(m.nrcpts, 2);
    assert_string_equal(m.rcpts[0], "x@one.test");
    assert_string_equal(m.rcpts[1], "y@two.test");
    assert_int_equal(m.size_param, 100);
    assert_int_equal(m.body, ENG_SMTPD_BODY_8BITMIME);
    assert_null(m.auth_user);
    assert_int_equal(m.tls_version, 0);
    char *content = strndup(m.content, m.content_len);
    static const char rcvd[] = "Received: from c.test ([127.0.0.1])\r\n\tby mx.test (floormta) "
                               "with ESMTP id ";
    assert_memory_equal(content, rcvd, sizeof(rcvd) - 1);
    assert_non_null(strstr(content, m.session_id));
    const char *body = strstr(content, "\r\nSubject: hi\r\n");
    assert_non_null(body);
    assert_string_equal(body + 2, "Subject: hi\r\n\r\n.dot\r\n");
    free(content);

    smtpd_sess_submitted(&f.s, 0, "Q123");
    assert_string_equal(out(&f), "250 2.0.0 Ok: queued as Q123\r\n");
    assert_int_equal(f.sh.stats.messages, 1);
    assert_int_equal(feed(&f, "QUIT\r\n"), SMTPD_ACT_CLOSE);
    fx_end(&f);
}

static void submit_failures(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "127.0.0.1", "127.0.0.0/8", 0, 0);
    const int res[] = { -ENOSPC, -EFBIG, -EIO };
    const char *code[] = { "452 4.3.1", "552 5.3.4", "451 4.3.0" };
    for (int i = 0; i < 3; i++) {
        assert_int_equal(feed(&f, "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n"
                                  "hi\r\n.\r\n"),
                         SMTPD_ACT_SUBMIT);
        out(&f);
        smtpd_sess_submitted(&f.s, res[i], NULL);
        out_has(&f, code[i]);
        assert_int_equal(f.s.state, SMTPD_S_READY);
    }
    assert_int_equal(f.sh.stats.messages, 0);
    assert_int_equal(f.sh.stats.rejects[ENG_SMTPD_REJ_SUBMIT_FAILED], 3);
    fx_end(&f);
}

/* CVE-2011-0411: commands pipelined behind STARTTLS are never executed. */
static void starttls_injection(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "192.0.2.1", NULL, 0, 0);
    out(&f);
    feed(&f, "EHLO c.test\r\n");
    out(&f);
    const char *in = "STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\n";
    size_t used = 0;
    assert_int_equal(feed_n(&f, in, &used), SMTPD_ACT_STARTTLS);
    assert_int_equal(used, strlen("STARTTLS\r\n"));
    assert_string_equal(out(&f), "220 2.0.0 Ready to start TLS\r\n");
    /* Even if the I/O side offered the rest, it is dropped during the handshake. */
    feed(&f, "MAIL FROM:<evil@x.test>\r\n");
    assert_string_equal(out(&f), "");
    smtpd_sess_tls_ready(&f.s, TLS_VERSION_1_2, "ECDHE-ECDSA-AES128-GCM-SHA256");
    /* The plaintext EHLO is forgotten. */
    feed(&f, "MAIL FROM:<a@b.test>\r\n");
    out_has(&f, "503 5.5.1");
    feed(&f, "EHLO c.test\r\n");
    const char *o = out(&f);
    assert_null(strstr(o, "STARTTLS"));
    assert_non_null(strstr(o, "250-AUTH PLAIN LOGIN\r\n"));
    feed(&f, "STARTTLS\r\n");
    out_has(&f, "554 5.5.1");
    fx_end(&f);
}

static void auth_requires_tls(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "192.0.2.1", NULL, 0, 0);
    feed(&f, "EHLO c.test\r\nAUTH PLAIN AHVzZXIAc2VjcmV0\r\n");
    out_has(&f, "538 5.7.11");
    assert_false(f.s.authed);
    assert_int_equal(f.sh.stats.rejects[ENG_SMTPD_REJ_TLS_REQUIRED], 1);
    fx_end(&f);
}

static void auth_plain_and_login(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "192.0.2.1", NULL, 0, 0);
    to_tls(&f);
    out(&f);
    /* "\0user\0secret" */
    feed(&f, "AUTH PLAIN AHVzZXIAc2VjcmV0\r\n");
    assert_string_equal(out(&f), "235 2.7.0 Authentication successful\r\n");
    assert_true(f.s.authed);
    feed(&f, "AUTH PLAIN AHVzZXIAc2VjcmV0\r\n");
    out_has(&f, "503 5.5.1");
    feed(&f, "MAIL FROM:<user@b.test>\r\nRCPT TO:<x@far.test>\r\nDATA\r\n");
    out_has(&f, "354 ");
    assert_int_equal(feed(&f, "x\r\n.\r\n"), SMTPD_ACT_SUBMIT);
    struct eng_smtpd_message m;
    smtpd_sess_message(&f.s, &m);
    assert_string_equal(m.auth_user, "user");
    assert_int_equal(m.tls_version, TLS_VERSION_1_3);
    char *content = strndup(m.content, m.content_len);
    assert_non_null(strstr(content, "\t(version=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256)\r\n"));
    assert_non_null(strstr(content, " with ESMTPSA id "));
    free(content);
    smtpd_sess_submitted(&f.s, 0, "Q1");
    fx_end(&f);

    /* LOGIN, in two steps, then with an initial response. */
    fx_start(&f, "192.0.2.1", NULL, 0, 0);
    to_tls(&f);
    out(&f);
    feed(&f, "AUTH LOGIN\r\n");
    assert_string_equal(out(&f), "334 VXNlcm5hbWU6\r\n");
    feed(&f, "dXNlcg==\r\n");
    assert_string_equal(out(&f), "334 UGFzc3dvcmQ6\r\n");
    feed(&f, "c2VjcmV0\r\n");
    out_has(&f, "235 2.7.0");
    fx_end(&f);

    /* PLAIN without an initial response; then "*" aborts. */
    fx_start(&f, "192.0.2.1", NULL, 0, 0);
    to_tls(&f);
    out(&f);
    feed(&f, "AUTH PLAIN\r\n");
    assert_string_equal(out(&f), "334 \r\n");
    feed(&f, "*\r\n");
    out_has(&f, "501 5.7.0");
    feed(&f, "AUTH LOGIN dXNlcg==\r\n");
    assert_string_equal(out(&f), "334 UGFzc3dvcmQ6\r\n");
    feed(&f, "c2VjcmV0\r\n");
    out_has(&f, "235 2.7.0");
    feed(&f, "AUTH CRAM-MD5\r\n");
    out_has(&f, "503 5.5.1");
    fx_end(&f);
}

/* The check itself is the I/O side's: the session asks for it, holds the input
 * pipelined behind the AUTH and replies only once it has the result. */
static void auth_check_holds_input(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "192.0.2.1", NULL, 0, 0);
    to_tls(&f);
    out(&f);
    const char *text = "AUTH PLAIN AHVzZXIAc2VjcmV0\r\nMAIL FROM:<user@b.test>\r\n";
    size_t used = 0;
    assert_int_equal(smtpd_sess_input(&f.s, text, strlen(text), &used), SMTPD_ACT_AUTH);
    assert_int_equal(used, strlen("AUTH PLAIN AHVzZXIAc2VjcmV0\r\n"));
    assert_int_equal(f.s.state, SMTPD_S_AUTH_CHECK);
    assert_string_equal(out(&f), "");
    const char *user, *pass;
    smtpd_sess_auth_request(&f.s, &user, &pass);
    assert_string_equal(user, "user");
    assert_string_equal(pass, "secret");
    /* Offered again before the result: nothing is taken. */
    size_t again = 1;
    assert_int_equal(smtpd_sess_input(&f.s, text + used, strlen(text + used), &again),
                     SMTPD_ACT_PAUSE);
    assert_int_equal(again, 0);
    assert_int_equal(smtpd_sess_auth_checked(&f.s, 0), SMTPD_ACT_MORE);
    assert_string_equal(f.s.auth_pass, ""); /* wiped */
    assert_string_equal(out(&f), "235 2.7.0 Authentication successful\r\n");
    assert_int_equal(f.s.state, SMTPD_S_READY);
    assert_int_equal(feed(&f, text + used), SMTPD_ACT_MORE);
    out_has(&f, "250 2.1.0");
    fx_end(&f);
    /* A shutdown in the middle of the check cannot reply there (the I/O side answers the
     * AUTH first, then sends the 421). */
    fx_start(&f, "192.0.2.1", NULL, 0, 0);
    to_tls(&f);
    out(&f);
    assert_int_equal(smtpd_sess_input(&f.s, text, strlen(text), &used), SMTPD_ACT_AUTH);
    assert_false(smtpd_sess_shutdown(&f.s));
    assert_string_equal(out(&f), "");
    fx_end(&f);
    /* A temporary failure of the checker: 454, not counted as a failed password. */
    fx_start(&f, "192.0.2.1", NULL, 0, 0);
    to_tls(&f);
    out(&f);
    assert_int_equal(smtpd_sess_input(&f.s, text, strlen(text), &used), SMTPD_ACT_AUTH);
    assert_int_equal(smtpd_sess_auth_checked(&f.s, -ENOMEM), SMTPD_ACT_MORE);
    out_has(&f, "454 4.7.0");
    assert_false(f.s.authed);
    assert_int_equal(f.s.auth_failures, 0);
    fx_end(&f);
}

/* A client that pipelines without reading fills the reply buffer up to the point where
 * commands wait; a shutdown or a timeout then still has room for its 421, however long
 * our host name and wherever the fill stopped (0..39 NOOPs shift it by their 14-byte
 * replies; found reading the code behind tests/fuzz/fuzz_smtpd.c). */
static void closing_reply_always_fits(void **state)
{
    (void)state;
    for (int noops = 0; noops < 40; noops++) {
        for (int timeout = 0; timeout < 2; timeout++) {
            struct fx f;
            fx_start(&f, "192.0.2.1", NULL, 0, 0);
            memset(f.sh.hostname, 'h', SMTPD_NAME_MAX);
            f.sh.hostname[SMTPD_NAME_MAX] = '\0';
            char text[40 * 6 + 40 * 13 + 1] = "";
            for (int i = 0; i < noops; i++)
                strcat(text, "NOOP\r\n");
            for (int i = 0; i < 40; i++)
                strcat(text, "EHLO c.test\r\n");
            size_t used = 0;
            assert_int_equal(smtpd_sess_input(&f.s, text, strlen(text), &used), SMTPD_ACT_PAUSE);
            assert_true(used < strlen(text));
            if (timeout)
                assert_true(smtpd_sess_timeout(&f.s));
            else
                assert_true(smtpd_sess_shutdown(&f.s));
            const char *o = out(&f);
            const char *tail =
                    timeout ? " Error: timeout exceeded\r\n" : " Service shutting down\r\n";
            size_t ol = strlen(o), tl = strlen(tail);
            assert_true(ol > tl && strcmp(o + ol - tl, tail) == 0);
            fx_end(&f);
        }
    }
}

static void auth_failures_disconnect(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "192.0.2.1", NULL, 0, 0);
    to_tls(&f);
    out(&f);
    /* "\0user\0wrong", "\0nobody\0secret" */
    feed(&f, "AUTH PLAIN AHVzZXIAd3Jvbmc=\r\n");
    out_has(&f, "535 5.7.8");
    feed(&f, "AUTH PLAIN AG5vYm9keQBzZWNyZXQ=\r\n");
    out_has(&f, "535 5.7.8");
    feed(&f, "AUTH PLAIN !!!!\r\n");
    out_has(&f, "501 5.5.2");
    /* An authorization identity other than the user is refused too. */
    assert_int_equal(feed(&f, "AUTH PLAIN b3RoZXIAdXNlcgBzZWNyZXQ=\r\n"), SMTPD_ACT_CLOSE);
    out_has(&f, "421 4.7.0");
    assert_false(f.s.authed);
    assert_int_equal(f.sh.stats.rejects[ENG_SMTPD_REJ_AUTH_FAILED], 3);
    fx_end(&f);
}

static void relay_denied(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "192.0.2.1", "127.0.0.0/8", 0, 0);
    feed(&f, "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.test>\r\nDATA\r\n");
    const char *o = out(&f);
    assert_non_null(strstr(o, "554 5.7.1"));
    assert_non_null(strstr(o, "554 5.5.1 Error: no valid recipients"));
    assert_null(strstr(o, "354"));
    assert_int_equal(f.sh.stats.rejects[ENG_SMTPD_REJ_RELAY_DENIED], 1);
    /* TLS alone is not authentication. */
    fx_end(&f);
    fx_start(&f, "192.0.2.1", "127.0.0.0/8", 0, 0);
    to_tls(&f);
    out(&f);
    feed(&f, "MAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.test>\r\n");
    out_has(&f, "554 5.7.1");
    fx_end(&f);
}

/* A reload (smtpd_shared_reconfigure): the open session keeps its limits and its relay
 * decision; a session that starts afterwards gets the new ones; a bad configuration
 * changes nothing. */
static void reconfigure(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "127.0.0.1", "127.0.0.0/8", 2, 100);
    feed(&f, "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<1@x.test>\r\n");
    out(&f);
    struct eng_smtpd_config next = {
        .max_rcpts = 5,
        .max_message_size = 1000,
        .command_timeout_ms = 7000,
        .relay_networks = "192.0.2.0/24",
        .creds = creds,
    };
    struct eng_smtpd_config bad = next;
    bad.relay_networks = "not-a-network";
    assert_int_equal(smtpd_shared_reconfigure(&f.sh, &bad), -EINVAL);
    bad.relay_networks = NULL;
    bad.max_rcpts = QUEUE_RCPTS_MAX + 1;
    assert_int_equal(eng_smtpd_reconfigure_check(&bad), -EINVAL);
    assert_int_equal(smtpd_shared_reconfigure(&f.sh, &bad), -EINVAL);
    assert_int_equal(f.sh.lim.max_rcpts, 2);
    assert_int_equal(f.sh.nnets, 1);
    assert_int_equal(eng_smtpd_reconfigure_check(&next), 0);
    uint64_t sessions = f.sh.next_id;
    assert_int_equal(smtpd_shared_reconfigure(&f.sh, &next), 0);
    assert_string_equal(f.sh.hostname, "mx.test"); /* kept */
    assert_true(f.sh.tls_available);
    assert_int_equal(f.sh.next_id, sessions);
    /* The open session: still 2 recipients (its table has 2 rows), still a relay client. */
    feed(&f, "RCPT TO:<2@x.test>\r\nRCPT TO:<3@x.test>\r\n");
    out_has(&f, "452 4.5.3");
    assert_int_equal(f.s.nrcpts, 2);
    assert_int_equal(smtpd_sess_timeout_ms(&f.s), 300000);
    smtpd_sess_fini(&f.s);

    /* A new session from 127.0.0.1: no longer in the relay networks. */
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(40001) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(smtpd_sess_init(&f.s, &f.sh, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(smtpd_sess_start(&f.s, ENG_SMTPD_REJ__COUNT), SMTPD_ACT_MORE);
    out(&f);
    assert_int_equal(smtpd_sess_timeout_ms(&f.s), 7000);
    feed(&f, "EHLO c\r\nMAIL FROM:<a@b.test> SIZE=900\r\nRCPT TO:<1@x.test>\r\n");
    const char *o = out(&f);
    assert_non_null(strstr(o, "SIZE 1000"));
    assert_non_null(strstr(o, "554 5.7.1"));
    assert_null(strstr(o, "552"));
    smtpd_sess_fini(&f.s);

    /* And one from the new network relays, up to 5 recipients. */
    inet_pton(AF_INET, "192.0.2.9", &a.sin_addr);
    assert_int_equal(smtpd_sess_init(&f.s, &f.sh, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(smtpd_sess_start(&f.s, ENG_SMTPD_REJ__COUNT), SMTPD_ACT_MORE);
    feed(&f, "EHLO c\r\nMAIL FROM:<a@b.test>\r\n");
    for (int i = 0; i < 6; i++) {
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "RCPT TO:<%d@x.test>\r\n", i);
        feed(&f, cmd);
    }
    out_has(&f, "452 4.5.3");
    assert_int_equal(f.s.nrcpts, 5);
    fx_end(&f);
}

static void limits(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "127.0.0.1", "127.0.0.0/8", 2, 100);
    feed(&f, "EHLO c\r\nMAIL FROM:<a@b.test> SIZE=101\r\n");
    out_has(&f, "552 5.3.4");
    feed(&f, "MAIL FROM:<a@b.test> SIZE=100\r\nRCPT TO:<1@x.test>\r\nRCPT TO:<2@x.test>\r\n"
             "RCPT TO:<3@x.test>\r\n");
    out_has(&f, "452 4.5.3");
    assert_int_equal(f.s.nrcpts, 2);
    /* Content over the limit: read to the dot, then 552; nothing submitted. */
    feed(&f, "DATA\r\n");
    out(&f);
    char big[300];
    memset(big, 'a', sizeof(big));
    for (int i = 0; i < 3; i++) {
        size_t used;
        assert_int_equal(smtpd_sess_input(&f.s, big, 50, &used), SMTPD_ACT_MORE);
        assert_int_equal(smtpd_sess_input(&f.s, "\r\n", 2, &used), SMTPD_ACT_MORE);
    }
    assert_string_equal(out(&f), "");
    assert_int_equal(feed(&f, ".\r\n"), SMTPD_ACT_MORE);
    out_has(&f, "552 5.3.4");
    assert_int_equal(f.s.state, SMTPD_S_READY);
    assert_int_equal(f.sh.stats.rejects[ENG_SMTPD_REJ_TOO_BIG], 2);
    assert_int_equal(f.sh.stats.rejects[ENG_SMTPD_REJ_TOO_MANY_RCPTS], 1);
    fx_end(&f);

    /* A command line of 1001 bytes; a content line of 999. */
    fx_start(&f, "127.0.0.1", "127.0.0.0/8", 0, 0);
    char line[1100];
    memset(line, 'x', sizeof(line));
    memcpy(line, "NOOP ", 5);
    memcpy(line + 999, "\r\n", 3);
    feed(&f, "EHLO c\r\n");
    out(&f);
    feed(&f, line);
    out_has(&f, "500 5.5.6");
    memset(line, 'x', sizeof(line));
    memcpy(line, "NOOP ", 5);
    memcpy(line + 998, "\r\n", 3);
    feed(&f, line); /* 998 + CRLF: fits */
    out_has(&f, "250 2.0.0");
    feed(&f, "MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n");
    out(&f);
    memset(line, 'y', 999);
    memcpy(line + 999, "\r\n.\r\n", 6);
    assert_int_equal(feed(&f, line), SMTPD_ACT_MORE);
    out_has(&f, "550 5.6.0");
    fx_end(&f);
}

/* SMTP smuggling: a bare LF ends neither a command nor the content. */
static void bare_lf(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "127.0.0.1", "127.0.0.0/8", 0, 0);
    feed(&f, "EHLO c\n");
    out(&f);
    assert_int_equal(f.s.state, SMTPD_S_GREETED);
    feed(&f, "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n");
    out(&f);
    /* "\n.\n" and "\n.\r\n" are content; the smuggled MAIL is content too. */
    assert_int_equal(feed(&f, "hi\n.\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\n"
                              "DATA\r\nevil\n.\r\n"),
                     SMTPD_ACT_MORE);
    assert_string_equal(out(&f), "");
    assert_int_equal(f.s.state, SMTPD_S_DATA);
    assert_int_equal(feed(&f, "end\r\n.\r\n"), SMTPD_ACT_MORE);
    assert_string_equal(out(&f), "550 5.6.2 Error: bare <LF> received\r\n");
    assert_int_equal(f.s.state, SMTPD_S_READY);
    assert_int_equal(f.sh.stats.rejects[ENG_SMTPD_REJ_BARE_LF], 2);

    /* A CR alone is content and starts the line: CRLF CR "." CRLF does not end the
     * data, and the dot after the CR is not unstuffed (found by tests/fuzz/fuzz_smtpd). */
    feed(&f, "MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n");
    out(&f);
    assert_int_equal(feed(&f, "\r.\r\nMAIL FROM:<evil@x.test>\r\n\r..\r\n"), SMTPD_ACT_MORE);
    assert_string_equal(out(&f), "");
    assert_int_equal(f.s.state, SMTPD_S_DATA);
    size_t used = 0;
    assert_int_equal(feed_n(&f, ".\r\n", &used), SMTPD_ACT_SUBMIT);
    struct eng_smtpd_message m;
    smtpd_sess_message(&f.s, &m);
    char *content = strndup(m.content, m.content_len);
    const char *body = strstr(content, "\r\n\r.\r\n");
    assert_non_null(body);
    assert_string_equal(body + 2, "\r.\r\nMAIL FROM:<evil@x.test>\r\n\r..\r\n");
    free(content);
    smtpd_sess_submitted(&f.s, 0, "Q1");
    fx_end(&f);
}

static void timeouts(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "127.0.0.1", "127.0.0.0/8", 0, 0);
    assert_int_equal(smtpd_sess_timeout_ms(&f.s), 300000);
    feed(&f, "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n");
    assert_int_equal(smtpd_sess_timeout_ms(&f.s), 600000);
    out(&f);
    assert_true(smtpd_sess_timeout(&f.s));
    out_has(&f, "421 4.4.2");
    assert_int_equal(f.s.state, SMTPD_S_CLOSING);
    fx_end(&f);
}

static void syntax(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "127.0.0.1", "127.0.0.0/8", 0, 0);
    feed(&f, "EHLO c\r\n");
    out(&f);
    feed(&f, "MAIL FROM:a@b.test\r\n");
    out_has(&f, "501 5.5.4");
    feed(&f, "MAIL FROM:<a@b.test> FOO=1\r\n");
    out_has(&f, "555 5.5.4 Unsupported option: FOO=1\r\n");
    /* The parameter is echoed, but never a byte reply text may not carry: a CR in the
     * middle of the line, a control character, 8-bit (found by tests/fuzz/fuzz_smtpd). */
    feed(&f, "MAIL FROM:<a@b.test> X\rY\x01Z\xff=\t1\r\n");
    assert_string_equal(out(&f), "555 5.5.4 Unsupported option: X?Y?Z?=?1\r\n");
    feed(&f, "MAIL FROM:<j\xc3\xb6@b.test>\r\n");
    out_has(&f, "553 5.6.7");
    feed(&f, "MAIL FROM:<j\xc3\xb6@b.test> SMTPUTF8\r\n");
    out_has(&f, "250 2.1.0");
    feed(&f, "RCPT TO:<>\r\n");
    out_has(&f, "501 5.1.3");
    feed(&f, "RCPT TO:<x@y.test> NOTIFY=NEVER\r\n");
    out_has(&f, "555 5.5.4");
    feed(&f, "DATA\r\n");
    out_has(&f, "554 5.5.1");
    feed(&f, "RSET\r\nRCPT TO:<x@y.test>\r\n");
    const char *o = out(&f);
    assert_non_null(strstr(o, "250 2.0.0"));
    assert_non_null(strstr(o, "503 5.5.1"));
    fx_end(&f);
}

static void credentials_and_nets(void **state)
{
    (void)state;
    assert_int_equal(eng_smtpd_credentials_count(creds), 1);
    assert_int_equal(eng_smtpd_credentials_verify(creds, "user", "secret"), 0);
    assert_int_equal(eng_smtpd_credentials_verify(creds, "user", "Secret"), -EACCES);
    assert_int_equal(eng_smtpd_credentials_verify(creds, "other", "secret"), -EACCES);

    char path[] = "/tmp/floormta-creds-bad.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "user:plaintext\n", 15), 15);
    close(fd);
    struct eng_smtpd_credentials *bad = NULL;
    assert_int_equal(eng_smtpd_credentials_load(path, &bad), -EINVAL);
    unlink(path);
    assert_int_equal(eng_smtpd_credentials_load("/nonexistent/creds", &bad), -ENOENT);

    struct eng_smtpd_net nets[4];
    size_t n;
    assert_int_equal(eng_smtpd_nets_parse("10.0.0.0/8, 192.0.2.1 2001:db8::/32", nets, 4, &n), 0);
    assert_int_equal(n, 3);
    struct sockaddr_in a = { .sin_family = AF_INET };
    inet_pton(AF_INET, "10.9.8.7", &a.sin_addr);
    assert_true(eng_smtpd_nets_match(nets, n, (struct sockaddr *)&a));
    inet_pton(AF_INET, "192.0.2.2", &a.sin_addr);
    assert_false(eng_smtpd_nets_match(nets, n, (struct sockaddr *)&a));
    struct sockaddr_in6 a6 = { .sin6_family = AF_INET6 };
    inet_pton(AF_INET6, "::ffff:192.0.2.1", &a6.sin6_addr);
    assert_true(eng_smtpd_nets_match(nets, n, (struct sockaddr *)&a6));
    inet_pton(AF_INET6, "2001:db9::1", &a6.sin6_addr);
    assert_false(eng_smtpd_nets_match(nets, n, (struct sockaddr *)&a6));
    assert_int_equal(eng_smtpd_nets_parse("10.0.0.0/33", nets, 4, &n), -EINVAL);
    assert_int_equal(eng_smtpd_nets_parse("a b", nets, 4, &n), -EINVAL);
    assert_int_equal(eng_smtpd_nets_parse("1.1.1.1 2.2.2.2", nets, 1, &n), -E2BIG);

    char b[64];
    assert_string_equal(smtpd_b64_encode("\0user\0secret", 12, b, sizeof(b)), "AHVzZXIAc2VjcmV0");
    assert_int_equal(smtpd_b64_decode("dXNlcg==", 8, b, sizeof(b), false), 4);
    assert_string_equal(b, "user");
    assert_int_equal(smtpd_b64_decode("dXNlcg=", 7, b, sizeof(b), false), -EINVAL);
    assert_int_equal(smtpd_b64_decode("AHVz", 4, b, sizeof(b), false), -EINVAL);
}

static int setup(void **state)
{
    (void)state;
    /* $6$ (SHA-512) keeps the test fast; the server takes any crypt(3) method. */
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    assert_non_null(crypt_gensalt_rn("$6$", 0, NULL, 0, salt, sizeof(salt)));
    struct crypt_data cd;
    memset(&cd, 0, sizeof(cd));
    const char *hash = crypt_r("secret", salt, &cd);
    assert_non_null(hash);
    strcpy(creds_path, "/tmp/floormta-creds.XXXXXX");
    int fd = mkstemp(creds_path);
    assert_true(fd >= 0);
    dprintf(fd, "# test users\n\nuser:%s\n", hash);
    close(fd);
    assert_int_equal(eng_smtpd_credentials_load(creds_path, &creds), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    eng_smtpd_credentials_free(creds);
    unlink(creds_path);
    return 0;
}

/* The server stops: between commands a 421 4.3.2; inside DATA or while the message is
 * being made durable nothing is said (the 250 comes first, from submitted, and the
 * owner then says 421); every case ends in CLOSING. */
static void shutdown_replies(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "127.0.0.1", "127.0.0.0/8", 0, 0);
    out(&f);
    feed(&f, "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n");
    out(&f);
    assert_true(smtpd_sess_shutdown(&f.s));
    assert_string_equal(out(&f), "421 4.3.2 mx.test Service shutting down\r\n");
    assert_int_equal(f.s.state, SMTPD_S_CLOSING);
    fx_end(&f);

    fx_start(&f, "127.0.0.1", "127.0.0.0/8", 0, 0);
    feed(&f, "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.test>\r\nDATA\r\n");
    out(&f);
    feed(&f, "half a line");
    assert_false(smtpd_sess_shutdown(&f.s)); /* inside DATA: no reply in the content */
    assert_string_equal(out(&f), "");
    assert_int_equal(f.s.state, SMTPD_S_CLOSING);
    fx_end(&f);

    fx_start(&f, "127.0.0.1", "127.0.0.0/8", 0, 0);
    feed(&f, "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.test>\r\nDATA\r\n");
    out(&f);
    assert_int_equal(feed(&f, "x\r\n.\r\n"), SMTPD_ACT_SUBMIT);
    out(&f);
    /* What the connection does when the stop comes during the submit: the 250 first
     * (the message is queued), then the 421. */
    smtpd_sess_submitted(&f.s, 0, "Q1");
    assert_true(smtpd_sess_shutdown(&f.s));
    const char *o = out(&f);
    assert_non_null(strstr(o, "250 2.0.0 "));
    assert_non_null(strstr(o, "Q1"));
    assert_true(strstr(o, "421 4.3.2") > strstr(o, "250 2.0.0 "));
    fx_end(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(greeting_and_ehlo),
        cmocka_unit_test(shutdown_replies),
        cmocka_unit_test(refusals_at_greeting),
        cmocka_unit_test(pipelined_transaction),
        cmocka_unit_test(submit_failures),
        cmocka_unit_test(starttls_injection),
        cmocka_unit_test(auth_requires_tls),
        cmocka_unit_test(auth_plain_and_login),
        cmocka_unit_test(auth_check_holds_input),
        cmocka_unit_test(closing_reply_always_fits),
        cmocka_unit_test(auth_failures_disconnect),
        cmocka_unit_test(relay_denied),
        cmocka_unit_test(limits),
        cmocka_unit_test(reconfigure),
        cmocka_unit_test(bare_lf),
        cmocka_unit_test(timeouts),
        cmocka_unit_test(syntax),
        cmocka_unit_test(credentials_and_nets),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
