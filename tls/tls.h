/*
 * tls/tls.h — the TLS floor: BoringSSL contexts, connections over memory buffers,
 * verification verdicts and a client session cache.
 *
 * tls/ never touches a socket. The engine feeds it the ciphertext it received
 * (tls_conn_feed) and sends the ciphertext tls/ produced (tls_conn_drain); plaintext
 * goes through tls_conn_read / tls_conn_write. Nothing here blocks or knows about the
 * event loop, so any loop (or an in-memory test) can drive it.
 *
 * The floor is enforced by us, not left to the library's defaults: the client context
 * only negotiates TLS >= the configured minimum (1.2 or 1.3) with ECDHE + AEAD suites,
 * and every peer certificate is verified by tls/ itself and judged into a
 * `struct tls_verdict` (pass/refuse, a reason, and the evidence) before the handshake
 * is allowed to finish. A refused handshake never completes, so no byte of a message
 * can be sent over it.
 *
 * The one exception is a context built with tls_client_config.opportunistic, for the
 * domains an operator explicitly marked `opportunistic`: it negotiates whatever the
 * receiver supports (TLS 1.0 .. 1.3, CBC suites included) and lets every completed
 * handshake pass, but judges it exactly as the floor would and keeps all of it in the
 * verdict's evidence, so the log says what a floor would have refused (see struct
 * tls_verdict for the invariant).
 *
 * Threading: a tls_ctx may be shared by threads once built (read-only). A tls_conn and a
 * tls_cache belong to one thread (one per worker loop); they take no locks.
 */
#ifndef FLOORMTA_TLS_H
#define FLOORMTA_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors ------------------------------------------------------------------ */

/* Functions return 0 or a negative code: -errno as is, or one of these. */
#define TLS_ERRORS(X)                                                            \
    X(TLS_ERR_CONFIG, -12001, "invalid TLS configuration")                       \
    X(TLS_ERR_CA_LOAD, -12002, "cannot load the trust store")                    \
    X(TLS_ERR_CERT_LOAD, -12003, "cannot load the certificate or its key")       \
    X(TLS_ERR_HANDSHAKE, -12004, "TLS handshake did not pass (see the verdict)") \
    X(TLS_ERR_PROTOCOL, -12005, "TLS protocol error")                            \
    X(TLS_ERR_CLOSED, -12006, "peer closed the TLS session")                     \
    X(TLS_ERR_STATE, -12007, "operation not valid in the connection's state")    \
    X(TLS_ERR_LIBRARY, -12008, "TLS library failure")

enum tls_err {
#define TLS_ERR_ENUM(name, code, text) name = code,
    TLS_ERRORS(TLS_ERR_ENUM)
#undef TLS_ERR_ENUM
};

/* Returns a static string for any code a tls_ function returns (including -errno). */
const char *tls_strerror(int err);

/* ---- versions ----------------------------------------------------------------- */

/* Wire values, so a version read off the network needs no mapping. */
enum tls_version {
    TLS_VERSION_UNKNOWN = 0,
    TLS_VERSION_1_0 = 0x0301,
    TLS_VERSION_1_1 = 0x0302,
    TLS_VERSION_1_2 = 0x0303,
    TLS_VERSION_1_3 = 0x0304,
};

/* "TLSv1.2", ...; "unknown" for anything else. Static string. */
const char *tls_version_name(uint16_t version);

/* Parses "1.2", "1.3", "TLSv1.2", "tls1.3" (and 1.0 / 1.1, for test receivers).
 * Returns 0 and sets *out, or TLS_ERR_CONFIG. name is borrowed. */
int tls_version_parse(const char *name, uint16_t *out);

/* ---- verdicts -------------------------------------------------------------------- */

/* Why a connection was refused. Order matters: when a certificate has several
 * problems, the reason reported is the one listed first here (all of them are kept
 * in tls_evidence.problems). The X-macro keeps the names in step with the enum. */
