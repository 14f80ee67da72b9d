/*
 * tests/tls/test_cache.c — the client session cache: resumption over TLS 1.3 (tickets
 * read after the handshake) and TLS 1.2, a resumed chain judged again, keys, the LRU
 * bound and expiry. The last two use tls/'s private entry points (tls_int.h) with
 * hand-made sessions, so that they can control time and order exactly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tests/tls/harness.h"
#include "tls/tls_int.h"

/* One connection through the cache; reads the server's greeting so that TLS 1.3
 * tickets, which follow the handshake, are processed. Returns the client's handshake
 * result and copies the verdict. */
static int connect_once(struct tls_ctx *cctx, struct tls_ctx *sctx, struct tls_cache *cache,
                        const char *peer, const char *key, struct tls_verdict *v)
{
    struct tls_conn *c = NULL, *s = NULL;
    assert_int_equal(tls_conn_new_client(cctx, peer, cache, key, &c), 0);
    assert_int_equal(tls_conn_new_server(sctx, &s), 0);
    struct hs_result r = handshake(c, s);
    if (r.client_rc == 0) {
        const char greeting[] = "220 mx.floormta.test ESMTP\r\n";
        uint8_t out[64];
        assert_int_equal(transfer(s, c, greeting, sizeof(greeting) - 1, out, sizeof(out)),
                         sizeof(greeting) - 1);
    }
    *v = *tls_conn_verdict(c);
    tls_conn_free(c);
    tls_conn_free(s);
    return r.client_rc;
}

