/*
 * bench/sink.h — private declarations of floormta-sink, the test and benchmark SMTP
 * receiver. Not a public module header: only bench/sink*.c include it.
 *
 * Five files share it:
 *   sink.c           CLI, listeners, signals, start-up and shutdown;
 *   sink_profile.c   the receiver profiles (TLS versions, certificates, misbehaviour);
 *   sink_io.c        one connection on the loop: accept, recv / send, TLS over memory
 *                    buffers, back-pressure, close and release, the session pool;
 *   sink_session.c   the SMTP state machine: consumes plaintext, writes replies;
 *   sink_greylist.c  the addresses the tempfail-once-* convention has seen.
 *
 * Memory per connection is fixed (struct sink_session, buffers inline) and sessions
 * are recycled through a free list, so the hot path allocates nothing but what
 * BoringSSL allocates for a TLS connection. The greylist is allocated once at start.
 *
 * Single-threaded: one loop on the main thread runs every listener and session, so
 * the server's counters and the greylist need no locks.
 */
#ifndef FLOORMTA_BENCH_SINK_H
#define FLOORMTA_BENCH_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "bench/lat_hist.h"
#include "engine/loop.h"

struct tls_ctx;
struct tls_conn;

/* ---- limits ---------------------------------------------------------------------- */

#define SINK_LINE_MAX    1000        /* command line incl. CRLF (RFC 5321 4.5.3.1.4) */
#define SINK_MSG_MAX     52428800u   /* message size limit, as advertised in EHLO SIZE */
#define SINK_RCPT_MAX    1000u       /* recipients per transaction */
#define SINK_FLOOD_BYTES (10u << 20) /* flood profile: 'a' bytes after "220 " */
#define SINK_TRICKLE_MS  200u        /* trickle profile: between two greeting bytes */
#define SINK_NAME_MAX    255         /* --name length */
#define SINK_RBUF_CAP    16384       /* received bytes: ciphertext, then plaintext */
#define SINK_OUT_CAP     8192        /* bytes on the wire: replies or TLS records */
#define SINK_PT_CAP      2048        /* plaintext replies waiting to be encrypted */
#define SINK_REPLY_MAX   512         /* room kept free before a command is taken */
#define SINK_HDR_CAP     4096        /* body bytes kept to find the load timestamp in */
#define SINK_STATS_MS    200u        /* --stats-file rewritten this often */

/* floormta-load's timestamp header: "X-Floormta-Load-Ts: <unix time in ns>". The sink
 * records arrival - ts (end of data, CLOCK_REALTIME) in its latency histogram. */
#define SINK_LOAD_TS_HEADER "X-Floormta-Load-Ts:"

/* Overridable at build time (-DSINK_IDLE_MS=2000u) to exercise the timeout paths. */
#ifndef SINK_IDLE_MS
#define SINK_IDLE_MS 300000u /* command / data / send timeout (RFC 5321 4.5.3.2) */
#endif

/* ---- profiles ---------------------------------------------------------------------- */

enum sink_mode {
    SINK_MODE_SMTP,      /* the normal dialogue */
    SINK_MODE_STALL,     /* accept, then say nothing until the client leaves */
    SINK_MODE_FLOOD,     /* a 10 MiB greeting line without CRLF */
    SINK_MODE_TRICKLE,   /* the greeting one byte at a time, SINK_TRICKLE_MS apart, then
                          * silence: a client must bound a whole reply, not each read */
    SINK_MODE_DROP_DATA, /* the normal dialogue, but the connection is dropped (no reply)
                          * as soon as body bytes arrive after 354: a receiver that
                          * crashes mid-DATA */
};

enum sink_starttls {
    SINK_STARTTLS_NO,  /* not in EHLO; the command gets 502 */
    SINK_STARTTLS_YES, /* offered and performed */
    SINK_STARTTLS_454, /* offered, then refused with 454 */
};

struct sink_profile {
    const char *name;
    enum sink_mode mode;
    enum sink_starttls starttls;
    const char *cert;     /* PKI file stem (<pki>/<cert>.crt and .key); NULL = no TLS */
    uint16_t min_version; /* TLS wire versions */
    uint16_t max_version;
};

/* The profile called name, or NULL. name is borrowed; the result is static. */
const struct sink_profile *sink_profile_find(const char *name);

/* All profile names, space-separated, for error messages. Static string. */
const char *sink_profile_names(void);

/* ---- the server ---------------------------------------------------------------------- */

