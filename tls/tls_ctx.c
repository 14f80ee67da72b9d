/*
 * tls/tls_ctx.c — building client and server contexts: the floor's protocol versions
 * and cipher suites, the trust store, certificate loading, and the context's reference
 * count (connections keep their context alive).
 */
#include "tls/tls_int.h"

#include <errno.h>
#include <stdlib.h>

#include <openssl/err.h>

#define TLS_SYSTEM_CA_FILE "/etc/ssl/certs/ca-certificates.crt"

/* What the floor accepts for TLS 1.2: ECDHE key exchange with an AEAD. TLS 1.3 suites
 * are not configured by cipher lists; all of them are AEADs. */
#define TLS_FLOOR_SUITES                                         \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* An opportunistic context offers the library's whole list instead: CBC suites are
 * the only ones a TLS 1.0/1.1 receiver has, and for such a domain any TLS beats
 * plaintext. */
#define TLS_OPPORTUNISTIC_SUITES "ALL"

/* The client offers exactly these: nothing weaker is ever on the table. A receiver
 * stuck at TLS 1.0/1.1 or with only CBC suites can then only abort; the verdict names
 * what it sent (a protocol_version or handshake_failure alert before any ServerHello).
 * Offering CBC "to learn more" would refuse legitimate TLS 1.2 receivers that rank CBC
 * above AEAD in their own order, so the floor keeps the offer strict. */

void tls_ctx_ref(struct tls_ctx *ctx)
{
    __atomic_add_fetch(&ctx->refs, 1, __ATOMIC_RELAXED);
}

