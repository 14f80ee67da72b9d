/*
 * bench/sink.c — floormta-sink: an SMTP receiver that accepts and discards mail, for
 * the integration tests (one listener per receiver profile: good TLS, old TLS, bad
 * certificates, STARTTLS refused, stalls, floods) and for the bench suite.
 *
 *   floormta-sink --pki DIR [--name MXNAME] --listen ADDR:PORT=PROFILE[@PKIDIR]
 *                 [--listen ...] [--log-level error|warn|info|debug] [--pidfile FILE]
 *                 [--ready-file FILE] [--stats-file FILE]
 *
 * A listener takes its certificate from --pki, or from its own PKIDIR (a test PKI made
 * for another MX name), so one sink can play receivers with different host names.
 *
 * Once every listener is bound it prints "listening ADDR:PORT profile=PROFILE" per
 * listener on stdout (the real port when PORT was 0) and writes the same lines to the
 * ready file (atomically). SIGTERM / SIGINT stop it: it prints one line per listener,
 * "sink: listener ADDR:PORT profile=PROFILE connections=C messages=N", then the totals
 * as "sink: messages=N bytes=B connections=C tls_handshakes=H rsets=R pipelined=P
 * rcpts_refused=F rcpts_accepted=A greylisted=G tls_resumed=T" (T: handshakes that
 * resumed a session; new fields are only ever appended)
 * and exits 0.
 *
 * --stats-file FILE: the counters, rewritten (atomically) every 200 ms, on SIGUSR1 and
 * at exit, as "key value" lines: "floormta-sink-stats 1", time_ns (CLOCK_REALTIME of
 * the write), messages, bytes, connections, tls_handshakes, tls_resumed,
 * load_messages, load_bad_ts, load_last_ns (CLOCK_REALTIME of the last one's arrival, 0
 * before the first), then "latency_us BUCKET COUNT" for each non-empty bucket
 * of bench/lat_hist.h. load_messages counts the messages that carried floormta-load's
 * "X-Floormta-Load-Ts: <unix ns>" header; the histogram holds their arrival - ts.
 * floormta-load reads it before and after a run and reports the difference.
 *
 * Recipient conventions, by local part (details in sink.h):
 *   tempfail-once-*  451 4.7.1 the first time the sink sees the address, then 250
 *                    (greylisting; at most 65536 addresses remembered, past that 451
 *                    every time);
 *   tempfail-*       451 4.2.0;
 *   reject-*         550 5.1.1;
 *   anything else    250.
 * Bad arguments exit 1 with a message on stderr.
 */
#include "bench/sink.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "engine/log.h"
#include "tls/tls.h"

#define SINK_LISTEN_MAX 64

/* ---- replies ------------------------------------------------------------------------- */

void sink_server_replies(struct sink_server *srv)
{
    const char *name = srv->mxname;
    srv->greeting_len = (size_t)snprintf(srv->greeting, sizeof(srv->greeting),
                                         "220 %s ESMTP floormta-sink\r\n", name);
    srv->helo_len = (size_t)snprintf(srv->helo, sizeof(srv->helo), "250 %s\r\n", name);
    srv->timeout_len = (size_t)snprintf(srv->timeout, sizeof(srv->timeout),
                                        "421 4.4.2 %s Error: timeout exceeded\r\n", name);
    static const char *const fmt = "250-%s\r\n"
                                   "250-PIPELINING\r\n"
                                   "250-SIZE %u\r\n"
                                   "%s"
                                   "250-8BITMIME\r\n"
                                   "250-ENHANCEDSTATUSCODES\r\n"
                                   "250 SMTPUTF8\r\n";
    srv->ehlo_starttls_len = (size_t)snprintf(srv->ehlo_starttls, sizeof(srv->ehlo_starttls), fmt,
                                              name, SINK_MSG_MAX, "250-STARTTLS\r\n");
    srv->ehlo_plain_len =
            (size_t)snprintf(srv->ehlo_plain, sizeof(srv->ehlo_plain), fmt, name, SINK_MSG_MAX, "");
}

/* ---- listeners ------------------------------------------------------------------------ */

