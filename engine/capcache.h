/*
 * engine/capcache.h — the per-destination TLS capability cache: what each MX host
 * (name and port) showed the last time this worker connected to it — STARTTLS offered
 * or not, the highest TLS version seen, the last verdict with its reason and a summary
 * of the evidence, and when.
 *
 * Why: a host known to be below the floor would be refused again. While its refusal
 * entry lives, messages for it are deferred at once with the cached reason, without a
 * connection or a handshake. A passing entry never blocks; it is kept for "highest
 * version seen" and for the metrics and the admin API.
 *
 * Only verdicts are recorded (the API takes a struct tls_verdict): a connection that
 * was refused, timed out or reset before any verdict says nothing about the host's
 * TLS, and is never a reason to skip it.
 *
 * How long a refusal blocks (decided per reason, see eng_capcache_ttl_for):
 *   - the receiver's configuration (no_starttls, version_below_floor,
 *     cipher_below_floor, no_certificate, cert_*, hostname_mismatch, weak_key,
 *     weak_signature): the full ttl (default 1 hour). Only its operator can change
 *     these; reconnecting sooner would only repeat the refusal.
 *   - handshake_failed and starttls_refused: transient_ttl (default ttl / 4). A
 *     handshake can fail on a reset or an alert from an overloaded host or a middlebox,
 *     and RFC 3207 makes 454 "TLS not available due to temporary reason"; the verdict
 *     does not carry the reply code, so every starttls_refused is treated as possibly
 *     temporary. They still block (a host that just refused is not hammered), but a
 *     wrong guess costs at most transient_ttl.
 *
 * Bounded: at most max_entries entries, all allocated by eng_capcache_new; recording
 * and checking never allocate. When full, the least recently used entry (recorded or
 * checked) makes room. Expired entries are dropped lazily: on check, record, foreach,
 * save and eng_capcache_expire.
 *
 * Time is always passed in (unix seconds), so the caller decides the clock and tests
 * control it.
 *
 * Threading: one cache per worker thread (destinations are sharded to workers), no
 * locks; every function must be called from the owner thread.
 *
 * Persistence: eng_capcache_save / eng_capcache_load (engine/capcache_file.c) write and
 * read one small text file per shard; the caller names it (in the spool directory).
 */
#ifndef FLOORMTA_ENGINE_CAPCACHE_H
#define FLOORMTA_ENGINE_CAPCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tls/tls.h"

#define ENG_CAPCACHE_HOST_MAX     256 /* 255 characters + NUL */
#define ENG_CAPCACHE_DEFAULT_MAX  16384
#define ENG_CAPCACHE_DEFAULT_TTL  3600
#define ENG_CAPCACHE_DESCRIBE_MAX 256 /* eng_capcache_describe never needs more */

struct eng_capcache;

struct eng_capcache_config {
    size_t max_entries;     /* 0 = ENG_CAPCACHE_DEFAULT_MAX */
    uint32_t ttl;           /* seconds an entry lives; 0 = ENG_CAPCACHE_DEFAULT_TTL */
    uint32_t transient_ttl; /* seconds for handshake_failed / starttls_refused refusals;
                             * 0 = ttl / 4; never more than ttl */
};

/* What the cache knows about one MX host: a value, copied out to the caller. */
struct eng_capcache_entry {
    int64_t checked_at; /* unix seconds of the last recorded verdict */
    int64_t expires_at; /* the entry (and its block, for a refusal) ends at this second */
    int64_t not_after;  /* the leaf certificate's notAfter, when has_cert */
    char host[ENG_CAPCACHE_HOST_MAX]; /* lowercase, no trailing dot */
    uint16_t port;
    bool pass;                /* the last verdict passed */
    bool starttls_offered;    /* false only after a no_starttls refusal */
    bool has_cert;            /* sha256 and not_after describe the leaf certificate */
    enum tls_reason reason;   /* TLS_REASON_NONE iff pass */
    uint16_t version;         /* the last verdict's TLS version (0: none negotiated) */
    uint16_t highest_version; /* highest version seen while the entry lived */
    uint32_t refusals;        /* consecutive refusals; 0 after a pass */
    uint32_t problems;        /* tls_evidence.problems of the last verdict */
    char cipher[64];          /* the last verdict's cipher suite, "" if none */
    uint8_t sha256[32];       /* leaf certificate fingerprint, when has_cert */
};

