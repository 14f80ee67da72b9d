/*
 * engine/group.c — the worker pool's life cycle (new, start with the one spool recovery,
 * stop), sharding, eng_group_enqueue and the stats readers. The worker threads
 * themselves are group_worker.c; the inbox is group_inbox.c.
 *
 * Memory (STYLE point 7): the group, its strings and its per-worker contexts are
 * start-up allocations; an inbox message is control-plane (an injection, a DSN, a
 * recovered message) and is allocated per message, -ENOMEM to the caller.
 */
#include "engine/hash.h"
#include "engine/group_int.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/log.h"

#define GRP_DEFAULT_INBOX_MAX 4096

_Static_assert(sizeof(struct eng_group_worker_stats) % sizeof(uint64_t) == 0,
               "the published stats are 64-bit words");
_Static_assert(sizeof(struct eng_worker_stats) % sizeof(uint64_t) == 0,
               "eng_group_stats sums the worker's stats as 64-bit words");

/* ---- sharding ---------------------------------------------------------------------------- */

uint64_t eng_group_hash(const char *domain)
{
    return eng_hash_name(domain);
}

unsigned eng_group_shard_of(const struct eng_group *g, const char *domain)
{
    return (unsigned)(eng_group_hash(domain) % g->n);
}

unsigned eng_group_nworkers(const struct eng_group *g)
{
    return g->n;
}

/* ---- metrics -------------------------------------------------------------------------- */

_Static_assert(sizeof(struct eng_metrics) % sizeof(uint64_t) == 0,
               "the published metrics are 64-bit words");

void eng_group_metrics(const struct eng_group *g, struct eng_metrics *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < g->n; i++) {
        struct grp_worker *gw = &g->workers[i];
        uint64_t words[GRP_METRIC_WORDS];
        grp_seqlock_read(&gw->mseq, gw->mwords, words, GRP_METRIC_WORDS);
        struct eng_metrics m;
        memcpy(&m, words, sizeof(m));
        eng_metrics_add(out, &m);
    }
    out->enqueue_refused += atomic_load(&((struct eng_group *)g)->refused);
}

/* ---- new ------------------------------------------------------------------------------- */

static char *dup_or_null(const char *s, bool *failed)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *failed = true;
    return d;
}

static unsigned online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > ENG_GROUP_MAX_WORKERS ? ENG_GROUP_MAX_WORKERS : (unsigned)n;
}

static void group_free(struct eng_group *g)
{
    for (unsigned i = 0; g->workers && i < g->n; i++) {
        struct grp_worker *gw = &g->workers[i];
        if (gw->inbox.efd < 0)
            continue;
        /* Whatever is left: requests get QUEUE_ERR_CLOSING, hand-offs are durable. */
        for (struct eng_group_node *n; (n = eng_group_inbox_pop(&gw->inbox)) != NULL;)
            eng_group_msg_abandon((struct grp_msg *)n, QUEUE_ERR_CLOSING);
        eng_group_inbox_destroy(&gw->inbox);
        sem_destroy(&gw->ready);
    }
    free(g->workers);
    free(g->spool_dir);
    free(g->dns_servers);
    free(g->helo);
    free(g->mta);
    free(g);
}

int eng_group_new(const struct eng_group_config *cfg, struct eng_group **out)
{
    if (!cfg || !out || !cfg->spool || !cfg->tls || !cfg->worker.helo_name ||
        cfg->nworkers > ENG_GROUP_MAX_WORKERS || cfg->nservices > ENG_GROUP_MAX_SERVICES ||
        (cfg->nservices && !cfg->services))
        return -EINVAL;
    for (unsigned i = 0; i < cfg->nservices; i++)
        if (!cfg->services[i].start)
            return -EINVAL;
    struct eng_group *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    g->cfg = *cfg;
    for (unsigned i = 0; i < cfg->nservices; i++)
        g->svc[i] = cfg->services[i];
    g->cfg.services = g->svc;
    g->n = cfg->nworkers ? cfg->nworkers : online_cpus();
    if (!g->cfg.inbox_max)
        g->cfg.inbox_max = GRP_DEFAULT_INBOX_MAX;
    atomic_init(&g->refused, 0);
    bool failed = false;
    g->spool_dir = dup_or_null(cfg->spool_dir, &failed);
    g->dns_servers = dup_or_null(cfg->dns.servers, &failed);
    g->helo = dup_or_null(cfg->worker.helo_name, &failed);
    g->mta = dup_or_null(cfg->worker.reporting_mta, &failed);
    g->workers = calloc(g->n, sizeof(*g->workers));
    for (unsigned i = 0; g->workers && i < g->n; i++)
        g->workers[i].inbox.efd = -1; /* group_free skips what was not made */
    if (failed || !g->workers) {
        group_free(g);
        return -ENOMEM;
    }
    g->cfg.spool_dir = g->spool_dir;
    g->cfg.dns.servers = g->dns_servers;
    g->cfg.worker.helo_name = g->helo;
    g->cfg.worker.reporting_mta = g->mta;
    for (unsigned i = 0; i < g->n; i++) {
        struct grp_worker *gw = &g->workers[i];
        gw->g = g;
        gw->index = i;
        atomic_init(&gw->stop, false);
        atomic_init(&gw->seq, 0);
        for (size_t k = 0; k < GRP_STAT_WORDS; k++)
            atomic_init(&gw->words[k], 0);
        int rc = eng_group_inbox_init(&gw->inbox);
        if (rc == 0 && sem_init(&gw->ready, 0, 0) != 0)
            rc = -errno;
        if (rc != 0) {
            eng_group_inbox_destroy(&gw->inbox);
            group_free(g);
            return rc;
        }
    }
    *out = g;
    return 0;
}

