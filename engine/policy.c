/*
 * engine/policy.c — the per-domain TLS policy table (see policy.h): adding patterns,
 * building the shared tls/ contexts, and lock-free lookups.
 *
 * Patterns live in one array and one open-addressing hash table of indices into it,
 * keyed by the lowercase pattern (a parent pattern keeps its leading dot, so
 * "example.com" and ".example.com" are different keys). The hash detects duplicates
 * while adding, and after build serves lookups without allocating: the exact domain
 * is one probe, then each parent suffix from the longest (".b.example.com" before
 * ".example.com") is another, so a lookup costs one probe per label whatever the size
 * of the table. Nothing is written after build, so worker threads share it freely.
 */
#include "engine/policy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DOMAIN_MAX 253 /* RFC 1035 2.3.4, without the trailing dot */
#define LABEL_MAX  63

struct policy_entry {
    struct eng_policy pol; /* pol.name points to pattern */
    char *pattern;         /* lowercase; a parent pattern starts with '.' */
    size_t len;
    uint64_t hash;
    char *ca_own; /* the domain's pinned CA file, or NULL */
};

/* A built context and what it was built from, for sharing. */
struct policy_ctx {
    enum eng_policy_mode mode;
    uint16_t min_version;
    const char *ca_file; /* borrowed from a policy (owned by the table) */
    struct tls_ctx *tls;
};

struct eng_policy_table {
    struct eng_policy def;
    uint16_t default_version;
    char *default_ca; /* NULL = the system bundle */
    struct policy_entry *entries;
    size_t n, cap;
    size_t *slots; /* index + 1 into entries; 0 = empty. nslots is a power of two */
    size_t nslots;
    struct policy_ctx *ctxs;
    size_t nctxs;
    bool built;
    char err[320];
};

__attribute__((format(printf, 2, 3))) static void set_error(struct eng_policy_table *t,
                                                            const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->err, sizeof(t->err), fmt, ap);
    va_end(ap);
}

static char lower(char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
}

/* FNV-1a over the lowercase bytes, so a lookup can hash a domain as it comes. */
static uint64_t hash_lower(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)lower(s[i]);
        h *= 0x100000001b3ull;
    }
    return h;
}

static bool equal_lower(const char *pattern, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (pattern[i] != lower(s[i]))
            return false;
    return true;
}

/* The entry whose pattern is s (len bytes, any case), or NULL. */
static const struct policy_entry *find(const struct eng_policy_table *t, const char *s, size_t len)
{
    if (t->nslots == 0)
        return NULL;
    uint64_t h = hash_lower(s, len);
    size_t mask = t->nslots - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        size_t slot = t->slots[i];
        if (slot == 0)
            return NULL;
        const struct policy_entry *e = &t->entries[slot - 1];
        if (e->hash == h && e->len == len && equal_lower(e->pattern, s, len))
            return e;
    }
}

static void slot_insert(size_t *slots, size_t nslots, uint64_t hash, size_t index)
{
    size_t mask = nslots - 1;
    size_t i = (size_t)hash & mask;
    while (slots[i] != 0)
        i = (i + 1) & mask;
    slots[i] = index + 1;
}

/* Keeps the load factor at or under one half, so probes stay short and one slot is
 * always empty (every probe loop ends). */
static int grow(struct eng_policy_table *t)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        struct policy_entry *e = realloc(t->entries, cap * sizeof(*e));
        if (e == NULL)
            return -ENOMEM;
        t->entries = e;
        t->cap = cap;
    }
    if ((t->n + 1) * 2 > t->nslots) {
        size_t nslots = t->nslots ? t->nslots * 2 : 32;
        size_t *slots = calloc(nslots, sizeof(*slots));
        if (slots == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < t->n; i++)
            slot_insert(slots, nslots, t->entries[i].hash, i);
        free(t->slots);
        t->slots = slots;
        t->nslots = nslots;
    }
    return 0;
}

/* A domain name's length without one trailing dot; 0 if empty. */
static size_t trimmed_len(const char *s)
{
    size_t len = strnlen(s, DOMAIN_MAX + 2);
    if (len > 0 && s[len - 1] == '.')
        len--;
    return len;
}

/* Letters, digits, '-' and '_' in labels of 1..63, at most 253 in all. Returns the
 * length of the name to keep (one trailing dot dropped), or 0 if it is not valid. */
static size_t pattern_len(const char *p)
{
    const char *name = p[0] == '.' ? p + 1 : p;
    size_t len = trimmed_len(name);
    if (len == 0 || len > DOMAIN_MAX)
        return 0;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        if (ch == '.') {
            if (label == 0)
                return 0;
            label = 0;
            continue;
        }
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
        if (!ok || ++label > LABEL_MAX)
            return 0;
    }
    if (label == 0)
        return 0;
    return len + (size_t)(name - p);
}