/* The answer of eng_capcache_check, with the names used in logs and metrics. */
#define ENG_CAPCACHE_STATES(X)                                                        \
    X(ENG_CAPCACHE_UNKNOWN, "unknown") /* no live entry: connect */                   \
    X(ENG_CAPCACHE_PASSED, "passed")   /* live entry, last verdict passed: connect */ \
    X(ENG_CAPCACHE_BLOCKED, "blocked") /* live refusal: defer without connecting */

enum eng_capcache_state {
#define ENG_CAPCACHE_STATE_ENUM(name, str) name,
    ENG_CAPCACHE_STATES(ENG_CAPCACHE_STATE_ENUM)
#undef ENG_CAPCACHE_STATE_ENUM
};

/* Static string; "invalid" for an out-of-range value. */
const char *eng_capcache_state_name(enum eng_capcache_state state);

struct eng_capcache_stats {
    size_t capacity;       /* max_entries */
    size_t entries;        /* entries held (expired ones count until dropped) */
    size_t pass_entries;   /* ... whose last verdict passed */
    size_t refuse_entries; /* ... whose last verdict refused */
    uint64_t records;      /* verdicts recorded */
    uint64_t checks;       /* eng_capcache_check calls */
    uint64_t hits;         /* checks that found a live entry (passed or blocked) */
    uint64_t blocks;       /* checks that answered BLOCKED */
    uint64_t expirations;  /* entries dropped because they expired */
    uint64_t evictions;    /* live entries dropped to make room */
    uint64_t forgets;      /* entries dropped by eng_capcache_forget */
};

/* Makes a cache; cfg may be NULL for the defaults. Returns 0 and *out (free with
 * eng_capcache_free), or -EINVAL (absurd max_entries), -ENOMEM. Start-up only: this
 * is the one allocation, about 450 bytes per entry (the default 16,384: 7.3 MB). */
int eng_capcache_new(const struct eng_capcache_config *cfg, struct eng_capcache **out);

/* Frees the cache. NULL is a no-op. */
void eng_capcache_free(struct eng_capcache *c);

/* Records the verdict of a connection to host:port at now. The host name is
 * normalised (lowercase, one trailing dot dropped). A passing verdict replaces the
 * entry and never blocks; a refusal blocks until now + eng_capcache_ttl_for(reason).
 * highest_version and refusals carry over from a live entry, not from an expired one.
 * host and v are borrowed. Returns 0, or -EINVAL (NULL, port 0, an undecided verdict
 * — pass false with reason NONE, as after a network error — or pass with a reason),
 * -ENAMETOOLONG (host longer than 255), -EILSEQ (empty host, or a byte outside
 * printable ASCII or a space, which no MX name has). */
int eng_capcache_record(struct eng_capcache *c, const char *host, uint16_t port,
                        const struct tls_verdict *v, int64_t now);

/* Looks host:port up at now and marks it recently used. Returns BLOCKED for a live
 * refusal (defer the message; eng_capcache_describe gives the reason text), PASSED
 * for a live pass, UNKNOWN otherwise (no entry, an expired one — dropped now — or a
 * name that cannot be cached). *out (may be NULL) receives a copy of the entry unless
 * UNKNOWN. host is borrowed. Never allocates. */
enum eng_capcache_state eng_capcache_check(struct eng_capcache *c, const char *host, uint16_t port,
                                           int64_t now, struct eng_capcache_entry *out);

/* Drops the entry for host:port, or for every port of host when port is 0 (an
 * operator's flush). Returns how many entries were dropped (0 if none), or -EINVAL /
 * -ENAMETOOLONG / -EILSEQ for an impossible name. host is borrowed. */
