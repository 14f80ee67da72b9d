/*
 * engine/smtpd_auth.c — what the submission server trusts a client by: the credentials
 * file (crypt(3) hashes checked with libcrypt's crypt_rn), the SASL base64 coding of
 * AUTH PLAIN / LOGIN (RFC 4616, 4954), and the relay networks (CIDR).
 *
 * The credentials are read once at start and are read-only afterwards, so servers on
 * several threads can share one set. Passwords only ever pass through crypt_rn and a
 * constant-time comparison of its output with the stored hash.
 */
#include "engine/smtpd_int.h"

#include <arpa/inet.h>
#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"

struct smtpd_user {
    char *name;
    char *hash;
};

struct eng_smtpd_credentials {
    struct smtpd_user *users;
    size_t n;
};

/* ---- credentials ------------------------------------------------------------------ */

static int add_user(struct eng_smtpd_credentials *c, size_t *cap, const char *name,
                    const char *hash)
{
    if (c->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        struct smtpd_user *nu = realloc(c->users, ncap * sizeof(*nu));
        if (nu == NULL)
            return -ENOMEM;
        c->users = nu;
        *cap = ncap;
    }
    struct smtpd_user *u = &c->users[c->n];
    u->name = strdup(name);
    u->hash = strdup(hash);
    if (u->name == NULL || u->hash == NULL) {
        free(u->name);
        free(u->hash);
        return -ENOMEM;
    }
    c->n++;
    return 0;
}

/* One line without its newline. Returns 0 (used or ignored) or -EINVAL / -ENOMEM. */
static int parse_line(struct eng_smtpd_credentials *c, size_t *cap, char *line)
{
    size_t len = strlen(line);
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
        line[--len] = '\0';
    char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0' || *p == '#')
        return 0;
    char *colon = strchr(p, ':');
    if (colon == NULL || colon == p || colon - p > SMTPD_NAME_MAX)
        return -EINVAL;
    *colon = '\0';
    const char *hash = colon + 1;
    /* A hash libcrypt cannot use (plaintext, "*", "!", an unknown method) would never
     * match: refuse the file rather than lock a user out silently. */
    if (crypt_checksalt(hash) != CRYPT_SALT_OK)
        return -EINVAL;
    return add_user(c, cap, p, hash);
}

int eng_smtpd_credentials_load(const char *path, struct eng_smtpd_credentials **out)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -errno;
    struct eng_smtpd_credentials *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        fclose(f);
        return -ENOMEM;
    }
    size_t cap = 0, lineno = 0;
    char *line = NULL;
    size_t linecap = 0;
    int err = 0;
    while (getline(&line, &linecap, f) >= 0) {
        lineno++;
        line[strcspn(line, "\n")] = '\0';
        err = parse_line(c, &cap, line);
        if (err != 0) {
            eng_log(ENG_LOG_ERROR, "smtpd: credentials %s line %zu: %s", path, lineno,
                    err == -EINVAL ? "expected user:crypt-hash" : "out of memory");
            break;
        }
    }
    if (err == 0 && ferror(f))
        err = -EIO;
    free(line);
    fclose(f);
    if (err != 0) {
        eng_smtpd_credentials_free(c);
        return err;
    }
    *out = c;
    return 0;
}

void eng_smtpd_credentials_free(struct eng_smtpd_credentials *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->users[i].name);
        /* Hashes are not secrets, but there is no reason to leave them around. */
        explicit_bzero(c->users[i].hash, strlen(c->users[i].hash));
        free(c->users[i].hash);
    }
    free(c->users);
    free(c);
}

size_t eng_smtpd_credentials_count(const struct eng_smtpd_credentials *c)
{
    return c ? c->n : 0;
}

static bool equal_ct(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = la != lb;
    size_t n = la < lb ? la : lb;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

const char *smtpd_credentials_hash(const struct eng_smtpd_credentials *c, const char *user,
                                   bool *known)
{
    *known = false;
    if (c == NULL || c->n == 0)
        return NULL;
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->users[i].name, user) == 0) {
            *known = true;
            return c->users[i].hash;
        }
    }
    /* An unknown user costs one hashing too (against the first user's hash), so the
     * reply time does not tell which users exist. */
    return c->users[0].hash;
}

int smtpd_hash_check(const char *password, const char *hash)
{
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    if (cd == NULL)
        return -ENOMEM;
    const char *res = crypt_rn(password, hash, cd, (int)sizeof(*cd));
    bool ok = res != NULL && res[0] != '*' && equal_ct(res, hash);
    explicit_bzero(cd, sizeof(*cd));
    free(cd);
    return ok ? 0 : -EACCES;
}

