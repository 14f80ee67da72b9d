/*
 * engine/cmd_queue.c — `floormta queue` and `floormta destinations`: the operator's
 * queue tools as a client of the running daemon's HTTP API (engine/api.h): list,
 * summary, flush, bounce, delete, and the capability cache. Tables for people by
 * default, the API's JSON as it came with --json.
 *
 * HTTP is engine/cli_http.c (plain HTTP/1.1; why not libcurl is said there).
 *
 * Where the daemon is: --api URL, else the listen.http of --config FILE, else that of
 * the embedded default. The token: cmd_token(): --token, $FLOORMTA_TOKEN, --token-file,
 * else the file the daemon writes for local tools (eng_cli_token).
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cli.h"
#include "engine/config.h"

#define CMD_TIMEOUT_S 30

struct cmd_opts {
    const char *prog; /* "queue" or "destinations", for messages */
    const char *api;  /* base URL; NULL = from the configuration */
    const char *config;
    const char *token, *token_file;
    const char *domain, *id, *limit;
    const char *sub; /* the command word (queue), wherever it stands; NULL = none */
    bool json;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: floormta queue [list|summary] [--domain D] [--limit N] [OPTIONS]\n"
               "       floormta queue flush|bounce|delete (--id ID | --domain D) [OPTIONS]\n"
               "       floormta destinations [OPTIONS]\n"
               "\n"
               "Asks the running daemon (its HTTP API):\n"
               "  list       queued messages, oldest first, each recipient's state and last\n"
               "             result (--limit: 1 to 1000, default 100); the default command\n"
               "  summary    messages per destination domain: ready, deferred, in flight, oldest\n"
               "  flush      make deferred messages due now\n"
               "  bounce     give up: every pending recipient bounced, a DSN to the sender\n"
               "  delete     remove without a DSN\n"
               "  destinations  what each worker's capability cache knows of each MX host\n"
               "A message in flight is busy: bounce or delete it again a moment later.\n"
               "\n"
               "options:\n"
               "  --api URL          the API, e.g. http://127.0.0.1:8025 (default: the\n"
               "                     listen.http of --config, or of the embedded default)\n"
               "  --config FILE      the daemon's configuration file, for its listen.http\n"
               "  --token T          bearer token (else $FLOORMTA_TOKEN, else --token-file)\n"
               "  --token-file FILE  a file whose first line is the token\n"
               "  --json             print the API's JSON as it came\n"
               "Exit 0: done; 1: an error (the API's message on stderr).\n");
}

/* ---- the token and the address ------------------------------------------------------------ */

/* The bearer token: --token, then $FLOORMTA_TOKEN, then the first line of --token-file.
 * Returns a new string (free it), or NULL (none; *err set when a file failed). */
static char *cmd_token(const struct cmd_opts *o, const char **err)
{
    *err = NULL;
    if (o->token)
        return strdup(o->token);
    const char *env = getenv("FLOORMTA_TOKEN");
    if (env && *env)
        return strdup(env);
    if (!o->token_file) {
        /* Last, the token the daemon writes for local tools (api.local_token_file of
         * --config, or of the default): none found means the API will answer 401. */
        struct eng_config *cfg = NULL;
        char *tok = NULL;
        char why[256];
        if (eng_cli_config(o->prog, o->config, &cfg) == 0 &&
            eng_cli_token(NULL, cfg, &tok, why, sizeof(why)) != 0)
            fprintf(stderr, "floormta %s: %s\n", o->prog, why);
        eng_config_free(cfg);
        return tok;
    }
    FILE *f = fopen(o->token_file, "r");
    if (!f) {
        *err = strerror(errno);
        return NULL;
    }
    char line[512] = "";
    if (!fgets(line, sizeof(line), f))
        line[0] = '\0';
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    if (!line[0]) {
        *err = "empty";
        return NULL;
    }
    return strdup(line);
}

/* "http://HOST:PORT" from a listen address ("127.0.0.1:8025", "[::]:8025"): a wildcard
 * address becomes loopback. Returns a new string, or NULL. */
