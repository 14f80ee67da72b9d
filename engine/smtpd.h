/*
 * engine/smtpd.h — the SMTP submission server (issue 6): ESMTP listeners on one io_uring
 * loop that take messages from mail clients and hand each one to the owner's submit
 * callback, replying 250 only once the owner says the message is durable.
 *
 * A `struct eng_smtpd` is a set of listeners on one eng_loop. A daemon with several
 * worker threads runs one per thread on the same addresses: every listening socket is
 * bound with SO_REUSEPORT, so the kernel spreads connections over the workers.
 *
 * Offered (RFC 5321, 6409): EHLO/HELO, STARTTLS (RFC 3207; only when a TLS context is
 * configured; the context decides the versions: the server default is TLS >= 1.2),
 * implicit TLS listeners (RFC 8314), AUTH PLAIN and LOGIN (RFC 4954) only once TLS is
 * up and only against a credentials file of crypt(3) hashes, SIZE, PIPELINING,
 * 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES. Never an open relay: every recipient is
 * refused (554 5.7.1) unless the client authenticated or connects from a configured
 * relay network. The limits and their replies are listed with struct
 * eng_smtpd_config. The server prepends its Received header (RFC 5321 4.4, protocol
 * names of RFC 3848, the TLS version and cipher in a comment) to every message.
 *
 * Threading: everything here runs on the loop's thread. Credentials may be shared by
 * several servers on several threads once loaded (read-only).
 */
#ifndef FLOORMTA_ENGINE_SMTPD_H
#define FLOORMTA_ENGINE_SMTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "engine/loop.h"

struct tls_ctx;

#define ENG_SMTPD_ADDR_MAX   320 /* a path without angle brackets; = QUEUE_ADDR_MAX */
#define ENG_SMTPD_LISTEN_MAX 8

/* ---- credentials ----------------------------------------------------------------- */

/* A parsed credentials file: one `user:hash` per line, hash being any crypt(3) hash
 * libcrypt knows ($y$ yescrypt, $6$ SHA-512, $2b$ bcrypt, ...), '#' comments and blank
 * lines ignored. Passwords are never stored or compared in plaintext. */
struct eng_smtpd_credentials;

/* Loads path (borrowed). Returns 0 and *out (free with eng_smtpd_credentials_free), or
 * -errno from opening/reading, -EINVAL for a malformed line (a line without ':', an
 * empty user, a hash crypt(3) cannot use; line numbers are logged), -ENOMEM. */
int eng_smtpd_credentials_load(const char *path, struct eng_smtpd_credentials **out);

void eng_smtpd_credentials_free(struct eng_smtpd_credentials *c);

/* Number of users loaded. */
size_t eng_smtpd_credentials_count(const struct eng_smtpd_credentials *c);

/* Checks user / password (borrowed, NUL-terminated) with crypt_rn. Returns 0 when they
 * match, -EACCES when they do not (unknown users cost the same hashing work as known
 * ones), -ENOMEM. CPU-bound: tens of milliseconds for yescrypt. */
int eng_smtpd_credentials_verify(const struct eng_smtpd_credentials *c, const char *user,
                                 const char *password);

/* ---- relay networks --------------------------------------------------------------- */

struct eng_smtpd_net {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned prefix;
};

/* Parses a list of CIDR networks separated by spaces or commas ("127.0.0.0/8 ::1/128";
 * a bare address is a host route) into out[0, cap). Returns 0 and *n, -EINVAL (bad
 * entry), -E2BIG (more than cap). text is borrowed. */
int eng_smtpd_nets_parse(const char *text, struct eng_smtpd_net *out, size_t cap, size_t *n);

/* Whether addr is inside one of nets[0, n). An IPv4-mapped IPv6 address matches IPv4
 * networks. */
bool eng_smtpd_nets_match(const struct eng_smtpd_net *nets, size_t n, const struct sockaddr *addr);

/* ---- messages and the submit callback ---------------------------------------------- */

enum eng_smtpd_body {
    ENG_SMTPD_BODY_7BIT = 0, /* no BODY parameter, or BODY=7BIT */
    ENG_SMTPD_BODY_8BITMIME, /* BODY=8BITMIME */
};

/* One accepted message, as given to submit. Everything is borrowed for the duration of
 * the submit call only: copy what must outlive it. */
