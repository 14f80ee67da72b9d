/*
 * engine/smtp_reply.h — SMTP replies off the wire: an incremental, bounded parser and
 * the EHLO capability list.
 *
 * Receivers are hostile: a reply line longer than SMTP_REPLY_LINE_MAX, more than
 * SMTP_REPLY_LINES_MAX lines, a malformed code, or codes that change within a
 * multi-line reply are protocol errors, detected without buffering more than one line.
 */
#ifndef FLOORMTA_ENGINE_SMTP_REPLY_H
#define FLOORMTA_ENGINE_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 5321 4.5.3.1.5 says 512 octets; real servers exceed it a little, so allow 2 KiB
 * and no more. */
#define SMTP_REPLY_LINE_MAX  2048
#define SMTP_REPLY_LINES_MAX 128
#define SMTP_REPLY_TEXT_MAX  8192

#define SMTP_ERRORS(X)                                                       \
    X(SMTP_ERR_LINE_TOO_LONG, -10101, "reply line too long")                 \
    X(SMTP_ERR_TOO_MANY_LINES, -10102, "reply has too many lines")           \
    X(SMTP_ERR_SYNTAX, -10103, "malformed reply")                            \
    X(SMTP_ERR_UNEXPECTED, -10104, "reply not allowed at this point")        \
    X(SMTP_ERR_INJECTION, -10105, "data pipelined after the STARTTLS reply") \
    X(SMTP_ERR_CLOSED, -10106, "connection closed by the receiver")

enum smtp_err {
#define SMTP_ERR_ENUM(name, code, text) name = code,
    SMTP_ERRORS(SMTP_ERR_ENUM)
#undef SMTP_ERR_ENUM
};

/* Static string for an smtp_ code; other codes go to eng_strerror(). */
const char *smtp_strerror(int err);

/* One complete reply. text holds the lines' texts (after "250-" / "250 "), joined by
 * '\n', truncated at SMTP_REPLY_TEXT_MAX - 1 (text_truncated says so). */
struct smtp_reply {
    int code;          /* 200..599 */
    char enhanced[16]; /* RFC 3463 "x.y.z" from the first line, "" if none */
    unsigned nlines;
    bool text_truncated;
    size_t text_len;
    char text[SMTP_REPLY_TEXT_MAX];
};

/* Parser state between reads. Plain value: embed it, zero it with smtp_reply_reset. */
struct smtp_reply_parser {
    size_t line_len;
    bool in_reply; /* at least one continuation line seen */
    bool saw_cr;
    char line[SMTP_REPLY_LINE_MAX];
};

void smtp_reply_reset(struct smtp_reply_parser *p, struct smtp_reply *r);

/* Consumes bytes of data (borrowed) until one reply is complete or data runs out.
 * Returns 0 with *consumed bytes used and *complete telling whether *r now holds a
 * whole reply (then reset both before the next one), or SMTP_ERR_LINE_TOO_LONG,
 * SMTP_ERR_TOO_MANY_LINES, SMTP_ERR_SYNTAX. A bare LF ends a line too (broken servers
 * send it; it cannot smuggle anything into a reply). */
int smtp_reply_parse(struct smtp_reply_parser *p, struct smtp_reply *r, const char *data,
                     size_t len, size_t *consumed, bool *complete);

/* EHLO extensions floormta cares about (RFC 5321 4.1.1.1 and the extension RFCs). */
enum smtp_ext {
    SMTP_EXT_STARTTLS = 1u << 0,
    SMTP_EXT_PIPELINING = 1u << 1,
    SMTP_EXT_SIZE = 1u << 2,
    SMTP_EXT_8BITMIME = 1u << 3,
    SMTP_EXT_SMTPUTF8 = 1u << 4,
    SMTP_EXT_ENHANCEDSTATUSCODES = 1u << 5,
    SMTP_EXT_CHUNKING = 1u << 6,
    SMTP_EXT_DSN = 1u << 7,
    SMTP_EXT_REQUIRETLS = 1u << 8,
};

struct smtp_caps {
    uint32_t ext;      /* enum smtp_ext bits */
    uint64_t size_max; /* SIZE parameter, 0 = none given */
};

/* Reads the capability lines of a 250 EHLO reply (the first line is the greeting and
 * is skipped). r is borrowed. */
void smtp_caps_parse(const struct smtp_reply *r, struct smtp_caps *out);

/* Writes the extension names in caps as "STARTTLS PIPELINING SIZE=52428800 ..." into
 * out (cap bytes, always NUL-terminated). Returns out. */
char *smtp_caps_format(const struct smtp_caps *caps, char *out, size_t cap);

/* Copies the reply's first line as "250 2.0.0 text" into out, with non-printable bytes
 * replaced by '?', for logs and JSON. Returns out. */
char *smtp_reply_summary(const struct smtp_reply *r, char *out, size_t cap);

#endif /* FLOORMTA_ENGINE_SMTP_REPLY_H */
