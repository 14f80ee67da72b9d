/*
 * tests/engine/test_group_live.c — the worker pool (engine/group.h) end to end: a spool
 * on disk in a scratch folder, a real dnsmasq on 127.0.0.1 and floormta-sink on
 * loopback addresses, messages injected from the test's own thread (no worker's).
 *
 *   d0..d39.floormta.test   MX 10 mx (127.0.0.3, a good receiver)
 *   s0..s9.floormta.test    MX 10 mx: senders' domains, where DSNs go
 *   old0..old10.floormta.test  MX 10 mx1 (127.0.0.2, TLS 1.0 only: below the floor)
 *
 * The certificate of the "valid" leaf names mx.floormta.test. Exit 77 when io_uring is
 * unavailable; dnsmasq missing is a failure.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/group.h"
#include "engine/loop.h"
#include "engine/metrics.h"
#include "queue/queue.h"
#include "tests/dns/dnsmasq_fixture.h"
#include "tests/engine/deliver_fixture.h"
#include "tests/engine/sink_fixture.h"
#include "tls/tls.h"

#define MX_NAME   "mx.floormta.test"
#define NDOMAINS  40
#define NSENDERS  10
#define NOLD      11
#define TIMEOUT_S 60

static char work[] = "/tmp/floormta-group-live-XXXXXX";

/* ---- a group on a spool ------------------------------------------------------------------- */

struct rig {
    struct queue_spool *spool;
    struct eng_group *g;
    char dir[256];
};

static void group_open(struct rig *r, unsigned n, uint16_t port,
                       const struct queue_retry_config *retry)
{
    struct eng_group_config cfg = {
        .spool = r->spool,
        .spool_dir = r->dir,
        .nworkers = n,
        .dns = { .servers = live_dns.server, .timeout_ms = 1000, .tries = 2 },
        .tls = live_tls,
        .worker = {
            .helo_name = "client.floormta.test",
            .reporting_mta = "mta.floormta.test",
            .port = port,
            .connect_timeout_ms = 5000,
            .reply_timeout_ms = 5000,
        },
    };
    if (retry)
        cfg.worker.retry = *retry;
    assert_int_equal(eng_group_new(&cfg, &r->g), 0);
    assert_int_equal(eng_group_start(r->g), 0);
}

static void rig_open(struct rig *r, const char *name, unsigned n, uint16_t port,
                     const struct queue_retry_config *retry)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->dir, sizeof(r->dir), "%s/%s", work, name);
    live_spool_open(r->dir, &r->spool);
    group_open(r, n, port, retry);
}

static void group_close(struct rig *r)
{
    eng_group_stop_and_free(r->g);
    r->g = NULL;
}

static struct eng_worker_stats total(const struct rig *r)
{
    struct eng_group_stats s;
    eng_group_stats(r->g, &s);
    return s.total;
}

static struct eng_group_worker_stats wstats(const struct rig *r, unsigned i)
{
    struct eng_group_worker_stats ws;
    assert_int_equal(eng_group_worker_stats(r->g, i, &ws), 0);
    return ws;
}

/* Waits (the workers run on their own threads) until the summed field reaches want. */
#define WAIT_TOTAL(r, field, want)                                                    \
    do {                                                                              \
        uint64_t end_ = live_now_ms() + TIMEOUT_S * 1000;                             \
        while (total(r).field < (want) && live_now_ms() < end_)                       \
            usleep(10 * 1000);                                                        \
        if (total(r).field < (want))                                                  \
            fail_msg("group stats " #field "=%llu, wanted %llu",                      \
                     (unsigned long long)total(r).field, (unsigned long long)(want)); \
    } while (0)

static const char body[] = "From: a@s0.floormta.test\r\nSubject: t\r\n\r\nhello\r\n";

struct queued {
    atomic_uint done;
    atomic_int res;
};

static void on_queued(void *arg, queue_id_t id, int res)
{
    struct queued *q = arg;
    if (id == 0 && res == 0)
        res = -1000; /* a durable message always has an id */
    atomic_store(&q->res, res);
    atomic_fetch_add(&q->done, 1);
}

