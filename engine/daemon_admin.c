/*
 * engine/daemon_admin.c — the daemon's queue administration behind the HTTP API
 * (engine/api.h: queue summary, message listing, destinations, flush / bounce / delete):
 * each op asks the workers concerned through eng_group_call and turns their answers
 * into JSON.
 *
 * Threading: the API runs on worker 0, the one thread that makes cross-worker calls
 * (the rule that keeps eng_group_call deadlock-free, engine/group.h). The callbacks
 * below run on the asked worker's thread and only fill the caller's structures, which
 * the caller reads once the call has returned.
 *
 * Which workers: a domain's messages live on its owner (eng_group_shard_of); an id
 * names no domain, so an action by id asks each worker in turn until one has it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/api.h"
#include "engine/daemon_int.h"
#include "engine/log.h"

/* RFC 3339 UTC, or JSON null for 0 (never). A new reference. */
static json_t *json_time(int64_t t)
{
    if (t <= 0)
        return json_null();
    char buf[32];
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(buf);
}

static json_t *json_id(queue_id_t id)
{
    char hex[QUEUE_ID_HEX];
    return json_string(queue_id_format(id, hex));
}

/* ---- summary ------------------------------------------------------------------------------ */

struct sum_call {
    json_t *domains; /* the array all workers add to */
    long rc;
};

static void sum_domain(void *arg, const struct eng_worker_domain_summary *d)
{
    struct sum_call *c = arg;
    json_array_append_new(c->domains,
                          json_pack("{s:s,s:I,s:I,s:I,s:I,s:o}", "domain", d->domain, "messages",
                                    (json_int_t)d->messages, "ready", (json_int_t)d->ready,
                                    "deferred", (json_int_t)d->deferred, "inflight",
                                    (json_int_t)d->inflight, "oldest_arrival",
                                    json_time(d->oldest_arrival)));
}

static void sum_run(struct eng_worker *w, void *arg)
{
    struct sum_call *c = arg;
    c->rc = eng_worker_admin_summary(w, sum_domain, c);
}

static int by_domain(const void *a, const void *b)
{
    return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "domain")),
                  json_string_value(json_object_get(*(json_t *const *)b, "domain")));
}

/* Sorts a JSON array of objects in place with cmp over its elements. */
static int sort_array(json_t *arr, int (*cmp)(const void *, const void *))
{
    size_t n = json_array_size(arr);
    if (n < 2)
        return 0; /* also: qsort must not get a NULL array */
    json_t **v = malloc(n * sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        v[i] = json_incref(json_array_get(arr, i));
    qsort(v, n, sizeof(*v), cmp);
    json_array_clear(arr);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, v[i]);
    free(v);
    return 0;
}

int eng_daemon_queue_summary(void *arg, json_t **out)
{
    struct eng_daemon *d = arg;
    struct sum_call c = { .domains = json_array() };
    if (!c.domains)
        return -ENOMEM;
    unsigned n = eng_group_nworkers(d->group);
    for (unsigned i = 0; i < n; i++) {
        int rc = eng_group_call(d->group, i, sum_run, &c);
        if (rc == 0 && c.rc < 0)
            rc = (int)c.rc;
        if (rc != 0) {
            json_decref(c.domains);
            return rc;
        }
    }
    sort_array(c.domains, by_domain);
    json_int_t tot[4] = { 0 };
    static const char *const keys[4] = { "messages", "ready", "deferred", "inflight" };
    size_t i;
    json_t *v;
    json_array_foreach(c.domains, i, v)
    {
        for (unsigned k = 0; k < 4; k++)
            tot[k] += json_integer_value(json_object_get(v, keys[k]));
    }
    *out = json_pack("{s:o,s:{s:I,s:I,s:I,s:I,s:I}}", "domains", c.domains, "total", "domains",
                     (json_int_t)json_array_size(c.domains), keys[0], tot[0], keys[1], tot[1],
                     keys[2], tot[2], keys[3], tot[3]);
    return *out ? 0 : -ENOMEM;
}

/* ---- listing ------------------------------------------------------------------------------ */

