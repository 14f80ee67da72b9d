/*
 * tests/fuzz/fuzz_spool.c — what the disk can hand the spool back (damage, torn writes,
 * an operator's edits): message files through queue_msg_peek and queue_msg_decode as
 * queue_spool_read and the recovery call them, state files through queue_state_apply,
 * and the strict primitives under both (queue_parse_u64/i64/hex32/xtext, queue_id_parse,
 * queue_in_line/keyed, CRC32C).
 *
 * The first byte picks what the rest is:
 *   bits 0-1  0, 1: a message file; 2: a state file; 3: bytes for the primitives
 *   bit 2     raw: the file as it is; else its checksum is repaired first (and a message
 *             file's header length), so that mutations reach the field parsers behind
 *             the CRC instead of all dying on it
 *   bit 3     message: the file size comes from the header's size line and the content
 *             is not in the buffer (recovery reads 64 KiB of a big file); state: the
 *             envelope does not match the file (bit 4: its id, else its recipient count)
 *   bits 4-7  primitives: their parameters (a maximum, a buffer size, a field count)
 *
 * Invariants: a decode fails with its documented code (and leaves *env NULL), or yields an
 * envelope within the documented bounds (1..QUEUE_RCPTS_MAX recipients, every text
 * NUL-terminated inside its array, enums in range, content_size = file size - header);
 * a decoded envelope or state re-encodes (the canonical form is never longer than what
 * was accepted), decodes again to the same fields, and re-encodes to the same bytes; the
 * primitives agree with the C library on what they accept. Everything is freed.
 */
#define _GNU_SOURCE /* memmem */
#include "tests/fuzz/fuzz.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "queue/queue_int.h"

#define SEL_KIND    3u /* bits 0-1 */
#define SEL_STATE   2u
#define SEL_PRIM    3u
#define SEL_RAW     0x04u
#define SEL_ALT     0x08u
#define SEL_ALT_ID  0x10u
#define CHECK_LEN   15u /* "check XXXXXXXX\n" */
#define LINE1_DIGIT 22u /* "floormta-msg 1 header=" */

#define STR_OK(s) (strnlen((s), sizeof(s)) < sizeof(s))

static void *dup_exact(const void *p, size_t n)
{
    void *d = malloc(n ? n : 1);
    fuzz_check(d != NULL);
    memcpy(d, p, n);
    return d;
}

/* Writes the CRC32C of buf[0, at - 6) as 8 lowercase hex digits at buf + at. */
static void put_crc(char *buf, size_t at)
{
    char hex[9];
    snprintf(hex, sizeof(hex), "%08x", queue_crc32c(0, buf, at - 6));
    memcpy(buf + at, hex, 8);
}

/* ---- envelopes ------------------------------------------------------------------------ */

static void check_result(const struct queue_result *l)
{
    fuzz_check((unsigned)l->kind <= QUEUE_RESULT_LOCAL);
    fuzz_check(l->code <= 999);
    fuzz_check(STR_OK(l->enhanced) && STR_OK(l->remote) && STR_OK(l->text));
}

/* What every decoded envelope promises. */
static void check_envelope(const struct queue_envelope *e)
{
    fuzz_check(e->id != 0);
    fuzz_check(e->nrcpts >= 1 && e->nrcpts <= QUEUE_RCPTS_MAX && e->rcpts != NULL);
    fuzz_check(STR_OK(e->sender) && STR_OK(e->domain) && STR_OK(e->envid));
    fuzz_check((unsigned)e->ret <= QUEUE_RET_FULL);
    fuzz_check(e->content_size <= QUEUE_SPOOL_CONTENT_MAX);
    for (unsigned i = 0; i < e->nrcpts; i++) {
        const struct queue_rcpt *r = &e->rcpts[i];
        fuzz_check(STR_OK(r->addr) && STR_OK(r->orcpt));
        fuzz_check(r->notify <= 15);
        fuzz_check((unsigned)r->state <= QUEUE_RCPT_BOUNCED);
        check_result(&r->last);
    }
}

static bool result_same(const struct queue_result *a, const struct queue_result *b)
{
    return a->kind == b->kind && a->code == b->code && a->when == b->when &&
           strcmp(a->enhanced, b->enhanced) == 0 && strcmp(a->remote, b->remote) == 0 &&
           strcmp(a->text, b->text) == 0;
}

