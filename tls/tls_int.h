/*
 * tls/tls_int.h — private to tls/: the bodies of the opaque structs and the calls the
 * files of tls/ make into each other. Nothing outside tls/ includes this.
 */
#ifndef FLOORMTA_TLS_INT_H
#define FLOORMTA_TLS_INT_H

#include "tls/tls.h"

#include <pthread.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

/* Unprocessed ciphertext a conn accepts before tls_conn_feed pushes back. */
#define TLS_FEED_MAX (64 * 1024)

/* Longest certificate chain we look at; longer ones are refused as invalid. */
#define TLS_CHAIN_MAX 16

/* Longest cache key (MX host name + ":port"); longer keys are simply not cached. */
#define TLS_CACHE_KEY_MAX 272

struct tls_ctx {
    /* ssl and store are replaced by a reload (tls_ctx_reload_*) while other threads
     * make connections: read them under mu (SSL_new and X509_STORE_up_ref take their
     * own references, so what a reader got stays valid after a swap). */
    pthread_mutex_t mu;
    SSL_CTX *ssl;
    X509_STORE *store; /* client only: the trust anchors; NULL for a server */
    uint64_t gen;      /* reloads so far (atomic): part of the verdict memo's key */
    bool server;
    bool opportunistic;   /* client: never refuse a completed handshake (tls.h) */
    uint16_t min_version; /* the floor (judged; enforced unless opportunistic) */
    int min_rsa_bits;
    int min_ec_bits;
    int refs; /* atomic: the owner plus one per live conn */
};

/* A conn's states. Only tls_conn_set_state (tls_conn.c) writes conn->state. */
#define TLS_CONN_STATES(X)                                                       \
    X(TLS_CONN_HANDSHAKE, "handshake")     /* handshake in progress */           \
    X(TLS_CONN_ESTABLISHED, "established") /* handshake done, floor passed */    \
    X(TLS_CONN_CLOSED, "closed")           /* peer sent close_notify */          \
    X(TLS_CONN_FAILED, "failed")           /* handshake failed or was refused */ \
    X(TLS_CONN_BROKEN, "broken")           /* protocol error after the handshake */

enum tls_conn_state {
#define TLS_CONN_STATE_ENUM(name, str) name,
    TLS_CONN_STATES(TLS_CONN_STATE_ENUM)
#undef TLS_CONN_STATE_ENUM
};

/* Bytes of the server's first record we keep: record header (5), handshake header (4)
 * and ServerHello.legacy_version (2), to name the version of a refused receiver. */
#define TLS_HELLO_PEEK 11

struct tls_conn {
    struct tls_ctx *ctx; /* one reference */
    SSL *ssl;
    BIO *rbio; /* owned by ssl: ciphertext from the peer */
    BIO *wbio; /* owned by ssl: ciphertext for the peer */
    enum tls_conn_state state;
    bool client;
    bool verify_ran;              /* our verify callback judged the peer's chain */
    bool shutdown_sent;           /* close_notify queued */
    struct tls_cache *cache;      /* borrowed, may be NULL */
    SSL_SESSION *pending_session; /* a new session seen before the verdict passed */
    const char *peer_name;        /* points into the conn's allocation */
    const char *cache_key;        /* same */
    size_t hello_len;
    uint8_t hello[TLS_HELLO_PEEK];
    struct tls_verdict verdict;
};

/* The trust store to verify with now, with a reference of the caller's (release with
 * X509_STORE_free), and the reload generation it belongs to; NULL for a server. */
X509_STORE *tls_ctx_store_get(struct tls_ctx *ctx, uint64_t *gen);

/* The one writer of conn->state. */
void tls_conn_set_state(struct tls_conn *conn, enum tls_conn_state state);

/* "handshake", "established", ...; static string. */
const char *tls_conn_state_name(enum tls_conn_state state);

/* Takes a reference for a conn; drop it with tls_ctx_free. */
void tls_ctx_ref(struct tls_ctx *ctx);

/* The floor's rule for a negotiated suite: an AEAD with ECDHE (TLS 1.2) or any TLS 1.3
 * suite (always AEAD, key exchange negotiated separately). */
bool tls_cipher_meets_floor(const SSL_CIPHER *cipher);

/* Sets v->reason from v->ev.problems (first in TLS_REASONS order) and v->pass. */
void tls_verdict_settle(struct tls_verdict *v);

