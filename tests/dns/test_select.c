/*
 * tests/dns/test_select.c — MX selection: the canonical order of an MX set (preference,
 * name, duplicates and root targets dropped), the shuffle of equal preferences on every
 * delivery (all six orders of three equal hosts show up within 600 lookups, a lower
 * preference always comes first), the max_mx_hosts cut, and the address order of each
 * family preference.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>

#include <cmocka.h>

#include "dns/dns_int.h"

static void set_mx(struct dns_wire_mx *mx, uint16_t pref, const char *name)
{
    mx->pref = pref;
    snprintf(mx->name, sizeof(mx->name), "%s", name);
}

static void test_canonical(void **state)
{
    (void)state;
    struct dns_wire_mx mx[7];
    set_mx(&mx[0], 20, "c.test");
    set_mx(&mx[1], 10, "b.test");
    set_mx(&mx[2], 10, "a.test");
    set_mx(&mx[3], 30, "b.test"); /* b again, higher preference: dropped */
    set_mx(&mx[4], 0, "");        /* "." among others: ignored */
    set_mx(&mx[5], 5, "z.test");
    set_mx(&mx[6], 20, "c.test"); /* exact duplicate */
    unsigned n = dns_mx_canonical(mx, 7);
    assert_int_equal(n, 4);
    assert_int_equal(mx[0].pref, 5);
    assert_string_equal(mx[0].name, "z.test");
    assert_string_equal(mx[1].name, "a.test");
    assert_string_equal(mx[2].name, "b.test");
    assert_int_equal(mx[2].pref, 10);
    assert_string_equal(mx[3].name, "c.test");
}

/* A canonical result of hosts named h<i> with the given preferences. */
static void make_result(struct dns_mx_result *res, const uint16_t *prefs, unsigned n)
{
    memset(res, 0, sizeof(*res));
    res->outcome = DNS_OUTCOME_OK;
    snprintf(res->domain, sizeof(res->domain), "shuffle.test");
    for (unsigned i = 0; i < n; i++) {
        struct dns_addr a = { .family = AF_INET };
        a.v4.s_addr = htonl(0xC0000200 + i);
        char name[16];
        snprintf(name, sizeof(name), "h%u", i);
        dns_host_set(&res->hosts[i], prefs[i], name, strlen(name), &a, 1);
    }
    res->nhosts = (uint8_t)n;
}

static void test_shuffle_equal_preferences(void **state)
{
    (void)state;
    struct dns_rng rng;
    dns_rng_init(&rng);
    /* 5 first, then three hosts at 10, then 20. */
    const uint16_t prefs[] = { 5, 10, 10, 10, 20 };
    struct dns_mx_result canon, out;
    make_result(&canon, prefs, 5);
    unsigned seen[3][3][3] = { { { 0 } } };
    unsigned first_of_group[3] = { 0 };
    for (int i = 0; i < 600; i++) {
        dns_result_deliver(&canon, DNS_MX_HOSTS_MAX, &rng, &out);
        assert_int_equal(out.nhosts, 5);
        assert_string_equal(out.hosts[0].name, "h0");
        assert_string_equal(out.hosts[4].name, "h4");
        int idx[3];
        for (int k = 0; k < 3; k++) {
            assert_int_equal(out.hosts[1 + k].pref, 10);
            idx[k] = out.hosts[1 + k].name[1] - '1';
            assert_true(idx[k] >= 0 && idx[k] < 3);
            /* addresses travel with their host */
            assert_int_equal(ntohl(out.hosts[1 + k].addrs[0].v4.s_addr),
                             0xC0000200u + 1 + (unsigned)idx[k]);
        }
        assert_true(idx[0] != idx[1] && idx[1] != idx[2] && idx[0] != idx[2]);
        seen[idx[0]][idx[1]][idx[2]]++;
        first_of_group[idx[0]]++;
    }
    unsigned perms = 0;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 3; c++)
                perms += seen[a][b][c] > 0;
    assert_int_equal(perms, 6);
    /* Roughly fair: each host leads its group about 200 times of 600. */
    for (int k = 0; k < 3; k++)
        assert_true(first_of_group[k] > 120 && first_of_group[k] < 280);
}

