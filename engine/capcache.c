/*
 * engine/capcache.c — the per-destination TLS capability cache (see capcache.h): a
 * hash map (chained buckets) finds an entry by host and port, an intrusive doubly
 * linked list keeps the use order for LRU eviction. Every entry comes from a pool
 * allocated by eng_capcache_new, so recording and checking never allocate. One cache
 * per worker thread, no locks.
 */
#include "engine/capcache_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

struct cap_node {
    struct cap_node *hnext; /* bucket chain, or the free list */
    struct cap_node *prev;  /* use order: prev is more recently used */
    struct cap_node *next;
    uint64_t hash;
    struct eng_capcache_entry e;
};

struct eng_capcache {
    size_t max_entries;
    size_t nbuckets; /* power of two */
    uint32_t ttl;
    uint32_t transient_ttl;
    uint64_t seed; /* of key_hash */
    struct cap_node **buckets;
    struct cap_node *pool; /* max_entries nodes */
    struct cap_node *free_list;
    struct cap_node *mru; /* most recently used */
    struct cap_node *lru; /* least recently used: evicted first */
    struct eng_capcache_stats stats;
};

const char *eng_capcache_state_name(enum eng_capcache_state state)
{
    switch (state) {
#define ENG_CAPCACHE_STATE_CASE(name, str) \
    case name: return str;
        ENG_CAPCACHE_STATES(ENG_CAPCACHE_STATE_CASE)
#undef ENG_CAPCACHE_STATE_CASE
    }
    return "invalid";
}

int eng_capcache_new(const struct eng_capcache_config *cfg, struct eng_capcache **out)
{
    struct eng_capcache_config d = { 0 };
    if (cfg != NULL)
        d = *cfg;
    if (d.max_entries == 0)
        d.max_entries = ENG_CAPCACHE_DEFAULT_MAX;
    if (d.ttl == 0)
        d.ttl = ENG_CAPCACHE_DEFAULT_TTL;
    if (d.transient_ttl == 0)
        d.transient_ttl = d.ttl / 4 > 0 ? d.ttl / 4 : 1;
    if (d.transient_ttl > d.ttl)
        d.transient_ttl = d.ttl;
    if (out == NULL || d.max_entries > (SIZE_MAX / 4) / sizeof(struct cap_node))
        return -EINVAL;
    struct eng_capcache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->max_entries = d.max_entries;
    c->ttl = d.ttl;
    c->transient_ttl = d.transient_ttl;
    /* Not a secret, only unpredictable: the clock and the address will do if
     * getrandom fails. */
    if (getrandom(&c->seed, sizeof(c->seed), GRND_NONBLOCK) != sizeof(c->seed))
        c->seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)c;
    /* About two buckets per entry keeps chains short without ever resizing. */
    c->nbuckets = 1;
    while (c->nbuckets < d.max_entries * 2)
        c->nbuckets <<= 1;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    c->pool = calloc(d.max_entries, sizeof(*c->pool));
    if (c->buckets == NULL || c->pool == NULL) {
        eng_capcache_free(c);
        return -ENOMEM;
    }
    for (size_t i = d.max_entries; i-- > 0;) {
        c->pool[i].hnext = c->free_list;
        c->free_list = &c->pool[i];
    }
    c->stats.capacity = d.max_entries;
    *out = c;
    return 0;
}

void eng_capcache_free(struct eng_capcache *c)
{
    if (c == NULL)
        return;
    free(c->buckets);
    free(c->pool);
    free(c);
}

uint32_t eng_capcache_ttl_for(const struct eng_capcache *c, enum tls_reason reason)
{
    switch (reason) {
    case TLS_REASON_HANDSHAKE_FAILED:
    case TLS_REASON_STARTTLS_REFUSED: return c->transient_ttl;
    default: return c->ttl;
    }
}

void eng_capcache_stats(const struct eng_capcache *c, struct eng_capcache_stats *out)
{
    *out = c->stats;
}

int eng_capcache_norm_host(const char *in, char out[ENG_CAPCACHE_HOST_MAX])
{
    if (in == NULL)
        return -EINVAL;
    size_t n = 0;
    for (; in[n] != '\0'; n++) {
        unsigned ch = (unsigned char)in[n];
        if (n >= ENG_CAPCACHE_HOST_MAX - 1)
            return -ENAMETOOLONG;
        /* Printable ASCII but space: the file format separates fields by spaces and
         * lines by newlines, so a name with such bytes (no MX name has them) could
         * not be saved. */
        if (ch - 0x21u > 0x7eu - 0x21u)
            return -EILSEQ;
        out[n] = (char)(ch | (unsigned)(ch - 'A' < 26u) << 5); /* lowercase */
    }
    if (n > 0 && out[n - 1] == '.')
        n--;
    if (n == 0)
        return -EILSEQ;
    out[n] = '\0';
    return (int)n;
}

