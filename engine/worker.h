/*
 * engine/worker.h — connects the queue to delivery attempts, on one loop and one thread.
 *
 * A worker owns a scheduler (queue_sched) filled from the spool at start, a port to the
 * spool's committer (its eventfd watched by a loop poll) and a loop timer set to the
 * scheduler's next due time. Whenever entries are ready and fewer than max_attempts
 * attempts are running, it reads the next message from the spool and starts an
 * attempt (engine/deliver.h). When an attempt ends, the worker acts on its report:
 *   - recipients that bounced in this attempt get a FAILED DSN (never for a DSN);
 *   - a message not finished is deferred on the retry clock (queue_sched_defer): a delay
 *     warning enqueues a DELAYED DSN, and past max_age every remaining recipient is
 *     bounced with a LOCAL "expired" result and a FAILED DSN;
 *   - the outcome is made durable before it is acted on: a deferred message's new state
 *     is persisted (queue_port_update) before it can be retried; a finished message is
 *     removed (queue_port_remove: the removal is its durable outcome, one sync round)
 *     and leaves the scheduler once that is durable — should the removal fail, its
 *     final state is persisted instead, and the next recovery removes it.
 * DSNs are enqueued durably (and scheduled like any message) before the state that
 * made them is persisted: a crash in between sends a DSN twice, never zero times.
 *
 * Threading: everything runs on the loop's thread (the caller's). A worker can run alone
 * (it recovers the spool itself) or as one shard of engine/group.h, which recovers the
 * spool once (no_recover), hands each message to the worker owning its domain
 * (eng_worker_adopt) and routes the messages a worker makes durable for a domain it
 * does not own (route) to their owner.
 */
#ifndef FLOORMTA_ENGINE_WORKER_H
#define FLOORMTA_ENGINE_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/capcache.h"
#include "engine/connpool.h"
#include "engine/dns_loop.h"
#include "engine/loop.h"
#include "engine/policy.h"
#include "queue/queue.h"
#include "tls/tls.h"

struct eng_worker;

/* Where a message this worker made durable (through eng_worker_enqueue, or a DSN) is
 * scheduled. Returns true when the hook took it: another worker schedules it (info and
 * its domain are borrowed for the call: copy what is kept); false: this worker
 * schedules it. Runs on the loop thread, once per durable message. */
typedef bool (*eng_worker_route_fn)(void *arg, const struct queue_entry_info *info);

struct eng_worker_config {
    struct eng_loop *loop;         /* borrowed; outlives the worker */
    struct queue_spool *spool;     /* borrowed; outlives the worker */
    struct eng_dns *dns;           /* borrowed; on loop */
    struct tls_ctx *tls;           /* borrowed: the client context with the floor */
    struct tls_cache *tls_cache;   /* borrowed; may be NULL */
    struct eng_capcache *capcache; /* borrowed; may be NULL */
    struct eng_connpool *pool;     /* borrowed; on loop; may be NULL (no reuse, no limits) */
    const struct eng_policy_table *policy;  /* borrowed, built; may be NULL (tls for all) */
    const struct sockaddr_storage *sources; /* egress addresses (eng_deliver_config); borrowed */
    unsigned nsources;
    struct queue_retry_config retry; /* copied; zeros are the scheduler's defaults */
    const char *helo_name;           /* our EHLO name; copied */
    const char *reporting_mta;       /* DSN Reporting-MTA; copied; NULL = helo_name */
    uint16_t port;                   /* SMTP port of every MX (tests); 0 = 25 */
    unsigned max_attempts;           /* attempts running at once; 0 = 100 */
    unsigned connect_timeout_ms;     /* as in eng_deliver_config; 0 = its default */
    unsigned reply_timeout_ms;       /* as in eng_deliver_config; 0 = its default */
    int delivery_log_fd;             /* the delivery log: each attempt's JSON line is appended
                                      * with one write (open it O_APPEND: lines of several
                                      * workers never interleave); borrowed; 0 or < 0 = none
                                      * (fd 0 is never a log) */
    bool no_recover;                 /* true: eng_worker_start leaves the spool alone (its
                                      * owner recovered it) and messages come in through
                                      * eng_worker_adopt */
    eng_worker_route_fn route;       /* NULL: every durable message is scheduled here */
    void *route_arg;                 /* borrowed; passed to route */
};

