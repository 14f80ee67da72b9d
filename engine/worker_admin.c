/*
 * engine/worker_admin.c — the operator's queue tools on one worker (worker.h,
 * "administration"): list the messages with their recipients' states, sum the queue up
 * per domain, and flush, bounce or delete by id or by domain.
 *
 * Bounce and delete take the message out of circulation (queue_sched_take), borrow a
 * free attempt slot, read the message from the spool and hand the slot to the very
 * path an attempt's outcome takes (eng_worker_attempt_decide): the FAILED DSN is made
 * durable first, then the message is removed, and should the removal fail its final
 * state is persisted so that the next recovery removes it. Nothing here writes to the
 * spool by itself.
 *
 * Memory (STYLE point 7): control plane: the id lists and per-domain tables are
 * allocated per call, -ENOMEM to the caller.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"
#include "engine/worker_int.h"

#define ADMIN_BOUNCE_TEXT "bounced by the operator"
#define ADMIN_DELETE_TEXT "deleted by the operator"

/* ---- collecting ids ----------------------------------------------------------------- */

struct id_list {
    queue_id_t *v;
    size_t n, cap;
    bool failed;
};

static bool collect_id(void *arg, const struct queue_entry *e)
{
    struct id_list *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        queue_id_t *v = realloc(l->v, cap * sizeof(*v));
        if (!v) {
            l->failed = true;
            return false;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = queue_entry_id(e);
    return true;
}

static int cmp_id(const void *a, const void *b)
{
    queue_id_t x = *(const queue_id_t *)a, y = *(const queue_id_t *)b;
    return (x > y) - (x < y);
}

/* The ids of domain's entries (all with NULL), oldest first: ids grow with time. Acting
 * on a list rather than during the walk: an action moves entries, which a walk over
 * the scheduler's table must not see. */
static int collect(struct eng_worker *w, const char *domain, struct id_list *out)
{
    *out = (struct id_list){ 0 };
    queue_sched_foreach(w->sched, domain, collect_id, out);
    if (out->failed) {
        free(out->v);
        *out = (struct id_list){ 0 };
        return -ENOMEM;
    }
    if (out->n > 1)
        qsort(out->v, out->n, sizeof(*out->v), cmp_id);
    return 0;
}

/* ---- list ------------------------------------------------------------------------------ */

long eng_worker_admin_list(struct eng_worker *w, const char *domain, size_t limit,
                           eng_worker_list_fn fn, void *arg)
{
    if (!w || !fn || !w->sched)
        return -EINVAL;
    struct id_list ids;
    int rc = collect(w, domain, &ids);
    if (rc != 0)
        return rc;
    for (size_t i = 0, shown = 0; i < ids.n && shown < limit; i++) {
        struct queue_entry *e = queue_sched_find(w->sched, ids.v[i]);
        struct queue_envelope *env = NULL;
        if (!e || queue_spool_read(w->cfg.spool, ids.v[i], &env, NULL, NULL) != 0)
            continue; /* gone meanwhile (or quarantined): not the operator's concern here */
        struct eng_worker_listing m = {
            .env = env,
            .state = queue_entry_state(e),
            .next_attempt = queue_entry_next_attempt(e),
            .attempts = queue_entry_attempts(e),
            .busy = eng_worker_slot_of(w, e) != NULL,
        };
        fn(arg, &m);
        queue_envelope_free(env);
        shown++;
    }
    free(ids.v);
    return (long)ids.n;
}

/* ---- summary --------------------------------------------------------------------------- */

struct sum_table {
    struct eng_worker_domain_summary *v;
    size_t n, cap;
    bool failed;
};

static bool sum_domain(void *arg, const struct queue_sched_domain_info *d)
{
    struct sum_table *t = arg;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        struct eng_worker_domain_summary *v = realloc(t->v, cap * sizeof(*v));
        if (!v) {
            t->failed = true;
            return false;
        }
        t->v = v;
        t->cap = cap;
    }
    t->v[t->n++] = (struct eng_worker_domain_summary){
        .domain = d->name,
        .messages = d->entries,
        .ready = d->ready,
        .deferred = d->deferred,
        .inflight = d->inflight,
        .oldest_arrival = INT64_MAX,
    };
    return true;
}

