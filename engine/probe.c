/*
 * engine/probe.c — `floormta probe`: connect to one receiving SMTP server, negotiate
 * STARTTLS and judge it against the floor, with the same state machine, loop and tls/
 * code that deliveries use. Prints a human summary or one JSON object (jansson).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/addr.h"
#include "engine/cli.h"
#include "engine/errors.h"
#include "engine/log.h"
#include "engine/loop.h"
#include "engine/smtp_session.h"

struct probe_opts {
    const char *target;
    const char *mx_name;
    const char *ca_file;
    const char *helo_name;
    uint16_t floor;
    unsigned timeout_ms;
    bool json;
};

struct probe_run {
    struct smtp_client result;
    bool finished;
    uint64_t elapsed_ms;
};

static void probe_usage(FILE *f)
{
    fprintf(f, "usage: floormta probe HOST[:PORT] --name MXNAME [options]\n"
               "\n"
               "Connects to the SMTP server at HOST (an IP address; PORT defaults to 25), reads\n"
               "the greeting, sends EHLO, requires STARTTLS, performs the TLS handshake and\n"
               "judges it against the floor: TLS version, certificate chain, host name MXNAME,\n"
               "dates, key and signature strength. Then EHLO again over TLS and QUIT.\n"
               "\n"
               "options:\n"
               "  --name MXNAME     the MX host name the certificate must match (required)\n"
               "  --ca FILE         trusted roots (PEM); default: the system bundle\n"
               "  --floor 1.2|1.3   minimum TLS version (default 1.2)\n"
               "  --helo NAME       our EHLO name (default: this host's name)\n"
               "  --timeout SEC     connect and per-reply timeout (default 30)\n"
               "  --json            print one JSON object instead of the summary\n"
               "  -v, --verbose     log every protocol step to stderr\n"
               "\n"
               "exit status: 0 meets the floor, 2 refused by the floor, 1 error\n");
}

static int parse_opts(int argc, char **argv, struct probe_opts *o)
{
    static const struct option longopts[] = {
        { "name", required_argument, NULL, 'n' },
        { "ca", required_argument, NULL, 'c' },
        { "floor", required_argument, NULL, 'f' },
        { "helo", required_argument, NULL, 'H' },
        { "timeout", required_argument, NULL, 't' },
        { "json", no_argument, NULL, 'j' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    o->floor = TLS_VERSION_1_2;
    o->timeout_ms = 30000;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
        char *end = NULL;
        long v;
        switch (c) {
        case 'n': o->mx_name = optarg; break;
        case 'c': o->ca_file = optarg; break;
        case 'H': o->helo_name = optarg; break;
        case 'j': o->json = true; break;
        case 'v': eng_log_set_level(ENG_LOG_DEBUG); break;
        case 'h': probe_usage(stdout); exit(0);
        case 'f':
            if (tls_version_parse(optarg, &o->floor) < 0 ||
                (o->floor != TLS_VERSION_1_2 && o->floor != TLS_VERSION_1_3)) {
                fprintf(stderr, "floormta probe: --floor must be 1.2 or 1.3, not '%s'\n", optarg);
                return -EINVAL;
            }
            break;
        case 't':
            v = strtol(optarg, &end, 10);
            if (*end != '\0' || v < 1 || v > 3600) {
                fprintf(stderr, "floormta probe: --timeout takes 1..3600 seconds\n");
                return -EINVAL;
            }
            o->timeout_ms = (unsigned)v * 1000;
            break;
        default: return -EINVAL;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "floormta probe: give exactly one HOST[:PORT]\n");
        return -EINVAL;
    }
    o->target = argv[optind];
    if (!o->mx_name) {
        fprintf(stderr, "floormta probe: --name MXNAME is required (the name the receiver's "
                        "certificate must match)\n");
        return -EINVAL;
    }
    return 0;
}

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_done(void *arg, const struct smtp_client *result)
{
    struct probe_run *run = arg;
    run->result = *result;
    run->finished = true;
}

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

static void print_json(const struct probe_opts *o, const char *where, const struct probe_run *run)
{
    const struct smtp_client *c = &run->result;
    char caps[256];
    json_t *root = json_object();
    json_object_set_new(root, "address", json_string(where));
    json_object_set_new(root, "name", json_string(o->mx_name));
    json_object_set_new(root, "floor", json_string(tls_version_name(o->floor)));
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
    json_dumpf(root, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
    json_decref(root);
}

static int run_probe(const struct probe_opts *o, const struct sockaddr_storage *addr,
                     socklen_t addrlen, struct probe_run *run)
{
    struct tls_client_config tcfg = { .min_version = o->floor, .ca_file = o->ca_file };
    struct tls_ctx *tls = NULL;
    struct eng_loop *loop = NULL;
    int rc = tls_ctx_new_client(&tcfg, &tls);
    if (rc < 0) {
        fprintf(stderr, "floormta probe: %s%s%s\n", tls_strerror(rc), o->ca_file ? ": " : "",
                o->ca_file ? o->ca_file : "");
        return rc;
    }
    rc = eng_loop_new(NULL, &loop);
    if (rc < 0) {
        fprintf(stderr, "floormta probe: %s\n", eng_strerror(rc));
        tls_ctx_free(tls);
        return rc;
    }
    char host[256] = "localhost";
    if (!o->helo_name && (gethostname(host, sizeof(host) - 1) < 0 || !host[0]))
        strcpy(host, "localhost");
    struct smtp_session_config scfg = {
        .tls = tls,
        .mx_name = o->mx_name,
        .helo_name = o->helo_name ? o->helo_name : host,
        .connect_timeout_ms = o->timeout_ms,
        .reply_timeout_ms = o->timeout_ms,
        .send_timeout_ms = o->timeout_ms,
    };
    uint64_t start = monotonic_ms();
    rc = smtp_session_start(loop, &scfg, (const struct sockaddr *)addr, addrlen, on_done, run);
    if (rc == 0)
        rc = eng_loop_run(loop);
    run->elapsed_ms = monotonic_ms() - start;
    if (rc < 0)
        fprintf(stderr, "floormta probe: %s\n", eng_describe_error(rc));
    eng_loop_free(loop);
    tls_ctx_free(tls);
    return rc;
}

int eng_cmd_probe(int argc, char **argv)
{
    struct probe_opts o = { 0 };
    /* The probe prints its own report; the decision log line is for -v. */
    eng_log_set_level(ENG_LOG_WARN);
    if (parse_opts(argc, argv, &o) < 0) {
        fprintf(stderr, "(floormta probe --help for usage)\n");
        return 1;
    }
    struct sockaddr_storage addr;
    socklen_t addrlen;
    if (eng_addr_parse(o.target, 25, &addr, &addrlen) < 0) {
        fprintf(stderr, "floormta probe: '%s' is not IP[:PORT] (e.g. 192.0.2.1:25, [::1]:25)\n",
                o.target);
        return 1;
    }
    char where[64];
    eng_addr_format((const struct sockaddr *)&addr, where, sizeof(where));

    struct probe_run run = { 0 };
    if (run_probe(&o, &addr, addrlen, &run) < 0 || !run.finished)
        return 1;
    if (o.json)
        print_json(&o, where, &run);
    else
        print_human(&o, where, &run);
    fflush(stdout);
    switch (run.result.outcome) {
    case SMTPC_OUTCOME_PASS: return 0;
    case SMTPC_OUTCOME_REFUSED: return 2;
    default: return 1;
    }
}
