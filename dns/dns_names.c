/*
 * dns/dns_names.c — the names and texts of dns/ (error strings, outcome, reason and
 * state names, all generated from the X-macro lists so they cannot drift from the
 * enums), address formatting, domain-name validation, and the mapping of c-ares
 * statuses onto reasons.
 */
#include "dns/dns_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <string.h>

const char *dns_strerror(int err)
{
    switch (err) {
    case 0: return "success";
#define DNS_ERR_CASE(name, code, text) \
    case code: return text;
        DNS_ERRORS(DNS_ERR_CASE)
#undef DNS_ERR_CASE
    default: break;
    }
    /* -errno values: strerror's table is static for valid codes. */
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown DNS error";
}

const char *dns_outcome_name(enum dns_outcome o)
{
    switch (o) {
    case DNS_OUTCOME_OK: return "ok";
    case DNS_OUTCOME_TEMPFAIL: return "tempfail";
    case DNS_OUTCOME_PERMFAIL: return "permfail";
    case DNS_OUTCOME_NULLMX: return "nullmx";
    }
    return "unknown";
}

static const char *const reason_names[] = {
#define DNS_REASON_NAME(name, str, text) str,
    DNS_REASONS(DNS_REASON_NAME)
#undef DNS_REASON_NAME
};

static const char *const reason_texts[] = {
#define DNS_REASON_TEXT(name, str, text) text,
    DNS_REASONS(DNS_REASON_TEXT)
#undef DNS_REASON_TEXT
};

const char *dns_reason_name(enum dns_reason r)
{
    return (unsigned)r < DNS_REASON__COUNT ? reason_names[r] : "unknown";
}

const char *dns_reason_text(enum dns_reason r)
{
    return (unsigned)r < DNS_REASON__COUNT ? reason_texts[r] : "unknown reason";
}

const char *dns_lookup_state_name(enum dns_lookup_state s)
{
    static const char *const names[] = {
#define DNS_LOOKUP_STATE_NAME(name, str) str,
        DNS_LOOKUP_STATES(DNS_LOOKUP_STATE_NAME)
#undef DNS_LOOKUP_STATE_NAME
    };
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

char *dns_addr_format(const struct dns_addr *a, char *out, size_t cap)
{
    if (cap == 0)
        return out;
    const void *src = a->family == AF_INET6 ? (const void *)&a->v6 : (const void *)&a->v4;
    if (inet_ntop(a->family == AF_INET6 ? AF_INET6 : AF_INET, src, out, (socklen_t)cap) == NULL)
        out[0] = '\0';
    return out;
}

/* Letters, digits, hyphen and underscore: what a host name (and _-prefixed service
 * labels) can carry. Anything else would need escaping in presentation form, and a
 * mail domain never does. */
static bool label_char(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '_';
}

int dns_name_normalize(const char *in, char out[DNS_NAME_MAX + 1])
{
    if (in == NULL || in[0] == '[')
        return DNS_ERR_NAME;
    size_t len = strlen(in);
    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0 || len > DNS_NAME_MAX)
        return DNS_ERR_NAME;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '.') {
            if (label == 0)
                return DNS_ERR_NAME;
            label = 0;
        } else if (label_char(c) && ++label <= 63) {
            /* fine */
        } else {
            return DNS_ERR_NAME;
        }
        out[i] = (char)tolower(c);
    }
    out[len] = '\0';
    if (label == 0)
        return DNS_ERR_NAME;
    /* "192.0.2.1" is an address, not a domain (RFC 5321 wants "[192.0.2.1]" for those,
     * and an MX target must be a name). IPv6 literals already failed on ':'. */
    struct in_addr v4;
    if (inet_pton(AF_INET, out, &v4) == 1)
        return DNS_ERR_NAME;
    return 0;
}

enum dns_reason dns_reason_from_ares(int status)
{
    switch (status) {
    case ARES_SUCCESS:
    case ARES_ENODATA: return DNS_REASON_NONE;
    case ARES_ENOTFOUND: return DNS_REASON_NXDOMAIN;
    case ARES_ESERVFAIL:
    case ARES_ENOTIMP: return DNS_REASON_SERVFAIL;
    case ARES_EREFUSED: return DNS_REASON_REFUSED;
    case ARES_ETIMEOUT: return DNS_REASON_TIMEOUT;
    case ARES_ECONNREFUSED: return DNS_REASON_UNREACHABLE;
    case ARES_EFORMERR:
    case ARES_EBADRESP:
    case ARES_EBADNAME:
    case ARES_EBADQUERY: return DNS_REASON_MALFORMED;
    case ARES_ENOMEM: return DNS_REASON_NOMEM;
    case ARES_EDESTRUCTION:
    case ARES_ECANCELLED: return DNS_REASON_SHUTDOWN;
    /* Anything else c-ares may invent is a failure we cannot classify: temporary,
     * so that it is retried rather than bounced. */
    default: return DNS_REASON_SERVFAIL;
    }
}
