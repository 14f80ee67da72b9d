/*
 * tests/engine/test_worker_admin.c — the operator's queue tools (engine/worker.h,
 * "administration") driven from a thread that is no worker through eng_group_call, on a
 * two-worker group whose resolver never answers (every message stays deferred on a DNS
 * tempfail): summary and list per worker, flush by domain and by id (a new attempt
 * follows), bounce by id (a FAILED DSN to the sender, the message removed from the
 * spool), delete by domain (no DSN), -EBUSY for a message in flight, NOT_FOUND for an
 * unknown id, and eng_group_call's own argument checks. Exit 77 without io_uring.
 */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/group.h"
#include "engine/log.h"
#include "engine/loop.h"
#include "queue/queue.h"
#include "tests/engine/sink_fixture.h"
#include "tls/tls.h"

#define NDOM 6

static char work[] = "/tmp/floormta-admin-XXXXXX";
static struct tls_ctx *tls;
static const char body[] = "From: a@sender.floormta.test\r\nSubject: t\r\n\r\nhello\r\n";

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void dom(unsigned i, char *out, size_t cap)
{
    snprintf(out, cap, "a%u.nowhere.test", i);
}

struct done_rec {
    atomic_uint calls;
    queue_id_t id;
};

static struct done_rec recs[NDOM];

static void on_done(void *arg, queue_id_t id, int res)
{
    struct done_rec *r = arg;
    r->id = res == 0 ? id : 0;
    atomic_fetch_add(&r->calls, 1);
}

/* Sums a field of the workers' published stats. */
static uint64_t total(struct eng_group *g, size_t field)
{
    struct eng_group_stats s;
    eng_group_stats(g, &s);
    return *(const uint64_t *)((const char *)&s.total + field);
}

static void wait_total(struct eng_group *g, size_t field, uint64_t want)
{
    uint64_t end = now_ms() + 20000;
    while (total(g, field) < want) {
        if (now_ms() > end)
            fail_msg("stats field at %zu = %llu, wanted %llu", field,
                     (unsigned long long)total(g, field), (unsigned long long)want);
        usleep(10 * 1000);
    }
}

/* ---- what the calls do on the worker's thread --------------------------------------------- */

enum op { OP_SUMMARY, OP_LIST, OP_FLUSH, OP_BOUNCE, OP_DELETE, OP_FLUSH_THEN_BOUNCE };

struct call {
    enum op op;
    queue_id_t id;
    const char *domain;
    size_t limit;
    long rc;
    struct eng_worker_action_result res;
    /* OP_SUMMARY: totals; OP_LIST: the last listing's facts */
    uint64_t messages, deferred;
    unsigned listed;
    enum queue_rcpt_state rcpt_state;
    enum queue_result_kind rcpt_kind;
    char sender[QUEUE_ADDR_MAX + 1];
    bool list_busy;
};

static void on_summary(void *arg, const struct eng_worker_domain_summary *d)
{
    struct call *c = arg;
    c->messages += d->messages;
    c->deferred += d->deferred;
    assert_true(d->oldest_arrival > 0 && d->oldest_arrival != INT64_MAX);
    assert_int_equal(d->messages, d->ready + d->deferred + d->inflight);
}

static void on_listing(void *arg, const struct eng_worker_listing *m)
{
    struct call *c = arg;
    c->listed++;
    c->rcpt_state = m->env->rcpts[0].state;
    c->rcpt_kind = m->env->rcpts[0].last.kind;
    c->list_busy = m->busy;
    snprintf(c->sender, sizeof(c->sender), "%s", m->env->sender);
}

static void run(struct eng_worker *w, void *arg)
{
    struct call *c = arg;
    switch (c->op) {
    case OP_SUMMARY: c->rc = eng_worker_admin_summary(w, on_summary, c); break;
    case OP_LIST: c->rc = eng_worker_admin_list(w, c->domain, c->limit, on_listing, c); break;
    case OP_FLUSH: c->rc = eng_worker_admin_flush(w, c->id, c->domain, &c->res); break;
    case OP_BOUNCE: c->rc = eng_worker_admin_bounce(w, c->id, c->domain, &c->res); break;
    case OP_DELETE: c->rc = eng_worker_admin_delete(w, c->id, c->domain, &c->res); break;
    case OP_FLUSH_THEN_BOUNCE:
        /* The flush starts an attempt at once: the bounce then finds it in flight. */
        c->rc = eng_worker_admin_flush(w, c->id, NULL, &c->res);
        if (c->rc == 0)
            c->rc = eng_worker_admin_bounce(w, c->id, NULL, &c->res);
        break;
    }
}

