/*
 * tests/tls/harness.h — shared by the tls/ unit tests (header only: each test is one
 * executable). A fresh test PKI in a temporary directory, context builders, and an
 * in-memory handshake: a client and a server tls_conn pumping their pending
 * ciphertext into each other until both have finished or failed.
 */
#ifndef FLOORMTA_TESTS_TLS_HARNESS_H
#define FLOORMTA_TESTS_TLS_HARNESS_H

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/pki/testpki.h"
#include "tls/tls.h"

#define MX_NAME "mx.floormta.test"

static char pki_dir[] = "/tmp/floormta-tls-test-XXXXXX";

/* Path of a PKI file, in a static buffer rotated among 4 (enough for one call). */
static inline const char *pki_path(const char *file)
{
    static char bufs[4][PATH_MAX];
    static int next;
    char *buf = bufs[next++ % 4];
    snprintf(buf, PATH_MAX, "%s/%s", pki_dir, file);
    return buf;
}

static inline int pki_setup(void **state)
{
    (void)state;
    if (mkdtemp(pki_dir) == NULL)
        return -1;
    return testpki_generate(pki_dir, MX_NAME) == 0 ? 0 : -1;
}

static inline int pki_teardown(void **state)
{
    (void)state;
    DIR *d = opendir(pki_dir);
    if (d == NULL)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            unlink(pki_path(e->d_name));
    }
    closedir(d);
    return rmdir(pki_dir);
}

/* A client context trusting the test root. floor 0 = default (1.2). */
static inline struct tls_ctx *client_ctx(uint16_t floor)
{
    struct tls_client_config cfg = { .min_version = floor, .ca_file = pki_path("ca.crt") };
    struct tls_ctx *ctx = NULL;
    return tls_ctx_new_client(&cfg, &ctx) == 0 ? ctx : NULL;
}

/* A server context for a profile's certificate; 0 = defaults. */
static inline struct tls_ctx *server_ctx(const char *profile, uint16_t min, uint16_t max,
                                         const char *cipher_list)
{
    char crt[64], key[64];
    snprintf(crt, sizeof(crt), "%s.crt", profile);
    snprintf(key, sizeof(key), "%s.key", profile);
    struct tls_server_config cfg = {
        .cert_file = pki_path(crt),
        .key_file = pki_path(key),
        .min_version = min,
        .max_version = max,
        .cipher_list = cipher_list,
    };
    struct tls_ctx *ctx = NULL;
    return tls_ctx_new_server(&cfg, &ctx) == 0 ? ctx : NULL;
}

/* Moves all pending ciphertext from one conn to the other. */
static inline int pump_one(struct tls_conn *from, struct tls_conn *to)
{
    uint8_t buf[16384];
    size_t n;
    while ((n = tls_conn_drain(from, buf, sizeof(buf))) > 0) {
        int rc = tls_conn_feed(to, buf, n);
        if (rc < 0)
            return rc;
    }
    return 0;
}

struct hs_result {
    int client_rc, server_rc;
    bool client_done, server_done;
};

/* Runs the handshake to its end on both sides. */
static inline struct hs_result handshake(struct tls_conn *c, struct tls_conn *s)
{
    struct hs_result r = { 0, 0, false, false };
    for (int i = 0; i < 32; i++) {
        if (!r.client_done && r.client_rc == 0)
            r.client_rc = tls_conn_handshake(c, &r.client_done);
        if (pump_one(c, s) < 0)
            break;
        if (!r.server_done && r.server_rc == 0)
            r.server_rc = tls_conn_handshake(s, &r.server_done);
        if (pump_one(s, c) < 0)
            break;
        bool c_end = r.client_done || r.client_rc != 0;
        bool s_end = r.server_done || r.server_rc != 0;
        if (c_end && s_end && tls_conn_pending(c) == 0 && tls_conn_pending(s) == 0)
            break;
    }
    return r;
}

/* Client ctx + server for profile, one handshake; copies the verdict to *v.
 * Returns the client's handshake result. */
static inline int verdict_for(struct tls_ctx *cctx, struct tls_ctx *sctx, const char *peer,
                              struct tls_verdict *v, struct hs_result *out)
{
    struct tls_conn *c = NULL, *s = NULL;
    if (tls_conn_new_client(cctx, peer, NULL, NULL, &c) != 0 ||
        tls_conn_new_server(sctx, &s) != 0) {
        tls_conn_free(c);
        return -1;
    }
    struct hs_result r = handshake(c, s);
    *v = *tls_conn_verdict(c);
    if (out)
        *out = r;
    tls_conn_free(c);
    tls_conn_free(s);
    return r.client_rc;
}

/* Sends len bytes of data from one conn to the other and reads them back into out. */
static inline size_t transfer(struct tls_conn *from, struct tls_conn *to, const void *data,
                              size_t len, uint8_t *out, size_t cap)
{
    size_t got = 0;
    if (tls_conn_write(from, data, len) != 0)
        return 0;
    uint8_t buf[16384];
    size_t n;
    for (int guard = 0; guard < 10000; guard++) {
        n = tls_conn_drain(from, buf, sizeof(buf));
        if (n > 0 && tls_conn_feed(to, buf, n) != 0)
            return got;
        size_t r = 0;
        do {
            if (tls_conn_read(to, out + got, cap - got, &r) != 0)
                return got;
            got += r;
        } while (r > 0 && got < cap);
        if (n == 0 && r == 0)
            break;
    }
    return got;
}

#endif /* FLOORMTA_TESTS_TLS_HARNESS_H */
