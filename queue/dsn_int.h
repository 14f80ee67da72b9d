/*
 * queue/dsn_int.h — private to queue/dsn*.c (and tests/queue/test_dsn.c): the output
 * buffer, the 7-bit text helpers and the returned-content part that queue_dsn_build
 * (dsn.c) composes a delivery status notification from.
 *
 * Everything here is bounded by its input: a text is read up to its field's size even
 * when it has no NUL, a folded field or a wrapped paragraph grows by a constant factor,
 * and the returned content is capped (max_return_bytes, QUEUE_DSN_HEADERS_MAX).
 */
#ifndef FLOORMTA_QUEUE_DSN_INT_H
#define FLOORMTA_QUEUE_DSN_INT_H

#include "queue/queue.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QUEUE_DSN_LINE_MAX       998           /* RFC 5322 2.1.1, without the CRLF */
#define QUEUE_DSN_FOLD_AT        78            /* preferred line length of folded fields */
#define QUEUE_DSN_WRAP_AT        72            /* line length of the human-readable part */
#define QUEUE_DSN_HEADERS_MAX    (128u * 1024) /* a returned header section, at most */
#define QUEUE_DSN_RETURN_DEFAULT (10ull * 1024 * 1024)

/* ---- output buffer (dsn_text.c) -------------------------------------------------------- */

/* A growing byte buffer whose out-of-memory state is sticky: appends after a failed
 * growth do nothing, and the composer checks `oom` once at the end. */
struct queue_dsn_buf {
    char *p; /* malloc'd; owned by the buffer until taken */
    size_t len, cap;
    bool oom;
};

void queue_dsn_buf_put(struct queue_dsn_buf *b, const void *data, size_t n);
void queue_dsn_buf_puts(struct queue_dsn_buf *b, const char *s);
void queue_dsn_buf_printf(struct queue_dsn_buf *b, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
void queue_dsn_buf_free(struct queue_dsn_buf *b);

/* ---- 7-bit text (dsn_text.c) ---------------------------------------------------------- */

/* Copies the first strnlen(in, cap) bytes of in into out (>= cap + 1 bytes) as one
 * line of printable ASCII: CR, LF, TAB and other whitespace become one space, runs of
 * spaces collapse, other control bytes and bytes >= 0x80 become '?', and leading and
 * trailing spaces go. So a remote reply can neither end a field nor start a new one.
 * Returns the length written (out is NUL-terminated). in is borrowed. */
size_t queue_dsn_clean(const char *in, size_t cap, char *out);

/* Writes "name: value" + CRLF, folded (CRLF SP) at spaces so that lines stay within
 * QUEUE_DSN_FOLD_AT where the words allow and never exceed QUEUE_DSN_LINE_MAX (a longer
 * word is split). value must be clean (queue_dsn_clean): one line of printable ASCII. */
void queue_dsn_fold(struct queue_dsn_buf *b, const char *name, const char *value);

/* Writes text (clean) as a paragraph wrapped at QUEUE_DSN_WRAP_AT columns, each line
 * starting with indent and ending with CRLF; longer words are split. */
void queue_dsn_wrap(struct queue_dsn_buf *b, const char *indent, const char *text);

/* Formats t (unix seconds) as an RFC 5322 date-time in UTC, "Sat, 22 Nov 2025
 * 23:55:00 +0000", into out. Returns out. */
char *queue_dsn_date(int64_t t, char out[64]);

/* Formats a duration as "5 days 2 hours", "3 hours 20 minutes", "45 seconds". */
char *queue_dsn_duration(int64_t seconds, char out[64]);

/* Writes an address for a DSN address field (RFC 3464 2.1.2): "rfc822; addr" when addr
 * (strnlen(addr, cap) bytes) is printable ASCII without spaces, else "utf-8; " and the
 * RFC 6533 utf-8-addr-xtext form (\x{HEX} for every non-ASCII character, '\\', '+',
 * '=', space and control byte), so the field stays 7-bit. type is the address type to
 * prefix ("rfc822"), or NULL to write the encoded address alone. */
void queue_dsn_addr(struct queue_dsn_buf *b, const char *type, const char *addr, size_t cap);

/* True if the bytes are all ASCII printable or space (0x20-0x7e). */
bool queue_dsn_is_printable(const char *s, size_t n);

/* ---- the returned content (dsn_content.c) -------------------------------------------- */

enum queue_dsn_returned_how {
    QUEUE_DSN_RETURN_NONE,    /* no content given */
    QUEUE_DSN_RETURN_FULL,    /* message/rfc822, the whole message */
    QUEUE_DSN_RETURN_HEADERS, /* text/rfc822-headers, as RET asked (HDRS or default) */
    QUEUE_DSN_RETURN_TOO_BIG, /* RET=FULL over max_return_bytes: headers only */
    QUEUE_DSN_RETURN_UNCLEAN, /* RET=FULL but NUL, bare CR or a line over 998 octets
                               * (needs BINARYMIME): headers only */
};

struct queue_dsn_returned {
    enum queue_dsn_returned_how how;
    const char *data; /* borrowed from the input content, or `own` */
    size_t len;
    char *own;        /* malloc'd normalised copy, or NULL; free with queue_dsn_returned_free */
    bool eightbit;    /* has bytes >= 0x80: the part is declared 8bit (BODY=8BITMIME) */
    bool headers_cut; /* the header section was longer than QUEUE_DSN_HEADERS_MAX */
};

/* Chooses and prepares what part 3 returns, per RET: the whole message if RET=FULL, it
 * fits max_return_bytes and is valid as 8bit MIME (LF-only line ends are normalised to
 * CRLF; otherwise the bytes are kept as they are), else the header section (up to the
 * first empty line, CRLF-normalised, NUL and bare CR dropped, lines over 998 octets
 * folded, at most QUEUE_DSN_HEADERS_MAX). Returns 0 or -ENOMEM. in is borrowed; so is
 * r->data when r->own is NULL. */
int queue_dsn_returned_make(const struct queue_dsn_input *in, struct queue_dsn_returned *r);
void queue_dsn_returned_free(struct queue_dsn_returned *r);

/* ---- status mapping (dsn_status.c) --------------------------------------------------- */

/* True if s (strnlen(s, cap) bytes) is an RFC 3463 code "c.s.d": class 2, 4 or 5,
 * subject and detail 1-3 digits. */
bool queue_dsn_enhanced_valid(const char *s, size_t cap);

/* The Status value for a reported recipient whose last result is r (see dsn_status.c
 * for the mapping). out gets "5.7.5" and the like. */
void queue_dsn_status(enum queue_dsn_action action, const struct queue_result *r, char out[16]);

#endif /* FLOORMTA_QUEUE_DSN_INT_H */
