/*
 * dns/dns_int.h — private to dns/ (and its tests and benchmark): the wire parser, MX
 * selection, the cache, and the bodies of the resolver and of one pending lookup.
 *
 * The pieces are pure functions over plain data wherever possible (the parser takes a
 * buffer, the cache takes the time as an argument, selection takes its PRNG), so they
 * are tested without a network and without sleeping. Nothing outside dns/, tests/dns/
 * and bench/bench_dns.c includes this header.
 */
#ifndef FLOORMTA_DNS_INT_H
#define FLOORMTA_DNS_INT_H

#include "dns/dns.h"

#include <ares.h>

/* ---- bounds --------------------------------------------------------------------------- */

#define DNS_CNAME_MAX      8     /* CNAME hops from a queried name, re-queries included */
#define DNS_REQUERY_MAX    3     /* re-queries of a CNAME chain's end, per name and type */
#define DNS_MX_TARGETS_MAX 32    /* MX records considered (lowest preferences first) */
#define DNS_PENDING_MAX    65536 /* domains being resolved at once, per resolver */
#define DNS_WAITERS_MAX    65536 /* callers coalesced onto one pending domain */
#define DNS_CACHE_MAX      (1u << 24)

/* RR types and class we read. */
#define DNS_TYPE_A     1
#define DNS_TYPE_CNAME 5
#define DNS_TYPE_SOA   6
#define DNS_TYPE_MX    15
#define DNS_TYPE_AAAA  28
#define DNS_CLASS_IN   1

/* ---- names (dns_names.c) --------------------------------------------------------------- */

/* Validates and normalises a domain or host name into out: lowercase, one trailing dot
 * stripped, labels of 1-63 letters/digits/hyphens/underscores, at most DNS_NAME_MAX
 * characters, not an address literal ("192.0.2.1", "[...]", "::1"). in is borrowed.
 * Returns 0 or DNS_ERR_NAME. */
int dns_name_normalize(const char *in, char out[DNS_NAME_MAX + 1]);

/* The reason for a c-ares status that is a failure (ARES_ESERVFAIL -> SERVFAIL, ...).
 * ENOTFOUND maps to NXDOMAIN; ENODATA is not a failure and maps to NONE. */
enum dns_reason dns_reason_from_ares(int status);

/* ---- the wire parser (dns_wire.c) -------------------------------------------------------- */

struct dns_wire_mx {
    uint16_t pref;
    char name[DNS_NAME_MAX + 1]; /* lowercase presentation; "" is the root (null MX) */
};

/* What one DNS message says about (qname, qtype). */
struct dns_answer {
    uint8_t rcode;
    unsigned hops;               /* CNAMEs followed from qname inside the answer */
    char name[DNS_NAME_MAX + 1]; /* where that chain ends (qname itself without CNAMEs) */
    uint32_t ttl;                /* lowest TTL of those CNAMEs and the records of qtype
                                  * at name; UINT32_MAX when there are none */
    bool has_neg_ttl;            /* an SOA in the authority section: */
    uint32_t neg_ttl;            /* min(SOA TTL, SOA MINIMUM), RFC 2308 */
    unsigned nrecords;           /* records of qtype (class IN) at name, all of them */
    unsigned nkept;              /* how many of those are in the array below */
    union {
        struct dns_wire_mx mx[DNS_MX_TARGETS_MAX]; /* lowest preferences, unsorted */
        struct in_addr v4[DNS_ADDRS_MAX];
        struct in6_addr v6[DNS_ADDRS_MAX];
    };
};

/* Parses the message buf (len bytes, borrowed) as the answer to qname (normalised; NULL:
 * the name in the message's question, which c-ares has matched to the query) and qtype (MX, A or
 * AAAA): follows CNAMEs from qname through the answer section, at most max_hops of them, and
 * collects the records of qtype where the chain ends; reads the negative TTL from an SOA in the
 * authority section. Never reads outside buf. Returns DNS_REASON_NONE, DNS_REASON_MALFORMED or
 * DNS_REASON_CNAME_LIMIT (a loop or a chain longer than max_hops). *out is filled as far as parsing
 * went; out->name is a NUL-terminated name whatever the result ("" when the question's name, read
 * for a NULL qname, is malformed). */
enum dns_reason dns_wire_parse(const uint8_t *buf, size_t len, const char *qname, uint16_t qtype,
                               unsigned max_hops, struct dns_answer *out);

/* ---- selection (dns_select.c) ---------------------------------------------------------- */

/* xoshiro256**, one per resolver: the order of equal-preference MX hosts. */
struct dns_rng {
    uint64_t s[4];
};

