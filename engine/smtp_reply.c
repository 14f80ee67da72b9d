/*
 * engine/smtp_reply.c — the bounded, incremental SMTP reply parser and EHLO capability
 * parsing (see smtp_reply.h).
 *
 * The parser copies at most one line into its fixed buffer, so a receiver that never
 * sends CRLF costs SMTP_REPLY_LINE_MAX bytes and an error, not memory.
 */
#include "engine/smtp_reply.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    int code;
    const char *text;
} smtp_errors[] = {
#define SMTP_ERR_TEXT(name, code, text) { code, text },
    SMTP_ERRORS(SMTP_ERR_TEXT)
#undef SMTP_ERR_TEXT
};

const char *smtp_strerror(int err)
{
    for (size_t i = 0; i < sizeof(smtp_errors) / sizeof(smtp_errors[0]); i++)
        if (smtp_errors[i].code == err)
            return smtp_errors[i].text;
    return "unknown SMTP error";
}

void smtp_reply_reset(struct smtp_reply_parser *p, struct smtp_reply *r)
{
    p->line_len = 0;
    p->in_reply = false;
    p->saw_cr = false;
    r->code = 0;
    r->enhanced[0] = '\0';
    r->nlines = 0;
    r->text_truncated = false;
    r->text_len = 0;
    r->text[0] = '\0';
}

/* "x.y.z" with x = the reply class, 1-3 digit subject and detail (RFC 3463). Returns
 * its length, or 0 if s does not start with one. */
static size_t enhanced_code_len(const char *s, size_t n, int reply_class)
{
    if (n < 5 || s[0] != (char)('0' + reply_class) || s[1] != '.')
        return 0;
    size_t i = 2;
    for (int part = 0; part < 2; part++) {
        size_t start = i;
        while (i < n && isdigit((unsigned char)s[i]) && i - start < 3)
            i++;
        if (i == start)
            return 0;
        if (part == 0) {
            if (i >= n || s[i] != '.')
                return 0;
            i++;
        }
    }
    if (i < n && s[i] != ' ')
        return 0;
    return i;
}

static void append_text(struct smtp_reply *r, const char *s, size_t n)
{
    size_t room = sizeof(r->text) - 1 - r->text_len;
    if (r->nlines > 1 && room > 0) {
        r->text[r->text_len++] = '\n';
        room--;
    }
    if (n > room) {
        n = room;
        r->text_truncated = true;
    }
    memcpy(r->text + r->text_len, s, n);
    r->text_len += n;
    r->text[r->text_len] = '\0';
}

/* Takes one complete line (without its line ending). Returns 0 and sets *last when it
 * was the final line of the reply, or an error. */
static int take_line(struct smtp_reply *r, const char *line, size_t n, bool *last)
{
    if (n < 3 || !isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1]) ||
        !isdigit((unsigned char)line[2]))
        return SMTP_ERR_SYNTAX;
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (code < 200 || code > 599 || line[1] > '5')
        return SMTP_ERR_SYNTAX;
    if (n > 3 && line[3] != ' ' && line[3] != '-')
        return SMTP_ERR_SYNTAX;
    if (r->nlines > 0 && code != r->code)
        return SMTP_ERR_SYNTAX;
    if (r->nlines >= SMTP_REPLY_LINES_MAX)
        return SMTP_ERR_TOO_MANY_LINES;

    r->code = code;
    r->nlines++;
    *last = (n == 3 || line[3] == ' ');

    const char *text = n > 4 ? line + 4 : line + n;
    size_t text_n = n > 4 ? n - 4 : 0;
    if (r->nlines == 1) {
        size_t e = enhanced_code_len(text, text_n, code / 100);
        if (e > 0 && e < sizeof(r->enhanced)) {
            memcpy(r->enhanced, text, e);
            r->enhanced[e] = '\0';
        }
    }
    append_text(r, text, text_n);
    return 0;
}

