/*
 * bench/load_session.c — one floormta-load submission connection: the SMTP client as
 * an explicit state machine (RFC 5321, RFC 2920 PIPELINING) and its I/O on the loop.
 *
 *   connect -> greeting -> EHLO -> [wait for a rate token] -> MAIL -> RCPT -> DATA
 *           -> header + shared body + "." -> 250 -> the next message ... -> QUIT
 *
 * Each message has one recipient, u<seq>@d<seq % K>.<suffix>, so consecutive messages
 * go to different domains. With PIPELINING, MAIL, RCPT and DATA leave in one send and
 * their replies are taken in order; the states are the same either way, only the
 * moment a command is sent differs. After a refused MAIL or RCPT the transaction is
 * failed: the remaining replies are read, RSET resets the server, and the next message
 * begins (RFC 5321 4.1.1.5). After a 250 to the end of data no RSET is needed.
 *
 * Only set_state() writes s->state; step() is the one function that reacts to events
 * (connected, a complete reply, a rate token) and dispatches to one handler per state.
 *
 * I/O: one recv armed at all times while connected (a reply may come at any moment:
 * 421 from an idle timeout), at most one send in flight. Output is the session's own
 * buffer (commands, the message header) followed, once it is drained, by the shared
 * body; bytes appended while a send is in flight go behind the region in flight.
 * Closing goes through eng_handle_close(); on_release closes the fd and marks the
 * session closed; the run's ticker restarts it LOAD_RETRY_MS later if it still has
 * work. Nothing is freed inside a completion.
 */
#include "bench/load.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/log.h"

#define LOAD_STATES(X)             \
    X(LOAD_S_CLOSED, "closed")     \
    X(LOAD_S_CONNECT, "connect")   \
    X(LOAD_S_GREETING, "greeting") \
    X(LOAD_S_EHLO, "ehlo")         \
    X(LOAD_S_WAIT, "wait")         \
    X(LOAD_S_MAIL, "mail")         \
    X(LOAD_S_RCPT, "rcpt")         \
    X(LOAD_S_DATA, "data")         \
    X(LOAD_S_BODY, "body")         \
    X(LOAD_S_RSET, "rset")         \
    X(LOAD_S_QUIT, "quit")         \
    X(LOAD_S_DONE, "done")

enum load_state {
#define LOAD_STATE_ENUM(name, str) name,
    LOAD_STATES(LOAD_STATE_ENUM)
#undef LOAD_STATE_ENUM
            LOAD_S__COUNT
};

static const char *const state_names[] = {
#define LOAD_STATE_NAME(name, str) [name] = str,
    LOAD_STATES(LOAD_STATE_NAME)
#undef LOAD_STATE_NAME
};

enum load_event {
    LOAD_EV_CONNECTED,
    LOAD_EV_REPLY, /* s->code and s->reason hold the complete reply */
    LOAD_EV_TOKEN, /* a rate token was granted */
};

struct load_session {
    struct load_run *run; /* borrowed */
    unsigned idx;
    enum load_state state; /* written only by set_state() */
    eng_handle_t h;
    int fd;
    bool closing;
    uint64_t retry_at_ms; /* closed: not restarted before this */

    bool pipelining; /* offered by the server and allowed by --no-pipelining */
    bool failed;     /* the transaction was refused: read the rest, RSET */
    uint64_t seq;    /* the current message */
    uint64_t ts_ns;  /* its X-Floormta-Load-Ts (CLOCK_REALTIME at MAIL) */
    uint64_t mail_ns;

    /* the reply being read */
    int code;
    char reason[16]; /* "550 5.1.1" of its first line */

    size_t rlen;
    struct load_out o; /* commands or headers in out, then the shared body */

    char rbuf[LOAD_RBUF_CAP];
    char out[LOAD_OUT_CAP];
};

