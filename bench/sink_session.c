/*
 * bench/sink_session.c — the sink's SMTP dialogue (RFC 5321, 2920 PIPELINING, 3207
 * STARTTLS), as one state machine over plaintext.
 *
 * The I/O side (sink_io.c) hands over whatever plaintext arrived; this file splits it
 * into command lines or body bytes, answers each command in order into the session's
 * output and returns what the I/O side must do next. Nothing here blocks, allocates
 * or touches the loop, so one read holding twenty pipelined commands produces twenty
 * replies that leave in one send.
 *
 * Only set_state() writes s->state, and it logs every transition at debug level.
 */
#define _GNU_SOURCE /* memmem */
#include "bench/sink.h"

#include <string.h>
#include <strings.h>
#include <time.h>

#include "engine/log.h"

static const char *const state_names[] = {
#define SINK_STATE_NAME(name, str) [name] = str,
    SINK_STATES(SINK_STATE_NAME)
#undef SINK_STATE_NAME
};

const char *sink_state_name(enum sink_state st)
{
    return (unsigned)st < SINK_S__COUNT ? state_names[st] : "unknown";
}

static void set_state(struct sink_session *s, enum sink_state next)
{
    if (next != s->state && eng_log_enabled(ENG_LOG_DEBUG))
        eng_log(ENG_LOG_DEBUG, "sink: session=%llu %s -> %s", (unsigned long long)s->id,
                sink_state_name(s->state), sink_state_name(next));
    s->state = next;
}

#define REPLY(s, lit) sink_out_put((s), (lit), sizeof(lit) - 1)

static void reset_transaction(struct sink_session *s)
{
    s->rcpts = 0;
    s->body_bytes = 0;
    s->body_too_big = false;
}

void sink_session_start(struct sink_session *s)
{
    switch (s->lst->profile->mode) {
    case SINK_MODE_STALL: set_state(s, SINK_S_STALL); return;
    case SINK_MODE_FLOOD: set_state(s, SINK_S_FLOOD); return;
    case SINK_MODE_TRICKLE: set_state(s, SINK_S_TRICKLE); return;
    case SINK_MODE_SMTP:
    case SINK_MODE_DROP_DATA: break;
    }
    sink_out_put(s, s->srv->greeting, s->srv->greeting_len);
    set_state(s, SINK_S_GREETED);
}

void sink_session_tls_ready(struct sink_session *s)
{
    /* RFC 3207 4.2: the server forgets everything learnt before the handshake; the
     * client must say EHLO again. */
    reset_transaction(s);
    set_state(s, SINK_S_GREETED);
}

bool sink_session_timeout(struct sink_session *s)
{
    bool can_reply = s->state >= SINK_S_GREETED && s->state <= SINK_S_DATA;
    if (can_reply)
        sink_out_put(s, s->srv->timeout, s->srv->timeout_len);
    set_state(s, SINK_S_QUIT);
    return can_reply;
}

/* ---- commands ------------------------------------------------------------------- */

/* The argument after a verb of n letters: "" at the end, NULL if the verb is followed
 * by something other than a space (so "EHLOX" is not EHLO). */
static const char *verb_arg(const char *line, size_t len, size_t n)
{
    if (len == n)
        return "";
    if (line[n] != ' ')
        return NULL;
    return line + n + 1;
}

static bool has_size_over_limit(const char *args, size_t len)
{
    /* MAIL FROM:<a> SIZE=123 — only the SIZE parameter matters to the sink. */
    for (size_t i = 0; i + 5 < len; i++) {
        if (args[i] != ' ' || strncasecmp(args + i + 1, "SIZE=", 5) != 0)
            continue;
        uint64_t v = 0;
        for (size_t j = i + 6; j < len && args[j] >= '0' && args[j] <= '9'; j++) {
            v = v * 10 + (uint64_t)(args[j] - '0');
            if (v > SINK_MSG_MAX)
                return true;
        }
    }
    return false;
}

