/*
 * tests/queue/test_dsn.c — DSN composition (queue_dsn_build): every DSN built here is
 * parsed back with the small RFC 5322 / MIME parser below (written for the test, sharing
 * nothing with queue/dsn*.c) and checked on the wire (CRLF only, no NUL, lines within 998
 * octets, 8-bit bytes only inside a part declared 8bit), in its top-level header, its
 * three parts and every delivery-status field.
 */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "queue/dsn_int.h"
#include "queue/queue.h"
#include "tests/queue/dsn_parse.h"

#define NOW     1700000000 /* Tue, 14 Nov 2023 22:13:20 +0000 */
#define ARRIVAL (NOW - 5 * 86400)
#define MTA     DSN_PARSE_MTA

static const char ORIGINAL[] =
        "Received: from client.example.org (client.example.org [198.51.100.7])\r\n"
        "\tby mx.esp.example with ESMTPS id 0123456789abcdef\r\n"
        "From: Alice <alice@Example.ORG>\r\n"
        "To: Bob <bob@example.net>\r\n"
        "Subject: Quarterly report\r\n"
        "Message-ID: <q3@example.org>\r\n"
        "\r\n"
        "Hello Bob,\r\n"
        "\r\n"
        "the report is attached.\r\n";

static const char ORIGINAL_HEADERS[] =
        "Received: from client.example.org (client.example.org [198.51.100.7])\r\n"
        "\tby mx.esp.example with ESMTPS id 0123456789abcdef\r\n"
        "From: Alice <alice@Example.ORG>\r\n"
        "To: Bob <bob@example.net>\r\n"
        "Subject: Quarterly report\r\n"
        "Message-ID: <q3@example.org>\r\n";

/* ---- fixtures ----------------------------------------------------------------------------- */

static struct queue_envelope *mkenv(unsigned n)
{
    struct queue_envelope *env = queue_envelope_alloc(n);
    assert_non_null(env);
    env->id = 0x0123456789abcdefull;
    strcpy(env->sender, "alice@Example.ORG");
    strcpy(env->domain, "example.net");
    env->arrival = ARRIVAL;
    env->content_size = sizeof(ORIGINAL) - 1;
    return env;
}

static void rcpt(struct queue_envelope *env, unsigned i, const char *addr,
                 enum queue_rcpt_state state, enum queue_result_kind kind, uint16_t code,
                 const char *enh, const char *remote, const char *text)
{
    struct queue_rcpt *r = &env->rcpts[i];
    snprintf(r->addr, sizeof(r->addr), "%s", addr);
    r->state = state;
    r->attempts = 7;
    r->last.kind = kind;
    r->last.code = code;
    snprintf(r->last.enhanced, sizeof(r->last.enhanced), "%s", enh);
    snprintf(r->last.remote, sizeof(r->last.remote), "%s", remote);
    snprintf(r->last.text, sizeof(r->last.text), "%s", text);
    r->last.when = kind == QUEUE_RESULT_NONE ? 0 : NOW - 60;
}

struct built {
    struct parsed p;
    struct queue_envelope *denv;
};

static int build_ex(struct queue_envelope *env, enum queue_dsn_action action, const char *content,
                    size_t clen, uint64_t max_return, struct built *out)
{
    struct queue_dsn_input in = {
        .reporting_mta = MTA,
        .env = env,
        .action = action,
        .content = content,
        .content_len = clen,
        .now = NOW,
        .retry_until = NOW + 2 * 86400,
        .max_return_bytes = max_return,
    };
    void *msg = (void *)1;
    size_t len = 99;
    struct queue_envelope *denv = (void *)1;
    int rc = queue_dsn_build(&in, &msg, &len, &denv);
    memset(out, 0, sizeof(*out));
    if (rc != 0) {
        assert_null(msg);
        assert_null(denv);
        return rc;
    }
    bool utf8 = false;
    for (const char *c = env->sender; *c; c++)
        utf8 |= (unsigned char)*c >= 0x80;
    parse(&out->p, msg, len, action, utf8);
    assert_int_equal(denv->needs_smtputf8, utf8);
    out->denv = denv;

    /* the DSN's envelope */
    assert_int_equal(denv->nrcpts, 1);
    assert_string_equal(denv->sender, "");
    assert_true(denv->is_dsn);
    assert_int_equal(denv->ret, QUEUE_RET_DEFAULT);
    assert_string_equal(denv->rcpts[0].addr, env->sender);
    assert_int_equal(denv->rcpts[0].state, QUEUE_RCPT_PENDING);
    assert_int_equal(denv->arrival, NOW);
    assert_int_equal(denv->content_size, len);
    char to[QUEUE_ADDR_MAX + 3];
    snprintf(to, sizeof(to), "<%s>", env->sender);
    expect(&out->p.top, "To", to);
    return 0;
}

static int build(struct queue_envelope *env, enum queue_dsn_action action, struct built *out)
{
    return build_ex(env, action, ORIGINAL, sizeof(ORIGINAL) - 1, 0, out);
}

static void built_free(struct built *b)
{
    parsed_free(&b->p);
    queue_envelope_free(b->denv);
}

static void assert_part3(const struct parsed *p, const char *type, const char *data, size_t len)
{
    assert_int_equal(p->nparts, 3);
    expect(&p->parts[2].hdr, "Content-Type", type);
    assert_int_equal(p->parts[2].len, len);
    assert_memory_equal(p->parts[2].body, data, len);
}

