/*
 * tests/queue/test_spool_recover.c — queue_spool_recover on a real spool: messages
 * enqueued through a port (many in flight, driven by poll on queue_port_fd), updated,
 * finished, removed; then damage is planted (an empty file, a truncated one, garbage,
 * a corrupt state file, an unexpected name, a tmp/ leftover, an orphan state file).
 * After reopening, every good unfinished message is reported exactly once with its
 * latest state and intact content, finished ones are gone, the damage is in
 * quarantine/ and counted, and the spool still takes messages. Also: the lock.
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

#define N 300

static char dir[128];
static int log_lines;

static void count_log(void *arg, const char *line)
{
    (void)arg;
    if (getenv("SPOOL_TEST_VERBOSE"))
        fprintf(stderr, "log: %s\n", line);
    log_lines++;
}

enum fate { KEEP, PARTIAL, FINISHED, REMOVED, TRUNCATED, CORRUPT_STATE };

struct msg {
    queue_id_t id;
    int res, seen;
    enum fate fate;
    struct queue_envelope *env; /* the latest state written */
    char content[2048];
    size_t len;
};

static struct msg msgs[N];
static struct sync_done removals;

static void on_enqueued(void *arg, queue_id_t id, int res)
{
    struct msg *m = arg;
    m->id = id;
    m->res = res;
    m->seen++;
}

static void drain(struct queue_port *port, int *done, int want)
{
    for (int i = 0; i < 2000 && *done < want; i++) {
        struct pollfd pfd = { .fd = queue_port_fd(port), .events = POLLIN };
        if (poll(&pfd, 1, 10) > 0)
            *done += (int)queue_port_reap(port);
    }
    assert_int_equal(*done, want);
}

static void spool_path(char *out, size_t cap, queue_id_t id, const char *suffix)
{
    char hex[QUEUE_ID_HEX];
    snprintf(out, cap, "%s/msg/%02x/%s%s", dir, queue_spool_dir_of(id), queue_id_format(id, hex),
             suffix);
}

static void put_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);
}

static int count_dir(const char *sub)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, sub);
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

static struct msg *find(queue_id_t id)
{
    for (int i = 0; i < N; i++)
        if (msgs[i].id == id)
            return &msgs[i];
    return NULL;
}

static int on_recovered(void *arg, const struct queue_envelope *env)
{
    int *extra = arg;
    struct msg *m = find(env->id);
    if (m == NULL) {
        (*extra)++;
        return 0;
    }
    m->seen++;
    struct queue_envelope *want = m->env;
    want->content_size = m->len;
    if (!env_equal(want, env))
        fail_msg("message %d: recovered state differs", (int)(m - msgs));
    return 0;
}