static enum sink_action cmd_ehlo(struct sink_session *s, const char *arg, bool extended)
{
    if (*arg == '\0') {
        if (extended)
            REPLY(s, "501 5.5.4 Syntax: EHLO hostname\r\n");
        else
            REPLY(s, "501 5.5.4 Syntax: HELO hostname\r\n");
        return SINK_ACT_MORE;
    }
    /* EHLO / HELO may come at any time outside DATA and reset the transaction. */
    reset_transaction(s);
    if (!extended)
        sink_out_put(s, s->srv->helo, s->srv->helo_len);
    else if (s->lst->profile->starttls != SINK_STARTTLS_NO && s->tls == NULL)
        sink_out_put(s, s->srv->ehlo_starttls, s->srv->ehlo_starttls_len);
    else
        sink_out_put(s, s->srv->ehlo_plain, s->srv->ehlo_plain_len);
    set_state(s, SINK_S_READY);
    return SINK_ACT_MORE;
}

static enum sink_action cmd_starttls(struct sink_session *s, const char *arg)
{
    enum sink_starttls mode = s->lst->profile->starttls;
    if (mode == SINK_STARTTLS_NO) {
        REPLY(s, "502 5.5.1 Error: command not implemented\r\n");
        return SINK_ACT_MORE;
    }
    if (s->tls != NULL) {
        REPLY(s, "503 5.5.1 Error: TLS already active\r\n");
        return SINK_ACT_MORE;
    }
    if (*arg != '\0') {
        REPLY(s, "501 5.5.4 Syntax: STARTTLS\r\n");
        return SINK_ACT_MORE;
    }
    if (s->state == SINK_S_MAIL || s->state == SINK_S_RCPT) {
        REPLY(s, "503 5.5.1 Error: MAIL transaction in progress\r\n");
        return SINK_ACT_MORE;
    }
    if (mode == SINK_STARTTLS_454) {
        REPLY(s, "454 4.7.0 TLS not available due to temporary reason\r\n");
        return SINK_ACT_MORE;
    }
    REPLY(s, "220 2.0.0 Ready to start TLS\r\n");
    set_state(s, SINK_S_HANDSHAKE);
    return SINK_ACT_STARTTLS;
}

