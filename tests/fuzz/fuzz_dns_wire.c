/*
 * tests/fuzz/fuzz_dns_wire.c — what a hostile or broken DNS server can answer: the
 * message through dns_wire_parse, and what the resolver builds from a parsed answer
 * with the pure functions behind it: dns_name_normalize on the names, dns_mx_canonical
 * on an MX set, dns_addrs_order on addresses, dns_result_deliver's shuffle and the
 * cache's compact copy (dns_cache_put/get), dns_ttl_clamp.
 *
 * The first bytes pick what the answer is parsed against:
 *   byte 0    bits 0-1: the query type (0, 3: MX; 1: A; 2: AAAA); bit 2: a query name
 *             follows (else NULL: the question's, as the resolver asks); bits 4-7: the
 *             CNAME budget (mod DNS_CNAME_MAX + 1)
 *   byte 1    selection: bits 0-3 max hosts - 1, bits 4-7 the address preference (mod 5);
 *             also the shuffle's seed and the number of made-up addresses of the family
 *             the answer does not carry
 *   [byte 2]  with bit 2: the name's length L, then L bytes of name (normalised first;
 *             one that is not a valid domain means NULL)
 *   the rest  the DNS message
 *
 * Invariants: the reason is NONE, MALFORMED or CNAME_LIMIT (at exactly the budget); rcode,
 * hops and the record counts within their bounds (nkept = min(nrecords, the array));
 * TTLs without the top bit; every name NUL-terminated in its array, whatever the
 * outcome, and in the parser's presentation form (lowercase labels of 1-63 octets,
 * "\DDD" for exactly the octets a host name cannot hold, at most DNS_NAME_MAX
 * characters and 255 octets on the wire); the same result twice over differently dirty
 * output structs, and with the question's name passed as qname; a canonical MX set
 * sorted, without roots or repeated names, each name at its lowest preference; a
 * normalised name a host name that normalises to itself; an address order that is the
 * asked-for interleaving of the two lists; a delivery (fresh or from the cache) that
 * keeps the lowest preferences in order and each host once, with its addresses.
 */
#include "tests/fuzz/fuzz.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "dns/dns_int.h"

#define SEL_QTYPE 3u
#define SEL_QNAME 0x04u

static bool host_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* A name as dns_wire_parse writes it; "" is the root. */
static void check_presentation(const char *name)
{
    size_t len = strnlen(name, DNS_NAME_MAX + 1);
    fuzz_check(len <= DNS_NAME_MAX);
    if (len == 0)
        return;
    size_t wire = 1, label = 0;
    for (size_t i = 0; i <= len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '.' || c == '\0') {
            fuzz_check(label >= 1 && label <= 63);
            wire += 1 + label;
            label = 0;
        } else if (c == '\\') {
            fuzz_check(i + 3 < len);
            unsigned v = 0;
            for (size_t k = 1; k <= 3; k++) {
                fuzz_check(name[i + k] >= '0' && name[i + k] <= '9');
                v = v * 10 + (unsigned)(name[i + k] - '0');
            }
            /* Only what a host name cannot hold; letters are lowercased, not escaped. */
            fuzz_check(v <= 255 && !host_char((unsigned char)v) && !(v >= 'A' && v <= 'Z'));
            i += 3;
            label++;
        } else {
            fuzz_check(host_char(c));
            label++;
        }
    }
    fuzz_check(wire <= 255);
}

/* A normalised domain (dns_name_normalize's promise). */
static void check_hostname(const char *name)
{
    size_t len = strnlen(name, DNS_NAME_MAX + 1);
    fuzz_check(len >= 1 && len <= DNS_NAME_MAX);
    size_t label = 0;
    for (size_t i = 0; i <= len; i++) {
        if (name[i] == '.' || name[i] == '\0') {
            fuzz_check(label >= 1 && label <= 63);
            label = 0;
        } else {
            fuzz_check(host_char((unsigned char)name[i]));
            label++;
        }
    }
    struct in_addr v4;
    fuzz_check(inet_pton(AF_INET, name, &v4) != 1);
    char again[DNS_NAME_MAX + 1];
    fuzz_check(dns_name_normalize(name, again) == 0 && strcmp(again, name) == 0);
}

/* ---- the parse ---------------------------------------------------------------------------- */

