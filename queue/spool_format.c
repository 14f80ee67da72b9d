/*
 * queue/spool_format.c — the two file formats of the spool, and their strict parsers.
 *
 * Message file (immutable; `head` shows the envelope):
 *   floormta-msg 1 header=0000000412      fixed width: the header's length in bytes
 *   id 0190f3a2b4c5d6e7
 *   arrival 1700000000
 *   next 0
 *   sender a@example.org                  every text field in xtext, "" as "-"
 *   domain example.com
 *   envid -
 *   ret default                           default | hdrs | full
 *   flags dsn=0 8bit=1 smtputf8=0
 *   size 12345                            the content's length
 *   rcpts 2
 *   rcpt 0 a@example.com -                notify bits, address, ORCPT
 *   rcpt 6 b@example.com rfc822;b@example.com
 *   content-crc32c 1a2b3c4d
 *   check 5e6f7a8b                        CRC32C of every header byte before this line
 *   <content: exactly `size` bytes, then end of file>
 *
 * State file (replaced by rename on every update):
 *   floormta-state 1
 *   id 0190f3a2b4c5d6e7
 *   seq 42                                the spool's write sequence
 *   attempts 3
 *   next 1700003600
 *   warned 0
 *   rcpts 2
 *   r delivered 1 smtp 250 1700000100 2.0.0 mx1.example.com OK+20queued
 *   r deferred 3 tls 451 1700003000 4.7.5 mx2.example.com no+20STARTTLS
 *   check 12345678
 *
 * Parsers check every line, every number against its bound, the field counts, the
 * checksum, and the lengths against the file: anything off is QUEUE_ERR_CORRUPT.
 */
#include "queue/queue_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define CHECK_LINE_LEN 15u /* "check XXXXXXXX\n" */

#define COUNT_ONE(...) +1
enum {
    RCPT_STATE_COUNT = 0 QUEUE_RCPT_STATES(COUNT_ONE),
    RESULT_KIND_COUNT = 0 QUEUE_RESULT_KINDS(COUNT_ONE),
};
#undef COUNT_ONE

static const char *const ret_names[] = { "default", "hdrs", "full" };

/* A text field must be a NUL-terminated string inside its array. */
#define FIELD_OK(s) (strnlen((s), sizeof(s)) < sizeof(s))

static void out_check(struct queue_out *o)
{
    uint32_t crc = queue_crc32c(0, o->p, o->len);
    queue_out_fmt(o, "check %08x\n", crc);
}

/* Verifies the trailing check line of a buffer of n bytes; *body gets the length
 * before it. */
static int in_check(const char *buf, size_t n, size_t *body)
{
    uint32_t want;
    if (n < CHECK_LINE_LEN || buf[n - 1] != '\n')
        return QUEUE_ERR_CORRUPT;
    const char *line = buf + n - CHECK_LINE_LEN;
    if (memcmp(line, "check ", 6) != 0 || queue_parse_hex32(line + 6, 8, &want) != 0)
        return QUEUE_ERR_CORRUPT;
    if (queue_crc32c(0, buf, n - CHECK_LINE_LEN) != want)
        return QUEUE_ERR_CORRUPT;
    *body = n - CHECK_LINE_LEN;
    return 0;
}

static bool field_is(const struct queue_fields *f, unsigned i, const char *s)
{
    return f->len[i] == strlen(s) && memcmp(f->f[i], s, f->len[i]) == 0;
}

/* ---- message file ------------------------------------------------------------------- */

size_t queue_msg_header_bound(const struct queue_envelope *env)
{
    size_t per_rcpt = 16 + 3 * sizeof(env->rcpts[0].addr) + 3 * sizeof(env->rcpts[0].orcpt);
    return 512 + 3 * (sizeof(env->sender) + sizeof(env->domain) + sizeof(env->envid)) +
           (size_t)env->nrcpts * per_rcpt;
}