int eng_smtpd_credentials_verify(const struct eng_smtpd_credentials *c, const char *user,
                                 const char *password)
{
    bool known = false;
    const char *hash = smtpd_credentials_hash(c, user, &known);
    if (hash == NULL)
        return -EACCES;
    int err = smtpd_hash_check(password, hash);
    return err == 0 && !known ? -EACCES : err;
}

/* ---- base64 ---------------------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_val(char c)
{
    const char *p = c ? strchr(b64, c) : NULL;
    return p ? (int)(p - b64) : -1;
}

int smtpd_b64_decode(const char *text, size_t len, char *out, size_t cap, bool nul_ok)
{
    if (len % 4 != 0)
        return -EINVAL;
    size_t n = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            char ch = text[i + k];
            if (ch == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad > 0 || (v[k] = b64_val(ch)) < 0)
                return -EINVAL;
        }
        uint32_t w =
                (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        char bytes[3] = { (char)(w >> 16), (char)(w >> 8), (char)w };
        for (int k = 0; k < 3 - pad; k++) {
            if (n + 1 >= cap || (bytes[k] == '\0' && !nul_ok))
                return -EINVAL;
            out[n++] = bytes[k];
        }
    }
    out[n] = '\0';
    return (int)n;
}

char *smtpd_b64_encode(const void *in, size_t len, char *out, size_t cap)
{
    const unsigned char *p = in;
    size_t n = 0;
    for (size_t i = 0; i < len && n + 5 <= cap; i += 3) {
        uint32_t w = (uint32_t)p[i] << 16;
        if (i + 1 < len)
            w |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < len)
            w |= p[i + 2];
        out[n++] = b64[(w >> 18) & 63];
        out[n++] = b64[(w >> 12) & 63];
        out[n++] = i + 1 < len ? b64[(w >> 6) & 63] : '=';
        out[n++] = i + 2 < len ? b64[w & 63] : '=';
    }
    if (cap > 0)
        out[n < cap ? n : cap - 1] = '\0';
    return out;
}

/* ---- relay networks -------------------------------------------------------------- */

static int net_parse(const char *tok, struct eng_smtpd_net *net)
{
    char buf[INET6_ADDRSTRLEN + 8];
    if (strlen(tok) >= sizeof(buf))
        return -EINVAL;
    strcpy(buf, tok);
    char *slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    memset(net, 0, sizeof(*net));
    unsigned max;
    if (inet_pton(AF_INET, buf, net->addr) == 1) {
        net->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, buf, net->addr) == 1) {
        net->family = AF_INET6;
        max = 128;
    } else {
        return -EINVAL;
    }
    net->prefix = max;
    if (slash) {
        char *end;
        unsigned long p = strtoul(slash + 1, &end, 10);
        if (slash[1] == '\0' || *end != '\0' || p > max)
            return -EINVAL;
        net->prefix = (unsigned)p;
    }
    return 0;
}

int eng_smtpd_nets_parse(const char *text, struct eng_smtpd_net *out, size_t cap, size_t *n)
{
    *n = 0;
    if (text == NULL)
        return 0;
    const char *p = text;
    while (*p) {
        size_t skip = strspn(p, " ,\t");
        p += skip;
        size_t len = strcspn(p, " ,\t");
        if (len == 0)
            break;
        char tok[INET6_ADDRSTRLEN + 8];
        if (len >= sizeof(tok))
            return -EINVAL;
        memcpy(tok, p, len);
        tok[len] = '\0';
        if (*n == cap)
            return -E2BIG;
        int err = net_parse(tok, &out[*n]);
        if (err != 0)
            return err;
        (*n)++;
        p += len;
    }
    return 0;
}

static bool prefix_match(const uint8_t *a, const uint8_t *net, unsigned prefix)
{
    unsigned bytes = prefix / 8, bits = prefix % 8;
    if (memcmp(a, net, bytes) != 0)
        return false;
    if (bits == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - bits));
    return (a[bytes] & mask) == (net[bytes] & mask);
}

bool eng_smtpd_nets_match(const struct eng_smtpd_net *nets, size_t n, const struct sockaddr *addr)
{
    uint8_t a[16];
    int family = addr->sa_family;
    if (family == AF_INET) {
        memcpy(a, &((const struct sockaddr_in *)addr)->sin_addr, 4);
    } else if (family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)addr)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            family = AF_INET;
            memcpy(a, a6->s6_addr + 12, 4);
        } else {
            memcpy(a, a6->s6_addr, 16);
        }
    } else {
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if (nets[i].family == family && prefix_match(a, nets[i].addr, nets[i].prefix))
            return true;
    return false;
}
