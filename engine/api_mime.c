/*
 * engine/api_mime.c — assembling a MIME message from subject/text/html parts, and the
 * RFC 5321 mailbox check the API applies to envelope addresses (see api.h).
 *
 * Bodies are 7bit when they can be (ASCII, lines under 998 octets, no boundary
 * lookalike) and quoted-printable otherwise: readable in the spool and on the wire,
 * and never 8bit, so the message needs no 8BITMIME from the receiver. Headers with
 * non-ASCII (or too long to stay on one line) become RFC 2047 "B" encoded words,
 * which never split a UTF-8 sequence.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "engine/api.h"

#define MIME_BOUNDARY_PREFIX "=_fm"
#define MIME_LINE_MAX        998
#define MIME_QP_LINE         76

/* ---- addresses ------------------------------------------------------------------------ */

static bool is_atext(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

static bool is_letdig(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Dot-string or Quoted-string, [p, end). */
static int local_check(const char *p, const char *end, const char **why)
{
    if (p == end) {
        *why = "empty local part";
        return -EINVAL;
    }
    if (end - p > 64) {
        *why = "local part longer than 64 octets";
        return -EINVAL;
    }
    if (*p == '"') {
        if (end - p < 2 || end[-1] != '"') {
            *why = "unterminated quoted local part";
            return -EINVAL;
        }
        for (const char *q = p + 1; q < end - 1; q++) {
            unsigned char c = (unsigned char)*q;
            if (c == '\\') {
                q++;
                if (q >= end - 1 || (unsigned char)*q < 32 || (unsigned char)*q > 126) {
                    *why = "bad quoted pair in local part";
                    return -EINVAL;
                }
            } else if (c < 32 || c > 126 || c == '"') {
                *why = "bad character in quoted local part";
                return -EINVAL;
            }
        }
        return 0;
    }
    bool dot_ok = false;
    for (const char *q = p; q < end; q++) {
        if (*q == '.') {
            if (!dot_ok) {
                *why = "empty atom in local part (leading or double dot)";
                return -EINVAL;
            }
            dot_ok = false;
        } else if (is_atext((unsigned char)*q)) {
            dot_ok = true;
        } else {
            *why = (unsigned char)*q >= 0x80 ? "non-ASCII local part (SMTPUTF8 not accepted)"
                                             : "bad character in local part";
            return -EINVAL;
        }
    }
    if (!dot_ok) {
        *why = "local part ends with a dot";
        return -EINVAL;
    }
    return 0;
}

static int domain_check(const char *p, const char **why)
{
    size_t n = strlen(p);
    if (n == 0) {
        *why = "empty domain";
        return -EINVAL;
    }
    if (*p == '[') {
        *why = "address literals are not accepted";
        return -EINVAL;
    }
    if (n > QUEUE_DOMAIN_MAX) {
        *why = "domain too long";
        return -EINVAL;
    }
    size_t label = 0;
    for (size_t i = 0; i <= n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || p[i - 1] == '-') {
                *why = "bad domain label (empty, or ends with a hyphen)";
                return -EINVAL;
            }
            label = 0;
            continue;
        }
        if (!is_letdig(c) && !(c == '-' && label > 0)) {
            *why = c >= 0x80 ? "non-ASCII domain (use its A-label)" : "bad character in domain";
            return -EINVAL;
        }
        if (++label > 63) {
            *why = "domain label longer than 63 octets";
            return -EINVAL;
        }
    }
    return 0;
}

int eng_api_addr_check(const char *addr, const char **why)
{
    *why = NULL;
    if (!addr || !*addr) {
        *why = "empty address";
        return -EINVAL;
    }
    if (strlen(addr) > QUEUE_ADDR_MAX) {
        *why = "address too long";
        return -EINVAL;
    }
    const char *at = strrchr(addr, '@');
    if (!at) {
        *why = "no @ in address";
        return -EINVAL;
    }
    int rc = local_check(addr, at, why);
    return rc < 0 ? rc : domain_check(at + 1, why);
}

/* ---- encodings -------------------------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void put_b64(FILE *f, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        fputc(b64[(v >> 18) & 63], f);
        fputc(b64[(v >> 12) & 63], f);
        fputc(i + 1 < n ? b64[(v >> 6) & 63] : '=', f);
        fputc(i + 2 < n ? b64[v & 63] : '=', f);
    }
}

static bool has_8bit(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return true;
    return false;
}

/* A header value as one or more "=?UTF-8?B?...?=" words, folded between words. Each
 * word carries at most 45 octets (60 base64 chars, 72 with the wrapper), cut at a
 * UTF-8 sequence start. */
