/*
 * engine/cli_token.c — what every command that talks to a running daemon needs: the
 * daemon's configuration (to find its listeners and files) and an API token.
 *
 * The token comes, in order, from --token, FLOORMTA_TOKEN, then the file the daemon
 * wrote at start (api.local_token_file, engine/daemon_token.c). An explicit one wins
 * so that a script can talk to another daemon than the local one; the file comes last
 * because it is the zero-configuration case: same user, same folder, no token set up.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cli.h"
#include "engine/config.h"

int eng_cli_config(const char *cmd, const char *file, struct eng_config **out)
{
    struct eng_config_errors errs;
    eng_config_errors_init(&errs);
    *out = NULL;
    int rc = file ? eng_config_load(file, out, &errs) : eng_config_default(out);
    if (rc != 0) {
        eng_config_errors_print(&errs, stderr);
        fprintf(stderr, "floormta %s: %s is not valid\n", cmd,
                file ? file : "the embedded default");
    }
    eng_config_errors_free(&errs);
    return rc == 0 ? 0 : 1;
}

/* The first line of path, without its line ending. */
static int read_token_file(const char *path, char **out)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -errno;
    char line[1024];
    int rc = 0;
    if (fgets(line, sizeof(line), f) == NULL)
        rc = ferror(f) ? -EIO : -EINVAL;
    fclose(f);
    if (rc != 0)
        return rc;
    line[strcspn(line, "\r\n")] = '\0';
    if (line[0] == '\0')
        return -EINVAL;
    if ((*out = strdup(line)) == NULL)
        return -ENOMEM;
    return 0;
}

int eng_cli_token(const char *token_opt, const struct eng_config *cfg, char **out, char *err,
                  size_t errlen)
{
    *out = NULL;
    err[0] = '\0';
    const char *env = getenv("FLOORMTA_TOKEN");
    const char *given = token_opt && *token_opt ? token_opt : env && *env ? env : NULL;
    if (given) {
        *out = strdup(given);
        return *out ? 0 : -ENOMEM;
    }
    struct eng_config *def = NULL;
    if (cfg == NULL) {
        if (eng_config_default(&def) != 0)
            return -EINVAL; /* the default is tested valid: a bug */
        cfg = def;
    }
    int rc;
    const char *path = cfg->api.local_token_file;
    if (path == NULL) {
        snprintf(err, errlen,
                 "no API token: give --token or FLOORMTA_TOKEN (api.local_token_file is \"\")");
        rc = -ENOENT;
    } else if ((rc = read_token_file(path, out)) == -ENOENT) {
        snprintf(err, errlen,
                 "no API token: give --token or FLOORMTA_TOKEN, or run the daemon (it writes %s)",
                 path);
    } else if (rc != 0) {
        snprintf(err, errlen, "cannot read the API token from %s: %s", path,
                 rc == -EINVAL ? "empty" : strerror(-rc));
    }
    eng_config_free(def);
    return rc;
}
