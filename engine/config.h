/*
 * engine/config.h — the daemon's configuration: one YAML file (libyaml), parsed into
 * plain data, so that the daemon never sees YAML.
 *
 * Layers: the embedded default (engine/default.yaml, eng_config_default_text) is parsed
 * first, then the operator's file on top of it; a key the file sets replaces the
 * default's value (a list replaces the whole list). So the default file is the one
 * source of truth for every default, and it is itself a valid, documented
 * configuration (`floormta check-config --print-default`).
 *
 * Errors are data: every problem found (syntax, unknown or duplicate key, wrong type,
 * value out of range, bad address or CIDR, a policy line eng_policy_spec_parse
 * rejects, inconsistent keys) is appended to a struct eng_config_errors with the file,
 * line and column of the node at fault and the key path ("listen.smtp[0].mode"), and
 * parsing goes on, so that one run names them all. eng_config_parse never touches the
 * file system (except gethostname for an empty helo_name); eng_config_check_files
 * does the checks that need it (files readable, trust store and certificate loadable,
 * egress sources local, directories creatable).
 *
 * Listeners without a certificate: with listen.tls.cert_file empty, the SMTP listeners
 * offer no STARTTLS (mode implicit is then an error) and no AUTH (credentials_file is
 * then an error: no password crosses the network in clear); only clients in
 * submission.relay_networks (loopback by default) may submit. That is how the embedded
 * default starts with no certificate at all.
 *
 * Memory: configuration is start-up and control-plane work, so allocation failures
 * abort (STYLE 7).
 */
#ifndef FLOORMTA_ENGINE_CONFIG_H
#define FLOORMTA_ENGINE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "engine/group.h"
#include "engine/policy.h"
#include "queue/queue.h"
#include "tls/tls.h"

/* ---- errors ------------------------------------------------------------------------ */

struct eng_config_error {
    char *file;    /* the file name given to the parser; "<default>" for the embedded one */
    unsigned line; /* 1-based; 0 = about the whole file (it cannot be read) */
    unsigned col;  /* 1-based; 0 with line 0 */
    char *key;     /* "listen.smtp[0].mode"; "" for a YAML syntax error */
    char *message; /* one line, no trailing newline */
};

/* A growing list; zero-initialise it (or eng_config_errors_init), free with
 * eng_config_errors_free. Everything in it is owned by it. */
struct eng_config_errors {
    struct eng_config_error *v;
    size_t n;
    size_t cap;
};

void eng_config_errors_init(struct eng_config_errors *e);
void eng_config_errors_free(struct eng_config_errors *e);

/* Appends one error (file, key and the printf-formatted message are copied). */
void eng_config_errors_add(struct eng_config_errors *e, const char *file, unsigned line,
                           unsigned col, const char *key, const char *fmt, ...)
        __attribute__((format(printf, 6, 7)));

/* Writes every error, one a line, as "FILE:LINE:COL: KEY: message" ("FILE: message"
 * for line 0, "FILE:LINE:COL: message" without a key), in the order found. */
void eng_config_errors_print(const struct eng_config_errors *e, FILE *f);

/* ---- the configuration --------------------------------------------------------------- */

#define ENG_CONFIG_LISTEN_MODES(X)                                                         \
    X(ENG_LISTEN_STARTTLS, "starttls") /* plain SMTP, STARTTLS offered if a cert is set */ \
    X(ENG_LISTEN_IMPLICIT, "implicit") /* TLS from the first byte (port 465); needs a cert */

enum eng_config_listen_mode {
#define ENG_LISTEN_MODE_ENUM(name, str) name,
    ENG_CONFIG_LISTEN_MODES(ENG_LISTEN_MODE_ENUM)
#undef ENG_LISTEN_MODE_ENUM
};

/* "starttls", "implicit"; "invalid" out of range. Static string. */
const char *eng_config_listen_mode_name(enum eng_config_listen_mode m);

