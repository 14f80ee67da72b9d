/*
 * tests/fuzz/fuzz_smtp_reply.c — what a hostile MX can send the delivery client: reply
 * bytes through smtp_reply_parse (split at a point the input chooses, as reads split
 * them), each complete reply through smtp_caps_parse, smtp_caps_format and
 * smtp_reply_summary.
 *
 * Invariants: progress (every call consumes a byte or ends the data or the reply), the
 * documented bounds (code 200..599, lines <= SMTP_REPLY_LINES_MAX, text NUL-terminated
 * within SMTP_REPLY_TEXT_MAX), formatted strings NUL-terminated within their buffers.
 */
#include "tests/fuzz/fuzz.h"

#include <string.h>

#include "engine/smtp_reply.h"

static void check_reply(const struct smtp_reply *r)
{
    fuzz_check(r->code >= 200 && r->code <= 599);
    fuzz_check(r->nlines >= 1 && r->nlines <= SMTP_REPLY_LINES_MAX);
    fuzz_check(r->text_len < SMTP_REPLY_TEXT_MAX && r->text[r->text_len] == '\0');
    fuzz_check(memchr(r->enhanced, '\0', sizeof(r->enhanced)) != NULL);
    struct smtp_caps caps;
    smtp_caps_parse(r, &caps);
    char buf[256], small[8];
    fuzz_check(strlen(smtp_caps_format(&caps, buf, sizeof(buf))) < sizeof(buf));
    fuzz_check(strlen(smtp_caps_format(&caps, small, sizeof(small))) < sizeof(small));
    fuzz_check(strlen(smtp_reply_summary(r, buf, sizeof(buf))) < sizeof(buf));
    fuzz_check(strlen(smtp_reply_summary(r, small, sizeof(small))) < sizeof(small));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The first byte says how the bytes arrive: in reads of 1..256 bytes. */
    size_t chunk = size ? (size_t)data[0] + 1 : 1;
    const char *p = size ? (const char *)data + 1 : (const char *)data;
    size_t left = size ? size - 1 : 0;
    static struct smtp_reply_parser parser;
    static struct smtp_reply reply;
    smtp_reply_reset(&parser, &reply);
    while (left > 0) {
        size_t n = left < chunk ? left : chunk;
        /* Each read in a buffer of its own size: an overread is seen. */
        char *read_buf = malloc(n);
        fuzz_check(read_buf != NULL);
        memcpy(read_buf, p, n);
        size_t off = 0;
        int err = 0;
        while (off < n) {
            size_t used = 0;
            bool complete = false;
            err = smtp_reply_parse(&parser, &reply, read_buf + off, n - off, &used, &complete);
            if (err != 0)
                break;
            fuzz_check(used <= n - off);
            fuzz_check(used > 0 || complete);
            off += used;
            if (complete) {
                check_reply(&reply);
                smtp_reply_reset(&parser, &reply);
            }
        }
        free(read_buf);
        if (err != 0) {
            fuzz_check(err == SMTP_ERR_LINE_TOO_LONG || err == SMTP_ERR_TOO_MANY_LINES ||
                       err == SMTP_ERR_SYNTAX);
            fuzz_check(smtp_strerror(err) != NULL);
            break; /* the client drops the connection */
        }
        p += n;
        left -= n;
    }
    return 0;
}
