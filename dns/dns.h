/*
 * dns/dns.h — where mail for a domain goes: asynchronous MX resolution with c-ares,
 * MX selection (RFC 5321 5.1, RFC 7505) and a per-resolver cache.
 *
 * dns/ is loop-agnostic: it never waits. It tells its owner which sockets c-ares wants
 * watched (struct dns_io.watch, from c-ares' socket-state callback) and when it next
 * needs attention (dns_resolver_timeout_ms); the owner (engine/, on io_uring) calls
 * dns_resolver_process_fd when a socket is ready and dns_resolver_process_timeouts when
 * the deadline passes. Callbacks only ever run from those two calls (or from
 * dns_resolver_free), never from inside dns_resolve_mx.
 *
 * One resolver per worker thread (one c-ares channel each); nothing here locks.
 * Results are values: an outcome, a reason and, for OK, the ordered MX hosts with
 * their addresses. Only a permanent answer (NXDOMAIN, null MX, no address anywhere)
 * may turn into a bounce; SERVFAIL, timeouts and refusals are temporary and never fall
 * back to an implicit MX.
 */
#ifndef FLOORMTA_DNS_H
#define FLOORMTA_DNS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors (0 or negative; -errno as is) ---------------------------------------- */

#define DNS_ERRORS(X)                                           \
    X(DNS_ERR_INIT, -11001, "cannot initialise the resolver")   \
    X(DNS_ERR_CONFIG, -11002, "invalid resolver configuration") \
    X(DNS_ERR_NAME, -11003, "not a valid domain name")          \
    X(DNS_ERR_CLOSING, -11004, "the resolver is shutting down")

enum dns_err {
#define DNS_ERR_ENUM(name, code, text) name = code,
    DNS_ERRORS(DNS_ERR_ENUM)
#undef DNS_ERR_ENUM
};

/* Static string for a dns_ code or -errno. */
const char *dns_strerror(int err);

/* ---- results ------------------------------------------------------------------------ */

/* The outcome of resolving a domain's MX set. */
enum dns_outcome {
    DNS_OUTCOME_OK,       /* one or more MX hosts with addresses */
    DNS_OUTCOME_TEMPFAIL, /* SERVFAIL, timeout, refused, malformed: retry later */
    DNS_OUTCOME_PERMFAIL, /* NXDOMAIN, or no MX host has an address: bounce */
    DNS_OUTCOME_NULLMX,   /* "MX 0 ." (RFC 7505): the domain accepts no mail: bounce
                           * with 556 5.1.10, no connection attempt */
};

const char *dns_outcome_name(enum dns_outcome o); /* "ok", "tempfail", ... */

#define DNS_REASONS(X)                                                                     \
    X(DNS_REASON_NONE, "none", "resolved")                                                 \
    X(DNS_REASON_NXDOMAIN, "nxdomain", "the domain does not exist")                        \
    X(DNS_REASON_NULL_MX, "null_mx", "the domain publishes a null MX: it accepts no mail") \
    X(DNS_REASON_NO_ADDRESS, "no_address", "no MX host (or implicit MX) has an address")   \
    X(DNS_REASON_SERVFAIL, "servfail", "the DNS server failed (SERVFAIL)")                 \
    X(DNS_REASON_REFUSED, "refused", "the DNS server refused the query")                   \
    X(DNS_REASON_TIMEOUT, "timeout", "no answer from the DNS servers in time")             \
    X(DNS_REASON_UNREACHABLE, "unreachable", "the DNS servers cannot be reached")          \
    X(DNS_REASON_MALFORMED, "malformed", "the DNS answer could not be parsed")             \
    X(DNS_REASON_CNAME_LIMIT, "cname_limit", "too many CNAMEs (or a CNAME loop)")          \
    X(DNS_REASON_NOMEM, "nomem", "out of memory while resolving")                          \
    X(DNS_REASON_SHUTDOWN, "shutdown", "the resolver shut down before the answer came")

