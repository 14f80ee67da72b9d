/*
 * queue/spool_codec.c — the bytes under the spool's file formats: CRC32C, a bounded
 * writer with xtext escaping, and a strict line/field reader that never trusts a
 * length it did not check against the end of its buffer.
 *
 * Why text: an operator must be able to `head` a spool file at 3 a.m. and read the
 * sender, the recipients and their states. Why xtext: every byte outside printable
 * ASCII (8-bit, CR, LF, NUL, space) becomes "+XX", so a field can never break a line
 * or a field boundary, and the parser can reject any unexpected byte outright.
 */
#include "queue/queue_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- CRC32C ---------------------------------------------------------------------- */

/* Slicing-by-8 tables, built once. Why CRC32C and not a cryptographic hash: the threat
 * is disk damage and torn writes, not an attacker who can write the spool; CRC32C
 * detects every burst up to 32 bits and all 1-3 bit errors in files this size. */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

uint32_t queue_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = buf;
    crc = ~crc;
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
        len--;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc; /* little-endian: the low 4 bytes meet the running CRC */
        crc = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
              crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
              crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
              crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len-- > 0)
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

#if defined(__x86_64__)
/* SSE4.2 has a CRC32C instruction (the same Castagnoli polynomial): about five times
 * the table's speed. Every message is checksummed when written and again when read
 * for delivery, so on a 10 KB message this is most of the spool's user-space CPU. */
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const void *buf,
                                                            size_t len)
{
    const uint8_t *p = buf;
    uint64_t c = ~crc & 0xffffffffu;
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        len--;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        len -= 8;
    }
    while (len-- > 0)
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return ~(uint32_t)c;
}

bool queue_crc32c_hw_available(void)
{
    return __builtin_cpu_supports("sse4.2");
}

uint32_t queue_crc32c(uint32_t crc, const void *buf, size_t len)
{
    static int hw = -1; /* racy but idempotent: every thread computes the same value */
    if (hw < 0)
        hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    return hw ? crc32c_hw(crc, buf, len) : queue_crc32c_sw(crc, buf, len);
}
#else
bool queue_crc32c_hw_available(void)
{
    return false;
}

uint32_t queue_crc32c(uint32_t crc, const void *buf, size_t len)
{
    return queue_crc32c_sw(crc, buf, len);
}
#endif

/* ---- writing ----------------------------------------------------------------------- */

static void out_bytes(struct queue_out *o, const char *s, size_t n)
{
    if (o->overflow || n > o->cap - o->len) {
        o->overflow = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

void queue_out_str(struct queue_out *o, const char *s)
{
    out_bytes(o, s, strlen(s));
}

void queue_out_fmt(struct queue_out *o, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        o->overflow = true;
        return;
    }
    out_bytes(o, tmp, (size_t)n);
}

void queue_out_xtext(struct queue_out *o, const char *s, size_t max)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strnlen(s, max);
    if (n == 0) {
        out_bytes(o, "-", 1);
        return;
    }
    if (n == 1 && s[0] == '-') {
        out_bytes(o, "+2D", 3);
        return;
    }
    if (o->overflow || 3 * n > o->cap - o->len) {
        o->overflow = true;
        return;
    }
    char *w = o->p + o->len;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c > 32 && c < 127 && c != '+' && c != '=') {
            *w++ = (char)c;
        } else {
            *w++ = '+';
            *w++ = hex[c >> 4];
            *w++ = hex[c & 15];
        }
    }
    o->len = (size_t)(w - o->p);
}

/* ---- reading ----------------------------------------------------------------------- */

int queue_in_line(struct queue_in *in, unsigned n, struct queue_fields *out)
{
    if (n == 0 || n > QUEUE_FIELDS_MAX || in->p >= in->end)
        return QUEUE_ERR_CORRUPT;
    const char *nl = memchr(in->p, '\n', (size_t)(in->end - in->p));
    if (nl == NULL)
        return QUEUE_ERR_CORRUPT;
    const char *s = in->p;
    unsigned k = 0;
    out->f[0] = s;
    for (const char *c = s; c < nl; c++) {
        if ((uint8_t)*c < 32 || (uint8_t)*c > 126)
            return QUEUE_ERR_CORRUPT;
        if (*c == ' ') {
            out->len[k] = (size_t)(c - out->f[k]);
            if (out->len[k] == 0 || ++k >= n)
                return QUEUE_ERR_CORRUPT;
            out->f[k] = c + 1;
        }
    }
    out->len[k] = (size_t)(nl - out->f[k]);
    if (out->len[k] == 0 || k + 1 != n)
        return QUEUE_ERR_CORRUPT;
    in->p = nl + 1;
    return 0;
}

int queue_in_keyed(struct queue_in *in, const char *key, const char **val, size_t *len)
{
    struct queue_fields f;
    int rc = queue_in_line(in, 2, &f);
    if (rc != 0)
        return rc;
    if (f.len[0] != strlen(key) || memcmp(f.f[0], key, f.len[0]) != 0)
        return QUEUE_ERR_CORRUPT;
    *val = f.f[1];
    *len = f.len[1];
    return 0;
}

int queue_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (len == 0 || len > 20)
        return QUEUE_ERR_CORRUPT;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return QUEUE_ERR_CORRUPT;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return QUEUE_ERR_CORRUPT;
        v = v * 10 + d;
    }
    if (v > max)
        return QUEUE_ERR_CORRUPT;
    *out = v;
    return 0;
}

int queue_parse_i64(const char *s, size_t len, int64_t *out)
{
    bool neg = len > 0 && s[0] == '-';
    uint64_t v;
    int rc = queue_parse_u64(s + neg, len - neg, (uint64_t)INT64_MAX, &v);
    if (rc != 0)
        return rc;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 0;
}

/* One canonical spelling per value: lowercase for checksums (as "%08x" writes them),
 * uppercase in xtext (RFC 3461). Accepting the other case would let a bit flip that
 * only changes a letter's case (0x20) pass unnoticed. */
static int hexval(char c, bool upper)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (upper && c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (!upper && c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int queue_parse_hex32(const char *s, size_t len, uint32_t *out)
{
    if (len != 8)
        return QUEUE_ERR_CORRUPT;
    uint32_t v = 0;
    for (size_t i = 0; i < len; i++) {
        int d = hexval(s[i], false);
        if (d < 0)
            return QUEUE_ERR_CORRUPT;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return 0;
}

int queue_parse_xtext(const char *s, size_t len, char *dst, size_t cap)
{
    size_t w = 0;
    if (len == 1 && s[0] == '-') {
        dst[0] = '\0';
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c == '+') {
            if (len - i < 3 || hexval(s[i + 1], true) < 0 || hexval(s[i + 2], true) < 0)
                return QUEUE_ERR_CORRUPT;
            c = (uint8_t)(hexval(s[i + 1], true) << 4 | hexval(s[i + 2], true));
            if (c == 0)
                return QUEUE_ERR_CORRUPT;
            i += 2;
        } else if (c <= 32 || c >= 127 || c == '=') {
            return QUEUE_ERR_CORRUPT;
        }
        if (w + 1 >= cap)
            return QUEUE_ERR_CORRUPT;
        dst[w++] = (char)c;
    }
    dst[w] = '\0';
    return 0;
}