/* Enqueues one message from the test's thread (one recipient local@domain, sender
 * a@sender_domain), retrying on back-pressure. */
static void enqueue(struct rig *r, const char *domain, const char *local, const char *sender_domain,
                    struct queued *q)
{
    struct queue_envelope *qe = queue_envelope_alloc(1);
    assert_non_null(qe);
    snprintf(qe->sender, sizeof(qe->sender), "a@%s", sender_domain);
    snprintf(qe->domain, sizeof(qe->domain), "%s", domain);
    snprintf(qe->rcpts[0].addr, sizeof(qe->rcpts[0].addr), "%s@%s", local, domain);
    int rc;
    while ((rc = eng_group_enqueue(r->g, qe, body, sizeof(body) - 1, on_queued, q)) == -EAGAIN)
        usleep(1000);
    assert_int_equal(rc, 0);
    queue_envelope_free(qe); /* copied */
}

static bool file_exists(const char *dir, const char *name)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

static void domain_name(char *out, size_t cap, const char *prefix, unsigned i)
{
    snprintf(out, cap, "%s%u.floormta.test", prefix, i);
}

/* ---- tests -------------------------------------------------------------------------------- */

#define NMSG 200

/* 200 messages for 40 domains through 3 workers: every message delivered exactly once,
 * each by the worker owning its domain, the spool empty afterwards. */
static void test_many_domains(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=tls1.2", NULL);
    struct rig r;
    rig_open(&r, "spool-many", 3, k.port, NULL);
    static struct queued q[NMSG];
    memset(q, 0, sizeof(q));
    unsigned per[3] = { 0 }, domains[3] = { 0 };
    for (unsigned d = 0; d < NDOMAINS; d++) {
        char dom[64];
        domain_name(dom, sizeof(dom), "d", d);
        domains[eng_group_shard_of(r.g, dom)]++;
    }
    for (unsigned i = 0; i < NMSG; i++) {
        char dom[64], local[16];
        domain_name(dom, sizeof(dom), "d", i % NDOMAINS);
        snprintf(local, sizeof(local), "r%u", i);
        per[eng_group_shard_of(r.g, dom)]++;
        enqueue(&r, dom, local, "s0.floormta.test", &q[i]);
    }
    for (unsigned i = 0; i < 3; i++)
        assert_true(domains[i] > 0); /* the 40 domains really are spread */
    WAIT_TOTAL(&r, removed, NMSG);
    struct eng_worker_stats s = total(&r);
    assert_int_equal(s.enqueued, NMSG);
    assert_int_equal(s.attempts, NMSG);
    assert_int_equal(s.delivered, NMSG);
    assert_int_equal(s.deferred, 0);
    assert_int_equal(s.bounced, 0);
    assert_int_equal(s.dsns, 0);
    assert_int_equal(s.handed, 0);
    assert_int_equal(s.adopted, 0);
    assert_int_equal(s.errors, 0);
    for (unsigned i = 0; i < 3; i++) { /* each message went through its domain's owner */
        struct eng_group_worker_stats ws = wstats(&r, i);
        assert_int_equal(ws.w.enqueued, per[i]);
        assert_int_equal(ws.w.attempts, per[i]);
        assert_int_equal(ws.w.delivered, per[i]);
    }
    for (unsigned i = 0; i < NMSG; i++) {
        assert_int_equal(atomic_load(&q[i].done), 1);
        assert_int_equal(atomic_load(&q[i].res), 0);
    }
    /* The metrics agree (published every 250 ms: wait for the last attempts'). */
    struct eng_metrics m;
    uint64_t end = live_now_ms() + 5000;
    do {
        usleep(50 * 1000);
        eng_group_metrics(r.g, &m);
    } while ((m.results[ENG_METRIC_RES_OK] < NMSG || m.queue_depth[ENG_METRIC_Q_QUEUED] > 0) &&
             live_now_ms() < end);
    assert_int_equal(m.results[ENG_METRIC_RES_OK], NMSG);
    assert_int_equal(m.rcpts_delivered, NMSG);
    assert_int_equal(m.results[ENG_METRIC_RES_REFUSED], 0);
    assert_int_equal(m.transaction.count, NMSG);
    assert_int_equal(m.end_to_end.count, NMSG);
    assert_int_equal(m.tls_versions[eng_metrics_tls_index(TLS_VERSION_1_2)],
                     m.conns_opened); /* the sink speaks TLS 1.2 only */
    assert_true(m.conns_opened > 0);
    assert_int_equal(m.handshake.count, m.conns_opened);
    assert_int_equal(m.queue_depth[ENG_METRIC_Q_QUEUED], 0);
    assert_int_equal(m.queue_depth[ENG_METRIC_Q_DEFERRED], 0);
    assert_true(m.dns_queries > 0);
    group_close(&r);
    assert_int_equal(live_spool_count(r.dir, &r.spool), 0);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, NMSG);
    queue_spool_close(r.spool);
}

