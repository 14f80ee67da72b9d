/*
 * engine/capcache_file.c — the capability cache on disk: one small text file per
 * shard, written atomically, read back line by line (see capcache.h for the contract).
 *
 * Format, version 1 (one entry per line, fields separated by one space, "-" for an
 * empty field, times in UTC):
 *
 *   floormta-capcache 1
 *   # host:port verdict reason version starttls highest checked expires refusals ...
 *   mx.example.net:25 refuse version_below_floor TLSv1 yes TLSv1
 *     2026-11-23T00:00:00Z 2026-11-23T01:00:00Z 1 0x00000008 ECDHE-RSA-AES128-SHA - -
 *     5d41402a
 *
 * (the entry is one line; wrapped here). Fields: host:port, pass|refuse, the reason's
 * stable name, the last version, STARTTLS yes|no, the highest version, checked,
 * expires, consecutive refusals, the problem bits, the cipher, the certificate's
 * SHA-256 and notAfter, and the CRC-32 of everything before it on the line. The
 * per-line checksum is why a damaged file needs no recovery step: a bad line is
 * skipped by itself, the rest still loads. Lines starting with '#' are comments.
 */
#include "engine/capcache_int.h"
#include "engine/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FILE_HEADER "floormta-capcache 1"
#define FILE_COMMENT                                                                \
    "# host:port verdict reason version starttls highest checked expires refusals " \
    "problems cipher sha256 not_after crc32"
#define LINE_MAX_LEN 1024 /* a valid line is below 600 bytes */
#define LINE_FIELDS  14

/* CRC-32 (IEEE, as zlib's), bitwise: the file is small and read once. */
static uint32_t crc32_of(const char *s, size_t len)
{
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < len; i++) {
        crc ^= (unsigned char)s[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static const char *fmt_time(int64_t t, char *buf, size_t cap)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (gmtime_r(&tt, &tm) == NULL || strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, cap, "-");
    return buf;
}

static const char *fmt_version(uint16_t v, char *buf, size_t cap)
{
    if (v == 0)
        snprintf(buf, cap, "-");
    else if (v >= TLS_VERSION_1_0 && v <= TLS_VERSION_1_3)
        snprintf(buf, cap, "%s", tls_version_name(v));
    else
        snprintf(buf, cap, "0x%04x", v);
    return buf;
}

/* Formats e as one line with its checksum and newline. Returns its length. */
static size_t format_line(const struct eng_capcache_entry *e, char *line, size_t cap)
{
    char ver[16], high[16], checked[32], expires[32], na[32] = "-", fp[65] = "-";
    if (e->has_cert) {
        struct tls_evidence ev = { .has_cert = true };
        memcpy(ev.sha256, e->sha256, sizeof(ev.sha256));
        tls_evidence_fingerprint(&ev, fp, sizeof(fp));
        fmt_time(e->not_after, na, sizeof(na));
    }
    int n = snprintf(line, cap, "%s:%u %s %s %s %s %s %s %s %" PRIu32 " 0x%08" PRIx32 " %s %s %s",
                     e->host, e->port, e->pass ? "pass" : "refuse", tls_reason_name(e->reason),
                     fmt_version(e->version, ver, sizeof(ver)), e->starttls_offered ? "yes" : "no",
                     fmt_version(e->highest_version, high, sizeof(high)),
                     fmt_time(e->checked_at, checked, sizeof(checked)),
                     fmt_time(e->expires_at, expires, sizeof(expires)), e->refusals, e->problems,
                     e->cipher[0] ? e->cipher : "-", fp, na);
    size_t len = (size_t)n;
    n = snprintf(line + len, cap - len, " %08" PRIx32 "\n", crc32_of(line, len));
    return len + (size_t)n;
}

struct save_ctx {
    FILE *f;
    int count;
};

static bool save_one(void *arg, const struct eng_capcache_entry *e)
{
    struct save_ctx *s = arg;
    char line[LINE_MAX_LEN];
    size_t len = format_line(e, line, sizeof(line));
    if (fwrite(line, 1, len, s->f) != len)
        return false; /* ferror() says so to the caller */
    s->count++;
    return true;
}

/* fsyncs the directory holding path, so that the rename itself is durable. */
static int sync_dir(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

int eng_capcache_save(struct eng_capcache *c, const char *path, int64_t now)
{
    char tmp[PATH_MAX];
    if (c == NULL || path == NULL || path[0] == '\0')
        return -EINVAL;
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
        return -ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        int rc = -errno;
        close(fd);
        unlink(tmp);
        return rc;
    }
    struct save_ctx s = { .f = f };
    fputs(FILE_HEADER "\n" FILE_COMMENT "\n", f);
    eng_capcache_foreach_oldest(c, now, save_one, &s);
    int rc = 0;
    if (fflush(f) != 0 || ferror(f))
        rc = errno != 0 ? -errno : -EIO;
    else if (fsync(fd) != 0)
        rc = -errno;
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0) {
        unlink(tmp);
        return rc;
    }
    rc = sync_dir(path);
    return rc < 0 ? rc : s.count;
}

