/*
 * engine/config_yaml.c — the YAML side of the configuration: loads one document with
 * libyaml's document API (every node keeps its line and column), walks mappings
 * against the key tables of config_schema.c and converts scalars (numbers, sizes,
 * durations, booleans, strings). It reports and goes on, so that one run names every
 * error; only a YAML syntax error stops a layer, since libyaml cannot go past it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/config_int.h"

void *eng_cfg_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        abort();
    return p;
}

void *eng_cfg_xrealloc(void *ptr, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        abort();
    size_t bytes = n * size;
    void *p = realloc(ptr, bytes ? bytes : 1);
    if (p == NULL)
        abort();
    return p;
}

char *eng_cfg_xstrdup(const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        abort();
    return d;
}

void eng_cfg_err(struct eng_cfg_parse *p, const yaml_node_t *n, const char *path, const char *fmt,
                 ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    unsigned line = n ? (unsigned)n->start_mark.line + 1 : 0;
    unsigned col = n ? (unsigned)n->start_mark.column + 1 : 0;
    eng_config_errors_add(p->errs, p->file, line, col, path, "%s", msg);
    p->nerrors++;
}

const struct eng_config_mark *eng_cfg_mark_find(const struct eng_config *cfg, const char *key)
{
    const struct eng_config_marks *m = cfg->marks;
    for (size_t i = 0; m && i < m->n; i++)
        if (strcmp(m->v[i].key, key) == 0)
            return &m->v[i];
    return NULL;
}

void eng_cfg_mark(struct eng_cfg_parse *p, const char *path, const yaml_node_t *n)
{
    struct eng_config_marks *m = p->cfg->marks;
    struct eng_config_mark *mk = (struct eng_config_mark *)eng_cfg_mark_find(p->cfg, path);
    if (mk == NULL) {
        if (m->n == m->cap) {
            m->cap = m->cap ? 2 * m->cap : 64;
            m->v = eng_cfg_xrealloc(m->v, m->cap, sizeof(*m->v));
        }
        mk = &m->v[m->n++];
        mk->key = eng_cfg_xstrdup(path);
    }
    mk->file = p->file;
    mk->line = (unsigned)n->start_mark.line + 1;
    mk->col = (unsigned)n->start_mark.column + 1;
    mk->from_default = p->is_default;
}

void eng_cfg_marks_drop_children(struct eng_config *cfg, const char *path)
{
    struct eng_config_marks *m = cfg->marks;
    size_t len = strlen(path), kept = 0;
    for (size_t i = 0; i < m->n; i++) {
        const char *k = m->v[i].key;
        if (strncmp(k, path, len) == 0 && (k[len] == '.' || k[len] == '[')) {
            free(m->v[i].key);
            continue;
        }
        m->v[kept++] = m->v[i];
    }
    m->n = kept;
}

void eng_cfg_path_key(char *out, const char *path, const char *name)
{
    snprintf(out, CFG_PATH_MAX, "%s%s%s", path, *path ? "." : "", name);
}

void eng_cfg_path_index(char *out, const char *path, size_t i)
{
    snprintf(out, CFG_PATH_MAX, "%s[%zu]", path, i);
}

yaml_node_t *eng_cfg_node(struct eng_cfg_parse *p, int i, const char *path)
{
    yaml_node_t *n = yaml_document_get_node(p->doc, i);
    if (n == NULL)
        return NULL;
    /* An alias is the same node reached twice. Refusing them keeps every value at one
     * place in the file (so its error has one line) and bounds the walk, which an
     * alias of an alias of a list could make exponential. */
    if (p->seen[i - 1]) {
        eng_cfg_err(p, n, path, "an alias of the value at line %u (aliases are not allowed)",
                    (unsigned)n->start_mark.line + 1);
        return NULL;
    }
    p->seen[i - 1] = 1;
    return n;
}

bool eng_cfg_is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = (const char *)n->data.scalar.value;
    return *s == '\0' || strcmp(s, "~") == 0 || strcasecmp(s, "null") == 0;
}

const char *eng_cfg_scalar(struct eng_cfg_parse *p, yaml_node_t *n, const char *path)
{
    if (n->type != YAML_SCALAR_NODE) {
        eng_cfg_err(p, n, path, "expected a single value, found a %s",
                    n->type == YAML_MAPPING_NODE ? "mapping" : "list");
        return NULL;
    }
    if (strlen((const char *)n->data.scalar.value) != n->data.scalar.length) {
        eng_cfg_err(p, n, path, "the value contains a NUL byte");
        return NULL;
    }
    return (const char *)n->data.scalar.value;
}