static unsigned kept_cap(uint16_t qtype)
{
    return qtype == DNS_TYPE_MX ? DNS_MX_TARGETS_MAX : DNS_ADDRS_MAX;
}

static void check_answer(enum dns_reason rc, const struct dns_answer *a, uint16_t qtype,
                         unsigned max_hops)
{
    fuzz_check(rc == DNS_REASON_NONE || rc == DNS_REASON_MALFORMED || rc == DNS_REASON_CNAME_LIMIT);
    fuzz_check(strcmp(dns_reason_name(rc), "unknown") != 0);
    fuzz_check(a->rcode <= 15);
    fuzz_check(a->hops <= max_hops);
    if (rc == DNS_REASON_CNAME_LIMIT)
        fuzz_check(a->hops == max_hops);
    /* Whatever the outcome: the callers may log it. */
    check_presentation(a->name);
    fuzz_check(a->ttl == UINT32_MAX || a->ttl <= INT32_MAX);
    fuzz_check(a->has_neg_ttl ? a->neg_ttl <= INT32_MAX : a->neg_ttl == 0);
    if (rc != DNS_REASON_NONE)
        return;
    fuzz_check(a->nkept <= a->nrecords && a->nkept <= kept_cap(qtype));
    fuzz_check(a->nkept == (a->nrecords < kept_cap(qtype) ? a->nrecords : kept_cap(qtype)));
    if (a->nrecords == 0 && a->hops == 0)
        fuzz_check(a->ttl == UINT32_MAX);
    else
        fuzz_check(a->ttl <= INT32_MAX);
    if (qtype == DNS_TYPE_MX)
        for (unsigned i = 0; i < a->nkept; i++)
            check_presentation(a->mx[i].name);
}

static bool answer_same(enum dns_reason ra, const struct dns_answer *a, enum dns_reason rb,
                        const struct dns_answer *b, uint16_t qtype)
{
    if (ra != rb || a->rcode != b->rcode || a->hops != b->hops || a->ttl != b->ttl ||
        a->has_neg_ttl != b->has_neg_ttl || a->neg_ttl != b->neg_ttl ||
        strcmp(a->name, b->name) != 0)
        return false;
    if (ra != DNS_REASON_NONE)
        return true;
    if (a->nrecords != b->nrecords || a->nkept != b->nkept)
        return false;
    for (unsigned i = 0; i < a->nkept; i++) {
        if (qtype == DNS_TYPE_MX
                    ? a->mx[i].pref != b->mx[i].pref || strcmp(a->mx[i].name, b->mx[i].name) != 0
            : qtype == DNS_TYPE_A ? memcmp(&a->v4[i], &b->v4[i], sizeof(a->v4[i])) != 0
                                  : memcmp(&a->v6[i], &b->v6[i], sizeof(a->v6[i])) != 0)
            return false;
    }
    return true;
}

/* ---- selection ----------------------------------------------------------------------------- */

/* dns_addrs_order for every preference and maximum: the count, each list in its own
 * order, and the interleaving asked for. */
static void check_addrs_order(const struct in_addr *v4, unsigned n4, const struct in6_addr *v6,
                              unsigned n6)
{
    for (int pref = DNS_ADDR_PREF_ANY; pref <= DNS_ADDR_ONLY_IPV6; pref++) {
        unsigned a4 = pref == DNS_ADDR_ONLY_IPV6 ? 0 : n4;
        unsigned a6 = pref == DNS_ADDR_ONLY_IPV4 ? 0 : n6;
        bool six_first = pref != DNS_ADDR_PREF_IPV4 && pref != DNS_ADDR_ONLY_IPV4;
        for (unsigned max = 0; max <= DNS_ADDRS_MAX; max++) {
            struct dns_addr out[DNS_ADDRS_MAX];
            unsigned n = dns_addrs_order((enum dns_addr_pref)pref, v4, n4, v6, n6, max, out);
            fuzz_check(n == (max < a4 + a6 ? max : a4 + a6));
            unsigned i4 = 0, i6 = 0;
            for (unsigned k = 0; k < n; k++) {
                bool want6 = i4 == a4                    ? true
                             : i6 == a6                  ? false
                             : pref == DNS_ADDR_PREF_ANY ? k % 2 == 0
                                                         : six_first;
                if (want6) {
                    fuzz_check(out[k].family == AF_INET6 &&
                               memcmp(&out[k].v6, &v6[i6++], sizeof(out[k].v6)) == 0);
                } else {
                    fuzz_check(out[k].family == AF_INET &&
                               memcmp(&out[k].v4, &v4[i4++], sizeof(out[k].v4)) == 0);
                }
            }
        }
    }
}

