/*
 * tests/dns/test_wire.c — dns/'s wire parser on hand-built messages: MX sets with
 * compression pointers, CNAME chains in the answer, a CNAME loop, the null MX, the SOA
 * negative TTL, A/AAAA, and broken packets (truncated, bad pointers, pointer loops,
 * random bytes, bit flips) that must come back malformed and never crash (run under
 * ASan by `make test`), and the answer's name a string even then. Also the name
 * validation the resolver applies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "dns/dns_int.h"
#include "tests/dns/msg.h"

static enum dns_reason parse(const struct msg *m, const char *qname, uint16_t qtype,
                             struct dns_answer *a)
{
    return dns_wire_parse(m->buf, m->len, qname, qtype, DNS_CNAME_MAX, a);
}

static void test_mx_compressed(void **state)
{
    (void)state;
    struct msg m;
    struct dns_answer a;
    msg_init(&m, 1, 0, "Example.COM", DNS_TYPE_MX);
    /* Owner: a pointer to the question (offset 12); targets "mx1"/"mx2" + pointer. */
    msg_mx(&m, "@12", 20, "mx2@12", 3600);
    msg_mx(&m, "@12", 10, "MX1@12", 300);
    assert_int_equal(parse(&m, "example.com", DNS_TYPE_MX, &a), DNS_REASON_NONE);
    assert_int_equal(a.nrecords, 2);
    assert_int_equal(a.nkept, 2);
    assert_int_equal(a.hops, 0);
    assert_string_equal(a.name, "example.com");
    assert_int_equal(a.ttl, 300);
    assert_int_equal(a.mx[0].pref, 20);
    assert_string_equal(a.mx[0].name, "mx2.example.com");
    assert_int_equal(a.mx[1].pref, 10);
    assert_string_equal(a.mx[1].name, "mx1.example.com"); /* lowercased */
    assert_false(a.has_neg_ttl);

    /* The question's name read back (qname NULL), as the resolver does. */
    assert_int_equal(dns_wire_parse(m.buf, m.len, NULL, DNS_TYPE_MX, 8, &a), DNS_REASON_NONE);
    assert_string_equal(a.name, "example.com");
    assert_int_equal(a.nrecords, 2);

    /* Records for another name or of another type are not this answer's. */
    msg_init(&m, 1, 0, "example.com", DNS_TYPE_MX);
    msg_mx(&m, "other.com", 10, "mx.other.com", 60);
    msg_a(&m, "example.com", "192.0.2.1", 60);
    assert_int_equal(parse(&m, "example.com", DNS_TYPE_MX, &a), DNS_REASON_NONE);
    assert_int_equal(a.nrecords, 0);
    assert_int_equal(a.ttl, UINT32_MAX);
}

static void test_cname_chain(void **state)
{
    (void)state;
    struct msg m;
    struct dns_answer a;
    msg_init(&m, 2, 0, "a.test", DNS_TYPE_MX);
    /* Out of order on purpose: the chain is followed by name, not by position. */
    msg_mx(&m, "c.test", 5, "mx.c.test", 900);
    msg_cname(&m, "b.test", "c.test", 120);
    msg_cname(&m, "a.test", "b.test", 600);
    assert_int_equal(parse(&m, "a.test", DNS_TYPE_MX, &a), DNS_REASON_NONE);
    assert_int_equal(a.hops, 2);
    assert_string_equal(a.name, "c.test");
    assert_int_equal(a.nrecords, 1);
    assert_string_equal(a.mx[0].name, "mx.c.test");
    assert_int_equal(a.ttl, 120); /* the lowest of the CNAMEs and the MX */

    /* The chain ends at a name without MX records: the resolver re-queries a.name. */
    msg_init(&m, 2, 0, "a.test", DNS_TYPE_MX);
    msg_cname(&m, "a.test", "Elsewhere.Test", 60);
    assert_int_equal(parse(&m, "a.test", DNS_TYPE_MX, &a), DNS_REASON_NONE);
    assert_int_equal(a.hops, 1);
    assert_int_equal(a.nrecords, 0);
    assert_string_equal(a.name, "elsewhere.test");

    /* Too many hops for the budget. */
    msg_init(&m, 2, 0, "a.test", DNS_TYPE_A);
    msg_cname(&m, "a.test", "b.test", 60);
    msg_cname(&m, "b.test", "c.test", 60);
    msg_a(&m, "c.test", "192.0.2.9", 60);
    assert_int_equal(dns_wire_parse(m.buf, m.len, "a.test", DNS_TYPE_A, 2, &a), DNS_REASON_NONE);
    assert_int_equal(dns_wire_parse(m.buf, m.len, "a.test", DNS_TYPE_A, 1, &a),
                     DNS_REASON_CNAME_LIMIT);
}