struct sink_stats {
    uint64_t messages;       /* messages accepted (250 after DATA) */
    uint64_t bytes;          /* body bytes of accepted messages */
    uint64_t connections;    /* connections accepted */
    uint64_t tls_handshakes; /* server handshakes completed */
    uint64_t tls_resumed;    /* ... of which resumed a session (ticket) */
    uint64_t rsets;          /* RSET commands */
    uint64_t pipelined;      /* commands that arrived behind another in the same read */
    uint64_t rcpts_refused;  /* RCPTs refused by the local-part conventions below */
    uint64_t rcpts_accepted; /* RCPTs answered 250 */
    uint64_t greylisted;     /* RCPTs refused by tempfail-once-* (also in rcpts_refused) */
    uint64_t load_messages;  /* accepted messages carrying SINK_LOAD_TS_HEADER */
    uint64_t load_bad_ts;    /* ... of which the value was unusable (not a number, or
                              * in the future): not in the histogram */
    uint64_t load_last_ns;   /* CLOCK_REALTIME at the last load message's arrival */
    uint64_t latency[BENCH_LAT_BUCKETS]; /* arrival - ts of load messages, microseconds */
};

/* Recipient conventions (every profile with the normal dialogue), by local part, in
 * this order (so tempfail-once-* is never taken for tempfail-*):
 *   tempfail-once-*  ->  451 4.7.1 the first time this sink process sees the address
 *                        (the whole address, compared case-insensitively), 250 every
 *                        later time: a greylisting receiver. At most SINK_GREY_MAX
 *                        addresses are remembered; past that, and for an address longer
 *                        than SINK_GREY_ADDR_MAX - 1 bytes, the answer is always 451 and
 *                        nothing is remembered (such a recipient is never accepted).
 *   tempfail-*       ->  451 4.2.0 (deferred by the client)
 *   reject-*         ->  550 5.1.1 (bounced by the client)
 * anything else is accepted. */
#define SINK_RCPT_TEMPFAIL_ONCE "tempfail-once-"
#define SINK_RCPT_TEMPFAIL      "tempfail-"
#define SINK_RCPT_REJECT        "reject-"

/* ---- the greylist (sink_greylist.c) ------------------------------------------------ */

#define SINK_GREY_MAX      65536u              /* addresses remembered */
#define SINK_GREY_ADDR_MAX 256u                /* bytes per remembered address, NUL included */
#define SINK_GREY_SLOTS    (2 * SINK_GREY_MAX) /* open addressing, at most half full */

/* Addresses seen by tempfail-once-*: an open-addressing hash table of indices into
 * fixed rows of lowercased text, all allocated by sink_greylist_init. The rows are
 * large (16 MiB) but only the pages of addresses actually seen are ever touched. */
struct sink_greylist {
    uint32_t *slots;  /* SINK_GREY_SLOTS: 0 = empty, else row + 1 */
    uint64_t *hashes; /* per row: the hash of its address */
    char *rows;       /* SINK_GREY_MAX rows of SINK_GREY_ADDR_MAX bytes */
    uint32_t count;
};

/* Allocates the table (start-up). Returns 0 or -ENOMEM. */
int sink_greylist_init(struct sink_greylist *g);

/* Frees what sink_greylist_init allocated. Safe on a zeroed g. */
void sink_greylist_free(struct sink_greylist *g);

/* True if addr (len bytes, borrowed; compared case-insensitively) was given before.
 * Otherwise remembers it when there is room and returns false. Never allocates. */
bool sink_greylist_seen(struct sink_greylist *g, const char *addr, size_t len);

struct sink_session;

struct sink_server {
    struct eng_loop *loop;
    const char *mxname; /* borrowed from argv */
    /* Replies that depend only on the name, built once at start. */
    char greeting[SINK_NAME_MAX + 64];
    size_t greeting_len;
    char ehlo_starttls[SINK_NAME_MAX + 256]; /* EHLO reply offering STARTTLS */
    size_t ehlo_starttls_len;
    char ehlo_plain[SINK_NAME_MAX + 256]; /* without it */
    size_t ehlo_plain_len;
    char helo[SINK_NAME_MAX + 16];
    size_t helo_len;
    char timeout[SINK_NAME_MAX + 64];
    size_t timeout_len;

    struct sink_session *live; /* open sessions (doubly linked), for shutdown */
    struct sink_session *pool; /* released sessions kept for reuse (singly linked) */
    uint32_t live_count;
    uint64_t next_id;
    bool stopping;
    struct sink_stats stats;
    struct sink_greylist grey;
};

struct sink_listener {
    struct sink_server *srv;            /* borrowed */
    const struct sink_profile *profile; /* static */
    const char *pki;                    /* this listener's PKI directory (borrowed from
                                         * argv), NULL = --pki */
    struct tls_ctx *tls;                /* owned; NULL when the profile has no TLS */
    int fd;
    eng_handle_t h;
    bool open;
    char text[64]; /* "127.0.0.1:2525", "[::1]:2525" (actual port once bound) */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint64_t connections; /* accepted on this listener */
    uint64_t messages;    /* accepted (250 after DATA) on its connections */
};

/* Builds the fixed replies for srv->mxname. */
void sink_server_replies(struct sink_server *srv);

/* ---- the session ---------------------------------------------------------------------- */

