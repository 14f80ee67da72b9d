/*
 * queue/sched_int.h — the scheduler's private layout, shared by queue/sched*.c and by
 * the scheduler's own tests (tests/queue/test_sched.c, test_retry.c), which use the
 * seeding and verification hooks at the end. Nothing else includes it.
 *
 * Memory is the design constraint: a busy spool can hold millions of messages, and
 * the index must stay a small fraction of the content it describes. Per message the
 * index costs one 64-byte struct queue_entry (from a slab pool), one 8-byte slot in
 * the id table (at most 3/4 full, so ~16 bytes per entry) and one 16-byte heap node
 * (reserved for every entry, deferred or not, so that deferring never needs memory):
 * about 100 bytes per message at a million (test_sched.c measures it). Domains are
 * interned once and shared by all their entries; there are no per-message strings.
 */
#ifndef FLOORMTA_QUEUE_SCHED_INT_H
#define FLOORMTA_QUEUE_SCHED_INT_H

#include "queue/queue.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- entries ---------------------------------------------------------------------------- */

/* In the order of the public enum queue_entry_state (queue_entry_state casts). */
enum sched_state {
    SCHED_READY = QUEUE_ENTRY_READY,       /* on its domain's ready queue */
    SCHED_DEFERRED = QUEUE_ENTRY_DEFERRED, /* on the timer heap */
    SCHED_INFLIGHT = QUEUE_ENTRY_INFLIGHT, /* popped: in neither, owned by an attempt */
};

#define SCHED_F_DSN    0x01u
#define SCHED_F_WARNED 0x02u
#define SCHED_F_FRESH  0x04u /* no state file: see queue_entry_fresh */

struct sched_domain;

/* One queued message. Exactly 64 bytes (a cache line; checked in sched.c): the link
 * fields are a union because an entry is on at most one structure at a time. */
struct queue_entry {
    queue_id_t id;
    struct sched_domain *dom; /* interned; holds one reference */
    union {
        struct {
            struct queue_entry *next, *prev;
        } q;                      /* READY: the domain's FIFO */
        uint32_t heap;            /* DEFERRED: index in the heap array */
        struct queue_entry *free; /* in the pool's free list */
    } link;
    int64_t next_attempt;
    int64_t arrival;
    uint64_t content_size;
    uint16_t attempts;
    uint16_t nrcpts;
    uint8_t state; /* enum sched_state */
    uint8_t flags; /* SCHED_F_* */
};

/* ---- entry pool (sched_pool.c) ------------------------------------------------------------ */

/* Entries live in 64 KiB slabs aligned to their size, so an entry finds its slab by
 * masking its address; a slab whose last entry leaves is returned to the allocator
 * (one empty slab is kept, so a queue hovering at a slab boundary does not thrash). */
struct sched_slab;

struct sched_pool {
    struct sched_slab *partial; /* slabs with a free slot (doubly linked) */
    struct sched_slab *full;    /* slabs without one */
    struct sched_slab *spare;   /* one empty slab kept back */
    size_t nslabs;              /* including the spare */
};

/* A zeroed entry, or NULL (out of memory). Free with queue_sched_pool_put. */
struct queue_entry *queue_sched_pool_get(struct sched_pool *p);
void queue_sched_pool_put(struct sched_pool *p, struct queue_entry *e);
/* Frees every slab, whatever is still in use. */
void queue_sched_pool_destroy(struct sched_pool *p);
size_t queue_sched_pool_bytes(const struct sched_pool *p);

/* ---- open-addressing hash table (sched_table.c) -------------------------------------------- */

/* Robin Hood linear probing over a power-of-two array of item pointers, each slot
 * keeping the item's distance from its home slot in the pointer's four low bits
 * (items are at least 16-byte aligned). Grows past 3/4 full, shrinks below 1/8 (never
 * under SCHED_TABLE_MIN slots). */
#define SCHED_TABLE_MIN 64

struct sched_table {
    uintptr_t *slots; /* NULL until the first insert */
    size_t mask;      /* slots - 1 */
    size_t count;
    uint64_t (*hash_of)(const void *item); /* to re-place items on resize and delete */
};

/* The item equal to key (eq decides), or NULL. */
void *queue_sched_table_find(const struct sched_table *t, uint64_t hash,
                             bool (*eq)(const void *item, const void *key), const void *key);
/* Makes room for one more item: 0 or -ENOMEM. After it, insert cannot fail. */
int queue_sched_table_reserve(struct sched_table *t);
/* Inserts item (not already present; room reserved). */
void queue_sched_table_insert(struct sched_table *t, uint64_t hash, void *item);
/* Removes item (present). May shrink the array. */
void queue_sched_table_delete(struct sched_table *t, uint64_t hash, const void *item);
void queue_sched_table_destroy(struct sched_table *t);
/* Calls fn for every item until it returns false; fn must not change the table. */
void queue_sched_table_each(const struct sched_table *t, bool (*fn)(void *arg, void *item),
                            void *arg);
size_t queue_sched_table_bytes(const struct sched_table *t);

/* The id table's and the PRNG's mixer (splitmix64's finalizer). */
uint64_t queue_sched_mix64(uint64_t x);

