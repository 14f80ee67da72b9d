/*
 * bench/load.c — floormta-load: injects messages into a running floormta over C
 * concurrent SMTP connections and reports what it injected, what the sinks received
 * and what it cost the daemon (issue 7).
 *
 *   floormta-load (--smtp ADDR:PORT | --http URL --token T) (--count N | --duration S)
 *                 [--conns C] [--rate R]
 *                 [--domains K] [--size BYTES] [--suffix DOMAIN] [--from ADDR]
 *                 [--helo NAME] [--no-pipelining] [--stats-file FILE ...]
 *                 [--metrics URL] [--pid PID] [--json FILE] [--wait S] [--timeout S]
 *                 [--quiet] [--log-level LEVEL]
 *
 * The run: every message has one recipient, u<seq>@d<seq % K, 4 digits>.<suffix>, a
 * sequence header and X-Floormta-Load-Ts: <unix ns> (taken when its MAIL leaves),
 * which floormta-sink --stats-file turns into injection-to-delivery latency. Injection
 * stops after N messages or S seconds (the first reached); --rate R spreads them at R
 * per second over all connections (a token bucket the ticker refills). Once every
 * connection has said QUIT, the run waits (at most --wait seconds) until the sinks
 * have received as many load messages as were injected, then reports.
 *
 * Progress: a status line rewritten in place when stdout is a terminal, otherwise a
 * plain line per second. SIGINT once stops injecting (the run still waits for the
 * deliveries and reports); twice, it closes everything and reports at once.
 *
 * With --http URL the connections are HTTP/1.1 keep-alive clients of the daemon's API
 * instead: each message is one POST /api/v1/messages (load_http.c), 202 is injected,
 * any other status a refusal ("http 503"); a 401 (wrong --token) ends the run.
 *
 * Exit status: 0 when everything injected was delivered (or no sink was given to
 * count), 2 when deliveries are missing at the end of the wait, 1 for bad arguments, a
 * failure to start, 5 x C connection errors in a row or a 401 (the run gives up).
 */
#include "bench/load.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "engine/log.h"

/* ---- the run's decisions --------------------------------------------------------------- */

int load_run_take(struct load_run *run, unsigned idx, uint64_t *seq)
{
    const struct load_config *cfg = run->cfg;
    if (cfg->count != 0 && run->next_seq >= cfg->count)
        run->no_more = true;
    if (run->no_more)
        return -1;
    if (run->granted == idx + 1) {
        run->granted = 0; /* refill() took its token already */
    } else if (cfg->rate > 0) {
        if (run->tokens < 1.0 || run->wait_len > 0) {
            /* Queued in arrival order: a session is never starved by a luckier one. */
            run->waiters[(run->wait_head + run->wait_len) % cfg->conns] = idx;
            run->wait_len++;
            return 0;
        }
        run->tokens -= 1.0;
    }
    *seq = run->next_seq++;
    return 1;
}

void load_run_refusal(struct load_run *run, const char *text)
{
    struct load_counters *c = &run->c;
    c->refused++;
    for (size_t i = 0; i < c->nreasons; i++) {
        if (strcmp(c->reasons[i].text, text) == 0) {
            c->reasons[i].count++;
            return;
        }
    }
    if (c->nreasons == LOAD_REASONS_MAX) {
        /* The last slot collects whatever does not fit. */
        snprintf(c->reasons[LOAD_REASONS_MAX - 1].text, LOAD_REASON_LEN, "other");
        c->reasons[LOAD_REASONS_MAX - 1].count++;
        return;
    }
    snprintf(c->reasons[c->nreasons].text, LOAD_REASON_LEN, "%s", text);
    c->reasons[c->nreasons++].count = 1;
}

/* ---- the ticker: rate tokens, reconnects, progress, the end ---------------------------------- */

enum load_phase {
    LOAD_PHASE_INJECT,  /* sessions are running */
    LOAD_PHASE_DELIVER, /* every session ended: waiting for the sinks */
    LOAD_PHASE_DONE,
};

