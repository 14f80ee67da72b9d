/*
 * queue/dsn_enqueue.c — a bounce travels through the same queue as everything else:
 * the DSN is built, then enqueued durably as a message of its own. This file only
 * joins the two and keeps the DSN's buffers alive until the spool has them on disk.
 */
#include "queue/queue.h"

#include <errno.h>
#include <stdlib.h>

/* What one DSN enqueue owns until its completion. */
struct dsn_job {
    struct queue_envelope *env;
    void *content;
    queue_done_fn done;
    void *arg;
};

static void dsn_job_done(void *arg, queue_id_t id, int res)
{
    struct dsn_job *job = arg;
    queue_done_fn done = job->done;
    void *done_arg = job->arg;
    queue_envelope_free(job->env);
    free(job->content);
    free(job);
    done(done_arg, id, res);
}

int queue_port_enqueue_dsn(struct queue_port *port, const struct queue_dsn_input *in,
                           queue_done_fn done, void *arg)
{
    if (port == NULL || in == NULL || done == NULL)
        return -EINVAL;
    struct dsn_job *job = calloc(1, sizeof(*job));
    if (job == NULL)
        return -ENOMEM;
    size_t len = 0;
    int rc = queue_dsn_build(in, &job->content, &len, &job->env);
    if (rc == 0) {
        job->done = done;
        job->arg = arg;
        rc = queue_port_enqueue(port, job->env, job->content, len, dsn_job_done, job);
        if (rc == 0)
            return 0;
    }
    queue_envelope_free(job->env);
    free(job->content);
    free(job);
    return rc;
}
