/*
 * tests/dns/msg.h — builds DNS messages by hand for dns/'s tests: a header and a
 * question, then answer and authority records (CNAME, MX, A, AAAA, SOA, raw), names
 * written plainly or as compression pointers. Static functions: each test includes it.
 * Records go in section order (all answers, then the authority records).
 */
#ifndef FLOORMTA_TESTS_DNS_MSG_H
#define FLOORMTA_TESTS_DNS_MSG_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#define MSG_CAP 4096

/* A broken test input stops the test, in every build: assert() would vanish under
 * NDEBUG together with the call inside it. */
#define MSG_CHECK(cond)                                                                      \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: test message builder: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

struct msg {
    uint8_t buf[MSG_CAP];
    size_t len;
    uint16_t an, ns;
    size_t rdlen_at; /* where the open record's RDLENGTH goes */
};

static void msg_u8(struct msg *m, unsigned v)
{
    MSG_CHECK(m->len + 1 <= MSG_CAP);
    m->buf[m->len++] = (uint8_t)v;
}

static void msg_u16(struct msg *m, unsigned v)
{
    msg_u8(m, v >> 8);
    msg_u8(m, v & 0xff);
}

static void msg_u32(struct msg *m, uint32_t v)
{
    msg_u16(m, v >> 16);
    msg_u16(m, v & 0xffff);
}

static void msg_bytes(struct msg *m, const void *p, size_t n)
{
    MSG_CHECK(m->len + n <= MSG_CAP);
    memcpy(m->buf + m->len, p, n);
    m->len += n;
}

/* Writes name's labels ("" or "." = root). A name starting with "@" followed by a
 * decimal offset ("@12") is a compression pointer to that offset; "www@12" is the
 * label www then a pointer. */
static void msg_name(struct msg *m, const char *name)
{
    const char *p = name;
    while (*p && *p != '@') {
        const char *dot = p;
        while (*dot && *dot != '.' && *dot != '@')
            dot++;
        size_t n = (size_t)(dot - p);
        if (n == 0)
            break;
        msg_u8(m, (unsigned)n);
        msg_bytes(m, p, n);
        p = *dot == '.' ? dot + 1 : dot;
    }
    if (*p == '@') {
        unsigned off = (unsigned)strtoul(p + 1, NULL, 10);
        msg_u16(m, 0xC000 | off);
    } else {
        msg_u8(m, 0);
    }
}

/* Header (id, QR, RD, RA, rcode) and one question. */
static void msg_init(struct msg *m, uint16_t id, unsigned rcode, const char *qname, uint16_t qtype)
{
    memset(m, 0, sizeof(*m));
    msg_u16(m, id);
    msg_u16(m, 0x8180 | rcode);
    msg_u16(m, qname ? 1 : 0);
    msg_u16(m, 0);
    msg_u16(m, 0);
    msg_u16(m, 0);
    if (qname) {
        msg_name(m, qname);
        msg_u16(m, qtype);
        msg_u16(m, 1);
    }
}

static void msg_finish(struct msg *m)
{
    m->buf[6] = (uint8_t)(m->an >> 8);
    m->buf[7] = (uint8_t)m->an;
    m->buf[8] = (uint8_t)(m->ns >> 8);
    m->buf[9] = (uint8_t)m->ns;
}

/* Opens a record in the answer (authority = false) or authority section. */
static void msg_rr_begin(struct msg *m, bool authority, const char *owner, uint16_t type,
                         uint32_t ttl)
{
    if (authority)
        m->ns++;
    else
        m->an++;
    msg_name(m, owner);
    msg_u16(m, type);
    msg_u16(m, 1);
    msg_u32(m, ttl);
    m->rdlen_at = m->len;
    msg_u16(m, 0);
}

static void msg_rr_end(struct msg *m)
{
    size_t n = m->len - m->rdlen_at - 2;
    m->buf[m->rdlen_at] = (uint8_t)(n >> 8);
    m->buf[m->rdlen_at + 1] = (uint8_t)n;
    msg_finish(m);
}

static void msg_cname(struct msg *m, const char *owner, const char *target, uint32_t ttl)
{
    msg_rr_begin(m, false, owner, 5, ttl);
    msg_name(m, target);
    msg_rr_end(m);
}

static void msg_mx(struct msg *m, const char *owner, uint16_t pref, const char *target,
                   uint32_t ttl)
{
    msg_rr_begin(m, false, owner, 15, ttl);
    msg_u16(m, pref);
    msg_name(m, target);
    msg_rr_end(m);
}

static void msg_a(struct msg *m, const char *owner, const char *addr, uint32_t ttl)
{
    struct in_addr a;
    MSG_CHECK(inet_pton(AF_INET, addr, &a) == 1);
    msg_rr_begin(m, false, owner, 1, ttl);
    msg_bytes(m, &a, 4);
    msg_rr_end(m);
}

static void msg_aaaa(struct msg *m, const char *owner, const char *addr, uint32_t ttl)
{
    struct in6_addr a;
    MSG_CHECK(inet_pton(AF_INET6, addr, &a) == 1);
    msg_rr_begin(m, false, owner, 28, ttl);
    msg_bytes(m, &a, 16);
    msg_rr_end(m);
}

/* An SOA in the authority section: TTL ttl, MINIMUM minimum. */
static void msg_soa(struct msg *m, const char *zone, uint32_t ttl, uint32_t minimum)
{
    msg_rr_begin(m, true, zone, 6, ttl);
    msg_name(m, "ns1.example");
    msg_name(m, "hostmaster.example");
    msg_u32(m, 2024010101);
    msg_u32(m, 3600);
    msg_u32(m, 600);
    msg_u32(m, 86400);
    msg_u32(m, minimum);
    msg_rr_end(m);
}

#endif /* FLOORMTA_TESTS_DNS_MSG_H */
