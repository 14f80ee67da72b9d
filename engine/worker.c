/*
 * engine/worker.c — the worker's lifecycle, its two loop handles (the port's eventfd
 * poll and the due timer), enqueueing, and the run step that turns ready scheduler
 * entries into delivery attempts. What an attempt's report does is worker_attempt.c.
 *
 * Memory (STYLE point 7): the attempt slots are allocated once at eng_worker_new
 * (max_attempts of them); a full set of slots is back-pressure (ready entries wait in
 * the scheduler), never an allocation. Enqueue requests are control-plane (an
 * injection or a DSN) and are allocated per request, -ENOMEM to the caller.
 */
#include "engine/worker_int.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/log.h"

#define WK_DEFAULT_MAX_ATTEMPTS 100

int64_t eng_worker_now(void)
{
    return (int64_t)time(NULL);
}

static uint64_t realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- loop handles ---------------------------------------------------------------------- */

static void port_arm(struct eng_worker *w)
{
    int rc = eng_op_poll(w->cfg.loop, w->h_port, POLLIN, 0);
    if (rc != 0 && rc != -EBUSY)
        eng_log(ENG_LOG_ERROR, "worker: cannot watch the spool port: %s", eng_strerror(rc));
}

static void port_complete(void *ctx, const struct eng_completion *comp)
{
    struct eng_worker *w = ctx;
    if (comp->res < 0 && comp->res != -ECANCELED)
        eng_log(ENG_LOG_WARN, "worker: spool port poll: %s", eng_strerror(comp->res));
    /* Re-armed before reaping: a completion signalled while the callbacks run is then
     * seen by the new poll (the eventfd stays readable until the next reap). */
    port_arm(w);
    queue_port_reap(w->port);
}

static void port_release(void *ctx)
{
    ((struct eng_worker *)ctx)->port_released = true;
}

static const struct eng_handle_ops port_ops = { port_complete, port_release };

static void timer_complete(void *ctx, const struct eng_completion *comp)
{
    struct eng_worker *w = ctx;
    (void)comp; /* fired or cancelled for an earlier due time: either way, look again */
    w->timer_at_ms = 0;
    queue_sched_promote(w->sched, eng_worker_now());
    eng_worker_pump(w);
}

static void timer_release(void *ctx)
{
    ((struct eng_worker *)ctx)->timer_released = true;
}

static const struct eng_handle_ops timer_ops = { timer_complete, timer_release };

void eng_worker_timer_arm(struct eng_worker *w)
{
    if (w->closing || !w->started)
        return;
    int64_t due = queue_sched_next_due(w->sched, eng_worker_now());
    if (due < 0)
        return; /* nothing deferred; an armed timer fires harmlessly */
    uint64_t now = realtime_ms();
    /* next_attempt has one-second resolution: fire at the start of that second. */
    uint64_t at = due == 0 ? now + 1 : now - now % 1000 + (uint64_t)due * 1000;
    if (eng_handle_busy(w->cfg.loop, w->h_timer, ENG_OP_TIMER)) {
        if (w->timer_at_ms <= at)
            return;
        /* Earlier than the armed one: cancel; its completion looks again. */
        eng_op_cancel(w->cfg.loop, w->h_timer, ENG_OP_TIMER);
        return;
    }
    unsigned ms = at > now ? (unsigned)(at - now) : 1;
    int rc = eng_op_timer(w->cfg.loop, w->h_timer, ms);
    if (rc == 0)
        w->timer_at_ms = at;
    else
        eng_log(ENG_LOG_ERROR, "worker: cannot arm the due timer: %s", eng_strerror(rc));
}

/* ---- the run step ------------------------------------------------------------------------ */

/* The slot whose decided-but-not-yet-durable state belongs to e, if any. A linear scan
 * of at most max_attempts slots, only when an entry is popped. */
static struct wk_attempt *busy_slot(struct eng_worker *w, const struct queue_entry *e)
{
    for (unsigned i = 0; i < w->cfg.max_attempts; i++) {
        struct wk_attempt *a = &w->slots[i];
        if (a->entry == e && (a->state == WK_DSN || a->state == WK_PERSISTING))
            return a;
    }
    return NULL;
}

