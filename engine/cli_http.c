/*
 * engine/cli_http.c — the smallest HTTP/1.1 client the CLI needs to talk to the daemon's
 * own API (plain HTTP, usually on loopback): one request per connection ("Connection:
 * close"), the answer read to EOF, Content-Length or chunked bodies.
 *
 * Why not libcurl: every libcurl flavour in Debian 12 (GnuTLS, NSS, OpenSSL) links
 * libssh2, which links OpenSSL's libcrypto.so.3; loaded next to BoringSSL's libcrypto,
 * whose symbols have the same names, either library may bind the other's functions.
 * tests/build/test_linkage.sh keeps libcrypto.so.3 out of floormta, and the API needs
 * nothing a hundred lines cannot do.
 */
#define _GNU_SOURCE /* strcasestr */
#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "engine/cli.h"

#define CLI_HTTP_MAX (64u << 20) /* an answer larger than this is refused */

/* Splits "http://host:port" (host may be "[v6]") into host and port. */
static int parse_base(const char *base, char *host, size_t hcap, char *port, size_t pcap)
{
    if (strncasecmp(base, "http://", 7) != 0)
        return -EPROTONOSUPPORT;
    const char *h = base + 7, *end = h + strcspn(h, "/");
    const char *colon = NULL;
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb)
            return -EINVAL;
        if (rb + 1 < end && rb[1] == ':')
            colon = rb + 1;
        h++;
        end = colon ? colon - 1 : rb;
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        if (colon)
            end = colon;
    }
    size_t hl = (size_t)(end - h);
    if (hl == 0 || hl >= hcap)
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    const char *p = colon ? colon + 1 : "80";
    size_t pl = strcspn(p, "/");
    if (pl == 0 || pl >= pcap)
        return -EINVAL;
    memcpy(port, p, pl);
    port[pl] = '\0';
    return 0;
}

static int connect_to(const char *host, const char *port, unsigned timeout_s)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -EHOSTUNREACH;
    int fd = -1, err = -ECONNREFUSED;
    struct timeval tv = { .tv_sec = timeout_s };
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            err = -errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd >= 0 ? fd : err;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k < 0 ? -errno : -EPIPE;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Reads to EOF into a new NUL-terminated buffer. */
static int read_all(int fd, char **out, size_t *len)
{
    size_t cap = 8192, n = 0;
    char *b = malloc(cap);
    while (b) {
        if (n + 1 == cap) {
            char *nb = cap < CLI_HTTP_MAX ? realloc(b, cap * 2) : NULL;
            if (!nb)
                break;
            b = nb;
            cap *= 2;
        }
        ssize_t k = recv(fd, b + n, cap - n - 1, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            int e = -errno;
            free(b);
            return e == -EAGAIN ? -ETIMEDOUT : e;
        }
        if (k == 0) {
            b[n] = '\0';
            *out = b;
            *len = n;
            return 0;
        }
        n += (size_t)k;
    }
    free(b);
    return -ENOMEM;
}

/* Decodes a chunked body in place. Returns its length, or -EPROTO. */
static long dechunk(char *p, size_t n)
{
    char *in = p, *out = p, *end = p + n;
    for (;;) {
        char *nl = memchr(in, '\n', (size_t)(end - in));
        if (!nl)
            return -EPROTO;
        unsigned long sz = strtoul(in, NULL, 16);
        in = nl + 1;
        if (sz == 0)
            break;
        if (sz > (size_t)(end - in))
            return -EPROTO;
        memmove(out, in, sz);
        out += sz;
        in += sz;
        if (in < end && *in == '\r')
            in++;
        if (in < end && *in == '\n')
            in++;
    }
    *out = '\0';
    return out - p;
}

int eng_cli_http(const char *base, const char *method, const char *path, const char *token,
                 const char *body, unsigned timeout_s, long *status, char **answer)
{
    char host[256], port[16];
    int rc = parse_base(base, host, sizeof(host), port, sizeof(port));
    if (rc != 0)
        return rc;
    size_t blen = body ? strlen(body) : 0;
    size_t cap = strlen(method) + strlen(path) + strlen(host) + (token ? strlen(token) : 0) + 256;
    char *req = malloc(cap + blen);
    if (!req)
        return -ENOMEM;
    int hl = snprintf(req, cap,
                      "%s %s HTTP/1.1\r\nHost: %s%s%s\r\nConnection: close\r\n"
                      "Accept: application/json\r\nUser-Agent: floormta-cli\r\n",
                      method, path, strchr(host, ':') ? "[" : "", host,
                      strchr(host, ':') ? "]" : "");
    if (token)
        hl += snprintf(req + hl, cap - (size_t)hl, "Authorization: Bearer %s\r\n", token);
    if (body)
        hl += snprintf(req + hl, cap - (size_t)hl,
                       "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    else if (strcmp(method, "POST") == 0)
        hl += snprintf(req + hl, cap - (size_t)hl, "Content-Length: 0\r\n");
    hl += snprintf(req + hl, cap - (size_t)hl, "\r\n");
    memcpy(req + hl, body ? body : "", blen);
    int fd = connect_to(host, port, timeout_s);
    if (fd < 0) {
        free(req);
        return fd;
    }
    rc = send_all(fd, req, (size_t)hl + blen);
    free(req);
    char *resp = NULL;
    size_t n = 0;
    if (rc == 0)
        rc = read_all(fd, &resp, &n);
    close(fd);
    if (rc != 0)
        return rc;
    char *sp = strchr(resp, ' ');
    char *hdr_end = strstr(resp, "\r\n\r\n");
    if (strncmp(resp, "HTTP/1.", 7) != 0 || !sp || !hdr_end) {
        free(resp);
        return -EPROTO;
    }
    *status = strtol(sp + 1, NULL, 10);
    *hdr_end = '\0';
    char *b = hdr_end + 4;
    size_t bl = n - (size_t)(b - resp);
    bool chunked = false;
    for (char *line = strstr(resp, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (strncasecmp(h, "Transfer-Encoding:", 18) == 0 && strcasestr(h, "chunked"))
            chunked = true;
        else if (strncasecmp(h, "Content-Length:", 15) == 0 && strtoul(h + 15, NULL, 10) < bl)
            bl = strtoul(h + 15, NULL, 10);
    }
    if (chunked) {
        long dl = dechunk(b, bl);
        if (dl < 0) {
            free(resp);
            return (int)dl;
        }
        bl = (size_t)dl;
    }
    memmove(resp, b, bl);
    resp[bl] = '\0';
    *answer = resp;
    return 0;
}
