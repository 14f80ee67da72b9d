/*
 * engine/group_int.h — the worker pool's private types: the inbox (group_inbox.c), the
 * per-worker context and the thread body (group_worker.c), shared with group.c (life
 * cycle, sharding, enqueue, stats). Nothing outside engine/group*.c includes this,
 * except the unit test of the inbox.
 */
#ifndef FLOORMTA_ENGINE_GROUP_INT_H
#define FLOORMTA_ENGINE_GROUP_INT_H

#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "engine/group.h"
#include "engine/metrics.h"

/* ---- the inbox: Vyukov's intrusive multi-producer single-consumer queue ------------- */

/* Embedded in every message sent through an inbox. */
struct eng_group_node {
    _Atomic(struct eng_group_node *) next;
};

/* Producers (any thread) push with one atomic exchange and never wait for each other
 * or for the consumer; the consumer (the owning worker's thread) pops without atomics
 * read-modify-write. A push that lands while the consumer runs becomes visible at the
 * latest at the next wake-up.
 *
 * Why an eventfd and not IORING_OP_MSG_RING: producers include threads without a ring
 * (the caller of eng_group_enqueue, the control thread at start), and MSG_RING needs a
 * ring on the sending side. An eventfd works from anywhere; the consumer's loop polls
 * it like any other fd. Wake-ups are coalesced: only the first push after the consumer
 * acknowledged writes to the eventfd. */
struct eng_group_inbox {
    _Atomic(struct eng_group_node *) head; /* producers' end */
    struct eng_group_node *tail;           /* the consumer's end */
    struct eng_group_node stub;
    atomic_size_t count;    /* messages pushed and not popped yet */
    atomic_bool wake_armed; /* a wake-up was written and not acknowledged */
    int efd;                /* eventfd, owned */
};

/* Makes an empty inbox and its eventfd. Returns 0 or -errno. */
int eng_group_inbox_init(struct eng_group_inbox *q);

/* Closes the eventfd. The inbox must be empty (pop until NULL first). */
void eng_group_inbox_destroy(struct eng_group_inbox *q);

/* Pushes n (borrowed until popped; its next is overwritten) and wakes the consumer.
 * limit 0 = unbounded; otherwise, when limit messages are already waiting, nothing is
 * pushed and -EAGAIN is returned. Returns 0. Any thread. */
int eng_group_inbox_push(struct eng_group_inbox *q, struct eng_group_node *n, size_t limit);

/* Wakes the consumer without a message (stop). Any thread. */
void eng_group_inbox_wake(struct eng_group_inbox *q);

/* The consumer acknowledges a wake-up: reads the eventfd and re-arms the coalescing, so
 * pops after this call see every push that did not write a new wake-up. Consumer only. */
void eng_group_inbox_ack(struct eng_group_inbox *q);

/* Takes the oldest message, or NULL when none is visible (empty, or a producer is
 * between its two steps: its wake-up follows). Per producer, messages come out in the
 * order they were pushed. Consumer only. */
struct eng_group_node *eng_group_inbox_pop(struct eng_group_inbox *q);

/* ---- messages between threads ------------------------------------------------------- */

enum grp_msg_kind {
    GRP_MSG_ENQUEUE, /* a new message from eng_group_enqueue */
    GRP_MSG_ADOPT,   /* a durable message to schedule */
    GRP_MSG_DONE,    /* an ENQUEUE's outcome, back on the worker that asked */
    GRP_MSG_CALL,    /* eng_group_call: run a function on this worker's thread */
};

/* The states of an eng_group_call request; whoever moves it out of PENDING (the worker
 * about to run it, or the caller giving up on a stopped worker) decides its fate. */
enum grp_call_state {
    GRP_CALL_PENDING,
    GRP_CALL_RAN,       /* the worker ran fn: the caller gets 0 */
    GRP_CALL_CANCELLED, /* never ran: the caller gets -ESHUTDOWN */
};

/* Shared by the caller and the message: freed by whichever drops the last reference. */
struct grp_call {
    sem_t done; /* posted once the state left PENDING */
    atomic_int state;
    atomic_int refs;
    eng_group_call_fn fn;
    void *arg;
};

/* Drops one reference to c (frees it with the last). Any thread. */
void eng_group_call_unref(struct grp_call *c);

