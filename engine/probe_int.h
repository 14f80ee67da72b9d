/*
 * engine/probe_int.h — private to engine/probe*.c: `floormta probe`'s options and
 * results, shared by the command line (probe.c), the MX mode (probe_mx.c) and the
 * report printers (probe_output.c). Nothing else includes this header.
 */
#ifndef FLOORMTA_ENGINE_PROBE_INT_H
#define FLOORMTA_ENGINE_PROBE_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "dns/dns.h"
#include "engine/smtp_client.h"

#define PROBE_DNS_SERVERS_MAX 512

struct probe_opts {
    const char *target;  /* IP[:PORT] or a domain */
    const char *mx_name; /* --name: required for IP[:PORT]; overrides the MX names */
    const char *ca_file;
    const char *helo_name;
    char dns_servers[PROBE_DNS_SERVERS_MAX]; /* --dns joined with ','; "" = system */
    uint16_t port;                           /* --port, default 25 */
    uint16_t floor;
    unsigned timeout_ms;
    bool json;
};

/* One finished (or never started) SMTP probe. */
struct probe_run {
    struct smtp_client result;
    bool finished;
    uint64_t elapsed_ms;
};

/* One MX host address in the MX mode. */
struct probe_row {
    uint16_t pref;
    char mx[DNS_NAME_MAX + 1];   /* the MX host name (what the certificate must match) */
    char name[DNS_NAME_MAX + 1]; /* the name actually checked (--name overrides) */
    char where[64];              /* "192.0.2.1:25" */
    uint64_t start_ms;           /* when its session started (eng_probe_now_ms) */
    struct probe_run run;        /* a session that could not start is an ERROR row */
};

/* The MX mode's whole answer. rows is owned (free with free()). */
struct probe_mx_report {
    struct dns_mx_result dns;
    int dns_err; /* eng_dns_new / eng_dns_lookup_mx failed: the code; else 0 */
    struct probe_row *rows;
    size_t nrows;
    uint64_t elapsed_ms;
};

/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t eng_probe_now_ms(void);

/* Resolves o->target's MX set and probes every address, concurrently on one loop.
 * Fills *rep (free rep->rows). Returns 0, or a negative code when the TLS context or
 * the loop cannot be set up (already reported on stderr). o is borrowed. */
int eng_probe_mx_run(const struct probe_opts *o, struct probe_mx_report *rep);

/* The single-host report, as text or as one JSON object. Borrowed arguments. */
void eng_probe_print_host(const struct probe_opts *o, const char *where,
                          const struct probe_run *run);
/* The JSON object for one probed address (the single-host shape): a new reference. */
json_t *eng_probe_json_host(const char *name, const char *where, uint16_t floor,
                            const struct probe_run *run);

/* The MX mode's report: a table (one row per address) or one JSON object. */
void eng_probe_print_mx(const struct probe_opts *o, const struct probe_mx_report *rep);

#endif /* FLOORMTA_ENGINE_PROBE_INT_H */
