/*
 * tests/pki/testpki.c — the test PKI: a root, an untrusted root, an intermediate and
 * one leaf per receiver profile (see testpki.h), generated with BoringSSL so that every
 * run gets fresh keys and dates relative to now (no certificate in the tree can expire).
 */
#include "tests/pki/testpki.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define DAY (24L * 60 * 60)

const char *const testpki_profiles[] = {
    "valid",      "valid-rsa",        "chain",        "expired",  "not-yet-valid",
    "wrong-name", "self-signed",      "untrusted-ca", "weak-key", "weak-sig",
    "wildcard",   "partial-wildcard", NULL,
};

/* A key and its certificate, both owned. */
struct issued {
    EVP_PKEY *key;
    X509 *cert;
};

static void issued_free(struct issued *i)
{
    EVP_PKEY_free(i->key);
    X509_free(i->cert);
    i->key = NULL;
    i->cert = NULL;
}

/* rsa_bits 0 = EC P-256. Returns a new key or NULL. */
static EVP_PKEY *make_key(int rsa_bits)
{
    EVP_PKEY *key = NULL;
    EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_id(rsa_bits ? EVP_PKEY_RSA : EVP_PKEY_EC, NULL);
    if (kctx == NULL || EVP_PKEY_keygen_init(kctx) != 1)
        goto out;
    if (rsa_bits ? EVP_PKEY_CTX_set_rsa_keygen_bits(kctx, rsa_bits) != 1
                 : EVP_PKEY_CTX_set_ec_paramgen_curve_nid(kctx, NID_X9_62_prime256v1) != 1)
        goto out;
    if (EVP_PKEY_keygen(kctx, &key) != 1)
        key = NULL;
out:
    EVP_PKEY_CTX_free(kctx);
    return key;
}

