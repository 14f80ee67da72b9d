/*
 * queue/sched_domain.c — destination domains: interning, their ready queues, and the
 * round-robin ring.
 *
 * A domain is stored once (its name, lowercase, in the same allocation) and referenced
 * by each of its entries; it is freed when its last entry leaves, so a spool that saw
 * a million domains last week does not keep them. Its ready entries form an intrusive
 * FIFO (the entries' own links, no allocation). Domains with ready entries sit on a
 * circular ring; the cursor is the next one to serve, and a domain that becomes ready
 * joins just before the cursor, i.e. at the end of the current round, so it waits at
 * most one round and cannot jump ahead of domains already waiting.
 */
#include "queue/sched_int.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* FNV-1a over the lowercase name, then mixed: FNV alone leaves the low bits, which
 * pick the slot, weakly spread for names that differ only at the end. */
static uint64_t name_hash(const char *name, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)lower(name[i]);
        h *= 0x100000001b3ULL;
    }
    return queue_sched_mix64(h);
}

uint64_t queue_sched_domain_hash_of(const void *item)
{
    return ((const struct sched_domain *)item)->hash;
}

struct name_key {
    const char *name;
    size_t len;
};

static bool domain_eq(const void *item, const void *key)
{
    const struct sched_domain *d = item;
    const struct name_key *k = key;
    if (d->len != k->len)
        return false;
    for (size_t i = 0; i < k->len; i++) {
        if (d->name[i] != lower(k->name[i]))
            return false;
    }
    return true;
}

static size_t domain_size(size_t len)
{
    /* What the allocator hands out, near enough: malloc rounds to 16. */
    return (sizeof(struct sched_domain) + len + 1 + 15) & ~(size_t)15;
}

struct sched_domain *queue_sched_domain_find(const struct queue_sched *s, const char *name)
{
    if (!name)
        return NULL;
    struct name_key k = { name, strnlen(name, QUEUE_DOMAIN_MAX + 1) };
    if (k.len == 0 || k.len > QUEUE_DOMAIN_MAX)
        return NULL;
    return queue_sched_table_find(&s->domains, name_hash(name, k.len), domain_eq, &k);
}

int queue_sched_domain_get(struct queue_sched *s, const char *name, struct sched_domain **out)
{
    if (!name)
        return -EINVAL;
    struct name_key k = { name, strnlen(name, QUEUE_DOMAIN_MAX + 1) };
    if (k.len == 0 || k.len > QUEUE_DOMAIN_MAX)
        return -EINVAL;
    uint64_t hash = name_hash(name, k.len);
    struct sched_domain *d = queue_sched_table_find(&s->domains, hash, domain_eq, &k);
    if (d) {
        *out = d;
        return 0;
    }
    if (queue_sched_table_reserve(&s->domains) != 0)
        return -ENOMEM;
    d = malloc(sizeof(*d) + k.len + 1);
    if (!d)
        return -ENOMEM;
    memset(d, 0, sizeof(*d));
    d->hash = hash;
    d->len = (uint16_t)k.len;
    for (size_t i = 0; i < k.len; i++)
        d->name[i] = lower(name[i]);
    d->name[k.len] = '\0';
    queue_sched_table_insert(&s->domains, hash, d);
    s->domain_bytes += domain_size(k.len);
    *out = d;
    return 0;
}

void queue_sched_domain_release(struct queue_sched *s, struct sched_domain *d)
{
    if (d->nentries > 0)
        return;
    assert(d->nready == 0 && d->ndeferred == 0 && !d->ring_next);
    queue_sched_table_delete(&s->domains, d->hash, d);
    s->domain_bytes -= domain_size(d->len);
    free(d);
}

void queue_sched_domain_destroy_all(struct queue_sched *s)
{
    struct sched_table *t = &s->domains;
    if (t->slots) {
        for (size_t i = 0; i <= t->mask; i++) {
            if (t->slots[i])
                free((void *)(t->slots[i] & ~(uintptr_t)15));
        }
    }
    queue_sched_table_destroy(t);
    s->domain_bytes = 0;
    s->cursor = NULL;
}

/* ---- the ring -------------------------------------------------------------------------- */

static void ring_join(struct queue_sched *s, struct sched_domain *d)
{
    struct sched_domain *c = s->cursor;
    if (!c) {
        d->ring_next = d->ring_prev = d;
        s->cursor = d;
        return;
    }
    d->ring_next = c;
    d->ring_prev = c->ring_prev;
    c->ring_prev->ring_next = d;
    c->ring_prev = d;
}

static void ring_leave(struct queue_sched *s, struct sched_domain *d)
{
    if (d->ring_next == d) {
        s->cursor = NULL;
    } else {
        d->ring_prev->ring_next = d->ring_next;
        d->ring_next->ring_prev = d->ring_prev;
        if (s->cursor == d)
            s->cursor = d->ring_next;
    }
    d->ring_next = d->ring_prev = NULL;
}

/* ---- ready queues ------------------------------------------------------------------------ */

static void became_ready(struct queue_sched *s, struct queue_entry *e)
{
    if (e->dom->nready++ == 0)
        ring_join(s, e->dom);
}

void queue_sched_ready_append(struct queue_sched *s, struct queue_entry *e)
{
    struct sched_domain *d = e->dom;
    e->link.q.next = NULL;
    e->link.q.prev = d->tail;
    if (d->tail)
        d->tail->link.q.next = e;
    else
        d->head = e;
    d->tail = e;
    became_ready(s, e);
}

void queue_sched_ready_prepend(struct queue_sched *s, struct queue_entry *e)
{
    struct sched_domain *d = e->dom;
    e->link.q.prev = NULL;
    e->link.q.next = d->head;
    if (d->head)
        d->head->link.q.prev = e;
    else
        d->tail = e;
    d->head = e;
    became_ready(s, e);
}

void queue_sched_ready_unlink(struct queue_sched *s, struct queue_entry *e)
{
    struct sched_domain *d = e->dom;
    assert(d->nready > 0);
    if (e->link.q.prev)
        e->link.q.prev->link.q.next = e->link.q.next;
    else
        d->head = e->link.q.next;
    if (e->link.q.next)
        e->link.q.next->link.q.prev = e->link.q.prev;
    else
        d->tail = e->link.q.prev;
    e->link.q.next = e->link.q.prev = NULL;
    if (--d->nready == 0)
        ring_leave(s, d);
}