/* ---- start ------------------------------------------------------------------------------- */

struct recover_ctx {
    struct eng_group *g;
    uint64_t *per_worker;
};

static int recover_one(void *arg, const struct queue_envelope *env)
{
    struct recover_ctx *rc = arg;
    struct queue_entry_info info;
    eng_worker_info_of(env, &info);
    struct grp_msg *m = eng_group_msg_adopt(&info, true);
    if (!m)
        return -ENOMEM;
    unsigned owner = eng_group_shard_of(rc->g, env->domain);
    eng_group_inbox_push(&rc->g->workers[owner].inbox, &m->node, 0);
    rc->per_worker[owner]++;
    return 0;
}

/* Removes capcache.<k> for k >= n: every worker has loaded it, and no worker saves it. */
static void remove_stale_caps(struct eng_group *g)
{
    DIR *d = opendir(g->spool_dir);
    if (!d)
        return;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        const char *s = de->d_name;
        if (strncmp(s, "capcache.", 9) != 0 || s[9] < '0' || s[9] > '9')
            continue;
        char *end;
        unsigned long k = strtoul(s + 9, &end, 10);
        if (*end != '\0' || k < g->n)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", g->spool_dir, s);
        if (unlink(path) != 0)
            eng_log(ENG_LOG_WARN, "group: cannot remove %s: %s", path, strerror(errno));
        else
            eng_log(ENG_LOG_INFO, "group: removed the stale %s", path);
    }
    closedir(d);
}

int eng_group_start(struct eng_group *g)
{
    if (!g || g->started || g->start_failed)
        return -EINVAL;
    g->start_failed = true; /* until every worker runs */
    uint64_t *per = calloc(g->n, sizeof(*per));
    if (!per)
        return -ENOMEM;
    struct recover_ctx rctx = { g, per };
    struct queue_recover_stats rs = { 0 };
    int rc = queue_spool_recover(g->cfg.spool, recover_one, &rctx, &rs);
    if (rc != 0) {
        free(per);
        eng_log(ENG_LOG_ERROR, "group: spool recovery failed: %s", queue_strerror(rc));
        return rc;
    }
    eng_log(ENG_LOG_INFO,
            "group: recovered messages=%llu finished=%llu quarantined=%llu incomplete=%llu "
            "workers=%u",
            (unsigned long long)rs.messages, (unsigned long long)rs.finished,
            (unsigned long long)rs.quarantined, (unsigned long long)rs.incomplete, g->n);
    for (unsigned i = 0; i < g->n; i++)
        eng_log(ENG_LOG_INFO, "group: worker=%u recovered=%llu", i, (unsigned long long)per[i]);
    free(per);
    /* The workers start with every signal blocked (a new thread inherits the mask):
     * process-directed signals (SIGTERM, SIGHUP, SIGINT) then go to the control
     * thread, which decides what they mean, and never land in a worker's loop. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (unsigned i = 0; i < g->n && rc == 0; i++) {
        struct grp_worker *gw = &g->workers[i];
        rc = -pthread_create(&gw->thread, NULL, eng_group_worker_main, gw);
        if (rc == 0)
            gw->thread_started = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    for (unsigned i = 0; i < g->n; i++) {
        struct grp_worker *gw = &g->workers[i];
        if (!gw->thread_started)
            continue;
        while (sem_wait(&gw->ready) != 0 && errno == EINTR)
            ;
        if (rc == 0 && gw->start_result != 0)
            rc = gw->start_result;
    }
    if (rc != 0)
        return rc;
    if (g->spool_dir)
        remove_stale_caps(g);
    g->started = true;
    g->start_failed = false;
    return 0;
}

/* ---- enqueue ------------------------------------------------------------------------------ */

int eng_group_enqueue(struct eng_group *g, const struct queue_envelope *env, const void *content,
                      size_t len, eng_group_done_fn done, void *arg)
{
    if (!g || !env || !done || (!content && len) || !g->started || env->domain[0] == '\0')
        return -EINVAL;
    struct grp_msg *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->kind = GRP_MSG_ENQUEUE;
    m->env = queue_envelope_dup(env);
    if (!m->env) {
        free(m);
        return -ENOMEM;
    }
    m->content = content;
    m->len = len;
    m->done = done;
    m->arg = arg;
    m->reply = eng_group_self(g);
    struct grp_worker *owner = &g->workers[eng_group_shard_of(g, env->domain)];
    int rc = eng_group_inbox_push(&owner->inbox, &m->node, g->cfg.inbox_max);
    if (rc != 0) {
        atomic_fetch_add(&g->refused, 1);
        queue_envelope_free(m->env);
        free(m);
    }
    return rc;
}

/* ---- cross-worker calls -------------------------------------------------------------------- */

/* How long the caller waits between looks at the target's published state: a worker
 * that stopped will never post, and the caller must not hang on it. */
#define GRP_CALL_POLL_NS 100000000L

static bool worker_gone(const struct eng_group *g, unsigned index)
{
    struct eng_group_worker_stats ws;
    eng_group_worker_stats(g, index, &ws);
    return ws.state == ENG_GROUP_W_STOPPED || ws.state == ENG_GROUP_W_FAILED;
}

int eng_group_call(struct eng_group *g, unsigned index, eng_group_call_fn fn, void *arg)
{
    if (!g || !fn || !g->started || index >= g->n)
        return -EINVAL;
    struct grp_worker *me = eng_group_self(g);
    if (me && me->index == index) {
        if (!me->worker)
            return -ESHUTDOWN;
        fn(me->worker, arg);
        return 0;
    }
    struct grp_call *c = calloc(1, sizeof(*c));
    struct grp_msg *m = calloc(1, sizeof(*m));
    if (!c || !m || sem_init(&c->done, 0, 0) != 0) {
        free(c);
        free(m);
        return -ENOMEM;
    }
    atomic_init(&c->state, GRP_CALL_PENDING);
    atomic_init(&c->refs, 2); /* the caller's and the message's */
    c->fn = fn;
    c->arg = arg;
    m->kind = GRP_MSG_CALL;
    m->call = c;
    eng_group_inbox_push(&g->workers[index].inbox, &m->node, 0);
    for (;;) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += GRP_CALL_POLL_NS;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        if (sem_timedwait(&c->done, &ts) == 0)
            break;
        if (errno != ETIMEDOUT && errno != EINTR)
            continue;
        int pending = GRP_CALL_PENDING;
        /* Gone for good and not started on fn: cancel, so it never runs with our arg. */
        if (worker_gone(g, index) &&
            atomic_compare_exchange_strong(&c->state, &pending, GRP_CALL_CANCELLED))
            break;
    }
    int rc = atomic_load(&c->state) == GRP_CALL_RAN ? 0 : -ESHUTDOWN;
    eng_group_call_unref(c);
    return rc;
}

