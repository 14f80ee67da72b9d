/*
 * bench/load_report.c — floormta-load's final report: text on stdout and, with
 * --json FILE, the same figures as one JSON object (jansson).
 *
 * Every figure that comes from a long-lived process (the sinks' counters and latency
 * histogram, the daemon's /metrics counters, its CPU time) is the difference between
 * the reading before the run and the one after, so a sink or a daemon can serve many
 * runs. Peak RSS cannot be subtracted: it is the daemon's VmHWM at the end, reset at
 * the start when /proc/PID/clear_refs allowed it (peak_rss_reset says whether).
 *
 * Latencies are read from log-linear histograms (bench/lat_hist.h): a quantile is the
 * middle of its bucket, within 3.2% of the true value.
 */
#include "bench/load.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

double load_hist_quantile(const uint64_t *hist, double q)
{
    uint64_t total = 0;
    for (unsigned b = 0; b < BENCH_LAT_BUCKETS; b++)
        total += hist[b];
    if (total == 0)
        return -1;
    uint64_t rank = (uint64_t)ceil(q * (double)total);
    if (rank < 1)
        rank = 1;
    uint64_t cum = 0;
    for (unsigned b = 0; b < BENCH_LAT_BUCKETS; b++) {
        cum += hist[b];
        if (cum >= rank)
            return (double)bench_lat_bucket_low(b) + (double)(bench_lat_bucket_width(b) - 1) / 2.0;
    }
    return -1; /* not reached */
}

static uint64_t hist_total(const uint64_t *hist)
{
    uint64_t total = 0;
    for (unsigned b = 0; b < BENCH_LAT_BUCKETS; b++)
        total += hist[b];
    return total;
}

/* {"p50": ms, "p90": ms, "p99": ms, "max": ms, "samples": n}, or null when empty. */
static json_t *hist_json(const uint64_t *hist)
{
    uint64_t n = hist_total(hist);
    if (n == 0)
        return json_null();
    return json_pack("{s:f, s:f, s:f, s:f, s:I}", "p50", load_hist_quantile(hist, 0.50) / 1000.0,
                     "p90", load_hist_quantile(hist, 0.90) / 1000.0, "p99",
                     load_hist_quantile(hist, 0.99) / 1000.0, "max",
                     load_hist_quantile(hist, 1.0) / 1000.0, "samples", (json_int_t)n);
}

static void hist_text(const char *what, const uint64_t *hist)
{
    uint64_t n = hist_total(hist);
    if (n == 0) {
        printf("  %-20s no samples\n", what);
        return;
    }
    printf("  %-20s p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  (%llu samples)\n", what,
           load_hist_quantile(hist, 0.50) / 1000.0, load_hist_quantile(hist, 0.90) / 1000.0,
           load_hist_quantile(hist, 0.99) / 1000.0, load_hist_quantile(hist, 1.0) / 1000.0,
           (unsigned long long)n);
}

/* {label value: end - start} for every sample of family name (labels of one key). */
static json_t *family_diff(const struct load_metrics *m0, const struct load_metrics *m1,
                           const char *name)
{
    json_t *o = json_object();
    size_t n = strlen(name);
    for (size_t i = 0; i < m1->n; i++) {
        const char *key = m1->m[i].key;
        if (strncmp(key, name, n) != 0 || key[n] != '{')
            continue;
        const char *q1 = strchr(key, '"');
        const char *q2 = q1 ? strchr(q1 + 1, '"') : NULL;
        if (q2 == NULL)
            continue;
        double d = m1->m[i].value - load_metrics_get(m0, key);
        char label[96];
        snprintf(label, sizeof(label), "%.*s", (int)(q2 - q1 - 1), q1 + 1);
        json_object_set_new(o, label, json_integer((json_int_t)llround(d)));
    }
    return o;
}

