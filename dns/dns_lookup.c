/*
 * dns/dns_lookup.c — one pending domain's state machine (RFC 5321 5.1, RFC 7505):
 *
 *   mx ──> addresses ──> done        (and mx ──> done, on a failure or a null MX)
 *
 * mx: ares_query(domain, IN, MX). A CNAME chain in the answer is followed; if it ends
 * at a name without MX records, that name is queried again (bounded). NOERROR without
 * an MX RRset is the implicit MX (the domain's own addresses, preference 0); a single
 * root target is the null MX; NXDOMAIN is permanent; every other failure is
 * temporary and never falls back to the implicit MX.
 * addresses: A and AAAA (per the family preference) of every target at once, CNAMEs
 * followed the same way. When the last answer is in, the lookup is decided: hosts
 * with addresses -> OK; none, and every query answered definitively -> PERMFAIL
 * no_address; none, and one failed temporarily -> TEMPFAIL with its reason.
 * done: queued; dns_resolver.c builds the answer, caches it and runs the callbacks.
 *
 * A CNAME loop or a chain over DNS_CNAME_MAX is TEMPFAIL cname_limit, as Postfix does:
 * it is a misconfiguration the domain's owner may fix, and a bounce is not undone.
 *
 * c-ares may run a query's callback from inside ares_query; lk->outstanding counts the
 * queries in flight, and a guard reference held while several are issued keeps the
 * lookup from being decided before the last one is out. dns/ has no logger (it must
 * not depend on the engine's): the engine logs the outcome and detail it reads back.
 */
#include "dns/dns_int.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The one writer of lk->state. */
static void lookup_set_state(struct dns_lookup *lk, enum dns_lookup_state state)
{
    lk->state = state;
}

static uint32_t min32(uint32_t a, uint32_t b)
{
    return a < b ? a : b;
}

static const char *type_name(uint16_t type)
{
    return type == DNS_TYPE_MX ? "MX" : type == DNS_TYPE_A ? "A" : "AAAA";
}

/* Decides the lookup and queues it for its callbacks. */
static void lookup_done(struct dns_lookup *lk, enum dns_outcome outcome, enum dns_reason reason,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void lookup_done(struct dns_lookup *lk, enum dns_outcome outcome, enum dns_reason reason,
                        const char *fmt, ...)
{
    lk->outcome = outcome;
    lk->reason = reason;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lk->detail, sizeof(lk->detail), fmt, ap);
    va_end(ap);
    lookup_set_state(lk, DNS_LOOKUP_DONE);
    dns_resolver_queue_done(lk->r, lk);
}

/* Sends one query. While the resolver closes, nothing is sent: the callback runs at
 * once with ARES_EDESTRUCTION, as c-ares itself would. */
static void lookup_query(struct dns_lookup *lk, const char *name, uint16_t type, ares_callback cb,
                         void *arg)
{
    lk->outstanding++;
    if (lk->r->closing) {
        cb(arg, ARES_EDESTRUCTION, 0, NULL, 0);
        return;
    }
    lk->r->stats.queries++;
    ares_query(lk->r->channel, name, DNS_CLASS_IN, type, cb, arg);
}

static void on_mx(void *arg, int status, int timeouts, unsigned char *abuf, int alen);

void dns_lookup_start(struct dns_lookup *lk)
{
    lk->ttl = UINT32_MAX;
    lookup_set_state(lk, DNS_LOOKUP_MX);
    lookup_query(lk, lk->domain, DNS_TYPE_MX, on_mx, lk);
}

/* ---- addresses ---------------------------------------------------------------------- */

static void on_addr(void *arg, int status, int timeouts, unsigned char *abuf, int alen);

static uint16_t addrq_type(const struct dns_addrq *q)
{
    return q->v6 ? DNS_TYPE_AAAA : DNS_TYPE_A;
}

