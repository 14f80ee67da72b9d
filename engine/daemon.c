/*
 * engine/daemon.c — `floormta run`: the daemon. Loads the configuration (the embedded
 * default when no file is given), builds what the workers share (spool, TLS contexts,
 * policy table, credentials, tokens, delivery log), starts the worker group with its
 * services (SMTP submission on every worker, the HTTP API on the first), then waits for
 * a signal on the main thread:
 *   SIGTERM, SIGINT  drain: the listeners stop accepting and their sessions end (a
 *                    message is acknowledged only once durable, so none is lost), the
 *                    running deliveries finish with their state persisted, and the
 *                    process exits 0;
 *   SIGHUP           reload (daemon_reload.c).
 * Every signal is blocked in every thread but taken here with sigwait, so no handler
 * runs in the middle of a worker's loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/cli.h"
#include "engine/daemon_int.h"
#include "engine/log.h"

static void run_usage(FILE *f)
{
    fprintf(f, "usage: floormta run [--config FILE] [--log-level error|warn|info|debug]\n"
               "\n"
               "Runs the engine: SMTP submission, the HTTP API and /metrics, and delivery\n"
               "over TLS that meets the floor. Without --config, the embedded default\n"
               "(`floormta check-config --print-default`): spool under ./var, SMTP on\n"
               "127.0.0.1:2525, HTTP on 127.0.0.1:8025. SIGTERM drains and exits 0.\n");
}

int eng_daemon_make_parent(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    char *slash = strrchr(buf, '/');
    if (!slash || slash == buf)
        return 0;
    *slash = '\0';
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0750) != 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    return mkdir(buf, 0750) == 0 || errno == EEXIST ? 0 : -errno;
}

static int open_log(const char *path)
{
    int rc = eng_daemon_make_parent(path);
    if (rc != 0)
        return rc;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    return fd >= 0 ? fd : -errno;
}

void eng_daemon_tokens_free(char **tokens, size_t n)
{
    for (size_t i = 0; tokens && i < n; i++)
        free(tokens[i]);
    free(tokens);
}

int eng_daemon_tokens_load(const struct eng_config *c, const char *local, char ***out, size_t *n)
{
    size_t cap = c->api.ntokens + 16, k = 0;
    char **v = calloc(cap, sizeof(char *));
    if (!v)
        return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < c->api.ntokens; i++)
        if (!(v[k++] = strdup(c->api.tokens[i])))
            rc = -ENOMEM;
    FILE *f = NULL;
    if (rc == 0 && c->api.tokens_file && !(f = fopen(c->api.tokens_file, "re")))
        rc = -errno;
    char line[1024];
    while (rc == 0 && f && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#')
            continue;
        if (k + 1 >= cap) { /* room for this one and the local token */
            char **t = realloc(v, 2 * cap * sizeof(char *));
            if (!t) {
                rc = -ENOMEM;
                break;
            }
            v = t;
            cap *= 2;
        }
        if (!(v[k++] = strdup(line)))
            rc = -ENOMEM;
    }
    if (f)
        fclose(f);
    if (rc == 0 && local && !(v[k++] = strdup(local)))
        rc = -ENOMEM;
    if (rc != 0) {
        eng_daemon_tokens_free(v, k);
        return rc;
    }
    *out = v;
    *n = k;
    return 0;
}

char *eng_daemon_join_networks(const struct eng_config *c)
{
    size_t n = 1;
    for (size_t i = 0; i < c->submission.nrelay_networks; i++)
        n += strlen(c->submission.relay_networks[i].text) + 1;
    char *s = calloc(1, n);
    for (size_t i = 0; s && i < c->submission.nrelay_networks; i++) {
        if (i)
            strcat(s, ",");
        strcat(s, c->submission.relay_networks[i].text);
    }
    return s;
}