static char *url_of_listen(const char *listen)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen)
        return NULL;
    size_t hl = (size_t)(colon - listen);
    char host[128];
    if (hl >= sizeof(host))
        return NULL;
    memcpy(host, listen, hl);
    host[hl] = '\0';
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    else if (strcmp(host, "[::]") == 0)
        snprintf(host, sizeof(host), "[::1]");
    char *url = malloc(hl + strlen(colon) + 16);
    if (url)
        sprintf(url, "http://%s%s", host, colon);
    return url;
}

/* The API's base URL (new string), or NULL with a message printed. */
static char *api_url(const struct cmd_opts *o)
{
    if (o->api) {
        size_t n = strlen(o->api);
        while (n > 0 && o->api[n - 1] == '/')
            n--;
        return strndup(o->api, n);
    }
    struct eng_config *cfg = NULL;
    struct eng_config_errors errs;
    eng_config_errors_init(&errs);
    int rc = o->config ? eng_config_load(o->config, &cfg, &errs) : eng_config_default(&cfg);
    if (rc != 0)
        eng_config_errors_print(&errs, stderr);
    eng_config_errors_free(&errs);
    char *url = NULL;
    if (rc == 0 && cfg->listen.http && cfg->listen.http[0])
        url = url_of_listen(cfg->listen.http);
    if (rc == 0 && !url)
        fprintf(stderr, "floormta %s: %s has no usable listen.http; give --api\n", o->prog,
                o->config ? o->config : "the default configuration");
    eng_config_free(cfg);
    return url;
}

/* ---- HTTP ---------------------------------------------------------------------------------- */

/* One request: method GET or POST (with body, JSON). On 2xx: *out the parsed answer
 * (decref it), *raw its text (free it) and 0. Otherwise a message on stderr and 1. */
static int http_call(const struct cmd_opts *o, const char *method, const char *path,
                     const char *body, json_t **out, char **raw)
{
    const char *terr;
    char *token = cmd_token(o, &terr);
    if (!token && terr) {
        fprintf(stderr, "floormta %s: cannot read %s: %s\n", o->prog, o->token_file, terr);
        return 1;
    }
    char *base = api_url(o);
    if (!base) {
        free(token);
        return 1;
    }
    long status = 0;
    char *answer = NULL;
    int rc = eng_cli_http(base, method, path, token, body, CMD_TIMEOUT_S, &status, &answer);
    if (rc != 0) {
        fprintf(stderr, "floormta %s: %s%s: %s\n", o->prog, base, path,
                rc == -EPROTONOSUPPORT ? "only http:// is supported"
                : rc == -EPROTO        ? "not an HTTP answer"
                                       : strerror(-rc));
        free(base);
        free(token);
        return 1;
    }
    json_error_t jerr;
    json_t *doc = json_loads(answer, 0, &jerr);
    rc = 1;
    if (status < 200 || status > 299) {
        const char *msg = json_string_value(json_object_get(doc, "error"));
        const char *field = json_string_value(json_object_get(doc, "field"));
        fprintf(stderr, "floormta %s: %ld %s%s%s%s\n", o->prog, status,
                msg ? msg : (*answer ? answer : "no answer"), field ? " (" : "", field ? field : "",
                field ? ")" : "");
        if (status == 401 && !token)
            fprintf(stderr,
                    "floormta %s: no token: give --token, $FLOORMTA_TOKEN or --token-file\n",
                    o->prog);
        json_decref(doc);
    } else if (!doc) {
        fprintf(stderr, "floormta %s: the answer is not JSON: %s\n", o->prog, jerr.text);
    } else {
        *out = doc;
        *raw = answer;
        answer = NULL;
        rc = 0;
    }
    free(answer);
    free(base);
    free(token);
    return rc;
}

/* ---- tables --------------------------------------------------------------------------------- */

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "-";
}

