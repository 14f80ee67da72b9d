/*
 * engine/worker_attempt.c — what the end of one delivery attempt does to the queue.
 *
 * From the report's updated envelope: the scheduler decides (finished, or deferred with
 * a retry, a delay warning or expiry); the DSNs are built and enqueued; once they are
 * durable the new state is persisted and then acted on: a deferred one's state file is
 * replaced and it is left to its timer; a finished one is removed, and that removal is
 * its durable outcome (no state file first: one sync round, not two). An attempt slot
 * walks DELIVERING -> [DSN] -> PERSISTING | REMOVING [-> PERSISTING] -> FREE.
 *
 * Why the DSNs go first: a crash after a durable DSN and before the durable state
 * sends that DSN again after the restart; the other order could lose it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "engine/log.h"
#include "engine/worker_int.h"

#define WK_DEFAULT_MAX_AGE (5 * 86400) /* queue_retry_config's default */

static const char *const state_names[] = {
#define WK_ATTEMPT_NAME(name, str) str,
    WK_ATTEMPT_STATES(WK_ATTEMPT_NAME)
#undef WK_ATTEMPT_NAME
};

void eng_worker_attempt_set(struct wk_attempt *a, enum wk_attempt_state s)
{
    if (eng_log_enabled(ENG_LOG_DEBUG) && a->entry) {
        char hex[QUEUE_ID_HEX];
        eng_log(ENG_LOG_DEBUG, "worker: message=%s %s -> %s",
                queue_id_format(queue_entry_id(a->entry), hex), state_names[a->state],
                state_names[s]);
    }
    a->state = s;
}

static const char *id_hex(const struct wk_attempt *a, char hex[QUEUE_ID_HEX])
{
    return queue_id_format(a->upd ? a->upd->id : a->env->id, hex);
}

void eng_worker_attempt_release(struct wk_attempt *a)
{
    struct eng_worker *w = a->w;
    queue_envelope_free(a->env);
    queue_envelope_free(a->upd);
    free(a->content);
    eng_worker_attempt_set(a, WK_FREE);
    *a = (struct wk_attempt){ .w = w, .state = WK_FREE, .next_free = w->free_slots };
    w->free_slots = a;
    eng_worker_pump(w);
}

static bool is_final(enum queue_rcpt_state s)
{
    return s == QUEUE_RCPT_DELIVERED || s == QUEUE_RCPT_BOUNCED;
}

/* "3 seconds", "2 hours", "5 days": how long the message was queued. */
static void format_age(int64_t secs, char *out, size_t cap)
{
    if (secs >= 2 * 86400)
        snprintf(out, cap, "%lld days", (long long)(secs / 86400));
    else if (secs >= 2 * 3600)
        snprintf(out, cap, "%lld hours", (long long)(secs / 3600));
    else if (secs >= 120)
        snprintf(out, cap, "%lld minutes", (long long)(secs / 60));
    else
        snprintf(out, cap, "%lld seconds", (long long)(secs < 0 ? 0 : secs));
}

/* Past max_age: every recipient not final is bounced, decided here, with the last
 * result's text as the reason the message could not go. */
static void expire(struct wk_attempt *a, int64_t now)
{
    struct queue_envelope *u = a->upd;
    char age[32];
    format_age(now - u->arrival, age, sizeof(age));
    for (unsigned i = 0; i < u->nrcpts; i++) {
        struct queue_rcpt *r = &u->rcpts[i];
        if (is_final(r->state))
            continue;
        struct queue_result last = r->last;
        r->state = QUEUE_RCPT_BOUNCED;
        r->last = (struct queue_result){ .kind = QUEUE_RESULT_LOCAL, .code = 550, .when = now };
        snprintf(r->last.enhanced, sizeof(r->last.enhanced), "5.4.7");
        snprintf(r->last.remote, sizeof(r->last.remote), "%s", last.remote);
        snprintf(r->last.text, sizeof(r->last.text), "expired after %s in the queue; last: %.*s",
                 age, 400, last.text[0] ? last.text : "never tried");
    }
    a->expired = true;
}

static void persist(struct wk_attempt *a);

