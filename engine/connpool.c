/*
 * engine/connpool.c — per-worker connection limits and idle connections (connpool.h).
 *
 * Keys live in a small chained hash table; a key's struct exists while it has a
 * connection, an idle connection or a waiter, so the table is bounded by the MX hosts
 * in use, not by those ever seen. Idle connections are a LIFO per key: the most
 * recently used one is the warmest (its TCP window open, far from its idle timeout),
 * and the cold ones at the tail time out by themselves.
 *
 * Re-entrancy: granting a waiter runs the owner's code, which may acquire, connect,
 * release or fail at once, and so free the very key it was granted. Every grant is
 * therefore the last thing a function does with its key.
 */
#include "engine/connpool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/addr.h"
#include "engine/hash.h"
#include "engine/log.h"

#define POOL_BUCKETS  256 /* power of two */
#define POOL_NAME_MAX 255

#define CONN_STATES(X)               \
    X(CONN_CONNECTING, "connecting") \
    X(CONN_LEASED, "leased")         \
    X(CONN_IDLE, "idle")             \
    X(CONN_CLOSING, "closing")

enum conn_state {
#define CONN_STATE_ENUM(name, str) name,
    CONN_STATES(CONN_STATE_ENUM)
#undef CONN_STATE_ENUM
};

static const char *const conn_state_names[] = {
#define CONN_STATE_NAME(name, str) str,
    CONN_STATES(CONN_STATE_NAME)
#undef CONN_STATE_NAME
};

struct pool_host {
    struct pool_host *hnext;
    uint64_t hash;
    char name[POOL_NAME_MAX + 1];
    uint16_t port;
    unsigned source;
    const struct tls_ctx *tls;
    unsigned nconns; /* any state, closing included */
    unsigned nidle;
    struct eng_conn *idle; /* LIFO through idle_next / idle_prev */
    struct eng_connpool_wait *wait_head, *wait_tail;
    unsigned gwaiting; /* waiters of this key in the pool's global list: they point at
                        * this host, so it must live until they are granted */
};

struct eng_conn {
    struct eng_connpool *pool; /* NULL: unpooled */
    struct pool_host *host;    /* NULL: unpooled */
    struct smtp_session *s;    /* known from the first ready on */
    enum conn_state state;
    const struct eng_conn_ops *ops;
    void *arg;
    struct eng_conn *idle_next, *idle_prev;
    uint64_t born_ms;
    unsigned leases;
    char address[64]; /* "192.0.2.1:25" */
};

struct eng_connpool {
    struct eng_connpool_config cfg;
    struct pool_host *buckets[POOL_BUCKETS];
    struct eng_connpool_wait *gwait_head, *gwait_tail; /* waiting for the total only */
    bool closing;
    struct eng_connpool_stats st;
};

static const char *const grant_names[] = {
#define ENG_CONNPOOL_GRANT_NAME(name, str) str,
    ENG_CONNPOOL_GRANTS(ENG_CONNPOOL_GRANT_NAME)
#undef ENG_CONNPOOL_GRANT_NAME
};

const char *eng_connpool_grant_name(enum eng_connpool_grant g)
{
    return (unsigned)g < sizeof(grant_names) / sizeof(grant_names[0]) ? grant_names[g] : "invalid";
}

/* The only writer of c->state. */
static void conn_set(struct eng_conn *c, enum conn_state st)
{
    if (c->state != st)
        eng_log(ENG_LOG_DEBUG, "connpool %s:%u %s -> %s", c->host ? c->host->name : "-",
                c->host ? (unsigned)c->host->port : 0u, conn_state_names[c->state],
                conn_state_names[st]);
    c->state = st;
}

/* ---- keys ------------------------------------------------------------------------------ */

static char lower(char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
}

static uint64_t key_hash(const struct eng_connpool_key *k)
{
    uint64_t h = eng_hash_mix(eng_hash_name(k->host), k->port);
    h = eng_hash_mix(h, (uint64_t)(uintptr_t)k->tls);
    return eng_hash_mix(h, k->source);
}

