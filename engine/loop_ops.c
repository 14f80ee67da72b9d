/*
 * engine/loop_ops.c — the submission side of the reactor: opening and closing
 * handles, queuing each operation together with its linked timeout, and
 * cancellation by kind.
 *
 * Completions come back through the dispatcher in loop.c; the slot table and the
 * user_data encoding are in loop_int.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "engine/loop_int.h"

/* The slot an id names, open or closing; NULL when the id is stale. */
static struct eng_slot *ops_slot(const struct eng_loop *loop, eng_handle_t h)
{
    uint32_t idx = (uint32_t)h;
    if (idx >= loop->max_handles)
        return NULL;
    struct eng_slot *s = &loop->slots[idx];
    if (s->state == SLOT_FREE || s->gen != (uint32_t)(h >> 32))
        return NULL;
    return s;
}

/* The slot an id names if it is open (not closing). */
static struct eng_slot *ops_live(const struct eng_loop *loop, eng_handle_t h)
{
    struct eng_slot *s = ops_slot(loop, h);
    return s && s->state == SLOT_OPEN ? s : NULL;
}

int eng_handle_open(struct eng_loop *loop, int fd, const struct eng_handle_ops *ops, void *ctx,
                    eng_handle_t *out)
{
    if (!ops || !ops->on_complete || !out)
        return -EINVAL;
    /* While eng_loop_free drains, a new handle would keep the drain from ending. */
    if (loop->freeing || loop->free_head == LOOP_NIL)
        return ENG_ERR_FULL;
    struct eng_slot *s = &loop->slots[loop->free_head];
    loop->free_head = s->next;
    s->next = LOOP_NIL;
    s->state = SLOT_OPEN;
    s->fd = fd;
    s->ops = ops;
    s->ctx = ctx;
    loop->stats.handles++;
    *out = loop_handle_id(loop, s);
    return 0;
}

bool eng_handle_alive(const struct eng_loop *loop, eng_handle_t h)
{
    return ops_live(loop, h) != NULL;
}

bool eng_handle_busy(const struct eng_loop *loop, eng_handle_t h, enum eng_op_kind op)
{
    const struct eng_slot *s = ops_slot(loop, h);
    return s && (unsigned)op < ENG_OP__COUNT && (s->busy & LOOP_KBIT(op));
}

void eng_loop_cancel_issue(struct eng_loop *loop, struct eng_slot *s, unsigned kind)
{
    s->cancel_req |= LOOP_KBIT(kind);
    struct io_uring_sqe *sqe = eng_loop_sqe_reserve(loop, 1);
    if (!sqe) {
        /* Close cannot fail, so a full SQ defers the cancel to the next iteration. */
        s->cancel_todo |= LOOP_KBIT(kind);
        loop->cancel_backlog = true;
        return;
    }
    s->cancel_todo &= (uint8_t)~LOOP_KBIT(kind);
    io_uring_prep_cancel64(sqe, loop_ud(kind, loop, s), 0);
    io_uring_sqe_set_data64(sqe, loop_ud(LOOP_KIND_CANCEL, loop, s));
    s->in_flight++;
}

void eng_handle_close(struct eng_loop *loop, eng_handle_t h)
{
    struct eng_slot *s = ops_live(loop, h);
    if (!s)
        return;
    s->state = SLOT_CLOSING;
    uint8_t todo = s->busy & (uint8_t)~s->cancel_req;
    for (unsigned k = 0; todo && k < ENG_OP__COUNT; k++) {
        if (todo & LOOP_KBIT(k))
            eng_loop_cancel_issue(loop, s, k);
    }
    /* Never released from here: the loop runs on_release after its current batch. */
    if (s->in_flight == 0)
        eng_loop_release_queue(loop, s);
}

int eng_op_cancel(struct eng_loop *loop, eng_handle_t h, enum eng_op_kind op)
{
    if ((unsigned)op >= ENG_OP__COUNT)
        return -EINVAL;
    struct eng_slot *s = ops_live(loop, h);
    if (!s)
        return ENG_ERR_STALE;
    if (!(s->busy & LOOP_KBIT(op)))
        return -ENOENT;
    if (s->cancel_req & LOOP_KBIT(op))
        return 0;
    eng_loop_cancel_issue(loop, s, op);
    /* Submitted now rather than at the next iteration: the op may already sit
     * completed in the batch being dispatched, and if its owner re-armed the same kind
     * from that completion, a cancel still waiting in the SQ would hit the new op
     * (user_data names the kind, not the instance). */
    io_uring_submit(&loop->ring);
    return 0;
}

/* Checks the handle and the kind and reserves the op's SQE, plus one for its linked
 * timeout. Nothing may fail after this: a taken SQE will be submitted. */
static int ops_begin(struct eng_loop *loop, eng_handle_t h, unsigned kind, unsigned timeout_ms,
                     struct eng_slot **sp, struct io_uring_sqe **sqep)
{
    struct eng_slot *s = ops_live(loop, h);
    if (!s)
        return ENG_ERR_STALE;
    if (s->busy & LOOP_KBIT(kind))
        return -EBUSY;
    struct io_uring_sqe *sqe = eng_loop_sqe_reserve(loop, timeout_ms ? 2 : 1);
    if (!sqe)
        return -EAGAIN;
    *sp = s;
    *sqep = sqe;
    return 0;
}