static void start_one(struct eng_worker *w, struct wk_attempt *a, struct queue_entry *e)
{
    a->w = w;
    a->entry = e;
    queue_id_t id = queue_entry_id(e);
    /* A blocking read of a small file on the loop thread: acceptable for now; a reader
     * thread (or io_uring reads) that hands the message over is future work. */
    int rc = queue_entry_fresh(e)
                     ? queue_spool_read_fresh(w->cfg.spool, id, &a->env, &a->content, &a->len)
                     : queue_spool_read(w->cfg.spool, id, &a->env, &a->content, &a->len);
    if (rc != 0) {
        char hex[QUEUE_ID_HEX];
        eng_log(ENG_LOG_ERROR, "worker: cannot read message %s: %s", queue_id_format(id, hex),
                queue_strerror(rc));
        w->stats.errors++;
        if (rc == QUEUE_ERR_NOT_FOUND || rc == QUEUE_ERR_CORRUPT)
            queue_sched_remove(w->sched, e); /* gone, or quarantined by the spool */
        else
            queue_sched_defer(w->sched, e, eng_worker_now(), NULL); /* tried again later */
        a->entry = NULL;
        a->next_free = w->free_slots;
        w->free_slots = a;
        return;
    }
    eng_worker_attempt_set(a, WK_DELIVERING);
    w->stats.attempts++;
    w->stats.running++;
    rc = eng_deliver_start(&w->dcfg, a->env, a->content, a->len, eng_worker_attempt_done, a);
    if (rc != 0)
        eng_worker_attempt_fail(a, rc);
}

void eng_worker_pump(struct eng_worker *w)
{
    while (!w->closing && w->free_slots) {
        struct queue_entry *e = queue_sched_pop(w->sched);
        if (!e)
            break;
        struct wk_attempt *busy = busy_slot(w, e);
        if (busy) {
            busy->repop = true; /* requeued once its state is durable */
            continue;
        }
        struct wk_attempt *a = w->free_slots;
        w->free_slots = a->next_free;
        start_one(w, a, e);
    }
    eng_worker_timer_arm(w);
}

/* ---- enqueue ------------------------------------------------------------------------------ */

struct wk_enqueue {
    struct eng_worker *w;
    struct queue_envelope *env; /* ours */
    void *owned;                /* content to free(), or NULL when borrowed */
    eng_worker_done_fn done;
    void *arg;
};

static void enqueue_done(void *arg, queue_id_t id, int res)
{
    struct wk_enqueue *q = arg;
    struct eng_worker *w = q->w;
    w->port_pending--;
    if (res == 0) {
        const struct queue_envelope *env = q->env;
        struct queue_entry_info info = {
            .id = id,
            .domain = env->domain,
            .arrival = env->arrival,
            .next_attempt = env->next_attempt,
            .nrcpts = env->nrcpts,
            .content_size = env->content_size,
            .is_dsn = env->is_dsn,
            .fresh = true,
        };
        struct queue_entry *e;
        int rc = 0;
        /* Durable before it is handed over: the owner never writes it again, and a
         * hand-off lost to a crash or a stop is recovered from the spool. */
        if (w->cfg.route && w->cfg.route(w->cfg.route_arg, &info))
            w->stats.handed++;
        else
            rc = queue_sched_add(w->sched, &info, eng_worker_now(), &e);
        if (rc != 0) { /* durable all the same: the next start recovers it */
            char hex[QUEUE_ID_HEX];
            eng_log(ENG_LOG_ERROR, "worker: cannot schedule %s: %s", queue_id_format(id, hex),
                    strerror(-rc));
            w->stats.errors++;
        }
        if (env->is_dsn)
            w->stats.dsns++;
        else
            w->stats.enqueued++;
    }
    if (q->done)
        q->done(q->arg, id, res);
    queue_envelope_free(q->env);
    free(q->owned);
    free(q);
    eng_worker_pump(w);
}

