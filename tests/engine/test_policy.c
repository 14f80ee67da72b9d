/*
 * tests/engine/test_policy.c — the per-domain TLS policy table: the policy line
 * parser (every word, every error and its message), lookup precedence (exact, then the
 * longest parent pattern, then the default; case and trailing dots ignored), contexts
 * shared by equal policies and doing what their policy says in real in-memory
 * handshakes, bad trust stores named with their domain, add/build misuse, and a table
 * of thousands of domains.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engine/policy.h"
#include "tests/tls/harness.h"

/* ---- the parser -------------------------------------------------------------------- */

static struct eng_policy_spec parse_ok(const char *text)
{
    struct eng_policy_spec spec;
    char err[256] = "untouched";
    if (eng_policy_spec_parse(text, &spec, err, sizeof(err)) != 0)
        fail_msg("'%s' did not parse: %s", text, err);
    assert_string_equal(err, "");
    return spec;
}

static void parse_fails(const char *text, const char *msg_part)
{
    struct eng_policy_spec spec;
    eng_policy_spec_init(&spec);
    spec.bounce_on_refusal = true; /* a marker: unchanged on failure */
    char err[256] = "";
    assert_int_equal(eng_policy_spec_parse(text, &spec, err, sizeof(err)), -EINVAL);
    if (strstr(err, msg_part) == NULL)
        fail_msg("'%s': message '%s' lacks '%s'", text, err, msg_part);
    assert_true(spec.bounce_on_refusal);
    assert_int_equal(spec.mode, ENG_POLICY_FLOOR);
}

static void test_parse_valid(void **state)
{
    (void)state;
    struct eng_policy_spec s = parse_ok("floor");
    assert_int_equal(s.mode, ENG_POLICY_FLOOR);
    assert_int_equal(s.min_version, 0);
    assert_string_equal(s.ca_file, "");
    assert_false(s.bounce_on_refusal);

    s = parse_ok("floor=1.3 ca=/etc/x.pem on_refusal=bounce");
    assert_int_equal(s.mode, ENG_POLICY_FLOOR);
    assert_int_equal(s.min_version, TLS_VERSION_1_3);
    assert_string_equal(s.ca_file, "/etc/x.pem");
    assert_true(s.bounce_on_refusal);

    s = parse_ok("opportunistic");
    assert_int_equal(s.mode, ENG_POLICY_OPPORTUNISTIC);
    assert_int_equal(s.min_version, 0);
    assert_false(s.bounce_on_refusal);

    /* Any order, tabs and runs of blanks. */
    s = parse_ok("\ton_refusal=bounce   opportunistic ");
    assert_int_equal(s.mode, ENG_POLICY_OPPORTUNISTIC);
    assert_true(s.bounce_on_refusal);

    s = parse_ok("ca=/etc/pki/roots.pem floor=TLSv1.2 on_refusal=defer");
    assert_int_equal(s.min_version, TLS_VERSION_1_2);
    assert_string_equal(s.ca_file, "/etc/pki/roots.pem");
    assert_false(s.bounce_on_refusal);

    s = parse_ok("ca=/etc/x.pem"); /* the mode defaults to the floor */
    assert_int_equal(s.mode, ENG_POLICY_FLOOR);
    assert_string_equal(s.ca_file, "/etc/x.pem");
}

