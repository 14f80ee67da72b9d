/*
 * queue/queue.h — the durable spool, the scheduler and its retry clock, and DSN bounces.
 *
 * A message accepted by floormta is never lost: not by a crash, a full disk, a corrupt
 * file or a receiver that stays below the TLS floor for days.
 *
 * Model: a queued message has exactly one destination domain (injection splits a
 * multi-domain submission into one message per domain, each with its own copy of the
 * content), its envelope (sender, recipients with per-recipient state, DSN parameters)
 * and its content. On disk it is one immutable message file (envelope + content) plus
 * a small state file rewritten atomically on every state change. In memory it is one
 * small index entry (struct queue_entry), with no addresses or content: a delivery
 * reads the message file.
 *
 * queue/ is loop-agnostic and never blocks an event loop: durable writes are done by
 * a committer thread that batches concurrent requests into shared syncs (group
 * commit); a submitter learns of completions through an eventfd it watches
 * (queue_port_fd) and collects them with queue_port_reap, on its own thread.
 */
#ifndef FLOORMTA_QUEUE_H
#define FLOORMTA_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors -------------------------------------------------------------------------- */

#define QUEUE_ERRORS(X)                                                           \
    X(QUEUE_ERR_CONFIG, -13001, "invalid queue configuration")                    \
    X(QUEUE_ERR_LOCKED, -13002, "the spool is in use by another process")         \
    X(QUEUE_ERR_FULL, -13003, "the spool's disk is full (or below its reserve)")  \
    X(QUEUE_ERR_CORRUPT, -13004, "spool file is corrupt")                         \
    X(QUEUE_ERR_TOO_BIG, -13005, "message or envelope over the configured limit") \
    X(QUEUE_ERR_CLOSING, -13006, "the spool is shutting down")                    \
    X(QUEUE_ERR_NOT_FOUND, -13007, "no such message in the spool")

enum queue_err {
#define QUEUE_ERR_ENUM(name, code, text) name = code,
    QUEUE_ERRORS(QUEUE_ERR_ENUM)
#undef QUEUE_ERR_ENUM
};

/* Static string for a queue_ code or -errno. */
const char *queue_strerror(int err);

/* ---- identity ------------------------------------------------------------------------- */

/* Unique within a spool, also across restarts: 40 bits of milliseconds since
 * 2025-01-01 (time-ordered until 2059), 24 bits of a sequence that starts at a random
 * value per process; an atomic rename that refuses to replace catches the rest.
 * Never 0. */
typedef uint64_t queue_id_t;

#define QUEUE_ID_HEX 17 /* 16 hex digits + NUL */

/* Formats id as 16 lowercase hex digits. Returns out. */
char *queue_id_format(queue_id_t id, char out[QUEUE_ID_HEX]);

/* Parses 16 hex digits. Returns 0, or -EINVAL. */
int queue_id_parse(const char *text, queue_id_t *out);

/* ---- envelope ------------------------------------------------------------------------ */

#define QUEUE_ADDR_MAX   320 /* RFC 5321 path: 64 local-part + @ + 255 domain, with room */
#define QUEUE_DOMAIN_MAX 253
#define QUEUE_RCPTS_MAX  1000 /* per message */
#define QUEUE_TEXT_MAX   512  /* a result's text */

/* Where one recipient stands. DELIVERED and BOUNCED are final. */
#define QUEUE_RCPT_STATES(X)                                                           \
    X(QUEUE_RCPT_PENDING, "pending")     /* not tried yet */                           \
    X(QUEUE_RCPT_DEFERRED, "deferred")   /* tried: 4xx, floor refusal, DNS tempfail */ \
    X(QUEUE_RCPT_DELIVERED, "delivered") /* 2xx over TLS that met the floor */         \
    X(QUEUE_RCPT_BOUNCED, "bounced")     /* 5xx, null MX, NXDOMAIN, expiry: DSN made */

enum queue_rcpt_state {
#define QUEUE_RCPT_ENUM(name, str) name,
    QUEUE_RCPT_STATES(QUEUE_RCPT_ENUM)
#undef QUEUE_RCPT_ENUM
};

const char *queue_rcpt_state_name(enum queue_rcpt_state s);

/* DSN NOTIFY (RFC 3461 4.1): none set = the default (FAILURE, and DELAY if the
 * delay warning is on). */
