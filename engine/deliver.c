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
#include <stddef.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/addr.h"
#include "engine/deliver_int.h"
#include "engine/errors.h"
#include "engine/hash.h"
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

/* ---- the connection's callbacks ---------------------------------------------------------- */

static void record_verdict(struct eng_deliver *d, const struct tls_verdict *v)
{
    if (!d->use_capcache)
        return;
    int rc = eng_capcache_record(d->cfg.capcache, d->cur_host, d->cfg.port, v, time(NULL));
    if (rc < 0)
        eng_log(ENG_LOG_WARN, "delivery: capability cache: %s: %s", d->cur_host,
                eng_describe_error(rc));
}

/* Gives a ready connection back. With a pool it stays there and the attempt goes on
 * at once (true); without one it is closed, and its done callback goes on (false). */
static bool give_back(struct eng_deliver *d, struct eng_conn *c)
{
    eng_connpool_release(c, d->cfg.pool != NULL);
    return d->cfg.pool != NULL;
}

/* The transaction has ended on c and c is ready again: the evidence goes into the
 * report, the connection back, and the attempt ends. */
static void finish_on_conn(struct eng_deliver *d, struct eng_conn *c)
{
    const struct smtp_client *sm = eng_conn_client(c);
    d->rep.verdict = sm->verdict;
    d->rep.plaintext = sm->plaintext;
    d->rep.reused = d->reused;
    snprintf(d->rep.smtp_reply, sizeof(d->rep.smtp_reply), "%s", sm->last_reply);
    if (give_back(d, c))
        attempt_finish(d);
}

static void on_ready(void *arg, struct eng_conn *c)
{
    struct eng_deliver *d = arg;
    /* A pooled connection may outlive the attempt: its verdict is recorded now. */
    if (!d->reused && !d->recorded) {
        record_verdict(d, &eng_conn_client(c)->verdict);
        d->recorded = true;
    }
    if (d->txn_ended) {
        finish_on_conn(d, c);
        return;
    }
    if (d->stop) {
        if (give_back(d, c))
            try_next(d); /* finishes: nothing more to try */
        return;
    }
    d->t_ready = d->t_txn = eng_deliver_now_ms();
    int rc = eng_conn_deliver(c, &d->txn);
    if (rc == SMTP_TXN_STARTED)
        return; /* txn_done (and maybe done) may already have run: touch nothing */
    if (rc == SMTP_TXN_DECIDED) {
        d->t_txn_end = eng_deliver_now_ms();
        eng_deliver_apply_txn(d, d->remote);
        d->txn_ended = true;
        finish_on_conn(d, c);
        return;
    }
    /* The message cannot be handed to any host (a bad address or size). */
    eng_log(ENG_LOG_WARN, "delivery: transaction not begun: %s", eng_describe_error(rc));
    char text[128];
    snprintf(text, sizeof(text), "the message could not be sent: %s", eng_describe_error(rc));
    eng_deliver_result_set(&d->cand, QUEUE_RESULT_LOCAL, 451, "4.3.0", "", text);
    d->cand_set = d->cand_tls = true; /* nothing overrides it */
    d->stop = true;
    if (give_back(d, c))
        try_next(d);
}

/* A reused connection that failed before any reply to MAIL took nothing: the
 * receiver had closed it while it was idle. */
static bool txn_found_stale(const struct eng_deliver *d)
{
    if (!d->reused || d->stale_retries >= 2)
        return false;
    for (unsigned k = 0; k < d->ntried; k++)
        if (d->results[k].source != SMTP_RESULT_NETWORK || d->results[k].at != SMTPC_MAIL)
            return false;
    return true;
}

static void on_txn_done(void *arg, struct eng_conn *c, const struct smtp_txn *txn)
{
    struct eng_deliver *d = arg;
    (void)c;
    (void)txn;
    if (txn_found_stale(d)) {
        memset(d->results, 0, d->ntried * sizeof(*d->results));
        d->stale = true;
        return;
    }
    d->t_txn_end = eng_deliver_now_ms();
    eng_deliver_apply_txn(d, d->remote);
    d->txn_ended = true;
}

