/*
 * engine/deliver.c — one delivery attempt (see deliver.h): the MX lookup, then one
 * connection at a time down the MX list until one takes the transaction.
 *
 * Lifetime: the attempt is freed only by attempt_finish(), which runs from the DNS
 * callback (no session exists yet) or from a session's done callback (the session
 * touches nothing of ours after it returns), or from try_next() called from one of
 * those. Session callbacks never free anything before done.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/addr.h"
#include "engine/deliver_int.h"
#include "engine/errors.h"
#include "engine/log.h"
#include "engine/smtp_session.h"

static void try_next(struct eng_deliver *d);

static void attempt_free(struct eng_deliver *d)
{
    queue_envelope_free(d->env);
    free(d->idx);
    free(d->rcpts);
    free(d->results);
    free(d);
}

/* Ends the attempt: report, then free. */
static void attempt_finish(struct eng_deliver *d)
{
    eng_deliver_report_run(d);
    attempt_free(d);
}

/* ---- reasons ---------------------------------------------------------------------------- */

/* A floor refusal (live or cached) is kept over anything but an earlier refusal: the
 * primary's reason is the one the operator needs to see. */
static void cand_tls(struct eng_deliver *d, enum tls_reason reason, const char *enhanced,
                     const char *remote, const char *text)
{
    if (d->cand_tls)
        return;
    eng_deliver_result_set(&d->cand, QUEUE_RESULT_TLS, 454, enhanced, remote, text);
    d->cand_set = d->cand_tls = true;
    d->refusal = reason;
}

static void cand_network(struct eng_deliver *d, const char *remote, int err, bool at_connect,
                         const char *text)
{
    (void)err;
    if (d->cand_tls)
        return;
    eng_deliver_result_set(&d->cand, QUEUE_RESULT_NETWORK, 451, at_connect ? "4.4.1" : "4.4.2",
                           remote, text);
    d->cand_set = true;
}

/* RFC 3463: X.7.4 "security features not supported" when there was no TLS to speak of,
 * X.7.5 "cryptographic failure" for everything the handshake or certificate showed. */
static const char *tls_enhanced(enum tls_reason r)
{
    return r == TLS_REASON_NO_STARTTLS || r == TLS_REASON_STARTTLS_REFUSED ? "4.7.4" : "4.7.5";
}

static void refusal_text(const struct tls_verdict *v, char *buf, size_t cap)
{
    const struct tls_evidence *ev = &v->ev;
    char fp[65] = "";
    if (ev->has_cert)
        tls_evidence_fingerprint(ev, fp, sizeof(fp));
    snprintf(buf, cap,
             "TLS floor refused: %s (%s); version=%s cipher=%s subject=\"%.120s\" sha256=%s",
             tls_reason_name(v->reason), tls_reason_text(v->reason),
             ev->version ? tls_version_name(ev->version) : "none",
             ev->cipher[0] ? ev->cipher : "none", ev->has_cert ? ev->subject : "",
             ev->has_cert ? fp : "none");
}

/* ---- the session's callbacks ------------------------------------------------------------ */

static void on_ready(void *arg, struct smtp_session *s)
{
    struct eng_deliver *d = arg;
    if (d->txn_ended || d->stop) {
        smtp_session_quit(s);
        return;
    }
    d->t_ready = d->t_txn = eng_deliver_now_ms();
    int rc = smtp_session_deliver(s, &d->txn);
    if (rc == SMTP_TXN_STARTED)
        return; /* txn_done (and maybe done) may already have run: touch nothing */
    if (rc == SMTP_TXN_DECIDED) {
        d->t_txn_end = eng_deliver_now_ms();
        eng_deliver_apply_txn(d, d->remote);
        d->txn_ended = true;
    } else {
        /* The message cannot be handed to any host (a bad address or size). */
        eng_log(ENG_LOG_WARN, "delivery: transaction not begun: %s", eng_describe_error(rc));
        char text[128];
        snprintf(text, sizeof(text), "the message could not be sent: %s", eng_describe_error(rc));
        eng_deliver_result_set(&d->cand, QUEUE_RESULT_LOCAL, 451, "4.3.0", "", text);
        d->cand_set = d->cand_tls = true; /* nothing overrides it */
        d->stop = true;
    }
    smtp_session_quit(s);
}

static void on_txn_done(void *arg, struct smtp_session *s, const struct smtp_txn *txn)
{
    struct eng_deliver *d = arg;
    (void)s;
    (void)txn;
    d->t_txn_end = eng_deliver_now_ms();
    eng_deliver_apply_txn(d, d->remote);
    d->txn_ended = true;
}

static void record_verdict(struct eng_deliver *d, const struct tls_verdict *v)
{
    if (!d->cfg.capcache)
        return;
    int rc = eng_capcache_record(d->cfg.capcache, d->cur_host, d->cfg.port, v, time(NULL));
    if (rc < 0)
        eng_log(ENG_LOG_WARN, "delivery: capability cache: %s: %s", d->cur_host,
                eng_describe_error(rc));
}