enum queue_notify {
    QUEUE_NOTIFY_NEVER = 1u << 0,
    QUEUE_NOTIFY_SUCCESS = 1u << 1,
    QUEUE_NOTIFY_FAILURE = 1u << 2,
    QUEUE_NOTIFY_DELAY = 1u << 3,
};

/* DSN RET (RFC 3461 4.3). */
enum queue_ret {
    QUEUE_RET_DEFAULT, /* not given: headers only */
    QUEUE_RET_HDRS,
    QUEUE_RET_FULL,
};

/* What the last attempt for a recipient (or a whole message) said. */
#define QUEUE_RESULT_KINDS(X)                                                            \
    X(QUEUE_RESULT_NONE, "none")       /* never tried */                                 \
    X(QUEUE_RESULT_SMTP, "smtp")       /* a reply: code, enhanced, text */               \
    X(QUEUE_RESULT_TLS, "tls")         /* the floor refused: text = reason + evidence */ \
    X(QUEUE_RESULT_DNS, "dns")         /* resolution: text = outcome + reason */         \
    X(QUEUE_RESULT_NETWORK, "network") /* unreachable, timeout, connection lost */       \
    X(QUEUE_RESULT_LOCAL, "local")     /* decided here: expired, too many attempts */

enum queue_result_kind {
#define QUEUE_RESULT_ENUM(name, str) name,
    QUEUE_RESULT_KINDS(QUEUE_RESULT_ENUM)
#undef QUEUE_RESULT_ENUM
};

const char *queue_result_kind_name(enum queue_result_kind k);

struct queue_result {
    enum queue_result_kind kind;
    uint16_t code;                      /* SMTP-style: 250, 451, 550; for TLS/DNS/NETWORK/LOCAL
                                         * the code the queue acts on (4xx defer, 5xx bounce) */
    char enhanced[16];                  /* RFC 3463 "4.7.5"; "" if none */
    char remote[QUEUE_DOMAIN_MAX + 48]; /* the MX host and address tried, "" if none */
    int64_t when;                       /* unix seconds */
    char text[QUEUE_TEXT_MAX];          /* reply text, or the refusal reason with its evidence */
};

struct queue_rcpt {
    char addr[QUEUE_ADDR_MAX + 1];   /* without angle brackets */
    char orcpt[QUEUE_ADDR_MAX + 16]; /* DSN ORCPT ("rfc822;a@b", xtext decoded), "" */
    uint8_t notify;                  /* enum queue_notify bits, 0 = default */
    enum queue_rcpt_state state;
    uint16_t attempts;
    struct queue_result last;
};

/* Everything about a queued message but its content. Made with queue_envelope_alloc
 * (rcpts is part of the same allocation), freed with queue_envelope_free. */
struct queue_envelope {
    queue_id_t id;
    char sender[QUEUE_ADDR_MAX + 1];   /* "" = the null sender (a DSN) */
    char domain[QUEUE_DOMAIN_MAX + 1]; /* every recipient's domain, lowercase */
    char envid[101];                   /* DSN ENVID (RFC 3461 4.4), "" */
    enum queue_ret ret;
    bool is_dsn;          /* never bounced itself */
    bool needs_8bit;      /* BODY=8BITMIME */
    bool needs_smtputf8;  /* SMTPUTF8 */
    bool delay_warned;    /* the delay DSN was sent */
    int64_t arrival;      /* unix seconds */
    int64_t next_attempt; /* unix seconds; 0 = as soon as possible */
    uint16_t attempts;    /* delivery attempts of the message */
    uint64_t content_size;
    uint16_t nrcpts;
    struct queue_rcpt *rcpts; /* nrcpts entries */
};

/* A zeroed envelope with room for nrcpts recipients (1..QUEUE_RCPTS_MAX), or NULL
 * (out of memory, or nrcpts out of range). Free with queue_envelope_free. */
struct queue_envelope *queue_envelope_alloc(unsigned nrcpts);
void queue_envelope_free(struct queue_envelope *env);

/* A copy of env (free with queue_envelope_free), or NULL. */
struct queue_envelope *queue_envelope_dup(const struct queue_envelope *env);

/* A message is finished when every recipient is DELIVERED or BOUNCED. */
bool queue_envelope_finished(const struct queue_envelope *env);

/* ---- the spool ---------------------------------------------------------------------- */

struct queue_spool;

