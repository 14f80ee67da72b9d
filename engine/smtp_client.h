/*
 * engine/smtp_client.h — the SMTP client as an explicit state machine, free of I/O.
 *
 * The driver (smtp_session.c) feeds it events — connected, a complete reply, the TLS
 * handshake's end, the end of a message body, an I/O error — through
 * smtp_client_step(), and does what the returned action says: wait for a reply, send
 * the commands in c->cmd, start TLS, stream a body, report that it is ready for a
 * message, or close. Nothing else writes c->state.
 *
 * Two modes share the states up to READY: greeting, EHLO, STARTTLS, handshake and
 * floor verdict, EHLO again. The probe stops there (QUIT). The delivery mode reports
 * READY (SMTPC_ACT_IDLE) and runs one transaction per smtp_client_begin(): MAIL, RCPT
 * for every recipient, DATA, the body, and per-recipient results from the replies.
 *
 * The floor is not negotiable here: without STARTTLS, with STARTTLS refused, or with a
 * handshake the verdict refuses, the outcome is REFUSED and nothing but QUIT (or, after
 * a failed handshake, nothing at all) is sent. READY is only reached over TLS that met
 * the floor, so no envelope or body byte ever travels in the clear — with one exact
 * exception, opportunistic mode (smtp_client_set_opportunistic), which the owner turns
 * on only for a domain whose operator wrote `opportunistic` for it:
 *   - the EHLO reply does not offer STARTTLS: READY in plaintext, outcome PASS,
 *     c->plaintext set and c->verdict = { pass, opportunistic, reason no_starttls,
 *     ev.version 0 };
 *   - STARTTLS offered: STARTTLS and a handshake with the context the owner gives (an
 *     opportunistic one), and READY over whatever TLS it negotiated; the verdict
 *     passes and names what the floor would have refused (tls.h);
 *   - everything else is as in floor mode: STARTTLS refused (a 454 or 5xx to it; the
 *     session may have been tampered with) is REFUSED starttls_refused and never
 *     continues in plaintext on that connection; a failed handshake is REFUSED and
 *     closes; an EHLO the receiver rejects is REFUSED no_starttls (no HELO fallback).
 * In floor mode a verdict counts only if it met the floor (tls_verdict_meets_floor):
 * an opportunistic context's pass below it, handed to a floor-mode client by mistake,
 * is refused with its reason.
 *
 * Transaction policy (the why is in smtp_client.c):
 *   - PIPELINING (RFC 2920) when offered: MAIL, the RCPTs and DATA leave in one group
 *     (several groups if the recipients do not fit in c->cmd); replies are matched in
 *     order. Without it, one command at a time.
 *   - A recipient is DELIVERED only by a 2xx to the end of data; a 4xx (at any step)
 *     defers it, a 5xx bounces it; a lost connection or a timeout defers every
 *     recipient not yet final. Enhanced status codes and reply texts are kept.
 *   - Needs SMTPUTF8 and not offered: bounced 5.6.7, before MAIL. Needs 8BITMIME and
 *     not offered: bounced 5.6.3 (floormta does not convert, RFC 6152 3). Over the
 *     receiver's SIZE: bounced 5.3.4. Nothing is sent for such a message.
 *   - RSET only after a transaction that ended before the reply to its end of data;
 *     after that reply the receiver has reset by itself (RFC 5321 4.1.1.4), so the
 *     next MAIL follows at once (as Postfix and OpenSMTPD do).
 */
#ifndef FLOORMTA_ENGINE_SMTP_CLIENT_H
#define FLOORMTA_ENGINE_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/smtp_reply.h"
#include "tls/tls.h"

#define SMTP_CLIENT_STATES(X)     \
    X(SMTPC_CONNECT, "connect")   \
    X(SMTPC_GREETING, "greeting") \
    X(SMTPC_EHLO, "ehlo")         \
    X(SMTPC_STARTTLS, "starttls") \
    X(SMTPC_TLS, "tls-handshake") \
    X(SMTPC_EHLO_TLS, "ehlo-tls") \
    X(SMTPC_READY, "ready")       \
    X(SMTPC_MAIL, "mail")         \
    X(SMTPC_RCPT, "rcpt")         \
    X(SMTPC_DATA, "data")         \
    X(SMTPC_BODY, "body")         \
    X(SMTPC_DOT, "end-of-data")   \
    X(SMTPC_RSET, "rset")         \
    X(SMTPC_QUIT, "quit")         \
    X(SMTPC_DONE, "done")

/* READY: waiting for the owner (a message or quit). MAIL, RCPT, DATA, DOT, RSET: the
 * reply to that command is the next one awaited. BODY: the driver streams the body. */
enum smtpc_state {
#define SMTPC_STATE_ENUM(name, str) name,
    SMTP_CLIENT_STATES(SMTPC_STATE_ENUM)
#undef SMTPC_STATE_ENUM
            SMTPC_STATE__COUNT
};

const char *smtpc_state_name(enum smtpc_state st);

enum smtpc_mode {
    SMTPC_MODE_PROBE,   /* QUIT after the EHLO over TLS */
    SMTPC_MODE_DELIVER, /* READY after the EHLO over TLS: transactions */
};

