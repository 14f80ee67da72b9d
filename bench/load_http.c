/*
 * bench/load_http.c — one floormta-load HTTP API connection (--http): an HTTP/1.1
 * keep-alive client of POST /api/v1/messages (engine/api.h), as an explicit state
 * machine on the same loop as the SMTP sessions (load_session.c).
 *
 *   connect -> [wait for a rate token] -> request -> status line, headers,
 *           Content-Length body -> the next request ... -> done (close)
 *
 * A request is {"from":F,"to":["u<seq>@d<seq % K>.<suffix>"],"raw":R}, R the same
 * message as in SMTP mode (X-Floormta-Load-Seq / -Ts headers, the shared body),
 * JSON-escaped. Only the head changes per message: the HTTP header, the JSON up to the
 * message header and the message header are formatted into the session's buffer; the
 * escaped body and the closing "\"}" are built once (run->http_body) and sent behind it.
 *
 * 202 with "ids" counts as injected; any other status is a refusal "http <status>". A
 * 401 (wrong token) ends the run: every further request would get the same. Answers
 * are bounded: status line, headers and body must fit in LOAD_RBUF_CAP.
 *
 * Only set_state() writes s->state; step() dispatches the events (connected, a complete
 * response, a rate token). Closing goes through eng_handle_close(); on_release closes the
 * fd; the run's ticker restarts a closed session LOAD_RETRY_MS later.
 */
#include "bench/load.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "engine/log.h"

#define LOAD_HTTP_OUT_CAP 4096 /* HTTP header + JSON head + message header */
#define LOAD_HTTP_HEAD    2048 /* the JSON head and the message header alone */

#define LOAD_HTTP_STATES(X)      \
    X(LOAD_H_CLOSED, "closed")   \
    X(LOAD_H_CONNECT, "connect") \
    X(LOAD_H_WAIT, "wait")       \
    X(LOAD_H_REQUEST, "request") \
    X(LOAD_H_DONE, "done")

enum load_http_state {
#define LOAD_HTTP_STATE_ENUM(name, str) name,
    LOAD_HTTP_STATES(LOAD_HTTP_STATE_ENUM)
#undef LOAD_HTTP_STATE_ENUM
            LOAD_H__COUNT
};

static const char *const state_names[] = {
#define LOAD_HTTP_STATE_NAME(name, str) [name] = str,
    LOAD_HTTP_STATES(LOAD_HTTP_STATE_NAME)
#undef LOAD_HTTP_STATE_NAME
};

enum load_http_event {
    LOAD_HEV_CONNECTED,
    LOAD_HEV_RESPONSE, /* s->status, s->has_ids, s->conn_close hold the response */
    LOAD_HEV_TOKEN,
};

struct load_http_session {
    struct load_run *run; /* borrowed */
    unsigned idx;
    enum load_http_state state; /* written only by set_state() */
    eng_handle_t h;
    int fd;
    bool closing;
    uint64_t retry_at_ms;

    uint64_t seq;
    uint64_t sent_ns; /* the request's X-Floormta-Load-Ts */

    /* the response just read */
    int status;
    bool has_ids;
    bool conn_close; /* "Connection: close": reconnect for the next one */

    size_t rlen;
    struct load_out o; /* commands or headers in out, then the shared body */

    char rbuf[LOAD_RBUF_CAP];
    char out[LOAD_HTTP_OUT_CAP];
};

static void set_state(struct load_http_session *s, enum load_http_state next)
{
    if (next != s->state && eng_log_enabled(ENG_LOG_DEBUG))
        eng_log(ENG_LOG_DEBUG, "load: http conn=%u %s -> %s", s->idx, state_names[s->state],
                state_names[next]);
    s->state = next;
}

int load_http_build_body(struct load_run *run)
{
    /* run->body is "\r\n", lines of [A-Za-z0-9] ending in CRLF, then ".\r\n": only CR
     * and LF need escaping (each becomes two bytes). */
    size_t n = run->body_len - 3;
    char *b = malloc(2 * n + 3);
    if (b == NULL)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = run->body[i];
        if (c == '\r' || c == '\n') {
            b[k++] = '\\';
            b[k++] = c == '\r' ? 'r' : 'n';
        } else {
            b[k++] = c;
        }
    }
    b[k++] = '"';
    b[k++] = '}';
    run->http_body = b;
    run->http_body_len = k;
    return 0;
}

/* ---- I/O ------------------------------------------------------------------------------- */

