/*
 * engine/smtp_session.c — binds the SMTP client state machine to a socket on the
 * io_uring loop, with tls/ in the middle once STARTTLS succeeds (see smtp_session.h).
 *
 * Data path: recv into `in` (ciphertext after STARTTLS) -> tls_conn_feed/read into
 * `plain` -> reply parser -> smtp_client_step -> command -> tls_conn_write/drain (or a
 * plain copy) into `out` -> send. One recv and one send at most are in flight; each has
 * a timeout. The session is freed only from on_release, when the loop says nothing is
 * in flight.
 *
 * Body path (state BODY): source -> smtp_dotstuff_encode into `plain` (one TLS record's
 * worth) -> tls_conn_write -> drain into `out` -> send; the next chunk is made when
 * that send has completed, so the body never occupies more than the fixed buffers.
 * `plain` only carries a chunk within one call, as it only carries received plaintext
 * within one call, so the two never meet. A recv stays armed meanwhile: a receiver that
 * replies early or hangs up ends the transaction at once, not after 50 MB.
 *
 * Owner callbacks (delivery mode) run from session_act(), which first reports a
 * transaction the last step ended (txn_done), then acts; READY calls ready. The owner
 * may call smtp_session_deliver/quit from ready, which re-enters session_act: safe,
 * because session_act is always the last thing its callers do with the state.
 */
#include "engine/smtp_session.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/addr.h"
#include "engine/errors.h"
#include "engine/log.h"
#include "engine/smtp_dotstuff.h"

#define SESSION_IN_MAX 16384
#define SESSION_OUT_MAX                                                                  \
    20480                        /* a TLS flight (certificate chains) fits, and one full \
                                  * TLS record of body with its overhead */
#define SESSION_BODY_CHUNK 16384 /* plaintext per body chunk: one TLS record */

struct smtp_session {
    struct eng_loop *loop;
    eng_handle_t h;
    int fd;
    struct smtp_session_config cfg;
    char mx_name[256];
    char helo_name[256];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct sockaddr_storage source;
    socklen_t source_len; /* 0: not bound */

    struct smtp_client sm;
    struct tls_conn *tls;
    bool closing;               /* CLOSE decided: flush `out`, then close */
    bool idle;                  /* delivery: READY reported, the owner may deliver/quit */
    uint64_t reply_deadline_ms; /* loop time by which the awaited reply (or TLS flight)
                                 * must be complete */
    uint64_t send_deadline_ms;  /* ... by which all of `out` must be sent */
    uint64_t recv_deadline_ms;  /* the deadline the recv in flight was armed with */
    uint64_t idle_deadline_ms;  /* ... by which the owner must decide in READY */
    smtp_session_done_fn done;
    void *done_arg;
    const struct smtp_session_ops *ops; /* delivery mode; NULL for the probe */

    /* The transaction under way (borrowed from the owner) and its body's progress. */
    const struct smtp_txn *txn;
    struct smtp_dotstuff ds;
    uint64_t body_off;     /* source bytes consumed */
    const char *body_view; /* the source's current piece, not yet encoded */
    size_t body_view_len;
    bool body_eof;

    struct smtp_reply_parser rp;
    struct smtp_reply reply;

    size_t out_len, out_off;
    char in[SESSION_IN_MAX];
    char plain[SESSION_IN_MAX];
    char out[SESSION_OUT_MAX];
};

static void session_act(struct smtp_session *s, enum smtpc_action act);

static void session_step(struct smtp_session *s, const struct smtpc_event *ev)
{
    session_act(s, smtp_client_step(&s->sm, ev));
}

static void session_fail(struct smtp_session *s, int err)
{
    struct smtpc_event ev = { .kind = SMTPC_EV_ERROR, .err = err };
    session_step(s, &ev);
}

