/*
 * engine/dns_loop.c — binds a dns/ resolver to the io_uring loop (dns_loop.h).
 *
 * Three kinds of handles, all opened only while there is work, so that an idle
 * resolver leaves no handle open and eng_loop_run can return:
 *   - one *watcher* per c-ares socket: a one-shot poll for what c-ares asked
 *     (POLLIN / POLLOUT), re-armed after each event while c-ares still wants it;
 *   - one *timer* for the resolver's next deadline (dns_resolver_timeout_ms);
 *   - one *post* handle whose zero-delay timer delivers cache hits from the loop's
 *     next iteration (a callback must never run inside eng_dns_lookup_mx).
 *
 * c-ares announces a socket's end with watch(fd, 0, 0) just before closing it, and
 * may open a new socket with the same fd number right away. The old watcher's handle
 * is closed at once: its poll is cancelled and any late completion for it is dropped
 * by the loop's generation check, so readiness of the new socket can never be
 * attributed to the old one. The watcher object itself lives until on_release.
 *
 * Every handle's on_release drops a reference on struct eng_dns, so the struct
 * outlives eng_dns_free until the loop has released the last handle.
 *
 * Cache misses go straight to the resolver, whose max_inflight window bounds what
 * reaches the network at once.
 */
#include "engine/dns_loop.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"

struct dns_watcher {
    struct eng_dns *d;
    int fd;
    unsigned want;  /* POLLIN / POLLOUT as c-ares asked */
    unsigned armed; /* the mask of the poll in flight, if any */
    bool open;      /* false once c-ares stopped watching: the handle is closing */
    eng_handle_t h;
};

/* A cache hit waiting for the loop's next iteration. */
struct dns_post {
    char domain[DNS_NAME_MAX + 2]; /* room for a trailing dot */
    dns_mx_cb cb;
    void *arg;
};

struct eng_dns {
    struct eng_loop *loop;
    struct dns_resolver *res;
    struct dns_io io;
    unsigned refs;  /* 1 for the owner + one per handle not yet released */
    unsigned depth; /* nesting of calls into the resolver */
    bool closing;   /* eng_dns_free was called */
    struct dns_watcher **w;
    size_t nw, capw;
    eng_handle_t timer_h; /* 0 when closed */
    bool timer_armed;
    uint64_t timer_deadline; /* loop ms the armed timer fires at */
    eng_handle_t post_h;     /* 0 when closed */
    struct dns_post *posts;
    size_t nposts, capposts;
};

static void dns_loop_sync(struct eng_dns *d);
static void dns_loop_finish_free(struct eng_dns *d);
static int lookup_network(struct eng_dns *d, const char *domain, dns_mx_cb cb, void *arg);

static void dns_loop_unref(struct eng_dns *d)
{
    if (--d->refs > 0)
        return;
    free(d->w);
    free(d->posts);
    free(d);
}

/* Calls into the resolver are bracketed so that an eng_dns_free from inside one of
 * its callbacks is deferred until the resolver's own stack has unwound. */
static void dns_loop_enter(struct eng_dns *d)
{
    d->depth++;
}

static void dns_loop_leave(struct eng_dns *d)
{
    if (--d->depth > 0)
        return;
    if (d->closing)
        dns_loop_finish_free(d);
    else
        dns_loop_sync(d);
}

/* ---- watchers ------------------------------------------------------------------------- */

/* Puts a poll in flight for what c-ares wants now. A poll with a stale mask is
 * cancelled: its completion (-ECANCELED, or an event that won the race) re-arms. */
static void watcher_arm(struct dns_watcher *w)
{
    struct eng_loop *loop = w->d->loop;
    if (!w->open || w->want == 0)
        return;
    if (eng_handle_busy(loop, w->h, ENG_OP_POLL)) {
        if (w->armed != w->want)
            eng_op_cancel(loop, w->h, ENG_OP_POLL);
        return;
    }
    /* Timeout 0: c-ares keeps its own deadlines (the timer handle). */
    int rc = eng_op_poll(loop, w->h, w->want, 0);
    if (rc == 0) {
        w->armed = w->want;
        return;
    }
    /* -EAGAIN (submission queue full): dns_loop_sync tries again after the next call
     * into the resolver, at the latest when its timer fires. */
    eng_log(ENG_LOG_WARN, "dns: cannot watch fd %d: %s", w->fd, eng_strerror(rc));
}

