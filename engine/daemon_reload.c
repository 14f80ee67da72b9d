/*
 * engine/daemon_reload.c — SIGHUP: reopen the logs (after logrotate moved them), read
 * the configuration file again and check it, then apply what can change on a running
 * daemon without dropping a connection:
 *   - the per-domain policy lines, tls.floor and tls.ca_file: a new policy table, built
 *     only when one of them changed (otherwise the trust stores are reloaded in place);
 *   - the API's bearer tokens (api.tokens, tokens_file; the local token is kept);
 *   - the submission limits, relay networks and credentials file (read again);
 *   - the retry schedule and the delivery timeouts;
 * and reload the listeners' certificate in place (tls_ctx_reload: connections open now
 * keep the context they started with). Everything else that changed is named as
 * needing a restart.
 *
 * Build, then swap: every new object is built and checked on this (the main) thread
 * first; a file that does not check, or a part that cannot be built (a CA file that
 * vanished since the check, an unreadable credentials file), changes nothing. Only then
 * does each worker get its part, on its own thread (eng_group_call), between two of its
 * completions: attempts and sessions already running keep what they started with
 * (see eng_worker_reconfigure, eng_smtpd_reconfigure), new ones get the new settings.
 *
 * The log files keep their fd numbers: the new file is dup2'ed over the old fd, which
 * is atomic, so the workers (which write the delivery log with that fd) never see a
 * closed or half-changed descriptor.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/daemon_int.h"
#include "engine/loop.h"
#include "engine/log.h"
#include "engine/worker.h"

static void reopen(int fd, const char *path, const char *what)
{
    int nfd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (nfd < 0) {
        eng_log(ENG_LOG_ERROR, "reload: cannot reopen the %s %s: %s; still writing to the old one",
                what, path, strerror(errno));
        return;
    }
    if (dup3(nfd, fd, O_CLOEXEC) < 0)
        eng_log(ENG_LOG_ERROR, "reload: cannot switch the %s to %s: %s", what, path,
                strerror(errno));
    close(nfd);
}

static bool str_differs(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

/* The settings that decide the policy table: its default (tls.floor, tls.ca_file) and
 * the lines. */
static bool default_policy_differs(const struct eng_config *a, const struct eng_config *b)
{
    return a->tls.floor != b->tls.floor || str_differs(a->tls.ca_file, b->tls.ca_file);
}

static bool policy_differs(const struct eng_config *a, const struct eng_config *b)
{
    if (default_policy_differs(a, b) || a->npolicy != b->npolicy)
        return true;
    for (size_t i = 0; i < a->npolicy; i++)
        if (str_differs(a->policy[i].pattern, b->policy[i].pattern) ||
            str_differs(a->policy[i].text, b->policy[i].text))
            return true;
    return false;
}

/* Settings the running daemon keeps until a restart, named when the file changed them
 * (old: what the daemon started with). */
