/*
 * tests/engine/deliver_fixture.h — what the engine's live delivery tests share beyond the
 * sink (sink_fixture.h, included here): an engine env (loop, resolver against the test's
 * dnsmasq, and the caches and connection pool a test asks for), a delivery attempt's
 * report kept past its callback, running the loop until it is done, a one-message
 * envelope, the delivery-log line parsed and its string fields asserted, a worker on its
 * own env and spool (the spool helpers also serve the group test), and main() with the
 * cmocka group set-up of the test PKI and dnsmasq.
 * Header-only (each test is its own executable). Include after <cmocka.h>.
 */
#ifndef FLOORMTA_TESTS_ENGINE_DELIVER_FIXTURE_H
#define FLOORMTA_TESTS_ENGINE_DELIVER_FIXTURE_H

#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "engine/capcache.h"
#include "engine/connpool.h"
#include "engine/deliver.h"
#include "engine/dns_loop.h"
#include "engine/log.h"
#include "engine/loop.h"
#include "engine/worker.h"
#include "queue/queue.h"
#include "tests/dns/dnsmasq_fixture.h"
#include "tests/engine/sink_fixture.h"
#include "tls/tls.h"

/* This executable's client context (the floor, trusting the test PKI's root) and its
 * dnsmasq: made by live_main's group set-up (or by a test's own). */
__attribute__((unused)) static struct tls_ctx *live_tls;
__attribute__((unused)) static struct dnsq live_dns;

/* The monotonic clock in milliseconds. */
__attribute__((unused)) static uint64_t live_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- one engine: loop, resolver, and what the test asks for ------------------------------- */

/* Which optional parts an env gets. */
struct live_env_config {
    bool capcache;                              /* an eng_capcache (defaults) */
    bool tls_cache;                             /* a tls_cache of 64 sessions */
    bool pool;                                  /* an eng_connpool on the env's loop */
    const struct eng_connpool_config *pool_cfg; /* its limits (loop is set); NULL: defaults */
};

struct live_env {
    struct eng_loop *loop;
    struct eng_dns *dns;
    struct eng_capcache *cap;  /* NULL unless asked for */
    struct tls_cache *tcache;  /* NULL unless asked for */
    struct eng_connpool *pool; /* NULL unless asked for */
    uint16_t port;             /* the receivers' port (0: 25) */
};

/* A new loop, a resolver asking live_dns (1 s, two tries), and the parts cfg asks for;
 * the receivers listen on port. */
__attribute__((unused)) static void live_env_init(struct live_env *e, uint16_t port,
                                                  const struct live_env_config *cfg)
{
    memset(e, 0, sizeof(*e));
    assert_int_equal(eng_loop_new(NULL, &e->loop), 0);
    struct dns_config dcfg = { .servers = live_dns.server, .timeout_ms = 1000, .tries = 2 };
    assert_int_equal(eng_dns_new(e->loop, &dcfg, &e->dns), 0);
    if (cfg->capcache)
        assert_int_equal(eng_capcache_new(NULL, &e->cap), 0);
    if (cfg->tls_cache)
        assert_int_equal(tls_cache_new(64, &e->tcache), 0);
    if (cfg->pool) {
        struct eng_connpool_config c =
                cfg->pool_cfg ? *cfg->pool_cfg : (struct eng_connpool_config){ 0 };
        c.loop = e->loop;
        assert_int_equal(eng_connpool_new(&c, &e->pool), 0);
    }
    e->port = port;
}

/* Frees what live_env_init made (the pool first: it QUITs its connections on the loop). */
__attribute__((unused)) static void live_env_free(struct live_env *e)
{
    if (e->pool)
        eng_connpool_free(e->pool);
    eng_dns_free(e->dns);
    eng_loop_free(e->loop);
    if (e->cap)
        eng_capcache_free(e->cap);
    if (e->tcache)
        tls_cache_free(e->tcache);
}

/* A delivery attempt's configuration on e (its caches and pool, NULL where it has none)
 * with live_tls; the rest (policy, sources, ...) is the caller's to add. */