static void assert_human(const struct parsed *p, const char *needle)
{
    if (strstr(p->human, needle) == NULL)
        fail_msg("human part lacks \"%s\":\n%s", needle, p->human);
}

/* ---- cases -------------------------------------------------------------------------------- */

static void test_failed_smtp(void **state)
{
    (void)state;
    struct queue_envelope *env = mkenv(1);
    rcpt(env, 0, "bob@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_SMTP, 550, "5.1.1",
         "mx1.example.net [192.0.2.25]",
         "<bob@example.net>: Recipient address rejected: User unknown in virtual mailbox table");
    struct built b;
    assert_int_equal(build(env, QUEUE_DSN_FAILED, &b), 0);
    const struct parsed *p = &b.p;

    expect(&p->top, "Date", "Tue, 14 Nov 2023 22:13:20 +0000");
    assert_int_equal(p->ngroups, 2);
    expect(&p->groups[0], "Arrival-Date", "Thu, 09 Nov 2023 22:13:20 +0000");
    expect(&p->groups[0], "X-floormta-Queue-ID", "0123456789abcdef");
    assert_null(get(&p->groups[0], "Original-Envelope-Id"));
    const struct fields *g = &p->groups[1];
    assert_null(get(g, "Original-Recipient"));
    expect(g, "Final-Recipient", "rfc822; bob@example.net");
    expect(g, "Action", "failed");
    expect(g, "Status", "5.1.1");
    expect(g, "Remote-MTA", "dns; mx1.example.net");
    expect(g, "Diagnostic-Code",
           "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in "
           "virtual mailbox table");
    expect(g, "Last-Attempt-Date", "Tue, 14 Nov 2023 22:12:20 +0000");
    assert_null(get(g, "Will-Retry-Until"));
    assert_int_equal(g->n, 6);

    assert_part3(p, "text/rfc822-headers", ORIGINAL_HEADERS, sizeof(ORIGINAL_HEADERS) - 1);
    assert_human(p, "<bob@example.net>:");
    assert_human(p, "rejected it permanently: 550 5.1.1");
    assert_human(p, "mx1.example.net [192.0.2.25]");
    assert_human(p, "header section of the original message is attached");
    assert_null(strstr(p->human, "retried for")); /* a 5xx is never retried */

    assert_string_equal(b.denv->domain, "example.org");
    assert_false(b.denv->needs_8bit);
    assert_false(b.denv->needs_smtputf8);
    assert_false(b.denv->delay_warned);
    built_free(&b);
    queue_envelope_free(env);
}

static void test_failed_tls(void **state)
{
    (void)state;
    struct queue_envelope *env = mkenv(3);
    rcpt(env, 0, "bob@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_TLS, 450, "",
         "mx1.example.net [192.0.2.25]",
         "version_below_floor: receiver chose TLSv1.1 (cipher ECDHE-RSA-AES128-SHA)");
    rcpt(env, 1, "carol@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_TLS, 450, "4.7.5",
         "mx2.example.net [192.0.2.26]", "no_starttls: receiver does not offer STARTTLS");
    rcpt(env, 2, "dave@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_TLS, 450, "",
         "mx1.example.net [192.0.2.25]",
         "cert_expired: certificate has expired (not after 2023-01-01, subject CN=mx1)");
    struct built b;
    assert_int_equal(build(env, QUEUE_DSN_FAILED, &b), 0);
    const struct parsed *p = &b.p;
    assert_int_equal(p->ngroups, 4);
    expect(&p->groups[1], "Status", "5.7.5");
    expect(&p->groups[1], "Diagnostic-Code",
           "X-floormta; tls: version_below_floor: receiver chose TLSv1.1 (cipher "
           "ECDHE-RSA-AES128-SHA)");
    expect(&p->groups[1], "Remote-MTA", "dns; mx1.example.net");
    expect(&p->groups[2], "Status", "5.7.4"); /* 4.7.5 is of the wrong class for failed */
    expect(&p->groups[2], "Final-Recipient", "rfc822; carol@example.net");
    expect(&p->groups[3], "Status", "5.7.5");
    expect(&p->groups[3], "Diagnostic-Code",
           "X-floormta; tls: cert_expired: certificate has expired (not after 2023-01-01, "
           "subject CN=mx1)");
    assert_human(p, "did not offer TLS 1.2 or newer with a valid certificate");
    assert_human(p, "reason: version_below_floor: receiver chose TLSv1.1");
    assert_human(p, "reason: cert_expired");
    assert_human(p, "never sent to that server in a weaker form");
    assert_human(p, "retried for 5 days (7 attempts since Thu, 09 Nov 2023 22:13:20 +0000)");
    built_free(&b);
    queue_envelope_free(env);
}