enum dns_reason {
#define DNS_REASON_ENUM(name, str, text) name,
    DNS_REASONS(DNS_REASON_ENUM)
#undef DNS_REASON_ENUM
            DNS_REASON__COUNT
};

/* Stable name ("nxdomain") and a human sentence. Static strings. */
const char *dns_reason_name(enum dns_reason r);
const char *dns_reason_text(enum dns_reason r);

#define DNS_NAME_MAX     253 /* presentation form, without the trailing dot */
#define DNS_MX_HOSTS_MAX 16  /* hard bound behind the configurable max_mx_hosts */
#define DNS_ADDRS_MAX    8   /* hard bound behind the configurable max_addrs_per_host */

struct dns_addr {
    sa_family_t family; /* AF_INET or AF_INET6 */
    union {
        struct in_addr v4;
        struct in6_addr v6;
    };
};

struct dns_mx_host {
    uint16_t pref;
    uint8_t naddrs;
    char name[DNS_NAME_MAX + 1]; /* lowercase, no trailing dot */
    struct dns_addr addrs[DNS_ADDRS_MAX];
};

/* A complete answer, as a plain value the caller may copy. hosts[] is in delivery
 * order for this lookup: ascending preference, equal preferences shuffled afresh on
 * every lookup (cached or not), hosts without addresses left out. */
struct dns_mx_result {
    enum dns_outcome outcome;
    enum dns_reason reason;
    bool implicit_mx; /* no MX RRset: the domain's own addresses, preference 0 */
    bool cached;      /* answered from the cache */
    uint32_t ttl;     /* seconds this answer stays valid (clamped by the config) */
    uint8_t nhosts;
    uint8_t skipped; /* MX targets dropped: no address, address literal, over the max */
    char domain[DNS_NAME_MAX + 1];
    char detail[128]; /* what went wrong, for logs: "SERVFAIL for MX example.com" */
    struct dns_mx_host hosts[DNS_MX_HOSTS_MAX];
};

/* ---- the resolver -------------------------------------------------------------------- */

struct dns_resolver;

/* How dns/ asks its owner to watch c-ares' sockets. watch(arg, fd, readable, writable):
 * start or change watching fd for those events; both false = stop watching (c-ares is
 * about to close fd, or already has: a readiness event the owner still delivers for it
 * must be dropped). Called from inside dns_ calls. */
struct dns_io {
    void (*watch)(void *arg, int fd, bool readable, bool writable);
};

enum dns_addr_pref {
    DNS_ADDR_PREF_ANY,  /* both families, IPv6 and IPv4 alternating (the default) */
    DNS_ADDR_PREF_IPV4, /* IPv4 first, then IPv6 */
    DNS_ADDR_PREF_IPV6, /* IPv6 first, then IPv4 */
    DNS_ADDR_ONLY_IPV4, /* IPv4 only */
    DNS_ADDR_ONLY_IPV6, /* IPv6 only */
};

struct dns_config {
    const char *servers;         /* "192.0.2.53:53,[2001:db8::53]:5353"; NULL = the
                                  * system's /etc/resolv.conf. Borrowed. */
    unsigned timeout_ms;         /* per try; 0 = 2000 */
    unsigned tries;              /* 0 = 2 */
    unsigned max_mx_hosts;       /* 0 = 10; at most DNS_MX_HOSTS_MAX */
    unsigned max_addrs_per_host; /* 0 = 4; at most DNS_ADDRS_MAX */
    enum dns_addr_pref addr_pref;
    size_t cache_max_entries;  /* 0 = 10000 */
    uint32_t ttl_min;          /* clamp of cached TTLs, seconds; 0 = 60 */
    uint32_t ttl_max;          /* 0 = 86400 */
    uint32_t negative_ttl_max; /* NXDOMAIN / null MX / no address: the SOA minimum
                                * (RFC 2308), at most this; 0 = 3600 */
    unsigned max_inflight;     /* domains resolved on the network at once; more wait in
                                * order (and still coalesce); 0 = 64. Each domain is a
                                * burst of queries (MX, then A/AAAA per target): an
                                * unbounded burst overflows a DNS server's socket buffer
                                * and turns into synchronised retransmissions. */
};