static void test_cname_loop(void **state)
{
    (void)state;
    struct msg m;
    struct dns_answer a;
    msg_init(&m, 3, 0, "loop.test", DNS_TYPE_MX);
    msg_cname(&m, "loop.test", "loop2.test", 60);
    msg_cname(&m, "loop2.test", "loop.test", 60);
    assert_int_equal(parse(&m, "loop.test", DNS_TYPE_MX, &a), DNS_REASON_CNAME_LIMIT);
    /* A self-loop too. */
    msg_init(&m, 3, 0, "self.test", DNS_TYPE_MX);
    msg_cname(&m, "self.test", "self.test", 60);
    assert_int_equal(parse(&m, "self.test", DNS_TYPE_MX, &a), DNS_REASON_CNAME_LIMIT);
}

static void test_null_mx(void **state)
{
    (void)state;
    struct msg m;
    struct dns_answer a;
    msg_init(&m, 4, 0, "nomail.test", DNS_TYPE_MX);
    msg_mx(&m, "nomail.test", 0, ".", 7200);
    assert_int_equal(parse(&m, "nomail.test", DNS_TYPE_MX, &a), DNS_REASON_NONE);
    assert_int_equal(a.nrecords, 1);
    assert_string_equal(a.mx[0].name, "");
    assert_int_equal(a.ttl, 7200);
}

static void test_soa_negative_ttl(void **state)
{
    (void)state;
    struct msg m;
    struct dns_answer a;
    msg_init(&m, 5, 3 /* NXDOMAIN */, "gone.test", DNS_TYPE_MX);
    msg_soa(&m, "test", 900, 300);
    assert_int_equal(parse(&m, "gone.test", DNS_TYPE_MX, &a), DNS_REASON_NONE);
    assert_int_equal(a.rcode, 3);
    assert_true(a.has_neg_ttl);
    assert_int_equal(a.neg_ttl, 300); /* min(SOA TTL, MINIMUM) */
    msg_init(&m, 5, 0, "nodata.test", DNS_TYPE_MX);
    msg_soa(&m, "test", 30, 3600);
    assert_int_equal(parse(&m, "nodata.test", DNS_TYPE_MX, &a), DNS_REASON_NONE);
    assert_int_equal(a.neg_ttl, 30);
    assert_int_equal(a.nrecords, 0);
}

static void test_addresses(void **state)
{
    (void)state;
    struct msg m;
    struct dns_answer a;
    msg_init(&m, 6, 0, "www.test", DNS_TYPE_A);
    msg_cname(&m, "www.test", "host.test", 100);
    for (int i = 0; i < DNS_ADDRS_MAX + 3; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "192.0.2.%d", i + 1);
        msg_a(&m, "host.test", ip, 50);
    }
    assert_int_equal(parse(&m, "www.test", DNS_TYPE_A, &a), DNS_REASON_NONE);
    assert_int_equal(a.nrecords, DNS_ADDRS_MAX + 3);
    assert_int_equal(a.nkept, DNS_ADDRS_MAX);
    assert_int_equal(a.ttl, 50);
    assert_int_equal(ntohl(a.v4[0].s_addr), 0xC0000201);

    msg_init(&m, 6, 0, "v6.test", DNS_TYPE_AAAA);
    msg_aaaa(&m, "v6.test", "2001:db8::25", 0x80000001u); /* top bit: means 0 */
    assert_int_equal(parse(&m, "v6.test", DNS_TYPE_AAAA, &a), DNS_REASON_NONE);
    assert_int_equal(a.nkept, 1);
    assert_int_equal(a.ttl, 0);
    assert_int_equal(a.v6[0].s6_addr[15], 0x25);

    /* An A record with the wrong RDLENGTH is malformed. */
    msg_init(&m, 6, 0, "bad.test", DNS_TYPE_A);
    msg_rr_begin(&m, false, "bad.test", DNS_TYPE_A, 60);
    msg_u16(&m, 7);
    msg_rr_end(&m);
    assert_int_equal(parse(&m, "bad.test", DNS_TYPE_A, &a), DNS_REASON_MALFORMED);
}

