/*
 * tests/queue/crash_driver.c — floormta-crash-driver, the process tests/queue/test_crash.sh
 * kills with SIGKILL.
 *
 *   floormta-crash-driver run DIR SEED      enqueue, update and remove as fast as it can,
 *                                           printing each acknowledgement; runs until killed
 *                                           (or 30 s)
 *   floormta-crash-driver verify DIR ACKS   recover and read everything; exit 0 if every
 *                                           acknowledgement in ACKS holds
 *
 * Acknowledgements are printed (one write(2) per line, so a kill cannot tear one) only
 * after the done callback said 0:
 *   E <id> <seed>   the message is durable; its content is derived from seed
 *   U <id>          its first recipient is DELIVERED (durably)
 *   r <id>          a removal is about to be submitted: from here on it may be gone
 *   R <id>          it is removed (durably)
 * Each message carries its seed in its ENVID, so verify can check the content of any
 * message found, acknowledged or not.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "queue/queue.h"

#define SLOTS       64
#define MIN_SIZE    100
#define MAX_SIZE    50000
#define RUN_SECONDS 30

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The content of the message with this seed: its length and bytes. */
static size_t make_content(uint64_t seed, char *out)
{
    uint64_t s = seed;
    size_t len = MIN_SIZE + (size_t)(splitmix(&s) % (MAX_SIZE - MIN_SIZE + 1));
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = splitmix(&s);
        memcpy(out + i, &v, len - i < 8 ? len - i : 8);
    }
    return len;
}

