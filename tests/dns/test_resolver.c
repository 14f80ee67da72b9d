/*
 * tests/dns/test_resolver.c — the whole lookup state machine against a fake DNS server
 * in this process (UDP on 127.0.0.1, answers built with tests/dns/msg.h), driven by a
 * poll loop standing in for the engine's: MX then A/AAAA, CNAME re-queries, implicit
 * MX, null MX, NXDOMAIN, SERVFAIL/REFUSED/timeouts (never an implicit MX), targets
 * without addresses, address literals, CNAME loops, coalescing, callbacks never run
 * from inside dns_resolve_mx, shutdown with lookups pending, and 2000 domains in
 * flight at once. Real dnsmasq tests live in tests/dns/test_live_*.c.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "dns/dns_int.h"
#include "tests/dns/msg.h"

/* ---- the fake server ---------------------------------------------------------------- */

static int server_fd = -1;
static char server_addr[64];
static unsigned server_queries;

static void server_open(void)
{
    server_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    assert_true(server_fd >= 0);
    int big = 16 << 20;
    if (setsockopt(server_fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)) != 0)
        setsockopt(server_fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    struct sockaddr_in sin = { .sin_family = AF_INET };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(server_fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    socklen_t sl = sizeof(sin);
    getsockname(server_fd, (struct sockaddr *)&sin, &sl);
    snprintf(server_addr, sizeof(server_addr), "127.0.0.1:%u", ntohs(sin.sin_port));
}

static bool is(const char *qname, const char *name)
{
    return strcasecmp(qname, name) == 0;
}

static void nodata(struct msg *m)
{
    msg_soa(m, "test", 3600, 3600);
}

/* Fills m with the answer to (qname, qtype); false = no answer at all. */
static bool answer(struct msg *m, uint16_t id, const char *q, uint16_t t)
{
    const bool mx = t == DNS_TYPE_MX, a = t == DNS_TYPE_A;
    unsigned rcode = 0;
    if (is(q, "nx.test") || is(q, "gone.noaddr.test"))
        rcode = 3;
    else if (is(q, "servfail.test") || ((is(q, "x.tempaddr.test") || is(q, "implfail.test")) && a))
        rcode = 2;
    else if (is(q, "refused.test"))
        rcode = 5;
    else if (is(q, "timeout.test"))
        return false;
    msg_init(m, id, rcode, q, t);
    if (rcode == 3) {
        msg_soa(m, "test", 900, 300);
    } else if (rcode != 0) {
        /* nothing */
    } else if (is(q, "mx.test") && mx) {
        msg_mx(m, "@12", 10, "a.mx.test", 300);
        msg_mx(m, "@12", 20, "c.mx.test", 300);
        msg_mx(m, "@12", 10, "b.mx.test", 300);
    } else if (is(q, "a.mx.test")) {
        if (a)
            msg_a(m, "@12", "192.0.2.1", 100);
        else if (t == DNS_TYPE_AAAA)
            msg_aaaa(m, "@12", "2001:db8::1", 200);
        else
            nodata(m);
    } else if (is(q, "b.mx.test") || is(q, "c.mx.test")) {
        if (a)
            msg_a(m, "@12", is(q, "b.mx.test") ? "192.0.2.2" : "192.0.2.3", 400);
        else
            nodata(m);
    } else if (is(q, "cname.test") && mx) {
        msg_cname(m, "@12", "real.test", 50);
    } else if (is(q, "real.test") && mx) {
        msg_mx(m, "@12", 10, "a.mx.test", 300);
    } else if (is(q, "implicit.test") && a) {
        msg_a(m, "@12", "192.0.2.7", 1000);
    } else if (is(q, "nullmx.test") && mx) {
        msg_mx(m, "@12", 0, ".", 7200);
    } else if (is(q, "noaddr.test") && mx) {
        msg_mx(m, "@12", 10, "gone.noaddr.test", 300);
    } else if (is(q, "tempaddr.test") && mx) {
        msg_mx(m, "@12", 10, "x.tempaddr.test", 300);
    } else if (is(q, "literal.test") && mx) {
        msg_mx(m, "@12", 10, "192.0.2.1", 300);
        msg_mx(m, "@12", 20, "a.mx.test", 300);
    } else if (is(q, "partial.test") && mx) {
        msg_mx(m, "@12", 10, "gone.noaddr.test", 300);
        msg_mx(m, "@12", 20, "b.mx.test", 300);
    } else if (is(q, "loop.test") && mx) {
        msg_cname(m, "@12", "loop2.test", 60);
        msg_cname(m, "loop2.test", "loop.test", 60);
    } else if (is(q, "acname.test") && mx) {
        msg_mx(m, "@12", 10, "alias.mx.test", 300);
    } else if (is(q, "alias.mx.test")) {
        msg_cname(m, "@12", "a.mx.test", 30);
        if (a) /* the AAAA answer stops at the CNAME: the resolver asks again */
            msg_a(m, "a.mx.test", "192.0.2.1", 100);
    } else if (strlen(q) > 10 && is(q + strlen(q) - 10, ".bulk.test") && mx) {
        msg_mx(m, "@12", 10, "mx.bulk.test", 300);
    } else if (is(q, "mx.bulk.test") && a) {
        msg_a(m, "@12", "192.0.2.99", 300);
    } else {
        nodata(m);
    }
    return true;
}

static void server_serve(void)
{
    uint8_t buf[1500];
    struct sockaddr_storage from;
    /* A bounded batch per loop turn, as a real server's answers interleave with the
     * client's reads. */
    for (int batch = 0; batch < 64; batch++) {
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(server_fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
        if (n < 0)
            return;
        server_queries++;
        /* Queries carry one uncompressed question. */
        char q[DNS_NAME_MAX + 2] = "";
        size_t p = 12, o = 0;
        while (p < (size_t)n && buf[p] != 0 && o + buf[p] + 1 < sizeof(q)) {
            if (o)
                q[o++] = '.';
            memcpy(q + o, buf + p + 1, buf[p]);
            o += buf[p];
            p += 1u + buf[p];
        }
        q[o] = '\0';
        if (p + 5 > (size_t)n)
            continue;
        uint16_t t = (uint16_t)(buf[p + 1] << 8 | buf[p + 2]);
        static struct msg m;
        if (answer(&m, (uint16_t)(buf[0] << 8 | buf[1]), q, t))
            sendto(server_fd, m.buf, m.len, 0, (struct sockaddr *)&from, fl);
    }
}

/* ---- the loop ------------------------------------------------------------------------ */

#define WATCH_MAX 64
static struct {
    int fd;
    bool r, w;
} watched[WATCH_MAX];
static int nwatched;

static void watch(void *arg, int fd, bool r, bool w)
{
    (void)arg;
    for (int i = 0; i < nwatched; i++) {
        if (watched[i].fd == fd) {
            if (!r && !w) {
                watched[i] = watched[--nwatched];
            } else {
                watched[i].r = r;
                watched[i].w = w;
            }
            return;
        }
    }
    if (r || w) {
        assert_true(nwatched < WATCH_MAX);
        watched[nwatched].fd = fd;
        watched[nwatched].r = r;
        watched[nwatched].w = w;
        nwatched++;
    }
}

static const struct dns_io io = { watch };

struct got {
    unsigned calls;
    struct dns_mx_result res;
};

static bool in_resolve; /* set around dns_resolve_mx: a callback then would be a bug */

static void on_result(void *arg, const struct dns_mx_result *res)
{
    struct got *g = arg;
    assert_false(in_resolve);
    g->calls++;
    g->res = *res;
}

static int resolve(struct dns_resolver *r, const char *domain, struct got *g)
{
    in_resolve = true;
    int rc = dns_resolve_mx(r, domain, on_result, g);
    in_resolve = false;
    return rc;
}

/* Runs the loop until every one of n results came in (or 10 s passed). */
static void run(struct dns_resolver *r, struct got *g, unsigned n)
{
    uint64_t deadline = dns_now_ms() + 10000;
    for (;;) {
        unsigned pending = 0;
        for (unsigned i = 0; i < n; i++)
            pending += g[i].calls == 0;
        if (pending == 0 || dns_now_ms() > deadline)
            break;
        struct pollfd pfd[WATCH_MAX + 1];
        int np = 0;
        pfd[np++] = (struct pollfd){ .fd = server_fd, .events = POLLIN };
        for (int i = 0; i < nwatched; i++)
            pfd[np++] = (struct pollfd){ .fd = watched[i].fd,
                                         .events = (short)((watched[i].r ? POLLIN : 0) |
                                                           (watched[i].w ? POLLOUT : 0)) };
        int t = dns_resolver_timeout_ms(r);
        int rc = poll(pfd, (nfds_t)np, t < 0 || t > 50 ? 50 : t);
        if (pfd[0].revents & POLLIN)
            server_serve();
        for (int i = 1; i < np && rc > 0; i++) {
            if (pfd[i].revents == 0)
                continue;
            bool still = false; /* an earlier call may have closed it */
            for (int k = 0; k < nwatched; k++)
                still |= watched[k].fd == pfd[i].fd;
            if (still)
                dns_resolver_process_fd(
                        r, pfd[i].revents & (POLLIN | POLLERR | POLLHUP) ? pfd[i].fd : -1,
                        pfd[i].revents & POLLOUT ? pfd[i].fd : -1);
        }
        if (dns_resolver_timeout_ms(r) == 0 || rc == 0)
            dns_resolver_process_timeouts(r);
    }
}

static struct dns_resolver *new_resolver(unsigned timeout_ms, enum dns_addr_pref pref)
{
    struct dns_config cfg = { .servers = server_addr,
                              .timeout_ms = timeout_ms,
                              .tries = 1,
                              .ttl_min = 1,
                              .addr_pref = pref };
    struct dns_resolver *r;
    assert_int_equal(dns_resolver_new(&cfg, &io, NULL, &r), 0);
    return r;
}

static struct dns_mx_result lookup(struct dns_resolver *r, const char *domain)
{
    struct got g = { 0 };
    assert_int_equal(resolve(r, domain, &g), 0);
    assert_int_equal(g.calls, 0);
    run(r, &g, 1);
    assert_int_equal(g.calls, 1);
    return g.res;
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_mx_and_addresses(void **state)
{
    (void)state;
    struct dns_resolver *r = new_resolver(2000, DNS_ADDR_PREF_ANY);
    struct dns_mx_result res = lookup(r, "MX.test.");
    assert_int_equal(res.outcome, DNS_OUTCOME_OK);
    assert_string_equal(res.domain, "mx.test");
    assert_false(res.cached);
    assert_false(res.implicit_mx);
    assert_int_equal(res.nhosts, 3);
    assert_int_equal(res.hosts[0].pref, 10);
    assert_int_equal(res.hosts[1].pref, 10);
    assert_string_equal(res.hosts[2].name, "c.mx.test");
    const struct dns_mx_host *a = res.hosts[0].name[0] == 'a' ? &res.hosts[0] : &res.hosts[1];
    assert_string_equal(a->name, "a.mx.test");
    assert_int_equal(a->naddrs, 2);
    assert_int_equal(a->addrs[0].family, AF_INET6); /* ANY: IPv6 first */
    assert_int_equal(a->addrs[1].family, AF_INET);
    assert_int_equal(res.ttl, 100); /* the lowest record: a.mx.test's A */
    struct dns_stats st;
    dns_resolver_stats(r, &st);
    assert_int_equal(st.queries, 1 + 3 * 2);
    assert_int_equal(st.inflight, 0);
    assert_int_equal(st.cache_entries, 1);

    struct dns_mx_result hit;
    assert_int_equal(dns_mx_cached(r, "mx.test", &hit), 0);
    assert_true(hit.cached);
    assert_int_equal(hit.nhosts, 3);
    dns_resolver_free(r);

    r = new_resolver(2000, DNS_ADDR_ONLY_IPV4);
    res = lookup(r, "mx.test");
    assert_int_equal(res.outcome, DNS_OUTCOME_OK);
    dns_resolver_stats(r, &st);
    assert_int_equal(st.queries, 1 + 3); /* no AAAA at all */
    for (unsigned i = 0; i < res.nhosts; i++)
        assert_int_equal(res.hosts[i].addrs[0].family, AF_INET);
    dns_resolver_free(r);
}

static void test_cname_implicit_null(void **state)
{
    (void)state;
    struct dns_resolver *r = new_resolver(2000, DNS_ADDR_PREF_ANY);
    struct dns_stats st;
    struct dns_mx_result res = lookup(r, "cname.test");
    assert_int_equal(res.outcome, DNS_OUTCOME_OK);
    assert_int_equal(res.nhosts, 1);
    assert_string_equal(res.hosts[0].name, "a.mx.test");
    assert_int_equal(res.ttl, 50); /* the CNAME */
    dns_resolver_stats(r, &st);
    assert_int_equal(st.queries, 2 + 2); /* MX, MX again at real.test, A, AAAA */

    res = lookup(r, "implicit.test");
    assert_int_equal(res.outcome, DNS_OUTCOME_OK);
    assert_true(res.implicit_mx);
    assert_int_equal(res.nhosts, 1);
    assert_string_equal(res.hosts[0].name, "implicit.test");
    assert_int_equal(res.hosts[0].pref, 0);
    assert_int_equal(res.hosts[0].naddrs, 1);
    assert_int_equal(res.ttl, 1000); /* A 1000; the MX NODATA's SOA says 3600 */

    uint64_t before = st.queries;
    res = lookup(r, "nullmx.test");
    assert_int_equal(res.outcome, DNS_OUTCOME_NULLMX);
    assert_int_equal(res.reason, DNS_REASON_NULL_MX);
    assert_int_equal(res.ttl, 3600); /* 7200 clamped to negative_ttl_max */
    dns_resolver_stats(r, &st);
    assert_int_equal(st.queries, before + 3 + 1); /* implicit: 3; null MX: no address */

    res = lookup(r, "acname.test");
    assert_int_equal(res.outcome, DNS_OUTCOME_OK);
    assert_string_equal(res.hosts[0].name, "alias.mx.test");
    assert_int_equal(res.hosts[0].naddrs, 2); /* the AAAA through a re-query */
    assert_int_equal(res.ttl, 30);

    res = lookup(r, "loop.test");
    assert_int_equal(res.outcome, DNS_OUTCOME_TEMPFAIL);
    assert_int_equal(res.reason, DNS_REASON_CNAME_LIMIT);
    dns_resolver_free(r);
}

static void test_failures(void **state)
{
    (void)state;
    struct dns_resolver *r = new_resolver(300, DNS_ADDR_PREF_ANY);
    struct dns_mx_result res = lookup(r, "nx.test");
    assert_int_equal(res.outcome, DNS_OUTCOME_PERMFAIL);
    assert_int_equal(res.reason, DNS_REASON_NXDOMAIN);
    assert_int_equal(res.ttl, 300); /* min(SOA TTL 900, MINIMUM 300) */

    res = lookup(r, "servfail.test");
    assert_int_equal(res.outcome, DNS_OUTCOME_TEMPFAIL);
    assert_int_equal(res.reason, DNS_REASON_SERVFAIL);
    assert_int_equal(res.nhosts, 0);
    assert_false(res.implicit_mx);
    res = lookup(r, "refused.test");
    assert_int_equal(res.reason, DNS_REASON_REFUSED);
    res = lookup(r, "timeout.test");
    assert_int_equal(res.outcome, DNS_OUTCOME_TEMPFAIL);
    assert_int_equal(res.reason, DNS_REASON_TIMEOUT);

    res = lookup(r, "noaddr.test");
    assert_int_equal(res.outcome, DNS_OUTCOME_PERMFAIL);
    assert_int_equal(res.reason, DNS_REASON_NO_ADDRESS);
    assert_int_equal(res.skipped, 1);
    assert_int_equal(res.nhosts, 0);
    assert_int_equal(res.ttl, 300); /* the address lookups' SOA: min(900, 300) */
    res = lookup(r, "tempaddr.test");
    assert_int_equal(res.outcome, DNS_OUTCOME_TEMPFAIL);
    assert_int_equal(res.reason, DNS_REASON_SERVFAIL);

    /* No MX and no address: permanent; no MX and a failing address lookup: not. */
    res = lookup(r, "empty.test");
    assert_int_equal(res.outcome, DNS_OUTCOME_PERMFAIL);
    assert_int_equal(res.reason, DNS_REASON_NO_ADDRESS);
    assert_true(res.implicit_mx);
    res = lookup(r, "implfail.test");
    assert_int_equal(res.outcome, DNS_OUTCOME_TEMPFAIL);
    assert_int_equal(res.reason, DNS_REASON_SERVFAIL);

    res = lookup(r, "literal.test");
    assert_int_equal(res.outcome, DNS_OUTCOME_OK);
    assert_int_equal(res.nhosts, 1);
    assert_string_equal(res.hosts[0].name, "a.mx.test");
    assert_int_equal(res.skipped, 1);
    res = lookup(r, "partial.test");
    assert_int_equal(res.outcome, DNS_OUTCOME_OK);
    assert_int_equal(res.nhosts, 1);
    assert_string_equal(res.hosts[0].name, "b.mx.test");
    assert_int_equal(res.skipped, 1);

    /* Only permanent answers were cached. */
    struct dns_mx_result hit;
    assert_int_equal(dns_mx_cached(r, "nx.test", &hit), 0);
    assert_int_equal(dns_mx_cached(r, "noaddr.test", &hit), 0);
    assert_int_equal(dns_mx_cached(r, "servfail.test", &hit), -ENOENT);
    assert_int_equal(dns_mx_cached(r, "timeout.test", &hit), -ENOENT);
    assert_int_equal(dns_mx_cached(r, "tempaddr.test", &hit), -ENOENT);
    struct dns_stats st;
    dns_resolver_stats(r, &st);
    assert_int_equal(st.tempfails, 5);
    assert_int_equal(st.permfails, 3);

    struct got g = { 0 };
    assert_int_equal(resolve(r, "", &g), DNS_ERR_NAME);
    assert_int_equal(resolve(r, "192.0.2.1", &g), DNS_ERR_NAME);
    assert_int_equal(resolve(r, "[192.0.2.1]", &g), DNS_ERR_NAME);
    assert_int_equal(resolve(r, "a..test", &g), DNS_ERR_NAME);
    assert_int_equal(dns_resolve_mx(r, "ok.test", NULL, NULL), -EINVAL);
    dns_resolver_stats(r, &st);
    assert_int_equal(st.inflight, 0);
    dns_resolver_free(r);
}

static void test_coalescing(void **state)
{
    (void)state;
    struct dns_resolver *r = new_resolver(2000, DNS_ADDR_PREF_ANY);
    struct got g[6] = { 0 };
    const char *spell[] = { "mx.test", "MX.TEST", "mx.test.", "Mx.Test", "mx.test", "mx.test" };
    unsigned q0 = server_queries;
    for (int i = 0; i < 6; i++)
        assert_int_equal(resolve(r, spell[i], &g[i]), 0);
    struct dns_stats st;
    dns_resolver_stats(r, &st);
    assert_int_equal(st.coalesced, 5);
    assert_int_equal(st.inflight, 1);
    run(r, g, 6);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].res.outcome, DNS_OUTCOME_OK);
        assert_int_equal(g[i].res.nhosts, 3);
    }
    assert_int_equal(server_queries - q0, 7); /* one set of queries */
    dns_resolver_free(r);
}

