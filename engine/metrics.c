/*
 * engine/metrics.c — summing and rendering eng_metrics (see metrics.h).
 *
 * Every family gets its # HELP and # TYPE lines even at zero, so dashboards and
 * alerts see a series from the first scrape on. Names carry their unit (_seconds,
 * _bytes) and counters end in _total, which `promtool check metrics` lints for.
 */
#include "engine/metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/group.h"
#include "engine/worker.h"

const uint64_t eng_metrics_hist_bounds_us[ENG_METRIC_HIST_BOUNDS] = {
    1000,      5000,       10000,      25000,       50000,       100000,   250000,
    500000,    1000000,    2500000,    5000000,     10000000,    30000000, 60000000,
    300000000, 1800000000, 3600000000, 21600000000, 86400000000,
};

/* eng_metrics_add sums the struct as an array of words: keep it all uint64_t. */
_Static_assert(sizeof(struct eng_metrics) % sizeof(uint64_t) == 0,
               "struct eng_metrics must be made of uint64_t only");
_Static_assert(sizeof(struct eng_hist) == (ENG_METRIC_HIST_BOUNDS + 3) * sizeof(uint64_t),
               "struct eng_hist must be made of uint64_t only");

static const char *const src_names[] = {
#define SRC_NAME(name, str) str,
    ENG_METRIC_SOURCES(SRC_NAME)
#undef SRC_NAME
};

static const char *const res_names[] = {
#define RES_NAME(name, str) str,
    ENG_METRIC_RESULTS(RES_NAME)
#undef RES_NAME
};

static const char *const qstate_names[] = {
#define Q_NAME(name, str) str,
    ENG_METRIC_QSTATES(Q_NAME)
#undef Q_NAME
};

static const char *const tls_version_names[ENG_METRIC_TLS_VERSIONS] = { "1.0", "1.1", "1.2",
                                                                        "1.3" };

int eng_metrics_tls_index(uint16_t version)
{
    if (version < TLS_VERSION_1_0 || version > TLS_VERSION_1_3)
        return -1;
    return version - TLS_VERSION_1_0;
}

void eng_metrics_add(struct eng_metrics *dst, const struct eng_metrics *src)
{
    uint64_t *d = (uint64_t *)dst;
    const uint64_t *s = (const uint64_t *)src;
    for (size_t i = 0; i < sizeof *dst / sizeof(uint64_t); i++)
        d[i] += s[i];
}

void eng_metrics_add_worker(struct eng_metrics *m, const struct eng_worker_stats *w)
{
    if (!m || !w)
        return;
    m->rcpts_delivered += w->delivered;
    m->rcpts_bounced += w->bounced;
    m->attempts += w->attempts;
    m->attempts_deferred += w->deferred;
    m->expired += w->expired;
    m->removed += w->removed;
    m->dsns += w->dsns;
    m->recovered += w->recovered;
    m->errors += w->errors;
    m->attempts_running += w->running;
    m->conns_opened += w->conns_new;
    m->conns_reused += w->conns_reused;
    m->tls_full += w->tls_full;
    m->tls_resumed += w->tls_resumed;
    m->opportunistic += w->opportunistic;
    m->plaintext += w->plaintext;
}

void eng_metrics_add_group(struct eng_metrics *m, const struct eng_group_stats *g)
{
    if (!m || !g)
        return;
    eng_metrics_add_worker(m, &g->total);
    m->enqueue_refused += g->refused;
}

/* ---- rendering ------------------------------------------------------------------------- */

/* Label values: backslash, double quote and newline are escaped (exposition format). */
static void put_label_value(FILE *f, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            fprintf(f, "\\%c", *v);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(FILE *f, const char *name, const char *type, const char *help, uint64_t v)
{
    family(f, name, type, help);
    fprintf(f, "%s %llu\n", name, (unsigned long long)v);
}

/* A labelled family: n series, name{label="names[i]"} values[i]; skip = index left out. */
static void labelled(FILE *f, const char *name, const char *type, const char *help,
                     const char *label, const char *const *names, const uint64_t *values,
                     unsigned n, int skip)
{
    family(f, name, type, help);
    for (unsigned i = 0; i < n; i++) {
        if ((int)i == skip)
            continue;
        fprintf(f, "%s{%s=\"", name, label);
        put_label_value(f, names[i]);
        fprintf(f, "\"} %llu\n", (unsigned long long)values[i]);
    }
}

static void histogram(FILE *f, const char *name, const char *help, const struct eng_hist *h)
{
    family(f, name, "histogram", help);
    uint64_t cum = 0;
    for (unsigned i = 0; i < ENG_METRIC_HIST_BOUNDS; i++) {
        cum += h->bucket[i];
        fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", name, (double)eng_metrics_hist_bounds_us[i] / 1e6,
                (unsigned long long)cum);
    }
    cum += h->bucket[ENG_METRIC_HIST_BOUNDS];
    fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    fprintf(f, "%s_sum %.6f\n", name, (double)h->sum_us / 1e6);
    fprintf(f, "%s_count %llu\n", name, (unsigned long long)cum);
}