static void say(const char *fmt, ...)
{
    char line[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (write(1, line, (size_t)n) != n)
        exit(2);
}

/* ---- run ------------------------------------------------------------------------------ */

enum step { FREE, ENQUEUING, UPDATING, REMOVING };

struct slot {
    enum step step;
    struct queue_envelope *env;
    uint64_t seed;
    char content[MAX_SIZE];
};

static struct slot slots[SLOTS];
static struct queue_port *port;
static uint64_t rng;

static void on_done(void *arg, queue_id_t id, int res);

static void next_step(struct slot *s, queue_id_t id)
{
    int rc = 0;
    uint64_t r = splitmix(&rng) % 4;
    if (s->step == ENQUEUING && r < 2) {
        s->env->id = id;
        struct queue_rcpt *rc0 = &s->env->rcpts[0];
        rc0->state = QUEUE_RCPT_DELIVERED;
        rc0->attempts = 1;
        rc0->last = (struct queue_result){ .kind = QUEUE_RESULT_SMTP, .code = 250, .when = 1 };
        snprintf(rc0->last.enhanced, sizeof(rc0->last.enhanced), "2.0.0");
        snprintf(rc0->last.text, sizeof(rc0->last.text), "ok %" PRIx64, id);
        s->env->attempts = 1;
        s->step = UPDATING;
        rc = queue_port_update(port, s->env, on_done, s);
    } else if ((s->step == ENQUEUING && r == 2) || (s->step == UPDATING && r < 2)) {
        s->step = REMOVING;
        say("r %016" PRIx64 "\n", id); /* from here on, it may be gone */
        rc = queue_port_remove(port, id, on_done, s);
    } else {
        s->step = FREE;
    }
    if (rc != 0) {
        fprintf(stderr, "submit: %s\n", queue_strerror(rc));
        exit(1);
    }
}

static void on_done(void *arg, queue_id_t id, int res)
{
    struct slot *s = arg;
    if (res != 0) {
        fprintf(stderr, "step %d of %016" PRIx64 ": %s\n", s->step, id, queue_strerror(res));
        exit(1);
    }
    if (s->step == ENQUEUING)
        say("E %016" PRIx64 " %016" PRIx64 "\n", id, s->seed);
    else if (s->step == UPDATING)
        say("U %016" PRIx64 "\n", id);
    else
        say("R %016" PRIx64 "\n", id);
    next_step(s, id);
}

static void start_message(struct slot *s, uint64_t seed)
{
    struct queue_envelope *env = s->env;
    memset(env->rcpts, 0, env->nrcpts * sizeof(env->rcpts[0]));
    env->id = 0;
    env->attempts = 0;
    snprintf(env->envid, sizeof(env->envid), "%016" PRIx64, seed);
    for (unsigned i = 0; i < env->nrcpts; i++)
        snprintf(env->rcpts[i].addr, sizeof(env->rcpts[i].addr), "r%u@crash.example", i);
    size_t len = make_content(seed, s->content);
    s->seed = seed;
    s->step = ENQUEUING;
    int rc = queue_port_enqueue(port, env, s->content, len, on_done, s);
    if (rc != 0) {
        fprintf(stderr, "enqueue: %s\n", queue_strerror(rc));
        exit(1);
    }
}

static void on_old_removed(void *arg, queue_id_t id, int res)
{
    (void)arg;
    if (res != 0) {
        fprintf(stderr, "remove %016" PRIx64 ": %s\n", id, queue_strerror(res));
        exit(1);
    }
    say("R %016" PRIx64 "\n", id);
}

/* Recovered messages: half of them are removed, so the spool stays small over rounds. */
static queue_id_t *old_ids;
static size_t nold, capold;

static int remember(void *arg, const struct queue_envelope *env)
{
    (void)arg;
    if (nold == capold) {
        capold = capold ? capold * 2 : 1024;
        old_ids = realloc(old_ids, capold * sizeof(*old_ids));
        if (old_ids == NULL)
            return -ENOMEM;
    }
    old_ids[nold++] = env->id;
    return 0;
}

static int run(const char *dir, uint64_t seed)
{
    struct queue_spool *sp;
    struct queue_spool_config cfg = { .dir = dir, .min_free_bytes = 1 };
    struct queue_recover_stats rs;
    int rc;
    if ((rc = queue_spool_open(&cfg, &sp)) != 0 ||
        (rc = queue_spool_recover(sp, remember, NULL, &rs)) != 0 ||
        (rc = queue_port_new(sp, &port)) != 0) {
        fprintf(stderr, "run: %s\n", queue_strerror(rc));
        return 1;
    }
    rng = seed * 0x9e3779b97f4a7c15ull + 1;
    for (unsigned i = 0; i < SLOTS; i++)
        slots[i].env = queue_envelope_alloc(2 + i % 2);
    for (size_t i = 0; i < nold; i++)
        if (splitmix(&rng) % 2) {
            say("r %016" PRIx64 "\n", old_ids[i]);
            if (queue_port_remove(port, old_ids[i], on_old_removed, NULL) != 0)
                return 1;
        }
    uint64_t n = 0;
    time_t end = time(NULL) + RUN_SECONDS;
    while (time(NULL) < end) {
        for (unsigned i = 0; i < SLOTS; i++)
            if (slots[i].step == FREE)
                start_message(&slots[i], seed << 32 | n++);
        struct pollfd pfd = { .fd = queue_port_fd(port), .events = POLLIN };
        if (poll(&pfd, 1, 100) > 0)
            queue_port_reap(port);
    }
    return 0; /* not reached in the test: it is killed long before */
}

/* ---- verify --------------------------------------------------------------------------- */

struct ack {
    queue_id_t id;
    uint64_t seed;
    bool enq, upd, rem, removing;
    int found;
};

static struct ack *acks;
static size_t nacks;
static int errors;

static int cmp_ack(const void *a, const void *b)
{
    queue_id_t x = ((const struct ack *)a)->id, y = ((const struct ack *)b)->id;
    return x < y ? -1 : x > y;
}

static struct ack *find_ack(queue_id_t id)
{
    struct ack key = { .id = id };
    return bsearch(&key, acks, nacks, sizeof(*acks), cmp_ack);
}

static int load_acks(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[128];
    size_t cap = 0;
    struct ack *raw = NULL;
    size_t nraw = 0;
    while (fgets(line, sizeof(line), f)) {
        char kind;
        uint64_t id, seed = 0;
        if (sscanf(line, "%c %" SCNx64 " %" SCNx64, &kind, &id, &seed) < 2)
            continue;
        if (nraw == cap) {
            cap = cap ? cap * 2 : 4096;
            raw = realloc(raw, cap * sizeof(*raw));
        }
        raw[nraw++] = (struct ack){
            .id = id,
            .seed = seed,
            .enq = kind == 'E',
            .upd = kind == 'U',
            .rem = kind == 'R',
            .removing = kind == 'r',
        };
    }
    fclose(f);
    /* Merge the lines of each id: sorted by id, their flags are or-ed together. */
    if (nraw > 1)
        qsort(raw, nraw, sizeof(*raw), cmp_ack);
    acks = calloc(nraw + 1, sizeof(*acks));
    for (size_t i = 0; i < nraw; i++) {
        struct ack *a = nacks && acks[nacks - 1].id == raw[i].id ? &acks[nacks - 1] : NULL;
        if (a == NULL) {
            a = &acks[nacks++];
            a->id = raw[i].id;
        }
        if (raw[i].enq) {
            if (a->enq) {
                fprintf(stderr, "id %016" PRIx64 " acknowledged twice\n", a->id);
                errors++;
            }
            a->enq = true;
            a->seed = raw[i].seed;
        }
        a->upd |= raw[i].upd;
        a->rem |= raw[i].rem;
        a->removing |= raw[i].removing;
    }
    free(raw);
    return 0;
}

static char buf[MAX_SIZE];
static struct queue_spool *vsp;
static uint64_t checked;

static int check_one(void *arg, const struct queue_envelope *renv)
{
    (void)arg;
    struct queue_envelope *env;
    void *content;
    size_t len;
    queue_id_t id = renv->id;
    int rc = queue_spool_read(vsp, id, &env, &content, &len);
    if (rc != 0) {
        fprintf(stderr, "%016" PRIx64 ": read: %s\n", id, queue_strerror(rc));
        errors++;
        return 0;
    }
    uint64_t seed = strtoull(env->envid, NULL, 16);
    size_t want = make_content(seed, buf);
    if (len != want || memcmp(content, buf, len) != 0) {
        fprintf(stderr, "%016" PRIx64 ": content differs\n", id);
        errors++;
    }
    struct ack *a = find_ack(id);
    if (a) {
        a->found++;
        if (a->found > 1) {
            fprintf(stderr, "%016" PRIx64 ": reported twice\n", id);
            errors++;
        }
        if (a->enq && a->seed != seed) {
            fprintf(stderr, "%016" PRIx64 ": seed differs\n", id);
            errors++;
        }
        if (a->upd && env->rcpts[0].state != QUEUE_RCPT_DELIVERED) {
            fprintf(stderr, "%016" PRIx64 ": acknowledged update lost\n", id);
            errors++;
        }
    }
    checked++;
    free(content);
    queue_envelope_free(env);
    return 0;
}

static int verify(const char *dir, const char *ackfile)
{
    if (load_acks(ackfile) != 0) {
        perror(ackfile);
        return 1;
    }
    struct queue_spool_config cfg = { .dir = dir, .min_free_bytes = 1 };
    struct queue_recover_stats rs;
    int rc;
    if ((rc = queue_spool_open(&cfg, &vsp)) != 0 ||
        (rc = queue_spool_recover(vsp, check_one, NULL, &rs)) != 0) {
        fprintf(stderr, "verify: %s\n", queue_strerror(rc));
        return 1;
    }
    if (rs.quarantined != 0) {
        fprintf(stderr, "verify: %" PRIu64 " files quarantined after a crash\n", rs.quarantined);
        errors++;
    }
    uint64_t live = 0, removed = 0;
    for (size_t i = 0; i < nacks; i++) {
        struct ack *a = &acks[i];
        if (a->rem) {
            removed++;
            if (a->found) {
                fprintf(stderr, "%016" PRIx64 ": removal acknowledged, still here\n", a->id);
                errors++;
            }
        } else if (a->enq) {
            live++;
            if (!a->found && !a->removing) {
                fprintf(stderr, "%016" PRIx64 ": acknowledged, missing\n", a->id);
                errors++;
            }
        }
    }
    printf("verify: %" PRIu64 " messages read, %" PRIu64 " acknowledged live, %" PRIu64
           " removed, %" PRIu64 " leftovers, %" PRIu64 " quarantined, %.3f s: %s\n",
           checked, live, removed, rs.incomplete, rs.quarantined, rs.seconds,
           errors ? "FAILED" : "ok");
    queue_spool_close(vsp);
    free(acks);
    return errors ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "run") == 0)
        return run(argv[2], strtoull(argv[3], NULL, 10));
    if (argc == 4 && strcmp(argv[1], "verify") == 0)
        return verify(argv[2], argv[3]);
    fprintf(stderr, "usage: %s run DIR SEED | verify DIR ACKS\n", argv[0]);
    return 2;
}
