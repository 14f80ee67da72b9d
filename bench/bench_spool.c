/*
 * bench/bench_spool.c — what durability costs: messages/s through one port with 256
 * requests in flight, with group commit and without (one sync round per message), on
 * the real disk (never tmpfs: fsync must cost what it costs); the same with one syncfs
 * per round instead of fdatasync per file; and recovery of a spool of 1,000,000 small
 * messages, each added to the scheduler's index, with the RSS that takes.
 *
 * Enqueue runs write 1 KB and 100 KB messages (2,000 and 500 per iteration). The removal
 * run removes 2,000 queued 1 KB messages (queued outside the timing); the interleaved run
 * is the delivery engine's steady state: every message is enqueued and, once durable,
 * removed (a finished message), 256 requests in flight, 2,000 messages timed after as
 * many untimed ones have warmed the spool up. Wall-clock
 * rates (BENCH_REGISTER_REAL_TIME): the committer thread and the disk do the work. The
 * million-message recovery is opt-in: FLOORMTA_BENCH_SPOOL_1M=1 for the million-message spool
 * (built once under /var/tmp/floormta-bench-1m and kept for the next runs;
 * FLOORMTA_BENCH_SPOOL_1M=clean removes it afterwards).
 */
#define _GNU_SOURCE
#include "bench/bench.h"
#include "queue/queue_int.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define INFLIGHT     256
#define CONTENT_SIZE 2048           /* the 1M spool's messages */
#define CONTENT_MAX  (100u * 1024u) /* the largest enqueue benchmark's */
#define TMPFS_MAGIC  0x01021994
#define SPOOL_1M     "/var/tmp/floormta-bench-1m"
#define COUNT_1M     1000000u

/* A directory on a real disk for a fresh spool (tmpfs would make fsync free). */
static const char *disk_dir(void)
{
    static char dir[256];
    if (dir[0] == '\0') {
        struct statfs fs;
        const char *base = bench_scratch_dir();
        if (statfs(base, &fs) != 0 || fs.f_type == TMPFS_MAGIC)
            base = "/var/tmp";
        snprintf(dir, sizeof(dir), "%s/spool-bench", base);
    }
    return dir;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 64, FTW_DEPTH | FTW_PHYS);
}

struct driver {
    struct queue_port *port;
    struct queue_envelope *env;
    char content[CONTENT_MAX];
    size_t size; /* bytes of content each message carries */
    uint64_t done, failed;
    queue_id_t *ids; /* enqueued ids (remove runs), nids of them */
    size_t nids, idcap;
    uint64_t removed, inflight; /* the interleaved run's */
};

static void on_done(void *arg, queue_id_t id, int res)
{
    (void)id;
    struct driver *d = arg;
    d->done++;
    d->failed += res != 0;
}

/* Enqueues n messages keeping INFLIGHT in flight. Returns 0 or -1. */
static int pump(struct driver *d, uint64_t n)
{
    uint64_t sent = 0, start = d->done;
    while (d->done - start < n) {
        while (sent < n && sent - (d->done - start) < INFLIGHT) {
            if (queue_port_enqueue(d->port, d->env, d->content, d->size, on_done, d) != 0)
                return -1;
            sent++;
        }
        struct pollfd pfd = { .fd = queue_port_fd(d->port), .events = POLLIN };
        if (poll(&pfd, 1, 1000) > 0)
            queue_port_reap(d->port);
    }
    return d->failed ? -1 : 0;
}

/* Records each new id (for a removal run). */
static void on_enqueued_keep(void *arg, queue_id_t id, int res)
{
    struct driver *d = arg;
    on_done(arg, id, res);
    if (res == 0 && d->nids < d->idcap)
        d->ids[d->nids++] = id;
}

/* Enqueues n messages (256 in flight) and keeps their ids in d->ids. Returns 0 or -1. */
static int pump_keep(struct driver *d, uint64_t n)
{
    uint64_t sent = 0, start = d->done;
    while (d->done - start < n) {
        while (sent < n && sent - (d->done - start) < INFLIGHT) {
            if (queue_port_enqueue(d->port, d->env, d->content, d->size, on_enqueued_keep, d) != 0)
                return -1;
            sent++;
        }
        struct pollfd pfd = { .fd = queue_port_fd(d->port), .events = POLLIN };
        if (poll(&pfd, 1, 1000) > 0)
            queue_port_reap(d->port);
    }
    return d->failed ? -1 : 0;
}

