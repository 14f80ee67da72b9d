/*
 * engine/smtpd_int.h — private declarations of the submission server, shared by:
 *   smtpd.c          listeners, configuration defaults, start-up, shutdown, counters;
 *   smtpd_session.c  the SMTP state machine: bytes in, replies and actions out;
 *   smtpd_data.c     the DATA content reader and the Received header;
 *   smtpd_parse.c    MAIL / RCPT paths and parameters;
 *   smtpd_auth.c     credentials (crypt_rn), SASL PLAIN/LOGIN decoding, relay networks;
 *   smtpd_io.c       accept with per-client counting; one connection on the loop:
 *                    recv/send, TLS, submit and done, credential checks and done;
 *   smtpd_authq.c    the checker thread that runs crypt off the loop.
 * Tests include it to drive the state machine without sockets. Not a public header.
 */
#ifndef FLOORMTA_ENGINE_SMTPD_INT_H
#define FLOORMTA_ENGINE_SMTPD_INT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/smtpd.h"

#define SMTPD_LINE_MAX  1000 /* command line with CRLF (RFC 5321 4.5.3.1.4) */
#define SMTPD_TEXT_MAX  998  /* content line without CRLF (RFC 5321 4.5.3.1.6) */
#define SMTPD_OUT_CAP   4096 /* plaintext replies not yet handed to the wire */
#define SMTPD_REPLY_MAX 512  /* room kept free before a command is taken */
#define SMTPD_NAME_MAX  255
/* Room also kept free, beyond a command's, for the 421 a timeout or a shutdown may add
 * between commands (it names our host): a client that pipelines without reading still
 * gets it. */
#define SMTPD_CLOSE_REPLY_MAX (64 + SMTPD_NAME_MAX)
#define SMTPD_NETS_MAX        64
#define SMTPD_RECEIVED_MAX    1024 /* the Received header, all lines */
#define SMTPD_SID_MAX         24

/* The limits a session lives by, copied from the server's at its start: a reload
 * (smtpd_shared_reconfigure) changes the sessions that start after it, never one in
 * the middle of a transaction (its recipient table was sized by max_rcpts). */
struct smtpd_limits {
    uint64_t max_size;
    unsigned max_rcpts;
    unsigned command_timeout_ms;
    unsigned data_timeout_ms;
    unsigned max_auth_failures;
};

/* What every session of one server shares: the configuration with defaults applied,
 * the counters, the id source. Owned by struct eng_smtpd (or a test). */
struct smtpd_shared {
    char hostname[SMTPD_NAME_MAX + 1];
    struct smtpd_limits lim; /* for the sessions that start from now on */
    unsigned max_per_client;
    unsigned max_sessions;
    struct eng_smtpd_net nets[SMTPD_NETS_MAX];
    size_t nnets;
    const struct eng_smtpd_credentials *creds; /* borrowed, NULL = no AUTH */
    bool tls_available;                        /* a server TLS context exists */
    struct eng_smtpd_stats stats;
    uint64_t id_base; /* start time, so ids differ across restarts */
    uint64_t next_id;
};

/* Applies cfg's limits with their defaults to sh (zeroing it first). Returns 0 or
 * -EINVAL (bad relay network, max_rcpts above QUEUE_RCPTS_MAX). cfg is borrowed. */
int smtpd_shared_init(struct smtpd_shared *sh, const struct eng_smtpd_config *cfg);

/* eng_smtpd_reconfigure's part: takes cfg's limits, relay networks and credentials
 * (borrowed, as in smtpd_shared_init) into sh, keeping its hostname, TLS, counters and
 * id source. All or nothing: 0, or -EINVAL with sh unchanged. */
int smtpd_shared_reconfigure(struct smtpd_shared *sh, const struct eng_smtpd_config *cfg);

/* ---- the session state machine (smtpd_session.c) --------------------------------- */

/* NEW: before the greeting (implicit TLS handshakes here). GREETED: no EHLO yet.
 * STARTTLS: the 220 went out; the handshake is the I/O side's. WAIT_DURABLE: the message
 * is with submit; no input is taken until done. CLOSING: nothing more is read. */
#define SMTPD_STATES(X)                           \
    X(SMTPD_S_NEW, "new")                         \
    X(SMTPD_S_GREETED, "greeted")                 \
    X(SMTPD_S_READY, "ready")                     \
    X(SMTPD_S_MAIL, "mail")                       \
    X(SMTPD_S_RCPT, "rcpt")                       \
    X(SMTPD_S_DATA, "data")                       \
    X(SMTPD_S_WAIT_DURABLE, "wait-durable")       \
    X(SMTPD_S_STARTTLS, "starttls-handshake")     \
    X(SMTPD_S_AUTH_PLAIN, "auth-plain")           \
    X(SMTPD_S_AUTH_LOGIN_USER, "auth-login-user") \
    X(SMTPD_S_AUTH_LOGIN_PASS, "auth-login-pass") \
    X(SMTPD_S_AUTH_CHECK, "auth-check")           \
    X(SMTPD_S_CLOSING, "closing")