static bool key_equal(const struct pool_host *h, uint64_t hash, const struct eng_connpool_key *k)
{
    if (h->hash != hash || h->port != k->port || h->source != k->source || h->tls != k->tls)
        return false;
    const char *a = h->name, *b = k->host;
    for (; *a && *b; a++, b++)
        if (lower(*a) != lower(*b))
            return false;
    return *a == *b;
}

static struct pool_host *host_find(struct eng_connpool *p, const struct eng_connpool_key *k)
{
    uint64_t hash = key_hash(k);
    for (struct pool_host *h = p->buckets[hash & (POOL_BUCKETS - 1)]; h; h = h->hnext)
        if (key_equal(h, hash, k))
            return h;
    return NULL;
}

static struct pool_host *host_get(struct eng_connpool *p, const struct eng_connpool_key *k)
{
    struct pool_host *h = host_find(p, k);
    if (h)
        return h;
    h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->hash = key_hash(k);
    memcpy(h->name, k->host, strlen(k->host) + 1);
    h->port = k->port;
    h->source = k->source;
    h->tls = k->tls;
    struct pool_host **b = &p->buckets[h->hash & (POOL_BUCKETS - 1)];
    h->hnext = *b;
    *b = h;
    p->st.hosts++;
    return h;
}

/* Frees a key that holds nothing any more. */
static void host_maybe_free(struct eng_connpool *p, struct pool_host *h)
{
    if (h->nconns || h->nidle || h->wait_head || h->gwaiting)
        return;
    struct pool_host **pp = &p->buckets[h->hash & (POOL_BUCKETS - 1)];
    while (*pp != h)
        pp = &(*pp)->hnext;
    *pp = h->hnext;
    p->st.hosts--;
    free(h);
}

/* ---- waiters ------------------------------------------------------------------------------- */

static void wait_push(struct eng_connpool_wait **head, struct eng_connpool_wait **tail,
                      struct eng_connpool_wait *w)
{
    w->next = NULL;
    w->queued = true;
    if (*tail)
        (*tail)->next = w;
    else
        *head = w;
    *tail = w;
}

static struct eng_connpool_wait *wait_pop(struct eng_connpool_wait **head,
                                          struct eng_connpool_wait **tail)
{
    struct eng_connpool_wait *w = *head;
    if (!w)
        return NULL;
    *head = w->next;
    if (!*head)
        *tail = NULL;
    w->next = NULL;
    w->queued = false;
    return w;
}

/* ---- idle lists -------------------------------------------------------------------------- */

static void idle_push(struct pool_host *h, struct eng_conn *c)
{
    c->idle_prev = NULL;
    c->idle_next = h->idle;
    if (h->idle)
        h->idle->idle_prev = c;
    h->idle = c;
    h->nidle++;
    c->pool->st.idle++;
}

static void idle_unlink(struct pool_host *h, struct eng_conn *c)
{
    if (c->idle_prev)
        c->idle_prev->idle_next = c->idle_next;
    else
        h->idle = c->idle_next;
    if (c->idle_next)
        c->idle_next->idle_prev = c->idle_prev;
    c->idle_next = c->idle_prev = NULL;
    h->nidle--;
    c->pool->st.idle--;
}

/* QUITs a connection that is READY (idle, or leased and given back). */
static void conn_quit(struct eng_conn *c)
{
    if (c->state == CONN_IDLE)
        idle_unlink(c->host, c);
    conn_set(c, CONN_CLOSING);
    if (c->pool)
        c->pool->st.idle_quits++;
    if (smtp_session_quit(c->s) < 0)
        eng_log(ENG_LOG_WARN, "connpool: QUIT refused by a session that should be ready");
}

/* Closes the least recently used idle connection of the pool to make room. */
static bool evict_one_idle(struct eng_connpool *p)
{
    struct eng_conn *victim = NULL;
    for (unsigned i = 0; i < POOL_BUCKETS; i++)
        for (struct pool_host *h = p->buckets[i]; h; h = h->hnext) {
            struct eng_conn *tail = h->idle;
            while (tail && tail->idle_next)
                tail = tail->idle_next;
            if (tail && (!victim || tail->born_ms < victim->born_ms))
                victim = tail;
        }
    if (!victim)
        return false;
    conn_quit(victim);
    return true;
}

