/*
 * bench/load_observe.c — what floormta-load reads from outside itself, before and after
 * a run: the sinks' --stats-file (deliveries, latency histogram), the daemon's /metrics
 * (TLS handshakes full / resumed, floor refusals by reason, delivery results) and
 * /proc/PID of the daemon (CPU seconds, peak RSS).
 *
 * All of it is blocking and runs outside the injection's hot path: the stats files
 * every 200 ms from the ticker (a few KB each, written atomically by the sink, so a
 * read never sees half a file), /metrics and /proc only at the start and the end.
 * The HTTP client is the least that works against the daemon's server: HTTP/1.0, one
 * request per connection, the body read to EOF.
 */
#include "bench/load.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* ---- the sinks' stats files ------------------------------------------------------------- */

static int read_one(const char *path, struct load_sink_snap *out)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -errno;
    char line[256];
    bool magic = false;
    while (fgets(line, sizeof(line), f) != NULL) {
        char key[64];
        unsigned long long a = 0, b = 0;
        int n = sscanf(line, "%63s %llu %llu", key, &a, &b);
        if (n < 2)
            continue;
        if (strcmp(key, "floormta-sink-stats") == 0)
            magic = true;
        else if (strcmp(key, "messages") == 0)
            out->messages += a;
        else if (strcmp(key, "load_messages") == 0)
            out->load_messages += a;
        else if (strcmp(key, "load_bad_ts") == 0)
            out->load_bad_ts += a;
        else if (strcmp(key, "load_last_ns") == 0 && a > out->load_last_ns)
            out->load_last_ns = a;
        else if (strcmp(key, "tls_handshakes") == 0)
            out->tls_handshakes += a;
        else if (strcmp(key, "tls_resumed") == 0)
            out->tls_resumed += a;
        else if (strcmp(key, "latency_us") == 0 && n == 3 && a < BENCH_LAT_BUCKETS)
            out->latency[a] += b;
    }
    fclose(f);
    return magic ? 0 : -EINVAL;
}

int load_sink_read(const struct load_config *cfg, struct load_sink_snap *out)
{
    memset(out, 0, sizeof(*out));
    int first = 0;
    for (size_t i = 0; i < cfg->nstats; i++) {
        int err = read_one(cfg->stats_files[i], out);
        if (err != 0 && first == 0)
            first = err;
    }
    out->ok = first == 0;
    return first;
}

/* ---- /metrics ------------------------------------------------------------------------------ */

/* The families the report uses; everything else in /metrics is skipped. */
static const char *const wanted[] = {
    "floormta_tls_handshakes_by_kind_total",
    "floormta_floor_refusals_total",
    "floormta_deliveries_total",
    "floormta_messages_received_total",
    "floormta_enqueue_refused_total",
    "floormta_recipients_delivered_total",
    "floormta_recipients_deferred_total",
    "floormta_recipients_bounced_total",
    "floormta_connections_opened_total",
    "floormta_connections_reused_total",
};

static bool is_wanted(const char *key)
{
    for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++) {
        size_t n = strlen(wanted[i]);
        if (strncmp(key, wanted[i], n) == 0 && (key[n] == '{' || key[n] == '\0'))
            return true;
    }
    return false;
}

/* http://HOST:PORT/PATH with a numeric host (or localhost). */
static int parse_url(const char *url, struct sockaddr_storage *ss, socklen_t *len, char *host,
                     size_t hostcap, const char **path)
{
    if (strncmp(url, "http://", 7) != 0)
        return -EINVAL;
    const char *h = url + 7;
    const char *slash = strchr(h, '/');
    *path = slash ? slash : "/metrics";
    size_t n = slash ? (size_t)(slash - h) : strlen(h);
    if (n == 0 || n >= hostcap)
        return -EINVAL;
    memcpy(host, h, n);
    host[n] = '\0';
    char tmp[128];
    snprintf(tmp, sizeof(tmp), "%s", host);
    char *name = tmp, *port;
    if (tmp[0] == '[') {
        char *close = strchr(tmp, ']');
        if (close == NULL || close[1] != ':')
            return -EINVAL;
        *close = '\0';
        name = tmp + 1;
        port = close + 2;
    } else {
        char *colon = strrchr(tmp, ':');
        if (colon == NULL)
            return -EINVAL;
        *colon = '\0';
        port = colon + 1;
    }
    int p = atoi(port);
    if (p <= 0 || p > 65535)
        return -EINVAL;
    if (strcmp(name, "localhost") == 0)
        name = "127.0.0.1";
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, name, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)p);
        *len = sizeof(*a4);
    } else if (inet_pton(AF_INET6, name, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)p);
        *len = sizeof(*a6);
    } else {
        return -EINVAL;
    }
    return 0;
}

