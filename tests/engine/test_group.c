/*
 * tests/engine/test_group.c — the worker pool (engine/group.h) without a receiver: the
 * MPSC inbox under contention from several producer threads (with its eventfd wake-up
 * protocol), the shard function's stability, eng_group_enqueue from a thread that is no
 * worker (each message made durable and its done run on the thread owning its domain,
 * then deferred by a resolver that never answers), and the capability cache files in
 * the spool directory. Exit 77 when io_uring is unavailable.
 */
#define _GNU_SOURCE /* pthread_getname_np */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/capcache.h"
#include "engine/group.h"
#include "engine/group_int.h"
#include "engine/log.h"
#include "engine/loop.h"
#include "queue/queue.h"
#include "tests/engine/sink_fixture.h"
#include "tls/tls.h"

static char work[] = "/tmp/floormta-group-XXXXXX";
static struct tls_ctx *tls;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the inbox ----------------------------------------------------------------------------- */

#define PRODUCERS    4
#define PER_PRODUCER 50000u

struct item {
    struct eng_group_node node;
    unsigned producer;
    unsigned seq;
};

struct producer {
    struct eng_group_inbox *q;
    unsigned id;
    struct item *items;
    atomic_bool *go;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    while (!atomic_load(p->go))
        ;
    for (unsigned i = 0; i < PER_PRODUCER; i++) {
        p->items[i].producer = p->id;
        p->items[i].seq = i;
        if (eng_group_inbox_push(p->q, &p->items[i].node, 0) != 0)
            return (void *)1;
        if (i % 1024 == 0)
            sched_yield(); /* let the consumer catch up now and then: more interleavings */
    }
    return NULL;
}

/* Four producers push concurrently while the consumer sleeps in poll() on the eventfd
 * and drains after each wake-up, exactly as a worker does: every item arrives exactly
 * once, in its producer's order, and no wake-up is lost (a lost one would leave the
 * consumer asleep with items waiting: the 10-second guard fails the test). */
static void test_inbox_contention(void **state)
{
    (void)state;
    struct eng_group_inbox q;
    assert_int_equal(eng_group_inbox_init(&q), 0);
    atomic_bool go;
    atomic_init(&go, false);
    struct producer p[PRODUCERS];
    pthread_t th[PRODUCERS];
    for (unsigned i = 0; i < PRODUCERS; i++) {
        p[i] = (struct producer){ &q, i, calloc(PER_PRODUCER, sizeof(struct item)), &go };
        assert_non_null(p[i].items);
        assert_int_equal(pthread_create(&th[i], NULL, produce, &p[i]), 0);
    }
    atomic_store(&go, true);
    unsigned next[PRODUCERS] = { 0 };
    unsigned total = 0, wakeups = 0;
    while (total < PRODUCERS * PER_PRODUCER) {
        struct pollfd pfd = { .fd = q.efd, .events = POLLIN };
        int n = poll(&pfd, 1, 10000);
        if (n == 0)
            fail_msg("no wake-up with %u of %u items received", total, PRODUCERS * PER_PRODUCER);
        assert_int_equal(n, 1);
        wakeups++;
        eng_group_inbox_ack(&q);
        for (struct eng_group_node *nd; (nd = eng_group_inbox_pop(&q)) != NULL;) {
            struct item *it = (struct item *)nd;
            assert_true(it->producer < PRODUCERS);
            if (it->seq != next[it->producer])
                fail_msg("producer %u: got item %u, expected %u", it->producer, it->seq,
                         next[it->producer]);
            next[it->producer]++;
            total++;
        }
    }
    for (unsigned i = 0; i < PRODUCERS; i++) {
        void *ret;
        assert_int_equal(pthread_join(th[i], &ret), 0);
        assert_null(ret);
        assert_int_equal(next[i], PER_PRODUCER);
        free(p[i].items);
    }
    assert_null(eng_group_inbox_pop(&q));
    assert_int_equal(atomic_load(&q.count), 0);
    assert_true(wakeups >= 1);
    eng_group_inbox_destroy(&q);
}

/* A bounded push refuses at the limit (nothing pushed) and takes again once the
 * consumer popped; an unbounded push ignores the limit. */