struct eng_smtpd_message {
    const char *sender;       /* reverse path without brackets, "" = null sender */
    const char *const *rcpts; /* every accepted recipient (all domains: the owner
                               * splits them into one envelope per domain) */
    size_t nrcpts;
    uint64_t size_param; /* MAIL ... SIZE=, 0 if not given */
    enum eng_smtpd_body body;
    bool smtputf8; /* MAIL ... SMTPUTF8 */
    /* The content: the Received header, then the message as the client sent it,
     * dot-unstuffed, CRLF line endings, without the final ".". */
    const char *content;
    size_t content_len;
    const struct sockaddr *client; /* the client's address */
    socklen_t client_len;
    const char *client_ip;  /* "192.0.2.1" / "2001:db8::1" */
    const char *helo;       /* the EHLO/HELO argument */
    const char *auth_user;  /* the authenticated identity, NULL if none */
    uint16_t tls_version;   /* enum tls_version wire value, 0 = plaintext */
    const char *tls_cipher; /* "" for plaintext */
    const char *session_id; /* the id in the Received header (not the queue id) */
};

/* Results for done(). 0 = durable. Negative: -ENOSPC (452 4.3.1), -EFBIG (552 5.3.4),
 * anything else 451 4.3.0. */
typedef void (*eng_smtpd_submit_done_fn)(void *done_arg, int res, const char *queue_id);

/* Takes a message. Returns 0 when it will call done(done_arg, res, queue_id) exactly
 * once, later (never from inside submit), on the loop thread; queue_id (borrowed for
 * the call, may be NULL when res != 0) goes into the 250 reply. A negative return
 * means done will not be called and is treated as done's res. m is borrowed for the
 * call (see struct eng_smtpd_message). */
typedef int (*eng_smtpd_submit_fn)(void *arg, const struct eng_smtpd_message *m,
                                   eng_smtpd_submit_done_fn done, void *done_arg);

/* ---- the server ---------------------------------------------------------------------- */

enum eng_smtpd_mode {
    ENG_SMTPD_MODE_STARTTLS = 0, /* plaintext, STARTTLS offered when a TLS context is set */
    ENG_SMTPD_MODE_IMPLICIT_TLS, /* TLS from the first byte (RFC 8314 port 465) */
};

struct eng_smtpd_listen {
    const char *addr; /* "127.0.0.1:587", "[::1]:465"; port 0 = kernel-chosen (tests) */
    enum eng_smtpd_mode mode;
};

/* Every limit has its reply; rejected messages are never submitted:
 *   max_message_size  SIZE= above it at MAIL, or content above it: 552 5.3.4 (the
 *                     content is read to its end first, so the reply is in step)
 *   max_rcpts         the recipient after the last: 452 4.5.3
 *   command lines     longer than 1000 bytes with CRLF: 500 5.5.6;
 *                     a bare LF ends nothing: 500 5.5.2 for the command
 *   text lines        longer than 998 + CRLF: 550 5.6.0 after the final dot;
 *                     a bare LF in content: 550 5.6.2 after the final dot (the end is
 *                     only ever CRLF "." CRLF, so nothing can be smuggled)
 *   command_timeout   waiting for a command: 421 4.4.2 and close
 *   data_timeout      waiting for content: 421 4.4.2 and close
 *   max_per_client    connections from one address: 421 4.7.0 instead of the greeting
 *   max_sessions      connections in all: 421 4.3.2 instead of the greeting
 *   max_auth_failures 535 5.7.8 each time, then 421 4.7.0 and close
 *   relay             RCPT without AUTH from outside relay_networks: 554 5.7.1
 *   AUTH without TLS  538 5.7.11 */
struct eng_smtpd_config {
    struct eng_smtpd_listen listen[ENG_SMTPD_LISTEN_MAX];
    size_t nlisten;
    struct tls_ctx *tls;         /* borrowed, must outlive the server; NULL = no STARTTLS (and no
                                  * implicit-TLS listener, no AUTH) */
    const char *hostname;        /* greeting, EHLO and Received "by"; copied */
    uint64_t max_message_size;   /* 0 = 25 MiB (content held in memory per session) */
    unsigned max_rcpts;          /* 0 = 100, at most 1000 */
    unsigned command_timeout_ms; /* 0 = 300000 (RFC 5321 4.5.3.2.7) */
    unsigned data_timeout_ms;    /* 0 = 600000 */
    unsigned max_per_client;     /* 0 = 20 */
    unsigned max_sessions;       /* 0 = 1000 */
    unsigned max_auth_failures;  /* 0 = 3 */
    const char *relay_networks;  /* eng_smtpd_nets_parse syntax; NULL = none; copied */
    const struct eng_smtpd_credentials *creds; /* borrowed; NULL = AUTH not offered */
    eng_smtpd_submit_fn submit;
    void *submit_arg;
};

