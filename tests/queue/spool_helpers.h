/*
 * tests/queue/spool_helpers.h — what the spool tests share: a scratch directory, a
 * synchronous wrapper over a port (submit, then poll its eventfd and reap until the
 * callback ran), envelopes with awkward bytes, and deep comparison. Header-only (static
 * functions), since each test is its own executable.
 */
#ifndef FLOORMTA_TESTS_SPOOL_HELPERS_H
#define FLOORMTA_TESTS_SPOOL_HELPERS_H

#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"

struct sync_done {
    int calls;
    int res;
    queue_id_t id;
};

__attribute__((unused)) static void sync_done_cb(void *arg, queue_id_t id, int res)
{
    struct sync_done *d = arg;
    d->calls++;
    d->res = res;
    d->id = id;
}

/* Reaps until d->calls reaches want, polling the port's eventfd (5 s at most). */
__attribute__((unused)) static int port_wait(struct queue_port *port, struct sync_done *d, int want)
{
    for (int i = 0; i < 500 && d->calls < want; i++) {
        struct pollfd pfd = { .fd = queue_port_fd(port), .events = POLLIN };
        if (poll(&pfd, 1, 10) > 0)
            queue_port_reap(port);
    }
    return d->calls >= want ? 0 : -ETIMEDOUT;
}

/* Enqueues and waits; returns the done result (or the submit error), *id the new id. */
__attribute__((unused)) static int enqueue_sync(struct queue_port *port,
                                                const struct queue_envelope *env,
                                                const void *content, size_t len, queue_id_t *id)
{
    struct sync_done d = { 0 };
    int rc = queue_port_enqueue(port, env, content, len, sync_done_cb, &d);
    if (rc != 0)
        return rc;
    if (port_wait(port, &d, 1) != 0)
        return -ETIMEDOUT;
    if (id)
        *id = d.id;
    return d.res;
}

__attribute__((unused)) static int update_sync(struct queue_port *port,
                                               const struct queue_envelope *env)
{
    struct sync_done d = { 0 };
    int rc = queue_port_update(port, env, sync_done_cb, &d);
    if (rc != 0)
        return rc;
    return port_wait(port, &d, 1) != 0 ? -ETIMEDOUT : d.res;
}

__attribute__((unused)) static int remove_sync(struct queue_port *port, queue_id_t id)
{
    struct sync_done d = { 0 };
    int rc = queue_port_remove(port, id, sync_done_cb, &d);
    if (rc != 0)
        return rc;
    return port_wait(port, &d, 1) != 0 ? -ETIMEDOUT : d.res;
}

__attribute__((unused)) static int rm_entry(const char *path, const struct stat *sb, int flag,
                                            struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

__attribute__((unused)) static void rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A new scratch directory under /tmp (on disk here, so fsync is real). */
__attribute__((unused)) static void scratch_dir(char *out, size_t cap, const char *what)
{
    snprintf(out, cap, "/tmp/floormta-%s.XXXXXX", what);
    if (mkdtemp(out) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
}

/* An envelope of n recipients whose text fields hold every kind of awkward byte. */
__attribute__((unused)) static struct queue_envelope *odd_envelope(unsigned n)
{
    struct queue_envelope *env = queue_envelope_alloc(n);
    if (env == NULL)
        return NULL;
    snprintf(env->sender, sizeof(env->sender), "s\x80nd+er=x y\r\n@exa\tmple.org");
    snprintf(env->domain, sizeof(env->domain), "example.com");
    snprintf(env->envid, sizeof(env->envid), "-");
    env->ret = QUEUE_RET_FULL;
    env->is_dsn = false;
    env->needs_8bit = true;
    env->needs_smtputf8 = true;
    env->arrival = 1700000000;
    env->next_attempt = 0;
    for (unsigned i = 0; i < n; i++) {
        struct queue_rcpt *r = &env->rcpts[i];
        snprintf(r->addr, sizeof(r->addr), "r%u\xc3\xa9+%%@example.com", i);
        if (i % 2)
            snprintf(r->orcpt, sizeof(r->orcpt), "rfc822;r%u@example.com", i);
        r->notify = (uint8_t)(i % 16);
    }
    return env;
}

/* Gives every recipient a state, attempts and a result of every kind. */
__attribute__((unused)) static void odd_state(struct queue_envelope *env, unsigned salt)
{
    env->attempts = (uint16_t)(3 + salt);
    env->next_attempt = 1700003600 + salt;
    env->delay_warned = salt % 2;
    for (unsigned i = 0; i < env->nrcpts; i++) {
        struct queue_rcpt *r = &env->rcpts[i];
        r->state = (enum queue_rcpt_state)((i + salt) % 3 + 1); /* never PENDING */
        r->attempts = (uint16_t)(i + salt);
        r->last.kind = (enum queue_result_kind)((i + salt) % 6);
        r->last.code = (uint16_t)(200 + (i * 7 + salt) % 400);
        snprintf(r->last.enhanced, sizeof(r->last.enhanced), "%u.7.%u", 4 + i % 2, i % 30);
        snprintf(r->last.remote, sizeof(r->last.remote), "mx%u.example.com [192.0.2.%u]", i,
                 i % 255);
        r->last.when = 1700000000 + i + salt;
        for (unsigned k = 0; k + 1 < 64; k++)
            r->last.text[k] = (char)(1 + (i + k * 37 + salt) % 255); /* CR, LF, 8-bit */
        r->last.text[63] = '\0';
    }
}

__attribute__((unused)) static int env_equal(const struct queue_envelope *a,
                                             const struct queue_envelope *b)
{
    if (a->id != b->id || strcmp(a->sender, b->sender) || strcmp(a->domain, b->domain) ||
        strcmp(a->envid, b->envid) || a->ret != b->ret || a->is_dsn != b->is_dsn ||
        a->needs_8bit != b->needs_8bit || a->needs_smtputf8 != b->needs_smtputf8 ||
        a->delay_warned != b->delay_warned || a->arrival != b->arrival ||
        a->next_attempt != b->next_attempt || a->attempts != b->attempts ||
        a->content_size != b->content_size || a->nrcpts != b->nrcpts)
        return 0;
    for (unsigned i = 0; i < a->nrcpts; i++) {
        const struct queue_rcpt *x = &a->rcpts[i], *y = &b->rcpts[i];
        if (strcmp(x->addr, y->addr) || strcmp(x->orcpt, y->orcpt) || x->notify != y->notify ||
            x->state != y->state || x->attempts != y->attempts || x->last.kind != y->last.kind ||
            x->last.code != y->last.code || strcmp(x->last.enhanced, y->last.enhanced) ||
            strcmp(x->last.remote, y->last.remote) || x->last.when != y->last.when ||
            strcmp(x->last.text, y->last.text))
            return 0;
    }
    return 1;
}

#endif /* FLOORMTA_TESTS_SPOOL_HELPERS_H */