static void dsn_done(void *arg, queue_id_t id, int res)
{
    struct wk_attempt *a = arg;
    (void)id;
    if (res != 0) {
        char hex[QUEUE_ID_HEX];
        eng_log(ENG_LOG_ERROR, "worker: DSN for message=%s not queued: %s", id_hex(a, hex),
                queue_strerror(res));
        a->w->stats.errors++;
    }
    if (--a->dsn_pending == 0)
        persist(a);
}

/* Builds one DSN about view and enqueues it; a->dsn_pending counts it. A DSN that
 * cannot be made is logged and does not hold the message back. */
static void dsn_enqueue(struct wk_attempt *a, const struct queue_envelope *view,
                        enum queue_dsn_action action, int64_t now)
{
    struct eng_worker *w = a->w;
    uint32_t max_age = w->cfg.retry.max_age ? w->cfg.retry.max_age : WK_DEFAULT_MAX_AGE;
    struct queue_dsn_input in = {
        .reporting_mta = w->cfg.reporting_mta,
        .env = view,
        .action = action,
        .content = a->content,
        .content_len = a->len,
        .now = now,
        .retry_until = view->arrival + max_age,
    };
    void *buf = NULL;
    size_t len = 0;
    struct queue_envelope *denv = NULL;
    int rc = queue_dsn_build(&in, &buf, &len, &denv);
    if (rc == -ENOENT)
        return; /* nobody asked for one */
    if (rc == 0)
        rc = eng_worker_enqueue_owned(w, denv, buf, len, dsn_done, a);
    if (rc != 0) {
        char hex[QUEUE_ID_HEX];
        eng_log(ENG_LOG_ERROR, "worker: cannot make a DSN for message=%s: %s", id_hex(a, hex),
                rc < -10000 ? queue_strerror(rc) : strerror(-rc));
        w->stats.errors++;
        return;
    }
    a->dsn_pending++;
}

/* A FAILED DSN for the recipients this attempt bounced: those bounced by an earlier
 * attempt were reported then, so the view shows them as not bounced. */
static void dsn_failed(struct wk_attempt *a, int64_t now)
{
    struct queue_envelope *view = queue_envelope_dup(a->upd);
    if (!view) {
        a->w->stats.errors++;
        eng_log(ENG_LOG_ERROR, "worker: out of memory for a DSN");
        return;
    }
    for (unsigned i = 0; i < view->nrcpts; i++)
        if (a->env->rcpts[i].state == QUEUE_RCPT_BOUNCED)
            view->rcpts[i].state = QUEUE_RCPT_DELIVERED;
    dsn_enqueue(a, view, QUEUE_DSN_FAILED, now);
    queue_envelope_free(view);
}

/* a->upd holds the attempt's outcome: decide, count, send DSNs, then persist. */
void eng_worker_attempt_decide(struct wk_attempt *a)
{
    struct eng_worker *w = a->w;
    struct queue_envelope *u = a->upd;
    int64_t now = eng_worker_now();
    if (!queue_envelope_finished(u)) {
        int64_t next = now;
        enum queue_defer_verdict v = queue_sched_defer(w->sched, a->entry, now, &next);
        u->attempts = queue_entry_attempts(a->entry);
        u->next_attempt = next;
        if (v == QUEUE_DEFER_WARN && !u->is_dsn) {
            u->delay_warned = true;
            dsn_enqueue(a, u, QUEUE_DSN_DELAYED, now);
        } else if (v == QUEUE_DEFER_EXPIRE) {
            expire(a, now);
        }
    } else if (u->attempts < UINT16_MAX && a->admin == WK_ADMIN_NONE) {
        u->attempts++;
    }
    a->finished = queue_envelope_finished(u);
    for (unsigned i = 0; i < u->nrcpts; i++) {
        enum queue_rcpt_state before = a->env->rcpts[i].state, after = u->rcpts[i].state;
        a->delivered += after == QUEUE_RCPT_DELIVERED && before != QUEUE_RCPT_DELIVERED;
        a->bounced += after == QUEUE_RCPT_BOUNCED && before != QUEUE_RCPT_BOUNCED;
    }
    if (a->bounced > 0 && !u->is_dsn && a->admin != WK_ADMIN_DELETE)
        dsn_failed(a, now);
    if (a->dsn_pending > 0)
        eng_worker_attempt_set(a, WK_DSN);
    else
        persist(a);
}

