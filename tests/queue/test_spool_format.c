/*
 * tests/queue/test_spool_format.c — the spool's file formats: round trips of envelopes
 * with awkward bytes (8-bit, CR/LF, NUL, '+', '=', a lone "-"), 1000 recipients and every
 * state and result kind; every truncation and every single-bit flip of a real message
 * file and state file is QUEUE_ERR_CORRUPT through queue_spool_read (and quarantined);
 * files over the limits are refused even with a valid checksum.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue/queue_int.h"
#include "tests/queue/spool_helpers.h"

static char dir[128];

/* ---- codec level ------------------------------------------------------------------ */

static char *encode_msg(const struct queue_envelope *env, queue_id_t id, const char *content,
                        size_t len, size_t *hlen)
{
    size_t cap = queue_msg_header_bound(env);
    char *buf = malloc(cap + len);
    assert_non_null(buf);
    long n = queue_msg_encode(env, id, len, queue_crc32c(0, content, len), buf, cap);
    assert_true(n > 0);
    memcpy(buf + n, content, len);
    *hlen = (size_t)n;
    return buf;
}

static void test_crc32c(void **state)
{
    (void)state;
    /* The standard check value of CRC-32C, and a split computation. */
    assert_int_equal(queue_crc32c(0, "123456789", 9), 0xe3069283);
    uint8_t big[1000];
    for (unsigned i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7);
    uint32_t whole = queue_crc32c(0, big, sizeof(big));
    assert_int_equal(queue_crc32c(queue_crc32c(0, big, 333), big + 333, 667), whole);
    /* The instruction path (where the CPU has it) and the table agree at every
     * alignment and length, including the unaligned heads and tails. */
    assert_int_equal(queue_crc32c_sw(0, "123456789", 9), 0xe3069283);
    for (unsigned off = 0; off < 9; off++)
        for (unsigned len = 0; len < 40; len++)
            assert_int_equal(queue_crc32c(0x1234u, big + off, len),
                             queue_crc32c_sw(0x1234u, big + off, len));
    assert_int_equal(queue_crc32c_sw(0, big, sizeof(big)), whole);
    if (!queue_crc32c_hw_available())
        print_message("no SSE4.2: only the table version was exercised\n");
}

static void test_roundtrip_odd_bytes(void **state)
{
    (void)state;
    struct queue_envelope *env = odd_envelope(3);
    /* A NUL inside a text field ends the C string: what follows it is not data. */
    memcpy(env->rcpts[0].orcpt, "rfc822;x\0hidden", 16);
    size_t hlen;
    char *buf = encode_msg(env, 0x0123456789abcdefull, "hello\r\n", 7, &hlen);
    for (size_t i = 0; i < hlen; i++) /* the header is printable ASCII lines */
        assert_true(buf[i] == '\n' || (buf[i] >= 32 && buf[i] < 127));
    assert_non_null(memmem(buf, hlen, "\nenvid +2D\n", 11));
    size_t peek;
    assert_int_equal(queue_msg_peek(buf, hlen, &peek), 0);
    assert_int_equal(peek, hlen);
    struct queue_envelope *got = NULL;
    uint32_t crc;
    assert_int_equal(queue_msg_decode(buf, hlen, hlen + 7, &got, &crc), 0);
    assert_int_equal(crc, queue_crc32c(0, "hello\r\n", 7));
    env->id = 0x0123456789abcdefull;
    env->content_size = 7;
    assert_string_equal(got->rcpts[0].orcpt, "rfc822;x");
    assert_true(env_equal(env, got));
    /* The size must match the file exactly. */
    struct queue_envelope *bad = NULL;
    assert_int_equal(queue_msg_decode(buf, hlen, hlen + 6, &bad, &crc), QUEUE_ERR_CORRUPT);
    assert_int_equal(queue_msg_decode(buf, hlen, hlen + 8, &bad, &crc), QUEUE_ERR_CORRUPT);
    assert_null(bad);

    /* State: every state and result kind, texts with CR/LF and 8-bit, empty fields. */
    odd_state(env, 1);
    env->rcpts[1].last.text[0] = '\0';
    env->rcpts[2].last.remote[0] = '\0';
    size_t cap = queue_state_bound(env->nrcpts);
    char *st = malloc(cap);
    long n = queue_state_encode(env, 42, st, cap);
    assert_true(n > 0);
    uint64_t seq = 0;
    assert_int_equal(queue_state_apply(st, (size_t)n, got, &seq), 0);
    assert_int_equal(seq, 42);
    assert_true(env_equal(env, got));
    free(st);
    free(buf);
    queue_envelope_free(got);
    queue_envelope_free(env);
}

