/*
 * engine/probe_output.c — `floormta probe`'s reports: the single-host summary and JSON
 * object, and the MX mode's table (one row per MX host address) and JSON object
 * {domain, floor, dns:{...}, hosts:[...]} whose hosts carry the single-host fields.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "engine/errors.h"
#include "engine/probe_int.h"

static void format_time(int64_t t, char *out, size_t cap)
{
    if (t == 0) {
        snprintf(out, cap, "-");
        return;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *or_dash(const char *s)
{
    return (s && *s) ? s : "-";
}

static void print_problems(FILE *f, uint32_t problems)
{
    for (int r = 0; r < TLS_REASON__COUNT; r++)
        if (problems & (1u << r))
            fprintf(f, " %s", tls_reason_name((enum tls_reason)r));
}

static void print_human(const struct probe_opts *o, const char *where, const struct probe_run *run)
{
    const struct smtp_client *c = &run->result;
    const struct tls_evidence *ev = &c->verdict.ev;
    char caps[256], nb[32], na[32], fp[65];

    printf("probe %s[%s] floor %s\n", o->mx_name, where, tls_version_name(o->floor));
    switch (c->outcome) {
    case SMTPC_OUTCOME_PASS: printf("  result    PASS\n"); break;
    case SMTPC_OUTCOME_REFUSED:
        printf("  result    REFUSE %s (%s)\n", tls_reason_name(c->verdict.reason),
               tls_reason_text(c->verdict.reason));
        break;
    default:
        printf("  result    ERROR %s (during %s)\n", eng_describe_error(c->err),
               smtpc_state_name(c->err_state));
        break;
    }
    printf("  greeting  %s\n", or_dash(c->greeting));
    printf("  ehlo      %s\n", or_dash(smtp_caps_format(&c->caps, caps, sizeof(caps))));
    printf("  last      %s\n", or_dash(c->last_reply));
    printf("  tls       %s %s%s\n", ev->version ? tls_version_name(ev->version) : "-",
           or_dash(ev->cipher), ev->resumed ? " (resumed)" : "");
    if (ev->has_cert) {
        format_time(ev->not_before, nb, sizeof(nb));
        format_time(ev->not_after, na, sizeof(na));
        printf("  subject   %s\n  issuer    %s\n  sans      %s\n", or_dash(ev->subject),
               or_dash(ev->issuer), or_dash(ev->sans));
        printf("  validity  %s .. %s\n  key       %s %d bits\n", nb, na, or_dash(ev->key_type),
               ev->key_bits);
        printf("  sha256    %s\n", tls_evidence_fingerprint(ev, fp, sizeof(fp)));
    }
    if (ev->problems) {
        printf("  problems ");
        print_problems(stdout, ev->problems);
        printf("\n");
    }
    if (ev->detail[0])
        printf("  detail    %s\n", ev->detail);
    printf("  elapsed   %llu ms\n", (unsigned long long)run->elapsed_ms);
}

static json_t *json_evidence(const struct tls_evidence *ev)
{
    char nb[32], na[32], fp[65];
    json_t *tls = json_object();
    json_object_set_new(tls, "version",
                        ev->version ? json_string(tls_version_name(ev->version)) : json_null());
    json_object_set_new(tls, "cipher", ev->cipher[0] ? json_string(ev->cipher) : json_null());
    json_object_set_new(tls, "resumed", json_boolean(ev->resumed));
    if (ev->has_cert) {
        format_time(ev->not_before, nb, sizeof(nb));
        format_time(ev->not_after, na, sizeof(na));
        json_t *cert = json_object();
        json_object_set_new(cert, "subject", json_string(ev->subject));
        json_object_set_new(cert, "issuer", json_string(ev->issuer));
        json_object_set_new(cert, "sans", json_string(ev->sans));
        json_object_set_new(cert, "not_before", json_string(nb));
        json_object_set_new(cert, "not_after", json_string(na));
        json_object_set_new(cert, "sha256", json_string(tls_evidence_fingerprint(ev, fp, 65)));
        json_object_set_new(cert, "key_type", json_string(ev->key_type));
        json_object_set_new(cert, "key_bits", json_integer(ev->key_bits));
        json_object_set_new(tls, "certificate", cert);
    } else {
        json_object_set_new(tls, "certificate", json_null());
    }
    json_t *problems = json_array();
    for (int r = 0; r < TLS_REASON__COUNT; r++)
        if (ev->problems & (1u << r))
            json_array_append_new(problems, json_string(tls_reason_name((enum tls_reason)r)));
    json_object_set_new(tls, "problems", problems);
    json_object_set_new(tls, "detail", ev->detail[0] ? json_string(ev->detail) : json_null());
    return tls;
}

json_t *eng_probe_json_host(const char *name, const char *where, uint16_t floor,
                            const struct probe_run *run)
{
    const struct smtp_client *c = &run->result;
    char caps[256];
    json_t *root = json_object();
    json_object_set_new(root, "address", json_string(where));
    json_object_set_new(root, "name", json_string(name));
    json_object_set_new(root, "floor", json_string(tls_version_name(floor)));
    json_object_set_new(root, "result", json_string(smtpc_outcome_name(c->outcome)));
    bool decided = c->outcome == SMTPC_OUTCOME_PASS || c->outcome == SMTPC_OUTCOME_REFUSED;
    json_object_set_new(root, "reason",
                        decided ? json_string(tls_reason_name(c->verdict.reason)) : json_null());
    json_object_set_new(root, "reason_text",
                        decided ? json_string(tls_reason_text(c->verdict.reason)) : json_null());
    if (c->outcome == SMTPC_OUTCOME_ERROR) {
        json_object_set_new(root, "error", json_string(eng_describe_error(c->err)));
        json_object_set_new(root, "error_state", json_string(smtpc_state_name(c->err_state)));
    } else {
        json_object_set_new(root, "error", json_null());
        json_object_set_new(root, "error_state", json_null());
    }
    json_object_set_new(root, "greeting", json_string(c->greeting));
    json_object_set_new(root, "ehlo", json_string(smtp_caps_format(&c->caps, caps, 256)));
    json_object_set_new(root, "starttls_offered", json_boolean(c->starttls_offered));
    json_object_set_new(root, "last_reply", json_string(c->last_reply));
    json_object_set_new(root, "tls", json_evidence(&c->verdict.ev));
    json_object_set_new(root, "elapsed_ms", json_integer((json_int_t)run->elapsed_ms));
    return root;
}

static void print_json(json_t *root)
{
    json_dumpf(root, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
    json_decref(root);
}

void eng_probe_print_host(const struct probe_opts *o, const char *where,
                          const struct probe_run *run)
{
    if (o->json)
        print_json(eng_probe_json_host(o->mx_name, where, o->floor, run));
    else
        print_human(o, where, run);
}

/* ---- the MX mode ------------------------------------------------------------------------ */