long queue_msg_encode(const struct queue_envelope *env, queue_id_t id, uint64_t len,
                      uint32_t content_crc, char *out, size_t cap)
{
    if (env->nrcpts == 0 || env->nrcpts > QUEUE_RCPTS_MAX || !FIELD_OK(env->sender) ||
        !FIELD_OK(env->domain) || !FIELD_OK(env->envid) || (unsigned)env->ret > QUEUE_RET_FULL)
        return QUEUE_ERR_TOO_BIG;
    char hex[QUEUE_ID_HEX];
    struct queue_out o = { .p = out, .cap = cap };
    queue_out_fmt(&o, "floormta-msg 1 header=%010u\n", 0u); /* patched below */
    queue_out_fmt(&o, "id %s\n", queue_id_format(id, hex));
    queue_out_fmt(&o, "arrival %lld\nnext %lld\nsender ", (long long)env->arrival,
                  (long long)env->next_attempt);
    queue_out_xtext(&o, env->sender, sizeof(env->sender));
    queue_out_str(&o, "\ndomain ");
    queue_out_xtext(&o, env->domain, sizeof(env->domain));
    queue_out_str(&o, "\nenvid ");
    queue_out_xtext(&o, env->envid, sizeof(env->envid));
    queue_out_fmt(&o, "\nret %s\nflags dsn=%d 8bit=%d smtputf8=%d\n", ret_names[env->ret],
                  env->is_dsn, env->needs_8bit, env->needs_smtputf8);
    queue_out_fmt(&o, "size %llu\nrcpts %u\n", (unsigned long long)len, env->nrcpts);
    for (unsigned i = 0; i < env->nrcpts; i++) {
        const struct queue_rcpt *r = &env->rcpts[i];
        if (!FIELD_OK(r->addr) || !FIELD_OK(r->orcpt) || r->notify > 15)
            return QUEUE_ERR_TOO_BIG;
        queue_out_fmt(&o, "rcpt %u ", r->notify);
        queue_out_xtext(&o, r->addr, sizeof(r->addr));
        queue_out_str(&o, " ");
        queue_out_xtext(&o, r->orcpt, sizeof(r->orcpt));
        queue_out_str(&o, "\n");
    }
    queue_out_fmt(&o, "content-crc32c %08x\n", content_crc);
    if (o.overflow || o.len + CHECK_LINE_LEN > QUEUE_SPOOL_HDR_MAX)
        return QUEUE_ERR_TOO_BIG;
    char line1[QUEUE_MSG_LINE1_LEN + 1];
    snprintf(line1, sizeof(line1), "floormta-msg 1 header=%010zu\n", o.len + CHECK_LINE_LEN);
    memcpy(out, line1, QUEUE_MSG_LINE1_LEN);
    out_check(&o);
    return o.overflow ? QUEUE_ERR_TOO_BIG : (long)o.len;
}

int queue_msg_peek(const void *buf, size_t n, size_t *hlen)
{
    static const char magic[] = "floormta-msg 1 header=";
    const char *p = buf;
    uint64_t v;
    if (n < QUEUE_MSG_LINE1_LEN || memcmp(p, magic, sizeof(magic) - 1) != 0 ||
        p[QUEUE_MSG_LINE1_LEN - 1] != '\n' ||
        queue_parse_u64(p + sizeof(magic) - 1, 10, QUEUE_SPOOL_HDR_MAX, &v) != 0 ||
        v < QUEUE_MSG_LINE1_LEN + CHECK_LINE_LEN)
        return QUEUE_ERR_CORRUPT;
    *hlen = (size_t)v;
    return 0;
}

static int parse_flag(const struct queue_fields *f, unsigned i, const char *name, bool *out)
{
    size_t n = strlen(name);
    if (f->len[i] != n + 2 || memcmp(f->f[i], name, n) != 0 || f->f[i][n] != '=' ||
        (f->f[i][n + 1] != '0' && f->f[i][n + 1] != '1'))
        return QUEUE_ERR_CORRUPT;
    *out = f->f[i][n + 1] == '1';
    return 0;
}

/* The fixed lines after the first, up to "rcpts"; fills a stack copy of the message
 * fields, since the envelope cannot be allocated before nrcpts is known. */
static int decode_head(struct queue_in *in, struct queue_envelope *h, uint64_t *size,
                       uint64_t *nrcpts)
{
    struct queue_fields f;
    const char *v;
    size_t n;
    char hex[QUEUE_ID_HEX];
    if (queue_in_keyed(in, "id", &v, &n) != 0 || n != QUEUE_ID_HEX - 1)
        return QUEUE_ERR_CORRUPT;
    memcpy(hex, v, n);
    hex[n] = '\0';
    if (queue_id_parse(hex, &h->id) != 0 || queue_in_keyed(in, "arrival", &v, &n) != 0 ||
        queue_parse_i64(v, n, &h->arrival) != 0 || queue_in_keyed(in, "next", &v, &n) != 0 ||
        queue_parse_i64(v, n, &h->next_attempt) != 0 || queue_in_keyed(in, "sender", &v, &n) != 0 ||
        queue_parse_xtext(v, n, h->sender, sizeof(h->sender)) != 0 ||
        queue_in_keyed(in, "domain", &v, &n) != 0 ||
        queue_parse_xtext(v, n, h->domain, sizeof(h->domain)) != 0 ||
        queue_in_keyed(in, "envid", &v, &n) != 0 ||
        queue_parse_xtext(v, n, h->envid, sizeof(h->envid)) != 0 || queue_in_line(in, 2, &f) != 0 ||
        !field_is(&f, 0, "ret"))
        return QUEUE_ERR_CORRUPT;
    unsigned r;
    for (r = 0; r < 3 && !field_is(&f, 1, ret_names[r]); r++)
        ;
    if (r == 3 || queue_in_line(in, 4, &f) != 0 || !field_is(&f, 0, "flags") ||
        parse_flag(&f, 1, "dsn", &h->is_dsn) != 0 || parse_flag(&f, 2, "8bit", &h->needs_8bit) ||
        parse_flag(&f, 3, "smtputf8", &h->needs_smtputf8) != 0 ||
        queue_in_keyed(in, "size", &v, &n) != 0 ||
        queue_parse_u64(v, n, QUEUE_SPOOL_CONTENT_MAX, size) != 0 ||
        queue_in_keyed(in, "rcpts", &v, &n) != 0 ||
        queue_parse_u64(v, n, QUEUE_RCPTS_MAX, nrcpts) != 0 || *nrcpts == 0)
        return QUEUE_ERR_CORRUPT;
    h->ret = (enum queue_ret)r;
    return 0;
}