/* Parses "127.0.0.1:25=none", "[::1]:0=tls1.3" or "127.0.0.2:25=valid@/tmp/pki2" into
 * lst (profile, addr, pki). Prints the reason and returns -EINVAL on bad input. spec is
 * borrowed, and must outlive lst (lst->pki points into it). */
static int listen_parse(const char *spec, struct sink_listener *lst)
{
    char buf[PATH_MAX + 128];
    if (strlen(spec) >= sizeof(buf))
        goto bad;
    strcpy(buf, spec);
    /* The address has no '=': the first one ends it. A PKI directory may hold '=' or
     * '@'; a profile name holds neither. */
    char *eq = strchr(buf, '=');
    if (eq == NULL) {
        fprintf(stderr, "floormta-sink: --listen %s: expected ADDR:PORT=PROFILE\n", spec);
        return -EINVAL;
    }
    *eq = '\0';
    char *at = strchr(eq + 1, '@');
    lst->pki = NULL;
    if (at != NULL) {
        *at = '\0';
        lst->pki = spec + (at + 1 - buf);
        if (*lst->pki == '\0') {
            fprintf(stderr, "floormta-sink: --listen %s: empty PKI directory after '@'\n", spec);
            return -EINVAL;
        }
    }
    lst->profile = sink_profile_find(eq + 1);
    if (lst->profile == NULL) {
        fprintf(stderr, "floormta-sink: --listen %s: unknown profile '%s' (known: %s)\n", spec,
                eq + 1, sink_profile_names());
        return -EINVAL;
    }
    char *host = buf, *port;
    bool v6 = buf[0] == '[';
    if (v6) {
        char *close = strchr(buf, ']');
        if (close == NULL || close[1] != ':')
            goto bad;
        *close = '\0';
        host = buf + 1;
        port = close + 2;
    } else {
        char *colon = strrchr(buf, ':');
        if (colon == NULL)
            goto bad;
        *colon = '\0';
        port = colon + 1;
    }
    char *end;
    errno = 0;
    unsigned long p = strtoul(port, &end, 10);
    if (*port == '\0' || *end != '\0' || errno != 0 || p > 65535 || port[0] == '-')
        goto bad;

    memset(&lst->addr, 0, sizeof(lst->addr));
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&lst->addr;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)p);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
            goto bad;
        lst->addrlen = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&lst->addr;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)p);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
            goto bad;
        lst->addrlen = sizeof(*a);
    }
    return 0;
bad:
    fprintf(stderr,
            "floormta-sink: --listen %s: bad address (expected 127.0.0.1:PORT or "
            "[::1]:PORT, then =PROFILE[@PKIDIR])\n",
            spec);
    return -EINVAL;
}

/* Builds the listener's TLS context from <pki>/<cert>.crt/.key (its own PKI directory
 * if it has one). Prints why on failure. */
static int listen_tls(struct sink_listener *lst, const char *pki)
{
    const struct sink_profile *p = lst->profile;
    if (p->cert == NULL)
        return 0;
    if (lst->pki != NULL)
        pki = lst->pki;
    char crt[PATH_MAX], key[PATH_MAX];
    snprintf(crt, sizeof(crt), "%s/%s.crt", pki, p->cert);
    snprintf(key, sizeof(key), "%s/%s.key", pki, p->cert);
    struct tls_server_config cfg = {
        .cert_file = crt,
        .key_file = key,
        .min_version = p->min_version,
        .max_version = p->max_version,
    };
    int err = tls_ctx_new_server(&cfg, &lst->tls);
    if (err != 0) {
        fprintf(stderr, "floormta-sink: profile %s: cannot use %s / %s: %s\n", p->name, crt, key,
                tls_strerror(err));
        return err;
    }
    return 0;
}