struct list_call {
    const char *domain;
    unsigned limit;
    json_t *messages; /* every worker's, merged by the caller */
    long rc;
};

static json_t *rcpt_json(const struct queue_rcpt *r)
{
    const struct queue_result *l = &r->last;
    json_t *last = json_null();
    if (l->kind != QUEUE_RESULT_NONE)
        last = json_pack("{s:s,s:i,s:s,s:s,s:o,s:s}", "kind", queue_result_kind_name(l->kind),
                         "code", (int)l->code, "enhanced", l->enhanced, "remote", l->remote, "when",
                         json_time(l->when), "text", l->text);
    return json_pack("{s:s,s:s,s:i,s:o}", "addr", r->addr, "state", queue_rcpt_state_name(r->state),
                     "attempts", (int)r->attempts, "last", last);
}

static void list_one(void *arg, const struct eng_worker_listing *m)
{
    struct list_call *c = arg;
    const struct queue_envelope *env = m->env;
    json_t *rcpts = json_array();
    for (unsigned i = 0; rcpts && i < env->nrcpts; i++)
        json_array_append_new(rcpts, rcpt_json(&env->rcpts[i]));
    json_array_append_new(
            c->messages,
            json_pack("{s:o,s:s,s:s,s:b,s:o,s:i,s:o,s:s,s:b,s:I,s:o}", "id", json_id(env->id),
                      "domain", env->domain, "sender", env->sender, "dsn", env->is_dsn, "arrival",
                      json_time(env->arrival), "attempts", (int)m->attempts, "next_attempt",
                      json_time(m->state == QUEUE_ENTRY_DEFERRED ? m->next_attempt : 0), "state",
                      queue_entry_state_name(m->state), "busy", m->busy, "size",
                      (json_int_t)env->content_size, "recipients", rcpts));
}

static void list_run(struct eng_worker *w, void *arg)
{
    struct list_call *c = arg;
    c->rc = eng_worker_admin_list(w, c->domain, c->limit, list_one, c);
}

static int by_id(const void *a, const void *b)
{
    /* Fixed-width lowercase hex: the text order is the numeric order. */
    return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "id")),
                  json_string_value(json_object_get(*(json_t *const *)b, "id")));
}

int eng_daemon_queue_list(void *arg, const char *domain, unsigned limit, json_t **out)
{
    struct eng_daemon *d = arg;
    struct list_call c = { .domain = domain, .limit = limit, .messages = json_array() };
    if (!c.messages)
        return -ENOMEM;
    unsigned n = eng_group_nworkers(d->group), first = 0, last = n;
    if (domain) { /* one owner */
        first = eng_group_shard_of(d->group, domain);
        last = first + 1;
    }
    long total = 0;
    for (unsigned i = first; i < last; i++) {
        int rc = eng_group_call(d->group, i, list_run, &c);
        if (rc == 0 && c.rc < 0)
            rc = (int)c.rc;
        if (rc != 0) {
            json_decref(c.messages);
            return rc;
        }
        total += c.rc;
    }
    /* Each worker gave its oldest `limit`: the oldest `limit` of all are among them. */
    sort_array(c.messages, by_id);
    while (json_array_size(c.messages) > limit)
        json_array_remove(c.messages, json_array_size(c.messages) - 1);
    *out = json_pack("{s:I,s:i,s:o}", "total", (json_int_t)total, "limit", (int)limit, "messages",
                     c.messages);
    return *out ? 0 : -ENOMEM;
}

/* ---- destinations --------------------------------------------------------------------------- */

struct dest_call {
    json_t *list;
    unsigned worker;
};

