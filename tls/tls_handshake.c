/*
 * tls/tls_handshake.c — driving the handshake and deciding its verdict.
 *
 * The floor is judged in three places, all feeding the same struct tls_verdict:
 *  - the custom verify callback, which runs when the server's certificate arrives and
 *    refuses (ssl_verify_invalid) before the handshake can finish;
 *  - the end of a resumed handshake, where no certificate is sent: the chain stored in
 *    the session is judged again (it may have expired since);
 *  - a failed handshake, whose library error is mapped to a reason (version or cipher
 *    below the floor, or a plain handshake failure with the library's words).
 * New sessions reach the cache only from handshakes that met the floor.
 *
 * An opportunistic context goes through the same judgement; tls_verdict_waive() then
 * lets a completed handshake pass with its problems kept (tls.h), right where the
 * floor would refuse, so the two modes can never judge differently.
 */
#include "tls/tls_int.h"

#include <stdio.h>

#include <openssl/err.h>

/* The alert that tells the receiver's operator what we did not like. */
static uint8_t alert_for(enum tls_reason reason)
{
    switch (reason) {
    case TLS_REASON_CIPHER_BELOW_FLOOR: return SSL_AD_INSUFFICIENT_SECURITY;
    case TLS_REASON_CERT_SELF_SIGNED:
    case TLS_REASON_CERT_UNTRUSTED: return SSL_AD_UNKNOWN_CA;
    case TLS_REASON_CERT_EXPIRED:
    case TLS_REASON_CERT_NOT_YET_VALID: return SSL_AD_CERTIFICATE_EXPIRED;
    case TLS_REASON_NO_CERTIFICATE:
    case TLS_REASON_HANDSHAKE_FAILED: return SSL_AD_HANDSHAKE_FAILURE;
    default: return SSL_AD_BAD_CERTIFICATE;
    }
}

/* Adds what was negotiated (version, suite) to the verdict and checks both against the
 * floor again: the library was configured not to allow anything else, and this check
 * keeps a configuration mistake from ever becoming a delivery. */
static void judge_negotiated(struct tls_conn *conn, const SSL_CIPHER *cipher)
{
    struct tls_verdict *v = &conn->verdict;
    v->ev.version = (uint16_t)SSL_version(conn->ssl);
    tls_strlcpy(v->ev.cipher, cipher ? SSL_CIPHER_get_name(cipher) : "", sizeof(v->ev.cipher));
    if (!tls_cipher_meets_floor(cipher))
        tls_verdict_add(v, TLS_REASON_CIPHER_BELOW_FLOOR);
    if (v->ev.version < conn->ctx->min_version)
        tls_verdict_add(v, TLS_REASON_VERSION_BELOW_FLOOR);
    tls_verdict_settle(v);
    if (conn->ctx->opportunistic)
        tls_verdict_waive(v);
}

static void refuse_internal(struct tls_conn *conn, const char *detail)
{
    struct tls_verdict *v = &conn->verdict;
    tls_verdict_clear(v);
    tls_verdict_add(v, TLS_REASON_HANDSHAKE_FAILED);
    tls_strlcpy(v->ev.detail, detail, sizeof(v->ev.detail));
    tls_verdict_settle(v);
    v->opportunistic = conn->ctx->opportunistic;
}

enum ssl_verify_result_t tls_conn_verify_cb(SSL *ssl, uint8_t *out_alert)
{
    struct tls_conn *conn = SSL_get_app_data(ssl);
    struct tls_verdict *v = &conn->verdict;

    conn->verify_ran = true;
    if (tls_verify_certs(conn->ctx, conn->cache, conn->peer_name, SSL_get0_peer_certificates(ssl),
                         v) < 0)
        refuse_internal(conn, "out of memory while verifying the certificate");
    judge_negotiated(conn, SSL_get_pending_cipher(ssl));
    if (v->pass)
        return ssl_verify_ok;
    *out_alert = alert_for(v->reason);
    return ssl_verify_invalid;
}

int tls_conn_new_session_cb(SSL *ssl, SSL_SESSION *session)
{
    struct tls_conn *conn = SSL_get_app_data(ssl);
    if (conn == NULL || conn->cache == NULL)
        return 0;
    if (conn->state == TLS_CONN_ESTABLISHED && tls_verdict_cacheable(&conn->verdict)) {
        tls_cache_put(conn->cache, conn->cache_key, session);
        return 0;
    }
    if (conn->state == TLS_CONN_HANDSHAKE) {
        /* TLS 1.2 delivers the session before SSL_do_handshake returns, i.e. before
         * the final verdict (a resumed chain is judged after): keep it until then. */
        SSL_SESSION_up_ref(session);
        SSL_SESSION_free(conn->pending_session);
        conn->pending_session = session;
    }
    return 0;
}