/* Made-up addresses of one host: count n, distinct per host. */
static void fake_addrs(unsigned host, unsigned n, struct in_addr *v4, struct in6_addr *v6)
{
    for (unsigned k = 0; k < n; k++) {
        if (v4 != NULL)
            v4[k].s_addr = htonl(0xc0000200u | ((host * DNS_ADDRS_MAX + k) & 0xff));
        if (v6 != NULL) {
            memset(&v6[k], 0, sizeof(v6[k]));
            v6[k].s6_addr[0] = 0x20;
            v6[k].s6_addr[1] = 0x01;
            v6[k].s6_addr[2] = 0x0d;
            v6[k].s6_addr[3] = 0xb8;
            v6[k].s6_addr[14] = (uint8_t)host;
            v6[k].s6_addr[15] = (uint8_t)k;
        }
    }
}

/* out is canon delivered with at most max_hosts hosts: the lowest preferences in
 * order, each canonical host at most once and unchanged. */
static void check_delivered(const struct dns_mx_result *canon, unsigned max_hosts,
                            const struct dns_mx_result *out)
{
    unsigned keep = canon->nhosts < max_hosts ? canon->nhosts : max_hosts;
    fuzz_check(out->nhosts == keep);
    fuzz_check(out->skipped == (uint8_t)(canon->skipped + canon->nhosts - keep));
    fuzz_check(out->outcome == canon->outcome && out->reason == canon->reason &&
               out->implicit_mx == canon->implicit_mx);
    fuzz_check(strcmp(out->domain, canon->domain) == 0 && strcmp(out->detail, canon->detail) == 0);
    bool used[DNS_MX_HOSTS_MAX] = { false };
    for (unsigned i = 0; i < keep; i++) {
        const struct dns_mx_host *h = &out->hosts[i];
        fuzz_check(h->pref == canon->hosts[i].pref);
        unsigned j = 0;
        while (j < canon->nhosts && strcmp(canon->hosts[j].name, h->name) != 0)
            j++;
        fuzz_check(j < canon->nhosts && !used[j]);
        used[j] = true;
        const struct dns_mx_host *c = &canon->hosts[j];
        fuzz_check(c->pref == h->pref && c->naddrs == h->naddrs);
        for (unsigned k = 0; k < h->naddrs; k++) {
            fuzz_check(h->addrs[k].family == c->addrs[k].family);
            fuzz_check(h->addrs[k].family == AF_INET
                               ? memcmp(&h->addrs[k].v4, &c->addrs[k].v4, 4) == 0
                               : memcmp(&h->addrs[k].v6, &c->addrs[k].v6, 16) == 0);
        }
    }
}

/* A canonical answer (hosts in canonical order) through the shuffle, a cache round trip
 * and the TTL clamp. */
static void deliver_and_cache(struct dns_mx_result *canon, uint32_t ttl, unsigned max_hosts,
                              uint64_t seed)
{
    struct dns_rng rng;
    dns_rng_seed(&rng, seed);
    static struct dns_mx_result out; /* 7 KiB; every field read is written first */
    dns_result_deliver(canon, max_hosts, &rng, &out);
    check_delivered(canon, max_hosts, &out);

    struct dns_resolver r = { .ttl_min = 60, .ttl_max = 86400, .negative_ttl_max = 3600 };
    uint32_t clamped = dns_ttl_clamp(&r, ttl, canon->outcome != DNS_OUTCOME_OK);
    fuzz_check(clamped >= r.ttl_min &&
               clamped <= (canon->outcome != DNS_OUTCOME_OK ? 3600u : 86400u));
    canon->ttl = clamped;

    struct dns_cache *c = NULL;
    fuzz_check(dns_cache_new(1, &c) == 0);
    const uint64_t now = 1000;
    fuzz_check(dns_cache_put(c, canon, now) == 0);
    fuzz_check(dns_cache_get(c, canon->domain, now + canon->ttl * 1000ull - 1, max_hosts, &rng,
                             &out) == 0);
    check_delivered(canon, max_hosts, &out);
    fuzz_check(out.cached && out.ttl == 1);
    fuzz_check(dns_cache_get(c, canon->domain, now + canon->ttl * 1000ull, max_hosts, &rng, &out) ==
               -ENOENT);
    dns_cache_free(c);
}

