/*
 * tests/engine/test_metrics.c — the metric model and its Prometheus rendering
 * (engine/metrics.h): histogram buckets at and around their bounds, summing, the
 * mapping of worker/group counters, label escaping, and the whole rendering checked by
 * `promtool check metrics` (Debian's prometheus package; skipped if it is missing).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/group.h"
#include "engine/metrics.h"
#include "engine/worker.h"

static void test_buckets(void **state)
{
    (void)state;
    struct eng_hist h = { 0 };
    eng_metrics_observe(&h, 0);    /* <= 1 ms */
    eng_metrics_observe(&h, 1000); /* exactly 1 ms: le is inclusive */
    eng_metrics_observe(&h, 1001); /* just above: the 5 ms bucket */
    eng_metrics_observe(&h, 2500000);
    eng_metrics_observe(&h, 86400000000ull);     /* the last bound */
    eng_metrics_observe(&h, 86400000001ull);     /* +Inf */
    eng_metrics_observe(&h, UINT64_MAX / 1000u); /* +Inf */
    assert_int_equal(h.bucket[0], 2);
    assert_int_equal(h.bucket[1], 1);
    assert_int_equal(h.bucket[9], 1); /* 2.5 s */
    assert_int_equal(h.bucket[ENG_METRIC_HIST_BOUNDS - 1], 1);
    assert_int_equal(h.bucket[ENG_METRIC_HIST_BOUNDS], 2);
    assert_int_equal(h.count, 7);
    uint64_t sum = 0;
    for (unsigned i = 0; i <= ENG_METRIC_HIST_BOUNDS; i++)
        sum += h.bucket[i];
    assert_int_equal(sum, h.count);
    /* The bounds are strictly increasing. */
    for (unsigned i = 1; i < ENG_METRIC_HIST_BOUNDS; i++)
        assert_true(eng_metrics_hist_bounds_us[i] > eng_metrics_hist_bounds_us[i - 1]);
}

static void test_add_and_map(void **state)
{
    (void)state;
    struct eng_metrics a = { 0 }, b = { 0 };
    a.received[ENG_METRIC_SRC_HTTP] = 3;
    b.received[ENG_METRIC_SRC_HTTP] = 4;
    b.refusals[TLS_REASON_CERT_EXPIRED] = 2;
    b.spool_bytes = 100;
    eng_metrics_observe(&a.handshake, 3000);
    eng_metrics_observe(&b.handshake, 3000);
    eng_metrics_add(&a, &b);
    assert_int_equal(a.received[ENG_METRIC_SRC_HTTP], 7);
    assert_int_equal(a.refusals[TLS_REASON_CERT_EXPIRED], 2);
    assert_int_equal(a.spool_bytes, 100);
    assert_int_equal(a.handshake.bucket[1], 2);
    assert_int_equal(a.handshake.count, 2);
    assert_int_equal(a.handshake.sum_us, 6000);

    struct eng_group_stats g = { 0 };
    g.total.delivered = 5;
    g.total.conns_reused = 2;
    g.total.tls_resumed = 1;
    g.total.running = 3;
    g.refused = 9;
    struct eng_metrics m = { 0 };
    eng_metrics_add_group(&m, &g);
    assert_int_equal(m.rcpts_delivered, 5);
    assert_int_equal(m.conns_reused, 2);
    assert_int_equal(m.tls_resumed, 1);
    assert_int_equal(m.attempts_running, 3);
    assert_int_equal(m.enqueue_refused, 9);

    assert_int_equal(eng_metrics_tls_index(TLS_VERSION_1_0), 0);
    assert_int_equal(eng_metrics_tls_index(TLS_VERSION_1_3), 3);
    assert_int_equal(eng_metrics_tls_index(0), -1);
}

static struct eng_metrics *sample(void)
{
    struct eng_metrics *m = calloc(1, sizeof *m);
    m->received[ENG_METRIC_SRC_SMTP] = 10;
    m->received[ENG_METRIC_SRC_HTTP] = 20;
    m->results[ENG_METRIC_RES_OK] = 25;
    m->refusals[TLS_REASON_NO_STARTTLS] = 4;
    m->tls_versions[3] = 30;
    m->tls_full = 20;
    m->tls_resumed = 10;
    for (uint64_t us = 100; us < 10000000; us = us * 3 + 7) {
        eng_metrics_observe(&m->handshake, us);
        eng_metrics_observe(&m->transaction, us * 2);
        eng_metrics_observe(&m->end_to_end, us * 100);
    }
    m->queue_depth[ENG_METRIC_Q_DEFERRED] = 7;
    m->capcache_pass = 12;
    m->spool_bytes = 123456;
    return m;
}