struct load_ticker {
    struct load_run *run;
    eng_handle_t h;
    unsigned tick_ms;
    enum load_phase phase;
    uint64_t next_progress_ms;
    uint64_t next_read_ms;
    uint64_t last_injected; /* at the previous progress line */
    uint64_t last_delivered;
    uint64_t last_progress_ms;
    struct load_sink_snap *sink0, *sink_now; /* borrowed */
    uint64_t delivered;
    uint64_t delivered_ms; /* when delivered last grew */
    bool delivered_all;
    int sigint; /* SIGINTs received */
    eng_handle_t sig_h;
    int sig_fd;
};

static void refill(struct load_run *run, uint64_t now)
{
    const struct load_config *cfg = run->cfg;
    if (cfg->rate <= 0)
        return;
    /* A burst of at most 50 ms of the rate (at least one message) after a stall. */
    double cap = fmax(1.0, cfg->rate / 20.0);
    run->tokens = fmin(cap, run->tokens + (double)(now - run->tokens_ms) * cfg->rate / 1000.0);
    run->tokens_ms = now;
    while (run->wait_len > 0 && run->tokens >= 1.0) {
        unsigned idx = run->waiters[run->wait_head];
        run->wait_head = (run->wait_head + 1) % cfg->conns;
        run->wait_len--;
        run->tokens -= 1.0;
        run->granted = idx + 1;
        run->ops->token(run, idx, true);
        run->granted = 0;
    }
}

/* Tells every session waiting for a token that there will be none. */
static void drain_waiters(struct load_run *run)
{
    while (run->wait_len > 0) {
        unsigned idx = run->waiters[run->wait_head];
        run->wait_head = (run->wait_head + 1) % run->cfg->conns;
        run->wait_len--;
        run->ops->token(run, idx, false);
    }
}

static void progress(struct load_ticker *t, uint64_t now, bool final)
{
    struct load_run *run = t->run;
    const struct load_config *cfg = run->cfg;
    if (cfg->quiet)
        return;
    double dt = (double)(now - t->last_progress_ms) / 1000.0;
    if (dt <= 0)
        dt = 1e-3;
    double inj_rate = (double)(run->c.injected - t->last_injected) / dt;
    double del_rate = (double)(t->delivered - t->last_delivered) / dt;
    t->last_injected = run->c.injected;
    t->last_delivered = t->delivered;
    t->last_progress_ms = now;
    char line[256];
    int n = snprintf(line, sizeof(line),
                     "%6.1fs %s injected %llu (%.0f/s) delivered %s%llu (%.0f/s) refused %llu "
                     "lost %llu conns %u",
                     (double)(now - run->start_ms) / 1000.0,
                     t->phase == LOAD_PHASE_INJECT ? "inject " : "deliver",
                     (unsigned long long)run->c.injected, inj_rate, cfg->nstats ? "" : "? ",
                     (unsigned long long)t->delivered, del_rate, (unsigned long long)run->c.refused,
                     (unsigned long long)run->c.lost, run->ops->live(run));
    if (cfg->count != 0 && cfg->tty) {
        /* A bar for the count: what is known to be finished, out of N. */
        unsigned width = 20, full = (unsigned)(width * run->c.injected / cfg->count);
        char bar[24];
        for (unsigned i = 0; i < width; i++)
            bar[i] = i < full ? '#' : '.';
        bar[width] = '\0';
        n += snprintf(line + n, sizeof(line) - (size_t)n, " [%s]", bar);
    }
    if (cfg->tty)
        printf("\r%s\033[K%s", line, final ? "\n" : "");
    else
        printf("%s\n", line);
    fflush(stdout);
}

static void ticker_stop(struct load_ticker *t)
{
    t->phase = LOAD_PHASE_DONE;
    eng_handle_close(t->run->loop, t->h);
    if (t->sig_h != 0)
        eng_handle_close(t->run->loop, t->sig_h);
}

static void read_sinks(struct load_ticker *t, uint64_t now)
{
    if (t->run->cfg->nstats == 0)
        return;
    if (load_sink_read(t->run->cfg, t->sink_now) != 0)
        return; /* a file being replaced: next time */
    uint64_t d = t->sink_now->load_messages - t->sink0->load_messages;
    if (d != t->delivered) {
        t->delivered = d;
        t->delivered_ms = now;
    }
}

