/*
 * engine/config_schema.c — every configuration key: its type, its field in struct
 * eng_config and its range, plus the values that need their own parser (addresses,
 * CIDRs, listeners, tokens, the per-domain policy). The defaults are not here: they
 * are engine/default.yaml, parsed before the operator's file.
 *
 * Ranges: the upper bounds are sanity limits (a typo of three zeros is an error, not a
 * million connections); the runtime structs treat 0 as "default", so keys whose 0
 * would silently mean something else start at 1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/addr.h"
#include "engine/config_int.h"

#define MS(x) ((uint64_t)(x)*1000u)
#define DAY   86400u
#define KEY_END                         \
    {                                   \
        NULL, 0, 0, 0, 0, 0, NULL, NULL \
    }

/* A numeric key of struct T. */
#define NUM(T, name, type, field, lo, hi)                                           \
    {                                                                               \
        name, type, offsetof(T, field), sizeof(((T *)0)->field), lo, hi, NULL, NULL \
    }
#define C(name, type, field, lo, hi) NUM(struct eng_config, name, type, field, lo, hi)
#define STR(name, type, field)                                              \
    {                                                                       \
        name, type, offsetof(struct eng_config, field), 0, 0, 0, NULL, NULL \
    }
#define FN(T, name, field, fn)                                  \
    {                                                           \
        name, CFG_CUSTOM, offsetof(T, field), 0, 0, 0, NULL, fn \
    }
#define SECTION(name, keys)                       \
    {                                             \
        name, CFG_SECTION, 0, 0, 0, 0, keys, NULL \
    }

/* Whether an address literal carries a port: "[::1]:25", "192.0.2.1:25". */
static bool has_port(const char *s)
{
    if (s[0] == '[')
        return strstr(s, "]:") != NULL;
    const char *c = strchr(s, ':');
    return c && strchr(c + 1, ':') == NULL;
}

/* ---- dns ------------------------------------------------------------------------------ */

static void dns_servers(struct eng_cfg_parse *p, yaml_node_t *n, const char *path, void *field)
{
    (void)field;
    struct eng_config *c = p->cfg;
    yaml_node_item_t *items;
    size_t count;
    if (!eng_cfg_sequence(p, n, path, CFG_MAX_LIST, &items, &count))
        return;
    eng_cfg_free_strings(&c->dns.servers, &c->dns.nservers);
    free(c->dns.servers_csv);
    c->dns.servers_csv = NULL;
    eng_cfg_marks_drop_children(c, path);
    c->dns.servers = eng_cfg_xcalloc(count, sizeof(char *));
    size_t csv_len = 0;
    for (size_t i = 0; i < count; i++) {
        char at[CFG_PATH_MAX];
        eng_cfg_path_index(at, path, i);
        yaml_node_t *in = eng_cfg_node(p, items[i], at);
        const char *s = in ? eng_cfg_scalar(p, in, at) : NULL;
        if (s == NULL)
            continue;
        struct sockaddr_storage ss;
        socklen_t len;
        if (eng_addr_parse(s, 53, &ss, &len) < 0) {
            eng_cfg_err(p, in, at, "'%s' is not an IP address with an optional port", s);
            continue;
        }
        char norm[64];
        eng_addr_format((struct sockaddr *)&ss, norm, sizeof(norm));
        c->dns.servers[c->dns.nservers++] = eng_cfg_xstrdup(norm);
        csv_len += strlen(norm) + 1;
        eng_cfg_mark(p, at, in);
    }
    if (c->dns.nservers) {
        c->dns.servers_csv = eng_cfg_xcalloc(csv_len, 1);
        for (size_t i = 0; i < c->dns.nservers; i++) {
            if (i)
                strcat(c->dns.servers_csv, ",");
            strcat(c->dns.servers_csv, c->dns.servers[i]);
        }
    }
}

static void dns_prefer(struct eng_cfg_parse *p, yaml_node_t *n, const char *path, void *field)
{
    static const char *const names[] = {
        [DNS_ADDR_PREF_ANY] = "any",        [DNS_ADDR_PREF_IPV4] = "ipv4",
        [DNS_ADDR_PREF_IPV6] = "ipv6",      [DNS_ADDR_ONLY_IPV4] = "ipv4-only",
        [DNS_ADDR_ONLY_IPV6] = "ipv6-only",
    };
    const char *s = eng_cfg_scalar(p, n, path);
    if (s == NULL)
        return;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i]) == 0) {
            *(enum dns_addr_pref *)field = (enum dns_addr_pref)i;
            return;
        }
    }
    eng_cfg_err(p, n, path, "'%s' is not one of any, ipv4, ipv6, ipv4-only, ipv6-only", s);
}