static enum sink_action cmd_mail(struct sink_session *s, const char *line, size_t len)
{
    if (s->state == SINK_S_GREETED) {
        REPLY(s, "503 5.5.1 Error: send HELO/EHLO first\r\n");
        return SINK_ACT_MORE;
    }
    if (s->state != SINK_S_READY) {
        REPLY(s, "503 5.5.1 Error: nested MAIL command\r\n");
        return SINK_ACT_MORE;
    }
    if (len < 10 || strncasecmp(line, "MAIL FROM:", 10) != 0) {
        REPLY(s, "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
        return SINK_ACT_MORE;
    }
    if (has_size_over_limit(line + 10, len - 10)) {
        REPLY(s, "552 5.3.4 Error: message size exceeds fixed limit\r\n");
        return SINK_ACT_MORE;
    }
    reset_transaction(s);
    REPLY(s, "250 2.1.0 Ok\r\n");
    set_state(s, SINK_S_MAIL);
    return SINK_ACT_MORE;
}

static enum sink_action cmd_rcpt(struct sink_session *s, const char *line, size_t len)
{
    if (s->state != SINK_S_MAIL && s->state != SINK_S_RCPT) {
        REPLY(s, "503 5.5.1 Error: need MAIL command\r\n");
        return SINK_ACT_MORE;
    }
    if (len < 8 || strncasecmp(line, "RCPT TO:", 8) != 0) {
        REPLY(s, "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
        return SINK_ACT_MORE;
    }
    if (s->rcpts >= SINK_RCPT_MAX) {
        REPLY(s, "452 4.5.3 Error: too many recipients\r\n");
        return SINK_ACT_MORE;
    }
    /* The local part picks the answer (see SINK_RCPT_TEMPFAIL): failure paths of a
     * client can be tested next to accepted recipients of the same transaction.
     * tempfail-once- is matched first: it also starts with tempfail-. */
    const char *lt = memchr(line, '<', len);
    size_t rest = lt ? len - (size_t)(lt + 1 - line) : 0;
    if (lt && rest >= sizeof(SINK_RCPT_TEMPFAIL_ONCE) - 1 &&
        strncasecmp(lt + 1, SINK_RCPT_TEMPFAIL_ONCE, sizeof(SINK_RCPT_TEMPFAIL_ONCE) - 1) == 0) {
        /* The address is what lies between the angle brackets. */
        const char *gt = memchr(lt + 1, '>', rest);
        size_t alen = gt ? (size_t)(gt - (lt + 1)) : rest;
        if (!sink_greylist_seen(&s->srv->grey, lt + 1, alen)) {
            s->srv->stats.rcpts_refused++;
            s->srv->stats.greylisted++;
            REPLY(s, "451 4.7.1 try again later\r\n");
            return SINK_ACT_MORE;
        }
        /* Seen before: accepted like any other recipient. */
    } else if (lt && rest >= sizeof(SINK_RCPT_TEMPFAIL) - 1 &&
               strncasecmp(lt + 1, SINK_RCPT_TEMPFAIL, sizeof(SINK_RCPT_TEMPFAIL) - 1) == 0) {
        s->srv->stats.rcpts_refused++;
        REPLY(s, "451 4.2.0 Recipient temporarily unavailable\r\n");
        return SINK_ACT_MORE;
    }
    if (lt && rest >= sizeof(SINK_RCPT_REJECT) - 1 &&
        strncasecmp(lt + 1, SINK_RCPT_REJECT, sizeof(SINK_RCPT_REJECT) - 1) == 0) {
        s->srv->stats.rcpts_refused++;
        REPLY(s, "550 5.1.1 Recipient address rejected: User unknown\r\n");
        return SINK_ACT_MORE;
    }
    s->rcpts++;
    s->srv->stats.rcpts_accepted++;
    REPLY(s, "250 2.1.5 Ok\r\n");
    if (s->state != SINK_S_RCPT)
        set_state(s, SINK_S_RCPT);
    return SINK_ACT_MORE;
}

static enum sink_action cmd_data(struct sink_session *s, const char *arg)
{
    if (s->state != SINK_S_RCPT) {
        if (s->state == SINK_S_MAIL)
            REPLY(s, "503 5.5.1 Error: need RCPT command\r\n");
        else
            REPLY(s, "503 5.5.1 Error: need MAIL command\r\n");
        return SINK_ACT_MORE;
    }
    if (*arg != '\0') {
        REPLY(s, "501 5.5.4 Syntax: DATA\r\n");
        return SINK_ACT_MORE;
    }
    REPLY(s, "354 End data with <CR><LF>.<CR><LF>\r\n");
    s->body_bytes = 0;
    s->body_too_big = false;
    s->body_match = 2; /* the DATA line's CRLF counts: ".\r\n" at once is an empty body */
    s->hdr_len = 0;
    set_state(s, SINK_S_DATA);
    return SINK_ACT_MORE;
}

static enum sink_action cmd_rset(struct sink_session *s)
{
    s->srv->stats.rsets++;
    reset_transaction(s);
    REPLY(s, "250 2.0.0 Ok\r\n");
    if (s->state == SINK_S_MAIL || s->state == SINK_S_RCPT)
        set_state(s, SINK_S_READY);
    return SINK_ACT_MORE;
}

/* One command line without its line ending. */
static enum sink_action command(struct sink_session *s, const char *line, size_t len)
{
    const char *arg;
    if (len >= 4) {
        if (strncasecmp(line, "EHLO", 4) == 0 && (arg = verb_arg(line, len, 4)))
            return cmd_ehlo(s, arg, true);
        if (strncasecmp(line, "HELO", 4) == 0 && (arg = verb_arg(line, len, 4)))
            return cmd_ehlo(s, arg, false);
        if (strncasecmp(line, "MAIL", 4) == 0 && verb_arg(line, len, 4))
            return cmd_mail(s, line, len);
        if (strncasecmp(line, "RCPT", 4) == 0 && verb_arg(line, len, 4))
            return cmd_rcpt(s, line, len);
        if (strncasecmp(line, "DATA", 4) == 0 && (arg = verb_arg(line, len, 4)))
            return cmd_data(s, arg);
        if (strncasecmp(line, "RSET", 4) == 0 && verb_arg(line, len, 4))
            return cmd_rset(s);
        if (strncasecmp(line, "NOOP", 4) == 0 && verb_arg(line, len, 4)) {
            REPLY(s, "250 2.0.0 Ok\r\n");
            return SINK_ACT_MORE;
        }
        if (strncasecmp(line, "QUIT", 4) == 0 && verb_arg(line, len, 4)) {
            REPLY(s, "221 2.0.0 Bye\r\n");
            set_state(s, SINK_S_QUIT);
            return SINK_ACT_CLOSE;
        }
    }
    if (len >= 8 && strncasecmp(line, "STARTTLS", 8) == 0 && (arg = verb_arg(line, len, 8)))
        return cmd_starttls(s, arg);
    REPLY(s, "500 5.5.2 Error: command not recognized\r\n");
    return SINK_ACT_MORE;
}

/* ---- input ------------------------------------------------------------------------ */

/* A complete line ending in LF (data[0, len), len includes the LF). */
static enum sink_action line_done(struct sink_session *s, const char *data, size_t len)
{
    /* A command behind another in the same input was pipelined (RFC 2920). */
    if (++s->batch > 1)
        s->srv->stats.pipelined++;
    len--;
    if (len > 0 && data[len - 1] == '\r')
        len--;
    return command(s, data, len);
}

/* Command bytes from data[0, len): at most one line. *used = bytes taken. */
static enum sink_action take_line(struct sink_session *s, const char *data, size_t len,
                                  size_t *used)
{
    const char *nl = memchr(data, '\n', len);
    size_t seg = nl ? (size_t)(nl - data) + 1 : len;
    *used = seg;

    if (s->discarding) {
        /* The rest of a line already answered with 500 5.5.6. */
        if (nl)
            s->discarding = false;
        return SINK_ACT_MORE;
    }
    /* Without the LF, the line may still grow to SINK_LINE_MAX - 1 bytes (text + CR). */
    if (s->line_len + seg > (nl ? SINK_LINE_MAX : SINK_LINE_MAX - 1)) {
        REPLY(s, "500 5.5.6 Line too long\r\n");
        s->line_len = 0;
        s->discarding = nl == NULL;
        return SINK_ACT_MORE;
    }
    if (nl && s->line_len == 0)
        return line_done(s, data, seg); /* the whole line is here: no copy */
    memcpy(s->line + s->line_len, data, seg);
    s->line_len += seg;
    if (!nl)
        return SINK_ACT_MORE;
    size_t n = s->line_len;
    s->line_len = 0;
    return line_done(s, s->line, n);
}

/* Records the latency of a message carrying floormta-load's timestamp header, looked
 * for in the header section of its first SINK_HDR_CAP bytes (the engine puts its
 * Received header above it, so a few lines precede it). */
static void load_latency(struct sink_session *s)
{
    const char *p = s->hdr, *end = s->hdr + s->hdr_len;
    const char *hend = memmem(p, s->hdr_len, "\r\n\r\n", 4);
    if (hend != NULL)
        end = hend + 2;
    static const size_t n = sizeof(SINK_LOAD_TS_HEADER) - 1;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        if ((size_t)(eol - p) > n && strncasecmp(p, SINK_LOAD_TS_HEADER, n) == 0) {
            const char *v = p + n;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            uint64_t ts = 0;
            const char *d = v;
            while (d < eol && *d >= '0' && *d <= '9' && ts < UINT64_MAX / 10)
                ts = ts * 10 + (uint64_t)(*d++ - '0');
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            uint64_t now_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
            s->srv->stats.load_messages++;
            s->srv->stats.load_last_ns = now_ns;
            if (d == v || ts > now_ns) {
                s->srv->stats.load_bad_ts++;
                return;
            }
            s->srv->stats.latency[bench_lat_bucket((now_ns - ts) / 1000)]++;
            return;
        }
        if (nl == NULL)
            break;
        p = nl + 1;
    }
}

/* Body bytes from data[0, len), up to and including the end-of-data marker. */
static enum sink_action take_body(struct sink_session *s, const char *data, size_t len,
                                  size_t *used)
{
    static const char marker[] = "\r\n.\r\n";
    uint8_t m = s->body_match;
    size_t i = 0;
    bool end = false;
    while (i < len) {
        if (m == 0) {
            /* Fast path: nothing matched, skip to the next CR. */
            const char *cr = memchr(data + i, '\r', len - i);
            if (cr == NULL) {
                i = len;
                break;
            }
            i = (size_t)(cr - data);
        }
        char c = data[i++];
        if (c == marker[m]) {
            if (++m == 5) {
                end = true;
                break;
            }
        } else {
            /* "\r" is the only proper prefix that can restart a match. */
            m = c == '\r';
        }
    }
    s->body_match = m;
    *used = i;
    if (s->hdr_len < SINK_HDR_CAP) {
        /* Kept for load_latency(): a copy of at most 4 KB per message. */
        size_t take = i < SINK_HDR_CAP - s->hdr_len ? i : SINK_HDR_CAP - s->hdr_len;
        memcpy(s->hdr + s->hdr_len, data, take);
        s->hdr_len += take;
    }
    if (i > 0 && s->lst->profile->mode == SINK_MODE_DROP_DATA)
        return SINK_ACT_CLOSE; /* no reply: the client must not count it delivered */

    uint64_t total = s->body_bytes + i;
    if (total > (uint64_t)SINK_MSG_MAX + 3)
        s->body_too_big = true; /* keep reading to the end, then refuse */
    else
        s->body_bytes = total;
    if (!end)
        return SINK_ACT_MORE;

    if (s->body_too_big) {
        REPLY(s, "552 5.3.4 Error: message size exceeds fixed limit\r\n");
    } else {
        /* Counted without the final ".\r\n" (the body's last CRLF is part of it). */
        uint64_t bytes = s->body_bytes - 3;
        s->srv->stats.messages++;
        s->srv->stats.bytes += bytes;
        s->lst->messages++;
        load_latency(s);
        char reply[64] = "250 2.0.0 Ok: queued as ";
        size_t n = sizeof("250 2.0.0 Ok: queued as ") - 1;
        uint64_t id = s->srv->stats.messages;
        for (int shift = 60; shift >= 0; shift -= 4)
            reply[n++] = "0123456789ABCDEF"[(id >> shift) & 0xf];
        reply[n++] = '\r';
        reply[n++] = '\n';
        sink_out_put(s, reply, n);
    }
    reset_transaction(s);
    set_state(s, SINK_S_READY);
    return SINK_ACT_MORE;
}

enum sink_action sink_session_input(struct sink_session *s, const char *data, size_t len,
                                    size_t *used)
{
    size_t pos = 0;
    enum sink_action act = SINK_ACT_MORE;
    s->batch = 0;
    while (pos < len && act == SINK_ACT_MORE) {
        if (s->state != SINK_S_GREETED && s->state != SINK_S_READY && s->state != SINK_S_MAIL &&
            s->state != SINK_S_RCPT && s->state != SINK_S_DATA) {
            /* QUIT, HANDSHAKE, STALL, FLOOD: input is not commands; drop it. */
            pos = len;
            break;
        }
        /* Take a command only when its reply fits; otherwise send first (a client
         * pipelining without reading must not grow our memory). */
        if (!sink_out_reserve(s)) {
            *used = pos;
            return SINK_ACT_PAUSE;
        }
        size_t n;
        if (s->state == SINK_S_DATA)
            act = take_body(s, data + pos, len - pos, &n);
        else
            act = take_line(s, data + pos, len - pos, &n);
        pos += n;
    }
    *used = pos;
    if (act == SINK_ACT_STARTTLS) {
        /* Whatever followed STARTTLS in plaintext must never be taken as commands
         * (CVE-2011-0411-style injection): forget the partial line too. */
        s->line_len = 0;
        s->discarding = false;
    }
    return act;
}
