/*
 * tests/engine/test_loop.c — the io_uring reactor (engine/loop.h) against real
 * sockets on 127.0.0.1 and socketpairs: timers, recv/send, connect, multishot accept,
 * linked timeouts, cancellation, close/release ordering, stale ids, and a stress run.
 * Exits 77 when io_uring is not available.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/loop.h"

#define MAX_EVENTS 64

/* One handle's record of what the loop did to it. */
struct rec {
    struct eng_loop *loop;
    eng_handle_t h;
    int calls;
    int res[MAX_EVENTS];
    enum eng_op_kind op[MAX_EVENTS];
    bool more[MAX_EVENTS];
    bool closed; /* eng_handle_close was called */
    int late;    /* completions after close */
    int released;
    bool in_callback;          /* on_complete is on the stack */
    int release_in_cb;         /* on_release ran inside on_complete's frame */
    int released_at_close;     /* released, read right after an in-callback close */
    enum eng_op_kind close_on; /* close the handle from the callback of this kind ... */
    bool close_in_cb;          /* ... when set */
    bool stop_in_cb;           /* eng_loop_stop from the callback */
};

static void rec_complete(void *ctx, const struct eng_completion *comp)
{
    struct rec *r = ctx;
    r->in_callback = true;
    if (r->closed)
        r->late++;
    if (r->calls < MAX_EVENTS) {
        r->res[r->calls] = comp->res;
        r->op[r->calls] = comp->op;
        r->more[r->calls] = comp->more;
    }
    r->calls++;
    if (r->close_in_cb && comp->op == r->close_on && !r->closed) {
        r->closed = true;
        eng_handle_close(comp->loop, comp->handle);
        r->released_at_close = r->released;
    }
    if (r->stop_in_cb)
        eng_loop_stop(comp->loop);
    r->in_callback = false;
}

static void rec_release(void *ctx)
{
    struct rec *r = ctx;
    if (r->in_callback)
        r->release_in_cb++;
    r->released++;
}

static const struct eng_handle_ops rec_ops = {
    .on_complete = rec_complete,
    .on_release = rec_release,
};

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Runs the loop until cond holds, for at most 5 s, then asserts cond. */
#define RUN_UNTIL(loop, cond)                                \
    do {                                                     \
        uint64_t deadline_ = mono_us() + 5000000u;           \
        while (!(cond) && mono_us() < deadline_)             \
            assert_true(eng_loop_run_once((loop), 50) >= 0); \
        assert_true(cond);                                   \
    } while (0)

/* A few more iterations, to let anything that should not happen happen. */
static void run_idle(struct eng_loop *loop, int rounds)
{
    for (int i = 0; i < rounds; i++)
        assert_true(eng_loop_run_once(loop, 10) >= 0);
}

static void rec_open(struct eng_loop *loop, struct rec *r, int fd)
{
    memset(r, 0, sizeof(*r));
    r->loop = loop;
    assert_int_equal(eng_handle_open(loop, fd, &rec_ops, r, &r->h), 0);
    assert_true(r->h != 0);
    assert_true(eng_handle_alive(loop, r->h));
}

static void rec_close(struct rec *r)
{
    r->closed = true;
    eng_handle_close(r->loop, r->h);
    assert_int_equal(r->released, 0); /* never synchronously */
    RUN_UNTIL(r->loop, r->released == 1);
}

static void make_pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

/* A TCP listener on 127.0.0.1, port chosen by the kernel. */
static int make_listener(struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    memset(addr, 0, sizeof(*addr));
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)addr, sizeof(*addr)), 0);
    socklen_t len = sizeof(*addr);
    assert_int_equal(getsockname(fd, (struct sockaddr *)addr, &len), 0);
    assert_int_equal(listen(fd, 64), 0);
    return fd;
}

static int setup_loop(void **state)
{
    struct eng_loop_config cfg = { .entries = 64, .max_handles = 64 };
    struct eng_loop *loop;
    if (eng_loop_new(&cfg, &loop) != 0)
        return -1;
    *state = loop;
    return 0;
}

