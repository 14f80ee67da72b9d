/*
 * engine/config.c — the public side of the configuration (config.h): the error list,
 * parsing a file on top of the embedded default, freeing, locating keys, and filling
 * the runtime structs of the other modules from the plain data.
 */
#include "engine/config.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/config_int.h"

/* engine/default.yaml, embedded at build time (CMake writes config_default_text.c). */
extern const char eng_config_default_yaml[];
extern const size_t eng_config_default_yaml_len;

const char *eng_config_default_text(void)
{
    return eng_config_default_yaml;
}

/* ---- errors ------------------------------------------------------------------------------ */

void eng_config_errors_init(struct eng_config_errors *e)
{
    memset(e, 0, sizeof(*e));
}

void eng_config_errors_free(struct eng_config_errors *e)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->n; i++) {
        free(e->v[i].file);
        free(e->v[i].key);
        free(e->v[i].message);
    }
    free(e->v);
    memset(e, 0, sizeof(*e));
}

/* A copy of s with control characters written as \n, \r, \t or \xHH: messages quote
 * values from the file, and an error must stay one line on a terminal or in a log (a
 * value with a newline could otherwise forge more lines). */
static char *one_line_dup(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        n += *p < 0x20 || *p == 0x7f ? 4 : 1;
    char *out = eng_cfg_xrealloc(NULL, n + 1, 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p >= 0x20 && *p != 0x7f)
            *o++ = (char)*p;
        else if (*p == '\n' || *p == '\r' || *p == '\t')
            o += sprintf(o, "\\%c", *p == '\n' ? 'n' : *p == '\r' ? 'r' : 't');
        else
            o += sprintf(o, "\\x%02x", *p);
    }
    *o = '\0';
    return out;
}

void eng_config_errors_add(struct eng_config_errors *e, const char *file, unsigned line,
                           unsigned col, const char *key, const char *fmt, ...)
{
    if (e == NULL)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (e->n == e->cap) {
        e->cap = e->cap ? 2 * e->cap : 8;
        e->v = eng_cfg_xrealloc(e->v, e->cap, sizeof(*e->v));
    }
    struct eng_config_error *x = &e->v[e->n++];
    x->file = eng_cfg_xstrdup(file ? file : "");
    x->line = line;
    x->col = line ? col : 0;
    x->key = one_line_dup(key ? key : "");
    x->message = one_line_dup(msg);
}

void eng_config_errors_print(const struct eng_config_errors *e, FILE *f)
{
    for (size_t i = 0; i < e->n; i++) {
        const struct eng_config_error *x = &e->v[i];
        if (x->line == 0)
            fprintf(f, "%s: %s%s%s\n", x->file, x->key, *x->key ? ": " : "", x->message);
        else
            fprintf(f, "%s:%u:%u: %s%s%s\n", x->file, x->line, x->col, x->key, *x->key ? ": " : "",
                    x->message);
    }
}

/* ---- parse, load, free --------------------------------------------------------------- */

void eng_cfg_free_strings(char ***v, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free((*v)[i]);
    free(*v);
    *v = NULL;
    *n = 0;
}

const char *eng_config_listen_mode_name(enum eng_config_listen_mode m)
{
    static const char *const names[] = {
#define ENG_LISTEN_MODE_NAME(name, str) [name] = str,
        ENG_CONFIG_LISTEN_MODES(ENG_LISTEN_MODE_NAME)
#undef ENG_LISTEN_MODE_NAME
    };
    if ((unsigned)m >= sizeof(names) / sizeof(names[0]))
        return "invalid";
    return names[m];
}