static void test_parse_errors(void **state)
{
    (void)state;
    parse_fails("", "empty policy");
    parse_fails(" \t ", "empty policy");
    parse_fails("oportunistic", "unknown key 'oportunistic'");
    parse_fails("floor colour=blue", "unknown key 'colour'");
    parse_fails("Floor", "unknown key 'Floor'");
    parse_fails("floor=1.1", "'floor=1.1': the floor is 1.2 or 1.3");
    parse_fails("floor=1.0", "the floor is 1.2 or 1.3");
    parse_fails("floor=", "the floor is 1.2 or 1.3");
    parse_fails("floor=high", "the floor is 1.2 or 1.3");
    parse_fails("floor floor=1.3", "floor given twice");
    parse_fails("opportunistic opportunistic", "opportunistic given twice");
    parse_fails("opportunistic=yes", "opportunistic takes no value");
    parse_fails("opportunistic floor=1.3", "'opportunistic' conflicts with 'floor'");
    parse_fails("floor opportunistic", "conflicts");
    parse_fails("opportunistic ca=/etc/x.pem", "'ca=' has no effect with 'opportunistic'");
    parse_fails("ca=", "ca needs a file");
    parse_fails("ca", "ca needs a file");
    parse_fails("ca=x.pem", "ca needs an absolute path");
    parse_fails("ca=/a.pem ca=/b.pem", "ca given twice");
    parse_fails("on_refusal=bouce", "'on_refusal=bouce': on_refusal is defer or bounce");
    parse_fails("on_refusal", "on_refusal is defer or bounce");
    parse_fails("on_refusal=defer on_refusal=bounce", "on_refusal given twice");
    parse_fails("floor\r\nopportunistic", "control character");

    char longpath[ENG_POLICY_PATH_MAX + 16] = "ca=/";
    memset(longpath + 4, 'a', ENG_POLICY_PATH_MAX);
    longpath[ENG_POLICY_PATH_MAX + 4] = '\0';
    parse_fails(longpath, "path longer than");

    /* No message buffer is fine; NULL arguments are refused. */
    struct eng_policy_spec spec;
    assert_int_equal(eng_policy_spec_parse("bogus", &spec, NULL, 0), -EINVAL);
    assert_int_equal(eng_policy_spec_parse(NULL, &spec, NULL, 0), -EINVAL);
    assert_int_equal(eng_policy_spec_parse("floor", NULL, NULL, 0), -EINVAL);

    assert_string_equal(eng_policy_mode_name(ENG_POLICY_FLOOR), "floor");
    assert_string_equal(eng_policy_mode_name(ENG_POLICY_OPPORTUNISTIC), "opportunistic");
    assert_string_equal(eng_policy_mode_name(ENG_POLICY_MODE__COUNT), "unknown");
}

/* ---- the table --------------------------------------------------------------------- */

static struct eng_policy_table *new_table(void)
{
    struct eng_policy_defaults d = { .min_version = 0, .ca_file = pki_path("ca.crt") };
    struct eng_policy_table *t = NULL;
    assert_int_equal(eng_policy_table_new(&d, &t), 0);
    return t;
}

static void add_line(struct eng_policy_table *t, const char *pattern, const char *line)
{
    struct eng_policy_spec spec;
    char err[256];
    if (eng_policy_spec_parse(line, &spec, err, sizeof(err)) != 0)
        fail_msg("%s: %s", line, err);
    if (eng_policy_table_add(t, pattern, &spec) != 0)
        fail_msg("%s: %s", pattern, eng_policy_table_error(t));
}

static void lookup_is(const struct eng_policy_table *t, const char *domain, const char *name)
{
    const struct eng_policy *p = eng_policy_lookup(t, domain);
    assert_non_null(p);
    if (strcmp(p->name, name) != 0)
        fail_msg("lookup '%s' gave '%s', want '%s'", domain ? domain : "(null)", p->name, name);
}

/* The table of the precedence and sharing tests. */
static struct eng_policy_table *sample_table(void)
{
    struct eng_policy_table *t = new_table();
    char line[PATH_MAX + 64];
    add_line(t, "example.com", "floor=1.3");
    add_line(t, ".example.com", "opportunistic");
    snprintf(line, sizeof(line), "ca=%s", pki_path("evil-ca.crt"));
    add_line(t, ".Mail.Example.COM", line);
    add_line(t, "other.org", "on_refusal=bounce");
    /* The default's own settings, spelt out: the same context as the default. */
    snprintf(line, sizeof(line), "floor=1.2 ca=%s", pki_path("ca.crt"));
    add_line(t, "same-as-default.net", line);
    add_line(t, "legacy.example.org.", "opportunistic on_refusal=bounce");
    assert_null(eng_policy_lookup(t, "example.com")); /* not built yet */
    assert_int_equal(eng_policy_table_build(t), 0);
    assert_string_equal(eng_policy_table_error(t), "");
    return t;
}

