/*
 * engine/cmd_config.c — `floormta check-config`: parses a configuration file, checks
 * what it needs of this machine (eng_config_check_files) and prints every error as
 * FILE:LINE:COL: KEY: message, or a one-line summary when it is valid. The daemon runs
 * the same two steps before it starts, so a file this accepts is one it accepts.
 */
#include <stdio.h>
#include <string.h>

#include "engine/cli.h"
#include "engine/config.h"

static void check_config_usage(FILE *f)
{
    fprintf(f, "usage: floormta check-config [--syntax-only] FILE\n"
               "       floormta check-config --print-default\n"
               "\n"
               "Validates a configuration file (YAML; \"-\" reads standard input): every\n"
               "error is printed as FILE:LINE:COL: KEY: message. Without --syntax-only the\n"
               "files it names are loaded too (trust store, certificate and key, credentials,\n"
               "tokens), egress sources must be local addresses and the spool and log\n"
               "directories must be creatable.\n"
               "--print-default prints the embedded default configuration, every key\n"
               "documented.\n"
               "Exit 0: valid (one summary line); 1: invalid or unreadable.\n");
}

static void summary(const struct eng_config *c)
{
    char workers[32];
    if (c->workers)
        snprintf(workers, sizeof(workers), "%u", c->workers);
    else
        snprintf(workers, sizeof(workers), "one per CPU");
    printf("%s: ok: workers %s, spool %s, floor %s%s%s, %zu SMTP listener%s%s, HTTP %s, "
           "%zu DNS server%s, %zu policy line%s, helo %s\n",
           c->file, workers, c->spool.dir, c->tls.floor == TLS_VERSION_1_3 ? "1.3" : "1.2",
           c->tls.ca_file ? " with CA " : "", c->tls.ca_file ? c->tls.ca_file : "", c->listen.nsmtp,
           c->listen.nsmtp == 1 ? "" : "s", c->listen.cert_file ? " with TLS" : " without TLS",
           c->listen.http ? c->listen.http : "off", c->dns.nservers,
           c->dns.nservers == 1 ? "" : "s", c->npolicy, c->npolicy == 1 ? "" : "s",
           c->delivery.helo_name);
}

int eng_cmd_check_config(int argc, char **argv)
{
    const char *path = NULL;
    bool syntax_only = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            check_config_usage(stdout);
            return 0;
        }
        if (strcmp(a, "--print-default") == 0) {
            fputs(eng_config_default_text(), stdout);
            return fflush(stdout) == 0 ? 0 : 1;
        }
        if (strcmp(a, "--syntax-only") == 0) {
            syntax_only = true;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "floormta check-config: unknown option '%s'\n\n", a);
            check_config_usage(stderr);
            return 1;
        } else if (path) {
            fprintf(stderr, "floormta check-config: one FILE only\n\n");
            check_config_usage(stderr);
            return 1;
        } else {
            path = a;
        }
    }
    if (path == NULL) {
        check_config_usage(stderr);
        return 1;
    }

    struct eng_config_errors errs;
    eng_config_errors_init(&errs);
    struct eng_config *cfg = NULL;
    int rc = eng_config_load(path, &cfg, &errs);
    if (rc == 0 && !syntax_only)
        rc = eng_config_check_files(cfg, &errs);
    eng_config_errors_print(&errs, stderr);
    if (rc == 0)
        summary(cfg);
    else
        fprintf(stderr, "%s: %zu error%s\n", cfg ? cfg->file : path, errs.n,
                errs.n == 1 ? "" : "s");
    eng_config_errors_free(&errs);
    eng_config_free(cfg);
    return rc == 0 ? 0 : 1;
}