static void tick(struct load_ticker *t)
{
    struct load_run *run = t->run;
    const struct load_config *cfg = run->cfg;
    uint64_t now = eng_loop_now_ms(run->loop);

    if (t->phase == LOAD_PHASE_INJECT) {
        if (cfg->duration_s > 0 && (double)(now - run->start_ms) >= cfg->duration_s * 1000.0)
            run->no_more = true;
        if (!run->gave_up && run->errors_in_row >= LOAD_GIVE_UP * cfg->conns) {
            /* Retrying forever would hide a daemon that is down or refusing us. */
            run->gave_up = run->no_more = true;
            fprintf(stderr, "floormta-load: %u connection errors in a row: giving up\n",
                    run->errors_in_row);
        }
        refill(run, now);
        if (run->no_more)
            drain_waiters(run);
        for (unsigned i = 0; i < cfg->conns; i++)
            run->ops->poke(run, i);
        if (run->ops->live(run) == 0) {
            run->inject_end_ms = now;
            t->phase = LOAD_PHASE_DELIVER;
            t->next_read_ms = now;
        }
    }
    if (now >= t->next_read_ms) {
        read_sinks(t, now);
        t->next_read_ms = now + 200;
    }
    if (t->phase == LOAD_PHASE_DELIVER) {
        bool all = cfg->nstats == 0 || t->delivered >= run->c.injected;
        bool late = (double)(now - run->inject_end_ms) >= cfg->wait_s * 1000.0;
        if (all || late || t->sigint > 1) {
            t->delivered_all = cfg->nstats > 0 && t->delivered >= run->c.injected;
            progress(t, now, true);
            ticker_stop(t);
            return;
        }
    }
    if (now >= t->next_progress_ms) {
        progress(t, now, false);
        t->next_progress_ms = now + (cfg->tty ? 250 : 1000);
    }
    int err = eng_op_timer(run->loop, t->h, t->tick_ms);
    if (err != 0) {
        eng_log(ENG_LOG_ERROR, "load: ticker: %s", eng_strerror(err));
        run->ops->close_all(run);
        ticker_stop(t);
    }
}

static void ticker_complete(void *ctx, const struct eng_completion *comp)
{
    struct load_ticker *t = ctx;
    if (comp->res == -ECANCELED || t->phase == LOAD_PHASE_DONE)
        return;
    tick(t);
}

static const struct eng_handle_ops ticker_ops = {
    .on_complete = ticker_complete,
};

