/*
 * queue/sched_pool.c — the slab pool behind struct queue_entry.
 *
 * Why not malloc per entry: a million 64-byte objects cost a million allocator calls
 * and (with glibc) 16 bytes of header each, and give no exact figure for
 * queue_sched_stats. Slabs of SLAB_BYTES aligned to their own size cost one call per
 * 1023 entries, let an entry find its slab by masking its address (so a slab can be
 * returned to the allocator when its last entry leaves), and make every entry 64-byte
 * aligned, which the hash tables rely on (four low bits of each slot are theirs).
 *
 * The first 64 bytes of a slab hold its header; slots are handed out from a bump
 * index first (a new slab needs no free-list set-up), then from the slab's free list.
 */
#include "queue/sched_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define SLAB_BYTES ((size_t)64 * 1024)
#define SLAB_SLOTS (SLAB_BYTES / sizeof(struct queue_entry))

struct sched_slab {
    struct sched_slab *next, *prev; /* on the partial list */
    struct queue_entry *free;       /* freed slots */
    uint32_t used;                  /* slots handed out and not returned */
    uint32_t bump;                  /* slots [1, bump) were handed out at least once */
    bool on_partial;
};

_Static_assert(sizeof(struct sched_slab) <= sizeof(struct queue_entry),
               "the slab header fits in slot 0");

static struct sched_slab *slab_of(const struct queue_entry *e)
{
    return (struct sched_slab *)((uintptr_t)e & ~(uintptr_t)(SLAB_BYTES - 1));
}

static struct queue_entry *slot(struct sched_slab *sl, size_t i)
{
    return (struct queue_entry *)sl + i;
}

/* A slab is on exactly one of the pool's two lists: partial (has a free slot) or full. */
static struct sched_slab **list_of(struct sched_pool *p, const struct sched_slab *sl)
{
    return sl->on_partial ? &p->partial : &p->full;
}

static void slab_link(struct sched_pool *p, struct sched_slab *sl, bool partial)
{
    sl->on_partial = partial;
    struct sched_slab **head = list_of(p, sl);
    sl->prev = NULL;
    sl->next = *head;
    if (*head)
        (*head)->prev = sl;
    *head = sl;
}

static void slab_unlink(struct sched_pool *p, struct sched_slab *sl)
{
    if (sl->prev)
        sl->prev->next = sl->next;
    else
        *list_of(p, sl) = sl->next;
    if (sl->next)
        sl->next->prev = sl->prev;
    sl->next = sl->prev = NULL;
}

static struct sched_slab *slab_new(struct sched_pool *p)
{
    struct sched_slab *sl = p->spare;
    if (sl) {
        p->spare = NULL;
    } else {
        sl = aligned_alloc(SLAB_BYTES, SLAB_BYTES);
        if (!sl)
            return NULL;
        p->nslabs++;
    }
    memset(sl, 0, sizeof(*sl));
    sl->bump = 1;
    slab_link(p, sl, true);
    return sl;
}

struct queue_entry *queue_sched_pool_get(struct sched_pool *p)
{
    struct sched_slab *sl = p->partial;
    if (!sl && !(sl = slab_new(p)))
        return NULL;
    struct queue_entry *e;
    if (sl->free) {
        e = sl->free;
        sl->free = e->link.free;
    } else {
        assert(sl->bump < SLAB_SLOTS);
        e = slot(sl, sl->bump++);
    }
    if (++sl->used == SLAB_SLOTS - 1) {
        slab_unlink(p, sl);
        slab_link(p, sl, false);
    }
    memset(e, 0, sizeof(*e));
    return e;
}

void queue_sched_pool_put(struct sched_pool *p, struct queue_entry *e)
{
    struct sched_slab *sl = slab_of(e);
    assert(sl->used > 0);
    e->link.free = sl->free;
    sl->free = e;
    sl->used--;
    if (sl->used > 0) {
        if (!sl->on_partial) {
            slab_unlink(p, sl);
            slab_link(p, sl, true);
        }
        return;
    }
    /* Empty: keep it as the spare, or give it back if there already is one. */
    slab_unlink(p, sl);
    if (!p->spare) {
        p->spare = sl;
    } else {
        free(sl);
        p->nslabs--;
    }
}

static void free_list(struct sched_slab *sl)
{
    while (sl) {
        struct sched_slab *next = sl->next;
        free(sl);
        sl = next;
    }
}

void queue_sched_pool_destroy(struct sched_pool *p)
{
    free_list(p->partial);
    free_list(p->full);
    free(p->spare);
    memset(p, 0, sizeof(*p));
}

size_t queue_sched_pool_bytes(const struct sched_pool *p)
{
    return p->nslabs * SLAB_BYTES;
}
