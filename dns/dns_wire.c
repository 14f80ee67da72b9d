/*
 * dns/dns_wire.c — reads DNS messages (RFC 1035 4.1) as c-ares hands them over: the
 * header, the question skipped, the answer section walked for the CNAME chain from the
 * queried name and the records of the queried type where it ends, the authority
 * section for the SOA that gives a negative answer its TTL (RFC 2308).
 *
 * Why our own parser: c-ares 1.18's ares_parse_mx_reply drops TTLs and does not say
 * where a CNAME chain ended, and both decide what floormta caches and re-queries.
 *
 * Every read is bounds-checked against the buffer; a compression pointer must point
 * before the start of the name segment it appears in, so name expansion always
 * terminates, and a name's wire form is at most 255 octets. Anything out of bounds is
 * DNS_REASON_MALFORMED, never a crash (tests/dns/test_wire.c feeds random packets).
 */
#include "dns/dns_int.h"

#include <stdio.h>
#include <string.h>

#define HEADER_LEN    12
#define NAME_WIRE_MAX 255

struct msg {
    const uint8_t *buf;
    size_t len;
};

/* One resource record's fixed fields, rdata as an offset into the message. */
struct rr {
    uint16_t type, class;
    uint32_t ttl;
    size_t rdata, rdlen;
};

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Appends one label's octets to out (at *o), lowercased, escaping (\DDD) whatever a
 * host name cannot hold so that distinct names stay distinct. Returns -1 when the
 * presentation form would exceed DNS_NAME_MAX. */
static int put_label(const uint8_t *label, size_t n, char *out, size_t *o)
{
    if (*o > 0) {
        if (*o >= DNS_NAME_MAX)
            return -1;
        out[(*o)++] = '.';
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t c = label[i];
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
            if (*o >= DNS_NAME_MAX)
                return -1;
            out[(*o)++] = (char)c;
        } else if (c >= 'A' && c <= 'Z') {
            if (*o >= DNS_NAME_MAX)
                return -1;
            out[(*o)++] = (char)(c - 'A' + 'a');
        } else {
            if (*o + 4 > DNS_NAME_MAX)
                return -1;
            snprintf(out + *o, 5, "\\%03u", c);
            *o += 4;
        }
    }
    return 0;
}

/* Reads the (possibly compressed) name at *pos into out (DNS_NAME_MAX + 1 bytes, or
 * NULL to skip it) and moves *pos past its in-place part. The root is "". Returns 0 or
 * -1 (malformed: out of bounds, bad pointer, too long), out then "": never the labels
 * read so far without their terminating NUL (out may be the answer's own name). */
static int read_name(const struct msg *m, size_t *pos, char *out)
{
    size_t p = *pos, floor = *pos, end = 0, wire = 1, o = 0;
    bool jumped = false;
    for (;;) {
        if (p >= m->len)
            goto malformed;
        uint8_t c = m->buf[p];
        if ((c & 0xC0) == 0xC0) {
            if (p + 1 >= m->len)
                goto malformed;
            size_t target = (size_t)(c & 0x3F) << 8 | m->buf[p + 1];
            /* Strictly before every byte of this name read so far: each jump lowers
             * the floor, so expansion cannot loop. */
            if (target >= floor)
                goto malformed;
            if (!jumped)
                end = p + 2;
            jumped = true;
            p = floor = target;
            continue;
        }
        if (c & 0xC0) /* 0x40, 0x80: extended label types, long obsolete */
            goto malformed;
        if (c == 0)
            break;
        if (p + 1 + c > m->len || (wire += 1u + c) > NAME_WIRE_MAX)
            goto malformed;
        if (out != NULL && put_label(m->buf + p + 1, c, out, &o) < 0)
            goto malformed;
        p += 1u + c;
    }
    if (!jumped)
        end = p + 1;
    if (out != NULL)
        out[o] = '\0';
    *pos = end;
    return 0;
malformed:
    if (out != NULL)
        out[0] = '\0';
    return -1;
}