struct queue_spool_config {
    const char *dir;           /* created if missing (with its subfolders); borrowed */
    uint64_t max_message_size; /* 0 = 50 MiB */
    uint64_t min_free_bytes;   /* new messages are refused (QUEUE_ERR_FULL) below this
                                * much free space, so that state updates of messages
                                * already accepted still fit; 0 = 64 MiB */
    unsigned batch_max;        /* most requests one group commit takes; 0 = 256 */
    bool no_group_commit;      /* true: one sync round per request (for measuring) */
    bool sync_fs;              /* true: one syncfs(2) per round instead of an fdatasync per
                                * file: much faster, but it flushes the whole filesystem,
                                * so only for a spool on a filesystem of its own */
    /* Where the spool reports what it did to files on its own (quarantine, removal
     * of leftovers, write errors): one line each. NULL = nowhere. Called from the
     * recovering thread or the committer thread. */
    void (*log)(void *arg, const char *line);
    void *log_arg;
};

/* Opens (creating) the spool directory and takes its lock (flock on a lock file: a
 * second engine on the same spool gets QUEUE_ERR_LOCKED). Starts the committer thread.
 * Returns 0 and *out (close with queue_spool_close), QUEUE_ERR_CONFIG, QUEUE_ERR_LOCKED,
 * -errno. cfg is borrowed for the call. */
int queue_spool_open(const struct queue_spool_config *cfg, struct queue_spool **out);

/* Finishes every request already submitted, stops the committer, releases the lock.
 * NULL is a no-op. */
void queue_spool_close(struct queue_spool *sp);

struct queue_recover_stats {
    uint64_t messages;    /* unfinished messages found and reported */
    uint64_t finished;    /* messages whose every recipient was final: removed */
    uint64_t incomplete;  /* never-acknowledged leftovers (temporary files): removed */
    uint64_t quarantined; /* corrupt, truncated or empty files moved to quarantine/ */
    uint64_t bytes;       /* content bytes of the messages reported */
    double seconds;
};

/* Called once per unfinished message found by queue_spool_recover. env is borrowed
 * for the call. Returning a negative code stops recovery with that code. */
typedef int (*queue_recover_fn)(void *arg, const struct queue_envelope *env);

/* Scans the spool: every valid unfinished message is reported through fn (with its
 * latest persisted state); finished ones and never-acknowledged leftovers are removed;
 * corrupt, truncated and zero-length files are moved to quarantine/ (counted in
 * stats and reported through the spool's log callback) and never stop the scan. Call before
 * submitting anything. Returns 0 or a negative code (I/O error on the spool directory itself, or
 * fn's). */
int queue_spool_recover(struct queue_spool *sp, queue_recover_fn fn, void *arg,
                        struct queue_recover_stats *stats);

/* Reads a message: its envelope with the latest persisted state into a new *env (free
 * with queue_envelope_free), and, if content is not NULL, its content into a new
 * buffer (*content, *len; free() it).
 * Verifies checksums. Blocking file I/O on a small file: for a delivery worker's I/O
 * path or tests, not the hot loop. Returns 0, QUEUE_ERR_NOT_FOUND, QUEUE_ERR_CORRUPT
 * (the message is moved to quarantine), -errno. */
int queue_spool_read(struct queue_spool *sp, queue_id_t id, struct queue_envelope **env,
                     void **content, size_t *len);

/* queue_spool_read for a message its caller knows has no state file: made durable by
 * this process and never updated since (queue_entry_fresh). Skips looking for the
 * state file: that lookup of a name that does not exist walks the directory index on
 * every delivery. */
int queue_spool_read_fresh(struct queue_spool *sp, queue_id_t id, struct queue_envelope **env,
                           void **content, size_t *len);

struct queue_spool_stats {
    uint64_t enqueued, updated, removed;
    uint64_t commits;       /* group commits (sync rounds) */
    uint64_t full_refusals; /* QUEUE_ERR_FULL */
    uint64_t write_errors;
    uint64_t quarantined;
    uint64_t spool_bytes; /* bytes of message files accepted and not yet removed */
};

void queue_spool_stats(const struct queue_spool *sp, struct queue_spool_stats *out);

/* ---- durable writes: ports ------------------------------------------------------------ */

/* A port is one submitter's channel to the committer: each worker thread has its own.
 * Requests are submitted from the port's thread; completions come back to the same
 * thread through queue_port_reap when queue_port_fd becomes readable. */
