/*
 * engine/smtp_session.h — one outbound SMTP connection on the loop: a socket, the
 * client state machine (smtp_client.h) and, after STARTTLS, a tls/ connection.
 *
 * The session moves bytes and nothing else: every decision is the state machine's,
 * every TLS judgement is tls/'s. Buffers are fixed at creation, so a session's memory
 * does not depend on what the receiver sends, nor on the size of the message it sends:
 * a body is read from its source, dot-stuffed and encrypted one 16 KB chunk at a time,
 * the next chunk only once the last one is on the wire.
 *
 * Two ways to run one: smtp_session_start() runs the probe dialogue and reports once;
 * smtp_session_start_delivery() reports READY after the EHLO over TLS, and the owner
 * hands it messages one at a time (smtp_session_deliver) until it says quit.
 *
 * Every wait has a deadline: connect; each reply (a deadline for the whole reply, not
 * per read); each send (a deadline for the whole buffer, partial sends included, so a
 * body goes at no less than 16 KB per send_timeout); the reply to the end of data; and
 * READY, where an owner that does not decide in time gets a QUIT.
 *
 * A READY delivery session keeps reading: a receiver that closes an idle connection, or
 * says 421 on it, ends the session at once (done), instead of failing the next message
 * handed to it (connection pools keep READY sessions for minutes).
 */
#ifndef FLOORMTA_ENGINE_SMTP_SESSION_H
#define FLOORMTA_ENGINE_SMTP_SESSION_H

#include <sys/socket.h>

#include "engine/loop.h"
#include "engine/smtp_client.h"
#include "tls/tls.h"

struct smtp_session;

struct smtp_session_config {
    struct tls_ctx *tls;         /* client context with the floor; borrowed, must outlive
                                  * the session */
    struct tls_cache *tls_cache; /* may be NULL; borrowed, must outlive the session */
    const char *mx_name;         /* the name the certificate must match (SNI too) */
    const char *helo_name;       /* our EHLO name */
    unsigned connect_timeout_ms;
    unsigned reply_timeout_ms;     /* waiting for any reply, and for each TLS flight */
    unsigned send_timeout_ms;      /* each command group, TLS flight or body chunk */
    unsigned data_done_timeout_ms; /* the reply to the end of data; 0 = reply_timeout_ms
                                    * (RFC 5321 4.5.3.2.6 suggests 10 minutes) */
    unsigned idle_timeout_ms;      /* delivery: READY without a decision from the owner
                                    * this long means QUIT; 0 = reply_timeout_ms */
    bool opportunistic;            /* the domain's policy is `opportunistic`
                                    * (smtp_client_set_opportunistic): plaintext when
                                    * STARTTLS is not offered, TLS of any quality when it
                                    * is; tls must then be an opportunistic context */
    const struct sockaddr *source; /* egress: the local address to bind to (port 0) before
                                    * connecting; NULL = the kernel's choice. Copied. */
    socklen_t source_len;
};

/* Called once when the session ends, with the finished state machine (borrowed for the
 * call: copy what is needed). The session is freed after the callback returns. */
typedef void (*smtp_session_done_fn)(void *arg, const struct smtp_client *result);

/* Connects to addr and runs the dialogue. cfg's strings and addr are copied. done and
 * arg are borrowed until done runs. Returns 0 (done will be called exactly once, from
 * the loop), or a negative code (socket, loop or argument failure; done is not called). */
int smtp_session_start(struct eng_loop *loop, const struct smtp_session_config *cfg,
                       const struct sockaddr *addr, socklen_t addrlen, smtp_session_done_fn done,
                       void *arg);

/* The delivery mode's callbacks, all called from the loop thread. s is valid from the
 * first callback until done returns. */
struct smtp_session_ops {
    /* Ready for a message: after the EHLO over TLS and after each transaction. Call
     * smtp_session_deliver() or smtp_session_quit(), from here or later. */
    void (*ready)(void *arg, struct smtp_session *s);
    /* The transaction given to smtp_session_deliver ended: every txn->results[] entry
     * is final (DELIVERED, DEFERRED or BOUNCED). txn is the owner's again after this.
     * Not ready yet here: ready (or done) follows. */
    void (*txn_done)(void *arg, struct smtp_session *s, const struct smtp_txn *txn);
    /* The connection ended (as smtp_session_done_fn), after the last txn_done. */
    smtp_session_done_fn done;
};

/* Connects to addr in delivery mode. As smtp_session_start; ops and arg are borrowed
 * until done runs. Before READY the owner learns of a refusal or an error through
 * done alone (result->outcome). */
int smtp_session_start_delivery(struct eng_loop *loop, const struct smtp_session_config *cfg,
                                const struct sockaddr *addr, socklen_t addrlen,
                                const struct smtp_session_ops *ops, void *arg);

#define SMTP_TXN_STARTED 0
#define SMTP_TXN_DECIDED 1

/* Hands over one message while the session is ready. txn and what it points to are
 * borrowed until txn_done runs for it. Returns:
 *   SMTP_TXN_STARTED: under way; txn_done follows (already from inside this call if the
 *                     connection fails at once — then done follows too);
 *   SMTP_TXN_DECIDED: decided without sending anything (the receiver lacks SMTPUTF8 or
 *                     8BITMIME the message needs, or its SIZE is too small): the results
 *                     are final, no txn_done follows, the session is still ready;
 *   -EBUSY (not ready: before ready, inside txn_done, or a message is under way),
 *   -EINVAL (a bad txn, see smtp_client_begin). */
int smtp_session_deliver(struct smtp_session *s, const struct smtp_txn *txn);

/* Ends a ready session with QUIT; done follows. Returns 0 or -EBUSY (not ready). */
int smtp_session_quit(struct smtp_session *s);

/* The state machine (peer, capabilities, verdict), borrowed while s is valid. */
const struct smtp_client *smtp_session_client(const struct smtp_session *s);

#endif /* FLOORMTA_ENGINE_SMTP_SESSION_H */
