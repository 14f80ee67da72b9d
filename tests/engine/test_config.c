/*
 * tests/engine/test_config.c — the configuration module (engine/config.h): the embedded
 * default parses and matches the defaults the engine uses when a field is 0; durations
 * and sizes; each kind of error at its line, column and key (unknown and repeated keys,
 * wrong types, ranges, addresses, CIDRs, policy lines at the value's line, YAML syntax,
 * aliases, rules across keys placed at the operator's key); every error of a file in one
 * run; lists replacing the default's; the runtime structs; and the file checks against
 * a real test PKI.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/config.h"
#include "engine/config_int.h"
#include "tests/tls/harness.h"

static struct eng_config *parse_ok(const char *text)
{
    struct eng_config_errors errs;
    eng_config_errors_init(&errs);
    struct eng_config *c = NULL;
    int rc = eng_config_parse(text, strlen(text), "t.yaml", &c, &errs);
    if (rc != 0) {
        eng_config_errors_print(&errs, stderr);
        fail_msg("did not parse:\n%s", text);
    }
    assert_int_equal(errs.n, 0);
    eng_config_errors_free(&errs);
    return c;
}

/* Parses text, which must fail; errs receives every error. */
static void parse_bad(const char *text, struct eng_config_errors *errs)
{
    eng_config_errors_init(errs);
    struct eng_config *c = (struct eng_config *)1;
    assert_int_equal(eng_config_parse(text, strlen(text), "t.yaml", &c, errs), -EINVAL);
    assert_null(c);
    assert_true(errs->n > 0);
}

/* errs holds an error at line:col for key whose message contains part. */
static void has_error(const struct eng_config_errors *errs, unsigned line, unsigned col,
                      const char *key, const char *part)
{
    for (size_t i = 0; i < errs->n; i++) {
        const struct eng_config_error *e = &errs->v[i];
        if (e->line == line && (col == 0 || e->col == col) && strcmp(e->key, key) == 0 &&
            strstr(e->message, part) && strcmp(e->file, "t.yaml") == 0)
            return;
    }
    eng_config_errors_print(errs, stderr);
    fail_msg("no error at %u:%u %s containing '%s'", line, col, key, part);
}

/* The one error of a bad text. */
static void one_error(const char *text, unsigned line, unsigned col, const char *key,
                      const char *part)
{
    struct eng_config_errors errs;
    parse_bad(text, &errs);
    has_error(&errs, line, col, key, part);
    if (errs.n != 1) {
        eng_config_errors_print(&errs, stderr);
        fail_msg("%zu errors, expected 1", errs.n);
    }
    eng_config_errors_free(&errs);
}

