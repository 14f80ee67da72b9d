/*
 * dns/dns_resolver.c — the resolver: one c-ares channel driven through its
 * socket-state callback (the owner watches the sockets, calls ares_process_fd on
 * readiness and on ares_timeout's deadline), the cache in front of it, the map of
 * pending domains (so concurrent lookups of one domain share one set of queries) and
 * the done queue.
 *
 * Why a done queue: c-ares may call a query's callback from inside ares_query (no
 * server reachable, out of memory) and always from inside ares_process_fd. A lookup
 * that completes is queued, and its callers' callbacks run at the end of
 * dns_resolver_process_fd / _process_timeouts, outside every c-ares frame: never from
 * inside dns_resolve_mx, and a callback may start new lookups without re-entering
 * c-ares' processing. dns_resolver_timeout_ms is 0 while the queue is not empty.
 */
#include "dns/dns_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PENDING_BUCKETS 16384 /* power of two; DNS_PENDING_MAX / 4 */

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_status = ARES_ENOTINITIALIZED;

static void ares_init_once(void)
{
    ares_init_status = ares_library_init(ARES_LIB_INIT_ALL);
}

/* c-ares' socket-state callback: passed straight through to the owner. */
static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns_resolver *r = data;
    if (r->io != NULL && r->io->watch != NULL)
        r->io->watch(r->io_arg, fd, readable != 0, writable != 0);
}

static int config_apply(struct dns_resolver *r, const struct dns_config *cfg)
{
    r->max_mx_hosts = cfg->max_mx_hosts ? cfg->max_mx_hosts : 10;
    r->max_addrs = cfg->max_addrs_per_host ? cfg->max_addrs_per_host : 4;
    r->addr_pref = cfg->addr_pref;
    r->ttl_min = cfg->ttl_min ? cfg->ttl_min : 60;
    r->ttl_max = cfg->ttl_max ? cfg->ttl_max : 86400;
    r->negative_ttl_max = cfg->negative_ttl_max ? cfg->negative_ttl_max : 3600;
    r->max_active = cfg->max_inflight ? cfg->max_inflight : 64;
    size_t entries = cfg->cache_max_entries ? cfg->cache_max_entries : 10000;
    if (r->max_mx_hosts > DNS_MX_HOSTS_MAX || r->max_addrs > DNS_ADDRS_MAX ||
        (unsigned)r->addr_pref > DNS_ADDR_ONLY_IPV6 || r->ttl_min > r->ttl_max ||
        entries > DNS_CACHE_MAX || cfg->timeout_ms > 600000 || cfg->tries > 16 ||
        r->max_active > DNS_PENDING_MAX)
        return DNS_ERR_CONFIG;
    int rc = dns_cache_new(entries, &r->cache);
    return rc == -EINVAL ? DNS_ERR_CONFIG : rc;
}

static int channel_init(struct dns_resolver *r, const struct dns_config *cfg, int flags)
{
    struct ares_options opts;
    memset(&opts, 0, sizeof(opts));
    opts.flags = flags;
    opts.timeout = (int)(cfg->timeout_ms ? cfg->timeout_ms : 2000);
    opts.tries = (int)(cfg->tries ? cfg->tries : 2);
    opts.sock_state_cb = sock_state_cb;
    opts.sock_state_cb_data = r;
    /* One UDP socket per server carries every query in flight: with thousands of them,
     * a burst of answers must fit in its buffer (the kernel caps it at rmem_max). */
    opts.socket_receive_buffer_size = 4 << 20;
    int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB |
               ARES_OPT_SOCK_RCVBUF;
    if (ares_init_options(&r->channel, &opts, mask) != ARES_SUCCESS) {
        r->channel = NULL;
        return DNS_ERR_INIT;
    }
    return 0;
}

