/*
 * engine/connpool.h — one worker's SMTP connections to MX hosts: the connection limits
 * and the verified connections kept idle for the next message.
 *
 * Connections are counted and pooled per key: MX host name, port and egress source
 * (a connection bound to one source address is never used for a message that must
 * leave from another). A connection is only ever pooled after it reached READY, that
 * is after the floor passed for that MX host name, so handing it to the next message
 * for any domain whose MX is the same name keeps the certificate name check true: the
 * certificate was checked against exactly that name.
 *
 * The life of a connection (struct eng_conn):
 *   CONNECTING  started by eng_connpool_connect on a slot the caller acquired;
 *   LEASED      ready and lent to one owner (eng_conn_ops), who runs transactions
 *               (eng_conn_deliver) and gives it back with eng_connpool_release;
 *   IDLE        in the pool, READY, waiting for the next owner (bounded per key, closed
 *               after idle_timeout_ms, after max_msgs_per_conn transactions or when
 *               older than max_conn_age_ms);
 *   CLOSING     QUIT sent (not reusable, pool full, or shutting down).
 * A connection that is closing still counts against the limits until it is gone: the
 * receiver still has it.
 *
 * Limits: at most max_per_host connections per key and max_total in the pool. An
 * owner that asks (eng_connpool_acquire) gets an idle connection, a slot to connect
 * on, or waits in a FIFO (per key, or the pool's when only the total is full) until a
 * connection is released or closes. Everything runs on the loop's thread; no locks.
 *
 * The pool may be NULL everywhere a pool is taken: acquire always grants a slot, and
 * connections are neither counted nor kept (released ones get QUIT). Tests and the
 * probe use that.
 */
#ifndef FLOORMTA_ENGINE_CONNPOOL_H
#define FLOORMTA_ENGINE_CONNPOOL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "engine/loop.h"
#include "engine/smtp_client.h"
#include "engine/smtp_session.h"

struct eng_connpool;
struct eng_conn;

struct eng_connpool_config {
    struct eng_loop *loop;      /* borrowed; outlives the pool */
    unsigned max_per_host;      /* connections per key (any state); 0 = 10 */
    unsigned max_total;         /* connections in the pool; 0 = 1000 */
    unsigned max_idle_per_host; /* idle connections kept per key; 0 = max_per_host */
    unsigned idle_timeout_ms;   /* an idle connection is closed after this; 0 = 10000 */
    unsigned max_msgs_per_conn; /* transactions per connection; 0 = 100 */
    unsigned max_conn_age_ms;   /* not reused once this old; 0 = 300000 (Postfix's
                                 * smtp_connection_reuse_time_limit) */
};

/* What the pool counts for one key. Strings are borrowed for the call. */
struct eng_connpool_key {
    const char *host; /* the MX host name (the name the certificate was checked for) */
    uint16_t port;
    unsigned source;           /* index of the egress source address; 0 when there is one */
    const struct tls_ctx *tls; /* the context (policy) the connection was judged with: a
                                * connection is only lent under the same one */
};

/* The owner of a leased connection. All called from the loop; c is valid until done
 * returns. */
struct eng_conn_ops {
    /* Ready for a message: once after connect (the floor passed), and after each
     * transaction. Call eng_conn_deliver or eng_connpool_release, here or later. */
    void (*ready)(void *arg, struct eng_conn *c);
    /* The transaction given to eng_conn_deliver ended (see smtp_session_ops). */
    void (*txn_done)(void *arg, struct eng_conn *c, const struct smtp_txn *txn);
    /* The connection ended while lent to this owner (before ready: refused or failed;
     * after: lost, timed out, closed by the receiver). result is borrowed for the call.
     * The owner's last callback. */
    void (*done)(void *arg, struct eng_conn *c, const struct smtp_client *result);
};

#define ENG_CONNPOOL_GRANTS(X)                                                             \
    X(ENG_CONNPOOL_REUSE, "reuse")     /* an idle connection, now leased to the owner */   \
    X(ENG_CONNPOOL_CONNECT, "connect") /* a slot: call eng_connpool_connect (or            \
                                        * eng_connpool_unreserve) */                       \
    X(ENG_CONNPOOL_WAIT, "wait")       /* queued: the waiter's granted callback follows */ \
    X(ENG_CONNPOOL_CLOSED, "closed")   /* (granted only) the pool is shutting down */

enum eng_connpool_grant {
#define ENG_CONNPOOL_GRANT_ENUM(name, str) name,
    ENG_CONNPOOL_GRANTS(ENG_CONNPOOL_GRANT_ENUM)
#undef ENG_CONNPOOL_GRANT_ENUM
};

const char *eng_connpool_grant_name(enum eng_connpool_grant g);