static int enqueue(struct eng_worker *w, struct queue_envelope *env, const void *content,
                   void *owned, size_t len, eng_worker_done_fn done, void *arg)
{
    struct wk_enqueue *q = calloc(1, sizeof(*q));
    if (!q) {
        queue_envelope_free(env);
        free(owned);
        return -ENOMEM;
    }
    *q = (struct wk_enqueue){ w, env, owned, done, arg };
    if (env->arrival == 0)
        env->arrival = eng_worker_now();
    env->content_size = len;
    env->attempts = 0;
    env->delay_warned = false;
    for (unsigned i = 0; i < env->nrcpts; i++) {
        env->rcpts[i].state = QUEUE_RCPT_PENDING;
        env->rcpts[i].attempts = 0;
        memset(&env->rcpts[i].last, 0, sizeof(env->rcpts[i].last));
    }
    int rc = queue_port_enqueue(w->port, env, content, len, enqueue_done, q);
    if (rc != 0) {
        queue_envelope_free(env);
        free(owned);
        free(q);
        return rc;
    }
    w->port_pending++;
    return 0;
}

int eng_worker_enqueue(struct eng_worker *w, const struct queue_envelope *env, const void *content,
                       size_t len, eng_worker_done_fn done, void *arg)
{
    if (!w || !env || !done || (!content && len) || !w->started || w->closing)
        return -EINVAL;
    struct queue_envelope *copy = queue_envelope_dup(env);
    if (!copy)
        return -ENOMEM;
    return enqueue(w, copy, content, NULL, len, done, arg);
}

