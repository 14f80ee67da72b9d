/*
 * engine/deliver_log.c — an attempt's results as values: recipients' queue results,
 * the report, and the one JSON line per attempt for the delivery log.
 *
 * The JSON line is for machines (one object per line, stable keys); the info line
 * carries the same object so that the log alone is enough to answer "where did this
 * message go, over what TLS, and why not".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/deliver_int.h"
#include "engine/json_out.h"
#include "engine/log.h"

static const char *const result_names[] = {
#define ENG_DELIVER_RESULT_NAME(name, str) str,
    ENG_DELIVER_RESULTS(ENG_DELIVER_RESULT_NAME)
#undef ENG_DELIVER_RESULT_NAME
};

const char *eng_deliver_result_name(enum eng_deliver_result r)
{
    if ((unsigned)r >= sizeof(result_names) / sizeof(result_names[0]))
        return "invalid";
    return result_names[r];
}

uint64_t eng_deliver_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void eng_deliver_result_set(struct queue_result *r, enum queue_result_kind kind, uint16_t code,
                            const char *enhanced, const char *remote, const char *text)
{
    memset(r, 0, sizeof(*r));
    r->kind = kind;
    r->code = code;
    r->when = time(NULL);
    snprintf(r->enhanced, sizeof(r->enhanced), "%s", enhanced ? enhanced : "");
    snprintf(r->remote, sizeof(r->remote), "%s", remote ? remote : "");
    snprintf(r->text, sizeof(r->text), "%s", text ? text : "");
}

static bool rcpt_final(const struct queue_rcpt *r)
{
    return r->state == QUEUE_RCPT_DELIVERED || r->state == QUEUE_RCPT_BOUNCED;
}

void eng_deliver_apply_txn(struct eng_deliver *d, const char *remote)
{
    for (unsigned k = 0; k < d->ntried; k++) {
        struct queue_rcpt *r = &d->env->rcpts[d->idx[k]];
        const struct smtp_rcpt_result *s = &d->results[k];
        enum queue_result_kind kind = s->source == SMTP_RESULT_REPLY     ? QUEUE_RESULT_SMTP
                                      : s->source == SMTP_RESULT_NETWORK ? QUEUE_RESULT_NETWORK
                                                                         : QUEUE_RESULT_LOCAL;
        r->state = s->status == SMTP_RCPT_DELIVERED ? QUEUE_RCPT_DELIVERED
                   : s->status == SMTP_RCPT_BOUNCED ? QUEUE_RCPT_BOUNCED
                                                    : QUEUE_RCPT_DEFERRED;
        if (r->attempts < UINT16_MAX)
            r->attempts++;
        uint16_t code = s->code ? s->code : 451;
        eng_deliver_result_set(&r->last, kind, code, s->enhanced, remote, s->text);
    }
}

void eng_deliver_apply_all(struct eng_deliver *d, enum queue_rcpt_state state,
                           const struct queue_result *res)
{
    for (unsigned k = 0; k < d->ntried; k++) {
        struct queue_rcpt *r = &d->env->rcpts[d->idx[k]];
        if (rcpt_final(r))
            continue;
        r->state = state;
        if (r->attempts < UINT16_MAX)
            r->attempts++;
        r->last = *res;
    }
}

/* ---- the JSON line ---------------------------------------------------------------------- */

static void json_rcpts(struct eng_json_out *w, const struct eng_deliver *d)
{
    eng_json_out_open(w, "recipients", true);
    for (unsigned k = 0; k < d->ntried; k++) {
        const struct queue_rcpt *r = &d->env->rcpts[d->idx[k]];
        eng_json_out_open(w, NULL, false);
        eng_json_out_str(w, "addr", r->addr);
        eng_json_out_str(w, "state", queue_rcpt_state_name(r->state));
        eng_json_out_str(w, "kind", queue_result_kind_name(r->last.kind));
        eng_json_out_int(w, "code", r->last.code);
        eng_json_out_str_or_null(w, "enhanced", r->last.enhanced);
        eng_json_out_str(w, "text", r->last.text);
        eng_json_out_close(w, false);
    }
    eng_json_out_close(w, true);
}

static void json_tls(struct eng_json_out *w, const struct tls_verdict *v)
{
    const struct tls_evidence *ev = &v->ev;
    eng_json_out_open(w, "tls", false);
    eng_json_out_str_or_null(w, "version", ev->version ? tls_version_name(ev->version) : NULL);
    eng_json_out_str_or_null(w, "cipher", ev->cipher);
    eng_json_out_str_or_null(w, "subject", ev->has_cert ? ev->subject : NULL);
    eng_json_out_str_or_null(w, "issuer", ev->has_cert ? ev->issuer : NULL);
    char fp[65];
    eng_json_out_str_or_null(w, "fingerprint",
                             ev->has_cert ? tls_evidence_fingerprint(ev, fp, sizeof(fp)) : NULL);
    eng_json_out_str(w, "session", ev->resumed ? "resumed" : "full");
    if (ev->detail[0])
        eng_json_out_str(w, "detail", ev->detail);
    eng_json_out_close(w, false);
}