struct eng_worker_stats {
    uint64_t enqueued;  /* messages made durable through eng_worker_enqueue */
    uint64_t attempts;  /* delivery attempts started */
    uint64_t delivered; /* recipients delivered (state durable) */
    uint64_t bounced;   /* recipients bounced, expiry included (state durable) */
    uint64_t deferred;  /* attempts that left their message deferred (state durable) */
    uint64_t expired;   /* messages bounced for their age */
    uint64_t removed;   /* finished messages removed from the spool */
    uint64_t dsns;      /* DSNs made durable (FAILED and DELAYED) */
    uint64_t recovered; /* messages scheduled by eng_worker_start, or adopted as recovered */
    uint64_t adopted;   /* messages made durable elsewhere and adopted (eng_worker_adopt) */
    uint64_t handed;    /* messages made durable here and taken by the route hook */
    uint64_t errors;    /* spool reads, updates or DSNs that failed (logged) */
    uint64_t running;   /* attempts running now */
    /* How the attempts that reached a receiver's READY got there (from their reports):
     * a new connection (a full or a resumed TLS handshake) or a pooled one. */
    uint64_t conns_new;
    uint64_t conns_reused;
    uint64_t tls_full;
    uint64_t tls_resumed;
    uint64_t opportunistic; /* attempts that transacted under an opportunistic policy
                             * without meeting the floor (TLS below it or plaintext) */
    uint64_t plaintext;     /* ... of which in plaintext */
    uint64_t log_errors;    /* delivery-log lines that could not be written */
    uint64_t admin_bounced; /* messages bounced by the operator (removal durable) */
    uint64_t admin_deleted; /* messages deleted by the operator (removal durable) */
};

struct eng_metrics;

/* The worker's metrics (engine/metrics.h): its stats mapped, the per-attempt counters
 * (results per recipient, floor refusals by reason, TLS versions, histograms) and the
 * queue-depth gauges; *out is overwritten. Loop thread. */
void eng_worker_metrics(const struct eng_worker *w, struct eng_metrics *out);

/* Creates a worker (nothing runs until eng_worker_start). cfg is borrowed for the call
 * (the objects it points to for the worker's life). Returns 0 and *out (free with
 * eng_worker_free), -EINVAL (a required pointer or the helo name missing), -ENOMEM. */
int eng_worker_new(const struct eng_worker_config *cfg, struct eng_worker **out);

/* Recovers the spool (queue_spool_recover) into a new scheduler, each message at its
 * persisted next attempt — unless cfg.no_recover: then the scheduler starts empty —;
 * opens the worker's port and watches it; arms the due timer and starts whatever is
 * ready. Call once, on the loop thread, before anything else is submitted to the
 * spool (with no_recover: after the owner's one queue_spool_recover). Returns 0, or
 * what the spool, scheduler or loop returns. */
int eng_worker_start(struct eng_worker *w);

/* The scheduler's view of a persisted envelope (nrcpts counts the recipients not
 * final), for eng_worker_adopt. out->domain borrows env->domain. */
void eng_worker_info_of(const struct queue_envelope *env, struct queue_entry_info *out);

/* Schedules a message that is already durable in the spool (recovered by the owner of
 * the spool, or made durable by another worker): ready at info->next_attempt. Counted
 * as recovered or adopted. Allowed after eng_worker_start, also while stopping (it is
 * then only scheduled: the next start recovers it). info is borrowed for the call.
 * Returns 0, -EEXIST (already scheduled here: nothing changed), -EINVAL (not started,
 * NULL), -ENOMEM. Loop thread only. */
int eng_worker_adopt(struct eng_worker *w, const struct queue_entry_info *info, bool recovered);

/* Called once a message given to eng_worker_enqueue is durable (res 0, id its new id)
 * or failed (res < 0: nothing was queued). From the loop thread. */
typedef void (*eng_worker_done_fn)(void *arg, queue_id_t id, int res);

/* Enqueues a message through the worker's port (env: as for queue_port_enqueue; its
 * recipients start PENDING; arrival 0 = now) and, once it is durable, schedules it
 * (ready now unless env->next_attempt is later; or hands it to cfg.route) and calls done. env is
 * copied; content is borrowed until done runs. Returns 0 (done will run, never from inside this
 * call), -EINVAL (not started, closing, NULL arguments), -ENOMEM, or what
 * queue_port_enqueue returns (done will not run then). */
int eng_worker_enqueue(struct eng_worker *w, const struct queue_envelope *env, const void *content,
                       size_t len, eng_worker_done_fn done, void *arg);

/* Copies the counters out. */
void eng_worker_stats(const struct eng_worker *w, struct eng_worker_stats *out);

/* The worker's scheduler (borrowed until eng_worker_free; NULL before start): for
 * tests and the admin API, from the loop thread only. */
struct queue_sched *eng_worker_sched(struct eng_worker *w);

/* The worker's capability cache (borrowed: cfg.capcache, may be NULL): for the admin
 * API, from the loop thread only. */
struct eng_capcache *eng_worker_capcache(struct eng_worker *w);

/* ---- reconfiguration (engine/worker_reconfig.c): what a configuration reload changes ---- */

/* The settings a running worker takes from a reload (SIGHUP); the rest of
 * eng_worker_config stays as the worker was made with (max_attempts sized its slots,
 * the loop, spool, resolver and pool are its own). */
struct eng_worker_reconfig {
    /* borrowed, built; NULL = keep the current table. Attempts already running keep
     * pointers into the table they started with (their policy, its TLS context), so the
     * caller must keep every table it ever gave a worker alive until the worker is
     * freed. */
    const struct eng_policy_table *policy;
    struct queue_retry_config retry; /* copied; zeros are the scheduler's defaults */
    unsigned connect_timeout_ms;     /* as eng_worker_config; 0 = eng_deliver's default */
    unsigned reply_timeout_ms;       /* as eng_worker_config; 0 = eng_deliver's default */
    /* Drop every refusal in the capability cache: the default floor or trust store
     * changed, and those verdicts were reached under the old ones (a host refused for
     * TLS 1.2 under a 1.3 floor meets a 1.2 one). Passing entries are kept. */
    bool forget_refusals;
};

