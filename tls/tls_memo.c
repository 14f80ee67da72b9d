/*
 * tls/tls_memo.c — verified chains remembered per worker, so that the next connection
 * to the same MX (a pooled one, a resumed one) skips chain verification.
 *
 * Why: with this BoringSSL build, verifying a two-certificate chain costs about as
 * much as the rest of a full handshake (see README). A receiver presents the same
 * chain on every connection for weeks, so the verdict is remembered under a digest of
 * everything it depends on: the client context (trust store and policy), the name the
 * certificate must match, and the chain's bytes. Only passing verdicts are kept, and
 * only until the earliest notAfter of the chain (or TLS_MEMO_TTL, whichever is first):
 * a refusal is always judged afresh, and a certificate that expires is never passed
 * from memory.
 *
 * Direct-mapped: a digest picks its slot, a newer verdict overwrites an older one in
 * the same slot. Bounded, allocation-free after creation, no LRU bookkeeping.
 */
#include "tls/tls_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

struct memo_slot {
    bool used;
    int64_t valid_until; /* unix seconds */
    uint8_t digest[SHA256_DIGEST_LENGTH];
    struct tls_verdict verdict;
};

struct tls_memo {
    size_t nslots; /* power of two */
    struct memo_slot *slots;
};

int tls_memo_new(size_t nslots, struct tls_memo **out)
{
    size_t n = 1;
    while (n < nslots)
        n <<= 1;
    struct tls_memo *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    m->slots = calloc(n, sizeof(*m->slots));
    if (m->slots == NULL) {
        free(m);
        return -ENOMEM;
    }
    m->nslots = n;
    *out = m;
    return 0;
}

void tls_memo_free(struct tls_memo *m)
{
    if (m == NULL)
        return;
    free(m->slots);
    free(m);
}

void tls_memo_digest(const struct tls_ctx *ctx, const char *peer_name,
                     const STACK_OF(CRYPTO_BUFFER) * certs, uint8_t out[TLS_MEMO_DIGEST_LEN])
{
    SHA256_CTX sha;
    SHA256_Init(&sha);
    /* The context stands for its trust store and policy: a reloaded configuration is a
     * new context, so nothing judged under the old one is reused. */
    SHA256_Update(&sha, &ctx, sizeof(ctx));
    /* ... and so is a reload of its files (tls_ctx_reload_client). */
    uint64_t gen = __atomic_load_n(&ctx->gen, __ATOMIC_ACQUIRE);
    SHA256_Update(&sha, &gen, sizeof(gen));
    SHA256_Update(&sha, peer_name, strlen(peer_name) + 1);
    size_t n = certs ? sk_CRYPTO_BUFFER_num(certs) : 0;
    for (size_t i = 0; i < n; i++) {
        const CRYPTO_BUFFER *buf = sk_CRYPTO_BUFFER_value(certs, i);
        uint32_t len = (uint32_t)CRYPTO_BUFFER_len(buf);
        /* Lengths keep (a|bc) and (ab|c) apart. */
        SHA256_Update(&sha, &len, sizeof(len));
        SHA256_Update(&sha, CRYPTO_BUFFER_data(buf), len);
    }
    SHA256_Final(out, &sha);
}

static struct memo_slot *slot_of(struct tls_memo *m, const uint8_t *digest)
{
    uint64_t idx;
    memcpy(&idx, digest, sizeof(idx));
    return &m->slots[idx & (m->nslots - 1)];
}

bool tls_memo_get(struct tls_memo *m, const uint8_t digest[TLS_MEMO_DIGEST_LEN], int64_t now,
                  struct tls_verdict *out)
{
    struct memo_slot *s = slot_of(m, digest);
    if (!s->used || memcmp(s->digest, digest, TLS_MEMO_DIGEST_LEN) != 0)
        return false;
    if (now >= s->valid_until) {
        s->used = false;
        return false;
    }
    *out = s->verdict;
    return true;
}

void tls_memo_put(struct tls_memo *m, const uint8_t digest[TLS_MEMO_DIGEST_LEN], int64_t now,
                  int64_t chain_not_after, const struct tls_verdict *v)
{
    if (!v->pass)
        return;
    int64_t until = now + TLS_MEMO_TTL;
    if (chain_not_after > 0 && chain_not_after < until)
        until = chain_not_after;
    if (until <= now)
        return;
    struct memo_slot *s = slot_of(m, digest);
    s->used = true;
    s->valid_until = until;
    memcpy(s->digest, digest, TLS_MEMO_DIGEST_LEN);
    s->verdict = *v;
}