static void test_lookup_precedence(void **state)
{
    (void)state;
    struct eng_policy_table *t = sample_table();
    assert_int_equal(eng_policy_table_size(t), 6);

    lookup_is(t, "example.com", "example.com");              /* exact beats .example.com */
    lookup_is(t, "a.example.com", ".example.com");           /* parent */
    lookup_is(t, "a.b.c.example.com", ".example.com");       /* any depth */
    lookup_is(t, "mail.example.com", ".example.com");        /* .mail.* is for subdomains */
    lookup_is(t, "x.mail.example.com", ".mail.example.com"); /* the longest parent */
    lookup_is(t, "y.x.mail.example.com", ".mail.example.com");
    lookup_is(t, "notexample.com", "default"); /* suffixes only at label boundaries */
    lookup_is(t, "example.com.evil.test", "default");
    lookup_is(t, "com", "default");
    lookup_is(t, "other.org", "other.org");
    lookup_is(t, "sub.other.org", "default"); /* an exact pattern covers no subdomain */
    lookup_is(t, "legacy.example.org", "legacy.example.org");
    lookup_is(t, "", "default");
    lookup_is(t, NULL, "default");
    lookup_is(t, ".example.com", "default"); /* not a domain */
    lookup_is(t, ".", "default");

    /* Case and one trailing dot do not matter; patterns are kept in lowercase. */
    lookup_is(t, "EXAMPLE.Com", "example.com");
    lookup_is(t, "example.com.", "example.com");
    lookup_is(t, "A.EXAMPLE.COM.", ".example.com");
    lookup_is(t, "X.MAIL.example.Com", ".mail.example.com");
    lookup_is(t, "Legacy.Example.Org.", "legacy.example.org");

    /* What each policy holds. */
    const struct eng_policy *def = eng_policy_lookup(t, "unknown.test");
    assert_int_equal(def->mode, ENG_POLICY_FLOOR);
    assert_int_equal(def->min_version, TLS_VERSION_1_2);
    assert_string_equal(def->ca_file, pki_path("ca.crt"));
    assert_false(def->bounce_on_refusal);
    assert_non_null(def->tls);

    const struct eng_policy *p = eng_policy_lookup(t, "example.com");
    assert_int_equal(p->mode, ENG_POLICY_FLOOR);
    assert_int_equal(p->min_version, TLS_VERSION_1_3);
    assert_string_equal(p->ca_file, pki_path("ca.crt"));

    p = eng_policy_lookup(t, "a.example.com");
    assert_int_equal(p->mode, ENG_POLICY_OPPORTUNISTIC);
    assert_int_equal(p->min_version, 0);
    assert_false(p->bounce_on_refusal);

    p = eng_policy_lookup(t, "x.mail.example.com");
    assert_int_equal(p->min_version, TLS_VERSION_1_2);
    assert_string_equal(p->ca_file, pki_path("evil-ca.crt"));

    p = eng_policy_lookup(t, "other.org");
    assert_true(p->bounce_on_refusal);
    assert_int_equal(p->mode, ENG_POLICY_FLOOR);
    p = eng_policy_lookup(t, "legacy.example.org");
    assert_true(p->bounce_on_refusal);
    assert_int_equal(p->mode, ENG_POLICY_OPPORTUNISTIC);

    eng_policy_table_free(t);
}

/* One context per distinct (mode, floor, trust store). */
static void test_shared_contexts(void **state)
{
    (void)state;
    struct eng_policy_table *t = sample_table();
    const struct eng_policy *def = eng_policy_lookup(t, "unknown.test");
    const struct eng_policy *v13 = eng_policy_lookup(t, "example.com");
    const struct eng_policy *opp = eng_policy_lookup(t, "a.example.com");
    const struct eng_policy *opp2 = eng_policy_lookup(t, "legacy.example.org");
    const struct eng_policy *evil = eng_policy_lookup(t, "x.mail.example.com");
    const struct eng_policy *bounce = eng_policy_lookup(t, "other.org");
    const struct eng_policy *same = eng_policy_lookup(t, "same-as-default.net");

    /* on_refusal does not change the context; the same file named again neither. */
    assert_ptr_equal(bounce->tls, def->tls);
    assert_ptr_equal(same->tls, def->tls);
    assert_ptr_equal(opp2->tls, opp->tls);
    assert_ptr_not_equal(v13->tls, def->tls);
    assert_ptr_not_equal(opp->tls, def->tls);
    assert_ptr_not_equal(evil->tls, def->tls);
    assert_ptr_not_equal(evil->tls, v13->tls);
    assert_ptr_not_equal(opp->tls, v13->tls);
    assert_int_equal(eng_policy_table_contexts(t), 4);
    eng_policy_table_free(t);
}

static int handshake_with(struct tls_ctx *cctx, const char *profile, uint16_t server_max,
                          struct tls_verdict *v)
{
    struct tls_ctx *sctx = server_ctx(profile, 0, server_max, NULL);
    assert_non_null(sctx);
    int rc = verdict_for(cctx, sctx, MX_NAME, v, NULL);
    tls_ctx_free(sctx);
    return rc;
}

