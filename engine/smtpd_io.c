/*
 * engine/smtpd_io.c — one submission connection on the loop.
 *
 * Each connection is a loop handle with at most one recv and one send in flight:
 *
 *   recv -> [TLS: tls_conn_feed, then handshake or tls_conn_read] -> plaintext in rbuf
 *        -> smtpd_sess_input() -> replies in sm.out -> [tls_conn_write] -> wire -> send
 *
 * A recv is armed only once every received byte is consumed and never while a submit
 * waits for done, so a client that pipelines without reading meets TCP back-pressure
 * and the memory stays what accept allocated (plus the content of one message). Its
 * timeout is the session's: the command or the data timeout.
 *
 * End of data: the session says SUBMIT; the replies so far are sent, submit gets the
 * message, and nothing more is read until done; done queues the 250 (or the error) and
 * takes the input that waited. So no 250 leaves before the owner made the message
 * durable.
 *
 * Lifetime: conn_close() calls eng_handle_close() at most once; on_release() (from the
 * loop, once nothing is in flight) closes the fd and frees the connection, unless its
 * submit still waits: then done frees it. Nothing is freed inside a completion chain
 * of the handle. The last reply before a close is followed by a lingering close (write
 * side shut, input dropped until EOF or SMTPD_LINGER_MS) so that unread input cannot
 * turn the close into a reset that destroys the reply.
 */
#include "engine/smtpd_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/log.h"
#include "tls/tls.h"

static void pump(struct smtpd_conn *c);

static void conn_close(struct smtpd_conn *c, const char *why)
{
    if (c->closing)
        return;
    c->closing = true;
    eng_log(ENG_LOG_DEBUG, "smtpd: session=%s close (%s) state=%s", c->sm.sid, why,
            smtpd_state_name(c->sm.state));
    eng_handle_close(c->d->loop, c->h);
}

/* ---- output ------------------------------------------------------------------------- */

/* Moves the session's replies to the wire (through TLS once it is up). Returns false
 * when they must wait for a send to free room. */
static bool move_out(struct smtpd_conn *c)
{
    struct smtpd_sess *s = &c->sm;
    if (s->out_len == 0)
        return true;
    if (c->tls && !c->handshaking) {
        /* Ciphertext beyond one wire buffer waits inside tls/: stop producing. */
        if (tls_conn_pending(c->tls) >= SMTPD_WIRE_CAP)
            return false;
        if (tls_conn_write(c->tls, s->out, s->out_len) != 0) {
            conn_close(c, "tls write");
            return false;
        }
        s->out_len = 0;
        return true;
    }
    if (SMTPD_WIRE_CAP - c->wire_len < s->out_len)
        return false;
    memcpy(c->wire + c->wire_len, s->out, s->out_len);
    c->wire_len += s->out_len;
    s->out_len = 0;
    return true;
}

static void arm_recv(struct smtpd_conn *c)
{
    struct eng_loop *loop = c->d->loop;
    if (c->closing || eng_handle_busy(loop, c->h, ENG_OP_RECV))
        return;
    unsigned ms = c->lingering ? SMTPD_LINGER_MS : smtpd_sess_timeout_ms(&c->sm);
    int err = eng_op_recv(loop, c->h, c->rbuf, sizeof(c->rbuf), ms);
    if (err != 0)
        conn_close(c, eng_strerror(err));
}

/* Encrypts and sends what is queued if no send is in flight; once everything has left
 * after the last reply, shuts the write side and lingers. */
static void flush(struct smtpd_conn *c)
{
    struct eng_loop *loop = c->d->loop;
    if (c->closing || c->lingering)
        return;
    move_out(c);
    if (c->closing)
        return;
    if (c->tls && c->close_after && !c->tls_shut && !c->handshaking && c->sm.out_len == 0) {
        c->tls_shut = true;
        tls_conn_shutdown(c->tls);
    }
    if (eng_handle_busy(loop, c->h, ENG_OP_SEND))
        return;
    if (c->wire_sent > 0) {
        /* Compact only with no send in flight (it points into wire). */
        memmove(c->wire, c->wire + c->wire_sent, c->wire_len - c->wire_sent);
        c->wire_len -= c->wire_sent;
        c->wire_sent = 0;
    }
    if (c->tls && c->wire_len < SMTPD_WIRE_CAP)
        c->wire_len += tls_conn_drain(c->tls, c->wire + c->wire_len, SMTPD_WIRE_CAP - c->wire_len);
    if (c->wire_len > 0) {
        int err = eng_op_send(loop, c->h, c->wire, c->wire_len, c->sm.lim.command_timeout_ms);
        if (err != 0)
            conn_close(c, eng_strerror(err));
        return;
    }
    if (c->close_after && c->sm.out_len == 0) {
        c->lingering = true;
        shutdown(c->fd, SHUT_WR);
        if (eng_handle_busy(loop, c->h, ENG_OP_RECV))
            eng_op_cancel(loop, c->h, ENG_OP_RECV); /* re-armed with the linger timeout */
        else
            arm_recv(c);
    }
}

