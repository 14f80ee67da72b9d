/*
 * engine/deliver.h — one delivery attempt of one queued message, on one loop.
 *
 * An attempt resolves the message's domain (dns_loop.h), then walks its MX hosts in
 * delivery order and each host's addresses, one connection at a time, each taken from
 * the worker's connection pool (connpool.h): an idle verified connection to the same
 * MX host name if there is one (the message goes over it, RSET-free), else a new one
 * within the host's connection limit (waiting for a slot when the limit is reached):
 *   - a host the capability cache (capcache.h) blocks is skipped without a connection,
 *     its cached refusal kept as the reason;
 *   - a connection whose TLS the floor refuses is recorded in the capability cache and
 *     the next host is tried — never the same host in plaintext or a weaker mode;
 *   - a connection that fails (unreachable, timeout, lost before READY) moves on to
 *     the next address or host;
 *   - the first connection that reaches READY over TLS gets the message (one
 *     transaction): its per-recipient replies decide the recipients, and the attempt
 *     ends there (a 4xx from the host that took the transaction is not retried
 *     elsewhere in the same attempt). The connection then goes back to the pool;
 *   - a reused connection that turns out dead before the receiver answered MAIL (it
 *     closed while idle and we had not noticed yet) took nothing: the same host is
 *     tried again on another connection (twice at most).
 * The domain's policy (policy.h) picks the TLS context and the mode: the floor by
 * default; a higher floor or a pinned CA; or, only where the operator wrote it,
 * `opportunistic` (TLS of any quality if offered, plaintext if not: the report and the
 * log line say so). With `on_refusal = bounce`, an attempt whose every host refused
 * the floor bounces (5.7.x) instead of deferring.
 * DNS answers decide without a connection: a null MX bounces (556 5.1.10), NXDOMAIN or
 * no address bounces (550 5.1.2), a temporary failure defers (451 4.4.3). When no host
 * took a transaction, every recipient not yet final is deferred with the most specific
 * reason seen: a floor refusal (live or cached) beats a network error.
 *
 * Results are values: the attempt works on its own copy of the envelope
 * (queue_envelope_dup) and hands it back, updated, in the report; each recipient tried
 * gets its state, attempts + 1 and a queue_result. The message-level attempts counter
 * is the scheduler's (queue_sched_defer) and is left alone.
 *
 * Every attempt also yields one JSON line for the delivery log (also logged with
 * eng_log at info level as "delivery {...}").
 */
#ifndef FLOORMTA_ENGINE_DELIVER_H
#define FLOORMTA_ENGINE_DELIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns/dns.h"
#include "engine/capcache.h"
#include "engine/connpool.h"
#include "engine/json_out.h"
#include "engine/dns_loop.h"
#include "engine/loop.h"
#include "engine/policy.h"
#include "queue/queue.h"
#include "tls/tls.h"

struct eng_deliver_config {
    struct eng_loop *loop;
    struct eng_dns *dns;
    struct tls_ctx *tls; /* client context with the floor, for every domain when policy
                          * is NULL */
    const struct eng_policy_table *policy;  /* per-domain policy (built); may be NULL. The
                                             * capability cache serves domains whose policy
                                             * judges like the default one (same context,
                                             * floor mode) only: a 1.3-only or pinned-CA
                                             * domain's refusal says nothing about the
                                             * others, and opportunistic ones refuse less */
    struct tls_cache *tls_cache;            /* may be NULL */
    struct eng_capcache *capcache;          /* may be NULL: no skipping, nothing recorded */
    struct eng_connpool *pool;              /* may be NULL: a new connection per attempt, closed
                                             * after it */
    const struct sockaddr_storage *sources; /* egress addresses (port 0), nsources of them,
                                             * one chosen per destination domain (a
                                             * stable hash); NULL = the kernel's choice.
                                             * An address family without a source of its
                                             * own is connected unbound. */
    unsigned nsources;
    const char *helo_name;         /* our EHLO name */
    uint16_t port;                 /* SMTP port of every MX host; 0 = 25 */
    unsigned connect_timeout_ms;   /* 0 = 30000 */
    unsigned reply_timeout_ms;     /* 0 = 300000 (RFC 5321 4.5.3.2: 5 minutes) */
    unsigned send_timeout_ms;      /* 0 = reply_timeout_ms */
    unsigned data_done_timeout_ms; /* 0 = 600000 (RFC 5321 4.5.3.2.6: 10 minutes) */
    unsigned max_mx_hosts;         /* MX hosts tried per attempt; 0 = all the resolver gave */
    struct eng_json_out *log_out;  /* where the delivery-log lines are built (json_out.h),
                                    * reused line after line; borrowed, on the loop thread;
                                    * NULL = a buffer per line */
};