static void test_roundtrip_1000_all_kinds(void **state)
{
    (void)state;
    struct queue_envelope *env = odd_envelope(QUEUE_RCPTS_MAX);
    for (unsigned i = 0; i < env->nrcpts; i++) { /* longest fields, all escaped */
        memset(env->rcpts[i].addr, 0xff, QUEUE_ADDR_MAX);
        env->rcpts[i].addr[QUEUE_ADDR_MAX] = '\0';
    }
    memset(env->sender, '=', QUEUE_ADDR_MAX);
    size_t hlen;
    char *buf = encode_msg(env, 77, "", 0, &hlen);
    struct queue_envelope *got = NULL;
    uint32_t crc;
    assert_int_equal(queue_msg_decode(buf, hlen, hlen, &got, &crc), 0);
    env->id = 77;
    for (unsigned salt = 0; salt < 6; salt++) {
        odd_state(env, salt);
        memset(env->rcpts[salt].last.text, 0x80, QUEUE_TEXT_MAX - 1);
        env->rcpts[salt].last.text[QUEUE_TEXT_MAX - 1] = '\0';
        size_t cap = queue_state_bound(env->nrcpts);
        char *st = malloc(cap);
        long n = queue_state_encode(env, salt, st, cap);
        assert_true(n > 0 && (size_t)n <= QUEUE_SPOOL_STATE_MAX);
        uint64_t seq;
        assert_int_equal(queue_state_apply(st, (size_t)n, got, &seq), 0);
        assert_true(env_equal(env, got));
        free(st);
    }
    free(buf);
    queue_envelope_free(got);
    queue_envelope_free(env);
}

/* Rewrites the trailing "check" line so that a doctored file passes its checksum. */
static void resign(char *buf, size_t len)
{
    char line[16];
    snprintf(line, sizeof(line), "check %08x\n", queue_crc32c(0, buf, len - 15));
    memcpy(buf + len - 15, line, 15);
}

static void test_limits(void **state)
{
    (void)state;
    struct queue_envelope *env = odd_envelope(2);
    size_t hlen;
    char *buf = encode_msg(env, 5, "x", 1, &hlen);
    struct queue_envelope *got = NULL;
    uint32_t crc;
    /* More recipients than QUEUE_RCPTS_MAX, with a valid checksum. */
    char *p = memmem(buf, hlen, "rcpts 2\n", 8);
    assert_non_null(p);
    char *big = malloc(hlen + 8);
    size_t pre = (size_t)(p - buf);
    memcpy(big, buf, pre);
    memcpy(big + pre, "rcpts 1001\n", 11);
    memcpy(big + pre + 11, p + 8, hlen - pre - 8);
    size_t blen = hlen + 3;
    char line1[40];
    snprintf(line1, sizeof(line1), "floormta-msg 1 header=%010zu\n", blen);
    memcpy(big, line1, QUEUE_MSG_LINE1_LEN);
    resign(big, blen);
    assert_int_equal(queue_msg_decode(big, blen, blen + 1, &got, &crc), QUEUE_ERR_CORRUPT);
    /* A header length over QUEUE_SPOOL_HDR_MAX. */
    snprintf(line1, sizeof(line1), "floormta-msg 1 header=%010u\n", QUEUE_SPOOL_HDR_MAX + 1);
    size_t peek;
    assert_int_equal(queue_msg_peek(line1, QUEUE_MSG_LINE1_LEN, &peek), QUEUE_ERR_CORRUPT);
    /* An address longer than its field, with a valid checksum. */
    struct queue_envelope *e1 = queue_envelope_alloc(1);
    strcpy(e1->domain, "example.com");
    strcpy(e1->rcpts[0].addr, "a@example.com");
    char *one = encode_msg(e1, 9, "", 0, &hlen);
    char *long_addr = malloc(hlen + QUEUE_ADDR_MAX + 64);
    p = memmem(one, hlen, "a@example.com", 13);
    pre = (size_t)(p - one);
    memcpy(long_addr, one, pre);
    memset(long_addr + pre, 'a', QUEUE_ADDR_MAX + 1);
    memcpy(long_addr + pre + QUEUE_ADDR_MAX + 1, p, hlen - pre);
    blen = hlen + QUEUE_ADDR_MAX + 1;
    snprintf(line1, sizeof(line1), "floormta-msg 1 header=%010zu\n", blen);
    memcpy(long_addr, line1, QUEUE_MSG_LINE1_LEN);
    resign(long_addr, blen);
    assert_int_equal(queue_msg_decode(long_addr, blen, blen, &got, &crc), QUEUE_ERR_CORRUPT);
    /* Encoding refuses what does not fit its field. */
    memset(e1->rcpts[0].addr, 'a', sizeof(e1->rcpts[0].addr));
    char tmp[8192];
    assert_int_equal(queue_msg_encode(e1, 9, 0, 0, tmp, sizeof(tmp)), QUEUE_ERR_TOO_BIG);
    /* A state file over its limit, or for another recipient count. */
    char *st = calloc(1, QUEUE_SPOOL_STATE_MAX + 1);
    uint64_t seq;
    assert_int_equal(queue_state_apply(st, QUEUE_SPOOL_STATE_MAX + 1, env, &seq),
                     QUEUE_ERR_CORRUPT);
    env->id = 5;
    long n = queue_state_encode(env, 1, st, QUEUE_SPOOL_STATE_MAX);
    assert_true(n > 0);
    assert_int_equal(queue_state_apply(st, (size_t)n, e1, &seq), QUEUE_ERR_CORRUPT);
    e1->id = 6; /* same count, other id */
    struct queue_envelope *e2 = odd_envelope(2);
    e2->id = 6;
    assert_int_equal(queue_state_apply(st, (size_t)n, e2, &seq), QUEUE_ERR_CORRUPT);
    free(st);
    free(long_addr);
    free(one);
    free(big);
    free(buf);
    queue_envelope_free(e2);
    queue_envelope_free(e1);
    queue_envelope_free(env);
}

