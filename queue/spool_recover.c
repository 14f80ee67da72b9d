/*
 * queue/spool_recover.c — queue_spool_recover: the scan at start-up.
 *
 * Built for a million messages: one readdir per msg/XX folder (names sorted, so each
 * "<id>" is followed by its "<id>.st"), then per message one open and one 64 KiB
 * pread (the whole file for a typical message: header, size and header checksum are
 * checked, and the content checksum too when the file fitted in that read; bigger
 * files get their content checked by queue_spool_read), and one open and read of the
 * state file; helper threads read ahead for a cold page cache (see prefetch below).
 * No fstat unless a file is bigger than the read, no content read for big messages, no fsync:
 * every action here (quarantine, removal of finished messages and leftovers) is
 * idempotent, so a crash during recovery only means the next one does it again.
 */
#define _GNU_SOURCE
#include "queue/queue_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct rbuf {
    char *p;
    size_t cap;
};

struct scan {
    struct queue_spool *sp;
    queue_recover_fn fn;
    void *arg;
    struct queue_recover_stats *s;
    struct rbuf msg, st;
    uint64_t kept_bytes; /* file bytes of the messages still queued */
};

static int rbuf_grow(struct rbuf *b, size_t need)
{
    if (need <= b->cap)
        return 0;
    char *p = realloc(b->p, need);
    if (p == NULL)
        return -ENOMEM;
    b->p = p;
    b->cap = need;
    return 0;
}

/* Reads up to want bytes from off; *got < want only at end of file. */
static int read_upto(int fd, char *buf, size_t want, off_t off, size_t *got)
{
    size_t n = 0;
    while (n < want) {
        ssize_t r = pread(fd, buf + n, want - n, off + (off_t)n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            break;
        n += (size_t)r;
    }
    *got = n;
    return 0;
}

static int open_ro(int dirfd, const char *name)
{
    /* O_NOATIME: a million atime updates would turn the scan into a write storm. */
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOATIME);
    if (fd < 0 && errno == EPERM)
        fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    return fd;
}

/* Reads a whole state file (bounded) into sc->st. */
static int read_state_file(struct scan *sc, int dirfd, const char *name, size_t *len)
{
    int fd = open_ro(dirfd, name);
    if (fd < 0)
        return -errno;
    int rc = rbuf_grow(&sc->st, QUEUE_SPOOL_FIRST_READ);
    size_t got = 0, total = 0;
    while (rc == 0) {
        rc = read_upto(fd, sc->st.p + total, sc->st.cap - total, (off_t)total, &got);
        total += got;
        if (rc != 0 || total < sc->st.cap)
            break;
        if (sc->st.cap > QUEUE_SPOOL_STATE_MAX)
            rc = QUEUE_ERR_CORRUPT;
        else
            rc = rbuf_grow(&sc->st, sc->st.cap * 2);
    }
    close(fd);
    *len = total;
    return rc;
}

/* Checks the message file; *env gets its envelope. Returns 0, QUEUE_ERR_CORRUPT with
 * *why, -errno, -ENOMEM. */
