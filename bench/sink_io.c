/*
 * bench/sink_io.c — one sink connection on the loop.
 *
 * Each connection is a loop handle with at most one recv and one send in flight:
 *
 *   recv -> [TLS: tls_conn_feed, then handshake or tls_conn_read] -> plaintext in rbuf
 *        -> sink_session_input() -> replies in out (plain) or pt (TLS, encrypted in one
 *           tls_conn_write per batch) -> one send of everything queued.
 *
 * rbuf holds ciphertext only for the moment between recv and tls_conn_feed (which
 * copies), then plaintext, so one buffer serves both. A new recv is armed only once
 * every received byte has been consumed; when the output has no room for another
 * reply, the rest of rbuf waits (paused) until a send completes. So a peer that
 * pipelines without reading meets TCP back-pressure, and memory stays fixed.
 *
 * Lifetime: sink_conn_accept() takes a session from the pool and opens a handle;
 * close() calls eng_handle_close() at most once; on_release() (from the loop, once
 * nothing is in flight) closes the fd, frees the tls_conn and returns the session to
 * the pool. Nothing is freed inside a completion.
 */
#include "bench/sink.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/log.h"
#include "tls/tls.h"

/* The flood profile's greeting, sent from one shared read-only buffer. */
#define FLOOD_CHUNK 65536
static char flood_buf[4 + FLOOD_CHUNK];

static void conn_close(struct sink_session *s, const char *why)
{
    if (s->closing)
        return;
    s->closing = true;
    eng_log(ENG_LOG_DEBUG, "sink: session=%llu close (%s) state=%s", (unsigned long long)s->id, why,
            sink_state_name(s->state));
    eng_handle_close(s->srv->loop, s->h);
}

/* ---- output ------------------------------------------------------------------------- */

bool sink_out_reserve(struct sink_session *s)
{
    if (s->tls == NULL)
        return SINK_OUT_CAP - s->out_len >= SINK_REPLY_MAX;
    if (SINK_PT_CAP - s->pt_len < SINK_REPLY_MAX && s->pt_len > 0) {
        /* Move the queued plaintext into TLS records to make room. */
        if (tls_conn_write(s->tls, s->pt, s->pt_len) != 0)
            return false; /* flush() meets the same error and closes */
        s->pt_len = 0;
    }
    /* Ciphertext beyond one output buffer waits inside tls/: stop taking commands. */
    return tls_conn_pending(s->tls) < SINK_OUT_CAP && SINK_PT_CAP - s->pt_len >= SINK_REPLY_MAX;
}

void sink_out_put(struct sink_session *s, const char *data, size_t len)
{
    /* Plaintext replies before STARTTLS go straight to the wire buffer. */
    char *buf = s->tls ? s->pt : s->out;
    size_t *used = s->tls ? &s->pt_len : &s->out_len;
    size_t cap = s->tls ? SINK_PT_CAP : SINK_OUT_CAP;
    if (cap - *used < len) {
        /* Cannot happen: callers reserve SINK_REPLY_MAX first. Fail loudly in tests. */
        eng_log(ENG_LOG_ERROR, "sink: session=%llu output overflow", (unsigned long long)s->id);
        s->close_after = true;
        return;
    }
    memcpy(buf + *used, data, len);
    *used += len;
}

/* Encrypts queued replies, moves ciphertext into out and sends what is there if no
 * send is in flight. Closes when asked to and everything has left. */
static void flush(struct sink_session *s)
{
    struct eng_loop *loop = s->srv->loop;
    if (s->closing)
        return;
    if (s->tls) {
        if (s->pt_len > 0) {
            int err = tls_conn_write(s->tls, s->pt, s->pt_len);
            if (err != 0) {
                conn_close(s, tls_strerror(err));
                return;
            }
            s->pt_len = 0;
        }
        if (s->close_after && !s->tls_shut && s->state != SINK_S_HANDSHAKE) {
            s->tls_shut = true;
            tls_conn_shutdown(s->tls);
        }
    }
    if (eng_handle_busy(loop, s->h, ENG_OP_SEND))
        return;
    if (s->out_sent > 0) {
        /* Compact: only after partial sends, so rarely. */
        memmove(s->out, s->out + s->out_sent, s->out_len - s->out_sent);
        s->out_len -= s->out_sent;
        s->out_sent = 0;
    }
    if (s->tls && s->out_len < SINK_OUT_CAP)
        s->out_len += tls_conn_drain(s->tls, s->out + s->out_len, SINK_OUT_CAP - s->out_len);
    if (s->out_len > 0) {
        int err = eng_op_send(loop, s->h, s->out, s->out_len, SINK_IDLE_MS);
        if (err != 0)
            conn_close(s, eng_strerror(err));
        return;
    }
    if (s->close_after)
        conn_close(s, "done");
}

/* ---- input --------------------------------------------------------------------------- */