/* A recipient rejected with 550 at a domain of one worker, its sender's domain owned by
 * the other: the FAILED DSN is made durable by the first and handed to the second,
 * which delivers it, once. */
static void test_dsn_cross_shard(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=tls1.2", NULL);
    struct rig r;
    rig_open(&r, "spool-dsn", 2, k.port, NULL);
    char rdom[64] = "", sdom[64] = "";
    for (unsigned d = 0; d < NDOMAINS && !sdom[0]; d++) {
        domain_name(rdom, sizeof(rdom), "d", d);
        for (unsigned s = 0; s < NSENDERS && !sdom[0]; s++) {
            domain_name(sdom, sizeof(sdom), "s", s);
            if (eng_group_shard_of(r.g, sdom) == eng_group_shard_of(r.g, rdom))
                sdom[0] = '\0';
        }
    }
    assert_true(sdom[0] != '\0');
    unsigned rw = eng_group_shard_of(r.g, rdom), sw = eng_group_shard_of(r.g, sdom);
    assert_true(rw != sw);
    struct queued q = { 0 };
    enqueue(&r, rdom, "reject-a", sdom, &q);
    WAIT_TOTAL(&r, removed, 2);
    struct eng_group_worker_stats a = wstats(&r, rw), b = wstats(&r, sw);
    assert_int_equal(a.w.enqueued, 1);
    assert_int_equal(a.w.bounced, 1);
    assert_int_equal(a.w.dsns, 1);
    assert_int_equal(a.w.handed, 1);
    assert_int_equal(a.w.delivered, 0);
    assert_int_equal(b.w.adopted, 1);
    assert_int_equal(b.w.attempts, 1);
    assert_int_equal(b.w.delivered, 1);
    assert_int_equal(b.w.dsns, 0);
    struct eng_worker_stats s = total(&r);
    assert_int_equal(s.removed, 2);
    assert_int_equal(s.errors, 0);
    assert_int_equal(atomic_load(&q.done), 1);
    group_close(&r);
    assert_int_equal(live_spool_count(r.dir, &r.spool), 0);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 1); /* the DSN, once; the original had no recipient */
    assert_int_equal(c.refused, 1);
    queue_spool_close(r.spool);
}

struct find_ctx {
    const char *domain;
    unsigned found;
    bool deferred_on_floor;
};

static int find_domain(void *arg, const struct queue_envelope *env)
{
    struct find_ctx *f = arg;
    if (strcmp(env->domain, f->domain) != 0)
        return 0;
    f->found++;
    f->deferred_on_floor = env->rcpts[0].state == QUEUE_RCPT_DEFERRED &&
                           env->rcpts[0].last.code / 100 == 4 &&
                           strstr(env->rcpts[0].last.text, "version_below_floor") != NULL &&
                           strstr(env->rcpts[0].last.text, "cached refusal") != NULL;
    return 0;
}