static void signal_complete(void *ctx, const struct eng_completion *comp)
{
    struct load_ticker *t = ctx;
    if (comp->res == -ECANCELED || t->phase == LOAD_PHASE_DONE)
        return;
    struct signalfd_siginfo si;
    if (comp->res > 0 && read(t->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        t->sigint++;
        t->run->no_more = true;
        if (t->sigint > 1)
            t->run->ops->close_all(t->run);
        fprintf(stderr, "\nfloormta-load: %s\n",
                t->sigint > 1 ? "interrupted: reporting now"
                              : "stopping injection (again to skip the wait)");
    }
    if (eng_op_poll(t->run->loop, t->sig_h, POLLIN, 0) != 0)
        t->sig_h = 0;
}

static void signal_release(void *ctx)
{
    struct load_ticker *t = ctx;
    close(t->sig_fd);
    t->sig_fd = -1;
}

static const struct eng_handle_ops signal_ops = {
    .on_complete = signal_complete,
    .on_release = signal_release,
};

/* ---- arguments --------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: floormta-load (--smtp ADDR:PORT | --http URL --token T)\n"
            "                     (--count N | --duration SECONDS) [options]\n"
            "  --http URL           inject through the HTTP API (http://HOST:PORT), not SMTP\n"
            "  --token T            the API's bearer token (with --http)\n"
            "  --conns C            concurrent SMTP connections (default 8)\n"
            "  --rate R             target messages/s over all connections (default: no limit)\n"
            "  --domains K          recipient domains d0000..d<K-1>.SUFFIX (default 10)\n"
            "  --size BYTES         message size, header included (default 10240; k suffix)\n"
            "  --suffix DOMAIN      recipient domain suffix (default load.floormta.test)\n"
            "  --from ADDR          sender (default load@floormta-load.test)\n"
            "  --helo NAME          EHLO name (default floormta-load.test)\n"
            "  --no-pipelining      one command at a time even when PIPELINING is offered\n"
            "  --stats-file FILE    a floormta-sink --stats-file (repeatable): delivered, latency\n"
            "  --metrics URL        the daemon's http://HOST:PORT/metrics: TLS handshakes, "
            "refusals\n"
            "  --pid PID            the daemon's pid: CPU seconds and peak RSS\n"
            "  --json FILE          also write the report as JSON\n"
            "  --wait SECONDS       how long to wait for deliveries after injecting (default 60)\n"
            "  --timeout SECONDS    connect / reply / send timeout (default 30)\n"
            "  --quiet              no progress lines\n"
            "  --log-level LEVEL    error|warn|info|debug (default warn)\n");
}

static int parse_addr(const char *spec, struct load_config *cfg)
{
    char buf[128];
    if (strlen(spec) >= sizeof(buf))
        return -EINVAL;
    strcpy(buf, spec);
    char *host = buf, *port;
    memset(&cfg->addr, 0, sizeof(cfg->addr));
    if (buf[0] == '[') {
        char *close = strchr(buf, ']');
        if (close == NULL || close[1] != ':')
            return -EINVAL;
        *close = '\0';
        host = buf + 1;
        port = close + 2;
    } else {
        char *colon = strrchr(buf, ':');
        if (colon == NULL)
            return -EINVAL;
        *colon = '\0';
        port = colon + 1;
    }
    char *end;
    unsigned long p = strtoul(port, &end, 10);
    if (*port == '\0' || *end != '\0' || p == 0 || p > 65535)
        return -EINVAL;
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    struct sockaddr_in *a4 = (struct sockaddr_in *)&cfg->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&cfg->addr;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)p);
        cfg->addrlen = sizeof(*a4);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)p);
        cfg->addrlen = sizeof(*a6);
    } else {
        return -EINVAL;
    }
    return 0;
}

/* A non-negative number, with an optional k / m suffix (x1000 / x1000000 for counts,
 * x1024 / x1048576 for sizes). */
static int parse_num(const char *s, bool binary, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno != 0 || v < 0 || !isfinite(v))
        return -EINVAL;
    if (*end == 'k' || *end == 'K') {
        v *= binary ? 1024 : 1000;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        v *= binary ? 1048576 : 1000000;
        end++;
    }
    if (*end != '\0')
        return -EINVAL;
    *out = v;
    return 0;
}

