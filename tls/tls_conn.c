/*
 * tls/tls_conn.c — a TLS connection over memory buffers: creation, the ciphertext in
 * (feed) and out (drain), application data (read, write) and close_notify.
 *
 * The SSL reads from one memory BIO and writes to another; the engine moves bytes
 * between those and its socket. The handshake and its verdict live in tls_handshake.c.
 */
#include "tls/tls_int.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>

static const char *const conn_state_names[] = {
#define TLS_CONN_STATE_NAME(name, str) str,
    TLS_CONN_STATES(TLS_CONN_STATE_NAME)
#undef TLS_CONN_STATE_NAME
};

const char *tls_conn_state_name(enum tls_conn_state state)
{
    return (unsigned)state < sizeof(conn_state_names) / sizeof(conn_state_names[0])
                   ? conn_state_names[state]
                   : "unknown";
}

void tls_conn_set_state(struct tls_conn *conn, enum tls_conn_state state)
{
    /* tls/ has no logger of its own (it must not depend on the engine's); the engine
     * logs the verdict and the outcome it reads back. */
    conn->state = state;
}

/* Allocates the conn with its strings in the same block (one allocation) and wires
 * the SSL to two memory BIOs. */
static int conn_alloc(struct tls_ctx *ctx, const char *peer_name, const char *cache_key,
                      struct tls_conn **out)
{
    size_t peer_len = peer_name ? strlen(peer_name) + 1 : 0;
    size_t key_len = cache_key ? strlen(cache_key) + 1 : 0;
    struct tls_conn *conn = calloc(1, sizeof(*conn) + peer_len + key_len);
    if (conn == NULL)
        return -ENOMEM;
    char *strings = (char *)(conn + 1);
    if (peer_name) {
        memcpy(strings, peer_name, peer_len);
        conn->peer_name = strings;
    }
    if (cache_key) {
        memcpy(strings + peer_len, cache_key, key_len);
        conn->cache_key = strings + peer_len;
    }
    tls_verdict_clear(&conn->verdict);
    ERR_clear_error();
    pthread_mutex_lock(&ctx->mu); /* a reload may swap ctx->ssl meanwhile */
    conn->ssl = SSL_new(ctx->ssl);
    pthread_mutex_unlock(&ctx->mu);
    conn->rbio = BIO_new(BIO_s_mem());
    conn->wbio = BIO_new(BIO_s_mem());
    if (conn->ssl == NULL || conn->rbio == NULL || conn->wbio == NULL) {
        BIO_free(conn->rbio);
        BIO_free(conn->wbio);
        SSL_free(conn->ssl);
        free(conn);
        ERR_clear_error();
        return -ENOMEM;
    }
    /* An empty input buffer means "want read", not end of stream. */
    BIO_set_mem_eof_return(conn->rbio, -1);
    SSL_set_bio(conn->ssl, conn->rbio, conn->wbio);
    SSL_set_app_data(conn->ssl, conn);
    tls_ctx_ref(ctx);
    conn->ctx = ctx;
    tls_conn_set_state(conn, TLS_CONN_HANDSHAKE);
    *out = conn;
    return 0;
}

int tls_conn_new_client(struct tls_ctx *ctx, const char *peer_name, struct tls_cache *cache,
                        const char *cache_key, struct tls_conn **out)
{
    if (ctx == NULL || ctx->server || out == NULL || peer_name == NULL || *peer_name == '\0')
        return -EINVAL;
    if (cache_key == NULL)
        cache_key = peer_name;
    struct tls_conn *conn;
    int rc = conn_alloc(ctx, peer_name, cache ? cache_key : NULL, &conn);
    if (rc < 0)
        return rc;
    conn->client = true;
    conn->cache = cache;
    SSL_set_connect_state(conn->ssl);
    if (!SSL_set_tlsext_host_name(conn->ssl, conn->peer_name)) {
        tls_conn_free(conn);
        ERR_clear_error();
        return -EINVAL;
    }
    if (cache != NULL) {
        SSL_SESSION *session = tls_cache_take(cache, conn->cache_key);
        if (session != NULL) {
            /* The library ignores a session whose version the context cannot use. */
            SSL_set_session(conn->ssl, session);
            SSL_SESSION_free(session);
        }
    }
    *out = conn;
    return 0;
}

int tls_conn_new_server(struct tls_ctx *ctx, struct tls_conn **out)
{
    if (ctx == NULL || !ctx->server || out == NULL)
        return -EINVAL;
    struct tls_conn *conn;
    int rc = conn_alloc(ctx, NULL, NULL, &conn);
    if (rc < 0)
        return rc;
    SSL_set_accept_state(conn->ssl);
    *out = conn;
    return 0;
}

void tls_conn_free(struct tls_conn *conn)
{
    if (conn == NULL)
        return;
    SSL_free(conn->ssl); /* frees both BIOs */
    SSL_SESSION_free(conn->pending_session);
    tls_ctx_free(conn->ctx);
    free(conn);
}

