/*
 * bench/bench_deliver.c — end-to-end delivery throughput: the worker pool
 * (engine/group.h: one worker per CPU, each with its own loop, resolver, TLS session
 * cache, capability cache and connection pool) with a spool on disk, a real dnsmasq on
 * 127.0.0.1 (tests/dns/dnsmasq_fixture.h) and floormta-sink on 127.0.0.2 in profile
 * wildcard (a certificate for *.floormta.test from the test PKI, TLS 1.2-1.3):
 *
 *   deliver.bench.test           MX 10 mx.floormta.test       (127.0.0.2)
 *   d0000 .. d0999.bench.test    MX 10 mx0000 .. mx0999.floormta.test (127.0.0.2)
 *
 * One iteration starts a group on the benchmark's spool (kept across iterations, as an
 * engine's is), injects the messages from the benchmark's thread (eng_group_enqueue:
 * durable enqueue included) keeping at most BENCH_WINDOW of them queued at a time, and
 * waits until every one is delivered and removed. Every delivery is over verified TLS (the floor:
 * chain, name, dates). Messages are 10 KB, one recipient each.
 *   - bench_deliver_one_domain: 5,000 messages to one domain: one MX host, connections
 *     reused (up to 10 per host, 100 messages each).
 *   - bench_deliver_1000_domains: 3,000 messages over 1,000 domains, each with its own
 *     MX host name: at least 1,000 connections and handshakes per iteration; later
 *     connections to a host resume its TLS session.
 * Rates are per wall-clock second (items = messages); counters: CPU in ms per message
 * of this process (cpu_ms_per_msg: the worker threads, the spool committer and the
 * injecting thread; the sink is a separate process) and of the engine's threads alone
 * (engine_cpu_ms_per_msg: the process minus the injecting thread), and new connections with
 * full / resumed handshakes and reused connections per iteration. FLOORMTA_BENCH_SYNCFS=1 runs the
 * spool with one syncfs per commit round (queue_spool_config.sync_fs).
 */
#define _GNU_SOURCE /* nftw */
#include "bench/bench.h"
#include "engine/capcache.h"
#include "engine/connpool.h"
#include "engine/dns_loop.h"
#include "engine/log.h"
#include "engine/loop.h"
#include "engine/group.h"
#include "engine/worker.h"
#include "queue/queue.h"
#include "tests/dns/dnsmasq_fixture.h"
#include "tests/pki/testpki.h"
#include "tls/tls.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_MSG_BYTES  10240
#define BENCH_DOMAIN     "deliver.bench.test"
#define BENCH_MX         "mx.floormta.test"
#define BENCH_TIMEOUT_MS 120000
#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

#define BENCH_NDOMAINS 1000
#define BENCH_WINDOW   1000 /* messages queued and not yet removed, at most */

/* The zone: the one domain, and BENCH_NDOMAINS domains with an MX host each. */
static char *bench_zone(void)
{
    size_t cap = 256 + BENCH_NDOMAINS * 128;
    char *z = malloc(cap);
    if (!z)
        return NULL;
    size_t n = (size_t)snprintf(z, cap,
                                "local-ttl=600\nhost-record=" BENCH_MX ",127.0.0.2\n"
                                "mx-host=" BENCH_DOMAIN "," BENCH_MX ",10\n");
    for (unsigned i = 0; i < BENCH_NDOMAINS && n < cap; i++)
        n += (size_t)snprintf(z + n, cap - n,
                              "host-record=mx%04u.floormta.test,127.0.0.2\n"
                              "mx-host=d%04u.bench.test,mx%04u.floormta.test,10\n",
                              i, i, i);
    return z;
}

static char message[BENCH_MSG_BYTES];

/* ---- the sink ------------------------------------------------------------------------ */

struct bench_sink {
    pid_t pid;
    uint16_t port;
    char out[PATH_MAX];
};

/* Starts floormta-sink (next to this executable) on 127.0.0.2, a port of the kernel's
 * choosing, profile tls1.3; reads the port back from its ready file. 0 or -1. */