/* For an opportunistic context: marks v opportunistic and lets it pass unless the
 * handshake itself failed or could not be judged (TLS_REASON_HANDSHAKE_FAILED among
 * the problems). Keeps the reason and problems. Call after tls_verdict_settle. */
void tls_verdict_waive(struct tls_verdict *v);

/* Whether a session of the handshake that produced v may be stored for resumption:
 * only one that met the floor. */
static inline bool tls_verdict_cacheable(const struct tls_verdict *v)
{
    return tls_verdict_meets_floor(v);
}

/* Marks one problem in the verdict's evidence (does not settle). */
static inline void tls_verdict_add(struct tls_verdict *v, enum tls_reason reason)
{
    v->ev.problems |= 1u << reason;
}

/* Copies src into dst (cap bytes, always NUL-terminated), truncating. */
void tls_strlcpy(char *dst, const char *src, size_t cap);

/* Session cache, used by tls_conn.c. */

/* Returns a session to offer for key (a new reference: the caller frees it with
 * SSL_SESSION_free after SSL_set_session), or NULL. Counts hits, misses and expired
 * entries; a single-use session (TLS 1.3 ticket) leaves the cache when taken. */
SSL_SESSION *tls_cache_take(struct tls_cache *cache, const char *key);

/* Stores session under key, replacing what was there and evicting the least recently
 * used entry when full. session is borrowed: the cache takes its own reference. The
 * caller must only store sessions of handshakes whose verdict passed. */
void tls_cache_put(struct tls_cache *cache, const char *key, SSL_SESSION *session);

/* The client context's callbacks, in tls_conn.c (they find the conn through the SSL's
 * app data). */
enum ssl_verify_result_t tls_conn_verify_cb(SSL *ssl, uint8_t *out_alert);
int tls_conn_new_session_cb(SSL *ssl, SSL_SESSION *session);

/* tls_ctx_verify_chain for a chain as the library holds it (leaf first, borrowed), as
 * the conn's callbacks see it. Fills *out completely (settled). cache may be NULL;
 * when given, a passing verdict remembered for this exact chain, name and context is
 * reused (counted in verify_hits), and a new passing one is remembered. */
int tls_verify_certs(struct tls_ctx *ctx, struct tls_cache *cache, const char *peer_name,
                     const STACK_OF(CRYPTO_BUFFER) * certs, struct tls_verdict *out);

/* tls_ctx_verify_chain, also returning the earliest notAfter of the chain it built
 * (unix seconds; 0 when no chain was built). */
int tls_verify_chain_int(struct tls_ctx *ctx, const char *peer_name, const uint8_t *const *ders,
                         const size_t *lens, size_t n, struct tls_verdict *out,
                         int64_t *chain_not_after);

/* Verified-chain memo (tls_memo.c), owned by a tls_cache. */

#define TLS_MEMO_DIGEST_LEN 32
#define TLS_MEMO_TTL        3600 /* seconds a verdict is trusted from memory at most */

struct tls_memo;

/* Returns 0 and *out (free with tls_memo_free), or -ENOMEM. nslots is rounded up to a
 * power of two. */
int tls_memo_new(size_t nslots, struct tls_memo **out);
void tls_memo_free(struct tls_memo *m);

/* The digest a verdict is remembered under: ctx, peer_name and the chain's bytes. */
void tls_memo_digest(const struct tls_ctx *ctx, const char *peer_name,
                     const STACK_OF(CRYPTO_BUFFER) * certs, uint8_t out[TLS_MEMO_DIGEST_LEN]);

/* Copies the remembered verdict into *out and returns true if one is there and still
 * valid at now (unix seconds). */
bool tls_memo_get(struct tls_memo *m, const uint8_t digest[TLS_MEMO_DIGEST_LEN], int64_t now,
                  struct tls_verdict *out);

/* Remembers a passing verdict (others are ignored) until min(chain_not_after,
 * now + TLS_MEMO_TTL). v is copied. */
void tls_memo_put(struct tls_memo *m, const uint8_t digest[TLS_MEMO_DIGEST_LEN], int64_t now,
                  int64_t chain_not_after, const struct tls_verdict *v);

/* The memo of a cache (never NULL for a cache made by tls_cache_new); counters. */
struct tls_memo *tls_cache_memo(struct tls_cache *cache);
void tls_cache_count_verify(struct tls_cache *cache, bool hit);

#endif /* FLOORMTA_TLS_INT_H */
