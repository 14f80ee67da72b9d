/*
 * queue/sched_table.c — the open-addressing hash table behind the id index and the
 * domain interning (see sched_int.h for the layout).
 *
 * Linear probing with Robin Hood placement: an insert takes the slot of any item that
 * is closer to its home than the newcomer would be, so every item sits at most a few
 * slots from its home and a miss ends early. Each slot keeps the item's distance from
 * its home in the pointer's four low bits (items are 16-byte aligned; 15 means "15
 * or more", then recomputed from the item), which is what makes the table cheap with
 * millions of entries far bigger than the caches: a probe skips slots whose home
 * differs without touching the item (a cache miss), and deletion shifts the rest of
 * the cluster back one slot by their stored distances alone (no tombstones, which
 * would pile up in a queue that adds and removes millions of ids a day).
 */
#include "queue/sched_int.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#define DIST_MASK ((uintptr_t)15)

static void *item_of(uintptr_t slot)
{
    return (void *)(slot & ~DIST_MASK);
}

static uintptr_t encode(void *item, size_t dist)
{
    assert(((uintptr_t)item & DIST_MASK) == 0);
    return (uintptr_t)item | (dist < DIST_MASK ? dist : DIST_MASK);
}

/* The distance of the item in slot i from its home slot. */
static size_t dist_of(const struct sched_table *t, size_t i)
{
    size_t d = t->slots[i] & DIST_MASK;
    if (d < DIST_MASK)
        return d;
    return (i - (t->hash_of(item_of(t->slots[i])) & t->mask)) & t->mask;
}

uint64_t queue_sched_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

void *queue_sched_table_find(const struct sched_table *t, uint64_t hash,
                             bool (*eq)(const void *item, const void *key), const void *key)
{
    if (!t->slots)
        return NULL;
    for (size_t i = hash & t->mask, dist = 0;; i = (i + 1) & t->mask, dist++) {
        if (!t->slots[i])
            return NULL;
        size_t d = dist_of(t, i);
        if (d < dist)
            return NULL; /* Robin Hood: the key would have taken this slot */
        if (d == dist && eq(item_of(t->slots[i]), key))
            return item_of(t->slots[i]);
    }
}

static void place(struct sched_table *t, uint64_t hash, void *item)
{
    size_t dist = 0;
    for (size_t i = hash & t->mask;; i = (i + 1) & t->mask, dist++) {
        if (!t->slots[i]) {
            t->slots[i] = encode(item, dist);
            return;
        }
        size_t d = dist_of(t, i);
        if (d < dist) {
            /* Take the slot of the item nearer its home; carry that one on. */
            void *displaced = item_of(t->slots[i]);
            t->slots[i] = encode(item, dist);
            item = displaced;
            dist = d;
        }
    }
}

/* Moves every item into a new array of cap slots: 0 or -ENOMEM (t unchanged). */
static int resize(struct sched_table *t, size_t cap)
{
    uintptr_t *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    struct sched_table old = *t;
    t->slots = slots;
    t->mask = cap - 1;
    if (old.slots) {
        for (size_t i = 0; i <= old.mask; i++) {
            if (old.slots[i]) {
                void *item = item_of(old.slots[i]);
                place(t, t->hash_of(item), item);
            }
        }
        free(old.slots);
    }
    return 0;
}

int queue_sched_table_reserve(struct sched_table *t)
{
    if (!t->slots)
        return resize(t, SCHED_TABLE_MIN);
    size_t cap = t->mask + 1;
    if ((t->count + 1) * 4 <= cap * 3)
        return 0;
    if (cap > SIZE_MAX / 2 / sizeof(uintptr_t))
        return -ENOMEM;
    return resize(t, cap * 2);
}

void queue_sched_table_insert(struct sched_table *t, uint64_t hash, void *item)
{
    assert(t->slots && (t->count + 1) * 4 <= (t->mask + 1) * 3);
    place(t, hash, item);
    t->count++;
}

void queue_sched_table_delete(struct sched_table *t, uint64_t hash, const void *item)
{
    /* The item is known: compare pointers, never touch items on the way. */
    size_t i = hash & t->mask;
    while (item_of(t->slots[i]) != item) {
        assert(t->slots[i]);
        i = (i + 1) & t->mask;
    }
    /* Backward shift: the rest of the cluster, up to an empty slot or an item at its
     * home, moves back one slot, one step nearer home. */
    for (size_t j = (i + 1) & t->mask; t->slots[j]; j = (j + 1) & t->mask) {
        size_t d = dist_of(t, j);
        if (d == 0)
            break;
        t->slots[i] = encode(item_of(t->slots[j]), d - 1);
        i = j;
    }
    t->slots[i] = 0;
    t->count--;
    /* Shrink below 1/8 full: the array is the biggest part of an idle index. Failing
     * to shrink is harmless, so its error is ignored. */
    size_t cap = t->mask + 1;
    if (cap > SCHED_TABLE_MIN && t->count * 8 < cap)
        (void)resize(t, cap / 2);
}

void queue_sched_table_destroy(struct sched_table *t)
{
    free(t->slots);
    t->slots = NULL;
    t->mask = 0;
    t->count = 0;
}

size_t queue_sched_table_bytes(const struct sched_table *t)
{
    return t->slots ? (t->mask + 1) * sizeof(*t->slots) : 0;
}

void queue_sched_table_each(const struct sched_table *t, bool (*fn)(void *arg, void *item),
                            void *arg)
{
    if (!t->slots)
        return;
    for (size_t i = 0; i <= t->mask; i++)
        if (t->slots[i] && !fn(arg, item_of(t->slots[i])))
            return;
}