static void resume(uint16_t server_max, uint16_t version, bool single_use)
{
    struct tls_ctx *cctx = client_ctx(0);
    struct tls_ctx *sctx = server_ctx("valid", 0, server_max, NULL);
    struct tls_cache *cache = NULL;
    struct tls_cache_stats st;
    struct tls_verdict v;
    assert_int_equal(tls_cache_new(8, &cache), 0);

    assert_int_equal(connect_once(cctx, sctx, cache, MX_NAME, "mx.floormta.test:25", &v), 0);
    assert_true(v.pass);
    assert_false(v.ev.resumed);
    assert_int_equal(v.ev.version, version);
    tls_cache_stats(cache, &st);
    assert_int_equal(st.misses, 1);
    assert_true(st.stores >= 1);
    assert_int_equal(st.entries, 1);

    assert_int_equal(connect_once(cctx, sctx, cache, MX_NAME, "mx.floormta.test:25", &v), 0);
    assert_true(v.pass);
    assert_true(v.ev.resumed);
    assert_int_equal(v.ev.version, version);
    /* The resumed chain was judged again: the evidence is complete. */
    assert_true(v.ev.has_cert);
    assert_string_equal(v.ev.sans, MX_NAME);
    tls_cache_stats(cache, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.entries, 1);
    uint64_t stores = st.stores;

    /* A single-use ticket left the cache when offered; a fresh one replaced it. */
    SSL_SESSION *sess = tls_cache_take(cache, "mx.floormta.test:25");
    assert_non_null(sess);
    assert_int_equal(SSL_SESSION_should_be_single_use(sess), single_use);
    SSL_SESSION_free(sess);
    tls_cache_stats(cache, &st);
    assert_int_equal(st.entries, single_use ? 0 : 1);
    assert_int_equal(st.stores, stores);

    /* Another destination does not get this session. */
    assert_int_equal(connect_once(cctx, sctx, cache, MX_NAME, "mx2.floormta.test:25", &v), 0);
    assert_false(v.ev.resumed);
    tls_cache_stats(cache, &st);
    assert_int_equal(st.misses, 2);

    tls_cache_free(cache);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

static void test_resume_tls13(void **state)
{
    (void)state;
    resume(0, TLS_VERSION_1_3, true);
}

static void test_resume_tls12(void **state)
{
    (void)state;
    resume(TLS_VERSION_1_2, TLS_VERSION_1_2, false);
}

/* A resumed session is judged like a new one: offered to a name its certificate does
 * not cover, the resumption completes at the TLS level but the verdict refuses. */
static void test_resume_rejudged(void **state)
{
    (void)state;
    struct tls_ctx *cctx = client_ctx(0);
    struct tls_ctx *sctx = server_ctx("valid", 0, TLS_VERSION_1_2, NULL);
    struct tls_cache *cache = NULL;
    struct tls_verdict v;
    assert_int_equal(tls_cache_new(4, &cache), 0);
    assert_int_equal(connect_once(cctx, sctx, cache, MX_NAME, "shared-key", &v), 0);
    assert_int_equal(connect_once(cctx, sctx, cache, "other.floormta.test", "shared-key", &v),
                     TLS_ERR_HANDSHAKE);
    assert_true(v.ev.resumed);
    assert_false(v.pass);
    assert_int_equal(v.reason, TLS_REASON_HOSTNAME_MISMATCH);
    tls_cache_free(cache);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

/* Refused handshakes store nothing. */
static void test_refused_not_stored(void **state)
{
    (void)state;
    struct tls_ctx *cctx = client_ctx(0);
    struct tls_ctx *sctx = server_ctx("wrong-name", 0, TLS_VERSION_1_2, NULL);
    struct tls_cache *cache = NULL;
    struct tls_cache_stats st;
    struct tls_verdict v;
    assert_int_equal(tls_cache_new(4, &cache), 0);
    assert_int_equal(connect_once(cctx, sctx, cache, MX_NAME, NULL, &v), TLS_ERR_HANDSHAKE);
    tls_cache_stats(cache, &st);
    assert_int_equal(st.stores, 0);
    assert_int_equal(st.entries, 0);
    tls_cache_free(cache);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

/* Real handshakes against three destinations with room for two. */
static void test_bound_handshakes(void **state)
{
    (void)state;
    struct tls_ctx *cctx = client_ctx(0);
    struct tls_ctx *sctx = server_ctx("valid", 0, TLS_VERSION_1_2, NULL);
    struct tls_cache *cache = NULL;
    struct tls_cache_stats st;
    struct tls_verdict v;
    assert_int_equal(tls_cache_new(2, &cache), 0);
    const char *keys[] = { "a:25", "b:25", "c:25" };
    for (int i = 0; i < 3; i++)
        assert_int_equal(connect_once(cctx, sctx, cache, MX_NAME, keys[i], &v), 0);
    tls_cache_stats(cache, &st);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.evictions, 1);
    /* "a" was least recently used: gone; "c" resumes. */
    assert_int_equal(connect_once(cctx, sctx, cache, MX_NAME, "a:25", &v), 0);
    assert_false(v.ev.resumed);
    assert_int_equal(connect_once(cctx, sctx, cache, MX_NAME, "c:25", &v), 0);
    assert_true(v.ev.resumed);
    tls_cache_free(cache);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

/* A chain verified once is remembered for its name: a second full handshake (another
 * cache key, so no session to resume) and a resumption skip verification, with the same
 * complete evidence. Another name, another context or a refused chain never reuse it. */
static void test_verified_chain_memo(void **state)
{
    (void)state;
    struct tls_ctx *cctx = client_ctx(0);
    struct tls_ctx *cctx2 = client_ctx(0);
    struct tls_ctx *sctx = server_ctx("wildcard", 0, 0, NULL);
    struct tls_ctx *bad = server_ctx("expired", 0, 0, NULL);
    struct tls_cache *cache = NULL;
    struct tls_cache_stats st;
    struct tls_verdict v, first;
    assert_int_equal(tls_cache_new(8, &cache), 0);

    assert_int_equal(connect_once(cctx, sctx, cache, MX_NAME, "a:25", &first), 0);
    tls_cache_stats(cache, &st);
    assert_int_equal(st.verify_misses, 1);
    assert_int_equal(st.verify_hits, 0);

    assert_int_equal(connect_once(cctx, sctx, cache, MX_NAME, "b:25", &v), 0);
    assert_true(v.pass);
    assert_false(v.ev.resumed);
    assert_string_equal(v.ev.subject, first.ev.subject);
    assert_memory_equal(v.ev.sha256, first.ev.sha256, sizeof(v.ev.sha256));
    assert_int_equal(v.ev.version, first.ev.version);
    tls_cache_stats(cache, &st);
    assert_int_equal(st.verify_hits, 1);

    assert_int_equal(connect_once(cctx, sctx, cache, MX_NAME, "a:25", &v), 0);
    assert_true(v.ev.resumed);
    tls_cache_stats(cache, &st);
    assert_int_equal(st.verify_hits, 2);

    /* Same chain, another name the wildcard covers: judged in full. */
    assert_int_equal(connect_once(cctx, sctx, cache, "mx9.floormta.test", "c:25", &v), 0);
    tls_cache_stats(cache, &st);
    assert_int_equal(st.verify_misses, 2);
    /* Another context (a reloaded trust store): judged in full. */
    assert_int_equal(connect_once(cctx2, sctx, cache, MX_NAME, "d:25", &v), 0);
    tls_cache_stats(cache, &st);
    assert_int_equal(st.verify_misses, 3);

    /* A refused chain is judged every time. */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(connect_once(cctx, bad, cache, MX_NAME, "e:25", &v), TLS_ERR_HANDSHAKE);
        assert_int_equal(v.reason, TLS_REASON_CERT_EXPIRED);
    }
    tls_cache_stats(cache, &st);
    assert_int_equal(st.verify_misses, 5);
    assert_int_equal(st.verify_hits, 2);

    tls_cache_free(cache);
    tls_ctx_free(bad);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx2);
    tls_ctx_free(cctx);
}

/* The memo's own rules: a verdict is kept until the chain's earliest notAfter at most,
 * and never a refusal. */
static void test_memo_validity(void **state)
{
    (void)state;
    struct tls_memo *m = NULL;
    assert_int_equal(tls_memo_new(4, &m), 0);
    uint8_t d[TLS_MEMO_DIGEST_LEN] = { 1, 2, 3 };
    struct tls_verdict v, out;
    tls_verdict_clear(&v);
    v.pass = true;
    strcpy(v.ev.subject, "CN=x");

    tls_memo_put(m, d, 1000, 1100, &v);
    assert_true(tls_memo_get(m, d, 1099, &out));
    assert_string_equal(out.ev.subject, "CN=x");
    assert_false(tls_memo_get(m, d, 1100, &out)); /* the chain expired */
    assert_false(tls_memo_get(m, d, 1050, &out)); /* and the slot was dropped */

    tls_memo_put(m, d, 1000, 0, &v); /* no chain date: the memo's own TTL */
    assert_true(tls_memo_get(m, d, 1000 + TLS_MEMO_TTL - 1, &out));
    assert_false(tls_memo_get(m, d, 1000 + TLS_MEMO_TTL, &out));

    uint8_t d2[TLS_MEMO_DIGEST_LEN] = { 9 };
    v.pass = false;
    tls_memo_put(m, d2, 1000, 5000, &v);
    assert_false(tls_memo_get(m, d2, 1001, &out));
    tls_memo_free(m);
}

static SSL_SESSION *session_at(SSL_CTX *ctx, uint64_t when, uint32_t timeout)
{
    SSL_SESSION *s = SSL_SESSION_new(ctx);
    assert_non_null(s);
    SSL_SESSION_set_time(s, when);
    SSL_SESSION_set_timeout(s, timeout);
    return s;
}

static void test_lru_order(void **state)
{
    (void)state;
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    struct tls_cache *cache = NULL;
    struct tls_cache_stats st;
    uint64_t now = (uint64_t)time(NULL);
    SSL_SESSION *s1 = session_at(ctx, now, 3600), *s2 = session_at(ctx, now, 3600);
    SSL_SESSION *s3 = session_at(ctx, now, 3600);

    assert_int_equal(tls_cache_new(0, &cache), -EINVAL);
    assert_int_equal(tls_cache_new(2, &cache), 0);
    tls_cache_put(cache, "one", s1);
    tls_cache_put(cache, "two", s2);
    /* Using "one" makes "two" the least recently used. */
    SSL_SESSION *got = tls_cache_take(cache, "one");
    assert_ptr_equal(got, s1);
    SSL_SESSION_free(got);
    tls_cache_put(cache, "three", s3);
    tls_cache_stats(cache, &st);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.entries, 2);
    assert_null(tls_cache_take(cache, "two"));
    got = tls_cache_take(cache, "three");
    assert_ptr_equal(got, s3);
    SSL_SESSION_free(got);
    /* Storing under an existing key replaces, without eviction. */
    tls_cache_put(cache, "three", s1);
    got = tls_cache_take(cache, "three");
    assert_ptr_equal(got, s1);
    SSL_SESSION_free(got);
    tls_cache_stats(cache, &st);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.stores, 4);
    assert_int_equal(st.hits, 3);
    assert_int_equal(st.misses, 1);

    /* Many keys through a small cache: bounded, and every session freed (ASan). */
    char key[32];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        tls_cache_put(cache, key, s2);
    }
    tls_cache_stats(cache, &st);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.evictions, 1 + 100);

    tls_cache_free(cache);
    SSL_SESSION_free(s1);
    SSL_SESSION_free(s2);
    SSL_SESSION_free(s3);
    SSL_CTX_free(ctx);
}