/* ---- reading -------------------------------------------------------------------------- */

/* Strict unsigned number: digits only (after "0x" for base 16), no sign or space. */
static bool parse_uint(const char *s, int base, uint64_t max, uint64_t *out)
{
    if (base == 16) {
        if (strncmp(s, "0x", 2) != 0)
            return false;
        s += 2;
    }
    if (s[0] == '\0' || strspn(s, base == 16 ? "0123456789abcdef" : "0123456789") != strlen(s))
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, base);
    if (errno != 0 || *end != '\0' || v > max)
        return false;
    *out = v;
    return true;
}

/* Exactly what fmt_time writes: the round trip rejects dates such as month 13. */
static bool parse_time(const char *s, int64_t *out)
{
    struct tm tm = { 0 };
    int used = 0;
    if (strlen(s) != 20 ||
        sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &used) != 6 ||
        used != 20)
        return false;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    char back[32];
    if (strcmp(fmt_time((int64_t)t, back, sizeof(back)), s) != 0)
        return false;
    *out = (int64_t)t;
    return true;
}

static bool parse_version(const char *s, uint16_t *out)
{
    uint64_t v;
    if (strcmp(s, "-") == 0) {
        *out = 0;
        return true;
    }
    if (strncmp(s, "0x", 2) == 0) {
        if (!parse_uint(s, 16, 0xffff, &v) || v == 0)
            return false;
        *out = (uint16_t)v;
        return true;
    }
    return tls_version_parse(s, out) == 0;
}

static bool parse_reason(const char *s, enum tls_reason *out)
{
    for (int r = 0; r < TLS_REASON__COUNT; r++) {
        if (strcmp(s, tls_reason_name((enum tls_reason)r)) == 0) {
            *out = (enum tls_reason)r;
            return true;
        }
    }
    return false;
}

static bool parse_hex_bytes(const char *s, uint8_t *out, size_t n)
{
    if (strlen(s) != 2 * n || strspn(s, "0123456789abcdef") != 2 * n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char pair[3] = { s[2 * i], s[2 * i + 1], '\0' };
        out[i] = (uint8_t)strtoul(pair, NULL, 16);
    }
    return true;
}

/* "host:port" (the port after the last colon: IPv6 literals have colons). */
static bool parse_key(char *s, struct eng_capcache_entry *e)
{
    char *colon = strrchr(s, ':');
    uint64_t port;
    if (colon == NULL || !parse_uint(colon + 1, 10, 65535, &port) || port == 0)
        return false;
    *colon = '\0';
    /* Only names save writes: already normalised. */
    if (eng_capcache_norm_host(s, e->host) < 0 || strcmp(e->host, s) != 0)
        return false;
    e->port = (uint16_t)port;
    return true;
}

/* Splits s in place at single spaces into exactly n non-empty fields. */
static bool split_fields(char *s, char **fields, size_t n)
{
    size_t i = 0;
    for (char *p = s;; p++) {
        if (*p != ' ' && *p != '\0')
            continue;
        if (p == s || i == n)
            return false; /* empty field, or too many */
        fields[i++] = s;
        if (*p == '\0')
            break;
        *p = '\0';
        s = p + 1;
    }
    return i == n;
}

