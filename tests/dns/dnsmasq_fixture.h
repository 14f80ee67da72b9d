/*
 * tests/dns/dnsmasq_fixture.h — a real DNS server for the live DNS tests and the DNS
 * benchmark: dnsmasq on 127.0.0.1 with a zone the test writes, started and stopped by
 * PID, its query log readable so tests can count the queries the resolver really sent.
 *
 * dnsmasq runs authoritative-style for the zone test. (--local=/test/): it answers from
 * its configuration (--mx-host, --host-record, --dns-rr, ...) and says NXDOMAIN for
 * the rest. A SERVFAIL responder (a forked child answering every query with SERVFAIL)
 * can stand behind a --server=/zone/127.0.0.1#PORT line, because dnsmasq itself never
 * invents a SERVFAIL.
 */
#ifndef FLOORMTA_TESTS_DNSMASQ_FIXTURE_H
#define FLOORMTA_TESTS_DNSMASQ_FIXTURE_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct dnsq {
    pid_t pid;
    uint16_t port;
    pid_t servfail_pid;
    uint16_t servfail_port;
    unsigned syncs;
    bool quiet;   /* set before dnsq_start: no --log-queries (dnsmasq is several times
                   * faster without it; dnsq_count then counts nothing) */
    char dir[64]; /* scratch directory (/tmp/...): zone.conf, dnsmasq.log, dnsmasq.pid */
    char log[96];
    char server[64]; /* "127.0.0.1:PORT", for struct dns_config.servers */
};

/* Prepares q and its scratch directory. Returns 0 or -errno. */
int dnsq_init(struct dnsq *q);

/* Forks the SERVFAIL responder (once) and returns its UDP port on 127.0.0.1, for a
 * "server=/zone/127.0.0.1#PORT" zone line written before dnsq_start. 0 on failure. */
uint16_t dnsq_servfail_port(struct dnsq *q);

/* Writes zone (dnsmasq options without their "--", one per line; borrowed) to the
 * scratch directory and starts dnsmasq on 127.0.0.1 at a random high port (another
 * one if that port is taken), then waits until it answers. Returns 0, or a negative
 * code with the reason printed on stderr (dnsmasq missing is an error, not a skip). */
int dnsq_start(struct dnsq *q, const char *zone);

/* Stops dnsmasq and the SERVFAIL responder (by PID) and removes the scratch directory.
 * Safe on a q that never started. */
void dnsq_stop(struct dnsq *q);

/* Makes sure dnsmasq has logged every query it received so far (it sends itself a
 * marker query and waits for its log line), then counts the log lines that contain
 * needle, e.g. "query[MX] multi.test ". Returns the count, or -1 on a timeout. */
int dnsq_count(struct dnsq *q, const char *needle);

#endif /* FLOORMTA_TESTS_DNSMASQ_FIXTURE_H */