/* One line of the delivery log, in one write: with O_APPEND the kernel places each
 * write whole at the end, so the lines of several workers never mix. A failed or short
 * write is counted and logged (rate-limited by the counter's powers of two), never
 * retried: the spool, not this log, is what keeps the message. */
static void log_line(struct eng_worker *w, const char *json)
{
    struct iovec iov[2] = { { (void *)json, strlen(json) }, { "\n", 1 } };
    ssize_t n = writev(w->cfg.delivery_log_fd, iov, 2);
    if (n == (ssize_t)(iov[0].iov_len + 1))
        return;
    w->stats.log_errors++;
    if ((w->stats.log_errors & (w->stats.log_errors - 1)) == 0)
        eng_log(ENG_LOG_ERROR, "worker: delivery log write failed (%llu so far): %s",
                (unsigned long long)w->stats.log_errors, n < 0 ? strerror(errno) : "short write");
}

/* The per-attempt metrics: per recipient, what the attempt did to it; the floor's
 * refusal, the new connection's TLS version and set-up time, the transaction time, and
 * for delivered messages their time since arrival. */
static void count_attempt(struct eng_metrics *m, const struct eng_deliver_report *rep)
{
    bool refused = !rep->transacted && rep->refusal != TLS_REASON_NONE;
    m->results[ENG_METRIC_RES_OK] += rep->delivered;
    m->results[ENG_METRIC_RES_PERMFAIL] += rep->bounced;
    m->results[refused ? ENG_METRIC_RES_REFUSED : ENG_METRIC_RES_TEMPFAIL] += rep->deferred;
    m->rcpts_deferred += rep->deferred;
    if (rep->refusal != TLS_REASON_NONE && (unsigned)rep->refusal < TLS_REASON__COUNT)
        m->refusals[rep->refusal]++;
    if (!rep->transacted)
        return;
    if (!rep->reused && !rep->plaintext) {
        int v = eng_metrics_tls_index(rep->verdict.ev.version);
        if (v >= 0)
            m->tls_versions[v]++;
        eng_metrics_observe(&m->handshake, rep->connect_ms * 1000);
    }
    eng_metrics_observe(&m->transaction, rep->txn_ms * 1000);
    int64_t age = (int64_t)time(NULL) - rep->env->arrival;
    if (rep->delivered > 0 && age >= 0)
        eng_metrics_observe(&m->end_to_end, (uint64_t)age * 1000000);
}

void eng_worker_attempt_done(void *arg, const struct eng_deliver_report *rep)
{
    struct wk_attempt *a = arg;
    struct eng_worker_stats *st = &a->w->stats;
    st->running--;
    if (a->w->cfg.delivery_log_fd > 0 && rep->log_json)
        log_line(a->w, rep->log_json);
    count_attempt(&a->w->metrics, rep);
    if (rep->transacted) {
        st->conns_reused += rep->reused;
        st->conns_new += !rep->reused;
        st->tls_resumed += !rep->reused && !rep->plaintext && rep->verdict.ev.resumed;
        st->tls_full += !rep->reused && !rep->plaintext && !rep->verdict.ev.resumed;
        st->opportunistic += !rep->floor_met;
        st->plaintext += rep->plaintext;
    }
    a->upd = queue_envelope_dup(rep->env);
    if (!a->upd) { /* nothing can be persisted: retried later from the spool's state */
        a->w->stats.errors++;
        queue_sched_defer(a->w->sched, a->entry, eng_worker_now(), NULL);
        eng_worker_attempt_release(a);
        return;
    }
    eng_worker_attempt_decide(a);
}

void eng_worker_attempt_fail(struct wk_attempt *a, int err)
{
    char hex[QUEUE_ID_HEX];
    eng_log(ENG_LOG_ERROR, "worker: attempt for message=%s did not start: %d", id_hex(a, hex), err);
    a->w->stats.running--;
    a->w->stats.errors++;
    a->upd = queue_envelope_dup(a->env);
    if (!a->upd) {
        queue_sched_defer(a->w->sched, a->entry, eng_worker_now(), NULL);
        eng_worker_attempt_release(a);
        return;
    }
    eng_worker_attempt_decide(a); /* not finished: deferred like a failed attempt */
}

static void persist_done(void *arg, queue_id_t id, int res);

