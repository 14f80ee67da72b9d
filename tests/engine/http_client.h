/*
 * tests/engine/http_client.h — a raw HTTP/1.1 client for the HTTP server tests.
 *
 * The server runs on an eng_loop in the test thread, so the client never blocks: it
 * sends with plain send(2) (requests are small) and reads with MSG_DONTWAIT between
 * eng_loop_run_once calls until the server closes the connection (every request says
 * "Connection: close") or the deadline passes.
 */
#ifndef FLOORMTA_TESTS_HTTP_CLIENT_H
#define FLOORMTA_TESTS_HTTP_CLIENT_H

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine/loop.h"

#define HC_RESP_MAX (256 * 1024)

struct hc_conn {
    int fd;
    char *buf; /* the response so far, NUL-terminated */
    size_t len;
    bool eof;
};

static inline uint64_t hc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline int hc_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        abort();
    return fd;
}

static inline void hc_send(struct hc_conn *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            return; /* the server may have closed early (413): read what it said */
        p += n;
        len -= (size_t)n;
    }
}

static inline void hc_open(struct hc_conn *c, uint16_t port)
{
    c->fd = hc_connect(port);
    c->buf = calloc(1, HC_RESP_MAX + 1);
    c->len = 0;
    c->eof = false;
}

/* Reads what is there; returns true once the server closed. */
static inline bool hc_poll(struct hc_conn *c)
{
    while (!c->eof && c->len < HC_RESP_MAX) {
        ssize_t n = recv(c->fd, c->buf + c->len, HC_RESP_MAX - c->len, MSG_DONTWAIT);
        if (n > 0) {
            c->len += (size_t)n;
            c->buf[c->len] = '\0';
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            c->eof = true;
        } else {
            break;
        }
    }
    return c->eof;
}

static inline void hc_close(struct hc_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
}

/* Runs the loop until every conn has seen EOF or ms pass. Returns true if all did. */
static inline bool hc_wait(struct eng_loop *loop, struct hc_conn *cs, unsigned n, unsigned ms)
{
    uint64_t end = hc_now_ms() + ms;
    for (;;) {
        bool all = true;
        for (unsigned i = 0; i < n; i++)
            all &= hc_poll(&cs[i]);
        if (all)
            return true;
        if (hc_now_ms() >= end)
            return false;
        eng_loop_run_once(loop, 10);
    }
}

/* The status code of a response, or 0. */
static inline int hc_status(const struct hc_conn *c)
{
    int st = 0;
    if (sscanf(c->buf, "HTTP/1.%*d %d", &st) != 1)
        return 0;
    return st;
}

/* The body of a response (after the blank line), or "". */
static inline const char *hc_body(const struct hc_conn *c)
{
    const char *p = strstr(c->buf, "\r\n\r\n");
    return p ? p + 4 : "";
}

/* One request, one response: sends req (Connection: close is up to the caller). */
static inline int hc_request(struct eng_loop *loop, uint16_t port, const char *req,
                             struct hc_conn *c)
{
    hc_open(c, port);
    hc_send(c, req, strlen(req));
    return hc_wait(loop, c, 1, 5000) ? hc_status(c) : -1;
}

#endif /* FLOORMTA_TESTS_HTTP_CLIENT_H */
