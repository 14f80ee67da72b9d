/*
 * tests/dns/dnsmasq_fixture.c — dnsmasq on loopback for the live DNS tests and the DNS
 * benchmark (see dnsmasq_fixture.h).
 */
#define _GNU_SOURCE
#include "tests/dns/dnsmasq_fixture.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DNSMASQ_PATH "/usr/sbin/dnsmasq"

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };
    nanosleep(&ts, NULL);
}

int dnsq_init(struct dnsq *q)
{
    memset(q, 0, sizeof(*q));
    snprintf(q->dir, sizeof(q->dir), "/tmp/floormta-dnsq.XXXXXX");
    if (!mkdtemp(q->dir))
        return -errno;
    snprintf(q->log, sizeof(q->log), "%s/dnsmasq.log", q->dir);
    return 0;
}

/* ---- wire helpers ------------------------------------------------------------------------ */

/* A query for name (type A) with id, into buf. Returns its length. */
static size_t make_query(uint8_t *buf, uint16_t id, const char *name)
{
    size_t n = 0;
    buf[n++] = (uint8_t)(id >> 8);
    buf[n++] = (uint8_t)id;
    buf[n++] = 0x01; /* RD */
    buf[n++] = 0x00;
    const uint8_t counts[8] = { 0, 1, 0, 0, 0, 0, 0, 0 };
    memcpy(buf + n, counts, 8);
    n += 8;
    const char *p = name;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        buf[n++] = (uint8_t)len;
        memcpy(buf + n, p, len);
        n += len;
        p += len + (dot ? 1 : 0);
    }
    buf[n++] = 0;
    const uint8_t tail[4] = { 0, 1, 0, 1 }; /* A, IN */
    memcpy(buf + n, tail, 4);
    return n + 4;
}

/* Sends one query for name to 127.0.0.1:port and waits up to ms for any answer.
 * Returns 0 if one came. */
static int ask(uint16_t port, const char *name, unsigned ms)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (long)(ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    uint8_t buf[512];
    size_t len = make_query(buf, (uint16_t)rand(), name);
    int rc = -ETIMEDOUT;
    if (sendto(fd, buf, len, 0, (struct sockaddr *)&sa, sizeof(sa)) == (ssize_t)len &&
        recv(fd, buf, sizeof(buf), 0) > 0)
        rc = 0;
    close(fd);
    return rc;
}

/* ---- the SERVFAIL responder ---------------------------------------------------------------- */

static void servfail_serve(int fd)
{
    uint8_t buf[1500];
    for (;;) {
        struct sockaddr_storage from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
        if (n < 12)
            continue;
        /* The question back, QR set, RD copied, RA set, RCODE 2; no records. */
        buf[2] = (uint8_t)(0x80 | (buf[2] & 0x01));
        buf[3] = 0x80 | 2;
        memset(buf + 6, 0, 6);
        sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
    }
}

uint16_t dnsq_servfail_port(struct dnsq *q)
{
    if (q->servfail_pid > 0)
        return q->servfail_port;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
        perror("dnsq: servfail socket");
        if (fd >= 0)
            close(fd);
        return 0;
    }
    /* Bound before the fork, so the port is known and ready when dnsmasq starts. */
    pid_t pid = fork();
    if (pid < 0) {
        perror("dnsq: fork");
        close(fd);
        return 0;
    }
    if (pid == 0) {
        servfail_serve(fd);
        _exit(0);
    }
    close(fd);
    q->servfail_pid = pid;
    q->servfail_port = ntohs(sa.sin_port);
    return q->servfail_port;
}

/* ---- dnsmasq --------------------------------------------------------------------------------- */