/* The attempt's outcome is durable (by the removal or by the state file): count it. */
static void count_durable(struct wk_attempt *a)
{
    struct eng_worker *w = a->w;
    char hex[QUEUE_ID_HEX];
    eng_log(ENG_LOG_INFO, "worker: message=%s %s attempts=%u next=%lld delivered=%u bounced=%u",
            id_hex(a, hex),
            a->admin == WK_ADMIN_BOUNCE   ? "bounced by the operator"
            : a->admin == WK_ADMIN_DELETE ? "deleted by the operator"
            : a->expired                  ? "expired"
            : a->finished                 ? "finished"
                                          : "deferred",
            (unsigned)a->upd->attempts, (long long)a->upd->next_attempt, a->delivered, a->bounced);
    w->stats.delivered += a->delivered;
    w->stats.expired += a->expired;
    if (a->admin == WK_ADMIN_DELETE) { /* no DSN, no bounce: gone on request */
        w->stats.admin_deleted++;
        return;
    }
    w->stats.bounced += a->bounced;
    w->stats.admin_bounced += a->admin == WK_ADMIN_BOUNCE;
}

static void remove_done(void *arg, queue_id_t id, int res)
{
    struct wk_attempt *a = arg;
    struct eng_worker *w = a->w;
    (void)id;
    w->port_pending--;
    if (res != 0) {
        /* The old state is still on disk: write the final one instead, so that the
         * next recovery removes the message rather than delivering it again. */
        char hex[QUEUE_ID_HEX];
        eng_log(ENG_LOG_ERROR, "worker: cannot remove message=%s: %s; persisting its final state",
                id_hex(a, hex), queue_strerror(res));
        w->stats.errors++;
        a->remove_failed = true;
        eng_worker_attempt_set(a, WK_PERSISTING);
        queue_entry_mark_updated(a->entry);
        int rc = queue_port_update(w->port, a->upd, persist_done, a);
        w->port_pending++;
        if (rc != 0)
            persist_done(a, a->upd->id, rc);
        return;
    }
    w->stats.removed++;
    count_durable(a);
    queue_sched_remove(w->sched, a->entry);
    a->entry = NULL;
    eng_worker_attempt_release(a);
}

/* A finished message needs no state file of its own: its removal is the durable record
 * of the outcome (one sync round instead of two). Should the removal fail, the final
 * state is persisted instead (remove_done). */
static void remove_finished(struct wk_attempt *a)
{
    struct eng_worker *w = a->w;
    eng_worker_attempt_set(a, WK_REMOVING);
    int rc = queue_port_remove(w->port, a->upd->id, remove_done, a);
    w->port_pending++;
    if (rc != 0)
        remove_done(a, a->upd->id, rc);
}

static void persisted(struct wk_attempt *a, int res)
{
    struct eng_worker *w = a->w;
    if (res != 0) {
        /* Not durable, so not acted on: the message is tried again from the state on
         * disk (recipients delivered by this attempt may get a duplicate). */
        char hex[QUEUE_ID_HEX];
        eng_log(ENG_LOG_ERROR, "worker: cannot persist message=%s: %s", id_hex(a, hex),
                queue_strerror(res));
        w->stats.errors++;
        if (a->finished)
            queue_sched_defer(w->sched, a->entry, eng_worker_now(), NULL);
    } else {
        count_durable(a);
        if (a->finished) {
            /* Only after a failed removal: the next recovery removes it. */
            queue_sched_remove(w->sched, a->entry);
            a->entry = NULL;
            eng_worker_attempt_release(a);
            return;
        }
        w->stats.deferred++;
    }
    if (a->repop)
        queue_sched_requeue(w->sched, a->entry); /* its time came while it was persisting */
    eng_worker_attempt_release(a);
}

static void persist_done(void *arg, queue_id_t id, int res)
{
    struct wk_attempt *a = arg;
    (void)id;
    a->w->port_pending--;
    persisted(a, res);
}

static void persist(struct wk_attempt *a)
{
    if (a->finished && !a->remove_failed) {
        remove_finished(a);
        return;
    }
    eng_worker_attempt_set(a, WK_PERSISTING);
    queue_entry_mark_updated(a->entry);
    int rc = queue_port_update(a->w->port, a->upd, persist_done, a);
    if (rc == 0)
        a->w->port_pending++;
    else
        persisted(a, rc);
}
