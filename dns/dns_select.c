/*
 * dns/dns_select.c — MX selection (RFC 5321 5.1): the canonical order of an MX set
 * (ascending preference, then name), the per-lookup shuffle of equal preferences, the
 * order of a host's addresses per the configured family preference, and the copy of
 * a canonical answer into the caller's struct dns_mx_result.
 *
 * Why a canonical order plus a shuffle per lookup: the cache stores one answer for
 * many deliveries, and RFC 5321 asks senders to spread load over equal-preference
 * hosts; shuffling on every copy (cached or not) does that without re-resolving.
 * The PRNG is xoshiro256** seeded from getrandom(2): fast, per resolver, no locks.
 */
#include "dns/dns_int.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(struct dns_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

void dns_rng_seed(struct dns_rng *rng, uint64_t seed)
{
    /* splitmix64 spreads one word over the four (never all zero). */
    for (int i = 0; i < 4; i++) {
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        rng->s[i] = z ^ (z >> 31);
    }
}

void dns_rng_init(struct dns_rng *rng)
{
    uint64_t seed;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
        seed = (uint64_t)(uintptr_t)rng ^ dns_now_ms();
    dns_rng_seed(rng, seed);
}

uint32_t dns_rng_below(struct dns_rng *rng, uint32_t n)
{
    /* Lemire's multiply-shift; the bias for n <= 32 is below 2^-59, not worth a loop. */
    return (uint32_t)(((rng_next(rng) >> 32) * (uint64_t)n) >> 32);
}

static int mx_cmp(const void *a, const void *b)
{
    const struct dns_wire_mx *x = a, *y = b;
    if (x->pref != y->pref)
        return x->pref < y->pref ? -1 : 1;
    return strcmp(x->name, y->name);
}

unsigned dns_mx_canonical(struct dns_wire_mx *mx, unsigned n)
{
    qsort(mx, n, sizeof(*mx), mx_cmp);
    unsigned out = 0;
    for (unsigned i = 0; i < n; i++) {
        if (mx[i].name[0] == '\0') /* "." among other MX records: no host there */
            continue;
        bool seen = false;
        for (unsigned j = 0; j < out && !seen; j++)
            seen = strcmp(mx[j].name, mx[i].name) == 0;
        if (seen) /* the same host twice: its lowest preference already stands */
            continue;
        if (out != i)
            mx[out] = mx[i];
        out++;
    }
    return out;
}

static void put_v4(struct dns_addr *a, const struct in_addr *v4)
{
    memset(a, 0, sizeof(*a));
    a->family = AF_INET;
    a->v4 = *v4;
}

static void put_v6(struct dns_addr *a, const struct in6_addr *v6)
{
    a->family = AF_INET6;
    a->v6 = *v6;
}

unsigned dns_addrs_order(enum dns_addr_pref pref, const struct in_addr *v4, unsigned n4,
                         const struct in6_addr *v6, unsigned n6, unsigned max, struct dns_addr *out)
{
    unsigned n = 0, i4 = 0, i6 = 0;
    if (pref == DNS_ADDR_ONLY_IPV4)
        n6 = 0;
    if (pref == DNS_ADDR_ONLY_IPV6)
        n4 = 0;
    bool six_first = pref != DNS_ADDR_PREF_IPV4 && pref != DNS_ADDR_ONLY_IPV4;
    while (n < max && (i4 < n4 || i6 < n6)) {
        bool take6;
        if (i4 == n4)
            take6 = true;
        else if (i6 == n6)
            take6 = false;
        else if (pref == DNS_ADDR_PREF_ANY)
            take6 = n % 2 == 0; /* alternate, IPv6 first (RFC 8305 style) */
        else
            take6 = six_first;
        if (take6)
            put_v6(&out[n++], &v6[i6++]);
        else
            put_v4(&out[n++], &v4[i4++]);
    }
    return n;
}

void dns_hosts_order(const uint16_t *prefs, unsigned n, struct dns_rng *rng, uint8_t *perm)
{
    for (unsigned i = 0; i < n; i++)
        perm[i] = (uint8_t)i;
    /* Fisher-Yates within each run of equal preference. */
    for (unsigned start = 0; start < n;) {
        unsigned end = start + 1;
        while (end < n && prefs[end] == prefs[start])
            end++;
        for (unsigned i = end - 1; i > start; i--) {
            unsigned j = start + dns_rng_below(rng, i - start + 1);
            uint8_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        start = end;
    }
}

void dns_host_set(struct dns_mx_host *dst, uint16_t pref, const char *name, size_t namelen,
                  const struct dns_addr *addrs, unsigned naddrs)
{
    dst->pref = pref;
    dst->naddrs = (uint8_t)naddrs;
    memcpy(dst->name, name, namelen);
    dst->name[namelen] = '\0';
    memcpy(dst->addrs, addrs, naddrs * sizeof(*addrs));
}

void dns_result_deliver(const struct dns_mx_result *canon, unsigned max_hosts, struct dns_rng *rng,
                        struct dns_mx_result *out)
{
    /* The header by hand: copying all of struct dns_mx_result (about 7 KiB) for a
     * two-host answer would dominate a cache hit. */
    out->outcome = canon->outcome;
    out->reason = canon->reason;
    out->implicit_mx = canon->implicit_mx;
    out->cached = canon->cached;
    out->ttl = canon->ttl;
    out->skipped = canon->skipped;
    memcpy(out->domain, canon->domain, strlen(canon->domain) + 1);
    memcpy(out->detail, canon->detail, strlen(canon->detail) + 1);

    unsigned n = canon->nhosts < DNS_MX_HOSTS_MAX ? canon->nhosts : DNS_MX_HOSTS_MAX;
    uint16_t prefs[DNS_MX_HOSTS_MAX] = { 0 }; /* 32 bytes; keeps -Wmaybe-uninitialized quiet */
    uint8_t perm[DNS_MX_HOSTS_MAX];
    for (unsigned i = 0; i < n; i++)
        prefs[i] = canon->hosts[i].pref;
    dns_hosts_order(prefs, n, rng, perm);
    unsigned keep = n < max_hosts ? n : max_hosts;
    for (unsigned i = 0; i < keep; i++) {
        const struct dns_mx_host *h = &canon->hosts[perm[i]];
        dns_host_set(&out->hosts[i], h->pref, h->name, strlen(h->name), h->addrs, h->naddrs);
    }
    out->nhosts = (uint8_t)keep;
    out->skipped = (uint8_t)(out->skipped + (n - keep));
}