static void conn_close(struct load_http_session *s, const char *why, bool error)
{
    if (s->closing)
        return;
    s->closing = true;
    if (error) {
        s->run->c.conn_errors++;
        s->run->errors_in_row++;
        /* A request in flight is lost, never retried: the daemon may have queued it. */
        if (s->state == LOAD_H_REQUEST)
            s->run->c.lost++;
        eng_log(ENG_LOG_WARN, "load: http conn=%u %s in state %s", s->idx, why,
                state_names[s->state]);
    }
    eng_handle_close(s->run->loop, s->h);
}

/* Sends what is queued, if nothing is in flight: the own buffer first, then the body. */
static void flush(struct load_http_session *s)
{
    if (s->closing)
        return;
    const char *buf;
    size_t len;
    if (!load_out_next(&s->o, s->out, s->run->http_body, s->run->http_body_len, &buf, &len))
        return;
    int err = eng_op_send(s->run->loop, s->h, buf, len, s->run->cfg->timeout_ms);
    if (err != 0) {
        conn_close(s, eng_strerror(err), true);
        return;
    }
    s->o.sending = len;
}

static void arm_recv(struct load_http_session *s)
{
    int err = eng_op_recv(s->run->loop, s->h, s->rbuf + s->rlen, LOAD_RBUF_CAP - s->rlen,
                          s->run->cfg->timeout_ms);
    if (err != 0)
        conn_close(s, eng_strerror(err), true);
}

/* ---- the state machine ------------------------------------------------------------------ */

/* Formats the request of s->seq into s->out (empty: nothing is sent between requests)
 * and queues the shared body behind it. */
static void send_request(struct load_http_session *s)
{
    const struct load_config *cfg = s->run->cfg;
    unsigned dom = (unsigned)(s->seq % cfg->domains);
    unsigned long long seq = (unsigned long long)s->seq;
    char head[LOAD_HTTP_HEAD];
    int n = snprintf(head, sizeof(head),
                     "{\"from\":\"%s\",\"to\":[\"u%llu@d%04u.%s\"],\"raw\":\""
                     "From: <%s>\\r\\nTo: <u%llu@d%04u.%s>\\r\\nSubject: floormta-load %llu\\r\\n"
                     "Message-ID: <%llu.%llu@floormta-load.invalid>\\r\\n" LOAD_SEQ_HEADER
                     ": %llu\\r\\n" LOAD_TS_HEADER ": %llu\\r\\n",
                     cfg->from, seq, dom, cfg->suffix, cfg->from, seq, dom, cfg->suffix, seq, seq,
                     (unsigned long long)s->run->run_id, seq, (unsigned long long)s->sent_ns);
    int m = n < 0 || (size_t)n >= sizeof(head)
                    ? -1
                    : snprintf(s->out, sizeof(s->out),
                               "POST /api/v1/messages HTTP/1.1\r\nHost: %s\r\n"
                               "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                               "Content-Length: %zu\r\n\r\n%s",
                               cfg->http_host, cfg->token, (size_t)n + s->run->http_body_len, head);
    if (m < 0 || (size_t)m >= sizeof(s->out)) {
        conn_close(s, "request buffer overflow", true);
        return;
    }
    s->o.len = (size_t)m;
    s->o.sent = 0;
    s->o.body_queued = true;
    s->o.body_sent = 0;
    set_state(s, LOAD_H_REQUEST);
    flush(s);
}

/* Begins the next request, waits for a token, or ends the session. */
static void next_request(struct load_http_session *s)
{
    int r = load_run_take(s->run, s->idx, &s->seq);
    if (r == 0) {
        set_state(s, LOAD_H_WAIT);
        return;
    }
    if (r < 0) {
        set_state(s, LOAD_H_DONE);
        conn_close(s, "done", false);
        return;
    }
    s->sent_ns = load_realtime_ns();
    s->run->c.started++;
    send_request(s);
}

static void on_response(struct load_http_session *s)
{
    struct load_run *run = s->run;
    if (s->status == 202 && s->has_ids) {
        run->c.injected++;
        run->c.inject_latency[bench_lat_bucket((load_realtime_ns() - s->sent_ns) / 1000)]++;
    } else {
        char text[LOAD_REASON_LEN];
        snprintf(text, sizeof(text), s->status == 202 ? "http 202 without ids" : "http %d",
                 s->status);
        load_run_refusal(run, text);
    }
    if (s->status == 401 && !run->gave_up) {
        /* Every request would get the same answer. */
        run->gave_up = run->no_more = true;
        fprintf(stderr, "floormta-load: 401 from %s: wrong --token? giving up\n", run->cfg->http);
    }
    if (s->conn_close) {
        set_state(s, LOAD_H_CLOSED);
        conn_close(s, "Connection: close", false);
        return;
    }
    next_request(s);
}