static void test_default(void **state)
{
    (void)state;
    struct eng_config *c = NULL;
    assert_int_equal(eng_config_default(&c), 0);
    assert_int_equal(c->workers, 0);
    assert_string_equal(c->spool.dir, "./var/spool");
    assert_false(c->spool.sync_fs);
    assert_int_equal(c->spool.max_message_size, 50u << 20);
    assert_int_equal(c->spool.min_free_bytes, 64u << 20);
    assert_int_equal(c->dns.nservers, 0);
    assert_null(c->dns.servers_csv);
    assert_int_equal(c->tls.floor, TLS_VERSION_1_2);
    assert_null(c->tls.ca_file);
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    assert_string_equal(c->delivery.helo_name, host);
    assert_int_equal(c->delivery.port, 25);
    assert_int_equal(c->delivery.nsources, 0);
    assert_int_equal(c->listen.nsmtp, 1);
    assert_string_equal(c->listen.smtp[0].address, "127.0.0.1:2525");
    assert_int_equal(c->listen.smtp[0].mode, ENG_LISTEN_STARTTLS);
    assert_string_equal(c->listen.http, "127.0.0.1:8025");
    assert_null(c->listen.cert_file);
    assert_int_equal(c->submission.nrelay_networks, 2);
    assert_string_equal(c->submission.relay_networks[1].text, "::1/128");
    assert_null(c->submission.credentials_file);
    assert_int_equal(c->api.ntokens, 0);
    assert_null(c->api.tokens_file);
    assert_string_equal(c->api.local_token_file, "./var/api.token");
    assert_string_equal(c->log.delivery, "./var/log/delivery.log");
    assert_string_equal(c->log.engine, "stderr");
    assert_int_equal(c->npolicy, 0);

    /* The default's values are the ones each module uses for a 0 field: the YAML and
     * the code cannot drift apart silently. */
    struct eng_group_config g;
    eng_config_group_config(c, &g);
    assert_int_equal(g.nworkers, 0);
    assert_int_equal(g.dns.timeout_ms, 2000);
    assert_int_equal(g.dns.tries, 2);
    assert_int_equal(g.dns.addr_pref, DNS_ADDR_PREF_ANY);
    assert_int_equal(g.dns.cache_max_entries, 10000);
    assert_int_equal(g.dns.ttl_min, 60);
    assert_int_equal(g.dns.ttl_max, 86400);
    assert_int_equal(g.dns.negative_ttl_max, 3600);
    assert_int_equal(g.dns.max_inflight, 64);
    assert_int_equal(g.dns.max_mx_hosts, 10);
    assert_int_equal(g.dns.max_addrs_per_host, 4);
    assert_int_equal(g.tls_cache_entries, 4096);
    assert_int_equal(g.capcache.max_entries, ENG_CAPCACHE_DEFAULT_MAX);
    assert_int_equal(g.capcache.ttl, ENG_CAPCACHE_DEFAULT_TTL);
    assert_int_equal(g.capcache.transient_ttl, ENG_CAPCACHE_DEFAULT_TTL / 4);
    assert_int_equal(g.capcache_save_s, 60);
    assert_int_equal(g.connpool.max_per_host, 10);
    assert_int_equal(g.connpool.max_total, 1000);
    assert_int_equal(g.connpool.max_msgs_per_conn, 100);
    assert_int_equal(g.connpool.idle_timeout_ms, 10000);
    assert_int_equal(g.connpool.max_conn_age_ms, 300000);
    assert_int_equal(g.worker.max_attempts, 100);
    assert_int_equal(g.worker.connect_timeout_ms, 30000);
    assert_int_equal(g.worker.reply_timeout_ms, 300000);
    assert_int_equal(g.worker.retry.first, 300);
    assert_int_equal(g.worker.retry.max, 3600);
    assert_int_equal(g.worker.retry.factor_pct, 200);
    assert_int_equal(g.worker.retry.jitter_pct, 10);
    assert_int_equal(g.worker.retry.max_age, 5 * 86400);
    assert_int_equal(g.worker.retry.delay_warning, 0);
    assert_string_equal(g.worker.helo_name, host);
    assert_string_equal(g.spool_dir, "./var/spool");

    /* Where the default set a key. */
    const char *file;
    unsigned line, col;
    assert_true(eng_config_locate(c, "listen.smtp[0].address", &file, &line, &col));
    assert_string_equal(file, "<default>");
    assert_true(line > 1);
    assert_false(eng_config_locate(c, "no.such.key", &file, &line, &col));
    eng_config_free(c);

    /* The default text parsed as a file of its own is valid too. */
    c = parse_ok(eng_config_default_text());
    assert_int_equal(c->listen.nsmtp, 1);
    eng_config_free(c);
}