static long long num(json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

static void print_summary(json_t *doc)
{
    json_t *domains = json_object_get(doc, "domains"), *d;
    size_t i;
    printf("%-40s %8s %8s %8s %8s  %s\n", "DOMAIN", "MESSAGES", "READY", "DEFERRED", "INFLIGHT",
           "OLDEST");
    json_array_foreach(domains, i, d)
    {
        printf("%-40s %8lld %8lld %8lld %8lld  %s\n", str(d, "domain"), num(d, "messages"),
               num(d, "ready"), num(d, "deferred"), num(d, "inflight"), str(d, "oldest_arrival"));
    }
    json_t *t = json_object_get(doc, "total");
    printf("total: %lld message(s) in %lld domain(s): %lld ready, %lld deferred, %lld in flight\n",
           num(t, "messages"), num(t, "domains"), num(t, "ready"), num(t, "deferred"),
           num(t, "inflight"));
}

static void print_list(json_t *doc)
{
    json_t *msgs = json_object_get(doc, "messages"), *m;
    size_t i;
    printf("%-16s  %-30s %-30s %-20s %-8s %4s  %s\n", "ID", "DOMAIN", "SENDER", "ARRIVAL", "STATE",
           "TRY", "NEXT");
    json_array_foreach(msgs, i, m)
    {
        const char *sender = str(m, "sender");
        printf("%-16s  %-30s %-30s %-20s %-8s %4lld  %s%s\n", str(m, "id"), str(m, "domain"),
               *sender ? sender : "<>", str(m, "arrival"), str(m, "state"), num(m, "attempts"),
               str(m, "next_attempt"), json_is_true(json_object_get(m, "busy")) ? " (busy)" : "");
        json_t *rcpts = json_object_get(m, "recipients"), *r;
        size_t k;
        json_array_foreach(rcpts, k, r)
        {
            json_t *last = json_object_get(r, "last");
            if (json_is_object(last))
                printf("    %-40s %-9s %s %lld %s %s\n", str(r, "addr"), str(r, "state"),
                       str(last, "kind"), num(last, "code"), str(last, "enhanced"),
                       str(last, "text"));
            else
                printf("    %-40s %-9s (not tried)\n", str(r, "addr"), str(r, "state"));
        }
    }
    printf("%zu of %lld message(s) shown\n", json_array_size(msgs), num(doc, "total"));
}

static void print_destinations(json_t *doc)
{
    json_t *list = json_object_get(doc, "destinations"), *e;
    size_t i;
    printf("%-40s %5s %-7s %-24s %-8s %-8s %-20s %-20s %s\n", "HOST", "PORT", "VERDICT", "REASON",
           "TLS", "STARTTLS", "CHECKED", "EXPIRES", "WORKER");
    json_array_foreach(list, i, e)
    {
        printf("%-40s %5lld %-7s %-24s %-8s %-8s %-20s %-20s %lld\n", str(e, "host"),
               num(e, "port"), str(e, "verdict"), str(e, "reason"), str(e, "tls_version"),
               json_is_true(json_object_get(e, "starttls_offered")) ? "yes" : "no",
               str(e, "checked_at"), str(e, "expires_at"), num(e, "worker"));
    }
    printf("%zu entr%s\n", json_array_size(list), json_array_size(list) == 1 ? "y" : "ies");
}

static void print_action(json_t *doc)
{
    const char *what = json_object_get(doc, "id") ? "id" : "domain";
    printf("%s %s=%s: %lld of %lld message(s) affected, %lld busy%s\n", str(doc, "action"), what,
           str(doc, what), num(doc, "affected"), num(doc, "matched"), num(doc, "busy"),
           num(doc, "busy") ? " (in flight: try again shortly)" : "");
}

/* ---- commands -------------------------------------------------------------------------------- */

/* Parses the shared options from argv[first..]. Returns 0, or 1 after a message. */
static int parse(int argc, char **argv, int first, struct cmd_opts *o)
{
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = NULL;
        if (strcmp(a, "--json") == 0) {
            o->json = true;
            continue;
        }
        if (a[0] != '-' && !o->sub) {
            o->sub = a;
            continue;
        }
        if (strcmp(a, "--api") == 0)
            slot = &o->api;
        else if (strcmp(a, "--config") == 0)
            slot = &o->config;
        else if (strcmp(a, "--token") == 0)
            slot = &o->token;
        else if (strcmp(a, "--token-file") == 0)
            slot = &o->token_file;
        else if (strcmp(a, "--domain") == 0)
            slot = &o->domain;
        else if (strcmp(a, "--id") == 0)
            slot = &o->id;
        else if (strcmp(a, "--limit") == 0)
            slot = &o->limit;
        if (!slot) {
            fprintf(stderr, "floormta %s: unknown option '%s'\n\n", o->prog, a);
            usage(stderr);
            return 1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "floormta %s: %s needs a value\n", o->prog, a);
            return 1;
        }
        *slot = argv[++i];
    }
    return 0;
}