static void test_inbox_bound(void **state)
{
    (void)state;
    struct eng_group_inbox q;
    assert_int_equal(eng_group_inbox_init(&q), 0);
    struct item it[6] = { 0 };
    for (unsigned i = 0; i < 3; i++) {
        it[i].seq = i;
        assert_int_equal(eng_group_inbox_push(&q, &it[i].node, 3), 0);
    }
    assert_int_equal(eng_group_inbox_push(&q, &it[3].node, 3), -EAGAIN);
    it[4].seq = 4;
    assert_int_equal(eng_group_inbox_push(&q, &it[4].node, 0), 0); /* unbounded */
    assert_int_equal(atomic_load(&q.count), 4);
    eng_group_inbox_ack(&q);
    struct item *got = (struct item *)eng_group_inbox_pop(&q);
    assert_ptr_equal(got, &it[0]);
    it[5].seq = 5;
    assert_int_equal(eng_group_inbox_push(&q, &it[5].node, 4), 0); /* room again */
    unsigned want[] = { 1, 2, 4, 5 };
    for (unsigned i = 0; i < 4; i++) {
        got = (struct item *)eng_group_inbox_pop(&q);
        assert_non_null(got);
        assert_int_equal(got->seq, want[i]);
    }
    assert_null(eng_group_inbox_pop(&q));
    eng_group_inbox_destroy(&q);
}

/* ---- sharding ----------------------------------------------------------------------------- */

static struct eng_group_config base_config(struct queue_spool *sp, const char *dir, unsigned n)
{
    return (struct eng_group_config){
        .spool = sp,
        .spool_dir = dir,
        .nworkers = n,
        .tls = tls,
        .worker = { .helo_name = "client.floormta.test",
                    .connect_timeout_ms = 2000,
                    .reply_timeout_ms = 2000 },
    };
}

static void never_done(void *arg, queue_id_t id, int res)
{
    (void)arg, (void)id, (void)res;
    fail_msg("done ran for a refused enqueue");
}

static void test_shard_stable(void **state)
{
    (void)state;
    /* Published FNV-1a 64 vectors: the hash must never change (it places messages). */
    assert_true(eng_group_hash("") == 0xcbf29ce484222325ull);
    assert_true(eng_group_hash("a") == 0xaf63dc4c8601ec8cull);
    assert_true(eng_group_hash("foobar") == 0x85944171f73967e8ull);
    assert_true(eng_group_hash("Example.COM") == eng_group_hash("example.com"));
    assert_true(eng_group_hash("example.com") != eng_group_hash("example.net"));

    char dir[256];
    snprintf(dir, sizeof(dir), "%s/spool-shard", work);
    struct queue_spool_config scfg = { .dir = dir, .min_free_bytes = 1 };
    struct queue_spool *sp;
    assert_int_equal(queue_spool_open(&scfg, &sp), 0);
    struct eng_group_config cfg = base_config(sp, NULL, 3);
    struct eng_group *g;
    assert_int_equal(eng_group_new(&cfg, &g), 0);
    assert_int_equal(eng_group_nworkers(g), 3);
    unsigned hits[3] = { 0 };
    for (unsigned i = 0; i < 300; i++) {
        char d[64];
        snprintf(d, sizeof(d), "d%u.example.org", i);
        unsigned s = eng_group_shard_of(g, d);
        assert_int_equal(s, eng_group_hash(d) % 3);
        assert_int_equal(s, eng_group_shard_of(g, d)); /* same answer every time */
        hits[s]++;
    }
    for (unsigned i = 0; i < 3; i++)
        assert_true(hits[i] > 50); /* spread, not all on one worker */
    /* Not started: nothing can be enqueued. */
    struct queue_envelope *env = queue_envelope_alloc(1);
    snprintf(env->domain, sizeof(env->domain), "example.org");
    assert_int_equal(eng_group_enqueue(g, env, "x", 1, never_done, NULL), -EINVAL);
    queue_envelope_free(env);
    struct eng_group_config bad = base_config(sp, NULL, ENG_GROUP_MAX_WORKERS + 1);
    struct eng_group *g2 = NULL;
    assert_int_equal(eng_group_new(&bad, &g2), -EINVAL);
    eng_group_stop_and_free(g); /* never started: no thread to stop */
    queue_spool_close(sp);
}

/* ---- enqueue from a thread that is no worker ---------------------------------------------- */

#define NMSG 40

struct done_rec {
    atomic_uint calls;
    int res;
    queue_id_t id;
    int worker; /* from the thread's name, floormta-w<i> */
};

static struct done_rec recs[NMSG];

static void on_done(void *arg, queue_id_t id, int res)
{
    struct done_rec *r = arg;
    char name[16] = "";
    pthread_getname_np(pthread_self(), name, sizeof(name));
    r->worker = strncmp(name, "floormta-w", 10) == 0 ? atoi(name + 10) : -1;
    r->res = res;
    r->id = id;
    atomic_fetch_add(&r->calls, 1);
}

static const char body[] = "From: a@sender.floormta.test\r\nSubject: t\r\n\r\nhello\r\n";

static void msg_domain(unsigned i, char *out, size_t cap)
{
    snprintf(out, cap, "d%u.nowhere.test", i);
}

