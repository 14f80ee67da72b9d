/*
 * queue/queue_int.h — the spool's private parts, shared by spool*.c and port.c only:
 * the on-disk format (encoders and strict parsers), CRC32C, the spool and request
 * structures that the committer thread, the recovery and the ports all touch.
 *
 * Layout of a spool directory:
 *   lock             flock(LOCK_EX|LOCK_NB): one engine per spool
 *   msg/XX/<id>      the immutable message file (XX = bits 34..41 of the id in hex: the
 *                    id's milliseconds / 1024, so the messages of one group commit
 *                    share a folder, and a folder's turn comes back every ~4.4 min)
 *   msg/XX/<id>.st   the state file, replaced atomically on every update
 *   tmp/             writes in progress: <id>.msg.<seq>, <id>.st.<seq>, and recycled
 *                    files (free.<seq>: removed files kept for reuse, spool_pool.c)
 *   quarantine/      corrupt files, moved aside for a human
 */
#ifndef FLOORMTA_QUEUE_INT_H
#define FLOORMTA_QUEUE_INT_H

#include "queue/queue.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define QUEUE_SPOOL_DIRS        256
#define QUEUE_SPOOL_HDR_MAX     (4u << 20) /* 1000 recipients fully escaped fit twice */
#define QUEUE_SPOOL_STATE_MAX   (8u << 20)
#define QUEUE_SPOOL_CONTENT_MAX (1ull << 34) /* absolute cap a parser accepts (16 GiB) */
#define QUEUE_SPOOL_FIRST_READ  65536u       /* one pread covers a typical file whole */
#define QUEUE_MSG_LINE1_LEN     33u          /* "floormta-msg 1 header=%010u\n" */

/* ---- checksum and text codec (spool_codec.c) ------------------------------------- */

/* CRC32C (Castagnoli), continuing from crc (0 to start). */
uint32_t queue_crc32c(uint32_t crc, const void *buf, size_t len);
/* The portable table version, and whether queue_crc32c uses the CPU's instruction
 * (tests compare the two). */
uint32_t queue_crc32c_sw(uint32_t crc, const void *buf, size_t len);
bool queue_crc32c_hw_available(void);

/* A bounded output buffer; a write past cap sets overflow instead of writing. */
struct queue_out {
    char *p;
    size_t len, cap;
    bool overflow;
};

void queue_out_str(struct queue_out *o, const char *s);
void queue_out_fmt(struct queue_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* xtext (RFC 3461 style): bytes 33..126 but '+' and '=' as they are, others "+XX";
 * the empty string is "-" (and a lone "-" is "+2D"), so a field is never empty. At
 * most max bytes of s are taken. */
void queue_out_xtext(struct queue_out *o, const char *s, size_t max);

/* A read cursor over a file's bytes, with strict line and field parsing: every
 * function returns 0 or QUEUE_ERR_CORRUPT and never reads past end. */
struct queue_in {
    const char *p, *end;
};

#define QUEUE_FIELDS_MAX 10

/* The next line (without its '\n'), split at single spaces into exactly n non-empty
 * fields. A line holds only printable ASCII. */
struct queue_fields {
    const char *f[QUEUE_FIELDS_MAX];
    size_t len[QUEUE_FIELDS_MAX];
};
int queue_in_line(struct queue_in *in, unsigned n, struct queue_fields *out);
/* A line "key value" whose key must be key. */
int queue_in_keyed(struct queue_in *in, const char *key, const char **val, size_t *len);

int queue_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out);
int queue_parse_i64(const char *s, size_t len, int64_t *out);
int queue_parse_hex32(const char *s, size_t len, uint32_t *out);
/* Decodes xtext into dst (cap bytes including the NUL); a decoded NUL is corrupt. */
int queue_parse_xtext(const char *s, size_t len, char *dst, size_t cap);

/* ---- the file formats (spool_format.c) -------------------------------------------- */

/* The most bytes the header of env can take. */
size_t queue_msg_header_bound(const struct queue_envelope *env);