/* Parses one line (without its newline) into *e. Returns false if it is damaged. */
static bool parse_line(char *line, struct eng_capcache_entry *e)
{
    char *f[LINE_FIELDS];
    char *last = strrchr(line, ' ');
    uint64_t crc, refusals, problems;
    if (last == NULL || strlen(last + 1) != 8 || strspn(last + 1, "0123456789abcdef") != 8)
        return false;
    crc = strtoul(last + 1, NULL, 16);
    if (crc != crc32_of(line, (size_t)(last - line)) || !split_fields(line, f, LINE_FIELDS))
        return false;
    memset(e, 0, sizeof(*e));
    if (!parse_key(f[0], e) || (strcmp(f[1], "pass") != 0 && strcmp(f[1], "refuse") != 0) ||
        !parse_reason(f[2], &e->reason) || !parse_version(f[3], &e->version) ||
        (strcmp(f[4], "yes") != 0 && strcmp(f[4], "no") != 0) ||
        !parse_version(f[5], &e->highest_version) || !parse_time(f[6], &e->checked_at) ||
        !parse_time(f[7], &e->expires_at) || !parse_uint(f[8], 10, UINT32_MAX, &refusals) ||
        !parse_uint(f[9], 16, UINT32_MAX, &problems) || strlen(f[10]) >= sizeof(e->cipher))
        return false;
    e->pass = strcmp(f[1], "pass") == 0;
    e->starttls_offered = strcmp(f[4], "yes") == 0;
    e->refusals = (uint32_t)refusals;
    e->problems = (uint32_t)problems;
    if (strcmp(f[10], "-") != 0)
        snprintf(e->cipher, sizeof(e->cipher), "%s", f[10]);
    e->has_cert = strcmp(f[11], "-") != 0;
    if (e->has_cert ? !parse_hex_bytes(f[11], e->sha256, sizeof(e->sha256)) ||
                              !parse_time(f[12], &e->not_after)
                    : strcmp(f[12], "-") != 0)
        return false;
    /* The same invariants eng_capcache_record keeps. */
    return e->pass == (e->reason == TLS_REASON_NONE) && e->expires_at > e->checked_at &&
           e->starttls_offered == (e->reason != TLS_REASON_NO_STARTTLS);
}

/* Reads one line into buf (without the newline). Returns 1 for a line, 0 at the end,
 * -1 for a line too long for buf (skipped to its end). */
static int read_line(FILE *f, char *buf, size_t cap)
{
    if (fgets(buf, (int)cap, f) == NULL)
        return 0;
    size_t len = strlen(buf);
    if (len > 0 && buf[len - 1] == '\n') {
        buf[len - 1] = '\0';
        return 1;
    }
    if (feof(f))
        return 1; /* the last line, without its newline: the checksum judges it */
    int ch;
    while ((ch = fgetc(f)) != EOF && ch != '\n')
        ;
    return -1;
}

int eng_capcache_load(struct eng_capcache *c, const char *path, int64_t now,
                      eng_capcache_filter_fn mine, void *arg, struct eng_capcache_load_result *res)
{
    struct eng_capcache_load_result r = { 0 };
    if (res != NULL)
        *res = r;
    if (c == NULL || path == NULL)
        return -EINVAL;
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return errno == ENOENT ? 0 : -errno;
    char line[LINE_MAX_LEN];
    int got = read_line(f, line, sizeof(line));
    if (got != 0 && (got < 0 || strcmp(line, FILE_HEADER) != 0))
        r.bad_header = true;
    while (!r.bad_header && (got = read_line(f, line, sizeof(line))) != 0) {
        struct eng_capcache_entry e;
        if (got > 0 && (line[0] == '#' || line[0] == '\0'))
            continue;
        if (got < 0 || !parse_line(line, &e))
            r.malformed++;
        else if (e.expires_at <= now)
            r.expired++;
        else if (mine != NULL && !mine(arg, e.host, e.port))
            r.foreign++;
        else if (eng_capcache_restore(c, &e, now) > 0)
            r.loaded++;
        else
            r.superseded++;
    }
    int rc = ferror(f) ? -EIO : 0;
    fclose(f);
    if (r.bad_header)
        eng_log(ENG_LOG_WARN, "capcache: %s is not a capability cache file (version 1): ignored",
                path);
    else if (r.malformed > 0)
        eng_log(ENG_LOG_WARN, "capcache: %s: %zu damaged lines skipped, %zu entries loaded", path,
                r.malformed, r.loaded);
    if (res != NULL)
        *res = r;
    return rc;
}
