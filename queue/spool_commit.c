/*
 * queue/spool_commit.c — the committer thread: group commit of the durable writes.
 *
 * One round takes every request submitted so far (up to batch_max, and up to
 * ROUND_BYTES of content), then:
 *   1. writes each new file to tmp/: into a recycled file (spool_pool.c: no inode to
 *      allocate) or a new tmp/<id>.<kind>.<seq>;
 *   2. makes the data durable: sync_file_range(WRITE) on all of them first, so the
 *      writes of the whole round are in flight together (on a journaling filesystem
 *      their block allocations also land in one transaction, which the first fdatasync
 *      commits), then an fdatasync of each, all issued at once (spool_sync.c): without
 *      a journal (ext4 on this project's VMs) each fdatasync also flushes the disk's
 *      cache, and flushes that wait together are merged — or one syncfs for the round
 *      (use_syncfs);
 *   3. publishes: renameat2(RENAME_NOREPLACE) for a new message (a collision of ids
 *      retries under a new id), rename over the old state file for an update, and
 *      for a removal takes the files out of msg/XX (message file first, then the state
 *      file) by recycling them into tmp/ (spool_pool.c) or unlinking them;
 *   4. fsyncs each touched msg/XX directory once (all at once, as in step 2);
 *   5. hands every request back to its port.
 * A failed request is failed alone: its temp file is removed, nothing already
 * accepted is touched, and the next round starts clean (no sticky error state).
 */
#define _GNU_SOURCE
#include "queue/queue_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define ROUND_BYTES   (64ull << 20) /* content written before one sync: bounds dirty memory */
#define FREE_CACHE_NS 100000000ll   /* statvfs at most every 100 ms */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* Milliseconds since 2025-01-01T00:00:00Z fill 40 bits until 2059, so ids sort by
 * arrival (operators read them that way) for the life of a spool. */
#define QUEUE_ID_EPOCH_MS 1735689600000ull

static queue_id_t new_id(struct queue_spool *sp)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    ms = ms > QUEUE_ID_EPOCH_MS ? ms - QUEUE_ID_EPOCH_MS : 0;
    uint64_t seq = sp->id_seq++ & 0xffffffu;
    queue_id_t id = (ms & 0xffffffffffull) << 24 | seq;
    return id ? id : 1; /* 0 is never an id */
}

/* The reserve: a new message must leave min_free_bytes free. statvfs is cached for
 * 100 ms and what this process wrote since is subtracted, so a burst of big messages
 * cannot overshoot between two looks. */
static int space_check(struct queue_spool *sp, uint64_t need)
{
    int64_t now = mono_ns();
    if (sp->free_at_ns == 0 || now - sp->free_at_ns > FREE_CACHE_NS) {
        struct statvfs v;
        if (fstatvfs(sp->dirfd, &v) == 0) {
            sp->free_bytes = (uint64_t)v.f_bavail * v.f_frsize;
            sp->free_at_ns = now;
        }
    }
    need = (need + 4095) & ~4095ull;
    if (sp->free_bytes < sp->min_free_bytes || sp->free_bytes - sp->min_free_bytes < need) {
        if (sp->npool == 0)
            return QUEUE_ERR_FULL;
        /* Recycled files hold their old content until reused: give it back first. */
        queue_spool_pool_drain(sp);
        sp->free_at_ns = 0;
        return space_check(sp, need);
    }
    sp->free_bytes -= need;
    return 0;
}

static int grow_buf(struct queue_spool *sp, size_t need)
{
    if (need <= sp->bufcap)
        return 0;
    char *b = realloc(sp->buf, need);
    if (b == NULL)
        return -ENOMEM;
    sp->buf = b;
    sp->bufcap = need;
    return 0;
}

/* An I/O error as the submitter sees it: out of space is QUEUE_ERR_FULL. */
static int io_error(struct queue_spool *sp, struct queue_req *r, const char *what, int err)
{
    char hex[QUEUE_ID_HEX];
    queue_stat_add(&sp->st.write_errors, 1);
    if (err == ENOSPC || err == EDQUOT) {
        sp->free_at_ns = 0; /* look again next time */
        queue_spool_pool_drain(sp);
    }
    queue_spool_logf(sp, "spool: %s %s: %s", what, queue_id_format(r->id, hex), strerror(err));
    return err == ENOSPC || err == EDQUOT ? QUEUE_ERR_FULL : -err;
}