static size_t count_passed(const struct probe_mx_report *rep)
{
    size_t n = 0;
    for (size_t i = 0; i < rep->nrows; i++)
        n += rep->rows[i].run.result.outcome == SMTPC_OUTCOME_PASS;
    return n;
}

/* The reason column: the refusal reason, or the error and where it happened. */
static const char *row_reason(const struct probe_row *row, char *buf, size_t cap)
{
    const struct smtp_client *c = &row->run.result;
    switch (c->outcome) {
    case SMTPC_OUTCOME_PASS: return "-";
    case SMTPC_OUTCOME_REFUSED: return tls_reason_name(c->verdict.reason);
    default:
        snprintf(buf, cap, "%s (during %s)", eng_describe_error(c->err),
                 smtpc_state_name(c->err_state));
        return buf;
    }
}

static void print_dns_line(const struct probe_mx_report *rep)
{
    const struct dns_mx_result *r = &rep->dns;
    if (rep->dns_err) {
        printf("  dns       error: %s\n", eng_describe_error(rep->dns_err));
        return;
    }
    printf("  dns       %s", dns_outcome_name(r->outcome));
    if (r->outcome != DNS_OUTCOME_OK)
        printf(" %s (%s)", dns_reason_name(r->reason), dns_reason_text(r->reason));
    else
        printf(", %u host%s, ttl %u s, %u skipped%s%s", r->nhosts, r->nhosts == 1 ? "" : "s",
               r->ttl, r->skipped, r->implicit_mx ? ", implicit MX" : "",
               r->cached ? ", cached" : "");
    printf("\n");
    if (r->detail[0] && r->outcome != DNS_OUTCOME_OK)
        printf("  detail    %s\n", r->detail);
}