/* What mx_targets and dns_lookup_result make of an MX answer. */
static void select_mx(const struct dns_answer *a, unsigned max_hosts, enum dns_addr_pref pref,
                      unsigned sel)
{
    struct dns_wire_mx mx[DNS_MX_TARGETS_MAX];
    memcpy(mx, a->mx, a->nkept * sizeof(mx[0]));
    unsigned n = dns_mx_canonical(mx, a->nkept);
    fuzz_check(n <= a->nkept);
    for (unsigned i = 0; i < n; i++) {
        fuzz_check(mx[i].name[0] != '\0');
        if (i > 0)
            fuzz_check(mx[i - 1].pref < mx[i].pref ||
                       (mx[i - 1].pref == mx[i].pref && strcmp(mx[i - 1].name, mx[i].name) < 0));
        for (unsigned j = 0; j < i; j++)
            fuzz_check(strcmp(mx[j].name, mx[i].name) != 0);
    }
    /* Every non-root name of the answer is there, at its lowest preference. */
    for (unsigned k = 0; k < a->nkept; k++) {
        if (a->mx[k].name[0] == '\0')
            continue;
        unsigned i = 0;
        while (i < n && strcmp(mx[i].name, a->mx[k].name) != 0)
            i++;
        fuzz_check(i < n && mx[i].pref <= a->mx[k].pref);
    }
    for (unsigned i = 0; i < n; i++) {
        unsigned k = 0;
        while (k < a->nkept && !(a->mx[k].pref == mx[i].pref && !strcmp(a->mx[k].name, mx[i].name)))
            k++;
        fuzz_check(k < a->nkept);
    }

    static struct dns_mx_result canon;
    memset(&canon, 0, sizeof(canon));
    canon.outcome = DNS_OUTCOME_OK;
    snprintf(canon.domain, sizeof(canon.domain), "%s", a->name);
    snprintf(canon.detail, sizeof(canon.detail), "MX %.100s", a->name);
    for (unsigned i = 0; i < n; i++) {
        char t[DNS_NAME_MAX + 1];
        if (dns_name_normalize(mx[i].name, t) != 0) {
            canon.skipped++;
            continue;
        }
        check_hostname(t);
        fuzz_check(strcmp(t, mx[i].name) == 0); /* the parser's form is already normal */
        struct in_addr v4[DNS_ADDRS_MAX];
        struct in6_addr v6[DNS_ADDRS_MAX];
        unsigned n4 = (i + sel) % (DNS_ADDRS_MAX + 1), n6 = (i + sel / 3) % (DNS_ADDRS_MAX + 1);
        fake_addrs(i, n4, v4, NULL);
        fake_addrs(i, n6, NULL, v6);
        struct dns_addr addrs[DNS_ADDRS_MAX];
        unsigned na = dns_addrs_order(pref, v4, n4, v6, n6, DNS_ADDRS_MAX, addrs);
        if (na == 0 || canon.nhosts == DNS_MX_HOSTS_MAX) {
            canon.skipped++;
            continue;
        }
        dns_host_set(&canon.hosts[canon.nhosts++], mx[i].pref, t, strlen(t), addrs, na);
    }
    if (canon.nhosts == 0)
        canon.outcome = DNS_OUTCOME_PERMFAIL;
    deliver_and_cache(&canon, a->ttl, max_hosts, sel);
}

/* What an address answer gives: the order of its addresses with made-up ones of the
 * other family, and the one host of an implicit MX. */
static void select_addrs(const struct dns_answer *a, uint16_t qtype, unsigned max_hosts,
                         enum dns_addr_pref pref, unsigned sel)
{
    struct in_addr v4[DNS_ADDRS_MAX];
    struct in6_addr v6[DNS_ADDRS_MAX];
    unsigned other = sel % (DNS_ADDRS_MAX + 1), n4, n6;
    if (qtype == DNS_TYPE_A) {
        n4 = a->nkept;
        memcpy(v4, a->v4, n4 * sizeof(v4[0]));
        n6 = other;
        fake_addrs(0, n6, NULL, v6);
    } else {
        n6 = a->nkept;
        memcpy(v6, a->v6, n6 * sizeof(v6[0]));
        n4 = other;
        fake_addrs(0, n4, v4, NULL);
    }
    check_addrs_order(v4, n4, v6, n6);

