/*
 * engine/smtp_client.c — the SMTP client state machine (see smtp_client.h).
 *
 * One handler per state turns a reply into the next command; set_state() is the only
 * writer of c->state and logs every transition with the peer, so a session can be
 * followed in the log at debug level. finish_*() record the outcome exactly once.
 *
 * The transaction half (READY to DOT) keeps one invariant: a recipient leaves PENDING
 * exactly once, from a reply that decides it, from the error that ended the
 * connection, or from a local rule; txn_end() logs the results and hands the
 * transaction back. Commands are built from the transaction's borrowed strings into
 * c->cmd, which is why begin() checks every address for length and control characters
 * first: a CR or LF in an address would be a command injection.
 */
#include "engine/smtp_client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engine/errors.h"
#include "engine/log.h"

static const char *const smtpc_state_names[] = {
#define SMTPC_STATE_NAME(name, str) [name] = str,
    SMTP_CLIENT_STATES(SMTPC_STATE_NAME)
#undef SMTPC_STATE_NAME
};

const char *smtpc_state_name(enum smtpc_state st)
{
    return (unsigned)st < SMTPC_STATE__COUNT ? smtpc_state_names[st] : "unknown";
}

static const char *const smtp_rcpt_status_names[] = {
#define SMTP_RCPT_NAME(name, str) [name] = str,
    SMTP_RCPT_STATUSES(SMTP_RCPT_NAME)
#undef SMTP_RCPT_NAME
};

const char *smtp_rcpt_status_name(enum smtp_rcpt_status st)
{
    return (unsigned)st <= SMTP_RCPT_BOUNCED ? smtp_rcpt_status_names[st] : "unknown";
}

const char *smtpc_outcome_name(enum smtpc_outcome o)
{
    switch (o) {
    case SMTPC_OUTCOME_NONE: return "none";
    case SMTPC_OUTCOME_PASS: return "pass";
    case SMTPC_OUTCOME_REFUSED: return "refuse";
    case SMTPC_OUTCOME_ERROR: return "error";
    }
    return "unknown";
}

