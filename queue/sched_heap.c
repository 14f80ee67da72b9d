/*
 * queue/sched_heap.c — the deferred entries' timer: a binary min-heap on (next attempt,
 * id), each entry remembering its index so that removal (an operator deleting a
 * deferred message, a flush) is O(log n).
 *
 * Why a heap and not a timer wheel: retry times here span one second to days (the
 * backoff caps at an hour, max_age is days, an operator may defer for a week), so a
 * wheel needs several cascading levels, and it gives no exact "seconds to the next
 * due entry" without scanning. The heap is exact, has no tuning, costs 16 bytes per
 * deferred entry, and its O(log n) is cheap at the rates that matter: a delivery
 * attempt (DNS, TLS, SMTP) costs thousands of times more than a sift of 20 levels
 * (bench_sched_defer_promote measures it). Ties on time break by id, i.e. by
 * arrival, so promotion order is deterministic.
 */
#include "queue/sched_int.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#define HEAP_MIN 64

static bool before(const struct sched_heap_node *a, const struct sched_heap_node *b)
{
    if (a->when != b->when)
        return a->when < b->when;
    return a->e->id < b->e->id;
}

static void set(struct sched_heap *h, uint32_t i, struct sched_heap_node n)
{
    h->v[i] = n;
    n.e->link.heap = i;
}

static void sift_up(struct sched_heap *h, uint32_t i)
{
    struct sched_heap_node n = h->v[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!before(&n, &h->v[parent]))
            break;
        set(h, i, h->v[parent]);
        i = parent;
    }
    set(h, i, n);
}

static void sift_down(struct sched_heap *h, uint32_t i)
{
    struct sched_heap_node n = h->v[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= h->n)
            break;
        if (child + 1 < h->n && before(&h->v[child + 1], &h->v[child]))
            child++;
        if (!before(&h->v[child], &n))
            break;
        set(h, i, h->v[child]);
        i = child;
    }
    set(h, i, n);
}

static int resize(struct sched_heap *h, uint32_t cap)
{
    struct sched_heap_node *v = realloc(h->v, (size_t)cap * sizeof(*v));
    if (!v)
        return -ENOMEM;
    h->v = v;
    h->cap = cap;
    return 0;
}

int queue_sched_heap_reserve(struct sched_heap *h, size_t need)
{
    if (need <= h->cap)
        return 0;
    if (need > UINT32_MAX / 2)
        return -ENOMEM;
    uint32_t cap = h->cap ? h->cap : HEAP_MIN;
    while (cap < need)
        cap *= 2;
    return resize(h, cap);
}

void queue_sched_heap_push(struct sched_heap *h, struct queue_entry *e)
{
    assert(h->n < h->cap);
    uint32_t i = h->n++;
    h->v[i] = (struct sched_heap_node){ .when = e->next_attempt, .e = e };
    sift_up(h, i);
}

void queue_sched_heap_remove(struct sched_heap *h, struct queue_entry *e)
{
    uint32_t i = e->link.heap;
    assert(i < h->n && h->v[i].e == e);
    uint32_t last = --h->n;
    if (i != last) {
        h->v[i] = h->v[last];
        /* The moved node may belong above or below the hole. */
        if (i > 0 && before(&h->v[i], &h->v[(i - 1) / 2]))
            sift_up(h, i);
        else
            sift_down(h, i);
    }
}

void queue_sched_heap_build(struct sched_heap *h)
{
    for (uint32_t i = 0; i < h->n; i++)
        h->v[i].e->link.heap = i;
    for (uint32_t i = h->n / 2; i-- > 0;)
        sift_down(h, i);
}

void queue_sched_heap_trim(struct sched_heap *h, size_t need)
{
    /* Halve below 1/4 of what must stay reserved; a failed shrink just keeps the
     * bigger array. */
    if (h->cap > HEAP_MIN && need < h->cap / 4)
        (void)resize(h, h->cap / 2);
}

void queue_sched_heap_destroy(struct sched_heap *h)
{
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}