static int listen_bind(struct sink_listener *lst)
{
    struct sockaddr_storage *ss = &lst->addr;
    lst->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lst->fd < 0)
        return -errno;
    int one = 1;
    setsockopt(lst->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss->ss_family == AF_INET6)
        setsockopt(lst->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(lst->fd, (struct sockaddr *)ss, lst->addrlen) != 0 || listen(lst->fd, 4096) != 0)
        return -errno;
    socklen_t len = sizeof(*ss);
    if (getsockname(lst->fd, (struct sockaddr *)ss, &len) != 0)
        return -errno;

    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        snprintf(lst->text, sizeof(lst->text), "[%s]:%u", host, ntohs(a->sin6_port));
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        snprintf(lst->text, sizeof(lst->text), "%s:%u", host, ntohs(a->sin_port));
    }
    return 0;
}

static void listener_arm(struct sink_listener *lst)
{
    int err = eng_op_accept(lst->srv->loop, lst->h);
    if (err != 0) {
        /* The queue is full or similar: try again shortly rather than go deaf. */
        eng_log(ENG_LOG_WARN, "sink: %s accept: %s", lst->text, eng_strerror(err));
        eng_op_timer(lst->srv->loop, lst->h, 100);
    }
}

static void listener_complete(void *ctx, const struct eng_completion *comp)
{
    struct sink_listener *lst = ctx;
    if (lst->srv->stopping || comp->res == -ECANCELED)
        return;
    if (comp->op == ENG_OP_TIMER) {
        listener_arm(lst);
        return;
    }
    if (comp->res >= 0) {
        sink_conn_accept(lst, comp->res);
    } else {
        /* EMFILE and friends: back off instead of spinning on the error. */
        eng_log(ENG_LOG_WARN, "sink: %s accept: %s", lst->text, eng_strerror(comp->res));
        if (!comp->more && !eng_handle_busy(lst->srv->loop, lst->h, ENG_OP_TIMER))
            eng_op_timer(lst->srv->loop, lst->h, 100);
        return;
    }
    if (!comp->more)
        listener_arm(lst);
}

static void listener_release(void *ctx)
{
    struct sink_listener *lst = ctx;
    close(lst->fd);
    lst->fd = -1;
    lst->open = false;
}

static const struct eng_handle_ops listener_ops = {
    .on_complete = listener_complete,
    .on_release = listener_release,
};

/* ---- signals ---------------------------------------------------------------------------- */

/* Writes text to path through path.tmp + rename, so a reader never sees half of it. */
static int write_atomic(const char *path, const char *text)
{
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= sizeof(tmp))
        return -ENAMETOOLONG;
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -errno;
    bool ok = fputs(text, f) >= 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        int err = -errno;
        unlink(tmp);
        return err ? err : -EIO;
    }
    return 0;
}

/* ---- the stats file ---------------------------------------------------------------------- */

struct sink_statsfile {
    struct sink_server *srv;
    const char *path; /* borrowed from argv; NULL = no stats file */
    eng_handle_t h;   /* a timer-only handle */
    bool warned;
};

/* Writes the counters to the stats file (format at the top of this file). A failure
 * is logged once and otherwise ignored: the sink's job is to receive. */
static void stats_write(struct sink_statsfile *sf)
{
    /* The header lines plus at most one line per bucket. */
    static char text[512 + BENCH_LAT_BUCKETS * 48];
    const struct sink_stats *st = &sf->srv->stats;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    size_t n = (size_t)snprintf(
            text, sizeof(text),
            "floormta-sink-stats 1\ntime_ns %llu\nmessages %llu\nbytes %llu\nconnections "
            "%llu\ntls_handshakes %llu\ntls_resumed %llu\nload_messages %llu\nload_bad_ts "
            "%llu\nload_last_ns %llu\n",
            (unsigned long long)now.tv_sec * 1000000000ull + (unsigned long long)now.tv_nsec,
            (unsigned long long)st->messages, (unsigned long long)st->bytes,
            (unsigned long long)st->connections, (unsigned long long)st->tls_handshakes,
            (unsigned long long)st->tls_resumed, (unsigned long long)st->load_messages,
            (unsigned long long)st->load_bad_ts, (unsigned long long)st->load_last_ns);
    for (unsigned b = 0; b < BENCH_LAT_BUCKETS; b++)
        if (st->latency[b] != 0)
            n += (size_t)snprintf(text + n, sizeof(text) - n, "latency_us %u %llu\n", b,
                                  (unsigned long long)st->latency[b]);
    int err = write_atomic(sf->path, text);
    if (err != 0 && !sf->warned) {
        sf->warned = true;
        eng_log(ENG_LOG_WARN, "sink: --stats-file %s: %s", sf->path, strerror(-err));
    }
}

