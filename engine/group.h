/*
 * engine/group.h — the worker pool: N threads, each running one eng_worker (worker.h)
 * on its own io_uring loop with its own resolver (eng_dns), TLS session cache,
 * capability cache and spool port.
 *
 * Sharding: every destination domain belongs to exactly one worker, a stable hash of
 * the lower-cased domain modulo nworkers (eng_group_shard_of), so a domain's messages,
 * DNS answers, TLS sessions and capability entries live on one thread and the hot path
 * takes no locks. Everything that crosses threads goes through a bounded lock-free
 * inbox per worker (multi-producer, single-consumer) whose eventfd the worker's loop
 * polls:
 *   - eng_group_enqueue, from any thread, forwards a new message to its domain's owner,
 *     which makes it durable through its own port and schedules it;
 *   - a message a worker makes durable for a domain it does not own (a DSN goes to the
 *     original sender's domain) is handed to the owner once durable ("adopt"), never
 *     enqueued twice;
 *   - eng_group_start recovers the spool once and adopts each message into its owner.
 *
 * Capability cache persistence: with spool_dir set, worker i saves its cache to
 * <spool_dir>/capcache.<i> at stop and every capcache_save_s seconds; at start every
 * worker loads every capcache.* file there (entries are per MX host, valid for any
 * shard), so changing nworkers loses nothing; files of indexes >= nworkers are
 * removed once every worker has loaded them.
 *
 * Threading: eng_group_new, eng_group_start and eng_group_stop_and_free are for one
 * control thread; eng_group_enqueue, eng_group_stats, eng_group_worker_stats,
 * eng_group_call (with its own rule) and eng_group_shard_of may be called from any thread (worker
 * threads included) between a successful eng_group_start and eng_group_stop_and_free.
 */
#ifndef FLOORMTA_ENGINE_GROUP_H
#define FLOORMTA_ENGINE_GROUP_H

#include <stddef.h>
#include <stdint.h>

#include "dns/dns.h"
#include "engine/capcache.h"
#include "engine/connpool.h"
#include "engine/worker.h"
#include "queue/queue.h"
#include "tls/tls.h"

#define ENG_GROUP_MAX_WORKERS 256

struct eng_group;

/* A service that runs on the workers' loops besides delivery: the SMTP listeners (one
 * per worker, SO_REUSEPORT) and the HTTP API (worker 0 only). Its callbacks run on the
 * worker's thread:
 *   - start, once the worker itself has started and before the group reports it
 *     running: opens what it needs on loop (which it must not free) and returns 0 and
 *     *state, or an error, which fails eng_group_start;
 *   - stop, when eng_group_stop_and_free begins, while every worker still runs: stop
 *     accepting work and end what is under way (the SMTP sessions);
 *   - idle, after stop, once per loop iteration: true once nothing of the service is
 *     pending any more (no eng_group_enqueue whose done has not run); the workers stop
 *     only once every service of every worker is idle (or the drain deadline passed);
 *   - free, on the same thread, after the worker stopped; state is the service's.
 * A service calling eng_group_enqueue from a worker thread gets its done on that same
 * thread, so its sessions never see another thread. */
struct eng_group_service {
    const char *name; /* for the logs; borrowed for the group's life */
    int (*start)(void *arg, unsigned index, struct eng_loop *loop, void **state);
    void (*stop)(void *arg, unsigned index, void *state);
    bool (*idle)(void *arg, unsigned index, void *state);
    void (*free)(void *arg, unsigned index, void *state);
    void *arg;       /* borrowed for the group's life */
    bool first_only; /* only on worker 0 */
};

#define ENG_GROUP_MAX_SERVICES 8