/* NOSEARCH: ares_query never uses search domains; the flag says so for whatever c-ares
 * does on its own. NOCHECKRESP only with a single server: without it c-ares 1.18 skips
 * a server that answers SERVFAIL or REFUSED and tries the next, and when none is left
 * reports ARES_ECONNREFUSED, which cannot be told from an unreachable server. With
 * several servers, failing over matters more than naming the rcode (the outcome is a
 * TEMPFAIL either way); with one there is nothing to fail over to, so the evidence
 * says what the server answered. */
static int channel_open(struct dns_resolver *r, const struct dns_config *cfg)
{
    int rc = channel_init(r, cfg, ARES_FLAG_NOSEARCH);
    if (rc < 0)
        return rc;
    if (cfg->servers != NULL &&
        (cfg->servers[0] == '\0' ||
         ares_set_servers_ports_csv(r->channel, cfg->servers) != ARES_SUCCESS))
        return DNS_ERR_CONFIG;
    struct ares_addr_port_node *servers = NULL;
    if (ares_get_servers_ports(r->channel, &servers) != ARES_SUCCESS)
        return DNS_ERR_INIT;
    if (servers == NULL || servers->next != NULL) {
        ares_free_data(servers);
        return servers == NULL ? DNS_ERR_CONFIG : 0;
    }
    ares_destroy(r->channel);
    rc = channel_init(r, cfg, ARES_FLAG_NOSEARCH | ARES_FLAG_NOCHECKRESP);
    if (rc == 0 && ares_set_servers_ports(r->channel, servers) != ARES_SUCCESS)
        rc = DNS_ERR_INIT;
    ares_free_data(servers);
    return rc;
}