static void daemon_free(struct eng_daemon *d)
{
    eng_group_stop_and_free(d->group);
    /* After the API stopped: a tool that read the file just before still got in. */
    eng_daemon_token_remove(d);
    queue_spool_close(d->spool);
    tls_ctx_free(d->client_tls);
    tls_ctx_free(d->server_tls);
    eng_policy_table_free(d->policy);
    eng_smtpd_credentials_free(d->creds);
    for (size_t i = 0; i < d->nretired; i++)
        eng_policy_table_free(d->retired[i]);
    free(d->retired);
    eng_daemon_tokens_free(d->tokens, d->ntokens);
    free(d->relay_networks);
    if (d->delivery_fd >= 0)
        close(d->delivery_fd);
    eng_config_free(d->applied);
    eng_config_free(d->cfg);
}

static void spool_log(void *arg, const char *line)
{
    (void)arg;
    eng_log(ENG_LOG_WARN, "%s", line);
}

/* Builds everything but the group. Returns 0, or 1 after printing why. */
static int daemon_build(struct eng_daemon *d)
{
    const struct eng_config *c = d->cfg;
    int rc;
    struct queue_spool_config sc;
    eng_config_spool_config(c, &sc);
    sc.log = spool_log;
    char probe[PATH_MAX];
    snprintf(probe, sizeof(probe), "%s/.", c->spool.dir); /* its parents, as mkdir -p */
    if ((rc = eng_daemon_make_parent(probe)) != 0 || (rc = queue_spool_open(&sc, &d->spool)) != 0) {
        eng_log(ENG_LOG_ERROR, "run: cannot open the spool %s: %s", c->spool.dir,
                queue_strerror(rc));
        return 1;
    }
    struct tls_client_config tc;
    eng_config_tls_client_config(c, &tc);
    if ((rc = tls_ctx_new_client(&tc, &d->client_tls)) != 0) {
        eng_log(ENG_LOG_ERROR, "run: cannot build the delivery TLS context: %s", tls_strerror(rc));
        return 1;
    }
    char err[256];
    if ((rc = eng_config_policy_table(c, &d->policy, err, sizeof(err))) != 0) {
        eng_log(ENG_LOG_ERROR, "run: policy: %s", err);
        return 1;
    }
    struct tls_server_config stc;
    if (eng_config_tls_server_config(c, &stc) &&
        (rc = tls_ctx_new_server(&stc, &d->server_tls)) != 0) {
        eng_log(ENG_LOG_ERROR, "run: cannot load the listeners' certificate %s: %s", stc.cert_file,
                tls_strerror(rc));
        return 1;
    }
    if (c->submission.credentials_file &&
        (rc = eng_smtpd_credentials_load(c->submission.credentials_file, &d->creds)) != 0) {
        eng_log(ENG_LOG_ERROR, "run: cannot load %s: %s", c->submission.credentials_file,
                strerror(-rc));
        return 1;
    }
    if ((rc = eng_daemon_tokens_load(c, NULL, &d->tokens, &d->ntokens)) != 0) {
        eng_log(ENG_LOG_ERROR, "run: cannot load the API tokens: %s", strerror(-rc));
        return 1;
    }
    if ((rc = eng_daemon_token_write(d)) != 0) {
        eng_log(ENG_LOG_ERROR, "run: cannot write api.local_token_file %s: %s",
                c->api.local_token_file, strerror(-rc));
        return 1;
    }
    if (!(d->relay_networks = eng_daemon_join_networks(c)))
        return 1;
    if (c->log.delivery && (d->delivery_fd = open_log(c->log.delivery)) < 0) {
        eng_log(ENG_LOG_ERROR, "run: cannot open the delivery log %s: %s", c->log.delivery,
                strerror(-d->delivery_fd));
        return 1;
    }
    return 0;
}