static void stats_complete(void *ctx, const struct eng_completion *comp)
{
    struct sink_statsfile *sf = ctx;
    if (comp->res == -ECANCELED || sf->srv->stopping)
        return;
    stats_write(sf);
    eng_op_timer(sf->srv->loop, sf->h, SINK_STATS_MS);
}

static const struct eng_handle_ops stats_ops = {
    .on_complete = stats_complete,
};

struct sink_signals {
    struct sink_server *srv;
    struct sink_listener *lst;
    size_t nlst;
    struct sink_statsfile *sf;
    int fd;
    eng_handle_t h;
};

static void shutdown_all(struct sink_signals *sig)
{
    struct sink_server *srv = sig->srv;
    if (srv->stopping)
        return;
    srv->stopping = true;
    for (size_t i = 0; i < sig->nlst; i++)
        eng_handle_close(srv->loop, sig->lst[i].h);
    if (sig->sf->path != NULL)
        eng_handle_close(srv->loop, sig->sf->h);
    sink_conn_close_all(srv);
    eng_handle_close(srv->loop, sig->h);
    /* eng_loop_run returns once every handle has been released. */
}

static void signal_complete(void *ctx, const struct eng_completion *comp)
{
    struct sink_signals *sig = ctx;
    if (comp->res == -ECANCELED)
        return;
    struct signalfd_siginfo si;
    if (comp->res > 0 && read(sig->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo != SIGUSR1) {
            eng_log(ENG_LOG_INFO, "sink: signal %u, stopping", si.ssi_signo);
            shutdown_all(sig);
            return;
        }
        /* A reader wants the counters now, not in up to 200 ms. */
        if (sig->sf->path != NULL)
            stats_write(sig->sf);
    }
    int err = eng_op_poll(sig->srv->loop, sig->h, POLLIN, 0);
    if (err != 0)
        shutdown_all(sig);
}

static void signal_release(void *ctx)
{
    struct sink_signals *sig = ctx;
    close(sig->fd);
    sig->fd = -1;
}

static const struct eng_handle_ops signal_ops = {
    .on_complete = signal_complete,
    .on_release = signal_release,
};