static void on_done(void *arg, const struct smtp_client *res)
{
    struct eng_deliver *d = arg;
    if (res->outcome == SMTPC_OUTCOME_PASS || res->outcome == SMTPC_OUTCOME_REFUSED)
        record_verdict(d, &res->verdict);
    if (d->txn_ended) {
        d->rep.verdict = res->verdict;
        snprintf(d->rep.smtp_reply, sizeof(d->rep.smtp_reply), "%s", res->last_reply);
        attempt_finish(d);
        return;
    }
    char text[QUEUE_TEXT_MAX];
    if (res->outcome == SMTPC_OUTCOME_REFUSED) {
        refusal_text(&res->verdict, text, sizeof(text));
        cand_tls(d, res->verdict.reason, tls_enhanced(res->verdict.reason), d->remote, text);
    } else if (!d->stop) {
        snprintf(text, sizeof(text), "connection to %.200s failed at %s: %s; last reply: %.150s",
                 res->peer, smtpc_state_name(res->err_state), eng_describe_error(res->err),
                 res->last_reply[0] ? res->last_reply : "none");
        cand_network(d, d->remote, res->err, res->err_state == SMTPC_CONNECT, text);
    }
    try_next(d);
}

static const struct smtp_session_ops session_ops = {
    .ready = on_ready,
    .txn_done = on_txn_done,
    .done = on_done,
};

/* ---- walking the MX list ------------------------------------------------------------------ */

