/*
 * bench/bench_deliver.c — end-to-end delivery throughput: the worker (engine/worker.h)
 * with a spool on disk, a real dnsmasq on 127.0.0.1 (tests/dns/dnsmasq_fixture.h) and
 * floormta-sink on 127.0.0.2 in profile tls1.3 (valid certificate from the test PKI).
 *
 *   deliver.bench.test  MX 10 mx.floormta.test (127.0.0.2)
 *
 * One iteration enqueues BENCH_MSGS messages of BENCH_MSG_BYTES bytes (one recipient
 * each) to that domain with eng_worker_enqueue on a fresh spool, then runs the loop
 * until the worker reports every one delivered and removed. items = messages, bytes =
 * message bytes, rates per wall-clock second. The spool set-up and the worker's
 * shutdown are outside the timing.
 *
 * There is no connection reuse yet: every message opens its own TCP connection and does
 * a full verified TLS 1.3 handshake (no session resumption). That is what this baseline
 * measures. The sink shares the machine, so the figure is a floor for the client side.
 *
 * Also printed once on stderr: the benchmark process's CPU seconds (user + system,
 * getrusage: the engine's loop thread plus the spool's committer thread; the sink is a
 * separate process) per 1,000 messages, and the messages the sink counted.
 */
#define _GNU_SOURCE /* nftw */
#include "bench/bench.h"
#include "engine/capcache.h"
#include "engine/connpool.h"
#include "engine/dns_loop.h"
#include "engine/log.h"
#include "engine/loop.h"
#include "engine/worker.h"
#include "queue/queue.h"
#include "tests/dns/dnsmasq_fixture.h"
#include "tests/pki/testpki.h"
#include "tls/tls.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
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

#define BENCH_MSGS       1000
#define BENCH_MSG_BYTES  10240
#define BENCH_DOMAIN     "deliver.bench.test"
#define BENCH_MX         "mx.floormta.test"
#define BENCH_TIMEOUT_MS 120000
#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

static const char bench_zone[] = "local-ttl=600\n"
                                 "host-record=" BENCH_MX ",127.0.0.2\n"
                                 "mx-host=" BENCH_DOMAIN "," BENCH_MX ",10\n";

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
                           "127.0.0.2:0=tls1.3",
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
    unsigned done, failed;
};

static void bench_on_queued(void *arg, queue_id_t id, int res)
{
    (void)id;
    struct bench_queued *q = arg;
    q->done++;
    q->failed += res < 0;
}

/* ---- the rig: started on first use, stopped at exit ------------------------------------- */

struct bench_rig {
    char pki[1024];
    char parent[1024]; /* where the per-iteration spools go */
    bool own_parent;   /* a folder of ours under /var/tmp: removed at exit */
    struct dnsq q;
    struct bench_sink k;
    struct tls_ctx *tls;
    struct eng_loop *loop;
    struct eng_dns *dns;
    struct eng_capcache *cap;
    struct tls_cache *tcache;
    struct eng_connpool *pool;
    unsigned spools;
    int64_t messages; /* delivered over every run */
    double cpu;       /* CPU seconds of this process over those deliveries */
};

static struct bench_rig rig;
static int rig_state; /* 0 not yet, 1 running, -1 failed */
static const char *rig_error;