/* ---- TLS ------------------------------------------------------------------------------ */

static void start_tls(struct smtpd_conn *c)
{
    /* Plaintext pipelined behind STARTTLS is dropped here, unread (CVE-2011-0411). */
    c->rpos = c->rlen = 0;
    int err = tls_conn_new_server(c->d->tls, &c->tls);
    if (err != 0) {
        c->tls = NULL;
        eng_log(ENG_LOG_WARN, "smtpd: session=%s tls_conn_new_server: %s", c->sm.sid,
                tls_strerror(err));
        c->close_after = true;
        return;
    }
    c->handshaking = true;
}

/* Advances the handshake. Returns true when it completed and plaintext may follow. */
static bool handshake(struct smtpd_conn *c)
{
    bool done = false;
    int err = tls_conn_handshake(c->tls, &done);
    if (err != 0) {
        /* A TLS 1.0/1.1 client lands here: the context's floor refused it. The alert
         * is pending; flush sends it, then the connection closes. */
        eng_log(ENG_LOG_INFO, "smtpd: session=%s client=%s handshake failed: %s", c->sm.sid,
                c->sm.client_ip, tls_strerror(err));
        c->close_after = true;
        return false;
    }
    if (!done)
        return false;
    c->handshaking = false;
    eng_log(ENG_LOG_DEBUG, "smtpd: session=%s tls %s %s", c->sm.sid,
            tls_version_name(tls_conn_version(c->tls)), tls_conn_cipher(c->tls));
    smtpd_sess_tls_ready(&c->sm, tls_conn_version(c->tls), tls_conn_cipher(c->tls));
    if (c->sm.state == SMTPD_S_NEW && smtpd_sess_start(&c->sm, c->refuse) == SMTPD_ACT_CLOSE)
        c->close_after = true;
    return true;
}

/* ---- submit and credential checks: outside work the connection waits for ------------ */

/* Whether the connection waits for a submit's or a credential check's done: its
 * session's state says so (WAIT_DURABLE, AUTH_CHECK); nothing is read meanwhile, and a
 * connection released then is freed by that done. */
static bool waiting(const struct smtpd_conn *c)
{
    return c->sm.state == SMTPD_S_WAIT_DURABLE || c->sm.state == SMTPD_S_AUTH_CHECK;
}

/* The work's done found the connection released (the client left while it waited):
 * nobody to tell; frees it. Returns whether it did. */
static bool free_if_orphan(struct smtpd_conn *c)
{
    if (!c->released)
        return false;
    c->d->orphans--;
    smtpd_sess_fini(&c->sm);
    free(c);
    return true;
}

/* After the work's answer was queued: goes on reading, or, when the server stopped
 * meanwhile, queues the 421 behind the answer and closes, so that a client never sends
 * again a message that is queued. Input it pipelined behind is not read. */
static void resume(struct smtpd_conn *c)
{
    if (c->d->stopping && !c->close_after) {
        smtpd_sess_shutdown(&c->sm);
        c->close_after = true;
    }
    if (c->close_after) {
        flush(c);
        return;
    }
    pump(c);
}

static void submit_done(void *arg, int res, const char *queue_id)
{
    struct smtpd_conn *c = arg;
    if (free_if_orphan(c))
        return;
    smtpd_sess_submitted(&c->sm, res, queue_id);
    resume(c);
}

static void submit(struct smtpd_conn *c)
{
    struct eng_smtpd_message m;
    smtpd_sess_message(&c->sm, &m);
    int err = c->d->submit(c->d->submit_arg, &m, submit_done, c);
    if (err != 0)
        smtpd_sess_submitted(&c->sm, err, NULL);
}

/* The check runs on the checker thread (smtpd_authq.c): crypt must not stall the loop. */
void smtpd_conn_auth_done(struct smtpd_conn *c, int res)
{
    if (free_if_orphan(c))
        return;
    if (smtpd_sess_auth_checked(&c->sm, res) == SMTPD_ACT_CLOSE)
        c->close_after = true;
    resume(c);
}