enum smtpd_state {
#define SMTPD_STATE_ENUM(name, str) name,
    SMTPD_STATES(SMTPD_STATE_ENUM)
#undef SMTPD_STATE_ENUM
            SMTPD_S__COUNT
};

const char *smtpd_state_name(enum smtpd_state st);

/* What the I/O side must do after smtpd_sess_input. */
enum smtpd_action {
    SMTPD_ACT_MORE,     /* all input consumed: read more */
    SMTPD_ACT_PAUSE,    /* out is nearly full: move it to the wire, then offer the rest */
    SMTPD_ACT_STARTTLS, /* 220 queued: send it, DISCARD the rest of the input (plaintext
                         * pipelined behind STARTTLS, CVE-2011-0411), start TLS */
    SMTPD_ACT_SUBMIT,   /* a message is complete: send the replies, call submit with
                         * smtpd_sess_message, keep the rest of the input for later */
    SMTPD_ACT_CLOSE,    /* send the replies, then close */
    SMTPD_ACT_AUTH,     /* credentials to check (state AUTH_CHECK): send the replies,
                         * check smtpd_sess_auth_request's credentials off the loop
                         * (crypt is milliseconds of CPU), then smtpd_sess_auth_checked;
                         * keep the rest of the input for later */
};

struct smtpd_sess {
    struct smtpd_shared *sh; /* borrowed */
    enum smtpd_state state;  /* written only by smtpd_session.c's set_state() */
    uint64_t id;
    char sid[SMTPD_SID_MAX]; /* the Received header's id */

    struct sockaddr_storage client;
    socklen_t client_len;
    char client_ip[INET6_ADDRSTRLEN];
    bool relay_net;          /* the client is in the relay networks (decided at start) */
    struct smtpd_limits lim; /* sh->lim at start: kept across a reload */

    bool tls;
    uint16_t tls_version;
    char tls_cipher[64];
    bool esmtp; /* EHLO (not HELO) */
    char helo[SMTPD_NAME_MAX + 1];
    bool authed;
    char auth_user[SMTPD_NAME_MAX + 1];
    unsigned auth_failures;
    char login_user[SMTPD_NAME_MAX + 1]; /* AUTH LOGIN between its two steps; the user
                                          * being checked in AUTH_CHECK */
    char auth_pass[SMTPD_LINE_MAX];      /* AUTH_CHECK only; wiped when checked */

    /* transaction */
    char sender[ENG_SMTPD_ADDR_MAX + 1];
    uint64_t size_param;
    enum eng_smtpd_body body_type;
    bool smtputf8;
    unsigned nrcpts;
    char (*rcpts)[ENG_SMTPD_ADDR_MAX + 1]; /* owned: sh->max_rcpts rows, fixed at init */
    const char **rcpt_ptrs;                /* owned: views of rcpts for the message */

    /* content (smtpd_data.c): body[0, body_len) = Received header + content */
    char *body; /* owned; grows up to max_size + header, freed with the transaction */
    size_t body_len, body_cap;
    uint64_t content_bytes;
    size_t line_bytes; /* bytes of the current content line so far */
    bool d_bol, d_cr, d_dot;
    bool too_big, bare_lf, long_line, no_memory;

    /* command line spanning reads; discarding = the rest of a refused line */
    size_t line_len;
    bool discarding;
    size_t out_len; /* replies in out not yet taken by the I/O side */

    /* buffers (not zeroed at init) */
    char line[SMTPD_LINE_MAX];
    char out[SMTPD_OUT_CAP];
};

/* Prepares s for a client at addr (borrowed, copied) on a server sharing sh (borrowed
 * for the session's life): allocates the recipient table (sh->max_rcpts rows; the
 * session's memory is fixed from here, except the content buffer). Returns 0 or
 * -ENOMEM. */
int smtpd_sess_init(struct smtpd_sess *s, struct smtpd_shared *sh, const struct sockaddr *addr,
                    socklen_t addrlen);

/* Frees what init and the content took. Safe after a failed init on a zeroed s. */
void smtpd_sess_fini(struct smtpd_sess *s);

/* Queues the greeting, or when refuse is a connection reject (CONN_PER_CLIENT,
 * CONN_TOTAL) its 421 and returns SMTPD_ACT_CLOSE. Pass ENG_SMTPD_REJ__COUNT for none. */