/* GETs url; returns 0 and the whole response in *resp (free it), or a negative code. */
static int http_get(const char *url, char **resp, size_t *resp_len)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    char host[128];
    const char *path;
    int err = parse_url(url, &ss, &sslen, host, sizeof(host), &path);
    if (err != 0)
        return err;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = { .tv_sec = 3 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char req[512];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n",
                     path, host);
    if (n < 0 || (size_t)n >= sizeof(req) || connect(fd, (struct sockaddr *)&ss, sslen) != 0 ||
        send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        err = errno ? -errno : -EIO;
        close(fd);
        return err;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1);
    if (buf == NULL) {
        close(fd);
        return -ENOMEM;
    }
    for (;;) {
        if (len == cap) {
            if (cap >= (8u << 20))
                break; /* far more than /metrics ever is */
            char *nb = realloc(buf, cap * 2 + 1);
            if (nb == NULL)
                break;
            buf = nb;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + len, cap - len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            err = -errno;
            close(fd);
            free(buf);
            return err;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    *resp = buf;
    *resp_len = len;
    return 0;
}

int load_metrics_scrape(const char *url, struct load_metrics *out)
{
    memset(out, 0, sizeof(*out));
    char *resp;
    size_t len;
    int err = http_get(url, &resp, &len);
    if (err != 0)
        return err;
    char *body = strstr(resp, "\r\n\r\n");
    if (strncmp(resp, "HTTP/1.", 7) != 0 || strncmp(resp + 8, " 200", 4) != 0 || body == NULL) {
        free(resp);
        return -EPROTO;
    }
    for (char *line = strtok(body + 4, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        char *sp = strrchr(line, ' ');
        if (sp == NULL)
            continue;
        *sp = '\0';
        if (!is_wanted(line) || strlen(line) >= sizeof(out->m[0].key) || out->n == LOAD_METRICS_MAX)
            continue;
        snprintf(out->m[out->n].key, sizeof(out->m[0].key), "%s", line);
        out->m[out->n].value = strtod(sp + 1, NULL);
        out->n++;
    }
    free(resp);
    out->ok = true;
    return 0;
}

double load_metrics_get(const struct load_metrics *m, const char *key)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->m[i].key, key) == 0)
            return m->m[i].value;
    return 0;
}

/* ---- /proc ----------------------------------------------------------------------------------- */

int load_proc_read(long pid, struct load_proc *out)
{
    memset(out, 0, sizeof(*out));
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -errno;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: fields count from the last ')'.
     * After it: state is field 3, utime 14 and stime 15 (proc(5)). */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -EINVAL;
    unsigned long long ut = 0, st = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -EINVAL;
    long hz = sysconf(_SC_CLK_TCK);
    out->cpu_s = (double)(ut + st) / (double)(hz > 0 ? hz : 100);

    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -errno;
    char line[256];
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long long kb;
        if (sscanf(line, "VmHWM: %llu kB", &kb) == 1)
            out->hwm_kb = kb;
        else if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
            out->rss_kb = kb;
    }
    fclose(f);
    out->ok = true;
    return 0;
}

int load_proc_reset_hwm(long pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/clear_refs", pid);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -errno;
    /* "5": reset the peak RSS to the current RSS (proc(5), Linux 4.0). */
    bool ok = fputs("5", f) >= 0;
    ok = fclose(f) == 0 && ok;
    return ok ? 0 : -EIO;
}
