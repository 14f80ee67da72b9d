/*
 * tests/queue/test_disk_full.c — the spool on a 4 MiB tmpfs that fills up.
 *
 * The tmpfs is mounted in a private mount namespace (unshare), so it disappears with
 * the process even if the test dies; it is also unmounted at the end. Needs root (or
 * CAP_SYS_ADMIN): exits 77 otherwise.
 *
 * 1. The reserve: with min_free_bytes = 1 MiB, messages are accepted until statvfs
 *    says the reserve is reached; every refusal is QUEUE_ERR_FULL; every message
 *    acknowledged before reads back intact; state updates of all of them still succeed
 *    (that is what the reserve is for); nothing is left in tmp/. Freeing space (an
 *    unrelated filler file) makes the spool accept messages again.
 * 2. A real ENOSPC: with no reserve, the disk is filled behind the spool's back (within
 *    its 100 ms statvfs cache), so the write itself fails: QUEUE_ERR_FULL, counted as a
 *    write error, the temp file removed, the earlier messages intact (a message that
 *    fits into the blocks of a recycled file needs no new space: accepted, and kept);
 *    after a removal the spool takes messages again. A final recovery finds nothing corrupt.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue/queue.h"
#include "tests/queue/spool_helpers.h"

#define MSG_SIZE (40 * 1024)
#define MAX_MSGS 200

static char mnt[128], spool[160], filler[160];

struct kept {
    queue_id_t id;
    unsigned seed;
};
static struct kept kept[MAX_MSGS];
static unsigned nkept;

static void fill_content(char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)(seed * 7 + i * 13 + (i >> 9));
}

static void write_filler(const char *path, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    static char zero[65536];
    size_t done = 0;
    while (done < len) {
        size_t n = len - done < sizeof(zero) ? len - done : sizeof(zero);
        ssize_t w = write(fd, zero, n);
        if (w <= 0)
            break; /* the disk is full: as much as fits */
        done += (size_t)w;
    }
    close(fd);
}

static int count_tmp(void)
{
    char path[200];
    snprintf(path, sizeof(path), "%s/tmp", spool);
    DIR *d = opendir(path);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    /* Recycled files (free.*) are kept on purpose: not leftovers. */
    while ((de = readdir(d)) != NULL)
        n += de->d_name[0] != '.' && strncmp(de->d_name, "free.", 5) != 0;
    closedir(d);
    return n;
}

static void check_all_intact(struct queue_spool *sp)
{
    static char want[MSG_SIZE];
    for (unsigned i = 0; i < nkept; i++) {
        struct queue_envelope *env;
        void *body;
        size_t len;
        assert_int_equal(queue_spool_read(sp, kept[i].id, &env, &body, &len), 0);
        fill_content(want, MSG_SIZE, kept[i].seed);
        assert_int_equal(len, MSG_SIZE);
        assert_memory_equal(body, want, MSG_SIZE);
        free(body);
        queue_envelope_free(env);
    }
}

/* Enqueues until the first refusal; returns it. */
static int enqueue_until_refused(struct queue_port *port, struct queue_envelope *env)
{
    static char content[MSG_SIZE];
    for (;;) {
        assert_true(nkept < MAX_MSGS);
        unsigned seed = nkept + 1000;
        fill_content(content, sizeof(content), seed);
        queue_id_t id = 0;
        int rc = enqueue_sync(port, env, content, sizeof(content), &id);
        if (rc != 0)
            return rc;
        kept[nkept++] = (struct kept){ id, seed };
    }
}

static void test_reserve(void **state)
{
    (void)state;
    write_filler(filler, 1 << 20);
    struct queue_spool *sp;
    struct queue_spool_config cfg = { .dir = spool, .min_free_bytes = 1 << 20 };
    assert_int_equal(queue_spool_open(&cfg, &sp), 0);
    struct queue_port *port;
    assert_int_equal(queue_port_new(sp, &port), 0);
    struct queue_envelope *env = odd_envelope(2);

    assert_int_equal(enqueue_until_refused(port, env), QUEUE_ERR_FULL);
    assert_true(nkept >= 10);
    static char content[MSG_SIZE];
    for (int i = 0; i < 5; i++)
        assert_int_equal(enqueue_sync(port, env, content, sizeof(content), NULL), QUEUE_ERR_FULL);
    struct queue_spool_stats ss;
    queue_spool_stats(sp, &ss);
    assert_true(ss.full_refusals >= 6);
    assert_int_equal(count_tmp(), 0);
    check_all_intact(sp);

    /* The reserve is there for the messages already accepted. */
    for (unsigned i = 0; i < nkept; i++) {
        env->id = kept[i].id;
        odd_state(env, i);
        env->rcpts[1].state = QUEUE_RCPT_DEFERRED;
        assert_int_equal(update_sync(port, env), 0);
    }
    check_all_intact(sp);

    /* Space comes back: accepted again (after the statvfs cache expires). */
    unlink(filler);
    usleep(150 * 1000);
    env->id = 0;
    assert_int_equal(enqueue_until_refused(port, env), QUEUE_ERR_FULL);
    check_all_intact(sp);
    queue_spool_close(sp);
    queue_port_free(port);
    queue_envelope_free(env);
}