static int teardown_loop(void **state)
{
    struct eng_loop *loop = *state;
    struct eng_loop_stats st;
    eng_loop_stats(loop, &st);
    eng_loop_free(loop);
    return st.handles == 0 ? 0 : -1; /* every test releases what it opened */
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(eng_strerror(ENG_ERR_STALE), "handle is closed or stale");
    assert_string_equal(eng_strerror(ENG_ERR_FULL), "no free handle slot");
    assert_string_equal(eng_strerror(ENG_ERR_URING), "io_uring is not available");
    assert_string_equal(eng_strerror(-ECONNREFUSED), strerror(ECONNREFUSED));
    assert_string_equal(eng_strerror(-99999), "unknown error");
    assert_string_equal(eng_strerror(12345), "unknown error");
    assert_string_equal(eng_op_name(ENG_OP_CONNECT), "connect");
    assert_string_equal(eng_op_name(ENG_OP_ACCEPT), "accept");
    assert_string_equal(eng_op_name((enum eng_op_kind)99), "unknown");
}

static void test_timer_fires(void **state)
{
    struct eng_loop *loop = *state;
    struct rec r;
    rec_open(loop, &r, -1);
    uint64_t now0 = eng_loop_now_ms(loop);
    uint64_t t0 = mono_us();
    assert_int_equal(eng_op_timer(loop, r.h, 50), 0);
    assert_true(eng_handle_busy(loop, r.h, ENG_OP_TIMER));
    RUN_UNTIL(loop, r.calls == 1);
    uint64_t elapsed = mono_us() - t0;
    assert_int_equal(r.op[0], ENG_OP_TIMER);
    assert_int_equal(r.res[0], 0);
    assert_true(elapsed >= 50000);
    assert_true(elapsed < 3000000);
    assert_true(eng_loop_now_ms(loop) - now0 >= 50);
    assert_false(eng_handle_busy(loop, r.h, ENG_OP_TIMER));
    rec_close(&r);
}

static void test_recv_data(void **state)
{
    struct eng_loop *loop = *state;
    int sv[2];
    make_pair(sv);
    struct rec r;
    rec_open(loop, &r, sv[0]);
    char buf[64];
    assert_int_equal(eng_op_recv(loop, r.h, buf, sizeof(buf), 2000), 0);
    assert_int_equal(write(sv[1], "hello", 5), 5);
    RUN_UNTIL(loop, r.calls == 1);
    assert_int_equal(r.op[0], ENG_OP_RECV);
    assert_int_equal(r.res[0], 5);
    assert_memory_equal(buf, "hello", 5);
    rec_close(&r);
    close(sv[0]);
    close(sv[1]);
}

static void test_recv_timeout(void **state)
{
    struct eng_loop *loop = *state;
    int sv[2];
    make_pair(sv);
    struct rec r;
    rec_open(loop, &r, sv[0]);
    struct eng_loop_stats before, after;
    eng_loop_stats(loop, &before);
    char buf[16];
    uint64_t t0 = mono_us();
    assert_int_equal(eng_op_recv(loop, r.h, buf, sizeof(buf), 100), 0);
    RUN_UNTIL(loop, r.calls == 1);
    assert_int_equal(r.res[0], -ETIMEDOUT);
    assert_true(mono_us() - t0 >= 100000);
    eng_loop_stats(loop, &after);
    assert_int_equal(after.timeouts, before.timeouts + 1);
    assert_int_equal(after.submitted, before.submitted + 1);
    /* The handle is usable again: data now arrives on a fresh recv. */
    assert_int_equal(eng_op_recv(loop, r.h, buf, sizeof(buf), 2000), 0);
    assert_int_equal(write(sv[1], "x", 1), 1);
    RUN_UNTIL(loop, r.calls == 2);
    assert_int_equal(r.res[1], 1);
    rec_close(&r);
    close(sv[0]);
    close(sv[1]);
}

