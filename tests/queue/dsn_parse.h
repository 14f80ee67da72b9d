/*
 * tests/queue/dsn_parse.h — a small RFC 5322 / MIME reader for tests/queue/test_dsn.c,
 * written for the test and sharing nothing with queue/dsn*.c: header blocks with
 * unfolding, multipart splitting on the declared boundary, the delivery-status groups,
 * and a byte-level wire check. Every malformation fails the running cmocka test.
 * Included by one test only (static functions).
 */
#ifndef FLOORMTA_TESTS_QUEUE_DSN_PARSE_H
#define FLOORMTA_TESTS_QUEUE_DSN_PARSE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "queue/queue.h"

#define DSN_PARSE_MTA "mx.esp.example" /* the reporting MTA the tests use */

struct field {
    char *name, *value; /* value unfolded (CRLF removed), outer whitespace trimmed */
};

struct fields {
    struct field f[64];
    int n;
};

struct part {
    struct fields hdr;
    const char *body;
    size_t len;
};

struct parsed {
    char *msg; /* the DSN as built, owned */
    size_t len;
    struct fields top;
    char boundary[128];
    struct part parts[4];
    int nparts;
    struct fields groups[16]; /* delivery-status: [0] per message, then per recipient */
    int ngroups;
    char *human; /* part 1 with its lines joined by spaces */
};

/* The next CRLF in p[0..n), or NULL. (Not memmem: ASan's interceptor checks the whole
 * range on every call, which made a line-by-line walk of 10 MiB quadratic.) */
static const char *find_crlf(const char *p, size_t n)
{
    for (const char *cr = memchr(p, '\r', n); cr;
         cr = memchr(cr + 1, '\r', n - (size_t)(cr + 1 - p)))
        if ((size_t)(cr + 1 - p) < n && cr[1] == '\n')
            return cr;
    return NULL;
}

static void fields_free(struct fields *fs)
{
    for (int i = 0; i < fs->n; i++) {
        free(fs->f[i].name);
        free(fs->f[i].value);
    }
    fs->n = 0;
}