/* Every decision is logged with its evidence, one greppable line per connection. */
static void log_decision(const struct smtp_session *s)
{
    const struct smtp_client *c = &s->sm;
    const struct tls_evidence *ev = &c->verdict.ev;
    char fp[65] = "";
    if (ev->has_cert)
        tls_evidence_fingerprint(ev, fp, sizeof(fp));
    if (c->outcome == SMTPC_OUTCOME_ERROR) {
        eng_log(ENG_LOG_INFO, "tls-floor peer=%s result=error state=%s error=\"%s\" last=\"%s\"",
                c->peer, smtpc_state_name(c->err_state), eng_describe_error(c->err), c->last_reply);
        return;
    }
    eng_log(ENG_LOG_INFO,
            "tls-floor peer=%s result=%s policy=%s%s reason=%s version=%s cipher=%s resumed=%d "
            "subject=\"%s\" issuer=\"%s\" not_after=%lld sha256=%s detail=\"%s\"",
            c->peer, smtpc_outcome_name(c->outcome), c->opportunistic ? "opportunistic" : "floor",
            c->plaintext ? " transport=plaintext" : "", tls_reason_name(c->verdict.reason),
            ev->version ? tls_version_name(ev->version) : "-", ev->cipher[0] ? ev->cipher : "-",
            ev->resumed, ev->subject, ev->issuer, (long long)ev->not_after, fp[0] ? fp : "-",
            ev->detail);
    /* A delivery session can pass the floor and fail later (timeout, lost connection,
     * 421): that ended its transactions, so say so. */
    if (c->mode == SMTPC_MODE_DELIVER && c->err != 0)
        eng_log(ENG_LOG_INFO,
                "smtp-session peer=%s result=error state=%s error=\"%s\" last=\"%s\" "
                "transactions=%llu",
                c->peer, smtpc_state_name(c->err_state), eng_describe_error(c->err), c->last_reply,
                (unsigned long long)c->txns);
}

static void session_finish(struct smtp_session *s)
{
    s->idle = false;
    if (s->done) {
        log_decision(s);
        smtp_session_done_fn done = s->done;
        s->done = NULL;
        done(s->done_arg, &s->sm);
    }
    eng_handle_close(s->loop, s->h);
}

/* The reply timeout is a deadline for the whole reply, not for each read: a receiver
 * that trickles a byte at a time cannot stretch a session past it. It starts when the
 * last byte of a command (or TLS flight) is sent, or at connect for the greeting. */
static void start_reply_clock(struct smtp_session *s)
{
    s->reply_deadline_ms = eng_loop_now_ms(s->loop) + s->cfg.reply_timeout_ms;
}

static unsigned ms_left(const struct smtp_session *s, uint64_t deadline)
{
    uint64_t now = eng_loop_now_ms(s->loop);
    return deadline > now ? (unsigned)(deadline - now) : 1;
}

/* A recv may outlive the reply it was armed for: pipelined replies come in several
 * reads, and the recv armed after the first can still be waiting when the body starts
 * or when the next reply is due. So its timeout is checked against the deadline of
 * the moment (on_recv), and one armed with a later deadline than the current one is
 * cancelled and armed again (the -ECANCELED completion re-arms). During BODY the recv
 * only listens for an early reply or a hang-up; the body's send deadlines bound BODY. */
static void arm_recv(struct smtp_session *s)
{
    if (s->closing ||
        (s->sm.state == SMTPC_READY && eng_loop_now_ms(s->loop) >= s->idle_deadline_ms))
        return;
    /* READY waits for the owner, not for the receiver; the read armed meanwhile only
     * notices a hang-up or a 421, so it lives as long as the idle deadline. */
    uint64_t deadline = s->sm.state == SMTPC_BODY
                                ? eng_loop_now_ms(s->loop) + s->cfg.send_timeout_ms
                        : s->sm.state == SMTPC_READY ? s->idle_deadline_ms
                                                     : s->reply_deadline_ms;
    if (eng_handle_busy(s->loop, s->h, ENG_OP_RECV)) {
        if (s->recv_deadline_ms > deadline && s->sm.state != SMTPC_BODY)
            eng_op_cancel(s->loop, s->h, ENG_OP_RECV);
        return;
    }
    s->recv_deadline_ms = deadline;
    int rc = eng_op_recv(s->loop, s->h, s->in, sizeof(s->in), ms_left(s, deadline));
    if (rc < 0)
        session_fail(s, rc);
}

static void body_pump(struct smtp_session *s);

/* Sends what is in `out`; when it is all gone, either closes (if closing), makes the
 * next body chunk (in BODY), or waits for the reply. */
static void flush_out(struct smtp_session *s)
{
    if (eng_handle_busy(s->loop, s->h, ENG_OP_SEND))
        return;
    if (s->out_off < s->out_len) {
        /* One deadline for the whole buffer: partial sends do not restart it. */
        if (s->out_off == 0)
            s->send_deadline_ms = eng_loop_now_ms(s->loop) + s->cfg.send_timeout_ms;
        int rc = eng_op_send(s->loop, s->h, s->out + s->out_off, s->out_len - s->out_off,
                             ms_left(s, s->send_deadline_ms));
        if (rc < 0 && !s->closing)
            session_fail(s, rc);
        else if (rc < 0)
            session_finish(s);
        return;
    }
    s->out_off = s->out_len = 0;
    if (s->closing) {
        session_finish(s);
        return;
    }
    if (s->sm.state == SMTPC_BODY) {
        body_pump(s);
        return;
    }
    start_reply_clock(s);
    arm_recv(s);
}