static void on_done(void *arg, struct eng_conn *c, const struct smtp_client *res)
{
    struct eng_deliver *d = arg;
    (void)c;
    if (!d->reused && !d->recorded &&
        (res->outcome == SMTPC_OUTCOME_PASS || res->outcome == SMTPC_OUTCOME_REFUSED))
        record_verdict(d, &res->verdict);
    d->recorded = false; /* the next connection's verdict is its own */
    if (d->txn_ended) {
        d->rep.verdict = res->verdict;
        d->rep.plaintext = res->plaintext;
        d->rep.reused = d->reused;
        snprintf(d->rep.smtp_reply, sizeof(d->rep.smtp_reply), "%s", res->last_reply);
        attempt_finish(d);
        return;
    }
    if (d->stale) {
        eng_log(ENG_LOG_INFO,
                "delivery: reused connection to %s was closed by the receiver: "
                "another connection",
                d->remote);
        d->stale = false;
        d->stale_retries++;
        d->reused = false;
        try_next(d); /* the same host again: d->host and d->adr did not move */
        return;
    }
    char text[QUEUE_TEXT_MAX];
    if (res->outcome == SMTPC_OUTCOME_REFUSED) {
        const struct tls_evidence *ev = &res->verdict.ev;
        /* No STARTTLS (or refused): there is no TLS evidence, only the reason. */
        if (!d->refused_live && (ev->version || ev->has_cert || ev->detail[0])) {
            d->refused = res->verdict;
            d->refused_live = true;
        }
        refusal_text(&res->verdict, text, sizeof(text));
        cand_tls(d, res->verdict.reason, tls_enhanced(res->verdict.reason), d->remote, text);
    } else if (!d->stop) {
        snprintf(text, sizeof(text), "connection to %.200s failed at %s: %s; last reply: %.150s",
                 res->peer, smtpc_state_name(res->err_state), eng_describe_error(res->err),
                 res->last_reply[0] ? res->last_reply : "none");
        cand_network(d, d->remote, res->err, res->err_state == SMTPC_CONNECT, text);
    }
    d->reused = false;
    try_next(d);
}

