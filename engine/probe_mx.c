/*
 * engine/probe_mx.c — `floormta probe DOMAIN`: resolve the domain's MX set through the
 * loop's resolver (dns_loop.h), then probe every address of every MX host at once on
 * the same loop, each session judging the certificate against its own MX host name.
 *
 * Everything is one eng_loop_run: the lookup's callback starts the sessions, and the
 * loop returns once the last session has ended and c-ares has closed its sockets.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/addr.h"
#include "engine/dns_loop.h"
#include "engine/errors.h"
#include "engine/probe_int.h"
#include "engine/smtp_session.h"

struct mx_probe {
    const struct probe_opts *o;
    struct eng_loop *loop;
    struct tls_ctx *tls;
    char helo[256];
    struct probe_mx_report *rep;
    bool answered;
};

static void on_session_done(void *arg, const struct smtp_client *result)
{
    struct probe_row *row = arg;
    row->run.result = *result;
    row->run.finished = true;
    row->run.elapsed_ms = eng_probe_now_ms() - row->start_ms;
}

/* A session that could not even start is reported like one that failed to connect. */
static void row_fail(struct probe_row *row, int err)
{
    row->run.result.outcome = SMTPC_OUTCOME_ERROR;
    row->run.result.err = err;
    row->run.result.err_state = SMTPC_CONNECT;
    row->run.finished = true;
}

static socklen_t row_sockaddr(const struct dns_addr *a, uint16_t port, struct sockaddr_storage *ss)
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

static void row_start(struct mx_probe *m, struct probe_row *row, const struct dns_mx_host *h,
                      const struct dns_addr *a)
{
    const struct probe_opts *o = m->o;
    row->pref = h->pref;
    snprintf(row->mx, sizeof(row->mx), "%s", h->name);
    snprintf(row->name, sizeof(row->name), "%s", o->mx_name ? o->mx_name : h->name);
    struct sockaddr_storage ss;
    socklen_t sslen = row_sockaddr(a, o->port, &ss);
    eng_addr_format((const struct sockaddr *)&ss, row->where, sizeof(row->where));
    struct smtp_session_config scfg = {
        .tls = m->tls,
        .mx_name = row->name,
        .helo_name = o->helo_name ? o->helo_name : m->helo,
        .connect_timeout_ms = o->timeout_ms,
        .reply_timeout_ms = o->timeout_ms,
        .send_timeout_ms = o->timeout_ms,
    };
    row->start_ms = eng_probe_now_ms();
    int rc = smtp_session_start(m->loop, &scfg, (const struct sockaddr *)&ss, sslen,
                                on_session_done, row);
    if (rc < 0)
        row_fail(row, rc);
}

/* The MX answer (from the loop): keep it, and start a session per host address. */
static void on_mx(void *arg, const struct dns_mx_result *res)
{
    struct mx_probe *m = arg;
    struct probe_mx_report *rep = m->rep;
    m->answered = true;
    rep->dns = *res;
    if (res->outcome != DNS_OUTCOME_OK)
        return;
    size_t n = 0;
    for (unsigned i = 0; i < res->nhosts; i++)
        n += res->hosts[i].naddrs;
    rep->rows = calloc(n ? n : 1, sizeof(*rep->rows));
    if (!rep->rows) {
        fprintf(stderr, "floormta probe: out of memory\n");
        return;
    }
    /* Rows in the resolver's delivery order: by preference, ties as shuffled. */
    for (unsigned i = 0; i < res->nhosts; i++)
        for (unsigned j = 0; j < res->hosts[i].naddrs; j++)
            row_start(m, &rep->rows[rep->nrows++], &res->hosts[i], &res->hosts[i].addrs[j]);
}

static int mx_setup(struct mx_probe *m)
{
    const struct probe_opts *o = m->o;
    struct tls_client_config tcfg = { .min_version = o->floor, .ca_file = o->ca_file };
    int rc = tls_ctx_new_client(&tcfg, &m->tls);
    if (rc < 0) {
        fprintf(stderr, "floormta probe: %s%s%s\n", tls_strerror(rc), o->ca_file ? ": " : "",
                o->ca_file ? o->ca_file : "");
        return rc;
    }
    rc = eng_loop_new(NULL, &m->loop);
    if (rc < 0) {
        fprintf(stderr, "floormta probe: %s\n", eng_strerror(rc));
        tls_ctx_free(m->tls);
        return rc;
    }
    if (gethostname(m->helo, sizeof(m->helo) - 1) < 0 || !m->helo[0])
        strcpy(m->helo, "localhost");
    return 0;
}

int eng_probe_mx_run(const struct probe_opts *o, struct probe_mx_report *rep)
{
    memset(rep, 0, sizeof(*rep));
    struct mx_probe m = { .o = o, .rep = rep };
    int rc = mx_setup(&m);
    if (rc < 0)
        return rc;
    uint64_t start = eng_probe_now_ms();
    struct dns_config dcfg = { .servers = o->dns_servers[0] ? o->dns_servers : NULL };
    struct eng_dns *dns = NULL;
    rc = eng_dns_new(m.loop, &dcfg, &dns);
    if (rc == 0)
        rc = eng_dns_lookup_mx(dns, o->target, on_mx, &m);
    if (rc < 0) {
        rep->dns_err = rc; /* a bad --dns list or domain: reported as a DNS failure */
        snprintf(rep->dns.domain, sizeof(rep->dns.domain), "%.*s", DNS_NAME_MAX, o->target);
    } else {
        rc = eng_loop_run(m.loop);
        if (rc < 0)
            fprintf(stderr, "floormta probe: %s\n", eng_describe_error(rc));
        else if (!m.answered) /* cannot happen: every lookup is answered */
            rep->dns_err = DNS_ERR_CLOSING;
    }
    rep->elapsed_ms = eng_probe_now_ms() - start;
    eng_dns_free(dns);
    eng_loop_free(m.loop);
    tls_ctx_free(m.tls);
    if (rc < 0 && !rep->dns_err) {
        free(rep->rows);
        rep->rows = NULL;
        rep->nrows = 0;
        return rc;
    }
    return 0;
}