void eng_config_free(struct eng_config *c)
{
    if (c == NULL)
        return;
    free(c->file);
    free(c->spool.dir);
    eng_cfg_free_strings(&c->dns.servers, &c->dns.nservers);
    free(c->dns.servers_csv);
    free(c->tls.ca_file);
    free(c->delivery.helo_name);
    free(c->delivery.sources);
    eng_cfg_free_strings(&c->delivery.source_texts, &c->delivery.nsources);
    for (size_t i = 0; i < c->listen.nsmtp; i++)
        free(c->listen.smtp[i].address);
    free(c->listen.smtp);
    free(c->listen.http);
    free(c->listen.cert_file);
    free(c->listen.key_file);
    for (size_t i = 0; i < c->submission.nrelay_networks; i++)
        free(c->submission.relay_networks[i].text);
    free(c->submission.relay_networks);
    free(c->submission.credentials_file);
    eng_cfg_free_strings(&c->api.tokens, &c->api.ntokens);
    free(c->api.tokens_file);
    free(c->api.local_token_file);
    free(c->log.delivery);
    free(c->log.engine);
    for (size_t i = 0; i < c->npolicy; i++) {
        free(c->policy[i].pattern);
        free(c->policy[i].text);
    }
    free(c->policy);
    if (c->marks) {
        for (size_t i = 0; i < c->marks->n; i++)
            free(c->marks->v[i].key);
        free(c->marks->v);
        free(c->marks);
    }
    free(c);
}

int eng_config_parse(const char *text, size_t len, const char *filename, struct eng_config **out,
                     struct eng_config_errors *errs)
{
    *out = NULL;
    struct eng_config *c = eng_cfg_xcalloc(1, sizeof(*c));
    c->file = eng_cfg_xstrdup(filename ? filename : "<config>");
    c->marks = eng_cfg_xcalloc(1, sizeof(*c->marks));
    struct eng_cfg_parse p = { .cfg = c, .errs = errs };

    p.file = CFG_DEFAULT_NAME;
    p.is_default = true;
    eng_cfg_parse_layer(&p, eng_config_default_yaml, eng_config_default_yaml_len);
    p.file = c->file;
    p.is_default = false;
    eng_cfg_parse_layer(&p, text, len);
    eng_cfg_rules(&p); /* also after errors: every error in one run */
    if (p.nerrors) {
        eng_config_free(c);
        return -EINVAL;
    }
    *out = c;
    return 0;
}