static void test_max_hosts(void **state)
{
    (void)state;
    struct dns_rng rng;
    dns_rng_seed(&rng, 7);
    const uint16_t prefs[] = { 10, 10, 10, 10, 20, 30 };
    struct dns_mx_result canon, out;
    make_result(&canon, prefs, 6);
    canon.skipped = 2; /* e.g. address literals dropped earlier */
    bool led[4] = { false };
    for (int i = 0; i < 200; i++) {
        dns_result_deliver(&canon, 3, &rng, &out);
        assert_int_equal(out.nhosts, 3);
        assert_int_equal(out.skipped, 2 + 3);
        for (int k = 0; k < 3; k++)
            assert_int_equal(out.hosts[k].pref, 10);
        led[out.hosts[0].name[1] - '0'] = true;
    }
    /* The cut comes after the shuffle: every pref-10 host gets its turn. */
    for (int k = 0; k < 4; k++)
        assert_true(led[k]);
    dns_result_deliver(&canon, 16, &rng, &out);
    assert_int_equal(out.nhosts, 6);
    assert_int_equal(out.skipped, 2);
    assert_false(out.cached);
    assert_string_equal(out.domain, "shuffle.test");
}

static void test_addr_order(void **state)
{
    (void)state;
    struct in_addr v4[3];
    struct in6_addr v6[2];
    for (int i = 0; i < 3; i++)
        v4[i].s_addr = htonl(0xC0000201 + i);
    for (int i = 0; i < 2; i++) {
        memset(&v6[i], 0, sizeof(v6[i]));
        v6[i].s6_addr[15] = (uint8_t)(i + 1);
    }
    struct dns_addr out[DNS_ADDRS_MAX];
    const sa_family_t F4 = AF_INET, F6 = AF_INET6;

    unsigned n = dns_addrs_order(DNS_ADDR_PREF_ANY, v4, 3, v6, 2, 8, out);
    assert_int_equal(n, 5);
    const sa_family_t any[] = { F6, F4, F6, F4, F4 };
    for (unsigned i = 0; i < n; i++)
        assert_int_equal(out[i].family, any[i]);
    assert_int_equal(ntohl(out[1].v4.s_addr), 0xC0000201); /* DNS order within a family */
    assert_int_equal(out[2].v6.s6_addr[15], 2);

    n = dns_addrs_order(DNS_ADDR_PREF_IPV4, v4, 3, v6, 2, 4, out);
    assert_int_equal(n, 4);
    const sa_family_t p4[] = { F4, F4, F4, F6 };
    for (unsigned i = 0; i < n; i++)
        assert_int_equal(out[i].family, p4[i]);

    n = dns_addrs_order(DNS_ADDR_PREF_IPV6, v4, 3, v6, 2, 8, out);
    assert_int_equal(n, 5);
    const sa_family_t p6[] = { F6, F6, F4, F4, F4 };
    for (unsigned i = 0; i < n; i++)
        assert_int_equal(out[i].family, p6[i]);

    n = dns_addrs_order(DNS_ADDR_ONLY_IPV4, v4, 3, v6, 2, 8, out);
    assert_int_equal(n, 3);
    for (unsigned i = 0; i < n; i++)
        assert_int_equal(out[i].family, F4);
    n = dns_addrs_order(DNS_ADDR_ONLY_IPV6, v4, 3, v6, 2, 8, out);
    assert_int_equal(n, 2);
    for (unsigned i = 0; i < n; i++)
        assert_int_equal(out[i].family, F6);
    assert_int_equal(dns_addrs_order(DNS_ADDR_ONLY_IPV6, v4, 3, NULL, 0, 8, out), 0);

    /* ANY with one family only still fills up to max. */
    n = dns_addrs_order(DNS_ADDR_PREF_ANY, v4, 3, NULL, 0, 2, out);
    assert_int_equal(n, 2);
    assert_int_equal(out[0].family, F4);
    assert_int_equal(out[1].family, F4);
}

static void test_rng(void **state)
{
    (void)state;
    struct dns_rng a, b;
    dns_rng_seed(&a, 1);
    dns_rng_seed(&b, 1);
    unsigned hist[5] = { 0 };
    for (int i = 0; i < 5000; i++) {
        uint32_t x = dns_rng_below(&a, 5);
        assert_int_equal(x, dns_rng_below(&b, 5));
        assert_true(x < 5);
        hist[x]++;
    }
    for (int i = 0; i < 5; i++)
        assert_true(hist[i] > 800 && hist[i] < 1200);
    /* getrandom seeds differ between resolvers. */
    dns_rng_init(&a);
    dns_rng_init(&b);
    assert_memory_not_equal(a.s, b.s, sizeof(a.s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical), cmocka_unit_test(test_shuffle_equal_preferences),
        cmocka_unit_test(test_max_hosts), cmocka_unit_test(test_addr_order),
        cmocka_unit_test(test_rng),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
