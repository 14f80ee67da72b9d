/*
 * engine/cmd_send.c — `floormta send`: one message into the running daemon, for a
 * quick test, through its SMTP submission listener (by default the configuration's
 * first listen.smtp address; the embedded default's is 127.0.0.1:2525).
 *
 * SMTP rather than the HTTP API: the message goes in exactly as written (headers and
 * all, no JSON or MIME building), it needs no token, and it exercises the path real
 * clients use. It is a small blocking client over a plain TCP socket, one command and
 * one reply at a time, because it sends one message and exits: the daemon's event
 * loop machinery would buy nothing here. No STARTTLS and no AUTH, so it is for the
 * local listener, where relay_networks lets loopback submit.
 *
 * The content is streamed through the engine's DATA encoder (smtp_dotstuff: CRLF line
 * endings, leading dots doubled, the final dot), so a file of any size and any line
 * ending goes through in 16 KiB steps. Replies go through the engine's bounded reply
 * parser (smtp_reply), and every read and write has a timeout, so a server that hangs
 * or floods cannot hang the tool.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "engine/addr.h"
#include "engine/cli.h"
#include "engine/config.h"
#include "engine/errors.h"
#include "engine/smtp_dotstuff.h"
#include "engine/smtp_reply.h"

#define SEND_MAX_RCPT  1000
#define EXIT_ACCEPTED  0
#define EXIT_ERROR     1
#define EXIT_REFUSED   2
#define CHUNK          16384
#define DEFAULT_TMO_MS 60000 /* the 250 after DATA waits for the spool's commit */

static void send_usage(FILE *f)
{
    fprintf(f, "usage: floormta send --from ADDR --to ADDR [--to ADDR]... [FILE|-]\n"
               "                     [--server HOST:PORT] [--config FILE] [--helo NAME]\n"
               "                     [--source IP] [--timeout SECONDS]\n"
               "\n"
               "Submits one message, read from FILE or standard input (\"-\" or none), to the\n"
               "running daemon over SMTP (plain, no AUTH: for a listener whose relay_networks\n"
               "include this host). The content is sent as it is, line endings made CRLF.\n"
               "  --server     default: the first listen.smtp address of --config's file, or\n"
               "               of the embedded default (127.0.0.1:2525)\n"
               "  --from \"\"    the null sender <>\n"
               "  --source     the local address to connect from\n"
               "  --timeout    per reply and per write, default 60\n"
               "Prints the queue id. Exit 0: accepted; 2: refused by the server; 1: error.\n");
}

struct send_conn {
    int fd;
    const char *server; /* for messages */
    size_t off, len;    /* unparsed bytes in buf[off, len) */
    char buf[4096];
    struct smtp_reply_parser parser;
    struct smtp_reply reply;
};

/* "host:port" or "[v6]:port" by name or literal, into a connected socket. */
static int conn_open(struct send_conn *c, const char *server, const char *source,
                     unsigned timeout_ms)
{
    char host[512];
    const char *port = "25";
    struct sockaddr_storage ss;
    socklen_t sslen;
    struct addrinfo *ai = NULL;
    if (eng_addr_parse(server, 25, &ss, &sslen) != 0) {
        /* A name: what follows the last ':' is the port. */
        if (strlen(server) >= sizeof(host)) {
            fprintf(stderr, "floormta send: --server is too long\n");
            return -EINVAL;
        }
        memcpy(host, server, strlen(server) + 1);
        char *colon = strrchr(host, ':');
        if (colon) {
            *colon = '\0';
            port = colon + 1;
        }
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
        int gai = getaddrinfo(host, port, &hints, &ai);
        if (gai != 0) {
            fprintf(stderr, "floormta send: %s: %s\n", server, gai_strerror(gai));
            return -EINVAL;
        }
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        sslen = ai->ai_addrlen;
        freeaddrinfo(ai);
    }
    c->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -errno;
    /* On Linux SO_SNDTIMEO bounds connect(2) too. */
    struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (source) {
        struct sockaddr_storage src;
        socklen_t srclen;
        if (eng_addr_parse(source, 0, &src, &srclen) != 0) {
            fprintf(stderr, "floormta send: --source %s is not an IP address\n", source);
            return -EINVAL;
        }
        if (bind(c->fd, (struct sockaddr *)&src, srclen) != 0) {
            int e = errno;
            fprintf(stderr, "floormta send: cannot use %s as the source: %s\n", source,
                    strerror(e));
            return -e;
        }
    }
    if (connect(c->fd, (struct sockaddr *)&ss, sslen) != 0) {
        int e = errno == EINPROGRESS ? ETIMEDOUT : errno;
        fprintf(stderr, "floormta send: cannot connect to %s: %s\n", server, strerror(e));
        return -e;
    }
    return 0;
}