static bool version_ok(uint16_t v)
{
    return v == TLS_VERSION_1_2 || v == TLS_VERSION_1_3;
}

int eng_policy_table_new(const struct eng_policy_defaults *d, struct eng_policy_table **out)
{
    struct eng_policy_defaults none = { 0, NULL };
    if (out == NULL)
        return -EINVAL;
    if (d == NULL)
        d = &none;
    uint16_t version = d->min_version ? d->min_version : TLS_VERSION_1_2;
    if (!version_ok(version))
        return -EINVAL;
    struct eng_policy_table *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    if (d->ca_file != NULL && (t->default_ca = strdup(d->ca_file)) == NULL) {
        free(t);
        return -ENOMEM;
    }
    t->default_version = version;
    t->def.mode = ENG_POLICY_FLOOR;
    t->def.min_version = version;
    t->def.ca_file = t->default_ca;
    t->def.name = "default";
    *out = t;
    return 0;
}

/* Checks a spec on its own. Returns 0 or -EINVAL with the table's message set. */
static int spec_check(struct eng_policy_table *t, const char *pattern,
                      const struct eng_policy_spec *spec)
{
    if ((unsigned)spec->mode >= ENG_POLICY_MODE__COUNT) {
        set_error(t, "%s: invalid policy mode %d", pattern, (int)spec->mode);
        return -EINVAL;
    }
    if (memchr(spec->ca_file, '\0', sizeof(spec->ca_file)) == NULL) {
        set_error(t, "%s: CA file name is not terminated", pattern);
        return -EINVAL;
    }
    if (spec->mode == ENG_POLICY_OPPORTUNISTIC) {
        if (spec->min_version != 0) {
            set_error(t, "%s: opportunistic takes no minimum version", pattern);
            return -EINVAL;
        }
        if (spec->ca_file[0] != '\0') {
            set_error(t, "%s: opportunistic takes no CA file (it refuses no certificate)", pattern);
            return -EINVAL;
        }
    } else if (spec->min_version != 0 && !version_ok(spec->min_version)) {
        set_error(t, "%s: the floor is TLS 1.2 or 1.3, not %s", pattern,
                  tls_version_name(spec->min_version));
        return -EINVAL;
    }
    return 0;
}

int eng_policy_table_add(struct eng_policy_table *t, const char *pattern,
                         const struct eng_policy_spec *spec)
{
    if (t == NULL)
        return -EINVAL;
    t->err[0] = '\0';
    if (pattern == NULL || spec == NULL) {
        set_error(t, "no pattern or no policy");
        return -EINVAL;
    }
    if (t->built) {
        set_error(t, "%s: the policy table is built already", pattern);
        return -EBUSY;
    }
    size_t len = pattern_len(pattern);
    if (len == 0) {
        set_error(t, "'%.*s': not a domain name or a .parent pattern", 260, pattern);
        return -EINVAL;
    }
    int rc = spec_check(t, pattern, spec);
    if (rc < 0)
        return rc;
    if (find(t, pattern, len) != NULL) {
        set_error(t, "%.*s: policy given twice", (int)len, pattern);
        return -EEXIST;
    }
    struct policy_entry e = { .len = len, .hash = hash_lower(pattern, len) };
    if (grow(t) < 0 || (e.pattern = malloc(len + 1)) == NULL) {
        set_error(t, "%.*s: out of memory", (int)len, pattern);
        return -ENOMEM;
    }
    for (size_t i = 0; i < len; i++)
        e.pattern[i] = lower(pattern[i]);
    e.pattern[len] = '\0';
    if (spec->ca_file[0] != '\0' && (e.ca_own = strdup(spec->ca_file)) == NULL) {
        free(e.pattern);
        set_error(t, "%.*s: out of memory", (int)len, pattern);
        return -ENOMEM;
    }
    e.pol.mode = spec->mode;
    e.pol.bounce_on_refusal = spec->bounce_on_refusal;
    e.pol.name = e.pattern;
    if (spec->mode == ENG_POLICY_OPPORTUNISTIC) {
        e.pol.min_version = 0;
        e.pol.ca_file = t->default_ca;
    } else {
        e.pol.min_version = spec->min_version ? spec->min_version : t->default_version;
        e.pol.ca_file = e.ca_own ? e.ca_own : t->default_ca;
    }
    t->entries[t->n] = e;
    slot_insert(t->slots, t->nslots, e.hash, t->n);
    t->n++;
    return 0;
}