static const struct eng_cfg_key dns_keys[] = {
    FN(struct eng_config, "servers", dns, dns_servers),
    C("timeout", CFG_MS, dns.timeout_ms, 100, MS(60)),
    C("tries", CFG_UINT, dns.tries, 1, 10),
    FN(struct eng_config, "prefer", dns.prefer, dns_prefer),
    C("cache_entries", CFG_UINT, dns.cache_entries, 1, 10000000),
    C("ttl_min", CFG_SECONDS, dns.ttl_min_s, 1, DAY),
    C("ttl_max", CFG_SECONDS, dns.ttl_max_s, 1, 7 * DAY),
    C("negative_ttl_max", CFG_SECONDS, dns.negative_ttl_max_s, 1, DAY),
    C("max_inflight", CFG_UINT, dns.max_inflight, 1, 100000),
    C("max_mx_hosts", CFG_UINT, dns.max_mx_hosts, 1, DNS_MX_HOSTS_MAX),
    C("max_addrs_per_host", CFG_UINT, dns.max_addrs_per_host, 1, DNS_ADDRS_MAX),
    KEY_END,
};

/* ---- tls -------------------------------------------------------------------------------- */

static void tls_floor(struct eng_cfg_parse *p, yaml_node_t *n, const char *path, void *field)
{
    const char *s = eng_cfg_scalar(p, n, path);
    uint16_t v = 0;
    if (s == NULL)
        return;
    /* The floor is a floor: 1.0 and 1.1 parse as versions but are not offered here. */
    if (tls_version_parse(s, &v) != 0 || (v != TLS_VERSION_1_2 && v != TLS_VERSION_1_3)) {
        eng_cfg_err(p, n, path, "'%s' is not a TLS floor: \"1.2\" or \"1.3\"", s);
        return;
    }
    *(uint16_t *)field = v;
}

static const struct eng_cfg_key tls_keys[] = {
    FN(struct eng_config, "floor", tls.floor, tls_floor),
    STR("ca_file", CFG_PATH, tls.ca_file),
    C("session_cache_entries", CFG_UINT, tls.session_cache_entries, 1, 10000000),
    KEY_END,
};

/* ---- delivery --------------------------------------------------------------------------- */

static void delivery_sources(struct eng_cfg_parse *p, yaml_node_t *n, const char *path, void *field)
{
    (void)field;
    struct eng_config *c = p->cfg;
    yaml_node_item_t *items;
    size_t count;
    if (!eng_cfg_sequence(p, n, path, CFG_MAX_SOURCES, &items, &count))
        return;
    eng_cfg_free_strings(&c->delivery.source_texts, &c->delivery.nsources);
    free(c->delivery.sources);
    eng_cfg_marks_drop_children(c, path);
    c->delivery.sources = eng_cfg_xcalloc(count, sizeof(*c->delivery.sources));
    c->delivery.source_texts = eng_cfg_xcalloc(count, sizeof(char *));
    for (size_t i = 0; i < count; i++) {
        char at[CFG_PATH_MAX];
        eng_cfg_path_index(at, path, i);
        yaml_node_t *in = eng_cfg_node(p, items[i], at);
        const char *s = in ? eng_cfg_scalar(p, in, at) : NULL;
        if (s == NULL)
            continue;
        struct sockaddr_storage ss;
        socklen_t len;
        if (has_port(s) || eng_addr_parse(s, 0, &ss, &len) < 0) {
            eng_cfg_err(p, in, at, "'%s' is not an IPv4 or IPv6 address (without a port)", s);
            continue;
        }
        bool dup = false;
        for (size_t j = 0; j < c->delivery.nsources && !dup; j++)
            dup = memcmp(&c->delivery.sources[j], &ss, sizeof(ss)) == 0;
        if (dup) {
            eng_cfg_err(p, in, at, "'%s' is listed twice", s);
            continue;
        }
        c->delivery.sources[c->delivery.nsources] = ss;
        c->delivery.source_texts[c->delivery.nsources++] = eng_cfg_xstrdup(s);
        eng_cfg_mark(p, at, in);
    }
}

