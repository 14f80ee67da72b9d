/*
 * engine/loop.c — the io_uring reactor: ring set-up and teardown, the run loop, the
 * one completion dispatcher, and the deferred release of closed handles.
 *
 * Submission (handles, operations, cancellation) lives in loop_ops.c; the slot table
 * and the user_data encoding both files share are in loop_int.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/loop_int.h"

#define LOOP_DEFAULT_ENTRIES 1024u
#define LOOP_DEFAULT_HANDLES 4096u
#define LOOP_MIN_ENTRIES     8u
#define LOOP_FREE_ROUNDS     500 /* eng_loop_free drains for at most this many ... */
#define LOOP_FREE_ROUND_MS   10  /* ... rounds of this long: 5 s */

const char *eng_strerror(int err)
{
    switch (err) {
#define ENG_ERR_CASE(name, code, text) \
    case name: return text;
        ENG_ERRORS(ENG_ERR_CASE)
#undef ENG_ERR_CASE
    default: break;
    }
    /* strerrordesc_np: a static string, NULL for numbers that are no errno. */
    const char *s = err < 0 ? strerrordesc_np(-err) : NULL;
    return s ? s : "unknown error";
}

const char *eng_op_name(enum eng_op_kind op)
{
    static const char *const names[] = {
#define ENG_OP_NAME(name, str) [name] = str,
        ENG_OP_KINDS(ENG_OP_NAME)
#undef ENG_OP_NAME
    };
    if ((unsigned)op >= ENG_OP__COUNT)
        return "unknown";
    return names[op];
}

static uint64_t loop_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Tries the cheapest task-running mode first and steps down only on EINVAL (a kernel
 * that does not know the flag); anything else means io_uring is not usable here. */
static int loop_ring_init(struct io_uring *ring, unsigned entries, unsigned cq_entries)
{
    static const unsigned modes[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        /* A CQ larger than the SQ: every handle may have several ops, linked
         * timeouts and cancels outstanding at once. */
        p.flags = modes[i] | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
        p.cq_entries = cq_entries;
        int ret = io_uring_queue_init_params(entries, ring, &p);
        if (ret == 0)
            return 0;
        if (ret != -EINVAL)
            return ENG_ERR_URING;
    }
    return ENG_ERR_URING;
}

int eng_loop_new(const struct eng_loop_config *cfg, struct eng_loop **out)
{
    unsigned entries = cfg && cfg->entries ? cfg->entries : LOOP_DEFAULT_ENTRIES;
    if (entries < LOOP_MIN_ENTRIES) /* an op and its linked timeout must fit at once */
        entries = LOOP_MIN_ENTRIES;
    unsigned max = cfg && cfg->max_handles ? cfg->max_handles : LOOP_DEFAULT_HANDLES;
    if (max >= LOOP_SLOT_MAX)
        return -EINVAL;

    struct eng_loop *loop = calloc(1, sizeof(*loop));
    if (!loop)
        return -ENOMEM;
    loop->slots = calloc(max, sizeof(*loop->slots));
    if (!loop->slots) {
        free(loop);
        return -ENOMEM;
    }
    unsigned cq = max * 4u > entries * 2u ? max * 4u : entries * 2u;
    int ret = loop_ring_init(&loop->ring, entries, cq);
    if (ret < 0) {
        free(loop->slots);
        free(loop);
        return ret;
    }
    loop->max_handles = max;
    for (uint32_t i = 0; i < max; i++) {
        loop->slots[i].gen = 1;
        loop->slots[i].fd = -1;
        loop->slots[i].next = i + 1 < max ? i + 1 : LOOP_NIL;
    }
    loop->free_head = 0;
    loop->release_head = loop->release_tail = LOOP_NIL;
    loop->now_ms = loop_clock_ms();
    *out = loop;
    return 0;
}

/* Returns a slot to the free list. The generation bump is what turns every id and
 * user_data naming the old occupant stale. */
static void loop_slot_free(struct eng_loop *loop, struct eng_slot *s)
{
    uint32_t gen = s->gen + 1;
    memset(s, 0, sizeof(*s));
    s->gen = gen ? gen : 1;
    s->fd = -1;
    s->state = SLOT_FREE;
    s->next = loop->free_head;
    loop->free_head = (uint32_t)(s - loop->slots);
    loop->stats.handles--;
}

void eng_loop_release_queue(struct eng_loop *loop, struct eng_slot *s)
{
    uint32_t idx = (uint32_t)(s - loop->slots);
    s->next = LOOP_NIL;
    if (loop->release_tail == LOOP_NIL)
        loop->release_head = idx;
    else
        loop->slots[loop->release_tail].next = idx;
    loop->release_tail = idx;
}