static void test_render_lines(void **state)
{
    (void)state;
    struct eng_metrics *m = sample();
    char *out;
    size_t len;
    assert_int_equal(eng_metrics_render(m, &out, &len), 0);
    assert_int_equal(strlen(out), len);
    assert_non_null(strstr(out, "# TYPE floormta_messages_received_total counter\n"));
    assert_non_null(strstr(out, "floormta_messages_received_total{source=\"http\"} 20\n"));
    assert_non_null(strstr(out, "floormta_floor_refusals_total{reason=\"no_starttls\"} 4\n"));
    assert_null(strstr(out, "reason=\"none\""));
    assert_non_null(strstr(out, "floormta_tls_handshakes_by_version_total{version=\"1.3\"} 30\n"));
    assert_non_null(strstr(out, "floormta_tls_handshakes_by_kind_total{kind=\"resumed\"} 10\n"));
    assert_non_null(strstr(out, "floormta_queue_messages{state=\"deferred\"} 7\n"));
    assert_non_null(strstr(out, "floormta_capcache_entries{verdict=\"pass\"} 12\n"));
    assert_non_null(strstr(out, "floormta_spool_bytes 123456\n"));
    assert_non_null(strstr(out, "floormta_tls_handshake_duration_seconds_bucket{le=\"0.001\"}"));
    assert_non_null(strstr(out, "floormta_tls_handshake_duration_seconds_bucket{le=\"86400\"}"));
    /* Cumulative: +Inf equals _count. */
    char want[128];
    snprintf(want, sizeof want,
             "floormta_tls_handshake_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
             (unsigned long long)m->handshake.count);
    assert_non_null(strstr(out, want));
    snprintf(want, sizeof want, "floormta_tls_handshake_duration_seconds_count %llu\n",
             (unsigned long long)m->handshake.count);
    assert_non_null(strstr(out, want));
    /* Every bucket line is >= the one before it. */
    const char *p = out;
    unsigned long long prev = 0;
    const char *pre = "floormta_delivery_duration_seconds_bucket{";
    while ((p = strstr(p, pre))) {
        const char *v = strchr(p, '}') + 2;
        unsigned long long x = strtoull(v, NULL, 10);
        assert_true(x >= prev);
        prev = x;
        p = v;
    }
    assert_int_equal(prev, m->transaction.count);
    free(out);
    free(m);
}

/* promtool reads the exposition on stdin; 0 = accepted (lint included). */
static int promtool_check(const char *text, size_t len, char *msg, size_t cap)
{
    char path[] = "/tmp/floormta-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(msg, 1, cap - 1, p);
    msg[n] = '\0';
    int st = pclose(p);
    unlink(path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_promtool(void **state)
{
    (void)state;
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        fprintf(stderr, "promtool not installed (Debian's prometheus): skipping\n");
        skip();
    }
    char msg[4096];
    struct eng_metrics *m = sample();
    char *out;
    size_t len;
    assert_int_equal(eng_metrics_render(m, &out, &len), 0);
    int rc = promtool_check(out, len, msg, sizeof msg);
    if (rc != 0)
        fprintf(stderr, "promtool says:\n%s\n", msg);
    assert_int_equal(rc, 0);
    free(out);

    /* All zeros renders too (the first scrape of a fresh daemon). */
    memset(m, 0, sizeof *m);
    assert_int_equal(eng_metrics_render(m, &out, &len), 0);
    rc = promtool_check(out, len, msg, sizeof msg);
    if (rc != 0)
        fprintf(stderr, "promtool says:\n%s\n", msg);
    assert_int_equal(rc, 0);
    free(out);
    free(m);

    /* And promtool does reject bad input (the check is real). */
    const char *bad = "# TYPE x counter\nx{a=\"b} 1\n";
    assert_int_not_equal(promtool_check(bad, strlen(bad), msg, sizeof msg), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_add_and_map),
        cmocka_unit_test(test_render_lines),
        cmocka_unit_test(test_promtool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