static const struct eng_cfg_key retry_keys[] = {
    C("first", CFG_SECONDS, delivery.retry.first, 1, DAY),
    C("max", CFG_SECONDS, delivery.retry.max, 1, 7 * DAY),
    C("factor_pct", CFG_UINT, delivery.retry.factor_pct, 100, 1000),
    C("jitter_pct", CFG_UINT, delivery.retry.jitter_pct, 0, 50),
    C("max_age", CFG_SECONDS, delivery.retry.max_age, 60, 30 * DAY),
    C("delay_warning", CFG_SECONDS, delivery.retry.delay_warning, 0, 30 * DAY),
    KEY_END,
};

static const struct eng_cfg_key capcache_keys[] = {
    C("ttl", CFG_SECONDS, delivery.capcache_ttl_s, 1, 7 * DAY),
    C("transient_ttl", CFG_SECONDS, delivery.capcache_transient_ttl_s, 1, 7 * DAY),
    C("entries", CFG_UINT, delivery.capcache_entries, 1, 10000000),
    C("save_interval", CFG_SECONDS, delivery.capcache_save_s, 1, DAY),
    KEY_END,
};

static const struct eng_cfg_key delivery_keys[] = {
    STR("helo_name", CFG_PATH, delivery.helo_name),
    C("port", CFG_UINT, delivery.port, 1, 65535),
    FN(struct eng_config, "sources", delivery, delivery_sources),
    C("max_attempts", CFG_UINT, delivery.max_attempts, 1, 100000),
    C("connect_timeout", CFG_MS, delivery.connect_timeout_ms, 100, MS(600)),
    C("reply_timeout", CFG_MS, delivery.reply_timeout_ms, 100, MS(3600)),
    SECTION("retry", retry_keys),
    SECTION("capcache", capcache_keys),
    KEY_END,
};

static const struct eng_cfg_key limits_keys[] = {
    C("connections_per_host", CFG_UINT, limits.connections_per_host, 1, 10000),
    C("connections_total", CFG_UINT, limits.connections_total, 1, 1000000),
    C("messages_per_connection", CFG_UINT, limits.messages_per_connection, 1, 1000000),
    C("idle_timeout", CFG_MS, limits.idle_timeout_ms, 1, MS(3600)),
    C("connection_max_age", CFG_MS, limits.connection_max_age_ms, 1, MS(DAY)),
    KEY_END,
};

/* ---- listen ----------------------------------------------------------------------------- */

/* "IP:PORT" into *ss; port 0 lets the kernel choose (tests). */
static bool listen_address(struct eng_cfg_parse *p, yaml_node_t *n, const char *path, const char *s,
                           struct sockaddr_storage *ss, socklen_t *len)
{
    if (!has_port(s) || eng_addr_parse(s, 0, ss, len) < 0) {
        eng_cfg_err(p, n, path, "'%s' is not IP:PORT (\"127.0.0.1:2525\", \"[::1]:2525\")", s);
        return false;
    }
    return true;
}

static void listener_address(struct eng_cfg_parse *p, yaml_node_t *n, const char *path, void *field)
{
    struct eng_config_listener *l = field;
    const char *s = eng_cfg_scalar(p, n, path);
    if (s && listen_address(p, n, path, s, &l->addr, &l->addrlen))
        l->address = eng_cfg_xstrdup(s);
}

static void listener_mode(struct eng_cfg_parse *p, yaml_node_t *n, const char *path, void *field)
{
    const char *s = eng_cfg_scalar(p, n, path);
    if (s == NULL)
        return;
    if (strcmp(s, "starttls") == 0)
        *(enum eng_config_listen_mode *)field = ENG_LISTEN_STARTTLS;
    else if (strcmp(s, "implicit") == 0)
        *(enum eng_config_listen_mode *)field = ENG_LISTEN_IMPLICIT;
    else
        eng_cfg_err(p, n, path, "'%s' is not starttls or implicit", s);
}

static const struct eng_cfg_key listener_keys[] = {
    FN(struct eng_config_listener, "address", address, listener_address),
    FN(struct eng_config_listener, "mode", mode, listener_mode),
    KEY_END,
};