/* Drops one in-flight reference; the last one on a closing slot queues its release. */
void eng_loop_slot_put(struct eng_loop *loop, struct eng_slot *s)
{
    if (--s->in_flight == 0 && s->state == SLOT_CLOSING)
        eng_loop_release_queue(loop, s);
}

/* Runs on_release for every queued slot, from the loop's own frame. The slot is freed
 * before the callback so that on_release may open a new handle (even into it). */
static void loop_release_pending(struct eng_loop *loop)
{
    while (loop->release_head != LOOP_NIL) {
        struct eng_slot *s = &loop->slots[loop->release_head];
        loop->release_head = s->next;
        if (loop->release_head == LOOP_NIL)
            loop->release_tail = LOOP_NIL;
        const struct eng_handle_ops *ops = s->ops;
        void *ctx = s->ctx;
        loop_slot_free(loop, s);
        if (ops && ops->on_release)
            ops->on_release(ctx);
    }
}

struct io_uring_sqe *eng_loop_sqe_reserve(struct eng_loop *loop, unsigned need)
{
    /* An op and its linked timeout must be queued together: a link whose tail is
     * left for a later io_uring_submit would be cut in two. */
    if (io_uring_sq_space_left(&loop->ring) < need) {
        io_uring_submit(&loop->ring);
        if (io_uring_sq_space_left(&loop->ring) < need)
            return NULL;
    }
    return io_uring_get_sqe(&loop->ring);
}

/* Cancels that found the submission queue full are retried every iteration. */
static void loop_cancel_retry(struct eng_loop *loop)
{
    if (!loop->cancel_backlog)
        return;
    loop->cancel_backlog = false;
    for (uint32_t i = 0; i < loop->max_handles; i++) {
        struct eng_slot *s = &loop->slots[i];
        uint8_t todo = s->cancel_todo & s->busy;
        s->cancel_todo = 0;
        for (unsigned k = 0; todo && k < ENG_OP__COUNT; k++) {
            if (todo & LOOP_KBIT(k))
                eng_loop_cancel_issue(loop, s, k);
        }
    }
}

/* A multishot accept may hand over a new fd nobody will receive any more. */
static void loop_drop_fd(unsigned kind, int res)
{
    if (kind == ENG_OP_ACCEPT && res >= 0)
        close(res);
}

static int loop_op_result(struct eng_loop *loop, struct eng_slot *s, unsigned kind, int res,
                          bool cancelled)
{
    if (kind == ENG_OP_TIMER)
        return res == -ETIME ? 0 : res;
    bool timed = s->timed & LOOP_KBIT(kind);
    /* An op that io-wq was running is interrupted rather than cancelled. */
    if (res == -EINTR && (cancelled || timed))
        res = -ECANCELED;
    /* A linked timeout cancels its op, so -ECANCELED nobody asked for means the
     * timeout fired. Deciding from our own state works whichever of the two CQEs
     * (op, timeout) arrives first. */
    if (res == -ECANCELED && !cancelled && timed) {
        loop->stats.timeouts++;
        return -ETIMEDOUT;
    }
    return res;
}

static void loop_op_complete(struct eng_loop *loop, struct eng_slot *s, unsigned kind,
                             const struct io_uring_cqe *cqe)
{
    bool more = cqe->flags & IORING_CQE_F_MORE;
    bool cancelled = s->cancel_req & LOOP_KBIT(kind);
    if (!more) {
        /* Cleared before the callback, so it may submit the same kind again. */
        s->busy &= (uint8_t)~LOOP_KBIT(kind);
        s->cancel_req &= (uint8_t)~LOOP_KBIT(kind);
        s->cancel_todo &= (uint8_t)~LOOP_KBIT(kind);
    }
    int res = loop_op_result(loop, s, kind, cqe->res, cancelled);
    if (s->state == SLOT_OPEN) {
        struct eng_completion comp = {
            .loop = loop,
            .handle = loop_handle_id(loop, s),
            .op = (enum eng_op_kind)kind,
            .res = res,
            .more = more,
        };
        loop->stats.completed++;
        s->ops->on_complete(s->ctx, &comp);
    } else {
        loop_drop_fd(kind, res);
    }
    /* Dropped after the callback: a close from inside it still sees this reference,
     * so the release is queued by the last put, never within the callback. */
    if (!more)
        eng_loop_slot_put(loop, s);
}