static void auth_start(struct smtpd_conn *c)
{
    const char *user, *pass;
    bool known = false;
    smtpd_sess_auth_request(&c->sm, &user, &pass);
    /* The hash is copied now: a reload may free these credentials meanwhile. */
    const char *hash = smtpd_credentials_hash(c->d->sh.creds, user, &known);
    int err = hash ? smtpd_authq_submit(c->d, c, hash, known, pass) : -EACCES;
    if (err == 0)
        return; /* waiting: smtpd_conn_auth_done follows */
    if (err != -EACCES)
        eng_log(ENG_LOG_ERROR, "smtpd: session=%s cannot check credentials: %s", c->sm.sid,
                eng_strerror(err));
    if (smtpd_sess_auth_checked(&c->sm, err) == SMTPD_ACT_CLOSE)
        c->close_after = true;
}

/* ---- input --------------------------------------------------------------------------- */

/* Consumes everything that can be consumed now, then sends and re-arms the recv. */
static void pump(struct smtpd_conn *c)
{
    c->paused = false;
    while (!c->closing && !c->close_after) {
        if (c->handshaking) {
            if (!handshake(c))
                break;
            continue;
        }
        if (waiting(c))
            break;
        if (c->rpos < c->rlen) {
            size_t used = 0;
            enum smtpd_action act =
                    smtpd_sess_input(&c->sm, c->rbuf + c->rpos, c->rlen - c->rpos, &used);
            c->rpos += used;
            bool moved = move_out(c);
            if (act == SMTPD_ACT_PAUSE && !moved) {
                c->paused = true;
                break;
            }
            if (act == SMTPD_ACT_CLOSE)
                c->close_after = true;
            else if (act == SMTPD_ACT_STARTTLS)
                start_tls(c); /* the 220 is already on the wire, in plaintext */
            else if (act == SMTPD_ACT_SUBMIT)
                submit(c);
            else if (act == SMTPD_ACT_AUTH)
                auth_start(c);
            continue;
        }
        if (c->tls == NULL)
            break;
        size_t n = 0;
        int err = tls_conn_read(c->tls, c->rbuf, sizeof(c->rbuf), &n);
        if (err != 0) {
            conn_close(c, tls_strerror(err));
            return;
        }
        if (n == 0)
            break;
        c->rpos = 0;
        c->rlen = n;
    }
    flush(c);
    if (c->rpos == c->rlen && !c->paused && !waiting(c) && !c->close_after)
        arm_recv(c);
}

static void on_recv(struct smtpd_conn *c, int res)
{
    if (c->lingering) {
        if (res > 0 || res == -ECANCELED)
            arm_recv(c); /* dropped; wait for EOF */
        else
            conn_close(c, "linger done");
        return;
    }
    if (res == -ECANCELED)
        return;
    if (res == -ETIMEDOUT) {
        if (!c->handshaking && smtpd_sess_timeout(&c->sm)) {
            eng_log(ENG_LOG_INFO, "smtpd: session=%s client=%s timeout", c->sm.sid,
                    c->sm.client_ip);
            c->close_after = true;
            flush(c);
            return;
        }
        conn_close(c, "timeout");
        return;
    }
    if (res <= 0) {
        conn_close(c, res == 0 ? "eof" : eng_strerror(res));
        return;
    }
    if (c->tls) {
        int err = tls_conn_feed(c->tls, c->rbuf, (size_t)res);
        if (err != 0) {
            conn_close(c, tls_strerror(err));
            return;
        }
        c->rpos = c->rlen = 0;
    } else {
        c->rpos = 0;
        c->rlen = (size_t)res;
    }
    pump(c);
}

static void on_send(struct smtpd_conn *c, int res)
{
    if (res <= 0) {
        conn_close(c, res == 0 ? "send returned 0" : eng_strerror(res));
        return;
    }
    c->wire_sent += (size_t)res;
    if (c->wire_sent == c->wire_len)
        c->wire_sent = c->wire_len = 0;
    if (c->paused)
        pump(c); /* room again: take the input that waited */
    else
        flush(c);
}

static void on_complete(void *ctx, const struct eng_completion *comp)
{
    struct smtpd_conn *c = ctx;
    if (c->closing)
        return;
    switch (comp->op) {
    case ENG_OP_RECV: on_recv(c, comp->res); break;
    case ENG_OP_SEND:
        if (comp->res != -ECANCELED)
            on_send(c, comp->res);
        break;
    default: break;
    }
}

