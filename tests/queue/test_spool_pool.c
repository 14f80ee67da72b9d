/*
 * tests/queue/test_spool_pool.c — recycled files (queue/spool_pool.c): a removed
 * message's file is kept in tmp/ as free.<seq> and rewritten for the next message.
 *
 * 1. Reuse: the next message (smaller, then bigger than the old content) lands in the
 *    same inode, reads back intact, and its file has exactly its own length (nothing of
 *    the old content is left past the new end); a state update reuses one too.
 * 2. Bounds: a removed file bigger than the pool's byte budget is unlinked, not kept.
 * 3. Recovery adopts free.<seq> files back into the pool (not counted as leftovers) and
 *    removes what is not one: a non-canonical name, a file with a second link (it could
 *    be a message's too after a machine crash), other leftovers.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue/queue.h"
#include "queue/queue_int.h" /* queue_spool_dir_of: where a message file lives */
#include "tests/queue/spool_helpers.h"

static char dir[128];

/* The names in tmp/ that start with "free."; *ino gets the inode of the last one. */
static int count_free(ino_t *ino)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/tmp", dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "free.", 5) != 0)
            continue;
        n++;
        if (ino)
            *ino = de->d_ino;
    }
    closedir(d);
    return n;
}

static int count_tmp(void)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/tmp", dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

static void msg_stat(queue_id_t id, const char *suffix, struct stat *st)
{
    char path[256], hex[QUEUE_ID_HEX];
    snprintf(path, sizeof(path), "%s/msg/%02x/%s%s", dir, queue_spool_dir_of(id),
             queue_id_format(id, hex), suffix);
    assert_int_equal(stat(path, st), 0);
}

static void fill(char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)('a' + (i * 7 + seed) % 26);
}

/* Enqueues len bytes of seed's content; checks it reads back and that the file is
 * recycled (same inode as want_ino) when want_ino is not 0. */
static queue_id_t enqueue_check(struct queue_spool *sp, struct queue_port *port,
                                struct queue_envelope *env, size_t len, unsigned seed,
                                ino_t want_ino)
{
    static char content[64 * 1024];
    assert_true(len <= sizeof(content));
    fill(content, len, seed);
    queue_id_t id = 0;
    assert_int_equal(enqueue_sync(port, env, content, len, &id), 0);
    struct stat st;
    msg_stat(id, "", &st);
    if (want_ino != 0)
        assert_int_equal(st.st_ino, want_ino);
    struct queue_envelope *got;
    void *body;
    size_t got_len;
    assert_int_equal(queue_spool_read(sp, id, &got, &body, &got_len), 0);
    assert_int_equal(got_len, len);
    assert_memory_equal(body, content, len);
    free(body);
    queue_envelope_free(got);
    return id;
}

static void test_reuse(void **state)
{
    (void)state;
    struct queue_spool *sp;
    struct queue_spool_config cfg = { .dir = dir, .min_free_bytes = 1 };
    assert_int_equal(queue_spool_open(&cfg, &sp), 0);
    struct queue_port *port;
    assert_int_equal(queue_port_new(sp, &port), 0);
    struct queue_envelope *env = odd_envelope(2);
    ino_t ino = 0;

    queue_id_t a = enqueue_check(sp, port, env, 5000, 1, 0);
    assert_int_equal(remove_sync(port, a), 0);
    assert_int_equal(count_free(&ino), 1);
    struct queue_envelope *gone = NULL;
    assert_int_equal(queue_spool_read(sp, a, &gone, NULL, NULL), QUEUE_ERR_NOT_FOUND);

    /* Smaller than the old content: same inode, cut to its own length. */
    queue_id_t b = enqueue_check(sp, port, env, 100, 2, ino);
    assert_int_equal(count_free(NULL), 0);
    assert_int_equal(remove_sync(port, b), 0);
    assert_int_equal(count_free(&ino), 1);

    /* Bigger. */
    queue_id_t c = enqueue_check(sp, port, env, 9000, 3, ino);
    assert_int_equal(count_free(NULL), 0);

    /* A state update takes a recycled file too. */
    queue_id_t d = enqueue_check(sp, port, env, 10, 4, 0);
    assert_int_equal(remove_sync(port, d), 0);
    assert_int_equal(count_free(&ino), 1);
    env->id = c;
    env->rcpts[0].state = QUEUE_RCPT_DEFERRED;
    env->rcpts[0].attempts = 3;
    assert_int_equal(update_sync(port, env), 0);
    struct stat st;
    msg_stat(c, ".st", &st);
    assert_int_equal(st.st_ino, ino);
    struct queue_envelope *got;
    assert_int_equal(queue_spool_read(sp, c, &got, NULL, NULL), 0);
    assert_int_equal(got->rcpts[0].state, QUEUE_RCPT_DEFERRED);
    assert_int_equal(got->rcpts[0].attempts, 3);
    queue_envelope_free(got);

    /* A second update exchanges the state files: the new state takes the pool's file,
     * the old state's inode goes into the pool (nothing freed, nothing created), and
     * the state reads back as the latest. */
    ino_t old_state = st.st_ino;
    assert_int_equal(count_free(NULL), 0);
    env->id = c;
    env->rcpts[0].attempts = 4;
    assert_int_equal(update_sync(port, env), 0); /* a new inode: the pool was empty */
    msg_stat(c, ".st", &st);
    ino_t mid_state = st.st_ino;
    assert_int_equal(count_free(&ino), 1);
    assert_int_equal(ino, old_state); /* the replaced state is a pool file now */
    env->rcpts[0].attempts = 5;
    assert_int_equal(update_sync(port, env), 0);
    msg_stat(c, ".st", &st);
    assert_int_equal(st.st_ino, old_state); /* written into the pool file */
    assert_int_equal(count_free(&ino), 1);
    assert_int_equal(ino, mid_state); /* and the one it replaced went to the pool */
    assert_int_equal(queue_spool_read(sp, c, &got, NULL, NULL), 0);
    assert_int_equal(got->rcpts[0].attempts, 5);
    queue_envelope_free(got);
    assert_int_equal(count_free(NULL), 1);

    /* Its removal recycles both files. */
    assert_int_equal(remove_sync(port, c), 0);
    assert_int_equal(count_free(NULL), 3);
    assert_int_equal(remove_sync(port, c), QUEUE_ERR_NOT_FOUND);
    assert_int_equal(count_free(NULL), 3);

    queue_spool_close(sp);
    queue_port_free(port);
    queue_envelope_free(env);
}

