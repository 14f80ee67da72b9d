/*
 * bench/bench_tls.c — what the TLS floor costs: full handshakes (TLS 1.3, TLS 1.2),
 * resumed handshakes, and the certificate verdict alone. Client and server run in
 * memory (no sockets), so the figures are CPU per handshake on one core, both sides
 * included. The test PKI is generated once into the scratch directory.
 */
#include "bench/bench.h"
#include "tests/pki/testpki.h"
#include "tls/tls.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MX_NAME "mx.floormta.test"

/* The PKI directory, generated on first use; NULL if that failed. */
static const char *bench_pki(void)
{
    static char dir[PATH_MAX];
    static int state; /* 0 not yet, 1 ready, -1 failed */
    if (state == 0) {
        snprintf(dir, sizeof(dir), "%s/tls-pki", bench_scratch_dir());
        state = (mkdir(dir, 0700) == 0 || errno == EEXIST) && testpki_generate(dir, MX_NAME) == 0
                        ? 1
                        : -1;
    }
    return state == 1 ? dir : NULL;
}

static const char *pki_file(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", bench_pki(), name);
    return buf;
}

static struct tls_ctx *bench_client_ctx(void)
{
    char ca[PATH_MAX];
    struct tls_client_config cfg = { .ca_file = pki_file(ca, sizeof(ca), "ca.crt") };
    struct tls_ctx *ctx = NULL;
    return tls_ctx_new_client(&cfg, &ctx) == 0 ? ctx : NULL;
}

static struct tls_ctx *bench_server_ctx(const char *profile, uint16_t max)
{
    char crt[PATH_MAX], key[PATH_MAX], name[64];
    snprintf(name, sizeof(name), "%s.crt", profile);
    pki_file(crt, sizeof(crt), name);
    snprintf(name, sizeof(name), "%s.key", profile);
    pki_file(key, sizeof(key), name);
    struct tls_server_config cfg = { .cert_file = crt, .key_file = key, .max_version = max };
    struct tls_ctx *ctx = NULL;
    return tls_ctx_new_server(&cfg, &ctx) == 0 ? ctx : NULL;
}

static void move(struct tls_conn *from, struct tls_conn *to, uint8_t *buf, size_t cap)
{
    size_t n;
    while ((n = tls_conn_drain(from, buf, cap)) > 0)
        tls_conn_feed(to, buf, n);
}

/* One connection: handshake to the end on both sides and the client's verdict. With
 * greet, the server then sends a line the client reads, which also makes the client
 * process TLS 1.3 session tickets (they follow the handshake). Returns 0 if the
 * handshake passed; *resumed says whether it was resumed. */
static int connect_once(struct tls_ctx *cctx, struct tls_ctx *sctx, struct tls_cache *cache,
                        bool greet, bool *resumed)
{
    static uint8_t buf[16384];
    struct tls_conn *c = NULL, *s = NULL;
    int rc = -1;
    if (tls_conn_new_client(cctx, MX_NAME, cache, NULL, &c) != 0 ||
        tls_conn_new_server(sctx, &s) != 0)
        goto out;
    bool cdone = false, sdone = false;
    int crc = 0, src = 0;
    for (int i = 0; i < 16 && !(cdone && sdone) && crc == 0 && src == 0; i++) {
        if (!cdone)
            crc = tls_conn_handshake(c, &cdone);
        move(c, s, buf, sizeof(buf));
        if (!sdone)
            src = tls_conn_handshake(s, &sdone);
        move(s, c, buf, sizeof(buf));
    }
    const struct tls_verdict *v = tls_conn_verdict(c);
    if (!cdone || !sdone || !v->pass)
        goto out;
    *resumed = v->ev.resumed;
    if (greet) {
        static const char line[] = "220 " MX_NAME " ESMTP\r\n";
        size_t n = 0, got = 0;
        if (tls_conn_write(s, line, sizeof(line) - 1) != 0)
            goto out;
        move(s, c, buf, sizeof(buf));
        while (tls_conn_read(c, buf + got, sizeof(buf) - got, &n) == 0 && n > 0)
            got += n;
        if (got != sizeof(line) - 1)
            goto out;
    }
    rc = 0;
out:
    tls_conn_free(c);
    tls_conn_free(s);
    return rc;
}

/* How much a connection may reuse from earlier ones to the same MX. */
enum reuse {
    REUSE_NONE,   /* no cache: full handshake, chain verified */
    REUSE_CHAIN,  /* full handshake, the chain's verdict remembered (TLS 1.3: the
                   * greeting is not read, so no ticket arrives to resume with) */
    REUSE_TICKET, /* resumption with a TLS 1.3 ticket, verdict remembered */
};

