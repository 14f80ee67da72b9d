/*
 * bench/load.h — private declarations of floormta-load, the load generator (issue 7).
 * Not a public module header: only bench/load*.c include it.
 *
 * Four files share it:
 *   load.c          CLI, the run (rate, count / duration, reconnects, progress, the
 *                   wait for deliveries), signals;
 *   load_session.c  one SMTP submission connection: the client state machine and its
 *                   I/O on the loop (engine/loop.h);
 *   load_http.c     the other session kind (--http): one HTTP/1.1 keep-alive connection
 *                   POSTing /api/v1/messages, its own state machine on the same loop;
 *   load_observe.c  what is read from outside: the sinks' --stats-file, the daemon's
 *                   /metrics, /proc/PID of the daemon;
 *   load_report.c   the final report, as text and as JSON (--json).
 *
 * Single-threaded: one loop on the main thread runs every session and the ticker. The
 * message body is built once and shared by every session (read-only); a session's
 * envelope and header are formatted into its own fixed buffer, so nothing is allocated
 * per message.
 */
#ifndef FLOORMTA_BENCH_LOAD_H
#define FLOORMTA_BENCH_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "bench/lat_hist.h"
#include "engine/loop.h"

#define LOAD_STATS_MAX         16   /* --stats-file arguments */
#define LOAD_CONNS_MAX         4096 /* --conns */
#define LOAD_RBUF_CAP          4096 /* replies; an EHLO reply is the largest */
#define LOAD_OUT_CAP           2048 /* commands and one message header */
#define LOAD_REASONS_MAX       32   /* distinct refusal reasons kept; past that: "other" */
#define LOAD_REASON_LEN        40   /* "rcpt 554 5.7.1" */
#define LOAD_METRICS_MAX       128  /* samples kept from one /metrics scrape */
#define LOAD_RETRY_MS          100u /* a lost connection is made again after this */
#define LOAD_GIVE_UP           5u /* connection errors in a row, per connection, that end the run */
#define LOAD_METRICS_SETTLE_MS 2000u                /* the longest wait for /metrics to catch up */
#define LOAD_HDR_ROOM          512u                 /* the header's share of --size */
#define LOAD_TS_HEADER         "X-Floormta-Load-Ts" /* read by floormta-sink (sink.h) */
#define LOAD_SEQ_HEADER        "X-Floormta-Load-Seq"

/* ---- configuration (load.c parses it) ------------------------------------------------- */

struct load_config {
    const char *smtp;             /* "127.0.0.1:2525" as given, or NULL with --http */
    const char *http;             /* "http://127.0.0.1:8025" as given, or NULL */
    const char *http_host;        /* its HOST:PORT (the Host header) */
    const char *token;            /* --token: the API's bearer token */
    struct sockaddr_storage addr; /* ... parsed */
    socklen_t addrlen;
    uint64_t count;    /* messages; 0 = bounded by duration only */
    double duration_s; /* 0 = bounded by count only */
    double rate;       /* messages/s over all connections; 0 = as fast
                        * as the daemon takes them */
    unsigned conns;
    unsigned domains;                        /* recipients go to d0000 .. d<K-1> */
    size_t size;                             /* message size in bytes, header included */
    const char *suffix;                      /* domain suffix: dNNNN.<suffix> */
    const char *from;                        /* envelope sender and From: */
    const char *helo;                        /* our EHLO name */
    bool pipelining;                         /* use PIPELINING when offered */
    const char *stats_files[LOAD_STATS_MAX]; /* the sinks' --stats-file */
    size_t nstats;
    const char *metrics_url; /* http://HOST:PORT/metrics, or NULL */
    long pid;                /* the daemon's pid, or 0 */
    const char *json;        /* --json FILE, or NULL */
    double wait_s;           /* how long to wait for deliveries */
    unsigned timeout_ms;     /* connect / each reply / each send */
    bool tty;                /* progress with \r on one line */
    bool quiet;              /* no progress at all */
};

/* ---- observations (load_observe.c) ------------------------------------------------------ */

/* The sum of the sinks' stats files at one moment. */
struct load_sink_snap {
    bool ok;                /* every file was read */
    uint64_t messages;      /* every message the sinks accepted */
    uint64_t load_messages; /* ... carrying the timestamp header */
    uint64_t load_bad_ts;
    uint64_t tls_handshakes; /* the sinks' server side: what the engine did as a client */
    uint64_t tls_resumed;
    uint64_t load_last_ns; /* the latest of the sinks' last load arrivals (unix ns) */
    uint64_t latency[BENCH_LAT_BUCKETS];
};