static void test_durations_sizes(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(eng_cfg_parse_duration_ms("30s", &v), 0);
    assert_int_equal(v, 30000);
    assert_int_equal(eng_cfg_parse_duration_ms("5m", &v), 0);
    assert_int_equal(v, 300000);
    assert_int_equal(eng_cfg_parse_duration_ms("1h", &v), 0);
    assert_int_equal(v, 3600000);
    assert_int_equal(eng_cfg_parse_duration_ms("2d", &v), 0);
    assert_int_equal(v, 2 * 86400000ull);
    assert_int_equal(eng_cfg_parse_duration_ms("1h30m", &v), 0);
    assert_int_equal(v, 5400000);
    assert_int_equal(eng_cfg_parse_duration_ms("500ms", &v), 0);
    assert_int_equal(v, 500);
    assert_int_equal(eng_cfg_parse_duration_ms("90", &v), 0);
    assert_int_equal(v, 90000);
    assert_int_equal(eng_cfg_parse_duration_ms("", &v), -EINVAL);
    assert_int_equal(eng_cfg_parse_duration_ms("5 m", &v), -EINVAL);
    assert_int_equal(eng_cfg_parse_duration_ms("5x", &v), -EINVAL);
    assert_int_equal(eng_cfg_parse_duration_ms("-5s", &v), -EINVAL);
    assert_int_equal(eng_cfg_parse_duration_ms("m", &v), -EINVAL);
    assert_int_equal(eng_cfg_parse_duration_ms("99999999999999999999s", &v), -ERANGE);

    assert_int_equal(eng_cfg_parse_size("10M", &v), 0);
    assert_int_equal(v, 10u << 20);
    assert_int_equal(eng_cfg_parse_size("50MiB", &v), 0);
    assert_int_equal(v, 50u << 20);
    assert_int_equal(eng_cfg_parse_size("1GB", &v), 0);
    assert_int_equal(v, 1000000000);
    assert_int_equal(eng_cfg_parse_size("2048", &v), 0);
    assert_int_equal(v, 2048);
    assert_int_equal(eng_cfg_parse_size("4K", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(eng_cfg_parse_size("1.5M", &v), -EINVAL);
    assert_int_equal(eng_cfg_parse_size("10 MiB", &v), -EINVAL);
    assert_int_equal(eng_cfg_parse_size("20000000T", &v), -ERANGE);

    /* Through the parser, into the fields, with their units. */
    struct eng_config *c = parse_ok("limits:\n"
                                    "  idle_timeout: 1m30s\n"
                                    "  connection_max_age: 500ms\n"
                                    "delivery:\n"
                                    "  retry: {first: 90, max: 2h, delay_warning: 4h}\n"
                                    "spool:\n"
                                    "  max_message_size: 100M\n"
                                    "submission:\n"
                                    "  max_message_size: \"10MB\"\n");
    assert_int_equal(c->limits.idle_timeout_ms, 90000);
    assert_int_equal(c->limits.connection_max_age_ms, 500);
    assert_int_equal(c->delivery.retry.first, 90);
    assert_int_equal(c->delivery.retry.max, 7200);
    assert_int_equal(c->delivery.retry.delay_warning, 4 * 3600);
    assert_int_equal(c->spool.max_message_size, 100u << 20);
    assert_int_equal(c->submission.max_message_size, 10000000);
    eng_config_free(c);

    one_error("delivery:\n  retry:\n    first: 1500ms\n", 3, 12, "delivery.retry.first",
              "not a whole number of seconds");
    one_error("limits:\n  idle_timeout: soon\n", 2, 17, "limits.idle_timeout",
              "'soon' is not a duration");
    one_error("spool:\n  min_free_bytes: 1.5G\n", 2, 19, "spool.min_free_bytes", "not a size");
    one_error("dns:\n  timeout: 2m\n", 2, 12, "dns.timeout", "out of range (100ms to 1m)");
}

static void test_errors_located(void **state)
{
    (void)state;
    one_error("workers: 2\nspool:\n  dri: /x\n", 3, 3, "spool", "unknown key 'dri'");
    one_error("workers: 2\nworkers: 3\n", 2, 1, "workers", "repeated key (first at line 1)");
    one_error("spool:\n  dir: a\n  dir: b\n", 3, 3, "spool.dir", "repeated key (first at line 2)");
    one_error("workers: many\n", 1, 10, "workers", "'many' is not a whole number");
    one_error("workers: 257\n", 1, 10, "workers", "out of range (0 to 256)");
    one_error("workers: [1, 2]\n", 1, 10, "workers", "expected a single value, found a list");
    one_error("spool: /var/spool\n", 1, 8, "spool", "expected a mapping");
    one_error("spool:\n  sync_fs: maybe\n", 2, 12, "spool.sync_fs", "not true or false");
    one_error("spool:\n  dir: \"\"\n", 2, 8, "spool.dir", "needs a value");
    one_error("tls:\n  floor: 1.1\n", 2, 10, "tls.floor", "not a TLS floor");
    one_error("dns:\n  servers:\n    - 192.0.2.53\n    - dns.example\n", 4, 7, "dns.servers[1]",
              "not an IP address");
    one_error("dns:\n  prefer: ipv5\n", 2, 11, "dns.prefer", "not one of");
    one_error("delivery:\n  sources: [\"192.0.2.1:25\"]\n", 2, 13, "delivery.sources[0]",
              "without a port");
    one_error("delivery:\n  sources: [192.0.2.1, 192.0.2.1]\n", 2, 24, "delivery.sources[1]",
              "listed twice");
    one_error("listen:\n  smtp:\n    - address: 127.0.0.1\n", 3, 16, "listen.smtp[0].address",
              "not IP:PORT");
    one_error("listen:\n  smtp:\n    - mode: starttls\n", 3, 7, "listen.smtp[0]",
              "needs an address");
    one_error("listen:\n  smtp:\n    - {address: \"[::1]:25\", mode: smtps}\n", 3, 35,
              "listen.smtp[0].mode", "not starttls or implicit");
    one_error("listen:\n  smtp:\n    - address: 127.0.0.1:25\n    - address: 127.0.0.1:25\n", 4, 7,
              "listen.smtp[1]", "listed twice");
    one_error("submission:\n  relay_networks: [10.0.0.1/8]\n", 2, 20,
              "submission.relay_networks[0]", "host bits set");
    one_error("submission:\n  relay_networks: [\"2001:db8::/129\"]\n", 2, 20,
              "submission.relay_networks[0]", "not a network");
    one_error("api:\n  tokens: [abc]\n", 2, 12, "api.tokens[0]", "at least 16");
    /* YAML itself. */
    one_error("spool:\n  dir: [a\n", 3, 1, "", "YAML syntax");
    one_error("workers: 1\n---\nworkers: 2\n", 3, 1, "", "a second YAML document");
    one_error("- a\n- b\n", 1, 1, "", "must be a mapping");
    /* libyaml's documents keep no trace of where an alias was written: the error names
     * the key that used it and the anchored value's place. */
    one_error("dns:\n  servers: &s [192.0.2.1]\nsubmission:\n  relay_networks: *s\n", 2, 12,
              "submission.relay_networks", "an alias of the value at line 2");
}

/* A value with control characters (found by tests/fuzz/fuzz_config.c) is quoted escaped:
 * each error stays one line, so a value cannot forge lines of check-config's output or
 * of the log. */
static void test_errors_one_line(void **state)
{
    (void)state;
    one_error("submission:\n  relay_networks: [\"127\\n\\r\\t\\x01.0.0.0/8\"]\n", 2, 20,
              "submission.relay_networks[0]", "'127\\n\\r\\t\\x01.0.0.0/8' is not a network");
}

static void test_policy(void **state)
{
    (void)state;
    struct eng_config *c = parse_ok("policy:\n"
                                    "  example.com: \"floor=1.3\"\n"
                                    "  .partner.example: opportunistic\n"
                                    "  bank.example: \"floor ca=/etc/floormta/bank-ca.pem "
                                    "on_refusal=bounce\"\n");
    assert_int_equal(c->npolicy, 3);
    assert_string_equal(c->policy[0].pattern, "example.com");
    assert_int_equal(c->policy[0].spec.min_version, TLS_VERSION_1_3);
    assert_int_equal(c->policy[1].spec.mode, ENG_POLICY_OPPORTUNISTIC);
    assert_string_equal(c->policy[2].spec.ca_file, "/etc/floormta/bank-ca.pem");
    assert_true(c->policy[2].spec.bounce_on_refusal);
    unsigned line;
    assert_true(eng_config_locate(c, "policy.bank.example", NULL, &line, NULL));
    assert_int_equal(line, 4);
    eng_config_free(c);

    /* The parser's message, at the value's line and column; a bad pattern at the key. */
    struct eng_config_errors errs;
    parse_bad("policy:\n"
              "  good.example: floor\n"
              "  example.com:\n"
              "    \"floor=1.4\"\n"
              "  \"not a domain\": opportunistic\n"
              "  EXAMPLE.com: floor\n"
              "  x.example: \"opportunistic ca=/x.pem\"\n",
              &errs);
    has_error(&errs, 4, 5, "policy.example.com", "bad policy line \"floor=1.4\"");
    has_error(&errs, 5, 3, "policy.not a domain", "bad domain pattern");
    has_error(&errs, 6, 3, "policy.EXAMPLE.com", "repeated domain pattern (first at line 3)");
    has_error(&errs, 7, 14, "policy.x.example", "ca=");
    assert_int_equal(errs.n, 4);
    eng_config_errors_free(&errs);

    one_error("policy: [a]\n", 1, 9, "policy", "expected a mapping");
}

static void test_many_errors_and_rules(void **state)
{
    (void)state;
    struct eng_config_errors errs;
    parse_bad("workers: 1000\n"                           /* 1 */
              "wrokers: 2\n"                              /* 2 */
              "delivery:\n"                               /* 3 */
              "  retry:\n"                                /* 4 */
              "    first: 2h\n"                           /* 5 */
              "listen:\n"                                 /* 6 */
              "  smtp:\n"                                 /* 7 */
              "    - address: 127.0.0.1:465\n"            /* 8 */
              "      mode: implicit\n"                    /* 9 */
              "  http: 127.0.0.1:465\n"                   /* 10 */
              "  tls:\n"                                  /* 11 */
              "    key_file: /etc/k.pem\n"                /* 12 */
              "submission:\n"                             /* 13 */
              "  max_message_size: 1G\n"                  /* 14 */
              "  credentials_file: /etc/floormta/users\n" /* 15 */
              "delivery:\n",                              /* 16 */
              &errs);
    has_error(&errs, 1, 10, "workers", "out of range");
    has_error(&errs, 2, 1, "", "unknown key 'wrokers'");
    has_error(&errs, 16, 1, "delivery", "repeated key");
    /* Rules: at the key this file set, even when the other one is the default's. */
    has_error(&errs, 5, 12, "delivery.retry.first", "above delivery.retry.max");
    has_error(&errs, 9, 13, "listen.smtp[0].mode", "needs listen.tls.cert_file");
    has_error(&errs, 10, 9, "listen.http", "also an SMTP listener");
    has_error(&errs, 12, 15, "listen.tls.key_file", "needs listen.tls.cert_file");
    has_error(&errs, 14, 21, "submission.max_message_size", "above spool.max_message_size");
    has_error(&errs, 15, 21, "submission.credentials_file", "AUTH needs TLS");
    assert_int_equal(errs.n, 9);

    /* The printed form. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    eng_config_errors_print(&errs, f);
    fclose(f);
    assert_non_null(strstr(buf, "t.yaml:1:10: workers: '1000' is out of range (0 to 256)\n"));
    assert_non_null(strstr(buf, "t.yaml:2:1: unknown key 'wrokers'"));
    free(buf);
    eng_config_errors_free(&errs);

    /* A rule blames the key the file set: here max, not the default's first. */
    one_error("delivery:\n  retry:\n    max: 1m\n", 3, 10, "delivery.retry.max",
              "above delivery.retry.max");
    one_error("delivery:\n  helo_name: \"bad name\"\n", 2, 14, "delivery.helo_name",
              "not a host name");
}

static void test_lists_and_runtime(void **state)
{
    (void)state;
    struct eng_config *c =
            parse_ok("workers: 4\n"
                     "dns:\n"
                     "  servers: [192.0.2.53, \"[2001:db8::53]:5353\", \"198.51.100.1:5300\"]\n"
                     "  prefer: ipv4-only\n"
                     "tls:\n"
                     "  floor: \"1.3\"\n"
                     "delivery:\n"
                     "  helo_name: mx.example.net\n"
                     "  port: 2525\n"
                     "  sources: [127.0.0.1, \"::1\"]\n"
                     "listen:\n"
                     "  smtp: []\n"
                     "  http: \"\"\n"
                     "submission:\n"
                     "  relay_networks:\n"
                     "    - 192.0.2.0/24\n"
                     "api:\n"
                     "  tokens: [0123456789abcdef0123]\n"
                     "  local_token_file: \"\"\n"
                     "policy:\n"
                     "  example.com: opportunistic\n");
    assert_int_equal(c->dns.nservers, 3);
    assert_string_equal(c->dns.servers_csv, "192.0.2.53:53,[2001:db8::53]:5353,198.51.100.1:5300");
    assert_int_equal(c->listen.nsmtp, 0);
    assert_null(c->listen.http);
    assert_int_equal(c->submission.nrelay_networks, 1);
    assert_int_equal(c->api.ntokens, 1);
    assert_null(c->api.local_token_file); /* "" = none */

    struct sockaddr_in in = { .sin_family = AF_INET };
    inet_pton(AF_INET, "192.0.2.77", &in.sin_addr);
    assert_true(eng_config_cidr_match(&c->submission.relay_networks[0], (struct sockaddr *)&in));
    inet_pton(AF_INET, "192.0.3.1", &in.sin_addr);
    assert_false(eng_config_cidr_match(&c->submission.relay_networks[0], (struct sockaddr *)&in));
    struct sockaddr_in6 in6 = { .sin6_family = AF_INET6 };
    inet_pton(AF_INET6, "::ffff:192.0.2.1", &in6.sin6_addr);
    assert_true(eng_config_cidr_match(&c->submission.relay_networks[0], (struct sockaddr *)&in6));

    struct eng_group_config g;
    eng_config_group_config(c, &g);
    assert_int_equal(g.nworkers, 4);
    assert_ptr_equal(g.dns.servers, c->dns.servers_csv);
    assert_int_equal(g.dns.addr_pref, DNS_ADDR_ONLY_IPV4);
    assert_int_equal(g.worker.port, 2525);
    assert_int_equal(g.worker.nsources, 2);
    assert_int_equal(g.worker.sources[1].ss_family, AF_INET6);
    assert_string_equal(g.worker.helo_name, "mx.example.net");

    struct tls_client_config tc;
    eng_config_tls_client_config(c, &tc);
    assert_int_equal(tc.min_version, TLS_VERSION_1_3);
    struct tls_server_config sc;
    assert_false(eng_config_tls_server_config(c, &sc));

    struct eng_policy_table *t = NULL;
    char err[256];
    assert_int_equal(eng_config_policy_table(c, &t, err, sizeof(err)), 0);
    assert_int_equal(eng_policy_lookup(t, "EXAMPLE.com")->mode, ENG_POLICY_OPPORTUNISTIC);
    assert_int_equal(eng_policy_lookup(t, "other.net")->min_version, TLS_VERSION_1_3);
    eng_policy_table_free(t);
    eng_config_free(c);

    /* An empty file and a file of comments are the default. */
    c = parse_ok("");
    assert_int_equal(c->listen.nsmtp, 1);
    eng_config_free(c);
    c = parse_ok("# nothing\n");
    eng_config_free(c);
}

/* Writes text into the PKI directory as name; returns its path (static buffer). */
static const char *write_file(const char *name, const char *text)
{
    const char *path = pki_path(name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_check_files(void **state)
{
    (void)state;
    char text[8 * PATH_MAX], ca[PATH_MAX], crt[PATH_MAX], key[PATH_MAX], users[PATH_MAX],
            tokens[PATH_MAX];
    snprintf(ca, sizeof(ca), "%s", pki_path("ca.crt"));
    snprintf(crt, sizeof(crt), "%s", pki_path("valid.crt"));
    snprintf(key, sizeof(key), "%s", pki_path("valid.key"));
    snprintf(users, sizeof(users), "%s",
             write_file("users", "# users\nalice:$6$salt$hash\n\nbob:$y$j9T$x\n"));
    snprintf(tokens, sizeof(tokens), "%s", write_file("tokens", "0123456789abcdef0123\n"));
    snprintf(text, sizeof(text),
             "spool: {dir: %s/spool}\n"
             "log: {delivery: %s/log/d.log}\n"
             "tls: {ca_file: %s}\n"
             "delivery: {sources: [127.0.0.1]}\n"
             "listen:\n"
             "  smtp: [{address: \"127.0.0.1:0\", mode: implicit}]\n"
             "  tls: {cert_file: %s, key_file: %s}\n"
             "submission: {credentials_file: %s}\n"
             "api: {tokens_file: %s}\n"
             "policy: {bank.example: \"ca=%s\"}\n",
             pki_dir, pki_dir, ca, crt, key, users, tokens, ca);
    struct eng_config *c = parse_ok(text);
    struct eng_config_errors errs;
    eng_config_errors_init(&errs);
    if (eng_config_check_files(c, &errs) != 0) {
        eng_config_errors_print(&errs, stderr);
        fail();
    }
    eng_config_free(c);

    /* Everything wrong at once, each at its key's line. */
    write_file("users.bad", "alice:$6$ok\nbob:plaintext\n");
    write_file("tokens.bad", "short\n");
    write_file("notpem", "hello\n");
    snprintf(text, sizeof(text),
             "spool: {dir: %s/users/spool}\n"                 /* 1: a file in the way */
             "tls: {ca_file: %s/missing.pem}\n"               /* 2 */
             "delivery: {sources: [192.0.2.77]}\n"            /* 3: not local */
             "listen:\n"                                      /* 4 */
             "  tls: {cert_file: %s, key_file: %s/notpem}\n"  /* 5 */
             "submission: {credentials_file: %s/users.bad}\n" /* 6 */
             "api: {tokens_file: %s/tokens.bad,\n"            /* 7 */
             "      local_token_file: %s/users/api.token}\n"  /* 8: a file in the way */
             "policy: {bank.example: \"ca=%s/notpem\"}\n",    /* 9 */
             pki_dir, pki_dir, crt, pki_dir, pki_dir, pki_dir, pki_dir, pki_dir);
    c = parse_ok(text);
    assert_int_equal(eng_config_check_files(c, &errs), -EINVAL);
    has_error(&errs, 1, 0, "spool.dir", "users/spool: Not a directory");
    has_error(&errs, 2, 0, "tls.ca_file", "cannot load the trust store");
    has_error(&errs, 3, 0, "delivery.sources[0]", "cannot be used as a source address");
    has_error(&errs, 5, 0, "listen.tls.cert_file", "cannot load");
    has_error(&errs, 6, 0, "submission.credentials_file", "users.bad:2");
    has_error(&errs, 7, 0, "api.tokens_file", "tokens.bad:1");
    has_error(&errs, 8, 0, "api.local_token_file", "users is not a directory");
    has_error(&errs, 9, 0, "policy.bank.example", "cannot load ca=");
    assert_int_equal(errs.n, 8);
    /* Neither a password hash nor a token is echoed. */
    for (size_t i = 0; i < errs.n; i++)
        assert_null(strstr(errs.v[i].message, "plaintext"));
    eng_config_errors_free(&errs);
    eng_config_free(c);
    unlink(pki_path("users"));
    unlink(pki_path("tokens"));
    unlink(pki_path("users.bad"));
    unlink(pki_path("tokens.bad"));
    unlink(pki_path("notpem"));
}

static void test_load(void **state)
{
    (void)state;
    struct eng_config_errors errs;
    eng_config_errors_init(&errs);
    struct eng_config *c = NULL;
    assert_int_equal(eng_config_load("/nonexistent/floormta.yaml", &c, &errs), -ENOENT);
    assert_null(c);
    assert_int_equal(errs.n, 1);
    assert_int_equal(errs.v[0].line, 0);
    assert_string_equal(errs.v[0].file, "/nonexistent/floormta.yaml");
    eng_config_errors_free(&errs);

    const char *path = write_file("cfg.yaml", "workers: 3\n");
    assert_int_equal(eng_config_load(path, &c, &errs), 0);
    assert_int_equal(c->workers, 3);
    assert_string_equal(c->file, path);
    eng_config_free(c);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default),
        cmocka_unit_test(test_durations_sizes),
        cmocka_unit_test(test_errors_located),
        cmocka_unit_test(test_errors_one_line),
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_many_errors_and_rules),
        cmocka_unit_test(test_lists_and_runtime),
        cmocka_unit_test(test_check_files),
        cmocka_unit_test(test_load),
    };
    return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