/* How the attempt ended, as a whole. */
#define ENG_DELIVER_RESULTS(X)                                                 \
    X(ENG_DELIVER_DELIVERED, "delivered") /* every recipient delivered */      \
    X(ENG_DELIVER_DEFERRED, "deferred")   /* every recipient tried deferred */ \
    X(ENG_DELIVER_BOUNCED, "bounced")     /* every recipient tried bounced */  \
    X(ENG_DELIVER_MIXED, "mixed")         /* some of each */

enum eng_deliver_result {
#define ENG_DELIVER_RESULT_ENUM(name, str) name,
    ENG_DELIVER_RESULTS(ENG_DELIVER_RESULT_ENUM)
#undef ENG_DELIVER_RESULT_ENUM
};

/* Static string; "invalid" for an out-of-range value. */
const char *eng_deliver_result_name(enum eng_deliver_result r);

/* What one attempt did. Everything is borrowed for the done callback only. */
struct eng_deliver_report {
    const struct queue_envelope *env; /* the envelope with this attempt's results (a copy;
                                       * queue_envelope_dup it to keep it) */
    enum eng_deliver_result result;
    unsigned delivered, deferred, bounced; /* recipients, by their state after the attempt */
    enum dns_outcome dns_outcome;
    enum dns_reason dns_reason;
    bool transacted; /* a host took the transaction: the fields below describe it */
    char mx_host[DNS_NAME_MAX + 1];
    char address[64];           /* "192.0.2.1:25" */
    char smtp_reply[256];       /* the last reply that decided something */
    struct tls_verdict verdict; /* of the delivering connection (evidence: version, cipher,
                                 * certificate, resumed) */
    enum tls_reason refusal;    /* the first floor refusal (live or cached) of this attempt,
                                 * NONE if none: behind a deferral, or a host skipped before
                                 * the one that took the message */
    bool reused;                /* the delivering connection was an idle one reused */
    const char *policy;         /* the domain's policy: its pattern, or "default" (static
                                 * or the table's) */
    enum eng_policy_mode mode;  /* ... and its mode */
    bool plaintext;             /* delivered without TLS (opportunistic policy only) */
    bool floor_met;             /* the delivering connection met the floor (false for an
                                 * opportunistic delivery below it, or in plaintext) */
    unsigned connections;       /* connections opened */
    unsigned skipped_cached;    /* MX hosts skipped on a cached refusal */
    uint64_t dns_ms;            /* the MX lookup */
    uint64_t connect_ms;        /* connect + greeting + STARTTLS + handshake + EHLO, of the
                                 * delivering connection */
    uint64_t txn_ms;            /* the transaction */
    uint64_t total_ms;
    const char *log_json; /* the delivery-log line (one JSON object, no newline) */
};

/* Called once per attempt, from the loop, with the report (borrowed for the call). */
typedef void (*eng_deliver_done_fn)(void *arg, const struct eng_deliver_report *rep);

/* Starts one delivery attempt of env (its recipients in PENDING or DEFERRED state;
 * final ones are left alone) with content (len bytes: the message as queued). cfg is
 * copied (its helo_name too); the objects it points to are borrowed and must outlive
 * the attempt. env, content and arg are borrowed until done runs. Returns 0 (done
 * will run exactly once, from the loop, never from inside this call), -EINVAL (a NULL
 * argument, no recipient to try), -ENOMEM, or what eng_dns_lookup_mx returns (a
 * domain that is not a valid name: DNS_ERR_NAME); done does not run then. */
int eng_deliver_start(const struct eng_deliver_config *cfg, const struct queue_envelope *env,
                      const void *content, size_t len, eng_deliver_done_fn done, void *arg);

#endif /* FLOORMTA_ENGINE_DELIVER_H */