__attribute__((unused)) static struct eng_deliver_config
live_deliver_config(const struct live_env *e)
{
    struct eng_deliver_config cfg = {
        .loop = e->loop,
        .dns = e->dns,
        .tls = live_tls,
        .tls_cache = e->tcache,
        .capcache = e->cap,
        .pool = e->pool,
        .helo_name = "client.floormta.test",
        .port = e->port,
        .connect_timeout_ms = 5000,
        .reply_timeout_ms = 5000,
    };
    return cfg;
}

/* ---- one attempt -------------------------------------------------------------------------- */

/* What every attempt sends. */
__attribute__((unused)) static const char live_body[] =
        "From: a@sender.test\r\nSubject: t\r\n\r\nhello\r\n";

/* A report kept past its callback: rep.env and rep.log_json point at the copies here. */
struct live_outcome {
    bool done;
    struct eng_deliver_report rep;
    struct queue_envelope *env; /* the envelope after the attempt */
    char *json;                 /* the delivery-log line */
};

/* eng_deliver_done_fn for a struct live_outcome (arg); an outcome reports once. */
__attribute__((unused)) static void live_on_done(void *arg, const struct eng_deliver_report *rep)
{
    struct live_outcome *o = arg;
    assert_false(o->done);
    o->done = true;
    o->rep = *rep;
    o->env = queue_envelope_dup(rep->env);
    o->json = strdup(rep->log_json);
    o->rep.env = o->env;
    o->rep.log_json = o->json;
}

__attribute__((unused)) static void live_outcome_free(struct live_outcome *o)
{
    queue_envelope_free(o->env);
    free(o->json);
}

/* Starts one attempt of qe (borrowed: the attempt copies it) with live_body under cfg,
 * reporting into o (cleared first). */
__attribute__((unused)) static void live_start(const struct eng_deliver_config *cfg,
                                               const struct queue_envelope *qe,
                                               struct live_outcome *o)
{
    memset(o, 0, sizeof(*o));
    assert_int_equal(eng_deliver_start(cfg, qe, live_body, sizeof(live_body) - 1, live_on_done, o),
                     0);
}

/* Runs loop until *done, for at most ms; fails the test if it is not done by then. */
__attribute__((unused)) static void live_run_until(struct eng_loop *loop, const bool *done,
                                                   unsigned ms)
{
    uint64_t end = live_now_ms() + ms;
    while (!*done && live_now_ms() < end)
        assert_true(eng_loop_run_once(loop, 20) >= 0);
    assert_true(*done);
}

/* A message (id 0x1234, from a@sender.test, live_body's size) for domain, to the n local
 * parts that follow (const char *), each @domain and pending. Free it. */
__attribute__((unused)) static struct queue_envelope *live_envelope(const char *domain, unsigned n,
                                                                    ...)
{
    struct queue_envelope *qe = queue_envelope_alloc(n);
    assert_non_null(qe);
    qe->id = 0x1234;
    snprintf(qe->sender, sizeof(qe->sender), "a@sender.test");
    snprintf(qe->domain, sizeof(qe->domain), "%s", domain);
    qe->content_size = sizeof(live_body) - 1;
    va_list ap;
    va_start(ap, n);
    for (unsigned i = 0; i < n; i++) {
        snprintf(qe->rcpts[i].addr, sizeof(qe->rcpts[i].addr), "%s@%s", va_arg(ap, const char *),
                 domain);
        qe->rcpts[i].state = QUEUE_RCPT_PENDING;
    }
    va_end(ap);
    return qe;
}

/* ---- the delivery-log line ---------------------------------------------------------------- */

/* The outcome's log line, parsed (json_decref it); fails the test if it does not parse. */
__attribute__((unused)) static json_t *live_json(const struct live_outcome *o)
{
    json_error_t jerr;
    json_t *j = json_loads(o->json, 0, &jerr);
    if (!j)
        fail_msg("delivery log line does not parse: %s: %s", jerr.text, o->json);
    return j;
}

/* The string at key of the JSON object obj; fails the test if it is not a string. */
__attribute__((unused)) static const char *live_json_str(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        fail_msg("delivery log field %s is not a string", key);
    return json_string_value(v);
}