static struct dns_resolver *closing_resolver;

static void on_result_retry(void *arg, const struct dns_mx_result *res)
{
    on_result(arg, res);
    assert_int_equal(dns_resolve_mx(closing_resolver, "again.test", on_result, arg),
                     DNS_ERR_CLOSING);
}

static void test_shutdown(void **state)
{
    (void)state;
    struct dns_resolver *r = new_resolver(2000, DNS_ADDR_PREF_ANY);
    closing_resolver = r;
    struct got g[3] = { 0 };
    in_resolve = true;
    assert_int_equal(dns_resolve_mx(r, "timeout.test", on_result_retry, &g[0]), 0);
    assert_int_equal(dns_resolve_mx(r, "mx.test", on_result_retry, &g[1]), 0);
    assert_int_equal(dns_resolve_mx(r, "timeout.test", on_result_retry, &g[2]), 0);
    in_resolve = false;
    assert_true(dns_resolver_timeout_ms(r) > 0);
    dns_resolver_free(r);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].res.outcome, DNS_OUTCOME_TEMPFAIL);
        assert_int_equal(g[i].res.reason, DNS_REASON_SHUTDOWN);
    }
    assert_int_equal(nwatched, 0); /* every socket was unwatched */
}

static void test_unreachable(void **state)
{
    (void)state;
    /* A port nobody listens on: the ICMP error comes back as ECONNREFUSED. */
    struct dns_config cfg = { .servers = "127.0.0.1:1", .timeout_ms = 500, .tries = 1 };
    struct dns_resolver *r;
    assert_int_equal(dns_resolver_new(&cfg, &io, NULL, &r), 0);
    struct got g = { 0 };
    assert_int_equal(resolve(r, "example.test", &g), 0);
    assert_int_equal(g.calls, 0);
    run(r, &g, 1);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.res.outcome, DNS_OUTCOME_TEMPFAIL);
    assert_int_equal(g.res.reason, DNS_REASON_UNREACHABLE);
    dns_resolver_free(r);
}