/* Every address query is in: decide. */
static void addresses_decide(struct dns_lookup *lk)
{
    unsigned usable = 0;
    const struct dns_addrq *failed = NULL;
    uint32_t neg = UINT32_MAX;
    for (unsigned i = 0; i < lk->ntargets; i++) {
        const struct dns_target *t = &lk->targets[i];
        bool has = false;
        for (int f = 0; f < 2; f++) {
            const struct dns_addrq *q = &t->q[f];
            has |= q->status == DNS_AQ_FOUND;
            if (q->status == DNS_AQ_FAILED && failed == NULL)
                failed = q;
            if (q->status == DNS_AQ_NONE && q->has_neg_ttl)
                neg = min32(neg, q->neg_ttl);
        }
        usable += has;
    }
    if (usable > 0) {
        lookup_done(lk, DNS_OUTCOME_OK, DNS_REASON_NONE, "%s", "");
    } else if (failed != NULL) {
        lookup_done(lk, DNS_OUTCOME_TEMPFAIL, failed->reason, "%s for %s %s",
                    dns_reason_name(failed->reason), type_name(addrq_type(failed)),
                    lk->targets[failed->target].name);
    } else {
        lk->ttl = min32(lk->ttl, neg);
        lookup_done(lk, DNS_OUTCOME_PERMFAIL, DNS_REASON_NO_ADDRESS,
                    lk->implicit_mx ? "no MX and no address for %s"
                                    : "no address for any MX host of %s",
                    lk->domain);
    }
}

static void addresses_settle(struct dns_lookup *lk)
{
    if (lk->state == DNS_LOOKUP_ADDRESSES && lk->outstanding == 0)
        addresses_decide(lk);
}

/* Queries the addresses of every target at once. */
static void addresses_start(struct dns_lookup *lk)
{
    lookup_set_state(lk, DNS_LOOKUP_ADDRESSES);
    bool want4 = lk->r->addr_pref != DNS_ADDR_ONLY_IPV6;
    bool want6 = lk->r->addr_pref != DNS_ADDR_ONLY_IPV4;
    lk->outstanding++; /* guard: answers arriving from inside ares_query wait for it */
    for (unsigned i = 0; i < lk->ntargets; i++) {
        for (int f = 0; f < 2; f++) {
            struct dns_addrq *q = &lk->targets[i].q[f];
            q->lk = lk;
            q->target = (uint8_t)i;
            q->v6 = (uint8_t)f;
            q->ttl = UINT32_MAX;
            if (f == 0 ? !want4 : !want6)
                continue;
            q->status = DNS_AQ_PENDING;
            lookup_query(lk, lk->targets[i].name, addrq_type(q), on_addr, q);
        }
    }
    lk->outstanding--;
    addresses_settle(lk);
}

static void addrq_answer(struct dns_addrq *q, const unsigned char *abuf, int alen)
{
    struct dns_lookup *lk = q->lk;
    struct dns_answer ans;
    enum dns_reason rc =
            dns_wire_parse(abuf, (size_t)alen, NULL, addrq_type(q), DNS_CNAME_MAX - q->hops, &ans);
    if (rc != DNS_REASON_NONE) {
        q->status = DNS_AQ_FAILED;
        q->reason = rc;
    } else if (ans.nrecords == 0 && ans.hops > 0) {
        /* The chain ends at a name the answer says nothing more about: ask for it. */
        char name[DNS_NAME_MAX + 1];
        if (q->requeries >= DNS_REQUERY_MAX || dns_name_normalize(ans.name, name) != 0) {
            q->status = DNS_AQ_FAILED;
            q->reason =
                    q->requeries >= DNS_REQUERY_MAX ? DNS_REASON_CNAME_LIMIT : DNS_REASON_MALFORMED;
            return;
        }
        q->requeries++;
        q->hops = (uint8_t)(q->hops + ans.hops);
        q->ttl = min32(q->ttl, ans.ttl);
        lookup_query(lk, name, addrq_type(q), on_addr, q);
    } else if (ans.nrecords == 0) {
        q->status = DNS_AQ_NONE; /* NOERROR, nothing of that type: NODATA */
    } else {
        q->status = DNS_AQ_FOUND;
        q->ttl = min32(q->ttl, ans.ttl);
        q->n = (uint8_t)ans.nkept;
        if (q->v6)
            memcpy(q->a.v6, ans.v6, ans.nkept * sizeof(ans.v6[0]));
        else
            memcpy(q->a.v4, ans.v4, ans.nkept * sizeof(ans.v4[0]));
    }
}