/* Step 1: enqueue N with all in flight, then updates and removals. */
static void fill(struct queue_spool *sp)
{
    struct queue_port *port;
    assert_int_equal(queue_port_new(sp, &port), 0);
    int done = 0;
    for (int i = 0; i < N; i++) {
        struct msg *m = &msgs[i];
        m->fate = (enum fate)(i % 6);
        m->env = odd_envelope(1 + i % 4);
        m->env->arrival = 1700000000 + i;
        m->len = (size_t)(i * 7) % sizeof(m->content);
        for (size_t k = 0; k < m->len; k++)
            m->content[k] = (char)(i + k * 31);
        assert_int_equal(queue_port_enqueue(port, m->env, m->content, m->len, on_enqueued, m), 0);
    }
    drain(port, &done, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(msgs[i].res, 0);
        assert_int_equal(msgs[i].seen, 1);
        msgs[i].env->id = msgs[i].id;
        msgs[i].seen = 0;
        for (int j = 0; j < i; j++)
            assert_true(msgs[j].id != msgs[i].id);
    }
    /* Updates, many in flight; a second update of the same message later must win. */
    int want = 0;
    for (int i = 0; i < N; i++) {
        struct msg *m = &msgs[i];
        if (m->fate == PARTIAL || m->fate == CORRUPT_STATE) {
            odd_state(m->env, (unsigned)i);
            m->env->rcpts[0].state = QUEUE_RCPT_DEFERRED;
            m->env->rcpts[m->env->nrcpts - 1].state = QUEUE_RCPT_DEFERRED; /* unfinished */
        } else if (m->fate == FINISHED || m->fate == REMOVED) {
            odd_state(m->env, (unsigned)i);
            for (unsigned r = 0; r < m->env->nrcpts; r++)
                m->env->rcpts[r].state = r % 2 ? QUEUE_RCPT_BOUNCED : QUEUE_RCPT_DELIVERED;
        } else {
            continue;
        }
        struct sync_done d = { 0 };
        assert_int_equal(queue_port_update(port, m->env, sync_done_cb, &d), 0);
        assert_int_equal(port_wait(port, &d, 1), 0);
        assert_int_equal(d.res, 0);
        if (m->fate == PARTIAL) { /* then once more, with the first recipient delivered */
            if (m->env->nrcpts > 1)
                m->env->rcpts[0].state = QUEUE_RCPT_DELIVERED;
            m->env->attempts++;
            assert_int_equal(update_sync(port, m->env), 0);
        }
        if (m->fate == REMOVED) { /* left in flight: closing must finish them */
            assert_int_equal(queue_port_remove(port, m->id, sync_done_cb, &removals), 0);
            want++;
        }
    }
    struct queue_envelope *ghost = odd_envelope(1);
    ghost->id = 0x123456;
    assert_int_equal(update_sync(port, ghost), QUEUE_ERR_NOT_FOUND);
    assert_int_equal(remove_sync(port, 0x123456), QUEUE_ERR_NOT_FOUND);
    queue_envelope_free(ghost);
    queue_spool_close(sp); /* finishes the removals still in flight */
    queue_port_reap(port);
    assert_int_equal(removals.calls, want);
    assert_int_equal(removals.res, 0);
    queue_port_free(port);
}

/* Step 2: the damage. Returns how many files must end in quarantine/. */
static int plant_damage(void)
{
    char path[256], buf[4096];
    int quarantined = 0;
    for (int i = 0; i < N; i++) {
        struct msg *m = &msgs[i];
        if (m->fate == TRUNCATED) {
            spool_path(path, sizeof(path), m->id, "");
            struct stat st;
            assert_int_equal(stat(path, &st), 0);
            assert_int_equal(truncate(path, st.st_size - 1 - i % 50), 0);
            quarantined++;
        } else if (m->fate == CORRUPT_STATE) {
            spool_path(path, sizeof(path), m->id, ".st");
            int fd = open(path, O_RDWR);
            assert_true(fd >= 0);
            assert_int_equal(pwrite(fd, "X", 1, 40 + i % 20), 1);
            close(fd);
            quarantined += 2; /* the message goes with its state */
        }
    }
    /* Files that were never messages of this spool. */
    spool_path(path, sizeof(path), 0x0190000000000a01ull, "");
    put_file(path, "", 0); /* zero-length */
    spool_path(path, sizeof(path), 0x0190000000000b02ull, "");
    for (size_t k = 0; k < sizeof(buf); k++)
        buf[k] = (char)(k * 131 + 7);
    put_file(path, buf, sizeof(buf)); /* garbage */
    spool_path(path, sizeof(path), 0x0190000000000c03ull, "");
    put_file(path, "floormta-msg 1 header=0000009999\nid", 36); /* a header cut short */
    snprintf(path, sizeof(path), "%s/msg/07/notes.txt", dir);
    put_file(path, "hello", 5); /* an unexpected name */
    quarantined += 4;
    snprintf(path, sizeof(path), "%s/tmp/0190000000000d04.msg.17", dir);
    put_file(path, buf, 100); /* a write that was never acknowledged */
    spool_path(path, sizeof(path), 0x0190000000000e05ull, ".st");
    put_file(path, buf, 10); /* an orphan state file (an interrupted removal) */
    return quarantined;
}

