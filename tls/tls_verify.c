/*
 * tls/tls_verify.c — judging a peer's certificate chain into a verdict.
 *
 * This is the floor's certificate half: chain to a trusted root, dates, host name
 * (SAN dNSName only, never the CN), key sizes and signature hashes. Every problem is
 * collected (X509_verify_cert's callback records and continues), so the evidence says
 * everything wrong with a certificate, and the reason is the first in TLS_REASONS
 * order. One code path: the handshake's verify callback, resumption and
 * tls_ctx_verify_chain all end up in tls_ctx_verify_chain.
 */
#include "tls/tls_int.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj.h>
#include <openssl/pool.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

/* What X509_verify_cert's callback accumulates. */
struct collect {
    uint32_t problems;
    int first_error;
};

static enum tls_reason reason_of_x509_error(int err)
{
    switch (err) {
    case X509_V_OK: return TLS_REASON_NONE;
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT: return TLS_REASON_CERT_SELF_SIGNED;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED: return TLS_REASON_CERT_UNTRUSTED;
    case X509_V_ERR_CERT_HAS_EXPIRED: return TLS_REASON_CERT_EXPIRED;
    case X509_V_ERR_CERT_NOT_YET_VALID: return TLS_REASON_CERT_NOT_YET_VALID;
    default: return TLS_REASON_CERT_INVALID;
    }
}

/* Records every error and lets verification continue, so that one run finds all of
 * them. Only running out of memory stops it (nothing after that would be reliable). */
static int collect_cb(int ok, X509_STORE_CTX *sctx)
{
    if (ok)
        return 1;
    struct collect *c = X509_STORE_CTX_get_app_data(sctx);
    int err = X509_STORE_CTX_get_error(sctx);
    if (c->first_error == 0)
        c->first_error = err;
    c->problems |= 1u << reason_of_x509_error(err);
    return err == X509_V_ERR_OUT_OF_MEM ? 0 : 1;
}

/* Prints a name in RFC 2253 form into dst (truncated). bio is a scratch memory BIO. */
static void name_to_string(BIO *bio, const X509_NAME *name, char *dst, size_t cap)
{
    char *data = NULL;
    dst[0] = '\0';
    if (name == NULL || BIO_reset(bio) != 1 ||
        X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) < 0)
        return;
    long len = BIO_get_mem_data(bio, &data);
    if (len <= 0)
        return;
    size_t n = (size_t)len < cap - 1 ? (size_t)len : cap - 1;
    memcpy(dst, data, n);
    dst[n] = '\0';
}

/* The SAN dNSNames, comma-separated; truncated at a name boundary when possible. */
static void sans_to_string(X509 *leaf, char *dst, size_t cap)
{
    size_t used = 0;
    dst[0] = '\0';
    GENERAL_NAMES *names = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    if (names == NULL)
        return;
    for (size_t i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        if (gn->type != GEN_DNS)
            continue;
        const unsigned char *s = ASN1_STRING_get0_data(gn->d.dNSName);
        size_t len = (size_t)ASN1_STRING_length(gn->d.dNSName);
        size_t need = len + (used ? 1 : 0);
        if (used + need >= cap) {
            /* Truncated: keep what fits, so the evidence still shows the start. */
            if (used == 0) {
                memcpy(dst, s, cap - 1);
                used = cap - 1;
            }
            break;
        }
        if (used)
            dst[used++] = ',';
        memcpy(dst + used, s, len);
        used += len;
    }
    dst[used] = '\0';
    GENERAL_NAMES_free(names);
}

/* Unix seconds of an ASN1_TIME, via its distance from the epoch (this BoringSSL has
 * no ASN1_TIME_to_posix). 0 if it cannot be decoded. */
static int64_t time_to_unix(const ASN1_TIME *epoch, const ASN1_TIME *t)
{
    int days = 0, secs = 0;
    if (epoch == NULL || t == NULL || !ASN1_TIME_diff(&days, &secs, epoch, t))
        return 0;
    return (int64_t)days * 86400 + secs;
}