struct queue_port;

/* Returns 0 and *out (free with queue_port_free after its requests completed), or
 * -errno. */
int queue_port_new(struct queue_spool *sp, struct queue_port **out);
void queue_port_free(struct queue_port *port);

/* An eventfd, readable when completions are waiting. Owned by the port. */
int queue_port_fd(const struct queue_port *port);

/* Called from queue_port_reap, on the port's thread, once per request. res: 0 durable;
 * QUEUE_ERR_FULL, QUEUE_ERR_TOO_BIG, -EIO, ... nothing was changed on disk. */
typedef void (*queue_done_fn)(void *arg, queue_id_t id, int res);

/* Enqueues a new message: env (id assigned here: env->id is ignored and the new id
 * is passed to done; every recipient starts PENDING with no attempts, and only
 * next_attempt is taken from env) and content are borrowed until done runs. done runs once the
 * message file is durable (data written, fdatasync, atomic rename, directory fsync),
 * or failed. Never blocks. Returns 0 (done will run), QUEUE_ERR_TOO_BIG,
 * QUEUE_ERR_CLOSING, -ENOMEM (done will not run). */
int queue_port_enqueue(struct queue_port *port, const struct queue_envelope *env,
                       const void *content, size_t len, queue_done_fn done, void *arg);

/* Persists a new state of a queued message (per-recipient states and results,
 * attempts, next attempt, delay_warned), atomically replacing the previous state.
 * env is borrowed until done. Act on the new state only once done says 0. */
int queue_port_update(struct queue_port *port, const struct queue_envelope *env, queue_done_fn done,
                      void *arg);

/* Removes a finished message's files. done runs after the removal is durable. */
int queue_port_remove(struct queue_port *port, queue_id_t id, queue_done_fn done, void *arg);

/* Runs the callbacks of the completed requests, in completion order. Returns how many. */
unsigned queue_port_reap(struct queue_port *port);

/* ---- the scheduler --------------------------------------------------------------------- */

/* The in-memory index of the queue: one struct queue_entry per message, ready queues
 * per destination domain (served round-robin) and the deferred messages on a timer
 * heap. Single-threaded (one per worker, or one behind the owner's own lock); no
 * I/O; time is passed in (unix seconds), so it is deterministic in tests. */
struct queue_sched;
struct queue_entry;

struct queue_retry_config {
    uint32_t first;         /* seconds before the first retry; 0 = 300 */
    uint32_t max;           /* cap of the interval; 0 = 3600 (Postfix: 4000) */
    uint32_t factor_pct;    /* growth per attempt in percent; 0 = 200 (doubling) */
    uint32_t jitter_pct;    /* +- this percent, spreading retries; 0 = 10 */
    uint32_t max_age;       /* seconds from arrival, then bounce; 0 = 5 days */
    uint32_t delay_warning; /* seconds from arrival for a delay DSN; 0 = off */
};

/* Seconds until the retry after `attempts` failed attempts, without jitter: first *
 * factor^(attempts-1), capped at max. attempts >= 1. */
uint32_t queue_retry_interval(const struct queue_retry_config *cfg, unsigned attempts);

int queue_sched_new(const struct queue_retry_config *cfg, struct queue_sched **out);

/* Replaces the retry schedule (cfg borrowed, copied; NULL = the defaults), for a
 * configuration reload: entries already deferred keep the time they were given, every
 * later queue_sched_defer (and its max_age and delay-warning checks) uses the new one.
 * Returns 0, -EINVAL (s NULL) or QUEUE_ERR_CONFIG as queue_sched_new (the schedule is
 * then unchanged). */
int queue_sched_set_retry(struct queue_sched *s, const struct queue_retry_config *cfg);

/* Frees the scheduler and every entry. */
void queue_sched_free(struct queue_sched *s);

/* What the index keeps per message (copied in). */
struct queue_entry_info {
    queue_id_t id;
    const char *domain; /* borrowed; interned by the scheduler */
    int64_t arrival;
    int64_t next_attempt; /* <= now: ready at once */
    uint16_t attempts;
    uint16_t nrcpts; /* recipients not final */
    uint64_t content_size;
    bool is_dsn;
    bool delay_warned;
    bool fresh; /* made durable by this process, never updated: no state file exists */
};

