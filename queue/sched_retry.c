/*
 * queue/sched_retry.c — the retry clock: the backoff interval, its jitter, the delay
 * warning and expiry.
 *
 * The schedule is Postfix's and KumoMTA's: exponential backoff from `first`, capped at
 * `max`, retried until max_age after arrival; the last retry is pulled in to land
 * exactly at the age limit, and the message expires only once that moment has come,
 * so a receiver that recovers just before the limit still gets its message. Jitter
 * (+-jitter_pct, uniform) keeps a burst of messages deferred together by one outage
 * from returning in lockstep and hammering the receiver again all at once.
 */
#include "queue/sched_int.h"

#include <stddef.h>

#define DEFAULT_FIRST   300u
#define DEFAULT_MAX     3600u
#define DEFAULT_FACTOR  200u
#define DEFAULT_JITTER  10u
#define DEFAULT_MAX_AGE (5u * 24 * 3600)

void queue_sched_retry_defaults(const struct queue_retry_config *in, struct queue_retry_config *out)
{
    struct queue_retry_config c = in ? *in : (struct queue_retry_config){ 0 };
    if (!c.first)
        c.first = DEFAULT_FIRST;
    if (!c.max)
        c.max = DEFAULT_MAX;
    if (!c.factor_pct)
        c.factor_pct = DEFAULT_FACTOR;
    if (!c.jitter_pct)
        c.jitter_pct = DEFAULT_JITTER;
    if (!c.max_age)
        c.max_age = DEFAULT_MAX_AGE;
    *out = c;
}

/*
 * The interval is computed in 32.32 fixed point in 128 bits: the value stays below
 * max (< 2^32) before each multiplication by factor_pct (< 2^32), so nothing can
 * overflow, and the loop ends as soon as the cap is reached (at most ~2,300 steps,
 * for a factor of 101%), however large `attempts` is. Fixed point rather than
 * integers rounded at each step, because those stall: 1 s growing by 150% would
 * stay 1 s forever. The result is exact whenever the exact value is an integer
 * (then every intermediate value is one too), and otherwise rounded down.
 */
uint32_t queue_retry_interval(const struct queue_retry_config *cfg, unsigned attempts)
{
    struct queue_retry_config c;
    queue_sched_retry_defaults(cfg, &c);
    if (c.first >= c.max)
        return c.max;
    const unsigned __int128 limit = (unsigned __int128)c.max << 32;
    unsigned __int128 v = (unsigned __int128)c.first << 32;
    for (unsigned k = 1; k < attempts && c.factor_pct != 100; k++) {
        v = v * c.factor_pct / 100;
        if (v >= limit)
            return c.max;
        if ((v >> 32) == 0 && c.factor_pct < 100)
            return 0; /* shrinking (a factor under 100%): it only gets smaller */
    }
    return (uint32_t)(v >> 32);
}

uint64_t queue_sched_rand(uint64_t *state)
{
    *state += 0x9e3779b97f4a7c15ULL; /* splitmix64 */
    return queue_sched_mix64(*state);
}

/* Uniform in [0, n) (n > 0), by Lemire's multiply-shift: no division, and a bias of
 * at most n / 2^64, irrelevant for spreading retries. */
static uint64_t rand_below(uint64_t *state, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)queue_sched_rand(state) * n) >> 64);
}

static int64_t add_sat(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

enum queue_defer_verdict queue_sched_retry_plan(const struct queue_retry_config *cfg, uint64_t *rng,
                                                int64_t arrival, unsigned attempts, bool *warned,
                                                int64_t now, int64_t *next)
{
    int64_t deadline = add_sat(arrival, cfg->max_age);
    if (now >= deadline) {
        *next = now;
        return QUEUE_DEFER_EXPIRE;
    }
    uint32_t interval = queue_retry_interval(cfg, attempts);
    uint64_t spread = (uint64_t)interval * cfg->jitter_pct / 100; /* <= interval */
    int64_t delay = (int64_t)interval - (int64_t)spread + (int64_t)rand_below(rng, 2 * spread + 1);
    if (delay < 1)
        delay = 1; /* never "retry now": that is a busy loop against a failing host */
    int64_t at = add_sat(now, delay);
    /* The last retry lands at the age limit rather than after it; deadline > now, so
     * this keeps at >= now + 1. */
    *next = at < deadline ? at : deadline;
    if (cfg->delay_warning > 0 && !*warned && now >= add_sat(arrival, cfg->delay_warning)) {
        *warned = true;
        return QUEUE_DEFER_WARN;
    }
    return QUEUE_DEFER_RETRY;
}