/* Messages deferred on a receiver below the floor survive a restart with another
 * worker count, each recovered into the worker owning its domain; the capability
 * cache survives too (a new message for that host is deferred on the cached refusal,
 * without a connection); capcache files of workers that no longer exist are removed. */
static void test_restart_reshards(void **state)
{
    (void)state;
    struct queue_retry_config retry = { .first = 3600, .max_age = 86400 };
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.2=tls1.0-only", NULL);
    struct rig r;
    rig_open(&r, "spool-restart", 2, k.port, &retry);
    static struct queued q[NOLD];
    memset(q, 0, sizeof(q));
    for (unsigned i = 0; i < NOLD - 1; i++) {
        char dom[64];
        domain_name(dom, sizeof(dom), "old", i);
        enqueue(&r, dom, "a", "s0.floormta.test", &q[i]);
    }
    WAIT_TOTAL(&r, deferred, NOLD - 1);
    assert_int_equal(total(&r).errors, 0);
    group_close(&r);
    assert_true(file_exists(r.dir, "capcache.0"));
    assert_true(file_exists(r.dir, "capcache.1"));

    /* Three workers now (the same sink: cache entries are per host and port): nothing
     * is due, and the cache blocks the host for a new message. */
    queue_spool_close(r.spool);
    live_spool_open(r.dir, &r.spool);
    group_open(&r, 3, k.port, &retry);
    unsigned per[3] = { 0 };
    for (unsigned i = 0; i < NOLD - 1; i++) {
        char dom[64];
        domain_name(dom, sizeof(dom), "old", i);
        per[eng_group_shard_of(r.g, dom)]++;
    }
    for (unsigned i = 0; i < 3; i++) {
        struct eng_group_worker_stats ws = wstats(&r, i);
        assert_int_equal(ws.w.recovered, per[i]);
        assert_true(ws.capcache_loaded >= 1); /* every worker loads every file */
    }
    char dom[64];
    domain_name(dom, sizeof(dom), "old", NOLD - 1);
    unsigned owner = eng_group_shard_of(r.g, dom);
    enqueue(&r, dom, "a", "s0.floormta.test", &q[NOLD - 1]);
    WAIT_TOTAL(&r, deferred, 1);
    struct eng_group_worker_stats ws = wstats(&r, owner);
    assert_int_equal(ws.w.attempts, 1);
    assert_int_equal(ws.capcache_blocks, 1); /* skipped without a connection */
    assert_int_equal(total(&r).attempts, 1); /* the recovered ones are not due */
    group_close(&r);
    assert_true(file_exists(r.dir, "capcache.2"));

    /* One worker: it recovers all eleven; the files of workers 1 and 2 are gone. */
    queue_spool_close(r.spool);
    live_spool_open(r.dir, &r.spool);
    group_open(&r, 1, k.port, &retry);
    assert_int_equal(wstats(&r, 0).w.recovered, NOLD);
    assert_true(file_exists(r.dir, "capcache.0"));
    assert_false(file_exists(r.dir, "capcache.1"));
    assert_false(file_exists(r.dir, "capcache.2"));
    group_close(&r);

    queue_spool_close(r.spool);
    live_spool_open(r.dir, &r.spool);
    struct find_ctx f = { .domain = dom };
    struct queue_recover_stats rs;
    assert_int_equal(queue_spool_recover(r.spool, find_domain, &f, &rs), 0);
    assert_int_equal(rs.messages, NOLD);
    assert_int_equal(f.found, 1);
    assert_true(f.deferred_on_floor);
    queue_spool_close(r.spool);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages, 0);
    for (unsigned i = 0; i < NOLD; i++)
        assert_int_equal(atomic_load(&q[i].done), 1);
}

/* ---- fixture ------------------------------------------------------------------------------ */

/* ---- services on the workers' loops --------------------------------------------------------- */

#define SVC_MSGS 12

/* One instance per worker: a timer that enqueues SVC_MSGS messages from the worker's own
 * thread (to domains of every shard) and checks that each done comes back to it. */
