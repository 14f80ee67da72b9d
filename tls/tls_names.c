/*
 * tls/tls_names.c — the names and texts of tls/: error strings, version names, reason
 * names, and the small verdict helpers. Everything here is generated from the
 * X-macro lists in tls.h, so a new code or reason can never lack its name.
 */
#include "tls/tls_int.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

const char *tls_strerror(int err)
{
    switch (err) {
    case 0: return "success";
#define TLS_ERR_CASE(name, code, text) \
    case code: return text;
        TLS_ERRORS(TLS_ERR_CASE)
#undef TLS_ERR_CASE
    default: break;
    }
    /* -errno values: strerror's table is static for valid codes. */
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown TLS error";
}

const char *tls_version_name(uint16_t version)
{
    switch (version) {
    case TLS_VERSION_1_0: return "TLSv1";
    case TLS_VERSION_1_1: return "TLSv1.1";
    case TLS_VERSION_1_2: return "TLSv1.2";
    case TLS_VERSION_1_3: return "TLSv1.3";
    default: return "unknown";
    }
}

int tls_version_parse(const char *name, uint16_t *out)
{
    static const struct {
        const char *digits;
        uint16_t version;
    } table[] = {
        { "1.0", TLS_VERSION_1_0 }, { "1", TLS_VERSION_1_0 },   { "1.1", TLS_VERSION_1_1 },
        { "1.2", TLS_VERSION_1_2 }, { "1.3", TLS_VERSION_1_3 },
    };

    if (name == NULL || out == NULL)
        return TLS_ERR_CONFIG;
    /* Accept "1.2", "TLSv1.2", "tls1.2", "TLS1.2": strip the prefix, then match. */
    const char *p = name;
    if (strncasecmp(p, "tls", 3) == 0) {
        p += 3;
        if (*p == 'v' || *p == 'V')
            p++;
    }
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        if (strcmp(p, table[i].digits) == 0) {
            *out = table[i].version;
            return 0;
        }
    }
    return TLS_ERR_CONFIG;
}

static const char *const reason_names[] = {
#define TLS_REASON_NAME(name, str, text) str,
    TLS_REASONS(TLS_REASON_NAME)
#undef TLS_REASON_NAME
};

static const char *const reason_texts[] = {
#define TLS_REASON_TEXT(name, str, text) text,
    TLS_REASONS(TLS_REASON_TEXT)
#undef TLS_REASON_TEXT
};

const char *tls_reason_name(enum tls_reason reason)
{
    if ((unsigned)reason >= TLS_REASON__COUNT)
        return "unknown";
    return reason_names[reason];
}

const char *tls_reason_text(enum tls_reason reason)
{
    if ((unsigned)reason >= TLS_REASON__COUNT)
        return "unknown";
    return reason_texts[reason];
}

void tls_verdict_clear(struct tls_verdict *v)
{
    memset(v, 0, sizeof(*v));
    v->pass = false;
    v->opportunistic = false;
    v->reason = TLS_REASON_NONE;
}

void tls_verdict_refuse(struct tls_verdict *v, enum tls_reason reason)
{
    if ((unsigned)reason >= TLS_REASON__COUNT || reason == TLS_REASON_NONE)
        reason = TLS_REASON_HANDSHAKE_FAILED;
    tls_verdict_add(v, reason);
    tls_verdict_settle(v);
}

void tls_verdict_waive(struct tls_verdict *v)
{
    v->opportunistic = true;
    /* A handshake that failed, or whose certificate could not be judged (out of
     * memory), is not "TLS below the floor": it is no TLS at all. */
    if (!(v->ev.problems & (1u << TLS_REASON_HANDSHAKE_FAILED)))
        v->pass = true;
}

void tls_verdict_settle(struct tls_verdict *v)
{
    /* The enum is in TLS_REASONS order, so the lowest problem bit is the reason. */
    uint32_t problems = v->ev.problems & ~(1u << TLS_REASON_NONE);
    if (problems == 0) {
        v->pass = true;
        v->reason = TLS_REASON_NONE;
        return;
    }
    v->pass = false;
    v->reason = (enum tls_reason)__builtin_ctz(problems);
}

char *tls_evidence_fingerprint(const struct tls_evidence *ev, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;

    if (cap == 0)
        return out;
    for (size_t i = 0; i < sizeof(ev->sha256) && n + 2 < cap; i++) {
        out[n++] = hex[ev->sha256[i] >> 4];
        out[n++] = hex[ev->sha256[i] & 0xf];
    }
    out[n] = '\0';
    return out;
}

void tls_strlcpy(char *dst, const char *src, size_t cap)
{
    if (cap == 0)
        return;
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}
