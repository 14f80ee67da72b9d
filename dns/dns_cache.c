/*
 * dns/dns_cache.c — the resolver's answer cache: per resolver (so per worker thread,
 * no locks), bounded, least recently used out. A hash map with chained buckets finds
 * an entry by its domain (lowercase, no trailing dot); a doubly linked list keeps the
 * use order. Entries are compact: one allocation holding the header, the hosts, their
 * addresses and the strings, sized to what the answer has (a two-host answer is a few
 * hundred bytes, where a struct dns_mx_result is about 7 KiB).
 *
 * Time is an argument (milliseconds of CLOCK_MONOTONIC in production), so the tests
 * drive expiry without sleeping. Only answers that may be reused are stored: OK,
 * PERMFAIL and NULLMX; a temporary failure must be retried, never remembered.
 */
#include "dns/dns_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct entry_host {
    uint16_t pref;
    uint8_t naddrs;
    uint8_t namelen;
    const char *name;             /* inside the entry's allocation */
    const struct dns_addr *addrs; /* same */
};

struct entry {
    struct entry *hnext; /* bucket chain */
    struct entry *prev;  /* use order: prev is more recently used */
    struct entry *next;
    uint64_t hash;
    uint64_t expires_ms;
    uint8_t outcome, reason, skipped, nhosts;
    bool implicit_mx;
    const char *detail;
    struct entry_host *hosts;
    char key[]; /* then the detail, then the hosts, addresses and names (see entry_new) */
};

struct dns_cache {
    size_t max_entries;
    size_t nbuckets; /* power of two */
    struct entry **buckets;
    struct entry *mru; /* most recently used */
    struct entry *lru; /* least recently used: evicted first */
    struct dns_cache_stats stats;
};

uint64_t dns_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* FNV-1a: keys are short domain names. */
static uint64_t key_hash(const char *key)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return h;
}

int dns_cache_new(size_t max_entries, struct dns_cache **out)
{
    if (out == NULL || max_entries == 0 || max_entries > DNS_CACHE_MAX)
        return -EINVAL;
    struct dns_cache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->max_entries = max_entries;
    /* About one bucket per entry keeps chains short without a resize. */
    c->nbuckets = 1;
    while (c->nbuckets < max_entries)
        c->nbuckets <<= 1;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (c->buckets == NULL) {
        free(c);
        return -ENOMEM;
    }
    *out = c;
    return 0;
}

void dns_cache_free(struct dns_cache *c)
{
    if (c == NULL)
        return;
    for (struct entry *e = c->mru, *next; e != NULL; e = next) {
        next = e->next;
        free(e);
    }
    free(c->buckets);
    free(c);
}

void dns_cache_stats(const struct dns_cache *c, struct dns_cache_stats *out)
{
    *out = c->stats;
}

static struct entry **find_slot(struct dns_cache *c, const char *key, uint64_t hash)
{
    for (struct entry **slot = &c->buckets[hash & (c->nbuckets - 1)]; *slot;
         slot = &(*slot)->hnext) {
        if ((*slot)->hash == hash && strcmp((*slot)->key, key) == 0)
            return slot;
    }
    return NULL;
}