static const struct eng_conn_ops conn_ops = {
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
    if (!d->use_capcache)
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

/* The egress source for this destination and address family: the domain's hash picks
 * among the sources of that family, so a domain always leaves from the same address.
 * Returns its index + 1, or 0 (unbound). */
static unsigned pick_source(const struct eng_deliver *d, int family)
{
    unsigned n = 0;
    for (unsigned i = 0; i < d->cfg.nsources; i++)
        n += d->cfg.sources[i].ss_family == family;
    if (n == 0)
        return 0;
    unsigned want = (unsigned)(eng_hash_name(d->env->domain) % n);
    for (unsigned i = 0; i < d->cfg.nsources; i++)
        if (d->cfg.sources[i].ss_family == family && want-- == 0)
            return i + 1;
    return 0;
}

static void set_current(struct eng_deliver *d, const char *host, const char *addr,
                        const char *remote)
{
    snprintf(d->cur_host, sizeof(d->cur_host), "%s", host);
    snprintf(d->cur_addr, sizeof(d->cur_addr), "%s", addr);
    snprintf(d->remote, sizeof(d->remote), "%s", remote);
}

/* The message goes over an idle connection the pool lent us. */
static void use_reused(struct eng_deliver *d, struct eng_conn *c)
{
    const struct dns_mx_host *h = &d->mx.hosts[d->host];
    d->reused = true;
    set_current(d, h->name, eng_conn_address(c), eng_conn_client(c)->peer);
    d->t_conn = eng_deliver_now_ms();
    on_ready(d, c);
}

/* Connects to the host's next address on the slot the pool reserved. Returns true if
 * a connection is under way; false if it could not start (the reason is recorded,
 * the slot given back). */
static bool connect_next(struct eng_deliver *d)
{
    const struct dns_mx_host *h = &d->mx.hosts[d->host];
    const struct dns_addr *a = &h->addrs[d->adr++];
    struct eng_connpool_key key = {
        .host = h->name, .port = d->cfg.port, .source = d->source, .tls = d->tls
    };
    struct sockaddr_storage ss;
    socklen_t sslen = make_sockaddr(a, d->cfg.port, &ss);
    char addr[64], ip[INET6_ADDRSTRLEN], remote[DNS_NAME_MAX + 80];
    eng_addr_format((const struct sockaddr *)&ss, addr, sizeof(addr));
    snprintf(remote, sizeof(remote), "%s[%s]:%u", h->name, dns_addr_format(a, ip, sizeof(ip)),
             (unsigned)d->cfg.port);
    set_current(d, h->name, addr, remote);
    unsigned src = pick_source(d, ss.ss_family);
    struct smtp_session_config scfg = {
        .tls = d->tls,
        .opportunistic = d->pol && d->pol->mode == ENG_POLICY_OPPORTUNISTIC,
        .tls_cache = d->cfg.tls_cache,
        .mx_name = h->name,
        .helo_name = d->cfg.helo_name,
        .connect_timeout_ms = d->cfg.connect_timeout_ms,
        .reply_timeout_ms = d->cfg.reply_timeout_ms,
        .send_timeout_ms = d->cfg.send_timeout_ms,
        .data_done_timeout_ms = d->cfg.data_done_timeout_ms,
    };
    if (src) {
        scfg.source = (const struct sockaddr *)&d->cfg.sources[src - 1];
        scfg.source_len =
                ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    }
    d->t_conn = eng_deliver_now_ms();
    int rc = eng_connpool_connect(d->cfg.pool, d->cfg.loop, &key, &scfg,
                                  (const struct sockaddr *)&ss, sslen, &conn_ops, d);
    if (rc == 0) {
        d->rep.connections++;
        return true;
    }
    char text[QUEUE_TEXT_MAX];
    snprintf(text, sizeof(text), "cannot connect to %s: %s", d->remote, eng_describe_error(rc));
    cand_network(d, d->remote, rc, true, text);
    return false;
}

static void on_granted(struct eng_connpool_wait *w, enum eng_connpool_grant g, struct eng_conn *c)
{
    struct eng_deliver *d = (struct eng_deliver *)((char *)w - offsetof(struct eng_deliver, wait));
    if (g == ENG_CONNPOOL_REUSE) {
        use_reused(d, c);
        return;
    }
    if (g == ENG_CONNPOOL_CONNECT) {
        /* try_next only waits with an address left to try on this host. */
        if (!connect_next(d))
            try_next(d);
        return;
    }
    cand_network(d, "", -ESHUTDOWN, true, "the engine is shutting down");
    d->stop = true;
    try_next(d);
}

/* Starts the next connection (or takes an idle one), or finishes the attempt when
 * there is none left. */
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
        /* Every address of a host shares its key: the source of its first address's
         * family (a host's pooled connections are all to its name). */
        d->source = pick_source(d, h->addrs[d->adr].family == AF_INET6 ? AF_INET6 : AF_INET);
        struct eng_connpool_key key = {
            .host = h->name, .port = d->cfg.port, .source = d->source, .tls = d->tls
        };
        struct eng_conn *c = NULL;
        d->wait.ops = &conn_ops;
        d->wait.arg = d;
        d->wait.granted = on_granted;
        int rc = eng_connpool_acquire(d->cfg.pool, &key, &d->wait, &c);
        if (rc == ENG_CONNPOOL_WAIT)
            return; /* on_granted goes on */
        if (rc == ENG_CONNPOOL_REUSE) {
            use_reused(d, c);
            return;
        }
        if (rc == ENG_CONNPOOL_CONNECT) {
            if (connect_next(d))
                return;
            continue;
        }
        char text[QUEUE_TEXT_MAX];
        snprintf(text, sizeof(text), "no connection to %s: %s", h->name,
                 rc == ENG_CONNPOOL_CLOSED ? "the engine is shutting down"
                                           : eng_describe_error(rc));
        cand_network(d, "", rc, true, text);
        d->stop = true;
    }
    if (!d->cand_set)
        eng_deliver_result_set(&d->cand, QUEUE_RESULT_NETWORK, 451, "4.4.1", "",
                               "no MX host could be tried");
    if (d->pol && d->pol->bounce_on_refusal && d->cand.kind == QUEUE_RESULT_TLS) {
        /* The operator chose a bounce over waiting for the receiver to fix its TLS. */
        d->cand.code = 550;
        d->cand.enhanced[0] = '5';
        eng_deliver_apply_all(d, QUEUE_RCPT_BOUNCED, &d->cand);
    } else {
        eng_deliver_apply_all(d, QUEUE_RCPT_DEFERRED, &d->cand);
    }
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
    d->tls = cfg->tls;
    d->use_capcache = cfg->capcache != NULL;
    if (cfg->policy) {
        d->pol = eng_policy_lookup(cfg->policy, env->domain);
        const struct eng_policy *def = eng_policy_lookup(cfg->policy, NULL);
        if (!d->pol || !def) {
            free(d);
            return -EINVAL; /* a table that was not built */
        }
        d->tls = d->pol->tls;
        d->use_capcache =
                cfg->capcache && d->pol->tls == def->tls && d->pol->mode == ENG_POLICY_FLOOR;
    }
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