/* "a=1 b=2" of the non-zero entries of a {label: n} object; "none" when all are zero. */
static void print_counts(const char *what, json_t *o)
{
    printf("  %-20s", what);
    const char *k;
    json_t *v;
    bool any = false;
    json_object_foreach(o, k, v)
    {
        if (json_integer_value(v) != 0) {
            printf(" %s=%lld", k, (long long)json_integer_value(v));
            any = true;
        }
    }
    printf("%s\n", any ? "" : " none");
}

int load_report(const struct load_report_in *in)
{
    const struct load_config *cfg = in->cfg;
    const struct load_counters *c = in->c;
    uint64_t lat[BENCH_LAT_BUCKETS];
    for (unsigned b = 0; b < BENCH_LAT_BUCKETS; b++)
        lat[b] = in->sink1.latency[b] - in->sink0.latency[b];
    uint64_t delivered = in->sink1.load_messages - in->sink0.load_messages;
    double inj_rate = in->inject_s > 0 ? (double)c->injected / in->inject_s : 0;
    double del_rate = in->deliver_s > 0 ? (double)delivered / in->deliver_s : 0;

    json_t *root = json_object();
    json_object_set_new(root, "config",
                        json_pack("{s:s?, s:s?, s:I, s:f, s:f, s:i, s:i, s:I, s:b}", "smtp",
                                  cfg->smtp, "http", cfg->http, "count", (json_int_t)cfg->count,
                                  "duration", cfg->duration_s, "rate", cfg->rate, "conns",
                                  (int)cfg->conns, "domains", (int)cfg->domains, "size",
                                  (json_int_t)cfg->size, "pipelining", cfg->pipelining));
    json_object_set_new(root, "started", json_integer((json_int_t)c->started));
    json_object_set_new(root, "injected", json_integer((json_int_t)c->injected));
    json_object_set_new(root, "refused", json_integer((json_int_t)c->refused));
    json_object_set_new(root, "lost", json_integer((json_int_t)c->lost));
    json_object_set_new(root, "connections", json_integer((json_int_t)c->connections));
    json_object_set_new(root, "connection_errors", json_integer((json_int_t)c->conn_errors));
    json_object_set_new(root, "inject_seconds", json_real(in->inject_s));
    json_object_set_new(root, "inject_rate", json_real(inj_rate));
    json_t *reasons = json_object();
    for (size_t i = 0; i < c->nreasons; i++)
        json_object_set_new(reasons, c->reasons[i].text,
                            json_integer((json_int_t)c->reasons[i].count));
    json_object_set_new(root, "refusals", reasons);
    json_object_set_new(root, "inject_latency_ms", hist_json(c->inject_latency));
    if (cfg->nstats > 0) {
        json_object_set_new(root, "delivered", json_integer((json_int_t)delivered));
        json_object_set_new(root, "delivered_all", json_boolean(in->delivered_all));
        json_object_set_new(root, "deliver_seconds", json_real(in->deliver_s));
        json_object_set_new(root, "deliver_rate", json_real(del_rate));
        json_object_set_new(root, "latency_ms", hist_json(lat));
        json_object_set_new(
                root, "sink_tls_handshakes",
                json_pack("{s:I, s:I}", "total",
                          (json_int_t)(in->sink1.tls_handshakes - in->sink0.tls_handshakes),
                          "resumed", (json_int_t)(in->sink1.tls_resumed - in->sink0.tls_resumed)));
        json_object_set_new(
                root, "bad_timestamps",
                json_integer((json_int_t)(in->sink1.load_bad_ts - in->sink0.load_bad_ts)));
    } else {
        json_object_set_new(root, "delivered", json_null());
        json_object_set_new(root, "latency_ms", json_null());
    }
    bool metrics = in->m0.ok && in->m1.ok;
    if (metrics) {
        json_object_set_new(root, "tls_handshakes",
                            family_diff(&in->m0, &in->m1, "floormta_tls_handshakes_by_kind_total"));
        json_object_set_new(root, "floor_refusals",
                            family_diff(&in->m0, &in->m1, "floormta_floor_refusals_total"));
        json_object_set_new(root, "deliveries",
                            family_diff(&in->m0, &in->m1, "floormta_deliveries_total"));
        json_object_set_new(root, "received",
                            family_diff(&in->m0, &in->m1, "floormta_messages_received_total"));
        json_object_set_new(root, "enqueue_refused",
                            json_integer((json_int_t)llround(
                                    load_metrics_get(&in->m1, "floormta_enqueue_refused_total") -
                                    load_metrics_get(&in->m0, "floormta_enqueue_refused_total"))));
    } else {
        json_object_set_new(root, "tls_handshakes", json_null());
        json_object_set_new(root, "floor_refusals", json_null());
    }
    bool proc = in->p0.ok && in->p1.ok;
    if (proc) {
        double cpu = in->p1.cpu_s - in->p0.cpu_s;
        json_object_set_new(root, "engine",
                            json_pack("{s:I, s:f, s:f, s:I, s:b}", "pid", (json_int_t)cfg->pid,
                                      "cpu_seconds", cpu, "cpu_ms_per_message",
                                      c->injected ? cpu * 1000.0 / (double)c->injected : 0.0,
                                      "peak_rss_kb", (json_int_t)in->p1.hwm_kb, "peak_rss_reset",
                                      in->hwm_reset));
    } else {
        json_object_set_new(root, "engine", json_null());
    }

    /* ---- text ---- */
    printf("floormta-load: %u %s conns, %u domains, %zu-byte messages%s\n", cfg->conns,
           cfg->http != NULL ? "HTTP" : "SMTP", cfg->domains, cfg->size,
           cfg->pipelining || cfg->http != NULL ? "" : ", no pipelining");
    printf("  %-20s %llu of %llu begun in %.2f s: %.1f msgs/s (refused %llu, lost %llu; "
           "%llu connections, %llu errors)\n",
           "injected", (unsigned long long)c->injected, (unsigned long long)c->started,
           in->inject_s, inj_rate, (unsigned long long)c->refused, (unsigned long long)c->lost,
           (unsigned long long)c->connections, (unsigned long long)c->conn_errors);
    if (cfg->nstats > 0) {
        printf("  %-20s %llu%s in %.2f s: %.1f msgs/s\n", "delivered",
               (unsigned long long)delivered, in->delivered_all ? " (all)" : " (MISSING some)",
               in->deliver_s, del_rate);
        hist_text("inject->deliver", lat);
    } else {
        printf("  %-20s unknown (no --stats-file)\n", "delivered");
    }
    hist_text(cfg->http != NULL ? "POST->202" : "MAIL->250", c->inject_latency);
    print_counts("injection refusals", reasons);
    if (metrics) {
        print_counts("tls handshakes", json_object_get(root, "tls_handshakes"));
        print_counts("floor refusals", json_object_get(root, "floor_refusals"));
        print_counts("deliveries", json_object_get(root, "deliveries"));
    } else {
        printf("  %-20s unknown (no --metrics)\n", "tls handshakes");
    }
    if (proc) {
        json_t *e = json_object_get(root, "engine");
        printf("  %-20s cpu %.2f s (%.3f ms/message), peak rss %.1f MB%s\n", "engine",
               json_real_value(json_object_get(e, "cpu_seconds")),
               json_real_value(json_object_get(e, "cpu_ms_per_message")),
               (double)in->p1.hwm_kb / 1024.0, in->hwm_reset ? "" : " (since start)");
    }
    fflush(stdout);

    int rc = 0;
    if (cfg->json != NULL &&
        json_dump_file(root, cfg->json, JSON_INDENT(2) | JSON_SORT_KEYS) != 0) {
        fprintf(stderr, "floormta-load: --json %s: cannot write\n", cfg->json);
        rc = -EIO;
    }
    json_decref(root);
    return rc;
}
