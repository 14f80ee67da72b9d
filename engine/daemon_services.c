/*
 * engine/daemon_services.c — what the daemon runs on the worker group besides delivery:
 * the SMTP submission listeners (engine/smtpd.h, one server per worker on the same
 * addresses) and the HTTP API (engine/api.h, on worker 0), and how both hand messages
 * to the group.
 *
 * A submitted message with recipients in several domains becomes one envelope per
 * domain (the spool keeps one domain per message, so each is owned by one worker);
 * the client hears 250 only once every one of them is durable. Should one fail after
 * others were queued, the client gets a 4xx and may send again: those domains may then
 * get the message twice (logged with the ids), never zero times.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/api.h"
#include "engine/daemon_int.h"
#include "engine/log.h"
#include "engine/metrics.h"

/* ---- SMTP: one submission, split by domain -------------------------------------------- */

#define IDS_TEXT_MAX 160 /* the ids in the 250 reply: enough for 8, then "..." */

struct dm_submission {
    struct eng_daemon *d;
    eng_smtpd_submit_done_fn done;
    void *done_arg;
    char *content; /* one copy, shared by every domain's envelope until the last done */
    unsigned pending, queued;
    int err;
    char ids[IDS_TEXT_MAX];
};

static const char *domain_of(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at ? at + 1 : "";
}

static bool same_domain(const char *a, const char *b)
{
    return strcasecmp(domain_of(a), domain_of(b)) == 0;
}

/* What smtpd's done expects: -ENOSPC (452), -EFBIG (552), anything else 451. */
static int smtp_error(int res)
{
    if (res == QUEUE_ERR_FULL)
        return -ENOSPC;
    if (res == QUEUE_ERR_TOO_BIG)
        return -EFBIG;
    return res < 0 ? res : -EIO;
}

static void sub_finish(struct dm_submission *s)
{
    struct eng_daemon *d = s->d;
    if (s->err == 0) {
        atomic_fetch_add(&d->received_smtp, 1);
    } else if (s->queued > 0) {
        atomic_fetch_add(&d->received_smtp_partial, 1);
        eng_log(ENG_LOG_WARN,
                "submission: queued for %u domain(s) (%s) but not all: %s; the client is told "
                "to retry, so those may receive it twice",
                s->queued, s->ids, queue_strerror(s->err));
    }
    s->done(s->done_arg, s->err == 0 ? 0 : smtp_error(s->err), s->err == 0 ? s->ids : NULL);
    free(s->content);
    free(s);
}

/* One domain's envelope is durable (or failed). Runs on the submitting worker's thread
 * (eng_group_enqueue from a worker's thread answers there). */
static void sub_enqueued(void *arg, queue_id_t id, int res)
{
    struct dm_submission *s = arg;
    s->pending--;
    if (res == 0) {
        char hex[QUEUE_ID_HEX];
        size_t n = strlen(s->ids);
        if (n + QUEUE_ID_HEX + 5 < sizeof(s->ids))
            snprintf(s->ids + n, sizeof(s->ids) - n, "%s%s", n ? "," : "",
                     queue_id_format(id, hex));
        else if (!strstr(s->ids, "..."))
            snprintf(s->ids + n, sizeof(s->ids) - n, ",...");
        s->queued++;
    } else if (s->err == 0) {
        s->err = res;
    }
    if (s->pending == 0)
        sub_finish(s);
}

/* The envelope for the recipients of m whose domain is that of rcpts[first], marking
 * them in taken. NULL on out of memory or a domain too long for the spool. */
static struct queue_envelope *domain_envelope(const struct eng_smtpd_message *m, size_t first,
                                              bool *taken)
{
    size_t n = 0;
    for (size_t i = first; i < m->nrcpts; i++)
        n += !taken[i] && same_domain(m->rcpts[i], m->rcpts[first]);
    const char *dom = domain_of(m->rcpts[first]);
    if (n > QUEUE_RCPTS_MAX || strlen(dom) > QUEUE_DOMAIN_MAX || strlen(m->sender) > QUEUE_ADDR_MAX)
        return NULL;
    struct queue_envelope *env = queue_envelope_alloc((unsigned)n);
    if (!env)
        return NULL;
    snprintf(env->sender, sizeof(env->sender), "%s", m->sender);
    size_t k = 0;
    for (; dom[k]; k++)
        env->domain[k] = (char)tolower((unsigned char)dom[k]);
    env->domain[k] = '\0';
    env->needs_8bit = m->body == ENG_SMTPD_BODY_8BITMIME;
    env->needs_smtputf8 = m->smtputf8;
    env->arrival = (int64_t)time(NULL);
    size_t r = 0;
    for (size_t i = first; i < m->nrcpts; i++) {
        if (taken[i] || !same_domain(m->rcpts[i], m->rcpts[first]))
            continue;
        taken[i] = true;
        snprintf(env->rcpts[r].addr, sizeof(env->rcpts[r].addr), "%s", m->rcpts[i]);
        env->rcpts[r].state = QUEUE_RCPT_PENDING;
        r++;
    }
    return env;
}