static void on_addr(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    struct dns_addrq *q = arg;
    struct dns_lookup *lk = q->lk;
    lk->outstanding--;
    if (status == ARES_SUCCESS) {
        addrq_answer(q, abuf, alen);
    } else if (status == ARES_ENODATA || status == ARES_ENOTFOUND) {
        /* Definitive: this host has no address of this family. */
        struct dns_answer ans;
        q->status = DNS_AQ_NONE;
        if (abuf != NULL &&
            dns_wire_parse(abuf, (size_t)alen, NULL, addrq_type(q), DNS_CNAME_MAX, &ans) ==
                    DNS_REASON_NONE &&
            ans.has_neg_ttl) {
            q->has_neg_ttl = true;
            q->neg_ttl = ans.neg_ttl;
        }
    } else {
        q->status = DNS_AQ_FAILED;
        q->reason = dns_reason_from_ares(status);
    }
    addresses_settle(lk);
}

/* ---- MX --------------------------------------------------------------------------- */

/* No MX RRset: the domain itself is the one host (RFC 5321 5.1). */
static void implicit_mx_start(struct dns_lookup *lk)
{
    lk->targets = calloc(1, sizeof(*lk->targets));
    if (lk->targets == NULL) {
        lookup_done(lk, DNS_OUTCOME_TEMPFAIL, DNS_REASON_NOMEM, "no memory for %s", lk->domain);
        return;
    }
    lk->implicit_mx = true;
    lk->ntargets = 1;
    memcpy(lk->targets[0].name, lk->domain, sizeof(lk->domain));
    addresses_start(lk);
}

static void add_skipped(struct dns_lookup *lk, unsigned n)
{
    unsigned s = lk->skipped + n;
    lk->skipped = (uint8_t)(s > 255 ? 255 : s);
}

/* An MX RRset is in ans: null MX, or the targets whose addresses to look up. */
static void mx_targets(struct dns_lookup *lk, struct dns_answer *ans)
{
    bool all_root = ans->nkept == ans->nrecords;
    for (unsigned i = 0; i < ans->nkept && all_root; i++)
        all_root = ans->mx[i].name[0] == '\0';
    if (all_root) { /* RFC 7505: "MX 0 ." alone (several "." are no better) */
        lookup_done(lk, DNS_OUTCOME_NULLMX, DNS_REASON_NULL_MX, "null MX for %s", lk->domain);
        return;
    }
    add_skipped(lk, ans->nrecords - ans->nkept); /* beyond DNS_MX_TARGETS_MAX */
    unsigned n = dns_mx_canonical(ans->mx, ans->nkept);
    lk->targets = n > 0 ? calloc(n, sizeof(*lk->targets)) : NULL;
    if (n > 0 && lk->targets == NULL) {
        lookup_done(lk, DNS_OUTCOME_TEMPFAIL, DNS_REASON_NOMEM, "no memory for %s", lk->domain);
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        struct dns_target *t = &lk->targets[lk->ntargets];
        /* An address literal ("192.0.2.1", "[192.0.2.1]") or anything that is not a
         * host name cannot be an MX target (RFC 5321 5.1): skipped. */
        if (dns_name_normalize(ans->mx[i].name, t->name) != 0) {
            add_skipped(lk, 1);
            continue;
        }
        t->pref = ans->mx[i].pref;
        lk->ntargets++;
    }
    if (lk->ntargets == 0) {
        lookup_done(lk, DNS_OUTCOME_PERMFAIL, DNS_REASON_NO_ADDRESS, "no usable MX host for %s",
                    lk->domain);
        return;
    }
    addresses_start(lk);
}

/* NOERROR with an answer section: MX records, or a chain to follow further. */
static void mx_answer(struct dns_lookup *lk, const unsigned char *abuf, int alen)
{
    /* The chain starts at the name asked: the domain, or where the last chain ended
     * (read back from the question, which c-ares matched to the query). */
    struct dns_answer ans;
    enum dns_reason rc =
            dns_wire_parse(abuf, (size_t)alen, NULL, DNS_TYPE_MX, DNS_CNAME_MAX - lk->hops, &ans);
    if (rc != DNS_REASON_NONE) {
        lookup_done(lk, DNS_OUTCOME_TEMPFAIL, rc, "%s for MX %s", dns_reason_name(rc), lk->domain);
        return;
    }
    lk->hops += ans.hops;
    lk->ttl = min32(lk->ttl, ans.ttl);
    if (ans.nrecords > 0) {
        mx_targets(lk, &ans);
    } else if (ans.hops == 0) {
        implicit_mx_start(lk); /* records, none of them MX for this name: NODATA */
    } else {
        char name[DNS_NAME_MAX + 1];
        if (lk->requeries >= DNS_REQUERY_MAX) {
            lookup_done(lk, DNS_OUTCOME_TEMPFAIL, DNS_REASON_CNAME_LIMIT,
                        "CNAME chain too long for MX %s", lk->domain);
        } else if (dns_name_normalize(ans.name, name) != 0) {
            lookup_done(lk, DNS_OUTCOME_TEMPFAIL, DNS_REASON_MALFORMED,
                        "CNAME to an invalid name for MX %s", lk->domain);
        } else {
            lk->requeries++;
            lookup_query(lk, name, DNS_TYPE_MX, on_mx, lk);
        }
    }
}