/* ---- stats -------------------------------------------------------------------------------- */

int eng_group_worker_stats(const struct eng_group *g, unsigned i,
                           struct eng_group_worker_stats *out)
{
    if (!g || !out || i >= g->n)
        return -EINVAL;
    struct grp_worker *gw = &g->workers[i];
    uint64_t words[GRP_STAT_WORDS];
    grp_seqlock_read(&gw->seq, gw->words, words, GRP_STAT_WORDS);
    memcpy(out, words, sizeof(words));
    return 0;
}

void eng_group_stats(const struct eng_group *g, struct eng_group_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->nworkers = g->n;
    out->refused = atomic_load(&g->refused);
    uint64_t *sum = (uint64_t *)&out->total;
    for (unsigned i = 0; i < g->n; i++) {
        struct eng_group_worker_stats ws;
        eng_group_worker_stats(g, i, &ws);
        const uint64_t *part = (const uint64_t *)&ws.w;
        for (size_t k = 0; k < sizeof(ws.w) / sizeof(uint64_t); k++)
            sum[k] += part[k];
    }
}

/* ---- stop --------------------------------------------------------------------------------- */

void eng_group_stop_and_free(struct eng_group *g)
{
    if (!g)
        return;
    /* The services first, while every worker still delivers and takes enqueues: their
     * last submissions complete (on other workers too) before anything stops. */
    if (g->cfg.nservices > 0 && g->started) {
        for (unsigned i = 0; i < g->n; i++) {
            atomic_store(&g->workers[i].quiesce, true);
            eng_group_inbox_wake(&g->workers[i].inbox);
        }
        unsigned limit = g->cfg.drain_timeout_ms ? g->cfg.drain_timeout_ms : 30000;
        for (unsigned waited = 0;; waited += 10) {
            unsigned n = 0;
            for (unsigned i = 0; i < g->n; i++)
                n += atomic_load(&g->workers[i].quiesced) || !g->workers[i].thread_started;
            if (n == g->n)
                break;
            if (waited >= limit) {
                eng_log(ENG_LOG_WARN, "group: services still busy after %u ms; stopping anyway",
                        limit);
                break;
            }
            usleep(10000);
        }
    }
    for (unsigned i = 0; i < g->n; i++) {
        atomic_store(&g->workers[i].stop, true);
        eng_group_inbox_wake(&g->workers[i].inbox);
    }
    for (unsigned i = 0; i < g->n; i++)
        if (g->workers[i].thread_started)
            pthread_join(g->workers[i].thread, NULL);
    group_free(g);
}