/* Reads and sums every --stats-file into *out (zeroed first). Returns 0, or the first
 * file's -errno / -EINVAL (out->ok false; the counts of the files read are kept). */
int load_sink_read(const struct load_config *cfg, struct load_sink_snap *out);

struct load_metric {
    char key[128]; /* name{labels} as the daemon wrote it */
    double value;
};

/* The daemon's counters that the report uses (names in load_observe.c). */
struct load_metrics {
    bool ok;
    size_t n;
    struct load_metric m[LOAD_METRICS_MAX];
};

/* GETs url (http://HOST:PORT/PATH, blocking, 3 s bound) and keeps the samples the
 * report needs. url is borrowed. Returns 0, or a negative code (out->ok false). */
int load_metrics_scrape(const char *url, struct load_metrics *out);

/* The value of key in m, or 0 when it is absent. */
double load_metrics_get(const struct load_metrics *m, const char *key);

struct load_proc {
    bool ok;
    double cpu_s;    /* utime + stime */
    uint64_t hwm_kb; /* VmHWM: peak resident set */
    uint64_t rss_kb; /* VmRSS */
};

/* Reads /proc/PID/stat and /proc/PID/status. Returns 0 or -errno (out->ok false). */
int load_proc_read(long pid, struct load_proc *out);

/* Resets the process's peak RSS (writes 5 to /proc/PID/clear_refs), so VmHWM at the
 * end is this run's peak. Returns 0 or -errno (not our process, old kernel). */
int load_proc_reset_hwm(long pid);

/* ---- the run (load.c) -------------------------------------------------------------------- */

struct load_reason {
    char text[LOAD_REASON_LEN];
    uint64_t count;
};

struct load_counters {
    uint64_t started;     /* transactions begun (MAIL sent) */
    uint64_t injected;    /* 250 after the end of data */
    uint64_t refused;     /* a 4xx / 5xx at any step: by reason in reasons[] */
    uint64_t lost;        /* the connection failed with a transaction in flight */
    uint64_t connections; /* connections that reached the greeting */
    uint64_t conn_errors; /* connect failures, timeouts, resets */
    uint64_t inject_latency[BENCH_LAT_BUCKETS]; /* MAIL sent -> 250 after data, us */
    struct load_reason reasons[LOAD_REASONS_MAX];
    size_t nreasons;
};

struct load_session;
struct load_http_session;
struct load_run;

/* The session kind, chosen once at start (SMTP, or HTTP with --http). */
struct load_session_ops {
    /* Allocates the sessions (start-up; aborts on no memory). */
    void (*init)(struct load_run *run);
    /* Frees them. Call after the loop has released every handle. */
    void (*free)(struct load_run *run);
    /* Starts (or restarts) session idx when it is closed and its retry time has come.
     * Returns true if it is running (or was started). */
    bool (*poke)(struct load_run *run, unsigned idx);
    /* A rate token for session idx, which load_run_take() queued: it begins its
     * transaction, or quits when granted is false. */
    void (*token)(struct load_run *run, unsigned idx, bool granted);
    /* Sessions not yet finished for good. */
    unsigned (*live)(const struct load_run *run);
    /* Closes every session (SIGINT twice). */
    void (*close_all)(struct load_run *run);
};

extern const struct load_session_ops load_smtp_session_ops; /* load_session.c */
extern const struct load_session_ops load_http_session_ops; /* load_http.c */

struct load_run {
    const struct load_config *cfg; /* borrowed */
    struct eng_loop *loop;
    const struct load_session_ops *ops;
    struct load_session *sessions;       /* cfg->conns of them (SMTP) */
    struct load_http_session *hsessions; /* ... (HTTP) */

    /* The shared message: "\r\n" (end of the header), the body lines, ".\r\n". */
    char *body;
    size_t body_len;
    uint64_t run_id; /* start time in ns: makes Message-IDs unique across runs */

    /* --http: the shared tail of every request's JSON: the body above without its ".",
     * JSON-escaped, then the closing "\"}" (load_http_build_body()). */
    char *http_body;
    size_t http_body_len;

    uint64_t start_ms;      /* loop clock at the first connect */
    uint64_t inject_end_ms; /* when the last session finished */
    uint64_t next_seq;
    bool no_more;           /* count or duration reached, or SIGINT: no new transaction */
    unsigned errors_in_row; /* connection errors since a greeting last came */
    bool gave_up;           /* too many of them: the daemon is not there */