/* The version the receiver put in its ServerHello, from the first bytes it sent:
 * record type 22 (handshake), handshake type 2 (ServerHello), then legacy_version.
 * 0 if its first record was something else (e.g. an alert) or too short. */
static uint16_t server_hello_version(const struct tls_conn *conn)
{
    const uint8_t *h = conn->hello;
    if (conn->hello_len < TLS_HELLO_PEEK || h[0] != 22 || h[5] != 2)
        return 0;
    return (uint16_t)(h[9] << 8 | h[10]);
}

/* Maps a failed handshake's library error to a verdict when our callback did not
 * refuse already. */
static void judge_failure(struct tls_conn *conn, int ssl_err)
{
    struct tls_verdict *v = &conn->verdict;
    if (conn->verify_ran && !v->pass && v->reason != TLS_REASON_NONE)
        return; /* refused by the verify callback: that verdict stands */

    uint32_t e = ERR_peek_error();
    const char *what = e ? ERR_reason_error_string(e) : NULL;
    uint16_t hello = server_hello_version(conn);
    enum tls_reason reason = TLS_REASON_HANDSHAKE_FAILED;

    if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL) {
        switch (ERR_GET_REASON(e)) {
        case SSL_R_UNSUPPORTED_PROTOCOL:
        case SSL_R_UNSUPPORTED_PROTOCOL_FOR_CUSTOM_KEY:
        case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION: reason = TLS_REASON_VERSION_BELOW_FLOOR; break;
        case SSL_R_NO_SHARED_CIPHER:
        case SSL_R_NO_CIPHERS_AVAILABLE:
        case SSL_R_WRONG_CIPHER_RETURNED:
        case SSL_R_TLSV1_ALERT_INSUFFICIENT_SECURITY: reason = TLS_REASON_CIPHER_BELOW_FLOOR; break;
        default: break;
        }
    }
    tls_verdict_clear(v);
    v->opportunistic = conn->ctx->opportunistic;
    v->ev.version = hello;
    if (what == NULL)
        what = ssl_err == SSL_ERROR_SYSCALL ? "connection failed" : "unknown error";
    if (reason == TLS_REASON_HANDSHAKE_FAILED && hello == 0)
        /* An abort before any ServerHello: the receiver found nothing it accepts in
         * our offer (version or suite), or did not like the offer at all. The
         * library cannot tell which, so say what happened and where. */
        snprintf(v->ev.detail, sizeof(v->ev.detail), "%s (before ServerHello)", what);
    else
        tls_strlcpy(v->ev.detail, what, sizeof(v->ev.detail));
    tls_verdict_add(v, reason);
    tls_verdict_settle(v);
}

/* A completed client handshake: judge a resumed one, then decide. */
static int client_finished(struct tls_conn *conn)
{
    struct tls_verdict *v = &conn->verdict;
    if (SSL_session_reused(conn->ssl)) {
        if (tls_verify_certs(conn->ctx, conn->cache, conn->peer_name,
                             SSL_get0_peer_certificates(conn->ssl), v) < 0)
            refuse_internal(conn, "out of memory while verifying the certificate");
        v->ev.resumed = true;
    } else if (!conn->verify_ran) {
        /* Cannot happen with SSL_VERIFY_PEER; never let it pass silently. */
        refuse_internal(conn, "certificate was not verified");
    }
    judge_negotiated(conn, SSL_get_current_cipher(conn->ssl));
    if (!v->pass) {
        tls_conn_set_state(conn, TLS_CONN_FAILED);
        return TLS_ERR_HANDSHAKE;
    }
    tls_conn_set_state(conn, TLS_CONN_ESTABLISHED);
    if (conn->pending_session != NULL) {
        if (conn->cache != NULL && tls_verdict_cacheable(v))
            tls_cache_put(conn->cache, conn->cache_key, conn->pending_session);
        SSL_SESSION_free(conn->pending_session);
        conn->pending_session = NULL;
    }
    return 0;
}

int tls_conn_handshake(struct tls_conn *conn, bool *done)
{
    *done = false;
    switch (conn->state) {
    case TLS_CONN_HANDSHAKE: break;
    case TLS_CONN_FAILED: return TLS_ERR_HANDSHAKE;
    default: *done = true; return 0;
    }
    ERR_clear_error();
    int r = SSL_do_handshake(conn->ssl);
    if (r == 1) {
        int rc = 0;
        if (conn->client)
            rc = client_finished(conn);
        else
            tls_conn_set_state(conn, TLS_CONN_ESTABLISHED);
        ERR_clear_error();
        *done = rc == 0;
        return rc;
    }
    int err = SSL_get_error(conn->ssl, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        ERR_clear_error();
        return 0;
    }
    if (conn->client)
        judge_failure(conn, err);
    ERR_clear_error();
    tls_conn_set_state(conn, TLS_CONN_FAILED);
    return TLS_ERR_HANDSHAKE;
}
