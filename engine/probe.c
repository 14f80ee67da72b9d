/*
 * engine/probe.c — `floormta probe`: its command line, and the single-host mode:
 * connect to one receiving SMTP server, negotiate STARTTLS and judge it against the
 * floor, with the same state machine, loop and tls/ code that deliveries use. A
 * domain instead of an address selects the MX mode (probe_mx.c); the reports are
 * printed by probe_output.c.
 */
#include <errno.h>
#include <getopt.h>
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
#include "engine/probe_int.h"
#include "engine/smtp_session.h"

static void probe_usage(FILE *f)
{
    fprintf(f, "usage: floormta probe HOST[:PORT] --name MXNAME [options]\n"
               "       floormta probe DOMAIN [--dns IP[:PORT]]... [--port N] [options]\n"
               "\n"
               "Connects to the SMTP server at HOST (an IP address; PORT defaults to 25), reads\n"
               "the greeting, sends EHLO, requires STARTTLS, performs the TLS handshake and\n"
               "judges it against the floor: TLS version, certificate chain, host name MXNAME,\n"
               "dates, key and signature strength. Then EHLO again over TLS and QUIT.\n"
               "\n"
               "With a DOMAIN instead of an address, resolves its MX set (RFC 5321 5.1: MX\n"
               "hosts by preference, or the domain itself when it has no MX; a null MX means\n"
               "no mail) and probes every address of every MX host at once, each against its\n"
               "own MX host name. Prints one row per MX host address.\n"
               "\n"
               "options:\n"
               "  --name MXNAME     the name the certificate must match (required with HOST;\n"
               "                    with DOMAIN it replaces every MX host's name)\n"
               "  --dns IP[:PORT]   DNS server for DOMAIN (repeatable or comma-separated;\n"
               "                    default: /etc/resolv.conf)\n"
               "  --port N          SMTP port (default 25; HOST:PORT wins over it)\n"
               "  --ca FILE         trusted roots (PEM); default: the system bundle\n"
               "  --floor 1.2|1.3   minimum TLS version (default 1.2)\n"
               "  --helo NAME       our EHLO name (default: this host's name)\n"
               "  --timeout SEC     connect and per-reply timeout (default 30)\n"
               "  --json            print one JSON object instead of the summary\n"
               "  -v, --verbose     log every protocol step to stderr\n"
               "\n"
               "exit status, HOST: 0 meets the floor, 2 refused by the floor, 1 error\n"
               "             DOMAIN: 0 at least one MX host address meets the floor, 2 none\n"
               "             does (refused or unreachable), 1 DNS failure (nxdomain, null_mx,\n"
               "             no_address, servfail, timeout, ...) or a bad command line\n");
}

/* Appends one --dns value (itself possibly a comma-separated list) to o->dns_servers. */
static int add_dns(struct probe_opts *o, const char *arg)
{
    size_t used = strlen(o->dns_servers);
    int n = snprintf(o->dns_servers + used, sizeof(o->dns_servers) - used, "%s%s", used ? "," : "",
                     arg);
    if (!*arg || n < 0 || (size_t)n >= sizeof(o->dns_servers) - used) {
        fprintf(stderr, "floormta probe: --dns: empty or too many servers\n");
        return -EINVAL;
    }
    return 0;
}

