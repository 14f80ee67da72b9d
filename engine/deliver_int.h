/*
 * engine/deliver_int.h — private to engine/deliver*.c: one attempt's state, shared by
 * the flow (deliver.c) and the results, report and delivery-log line (deliver_log.c).
 * Nothing else includes this header.
 */
#ifndef FLOORMTA_ENGINE_DELIVER_INT_H
#define FLOORMTA_ENGINE_DELIVER_INT_H

#include "engine/deliver.h"
#include "engine/smtp_client.h"

struct eng_deliver {
    struct eng_deliver_config cfg; /* helo_name points at helo */
    char helo[256];
    struct queue_envelope *env; /* owned copy, lent to the report */
    const void *content;
    size_t len;
    eng_deliver_done_fn done;
    void *arg;

    struct dns_mx_result mx;
    unsigned nhosts;    /* hosts to try: min(mx.nhosts, max_mx_hosts) */
    unsigned host, adr; /* the next address to try */

    /* The transaction: the recipients not final when the attempt started. */
    unsigned ntried;
    unsigned *idx; /* ntried indexes into env->rcpts */
    const char **rcpts;
    struct smtp_rcpt_result *results;
    struct smtp_txn txn;
    bool txn_ended; /* a host took (and ended) the transaction */
    bool stop;      /* the message itself cannot be sent: try no further host */

    /* The domain's policy. */
    const struct eng_policy *pol; /* NULL without a policy table */
    struct tls_ctx *tls;          /* the context to connect with */
    bool use_capcache;            /* the capability cache speaks for this policy */

    /* The pool: our request (granted later when we had to wait), the lease. */
    struct eng_connpool_wait wait;
    unsigned source; /* index into cfg.sources */
    bool reused;     /* the current connection came from the pool */
    bool stale;      /* ... and was found dead before MAIL's reply: try again */
    bool recorded;   /* the current connection's verdict is in the capability cache */
    unsigned stale_retries;

    /* The connection under way, or the one that took the transaction. */
    char cur_host[DNS_NAME_MAX + 1];
    char cur_addr[64];              /* "192.0.2.1:25" */
    char remote[DNS_NAME_MAX + 80]; /* "mx.example.com[192.0.2.1]:25", for results */

    /* Why nothing was delivered, if it comes to that: a floor refusal beats a network
     * error. */
    struct queue_result cand;
    bool cand_set, cand_tls;
    enum tls_reason refusal;
    struct tls_verdict refused; /* the first live refusal's verdict (its evidence goes in
                                 * the log line when nothing was delivered) */
    bool refused_live;

    uint64_t t_start, t_dns, t_conn, t_ready, t_txn, t_txn_end;
    struct eng_deliver_report rep;
};

/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t eng_deliver_now_ms(void);

/* Fills r with a result (text copied, truncated). */
void eng_deliver_result_set(struct queue_result *r, enum queue_result_kind kind, uint16_t code,
                            const char *enhanced, const char *remote, const char *text);

/* Applies the finished transaction's results to the tried recipients. */
void eng_deliver_apply_txn(struct eng_deliver *d, const char *remote);

/* Sets every tried recipient not final to state with result r (attempts + 1). */
void eng_deliver_apply_all(struct eng_deliver *d, enum queue_rcpt_state state,
                           const struct queue_result *r);

/* Builds the report and its JSON line, logs it and calls done. Does not free d. */
void eng_deliver_report_run(struct eng_deliver *d);

#endif /* FLOORMTA_ENGINE_DELIVER_INT_H */