/* Removes every id in d->ids, 256 in flight. Returns 0 or -1. */
static int pump_remove(struct driver *d)
{
    size_t sent = 0;
    uint64_t start = d->done;
    while (d->done - start < d->nids) {
        while (sent < d->nids && sent - (d->done - start) < INFLIGHT) {
            if (queue_port_remove(d->port, d->ids[sent], on_done, d) != 0)
                return -1;
            sent++;
        }
        struct pollfd pfd = { .fd = queue_port_fd(d->port), .events = POLLIN };
        if (poll(&pfd, 1, 1000) > 0)
            queue_port_reap(d->port);
    }
    return d->failed ? -1 : 0;
}

static void on_removed(void *arg, queue_id_t id, int res)
{
    (void)id;
    struct driver *d = arg;
    d->inflight--;
    d->removed++;
    d->failed += res != 0;
}

/* An enqueued message is finished at once: its removal is submitted from its done. */
static void on_enqueued_remove(void *arg, queue_id_t id, int res)
{
    struct driver *d = arg;
    d->inflight--;
    if (res != 0) {
        d->failed++;
        d->removed++; /* nothing to remove: it counts as through */
        return;
    }
    if (queue_port_remove(d->port, id, on_removed, d) != 0) {
        d->failed++;
        d->removed++;
        return;
    }
    d->inflight++;
}

/* Puts n messages through enqueue and removal, INFLIGHT requests of both kinds in
 * flight. Returns 0 or -1. */
static int pump_interleaved(struct driver *d, uint64_t n)
{
    uint64_t sent = 0, start = d->removed;
    while (d->removed - start < n) {
        while (sent < n && d->inflight < INFLIGHT) {
            if (queue_port_enqueue(d->port, d->env, d->content, d->size, on_enqueued_remove, d) !=
                0)
                return -1;
            d->inflight++;
            sent++;
        }
        struct pollfd pfd = { .fd = queue_port_fd(d->port), .events = POLLIN };
        if (poll(&pfd, 1, 1000) > 0)
            queue_port_reap(d->port);
    }
    return d->failed ? -1 : 0;
}

static int driver_open(struct driver *d, struct queue_spool *sp)
{
    memset(d, 0, sizeof(*d));
    d->env = queue_envelope_alloc(1);
    if (d->env == NULL || queue_port_new(sp, &d->port) != 0)
        return -1;
    snprintf(d->env->sender, sizeof(d->env->sender), "bounces@esp.example");
    snprintf(d->env->domain, sizeof(d->env->domain), "example.com");
    snprintf(d->env->rcpts[0].addr, sizeof(d->env->rcpts[0].addr), "someone@example.com");
    d->env->arrival = time(NULL);
    for (size_t i = 0; i < sizeof(d->content); i++)
        d->content[i] = (char)(i % 79 == 78 ? '\n' : 'a' + i % 26);
    d->size = CONTENT_SIZE;
    return 0;
}

static void driver_close(struct driver *d)
{
    free(d->ids);
    queue_port_free(d->port);
    queue_envelope_free(d->env);
}

static void run_enqueue(struct bench_state *st, uint64_t n, size_t size, bool group,
                        bool use_syncfs)
{
    uint64_t total = 0;
    while (bench_next(st)) {
        bench_pause(st);
        rm_rf(disk_dir());
        struct queue_spool_config cfg = { .dir = disk_dir(), .no_group_commit = !group };
        struct queue_spool *sp;
        static struct driver d;
        if (queue_spool_open(&cfg, &sp) != 0 || driver_open(&d, sp) != 0) {
            bench_fail(st, "cannot open the spool");
            return;
        }
        d.size = size;
        sp->use_syncfs = use_syncfs;
        bench_resume(st);
        int rc = pump(&d, n);
        bench_pause(st);
        queue_spool_close(sp);
        driver_close(&d);
        rm_rf(disk_dir());
        bench_resume(st);
        if (rc != 0) {
            bench_fail(st, "enqueue failed");
            return;
        }
        total += n;
    }
    bench_set_items(st, (int64_t)total);
    bench_set_bytes(st, (int64_t)(total * size));
}

static void bench_spool_enqueue_1k_group(struct bench_state *st)
{
    run_enqueue(st, 2000, 1024, true, false);
}
BENCH_REGISTER_REAL_TIME(bench_spool_enqueue_1k_group)

static void bench_spool_enqueue_1k_nogroup(struct bench_state *st)
{
    run_enqueue(st, 2000, 1024, false, false);
}
BENCH_REGISTER_REAL_TIME(bench_spool_enqueue_1k_nogroup)

/* The alternative group commit: one syncfs per round instead of fdatasync per file. */
static void bench_spool_enqueue_1k_group_syncfs(struct bench_state *st)
{
    run_enqueue(st, 2000, 1024, true, true);
}
BENCH_REGISTER_REAL_TIME(bench_spool_enqueue_1k_group_syncfs)