struct eng_group_config {
    struct queue_spool *spool;           /* borrowed; opened by the caller and not recovered yet
                                          * (eng_group_start does it); outlives the group */
    const char *spool_dir;               /* the spool's directory, for the capcache.<i> files;
                                          * copied; NULL = capability caches are not persisted */
    unsigned nworkers;                   /* 0 = the online CPUs; at most ENG_GROUP_MAX_WORKERS */
    struct dns_config dns;               /* copied (servers too): each worker builds its own */
    struct tls_ctx *tls;                 /* borrowed: the client context, shared read-only */
    size_t tls_cache_entries;            /* sessions per worker; 0 = 4096 */
    struct eng_capcache_config capcache; /* each worker gets its own cache */
    unsigned capcache_save_s;            /* seconds between saves while running; 0 = 60 */
    unsigned inbox_max; /* eng_group_enqueue requests waiting per worker; 0 = 4096 */
    /* Each worker's connection pool (its loop is set by the group). max_total (0 =
     * 1000) is the engine's and is shared out evenly; max_per_host is per worker — a
     * domain lives on one worker, so it is exact for a domain, and an MX host serving
     * domains of several workers may see up to nworkers times as many connections. */
    struct eng_connpool_config connpool;
    /* What applies to every worker: retry, helo_name, reporting_mta (copied), port,
     * max_attempts, timeouts, and the shared read-only policy table and egress sources
     * (borrowed: they must outlive the group). The per-worker fields (loop, spool, dns,
     * tls, tls_cache, capcache, pool, no_recover, route, route_arg) are set by the
     * group; values given here are ignored. */
    struct eng_worker_config worker;
    /* Services on the workers' loops (copied; each one's arg borrowed), at most
     * ENG_GROUP_MAX_SERVICES, started in this order and stopped in reverse. */
    const struct eng_group_service *services;
    unsigned nservices;
    unsigned drain_timeout_ms; /* how long eng_group_stop_and_free waits for the services
                                * to go idle; 0 = 30000 */
};

/* Where a worker thread is (eng_group_worker_stats.state). */
#define ENG_GROUP_WORKER_STATES(X)                                                        \
    X(ENG_GROUP_W_IDLE, "idle")         /* its thread has not run yet */                  \
    X(ENG_GROUP_W_BUILDING, "building") /* building its objects, loading the caches */    \
    X(ENG_GROUP_W_RUNNING, "running")   /* its loop runs */                               \
    X(ENG_GROUP_W_DRAINING, "draining") /* stopping: running attempts finish */           \
    X(ENG_GROUP_W_STOPPED, "stopped")   /* state persisted, cache saved, objects freed */ \
    X(ENG_GROUP_W_FAILED, "failed")     /* could not start */

enum eng_group_worker_state {
#define ENG_GROUP_W_ENUM(name, str) name,
    ENG_GROUP_WORKER_STATES(ENG_GROUP_W_ENUM)
#undef ENG_GROUP_W_ENUM
};

/* Static string; "invalid" for an out-of-range value. */
const char *eng_group_worker_state_name(enum eng_group_worker_state s);

/* One worker's figures, as last published by its thread (after each loop iteration). */
struct eng_group_worker_stats {
    struct eng_worker_stats w;
    uint64_t inbox_handled; /* inbox messages processed (enqueues and adoptions) */
    uint64_t capcache_entries;
    uint64_t capcache_blocks; /* checks that skipped a host on a cached refusal */
    uint64_t capcache_loaded; /* entries loaded from the capcache.* files at start */
    uint64_t capcache_saves;  /* saves of this worker's file that succeeded */
    uint64_t state;           /* enum eng_group_worker_state */
};

struct eng_group_stats {
    struct eng_worker_stats total; /* the sum over the workers */
    uint64_t refused;              /* eng_group_enqueue calls that got -EAGAIN */
    unsigned nworkers;
};

/* Creates a group (no thread runs until eng_group_start). cfg is borrowed for the call.
 * Returns 0 and *out (free with eng_group_stop_and_free), -EINVAL (no spool, no tls,
 * no helo name, nworkers over the maximum), -ENOMEM, or -errno (eventfd). */
int eng_group_new(const struct eng_group_config *cfg, struct eng_group **out);

/* Recovers the spool once (queue_spool_recover), gives each recovered message to the
 * worker owning its domain, then starts the threads ("floormta-w0", ...) and waits
 * until each has built its objects, loaded the capability caches and started its
 * worker; then removes stale capcache files. Call once. Returns 0, or the first
 * error (recovery, a worker's construction); the group then only takes
 * eng_group_stop_and_free. */
int eng_group_start(struct eng_group *g);

/* Called once per eng_group_enqueue that returned 0: res 0 and id once the message is
 * durable, or res < 0 (nothing queued: what eng_worker_enqueue returned, or
 * QUEUE_ERR_CLOSING when the group stopped first). Runs on the calling thread when that
 * is one of the group's workers (a service), else on the owning worker's thread; for
 * QUEUE_ERR_CLOSING, possibly on the thread of eng_group_stop_and_free. */