/* ---- start-up ------------------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr,
            "usage: floormta-sink --pki DIR [--name MXNAME] --listen "
            "ADDR:PORT=PROFILE[@PKIDIR] [--listen ...]\n"
            "                     [--log-level error|warn|info|debug] [--pidfile FILE] "
            "[--ready-file FILE]\n"
            "                     [--stats-file FILE]\n"
            "profiles: %s\n"
            "recipients (by local part): tempfail-once-* 451 the first time the address is\n"
            "  seen, then 250 (at most %u addresses remembered; past that 451 every time);\n"
            "  tempfail-* 451; reject-* 550; anything else 250\n",
            sink_profile_names(), SINK_GREY_MAX);
}

struct sink_args {
    const char *pki;
    const char *name;
    const char *pidfile;
    const char *ready_file;
    const char *stats_file;
    const char *listen[SINK_LISTEN_MAX];
    size_t nlisten;
};

/* Returns 0, or 1 (the exit status) after printing why. */
static int parse_args(int argc, char **argv, struct sink_args *a)
{
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
            usage();
            exit(0);
        }
        static const char *const known[] = { "--pki",        "--name",      "--pidfile",
                                             "--ready-file", "--log-level", "--listen",
                                             "--stats-file" };
        bool ok = false;
        for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
            ok = ok || strcmp(opt, known[k]) == 0;
        if (!ok) {
            fprintf(stderr, "floormta-sink: unknown option '%s'\n", opt);
            usage();
            return 1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "floormta-sink: %s needs a value\n", opt);
            usage();
            return 1;
        }
        const char *val = argv[++i];
        if (strcmp(opt, "--pki") == 0) {
            a->pki = val;
        } else if (strcmp(opt, "--name") == 0) {
            a->name = val;
        } else if (strcmp(opt, "--pidfile") == 0) {
            a->pidfile = val;
        } else if (strcmp(opt, "--ready-file") == 0) {
            a->ready_file = val;
        } else if (strcmp(opt, "--stats-file") == 0) {
            a->stats_file = val;
        } else if (strcmp(opt, "--log-level") == 0) {
            enum eng_log_level level;
            if (eng_log_level_parse(val, &level) != 0) {
                fprintf(stderr, "floormta-sink: bad --log-level '%s'\n", val);
                return 1;
            }
            eng_log_set_level(level);
        } else { /* --listen */
            if (a->nlisten == SINK_LISTEN_MAX) {
                fprintf(stderr, "floormta-sink: at most %d --listen\n", SINK_LISTEN_MAX);
                return 1;
            }
            a->listen[a->nlisten++] = val;
        }
    }
    if (a->pki == NULL) {
        fprintf(stderr, "floormta-sink: --pki DIR is required\n");
        return 1;
    }
    if (a->nlisten == 0) {
        fprintf(stderr, "floormta-sink: at least one --listen ADDR:PORT=PROFILE is required\n");
        return 1;
    }
    size_t n = strlen(a->name);
    if (n == 0 || n > SINK_NAME_MAX || strpbrk(a->name, " \t\r\n") != NULL) {
        fprintf(stderr, "floormta-sink: bad --name '%s'\n", a->name);
        return 1;
    }
    return 0;
}

/* Sets up everything before the loop runs. Returns 0 or 1 (exit status, printed). */
static int start(const struct sink_args *a, struct sink_server *srv, struct sink_listener *lst,
                 struct sink_signals *sig, struct sink_statsfile *sf)
{
    for (size_t i = 0; i < a->nlisten; i++) {
        lst[i].srv = srv;
        lst[i].fd = -1;
        if (listen_parse(a->listen[i], &lst[i]) != 0 || listen_tls(&lst[i], a->pki) != 0)
            return 1;
    }

    /* SIGTERM / SIGINT are read from a signalfd on the loop; SIGPIPE is not wanted. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct eng_loop_config cfg = { .entries = 4096, .max_handles = 16384 };
    int err = eng_loop_new(&cfg, &srv->loop);
    if (err != 0) {
        fprintf(stderr, "floormta-sink: event loop: %s\n", eng_strerror(err));
        return 1;
    }
    sig->srv = srv;
    sig->lst = lst;
    sig->nlst = a->nlisten;
    sig->sf = sf;
    sig->fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sig->fd < 0 || eng_handle_open(srv->loop, sig->fd, &signal_ops, sig, &sig->h) != 0 ||
        eng_op_poll(srv->loop, sig->h, POLLIN, 0) != 0) {
        fprintf(stderr, "floormta-sink: signalfd: %s\n", strerror(errno));
        if (sig->fd >= 0 && sig->h == 0)
            close(sig->fd);
        sig->fd = -1;
        return 1;
    }

    for (size_t i = 0; i < a->nlisten; i++) {
        err = listen_bind(&lst[i]);
        if (err != 0) {
            fprintf(stderr, "floormta-sink: --listen %s: %s\n", a->listen[i], strerror(-err));
            return 1;
        }
        err = eng_handle_open(srv->loop, lst[i].fd, &listener_ops, &lst[i], &lst[i].h);
        if (err != 0) {
            fprintf(stderr, "floormta-sink: %s: %s\n", lst[i].text, eng_strerror(err));
            return 1;
        }
        lst[i].open = true;
        listener_arm(&lst[i]);
    }

    sf->srv = srv;
    sf->path = a->stats_file;
    if (sf->path != NULL) {
        stats_write(sf); /* zeros at once: a reader never waits for the first file */
        if (eng_handle_open(srv->loop, -1, &stats_ops, sf, &sf->h) != 0 ||
            eng_op_timer(srv->loop, sf->h, SINK_STATS_MS) != 0) {
            fprintf(stderr, "floormta-sink: --stats-file timer: cannot start\n");
            return 1;
        }
    }
    return 0;
}