static void listen_smtp(struct eng_cfg_parse *p, yaml_node_t *n, const char *path, void *field)
{
    (void)field;
    struct eng_config *c = p->cfg;
    yaml_node_item_t *items;
    size_t count;
    if (!eng_cfg_sequence(p, n, path, CFG_MAX_LIST, &items, &count))
        return;
    for (size_t i = 0; i < c->listen.nsmtp; i++)
        free(c->listen.smtp[i].address);
    free(c->listen.smtp);
    c->listen.nsmtp = 0;
    eng_cfg_marks_drop_children(c, path);
    c->listen.smtp = eng_cfg_xcalloc(count, sizeof(*c->listen.smtp));
    /* A listener in error stays in the array with no address, so that the index of
     * each keeps matching its key path for the rules; the parse fails anyway. */
    c->listen.nsmtp = count;
    for (size_t i = 0; i < count; i++) {
        char at[CFG_PATH_MAX];
        eng_cfg_path_index(at, path, i);
        yaml_node_t *in = eng_cfg_node(p, items[i], at);
        if (in == NULL)
            continue;
        struct eng_config_listener *l = &c->listen.smtp[i];
        size_t before = p->nerrors;
        eng_cfg_walk(p, in, at, listener_keys, l);
        if (p->nerrors == before && l->address == NULL)
            eng_cfg_err(p, in, at, "a listener needs an address");
        for (size_t j = 0; j < i && p->nerrors == before; j++) {
            if (c->listen.smtp[j].address &&
                memcmp(&c->listen.smtp[j].addr, &l->addr, sizeof(l->addr)) == 0)
                eng_cfg_err(p, in, at, "%s is listed twice", l->address);
        }
        if (p->nerrors != before) {
            free(l->address);
            memset(l, 0, sizeof(*l));
            continue;
        }
        eng_cfg_mark(p, at, in);
    }
}

static void listen_http(struct eng_cfg_parse *p, yaml_node_t *n, const char *path, void *field)
{
    (void)field;
    struct eng_config *c = p->cfg;
    const char *s = eng_cfg_is_null(n) ? "" : eng_cfg_scalar(p, n, path);
    if (s == NULL)
        return;
    free(c->listen.http);
    c->listen.http = NULL;
    if (*s && listen_address(p, n, path, s, &c->listen.http_addr, &c->listen.http_addrlen))
        c->listen.http = eng_cfg_xstrdup(s);
}

static const struct eng_cfg_key listen_tls_keys[] = {
    STR("cert_file", CFG_PATH, listen.cert_file),
    STR("key_file", CFG_PATH, listen.key_file),
    KEY_END,
};

static const struct eng_cfg_key listen_keys[] = {
    FN(struct eng_config, "smtp", listen, listen_smtp),
    FN(struct eng_config, "http", listen, listen_http),
    SECTION("tls", listen_tls_keys),
    KEY_END,
};

/* ---- submission ---------------------------------------------------------------------- */

static int parse_cidr(const char *s, struct eng_config_cidr *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t hlen = slash ? (size_t)(slash - s) : strlen(s);
    if (hlen == 0 || hlen >= sizeof(host))
        return -EINVAL;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, host, out->addr) == 1)
        out->family = AF_INET;
    else if (inet_pton(AF_INET6, host, out->addr) == 1)
        out->family = AF_INET6;
    else
        return -EINVAL;
    unsigned bits = out->family == AF_INET ? 32 : 128;
    uint64_t prefix = bits;
    if (slash && (eng_cfg_parse_uint(slash + 1, &prefix) < 0 || prefix > bits))
        return -EINVAL;
    out->prefix = (unsigned)prefix;
    /* Host bits set ("10.0.0.1/8") are most likely a typo of the network: refuse. */
    for (unsigned b = out->prefix; b < bits; b++)
        if (out->addr[b / 8] & (0x80 >> (b % 8)))
            return -ERANGE;
    return 0;
}

static void relay_networks(struct eng_cfg_parse *p, yaml_node_t *n, const char *path, void *field)
{
    (void)field;
    struct eng_config *c = p->cfg;
    yaml_node_item_t *items;
    size_t count;
    if (!eng_cfg_sequence(p, n, path, CFG_MAX_LIST, &items, &count))
        return;
    for (size_t i = 0; i < c->submission.nrelay_networks; i++)
        free(c->submission.relay_networks[i].text);
    free(c->submission.relay_networks);
    c->submission.nrelay_networks = 0;
    eng_cfg_marks_drop_children(c, path);
    c->submission.relay_networks = eng_cfg_xcalloc(count, sizeof(struct eng_config_cidr));
    for (size_t i = 0; i < count; i++) {
        char at[CFG_PATH_MAX];
        eng_cfg_path_index(at, path, i);
        yaml_node_t *in = eng_cfg_node(p, items[i], at);
        const char *s = in ? eng_cfg_scalar(p, in, at) : NULL;
        if (s == NULL)
            continue;
        struct eng_config_cidr *cidr = &c->submission.relay_networks[c->submission.nrelay_networks];
        int rc = parse_cidr(s, cidr);
        if (rc == -ERANGE) {
            eng_cfg_err(p, in, at, "'%s' has host bits set beyond the /%u prefix", s, cidr->prefix);
            continue;
        }
        if (rc < 0) {
            eng_cfg_err(p, in, at, "'%s' is not a network (\"192.0.2.0/24\", \"2001:db8::/32\")",
                        s);
            continue;
        }
        cidr->text = eng_cfg_xstrdup(s);
        c->submission.nrelay_networks++;
        eng_cfg_mark(p, at, in);
    }
}