/* Why commands or connections were refused: counters in struct eng_smtpd_stats. */
#define ENG_SMTPD_REJECTS(X)                            \
    X(ENG_SMTPD_REJ_CONN_PER_CLIENT, "conn_per_client") \
    X(ENG_SMTPD_REJ_CONN_TOTAL, "conn_total")           \
    X(ENG_SMTPD_REJ_SYNTAX, "syntax")                   \
    X(ENG_SMTPD_REJ_LINE_TOO_LONG, "line_too_long")     \
    X(ENG_SMTPD_REJ_BARE_LF, "bare_lf")                 \
    X(ENG_SMTPD_REJ_TLS_REQUIRED, "tls_required")       \
    X(ENG_SMTPD_REJ_AUTH_FAILED, "auth_failed")         \
    X(ENG_SMTPD_REJ_RELAY_DENIED, "relay_denied")       \
    X(ENG_SMTPD_REJ_TOO_MANY_RCPTS, "too_many_rcpts")   \
    X(ENG_SMTPD_REJ_TOO_BIG, "too_big")                 \
    X(ENG_SMTPD_REJ_TIMEOUT, "timeout")                 \
    X(ENG_SMTPD_REJ_SUBMIT_FAILED, "submit_failed")     \
    X(ENG_SMTPD_REJ_NO_MEMORY, "no_memory")

enum eng_smtpd_reject {
#define ENG_SMTPD_REJ_ENUM(name, str) name,
    ENG_SMTPD_REJECTS(ENG_SMTPD_REJ_ENUM)
#undef ENG_SMTPD_REJ_ENUM
            ENG_SMTPD_REJ__COUNT
};

/* "relay_denied", ...; "unknown" out of range. Static string. */
const char *eng_smtpd_reject_name(enum eng_smtpd_reject r);

struct eng_smtpd_stats {
    uint64_t sessions;       /* connections accepted */
    uint32_t active;         /* connections open now */
    uint64_t tls_handshakes; /* completed (STARTTLS or implicit) */
    uint64_t auth_ok;        /* successful AUTH */
    uint64_t messages;       /* messages answered 250 (durable) */
    uint64_t bytes;          /* content bytes of those, Received header included */
    uint64_t rejects[ENG_SMTPD_REJ__COUNT];
};

struct eng_smtpd;

/* Validates cfg, binds every listener (SO_REUSEADDR + SO_REUSEPORT) and starts
 * accepting on loop. cfg is borrowed (strings copied; tls, creds and submit_arg stay
 * the caller's). Returns 0 and *out, or -EINVAL (no listener, bad address, bad relay
 * network, implicit TLS without a context, no submit), -errno from socket/bind/listen,
 * -ENOMEM, or the loop's error (ENG_ERR_FULL). Only in that last case *out is set too:
 * the server is shut down, run the loop until eng_smtpd_idle(), then free it. */
int eng_smtpd_new(struct eng_loop *loop, const struct eng_smtpd_config *cfg,
                  struct eng_smtpd **out);

/* The bound address of listener i as "127.0.0.1:34567" into out (cap >= 64). Returns
 * out, or NULL when i is out of range. */
char *eng_smtpd_listen_address(const struct eng_smtpd *d, size_t i, char *out, size_t cap);

/* A configuration reload without re-binding: takes cfg's max_message_size, max_rcpts,
 * timeouts, max_per_client, max_sessions, max_auth_failures, relay_networks and creds
 * (borrowed: it must outlive the server or the next reconfigure; the caller may free
 * the previous one once this returned, as no session keeps it across a callback);
 * ignores its listeners, tls, hostname and submit, which stay as eng_smtpd_new made
 * them. Sessions that start from now on get the new limits and relay networks; a
 * session already open keeps its limits and its relay decision (made at its start),
 * and checks AUTH against the new credentials. All or nothing: returns 0, or -EINVAL
 * (a bad relay network, max_rcpts out of range) with nothing changed. Loop thread. */
int eng_smtpd_reconfigure(struct eng_smtpd *d, const struct eng_smtpd_config *cfg);

/* Whether cfg's reloadable part (see eng_smtpd_reconfigure) is valid: 0 or -EINVAL.
 * cfg borrowed; any thread (it touches no server). */
int eng_smtpd_reconfigure_check(const struct eng_smtpd_config *cfg);

/* Stops accepting and ends every session: between commands with "421 4.3.2 ...
 * shutting down" and a lingering close; a session whose message is being made durable
 * gets its 250 (or error) when done runs, then the 421, so a client is never left
 * without the answer for a message that was queued; one inside DATA or a handshake is
 * closed (nothing of it was queued). The handles are released later by the loop. */
void eng_smtpd_shutdown(struct eng_smtpd *d);

/* True once shutdown has completed: no listener or session handle left and no submit
 * waiting for done. */
bool eng_smtpd_idle(const struct eng_smtpd *d);

/* Frees the server. Call it when eng_smtpd_idle() is true, or after eng_loop_free()
 * (which releases the handles); every done must have been called. NULL is a no-op. */
void eng_smtpd_free(struct eng_smtpd *d);

void eng_smtpd_stats(const struct eng_smtpd *d, struct eng_smtpd_stats *out);

#endif /* FLOORMTA_ENGINE_SMTPD_H */