static void arm_recv(struct sink_session *s)
{
    if (s->closing || s->close_after || s->paused ||
        eng_handle_busy(s->srv->loop, s->h, ENG_OP_RECV))
        return;
    int err = eng_op_recv(s->srv->loop, s->h, s->rbuf, sizeof(s->rbuf), SINK_IDLE_MS);
    if (err != 0)
        conn_close(s, eng_strerror(err));
}

static void start_tls(struct sink_session *s)
{
    /* Plaintext pipelined behind STARTTLS is dropped here, unread. */
    s->rpos = s->rlen = 0;
    int err = tls_conn_new_server(s->lst->tls, &s->tls);
    if (err != 0) {
        s->tls = NULL;
        eng_log(ENG_LOG_WARN, "sink: session=%llu tls_conn_new_server: %s",
                (unsigned long long)s->id, tls_strerror(err));
        s->close_after = true;
    }
}

/* Advances the handshake. Returns true when it completed and plaintext may follow. */
static bool handshake(struct sink_session *s)
{
    bool done = false;
    int err = tls_conn_handshake(s->tls, &done);
    if (err != 0) {
        /* Any alert is pending: flush sends it, then closes. */
        eng_log(ENG_LOG_DEBUG, "sink: session=%llu handshake: %s", (unsigned long long)s->id,
                tls_strerror(err));
        s->close_after = true;
        return false;
    }
    if (!done)
        return false;
    s->srv->stats.tls_handshakes++;
    s->srv->stats.tls_resumed += tls_conn_resumed(s->tls);
    eng_log(ENG_LOG_DEBUG, "sink: session=%llu tls %s %s", (unsigned long long)s->id,
            tls_version_name(tls_conn_version(s->tls)), tls_conn_cipher(s->tls));
    sink_session_tls_ready(s);
    return true;
}

/* Consumes everything that can be consumed now, then sends and re-arms the recv. */
static void pump(struct sink_session *s)
{
    s->paused = false;
    while (!s->closing && !s->close_after) {
        if (s->state == SINK_S_HANDSHAKE) {
            if (!handshake(s))
                break;
            continue;
        }
        if (s->rpos < s->rlen) {
            size_t used = 0;
            enum sink_action act =
                    sink_session_input(s, s->rbuf + s->rpos, s->rlen - s->rpos, &used);
            s->rpos += used;
            if (act == SINK_ACT_PAUSE) {
                s->paused = true;
                break;
            }
            if (act == SINK_ACT_CLOSE)
                s->close_after = true;
            else if (act == SINK_ACT_STARTTLS)
                start_tls(s);
            continue;
        }
        if (s->tls == NULL)
            break;
        size_t n = 0;
        int err = tls_conn_read(s->tls, s->rbuf, sizeof(s->rbuf), &n);
        if (err != 0) {
            conn_close(s, tls_strerror(err));
            return;
        }
        if (n == 0)
            break;
        s->rpos = 0;
        s->rlen = n;
    }
    flush(s);
    if (s->rpos == s->rlen)
        arm_recv(s);
}

static void on_recv(struct sink_session *s, int res)
{
    if (res == -ETIMEDOUT && (s->state == SINK_S_STALL || s->state == SINK_S_TRICKLE)) {
        arm_recv(s); /* these hold the connection until the client gives up */
        return;
    }
    if (res == -ETIMEDOUT) {
        if (s->state != SINK_S_FLOOD && s->state != SINK_S_HANDSHAKE && sink_session_timeout(s)) {
            s->close_after = true;
            flush(s);
            return;
        }
        conn_close(s, "timeout");
        return;
    }
    if (res <= 0) {
        conn_close(s, res == 0 ? "eof" : eng_strerror(res));
        return;
    }
    if (s->state == SINK_S_STALL || s->state == SINK_S_FLOOD || s->state == SINK_S_TRICKLE) {
        arm_recv(s); /* discard: these profiles never listen */
        return;
    }
    if (s->tls) {
        int err = tls_conn_feed(s->tls, s->rbuf, (size_t)res);
        if (err != 0) {
            conn_close(s, tls_strerror(err));
            return;
        }
        s->rpos = s->rlen = 0;
    } else {
        s->rpos = 0;
        s->rlen = (size_t)res;
    }
    pump(s);
}

/* ---- flood ------------------------------------------------------------------------ */

static void flood_send(struct sink_session *s)
{
    uint64_t total = 4 + (uint64_t)SINK_FLOOD_BYTES;
    if (s->flood_sent >= total)
        return; /* all sent: wait for the client to leave */
    /* The first send starts with "220 "; the rest are 'a' bytes. */
    const char *buf = s->flood_sent == 0 ? flood_buf : flood_buf + 4;
    size_t len = s->flood_sent == 0 ? sizeof(flood_buf) : FLOOD_CHUNK;
    if (len > total - s->flood_sent)
        len = (size_t)(total - s->flood_sent);
    int err = eng_op_send(s->srv->loop, s->h, buf, len, SINK_IDLE_MS);
    if (err != 0)
        conn_close(s, eng_strerror(err));
}

/* ---- trickle ---------------------------------------------------------------------- */

