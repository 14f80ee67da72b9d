/*
 * dns/dns.h — where mail for a domain goes: MX resolution with c-ares on the engine's
 * loop, cached (issue 3).
 *
 * For now this header holds the result vocabulary the rest of floormta is built
 * against: a lookup's outcome is a value, never a log string, and only a permanent
 * answer may ever turn into a bounce.
 */
#ifndef FLOORMTA_DNS_H
#define FLOORMTA_DNS_H

/* The outcome of resolving a domain's MX set (RFC 5321 5.1, RFC 7505). */
enum dns_outcome {
    DNS_OUTCOME_OK,       /* one or more MX targets with addresses */
    DNS_OUTCOME_TEMPFAIL, /* SERVFAIL, timeout, refused: retry later, never implicit MX */
    DNS_OUTCOME_PERMFAIL, /* NXDOMAIN, or no usable target: bounce */
    DNS_OUTCOME_NULLMX,   /* "MX 0 ." — the domain accepts no mail: bounce (5.1.10) */
};

#endif /* FLOORMTA_DNS_H */