static void test_send_recv_roundtrip(void **state)
{
    struct eng_loop *loop = *state;
    int sv[2];
    make_pair(sv);
    struct rec a, b;
    rec_open(loop, &a, sv[0]);
    rec_open(loop, &b, sv[1]);
    char abuf[16] = { 0 }, bbuf[16] = { 0 };

    assert_int_equal(eng_op_recv(loop, b.h, bbuf, sizeof(bbuf), 2000), 0);
    assert_int_equal(eng_op_send(loop, a.h, "ping", 4, 2000), 0);
    RUN_UNTIL(loop, a.calls == 1 && b.calls == 1);
    assert_int_equal(a.op[0], ENG_OP_SEND);
    assert_int_equal(a.res[0], 4);
    assert_int_equal(b.res[0], 4);
    assert_memory_equal(bbuf, "ping", 4);

    assert_int_equal(eng_op_recv(loop, a.h, abuf, sizeof(abuf), 2000), 0);
    assert_int_equal(eng_op_send(loop, b.h, "pong", 4, 2000), 0);
    RUN_UNTIL(loop, a.calls == 2 && b.calls == 2);
    assert_int_equal(a.res[1], 4);
    assert_memory_equal(abuf, "pong", 4);
    assert_int_equal(b.res[1], 4);

    rec_close(&a);
    rec_close(&b);
    close(sv[0]);
    close(sv[1]);
}

static void test_connect(void **state)
{
    struct eng_loop *loop = *state;
    struct sockaddr_in addr;
    int lfd = make_listener(&addr);
    int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct rec r;
    rec_open(loop, &r, cfd);
    assert_int_equal(eng_op_connect(loop, r.h, (struct sockaddr *)&addr, sizeof(addr), 2000), 0);
    memset(&addr, 0, sizeof(addr)); /* the loop keeps its own copy */
    RUN_UNTIL(loop, r.calls == 1);
    assert_int_equal(r.op[0], ENG_OP_CONNECT);
    assert_int_equal(r.res[0], 0);
    int afd = accept(lfd, NULL, NULL);
    assert_true(afd >= 0);
    rec_close(&r);
    close(afd);
    close(cfd);
    close(lfd);
}

static void test_connect_refused(void **state)
{
    struct eng_loop *loop = *state;
    struct sockaddr_in addr;
    int lfd = make_listener(&addr);
    close(lfd); /* nothing listens on that port now */
    int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct rec r;
    rec_open(loop, &r, cfd);
    assert_int_equal(eng_op_connect(loop, r.h, (struct sockaddr *)&addr, sizeof(addr), 2000), 0);
    RUN_UNTIL(loop, r.calls == 1);
    assert_int_equal(r.res[0], -ECONNREFUSED);
    rec_close(&r);
    close(cfd);
}

static void test_accept_multishot(void **state)
{
    struct eng_loop *loop = *state;
    struct sockaddr_in addr;
    int lfd = make_listener(&addr);
    struct rec r;
    rec_open(loop, &r, lfd);
    assert_int_equal(eng_op_accept(loop, r.h), 0);
    int clients[3];
    for (int i = 0; i < 3; i++) {
        clients[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(connect(clients[i], (struct sockaddr *)&addr, sizeof(addr)), 0);
    }
    RUN_UNTIL(loop, r.calls == 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r.op[i], ENG_OP_ACCEPT);
        assert_true(r.res[i] >= 0);
        assert_true(r.more[i]);
        close(r.res[i]);
    }
    assert_true(eng_handle_busy(loop, r.h, ENG_OP_ACCEPT));
    assert_int_equal(eng_op_accept(loop, r.h), -EBUSY);
    /* Cancelling ends the multishot: one last completion without more. */
    assert_int_equal(eng_op_cancel(loop, r.h, ENG_OP_ACCEPT), 0);
    RUN_UNTIL(loop, r.calls == 4);
    assert_int_equal(r.res[3], -ECANCELED);
    assert_false(r.more[3]);
    assert_false(eng_handle_busy(loop, r.h, ENG_OP_ACCEPT));
    rec_close(&r);
    for (int i = 0; i < 3; i++)
        close(clients[i]);
    close(lfd);
}

