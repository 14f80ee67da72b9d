/*
 * queue/spool.c — the spool's life and its blocking reads: open (directories, the
 * lock, the committer thread), close, stats, queue_spool_read, and the helpers the
 * committer and the recovery share (quarantine, names, logging).
 */
#define _GNU_SOURCE
#include "queue/queue_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAX_MESSAGE (50ull << 20)
#define DEFAULT_MIN_FREE    (64ull << 20)
#define DEFAULT_BATCH       256u

void queue_spool_logf(struct queue_spool *sp, const char *fmt, ...)
{
    if (sp->log == NULL)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    sp->log(sp->log_arg, line);
}

void queue_spool_name(queue_id_t id, bool state, char out[24])
{
    queue_id_format(id, out);
    if (state)
        memcpy(out + QUEUE_ID_HEX - 1, ".st", 4);
}

int queue_spool_quarantine(struct queue_spool *sp, int dirfd, const char *dirname, const char *name,
                           const char *why)
{
    char dst[96];
    int rc = 0;
    /* Never replace an earlier quarantined file of the same name: both are evidence. */
    snprintf(dst, sizeof(dst), "%s", name);
    for (unsigned i = 1; i <= 100; i++) {
        rc = renameat2(dirfd, name, sp->quarfd, dst, RENAME_NOREPLACE) == 0 ? 0 : -errno;
        if (rc != -EEXIST)
            break;
        static unsigned long counter;
        snprintf(dst, sizeof(dst), "%s.%ld.%lu", name, (long)getpid(),
                 __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED));
    }
    if (rc == -ENOENT)
        return rc; /* nothing there (a message without a state file yet) */
    queue_stat_add(&sp->st.quarantined, 1);
    if (rc == 0)
        queue_spool_logf(sp, "spool: quarantined %s/%s as quarantine/%s: %s", dirname, name, dst,
                         why);
    else
        queue_spool_logf(sp, "spool: %s/%s is corrupt (%s) and could not be quarantined: %s",
                         dirname, name, why, strerror(-rc));
    return rc;
}

int queue_spool_slurp(int fd, size_t max, char **out, size_t *len)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -errno;
    if ((uint64_t)st.st_size > max)
        return QUEUE_ERR_CORRUPT;
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n ? n : 1);
    if (buf == NULL)
        return -ENOMEM;
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int rc = r < 0 ? -errno : QUEUE_ERR_CORRUPT; /* shrank under us */
            free(buf);
            return rc;
        }
        got += (size_t)r;
    }
    *out = buf;
    *len = n;
    return 0;
}

static int mkdir_at(int dirfd, const char *name)
{
    return mkdirat(dirfd, name, 0700) == 0 || errno == EEXIST ? 0 : -errno;
}