static void test_failed_expiry(void **state)
{
    (void)state;
    struct queue_envelope *env = mkenv(2);
    rcpt(env, 0, "bob@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_LOCAL, 550, "4.4.7", "",
         "expired after 5 days in the queue; last: 451 4.7.1 greylisted");
    rcpt(env, 1, "carol@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_SMTP, 451, "4.2.2",
         "mx1.example.net", "mailbox full");
    struct built b;
    assert_int_equal(build(env, QUEUE_DSN_FAILED, &b), 0);
    const struct parsed *p = &b.p;
    assert_int_equal(p->ngroups, 3);
    expect(&p->groups[1], "Status", "5.4.7");
    expect(&p->groups[1], "Diagnostic-Code",
           "X-floormta; local: expired after 5 days in the queue; last: 451 4.7.1 greylisted");
    assert_null(get(&p->groups[1], "Remote-MTA"));
    expect(&p->groups[2], "Status", "5.4.7"); /* a 4xx bounced: only by expiry */
    expect(&p->groups[2], "Diagnostic-Code", "smtp; 451 4.2.2 mailbox full");
    assert_human(p, "Delivery was given up: expired after 5 days");
    assert_human(p, "It was retried for 5 days");
    built_free(&b);
    queue_envelope_free(env);
}

static void test_delayed(void **state)
{
    (void)state;
    struct queue_envelope *env = mkenv(4);
    rcpt(env, 0, "bob@example.net", QUEUE_RCPT_DEFERRED, QUEUE_RESULT_SMTP, 451, "4.7.1",
         "mx1.example.net [192.0.2.25]", "greylisted, try again later");
    rcpt(env, 1, "carol@example.net", QUEUE_RCPT_PENDING, QUEUE_RESULT_NONE, 0, "", "", "");
    rcpt(env, 2, "dave@example.net", QUEUE_RCPT_DELIVERED, QUEUE_RESULT_SMTP, 250, "2.0.0",
         "mx1.example.net", "ok");
    rcpt(env, 3, "erin@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_SMTP, 550, "5.1.1",
         "mx1.example.net", "no such user");
    struct built b;
    assert_int_equal(build(env, QUEUE_DSN_DELAYED, &b), 0);
    const struct parsed *p = &b.p;
    assert_int_equal(p->ngroups, 3);
    const struct fields *g = &p->groups[1];
    expect(g, "Final-Recipient", "rfc822; bob@example.net");
    expect(g, "Action", "delayed");
    expect(g, "Status", "4.7.1");
    expect(g, "Diagnostic-Code", "smtp; 451 4.7.1 greylisted, try again later");
    expect(g, "Will-Retry-Until", "Thu, 16 Nov 2023 22:13:20 +0000");
    g = &p->groups[2];
    expect(g, "Final-Recipient", "rfc822; carol@example.net");
    expect(g, "Action", "delayed");
    expect(g, "Status", "4.0.0");
    assert_null(get(g, "Diagnostic-Code"));
    assert_null(get(g, "Last-Attempt-Date"));
    assert_null(get(g, "Remote-MTA"));
    expect(g, "Will-Retry-Until", "Thu, 16 Nov 2023 22:13:20 +0000");
    assert_null(strstr(p->human, "dave@"));
    assert_null(strstr(p->human, "erin@"));
    assert_human(p, "warning only");
    assert_human(p, "after 5 days of trying");
    assert_human(p, "retried until Thu, 16 Nov 2023 22:13:20 +0000");
    assert_part3(p, "text/rfc822-headers", ORIGINAL_HEADERS, sizeof(ORIGINAL_HEADERS) - 1);
    expect(&p->parts[2].hdr, "Content-Description", "Delayed Message Headers");
    built_free(&b);
    queue_envelope_free(env);
}

static void test_mixed(void **state)
{
    (void)state;
    struct queue_envelope *env = mkenv(5);
    rcpt(env, 0, "a@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_SMTP, 550, "5.1.1", "mx",
         "unknown a");
    rcpt(env, 1, "b@example.net", QUEUE_RCPT_DEFERRED, QUEUE_RESULT_SMTP, 451, "4.3.0", "mx",
         "later b");
    rcpt(env, 2, "c@example.net", QUEUE_RCPT_DELIVERED, QUEUE_RESULT_SMTP, 250, "2.0.0", "mx",
         "ok c");
    rcpt(env, 3, "d@example.net", QUEUE_RCPT_PENDING, QUEUE_RESULT_NONE, 0, "", "", "");
    rcpt(env, 4, "e@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_DNS, 550, "", "",
         "permfail nxdomain: the domain does not exist");
    struct built b;
    assert_int_equal(build(env, QUEUE_DSN_FAILED, &b), 0);
    const struct parsed *p = &b.p;
    assert_int_equal(p->ngroups, 3);
    expect(&p->groups[1], "Final-Recipient", "rfc822; a@example.net");
    expect(&p->groups[2], "Final-Recipient", "rfc822; e@example.net");
    expect(&p->groups[2], "Status", "5.1.2");
    expect(&p->groups[2], "Diagnostic-Code",
           "X-floormta; dns: permfail nxdomain: the domain does not exist");
    for (const char *s = "bcd"; *s; s++) {
        char who[32];
        snprintf(who, sizeof(who), "<%c@example.net>", *s);
        assert_null(strstr(p->human, who));
    }
    assert_human(p, "could not be resolved to a mail server");
    built_free(&b);
    queue_envelope_free(env);
}