static void lru_unlink(struct dns_cache *c, struct entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->mru = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->lru = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(struct dns_cache *c, struct entry *e)
{
    e->prev = NULL;
    e->next = c->mru;
    if (c->mru)
        c->mru->prev = e;
    c->mru = e;
    if (c->lru == NULL)
        c->lru = e;
}

static void entry_remove(struct dns_cache *c, struct entry **slot)
{
    struct entry *e = *slot;
    *slot = e->hnext;
    lru_unlink(c, e);
    free(e);
    c->stats.entries--;
}

/* One allocation: entry, key, detail, hosts (aligned), addresses, names. */
static struct entry *entry_new(const struct dns_mx_result *res, uint64_t hash)
{
    size_t keylen = strlen(res->domain) + 1, detlen = strlen(res->detail) + 1;
    size_t naddrs = 0, names = 0;
    for (unsigned i = 0; i < res->nhosts; i++) {
        naddrs += res->hosts[i].naddrs;
        names += strlen(res->hosts[i].name);
    }
    size_t hosts_off = (sizeof(struct entry) + keylen + detlen + 7) & ~(size_t)7;
    size_t addrs_off = hosts_off + res->nhosts * sizeof(struct entry_host);
    size_t names_off = addrs_off + naddrs * sizeof(struct dns_addr);
    struct entry *e = malloc(names_off + names);
    if (e == NULL)
        return NULL;
    char *base = (char *)e;
    e->hash = hash;
    e->outcome = (uint8_t)res->outcome;
    e->reason = (uint8_t)res->reason;
    e->skipped = res->skipped;
    e->nhosts = res->nhosts;
    e->implicit_mx = res->implicit_mx;
    memcpy(e->key, res->domain, keylen);
    e->detail = memcpy(e->key + keylen, res->detail, detlen);
    e->hosts = (struct entry_host *)(base + hosts_off);
    struct dns_addr *addrs = (struct dns_addr *)(base + addrs_off);
    char *name = base + names_off;
    for (unsigned i = 0; i < res->nhosts; i++) {
        const struct dns_mx_host *h = &res->hosts[i];
        struct entry_host *eh = &e->hosts[i];
        eh->pref = h->pref;
        eh->naddrs = h->naddrs;
        eh->namelen = (uint8_t)strlen(h->name);
        eh->name = memcpy(name, h->name, eh->namelen);
        eh->addrs = memcpy(addrs, h->addrs, h->naddrs * sizeof(*addrs));
        name += eh->namelen;
        addrs += h->naddrs;
    }
    return e;
}

int dns_cache_put(struct dns_cache *c, const struct dns_mx_result *res, uint64_t now_ms)
{
    if (res->outcome == DNS_OUTCOME_TEMPFAIL || res->nhosts > DNS_MX_HOSTS_MAX)
        return -EINVAL;
    uint64_t hash = key_hash(res->domain);
    struct entry *e = entry_new(res, hash);
    if (e == NULL)
        return -ENOMEM;
    e->expires_ms = now_ms + (uint64_t)res->ttl * 1000u;
    struct entry **slot = find_slot(c, res->domain, hash);
    if (slot != NULL) {
        entry_remove(c, slot); /* the newer answer replaces the older */
    } else if (c->stats.entries >= c->max_entries) {
        struct entry *victim = c->lru;
        entry_remove(c, find_slot(c, victim->key, victim->hash));
        c->stats.evicted++;
    }
    struct entry **bucket = &c->buckets[hash & (c->nbuckets - 1)];
    e->hnext = *bucket;
    *bucket = e;
    lru_push_front(c, e);
    c->stats.entries++;
    return 0;
}

int dns_cache_get(struct dns_cache *c, const char *key, uint64_t now_ms, unsigned max_hosts,
                  struct dns_rng *rng, struct dns_mx_result *out)
{
    uint64_t hash = key_hash(key);
    struct entry **slot = find_slot(c, key, hash);
    if (slot == NULL) {
        c->stats.misses++;
        return -ENOENT;
    }
    struct entry *e = *slot;
    if (now_ms >= e->expires_ms) {
        entry_remove(c, slot);
        c->stats.expired++;
        c->stats.misses++;
        return -ENOENT;
    }
    c->stats.hits++;
    if (c->mru != e) {
        lru_unlink(c, e);
        lru_push_front(c, e);
    }

    out->outcome = (enum dns_outcome)e->outcome;
    out->reason = (enum dns_reason)e->reason;
    out->implicit_mx = e->implicit_mx;
    out->cached = true;
    out->ttl = (uint32_t)((e->expires_ms - now_ms + 999) / 1000);
    memcpy(out->domain, e->key, strlen(e->key) + 1);
    memcpy(out->detail, e->detail, strlen(e->detail) + 1);
    uint16_t prefs[DNS_MX_HOSTS_MAX] = { 0 }; /* 32 bytes; keeps -Wmaybe-uninitialized quiet */
    uint8_t perm[DNS_MX_HOSTS_MAX];
    unsigned n = e->nhosts < DNS_MX_HOSTS_MAX ? e->nhosts : DNS_MX_HOSTS_MAX;
    for (unsigned i = 0; i < n; i++)
        prefs[i] = e->hosts[i].pref;
    dns_hosts_order(prefs, n, rng, perm);
    unsigned keep = n < max_hosts ? n : max_hosts;
    for (unsigned i = 0; i < keep; i++) {
        const struct entry_host *h = &e->hosts[perm[i]];
        dns_host_set(&out->hosts[i], h->pref, h->name, h->namelen, h->addrs, h->naddrs);
    }
    out->nhosts = (uint8_t)keep;
    out->skipped = (uint8_t)(e->skipped + (n - keep));
    return 0;
}
