/*
 * tests/engine/test_api_mime.c — MIME assembly (eng_api_mime_build) and the mailbox
 * check (eng_api_addr_check): text only, html only, multipart/alternative,
 * quoted-printable and RFC 2047 encoding of non-ASCII, CRLF line ends and line lengths,
 * header overrides and header injection refused.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/api.h"

static char *build(const struct eng_api_mime *m)
{
    char *out;
    size_t len;
    const char *why, *field;
    int rc = eng_api_mime_build(m, &out, &len, &why, &field);
    if (rc < 0)
        fprintf(stderr, "build: %s (%s)\n", why, field ? field : "-");
    assert_int_equal(rc, 0);
    assert_int_equal(strlen(out), len);
    /* Every line ends in CRLF and stays within 998 octets. */
    size_t line = 0;
    for (size_t i = 0; i < len; i++) {
        if (out[i] == '\n') {
            assert_true(i > 0 && out[i - 1] == '\r');
            line = 0;
        } else {
            assert_true(out[i] != '\r' || out[i + 1] == '\n');
            assert_true(++line <= 998);
        }
        assert_true((unsigned char)out[i] < 0x80); /* never 8bit */
    }
    return out;
}

static void test_text_only(void **state)
{
    (void)state;
    const char *to[] = { "b@example.net" };
    struct eng_api_mime m = { .from = "a@example.com",
                              .to = to,
                              .nto = 1,
                              .subject = "Hello",
                              .text = "line one\nline two\n",
                              .hostname = "mta.example.com",
                              .now = 1767225600 };
    char *out = build(&m);
    assert_non_null(strstr(out, "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"));
    assert_non_null(strstr(out, "@mta.example.com>\r\n"));
    assert_non_null(strstr(out, "From: a@example.com\r\n"));
    assert_non_null(strstr(out, "To: b@example.net\r\n"));
    assert_non_null(strstr(out, "Subject: Hello\r\n"));
    assert_non_null(strstr(out, "MIME-Version: 1.0\r\n"));
    assert_non_null(strstr(out, "Content-Type: text/plain; charset=us-ascii\r\n"));
    assert_non_null(strstr(out, "Content-Transfer-Encoding: 7bit\r\n\r\nline one\r\nline two\r\n"));
    free(out);
}