/* Appends pending TLS ciphertext to `out`. Returns 0 or -ENOBUFS. */
static int take_tls_output(struct smtp_session *s)
{
    while (tls_conn_pending(s->tls) > 0) {
        if (s->out_len == sizeof(s->out))
            return -ENOBUFS;
        s->out_len += tls_conn_drain(s->tls, s->out + s->out_len, sizeof(s->out) - s->out_len);
    }
    return 0;
}

static int queue_command(struct smtp_session *s)
{
    if (s->tls) {
        int rc = tls_conn_write(s->tls, s->sm.cmd, s->sm.cmd_len);
        return rc < 0 ? rc : take_tls_output(s);
    }
    if (s->sm.cmd_len > sizeof(s->out) - s->out_len)
        return -ENOBUFS;
    memcpy(s->out + s->out_len, s->sm.cmd, s->sm.cmd_len);
    s->out_len += s->sm.cmd_len;
    return 0;
}

/* ---- the body --------------------------------------------------------------------- */

/* The source's next piece into body_view (or body_eof). Returns 0 or its error. */
static int body_next(struct smtp_session *s)
{
    const struct smtp_txn *t = s->txn;
    if (t->body_read == NULL) {
        s->body_view = t->body + s->body_off;
        s->body_view_len = t->body_len - (size_t)s->body_off;
    } else {
        const char *data = NULL;
        size_t len = 0;
        int rc = t->body_read(t->body_arg, s->body_off, &data, &len);
        if (rc < 0)
            return rc;
        s->body_view = data;
        s->body_view_len = data ? len : 0;
    }
    s->body_eof = s->body_view_len == 0;
    return 0;
}

/* Encodes up to cap bytes of body (and, at its end, the final ".") into dst. Returns
 * 0 with *n bytes made, or the source's error. */
static int body_fill(struct smtp_session *s, char *dst, size_t cap, size_t *n)
{
    size_t o = 0;
    while (o < cap && !s->ds.finished) {
        if (s->body_view_len == 0 && !s->body_eof) {
            int rc = body_next(s);
            if (rc < 0)
                return rc;
        }
        if (s->body_eof) {
            o += smtp_dotstuff_finish(&s->ds, dst + o, cap - o);
            break; /* finished, or no room: the end goes in the next chunk */
        }
        size_t used = 0;
        size_t w = smtp_dotstuff_encode(&s->ds, s->body_view, s->body_view_len, &used, dst + o,
                                        cap - o);
        o += w;
        s->body_view += used;
        s->body_view_len -= used;
        s->body_off += used;
        if (w == 0 && used == 0)
            break; /* too little room for a line break: next chunk */
    }
    *n = o;
    return 0;
}

static void body_start(struct smtp_session *s)
{
    smtp_dotstuff_init(&s->ds);
    s->body_off = 0;
    s->body_view = NULL;
    s->body_view_len = 0;
    s->body_eof = false;
    arm_recv(s);
    body_pump(s);
}

/* Makes and sends the next chunk once `out` is empty; after the last one, tells the
 * client, which then waits for the reply to the end of data. */
static void body_pump(struct smtp_session *s)
{
    if (eng_handle_busy(s->loop, s->h, ENG_OP_SEND) || s->out_len > 0) {
        flush_out(s); /* comes back here when `out` is empty */
        return;
    }
    if (s->ds.finished) {
        unsigned t =
                s->cfg.data_done_timeout_ms ? s->cfg.data_done_timeout_ms : s->cfg.reply_timeout_ms;
        s->reply_deadline_ms = eng_loop_now_ms(s->loop) + t;
        struct smtpc_event ev = { .kind = SMTPC_EV_BODY_SENT };
        session_step(s, &ev);
        return;
    }
    char *dst = s->tls ? s->plain : s->out;
    size_t cap = s->tls ? SESSION_BODY_CHUNK : sizeof(s->out);
    size_t n = 0;
    int rc = body_fill(s, dst, cap, &n);
    if (rc == 0 && n == 0)
        rc = -EIO; /* cannot happen with 16 KB of room; never spin on it */
    if (rc == 0 && s->tls) {
        rc = tls_conn_write(s->tls, dst, n);
        if (rc == 0)
            rc = take_tls_output(s);
    } else if (rc == 0) {
        s->out_len = n;
    }
    if (rc < 0) {
        /* The final "." is never sent after a failure: the receiver drops the
         * unfinished message when the connection closes. */
        session_fail(s, rc);
        return;
    }
    flush_out(s);
}