/* ---- file level: every truncation, every bit ---------------------------------------- */

static char *read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    fstat(fd, &st);
    char *buf = malloc((size_t)st.st_size + 1);
    assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return buf;
}

static void write_file(const char *path, const char *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);
}

static void test_every_truncation_and_flip(void **state)
{
    (void)state;
    struct queue_spool *sp;
    struct queue_spool_config cfg = { .dir = dir, .min_free_bytes = 1 };
    assert_int_equal(queue_spool_open(&cfg, &sp), 0);
    struct queue_port *port;
    assert_int_equal(queue_port_new(sp, &port), 0);
    struct queue_envelope *env = odd_envelope(2);
    char content[300];
    for (unsigned i = 0; i < sizeof(content); i++)
        content[i] = (char)(i * 13);
    queue_id_t id = 0;
    assert_int_equal(enqueue_sync(port, env, content, sizeof(content), &id), 0);
    env->id = id;
    odd_state(env, 2);
    assert_int_equal(update_sync(port, env), 0);

    char hex[QUEUE_ID_HEX], mpath[256], spath[260];
    queue_id_format(id, hex);
    snprintf(mpath, sizeof(mpath), "%s/msg/%02x/%s", dir, queue_spool_dir_of(id), hex);
    snprintf(spath, sizeof(spath), "%s.st", mpath);
    size_t mlen, slen;
    char *msg = read_file(mpath, &mlen), *st = read_file(spath, &slen);

    struct queue_envelope *got;
    void *body;
    size_t len;
    assert_int_equal(queue_spool_read(sp, id, &got, &body, &len), 0);
    assert_int_equal(len, sizeof(content));
    assert_memory_equal(body, content, len);
    env->content_size = len;
    assert_true(env_equal(env, got));
    free(body);
    queue_envelope_free(got);

    /* path, original bytes, its length; the other file is restored intact each time */
    struct {
        const char *path;
        char *buf;
        size_t len;
    } files[2] = { { mpath, msg, mlen }, { spath, st, slen } };
    unsigned checked = 0;
    for (int f = 0; f < 2; f++) {
        for (size_t cut = 0; cut < files[f].len; cut++) {
            write_file(files[!f].path, files[!f].buf, files[!f].len);
            write_file(files[f].path, files[f].buf, cut);
            int rc = queue_spool_read(sp, id, &got, &body, &len);
            if (rc != QUEUE_ERR_CORRUPT)
                fail_msg("file %d cut at %zu: %d", f, cut, rc);
            checked++;
        }
        for (size_t bit = 0; bit < files[f].len * 8; bit++) {
            write_file(files[!f].path, files[!f].buf, files[!f].len);
            files[f].buf[bit / 8] ^= (char)(1u << (bit % 8));
            write_file(files[f].path, files[f].buf, files[f].len);
            files[f].buf[bit / 8] ^= (char)(1u << (bit % 8));
            int rc = queue_spool_read(sp, id, &got, &body, &len);
            if (rc != QUEUE_ERR_CORRUPT)
                fail_msg("file %d bit %zu flipped: %d", f, bit, rc);
            checked++;
        }
    }
    /* Each corrupt read moved both files to quarantine/ (the state file if present). */
    struct queue_spool_stats stats;
    queue_spool_stats(sp, &stats);
    assert_true(stats.quarantined >= checked);
    assert_int_equal(queue_spool_read(sp, id, &got, NULL, NULL), QUEUE_ERR_NOT_FOUND);
    assert_int_equal(access(mpath, F_OK), -1);
    /* Intact again: readable again. */
    write_file(mpath, msg, mlen);
    write_file(spath, st, slen);
    assert_int_equal(queue_spool_read(sp, id, &got, NULL, NULL), 0);
    assert_true(env_equal(env, got));
    queue_envelope_free(got);

    /* Too big, refused before any I/O. */
    assert_int_equal(queue_port_enqueue(port, env, content, (50u << 20) + 1, sync_done_cb, NULL),
                     QUEUE_ERR_TOO_BIG);
    free(msg);
    free(st);
    queue_envelope_free(env);
    queue_spool_close(sp);
    queue_port_free(port);
}

static int setup(void **state)
{
    (void)state;
    scratch_dir(dir, sizeof(dir), "spool-format");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rm_rf(dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_roundtrip_odd_bytes),
        cmocka_unit_test(test_roundtrip_1000_all_kinds),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_every_truncation_and_flip),
    };
    return cmocka_run_group_tests(tests, setup, teardown) ? 1 : 0;
}