static void watcher_complete(void *ctx, const struct eng_completion *comp)
{
    struct dns_watcher *w = ctx;
    struct eng_dns *d = w->d;
    int res = comp->res;
    if (res == -ECANCELED) { /* a mask change: arm with the current one */
        watcher_arm(w);
        return;
    }
    bool rd, wr;
    if (res < 0) {
        /* Poll itself failed (never expected on a live socket): let c-ares try the
         * socket so it meets the error on its own terms, and do not re-arm a poll
         * that would fail the same way in a loop. */
        eng_log(ENG_LOG_WARN, "dns: poll on fd %d failed: %s", w->fd, eng_strerror(res));
        rd = w->want & POLLIN;
        wr = w->want & POLLOUT;
        w->want = 0;
    } else {
        /* An error or hang-up is news for whoever reads (UDP: ICMP port unreachable)
         * and for a TCP connect that waits for writability. */
        unsigned errs = (unsigned)res & (POLLERR | POLLHUP);
        rd = ((unsigned)res & POLLIN) || (errs && (w->want & POLLIN));
        wr = ((unsigned)res & POLLOUT) || (errs && (w->want & POLLOUT));
        if (!rd && !wr) /* an error on a direction nobody waits for: report as read */
            rd = errs != 0;
    }
    dns_loop_enter(d);
    dns_resolver_process_fd(d->res, rd ? w->fd : -1, wr ? w->fd : -1);
    dns_loop_leave(d); /* re-arms w if c-ares still wants it */
}

static void watcher_release(void *ctx)
{
    struct dns_watcher *w = ctx;
    struct eng_dns *d = w->d;
    free(w);
    dns_loop_unref(d);
}

static const struct eng_handle_ops watcher_ops = {
    .on_complete = watcher_complete,
    .on_release = watcher_release,
};

static void watcher_close(struct eng_dns *d, size_t i)
{
    struct dns_watcher *w = d->w[i];
    w->open = false;
    w->want = 0;
    eng_handle_close(d->loop, w->h);
    d->w[i] = d->w[--d->nw];
}

/* struct dns_io.watch: called from inside dns_ calls. */
static void dns_loop_watch(void *arg, int fd, bool readable, bool writable)
{
    struct eng_dns *d = arg;
    unsigned want = (readable ? POLLIN : 0u) | (writable ? POLLOUT : 0u);
    size_t i = 0;
    while (i < d->nw && d->w[i]->fd != fd)
        i++;
    if (want == 0) {
        if (i < d->nw)
            watcher_close(d, i);
        return;
    }
    if (i == d->nw) {
        if (d->nw == d->capw) {
            size_t cap = d->capw ? d->capw * 2 : 8;
            struct dns_watcher **nw = realloc(d->w, cap * sizeof(*nw));
            if (!nw)
                goto fail;
            d->w = nw;
            d->capw = cap;
        }
        struct dns_watcher *w = calloc(1, sizeof(*w));
        if (!w)
            goto fail;
        *w = (struct dns_watcher){ .d = d, .fd = fd, .open = true };
        int rc = eng_handle_open(d->loop, fd, &watcher_ops, w, &w->h);
        if (rc < 0) {
            free(w);
            eng_log(ENG_LOG_ERROR, "dns: cannot watch fd %d: %s", fd, eng_strerror(rc));
            return;
        }
        d->refs++;
        d->w[d->nw++] = w;
    }
    d->w[i]->want = want;
    watcher_arm(d->w[i]);
    return;
fail:
    /* The socket goes unwatched: its queries end by c-ares' own timeouts. */
    eng_log(ENG_LOG_ERROR, "dns: cannot watch fd %d: out of memory", fd);
}

/* ---- the resolver's timer ---------------------------------------------------------------- */

static void timer_complete(void *ctx, const struct eng_completion *comp)
{
    struct eng_dns *d = ctx;
    if (comp->handle != d->timer_h || comp->res == -ECANCELED)
        return;
    d->timer_armed = false;
    dns_loop_enter(d);
    dns_resolver_process_timeouts(d->res);
    dns_loop_leave(d);
}

static void handle_release(void *ctx)
{
    dns_loop_unref(ctx);
}

static const struct eng_handle_ops timer_ops = {
    .on_complete = timer_complete,
    .on_release = handle_release,
};