/* Waits, then sends the greeting's next byte; after the last one, silence. */
static void trickle_next(struct sink_session *s)
{
    if (s->flood_sent >= s->srv->greeting_len)
        return;
    int err = eng_op_timer(s->srv->loop, s->h, SINK_TRICKLE_MS);
    if (err != 0)
        conn_close(s, eng_strerror(err));
}

static void trickle_send(struct sink_session *s)
{
    int err = eng_op_send(s->srv->loop, s->h, s->srv->greeting + s->flood_sent, 1, SINK_IDLE_MS);
    if (err != 0)
        conn_close(s, eng_strerror(err));
}

/* ---- completions ------------------------------------------------------------------ */

static void on_send(struct sink_session *s, int res)
{
    if (res <= 0) {
        conn_close(s, res == 0 ? "send returned 0" : eng_strerror(res));
        return;
    }
    if (s->state == SINK_S_FLOOD) {
        s->flood_sent += (uint64_t)res;
        flood_send(s);
        return;
    }
    if (s->state == SINK_S_TRICKLE) {
        s->flood_sent += (uint64_t)res;
        trickle_next(s);
        return;
    }
    s->out_sent += (size_t)res;
    if (s->out_sent == s->out_len)
        s->out_sent = s->out_len = 0;
    if (s->paused)
        pump(s); /* room again: take the input that waited */
    else
        flush(s);
}

static void on_complete(void *ctx, const struct eng_completion *comp)
{
    struct sink_session *s = ctx;
    if (s->closing || comp->res == -ECANCELED)
        return;
    switch (comp->op) {
    case ENG_OP_RECV: on_recv(s, comp->res); break;
    case ENG_OP_SEND: on_send(s, comp->res); break;
    case ENG_OP_TIMER: trickle_send(s); break;
    default: break;
    }
}

static void on_release(void *ctx)
{
    struct sink_session *s = ctx;
    struct sink_server *srv = s->srv;
    close(s->fd);
    tls_conn_free(s->tls);
    s->tls = NULL;
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->live = s->next;
    if (s->next)
        s->next->prev = s->prev;
    srv->live_count--;
    s->prev = NULL;
    s->next = srv->pool;
    srv->pool = s;
}

static const struct eng_handle_ops session_ops = {
    .on_complete = on_complete,
    .on_release = on_release,
};

/* ---- accept / pool ------------------------------------------------------------------- */

static struct sink_session *session_get(struct sink_server *srv)
{
    struct sink_session *s = srv->pool;
    if (s) {
        srv->pool = s->next;
    } else {
        /* Grows to the peak connection count, then recycles: no allocation per
         * connection in steady state. */
        s = malloc(sizeof(*s));
        if (s == NULL)
            return NULL;
    }
    /* Reset the header fields only; the buffers are overwritten before use. */
    memset(s, 0, offsetof(struct sink_session, line));
    return s;
}

void sink_conn_accept(struct sink_listener *lst, int fd)
{
    struct sink_server *srv = lst->srv;
    if (srv->stopping) {
        close(fd);
        return;
    }
    struct sink_session *s = session_get(srv);
    if (s == NULL) {
        eng_log(ENG_LOG_WARN, "sink: out of memory, connection dropped");
        close(fd);
        return;
    }
    s->srv = srv;
    s->lst = lst;
    s->fd = fd;
    s->id = ++srv->next_id;
    int err = eng_handle_open(srv->loop, fd, &session_ops, s, &s->h);
    if (err != 0) {
        eng_log(ENG_LOG_WARN, "sink: connection dropped: %s", eng_strerror(err));
        close(fd);
        s->next = srv->pool;
        srv->pool = s;
        return;
    }
    /* Replies are small and batched: never let Nagle hold one back. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    s->next = srv->live;
    if (srv->live)
        srv->live->prev = s;
    srv->live = s;
    srv->live_count++;
    srv->stats.connections++;
    lst->connections++;
    eng_log(ENG_LOG_DEBUG, "sink: session=%llu accepted on %s profile=%s",
            (unsigned long long)s->id, lst->text, lst->profile->name);

    sink_session_start(s);
    switch (s->state) {
    case SINK_S_STALL: arm_recv(s); break;
    case SINK_S_FLOOD:
        if (flood_buf[0] != '2') {
            memcpy(flood_buf, "220 ", 4);
            memset(flood_buf + 4, 'a', FLOOD_CHUNK);
        }
        flood_send(s);
        arm_recv(s); /* to notice the client leaving */
        break;
    case SINK_S_TRICKLE:
        trickle_next(s);
        arm_recv(s);
        break;
    default:
        flush(s);
        arm_recv(s);
        break;
    }
}

void sink_conn_close_all(struct sink_server *srv)
{
    for (struct sink_session *s = srv->live; s; s = s->next)
        conn_close(s, "shutdown");
}

void sink_conn_pool_free(struct sink_server *srv)
{
    while (srv->pool) {
        struct sink_session *s = srv->pool;
        srv->pool = s->next;
        free(s);
    }
}