static void test_many_mx_keeps_lowest(void **state)
{
    (void)state;
    struct msg m;
    struct dns_answer a;
    msg_init(&m, 7, 0, "big.test", DNS_TYPE_MX);
    for (int i = 0; i < DNS_MX_TARGETS_MAX + 8; i++) {
        char name[32];
        snprintf(name, sizeof(name), "mx%d@12", i);
        msg_mx(&m, "@12", (uint16_t)(1000 - i), name, 60);
    }
    assert_int_equal(parse(&m, "big.test", DNS_TYPE_MX, &a), DNS_REASON_NONE);
    assert_int_equal(a.nrecords, DNS_MX_TARGETS_MAX + 8);
    assert_int_equal(a.nkept, DNS_MX_TARGETS_MAX);
    for (unsigned i = 0; i < a.nkept; i++)
        assert_true(a.mx[i].pref <= 1000 - 8); /* the 8 highest were dropped */
}

static void test_malformed(void **state)
{
    (void)state;
    struct msg m;
    struct dns_answer a;
    assert_int_equal(dns_wire_parse(NULL, 0, "x.test", DNS_TYPE_MX, 8, &a), DNS_REASON_MALFORMED);
    msg_init(&m, 8, 0, "x.test", DNS_TYPE_MX);
    msg_mx(&m, "x.test", 10, "mx.x.test", 60);
    /* Every truncation of a good message is malformed, never a crash. */
    for (size_t n = 0; n < m.len; n++)
        assert_int_equal(dns_wire_parse(m.buf, n, "x.test", DNS_TYPE_MX, 8, &a),
                         DNS_REASON_MALFORMED);
    /* More answers announced than present. */
    struct msg bad = m;
    bad.buf[7] = 5;
    assert_int_equal(parse(&bad, "x.test", DNS_TYPE_MX, &a), DNS_REASON_MALFORMED);
    /* A pointer to itself and a forward pointer. */
    msg_init(&m, 8, 0, NULL, 0);
    m.an = 1;
    msg_u16(&m, 0xC000 | 12);
    msg_finish(&m);
    assert_int_equal(parse(&m, "x.test", DNS_TYPE_MX, &a), DNS_REASON_MALFORMED);
    msg_init(&m, 8, 0, "x.test", DNS_TYPE_MX);
    msg_mx(&m, "@200", 10, "mx@12", 60);
    assert_int_equal(parse(&m, "x.test", DNS_TYPE_MX, &a), DNS_REASON_MALFORMED);
    /* A name over 255 octets. */
    msg_init(&m, 8, 0, "x.test", DNS_TYPE_MX);
    msg_rr_begin(&m, false, "x.test", DNS_TYPE_MX, 60);
    msg_u16(&m, 10);
    for (int i = 0; i < 5; i++) {
        msg_u8(&m, 63);
        for (int k = 0; k < 63; k++)
            msg_u8(&m, 'a');
    }
    msg_u8(&m, 0);
    msg_rr_end(&m);
    assert_int_equal(parse(&m, "x.test", DNS_TYPE_MX, &a), DNS_REASON_MALFORMED);
    /* Extended label type 0x40. */
    msg_init(&m, 8, 0, NULL, 0);
    msg_u8(&m, 0x41);
    msg_u8(&m, 'a');
    msg_u8(&m, 0);
    m.buf[5] = 1;
    assert_int_equal(dns_wire_parse(m.buf, m.len, NULL, DNS_TYPE_MX, 8, &a), DNS_REASON_MALFORMED);
}

/* A name whose labels point at each other must not hang: label at p+1.. then a
 * pointer back into the same name. */
static void test_pointer_loop(void **state)
{
    (void)state;
    struct msg m;
    struct dns_answer a;
    msg_init(&m, 9, 0, NULL, 0);
    m.buf[5] = 1; /* one question */
    size_t p = m.len;
    msg_u8(&m, 1);
    msg_u8(&m, 'a');
    msg_u16(&m, 0xC000 | (unsigned)p); /* back to the label "a": a, a, a, ... */
    msg_u16(&m, 15);
    msg_u16(&m, 1);
    assert_int_equal(dns_wire_parse(m.buf, m.len, NULL, DNS_TYPE_MX, 8, &a), DNS_REASON_MALFORMED);
}

/* The question's name read for a NULL qname, broken after some labels were read: the
 * answer's name is "", never those labels without a NUL (the callers' answers live
 * uninitialised on the stack). Found by tests/fuzz/fuzz_dns_wire.c. */