static void timer_close(struct eng_dns *d)
{
    if (d->timer_h) {
        eng_handle_close(d->loop, d->timer_h);
        d->timer_h = 0;
        d->timer_armed = false;
    }
}

/* Makes the armed timer match the resolver's next deadline. A timer that fires early
 * is harmless (process_timeouts does nothing and the timer is armed again); one that
 * would fire late is replaced. Only one timer may be in flight per handle, so a
 * replacement is a new handle rather than a cancel-and-wait. */
static void timer_sync(struct eng_dns *d)
{
    int t = dns_resolver_timeout_ms(d->res);
    if (t < 0) {
        timer_close(d); /* nothing pending: leave no handle open */
        return;
    }
    /* 0 is a real answer (the resolver has finished lookups to hand out): a zero
     * timeout completes in the next iteration. */
    unsigned ms = (unsigned)t;
    uint64_t deadline = eng_loop_now_ms(d->loop) + ms;
    if (d->timer_armed && d->timer_deadline <= deadline)
        return;
    if (d->timer_armed)
        timer_close(d);
    if (!d->timer_h) {
        int rc = eng_handle_open(d->loop, -1, &timer_ops, d, &d->timer_h);
        if (rc < 0) {
            d->timer_h = 0;
            eng_log(ENG_LOG_ERROR, "dns: cannot open the resolver timer: %s", eng_strerror(rc));
            return;
        }
        d->refs++;
    }
    int rc = eng_op_timer(d->loop, d->timer_h, ms);
    if (rc < 0) {
        eng_log(ENG_LOG_WARN, "dns: cannot arm the resolver timer: %s", eng_strerror(rc));
        return;
    }
    d->timer_armed = true;
    d->timer_deadline = deadline;
}

/* After every call into the resolver: polls for what c-ares wants, the timer for its
 * next deadline. */
static void dns_loop_sync(struct eng_dns *d)
{
    if (d->closing || !d->res)
        return;
    for (size_t i = 0; i < d->nw; i++)
        watcher_arm(d->w[i]);
    timer_sync(d);
}

/* ---- cache hits, delivered from the next iteration ------------------------------------ */

/* A queued lookup that cannot be answered: TEMPFAIL with the reason, as the resolver
 * itself answers lookups it drops. */
static void post_fail(const struct dns_post *p, enum dns_reason reason)
{
    struct dns_mx_result r;
    memset(&r, 0, sizeof(r));
    r.outcome = DNS_OUTCOME_TEMPFAIL;
    r.reason = reason;
    snprintf(r.domain, sizeof(r.domain), "%.*s", DNS_NAME_MAX, p->domain);
    snprintf(r.detail, sizeof(r.detail), "%s", dns_reason_text(reason));
    p->cb(p->arg, &r);
}

/* One queued lookup: the cache again (it may have expired since), else the network. */
static void post_deliver(struct eng_dns *d, const struct dns_post *p)
{
    if (d->closing) {
        post_fail(p, DNS_REASON_SHUTDOWN);
        return;
    }
    struct dns_mx_result res;
    if (dns_mx_cached(d->res, p->domain, &res) == 0) {
        p->cb(p->arg, &res);
        return;
    }
    int rc = lookup_network(d, p->domain, p->cb, p->arg);
    if (rc < 0) /* eng_dns_lookup_mx promised one callback: keep the promise */
        post_fail(p, rc == -ENOMEM ? DNS_REASON_NOMEM : DNS_REASON_SHUTDOWN);
}

static void post_close(struct eng_dns *d)
{
    if (d->post_h) {
        eng_handle_close(d->loop, d->post_h);
        d->post_h = 0;
    }
}

static void post_complete(void *ctx, const struct eng_completion *comp);

static const struct eng_handle_ops post_ops = {
    .on_complete = post_complete,
    .on_release = handle_release,
};

/* Opens the post handle if needed and arms its zero-delay timer. */
static int post_schedule(struct eng_dns *d)
{
    if (!d->post_h) {
        int rc = eng_handle_open(d->loop, -1, &post_ops, d, &d->post_h);
        if (rc < 0) {
            d->post_h = 0;
            return rc;
        }
        d->refs++;
    }
    if (eng_handle_busy(d->loop, d->post_h, ENG_OP_TIMER))
        return 0;
    return eng_op_timer(d->loop, d->post_h, 0);
}