static void ops_timespec(struct __kernel_timespec *ts, unsigned ms)
{
    ts->tv_sec = ms / 1000u;
    ts->tv_nsec = (long long)(ms % 1000u) * 1000000;
}

/* Tags the prepared SQE, takes its reference, and links the timeout behind it. */
static int ops_commit(struct eng_loop *loop, struct eng_slot *s, unsigned kind,
                      struct io_uring_sqe *sqe, unsigned timeout_ms)
{
    io_uring_sqe_set_data64(sqe, loop_ud(kind, loop, s));
    s->busy |= LOOP_KBIT(kind);
    s->timed &= (uint8_t)~LOOP_KBIT(kind);
    s->in_flight++;
    loop->stats.submitted++;
    if (timeout_ms == 0)
        return 0;
    sqe->flags |= IOSQE_IO_LINK;
    ops_timespec(&s->ts[kind], timeout_ms);
    struct io_uring_sqe *lt = io_uring_get_sqe(&loop->ring); /* reserved by ops_begin */
    io_uring_prep_link_timeout(lt, &s->ts[kind], 0);
    io_uring_sqe_set_data64(lt, loop_ud(LOOP_KIND_LINK_TIMEOUT, loop, s));
    s->timed |= LOOP_KBIT(kind);
    s->in_flight++;
    return 0;
}

int eng_op_connect(struct eng_loop *loop, eng_handle_t h, const struct sockaddr *addr,
                   socklen_t addrlen, unsigned timeout_ms)
{
    struct eng_slot *s;
    struct io_uring_sqe *sqe;
    if (!addr || addrlen == 0 || addrlen > sizeof(s->addr) || timeout_ms == 0)
        return -EINVAL;
    int ret = ops_begin(loop, h, ENG_OP_CONNECT, timeout_ms, &s, &sqe);
    if (ret < 0)
        return ret;
    memcpy(&s->addr, addr, addrlen);
    io_uring_prep_connect(sqe, s->fd, (const struct sockaddr *)&s->addr, addrlen);
    return ops_commit(loop, s, ENG_OP_CONNECT, sqe, timeout_ms);
}

int eng_op_recv(struct eng_loop *loop, eng_handle_t h, void *buf, size_t len, unsigned timeout_ms)
{
    struct eng_slot *s;
    struct io_uring_sqe *sqe;
    if ((!buf && len) || timeout_ms == 0)
        return -EINVAL;
    int ret = ops_begin(loop, h, ENG_OP_RECV, timeout_ms, &s, &sqe);
    if (ret < 0)
        return ret;
    io_uring_prep_recv(sqe, s->fd, buf, len, 0);
    return ops_commit(loop, s, ENG_OP_RECV, sqe, timeout_ms);
}

int eng_op_send(struct eng_loop *loop, eng_handle_t h, const void *buf, size_t len,
                unsigned timeout_ms)
{
    struct eng_slot *s;
    struct io_uring_sqe *sqe;
    if ((!buf && len) || timeout_ms == 0)
        return -EINVAL;
    int ret = ops_begin(loop, h, ENG_OP_SEND, timeout_ms, &s, &sqe);
    if (ret < 0)
        return ret;
    /* A peer that has gone must be an -EPIPE completion, not a SIGPIPE. */
    io_uring_prep_send(sqe, s->fd, buf, len, MSG_NOSIGNAL);
    return ops_commit(loop, s, ENG_OP_SEND, sqe, timeout_ms);
}

int eng_op_timer(struct eng_loop *loop, eng_handle_t h, unsigned ms)
{
    struct eng_slot *s;
    struct io_uring_sqe *sqe;
    int ret = ops_begin(loop, h, ENG_OP_TIMER, 0, &s, &sqe);
    if (ret < 0)
        return ret;
    ops_timespec(&s->ts[ENG_OP_TIMER], ms);
    io_uring_prep_timeout(sqe, &s->ts[ENG_OP_TIMER], 0, 0);
    return ops_commit(loop, s, ENG_OP_TIMER, sqe, 0);
}

int eng_op_poll(struct eng_loop *loop, eng_handle_t h, unsigned events, unsigned timeout_ms)
{
    struct eng_slot *s;
    struct io_uring_sqe *sqe;
    if (events == 0)
        return -EINVAL;
    int ret = ops_begin(loop, h, ENG_OP_POLL, timeout_ms, &s, &sqe);
    if (ret < 0)
        return ret;
    io_uring_prep_poll_add(sqe, s->fd, events);
    return ops_commit(loop, s, ENG_OP_POLL, sqe, timeout_ms);
}

int eng_op_accept(struct eng_loop *loop, eng_handle_t h)
{
    struct eng_slot *s;
    struct io_uring_sqe *sqe;
    int ret = ops_begin(loop, h, ENG_OP_ACCEPT, 0, &s, &sqe);
    if (ret < 0)
        return ret;
    io_uring_prep_multishot_accept(sqe, s->fd, NULL, NULL, SOCK_CLOEXEC);
    return ops_commit(loop, s, ENG_OP_ACCEPT, sqe, 0);
}