/* Eight bytes at a time with a multiply-xorshift mix (the byte-wise FNV-1a chain was
 * most of a check's cost), seeded per cache so that names chosen to collide in one
 * worker's buckets do not collide in another's. host is normalised, len its length. */
static uint64_t key_hash(const struct eng_capcache *c, const char *host, size_t len, uint16_t port)
{
    uint64_t h = c->seed ^ len ^ ((uint64_t)port << 32);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, host + i, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
    }
    uint64_t w = 0;
    memcpy(&w, host + i, len - i);
    h = (h ^ w) * 0x94d049bb133111ebull;
    return h ^ (h >> 29);
}

/* Returns the slot pointing at the node for host:port (so it can be unlinked), or
 * NULL. host is normalised. */
static struct cap_node **find_slot(struct eng_capcache *c, const char *host, uint16_t port,
                                   uint64_t hash)
{
    struct cap_node **slot = &c->buckets[hash & (c->nbuckets - 1)];
    for (; *slot != NULL; slot = &(*slot)->hnext) {
        const struct cap_node *n = *slot;
        if (n->hash == hash && n->e.port == port && strcmp(n->e.host, host) == 0)
            return slot;
    }
    return NULL;
}

static struct cap_node **slot_of(struct eng_capcache *c, const struct cap_node *node)
{
    struct cap_node **slot = &c->buckets[node->hash & (c->nbuckets - 1)];
    while (*slot != node)
        slot = &(*slot)->hnext;
    return slot;
}

static void lru_unlink(struct eng_capcache *c, struct cap_node *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        c->mru = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        c->lru = n->prev;
    n->prev = n->next = NULL;
}

static void lru_push_front(struct eng_capcache *c, struct cap_node *n)
{
    n->prev = NULL;
    n->next = c->mru;
    if (c->mru)
        c->mru->prev = n;
    c->mru = n;
    if (c->lru == NULL)
        c->lru = n;
}

static void lru_touch(struct eng_capcache *c, struct cap_node *n)
{
    if (c->mru != n) {
        lru_unlink(c, n);
        lru_push_front(c, n);
    }
}

/* Keeps the per-verdict counts in step with a node entering (+1) or leaving (-1). */
static void count_verdict(struct eng_capcache *c, const struct cap_node *n, int delta)
{
    size_t *count = n->e.pass ? &c->stats.pass_entries : &c->stats.refuse_entries;
    *count += (size_t)(ptrdiff_t)delta;
    c->stats.entries += (size_t)(ptrdiff_t)delta;
}

/* Unlinks the node *slot points at and returns it to the pool. */
static void node_remove(struct eng_capcache *c, struct cap_node **slot)
{
    struct cap_node *n = *slot;
    *slot = n->hnext;
    lru_unlink(c, n);
    count_verdict(c, n, -1);
    n->hnext = c->free_list;
    c->free_list = n;
}

static bool expired(const struct cap_node *n, int64_t now)
{
    return now >= n->e.expires_at;
}

/* A free node for host:port, linked into its bucket and at the front of the use
 * order; its entry is zeroed but for host and port, and not yet counted. When the
 * pool is empty, the least recently used node makes room. */
static struct cap_node *node_add(struct eng_capcache *c, const char *host, uint16_t port,
                                 uint64_t hash, int64_t now)
{
    if (c->free_list == NULL) {
        /* An expired victim was due to go anyway: count it as such. */
        if (expired(c->lru, now))
            c->stats.expirations++;
        else
            c->stats.evictions++;
        node_remove(c, slot_of(c, c->lru));
    }
    struct cap_node *n = c->free_list;
    c->free_list = n->hnext;
    memset(&n->e, 0, sizeof(n->e));
    strcpy(n->e.host, host); /* normalised: shorter than ENG_CAPCACHE_HOST_MAX */
    n->e.port = port;
    n->hash = hash;
    struct cap_node **bucket = &c->buckets[hash & (c->nbuckets - 1)];
    n->hnext = *bucket;
    *bucket = n;
    lru_push_front(c, n);
    return n;
}

