/*
 * engine/config_rules.c — the per-domain policy mapping (each line checked by
 * eng_policy_spec_parse, each pattern by eng_policy_table_add on a scratch table, so
 * the configuration accepts exactly what the engine will), and the rules that involve
 * several keys, checked once both layers are parsed. A rule's error is placed at the
 * key the operator's file set, so it points at a line they wrote, not at the default.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "engine/config_int.h"

static void free_policy(struct eng_config *c)
{
    for (size_t i = 0; i < c->npolicy; i++) {
        free(c->policy[i].pattern);
        free(c->policy[i].text);
    }
    free(c->policy);
    c->policy = NULL;
    c->npolicy = 0;
}

void eng_cfg_policy(struct eng_cfg_parse *p, yaml_node_t *n, const char *path, void *field)
{
    (void)field;
    struct eng_config *c = p->cfg;
    free_policy(c);
    eng_cfg_marks_drop_children(c, path);
    if (eng_cfg_is_null(n))
        return;
    if (n->type != YAML_MAPPING_NODE) {
        eng_cfg_err(p, n, path, "expected a mapping of domain patterns to policy lines");
        return;
    }
    struct eng_policy_table *scratch;
    if (eng_policy_table_new(NULL, &scratch) < 0)
        abort();
    yaml_node_pair_t *start = n->data.mapping.pairs.start;
    size_t count = (size_t)(n->data.mapping.pairs.top - start);
    c->policy = eng_cfg_xcalloc(count, sizeof(*c->policy));
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *kn = eng_cfg_node(p, start[i].key, path);
        const char *pattern = kn ? eng_cfg_scalar(p, kn, path) : NULL;
        if (pattern == NULL)
            continue;
        char at[CFG_PATH_MAX];
        eng_cfg_path_key(at, path, pattern);
        yaml_node_t *vn = eng_cfg_node(p, start[i].value, at);
        const char *text = vn ? eng_cfg_scalar(p, vn, at) : NULL;
        struct eng_policy_spec spec;
        char why[256];
        bool spec_ok = false;
        if (text && eng_policy_spec_parse(text, &spec, why, sizeof(why)) == 0)
            spec_ok = true;
        else if (text)
            eng_cfg_err(p, vn, at, "bad policy line \"%s\": %s", text, why);
        /* The pattern is checked even when the line is bad, so both errors show. */
        struct eng_policy_spec probe;
        eng_policy_spec_init(&probe);
        int rc = eng_policy_table_add(scratch, pattern, spec_ok ? &spec : &probe);
        if (rc == -EEXIST) {
            unsigned first = 0;
            for (size_t j = 0; j < i && !first; j++) {
                yaml_node_t *pk = yaml_document_get_node(p->doc, start[j].key);
                if (pk && pk->type == YAML_SCALAR_NODE &&
                    strcasecmp((const char *)pk->data.scalar.value, pattern) == 0)
                    first = (unsigned)pk->start_mark.line + 1;
            }
            eng_cfg_err(p, kn, at, "repeated domain pattern (first at line %u)", first);
            continue;
        }
        if (rc < 0) {
            eng_cfg_err(p, kn, at, "bad domain pattern: %s", eng_policy_table_error(scratch));
            continue;
        }
        if (!spec_ok)
            continue;
        struct eng_config_policy *e = &c->policy[c->npolicy++];
        e->pattern = eng_cfg_xstrdup(pattern);
        e->text = eng_cfg_xstrdup(text);
        e->spec = spec;
        eng_cfg_mark(p, at, vn);
    }
    eng_policy_table_free(scratch);
}

/* ---- rules across keys ------------------------------------------------------------------- */