static void post_complete(void *ctx, const struct eng_completion *comp)
{
    struct eng_dns *d = ctx;
    if (comp->handle != d->post_h || comp->res == -ECANCELED)
        return;
    /* This batch only: lookups queued by its callbacks wait for the next iteration, so
     * a callback that looks the same domain up again cannot spin here. */
    struct dns_post *batch = d->posts;
    size_t n = d->nposts;
    d->posts = NULL;
    d->nposts = d->capposts = 0;
    d->refs++; /* a callback may call eng_dns_free: keep d readable until the end */
    for (size_t i = 0; i < n; i++)
        post_deliver(d, &batch[i]);
    free(batch);
    if (!d->closing) {
        if (d->nposts == 0)
            post_close(d);
        else if (post_schedule(d) < 0)
            eng_log(ENG_LOG_ERROR, "dns: cannot schedule cached answers");
    }
    dns_loop_unref(d);
}

/* A lookup the cache could not answer: to the resolver, bracketed so that the
 * resolver's timer and sockets are re-synchronised afterwards. */
static int lookup_network(struct eng_dns *d, const char *domain, dns_mx_cb cb, void *arg)
{
    dns_loop_enter(d);
    int rc = dns_resolve_mx(d->res, domain, cb, arg);
    dns_loop_leave(d);
    return rc;
}

/* ---- public ------------------------------------------------------------------------------ */

int eng_dns_new(struct eng_loop *loop, const struct dns_config *cfg, struct eng_dns **out)
{
    struct eng_dns *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->loop = loop;
    d->refs = 1;
    d->io.watch = dns_loop_watch;
    int rc = dns_resolver_new(cfg, &d->io, d, &d->res);
    if (rc < 0) {
        free(d);
        return rc;
    }
    *out = d;
    return 0;
}

struct dns_resolver *eng_dns_resolver(struct eng_dns *d)
{
    return d->res;
}

int eng_dns_lookup_mx(struct eng_dns *d, const char *domain, dns_mx_cb cb, void *arg)
{
    if (d->closing)
        return DNS_ERR_CLOSING;
    if (!domain || !cb)
        return -EINVAL;
    struct dns_mx_result probe;
    int rc = dns_mx_cached(d->res, domain, &probe);
    if (rc == DNS_ERR_NAME)
        return rc;
    if (rc < 0)
        return lookup_network(d, domain, cb, arg);
    /* A hit. The answer itself is fetched again at delivery, with the order (equal
     * preferences shuffled) of that moment. */
    size_t len = strlen(domain);
    if (len >= sizeof(d->posts[0].domain))
        return DNS_ERR_NAME;
    if (d->nposts == d->capposts) {
        size_t cap = d->capposts ? d->capposts * 2 : 16;
        struct dns_post *np = realloc(d->posts, cap * sizeof(*np));
        if (!np)
            return -ENOMEM;
        d->posts = np;
        d->capposts = cap;
    }
    rc = post_schedule(d);
    if (rc < 0)
        return rc;
    struct dns_post *p = &d->posts[d->nposts++];
    memcpy(p->domain, domain, len + 1);
    p->cb = cb;
    p->arg = arg;
    return 0;
}

/* The part of eng_dns_free that must wait until no resolver call is on the stack. */
static void dns_loop_finish_free(struct eng_dns *d)
{
    /* The owner's reference, dropped last, keeps d readable through the callbacks. */
    struct dns_post *posts = d->posts;
    size_t n = d->nposts;
    d->posts = NULL;
    d->nposts = d->capposts = 0;
    for (size_t i = 0; i < n; i++)
        post_fail(&posts[i], DNS_REASON_SHUTDOWN);
    free(posts);
    /* Pending lookups' callbacks run from here with TEMPFAIL/SHUTDOWN; c-ares closes
     * its sockets, which closes their watchers. */
    d->depth++;
    dns_resolver_free(d->res);
    d->depth--;
    d->res = NULL;
    while (d->nw > 0)
        watcher_close(d, d->nw - 1);
    timer_close(d);
    post_close(d);
    dns_loop_unref(d); /* the owner's */
}

void eng_dns_free(struct eng_dns *d)
{
    if (!d || d->closing)
        return;
    d->closing = true;
    if (d->depth > 0)
        return; /* called from a callback: dns_loop_leave finishes it */
    dns_loop_finish_free(d);
}