/* Prints the "listening" lines and writes the pid and ready files. */
static int announce(const struct sink_args *a, const struct sink_listener *lst)
{
    char text[SINK_LISTEN_MAX * 128];
    size_t n = 0;
    for (size_t i = 0; i < a->nlisten; i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "listening %s profile=%s\n", lst[i].text,
                              lst[i].profile->name);
    fputs(text, stdout);
    fflush(stdout);
    if (a->pidfile) {
        char pid[32];
        snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
        int err = write_atomic(a->pidfile, pid);
        if (err != 0) {
            fprintf(stderr, "floormta-sink: --pidfile %s: %s\n", a->pidfile, strerror(-err));
            return 1;
        }
    }
    if (a->ready_file) {
        int err = write_atomic(a->ready_file, text);
        if (err != 0) {
            fprintf(stderr, "floormta-sink: --ready-file %s: %s\n", a->ready_file, strerror(-err));
            return 1;
        }
    }
    return 0;
}

static void teardown(struct sink_server *srv, struct sink_listener *lst, size_t nlst)
{
    /* The loop releases (and its owners close) every handle it holds; listeners that
     * never got a handle (start-up failed) are closed here. */
    eng_loop_free(srv->loop);
    for (size_t i = 0; i < nlst; i++) {
        if (!lst[i].open && lst[i].fd >= 0)
            close(lst[i].fd);
        tls_ctx_free(lst[i].tls);
    }
    sink_conn_pool_free(srv);
}

int main(int argc, char **argv)
{
    struct sink_args args = { .name = "mx.floormta.test" };
    int rc = parse_args(argc, argv, &args);
    if (rc != 0)
        return rc;

    static struct sink_server srv;
    static struct sink_listener lst[SINK_LISTEN_MAX];
    static struct sink_signals sig = { .fd = -1 };
    static struct sink_statsfile sf;
    srv.mxname = args.name;
    sink_server_replies(&srv);
    if (sink_greylist_init(&srv.grey) != 0) {
        fprintf(stderr, "floormta-sink: out of memory for the greylist\n");
        return 1;
    }

    rc = start(&args, &srv, lst, &sig, &sf);
    if (rc == 0)
        rc = announce(&args, lst);
    if (rc == 0) {
        int err = eng_loop_run(srv.loop);
        if (err != 0) {
            eng_log(ENG_LOG_ERROR, "sink: loop: %s", eng_strerror(err));
            rc = 1;
        }
    }
    if (rc == 0) {
        for (size_t i = 0; i < args.nlisten; i++)
            printf("sink: listener %s profile=%s connections=%llu messages=%llu\n", lst[i].text,
                   lst[i].profile->name, (unsigned long long)lst[i].connections,
                   (unsigned long long)lst[i].messages);
        printf("sink: messages=%llu bytes=%llu connections=%llu tls_handshakes=%llu rsets=%llu "
               "pipelined=%llu rcpts_refused=%llu rcpts_accepted=%llu greylisted=%llu "
               "tls_resumed=%llu\n",
               (unsigned long long)srv.stats.messages, (unsigned long long)srv.stats.bytes,
               (unsigned long long)srv.stats.connections,
               (unsigned long long)srv.stats.tls_handshakes, (unsigned long long)srv.stats.rsets,
               (unsigned long long)srv.stats.pipelined, (unsigned long long)srv.stats.rcpts_refused,
               (unsigned long long)srv.stats.rcpts_accepted,
               (unsigned long long)srv.stats.greylisted, (unsigned long long)srv.stats.tls_resumed);
        fflush(stdout);
    }
    if (sf.path != NULL)
        stats_write(&sf); /* the final counters, for a reader that comes after the exit */
    teardown(&srv, lst, args.nlisten);
    sink_greylist_free(&srv.grey);
    if (args.pidfile && rc == 0)
        unlink(args.pidfile);
    return rc;
}