static void bench_spool_enqueue_100k_group(struct bench_state *st)
{
    run_enqueue(st, 500, 100 * 1024, true, false);
}
BENCH_REGISTER_REAL_TIME(bench_spool_enqueue_100k_group)

static void bench_spool_enqueue_100k_nogroup(struct bench_state *st)
{
    run_enqueue(st, 500, 100 * 1024, false, false);
}
BENCH_REGISTER_REAL_TIME(bench_spool_enqueue_100k_nogroup)

enum run_kind { RUN_REMOVE, RUN_INTERLEAVED };

static void run_churn(struct bench_state *st, enum run_kind kind, uint64_t n, bool use_syncfs)
{
    uint64_t total = 0;
    while (bench_next(st)) {
        bench_pause(st);
        rm_rf(disk_dir());
        struct queue_spool_config cfg = { .dir = disk_dir(), .sync_fs = use_syncfs };
        struct queue_spool *sp;
        static struct driver d;
        if (queue_spool_open(&cfg, &sp) != 0 || driver_open(&d, sp) != 0) {
            bench_fail(st, "cannot open the spool");
            return;
        }
        d.size = 1024;
        int rc;
        if (kind == RUN_REMOVE) {
            d.idcap = n;
            if ((d.ids = malloc(n * sizeof(*d.ids))) == NULL || pump_keep(&d, n) != 0) {
                bench_fail(st, "cannot fill the spool");
                return;
            }
            bench_resume(st);
            rc = pump_remove(&d);
        } else {
            if (pump_interleaved(&d, n) != 0) { /* warm-up */
                bench_fail(st, "cannot warm the spool up");
                return;
            }
            bench_resume(st);
            rc = pump_interleaved(&d, n);
        }
        bench_pause(st);
        struct queue_spool_stats ss;
        queue_spool_stats(sp, &ss);
        bench_set_counter(st, "per_round",
                          ss.commits ? (double)(ss.enqueued + ss.removed) / (double)ss.commits : 0);
        queue_spool_close(sp);
        driver_close(&d);
        rm_rf(disk_dir());
        bench_resume(st);
        if (rc != 0) {
            bench_fail(st, "removal failed");
            return;
        }
        total += n;
    }
    bench_set_items(st, (int64_t)total);
}

static void bench_spool_remove_1k(struct bench_state *st)
{
    run_churn(st, RUN_REMOVE, 2000, false);
}
BENCH_REGISTER_REAL_TIME(bench_spool_remove_1k)

static void bench_spool_remove_1k_syncfs(struct bench_state *st)
{
    run_churn(st, RUN_REMOVE, 2000, true);
}
BENCH_REGISTER_REAL_TIME(bench_spool_remove_1k_syncfs)

/* Items are messages: one enqueue and one removal each. */
static void bench_spool_enqueue_remove_1k(struct bench_state *st)
{
    run_churn(st, RUN_INTERLEAVED, 2000, false);
}
BENCH_REGISTER_REAL_TIME(bench_spool_enqueue_remove_1k)

static void bench_spool_enqueue_remove_1k_syncfs(struct bench_state *st)
{
    run_churn(st, RUN_INTERLEAVED, 2000, true);
}
BENCH_REGISTER_REAL_TIME(bench_spool_enqueue_remove_1k_syncfs)

/* ---- one million ----------------------------------------------------------------------- */

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

static bool opted_1m(struct bench_state *st)
{
    if (getenv("FLOORMTA_BENCH_SPOOL_1M") != NULL)
        return true;
    bench_fail(st, "opt-in (minutes, GBs of disk): FLOORMTA_BENCH_SPOOL_1M=1");
    while (bench_next(st))
        ;
    return false;
}

/* Builds the million-message spool if it is not there yet; the marker file says it is
 * complete. Returns the seconds it took (0 if it was there), or -1. */
static double build_1m(void)
{
    char marker[256];
    snprintf(marker, sizeof(marker), "%s/complete", SPOOL_1M);
    if (access(marker, F_OK) == 0)
        return 0;
    struct statvfs v;
    if (statvfs("/var/tmp", &v) == 0 && (uint64_t)v.f_bavail * v.f_frsize < (16ull << 30)) {
        fprintf(stderr, "bench_spool: less than 16 GiB free under /var/tmp\n");
        return -1;
    }
    rm_rf(SPOOL_1M);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct queue_spool_config cfg = { .dir = SPOOL_1M, .batch_max = 1024 };
    struct queue_spool *sp;
    struct driver d;
    if (queue_spool_open(&cfg, &sp) != 0 || driver_open(&d, sp) != 0)
        return -1;
    int rc = 0;
    for (unsigned i = 0; i < COUNT_1M / 10000 && rc == 0; i++)
        rc = pump(&d, 10000);
    queue_spool_close(sp);
    driver_close(&d);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc != 0)
        return -1;
    close(open(marker, O_WRONLY | O_CREAT, 0600));
    return (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
}