void tls_ctx_free(struct tls_ctx *ctx)
{
    if (ctx == NULL)
        return;
    if (__atomic_sub_fetch(&ctx->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    SSL_CTX_free(ctx->ssl);
    X509_STORE_free(ctx->store);
    pthread_mutex_destroy(&ctx->mu);
    free(ctx);
}

bool tls_cipher_meets_floor(const SSL_CIPHER *cipher)
{
    if (cipher == NULL || !SSL_CIPHER_is_aead(cipher))
        return false;
    int kx = SSL_CIPHER_get_kx_nid(cipher);
    return kx == NID_kx_ecdhe || kx == NID_kx_any;
}

static bool version_valid(uint16_t v)
{
    return v >= TLS_VERSION_1_0 && v <= TLS_VERSION_1_3;
}

/* Loads the trust anchors. Returns 0 or TLS_ERR_CA_LOAD (unreadable, or no certificate
 * at all: an empty store would refuse every receiver, which is a configuration error
 * better reported at start than as thousands of cert_untrusted verdicts). */
static int load_store(const char *ca_file, X509_STORE **out)
{
    X509_STORE *store = X509_STORE_new();
    if (store == NULL)
        return -ENOMEM;
    if (X509_STORE_load_locations(store, ca_file ? ca_file : TLS_SYSTEM_CA_FILE, NULL) != 1 ||
        sk_X509_OBJECT_num(X509_STORE_get0_objects(store)) == 0) {
        X509_STORE_free(store);
        ERR_clear_error();
        return TLS_ERR_CA_LOAD;
    }
    *out = store;
    return 0;
}

static struct tls_ctx *ctx_alloc(bool server)
{
    struct tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        return NULL;
    ctx->ssl = SSL_CTX_new(TLS_method());
    if (ctx->ssl == NULL) {
        free(ctx);
        return NULL;
    }
    ctx->server = server;
    ctx->refs = 1;
    pthread_mutex_init(&ctx->mu, NULL);
    return ctx;
}

int tls_ctx_new_client(const struct tls_client_config *cfg, struct tls_ctx **out)
{
    if (cfg == NULL || out == NULL)
        return TLS_ERR_CONFIG;
    uint16_t floor = cfg->min_version ? cfg->min_version : TLS_VERSION_1_2;
    if (floor != TLS_VERSION_1_2 && floor != TLS_VERSION_1_3)
        return TLS_ERR_CONFIG;
    if (cfg->min_rsa_bits < 0 || cfg->min_ec_bits < 0)
        return TLS_ERR_CONFIG;

    ERR_clear_error();
    struct tls_ctx *ctx = ctx_alloc(false);
    if (ctx == NULL)
        return -ENOMEM;
    ctx->min_version = floor;
    ctx->opportunistic = cfg->opportunistic;
    ctx->min_rsa_bits = cfg->min_rsa_bits ? cfg->min_rsa_bits : 2048;
    ctx->min_ec_bits = cfg->min_ec_bits ? cfg->min_ec_bits : 256;

    int rc = load_store(cfg->ca_file, &ctx->store);
    if (rc < 0)
        goto fail;
    rc = TLS_ERR_LIBRARY;
    /* The opportunistic minimum is set explicitly: with 0 the library picks its own
     * default minimum, which is not TLS 1.0 in every BoringSSL release. */
    if (!SSL_CTX_set_min_proto_version(ctx->ssl, cfg->opportunistic ? TLS1_VERSION : floor) ||
        !SSL_CTX_set_max_proto_version(ctx->ssl, TLS1_3_VERSION) ||
        !SSL_CTX_set_strict_cipher_list(ctx->ssl, cfg->opportunistic ? TLS_OPPORTUNISTIC_SUITES
                                                                     : TLS_FLOOR_SUITES))
        goto fail;
    /* Our callback judges every certificate; the library's own verifier never runs.
     * (An opportunistic context's callback judges too, and then lets it pass.) */
    SSL_CTX_set_custom_verify(ctx->ssl, SSL_VERIFY_PEER, tls_conn_verify_cb);
    SSL_CTX_set_session_cache_mode(ctx->ssl, SSL_SESS_CACHE_CLIENT);
    SSL_CTX_sess_set_new_cb(ctx->ssl, tls_conn_new_session_cb);
    *out = ctx;
    return 0;
fail:
    ERR_clear_error();
    tls_ctx_free(ctx);
    return rc;
}

int tls_ctx_new_server(const struct tls_server_config *cfg, struct tls_ctx **out)
{
    if (cfg == NULL || out == NULL || cfg->cert_file == NULL || cfg->key_file == NULL)
        return TLS_ERR_CONFIG;
    uint16_t min = cfg->min_version ? cfg->min_version : TLS_VERSION_1_2;
    uint16_t max = cfg->max_version ? cfg->max_version : TLS_VERSION_1_3;
    if (!version_valid(min) || !version_valid(max) || min > max)
        return TLS_ERR_CONFIG;

    ERR_clear_error();
    struct tls_ctx *ctx = ctx_alloc(true);
    if (ctx == NULL)
        return -ENOMEM;
    ctx->min_version = min;

    int rc = TLS_ERR_CONFIG;
    /* Below TLS 1.2 there is no AEAD suite, so a test receiver playing an old server
     * needs the library's whole list (CBC suites). */
    const char *suites = cfg->cipher_list;
    if (suites == NULL)
        suites = min >= TLS_VERSION_1_2 ? TLS_FLOOR_SUITES : "ALL";
    if (!SSL_CTX_set_min_proto_version(ctx->ssl, min) ||
        !SSL_CTX_set_max_proto_version(ctx->ssl, max) ||
        !SSL_CTX_set_strict_cipher_list(ctx->ssl, suites))
        goto fail;
    rc = TLS_ERR_CERT_LOAD;
    if (SSL_CTX_use_certificate_chain_file(ctx->ssl, cfg->cert_file) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx->ssl, cfg->key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx->ssl) != 1)
        goto fail;
    /* Session tickets stay on (the library default) so that clients can resume. */
    *out = ctx;
    return 0;
fail:
    ERR_clear_error();
    tls_ctx_free(ctx);
    return rc;
}

X509_STORE *tls_ctx_store_get(struct tls_ctx *ctx, uint64_t *gen)
{
    pthread_mutex_lock(&ctx->mu);
    X509_STORE *store = ctx->store;
    if (store)
        X509_STORE_up_ref(store);
    *gen = ctx->gen;
    pthread_mutex_unlock(&ctx->mu);
    return store;
}

/* Moves fresh's library objects into ctx and ctx's old ones into fresh, which is then
 * freed: the old SSL_CTX and store live on in the connections that hold them. */
static void ctx_swap(struct tls_ctx *ctx, struct tls_ctx *fresh)
{
    pthread_mutex_lock(&ctx->mu);
    SSL_CTX *ssl = ctx->ssl;
    X509_STORE *store = ctx->store;
    ctx->ssl = fresh->ssl;
    ctx->store = fresh->store;
    __atomic_add_fetch(&ctx->gen, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&ctx->mu);
    fresh->ssl = ssl;
    fresh->store = store;
    tls_ctx_free(fresh);
}

int tls_ctx_reload_client(struct tls_ctx *ctx, const struct tls_client_config *cfg)
{
    if (ctx == NULL || cfg == NULL || ctx->server)
        return TLS_ERR_CONFIG;
    uint16_t floor = cfg->min_version ? cfg->min_version : TLS_VERSION_1_2;
    /* What the context's users rely on stays: its floor and its mode. */
    if (floor != ctx->min_version || cfg->opportunistic != ctx->opportunistic)
        return TLS_ERR_CONFIG;
    struct tls_ctx *fresh = NULL;
    int rc = tls_ctx_new_client(cfg, &fresh);
    if (rc != 0)
        return rc;
    ctx_swap(ctx, fresh);
    return 0;
}

int tls_ctx_reload_server(struct tls_ctx *ctx, const struct tls_server_config *cfg)
{
    if (ctx == NULL || cfg == NULL || !ctx->server)
        return TLS_ERR_CONFIG;
    struct tls_ctx *fresh = NULL;
    int rc = tls_ctx_new_server(cfg, &fresh);
    if (rc != 0)
        return rc;
    ctx->min_version = fresh->min_version;
    ctx_swap(ctx, fresh);
    return 0;
}
