/*
 * engine/policy.h — the per-domain TLS policy table.
 *
 * Every domain gets the floor (tls.h): TLS >= the default minimum version (1.2, or 1.3
 * if configured), a chain to the default trust store, the MX host name, the dates. A
 * domain's line in the configuration may raise that (floor=1.3), pin a CA file
 * (ca=/etc/x.pem), bounce instead of defer when every host refuses
 * (on_refusal=bounce), or — only when an operator writes it for that domain — make it
 * `opportunistic`: TLS whatever its quality if STARTTLS is offered, plaintext if not
 * (smtp_client_set_opportunistic), logged and counted as such by the engine. A refusal
 * never falls back to plaintext or a weaker version; opportunistic is a property of
 * the domain, decided before any connection, never a reaction to one.
 *
 * Life cycle: eng_policy_table_new, eng_policy_table_add per configured domain,
 * eng_policy_table_build (which makes the tls/ client contexts), then lookups. After
 * build the table is read-only: every worker thread may look up in it without locks,
 * and lookups never allocate. Contexts are shared: policies with the same mode,
 * minimum version and trust store use one tls_ctx.
 *
 * Patterns, as in Postfix's tls_policy maps: "example.com" matches that domain only;
 * ".example.com" matches every subdomain of example.com (not example.com itself).
 * Lookup is case-insensitive and ignores one trailing dot: the exact pattern first,
 * then the longest matching parent pattern, else the default policy.
 *
 * Errors: 0 or a negative errno (-EINVAL, -EEXIST, -EBUSY, -ENOMEM), or tls/'s codes
 * from building contexts (TLS_ERR_CA_LOAD, ...); eng_describe_error names them all,
 * and eng_policy_table_error says which domain a failure is about.
 */
#ifndef FLOORMTA_ENGINE_POLICY_H
#define FLOORMTA_ENGINE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tls/tls.h"

#define ENG_POLICY_MODES(X)                                                                \
    X(ENG_POLICY_FLOOR, "floor")                 /* TLS that meets the floor, or refuse */ \
    X(ENG_POLICY_OPPORTUNISTIC, "opportunistic") /* TLS if offered, plaintext otherwise */

enum eng_policy_mode {
#define ENG_POLICY_MODE_ENUM(name, str) name,
    ENG_POLICY_MODES(ENG_POLICY_MODE_ENUM)
#undef ENG_POLICY_MODE_ENUM
            ENG_POLICY_MODE__COUNT
};

/* "floor", "opportunistic"; "unknown" for an out-of-range value. Static string. */
const char *eng_policy_mode_name(enum eng_policy_mode mode);

/* One domain's policy, as built. Everything is owned by the table and valid until
 * eng_policy_table_free. */
struct eng_policy {
    enum eng_policy_mode mode;
    uint16_t min_version;   /* floor: TLS_VERSION_1_2 or TLS_VERSION_1_3, enforced.
                             * opportunistic: 0 (nothing is enforced; the evidence is
                             * judged against the default floor) */
    const char *ca_file;    /* the trust store its context loaded: the domain's pinned
                             * file, else the default's; NULL = the system bundle */
    bool bounce_on_refusal; /* every host refused: bounce (true) or defer (false) */
    struct tls_ctx *tls;    /* the client context to use; borrowed from the table (take
                             * no reference, do not free) */
    const char *name;       /* the pattern it came from (lowercase), or "default" */
};

/* What applies to every domain without a line of its own. */
struct eng_policy_defaults {
    uint16_t min_version; /* 0 = TLS_VERSION_1_2; or TLS_VERSION_1_3 */
    const char *ca_file;  /* NULL = the system bundle. Copied. */
};

#define ENG_POLICY_PATH_MAX 1024

/* One domain's line, parsed (eng_policy_spec_parse) or filled in by hand after
 * eng_policy_spec_init. */
struct eng_policy_spec {
    enum eng_policy_mode mode;
    uint16_t min_version;              /* floor: 0 = the default's, or 1.2 / 1.3.
                                        * opportunistic: must be 0 */
    char ca_file[ENG_POLICY_PATH_MAX]; /* "" = the default's. floor only */
    bool bounce_on_refusal;
};

/* Sets *spec to "floor" with every default: the same as no line at all. */
void eng_policy_spec_init(struct eng_policy_spec *spec);

