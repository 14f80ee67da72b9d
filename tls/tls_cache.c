/*
 * tls/tls_cache.c — the client session cache: per worker thread, bounded, least
 * recently used out. A hash map (chained buckets) finds an entry by its key; a doubly
 * linked list keeps the use order. All entries are allocated when the cache is made,
 * so storing and looking up never allocate. No locks: one cache belongs to one thread.
 */
#include "tls/tls_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cache_entry {
    struct cache_entry *hnext; /* bucket chain, or the free list */
    struct cache_entry *prev;  /* use order: prev is more recently used */
    struct cache_entry *next;
    uint64_t hash;
    SSL_SESSION *session; /* one reference, owned by the cache */
    char key[TLS_CACHE_KEY_MAX];
};

struct tls_cache {
    size_t max_entries;
    size_t nbuckets; /* power of two */
    struct cache_entry **buckets;
    struct cache_entry *pool; /* max_entries entries */
    struct cache_entry *free_list;
    struct cache_entry *mru; /* most recently used */
    struct cache_entry *lru; /* least recently used: evicted first */
    struct tls_memo *memo;
    struct tls_cache_stats stats;
};

/* Verified chains remembered: enough for the MX hosts a worker talks to in an hour,
 * about 1.6 KiB each. */
#define TLS_MEMO_SLOTS 1024

/* FNV-1a: keys are short host names; good enough spread for a bucket index. */
static uint64_t key_hash(const char *key)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return h;
}

int tls_cache_new(size_t max_entries, struct tls_cache **out)
{
    if (out == NULL || max_entries == 0 || max_entries > (SIZE_MAX / 4) / sizeof(void *))
        return -EINVAL;
    struct tls_cache *cache = calloc(1, sizeof(*cache));
    if (cache == NULL)
        return -ENOMEM;
    cache->max_entries = max_entries;
    /* About two buckets per entry keeps chains short without a resize. */
    cache->nbuckets = 1;
    while (cache->nbuckets < max_entries * 2)
        cache->nbuckets <<= 1;
    cache->buckets = calloc(cache->nbuckets, sizeof(*cache->buckets));
    cache->pool = calloc(max_entries, sizeof(*cache->pool));
    if (cache->buckets == NULL || cache->pool == NULL ||
        tls_memo_new(TLS_MEMO_SLOTS, &cache->memo) < 0) {
        free(cache->buckets);
        free(cache->pool);
        free(cache);
        return -ENOMEM;
    }
    for (size_t i = 0; i < max_entries; i++) {
        cache->pool[i].hnext = cache->free_list;
        cache->free_list = &cache->pool[i];
    }
    *out = cache;
    return 0;
}

void tls_cache_free(struct tls_cache *cache)
{
    if (cache == NULL)
        return;
    for (struct cache_entry *e = cache->mru; e != NULL; e = e->next)
        SSL_SESSION_free(e->session);
    tls_memo_free(cache->memo);
    free(cache->buckets);
    free(cache->pool);
    free(cache);
}

struct tls_memo *tls_cache_memo(struct tls_cache *cache)
{
    return cache->memo;
}

void tls_cache_count_verify(struct tls_cache *cache, bool hit)
{
    if (hit)
        cache->stats.verify_hits++;
    else
        cache->stats.verify_misses++;
}

void tls_cache_stats(const struct tls_cache *cache, struct tls_cache_stats *out)
{
    *out = cache->stats;
}

static struct cache_entry **bucket_of(struct tls_cache *cache, uint64_t hash)
{
    return &cache->buckets[hash & (cache->nbuckets - 1)];
}

/* Returns the slot pointing at the entry for key (so it can be unlinked), or NULL. */
static struct cache_entry **find_slot(struct tls_cache *cache, const char *key, uint64_t hash)
{
    for (struct cache_entry **slot = bucket_of(cache, hash); *slot; slot = &(*slot)->hnext) {
        if ((*slot)->hash == hash && strcmp((*slot)->key, key) == 0)
            return slot;
    }
    return NULL;
}

static void lru_unlink(struct tls_cache *cache, struct cache_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        cache->mru = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        cache->lru = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(struct tls_cache *cache, struct cache_entry *e)
{
    e->prev = NULL;
    e->next = cache->mru;
    if (cache->mru)
        cache->mru->prev = e;
    cache->mru = e;
    if (cache->lru == NULL)
        cache->lru = e;
}

/* Unlinks the entry *slot points at, drops its session and returns it to the pool. */
static void entry_remove(struct tls_cache *cache, struct cache_entry **slot)
{
    struct cache_entry *e = *slot;
    *slot = e->hnext;
    lru_unlink(cache, e);
    SSL_SESSION_free(e->session);
    e->session = NULL;
    e->hnext = cache->free_list;
    cache->free_list = e;
    cache->stats.entries--;
}

static bool session_expired(const SSL_SESSION *session, uint64_t now)
{
    return SSL_SESSION_get_time(session) + SSL_SESSION_get_timeout(session) < now;
}

SSL_SESSION *tls_cache_take(struct tls_cache *cache, const char *key)
{
    if (strlen(key) >= TLS_CACHE_KEY_MAX) {
        cache->stats.misses++;
        return NULL;
    }
    uint64_t hash = key_hash(key);
    struct cache_entry **slot = find_slot(cache, key, hash);
    if (slot == NULL) {
        cache->stats.misses++;
        return NULL;
    }
    struct cache_entry *e = *slot;
    if (session_expired(e->session, (uint64_t)time(NULL))) {
        entry_remove(cache, slot);
        cache->stats.expired++;
        cache->stats.misses++;
        return NULL;
    }
    cache->stats.hits++;
    SSL_SESSION *session = e->session;
    if (SSL_SESSION_should_be_single_use(session)) {
        /* A TLS 1.3 ticket offered twice would let an observer link the two
         * connections; the cache's reference becomes the caller's. */
        e->session = NULL;
        entry_remove(cache, slot);
        return session;
    }
    lru_unlink(cache, e);
    lru_push_front(cache, e);
    SSL_SESSION_up_ref(session);
    return session;
}

void tls_cache_put(struct tls_cache *cache, const char *key, SSL_SESSION *session)
{
    if (strlen(key) >= TLS_CACHE_KEY_MAX)
        return;
    uint64_t hash = key_hash(key);
    struct cache_entry **slot = find_slot(cache, key, hash);
    if (slot != NULL) {
        /* The newest session for a destination replaces the older one. */
        struct cache_entry *e = *slot;
        SSL_SESSION_up_ref(session);
        SSL_SESSION_free(e->session);
        e->session = session;
        lru_unlink(cache, e);
        lru_push_front(cache, e);
        cache->stats.stores++;
        return;
    }
    if (cache->free_list == NULL) {
        struct cache_entry *victim = cache->lru;
        entry_remove(cache, find_slot(cache, victim->key, victim->hash));
        cache->stats.evictions++;
    }
    struct cache_entry *e = cache->free_list;
    cache->free_list = e->hnext;
    memcpy(e->key, key, strlen(key) + 1);
    e->hash = hash;
    SSL_SESSION_up_ref(session);
    e->session = session;
    struct cache_entry **bucket = bucket_of(cache, hash);
    e->hnext = *bucket;
    *bucket = e;
    lru_push_front(cache, e);
    cache->stats.entries++;
    cache->stats.stores++;
}