int dns_resolver_new(const struct dns_config *cfg, const struct dns_io *io, void *io_arg,
                     struct dns_resolver **out)
{
    static const struct dns_config defaults;
    if (out == NULL)
        return DNS_ERR_CONFIG;
    *out = NULL;
    pthread_once(&ares_once, ares_init_once);
    if (ares_init_status != ARES_SUCCESS)
        return DNS_ERR_INIT;
    struct dns_resolver *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->io = io;
    r->io_arg = io_arg;
    dns_rng_init(&r->rng);
    r->pending = calloc(PENDING_BUCKETS, sizeof(*r->pending));
    int rc = r->pending == NULL ? -ENOMEM : config_apply(r, cfg ? cfg : &defaults);
    if (rc == 0)
        rc = channel_open(r, cfg ? cfg : &defaults);
    if (rc != 0) {
        if (r->channel != NULL)
            ares_destroy(r->channel);
        dns_cache_free(r->cache);
        free(r->pending);
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

uint64_t dns_resolver_now(struct dns_resolver *r)
{
    return r->clock ? r->clock(r->clock_arg) : dns_now_ms();
}

void dns_resolver_set_clock(struct dns_resolver *r, uint64_t (*now)(void *arg), void *arg)
{
    r->clock = now;
    r->clock_arg = arg;
}

uint32_t dns_ttl_clamp(const struct dns_resolver *r, uint32_t ttl, bool negative)
{
    if (ttl == UINT32_MAX)
        return r->ttl_min;
    uint32_t max = negative ? r->negative_ttl_max : r->ttl_max;
    if (ttl > max)
        ttl = max;
    return ttl < r->ttl_min ? r->ttl_min : ttl;
}

/* ---- pending domains ------------------------------------------------------------------ */

static uint64_t name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

static struct dns_lookup **pending_slot(struct dns_resolver *r, const char *domain, uint64_t h)
{
    struct dns_lookup **slot = &r->pending[h & (PENDING_BUCKETS - 1)];
    for (; *slot; slot = &(*slot)->hnext) {
        if ((*slot)->hash == h && strcmp((*slot)->domain, domain) == 0)
            break;
    }
    return slot;
}

static int waiter_add(struct dns_lookup *lk, dns_mx_cb cb, void *arg)
{
    if (lk->nwaiters == lk->capwaiters) {
        if (lk->capwaiters >= DNS_WAITERS_MAX)
            return -ENOMEM;
        unsigned cap = lk->capwaiters * 4;
        struct dns_waiter *w = malloc(cap * sizeof(*w));
        if (w == NULL)
            return -ENOMEM;
        memcpy(w, lk->waiters, lk->nwaiters * sizeof(*w));
        if (lk->waiters != &lk->waiter0)
            free(lk->waiters);
        lk->waiters = w;
        lk->capwaiters = cap;
    }
    lk->waiters[lk->nwaiters++] = (struct dns_waiter){ cb, arg };
    return 0;
}

int dns_resolve_mx(struct dns_resolver *r, const char *domain, dns_mx_cb cb, void *arg)
{
    char name[DNS_NAME_MAX + 1];
    if (r->closing)
        return DNS_ERR_CLOSING;
    if (cb == NULL)
        return -EINVAL;
    if (dns_name_normalize(domain, name) != 0)
        return DNS_ERR_NAME;
    r->stats.lookups++;
    uint64_t h = name_hash(name);
    struct dns_lookup **slot = pending_slot(r, name, h);
    if (*slot != NULL) {
        int rc = waiter_add(*slot, cb, arg);
        if (rc == 0)
            r->stats.coalesced++;
        return rc;
    }
    if (r->npending >= DNS_PENDING_MAX)
        return -ENOMEM; /* back-pressure: the caller retries this delivery later */
    struct dns_lookup *lk = calloc(1, sizeof(*lk));
    if (lk == NULL)
        return -ENOMEM;
    lk->r = r;
    lk->hash = h;
    memcpy(lk->domain, name, sizeof(name));
    lk->waiters = &lk->waiter0;
    lk->capwaiters = 1;
    waiter_add(lk, cb, arg);
    *slot = lk;
    r->npending++;
    if (r->active < r->max_active) {
        r->active++;
        lk->started = true;
        dns_lookup_start(lk);
    } else {
        /* Waiting, but in the pending map: later lookups of the domain join it. */
        if (r->wait_tail)
            r->wait_tail->wait_next = lk;
        else
            r->wait_head = lk;
        r->wait_tail = lk;
        r->nwaiting++;
    }
    return 0;
}

/* Starts waiting lookups while the window has room. Only from resolver_drain: never
 * inside a c-ares callback, and a lookup that fails at once just lands in the done
 * queue for the next drain. */
static void resolver_pump(struct dns_resolver *r)
{
    while (!r->closing && r->active < r->max_active && r->wait_head != NULL) {
        struct dns_lookup *lk = r->wait_head;
        r->wait_head = lk->wait_next;
        if (r->wait_head == NULL)
            r->wait_tail = NULL;
        lk->wait_next = NULL;
        r->nwaiting--;
        r->active++;
        lk->started = true;
        dns_lookup_start(lk);
    }
}

void dns_resolver_queue_done(struct dns_resolver *r, struct dns_lookup *lk)
{
    if (lk->started) {
        lk->started = false;
        r->active--;
    }
    lk->done_next = NULL;
    if (r->done_tail)
        r->done_tail->done_next = lk;
    else
        r->done_head = lk;
    r->done_tail = lk;
}

/* Runs the callbacks of the lookups done so far (not of those that complete while they
 * run: a callback that starts a lookup failing at once must not spin here). */
static void resolver_drain(struct dns_resolver *r)
{
    struct dns_lookup *lk = r->done_head;
    r->done_head = r->done_tail = NULL;
    while (lk != NULL) {
        struct dns_lookup *next = lk->done_next;
        struct dns_lookup **slot = pending_slot(r, lk->domain, lk->hash);
        if (*slot == lk) /* unlink first: a callback may look the domain up afresh */
            *slot = lk->hnext;
        r->npending--;

        struct dns_mx_result canon, out;
        dns_lookup_result(lk, &canon);
        if (r->closing) {
            /* The contract: whatever is pending when the resolver goes answers shutdown. */
            canon.outcome = DNS_OUTCOME_TEMPFAIL;
            canon.reason = DNS_REASON_SHUTDOWN;
            canon.nhosts = 0;
            snprintf(canon.detail, sizeof(canon.detail), "resolver shut down");
        } else if (canon.outcome != DNS_OUTCOME_TEMPFAIL) {
            /* A failed store (no memory) only costs a later re-resolution. */
            (void)dns_cache_put(r->cache, &canon, dns_resolver_now(r));
        }
        if (canon.outcome == DNS_OUTCOME_TEMPFAIL)
            r->stats.tempfails++;
        else if (canon.outcome != DNS_OUTCOME_OK)
            r->stats.permfails++;
        for (unsigned i = 0; i < lk->nwaiters; i++) {
            dns_result_deliver(&canon, r->max_mx_hosts, &r->rng, &out);
            lk->waiters[i].cb(lk->waiters[i].arg, &out);
        }
        dns_lookup_free(lk);
        lk = next;
    }
    resolver_pump(r);
}

void dns_resolver_process_fd(struct dns_resolver *r, int read_fd, int write_fd)
{
    ares_process_fd(r->channel, read_fd >= 0 ? read_fd : ARES_SOCKET_BAD,
                    write_fd >= 0 ? write_fd : ARES_SOCKET_BAD);
    resolver_drain(r);
}

void dns_resolver_process_timeouts(struct dns_resolver *r)
{
    /* With no fd, ares_process_fd only handles the queries whose time has come. */
    ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    resolver_drain(r);
}

int dns_resolver_timeout_ms(struct dns_resolver *r)
{
    if (r->done_head != NULL)
        return 0;
    struct timeval tv;
    if (ares_timeout(r->channel, NULL, &tv) == NULL)
        return -1;
    long long ms = (long long)tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

void dns_resolver_free(struct dns_resolver *r)
{
    if (r == NULL)
        return;
    /* From here no query is sent: ares_destroy ends every query in flight with
     * ARES_EDESTRUCTION, their lookups complete (a lookup does not start new queries
     * while closing) and land in the done queue, which answers shutdown. */
    r->closing = true;
    ares_destroy(r->channel);
    r->channel = NULL;
    /* Lookups still waiting for the window never started: they answer shutdown too. */
    while (r->wait_head != NULL) {
        struct dns_lookup *lk = r->wait_head;
        r->wait_head = lk->wait_next;
        dns_resolver_queue_done(r, lk);
    }
    r->wait_tail = NULL;
    r->nwaiting = 0;
    while (r->done_head != NULL)
        resolver_drain(r);
    dns_cache_free(r->cache);
    free(r->pending);
    free(r);
}

int dns_mx_cached(struct dns_resolver *r, const char *domain, struct dns_mx_result *out)
{
    char name[DNS_NAME_MAX + 1];
    if (dns_name_normalize(domain, name) != 0)
        return DNS_ERR_NAME;
    r->stats.lookups++;
    return dns_cache_get(r->cache, name, dns_resolver_now(r), r->max_mx_hosts, &r->rng, out);
}

int dns_resolver_cache_put(struct dns_resolver *r, const struct dns_mx_result *res)
{
    return dns_cache_put(r->cache, res, dns_resolver_now(r));
}

void dns_resolver_stats(const struct dns_resolver *r, struct dns_stats *out)
{
    struct dns_cache_stats cs;
    dns_cache_stats(r->cache, &cs);
    *out = r->stats;
    out->cache_hits = cs.hits;
    out->cache_misses = cs.misses;
    out->cache_expired = cs.expired;
    out->cache_evicted = cs.evicted;
    out->cache_entries = cs.entries;
    out->inflight = r->npending;
    out->waiting = r->nwaiting;
}
