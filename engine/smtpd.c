/*
 * engine/smtpd.c — the submission server's listeners on one loop (see smtpd.h):
 * configuration with its defaults, binding with SO_REUSEPORT so one server per worker
 * thread can share an address, multishot accept, shutdown and counters.
 *
 * Connections themselves are smtpd_io.c's; this file only hands each accepted fd over.
 */
#include "engine/smtpd_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "engine/addr.h"
#include "engine/log.h"
#include "queue/queue.h"

static const char *const reject_names[] = {
#define ENG_SMTPD_REJ_NAME(name, str) [name] = str,
    ENG_SMTPD_REJECTS(ENG_SMTPD_REJ_NAME)
#undef ENG_SMTPD_REJ_NAME
};

const char *eng_smtpd_reject_name(enum eng_smtpd_reject r)
{
    return (unsigned)r < ENG_SMTPD_REJ__COUNT ? reject_names[r] : "unknown";
}

int smtpd_shared_init(struct smtpd_shared *sh, const struct eng_smtpd_config *cfg)
{
    memset(sh, 0, sizeof(*sh));
    const char *host = cfg->hostname && *cfg->hostname ? cfg->hostname : "localhost";
    if (strlen(host) > SMTPD_NAME_MAX)
        return -EINVAL;
    strcpy(sh->hostname, host);
    sh->lim.max_size = cfg->max_message_size ? cfg->max_message_size : 25u << 20;
    sh->lim.max_rcpts = cfg->max_rcpts ? cfg->max_rcpts : 100;
    if (sh->lim.max_rcpts > QUEUE_RCPTS_MAX)
        return -EINVAL;
    sh->lim.command_timeout_ms = cfg->command_timeout_ms ? cfg->command_timeout_ms : 300000;
    sh->lim.data_timeout_ms = cfg->data_timeout_ms ? cfg->data_timeout_ms : 600000;
    sh->max_per_client = cfg->max_per_client ? cfg->max_per_client : 20;
    sh->max_sessions = cfg->max_sessions ? cfg->max_sessions : 1000;
    sh->lim.max_auth_failures = cfg->max_auth_failures ? cfg->max_auth_failures : 3;
    int err = eng_smtpd_nets_parse(cfg->relay_networks, sh->nets, SMTPD_NETS_MAX, &sh->nnets);
    if (err != 0)
        return -EINVAL;
    sh->creds = cfg->creds;
    sh->tls_available = cfg->tls != NULL;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    sh->id_base = (uint64_t)tv.tv_sec << 8 ^ (uint64_t)tv.tv_usec;
    return 0;
}

int smtpd_shared_reconfigure(struct smtpd_shared *sh, const struct eng_smtpd_config *cfg)
{
    struct smtpd_shared next;
    if (smtpd_shared_init(&next, cfg) != 0)
        return -EINVAL;
    sh->lim = next.lim;
    sh->max_per_client = next.max_per_client;
    sh->max_sessions = next.max_sessions;
    memcpy(sh->nets, next.nets, sizeof(sh->nets));
    sh->nnets = next.nnets;
    sh->creds = next.creds;
    return 0;
}

/* ---- listeners -------------------------------------------------------------------- */

static void listener_arm(struct smtpd_listener *lst)
{
    int err = eng_op_accept(lst->d->loop, lst->h);
    if (err != 0)
        eng_log(ENG_LOG_WARN, "smtpd: %s accept: %s", lst->text, eng_strerror(err));
}

static void listener_complete(void *ctx, const struct eng_completion *comp)
{
    struct smtpd_listener *lst = ctx;
    if (comp->res >= 0)
        smtpd_conn_accept(lst, comp->res);
    else if (comp->res != -ECANCELED)
        eng_log(ENG_LOG_WARN, "smtpd: %s accept: %s", lst->text, eng_strerror(comp->res));
    /* Multishot accept ends on errors (EMFILE, ...): re-arm unless shutting down. */
    if (!comp->more && !lst->d->stopping)
        listener_arm(lst);
}

static void listener_release(void *ctx)
{
    struct smtpd_listener *lst = ctx;
    close(lst->fd);
    lst->fd = -1;
    lst->open = false;
}

static const struct eng_handle_ops listener_ops = {
    .on_complete = listener_complete,
    .on_release = listener_release,
};