/* ---- slots ---------------------------------------------------------------------------------- */

static void reserve(struct eng_connpool *p, struct pool_host *h)
{
    h->nconns++;
    p->st.total++;
}

static void lease(struct eng_conn *c, const struct eng_connpool_wait *w)
{
    if (c->state == CONN_IDLE)
        idle_unlink(c->host, c);
    c->ops = w->ops;
    c->arg = w->arg;
    c->leases++;
    c->pool->st.reuses++;
    conn_set(c, CONN_LEASED);
}

/* Gives one global waiter what it waits for now that the total has room. */
static void grant_global(struct eng_connpool *p)
{
    struct eng_connpool_wait *w = p->gwait_head;
    if (!w || p->st.total >= p->cfg.max_total)
        return;
    wait_pop(&p->gwait_head, &p->gwait_tail);
    p->st.waiting--;
    struct pool_host *h = w->host;
    h->gwaiting--;
    if (h->idle) {
        struct eng_conn *c = h->idle;
        lease(c, w);
        w->granted(w, ENG_CONNPOOL_REUSE, c);
        return;
    }
    if (h->nconns < p->cfg.max_per_host) {
        reserve(p, h);
        w->granted(w, ENG_CONNPOOL_CONNECT, NULL);
        return;
    }
    /* Its key filled up meanwhile: it now waits for the key. */
    wait_push(&h->wait_head, &h->wait_tail, w);
    p->st.waiting++;
}

/* A connection of h is gone (or a slot given back): the slot goes to h's first waiter,
 * else to the pool's. */
static void slot_freed(struct eng_connpool *p, struct pool_host *h)
{
    h->nconns--;
    p->st.total--;
    struct eng_connpool_wait *w = NULL;
    if (!p->closing && h->wait_head) {
        w = wait_pop(&h->wait_head, &h->wait_tail);
        p->st.waiting--;
        reserve(p, h);
    }
    host_maybe_free(p, h);
    if (w) {
        w->granted(w, ENG_CONNPOOL_CONNECT, NULL);
        return;
    }
    if (!p->closing)
        grant_global(p);
}

void eng_connpool_unreserve(struct eng_connpool *p, const struct eng_connpool_key *key)
{
    if (!p || !key || !key->host)
        return;
    struct pool_host *h = host_find(p, key);
    if (h && h->nconns)
        slot_freed(p, h);
}

/* ---- the session's callbacks ------------------------------------------------------------- */

static void on_session_ready(void *arg, struct smtp_session *s)
{
    struct eng_conn *c = arg;
    c->s = s;
    if (c->state == CONN_CONNECTING) {
        conn_set(c, CONN_LEASED);
        if (c->pool)
            c->pool->st.ready++;
    }
    if (c->state == CONN_LEASED) {
        c->ops->ready(c->arg, c);
        return;
    }
    /* Ready while idle or closing cannot happen (nobody delivered): end it. */
    if (c->state != CONN_CLOSING)
        conn_quit(c);
}

static void on_session_txn_done(void *arg, struct smtp_session *s, const struct smtp_txn *txn)
{
    struct eng_conn *c = arg;
    c->s = s;
    if (c->state == CONN_LEASED && c->ops->txn_done)
        c->ops->txn_done(c->arg, c, txn);
}

static void on_session_done(void *arg, const struct smtp_client *result)
{
    struct eng_conn *c = arg;
    struct eng_connpool *p = c->pool;
    struct pool_host *h = c->host;
    if (c->state == CONN_IDLE)
        idle_unlink(h, c);
    if (c->state == CONN_CONNECTING || c->state == CONN_LEASED)
        c->ops->done(c->arg, c, result);
    free(c);
    if (p && h)
        slot_freed(p, h);
}

static const struct smtp_session_ops pool_session_ops = {
    .ready = on_session_ready,
    .txn_done = on_session_txn_done,
    .done = on_session_done,
};

/* ---- the owner's side ------------------------------------------------------------------ */