static void test_cancel(void **state)
{
    struct eng_loop *loop = *state;
    int sv[2];
    make_pair(sv);
    struct rec r;
    rec_open(loop, &r, sv[0]);
    struct eng_loop_stats before, after;
    eng_loop_stats(loop, &before);
    char buf[16];
    assert_int_equal(eng_op_cancel(loop, r.h, ENG_OP_RECV), -ENOENT);
    assert_int_equal(eng_op_recv(loop, r.h, buf, sizeof(buf), 5000), 0);
    assert_int_equal(eng_op_timer(loop, r.h, 5000), 0);
    run_idle(loop, 1); /* both really are in the kernel */
    assert_int_equal(eng_op_cancel(loop, r.h, ENG_OP_RECV), 0);
    assert_int_equal(eng_op_cancel(loop, r.h, ENG_OP_TIMER), 0);
    RUN_UNTIL(loop, r.calls == 2);
    for (int i = 0; i < 2; i++)
        assert_int_equal(r.res[i], -ECANCELED);
    assert_true(r.op[0] != r.op[1]);
    eng_loop_stats(loop, &after);
    assert_int_equal(after.timeouts, before.timeouts);
    assert_int_equal(eng_op_cancel(loop, r.h, ENG_OP_RECV), -ENOENT);
    assert_int_equal(eng_op_cancel(loop, r.h, (enum eng_op_kind)42), -EINVAL);
    rec_close(&r);
    close(sv[0]);
    close(sv[1]);
}

/* A cancel requested before the op ever reached the kernel (same submission batch). */
static void test_cancel_unsubmitted(void **state)
{
    struct eng_loop *loop = *state;
    struct rec r;
    rec_open(loop, &r, -1);
    assert_int_equal(eng_op_timer(loop, r.h, 5000), 0);
    assert_int_equal(eng_op_cancel(loop, r.h, ENG_OP_TIMER), 0);
    RUN_UNTIL(loop, r.calls == 1);
    assert_int_equal(r.res[0], -ECANCELED);
    rec_close(&r);
}

static void test_busy_and_einval(void **state)
{
    struct eng_loop *loop = *state;
    int sv[2];
    make_pair(sv);
    struct rec r;
    rec_open(loop, &r, sv[0]);
    char buf[16];
    assert_int_equal(eng_op_recv(loop, r.h, buf, sizeof(buf), 0), -EINVAL);
    assert_int_equal(eng_op_send(loop, r.h, "x", 1, 0), -EINVAL);
    assert_int_equal(eng_op_connect(loop, r.h, NULL, 0, 100), -EINVAL);
    assert_int_equal(eng_op_recv(loop, r.h, buf, sizeof(buf), 5000), 0);
    assert_int_equal(eng_op_recv(loop, r.h, buf, sizeof(buf), 5000), -EBUSY);
    assert_true(eng_handle_busy(loop, r.h, ENG_OP_RECV));
    assert_false(eng_handle_busy(loop, r.h, ENG_OP_SEND));
    /* Another kind on the same handle is fine. */
    assert_int_equal(eng_op_send(loop, r.h, "x", 1, 5000), 0);
    RUN_UNTIL(loop, r.calls == 1);
    assert_int_equal(r.op[0], ENG_OP_SEND);
    rec_close(&r);
    assert_int_equal(r.calls, 1); /* the recv was cancelled silently */
    close(sv[0]);
    close(sv[1]);
}

