/*
 * engine/daemon_token.c — api.local_token_file: the token local tools use.
 *
 * The embedded default configures no API token, so without this nothing on the host
 * could use the API. At start the daemon makes a fresh random token, accepts it with
 * the configured ones, and leaves it in a file only its user can read (mode 0600): a
 * CLI run by that user (engine/cli_token.c) picks it up, anyone else cannot. A new
 * token every start means a leaked file is worth nothing after a restart.
 *
 * The file appears atomically (a temporary file, fsync, rename), so a tool racing the
 * start reads either no file or the whole token, never a prefix of it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "engine/daemon_int.h"
#include "engine/log.h"

#define TOKEN_BYTES 32

static int random_hex(char *out, size_t cap)
{
    uint8_t raw[TOKEN_BYTES];
    size_t got = 0;
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        got += (size_t)n;
    }
    if (cap < 2 * sizeof(raw) + 1)
        return -ENOBUFS;
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The folder's entry is made durable too, so that after a crash the file is either
 * the old one or the new one. Best effort: the token is only worth this run anyway. */
static void sync_parent(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static int write_file(const char *path, const char *token)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    int rc = eng_daemon_make_parent(path);
    if (rc != 0)
        return rc;
    unlink(tmp); /* a leftover of a crashed run with the same pid */
    /* O_EXCL and 0600 from the open on: the token is never readable by others, not
     * even for the instant a chmod would leave open. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    char line[2 * TOKEN_BYTES + 2];
    snprintf(line, sizeof(line), "%s\n", token);
    rc = write_all(fd, line, strlen(line));
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0) {
        unlink(tmp);
        return rc;
    }
    sync_parent(path);
    return 0;
}

int eng_daemon_token_write(struct eng_daemon *d)
{
    const char *path = d->cfg->api.local_token_file;
    if (path == NULL)
        return 0;
    char token[2 * TOKEN_BYTES + 1];
    int rc = random_hex(token, sizeof(token));
    if (rc != 0)
        return rc;
    char **t = realloc(d->tokens, (d->ntokens + 1) * sizeof(char *));
    if (t == NULL)
        return -ENOMEM;
    d->tokens = t;
    if ((d->tokens[d->ntokens] = strdup(token)) == NULL)
        return -ENOMEM;
    d->ntokens++;
    if ((rc = write_file(path, token)) != 0)
        return rc;
    if ((d->local_token = strdup(token)) == NULL) {
        unlink(path);
        return -ENOMEM;
    }
    eng_log(ENG_LOG_INFO, "run: API token for local tools in %s", path);
    return 0;
}

void eng_daemon_token_remove(struct eng_daemon *d)
{
    if (d->local_token == NULL)
        return;
    const char *path = d->cfg->api.local_token_file;
    char line[2 * TOKEN_BYTES + 8] = "";
    FILE *f = fopen(path, "re");
    if (f) {
        if (!fgets(line, sizeof(line), f))
            line[0] = '\0';
        fclose(f);
    }
    line[strcspn(line, "\r\n")] = '\0';
    if (strcmp(line, d->local_token) == 0 && unlink(path) != 0)
        eng_log(ENG_LOG_WARN, "run: cannot remove %s: %s", path, strerror(errno));
    explicit_bzero(d->local_token, strlen(d->local_token));
    free(d->local_token);
    d->local_token = NULL;
}