bool eng_cfg_sequence(struct eng_cfg_parse *p, yaml_node_t *node, const char *path, size_t max,
                      yaml_node_item_t **items, size_t *n)
{
    *items = NULL;
    *n = 0;
    if (eng_cfg_is_null(node))
        return true;
    if (node->type != YAML_SEQUENCE_NODE) {
        eng_cfg_err(p, node, path, "expected a list");
        return false;
    }
    *items = node->data.sequence.items.start;
    *n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (*n > max) {
        eng_cfg_err(p, node, path, "a list of at most %zu items", max);
        return false;
    }
    return true;
}

/* ---- scalar conversions ---------------------------------------------------------------- */

int eng_cfg_parse_uint(const char *s, uint64_t *out)
{
    if (*s < '0' || *s > '9')
        return -EINVAL;
    uint64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    if (*s != '\0')
        return -EINVAL;
    *out = v;
    return 0;
}

/* A number followed by a unit of the table; "" as unit is the bare number. */
struct eng_cfg_unit {
    const char *name;
    uint64_t mult;
};

static int scaled(const char *s, const struct eng_cfg_unit *units, uint64_t *out, const char **rest)
{
    if (*s < '0' || *s > '9')
        return -EINVAL;
    uint64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    const char *u = s;
    while (*s && !(*s >= '0' && *s <= '9'))
        s++;
    size_t ulen = (size_t)(s - u);
    for (const struct eng_cfg_unit *x = units; x->name; x++) {
        if (strlen(x->name) == ulen && strncmp(u, x->name, ulen) == 0) {
            if (v > UINT64_MAX / x->mult)
                return -ERANGE;
            *out = v * x->mult;
            *rest = s;
            return 0;
        }
    }
    return -EINVAL;
}

int eng_cfg_parse_size(const char *s, uint64_t *out)
{
    /* K/M/G are binary, as in systemd and nginx; the SI forms are spelt with B. */
    static const struct eng_cfg_unit units[] = {
        { "", 1 },
        { "B", 1 },
        { "K", 1ull << 10 },
        { "KiB", 1ull << 10 },
        { "KB", 1000 },
        { "M", 1ull << 20 },
        { "MiB", 1ull << 20 },
        { "MB", 1000000 },
        { "G", 1ull << 30 },
        { "GiB", 1ull << 30 },
        { "GB", 1000000000 },
        { "T", 1ull << 40 },
        { "TiB", 1ull << 40 },
        { "TB", 1000000000000ull },
        { NULL, 0 },
    };
    const char *rest;
    int rc = scaled(s, units, out, &rest);
    if (rc == 0 && *rest != '\0')
        return -EINVAL;
    return rc;
}

int eng_cfg_parse_duration_ms(const char *s, uint64_t *out)
{
    static const struct eng_cfg_unit units[] = {
        { "ms", 1 },       { "s", 1000 },      { "m", 60000 }, { "h", 3600000 },
        { "d", 86400000 }, { "w", 604800000 }, { NULL, 0 },
    };
    uint64_t plain;
    if (eng_cfg_parse_uint(s, &plain) == 0) { /* a bare number is seconds */
        if (plain > UINT64_MAX / 1000)
            return -ERANGE;
        *out = plain * 1000;
        return 0;
    }
    /* "1h30m": terms added up. */
    if (*s == '\0')
        return -EINVAL;
    uint64_t total = 0;
    while (*s) {
        uint64_t v;
        int rc = scaled(s, units, &v, &s);
        if (rc < 0)
            return rc;
        if (total > UINT64_MAX - v)
            return -ERANGE;
        total += v;
    }
    *out = total;
    return 0;
}

/* "1h" for 3600000 ms: the largest unit dividing v. */
static void fmt_duration(char *out, size_t cap, uint64_t ms)
{
    static const struct eng_cfg_unit units[] = {
        { "d", 86400000 }, { "h", 3600000 }, { "m", 60000 },
        { "s", 1000 },     { "ms", 1 },      { NULL, 0 },
    };
    for (const struct eng_cfg_unit *u = units; u->name; u++) {
        if (ms % u->mult == 0 || u->mult == 1) {
            snprintf(out, cap, "%llu%s", (unsigned long long)(ms / u->mult), u->name);
            return;
        }
    }
}