/* By the interned name's address: every entry of a domain points at the same one. */
static int cmp_domain_ptr(const void *a, const void *b)
{
    const char *x = ((const struct eng_worker_domain_summary *)a)->domain;
    const char *y = ((const struct eng_worker_domain_summary *)b)->domain;
    return (x > y) - (x < y);
}

static bool sum_oldest(void *arg, const struct queue_entry *e)
{
    struct sum_table *t = arg;
    struct eng_worker_domain_summary key = { .domain = queue_entry_domain(e) };
    struct eng_worker_domain_summary *d = bsearch(&key, t->v, t->n, sizeof(*t->v), cmp_domain_ptr);
    if (d && queue_entry_arrival(e) < d->oldest_arrival)
        d->oldest_arrival = queue_entry_arrival(e);
    return true;
}

long eng_worker_admin_summary(struct eng_worker *w, eng_worker_summary_fn fn, void *arg)
{
    if (!w || !fn || !w->sched)
        return -EINVAL;
    struct sum_table t = { 0 };
    queue_sched_foreach_domain(w->sched, sum_domain, &t);
    if (t.failed) {
        free(t.v);
        return -ENOMEM;
    }
    /* The counts come with the domains; the oldest arrival takes one pass. */
    if (t.n > 1)
        qsort(t.v, t.n, sizeof(*t.v), cmp_domain_ptr);
    if (t.n > 0)
        queue_sched_foreach(w->sched, NULL, sum_oldest, &t);
    for (size_t i = 0; i < t.n; i++)
        fn(arg, &t.v[i]);
    free(t.v);
    return (long)t.n;
}

/* ---- flush ------------------------------------------------------------------------------ */

int eng_worker_admin_flush(struct eng_worker *w, queue_id_t id, const char *domain,
                           struct eng_worker_action_result *out)
{
    if (!w || !out || !w->sched || (id == 0) == (domain == NULL))
        return -EINVAL;
    *out = (struct eng_worker_action_result){ 0 };
    int64_t now = eng_worker_now();
    if (domain) {
        struct id_list ids;
        int rc = collect(w, domain, &ids);
        if (rc != 0)
            return rc;
        out->matched = (unsigned)ids.n;
        free(ids.v);
        out->done = queue_sched_flush(w->sched, domain, now);
    } else {
        struct queue_entry *e = queue_sched_find(w->sched, id);
        if (!e)
            return QUEUE_ERR_NOT_FOUND;
        out->matched = 1;
        if (queue_entry_state(e) == QUEUE_ENTRY_DEFERRED) {
            /* Out of the timer heap and to the head of its domain's queue. An entry
             * whose last outcome is still being persisted is popped, seen busy and
             * requeued by the run step once that is durable (eng_worker_pump). */
            queue_sched_take(w->sched, e);
            queue_sched_requeue(w->sched, e);
            out->done = 1;
        }
    }
    eng_worker_pump(w);
    return 0;
}

/* ---- bounce and delete ------------------------------------------------------------------- */

/* Every recipient not final becomes BOUNCED with the operator's result. */
static void mark_bounced(struct queue_envelope *u, enum wk_admin why, int64_t now)
{
    for (unsigned i = 0; i < u->nrcpts; i++) {
        struct queue_rcpt *r = &u->rcpts[i];
        if (r->state == QUEUE_RCPT_DELIVERED || r->state == QUEUE_RCPT_BOUNCED)
            continue;
        char remote[sizeof(r->last.remote)];
        memcpy(remote, r->last.remote, sizeof(remote));
        r->state = QUEUE_RCPT_BOUNCED;
        /* 5.0.0, "other undefined status" (RFC 3463): no code says "an operator gave
         * up on it", and the text does. */
        r->last = (struct queue_result){ .kind = QUEUE_RESULT_LOCAL, .code = 550, .when = now };
        snprintf(r->last.enhanced, sizeof(r->last.enhanced), "5.0.0");
        memcpy(r->last.remote, remote, sizeof(remote));
        snprintf(r->last.text, sizeof(r->last.text), "%s",
                 why == WK_ADMIN_DELETE ? ADMIN_DELETE_TEXT : ADMIN_BOUNCE_TEXT);
    }
}