static const struct eng_cfg_key submission_keys[] = {
    C("max_message_size", CFG_SIZE, submission.max_message_size, 1024, 1ull << 40),
    C("max_recipients", CFG_UINT, submission.max_recipients, 1, 1000000),
    C("command_timeout", CFG_MS, submission.command_timeout_ms, 1000, MS(3600)),
    C("data_timeout", CFG_MS, submission.data_timeout_ms, 1000, MS(3600)),
    C("max_connections_per_client", CFG_UINT, submission.max_connections_per_client, 1, 100000),
    FN(struct eng_config, "relay_networks", submission, relay_networks),
    STR("credentials_file", CFG_PATH, submission.credentials_file),
    KEY_END,
};

/* ---- api, log, policy ----------------------------------------------------------------- */

static void api_tokens(struct eng_cfg_parse *p, yaml_node_t *n, const char *path, void *field)
{
    (void)field;
    struct eng_config *c = p->cfg;
    yaml_node_item_t *items;
    size_t count;
    if (!eng_cfg_sequence(p, n, path, CFG_MAX_LIST, &items, &count))
        return;
    eng_cfg_free_strings(&c->api.tokens, &c->api.ntokens);
    eng_cfg_marks_drop_children(c, path);
    c->api.tokens = eng_cfg_xcalloc(count, sizeof(char *));
    for (size_t i = 0; i < count; i++) {
        char at[CFG_PATH_MAX];
        eng_cfg_path_index(at, path, i);
        yaml_node_t *in = eng_cfg_node(p, items[i], at);
        const char *s = in ? eng_cfg_scalar(p, in, at) : NULL;
        if (s == NULL)
            continue;
        /* Never echo a token into an error: the message may land in a log. */
        bool printable = true;
        for (const char *x = s; *x; x++)
            printable = printable && *x > 0x20 && *x < 0x7f;
        if (strlen(s) < 16 || !printable) {
            eng_cfg_err(p, in, at, "a token needs at least 16 printable characters, no spaces");
            continue;
        }
        c->api.tokens[c->api.ntokens++] = eng_cfg_xstrdup(s);
        eng_cfg_mark(p, at, in);
    }
}

static const struct eng_cfg_key api_keys[] = {
    FN(struct eng_config, "tokens", api, api_tokens),
    STR("tokens_file", CFG_PATH, api.tokens_file),
    STR("local_token_file", CFG_PATH, api.local_token_file),
    KEY_END,
};

static const struct eng_cfg_key log_keys[] = {
    STR("delivery", CFG_STRING, log.delivery),
    STR("engine", CFG_STRING, log.engine),
    KEY_END,
};

static const struct eng_cfg_key spool_keys[] = {
    STR("dir", CFG_STRING, spool.dir),
    C("sync_fs", CFG_BOOL, spool.sync_fs, 0, 1),
    C("max_message_size", CFG_SIZE, spool.max_message_size, 1024, 1ull << 40),
    C("min_free_bytes", CFG_SIZE, spool.min_free_bytes, 0, 1ull << 50),
    KEY_END,
};

void eng_cfg_policy(struct eng_cfg_parse *p, yaml_node_t *n, const char *path, void *field);

const struct eng_cfg_key eng_cfg_schema[] = {
    C("workers", CFG_UINT, workers, 0, ENG_GROUP_MAX_WORKERS),
    SECTION("spool", spool_keys),
    SECTION("dns", dns_keys),
    SECTION("tls", tls_keys),
    SECTION("delivery", delivery_keys),
    SECTION("limits", limits_keys),
    SECTION("listen", listen_keys),
    SECTION("submission", submission_keys),
    SECTION("api", api_keys),
    SECTION("log", log_keys),
    FN(struct eng_config, "policy", policy, eng_cfg_policy),
    KEY_END,
};