static int check_message(struct scan *sc, int dirfd, const char *name, queue_id_t id,
                         struct queue_envelope **env, uint64_t *fsize, const char **why)
{
    int fd = open_ro(dirfd, name);
    if (fd < 0)
        return -errno;
    struct stat st = { 0 };
    size_t got = 0, hlen = 0, more = 0;
    uint32_t want;
    /* A read that stops short of the buffer has found the file's size: no fstat. */
    int rc = read_upto(fd, sc->msg.p, sc->msg.cap, 0, &got);
    if (rc == 0 && got < sc->msg.cap)
        st.st_size = (off_t)got;
    else if (rc == 0 && fstat(fd, &st) != 0)
        rc = -errno;
    if (rc == 0 && st.st_size == 0) {
        *why = "empty file";
        rc = QUEUE_ERR_CORRUPT;
    }
    if (rc == 0 && queue_msg_peek(sc->msg.p, got, &hlen) != 0) {
        *why = "bad first line";
        rc = QUEUE_ERR_CORRUPT;
    }
    if (rc == 0 && hlen > (uint64_t)st.st_size) {
        *why = "truncated header";
        rc = QUEUE_ERR_CORRUPT;
    }
    if (rc == 0 && hlen > got && (rc = rbuf_grow(&sc->msg, hlen)) == 0 &&
        (rc = read_upto(fd, sc->msg.p + got, hlen - got, (off_t)got, &more)) == 0) {
        if (more != hlen - got) {
            *why = "truncated header";
            rc = QUEUE_ERR_CORRUPT;
        }
        got = hlen;
    }
    close(fd);
    if (rc != 0)
        return rc;
    *why = "header corrupt or size mismatch";
    if ((rc = queue_msg_decode(sc->msg.p, hlen, (uint64_t)st.st_size, env, &want)) != 0)
        return rc;
    if ((*env)->id != id) {
        *why = "id does not match the file name";
        rc = QUEUE_ERR_CORRUPT;
    } else if (got == (uint64_t)st.st_size &&
               queue_crc32c(0, sc->msg.p + hlen, got - hlen) != want) {
        *why = "content checksum";
        rc = QUEUE_ERR_CORRUPT;
    }
    if (rc != 0) {
        queue_envelope_free(*env);
        *env = NULL;
    }
    *fsize = (uint64_t)st.st_size;
    return rc;
}

static int recover_one(struct scan *sc, unsigned d, const char *dirname, const char *name,
                       queue_id_t id, bool has_st)
{
    struct queue_spool *sp = sc->sp;
    int dfd = sp->msgfd[d];
    char stname[24];
    struct queue_envelope *env = NULL;
    uint64_t fsize = 0, seq;
    const char *why = "";
    queue_spool_name(id, true, stname);
    int rc = check_message(sc, dfd, name, id, &env, &fsize, &why);
    if (rc == 0 && has_st) {
        size_t n = 0;
        why = "state file corrupt";
        if ((rc = read_state_file(sc, dfd, stname, &n)) == 0)
            rc = queue_state_apply(sc->st.p, n, env, &seq);
    }
    if (rc == QUEUE_ERR_CORRUPT) {
        /* Both files: a lost state must never turn into a second delivery. */
        queue_envelope_free(env);
        if (has_st && queue_spool_quarantine(sp, dfd, dirname, stname, why) == 0)
            sc->s->quarantined++;
        if (queue_spool_quarantine(sp, dfd, dirname, name, why) == 0)
            sc->s->quarantined++;
        return 0;
    }
    if (rc == -ENOMEM)
        return rc;
    if (rc != 0) {
        /* An unreadable file (EIO) is left where it is for the next start. */
        queue_spool_logf(sp, "spool: cannot read %s/%s: %s", dirname, name, strerror(-rc));
        queue_envelope_free(env);
        return 0;
    }
    if (queue_envelope_finished(env)) {
        queue_envelope_free(env);
        if (unlinkat(dfd, name, 0) == 0 && (unlinkat(dfd, stname, 0) == 0 || errno == ENOENT))
            sc->s->finished++;
        return 0;
    }
    sc->s->messages++;
    sc->s->bytes += env->content_size;
    sc->kept_bytes += fsize;
    rc = sc->fn ? sc->fn(sc->arg, env) : 0;
    queue_envelope_free(env);
    return rc < 0 ? rc : 0;
}

enum name_kind { NAME_MSG, NAME_STATE, NAME_OTHER };

static enum name_kind classify(const char *name, queue_id_t *id)
{
    char hex[QUEUE_ID_HEX];
    size_t n = strlen(name);
    if ((n != 16 && !(n == 19 && strcmp(name + 16, ".st") == 0)))
        return NAME_OTHER;
    memcpy(hex, name, 16);
    hex[16] = '\0';
    for (int i = 0; i < 16; i++)
        if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
            return NAME_OTHER;
    if (queue_id_parse(hex, id) != 0)
        return NAME_OTHER;
    return n == 16 ? NAME_MSG : NAME_STATE;
}

/* Room for every name the spool makes: "<id>", "<id>.st", tmp/'s "<id>.msg.<seq>". */
struct name {
    char s[48];
};

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct name *)a)->s, ((const struct name *)b)->s);
}