static void test_expiry(void **state)
{
    (void)state;
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    struct tls_cache *cache = NULL;
    struct tls_cache_stats st;
    uint64_t now = (uint64_t)time(NULL);
    SSL_SESSION *old = session_at(ctx, now - 7200, 3600);
    SSL_SESSION *fresh = session_at(ctx, now - 60, 3600);

    assert_int_equal(tls_cache_new(4, &cache), 0);
    tls_cache_put(cache, "old", old);
    tls_cache_put(cache, "fresh", fresh);
    assert_null(tls_cache_take(cache, "old"));
    SSL_SESSION *got = tls_cache_take(cache, "fresh");
    assert_ptr_equal(got, fresh);
    SSL_SESSION_free(got);
    tls_cache_stats(cache, &st);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.entries, 1);

    /* A key too long to keep is simply not cached. */
    char long_key[TLS_CACHE_KEY_MAX + 8];
    memset(long_key, 'x', sizeof(long_key) - 1);
    long_key[sizeof(long_key) - 1] = '\0';
    tls_cache_put(cache, long_key, fresh);
    assert_null(tls_cache_take(cache, long_key));

    tls_cache_free(cache);
    SSL_SESSION_free(old);
    SSL_SESSION_free(fresh);
    SSL_CTX_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_tls13),     cmocka_unit_test(test_resume_tls12),
        cmocka_unit_test(test_resume_rejudged),  cmocka_unit_test(test_refused_not_stored),
        cmocka_unit_test(test_bound_handshakes), cmocka_unit_test(test_lru_order),
        cmocka_unit_test(test_expiry),           cmocka_unit_test(test_verified_chain_memo),
        cmocka_unit_test(test_memo_validity),
    };
    return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