static void test_budget(void **state)
{
    (void)state;
    struct queue_spool *sp;
    struct queue_spool_config cfg = { .dir = dir, .min_free_bytes = 1 };
    assert_int_equal(queue_spool_open(&cfg, &sp), 0);
    assert_int_equal(queue_spool_recover(sp, NULL, NULL, NULL), 0);
    struct queue_port *port;
    assert_int_equal(queue_port_new(sp, &port), 0);
    struct queue_envelope *env = odd_envelope(1);
    int before = count_free(NULL);
    size_t big = 33u << 20; /* over the pool's 32 MiB */
    char *content = calloc(1, big);
    assert_non_null(content);
    queue_id_t id = 0;
    assert_int_equal(enqueue_sync(port, env, content, big, &id), 0);
    assert_int_equal(remove_sync(port, id), 0);
    assert_int_equal(count_free(NULL), before > 0 ? before - 1 : 0);
    free(content);
    queue_spool_close(sp);
    queue_port_free(port);
    queue_envelope_free(env);
}

static void put_file(const char *name, const char *link_as)
{
    char path[256], other[256];
    snprintf(path, sizeof(path), "%s/tmp/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "junk", 4), 4);
    close(fd);
    if (link_as) {
        snprintf(other, sizeof(other), "%s/%s", dir, link_as);
        assert_int_equal(link(path, other), 0);
    }
}

static void test_recover_adopts(void **state)
{
    (void)state;
    struct queue_spool *sp;
    struct queue_spool_config cfg = { .dir = dir, .min_free_bytes = 1 };
    assert_int_equal(queue_spool_open(&cfg, &sp), 0);
    assert_int_equal(queue_spool_recover(sp, NULL, NULL, NULL), 0);
    struct queue_port *port;
    assert_int_equal(queue_port_new(sp, &port), 0);
    struct queue_envelope *env = odd_envelope(1);
    /* Empty the pool, then recycle exactly one file. */
    while (count_free(NULL) > 0)
        enqueue_check(sp, port, env, 10, 5, 0);
    queue_id_t a = enqueue_check(sp, port, env, 3000, 6, 0);
    assert_int_equal(remove_sync(port, a), 0);
    ino_t ino = 0;
    assert_int_equal(count_free(&ino), 1);
    queue_spool_close(sp);
    queue_port_free(port);

    put_file("free.0077", NULL);               /* not the canonical name */
    put_file("free.78", "other-link");         /* a second link, outside tmp/ */
    put_file("0190000000000d05.msg.10", NULL); /* a write never acknowledged */

    assert_int_equal(queue_spool_open(&cfg, &sp), 0);
    struct queue_recover_stats rs;
    assert_int_equal(queue_spool_recover(sp, NULL, NULL, &rs), 0);
    assert_int_equal(rs.incomplete, 3);
    assert_int_equal(count_tmp(), 1);
    assert_int_equal(count_free(NULL), 1);
    assert_int_equal(queue_port_new(sp, &port), 0);
    enqueue_check(sp, port, env, 2000, 7, ino);
    assert_int_equal(count_tmp(), 0);
    char path[256];
    snprintf(path, sizeof(path), "%s/other-link", dir);
    assert_int_equal(unlink(path), 0); /* the file that was not adopted is still whole */
    queue_spool_close(sp);
    queue_port_free(port);
    queue_envelope_free(env);
}

int main(void)
{
    scratch_dir(dir, sizeof(dir), "pool");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reuse),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_recover_adopts),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    rm_rf(dir);
    return rc;
}
