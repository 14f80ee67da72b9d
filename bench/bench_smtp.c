/*
 * bench/bench_smtp.c — the SMTP client's CPU costs: dot-stuffing a 100 KB body with
 * realistic lines (CRLF, ~76 columns, a few leading dots, as a session does it: 16 KB
 * output chunks), the same body with bare LF line ends (each one rewritten), and
 * parsing a typical multi-line EHLO reply with its capabilities.
 */
#include "bench/bench.h"
#include "engine/smtp_dotstuff.h"
#include "engine/smtp_reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BODY_SIZE  (100 * 1024)
#define CHUNK_SIZE 16384

/* Header block, then base64-like and prose lines of 76 columns; every 50th line
 * starts with a dot. Returns a malloc'd body of BODY_SIZE bytes. */
static char *make_body(bool bare_lf)
{
    char *b = malloc(BODY_SIZE);
    if (b == NULL)
        return NULL;
    static const char head[] = "From: Sender <sender@example.org>\r\n"
                               "To: Recipient <rcpt@example.com>\r\n"
                               "Subject: a realistic message for the benchmark\r\n"
                               "Message-ID: <20261122.1234@example.org>\r\n"
                               "MIME-Version: 1.0\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n\r\n";
    size_t n = 0;
    memcpy(b, head, sizeof(head) - 1);
    n = sizeof(head) - 1;
    unsigned line = 0;
    while (n < BODY_SIZE) {
        char l[96];
        int w = snprintf(l, sizeof(l),
                         "%sLorem ipsum dolor sit amet, consectetur adipiscing "
                         "elit, sed do eiusmod tempor %05u\r\n",
                         line % 50 == 7 ? "." : "", line);
        line++;
        size_t m = (size_t)w;
        if (m > BODY_SIZE - n)
            m = BODY_SIZE - n;
        memcpy(b + n, l, m);
        n += m;
    }
    if (bare_lf) {
        /* Same content with LF only: compact in place. */
        size_t o = 0;
        for (size_t i = 0; i < BODY_SIZE; i++)
            if (!(b[i] == '\r' && i + 1 < BODY_SIZE && b[i + 1] == '\n'))
                b[o++] = b[i];
        memset(b + o, 'x', BODY_SIZE - o);
    }
    return b;
}

static void run_dotstuff(struct bench_state *st, bool bare_lf)
{
    char *body = make_body(bare_lf);
    static char out[CHUNK_SIZE];
    if (body == NULL) {
        bench_fail(st, "out of memory");
        return;
    }
    int64_t items = 0;
    uint64_t sink = 0;
    while (bench_next(st)) {
        struct smtp_dotstuff d;
        smtp_dotstuff_init(&d);
        size_t off = 0;
        while (off < BODY_SIZE) {
            size_t used = 0;
            size_t w =
                    smtp_dotstuff_encode(&d, body + off, BODY_SIZE - off, &used, out, sizeof(out));
            sink += w + (unsigned char)out[0];
            off += used;
        }
        sink += smtp_dotstuff_finish(&d, out, sizeof(out));
        items++;
    }
    if (sink == 0)
        bench_fail(st, "no output");
    bench_set_items(st, items);
    bench_set_bytes(st, items * BODY_SIZE);
    free(body);
}

static void bench_dotstuff_100k(struct bench_state *st)
{
    run_dotstuff(st, false);
}
BENCH_REGISTER(bench_dotstuff_100k)

static void bench_dotstuff_100k_bare_lf(struct bench_state *st)
{
    run_dotstuff(st, true);
}
BENCH_REGISTER(bench_dotstuff_100k_bare_lf)

static void bench_smtp_reply_parse(struct bench_state *st)
{
    static const char ehlo[] = "250-mx.example.com Hello client.example.org [192.0.2.1]\r\n"
                               "250-SIZE 52428800\r\n"
                               "250-8BITMIME\r\n"
                               "250-PIPELINING\r\n"
                               "250-PIPE_CONNECT\r\n"
                               "250-CHUNKING\r\n"
                               "250-STARTTLS\r\n"
                               "250-ENHANCEDSTATUSCODES\r\n"
                               "250-DSN\r\n"
                               "250-SMTPUTF8\r\n"
                               "250 HELP\r\n";
    static struct smtp_reply_parser p;
    static struct smtp_reply r;
    int64_t items = 0;
    uint32_t ext = 0;
    while (bench_next(st)) {
        smtp_reply_reset(&p, &r);
        size_t used = 0;
        bool done = false;
        if (smtp_reply_parse(&p, &r, ehlo, sizeof(ehlo) - 1, &used, &done) != 0 || !done) {
            bench_fail(st, "parse failed");
            return;
        }
        struct smtp_caps caps;
        smtp_caps_parse(&r, &caps);
        ext |= caps.ext;
        items++;
    }
    if (items > 0 && !(ext & SMTP_EXT_PIPELINING))
        bench_fail(st, "capabilities not found");
    bench_set_items(st, items);
    bench_set_bytes(st, items * (int64_t)(sizeof(ehlo) - 1));
}
BENCH_REGISTER(bench_smtp_reply_parse)