enum smtpc_event_kind {
    SMTPC_EV_CONNECTED,  /* TCP connection established */
    SMTPC_EV_REPLY,      /* a complete reply: ev.reply */
    SMTPC_EV_TLS_DONE,   /* handshake finished and the verdict passed: ev.verdict */
    SMTPC_EV_TLS_FAILED, /* handshake failed or refused: ev.verdict */
    SMTPC_EV_ERROR,      /* I/O or protocol error: ev.err (negative) */
    SMTPC_EV_BODY_SENT,  /* the whole body and its final "." are sent */
};

struct smtpc_event {
    enum smtpc_event_kind kind;
    const struct smtp_reply *reply;    /* borrowed for the call */
    const struct tls_verdict *verdict; /* borrowed for the call */
    int err;
};

enum smtpc_action {
    SMTPC_ACT_RECV,  /* wait for the next reply */
    SMTPC_ACT_SEND,  /* send c->cmd (c->cmd_len bytes, one or more commands), then wait
                      * for the replies */
    SMTPC_ACT_TLS,   /* start the TLS handshake on the connection */
    SMTPC_ACT_CLOSE, /* flush what is pending and close; c->outcome is final */
    SMTPC_ACT_IDLE,  /* delivery mode: ready for a message; the owner calls
                      * smtp_client_begin() or smtp_client_quit() */
    SMTPC_ACT_BODY,  /* stream the transaction's body through the dot-stuffing encoder,
                      * then report SMTPC_EV_BODY_SENT */
};

enum smtpc_outcome {
    SMTPC_OUTCOME_NONE,    /* not finished */
    SMTPC_OUTCOME_PASS,    /* TLS met the floor; in opportunistic mode also TLS below it
                            * (verdict.reason says why) or plaintext (c->plaintext) */
    SMTPC_OUTCOME_REFUSED, /* the floor refused the receiver: c->verdict says why */
    SMTPC_OUTCOME_ERROR,   /* unreachable, timeout, protocol violation: c->err */
};

/* ---- transactions ------------------------------------------------------------------ */

#define SMTP_RCPT_STATUSES(X)                                                            \
    X(SMTP_RCPT_PENDING, "pending")     /* not decided (never left in a finished txn) */ \
    X(SMTP_RCPT_DELIVERED, "delivered") /* 2xx to the end of data */                     \
    X(SMTP_RCPT_DEFERRED, "deferred")   /* 4xx, or the connection failed */              \
    X(SMTP_RCPT_BOUNCED, "bounced")     /* 5xx, or a local permanent failure */

enum smtp_rcpt_status {
#define SMTP_RCPT_ENUM(name, str) name,
    SMTP_RCPT_STATUSES(SMTP_RCPT_ENUM)
#undef SMTP_RCPT_ENUM
};

const char *smtp_rcpt_status_name(enum smtp_rcpt_status st);

/* Where a result came from (the engine maps these to queue_result kinds). */
enum smtp_result_source {
    SMTP_RESULT_REPLY,   /* the receiver's reply: code, enhanced and text are its own */
    SMTP_RESULT_NETWORK, /* connection lost, timeout, protocol violation: code 451,
                          * enhanced 4.4.2, text = the error */
    SMTP_RESULT_LOCAL,   /* decided here before MAIL (SMTPUTF8 / 8BITMIME / SIZE) or a
                          * body that could not be read */
};

#define SMTP_RESULT_TEXT_MAX 256

struct smtp_rcpt_result {
    enum smtp_rcpt_status status;
    enum smtp_result_source source;
    enum smtpc_state at;             /* the reply (or failure) that decided it: SMTPC_MAIL, _RCPT,
                                      * _DATA, _DOT (end of data), _BODY, _READY (before MAIL) */
    bool accepted;                   /* RCPT got a 2xx (the final reply then decided) */
    uint16_t code;                   /* 250, 451, 550, ... */
    char enhanced[16];               /* RFC 3463 "5.1.1", "" if the reply had none */
    char text[SMTP_RESULT_TEXT_MAX]; /* "550 5.1.1 <bob@example.com>: unknown", the
                                      * reply's first line, non-printables as '?' */
};

/* Hands out the body in pieces: *data / *len = the content from offset off on
 * (borrowed until the next call or the end of the transaction); *len = 0 at the end.
 * Returns 0, or a negative code: the transaction is abandoned without its final ".",
 * and every recipient not yet final is deferred. */
typedef int (*smtp_body_read_fn)(void *arg, uint64_t off, const char **data, size_t *len);

/* One message to the recipients of one domain. Everything here is borrowed by
 * smtp_client_begin until the transaction ends (the session's txn_done callback). */