static void test_recover(void **state)
{
    (void)state;
    struct queue_spool *sp, *second;
    struct queue_spool_config cfg = {
        .dir = dir, .min_free_bytes = 1, .log = count_log, .batch_max = 64
    };
    assert_int_equal(queue_spool_open(&cfg, &sp), 0);
    assert_int_equal(queue_spool_open(&cfg, &second), QUEUE_ERR_LOCKED);
    struct queue_recover_stats rs;
    assert_int_equal(queue_spool_recover(sp, NULL, NULL, &rs), 0);
    assert_int_equal(rs.messages + rs.quarantined + rs.finished + rs.incomplete, 0);
    fill(sp);
    int want_quarantined = plant_damage();

    assert_int_equal(queue_spool_open(&cfg, &sp), 0);
    int extra = 0;
    log_lines = 0;
    assert_int_equal(queue_spool_recover(sp, on_recovered, &extra, &rs), 0);
    assert_int_equal(extra, 0);
    uint64_t want_messages = 0, want_finished = 0, want_bytes = 0;
    struct queue_port *port;
    assert_int_equal(queue_port_new(sp, &port), 0);
    for (int i = 0; i < N; i++) {
        struct msg *m = &msgs[i];
        char path[256];
        spool_path(path, sizeof(path), m->id, "");
        bool good = m->fate == KEEP || m->fate == PARTIAL;
        if (m->seen != (good ? 1 : 0))
            fail_msg("message %d (fate %d, id %016llx) reported %d times", i, m->fate,
                     (unsigned long long)m->id, m->seen);
        want_finished += m->fate == FINISHED;
        if (!good) {
            assert_int_equal(access(path, F_OK), -1);
            continue;
        }
        want_messages++;
        want_bytes += m->len;
        struct queue_envelope *env;
        void *body;
        size_t len;
        assert_int_equal(queue_spool_read(sp, m->id, &env, &body, &len), 0);
        assert_int_equal(len, m->len);
        assert_memory_equal(body, m->content, len);
        assert_true(env_equal(m->env, env));
        free(body);
        queue_envelope_free(env);
    }
    assert_int_equal(rs.messages, want_messages);
    assert_int_equal(rs.finished, want_finished);
    assert_int_equal(rs.bytes, want_bytes);
    assert_int_equal(rs.quarantined, want_quarantined);
    assert_int_equal(rs.incomplete, 2);
    assert_int_equal(count_dir("quarantine"), want_quarantined);
    assert_int_equal(count_dir("tmp"), 0);
    assert_true(log_lines >= want_quarantined);

    /* Still open for business, and a second scan finds nothing more to do. */
    struct queue_envelope *env = odd_envelope(2);
    queue_id_t id = 0;
    assert_int_equal(enqueue_sync(port, env, "new", 3, &id), 0);
    queue_spool_close(sp);
    queue_port_free(port);
    assert_int_equal(queue_spool_open(&cfg, &sp), 0);
    assert_int_equal(queue_spool_recover(sp, NULL, NULL, &rs), 0);
    assert_int_equal(rs.messages, want_messages + 1);
    assert_int_equal(rs.quarantined + rs.finished + rs.incomplete, 0);
    struct queue_spool_stats ss;
    queue_spool_stats(sp, &ss);
    assert_true(ss.spool_bytes > want_bytes);
    queue_spool_close(sp);
    queue_envelope_free(env);
    for (int i = 0; i < N; i++)
        queue_envelope_free(msgs[i].env);
}

static int setup(void **state)
{
    (void)state;
    scratch_dir(dir, sizeof(dir), "spool-recover");
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
        cmocka_unit_test(test_recover),
    };
    return cmocka_run_group_tests(tests, setup, teardown) ? 1 : 0;
}