struct eng_config_listener {
    char *address; /* as written, "127.0.0.1:2525" */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    enum eng_config_listen_mode mode;
};

struct eng_config_cidr {
    char *text;       /* as written, "127.0.0.0/8" */
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network address, host bits cleared; 4 bytes used for AF_INET */
    unsigned prefix;
};

/* Whether sa (AF_INET or AF_INET6; an IPv4-mapped IPv6 address counts as IPv4) lies in
 * c. Both borrowed. */
bool eng_config_cidr_match(const struct eng_config_cidr *c, const struct sockaddr *sa);

struct eng_config_policy {
    char *pattern;               /* "example.com" or ".example.com", as written */
    char *text;                  /* the policy line, as written */
    struct eng_policy_spec spec; /* parsed by eng_policy_spec_parse */
};

struct eng_config_marks; /* private: where each key was set (eng_config_locate) */

/* Plain data: every pointer is owned by the struct; free with eng_config_free.
 * Durations carry their unit in their name; sizes are bytes. */
struct eng_config {
    char *file;       /* the name given to the parser */
    unsigned workers; /* 0 = the online CPUs */

    struct {
        char *dir;
        bool sync_fs;
        uint64_t max_message_size;
        uint64_t min_free_bytes;
    } spool;

    struct {
        char **servers; /* "192.0.2.53:53" (normalised); none = /etc/resolv.conf */
        size_t nservers;
        char *servers_csv;   /* the same, comma-separated for dns_config; NULL if none */
        unsigned timeout_ms; /* per try */
        unsigned tries;
        enum dns_addr_pref prefer;
        size_t cache_entries;
        uint32_t ttl_min_s, ttl_max_s, negative_ttl_max_s;
        unsigned max_inflight;
        unsigned max_mx_hosts;
        unsigned max_addrs_per_host;
    } dns;

    struct {
        uint16_t floor;               /* TLS_VERSION_1_2 or TLS_VERSION_1_3 */
        char *ca_file;                /* NULL = the system bundle; otherwise it replaces it */
        size_t session_cache_entries; /* per worker */
    } tls;

    struct {
        char *helo_name; /* never NULL: the file's, else this host's name */
        uint16_t port;
        struct sockaddr_storage *sources; /* egress addresses, port 0 */
        char **source_texts;              /* as written */
        size_t nsources;
        unsigned max_attempts; /* concurrent attempts per worker */
        unsigned connect_timeout_ms;
        unsigned reply_timeout_ms;
        struct queue_retry_config retry;
        uint32_t capcache_ttl_s;
        uint32_t capcache_transient_ttl_s;
        size_t capcache_entries;
        unsigned capcache_save_s;
    } delivery;

    struct {
        unsigned connections_per_host;
        unsigned connections_total;
        unsigned messages_per_connection;
        unsigned idle_timeout_ms;
        unsigned connection_max_age_ms;
    } limits;

    struct {
        struct eng_config_listener *smtp;
        size_t nsmtp;
        char *http; /* as written; NULL = no HTTP listener */
        struct sockaddr_storage http_addr;
        socklen_t http_addrlen;
        char *cert_file; /* NULL = no certificate: no STARTTLS, no AUTH (see above) */
        char *key_file;
    } listen;

    struct {
        uint64_t max_message_size;
        unsigned max_recipients;
        unsigned command_timeout_ms;
        unsigned data_timeout_ms;
        unsigned max_connections_per_client;
        struct eng_config_cidr *relay_networks;
        size_t nrelay_networks;
        char *credentials_file; /* "user:crypt-hash" lines; NULL = no AUTH */
    } submission;

    struct {
        char **tokens; /* bearer tokens for the HTTP API */
        size_t ntokens;
        char *tokens_file; /* one token a line; NULL = none */
        /* Where the daemon writes a fresh token for local tools (the CLI) at start, and
         * removes it at a clean stop; NULL = none. */
        char *local_token_file;
    } api;