#define TLS_REASONS(X)                                                                             \
    X(TLS_REASON_NONE, "none", "meets the floor")                                                  \
    X(TLS_REASON_NO_STARTTLS, "no_starttls", "receiver does not offer STARTTLS")                   \
    X(TLS_REASON_STARTTLS_REFUSED, "starttls_refused", "receiver refused STARTTLS")                \
    X(TLS_REASON_VERSION_BELOW_FLOOR, "version_below_floor",                                       \
      "receiver's TLS version is below the floor")                                                 \
    X(TLS_REASON_CIPHER_BELOW_FLOOR, "cipher_below_floor",                                         \
      "no cipher suite allowed by the floor is offered")                                           \
    X(TLS_REASON_HANDSHAKE_FAILED, "handshake_failed", "TLS handshake failed")                     \
    X(TLS_REASON_NO_CERTIFICATE, "no_certificate", "receiver sent no certificate")                 \
    X(TLS_REASON_CERT_SELF_SIGNED, "cert_self_signed", "certificate is self-signed")               \
    X(TLS_REASON_CERT_UNTRUSTED, "cert_untrusted", "certificate does not chain to a trusted root") \
    X(TLS_REASON_CERT_INVALID, "cert_invalid", "certificate chain is invalid")                     \
    X(TLS_REASON_CERT_EXPIRED, "cert_expired", "certificate has expired")                          \
    X(TLS_REASON_CERT_NOT_YET_VALID, "cert_not_yet_valid", "certificate is not valid yet")         \
    X(TLS_REASON_HOSTNAME_MISMATCH, "hostname_mismatch",                                           \
      "certificate does not match the MX host name")                                               \
    X(TLS_REASON_WEAK_KEY, "weak_key", "certificate key is too weak")                              \
    X(TLS_REASON_WEAK_SIGNATURE, "weak_signature",                                                 \
      "certificate chain uses a weak signature (SHA-1 or MD5)")

enum tls_reason {
#define TLS_REASON_ENUM(name, str, text) name,
    TLS_REASONS(TLS_REASON_ENUM)
#undef TLS_REASON_ENUM
            TLS_REASON__COUNT
};

/* "version_below_floor", ... (the stable name used in logs, JSON and metrics) and a
 * human sentence. Static strings; "unknown" for an out-of-range value. */
const char *tls_reason_name(enum tls_reason reason);
const char *tls_reason_text(enum tls_reason reason);

#define TLS_EVIDENCE_NAME_MAX 256 /* subject / issuer, RFC 2253 form, truncated */
#define TLS_EVIDENCE_SANS_MAX 512 /* comma-separated dNSNames, truncated */

/* What was seen on the wire and in the certificate: logged with every decision.
 * Strings are NUL-terminated and always valid (empty when unknown). */
struct tls_evidence {
    uint16_t version; /* negotiated version; when the receiver chose a version below
                       * the floor, the version it chose; 0 when never learnt */
    char cipher[64];  /* negotiated suite ("ECDHE-RSA-AES128-GCM-SHA256",
                       * "TLS_AES_128_GCM_SHA256"), "" if none */
    bool resumed;     /* the handshake resumed a cached session */
    bool has_cert;    /* the fields below describe the peer's leaf certificate */
    char subject[TLS_EVIDENCE_NAME_MAX];
    char issuer[TLS_EVIDENCE_NAME_MAX];
    char sans[TLS_EVIDENCE_SANS_MAX];
    int64_t not_before; /* unix seconds */
    int64_t not_after;  /* unix seconds */
    uint8_t sha256[32]; /* SHA-256 of the leaf certificate's DER */
    char key_type[8];   /* "RSA", "EC", "Ed25519", "" */
    int key_bits;
    int x509_error;    /* first X509_V_ERR_* of chain verification, 0 if none */
    uint32_t problems; /* bit (1u << reason) for every problem found */
    char detail[128];  /* library detail for handshake failures (alert, error), "" */
};

/* The invariant, by kind of context:
 *   floor context (the default): opportunistic = false, and pass iff reason == NONE.
 *   opportunistic context: opportunistic = true on every verdict it produces; pass =
 *     the handshake completed; reason = the first problem the floor (the context's
 *     min_version, the ECDHE+AEAD suites, the certificate checks) would have refused
 *     in TLS_REASONS order, NONE if there was none; ev.problems has all of them. A
 *     handshake that failed outright (or could not be judged) does not pass, with its
 *     reason as for a floor context.
 * So `pass && reason != TLS_REASON_NONE` happens only with opportunistic set: TLS that
 * is better than plaintext but below the floor. Code that needs the floor itself
 * (the capability cache, "delivered over TLS that met the floor") asks
 * tls_verdict_meets_floor(). The engine's SMTP client also writes an opportunistic
 * verdict for a plaintext session: pass, reason no_starttls, ev.version 0. */
struct tls_verdict {
    bool pass;
    bool opportunistic;     /* judged for an opportunistic context: see above */
    enum tls_reason reason; /* first problem found; TLS_REASON_NONE iff pass, unless
                             * opportunistic */
    struct tls_evidence ev;
};

/* Whether v describes TLS that met the floor: passed with no problem. */
static inline bool tls_verdict_meets_floor(const struct tls_verdict *v)
{
    return v->pass && v->reason == TLS_REASON_NONE;
}

/* Resets a verdict to "not decided": pass=false, opportunistic=false, reason NONE,
 * evidence empty. */
void tls_verdict_clear(struct tls_verdict *v);