/* Appends "key=value" to a query string, the value percent-encoded (RFC 3986's
 * unreserved characters as they are). */
static void add_query(char *q, size_t cap, const char *key, const char *value)
{
    size_t n = strlen(q);
    n += (size_t)snprintf(q + n, cap - n, "%s%s=", n ? "&" : "?", key);
    for (const unsigned char *p = (const unsigned char *)value; *p && n + 4 < cap; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~", *p))
            q[n++] = (char)*p;
        else
            n += (size_t)snprintf(q + n, cap - n, "%%%02X", *p);
    }
    q[n] = '\0';
}

static int run(struct cmd_opts *o, const char *method, const char *path, const char *body,
               void (*print)(json_t *))
{
    json_t *doc = NULL;
    char *raw = NULL;
    if (http_call(o, method, path, body, &doc, &raw) != 0)
        return 1;
    if (o->json)
        fputs(raw, stdout);
    else
        print(doc);
    json_decref(doc);
    free(raw);
    return fflush(stdout) == 0 ? 0 : 1;
}

int eng_cmd_queue(int argc, char **argv)
{
    struct cmd_opts o = { .prog = "queue" };
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
    if (parse(argc, argv, 1, &o) != 0)
        return 1;
    const char *sub = o.sub ? o.sub : "list";
    int rc = 1;
    if (strcmp(sub, "list") == 0 || strcmp(sub, "summary") == 0) {
        bool list = sub[0] == 'l';
        if (o.id) {
            fprintf(stderr, "floormta queue: %s takes no --id\n", sub);
        } else if (!list && (o.domain || o.limit)) {
            fprintf(stderr, "floormta queue: summary takes no --domain or --limit\n");
        } else {
            char q[1200] = "";
            if (o.domain)
                add_query(q, sizeof(q), "domain", o.domain);
            if (o.limit)
                add_query(q, sizeof(q), "limit", o.limit);
            char path[1300];
            snprintf(path, sizeof(path), "/api/v1/queue%s%s", list ? "/messages" : "", q);
            rc = run(&o, "GET", path, NULL, list ? print_list : print_summary);
        }
    } else if (strcmp(sub, "flush") == 0 || strcmp(sub, "bounce") == 0 ||
               strcmp(sub, "delete") == 0) {
        if (!o.id == !o.domain || o.limit) {
            fprintf(stderr, "floormta queue: %s takes exactly one of --id and --domain\n", sub);
        } else {
            json_t *in = json_pack("{s:s}", o.id ? "id" : "domain", o.id ? o.id : o.domain);
            char *body = in ? json_dumps(in, JSON_COMPACT) : NULL;
            char path[64];
            snprintf(path, sizeof(path), "/api/v1/queue/%s", sub);
            rc = body ? run(&o, "POST", path, body, print_action) : 1;
            free(body);
            json_decref(in);
        }
    } else {
        fprintf(stderr, "floormta queue: unknown command '%s'\n\n", sub);
        usage(stderr);
    }
    return rc;
}

int eng_cmd_destinations(int argc, char **argv)
{
    struct cmd_opts o = { .prog = "destinations" };
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
    if (parse(argc, argv, 1, &o) != 0)
        return 1;
    if (o.id || o.domain || o.limit || o.sub) {
        fprintf(stderr, "floormta destinations: no command word, --id, --domain or --limit\n");
        return 1;
    }
    int rc = run(&o, "GET", "/api/v1/destinations", NULL, print_destinations);
    return rc;
}