static void test_many_in_flight(void **state)
{
    (void)state;
    enum { N = 2000 };
    struct dns_resolver *r = new_resolver(3000, DNS_ADDR_ONLY_IPV4);
    static struct got g[N];
    memset(g, 0, sizeof(g));
    for (int i = 0; i < N; i++) {
        char name[64];
        snprintf(name, sizeof(name), "d%d.bulk.test", i);
        assert_int_equal(resolve(r, name, &g[i]), 0);
    }
    struct dns_stats st;
    dns_resolver_stats(r, &st);
    assert_int_equal(st.inflight, N);
    /* The default max_inflight window: 64 domains on the network, the rest in line. */
    assert_int_equal(st.waiting, N - 64);
    /* A waiting domain still coalesces: one more caller joins, no new lookup. */
    static struct got extra;
    memset(&extra, 0, sizeof(extra));
    assert_int_equal(resolve(r, "d1999.bulk.test", &extra), 0);
    dns_resolver_stats(r, &st);
    assert_int_equal(st.inflight, N);
    assert_int_equal(st.coalesced, 1);
    run(r, g, N);
    unsigned ok = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(g[i].calls, 1);
        ok += g[i].res.outcome == DNS_OUTCOME_OK && g[i].res.nhosts == 1 &&
              strcmp(g[i].res.hosts[0].name, "mx.bulk.test") == 0;
    }
    assert_int_equal(ok, N);
    assert_int_equal(extra.calls, 1);
    assert_int_equal(extra.res.outcome, DNS_OUTCOME_OK);
    dns_resolver_stats(r, &st);
    assert_int_equal(st.inflight, 0);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.cache_entries, N);
    dns_resolver_free(r);
}

/* Shutting down with lookups still waiting for the window: each answers shutdown. */
static void test_shutdown_waiting(void **state)
{
    (void)state;
    struct dns_config cfg = { .servers = server_addr, .timeout_ms = 2000, .max_inflight = 1 };
    struct dns_resolver *r;
    assert_int_equal(dns_resolver_new(&cfg, &io, NULL, &r), 0);
    struct got g[3] = { 0 };
    assert_int_equal(resolve(r, "timeout.test", &g[0]), 0);
    assert_int_equal(resolve(r, "mx.test", &g[1]), 0);
    assert_int_equal(resolve(r, "other.test", &g[2]), 0);
    struct dns_stats st;
    dns_resolver_stats(r, &st);
    assert_int_equal(st.waiting, 2);
    dns_resolver_free(r);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].res.reason, DNS_REASON_SHUTDOWN);
    }
}

int main(void)
{
    server_open();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mx_and_addresses), cmocka_unit_test(test_cname_implicit_null),
        cmocka_unit_test(test_failures),         cmocka_unit_test(test_coalescing),
        cmocka_unit_test(test_shutdown),         cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_many_in_flight),   cmocka_unit_test(test_shutdown_waiting),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    close(server_fd);
    return rc;
}