/* Returns 0, or 1 (the exit status) after printing why. */
static int parse_args(int argc, char **argv, struct load_config *cfg)
{
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(opt, "--no-pipelining") == 0) {
            cfg->pipelining = false;
            continue;
        }
        if (strcmp(opt, "--quiet") == 0) {
            cfg->quiet = true;
            continue;
        }
        if (strncmp(opt, "--", 2) != 0 || i + 1 >= argc) {
            fprintf(stderr, "floormta-load: %s: unknown option or missing value\n", opt);
            usage(stderr);
            return 1;
        }
        const char *val = argv[++i];
        double v = 0;
        bool num_ok = parse_num(val, strcmp(opt, "--size") == 0, &v) == 0;
        if (strcmp(opt, "--smtp") == 0) {
            cfg->smtp = val;
            if (parse_addr(val, cfg) != 0) {
                fprintf(stderr, "floormta-load: --smtp %s: expected IPv4:PORT or [IPv6]:PORT\n",
                        val);
                return 1;
            }
        } else if (strcmp(opt, "--http") == 0) {
            static char hostport[128];
            const char *hp = strncmp(val, "http://", 7) == 0 ? val + 7 : NULL;
            size_t n = hp != NULL ? strcspn(hp, "/") : 0;
            cfg->http = val;
            if (hp == NULL || n == 0 || n >= sizeof(hostport) ||
                strspn(hp + n, "/") != strlen(hp + n)) {
                fprintf(stderr, "floormta-load: --http %s: expected http://HOST:PORT\n", val);
                return 1;
            }
            memcpy(hostport, hp, n);
            hostport[n] = '\0';
            cfg->http_host = hostport;
            if (parse_addr(hostport, cfg) != 0) {
                fprintf(stderr,
                        "floormta-load: --http %s: expected an IPv4 or [IPv6] host and a port\n",
                        val);
                return 1;
            }
        } else if (strcmp(opt, "--token") == 0) {
            cfg->token = val;
        } else if (strcmp(opt, "--count") == 0 && num_ok) {
            cfg->count = (uint64_t)v;
        } else if (strcmp(opt, "--duration") == 0 && num_ok) {
            cfg->duration_s = v;
        } else if (strcmp(opt, "--rate") == 0 && num_ok) {
            cfg->rate = v;
        } else if (strcmp(opt, "--conns") == 0 && num_ok && v >= 1 && v <= LOAD_CONNS_MAX) {
            cfg->conns = (unsigned)v;
        } else if (strcmp(opt, "--domains") == 0 && num_ok && v >= 1 && v <= 10000) {
            cfg->domains = (unsigned)v;
        } else if (strcmp(opt, "--size") == 0 && num_ok && v <= 64.0 * 1048576) {
            cfg->size = (size_t)v;
        } else if (strcmp(opt, "--suffix") == 0) {
            cfg->suffix = val;
        } else if (strcmp(opt, "--from") == 0) {
            cfg->from = val;
        } else if (strcmp(opt, "--helo") == 0) {
            cfg->helo = val;
        } else if (strcmp(opt, "--stats-file") == 0) {
            if (cfg->nstats == LOAD_STATS_MAX) {
                fprintf(stderr, "floormta-load: at most %d --stats-file\n", LOAD_STATS_MAX);
                return 1;
            }
            cfg->stats_files[cfg->nstats++] = val;
        } else if (strcmp(opt, "--metrics") == 0) {
            cfg->metrics_url = val;
        } else if (strcmp(opt, "--pid") == 0 && num_ok && v >= 1) {
            cfg->pid = (long)v;
        } else if (strcmp(opt, "--json") == 0) {
            cfg->json = val;
        } else if (strcmp(opt, "--wait") == 0 && num_ok) {
            cfg->wait_s = v;
        } else if (strcmp(opt, "--timeout") == 0 && num_ok && v >= 0.001 && v < 86400) {
            cfg->timeout_ms = (unsigned)(v * 1000);
        } else if (strcmp(opt, "--log-level") == 0) {
            enum eng_log_level level;
            if (eng_log_level_parse(val, &level) != 0) {
                fprintf(stderr, "floormta-load: bad --log-level '%s'\n", val);
                return 1;
            }
            eng_log_set_level(level);
        } else {
            fprintf(stderr, "floormta-load: bad %s '%s'\n", opt, val);
            usage(stderr);
            return 1;
        }
    }
    if ((cfg->smtp == NULL) == (cfg->http == NULL)) {
        fprintf(stderr, "floormta-load: give one of --smtp ADDR:PORT and --http URL\n");
        return 1;
    }
    if (cfg->http != NULL) {
        /* Copied verbatim into the JSON and the headers: nothing to escape. */
        const char *vals[] = { cfg->from, cfg->suffix, cfg->token ? cfg->token : "" };
        for (size_t i = 0; i < 3; i++)
            for (const char *p = vals[i]; *p != '\0'; p++)
                if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20 || *p == 0x7f) {
                    fprintf(stderr, "floormta-load: --from, --suffix and --token: no quotes, "
                                    "backslashes or control characters\n");
                    return 1;
                }
        if (cfg->token == NULL || strlen(cfg->token) > 512) {
            fprintf(stderr, "floormta-load: --http needs --token T (at most 512 bytes)\n");
            return 1;
        }
    }
    if (cfg->count == 0 && cfg->duration_s <= 0) {
        fprintf(stderr, "floormta-load: give --count N or --duration SECONDS\n");
        return 1;
    }
    if (strlen(cfg->suffix) > 200 || strlen(cfg->from) > 200 || strlen(cfg->helo) > 200) {
        fprintf(stderr, "floormta-load: --suffix, --from and --helo: at most 200 bytes\n");
        return 1;
    }
    return 0;
}

/* ---- start-up ---------------------------------------------------------------------------------
 */

/* The body every message shares: the blank line that ends the header, printable lines
 * of 76 characters (none starts with '.', so no dot-stuffing), the final ".". */
