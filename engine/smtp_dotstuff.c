/*
 * engine/smtp_dotstuff.c — the DATA encoder (see smtp_dotstuff.h).
 *
 * The common path works a line at a time: memchr finds the line's LF, a second memchr
 * over the same line finds a CR, and the line is copied with one memcpy. Only the
 * line's first byte (a dot?) and its ending are looked at individually, so the cost
 * per byte is memchr's and memcpy's, not a branch.
 */
#include "engine/smtp_dotstuff.h"

#include <string.h>

void smtp_dotstuff_init(struct smtp_dotstuff *d)
{
    /* The DATA command's own CRLF precedes the content: it starts at a line start. */
    d->bol = true;
    d->cr_pending = false;
    d->finished = false;
}

size_t smtp_dotstuff_encode(struct smtp_dotstuff *d, const char *in, size_t len, size_t *used,
                            char *out, size_t cap)
{
    size_t i = 0, o = 0;
    while (i < len) {
        if (d->cr_pending) {
            /* CR was written as CRLF; the LF of a CRLF pair (maybe in this chunk,
             * after a split) adds nothing. */
            d->cr_pending = false;
            if (in[i] == '\n') {
                i++;
                continue;
            }
        }
        if (d->bol && in[i] == '.') {
            if (o == cap)
                break;
            out[o++] = '.'; /* the line's own dot follows with the text */
        }
        d->bol = false;

        size_t room = cap - o;
        size_t avail = len - i < room ? len - i : room;
        if (avail == 0)
            break;
        const char *seg = in + i;
        const char *lf = memchr(seg, '\n', avail);
        const char *cr = memchr(seg, '\r', lf ? (size_t)(lf - seg) : avail);
        const char *end = cr ? cr : lf;
        size_t n = end ? (size_t)(end - seg) : avail;
        memcpy(out + o, seg, n);
        o += n;
        i += n;
        if (end == NULL)
            continue; /* input or room ran out inside the line */

        /* A line ending: LF, CR or CRLF all become CRLF. */
        if (cap - o < 2)
            break;
        out[o++] = '\r';
        out[o++] = '\n';
        d->bol = true;
        d->cr_pending = in[i] == '\r';
        i++;
    }
    *used = i;
    return o;
}

size_t smtp_dotstuff_finish(struct smtp_dotstuff *d, char *out, size_t cap)
{
    if (d->finished)
        return 0;
    size_t n = d->bol ? 3 : 5;
    if (cap < n)
        return 0;
    memcpy(out, d->bol ? ".\r\n" : "\r\n.\r\n", n);
    d->bol = true;
    d->cr_pending = false;
    d->finished = true;
    return n;
}