static int conn_write(struct send_conn *c, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN ? -ETIMEDOUT : -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The next complete reply into c->reply. */
static int conn_reply(struct send_conn *c)
{
    smtp_reply_reset(&c->parser, &c->reply);
    for (;;) {
        if (c->off < c->len) {
            size_t used = 0;
            bool complete = false;
            int rc = smtp_reply_parse(&c->parser, &c->reply, c->buf + c->off, c->len - c->off,
                                      &used, &complete);
            if (rc != 0)
                return rc;
            c->off += used;
            if (complete)
                return 0;
            continue;
        }
        ssize_t n = recv(c->fd, c->buf, sizeof(c->buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN ? -ETIMEDOUT : -errno;
        if (n == 0)
            return SMTP_ERR_CLOSED;
        c->off = 0;
        c->len = (size_t)n;
    }
}

/* Sends one command line (without CRLF) and reads its reply. Returns EXIT_ACCEPTED
 * when the reply's code is `want` class (2 or 3), EXIT_REFUSED for a 4xx/5xx (printed),
 * EXIT_ERROR otherwise (printed). */
static int command(struct send_conn *c, const char *line, int want)
{
    int rc = 0;
    if (line) {
        char out[1100];
        int n = snprintf(out, sizeof(out), "%s\r\n", line);
        rc = conn_write(c, out, (size_t)n);
    }
    if (rc == 0)
        rc = conn_reply(c);
    if (rc != 0) {
        fprintf(stderr, "floormta send: %s: %s%s%s\n", c->server, line ? line : "greeting",
                line ? ": " : ": ", eng_describe_error(rc));
        return EXIT_ERROR;
    }
    if (c->reply.code / 100 == want)
        return EXIT_ACCEPTED;
    char sum[512];
    smtp_reply_summary(&c->reply, sum, sizeof(sum));
    fprintf(stderr, "floormta send: %s: %s: %s\n", c->server, line ? line : "greeting", sum);
    return c->reply.code >= 400 ? EXIT_REFUSED : EXIT_ERROR;
}

/* The content, encoded, then the final dot. A read error leaves the transaction
 * without its end: the caller closes, and the server drops the partial message. */
static int send_content(struct send_conn *c, FILE *in, const char *name)
{
    struct smtp_dotstuff ds;
    smtp_dotstuff_init(&ds);
    char raw[CHUNK], enc[CHUNK];
    size_t n;
    while ((n = fread(raw, 1, sizeof(raw), in)) > 0) {
        size_t done = 0;
        while (done < n) {
            size_t used = 0;
            size_t out = smtp_dotstuff_encode(&ds, raw + done, n - done, &used, enc, sizeof(enc));
            done += used;
            int rc = conn_write(c, enc, out);
            if (rc != 0) {
                fprintf(stderr, "floormta send: %s: sending the message: %s\n", c->server,
                        strerror(-rc));
                return EXIT_ERROR;
            }
        }
    }
    if (ferror(in)) {
        fprintf(stderr, "floormta send: cannot read %s\n", name);
        return EXIT_ERROR;
    }
    size_t out = smtp_dotstuff_finish(&ds, enc, sizeof(enc));
    int rc = conn_write(c, enc, out);
    if (rc != 0) {
        fprintf(stderr, "floormta send: %s: sending the message: %s\n", c->server, strerror(-rc));
        return EXIT_ERROR;
    }
    return EXIT_ACCEPTED;
}

/* The queue id of "250 2.0.0 Ok: queued as ID", else the reply's whole first line. */
static void print_queue_id(const struct smtp_reply *r)
{
    const char *q = strstr(r->text, "queued as ");
    if (q) {
        q += strlen("queued as ");
        printf("%.*s\n", (int)strcspn(q, " \r\n"), q);
        return;
    }
    char sum[512];
    printf("%s\n", smtp_reply_summary(r, sum, sizeof(sum)));
}

/* An address that fits between < and > on one command line. */
static bool address_ok(const char *a)
{
    if (strlen(a) > 900)
        return false;
    for (const char *p = a; *p; p++)
        if ((unsigned char)*p < 0x21 || *p == 0x7f || *p == '<' || *p == '>')
            return false;
    return true;
}

static int transaction(struct send_conn *c, const char *helo, const char *from, char *const *to,
                       size_t nto, FILE *in, const char *name)
{
    char line[1100];
    int rc = command(c, NULL, 2);
    if (rc != EXIT_ACCEPTED)
        return rc;
    snprintf(line, sizeof(line), "EHLO %s", helo);
    if ((rc = command(c, line, 2)) == EXIT_REFUSED && c->reply.code >= 500) {
        snprintf(line, sizeof(line), "HELO %s", helo); /* a server without ESMTP */
        rc = command(c, line, 2);
    }
    if (rc != EXIT_ACCEPTED)
        return rc;
    snprintf(line, sizeof(line), "MAIL FROM:<%s>", from);
    if ((rc = command(c, line, 2)) != EXIT_ACCEPTED)
        return rc;
    /* Every recipient or none: a test that names three wants to know that one of them
     * was refused rather than have the message go to two. */
    for (size_t i = 0; i < nto; i++) {
        snprintf(line, sizeof(line), "RCPT TO:<%s>", to[i]);
        if ((rc = command(c, line, 2)) != EXIT_ACCEPTED)
            return rc;
    }
    if ((rc = command(c, "DATA", 3)) != EXIT_ACCEPTED)
        return rc;
    if ((rc = send_content(c, in, name)) != EXIT_ACCEPTED)
        return rc;
    if ((rc = command(c, NULL, 2)) != EXIT_ACCEPTED)
        return rc;
    print_queue_id(&c->reply);
    return EXIT_ACCEPTED;
}

/* The server to use: --server, else the configuration's first SMTP listener. */
static int default_server(const char *config, char *out, size_t cap)
{
    struct eng_config *cfg = NULL;
    if (eng_cli_config("send", config, &cfg) != 0)
        return -EINVAL;
    int rc = 0;
    if (cfg->listen.nsmtp == 0 || cfg->listen.smtp[0].address == NULL) {
        fprintf(stderr, "floormta send: %s has no listen.smtp address; give --server\n",
                config ? config : "the embedded default");
        rc = -ENOENT;
    } else {
        snprintf(out, cap, "%s", cfg->listen.smtp[0].address);
    }
    eng_config_free(cfg);
    return rc;
}

int eng_cmd_send(int argc, char **argv)
{
    const char *from = NULL, *server = NULL, *config = NULL, *helo = NULL, *source = NULL;
    char *to[SEND_MAX_RCPT];
    size_t nto = 0;
    unsigned timeout_ms = DEFAULT_TMO_MS;
    static const struct option opts[] = { { "from", required_argument, NULL, 'f' },
                                          { "to", required_argument, NULL, 't' },
                                          { "server", required_argument, NULL, 's' },
                                          { "config", required_argument, NULL, 'c' },
                                          { "helo", required_argument, NULL, 'H' },
                                          { "source", required_argument, NULL, 'S' },
                                          { "timeout", required_argument, NULL, 'T' },
                                          { "help", no_argument, NULL, 'h' },
                                          { NULL, 0, NULL, 0 } };
    optind = 1;
    for (int o; (o = getopt_long(argc, argv, "f:t:s:c:H:S:T:h", opts, NULL)) != -1;) {
        switch (o) {
        case 'f': from = optarg; break;
        case 't':
            if (nto == SEND_MAX_RCPT) {
                fprintf(stderr, "floormta send: at most %d recipients\n", SEND_MAX_RCPT);
                return EXIT_ERROR;
            }
            to[nto++] = optarg;
            break;
        case 's': server = optarg; break;
        case 'c': config = optarg; break;
        case 'H': helo = optarg; break;
        case 'S': source = optarg; break;
        case 'T': {
            char *end;
            unsigned long s = strtoul(optarg, &end, 10);
            if (*optarg == '\0' || *end || s == 0 || s > 3600) {
                fprintf(stderr, "floormta send: --timeout %s: 1 to 3600 seconds\n", optarg);
                return EXIT_ERROR;
            }
            timeout_ms = (unsigned)s * 1000u;
            break;
        }
        case 'h': send_usage(stdout); return EXIT_ACCEPTED;
        default: send_usage(stderr); return EXIT_ERROR;
        }
    }
    if (from == NULL || nto == 0 || argc - optind > 1) {
        send_usage(stderr);
        return EXIT_ERROR;
    }
    bool bad = !address_ok(from) && *from != '\0';
    for (size_t i = 0; i < nto && !bad; i++)
        bad = *to[i] == '\0' || !address_ok(to[i]);
    if (bad || (helo && !address_ok(helo))) {
        fprintf(stderr, "floormta send: an address or --helo has spaces, controls or <>\n");
        return EXIT_ERROR;
    }
    char hostname[256] = "localhost";
    if (helo == NULL) {
        gethostname(hostname, sizeof(hostname) - 1);
        helo = address_ok(hostname) && hostname[0] ? hostname : "localhost";
    }

    /* The input first: a missing file is reported without touching the server. */
    const char *name = optind < argc ? argv[optind] : "-";
    FILE *in = strcmp(name, "-") == 0 ? stdin : fopen(name, "re");
    if (in == NULL) {
        fprintf(stderr, "floormta send: cannot open %s: %s\n", name, strerror(errno));
        return EXIT_ERROR;
    }
    char server_buf[300];
    if (server == NULL) {
        if (default_server(config, server_buf, sizeof(server_buf)) != 0) {
            if (in != stdin)
                fclose(in);
            return EXIT_ERROR;
        }
        server = server_buf;
    }

    struct send_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        if (in != stdin)
            fclose(in);
        return EXIT_ERROR;
    }
    c->fd = -1;
    c->server = server;
    int rc = conn_open(c, server, source, timeout_ms) == 0
                     ? transaction(c, helo, from, to, nto, in, name)
                     : EXIT_ERROR;
    if (c->fd >= 0) {
        /* Polite end; its reply does not change the outcome. */
        if (conn_write(c, "QUIT\r\n", 6) == 0)
            (void)conn_reply(c);
        close(c->fd);
    }
    free(c);
    if (in != stdin)
        fclose(in);
    return rc;
}