static void on_mx(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    struct dns_lookup *lk = arg;
    lk->outstanding--;
    struct dns_answer ans;
    bool negative = status == ARES_ENODATA || status == ARES_ENOTFOUND;
    if (negative && abuf != NULL &&
        dns_wire_parse(abuf, (size_t)alen, NULL, DNS_TYPE_MX, DNS_CNAME_MAX, &ans) ==
                DNS_REASON_NONE) {
        lk->ttl = min32(lk->ttl, ans.ttl);
        if (ans.has_neg_ttl)
            lk->ttl = min32(lk->ttl, ans.neg_ttl);
    }
    if (status == ARES_SUCCESS) {
        mx_answer(lk, abuf, alen);
    } else if (status == ARES_ENODATA) {
        implicit_mx_start(lk);
    } else if (status == ARES_ENOTFOUND) {
        lookup_done(lk, DNS_OUTCOME_PERMFAIL, DNS_REASON_NXDOMAIN, "NXDOMAIN for MX %s",
                    lk->domain);
    } else {
        enum dns_reason reason = dns_reason_from_ares(status);
        lookup_done(lk, DNS_OUTCOME_TEMPFAIL, reason, "%s for MX %s", dns_reason_name(reason),
                    lk->domain);
    }
}

/* ---- the answer ------------------------------------------------------------------------ */

void dns_lookup_result(const struct dns_lookup *lk, struct dns_mx_result *out)
{
    const struct dns_resolver *r = lk->r;
    out->outcome = lk->outcome;
    out->reason = lk->reason;
    out->implicit_mx = lk->implicit_mx;
    out->cached = false;
    out->nhosts = 0;
    memcpy(out->domain, lk->domain, sizeof(out->domain));
    memcpy(out->detail, lk->detail, sizeof(out->detail));
    unsigned skipped = lk->skipped;
    uint32_t ttl = lk->ttl;
    if (lk->outcome == DNS_OUTCOME_OK) {
        for (unsigned i = 0; i < lk->ntargets; i++) {
            const struct dns_target *t = &lk->targets[i];
            const struct dns_addrq *q4 = &t->q[0], *q6 = &t->q[1];
            unsigned n4 = q4->status == DNS_AQ_FOUND ? q4->n : 0;
            unsigned n6 = q6->status == DNS_AQ_FOUND ? q6->n : 0;
            if (n4 + n6 == 0 || out->nhosts == DNS_MX_HOSTS_MAX) {
                skipped++;
                continue;
            }
            struct dns_addr addrs[DNS_ADDRS_MAX];
            unsigned n =
                    dns_addrs_order(r->addr_pref, q4->a.v4, n4, q6->a.v6, n6, r->max_addrs, addrs);
            /* Only the families that made it into the answer bound its lifetime. */
            for (unsigned k = 0; k < n; k++)
                ttl = min32(ttl, addrs[k].family == AF_INET6 ? q6->ttl : q4->ttl);
            dns_host_set(&out->hosts[out->nhosts++], t->pref, t->name, strlen(t->name), addrs, n);
        }
    } else {
        skipped += lk->ntargets; /* every target was tried and gave no address */
    }
    out->skipped = (uint8_t)(skipped > 255 ? 255 : skipped);
    if (lk->outcome != DNS_OUTCOME_TEMPFAIL)
        out->ttl = dns_ttl_clamp(r, ttl, lk->outcome != DNS_OUTCOME_OK);
    else
        out->ttl = 0;
}

void dns_lookup_free(struct dns_lookup *lk)
{
    if (lk->waiters != &lk->waiter0)
        free(lk->waiters);
    free(lk->targets);
    free(lk);
}