static struct call call(struct eng_group *g, unsigned index, struct call c)
{
    assert_int_equal(eng_group_call(g, index, run, &c), 0);
    return c;
}

static struct call call_on_owner(struct eng_group *g, const char *domain, struct call c)
{
    return call(g, eng_group_shard_of(g, domain), c);
}

static int count_one(void *arg, const struct queue_envelope *env)
{
    (void)env;
    ++*(unsigned *)arg;
    return 0;
}

/* ---- the test -------------------------------------------------------------------------------- */

static void test_admin(void **state)
{
    (void)state;
    int dns_fd = socket(AF_INET, SOCK_DGRAM, 0); /* a DNS server that never answers */
    assert_true(dns_fd >= 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
    assert_int_equal(bind(dns_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(dns_fd, (struct sockaddr *)&sa, &sl), 0);
    char server[64];
    snprintf(server, sizeof(server), "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));

    char dir[256];
    snprintf(dir, sizeof(dir), "%s/spool", work);
    struct queue_spool_config scfg = { .dir = dir, .min_free_bytes = 1 };
    struct queue_spool *sp;
    assert_int_equal(queue_spool_open(&scfg, &sp), 0);
    struct eng_group_config cfg = {
        .spool = sp,
        .nworkers = 2,
        .tls = tls,
        .dns = { .servers = server, .timeout_ms = 200, .tries = 1 },
        .worker = { .helo_name = "client.floormta.test",
                    .retry = { .first = 3600, .max_age = 86400 } },
    };
    struct eng_group *g;
    assert_int_equal(eng_group_new(&cfg, &g), 0);
    assert_int_equal(eng_group_call(g, 0, run, NULL), -EINVAL); /* not started */
    assert_int_equal(eng_group_start(g), 0);
    assert_int_equal(eng_group_call(g, 2, run, NULL), -EINVAL);
    assert_int_equal(eng_group_call(g, 0, NULL, NULL), -EINVAL);

    struct queue_envelope *env = queue_envelope_alloc(1);
    snprintf(env->sender, sizeof(env->sender), "a@sender.floormta.test");
    for (unsigned i = 0; i < NDOM; i++) {
        dom(i, env->domain, sizeof(env->domain));
        snprintf(env->rcpts[0].addr, sizeof(env->rcpts[0].addr), "r@%s", env->domain);
        assert_int_equal(eng_group_enqueue(g, env, body, sizeof(body) - 1, on_done, &recs[i]), 0);
    }
    queue_envelope_free(env);
    wait_total(g, offsetof(struct eng_worker_stats, deferred), NDOM);
    for (unsigned i = 0; i < NDOM; i++)
        assert_true(recs[i].id != 0);

    /* Summary over both workers: every message deferred. */
    uint64_t msgs = 0, deferred = 0;
    for (unsigned i = 0; i < 2; i++) {
        struct call c = call(g, i, (struct call){ .op = OP_SUMMARY });
        assert_true(c.rc >= 1); /* domains on this worker */
        msgs += c.messages;
        deferred += c.deferred;
    }
    assert_int_equal(msgs, NDOM);
    assert_int_equal(deferred, NDOM);

    /* List one domain: its message, the recipient deferred on DNS. */
    char d[64];
    dom(0, d, sizeof(d));
    struct call c = call_on_owner(g, d, (struct call){ .op = OP_LIST, .domain = d, .limit = 10 });
    assert_int_equal(c.rc, 1);
    assert_int_equal(c.listed, 1);
    assert_int_equal(c.rcpt_state, QUEUE_RCPT_DEFERRED);
    assert_int_equal(c.rcpt_kind, QUEUE_RESULT_DNS);
    assert_string_equal(c.sender, "a@sender.floormta.test");
    assert_false(c.list_busy);
    /* limit 0: counted, not listed */
    c = call_on_owner(g, d, (struct call){ .op = OP_LIST, .domain = d, .limit = 0 });
    assert_int_equal(c.rc, 1);
    assert_int_equal(c.listed, 0);

    /* Flush by domain, then by id: each is tried again now. */
    uint64_t attempts = total(g, offsetof(struct eng_worker_stats, attempts));
    dom(1, d, sizeof(d));
    c = call_on_owner(g, d, (struct call){ .op = OP_FLUSH, .domain = d });
    assert_int_equal(c.rc, 0);
    assert_int_equal(c.res.matched, 1);
    assert_int_equal(c.res.done, 1);
    dom(2, d, sizeof(d));
    c = call_on_owner(g, d, (struct call){ .op = OP_FLUSH, .id = recs[2].id });
    assert_int_equal(c.rc, 0);
    assert_int_equal(c.res.done, 1);
    wait_total(g, offsetof(struct eng_worker_stats, attempts), attempts + 2);
    wait_total(g, offsetof(struct eng_worker_stats, deferred), NDOM + 2);

    /* In flight: a bounce answers busy and changes nothing. */
    dom(3, d, sizeof(d));
    c = call_on_owner(g, d, (struct call){ .op = OP_FLUSH_THEN_BOUNCE, .id = recs[3].id });
    assert_int_equal(c.rc, -EBUSY);
    wait_total(g, offsetof(struct eng_worker_stats, deferred), NDOM + 3);

    /* An unknown id: not found (on either worker). */
    for (unsigned i = 0; i < 2; i++) {
        c = call(g, i, (struct call){ .op = OP_BOUNCE, .id = 0x1234 });
        assert_int_equal(c.rc, QUEUE_ERR_NOT_FOUND);
    }

    /* Bounce by id: a DSN to a@sender.floormta.test, the message removed. */
    dom(4, d, sizeof(d));
    c = call_on_owner(g, d, (struct call){ .op = OP_BOUNCE, .id = recs[4].id });
    assert_int_equal(c.rc, 0);
    assert_int_equal(c.res.done, 1);
    wait_total(g, offsetof(struct eng_worker_stats, admin_bounced), 1);
    assert_int_equal(total(g, offsetof(struct eng_worker_stats, dsns)), 1);
    assert_int_equal(total(g, offsetof(struct eng_worker_stats, bounced)), 1);
    c = call_on_owner(g, d, (struct call){ .op = OP_LIST, .domain = d, .limit = 10 });
    assert_int_equal(c.rc, 0);
    c = call_on_owner(
            g, "sender.floormta.test",
            (struct call){ .op = OP_LIST, .domain = "sender.floormta.test", .limit = 10 });
    assert_int_equal(c.rc, 1); /* the DSN, queued for the sender's domain */
    assert_string_equal(c.sender, "");

    /* Delete by domain: gone, and no DSN. */
    dom(5, d, sizeof(d));
    c = call_on_owner(g, d, (struct call){ .op = OP_DELETE, .domain = d });
    assert_int_equal(c.rc, 0);
    assert_int_equal(c.res.matched, 1);
    assert_int_equal(c.res.done, 1);
    wait_total(g, offsetof(struct eng_worker_stats, admin_deleted), 1);
    assert_int_equal(total(g, offsetof(struct eng_worker_stats, dsns)), 1);
    assert_int_equal(total(g, offsetof(struct eng_worker_stats, bounced)), 1);
    c = call_on_owner(g, d, (struct call){ .op = OP_DELETE, .domain = d });
    assert_int_equal(c.rc, 0);
    assert_int_equal(c.res.matched, 0);

    eng_group_stop_and_free(g);
    close(dns_fd);

    /* The spool agrees: NDOM - 2 messages and the DSN. */
    queue_spool_close(sp);
    assert_int_equal(queue_spool_open(&scfg, &sp), 0);
    struct queue_recover_stats rs;
    unsigned n = 0;
    assert_int_equal(queue_spool_recover(sp, count_one, &n, &rs), 0);
    assert_int_equal(n, NDOM - 2 + 1);
    assert_int_equal(rs.messages, NDOM - 2 + 1);
    queue_spool_close(sp);
}

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
    eng_log_set_level(getenv("ADMIN_DEBUG") ? ENG_LOG_DEBUG : ENG_LOG_WARN);
    const struct CMUnitTest tests[] = { cmocka_unit_test(test_admin) };
    return cmocka_run_group_tests(tests, setup, teardown);
}
