/*
 * queue/sched.c — the scheduler: the in-memory index of the queue (queue.h, "the
 * scheduler").
 *
 * An entry is in one of three states: READY (on its domain's FIFO; the domain on the
 * round-robin ring), DEFERRED (on the timer heap, sched_heap.c) or INFLIGHT (popped:
 * on neither, until the delivery attempt defers, requeues or removes it). move() is
 * the only function that changes an entry's state, and it keeps the lists, the heap
 * and the counts in step.
 *
 * Memory is taken only by queue_sched_add (entry, id slot, domain, and a heap node
 * reserved for the entry whatever its state), which reports -ENOMEM as back-pressure;
 * every later operation on an entry works without allocating, so a deferral can never
 * fail half-way.
 */
#include "queue/sched_int.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

/* One cache line per message: the pool's alignment and the id table's low bits rely
 * on entries being 64 bytes apart, and it is the index's main cost per message. */
_Static_assert(sizeof(struct queue_entry) == 64, "struct queue_entry is one cache line");

static uint64_t entry_hash_of(const void *item)
{
    return queue_sched_mix64(((const struct queue_entry *)item)->id);
}

static bool entry_eq(const void *item, const void *key)
{
    return ((const struct queue_entry *)item)->id == *(const queue_id_t *)key;
}

static uint64_t seed_from_system(const void *salt)
{
    uint64_t seed;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == (ssize_t)sizeof(seed))
        return seed;
    /* Only jitter depends on it: a weak seed is acceptable, a failure is not. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return queue_sched_mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uintptr_t)salt);
}

int queue_sched_new(const struct queue_retry_config *cfg, struct queue_sched **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    struct queue_retry_config c;
    queue_sched_retry_defaults(cfg, &c);
    /* A shrinking backoff or a jitter over 100% (negative delays) is a mistake. */
    if (c.factor_pct < 100 || c.jitter_pct > 100)
        return QUEUE_ERR_CONFIG;
    struct queue_sched *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->cfg = c;
    s->ids.hash_of = entry_hash_of;
    s->domains.hash_of = queue_sched_domain_hash_of;
    s->rng = seed_from_system(s);
    *out = s;
    return 0;
}

int queue_sched_set_retry(struct queue_sched *s, const struct queue_retry_config *cfg)
{
    if (!s)
        return -EINVAL;
    struct queue_retry_config c;
    queue_sched_retry_defaults(cfg, &c);
    if (c.factor_pct < 100 || c.jitter_pct > 100)
        return QUEUE_ERR_CONFIG;
    s->cfg = c;
    return 0;
}

void queue_sched_free(struct queue_sched *s)
{
    if (!s)
        return;
    /* Entries hold nothing but their slot and a domain reference: the slabs, domains
     * and tables go as wholes. */
    queue_sched_pool_destroy(&s->pool);
    queue_sched_domain_destroy_all(s);
    queue_sched_table_destroy(&s->ids);
    queue_sched_heap_destroy(&s->heap);
    free(s);
}

void queue_sched_seed(struct queue_sched *s, uint64_t seed)
{
    s->rng = seed;
}

/* The one writer of e->state: takes e off the structure of its state and puts it on
 * that of `to` (front: at the head of the ready queue rather than the tail). */
static void move(struct queue_sched *s, struct queue_entry *e, enum sched_state to, bool front)
{
    switch ((enum sched_state)e->state) {
    case SCHED_READY: queue_sched_ready_unlink(s, e); break;
    case SCHED_DEFERRED:
        queue_sched_heap_remove(&s->heap, e);
        e->dom->ndeferred--;
        break;
    case SCHED_INFLIGHT: break;
    }
    s->count[e->state]--;
    e->state = (uint8_t)to;
    s->count[to]++;
    switch (to) {
    case SCHED_READY:
        if (front)
            queue_sched_ready_prepend(s, e);
        else
            queue_sched_ready_append(s, e);
        break;
    case SCHED_DEFERRED:
        queue_sched_heap_push(&s->heap, e);
        e->dom->ndeferred++;
        break;
    case SCHED_INFLIGHT: break;
    }
}