static bool envelope_same(const struct queue_envelope *a, const struct queue_envelope *b)
{
    if (a->id != b->id || strcmp(a->sender, b->sender) != 0 || strcmp(a->domain, b->domain) != 0 ||
        strcmp(a->envid, b->envid) != 0 || a->ret != b->ret || a->is_dsn != b->is_dsn ||
        a->needs_8bit != b->needs_8bit || a->needs_smtputf8 != b->needs_smtputf8 ||
        a->delay_warned != b->delay_warned || a->arrival != b->arrival ||
        a->next_attempt != b->next_attempt || a->attempts != b->attempts ||
        a->content_size != b->content_size || a->nrcpts != b->nrcpts)
        return false;
    for (unsigned i = 0; i < a->nrcpts; i++) {
        const struct queue_rcpt *x = &a->rcpts[i], *y = &b->rcpts[i];
        if (strcmp(x->addr, y->addr) != 0 || strcmp(x->orcpt, y->orcpt) != 0 ||
            x->notify != y->notify || x->state != y->state || x->attempts != y->attempts ||
            !result_same(&x->last, &y->last))
            return false;
    }
    return true;
}

/* ---- message files ---------------------------------------------------------------------- */

/* Makes a damaged message file pass its checks as far as the field parsers: the header
 * ends after the first "\ncheck " line, line 1 gets that length and the check line the
 * header's CRC. Returns the repaired header length, or 0 if there is no check line. */
static size_t repair_msg(char *buf, size_t n)
{
    const char *c = memmem(buf, n, "\ncheck ", 7);
    if (c == NULL || (size_t)(c - buf) + 1 + CHECK_LEN > n)
        return 0;
    size_t hlen = (size_t)(c - buf) + 1 + CHECK_LEN;
    if (n >= QUEUE_MSG_LINE1_LEN && hlen <= 9999999999u) {
        char digits[11];
        snprintf(digits, sizeof(digits), "%010zu", hlen);
        memcpy(buf + LINE1_DIGIT, digits, 10);
    }
    put_crc(buf, hlen - 9);
    return hlen;
}

/* The content size a header claims (its "size" line), for a file whose content was not
 * read; 0 if there is none. */
static uint64_t claimed_size(const char *hdr, size_t hlen)
{
    const char *s = memmem(hdr, hlen, "\nsize ", 6);
    if (s == NULL)
        return 0;
    s += 6;
    const char *nl = memchr(s, '\n', hlen - (size_t)(s - hdr));
    uint64_t v = 0;
    if (nl == NULL || queue_parse_u64(s, (size_t)(nl - s), QUEUE_SPOOL_CONTENT_MAX, &v) != 0)
        return 0;
    return v;
}

/* Encodes e's header as the committer does into a new buffer (*len bytes). */
static char *encode_msg(const struct queue_envelope *e, uint32_t crc, size_t *len)
{
    size_t cap = queue_msg_header_bound(e);
    char *out = malloc(cap);
    fuzz_check(out != NULL);
    long n = queue_msg_encode(e, e->id, e->content_size, crc, out, cap);
    /* A decoded envelope always fits its own format again: the canonical spelling of
     * every field is at most as long as any spelling the parser accepts. */
    fuzz_check(n > 0 && (size_t)n <= cap && (size_t)n <= QUEUE_SPOOL_HDR_MAX);
    *len = (size_t)n;
    return out;
}

/* Round trip: encode(e) decodes to e, and encoding that gives the same bytes. */
static void roundtrip_msg(const struct queue_envelope *e, uint32_t crc)
{
    size_t len, len2, hlen;
    char *enc = encode_msg(e, crc, &len);
    char *exact = dup_exact(enc, len); /* an overread past the header is seen */
    free(enc);
    fuzz_check(queue_msg_peek(exact, len, &hlen) == 0 && hlen == len);
    struct queue_envelope *again = NULL;
    uint32_t crc2 = 0;
    fuzz_check(queue_msg_decode(exact, len, len + e->content_size, &again, &crc2) == 0);
    check_envelope(again);
    fuzz_check(crc2 == crc && envelope_same(e, again));
    char *enc2 = encode_msg(again, crc2, &len2);
    fuzz_check(len2 == len && memcmp(enc2, exact, len) == 0);
    free(enc2);
    free(exact);
    queue_envelope_free(again);
}