/* ---- the owner (delivery mode) ------------------------------------------------------ */

static void report_ended(struct smtp_session *s)
{
    const struct smtp_txn *t = smtp_client_take_ended(&s->sm);
    if (t == NULL)
        return;
    s->txn = NULL;
    if (s->ops && s->ops->txn_done)
        s->ops->txn_done(s->done_arg, s, t);
}

/* The idle timer is lazy: it is never cancelled, and when it fires it checks whether
 * the session is still waiting for the owner and for how long. */
static void arm_idle_timer(struct smtp_session *s)
{
    if (eng_handle_busy(s->loop, s->h, ENG_OP_TIMER))
        return;
    int rc = eng_op_timer(s->loop, s->h, ms_left(s, s->idle_deadline_ms));
    if (rc < 0)
        session_fail(s, rc);
}

static void become_idle(struct smtp_session *s)
{
    unsigned t = s->cfg.idle_timeout_ms ? s->cfg.idle_timeout_ms : s->cfg.reply_timeout_ms;
    s->idle = true;
    s->idle_deadline_ms = eng_loop_now_ms(s->loop) + t;
    arm_idle_timer(s);
    arm_recv(s);
    if (s->idle && s->ops && s->ops->ready)
        s->ops->ready(s->done_arg, s);
}

static void on_idle_timer(struct smtp_session *s, int res)
{
    if (res == -ECANCELED || !s->idle || s->closing)
        return;
    if (eng_loop_now_ms(s->loop) < s->idle_deadline_ms) {
        arm_idle_timer(s);
        return;
    }
    eng_log(ENG_LOG_DEBUG, "smtp-session peer=%s idle timeout: QUIT", s->sm.peer);
    smtp_session_quit(s);
}

int smtp_session_deliver(struct smtp_session *s, const struct smtp_txn *txn)
{
    if (!s->idle || s->closing)
        return -EBUSY;
    enum smtpc_action act;
    int rc = smtp_client_begin(&s->sm, txn, &act);
    if (rc < 0)
        return rc;
    if (act == SMTPC_ACT_IDLE) {
        smtp_client_take_ended(&s->sm); /* the caller has it: no txn_done */
        return SMTP_TXN_DECIDED;
    }
    s->idle = false;
    s->txn = txn;
    session_act(s, act);
    return SMTP_TXN_STARTED;
}

int smtp_session_quit(struct smtp_session *s)
{
    if (!s->idle || s->closing)
        return -EBUSY;
    enum smtpc_action act;
    int rc = smtp_client_quit(&s->sm, &act);
    if (rc < 0)
        return rc;
    s->idle = false;
    session_act(s, act);
    return 0;
}

const struct smtp_client *smtp_session_client(const struct smtp_session *s)
{
    return &s->sm;
}

/* ---- TLS and dispatch ----------------------------------------------------------------- */

static void tls_advance(struct smtp_session *s)
{
    bool done = false;
    int rc = tls_conn_handshake(s->tls, &done);
    int out_rc = take_tls_output(s);
    if (rc < 0 || out_rc < 0) {
        /* The verdict says why; a pending alert goes out before the close. */
        struct smtpc_event ev = { .kind = SMTPC_EV_TLS_FAILED,
                                  .verdict = tls_conn_verdict(s->tls) };
        session_step(s, &ev);
        return;
    }
    if (done) {
        struct smtpc_event ev = { .kind = SMTPC_EV_TLS_DONE, .verdict = tls_conn_verdict(s->tls) };
        session_step(s, &ev);
        return;
    }
    flush_out(s);
}

static void start_tls(struct smtp_session *s)
{
    int rc = tls_conn_new_client(s->cfg.tls, s->mx_name, s->cfg.tls_cache, NULL, &s->tls);
    if (rc < 0) {
        session_fail(s, rc);
        return;
    }
    tls_advance(s);
}