static void report_restart_needed(const struct eng_config *old, const struct eng_config *cur)
{
    char what[768] = "";
#define CHANGED(cond, name)                                                    \
    do {                                                                       \
        if (cond)                                                              \
            snprintf(what + strlen(what), sizeof(what) - strlen(what), "%s%s", \
                     what[0] ? ", " : "", name);                               \
    } while (0)
    CHANGED(old->workers != cur->workers, "workers");
    CHANGED(str_differs(old->spool.dir, cur->spool.dir) ||
                    old->spool.sync_fs != cur->spool.sync_fs ||
                    old->spool.max_message_size != cur->spool.max_message_size ||
                    old->spool.min_free_bytes != cur->spool.min_free_bytes,
            "spool");
    CHANGED(str_differs(old->dns.servers_csv, cur->dns.servers_csv) ||
                    old->dns.timeout_ms != cur->dns.timeout_ms ||
                    old->dns.tries != cur->dns.tries || old->dns.prefer != cur->dns.prefer ||
                    old->dns.cache_entries != cur->dns.cache_entries ||
                    old->dns.max_inflight != cur->dns.max_inflight ||
                    old->dns.max_mx_hosts != cur->dns.max_mx_hosts,
            "dns");
    CHANGED(old->tls.session_cache_entries != cur->tls.session_cache_entries,
            "tls.session_cache_entries");
    CHANGED(str_differs(old->delivery.helo_name, cur->delivery.helo_name), "delivery.helo_name");
    CHANGED(old->delivery.port != cur->delivery.port, "delivery.port");
    CHANGED(old->delivery.max_attempts != cur->delivery.max_attempts, "delivery.max_attempts");
    bool src = old->delivery.nsources != cur->delivery.nsources;
    for (size_t i = 0; !src && i < old->delivery.nsources; i++)
        src = str_differs(old->delivery.source_texts[i], cur->delivery.source_texts[i]);
    CHANGED(src, "delivery.sources");
    CHANGED(old->delivery.capcache_ttl_s != cur->delivery.capcache_ttl_s ||
                    old->delivery.capcache_transient_ttl_s !=
                            cur->delivery.capcache_transient_ttl_s ||
                    old->delivery.capcache_entries != cur->delivery.capcache_entries ||
                    old->delivery.capcache_save_s != cur->delivery.capcache_save_s,
            "delivery.capcache");
    CHANGED(memcmp(&old->limits, &cur->limits, sizeof(old->limits)) != 0, "limits");
    CHANGED(old->listen.nsmtp != cur->listen.nsmtp ||
                    str_differs(old->listen.http, cur->listen.http),
            "listen");
    for (size_t i = 0; i < old->listen.nsmtp && old->listen.nsmtp == cur->listen.nsmtp; i++)
        if (str_differs(old->listen.smtp[i].address, cur->listen.smtp[i].address) ||
            old->listen.smtp[i].mode != cur->listen.smtp[i].mode) {
            CHANGED(true, "listen.smtp");
            break;
        }
    CHANGED(str_differs(old->listen.cert_file, cur->listen.cert_file) ||
                    str_differs(old->listen.key_file, cur->listen.key_file),
            "listen.tls (file names)");
    CHANGED(str_differs(old->api.local_token_file, cur->api.local_token_file),
            "api.local_token_file");
    CHANGED(str_differs(old->log.delivery, cur->log.delivery) ||
                    str_differs(old->log.engine, cur->log.engine),
            "log (paths)");
#undef CHANGED
    if (what[0])
        eng_log(ENG_LOG_WARN, "reload: changed settings that need a restart to apply: %s", what);
}

/* ---- build ---------------------------------------------------------------------------- */

/* What a reload applies, built before anything changes. Owned until swapped in. */
struct rl_plan {
    const struct eng_config *cur;    /* borrowed: the new configuration */
    struct eng_policy_table *policy; /* new; NULL = the lines did not change */
    bool forget_refusals;            /* the default floor or trust store changed */
    char **tokens;                   /* the API's new list, the local token included */
    size_t ntokens;
    struct eng_smtpd_credentials *creds; /* new; NULL = no credentials_file */
    char *relay_networks;
    struct eng_smtpd_config sc;
    struct eng_worker_reconfig wrc;
};

static void plan_free(struct rl_plan *p)
{
    eng_policy_table_free(p->policy);
    eng_daemon_tokens_free(p->tokens, p->ntokens);
    eng_smtpd_credentials_free(p->creds);
    free(p->relay_networks);
}

/* Builds p from cur against the last applied configuration (last). Returns 0, or -1
 * after logging why (p is then freed by the caller). */
static int plan_build(struct eng_daemon *d, const struct eng_config *last,
                      const struct eng_config *cur, struct rl_plan *p)
{
    *p = (struct rl_plan){ .cur = cur };
    int rc;
    if (policy_differs(last, cur)) {
        char err[256];
        if ((rc = eng_config_policy_table(cur, &p->policy, err, sizeof(err))) != 0) {
            eng_log(ENG_LOG_ERROR, "reload: policy: %s", err);
            return -1;
        }
        p->forget_refusals = default_policy_differs(last, cur);
    }
    if ((rc = eng_daemon_tokens_load(cur, d->local_token, &p->tokens, &p->ntokens)) != 0) {
        eng_log(ENG_LOG_ERROR, "reload: cannot load the API tokens: %s", strerror(-rc));
        return -1;
    }
    if (cur->submission.credentials_file &&
        (rc = eng_smtpd_credentials_load(cur->submission.credentials_file, &p->creds)) != 0) {
        eng_log(ENG_LOG_ERROR, "reload: cannot load %s: %s", cur->submission.credentials_file,
                strerror(-rc));
        return -1;
    }
    if (!(p->relay_networks = eng_daemon_join_networks(cur))) {
        eng_log(ENG_LOG_ERROR, "reload: out of memory");
        return -1;
    }
    eng_daemon_smtpd_config(d, cur, p->relay_networks, p->creds, &p->sc);
    if (eng_smtpd_reconfigure_check(&p->sc) != 0) {
        eng_log(ENG_LOG_ERROR, "reload: the submission settings are not usable "
                               "(relay_networks, max_recipients)");
        return -1;
    }
    struct queue_sched *probe = NULL;
    if ((rc = queue_sched_new(&cur->delivery.retry, &probe)) != 0) {
        eng_log(ENG_LOG_ERROR, "reload: delivery.retry: %s", queue_strerror(rc));
        return -1;
    }
    queue_sched_free(probe);
    p->wrc = (struct eng_worker_reconfig){
        .policy = p->policy,
        .retry = cur->delivery.retry,
        .connect_timeout_ms = cur->delivery.connect_timeout_ms,
        .reply_timeout_ms = cur->delivery.reply_timeout_ms,
        .forget_refusals = p->forget_refusals,
    };
    return 0;
}