static int dm_submit(void *arg, const struct eng_smtpd_message *m, eng_smtpd_submit_done_fn done,
                     void *done_arg)
{
    struct eng_daemon *d = arg;
    if (m->nrcpts == 0)
        return -EINVAL;
    struct dm_submission *s = calloc(1, sizeof(*s));
    bool *taken = calloc(m->nrcpts, sizeof(bool));
    char *content = malloc(m->content_len ? m->content_len : 1);
    if (!s || !taken || !content) {
        free(s);
        free(taken);
        free(content);
        return -ENOMEM;
    }
    memcpy(content, m->content, m->content_len);
    *s = (struct dm_submission){ .d = d, .done = done, .done_arg = done_arg, .content = content };
    int rc = 0;
    for (size_t i = 0; i < m->nrcpts && rc == 0; i++) {
        if (taken[i])
            continue;
        struct queue_envelope *env = domain_envelope(m, i, taken);
        if (!env) {
            rc = -ENOMEM;
            break;
        }
        /* Counted before the call: its done never runs from inside it, and it counts
         * down from here. */
        s->pending++;
        rc = eng_group_enqueue(d->group, env, content, m->content_len, sub_enqueued, s);
        if (rc != 0)
            s->pending--;
        queue_envelope_free(env);
    }
    free(taken);
    if (rc != 0 && s->pending == 0) { /* nothing queued: the server answers at once */
        free(content);
        free(s);
        return rc == -EAGAIN ? -EAGAIN : smtp_error(rc);
    }
    if (rc != 0)
        s->err = rc; /* the domains queued so far complete, then the client hears 4xx */
    return 0;
}

/* ---- the SMTP service -------------------------------------------------------------------- */

void eng_daemon_smtpd_config(struct eng_daemon *d, const struct eng_config *c,
                             const char *relay_networks, const struct eng_smtpd_credentials *creds,
                             struct eng_smtpd_config *out)
{
    *out = (struct eng_smtpd_config){
        .tls = d->server_tls,
        .hostname = c->delivery.helo_name,
        .max_message_size = c->submission.max_message_size,
        .max_rcpts = c->submission.max_recipients,
        .command_timeout_ms = c->submission.command_timeout_ms,
        .data_timeout_ms = c->submission.data_timeout_ms,
        .max_per_client = c->submission.max_connections_per_client,
        .relay_networks = relay_networks,
        .creds = creds,
        .submit = dm_submit,
        .submit_arg = d,
    };
}

static int smtp_start(void *arg, unsigned index, struct eng_loop *loop, void **state)
{
    struct eng_daemon *d = arg;
    const struct eng_config *c = d->cfg;
    struct eng_smtpd_config sc;
    eng_daemon_smtpd_config(d, c, d->relay_networks, d->creds, &sc);
    for (size_t i = 0; i < c->listen.nsmtp && i < ENG_SMTPD_LISTEN_MAX; i++) {
        sc.listen[i].addr = c->listen.smtp[i].address;
        sc.listen[i].mode = c->listen.smtp[i].mode == ENG_LISTEN_IMPLICIT
                                    ? ENG_SMTPD_MODE_IMPLICIT_TLS
                                    : ENG_SMTPD_MODE_STARTTLS;
        sc.nlisten++;
    }
    struct eng_smtpd *srv = NULL;
    int rc = eng_smtpd_new(loop, &sc, &srv);
    if (rc != 0 && srv) { /* only the loop's error leaves a server to wind down */
        while (!eng_smtpd_idle(srv) && eng_loop_run_once(loop, 100) >= 0)
            ;
        eng_smtpd_free(srv);
        srv = NULL;
    }
    if (rc == 0 && index == 0)
        for (size_t i = 0; i < sc.nlisten; i++) {
            char a[64];
            eng_log(ENG_LOG_INFO, "smtp: listening on %s (%s)",
                    eng_smtpd_listen_address(srv, i, a, sizeof(a)),
                    sc.listen[i].mode == ENG_SMTPD_MODE_IMPLICIT_TLS ? "implicit TLS"
                    : d->server_tls                                  ? "STARTTLS"
                                    : "no STARTTLS: no certificate");
        }
    if (index < ENG_GROUP_MAX_WORKERS)
        d->smtpd[index] = srv;
    *state = srv;
    return rc;
}

