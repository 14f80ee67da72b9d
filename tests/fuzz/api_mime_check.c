/*
 * tests/fuzz/api_mime_check.c — what engine/api_mime.c promises, checked (for
 * tests/fuzz/fuzz_api_mime.c): a mailbox accepted by eng_api_addr_check is within the
 * RFC 5321 lengths and character sets; a message built by eng_api_mime_build is ASCII
 * with CRLF lines of at most 998 octets, one of each generated header, the user's
 * headers in their order with their values intact (RFC 2047 words decoded), the
 * boundary only where it delimits, and bodies (7bit or quoted-printable) that decode
 * back to the input. A miss aborts (fuzz_check).
 */
#define _GNU_SOURCE
#include "tests/fuzz/api_mime_check.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "tests/fuzz/fuzz.h"

#define LINE_MAX_ 998

bool fuzz_mime_has_8bit(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] >= 0x80)
            return true;
    return false;
}

void fuzz_mime_check_crlf(const char *p, size_t n)
{
    fuzz_check(n >= 2 && p[n - 2] == '\r' && p[n - 1] == '\n');
    for (const char *lf = memchr(p, '\n', n); lf;
         lf = memchr(lf + 1, '\n', n - (size_t)(lf + 1 - p)))
        fuzz_check(lf > p && lf[-1] == '\r');
}

static void check_addr(const char *a, int rc, const char *why)
{
    fuzz_check(rc == 0 || rc == -EINVAL);
    if (rc != 0) {
        fuzz_check(why != NULL && *why != '\0' && strlen(why) < 80);
        return;
    }
    fuzz_check(why == NULL);
    size_t n = strlen(a);
    fuzz_check(n <= QUEUE_ADDR_MAX);
    const char *at = strrchr(a, '@');
    fuzz_check(at != NULL && at - a >= 1 && at - a <= 64);
    for (size_t i = 0; i < n; i++)
        fuzz_check(a[i] >= 32 && a[i] <= 126);
    const char *d = at + 1;
    fuzz_check(strlen(d) >= 1 && strlen(d) <= QUEUE_DOMAIN_MAX);
    /* LDH labels of 1..63, no hyphen at either end. */
    for (const char *l = d; *l;) {
        size_t len = strcspn(l, ".");
        fuzz_check(len >= 1 && len <= 63 && l[0] != '-' && l[len - 1] != '-');
        for (size_t i = 0; i < len; i++)
            fuzz_check(isalnum((unsigned char)l[i]) || l[i] == '-');
        l += len;
        if (*l == '.') {
            l++;
            fuzz_check(*l != '\0');
        }
    }
    if (a[0] != '"') {
        for (const char *p = a; p < at; p++)
            fuzz_check(*p != ' ' && *p != '"' && *p != '(' && *p != '<' && *p != '@' &&
                       !(*p == '.' && (p == a || p + 1 == at || p[1] == '.')));
    }
}

bool fuzz_mime_addr_valid(const char *a)
{
    const char *why;
    int rc = eng_api_addr_check(a, &why);
    check_addr(a, rc, why);
    return rc == 0;
}

/* ---- MIME ----------------------------------------------------------------------------- */

static int b64_val(int c)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(b64, c) : NULL;
    return p ? (int)(p - b64) : -1;
}

/* Appends base64 text[0, n) decoded to out (room enough: n * 3 / 4). */
static size_t b64_decode(const char *t, size_t n, char *out)
{
    size_t o = 0;
    fuzz_check(n % 4 == 0);
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (t[i + k] == '=' && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            fuzz_check(pad == 0);
            v[k] = b64_val(t[i + k]);
            fuzz_check(v[k] >= 0);
        }
        unsigned w =
                (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
        char b[3] = { (char)(w >> 16), (char)(w >> 8), (char)w };
        for (int k = 0; k < 3 - pad; k++)
            out[o++] = b[k];
    }
    return o;
}

/* A header value v[0, n) as written: RFC 2047 words "=?UTF-8?B?..?=" folded with
 * CRLF SP, each at most 75 characters, that decode to expect. */
static void check_words(const char *v, size_t n, const char *expect)
{
    char *dec = malloc(n + 1);
    fuzz_check(dec != NULL);
    size_t o = 0, i = 0;
    while (i < n) {
        if (i > 0) {
            fuzz_check(n - i > 3 && memcmp(v + i, "\r\n ", 3) == 0);
            i += 3;
        }
        fuzz_check(n - i > 12 && memcmp(v + i, "=?UTF-8?B?", 10) == 0);
        const char *end = memmem(v + i + 10, n - i - 10, "?=", 2);
        fuzz_check(end != NULL);
        size_t wlen = (size_t)(end + 2 - (v + i));
        fuzz_check(wlen <= 75);
        o += b64_decode(v + i + 10, (size_t)(end - (v + i + 10)), dec + o);
        i += wlen;
    }
    fuzz_check(o == strlen(expect) && memcmp(dec, expect, o) == 0);
    free(dec);
}