/* An error about keys a and b, placed at whichever the operator's file set (a first). */
static void rule_err(struct eng_cfg_parse *p, const char *a, const char *b, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static void rule_err(struct eng_cfg_parse *p, const char *a, const char *b, const char *fmt, ...)
{
    /* A key that already has an error kept its old value: a rule about it would only
     * add noise. */
    for (size_t i = 0; p->errs && i < p->errs->n; i++)
        if (strcmp(p->errs->v[i].key, a) == 0 || (b && strcmp(p->errs->v[i].key, b) == 0))
            return;
    const struct eng_config_mark *ma = eng_cfg_mark_find(p->cfg, a);
    const struct eng_config_mark *mb = b ? eng_cfg_mark_find(p->cfg, b) : NULL;
    const struct eng_config_mark *m = ma;
    const char *key = a;
    if ((ma == NULL || ma->from_default) && mb && !mb->from_default) {
        m = mb;
        key = b;
    }
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    eng_config_errors_add(p->errs, m ? m->file : p->file, m ? m->line : 0, m ? m->col : 0, key,
                          "%s", msg);
    p->nerrors++;
}

/* A host name as RFC 5321 allows in EHLO: letters, digits, '-' and '.', or an address
 * literal in brackets. */
static bool helo_ok(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 255)
        return false;
    if (s[0] == '[')
        return s[len - 1] == ']';
    for (const char *c = s; *c; c++) {
        bool alnum =
                (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9');
        if (!alnum && *c != '-' && *c != '.')
            return false;
    }
    return true;
}

static void rules_tls(struct eng_cfg_parse *p)
{
    struct eng_config *c = p->cfg;
    if (c->listen.cert_file && !c->listen.key_file)
        rule_err(p, "listen.tls.cert_file", NULL, "a certificate needs listen.tls.key_file");
    if (c->listen.key_file && !c->listen.cert_file)
        rule_err(p, "listen.tls.key_file", NULL, "a key needs listen.tls.cert_file");
    if (c->listen.cert_file == NULL) {
        for (size_t i = 0; i < c->listen.nsmtp; i++) {
            if (c->listen.smtp[i].address == NULL || c->listen.smtp[i].mode != ENG_LISTEN_IMPLICIT)
                continue;
            char key[CFG_PATH_MAX];
            snprintf(key, sizeof(key), "listen.smtp[%zu].mode", i);
            rule_err(p, key, NULL, "mode implicit needs listen.tls.cert_file");
        }
        if (c->submission.credentials_file)
            rule_err(p, "submission.credentials_file", NULL,
                     "AUTH needs TLS: set listen.tls.cert_file (no password in clear)");
    }
    for (size_t i = 0; c->listen.http && i < c->listen.nsmtp; i++) {
        if (c->listen.smtp[i].address == NULL ||
            memcmp(&c->listen.smtp[i].addr, &c->listen.http_addr, sizeof(c->listen.http_addr)))
            continue;
        char key[CFG_PATH_MAX];
        snprintf(key, sizeof(key), "listen.smtp[%zu].address", i);
        rule_err(p, "listen.http", key, "%s is also an SMTP listener", c->listen.http);
    }
}

void eng_cfg_rules(struct eng_cfg_parse *p)
{
    struct eng_config *c = p->cfg;
    if (c->dns.ttl_min_s > c->dns.ttl_max_s)
        rule_err(p, "dns.ttl_min", "dns.ttl_max", "dns.ttl_min is above dns.ttl_max");
    const struct queue_retry_config *r = &c->delivery.retry;
    if (r->first > r->max)
        rule_err(p, "delivery.retry.first", "delivery.retry.max",
                 "the first retry interval is above delivery.retry.max");
    if (r->delay_warning && r->delay_warning >= r->max_age)
        rule_err(p, "delivery.retry.delay_warning", "delivery.retry.max_age",
                 "the delay warning would come after the message expires (max_age)");
    if (c->delivery.capcache_transient_ttl_s > c->delivery.capcache_ttl_s)
        rule_err(p, "delivery.capcache.transient_ttl", "delivery.capcache.ttl",
                 "transient_ttl is above delivery.capcache.ttl");
    if (c->submission.max_message_size > c->spool.max_message_size)
        rule_err(p, "submission.max_message_size", "spool.max_message_size",
                 "submission.max_message_size is above spool.max_message_size");
    rules_tls(p);

    if (c->delivery.helo_name == NULL) {
        char host[256] = "";
        if (gethostname(host, sizeof(host) - 1) < 0 || host[0] == '\0')
            snprintf(host, sizeof(host), "localhost");
        c->delivery.helo_name = eng_cfg_xstrdup(host);
        if (!helo_ok(host))
            rule_err(p, "delivery.helo_name", NULL,
                     "this host's name '%s' is not a valid EHLO name: set one", host);
    } else if (!helo_ok(c->delivery.helo_name)) {
        rule_err(p, "delivery.helo_name", NULL, "'%s' is not a host name", c->delivery.helo_name);
    }
}