static void smtp_stop(void *arg, unsigned index, void *state)
{
    struct eng_daemon *d = arg;
    if (index < ENG_GROUP_MAX_WORKERS)
        d->smtpd[index] = NULL; /* a reload no longer reaches it */
    eng_smtpd_shutdown(state);
}

static bool smtp_idle(void *arg, unsigned index, void *state)
{
    (void)arg;
    (void)index;
    return eng_smtpd_idle(state);
}

static void smtp_free(void *arg, unsigned index, void *state)
{
    (void)arg;
    (void)index;
    eng_smtpd_free(state);
}

/* ---- the HTTP API ------------------------------------------------------------------------ */

static int api_enqueue(void *arg, const struct queue_envelope *env, const void *content, size_t len,
                       eng_api_done_fn done, void *done_arg)
{
    struct eng_daemon *d = arg;
    /* On worker 0's thread: the group answers done here, as the API requires. */
    return eng_group_enqueue(d->group, env, content, len, done, done_arg);
}

static void api_metrics(void *arg, struct eng_metrics *out)
{
    struct eng_daemon *d = arg;
    eng_group_metrics(d->group, out);
    out->received[ENG_METRIC_SRC_SMTP] += atomic_load(&d->received_smtp);
    struct queue_spool_stats ss;
    queue_spool_stats(d->spool, &ss);
    out->spool_bytes += ss.spool_bytes;
}

static int api_health(void *arg, json_t **out)
{
    struct eng_daemon *d = arg;
    unsigned n = eng_group_nworkers(d->group), running = 0;
    for (unsigned i = 0; i < n; i++) {
        struct eng_group_worker_stats ws;
        if (eng_group_worker_stats(d->group, i, &ws) == 0 && ws.state == ENG_GROUP_W_RUNNING)
            running++;
    }
    *out = json_pack("{s:i,s:i}", "workers", (json_int_t)n, "running", (json_int_t)running);
    return running == n ? 0 : -EAGAIN;
}

struct dm_api {
    struct eng_daemon *d;
    struct eng_api *api;
};

static const struct eng_api_ops api_ops = {
    .enqueue = api_enqueue,
    .metrics = api_metrics,
    .queue_summary = eng_daemon_queue_summary,
    .queue_list = eng_daemon_queue_list,
    .destinations = eng_daemon_destinations,
    .queue_action = eng_daemon_queue_action,
    .health = api_health,
};

static int api_start(void *arg, unsigned index, struct eng_loop *loop, void **state)
{
    (void)index;
    struct eng_daemon *d = arg;
    struct dm_api *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->d = d;
    struct eng_api_config ac = {
        .loop = loop,
        .listen = d->cfg->listen.http,
        .tokens = (const char *const *)d->tokens,
        .ntokens = (unsigned)d->ntokens,
        .ops = &api_ops,
        .ops_arg = d,
        .hostname = d->cfg->delivery.helo_name,
        .max_message = d->cfg->submission.max_message_size,
        .max_rcpts = d->cfg->submission.max_recipients,
    };
    int rc = eng_api_new(&ac, &a->api);
    if (rc != 0) {
        free(a);
        return rc;
    }
    eng_log(ENG_LOG_INFO, "http: listening on %s (port %u)%s", d->cfg->listen.http,
            (unsigned)eng_api_port(a->api), d->ntokens ? "" : "; no API token: /api/ answers 401");
    d->api = a->api;
    *state = a;
    return 0;
}

static void api_stop(void *arg, unsigned index, void *state)
{
    (void)index;
    struct eng_daemon *d = arg;
    d->api = NULL;
    struct dm_api *a = state;
    eng_api_free(a->api); /* requests still waiting for their enqueue get 503 */
    a->api = NULL;
}

static void api_free(void *arg, unsigned index, void *state)
{
    (void)arg;
    (void)index;
    struct dm_api *a = state;
    eng_api_free(a->api);
    free(a);
}

unsigned eng_daemon_services(struct eng_daemon *d, struct eng_group_service *out)
{
    unsigned n = 0;
    if (d->cfg->listen.nsmtp > 0)
        out[n++] = (struct eng_group_service){ .name = "smtp",
                                               .start = smtp_start,
                                               .stop = smtp_stop,
                                               .idle = smtp_idle,
                                               .free = smtp_free,
                                               .arg = d };
    if (d->cfg->listen.http)
        out[n++] = (struct eng_group_service){ .name = "http",
                                               .start = api_start,
                                               .stop = api_stop,
                                               .free = api_free,
                                               .arg = d,
                                               .first_only = true };
    return n;
}