static socklen_t make_sockaddr(const struct dns_addr *a, uint16_t port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (a->family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        s6->sin6_addr = a->v6;
        return sizeof(*s6);
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    s4->sin_addr = a->v4;
    return sizeof(*s4);
}

/* A host the capability cache blocks: its cached reason, no connection. */
static bool host_blocked(struct eng_deliver *d, const struct dns_mx_host *h)
{
    if (!d->cfg.capcache)
        return false;
    struct eng_capcache_entry e;
    if (eng_capcache_check(d->cfg.capcache, h->name, d->cfg.port, time(NULL), &e) !=
        ENG_CAPCACHE_BLOCKED)
        return false;
    char desc[ENG_CAPCACHE_DESCRIBE_MAX], text[QUEUE_TEXT_MAX], remote[DNS_NAME_MAX + 16];
    eng_capcache_describe(&e, desc, sizeof(desc));
    snprintf(text, sizeof(text), "TLS floor (%s): %s", tls_reason_text(e.reason), desc);
    snprintf(remote, sizeof(remote), "%s:%u", h->name, (unsigned)d->cfg.port);
    cand_tls(d, e.reason, tls_enhanced(e.reason), remote, text);
    d->rep.skipped_cached++;
    eng_log(ENG_LOG_INFO, "delivery: skipping %s:%u: %s", h->name, (unsigned)d->cfg.port, desc);
    return true;
}

/* Starts the next connection, or finishes the attempt when there is none left. */
static void try_next(struct eng_deliver *d)
{
    while (!d->stop && d->host < d->nhosts) {
        const struct dns_mx_host *h = &d->mx.hosts[d->host];
        if (d->adr == 0 && host_blocked(d, h)) {
            d->host++;
            continue;
        }
        if (d->adr >= h->naddrs) {
            d->host++;
            d->adr = 0;
            continue;
        }
        const struct dns_addr *a = &h->addrs[d->adr++];
        struct sockaddr_storage ss;
        socklen_t sslen = make_sockaddr(a, d->cfg.port, &ss);
        snprintf(d->cur_host, sizeof(d->cur_host), "%s", h->name);
        eng_addr_format((const struct sockaddr *)&ss, d->cur_addr, sizeof(d->cur_addr));
        char ip[INET6_ADDRSTRLEN];
        snprintf(d->remote, sizeof(d->remote), "%s[%s]:%u", h->name,
                 dns_addr_format(a, ip, sizeof(ip)), (unsigned)d->cfg.port);
        struct smtp_session_config scfg = {
            .tls = d->cfg.tls,
            .tls_cache = d->cfg.tls_cache,
            .mx_name = h->name,
            .helo_name = d->cfg.helo_name,
            .connect_timeout_ms = d->cfg.connect_timeout_ms,
            .reply_timeout_ms = d->cfg.reply_timeout_ms,
            .send_timeout_ms = d->cfg.send_timeout_ms,
            .data_done_timeout_ms = d->cfg.data_done_timeout_ms,
        };
        d->t_conn = eng_deliver_now_ms();
        int rc = smtp_session_start_delivery(d->cfg.loop, &scfg, (const struct sockaddr *)&ss,
                                             sslen, &session_ops, d);
        if (rc == 0) {
            d->rep.connections++;
            return;
        }
        char text[QUEUE_TEXT_MAX];
        snprintf(text, sizeof(text), "cannot connect to %s: %s", d->remote, eng_describe_error(rc));
        cand_network(d, d->remote, rc, true, text);
    }
    if (!d->cand_set)
        eng_deliver_result_set(&d->cand, QUEUE_RESULT_NETWORK, 451, "4.4.1", "",
                               "no MX host could be tried");
    eng_deliver_apply_all(d, QUEUE_RCPT_DEFERRED, &d->cand);
    d->cur_host[0] = d->cur_addr[0] = '\0';
    attempt_finish(d);
}

/* ---- the MX answer -------------------------------------------------------------------------- */

static void dns_fail(struct eng_deliver *d, const struct dns_mx_result *res)
{
    struct queue_result r;
    char text[QUEUE_TEXT_MAX];
    snprintf(text, sizeof(text), "DNS %s %s for %s: %s%s%s", dns_outcome_name(res->outcome),
             dns_reason_name(res->reason), res->domain, dns_reason_text(res->reason),
             res->detail[0] ? "; " : "", res->detail);
    enum queue_rcpt_state st = QUEUE_RCPT_BOUNCED;
    if (res->outcome == DNS_OUTCOME_NULLMX) {
        eng_deliver_result_set(&r, QUEUE_RESULT_DNS, 556, "5.1.10", "", text);
    } else if (res->outcome == DNS_OUTCOME_PERMFAIL) {
        eng_deliver_result_set(&r, QUEUE_RESULT_DNS, 550, "5.1.2", "", text);
    } else {
        eng_deliver_result_set(&r, QUEUE_RESULT_DNS, 451, "4.4.3", "", text);
        st = QUEUE_RCPT_DEFERRED;
    }
    eng_deliver_apply_all(d, st, &r);
    attempt_finish(d);
}

static void on_mx(void *arg, const struct dns_mx_result *res)
{
    struct eng_deliver *d = arg;
    d->t_dns = eng_deliver_now_ms();
    d->rep.dns_outcome = res->outcome;
    d->rep.dns_reason = res->reason;
    if (res->outcome != DNS_OUTCOME_OK) {
        dns_fail(d, res);
        return;
    }
    d->mx = *res;
    d->nhosts = res->nhosts;
    if (d->cfg.max_mx_hosts && d->cfg.max_mx_hosts < d->nhosts)
        d->nhosts = d->cfg.max_mx_hosts;
    try_next(d);
}

/* ---- start ---------------------------------------------------------------------------------- */

static int attempt_txn_setup(struct eng_deliver *d)
{
    const struct queue_envelope *env = d->env;
    for (unsigned i = 0; i < env->nrcpts; i++)
        if (env->rcpts[i].state == QUEUE_RCPT_PENDING || env->rcpts[i].state == QUEUE_RCPT_DEFERRED)
            d->ntried++;
    if (d->ntried == 0)
        return -EINVAL;
    d->idx = calloc(d->ntried, sizeof(*d->idx));
    d->rcpts = calloc(d->ntried, sizeof(*d->rcpts));
    d->results = calloc(d->ntried, sizeof(*d->results));
    if (!d->idx || !d->rcpts || !d->results)
        return -ENOMEM;
    unsigned n = 0;
    for (unsigned i = 0; i < env->nrcpts; i++)
        if (env->rcpts[i].state == QUEUE_RCPT_PENDING ||
            env->rcpts[i].state == QUEUE_RCPT_DEFERRED) {
            d->idx[n] = i;
            d->rcpts[n++] = env->rcpts[i].addr;
        }
    d->txn = (struct smtp_txn){
        .sender = env->sender,
        .rcpts = d->rcpts,
        .nrcpts = d->ntried,
        .size = env->content_size,
        .needs_8bit = env->needs_8bit,
        .needs_smtputf8 = env->needs_smtputf8,
        .body = d->content,
        .body_len = d->len,
        .results = d->results,
    };
    return 0;
}

int eng_deliver_start(const struct eng_deliver_config *cfg, const struct queue_envelope *env,
                      const void *content, size_t len, eng_deliver_done_fn done, void *arg)
{
    if (!cfg || !cfg->loop || !cfg->dns || !cfg->tls || !cfg->helo_name || !env || !done ||
        (!content && len))
        return -EINVAL;
    struct eng_deliver *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->cfg = *cfg;
    snprintf(d->helo, sizeof(d->helo), "%s", cfg->helo_name);
    d->cfg.helo_name = d->helo;
    if (!d->cfg.port)
        d->cfg.port = 25;
    if (!d->cfg.connect_timeout_ms)
        d->cfg.connect_timeout_ms = 30000;
    if (!d->cfg.reply_timeout_ms)
        d->cfg.reply_timeout_ms = 300000;
    if (!d->cfg.send_timeout_ms)
        d->cfg.send_timeout_ms = d->cfg.reply_timeout_ms;
    if (!d->cfg.data_done_timeout_ms)
        d->cfg.data_done_timeout_ms = 600000;
    d->content = content ? content : "";
    d->len = len;
    d->done = done;
    d->arg = arg;
    d->t_start = eng_deliver_now_ms();
    d->env = queue_envelope_dup(env);
    int rc = d->env ? attempt_txn_setup(d) : -ENOMEM;
    if (rc == 0)
        rc = eng_dns_lookup_mx(cfg->dns, env->domain, on_mx, d);
    if (rc < 0) {
        attempt_free(d);
        return rc;
    }
    return 0;
}