/* Reads the RR at *pos; with owner non-NULL, its owner name too. */
static int read_rr(const struct msg *m, size_t *pos, char *owner, struct rr *rr)
{
    if (read_name(m, pos, owner) < 0 || *pos + 10 > m->len)
        return -1;
    const uint8_t *p = m->buf + *pos;
    rr->type = get16(p);
    rr->class = get16(p + 2);
    rr->ttl = get32(p + 4);
    if (rr->ttl & 0x80000000u) /* RFC 2181 8: a TTL with the top bit set means zero */
        rr->ttl = 0;
    rr->rdlen = get16(p + 8);
    rr->rdata = *pos + 10;
    if (rr->rdata + rr->rdlen > m->len)
        return -1;
    *pos = rr->rdata + rr->rdlen;
    return 0;
}

/* Skips count RRs from *pos (structure only). */
static int skip_rrs(const struct msg *m, size_t *pos, unsigned count)
{
    struct rr rr;
    for (unsigned i = 0; i < count; i++) {
        if (read_rr(m, pos, NULL, &rr) < 0)
            return -1;
    }
    return 0;
}

static uint32_t min32(uint32_t a, uint32_t b)
{
    return a < b ? a : b;
}

/* One walk of the answer section looking at name: the first CNAME it owns (its target
 * into next, *cname_ttl) and whether it owns records of qtype. */
static int scan_owner(const struct msg *m, size_t an, unsigned ancount, const char *name,
                      uint16_t qtype, char *next, uint32_t *cname_ttl, bool *has_cname,
                      bool *has_qtype)
{
    char owner[DNS_NAME_MAX + 1];
    struct rr rr;
    size_t pos = an;
    *has_cname = *has_qtype = false;
    for (unsigned i = 0; i < ancount; i++) {
        if (read_rr(m, &pos, owner, &rr) < 0)
            return -1;
        if (rr.class != DNS_CLASS_IN || strcmp(owner, name) != 0)
            continue;
        if (rr.type == qtype) {
            *has_qtype = true;
        } else if (rr.type == DNS_TYPE_CNAME && !*has_cname) {
            size_t t = rr.rdata;
            if (read_name(m, &t, next) < 0 || t != rr.rdata + rr.rdlen)
                return -1;
            *has_cname = true;
            *cname_ttl = rr.ttl;
        }
    }
    return 0;
}

/* Keeps an MX record in out->mx: appended while there is room, else in place of the
 * highest preference kept if it is lower, so the lowest preferences survive. */
static void keep_mx(struct dns_answer *out, uint16_t pref, const char *name)
{
    unsigned slot = out->nkept;
    if (slot == DNS_MX_TARGETS_MAX) {
        slot = 0;
        for (unsigned i = 1; i < DNS_MX_TARGETS_MAX; i++) {
            if (out->mx[i].pref > out->mx[slot].pref)
                slot = i;
        }
        if (out->mx[slot].pref <= pref)
            return;
    } else {
        out->nkept++;
    }
    out->mx[slot].pref = pref;
    memcpy(out->mx[slot].name, name, strlen(name) + 1);
}

/* Collects the records of qtype owned by out->name. */
static int collect(const struct msg *m, size_t an, unsigned ancount, uint16_t qtype,
                   struct dns_answer *out)
{
    char owner[DNS_NAME_MAX + 1], target[DNS_NAME_MAX + 1];
    struct rr rr;
    size_t pos = an;
    for (unsigned i = 0; i < ancount; i++) {
        if (read_rr(m, &pos, owner, &rr) < 0)
            return -1;
        if (rr.class != DNS_CLASS_IN || rr.type != qtype || strcmp(owner, out->name) != 0)
            continue;
        const uint8_t *rd = m->buf + rr.rdata;
        if (qtype == DNS_TYPE_MX) {
            size_t t = rr.rdata + 2;
            if (rr.rdlen < 3 || read_name(m, &t, target) < 0 || t != rr.rdata + rr.rdlen)
                return -1;
            keep_mx(out, get16(rd), target);
        } else if (qtype == DNS_TYPE_A) {
            if (rr.rdlen != 4)
                return -1;
            if (out->nkept < DNS_ADDRS_MAX)
                memcpy(&out->v4[out->nkept++], rd, 4);
        } else {
            if (rr.rdlen != 16)
                return -1;
            if (out->nkept < DNS_ADDRS_MAX)
                memcpy(&out->v6[out->nkept++], rd, 16);
        }
        out->nrecords++;
        out->ttl = min32(out->ttl, rr.ttl);
    }
    return 0;
}