static void on_release(void *ctx)
{
    struct smtpd_conn *c = ctx;
    struct eng_smtpd *d = c->d;
    close(c->fd);
    tls_conn_free(c->tls);
    c->tls = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        d->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    d->live_count--;
    if (waiting(c)) {
        c->released = true; /* submit_done or smtpd_conn_auth_done frees it */
        d->orphans++;
        return;
    }
    smtpd_sess_fini(&c->sm);
    free(c);
}

static const struct eng_handle_ops conn_ops = {
    .on_complete = on_complete,
    .on_release = on_release,
};

/* ---- accept --------------------------------------------------------------------------- */

static bool same_ip(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
                      &((const struct sockaddr_in *)b)->sin_addr, sizeof(struct in_addr)) == 0;
    if (a->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return false;
}

/* Connections already open from the client's address. A walk over the open sessions:
 * bounded by max_sessions and cheap next to a TLS handshake. */
static unsigned count_client(const struct eng_smtpd *d, const struct sockaddr_storage *a)
{
    unsigned n = 0;
    for (const struct smtpd_conn *o = d->live; o; o = o->next)
        n += !o->closing && !o->close_after && same_ip(&o->sm.client, a); /* not leaving */
    return n;
}

void smtpd_conn_accept(struct smtpd_listener *lst, int fd)
{
    struct eng_smtpd *d = lst->d;
    /* Past the limit, refusals get a 421 from a session too, but only up to a margin:
     * beyond it the connection is dropped without a word. */
    if (d->stopping || d->live_count >= d->sh.max_sessions + 64) {
        close(fd);
        return;
    }
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    if (getpeername(fd, (struct sockaddr *)&peer, &plen) != 0) {
        close(fd);
        return;
    }
    struct smtpd_conn *c = malloc(sizeof(*c));
    if (c == NULL) {
        eng_log(ENG_LOG_WARN, "smtpd: out of memory, connection dropped");
        close(fd);
        return;
    }
    memset(c, 0, offsetof(struct smtpd_conn, sm));
    if (smtpd_sess_init(&c->sm, &d->sh, (struct sockaddr *)&peer, plen) != 0) {
        eng_log(ENG_LOG_WARN, "smtpd: out of memory, connection dropped");
        free(c);
        close(fd);
        return;
    }
    c->d = d;
    c->lst = lst;
    c->fd = fd;
    c->refuse = ENG_SMTPD_REJ__COUNT;
    if (d->live_count >= d->sh.max_sessions)
        c->refuse = ENG_SMTPD_REJ_CONN_TOTAL;
    else if (count_client(d, &peer) >= d->sh.max_per_client)
        c->refuse = ENG_SMTPD_REJ_CONN_PER_CLIENT;
    int err = eng_handle_open(d->loop, fd, &conn_ops, c, &c->h);
    if (err != 0) {
        eng_log(ENG_LOG_WARN, "smtpd: connection dropped: %s", eng_strerror(err));
        smtpd_sess_fini(&c->sm);
        free(c);
        close(fd);
        return;
    }
    /* Replies are small and batched: never let Nagle hold one back. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->next = d->live;
    if (d->live)
        d->live->prev = c;
    d->live = c;
    d->live_count++;
    d->sh.stats.sessions++;
    eng_log(ENG_LOG_DEBUG, "smtpd: session=%s accepted on %s client=%s", c->sm.sid, lst->text,
            c->sm.client_ip);

    if (lst->mode == ENG_SMTPD_MODE_IMPLICIT_TLS) {
        start_tls(c); /* the greeting (or refusal) follows the handshake */
    } else if (smtpd_sess_start(&c->sm, c->refuse) == SMTPD_ACT_CLOSE) {
        c->close_after = true;
    }
    flush(c);
    if (!c->close_after)
        arm_recv(c);
}

void smtpd_conn_close_all(struct eng_smtpd *d)
{
    for (struct smtpd_conn *c = d->live; c; c = c->next) {
        if (c->closing || c->close_after || c->lingering)
            continue;
        if (waiting(c))
            continue; /* its done answers, then closes (d->stopping) */
        if (!c->handshaking && smtpd_sess_shutdown(&c->sm)) {
            c->close_after = true; /* the 421, then a lingering close */
            flush(c);
        } else {
            conn_close(c, "shutdown");
        }
    }
}