static void copy_bounded(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

int smtp_client_init_mode(struct smtp_client *c, enum smtpc_mode mode, const char *helo_name,
                          const char *peer)
{
    size_t helo_len = strlen(helo_name);
    if (helo_len == 0 || helo_len >= sizeof(c->helo_name))
        return -EINVAL;
    for (size_t i = 0; i < helo_len; i++)
        if ((unsigned char)helo_name[i] <= ' ' || helo_name[i] == 0x7f)
            return -EINVAL;
    memset(c, 0, sizeof(*c));
    c->state = SMTPC_CONNECT;
    c->mode = mode;
    c->err_state = SMTPC_CONNECT;
    tls_verdict_clear(&c->verdict);
    copy_bounded(c->helo_name, sizeof(c->helo_name), helo_name);
    copy_bounded(c->peer, sizeof(c->peer), peer);
    return 0;
}

int smtp_client_init(struct smtp_client *c, const char *helo_name, const char *peer)
{
    return smtp_client_init_mode(c, SMTPC_MODE_PROBE, helo_name, peer);
}

void smtp_client_set_opportunistic(struct smtp_client *c, bool on)
{
    /* Only before the dialogue starts: a mode that could change halfway would make
     * "what did this connection promise" unanswerable. */
    if (c->state == SMTPC_CONNECT)
        c->opportunistic = on;
}

static void set_state(struct smtp_client *c, enum smtpc_state next)
{
    if (eng_log_enabled(ENG_LOG_DEBUG))
        eng_log(ENG_LOG_DEBUG, "smtp-client peer=%s state=%s->%s", c->peer,
                smtpc_state_name(c->state), smtpc_state_name(next));
    c->state = next;
}

static enum smtpc_action send_cmd(struct smtp_client *c, enum smtpc_state next, const char *verb,
                                  const char *arg)
{
    int n = snprintf(c->cmd, sizeof(c->cmd), "%s%s%s\r\n", verb, arg ? " " : "", arg ? arg : "");
    /* Arguments are bounded at init (helo_name < 256), so this always fits. */
    c->cmd_len = (size_t)n;
    set_state(c, next);
    return SMTPC_ACT_SEND;
}

/* QUIT politely after a decision; the decision is already recorded. */
static enum smtpc_action quit(struct smtp_client *c)
{
    return send_cmd(c, SMTPC_QUIT, "QUIT", NULL);
}

/* The first error is the one worth reporting; later ones are its consequences. */
static void record_error(struct smtp_client *c, int err)
{
    if (c->err == 0) {
        c->err = err;
        c->err_state = c->state;
    }
}

/* ---- transaction results --------------------------------------------------------- */

static void result_set(struct smtp_rcpt_result *res, enum smtp_rcpt_status st,
                       enum smtp_result_source src, enum smtpc_state at, int code,
                       const char *enhanced, const char *text)
{
    res->status = st;
    res->source = src;
    res->at = at;
    res->code = (uint16_t)code;
    copy_bounded(res->enhanced, sizeof(res->enhanced), enhanced);
    copy_bounded(res->text, sizeof(res->text), text);
}

/* What a reply means for a recipient it concerns. Only a 2xx to the end of data
 * delivers; a 2xx to RCPT leaves the recipient pending (accepted) for that reply; a
 * 2xx or 3xx anywhere a failure was expected is a protocol slip and defers. */
static enum smtp_rcpt_status reply_status(int code, enum smtpc_state at)
{
    int cls = code / 100;
    if (cls == 5)
        return SMTP_RCPT_BOUNCED;
    if (cls == 2 && at == SMTPC_DOT)
        return SMTP_RCPT_DELIVERED;
    if (cls == 2 && at == SMTPC_RCPT)
        return SMTP_RCPT_PENDING;
    return SMTP_RCPT_DEFERRED;
}

static void result_from_reply(struct smtp_client *c, struct smtp_rcpt_result *res,
                              const struct smtp_reply *r, enum smtpc_state at)
{
    enum smtp_rcpt_status st = reply_status(r->code, at);
    result_set(res, st, SMTP_RESULT_REPLY, at, r->code, r->enhanced, c->last_reply);
    if (at == SMTPC_RCPT)
        res->accepted = st == SMTP_RCPT_PENDING; /* kept through the final verdict */
}

/* Every recipient still pending (accepted ones included) gets the reply's verdict. */
static void apply_pending(struct smtp_client *c, const struct smtp_reply *r, enum smtpc_state at)
{
    const struct smtp_txn *t = c->txn;
    for (unsigned i = 0; i < t->nrcpts; i++)
        if (t->results[i].status == SMTP_RCPT_PENDING)
            result_from_reply(c, &t->results[i], r, at);
}

/* The connection failed with the transaction open: nothing not yet final was
 * delivered. A message whose final reply did not arrive is deferred, never assumed
 * delivered (the receiver may have it: that duplicate is the lesser harm). */
static void defer_pending(struct smtp_client *c, enum smtp_result_source src, int err)
{
    const struct smtp_txn *t = c->txn;
    char text[SMTP_RESULT_TEXT_MAX];
    snprintf(text, sizeof(text), "%s (in state %s)", eng_describe_error(err),
             smtpc_state_name(c->state));
    for (unsigned i = 0; i < t->nrcpts; i++)
        if (t->results[i].status == SMTP_RCPT_PENDING)
            result_set(&t->results[i], SMTP_RCPT_DEFERRED, src, c->state, 451, "4.4.2", text);
}

/* One info line per transaction: the counts, then each recipient's verdict. */
static void log_txn(const struct smtp_client *c, const struct smtp_txn *t)
{
    if (!eng_log_enabled(ENG_LOG_INFO))
        return;
    unsigned n[SMTP_RCPT_BOUNCED + 1] = { 0 };
    char list[1500];
    size_t len = 0;
    list[0] = '\0';
    for (unsigned i = 0; i < t->nrcpts; i++) {
        const struct smtp_rcpt_result *res = &t->results[i];
        n[res->status]++;
        if (len < sizeof(list)) {
            int w = snprintf(list + len, sizeof(list) - len, "%s<%s> %s %s", i ? "; " : "",
                             t->rcpts[i], smtp_rcpt_status_name(res->status), res->text);
            len += w > 0 ? (size_t)w : 0;
        }
    }
    uint64_t size = t->size ? t->size : t->body_len;
    eng_log(ENG_LOG_INFO,
            "smtp-txn peer=%s from=<%s> size=%llu rcpts=%u delivered=%u deferred=%u "
            "bounced=%u pipelining=%d results=\"%s\"",
            c->peer, t->sender, (unsigned long long)size, t->nrcpts, n[SMTP_RCPT_DELIVERED],
            n[SMTP_RCPT_DEFERRED], n[SMTP_RCPT_BOUNCED], c->pipelining, list);
}

static void txn_end(struct smtp_client *c)
{
    /* Unreachable by construction; a pending recipient in a finished transaction
     * would be lost, so make it a deferral rather than trust that. */
    defer_pending(c, SMTP_RESULT_LOCAL, SMTP_ERR_UNEXPECTED);
    log_txn(c, c->txn);
    c->ended = c->txn;
    c->txn = NULL;
}

const struct smtp_txn *smtp_client_take_ended(struct smtp_client *c)
{
    const struct smtp_txn *t = c->ended;
    c->ended = NULL;
    return t;
}

/* ---- ends ------------------------------------------------------------------------- */

static enum smtpc_action finish_error(struct smtp_client *c, int err)
{
    if (c->txn) {
        defer_pending(c, SMTP_RESULT_NETWORK, err);
        txn_end(c);
    }
    if (c->outcome == SMTPC_OUTCOME_NONE)
        c->outcome = SMTPC_OUTCOME_ERROR;
    record_error(c, err);
    set_state(c, SMTPC_DONE);
    return SMTPC_ACT_CLOSE;
}

static void refuse(struct smtp_client *c, enum tls_reason reason)
{
    c->outcome = SMTPC_OUTCOME_REFUSED;
    tls_verdict_refuse(&c->verdict, reason);
}

/* A reply the dialogue did not expect: a receiver error, reported with its text. */
static enum smtpc_action unexpected_reply(struct smtp_client *c)
{
    c->outcome = SMTPC_OUTCOME_ERROR;
    c->err = SMTP_ERR_UNEXPECTED;
    c->err_state = c->state;
    return quit(c);
}

static enum smtpc_action ready(struct smtp_client *c)
{
    set_state(c, SMTPC_READY);
    return SMTPC_ACT_IDLE;
}

/* 421 (RFC 5321 3.8): the receiver is closing the channel. Whatever is pending gets
 * the 421 (a deferral) and the connection closes; no QUIT to a server that is gone. */
static enum smtpc_action service_closing(struct smtp_client *c, const struct smtp_reply *r,
                                         enum smtpc_state at)
{
    if (c->txn) {
        apply_pending(c, r, at);
        txn_end(c);
    }
    return finish_error(c, SMTP_ERR_CLOSED);
}

/* ---- the session up to READY -------------------------------------------------------- */

static enum smtpc_action on_greeting(struct smtp_client *c, const struct smtp_reply *r)
{
    copy_bounded(c->greeting, sizeof(c->greeting), c->last_reply);
    if (r->code != 220)
        return unexpected_reply(c);
    return send_cmd(c, SMTPC_EHLO, "EHLO", c->helo_name);
}

/* Opportunistic mode, no STARTTLS offered: the one way to READY without TLS. The
 * verdict records it as an opportunistic pass with reason no_starttls, so that every
 * log line and counter that reads verdicts sees plaintext for what it is. */
static enum smtpc_action plaintext_ready(struct smtp_client *c)
{
    tls_verdict_clear(&c->verdict);
    c->verdict.pass = true;
    c->verdict.opportunistic = true;
    c->verdict.reason = TLS_REASON_NO_STARTTLS;
    c->verdict.ev.problems = 1u << TLS_REASON_NO_STARTTLS;
    c->plaintext = true;
    c->outcome = SMTPC_OUTCOME_PASS;
    eng_log(ENG_LOG_INFO, "smtp-client peer=%s opportunistic: no STARTTLS offered, plaintext",
            c->peer);
    if (c->mode == SMTPC_MODE_DELIVER)
        return ready(c);
    return quit(c);
}

static enum smtpc_action on_ehlo(struct smtp_client *c, const struct smtp_reply *r)
{
    if (r->code != 250) {
        /* STARTTLS needs EHLO: a receiver that refuses it permanently offers no TLS. */
        if (r->code >= 500) {
            refuse(c, TLS_REASON_NO_STARTTLS);
            return quit(c);
        }
        return unexpected_reply(c);
    }
    smtp_caps_parse(r, &c->caps);
    c->starttls_offered = (c->caps.ext & SMTP_EXT_STARTTLS) != 0;
    if (!c->starttls_offered) {
        if (c->opportunistic)
            return plaintext_ready(c);
        refuse(c, TLS_REASON_NO_STARTTLS);
        return quit(c);
    }
    return send_cmd(c, SMTPC_STARTTLS, "STARTTLS", NULL);
}

static enum smtpc_action on_starttls(struct smtp_client *c, const struct smtp_reply *r)
{
    if (r->code != 220) {
        refuse(c, TLS_REASON_STARTTLS_REFUSED);
        return quit(c);
    }
    set_state(c, SMTPC_TLS);
    return SMTPC_ACT_TLS;
}

static enum smtpc_action on_ehlo_tls(struct smtp_client *c, const struct smtp_reply *r)
{
    if (r->code != 250)
        return unexpected_reply(c);
    smtp_caps_parse(r, &c->caps);
    /* The verdict passed and the encrypted session works: the probe ends here, the
     * delivery client waits for its first message. */
    c->outcome = SMTPC_OUTCOME_PASS;
    if (c->mode == SMTPC_MODE_DELIVER)
        return ready(c);
    return quit(c);
}

/* ---- commands of a transaction ------------------------------------------------------- */

/* Appends one formatted command to c->cmd if it fits whole. Returns whether it did. */
__attribute__((format(printf, 2, 3))) static bool cmd_append(struct smtp_client *c, const char *fmt,
                                                             ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = sizeof(c->cmd) - c->cmd_len;
    int n = vsnprintf(c->cmd + c->cmd_len, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room)
        return false;
    c->cmd_len += (size_t)n;
    return true;
}

static bool needs_utf8(const struct smtp_txn *t)
{
    if (t->needs_smtputf8)
        return true;
    /* A non-ASCII address cannot travel without SMTPUTF8 whatever the flag says. */
    for (const char *p = t->sender; *p; p++)
        if ((unsigned char)*p >= 0x80)
            return true;
    for (unsigned i = 0; i < t->nrcpts; i++)
        for (const char *p = t->rcpts[i]; *p; p++)
            if ((unsigned char)*p >= 0x80)
                return true;
    return false;
}

static uint64_t txn_size(const struct smtp_txn *t)
{
    return t->size ? t->size : t->body_len;
}

/* MAIL FROM:<sender> [SIZE=n] [BODY=8BITMIME] [SMTPUTF8]: parameters only for
 * extensions the receiver offered (begin() refused the rest). Always fits: the
 * buffer is empty and the sender is bounded. */
static void append_mail(struct smtp_client *c)
{
    const struct smtp_txn *t = c->txn;
    char size[32] = "";
    if (c->caps.ext & SMTP_EXT_SIZE)
        snprintf(size, sizeof(size), " SIZE=%llu", (unsigned long long)txn_size(t));
    cmd_append(c, "MAIL FROM:<%s>%s%s%s\r\n", t->sender, size,
               t->needs_8bit ? " BODY=8BITMIME" : "", needs_utf8(t) ? " SMTPUTF8" : "");
}

/* The next RCPTs: in a pipelined transaction as many as fit in c->cmd, and DATA after
 * the last (RFC 2920 3.1: DATA may end the group); otherwise one. */
static void append_rcpts(struct smtp_client *c)
{
    const struct smtp_txn *t = c->txn;
    do {
        if (!cmd_append(c, "RCPT TO:<%s>\r\n", t->rcpts[c->rcpt_sent]))
            break;
        c->rcpt_sent++;
    } while (c->pipelining && c->rcpt_sent < t->nrcpts);
    if (c->pipelining && c->rcpt_sent == t->nrcpts && cmd_append(c, "DATA\r\n"))
        c->data_sent = true;
}

/* The transaction failed before the reply to its end of data. The receiver may still
 * hold a sender or recipients (RFC 5321 4.1.1.5): RSET before anything else, and only
 * a 250 to it makes the connection reusable. */
static enum smtpc_action txn_failed(struct smtp_client *c)
{
    txn_end(c);
    return send_cmd(c, SMTPC_RSET, "RSET", NULL);
}

/* Every reply of the last group is in and DATA was not part of it. */
static enum smtpc_action after_rcpts(struct smtp_client *c)
{
    const struct smtp_txn *t = c->txn;
    if (!c->mail_ok)
        return txn_failed(c);
    if (c->rcpt_sent < t->nrcpts) {
        c->cmd_len = 0;
        append_rcpts(c);
        set_state(c, SMTPC_RCPT);
        return SMTPC_ACT_SEND;
    }
    /* Without an accepted recipient there is nothing to send DATA for. */
    if (c->accepted == 0)
        return txn_failed(c);
    c->data_sent = true;
    return send_cmd(c, SMTPC_DATA, "DATA", NULL);
}

/* A local permanent failure before MAIL: every recipient bounced, nothing sent. */
static void refuse_locally(struct smtp_client *c, int code, const char *enhanced, const char *text)
{
    const struct smtp_txn *t = c->txn;
    for (unsigned i = 0; i < t->nrcpts; i++)
        result_set(&t->results[i], SMTP_RCPT_BOUNCED, SMTP_RESULT_LOCAL, SMTPC_READY, code,
                   enhanced, text);
    txn_end(c);
}

/* Decides what the receiver's EHLO rules out for this message. Returns true if the
 * transaction ended there. */
static bool refused_before_mail(struct smtp_client *c)
{
    const struct smtp_txn *t = c->txn;
    char text[SMTP_RESULT_TEXT_MAX];
    /* RFC 6531 3.2: without SMTPUTF8 such a message must not be sent; 5.6.7. */
    if (needs_utf8(t) && !(c->caps.ext & SMTP_EXT_SMTPUTF8)) {
        refuse_locally(c, 553, "5.6.7",
                       "553 5.6.7 the receiver does not offer SMTPUTF8, which this message needs");
        return true;
    }
    /* RFC 6152 3: convert or return as undeliverable; floormta never rewrites a
     * message it relays (DKIM signatures would break), so 5.6.3. */
    if (t->needs_8bit && !(c->caps.ext & SMTP_EXT_8BITMIME)) {
        refuse_locally(c, 554, "5.6.3",
                       "554 5.6.3 the receiver does not offer 8BITMIME, which this message "
                       "needs, and floormta does not convert");
        return true;
    }
    /* RFC 1870 6: a message over the announced fixed limit is not attempted. */
    if ((c->caps.ext & SMTP_EXT_SIZE) && c->caps.size_max > 0 && txn_size(t) > c->caps.size_max) {
        snprintf(text, sizeof(text),
                 "552 5.3.4 message size %llu exceeds the receiver's limit %llu",
                 (unsigned long long)txn_size(t), (unsigned long long)c->caps.size_max);
        refuse_locally(c, 552, "5.3.4", text);
        return true;
    }
    return false;
}

static bool addr_ok(const char *a, bool empty_ok)
{
    if (a == NULL)
        return false;
    size_t n = strnlen(a, SMTPC_ADDR_MAX + 1);
    if (n > SMTPC_ADDR_MAX || (n == 0 && !empty_ok))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)a[i];
        if (ch < 0x20 || ch == 0x7f || ch == '<' || ch == '>')
            return false;
    }
    return true;
}