/* Adds a message: ready (domain's ready queue) if next_attempt <= now, else deferred.
 * Returns 0 and *out (the entry, owned by the scheduler), -EEXIST, -ENOMEM. */
int queue_sched_add(struct queue_sched *s, const struct queue_entry_info *info, int64_t now,
                    struct queue_entry **out);

/* Moves every deferred entry whose time has come to its domain's ready queue.
 * Returns how many. */
unsigned queue_sched_promote(struct queue_sched *s, int64_t now);

/* Seconds until the next deferred entry is due (0 if one is due now), or -1 if none. */
int64_t queue_sched_next_due(const struct queue_sched *s, int64_t now);

/* Takes the next ready entry, domains served round-robin (so one busy domain cannot
 * starve the others). The entry leaves the ready queue: it is "in flight" until
 * queue_sched_defer / queue_sched_done. NULL if nothing is ready. */
struct queue_entry *queue_sched_pop(struct queue_sched *s);

/* Takes the next ready entry of one domain (a connection to its MX reused for the
 * next message), or NULL. domain is borrowed. */
struct queue_entry *queue_sched_pop_domain(struct queue_sched *s, const char *domain);

/* What to do with an in-flight entry that was not finished. */
enum queue_defer_verdict {
    QUEUE_DEFER_RETRY,  /* deferred until *next (jittered) */
    QUEUE_DEFER_WARN,   /* deferred, and the delay warning is due now (once) */
    QUEUE_DEFER_EXPIRE, /* past max_age: bounce every remaining recipient */
};

/* Defers an in-flight entry after a failed attempt (4xx, floor refusal, DNS
 * tempfail, network): attempts++, next attempt from the retry schedule. *next gets the
 * new next_attempt (unix seconds) for the caller to persist. */
enum queue_defer_verdict queue_sched_defer(struct queue_sched *s, struct queue_entry *e,
                                           int64_t now, int64_t *next);

/* Puts an in-flight entry back to the ready queue untouched (the attempt did not
 * happen: no connection slot, shutdown). */
void queue_sched_requeue(struct queue_sched *s, struct queue_entry *e);

/* Removes an entry (finished, bounced, deleted by an operator): frees it. */
void queue_sched_remove(struct queue_sched *s, struct queue_entry *e);

/* Finds an entry by id (operator actions), or NULL. */
struct queue_entry *queue_sched_find(struct queue_sched *s, queue_id_t id);

/* Makes every deferred entry (of domain, or all with NULL) ready now. Returns how many. */
unsigned queue_sched_flush(struct queue_sched *s, const char *domain, int64_t now);

/* Where an entry is, for the operator's views (the names: "ready", "deferred",
 * "inflight"). */
#define QUEUE_ENTRY_STATES(X)                                              \
    X(QUEUE_ENTRY_READY, "ready")       /* on its domain's ready queue */  \
    X(QUEUE_ENTRY_DEFERRED, "deferred") /* waiting for its next attempt */ \
    X(QUEUE_ENTRY_INFLIGHT, "inflight") /* popped (an attempt), or taken by an operator */

enum queue_entry_state {
#define QUEUE_ENTRY_ENUM(name, str) name,
    QUEUE_ENTRY_STATES(QUEUE_ENTRY_ENUM)
#undef QUEUE_ENTRY_ENUM
};

/* Static string; "invalid" out of range. */
const char *queue_entry_state_name(enum queue_entry_state s);

/* Takes a READY or DEFERRED entry out of circulation (it becomes INFLIGHT, as if
 * popped) so that an operator's action (bounce, delete) can end it with
 * queue_sched_remove, or give it back with queue_sched_requeue. An INFLIGHT entry is
 * left as it is. */
void queue_sched_take(struct queue_sched *s, struct queue_entry *e);

/* Calls fn for every entry (of domain, any case, or all with NULL), in no particular
 * order, until fn returns false. e is borrowed for the call; fn must not add, remove
 * or move entries (collect ids and act afterwards). O(entries). */
typedef bool (*queue_sched_entry_fn)(void *arg, const struct queue_entry *e);
void queue_sched_foreach(const struct queue_sched *s, const char *domain, queue_sched_entry_fn fn,
                         void *arg);

/* One domain's counts, for queue_sched_foreach_domain. */
struct queue_sched_domain_info {
    const char *name; /* interned: the same pointer as queue_entry_domain for its entries;
                       * borrowed for the call */
    uint64_t entries, ready, deferred, inflight;
};

