/*
 * queue/dsn_content.c — what a DSN returns of the original message (RFC 3462 part 3):
 * the whole message (RET=FULL) or its header section (RET=HDRS, or no RET).
 *
 * The whole message goes out as message/rfc822 only if it is valid 8bit MIME as it is:
 * no NUL, no bare CR, no line over 998 octets. LF-only line ends are the one repair made
 * (each becomes CRLF, which changes nothing a reader sees); anything else would need
 * BINARYMIME or a re-encoding that changes the bytes, so such a message, and one over
 * max_return_bytes, is returned as headers only. Bytes >= 0x80 are kept and declared
 * (Content-Transfer-Encoding: 8bit, the DSN sent with BODY=8BITMIME): re-encoding the
 * body of a message/rfc822 part is not allowed (RFC 2046 5.2.1), and the sender of
 * 8-bit mail asked for 8BITMIME itself.
 */
#include "queue/dsn_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct scan {
    bool clean;     /* valid as 8bit MIME once LF-only ends are fixed */
    bool eightbit;  /* a byte >= 0x80 */
    size_t bare_lf; /* LFs without a CR before them */
};

static void scan_full(const unsigned char *c, size_t n, struct scan *s)
{
    size_t line = 0;
    *s = (struct scan){ .clean = true };
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = c[i];
        if (ch == '\n') {
            if (i == 0 || c[i - 1] != '\r')
                s->bare_lf++;
            line = 0;
        } else if (ch == '\r') {
            if (i + 1 >= n || c[i + 1] != '\n')
                s->clean = false; /* bare CR */
        } else if (ch == '\0' || ++line > QUEUE_DSN_LINE_MAX) {
            s->clean = false;
        } else if (ch >= 0x80) {
            s->eightbit = true;
        }
    }
}

static bool any_8bit(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] >= 0x80)
            return true;
    return false;
}

/* The whole message with every bare LF made CRLF. */
static int full_normalised(const char *c, size_t n, size_t bare_lf, struct queue_dsn_returned *r)
{
    char *o = malloc(n + bare_lf);
    if (o == NULL)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (c[i] == '\n' && (i == 0 || c[i - 1] != '\r'))
            o[k++] = '\r';
        o[k++] = c[i];
    }
    r->own = o;
    r->data = o;
    r->len = k;
    return 0;
}

/* The header section: lines up to the first empty one (a line of only CR and NUL
 * counts as empty), CR and NUL dropped, each line ended with CRLF, a line over 998
 * octets folded (CRLF SP), at most QUEUE_DSN_HEADERS_MAX bytes, cut at a line. */
static int headers_section(const char *c, size_t n, struct queue_dsn_returned *r)
{
    struct queue_dsn_buf b = { 0 };
    size_t i = 0;
    while (i < n) {
        size_t end = i, keep = 0;
        while (end < n && c[end] != '\n') {
            if (c[end] != '\r' && c[end] != '\0')
                keep++;
            end++;
        }
        if (keep == 0)
            break; /* the empty line: the body starts */
        if (b.len + keep + 3 * (keep / (QUEUE_DSN_LINE_MAX - 1)) + 2 > QUEUE_DSN_HEADERS_MAX) {
            r->headers_cut = true;
            break;
        }
        size_t col = 0;
        for (size_t j = i; j < end; j++) {
            if (c[j] == '\r' || c[j] == '\0')
                continue;
            if (col == QUEUE_DSN_LINE_MAX) {
                queue_dsn_buf_put(&b, "\r\n ", 3);
                col = 1;
            }
            queue_dsn_buf_put(&b, &c[j], 1);
            col++;
        }
        queue_dsn_buf_put(&b, "\r\n", 2);
        i = end < n ? end + 1 : n;
    }
    if (b.oom) {
        queue_dsn_buf_free(&b);
        return -ENOMEM;
    }
    r->own = b.p; /* NULL when the section is empty */
    r->data = b.p ? b.p : "";
    r->len = b.len;
    return 0;
}

int queue_dsn_returned_make(const struct queue_dsn_input *in, struct queue_dsn_returned *r)
{
    *r = (struct queue_dsn_returned){ .how = QUEUE_DSN_RETURN_NONE, .data = "" };
    if (in->content == NULL || in->content_len == 0)
        return 0;
    const char *c = in->content;
    size_t n = in->content_len;
    uint64_t max = in->max_return_bytes ? in->max_return_bytes : QUEUE_DSN_RETURN_DEFAULT;

    r->how = QUEUE_DSN_RETURN_HEADERS;
    if (in->env->ret == QUEUE_RET_FULL && (uint64_t)n > max) {
        r->how = QUEUE_DSN_RETURN_TOO_BIG;
    } else if (in->env->ret == QUEUE_RET_FULL) {
        struct scan s;
        scan_full((const unsigned char *)c, n, &s);
        if (s.clean) {
            r->how = QUEUE_DSN_RETURN_FULL;
            r->eightbit = s.eightbit;
            if (s.bare_lf == 0) {
                r->data = c; /* byte for byte */
                r->len = n;
                return 0;
            }
            return full_normalised(c, n, s.bare_lf, r);
        }
        r->how = QUEUE_DSN_RETURN_UNCLEAN;
    }
    int err = headers_section(c, n, r);
    if (err == 0)
        r->eightbit = any_8bit(r->data, r->len);
    return err;
}

void queue_dsn_returned_free(struct queue_dsn_returned *r)
{
    free(r->own);
    r->own = NULL;
    r->data = "";
    r->len = 0;
}