/* The line, in w (reset first). Keys and their order are the delivery log's format. */
static const char *json_line(struct eng_json_out *w, const struct eng_deliver *d,
                             const struct eng_deliver_report *rep)
{
    char id[QUEUE_ID_HEX];
    eng_json_out_reset(w);
    eng_json_out_open(w, NULL, false);
    eng_json_out_str(w, "queue_id", queue_id_format(d->env->id, id));
    eng_json_out_str(w, "domain", d->env->domain);
    eng_json_out_str(w, "result", eng_deliver_result_name(rep->result));
    json_rcpts(w, d);
    eng_json_out_str(w, "dns", dns_outcome_name(rep->dns_outcome));
    eng_json_out_str_or_null(w, "mx", rep->mx_host);
    eng_json_out_str_or_null(w, "address", rep->address);
    eng_json_out_str_or_null(w, "smtp_reply", rep->smtp_reply);
    eng_json_out_str(w, "policy", rep->policy);
    eng_json_out_str(w, "mode", eng_policy_mode_name(rep->mode));
    /* The evidence: of the delivering connection, else of the first refusal seen. */
    if (rep->transacted && !rep->plaintext)
        json_tls(w, &rep->verdict);
    else if (!rep->transacted && d->refused_live)
        json_tls(w, &d->refused);
    else
        eng_json_out_null(w, "tls");
    /* "opportunistic": delivered under that policy without meeting the floor (TLS below
     * it, or plaintext): the reason then says what the floor would have refused. */
    const char *verdict = rep->transacted ? (rep->floor_met ? "pass" : "opportunistic")
                          : d->cand_tls   ? "refuse"
                                          : NULL;
    eng_json_out_str_or_null(w, "verdict", verdict);
    /* The delivering connection's reason (none) when a host took the message; else the
     * refusal behind the deferral. */
    enum tls_reason reason = rep->transacted ? rep->verdict.reason : rep->refusal;
    eng_json_out_str(w, "reason", tls_reason_name(reason));
    eng_json_out_str_or_null(w, "refused_before",
                             rep->transacted && rep->refusal != TLS_REASON_NONE
                                     ? tls_reason_name(rep->refusal)
                                     : NULL);
    eng_json_out_str_or_null(w, "transport",
                             rep->transacted ? (rep->plaintext ? "plaintext" : "tls") : NULL);
    eng_json_out_str_or_null(w, "connection",
                             rep->transacted ? (rep->reused ? "reused" : "new") : NULL);
    eng_json_out_int(w, "connections", rep->connections);
    eng_json_out_int(w, "skipped_cached", rep->skipped_cached);
    eng_json_out_open(w, "durations", false);
    eng_json_out_int(w, "dns_ms", (int64_t)rep->dns_ms);
    eng_json_out_int(w, "connect_ms", (int64_t)rep->connect_ms);
    eng_json_out_int(w, "txn_ms", (int64_t)rep->txn_ms);
    eng_json_out_int(w, "total_ms", (int64_t)rep->total_ms);
    eng_json_out_close(w, false);
    eng_json_out_close(w, false);
    return eng_json_out_text(w);
}

/* ---- the report ---------------------------------------------------------------------------- */

void eng_deliver_report_run(struct eng_deliver *d)
{
    struct eng_deliver_report *rep = &d->rep;
    uint64_t now = eng_deliver_now_ms();
    rep->env = d->env;
    rep->transacted = d->txn_ended;
    rep->policy = d->pol ? d->pol->name : "default";
    rep->mode = d->pol ? d->pol->mode : ENG_POLICY_FLOOR;
    rep->refusal = d->refusal;
    if (d->txn_ended) {
        snprintf(rep->mx_host, sizeof(rep->mx_host), "%s", d->cur_host);
        snprintf(rep->address, sizeof(rep->address), "%s", d->cur_addr);
        rep->connect_ms = d->t_ready - d->t_conn;
        rep->floor_met = tls_verdict_meets_floor(&rep->verdict);
        rep->txn_ms = d->t_txn_end - d->t_txn;
    } else {
        memset(&rep->verdict, 0, sizeof(rep->verdict));
        rep->smtp_reply[0] = '\0';
    }
    rep->dns_ms = (d->t_dns ? d->t_dns : now) - d->t_start;
    rep->total_ms = now - d->t_start;
    for (unsigned k = 0; k < d->ntried; k++) {
        enum queue_rcpt_state st = d->env->rcpts[d->idx[k]].state;
        rep->delivered += st == QUEUE_RCPT_DELIVERED;
        rep->bounced += st == QUEUE_RCPT_BOUNCED;
        rep->deferred += st == QUEUE_RCPT_DEFERRED || st == QUEUE_RCPT_PENDING;
    }
    rep->result = rep->delivered == d->ntried  ? ENG_DELIVER_DELIVERED
                  : rep->bounced == d->ntried  ? ENG_DELIVER_BOUNCED
                  : rep->deferred == d->ntried ? ENG_DELIVER_DEFERRED
                                               : ENG_DELIVER_MIXED;
    struct eng_json_out own = { 0 }, *w = d->cfg.log_out ? d->cfg.log_out : &own;
    const char *line = json_line(w, d, rep);
    rep->log_json = line ? line : "{}";
    if (eng_log_enabled(ENG_LOG_INFO))
        eng_log(ENG_LOG_INFO, "delivery %s", rep->log_json);
    d->done(d->arg, rep);
    rep->log_json = NULL;
    if (w == &own)
        eng_json_out_free(&own);
}
