/*
 * queue/spool_pool.c — recycled files: a removed message's file is kept in tmp/ as
 * free.<seq> and rewritten for the next message, instead of unlinked and created anew.
 *
 * Why: on ext4 without a journal (this project's VMs) the inode allocator skips every
 * free inode of a block group that was deleted in the last minute (or five, while its
 * inode table block is dirty) and walks past each of them on every allocation
 * (find_inode_bit -> recently_deleted, one buffer-cache lookup per inode). A spool that
 * deletes as fast as it creates fills its group with such inodes, and creating one
 * file cost 0.6-1.1 ms of CPU in the committer (perf: 80% of its samples), more than a
 * whole sync round. A recycled file costs an open; its inode is never freed and never
 * allocated again, and its blocks are overwritten in place, not freed and allocated
 * again (with -o discard, as here, every freeing is a synchronous discard: unlink or
 * O_TRUNC cost 150-250 us). Elsewhere it still saves the allocation and the freeing of
 * an inode and its blocks per message.
 *
 * Safety: a pooled file lives in tmp/, which holds nothing a recovery keeps as a message
 * (it adopts free.* files back into the pool and removes everything else there), and a
 * file is taken out of the pool before it is written, synced and renamed
 * into msg/XX exactly like a new one: whatever a crash leaves of a file being rewritten
 * is in tmp/. The writer cuts a recycled file to exactly its new length before the sync,
 * so no byte of the old content can be read as part of the new file. Moving a removed message's
 * file into tmp/ takes it out of msg/XX in one rename, as unlink did; the removal is durable once
 * msg/XX is fsynced, as before.
 *
 * Bounds: at most POOL_FILES files and POOL_BYTES of their old content (freed only when
 * a file is reused); a removed file that does not fit is unlinked. When the disk runs
 * short the whole pool is unlinked (queue_spool_pool_drain), so recycling never costs a
 * refused message. Committer-only, but for the adoption during recovery, which runs
 * before anything is submitted.
 */
#define _GNU_SOURCE
#include "queue/queue_int.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define POOL_FILES  1024u
#define POOL_BYTES  (32ull << 20)
#define POOL_PREFIX "free."

int queue_spool_pool_init(struct queue_spool *sp)
{
    sp->pool = calloc(POOL_FILES, sizeof(*sp->pool));
    return sp->pool != NULL ? 0 : -ENOMEM;
}

void queue_spool_pool_name(uint64_t seq, char out[QUEUE_POOL_NAME])
{
    snprintf(out, QUEUE_POOL_NAME, POOL_PREFIX "%llu", (unsigned long long)seq);
}

static bool pool_has_room(const struct queue_spool *sp, uint64_t bytes)
{
    return sp->pool != NULL && sp->npool < POOL_FILES && bytes <= POOL_BYTES &&
           sp->pool_bytes <= POOL_BYTES - bytes;
}

static void pool_push(struct queue_spool *sp, uint64_t seq, uint64_t bytes)
{
    sp->pool[sp->npool++] = (struct queue_pooled){ .seq = seq, .bytes = bytes };
    sp->pool_bytes += bytes;
}

int queue_spool_pool_take(struct queue_spool *sp, char name[QUEUE_POOL_NAME], uint64_t *bytes)
{
    while (sp->npool > 0) {
        struct queue_pooled f = sp->pool[--sp->npool];
        sp->pool_bytes -= f.bytes;
        queue_spool_pool_name(f.seq, name);
        /* No O_TRUNC: the new content overwrites the old blocks in place and the writer
         * cuts the file to its new length (queue_spool_pool_take's contract), so the
         * blocks are neither freed nor allocated again (freeing costs a synchronous
         * discard on a filesystem mounted with -o discard). */
        int fd = openat(sp->tmpfd, name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
            *bytes = f.bytes;
            return fd;
        }
        /* Gone (an operator cleaned tmp/) or unusable: forget it, try the next. */
        if (errno != ENOENT)
            unlinkat(sp->tmpfd, name, 0);
    }
    return -1;
}

int queue_spool_pool_recycle(struct queue_spool *sp, int dirfd, const char *name, uint64_t bytes)
{
    if (pool_has_room(sp, bytes)) {
        char free_name[QUEUE_POOL_NAME];
        uint64_t seq = ++sp->state_seq;
        queue_spool_pool_name(seq, free_name);
        /* NOREPLACE: a name still in use (an adopted file of an earlier run with the
         * same sequence) is never overwritten; the file is unlinked instead. */
        if (renameat2(dirfd, name, sp->tmpfd, free_name, RENAME_NOREPLACE) == 0) {
            pool_push(sp, seq, bytes);
            return 0;
        }
        if (errno == ENOENT)
            return -ENOENT;
    }
    return unlinkat(dirfd, name, 0) == 0 ? 0 : -errno;
}

void queue_spool_pool_keep(struct queue_spool *sp, const char *tmpname)
{
    struct stat st;
    if (fstatat(sp->tmpfd, tmpname, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return;
    /* Written into a pool file, the new state left its pool name behind on the old
     * inode: it goes back on the stack as it is, without a rename. */
    uint64_t seq = 0;
    char canon[QUEUE_POOL_NAME];
    if (sscanf(tmpname, POOL_PREFIX "%20" SCNu64, &seq) == 1 && seq > 0) {
        queue_spool_pool_name(seq, canon);
        if (strcmp(canon, tmpname) == 0 && pool_has_room(sp, (uint64_t)st.st_size)) {
            pool_push(sp, seq, (uint64_t)st.st_size);
            return;
        }
    }
    queue_spool_pool_recycle(sp, sp->tmpfd, tmpname, (uint64_t)st.st_size);
}

void queue_spool_pool_drain(struct queue_spool *sp)
{
    char name[QUEUE_POOL_NAME];
    while (sp->npool > 0) {
        queue_spool_pool_name(sp->pool[--sp->npool].seq, name);
        unlinkat(sp->tmpfd, name, 0);
    }
    sp->pool_bytes = 0;
}

bool queue_spool_pool_adopt(struct queue_spool *sp, const char *name)
{
    const char *digits = name + strlen(POOL_PREFIX);
    char canon[QUEUE_POOL_NAME];
    struct stat st;
    if (strncmp(name, POOL_PREFIX, strlen(POOL_PREFIX)) != 0 || *digits < '1' || *digits > '9')
        return false;
    uint64_t seq = 0;
    for (const char *p = digits; *p; p++) {
        if (*p < '0' || *p > '9' || seq > (UINT64_MAX - 9) / 10)
            return false;
        seq = seq * 10 + (uint64_t)(*p - '0');
    }
    queue_spool_pool_name(seq, canon);
    /* Only a regular file under its canonical name, so that take() finds it again, and
     * with no other name: a crash of the machine in the middle of a rename may leave an
     * inode under both its names (fsck counts both links), and a file that is also a
     * message must never be overwritten; removing this name is harmless then. */
    if (strcmp(canon, name) != 0 || fstatat(sp->tmpfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode) || st.st_nlink != 1 || !pool_has_room(sp, (uint64_t)st.st_size))
        return false;
    pool_push(sp, seq, (uint64_t)st.st_size);
    return true;
}