    struct {
        char *delivery; /* the delivery log's path */
        char *engine;   /* a path, or "stderr" */
    } log;

    struct eng_config_policy *policy; /* in file order */
    size_t npolicy;

    struct eng_config_marks *marks;
};

/* The embedded default configuration (engine/default.yaml), NUL-terminated. Static. */
const char *eng_config_default_text(void);

/* Parses len bytes of YAML text (borrowed) on top of the embedded default. filename
 * (borrowed, copied) names the text in errors. Every error found is appended to errs
 * (may be NULL). Returns 0 and *out (free with eng_config_free), or -EINVAL (at least
 * one error; *out is NULL). */
int eng_config_parse(const char *text, size_t len, const char *filename, struct eng_config **out,
                     struct eng_config_errors *errs);

/* Reads path ("-" = standard input) and parses it as eng_config_parse. Returns 0, -EINVAL
 * (errors appended), or -errno when the file cannot be read (one error with line 0
 * appended). */
int eng_config_load(const char *path, struct eng_config **out, struct eng_config_errors *errs);

/* The embedded default alone: eng_config_parse of an empty document. Returns 0 and *out
 * (free with eng_config_free); the default is tested valid, so -EINVAL means a bug. */
int eng_config_default(struct eng_config **out);

/* NULL is a no-op. */
void eng_config_free(struct eng_config *cfg);

/* Where key ("tls.ca_file", "listen.smtp[1]", "policy.example.com") was set: the
 * operator's file if it set it, else the default's. *file is borrowed from cfg.
 * Returns false if the key was never set. For errors found after parsing (a bind that
 * fails, a file that vanished). */
bool eng_config_locate(const struct eng_config *cfg, const char *key, const char **file,
                       unsigned *line, unsigned *col);

/* Checks what needs the file system, appending every problem to errs, located at the
 * key that names it: the trust store and each policy's ca= load (tls_ctx_new_client),
 * the certificate and key load (tls_ctx_new_server), credentials_file and tokens_file
 * are readable and well-formed, local_token_file's folder exists or can be created, each egress
 * source is an address of this host (a test bind, port 0), the spool and log directories exist or
 * can be created. Returns 0 or -EINVAL. cfg is borrowed. */
int eng_config_check_files(const struct eng_config *cfg, struct eng_config_errors *errs);

/* ---- the runtime structs ---------------------------------------------------------- */

/* Fills every plain field of *out from cfg: nworkers, spool_dir, dns (servers borrowed
 * from cfg), tls_cache_entries, capcache, capcache_save_s, connpool (its loop NULL) and
 * worker (retry, helo_name, port, max_attempts, timeouts, sources — borrowed from
 * cfg). The objects stay NULL for the daemon to build: spool, tls, worker.policy
 * (eng_config_policy_table). cfg must outlive the use of *out. */
void eng_config_group_config(const struct eng_config *cfg, struct eng_group_config *out);

/* The spool's settings (dir borrowed from cfg); log is left NULL. */
void eng_config_spool_config(const struct eng_config *cfg, struct queue_spool_config *out);

/* The delivery client context's floor and trust store (ca_file borrowed from cfg). */
void eng_config_tls_client_config(const struct eng_config *cfg, struct tls_client_config *out);

/* The listeners' server context (files borrowed from cfg). Returns false when no
 * certificate is configured (no TLS on the listeners). */
bool eng_config_tls_server_config(const struct eng_config *cfg, struct tls_server_config *out);

/* Builds the per-domain policy table: defaults from tls.floor and tls.ca_file, one line
 * per policy entry, then eng_policy_table_build (which reads every CA file). Returns 0
 * and *out (free with eng_policy_table_free), or the failing code with a one-line
 * message in err (errlen bytes; names the domain). */
int eng_config_policy_table(const struct eng_config *cfg, struct eng_policy_table **out, char *err,
                            size_t errlen);

#endif /* FLOORMTA_ENGINE_CONFIG_H */