static void test_poll(void **state)
{
    struct eng_loop *loop = *state;
    int sv[2];
    make_pair(sv);
    struct rec r;
    rec_open(loop, &r, sv[0]);
    assert_int_equal(eng_op_poll(loop, r.h, POLLIN, 100), 0);
    RUN_UNTIL(loop, r.calls == 1);
    assert_int_equal(r.res[0], -ETIMEDOUT);
    assert_int_equal(write(sv[1], "x", 1), 1);
    assert_int_equal(eng_op_poll(loop, r.h, POLLIN, 0), 0);
    RUN_UNTIL(loop, r.calls == 2);
    assert_true(r.res[1] & POLLIN);
    rec_close(&r);
    close(sv[0]);
    close(sv[1]);
}

static void test_close_inflight(void **state)
{
    struct eng_loop *loop = *state;
    int sv[2];
    make_pair(sv);
    struct rec r;
    rec_open(loop, &r, sv[0]);
    char buf[16];
    assert_int_equal(eng_op_recv(loop, r.h, buf, sizeof(buf), 5000), 0);
    assert_int_equal(eng_op_timer(loop, r.h, 5000), 0);
    run_idle(loop, 1);
    r.closed = true;
    eng_handle_close(loop, r.h);
    assert_int_equal(r.released, 0);
    assert_false(eng_handle_alive(loop, r.h));
    eng_handle_close(loop, r.h); /* closing: a no-op */
    assert_int_equal(write(sv[1], "late", 4), 4);
    RUN_UNTIL(loop, r.released == 1);
    run_idle(loop, 5);
    assert_int_equal(r.released, 1);
    assert_int_equal(r.calls, 0);
    assert_int_equal(r.late, 0);
    close(sv[0]);
    close(sv[1]);
}

/* Close from inside on_complete, with a timer still in flight and with nothing. */
static void test_close_from_callback(void **state)
{
    struct eng_loop *loop = *state;
    int sv[2];
    make_pair(sv);
    struct rec r;
    rec_open(loop, &r, sv[0]);
    r.close_in_cb = true;
    r.close_on = ENG_OP_RECV;
    char buf[16];
    assert_int_equal(eng_op_timer(loop, r.h, 5000), 0);
    assert_int_equal(eng_op_recv(loop, r.h, buf, sizeof(buf), 5000), 0);
    assert_int_equal(write(sv[1], "go", 2), 2);
    RUN_UNTIL(loop, r.released == 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.released_at_close, 0);
    assert_int_equal(r.release_in_cb, 0);
    run_idle(loop, 3);
    assert_int_equal(r.released, 1);
    assert_int_equal(r.late, 0);

    struct rec t;
    rec_open(loop, &t, -1);
    t.close_in_cb = true;
    t.close_on = ENG_OP_TIMER;
    assert_int_equal(eng_op_timer(loop, t.h, 1), 0);
    RUN_UNTIL(loop, t.released == 1);
    assert_int_equal(t.calls, 1);
    assert_int_equal(t.released_at_close, 0);
    assert_int_equal(t.release_in_cb, 0);
    close(sv[0]);
    close(sv[1]);
}

static void test_stale_and_reuse(void **state)
{
    (void)state;
    struct eng_loop_config cfg = { .max_handles = 1 };
    struct eng_loop *loop;
    assert_int_equal(eng_loop_new(&cfg, &loop), 0);
    struct rec a, b;
    rec_open(loop, &a, -1);
    eng_handle_t old = a.h;
    rec_close(&a);
    char buf[4];
    assert_false(eng_handle_alive(loop, old));
    assert_false(eng_handle_busy(loop, old, ENG_OP_RECV));
    assert_int_equal(eng_op_recv(loop, old, buf, sizeof(buf), 100), ENG_ERR_STALE);
    assert_int_equal(eng_op_timer(loop, old, 10), ENG_ERR_STALE);
    assert_int_equal(eng_op_accept(loop, old), ENG_ERR_STALE);
    assert_int_equal(eng_op_cancel(loop, old, ENG_OP_TIMER), ENG_ERR_STALE);
    eng_handle_close(loop, old); /* stale: a no-op */
    assert_false(eng_handle_alive(loop, 0));
    assert_int_equal(eng_op_timer(loop, 0, 10), ENG_ERR_STALE);

    rec_open(loop, &b, -1); /* the only slot, reused */
    assert_true(b.h != old);
    assert_true(eng_handle_alive(loop, b.h));
    assert_false(eng_handle_alive(loop, old));
    assert_int_equal(eng_op_timer(loop, old, 10), ENG_ERR_STALE);
    eng_handle_close(loop, old); /* must not close b */
    assert_true(eng_handle_alive(loop, b.h));
    rec_close(&b);
    assert_int_equal(a.released, 1);
    eng_loop_free(loop);
}

