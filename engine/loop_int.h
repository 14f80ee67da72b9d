/*
 * engine/loop_int.h — private to engine/loop.c and engine/loop_ops.c.
 *
 * The loop's slot table and the user_data encoding shared by the dispatcher
 * (loop.c) and the submission side (loop_ops.c). Nothing outside those two files
 * includes this header.
 */
#ifndef FLOORMTA_ENGINE_LOOP_INT_H
#define FLOORMTA_ENGINE_LOOP_INT_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/loop.h"

/* Internal op kinds: they share the 8-bit kind field of user_data with the public
 * ones, so the dispatcher needs no second tag. */
enum {
    LOOP_KIND_LINK_TIMEOUT = ENG_OP__COUNT,
    LOOP_KIND_CANCEL,
};

#define LOOP_SLOT_BITS 24
#define LOOP_SLOT_MAX  (1u << LOOP_SLOT_BITS)
#define LOOP_NIL       UINT32_MAX /* end of the free list and of the release list */
#define LOOP_KBIT(k)   ((uint8_t)(1u << (k)))

enum slot_state {
    SLOT_FREE,
    SLOT_OPEN,
    SLOT_CLOSING, /* cancels issued; released once in_flight drops to 0 */
};

struct eng_slot {
    uint32_t gen;  /* bumped on every release, never 0, so handle id 0 stays invalid */
    uint32_t next; /* free-list link while free, release-list link while closing */
    int fd;
    uint8_t state;
    uint8_t busy;        /* kinds in flight */
    uint8_t cancel_req;  /* kinds whose cancel was asked for (close or eng_op_cancel) */
    uint8_t cancel_todo; /* cancels that found no SQE yet; retried by the loop */
    uint8_t timed;       /* kinds submitted with a linked timeout */
    /* Every SQE that will produce a CQE for this slot: ops, linked timeouts, cancels.
     * The slot cannot be reused before it is 0, which is what makes a stale user_data
     * impossible in the first place (the generation check is the safety net). */
    uint32_t in_flight;
    const struct eng_handle_ops *ops;
    void *ctx;
    /* The kernel copies timespecs and connect addresses when it consumes the SQE,
     * which may be at the next io_uring_submit, long after the caller returned. */
    struct __kernel_timespec ts[ENG_OP__COUNT];
    struct sockaddr_storage addr;
};

struct eng_loop {
    struct io_uring ring;
    struct eng_slot *slots;
    uint32_t max_handles;
    uint32_t free_head;
    uint32_t release_head; /* FIFO of closing slots with nothing in flight */
    uint32_t release_tail;
    bool cancel_backlog; /* some slot has cancel_todo bits */
    bool stop;
    bool freeing; /* eng_loop_free is draining: no new handles */
    uint64_t now_ms;
    struct eng_loop_stats stats;
};

/* user_data = kind (8 bits) | slot (24 bits) | generation (32 bits); never the fd. */
static inline uint64_t loop_ud(unsigned kind, const struct eng_loop *loop, const struct eng_slot *s)
{
    uint64_t idx = (uint64_t)(s - loop->slots);
    return (uint64_t)s->gen << 32 | idx << 8 | kind;
}

/* A handle id is the user_data of a slot without the kind: generation | slot. */
static inline eng_handle_t loop_handle_id(const struct eng_loop *loop, const struct eng_slot *s)
{
    return (uint64_t)s->gen << 32 | (uint64_t)(s - loop->slots);
}

static inline unsigned loop_ud_kind(uint64_t ud)
{
    return (unsigned)(ud & 0xff);
}

static inline uint32_t loop_ud_slot(uint64_t ud)
{
    return (uint32_t)(ud >> 8) & (LOOP_SLOT_MAX - 1);
}

static inline uint32_t loop_ud_gen(uint64_t ud)
{
    return (uint32_t)(ud >> 32);
}

/* Shared between loop.c and loop_ops.c (eng_-prefixed because they are not static). */
struct io_uring_sqe *eng_loop_sqe_reserve(struct eng_loop *loop, unsigned need);
void eng_loop_cancel_issue(struct eng_loop *loop, struct eng_slot *s, unsigned kind);
void eng_loop_slot_put(struct eng_loop *loop, struct eng_slot *s);
void eng_loop_release_queue(struct eng_loop *loop, struct eng_slot *s);

#endif /* FLOORMTA_ENGINE_LOOP_INT_H */