/* Ends m's question (type MX, class IN) after the name written so far, parses it over a
 * dirty answer with no query name given, and expects MALFORMED with an empty name. */
static void question_end_unreadable(struct msg *m)
{
    struct dns_answer a;
    msg_u16(m, DNS_TYPE_MX);
    msg_u16(m, 1);
    memset(&a, 0xa5, sizeof(a));
    assert_int_equal(dns_wire_parse(m->buf, m->len, NULL, DNS_TYPE_MX, 8, &a),
                     DNS_REASON_MALFORMED);
    assert_string_equal(a.name, "");
}

static void test_question_name_unreadable(void **state)
{
    (void)state;
    struct msg m;
    struct dns_answer a;
    /* Truncated in its second label. */
    msg_init(&m, 12, 0, "example.com", DNS_TYPE_MX);
    memset(&a, 0xa5, sizeof(a));
    assert_int_equal(dns_wire_parse(m.buf, 12 + 8 + 3, NULL, DNS_TYPE_MX, 8, &a),
                     DNS_REASON_MALFORMED);
    assert_true(strnlen(a.name, sizeof(a.name)) < sizeof(a.name));
    assert_string_equal(a.name, "");
    /* Over 255 octets on the wire after three labels of 63. */
    msg_init(&m, 12, 0, NULL, 0);
    m.buf[5] = 1;
    for (int l = 0; l < 5; l++) {
        msg_u8(&m, 63);
        for (int k = 0; k < 63; k++)
            msg_u8(&m, 'a');
    }
    msg_u8(&m, 0);
    question_end_unreadable(&m);
    /* Over DNS_NAME_MAX characters once escaped: 63 dots (252 characters as \046), then
     * one more label. */
    msg_init(&m, 12, 0, NULL, 0);
    m.buf[5] = 1;
    msg_u8(&m, 63);
    for (int k = 0; k < 63; k++)
        msg_u8(&m, '.');
    msg_u8(&m, 1);
    msg_u8(&m, 'a');
    msg_u8(&m, 0);
    question_end_unreadable(&m);
    /* A label, then a pointer back to the name's own start. */
    msg_init(&m, 12, 0, NULL, 0);
    m.buf[5] = 1;
    msg_u8(&m, 1);
    msg_u8(&m, 'a');
    msg_u16(&m, 0xC000 | 12);
    question_end_unreadable(&m);
}

static void test_fuzz(void **state)
{
    (void)state;
    struct dns_rng rng;
    dns_rng_seed(&rng, 42);
    struct dns_answer a;
    struct msg good;
    msg_init(&good, 10, 0, "fuzz.test", DNS_TYPE_MX);
    msg_cname(&good, "@12", "real@12", 60);
    msg_mx(&good, "real@12", 10, "mx1@12", 60);
    msg_mx(&good, "real@12", 20, "mx2.other.test", 60);
    msg_a(&good, "mx1.real.fuzz.test", "192.0.2.1", 60);
    msg_soa(&good, "@12", 60, 60);
    assert_int_equal(parse(&good, "fuzz.test", DNS_TYPE_MX, &a), DNS_REASON_NONE);
    assert_int_equal(a.nrecords, 2);
    unsigned ok = 0, malformed = 0;
    for (int iter = 0; iter < 200000; iter++) {
        struct msg m = good;
        int flips = 1 + (int)dns_rng_below(&rng, 8);
        for (int f = 0; f < flips; f++) {
            size_t at = dns_rng_below(&rng, (uint32_t)m.len);
            if (dns_rng_below(&rng, 2))
                m.buf[at] ^= (uint8_t)(1u << dns_rng_below(&rng, 8));
            else
                m.buf[at] = (uint8_t)dns_rng_below(&rng, 256);
        }
        if (dns_rng_below(&rng, 4) == 0)
            m.len = dns_rng_below(&rng, (uint32_t)m.len + 1);
        uint16_t qtype = dns_rng_below(&rng, 2) ? DNS_TYPE_MX : DNS_TYPE_A;
        /* A heap copy of exactly m.len bytes, so ASan sees any read past the end. */
        uint8_t *buf = malloc(m.len ? m.len : 1);
        memcpy(buf, m.buf, m.len);
        enum dns_reason rc =
                dns_wire_parse(buf, m.len, iter % 2 ? NULL : "fuzz.test", qtype, DNS_CNAME_MAX, &a);
        free(buf);
        assert_true(rc == DNS_REASON_NONE || rc == DNS_REASON_MALFORMED ||
                    rc == DNS_REASON_CNAME_LIMIT);
        if (rc == DNS_REASON_NONE) {
            ok++;
            assert_true(a.nkept <= a.nrecords);
            assert_true(strlen(a.name) <= DNS_NAME_MAX);
        } else {
            malformed++;
        }
    }
    /* Purely random packets too. */
    for (int iter = 0; iter < 100000; iter++) {
        size_t len = dns_rng_below(&rng, 512);
        uint8_t *buf = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)dns_rng_below(&rng, 256);
        (void)dns_wire_parse(buf, len, NULL, DNS_TYPE_MX, DNS_CNAME_MAX, &a);
        free(buf);
    }
    assert_true(ok > 0 && malformed > 0);
}