int smtp_reply_parse(struct smtp_reply_parser *p, struct smtp_reply *r, const char *data,
                     size_t len, size_t *consumed, bool *complete)
{
    *complete = false;
    size_t i = 0;
    while (i < len) {
        char c = data[i++];
        if (c == '\n') {
            size_t n = p->line_len;
            if (n > 0 && p->line[n - 1] == '\r')
                n--;
            bool last = false;
            int rc = take_line(r, p->line, n, &last);
            p->line_len = 0;
            if (rc < 0) {
                *consumed = i;
                return rc;
            }
            if (last) {
                *complete = true;
                break;
            }
            p->in_reply = true;
            continue;
        }
        if (p->line_len >= sizeof(p->line)) {
            *consumed = i;
            return SMTP_ERR_LINE_TOO_LONG;
        }
        p->line[p->line_len++] = c;
    }
    *consumed = i;
    return 0;
}

static const struct {
    const char *name;
    enum smtp_ext bit;
} smtp_ext_names[] = {
    { "STARTTLS", SMTP_EXT_STARTTLS },
    { "PIPELINING", SMTP_EXT_PIPELINING },
    { "SIZE", SMTP_EXT_SIZE },
    { "8BITMIME", SMTP_EXT_8BITMIME },
    { "SMTPUTF8", SMTP_EXT_SMTPUTF8 },
    { "ENHANCEDSTATUSCODES", SMTP_EXT_ENHANCEDSTATUSCODES },
    { "CHUNKING", SMTP_EXT_CHUNKING },
    { "DSN", SMTP_EXT_DSN },
    { "REQUIRETLS", SMTP_EXT_REQUIRETLS },
};

static void caps_take_line(struct smtp_caps *caps, const char *s, size_t n)
{
    size_t kw = 0;
    while (kw < n && s[kw] != ' ')
        kw++;
    for (size_t i = 0; i < sizeof(smtp_ext_names) / sizeof(smtp_ext_names[0]); i++) {
        const char *name = smtp_ext_names[i].name;
        if (strlen(name) != kw || strncasecmp(s, name, kw) != 0)
            continue;
        caps->ext |= smtp_ext_names[i].bit;
        if (smtp_ext_names[i].bit == SMTP_EXT_SIZE && kw < n) {
            char num[24];
            size_t m = n - kw - 1;
            if (m >= sizeof(num))
                m = sizeof(num) - 1;
            memcpy(num, s + kw + 1, m);
            num[m] = '\0';
            char *end = NULL;
            unsigned long long v = strtoull(num, &end, 10);
            if (end != num)
                caps->size_max = v;
        }
        return;
    }
}

void smtp_caps_parse(const struct smtp_reply *r, struct smtp_caps *out)
{
    out->ext = 0;
    out->size_max = 0;
    const char *s = r->text;
    const char *end = r->text + r->text_len;
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    /* The first line is the server's name and greeting text, never a keyword. */
    while (nl != NULL) {
        s = nl + 1;
        nl = memchr(s, '\n', (size_t)(end - s));
        caps_take_line(out, s, (size_t)((nl ? nl : end) - s));
    }
}

char *smtp_caps_format(const struct smtp_caps *caps, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof(smtp_ext_names) / sizeof(smtp_ext_names[0]); i++) {
        if (!(caps->ext & smtp_ext_names[i].bit))
            continue;
        int w;
        if (smtp_ext_names[i].bit == SMTP_EXT_SIZE && caps->size_max > 0)
            w = snprintf(out + n, cap - n, "%sSIZE=%llu", n ? " " : "",
                         (unsigned long long)caps->size_max);
        else
            w = snprintf(out + n, cap - n, "%s%s", n ? " " : "", smtp_ext_names[i].name);
        if (w < 0 || (size_t)w >= cap - n)
            break;
        n += (size_t)w;
    }
    return out;
}

char *smtp_reply_summary(const struct smtp_reply *r, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%03d ", r->code);
    if (n < 0 || (size_t)n >= cap)
        return out;
    size_t o = (size_t)n;
    for (size_t i = 0; i < r->text_len && r->text[i] != '\n' && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)r->text[i];
        out[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[o] = '\0';
    return out;
}