/* ---- timer heap (sched_heap.c) ------------------------------------------------------------ */

/* Binary min-heap ordered by (when, id). The key is copied into the node so that a
 * sift compares within the array instead of chasing an entry pointer per level. */
struct sched_heap_node {
    int64_t when;
    struct queue_entry *e;
};

struct sched_heap {
    struct sched_heap_node *v;
    uint32_t n, cap;
};

/* Makes room for need nodes: 0 or -ENOMEM. The scheduler reserves a node for every
 * entry, deferred or not, when the entry is added: so deferring can never fail. */
int queue_sched_heap_reserve(struct sched_heap *h, size_t need);
/* Inserts e keyed by e->next_attempt (room reserved); sets e->link.heap. */
void queue_sched_heap_push(struct sched_heap *h, struct queue_entry *e);
/* Removes e (which is on the heap), O(log n). */
void queue_sched_heap_remove(struct sched_heap *h, struct queue_entry *e);
/* Rebuilds the heap property over v[0..n) in O(n), fixing every e->link.heap. */
void queue_sched_heap_build(struct sched_heap *h);
/* Shrinks the array when need (the entries) is well under its capacity. */
void queue_sched_heap_trim(struct sched_heap *h, size_t need);
void queue_sched_heap_destroy(struct sched_heap *h);

static inline const struct sched_heap_node *queue_sched_heap_top(const struct sched_heap *h)
{
    return h->n ? &h->v[0] : NULL;
}

/* ---- domains (sched_domain.c) -------------------------------------------------------------- */

struct sched_domain {
    struct queue_entry *head, *tail;            /* ready FIFO */
    struct sched_domain *ring_next, *ring_prev; /* on the ring while it has ready entries */
    uint64_t hash;
    uint32_t nentries; /* the reference count: entries in any state */
    uint32_t nready, ndeferred;
    uint16_t len;
    char name[]; /* lowercase, NUL-terminated */
};

/* ---- the scheduler ------------------------------------------------------------------------- */

struct queue_sched {
    struct queue_retry_config cfg; /* defaults filled in */
    struct sched_pool pool;
    struct sched_table ids;      /* struct queue_entry by id */
    struct sched_table domains;  /* struct sched_domain by name */
    struct sched_heap heap;      /* deferred entries */
    struct sched_domain *cursor; /* the ring's next domain to serve, NULL when none ready */
    uint64_t rng;                /* splitmix64 state for the jitter */
    uint64_t count[3];           /* entries per enum sched_state */
    uint64_t bytes;              /* content bytes */
    size_t domain_bytes;
};

/* Domain of name (any case; 1..QUEUE_DOMAIN_MAX bytes), created with no entries if new.
 * Returns 0 and *out, -EINVAL (bad name), -ENOMEM. A domain returned new must get an
 * entry or be released with queue_sched_domain_release. */
int queue_sched_domain_get(struct queue_sched *s, const char *name, struct sched_domain **out);
/* The existing domain of name, or NULL. */
struct sched_domain *queue_sched_domain_find(const struct queue_sched *s, const char *name);
/* Frees d if it has no entries left. */
void queue_sched_domain_release(struct queue_sched *s, struct sched_domain *d);
void queue_sched_domain_destroy_all(struct queue_sched *s);
/* The domain table's hash_of. */
uint64_t queue_sched_domain_hash_of(const void *item);

/* Ready queue: append (a fresh or promoted entry) or put first (a requeued one); the
 * domain joins the ring if it was idle. */
void queue_sched_ready_append(struct queue_sched *s, struct queue_entry *e);
void queue_sched_ready_prepend(struct queue_sched *s, struct queue_entry *e);
/* Takes e off its domain's ready queue; the domain leaves the ring if now idle. */
void queue_sched_ready_unlink(struct queue_sched *s, struct queue_entry *e);

/* ---- retry clock (sched_retry.c) ----------------------------------------------------------- */

/* cfg with every 0 replaced by its default. */
void queue_sched_retry_defaults(const struct queue_retry_config *in,
                                struct queue_retry_config *out);
/* Decides what follows a failed attempt: attempts is the count including that attempt;
 * *warned is read and set when the delay warning is given. *next gets the next attempt
 * (now for EXPIRE). rng is the PRNG state for the jitter. */
enum queue_defer_verdict queue_sched_retry_plan(const struct queue_retry_config *cfg, uint64_t *rng,
                                                int64_t arrival, unsigned attempts, bool *warned,
                                                int64_t now, int64_t *next);
uint64_t queue_sched_rand(uint64_t *state);

/* ---- hooks for the scheduler's tests -------------------------------------------------------- */

/* Reseeds the jitter PRNG (queue_sched_new seeds it from getrandom). */
void queue_sched_seed(struct queue_sched *s, uint64_t seed);

/* Checks every invariant (counts, lists, ring, heap order and indices, tables).
 * Returns 0, or a negative line number of the first failed check. O(n). */
int queue_sched_verify(const struct queue_sched *s);

#endif /* FLOORMTA_QUEUE_SCHED_INT_H */
