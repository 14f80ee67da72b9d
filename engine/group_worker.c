/*
 * engine/group_worker.c — one worker thread of the pool: builds its objects (loop,
 * resolver, TLS session cache, capability cache, worker) on its own thread, runs the
 * loop until told to stop, processes its inbox, saves its capability cache, and frees
 * everything on the same thread.
 *
 * Why everything is built on the thread itself: the loop's ring is created
 * SINGLE_ISSUER (only the creating thread may submit), and every object here belongs
 * to the loop it was made on.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "engine/group_int.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/dns_loop.h"
#include "engine/log.h"
#include "engine/loop.h"

#define GRP_DEFAULT_TLS_CACHE       4096
#define GRP_DEFAULT_MAX_CONNECTIONS 1000
#define GRP_DEFAULT_SAVE_S          60
#define GRP_METRICS_MS              250

/* Everything one worker thread owns. A new per-worker object is one field here, a few
 * lines in res_build (in dependency order) and one in res_free (in reverse). */
struct grp_res {
    struct eng_loop *loop;
    struct eng_dns *dns;
    struct tls_cache *tls_cache;
    struct eng_capcache *capcache;
    struct eng_connpool *pool;
    struct eng_worker *worker;
};

/* The thread's state around its resources. */
struct grp_thread {
    struct grp_worker *gw;
    struct grp_res r;
    eng_handle_t h_inbox; /* poll on the inbox's eventfd */
    eng_handle_t h_save;  /* the capability cache's save timer */
    bool inbox_released, save_released;
    struct eng_group_worker_stats st; /* what is not in the worker's own stats; st.state
                                       * is written by thread_set only */
    char cap_path[PATH_MAX];          /* "" = not persisted */
    void *svc_state[ENG_GROUP_MAX_SERVICES];
    bool svc_started[ENG_GROUP_MAX_SERVICES];
    bool svc_stopped;       /* the services' stop ran */
    uint64_t metrics_at_ms; /* when the metrics were last published */
    bool metrics_dirty;     /* a publish was skipped for the interval: due later */
};

/* The worker whose thread this is (set once by eng_group_worker_main). */
static _Thread_local struct grp_worker *self;

struct grp_worker *eng_group_self(const struct eng_group *g)
{
    return self && self->g == g ? self : NULL;
}

/* ---- state and stats ------------------------------------------------------------------ */

static const char *const state_names[] = {
#define ENG_GROUP_W_NAME(name, str) str,
    ENG_GROUP_WORKER_STATES(ENG_GROUP_W_NAME)
#undef ENG_GROUP_W_NAME
};

const char *eng_group_worker_state_name(enum eng_group_worker_state s)
{
    return (unsigned)s < sizeof(state_names) / sizeof(state_names[0]) ? state_names[s] : "invalid";
}

static void publish(struct grp_thread *t);

/* Sets the thread's state (the only writer), logs the transition and publishes it. */
static void thread_set(struct grp_thread *t, enum eng_group_worker_state s)
{
    eng_log(ENG_LOG_INFO, "group: worker=%u %s -> %s", t->gw->index,
            eng_group_worker_state_name((enum eng_group_worker_state)t->st.state),
            eng_group_worker_state_name(s));
    t->st.state = s;
    publish(t);
}

/* The seqlock's writer: an odd sequence while the words change. */
static void publish(struct grp_thread *t)
{
    struct grp_worker *gw = t->gw;
    if (t->r.worker)
        eng_worker_stats(t->r.worker, &t->st.w);
    if (t->r.capcache) {
        struct eng_capcache_stats cs;
        eng_capcache_stats(t->r.capcache, &cs);
        t->st.capcache_entries = cs.entries;
        t->st.capcache_blocks = cs.blocks;
    }
    uint64_t words[GRP_STAT_WORDS];
    memcpy(words, &t->st, sizeof(words));
    grp_seqlock_write(&gw->seq, gw->words, words, GRP_STAT_WORDS);
}

/* The metrics: the worker's own, plus the gauges of this thread's pool, resolver and
 * capability cache; a seqlock like publish(), but only every GRP_METRICS_MS (or when
 * forced, at the end). */