/* Records a refusal decided outside tls/ (no_starttls, starttls_refused) into *v,
 * keeping any evidence already there and the opportunistic flag: pass = false. */
void tls_verdict_refuse(struct tls_verdict *v, enum tls_reason reason);

/* Formats the SHA-256 fingerprint as 64 lowercase hex digits into out (>= 65 bytes).
 * Returns out. */
char *tls_evidence_fingerprint(const struct tls_evidence *ev, char *out, size_t cap);

/* ---- contexts ---------------------------------------------------------------------- */

struct tls_ctx;

struct tls_client_config {
    uint16_t min_version; /* TLS_VERSION_1_2 (default when 0) or TLS_VERSION_1_3 */
    const char *ca_file;  /* PEM bundle of trusted roots; NULL = the system bundle
                           * (/etc/ssl/certs/ca-certificates.crt). Borrowed: read at
                           * tls_ctx_new_client and not kept. */
    int min_rsa_bits;     /* 0 = 2048 */
    int min_ec_bits;      /* 0 = 256 */
    bool opportunistic;   /* negotiate TLS 1.0 .. 1.3 with the library's whole suite
                           * list and never refuse a completed handshake; the fields
                           * above are then the floor the evidence is judged against,
                           * not enforced. Only for domains an operator marked so. */
};

/* Builds a client context enforcing the floor in cfg (or, with cfg->opportunistic,
 * judging against it without enforcing it). Returns 0 and *out (free with
 * tls_ctx_free), or TLS_ERR_CONFIG (bad version), TLS_ERR_CA_LOAD (unreadable or empty
 * trust store), -ENOMEM. cfg and its strings are borrowed. */
int tls_ctx_new_client(const struct tls_client_config *cfg, struct tls_ctx **out);

struct tls_server_config {
    const char *cert_file;   /* PEM: leaf first, then intermediates */
    const char *key_file;    /* PEM private key */
    uint16_t min_version;    /* 0 = TLS 1.2. Test receivers (bench/sink) may go down to 1.0
                              * to play receivers below the floor. */
    uint16_t max_version;    /* 0 = TLS 1.3 */
    const char *cipher_list; /* NULL = ECDHE+AEAD only when min_version >= 1.2, the
                              * library's full list otherwise */
};

/* Builds a server context. Returns 0 and *out (free with tls_ctx_free), or
 * TLS_ERR_CONFIG, TLS_ERR_CERT_LOAD, -ENOMEM. cfg and its strings are borrowed. */
int tls_ctx_new_server(const struct tls_server_config *cfg, struct tls_ctx **out);

/* Frees a context. Connections made from it hold their own reference, so it may be
 * freed while they live. NULL is a no-op. */
void tls_ctx_free(struct tls_ctx *ctx);

/* Reads a context's files again — the trust store of a client context, the certificate
 * and key of a server one — and puts the result in place, from any thread while other
 * threads make connections with it: connections made from then on use the new files,
 * open ones keep what they started with, and no verdict remembered under the old
 * trust store is reused. cfg is borrowed; it must keep a client context's floor and
 * mode (TLS_ERR_CONFIG otherwise). Returns 0, or what tls_ctx_new_client/server
 * return (the context is then unchanged). */
int tls_ctx_reload_client(struct tls_ctx *ctx, const struct tls_client_config *cfg);
int tls_ctx_reload_server(struct tls_ctx *ctx, const struct tls_server_config *cfg);

/* Judges a certificate chain against a client context's floor exactly as a handshake
 * would (trust store, dates, host name peer_name, key sizes, signature hashes), without
 * a handshake: for re-checking a cached chain, tests and benchmarks. For an
 * opportunistic context the verdict is opportunistic too (it passes, with the problems
 * as evidence). ders[i] / lens[i]
 * are the DER certificates, leaf first, n of them (n = 0 judges "no certificate"); all
 * borrowed. Fills *out (the cipher and version fields stay empty). Returns 0 whether
 * the chain passed or not (see out->pass), TLS_ERR_STATE for a server context,
 * -EINVAL, -ENOMEM. */
int tls_ctx_verify_chain(struct tls_ctx *client_ctx, const char *peer_name,
                         const uint8_t *const *ders, const size_t *lens, size_t n,
                         struct tls_verdict *out);

/* ---- client session cache ------------------------------------------------------- */

/* Remembers the last resumable session per destination key (an MX host name and port)
 * so that the next connection to it can resume (TLS 1.3 or TLS 1.2 tickets). Bounded:
 * least recently used entries are evicted. It also remembers passing verdicts of the
 * chains it has seen (per context, name and exact chain bytes, until the chain's
 * earliest notAfter or an hour), so that later connections skip chain verification.
 * Only sessions of handshakes that met the floor are stored: an opportunistic
 * handshake below it is never offered for resumption (whatever context asks next).
 * One per worker thread. */