static bool add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &v3, nid, value);
    if (ext == NULL)
        return false;
    bool ok = X509_add_ext(cert, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

/* A random positive 127-bit serial, as CAs do. */
static bool set_serial(X509 *cert)
{
    uint8_t bytes[16];
    RAND_bytes(bytes, sizeof(bytes));
    bytes[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(bytes, sizeof(bytes), NULL);
    if (bn == NULL)
        return false;
    bool ok = BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != NULL;
    BN_free(bn);
    return ok;
}

struct cert_spec {
    const char *cn;
    const char *san;  /* "DNS:..." or NULL for a CA */
    bool ca;          /* CA certificate (root or intermediate) */
    int pathlen;      /* for a CA: -1 = unlimited */
    long not_before;  /* seconds from now */
    long not_after;   /* seconds from now */
    int rsa_bits;     /* 0 = EC P-256 */
    const EVP_MD *md; /* signature hash */
};

/* Makes a key and a certificate for spec, signed by issuer (NULL = self-signed).
 * On success fills *out (owned by the caller, free with issued_free). */
static int make_cert(const struct cert_spec *spec, const struct issued *issuer, struct issued *out)
{
    char buf[128];
    X509 *cert = X509_new();
    EVP_PKEY *key = make_key(spec->rsa_bits);
    if (cert == NULL || key == NULL)
        goto fail;
    X509 *issuer_cert = issuer ? issuer->cert : cert;
    EVP_PKEY *issuer_key = issuer ? issuer->key : key;
    X509_NAME *name = X509_get_subject_name(cert);
    if (X509_set_version(cert, X509_VERSION_3) != 1 || !set_serial(cert) ||
        X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const uint8_t *)"floormta test", -1,
                                   -1, 0) != 1 ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const uint8_t *)spec->cn, -1, -1,
                                   0) != 1 ||
        X509_set_issuer_name(cert, X509_get_subject_name(issuer_cert)) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(cert), spec->not_before) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(cert), spec->not_after) == NULL ||
        X509_set_pubkey(cert, key) != 1)
        goto fail;
    if (spec->ca) {
        if (spec->pathlen >= 0)
            snprintf(buf, sizeof(buf), "critical,CA:TRUE,pathlen:%d", spec->pathlen);
        else
            snprintf(buf, sizeof(buf), "critical,CA:TRUE");
        if (!add_ext(cert, issuer_cert, NID_basic_constraints, buf) ||
            !add_ext(cert, issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign"))
            goto fail;
    } else {
        if (!add_ext(cert, issuer_cert, NID_basic_constraints, "critical,CA:FALSE") ||
            !add_ext(cert, issuer_cert, NID_key_usage,
                     spec->rsa_bits ? "critical,digitalSignature,keyEncipherment"
                                    : "critical,digitalSignature") ||
            !add_ext(cert, issuer_cert, NID_ext_key_usage, "serverAuth") ||
            !add_ext(cert, issuer_cert, NID_subject_alt_name, spec->san))
            goto fail;
    }
    if (!add_ext(cert, issuer_cert, NID_subject_key_identifier, "hash") ||
        (issuer != NULL &&
         !add_ext(cert, issuer_cert, NID_authority_key_identifier, "keyid:always")))
        goto fail;
    if (X509_sign(cert, issuer_key, spec->md) <= 0)
        goto fail;
    out->cert = cert;
    out->key = key;
    return 0;
fail:
    X509_free(cert);
    EVP_PKEY_free(key);
    ERR_clear_error();
    return -EIO;
}

/* Writes <dir>/<name>.crt (cert, then extra if any) and <dir>/<name>.key (mode 0600). */
static int write_pair(const char *dir, const char *name, const struct issued *i, X509 *extra)
{
    char path[PATH_MAX];
    int rc = 0;

    if (snprintf(path, sizeof(path), "%s/%s.crt", dir, name) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    BIO *bio = BIO_new_file(path, "w");
    if (bio == NULL)
        goto errno_fail;
    if (PEM_write_bio_X509(bio, i->cert) != 1 || (extra && PEM_write_bio_X509(bio, extra) != 1))
        rc = -EIO;
    if (BIO_free(bio) != 1 && rc == 0)
        rc = -EIO;
    if (rc < 0)
        goto out;

    snprintf(path, sizeof(path), "%s/%s.key", dir, name);
    bio = BIO_new_file(path, "w");
    if (bio == NULL)
        goto errno_fail;
    if (chmod(path, 0600) != 0)
        rc = -errno;
    if (rc == 0 && PEM_write_bio_PrivateKey(bio, i->key, NULL, NULL, 0, NULL, NULL) != 1)
        rc = -EIO;
    if (BIO_free(bio) != 1 && rc == 0)
        rc = -EIO;
out:
    ERR_clear_error();
    return rc;
errno_fail:
    rc = errno ? -errno : -EIO;
    ERR_clear_error();
    return rc;
}

/* One leaf profile: how it differs from "valid". */
struct leaf_profile {
    const char *name;
    int rsa_bits;
    long not_before, not_after;
    int san_kind; /* 0 mx_name, 1 other.invalid, 2 wildcard, 3 partial wildcard */
    int issuer;   /* 0 ca, 1 inter, 2 evil-ca, 3 self */
    bool sha1;
};

static const struct leaf_profile leaf_profiles[] = {
    { "valid", 0, -DAY, 365 * DAY, 0, 0, false },
    { "valid-rsa", 2048, -DAY, 365 * DAY, 0, 0, false },
    { "chain", 0, -DAY, 365 * DAY, 0, 1, false },
    { "expired", 0, -30 * DAY, -DAY, 0, 0, false },
    { "not-yet-valid", 0, 30 * DAY, 60 * DAY, 0, 0, false },
    { "wrong-name", 0, -DAY, 365 * DAY, 1, 0, false },
    { "self-signed", 0, -DAY, 365 * DAY, 0, 3, false },
    { "untrusted-ca", 0, -DAY, 365 * DAY, 0, 2, false },
    { "weak-key", 1024, -DAY, 365 * DAY, 0, 0, false },
    { "weak-sig", 0, -DAY, 365 * DAY, 0, 0, true },
    { "wildcard", 0, -DAY, 365 * DAY, 2, 0, false },
    { "partial-wildcard", 0, -DAY, 365 * DAY, 3, 0, false },
};

static int make_leaf(const char *dir, const char *mx_name, const struct leaf_profile *p,
                     const struct issued cas[3])
{
    const char *parent = strchr(mx_name, '.') + 1;
    char san[310], cn[300];
    switch (p->san_kind) {
    case 0: snprintf(cn, sizeof(cn), "%s", mx_name); break;
    case 1: snprintf(cn, sizeof(cn), "other.invalid"); break;
    case 2: snprintf(cn, sizeof(cn), "*.%s", parent); break;
    default: snprintf(cn, sizeof(cn), "%c*.%s", mx_name[0], parent); break;
    }
    snprintf(san, sizeof(san), "DNS:%s", cn);
    struct cert_spec spec = {
        .cn = cn,
        .san = san,
        .ca = false,
        .not_before = p->not_before,
        .not_after = p->not_after,
        .rsa_bits = p->rsa_bits,
        .md = p->sha1 ? EVP_sha1() : EVP_sha256(),
    };
    struct issued leaf = { NULL, NULL };
    int rc = make_cert(&spec, p->issuer == 3 ? NULL : &cas[p->issuer], &leaf);
    if (rc == 0)
        rc = write_pair(dir, p->name, &leaf, p->issuer == 1 ? cas[1].cert : NULL);
    issued_free(&leaf);
    return rc;
}

int testpki_generate(const char *dir, const char *mx_name)
{
    if (dir == NULL || mx_name == NULL || strchr(mx_name, '.') == NULL ||
        mx_name[strlen(mx_name) - 1] == '.' || mx_name[0] == '.' || strlen(mx_name) > 250)
        return -EINVAL;

    /* cas[0] root, cas[1] intermediate, cas[2] the root nobody trusts. */
    struct issued cas[3] = { { NULL, NULL }, { NULL, NULL }, { NULL, NULL } };
    const struct cert_spec root = { "floormta test root", NULL, true,        -1, -DAY,
                                    3650 * DAY,           0,    EVP_sha256() };
    const struct cert_spec inter = {
        "floormta test intermediate", NULL, true, 0, -DAY, 1825 * DAY, 0, EVP_sha256()
    };
    const struct cert_spec evil = { "floormta evil root", NULL, true,        -1, -DAY,
                                    3650 * DAY,           0,    EVP_sha256() };
    int rc = make_cert(&root, NULL, &cas[0]);
    if (rc == 0)
        rc = make_cert(&inter, &cas[0], &cas[1]);
    if (rc == 0)
        rc = make_cert(&evil, NULL, &cas[2]);
    if (rc == 0)
        rc = write_pair(dir, "ca", &cas[0], NULL);
    if (rc == 0)
        rc = write_pair(dir, "inter", &cas[1], NULL);
    if (rc == 0)
        rc = write_pair(dir, "evil-ca", &cas[2], NULL);
    for (size_t i = 0; rc == 0 && i < sizeof(leaf_profiles) / sizeof(leaf_profiles[0]); i++)
        rc = make_leaf(dir, mx_name, &leaf_profiles[i], cas);
    for (size_t i = 0; i < 3; i++)
        issued_free(&cas[i]);
    ERR_clear_error();
    return rc;
}