/* Each context does what its policy says, in real handshakes. */
static void test_contexts_enforce_their_policy(void **state)
{
    (void)state;
    struct eng_policy_table *t = sample_table();
    struct tls_ctx *def = eng_policy_lookup(t, "unknown.test")->tls;
    struct tls_ctx *v13 = eng_policy_lookup(t, "example.com")->tls;
    struct tls_ctx *opp = eng_policy_lookup(t, "a.example.com")->tls;
    struct tls_ctx *evil = eng_policy_lookup(t, "x.mail.example.com")->tls;
    struct tls_verdict v;

    /* A TLS 1.2 receiver: the default passes it, the 1.3 floor refuses it, and the
     * opportunistic policy passes it, judged against the default floor (1.2). */
    assert_int_equal(handshake_with(def, "valid", TLS_VERSION_1_2, &v), 0);
    assert_true(tls_verdict_meets_floor(&v));
    assert_int_equal(handshake_with(v13, "valid", TLS_VERSION_1_2, &v), TLS_ERR_HANDSHAKE);
    assert_int_equal(v.reason, TLS_REASON_VERSION_BELOW_FLOOR);
    assert_int_equal(handshake_with(opp, "valid", TLS_VERSION_1_2, &v), 0);
    assert_true(v.opportunistic);
    assert_true(tls_verdict_meets_floor(&v));

    /* Self-signed: refused by the floor, passed (with the evidence) opportunistically. */
    assert_int_equal(handshake_with(def, "self-signed", 0, &v), TLS_ERR_HANDSHAKE);
    assert_int_equal(handshake_with(opp, "self-signed", 0, &v), 0);
    assert_true(v.pass);
    assert_int_equal(v.reason, TLS_REASON_CERT_SELF_SIGNED);

    /* The pinned CA: only the evil root's leaf passes. */
    assert_int_equal(handshake_with(evil, "untrusted-ca", 0, &v), 0);
    assert_true(tls_verdict_meets_floor(&v));
    assert_int_equal(handshake_with(evil, "valid", 0, &v), TLS_ERR_HANDSHAKE);
    assert_int_equal(v.reason, TLS_REASON_CERT_UNTRUSTED);
    assert_int_equal(handshake_with(def, "untrusted-ca", 0, &v), TLS_ERR_HANDSHAKE);

    eng_policy_table_free(t);
}

/* A trust store that cannot be loaded is named with the domain that wants it. */
static void test_bad_ca_file(void **state)
{
    (void)state;
    struct eng_policy_table *t = new_table();
    add_line(t, "fine.example", "floor=1.3");
    add_line(t, "bank.example", "ca=/nonexistent/bank-roots.pem");
    assert_int_equal(eng_policy_table_build(t), TLS_ERR_CA_LOAD);
    const char *msg = eng_policy_table_error(t);
    assert_non_null(strstr(msg, "bank.example"));
    assert_non_null(strstr(msg, "/nonexistent/bank-roots.pem"));
    assert_non_null(strstr(msg, "cannot load the trust store"));
    assert_null(eng_policy_lookup(t, "fine.example"));
    eng_policy_table_free(t);

    /* A readable file without a certificate (a private key) is no trust store. */
    t = new_table();
    char line[PATH_MAX + 8];
    snprintf(line, sizeof(line), "ca=%s", pki_path("ca.key"));
    add_line(t, ".keys.example", line);
    assert_int_equal(eng_policy_table_build(t), TLS_ERR_CA_LOAD);
    assert_non_null(strstr(eng_policy_table_error(t), ".keys.example policy"));
    eng_policy_table_free(t);

    /* The default's own file. */
    struct eng_policy_defaults d = { .ca_file = "/nonexistent/default.pem" };
    assert_int_equal(eng_policy_table_new(&d, &t), 0);
    assert_int_equal(eng_policy_table_build(t), TLS_ERR_CA_LOAD);
    assert_non_null(strstr(eng_policy_table_error(t), "default policy"));
    eng_policy_table_free(t);
}