static int daemon_start(struct eng_daemon *d)
{
    struct eng_group_config gc;
    eng_config_group_config(d->cfg, &gc);
    gc.spool = d->spool;
    gc.tls = d->client_tls;
    gc.worker.policy = d->policy;
    gc.worker.delivery_log_fd = d->delivery_fd;
    struct eng_group_service svc[ENG_GROUP_MAX_SERVICES];
    gc.nservices = eng_daemon_services(d, svc);
    gc.services = svc;
    int rc = eng_group_new(&gc, &d->group);
    if (rc == 0)
        rc = eng_group_start(d->group);
    if (rc != 0) {
        eng_log(ENG_LOG_ERROR, "run: the workers did not start: %s", eng_strerror(rc));
        return 1;
    }
    return 0;
}

int eng_cmd_run(int argc, char **argv)
{
    const char *file = NULL, *level = NULL;
    static const struct option opts[] = { { "config", required_argument, NULL, 'c' },
                                          { "log-level", required_argument, NULL, 'l' },
                                          { "help", no_argument, NULL, 'h' },
                                          { NULL, 0, NULL, 0 } };
    optind = 1;
    for (int o; (o = getopt_long(argc, argv, "c:l:h", opts, NULL)) != -1;) {
        if (o == 'c')
            file = optarg;
        else if (o == 'l')
            level = optarg;
        else if (o == 'h') {
            run_usage(stdout);
            return 0;
        } else {
            run_usage(stderr);
            return 1;
        }
    }
    if (optind < argc) {
        run_usage(stderr);
        return 1;
    }
    enum eng_log_level lv;
    if (level && eng_log_level_parse(level, &lv) != 0) {
        fprintf(stderr, "floormta run: unknown log level '%s'\n", level);
        return 1;
    }
    struct eng_daemon d = { .delivery_fd = -1 };
    struct eng_config_errors errs;
    eng_config_errors_init(&errs);
    int rc = file ? eng_config_load(file, &d.cfg, &errs) : eng_config_default(&d.cfg);
    if (rc == 0)
        rc = eng_config_check_files(d.cfg, &errs);
    if (rc != 0) {
        eng_config_errors_print(&errs, stderr);
        fprintf(stderr, "floormta run: %s is not valid; not starting\n",
                file ? file : "the embedded default");
        eng_config_errors_free(&errs);
        eng_config_free(d.cfg);
        return 1;
    }
    eng_config_errors_free(&errs);

    int log_fd = -1;
    if (d.cfg->log.engine && strcmp(d.cfg->log.engine, "stderr") != 0) {
        if ((log_fd = open_log(d.cfg->log.engine)) < 0) {
            fprintf(stderr, "floormta run: cannot open %s: %s\n", d.cfg->log.engine,
                    strerror(-log_fd));
            eng_config_free(d.cfg);
            return 1;
        }
        eng_log_set_fd(log_fd);
    }
    if (level)
        eng_log_set_level(lv);

    /* Blocked before any thread exists, so every thread inherits the mask and only
     * sigwait below takes them. A peer closing a socket must not kill the process. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    int status = daemon_build(&d);
    if (status == 0)
        status = daemon_start(&d);
    if (status == 0) {
        eng_log(ENG_LOG_INFO, "run: floormta %d started: %u workers, spool %s, config %s",
                (int)getpid(), eng_group_nworkers(d.group), d.cfg->spool.dir,
                file ? file : "<default>");
        for (;;) {
            int sig = 0;
            if (sigwait(&set, &sig) != 0)
                continue;
            if (sig == SIGHUP) {
                eng_daemon_reload(&d, file);
                continue;
            }
            eng_log(ENG_LOG_INFO, "run: %s: draining", strsignal(sig));
            break;
        }
    }
    daemon_free(&d); /* the group drains: services first, then deliveries */
    if (status == 0)
        eng_log(ENG_LOG_INFO, "run: stopped");
    if (log_fd >= 0) {
        eng_log_set_fd(2);
        close(log_fd);
    }
    return status;
}