static bool txn_ok(const struct smtp_txn *t)
{
    if (t == NULL || t->nrcpts == 0 || t->rcpts == NULL || t->results == NULL ||
        !addr_ok(t->sender, true) || (t->body_read == NULL && t->body == NULL && t->body_len))
        return false;
    for (unsigned i = 0; i < t->nrcpts; i++)
        if (!addr_ok(t->rcpts[i], false))
            return false;
    return true;
}

int smtp_client_begin(struct smtp_client *c, const struct smtp_txn *txn, enum smtpc_action *act)
{
    if (c->state != SMTPC_READY)
        return -EBUSY;
    if (!txn_ok(txn))
        return -EINVAL;
    c->txn = txn;
    c->txns++;
    c->rcpt_sent = c->rcpt_reply = c->accepted = 0;
    c->mail_ok = c->data_sent = false;
    c->pipelining = (c->caps.ext & SMTP_EXT_PIPELINING) != 0;
    for (unsigned i = 0; i < txn->nrcpts; i++) {
        memset(&txn->results[i], 0, sizeof(txn->results[i]));
        txn->results[i].status = SMTP_RCPT_PENDING;
    }
    if (refused_before_mail(c)) {
        *act = SMTPC_ACT_IDLE;
        return 0;
    }
    c->cmd_len = 0;
    append_mail(c);
    if (c->pipelining)
        append_rcpts(c);
    set_state(c, SMTPC_MAIL);
    *act = SMTPC_ACT_SEND;
    return 0;
}