/* Seeds from getrandom(2) (a fixed seed if that fails: the order is then predictable
 * but still shuffled). */
void dns_rng_init(struct dns_rng *rng);
void dns_rng_seed(struct dns_rng *rng, uint64_t seed);
/* Uniform in [0, n), n > 0. */
uint32_t dns_rng_below(struct dns_rng *rng, uint32_t n);

/* Puts an MX set in canonical order: ascending preference, then name; drops root
 * targets and repeated names (keeping the lowest preference). Returns the new count. */
unsigned dns_mx_canonical(struct dns_wire_mx *mx, unsigned n);

/* Writes at most max addresses of one host into out in the order pref asks for (ANY:
 * IPv6 and IPv4 alternating, IPv6 first). Returns the count written. */
unsigned dns_addrs_order(enum dns_addr_pref pref, const struct in_addr *v4, unsigned n4,
                         const struct in6_addr *v6, unsigned n6, unsigned max,
                         struct dns_addr *out);

/* This lookup's delivery order of n hosts in canonical order (prefs ascending):
 * perm[i] = index of the i-th host to try; runs of equal preference are shuffled. */
void dns_hosts_order(const uint16_t *prefs, unsigned n, struct dns_rng *rng, uint8_t *perm);

/* Copies one host into dst. name is borrowed (namelen bytes, no NUL needed). */
void dns_host_set(struct dns_mx_host *dst, uint16_t pref, const char *name, size_t namelen,
                  const struct dns_addr *addrs, unsigned naddrs);

/* Copies canon (hosts in canonical order) into out with this lookup's order, keeping at
 * most max_hosts hosts (the rest count as skipped). Only the hosts' used parts are
 * written. canon and out are borrowed and must not overlap. */
void dns_result_deliver(const struct dns_mx_result *canon, unsigned max_hosts, struct dns_rng *rng,
                        struct dns_mx_result *out);

/* ---- the cache (dns_cache.c) ----------------------------------------------------------- */

struct dns_cache;

struct dns_cache_stats {
    uint64_t hits, misses, expired, evicted;
    size_t entries;
};

/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t dns_now_ms(void);

/* Returns 0 and *out (free with dns_cache_free), -EINVAL for 0 or more than
 * DNS_CACHE_MAX entries, -ENOMEM. */
int dns_cache_new(size_t max_entries, struct dns_cache **out);
void dns_cache_free(struct dns_cache *c);

/* Stores res (hosts in canonical order; borrowed, copied compactly) under res->domain
 * for res->ttl seconds from now_ms, replacing an older entry and evicting the least
 * recently used one when full. Only OK, PERMFAIL and NULLMX are stored; a TEMPFAIL is
 * not (returns -EINVAL). Returns 0 or -ENOMEM. */
int dns_cache_put(struct dns_cache *c, const struct dns_mx_result *res, uint64_t now_ms);

/* Looks key (a normalised domain, borrowed) up at now_ms. On a hit fills *out with a
 * fresh order of at most max_hosts hosts, cached = true and ttl = seconds left, and
 * returns 0; returns -ENOENT on a miss (an expired entry is dropped). */
int dns_cache_get(struct dns_cache *c, const char *key, uint64_t now_ms, unsigned max_hosts,
                  struct dns_rng *rng, struct dns_mx_result *out);

void dns_cache_stats(const struct dns_cache *c, struct dns_cache_stats *out);

/* ---- the resolver and its lookups (dns_resolver.c, dns_lookup.c) ------------------------ */

/* A pending domain's states. Only dns_lookup_set_state writes lk->state. */
#define DNS_LOOKUP_STATES(X)                                                      \
    X(DNS_LOOKUP_MX, "mx")               /* the MX query (or a CNAME re-query) */ \
    X(DNS_LOOKUP_ADDRESSES, "addresses") /* A/AAAA of every target at once */     \
    X(DNS_LOOKUP_DONE, "done")           /* answered; callbacks run at the next drain */

enum dns_lookup_state {
#define DNS_LOOKUP_STATE_ENUM(name, str) name,
    DNS_LOOKUP_STATES(DNS_LOOKUP_STATE_ENUM)
#undef DNS_LOOKUP_STATE_ENUM
};

const char *dns_lookup_state_name(enum dns_lookup_state s);

/* One address query (A or AAAA) of one target; also the c-ares callback's argument. */
enum dns_addrq_status { DNS_AQ_UNUSED, DNS_AQ_PENDING, DNS_AQ_FOUND, DNS_AQ_NONE, DNS_AQ_FAILED };