static int listener_bind(struct smtpd_listener *lst, const char *text)
{
    int err = eng_addr_parse(text, 0, &lst->addr, &lst->addrlen);
    if (err != 0)
        return -EINVAL;
    lst->fd = socket(lst->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lst->fd < 0)
        return -errno;
    int one = 1;
    setsockopt(lst->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* One server per worker thread on the same address: the kernel spreads them. */
    setsockopt(lst->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (lst->addr.ss_family == AF_INET6)
        setsockopt(lst->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(lst->fd, (struct sockaddr *)&lst->addr, lst->addrlen) != 0 ||
        listen(lst->fd, 1024) != 0)
        return -errno;
    socklen_t len = sizeof(lst->addr);
    if (getsockname(lst->fd, (struct sockaddr *)&lst->addr, &len) != 0)
        return -errno;
    lst->addrlen = len;
    eng_addr_format((struct sockaddr *)&lst->addr, lst->text, sizeof(lst->text));
    return 0;
}

int eng_smtpd_new(struct eng_loop *loop, const struct eng_smtpd_config *cfg, struct eng_smtpd **out)
{
    if (cfg->nlisten == 0 || cfg->nlisten > ENG_SMTPD_LISTEN_MAX || cfg->submit == NULL)
        return -EINVAL;
    for (size_t i = 0; i < cfg->nlisten; i++)
        if (cfg->listen[i].mode == ENG_SMTPD_MODE_IMPLICIT_TLS && cfg->tls == NULL)
            return -EINVAL;
    struct eng_smtpd *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return -ENOMEM;
    d->loop = loop;
    d->tls = cfg->tls;
    d->submit = cfg->submit;
    d->submit_arg = cfg->submit_arg;
    int err = smtpd_shared_init(&d->sh, cfg);
    /* Bind everything first: an address in use fails before any handle exists. */
    for (size_t i = 0; err == 0 && i < cfg->nlisten; i++) {
        struct smtpd_listener *lst = &d->lst[i];
        lst->d = d;
        lst->mode = cfg->listen[i].mode;
        lst->fd = -1;
        d->nlst = i + 1;
        err = listener_bind(lst, cfg->listen[i].addr);
    }
    if (err != 0) {
        for (size_t i = 0; i < d->nlst; i++)
            if (d->lst[i].fd >= 0)
                close(d->lst[i].fd);
        free(d);
        return err;
    }
    for (size_t i = 0; i < d->nlst; i++) {
        struct smtpd_listener *lst = &d->lst[i];
        err = eng_handle_open(loop, lst->fd, &listener_ops, lst, &lst->h);
        if (err != 0) {
            /* Handles already open point at d until released: hand d out stopped. */
            close(lst->fd);
            for (size_t j = i + 1; j < d->nlst; j++)
                close(d->lst[j].fd);
            d->nlst = i;
            eng_smtpd_shutdown(d);
            *out = d;
            return err;
        }
        lst->open = true;
        listener_arm(lst);
        eng_log(ENG_LOG_DEBUG, "smtpd: listening on %s (%s)", lst->text,
                lst->mode == ENG_SMTPD_MODE_IMPLICIT_TLS ? "implicit TLS"
                : cfg->tls                               ? "STARTTLS"
                                                         : "no STARTTLS: no certificate");
    }
    *out = d;
    return 0;
}

char *eng_smtpd_listen_address(const struct eng_smtpd *d, size_t i, char *out, size_t cap)
{
    if (i >= d->nlst)
        return NULL;
    snprintf(out, cap, "%s", d->lst[i].text);
    return out;
}

int eng_smtpd_reconfigure(struct eng_smtpd *d, const struct eng_smtpd_config *cfg)
{
    if (!d || !cfg)
        return -EINVAL;
    return smtpd_shared_reconfigure(&d->sh, cfg);
}

int eng_smtpd_reconfigure_check(const struct eng_smtpd_config *cfg)
{
    struct smtpd_shared tmp;
    return cfg ? smtpd_shared_init(&tmp, cfg) : -EINVAL;
}

void eng_smtpd_shutdown(struct eng_smtpd *d)
{
    d->stopping = true;
    for (size_t i = 0; i < d->nlst; i++)
        if (d->lst[i].open)
            eng_handle_close(d->loop, d->lst[i].h);
    smtpd_conn_close_all(d);
    smtpd_authq_shutdown(d);
}

bool eng_smtpd_idle(const struct eng_smtpd *d)
{
    for (size_t i = 0; i < d->nlst; i++)
        if (d->lst[i].open)
            return false;
    return d->live_count == 0 && d->orphans == 0 && smtpd_authq_idle(d);
}

void eng_smtpd_free(struct eng_smtpd *d)
{
    free(d);
}

void eng_smtpd_stats(const struct eng_smtpd *d, struct eng_smtpd_stats *out)
{
    *out = d->sh.stats;
    out->active = d->live_count;
}