static void fill_evidence(X509 *leaf, const uint8_t *der, size_t len, struct tls_evidence *ev)
{
    ev->has_cert = true;
    SHA256(der, len, ev->sha256);
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio != NULL) {
        name_to_string(bio, X509_get_subject_name(leaf), ev->subject, sizeof(ev->subject));
        name_to_string(bio, X509_get_issuer_name(leaf), ev->issuer, sizeof(ev->issuer));
        BIO_free(bio);
    }
    sans_to_string(leaf, ev->sans, sizeof(ev->sans));
    ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
    ev->not_before = time_to_unix(epoch, X509_get0_notBefore(leaf));
    ev->not_after = time_to_unix(epoch, X509_get0_notAfter(leaf));
    ASN1_TIME_free(epoch);
    EVP_PKEY *key = X509_get_pubkey(leaf);
    if (key != NULL) {
        switch (EVP_PKEY_id(key)) {
        case EVP_PKEY_RSA: tls_strlcpy(ev->key_type, "RSA", sizeof(ev->key_type)); break;
        case EVP_PKEY_EC: tls_strlcpy(ev->key_type, "EC", sizeof(ev->key_type)); break;
        case EVP_PKEY_ED25519: tls_strlcpy(ev->key_type, "Ed25519", sizeof(ev->key_type)); break;
        default: break;
        }
        ev->key_bits = EVP_PKEY_bits(key);
        EVP_PKEY_free(key);
    }
}

/* Only RSA, EC and Ed25519 keys of at least the configured size meet the floor. */
static bool key_is_weak(const struct tls_ctx *ctx, X509 *cert)
{
    EVP_PKEY *key = X509_get_pubkey(cert);
    if (key == NULL)
        return true;
    bool weak;
    switch (EVP_PKEY_id(key)) {
    case EVP_PKEY_RSA: weak = EVP_PKEY_bits(key) < ctx->min_rsa_bits; break;
    case EVP_PKEY_EC: weak = EVP_PKEY_bits(key) < ctx->min_ec_bits; break;
    case EVP_PKEY_ED25519: weak = false; break;
    default: weak = true; break;
    }
    EVP_PKEY_free(key);
    return weak;
}

static bool signature_is_weak(const X509 *cert)
{
    int md = NID_undef, pk = NID_undef;
    if (!OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md, &pk))
        return false; /* e.g. RSA-PSS or Ed25519: no legacy hash */
    return md == NID_sha1 || md == NID_md5 || md == NID_md4 || md == NID_md5_sha1;
}

/* Keys and signature hashes of the chain, except the self-signed root at its end: a
 * trust anchor is trusted by being in the store, its self-signature means nothing. */
static void check_chain_algorithms(const struct tls_ctx *ctx, STACK_OF(X509) * chain,
                                   uint32_t *problems)
{
    size_t n = sk_X509_num(chain);
    for (size_t i = 0; i < n; i++) {
        X509 *cert = sk_X509_value(chain, i);
        if (i > 0 && i == n - 1 && X509_check_issued(cert, cert) == X509_V_OK)
            break;
        if (key_is_weak(ctx, cert))
            *problems |= 1u << TLS_REASON_WEAK_KEY;
        if (signature_is_weak(cert))
            *problems |= 1u << TLS_REASON_WEAK_SIGNATURE;
    }
}

/* The library only calls a certificate self-signed (DEPTH_ZERO_SELF_SIGNED_CERT) when
 * it could also be a CA: a self-signed leaf whose keyUsage lacks keyCertSign (common
 * for home-made server certificates) comes out as "unable to get local issuer". Name
 * it for what it is: issuer = subject and signed by its own key. */
static bool is_self_signed(X509 *cert)
{
    if (X509_NAME_cmp(X509_get_subject_name(cert), X509_get_issuer_name(cert)) != 0)
        return false;
    EVP_PKEY *key = X509_get_pubkey(cert);
    bool self = key != NULL && X509_verify(cert, key) == 1;
    EVP_PKEY_free(key);
    return self;
}