static void *inject(void *arg)
{
    struct eng_group *g = arg;
    struct queue_envelope *env = queue_envelope_alloc(1);
    if (!env)
        return (void *)1;
    snprintf(env->sender, sizeof(env->sender), "a@sender.floormta.test");
    for (unsigned i = 0; i < NMSG; i++) {
        msg_domain(i, env->domain, sizeof(env->domain));
        snprintf(env->rcpts[0].addr, sizeof(env->rcpts[0].addr), "r@%s", env->domain);
        int rc;
        while ((rc = eng_group_enqueue(g, env, body, sizeof(body) - 1, on_done, &recs[i])) ==
               -EAGAIN)
            sched_yield(); /* back-pressure: try again */
        if (rc != 0)
            return (void *)2;
    }
    queue_envelope_free(env);
    return NULL;
}

static void wait_total(struct eng_group *g, size_t field, uint64_t want, unsigned ms)
{
    uint64_t end = now_ms() + ms;
    for (;;) {
        struct eng_group_stats s;
        eng_group_stats(g, &s);
        uint64_t v = *(const uint64_t *)((const char *)&s.total + field);
        if (v >= want)
            return;
        if (now_ms() > end)
            fail_msg("group stats field at %zu = %llu, wanted %llu", field, (unsigned long long)v,
                     (unsigned long long)want);
        usleep(10 * 1000);
    }
}

static int count_deferred_dns(void *arg, const struct queue_envelope *env)
{
    unsigned *n = arg;
    if (env->nrcpts == 1 && env->rcpts[0].state == QUEUE_RCPT_DEFERRED &&
        env->rcpts[0].last.kind == QUEUE_RESULT_DNS && env->rcpts[0].last.code / 100 == 4)
        (*n)++;
    return 0;
}