/* Parses one policy line into *out. The syntax: words separated by spaces or tabs, in
 * any order, each at most once:
 *   floor              the floor with the default minimum version (the default mode)
 *   floor=1.2|1.3      the floor with this minimum version ("TLSv1.3" is accepted too)
 *   opportunistic      TLS if offered (whatever its quality), plaintext otherwise;
 *                      excludes floor=, and ca= (a pinned CA refuses nothing here)
 *   ca=/abs/path.pem   trust only the roots in this PEM file (an absolute path
 *                      without spaces; read at eng_policy_table_build)
 *   on_refusal=defer|bounce
 *                      when every host refuses: defer (the default) or bounce
 * Examples: "floor=1.3 ca=/etc/floormta/bank-ca.pem on_refusal=bounce",
 * "opportunistic". text is borrowed. Returns 0, or -EINVAL with a one-line message in
 * err (errlen bytes, always NUL-terminated; err may be NULL when errlen is 0) naming
 * the word at fault: an empty line, an unknown key, a bad value, a repeated or
 * conflicting word. *out is only written on success. */
int eng_policy_spec_parse(const char *text, struct eng_policy_spec *out, char *err, size_t errlen);

struct eng_policy_table;

/* Starts an empty table with defaults d (copied; NULL = all defaults). Returns 0 and
 * *out (free with eng_policy_table_free), -EINVAL (a minimum version other than 1.2 or
 * 1.3), -ENOMEM. */
int eng_policy_table_new(const struct eng_policy_defaults *d, struct eng_policy_table **out);

/* Adds the policy of one domain pattern ("example.com" or ".example.com"; see above)
 * before build. pattern and spec are borrowed (copied). Returns 0, -EINVAL (a pattern
 * that is not a domain name, an opportunistic spec with min_version or ca_file set, a
 * bad version or mode), -EEXIST (the pattern is already there, in any case), -EBUSY
 * (the table is built), -ENOMEM. On failure eng_policy_table_error says why. */
int eng_policy_table_add(struct eng_policy_table *t, const char *pattern,
                         const struct eng_policy_spec *spec);

/* Builds the tls/ client contexts: one per distinct (mode, minimum version, trust
 * store), shared by every policy that has it; the default policy's first. Returns 0,
 * -EBUSY (built already), or the first failure: TLS_ERR_CA_LOAD (a trust store that
 * cannot be read or holds no certificate), another tls_ctx_new_client code, -ENOMEM.
 * On failure eng_policy_table_error names the domain (or "default") and the file; the
 * table can then only be freed. */
int eng_policy_table_build(struct eng_policy_table *t);

/* The message of the last failed add or build ("" if none). Borrowed until the next
 * call on t. */
const char *eng_policy_table_error(const struct eng_policy_table *t);

/* The policy for domain (case-insensitive, one trailing dot ignored): the exact
 * pattern, else the longest parent pattern that matches, else the default. Never
 * allocates; safe from any thread once built. Returns a pointer owned by the table,
 * valid until eng_policy_table_free; NULL only before a successful build. domain is
 * borrowed; NULL or "" gets the default. */
const struct eng_policy *eng_policy_lookup(const struct eng_policy_table *t, const char *domain);

/* Counts, for the start-up log: domain patterns added, and distinct TLS contexts
 * built (0 before build). */
size_t eng_policy_table_size(const struct eng_policy_table *t);
size_t eng_policy_table_contexts(const struct eng_policy_table *t);

/* Reads every context's trust store again (tls_ctx_reload_client: the default's and
 * each pinned CA file), for SIGHUP; deliveries go on meanwhile, each connection with
 * the store it started with. A context whose file no longer loads keeps its old store;
 * the first such failure is returned and named by eng_policy_table_error. Returns 0,
 * -EINVAL (not built), or a tls_ctx_reload_client code. Any thread (it does not change
 * the table, only the contexts' insides). */
int eng_policy_table_reload(struct eng_policy_table *t);

/* Frees the table and its contexts (connections made from them hold their own
 * references, see tls_ctx_free). NULL is a no-op. */
void eng_policy_table_free(struct eng_policy_table *t);

#endif /* FLOORMTA_ENGINE_POLICY_H */
