/*
 * engine/worker_reconfig.c — a configuration reload on one worker (worker.h,
 * "reconfiguration"): a new policy table, retry schedule and timeouts for what starts
 * from now on.
 *
 * Why it is safe without locks: it runs on the worker's own thread (eng_group_call),
 * between two completions, so no attempt is in the middle of reading w->dcfg. Each
 * attempt copied w->dcfg when it started (eng_deliver_start) and keeps its policy
 * pointer, so running attempts finish under the settings they began with; the caller
 * keeps the old tables alive for them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/log.h"
#include "engine/worker_int.h"

#define RC_FORGET_MAX 4096 /* refusals dropped per reload; a cache of more is trimmed by TTL */

struct refusals {
    struct {
        char host[ENG_CAPCACHE_HOST_MAX];
        uint16_t port;
    } * v;
    size_t n, cap;
};

/* eng_capcache_foreach forbids changing the cache from its callback: collect, then
 * forget. */
static bool collect_refusal(void *arg, const struct eng_capcache_entry *e)
{
    struct refusals *r = arg;
    if (e->pass)
        return true;
    if (r->n == r->cap)
        return false;
    memcpy(r->v[r->n].host, e->host, sizeof(e->host));
    r->v[r->n].port = e->port;
    r->n++;
    return true;
}

static void forget_refusals(struct eng_worker *w)
{
    struct eng_capcache *c = w->cfg.capcache;
    if (!c)
        return;
    struct eng_capcache_stats st;
    eng_capcache_stats(c, &st);
    struct refusals r = { .cap = st.refuse_entries < RC_FORGET_MAX ? st.refuse_entries
                                                                   : RC_FORGET_MAX };
    if (r.cap == 0)
        return;
    r.v = calloc(r.cap, sizeof(*r.v));
    if (!r.v) { /* control plane: the refusals then expire on their TTL */
        eng_log(ENG_LOG_WARN, "worker: reload: no memory to drop cached refusals");
        return;
    }
    eng_capcache_foreach(c, (int64_t)time(NULL), collect_refusal, &r);
    for (size_t i = 0; i < r.n; i++)
        eng_capcache_forget(c, r.v[i].host, r.v[i].port);
    free(r.v);
}

int eng_worker_reconfigure(struct eng_worker *w, const struct eng_worker_reconfig *rc)
{
    if (!w || !rc)
        return -EINVAL;
    /* The only step that can fail goes first, so a refusal leaves everything as it was. */
    if (w->sched) {
        int err = queue_sched_set_retry(w->sched, &rc->retry);
        if (err != 0)
            return err;
    }
    w->cfg.retry = rc->retry;
    if (rc->policy) {
        w->cfg.policy = rc->policy;
        w->dcfg.policy = rc->policy;
    }
    w->cfg.connect_timeout_ms = rc->connect_timeout_ms;
    w->cfg.reply_timeout_ms = rc->reply_timeout_ms;
    w->dcfg.connect_timeout_ms = rc->connect_timeout_ms;
    w->dcfg.reply_timeout_ms = rc->reply_timeout_ms;
    if (rc->forget_refusals)
        forget_refusals(w);
    return 0;
}