static void test_enqueue_foreign_thread(void **state)
{
    (void)state;
    /* A DNS server that never answers: a bound UDP socket nobody reads. */
    int dns_fd = socket(AF_INET, SOCK_DGRAM, 0);
    assert_true(dns_fd >= 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
    assert_int_equal(bind(dns_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(dns_fd, (struct sockaddr *)&sa, &sl), 0);
    char server[64];
    snprintf(server, sizeof(server), "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));

    char dir[256];
    snprintf(dir, sizeof(dir), "%s/spool-enqueue", work);
    struct queue_spool_config scfg = { .dir = dir, .min_free_bytes = 1 };
    struct queue_spool *sp;
    assert_int_equal(queue_spool_open(&scfg, &sp), 0);
    struct eng_group_config cfg = base_config(sp, dir, 2);
    cfg.dns = (struct dns_config){ .servers = server, .timeout_ms = 200, .tries = 1 };
    cfg.worker.retry = (struct queue_retry_config){ .first = 3600, .max_age = 86400 };
    cfg.inbox_max = 8; /* small: the injector meets back-pressure and retries */
    struct eng_group *g;
    assert_int_equal(eng_group_new(&cfg, &g), 0);
    assert_int_equal(eng_group_start(g), 0);

    memset(recs, 0, sizeof(recs));
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, inject, g), 0);
    void *ret;
    assert_int_equal(pthread_join(th, &ret), 0);
    assert_null(ret);
    wait_total(g, offsetof(struct eng_worker_stats, deferred), NMSG, 20000);

    unsigned per[2] = { 0 };
    for (unsigned i = 0; i < NMSG; i++) {
        char d[64];
        msg_domain(i, d, sizeof(d));
        unsigned owner = eng_group_shard_of(g, d);
        per[owner]++;
        assert_int_equal(atomic_load(&recs[i].calls), 1);
        assert_int_equal(recs[i].res, 0);
        assert_true(recs[i].id != 0);
        if (recs[i].worker != (int)owner) /* done runs on the owner's thread */
            fail_msg("message %u (%s): done on worker %d, owner %u", i, d, recs[i].worker, owner);
    }
    assert_true(per[0] > 0 && per[1] > 0);
    for (unsigned i = 0; i < 2; i++) {
        struct eng_group_worker_stats ws;
        assert_int_equal(eng_group_worker_stats(g, i, &ws), 0);
        assert_int_equal(ws.w.enqueued, per[i]);
        assert_int_equal(ws.w.attempts, per[i]);
        assert_int_equal(ws.w.deferred, per[i]);
        assert_int_equal(ws.w.handed, 0);
        assert_int_equal(ws.w.errors, 0);
        assert_int_equal(ws.state, ENG_GROUP_W_RUNNING);
    }
    assert_int_equal(eng_group_worker_stats(g, 2, &(struct eng_group_worker_stats){ 0 }), -EINVAL);
    eng_group_stop_and_free(g);
    close(dns_fd);

    /* Every message is in the spool, deferred on the DNS tempfail, persisted. */
    queue_spool_close(sp);
    assert_int_equal(queue_spool_open(&scfg, &sp), 0);
    unsigned n = 0;
    struct queue_recover_stats rs;
    assert_int_equal(queue_spool_recover(sp, count_deferred_dns, &n, &rs), 0);
    assert_int_equal(rs.messages, NMSG);
    assert_int_equal(n, NMSG);
    queue_spool_close(sp);
}

/* ---- capability cache files --------------------------------------------------------------- */

static bool exists(const char *dir, const char *name)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

/* A file from an earlier run with more workers (capcache.7) is loaded by every worker
 * and then removed; at stop each worker saves its own file, which holds the entry. */
static void test_capcache_files(void **state)
{
    (void)state;
    char dir[256], path[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/spool-cap", work);
    struct queue_spool_config scfg = { .dir = dir, .min_free_bytes = 1 };
    struct queue_spool *sp;
    assert_int_equal(queue_spool_open(&scfg, &sp), 0);
    int64_t now = (int64_t)time(NULL);
    struct eng_capcache *c;
    assert_int_equal(eng_capcache_new(NULL, &c), 0);
    struct tls_verdict v;
    tls_verdict_clear(&v);
    v.reason = TLS_REASON_VERSION_BELOW_FLOOR;
    assert_int_equal(eng_capcache_record(c, "mx1.old.test", 25, &v, now), 0);
    snprintf(path, sizeof(path), "%s/capcache.7", dir);
    assert_int_equal(eng_capcache_save(c, path, now), 1);
    eng_capcache_free(c);

    struct eng_group_config cfg = base_config(sp, dir, 2);
    cfg.dns = (struct dns_config){ .servers = "127.0.0.1:9", .timeout_ms = 200, .tries = 1 };
    cfg.capcache_save_s = 1;
    struct eng_group *g;
    assert_int_equal(eng_group_new(&cfg, &g), 0);
    assert_int_equal(eng_group_start(g), 0);
    assert_false(exists(dir, "capcache.7"));
    for (unsigned i = 0; i < 2; i++) {
        struct eng_group_worker_stats ws;
        assert_int_equal(eng_group_worker_stats(g, i, &ws), 0);
        assert_int_equal(ws.capcache_loaded, 1);
        assert_int_equal(ws.capcache_entries, 1);
        assert_int_equal(ws.capcache_saves, 0);
    }
    /* The periodic save, from each worker's own loop timer, while the group runs. */
    uint64_t end = now_ms() + 10000;
    for (unsigned i = 0; i < 2; i++) {
        struct eng_group_worker_stats ws;
        do {
            usleep(20 * 1000);
            assert_int_equal(eng_group_worker_stats(g, i, &ws), 0);
        } while (ws.capcache_saves == 0 && now_ms() < end);
        assert_true(ws.capcache_saves >= 1);
        assert_int_equal(ws.state, ENG_GROUP_W_RUNNING);
        char name[32];
        snprintf(name, sizeof(name), "capcache.%u", i);
        assert_true(exists(dir, name));
    }
    eng_group_stop_and_free(g);
    queue_spool_close(sp);

    for (unsigned i = 0; i < 2; i++) {
        char name[32];
        snprintf(name, sizeof(name), "capcache.%u", i);
        assert_true(exists(dir, name));
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        assert_int_equal(eng_capcache_new(NULL, &c), 0);
        struct eng_capcache_load_result res;
        assert_int_equal(eng_capcache_load(c, path, now, NULL, NULL, &res), 0);
        assert_int_equal(res.loaded, 1);
        assert_int_equal(eng_capcache_check(c, "mx1.old.test", 25, now, NULL),
                         ENG_CAPCACHE_BLOCKED);
        eng_capcache_free(c);
    }
}

/* ---- fixture ------------------------------------------------------------------------------ */

static int setup(void **state)
{
    (void)state;
    return live_pki_setup(work, "mx.floormta.test", &tls);
}

static int teardown(void **state)
{
    (void)state;
    return live_pki_teardown(work, tls);
}

int main(void)
{
    struct eng_loop *probe = NULL;
    if (eng_loop_new(NULL, &probe) == ENG_ERR_URING) {
        fprintf(stderr, "io_uring is not available: skipped\n");
        return 77;
    }
    eng_loop_free(probe);
    eng_log_set_level(getenv("GROUP_DEBUG") ? ENG_LOG_DEBUG : ENG_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inbox_contention), cmocka_unit_test(test_inbox_bound),
        cmocka_unit_test(test_shard_stable),     cmocka_unit_test(test_enqueue_foreign_thread),
        cmocka_unit_test(test_capcache_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
