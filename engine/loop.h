/*
 * engine/loop.h — the per-thread reactor over io_uring.
 *
 * Everything that waits in floormta (SMTP sessions, listeners, DNS sockets, timers)
 * waits here. The unit of ownership is a *handle*: a slot in the loop's table that
 * an owner (a session, a listener, a watcher) opens with a context pointer and a const
 * ops table. Operations are submitted against a handle; each one:
 *   - carries a timeout (an io_uring linked timeout) unless stated otherwise, and a
 *     fired timeout is reported as -ETIMEDOUT, never as a silent -ECANCELED;
 *   - is identified in user_data by op kind + slot + generation (never by the fd), so a
 *     completion that arrives after its slot was reused is counted and dropped;
 *   - holds a reference on the handle: eng_handle_close() cancels what is in flight and
 *     the owner's on_release runs only once nothing is left in flight, from the loop,
 *     never from inside eng_handle_close() or a completion callback's own stack.
 * At most one operation of each kind is in flight per handle (a second one gets
 * -EBUSY); sessions need one recv, one send and one timer at a time, and that rule lets
 * cancellation name an operation by its kind.
 *
 * A loop belongs to one thread; nothing here takes a lock.
 */
#ifndef FLOORMTA_ENGINE_LOOP_H
#define FLOORMTA_ENGINE_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Module error codes (besides -errno). */
#define ENG_ERRORS(X)                                     \
    X(ENG_ERR_STALE, -10001, "handle is closed or stale") \
    X(ENG_ERR_FULL, -10002, "no free handle slot")        \
    X(ENG_ERR_URING, -10003, "io_uring is not available")

enum eng_err {
#define ENG_ERR_ENUM(name, code, text) name = code,
    ENG_ERRORS(ENG_ERR_ENUM)
#undef ENG_ERR_ENUM
};

/* Static string for an eng_ code or -errno. */
const char *eng_strerror(int err);

#define ENG_OP_KINDS(X)          \
    X(ENG_OP_CONNECT, "connect") \
    X(ENG_OP_RECV, "recv")       \
    X(ENG_OP_SEND, "send")       \
    X(ENG_OP_TIMER, "timer")     \
    X(ENG_OP_POLL, "poll")       \
    X(ENG_OP_ACCEPT, "accept")

enum eng_op_kind {
#define ENG_OP_ENUM(name, str) name,
    ENG_OP_KINDS(ENG_OP_ENUM)
#undef ENG_OP_ENUM
            ENG_OP__COUNT
};

const char *eng_op_name(enum eng_op_kind op);

struct eng_loop;

/* A handle id: slot and generation. 0 is never a valid id. */
typedef uint64_t eng_handle_t;

struct eng_completion {
    struct eng_loop *loop;
    eng_handle_t handle;
    enum eng_op_kind op;
    int res;   /* >= 0: the operation's result (bytes, new fd, poll mask, 0);
                * -ETIMEDOUT: its timeout fired; -ECANCELED: eng_op_cancel();
                * other -errno: the kernel's error */
    bool more; /* multishot accept: more completions follow for this operation */
};

struct eng_handle_ops {
    /* A completion. Runs on the loop thread; may submit, cancel or close (including
     * its own handle). comp is borrowed for the call. */
    void (*on_complete)(void *ctx, const struct eng_completion *comp);
    /* The handle is gone: nothing is in flight any more and no callback will follow.
     * The owner frees ctx (and closes its fd) here. May be NULL. */
    void (*on_release)(void *ctx);
};

struct eng_loop_config {
    unsigned entries;     /* submission queue size; 0 = 1024 */
    unsigned max_handles; /* slots; 0 = 4096 */
};

struct eng_loop_stats {
    uint64_t submitted; /* operations submitted (not counting linked timeouts) */
    uint64_t completed; /* completions delivered to owners */
    uint64_t timeouts;  /* operations ended by their timeout */
    uint64_t stale;     /* completions dropped because their generation was stale */
    uint32_t handles;   /* handles open (including closing ones) */
};