static void test_notify(void **state)
{
    (void)state;
    static const struct {
        uint8_t notify;
        bool failed, delayed;
    } cases[] = {
        { 0, true, true },
        { QUEUE_NOTIFY_NEVER, false, false },
        { QUEUE_NOTIFY_SUCCESS, false, false },
        { QUEUE_NOTIFY_FAILURE, true, false },
        { QUEUE_NOTIFY_DELAY, false, true },
        { QUEUE_NOTIFY_FAILURE | QUEUE_NOTIFY_DELAY, true, true },
        { QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE, true, false },
        { QUEUE_NOTIFY_NEVER | QUEUE_NOTIFY_FAILURE | QUEUE_NOTIFY_DELAY, false, false },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct queue_envelope *env = mkenv(2);
        rcpt(env, 0, "bob@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_SMTP, 550, "5.1.1", "mx",
             "no");
        rcpt(env, 1, "carol@example.net", QUEUE_RCPT_DEFERRED, QUEUE_RESULT_SMTP, 451, "", "mx",
             "later");
        env->rcpts[0].notify = env->rcpts[1].notify = cases[i].notify;
        struct built b;
        int rc = build(env, QUEUE_DSN_FAILED, &b);
        assert_int_equal(rc, cases[i].failed ? 0 : -ENOENT);
        if (rc == 0) {
            assert_int_equal(b.p.ngroups, 2);
            expect(&b.p.groups[1], "Final-Recipient", "rfc822; bob@example.net");
            built_free(&b);
        }
        rc = build(env, QUEUE_DSN_DELAYED, &b);
        assert_int_equal(rc, cases[i].delayed ? 0 : -ENOENT);
        if (rc == 0) {
            assert_int_equal(b.p.ngroups, 2);
            expect(&b.p.groups[1], "Final-Recipient", "rfc822; carol@example.net");
            expect(&b.p.groups[1], "Status", "4.0.0");
            built_free(&b);
        }
        queue_envelope_free(env);
    }
}

static void test_orcpt_envid(void **state)
{
    (void)state;
    struct queue_envelope *env = mkenv(2);
    strcpy(env->envid, "QQ314159");
    rcpt(env, 0, "bob@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_SMTP, 550, "5.1.1", "mx",
         "no");
    strcpy(env->rcpts[0].orcpt, "rfc822;Bob@Example.net");
    rcpt(env, 1, "carol@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_SMTP, 550, "5.1.1", "mx",
         "no");
    strcpy(env->rcpts[1].orcpt, "rfc822;c\xc3\xa4rol@example.net");
    struct built b;
    assert_int_equal(build(env, QUEUE_DSN_FAILED, &b), 0);
    expect(&b.p.groups[0], "Original-Envelope-Id", "QQ314159");
    expect(&b.p.groups[1], "Original-Recipient", "rfc822;Bob@Example.net");
    expect(&b.p.groups[1], "Final-Recipient", "rfc822; bob@example.net");
    expect(&b.p.groups[2], "Original-Recipient", "utf-8; c\\x{E4}rol@example.net");
    /* the field order of RFC 3464 2.3 */
    assert_string_equal(b.p.groups[1].f[0].name, "Original-Recipient");
    assert_string_equal(b.p.groups[1].f[1].name, "Final-Recipient");
    built_free(&b);
    queue_envelope_free(env);
}

static void test_ret_full(void **state)
{
    (void)state;
    struct queue_envelope *env = mkenv(1);
    env->ret = QUEUE_RET_FULL;
    rcpt(env, 0, "bob@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_SMTP, 550, "5.1.1", "mx",
         "no");
    struct built b;
    assert_int_equal(build(env, QUEUE_DSN_FAILED, &b), 0);
    assert_part3(&b.p, "message/rfc822", ORIGINAL, sizeof(ORIGINAL) - 1);
    expect(&b.p.parts[2].hdr, "Content-Description", "Undelivered Message");
    assert_null(get(&b.p.parts[2].hdr, "Content-Transfer-Encoding"));
    assert_false(b.denv->needs_8bit);
    assert_human(&b.p, "The original message is attached.");
    built_free(&b);

    /* RET=HDRS: headers only */
    env->ret = QUEUE_RET_HDRS;
    assert_int_equal(build(env, QUEUE_DSN_FAILED, &b), 0);
    assert_part3(&b.p, "text/rfc822-headers", ORIGINAL_HEADERS, sizeof(ORIGINAL_HEADERS) - 1);
    built_free(&b);

    /* no content: two parts */
    env->ret = QUEUE_RET_FULL;
    assert_int_equal(build_ex(env, QUEUE_DSN_FAILED, NULL, 0, 0, &b), 0);
    assert_int_equal(b.p.nparts, 2);
    built_free(&b);
    queue_envelope_free(env);
}

static void test_ret_full_8bit(void **state)
{
    (void)state;
    static const char msg[] = "From: J\xc3\xb6rg <j@example.org>\r\nSubject: caf\xc3\xa9\r\n"
                              "Content-Type: text/plain; charset=utf-8\r\n"
                              "Content-Transfer-Encoding: 8bit\r\n\r\n"
                              "Gr\xc3\xbc\xc3\x9f"
                              "e\r\n";
    struct queue_envelope *env = mkenv(1);
    env->ret = QUEUE_RET_FULL;
    env->needs_8bit = true;
    rcpt(env, 0, "bob@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_SMTP, 550, "5.1.1", "mx",
         "no");
    struct built b;
    assert_int_equal(build_ex(env, QUEUE_DSN_FAILED, msg, sizeof(msg) - 1, 0, &b), 0);
    assert_part3(&b.p, "message/rfc822", msg, sizeof(msg) - 1);
    expect(&b.p.parts[2].hdr, "Content-Transfer-Encoding", "8bit");
    expect(&b.p.top, "Content-Transfer-Encoding", "8bit");
    assert_true(b.denv->needs_8bit);
    built_free(&b);

    /* headers with 8-bit bytes are returned as they are, declared the same way */
    env->ret = QUEUE_RET_HDRS;
    assert_int_equal(build_ex(env, QUEUE_DSN_FAILED, msg, sizeof(msg) - 1, 0, &b), 0);
    expect(&b.p.parts[2].hdr, "Content-Type", "text/rfc822-headers");
    expect(&b.p.parts[2].hdr, "Content-Transfer-Encoding", "8bit");
    assert_true(b.denv->needs_8bit);
    built_free(&b);
    queue_envelope_free(env);
}