static void step(struct load_http_session *s, enum load_http_event ev)
{
    switch (ev) {
    case LOAD_HEV_CONNECTED:
        s->run->c.connections++;
        s->run->errors_in_row = 0;
        arm_recv(s);
        if (!s->closing)
            next_request(s);
        return;
    case LOAD_HEV_TOKEN:
        if (s->state == LOAD_H_WAIT)
            next_request(s);
        return;
    case LOAD_HEV_RESPONSE:
        if (s->state != LOAD_H_REQUEST) {
            conn_close(s, "unexpected response", true);
            return;
        }
        on_response(s);
        return;
    }
}

/* ---- responses --------------------------------------------------------------------------- */

/* Parses one complete response at the start of rbuf, if there is one: returns its
 * length, 0 when more is needed, -1 when it is malformed or too large. */
static long parse_response(struct load_http_session *s)
{
    const char *end = NULL;
    for (size_t i = 3; i < s->rlen; i++)
        if (memcmp(s->rbuf + i - 3, "\r\n\r\n", 4) == 0) {
            end = s->rbuf + i + 1;
            break;
        }
    if (end == NULL)
        return s->rlen == LOAD_RBUF_CAP ? -1 : 0;
    size_t hlen = (size_t)(end - s->rbuf);
    /* "HTTP/1.1 202 Accepted" */
    if (hlen < 14 || memcmp(s->rbuf, "HTTP/1.", 7) != 0 || s->rbuf[8] != ' ' || s->rbuf[9] < '1' ||
        s->rbuf[9] > '5' || s->rbuf[10] < '0' || s->rbuf[10] > '9' || s->rbuf[11] < '0' ||
        s->rbuf[11] > '9')
        return -1;
    s->status = (s->rbuf[9] - '0') * 100 + (s->rbuf[10] - '0') * 10 + (s->rbuf[11] - '0');
    s->conn_close = s->rbuf[7] == '0'; /* HTTP/1.0: closes unless told otherwise */
    size_t clen = 0;
    bool have_len = false;
    for (const char *p = memchr(s->rbuf, '\n', hlen) + 1; p < end - 2;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)(nl - p);
        if (len >= 15 && strncasecmp(p, "content-length:", 15) == 0) {
            char *e;
            unsigned long v = strtoul(p + 15, &e, 10);
            if (v >= LOAD_RBUF_CAP)
                return -1;
            clen = v;
            have_len = true;
        } else if (len >= 11 && strncasecmp(p, "connection:", 11) == 0) {
            const char *v = p + 11;
            while (*v == ' ')
                v++;
            s->conn_close = strncasecmp(v, "close", 5) == 0;
        } else if (len >= 18 && strncasecmp(p, "transfer-encoding:", 18) == 0) {
            return -1; /* the API answers with a length; chunked is not expected */
        }
        p = nl + 1;
    }
    if (!have_len)
        return -1;
    if (hlen + clen > LOAD_RBUF_CAP)
        return -1;
    if (s->rlen < hlen + clen)
        return 0;
    /* {"ids":["..."]}: small, so a plain search of the body suffices. */
    s->has_ids = false;
    for (size_t i = 0; i + 6 <= clen && !s->has_ids; i++)
        s->has_ids = memcmp(end + i, "\"ids\":", 6) == 0;
    return (long)(hlen + clen);
}

static void take_responses(struct load_http_session *s)
{
    while (!s->closing && s->rlen > 0) {
        long n = parse_response(s);
        if (n == 0)
            return;
        if (n < 0) {
            conn_close(s, "malformed or oversized response", true);
            return;
        }
        memmove(s->rbuf, s->rbuf + n, s->rlen - (size_t)n);
        s->rlen -= (size_t)n;
        step(s, LOAD_HEV_RESPONSE);
    }
}

/* ---- completions ---------------------------------------------------------------------------- */