static void test_full(void **state)
{
    (void)state;
    struct eng_loop_config cfg = { .max_handles = 4 };
    struct eng_loop *loop;
    assert_int_equal(eng_loop_new(&cfg, &loop), 0);
    struct rec r[4], extra;
    for (int i = 0; i < 4; i++)
        rec_open(loop, &r[i], -1);
    eng_handle_t h;
    assert_int_equal(eng_handle_open(loop, -1, &rec_ops, &extra, &h), ENG_ERR_FULL);
    rec_close(&r[2]);
    rec_open(loop, &extra, -1);
    struct eng_loop_stats st;
    eng_loop_stats(loop, &st);
    assert_int_equal(st.handles, 4);
    eng_loop_free(loop);
    assert_int_equal(extra.released, 1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(r[i].released, 1);
}

static void test_run_until_released(void **state)
{
    struct eng_loop *loop = *state;
    struct rec a, b;
    rec_open(loop, &a, -1);
    rec_open(loop, &b, -1);
    a.close_in_cb = b.close_in_cb = true;
    a.close_on = b.close_on = ENG_OP_TIMER;
    assert_int_equal(eng_op_timer(loop, a.h, 10), 0);
    assert_int_equal(eng_op_timer(loop, b.h, 30), 0);
    assert_int_equal(eng_loop_run(loop), 0);
    assert_int_equal(a.released, 1);
    assert_int_equal(b.released, 1);
    struct eng_loop_stats st;
    eng_loop_stats(loop, &st);
    assert_int_equal(st.handles, 0);
}

static void test_stop(void **state)
{
    struct eng_loop *loop = *state;
    struct rec r;
    rec_open(loop, &r, -1);
    r.stop_in_cb = true;
    assert_int_equal(eng_op_timer(loop, r.h, 10), 0);
    assert_int_equal(eng_loop_run(loop), 0);
    assert_int_equal(r.calls, 1);
    assert_true(eng_handle_alive(loop, r.h));
    r.closed = true;
    eng_handle_close(loop, r.h);
    assert_int_equal(eng_loop_run(loop), 0); /* returns once released */
    assert_int_equal(r.released, 1);
}

static void test_free_releases_open_handles(void **state)
{
    (void)state;
    struct eng_loop *loop;
    assert_int_equal(eng_loop_new(NULL, &loop), 0);
    int sv[2];
    make_pair(sv);
    struct rec a, b, idle;
    rec_open(loop, &a, sv[0]);
    rec_open(loop, &b, sv[1]);
    rec_open(loop, &idle, -1);
    char abuf[8], bbuf[8];
    assert_int_equal(eng_op_recv(loop, a.h, abuf, sizeof(abuf), 5000), 0);
    assert_int_equal(eng_op_recv(loop, b.h, bbuf, sizeof(bbuf), 5000), 0);
    assert_int_equal(eng_op_timer(loop, a.h, 5000), 0);
    run_idle(loop, 1);
    eng_loop_free(loop);
    assert_int_equal(a.released, 1);
    assert_int_equal(b.released, 1);
    assert_int_equal(idle.released, 1);
    assert_int_equal(a.calls + b.calls + idle.calls, 0);
    close(sv[0]);
    close(sv[1]);
}

/* --- stress: many socketpairs ping-ponging, with timers, cancels and random closes -- */

#define STRESS_PAIRS 500
#define STRESS_TRIPS 200
#define STRESS_MSG   8

struct peer {
    struct eng_loop *loop;
    eng_handle_t h;
    int fd;
    struct peer *other;
    bool initiator;
    bool closed;
    int released;
    int late;   /* completions after close */
    int errors; /* unexpected results */
    int trips;
    size_t rlen;
    char rbuf[STRESS_MSG];
    char sbuf[STRESS_MSG];
};

static struct stress {
    struct peer peers[2 * STRESS_PAIRS];
    uint64_t rng;
    int in_callback;
    int release_in_cb;
    int finished; /* pairs that did all their round trips */
} * S;

static unsigned stress_rand(unsigned n)
{
    S->rng ^= S->rng << 13;
    S->rng ^= S->rng >> 7;
    S->rng ^= S->rng << 17;
    return (unsigned)(S->rng % n);
}

static void peer_close(struct peer *p)
{
    if (p->closed)
        return;
    p->closed = true;
    eng_handle_close(p->loop, p->h);
}

static void peer_arm_recv(struct peer *p)
{
    int ret = eng_op_recv(p->loop, p->h, p->rbuf + p->rlen, STRESS_MSG - p->rlen, 5000);
    if (ret < 0) {
        p->errors++;
        peer_close(p);
    }
}

static void peer_send(struct peer *p)
{
    memset(p->sbuf, 'a' + (p->trips % 26), STRESS_MSG);
    if (eng_op_send(p->loop, p->h, p->sbuf, STRESS_MSG, 5000) < 0) {
        p->errors++;
        peer_close(p);
    }
}

static void peer_arm_timer(struct peer *p)
{
    if (eng_op_timer(p->loop, p->h, 5 + stress_rand(45)) < 0)
        p->errors++;
}

static void peer_on_message(struct peer *p)
{
    p->rlen = 0;
    if (p->initiator && ++p->trips == STRESS_TRIPS) {
        S->finished++;
        peer_close(p);
        return;
    }
    if (stress_rand(5000) == 0) {
        peer_close(p);
        return;
    }
    if (stress_rand(5000) == 0) {
        peer_close(p->other); /* close the peer's handle from our callback */
        peer_arm_recv(p);
        return;
    }
    peer_send(p);
    peer_arm_recv(p);
}

static void peer_on_recv(struct peer *p, int res)
{
    if (res == -ECANCELED) { /* our own eng_op_cancel: the data is still queued */
        peer_arm_recv(p);
        return;
    }
    if (res <= 0) {
        if (res != 0 && res != -ECONNRESET)
            p->errors++;
        peer_close(p);
        return;
    }
    p->rlen += (size_t)res;
    if (p->rlen < STRESS_MSG)
        peer_arm_recv(p);
    else
        peer_on_message(p);
}

static void peer_on_timer(struct peer *p, int res)
{
    if (res != 0) {
        p->errors++;
        return;
    }
    unsigned dice = stress_rand(100);
    if (dice == 0) {
        peer_close(p);
        return;
    }
    if (dice < 10 && eng_handle_busy(p->loop, p->h, ENG_OP_RECV))
        assert_int_equal(eng_op_cancel(p->loop, p->h, ENG_OP_RECV), 0);
    peer_arm_timer(p);
}

static void peer_complete(void *ctx, const struct eng_completion *comp)
{
    struct peer *p = ctx;
    S->in_callback++;
    if (p->closed || p->released)
        p->late++;
    switch (comp->op) {
    case ENG_OP_RECV: peer_on_recv(p, comp->res); break;
    case ENG_OP_TIMER: peer_on_timer(p, comp->res); break;
    case ENG_OP_SEND:
        if (comp->res != STRESS_MSG && comp->res != -EPIPE && comp->res != -ECONNRESET)
            p->errors++;
        break;
    default: p->errors++; break;
    }
    S->in_callback--;
}

static void peer_release(void *ctx)
{
    struct peer *p = ctx;
    if (S->in_callback)
        S->release_in_cb++;
    p->released++;
    close(p->fd); /* the peer now sees EOF and closes too */
}

static const struct eng_handle_ops peer_ops = {
    .on_complete = peer_complete,
    .on_release = peer_release,
};

static void test_stress(void **state)
{
    (void)state;
    S = calloc(1, sizeof(*S));
    assert_non_null(S);
    S->rng = 0x9e3779b97f4a7c15u;
    /* A small SQ so that submission often has to flush in the middle of a batch. */
    struct eng_loop_config cfg = { .entries = 128, .max_handles = 2 * STRESS_PAIRS };
    struct eng_loop *loop;
    assert_int_equal(eng_loop_new(&cfg, &loop), 0);
    for (int i = 0; i < STRESS_PAIRS; i++) {
        int sv[2];
        make_pair(sv);
        for (int k = 0; k < 2; k++) {
            struct peer *p = &S->peers[2 * i + k];
            p->loop = loop;
            p->fd = sv[k];
            p->initiator = k == 0;
            p->other = &S->peers[2 * i + 1 - k];
            assert_int_equal(eng_handle_open(loop, p->fd, &peer_ops, p, &p->h), 0);
        }
    }
    uint64_t t0 = mono_us();
    for (int i = 0; i < 2 * STRESS_PAIRS; i++) {
        struct peer *p = &S->peers[i];
        peer_arm_recv(p);
        peer_arm_timer(p);
        if (p->initiator)
            peer_send(p);
    }
    struct eng_loop_stats st;
    do {
        assert_true(eng_loop_run_once(loop, 100) >= 0);
        eng_loop_stats(loop, &st);
    } while (st.handles > 0 && mono_us() - t0 < 30000000u);
    uint64_t elapsed = mono_us() - t0;
    print_message("stress: %d/%d pairs finished, %llu completions, %llu timeouts, %.2f s\n",
                  S->finished, STRESS_PAIRS, (unsigned long long)st.completed,
                  (unsigned long long)st.timeouts, (double)elapsed / 1e6);
    assert_int_equal(st.handles, 0);
    for (int i = 0; i < 2 * STRESS_PAIRS; i++) {
        struct peer *p = &S->peers[i];
        assert_int_equal(p->released, 1);
        assert_int_equal(p->late, 0);
        assert_int_equal(p->errors, 0);
    }
    assert_int_equal(S->release_in_cb, 0);
    assert_true(S->finished > 0);
    assert_int_equal(st.timeouts, 0);
    assert_true(elapsed < 10000000u);
    eng_loop_free(loop);
    free(S);
    S = NULL;
}

int main(void)
{
    struct eng_loop *probe;
    int ret = eng_loop_new(NULL, &probe);
    if (ret == ENG_ERR_URING) {
        fprintf(stderr, "io_uring not available: skipping\n");
        return 77;
    }
    if (ret != 0) {
        fprintf(stderr, "eng_loop_new: %s\n", eng_strerror(ret));
        return 1;
    }
    eng_loop_free(probe);

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_loop, teardown_loop)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        T(test_timer_fires),
        T(test_recv_data),
        T(test_recv_timeout),
        T(test_send_recv_roundtrip),
        T(test_connect),
        T(test_connect_refused),
        T(test_accept_multishot),
        T(test_cancel),
        T(test_cancel_unsubmitted),
        T(test_busy_and_einval),
        T(test_poll),
        T(test_close_inflight),
        T(test_close_from_callback),
        cmocka_unit_test(test_stale_and_reuse),
        cmocka_unit_test(test_full),
        T(test_run_until_released),
        T(test_stop),
        cmocka_unit_test(test_free_releases_open_handles),
        cmocka_unit_test(test_stress),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}