    char host[DNS_NAME_MAX + 1];
    if (dns_name_normalize(a->name, host) != 0)
        return; /* the resolver stops there: MALFORMED */
    check_hostname(host);
    static struct dns_mx_result canon;
    memset(&canon, 0, sizeof(canon));
    canon.outcome = DNS_OUTCOME_OK;
    canon.implicit_mx = true;
    memcpy(canon.domain, host, strlen(host) + 1);
    struct dns_addr addrs[DNS_ADDRS_MAX];
    unsigned na = dns_addrs_order(pref, v4, n4, v6, n6, DNS_ADDRS_MAX, addrs);
    if (na > 0)
        dns_host_set(&canon.hosts[canon.nhosts++], 0, host, strlen(host), addrs, na);
    else
        canon.outcome = DNS_OUTCOME_PERMFAIL;
    deliver_and_cache(&canon, a->ttl, max_hosts, sel);
}

/* ---- the entry point ------------------------------------------------------------------------ */

static enum dns_reason parse(const uint8_t *msg, size_t len, const char *qname, uint16_t qtype,
                             unsigned max_hops, int dirt, struct dns_answer *a)
{
    memset(a, dirt, sizeof(*a)); /* the callers' answers live uninitialised on the stack */
    enum dns_reason rc = dns_wire_parse(msg, len, qname, qtype, max_hops, a);
    check_answer(rc, a, qtype, max_hops);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint16_t qtypes[] = { DNS_TYPE_MX, DNS_TYPE_A, DNS_TYPE_AAAA, DNS_TYPE_MX };
    if (size < 2)
        return 0;
    unsigned sel0 = data[0], sel1 = data[1];
    uint16_t qtype = qtypes[sel0 & SEL_QTYPE];
    unsigned max_hops = (sel0 >> 4) % (DNS_CNAME_MAX + 1);
    unsigned max_hosts = 1 + (sel1 & 15);
    enum dns_addr_pref pref = (enum dns_addr_pref)((sel1 >> 4) % 5);
    data += 2;
    size -= 2;

    char qbuf[DNS_NAME_MAX + 1];
    const char *qname = NULL;
    if ((sel0 & SEL_QNAME) && size > 0) {
        size_t l = data[0] < size - 1 ? data[0] : size - 1;
        char raw[256];
        memcpy(raw, data + 1, l);
        raw[l] = '\0';
        if (dns_name_normalize(raw, qbuf) == 0) {
            check_hostname(qbuf);
            qname = qbuf;
        }
        data += 1 + l;
        size -= 1 + l;
    }

    /* The message in a buffer of its own size: a read past it is seen. */
    uint8_t *msg = malloc(size ? size : 1);
    fuzz_check(msg != NULL);
    memcpy(msg, data, size);
    static struct dns_answer a, b;
    enum dns_reason rc = parse(msg, size, qname, qtype, max_hops, 0xa5, &a);
    enum dns_reason rc2 = parse(msg, size, qname, qtype, max_hops, 0x5a, &b);
    fuzz_check(answer_same(rc, &a, rc2, &b, qtype));
    /* The question's name passed as qname: the same answer. */
    char qn[DNS_NAME_MAX + 1];
    if (qname == NULL && rc == DNS_REASON_NONE && a.hops == 0 &&
        dns_name_normalize(a.name, qn) == 0) {
        fuzz_check(strcmp(qn, a.name) == 0);
        rc2 = parse(msg, size, qn, qtype, max_hops, 0x00, &b);
        fuzz_check(answer_same(rc, &a, rc2, &b, qtype));
    }
    if (rc == DNS_REASON_NONE && a.nkept > 0) {
        if (qtype == DNS_TYPE_MX)
            select_mx(&a, max_hosts, pref, sel1);
        else
            select_addrs(&a, qtype, max_hosts, pref, sel1);
    }
    free(msg);
    return 0;
}