/* The text as the body carries it: line ends CRLF (a CR alone stays), a final CRLF. */
static char *crlf_text(const char *s, size_t *len)
{
    size_t n = strlen(s);
    char *d = malloc(2 * n + 3);
    fuzz_check(d != NULL);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r' && s[i + 1] == '\n')
            continue;
        if (s[i] == '\n')
            d[j++] = '\r';
        d[j++] = s[i];
    }
    if (j < 2 || d[j - 2] != '\r' || d[j - 1] != '\n') {
        d[j++] = '\r';
        d[j++] = '\n';
    }
    *len = j;
    return d;
}

/* One text part: its headers, then 7bit or quoted-printable content that decodes back
 * to the text. p[0, n) is the part (headers, blank line, content). */
static void check_part(const char *p, size_t n, const char *subtype, const char *text)
{
    static const char qp_hdr[] = "utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n";
    static const char bit7_hdr[] = "us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n";
    char ct[64];
    size_t k = (size_t)snprintf(ct, sizeof(ct), "Content-Type: text/%s; charset=", subtype);
    fuzz_check(n > k && memcmp(p, ct, k) == 0);
    bool qp = n - k >= sizeof(qp_hdr) - 1 && memcmp(p + k, qp_hdr, sizeof(qp_hdr) - 1) == 0;
    if (qp) {
        k += sizeof(qp_hdr) - 1;
    } else {
        fuzz_check(n - k >= sizeof(bit7_hdr) - 1 &&
                   memcmp(p + k, bit7_hdr, sizeof(bit7_hdr) - 1) == 0);
        k += sizeof(bit7_hdr) - 1;
    }
    const char *c = p + k;
    size_t cn = n - k;
    size_t want_len;
    char *want = crlf_text(text, &want_len);
    if (!qp) {
        fuzz_check(cn == want_len && memcmp(c, want, cn) == 0);
        free(want);
        return;
    }
    /* Quoted-printable: lines of at most 76, no space or tab before a line end. */
    char *dec = malloc(cn + 1);
    fuzz_check(dec != NULL);
    size_t o = 0, col = 0;
    for (size_t i = 0; i < cn; i++) {
        char ch = c[i];
        if (ch == '\r') {
            fuzz_check(i + 1 < cn && c[i + 1] == '\n');
            fuzz_check(i == 0 || (c[i - 1] != ' ' && c[i - 1] != '\t'));
            dec[o++] = '\r';
            dec[o++] = '\n';
            i++;
            col = 0;
            continue;
        }
        fuzz_check(++col <= 76);
        if (ch == '=') {
            fuzz_check(i + 2 < cn);
            if (c[i + 1] == '\r') {
                fuzz_check(c[i + 2] == '\n');
                i += 2;
                col = 0;
                continue;
            }
            static const char hex[] = "0123456789ABCDEF";
            const char *h1 = memchr(hex, c[i + 1], 16), *h2 = memchr(hex, c[i + 2], 16);
            fuzz_check(h1 && h2 && c[i + 1] && c[i + 2]);
            dec[o++] = (char)((h1 - hex) << 4 | (h2 - hex));
            col += 2;
            fuzz_check(col <= 76);
            i += 2;
            continue;
        }
        fuzz_check((ch >= 33 && ch <= 126) || ch == ' ' || ch == '\t');
        dec[o++] = ch;
    }
    /* The encoder ends with CRLF even after a text's own last line end. */
    bool same = o == want_len && memcmp(dec, want, o) == 0;
    bool extra = o == want_len + 2 && memcmp(dec, want, want_len) == 0 &&
                 memcmp(dec + want_len, "\r\n", 2) == 0;
    fuzz_check(same || extra);
    free(dec);
    free(want);
}

static bool structured(const char *name)
{
    static const char *const names[] = { "From",       "To",          "Cc",         "Bcc",
                                         "Reply-To",   "Sender",      "Message-ID", "Date",
                                         "References", "In-Reply-To", "Return-Path" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(name, names[i]) == 0)
            return true;
    return false;
}

static const char *user_header(const struct eng_api_mime *m, const char *name)
{
    for (unsigned i = 0; i < m->nhdrs; i++)
        if (strcasecmp(m->hdr_names[i], name) == 0)
            return m->hdr_values[i];
    return NULL;
}

/* One header of the built message: its name and its value (folds included, the final
 * CRLF not). */