static void fuzz_msg(const uint8_t *data, size_t n, unsigned sel)
{
    char *buf = dup_exact(data, n);
    if (!(sel & SEL_RAW))
        repair_msg(buf, n);
    size_t hlen = 0;
    int rc = queue_msg_peek(buf, n, &hlen);
    fuzz_check(rc == 0 || rc == QUEUE_ERR_CORRUPT);
    if (n < QUEUE_MSG_LINE1_LEN)
        fuzz_check(rc == QUEUE_ERR_CORRUPT);
    if (rc != 0 || hlen > n) { /* the readers stop here: "truncated header" */
        free(buf);
        return;
    }
    fuzz_check(hlen >= QUEUE_MSG_LINE1_LEN + CHECK_LEN && hlen <= QUEUE_SPOOL_HDR_MAX);
    /* The header alone, in a buffer of its size: the decoder reads nothing after it. */
    char *hdr = dup_exact(buf, hlen);
    uint64_t file_size = sel & SEL_ALT ? hlen + claimed_size(hdr, hlen) : n;
    struct queue_envelope *env = NULL;
    uint32_t crc = 0;
    rc = queue_msg_decode(hdr, hlen, file_size, &env, &crc);
    free(hdr);
    fuzz_check(rc == 0 || rc == QUEUE_ERR_CORRUPT || rc == -ENOMEM);
    if (rc != 0) {
        fuzz_check(env == NULL);
        free(buf);
        return;
    }
    check_envelope(env);
    fuzz_check(env->content_size == file_size - hlen);
    /* As delivered: fresh from the file, every recipient PENDING, never tried. */
    fuzz_check(env->attempts == 0 && !env->delay_warned);
    for (unsigned i = 0; i < env->nrcpts; i++)
        fuzz_check(env->rcpts[i].state == QUEUE_RCPT_PENDING && env->rcpts[i].attempts == 0 &&
                   env->rcpts[i].last.kind == QUEUE_RESULT_NONE);
    roundtrip_msg(env, crc);
    queue_envelope_free(env);
    free(buf);
}

/* ---- state files ------------------------------------------------------------------------- */

/* The id and recipient count a state file claims, to build the envelope it must match;
 * defaults where it claims none. */
static void claimed_state(const char *buf, size_t n, queue_id_t *id, unsigned *nrcpts)
{
    *id = 1;
    *nrcpts = 1;
    const char *p = memmem(buf, n, "\nid ", 4);
    if (p != NULL && (size_t)(p - buf) + 4 + 16 <= n) {
        char hex[QUEUE_ID_HEX];
        memcpy(hex, p + 4, 16);
        hex[16] = '\0';
        queue_id_t v;
        if (queue_id_parse(hex, &v) == 0)
            *id = v;
    }
    p = memmem(buf, n, "\nrcpts ", 7);
    if (p != NULL) {
        p += 7;
        const char *nl = memchr(p, '\n', n - (size_t)(p - buf));
        uint64_t v;
        if (nl != NULL && queue_parse_u64(p, (size_t)(nl - p), QUEUE_RCPTS_MAX, &v) == 0 && v > 0)
            *nrcpts = (unsigned)v;
    }
}

static char *encode_state(const struct queue_envelope *e, uint64_t seq, size_t *len)
{
    size_t cap = queue_state_bound(e->nrcpts);
    char *out = malloc(cap);
    fuzz_check(out != NULL);
    long n = queue_state_encode(e, seq, out, cap);
    fuzz_check(n > 0 && (size_t)n <= cap && (size_t)n <= QUEUE_SPOOL_STATE_MAX);
    *len = (size_t)n;
    return out;
}

static void roundtrip_state(const struct queue_envelope *e, uint64_t seq)
{
    size_t len, len2;
    char *enc = encode_state(e, seq, &len);
    char *exact = dup_exact(enc, len);
    free(enc);
    struct queue_envelope *again = queue_envelope_alloc(e->nrcpts);
    fuzz_check(again != NULL);
    again->id = e->id;
    uint64_t seq2 = 0;
    fuzz_check(queue_state_apply(exact, len, again, &seq2) == 0);
    fuzz_check(seq2 == seq && envelope_same(e, again));
    char *enc2 = encode_state(again, seq2, &len2);
    fuzz_check(len2 == len && memcmp(enc2, exact, len) == 0);
    free(enc2);
    free(exact);
    queue_envelope_free(again);
}