struct svc_inst {
    struct rig *r;
    struct eng_loop *loop;
    eng_handle_t h;
    bool released;
    pthread_t thread;
    unsigned index;
    unsigned sent, done, failed, wrong_thread;
    bool stopped, freed;
};

struct svc_ctx {
    struct rig *r;
    struct svc_inst inst[3];
    atomic_uint starts_first; /* starts of the first_only service */
};

static void svc_done(void *arg, queue_id_t id, int res)
{
    struct svc_inst *s = arg;
    if (!pthread_equal(pthread_self(), s->thread))
        s->wrong_thread++;
    if (res != 0 || id == 0)
        s->failed++;
    s->done++;
}

static void svc_timer(void *ctx, const struct eng_completion *c)
{
    struct svc_inst *s = ctx;
    if (c->res == -ECANCELED)
        return;
    struct queue_envelope *qe = queue_envelope_alloc(1);
    assert_non_null(qe);
    int rc = 0;
    while (s->sent < SVC_MSGS) {
        unsigned i = s->sent;
        snprintf(qe->sender, sizeof(qe->sender), "a@s0.floormta.test");
        domain_name(qe->domain, sizeof(qe->domain), "d", (s->index * SVC_MSGS + i) % NDOMAINS);
        snprintf(qe->rcpts[0].addr, sizeof(qe->rcpts[0].addr), "svc%u-%u@%s", s->index, i,
                 qe->domain);
        if ((rc = eng_group_enqueue(s->r->g, qe, body, sizeof(body) - 1, svc_done, s)) != 0)
            break;
        __atomic_store_n(&s->sent, i + 1, __ATOMIC_RELEASE);
    }
    queue_envelope_free(qe);
    /* -EINVAL until eng_group_start has seen every worker start; -EAGAIN: back-pressure. */
    if (s->sent < SVC_MSGS && (rc == -EINVAL || rc == -EAGAIN))
        eng_op_timer(s->loop, s->h, 1);
}

static void svc_release(void *ctx)
{
    ((struct svc_inst *)ctx)->released = true;
}

static const struct eng_handle_ops svc_ops = { svc_timer, svc_release };

static int svc_start(void *arg, unsigned index, struct eng_loop *loop, void **state)
{
    struct svc_ctx *x = arg;
    struct svc_inst *s = &x->inst[index];
    *s = (struct svc_inst){ .r = x->r, .loop = loop, .thread = pthread_self(), .index = index };
    int rc = eng_handle_open(loop, -1, &svc_ops, s, &s->h);
    if (rc == 0)
        rc = eng_op_timer(loop, s->h, 1);
    *state = s;
    return rc;
}

static void svc_stop(void *arg, unsigned index, void *state)
{
    (void)arg;
    (void)index;
    struct svc_inst *s = state;
    s->stopped = true;
    eng_handle_close(s->loop, s->h);
}

static bool svc_idle(void *arg, unsigned index, void *state)
{
    (void)arg;
    (void)index;
    struct svc_inst *s = state;
    return s->released && s->done == s->sent;
}

static void svc_free(void *arg, unsigned index, void *state)
{
    (void)arg;
    (void)index;
    ((struct svc_inst *)state)->freed = true;
}

static int first_start(void *arg, unsigned index, struct eng_loop *loop, void **state)
{
    (void)loop;
    struct svc_ctx *x = arg;
    *state = NULL;
    atomic_fetch_add(&x->starts_first, 1);
    return index == 0 ? 0 : -EPROTO; /* never started elsewhere */
}

/* Services run on every worker (or the first only); a message a service enqueues from
 * its worker's thread gets its done on that same thread, whichever worker owns its
 * domain; stopping the group waits until every service is idle, so the group is closed
 * right after the start, with the services' enqueues still in flight, and not one of
 * them is lost or answered on a wrong thread. */