static void on_complete(void *ctx, const struct eng_completion *comp)
{
    struct load_http_session *s = ctx;
    if (comp->res == -ECANCELED || s->closing)
        return;
    switch (comp->op) {
    case ENG_OP_TIMER: {
        const struct load_config *cfg = s->run->cfg;
        set_state(s, LOAD_H_CONNECT);
        int err = eng_op_connect(s->run->loop, s->h, (const struct sockaddr *)&cfg->addr,
                                 cfg->addrlen, cfg->timeout_ms);
        if (err != 0)
            conn_close(s, eng_strerror(err), true);
        return;
    }
    case ENG_OP_CONNECT:
        if (comp->res < 0) {
            conn_close(s, eng_strerror(comp->res), true);
            return;
        }
        step(s, LOAD_HEV_CONNECTED);
        return;
    case ENG_OP_RECV:
        if (comp->res == -ETIMEDOUT && s->state == LOAD_H_WAIT) {
            arm_recv(s); /* idle while waiting for a token */
            return;
        }
        if (comp->res <= 0) {
            /* The server may close an idle keep-alive connection: only a close with a
             * request in flight is an error. */
            bool idle = comp->res == 0 && s->state != LOAD_H_REQUEST;
            if (idle)
                set_state(s, LOAD_H_CLOSED);
            conn_close(s, comp->res == 0 ? "connection closed" : eng_strerror(comp->res), !idle);
            return;
        }
        s->rlen += (size_t)comp->res;
        take_responses(s);
        if (!s->closing)
            arm_recv(s);
        return;
    case ENG_OP_SEND:
        if (comp->res < 0) {
            conn_close(s, eng_strerror(comp->res), true);
            return;
        }
        load_out_sent(&s->o, (size_t)comp->res, s->run->http_body_len);
        flush(s);
        return;
    case ENG_OP_POLL:
    case ENG_OP_ACCEPT:
    case ENG_OP__COUNT: return;
    }
}

static void on_release(void *ctx)
{
    struct load_http_session *s = ctx;
    close(s->fd);
    s->fd = -1;
    s->h = 0;
    if (s->state != LOAD_H_DONE)
        set_state(s, LOAD_H_CLOSED);
    s->retry_at_ms = eng_loop_now_ms(s->run->loop) + LOAD_RETRY_MS;
}

static const struct eng_handle_ops session_ops = {
    .on_complete = on_complete,
    .on_release = on_release,
};

/* ---- the run's side ----------------------------------------------------------------------- */

static void http_init(struct load_run *run)
{
    run->hsessions = calloc(run->cfg->conns, sizeof(*run->hsessions));
    if (run->hsessions == NULL)
        abort(); /* start-up allocation (STYLE.md 7) */
    for (unsigned i = 0; i < run->cfg->conns; i++) {
        run->hsessions[i].run = run;
        run->hsessions[i].idx = i;
        run->hsessions[i].fd = -1;
        run->hsessions[i].state = LOAD_H_CLOSED;
    }
}

static void http_free(struct load_run *run)
{
    free(run->hsessions);
    run->hsessions = NULL;
}

static bool http_poke(struct load_run *run, unsigned idx)
{
    struct load_http_session *s = &run->hsessions[idx];
    if (s->state == LOAD_H_DONE)
        return false;
    if (s->state != LOAD_H_CLOSED || s->h != 0)
        return true;
    if (run->no_more) {
        set_state(s, LOAD_H_DONE);
        return false;
    }
    uint64_t now = eng_loop_now_ms(run->loop);
    if (now < s->retry_at_ms)
        return true;
    if (load_conn_open(run, &session_ops, s, &s->fd, &s->h) != 0) {
        s->retry_at_ms = now + LOAD_RETRY_MS;
        return true;
    }
    s->closing = false;
    s->rlen = s->o.len = s->o.sent = s->o.body_sent = s->o.sending = 0;
    s->o.body_queued = false;
    set_state(s, LOAD_H_CONNECT);
    /* Connect from a zero-length timer's completion, as the SMTP sessions do. */
    int err = eng_op_timer(run->loop, s->h, 1);
    if (err != 0)
        conn_close(s, eng_strerror(err), true);
    return true;
}

static void http_token(struct load_run *run, unsigned idx, bool granted)
{
    struct load_http_session *s = &run->hsessions[idx];
    if (s->closing || s->state != LOAD_H_WAIT)
        return;
    if (granted) {
        step(s, LOAD_HEV_TOKEN);
        return;
    }
    set_state(s, LOAD_H_DONE);
    conn_close(s, "done", false);
}

static unsigned http_live(const struct load_run *run)
{
    unsigned n = 0;
    for (unsigned i = 0; i < run->cfg->conns; i++) {
        const struct load_http_session *s = &run->hsessions[i];
        if (s->state != LOAD_H_DONE && !(s->state == LOAD_H_CLOSED && s->h == 0 && run->no_more))
            n++;
    }
    return n;
}

static void http_close_all(struct load_run *run)
{
    for (unsigned i = 0; i < run->cfg->conns; i++) {
        struct load_http_session *s = &run->hsessions[i];
        set_state(s, LOAD_H_DONE);
        if (s->h != 0)
            conn_close(s, "interrupted", false);
    }
}

const struct load_session_ops load_http_session_ops = {
    .init = http_init,
    .free = http_free,
    .poke = http_poke,
    .token = http_token,
    .live = http_live,
    .close_all = http_close_all,
};