static void session_act(struct smtp_session *s, enum smtpc_action act)
{
    int rc;
    report_ended(s);
    switch (act) {
    case SMTPC_ACT_RECV: arm_recv(s); return;
    case SMTPC_ACT_SEND:
        rc = queue_command(s);
        if (rc < 0)
            session_fail(s, rc);
        else
            flush_out(s);
        return;
    case SMTPC_ACT_TLS: start_tls(s); return;
    case SMTPC_ACT_CLOSE:
        s->closing = true;
        s->idle = false;
        flush_out(s);
        return;
    case SMTPC_ACT_IDLE: become_idle(s); return;
    case SMTPC_ACT_BODY: body_start(s); return;
    }
}

/* Runs the reply parser over plaintext; each complete reply is one event. Bytes left
 * after a reply that the dialogue did not ask for are a protocol violation — after the
 * STARTTLS 220 they would be the classic injection (CVE-2011-0411 and kin). */
static void parse_replies(struct smtp_session *s, const char *data, size_t len)
{
    while (len > 0 && !s->closing) {
        size_t used = 0;
        bool complete = false;
        int rc = smtp_reply_parse(&s->rp, &s->reply, data, len, &used, &complete);
        if (rc < 0) {
            session_fail(s, rc);
            return;
        }
        data += used;
        len -= used;
        if (!complete)
            return;
        struct smtpc_event ev = { .kind = SMTPC_EV_REPLY, .reply = &s->reply };
        enum smtpc_action act = smtp_client_step(&s->sm, &ev);
        smtp_reply_reset(&s->rp, &s->reply);
        if (len > 0 && act != SMTPC_ACT_RECV && act != SMTPC_ACT_CLOSE) {
            session_fail(s, act == SMTPC_ACT_TLS ? SMTP_ERR_INJECTION : SMTP_ERR_UNEXPECTED);
            return;
        }
        session_act(s, act);
    }
}

static void on_tls_input(struct smtp_session *s, size_t n)
{
    int rc = tls_conn_feed(s->tls, s->in, n);
    if (rc < 0) {
        session_fail(s, rc);
        return;
    }
    if (s->sm.state == SMTPC_TLS) {
        tls_advance(s);
        if (s->closing || s->sm.state == SMTPC_TLS)
            return;
    }
    for (;;) {
        size_t got = 0;
        rc = tls_conn_read(s->tls, s->plain, sizeof(s->plain), &got);
        if (rc == TLS_ERR_CLOSED)
            rc = SMTP_ERR_CLOSED;
        if (rc < 0) {
            session_fail(s, rc);
            return;
        }
        if (got == 0)
            break;
        parse_replies(s, s->plain, got);
        if (s->closing)
            return;
    }
    /* Reading may have produced ciphertext (key updates); it goes out with the next
     * command, or now if nothing else is queued. */
    if (take_tls_output(s) < 0)
        session_fail(s, -ENOBUFS);
    else if (s->out_len > 0)
        flush_out(s);
    else
        arm_recv(s);
}

static void on_recv(struct smtp_session *s, int res)
{
    /* Cancelled by arm_recv to change its deadline, or timed out under a deadline
     * that is no longer the one that counts: wait again under the current one. */
    if (res == -ECANCELED ||
        (res == -ETIMEDOUT && (s->sm.state == SMTPC_BODY || s->sm.state == SMTPC_READY ||
                               eng_loop_now_ms(s->loop) < s->reply_deadline_ms))) {
        arm_recv(s);
        return;
    }
    if (res == 0) {
        session_fail(s, SMTP_ERR_CLOSED);
        return;
    }
    if (res < 0) {
        session_fail(s, res);
        return;
    }
    if (s->tls) {
        on_tls_input(s, (size_t)res);
        return;
    }
    parse_replies(s, s->in, (size_t)res);
    if (!s->closing && !eng_handle_busy(s->loop, s->h, ENG_OP_SEND))
        arm_recv(s);
}

static void on_send(struct smtp_session *s, int res)
{
    if (res < 0) {
        if (s->closing) {
            session_finish(s);
            return;
        }
        session_fail(s, res);
        return;
    }
    s->out_off += (size_t)res;
    flush_out(s);
}

static void on_complete(void *ctx, const struct eng_completion *comp)
{
    struct smtp_session *s = ctx;
    switch (comp->op) {
    case ENG_OP_CONNECT:
        if (comp->res < 0) {
            session_fail(s, comp->res);
        } else {
            struct smtpc_event ev = { .kind = SMTPC_EV_CONNECTED };
            start_reply_clock(s);
            session_step(s, &ev);
        }
        return;
    case ENG_OP_RECV: on_recv(s, comp->res); return;
    case ENG_OP_SEND: on_send(s, comp->res); return;
    case ENG_OP_TIMER: on_idle_timer(s, comp->res); return;
    default: return;
    }
}