int queue_sched_add(struct queue_sched *s, const struct queue_entry_info *info, int64_t now,
                    struct queue_entry **out)
{
    if (!s || !info || info->id == 0)
        return -EINVAL;
    uint64_t hash = queue_sched_mix64(info->id);
    if (queue_sched_table_find(&s->ids, hash, entry_eq, &info->id))
        return -EEXIST;
    if (queue_sched_table_reserve(&s->ids) != 0 ||
        queue_sched_heap_reserve(&s->heap, s->ids.count + 1) != 0)
        return -ENOMEM;
    struct sched_domain *d;
    int rc = queue_sched_domain_get(s, info->domain, &d);
    if (rc != 0)
        return rc;
    struct queue_entry *e = queue_sched_pool_get(&s->pool);
    if (!e) {
        queue_sched_domain_release(s, d); /* frees it if it was new */
        return -ENOMEM;
    }
    e->id = info->id;
    e->dom = d;
    e->arrival = info->arrival;
    e->next_attempt = info->next_attempt;
    e->attempts = info->attempts;
    e->nrcpts = info->nrcpts;
    e->content_size = info->content_size;
    e->flags =
            (uint8_t)((info->is_dsn ? SCHED_F_DSN : 0) | (info->delay_warned ? SCHED_F_WARNED : 0) |
                      (info->fresh ? SCHED_F_FRESH : 0));
    d->nentries++;
    s->bytes += e->content_size;
    queue_sched_table_insert(&s->ids, hash, e);
    /* Born in flight (counted there), then placed: move() stays the only writer. */
    e->state = SCHED_INFLIGHT;
    s->count[SCHED_INFLIGHT]++;
    move(s, e, info->next_attempt <= now ? SCHED_READY : SCHED_DEFERRED, false);
    if (out)
        *out = e;
    return 0;
}

unsigned queue_sched_promote(struct queue_sched *s, int64_t now)
{
    unsigned n = 0;
    const struct sched_heap_node *top;
    while ((top = queue_sched_heap_top(&s->heap)) && top->when <= now) {
        move(s, top->e, SCHED_READY, false);
        n++;
    }
    return n;
}

int64_t queue_sched_next_due(const struct queue_sched *s, int64_t now)
{
    const struct sched_heap_node *top = queue_sched_heap_top(&s->heap);
    if (!top)
        return -1;
    return top->when <= now ? 0 : top->when - now;
}

struct queue_entry *queue_sched_pop(struct queue_sched *s)
{
    struct sched_domain *d = s->cursor;
    if (!d)
        return NULL;
    struct queue_entry *e = d->head;
    /* Advance first: if e was d's last ready entry, d leaves the ring in move(). */
    s->cursor = d->ring_next;
    move(s, e, SCHED_INFLIGHT, false);
    return e;
}

struct queue_entry *queue_sched_pop_domain(struct queue_sched *s, const char *domain)
{
    struct sched_domain *d = queue_sched_domain_find(s, domain);
    if (!d || !d->head)
        return NULL;
    struct queue_entry *e = d->head;
    move(s, e, SCHED_INFLIGHT, false);
    return e;
}

enum queue_defer_verdict queue_sched_defer(struct queue_sched *s, struct queue_entry *e,
                                           int64_t now, int64_t *next)
{
    if (e->state != SCHED_INFLIGHT) /* tolerated: an operator's "defer" of a queued one */
        move(s, e, SCHED_INFLIGHT, false);
    if (e->attempts < UINT16_MAX)
        e->attempts++;
    /* A DSN follows the same clock but is never warned about: there is nobody to warn
     * (its sender is null), and a DSN about a DSN is forbidden (RFC 3461 section 6.2). */
    bool warned = (e->flags & (SCHED_F_WARNED | SCHED_F_DSN)) != 0;
    int64_t at;
    enum queue_defer_verdict v =
            queue_sched_retry_plan(&s->cfg, &s->rng, e->arrival, e->attempts, &warned, now, &at);
    if (v == QUEUE_DEFER_WARN)
        e->flags |= SCHED_F_WARNED;
    if (next)
        *next = at;
    if (v == QUEUE_DEFER_EXPIRE)
        return v; /* stays in flight: the caller bounces it, then removes it */
    e->next_attempt = at;
    move(s, e, SCHED_DEFERRED, false);
    return v;
}

void queue_sched_requeue(struct queue_sched *s, struct queue_entry *e)
{
    /* At the head: the attempt did not happen, so the entry keeps its turn. */
    if (e->state != SCHED_READY)
        move(s, e, SCHED_READY, true);
}

void queue_sched_remove(struct queue_sched *s, struct queue_entry *e)
{
    if (!s || !e)
        return;
    move(s, e, SCHED_INFLIGHT, false);
    s->count[SCHED_INFLIGHT]--;
    s->bytes -= e->content_size;
    queue_sched_table_delete(&s->ids, queue_sched_mix64(e->id), e);
    struct sched_domain *d = e->dom;
    d->nentries--;
    queue_sched_domain_release(s, d);
    queue_sched_pool_put(&s->pool, e);
    queue_sched_heap_trim(&s->heap, s->ids.count);
}

struct queue_entry *queue_sched_find(struct queue_sched *s, queue_id_t id)
{
    return queue_sched_table_find(&s->ids, queue_sched_mix64(id), entry_eq, &id);
}