static int build_body(struct load_run *run)
{
    size_t target = run->cfg->size > LOAD_HDR_ROOM ? run->cfg->size - LOAD_HDR_ROOM : 0;
    size_t cap = 2 + target + 80 + 3;
    char *b = malloc(cap);
    if (b == NULL)
        return -ENOMEM;
    size_t n = 0;
    b[n++] = '\r';
    b[n++] = '\n';
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    uint32_t x = 2463534242u; /* xorshift: text that does not compress to nothing */
    while (n < 2 + target) {
        size_t line = target + 2 - n >= 78 ? 76 : (target + 2 - n > 2 ? target - n : 1);
        for (size_t i = 0; i < line; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            b[n++] = alphabet[x % (sizeof(alphabet) - 1)];
        }
        b[n++] = '\r';
        b[n++] = '\n';
    }
    memcpy(b + n, ".\r\n", 3);
    n += 3;
    run->body = b;
    run->body_len = n;
    return 0;
}

/* The end scrape. A worker publishes its metrics every 250 ms, but an idle worker's
 * loop wakes only once a second (engine/group_worker.c), so the last deliveries can
 * take ~1.25 s to show. Scrapes until the daemon counts at least as many successful
 * deliveries as the sinks received, or LOAD_METRICS_SETTLE_MS; without sinks, waits that long once.
 */
static void settle_metrics(const struct load_config *cfg, struct load_report_in *rep,
                           uint64_t delivered)
{
    /* Counted by the workers, published with the TLS figures (recipients_delivered
     * comes from the queue and is ahead of them). */
    static const char key[] = "floormta_deliveries_total{result=\"ok\"}";
    struct timespec step = { .tv_nsec = 250 * 1000000L };
    for (unsigned waited = 0;; waited += 250) {
        bool last = waited >= LOAD_METRICS_SETTLE_MS;
        if (cfg->nstats == 0 && !last) {
            nanosleep(&step, NULL);
            continue;
        }
        if (load_metrics_scrape(cfg->metrics_url, &rep->m1) != 0 && last)
            return;
        double d = load_metrics_get(&rep->m1, key) - load_metrics_get(&rep->m0, key);
        if (last || (rep->m1.ok && cfg->nstats > 0 && d >= (double)delivered))
            return;
        nanosleep(&step, NULL);
    }
}

static int open_signals(struct load_ticker *t)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    t->sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (t->sig_fd < 0)
        return -errno;
    int err = eng_handle_open(t->run->loop, t->sig_fd, &signal_ops, t, &t->sig_h);
    if (err != 0) {
        close(t->sig_fd);
        t->sig_fd = -1;
        return err;
    }
    return eng_op_poll(t->run->loop, t->sig_h, POLLIN, 0);
}

