/*
 * tests/fuzz/fuzz_capcache.c — the capability cache's file (engine/capcache_file.c), read
 * back at start-up after whatever happened to it, through eng_capcache_load into a small
 * cache (so that loading also evicts).
 *
 * Each line carries a CRC-32, so mutated lines would almost all stop at the checksum:
 * unless the first input byte's low bit says "raw", the target appends the right
 * checksum to every line after the first, and the field parser sees the mutations. The
 * file is an in-memory file (memfd), read through its /proc/self/fd path.
 *
 * Invariants: every line is counted once (loaded, expired, malformed, foreign,
 * superseded) unless the header is bad, the cache never holds more than its size, and
 * every entry it holds keeps the invariants eng_capcache_record keeps (a pass has no
 * reason, expiry after the check, STARTTLS offered unless refused for it, a lowercase
 * host without a trailing dot) and describes itself within ENG_CAPCACHE_DESCRIBE_MAX.
 */
#define _GNU_SOURCE
#include "tests/fuzz/fuzz.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/capcache.h"
#include "engine/log.h"
#include "tls/tls.h"

#define NOW   1795392000 /* 2026-11-23T00:00:00Z */
#define SLOTS 8
#define EXTRA 10 /* " %08x" and its NUL: what a line can grow by */
#define TTL_S 3600

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    eng_log_set_level(ENG_LOG_ERROR); /* the loader's warnings are expected here */
    return 0;
}

/* IEEE CRC-32 (as zlib's), the checksum of the format. */
static uint32_t crc32_ieee(const uint8_t *s, size_t n)
{
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        crc ^= s[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static bool check_entry(void *arg, const struct eng_capcache_entry *e)
{
    size_t *n = arg;
    (*n)++;
    fuzz_check(e->pass == (e->reason == TLS_REASON_NONE));
    fuzz_check(e->expires_at > e->checked_at);
    fuzz_check(e->starttls_offered == (e->reason != TLS_REASON_NO_STARTTLS));
    size_t hl = strnlen(e->host, sizeof(e->host));
    fuzz_check(hl > 0 && hl < sizeof(e->host) && e->host[hl - 1] != '.');
    for (size_t i = 0; i < hl; i++)
        fuzz_check(!(e->host[i] >= 'A' && e->host[i] <= 'Z'));
    fuzz_check(memchr(e->cipher, '\0', sizeof(e->cipher)) != NULL);
    char buf[ENG_CAPCACHE_DESCRIBE_MAX];
    int w = eng_capcache_describe(e, buf, sizeof(buf));
    fuzz_check(w >= 0 && (size_t)w < sizeof(buf) && strchr(buf, '\n') == NULL);
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool raw = data[0] & 1;
    const uint8_t *in = data + 1, *end = data + size;
    /* Lines, each with its checksum appended (but the header line). */
    uint8_t *file = malloc(EXTRA * (size_t)(end - in) + EXTRA); /* 1-byte lines: 10x */
    fuzz_check(file != NULL);
    size_t len = 0, lines = 0;
    for (const uint8_t *p = in; p < end; lines++) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        memcpy(file + len, p, n);
        if (!raw && lines > 0 && n > 0 && p[0] != '#')
            len += (size_t)sprintf((char *)file + len + n, " %08x", crc32_ieee(p, n));
        len += n;
        if (nl)
            file[len++] = '\n';
        p += n + (nl != NULL);
    }
    int fd = memfd_create("capcache", MFD_CLOEXEC);
    fuzz_check(fd >= 0);
    fuzz_check(write(fd, file, len) == (ssize_t)len);
    free(file);
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

    struct eng_capcache_config cfg = { .max_entries = SLOTS, .ttl = TTL_S };
    struct eng_capcache *c = NULL;
    fuzz_check(eng_capcache_new(&cfg, &c) == 0);
    struct eng_capcache_load_result res;
    fuzz_check(eng_capcache_load(c, path, NOW, NULL, NULL, &res) == 0);
    close(fd);
    size_t counted = res.loaded + res.expired + res.malformed + res.foreign + res.superseded;
    fuzz_check(res.bad_header ? counted == 0 : counted + (lines > 0) <= lines);
    size_t held = 0;
    eng_capcache_foreach(c, NOW, check_entry, &held);
    fuzz_check(held <= SLOTS && held <= res.loaded);
    eng_capcache_free(c);
    return 0;
}