static void fuzz_state(const uint8_t *data, size_t n, unsigned sel)
{
    char *buf = dup_exact(data, n);
    if (!(sel & SEL_RAW) && n >= CHECK_LEN)
        put_crc(buf, n - 9);
    queue_id_t id;
    unsigned nrcpts;
    claimed_state(buf, n, &id, &nrcpts);
    if (sel & SEL_ALT) { /* the state of another message */
        if (sel & SEL_ALT_ID)
            id = id == UINT64_MAX ? 1 : id + 1;
        else
            nrcpts = nrcpts == QUEUE_RCPTS_MAX ? 1 : nrcpts + 1;
    }
    struct queue_envelope *env = queue_envelope_alloc(nrcpts);
    fuzz_check(env != NULL);
    env->id = id;
    uint64_t seq = 0;
    int rc = queue_state_apply(buf, n, env, &seq);
    fuzz_check(rc == 0 || rc == QUEUE_ERR_CORRUPT);
    if (sel & SEL_ALT)
        fuzz_check(rc == QUEUE_ERR_CORRUPT);
    if (rc == 0) {
        fuzz_check(env->id == id && env->nrcpts == nrcpts);
        check_envelope(env);
        roundtrip_state(env, seq);
    }
    queue_envelope_free(env);
    free(buf);
}

/* ---- primitives ---------------------------------------------------------------------------- */

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return n > 0;
}

/* The reference: strtoull on a string of digits only; false on overflow. */
static bool ref_u64(const char *s, size_t n, uint64_t *out)
{
    char tmp[32];
    if (n >= sizeof(tmp))
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    errno = 0;
    unsigned long long v = strtoull(tmp, NULL, 10);
    *out = v;
    return errno == 0;
}

static void fuzz_numbers(const char *s, size_t n, unsigned param)
{
    static const uint64_t maxima[] = { UINT64_MAX,
                                       0,
                                       1,
                                       15,
                                       999,
                                       UINT16_MAX,
                                       QUEUE_RCPTS_MAX,
                                       INT64_MAX,
                                       QUEUE_SPOOL_CONTENT_MAX,
                                       QUEUE_SPOOL_HDR_MAX };
    uint64_t max = maxima[param % (sizeof(maxima) / sizeof(maxima[0]))];
    uint64_t v = 0, ref = 0;
    bool want = n <= 20 && all_digits(s, n) && ref_u64(s, n, &ref) && ref <= max;
    int rc = queue_parse_u64(s, n, max, &v);
    fuzz_check(rc == 0 || rc == QUEUE_ERR_CORRUPT);
    fuzz_check((rc == 0) == want);
    if (rc == 0)
        fuzz_check(v == ref && v <= max);

    int64_t i = 0;
    bool neg = n > 0 && s[0] == '-';
    want = n - neg <= 20 && all_digits(s + neg, n - neg) && ref_u64(s + neg, n - neg, &ref) &&
           ref <= (uint64_t)INT64_MAX;
    rc = queue_parse_i64(s, n, &i);
    fuzz_check(rc == 0 || rc == QUEUE_ERR_CORRUPT);
    fuzz_check((rc == 0) == want);
    if (rc == 0)
        fuzz_check(i == (neg ? -(int64_t)ref : (int64_t)ref));

    uint32_t h = 0;
    want = n == 8;
    for (size_t k = 0; k < n && want; k++)
        want = (s[k] >= '0' && s[k] <= '9') || (s[k] >= 'a' && s[k] <= 'f');
    rc = queue_parse_hex32(s, n, &h);
    fuzz_check((rc == 0) == want);
    if (rc == 0) {
        char back[9];
        snprintf(back, sizeof(back), "%08x", h);
        fuzz_check(memcmp(back, s, 8) == 0);
    }
}

static void fuzz_id(const char *s, size_t n)
{
    char text[QUEUE_ID_HEX + 8];
    size_t k = n < sizeof(text) - 1 ? n : sizeof(text) - 1;
    memcpy(text, s, k);
    text[k] = '\0';
    queue_id_t id = 0;
    int rc = queue_id_parse(text, &id);
    fuzz_check(rc == 0 || rc == -EINVAL);
    bool want = strlen(text) == QUEUE_ID_HEX - 1;
    for (size_t j = 0; j < QUEUE_ID_HEX - 1 && want; j++)
        want = (text[j] >= '0' && text[j] <= '9') || (text[j] >= 'a' && text[j] <= 'f') ||
               (text[j] >= 'A' && text[j] <= 'F');
    want = want && strtoull(text, NULL, 16) != 0;
    fuzz_check((rc == 0) == want);
    if (rc == 0) {
        char back[QUEUE_ID_HEX];
        queue_id_format(id, back);
        for (size_t j = 0; j < QUEUE_ID_HEX - 1; j++)
            fuzz_check(back[j] == (text[j] >= 'A' && text[j] <= 'F' ? text[j] + 32 : text[j]));
        fuzz_check(id == strtoull(text, NULL, 16));
    }
}