/* Calls fn for every domain with entries, in no particular order, until fn returns
 * false. info is borrowed for the call; the same rule as queue_sched_foreach. */
typedef bool (*queue_sched_domain_fn)(void *arg, const struct queue_sched_domain_info *info);
void queue_sched_foreach_domain(const struct queue_sched *s, queue_sched_domain_fn fn, void *arg);

/* The entry's fields (borrowed views). */
queue_id_t queue_entry_id(const struct queue_entry *e);
enum queue_entry_state queue_entry_state(const struct queue_entry *e);
int64_t queue_entry_arrival(const struct queue_entry *e);
const char *queue_entry_domain(const struct queue_entry *e);
int64_t queue_entry_next_attempt(const struct queue_entry *e);
uint16_t queue_entry_attempts(const struct queue_entry *e);

/* True while the entry was added fresh (queue_entry_info.fresh) and no state update was
 * made for it since (queue_entry_mark_updated, which its owner calls when it submits
 * one, whether or not it succeeds). */
bool queue_entry_fresh(const struct queue_entry *e);
void queue_entry_mark_updated(struct queue_entry *e);

struct queue_sched_stats {
    uint64_t entries, ready, deferred, inflight;
    uint64_t domains;   /* domains with at least one entry */
    uint64_t bytes;     /* content bytes of all entries */
    size_t index_bytes; /* memory of the index itself */
};

void queue_sched_stats(const struct queue_sched *s, struct queue_sched_stats *out);

/* ---- DSN (RFC 3464) ------------------------------------------------------------------- */

enum queue_dsn_action {
    QUEUE_DSN_FAILED,  /* bounced */
    QUEUE_DSN_DELAYED, /* the delay warning */
};

struct queue_dsn_input {
    const char *reporting_mta;        /* our host name, "mx.esp.example" */
    const struct queue_envelope *env; /* the original message's envelope; the recipients
                                       * reported are those whose state is BOUNCED (for
                                       * FAILED) or DEFERRED/PENDING (for DELAYED) and whose
                                       * NOTIFY asks for it. The caller passes exactly the
                                       * recipients to report now: a recipient bounced by
                                       * an earlier DSN must not be BOUNCED in this view,
                                       * or it is reported twice; a DELAYED DSN is asked
                                       * for only when the delay warning is on, and the
                                       * caller sets delay_warned. */
    enum queue_dsn_action action;
    const void *content; /* the original message, for its headers or all of
                          * it (per RET) */
    size_t content_len;
    int64_t now;               /* unix seconds: Date, Last-Attempt-Date */
    int64_t retry_until;       /* for DELAYED: Will-Retry-Until */
    uint64_t max_return_bytes; /* RET=FULL over this returns headers only;
                                * 0 = 10 MiB */
};

/* Builds the DSN message (RFC 5322 + MIME multipart/report; report-type=delivery-status,
 * a human-readable part, message/delivery-status with the per-message and per-recipient
 * fields, then text/rfc822-headers or message/rfc822 per RET) into a new buffer (*out,
 * *len; free() it), and a new *dsn_env (free with queue_envelope_free): null sender,
 * is_dsn, one recipient (the original sender), the sender's domain. Returns 0, -ENOENT
 * (nothing to report: the sender is null — a DSN is never bounced — or no recipient
 * asks for it), -EINVAL (NULL arguments; a sender without a domain or with control
 * characters), -ENOMEM. in is borrowed. */
int queue_dsn_build(const struct queue_dsn_input *in, void **out, size_t *len,
                    struct queue_envelope **dsn_env);

/* Builds the DSN for in (queue_dsn_build) and enqueues it through port as a message of
 * its own (null sender, to the original sender), so it is durable and delivered like
 * any other. done runs once with the DSN's new id when it is durable (or failed); the
 * DSN's buffers are the port's until then. in and what it points to are borrowed for
 * the call only. Returns 0 (done will run), -ENOENT (nothing to report: a DSN is
 * never bounced, or no recipient asks for one), or what queue_dsn_build and
 * queue_port_enqueue return (done will not run). */
int queue_port_enqueue_dsn(struct queue_port *port, const struct queue_dsn_input *in,
                           queue_done_fn done, void *arg);

#endif /* FLOORMTA_QUEUE_H */
