/*
 * engine/smtpd_parse.c — the arguments of MAIL and RCPT: the path between angle
 * brackets (RFC 5321 4.1.2) and the MAIL parameters the server offers (SIZE, BODY,
 * SMTPUTF8, AUTH). Pure parsing: the state machine (smtpd_session.c) decides the
 * replies.
 */
#include "engine/smtpd_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Parses "<path> params" at p: copies the path (without brackets) into out, sets
 * *params to what follows. Returns 0, -EINVAL (syntax), -E2BIG (too long). *utf8 says
 * whether the path has bytes above 127. */
int smtpd_parse_path(const char *p, char *out, const char **params, bool *utf8)
{
    while (*p == ' ')
        p++; /* "MAIL FROM: <a>" is common enough to accept */
    if (*p != '<')
        return -EINVAL;
    p++;
    /* A source route (RFC 5321 4.1.2, "@a,@b:") is obsolete: drop it. */
    if (*p == '@') {
        const char *colon = strchr(p, ':');
        if (colon == NULL)
            return -EINVAL;
        p = colon + 1;
    }
    const char *gt = strchr(p, '>');
    if (gt == NULL)
        return -EINVAL;
    size_t len = (size_t)(gt - p);
    if (len > ENG_SMTPD_ADDR_MAX)
        return -E2BIG;
    *utf8 = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c <= ' ' || c == 0x7f || c == '<')
            return -EINVAL;
        if (c >= 0x80)
            *utf8 = true;
    }
    memcpy(out, p, len);
    out[len] = '\0';
    if (len > 0) {
        const char *at = strrchr(out, '@');
        if (at == NULL || at == out || at[1] == '\0')
            return -EINVAL;
    }
    p = gt + 1;
    if (*p != '\0' && *p != ' ')
        return -EINVAL;
    *params = p;
    return 0;
}

/* One MAIL parameter "KEY[=VALUE]" (k/klen, v or NULL). Returns 0 or the reply given. */
int smtpd_mail_param(struct smtpd_sess *s, const char *k, size_t klen, const char *v)
{
    if (klen == 4 && strncasecmp(k, "SIZE", 4) == 0 && v) {
        char *end;
        unsigned long long n = strtoull(v, &end, 10);
        if (*v < '0' || *v > '9' || (*end != '\0' && *end != ' '))
            return -EINVAL;
        s->size_param = n;
        return 0;
    }
    if (klen == 4 && strncasecmp(k, "BODY", 4) == 0 && v) {
        size_t vlen = strcspn(v, " ");
        if (vlen == 4 && strncasecmp(v, "7BIT", 4) == 0)
            s->body_type = ENG_SMTPD_BODY_7BIT;
        else if (vlen == 8 && strncasecmp(v, "8BITMIME", 8) == 0)
            s->body_type = ENG_SMTPD_BODY_8BITMIME;
        else
            return -EINVAL;
        return 0;
    }
    if (klen == 8 && strncasecmp(k, "SMTPUTF8", 8) == 0 && v == NULL) {
        s->smtputf8 = true;
        return 0;
    }
    if (klen == 4 && strncasecmp(k, "AUTH", 4) == 0 && v)
        return 0; /* RFC 4954 5: informational between relays; ignored */
    return -ENOTSUP;
}