static void set_state(struct load_session *s, enum load_state next)
{
    if (next != s->state && eng_log_enabled(ENG_LOG_DEBUG))
        eng_log(ENG_LOG_DEBUG, "load: conn=%u %s -> %s", s->idx, state_names[s->state],
                state_names[next]);
    s->state = next;
}

/* ---- I/O --------------------------------------------------------------------------- */

static void conn_close(struct load_session *s, const char *why, bool error)
{
    if (s->closing)
        return;
    s->closing = true;
    if (error) {
        s->run->c.conn_errors++;
        s->run->errors_in_row++;
        /* A transaction in flight is lost: counted, never retried (the daemon may have
         * queued it after all, so a retry could deliver it twice). */
        if (s->state >= LOAD_S_MAIL && s->state <= LOAD_S_BODY && !s->failed)
            s->run->c.lost++;
        eng_log(ENG_LOG_WARN, "load: conn=%u %s in state %s", s->idx, why, state_names[s->state]);
    }
    eng_handle_close(s->run->loop, s->h);
}

/* Sends what is queued, if nothing is in flight: the own buffer first, then the body. */
static void flush(struct load_session *s)
{
    if (s->closing)
        return;
    const char *buf;
    size_t len;
    if (!load_out_next(&s->o, s->out, s->run->body, s->run->body_len, &buf, &len))
        return;
    int err = eng_op_send(s->run->loop, s->h, buf, len, s->run->cfg->timeout_ms);
    if (err != 0) {
        conn_close(s, eng_strerror(err), true);
        return;
    }
    s->o.sending = len;
}

/* Appends text to the output and sends it. The caller keeps within LOAD_OUT_CAP. */
static void put(struct load_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct load_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(s->out + s->o.len, LOAD_OUT_CAP - s->o.len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= LOAD_OUT_CAP - s->o.len) {
        conn_close(s, "output buffer overflow", true);
        return;
    }
    s->o.len += (size_t)n;
}

static void arm_recv(struct load_session *s)
{
    int err = eng_op_recv(s->run->loop, s->h, s->rbuf + s->rlen, LOAD_RBUF_CAP - s->rlen,
                          s->run->cfg->timeout_ms);
    if (err != 0)
        conn_close(s, eng_strerror(err), true);
}

/* ---- the state machine ------------------------------------------------------------------ */

static void step(struct load_session *s, enum load_event ev);

static void refusal(struct load_session *s, const char *stage)
{
    char text[LOAD_REASON_LEN];
    snprintf(text, sizeof(text), "%s %s", stage, s->reason);
    load_run_refusal(s->run, text);
    s->failed = true;
}

/* Begins the next transaction, waits for a token, or quits. */
static void next_message(struct load_session *s)
{
    s->failed = false;
    int r = load_run_take(s->run, s->idx, &s->seq);
    if (r == 0) {
        set_state(s, LOAD_S_WAIT);
        return;
    }
    if (r < 0) {
        put(s, "QUIT\r\n");
        set_state(s, LOAD_S_QUIT);
        flush(s);
        return;
    }
    const struct load_config *cfg = s->run->cfg;
    s->mail_ns = load_realtime_ns();
    s->ts_ns = s->mail_ns;
    s->run->c.started++;
    put(s, "MAIL FROM:<%s>\r\n", cfg->from);
    if (s->pipelining)
        put(s, "RCPT TO:<u%llu@d%04u.%s>\r\nDATA\r\n", (unsigned long long)s->seq,
            (unsigned)(s->seq % cfg->domains), cfg->suffix);
    set_state(s, LOAD_S_MAIL);
    flush(s);
}

