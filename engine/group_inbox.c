/*
 * engine/group_inbox.c — the workers' inboxes: Dmitry Vyukov's intrusive MPSC queue
 * (1024cores.net, "Intrusive MPSC node-based queue") in C11 atomics, with an eventfd
 * for the wake-up (see group_int.h for the contract and why an eventfd).
 *
 * The queue is a singly linked list from tail (oldest, the consumer's) to head (the
 * newest, the producers'). A push is two steps: swap itself in as the head, then link
 * the previous head to itself. Between the two steps the list is cut; the consumer
 * then sees "nothing yet" and the producer's wake-up, written after its second step,
 * brings it back. A stub node keeps the list non-empty so that neither end is NULL.
 */
#include "engine/group_int.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

int eng_group_inbox_init(struct eng_group_inbox *q)
{
    atomic_init(&q->stub.next, NULL);
    atomic_init(&q->head, &q->stub);
    q->tail = &q->stub;
    atomic_init(&q->count, 0);
    atomic_init(&q->wake_armed, false);
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return q->efd < 0 ? -errno : 0;
}

void eng_group_inbox_destroy(struct eng_group_inbox *q)
{
    if (q->efd >= 0)
        close(q->efd);
    q->efd = -1;
}

static void link_node(struct eng_group_inbox *q, struct eng_group_node *n)
{
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    struct eng_group_node *prev = atomic_exchange_explicit(&q->head, n, memory_order_acq_rel);
    atomic_store_explicit(&prev->next, n, memory_order_release);
}

static void write_wake(struct eng_group_inbox *q)
{
    uint64_t one = 1;
    /* EAGAIN only when the counter is near 2^64: it is readable then anyway. */
    while (write(q->efd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

int eng_group_inbox_push(struct eng_group_inbox *q, struct eng_group_node *n, size_t limit)
{
    size_t before = atomic_fetch_add(&q->count, 1);
    if (limit && before >= limit) {
        atomic_fetch_sub(&q->count, 1);
        return -EAGAIN;
    }
    link_node(q, n);
    /* seq_cst exchange, after the link: if the consumer's acknowledgement (the store of
     * false) comes first, this push writes a wake-up; if it comes after, the
     * consumer's pops that follow it see the link. */
    if (!atomic_exchange(&q->wake_armed, true))
        write_wake(q);
    return 0;
}

void eng_group_inbox_wake(struct eng_group_inbox *q)
{
    write_wake(q);
}

void eng_group_inbox_ack(struct eng_group_inbox *q)
{
    uint64_t v;
    while (read(q->efd, &v, sizeof(v)) < 0 && errno == EINTR)
        ;
    atomic_store(&q->wake_armed, false);
}

struct eng_group_node *eng_group_inbox_pop(struct eng_group_inbox *q)
{
    struct eng_group_node *tail = q->tail;
    struct eng_group_node *next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (tail == &q->stub) {
        if (next == NULL)
            return NULL; /* empty */
        q->tail = next;
        tail = next;
        next = atomic_load_explicit(&next->next, memory_order_acquire);
    }
    if (next) {
        q->tail = next;
        atomic_fetch_sub(&q->count, 1);
        return tail;
    }
    if (tail != atomic_load_explicit(&q->head, memory_order_acquire))
        return NULL; /* a producer is between its two steps */
    /* tail is the last node: put the stub behind it so that tail can be handed out. */
    link_node(q, &q->stub);
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next) {
        q->tail = next;
        atomic_fetch_sub(&q->count, 1);
        return tail;
    }
    return NULL; /* another producer got in before the stub: its link follows */
}

struct grp_msg *eng_group_msg_adopt(const struct queue_entry_info *info, bool recovered)
{
    size_t dlen = strlen(info->domain);
    struct grp_msg *m = calloc(1, sizeof(*m) + dlen + 1);
    if (!m)
        return NULL;
    m->kind = GRP_MSG_ADOPT;
    memcpy(m->domain, info->domain, dlen + 1);
    m->info = *info;
    m->info.domain = m->domain;
    m->recovered = recovered;
    return m;
}

void eng_group_msg_abandon(struct grp_msg *m, int res)
{
    if (m->kind == GRP_MSG_ENQUEUE) {
        m->done(m->arg, 0, res);
        queue_envelope_free(m->env);
    } else if (m->kind == GRP_MSG_DONE) {
        m->done(m->arg, m->id, m->res); /* the outcome stands: durable or not */
    } else if (m->kind == GRP_MSG_CALL) {
        int pending = GRP_CALL_PENDING;
        if (atomic_compare_exchange_strong(&m->call->state, &pending, GRP_CALL_CANCELLED))
            sem_post(&m->call->done);
        eng_group_call_unref(m->call);
    }
    free(m);
}

void eng_group_call_unref(struct grp_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1) {
        sem_destroy(&c->done);
        free(c);
    }
}