/* Creates a loop (io_uring with SINGLE_ISSUER/DEFER_TASKRUN where the kernel has them).
 * cfg may be NULL for the defaults. Returns 0 and *out (free with eng_loop_free), or
 * ENG_ERR_URING when io_uring cannot be set up (tests skip on it), -ENOMEM. */
int eng_loop_new(const struct eng_loop_config *cfg, struct eng_loop **out);

/* Frees the loop. Handles still open are released first (their on_release runs) after
 * their operations are cancelled and drained. NULL is a no-op. */
void eng_loop_free(struct eng_loop *loop);

/* Runs until eng_loop_stop() or until no handle is open. Returns 0, or a negative code
 * if io_uring itself fails. */
int eng_loop_run(struct eng_loop *loop);

/* Runs one iteration: submits, waits up to timeout_ms (-1 = until something completes)
 * for completions and dispatches them. Returns the number dispatched, or < 0. */
int eng_loop_run_once(struct eng_loop *loop, int timeout_ms);

/* Makes eng_loop_run return after the current iteration. Loop thread only. */
void eng_loop_stop(struct eng_loop *loop);

/* Monotonic milliseconds, refreshed once per iteration (cheap to call often). */
uint64_t eng_loop_now_ms(const struct eng_loop *loop);

void eng_loop_stats(const struct eng_loop *loop, struct eng_loop_stats *out);

/* Opens a handle for fd (-1 for a handle that only runs timers). ops and ctx are
 * borrowed until on_release; the fd stays the owner's (the loop never closes it).
 * Returns 0 and *out, or ENG_ERR_FULL. */
int eng_handle_open(struct eng_loop *loop, int fd, const struct eng_handle_ops *ops, void *ctx,
                    eng_handle_t *out);

/* True while the handle is open and not closing. */
bool eng_handle_alive(const struct eng_loop *loop, eng_handle_t h);

/* True while an operation of this kind is in flight on the handle. */
bool eng_handle_busy(const struct eng_loop *loop, eng_handle_t h, enum eng_op_kind op);

/* Closes the handle: cancels everything in flight; on_complete is not called again;
 * on_release runs later from the loop once nothing is in flight. A stale or closing
 * handle is a no-op. */
void eng_handle_close(struct eng_loop *loop, eng_handle_t h);

/* Operations. Each returns 0 (a completion will follow), ENG_ERR_STALE, -EBUSY (that
 * kind is already in flight on the handle), -EINVAL, or -EAGAIN (the submission queue
 * is full even after submitting). Buffers and addresses are borrowed until the
 * completion. timeout_ms is required (> 0) unless stated otherwise. */
int eng_op_connect(struct eng_loop *loop, eng_handle_t h, const struct sockaddr *addr,
                   socklen_t addrlen, unsigned timeout_ms);
int eng_op_recv(struct eng_loop *loop, eng_handle_t h, void *buf, size_t len, unsigned timeout_ms);
/* May send fewer bytes than asked (res says how many): send the rest with a new op. */
int eng_op_send(struct eng_loop *loop, eng_handle_t h, const void *buf, size_t len,
                unsigned timeout_ms);
/* A timer: completes with res 0 after ms milliseconds. */
int eng_op_timer(struct eng_loop *loop, eng_handle_t h, unsigned ms);
/* One-shot poll for POLLIN/POLLOUT (res = revents). timeout_ms 0 = no timeout (for
 * sockets whose owner keeps its own timers, such as c-ares'). */
int eng_op_poll(struct eng_loop *loop, eng_handle_t h, unsigned events, unsigned timeout_ms);
/* Multishot accept on a listening socket: one completion per connection (res = the new
 * fd, owned by the callee) with more = true while it stays armed. No timeout. */
int eng_op_accept(struct eng_loop *loop, eng_handle_t h);

/* Cancels the in-flight operation of that kind; it completes with -ECANCELED (or with
 * its result, if it finished first). Returns 0, or -ENOENT if none is in flight. */
int eng_op_cancel(struct eng_loop *loop, eng_handle_t h, enum eng_op_kind op);

#endif /* FLOORMTA_ENGINE_LOOP_H */
