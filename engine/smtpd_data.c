/*
 * engine/smtpd_data.c — the content after 354: dot-unstuffing, the end of data, the
 * limits that are checked while reading it, and the Received header put in front.
 *
 * The end of data is only ever CRLF "." CRLF (RFC 5321 4.1.1.4). A bare LF never ends a
 * line here, so "\n.\n" or "\n.\r\n" inside content cannot end it either: that is the
 * SMTP smuggling of CVE-2023-51764, where a receiver that accepted those ends would run
 * the rest as commands of this session. Content with a bare LF is read to the real end
 * and refused as a whole.
 *
 * Every refusal (bare LF, size, line length, memory) is decided while reading but
 * replied after the dot, so a pipelining client stays in step; once a message is
 * doomed, its bytes are counted, not stored.
 */
#include "engine/smtpd_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tls/tls.h"

#define BODY_INITIAL 16384

void smtpd_data_reset(struct smtpd_sess *s)
{
    free(s->body);
    s->body = NULL;
    s->body_len = s->body_cap = 0;
}

/* The protocol name of RFC 3848 for the Received "with" clause. */
static const char *protocol_name(const struct smtpd_sess *s)
{
    if (!s->esmtp)
        return "SMTP";
    if (s->tls)
        return s->authed ? "ESMTPSA" : "ESMTPS";
    return s->authed ? "ESMTPA" : "ESMTP";
}

/* RFC 5321 4.4: "from" the client's EHLO with its address literal, "by" us, "with" the
 * protocol, "id" the session's message id, then the date. The TLS version and cipher
 * go in a comment, as other MTAs write them. */
static size_t received_header(const struct smtpd_sess *s, char *out, size_t cap)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    bool v6 = s->client.ss_family == AF_INET6 && strchr(s->client_ip, ':') != NULL;
    char tlsc[128] = "";
    if (s->tls)
        snprintf(tlsc, sizeof(tlsc), "\t(version=%s cipher=%s)\r\n",
                 tls_version_name(s->tls_version), s->tls_cipher);
    int n = snprintf(out, cap,
                     "Received: from %s ([%s%s])\r\n%s\tby %s (floormta) with %s id %s;\r\n"
                     "\t%s\r\n",
                     s->helo[0] ? s->helo : "unknown", v6 ? "IPv6:" : "", s->client_ip, tlsc,
                     s->sh->hostname, protocol_name(s), s->sid, date);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    return (size_t)n;
}

int smtpd_data_begin(struct smtpd_sess *s)
{
    smtpd_data_reset(s);
    s->content_bytes = 0;
    s->line_bytes = 0;
    s->d_bol = true; /* the DATA line's CRLF: ".\r\n" at once is an empty message */
    s->d_cr = false;
    s->d_dot = false;
    s->too_big = s->bare_lf = s->long_line = s->no_memory = false;

    char hdr[SMTPD_RECEIVED_MAX];
    size_t n = received_header(s, hdr, sizeof(hdr));
    s->body = malloc(BODY_INITIAL);
    if (s->body == NULL || n == 0) {
        s->no_memory = true;
        smtpd_data_reset(s);
        return -ENOMEM;
    }
    s->body_cap = BODY_INITIAL;
    memcpy(s->body, hdr, n);
    s->body_len = n;
    return 0;
}

/* Stores content bytes, or only counts them once the message is refused anyway. */
static void put(struct smtpd_sess *s, const char *p, size_t n)
{
    s->content_bytes += n;
    if (s->content_bytes > s->lim.max_size)
        s->too_big = true;
    if (s->too_big || s->bare_lf || s->long_line || s->no_memory) {
        smtpd_data_reset(s);
        return;
    }
    if (s->body_cap - s->body_len < n) {
        /* Doubling, capped by the limit: the content can never need more. */
        size_t limit = (size_t)s->lim.max_size + SMTPD_RECEIVED_MAX;
        size_t need = s->body_len + n;
        size_t ncap = s->body_cap * 2 > need ? s->body_cap * 2 : need;
        if (ncap > limit)
            ncap = limit;
        char *nb = ncap >= need ? realloc(s->body, ncap) : NULL;
        if (nb == NULL) {
            s->no_memory = true;
            smtpd_data_reset(s);
            return;
        }
        s->body = nb;
        s->body_cap = ncap;
    }
    memcpy(s->body + s->body_len, p, n);
    s->body_len += n;
}

static void line_grew(struct smtpd_sess *s, size_t n)
{
    s->line_bytes += n;
    if (s->line_bytes > SMTPD_TEXT_MAX)
        s->long_line = true;
}

bool smtpd_data_take(struct smtpd_sess *s, const char *data, size_t len, size_t *used)
{
    size_t i = 0;
    while (i < len) {
        char c = data[i];
        if (s->d_cr) {
            s->d_cr = false;
            if (c == '\n') {
                i++;
                if (s->d_dot) {
                    s->d_dot = false;
                    *used = i;
                    return true; /* CRLF "." CRLF */
                }
                put(s, "\r\n", 2);
                s->d_bol = true;
                s->line_bytes = 0;
                continue;
            }
            /* A CR alone is content (RFC 5321 allows nothing else to be done with it
             * safely; it never ends a line), and the line has begun: a dot after it is
             * neither stuffing nor, before CRLF, the end of data. */
            put(s, "\r", 1);
            line_grew(s, 1);
            s->d_bol = false;
            s->d_dot = false;
        }
        if (c == '\r') {
            s->d_cr = true;
            i++;
            continue;
        }
        if (c == '\n') {
            /* Bare LF: the message is refused; the line does not end (see above). */
            s->bare_lf = true;
            s->d_bol = false;
            s->d_dot = false;
            s->line_bytes = 0;
            i++;
            continue;
        }
        if (s->d_bol && c == '.') {
            /* A leading dot is dropped (4.5.2): "." alone ends the data, ".." is ".". */
            s->d_bol = false;
            s->d_dot = true;
            line_grew(s, 1);
            i++;
            continue;
        }
        size_t j = i;
        while (j < len && data[j] != '\r' && data[j] != '\n')
            j++;
        put(s, data + i, j - i);
        line_grew(s, j - i);
        s->d_bol = false;
        s->d_dot = false;
        i = j;
    }
    *used = len;
    return false;
}