static void test_names(void **state)
{
    (void)state;
    char out[DNS_NAME_MAX + 1];
    assert_int_equal(dns_name_normalize("Example.COM.", out), 0);
    assert_string_equal(out, "example.com");
    assert_int_equal(dns_name_normalize("_dmarc.x-y.test", out), 0);
    assert_int_equal(dns_name_normalize("", out), DNS_ERR_NAME);
    assert_int_equal(dns_name_normalize(".", out), DNS_ERR_NAME);
    assert_int_equal(dns_name_normalize("a..b", out), DNS_ERR_NAME);
    assert_int_equal(dns_name_normalize(".a", out), DNS_ERR_NAME);
    assert_int_equal(dns_name_normalize("a.b..", out), DNS_ERR_NAME);
    assert_int_equal(dns_name_normalize("a b.test", out), DNS_ERR_NAME);
    assert_int_equal(dns_name_normalize("192.0.2.1", out), DNS_ERR_NAME);
    assert_int_equal(dns_name_normalize("192.0.2.1.", out), DNS_ERR_NAME);
    assert_int_equal(dns_name_normalize("[192.0.2.1]", out), DNS_ERR_NAME);
    assert_int_equal(dns_name_normalize("::1", out), DNS_ERR_NAME);
    assert_int_equal(dns_name_normalize("2001:db8::1", out), DNS_ERR_NAME);
    assert_int_equal(dns_name_normalize("mx\\046.test", out), DNS_ERR_NAME);
    char label[70];
    memset(label, 'a', 64);
    label[64] = '\0';
    assert_int_equal(dns_name_normalize(label, out), DNS_ERR_NAME);
    label[63] = '\0';
    assert_int_equal(dns_name_normalize(label, out), 0);
    char longname[300];
    memset(longname, 'a', 255);
    longname[63] = longname[127] = longname[191] = '.'; /* four labels of 63 */
    longname[255] = '\0';
    assert_int_equal(strlen(longname), 255);
    assert_int_equal(dns_name_normalize(longname, out), DNS_ERR_NAME);
    longname[253] = '\0';
    assert_int_equal(dns_name_normalize(longname, out), 0);

    assert_string_equal(dns_reason_name(DNS_REASON_CNAME_LIMIT), "cname_limit");
    assert_string_equal(dns_reason_name(DNS_REASON__COUNT), "unknown");
    assert_string_equal(dns_outcome_name(DNS_OUTCOME_NULLMX), "nullmx");
    assert_string_equal(dns_strerror(DNS_ERR_NAME), "not a valid domain name");
    assert_string_equal(dns_lookup_state_name(DNS_LOOKUP_ADDRESSES), "addresses");
    assert_int_equal(dns_reason_from_ares(ARES_ETIMEOUT), DNS_REASON_TIMEOUT);
    assert_int_equal(dns_reason_from_ares(ARES_EDESTRUCTION), DNS_REASON_SHUTDOWN);
    struct dns_addr addr = { .family = AF_INET6 };
    inet_pton(AF_INET6, "2001:db8::1", &addr.v6);
    char buf[INET6_ADDRSTRLEN];
    assert_string_equal(dns_addr_format(&addr, buf, sizeof(buf)), "2001:db8::1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mx_compressed),
        cmocka_unit_test(test_cname_chain),
        cmocka_unit_test(test_cname_loop),
        cmocka_unit_test(test_null_mx),
        cmocka_unit_test(test_soa_negative_ttl),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_many_mx_keeps_lowest),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_pointer_loop),
        cmocka_unit_test(test_question_name_unreadable),
        cmocka_unit_test(test_fuzz),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