static void render(FILE *f, const struct eng_metrics *m)
{
    const char *reasons[TLS_REASON__COUNT];
    for (unsigned i = 0; i < TLS_REASON__COUNT; i++)
        reasons[i] = tls_reason_name((enum tls_reason)i);
    static const char *const kinds[] = { "full", "resumed" };
    uint64_t tls_kind[2] = { m->tls_full, m->tls_resumed };
    static const char *const verdicts[] = { "pass", "refuse" };
    uint64_t capcache[2] = { m->capcache_pass, m->capcache_refuse };

    labelled(f, "floormta_messages_received_total", "counter",
             "Messages accepted and made durable, by how they came in.", "source", src_names,
             m->received, ENG_METRIC_SRC__COUNT, -1);
    one(f, "floormta_recipients_delivered_total", "counter",
        "Recipients delivered (their state durable).", m->rcpts_delivered);
    one(f, "floormta_recipients_deferred_total", "counter",
        "Recipient attempts that ended deferred.", m->rcpts_deferred);
    one(f, "floormta_recipients_bounced_total", "counter",
        "Recipients bounced, expiry included (their state durable).", m->rcpts_bounced);
    labelled(f, "floormta_deliveries_total", "counter", "Per-recipient delivery attempt results.",
             "result", res_names, m->results, ENG_METRIC_RES__COUNT, -1);
    labelled(f, "floormta_floor_refusals_total", "counter",
             "Connections refused for being below the TLS floor, by reason.", "reason", reasons,
             m->refusals, TLS_REASON__COUNT, TLS_REASON_NONE);
    labelled(f, "floormta_tls_handshakes_by_version_total", "counter",
             "TLS handshakes completed, by negotiated version.", "version", tls_version_names,
             m->tls_versions, ENG_METRIC_TLS_VERSIONS, -1);
    labelled(f, "floormta_tls_handshakes_by_kind_total", "counter",
             "TLS handshakes completed, full or resumed.", "kind", kinds, tls_kind, 2, -1);
    histogram(f, "floormta_tls_handshake_duration_seconds", "TLS handshake duration.",
              &m->handshake);
    histogram(f, "floormta_delivery_duration_seconds",
              "SMTP transaction duration, MAIL FROM to the final reply.", &m->transaction);
    histogram(f, "floormta_injection_to_delivery_seconds",
              "Time from a message's injection to its delivery.", &m->end_to_end);
    one(f, "floormta_delivery_attempts_total", "counter", "Delivery attempts started.",
        m->attempts);
    one(f, "floormta_delivery_attempts_deferred_total", "counter",
        "Delivery attempts that left their message deferred.", m->attempts_deferred);
    one(f, "floormta_delivery_attempts_running", "gauge", "Delivery attempts running now.",
        m->attempts_running);
    one(f, "floormta_opportunistic_attempts_total", "counter",
        "Attempts that transacted under an opportunistic policy below the floor.",
        m->opportunistic);
    one(f, "floormta_plaintext_attempts_total", "counter",
        "Opportunistic attempts that transacted in plaintext.", m->plaintext);
    one(f, "floormta_messages_expired_total", "counter", "Messages bounced for their age.",
        m->expired);
    one(f, "floormta_messages_removed_total", "counter",
        "Finished messages removed from the spool.", m->removed);
    one(f, "floormta_messages_recovered_total", "counter",
        "Messages scheduled from the spool at start.", m->recovered);
    one(f, "floormta_bounces_generated_total", "counter",
        "DSNs generated (failures and delay warnings).", m->dsns);
    one(f, "floormta_enqueue_refused_total", "counter", "Enqueues refused for back-pressure.",
        m->enqueue_refused);
    one(f, "floormta_queue_errors_total", "counter", "Spool reads, updates or DSNs that failed.",
        m->errors);
    labelled(f, "floormta_queue_messages", "gauge", "Messages in the queue, by state.", "state",
             qstate_names, m->queue_depth, ENG_METRIC_Q__COUNT, -1);
    one(f, "floormta_connections_opened_total", "counter",
        "Attempts that reached READY on a new connection.", m->conns_opened);
    one(f, "floormta_connections_reused_total", "counter",
        "Attempts that reached READY on a pooled connection.", m->conns_reused);
    one(f, "floormta_connections_open", "gauge", "Outbound connections open, idle included.",
        m->conns_open);
    one(f, "floormta_connections_idle", "gauge", "Outbound connections idle in the pool.",
        m->conns_idle);
    one(f, "floormta_dns_queries_total", "counter", "DNS queries sent.", m->dns_queries);
    one(f, "floormta_dns_cache_hits_total", "counter", "DNS lookups answered from the cache.",
        m->dns_cache_hits);
    labelled(f, "floormta_capcache_entries", "gauge",
             "Capability-cache entries, by their last verdict.", "verdict", verdicts, capcache, 2,
             -1);
    one(f, "floormta_spool_bytes", "gauge", "Bytes of message files accepted and not yet removed.",
        m->spool_bytes);
}

int eng_metrics_render(const struct eng_metrics *m, char **out, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return -ENOMEM;
    render(f, m);
    if (ferror(f)) {
        fclose(f);
        free(buf);
        return -ENOMEM;
    }
    if (fclose(f) != 0) {
        free(buf);
        return -ENOMEM;
    }
    *out = buf;
    *len = n;
    return 0;
}