int eng_connpool_new(const struct eng_connpool_config *cfg, struct eng_connpool **out)
{
    if (!cfg || !cfg->loop || !out)
        return -EINVAL;
    struct eng_connpool *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->cfg = *cfg;
    if (!p->cfg.max_per_host)
        p->cfg.max_per_host = 10;
    if (!p->cfg.max_total)
        p->cfg.max_total = 1000;
    if (!p->cfg.max_idle_per_host || p->cfg.max_idle_per_host > p->cfg.max_per_host)
        p->cfg.max_idle_per_host = p->cfg.max_per_host;
    if (!p->cfg.idle_timeout_ms)
        p->cfg.idle_timeout_ms = 10000;
    if (!p->cfg.max_msgs_per_conn)
        p->cfg.max_msgs_per_conn = 100;
    if (!p->cfg.max_conn_age_ms)
        p->cfg.max_conn_age_ms = 300000;
    *out = p;
    return 0;
}

int eng_connpool_acquire(struct eng_connpool *p, const struct eng_connpool_key *key,
                         struct eng_connpool_wait *w, struct eng_conn **out)
{
    if (!key || !key->host || !key->host[0] || strlen(key->host) > POOL_NAME_MAX || !w || !out)
        return -EINVAL;
    *out = NULL;
    if (!p)
        return ENG_CONNPOOL_CONNECT;
    if (p->closing)
        return ENG_CONNPOOL_CLOSED;
    struct pool_host *h = host_get(p, key);
    if (!h)
        return -ENOMEM;
    w->host = h;
    if (h->idle) {
        struct eng_conn *c = h->idle;
        lease(c, w);
        *out = c;
        return ENG_CONNPOOL_REUSE;
    }
    /* First come, first served: a key with waiters gives its next slot to them. */
    if (h->nconns < p->cfg.max_per_host && !h->wait_head) {
        if (p->st.total < p->cfg.max_total) {
            reserve(p, h);
            return ENG_CONNPOOL_CONNECT;
        }
        /* Only the total is full: an idle connection elsewhere can make room (its slot
         * comes back when its QUIT is done). Queued first, so that room is ours. */
        wait_push(&p->gwait_head, &p->gwait_tail, w);
        h->gwaiting++;
        p->st.waiting++;
        p->st.waits++;
        evict_one_idle(p);
        return ENG_CONNPOOL_WAIT;
    }
    wait_push(&h->wait_head, &h->wait_tail, w);
    p->st.waiting++;
    p->st.waits++;
    return ENG_CONNPOOL_WAIT;
}

int eng_connpool_connect(struct eng_connpool *p, struct eng_loop *loop,
                         const struct eng_connpool_key *key, const struct smtp_session_config *scfg,
                         const struct sockaddr *addr, socklen_t addrlen,
                         const struct eng_conn_ops *ops, void *arg)
{
    struct pool_host *h = NULL;
    if (p) {
        h = key && key->host ? host_find(p, key) : NULL;
        if (!h || !h->nconns)
            return -EINVAL; /* no reserved slot */
    }
    int rc = -EINVAL;
    struct eng_conn *c = NULL;
    if (scfg && addr && ops && ops->ready && ops->done)
        c = calloc(1, sizeof(*c));
    if (c) {
        c->pool = p;
        c->host = h;
        c->ops = ops;
        c->arg = arg;
        c->state = CONN_CONNECTING;
        eng_addr_format(addr, c->address, sizeof(c->address));
        struct smtp_session_config sc = *scfg;
        if (p) {
            loop = p->cfg.loop;
            sc.idle_timeout_ms = p->cfg.idle_timeout_ms;
        }
        rc = loop ? smtp_session_start_delivery(loop, &sc, addr, addrlen, &pool_session_ops, c)
                  : -EINVAL;
        if (rc == 0) {
            c->born_ms = eng_loop_now_ms(loop);
            if (p)
                p->st.connects++;
            return 0;
        }
        free(c);
    } else if (scfg && addr && ops && ops->ready && ops->done) {
        rc = -ENOMEM;
    }
    if (p)
        slot_freed(p, h);
    return rc;
}

int eng_conn_deliver(struct eng_conn *c, const struct smtp_txn *txn)
{
    if (!c || c->state != CONN_LEASED || !c->s)
        return -EBUSY;
    return smtp_session_deliver(c->s, txn);
}