int main(int argc, char **argv)
{
    static struct load_config cfg = {
        .conns = 8,
        .domains = 10,
        .size = 10240,
        .suffix = "load.floormta.test",
        .from = "load@floormta-load.test",
        .helo = "floormta-load.test",
        .pipelining = true,
        .wait_s = 60,
        .timeout_ms = 30000,
    };
    eng_log_set_level(ENG_LOG_WARN);
    int rc = parse_args(argc, argv, &cfg);
    if (rc != 0)
        return rc;
    cfg.tty = isatty(STDOUT_FILENO);
    signal(SIGPIPE, SIG_IGN);

    /* Before: the baselines the report subtracts. */
    static struct load_report_in rep;
    rep.cfg = &cfg;
    if (cfg.nstats > 0 && load_sink_read(&cfg, &rep.sink0) != 0) {
        fprintf(stderr, "floormta-load: cannot read the --stats-file(s): is the sink running "
                        "with --stats-file?\n");
        return 1;
    }
    if (cfg.metrics_url != NULL && load_metrics_scrape(cfg.metrics_url, &rep.m0) != 0)
        fprintf(stderr, "floormta-load: --metrics %s: cannot scrape; no TLS or refusal figures\n",
                cfg.metrics_url);
    if (cfg.pid != 0) {
        rep.hwm_reset = load_proc_reset_hwm(cfg.pid) == 0;
        if (load_proc_read(cfg.pid, &rep.p0) != 0)
            fprintf(stderr, "floormta-load: --pid %ld: cannot read /proc\n", cfg.pid);
    }

    static struct load_run run;
    static struct load_sink_snap sink_now;
    static struct load_ticker t = { .sig_fd = -1 };
    run.cfg = &cfg;
    run.ops = cfg.http != NULL ? &load_http_session_ops : &load_smtp_session_ops;
    if (build_body(&run) != 0 || (cfg.http != NULL && load_http_build_body(&run) != 0))
        return 1;
    run.waiters = calloc(cfg.conns, sizeof(*run.waiters));
    if (run.waiters == NULL)
        return 1;
    struct eng_loop_config lc = { .entries = 4096, .max_handles = LOAD_CONNS_MAX + 16 };
    int err = eng_loop_new(&lc, &run.loop);
    if (err != 0) {
        fprintf(stderr, "floormta-load: event loop: %s\n", eng_strerror(err));
        return 1;
    }
    run.ops->init(&run);

    t.run = &run;
    t.tick_ms = cfg.rate > 0 ? 2 : 10;
    t.sink0 = &rep.sink0;
    t.sink_now = &sink_now;
    run.start_ms = eng_loop_now_ms(run.loop);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    run.run_id = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    run.tokens = 1.0;
    run.tokens_ms = run.start_ms;
    t.last_progress_ms = run.start_ms;
    t.next_progress_ms = run.start_ms + (cfg.tty ? 250 : 1000);
    if (open_signals(&t) != 0 || eng_handle_open(run.loop, -1, &ticker_ops, &t, &t.h) != 0) {
        fprintf(stderr, "floormta-load: cannot start the ticker\n");
        return 1;
    }
    tick(&t); /* starts every session */
    err = eng_loop_run(run.loop);
    if (err != 0)
        fprintf(stderr, "floormta-load: loop: %s\n", eng_strerror(err));
    uint64_t end_ms = eng_loop_now_ms(run.loop);
    if (run.inject_end_ms == 0)
        run.inject_end_ms = end_ms;

    /* After: what the sinks, the daemon and the kernel say now. */
    if (cfg.nstats > 0)
        load_sink_read(&cfg, &rep.sink1);
    if (cfg.metrics_url != NULL)
        settle_metrics(&cfg, &rep, t.delivered);
    if (cfg.pid != 0)
        load_proc_read(cfg.pid, &rep.p1);
    rep.c = &run.c;
    rep.inject_s = (double)(run.inject_end_ms - run.start_ms) / 1000.0;
    /* Deliveries end at the last arrival the sinks saw (exact), not when the ticker
     * noticed it (up to 200 ms later: the sinks rewrite their files that often). */
    uint64_t del_ms = t.delivered_ms > 0 ? t.delivered_ms : end_ms;
    rep.deliver_s = (double)(del_ms - run.start_ms) / 1000.0;
    if (rep.sink1.load_last_ns > run.run_id && t.delivered > 0)
        rep.deliver_s = (double)(rep.sink1.load_last_ns - run.run_id) / 1e9;
    rep.delivered_all = t.delivered_all;
    if (load_report(&rep) != 0 || run.gave_up)
        rc = 1;
    else if (cfg.nstats > 0 && !t.delivered_all)
        rc = 2;

    eng_loop_free(run.loop);
    run.ops->free(&run);
    free(run.waiters);
    free(run.body);
    free(run.http_body);
    return rc;
}

int load_conn_open(struct load_run *run, const struct eng_handle_ops *ops, void *ctx, int *fd,
                   eng_handle_t *h)
{
    *h = 0;
    *fd = socket(run->cfg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (*fd >= 0) {
        int one = 1;
        setsockopt(*fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (eng_handle_open(run->loop, *fd, ops, ctx, h) == 0)
            return 0;
        close(*fd);
        *fd = -1;
        *h = 0;
    }
    run->c.conn_errors++;
    return -1;
}

uint64_t load_realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

bool load_out_next(struct load_out *o, const char *own, const char *body, size_t body_len,
                   const char **buf, size_t *len)
{
    if (o->sending != 0)
        return false;
    o->sending_body = o->sent == o->len && o->body_queued;
    if (o->sent < o->len) {
        *buf = own + o->sent;
        *len = o->len - o->sent;
    } else if (o->sending_body) {
        *buf = body + o->body_sent;
        *len = body_len - o->body_sent;
    } else {
        return false;
    }
    return true;
}

void load_out_sent(struct load_out *o, size_t n, size_t body_len)
{
    if (!o->sending_body) {
        o->sent += n;
        if (o->sent == o->len)
            o->sent = o->len = 0;
    } else {
        o->body_sent += n;
        if (o->body_sent == body_len)
            o->body_queued = false;
    }
    o->sending = 0;
}