/* The header of message s->seq, then the shared body (which ends the header). */
static void send_message(struct load_session *s)
{
    const struct load_config *cfg = s->run->cfg;
    unsigned dom = (unsigned)(s->seq % cfg->domains);
    unsigned long long seq = (unsigned long long)s->seq;
    put(s,
        "From: <%s>\r\nTo: <u%llu@d%04u.%s>\r\nSubject: floormta-load %llu\r\n"
        "Message-ID: <%llu.%llu@floormta-load.invalid>\r\n" LOAD_SEQ_HEADER
        ": %llu\r\n" LOAD_TS_HEADER ": %llu\r\n",
        cfg->from, seq, dom, cfg->suffix, seq, seq, (unsigned long long)s->run->run_id, seq,
        (unsigned long long)s->ts_ns);
    s->o.body_queued = true;
    s->o.body_sent = 0;
    set_state(s, LOAD_S_BODY);
    flush(s);
}

static void on_greeting(struct load_session *s)
{
    if (s->code != 220) {
        refusal(s, "greeting");
        put(s, "QUIT\r\n");
        set_state(s, LOAD_S_QUIT);
        flush(s);
        return;
    }
    s->run->c.connections++;
    s->run->errors_in_row = 0;
    put(s, "EHLO %s\r\n", s->run->cfg->helo);
    set_state(s, LOAD_S_EHLO);
    flush(s);
}

static void on_ehlo(struct load_session *s)
{
    if (s->code != 250) {
        refusal(s, "ehlo");
        put(s, "QUIT\r\n");
        set_state(s, LOAD_S_QUIT);
        flush(s);
        return;
    }
    next_message(s);
}

static void on_mail(struct load_session *s)
{
    if (s->code != 250)
        refusal(s, "mail");
    set_state(s, LOAD_S_RCPT);
    if (!s->pipelining) {
        if (s->failed) {
            put(s, "RSET\r\n");
            set_state(s, LOAD_S_RSET);
        } else {
            const struct load_config *cfg = s->run->cfg;
            put(s, "RCPT TO:<u%llu@d%04u.%s>\r\n", (unsigned long long)s->seq,
                (unsigned)(s->seq % cfg->domains), cfg->suffix);
        }
        flush(s);
    }
}

static void on_rcpt(struct load_session *s)
{
    if (s->code != 250 && s->code != 251 && !s->failed)
        refusal(s, "rcpt");
    set_state(s, LOAD_S_DATA);
    if (!s->pipelining) {
        if (s->failed) {
            put(s, "RSET\r\n");
            set_state(s, LOAD_S_RSET);
        } else {
            put(s, "DATA\r\n");
        }
        flush(s);
    }
}

static void on_data(struct load_session *s)
{
    if (s->code == 354 && !s->failed) {
        send_message(s);
        return;
    }
    if (s->code == 354) {
        /* Refused recipient but DATA accepted anyway (should not happen): an empty
         * message ends the transaction; its reply is read in BODY and ignored. */
        put(s, ".\r\n");
        set_state(s, LOAD_S_BODY);
        flush(s);
        return;
    }
    if (!s->failed)
        refusal(s, "data");
    put(s, "RSET\r\n");
    set_state(s, LOAD_S_RSET);
    flush(s);
}

static void on_body(struct load_session *s)
{
    if (s->failed) {
        next_message(s);
        return;
    }
    if (s->code == 250) {
        s->run->c.injected++;
        uint64_t us = (load_realtime_ns() - s->mail_ns) / 1000;
        s->run->c.inject_latency[bench_lat_bucket(us)]++;
    } else {
        refusal(s, "end-of-data");
    }
    next_message(s);
}

static void on_quit(struct load_session *s)
{
    set_state(s, LOAD_S_DONE);
    conn_close(s, "quit", false);
}