/* The live node for host:port at now (an expired one is dropped), or NULL; *hash
 * receives the key's hash. host is normalised. */
static struct cap_node *lookup(struct eng_capcache *c, const char *host, size_t len, uint16_t port,
                               int64_t now, uint64_t *hash)
{
    *hash = key_hash(c, host, len, port);
    struct cap_node **slot = find_slot(c, host, port, *hash);
    if (slot == NULL)
        return NULL;
    if (expired(*slot, now)) {
        c->stats.expirations++;
        node_remove(c, slot);
        return NULL;
    }
    return *slot;
}

int eng_capcache_record(struct eng_capcache *c, const char *host, uint16_t port,
                        const struct tls_verdict *v, int64_t now)
{
    char name[ENG_CAPCACHE_HOST_MAX];
    if (c == NULL || v == NULL || port == 0 || (unsigned)v->reason >= TLS_REASON__COUNT ||
        v->pass != (v->reason == TLS_REASON_NONE))
        return -EINVAL;
    int len = eng_capcache_norm_host(host, name);
    if (len < 0)
        return len;
    uint64_t hash;
    struct cap_node *n = lookup(c, name, (size_t)len, port, now, &hash);
    if (n == NULL) {
        n = node_add(c, name, port, hash, now);
    } else {
        count_verdict(c, n, -1);
        lru_touch(c, n);
    }
    struct eng_capcache_entry *e = &n->e;
    const struct tls_evidence *ev = &v->ev;
    e->pass = v->pass;
    e->reason = v->reason;
    /* Every verdict but no_starttls comes after the receiver offered STARTTLS. */
    e->starttls_offered = v->reason != TLS_REASON_NO_STARTTLS;
    e->checked_at = now;
    e->expires_at = now + eng_capcache_ttl_for(c, v->reason);
    e->refusals = v->pass ? 0 : e->refusals + 1;
    e->version = ev->version;
    if (ev->version > e->highest_version)
        e->highest_version = ev->version;
    e->problems = ev->problems;
    /* Suite names never have spaces, but a line of the file must not break if one did. */
    size_t i = 0;
    for (; i < sizeof(e->cipher) - 1 && ev->cipher[i] != '\0'; i++) {
        unsigned ch = (unsigned char)ev->cipher[i];
        e->cipher[i] = ch - 0x21u > 0x7eu - 0x21u ? '_' : (char)ch;
    }
    e->cipher[i] = '\0';
    e->has_cert = ev->has_cert;
    if (ev->has_cert) {
        memcpy(e->sha256, ev->sha256, sizeof(e->sha256));
        e->not_after = ev->not_after;
    } else {
        memset(e->sha256, 0, sizeof(e->sha256));
        e->not_after = 0;
    }
    count_verdict(c, n, +1);
    c->stats.records++;
    return 0;
}

enum eng_capcache_state eng_capcache_check(struct eng_capcache *c, const char *host, uint16_t port,
                                           int64_t now, struct eng_capcache_entry *out)
{
    char name[ENG_CAPCACHE_HOST_MAX];
    c->stats.checks++;
    uint64_t hash;
    struct cap_node *n = NULL;
    int len = eng_capcache_norm_host(host, name);
    if (len > 0)
        n = lookup(c, name, (size_t)len, port, now, &hash);
    if (n == NULL)
        return ENG_CAPCACHE_UNKNOWN;
    lru_touch(c, n);
    c->stats.hits++;
    if (out != NULL)
        *out = n->e;
    if (n->e.pass)
        return ENG_CAPCACHE_PASSED;
    c->stats.blocks++;
    return ENG_CAPCACHE_BLOCKED;
}

int eng_capcache_forget(struct eng_capcache *c, const char *host, uint16_t port)
{
    char name[ENG_CAPCACHE_HOST_MAX];
    if (c == NULL)
        return -EINVAL;
    int len = eng_capcache_norm_host(host, name);
    if (len < 0)
        return len;
    int dropped = 0;
    if (port != 0) {
        struct cap_node **slot = find_slot(c, name, port, key_hash(c, name, (size_t)len, port));
        if (slot != NULL) {
            node_remove(c, slot);
            dropped = 1;
        }
    } else {
        /* Every port: the ports are not known, so walk (an operator's action). */
        for (struct cap_node *n = c->mru, *next; n != NULL; n = next) {
            next = n->next;
            if (strcmp(n->e.host, name) == 0) {
                node_remove(c, slot_of(c, n));
                dropped++;
            }
        }
    }
    c->stats.forgets += (uint64_t)dropped;
    return dropped;
}