struct dns_addrq {
    struct dns_lookup *lk;
    uint8_t target;
    uint8_t v6;
    uint8_t requeries;
    uint8_t hops;
    enum dns_addrq_status status;
    enum dns_reason reason; /* DNS_AQ_FAILED */
    uint32_t ttl;           /* DNS_AQ_FOUND: lowest TTL of the CNAMEs and addresses */
    bool has_neg_ttl;       /* DNS_AQ_NONE with an SOA */
    uint32_t neg_ttl;
    uint8_t n;
    union {
        struct in_addr v4[DNS_ADDRS_MAX];
        struct in6_addr v6[DNS_ADDRS_MAX];
    } a;
};

struct dns_target {
    uint16_t pref;
    char name[DNS_NAME_MAX + 1];
    struct dns_addrq q[2]; /* [0] A, [1] AAAA */
};

struct dns_waiter {
    dns_mx_cb cb;
    void *arg;
};

struct dns_lookup {
    struct dns_resolver *r;
    struct dns_lookup *hnext;     /* pending map chain */
    struct dns_lookup *done_next; /* done queue */
    struct dns_lookup *wait_next; /* window queue, while not started */
    bool started;                 /* counted in the resolver's active window */
    uint64_t hash;
    enum dns_lookup_state state;
    unsigned outstanding; /* c-ares queries in flight (plus a guard while issuing) */
    unsigned hops;        /* CNAMEs followed for MX so far */
    unsigned requeries;   /* MX re-queries so far */
    uint32_t ttl;         /* lowest TTL of the records used so far; UINT32_MAX none */
    bool has_neg_ttl;
    uint32_t neg_ttl;
    bool implicit_mx;
    uint8_t skipped;
    enum dns_outcome outcome; /* DONE */
    enum dns_reason reason;   /* DONE */
    char detail[128];         /* DONE */
    unsigned ntargets;
    struct dns_target *targets; /* canonical order; owned */
    unsigned nwaiters, capwaiters;
    struct dns_waiter *waiters; /* &waiter0 or owned */
    struct dns_waiter waiter0;
    char domain[DNS_NAME_MAX + 1];
};

struct dns_resolver {
    ares_channel channel;
    const struct dns_io *io; /* borrowed */
    void *io_arg;
    unsigned max_mx_hosts, max_addrs;
    enum dns_addr_pref addr_pref;
    uint32_t ttl_min, ttl_max, negative_ttl_max;
    struct dns_cache *cache;
    struct dns_rng rng;
    uint64_t (*clock)(void *arg); /* NULL = dns_now_ms */
    void *clock_arg;
    struct dns_lookup **pending; /* DNS_PENDING_BUCKETS chains */
    size_t npending;
    struct dns_lookup *done_head, *done_tail;
    unsigned max_active, active;              /* the max_inflight window */
    struct dns_lookup *wait_head, *wait_tail; /* lookups waiting for room in it */
    size_t nwaiting;
    bool closing;
    struct dns_stats stats; /* the counters; cache figures come from the cache */
};

/* Starts resolving lk->domain (state MX). May complete lk synchronously (queued, never
 * called back from here). */
void dns_lookup_start(struct dns_lookup *lk);

/* Builds lk's answer (lk DONE) with hosts in canonical order into *out. */
void dns_lookup_result(const struct dns_lookup *lk, struct dns_mx_result *out);

/* Frees lk's own allocations and lk. */
void dns_lookup_free(struct dns_lookup *lk);

/* Queues a DONE lookup for the next drain (dns_resolver.c). */
void dns_resolver_queue_done(struct dns_resolver *r, struct dns_lookup *lk);

/* The resolver's clock (ms). */
uint64_t dns_resolver_now(struct dns_resolver *r);

/* Test and benchmark hooks. */

/* Replaces the cache clock: now(arg) in milliseconds (NULL restores CLOCK_MONOTONIC). */
void dns_resolver_set_clock(struct dns_resolver *r, uint64_t (*now)(void *arg), void *arg);

/* Stores a result in the resolver's cache as if it had been resolved (hosts in
 * canonical order; res->domain normalised). Returns what dns_cache_put returns. */
int dns_resolver_cache_put(struct dns_resolver *r, const struct dns_mx_result *res);

/* Clamps a positive TTL to [ttl_min, ttl_max] and a negative one (NXDOMAIN, null MX, no
 * address) to at most negative_ttl_max and at least ttl_min. UINT32_MAX (no record
 * seen) becomes ttl_min. */
uint32_t dns_ttl_clamp(const struct dns_resolver *r, uint32_t ttl, bool negative);

#endif /* FLOORMTA_DNS_INT_H */