static void test_lf_only(void **state)
{
    (void)state;
    static const char lf[] = "From: Alice <alice@Example.ORG>\nTo: Bob <bob@example.net>\n"
                             "Subject: lf only\n\nbody line\n.\nlast";
    static const char lf_headers[] = "From: Alice <alice@Example.ORG>\r\n"
                                     "To: Bob <bob@example.net>\r\nSubject: lf only\r\n";
    static const char lf_full[] = "From: Alice <alice@Example.ORG>\r\nTo: Bob <bob@example.net>\r\n"
                                  "Subject: lf only\r\n\r\nbody line\r\n.\r\nlast";
    struct queue_envelope *env = mkenv(1);
    rcpt(env, 0, "bob@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_SMTP, 550, "5.1.1", "mx",
         "no");
    struct built b;
    assert_int_equal(build_ex(env, QUEUE_DSN_FAILED, lf, sizeof(lf) - 1, 0, &b), 0);
    assert_part3(&b.p, "text/rfc822-headers", lf_headers, sizeof(lf_headers) - 1);
    built_free(&b);
    env->ret = QUEUE_RET_FULL;
    assert_int_equal(build_ex(env, QUEUE_DSN_FAILED, lf, sizeof(lf) - 1, 0, &b), 0);
    assert_part3(&b.p, "message/rfc822", lf_full, sizeof(lf_full) - 1);
    built_free(&b);
    queue_envelope_free(env);
}

static char *big_message(size_t size)
{
    char *m = malloc(size);
    assert_non_null(m);
    size_t h = sizeof(ORIGINAL_HEADERS) - 1;
    memcpy(m, ORIGINAL_HEADERS, h);
    memcpy(m + h, "\r\n", 2);
    for (size_t i = h + 2; i < size; i++)
        m[i] = (i - h) % 78 == 0 ? '\n' : (i - h) % 78 == 77 ? '\r' : 'x';
    for (size_t i = h + 2; i < size; i++) /* no bare CR or LF where the size cuts */
        if ((m[i] == '\r' && (i + 1 == size || m[i + 1] != '\n')) ||
            (m[i] == '\n' && m[i - 1] != '\r'))
            m[i] = 'x';
    return m;
}

static void test_huge_full(void **state)
{
    (void)state;
    struct queue_envelope *env = mkenv(1);
    env->ret = QUEUE_RET_FULL;
    rcpt(env, 0, "bob@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_SMTP, 550, "5.1.1", "mx",
         "no");
    struct built b;
    size_t size = 2u << 20;
    char *m = big_message(size);
    assert_int_equal(build_ex(env, QUEUE_DSN_FAILED, m, size, 1u << 20, &b), 0);
    assert_part3(&b.p, "text/rfc822-headers", ORIGINAL_HEADERS, sizeof(ORIGINAL_HEADERS) - 1);
    assert_human(&b.p, "too large to return in full");
    assert_true(b.p.len < 64 * 1024);
    built_free(&b);
    /* within the limit: all of it */
    assert_int_equal(build_ex(env, QUEUE_DSN_FAILED, m, size, 4u << 20, &b), 0);
    assert_part3(&b.p, "message/rfc822", m, size);
    built_free(&b);
    free(m);

    /* the default limit is 10 MiB */
    size = (10u << 20) + 1;
    m = big_message(size);
    assert_int_equal(build_ex(env, QUEUE_DSN_FAILED, m, size, 0, &b), 0);
    expect(&b.p.parts[2].hdr, "Content-Type", "text/rfc822-headers");
    built_free(&b);
    assert_int_equal(build_ex(env, QUEUE_DSN_FAILED, m, size - 1, 0, &b), 0);
    expect(&b.p.parts[2].hdr, "Content-Type", "message/rfc822");
    built_free(&b);
    free(m);
    queue_envelope_free(env);
}