/* ---- swap ----------------------------------------------------------------------------- */

struct rl_call {
    struct eng_daemon *d;
    const struct rl_plan *p;
    unsigned index;
    int rc_worker, rc_smtpd, rc_api;
};

/* On worker index's thread (eng_group_call): short, never waits for another worker. */
static void apply_on_worker(struct eng_worker *w, void *arg)
{
    struct rl_call *c = arg;
    c->rc_worker = eng_worker_reconfigure(w, &c->p->wrc);
    struct eng_smtpd *srv = c->d->smtpd[c->index];
    c->rc_smtpd = srv ? eng_smtpd_reconfigure(srv, &c->p->sc) : 0;
    if (c->index == 0 && c->d->api)
        c->rc_api = eng_api_set_tokens(c->d->api, (const char *const *)c->p->tokens,
                                       (unsigned)c->p->ntokens);
}

/* Gives every worker its part. Returns the number of workers whose part did not all
 * apply (logged): 0 unless a worker stopped or memory ran out. *smtpd_ok: every
 * listener took the new settings (so none still uses the old credentials). */
static unsigned apply_all(struct eng_daemon *d, const struct rl_plan *p, bool *smtpd_ok)
{
    unsigned n = eng_group_nworkers(d->group), failed = 0;
    *smtpd_ok = true;
    for (unsigned i = 0; i < n; i++) {
        struct rl_call c = { .d = d, .p = p, .index = i };
        int rc = eng_group_call(d->group, i, apply_on_worker, &c);
        if (rc != 0)
            c.rc_worker = c.rc_smtpd = rc;
        if (c.rc_smtpd != 0)
            *smtpd_ok = false;
        if (rc == 0 && c.rc_worker == 0 && c.rc_smtpd == 0 && c.rc_api == 0)
            continue;
        failed++;
        eng_log(ENG_LOG_ERROR,
                "reload: worker %u did not take all of it: delivery %s, submission %s, api %s", i,
                eng_strerror(c.rc_worker), eng_strerror(c.rc_smtpd), eng_strerror(c.rc_api));
    }
    return failed;
}

/* The plan's objects become the daemon's; what they replace is freed, or retired when
 * something may still point at it. */
static void swap_in(struct eng_daemon *d, struct rl_plan *p, bool smtpd_ok)
{
    if (p->policy) {
        struct eng_policy_table **r = realloc(d->retired, (d->nretired + 1) * sizeof(*d->retired));
        if (!r)
            abort(); /* STYLE 7: control plane; the old table must not be freed */
        d->retired = r;
        d->retired[d->nretired++] = d->policy;
        d->policy = p->policy;
        p->policy = NULL;
    }
    eng_daemon_tokens_free(d->tokens, d->ntokens);
    d->tokens = p->tokens;
    d->ntokens = p->ntokens;
    p->tokens = NULL;
    p->ntokens = 0;
    /* AUTH checks run to their end within one completion, so once every listener has the
     * new credentials nothing points at the old ones. */
    if (smtpd_ok)
        eng_smtpd_credentials_free(d->creds);
    else
        eng_log(ENG_LOG_WARN, "reload: the old credentials stay in memory until the exit");
    d->creds = p->creds;
    p->creds = NULL;
    free(d->relay_networks);
    d->relay_networks = p->relay_networks;
    p->relay_networks = NULL;
}