struct dns_stats {
    uint64_t lookups; /* dns_mx_cached + dns_resolve_mx calls */
    uint64_t cache_hits;
    uint64_t cache_misses;
    uint64_t cache_expired; /* entries found stale and dropped */
    uint64_t cache_evicted; /* dropped to stay within cache_max_entries */
    uint64_t coalesced;     /* lookups that joined one already in flight */
    uint64_t queries;       /* DNS queries sent (MX, A, AAAA, CNAME follow-ups) */
    uint64_t tempfails;
    uint64_t permfails; /* including null MX */
    size_t cache_entries;
    size_t inflight; /* domains being resolved, waiting ones included */
    size_t waiting;  /* of those, waiting for room in the max_inflight window */
};

/* Creates a resolver (a c-ares channel, its cache and the pending lookups). cfg and io
 * are borrowed (cfg's strings only during the call; io until dns_resolver_free).
 * Returns 0 and *out (free with dns_resolver_free), DNS_ERR_CONFIG (bad server list,
 * limits out of range), DNS_ERR_INIT (c-ares failed), -ENOMEM. */
int dns_resolver_new(const struct dns_config *cfg, const struct dns_io *io, void *io_arg,
                     struct dns_resolver **out);

/* Cancels what is pending — each pending callback runs once with TEMPFAIL/SHUTDOWN —
 * and frees the resolver. NULL is a no-op. */
void dns_resolver_free(struct dns_resolver *r);

/* The owner saw fd ready: read_fd / write_fd are the ready fd or -1. */
void dns_resolver_process_fd(struct dns_resolver *r, int read_fd, int write_fd);

/* The deadline from dns_resolver_timeout_ms passed. */
void dns_resolver_process_timeouts(struct dns_resolver *r);

/* Milliseconds until the resolver next needs dns_resolver_process_timeouts, or -1 when
 * nothing is pending. Re-read after every dns_ call. */
int dns_resolver_timeout_ms(struct dns_resolver *r);

/* The cache alone, never the network: on a hit fills *out (with this lookup's order)
 * and returns 0; returns -ENOENT on a miss or an expired entry, DNS_ERR_NAME for a bad
 * domain. domain and out are borrowed. */
int dns_mx_cached(struct dns_resolver *r, const char *domain, struct dns_mx_result *out);

/* Called once per dns_resolve_mx with the answer (borrowed for the call: copy what is
 * needed). arg is the caller's, typically a session id that the caller checks is
 * still alive: a lookup cannot be cancelled, its answer is simply dropped. */
typedef void (*dns_mx_cb)(void *arg, const struct dns_mx_result *res);

/* Resolves domain's MX set: queries the network (MX, then A/AAAA of the targets, or of
 * the domain for an implicit MX), or joins a lookup of the same domain already in
 * flight; the answer is cached. Callers check dns_mx_cached first: this call does not.
 * cb runs later from dns_resolver_process_*, never from inside this call. domain is
 * copied. Returns 0, DNS_ERR_NAME (empty, too long, bad label, an address literal),
 * DNS_ERR_CLOSING, -ENOMEM. */
int dns_resolve_mx(struct dns_resolver *r, const char *domain, dns_mx_cb cb, void *arg);

void dns_resolver_stats(const struct dns_resolver *r, struct dns_stats *out);

/* Formats an address ("192.0.2.1", "2001:db8::1") into out (INET6_ADDRSTRLEN bytes
 * suffice). Returns out. */
char *dns_addr_format(const struct dns_addr *a, char *out, size_t cap);

#endif /* FLOORMTA_DNS_H */