static void test_nothing_to_report(void **state)
{
    (void)state;
    struct queue_envelope *env = mkenv(1);
    rcpt(env, 0, "bob@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_SMTP, 550, "5.1.1", "mx",
         "no");
    struct built b;
    env->sender[0] = '\0'; /* the original is a DSN: never bounced */
    assert_int_equal(build(env, QUEUE_DSN_FAILED, &b), -ENOENT);
    assert_int_equal(build(env, QUEUE_DSN_DELAYED, &b), -ENOENT);
    strcpy(env->sender, "alice@example.org");
    env->is_dsn = true;
    assert_int_equal(build(env, QUEUE_DSN_FAILED, &b), -ENOENT);
    env->is_dsn = false;
    env->rcpts[0].state = QUEUE_RCPT_DELIVERED;
    assert_int_equal(build(env, QUEUE_DSN_FAILED, &b), -ENOENT);
    assert_int_equal(build(env, QUEUE_DSN_DELAYED, &b), -ENOENT);
    env->rcpts[0].state = QUEUE_RCPT_BOUNCED;
    strcpy(env->sender, "postmaster"); /* nowhere to send it */
    assert_int_equal(build(env, QUEUE_DSN_FAILED, &b), -EINVAL);
    strcpy(env->sender, "alice@example.org\r\nBcc: x@evil.example");
    assert_int_equal(build(env, QUEUE_DSN_FAILED, &b), -EINVAL);
    void *out;
    size_t len;
    struct queue_envelope *d;
    assert_int_equal(queue_dsn_build(NULL, &out, &len, &d), -EINVAL);
    queue_envelope_free(env);
}