static int open_dir_at(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

/* Creates what is missing and opens the subfolders; the directory fds stay open for
 * the committer's fsyncs and the *at() calls. */
static int open_layout(struct queue_spool *sp)
{
    int rc;
    if ((rc = mkdir_at(sp->dirfd, "msg")) != 0 || (rc = mkdir_at(sp->dirfd, "tmp")) != 0 ||
        (rc = mkdir_at(sp->dirfd, "quarantine")) != 0)
        return rc;
    if ((sp->msgdirfd = open_dir_at(sp->dirfd, "msg")) < 0)
        return sp->msgdirfd;
    if ((sp->tmpfd = open_dir_at(sp->dirfd, "tmp")) < 0)
        return sp->tmpfd;
    if ((sp->quarfd = open_dir_at(sp->dirfd, "quarantine")) < 0)
        return sp->quarfd;
    bool created = false;
    for (unsigned i = 0; i < QUEUE_SPOOL_DIRS; i++) {
        char name[4];
        snprintf(name, sizeof(name), "%02x", i);
        if (mkdirat(sp->msgdirfd, name, 0700) == 0)
            created = true;
        else if (errno != EEXIST)
            return -errno;
        if ((sp->msgfd[i] = open_dir_at(sp->msgdirfd, name)) < 0)
            return sp->msgfd[i];
    }
    /* A fresh layout is made durable once, so a crash cannot lose a subfolder that a
     * later message file was renamed into. */
    if (created && (fsync(sp->msgdirfd) != 0 || fsync(sp->dirfd) != 0))
        return -errno;
    return 0;
}

static void spool_free(struct queue_spool *sp)
{
    int *fds[] = { &sp->dirfd, &sp->lockfd, &sp->tmpfd, &sp->quarfd, &sp->msgdirfd };
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        if (*fds[i] >= 0)
            close(*fds[i]);
    for (unsigned i = 0; i < QUEUE_SPOOL_DIRS; i++)
        if (sp->msgfd[i] >= 0)
            close(sp->msgfd[i]);
    pthread_mutex_destroy(&sp->mu);
    pthread_cond_destroy(&sp->cv);
    free(sp->buf);
    free(sp->pool);
    free(sp->sync_fds);
    free(sp->sync_errs);
    free(sp);
}

int queue_spool_open(const struct queue_spool_config *cfg, struct queue_spool **out)
{
    if (cfg == NULL || cfg->dir == NULL || cfg->dir[0] == '\0' || out == NULL)
        return QUEUE_ERR_CONFIG;
    struct queue_spool *sp = calloc(1, sizeof(*sp));
    if (sp == NULL)
        return -ENOMEM;
    sp->dirfd = sp->lockfd = sp->tmpfd = sp->quarfd = sp->msgdirfd = -1;
    for (unsigned i = 0; i < QUEUE_SPOOL_DIRS; i++)
        sp->msgfd[i] = -1;
    pthread_mutex_init(&sp->mu, NULL);
    pthread_cond_init(&sp->cv, NULL);
    sp->tail = &sp->head;
    sp->max_message_size = cfg->max_message_size ? cfg->max_message_size : DEFAULT_MAX_MESSAGE;
    sp->min_free_bytes = cfg->min_free_bytes ? cfg->min_free_bytes : DEFAULT_MIN_FREE;
    sp->batch_max = cfg->batch_max ? cfg->batch_max : DEFAULT_BATCH;
    size_t nsync = sp->batch_max > QUEUE_SPOOL_DIRS ? sp->batch_max : QUEUE_SPOOL_DIRS;
    sp->sync_fds = calloc(nsync, sizeof(int));
    sp->sync_errs = calloc(nsync, sizeof(int));
    if (sp->sync_fds == NULL || sp->sync_errs == NULL) {
        spool_free(sp);
        return -ENOMEM;
    }
    sp->no_group_commit = cfg->no_group_commit;
    sp->use_syncfs = cfg->sync_fs;
    sp->log = cfg->log;
    sp->log_arg = cfg->log_arg;

    /* The sequence starts at a random point so that two processes started in the same
     * millisecond do not walk the same ids; RENAME_NOREPLACE catches the rest. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    sp->id_seq = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 7) ^ (uint64_t)(uintptr_t)sp;
    sp->id_seq = (sp->id_seq * 0x9e3779b97f4a7c15ull) >> 40;
    sp->state_seq = (uint64_t)ts.tv_sec << 20;

    int rc;
    if (mkdir(cfg->dir, 0700) != 0 && errno != EEXIST) {
        rc = -errno;
        goto fail;
    }
    if ((sp->dirfd = open(cfg->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        rc = -errno;
        goto fail;
    }
    if ((sp->lockfd = openat(sp->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
        rc = -errno;
        goto fail;
    }
    if (flock(sp->lockfd, LOCK_EX | LOCK_NB) != 0) {
        rc = errno == EWOULDBLOCK ? QUEUE_ERR_LOCKED : -errno;
        goto fail;
    }
    if ((rc = open_layout(sp)) != 0 || (rc = queue_spool_pool_init(sp)) != 0)
        goto fail;
    if ((rc = -pthread_create(&sp->committer, NULL, queue_spool_committer, sp)) != 0)
        goto fail;
    sp->started = true;
    *out = sp;
    return 0;
fail:
    spool_free(sp);
    return rc;
}

void queue_spool_close(struct queue_spool *sp)
{
    if (sp == NULL)
        return;
    if (sp->started) {
        pthread_mutex_lock(&sp->mu);
        sp->closing = true;
        pthread_cond_signal(&sp->cv);
        pthread_mutex_unlock(&sp->mu);
        pthread_join(sp->committer, NULL);
    }
    spool_free(sp); /* closing the lock file releases the flock */
}

void queue_spool_stats(const struct queue_spool *sp, struct queue_spool_stats *out)
{
    const uint64_t *src = (const uint64_t *)&sp->st;
    uint64_t *dst = (uint64_t *)out;
    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

/* Reads n bytes at off exactly; a short file is corrupt. */
static int pread_all(int fd, void *buf, size_t n, off_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, off + (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return QUEUE_ERR_CORRUPT;
        got += (size_t)r;
    }
    return 0;
}

/* The message file's envelope and, if wanted, verified content. With the content, the
 * whole file comes in one read into the buffer that becomes *content: the delivery
 * path reads every message once, and three reads and two allocations were a visible
 * part of a worker's time. */
static int read_message(int fd, struct queue_envelope **env, void **content, size_t *len)
{
    struct stat st;
    char first[QUEUE_MSG_LINE1_LEN];
    size_t hlen;
    uint32_t want;
    int rc;
    if (fstat(fd, &st) != 0)
        return -errno;
    if (content == NULL || (uint64_t)st.st_size < sizeof(first)) {
        if ((rc = pread_all(fd, first, sizeof(first), 0)) != 0 ||
            (rc = queue_msg_peek(first, sizeof(first), &hlen)) != 0)
            return rc;
        if (hlen > (uint64_t)st.st_size)
            return QUEUE_ERR_CORRUPT;
        char *hdr = malloc(hlen);
        if (hdr == NULL)
            return -ENOMEM;
        if ((rc = pread_all(fd, hdr, hlen, 0)) == 0)
            rc = queue_msg_decode(hdr, hlen, (uint64_t)st.st_size, env, &want);
        free(hdr);
        return rc;
    }
    size_t total = (size_t)st.st_size;
    char *buf = malloc(total);
    if (buf == NULL)
        return -ENOMEM;
    if ((rc = pread_all(fd, buf, total, 0)) != 0 || (rc = queue_msg_peek(buf, total, &hlen)) != 0 ||
        (rc = hlen > total ? QUEUE_ERR_CORRUPT : 0) != 0 ||
        (rc = queue_msg_decode(buf, hlen, (uint64_t)total, env, &want)) != 0) {
        free(buf);
        return rc;
    }
    size_t n = (size_t)(*env)->content_size;
    if (n > total - hlen || queue_crc32c(0, buf + hlen, n) != want) {
        free(buf);
        queue_envelope_free(*env);
        *env = NULL;
        return QUEUE_ERR_CORRUPT;
    }
    memmove(buf, buf + hlen, n); /* the caller frees the content with free() */
    *content = buf;
    *len = n;
    return 0;
}

static int read_state(int dirfd, const char *name, struct queue_envelope *env)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno; /* no state file yet: as enqueued */
    char *buf;
    size_t n;
    uint64_t seq;
    int rc = queue_spool_slurp(fd, QUEUE_SPOOL_STATE_MAX, &buf, &n);
    close(fd);
    if (rc == 0) {
        rc = queue_state_apply(buf, n, env, &seq);
        free(buf);
    }
    return rc;
}

static int spool_read(struct queue_spool *sp, queue_id_t id, bool fresh,
                      struct queue_envelope **env, void **content, size_t *len)
{
    char name[24], stname[24], dirname[8];
    unsigned d = queue_spool_dir_of(id);
    queue_spool_name(id, false, name);
    queue_spool_name(id, true, stname);
    snprintf(dirname, sizeof(dirname), "msg/%02x", d);
    /* O_NOATIME: the first read of a new file would otherwise dirty its inode for the
     * atime (relatime), one more metadata write per message for nothing. Only the
     * file's owner may ask for it; anyone else reads without. */
    int fd = openat(sp->msgfd[d], name, O_RDONLY | O_CLOEXEC | O_NOATIME);
    if (fd < 0 && errno == EPERM)
        fd = openat(sp->msgfd[d], name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? QUEUE_ERR_NOT_FOUND : -errno;
    struct queue_envelope *e = NULL;
    void *body = NULL;
    int rc = read_message(fd, &e, content ? &body : NULL, len);
    close(fd);
    const char *why = "message file corrupt";
    if (rc == 0 && e->id != id)
        rc = QUEUE_ERR_CORRUPT;
    if (rc == 0 && !fresh && (rc = read_state(sp->msgfd[d], stname, e)) == QUEUE_ERR_CORRUPT)
        why = "state file corrupt";
    if (rc == QUEUE_ERR_CORRUPT) {
        /* Both files go: a message without its state would deliver again to
         * recipients that already have it. */
        queue_spool_quarantine(sp, sp->msgfd[d], dirname, stname, why);
        queue_spool_quarantine(sp, sp->msgfd[d], dirname, name, why);
    }
    if (rc != 0) {
        queue_envelope_free(e);
        free(body);
        return rc;
    }
    *env = e;
    if (content)
        *content = body;
    return 0;
}

int queue_spool_read(struct queue_spool *sp, queue_id_t id, struct queue_envelope **env,
                     void **content, size_t *len)
{
    return spool_read(sp, id, false, env, content, len);
}

int queue_spool_read_fresh(struct queue_spool *sp, queue_id_t id, struct queue_envelope **env,
                           void **content, size_t *len)
{
    return spool_read(sp, id, true, env, content, len);
}