/* Encodes the message file's header for env under id, content of len bytes with
 * checksum content_crc, into out (cap >= queue_msg_header_bound). Returns the header
 * length, or QUEUE_ERR_TOO_BIG (an address, domain or envid that is not a
 * NUL-terminated string of its field, nrcpts out of range). */
long queue_msg_encode(const struct queue_envelope *env, queue_id_t id, uint64_t len,
                      uint32_t content_crc, char *out, size_t cap);

/* The header length from a file's first bytes (n >= QUEUE_MSG_LINE1_LEN). Returns 0
 * or QUEUE_ERR_CORRUPT. */
int queue_msg_peek(const void *buf, size_t n, size_t *hlen);

/* Decodes a message header of exactly hlen bytes from a file of file_size bytes into a
 * new *env (free with queue_envelope_free; recipients PENDING, as enqueued) and the
 * content's checksum. Returns 0, QUEUE_ERR_CORRUPT, -ENOMEM. */
int queue_msg_decode(const void *hdr, size_t hlen, uint64_t file_size, struct queue_envelope **env,
                     uint32_t *content_crc);

size_t queue_state_bound(unsigned nrcpts);

/* Encodes the state file of env (its id, attempts, next_attempt, delay_warned and
 * every recipient's state, attempts and last result). Returns the length or
 * QUEUE_ERR_TOO_BIG. */
long queue_state_encode(const struct queue_envelope *env, uint64_t seq, char *out, size_t cap);

/* Parses a state file of n bytes and merges it into env (whose id and nrcpts it must
 * match). Returns 0 or QUEUE_ERR_CORRUPT; env is half-merged on error. */
int queue_state_apply(const void *buf, size_t n, struct queue_envelope *env, uint64_t *seq);

/* ---- the spool (spool.c, spool_commit.c, spool_recover.c, port.c) ----------------- */

enum queue_req_kind { QUEUE_REQ_ENQUEUE, QUEUE_REQ_UPDATE, QUEUE_REQ_REMOVE };

/* One request in flight, from queue_port_* to the committer and back. Owned by its
 * port (allocated and recycled on the port's thread); the committer only links it. */
struct queue_req {
    struct queue_req *next;
    struct queue_port *port;
    enum queue_req_kind kind;
    queue_id_t id;
    const struct queue_envelope *env; /* borrowed until done */
    const void *content;              /* borrowed until done */
    size_t len;
    queue_done_fn done;
    void *arg;
    int res;
    /* the committer's, during one round */
    int fd;
    uint64_t seq;
    uint64_t bytes; /* file size written */
    char tmp[48];
};

/* A recycled file, tmp/free.<seq>, with the size of its old content. */
struct queue_pooled {
    uint64_t seq, bytes;
};

#define QUEUE_POOL_NAME 32 /* "free." + 20 digits + NUL, with room */

struct queue_spool {
    int dirfd, lockfd, tmpfd, quarfd, msgdirfd;
    int msgfd[QUEUE_SPOOL_DIRS];
    uint64_t max_message_size, min_free_bytes;
    unsigned batch_max;
    bool no_group_commit;
    bool use_syncfs;                   /* one syncfs per round instead of fdatasync per file */
    struct queue_sync_ring *sync_ring; /* the committer's (spool_sync.c); NULL = serial */
    int *sync_fds, *sync_errs;         /* max(batch_max, QUEUE_SPOOL_DIRS) each */
    void (*log)(void *arg, const char *line);
    void *log_arg;

    pthread_t committer;
    bool started;
    pthread_mutex_t mu; /* guards head/tail/closing */
    pthread_cond_t cv;
    struct queue_req *head, **tail;
    bool closing;

    /* committer-only */
    uint64_t id_seq, state_seq;
    uint64_t free_bytes; /* estimate: statvfs minus what was written since */
    int64_t free_at_ns;  /* when statvfs was asked; 0 = never */
    char *buf;
    size_t bufcap;
    struct queue_pooled *pool; /* recycled files, a stack (spool_pool.c) */
    unsigned npool;
    uint64_t pool_bytes;