static char *trimmed(const char *p, size_t n)
{
    while (n > 0 && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    return strndup(p, n);
}

/* Parses a header block at p[0..n); returns the offset after the empty line that ends it
 * (n if the block runs to the end). Fails on a line that is neither a field nor a
 * continuation. */
static size_t parse_fields(const char *p, size_t n, struct fields *out)
{
    size_t i = 0;
    out->n = 0;
    while (i < n) {
        const char *eol = find_crlf(p + i, n - i);
        size_t l = eol ? (size_t)(eol - (p + i)) : n - i;
        if (l == 0)
            return i + 2;
        if (p[i] == ' ' || p[i] == '\t') {
            assert_true(out->n > 0);
            struct field *f = &out->f[out->n - 1];
            char *line = strndup(p + i, l), *joined;
            assert_true(asprintf(&joined, "%s%s", f->value, line) > 0);
            free(line);
            free(f->value);
            f->value = trimmed(joined, strlen(joined));
            free(joined);
        } else {
            const char *colon = memchr(p + i, ':', l);
            assert_non_null(colon);
            for (const char *c = p + i; c < colon; c++)
                assert_true(*c > 32 && *c < 127);
            assert_true(colon > p + i);
            assert_true(out->n < 64);
            out->f[out->n].name = strndup(p + i, (size_t)(colon - (p + i)));
            out->f[out->n].value = trimmed(colon + 1, l - (size_t)(colon + 1 - (p + i)));
            out->n++;
        }
        i += l + (eol ? 2 : 0);
    }
    return n;
}

static const char *get(const struct fields *fs, const char *name)
{
    for (int i = 0; i < fs->n; i++)
        if (strcasecmp(fs->f[i].name, name) == 0)
            return fs->f[i].value;
    return NULL;
}

static int count(const struct fields *fs, const char *name)
{
    int c = 0;
    for (int i = 0; i < fs->n; i++)
        c += strcasecmp(fs->f[i].name, name) == 0;
    return c;
}

static void expect(const struct fields *fs, const char *name, const char *want)
{
    const char *v = get(fs, name);
    if (v == NULL)
        fail_msg("no %s field", name);
    assert_string_equal(v, want);
    assert_int_equal(count(fs, name), 1);
}

/* Where bytes >= 0x80 may be: a returned part declared 8bit, and the To: line of a DSN to
 * a UTF-8 sender (sent with SMTPUTF8, RFC 6532). */
static size_t utf8_from, utf8_to;

/* Every byte on the wire: no NUL, CR only before LF, LF only after CR, lines within 998
 * octets, bytes >= 0x80 only inside [e8_from, e8_to) or [utf8_from, utf8_to). */
static void check_wire(const char *m, size_t n, size_t e8_from, size_t e8_to)
{
    size_t line = 0;
    assert_true(n >= 2 && m[n - 2] == '\r' && m[n - 1] == '\n');
    for (size_t i = 0; i < n; i++) { /* plain ifs: this runs over 10 MiB under ASan */
        unsigned char c = (unsigned char)m[i];
        if (c == 0)
            fail_msg("NUL at offset %zu", i);
        if (c == '\r') {
            if (i + 1 >= n || m[i + 1] != '\n')
                fail_msg("bare CR at offset %zu", i);
        } else if (c == '\n') {
            if (i == 0 || m[i - 1] != '\r')
                fail_msg("bare LF at offset %zu", i);
            line = 0;
        } else {
            if (++line > 998)
                fail_msg("line over 998 octets at offset %zu", i);
            if (c >= 0x80 && (i < e8_from || i >= e8_to) && (i < utf8_from || i >= utf8_to))
                fail_msg("8-bit byte 0x%02x outside a part declared 8bit, offset %zu", c, i);
        }
    }
}

static void split_parts(struct parsed *p, size_t body_off)
{
    char delim[160];
    snprintf(delim, sizeof(delim), "--%s", p->boundary);
    size_t dl = strlen(delim), n = p->len;
    const char *m = p->msg;
    size_t start = 0; /* content start of the part being read, 0 = in the preamble */
    bool closed = false;
    int delims = 0;
    for (size_t i = body_off; i < n;) {
        const char *eol = find_crlf(m + i, n - i);
        assert_non_null(eol);
        size_t l = (size_t)(eol - (m + i));
        if (l >= dl && memcmp(m + i, delim, dl) == 0) {
            delims++;
            assert_false(closed);
            bool close = l == dl + 2 && memcmp(m + i + dl, "--", 2) == 0;
            assert_true(l == dl || close); /* nothing else may follow a boundary */
            if (start) {
                assert_true(p->nparts < 4);
                struct part *pt = &p->parts[p->nparts++];
                size_t end = i - 2; /* the CRLF before the delimiter is the delimiter's */
                size_t hdr = parse_fields(m + start, end - start, &pt->hdr);
                pt->body = m + start + hdr;
                pt->len = end - start - (hdr > end - start ? end - start : hdr);
            }
            start = i + l + 2;
            closed = close;
        }
        i += l + 2;
    }
    assert_true(closed);
    assert_int_equal(delims, p->nparts + 1);
    /* the close delimiter is the last line: no epilogue */
    assert_true(n >= dl + 4 && memcmp(m + n - dl - 4, delim, dl) == 0);
}

static void parse_status(struct parsed *p)
{
    const struct part *st = &p->parts[1];
    size_t i = 0;
    while (i < st->len) {
        assert_true(p->ngroups < 16);
        i += parse_fields(st->body + i, st->len - i, &p->groups[p->ngroups++]);
    }
}

static char *join_lines(const char *b, size_t n)
{
    char *s = malloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (b[i] == '\r')
            continue;
        s[o++] = b[i] == '\n' ? ' ' : b[i];
    }
    s[o] = '\0';
    /* collapse the indent of wrapped lines */
    char *w = s;
    for (char *r = s; *r; r++)
        if (!(*r == ' ' && w > s && w[-1] == ' '))
            *w++ = *r;
    *w = '\0';
    return s;
}