static void test_add_errors(void **state)
{
    (void)state;
    struct eng_policy_table *t = NULL;
    struct eng_policy_defaults d = { .min_version = TLS_VERSION_1_1 };
    assert_int_equal(eng_policy_table_new(&d, &t), -EINVAL);
    d.min_version = TLS_VERSION_1_3;
    d.ca_file = pki_path("ca.crt");
    assert_int_equal(eng_policy_table_new(&d, &t), 0);

    struct eng_policy_spec spec;
    eng_policy_spec_init(&spec);
    assert_int_equal(eng_policy_table_add(t, "example.com", &spec), 0);
    /* Duplicates, whatever the case or a trailing dot. */
    assert_int_equal(eng_policy_table_add(t, "EXAMPLE.com.", &spec), -EEXIST);
    assert_non_null(strstr(eng_policy_table_error(t), "given twice"));
    /* A parent pattern is another key. */
    assert_int_equal(eng_policy_table_add(t, ".example.com", &spec), 0);
    assert_int_equal(eng_policy_table_add(t, ".Example.Com", &spec), -EEXIST);

    static const char *const bad[] = {
        "",
        ".",
        "..",
        "a..b",
        "a..",
        "*.example.com",
        "exa mple.com",
        "example.com/x",
        "caf\xc3\xa9.example",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (eng_policy_table_add(t, bad[i], &spec) != -EINVAL)
            fail_msg("pattern '%s' was accepted", bad[i]);
        assert_non_null(strstr(eng_policy_table_error(t), "not a domain name"));
    }
    char label[80];
    memset(label, 'a', 64);
    strcpy(label + 64, ".example");
    assert_int_equal(eng_policy_table_add(t, label, &spec), -EINVAL);
    label[1] = '.'; /* now "a." + 62 a's: fine */
    assert_int_equal(eng_policy_table_add(t, label, &spec), 0);

    /* Opportunistic with a floor or a CA, and versions that are no floor. */
    spec.mode = ENG_POLICY_OPPORTUNISTIC;
    spec.min_version = TLS_VERSION_1_3;
    assert_int_equal(eng_policy_table_add(t, "o1.example", &spec), -EINVAL);
    assert_non_null(strstr(eng_policy_table_error(t), "o1.example: opportunistic"));
    spec.min_version = 0;
    strcpy(spec.ca_file, "/etc/x.pem");
    assert_int_equal(eng_policy_table_add(t, "o2.example", &spec), -EINVAL);
    eng_policy_spec_init(&spec);
    spec.min_version = TLS_VERSION_1_1;
    assert_int_equal(eng_policy_table_add(t, "v.example", &spec), -EINVAL);
    assert_non_null(strstr(eng_policy_table_error(t), "TLSv1.1"));
    spec.min_version = 0;
    spec.mode = (enum eng_policy_mode)7;
    assert_int_equal(eng_policy_table_add(t, "m.example", &spec), -EINVAL);
    eng_policy_spec_init(&spec);
    memset(spec.ca_file, 'x', sizeof(spec.ca_file));
    assert_int_equal(eng_policy_table_add(t, "c.example", &spec), -EINVAL);
    eng_policy_spec_init(&spec);
    assert_int_equal(eng_policy_table_add(t, NULL, &spec), -EINVAL);
    assert_int_equal(eng_policy_table_add(t, "x.example", NULL), -EINVAL);
    assert_int_equal(eng_policy_table_size(t), 3);

    /* None of the refused ones is there. */
    assert_int_equal(eng_policy_table_build(t), 0);
    assert_int_equal(eng_policy_table_build(t), -EBUSY);
    assert_int_equal(eng_policy_table_add(t, "late.example", &spec), -EBUSY);
    assert_string_equal(eng_policy_lookup(t, "o1.example")->name, "default");
    assert_int_equal(eng_policy_lookup(t, "o1.example")->min_version, TLS_VERSION_1_3);
    assert_string_equal(eng_policy_lookup(t, "x.example.com")->name, ".example.com");
    /* Everything shares the default's context. */
    assert_int_equal(eng_policy_table_contexts(t), 1);
    eng_policy_table_free(t);
    eng_policy_table_free(NULL);
}

/* Thousands of domains: every one found, its parents too, one context for all. */
static void test_many_domains(void **state)
{
    (void)state;
    struct eng_policy_table *t = new_table();
    char name[64];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "%sd%d.example.net", i % 2 ? "." : "", i);
        add_line(t, name, i % 3 ? "floor" : "on_refusal=bounce");
    }
    assert_int_equal(eng_policy_table_build(t), 0);
    assert_int_equal(eng_policy_table_contexts(t), 1);
    char want[64];
    for (int i = 0; i < 5000; i++) {
        snprintf(want, sizeof(want), "%sd%d.example.net", i % 2 ? "." : "", i);
        snprintf(name, sizeof(name), "%sD%d.Example.NET", i % 2 ? "mx." : "", i);
        const struct eng_policy *p = eng_policy_lookup(t, name);
        if (strcmp(p->name, want) != 0)
            fail_msg("%s: got %s, want %s", name, p->name, want);
        assert_int_equal(p->bounce_on_refusal, i % 3 == 0);
        /* An odd pattern is a parent: the name itself is not covered. */
        snprintf(name, sizeof(name), "d%d.example.net", i);
        assert_string_equal(eng_policy_lookup(t, name)->name, i % 2 ? "default" : want);
    }
    lookup_is(t, "d5000.example.net", "default");
    eng_policy_table_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_lookup_precedence),
        cmocka_unit_test(test_shared_contexts),
        cmocka_unit_test(test_contexts_enforce_their_policy),
        cmocka_unit_test(test_bad_ca_file),
        cmocka_unit_test(test_add_errors),
        cmocka_unit_test(test_many_domains),
    };
    return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
