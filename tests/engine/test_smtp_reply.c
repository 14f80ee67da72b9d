/*
 * tests/engine/test_smtp_reply.c — the SMTP reply parser and EHLO capabilities:
 * single and multi-line replies, replies split at every byte, pipelined replies,
 * enhanced codes, and hostile input (long lines, too many lines, bad codes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/smtp_reply.h"

struct parsed {
    struct smtp_reply_parser p;
    struct smtp_reply r;
};

/* Parses all of s in one call; expects exactly one complete reply. */
static int parse_all(struct parsed *x, const char *s, size_t *consumed, bool *complete)
{
    smtp_reply_reset(&x->p, &x->r);
    return smtp_reply_parse(&x->p, &x->r, s, strlen(s), consumed, complete);
}

static void single_line(void **state)
{
    (void)state;
    struct parsed x;
    size_t used;
    bool done;
    assert_int_equal(parse_all(&x, "220 mx.example.com ESMTP ready\r\n", &used, &done), 0);
    assert_true(done);
    assert_int_equal(used, 32);
    assert_int_equal(x.r.code, 220);
    assert_int_equal(x.r.nlines, 1);
    assert_string_equal(x.r.text, "mx.example.com ESMTP ready");
    assert_string_equal(x.r.enhanced, "");
}

static void multi_line_and_caps(void **state)
{
    (void)state;
    const char *ehlo = "250-mx.example.com Hello\r\n"
                       "250-PIPELINING\r\n"
                       "250-SIZE 52428800\r\n"
                       "250-starttls\r\n"
                       "250-8BITMIME\r\n"
                       "250-AUTH PLAIN LOGIN\r\n"
                       "250 ENHANCEDSTATUSCODES\r\n";
    struct parsed x;
    size_t used;
    bool done;
    assert_int_equal(parse_all(&x, ehlo, &used, &done), 0);
    assert_true(done);
    assert_int_equal(used, strlen(ehlo));
    assert_int_equal(x.r.nlines, 7);
    struct smtp_caps caps;
    smtp_caps_parse(&x.r, &caps);
    assert_true(caps.ext & SMTP_EXT_STARTTLS); /* case-insensitive */
    assert_true(caps.ext & SMTP_EXT_PIPELINING);
    assert_true(caps.ext & SMTP_EXT_8BITMIME);
    assert_true(caps.ext & SMTP_EXT_ENHANCEDSTATUSCODES);
    assert_false(caps.ext & SMTP_EXT_SMTPUTF8);
    assert_int_equal(caps.size_max, 52428800);
    char buf[256];
    assert_string_equal(smtp_caps_format(&caps, buf, sizeof(buf)),
                        "STARTTLS PIPELINING SIZE=52428800 8BITMIME ENHANCEDSTATUSCODES");
}

static void greeting_line_is_not_a_capability(void **state)
{
    (void)state;
    struct parsed x;
    size_t used;
    bool done;
    assert_int_equal(parse_all(&x, "250-STARTTLS\r\n250 SIZE\r\n", &used, &done), 0);
    struct smtp_caps caps;
    smtp_caps_parse(&x.r, &caps);
    assert_false(caps.ext & SMTP_EXT_STARTTLS);
    assert_true(caps.ext & SMTP_EXT_SIZE);
    assert_int_equal(caps.size_max, 0);
}

static void split_at_every_byte(void **state)
{
    (void)state;
    const char *s = "250-first line\r\n250-second\r\n250 2.1.0 last\r\n";
    size_t len = strlen(s);
    for (size_t cut = 0; cut <= len; cut++) {
        struct parsed x;
        smtp_reply_reset(&x.p, &x.r);
        size_t used = 0;
        bool done = false;
        assert_int_equal(smtp_reply_parse(&x.p, &x.r, s, cut, &used, &done), 0);
        assert_int_equal(used, cut);
        assert_int_equal(done, cut == len);
        if (!done) {
            assert_int_equal(smtp_reply_parse(&x.p, &x.r, s + cut, len - cut, &used, &done), 0);
            assert_true(done);
        }
        assert_int_equal(x.r.code, 250);
        assert_int_equal(x.r.nlines, 3);
        assert_string_equal(x.r.text, "first line\nsecond\n2.1.0 last");
        assert_string_equal(x.r.enhanced, "");
    }
}

static void enhanced_codes(void **state)
{
    (void)state;
    struct parsed x;
    size_t used;
    bool done;
    assert_int_equal(parse_all(&x, "550 5.1.1 <a@b>: user unknown\r\n", &used, &done), 0);
    assert_string_equal(x.r.enhanced, "5.1.1");
    /* The class must match the reply's. */
    assert_int_equal(parse_all(&x, "550 2.1.1 odd\r\n", &used, &done), 0);
    assert_string_equal(x.r.enhanced, "");
    assert_int_equal(parse_all(&x, "454 4.7.0 TLS not available\r\n", &used, &done), 0);
    assert_string_equal(x.r.enhanced, "4.7.0");
    assert_int_equal(parse_all(&x, "250 2.0.0\r\n", &used, &done), 0);
    assert_string_equal(x.r.enhanced, "2.0.0");
    assert_int_equal(parse_all(&x, "250 2.0.0000 no\r\n", &used, &done), 0);
    assert_string_equal(x.r.enhanced, "");
}