static void step(struct load_session *s, enum load_event ev)
{
    if (ev == LOAD_EV_CONNECTED) {
        set_state(s, LOAD_S_GREETING);
        arm_recv(s);
        return;
    }
    if (ev == LOAD_EV_TOKEN) {
        if (s->state == LOAD_S_WAIT)
            next_message(s);
        return;
    }
    if (s->code == 421) {
        /* The server is closing (shutdown, idle timeout): not a refusal of a message
         * unless one was in flight. */
        if (s->state >= LOAD_S_MAIL && s->state <= LOAD_S_BODY)
            refusal(s, state_names[s->state]);
        set_state(s, LOAD_S_CLOSED);
        conn_close(s, "421", false);
        return;
    }
    switch (s->state) {
    case LOAD_S_GREETING: on_greeting(s); break;
    case LOAD_S_EHLO: on_ehlo(s); break;
    case LOAD_S_MAIL: on_mail(s); break;
    case LOAD_S_RCPT: on_rcpt(s); break;
    case LOAD_S_DATA: on_data(s); break;
    case LOAD_S_BODY: on_body(s); break;
    case LOAD_S_RSET: next_message(s); break;
    case LOAD_S_QUIT: on_quit(s); break;
    case LOAD_S_WAIT:
    case LOAD_S_CLOSED:
    case LOAD_S_CONNECT:
    case LOAD_S_DONE:
    case LOAD_S__COUNT: conn_close(s, "unexpected reply", true); break;
    }
}

/* ---- replies ------------------------------------------------------------------------------ */

/* Takes every complete reply from rbuf, one step each; keeps a partial line. */
static void take_replies(struct load_session *s)
{
    size_t pos = 0;
    bool first = true; /* the next line starts a reply */
    size_t reply_start = 0;
    while (!s->closing) {
        char *nl = memchr(s->rbuf + pos, '\n', s->rlen - pos);
        if (nl == NULL)
            break;
        const char *line = s->rbuf + pos;
        size_t len = (size_t)(nl - line);
        if (len < 3 || line[0] < '2' || line[0] > '5') {
            conn_close(s, "malformed reply", true);
            return;
        }
        if (first) {
            reply_start = pos;
            s->code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
            /* "550 5.1.1": the code and, when there is one, the enhanced code. */
            size_t n = 3;
            memcpy(s->reason, line, 3);
            if (len > 5 && line[3] == ' ' && line[4] >= '2' && line[4] <= '5' && line[5] == '.') {
                s->reason[n++] = ' ';
                for (size_t i = 4;
                     i < len && n < 12 && (line[i] == '.' || (line[i] >= '0' && line[i] <= '9'));
                     i++)
                    s->reason[n++] = line[i];
            }
            s->reason[n] = '\0';
            first = false;
        }
        if (s->state == LOAD_S_EHLO && len >= 14 && memcmp(line + 4, "PIPELINING", 10) == 0)
            s->pipelining = s->run->cfg->pipelining;
        pos += len + 1;
        if (len == 3 || line[3] != '-') {
            first = true;
            step(s, LOAD_EV_REPLY);
        }
    }
    (void)reply_start;
    if (s->closing)
        return;
    if (pos == 0 && s->rlen == LOAD_RBUF_CAP) {
        conn_close(s, "reply line too long", true);
        return;
    }
    /* A multi-line reply not yet complete is read again from its first line. */
    if (!first)
        pos = reply_start;
    memmove(s->rbuf, s->rbuf + pos, s->rlen - pos);
    s->rlen -= pos;
}

/* ---- completions ---------------------------------------------------------------------------- */