static void test_services(void **state)
{
    (void)state;
    struct sink k;
    sink_start(&k, work, MX_NAME, "127.0.0.3=tls1.2", NULL);
    struct rig r;
    memset(&r, 0, sizeof(r));
    snprintf(r.dir, sizeof(r.dir), "%s/%s", work, "spool-svc");
    live_spool_open(r.dir, &r.spool);
    static struct svc_ctx x;
    memset(&x, 0, sizeof(x));
    x.r = &r;
    const struct eng_group_service svcs[] = {
        { .name = "test-first", .start = first_start, .arg = &x, .first_only = true },
        { .name = "test-svc",
          .start = svc_start,
          .stop = svc_stop,
          .idle = svc_idle,
          .free = svc_free,
          .arg = &x },
    };
    struct eng_group_config cfg = {
        .spool = r.spool,
        .nworkers = 3,
        .dns = { .servers = live_dns.server, .timeout_ms = 1000, .tries = 2 },
        .tls = live_tls,
        .worker = { .helo_name = "client.floormta.test",
                    .port = k.port,
                    .connect_timeout_ms = 5000,
                    .reply_timeout_ms = 5000 },
        .services = svcs,
        .nservices = 2,
    };
    assert_int_equal(eng_group_new(&cfg, &r.g), 0);
    assert_int_equal(eng_group_start(r.g), 0);
    /* Wait only until every service sent: the stop then overlaps with durability. */
    uint64_t end = live_now_ms() + TIMEOUT_S * 1000;
    for (;;) {
        unsigned sent = 0;
        for (unsigned i = 0; i < 3; i++)
            sent += __atomic_load_n(&x.inst[i].sent, __ATOMIC_ACQUIRE);
        if (sent == 3 * SVC_MSGS || live_now_ms() > end)
            break;
        usleep(1000);
    }
    group_close(&r);
    assert_int_equal(atomic_load(&x.starts_first), 1);
    for (unsigned i = 0; i < 3; i++) {
        struct svc_inst *s = &x.inst[i];
        assert_int_equal(s->sent, SVC_MSGS);
        assert_int_equal(s->done, SVC_MSGS);
        assert_int_equal(s->failed, 0);
        assert_int_equal(s->wrong_thread, 0);
        assert_true(s->stopped);
        assert_true(s->freed);
    }
    /* Every message is durable: delivered now, or recovered by the next start. */
    size_t left = live_spool_count(r.dir, &r.spool);
    struct sink_counters c;
    sink_stop(&k, &c);
    assert_int_equal(c.messages + left, 3 * SVC_MSGS);
    queue_spool_close(r.spool);
}

static char zone[8192];

/* The suite's setup (after the PKI, before dnsmasq): writes zone. */
static int zone_build(void)
{
    size_t n = (size_t)snprintf(zone, sizeof(zone),
                                "local-ttl=60\n"
                                "host-record=mx1.floormta.test,127.0.0.2\n"
                                "host-record=mx.floormta.test,127.0.0.3\n");
    for (unsigned i = 0; i < NDOMAINS; i++)
        n += (size_t)snprintf(zone + n, sizeof(zone) - n,
                              "mx-host=d%u.floormta.test,mx.floormta.test,10\n", i);
    for (unsigned i = 0; i < NSENDERS; i++)
        n += (size_t)snprintf(zone + n, sizeof(zone) - n,
                              "mx-host=s%u.floormta.test,mx.floormta.test,10\n", i);
    for (unsigned i = 0; i < NOLD; i++)
        n += (size_t)snprintf(zone + n, sizeof(zone) - n,
                              "mx-host=old%u.floormta.test,mx1.floormta.test,10\n", i);
    return 0;
}

int main(void)
{
    static const struct live_suite suite = {
        .debug_env = "GROUP_LIVE_DEBUG",
        .work = work,
        .mx_name = MX_NAME,
        .zone = zone,
        .dns_quiet = true,
        .setup = zone_build,
    };
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_many_domains, sink_teardown),
        cmocka_unit_test_teardown(test_dsn_cross_shard, sink_teardown),
        cmocka_unit_test_teardown(test_restart_reshards, sink_teardown),
        cmocka_unit_test_teardown(test_services, sink_teardown),
    };
    return live_main(&suite, tests);
}