static void print_mx_human(const struct probe_opts *o, const struct probe_mx_report *rep)
{
    printf("probe %s (MX) port %u floor %s\n", o->target, o->port, tls_version_name(o->floor));
    print_dns_line(rep);
    if (rep->nrows == 0) {
        printf("  result    DNS FAILURE: no MX host to probe\n");
        return;
    }
    /* Column widths from the data, so long MX names keep the table aligned. */
    int wmx = 2, waddr = 7, wreason = 6;
    char reason[160];
    for (size_t i = 0; i < rep->nrows; i++) {
        const struct probe_row *row = &rep->rows[i];
        int l = (int)strlen(row->mx);
        wmx = l > wmx ? l : wmx;
        l = (int)strlen(row->where);
        waddr = l > waddr ? l : waddr;
        l = (int)strlen(row_reason(row, reason, sizeof(reason)));
        wreason = l > wreason ? l : wreason;
    }
    printf("  %-5s %-*s  %-*s  %-7s  %-*s  %-8s %s\n", "pref", wmx, "mx", waddr, "address",
           "verdict", wreason, "reason", "version", "cipher");
    for (size_t i = 0; i < rep->nrows; i++) {
        const struct probe_row *row = &rep->rows[i];
        const struct smtp_client *c = &row->run.result;
        const struct tls_evidence *ev = &c->verdict.ev;
        printf("  %-5u %-*s  %-*s  %-7s  %-*s  %-8s %s\n", row->pref, wmx, row->mx, waddr,
               row->where, smtpc_outcome_name(c->outcome), wreason,
               row_reason(row, reason, sizeof(reason)),
               ev->version ? tls_version_name(ev->version) : "-", or_dash(ev->cipher));
    }
    size_t passed = count_passed(rep);
    printf("  result    %s: %zu of %zu MX host address%s meet%s the floor\n",
           passed ? "PASS" : "REFUSE", passed, rep->nrows, rep->nrows == 1 ? "" : "es",
           rep->nrows == 1 && passed ? "s" : "");
    printf("  elapsed   %llu ms\n", (unsigned long long)rep->elapsed_ms);
}

static json_t *json_dns(const struct probe_mx_report *rep)
{
    const struct dns_mx_result *r = &rep->dns;
    json_t *dns = json_object();
    if (rep->dns_err) {
        json_object_set_new(dns, "outcome", json_string("error"));
        json_object_set_new(dns, "reason", json_null());
        json_object_set_new(dns, "error", json_string(eng_describe_error(rep->dns_err)));
        return dns;
    }
    json_object_set_new(dns, "outcome", json_string(dns_outcome_name(r->outcome)));
    json_object_set_new(dns, "reason", json_string(dns_reason_name(r->reason)));
    json_object_set_new(dns, "reason_text", json_string(dns_reason_text(r->reason)));
    json_object_set_new(dns, "detail", r->detail[0] ? json_string(r->detail) : json_null());
    json_object_set_new(dns, "implicit_mx", json_boolean(r->implicit_mx));
    json_object_set_new(dns, "cached", json_boolean(r->cached));
    json_object_set_new(dns, "ttl", json_integer(r->ttl));
    json_object_set_new(dns, "nhosts", json_integer(r->nhosts));
    json_object_set_new(dns, "skipped", json_integer(r->skipped));
    return dns;
}

static void print_mx_json(const struct probe_opts *o, const struct probe_mx_report *rep)
{
    json_t *root = json_object();
    json_object_set_new(root, "domain", json_string(o->target));
    json_object_set_new(root, "floor", json_string(tls_version_name(o->floor)));
    json_object_set_new(root, "port", json_integer(o->port));
    json_object_set_new(root, "dns", json_dns(rep));
    json_t *hosts = json_array();
    for (size_t i = 0; i < rep->nrows; i++) {
        const struct probe_row *row = &rep->rows[i];
        json_t *h = eng_probe_json_host(row->name, row->where, o->floor, &row->run);
        json_object_set_new(h, "pref", json_integer(row->pref));
        json_object_set_new(h, "mx", json_string(row->mx));
        json_array_append_new(hosts, h);
    }
    json_object_set_new(root, "hosts", hosts);
    size_t passed = count_passed(rep);
    json_object_set_new(root, "passed", json_integer((json_int_t)passed));
    json_object_set_new(root, "result",
                        json_string(rep->nrows == 0 ? "dns_failure"
                                    : passed        ? "pass"
                                                    : "refuse"));
    json_object_set_new(root, "elapsed_ms", json_integer((json_int_t)rep->elapsed_ms));
    print_json(root);
}

void eng_probe_print_mx(const struct probe_opts *o, const struct probe_mx_report *rep)
{
    if (o->json)
        print_mx_json(o, rep);
    else
        print_mx_human(o, rep);
}