static void run_handshakes(struct bench_state *st, const char *profile, uint16_t server_max,
                           enum reuse reuse)
{
    bool resume = reuse == REUSE_TICKET;
    if (bench_pki() == NULL) {
        bench_fail(st, "cannot generate the test PKI");
        return;
    }
    struct tls_ctx *cctx = bench_client_ctx();
    struct tls_ctx *sctx = bench_server_ctx(profile, server_max);
    struct tls_cache *cache = NULL;
    int64_t items = 0;
    bool resumed = false;
    if (cctx == NULL || sctx == NULL || (reuse != REUSE_NONE && tls_cache_new(16, &cache) != 0)) {
        bench_fail(st, "cannot build the TLS contexts");
        goto out;
    }
    /* Warm the cache so that every timed iteration reuses what it may. */
    if (reuse != REUSE_NONE && connect_once(cctx, sctx, cache, resume, &resumed) != 0) {
        bench_fail(st, "first handshake failed");
        goto out;
    }
    while (bench_next(st)) {
        if (connect_once(cctx, sctx, cache, resume, &resumed) != 0 || resumed != resume) {
            bench_fail(st, resume ? "handshake did not resume" : "handshake failed");
            break;
        }
        items++;
    }
    bench_set_items(st, items);
out:
    tls_cache_free(cache);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

/* TLS 1.3, EC P-256 leaf: ECDHE X25519 + ECDSA, the common case. */
static void bench_tls13_full_handshake(struct bench_state *st)
{
    run_handshakes(st, "valid", 0, REUSE_NONE);
}
BENCH_REGISTER(bench_tls13_full_handshake)

/* TLS 1.3 full handshake to an MX whose chain this worker verified before: what a new
 * pooled connection costs. */
static void bench_tls13_full_handshake_known_chain(struct bench_state *st)
{
    run_handshakes(st, "valid", 0, REUSE_CHAIN);
}
BENCH_REGISTER(bench_tls13_full_handshake_known_chain)

/* TLS 1.2 (receiver capped at 1.2), EC P-256 leaf: ECDHE-ECDSA-AES128-GCM-SHA256. */
static void bench_tls12_full_handshake_ec(struct bench_state *st)
{
    run_handshakes(st, "valid", TLS_VERSION_1_2, REUSE_NONE);
}
BENCH_REGISTER(bench_tls12_full_handshake_ec)

/* TLS 1.2 with an RSA 2048 leaf: ECDHE-RSA-AES128-GCM-SHA256, the server's RSA
 * signature dominates. */
static void bench_tls12_full_handshake_rsa(struct bench_state *st)
{
    run_handshakes(st, "valid-rsa", TLS_VERSION_1_2, REUSE_NONE);
}
BENCH_REGISTER(bench_tls12_full_handshake_rsa)

/* TLS 1.3 resumption from the cache (PSK + ECDHE), the chain's remembered verdict
 * re-checked; each iteration reads one greeting line, which brings the next single-use
 * ticket. */
static void bench_tls13_resumed_handshake(struct bench_state *st)
{
    run_handshakes(st, "valid", 0, REUSE_TICKET);
}
BENCH_REGISTER(bench_tls13_resumed_handshake)

/* Decodes base64 (PEM body, whitespace ignored) from s up to end into out. */
static size_t base64_decode(const char *s, const char *end, uint8_t *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (; s < end; s++) {
        const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const char *p = *s ? strchr(alphabet, *s) : NULL;
        if (p == NULL)
            continue; /* newline, '=' padding */
        acc = acc << 6 | (uint32_t)(p - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n < cap)
                out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return n;
}

/* The DER certificates of a PEM file, leaf first. Returns how many (at most max). */
static size_t load_chain(const char *path, uint8_t ders[][4096], size_t *lens, size_t max)
{
    static char pem[32768];
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t len = fread(pem, 1, sizeof(pem) - 1, f);
    fclose(f);
    pem[len] = '\0';
    size_t n = 0;
    const char *begin = "-----BEGIN CERTIFICATE-----", *finish = "-----END CERTIFICATE-----";
    for (const char *p = strstr(pem, begin); p && n < max; p = strstr(p, begin)) {
        p += strlen(begin);
        const char *e = strstr(p, finish);
        if (e == NULL)
            break;
        lens[n] = base64_decode(p, e, ders[n], sizeof(ders[n]));
        n++;
        p = e;
    }
    return n;
}

/* The certificate verdict alone, no handshake: leaf + intermediate to the root, dates,
 * host name, key sizes, signature hashes, and the evidence (names, SANs, SHA-256). */
static void bench_verdict(struct bench_state *st)
{
    static uint8_t ders[2][4096];
    size_t lens[2];
    char path[PATH_MAX];
    if (bench_pki() == NULL ||
        load_chain(pki_file(path, sizeof(path), "chain.crt"), ders, lens, 2) != 2) {
        bench_fail(st, "cannot load the test chain");
        return;
    }
    struct tls_ctx *cctx = bench_client_ctx();
    if (cctx == NULL) {
        bench_fail(st, "cannot build the client context");
        return;
    }
    const uint8_t *chain[2] = { ders[0], ders[1] };
    struct tls_verdict v;
    int64_t items = 0;
    while (bench_next(st)) {
        if (tls_ctx_verify_chain(cctx, MX_NAME, chain, lens, 2, &v) != 0 || !v.pass) {
            bench_fail(st, "the valid chain did not pass");
            break;
        }
        items++;
    }
    bench_set_items(st, items);
    tls_ctx_free(cctx);
}
BENCH_REGISTER(bench_verdict)