/* Walks the use order (from the most recent one, or the oldest one), dropping expired
 * nodes and calling fn for live ones until it returns false. */
static void walk(struct eng_capcache *c, int64_t now, bool oldest_first, eng_capcache_fn fn,
                 void *arg)
{
    struct cap_node *n = oldest_first ? c->lru : c->mru;
    while (n != NULL) {
        struct cap_node *following = oldest_first ? n->prev : n->next;
        if (expired(n, now)) {
            c->stats.expirations++;
            node_remove(c, slot_of(c, n));
        } else if (fn != NULL && !fn(arg, &n->e)) {
            return;
        }
        n = following;
    }
}

void eng_capcache_foreach(struct eng_capcache *c, int64_t now, eng_capcache_fn fn, void *arg)
{
    walk(c, now, false, fn, arg);
}

void eng_capcache_foreach_oldest(struct eng_capcache *c, int64_t now, eng_capcache_fn fn, void *arg)
{
    walk(c, now, true, fn, arg);
}

size_t eng_capcache_expire(struct eng_capcache *c, int64_t now)
{
    uint64_t before = c->stats.expirations;
    walk(c, now, false, NULL, NULL);
    return (size_t)(c->stats.expirations - before);
}

int eng_capcache_restore(struct eng_capcache *c, const struct eng_capcache_entry *e, int64_t now)
{
    uint64_t hash;
    /* A file written under a clock ahead of ours: no verdict is from the future (it
     * would win over every newer one, and outlive its own capped expiry). */
    int64_t checked = e->checked_at < now ? e->checked_at : now;
    struct cap_node *n = lookup(c, e->host, strlen(e->host), e->port, now, &hash);
    if (n != NULL) {
        if (n->e.checked_at >= checked)
            return 0;
        count_verdict(c, n, -1);
        lru_touch(c, n);
    } else {
        n = node_add(c, e->host, e->port, hash, now);
    }
    n->e = *e;
    n->e.checked_at = checked;
    int64_t cap = now + eng_capcache_ttl_for(c, e->reason);
    if (n->e.expires_at > cap)
        n->e.expires_at = cap;
    count_verdict(c, n, +1);
    return 1;
}

/* "2026-11-23T00:00:00Z" into buf (>= 21 bytes). */
static const char *iso_time(int64_t t, char *buf, size_t cap)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (gmtime_r(&tt, &tm) == NULL || strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, cap, "@%" PRId64, t);
    return buf;
}

static bool reason_is_certificate(enum tls_reason r)
{
    switch (r) {
    case TLS_REASON_CERT_SELF_SIGNED:
    case TLS_REASON_CERT_UNTRUSTED:
    case TLS_REASON_CERT_INVALID:
    case TLS_REASON_CERT_EXPIRED:
    case TLS_REASON_CERT_NOT_YET_VALID:
    case TLS_REASON_HOSTNAME_MISMATCH:
    case TLS_REASON_WEAK_KEY:
    case TLS_REASON_WEAK_SIGNATURE: return true;
    default: return false;
    }
}

int eng_capcache_describe(const struct eng_capcache_entry *e, char *buf, size_t cap)
{
    char checked[32], until[32], na[32], fp[65], cert[96] = "";
    if (e->has_cert && reason_is_certificate(e->reason)) {
        /* 16 hex digits identify the certificate well enough for an operator. */
        static const char hex[] = "0123456789abcdef";
        for (size_t i = 0; i < 8; i++) {
            fp[2 * i] = hex[e->sha256[i] >> 4];
            fp[2 * i + 1] = hex[e->sha256[i] & 15];
        }
        fp[16] = '\0';
        snprintf(cert, sizeof(cert), ", cert sha256:%s..., notAfter %s", fp,
                 iso_time(e->not_after, na, sizeof(na)));
    }
    const char *version = e->version != 0 ? tls_version_name(e->version) : "no TLS";
    return snprintf(buf, cap, "cached %s%s (%s%s%s%s) checked %s, %s %s",
                    e->pass ? "pass" : "refusal: ", e->pass ? "" : tls_reason_name(e->reason),
                    version, e->cipher[0] ? ", " : "", e->cipher, cert,
                    iso_time(e->checked_at, checked, sizeof(checked)),
                    e->pass ? "until" : "retry after",
                    iso_time(e->expires_at, until, sizeof(until)));
}