static bool publish_metrics(struct grp_thread *t, bool force)
{
    if (!t->r.worker)
        return false;
    /* The clock itself, not the loop's: that one moves only when something completes,
     * and an idle worker must still publish its last attempts' figures. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    if (!force && now - t->metrics_at_ms < GRP_METRICS_MS)
        return t->metrics_dirty = true; /* the next iteration, at most GRP_METRICS_MS on */
    t->metrics_at_ms = now;
    t->metrics_dirty = false;
    struct eng_metrics m;
    eng_worker_metrics(t->r.worker, &m);
    if (t->r.pool) {
        struct eng_connpool_stats ps;
        eng_connpool_stats(t->r.pool, &ps);
        m.conns_open += ps.total;
        m.conns_idle += ps.idle;
    }
    if (t->r.dns) {
        struct dns_stats ds;
        dns_resolver_stats(eng_dns_resolver(t->r.dns), &ds);
        m.dns_queries += ds.queries;
        m.dns_cache_hits += ds.cache_hits;
    }
    if (t->r.capcache) {
        struct eng_capcache_stats cs;
        eng_capcache_stats(t->r.capcache, &cs);
        m.capcache_pass += cs.pass_entries;
        m.capcache_refuse += cs.refuse_entries;
    }
    uint64_t words[GRP_METRIC_WORDS];
    memcpy(words, &m, sizeof(words));
    struct grp_worker *gw = t->gw;
    grp_seqlock_write(&gw->mseq, gw->mwords, words, GRP_METRIC_WORDS);
    return false;
}

/* ---- capability cache files ---------------------------------------------------------- */