/*
 * Flushed entries become ready in id order (arrival order), which is what an operator
 * flushing a backlog expects. Done in O(n + k log n) without memory: the keys of the
 * chosen nodes are set below any real time (a deferred entry's time is > the `now` it
 * was deferred at, so never INT64_MIN), the heap is rebuilt, and the chosen ones are
 * then taken off its top, ties broken by id.
 */
unsigned queue_sched_flush(struct queue_sched *s, const char *domain, int64_t now)
{
    struct sched_domain *d = NULL;
    if (domain && (!(d = queue_sched_domain_find(s, domain)) || d->ndeferred == 0))
        return 0;
    struct sched_heap *h = &s->heap;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!d || h->v[i].e->dom == d)
            h->v[i].when = INT64_MIN;
    }
    queue_sched_heap_build(h);
    unsigned n = 0;
    const struct sched_heap_node *top;
    while ((top = queue_sched_heap_top(h)) && top->when == INT64_MIN) {
        top->e->next_attempt = now;
        move(s, top->e, SCHED_READY, false);
        n++;
    }
    return n;
}

/* ---- the operator's views and actions ------------------------------------------------- */

static const char *const entry_state_names[] = {
#define QUEUE_ENTRY_NAME(name, str) str,
    QUEUE_ENTRY_STATES(QUEUE_ENTRY_NAME)
#undef QUEUE_ENTRY_NAME
};

const char *queue_entry_state_name(enum queue_entry_state st)
{
    return (unsigned)st < sizeof(entry_state_names) / sizeof(entry_state_names[0])
                   ? entry_state_names[st]
                   : "invalid";
}

void queue_sched_take(struct queue_sched *s, struct queue_entry *e)
{
    if (e->state != SCHED_INFLIGHT)
        move(s, e, SCHED_INFLIGHT, false);
}

struct each_entry {
    const struct sched_domain *dom; /* NULL = every domain */
    queue_sched_entry_fn fn;
    void *arg;
};

static bool each_entry(void *arg, void *item)
{
    struct each_entry *x = arg;
    const struct queue_entry *e = item;
    return (x->dom && e->dom != x->dom) || x->fn(x->arg, e);
}

void queue_sched_foreach(const struct queue_sched *s, const char *domain, queue_sched_entry_fn fn,
                         void *arg)
{
    struct each_entry x = { NULL, fn, arg };
    if (domain && !(x.dom = queue_sched_domain_find(s, domain)))
        return;
    queue_sched_table_each(&s->ids, each_entry, &x);
}

struct each_domain {
    queue_sched_domain_fn fn;
    void *arg;
};

static bool each_domain(void *arg, void *item)
{
    struct each_domain *x = arg;
    const struct sched_domain *d = item;
    struct queue_sched_domain_info info = {
        .name = d->name,
        .entries = d->nentries,
        .ready = d->nready,
        .deferred = d->ndeferred,
        .inflight = d->nentries - d->nready - d->ndeferred,
    };
    return x->fn(x->arg, &info);
}

void queue_sched_foreach_domain(const struct queue_sched *s, queue_sched_domain_fn fn, void *arg)
{
    struct each_domain x = { fn, arg };
    queue_sched_table_each(&s->domains, each_domain, &x);
}

enum queue_entry_state queue_entry_state(const struct queue_entry *e)
{
    return (enum queue_entry_state)e->state;
}

int64_t queue_entry_arrival(const struct queue_entry *e)
{
    return e->arrival;
}

queue_id_t queue_entry_id(const struct queue_entry *e)
{
    return e->id;
}

const char *queue_entry_domain(const struct queue_entry *e)
{
    return e->dom->name;
}

int64_t queue_entry_next_attempt(const struct queue_entry *e)
{
    return e->next_attempt;
}

uint16_t queue_entry_attempts(const struct queue_entry *e)
{
    return e->attempts;
}

bool queue_entry_fresh(const struct queue_entry *e)
{
    return (e->flags & SCHED_F_FRESH) != 0;
}

void queue_entry_mark_updated(struct queue_entry *e)
{
    e->flags &= (uint8_t)~SCHED_F_FRESH;
}

void queue_sched_stats(const struct queue_sched *s, struct queue_sched_stats *out)
{
    *out = (struct queue_sched_stats){
        .entries = s->ids.count,
        .ready = s->count[SCHED_READY],
        .deferred = s->count[SCHED_DEFERRED],
        .inflight = s->count[SCHED_INFLIGHT],
        .domains = s->domains.count,
        .bytes = s->bytes,
        .index_bytes = sizeof(*s) + queue_sched_pool_bytes(&s->pool) +
                       queue_sched_table_bytes(&s->ids) + queue_sched_table_bytes(&s->domains) +
                       s->domain_bytes + (size_t)s->heap.cap * sizeof(struct sched_heap_node),
    };
}
