/*
 * engine/smtp_client.h — the SMTP client as an explicit state machine, free of I/O.
 *
 * The driver (smtp_session.c) feeds it events — connected, a complete reply, the TLS
 * handshake's end, an I/O error — through smtp_client_step(), and does what the
 * returned action says: wait for a reply, send the command in c->cmd, start TLS, or
 * close. Nothing else writes c->state.
 *
 * Today it runs the probe dialogue: greeting, EHLO, STARTTLS, handshake and floor
 * verdict, EHLO again, QUIT. The delivery client (issue 5) continues from READY with
 * MAIL/RCPT/DATA instead of QUIT; the states up to READY are shared.
 *
 * The floor is not negotiable here: without STARTTLS, with STARTTLS refused, or with a
 * handshake the verdict refuses, the outcome is REFUSED and nothing but QUIT (or, after
 * a failed handshake, nothing at all) is sent.
 */
#ifndef FLOORMTA_ENGINE_SMTP_CLIENT_H
#define FLOORMTA_ENGINE_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/smtp_reply.h"
#include "tls/tls.h"

#define SMTP_CLIENT_STATES(X)     \
    X(SMTPC_CONNECT, "connect")   \
    X(SMTPC_GREETING, "greeting") \
    X(SMTPC_EHLO, "ehlo")         \
    X(SMTPC_STARTTLS, "starttls") \
    X(SMTPC_TLS, "tls-handshake") \
    X(SMTPC_EHLO_TLS, "ehlo-tls") \
    X(SMTPC_QUIT, "quit")         \
    X(SMTPC_DONE, "done")

enum smtpc_state {
#define SMTPC_STATE_ENUM(name, str) name,
    SMTP_CLIENT_STATES(SMTPC_STATE_ENUM)
#undef SMTPC_STATE_ENUM
            SMTPC_STATE__COUNT
};

const char *smtpc_state_name(enum smtpc_state st);

enum smtpc_event_kind {
    SMTPC_EV_CONNECTED,  /* TCP connection established */
    SMTPC_EV_REPLY,      /* a complete reply: ev.reply */
    SMTPC_EV_TLS_DONE,   /* handshake finished and the verdict passed: ev.verdict */
    SMTPC_EV_TLS_FAILED, /* handshake failed or refused: ev.verdict */
    SMTPC_EV_ERROR,      /* I/O or protocol error: ev.err (negative) */
};

struct smtpc_event {
    enum smtpc_event_kind kind;
    const struct smtp_reply *reply;    /* borrowed for the call */
    const struct tls_verdict *verdict; /* borrowed for the call */
    int err;
};

enum smtpc_action {
    SMTPC_ACT_RECV,  /* wait for the next reply */
    SMTPC_ACT_SEND,  /* send c->cmd (c->cmd_len bytes), then wait for its reply */
    SMTPC_ACT_TLS,   /* start the TLS handshake on the connection */
    SMTPC_ACT_CLOSE, /* flush what is pending and close; c->outcome is final */
};

enum smtpc_outcome {
    SMTPC_OUTCOME_NONE,    /* not finished */
    SMTPC_OUTCOME_PASS,    /* TLS met the floor */
    SMTPC_OUTCOME_REFUSED, /* the floor refused the receiver: c->verdict says why */
    SMTPC_OUTCOME_ERROR,   /* unreachable, timeout, protocol violation: c->err */
};

#define SMTPC_SUMMARY_MAX 256

struct smtp_client {
    enum smtpc_state state;
    enum smtpc_outcome outcome;
    int err;                    /* with OUTCOME_ERROR: the negative code */
    enum smtpc_state err_state; /* the state the error happened in */
    struct tls_verdict verdict; /* with OUTCOME_PASS / REFUSED */
    struct smtp_caps caps;      /* the last EHLO's (after TLS: the encrypted one) */
    bool starttls_offered;
    char greeting[SMTPC_SUMMARY_MAX];
    char last_reply[SMTPC_SUMMARY_MAX]; /* the last reply that decided something (not
                                         * the reply to QUIT), summarised */
    char helo_name[256];
    char peer[300]; /* "mx.example.com[192.0.2.1]:25", for log lines */
    size_t cmd_len;
    char cmd[512]; /* the command to send with SMTPC_ACT_SEND */
};

/* Sets up a client for one connection. helo_name and peer are copied (truncated to fit).
 * Returns 0 or -EINVAL (empty or over-long helo_name, which would make a bad command). */
int smtp_client_init(struct smtp_client *c, const char *helo_name, const char *peer);

/* Consumes one event and returns what the driver must do next. ev and its pointers are
 * borrowed for the call. After SMTPC_ACT_CLOSE, further events are ignored (and answered
 * with SMTPC_ACT_CLOSE). */
enum smtpc_action smtp_client_step(struct smtp_client *c, const struct smtpc_event *ev);

const char *smtpc_outcome_name(enum smtpc_outcome o);

#endif /* FLOORMTA_ENGINE_SMTP_CLIENT_H */