int smtp_client_quit(struct smtp_client *c, enum smtpc_action *act)
{
    if (c->state != SMTPC_READY)
        return -EBUSY;
    *act = quit(c);
    return 0;
}

/* ---- replies of a transaction ---------------------------------------------------------- */

static enum smtpc_action on_mail(struct smtp_client *c, const struct smtp_reply *r)
{
    if (r->code == 421)
        return service_closing(c, r, SMTPC_MAIL);
    c->mail_ok = r->code / 100 == 2;
    /* A refused MAIL decides every recipient; the replies to RCPTs pipelined behind
     * it ("503 need MAIL") say nothing about them and are only counted. */
    if (!c->mail_ok)
        apply_pending(c, r, SMTPC_MAIL);
    if (c->rcpt_reply < c->rcpt_sent) {
        set_state(c, SMTPC_RCPT);
        return SMTPC_ACT_RECV;
    }
    return after_rcpts(c);
}

static enum smtpc_action on_rcpt(struct smtp_client *c, const struct smtp_reply *r)
{
    if (r->code == 421)
        return service_closing(c, r, SMTPC_RCPT);
    struct smtp_rcpt_result *res = &c->txn->results[c->rcpt_reply++];
    if (c->mail_ok) {
        result_from_reply(c, res, r, SMTPC_RCPT);
        c->accepted += res->accepted;
    }
    if (c->rcpt_reply < c->rcpt_sent)
        return SMTPC_ACT_RECV;
    if (c->data_sent) {
        set_state(c, SMTPC_DATA);
        return SMTPC_ACT_RECV;
    }
    return after_rcpts(c);
}