static bool dest_one(void *arg, const struct eng_capcache_entry *e)
{
    struct dest_call *c = arg;
    char desc[ENG_CAPCACHE_DESCRIBE_MAX];
    eng_capcache_describe(e, desc, sizeof(desc));
    json_array_append_new(
            c->list,
            json_pack("{s:s,s:i,s:s,s:s?,s:s?,s:s?,s:b,s:s,s:i,s:o,s:o,s:b,s:s,s:i}", "host",
                      e->host, "port", (int)e->port, "verdict", e->pass ? "pass" : "refuse",
                      "reason", e->pass ? NULL : tls_reason_name(e->reason), "tls_version",
                      e->version ? tls_version_name(e->version) : NULL, "highest_tls_version",
                      e->highest_version ? tls_version_name(e->highest_version) : NULL,
                      "starttls_offered", e->starttls_offered, "cipher", e->cipher, "refusals",
                      (int)e->refusals, "checked_at", json_time(e->checked_at), "expires_at",
                      json_time(e->expires_at), "blocked", !e->pass, "description", desc, "worker",
                      (int)c->worker));
    return true;
}

static void dest_run(struct eng_worker *w, void *arg)
{
    struct dest_call *c = arg;
    struct eng_capcache *cc = eng_worker_capcache(w);
    if (cc)
        eng_capcache_foreach(cc, (int64_t)time(NULL), dest_one, c);
}

static int by_host(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int c = strcmp(json_string_value(json_object_get(x, "host")),
                   json_string_value(json_object_get(y, "host")));
    if (c == 0)
        c = (int)(json_integer_value(json_object_get(x, "worker")) -
                  json_integer_value(json_object_get(y, "worker")));
    return c;
}

int eng_daemon_destinations(void *arg, json_t **out)
{
    struct eng_daemon *d = arg;
    struct dest_call c = { .list = json_array() };
    if (!c.list)
        return -ENOMEM;
    /* Each worker keeps its own cache (a host serving domains of several workers may
     * appear once per worker): every entry says which. */
    for (c.worker = 0; c.worker < eng_group_nworkers(d->group); c.worker++) {
        int rc = eng_group_call(d->group, c.worker, dest_run, &c);
        if (rc != 0) {
            json_decref(c.list);
            return rc;
        }
    }
    sort_array(c.list, by_host);
    *out = json_pack("{s:o}", "destinations", c.list);
    return *out ? 0 : -ENOMEM;
}

/* ---- actions --------------------------------------------------------------------------------- */

struct act_call {
    enum eng_api_action action;
    queue_id_t id;
    const char *domain;
    int rc;
    struct eng_worker_action_result res;
};

static void act_run(struct eng_worker *w, void *arg)
{
    struct act_call *c = arg;
    switch (c->action) {
    case ENG_API_ACTION_FLUSH: c->rc = eng_worker_admin_flush(w, c->id, c->domain, &c->res); break;
    case ENG_API_ACTION_BOUNCE:
        c->rc = eng_worker_admin_bounce(w, c->id, c->domain, &c->res);
        break;
    case ENG_API_ACTION_DELETE:
        c->rc = eng_worker_admin_delete(w, c->id, c->domain, &c->res);
        break;
    default: c->rc = -EINVAL;
    }
}

int eng_daemon_queue_action(void *arg, enum eng_api_action action, queue_id_t id,
                            const char *domain, json_t **out)
{
    struct eng_daemon *d = arg;
    struct act_call c = { .action = action, .id = id, .domain = domain, .rc = QUEUE_ERR_NOT_FOUND };
    if ((id == 0) == (domain == NULL))
        return -EINVAL;
    if (domain) {
        int rc = eng_group_call(d->group, eng_group_shard_of(d->group, domain), act_run, &c);
        if (rc != 0)
            return rc;
    } else {
        /* The id says nothing of its domain: the worker that has it answers. */
        unsigned n = eng_group_nworkers(d->group);
        for (unsigned i = 0; i < n && c.rc == QUEUE_ERR_NOT_FOUND; i++) {
            int rc = eng_group_call(d->group, i, act_run, &c);
            if (rc != 0)
                return rc;
        }
    }
    if (c.rc != 0)
        return c.rc;
    *out = json_pack("{s:s,s:o,s:I,s:I,s:I}", "action", eng_api_action_name(action),
                     domain ? "domain" : "id", domain ? json_string(domain) : json_id(id),
                     "matched", (json_int_t)c.res.matched, "affected", (json_int_t)c.res.done,
                     "busy", (json_int_t)c.res.busy);
    return *out ? 0 : -ENOMEM;
}