/* Runs the library's path building and checks against the trust store, collecting
 * every error; then our own checks on the chain it built. */
/* The earliest notAfter of a chain, unix seconds (0 if none can be read). */
static int64_t chain_not_after(STACK_OF(X509) * chain)
{
    int64_t earliest = 0;
    ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
    for (size_t i = 0; epoch != NULL && i < sk_X509_num(chain); i++) {
        int64_t t = time_to_unix(epoch, X509_get0_notAfter(sk_X509_value(chain, i)));
        if (t > 0 && (earliest == 0 || t < earliest))
            earliest = t;
    }
    ASN1_TIME_free(epoch);
    return earliest;
}

static int judge_chain(struct tls_ctx *ctx, X509 *leaf, STACK_OF(X509) * untrusted,
                       struct collect *c, int64_t *not_after)
{
    uint64_t gen; /* the memo's key already carries it (tls_memo_digest) */
    X509_STORE *store = tls_ctx_store_get(ctx, &gen);
    (void)gen;
    X509_STORE_CTX *sctx = X509_STORE_CTX_new();
    if (sctx == NULL || store == NULL) {
        X509_STORE_CTX_free(sctx);
        X509_STORE_free(store);
        return -ENOMEM;
    }
    if (!X509_STORE_CTX_init(sctx, store, leaf, untrusted) ||
        !X509_STORE_CTX_set_default(sctx, "ssl_server")) {
        X509_STORE_CTX_free(sctx);
        X509_STORE_free(store);
        return -ENOMEM;
    }
    X509_STORE_CTX_set_app_data(sctx, c);
    X509_STORE_CTX_set_verify_cb(sctx, collect_cb);
    if (X509_verify_cert(sctx) != 1 && c->problems == 0) {
        /* Failed without telling the callback (e.g. an internal error). */
        int err = X509_STORE_CTX_get_error(sctx);
        c->first_error = err ? err : X509_V_ERR_UNSPECIFIED;
        c->problems |= 1u << TLS_REASON_CERT_INVALID;
    }
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(sctx);
    if ((c->problems & (1u << TLS_REASON_CERT_UNTRUSTED)) && sk_X509_num(untrusted) == 0 &&
        is_self_signed(leaf)) {
        c->problems &= ~(1u << TLS_REASON_CERT_UNTRUSTED);
        c->problems |= 1u << TLS_REASON_CERT_SELF_SIGNED;
    }
    if (chain != NULL && sk_X509_num(chain) > 0) {
        check_chain_algorithms(ctx, chain, &c->problems);
        *not_after = chain_not_after(chain);
    } else {
        /* No chain was built: judge what the peer sent. */
        c->problems |= key_is_weak(ctx, leaf) ? 1u << TLS_REASON_WEAK_KEY : 0;
        c->problems |= signature_is_weak(leaf) ? 1u << TLS_REASON_WEAK_SIGNATURE : 0;
        check_chain_algorithms(ctx, untrusted, &c->problems);
    }
    X509_STORE_CTX_free(sctx);
    X509_STORE_free(store);
    return 0;
}

int tls_ctx_verify_chain(struct tls_ctx *ctx, const char *peer_name, const uint8_t *const *ders,
                         const size_t *lens, size_t n, struct tls_verdict *out)
{
    int64_t not_after;
    int rc = tls_verify_chain_int(ctx, peer_name, ders, lens, n, out, &not_after);
    /* As a handshake would: tls_verify_chain_int judges against the floor only (the
     * memo keeps floor verdicts), the context's mode is applied here. */
    if (rc == 0 && ctx->opportunistic)
        tls_verdict_waive(out);
    return rc;
}