enum smtpd_action smtpd_sess_start(struct smtpd_sess *s, enum eng_smtpd_reject refuse);

/* Consumes data[0, len) (borrowed for the call), queues the replies, says what to do;
 * *used = bytes consumed (all of them for MORE). */
enum smtpd_action smtpd_sess_input(struct smtpd_sess *s, const char *data, size_t len,
                                   size_t *used);

/* TLS is up (version: enum tls_version wire value; cipher borrowed, copied). After
 * STARTTLS the session forgets what it learnt before (RFC 3207 4.2): EHLO again. */
void smtpd_sess_tls_ready(struct smtpd_sess *s, uint16_t version, const char *cipher);

/* The recv timeout that applies in the current state (data or command), ms. */
unsigned smtpd_sess_timeout_ms(const struct smtpd_sess *s);

/* The client was silent too long: queues 421 4.4.2 when a reply can still be sent and
 * enters CLOSING. Returns true if something was queued. */
bool smtpd_sess_timeout(struct smtpd_sess *s);

/* Fills *m for submit (state WAIT_DURABLE). m's pointers are views into s: valid until
 * smtpd_sess_submitted. */
void smtpd_sess_message(struct smtpd_sess *s, struct eng_smtpd_message *m);

/* submit's done (or its failed return): queues 250 with queue_id (borrowed) or the
 * error reply, ends the transaction, back to READY. */
void smtpd_sess_submitted(struct smtpd_sess *s, int res, const char *queue_id);

/* The credentials of the check asked for by SMTPD_ACT_AUTH (state AUTH_CHECK): views
 * into s, valid until smtpd_sess_auth_checked. */
void smtpd_sess_auth_request(const struct smtpd_sess *s, const char **user, const char **pass);

/* The check's result (0: they match; -EACCES: they do not; -ENOMEM or another error: a
 * temporary failure): wipes the password, queues 235, 535, 454 or (too many failures)
 * 421, back to READY. Returns SMTPD_ACT_MORE, or SMTPD_ACT_CLOSE after the 421. */
enum smtpd_action smtpd_sess_auth_checked(struct smtpd_sess *s, int res);

/* The server stops: where a reply can be given (between commands, not inside DATA,
 * a TLS handshake or a submit), queues "421 4.3.2 ... shutting down". Either way the
 * session goes to CLOSING. Returns whether the 421 was queued. */
bool smtpd_sess_shutdown(struct smtpd_sess *s);

/* Queues a reply (copied); callers keep SMTPD_REPLY_MAX free first. */
void smtpd_sess_reply(struct smtpd_sess *s, const char *text, size_t len);

/* ---- MAIL / RCPT arguments (smtpd_parse.c) ------------------------------------------- */

/* Parses "<path> params" at p (borrowed): copies the path without brackets (and
 * without an obsolete source route) into out (ENG_SMTPD_ADDR_MAX + 1 bytes), points
 * *params at what follows. Returns 0, -EINVAL (syntax; a non-empty path needs
 * local@domain), -E2BIG (too long). *utf8: the path has bytes above 127. */
int smtpd_parse_path(const char *p, char *out, const char **params, bool *utf8);

/* Applies one MAIL parameter KEY[=VALUE] (k[0, klen); v NULL without '=') to the
 * transaction in s. Returns 0, -EINVAL (bad value), -ENOTSUP (unknown parameter). */
int smtpd_mail_param(struct smtpd_sess *s, const char *k, size_t klen, const char *v);

/* ---- content (smtpd_data.c) -------------------------------------------------------- */

/* Starts the content of the current transaction: writes the Received header into the
 * body buffer. Returns 0 or -ENOMEM (the session then reads to the dot and replies
 * 452). */
int smtpd_data_begin(struct smtpd_sess *s);

/* Consumes content from data[0, len); *used = bytes taken; returns true when the end of
 * data (CRLF "." CRLF) was consumed. */
bool smtpd_data_take(struct smtpd_sess *s, const char *data, size_t len, size_t *used);

/* Frees the content buffer. */
void smtpd_data_reset(struct smtpd_sess *s);

/* ---- SASL (smtpd_auth.c) ------------------------------------------------------------ */

/* The hash to check user's password against: the user's, or for an unknown user the
 * first user's, so that the reply time does not tell which users exist (*known says
 * which). Borrowed from c (valid while c is). NULL when c is NULL or empty. */
const char *smtpd_credentials_hash(const struct eng_smtpd_credentials *c, const char *user,
                                   bool *known);