int tls_conn_feed(struct tls_conn *conn, const void *data, size_t len)
{
    if (conn == NULL || (data == NULL && len > 0))
        return -EINVAL;
    if (len == 0)
        return 0;
    if (BIO_ctrl_pending(conn->rbio) + len > TLS_FEED_MAX)
        return -ENOBUFS;
    /* Keep the start of the server's first record: if the handshake fails on the
     * version, its ServerHello says which version the receiver chose. */
    if (conn->client && conn->hello_len < TLS_HELLO_PEEK) {
        size_t n = TLS_HELLO_PEEK - conn->hello_len;
        if (n > len)
            n = len;
        memcpy(conn->hello + conn->hello_len, data, n);
        conn->hello_len += n;
    }
    if (BIO_write(conn->rbio, data, (int)len) != (int)len) {
        ERR_clear_error();
        return -ENOMEM;
    }
    return 0;
}

size_t tls_conn_pending(const struct tls_conn *conn)
{
    return BIO_ctrl_pending(conn->wbio);
}

size_t tls_conn_drain(struct tls_conn *conn, void *buf, size_t cap)
{
    if (cap == 0 || BIO_ctrl_pending(conn->wbio) == 0)
        return 0;
    int n = BIO_read(conn->wbio, buf, cap > INT_MAX ? INT_MAX : (int)cap);
    return n > 0 ? (size_t)n : 0;
}

int tls_conn_read(struct tls_conn *conn, void *buf, size_t cap, size_t *n)
{
    if (conn == NULL || buf == NULL || n == NULL)
        return -EINVAL;
    *n = 0;
    switch (conn->state) {
    case TLS_CONN_ESTABLISHED: break;
    case TLS_CONN_CLOSED: return TLS_ERR_CLOSED;
    case TLS_CONN_BROKEN: return TLS_ERR_PROTOCOL;
    default: return TLS_ERR_STATE;
    }
    if (cap == 0)
        return 0;
    ERR_clear_error();
    int r = SSL_read(conn->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
    if (r > 0) {
        *n = (size_t)r;
        return 0;
    }
    int err = SSL_get_error(conn->ssl, r);
    ERR_clear_error();
    switch (err) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE: return 0;
    case SSL_ERROR_ZERO_RETURN: tls_conn_set_state(conn, TLS_CONN_CLOSED); return TLS_ERR_CLOSED;
    default: tls_conn_set_state(conn, TLS_CONN_BROKEN); return TLS_ERR_PROTOCOL;
    }
}

int tls_conn_write(struct tls_conn *conn, const void *data, size_t len)
{
    if (conn == NULL || (data == NULL && len > 0))
        return -EINVAL;
    if (conn->state == TLS_CONN_BROKEN)
        return TLS_ERR_PROTOCOL;
    if (conn->state != TLS_CONN_ESTABLISHED || conn->shutdown_sent)
        return TLS_ERR_STATE;
    const uint8_t *p = data;
    while (len > 0) {
        /* Memory BIOs never block, so SSL_write takes the whole chunk at once. */
        int chunk = len > INT_MAX ? INT_MAX : (int)len;
        ERR_clear_error();
        int r = SSL_write(conn->ssl, p, chunk);
        if (r <= 0) {
            int err = SSL_get_error(conn->ssl, r);
            ERR_clear_error();
            if (err == SSL_ERROR_SSL || err == SSL_ERROR_SYSCALL) {
                tls_conn_set_state(conn, TLS_CONN_BROKEN);
                return TLS_ERR_PROTOCOL;
            }
            return -ENOMEM;
        }
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

int tls_conn_shutdown(struct tls_conn *conn)
{
    if (conn == NULL)
        return -EINVAL;
    if (conn->state != TLS_CONN_ESTABLISHED && conn->state != TLS_CONN_CLOSED)
        return TLS_ERR_STATE;
    if (conn->shutdown_sent)
        return 0;
    ERR_clear_error();
    int r = SSL_shutdown(conn->ssl);
    ERR_clear_error();
    if (r < 0)
        return TLS_ERR_STATE;
    conn->shutdown_sent = true;
    return 0;
}

const struct tls_verdict *tls_conn_verdict(const struct tls_conn *conn)
{
    return &conn->verdict;
}

static bool handshake_done(const struct tls_conn *conn)
{
    return conn->state == TLS_CONN_ESTABLISHED || conn->state == TLS_CONN_CLOSED ||
           conn->state == TLS_CONN_BROKEN;
}

uint16_t tls_conn_version(const struct tls_conn *conn)
{
    return handshake_done(conn) ? (uint16_t)SSL_version(conn->ssl) : 0;
}

bool tls_conn_resumed(const struct tls_conn *conn)
{
    return handshake_done(conn) && SSL_session_reused(conn->ssl);
}

const char *tls_conn_cipher(const struct tls_conn *conn)
{
    const SSL_CIPHER *cipher = handshake_done(conn) ? SSL_get_current_cipher(conn->ssl) : NULL;
    return cipher ? SSL_CIPHER_get_name(cipher) : "";
}