int eng_capcache_forget(struct eng_capcache *c, const char *host, uint16_t port);

/* Drops every entry expired at now. Returns how many. O(entries): for a periodic
 * sweep before reading the stats, not for the hot path. */
size_t eng_capcache_expire(struct eng_capcache *c, int64_t now);

/* Calls fn for every live entry at now, most recently used first, dropping expired
 * ones on the way; stops early when fn returns false. e is borrowed for the call; fn
 * must not call other eng_capcache_ functions on c. */
typedef bool (*eng_capcache_fn)(void *arg, const struct eng_capcache_entry *e);
void eng_capcache_foreach(struct eng_capcache *c, int64_t now, eng_capcache_fn fn, void *arg);

void eng_capcache_stats(const struct eng_capcache *c, struct eng_capcache_stats *out);

/* Seconds a verdict with this reason keeps its entry (and, for a refusal, blocks):
 * transient_ttl for handshake_failed and starttls_refused, ttl otherwise. */
uint32_t eng_capcache_ttl_for(const struct eng_capcache *c, enum tls_reason reason);

/* Formats the entry for a deferral, a log line or the admin API into buf (cap bytes,
 * ENG_CAPCACHE_DESCRIBE_MAX is always enough), e.g.
 *   cached refusal: version_below_floor (TLSv1, ECDHE-RSA-AES128-SHA)
 *   checked 2026-11-23T00:00:00Z, retry after 2026-11-23T01:00:00Z
 * (one line), with the certificate's fingerprint prefix and notAfter for certificate
 * reasons. Returns the length snprintf would have written. e and buf are borrowed. */
int eng_capcache_describe(const struct eng_capcache_entry *e, char *buf, size_t cap);

/* ---- persistence (engine/capcache_file.c) ------------------------------------------ */

/* Writes every entry live at now to path, atomically: a temporary file path.tmp is
 * written, fsynced and renamed over path, then the directory is fsynced, so a crash
 * leaves either the old file or the new one. Least recently used first, so that a
 * load restores the use order. Blocking I/O: call at shutdown and from a periodic
 * timer, not per message. One file per shard: two caches must not share a path.
 * path is borrowed. Returns the number of entries written, or -errno (the old file is
 * then left as it was). */
int eng_capcache_save(struct eng_capcache *c, const char *path, int64_t now);

/* Decides whether a host read from a file belongs to this shard (true = load it). */
typedef bool (*eng_capcache_filter_fn)(void *arg, const char *host, uint16_t port);

struct eng_capcache_load_result {
    size_t loaded;     /* entries now in the cache */
    size_t expired;    /* lines whose entry had expired at now */
    size_t malformed;  /* lines that failed validation (checksum, fields, truncation) */
    size_t foreign;    /* lines the filter turned down */
    size_t superseded; /* lines older than an entry the cache already held */
    bool bad_header;   /* not a capability cache file (of this format version) */
};

/* Reads a file written by eng_capcache_save into the cache at now. A file that does
 * not exist is an empty cache. Damage never stops start-up: each line carries its own
 * checksum, so a bad line (garbage, a truncated last line) is skipped and counted and
 * the rest is loaded; a file without the header is ignored as a whole (bad_header).
 * Either case logs one warning; the file is left in place (the next save replaces
 * it). Expiry times are capped at now + eng_capcache_ttl_for(reason), so a file
 * written under a wrong clock cannot block a host for longer than a fresh refusal.
 * mine (may be NULL: load everything) is called with arg for each valid entry, so a
 * worker can load only the hosts it owns from another shard's file. path is
 * borrowed; *res (may be NULL) receives the counts. Returns 0 (also for a missing or
 * damaged file), or -errno when the file cannot be opened or read. */
int eng_capcache_load(struct eng_capcache *c, const char *path, int64_t now,
                      eng_capcache_filter_fn mine, void *arg, struct eng_capcache_load_result *res);

#endif /* FLOORMTA_ENGINE_CAPCACHE_H */
