/*
 * engine/metrics.h — floormta's metric model and its Prometheus text rendering.
 *
 * struct eng_metrics is plain data: every field is a uint64_t, written by one thread
 * (each worker keeps its own), so the hot path bumps counters and observes
 * histograms without locks or atomics. A snapshot sums the workers' copies with
 * eng_metrics_add (gauges are summed too: each worker reports its own share of the
 * queue, its pool and its capability cache) and renders the sum.
 *
 * Histograms keep one count per bucket (not cumulative: an observation touches one
 * bucket) over one fixed bound table in microseconds, from 1 ms to a day, which
 * covers a TLS handshake as well as a message's time in the queue; the renderer
 * makes them cumulative, as Prometheus wants.
 */
#ifndef FLOORMTA_ENGINE_METRICS_H
#define FLOORMTA_ENGINE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "tls/tls.h"

struct eng_worker_stats;
struct eng_group_stats;

/* Where a message came in. */
#define ENG_METRIC_SOURCES(X)      \
    X(ENG_METRIC_SRC_SMTP, "smtp") \
    X(ENG_METRIC_SRC_HTTP, "http")

enum eng_metric_source {
#define ENG_METRIC_SRC_ENUM(name, str) name,
    ENG_METRIC_SOURCES(ENG_METRIC_SRC_ENUM)
#undef ENG_METRIC_SRC_ENUM
            ENG_METRIC_SRC__COUNT
};

/* What one recipient's delivery attempt came to. */
#define ENG_METRIC_RESULTS(X)                                                    \
    X(ENG_METRIC_RES_OK, "ok")             /* 2xx over TLS that met the floor */ \
    X(ENG_METRIC_RES_TEMPFAIL, "tempfail") /* 4xx, timeouts, DNS tempfail */     \
    X(ENG_METRIC_RES_PERMFAIL, "permfail") /* 5xx, null MX, NXDOMAIN */          \
    X(ENG_METRIC_RES_REFUSED, "refused")   /* below the TLS floor: not sent */   \
    X(ENG_METRIC_RES_EXPIRED, "expired")   /* bounced for its age */

enum eng_metric_result {
#define ENG_METRIC_RES_ENUM(name, str) name,
    ENG_METRIC_RESULTS(ENG_METRIC_RES_ENUM)
#undef ENG_METRIC_RES_ENUM
            ENG_METRIC_RES__COUNT
};

/* Queue depth by state (gauges). */
#define ENG_METRIC_QSTATES(X)        \
    X(ENG_METRIC_Q_QUEUED, "queued") \
    X(ENG_METRIC_Q_DEFERRED, "deferred")

enum eng_metric_qstate {
#define ENG_METRIC_Q_ENUM(name, str) name,
    ENG_METRIC_QSTATES(ENG_METRIC_Q_ENUM)
#undef ENG_METRIC_Q_ENUM
            ENG_METRIC_Q__COUNT
};

/* TLS versions 1.0 .. 1.3 by index (eng_metrics_tls_index). */
#define ENG_METRIC_TLS_VERSIONS 4

/* Histogram upper bounds, microseconds: 1 ms .. 1 day. */
#define ENG_METRIC_HIST_BOUNDS 19
extern const uint64_t eng_metrics_hist_bounds_us[ENG_METRIC_HIST_BOUNDS];

struct eng_hist {
    uint64_t bucket[ENG_METRIC_HIST_BOUNDS + 1]; /* [i]: bounds[i-1] < v <= bounds[i];
                                                  * the last one is +Inf */
    uint64_t count;
    uint64_t sum_us;
};

struct eng_metrics {
    /* ---- counters ---- */
    uint64_t received[ENG_METRIC_SRC__COUNT];       /* messages accepted (durable) */
    uint64_t rcpts_delivered;                       /* recipients delivered (state durable) */
    uint64_t rcpts_deferred;                        /* recipient attempts that left it deferred */
    uint64_t rcpts_bounced;                         /* recipients bounced, expiry included */
    uint64_t results[ENG_METRIC_RES__COUNT];        /* per-recipient attempt results */
    uint64_t refusals[TLS_REASON__COUNT];           /* floor refusals by reason (NONE unused) */
    uint64_t tls_versions[ENG_METRIC_TLS_VERSIONS]; /* handshakes by negotiated version */
    uint64_t tls_full, tls_resumed;                 /* handshakes by kind */
    uint64_t conns_opened, conns_reused;            /* attempts on a new / pooled connection */
    uint64_t dns_queries, dns_cache_hits;
    uint64_t dsns;               /* DSNs (bounces and delay warnings) generated */
    uint64_t attempts;           /* delivery attempts started */
    uint64_t attempts_deferred;  /* attempts that left their message deferred */
    uint64_t expired;            /* messages bounced for their age */
    uint64_t removed;            /* finished messages removed from the spool */
    uint64_t recovered;          /* messages scheduled from the spool at start */
    uint64_t opportunistic;      /* attempts under an opportunistic policy below the floor */
    uint64_t plaintext;          /* ... of which in plaintext */
    uint64_t errors;             /* spool reads, updates or DSNs that failed */
    uint64_t enqueue_refused;    /* enqueues refused for back-pressure */
    struct eng_hist handshake;   /* TLS handshake time */
    struct eng_hist transaction; /* one delivery transaction (MAIL FROM to the final reply) */
    struct eng_hist end_to_end;  /* injection to delivery */
    /* ---- gauges (filled at snapshot time) ---- */
    uint64_t queue_depth[ENG_METRIC_Q__COUNT];
    uint64_t conns_open, conns_idle;
    uint64_t capcache_pass, capcache_refuse; /* capability-cache entries by verdict */
    uint64_t spool_bytes;
    uint64_t attempts_running;
};

/* Adds one observation (microseconds). Branch-free bucket search: cheap enough for the
 * delivery path. */
static inline void eng_metrics_observe(struct eng_hist *h, uint64_t us)
{
    unsigned i = 0;
    for (unsigned b = 0; b < ENG_METRIC_HIST_BOUNDS; b++)
        i += us > eng_metrics_hist_bounds_us[b];
    h->bucket[i]++;
    h->count++;
    h->sum_us += us;
}

/* The tls_versions index of a TLS version (enum tls_version), or -1 for none/unknown. */
int eng_metrics_tls_index(uint16_t version);

/* dst += src, field by field (counters, histograms and gauges). */
void eng_metrics_add(struct eng_metrics *dst, const struct eng_metrics *src);

/* Adds what today's worker and group counters know (engine/worker.h, engine/group.h)
 * into m: recipients delivered/bounced, attempts, DSNs, connections new/reused, full
 * and resumed handshakes, .... Either argument may be NULL. The pointers are borrowed
 * for the call. */
void eng_metrics_add_worker(struct eng_metrics *m, const struct eng_worker_stats *w);
void eng_metrics_add_group(struct eng_metrics *m, const struct eng_group_stats *g);

/* Renders m in the Prometheus text exposition format (version 0.0.4) into a new
 * buffer: *out (NUL-terminated; free() it) and *len. Returns 0, or -ENOMEM. */
int eng_metrics_render(const struct eng_metrics *m, char **out, size_t *len);

/* The content type of eng_metrics_render's output. */
#define ENG_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif /* FLOORMTA_ENGINE_METRICS_H */