/* Applies rc to w (rc borrowed for the call): attempts started from now on use the new
 * policy table and timeouts; the scheduler's next deferrals use the new retry schedule
 * (queue_sched_set_retry: messages already deferred keep their time). All or nothing:
 * returns 0, or QUEUE_ERR_CONFIG (a retry schedule the scheduler refuses; nothing
 * changed), -EINVAL. On the loop thread (eng_group_call). */
int eng_worker_reconfigure(struct eng_worker *w, const struct eng_worker_reconfig *rc);

/* ---- administration (engine/worker_admin.c): the operator's queue tools ------------------
 *
 * Everything here runs on the worker's loop thread (from another thread: through
 * eng_group_call). Actions start what they do and return: a bounce's DSN and a
 * removal become durable shortly after, through the same path an attempt's outcome
 * takes (worker_attempt.c: DSN first, then the removal).
 *
 * A message that an attempt holds (in flight, or its outcome being persisted), or
 * that no attempt slot is free for, is not bounced or deleted: it is counted as busy
 * and left as it is (for one id: -EBUSY), so the operator tries again a moment later.
 * Why not queue the action for when the attempt ends: the attempt may deliver the
 * message meanwhile, and an answer that says what happened beats one that says what
 * might. */

/* One message as the operator sees it. */
struct eng_worker_listing {
    const struct queue_envelope *env; /* as last persisted: sender, arrival, each
                                       * recipient's state and last result; borrowed
                                       * for the call */
    enum queue_entry_state state;     /* where the scheduler has it */
    int64_t next_attempt;             /* the scheduler's, unix seconds */
    uint16_t attempts;                /* the scheduler's count */
    bool busy;                        /* an attempt holds it now */
};

typedef void (*eng_worker_list_fn)(void *arg, const struct eng_worker_listing *m);

/* Calls fn for up to limit messages of domain (any case; NULL = all), oldest id first,
 * each read from the spool (blocking reads of small files: keep limit modest). A
 * message that cannot be read (removed meanwhile) is skipped. domain is borrowed.
 * Returns how many messages match (possibly more than limit), or -ENOMEM, -EINVAL. */
long eng_worker_admin_list(struct eng_worker *w, const char *domain, size_t limit,
                           eng_worker_list_fn fn, void *arg);

/* One destination domain's part of the queue. */
struct eng_worker_domain_summary {
    const char *domain; /* borrowed for the call */
    uint64_t messages, ready, deferred, inflight;
    int64_t oldest_arrival; /* unix seconds */
};

typedef void (*eng_worker_summary_fn)(void *arg, const struct eng_worker_domain_summary *d);

/* Calls fn once per domain with messages here, in no particular order. Returns the
 * number of domains, or -ENOMEM, -EINVAL. */
long eng_worker_admin_summary(struct eng_worker *w, eng_worker_summary_fn fn, void *arg);

struct eng_worker_action_result {
    unsigned matched; /* messages the action was aimed at */
    unsigned done;    /* ... acted on */
    unsigned busy;    /* ... held by an attempt (or no slot free): left alone */
};

/* flush: deferred messages become ready now (of id, or of domain). bounce: every
 * recipient not final becomes BOUNCED ("5.0.0 bounced by the operator"), a FAILED DSN
 * goes to the sender as for a permanent failure (never for a DSN), and the message is
 * removed. delete: removed without a DSN. Give id != 0 or domain (borrowed). Returns 0
 * and *out; QUEUE_ERR_NOT_FOUND (id not queued here); -EBUSY (id: busy as above;
 * flush never is); -ESHUTDOWN (the worker is stopping: no bounce or delete); -EINVAL. */
int eng_worker_admin_flush(struct eng_worker *w, queue_id_t id, const char *domain,
                           struct eng_worker_action_result *out);
int eng_worker_admin_bounce(struct eng_worker *w, queue_id_t id, const char *domain,
                            struct eng_worker_action_result *out);
int eng_worker_admin_delete(struct eng_worker *w, queue_id_t id, const char *domain,
                            struct eng_worker_action_result *out);

/* Stops starting attempts, then drives the loop (eng_loop_run_once) until the running
 * attempts and the port's requests have completed (their states persisted). Other
 * handles on the loop keep running meanwhile. Afterwards eng_worker_stats is final
 * and eng_worker_enqueue refuses (-EINVAL). Idempotent. Call from the loop thread but
 * never from inside a loop callback. NULL is a no-op. */
void eng_worker_stop(struct eng_worker *w);

/* eng_worker_stop, then closes the worker's handles and frees it. Same calling rules.
 * NULL is a no-op. */
void eng_worker_free(struct eng_worker *w);

#endif /* FLOORMTA_ENGINE_WORKER_H */