static void fmt_value(char *out, size_t cap, enum eng_cfg_type t, uint64_t v)
{
    if (t == CFG_MS)
        fmt_duration(out, cap, v);
    else if (t == CFG_SECONDS)
        fmt_duration(out, cap, v * 1000);
    else if (t == CFG_SIZE && v >= (1u << 20) && v % (1u << 20) == 0)
        snprintf(out, cap, "%lluMiB", (unsigned long long)(v >> 20));
    else
        snprintf(out, cap, "%llu", (unsigned long long)v);
}

static void store_uint(void *field, size_t width, uint64_t v)
{
    switch (width) {
    case 1: *(uint8_t *)field = (uint8_t)v; break;
    case 2: *(uint16_t *)field = (uint16_t)v; break;
    case 4: *(uint32_t *)field = (uint32_t)v; break;
    default: *(uint64_t *)field = v; break;
    }
}

static void set_number(struct eng_cfg_parse *p, yaml_node_t *n, const char *path,
                       const struct eng_cfg_key *k, void *field)
{
    const char *s = eng_cfg_scalar(p, n, path);
    if (s == NULL)
        return;
    static const char *const forms[] = {
        [CFG_UINT] = "a whole number",
        [CFG_SIZE] = "a size (bytes, or 10M, 50MiB, 1GB)",
        [CFG_MS] = "a duration (500ms, 30s, 5m, 1h, 2d, or seconds)",
        [CFG_SECONDS] = "a duration (30s, 5m, 1h, 2d, or seconds)",
    };
    uint64_t v = 0;
    int rc = k->type == CFG_UINT   ? eng_cfg_parse_uint(s, &v)
             : k->type == CFG_SIZE ? eng_cfg_parse_size(s, &v)
                                   : eng_cfg_parse_duration_ms(s, &v);
    if (rc == -EINVAL) {
        eng_cfg_err(p, n, path, "'%s' is not %s", s, forms[k->type]);
        return;
    }
    if (rc == 0 && k->type == CFG_SECONDS) {
        if (v % 1000 != 0) {
            eng_cfg_err(p, n, path, "'%s' is not a whole number of seconds", s);
            return;
        }
        v /= 1000;
    }
    if (rc == -ERANGE || v < k->min || v > k->max) {
        char lo[32], hi[32];
        fmt_value(lo, sizeof(lo), k->type, k->min);
        fmt_value(hi, sizeof(hi), k->type, k->max);
        eng_cfg_err(p, n, path, "'%s' is out of range (%s to %s)", s, lo, hi);
        return;
    }
    store_uint(field, k->width, v);
}

static void set_bool(struct eng_cfg_parse *p, yaml_node_t *n, const char *path, bool *field)
{
    static const char *const yes[] = { "true", "yes", "on", NULL };
    static const char *const no[] = { "false", "no", "off", NULL };
    const char *s = eng_cfg_scalar(p, n, path);
    if (s == NULL)
        return;
    for (int i = 0; yes[i]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *field = true;
            return;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *field = false;
            return;
        }
    }
    eng_cfg_err(p, n, path, "'%s' is not true or false", s);
}

static void set_string(struct eng_cfg_parse *p, yaml_node_t *n, const char *path,
                       const struct eng_cfg_key *k, char **field)
{
    const char *s = eng_cfg_is_null(n) ? "" : eng_cfg_scalar(p, n, path);
    if (s == NULL)
        return;
    if (*s == '\0' && k->type == CFG_STRING) {
        eng_cfg_err(p, n, path, "needs a value");
        return;
    }
    for (const char *c = s; *c; c++) {
        if ((unsigned char)*c < 0x20 || *c == 0x7f) {
            eng_cfg_err(p, n, path, "the value contains a control character");
            return;
        }
    }
    free(*field);
    *field = *s ? eng_cfg_xstrdup(s) : NULL;
}

/* "expected one of: a, b, c" for an unknown key. */
static void unknown_key(struct eng_cfg_parse *p, yaml_node_t *kn, const char *path,
                        const char *name, const struct eng_cfg_key *keys)
{
    char list[512] = "";
    size_t len = 0;
    for (const struct eng_cfg_key *k = keys; k->name && len < sizeof(list); k++)
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", k == keys ? "" : ", ",
                                k->name);
    eng_cfg_err(p, kn, path, "unknown key '%s' (expected one of: %s)", name, list);
}