struct hline {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* Parses the header at out[pos] into *h; returns the offset after it. */
static size_t next_header(const char *out, size_t pos, size_t end, struct hline *h)
{
    fuzz_check(end - pos >= 2 && memcmp(out + pos, "\r\n", 2) != 0); /* not the blank line */
    const char *l = out + pos;
    const char *colon = memchr(l, ':', end - pos);
    fuzz_check(colon != NULL && colon > l && colon[1] == ' ');
    h->name = l;
    h->name_len = (size_t)(colon - l);
    for (size_t i = 0; i < h->name_len; i++)
        fuzz_check(l[i] >= 33 && l[i] <= 126);
    h->value = colon + 2;
    size_t i = (size_t)(h->value - out);
    for (;;) {
        const char *crlf = memmem(out + i, end - i, "\r\n", 2);
        fuzz_check(crlf != NULL);
        i = (size_t)(crlf - out) + 2;
        if (i < end && (out[i] == ' ' || out[i] == '\t'))
            continue; /* folded */
        h->value_len = (size_t)(crlf - h->value);
        return i;
    }
}

static bool hname_is(const struct hline *h, const char *name)
{
    return strlen(name) == h->name_len && strncasecmp(h->name, name, h->name_len) == 0;
}

static void check_value(const struct hline *h, const char *name, const char *v)
{
    fuzz_check(hname_is(h, name));
    if (!structured(name) &&
        (fuzz_mime_has_8bit(v, strlen(v)) || strlen(name) + 2 + strlen(v) > 78)) {
        check_words(h->value, h->value_len, v);
        return;
    }
    fuzz_check(h->value_len == strlen(v) && memcmp(h->value, v, h->value_len) == 0);
}

void fuzz_mime_check(const struct eng_api_mime *m, const char *out, size_t len)
{
    fuzz_check(out != NULL && strlen(out) == len);
    /* ASCII, CRLF lines of at most 998 octets. */
    size_t line = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)out[i];
        fuzz_check(c < 0x80);
        if (c == '\n') {
            fuzz_check(i > 0 && out[i - 1] == '\r');
            line = 0;
        } else if (c == '\r') {
            fuzz_check(i + 1 < len && out[i + 1] == '\n');
        } else {
            fuzz_check(++line <= LINE_MAX_);
        }
    }
    fuzz_mime_check_crlf(out, len);

    /* The headers, in their order: Date, Message-ID, From, To, Subject, the user's
     * others, MIME-Version, Content-Type (, Content-Transfer-Encoding). */
    struct hline h;
    size_t pos = next_header(out, 0, len, &h);
    const char *v;
    if ((v = user_header(m, "Date")))
        check_value(&h, "Date", v);
    else
        fuzz_check(hname_is(&h, "Date"));
    pos = next_header(out, pos, len, &h);
    if ((v = user_header(m, "Message-ID")))
        check_value(&h, "Message-ID", v);
    else
        fuzz_check(hname_is(&h, "Message-ID"));
    pos = next_header(out, pos, len, &h);
    check_value(&h, "From", (v = user_header(m, "From")) ? v : m->from);
    pos = next_header(out, pos, len, &h);
    if ((v = user_header(m, "To"))) {
        check_value(&h, "To", v);
        pos = next_header(out, pos, len, &h);
    } else if (m->nto > 0) {
        fuzz_check(hname_is(&h, "To"));
        pos = next_header(out, pos, len, &h);
    }
    if ((v = user_header(m, "Subject")) || (v = m->subject)) {
        check_value(&h, "Subject", v);
        pos = next_header(out, pos, len, &h);
    }
    for (unsigned i = 0; i < m->nhdrs; i++) {
        const char *n = m->hdr_names[i];
        if (!strcasecmp(n, "Date") || !strcasecmp(n, "Message-ID") || !strcasecmp(n, "From") ||
            !strcasecmp(n, "To") || !strcasecmp(n, "Subject"))
            continue;
        check_value(&h, n, m->hdr_values[i]);
        pos = next_header(out, pos, len, &h);
    }
    fuzz_check(hname_is(&h, "MIME-Version"));
    fuzz_check(h.value_len == 3 && memcmp(h.value, "1.0", 3) == 0);

    bool text = m->text && *m->text, html = m->html && *m->html;
    const char *body = out + pos;
    size_t blen = len - pos;
    if (!(text && html)) {
        check_part(body, blen, text ? "plain" : "html", text ? m->text : m->html);
        return;
    }
    /* multipart/alternative: the boundary delimits the two parts and nothing else. */
    static const char mp[] = "Content-Type: multipart/alternative; boundary=\"";
    fuzz_check(blen > sizeof(mp) && memcmp(body, mp, sizeof(mp) - 1) == 0);
    const char *b = body + sizeof(mp) - 1;
    const char *q = memchr(b, '"', blen - (sizeof(mp) - 1));
    fuzz_check(q != NULL && q - b > 4 && q - b < 64 && memcmp(b, "=_fm", 4) == 0);
    char delim[80];
    int dn = snprintf(delim, sizeof(delim), "\r\n--%.*s", (int)(q - b), b);
    const char *d1 = memmem(body, blen, delim, (size_t)dn);
    fuzz_check(d1 != NULL);
    const char *p1 = d1 + dn;
    fuzz_check(memcmp(p1, "\r\n", 2) == 0);
    p1 += 2;
    const char *d2 = memmem(p1, (size_t)(out + len - p1), delim, (size_t)dn);
    fuzz_check(d2 != NULL && memcmp(d2 + dn, "\r\n", 2) == 0);
    const char *p2 = d2 + dn + 2;
    const char *d3 = memmem(p2, (size_t)(out + len - p2), delim, (size_t)dn);
    fuzz_check(d3 != NULL && (size_t)(out + len - d3) == (size_t)dn + 4 &&
               memcmp(d3 + dn, "--\r\n", 4) == 0);
    check_part(p1, (size_t)(d2 - p1), "plain", m->text);
    check_part(p2, (size_t)(d3 - p2), "html", m->html);
}