static void put_encoded_words(FILE *f, const char *v)
{
    const unsigned char *p = (const unsigned char *)v;
    size_t n = strlen(v);
    bool first = true;
    while (n > 0) {
        size_t take = n < 45 ? n : 45;
        while (take < n && take > 1 && (p[take] & 0xC0) == 0x80)
            take--;
        fputs(first ? "=?UTF-8?B?" : "\r\n =?UTF-8?B?", f);
        put_b64(f, p, take);
        fputs("?=", f);
        p += take;
        n -= take;
        first = false;
    }
}

/* Headers whose values have structure (addresses, ids, dates): encoded words are not
 * allowed there (RFC 2047 5), so they are written as given and must be ASCII. */
static bool header_structured(const char *name)
{
    static const char *const names[] = { "From",       "To",          "Cc",         "Bcc",
                                         "Reply-To",   "Sender",      "Message-ID", "Date",
                                         "References", "In-Reply-To", "Return-Path" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(name, names[i]) == 0)
            return true;
    return false;
}

/* "Name: value\r\n", encoding an unstructured value when it is not plain short ASCII. */
static void put_header(FILE *f, const char *name, const char *value)
{
    fprintf(f, "%s: ", name);
    if (!header_structured(name) && (has_8bit(value) || strlen(name) + 2 + strlen(value) > 78))
        put_encoded_words(f, value);
    else
        fputs(value, f);
    fputs("\r\n", f);
}

/* Whether a body can go as 7bit: ASCII, no NUL or bare CR, lines within 998 octets, and
 * nothing that could be taken for our boundary. */
static bool body_7bit(const char *s)
{
    size_t line = 0;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x80 || (c == '\r' && p[1] != '\n'))
            return false;
        if (c == '\n')
            line = 0;
        else if (++line > MIME_LINE_MAX)
            return false;
    }
    return !strstr(s, MIME_BOUNDARY_PREFIX);
}

/* Writes s with every line end (LF or CRLF) as CRLF, and a final CRLF. */
static void put_crlf(FILE *f, const char *s)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\r' && p[1] == '\n')
            continue;
        if (*p == '\n')
            fputc('\r', f);
        fputc(*p, f);
    }
    size_t n = strlen(s);
    if (n == 0 || s[n - 1] != '\n')
        fputs("\r\n", f);
}

/* Quoted-printable (RFC 2045 6.7): line ends become CRLF, lines are soft-broken at 76,
 * a space or tab before a line end is encoded, and the text ends with a line end. */
static void put_qp(FILE *f, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t col = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        if (c == '\r' && p[1] == '\n')
            continue;
        if (c == '\n') {
            fputs("\r\n", f);
            col = 0;
            continue;
        }
        bool at_eol = p[1] == '\0' || p[1] == '\n' || (p[1] == '\r' && p[2] == '\n');
        bool enc = c == '=' || c < 32 || c > 126 || ((c == ' ' || c == '\t') && at_eol);
        if (c == '\t' && !at_eol)
            enc = false;
        size_t w = enc ? 3 : 1;
        if (col + w > MIME_QP_LINE - 1) {
            fputs("=\r\n", f);
            col = 0;
        }
        if (enc)
            fprintf(f, "=%c%c", hex[c >> 4], hex[c & 15]);
        else
            fputc(c, f);
        col += w;
    }
    /* Ends the last line, as put_crlf does: a text that ended with its own line end
     * gets no empty line more (col is 0 only after a line end, or for an empty text). */
    if (col > 0 || *s == '\0')
        fputs("\r\n", f);
}

static void put_part(FILE *f, const char *subtype, const char *body)
{
    bool plain = body_7bit(body);
    fprintf(f, "Content-Type: text/%s; charset=%s\r\n", subtype, plain ? "us-ascii" : "utf-8");
    fprintf(f, "Content-Transfer-Encoding: %s\r\n\r\n", plain ? "7bit" : "quoted-printable");
    if (plain)
        put_crlf(f, body);
    else
        put_qp(f, body);
}

/* ---- the message -------------------------------------------------------------------------- */

static bool header_name_ok(const char *n)
{
    if (!*n || strlen(n) > 76)
        return false;
    for (; *n; n++)
        if ((unsigned char)*n < 33 || (unsigned char)*n > 126 || *n == ':')
            return false;
    return true;
}

static bool header_value_ok(const char *v)
{
    for (; *v; v++)
        if (*v == '\r' || *v == '\n' || *v == '\0')
            return false;
    return true;
}

