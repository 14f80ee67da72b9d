/*
 * engine/smtpd_authq.c — the submission server's credential checker: one thread per
 * server (so per worker) that runs crypt(3) for AUTH, and an eventfd on the loop that
 * brings each result back to its connection.
 *
 * Why a thread: a yescrypt or SHA-512 crypt check costs milliseconds to tens of
 * milliseconds of CPU by design. Run on the loop it would stall every other session
 * and every delivery of that worker for as long, and a client could repeat it (up to
 * max_auth_failures per connection, on as many connections as it may open). Here the
 * loop only copies the hash and the password; the thread hashes.
 *
 * Jobs go in a FIFO under a mutex (an AUTH is rare next to deliveries: no lock-free
 * queue is worth it); results come back on a second list and the eventfd wakes the
 * loop. Each connection has at most one check in flight (it reads nothing more until
 * its done), so the queue is bounded by the connection limits. The copy of the
 * password is wiped as soon as it was hashed.
 *
 * Lifetime: created at the first check; at shutdown, closed once no check is pending:
 * its handle's release stops and joins the thread, then frees everything.
 */
#include "engine/smtpd_int.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "engine/log.h"

struct authq_job {
    struct authq_job *next;
    struct smtpd_conn *c; /* borrowed: it waits for this job (AUTH_CHECK) */
    bool known;
    int res;
    char hash[SMTPD_HASH_MAX];
    char pass[SMTPD_LINE_MAX];
};

struct smtpd_authq {
    struct eng_smtpd *d; /* borrowed */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct authq_job *waiting, **waiting_tail; /* loop -> thread, FIFO */
    struct authq_job *done;                    /* thread -> loop, any order */
    bool stop;
    bool thread_started;
    pthread_t thread;
    int efd;
    eng_handle_t h;
    bool closing;     /* handle closed: release pending */
    unsigned pending; /* loop thread only: submitted, done not yet delivered */
};

static void *checker(void *arg)
{
    struct smtpd_authq *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (q->waiting == NULL && !q->stop)
            pthread_cond_wait(&q->cv, &q->mu);
        if (q->waiting == NULL)
            break; /* stop, and nothing left */
        struct authq_job *j = q->waiting;
        q->waiting = j->next;
        if (q->waiting == NULL)
            q->waiting_tail = &q->waiting;
        pthread_mutex_unlock(&q->mu);

        int res = smtpd_hash_check(j->pass, j->hash);
        j->res = res == 0 && !j->known ? -EACCES : res;
        explicit_bzero(j->pass, sizeof(j->pass));

        pthread_mutex_lock(&q->mu);
        j->next = q->done;
        q->done = j;
        uint64_t one = 1;
        /* An eventfd write only fails when the counter would overflow: it is readable
         * then anyway. */
        (void)!write(q->efd, &one, sizeof(one));
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

static void authq_arm(struct smtpd_authq *q)
{
    int rc = eng_op_poll(q->d->loop, q->h, POLLIN, 0);
    if (rc != 0 && rc != -EBUSY)
        eng_log(ENG_LOG_ERROR, "smtpd: cannot watch the credential checker: %s", eng_strerror(rc));
}

static void authq_close(struct smtpd_authq *q)
{
    if (q->closing)
        return;
    q->closing = true;
    eng_handle_close(q->d->loop, q->h);
}

static void authq_complete(void *ctx, const struct eng_completion *comp)
{
    struct smtpd_authq *q = ctx;
    if (comp->res < 0 && comp->res != -ECANCELED)
        eng_log(ENG_LOG_WARN, "smtpd: credential checker poll: %s", eng_strerror(comp->res));
    uint64_t n;
    (void)!read(q->efd, &n, sizeof(n)); /* EAGAIN: results taken by an earlier round */
    pthread_mutex_lock(&q->mu);
    struct authq_job *list = q->done;
    q->done = NULL;
    pthread_mutex_unlock(&q->mu);
    /* Re-armed before the callbacks: one of them may close the checker (shutdown). */
    authq_arm(q);
    while (list) {
        struct authq_job *j = list;
        list = j->next;
        struct smtpd_conn *c = j->c;
        int res = j->res;
        free(j);
        q->pending--;
        smtpd_conn_auth_done(c, res);
    }
    if (q->d->stopping && q->pending == 0)
        authq_close(q);
}

static void free_jobs(struct authq_job *j)
{
    while (j) {
        struct authq_job *next = j->next;
        explicit_bzero(j->pass, sizeof(j->pass));
        free(j);
        j = next;
    }
}

static void authq_destroy(struct smtpd_authq *q)
{
    if (q->thread_started) {
        pthread_mutex_lock(&q->mu);
        q->stop = true;
        pthread_cond_signal(&q->cv);
        pthread_mutex_unlock(&q->mu);
        pthread_join(q->thread, NULL);
    }
    free_jobs(q->waiting);
    free_jobs(q->done);
    close(q->efd);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

static void authq_release(void *ctx)
{
    struct smtpd_authq *q = ctx;
    q->d->authq = NULL;
    authq_destroy(q);
}

static const struct eng_handle_ops authq_ops = { authq_complete, authq_release };

static int authq_new(struct eng_smtpd *d, struct smtpd_authq **out)
{
    struct smtpd_authq *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return -ENOMEM;
    q->d = d;
    q->waiting_tail = &q->waiting;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int err = q->efd < 0 ? -errno : 0;
    if (err == 0 && (err = -pthread_create(&q->thread, NULL, checker, q)) == 0)
        q->thread_started = true;
    if (err == 0)
        err = eng_handle_open(d->loop, q->efd, &authq_ops, q, &q->h);
    if (err != 0) {
        authq_destroy(q);
        return err;
    }
    authq_arm(q);
    *out = q;
    return 0;
}

int smtpd_authq_submit(struct eng_smtpd *d, struct smtpd_conn *c, const char *hash, bool known,
                       const char *password)
{
    size_t hlen = strlen(hash), plen = strlen(password);
    if (hlen >= SMTPD_HASH_MAX)
        return -ENAMETOOLONG;
    if (plen >= SMTPD_LINE_MAX)
        return -EINVAL;
    if (d->authq == NULL) {
        int err = authq_new(d, &d->authq);
        if (err != 0)
            return err;
    }
    struct smtpd_authq *q = d->authq;
    if (q->closing)
        return -ESHUTDOWN;
    struct authq_job *j = malloc(sizeof(*j));
    if (j == NULL)
        return -ENOMEM;
    j->next = NULL;
    j->c = c;
    j->known = known;
    j->res = -EACCES;
    memcpy(j->hash, hash, hlen + 1);
    memcpy(j->pass, password, plen + 1);
    q->pending++;
    pthread_mutex_lock(&q->mu);
    *q->waiting_tail = j;
    q->waiting_tail = &j->next;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

void smtpd_authq_shutdown(struct eng_smtpd *d)
{
    if (d->authq && d->authq->pending == 0)
        authq_close(d->authq);
}

bool smtpd_authq_idle(const struct eng_smtpd *d)
{
    return d->authq == NULL;
}