/* Collects the names of one folder (readdir is done before anything is renamed). */
static int list_dir(int dirfd, struct name **out, size_t *count, struct name **odd, size_t *nodd)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (dir == NULL) {
        int rc = -errno;
        if (fd >= 0)
            close(fd);
        return rc;
    }
    size_t n = 0, cap = 0, no = 0, ocap = 0;
    struct name *v = NULL, *o = NULL;
    struct dirent *de;
    int rc = 0;
    errno = 0;
    while ((de = readdir(dir)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        bool fits = strlen(de->d_name) < sizeof(v->s);
        struct name **vec = fits ? &v : &o;
        size_t *len = fits ? &n : &no, *vcap = fits ? &cap : &ocap;
        if (*len == *vcap) {
            size_t ncap = *vcap ? *vcap * 2 : 64;
            struct name *g = realloc(*vec, ncap * sizeof(**vec));
            if (g == NULL) {
                rc = -ENOMEM;
                break;
            }
            *vec = g;
            *vcap = ncap;
        }
        /* A name too long for the table is an odd file: only its prefix is kept, for
         * the log line; it is never renamed or removed by a truncated name. */
        struct name *slot = &(*vec)[(*len)++];
        size_t l = strnlen(de->d_name, sizeof(slot->s) - 1);
        memcpy(slot->s, de->d_name, l);
        slot->s[l] = '\0';
    }
    if (rc == 0 && errno != 0)
        rc = -errno;
    closedir(dir);
    if (rc != 0) {
        free(v);
        free(o);
        return rc;
    }
    if (n > 1)
        qsort(v, n, sizeof(*v), cmp_name);
    *out = v;
    *count = n;
    *odd = o;
    *nodd = no;
    return 0;
}

static int scan_dir(struct scan *sc, unsigned d)
{
    struct queue_spool *sp = sc->sp;
    char dirname[8];
    struct name *v, *odd;
    size_t n, nodd;
    snprintf(dirname, sizeof(dirname), "msg/%02x", d);
    int rc = list_dir(sp->msgfd[d], &v, &n, &odd, &nodd);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        queue_id_t id, id2;
        enum name_kind k = classify(v[i].s, &id);
        if (k == NAME_MSG) {
            bool has_st = i + 1 < n && classify(v[i + 1].s, &id2) == NAME_STATE && id2 == id;
            if (queue_spool_dir_of(id) != d) {
                if (has_st && queue_spool_quarantine(sp, sp->msgfd[d], dirname, v[i + 1].s,
                                                     "wrong folder") == 0)
                    sc->s->quarantined++;
                if (queue_spool_quarantine(sp, sp->msgfd[d], dirname, v[i].s, "wrong folder") == 0)
                    sc->s->quarantined++;
                i += has_st;
                continue;
            }
            rc = recover_one(sc, d, dirname, v[i].s, id, has_st);
            i += has_st;
        } else if (k == NAME_STATE) {
            /* A removal that lost the race with a crash: its message is gone. */
            if (unlinkat(sp->msgfd[d], v[i].s, 0) == 0) {
                sc->s->incomplete++;
                queue_spool_logf(sp, "spool: removed orphan state file %s/%s", dirname, v[i].s);
            }
        } else if (queue_spool_quarantine(sp, sp->msgfd[d], dirname, v[i].s, "unexpected name") ==
                   0) {
            sc->s->quarantined++;
        }
    }
    for (size_t i = 0; i < nodd; i++)
        queue_spool_logf(sp, "spool: unexpected file in %s with a long name (%s...), left there",
                         dirname, odd[i].s);
    free(v);
    free(odd);
    return rc;
}

/* tmp/ holds writes that were never acknowledged, which go, and recycled files, which
 * go back to the pool (spool_pool.c; as many as it takes, the others go too): removing
 * them would only make the next files cost a new inode each. A recycled file that was
 * being rewritten when the process died is just as free: nothing points at it. */