static int write_zone(const struct dnsq *q, const char *zone, char *path, size_t cap)
{
    snprintf(path, cap, "%s/zone.conf", q->dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    fputs(zone, f);
    fputc('\n', f);
    return fclose(f) == 0 ? 0 : -errno;
}

/* Starts dnsmasq on port; returns its pid, or -1. */
static pid_t spawn(const struct dnsq *q, const char *conf, uint16_t port)
{
    char a_conf[160], a_port[32], a_pid[160], a_log[160], err[160];
    snprintf(a_conf, sizeof(a_conf), "--conf-file=%s", conf);
    snprintf(a_port, sizeof(a_port), "--port=%u", port);
    snprintf(a_pid, sizeof(a_pid), "--pid-file=%s/dnsmasq.pid", q->dir);
    snprintf(a_log, sizeof(a_log), "--log-facility=%s", q->log);
    snprintf(err, sizeof(err), "%s/dnsmasq.err", q->dir);
    char *argv[] = {
        DNSMASQ_PATH,
        "--keep-in-foreground",
        a_conf,
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        a_port,
        a_pid,
        a_log,
        "--local=/test/",
        /* The resolver under test caches; dnsmasq must not hide queries behind its
         * own cache (answers from its configuration are never cached anyway). */
        "--cache-size=0",
        q->quiet ? NULL : "--log-queries",
        NULL,
    };
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(DNSMASQ_PATH, argv);
        _exit(127);
    }
    return pid;
}

static void show_err(const struct dnsq *q)
{
    char path[PATH_MAX + 16], line[512];
    snprintf(path, sizeof(path), "%s/dnsmasq.err", q->dir);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f))
        fprintf(stderr, "dnsmasq: %s", line);
    if (f)
        fclose(f);
}

int dnsq_start(struct dnsq *q, const char *zone)
{
    if (access(DNSMASQ_PATH, X_OK) != 0) {
        fprintf(stderr, "dnsq: %s is missing: install dnsmasq-base (scripts/deps.sh)\n",
                DNSMASQ_PATH);
        return -ENOENT;
    }
    char conf[128];
    int rc = write_zone(q, zone, conf, sizeof(conf));
    if (rc < 0)
        return rc;
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int attempt = 0; attempt < 20; attempt++) {
        uint16_t port = (uint16_t)(20000 + rand() % 40000);
        pid_t pid = spawn(q, conf, port);
        if (pid < 0)
            return -errno;
        /* Ready when it answers; gone when the port was taken (or the zone is bad). */
        for (int i = 0; i < 100; i++) {
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                pid = -1;
                if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
                    fprintf(stderr, "dnsq: cannot run %s\n", DNSMASQ_PATH);
                    return -ENOENT;
                }
                break;
            }
            if (ask(port, "ready.test", 50) == 0) {
                q->pid = pid;
                q->port = port;
                snprintf(q->server, sizeof(q->server), "127.0.0.1:%u", port);
                return 0;
            }
        }
        if (pid > 0) { /* alive but silent for 5 s: give up on it */
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            break;
        }
    }
    fprintf(stderr, "dnsq: dnsmasq did not start\n");
    show_err(q);
    return -EIO;
}

void dnsq_stop(struct dnsq *q)
{
    if (q->pid > 0) {
        kill(q->pid, SIGTERM);
        waitpid(q->pid, NULL, 0);
        q->pid = 0;
    }
    if (q->servfail_pid > 0) {
        kill(q->servfail_pid, SIGTERM);
        waitpid(q->servfail_pid, NULL, 0);
        q->servfail_pid = 0;
    }
    if (q->dir[0]) {
        const char *files[] = { "zone.conf", "dnsmasq.log", "dnsmasq.pid", "dnsmasq.err" };
        char path[PATH_MAX + 32];
        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
            snprintf(path, sizeof(path), "%s/%s", q->dir, files[i]);
            unlink(path);
        }
        rmdir(q->dir);
        q->dir[0] = '\0';
    }
}

static int count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

int dnsq_count(struct dnsq *q, const char *needle)
{
    /* dnsmasq handles queries in order and logs each as it arrives, so once the marker
     * is in the log, so is everything the resolver sent before it. */
    char marker[64], line[96];
    snprintf(marker, sizeof(marker), "sync-%u.test", ++q->syncs);
    snprintf(line, sizeof(line), "query[A] %s ", marker);
    if (ask(q->port, marker, 1000) < 0)
        return -1;
    for (int i = 0; i < 400; i++) {
        if (count_lines(q->log, line) > 0)
            return count_lines(q->log, needle);
        sleep_ms(5);
    }
    return -1;
}