struct smtp_txn {
    const char *sender;       /* "" = the null sender: MAIL FROM:<> */
    const char *const *rcpts; /* nrcpts addresses, without angle brackets */
    unsigned nrcpts;          /* >= 1 */
    uint64_t size;            /* content size for SIZE=; 0 = body_len */
    bool needs_8bit;          /* BODY=8BITMIME */
    bool needs_smtputf8;      /* SMTPUTF8 (also implied by a non-ASCII address) */
    /* The content (LF, CR or CRLF line endings; encoded on the way out): either in
     * memory (body, body_len) or, if body_read is set, read in pieces. */
    const char *body;
    size_t body_len;
    smtp_body_read_fn body_read;
    void *body_arg;
    struct smtp_rcpt_result *results; /* nrcpts entries, written by the client */
};

#define SMTPC_SUMMARY_MAX 256
#define SMTPC_CMD_MAX     4096 /* one command group; RCPT lines are at most ~340 bytes */
#define SMTPC_ADDR_MAX    320  /* RFC 5321 path without brackets, as queue/ stores it */

struct smtp_client {
    enum smtpc_state state;
    enum smtpc_mode mode;
    enum smtpc_outcome outcome;
    int err;                    /* the first error (OUTCOME_ERROR, or in delivery mode an
                                 * error after PASS that ended the session) */
    enum smtpc_state err_state; /* the state the error happened in */
    struct tls_verdict verdict; /* with OUTCOME_PASS / REFUSED */
    struct smtp_caps caps;      /* the last EHLO's (after TLS: the encrypted one) */
    bool starttls_offered;
    bool opportunistic; /* opportunistic mode (smtp_client_set_opportunistic) */
    bool plaintext;     /* READY without TLS: only in opportunistic mode, when the receiver
                         * offered no STARTTLS. For the owner's log and counters. */
    char greeting[SMTPC_SUMMARY_MAX];
    char last_reply[SMTPC_SUMMARY_MAX]; /* the last reply that decided something (not
                                         * the reply to QUIT), summarised */
    char helo_name[256];
    char peer[300]; /* "mx.example.com[192.0.2.1]:25", for log lines */

    /* The transaction (delivery mode). txn is borrowed from smtp_client_begin until the
     * transaction ends; ended holds it once more for smtp_client_take_ended(). */
    const struct smtp_txn *txn;
    const struct smtp_txn *ended;
    unsigned rcpt_sent;  /* RCPTs sent so far */
    unsigned rcpt_reply; /* RCPTs whose reply came */
    unsigned accepted;   /* RCPTs answered 2xx */
    bool mail_ok;        /* MAIL answered 2xx */
    bool data_sent;      /* DATA is in the group in flight */
    bool pipelining;     /* this transaction pipelines */
    uint64_t txns;       /* transactions begun on this connection */

    size_t cmd_len;
    char cmd[SMTPC_CMD_MAX]; /* the command(s) to send with SMTPC_ACT_SEND */
};

/* Sets up a probe client for one connection. helo_name and peer are copied (truncated
 * to fit). Returns 0 or -EINVAL (empty or over-long helo_name, which would make a bad
 * command). */
int smtp_client_init(struct smtp_client *c, const char *helo_name, const char *peer);

/* The same, in the given mode. */
int smtp_client_init_mode(struct smtp_client *c, enum smtpc_mode mode, const char *helo_name,
                          const char *peer);

/* Turns opportunistic mode on or off for this connection (off after init: the floor).
 * Call after smtp_client_init / _init_mode and before the first event; later calls
 * change nothing (the mode of a dialogue under way never changes). The owner must
 * also hand the session an opportunistic TLS context (tls_client_config.opportunistic),
 * or a receiver below the floor is still refused at the handshake. */
void smtp_client_set_opportunistic(struct smtp_client *c, bool on);

/* Consumes one event and returns what the driver must do next. ev and its pointers are
 * borrowed for the call. After SMTPC_ACT_CLOSE, further events are ignored (and answered
 * with SMTPC_ACT_CLOSE). */
enum smtpc_action smtp_client_step(struct smtp_client *c, const struct smtpc_event *ev);

/* Starts a transaction in READY (delivery mode). txn and everything it points to are
 * borrowed until it ends (smtp_client_take_ended returns it). Returns 0 and *act:
 *   SMTPC_ACT_SEND: the first command group is in c->cmd;
 *   SMTPC_ACT_IDLE: decided without a command (SMTPUTF8 / 8BITMIME / SIZE): every
 *                   result is final, the transaction has ended, still READY.
 * Or -EBUSY (not READY), -EINVAL (no recipients, no results array, an address over
 * SMTPC_ADDR_MAX or with a control character): nothing changed. */
int smtp_client_begin(struct smtp_client *c, const struct smtp_txn *txn, enum smtpc_action *act);

/* The transaction that ended in the last smtp_client_step / smtp_client_begin, once:
 * its results are final. NULL if none ended. The pointer is the one given to begin. */
const struct smtp_txn *smtp_client_take_ended(struct smtp_client *c);

/* Ends the connection from READY: QUIT. Returns 0 and *act (SMTPC_ACT_SEND), or
 * -EBUSY (not READY). */
int smtp_client_quit(struct smtp_client *c, enum smtpc_action *act);

const char *smtpc_outcome_name(enum smtpc_outcome o);

#endif /* FLOORMTA_ENGINE_SMTP_CLIENT_H */
