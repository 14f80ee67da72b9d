/*
 * queue/port.c — ports: one submitter thread's channel to the committer.
 *
 * Submitting never blocks on I/O: a request records pointers (the envelope and the
 * content stay borrowed until done) and is handed over under the spool's short mutex.
 * The committer appends finished requests to the port's completion list and writes
 * the port's eventfd when that list goes from empty to non-empty; queue_port_reap
 * runs the callbacks on the port's own thread.
 *
 * Memory (STYLE point 7): requests are recycled through a per-port free list that only
 * the port's thread touches, so the steady state allocates nothing; running out of
 * memory for a new one is -ENOMEM to the caller (back-pressure), never a crash.
 */
#include "queue/queue_int.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct queue_port {
    struct queue_spool *sp;
    int efd;
    pthread_mutex_t mu; /* guards done_head/done_tail (the committer appends) */
    struct queue_req *done_head, **done_tail;
    struct queue_req *free; /* the port thread's only */
    unsigned inflight;      /* the port thread's only */
};

int queue_port_new(struct queue_spool *sp, struct queue_port **out)
{
    struct queue_port *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->efd < 0) {
        int rc = -errno;
        free(p);
        return rc;
    }
    p->sp = sp;
    pthread_mutex_init(&p->mu, NULL);
    p->done_tail = &p->done_head;
    *out = p;
    return 0;
}

static void free_list(struct queue_req *r)
{
    while (r) {
        struct queue_req *next = r->next;
        free(r);
        r = next;
    }
}

void queue_port_free(struct queue_port *port)
{
    if (port == NULL)
        return;
    /* Completions never reaped are dropped without their callbacks: the caller said
     * it no longer wants them by freeing the port. */
    free_list(port->done_head);
    free_list(port->free);
    close(port->efd);
    pthread_mutex_destroy(&port->mu);
    free(port);
}

int queue_port_fd(const struct queue_port *port)
{
    return port->efd;
}

static struct queue_req *req_get(struct queue_port *port)
{
    struct queue_req *r = port->free;
    if (r != NULL)
        port->free = r->next;
    else if ((r = malloc(sizeof(*r))) == NULL)
        return NULL;
    *r = (struct queue_req){ .port = port, .fd = -1 };
    return r;
}

static int submit(struct queue_port *port, struct queue_req *r)
{
    int rc = queue_spool_submit(port->sp, r);
    if (rc != 0) {
        r->next = port->free;
        port->free = r;
        return rc;
    }
    port->inflight++;
    return 0;
}

int queue_port_enqueue(struct queue_port *port, const struct queue_envelope *env,
                       const void *content, size_t len, queue_done_fn done, void *arg)
{
    if (env == NULL || env->nrcpts == 0 || env->nrcpts > QUEUE_RCPTS_MAX ||
        len > port->sp->max_message_size || (len > 0 && content == NULL))
        return QUEUE_ERR_TOO_BIG;
    struct queue_req *r = req_get(port);
    if (r == NULL)
        return -ENOMEM;
    r->kind = QUEUE_REQ_ENQUEUE;
    r->env = env;
    r->content = content;
    r->len = len;
    r->done = done;
    r->arg = arg;
    return submit(port, r);
}

int queue_port_update(struct queue_port *port, const struct queue_envelope *env, queue_done_fn done,
                      void *arg)
{
    if (env == NULL || env->id == 0 || env->nrcpts == 0 || env->nrcpts > QUEUE_RCPTS_MAX)
        return QUEUE_ERR_TOO_BIG;
    struct queue_req *r = req_get(port);
    if (r == NULL)
        return -ENOMEM;
    r->kind = QUEUE_REQ_UPDATE;
    r->env = env;
    r->id = env->id;
    r->done = done;
    r->arg = arg;
    return submit(port, r);
}

int queue_port_remove(struct queue_port *port, queue_id_t id, queue_done_fn done, void *arg)
{
    if (id == 0)
        return QUEUE_ERR_NOT_FOUND;
    struct queue_req *r = req_get(port);
    if (r == NULL)
        return -ENOMEM;
    r->kind = QUEUE_REQ_REMOVE;
    r->id = id;
    r->done = done;
    r->arg = arg;
    return submit(port, r);
}

void queue_port_complete(struct queue_req *req)
{
    struct queue_port *port = req->port;
    req->next = NULL;
    pthread_mutex_lock(&port->mu);
    bool was_empty = port->done_head == NULL;
    *port->done_tail = req;
    port->done_tail = &req->next;
    pthread_mutex_unlock(&port->mu);
    if (was_empty) {
        uint64_t one = 1;
        /* Only fails if the counter would overflow: then it is readable anyway. */
        (void)!write(port->efd, &one, sizeof(one));
    }
}

unsigned queue_port_reap(struct queue_port *port)
{
    uint64_t count;
    /* Read first, then take the list: a completion appended after the read signals
     * again, so none can be left without a wake-up. */
    (void)!read(port->efd, &count, sizeof(count));
    pthread_mutex_lock(&port->mu);
    struct queue_req *r = port->done_head;
    port->done_head = NULL;
    port->done_tail = &port->done_head;
    pthread_mutex_unlock(&port->mu);
    unsigned n = 0;
    while (r) {
        struct queue_req *next = r->next;
        queue_done_fn done = r->done;
        void *arg = r->arg;
        queue_id_t id = r->id;
        int res = r->res;
        /* Recycled before the callback, which may submit again and reuse it. */
        r->next = port->free;
        port->free = r;
        port->inflight--;
        if (done)
            done(arg, id, res);
        r = next;
        n++;
    }
    return n;
}