static bool same_file(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Sets pol->tls to the context for its (mode, floor, trust store), building it if no
 * policy before needed the same one. */
static int attach_ctx(struct eng_policy_table *t, struct eng_policy *pol)
{
    /* An opportunistic context is judged against the default floor, so the log says
     * what the default would have refused. */
    uint16_t version =
            pol->mode == ENG_POLICY_OPPORTUNISTIC ? t->default_version : pol->min_version;
    for (size_t i = 0; i < t->nctxs; i++) {
        struct policy_ctx *c = &t->ctxs[i];
        if (c->mode == pol->mode && c->min_version == version &&
            same_file(c->ca_file, pol->ca_file)) {
            pol->tls = c->tls;
            return 0;
        }
    }
    struct policy_ctx *ctxs = realloc(t->ctxs, (t->nctxs + 1) * sizeof(*ctxs));
    if (ctxs == NULL) {
        set_error(t, "%s policy: out of memory", pol->name);
        return -ENOMEM;
    }
    t->ctxs = ctxs;
    struct tls_client_config cfg = {
        .min_version = version,
        .ca_file = pol->ca_file,
        .opportunistic = pol->mode == ENG_POLICY_OPPORTUNISTIC,
    };
    struct tls_ctx *tls = NULL;
    int rc = tls_ctx_new_client(&cfg, &tls);
    if (rc < 0) {
        set_error(t, "%s policy: %s (%s)", pol->name, tls_strerror(rc),
                  pol->ca_file ? pol->ca_file : "the system bundle");
        return rc;
    }
    t->ctxs[t->nctxs++] = (struct policy_ctx){ pol->mode, version, pol->ca_file, tls };
    pol->tls = tls;
    return 0;
}

int eng_policy_table_build(struct eng_policy_table *t)
{
    if (t == NULL)
        return -EINVAL;
    t->err[0] = '\0';
    if (t->built) {
        set_error(t, "the policy table is built already");
        return -EBUSY;
    }
    int rc = attach_ctx(t, &t->def);
    for (size_t i = 0; rc == 0 && i < t->n; i++)
        rc = attach_ctx(t, &t->entries[i].pol);
    if (rc < 0)
        return rc;
    t->built = true;
    return 0;
}

const char *eng_policy_table_error(const struct eng_policy_table *t)
{
    return t ? t->err : "";
}

const struct eng_policy *eng_policy_lookup(const struct eng_policy_table *t, const char *domain)
{
    if (t == NULL || !t->built)
        return NULL;
    if (domain == NULL)
        return &t->def;
    size_t len = trimmed_len(domain);
    /* A name starting with a dot is no domain (and would hit parent patterns as if
     * it were one of them). */
    if (len == 0 || len > DOMAIN_MAX || domain[0] == '.')
        return &t->def;
    const struct policy_entry *e = find(t, domain, len);
    if (e != NULL)
        return &e->pol;
    /* Parent patterns, longest first: the suffix from each dot, left to right. */
    for (size_t i = 1; i < len; i++) {
        if (domain[i] != '.')
            continue;
        e = find(t, domain + i, len - i);
        if (e != NULL)
            return &e->pol;
    }
    return &t->def;
}

size_t eng_policy_table_size(const struct eng_policy_table *t)
{
    return t ? t->n : 0;
}

size_t eng_policy_table_contexts(const struct eng_policy_table *t)
{
    return t && t->built ? t->nctxs : 0;
}

int eng_policy_table_reload(struct eng_policy_table *t)
{
    if (t == NULL || !t->built)
        return -EINVAL;
    t->err[0] = '\0';
    int first = 0;
    for (size_t i = 0; i < t->nctxs; i++) {
        const struct policy_ctx *c = &t->ctxs[i];
        struct tls_client_config cfg = {
            .min_version = c->min_version,
            .ca_file = c->ca_file,
            .opportunistic = c->mode == ENG_POLICY_OPPORTUNISTIC,
        };
        int rc = tls_ctx_reload_client(c->tls, &cfg);
        if (rc != 0 && first == 0) {
            first = rc;
            set_error(t, "%s: %s", c->ca_file ? c->ca_file : "the system bundle", tls_strerror(rc));
        }
    }
    return first;
}

void eng_policy_table_free(struct eng_policy_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nctxs; i++)
        tls_ctx_free(t->ctxs[i].tls);
    for (size_t i = 0; i < t->n; i++) {
        free(t->entries[i].pattern);
        free(t->entries[i].ca_own);
    }
    free(t->ctxs);
    free(t->entries);
    free(t->slots);
    free(t->default_ca);
    free(t);
}