/* The first SOA of the authority section: min(TTL, MINIMUM). */
static int read_soa(const struct msg *m, size_t ns, unsigned nscount, struct dns_answer *out)
{
    struct rr rr;
    size_t pos = ns;
    for (unsigned i = 0; i < nscount; i++) {
        if (read_rr(m, &pos, NULL, &rr) < 0)
            return -1;
        if (rr.class != DNS_CLASS_IN || rr.type != DNS_TYPE_SOA)
            continue;
        size_t t = rr.rdata;
        if (read_name(m, &t, NULL) < 0 || read_name(m, &t, NULL) < 0 ||
            t + 20 != rr.rdata + rr.rdlen)
            return -1;
        out->has_neg_ttl = true;
        out->neg_ttl = min32(rr.ttl, get32(m->buf + t + 16) & 0x7fffffffu);
        return 0;
    }
    return 0;
}

enum dns_reason dns_wire_parse(const uint8_t *buf, size_t len, const char *qname, uint16_t qtype,
                               unsigned max_hops, struct dns_answer *out)
{
    struct msg m = { buf, len };
    out->rcode = 0;
    out->hops = out->nrecords = out->nkept = 0;
    out->ttl = UINT32_MAX;
    out->has_neg_ttl = false;
    out->neg_ttl = 0;
    snprintf(out->name, sizeof(out->name), "%s", qname ? qname : "");
    if (buf == NULL || len < HEADER_LEN)
        return DNS_REASON_MALFORMED;
    out->rcode = buf[3] & 0x0F;
    unsigned qdcount = get16(buf + 4), ancount = get16(buf + 6), nscount = get16(buf + 8);

    /* Walk the structure once: where the answer and authority sections start. */
    size_t pos = HEADER_LEN;
    if (qname == NULL && qdcount == 0)
        return DNS_REASON_MALFORMED;
    for (unsigned i = 0; i < qdcount; i++) {
        char *name = i == 0 && qname == NULL ? out->name : NULL;
        if (read_name(&m, &pos, name) < 0 || (pos += 4) > len)
            return DNS_REASON_MALFORMED;
    }
    size_t an = pos;
    if (skip_rrs(&m, &pos, ancount) < 0)
        return DNS_REASON_MALFORMED;
    size_t ns = pos;
    if (skip_rrs(&m, &pos, nscount) < 0 || read_soa(&m, ns, nscount, out) < 0)
        return DNS_REASON_MALFORMED;

    /* Follow the chain from qname. A loop shows up as a chain longer than the bound. */
    for (;;) {
        char next[DNS_NAME_MAX + 1];
        uint32_t cname_ttl = 0;
        bool has_cname, has_qtype;
        if (scan_owner(&m, an, ancount, out->name, qtype, next, &cname_ttl, &has_cname,
                       &has_qtype) < 0)
            return DNS_REASON_MALFORMED;
        if (has_qtype || !has_cname)
            break;
        if (out->hops >= max_hops)
            return DNS_REASON_CNAME_LIMIT;
        out->hops++;
        out->ttl = min32(out->ttl, cname_ttl);
        memcpy(out->name, next, sizeof(next));
    }
    if (collect(&m, an, ancount, qtype, out) < 0)
        return DNS_REASON_MALFORMED;
    return DNS_REASON_NONE;
}
