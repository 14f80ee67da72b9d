/*
 * engine/daemon_reload.c — SIGHUP: reopen the logs (after logrotate moved them), read
 * the configuration file again and check it, reload the listeners' certificate and the
 * delivery trust store in place (tls_ctx_reload: connections open now keep the context
 * they started with, new ones get the new one), and say which changed settings need a
 * restart. A file that does not check leaves everything as it was.
 *
 * The log files keep their fd numbers: the new file is dup2'ed over the old fd, which
 * is atomic, so the workers (which write the delivery log with that fd) never see a
 * closed or half-changed descriptor.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "engine/daemon_int.h"
#include "engine/log.h"

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

/* Settings the running daemon keeps until a restart, named when the file changed them. */
static void report_restart_needed(const struct eng_config *old, const struct eng_config *cur)
{
    char what[512] = "";
#define CHANGED(cond, name)                                                    \
    do {                                                                       \
        if (cond)                                                              \
            snprintf(what + strlen(what), sizeof(what) - strlen(what), "%s%s", \
                     what[0] ? ", " : "", name);                               \
    } while (0)
    CHANGED(old->workers != cur->workers, "workers");
    CHANGED(str_differs(old->spool.dir, cur->spool.dir) || old->spool.sync_fs != cur->spool.sync_fs,
            "spool");
    CHANGED(str_differs(old->dns.servers_csv, cur->dns.servers_csv), "dns.servers");
    CHANGED(old->tls.floor != cur->tls.floor, "tls.floor");
    CHANGED(old->npolicy != cur->npolicy, "policy");
    for (size_t i = 0; i < old->npolicy && old->npolicy == cur->npolicy; i++)
        if (str_differs(old->policy[i].pattern, cur->policy[i].pattern) ||
            str_differs(old->policy[i].text, cur->policy[i].text)) {
            CHANGED(true, "policy");
            break;
        }
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
    CHANGED(str_differs(old->tls.ca_file, cur->tls.ca_file), "tls.ca_file (file name)");
    CHANGED(str_differs(old->api.local_token_file, cur->api.local_token_file),
            "api.local_token_file");
    CHANGED(str_differs(old->log.delivery, cur->log.delivery) ||
                    str_differs(old->log.engine, cur->log.engine),
            "log (paths)");
#undef CHANGED
    if (what[0])
        eng_log(ENG_LOG_WARN, "reload: changed settings that need a restart to apply: %s", what);
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

    /* The files the running contexts were built from (the old names: a changed name
     * is a restart), read again: renewed certificates, a new trust store. */
    struct tls_client_config tc;
    eng_config_tls_client_config(d->cfg, &tc);
    rc = tls_ctx_reload_client(d->client_tls, &tc);
    if (rc == 0)
        rc = eng_policy_table_reload(d->policy);
    if (rc != 0)
        eng_log(ENG_LOG_ERROR, "reload: a trust store did not reload: %s%s%s", tls_strerror(rc),
                eng_policy_table_error(d->policy)[0] ? ": " : "",
                eng_policy_table_error(d->policy));
    else
        eng_log(ENG_LOG_INFO, "reload: trust stores reloaded (%s and %zu policy context(s))",
                tc.ca_file ? tc.ca_file : "the system bundle",
                eng_policy_table_contexts(d->policy));
    struct tls_server_config sc;
    if (d->server_tls && eng_config_tls_server_config(d->cfg, &sc)) {
        rc = tls_ctx_reload_server(d->server_tls, &sc);
        if (rc != 0)
            eng_log(ENG_LOG_ERROR, "reload: the certificate did not reload: %s", tls_strerror(rc));
        else
            eng_log(ENG_LOG_INFO, "reload: certificate %s reloaded", sc.cert_file);
    }
    report_restart_needed(d->cfg, cur);
    eng_config_free(cur);
}