static enum smtpc_action on_data(struct smtp_client *c, const struct smtp_reply *r)
{
    c->data_sent = false;
    if (r->code == 354) {
        if (c->mail_ok && c->accepted > 0) {
            set_state(c, SMTPC_BODY);
            return SMTPC_ACT_BODY;
        }
        /* RFC 2920 3.1: a pipelined DATA accepted although no recipient was must be
         * answered with a lone "." — an empty message to nobody — never the body. */
        c->cmd_len = 0;
        cmd_append(c, ".\r\n");
        set_state(c, SMTPC_DOT);
        return SMTPC_ACT_SEND;
    }
    if (r->code == 421)
        return service_closing(c, r, SMTPC_DATA);
    if (c->mail_ok)
        apply_pending(c, r, SMTPC_DATA); /* the accepted ones: nothing else is pending */
    return txn_failed(c);
}

/* A reply while the body is still going out: the receiver gave up on the message (or
 * broke the protocol). The body cannot be finished or taken back, so the connection
 * ends here, and a 2xx is not a delivery. */
static enum smtpc_action on_body_reply(struct smtp_client *c, const struct smtp_reply *r)
{
    apply_pending(c, r, SMTPC_BODY);
    txn_end(c);
    return finish_error(c, r->code == 421 ? SMTP_ERR_CLOSED : SMTP_ERR_UNEXPECTED);
}