/* The log line's string at key (or at key.subkey, subkey not NULL) is want. */
__attribute__((unused)) static void live_assert_json_str(const struct live_outcome *o,
                                                         const char *key, const char *subkey,
                                                         const char *want)
{
    json_t *j = live_json(o);
    json_t *v = json_object_get(j, key);
    if (subkey)
        v = json_object_get(v, subkey);
    if (!json_is_string(v) || strcmp(json_string_value(v), want) != 0)
        fail_msg("%s%s%s is not \"%s\" in %s", key, subkey ? "." : "", subkey ? subkey : "", want,
                 o->json);
    json_decref(j);
}

__attribute__((unused)) static void live_assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("\"%s\" not in \"%s\"", needle, hay);
}

/* ---- a spool, and one worker on its own env and spool ------------------------------------- */

__attribute__((unused)) static void live_spool_open(const char *dir, struct queue_spool **spool)
{
    struct queue_spool_config scfg = { .dir = dir, .min_free_bytes = 1 };
    assert_int_equal(queue_spool_open(&scfg, spool), 0);
}

__attribute__((unused)) static int live_count_one(void *arg, const struct queue_envelope *env)
{
    (void)env;
    (*(unsigned *)arg)++;
    return 0;
}

/* How many unfinished messages a fresh recovery of the spool in dir finds (nothing else
 * may be using *spool): closes *spool and leaves it open again, recovered. */
__attribute__((unused)) static unsigned live_spool_count(const char *dir,
                                                         struct queue_spool **spool)
{
    queue_spool_close(*spool);
    live_spool_open(dir, spool);
    unsigned n = 0;
    struct queue_recover_stats rs;
    assert_int_equal(queue_spool_recover(*spool, live_count_one, &n, &rs), 0);
    return n;
}

struct live_rig {
    struct live_env e; /* with a capability cache */
    struct queue_spool *spool;
    struct eng_worker *w;
    struct queue_retry_config retry; /* the worker's */
    char dir[PATH_MAX];
};

/* Makes and starts r's worker on its env and spool. */
__attribute__((unused)) static void live_rig_worker_open(struct live_rig *r)
{
    struct eng_worker_config cfg = {
        .loop = r->e.loop,
        .spool = r->spool,
        .dns = r->e.dns,
        .tls = live_tls,
        .capcache = r->e.cap,
        .retry = r->retry,
        .helo_name = "client.floormta.test",
        .reporting_mta = "mta.floormta.test",
        .port = r->e.port,
        .connect_timeout_ms = 5000,
        .reply_timeout_ms = 5000,
    };
    assert_int_equal(eng_worker_new(&cfg, &r->w), 0);
    assert_int_equal(eng_worker_start(r->w), 0);
}

/* Opens r: a spool in work/name, an env (with a capability cache), and a started
 * worker delivering to port with live_tls and retry (NULL: the defaults). */
__attribute__((unused)) static void live_rig_open(struct live_rig *r, const char *work,
                                                  const char *name, uint16_t port,
                                                  const struct queue_retry_config *retry)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->dir, sizeof(r->dir), "%s/%s", work, name);
    if (retry)
        r->retry = *retry;
    live_env_init(&r->e, port, &(struct live_env_config){ .capcache = true });
    live_spool_open(r->dir, &r->spool);
    live_rig_worker_open(r);
}

/* Frees r's worker (if still there): the spool and env stay. */
__attribute__((unused)) static void live_rig_stop(struct live_rig *r)
{
    eng_worker_free(r->w);
    r->w = NULL;
}

/* Frees the worker (if still there), the env and the spool. */
__attribute__((unused)) static void live_rig_close(struct live_rig *r)
{
    live_rig_stop(r);
    live_env_free(&r->e);
    queue_spool_close(r->spool);
}

__attribute__((unused)) static struct eng_worker_stats live_rig_stats(const struct live_rig *r)
{
    struct eng_worker_stats s;
    eng_worker_stats(r->w, &s);
    return s;
}

/* Runs r's loop until field of its worker's stats reaches want (or fails after ms). */
#define LIVE_RIG_RUN_UNTIL(r, field, want, ms)                                                 \
    do {                                                                                       \
        uint64_t end_ = live_now_ms() + (ms);                                                  \
        while (live_rig_stats(r).field < (want) && live_now_ms() < end_)                       \
            assert_true(eng_loop_run_once((r)->e.loop, 10) >= 0);                              \
        if (live_rig_stats(r).field < (want))                                                  \
            fail_msg("worker stats " #field "=%llu, wanted %llu",                              \
                     (unsigned long long)live_rig_stats(r).field, (unsigned long long)(want)); \
    } while (0)

