/*
 * engine/deliver_log.c — an attempt's results as values: recipients' queue results,
 * the report, and the one JSON line per attempt for the delivery log.
 *
 * The JSON line is for machines (one object per line, stable keys); the info line
 * carries the same object so that the log alone is enough to answer "where did this
 * message go, over what TLS, and why not".
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/deliver_int.h"
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

static json_t *json_str_or_null(const char *s)
{
    return s && s[0] ? json_string(s) : json_null();
}

static json_t *json_rcpts(const struct eng_deliver *d)
{
    json_t *a = json_array();
    for (unsigned k = 0; k < d->ntried; k++) {
        const struct queue_rcpt *r = &d->env->rcpts[d->idx[k]];
        json_t *o = json_object();
        json_object_set_new(o, "addr", json_string(r->addr));
        json_object_set_new(o, "state", json_string(queue_rcpt_state_name(r->state)));
        json_object_set_new(o, "kind", json_string(queue_result_kind_name(r->last.kind)));
        json_object_set_new(o, "code", json_integer(r->last.code));
        json_object_set_new(o, "enhanced", json_str_or_null(r->last.enhanced));
        json_object_set_new(o, "text", json_string(r->last.text));
        json_array_append_new(a, o);
    }
    return a;
}

static json_t *json_tls(const struct tls_verdict *v)
{
    const struct tls_evidence *ev = &v->ev;
    json_t *o = json_object();
    json_object_set_new(o, "version",
                        ev->version ? json_string(tls_version_name(ev->version)) : json_null());
    json_object_set_new(o, "cipher", json_str_or_null(ev->cipher));
    json_object_set_new(o, "subject", ev->has_cert ? json_string(ev->subject) : json_null());
    json_object_set_new(o, "issuer", ev->has_cert ? json_string(ev->issuer) : json_null());
    char fp[65];
    json_object_set_new(o, "fingerprint",
                        ev->has_cert ? json_string(tls_evidence_fingerprint(ev, fp, sizeof(fp)))
                                     : json_null());
    json_object_set_new(o, "session", json_string(ev->resumed ? "resumed" : "full"));
    if (ev->detail[0])
        json_object_set_new(o, "detail", json_string(ev->detail));
    return o;
}

static char *json_line(const struct eng_deliver *d, const struct eng_deliver_report *rep)
{
    char id[QUEUE_ID_HEX];
    json_t *o = json_object();
    json_object_set_new(o, "queue_id", json_string(queue_id_format(d->env->id, id)));
    json_object_set_new(o, "domain", json_string(d->env->domain));
    json_object_set_new(o, "result", json_string(eng_deliver_result_name(rep->result)));
    json_object_set_new(o, "recipients", json_rcpts(d));
    json_object_set_new(o, "dns", json_string(dns_outcome_name(rep->dns_outcome)));
    json_object_set_new(o, "mx", json_str_or_null(rep->mx_host));
    json_object_set_new(o, "address", json_str_or_null(rep->address));
    json_object_set_new(o, "smtp_reply", json_str_or_null(rep->smtp_reply));
    json_object_set_new(o, "policy", json_string(rep->policy));
    json_object_set_new(o, "mode", json_string(eng_policy_mode_name(rep->mode)));
    /* The evidence: of the delivering connection, else of the first refusal seen. */
    json_object_set_new(o, "tls",
                        rep->transacted && !rep->plaintext    ? json_tls(&rep->verdict)
                        : !rep->transacted && d->refused_live ? json_tls(&d->refused)
                                                              : json_null());
    /* "opportunistic": delivered under that policy without meeting the floor (TLS below
     * it, or plaintext): the reason then says what the floor would have refused. */
    const char *verdict = rep->transacted ? (rep->floor_met ? "pass" : "opportunistic")
                          : d->cand_tls   ? "refuse"
                                          : NULL;
    json_object_set_new(o, "verdict", json_str_or_null(verdict));
    /* The delivering connection's reason (none) when a host took the message; else the
     * refusal behind the deferral. */
    enum tls_reason reason = rep->transacted ? rep->verdict.reason : rep->refusal;
    json_object_set_new(o, "reason", json_string(tls_reason_name(reason)));
    json_object_set_new(o, "refused_before",
                        rep->transacted && rep->refusal != TLS_REASON_NONE
                                ? json_string(tls_reason_name(rep->refusal))
                                : json_null());
    json_object_set_new(o, "transport",
                        rep->transacted ? json_string(rep->plaintext ? "plaintext" : "tls")
                                        : json_null());
    json_object_set_new(o, "connection",
                        rep->transacted ? json_string(rep->reused ? "reused" : "new")
                                        : json_null());
    json_object_set_new(o, "connections", json_integer(rep->connections));
    json_object_set_new(o, "skipped_cached", json_integer(rep->skipped_cached));
    json_t *t = json_object();
    json_object_set_new(t, "dns_ms", json_integer((json_int_t)rep->dns_ms));
    json_object_set_new(t, "connect_ms", json_integer((json_int_t)rep->connect_ms));
    json_object_set_new(t, "txn_ms", json_integer((json_int_t)rep->txn_ms));
    json_object_set_new(t, "total_ms", json_integer((json_int_t)rep->total_ms));
    json_object_set_new(o, "durations", t);
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
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
    char *line = json_line(d, rep);
    rep->log_json = line ? line : "{}";
    eng_log(ENG_LOG_INFO, "delivery %s", rep->log_json);
    d->done(d->arg, rep);
    free(line);
    rep->log_json = NULL;
}