static void pipelined_replies_one_at_a_time(void **state)
{
    (void)state;
    const char *s = "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n";
    struct parsed x;
    size_t off = 0, used;
    bool done;
    int codes[3];
    for (int i = 0; i < 3; i++) {
        smtp_reply_reset(&x.p, &x.r);
        assert_int_equal(smtp_reply_parse(&x.p, &x.r, s + off, strlen(s) - off, &used, &done), 0);
        assert_true(done);
        codes[i] = x.r.code;
        off += used;
    }
    assert_int_equal(off, strlen(s));
    assert_int_equal(codes[0], 250);
    assert_int_equal(codes[2], 354);
}

static void bare_lf_and_bare_code(void **state)
{
    (void)state;
    struct parsed x;
    size_t used;
    bool done;
    assert_int_equal(parse_all(&x, "250-a\n250\n", &used, &done), 0);
    assert_true(done);
    assert_int_equal(x.r.nlines, 2);
}

static void malformed(void **state)
{
    (void)state;
    struct parsed x;
    size_t used;
    bool done;
    const char *bad[] = {
        "hello\r\n",
        "25\r\n",
        "2500 x\r\n",
        "199 too low\r\n",
        "600 too high\r\n",
        "260 bad second digit\r\n",
        "250-a\r\n251 changed\r\n",
        "250_x\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(parse_all(&x, bad[i], &used, &done), SMTP_ERR_SYNTAX);
}

static void long_line_is_cut_at_the_bound(void **state)
{
    (void)state;
    /* 10 MB without a line end, fed in 64 KiB chunks as a socket would: the parser
     * must fail as soon as one line exceeds its bound, holding no more than that. */
    static char chunk[65536];
    memset(chunk, 'a', sizeof(chunk));
    memcpy(chunk, "220 ", 4);
    struct parsed x;
    smtp_reply_reset(&x.p, &x.r);
    size_t total = 0, used = 0;
    bool done = false;
    int rc = 0;
    while (total < 10u * 1024 * 1024 && rc == 0) {
        rc = smtp_reply_parse(&x.p, &x.r, chunk, sizeof(chunk), &used, &done);
        total += used;
    }
    assert_int_equal(rc, SMTP_ERR_LINE_TOO_LONG);
    assert_true(total <= SMTP_REPLY_LINE_MAX + 1);
}

static void too_many_lines(void **state)
{
    (void)state;
    struct parsed x;
    smtp_reply_reset(&x.p, &x.r);
    size_t used;
    bool done = false;
    int rc = 0;
    for (int i = 0; i < SMTP_REPLY_LINES_MAX + 10 && rc == 0; i++)
        rc = smtp_reply_parse(&x.p, &x.r, "250-x\r\n", 7, &used, &done);
    assert_int_equal(rc, SMTP_ERR_TOO_MANY_LINES);
    assert_false(done);
}

static void text_truncates_but_parses(void **state)
{
    (void)state;
    struct parsed x;
    smtp_reply_reset(&x.p, &x.r);
    char line[1100];
    memset(line, 'b', sizeof(line));
    memcpy(line, "250-", 4);
    line[sizeof(line) - 2] = '\r';
    line[sizeof(line) - 1] = '\n';
    size_t used;
    bool done = false;
    for (int i = 0; i < 20; i++)
        assert_int_equal(smtp_reply_parse(&x.p, &x.r, line, sizeof(line), &used, &done), 0);
    assert_int_equal(smtp_reply_parse(&x.p, &x.r, "250 end\r\n", 9, &used, &done), 0);
    assert_true(done);
    assert_true(x.r.text_truncated);
    assert_int_equal(x.r.text_len, SMTP_REPLY_TEXT_MAX - 1);
    assert_int_equal(strlen(x.r.text), x.r.text_len);
}

static void summary_sanitises(void **state)
{
    (void)state;
    struct parsed x;
    size_t used;
    bool done;
    assert_int_equal(parse_all(&x, "554 no\x01thanks\r\n", &used, &done), 0);
    char buf[64];
    assert_string_equal(smtp_reply_summary(&x.r, buf, sizeof(buf)), "554 no?thanks");
    assert_string_equal(smtp_strerror(SMTP_ERR_LINE_TOO_LONG), "reply line too long");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(single_line),
        cmocka_unit_test(multi_line_and_caps),
        cmocka_unit_test(greeting_line_is_not_a_capability),
        cmocka_unit_test(split_at_every_byte),
        cmocka_unit_test(enhanced_codes),
        cmocka_unit_test(pipelined_replies_one_at_a_time),
        cmocka_unit_test(bare_lf_and_bare_code),
        cmocka_unit_test(malformed),
        cmocka_unit_test(long_line_is_cut_at_the_bound),
        cmocka_unit_test(too_many_lines),
        cmocka_unit_test(text_truncates_but_parses),
        cmocka_unit_test(summary_sanitises),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