/* The SMTP states. SINK_S_HANDSHAKE is entered by STARTTLS and left by
 * sink_session_tls_ready(); SINK_S_QUIT means no more input is taken. */
#define SINK_STATES(X)               \
    X(SINK_S_NEW, "new")             \
    X(SINK_S_STALL, "stall")         \
    X(SINK_S_FLOOD, "flood")         \
    X(SINK_S_TRICKLE, "trickle")     \
    X(SINK_S_GREETED, "greeted")     \
    X(SINK_S_READY, "ready")         \
    X(SINK_S_MAIL, "mail")           \
    X(SINK_S_RCPT, "rcpt")           \
    X(SINK_S_DATA, "data")           \
    X(SINK_S_HANDSHAKE, "handshake") \
    X(SINK_S_QUIT, "quit")

enum sink_state {
#define SINK_STATE_ENUM(name, str) name,
    SINK_STATES(SINK_STATE_ENUM)
#undef SINK_STATE_ENUM
            SINK_S__COUNT
};

const char *sink_state_name(enum sink_state st);

/* What the I/O side must do after the session consumed input. */
enum sink_action {
    SINK_ACT_MORE,     /* all input consumed: read more */
    SINK_ACT_PAUSE,    /* output is full: send, then offer the rest again */
    SINK_ACT_STARTTLS, /* 220 queued: discard the rest of the input, start the handshake */
    SINK_ACT_CLOSE,    /* flush the output, then close */
};

struct sink_session {
    struct sink_server *srv;          /* borrowed */
    struct sink_listener *lst;        /* borrowed: profile, TLS context, counters */
    struct sink_session *prev, *next; /* srv->live, or srv->pool (next only) */
    uint64_t id;
    eng_handle_t h;
    int fd;                /* owned: closed in on_release */
    struct tls_conn *tls;  /* owned; NULL until STARTTLS */
    enum sink_state state; /* written only by sink_session.c's set_state() */

    /* I/O flags (sink_io.c) */
    bool closing;     /* eng_handle_close called */
    bool close_after; /* close once the output is sent */
    bool paused;      /* input left in rbuf until a send frees output room */
    bool tls_shut;    /* close_notify queued */

    /* input: rbuf[rpos, rlen) is plaintext not yet consumed */
    size_t rpos, rlen;
    /* command line spanning reads (line[0, line_len)); discarding = past the bound */
    size_t line_len;
    bool discarding;

    /* transaction */
    uint32_t batch; /* commands taken in the current sink_session_input call */
    uint32_t rcpts;
    uint64_t body_bytes;
    uint8_t body_match; /* chars of "\r\n.\r\n" matched */
    bool body_too_big;
    size_t hdr_len; /* hdr[0, hdr_len): the first body bytes of the current message */

    uint64_t flood_sent;

    /* output: out[out_sent, out_len) is on the wire or waiting; pt[0, pt_len) is
     * plaintext waiting for tls_conn_write */
    size_t out_len, out_sent;
    size_t pt_len;

    char line[SINK_LINE_MAX];
    char pt[SINK_PT_CAP];
    char out[SINK_OUT_CAP];
    char rbuf[SINK_RBUF_CAP];
    char hdr[SINK_HDR_CAP];
};

/* sink_session.c: the SMTP dialogue. */

/* Starts the dialogue for s->lst->profile: queues the greeting (or nothing, for stall
 * and flood) and enters the first state. */
void sink_session_start(struct sink_session *s);

/* Consumes plaintext data[0, len) (borrowed for the call), queues the replies and says
 * what to do next; *used = bytes consumed (less than len only for PAUSE, STARTTLS and
 * CLOSE). */
enum sink_action sink_session_input(struct sink_session *s, const char *data, size_t len,
                                    size_t *used);

/* The TLS handshake completed: back to "EHLO required" (RFC 3207 4.2). */
void sink_session_tls_ready(struct sink_session *s);

/* The client was idle too long: queues 421 if a reply can still be sent, enters QUIT.
 * Returns true if something was queued. */
bool sink_session_timeout(struct sink_session *s);

/* sink_io.c: output for the session. */

/* True if a reply of up to SINK_REPLY_MAX bytes can be queued now (may move queued
 * plaintext into TLS to make room). */
bool sink_out_reserve(struct sink_session *s);

/* Queues a reply (data borrowed, copied). Callers reserve first. */
void sink_out_put(struct sink_session *s, const char *data, size_t len);

/* sink_io.c: connections. */

/* Takes ownership of fd, an accepted connection on lst; starts a session or closes fd
 * (no slot, shutting down). */
void sink_conn_accept(struct sink_listener *lst, int fd);

/* Closes every open session (shutdown). */
void sink_conn_close_all(struct sink_server *srv);

/* Frees the pooled sessions. Call after the loop has released every handle. */
void sink_conn_pool_free(struct sink_server *srv);

#endif /* FLOORMTA_BENCH_SINK_H */