static void fuzz_xtext(const char *s, size_t n, unsigned param)
{
    static const size_t caps[] = {
        1, 2, 3, 16, 101, QUEUE_DOMAIN_MAX + 1, QUEUE_ADDR_MAX + 1, QUEUE_TEXT_MAX
    };
    size_t cap = caps[param % (sizeof(caps) / sizeof(caps[0]))];
    char *dst = malloc(cap); /* exactly cap: a write past it is seen */
    fuzz_check(dst != NULL);
    int rc = queue_parse_xtext(s, n, dst, cap);
    fuzz_check(rc == 0 || rc == QUEUE_ERR_CORRUPT);
    if (rc != 0) {
        free(dst);
        return;
    }
    size_t len = strnlen(dst, cap);
    fuzz_check(len < cap);
    /* Its canonical encoding, into a buffer of exactly the room the writer asks (3 bytes
     * a byte), is never longer than what was accepted and decodes to the same; one byte
     * less room is an overflow, never a write past the end. */
    size_t need = len == 0 ? 1 : 3 * len;
    char *enc = malloc(need), *small = malloc(need - 1 ? need - 1 : 1);
    fuzz_check(enc != NULL && small != NULL);
    struct queue_out o = { .p = enc, .cap = need };
    queue_out_xtext(&o, dst, cap);
    fuzz_check(!o.overflow && o.len >= 1 && o.len <= need && o.len <= (n ? n : 1));
    struct queue_out short_o = { .p = small, .cap = need - 1 };
    queue_out_xtext(&short_o, dst, cap);
    fuzz_check(short_o.overflow && short_o.len == 0);
    free(small);
    char *back = malloc(cap);
    fuzz_check(back != NULL);
    fuzz_check(queue_parse_xtext(enc, o.len, back, cap) == 0 && strcmp(back, dst) == 0);
    for (size_t i = 0; i < o.len; i++)
        fuzz_check(enc[i] > 32 && enc[i] < 127 && enc[i] != '=');
    free(back);
    free(enc);
    free(dst);
}

/* Lines split into fields: progress, fields inside their line, never empty. */
static void fuzz_lines(const char *s, size_t n, unsigned param)
{
    struct queue_in in = { .p = s, .end = s + n };
    unsigned fields = 1 + param % QUEUE_FIELDS_MAX;
    struct queue_fields f;
    while (in.p < in.end) {
        const char *before = in.p;
        if (queue_in_line(&in, fields, &f) != 0)
            break;
        fuzz_check(in.p > before && in.p <= in.end && in.p[-1] == '\n');
        for (unsigned k = 0; k < fields; k++) {
            fuzz_check(f.len[k] > 0 && f.f[k] >= before && f.f[k] + f.len[k] < in.p);
            fuzz_check(memchr(f.f[k], ' ', f.len[k]) == NULL);
            fuzz_check(memchr(f.f[k], '\n', f.len[k]) == NULL);
        }
    }
    in = (struct queue_in){ .p = s, .end = s + n };
    const char *v;
    size_t len;
    while (in.p < in.end) {
        const char *before = in.p;
        char key[16];
        size_t k = 0;
        while (before + k < in.end && before[k] != ' ' && before[k] != '\n' && k < sizeof(key))
            k++;
        if (k == 0 || k >= sizeof(key))
            break;
        memcpy(key, in.p, k);
        key[k] = '\0';
        if (queue_in_keyed(&in, key, &v, &len) != 0)
            break;
        fuzz_check(in.p > before && in.p <= in.end && v > before && v + len < in.p && len > 0);
    }
}

static void fuzz_prims(const uint8_t *data, size_t n, unsigned param)
{
    const char *s = dup_exact(data, n);
    fuzz_numbers(s, n, param);
    fuzz_id(s, n);
    fuzz_xtext(s, n, param);
    fuzz_lines(s, n, param);
    fuzz_check(queue_crc32c(0, s, n) == queue_crc32c_sw(0, s, n));
    free((void *)s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned sel = data[0];
    data++;
    size--;
    switch (sel & SEL_KIND) {
    case SEL_STATE: fuzz_state(data, size, sel); break;
    case SEL_PRIM: fuzz_prims(data, size, sel >> 4); break;
    default: fuzz_msg(data, size, sel); break;
    }
    return 0;
}