void eng_connpool_release(struct eng_conn *c, bool keep)
{
    if (!c || c->state != CONN_LEASED || !c->s)
        return;
    struct eng_connpool *p = c->pool;
    struct pool_host *h = c->host;
    if (!p) {
        /* Unpooled: the owner stays, and hears done once QUIT is through. */
        if (smtp_session_quit(c->s) < 0)
            eng_log(ENG_LOG_WARN, "connpool: QUIT refused by a session that should be ready");
        return;
    }
    const struct smtp_client *sm = smtp_session_client(c->s);
    bool reusable = keep && !p->closing && sm->state == SMTPC_READY &&
                    sm->txns < p->cfg.max_msgs_per_conn &&
                    eng_loop_now_ms(p->cfg.loop) - c->born_ms < p->cfg.max_conn_age_ms;
    if (!reusable) {
        conn_quit(c);
        return;
    }
    /* Straight to the next owner of the same key, if one waits. */
    if (h->wait_head) {
        struct eng_connpool_wait *w = wait_pop(&h->wait_head, &h->wait_tail);
        p->st.waiting--;
        lease(c, w);
        w->granted(w, ENG_CONNPOOL_REUSE, c);
        return;
    }
    /* Someone waits for room in the pool: this connection is the room. */
    if (p->gwait_head || h->nidle >= p->cfg.max_idle_per_host) {
        conn_quit(c);
        return;
    }
    c->ops = NULL;
    c->arg = NULL;
    conn_set(c, CONN_IDLE);
    idle_push(h, c);
    p->st.idle_kept++;
}

const struct smtp_client *eng_conn_client(const struct eng_conn *c)
{
    return c && c->s ? smtp_session_client(c->s) : NULL;
}

const char *eng_conn_address(const struct eng_conn *c)
{
    return c ? c->address : "";
}

unsigned eng_conn_reuses(const struct eng_conn *c)
{
    return c && c->leases ? c->leases - 1 : 0;
}

void eng_connpool_stats(const struct eng_connpool *p, struct eng_connpool_stats *out)
{
    if (!out)
        return;
    if (!p) {
        memset(out, 0, sizeof(*out));
        return;
    }
    *out = p->st;
}

/* The first key with a waiter or an idle connection, or NULL. */
static struct pool_host *host_busy_first(struct eng_connpool *p)
{
    for (unsigned i = 0; i < POOL_BUCKETS; i++)
        for (struct pool_host *h = p->buckets[i]; h; h = h->hnext)
            if (h->wait_head || h->idle)
                return h;
    return NULL;
}

void eng_connpool_close(struct eng_connpool *p)
{
    if (!p || p->closing)
        return;
    p->closing = true;
    struct eng_connpool_wait *w;
    while ((w = wait_pop(&p->gwait_head, &p->gwait_tail))) {
        p->st.waiting--;
        struct pool_host *gh = w->host;
        gh->gwaiting--;
        host_maybe_free(p, gh);
        w->granted(w, ENG_CONNPOOL_CLOSED, NULL);
    }
    /* Owners run (and a QUIT that cannot be submitted ends its connection at once), so
     * keys may come and go under our feet: start over after each step. Shutdown only. */
    struct pool_host *h;
    while ((h = host_busy_first(p))) {
        if (h->idle) {
            conn_quit(h->idle);
            continue;
        }
        w = wait_pop(&h->wait_head, &h->wait_tail);
        p->st.waiting--;
        host_maybe_free(p, h);
        w->granted(w, ENG_CONNPOOL_CLOSED, NULL);
    }
}

void eng_connpool_free(struct eng_connpool *p)
{
    if (!p)
        return;
    eng_connpool_close(p);
    while (p->st.total > 0)
        if (eng_loop_run_once(p->cfg.loop, 1000) < 0)
            break;
    for (unsigned i = 0; i < POOL_BUCKETS; i++)
        while (p->buckets[i]) {
            struct pool_host *h = p->buckets[i];
            p->buckets[i] = h->hnext;
            free(h);
        }
    free(p);
}
