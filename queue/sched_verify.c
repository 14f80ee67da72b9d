/*
 * queue/sched_verify.c — queue_sched_verify: every invariant of the index checked
 * from scratch, for the scheduler's tests (the randomized model test runs it between
 * operations). O(entries + domains); allocates a scratch array, and is never called
 * by the engine.
 */
#include "queue/sched_int.h"

#include <errno.h>
#include <stdlib.h>

#define CHECK(cond)         \
    do {                    \
        if (!(cond)) {      \
            rc = -__LINE__; \
            goto out;       \
        }                   \
    } while (0)

#define ITEM(slot) ((void *)((slot) & ~(uintptr_t)15))

struct tally {
    uint64_t entries, ready, deferred;
};

/* The slot index of item in t (found by probing from its home, as a lookup would). */
static size_t slot_of(const struct sched_table *t, const void *item)
{
    size_t i = t->hash_of(item) & t->mask;
    while (t->slots[i] && ITEM(t->slots[i]) != item)
        i = (i + 1) & t->mask;
    return t->slots[i] ? i : SIZE_MAX;
}

static bool id_eq(const void *item, const void *key)
{
    return ((const struct queue_entry *)item)->id == *(const queue_id_t *)key;
}

static bool heap_before(const struct sched_heap_node *a, const struct sched_heap_node *b)
{
    return a->when != b->when ? a->when < b->when : a->e->id < b->e->id;
}

int queue_sched_verify(const struct queue_sched *s)
{
    int rc = 0;
    const struct sched_table *ids = &s->ids, *doms = &s->domains;
    struct tally *tally = NULL;
    if (doms->slots) {
        tally = calloc(doms->mask + 1, sizeof(*tally));
        if (!tally)
            return -ENOMEM;
    }
    uint64_t bytes = 0, by_state[3] = { 0 }, count = 0;

    /* Every entry: reachable in the id table, in a state, with a live domain. */
    if (ids->slots) {
        for (size_t i = 0; i <= ids->mask; i++) {
            if (!ids->slots[i])
                continue;
            const struct queue_entry *e = ITEM(ids->slots[i]);
            count++;
            size_t dist = (i - (queue_sched_mix64(e->id) & ids->mask)) & ids->mask;
            CHECK((ids->slots[i] & 15) == (dist < 15 ? dist : 15));
            CHECK(slot_of(ids, e) == i);
            CHECK(queue_sched_table_find(ids, queue_sched_mix64(e->id), id_eq, &e->id) == e);
            CHECK(e->state <= SCHED_INFLIGHT);
            by_state[e->state]++;
            bytes += e->content_size;
            CHECK(doms->slots);
            size_t di = slot_of(doms, e->dom);
            CHECK(di != SIZE_MAX);
            tally[di].entries++;
            tally[di].ready += e->state == SCHED_READY;
            tally[di].deferred += e->state == SCHED_DEFERRED;
        }
    }
    CHECK(count == ids->count);
    CHECK(by_state[0] == s->count[0] && by_state[1] == s->count[1] && by_state[2] == s->count[2]);
    CHECK(bytes == s->bytes);

    /* Every domain: counts match its entries, its FIFO is consistent, it is on the
     * ring exactly when it has ready entries. */
    uint64_t on_ring = 0, ndoms = 0;
    if (doms->slots) {
        for (size_t i = 0; i <= doms->mask; i++) {
            if (!doms->slots[i])
                continue;
            const struct sched_domain *d = ITEM(doms->slots[i]);
            ndoms++;
            CHECK(d->nentries > 0);
            CHECK(d->nentries == tally[i].entries && d->nready == tally[i].ready &&
                  d->ndeferred == tally[i].deferred);
            uint64_t n = 0;
            const struct queue_entry *prev = NULL;
            for (const struct queue_entry *e = d->head; e; e = e->link.q.next) {
                CHECK(e->dom == d && e->state == SCHED_READY && e->link.q.prev == prev);
                prev = e;
                CHECK(++n <= d->nready);
            }
            CHECK(n == d->nready && d->tail == prev);
            CHECK((d->nready > 0) == (d->ring_next != NULL));
            on_ring += d->nready > 0;
        }
    }
    CHECK(ndoms == doms->count);

    /* The ring: a consistent circle through exactly the ready domains. */
    uint64_t n = 0;
    if (s->cursor) {
        const struct sched_domain *d = s->cursor;
        do {
            CHECK(d->nready > 0 && d->ring_next->ring_prev == d);
            CHECK(++n <= on_ring);
            d = d->ring_next;
        } while (d != s->cursor);
    }
    CHECK(n == on_ring);

    /* The heap: exactly the deferred entries, indices right, ordered. */
    const struct sched_heap *h = &s->heap;
    CHECK(h->n == s->count[SCHED_DEFERRED] && h->cap >= ids->count);
    for (uint32_t i = 0; i < h->n; i++) {
        const struct queue_entry *e = h->v[i].e;
        CHECK(e->state == SCHED_DEFERRED && e->link.heap == i && h->v[i].when == e->next_attempt);
        CHECK(i == 0 || !heap_before(&h->v[i], &h->v[(i - 1) / 2]));
    }
out:
    free(tally);
    return rc;
}