static bool is_cap_file(const char *name)
{
    if (strncmp(name, "capcache.", 9) != 0 || name[9] == '\0')
        return false;
    for (const char *p = name + 9; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

/* Loads every capcache.<n> file of the spool directory: entries are per MX host, and any
 * shard may send to any host. A file that cannot be read is logged and skipped. */
static void cap_load_all(struct grp_thread *t)
{
    const char *dir = t->gw->g->spool_dir;
    DIR *d = opendir(dir);
    if (!d) {
        eng_log(ENG_LOG_WARN, "group: worker=%u cannot list %s: %s", t->gw->index, dir,
                strerror(errno));
        return;
    }
    int64_t now = (int64_t)time(NULL);
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        if (!is_cap_file(de->d_name))
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        struct eng_capcache_load_result res;
        int rc = eng_capcache_load(t->r.capcache, path, now, NULL, NULL, &res);
        if (rc != 0)
            eng_log(ENG_LOG_WARN, "group: worker=%u cannot load %s: %s", t->gw->index, path,
                    strerror(-rc));
        else
            t->st.capcache_loaded += res.loaded;
    }
    closedir(d);
}

static void cap_save(struct grp_thread *t)
{
    if (!t->cap_path[0] || !t->r.capcache)
        return;
    int rc = eng_capcache_save(t->r.capcache, t->cap_path, (int64_t)time(NULL));
    if (rc < 0)
        eng_log(ENG_LOG_ERROR, "group: worker=%u cannot save %s: %s", t->gw->index, t->cap_path,
                strerror(-rc));
    else
        t->st.capcache_saves++;
}

static unsigned save_interval_ms(const struct grp_thread *t)
{
    unsigned s = t->gw->g->cfg.capcache_save_s;
    return (s ? s : GRP_DEFAULT_SAVE_S) * 1000u;
}

static void save_complete(void *ctx, const struct eng_completion *comp)
{
    struct grp_thread *t = ctx;
    if (comp->res == -ECANCELED)
        return;
    cap_save(t);
    int rc = eng_op_timer(t->r.loop, t->h_save, save_interval_ms(t));
    if (rc != 0)
        eng_log(ENG_LOG_ERROR, "group: worker=%u cannot re-arm the save timer: %s", t->gw->index,
                eng_strerror(rc));
}

static void save_release(void *ctx)
{
    ((struct grp_thread *)ctx)->save_released = true;
}

static const struct eng_handle_ops save_ops = { save_complete, save_release };

/* ---- the inbox ------------------------------------------------------------------------ */

/* An enqueue's outcome for a worker that asked from its own thread: the same message
 * goes back to it (no allocation: it was kept for this). Unbounded push, as for a
 * hand-off: a worker never waits for another. */
static void relay_done(void *arg, queue_id_t id, int res)
{
    struct grp_msg *m = arg;
    m->kind = GRP_MSG_DONE;
    m->id = id;
    m->res = res;
    eng_group_inbox_push(&m->reply->inbox, &m->node, 0);
}

/* An eng_group_call: runs fn unless its caller gave up first, then wakes the caller. */
static void run_call(struct grp_thread *t, struct grp_call *c)
{
    int pending = GRP_CALL_PENDING;
    if (t->r.worker && atomic_compare_exchange_strong(&c->state, &pending, GRP_CALL_RAN)) {
        c->fn(t->r.worker, c->arg);
        sem_post(&c->done);
    } else if (!t->r.worker &&
               atomic_compare_exchange_strong(&c->state, &pending, GRP_CALL_CANCELLED)) {
        sem_post(&c->done);
    }
    eng_group_call_unref(c);
}

static void handle_msg(struct grp_thread *t, struct grp_msg *m)
{
    t->st.inbox_handled++;
    if (m->kind == GRP_MSG_CALL) {
        run_call(t, m->call);
        free(m);
        return;
    }
    if (m->kind == GRP_MSG_DONE) {
        m->done(m->arg, m->id, m->res);
        free(m);
        return;
    }
    if (m->kind == GRP_MSG_ENQUEUE && m->reply && m->reply != t->gw) {
        int rc = eng_worker_enqueue(t->r.worker, m->env, m->content, m->len, relay_done, m);
        queue_envelope_free(m->env);
        m->env = NULL;
        if (rc != 0)
            relay_done(m, 0, rc == -EINVAL ? QUEUE_ERR_CLOSING : rc);
        return;
    }
    if (m->kind == GRP_MSG_ADOPT) {
        int rc = eng_worker_adopt(t->r.worker, &m->info, m->recovered);
        if (rc != 0 && rc != -EEXIST) { /* durable: the next start recovers it */
            char hex[QUEUE_ID_HEX];
            eng_log(ENG_LOG_ERROR, "group: worker=%u cannot adopt message=%s: %s", t->gw->index,
                    queue_id_format(m->info.id, hex), strerror(-rc));
        }
        free(m);
        return;
    }
    int rc = eng_worker_enqueue(t->r.worker, m->env, m->content, m->len, m->done, m->arg);
    if (rc != 0) /* not queued: the caller hears it on this thread */
        m->done(m->arg, 0, rc == -EINVAL ? QUEUE_ERR_CLOSING : rc);
    queue_envelope_free(m->env);
    free(m);
}

static void inbox_drain(struct grp_thread *t)
{
    eng_group_inbox_ack(&t->gw->inbox);
    for (struct eng_group_node *n; (n = eng_group_inbox_pop(&t->gw->inbox)) != NULL;)
        handle_msg(t, (struct grp_msg *)n);
}

static void inbox_arm(struct grp_thread *t)
{
    int rc = eng_op_poll(t->r.loop, t->h_inbox, POLLIN, 0);
    if (rc != 0 && rc != -EBUSY)
        eng_log(ENG_LOG_ERROR, "group: worker=%u cannot watch its inbox: %s", t->gw->index,
                eng_strerror(rc));
}

static void inbox_complete(void *ctx, const struct eng_completion *comp)
{
    struct grp_thread *t = ctx;
    if (comp->res == -ECANCELED)
        return;
    inbox_arm(t); /* before draining: a push during the drain wakes the new poll */
    inbox_drain(t);
}

static void inbox_release(void *ctx)
{
    ((struct grp_thread *)ctx)->inbox_released = true;
}

static const struct eng_handle_ops inbox_ops = { inbox_complete, inbox_release };

/* The worker's route hook: a message made durable here for a domain another worker
 * owns is adopted by that one. Unbounded push: the message is already durable, and a
 * worker must never wait for another (two full inboxes would deadlock). */
static bool route(void *arg, const struct queue_entry_info *info)
{
    struct grp_thread *t = arg;
    struct eng_group *g = t->gw->g;
    unsigned owner = eng_group_shard_of(g, info->domain);
    if (owner == t->gw->index)
        return false;
    struct grp_msg *m = eng_group_msg_adopt(info, false);
    if (!m) { /* scheduled here instead: delivered all the same, by a foreign shard */
        eng_log(ENG_LOG_ERROR, "group: worker=%u out of memory handing over a message",
                t->gw->index);
        return false;
    }
    eng_group_inbox_push(&g->workers[owner].inbox, &m->node, 0);
    return true;
}

/* ---- building and freeing ------------------------------------------------------------- */

/* Builds every per-worker object, in dependency order. On failure what was built
 * stays in t->r for res_free. Returns 0 or the first error. */
static int res_build(struct grp_thread *t)
{
    struct eng_group *g = t->gw->g;
    int rc = eng_loop_new(NULL, &t->r.loop);
    if (rc == 0)
        rc = eng_dns_new(t->r.loop, &g->cfg.dns, &t->r.dns);
    if (rc == 0)
        rc = tls_cache_new(g->cfg.tls_cache_entries ? g->cfg.tls_cache_entries
                                                    : GRP_DEFAULT_TLS_CACHE,
                           &t->r.tls_cache);
    if (rc == 0)
        rc = eng_capcache_new(&g->cfg.capcache, &t->r.capcache);
    if (rc == 0 && g->spool_dir)
        cap_load_all(t);
    if (rc == 0) {
        /* The total is the engine's: each worker gets its share. */
        struct eng_connpool_config pc = g->cfg.connpool;
        pc.loop = t->r.loop;
        unsigned total = pc.max_total ? pc.max_total : GRP_DEFAULT_MAX_CONNECTIONS;
        pc.max_total = total / g->n > 0 ? total / g->n : 1;
        rc = eng_connpool_new(&pc, &t->r.pool);
    }
    if (rc != 0)
        return rc;
    struct eng_worker_config wc = g->cfg.worker;
    wc.loop = t->r.loop;
    wc.spool = g->cfg.spool;
    wc.dns = t->r.dns;
    wc.tls = g->cfg.tls;
    wc.tls_cache = t->r.tls_cache;
    wc.capcache = t->r.capcache;
    wc.pool = t->r.pool;
    wc.no_recover = true; /* eng_group_start recovered the spool once */
    wc.route = route;
    wc.route_arg = t;
    rc = eng_worker_new(&wc, &t->r.worker);
    if (rc == 0)
        rc = eng_worker_start(t->r.worker);
    return rc;
}

/* ---- services ---------------------------------------------------------------------------- */

static bool svc_here(const struct grp_thread *t, unsigned i)
{
    return !t->gw->g->cfg.services[i].first_only || t->gw->index == 0;
}

static int services_start(struct grp_thread *t)
{
    const struct eng_group_config *c = &t->gw->g->cfg;
    for (unsigned i = 0; i < c->nservices; i++) {
        if (!svc_here(t, i))
            continue;
        const struct eng_group_service *s = &c->services[i];
        int rc = s->start(s->arg, t->gw->index, t->r.loop, &t->svc_state[i]);
        if (rc != 0) {
            eng_log(ENG_LOG_ERROR, "group: worker=%u cannot start %s: %s", t->gw->index,
                    s->name ? s->name : "a service", eng_strerror(rc));
            return rc;
        }
        t->svc_started[i] = true;
    }
    return 0;
}

static void services_stop(struct grp_thread *t)
{
    const struct eng_group_config *c = &t->gw->g->cfg;
    if (t->svc_stopped)
        return;
    t->svc_stopped = true;
    for (unsigned i = c->nservices; i-- > 0;)
        if (t->svc_started[i] && c->services[i].stop)
            c->services[i].stop(c->services[i].arg, t->gw->index, t->svc_state[i]);
}

static bool services_idle(struct grp_thread *t)
{
    const struct eng_group_config *c = &t->gw->g->cfg;
    for (unsigned i = 0; i < c->nservices; i++)
        if (t->svc_started[i] && c->services[i].idle &&
            !c->services[i].idle(c->services[i].arg, t->gw->index, t->svc_state[i]))
            return false;
    return true;
}

static void services_free(struct grp_thread *t)
{
    const struct eng_group_config *c = &t->gw->g->cfg;
    services_stop(t);
    for (unsigned i = c->nservices; i-- > 0;) {
        if (t->svc_started[i] && c->services[i].free)
            c->services[i].free(c->services[i].arg, t->gw->index, t->svc_state[i]);
        t->svc_started[i] = false;
        t->svc_state[i] = NULL;
    }
}

/* Frees what res_build made, in reverse order (the worker drains its attempts first). */
static void res_free(struct grp_thread *t)
{
    eng_worker_free(t->r.worker);
    t->r.worker = NULL;
    eng_connpool_free(t->r.pool); /* QUITs the idle connections */
    eng_dns_free(t->r.dns);
    eng_loop_free(t->r.loop); /* releases the handles still open */
    tls_cache_free(t->r.tls_cache);
    eng_capcache_free(t->r.capcache);
    t->r = (struct grp_res){ 0 };
}

/* Opens the inbox poll and the save timer. Returns 0 or the loop's error. */
static int handles_open(struct grp_thread *t)
{
    int rc = eng_handle_open(t->r.loop, t->gw->inbox.efd, &inbox_ops, t, &t->h_inbox);
    if (rc != 0)
        return rc;
    t->inbox_released = false;
    inbox_arm(t);
    if (!t->cap_path[0])
        return 0;
    rc = eng_handle_open(t->r.loop, -1, &save_ops, t, &t->h_save);
    if (rc != 0)
        return rc;
    t->save_released = false;
    return eng_op_timer(t->r.loop, t->h_save, save_interval_ms(t));
}

static void handles_close(struct grp_thread *t)
{
    if (!t->inbox_released)
        eng_handle_close(t->r.loop, t->h_inbox);
    if (!t->save_released)
        eng_handle_close(t->r.loop, t->h_save);
    while ((!t->inbox_released || !t->save_released) && eng_loop_run_once(t->r.loop, 100) >= 0)
        ;
}

/* ---- the thread ------------------------------------------------------------------------ */

void *eng_group_worker_main(void *arg)
{
    struct grp_worker *gw = arg;
    self = gw;
    char name[16];
    snprintf(name, sizeof(name), "floormta-w%u", gw->index);
    pthread_setname_np(pthread_self(), name);

    struct grp_thread t = { .gw = gw, .inbox_released = true, .save_released = true };
    if (gw->g->spool_dir)
        snprintf(t.cap_path, sizeof(t.cap_path), "%s/capcache.%u", gw->g->spool_dir, gw->index);
    thread_set(&t, ENG_GROUP_W_BUILDING);
    int rc = res_build(&t);
    if (rc == 0)
        rc = handles_open(&t);
    if (rc == 0)
        rc = services_start(&t);
    gw->start_result = rc;
    if (rc != 0) {
        eng_log(ENG_LOG_ERROR, "group: worker=%u did not start: %s", gw->index, eng_strerror(rc));
        services_free(&t);
        if (t.r.loop)
            handles_close(&t);
        res_free(&t);
        thread_set(&t, ENG_GROUP_W_FAILED);
        sem_post(&gw->ready);
        return NULL;
    }
    inbox_drain(&t); /* the recovered messages */
    gw->worker = t.r.worker;
    thread_set(&t, ENG_GROUP_W_RUNNING);
    sem_post(&gw->ready);

    while (!atomic_load(&gw->stop)) {
        /* Bounded wait, and a poll that could not be armed (a full submission queue)
         * is armed again here: a lost watch on the inbox delays it, never stalls it. */
        /* Idle, the loop wakes once a second; with metrics not yet published, as soon
         * as they may be, so a scrape right after a burst sees its last attempts. */
        rc = eng_loop_run_once(t.r.loop, t.metrics_dirty ? GRP_METRICS_MS : 1000);
        if (rc >= 0 && !eng_handle_busy(t.r.loop, t.h_inbox, ENG_OP_POLL)) {
            inbox_arm(&t);
            inbox_drain(&t);
        }
        publish(&t);
        publish_metrics(&t, false);
        if (rc < 0) {
            eng_log(ENG_LOG_ERROR, "group: worker=%u loop failed: %s; stopping", gw->index,
                    eng_strerror(rc));
            break;
        }
        /* Draining the services: they stop taking work, and once nothing of theirs is
         * pending this worker says so; the group stops the workers when all have. */
        if (atomic_load(&gw->quiesce) && !atomic_load(&gw->quiesced)) {
            services_stop(&t);
            if (services_idle(&t))
                atomic_store(&gw->quiesced, true);
        }
    }
    /* Requests accepted before the stop are made durable; the inbox stays watched
     * while the running attempts finish (hand-offs from other workers). */
    thread_set(&t, ENG_GROUP_W_DRAINING);
    services_stop(&t);
    inbox_drain(&t);
    eng_worker_stop(t.r.worker);
    cap_save(&t);
    publish(&t); /* the final figures, before the objects go */
    publish_metrics(&t, true);
    services_free(&t);
    handles_close(&t);
    gw->worker = NULL;
    res_free(&t);
    thread_set(&t, ENG_GROUP_W_STOPPED);
    return NULL;
}