    /* --rate: a token bucket refilled by the ticker */
    double tokens;
    uint64_t tokens_ms;
    unsigned *waiters; /* ring of session indices waiting for a token */
    unsigned wait_head, wait_len;
    unsigned granted; /* idx + 1 of the session refill() is handing a token to */

    struct load_counters c;
};

/* A session may begin a transaction: returns 1 and *seq, 0 when it must wait for a
 * token (it is queued: load_session_token() follows), or -1 when the run wants no more
 * messages (the session should QUIT). */
int load_run_take(struct load_run *run, unsigned idx, uint64_t *seq);

/* A session's output, the same for both kinds: its own small buffer (commands, or a
 * request's headers) first, then, once that has left, the run's shared body (sent from
 * where it lies: never copied per message). One send in flight at a time. */
struct load_out {
    size_t len, sent;  /* the own buffer: bytes queued, bytes sent */
    size_t body_sent;  /* of the shared body */
    bool body_queued;  /* the body follows the own buffer */
    bool sending_body; /* the send in flight is from the body */
    size_t sending;    /* bytes of the send in flight; 0 = none */
};

/* What to send next: the rest of own (o->len bytes) or of body (body_len bytes); false
 * when nothing is queued or a send is in flight. Marks which one it chose. */
bool load_out_next(struct load_out *o, const char *own, const char *body, size_t body_len,
                   const char **buf, size_t *len);

/* A send of n bytes completed: advances what it was from; an own buffer or a body
 * wholly sent is emptied. */
void load_out_sent(struct load_out *o, size_t n, size_t body_len);

/* Both session kinds' connection start: a non-blocking TCP socket with TCP_NODELAY for
 * cfg->addr, opened as a handle on the run's loop with ops and ctx (borrowed until the
 * handle's on_release, which closes *fd). Returns 0 with *fd and *h set, or -1 after
 * counting a connection error (nothing left open; *fd -1, *h 0). */
int load_conn_open(struct load_run *run, const struct eng_handle_ops *ops, void *ctx, int *fd,
                   eng_handle_t *h);

/* Unix time in nanoseconds: the latency stamps (the sinks compare with their clock). */
uint64_t load_realtime_ns(void);

/* Counts a refusal under reason text ("rcpt 550 5.1.1"; borrowed, copied). */
void load_run_refusal(struct load_run *run, const char *text);

/* ---- HTTP sessions (load_http.c) ---------------------------------------------------------- */

/* Builds run->http_body from run->body (start-up). Returns 0 or -ENOMEM. */
int load_http_build_body(struct load_run *run);

/* ---- sessions (load_session.c) ------------------------------------------------------------- */

/* Allocates run->sessions (start-up; aborts on no memory). */
void load_sessions_init(struct load_run *run);

/* Frees them. Call after the loop has released every handle. */
void load_sessions_free(struct load_run *run);

/* Starts (or restarts) session idx when it is closed and its retry time has come.
 * Returns true if it is running (or was started). */
bool load_session_poke(struct load_run *run, unsigned idx);

/* A rate token for session idx, which load_run_take() queued: it begins its
 * transaction, or quits when granted is false. */
void load_session_token(struct load_run *run, unsigned idx, bool granted);

/* Sessions not yet finished for good (running, or closed and due for a retry). */
unsigned load_sessions_live(const struct load_run *run);

/* Closes every session (SIGINT twice). */
void load_sessions_close_all(struct load_run *run);

/* ---- the report (load_report.c) -------------------------------------------------------------- */

struct load_report_in {
    const struct load_config *cfg;
    const struct load_counters *c;
    double inject_s;  /* first connect to the last session's end */
    double deliver_s; /* first connect to the moment the deliveries stopped growing */
    bool delivered_all;
    struct load_sink_snap sink0, sink1;
    struct load_metrics m0, m1;
    struct load_proc p0, p1;
    bool hwm_reset;
};

/* Prints the report on stdout and writes --json if asked. Returns 0, or -errno when
 * the JSON file cannot be written. */
int load_report(const struct load_report_in *in);

/* The value at quantile q (0..1) of a histogram, in microseconds (the bucket's middle),
 * or -1 when it is empty. */
double load_hist_quantile(const uint64_t *hist, double q);

#endif /* FLOORMTA_BENCH_LOAD_H */
