/*
 * bench/bench_sched.c — what the scheduler's index costs per message, with a large
 * queue already in memory: 1,000,000 entries across 10,000 domains (so the tables,
 * the heap and the entries are far bigger than the caches, as on a busy spool).
 *
 *   bench_sched_push_pop       the ready path: add a message, pop the next one
 *                              (round-robin), remove it; the queue stays at 1M
 *   bench_sched_defer_promote  the retry path: each simulated second, promote what
 *                              is due, pop it and defer it again (an hour later,
 *                              jittered); items are entries promoted and deferred
 *
 * The million entries are set up before timing starts.
 */
#include "bench/bench.h"
#include "queue/queue.h"

#include <stdio.h>

#define ENTRIES 1000000u
#define DOMAINS 10000u
#define T0      1700000000

static char names[DOMAINS][24];

static const char *domain_name(unsigned i)
{
    if (!names[0][0]) {
        for (unsigned d = 0; d < DOMAINS; d++)
            snprintf(names[d], sizeof(names[d]), "d%05u.example.net", d);
    }
    return names[i % DOMAINS];
}

/* A scheduler holding ENTRIES messages, ready or spread over the next `spread`
 * seconds; NULL on failure. */
static struct queue_sched *filled(const struct queue_retry_config *cfg, int64_t spread)
{
    struct queue_sched *s = NULL;
    if (queue_sched_new(cfg, &s) != 0)
        return NULL;
    for (unsigned i = 0; i < ENTRIES; i++) {
        struct queue_entry_info info = {
            .id = i + 1,
            .domain = domain_name(i),
            .arrival = T0,
            .next_attempt = spread ? T0 + 1 + (int64_t)((i * 2654435761u) % spread) : 0,
            .nrcpts = 1,
            .content_size = 20000,
        };
        if (queue_sched_add(s, &info, T0, NULL) != 0) {
            queue_sched_free(s);
            return NULL;
        }
    }
    return s;
}

static void bench_sched_push_pop(struct bench_state *st)
{
    struct queue_sched *s = filled(NULL, 0);
    if (!s) {
        bench_fail(st, "cannot fill the scheduler");
        return;
    }
    queue_id_t id = ENTRIES;
    int64_t items = 0;
    while (bench_next(st)) {
        struct queue_entry_info info = {
            .id = ++id,
            .domain = domain_name((unsigned)id),
            .arrival = T0,
            .nrcpts = 1,
            .content_size = 20000,
        };
        if (queue_sched_add(s, &info, T0, NULL) != 0) {
            bench_fail(st, "add failed");
            break;
        }
        struct queue_entry *e = queue_sched_pop(s);
        queue_sched_remove(s, e);
        items++;
    }
    bench_set_items(st, items);
    queue_sched_free(s);
}
BENCH_REGISTER(bench_sched_push_pop)

static void bench_sched_defer_promote(struct bench_state *st)
{
    /* A constant hour between retries keeps the rate steady: ENTRIES / 3600 entries
     * come due each simulated second. */
    struct queue_retry_config cfg = { .first = 3600, .max = 3600, .max_age = UINT32_MAX };
    struct queue_sched *s = filled(&cfg, 3600);
    if (!s) {
        bench_fail(st, "cannot fill the scheduler");
        return;
    }
    int64_t now = T0, items = 0;
    while (bench_next(st)) {
        now++;
        items += queue_sched_promote(s, now);
        struct queue_entry *e;
        int64_t next;
        while ((e = queue_sched_pop(s)) != NULL)
            queue_sched_defer(s, e, now, &next);
    }
    bench_set_items(st, items);
    queue_sched_free(s);
}
BENCH_REGISTER(bench_sched_defer_promote)