void eng_cfg_walk(struct eng_cfg_parse *p, yaml_node_t *node, const char *path,
                  const struct eng_cfg_key *keys, void *base)
{
    if (eng_cfg_is_null(node))
        return; /* "spool:" with nothing under it changes nothing */
    if (node->type != YAML_MAPPING_NODE) {
        eng_cfg_err(p, node, path, "expected a mapping of keys");
        return;
    }
    yaml_node_pair_t *start = node->data.mapping.pairs.start;
    yaml_node_pair_t *top = node->data.mapping.pairs.top;
    for (yaml_node_pair_t *pair = start; pair < top; pair++) {
        yaml_node_t *kn = eng_cfg_node(p, pair->key, path);
        if (kn == NULL)
            continue;
        const char *name = eng_cfg_scalar(p, kn, path);
        if (name == NULL)
            continue;
        char child[CFG_PATH_MAX];
        eng_cfg_path_key(child, path, name);
        /* libyaml keeps repeated keys; YAML forbids them, and the second would silently
         * win, so each is an error at its second place. */
        bool repeated = false;
        for (yaml_node_pair_t *q = start; q < pair && !repeated; q++) {
            yaml_node_t *qk = yaml_document_get_node(p->doc, q->key);
            if (qk && qk->type == YAML_SCALAR_NODE &&
                strcmp((const char *)qk->data.scalar.value, name) == 0) {
                eng_cfg_err(p, kn, child, "repeated key (first at line %u)",
                            (unsigned)qk->start_mark.line + 1);
                repeated = true;
            }
        }
        if (repeated)
            continue;
        const struct eng_cfg_key *k = keys;
        while (k->name && strcmp(k->name, name) != 0)
            k++;
        if (k->name == NULL) {
            unknown_key(p, kn, path, name, keys);
            continue;
        }
        yaml_node_t *vn = eng_cfg_node(p, pair->value, child);
        if (vn == NULL)
            continue;
        void *field = (char *)base + k->off;
        size_t before = p->nerrors;
        switch (k->type) {
        case CFG_UINT:
        case CFG_SIZE:
        case CFG_MS:
        case CFG_SECONDS: set_number(p, vn, child, k, field); break;
        case CFG_BOOL: set_bool(p, vn, child, field); break;
        case CFG_STRING:
        case CFG_PATH: set_string(p, vn, child, k, field); break;
        case CFG_SECTION: eng_cfg_walk(p, vn, child, k->section, base); break;
        case CFG_CUSTOM: k->custom(p, vn, child, field); break;
        }
        if (p->nerrors == before)
            eng_cfg_mark(p, child, vn);
    }
}

void eng_cfg_parse_layer(struct eng_cfg_parse *p, const char *text, size_t len)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        abort();
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_node_t at = { .start_mark = parser.problem_mark };
        if (parser.context)
            eng_cfg_err(p, &at, "", "YAML syntax: %s (%s at line %u)", parser.problem,
                        parser.context, (unsigned)parser.context_mark.line + 1);
        else
            eng_cfg_err(p, &at, "", "YAML syntax: %s",
                        parser.problem ? parser.problem : "cannot parse");
        yaml_parser_delete(&parser);
        return;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root) {
        yaml_document_t more;
        if (yaml_parser_load(&parser, &more)) {
            yaml_node_t *r2 = yaml_document_get_root_node(&more);
            if (r2)
                eng_cfg_err(p, r2, "", "a second YAML document: one configuration per file");
            yaml_document_delete(&more);
        }
        size_t nnodes = (size_t)(doc.nodes.top - doc.nodes.start);
        p->doc = &doc;
        p->seen = eng_cfg_xcalloc(nnodes, 1);
        p->seen[0] = 1; /* the root */
        if (root->type != YAML_MAPPING_NODE && !eng_cfg_is_null(root))
            eng_cfg_err(p, root, "", "the configuration must be a mapping of keys");
        else
            eng_cfg_walk(p, root, "", eng_cfg_schema, p->cfg);
        free(p->seen);
        p->seen = NULL;
        p->doc = NULL;
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
}
