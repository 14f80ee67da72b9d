/*
 * engine/config_files.c — eng_config_check_files: what a configuration needs of the
 * machine it runs on, checked the way the daemon will use it — the trust stores and the
 * certificate through tls/ (a file that is readable but not PEM fails here, not at the
 * first delivery), egress sources by a test bind, directories by access(2). Kept apart
 * from the parser so that parsing stays pure and testable anywhere.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/config_int.h"
#include "engine/errors.h"

struct check {
    const struct eng_config *cfg;
    struct eng_config_errors *errs;
    size_t n;
};

static void file_err(struct check *ck, const char *key, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void file_err(struct check *ck, const char *key, const char *fmt, ...)
{
    const char *file = ck->cfg->file;
    unsigned line = 0, col = 0;
    eng_config_locate(ck->cfg, key, &file, &line, &col);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    eng_config_errors_add(ck->errs, file, line, col, key, "%s", msg);
    ck->n++;
}

/* Checks the lines of a "user:hash" or token file; the first bad line is an error (by
 * its number: neither a token nor a hash is ever echoed). */
static void check_lines(struct check *ck, const char *key, const char *path, bool credentials)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        file_err(ck, key, "cannot read %s: %s", path, strerror(errno));
        return;
    }
    char line[4096];
    unsigned no = 0;
    while (fgets(line, sizeof(line), f)) {
        no++;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#')
            continue;
        const char *colon = strchr(line, ':');
        if (credentials && (colon == NULL || colon == line || colon[1] != '$')) {
            file_err(ck, key, "%s:%u: not \"user:crypt-hash\" (a hash starts with '$')", path, no);
            break;
        }
        if (!credentials && (strlen(line) < 16 || strpbrk(line, " \t"))) {
            file_err(ck, key, "%s:%u: a token needs at least 16 characters, no spaces", path, no);
            break;
        }
    }
    if (ferror(f))
        file_err(ck, key, "cannot read %s: %s", path, strerror(errno));
    fclose(f);
}

/* dir exists as a writable directory, or its nearest existing ancestor is one (the
 * daemon creates the rest). */
static void check_dir(struct check *ck, const char *key, const char *dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s", dir);
    for (;;) {
        struct stat st;
        if (stat(path, &st) == 0) {
            if (!S_ISDIR(st.st_mode))
                file_err(ck, key, "%s is not a directory", path);
            else if (access(path, W_OK | X_OK) != 0)
                file_err(ck, key, "%s is not writable: %s", path, strerror(errno));
            return;
        }
        if (errno != ENOENT) {
            file_err(ck, key, "%s: %s", path, strerror(errno));
            return;
        }
        char *slash = strrchr(path, '/');
        if (slash == NULL) {
            snprintf(path, sizeof(path), ".");
        } else if (slash == path) {
            path[1] = '\0';
        } else {
            *slash = '\0';
        }
    }
}

/* The directory a log file goes into. */
static void check_log(struct check *ck, const char *key, const char *file)
{
    if (strcmp(file, "stderr") == 0)
        return;
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", file);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    check_dir(ck, key, dir);
}

static void check_tls(struct check *ck)
{
    const struct eng_config *c = ck->cfg;
    struct tls_client_config cc;
    eng_config_tls_client_config(c, &cc);
    struct tls_ctx *ctx = NULL;
    int rc = tls_ctx_new_client(&cc, &ctx);
    if (rc < 0)
        file_err(ck, "tls.ca_file", "cannot load the trust store %s: %s",
                 c->tls.ca_file ? c->tls.ca_file : "(the system bundle)", eng_describe_error(rc));
    tls_ctx_free(ctx);

    struct tls_server_config sc;
    if (eng_config_tls_server_config(c, &sc)) {
        ctx = NULL;
        rc = tls_ctx_new_server(&sc, &ctx);
        if (rc < 0)
            file_err(ck, "listen.tls.cert_file", "cannot load %s with key %s: %s", sc.cert_file,
                     sc.key_file, eng_describe_error(rc));
        tls_ctx_free(ctx);
    }

    /* Each pinned ca= loads on its own, so that every bad one is named (a table build
     * stops at the first). */
    for (size_t i = 0; i < c->npolicy; i++) {
        const struct eng_policy_spec *s = &c->policy[i].spec;
        if (s->mode != ENG_POLICY_FLOOR || s->ca_file[0] == '\0')
            continue;
        struct tls_client_config pc = { .min_version =
                                                s->min_version ? s->min_version : c->tls.floor,
                                        .ca_file = s->ca_file };
        ctx = NULL;
        rc = tls_ctx_new_client(&pc, &ctx);
        if (rc < 0) {
            char key[CFG_PATH_MAX];
            snprintf(key, sizeof(key), "policy.%s", c->policy[i].pattern);
            file_err(ck, key, "cannot load ca=%s: %s", s->ca_file, eng_describe_error(rc));
        }
        tls_ctx_free(ctx);
    }
}

static void check_sources(struct check *ck)
{
    const struct eng_config *c = ck->cfg;
    for (size_t i = 0; i < c->delivery.nsources; i++) {
        const struct sockaddr_storage *ss = &c->delivery.sources[i];
        socklen_t len =
                ss->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
        int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int rc = fd < 0 ? -errno : 0;
        if (rc == 0 && bind(fd, (const struct sockaddr *)ss, len) < 0)
            rc = -errno;
        if (fd >= 0)
            close(fd);
        if (rc < 0) {
            char key[CFG_PATH_MAX];
            snprintf(key, sizeof(key), "delivery.sources[%zu]", i);
            file_err(ck, key, "%s cannot be used as a source address here: %s",
                     c->delivery.source_texts[i], strerror(-rc));
        }
    }
}

int eng_config_check_files(const struct eng_config *c, struct eng_config_errors *errs)
{
    struct check ck = { .cfg = c, .errs = errs };
    check_tls(&ck);
    if (c->submission.credentials_file)
        check_lines(&ck, "submission.credentials_file", c->submission.credentials_file, true);
    if (c->api.tokens_file)
        check_lines(&ck, "api.tokens_file", c->api.tokens_file, false);
    if (c->api.local_token_file)
        check_log(&ck, "api.local_token_file", c->api.local_token_file);
    check_sources(&ck);
    check_dir(&ck, "spool.dir", c->spool.dir);
    check_log(&ck, "log.delivery", c->log.delivery);
    check_log(&ck, "log.engine", c->log.engine);
    return ck.n ? -EINVAL : 0;
}