static void bench_rig_stop(void)
{
    if (rig.messages > 0)
        fprintf(stderr,
                "bench_deliver_one_domain: %.3f CPU s per 1,000 messages (this process: "
                "engine + spool committer; over %lld messages)\n",
                rig.cpu * 1000.0 / (double)rig.messages, (long long)rig.messages);
    long long sunk = bench_sink_stop(&rig.k);
    if (sunk >= 0)
        fprintf(stderr, "bench_deliver_one_domain: the sink counted %lld messages\n", sunk);
    eng_connpool_free(rig.pool); /* QUITs the idle connections */
    rig.pool = NULL;
    eng_capcache_free(rig.cap);
    rig.cap = NULL;
    tls_cache_free(rig.tcache);
    rig.tcache = NULL;
    eng_dns_free(rig.dns);
    rig.dns = NULL;
    if (rig.loop)
        eng_loop_run_once(rig.loop, 0); /* release the resolver's handles */
    eng_loop_free(rig.loop);
    rig.loop = NULL;
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
    if (dnsq_start(&r->q, bench_zone) < 0) {
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
    struct eng_loop_config lcfg = { .entries = 4096 };
    if (eng_loop_new(&lcfg, &r->loop) < 0) {
        rig_error = "io_uring is not available";
        return NULL;
    }
    struct dns_config dcfg = { .servers = r->q.server, .timeout_ms = 1000, .tries = 4 };
    struct eng_connpool_config pcfg = { .loop = r->loop };
    if (eng_dns_new(r->loop, &dcfg, &r->dns) < 0 || eng_capcache_new(NULL, &r->cap) < 0 ||
        tls_cache_new(1024, &r->tcache) < 0 || eng_connpool_new(&pcfg, &r->pool) < 0) {
        rig_error = "eng_dns_new, eng_capcache_new, tls_cache_new or eng_connpool_new failed";
        return NULL;
    }
    rig_state = 1;
    return r;
}

/* ---- the benchmark ------------------------------------------------------------------- */

static void bench_deliver_one_domain(struct bench_state *st)
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

    static char msg[192];
    const char *err = NULL;
    int64_t items = 0;
    while (bench_next(st)) {
        /* Set-up outside the timing: a fresh spool on disk and a started worker. */
        bench_pause(st);
        char dir[PATH_MAX + 32];
        snprintf(dir, sizeof(dir), "%.1000s/deliver-spool-%u", r->parent, r->spools++);
        struct queue_spool *spool = NULL;
        struct eng_worker *w = NULL;
        struct queue_spool_config scfg = { .dir = dir,
                                           .min_free_bytes = 1,
                                           .sync_fs = getenv("FLOORMTA_BENCH_SYNCFS") != NULL };
        if (queue_spool_open(&scfg, &spool) != 0) {
            err = "queue_spool_open failed";
            bench_resume(st);
            break;
        }
        struct eng_worker_config wcfg = {
            .loop = r->loop,
            .spool = spool,
            .dns = r->dns,
            .tls = r->tls,
            .capcache = r->cap,
            .tls_cache = r->tcache,
            .pool = r->pool,
            .helo_name = "client.floormta.test",
            .port = r->k.port,
            .connect_timeout_ms = 5000,
            .reply_timeout_ms = 5000,
        };
        if (eng_worker_new(&wcfg, &w) != 0 || eng_worker_start(w) != 0) {
            eng_worker_free(w);
            queue_spool_close(spool);
            rm_rf(dir);
            err = "cannot start the worker";
            bench_resume(st);
            break;
        }
        double cpu0 = cpu_seconds();
        bench_resume(st);

        struct bench_queued qd = { 0 };
        unsigned submitted = 0;
        for (unsigned i = 0; i < BENCH_MSGS; i++) {
            snprintf(env->rcpts[0].addr, sizeof(env->rcpts[0].addr), "r%u@" BENCH_DOMAIN, i);
            if (eng_worker_enqueue(w, env, message, sizeof(message), bench_on_queued, &qd) == 0)
                submitted++;
        }
        struct eng_worker_stats s;
        eng_worker_stats(w, &s);
        uint64_t end = now_ms() + BENCH_TIMEOUT_MS;
        while ((s.delivered < BENCH_MSGS || s.removed < BENCH_MSGS) && now_ms() < end) {
            if (eng_loop_run_once(r->loop, 100) < 0)
                break;
            eng_worker_stats(w, &s);
            if (s.bounced > 0 || s.deferred > 0 || s.errors > 0 || qd.failed > 0)
                break;
        }

        bench_pause(st);
        double cpu = cpu_seconds() - cpu0;
        eng_worker_free(w); /* drives the loop until its port and attempts are done */
        queue_spool_close(spool);
        rm_rf(dir);
        bench_resume(st);
        if (submitted != BENCH_MSGS || qd.failed > 0) {
            err = "eng_worker_enqueue failed";
            break;
        }
        if (s.delivered < BENCH_MSGS || s.removed < BENCH_MSGS) {
            snprintf(msg, sizeof(msg),
                     "not all delivered: delivered=%llu removed=%llu deferred=%llu "
                     "bounced=%llu errors=%llu",
                     (unsigned long long)s.delivered, (unsigned long long)s.removed,
                     (unsigned long long)s.deferred, (unsigned long long)s.bounced,
                     (unsigned long long)s.errors);
            err = msg;
            break;
        }
        items += BENCH_MSGS;
        r->messages += BENCH_MSGS;
        r->cpu += cpu;
    }
    queue_envelope_free(env);
    bench_set_items(st, items);
    bench_set_bytes(st, items * (int64_t)sizeof(message));
    if (err)
        bench_fail(st, err);
}
BENCH_REGISTER_REAL_TIME(bench_deliver_one_domain)
