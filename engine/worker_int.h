/*
 * engine/worker_int.h — the worker's private types, shared by worker.c (lifecycle,
 * loop handles, enqueue, the run step) and worker_attempt.c (what an attempt's report
 * does to the queue). Nothing outside engine/worker*.c includes this.
 */
#ifndef FLOORMTA_ENGINE_WORKER_INT_H
#define FLOORMTA_ENGINE_WORKER_INT_H

#include <stdbool.h>

#include "engine/deliver.h"
#include "engine/metrics.h"
#include "engine/worker.h"

/* The life of one attempt slot, after its message was read from the spool. */
#define WK_ATTEMPT_STATES(X)                                                         \
    X(WK_FREE, "free")             /* on the free list */                            \
    X(WK_DELIVERING, "delivering") /* eng_deliver_start's done has not run yet */    \
    X(WK_DSN, "dsn")               /* waiting for its DSNs to be durable */          \
    X(WK_PERSISTING, "persisting") /* waiting for queue_port_update */               \
    X(WK_REMOVING, "removing")     /* finished: waiting for the removal (its durable \
                                    * outcome) */

enum wk_attempt_state {
#define WK_ATTEMPT_ENUM(name, str) name,
    WK_ATTEMPT_STATES(WK_ATTEMPT_ENUM)
#undef WK_ATTEMPT_ENUM
};

/* Why a slot ends its message besides an attempt (worker_admin.c). */
enum wk_admin {
    WK_ADMIN_NONE,   /* a delivery attempt */
    WK_ADMIN_BOUNCE, /* the operator bounced it: DSN, removal */
    WK_ADMIN_DELETE, /* the operator deleted it: removal, no DSN */
};

struct wk_attempt {
    struct eng_worker *w;
    enum wk_admin admin;
    enum wk_attempt_state state;
    struct queue_entry *entry;  /* in the scheduler: in flight, or deferred once decided */
    struct queue_envelope *env; /* as read from the spool (the state before the attempt) */
    struct queue_envelope *upd; /* the new state to persist */
    void *content;
    size_t len;
    unsigned dsn_pending; /* DSN enqueues not completed yet */
    bool finished;        /* every recipient final: remove once durable */
    bool remove_failed;   /* the removal failed: the final state is persisted instead */
    bool expired;
    bool repop;         /* popped again (its time came) while persisting: requeue then */
    unsigned delivered; /* recipients newly delivered / bounced, counted once durable */
    unsigned bounced;
    struct wk_attempt *next_free;
};

struct eng_worker {
    struct eng_worker_config cfg; /* helo_name, reporting_mta point into the copies below */
    char *helo;
    char *mta;
    struct eng_deliver_config dcfg;
    struct eng_json_out log_out; /* dcfg.log_out: every attempt's delivery-log line */
    struct eng_metrics metrics;  /* what the stats do not say (engine/metrics.h) */
    struct queue_sched *sched;
    struct queue_port *port;
    eng_handle_t h_port;  /* poll on queue_port_fd */
    eng_handle_t h_timer; /* the due timer */
    bool port_released, timer_released;
    bool started, closing;
    uint64_t timer_at_ms;     /* realtime ms the armed timer fires at */
    unsigned port_pending;    /* requests submitted through the port, not completed */
    struct wk_attempt *slots; /* max_attempts of them, allocated at new */
    struct wk_attempt *free_slots;
    struct eng_worker_stats stats;
};

/* Sets a->state (the only writer) and logs the transition at debug level. */
void eng_worker_attempt_set(struct wk_attempt *a, enum wk_attempt_state s);

/* The attempt's done callback (eng_deliver_start): decides, enqueues DSNs, persists. */
void eng_worker_attempt_done(void *arg, const struct eng_deliver_report *rep);

/* Acts on a->upd against a->env (entry, content as for an attempt): decides, enqueues
 * the DSNs, persists or removes, then releases the slot. For the operator's bounce and
 * delete too (a->admin), whose a->upd has every recipient final. */
void eng_worker_attempt_decide(struct wk_attempt *a);

/* The slot holding e in any state, or NULL. */
struct wk_attempt *eng_worker_slot_of(struct eng_worker *w, const struct queue_entry *e);

/* Ends an attempt that could not run (eng_deliver_start failed): deferred, persisted. */
void eng_worker_attempt_fail(struct wk_attempt *a, int err);

/* Returns the slot to the free list (frees its buffers) and runs the run step. */
void eng_worker_attempt_release(struct wk_attempt *a);

/* Enqueues a message the worker built (a DSN): takes ownership of env and content;
 * once durable it is scheduled and done (may be NULL) runs. Returns 0 (done will
 * run) or a negative code (env and content freed, done will not run). */
int eng_worker_enqueue_owned(struct eng_worker *w, struct queue_envelope *env, void *content,
                             size_t len, eng_worker_done_fn done, void *arg);

/* The run step: starts attempts while slots are free and entries are ready, then
 * re-arms the due timer. */
void eng_worker_pump(struct eng_worker *w);

/* Re-arms the due timer if the scheduler's next due time is earlier than it. */
void eng_worker_timer_arm(struct eng_worker *w);

/* Unix seconds. */
int64_t eng_worker_now(void);

#endif /* FLOORMTA_ENGINE_WORKER_INT_H */
