/*
 * queue/dsn_text.c — the DSN composer's output buffer and 7-bit text helpers: cleaning
 * remote text into one printable line, folding header fields, wrapping paragraphs,
 * RFC 5322 dates and RFC 6533 address encoding.
 *
 * Why clean rather than quote: a reply text or TLS evidence comes from the remote side
 * and ends up inside header-like fields (Diagnostic-Code) and a text/plain part. Turning
 * every CR, LF and control byte into a space or '?' means no input can end a field, start
 * a new one, or start a boundary line; the DSN stays 7-bit without any encoding to undo.
 */
#include "queue/dsn_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- buffer ----------------------------------------------------------------------------- */

static bool buf_grow(struct queue_dsn_buf *b, size_t n)
{
    if (b->oom)
        return false;
    if (n <= b->cap - b->len)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n) {
        if (cap > SIZE_MAX / 2) {
            b->oom = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void queue_dsn_buf_put(struct queue_dsn_buf *b, const void *data, size_t n)
{
    if (n == 0 || !buf_grow(b, n))
        return;
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

void queue_dsn_buf_puts(struct queue_dsn_buf *b, const char *s)
{
    queue_dsn_buf_put(b, s, strlen(s));
}

void queue_dsn_buf_printf(struct queue_dsn_buf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n < sizeof(small)) {
        queue_dsn_buf_put(b, small, (size_t)n);
        return;
    }
    if (!buf_grow(b, (size_t)n + 1))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void queue_dsn_buf_free(struct queue_dsn_buf *b)
{
    free(b->p);
    *b = (struct queue_dsn_buf){ 0 };
}

/* ---- text ------------------------------------------------------------------------------- */

static bool is_wsp(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

size_t queue_dsn_clean(const char *in, size_t cap, char *out)
{
    size_t n = in ? strnlen(in, cap) : 0, o = 0;
    bool space = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (is_wsp(c)) {
            space = o > 0;
            continue;
        }
        if (space)
            out[o++] = ' '; /* replaces at least one input byte: o stays <= i */
        space = false;
        out[o++] = c > 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[o] = '\0';
    return o;
}

bool queue_dsn_is_printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

void queue_dsn_fold(struct queue_dsn_buf *b, const char *name, const char *value)
{
    queue_dsn_buf_puts(b, name);
    queue_dsn_buf_puts(b, ": ");
    size_t col = strlen(name) + 2;
    bool first = true;
    const char *p = value;
    for (;;) {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        size_t w = strcspn(p, " ");
        if (!first && col + 1 + w > QUEUE_DSN_FOLD_AT) {
            queue_dsn_buf_puts(b, "\r\n ");
            col = 1;
        } else if (!first) {
            queue_dsn_buf_puts(b, " ");
            col++;
        }
        first = false;
        while (w > 0) { /* a word longer than a line is split: never over 998 */
            if (col >= QUEUE_DSN_LINE_MAX) {
                queue_dsn_buf_puts(b, "\r\n ");
                col = 1;
            }
            size_t k = QUEUE_DSN_LINE_MAX - col;
            if (k > w)
                k = w;
            queue_dsn_buf_put(b, p, k);
            col += k;
            p += k;
            w -= k;
        }
    }
    queue_dsn_buf_puts(b, "\r\n");
}

void queue_dsn_wrap(struct queue_dsn_buf *b, const char *indent, const char *text)
{
    size_t ind = strlen(indent), col = 0;
    bool open = false;
    const char *p = text;
    for (;;) {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        size_t w = strcspn(p, " ");
        if (open && col + 1 + w <= QUEUE_DSN_WRAP_AT) {
            queue_dsn_buf_puts(b, " ");
            col++;
        } else if (open) {
            queue_dsn_buf_puts(b, "\r\n");
            open = false;
        }
        while (w > 0) {
            if (!open) {
                queue_dsn_buf_puts(b, indent);
                col = ind;
                open = true;
            }
            size_t room = QUEUE_DSN_WRAP_AT > col ? QUEUE_DSN_WRAP_AT - col : 0;
            if (room == 0 && col > ind) {
                queue_dsn_buf_puts(b, "\r\n");
                open = false;
                continue;
            }
            if (room < 16)
                room = 16; /* an indent as long as the line: still progress */
            size_t k = w < room ? w : room;
            queue_dsn_buf_put(b, p, k);
            col += k;
            p += k;
            w -= k;
        }
    }
    if (open)
        queue_dsn_buf_puts(b, "\r\n");
}

char *queue_dsn_date(int64_t t, char out[64])
{
    static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    if (t < 0)
        t = 0;
    if (t > 253402300799) /* 9999-12-31T23:59:59Z: four-digit years */
        t = 253402300799;
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL)
        tm = (struct tm){ .tm_mday = 1, .tm_year = 70, .tm_wday = 4 };
    /* formatted into room the compiler can prove (it cannot bound the %s names) */
    char tmp[128];
    snprintf(tmp, sizeof(tmp), "%s, %02u %s %04u %02u:%02u:%02u +0000",
             days[(unsigned)tm.tm_wday % 7u], (unsigned)tm.tm_mday % 32u,
             months[(unsigned)tm.tm_mon % 12u], (unsigned)(tm.tm_year + 1900) % 10000u,
             (unsigned)tm.tm_hour % 24u, (unsigned)tm.tm_min % 60u, (unsigned)tm.tm_sec % 61u);
    memcpy(out, tmp, 64);
    out[63] = '\0';
    return out;
}

static int unit(char *out, size_t cap, const char *sep, long long n, const char *name)
{
    return snprintf(out, cap, "%s%lld %s%s", sep, n, name, n == 1 ? "" : "s");
}

char *queue_dsn_duration(int64_t s, char out[64])
{
    if (s < 0)
        s = 0;
    long long d = s / 86400, h = s % 86400 / 3600, m = s % 3600 / 60;
    int n;
    if (d > 0) {
        n = unit(out, 64, "", d, "day");
        if (h > 0)
            unit(out + n, 64 - (size_t)n, " ", h, "hour");
    } else if (h > 0) {
        n = unit(out, 64, "", h, "hour");
        if (m > 0)
            unit(out + n, 64 - (size_t)n, " ", m, "minute");
    } else if (m > 0) {
        unit(out, 64, "", m, "minute");
    } else {
        unit(out, 64, "", (long long)s, "second");
    }
    return out;
}

/* One UTF-8 sequence at s[0..n): its code point and length, or U+FFFD and 1 for an
 * invalid, overlong or surrogate sequence. */
static unsigned utf8_next(const unsigned char *s, size_t n, size_t *used)
{
    unsigned c = s[0], cp, len, min;
    if (c < 0x80) {
        *used = 1;
        return c;
    }
    if ((c & 0xe0) == 0xc0)
        cp = c & 0x1f, len = 2, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
        cp = c & 0x0f, len = 3, min = 0x800;
    else if ((c & 0xf8) == 0xf0)
        cp = c & 0x07, len = 4, min = 0x10000;
    else
        goto bad;
    if (len > n)
        goto bad;
    for (unsigned i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            goto bad;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        goto bad;
    *used = len;
    return cp;
bad:
    *used = 1;
    return 0xfffd;
}

void queue_dsn_addr(struct queue_dsn_buf *b, const char *type, const char *addr, size_t cap)
{
    size_t n = strnlen(addr, cap);
    bool plain = n > 0;
    for (size_t i = 0; i < n && plain; i++)
        plain = (unsigned char)addr[i] > 0x20 && (unsigned char)addr[i] < 0x7f;
    if (plain) {
        if (type)
            queue_dsn_buf_printf(b, "%s; ", type);
        queue_dsn_buf_put(b, addr, n);
        return;
    }
    if (type)
        queue_dsn_buf_puts(b, "utf-8; ");
    const unsigned char *s = (const unsigned char *)addr;
    for (size_t i = 0; i < n;) {
        size_t used;
        unsigned cp = utf8_next(s + i, n - i, &used);
        i += used;
        if (cp > 0x20 && cp < 0x7f && cp != '\\' && cp != '+' && cp != '=')
            queue_dsn_buf_put(b, &(char){ (char)cp }, 1);
        else
            queue_dsn_buf_printf(b, "\\x{%02X}", cp);
    }
}