/* Ends one message for the operator. Returns 0 (under way), -EBUSY (an attempt holds it,
 * or no slot is free), QUEUE_ERR_NOT_FOUND (gone from the spool: dropped from the
 * scheduler too), or the spool's error. */
static int end_one(struct eng_worker *w, struct queue_entry *e, enum wk_admin why)
{
    if (queue_entry_state(e) == QUEUE_ENTRY_INFLIGHT || eng_worker_slot_of(w, e) || !w->free_slots)
        return -EBUSY;
    queue_id_t id = queue_entry_id(e);
    struct queue_envelope *env = NULL;
    void *content = NULL;
    size_t len = 0;
    /* Only a bounce needs the content (the DSN returns its headers). */
    int rc = queue_spool_read(w->cfg.spool, id, &env, why == WK_ADMIN_BOUNCE ? &content : NULL,
                              why == WK_ADMIN_BOUNCE ? &len : NULL);
    if (rc == QUEUE_ERR_NOT_FOUND || rc == QUEUE_ERR_CORRUPT) {
        queue_sched_remove(w->sched, e); /* gone, or quarantined by the spool */
        return QUEUE_ERR_NOT_FOUND;
    }
    if (rc != 0)
        return rc;
    struct queue_envelope *upd = queue_envelope_dup(env);
    if (!upd) {
        queue_envelope_free(env);
        free(content);
        return -ENOMEM;
    }
    mark_bounced(upd, why, eng_worker_now());
    queue_sched_take(w->sched, e);
    struct wk_attempt *a = w->free_slots;
    w->free_slots = a->next_free;
    a->w = w;
    a->admin = why;
    a->entry = e;
    a->env = env;
    a->upd = upd;
    a->content = content;
    a->len = len;
    char hex[QUEUE_ID_HEX];
    eng_log(ENG_LOG_INFO, "worker: message=%s %s", queue_id_format(id, hex),
            why == WK_ADMIN_DELETE ? "deleting on the operator's request"
                                   : "bouncing on the operator's request");
    eng_worker_attempt_decide(a);
    return 0;
}

static int end_messages(struct eng_worker *w, queue_id_t id, const char *domain, enum wk_admin why,
                        struct eng_worker_action_result *out)
{
    if (!w || !out || !w->sched || (id == 0) == (domain == NULL))
        return -EINVAL;
    *out = (struct eng_worker_action_result){ 0 };
    if (id) {
        struct queue_entry *e = queue_sched_find(w->sched, id);
        if (!e)
            return QUEUE_ERR_NOT_FOUND;
        if (w->closing)
            return -ESHUTDOWN;
        out->matched = 1;
        int rc = end_one(w, e, why);
        if (rc == 0)
            out->done = 1;
        return rc;
    }
    if (w->closing)
        return -ESHUTDOWN;
    struct id_list ids;
    int rc = collect(w, domain, &ids);
    if (rc != 0)
        return rc;
    out->matched = (unsigned)ids.n;
    for (size_t i = 0; i < ids.n; i++) {
        struct queue_entry *e = queue_sched_find(w->sched, ids.v[i]);
        if (!e)
            continue; /* a bounce's DSN removal cannot remove another: defensive */
        rc = end_one(w, e, why);
        if (rc == 0)
            out->done++;
        else if (rc == -EBUSY)
            out->busy++;
        else if (rc != QUEUE_ERR_NOT_FOUND)
            w->stats.errors++;
    }
    free(ids.v);
    return 0;
}

int eng_worker_admin_bounce(struct eng_worker *w, queue_id_t id, const char *domain,
                            struct eng_worker_action_result *out)
{
    return end_messages(w, id, domain, WK_ADMIN_BOUNCE, out);
}

int eng_worker_admin_delete(struct eng_worker *w, queue_id_t id, const char *domain,
                            struct eng_worker_action_result *out)
{
    return end_messages(w, id, domain, WK_ADMIN_DELETE, out);
}