int eng_worker_enqueue_owned(struct eng_worker *w, struct queue_envelope *env, void *content,
                             size_t len, eng_worker_done_fn done, void *arg)
{
    return enqueue(w, env, content, content, len, done, arg);
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

int eng_worker_new(const struct eng_worker_config *cfg, struct eng_worker **out)
{
    if (!cfg || !out || !cfg->loop || !cfg->spool || !cfg->dns || !cfg->tls || !cfg->helo_name)
        return -EINVAL;
    struct eng_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->cfg = *cfg;
    if (w->cfg.max_attempts == 0)
        w->cfg.max_attempts = WK_DEFAULT_MAX_ATTEMPTS;
    w->helo = strdup(cfg->helo_name);
    w->mta = strdup(cfg->reporting_mta ? cfg->reporting_mta : cfg->helo_name);
    w->slots = calloc(w->cfg.max_attempts, sizeof(*w->slots));
    if (!w->helo || !w->mta || !w->slots) {
        free(w->helo);
        free(w->mta);
        free(w->slots);
        free(w);
        return -ENOMEM;
    }
    w->cfg.helo_name = w->helo;
    w->cfg.reporting_mta = w->mta;
    for (unsigned i = w->cfg.max_attempts; i-- > 0;) {
        w->slots[i].w = w;
        w->slots[i].next_free = w->free_slots;
        w->free_slots = &w->slots[i];
    }
    w->dcfg = (struct eng_deliver_config){
        .loop = cfg->loop,
        .dns = cfg->dns,
        .tls = cfg->tls,
        .tls_cache = cfg->tls_cache,
        .capcache = cfg->capcache,
        .pool = cfg->pool,
        .policy = cfg->policy,
        .sources = cfg->sources,
        .nsources = cfg->nsources,
        .helo_name = w->helo,
        .port = cfg->port,
        .connect_timeout_ms = cfg->connect_timeout_ms,
        .reply_timeout_ms = cfg->reply_timeout_ms,
        .log_out = &w->log_out,
    };
    w->port_released = w->timer_released = true; /* nothing open yet */
    *out = w;
    return 0;
}

void eng_worker_info_of(const struct queue_envelope *env, struct queue_entry_info *out)
{
    unsigned open = 0;
    for (unsigned i = 0; i < env->nrcpts; i++)
        if (env->rcpts[i].state != QUEUE_RCPT_DELIVERED &&
            env->rcpts[i].state != QUEUE_RCPT_BOUNCED)
            open++;
    *out = (struct queue_entry_info){
        .id = env->id,
        .domain = env->domain,
        .arrival = env->arrival,
        .next_attempt = env->next_attempt,
        .attempts = env->attempts,
        .nrcpts = (uint16_t)open,
        .content_size = env->content_size,
        .is_dsn = env->is_dsn,
        .delay_warned = env->delay_warned,
    };
}

static int recover_one(void *arg, const struct queue_envelope *env)
{
    struct eng_worker *w = arg;
    struct queue_entry_info info;
    eng_worker_info_of(env, &info);
    struct queue_entry *e;
    int rc = queue_sched_add(w->sched, &info, eng_worker_now(), &e);
    if (rc == -EEXIST)
        return 0;
    if (rc == 0)
        w->stats.recovered++;
    return rc;
}

int eng_worker_adopt(struct eng_worker *w, const struct queue_entry_info *info, bool recovered)
{
    if (!w || !info || !info->domain || !w->started)
        return -EINVAL;
    struct queue_entry *e;
    /* Made durable by another worker of this process: no state file yet. */
    struct queue_entry_info copy = *info;
    copy.fresh = !recovered;
    int rc = queue_sched_add(w->sched, &copy, eng_worker_now(), &e);
    if (rc != 0)
        return rc;
    if (recovered)
        w->stats.recovered++;
    else
        w->stats.adopted++;
    eng_worker_pump(w);
    return 0;
}

int eng_worker_start(struct eng_worker *w)
{
    if (!w || w->started || w->sched) /* once only, even after a failed start */
        return -EINVAL;
    int rc = queue_sched_new(&w->cfg.retry, &w->sched);
    if (rc != 0)
        return rc;
    struct queue_recover_stats rs = { 0 };
    if (!w->cfg.no_recover)
        rc = queue_spool_recover(w->cfg.spool, recover_one, w, &rs);
    if (rc != 0)
        return rc;
    rc = queue_port_new(w->cfg.spool, &w->port);
    if (rc != 0)
        return rc;
    rc = eng_handle_open(w->cfg.loop, queue_port_fd(w->port), &port_ops, w, &w->h_port);
    if (rc != 0)
        return rc;
    w->port_released = false;
    rc = eng_handle_open(w->cfg.loop, -1, &timer_ops, w, &w->h_timer);
    if (rc != 0)
        return rc;
    w->timer_released = false;
    w->started = true;
    eng_log(ENG_LOG_INFO,
            "worker: started messages=%llu finished=%llu quarantined=%llu incomplete=%llu",
            (unsigned long long)rs.messages, (unsigned long long)rs.finished,
            (unsigned long long)rs.quarantined, (unsigned long long)rs.incomplete);
    port_arm(w);
    eng_worker_pump(w);
    return 0;
}

void eng_worker_stats(const struct eng_worker *w, struct eng_worker_stats *out)
{
    *out = w->stats;
}

void eng_worker_metrics(const struct eng_worker *w, struct eng_metrics *out)
{
    *out = w->metrics;
    eng_metrics_add_worker(out, &w->stats);
    struct queue_sched_stats ss;
    queue_sched_stats(w->sched, &ss);
    out->queue_depth[ENG_METRIC_Q_QUEUED] += ss.ready + ss.inflight;
    out->queue_depth[ENG_METRIC_Q_DEFERRED] += ss.deferred;
}

struct queue_sched *eng_worker_sched(struct eng_worker *w)
{
    return w->sched;
}

struct eng_capcache *eng_worker_capcache(struct eng_worker *w)
{
    return w->cfg.capcache;
}

struct wk_attempt *eng_worker_slot_of(struct eng_worker *w, const struct queue_entry *e)
{
    for (unsigned i = 0; i < w->cfg.max_attempts; i++)
        if (w->slots[i].state != WK_FREE && w->slots[i].entry == e)
            return &w->slots[i];
    return NULL;
}

static bool drained(const struct eng_worker *w)
{
    if (w->port_pending > 0)
        return false;
    for (unsigned i = 0; i < w->cfg.max_attempts; i++)
        if (w->slots[i].state != WK_FREE)
            return false;
    return true;
}

void eng_worker_stop(struct eng_worker *w)
{
    if (!w)
        return;
    w->closing = true;
    /* Attempts have their own timeouts and every port request completes, so this
     * ends; each completion persists what its attempt decided. */
    while (w->started && !drained(w))
        if (eng_loop_run_once(w->cfg.loop, 100) < 0)
            break;
}

void eng_worker_free(struct eng_worker *w)
{
    if (!w)
        return;
    eng_worker_stop(w);
    if (!w->port_released)
        eng_handle_close(w->cfg.loop, w->h_port);
    if (!w->timer_released)
        eng_handle_close(w->cfg.loop, w->h_timer);
    while (!w->port_released || !w->timer_released)
        if (eng_loop_run_once(w->cfg.loop, 100) < 0)
            break;
    queue_port_free(w->port);
    queue_sched_free(w->sched);
    free(w->slots);
    free(w->helo);
    free(w->mta);
    eng_json_out_free(&w->log_out);
    free(w);
}