static enum smtpc_action on_dot(struct smtp_client *c, const struct smtp_reply *r)
{
    int cls = r->code / 100;
    apply_pending(c, r, SMTPC_DOT); /* the accepted recipients: the final verdict */
    txn_end(c);
    if (r->code == 421)
        return finish_error(c, SMTP_ERR_CLOSED);
    if (cls != 2 && cls != 4 && cls != 5)
        return finish_error(c, SMTP_ERR_UNEXPECTED);
    /* The reply to the end of data ends the transaction on both sides (RFC 5321
     * 4.1.1.4): no RSET needed before the next MAIL. */
    return ready(c);
}

static enum smtpc_action on_rset(struct smtp_client *c, const struct smtp_reply *r)
{
    if (r->code / 100 == 2)
        return ready(c);
    if (r->code == 421)
        return finish_error(c, SMTP_ERR_CLOSED);
    /* A receiver that cannot reset cannot be trusted with another message. */
    record_error(c, SMTP_ERR_UNEXPECTED);
    return quit(c);
}

static enum smtpc_action on_reply(struct smtp_client *c, const struct smtp_reply *r)
{
    /* The reply to QUIT decides nothing; keep the one that did as the evidence. */
    if (c->state != SMTPC_QUIT)
        smtp_reply_summary(r, c->last_reply, sizeof(c->last_reply));
    switch (c->state) {
    case SMTPC_GREETING: return on_greeting(c, r);
    case SMTPC_EHLO: return on_ehlo(c, r);
    case SMTPC_STARTTLS: return on_starttls(c, r);
    case SMTPC_EHLO_TLS: return on_ehlo_tls(c, r);
    case SMTPC_MAIL: return on_mail(c, r);
    case SMTPC_RCPT: return on_rcpt(c, r);
    case SMTPC_DATA: return on_data(c, r);
    case SMTPC_BODY: return on_body_reply(c, r);
    case SMTPC_DOT: return on_dot(c, r);
    case SMTPC_RSET: return on_rset(c, r);
    case SMTPC_QUIT: set_state(c, SMTPC_DONE); return SMTPC_ACT_CLOSE;
    case SMTPC_CONNECT:
    case SMTPC_TLS:
    case SMTPC_READY: /* nothing was asked: an unsolicited reply */
    case SMTPC_DONE:
    case SMTPC_STATE__COUNT: break;
    }
    return finish_error(c, SMTP_ERR_UNEXPECTED);
}