/* crypt_rn(password, hash) compared with hash in constant time (both borrowed). Returns
 * 0 when they match, -EACCES, -ENOMEM. CPU-bound: run it off the loop (smtpd_authq). */
int smtpd_hash_check(const char *password, const char *hash);

/* Decodes base64 text[0, len) into out (cap bytes, NUL-terminated). Returns the decoded
 * length, or -EINVAL (bad base64, embedded NUL only where allowed by nul_ok, too long). */
int smtpd_b64_decode(const char *text, size_t len, char *out, size_t cap, bool nul_ok);

/* Encodes in[0, len) as base64 into out (cap bytes, NUL-terminated). Returns out. */
char *smtpd_b64_encode(const void *in, size_t len, char *out, size_t cap);

/* ---- the server and its connections (smtpd.c, smtpd_io.c) ---------------------------- */

#define SMTPD_RBUF_CAP  16384 /* received bytes: ciphertext, then plaintext */
#define SMTPD_WIRE_CAP  20480 /* bytes on the wire: replies or TLS records */
#define SMTPD_LINGER_MS 2000  /* after the last reply: read and drop until EOF */

struct smtpd_conn;

struct smtpd_listener {
    struct eng_smtpd *d; /* borrowed */
    enum eng_smtpd_mode mode;
    int fd;
    eng_handle_t h;
    bool open; /* the handle is not released yet */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char text[64];
};

struct eng_smtpd {
    struct eng_loop *loop; /* borrowed */
    struct tls_ctx *tls;   /* borrowed */
    eng_smtpd_submit_fn submit;
    void *submit_arg;
    struct smtpd_shared sh;
    struct smtpd_listener lst[ENG_SMTPD_LISTEN_MAX];
    size_t nlst;
    struct smtpd_conn *live; /* connections with a handle (doubly linked) */
    uint32_t live_count;
    uint32_t orphans; /* released while their submit or credential check waits */
    bool stopping;
    struct smtpd_authq *authq; /* owned; NULL until the first AUTH check */
};

/* One connection. Fixed size, allocated at accept and freed when released (or, when
 * released while its submit waits, by done). */
struct smtpd_conn {
    struct eng_smtpd *d;        /* borrowed */
    struct smtpd_listener *lst; /* borrowed */
    struct smtpd_conn *prev, *next;
    eng_handle_t h;
    int fd;                       /* owned: closed in on_release */
    struct tls_conn *tls;         /* owned; NULL until STARTTLS / implicit TLS */
    enum eng_smtpd_reject refuse; /* greeting refusal decided at accept, or __COUNT */
    bool closing;                 /* eng_handle_close called */
    bool close_after;             /* close once the output is sent */
    bool lingering;               /* output sent, write side shut: dropping input until EOF */
    bool paused;                  /* input left in rbuf until a send frees output room */
    bool tls_shut;                /* close_notify queued */
    bool handshaking;             /* TLS handshake in progress */
    bool released;                /* the handle is gone; done frees the connection */
    size_t rpos, rlen;            /* rbuf[rpos, rlen): plaintext not yet consumed */
    size_t wire_len, wire_sent;
    struct smtpd_sess sm;
    char rbuf[SMTPD_RBUF_CAP];
    char wire[SMTPD_WIRE_CAP];
};

/* ---- credential checks off the loop (smtpd_authq.c) ---------------------------------- */

#define SMTPD_HASH_MAX 512 /* a crypt(3) hash, with its NUL */

/* Checks password against hash (both copied; the copy of the password is wiped after
 * use) on the server's checker thread, started at the first call; then
 * smtpd_conn_auth_done(c, res) runs on the loop thread, res as smtpd_hash_check's (an
 * unknown user, !known, always gets -EACCES). Returns 0 (done will run), -ENAMETOOLONG
 * (hash too long), -ENOMEM or -errno from starting the thread (done will not run). */
int smtpd_authq_submit(struct eng_smtpd *d, struct smtpd_conn *c, const char *hash, bool known,
                       const char *password);

/* Shutdown: the checker closes once no check is pending (at once if none is). */
void smtpd_authq_shutdown(struct eng_smtpd *d);

/* True when no checker exists any more (or never did). */
bool smtpd_authq_idle(const struct eng_smtpd *d);

/* smtpd_io.c: a check's result for c. */
void smtpd_conn_auth_done(struct smtpd_conn *c, int res);

/* Takes ownership of fd, accepted on lst: starts a connection or closes fd. */
void smtpd_conn_accept(struct smtpd_listener *lst, int fd);

/* Closes every connection (shutdown). */
void smtpd_conn_close_all(struct eng_smtpd *d);

#endif /* FLOORMTA_ENGINE_SMTPD_INT_H */