/* The one dispatcher: decodes user_data, drops stale completions, routes the rest. */
static void loop_dispatch(struct eng_loop *loop, const struct io_uring_cqe *cqe)
{
    uint64_t ud = cqe->user_data;
    if (ud == LIBURING_UDATA_TIMEOUT) /* liburing's own wait timeout on old kernels */
        return;
    unsigned kind = loop_ud_kind(ud);
    uint32_t idx = loop_ud_slot(ud);
    struct eng_slot *s = idx < loop->max_handles ? &loop->slots[idx] : NULL;
    if (!s || s->state == SLOT_FREE || s->gen != loop_ud_gen(ud) || kind > LOOP_KIND_CANCEL) {
        loop->stats.stale++;
        loop_drop_fd(kind, cqe->res);
        return;
    }
    if (kind == LOOP_KIND_LINK_TIMEOUT || kind == LOOP_KIND_CANCEL)
        eng_loop_slot_put(loop, s);
    else
        loop_op_complete(loop, s, kind, cqe);
}

/* Submits and waits. -EINTR is retried; -EBUSY (the CQ overflowed and the kernel
 * holds completions back) returns so that the caller reaps and frees room. */
static int loop_wait(struct eng_loop *loop, int timeout_ms)
{
    struct io_uring *ring = &loop->ring;
    for (;;) {
        int ret;
        if (timeout_ms == 0) {
            ret = io_uring_submit_and_get_events(ring);
        } else if (timeout_ms < 0) {
            ret = io_uring_submit_and_wait(ring, 1);
        } else {
            struct __kernel_timespec ts = {
                .tv_sec = timeout_ms / 1000,
                .tv_nsec = (long long)(timeout_ms % 1000) * 1000000,
            };
            struct io_uring_cqe *cqe;
            ret = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, NULL);
        }
        if (ret == -EINTR)
            continue;
        if (ret >= 0 || ret == -ETIME || ret == -EAGAIN || ret == -EBUSY)
            return 0;
        return ret;
    }
}

static unsigned loop_reap(struct eng_loop *loop)
{
    /* Only what is ready now: callbacks that submit may add completions, and those
     * belong to the next batch, after this batch's releases. */
    unsigned ready = io_uring_cq_ready(&loop->ring);
    unsigned head, n = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&loop->ring, head, cqe)
    {
        if (n == ready)
            break;
        loop_dispatch(loop, cqe);
        n++;
    }
    io_uring_cq_advance(&loop->ring, n);
    return n;
}

int eng_loop_run_once(struct eng_loop *loop, int timeout_ms)
{
    loop_cancel_retry(loop);
    /* Queued releases are work to do now: never block in front of them. */
    if (loop->release_head != LOOP_NIL || io_uring_cq_ready(&loop->ring))
        timeout_ms = 0;
    int ret = loop_wait(loop, timeout_ms);
    if (ret < 0)
        return ret;
    loop->now_ms = loop_clock_ms();
    unsigned n = loop_reap(loop);
    loop_release_pending(loop);
    return (int)n;
}

int eng_loop_run(struct eng_loop *loop)
{
    loop->stop = false;
    while (!loop->stop && loop->stats.handles > 0) {
        int ret = eng_loop_run_once(loop, -1);
        if (ret < 0)
            return ret;
    }
    loop->stop = false;
    return 0;
}

void eng_loop_stop(struct eng_loop *loop)
{
    loop->stop = true;
}

uint64_t eng_loop_now_ms(const struct eng_loop *loop)
{
    return loop->now_ms;
}

void eng_loop_stats(const struct eng_loop *loop, struct eng_loop_stats *out)
{
    *out = loop->stats;
}

/* Last resort when the bounded drain did not finish (an on_release kept opening, or
 * the ring failed): the ring is closed by now, so no completion can follow. */
static void loop_release_all(struct eng_loop *loop)
{
    for (uint32_t i = 0; i < loop->max_handles; i++) {
        struct eng_slot *s = &loop->slots[i];
        if (s->state == SLOT_FREE)
            continue;
        const struct eng_handle_ops *ops = s->ops;
        void *ctx = s->ctx;
        loop_slot_free(loop, s);
        if (ops && ops->on_release)
            ops->on_release(ctx);
    }
}

void eng_loop_free(struct eng_loop *loop)
{
    if (!loop)
        return;
    loop->freeing = true;
    for (uint32_t i = 0; i < loop->max_handles; i++) {
        struct eng_slot *s = &loop->slots[i];
        if (s->state == SLOT_OPEN)
            eng_handle_close(loop, loop_handle_id(loop, s));
    }
    for (int i = 0; i < LOOP_FREE_ROUNDS && loop->stats.handles > 0; i++) {
        if (eng_loop_run_once(loop, LOOP_FREE_ROUND_MS) < 0)
            break;
    }
    io_uring_queue_exit(&loop->ring);
    loop_release_all(loop);
    free(loop->slots);
    free(loop);
}