static void bench_spool_create_1m(struct bench_state *st)
{
    if (!opted_1m(st))
        return;
    double secs = 0;
    while (bench_next(st)) {
        bench_pause(st);
        rm_rf(SPOOL_1M); /* measured from scratch */
        bench_resume(st);
        if ((secs = build_1m()) < 0) {
            bench_fail(st, "cannot build the spool");
            return;
        }
    }
    fprintf(stderr, "bench_spool_create_1m: %u messages in %.1f s (%.0f/s)\n", COUNT_1M, secs,
            COUNT_1M / secs);
    bench_set_items(st, COUNT_1M);
    bench_set_bytes(st, (int64_t)COUNT_1M * CONTENT_SIZE);
}
BENCH_REGISTER_REAL_TIME(bench_spool_create_1m)

struct index {
    struct queue_sched *sched;
    int64_t now;
    uint64_t added;
};

static int index_add(void *arg, const struct queue_envelope *env)
{
    struct index *ix = arg;
    unsigned left = 0;
    for (unsigned i = 0; i < env->nrcpts; i++)
        left += env->rcpts[i].state != QUEUE_RCPT_DELIVERED &&
                env->rcpts[i].state != QUEUE_RCPT_BOUNCED;
    struct queue_entry_info info = {
        .id = env->id,
        .domain = env->domain,
        .arrival = env->arrival,
        .next_attempt = env->next_attempt,
        .attempts = env->attempts,
        .nrcpts = (uint16_t)left,
        .content_size = env->content_size,
        .is_dsn = env->is_dsn,
        .delay_warned = env->delay_warned,
    };
    struct queue_entry *e;
    int rc = queue_sched_add(ix->sched, &info, ix->now, &e);
    ix->added += rc == 0;
    return rc;
}

static void run_recover(struct bench_state *st, bool cold)
{
    if (!opted_1m(st))
        return;
    if (build_1m() < 0) {
        bench_fail(st, "cannot build the spool");
        while (bench_next(st))
            ;
        return;
    }
    uint64_t total = 0;
    while (bench_next(st)) {
        bench_pause(st);
        if (cold) { /* a restart after a reboot: nothing in the page cache */
            sync();
            int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
            if (fd < 0 || write(fd, "3\n", 2) != 2) {
                if (fd >= 0)
                    close(fd);
                bench_fail(st, "cannot drop the page cache (needs root)");
                return;
            }
            close(fd);
        }
        struct queue_spool_config cfg = { .dir = SPOOL_1M };
        struct queue_spool *sp;
        struct index ix = { .now = time(NULL) };
        if (queue_spool_open(&cfg, &sp) != 0 || queue_sched_new(NULL, &ix.sched) != 0) {
            bench_fail(st, "cannot open the spool");
            return;
        }
        long rss0 = rss_kib();
        struct queue_recover_stats rs;
        bench_resume(st);
        int rc = queue_spool_recover(sp, index_add, &ix, &rs);
        bench_pause(st);
        long rss1 = rss_kib();
        struct queue_sched_stats ss;
        queue_sched_stats(ix.sched, &ss);
        fprintf(stderr,
                "bench_spool_recover_1m%s: %" PRIu64 " messages in %.2f s, %" PRIu64
                " quarantined; RSS +%ld KiB (%.0f B/message), index %zu B\n",
                cold ? "_cold" : "", rs.messages, rs.seconds, rs.quarantined, rss1 - rss0,
                rs.messages ? (double)(rss1 - rss0) * 1024 / (double)rs.messages : 0,
                ss.index_bytes);
        queue_sched_free(ix.sched);
        queue_spool_close(sp);
        bench_resume(st);
        if (rc != 0 || rs.messages < COUNT_1M) {
            bench_fail(st, "recovery failed or incomplete");
            return;
        }
        total += rs.messages;
    }
    bench_set_items(st, (int64_t)total);
    if (strcmp(getenv("FLOORMTA_BENCH_SPOOL_1M"), "clean") == 0 && cold)
        rm_rf(SPOOL_1M);
}

static void bench_spool_recover_1m(struct bench_state *st)
{
    run_recover(st, false);
}
BENCH_REGISTER_REAL_TIME(bench_spool_recover_1m)

static void bench_spool_recover_1m_cold(struct bench_state *st)
{
    run_recover(st, true);
}
BENCH_REGISTER_REAL_TIME(bench_spool_recover_1m_cold)