struct tls_cache;

struct tls_cache_stats {
    uint64_t hits; /* lookups that offered a session */
    uint64_t misses;
    uint64_t stores;
    uint64_t evictions; /* dropped to stay within max_entries */
    uint64_t expired;   /* dropped because their lifetime ended */
    size_t entries;
    uint64_t verify_hits;   /* chains whose passing verdict came from memory */
    uint64_t verify_misses; /* chains verified in full */
};

/* Returns 0 and *out (free with tls_cache_free), or -EINVAL (max_entries 0), -ENOMEM. */
int tls_cache_new(size_t max_entries, struct tls_cache **out);
void tls_cache_free(struct tls_cache *cache);
void tls_cache_stats(const struct tls_cache *cache, struct tls_cache_stats *out);

/* ---- connections ------------------------------------------------------------------ */

struct tls_conn;

/* Starts a client connection to peer_name (used for SNI and as the name the certificate
 * must match). cache may be NULL; when given, a cached session for cache_key is offered
 * and new sessions are stored under it (cache_key NULL = peer_name). ctx, cache and
 * the strings are borrowed; the conn keeps its own reference to ctx and copies the
 * strings, but cache must outlive the conn. Returns 0 and *out (free with
 * tls_conn_free), or -EINVAL, -ENOMEM. */
int tls_conn_new_client(struct tls_ctx *ctx, const char *peer_name, struct tls_cache *cache,
                        const char *cache_key, struct tls_conn **out);

/* Starts a server connection. ctx is borrowed (the conn holds a reference). */
int tls_conn_new_server(struct tls_ctx *ctx, struct tls_conn **out);

void tls_conn_free(struct tls_conn *conn);

/* Gives tls/ ciphertext received from the peer. data is borrowed (copied).
 * Returns 0, or -ENOBUFS if more than 64 KiB is buffered unprocessed (the caller is
 * not processing: a bug or a hostile peer), -ENOMEM. */
int tls_conn_feed(struct tls_conn *conn, const void *data, size_t len);

/* Number of ciphertext bytes waiting to be sent to the peer. */
size_t tls_conn_pending(const struct tls_conn *conn);

/* Moves up to cap bytes of pending ciphertext into buf and returns how many. */
size_t tls_conn_drain(struct tls_conn *conn, void *buf, size_t cap);

/* Advances the handshake with what has been fed. Returns:
 *   0, *done = true:  handshake complete and the floor passed (client; with an
 *                     opportunistic context: the handshake completed, the verdict
 *                     says what the floor would have thought) or the handshake
 *                     completed (server);
 *   0, *done = false: needs more input (drain and send what is pending first);
 *   TLS_ERR_HANDSHAKE: the handshake failed or was refused; for a client,
 *                     tls_conn_verdict() says why. Drain: an alert may be pending.
 * Calling it again after it finished returns the same result. */
int tls_conn_handshake(struct tls_conn *conn, bool *done);

/* The client's verdict. Complete once tls_conn_handshake has finished (either way);
 * before that, pass is false and reason NONE. Borrowed: valid until tls_conn_free. */
const struct tls_verdict *tls_conn_verdict(const struct tls_conn *conn);

/* Reads decrypted application data into buf. Returns 0 with *n = bytes read (0 = needs
 * more input), TLS_ERR_CLOSED when the peer sent close_notify, TLS_ERR_PROTOCOL, or
 * TLS_ERR_STATE before the handshake finished. Also processes post-handshake messages
 * (TLS 1.3 session tickets, which then reach the cache). */
int tls_conn_read(struct tls_conn *conn, void *buf, size_t cap, size_t *n);

/* Encrypts len bytes of application data; the ciphertext becomes pending. data is
 * borrowed. Returns 0, TLS_ERR_STATE, TLS_ERR_PROTOCOL, -ENOMEM. */
int tls_conn_write(struct tls_conn *conn, const void *data, size_t len);

/* Queues a close_notify alert (pending ciphertext). Returns 0 or TLS_ERR_STATE. */
int tls_conn_shutdown(struct tls_conn *conn);

/* Server side: the version and cipher negotiated with the client, for logs and the
 * Received header. version 0 / "" before the handshake completes. cipher is a static
 * string. */
uint16_t tls_conn_version(const struct tls_conn *conn);
const char *tls_conn_cipher(const struct tls_conn *conn);

/* Either side: the completed handshake resumed a session (false before it completes). */
bool tls_conn_resumed(const struct tls_conn *conn);

#endif /* FLOORMTA_TLS_H */
