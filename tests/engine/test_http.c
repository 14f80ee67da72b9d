/*
 * tests/engine/test_http.c — the HTTP server (engine/http.h) on a real eng_loop and real
 * sockets on 127.0.0.1: routing, 404/405, request views, 413 for declared and chunked
 * oversize bodies, deferred replies, the slow-client timeout, many connections at once
 * and shutdown with a deferred request. Exits 77 when io_uring is not available.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/http.h"
#include "engine/loop.h"
#include "tests/engine/http_client.h"

struct fx {
    struct eng_loop *loop;
    struct eng_http *srv;
    uint16_t port;
    struct eng_http_req *held; /* a deferred request */
    eng_handle_t timer;
    int held_calls;
};

static void h_hello(void *arg, struct eng_http_req *req)
{
    (void)arg;
    char body[256];
    const char *q = eng_http_req_query(req, "name");
    const char *h = eng_http_req_header(req, "x-test");
    int n = snprintf(body, sizeof body, "hello %s %s %s", q ? q : "-", h ? h : "-",
                     eng_http_req_path(req));
    eng_http_add_header(req, "X-Reply", "yes");
    eng_http_reply(req, 200, "text/plain", body, (size_t)n);
}

static void h_echo(void *arg, struct eng_http_req *req)
{
    (void)arg;
    size_t len;
    const char *b = eng_http_req_body(req, &len);
    eng_http_reply(req, 200, "application/octet-stream", b, len);
}

static void h_silent(void *arg, struct eng_http_req *req)
{
    (void)arg;
    (void)req;
}

static void on_timer(void *ctx, const struct eng_completion *c)
{
    struct fx *f = ctx;
    if (c->res == -ECANCELED || !f->held)
        return;
    struct eng_http_req *r = f->held;
    f->held = NULL;
    assert_int_equal(eng_http_reply(r, 202, "text/plain", "later", 5), 0);
}

static const struct eng_handle_ops timer_ops = { on_timer, NULL };

static void h_later(void *arg, struct eng_http_req *req)
{
    struct fx *f = arg;
    f->held = req;
    f->held_calls++;
    eng_http_defer(req);
    assert_int_equal(eng_op_timer(f->loop, f->timer, 200), 0);
}

static void h_hold(void *arg, struct eng_http_req *req)
{
    struct fx *f = arg;
    f->held = req;
    eng_http_defer(req);
}

