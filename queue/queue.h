/*
 * queue/queue.h — the durable spool, the scheduler, retries and DSN bounces (issue 4).
 *
 * For now this header holds the per-recipient delivery vocabulary: an outcome is a
 * value (STYLE.md point 6), and a refusal by the TLS floor is a deferral like any 4xx,
 * never a reason to retry in a weaker mode.
 */
#ifndef FLOORMTA_QUEUE_H
#define FLOORMTA_QUEUE_H

/* Where one recipient of a queued message stands. */
enum queue_rcpt_state {
    QUEUE_RCPT_PENDING,   /* not tried yet */
    QUEUE_RCPT_DEFERRED,  /* tried; temporary failure or floor refusal; retried later */
    QUEUE_RCPT_DELIVERED, /* the receiver said 2xx over TLS that met the floor */
    QUEUE_RCPT_BOUNCED,   /* permanent failure or expiry; a DSN was queued */
};

#endif /* FLOORMTA_QUEUE_H */