    /* counters, written with __atomic */
    struct queue_spool_stats st;
};

/* The committer's fsyncs issued together (spool_sync.c). queue_sync_ring_new returns 0
 * and *out (free with queue_sync_ring_free), or -errno when io_uring is unavailable.
 * queue_sync_fds fsyncs (datasync: fdatasyncs) the n fds, all in flight at once when
 * r is not NULL, and sets errs[i] to 0 or the errno of fds[i]; fds and errs are
 * borrowed for the call. */
struct queue_sync_ring;
int queue_sync_ring_new(struct queue_sync_ring **out);
void queue_sync_ring_free(struct queue_sync_ring *r);
void queue_sync_fds(struct queue_sync_ring *r, const int *fds, unsigned n, bool datasync,
                    int *errs);

/* Logs one line through cfg->log (printf-style). */
void queue_spool_logf(struct queue_spool *sp, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

/* The subfolder index of an id, and its file names ("<16 hex>", "<16 hex>.st").
 * By time, not by the sequence: a batch of new messages then lands in one folder and
 * costs one directory fsync, not one per message, while a million messages queued
 * over hours still spread over all 256 folders. */
static inline unsigned queue_spool_dir_of(queue_id_t id)
{
    return (unsigned)((id >> 34) & 0xff);
}
void queue_spool_name(queue_id_t id, bool state, char out[24]);

/* Moves dirfd/name to quarantine/ (logging why). Counted. Returns 0 or -errno (then
 * the file is left where it is). */
int queue_spool_quarantine(struct queue_spool *sp, int dirfd, const char *dirname, const char *name,
                           const char *why);

/* Reads a whole small file (at most max bytes) at fd into a new buffer. Returns 0,
 * QUEUE_ERR_CORRUPT (over max), -errno. */
int queue_spool_slurp(int fd, size_t max, char **out, size_t *len);

/* ---- recycled files (spool_pool.c) ------------------------------------------------ */

/* Allocates the pool (at open). Returns 0 or -ENOMEM. */
int queue_spool_pool_init(struct queue_spool *sp);

/* "free.<seq>". */
void queue_spool_pool_name(uint64_t seq, char out[QUEUE_POOL_NAME]);

/* Takes a recycled file: opens tmp/<name> write-only, not truncated: *bytes gets the
 * size of its old content, which the caller overwrites from offset 0 and must cut to
 * the new length (ftruncate) before the file is synced. Returns the fd (the caller's)
 * and its name in name, or -1 if the pool is empty. */
int queue_spool_pool_take(struct queue_spool *sp, char name[QUEUE_POOL_NAME], uint64_t *bytes);

/* Takes dirfd/name (a removed file of bytes bytes) out of its folder: renamed into the
 * pool if it has room, else unlinked. Returns 0, -ENOENT (no such file), -errno. */
int queue_spool_pool_recycle(struct queue_spool *sp, int dirfd, const char *name, uint64_t bytes);

/* A file in tmp/ that the committer no longer needs (the old state a RENAME_EXCHANGE
 * left under a temporary name): into the pool under a pool name, or unlinked when the
 * pool is full. Committer only. */
void queue_spool_pool_keep(struct queue_spool *sp, const char *tmpname);

/* Unlinks every pooled file (the disk runs short). */
void queue_spool_pool_drain(struct queue_spool *sp);

/* Recovery: keeps tmp/<name> in the pool if it is a recycled file and there is room.
 * Returns true if kept (else the caller removes it). */
bool queue_spool_pool_adopt(struct queue_spool *sp, const char *name);

/* The committer thread (spool_commit.c). */
void *queue_spool_committer(void *arg);

/* Hands a request to the committer. Returns 0 or QUEUE_ERR_CLOSING. */
int queue_spool_submit(struct queue_spool *sp, struct queue_req *req);

/* Delivers a finished request back to its port (committer thread). */
void queue_port_complete(struct queue_req *req);

static inline void queue_stat_add(uint64_t *counter, uint64_t n)
{
    __atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
}

#endif /* FLOORMTA_QUEUE_INT_H */