static int clean_tmp(struct scan *sc)
{
    struct name *v, *odd;
    size_t n, nodd, removed = 0;
    int rc = list_dir(sc->sp->tmpfd, &v, &n, &odd, &nodd);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (queue_spool_pool_adopt(sc->sp, v[i].s))
            continue;
        if (unlinkat(sc->sp->tmpfd, v[i].s, 0) == 0) {
            sc->s->incomplete++;
            removed++;
        }
    }
    if (removed > 0)
        queue_spool_logf(sc->sp, "spool: removed %zu unfinished writes from tmp/", removed);
    for (size_t i = 0; i < nodd; i++)
        queue_spool_logf(sc->sp, "spool: unexpected file in tmp/ (%s...), left there", odd[i].s);
    free(v);
    free(odd);
    return 0;
}

/* Read-ahead for a cold start. After a reboot nothing is in the page cache and each
 * message costs two synchronous disk reads (inode, data) one after the other: the scan
 * would wait on the disk a million times in a row. Helper threads walk the folders just
 * ahead of the scan and touch each file (open, read its first block, close), so that
 * many reads are in flight at once and the scan finds them cached. They only read; the
 * scan alone decides, renames and removes, and calls fn on the caller's thread. */
#define PREFETCH_THREADS 8
#define PREFETCH_AHEAD   12 /* folders ahead of the scan, bounding the cache it fills */

struct prefetch {
    struct queue_spool *sp;
    unsigned next;    /* the next folder to take; __atomic */
    unsigned scan_at; /* the folder the scan is in; __atomic */
    bool stop;        /* __atomic */
};

static void prefetch_folder(int dirfd)
{
    struct name *v, *odd;
    size_t n, nodd;
    char block[4096];
    if (list_dir(dirfd, &v, &n, &odd, &nodd) != 0)
        return;
    for (size_t i = 0; i < n; i++) {
        int fd = open_ro(dirfd, v[i].s);
        if (fd >= 0) {
            (void)!pread(fd, block, sizeof(block), 0);
            close(fd);
        }
    }
    free(v);
    free(odd);
}

static void *prefetch_main(void *arg)
{
    struct prefetch *pf = arg;
    for (;;) {
        unsigned d = __atomic_fetch_add(&pf->next, 1, __ATOMIC_RELAXED);
        if (d >= QUEUE_SPOOL_DIRS)
            return NULL;
        while (d > __atomic_load_n(&pf->scan_at, __ATOMIC_RELAXED) + PREFETCH_AHEAD &&
               !__atomic_load_n(&pf->stop, __ATOMIC_RELAXED))
            usleep(1000);
        if (__atomic_load_n(&pf->stop, __ATOMIC_RELAXED))
            return NULL;
        prefetch_folder(pf->sp->msgfd[d]);
    }
}

int queue_spool_recover(struct queue_spool *sp, queue_recover_fn fn, void *arg,
                        struct queue_recover_stats *stats)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct queue_recover_stats s = { 0 };
    struct scan sc = { .sp = sp, .fn = fn, .arg = arg, .s = &s };
    int rc = rbuf_grow(&sc.msg, QUEUE_SPOOL_FIRST_READ);
    if (rc == 0)
        rc = clean_tmp(&sc);
    /* The scan starts on folder 0 itself; the helpers take folders 1 and up. */
    struct prefetch pf = { .sp = sp, .next = 1 };
    pthread_t helpers[PREFETCH_THREADS];
    unsigned nhelpers = 0;
    while (rc == 0 && nhelpers < PREFETCH_THREADS &&
           pthread_create(&helpers[nhelpers], NULL, prefetch_main, &pf) == 0)
        nhelpers++; /* fewer helpers (or none) only make a slower scan */
    for (unsigned d = 0; d < QUEUE_SPOOL_DIRS && rc == 0; d++) {
        __atomic_store_n(&pf.scan_at, d, __ATOMIC_RELAXED);
        rc = scan_dir(&sc, d);
    }
    __atomic_store_n(&pf.stop, true, __ATOMIC_RELAXED);
    for (unsigned i = 0; i < nhelpers; i++)
        pthread_join(helpers[i], NULL);
    free(sc.msg.p);
    free(sc.st.p);
    __atomic_store_n(&sp->st.spool_bytes, sc.kept_bytes, __ATOMIC_RELAXED);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    s.seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (stats)
        *stats = s;
    return rc;
}