int queue_msg_decode(const void *hdr, size_t hlen, uint64_t file_size, struct queue_envelope **env,
                     uint32_t *content_crc)
{
    size_t body, line1;
    uint64_t size, nrcpts;
    if (queue_msg_peek(hdr, hlen, &line1) != 0 || line1 != hlen || in_check(hdr, hlen, &body) != 0)
        return QUEUE_ERR_CORRUPT;
    struct queue_in in = { .p = (const char *)hdr + QUEUE_MSG_LINE1_LEN,
                           .end = (const char *)hdr + body };
    /* struct queue_envelope is ~1 KiB without its recipients: fine on the stack. */
    struct queue_envelope h = { 0 };
    if (decode_head(&in, &h, &size, &nrcpts) != 0 || file_size != hlen + size)
        return QUEUE_ERR_CORRUPT;
    struct queue_envelope *e = queue_envelope_alloc((unsigned)nrcpts);
    if (e == NULL)
        return -ENOMEM;
    struct queue_rcpt *rcpts = e->rcpts;
    *e = h;
    e->rcpts = rcpts;
    e->nrcpts = (uint16_t)nrcpts;
    e->content_size = size;
    struct queue_fields f;
    const char *v;
    size_t n;
    for (unsigned i = 0; i < nrcpts; i++) {
        struct queue_rcpt *r = &e->rcpts[i];
        uint64_t notify;
        if (queue_in_line(&in, 4, &f) != 0 || !field_is(&f, 0, "rcpt") ||
            queue_parse_u64(f.f[1], f.len[1], 15, &notify) != 0 ||
            queue_parse_xtext(f.f[2], f.len[2], r->addr, sizeof(r->addr)) != 0 ||
            queue_parse_xtext(f.f[3], f.len[3], r->orcpt, sizeof(r->orcpt)) != 0)
            goto corrupt;
        r->notify = (uint8_t)notify;
        r->state = QUEUE_RCPT_PENDING;
    }
    if (queue_in_keyed(&in, "content-crc32c", &v, &n) != 0 ||
        queue_parse_hex32(v, n, content_crc) != 0 || in.p != in.end)
        goto corrupt;
    *env = e;
    return 0;
corrupt:
    queue_envelope_free(e);
    return QUEUE_ERR_CORRUPT;
}

/* ---- state file ---------------------------------------------------------------------- */

size_t queue_state_bound(unsigned nrcpts)
{
    const struct queue_result *r = NULL;
    size_t per_rcpt = 96 + 3 * (sizeof(r->enhanced) + sizeof(r->remote) + sizeof(r->text));
    return 256 + (size_t)nrcpts * per_rcpt;
}

long queue_state_encode(const struct queue_envelope *env, uint64_t seq, char *out, size_t cap)
{
    if (env->nrcpts == 0 || env->nrcpts > QUEUE_RCPTS_MAX)
        return QUEUE_ERR_TOO_BIG;
    char hex[QUEUE_ID_HEX];
    struct queue_out o = { .p = out, .cap = cap };
    queue_out_fmt(&o, "floormta-state 1\nid %s\nseq %llu\n", queue_id_format(env->id, hex),
                  (unsigned long long)seq);
    queue_out_fmt(&o, "attempts %u\nnext %lld\nwarned %d\nrcpts %u\n", env->attempts,
                  (long long)env->next_attempt, env->delay_warned, env->nrcpts);
    for (unsigned i = 0; i < env->nrcpts; i++) {
        const struct queue_rcpt *r = &env->rcpts[i];
        const struct queue_result *l = &r->last;
        if ((unsigned)r->state >= RCPT_STATE_COUNT || (unsigned)l->kind >= RESULT_KIND_COUNT)
            return QUEUE_ERR_TOO_BIG;
        /* Result texts come from remote servers: a field that is not terminated is
         * cut at its size rather than refused, so a state change is never lost to it. */
        queue_out_fmt(&o, "r %s %u %s %u %lld ", queue_rcpt_state_name(r->state), r->attempts,
                      queue_result_kind_name(l->kind), l->code, (long long)l->when);
        queue_out_xtext(&o, l->enhanced, sizeof(l->enhanced) - 1);
        queue_out_str(&o, " ");
        queue_out_xtext(&o, l->remote, sizeof(l->remote) - 1);
        queue_out_str(&o, " ");
        queue_out_xtext(&o, l->text, sizeof(l->text) - 1);
        queue_out_str(&o, "\n");
    }
    out_check(&o);
    return o.overflow ? QUEUE_ERR_TOO_BIG : (long)o.len;
}