int tls_verify_chain_int(struct tls_ctx *ctx, const char *peer_name, const uint8_t *const *ders,
                         const size_t *lens, size_t n, struct tls_verdict *out,
                         int64_t *chain_not_after)
{
    *chain_not_after = 0;
    if (ctx == NULL || peer_name == NULL || out == NULL || (n > 0 && (!ders || !lens)))
        return -EINVAL;
    if (ctx->server)
        return TLS_ERR_STATE;
    tls_verdict_clear(out);
    if (n == 0) {
        tls_verdict_add(out, TLS_REASON_NO_CERTIFICATE);
        tls_verdict_settle(out);
        return 0;
    }

    ERR_clear_error();
    struct collect c = { 0, 0 };
    if (n > TLS_CHAIN_MAX) {
        c.problems |= 1u << TLS_REASON_CERT_INVALID;
        n = TLS_CHAIN_MAX;
    }
    const uint8_t *p = ders[0];
    X509 *leaf = d2i_X509(NULL, &p, (long)lens[0]);
    if (leaf == NULL) {
        SHA256(ders[0], lens[0], out->ev.sha256);
        tls_verdict_add(out, TLS_REASON_CERT_INVALID);
        tls_verdict_settle(out);
        ERR_clear_error();
        return 0;
    }
    int rc = -ENOMEM;
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    if (untrusted == NULL)
        goto out;
    for (size_t i = 1; i < n; i++) {
        p = ders[i];
        X509 *cert = d2i_X509(NULL, &p, (long)lens[i]);
        if (cert == NULL) {
            c.problems |= 1u << TLS_REASON_CERT_INVALID;
            continue;
        }
        if (!sk_X509_push(untrusted, cert)) {
            X509_free(cert);
            goto out;
        }
    }
    fill_evidence(leaf, ders[0], lens[0], &out->ev);
    rc = judge_chain(ctx, leaf, untrusted, &c, chain_not_after);
    if (rc < 0)
        goto out;
    /* SAN dNSNames only (never the subject CN); partial wildcards ("m*.example") are
     * refused by this BoringSSL whatever the flag says. */
    if (X509_check_host(leaf, peer_name, strlen(peer_name),
                        X509_CHECK_FLAG_NEVER_CHECK_SUBJECT | X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
                        NULL) != 1)
        c.problems |= 1u << TLS_REASON_HOSTNAME_MISMATCH;
    out->ev.x509_error = c.first_error;
    out->ev.problems |= c.problems;
    tls_verdict_settle(out);
    rc = 0;
out:
    sk_X509_pop_free(untrusted, X509_free);
    X509_free(leaf);
    ERR_clear_error();
    return rc;
}

int tls_verify_certs(struct tls_ctx *ctx, struct tls_cache *cache, const char *peer_name,
                     const STACK_OF(CRYPTO_BUFFER) * certs, struct tls_verdict *out)
{
    uint8_t digest[TLS_MEMO_DIGEST_LEN];
    int64_t now = (int64_t)time(NULL);
    if (cache != NULL) {
        tls_memo_digest(ctx, peer_name, certs, digest);
        bool hit = tls_memo_get(tls_cache_memo(cache), digest, now, out);
        tls_cache_count_verify(cache, hit);
        if (hit)
            return 0;
    }

    const uint8_t *ders[TLS_CHAIN_MAX + 1];
    size_t lens[TLS_CHAIN_MAX + 1];
    size_t n = certs ? sk_CRYPTO_BUFFER_num(certs) : 0;

    /* One more than the limit, so tls_ctx_verify_chain sees the chain is too long. */
    if (n > TLS_CHAIN_MAX + 1)
        n = TLS_CHAIN_MAX + 1;
    for (size_t i = 0; i < n; i++) {
        const CRYPTO_BUFFER *buf = sk_CRYPTO_BUFFER_value(certs, i);
        ders[i] = CRYPTO_BUFFER_data(buf);
        lens[i] = CRYPTO_BUFFER_len(buf);
    }
    int64_t not_after = 0;
    int rc = tls_verify_chain_int(ctx, peer_name, ders, lens, n, out, &not_after);
    if (rc == 0 && cache != NULL)
        tls_memo_put(tls_cache_memo(cache), digest, now, not_after, out);
    return rc;
}