static enum smtpc_action on_tls_end(struct smtp_client *c, const struct smtpc_event *ev)
{
    if (c->state != SMTPC_TLS)
        return finish_error(c, SMTP_ERR_UNEXPECTED);
    c->verdict = *ev->verdict;
    /* Floor mode takes nothing below the floor, whatever context made the verdict. */
    bool acceptable = c->opportunistic ? ev->verdict->pass : tls_verdict_meets_floor(ev->verdict);
    if (ev->kind == SMTPC_EV_TLS_FAILED || !acceptable) {
        /* The connection is in no state for plaintext: no QUIT, no second chance in a
         * weaker mode. */
        c->outcome = SMTPC_OUTCOME_REFUSED;
        if (c->verdict.reason == TLS_REASON_NONE)
            c->verdict.reason = TLS_REASON_HANDSHAKE_FAILED;
        c->verdict.pass = false;
        set_state(c, SMTPC_DONE);
        return SMTPC_ACT_CLOSE;
    }
    if (!tls_verdict_meets_floor(&c->verdict))
        eng_log(ENG_LOG_INFO, "smtp-client peer=%s opportunistic: %s below the floor (%s)", c->peer,
                tls_version_name(c->verdict.ev.version), tls_reason_name(c->verdict.reason));
    /* RFC 3207 4.2: forget everything learnt before TLS and EHLO again. */
    memset(&c->caps, 0, sizeof(c->caps));
    return send_cmd(c, SMTPC_EHLO_TLS, "EHLO", c->helo_name);
}

enum smtpc_action smtp_client_step(struct smtp_client *c, const struct smtpc_event *ev)
{
    if (c->state == SMTPC_DONE)
        return SMTPC_ACT_CLOSE;

    switch (ev->kind) {
    case SMTPC_EV_CONNECTED:
        if (c->state != SMTPC_CONNECT)
            return finish_error(c, SMTP_ERR_UNEXPECTED);
        set_state(c, SMTPC_GREETING);
        return SMTPC_ACT_RECV;
    case SMTPC_EV_REPLY: return on_reply(c, ev->reply);
    case SMTPC_EV_TLS_DONE:
    case SMTPC_EV_TLS_FAILED: return on_tls_end(c, ev);
    case SMTPC_EV_BODY_SENT:
        if (c->state != SMTPC_BODY)
            return finish_error(c, SMTP_ERR_UNEXPECTED);
        set_state(c, SMTPC_DOT);
        return SMTPC_ACT_RECV;
    case SMTPC_EV_ERROR:
        /* An error while quitting changes nothing: the outcome was decided before. */
        if (c->state == SMTPC_QUIT && c->outcome != SMTPC_OUTCOME_NONE) {
            set_state(c, SMTPC_DONE);
            return SMTPC_ACT_CLOSE;
        }
        return finish_error(c, ev->err);
    }
    return finish_error(c, -EINVAL);
}