/* An owner's request, embedded in the owner's own struct (no allocation). The fields
 * after `granted` are the pool's. */
struct eng_connpool_wait {
    const struct eng_conn_ops *ops; /* the owner, for a connection leased to it */
    void *arg;
    /* Called once for a waiter queued by eng_connpool_acquire, from the loop: REUSE
     * (c leased to ops/arg), CONNECT (a slot is reserved, c NULL) or CLOSED (c NULL,
     * nothing reserved). */
    void (*granted)(struct eng_connpool_wait *w, enum eng_connpool_grant g, struct eng_conn *c);
    /* private */
    struct eng_connpool_wait *next;
    void *host;
    bool queued;
};

struct eng_connpool_stats {
    uint64_t connects;   /* connections started */
    uint64_t ready;      /* connections that reached READY (the floor passed) */
    uint64_t reuses;     /* leases of an idle connection */
    uint64_t waits;      /* acquires that had to wait */
    uint64_t idle_kept;  /* releases that kept the connection idle */
    uint64_t idle_quits; /* idle connections closed (timeout, age, count, pool full) */
    unsigned total;      /* connections now, any state */
    unsigned idle;       /* idle now */
    unsigned hosts;      /* keys with a connection, an idle one or a waiter */
    unsigned waiting;    /* waiters now */
};

/* Returns 0 and *out (free with eng_connpool_free), -EINVAL (no loop), -ENOMEM. cfg is
 * copied. */
int eng_connpool_new(const struct eng_connpool_config *cfg, struct eng_connpool **out);

/* Asks for a connection to key for the owner in w (w is borrowed until it is granted
 * or, if not queued, until this returns; key's strings are copied). Returns REUSE
 * (*out: an idle connection, now LEASED to w->ops/arg: call eng_conn_deliver; no
 * ready callback follows for this lease), CONNECT (a slot is reserved for key: call
 * eng_connpool_connect or eng_connpool_unreserve), WAIT (w is queued: w->granted runs
 * later, never from inside this call), CLOSED (shutting down), -EINVAL (a NULL or
 * over-long name), -ENOMEM. With p NULL: always CONNECT. */
int eng_connpool_acquire(struct eng_connpool *p, const struct eng_connpool_key *key,
                         struct eng_connpool_wait *w, struct eng_conn **out);

/* Gives back a slot reserved by CONNECT that will not be used. */
void eng_connpool_unreserve(struct eng_connpool *p, const struct eng_connpool_key *key);

/* Starts a connection on a reserved slot of key: a delivery session (smtp_session.h)
 * on loop (the pool's, when p is not NULL) to addr with scfg (its idle_timeout_ms is
 * the pool's for a pooled connection), bound to scfg's source if set. ops/arg
 * (borrowed until their done runs) own it from now: ready or done follows. Returns 0,
 * or a negative code (the slot is given back, no callback follows). */
int eng_connpool_connect(struct eng_connpool *p, struct eng_loop *loop,
                         const struct eng_connpool_key *key, const struct smtp_session_config *scfg,
                         const struct sockaddr *addr, socklen_t addrlen,
                         const struct eng_conn_ops *ops, void *arg);

/* Hands one message to a leased, ready connection: as smtp_session_deliver. */
int eng_conn_deliver(struct eng_conn *c, const struct smtp_txn *txn);

/* The owner gives a leased, ready connection back (from its ready callback or later):
 * keep false closes it (QUIT); true keeps it for the next owner if the pool's limits
 * allow. No callback of the owner follows — except without a pool: the connection is
 * closed (QUIT) and the owner's done runs once that is through. */
void eng_connpool_release(struct eng_conn *c, bool keep);

/* The connection's state machine (peer, capabilities, the verdict of its handshake),
 * borrowed while c is valid. */
const struct smtp_client *eng_conn_client(const struct eng_conn *c);

/* The address connected to, "192.0.2.1:25" (borrowed while c is valid). */
const char *eng_conn_address(const struct eng_conn *c);

/* Leases of this connection before the current one (0: a new connection). */
unsigned eng_conn_reuses(const struct eng_conn *c);

void eng_connpool_stats(const struct eng_connpool *p, struct eng_connpool_stats *out);

/* Shutting down: closes the idle connections, grants CLOSED to every waiter, and from
 * then on keeps nothing idle and grants nothing but CLOSED. Leased connections finish
 * with their owners. */
void eng_connpool_close(struct eng_connpool *p);

/* Closes the pool (eng_connpool_close), drives the loop (eng_loop_run_once) until every
 * connection is gone, and frees it. Call from the loop thread but never from inside a
 * loop callback. NULL is a no-op. */
void eng_connpool_free(struct eng_connpool *p);

#endif /* FLOORMTA_ENGINE_CONNPOOL_H */