static int parse_number(const char *opt, const char *arg, long min, long max, long *out)
{
    char *end = NULL;
    long v = strtol(arg, &end, 10);
    if (end == arg || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "floormta probe: %s takes %ld..%ld\n", opt, min, max);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

static int parse_opts(int argc, char **argv, struct probe_opts *o)
{
    static const struct option longopts[] = {
        { "name", required_argument, NULL, 'n' },
        { "ca", required_argument, NULL, 'c' },
        { "floor", required_argument, NULL, 'f' },
        { "helo", required_argument, NULL, 'H' },
        { "timeout", required_argument, NULL, 't' },
        { "dns", required_argument, NULL, 'd' },
        { "port", required_argument, NULL, 'p' },
        { "json", no_argument, NULL, 'j' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    o->floor = TLS_VERSION_1_2;
    o->timeout_ms = 30000;
    o->port = 25;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
        long v;
        switch (c) {
        case 'n': o->mx_name = optarg; break;
        case 'c': o->ca_file = optarg; break;
        case 'H': o->helo_name = optarg; break;
        case 'j': o->json = true; break;
        case 'v': eng_log_set_level(ENG_LOG_DEBUG); break;
        case 'h': probe_usage(stdout); exit(0);
        case 'd':
            if (add_dns(o, optarg) < 0)
                return -EINVAL;
            break;
        case 'p':
            if (parse_number("--port", optarg, 1, 65535, &v) < 0)
                return -EINVAL;
            o->port = (uint16_t)v;
            break;
        case 'f':
            if (tls_version_parse(optarg, &o->floor) < 0 ||
                (o->floor != TLS_VERSION_1_2 && o->floor != TLS_VERSION_1_3)) {
                fprintf(stderr, "floormta probe: --floor must be 1.2 or 1.3, not '%s'\n", optarg);
                return -EINVAL;
            }
            break;
        case 't':
            if (parse_number("--timeout", optarg, 1, 3600, &v) < 0)
                return -EINVAL;
            o->timeout_ms = (unsigned)v * 1000;
            break;
        default: return -EINVAL;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "floormta probe: give exactly one HOST[:PORT] or DOMAIN\n");
        return -EINVAL;
    }
    o->target = argv[optind];
    return 0;
}

uint64_t eng_probe_now_ms(void)
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
    uint64_t start = eng_probe_now_ms();
    rc = smtp_session_start(loop, &scfg, (const struct sockaddr *)addr, addrlen, on_done, run);
    if (rc == 0)
        rc = eng_loop_run(loop);
    run->elapsed_ms = eng_probe_now_ms() - start;
    if (rc < 0)
        fprintf(stderr, "floormta probe: %s\n", eng_describe_error(rc));
    eng_loop_free(loop);
    tls_ctx_free(tls);
    return rc;
}

/* A domain as the MX mode takes it: at least two labels, letters, digits, '-', '.'
 * and '_' only (dns/ checks the rest). A single label is far more often a mistyped
 * address than a mail domain, and would go to the search list of resolv.conf. */
static bool looks_like_domain(const char *s)
{
    if (!strchr(s, '.') || s[0] == '.')
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '.' || *p == '_'))
            return false;
    return true;
}

static int probe_one_host(struct probe_opts *o, const struct sockaddr_storage *addr,
                          socklen_t addrlen)
{
    if (!o->mx_name) {
        fprintf(stderr, "floormta probe: --name MXNAME is required (the name the receiver's "
                        "certificate must match)\n");
        return 1;
    }
    if (o->dns_servers[0])
        fprintf(stderr, "floormta probe: --dns is ignored for an address\n");
    char where[64];
    eng_addr_format((const struct sockaddr *)addr, where, sizeof(where));

    struct probe_run run = { 0 };
    if (run_probe(o, addr, addrlen, &run) < 0 || !run.finished)
        return 1;
    eng_probe_print_host(o, where, &run);
    fflush(stdout);
    switch (run.result.outcome) {
    case SMTPC_OUTCOME_PASS: return 0;
    case SMTPC_OUTCOME_REFUSED: return 2;
    default: return 1;
    }
}

static int probe_domain(const struct probe_opts *o)
{
    struct probe_mx_report rep;
    if (eng_probe_mx_run(o, &rep) < 0)
        return 1;
    eng_probe_print_mx(o, &rep);
    fflush(stdout);
    int rc = 1; /* no row: the DNS said where not to go, or could not say */
    for (size_t i = 0; i < rep.nrows; i++) {
        rc = 2;
        if (rep.rows[i].run.result.outcome == SMTPC_OUTCOME_PASS) {
            rc = 0;
            break;
        }
    }
    free(rep.rows);
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
    if (eng_addr_parse(o.target, o.port, &addr, &addrlen) == 0)
        return probe_one_host(&o, &addr, addrlen);
    if (looks_like_domain(o.target))
        return probe_domain(&o);
    fprintf(stderr,
            "floormta probe: '%s' is neither IP[:PORT] (e.g. 192.0.2.1:25, [::1]:25) nor a "
            "domain (e.g. example.com)\n",
            o.target);
    return 1;
}