static int parse_rcpt_state(const struct queue_fields *f, struct queue_rcpt *r)
{
    unsigned s, k;
    uint64_t attempts, code;
    for (s = 0; s < RCPT_STATE_COUNT && !field_is(f, 1, queue_rcpt_state_name(s)); s++)
        ;
    for (k = 0; k < RESULT_KIND_COUNT && !field_is(f, 3, queue_result_kind_name(k)); k++)
        ;
    struct queue_result *l = &r->last;
    if (!field_is(f, 0, "r") || s == RCPT_STATE_COUNT || k == RESULT_KIND_COUNT ||
        queue_parse_u64(f->f[2], f->len[2], UINT16_MAX, &attempts) != 0 ||
        queue_parse_u64(f->f[4], f->len[4], 999, &code) != 0 ||
        queue_parse_i64(f->f[5], f->len[5], &l->when) != 0 ||
        queue_parse_xtext(f->f[6], f->len[6], l->enhanced, sizeof(l->enhanced)) != 0 ||
        queue_parse_xtext(f->f[7], f->len[7], l->remote, sizeof(l->remote)) != 0 ||
        queue_parse_xtext(f->f[8], f->len[8], l->text, sizeof(l->text)) != 0)
        return QUEUE_ERR_CORRUPT;
    r->state = (enum queue_rcpt_state)s;
    r->attempts = (uint16_t)attempts;
    l->kind = (enum queue_result_kind)k;
    l->code = (uint16_t)code;
    return 0;
}

int queue_state_apply(const void *buf, size_t n, struct queue_envelope *env, uint64_t *seq)
{
    static const char magic[] = "floormta-state 1\n";
    size_t body;
    if (n > QUEUE_SPOOL_STATE_MAX || n < sizeof(magic) - 1 ||
        memcmp(buf, magic, sizeof(magic) - 1) != 0 || in_check(buf, n, &body) != 0)
        return QUEUE_ERR_CORRUPT;
    struct queue_in in = { .p = (const char *)buf + sizeof(magic) - 1,
                           .end = (const char *)buf + body };
    const char *v;
    size_t len;
    char hex[QUEUE_ID_HEX];
    uint64_t attempts, warned, nrcpts;
    queue_id_t id;
    if (queue_in_keyed(&in, "id", &v, &len) != 0 || len != QUEUE_ID_HEX - 1)
        return QUEUE_ERR_CORRUPT;
    memcpy(hex, v, len);
    hex[len] = '\0';
    if (queue_id_parse(hex, &id) != 0 || id != env->id ||
        queue_in_keyed(&in, "seq", &v, &len) != 0 ||
        queue_parse_u64(v, len, UINT64_MAX, seq) != 0 ||
        queue_in_keyed(&in, "attempts", &v, &len) != 0 ||
        queue_parse_u64(v, len, UINT16_MAX, &attempts) != 0 ||
        queue_in_keyed(&in, "next", &v, &len) != 0 ||
        queue_parse_i64(v, len, &env->next_attempt) != 0 ||
        queue_in_keyed(&in, "warned", &v, &len) != 0 || queue_parse_u64(v, len, 1, &warned) != 0 ||
        queue_in_keyed(&in, "rcpts", &v, &len) != 0 ||
        queue_parse_u64(v, len, QUEUE_RCPTS_MAX, &nrcpts) != 0 || nrcpts != env->nrcpts)
        return QUEUE_ERR_CORRUPT;
    env->attempts = (uint16_t)attempts;
    env->delay_warned = warned != 0;
    struct queue_fields f;
    for (unsigned i = 0; i < nrcpts; i++)
        if (queue_in_line(&in, 9, &f) != 0 || parse_rcpt_state(&f, &env->rcpts[i]) != 0)
            return QUEUE_ERR_CORRUPT;
    return in.p == in.end ? 0 : QUEUE_ERR_CORRUPT;
}