/* Writes iov's bytes to a recycled file, or else to a new tmp/<r->tmp>; r->tmp names
 * the file written and r->fd stays open for the sync. */
static int write_tmp(struct queue_spool *sp, struct queue_req *r, struct iovec *iov, int iovcnt)
{
    char pooled[QUEUE_POOL_NAME];
    uint64_t old_bytes = 0, len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    int fd = queue_spool_pool_take(sp, pooled, &old_bytes);
    if (fd >= 0) {
        memcpy(r->tmp, pooled, sizeof(pooled));
    } else if ((fd = openat(sp->tmpfd, r->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
        return io_error(sp, r, "create", errno);
    while (iovcnt > 0) {
        ssize_t n = writev(fd, iov, iovcnt);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int rc = io_error(sp, r, "write", n < 0 ? errno : EIO);
            close(fd);
            unlinkat(sp->tmpfd, r->tmp, 0);
            return rc;
        }
        while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    /* A recycled file keeps nothing of its old content past the new end. */
    if (old_bytes > len && ftruncate(fd, (off_t)len) != 0) {
        int rc = io_error(sp, r, "truncate", errno);
        close(fd);
        unlinkat(sp->tmpfd, r->tmp, 0);
        return rc;
    }
    r->fd = fd;
    return 0;
}

static int prepare_enqueue(struct queue_spool *sp, struct queue_req *r)
{
    int rc;
    if ((rc = space_check(sp, r->len + 4096)) != 0) {
        queue_stat_add(&sp->st.full_refusals, 1);
        return rc;
    }
    if ((rc = grow_buf(sp, queue_msg_header_bound(r->env))) != 0)
        return rc;
    r->id = new_id(sp);
    uint32_t crc = queue_crc32c(0, r->content, r->len);
    long hlen = queue_msg_encode(r->env, r->id, r->len, crc, sp->buf, sp->bufcap);
    if (hlen < 0)
        return (int)hlen;
    char hex[QUEUE_ID_HEX];
    snprintf(r->tmp, sizeof(r->tmp), "%s.msg.%llu", queue_id_format(r->id, hex),
             (unsigned long long)++sp->state_seq);
    struct iovec iov[2] = { { sp->buf, (size_t)hlen }, { (void *)r->content, r->len } };
    r->bytes = (uint64_t)hlen + r->len;
    return write_tmp(sp, r, iov, r->len ? 2 : 1);
}

static int prepare_update(struct queue_spool *sp, struct queue_req *r)
{
    char name[24], hex[QUEUE_ID_HEX];
    struct stat st;
    int rc;
    r->id = r->env->id;
    queue_spool_name(r->id, false, name);
    /* A state file without its message would be an orphan the next recovery deletes;
     * refuse it here, where the caller can still learn of it. */
    if (fstatat(sp->msgfd[queue_spool_dir_of(r->id)], name, &st, 0) != 0)
        return errno == ENOENT ? QUEUE_ERR_NOT_FOUND : -errno;
    if ((rc = grow_buf(sp, queue_state_bound(r->env->nrcpts))) != 0)
        return rc;
    long n = queue_state_encode(r->env, ++sp->state_seq, sp->buf, sp->bufcap);
    if (n < 0)
        return (int)n;
    snprintf(r->tmp, sizeof(r->tmp), "%s.st.%llu", queue_id_format(r->id, hex),
             (unsigned long long)sp->state_seq);
    struct iovec iov[1] = { { sp->buf, (size_t)n } };
    return write_tmp(sp, r, iov, 1);
}

/* Step 2: the round's data on disk. */
static void sync_round(struct queue_spool *sp, struct queue_req *list)
{
    struct queue_req *r;
    if (sp->use_syncfs) {
        bool any = false;
        for (r = list; r; r = r->next)
            any |= r->fd >= 0;
        if (any && syncfs(sp->dirfd) != 0) {
            int err = errno;
            for (r = list; r; r = r->next)
                if (r->fd >= 0)
                    r->res = io_error(sp, r, "syncfs", err);
        }
    } else {
        unsigned n = 0;
        for (r = list; r; r = r->next)
            if (r->fd >= 0) {
                sync_file_range(r->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
                sp->sync_fds[n++] = r->fd;
            }
        queue_sync_fds(sp->sync_ring, sp->sync_fds, n, true, sp->sync_errs);
        n = 0;
        for (r = list; r; r = r->next)
            if (r->fd >= 0 && sp->sync_errs[n++] != 0)
                r->res = io_error(sp, r, "fdatasync", sp->sync_errs[n - 1]);
    }
    for (r = list; r; r = r->next) {
        if (r->fd < 0)
            continue;
        close(r->fd);
        r->fd = -1;
        if (r->res != 0)
            unlinkat(sp->tmpfd, r->tmp, 0);
    }
}

/* Step 3 for one request. Returns true if it must be retried (an id collision). */
static bool publish(struct queue_spool *sp, struct queue_req *r, uint8_t *touched)
{
    char name[24], stname[24];
    unsigned d = queue_spool_dir_of(r->id);
    int dfd = sp->msgfd[d];
    queue_spool_name(r->id, false, name);
    queue_spool_name(r->id, true, stname);
    switch (r->kind) {
    case QUEUE_REQ_ENQUEUE:
        if (renameat2(sp->tmpfd, r->tmp, dfd, name, RENAME_NOREPLACE) != 0) {
            int err = errno;
            unlinkat(sp->tmpfd, r->tmp, 0);
            if (err == EEXIST)
                return true;
            r->res = io_error(sp, r, "rename", err);
            return false;
        }
        break;
    case QUEUE_REQ_UPDATE:
        /* Exchanged rather than renamed over: the old state file's inode is kept (as a
         * pool file, in tmp/) instead of freed. On this project's ext4 every freed
         * inode makes the next file creation slower, and a queue of deferred messages
         * updates states all the time. The exchange is as atomic as the rename. */
        if (renameat2(sp->tmpfd, r->tmp, dfd, stname, RENAME_EXCHANGE) == 0) {
            queue_spool_pool_keep(sp, r->tmp);
            break;
        }
        /* ENOENT: no state file yet (the first update); EINVAL: a filesystem without
         * exchange. Either way a rename does it. */
        if (renameat(sp->tmpfd, r->tmp, dfd, stname) != 0) {
            r->res = io_error(sp, r, "rename", errno);
            unlinkat(sp->tmpfd, r->tmp, 0);
            return false;
        }
        break;
    case QUEUE_REQ_REMOVE: {
        /* The message file goes first: a crash in between leaves an orphan state
         * file, which recovery deletes; the other order could resurrect a message
         * with its recipients PENDING again. */
        struct stat st;
        int rc;
        r->bytes = fstatat(dfd, name, &st, 0) == 0 ? (uint64_t)st.st_size : 0;
        if ((rc = queue_spool_pool_recycle(sp, dfd, name, r->bytes)) != 0)
            r->res = rc == -ENOENT ? QUEUE_ERR_NOT_FOUND : io_error(sp, r, "unlink", -rc);
        /* Most finished messages never had a state update: one failed fstatat then. */
        if (fstatat(dfd, stname, &st, 0) == 0 &&
            (rc = queue_spool_pool_recycle(sp, dfd, stname, (uint64_t)st.st_size)) != 0 &&
            rc != -ENOENT && r->res == 0)
            r->res = io_error(sp, r, "unlink", -rc);
        break;
    }
    }
    touched[d] = 1;
    return false;
}

static void commit_round(struct queue_spool *sp, struct queue_req *list)
{
    uint8_t touched[QUEUE_SPOOL_DIRS] = { 0 };
    int dir_err[QUEUE_SPOOL_DIRS];
    struct queue_req *r, *next, *retry = NULL, **retry_tail = &retry;

    for (r = list; r; r = r->next) {
        r->fd = -1;
        r->res = r->kind == QUEUE_REQ_ENQUEUE  ? prepare_enqueue(sp, r)
                 : r->kind == QUEUE_REQ_UPDATE ? prepare_update(sp, r)
                                               : 0;
    }
    sync_round(sp, list);
    for (r = list; r; r = r->next)
        if (r->res == 0 && publish(sp, r, touched))
            r->res = 1; /* marker: retry */
    unsigned ndirs = 0;
    for (unsigned d = 0; d < QUEUE_SPOOL_DIRS; d++)
        if (touched[d])
            sp->sync_fds[ndirs++] = sp->msgfd[d];
    queue_sync_fds(sp->sync_ring, sp->sync_fds, ndirs, false, sp->sync_errs);
    for (unsigned d = 0, i = 0; d < QUEUE_SPOOL_DIRS; d++)
        dir_err[d] = touched[d] ? sp->sync_errs[i++] : 0;
    queue_stat_add(&sp->st.commits, 1);

    for (r = list; r; r = next) {
        next = r->next;
        if (r->res == 1) {
            r->next = NULL;
            *retry_tail = r;
            retry_tail = &r->next;
            continue;
        }
        int err = r->res == 0 ? dir_err[queue_spool_dir_of(r->id)] : 0;
        if (err != 0) {
            /* Not durable: a new message is taken back (best effort) so that a
             * failure really means nothing changed; an update or removal may or may
             * not survive a crash, and the caller retries it. */
            r->res = io_error(sp, r, "fsync directory", err);
            if (r->kind == QUEUE_REQ_ENQUEUE) {
                char name[24];
                queue_spool_name(r->id, false, name);
                unlinkat(sp->msgfd[queue_spool_dir_of(r->id)], name, 0);
            }
        }
        if (r->res == 0) {
            if (r->kind == QUEUE_REQ_ENQUEUE) {
                queue_stat_add(&sp->st.enqueued, 1);
                queue_stat_add(&sp->st.spool_bytes, r->bytes);
            } else if (r->kind == QUEUE_REQ_UPDATE) {
                queue_stat_add(&sp->st.updated, 1);
            } else {
                queue_stat_add(&sp->st.removed, 1);
                __atomic_fetch_sub(&sp->st.spool_bytes, r->bytes, __ATOMIC_RELAXED);
            }
        }
        queue_port_complete(r);
    }
    if (retry != NULL) {
        pthread_mutex_lock(&sp->mu);
        *retry_tail = sp->head;
        if (sp->head == NULL)
            sp->tail = retry_tail;
        sp->head = retry;
        pthread_mutex_unlock(&sp->mu);
    }
}

int queue_spool_submit(struct queue_spool *sp, struct queue_req *req)
{
    req->next = NULL;
    pthread_mutex_lock(&sp->mu);
    if (sp->closing) {
        pthread_mutex_unlock(&sp->mu);
        return QUEUE_ERR_CLOSING;
    }
    *sp->tail = req;
    sp->tail = &req->next;
    pthread_cond_signal(&sp->cv);
    pthread_mutex_unlock(&sp->mu);
    return 0;
}

void *queue_spool_committer(void *arg)
{
    struct queue_spool *sp = arg;
    unsigned max = sp->no_group_commit ? 1 : sp->batch_max;
    /* Named so that top, perf and the benchmarks can tell the spool's CPU apart. */
    pthread_setname_np(pthread_self(), "floormta-spool");
    int rc = queue_sync_ring_new(&sp->sync_ring);
    if (rc != 0)
        queue_spool_logf(sp, "spool: no io_uring for the fsyncs (%s): syncing one file at a time",
                         strerror(-rc));
    for (;;) {
        pthread_mutex_lock(&sp->mu);
        while (sp->head == NULL && !sp->closing)
            pthread_cond_wait(&sp->cv, &sp->mu);
        if (sp->head == NULL) { /* closing, and everything submitted is done */
            pthread_mutex_unlock(&sp->mu);
            queue_sync_ring_free(sp->sync_ring);
            sp->sync_ring = NULL;
            return NULL;
        }
        struct queue_req *list = sp->head, *last = list;
        uint64_t bytes = last->len;
        for (unsigned n = 1; n < max && last->next && bytes + last->next->len <= ROUND_BYTES; n++) {
            last = last->next;
            bytes += last->len;
        }
        sp->head = last->next;
        if (sp->head == NULL)
            sp->tail = &sp->head;
        last->next = NULL;
        pthread_mutex_unlock(&sp->mu);
        commit_round(sp, list);
    }
}
