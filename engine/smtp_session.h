/*
 * engine/smtp_session.h — one outbound SMTP connection on the loop: a socket, the
 * client state machine (smtp_client.h) and, after STARTTLS, a tls/ connection.
 *
 * The session moves bytes and nothing else: every decision is the state machine's,
 * every TLS judgement is tls/'s. Buffers are fixed at creation, so a session's memory
 * does not depend on what the receiver sends.
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
    unsigned reply_timeout_ms; /* waiting for any reply, and for each TLS flight */
    unsigned send_timeout_ms;
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

#endif /* FLOORMTA_ENGINE_SMTP_SESSION_H */