static const char *user_header(const struct eng_api_mime *m, const char *name)
{
    for (unsigned i = 0; i < m->nhdrs; i++)
        if (strcasecmp(m->hdr_names[i], name) == 0)
            return m->hdr_values[i];
    return NULL;
}

static int check_input(const struct eng_api_mime *m, const char **why, const char **field)
{
    if (!m->from || !*m->from) {
        *why = "no From address";
        *field = "from";
        return -EINVAL;
    }
    if ((!m->text || !*m->text) && (!m->html || !*m->html)) {
        *why = "need text, html or raw content";
        *field = "text";
        return -EINVAL;
    }
    if (m->subject && !header_value_ok(m->subject)) {
        *why = "line break in subject";
        *field = "subject";
        return -EINVAL;
    }
    *field = "headers";
    for (unsigned i = 0; i < m->nhdrs; i++) {
        const char *n = m->hdr_names[i];
        if (!header_name_ok(n)) {
            *why = "bad header name";
            return -EINVAL;
        }
        if (!header_value_ok(m->hdr_values[i])) {
            *why = "line break in a header value";
            return -EINVAL;
        }
        if (header_structured(n) &&
            (has_8bit(m->hdr_values[i]) || strlen(m->hdr_values[i]) > MIME_LINE_MAX - 80)) {
            *why = "address, id and date headers must be ASCII and short";
            return -EINVAL;
        }
        if (strncasecmp(n, "Content-", 8) == 0 || strcasecmp(n, "MIME-Version") == 0) {
            *why = "MIME structure headers are set by floormta";
            return -EINVAL;
        }
    }
    return 0;
}

int eng_api_mime_build(const struct eng_api_mime *m, char **out, size_t *len, const char **why,
                       const char **field)
{
    *why = NULL;
    *field = NULL;
    int rc = check_input(m, why, field);
    if (rc < 0)
        return rc;
    *field = NULL;
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return -ENOMEM;

    const char *host = m->hostname ? m->hostname : "localhost";
    time_t now = m->now ? (time_t)m->now : time(NULL);
    uint64_t rnd[2] = { 0, 0 };
    if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd)
        rnd[0] ^= (uint64_t)now * 0x9e3779b97f4a7c15ull;

    const char *v;
    if ((v = user_header(m, "Date")))
        put_header(f, "Date", v);
    else {
        struct tm tm;
        char date[64];
        gmtime_r(&now, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
        fprintf(f, "Date: %s\r\n", date);
    }
    if ((v = user_header(m, "Message-ID")))
        put_header(f, "Message-ID", v);
    else
        fprintf(f, "Message-ID: <%llx.%016llx@%s>\r\n", (unsigned long long)now,
                (unsigned long long)rnd[0], host);
    put_header(f, "From", (v = user_header(m, "From")) ? v : m->from);
    if ((v = user_header(m, "To")))
        put_header(f, "To", v);
    else if (m->nto > 0) {
        /* One address per line: a long recipient list stays within the line limits. */
        fputs("To: ", f);
        for (unsigned i = 0; i < m->nto; i++)
            fprintf(f, "%s%s", m->to[i], i + 1 < m->nto ? ",\r\n " : "\r\n");
    }
    if ((v = user_header(m, "Subject")) || (v = m->subject))
        put_header(f, "Subject", v);
    for (unsigned i = 0; i < m->nhdrs; i++) {
        const char *hn = m->hdr_names[i];
        if (strcasecmp(hn, "Date") && strcasecmp(hn, "Message-ID") && strcasecmp(hn, "From") &&
            strcasecmp(hn, "To") && strcasecmp(hn, "Subject"))
            put_header(f, hn, m->hdr_values[i]);
    }
    fputs("MIME-Version: 1.0\r\n", f);

    bool text = m->text && *m->text, html = m->html && *m->html;
    if (text && html) {
        char boundary[64];
        snprintf(boundary, sizeof boundary, MIME_BOUNDARY_PREFIX "%016llx",
                 (unsigned long long)rnd[1]);
        fprintf(f, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n", boundary);
        fputs("This is a multi-part message in MIME format.\r\n", f);
        fprintf(f, "\r\n--%s\r\n", boundary);
        put_part(f, "plain", m->text);
        fprintf(f, "\r\n--%s\r\n", boundary);
        put_part(f, "html", m->html);
        fprintf(f, "\r\n--%s--\r\n", boundary);
    } else {
        put_part(f, text ? "plain" : "html", text ? m->text : m->html);
    }
    if (ferror(f)) {
        fclose(f);
        free(buf);
        return -ENOMEM;
    }
    if (fclose(f) != 0) {
        free(buf);
        return -ENOMEM;
    }
    *out = buf;
    *len = n;
    return 0;
}