static void test_alternative_qp(void **state)
{
    (void)state;
    struct eng_api_mime m = { .from = "a@example.com",
                              .subject = "Grüße aus Köln — ünïcödé",
                              .text = "Grüße = greetings \nend",
                              .html = "<p>Grüße</p>" };
    char *out = build(&m);
    assert_non_null(strstr(out, "Subject: =?UTF-8?B?"));
    assert_non_null(strstr(out, "Content-Type: multipart/alternative; boundary=\"=_fm"));
    assert_non_null(strstr(out, "Content-Type: text/plain; charset=utf-8\r\n"
                                "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                                "Gr=C3=BC=C3=9Fe =3D greetings=20\r\nend\r\n"));
    assert_non_null(strstr(out, "Content-Type: text/html; charset=utf-8\r\n"));
    assert_non_null(strstr(out, "<p>Gr=C3=BC=C3=9Fe</p>\r\n"));
    /* The boundary closes. */
    const char *b = strstr(out, "boundary=\"") + 10;
    char boundary[64];
    size_t bl = (size_t)(strchr(b, '"') - b);
    memcpy(boundary, b, bl);
    boundary[bl] = '\0';
    char close[80];
    snprintf(close, sizeof close, "\r\n--%s--\r\n", boundary);
    assert_non_null(strstr(out, close));
    free(out);
}

/* A text that ends with its own line end gets no empty line more, in quoted-printable
 * as in 7bit (found by tests/fuzz/fuzz_api_mime.c); an empty text is one empty line. */
static void test_qp_final_line_end(void **state)
{
    (void)state;
    struct eng_api_mime m = { .from = "a@example.com", .subject = "s", .text = "Grüße\n" };
    char *out = build(&m);
    const char *qp = "Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n";
    const char *body = strstr(out, qp);
    assert_non_null(body);
    assert_string_equal(body + strlen(qp), ""); /* the body, then nothing */
    free(out);
    m.text = "Grüße";
    out = build(&m);
    body = strstr(out, qp);
    assert_non_null(body);
    assert_string_equal(body + strlen(qp), "");
    free(out);
}

static void test_long_lines(void **state)
{
    (void)state;
    char *text = malloc(3001);
    memset(text, 'x', 3000);
    text[3000] = '\0';
    struct eng_api_mime m = { .from = "a@example.com", .html = text };
    char *out = build(&m); /* build() checks the line lengths */
    assert_non_null(strstr(out, "Content-Transfer-Encoding: quoted-printable"));
    assert_non_null(strstr(out, "=\r\n"));
    free(out);
    /* A long ASCII subject is folded into encoded words. */
    memset(text, 's', 300);
    text[300] = '\0';
    struct eng_api_mime m2 = { .from = "a@example.com", .subject = text, .text = "t" };
    out = build(&m2);
    assert_non_null(strstr(out, "?=\r\n =?UTF-8?B?"));
    free(out);
    free(text);
}

static void test_headers(void **state)
{
    (void)state;
    const char *names[] = { "X-Campaign", "Subject", "Reply-To" };
    const char *values[] = { "spring ✿", "override", "r@example.org" };
    struct eng_api_mime m = { .from = "a@example.com",
                              .subject = "ignored",
                              .text = "t",
                              .hdr_names = names,
                              .hdr_values = values,
                              .nhdrs = 3 };
    char *out = build(&m);
    assert_non_null(strstr(out, "Subject: override\r\n"));
    assert_null(strstr(out, "ignored"));
    assert_non_null(strstr(out, "X-Campaign: =?UTF-8?B?"));
    assert_non_null(strstr(out, "Reply-To: r@example.org\r\n"));
    free(out);

    const char *why, *field;
    char *o;
    size_t l;
    const char *inj[] = { "x\r\nBcc: evil@example.com" };
    const char *nm[] = { "X-A" };
    m.hdr_names = nm;
    m.hdr_values = inj;
    m.nhdrs = 1;
    assert_int_equal(eng_api_mime_build(&m, &o, &l, &why, &field), -EINVAL);
    assert_string_equal(field, "headers");
    const char *ct[] = { "Content-Type" };
    const char *cv[] = { "text/evil" };
    m.hdr_names = ct;
    m.hdr_values = cv;
    assert_int_equal(eng_api_mime_build(&m, &o, &l, &why, &field), -EINVAL);
    m.nhdrs = 0;
    m.subject = "a\nb";
    assert_int_equal(eng_api_mime_build(&m, &o, &l, &why, &field), -EINVAL);
    assert_string_equal(field, "subject");
    m.subject = NULL;
    m.text = NULL;
    assert_int_equal(eng_api_mime_build(&m, &o, &l, &why, &field), -EINVAL);
    assert_string_equal(field, "text");
}

static void test_addresses(void **state)
{
    (void)state;
    const char *why;
    const char *good[] = { "a@example.com",
                           "first.last+tag@sub.example.co.uk",
                           "\"quoted local\"@example.com",
                           "x@localhost",
                           "o'brien@example.ie",
                           "a-b@ex-ample.com" };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (eng_api_addr_check(good[i], &why) < 0)
            fail_msg("%s: %s", good[i], why);
    }
    const char *bad[] = { "",
                          "noat",
                          "@example.com",
                          "a@",
                          "a..b@example.com",
                          ".a@example.com",
                          "a.@example.com",
                          "a b@example.com",
                          "a@exa_mple.com",
                          "a@-ex.com",
                          "a@ex-.com",
                          "a@ex..com",
                          "a@[192.0.2.1]",
                          "ü@example.com",
                          "a@exämple.com",
                          "\"unterminated@example.com",
                          "<a@example.com>" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (eng_api_addr_check(bad[i], &why) == 0)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(why);
    }
    char lp[80];
    memset(lp, 'l', 65);
    strcpy(lp + 65, "@example.com");
    assert_int_equal(eng_api_addr_check(lp, &why), -EINVAL);
    assert_non_null(strstr(why, "64"));
    char dom[300] = "a@";
    for (int i = 0; i < 5; i++)
        strcat(dom, "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghij.");
    strcat(dom, "com");
    assert_int_equal(eng_api_addr_check(dom, &why), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_only),  cmocka_unit_test(test_alternative_qp),
        cmocka_unit_test(test_long_lines), cmocka_unit_test(test_headers),
        cmocka_unit_test(test_addresses),  cmocka_unit_test(test_qp_final_line_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
