/*
 * engine/smtp_dotstuff.h — the DATA encoder: message content in, the bytes that follow
 * "354" out (RFC 5321 4.1.1.4 and 4.5.2), in bounded chunks.
 *
 * It converts every line ending to CRLF (a bare LF or a bare CR becomes CRLF), doubles
 * a '.' that starts a line, and ends the content with CRLF "." CRLF (adding a CRLF
 * first if the content does not end with a line ending). Its state is a few bits, so
 * a 50 MB message streams through a 16 KB buffer, and the output does not depend on
 * how the input or the output is split into chunks.
 */
#ifndef FLOORMTA_ENGINE_SMTP_DOTSTUFF_H
#define FLOORMTA_ENGINE_SMTP_DOTSTUFF_H

#include <stdbool.h>
#include <stddef.h>

/* Plain value: embed it, start it with smtp_dotstuff_init. */
struct smtp_dotstuff {
    bool bol;        /* the output is at the beginning of a line */
    bool cr_pending; /* the last input byte was a CR, already written as CRLF: an LF
                      * that follows belongs to it */
    bool finished;   /* the end marker was written */
};

void smtp_dotstuff_init(struct smtp_dotstuff *d);

/* Encodes content from in[0, len) (borrowed) into out[0, cap). Returns the bytes
 * written; *used = input bytes consumed (less than len when out is full). An encoded
 * line break takes 2 output bytes and a doubled dot 1 more, so the caller calls again
 * with fresh room until *used == len. */
size_t smtp_dotstuff_encode(struct smtp_dotstuff *d, const char *in, size_t len, size_t *used,
                            char *out, size_t cap);

/* Writes the end of data: CRLF if the content did not end a line, then ".\r\n".
 * Returns the bytes written, or 0 if cap is too small for them (5 bytes always
 * suffice); then call again with more room. Calling it after it succeeded writes
 * nothing and returns 0 (check d->finished). */
size_t smtp_dotstuff_finish(struct smtp_dotstuff *d, char *out, size_t cap);

#endif /* FLOORMTA_ENGINE_SMTP_DOTSTUFF_H */