static void on_complete(void *ctx, const struct eng_completion *comp)
{
    struct load_session *s = ctx;
    if (comp->res == -ECANCELED || s->closing)
        return;
    switch (comp->op) {
    case ENG_OP_TIMER: { /* the retry delay is over: connect */
        const struct load_config *cfg = s->run->cfg;
        set_state(s, LOAD_S_CONNECT);
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
        step(s, LOAD_EV_CONNECTED);
        return;
    case ENG_OP_RECV:
        if (comp->res == -ETIMEDOUT && s->state == LOAD_S_WAIT) {
            arm_recv(s); /* idle while waiting for a token: not the server's fault */
            return;
        }
        if (comp->res <= 0) {
            bool quiet = comp->res == 0 && s->state == LOAD_S_QUIT;
            conn_close(s, comp->res == 0 ? "connection closed" : eng_strerror(comp->res), !quiet);
            return;
        }
        s->rlen += (size_t)comp->res;
        take_replies(s);
        if (!s->closing)
            arm_recv(s);
        return;
    case ENG_OP_SEND:
        if (comp->res < 0) {
            conn_close(s, eng_strerror(comp->res), true);
            return;
        }
        load_out_sent(&s->o, (size_t)comp->res, s->run->body_len);
        flush(s);
        return;
    case ENG_OP_POLL:
    case ENG_OP_ACCEPT:
    case ENG_OP__COUNT: return;
    }
}

static void on_release(void *ctx)
{
    struct load_session *s = ctx;
    close(s->fd);
    s->fd = -1;
    s->h = 0;
    if (s->state != LOAD_S_DONE)
        set_state(s, LOAD_S_CLOSED);
    s->retry_at_ms = eng_loop_now_ms(s->run->loop) + LOAD_RETRY_MS;
}

static const struct eng_handle_ops session_ops = {
    .on_complete = on_complete,
    .on_release = on_release,
};

/* ---- the run's side ----------------------------------------------------------------------- */

void load_sessions_init(struct load_run *run)
{
    run->sessions = calloc(run->cfg->conns, sizeof(*run->sessions));
    if (run->sessions == NULL)
        abort(); /* start-up allocation (STYLE.md 7) */
    for (unsigned i = 0; i < run->cfg->conns; i++) {
        run->sessions[i].run = run;
        run->sessions[i].idx = i;
        run->sessions[i].fd = -1;
        run->sessions[i].state = LOAD_S_CLOSED;
    }
}

void load_sessions_free(struct load_run *run)
{
    free(run->sessions);
    run->sessions = NULL;
}

bool load_session_poke(struct load_run *run, unsigned idx)
{
    struct load_session *s = &run->sessions[idx];
    if (s->state == LOAD_S_DONE)
        return false;
    if (s->state != LOAD_S_CLOSED || s->h != 0)
        return true; /* running, or closing */
    if (run->no_more) {
        set_state(s, LOAD_S_DONE);
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
    s->pipelining = false;
    s->failed = false;
    s->rlen = s->o.len = s->o.sent = s->o.body_sent = s->o.sending = 0;
    s->o.body_queued = false;
    set_state(s, LOAD_S_CONNECT);
    /* Connect through a zero-length timer's completion, so that every op of the
     * session starts from the same place (on_complete) and a start from inside a
     * completion of another handle never recurses. */
    int err = eng_op_timer(run->loop, s->h, 1);
    if (err != 0)
        conn_close(s, eng_strerror(err), true);
    return true;
}

void load_session_token(struct load_run *run, unsigned idx, bool granted)
{
    struct load_session *s = &run->sessions[idx];
    if (s->closing || s->state != LOAD_S_WAIT)
        return;
    if (granted) {
        step(s, LOAD_EV_TOKEN);
        return;
    }
    put(s, "QUIT\r\n");
    set_state(s, LOAD_S_QUIT);
    flush(s);
}

unsigned load_sessions_live(const struct load_run *run)
{
    unsigned n = 0;
    for (unsigned i = 0; i < run->cfg->conns; i++) {
        const struct load_session *s = &run->sessions[i];
        if (s->state != LOAD_S_DONE && !(s->state == LOAD_S_CLOSED && s->h == 0 && run->no_more))
            n++;
    }
    return n;
}

void load_sessions_close_all(struct load_run *run)
{
    for (unsigned i = 0; i < run->cfg->conns; i++) {
        struct load_session *s = &run->sessions[i];
        if (s->h != 0) {
            set_state(s, LOAD_S_DONE);
            conn_close(s, "interrupted", false);
        } else {
            set_state(s, LOAD_S_DONE);
        }
    }
}

const struct load_session_ops load_smtp_session_ops = {
    .init = load_sessions_init,
    .free = load_sessions_free,
    .poke = load_session_poke,
    .token = load_session_token,
    .live = load_sessions_live,
    .close_all = load_sessions_close_all,
};
