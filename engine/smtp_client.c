/*
 * engine/smtp_client.c — the SMTP client state machine (see smtp_client.h).
 *
 * One handler per state turns a reply into the next command; set_state() is the only
 * writer of c->state and logs every transition with the peer, so a session can be
 * followed in the log at debug level. finish_*() record the outcome exactly once.
 */
#include "engine/smtp_client.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

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

int smtp_client_init(struct smtp_client *c, const char *helo_name, const char *peer)
{
    size_t helo_len = strlen(helo_name);
    if (helo_len == 0 || helo_len >= sizeof(c->helo_name))
        return -EINVAL;
    for (size_t i = 0; i < helo_len; i++)
        if ((unsigned char)helo_name[i] <= ' ' || helo_name[i] == 0x7f)
            return -EINVAL;
    memset(c, 0, sizeof(*c));
    c->state = SMTPC_CONNECT;
    c->err_state = SMTPC_CONNECT;
    tls_verdict_clear(&c->verdict);
    copy_bounded(c->helo_name, sizeof(c->helo_name), helo_name);
    copy_bounded(c->peer, sizeof(c->peer), peer);
    return 0;
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

static enum smtpc_action finish_error(struct smtp_client *c, int err)
{
    if (c->outcome == SMTPC_OUTCOME_NONE) {
        c->outcome = SMTPC_OUTCOME_ERROR;
        c->err = err;
        c->err_state = c->state;
    }
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

static enum smtpc_action on_greeting(struct smtp_client *c, const struct smtp_reply *r)
{
    copy_bounded(c->greeting, sizeof(c->greeting), c->last_reply);
    if (r->code != 220)
        return unexpected_reply(c);
    return send_cmd(c, SMTPC_EHLO, "EHLO", c->helo_name);
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
    /* The verdict passed and the encrypted session works: this is where delivery
     * transactions will begin. The probe ends here. */
    c->outcome = SMTPC_OUTCOME_PASS;
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
    case SMTPC_QUIT: set_state(c, SMTPC_DONE); return SMTPC_ACT_CLOSE;
    case SMTPC_CONNECT:
    case SMTPC_TLS:
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
    if (ev->kind == SMTPC_EV_TLS_FAILED || !ev->verdict->pass) {
        /* The connection is in no state for plaintext: no QUIT, no second chance in a
         * weaker mode. */
        c->outcome = SMTPC_OUTCOME_REFUSED;
        if (c->verdict.reason == TLS_REASON_NONE)
            c->verdict.reason = TLS_REASON_HANDSHAKE_FAILED;
        c->verdict.pass = false;
        set_state(c, SMTPC_DONE);
        return SMTPC_ACT_CLOSE;
    }
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