static void test_enospc(void **state)
{
    (void)state;
    struct queue_spool *sp;
    struct queue_spool_config cfg = { .dir = spool, .min_free_bytes = 1 };
    assert_int_equal(queue_spool_open(&cfg, &sp), 0);
    struct queue_recover_stats rs;
    assert_int_equal(queue_spool_recover(sp, NULL, NULL, &rs), 0);
    assert_int_equal(rs.messages, nkept);
    struct queue_port *port;
    assert_int_equal(queue_port_new(sp, &port), 0);
    struct queue_envelope *env = odd_envelope(2);
    static char content[MSG_SIZE];
    struct queue_spool_stats ss;

    /* Make room for a few, then fill the disk right after the spool looked. */
    for (unsigned i = 0; i < 6 && nkept > 0; i++)
        assert_int_equal(remove_sync(port, kept[--nkept].id), 0);
    int rc = 0;
    for (int attempt = 0; attempt < 10; attempt++) {
        unsigned seed = nkept + 1000;
        fill_content(content, sizeof(content), seed);
        queue_id_t id = 0;
        usleep(150 * 1000);
        assert_int_equal(enqueue_sync(port, env, content, sizeof(content), &id), 0);
        kept[nkept++] = (struct kept){ id, seed };
        write_filler(filler, 8 << 20); /* everything that is left */
        rc = enqueue_sync(port, env, content, sizeof(content), &id);
        /* A message that fits into the blocks of a recycled file (one of the removed
         * ones) needs no new space: accepted, and kept like the others. */
        if (rc == 0)
            kept[nkept++] = (struct kept){ id, seed };
        queue_spool_stats(sp, &ss);
        if (ss.write_errors > 0)
            break;
        unlink(filler); /* the cache had expired: try again */
    }
    assert_true(ss.write_errors > 0);
    assert_int_equal(rc, QUEUE_ERR_FULL);
    assert_int_equal(count_tmp(), 0);
    check_all_intact(sp);

    /* A removal frees space; the spool takes messages again. */
    unlink(filler);
    assert_int_equal(remove_sync(port, kept[--nkept].id), 0);
    usleep(150 * 1000);
    fill_content(content, sizeof(content), nkept + 1000);
    queue_id_t id = 0;
    assert_int_equal(enqueue_sync(port, env, content, sizeof(content), &id), 0);
    kept[nkept] = (struct kept){ id, nkept + 1000 };
    nkept++;
    check_all_intact(sp);
    queue_spool_close(sp);
    queue_port_free(port);

    /* Nothing was corrupted along the way. */
    assert_int_equal(queue_spool_open(&cfg, &sp), 0);
    assert_int_equal(queue_spool_recover(sp, NULL, NULL, &rs), 0);
    assert_int_equal(rs.messages, nkept);
    assert_int_equal(rs.quarantined, 0);
    check_all_intact(sp);
    queue_spool_close(sp);
    queue_envelope_free(env);
}

static int mount_tmpfs(void)
{
    if (geteuid() != 0) {
        printf("skip: mounting a tmpfs needs root\n");
        return 77;
    }
    /* A private mount namespace: the tmpfs vanishes with this process, whatever happens. */
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        printf("skip: cannot make a private mount namespace: %s\n", strerror(errno));
        return 77;
    }
    scratch_dir(mnt, sizeof(mnt), "disk-full");
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=4m,mode=0700") != 0) {
        printf("skip: mount -t tmpfs is not permitted here: %s\n", strerror(errno));
        rmdir(mnt);
        return 77;
    }
    snprintf(spool, sizeof(spool), "%s/spool", mnt);
    snprintf(filler, sizeof(filler), "%s/filler", mnt);
    return 0;
}

int main(void)
{
    int rc = mount_tmpfs();
    if (rc != 0)
        return rc;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reserve),
        cmocka_unit_test(test_enospc),
    };
    rc = cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
    umount2(mnt, MNT_DETACH);
    rmdir(mnt);
    return rc;
}
