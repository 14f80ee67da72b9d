/*
 * tests/fuzz/fuzz_dsn.c — a bounce built from what others wrote: the original message
 * (its submitter's bytes) and each recipient's last result (a receiving MX's reply text,
 * the MX's name), through queue_dsn_build.
 *
 * Input: 4 option bytes (action, RET, number of recipients, their states and NOTIFY),
 * then NUL-separated fields: the sender, envid, and per recipient its address, ORCPT,
 * reply text, remote and enhanced code; the rest is the message content.
 *
 * Invariants: a DSN is a valid message on the wire whatever went in (every line ends
 * with CRLF, none over 998 octets, no NUL; 8-bit bytes only where the DSN declares them:
 * SMTPUTF8 for its header section, 8BITMIME or SMTPUTF8 after it), and its envelope goes
 * back to the original sender alone, from the null sender.
 */
#include "tests/fuzz/fuzz.h"

#include <errno.h>
#include <string.h>

#include "queue/queue.h"

/* The next NUL-terminated field of *p (up to cap - 1 bytes are kept) into dst. */
static void field(const uint8_t **p, const uint8_t *end, char *dst, size_t cap)
{
    size_t n = 0;
    while (*p < end && **p != 0) {
        if (n + 1 < cap)
            dst[n++] = (char)**p;
        (*p)++;
    }
    if (*p < end)
        (*p)++; /* the NUL */
    dst[n] = '\0';
}

/* header8 / body8: whether bytes >= 0x80 may appear in the header section (SMTPUTF8,
 * RFC 6532) and after it (8BITMIME or SMTPUTF8). */
static void check_wire(const uint8_t *m, size_t n, bool header8, bool body8)
{
    size_t line = 0;
    bool in_header = true;
    for (size_t i = 0; i < n; i++) {
        fuzz_check(m[i] != 0);
        fuzz_check(m[i] < 0x80 || (in_header ? header8 : body8));
        if (m[i] == '\r') {
            fuzz_check(i + 1 < n && m[i + 1] == '\n');
            if (line == 0)
                in_header = false; /* the blank line ends the header section */
            line = 0;
            i++;
            continue;
        }
        fuzz_check(m[i] != '\n'); /* bare LF */
        fuzz_check(++line <= 998);
    }
    fuzz_check(n >= 2 && m[n - 2] == '\r' && m[n - 1] == '\n');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    const uint8_t *p = data + 4, *end = data + size;
    unsigned nrcpts = 1 + data[2] % 4;
    struct queue_envelope *env = queue_envelope_alloc(nrcpts);
    fuzz_check(env != NULL);
    field(&p, end, env->sender, sizeof(env->sender));
    field(&p, end, env->envid, sizeof(env->envid));
    const char *at = strrchr(env->sender, '@');
    snprintf(env->domain, sizeof(env->domain), "%s", "example.net");
    env->ret = (enum queue_ret)(data[1] % 3);
    env->needs_8bit = data[1] & 0x10;
    env->arrival = 1790000000;
    env->attempts = data[1] >> 5;
    for (unsigned i = 0; i < nrcpts; i++) {
        struct queue_rcpt *r = &env->rcpts[i];
        field(&p, end, r->addr, sizeof(r->addr));
        field(&p, end, r->orcpt, sizeof(r->orcpt));
        field(&p, end, r->last.text, sizeof(r->last.text));
        field(&p, end, r->last.remote, sizeof(r->last.remote));
        field(&p, end, r->last.enhanced, sizeof(r->last.enhanced));
        uint8_t bits = (uint8_t)(data[3] >> (2 * i));
        r->state = bits & 1 ? QUEUE_RCPT_BOUNCED : QUEUE_RCPT_DEFERRED;
        r->notify = bits & 2 ? 0 : (uint8_t)(data[0] >> 4);
        r->last.kind = (enum queue_result_kind)((data[0] + i) % 6);
        r->last.code = (uint16_t)(r->state == QUEUE_RCPT_BOUNCED ? 550 : 451);
        r->last.when = 1790000100;
        r->attempts = (uint16_t)(i + 1);
    }
    struct queue_dsn_input in = {
        .reporting_mta = "mx.esp.example",
        .env = env,
        .action = data[0] & 1 ? QUEUE_DSN_DELAYED : QUEUE_DSN_FAILED,
        .content = p,
        .content_len = (size_t)(end - p),
        .now = 1790003600,
        .retry_until = 1790432000,
        .max_return_bytes = data[0] & 2 ? 512 : 0,
    };
    void *msg = NULL;
    size_t len = 0;
    struct queue_envelope *dsn_env = NULL;
    int rc = queue_dsn_build(&in, &msg, &len, &dsn_env);
    fuzz_check(rc == 0 || rc == -ENOENT || rc == -EINVAL);
    if (rc == 0) {
        fuzz_check(msg != NULL && dsn_env != NULL);
        fuzz_check(at != NULL); /* a sender without a domain gets no DSN */
        check_wire(msg, len, dsn_env->needs_smtputf8,
                   dsn_env->needs_8bit || dsn_env->needs_smtputf8);
        fuzz_check(dsn_env->sender[0] == '\0' && dsn_env->is_dsn);
        fuzz_check(dsn_env->nrcpts == 1 && strcmp(dsn_env->rcpts[0].addr, env->sender) == 0);
        free(msg);
        queue_envelope_free(dsn_env);
    } else {
        fuzz_check(msg == NULL && dsn_env == NULL);
    }
    queue_envelope_free(env);
    return 0;
}