static const struct eng_http_route routes[] = {
    { "GET", "/hello", false, h_hello }, { "POST", "/echo", false, h_echo },
    { "PUT", "/echo", false, h_echo },   { "GET", "/silent", false, h_silent },
    { "GET", "/later", false, h_later }, { "GET", "/hold", false, h_hold },
    { NULL, "/any/", true, h_hello },
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_int_equal(eng_loop_new(NULL, &f->loop), 0);
    struct eng_http_config cfg = {
        .loop = f->loop,
        .listen = "127.0.0.1:0",
        .timeout_s = 1,
        .max_body = 1024,
        .max_conns = 200,
        .max_conns_ip = 200,
        .routes = routes,
        .nroutes = sizeof routes / sizeof routes[0],
        .arg = f,
    };
    assert_int_equal(eng_http_new(&cfg, &f->srv), 0);
    f->port = eng_http_port(f->srv);
    assert_true(f->port > 0);
    assert_int_equal(eng_handle_open(f->loop, -1, &timer_ops, f, &f->timer), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    f->held = NULL;
    eng_http_free(f->srv);
    eng_handle_close(f->loop, f->timer);
    eng_loop_free(f->loop);
    free(f);
    return 0;
}

static void test_routing(void **state)
{
    struct fx *f = *state;
    struct hc_conn c;
    assert_int_equal(hc_request(f->loop, f->port,
                                "GET /hello?name=bob HTTP/1.1\r\nHost: x\r\nX-Test: t1\r\n"
                                "Connection: close\r\n\r\n",
                                &c),
                     200);
    assert_non_null(strstr(c.buf, "X-Reply: yes"));
    assert_non_null(strstr(c.buf, "Content-Type: text/plain"));
    assert_string_equal(hc_body(&c), "hello bob t1 /hello");
    hc_close(&c);

    assert_int_equal(
            hc_request(f->loop, f->port,
                       "DELETE /any/thing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &c),
            200);
    assert_string_equal(hc_body(&c), "hello - - /any/thing");
    hc_close(&c);

    assert_int_equal(hc_request(f->loop, f->port,
                                "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &c),
                     404);
    assert_non_null(strstr(hc_body(&c), "\"error\""));
    hc_close(&c);

    assert_int_equal(hc_request(f->loop, f->port,
                                "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &c),
                     405);
    assert_non_null(strstr(c.buf, "Allow: POST, PUT"));
    hc_close(&c);

    /* A handler that forgets to answer gets a 500 sent for it. */
    assert_int_equal(hc_request(f->loop, f->port,
                                "GET /silent HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &c),
                     500);
    hc_close(&c);

    struct eng_http_stats st;
    eng_http_stats(f->srv, &st);
    assert_int_equal(st.requests, 5);
    assert_int_equal(st.not_found, 1);
    assert_int_equal(st.bad_method, 1);
}

static void test_body_and_limits(void **state)
{
    struct fx *f = *state;
    struct hc_conn c;
    assert_int_equal(hc_request(f->loop, f->port,
                                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n"
                                "Connection: close\r\n\r\nhello world",
                                &c),
                     200);
    assert_string_equal(hc_body(&c), "hello world");
    hc_close(&c);

    /* Declared too big: refused before the body is read. */
    assert_int_equal(hc_request(f->loop, f->port,
                                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                                "Connection: close\r\n\r\n",
                                &c),
                     413);
    hc_close(&c);

    /* Chunked, no length: found out while reading. */
    char big[4096];
    int n = snprintf(big, sizeof big,
                     "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     "Connection: close\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        n += snprintf(big + n, sizeof big - (size_t)n, "200\r\n");
        memset(big + n, 'a', 512);
        n += 512;
        n += snprintf(big + n, sizeof big - (size_t)n, "\r\n");
    }
    n += snprintf(big + n, sizeof big - (size_t)n, "0\r\n\r\n");
    assert_int_equal(hc_request(f->loop, f->port, big, &c), 413);
    hc_close(&c);

    /* An oversize header block: MHD answers it (431) without calling us. */
    char *hdr = malloc(64 * 1024);
    n = snprintf(hdr, 64 * 1024, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(hdr + n, 'b', 40000);
    n += 40000;
    snprintf(hdr + n, 64 * 1024 - (size_t)n, "\r\nConnection: close\r\n\r\n");
    int st = hc_request(f->loop, f->port, hdr, &c);
    assert_true(st == 431 || st == 413 || st == 0);
    hc_close(&c);
    free(hdr);

    struct eng_http_stats hs;
    eng_http_stats(f->srv, &hs);
    assert_int_equal(hs.too_large, 2);
}

static void test_deferred(void **state)
{
    struct fx *f = *state;
    struct hc_conn c;
    hc_open(&c, f->port);
    const char *req = "GET /later HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    hc_send(&c, req, strlen(req));
    /* Not answered before the timer. */
    assert_false(hc_wait(f->loop, &c, 1, 100));
    assert_int_equal(c.len, 0);
    assert_int_equal(f->held_calls, 1);
    struct eng_http_stats st;
    eng_http_stats(f->srv, &st);
    assert_int_equal(st.pending, 1);
    uint64_t t0 = hc_now_ms();
    assert_true(hc_wait(f->loop, &c, 1, 2000));
    assert_true(hc_now_ms() - t0 < 1000);
    assert_int_equal(hc_status(&c), 202);
    assert_string_equal(hc_body(&c), "later");
    eng_http_stats(f->srv, &st);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.deferred, 1);
    hc_close(&c);
}

static void test_slow_client(void **state)
{
    struct fx *f = *state;
    struct hc_conn c;
    hc_open(&c, f->port);
    hc_send(&c, "GET /hel", 8); /* and nothing more */
    uint64_t t0 = hc_now_ms();
    assert_true(hc_wait(f->loop, &c, 1, 5000));
    uint64_t took = hc_now_ms() - t0;
    assert_true(took >= 800 && took < 3500);
    hc_close(&c);
}

#define MANY 100

static void test_many(void **state)
{
    struct fx *f = *state;
    struct hc_conn *cs = calloc(MANY, sizeof *cs);
    const char *req = "GET /hello?name=m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for (int i = 0; i < MANY; i++) {
        hc_open(&cs[i], f->port);
        hc_send(&cs[i], req, strlen(req));
    }
    assert_true(hc_wait(f->loop, cs, MANY, 10000));
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(hc_status(&cs[i]), 200);
        hc_close(&cs[i]);
    }
    free(cs);
}

/* Keep-alive: two requests, one after the other, on one connection. */
static void test_keepalive(void **state)
{
    struct fx *f = *state;
    struct hc_conn c;
    hc_open(&c, f->port);
    const char *r1 = "GET /hello?name=a HTTP/1.1\r\nHost: x\r\n\r\n";
    const char *r2 = "GET /hello?name=b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    hc_send(&c, r1, strlen(r1));
    /* The second request goes once the first is answered (pipelining is not tested:
     * a pipelined second request was seen to go unanswered once in 0.9.75). */
    uint64_t end = hc_now_ms() + 5000;
    while (!strstr(c.buf, "hello a - /hello") && hc_now_ms() < end) {
        eng_loop_run_once(f->loop, 10);
        hc_poll(&c);
    }
    assert_false(c.eof);
    hc_send(&c, r2, strlen(r2));
    assert_true(hc_wait(f->loop, &c, 1, 5000));
    assert_non_null(strstr(c.buf, "hello a - /hello"));
    assert_non_null(strstr(c.buf, "hello b - /hello"));
    hc_close(&c);
}

/* Freeing the server answers a deferred request with 503. */
static void test_free_with_deferred(void **state)
{
    struct fx *f = *state;
    struct hc_conn c;
    hc_open(&c, f->port);
    const char *req = "GET /hold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    hc_send(&c, req, strlen(req));
    hc_wait(f->loop, &c, 1, 200);
    assert_non_null(f->held);
    f->held = NULL; /* the handler forgets it, as eng_http_free requires */
    eng_http_free(f->srv);
    f->srv = NULL;
    hc_poll(&c);
    if (c.len > 0)
        assert_int_equal(hc_status(&c), 503);
    hc_close(&c);
}

int main(void)
{
    struct eng_loop *probe;
    if (eng_loop_new(NULL, &probe) < 0) {
        fprintf(stderr, "io_uring not available: skipping\n");
        return 77;
    }
    eng_loop_free(probe);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_routing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_and_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_deferred, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