static void assert_date(const char *v)
{
    regex_t re;
    assert_int_equal(regcomp(&re,
                             "^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
                             "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
                             "[0-9]{2}:[0-9]{2}:[0-9]{2} \\+0000$",
                             REG_EXTENDED | REG_NOSUB),
                     0);
    int rc = regexec(&re, v, 0, NULL, 0);
    regfree(&re);
    if (rc != 0)
        fail_msg("not an RFC 5322 date: \"%s\"", v);
}

/* Parses and checks everything every DSN must have. */
static void parse(struct parsed *p, void *msg, size_t len, enum queue_dsn_action action,
                  bool smtputf8)
{
    memset(p, 0, sizeof(*p));
    p->msg = msg;
    p->len = len;
    size_t body = parse_fields(p->msg, len, &p->top);
    assert_true(body < len);
    utf8_from = utf8_to = 0;
    const char *tl = memmem(p->msg, body, "\r\nTo: ", 6);
    if (smtputf8 && tl) {
        utf8_from = (size_t)(tl - p->msg);
        utf8_to = (size_t)(find_crlf(tl + 2, body - (size_t)(tl + 2 - p->msg)) - p->msg);
    }

    expect(&p->top, "From", "\"Mail Delivery System\" <MAILER-DAEMON@" DSN_PARSE_MTA ">");
    expect(&p->top, "Subject",
           action == QUEUE_DSN_FAILED ? "Undelivered Mail Returned to Sender"
                                      : "Delayed Mail (still being retried)");
    expect(&p->top, "Auto-Submitted", "auto-replied");
    expect(&p->top, "MIME-Version", "1.0");
    assert_int_equal(count(&p->top, "To"), 1);
    assert_int_equal(count(&p->top, "Date"), 1);
    assert_date(get(&p->top, "Date"));
    const char *mid = get(&p->top, "Message-ID");
    assert_non_null(mid);
    assert_true(mid[0] == '<' && strstr(mid, "@" DSN_PARSE_MTA ">") && mid[strlen(mid) - 1] == '>');
    assert_null(strchr(mid + 1, '<'));

    const char *ct = get(&p->top, "Content-Type");
    assert_non_null(ct);
    assert_int_equal(strncasecmp(ct, "multipart/report;", 17), 0);
    assert_non_null(strstr(ct, "report-type=delivery-status"));
    const char *b = strstr(ct, "boundary=\"");
    assert_non_null(b);
    b += 10;
    const char *e = strchr(b, '"');
    assert_non_null(e);
    assert_true(e - b > 0 && e - b <= 70);
    snprintf(p->boundary, sizeof(p->boundary), "%.*s", (int)(e - b), b);

    split_parts(p, body);
    assert_true(p->nparts == 2 || p->nparts == 3);
    expect(&p->parts[0].hdr, "Content-Type", "text/plain; charset=us-ascii");
    expect(&p->parts[1].hdr, "Content-Type", "message/delivery-status");
    parse_status(p);
    assert_true(p->ngroups >= 2);
    expect(&p->groups[0], "Reporting-MTA", "dns; " DSN_PARSE_MTA);
    p->human = join_lines(p->parts[0].body, p->parts[0].len);

    /* 8-bit only inside a third part declared 8bit, and then the top level says so */
    size_t from = 0, to = 0;
    const char *cte = get(&p->top, "Content-Transfer-Encoding");
    if (p->nparts == 3 && get(&p->parts[2].hdr, "Content-Transfer-Encoding") &&
        strcasecmp(get(&p->parts[2].hdr, "Content-Transfer-Encoding"), "8bit") == 0) {
        assert_non_null(cte);
        assert_string_equal(cte, "8bit");
        from = (size_t)(p->parts[2].body - p->msg);
        to = from + p->parts[2].len;
    } else if (cte) {
        assert_string_equal(cte, "7bit");
    }
    check_wire(p->msg, p->len, from, to);
}

static void parsed_free(struct parsed *p)
{
    fields_free(&p->top);
    for (int i = 0; i < p->nparts; i++)
        fields_free(&p->parts[i].hdr);
    for (int i = 0; i < p->ngroups; i++)
        fields_free(&p->groups[i]);
    free(p->human);
    free(p->msg);
}

#endif /* FLOORMTA_TESTS_QUEUE_DSN_PARSE_H */