int eng_config_load(const char *path, struct eng_config **out, struct eng_config_errors *errs)
{
    *out = NULL;
    bool is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (f == NULL) {
        int err = errno;
        eng_config_errors_add(errs, path, 0, 0, "", "cannot open: %s", strerror(err));
        return -err;
    }
    /* Read to the end rather than stat the size: /dev/stdin and pipes have none. */
    size_t cap = 8192, len = 0;
    char *buf = eng_cfg_xcalloc(cap, 1);
    for (;;) {
        if (len == cap) {
            if (cap >= (64u << 20)) {
                eng_config_errors_add(errs, path, 0, 0, "", "larger than 64 MiB");
                free(buf);
                if (!is_stdin)
                    fclose(f);
                return -EFBIG;
            }
            cap *= 2;
            buf = eng_cfg_xrealloc(buf, cap, 1);
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    int err = ferror(f) ? (errno ? errno : EIO) : 0;
    if (!is_stdin)
        fclose(f);
    if (err) {
        eng_config_errors_add(errs, path, 0, 0, "", "cannot read: %s", strerror(err));
        free(buf);
        return -err;
    }
    int rc = eng_config_parse(buf, len, is_stdin ? "<stdin>" : path, out, errs);
    free(buf);
    return rc;
}

int eng_config_default(struct eng_config **out)
{
    return eng_config_parse("", 0, CFG_DEFAULT_NAME, out, NULL);
}

bool eng_config_locate(const struct eng_config *cfg, const char *key, const char **file,
                       unsigned *line, unsigned *col)
{
    const struct eng_config_mark *m = eng_cfg_mark_find(cfg, key);
    if (m == NULL)
        return false;
    if (file)
        *file = m->file;
    if (line)
        *line = m->line;
    if (col)
        *col = m->col;
    return true;
}

/* ---- the runtime structs ------------------------------------------------------------ */

void eng_config_group_config(const struct eng_config *c, struct eng_group_config *out)
{
    memset(out, 0, sizeof(*out));
    out->spool_dir = c->spool.dir;
    out->nworkers = c->workers;
    out->dns.servers = c->dns.servers_csv;
    out->dns.timeout_ms = c->dns.timeout_ms;
    out->dns.tries = c->dns.tries;
    out->dns.max_mx_hosts = c->dns.max_mx_hosts;
    out->dns.max_addrs_per_host = c->dns.max_addrs_per_host;
    out->dns.addr_pref = c->dns.prefer;
    out->dns.cache_max_entries = c->dns.cache_entries;
    out->dns.ttl_min = c->dns.ttl_min_s;
    out->dns.ttl_max = c->dns.ttl_max_s;
    out->dns.negative_ttl_max = c->dns.negative_ttl_max_s;
    out->dns.max_inflight = c->dns.max_inflight;
    out->tls_cache_entries = c->tls.session_cache_entries;
    out->capcache.max_entries = c->delivery.capcache_entries;
    out->capcache.ttl = c->delivery.capcache_ttl_s;
    out->capcache.transient_ttl = c->delivery.capcache_transient_ttl_s;
    out->capcache_save_s = c->delivery.capcache_save_s;
    out->connpool.max_per_host = c->limits.connections_per_host;
    out->connpool.max_total = c->limits.connections_total;
    out->connpool.idle_timeout_ms = c->limits.idle_timeout_ms;
    out->connpool.max_msgs_per_conn = c->limits.messages_per_connection;
    out->connpool.max_conn_age_ms = c->limits.connection_max_age_ms;
    out->worker.sources = c->delivery.sources;
    out->worker.nsources = (unsigned)c->delivery.nsources;
    out->worker.retry = c->delivery.retry;
    out->worker.helo_name = c->delivery.helo_name;
    out->worker.port = c->delivery.port;
    out->worker.max_attempts = c->delivery.max_attempts;
    out->worker.connect_timeout_ms = c->delivery.connect_timeout_ms;
    out->worker.reply_timeout_ms = c->delivery.reply_timeout_ms;
}

void eng_config_spool_config(const struct eng_config *c, struct queue_spool_config *out)
{
    memset(out, 0, sizeof(*out));
    out->dir = c->spool.dir;
    out->max_message_size = c->spool.max_message_size;
    out->min_free_bytes = c->spool.min_free_bytes;
    out->sync_fs = c->spool.sync_fs;
}

void eng_config_tls_client_config(const struct eng_config *c, struct tls_client_config *out)
{
    memset(out, 0, sizeof(*out));
    out->min_version = c->tls.floor;
    out->ca_file = c->tls.ca_file;
}

bool eng_config_tls_server_config(const struct eng_config *c, struct tls_server_config *out)
{
    memset(out, 0, sizeof(*out));
    out->cert_file = c->listen.cert_file;
    out->key_file = c->listen.key_file;
    return c->listen.cert_file != NULL && c->listen.key_file != NULL;
}

int eng_config_policy_table(const struct eng_config *c, struct eng_policy_table **out, char *err,
                            size_t errlen)
{
    *out = NULL;
    if (errlen)
        err[0] = '\0';
    struct eng_policy_defaults d = { .min_version = c->tls.floor, .ca_file = c->tls.ca_file };
    struct eng_policy_table *t;
    int rc = eng_policy_table_new(&d, &t);
    if (rc < 0) {
        snprintf(err, errlen, "default policy: %s", strerror(-rc));
        return rc;
    }
    for (size_t i = 0; i < c->npolicy && rc == 0; i++)
        rc = eng_policy_table_add(t, c->policy[i].pattern, &c->policy[i].spec);
    if (rc == 0)
        rc = eng_policy_table_build(t);
    if (rc < 0) {
        snprintf(err, errlen, "%s", eng_policy_table_error(t));
        eng_policy_table_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

bool eng_config_cidr_match(const struct eng_config_cidr *c, const struct sockaddr *sa)
{
    static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    const uint8_t *a;
    int family = sa->sa_family;
    if (family == AF_INET) {
        a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
    } else if (family == AF_INET6) {
        a = (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
        /* A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d. */
        if (c->family == AF_INET && memcmp(a, v4mapped, sizeof(v4mapped)) == 0) {
            a += 12;
            family = AF_INET;
        }
    } else {
        return false;
    }
    if (family != c->family)
        return false;
    unsigned full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(a, c->addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == c->addr[full];
}