/* What eng_worker_enqueue reported. */
struct live_queued {
    unsigned done;
    queue_id_t id;
    int res;
};

/* eng_worker_enqueue's callback for a struct live_queued (arg). */
__attribute__((unused)) static void live_on_queued(void *arg, queue_id_t id, int res)
{
    struct live_queued *q = arg;
    q->done++;
    q->id = id;
    q->res = res;
}

/* Runs r's loop until the message of q is durable (5 s at most); returns its id. */
__attribute__((unused)) static queue_id_t live_rig_await_queued(struct live_rig *r,
                                                                const struct live_queued *q)
{
    uint64_t end = live_now_ms() + 5000;
    while (!q->done && live_now_ms() < end)
        assert_true(eng_loop_run_once(r->e.loop, 50) >= 0);
    assert_int_equal(q->done, 1);
    assert_int_equal(q->res, 0);
    assert_true(q->id != 0);
    return q->id;
}

/* ---- main() and the cmocka group set-up --------------------------------------------------- */

/* Logs at warn level, or at debug level when the variable debug_env is set. */
__attribute__((unused)) static void live_log_level(const char *debug_env)
{
    eng_log_set_level(getenv(debug_env) ? ENG_LOG_DEBUG : ENG_LOG_WARN);
}

/* main()'s start: 0, or 77 when the live tests cannot run here (live_preflight); seeds
 * rand() (the sinks' random ports) and sets the log level (live_log_level). */
__attribute__((unused)) static int live_main_init(const char *debug_env)
{
    int rc = live_preflight();
    if (rc != 0)
        return rc;
    srand((unsigned)getpid() ^ (unsigned)time(NULL));
    live_log_level(debug_env);
    return 0;
}

/* What a test executable sets up once for its tests (the cmocka group set-up): the
 * scratch directory work with the test PKI for mx_name and live_tls trusting its root,
 * then setup (if any), then live_dns serving zone. The teardown stops dnsmasq, runs
 * teardown (if any), frees live_tls and removes work. */
struct live_suite {
    const char *debug_env; /* see live_log_level */
    char *work;            /* a mkdtemp template, rewritten */
    const char *mx_name;
    const char *zone;       /* read after setup (which may write it) */
    bool dns_quiet;         /* dnsmasq without its query log (struct dnsq quiet) */
    int (*setup)(void);     /* 0 or -1; NULL: nothing more */
    void (*teardown)(void); /* NULL: nothing more */
};

__attribute__((unused)) static const struct live_suite *live_suite_running;

__attribute__((unused)) static int live_suite_setup(void **state)
{
    (void)state;
    const struct live_suite *s = live_suite_running;
    if (live_pki_setup(s->work, s->mx_name, &live_tls) != 0)
        return -1;
    if (s->setup && s->setup() != 0)
        return -1;
    if (dnsq_init(&live_dns) != 0)
        return -1;
    if (s->dns_quiet)
        live_dns.quiet = true;
    if (dnsq_start(&live_dns, s->zone) != 0)
        return -1;
    return 0;
}

__attribute__((unused)) static int live_suite_teardown(void **state)
{
    (void)state;
    const struct live_suite *s = live_suite_running;
    dnsq_stop(&live_dns);
    if (s->teardown)
        s->teardown();
    return live_pki_teardown(s->work, live_tls);
}

/* main(): live_main_init, then the n tests as one cmocka group under s's set-up. */
__attribute__((unused)) static int live_main_n(const struct live_suite *s,
                                               const struct CMUnitTest *tests, size_t n)
{
    int rc = live_main_init(s->debug_env);
    if (rc != 0)
        return rc;
    live_suite_running = s;
    return _cmocka_run_group_tests("tests", tests, n, live_suite_setup, live_suite_teardown);
}

/* main() over an array of tests; see live_main_n. */
#define live_main(s, tests) live_main_n((s), (tests), sizeof(tests) / sizeof((tests)[0]))

#endif /* FLOORMTA_TESTS_ENGINE_DELIVER_FIXTURE_H */