static void test_hostile(void **state)
{
    (void)state;
    struct queue_envelope *env = mkenv(4);
    env->ret = QUEUE_RET_HDRS;
    strcpy(env->envid, "id with\r\nX-Injected: envid");
    rcpt(env, 0, "bob@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_SMTP, 550, "5.1.1\r\nX",
         "mx1.example.net\r\nX-Injected: remote",
         "no such user\r\nX-Injected: yes\r\n\r\n--=_floormta_0\r\nContent-Type: text/html\r\n"
         "\r\n<b>hi</b>\r\n\xff\xfe\x01\x7f\tend");
    /* a NUL hides what follows it */
    memcpy(env->rcpts[0].last.text + 13, "\0X-Hidden: 1", 12);
    /* text and remote filled to the last byte without a NUL terminator */
    struct queue_rcpt *r1 = &env->rcpts[1];
    rcpt(env, 1, "carol@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_TLS, 450, "", "", "");
    memset(r1->last.text, 'A', sizeof(r1->last.text));
    for (size_t i = 50; i < sizeof(r1->last.text); i += 50)
        r1->last.text[i] = '\n';
    memset(r1->last.remote, 'm', sizeof(r1->last.remote));
    memset(r1->last.enhanced, '5', sizeof(r1->last.enhanced));
    /* one long word of a full text */
    rcpt(env, 2, "dave@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_NETWORK, 450, "", "mx", "");
    memset(env->rcpts[2].last.text, 'B', sizeof(env->rcpts[2].last.text) - 1);
    /* a non-ASCII address */
    rcpt(env, 3, "j\xc3\xb6rg@ex\xc3\xa4mple.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_SMTP, 550,
         "5.1.1", "mx", "\x80\x81");

    /* the original: a 5000-octet header line, a bare CR, NULs, a line that looks like a
     * boundary */
    struct queue_dsn_buf o = { 0 };
    queue_dsn_buf_puts(&o, "Subject: ");
    for (int i = 0; i < 5000; i++)
        queue_dsn_buf_put(&o, "x", 1);
    queue_dsn_buf_puts(&o, "\r\nX-Bare: a\rb\r\nX-Nul: a");
    queue_dsn_buf_put(&o, "\0\0", 2);
    queue_dsn_buf_puts(&o, "b\r\n--=_floormta_\r\n\r\nbody\r\n");
    assert_false(o.oom);

    struct built b;
    assert_int_equal(build_ex(env, QUEUE_DSN_FAILED, o.p, o.len, 0, &b), 0);
    const struct parsed *p = &b.p;
    assert_int_equal(p->nparts, 3);
    assert_int_equal(p->ngroups, 5);
    /* nothing injected anywhere */
    assert_null(get(&p->top, "X-Injected"));
    for (int i = 0; i < p->nparts; i++)
        assert_null(get(&p->parts[i].hdr, "X-Injected"));
    for (int i = 0; i < p->ngroups; i++) {
        assert_null(get(&p->groups[i], "X-Injected"));
        assert_null(get(&p->groups[i], "X-Hidden"));
    }
    expect(&p->groups[0], "Original-Envelope-Id", "id+20with+0D+0AX-Injected:+20envid");
    const struct fields *g = &p->groups[1];
    expect(g, "Status", "5.0.0"); /* "5.1.1\r\nX" is no enhanced code */
    expect(g, "Remote-MTA", "dns; mx1.example.net");
    expect(g, "Diagnostic-Code", "smtp; 550 no such user");
    assert_int_equal(g->n, 6);
    g = &p->groups[2];
    expect(g, "Status", "5.7.5");
    const char *dc = get(g, "Diagnostic-Code");
    assert_non_null(dc);
    assert_int_equal(strlen(dc), strlen("X-floormta; tls: ") + sizeof(r1->last.text));
    const char *rm = get(g, "Remote-MTA");
    assert_non_null(rm);
    assert_int_equal(strlen(rm), strlen("dns; ") + sizeof(r1->last.remote));
    g = &p->groups[3];
    expect(g, "Status", "5.4.1");
    dc = get(g, "Diagnostic-Code");
    assert_int_equal(strlen(dc), strlen("X-floormta; network: ") + QUEUE_TEXT_MAX - 1);
    g = &p->groups[4];
    expect(g, "Final-Recipient", "utf-8; j\\x{F6}rg@ex\\x{E4}mple.net");
    expect(g, "Diagnostic-Code", "smtp; 550 5.1.1 ??");

    /* the header section came back folded, without NUL or bare CR, and without the
     * body (the boundary-looking line is in the headers here: still one part) */
    const struct part *pt = &p->parts[2];
    expect(&pt->hdr, "Content-Type", "text/rfc822-headers");
    assert_null(memmem(pt->body, pt->len, "body", 4));
    assert_non_null(memmem(pt->body, pt->len, "X-Bare: ab\r\n", 12));
    assert_non_null(memmem(pt->body, pt->len, "X-Nul: ab\r\n", 11));
    assert_non_null(memmem(pt->body, pt->len, "--=_floormta_\r\n", 15));
    assert_null(memmem(b.p.msg, b.p.len, "X-Hidden", 8));
    assert_null(strstr(p->human, "<b>"));
    built_free(&b);
    queue_dsn_buf_free(&o);

    /* the UTF-8 sender needs SMTPUTF8 for the DSN */
    strcpy(env->sender, "j\xc3\xb6rg@Example.ORG");
    assert_int_equal(build(env, QUEUE_DSN_FAILED, &b), 0);
    assert_true(b.denv->needs_smtputf8);
    assert_string_equal(b.denv->domain, "example.org");
    built_free(&b);
    queue_envelope_free(env);
}

/* An 8-bit address is written with \\x{...} escapes, for every '+' too: an address the
 * spool allows can then be six times over a line's 998 octets, and the human-readable
 * part must still keep every line within them (parse checks the wire; found by
 * tests/fuzz/fuzz_dsn.c). */
static void test_long_utf8_address(void **state)
{
    (void)state;
    struct queue_envelope *env = mkenv(1);
    char addr[QUEUE_ADDR_MAX + 1] = "j\xc3\xb6rg";
    size_t n = strlen(addr);
    while (n < QUEUE_ADDR_MAX - 11)
        addr[n++] = '+';
    memcpy(addr + n, "@x.example", 11);
    rcpt(env, 0, addr, QUEUE_RCPT_BOUNCED, QUEUE_RESULT_SMTP, 550, "5.1.1", "mx", "no");
    assert_int_equal(strlen(env->rcpts[0].addr), QUEUE_ADDR_MAX - 1);
    struct built b;
    assert_int_equal(build(env, QUEUE_DSN_FAILED, &b), 0);
    assert_non_null(strstr(b.p.human, "<j\\x{F6}rg\\x{2B}\\x{2B}"));
    built_free(&b);
    queue_envelope_free(env);
}

static void test_unique(void **state)
{
    (void)state;
    struct queue_envelope *env = mkenv(1);
    rcpt(env, 0, "bob@example.net", QUEUE_RCPT_BOUNCED, QUEUE_RESULT_SMTP, 550, "5.1.1", "mx",
         "no");
    struct built a, b;
    assert_int_equal(build(env, QUEUE_DSN_FAILED, &a), 0);
    assert_int_equal(build(env, QUEUE_DSN_FAILED, &b), 0);
    assert_string_not_equal(get(&a.p.top, "Message-ID"), get(&b.p.top, "Message-ID"));
    assert_string_not_equal(a.p.boundary, b.p.boundary);
    built_free(&a);
    built_free(&b);
    queue_envelope_free(env);
}

/* ---- the helpers (dsn_int.h) ------------------------------------------------------------ */

static void test_fold_wrap(void **state)
{
    (void)state;
    struct queue_dsn_buf b = { 0 };
    char word[3000];
    memset(word, 'w', sizeof(word) - 1);
    word[sizeof(word) - 1] = '\0';
    queue_dsn_fold(&b, "X-Long", word);
    queue_dsn_fold(&b, "X-Words",
                   "a b c d e f g h i j k l m n o p q r s t u v w x y z a b c d "
                   "e f g h i j k l m n o p q r s t u v w x y z");
    size_t folded = b.len;
    queue_dsn_wrap(&b, "    ", word);
    queue_dsn_wrap(&b, "",
                   "short words wrap at seventy-two columns so this sentence runs "
                   "over more than one line of the human-readable part");
    assert_false(b.oom);
    check_wire(b.p, b.len, 0, 0);
    struct fields fs;
    parse_fields(b.p, folded, &fs);
    assert_string_equal(get(&fs, "X-Words"),
                        "a b c d e f g h i j k l m n o p q r s t u v w x y z a b c d e f g h i "
                        "j k l m n o p q r s t u v w x y z");
    /* split where it reached 998 octets: the word with a space at each split */
    char joined[sizeof(word)];
    size_t k = 0;
    for (const char *c = get(&fs, "X-Long"); *c; c++)
        if (*c != ' ')
            joined[k++] = *c;
    joined[k] = '\0';
    assert_string_equal(joined, word);
    fields_free(&fs);
    /* folded lines of X-Words stay within 78 */
    const char *x = memmem(b.p, b.len, "X-Words", 7);
    for (const char *l = x; l < b.p + folded && (l == x || *l == ' ');) {
        const char *e = memmem(l, (size_t)(b.p + b.len - l), "\r\n", 2);
        assert_true(e - l <= 78);
        l = e + 2;
    }
    queue_dsn_buf_free(&b);

    char out[64];
    assert_string_equal(queue_dsn_duration(5 * 86400 + 3 * 3600, out), "5 days 3 hours");
    assert_string_equal(queue_dsn_duration(3600 + 60, out), "1 hour 1 minute");
    assert_string_equal(queue_dsn_duration(45, out), "45 seconds");
    assert_string_equal(queue_dsn_date(0, out), "Thu, 01 Jan 1970 00:00:00 +0000");
    assert_string_equal(queue_dsn_date(INT64_MAX, out), "Fri, 31 Dec 9999 23:59:59 +0000");
}

static void test_status_map(void **state)
{
    (void)state;
    static const struct {
        enum queue_dsn_action a;
        enum queue_result_kind k;
        uint16_t code;
        const char *enh, *text, *want;
    } cases[] = {
        { QUEUE_DSN_FAILED, QUEUE_RESULT_SMTP, 550, "5.1.1", "x", "5.1.1" },
        { QUEUE_DSN_FAILED, QUEUE_RESULT_SMTP, 554, "", "x", "5.0.0" },
        { QUEUE_DSN_FAILED, QUEUE_RESULT_SMTP, 452, "4.2.2", "full", "5.4.7" },
        { QUEUE_DSN_FAILED, QUEUE_RESULT_SMTP, 550, "5.100.1", "x", "5.100.1" },
        { QUEUE_DSN_FAILED, QUEUE_RESULT_SMTP, 550, "5.1000.1", "x", "5.0.0" },
        { QUEUE_DSN_DELAYED, QUEUE_RESULT_SMTP, 451, "4.7.1", "x", "4.7.1" },
        { QUEUE_DSN_DELAYED, QUEUE_RESULT_SMTP, 451, "", "x", "4.0.0" },
        { QUEUE_DSN_FAILED, QUEUE_RESULT_TLS, 450, "", "version_below_floor: TLSv1", "5.7.5" },
        { QUEUE_DSN_DELAYED, QUEUE_RESULT_TLS, 450, "", "cert_expired", "4.7.5" },
        { QUEUE_DSN_DELAYED, QUEUE_RESULT_TLS, 450, "", "no_starttls", "4.7.4" },
        { QUEUE_DSN_FAILED, QUEUE_RESULT_TLS, 450, "", "STARTTLS_REFUSED: 454", "5.7.4" },
        { QUEUE_DSN_FAILED, QUEUE_RESULT_TLS, 450, "5.7.10", "cert_untrusted", "5.7.10" },
        { QUEUE_DSN_FAILED, QUEUE_RESULT_DNS, 550, "", "nullmx null_mx", "5.1.10" },
        { QUEUE_DSN_FAILED, QUEUE_RESULT_DNS, 550, "", "permfail nxdomain", "5.1.2" },
        { QUEUE_DSN_FAILED, QUEUE_RESULT_DNS, 550, "", "permfail no_address", "5.4.4" },
        { QUEUE_DSN_DELAYED, QUEUE_RESULT_DNS, 450, "", "tempfail servfail", "4.4.3" },
        { QUEUE_DSN_DELAYED, QUEUE_RESULT_NETWORK, 450, "", "connection lost", "4.4.2" },
        { QUEUE_DSN_DELAYED, QUEUE_RESULT_NETWORK, 450, "", "connect timeout", "4.4.1" },
        { QUEUE_DSN_FAILED, QUEUE_RESULT_LOCAL, 550, "", "expired", "5.4.7" },
        { QUEUE_DSN_DELAYED, QUEUE_RESULT_LOCAL, 450, "", "x", "4.0.0" },
        { QUEUE_DSN_FAILED, QUEUE_RESULT_NONE, 0, "", "", "5.0.0" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct queue_result r = { .kind = cases[i].k, .code = cases[i].code };
        snprintf(r.enhanced, sizeof(r.enhanced), "%s", cases[i].enh);
        snprintf(r.text, sizeof(r.text), "%s", cases[i].text);
        char out[16];
        queue_dsn_status(cases[i].a, &r, out);
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("case %zu: %s, want %s", i, out, cases[i].want);
    }
    assert_true(queue_dsn_enhanced_valid("2.0.0", 16));
    assert_true(queue_dsn_enhanced_valid("5.123.456", 16));
    assert_false(queue_dsn_enhanced_valid("5.1234.1", 16));
    assert_false(queue_dsn_enhanced_valid("3.1.1", 16));
    assert_false(queue_dsn_enhanced_valid("5.1.", 16));
    assert_false(queue_dsn_enhanced_valid("5..1", 16));
    assert_false(queue_dsn_enhanced_valid("5.1.1 ", 16));
    assert_false(queue_dsn_enhanced_valid("5.1.1", 5)); /* no NUL within cap */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failed_smtp),   cmocka_unit_test(test_failed_tls),
        cmocka_unit_test(test_failed_expiry), cmocka_unit_test(test_delayed),
        cmocka_unit_test(test_mixed),         cmocka_unit_test(test_notify),
        cmocka_unit_test(test_orcpt_envid),   cmocka_unit_test(test_ret_full),
        cmocka_unit_test(test_ret_full_8bit), cmocka_unit_test(test_lf_only),
        cmocka_unit_test(test_huge_full),     cmocka_unit_test(test_nothing_to_report),
        cmocka_unit_test(test_hostile),       cmocka_unit_test(test_long_utf8_address),
        cmocka_unit_test(test_unique),        cmocka_unit_test(test_fold_wrap),
        cmocka_unit_test(test_status_map),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
