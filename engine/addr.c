/*
 * engine/addr.c — parsing and formatting of IP:port literals (see addr.h).
 */
#include "engine/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_port(const char *s, uint16_t *out)
{
    if (*s == '\0' || strlen(s) > 5)
        return -EINVAL;
    char *end = NULL;
    unsigned long v = strtoul(s, &end, 10);
    if (*end != '\0' || v > 65535 || s[0] == '-' || s[0] == '+')
        return -EINVAL;
    *out = (uint16_t)v;
    return 0;
}

int eng_addr_parse(const char *text, uint16_t default_port, struct sockaddr_storage *out,
                   socklen_t *outlen)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port_text = NULL;
    size_t host_len;

    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close)
            return -EINVAL;
        host_len = (size_t)(close - text - 1);
        memcpy(host, text + 1, host_len < sizeof(host) ? host_len : 0);
        if (close[1] == ':')
            port_text = close + 2;
        else if (close[1] != '\0')
            return -EINVAL;
    } else {
        const char *colon = strchr(text, ':');
        /* A bare IPv6 literal has several colons and no port. */
        if (colon && strchr(colon + 1, ':'))
            colon = NULL;
        host_len = colon ? (size_t)(colon - text) : strlen(text);
        if (colon)
            port_text = colon + 1;
        memcpy(host, text, host_len < sizeof(host) ? host_len : 0);
    }
    if (host_len == 0 || host_len >= sizeof(host))
        return -EINVAL;
    host[host_len] = '\0';

    uint16_t port = default_port;
    if (port_text && parse_port(port_text, &port) < 0)
        return -EINVAL;

    memset(out, 0, sizeof(*out));
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        *outlen = sizeof(*v4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        *outlen = sizeof(*v6);
        return 0;
    }
    return -EINVAL;
}

char *eng_addr_format(const struct sockaddr *addr, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)addr;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        snprintf(out, cap, "%s:%u", host, ntohs(a->sin_port));
    } else if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)addr;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        snprintf(out, cap, "[%s]:%u", host, ntohs(a->sin6_port));
    } else {
        snprintf(out, cap, "?");
    }
    return out;
}