static void on_release(void *ctx)
{
    struct smtp_session *s = ctx;
    tls_conn_free(s->tls);
    close(s->fd);
    free(s);
}

static const struct eng_handle_ops session_ops = {
    .on_complete = on_complete,
    .on_release = on_release,
};

static int copy_name(char *dst, size_t cap, const char *src)
{
    if (!src || !*src || strlen(src) >= cap)
        return -EINVAL;
    strcpy(dst, src);
    return 0;
}

static int session_start(struct eng_loop *loop, const struct smtp_session_config *cfg,
                         const struct sockaddr *addr, socklen_t addrlen, enum smtpc_mode mode,
                         smtp_session_done_fn done, const struct smtp_session_ops *ops, void *arg)
{
    if (!cfg->tls || addrlen > sizeof(struct sockaddr_storage) || !cfg->connect_timeout_ms ||
        !cfg->reply_timeout_ms || !cfg->send_timeout_ms ||
        (cfg->source &&
         (cfg->source_len == 0 || cfg->source_len > sizeof(struct sockaddr_storage) ||
          cfg->source->sa_family != addr->sa_family)))
        return -EINVAL;
    struct smtp_session *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->loop = loop;
    s->cfg = *cfg;
    s->done = done;
    s->done_arg = arg;
    s->ops = ops;
    int rc = copy_name(s->mx_name, sizeof(s->mx_name), cfg->mx_name);
    if (rc == 0)
        rc = copy_name(s->helo_name, sizeof(s->helo_name), cfg->helo_name);
    char where[64], peer[330];
    snprintf(peer, sizeof(peer), "%s[%s]", s->mx_name, eng_addr_format(addr, where, sizeof(where)));
    if (rc == 0)
        rc = smtp_client_init_mode(&s->sm, mode, s->helo_name, peer);
    if (rc == 0 && cfg->opportunistic)
        smtp_client_set_opportunistic(&s->sm, true);
    if (rc < 0) {
        free(s);
        return rc;
    }
    s->cfg.mx_name = s->mx_name;
    s->cfg.helo_name = s->helo_name;
    memcpy(&s->addr, addr, addrlen);
    s->addrlen = addrlen;
    s->cfg.source = NULL;
    if (cfg->source && cfg->source_len <= sizeof(s->source)) {
        memcpy(&s->source, cfg->source, cfg->source_len);
        s->source_len = cfg->source_len;
    }
    smtp_reply_reset(&s->rp, &s->reply);

    s->fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    if (s->fd < 0) {
        rc = -errno;
        free(s);
        return rc;
    }
    /* Commands are small and each waits for its reply: Nagle would only add latency. */
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (s->source_len) {
        /* The port is picked at connect, against the destination: thousands of
         * connections from one source address do not exhaust its ephemeral ports. */
        setsockopt(s->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(s->fd, (const struct sockaddr *)&s->source, s->source_len) < 0) {
            rc = -errno;
            close(s->fd);
            free(s);
            return rc;
        }
    }

    rc = eng_handle_open(loop, s->fd, &session_ops, s, &s->h);
    if (rc < 0) {
        close(s->fd);
        free(s);
        return rc;
    }
    rc = eng_op_connect(loop, s->h, (const struct sockaddr *)&s->addr, s->addrlen,
                        cfg->connect_timeout_ms);
    if (rc < 0) {
        /* on_release frees s once the loop has processed the close. */
        s->done = NULL;
        eng_handle_close(loop, s->h);
        return rc;
    }
    return 0;
}

int smtp_session_start(struct eng_loop *loop, const struct smtp_session_config *cfg,
                       const struct sockaddr *addr, socklen_t addrlen, smtp_session_done_fn done,
                       void *arg)
{
    return session_start(loop, cfg, addr, addrlen, SMTPC_MODE_PROBE, done, NULL, arg);
}

int smtp_session_start_delivery(struct eng_loop *loop, const struct smtp_session_config *cfg,
                                const struct sockaddr *addr, socklen_t addrlen,
                                const struct smtp_session_ops *ops, void *arg)
{
    if (ops == NULL || ops->ready == NULL || ops->done == NULL)
        return -EINVAL;
    return session_start(loop, cfg, addr, addrlen, SMTPC_MODE_DELIVER, ops->done, ops, arg);
}