static int bench_sink_start(struct bench_sink *k, const char *pki)
{
    char self[1024], exe[PATH_MAX], ready[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return -1;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    snprintf(exe, sizeof(exe), "%s/floormta-sink", self);
    snprintf(ready, sizeof(ready), "%.1000s/sink.ready", pki);
    snprintf(k->out, sizeof(k->out), "%.1000s/sink.out", pki);
    unlink(ready);
    const char *argv[] = { exe,
                           "--pki",
                           pki,
                           "--name",
                           BENCH_MX,
                           "--listen",
                           "127.0.0.2:0=wildcard",
                           "--ready-file",
                           ready,
                           "--log-level",
                           "warn",
                           NULL };
    k->pid = fork();
    if (k->pid < 0)
        return -1;
    if (k->pid == 0) {
        if (!freopen(k->out, "w", stdout) || !freopen("/dev/null", "w", stderr))
            _exit(127);
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 400; i++) {
        FILE *f = fopen(ready, "r");
        if (f) {
            unsigned port = 0;
            int got = fscanf(f, "listening 127.0.0.2:%u", &port);
            fclose(f);
            if (got == 1 && port > 0 && port < 65536) {
                k->port = (uint16_t)port;
                return 0;
            }
        }
        if (waitpid(k->pid, NULL, WNOHANG) == k->pid) {
            k->pid = 0;
            return -1;
        }
        usleep(25 * 1000);
    }
    kill(k->pid, SIGKILL);
    waitpid(k->pid, NULL, 0);
    k->pid = 0;
    return -1;
}

/* Stops the sink by its PID; returns the messages it counted, or -1. */
static long long bench_sink_stop(struct bench_sink *k)
{
    if (k->pid <= 0)
        return -1;
    kill(k->pid, SIGTERM);
    int status = 0;
    waitpid(k->pid, &status, 0);
    k->pid = 0;
    FILE *f = fopen(k->out, "r");
    if (!f)
        return -1;
    char line[512];
    long long messages = -1;
    while (fgets(line, sizeof(line), f)) {
        unsigned long long m;
        if (sscanf(line, "sink: messages=%llu", &m) == 1)
            messages = (long long)m;
    }
    fclose(f);
    return messages;
}

/* ---- helpers ------------------------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* CPU seconds of the calling thread: the injector's share, taken out of the process's
 * total to get the engine's (its workers, the spool committer and their io_uring
 * io-wq workers, which come and go, so they are not counted one by one). */
static double thread_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The folder for the spools: the scratch directory unless it is tmpfs, else /var/tmp. */
static void spool_parent(char *buf, size_t cap)
{
    struct statfs sf;
    const char *scratch = bench_scratch_dir();
    if (statfs(scratch, &sf) == 0 && (unsigned long)sf.f_type != (unsigned long)TMPFS_MAGIC) {
        snprintf(buf, cap, "%s", scratch);
        return;
    }
    char tmpl[] = "/var/tmp/floormta-bench-deliver.XXXXXX";
    if (mkdtemp(tmpl))
        snprintf(buf, cap, "%s", tmpl);
    else
        snprintf(buf, cap, "%s", scratch);
}

/* A 10 KB message: headers, then 78-character lines, all CRLF-terminated. */
static void build_message(void)
{
    size_t n = (size_t)snprintf(message, sizeof(message),
                                "From: bench@sender.floormta.test\r\n"
                                "To: rcpt@" BENCH_DOMAIN "\r\n"
                                "Subject: floormta delivery benchmark\r\n"
                                "Message-ID: <bench@sender.floormta.test>\r\n\r\n");
    while (n < sizeof(message)) {
        size_t left = sizeof(message) - n;
        size_t line = left >= 80 ? 78 : (left >= 3 ? left - 2 : 0);
        for (size_t i = 0; i < line; i++)
            message[n + i] = (char)('a' + (n + i) % 26);
        n += line;
        if (sizeof(message) - n >= 2) {
            message[n++] = '\r';
            message[n++] = '\n';
        } else {
            message[n++] = 'x'; /* never reached with these sizes */
        }
    }
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

struct bench_queued {
    atomic_uint done, failed;
};

/* Runs on the owning worker's thread. */
static void bench_on_queued(void *arg, queue_id_t id, int res)
{
    (void)id;
    struct bench_queued *q = arg;
    atomic_fetch_add(&q->done, 1);
    if (res < 0)
        atomic_fetch_add(&q->failed, 1);
}

/* ---- the rig: started on first use, stopped at exit ------------------------------------- */

struct bench_rig {
    char pki[1024];
    char parent[1024]; /* where the per-iteration spools go */
    bool own_parent;   /* a folder of ours under /var/tmp: removed at exit */
    struct dnsq q;
    struct bench_sink k;
    struct tls_ctx *tls;
    unsigned spools;
};

static struct bench_rig rig;
static int rig_state; /* 0 not yet, 1 running, -1 failed */
static const char *rig_error;

static void bench_rig_stop(void)
{
    long long sunk = bench_sink_stop(&rig.k);
    if (sunk >= 0)
        fprintf(stderr, "bench_deliver: the sink counted %lld messages over every run\n", sunk);
    tls_ctx_free(rig.tls);
    rig.tls = NULL;
    dnsq_stop(&rig.q);
    if (rig.own_parent)
        rm_rf(rig.parent);
    rig.own_parent = false;
}

static struct bench_rig *bench_rig(void)
{
    if (rig_state != 0)
        return rig_state == 1 ? &rig : NULL;
    rig_state = -1;
    struct bench_rig *r = &rig;
    signal(SIGPIPE, SIG_IGN);
    eng_log_set_level(ENG_LOG_WARN);
    build_message();
    snprintf(r->pki, sizeof(r->pki), "%s/deliver-pki", bench_scratch_dir());
    if (!(mkdir(r->pki, 0700) == 0 || errno == EEXIST) || testpki_generate(r->pki, BENCH_MX) != 0) {
        rig_error = "cannot generate the test PKI";
        return NULL;
    }
    spool_parent(r->parent, sizeof(r->parent));
    r->own_parent = strncmp(r->parent, "/var/tmp/", 9) == 0;
    atexit(bench_rig_stop);
    if (dnsq_init(&r->q) < 0) {
        rig_error = "dnsq_init failed";
        return NULL;
    }
    r->q.quiet = true;
    char *zone = bench_zone();
    int rc = zone ? dnsq_start(&r->q, zone) : -1;
    free(zone);
    if (rc < 0) {
        rig_error = "cannot start dnsmasq (/usr/sbin/dnsmasq, package dnsmasq-base)";
        return NULL;
    }
    if (bench_sink_start(&r->k, r->pki) < 0) {
        rig_error = "cannot start floormta-sink on 127.0.0.2 (next to floormta-bench)";
        return NULL;
    }
    char ca[PATH_MAX + 16];
    snprintf(ca, sizeof(ca), "%.1000s/ca.crt", r->pki);
    struct tls_client_config tcfg = { .ca_file = ca };
    if (tls_ctx_new_client(&tcfg, &r->tls) != 0) {
        rig_error = "tls_ctx_new_client failed";
        return NULL;
    }
    rig_state = 1;
    return r;
}

/* ---- the benchmarks ------------------------------------------------------------------ */

/* What one iteration measured. */
struct bench_run {
    double cpu;        /* seconds of this process */
    double engine_cpu; /* ... of which not the injecting thread's */
    struct eng_worker_stats s;
};

/* One iteration: a group on a fresh spool, nmsgs messages injected round-robin over
 * ndomains domains (0: the one domain), waited for until all are removed. The group's
 * start and stop are outside the timing. Returns NULL or an error message. */
static const char *bench_run_once(struct bench_state *st, struct bench_rig *r, unsigned ndomains,
                                  unsigned nmsgs, struct queue_envelope *env, struct bench_run *out)
{
    static char msg[256];
    bench_pause(st);
    /* One spool per benchmark, kept across its iterations like an engine's: removed
     * files are recycled for new messages (mass deletion would make this ext4's
     * inode allocator crawl for the next minute: see the README). */
    char dir[PATH_MAX + 32];
    snprintf(dir, sizeof(dir), "%.1000s/deliver-spool-%u", r->parent, ndomains);
    struct queue_spool *spool = NULL;
    struct eng_group *g = NULL;
    struct queue_spool_config scfg = { .dir = dir,
                                       .min_free_bytes = 1,
                                       .sync_fs = getenv("FLOORMTA_BENCH_SYNCFS") != NULL };
    if (queue_spool_open(&scfg, &spool) != 0) {
        bench_resume(st);
        return "queue_spool_open failed";
    }
    struct eng_group_config gcfg = {
        .spool = spool,
        .tls = r->tls,
        .dns = { .servers = r->q.server, .timeout_ms = 1000, .tries = 4 },
        .worker = { .helo_name = "client.floormta.test",
                    .port = r->k.port,
                    .connect_timeout_ms = 5000,
                    .reply_timeout_ms = 5000 },
    };
    if (eng_group_new(&gcfg, &g) != 0 || eng_group_start(g) != 0) {
        eng_group_stop_and_free(g);
        queue_spool_close(spool);
        rm_rf(dir);
        bench_resume(st);
        return "cannot start the worker group";
    }
    double cpu0 = cpu_seconds(), icpu0 = thread_cpu_seconds();
    bench_resume(st);

    struct bench_queued qd = { 0 };
    const char *err = NULL;
    uint64_t end = now_ms() + BENCH_TIMEOUT_MS;
    struct eng_group_stats gs;
    for (unsigned i = 0; i < nmsgs && !err; i++) {
        /* The injector keeps at most BENCH_WINDOW messages in the queue, as a steady
         * stream does (rather than one burst of the whole run). */
        for (;;) {
            eng_group_stats(g, &gs);
            if (i < gs.total.removed + BENCH_WINDOW || now_ms() >= end)
                break;
            usleep(500);
        }
        if (ndomains)
            snprintf(env->domain, sizeof(env->domain), "d%04u.bench.test", i % ndomains);
        snprintf(env->rcpts[0].addr, sizeof(env->rcpts[0].addr), "r%u@%s", i, env->domain);
        int rc;
        while ((rc = eng_group_enqueue(g, env, message, sizeof(message), bench_on_queued, &qd)) ==
                       -EAGAIN &&
               now_ms() < end)
            usleep(200); /* back-pressure: the owner's inbox is full */
        if (rc != 0)
            err = "eng_group_enqueue failed";
    }
    eng_group_stats(g, &gs);
    while (!err && gs.total.removed < nmsgs && now_ms() < end) {
        usleep(2000);
        eng_group_stats(g, &gs);
        if (gs.total.bounced > 0 || gs.total.deferred > 0 || gs.total.errors > 0 ||
            atomic_load(&qd.failed) > 0)
            break;
    }

    bench_pause(st);
    out->cpu = cpu_seconds() - cpu0;
    out->engine_cpu = out->cpu - (thread_cpu_seconds() - icpu0);
    out->s = gs.total;
    eng_group_stop_and_free(g);
    queue_spool_close(spool);
    bench_resume(st);
    if (!err && (gs.total.delivered < nmsgs || gs.total.removed < nmsgs)) {
        snprintf(msg, sizeof(msg),
                 "not all delivered: delivered=%llu removed=%llu deferred=%llu bounced=%llu "
                 "errors=%llu enqueue-failures=%u",
                 (unsigned long long)gs.total.delivered, (unsigned long long)gs.total.removed,
                 (unsigned long long)gs.total.deferred, (unsigned long long)gs.total.bounced,
                 (unsigned long long)gs.total.errors, atomic_load(&qd.failed));
        err = msg;
    }
    return err;
}

static void bench_deliver(struct bench_state *st, unsigned ndomains, unsigned nmsgs)
{
    struct bench_rig *r = bench_rig();
    if (!r) {
        bench_fail(st, rig_error ? rig_error : "set-up failed");
        return;
    }
    struct queue_envelope *env = queue_envelope_alloc(1);
    if (!env) {
        bench_fail(st, "out of memory");
        return;
    }
    snprintf(env->sender, sizeof(env->sender), "bench@sender.floormta.test");
    snprintf(env->domain, sizeof(env->domain), BENCH_DOMAIN);
    const char *err = NULL;
    int64_t items = 0;
    double cpu = 0, engine_cpu = 0;
    struct eng_worker_stats sum = { 0 };
    unsigned runs = 0;
    while (!err && bench_next(st)) {
        struct bench_run run;
        err = bench_run_once(st, r, ndomains, nmsgs, env, &run);
        if (err)
            break;
        items += nmsgs;
        cpu += run.cpu;
        engine_cpu += run.engine_cpu;
        sum.conns_new += run.s.conns_new;
        sum.conns_reused += run.s.conns_reused;
        sum.tls_full += run.s.tls_full;
        sum.tls_resumed += run.s.tls_resumed;
        runs++;
    }
    queue_envelope_free(env);
    bench_set_items(st, items);
    bench_set_bytes(st, items * (int64_t)sizeof(message));
    if (runs > 0) {
        bench_set_counter(st, "cpu_ms_per_msg", cpu * 1000.0 / (double)items);
        bench_set_counter(st, "engine_cpu_ms_per_msg", engine_cpu * 1000.0 / (double)items);
        bench_set_counter(st, "full_hs", (double)sum.tls_full / runs);
        bench_set_counter(st, "resumed_hs", (double)sum.tls_resumed / runs);
        bench_set_counter(st, "reused", (double)sum.conns_reused / runs);
    }
    if (err)
        bench_fail(st, err);
}

static void bench_deliver_one_domain(struct bench_state *st)
{
    bench_deliver(st, 0, 5000);
}
BENCH_REGISTER_REAL_TIME(bench_deliver_one_domain)

static void bench_deliver_1000_domains(struct bench_state *st)
{
    bench_deliver(st, BENCH_NDOMAINS, 3000);
}
BENCH_REGISTER_REAL_TIME(bench_deliver_1000_domains)