typedef void (*eng_group_done_fn)(void *arg, queue_id_t id, int res);

/* Forwards a message to the worker owning env->domain, from any thread; that worker
 * makes it durable through its port, schedules it and calls done. env is copied;
 * content (len bytes) is borrowed until done runs. Never blocks. Returns 0 (done will
 * run exactly once, never from inside this call), -EINVAL (not started, NULL, an
 * empty domain), -EAGAIN (the owner's inbox holds inbox_max requests: back-pressure,
 * try again later), -ENOMEM. done does not run on an error. */
int eng_group_enqueue(struct eng_group *g, const struct queue_envelope *env, const void *content,
                      size_t len, eng_group_done_fn done, void *arg);

/* An administrative function run on one worker's thread (eng_group_call): w is that
 * worker (borrowed for the call; its scheduler, spool reads, capability cache are safe
 * to touch here and nowhere else). arg is the caller's. */
typedef void (*eng_group_call_fn)(struct eng_worker *w, void *arg);

/* Runs fn(w, arg) on worker index's thread and waits until it has returned: the
 * operator's queue tools (engine/worker.h, "administration") on a worker's own data.
 * Runs fn inline when the caller is that worker's thread. The request goes through the
 * worker's inbox (never refused for a full inbox: it is rare and small) and the caller
 * blocks on a semaphore meanwhile; fn should be short (it holds up that worker's loop
 * and the caller's). Control plane: one allocation per call.
 *
 * Deadlock-freedom rests on one rule: among the workers only ONE ever makes
 * cross-worker calls — the HTTP API's, worker 0 — and fn itself never calls
 * eng_group_call nor waits for another worker or thread. Threads that are not workers
 * (the daemon's main thread, for a SIGHUP reload) may call too: no worker ever waits
 * for them, so a wait that starts at one of them can only reach worker 0, then another
 * worker, and end there. A worker thread otherwise never blocks on another worker
 * (every other cross-thread push is non-blocking), so the worker asked always gets to
 * its inbox while the caller waits, and no cycle of waits can form.
 *
 * Should the worker have stopped (or stop) before running fn, the call gives up with
 * -ESHUTDOWN and fn never runs; arg is then never touched. Returns 0 (fn ran), -EINVAL
 * (not started, index out of range, fn NULL), -ESHUTDOWN, -ENOMEM. arg is borrowed
 * until the call returns. Any thread, but see the rule above. */
int eng_group_call(struct eng_group *g, unsigned index, eng_group_call_fn fn, void *arg);

/* The index of the worker owning domain (0 .. nworkers-1): eng_group_hash(domain) %
 * nworkers. domain is borrowed. */
unsigned eng_group_shard_of(const struct eng_group *g, const char *domain);

/* FNV-1a (64 bits) of the domain, ASCII letters lower-cased: stable across runs,
 * builds and machines. domain is borrowed. */
uint64_t eng_group_hash(const char *domain);

/* The number of workers. */
unsigned eng_group_nworkers(const struct eng_group *g);

struct eng_metrics;

/* Sums the workers' published metrics (engine/metrics.h: counters, histograms and the
 * gauges of their queues, pools, resolvers and capability caches; published at most
 * every 250 ms) into *out, which is overwritten; enqueue_refused is the group's. Any
 * thread. */
void eng_group_metrics(const struct eng_group *g, struct eng_metrics *out);

/* Sums the workers' published stats into *out. Any thread. */
void eng_group_stats(const struct eng_group *g, struct eng_group_stats *out);

/* Copies worker i's published stats into *out. Any thread. Returns 0 or -EINVAL. */
int eng_group_worker_stats(const struct eng_group *g, unsigned i,
                           struct eng_group_worker_stats *out);

/* Stops every worker: first the services (stop, then each waits until idle or until
 * drain_timeout_ms), while delivery goes on; then each worker processes what its inbox holds, stops
 * starting attempts, lets the running ones finish with their states persisted (eng_worker_stop),
 * saves its capability cache and frees its objects on its own thread; then the threads are joined,
 * requests still in an inbox get QUEUE_ERR_CLOSING (hand-offs left there are durable: the next
 * start recovers them) and the group is freed. No eng_group_ call may run or start once this is
 * called. NULL is a no-op. */
void eng_group_stop_and_free(struct eng_group *g);

#endif /* FLOORMTA_ENGINE_GROUP_H */