struct grp_msg {
    struct eng_group_node node; /* first: the inbox hands back this pointer */
    enum grp_msg_kind kind;
    /* GRP_MSG_ENQUEUE */
    struct queue_envelope *env; /* owned */
    const void *content;        /* borrowed from the caller until done */
    size_t len;
    eng_group_done_fn done;
    void *arg;
    struct grp_worker *reply; /* the asking worker (done runs there), or NULL */
    /* GRP_MSG_CALL: holds one reference */
    struct grp_call *call;
    /* GRP_MSG_DONE (the same message, sent back) */
    queue_id_t id;
    int res;
    /* GRP_MSG_ADOPT: the entry, its domain in the flexible array */
    struct queue_entry_info info;
    bool recovered;
    char domain[];
};

/* An ADOPT message for info (its domain copied), or NULL (out of memory). Free with
 * free(). */
struct grp_msg *eng_group_msg_adopt(const struct queue_entry_info *info, bool recovered);

/* ---- the per-worker context --------------------------------------------------------- */

/* Published stats, as 64-bit words behind a sequence counter (a seqlock: the one
 * writer never waits, readers retry while it writes). */
#define GRP_STAT_WORDS   (sizeof(struct eng_group_worker_stats) / sizeof(uint64_t))
#define GRP_METRIC_WORDS (sizeof(struct eng_metrics) / sizeof(uint64_t))

struct grp_worker {
    struct eng_group *g;
    unsigned index;
    pthread_t thread;
    bool thread_started;
    sem_t ready;      /* posted once the thread started its worker, or failed */
    int start_result; /* written before ready is posted */
    atomic_bool stop;
    atomic_bool quiesce;  /* stop the services (set by eng_group_stop_and_free) */
    atomic_bool quiesced; /* ... done: every service of this worker is idle */
    struct eng_group_inbox inbox;
    struct eng_worker *worker; /* this thread's worker while it runs (eng_group_call runs
                                * inline with it); read and written by the thread only */
    atomic_uint_fast64_t seq;
    atomic_uint_fast64_t words[GRP_STAT_WORDS];
    /* The worker's metrics (eng_group_metrics), published the same way but at most
     * every GRP_METRICS_MS: about 1 KB, for a scrape every few seconds. */
    atomic_uint_fast64_t mseq;
    atomic_uint_fast64_t mwords[GRP_METRIC_WORDS];
};

struct eng_group {
    struct eng_group_config cfg; /* strings point into the copies below; services at svc */
    struct eng_group_service svc[ENG_GROUP_MAX_SERVICES];
    char *spool_dir;
    char *dns_servers;
    char *helo;
    char *mta;
    unsigned n;
    bool started, start_failed;
    atomic_uint_fast64_t refused;
    struct grp_worker *workers; /* n of them */
};

/* The seqlock over a worker's published words (stats, metrics): one writer (the
 * worker's thread) that never waits; readers on any thread retry while it writes (an
 * odd sequence). n words from src / into dst. */
static inline void grp_seqlock_write(atomic_uint_fast64_t *seq, atomic_uint_fast64_t *words,
                                     const uint64_t *src, size_t n)
{
    uint64_t s = atomic_load_explicit(seq, memory_order_relaxed);
    atomic_store_explicit(seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    for (size_t i = 0; i < n; i++)
        atomic_store_explicit(&words[i], src[i], memory_order_relaxed);
    atomic_store_explicit(seq, s + 2, memory_order_release);
}

static inline void grp_seqlock_read(atomic_uint_fast64_t *seq, atomic_uint_fast64_t *words,
                                    uint64_t *dst, size_t n)
{
    for (;;) {
        uint64_t s0 = atomic_load_explicit(seq, memory_order_acquire);
        if (s0 & 1) {
            sched_yield();
            continue;
        }
        for (size_t i = 0; i < n; i++)
            dst[i] = atomic_load_explicit(&words[i], memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(seq, memory_order_relaxed) == s0)
            return;
    }
}

/* The worker of g running on the calling thread, or NULL (group_worker.c). */
struct grp_worker *eng_group_self(const struct eng_group *g);

/* The thread body (group_worker.c): arg is the struct grp_worker. */
void *eng_group_worker_main(void *arg);

/* Frees an inbox message that will not be processed: an ENQUEUE's done runs with res. */
void eng_group_msg_abandon(struct grp_msg *m, int res);

#endif /* FLOORMTA_ENGINE_GROUP_INT_H */