static void log_applied(const struct eng_daemon *d, const struct eng_config *cur, bool new_table)
{
    eng_log(ENG_LOG_INFO,
            "reload: applied: policy (%zu line(s), floor TLS %s, %s), api tokens (%zu), "
            "submission (relay_networks %s, credentials %zu, limits), delivery (retry, "
            "timeouts)",
            cur->npolicy, cur->tls.floor == TLS_VERSION_1_3 ? "1.3" : "1.2",
            new_table ? "new table" : "unchanged, trust stores reloaded",
            d->ntokens - (d->local_token != NULL),
            d->relay_networks[0] ? d->relay_networks : "none",
            d->creds ? eng_smtpd_credentials_count(d->creds) : (size_t)0);
}

/* ---- SIGHUP --------------------------------------------------------------------------- */

/* The files read in place: the delivery context's trust store (the new file name; the
 * floor it was made with stays: it only serves when no policy table does), the policy
 * table's when it was not rebuilt, and the listeners' certificate (the old names: a
 * changed name is a restart). */
static void reload_in_place(struct eng_daemon *d, const struct eng_config *cur, bool new_table)
{
    struct tls_client_config tc;
    eng_config_tls_client_config(cur, &tc);
    struct tls_client_config started;
    eng_config_tls_client_config(d->cfg, &started);
    tc.min_version = started.min_version;
    int rc = tls_ctx_reload_client(d->client_tls, &tc);
    if (rc == 0 && !new_table)
        rc = eng_policy_table_reload(d->policy);
    if (rc != 0)
        eng_log(ENG_LOG_ERROR, "reload: a trust store did not reload: %s%s%s", tls_strerror(rc),
                eng_policy_table_error(d->policy)[0] ? ": " : "",
                eng_policy_table_error(d->policy));
    else
        eng_log(ENG_LOG_INFO, "reload: trust stores %s (%s and %zu policy context(s))",
                new_table ? "rebuilt" : "reloaded", tc.ca_file ? tc.ca_file : "the system bundle",
                eng_policy_table_contexts(d->policy));
    struct tls_server_config sc;
    if (d->server_tls && eng_config_tls_server_config(d->cfg, &sc)) {
        rc = tls_ctx_reload_server(d->server_tls, &sc);
        if (rc != 0)
            eng_log(ENG_LOG_ERROR, "reload: the certificate did not reload: %s", tls_strerror(rc));
        else
            eng_log(ENG_LOG_INFO, "reload: certificate %s reloaded", sc.cert_file);
    }
}

void eng_daemon_reload(struct eng_daemon *d, const char *file)
{
    eng_log(ENG_LOG_INFO, "reload: SIGHUP");
    if (d->delivery_fd >= 0 && d->cfg->log.delivery)
        reopen(d->delivery_fd, d->cfg->log.delivery, "delivery log");
    int lfd = eng_log_get_fd();
    if (lfd > 2 && d->cfg->log.engine && strcmp(d->cfg->log.engine, "stderr") != 0)
        reopen(lfd, d->cfg->log.engine, "engine log");

    struct eng_config *cur = NULL;
    struct eng_config_errors errs;
    eng_config_errors_init(&errs);
    int rc = file ? eng_config_load(file, &cur, &errs) : eng_config_default(&cur);
    if (rc == 0)
        rc = eng_config_check_files(cur, &errs);
    if (rc != 0) {
        for (size_t i = 0; i < errs.n; i++)
            eng_log(ENG_LOG_ERROR, "reload: %s:%u:%u: %s: %s", errs.v[i].file, errs.v[i].line,
                    errs.v[i].col, errs.v[i].key, errs.v[i].message);
        eng_log(ENG_LOG_ERROR, "reload: the configuration does not check; nothing changed");
        eng_config_errors_free(&errs);
        eng_config_free(cur);
        return;
    }
    eng_config_errors_free(&errs);

    const struct eng_config *last = d->applied ? d->applied : d->cfg;
    struct rl_plan p;
    if (plan_build(d, last, cur, &p) != 0) {
        eng_log(ENG_LOG_ERROR, "reload: nothing changed");
        plan_free(&p);
        eng_config_free(cur);
        return;
    }
    bool new_table = p.policy != NULL, smtpd_ok;
    unsigned failed = apply_all(d, &p, &smtpd_ok);
    swap_in(d, &p, smtpd_ok);
    plan_free(&p);
    reload_in_place(d, cur, new_table);
    if (failed)
        eng_log(ENG_LOG_ERROR, "reload: %u worker(s) kept some old settings (see above)", failed);
    log_applied(d, cur, new_table);
    report_restart_needed(d->cfg, cur);
    eng_config_free(d->applied);
    d->applied = cur;
}
